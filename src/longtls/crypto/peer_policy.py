"""Who may connect: an allow-list of peer identities, and certificate revocation lists.

Both apply to a peer certificate *after* its chain validated (``verify_chain``
in crypto/certificates.py), to the validated path it returned, so a chain
verification cache can never skip them (issue 15; docs/access-control.md).

The allow-list (:class:`PeerAllowList`) admits a certificate when any one of
its rules matches (a union, as ghostunnel's --allow-* flags do):

- ``cn``: a commonName attribute of the subject, compared exactly
  (case-sensitive: a CN is a DirectoryString, not a DNS name);
- ``dns``: a dNSName of the subjectAltName, compared case-insensitively
  (RFC 4343) without a trailing dot.  A rule ``*.example.com`` matches exactly
  one left-most label (``a.example.com``, not ``example.com`` nor
  ``a.b.example.com``: RFC 6125 §6.4.3); partial-label wildcards
  (``w*.example.com``) and ``*.tld`` are refused when the rule is made.  A
  wildcard *in the certificate* (``*.example.com``) matches only a rule that
  is the same wildcard: a wildcard certificate claims every name of a
  domain, which is not the one name a rule admits;
- ``uri``: a uniformResourceIdentifier of the subjectAltName, compared
  exactly (SPIFFE IDs: ``spiffe://trust-domain/path``);
- ``ip``: an iPAddress of the subjectAltName, equal to an address or inside
  a CIDR network of the same IP version.

A miss ends the handshake with access_denied (RFC 9846 §6.2: "A valid
certificate or PSK was received, but when access control was applied, the
sender decided not to proceed"); the message names the peer's identities and
the rules it missed.

Revocation (:func:`check_revocation`) follows RFC 5280 §6.3 for complete
CRLs: each certificate of the validated path except the trust anchor is
looked up in the CRLs whose issuer is that certificate's issuer, by name
*and* by signature (``is_signature_valid`` with the issuer's key from the
path, §6.3.3 (f)-(g)); a CRL of another CA (another name, or the same name
under another key) is ignored for it.  A certificate whose issuer has no
loaded CRL is not checked.  Listed: certificate_revoked (RFC 9846 §6.2: "A
certificate was revoked by its signer").  Decision: a CRL past its
nextUpdate still revokes what it lists, but cannot vouch for what it does
not list (§6.3.3 (a)(2): the status is then undetermined): when every CRL of
the issuer is stale the certificate is refused with certificate_unknown
(fail closed, as OpenSSL's X509_V_ERR_CRL_HAS_EXPIRED), and the CLI warns at
start-up when a CRL is stale or becomes stale within a day.  Delta CRLs and
indirect CRLs (RFC 5280 §5.2.4, §5.2.5) are refused when loaded.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..constants import AlertDescription
from ..errors import CertificateError, ConfigurationError
from .certificates import name_text, printable_text

__all__ = [
    "PeerAllowList",
    "check_crls_against_anchors",
    "check_peer_access",
    "check_revocation",
    "crl_expiry_warning",
    "load_crls",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: A CRL whose nextUpdate is this close gets a warning when it is loaded.
CRL_EXPIRY_WARNING = datetime.timedelta(days=1)


def _as_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    # A lone string is one rule, not a sequence of one-letter rules.
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True, init=False)
class PeerAllowList:
    """Peer identities that may connect; any one matching rule admits a
    certificate (module docstring).  Each argument takes one rule (a str) or
    several; rules are checked when made: ConfigurationError names a bad one.

        PeerAllowList(cn="backup-agent", dns=["*.agents.example.com"], ip="10.0.0.0/8")
    """

    cn: tuple[str, ...]
    dns: tuple[str, ...]
    uri: tuple[str, ...]
    ip: tuple[str, ...]
    _networks: tuple[IPNetwork, ...] = field(repr=False, compare=False)

    def __init__(
        self, *, cn: str | Iterable[str] = (), dns: str | Iterable[str] = (),
        uri: str | Iterable[str] = (), ip: str | Iterable[str] = (),
    ) -> None:
        cns, uris = _as_tuple(cn), _as_tuple(uri)
        for rule in cns:
            if not rule:
                raise ConfigurationError("an allow-cn rule cannot be empty")
        for rule in uris:
            if not rule or any(ch.isspace() for ch in rule) or ":" not in rule:
                raise ConfigurationError(
                    f"allow-uri rule {rule!r} is not a URI (e.g. spiffe://example.org/service)"
                )
        ips = tuple(rule.strip() for rule in _as_tuple(ip))
        object.__setattr__(self, "cn", cns)
        object.__setattr__(self, "dns", tuple(_dns_rule(rule) for rule in _as_tuple(dns)))
        object.__setattr__(self, "uri", uris)
        object.__setattr__(self, "ip", ips)
        object.__setattr__(self, "_networks", tuple(_ip_rule(rule) for rule in ips))
        if not (self.cn or self.dns or self.uri or self.ip):
            raise ConfigurationError("an allow-list needs at least one rule (it would admit nobody)")

    def matching_rule(self, cert: x509.Certificate) -> str | None:
        """The first rule that admits ``cert`` ("allow-dns '*.example.com'"), or None."""
        names = _Identities.of(cert)
        for rule in self.cn:
            if rule in names.cn:
                return f"allow-cn {rule!r}"
        for rule in self.dns:
            if any(_dns_matches(rule, name) for name in names.dns):
                return f"allow-dns {rule!r}"
        for rule in self.uri:
            if rule in names.uri:
                return f"allow-uri {rule!r}"
        for text, network in zip(self.ip, self._networks, strict=True):
            if any(address.version == network.version and address in network for address in names.ip):
                return f"allow-ip {text!r}"
        return None

    def check(self, cert: x509.Certificate, *, peer: str = "peer") -> str:
        """The rule admitting ``cert``; CertificateError (access_denied) naming
        the peer's identities and the rules when none does.  ``peer`` says
        whose certificate it is in the message ("client", "server")."""
        rule = self.matching_rule(cert)
        if rule is not None:
            return rule
        raise CertificateError(
            f"{peer} certificate {_Identities.of(cert).described()} matches no allow-list rule "
            f"({self.described()})",
            AlertDescription.access_denied,
        )

    def described(self) -> str:
        """The rules, for messages: "allow-cn 'a', 'b'; allow-dns '*.example.com'"."""
        parts = [
            f"{flag} " + ", ".join(repr(rule) for rule in rules)
            for flag, rules in (("allow-cn", self.cn), ("allow-dns", self.dns),
                                ("allow-uri", self.uri), ("allow-ip", self.ip))
            if rules
        ]
        return printable_text("; ".join(parts), 300)


def _dns_rule(rule: str) -> str:
    name = rule.strip().lower().removesuffix(".")
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"allow-dns rule {rule!r} must be in A-label (punycode) form, as certificates carry it"
        ) from None
    labels = name.split(".")
    if not name or any(not label for label in labels):
        raise ConfigurationError(f"allow-dns rule {rule!r} is not a DNS name")
    # RFC 6125 §6.4.3: the wildcard is the whole left-most label only; and
    # not directly above a top-level domain, where it would admit a registry.
    if "*" in name and (labels[0] != "*" or "*" in ".".join(labels[1:]) or len(labels) < 3):
        raise ConfigurationError(
                f"allow-dns rule {rule!r}: a wildcard must be the whole left-most label of a name "
                "with at least two more labels (*.example.com)"
            )
    return name


def _dns_matches(rule: str, name: str) -> bool:
    name = name.lower().removesuffix(".")
    if rule == name:
        return True  # also a wildcard certificate name against the same wildcard rule
    if not rule.startswith("*.") or name.startswith("*."):
        return False
    head, dot, rest = name.partition(".")
    return bool(head) and bool(dot) and rest == rule[2:]


def _ip_rule(rule: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(rule.strip().strip("[]"), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            network = ipaddress.ip_network(rule.strip(), strict=False)
            raise ConfigurationError(
                f"allow-ip rule {rule!r} has host bits set: did you mean {network}?"
            ) from None
        raise ConfigurationError(
            f"allow-ip rule {rule!r} is not an IP address or CIDR network (10.0.0.0/8, 2001:db8::/32)"
        ) from None


@dataclass(frozen=True)
class _Identities:
    """What a certificate says it is, as the rules compare it."""

    cn: tuple[str, ...]
    dns: tuple[str, ...]
    uri: tuple[str, ...]
    ip: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]

    @classmethod
    def of(cls, cert: x509.Certificate) -> _Identities:
        cn = tuple(
            str(attribute.value) for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return cls(cn, (), (), ())
        return cls(
            cn,
            tuple(san.get_values_for_type(x509.DNSName)),
            tuple(san.get_values_for_type(x509.UniformResourceIdentifier)),
            tuple(san.get_values_for_type(x509.IPAddress)),  # type: ignore[arg-type]
        )

    def described(self) -> str:
        """"CN='x' (DNS:a, URI:b, IP:c)", bounded and printable (peer-controlled text)."""
        head = ", ".join(f"CN={name!r}" for name in self.cn) or "with no CN"
        names = [f"DNS:{n}" for n in self.dns] + [f"URI:{n}" for n in self.uri]
        names += [f"IP:{address}" for address in self.ip]
        shown = f"{head} ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})" if names else head
        return printable_text(shown, 300)


# --- certificate revocation lists ----------------------------------------------------------

_PEM_CRL_BEGIN = b"-----BEGIN X509 CRL-----"
_PEM_CRL_END = b"-----END X509 CRL-----"


def load_crls(path: str | os.PathLike[str]) -> tuple[x509.CertificateRevocationList, ...]:
    """The CRLs in a file: PEM with one or more ``X509 CRL`` blocks, or one DER
    CRL.  ConfigurationError names the file and what is wrong."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigurationError(f"cannot read CRL file {where!r}: {exc.strerror}") from None
    crls: list[x509.CertificateRevocationList] = []
    try:
        if _PEM_CRL_BEGIN in data:
            for block in data.split(_PEM_CRL_BEGIN)[1:]:
                end = block.find(_PEM_CRL_END)
                if end < 0:
                    raise ValueError("a PEM block has no END line")
                crls.append(x509.load_pem_x509_crl(_PEM_CRL_BEGIN + block[: end + len(_PEM_CRL_END)]))
        else:
            crls.append(x509.load_der_x509_crl(data))
    except ValueError as exc:
        raise ConfigurationError(
            f"CRL file {where!r} is not a PEM or DER certificate revocation list ({printable_text(str(exc), 120)})"
        ) from None
    for crl in crls:
        _check_complete(crl, where)
    return tuple(crls)


