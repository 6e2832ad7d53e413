"""Loading certificates and keys, trust stores, and chain verification.

Path validation is pyca/cryptography's ``x509.verification`` (RFC 5280 with
the CA/Browser Forum Web PKI profile).  What that means for users:

- Server certificates need a subjectAltName matching the name the client
  asked for (DNS name, or IP address for an IP literal), an authorityKeyIdentifier,
  and serverAuth in extendedKeyUsage if that extension is present.
- CA keys must be RSA >= 2048 bits, ECDSA P-256/P-384/P-521 or ML-DSA-44/65/87.
  CAs with Ed25519, Ed448, brainpool (RFC 8734 curves) or RSASSA-PSS
  (id-RSASSA-PSS) keys are refused by the profile (unsupported_certificate,
  "unsupported certificate algorithm"); such keys are fine in leaves, so a
  brainpool server or client certificate issued by an RSA or NIST-curve CA
  works (docs/groups-and-suites.md).
- ML-DSA-signed chains verify natively, so no fallback verifier exists here.
- Client certificates are checked with the same profile except that a
  subjectAltName is optional (mutual-TLS client certificates often carry
  their identity only in the subject).

Each failure is a :class:`CertificateError` whose alert follows RFC 9846 §6.2
and whose message names the reason and the certificate's subject.

RFC 9846 section numbers are those of the spec text (specs/rfc9846-tls13-rfc8446bis.md);
RFC 8446 numbered the same sections one lower (§4.3.x there was §4.2.x, §4.5.x was §4.4.x).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    Subject,
    VerificationError,
)

from ..constants import AlertDescription
from ..errors import CertificateError, ConfigurationError
from .signatures import PrivateKey, key_description, schemes_for_key

__all__ = [
    "TrustStore",
    "certificate_der",
    "check_key_matches_certificate",
    "load_certificate_chain",
    "load_der_certificate",
    "load_private_key",
    "name_text",
    "printable_text",
    "verify_chain",
]

StrPath = str | os.PathLike[str]

_SIGNING_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    mldsa.MLDSA44PrivateKey,
    mldsa.MLDSA65PrivateKey,
    mldsa.MLDSA87PrivateKey,
)

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


# --- loading -------------------------------------------------------------------------------


def _read(path: StrPath, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {os.fspath(path)!r}: {exc.strerror}") from exc


def _load_pem_certificates(data: bytes, path: StrPath, what: str) -> list[x509.Certificate]:
    if _PEM_CERTIFICATE not in data:
        raise ConfigurationError(
            f"{what} {os.fspath(path)!r} contains no PEM certificate "
            f"(expected '-----BEGIN CERTIFICATE-----' blocks)"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        reason = str(exc).splitlines()[0][:120]
        raise ConfigurationError(
            f"{what} {os.fspath(path)!r} contains a malformed PEM certificate ({reason}); "
            f"re-export it in PEM form"
        ) from exc


# --- parsing a peer's certificates, once per distinct DER (issue 16) ---------------------
#
# A server sees the same client chains, a client the same server chain, on
# connection after connection; parsing one (and cryptography's
# ``public_bytes``, which re-encodes) costs more than a signature check.  A
# Certificate is immutable, so one object per distinct DER is shared by every
# connection that receives those bytes; being the same object is what lets
# verify_chain's cache (below) recognise the same chain without re-encoding it.
# Both caches are bounded (FIFO): a peer sending ever new certificates only
# evicts older entries.

_PARSED_LIMIT = 128
_parsed: dict[bytes, x509.Certificate] = {}
_der_of: dict[int, tuple[x509.Certificate, bytes]] = {}  # id(cert) -> (cert, its DER); holds the cert
_cache_lock = threading.Lock()


def _remember(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    with _cache_lock:
        while len(cache) >= limit:
            del cache[next(iter(cache))]  # the oldest entry
        cache[key] = value


def load_der_certificate(der: bytes) -> x509.Certificate:
    """``x509.load_der_x509_certificate(der)``, with the subject, issuer and
    public key parsed now (cryptography parses them lazily, and validation and
    error messages read them); the same object for the same bytes.  Raises
    what cryptography raises for malformed DER (ValueError, TypeError,
    UnsupportedAlgorithm, InvalidVersion); a failure is not cached."""
    cert = _parsed.get(der)
    if cert is None:
        cert = x509.load_der_x509_certificate(der)
        cert.subject, cert.issuer, cert.public_key()
        der = bytes(der)
        _remember(_parsed, der, cert, _PARSED_LIMIT)
        _remember(_der_of, id(cert), (cert, der), 2 * _PARSED_LIMIT)
    return cert


def certificate_der(cert: x509.Certificate) -> bytes:
    """``cert.public_bytes(DER)``, without re-encoding a certificate seen
    before (a peer's, parsed by load_der_certificate, or our own, sent on every
    connection)."""
    known = _der_of.get(id(cert))
    if known is not None and known[0] is cert:
        return known[1]
    der = cert.public_bytes(serialization.Encoding.DER)
    _remember(_der_of, id(cert), (cert, der), 2 * _PARSED_LIMIT)
    return der


def load_certificate_chain(path: StrPath) -> list[x509.Certificate]:
    """The PEM certificates in ``path``, in file order: leaf first, then intermediates."""
    return _load_pem_certificates(_read(path, "certificate file"), path, "certificate file")


def load_private_key(path: StrPath, password: bytes | None = None) -> PrivateKey:
    """A PEM private key usable for TLS 1.3 signatures (see signatures.py)."""
    data = _read(path, "key file")
    name = os.fspath(path)
    if b"PRIVATE KEY-----" not in data:
        raise ConfigurationError(f"key file {name!r} contains no PEM private key")
    encrypted = b"ENCRYPTED" in data
    if encrypted and password is None:
        raise ConfigurationError(f"key file {name!r} is encrypted; give its password")
    try:
        # A password for an unencrypted key is ignored, as OpenSSL does.
        key = serialization.load_pem_private_key(data, password if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise ConfigurationError(f"wrong password for key file {name!r}") from None
        raise ConfigurationError(
            f"key file {name!r} could not be parsed; expected a PEM private key "
            f"(PKCS#8, or traditional RSA/EC)"
        ) from exc
    except TypeError as exc:
        raise ConfigurationError(f"key file {name!r}: {exc}") from None
    if not isinstance(key, _SIGNING_KEY_TYPES) or not schemes_for_key(key):
        raise ConfigurationError(
            f"key file {name!r} holds a {key_description(key)} key, which has no TLS 1.3 "
            f"signature scheme; use RSA, EC P-256/P-384/P-521, EC brainpoolP256r1/P384r1/"
            f"P512r1, Ed25519, Ed448 or ML-DSA"
        )
    return key


def check_key_matches_certificate(key: PrivateKey, cert: x509.Certificate) -> None:
    """Raise ConfigurationError unless ``cert`` carries ``key``'s public key."""
    try:
        cert_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            f"certificate {_describe(cert)} has a public key of a type cryptography cannot load"
        ) from exc
    if key.public_key() != cert_key:
        raise ConfigurationError(
            f"private key does not match the certificate {_describe(cert)}; check that the "
            f"key file and certificate file belong together (leaf certificate first)"
        )


