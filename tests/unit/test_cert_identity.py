"""Certificate Update's identity rules (draft-rosomakho-tls-cert-update-02
§"Requirements for Authenticators"): which renewed certificates may replace
the original on a live connection, and which rule the others break.

The decisions the draft leaves open (subjectKeyIdentifier and embedded SCT
lists may change, authorityKeyIdentifier may not) are in
docs/certificate-update.md, "Identity rules".
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtensionOID, NameOID

from helpers import renewal
from helpers.pki import Credential, _signature_hash, make_ca, make_leaf
from longtls import certs
from longtls.cli.main import main as longtls_main
from longtls.constants import AlertDescription
from longtls.crypto.cert_identity import (
    IdentityRule,
    IdentityViolation,
    check_same_identity,
    describe_key,
)
from longtls.crypto.certificates import TrustStore, verify_chain
from longtls.errors import CertificateError

# The originals the rules are exercised on: one per key family a server uses.
ORIGINAL_KEY_TYPES = ("ecdsa-p256", "rsa-2048", "ed25519")
# The Web PKI profile refuses EdDSA CA keys: Ed25519 leaves get an ECDSA CA.
_CA_KEY_TYPE = {"ed25519": "ecdsa-p256"}
SCT_LIST = ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS


@functools.cache
def original(key_type: str, *, client: bool = False) -> Credential:
    ca = make_ca(_CA_KEY_TYPE.get(key_type, key_type))
    return make_leaf(ca, key_type, client=client)


def violation(old: x509.Certificate, new: x509.Certificate) -> IdentityViolation:
    with pytest.raises(IdentityViolation) as info:
        check_same_identity(old, new)
    return info.value


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def extension_values(
    cert: x509.Certificate, *skip: x509.ObjectIdentifier
) -> dict[str, tuple[bool, bytes]]:
    return {
        ext.oid.dotted_string: (ext.critical, ext.value.public_bytes())
        for ext in cert.extensions
        if ext.oid not in skip
    }


# --- renewals that keep the identity -------------------------------------------------------


@pytest.mark.parametrize("key_type", ORIGINAL_KEY_TYPES)
def test_renewal_with_a_new_key_is_the_same_identity(key_type: str) -> None:
    old = original(key_type)
    new = renewal.renew(old)
    assert new.cert.serial_number != old.cert.serial_number
    assert new.cert.public_key() != old.cert.public_key()
    check_same_identity(old.cert, new.cert)


@pytest.mark.parametrize("key_type", ORIGINAL_KEY_TYPES)
def test_renewal_keeping_the_key_is_the_same_identity(key_type: str) -> None:
    old = original(key_type)
    new = renewal.renew(old, key=old.key)
    assert new.cert.serial_number != old.cert.serial_number
    check_same_identity(old.cert, new.cert)


def test_acme_like_renewal_is_accepted_and_validates() -> None:
    """What an ACME client's renewal looks like: the same order (subject,
    names, profile) from the same CA, a new key, serial and validity; only the
    key-derived subjectKeyIdentifier differs among the extensions."""
    old = original("ecdsa-p256")
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    new = renewal.renew(
        old,
        not_before=now - datetime.timedelta(minutes=5),
        not_after=now + datetime.timedelta(days=90),
    )
    assert new.cert.serial_number != old.cert.serial_number
    assert new.cert.not_valid_before_utc != old.cert.not_valid_before_utc
    assert new.cert.not_valid_after_utc != old.cert.not_valid_after_utc
    assert new.cert.subject.public_bytes() == old.cert.subject.public_bytes()
    ski = ExtensionOID.SUBJECT_KEY_IDENTIFIER
    assert extension_values(new.cert, ski) == extension_values(old.cert, ski)
    # RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's
    # value, which for an uncompressed EC point is the X9.62 encoding.
    point = new.key.public_key()
    assert isinstance(point, ec.EllipticCurvePublicKey)
    expected = hashlib.sha1(
        point.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    ).digest()
    new_ski = new.cert.extensions.get_extension_for_oid(ski).value
    old_ski = old.cert.extensions.get_extension_for_oid(ski).value
    assert isinstance(new_ski, x509.SubjectKeyIdentifier)
    assert isinstance(old_ski, x509.SubjectKeyIdentifier)
    assert new_ski.digest == expected != old_ski.digest

    check_same_identity(old.cert, new.cert)
    store = TrustStore([old.root.cert])
    assert (
        verify_chain([new.cert], store, server_name="localhost", is_server_cert=True)[0] == new.cert
    )


def test_extensions_in_another_order_are_the_same_identity() -> None:
    old = original("ecdsa-p256")
    extensions = list(old.cert.extensions)
    assert old.issuer is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.cert.subject)
        .issuer_name(old.cert.issuer)
        .public_key(old.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(old.cert.not_valid_before_utc)
        .not_valid_after(old.cert.not_valid_after_utc)
    )
    for ext in reversed(extensions):
        builder = builder.add_extension(ext.value, ext.critical)
    new = builder.sign(old.issuer.key, _signature_hash(old.issuer.key))
    assert [e.oid for e in new.extensions] == [e.oid for e in reversed(extensions)]
    check_same_identity(old.cert, new)


def test_client_certificate_renewal() -> None:
    old = original("ecdsa-p256", client=True)
    check_same_identity(old.cert, renewal.renew(old).cert)
    assert violation(old.cert, renewal.missing_extension(old).cert).rule is IdentityRule.extensions


# --- one broken rule each ------------------------------------------------------------------

VARIANT_CASES = [
    pytest.param(key_type, name, id=f"{key_type}-{name}")
    for key_type in ORIGINAL_KEY_TYPES
    for name in renewal.VARIANTS
    if not (key_type == "ed25519" and name == "other_key_size")  # Ed25519 has one size
]


@pytest.mark.parametrize(("key_type", "name"), VARIANT_CASES)
def test_each_variant_breaks_its_rule(key_type: str, name: str) -> None:
    old = original(key_type)
    variant = renewal.VARIANTS[name]
    new = variant.make(old)
    if variant.rule is None:
        check_same_identity(old.cert, new.cert)
    else:
        error = violation(old.cert, new.cert)
        assert error.rule is variant.rule
        assert error.alert is AlertDescription.illegal_parameter
        assert f"({variant.rule} rule)" in str(error)


def test_ed25519_has_no_other_key_size() -> None:
    with pytest.raises(ValueError, match="single size"):
        renewal.other_key_size(original("ed25519"))


@pytest.mark.parametrize(
    ("name", "alert"),
    [
        ("expired", AlertDescription.certificate_expired),
        ("not_yet_valid", AlertDescription.certificate_expired),
        # The trusted CA of that name did not sign it: "signatures that did
        # not verify correctly" (RFC 9846 §6.2), not an unknown CA.
        ("untrusted_ca", AlertDescription.bad_certificate),
    ],
)
def test_identity_preserving_variants_fail_chain_validation(
    name: str, alert: AlertDescription
) -> None:
    """The identity rules hold for these: only validating the chain, which
    the Certificate Update receiver must also do, refuses them."""
    old = original("ecdsa-p256")
    new = renewal.VARIANTS[name].make(old)
    check_same_identity(old.cert, new.cert)
    store = TrustStore([old.root.cert])
    verify_chain([old.cert], store, server_name="localhost", is_server_cert=True)
    with pytest.raises(CertificateError) as info:
        verify_chain([new.cert], store, server_name="localhost", is_server_cert=True)
    assert info.value.alert is alert


def test_messages_say_what_differs() -> None:
    old = original("ecdsa-p256")
    subject = violation(old.cert, renewal.other_subject(old).cert)
    assert "'CN=localhost,O=longtls tests'" in str(subject)
    assert "'CN=other.example,O=longtls tests'" in str(subject)
    san = violation(old.cert, renewal.extra_san(old, "evil.example").cert)
    assert "subjectAltName" in str(san) and "adds DNS:evil.example" in str(san)
    assert "keyUsage" in str(violation(old.cert, renewal.changed_key_usage(old).cert))
    assert "adds an extension the original lacks: TLS Feature" in str(
        violation(old.cert, renewal.extra_extension(old).cert)
    )
    assert "lacks the original's extendedKeyUsage" in str(
        violation(old.cert, renewal.missing_extension(old).cert)
    )
    size = violation(old.cert, renewal.other_key_size(old).cert)
    assert "ECDSA P-256" in str(size) and "ECDSA P-384" in str(size)
    algorithm = violation(old.cert, renewal.other_key_type(old).cert)
    assert "ECDSA P-256" in str(algorithm) and "Ed25519" in str(algorithm)
    assert "authorityKeyIdentifier" in str(violation(old.cert, renewal.other_issuer(old).cert))
    issuer = violation(old.cert, renewal.other_issuer_name(old).cert)
    assert "longtls test CA (another one)" in str(issuer)


def test_other_key_size_for_rsa_and_mldsa() -> None:
    # RSA modulus length and the ML-DSA parameter set are the "key length".
    rsa_original = original("rsa-2048")
    error = violation(rsa_original.cert, renewal.other_key_size(rsa_original).cert)
    assert error.rule is IdentityRule.key_size
    assert "RSA 2048" in str(error) and "RSA 3072" in str(error)
    mldsa = original("mldsa44")
    error = violation(mldsa.cert, renewal.other_key_size(mldsa).cert)
    assert error.rule is IdentityRule.key_size
    assert "ML-DSA-44" in str(error) and "ML-DSA-65" in str(error)


def test_brainpool_curve_of_the_same_length_is_another_key_size() -> None:
    old = make_leaf(original("ecdsa-p256").root, "ecdsa-p256")
    new = renewal.renew(
        old, key=renewal.cached_key("ecdsa-brainpoolP256r1"), key_type="ecdsa-brainpoolP256r1"
    )
    error = violation(old.cert, new.cert)
    assert error.rule is IdentityRule.key_size
    assert "ECDSA brainpoolP256r1" in str(error)


def test_subject_with_the_same_text_in_another_string_type_is_another_subject() -> None:
    # The draft asks for the subject to "match exactly": the DER, not the
    # printed form (a PrintableString CN is not the UTF8String one).
    old = original("ecdsa-p256")
    printable = x509.Name(
        [
            x509.NameAttribute(attr.oid, str(attr.value), _type=_ASN1Type.PrintableString)
            if attr.oid == NameOID.COMMON_NAME
            else attr
            for attr in old.cert.subject
        ]
    )
    new = renewal.renew(old, subject=printable)
    assert new.cert.subject.rfc4514_string() == old.cert.subject.rfc4514_string()
    error = violation(old.cert, new.cert)
    assert error.rule is IdentityRule.subject
    assert "encoded differently" in str(error)


def test_changed_criticality_breaks_the_extensions_rule() -> None:
    old = original("ecdsa-p256")
    eku = old.cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    new = renewal.renew(old, replace=[x509.Extension(eku.oid, True, eku.value)])
    error = violation(old.cert, new.cert)
    assert error.rule is IdentityRule.extensions
    assert "not critical in the original certificate, critical in the new one" in str(error)


def test_duplicated_extension_breaks_the_extensions_rule() -> None:
    # cryptography's builder refuses duplicates, so rename a private
    # extension's OID in the DER to the subjectAltName's (same length).  The
    # signature no longer verifies, which the identity rules do not look at.
    old = original("ecdsa-p256")
    placeholder = x509.ObjectIdentifier("2.5.29.99")
    copy = old.cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    raw = renewal.renew(
        old,
        key=old.key,
        add=[
            x509.Extension(
                placeholder,
                False,
                x509.UnrecognizedExtension(placeholder, copy.value.public_bytes()),
            )
        ],
    )
    encoded = der(raw.cert)
    assert encoded.count(b"\x06\x03\x55\x1d\x63") == 1
    new = x509.load_der_x509_certificate(
        encoded.replace(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x11")
    )
    error = violation(old.cert, new)
    assert error.rule is IdentityRule.extensions
    assert "subjectAltName (2.5.29.17) twice" in str(error)


# --- subjectKeyIdentifier, embedded SCTs, authorityKeyIdentifier ---------------------------


def test_subject_key_identifier_must_stay_when_the_key_stays() -> None:
    old = original("ecdsa-p256")
    other_ski = x509.SubjectKeyIdentifier(os.urandom(20))
    new = renewal.renew(
        old,
        key=old.key,
        replace=[x509.Extension(ExtensionOID.SUBJECT_KEY_IDENTIFIER, False, other_ski)],
    )
    error = violation(old.cert, new.cert)
    assert error.rule is IdentityRule.extensions
    assert "subjectKeyIdentifier" in str(error)


def test_subject_key_identifier_may_be_any_value_for_a_new_key() -> None:
    # RFC 7093 allows several derivations (and RFC 5280 any unique value):
    # with a new key, the identifier is the CA's to choose.
    old = original("ecdsa-p256")
    truncated = x509.SubjectKeyIdentifier(os.urandom(8))
    new = renewal.renew(
        old, replace=[x509.Extension(ExtensionOID.SUBJECT_KEY_IDENTIFIER, False, truncated)]
    )
    check_same_identity(old.cert, new.cert)


def test_subject_key_identifier_present_iff_in_the_original() -> None:
    old = original("ecdsa-p256")
    without = renewal.renew(old, drop=[ExtensionOID.SUBJECT_KEY_IDENTIFIER])
    assert "lacks the original's subjectKeyIdentifier" in str(violation(old.cert, without.cert))
    # And the other way round: an original without one, a renewal with one.
    assert violation(without.cert, old.cert).rule is IdentityRule.extensions


def sct_list(count: int = 2) -> x509.Extension[x509.UnrecognizedExtension]:
    """An embedded SignedCertificateTimestampList (RFC 6962 §3.2, §3.3) of
    random SCTs: what a CT-logging CA adds, different in every issuance."""
    scts = b""
    for _ in range(count):
        sct = (
            b"\x00"  # v1
            + os.urandom(32)  # LogID
            + struct.pack(">Q", 1_750_000_000_000 + int.from_bytes(os.urandom(4)))  # timestamp
            + b"\x00\x00"  # CtExtensions
            + b"\x04\x03"  # sha256, ecdsa
            + struct.pack(">H", 8)
            + os.urandom(8)  # signature
        )
        scts += struct.pack(">H", len(sct)) + sct
    tls_list = struct.pack(">H", len(scts)) + scts
    # extnValue holds an OCTET STRING (DER length: short form below 128, else 0x81 n)
    length = bytes([len(tls_list)]) if len(tls_list) < 128 else bytes([0x81, len(tls_list)])
    octets = b"\x04" + length + tls_list
    return x509.Extension(SCT_LIST, False, x509.UnrecognizedExtension(SCT_LIST, octets))


def test_embedded_scts_may_differ_but_not_disappear() -> None:
    base = original("ecdsa-p256")
    old = renewal.renew(base, add=[sct_list()])
    new = renewal.renew(old, replace=[sct_list(3)])
    old_scts = old.cert.extensions.get_extension_for_oid(SCT_LIST).value
    new_scts = new.cert.extensions.get_extension_for_oid(SCT_LIST).value
    assert old_scts.public_bytes() != new_scts.public_bytes()
    check_same_identity(old.cert, new.cert)

    without = renewal.renew(old, drop=[SCT_LIST])
    error = violation(old.cert, without.cert)
    assert error.rule is IdentityRule.extensions and "embedded SCT list" in str(error)
    error = violation(base.cert, new.cert)  # an original without SCTs
    assert error.rule is IdentityRule.extensions
    assert "adds an extension the original lacks: embedded SCT list" in str(error)
    critical = renewal.renew(old, replace=[x509.Extension(SCT_LIST, True, sct_list().value)])
    assert violation(old.cert, critical.cert).rule is IdentityRule.extensions


def test_ca_key_rollover_is_refused_as_another_issuer() -> None:
    # Same CA name, new CA key: the renewal's authorityKeyIdentifier names the
    # new key.  Refused, as the draft's "same issuer" is read strictly.
    old = original("ecdsa-p256")
    assert old.issuer is not None
    rolled = make_ca("ecdsa-p256", common_name=f"longtls test CA {old.issuer.key_type}")
    assert rolled.cert.subject.public_bytes() == old.issuer.cert.subject.public_bytes()
    new = renewal.renew(old, issuer=rolled)
    assert new.cert.issuer.public_bytes() == old.cert.issuer.public_bytes()
    error = violation(old.cert, new.cert)
    assert error.rule is IdentityRule.issuer
    assert "authorityKeyIdentifier" in str(error)


# --- describe_key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "described"),
    [
        ("rsa-2048", "RSA 2048"),
        ("ecdsa-p256", "ECDSA P-256"),
        ("ecdsa-p384", "ECDSA P-384"),
        ("ecdsa-p521", "ECDSA P-521"),
        ("ecdsa-brainpoolP384r1", "ECDSA brainpoolP384r1"),
        ("ed25519", "Ed25519"),
        ("ed448", "Ed448"),
        ("mldsa44", "ML-DSA-44"),
        ("mldsa65", "ML-DSA-65"),
        ("mldsa87", "ML-DSA-87"),
    ],
)
def test_describe_key(key_type: str, described: str) -> None:
    ca = original("ecdsa-p256").root
    key = renewal.cached_key(key_type)
    cert = renewal.renew(original("ecdsa-p256"), key=key, key_type=key_type, issuer=ca).cert
    assert describe_key(cert) == described


def test_key_of_an_algorithm_without_a_profile_is_compared_by_oid() -> None:
    # An X25519 key cannot sign, but a certificate can carry one: the rules
    # fall back to the SubjectPublicKeyInfo's algorithm OID (RFC 8410: 1.3.101.110).
    old = original("ed25519")
    x_cert = renewal.renew(old, key=old.key).cert  # Ed25519 key, to reuse the extensions
    ca = old.issuer
    assert ca is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(x_cert.subject)
        .issuer_name(x_cert.issuer)
        .public_key(x25519.X25519PrivateKey.generate().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(x_cert.not_valid_before_utc)
        .not_valid_after(x_cert.not_valid_after_utc)
    )
    x_only = builder.sign(ca.key, _signature_hash(ca.key))
    assert describe_key(x_only) == "algorithm 1.3.101.110 (256 bits)"
    error = violation(old.cert, x_only)
    assert error.rule is IdentityRule.key_algorithm
    assert "Ed25519" in str(error) and "1.3.101.110" in str(error)


# --- certificates made by `longtls certs` --------------------------------------------------


def _load_issued(directory: Path, stem: str) -> certs.Issued:
    cert = x509.load_pem_x509_certificate((directory / f"{stem}.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / f"{stem}.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return certs.Issued(cert, key)


def test_longtls_certs_renewal_with_the_same_ca_is_the_same_identity(tmp_path: Path) -> None:
    """`longtls certs` writes a CA and its key; a renewal issued by that CA with
    the same names passes, for the server and the client certificate.  Running
    `longtls certs --force` again makes a new CA (a new unique name and a new
    key): its certificates are another issuer."""
    assert longtls_main(["certs", "--out", str(tmp_path)]) == 0
    ca = _load_issued(tmp_path, "ca")
    for stem, names, client in (
        ("server", list(certs.DEFAULT_NAMES), False),
        ("client", ["longtls client"], True),
    ):
        old = _load_issued(tmp_path, stem)
        new = certs.make_leaf(ca, "ecdsa-p256", names, client=client)
        assert new.cert.serial_number != old.cert.serial_number
        check_same_identity(old.cert, new.cert)

    first_server = _load_issued(tmp_path, "server")
    assert longtls_main(["certs", "--out", str(tmp_path), "--force"]) == 0
    regenerated = _load_issued(tmp_path, "server")
    assert regenerated.cert.issuer != first_server.cert.issuer  # each generated CA has its own name
    assert violation(first_server.cert, regenerated.cert).rule is IdentityRule.issuer