def _check_complete(crl: x509.CertificateRevocationList, where: str) -> None:
    """Only complete, direct CRLs are understood (module docstring)."""
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        raise ConfigurationError(f"CRL file {where!r} holds a delta CRL (RFC 5280 §5.2.4): give the complete CRL")
    try:
        point = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return
    if point.indirect_crl:
        raise ConfigurationError(
            f"CRL file {where!r} holds an indirect CRL (RFC 5280 §5.2.5), which longtls does not support"
        )


def crl_expiry_warning(
    where: str, crl: x509.CertificateRevocationList, *, now: datetime.datetime | None = None
) -> str | None:
    """A warning when ``crl`` is past its nextUpdate or reaches it within a day, else None."""
    now = now or datetime.datetime.now(datetime.UTC)
    next_update = crl.next_update_utc
    if next_update is None:
        return None
    stamp = f"{next_update:%Y-%m-%dT%H:%M:%SZ}"
    issuer = _name(crl.issuer)
    if now > next_update:
        return (
            f"CRL {where!r} of {issuer} is past its nextUpdate ({stamp}): certificates of that CA "
            "are refused (certificate_unknown) until a fresh CRL is loaded"
        )
    if next_update - now <= CRL_EXPIRY_WARNING:
        return f"CRL {where!r} of {issuer} reaches its nextUpdate at {stamp}: load a fresh one before then"
    return None