# --- trust store ---------------------------------------------------------------------------

# Where distributions keep their CA bundle (first match wins).
_SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Gentoo
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # Fedora, RHEL 7+
    "/etc/pki/tls/certs/ca-bundle.crt",  # older Fedora/RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine, macOS, BSDs
)
_SYSTEM_CA_DIRS = ("/etc/ssl/certs",)


class TrustStore:
    """Trust anchors for :func:`verify_chain`.  Immutable; share it freely
    (it keeps a bounded cache of the chains it verified, see verify_chain)."""

    __slots__ = ("_certificates", "_store", "_verified")

    def __init__(self, certificates: Iterable[x509.Certificate]) -> None:
        unique = tuple(dict.fromkeys(certificates))  # drop duplicates, keep order
        if not unique:
            raise ConfigurationError("a trust store needs at least one CA certificate")
        self._certificates = unique
        self._store = Store(list(unique))
        self._verified: dict[_VerifiedKey, _Verified] = {}

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return self._certificates

    @classmethod
    def from_path(cls, path: StrPath) -> TrustStore:
        """From a PEM bundle file, or a directory of PEM files."""
        if Path(path).is_dir():
            return cls.from_directory(path)
        return cls.from_pem_file(path)

    @classmethod
    def from_pem_file(cls, path: StrPath) -> TrustStore:
        data = _read(path, "CA file")
        return cls(_load_pem_certificates(data, path, "CA file"))

    @classmethod
    def from_directory(cls, path: StrPath) -> TrustStore:
        """Every PEM certificate in the directory's files; other files are skipped."""
        certificates: list[x509.Certificate] = []
        try:
            entries = sorted(Path(path).iterdir())
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read CA directory {os.fspath(path)!r}: {exc.strerror}"
            ) from exc
        for entry in entries:
            if not entry.is_file():
                continue
            data = _read(entry, "CA file")
            if _PEM_CERTIFICATE in data:  # skips CRLs, keys, READMEs
                certificates.extend(_load_pem_certificates(data, entry, "CA file"))
        if not certificates:
            raise ConfigurationError(
                f"CA directory {os.fspath(path)!r} contains no PEM certificate"
            )
        return cls(certificates)

    @classmethod
    def system(cls) -> TrustStore:
        """The operating system's CA bundle.

        Honours ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` as OpenSSL does, then
        looks in the usual distribution locations.
        """
        with warnings.catch_warnings():
            # Some distribution anchors have non-positive serial numbers and
            # cryptography warns about each on every load: not the user's to
            # fix, and path validation does not use an anchor's serial.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            env_file = os.environ.get("SSL_CERT_FILE")
            if env_file:
                return cls.from_pem_file(env_file)
            env_dir = os.environ.get("SSL_CERT_DIR")
            if env_dir:
                return cls.from_directory(env_dir.split(os.pathsep)[0])
            for candidate in _SYSTEM_CA_FILES:
                if os.path.isfile(candidate):
                    return cls.from_pem_file(candidate)
            for candidate in _SYSTEM_CA_DIRS:
                if os.path.isdir(candidate):
                    return cls.from_directory(candidate)
        raise ConfigurationError(
            "no system CA bundle found (looked in "
            + ", ".join(_SYSTEM_CA_FILES + _SYSTEM_CA_DIRS)
            + "); install ca-certificates or give a CA file"
        )

    def __len__(self) -> int:
        return len(self._certificates)

    def __repr__(self) -> str:
        return f"<TrustStore {len(self._certificates)} certificates>"


