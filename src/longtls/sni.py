"""Several server certificates, chosen per connection by the client's server_name.

    config = Configuration(is_client=False)
    config.load_cert_chain("default.pem", "default.key")          # the default
    config.server_credentials = [
        ServerCredential.load("a.pem", "a.key"),                    # names: the leaf's DNS SANs
        ServerCredential.load("b.pem", "b.key", names=["*.b.example"]),
    ]

RFC 6066 §3 lets a client name the server it wants, and RFC 9846 §4.4.2.2
says the server's certificate "is used to guide certificate selection" by
that name.  :func:`select_server_credential` is the rule longtls applies
(docs/sni.md):

- names compare case-insensitively (DNS names are, RFC 4343), with one
  trailing dot ignored (``example.com.`` is ``example.com``);
- an exact name wins over a wildcard; a wildcard (``*.example.com``) stands
  for exactly one left-most label (``a.example.com``, never
  ``example.com`` nor ``a.b.example.com``: RFC 9525 §6.3), and only as the
  whole label (no ``f*.example.com``);
- several credentials for the same name (an RSA and an ECDSA certificate,
  say): the first whose key can sign with a scheme the client offers;
- no server_name, or a name none matches: None, which means the
  configuration's own ``certificate_chain``/``private_key`` (the default).

This module is data and policy only (it sits in the config layer): the
server engine asks it once per ClientHello (handshake/server.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from .crypto.certificates import (
    check_key_matches_certificate,
    load_certificate_chain,
    load_private_key,
)
from .errors import ConfigurationError

__all__ = ["ServerCredential", "dns_names", "normalize_server_name", "select_server_credential"]


def normalize_server_name(name: str | None) -> str | None:
    """``name`` as it is compared: lower case, without one trailing dot."""
    if name is None:
        return None
    return name.lower().removesuffix(".")


def _name_pattern(name: str) -> str:
    """A name a credential is for, checked and normalised: a DNS name in
    A-label form, or ``*.`` and one (the wildcard's whole left-most label)."""
    pattern = normalize_server_name(name.strip()) or ""
    if not pattern.isascii():
        raise ConfigurationError(f"server name {name!r} must be given in A-label (punycode) form")
    labels = pattern.split(".")
    if not pattern or any(not label for label in labels):
        raise ConfigurationError(f"server name {name!r} is not a DNS name")
    if any("*" in label for label in labels[1:]) or ("*" in labels[0] and labels[0] != "*"):
        raise ConfigurationError(
            f"server name {name!r}: a wildcard must be the whole left-most label (*.example.com)"
        )
    if labels[0] == "*" and len(labels) < 3:
        raise ConfigurationError(f"server name {name!r}: a wildcard needs at least two labels after it")
    return pattern


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The dNSName entries of ``cert``'s subjectAltName, normalised; () if it
    has none.  iPAddress entries are left out: a client never sends an IP
    address as server_name (RFC 6066 §3), so it cannot select by one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names: list[str] = []
    for name in san.get_values_for_type(x509.DNSName):
        try:
            pattern = _name_pattern(name)
        except ConfigurationError:
            continue  # a SAN no client name can match (e.g. a partial wildcard)
        if pattern not in names:
            names.append(pattern)
    return tuple(names)


@dataclass(eq=False)
class ServerCredential:
    """A certificate chain (leaf first) and its private key, for the
    connections whose server_name is one of ``names``.

    ``names`` default to the leaf's DNS subjectAltNames.  Compared by
    identity: a connection remembers the credential it was given
    (``ConnectionCore.server_credential``), and a renewal replaces
    ``certificate_chain`` and ``private_key`` in place, so new connections
    get the renewed pair and the live ones can be told apart by credential.
    """

    certificate_chain: list[x509.Certificate] = field(repr=False)
    private_key: Any = field(repr=False)
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.certificate_chain = list(self.certificate_chain)
        if not self.certificate_chain or self.private_key is None:
            raise ConfigurationError("a server credential needs a certificate chain and its private key")
        check_key_matches_certificate(self.private_key, self.certificate_chain[0])
        names: list[str] = []
        for pattern in (_name_pattern(n) for n in self.names):
            if pattern not in names:
                names.append(pattern)
        self.names = tuple(names) or dns_names(self.certificate_chain[0])
        if not self.names:
            subject = self.certificate_chain[0].subject.rfc4514_string()
            raise ConfigurationError(
                f"certificate {subject!r} has no DNS name in its subjectAltName, so no server_name "
                "can select it: give its names, or make it the default certificate"
            )

    @classmethod
    def load(
        cls, certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None,
        password: bytes | None = None, names: Iterable[str] = (),
    ) -> ServerCredential:
        """From PEM files: the chain (leaf first) in ``certfile``, the key in
        ``keyfile`` (None: in ``certfile`` too)."""
        chain = load_certificate_chain(certfile)
        key = load_private_key(keyfile if keyfile is not None else certfile, password)
        return cls(chain, key, tuple(names))

    def matches(self, server_name: str) -> bool:
        """Whether this credential is for ``server_name`` (exactly or by wildcard)."""
        name = normalize_server_name(server_name) or ""
        return name in self.names or _wildcard_of(name) in self.names


def _wildcard_of(name: str) -> str | None:
    """The wildcard pattern that covers ``name``: ``a.example.com`` -> ``*.example.com``."""
    first, dot, rest = name.partition(".")
    return f"*.{rest}" if dot and first and rest else None


def select_server_credential(
    credentials: Sequence[ServerCredential], server_name: str | None,
    usable: Callable[[ServerCredential], bool] | None = None,
) -> ServerCredential | None:
    """The credential for ``server_name``, or None for the default (see the
    module docstring).  ``usable``: whether a credential can serve this
    client (its key can sign with a scheme the client offers); among the
    credentials of the best-matching name, the first usable one is chosen,
    else the first (the handshake then fails as it would with one
    certificate: handshake_failure)."""
    name = normalize_server_name(server_name)
    if not name or not credentials:
        return None
    for wanted in (name, _wildcard_of(name)):
        if wanted is None:
            continue
        matching = [c for c in credentials if wanted in c.names]
        if matching:
            if usable is not None:
                for credential in matching:
                    if usable(credential):
                        return credential
            return matching[0]
    return None
