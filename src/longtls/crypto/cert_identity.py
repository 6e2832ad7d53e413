"""Is a renewed certificate the same identity as the one it replaces?

Certificate Update (draft-rosomakho-tls-cert-update-02 §"Requirements for
Authenticators", §"Identity Continuity") lets a peer swap its certificate on
a live connection only if the new one names the same logical identity:

- the subject is byte-identical;
- the issuer is the same;
- the public key MAY differ, but its algorithm and length may not;
- every extension of the original is present with an identical value, and
  there is no extension the original lacks (so the subjectAltName, the key
  usages and the policies are the same).

:func:`check_same_identity` applies those rules and raises
:class:`IdentityViolation` naming the first one broken.  The draft's other
rules (the CertificateVerify's SignatureScheme, a certificate not used before
on the connection, a chain that validates now) are per connection: the
Certificate Update protocol checks them, not this module.  The Certificate
Update receiver (illegal_parameter, as the draft names) and a server that
refuses a renewed certificate file before sending it both call this.

Decisions where the draft's rules contradict each other (docs/certificate-update.md,
"Identity rules"):

- The subjectKeyIdentifier (RFC 5280 §4.2.1.2) identifies the public key and
  is usually derived from it (RFC 7093), so "the key MAY differ" and "all
  extensions identical" cannot both hold.  It must be present iff it is in
  the original, with the same criticality; its value is free when the key
  changed and must be unchanged when the key did not.
- Embedded SCT lists (RFC 6962 §3.3) are per issuance: timestamps and
  signatures differ in every certificate a CT-logging CA issues, so again
  present iff in the original, same criticality, any value.
- The authorityKeyIdentifier (RFC 5280 §4.2.1.1) stays strict: it names the
  issuer's key, and a change is reported as the issuer rule.  A renewal
  signed by a new key of the same CA (a CA key rollover) is refused.
- Every other extension, including per-certificate ones some CAs emit (a
  sharded cRLDistributionPoints URL, an authorityInfoAccess pointing at
  another intermediate), must be byte-identical, as the draft says.

Everything is compared on the DER of the TBSCertificate (RFC 5280 §4.1), not
on cryptography's re-encoding of parsed values, so "identical" means the bytes
the issuer signed.  A certificate cryptography loaded is strict DER, so a
field's encoding is unique and equal bytes are equal values.

Messages are for a user's log: they name the rule and what differs (names,
key types, extension names), never key material.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa
from cryptography.x509.oid import ExtensionOID, PublicKeyAlgorithmOID

from ..constants import AlertDescription
from .certificates import name_text, printable_text

__all__ = [
    "IdentityRule",
    "IdentityViolation",
    "check_same_identity",
    "describe_key",
]


class IdentityRule(StrEnum):
    """The identity rules of draft-rosomakho-tls-cert-update-02 §"Requirements
    for Authenticators" that compare two certificates."""

    subject = "subject"  # byte-identical subject Name
    issuer = "issuer"  # same issuer Name and the same issuer key (authorityKeyIdentifier)
    key_algorithm = "key_algorithm"  # RSA / RSASSA-PSS / ECDSA / Ed25519 / Ed448 / ML-DSA
    key_size = "key_size"  # RSA modulus bits, EC curve, ML-DSA parameter set
    extensions = "extensions"  # same set of extensions, same values and criticality


class IdentityViolation(Exception):
    """A renewed certificate is not the same identity as the original.

    ``rule`` is the rule broken; ``str()`` says what differs in a user's words.
    A Certificate Update receiver ends the connection with ``alert``
    (illegal_parameter, draft-rosomakho-tls-cert-update-02 §"Requirements for
    Authenticators").
    """

    alert = AlertDescription.illegal_parameter

    def __init__(self, rule: IdentityRule, message: str) -> None:
        super().__init__(message)
        self.rule = rule

    def __str__(self) -> str:
        return f"{self.args[0]} ({self.rule} rule)"


def check_same_identity(original: x509.Certificate, new: x509.Certificate) -> None:
    """Raise :class:`IdentityViolation` unless ``new`` may replace ``original``.

    Only the end-entity certificates are compared: the chain, its validity now,
    the signature scheme and reuse are the caller's.
    """
    old_parts, new_parts = _Parts.of(original), _Parts.of_new(new)
    if new_parts.subject != old_parts.subject:
        raise IdentityViolation(
            IdentityRule.subject, _differs("subject", original.subject, new.subject)
        )
    if new_parts.issuer != old_parts.issuer:
        raise IdentityViolation(
            IdentityRule.issuer, _differs("issuer", original.issuer, new.issuer)
        )
    _check_key(original, new)
    _check_extensions(original, old_parts, new, new_parts)