# --- verification --------------------------------------------------------------------------

#: (the chain's certificate objects by identity, server name, server certificate?)
_VerifiedKey = tuple[tuple[int, ...], str | None, bool]
_VERIFIED_LIMIT = 32  # distinct chains remembered per trust store


@dataclass(frozen=True, slots=True)
class _Verified:
    """A chain that verified, and when that result holds: every certificate
    of the chain and of the path is valid from ``not_before`` to ``not_after``
    (RFC 5280 §4.1.2.5, both inclusive)."""

    chain: tuple[x509.Certificate, ...]  # holds the objects, so their ids in the key stay theirs
    path: tuple[x509.Certificate, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime

# Client certificates: Web PKI defaults, but subjectAltName may be absent.
_CLIENT_EE_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()


def verify_chain(
    chain: Sequence[x509.Certificate],
    store: TrustStore,
    *,
    server_name: str | None,
    is_server_cert: bool,
    now: datetime.datetime | None = None,
) -> list[x509.Certificate]:
    """Validate a peer's chain (leaf first); return the path leaf -> trust anchor.

    ``server_name`` is what the client asked for: a DNS name, or an IP
    literal (checked against IP address SANs).  It is required for server
    certificates and ignored for client certificates.  ``now`` defaults to
    the current time; naive datetimes are taken as UTC.
    """
    if not chain:
        # RFC 9846 §4.5.1.3: an empty server Certificate is decode_error; an
        # empty client one is certificate_required when a certificate is needed.
        alert = (
            AlertDescription.decode_error
            if is_server_cert
            else AlertDescription.certificate_required
        )
        raise CertificateError("peer sent no certificate", alert)
    # The same chain (the same certificate objects: load_der_certificate gives
    # one per distinct DER, so the same bytes), verified against this store for
    # the same name and purpose, gives the same path as long as every
    # certificate in it is within its validity period, which is checked at
    # each use; outside it the full validation runs (and says why).  What
    # comes after verify_chain (access lists, CRLs) is the caller's and runs
    # every time.  Decision: the window covers the presented chain and the path;
    # an anchor outside the path that becomes valid later could make a fresh
    # validation choose another path: the cache keeps the first one found.
    key: _VerifiedKey = (tuple(map(id, chain)), server_name, is_server_cert)
    when = _as_utc(now)
    known = store._verified.get(key)
    if (
        known is not None and all(a is b for a, b in zip(known.chain, chain, strict=True))
        and known.not_before <= when <= known.not_after
    ):
        return list(known.path)
    leaf, intermediates = chain[0], list(chain[1:])
    builder = PolicyBuilder().store(store._store)
    if now is not None:
        if now.tzinfo is not None:
            now = now.astimezone(datetime.UTC).replace(tzinfo=None)
        builder = builder.time(now)
    try:
        if is_server_cert:
            subject = _subject(server_name)
            try:
                verifier = builder.build_server_verifier(subject)
            except ValueError:  # the verifier, not DNSName, validates the name
                raise ConfigurationError(
                    f"server name {server_name!r} is not a valid DNS name or IP address"
                ) from None
            path = verifier.verify(leaf, intermediates)
        else:
            client_verifier = builder.extension_policies(
                ca_policy=_CA_POLICY, ee_policy=_CLIENT_EE_POLICY
            ).build_client_verifier()
            path = client_verifier.verify(leaf, intermediates).chain
    except VerificationError as exc:
        raise _classify(str(exc), chain, store, server_name, is_server_cert, now) from exc
    _check_signing_key_usage(leaf)
    checked = (*chain, *path)
    _remember(store._verified, key, _Verified(
        tuple(chain), tuple(path),
        max(c.not_valid_before_utc for c in checked), min(c.not_valid_after_utc for c in checked),
    ), _VERIFIED_LIMIT)
    return path


def _as_utc(now: datetime.datetime | None) -> datetime.datetime:
    """``now`` (naive: UTC) as an aware UTC datetime; None: the current time."""
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=datetime.UTC)
    return now