def check_crls_against_anchors(
    crls: Sequence[x509.CertificateRevocationList], anchors: Sequence[x509.Certificate]
) -> None:
    """ConfigurationError for a CRL named after a trust anchor but signed by
    none of that name: a CRL meant for that CA that would never apply.  (A
    CRL of an intermediate CA can only be checked against the paths peers
    present.)"""
    for crl in crls:
        namesakes = [anchor for anchor in anchors if anchor.subject == crl.issuer]
        if namesakes and not any(_signed_by(crl, anchor) for anchor in namesakes):
            raise ConfigurationError(
                f"the CRL of {_name(crl.issuer)} is not signed by that trusted CA's key "
                "(a CRL of another CA of the same name?)"
            )


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """RFC 5280 §6.3.3 (f)-(g): the CRL names ``issuer`` and verifies under its key."""
    if crl.issuer != issuer.subject:
        return False
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False  # a key type that cannot sign CRLs


def check_revocation(
    path: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList],
    *, now: datetime.datetime, peer: str = "peer",
) -> None:
    """Check every certificate of the validated ``path`` (leaf first, trust
    anchor last) against the CRLs of its issuer; CertificateError with
    certificate_revoked (listed) or certificate_unknown (only stale CRLs)."""
    if not crls:
        return
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    for cert, issuer in itertools.pairwise(path):
        own = [crl for crl in crls if _signed_by(crl, issuer)]
        if not own:
            continue  # no CRL of this issuer: not checked (docs/access-control.md)
        for crl in own:
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                raise CertificateError(
                    f"{peer} certificate {_described(cert, path[0])} is revoked: the CRL of "
                    f"{_name(crl.issuer)} lists serial {cert.serial_number:#x} since "
                    f"{entry.revocation_date_utc:%Y-%m-%d %H:%M:%S} UTC{_reason(entry)}",
                    AlertDescription.certificate_revoked,
                )
        if all(crl.next_update_utc is not None and now > crl.next_update_utc for crl in own):
            latest = max(crl.next_update_utc for crl in own if crl.next_update_utc is not None)
            raise CertificateError(
                f"revocation status of {peer} certificate {_described(cert, path[0])} is unknown: "
                f"the CRL of {_name(issuer.subject)} is past its nextUpdate "
                f"({latest:%Y-%m-%d %H:%M:%S} UTC); load a fresh one",
                AlertDescription.certificate_unknown,
            )


def check_peer_access(
    path: Sequence[x509.Certificate], *, allow: PeerAllowList | None,
    crls: Sequence[x509.CertificateRevocationList], now: datetime.datetime, is_server_cert: bool,
) -> str | None:
    """Both checks on a validated path, revocation first (a revoked
    certificate is refused as such even if the allow-list would not admit
    it).  Returns the allow-list rule that admitted the leaf (None without
    an allow-list)."""
    peer = "server" if is_server_cert else "client"
    check_revocation(path, crls, now=now, peer=peer)
    return allow.check(path[0], peer=peer) if allow is not None else None


def _described(cert: x509.Certificate, leaf: x509.Certificate) -> str:
    text = _name(cert.subject)
    return text if cert is leaf else f"{text} (a CA in the chain of {_name(leaf.subject)})"


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return ""
    return f" (reason {reason.name})"


def _name(name: x509.Name) -> str:
    return name_text(name, empty="<empty name>")