def describe_key(cert: x509.Certificate) -> str:
    """The certificate's key type for messages: "ECDSA P-256", "RSA 2048",
    "Ed25519", "ML-DSA-65" (never key material)."""
    return _key_profile(cert).described


# --- the public key ------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeyProfile:
    """What the draft's "public key algorithm and key length" compare."""

    algorithm: str  # "RSA", "ECDSA", ... or the SPKI algorithm OID
    size: str  # "2048", "P-256", "65"; "" where the algorithm has one size
    described: str  # for messages: "RSA 2048", "ML-DSA-65", "Ed25519"

    @classmethod
    def named(cls, algorithm: str, size: str = "", separator: str = " ") -> _KeyProfile:
        return cls(algorithm, size, f"{algorithm}{separator}{size}" if size else algorithm)


_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_MLDSA_SETS = {
    PublicKeyAlgorithmOID.ML_DSA_44: "44",
    PublicKeyAlgorithmOID.ML_DSA_65: "65",
    PublicKeyAlgorithmOID.ML_DSA_87: "87",
}


def _key_profile(cert: x509.Certificate) -> _KeyProfile:
    # The algorithm comes from the SPKI's AlgorithmIdentifier (RFC 5280
    # §4.1.2.7), so an id-RSASSA-PSS key is not the rsaEncryption key
    # cryptography loads it as.
    oid = cert.public_key_algorithm_oid
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        key = None  # an algorithm or curve cryptography cannot load: compare the raw fields
    if oid == PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5 and isinstance(key, rsa.RSAPublicKey):
        return _KeyProfile.named("RSA", str(key.key_size))
    if oid == PublicKeyAlgorithmOID.RSASSA_PSS and isinstance(key, rsa.RSAPublicKey):
        return _KeyProfile.named("RSASSA-PSS", str(key.key_size))
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _KeyProfile.named("ECDSA", _CURVE_NAMES.get(key.curve.name, key.curve.name))
    if isinstance(key, ed25519.Ed25519PublicKey):
        return _KeyProfile.named("Ed25519")
    if isinstance(key, ed448.Ed448PublicKey):
        return _KeyProfile.named("Ed448")
    if oid in _MLDSA_SETS and isinstance(
        key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
    ):
        return _KeyProfile.named("ML-DSA", _MLDSA_SETS[oid], separator="-")
    # Anything else (an X25519 key, a curve cryptography cannot load): the
    # algorithm is the SPKI's OID, and its "length" the AlgorithmIdentifier's
    # parameters (a curve, say) with the key's bit count.
    parameters, key_bits = _Parts.of(cert).key_fields()
    size = f"{parameters}, {key_bits} bits" if parameters else f"{key_bits} bits"
    algorithm = f"algorithm {oid.dotted_string}"
    return _KeyProfile(algorithm, size, f"{algorithm} ({size})")


def _check_key(original: x509.Certificate, new: x509.Certificate) -> None:
    old_key, new_key = _key_profile(original), _key_profile(new)
    if new_key.algorithm != old_key.algorithm:
        raise IdentityViolation(
            IdentityRule.key_algorithm,
            f"the key algorithm differs: the original certificate's key is "
            f"{describe_key(original)}, the new one's {describe_key(new)}",
        )
    if new_key.size != old_key.size:
        raise IdentityViolation(
            IdentityRule.key_size,
            f"the key length or curve differs: the original certificate's key is "
            f"{describe_key(original)}, the new one's {describe_key(new)}",
        )


# --- extensions ----------------------------------------------------------------------------

# Per-issuance extensions whose value may change (see the module docstring):
# present iff present in the original, with the same criticality.
_SUBJECT_KEY_IDENTIFIER = ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string
_AUTHORITY_KEY_IDENTIFIER = ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string
_EMBEDDED_SCTS = ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS.dotted_string