def _check_signing_key_usage(leaf: x509.Certificate) -> None:
    # RFC 9846 §4.5.1.2: if keyUsage is present, digitalSignature MUST be set
    # (the key signs CertificateVerify).  The Web PKI verifier does not check it.
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.digital_signature:
        raise CertificateError(
            f"certificate {_describe(leaf)} is not valid for this purpose: its keyUsage "
            f"lacks digitalSignature, which TLS 1.3 needs",
            AlertDescription.unsupported_certificate,
        )


def _subject(server_name: str | None) -> Subject:
    if not server_name:
        raise ConfigurationError(
            "verifying a server certificate needs the server name (DNS name or IP address) "
            "the client connects to"
        )
    try:
        return x509.IPAddress(ipaddress.ip_address(server_name.strip("[]")))
    except ValueError:
        pass
    # SNI carries no trailing dot (RFC 6066 §3), and the verifier refuses one.
    name = server_name.removesuffix(".")
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"server name {server_name!r} must be given in A-label (punycode) form"
        ) from None
    return x509.DNSName(name)


def _classify(
    reason: str,
    chain: Sequence[x509.Certificate],
    store: TrustStore,
    server_name: str | None,
    is_server_cert: bool,
    now: datetime.datetime | None,
) -> CertificateError:
    """Turn cryptography's VerificationError text into a reason and an RFC 9846 §6.2 alert."""
    leaf = chain[0]
    subject = _describe(leaf)
    A = AlertDescription

    if "not valid at validation time" in reason:
        return CertificateError(_validity_message(chain, store, now), A.certificate_expired)
    if "ASN.1 parsing error" in reason:
        # RFC 9846 §6.2 bad_certificate: "a certificate was corrupt".
        return CertificateError(f"corrupt certificate in the chain of {subject}", A.bad_certificate)
    if "all candidates exhausted with no interior errors" in reason:
        issuer = name_text(chain[-1].issuer)
        return CertificateError(
            f"unknown CA: no trusted CA issued {issuer} (chain of {subject}); add the CA to "
            f"the trust store, or have the peer send its intermediate certificates",
            A.unknown_ca,
        )
    if "signature does not match" in reason:
        # bad_certificate, not decrypt_error: §6.2 names bad_certificate for
        # "signatures that did not verify correctly" in certificates, and keeps
        # decrypt_error for handshake operations (CertificateVerify, Finished).
        return CertificateError(
            f"bad signature: a certificate in the chain of {subject} is not signed by its "
            f"issuer's key (or a trusted CA of the same name has a different key)",
            A.bad_certificate,
        )
    if "no matching subjectAltName" in reason:
        return CertificateError(
            f"name mismatch: certificate {subject} is for {_san_summary(leaf)}, "
            f"not {server_name!r}",
            A.bad_certificate,
        )
    if "Forbidden public key algorithm" in reason and _BRAINPOOL_OID_PREFIX in reason:
        # The Web PKI profile knows only the NIST curves; RFC 8734 curves are
        # TLS-legal, so say exactly what works instead.
        return CertificateError(
            f"unsupported certificate algorithm in the chain of {subject}: a CA has a "
            f"brainpool key, which the Web PKI profile longtls verifies chains with does not "
            f"accept; brainpool end-entity certificates work when issued by an RSA, ECDSA "
            f"P-256/P-384/P-521 or ML-DSA CA",
            A.unsupported_certificate,
        )
    if "Forbidden public key algorithm" in reason or "Forbidden signature algorithm" in reason:
        # RFC 9846 §4.5.1.2: no acceptable chain -> unsupported_certificate by default.
        return CertificateError(
            f"unsupported certificate algorithm in the chain of {subject}: the Web PKI "
            f"profile accepts CA keys RSA >= 2048, ECDSA P-256/P-384/P-521 and ML-DSA only "
            f"(not Ed25519, Ed448 or RSASSA-PSS)",
            A.unsupported_certificate,
        )
    if "required EKU not found" in reason:
        purpose = "serverAuth" if is_server_cert else "clientAuth"
        return CertificateError(
            f"certificate {subject} is not valid for this purpose: its extendedKeyUsage "
            f"lacks {purpose}",
            A.unsupported_certificate,
        )
    detail = _verifier_detail(reason)
    if "RSA key is too weak" in reason or "extension" in reason or "basicConstraints" in reason:
        return CertificateError(
            f"certificate not acceptable in the chain of {subject}: {detail}", A.bad_certificate
        )
    return CertificateError(
        f"certificate not acceptable in the chain of {subject}: {detail}", A.certificate_unknown
    )


