"""``connect --brief`` and ``--showcerts``: what was negotiated and who the peer is.

Both go to standard error, never standard output: ``connect``'s standard
output carries only the peer's bytes, so ``longtls connect ... > file`` or a
pipe gets exactly what the server sent.  (``openssl s_client -brief`` also
writes its summary to standard error; ``-showcerts`` writes to standard
output, which there is mixed with the data -- here it is not.)

The texts are for people, not parsers (``--summary json`` is the
machine-readable contract); they follow s_client's labels where one exists.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ..events import HandshakeComplete


def verification(args: argparse.Namespace) -> str:
    """The verify result of a completed handshake.

    The handshake only completes if the peer's chain verified (RFC 9846 §4.4.2.4:
    otherwise the client aborts with bad_certificate/unknown_ca), so a result
    is either OK with what it was checked against, or skipped by --insecure.
    """
    if getattr(args, "insecure", False):
        return "not verified (--insecure)"
    name = getattr(args, "servername", None) or args.address[0]
    anchors = f"the CA certificates in {args.ca}" if getattr(args, "ca", None) else "the system's CA certificates"
    return f"OK (chain to {anchors}, name {name})"


def brief(event: HandshakeComplete, args: argparse.Namespace, where: str) -> str:
    """A few ``Label: value`` lines, like ``openssl s_client -brief``."""
    eku = "no"
    if event.extended_key_update:
        profile = event.eku_profile.value if event.eku_profile is not None else "?"
        eku = f"yes (profile {profile})"
    lines = [
        f"CONNECTION ESTABLISHED to {where}",
        f"Protocol version: {event.version}",
        f"Ciphersuite: {event.cipher_suite.name}",
        f"Group: {event.group.name if event.group is not None else 'none (PSK only)'}",
        f"Signature type: {event.signature_scheme.name if event.signature_scheme is not None else 'none'}",
        f"Peer certificate: {event.peer_subject or 'none'}",
        f"Verification: {verification(args)}",
        f"ALPN protocol: {event.alpn_protocol or 'none'}",
        f"Resumed: {'yes' if event.resumed else 'no'}",
        f"Extended Key Update: {eku}",
        f"Certificate Update: {'yes' if event.certificate_update else 'no'}",
    ]
    if event.mode == "mls":
        # MLS-TLS: key updates are MLS commits (docs/mls-tls.md), not EKU.
        lines.append(f"MLS cipher suite: {event.mls_cipher_suite}, epoch {event.epoch}; key updates are MLS commits")
    return "\n".join(lines) + "\n"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def subject_alt_names(cert: x509.Certificate) -> str:
    """``DNS:localhost, IP Address:127.0.0.1``, as openssl prints the extension; "none" without it."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "none"
    return ", ".join(_general_names(extension.value))


def _general_names(names: x509.SubjectAlternativeName) -> Iterator[str]:
    for name in names:
        if isinstance(name, x509.DNSName):
            yield f"DNS:{name.value}"
        elif isinstance(name, x509.IPAddress):
            yield f"IP Address:{name.value}"
        elif isinstance(name, x509.RFC822Name):
            yield f"email:{name.value}"
        elif isinstance(name, x509.UniformResourceIdentifier):
            yield f"URI:{name.value}"
        elif isinstance(name, x509.DirectoryName):
            yield f"DirName:{name.value.rfc4514_string()}"
        else:
            yield f"othername:{type(name).__name__}"


def _timestamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def showcerts(event: HandshakeComplete, args: argparse.Namespace) -> str:
    """Each certificate the peer sent, leaf first (as in its Certificate
    message, RFC 9846 §4.4.2), with its fields and PEM; then the verify result."""
    lines = ["Certificate chain"]
    if not event.peer_certificates:
        lines.append(" (the peer sent no certificate)")
    for depth, cert in enumerate(event.peer_certificates):
        lines += [
            f" {depth} s:{cert.subject.rfc4514_string()}",
            f"   i:{cert.issuer.rfc4514_string()}",
            f"   subjectAltName: {subject_alt_names(cert)}",
            f"   notBefore: {_timestamp(cert.not_valid_before_utc)}",
            f"   notAfter: {_timestamp(cert.not_valid_after_utc)}",
            f"   serial: {format(cert.serial_number, 'x')}",
            f"   SHA-256 fingerprint: {fingerprint(cert)}",
            cert.public_bytes(serialization.Encoding.PEM).decode("ascii").rstrip("\n"),
        ]
    lines += ["---", f"Verification: {verification(args)}"]
    return "\n".join(lines) + "\n"