def _check_extensions(
    original: x509.Certificate, old: _Parts, new: x509.Certificate, renewed: _Parts
) -> None:
    if renewed.duplicates:
        # RFC 5280 §4.2: "A certificate MUST NOT include more than one
        # instance of a particular extension."
        twice = _extension_name(renewed.duplicates[0])
        raise IdentityViolation(
            IdentityRule.extensions, f"the new certificate carries {twice} twice"
        )
    for oid, (critical, value) in old.extensions.items():
        if oid not in renewed.extensions:
            raise IdentityViolation(
                IdentityRule.extensions,
                f"the new certificate lacks the original's {_extension_name(oid)} extension",
            )
        new_critical, new_value = renewed.extensions[oid]
        if new_critical != critical:
            raise IdentityViolation(
                IdentityRule.extensions,
                f"the {_extension_name(oid)} extension is "
                f"{'critical' if critical else 'not critical'} in the original certificate, "
                f"{'critical' if new_critical else 'not critical'} in the new one",
            )
        if new_value == value or oid == _EMBEDDED_SCTS:
            continue
        if oid == _SUBJECT_KEY_IDENTIFIER and renewed.spki != old.spki:
            continue  # a new key has a new identifier (RFC 7093)
        if oid == _AUTHORITY_KEY_IDENTIFIER:
            raise IdentityViolation(
                IdentityRule.issuer,
                f"the new certificate was signed by another key of the issuer "
                f"{_name_text(new.issuer)} (its authorityKeyIdentifier differs): "
                "a certificate from a different CA key, even one with the same name, "
                "cannot replace the original",
            )
        raise IdentityViolation(IdentityRule.extensions, _extension_differs(oid, original, new))
    for oid in renewed.extensions:
        if oid not in old.extensions:
            raise IdentityViolation(
                IdentityRule.extensions,
                f"the new certificate adds an extension the original lacks: {_extension_name(oid)}",
            )


def _extension_differs(oid: str, original: x509.Certificate, new: x509.Certificate) -> str:
    text = f"the {_extension_name(oid)} extension differs"
    if oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string:
        old_names, new_names = _san_names(original), _san_names(new)
        if old_names is not None and new_names is not None:
            added = [n for n in new_names if n not in old_names]
            removed = [n for n in old_names if n not in new_names]
            details = [f"adds {printable_text(', '.join(added), 160)}"] if added else []
            details += [f"drops {printable_text(', '.join(removed), 160)}"] if removed else []
            change = " and ".join(details) or "orders or encodes them differently"
            text += f": the new certificate {change}"
    return text


def _san_names(cert: x509.Certificate) -> list[str] | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        return None  # only the message suffers
    names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    names += [f"IP:{ip}" for ip in san.get_values_for_type(x509.IPAddress)]
    names += [f"email:{n}" for n in san.get_values_for_type(x509.RFC822Name)]
    names += [f"URI:{n}" for n in san.get_values_for_type(x509.UniformResourceIdentifier)]
    return names


# RFC 5280 §4.2 names (and RFC 6962 §3.3's) for messages; others show their OID.
_EXTENSION_NAMES = {
    ExtensionOID.SUBJECT_KEY_IDENTIFIER: "subjectKeyIdentifier",
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER: "authorityKeyIdentifier",
    ExtensionOID.KEY_USAGE: "keyUsage",
    ExtensionOID.EXTENDED_KEY_USAGE: "extendedKeyUsage",
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME: "subjectAltName",
    ExtensionOID.ISSUER_ALTERNATIVE_NAME: "issuerAltName",
    ExtensionOID.BASIC_CONSTRAINTS: "basicConstraints",
    ExtensionOID.NAME_CONSTRAINTS: "nameConstraints",
    ExtensionOID.CERTIFICATE_POLICIES: "certificatePolicies",
    ExtensionOID.CRL_DISTRIBUTION_POINTS: "cRLDistributionPoints",
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS: "authorityInfoAccess",
    ExtensionOID.TLS_FEATURE: "TLS Feature",
    ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS: "embedded SCT list",
    ExtensionOID.PRECERT_POISON: "CT precertificate poison",
}
_NAMES_BY_DOTTED = {oid.dotted_string: name for oid, name in _EXTENSION_NAMES.items()}


def _extension_name(dotted: str) -> str:
    name = _NAMES_BY_DOTTED.get(dotted)
    return f"{name} ({dotted})" if name else dotted


# --- messages ------------------------------------------------------------------------------


def _differs(what: str, old: x509.Name, new: x509.Name) -> str:
    old_text, new_text = _name_text(old), _name_text(new)
    if old_text == new_text:
        # Same text, other bytes: a string type (PrintableString against
        # UTF8String) or an attribute order the printed form hides.
        return f"the {what} {old_text} is encoded differently in the new certificate"
    return f"the {what} differs: the original certificate's is {old_text}, the new one's {new_text}"