# id-ecPublicKey's named-curve parameter of brainpoolP256r1/P384r1/P512r1
# (RFC 5639: 1.3.36.3.3.2.8.1.1.7, .11, .13), as cryptography prints it.
_BRAINPOOL_OID_PREFIX = "1.3.36.3.3.2.8.1.1."


def _validity_message(
    chain: Sequence[x509.Certificate], store: TrustStore, now: datetime.datetime | None
) -> str:
    when = now or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    when = when.replace(tzinfo=datetime.UTC)
    # Which certificate: the chain first, then the anchors that could have issued it.
    anchors = [c for c in store.certificates if c.subject == chain[-1].issuer]
    for cert in [*chain, *anchors]:
        if when > cert.not_valid_after_utc:
            return (
                f"certificate expired: {_describe(cert)} was valid until "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC (check the clock too)"
            )
        if when < cert.not_valid_before_utc:
            return (
                f"certificate not yet valid: {_describe(cert)} is valid from "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC (check the clock too)"
            )
    return f"certificate expired or not yet valid in the chain of {_describe(chain[0])}"


def _verifier_detail(reason: str) -> str:
    """cryptography's reason without its prefixes and certificate dumps, kept short."""
    for prefix in ("validation failed: ", "candidates exhausted: "):
        reason = reason.removeprefix(prefix)
    reason = reason.split(" (encountered processing", 1)[0]
    reason = reason.split(": AlgorithmIdentifier", 1)[0]  # drops key parameters
    for dotted, label in _EXTENSION_NAMES.items():
        reason = reason.replace(dotted + ":", label + ":")
    return printable_text(reason, 160)


# "2.5.29.35" -> "authorityKeyIdentifier (2.5.29.35)" in the verifier's reasons.
def _camel(attr: str) -> str:
    first, *rest = attr.lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


_EXTENSION_NAMES = {
    oid.dotted_string: f"{_camel(attr)} ({oid.dotted_string})"
    for attr, oid in vars(ExtensionOID).items()
    if isinstance(oid, x509.ObjectIdentifier)
}


def _describe(cert: x509.Certificate) -> str:
    return name_text(cert.subject)


def name_text(name: x509.Name, empty: str = "<empty subject>") -> str:
    """A certificate name (the peer's, possibly) quoted for a log line or an
    error message: RFC 4514 text, printable and bounded."""
    try:
        text = name.rfc4514_string()
    except ValueError:
        text = "<unprintable name>"
    return repr(printable_text(text, 120)) if text else empty


def _san_summary(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subjectAltName"
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    if not names:
        return "no DNS name or IP address"
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return printable_text(shown, 200)


def printable_text(text: str, limit: int) -> str:
    """Peer-controlled text made safe for a log line: printable and bounded."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