def _name_text(name: x509.Name) -> str:
    return name_text(name, empty="<empty name>")


# --- the DER of the TBSCertificate ---------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    """The fields of a TBSCertificate (RFC 5280 §4.1) the rules compare, as DER."""

    issuer: bytes  # Name TLV
    subject: bytes  # Name TLV
    spki: bytes  # SubjectPublicKeyInfo TLV
    extensions: dict[str, tuple[bool, bytes]]  # dotted extnID -> (critical, extnValue contents)
    duplicates: tuple[str, ...]  # extnIDs seen more than once

    @classmethod
    def of(cls, cert: x509.Certificate) -> _Parts:
        # [0] EXPLICIT version, then serialNumber, signature, issuer, validity,
        # subject, subjectPublicKeyInfo, and the OPTIONAL [1] issuerUniqueID,
        # [2] subjectUniqueID, [3] EXPLICIT extensions.
        tbs = _children(_only(cert.tbs_certificate_bytes, 0x30))
        fields = [tlv for tag, _, tlv in tbs if tag not in (0xA0, 0xA1, 0xA2, 0xA3)]
        if len(fields) != 6:
            raise ValueError("a TBSCertificate has six mandatory fields after the version")
        extensions: dict[str, tuple[bool, bytes]] = {}
        duplicates: list[str] = []
        for tag, contents, _ in tbs:
            if tag != 0xA3:
                continue
            for _, extension, _ in _children(_only(contents, 0x30)):
                oid, critical, value = _extension(extension)
                if oid in extensions:
                    duplicates.append(oid)
                extensions[oid] = (critical, value)
        return cls(
            issuer=fields[2],
            subject=fields[4],
            spki=fields[5],
            extensions=extensions,
            duplicates=tuple(duplicates),
        )

    @classmethod
    def of_new(cls, cert: x509.Certificate) -> _Parts:
        """The parts of the certificate offered as a replacement, possibly the peer's."""
        try:
            return cls.of(cert)
        except (ValueError, IndexError) as exc:
            # Cannot happen to a certificate cryptography loaded (it parses the
            # TBSCertificate as strict DER); if it did, nothing about the
            # identity can be shown, and the subject is the first thing compared.
            raise IdentityViolation(
                IdentityRule.subject, f"the new certificate's fields cannot be read ({exc})"
            ) from None

    def key_fields(self) -> tuple[str, int]:
        """The SPKI AlgorithmIdentifier's parameters ("" if absent, an OID
        dotted, anything else in hex) and the key's length in bits."""
        (_, algorithm, _), (_, key, _) = _children(_only(self.spki, 0x30))
        fields = _children(algorithm)
        key_bits = 8 * (len(key) - 1)  # BIT STRING: the unused-bits octet first
        if len(fields) < 2:
            return "", key_bits
        tag, contents, tlv = fields[1]
        return (_dotted(contents) if tag == 0x06 else tlv.hex()), key_bits


def _extension(der: bytes) -> tuple[str, bool, bytes]:
    """Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }."""
    parts = _children(der)
    oid = _dotted(parts[0][1])
    critical = len(parts) == 3 and parts[1][1] != b"\x00"
    return oid, critical, parts[-1][1]


def _only(der: bytes, tag: int) -> bytes:
    """The contents of ``der``, which must be exactly one TLV with ``tag``."""
    ((found, contents, _),) = _children(der)
    if found != tag:
        raise ValueError(f"expected DER tag 0x{tag:02x}, found 0x{found:02x}")
    return contents


def _children(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(tag, contents, whole TLV) for each TLV in ``data``; bounds-checked,
    definite lengths and single-byte tags only (all RFC 5280 uses)."""
    out = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError("truncated DER")
        start, tag, length = pos, data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or pos + count > len(data):
                raise ValueError("bad DER length")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise ValueError("truncated DER")
        out.append((tag, data[pos : pos + length], data[start : pos + length]))
        pos += length
    return out


def _dotted(contents: bytes) -> str:
    """An OBJECT IDENTIFIER's contents in dotted form (X.690 §8.19)."""
    arcs: list[int] = []
    value = 0
    for byte in contents:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise ValueError("empty OBJECT IDENTIFIER")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))
