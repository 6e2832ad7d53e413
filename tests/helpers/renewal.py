"""Renewed certificates for Certificate Update tests, built on helpers.pki.

    ca = make_ca()
    server = make_leaf(ca, "ecdsa-p256")
    renewed = renew(server)                       # same subject, SAN, extensions;
                                                  # new key, serial number, dates
    same_key = renew(server, key=server.key)      # a renewal that keeps the key
    for name, variant in VARIANTS.items():        # each breaks exactly one thing
        bad = variant.make(server)                # variant.rule: the IdentityRule it breaks, or
                                                  # None when only chain validation refuses it

``renew`` does what a CA does with an ACME renewal order: it copies the
original's subject and extensions (the CSR and the profile are the same),
signs with the issuing CA, and derives the subjectKeyIdentifier from the new
key and the authorityKeyIdentifier from the signer, as helpers.pki does.

Keys: a fresh key of the original's type unless ``key=`` is given.  RSA and
ML-DSA keys take time to make, so the variants (whose keys nobody checks) use
:func:`cached_key`, a few keys per type made once per test run.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from longtls.crypto.cert_identity import IdentityRule

from .pki import (
    Credential,
    PrivateKey,
    _aki,
    _signature_hash,
    _ski,
    _validity,
    generate_key,
    make_ca,
)

__all__ = [
    "VARIANTS",
    "Variant",
    "cached_key",
    "changed_key_usage",
    "expired",
    "extra_extension",
    "extra_san",
    "missing_extension",
    "not_yet_valid",
    "other_issuer",
    "other_issuer_name",
    "other_key_size",
    "other_key_type",
    "other_subject",
    "renew",
    "untrusted_ca",
]


def renew(
    original: Credential,
    *,
    key: PrivateKey | None = None,
    key_type: str | None = None,
    issuer: Credential | None = None,
    subject: x509.Name | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    replace: Iterable[x509.Extension[x509.ExtensionType]] = (),
    add: Iterable[x509.Extension[x509.ExtensionType]] = (),
    drop: Iterable[x509.ObjectIdentifier] = (),
) -> Credential:
    """A new certificate for ``original``'s identity, with a new serial number.

    Defaults: a fresh key of the original's type (``key_type`` for another
    type, ``key`` for a given key, e.g. ``original.key``), signed by the
    original's issuer, valid from an hour ago for 30 days (helpers.pki's
    defaults), every extension of the original with the SKI of the new key
    and the AKI of the signer.  ``replace`` swaps extensions (by OID),
    ``add`` appends new ones, ``drop`` leaves some out.
    """
    signer = issuer or original.issuer
    if signer is None:
        raise ValueError("renew() needs an issued certificate, not a self-signed root")
    key_type = key_type or original.key_type
    new_key = key if key is not None else generate_key(key_type)
    replaced = {ext.oid: ext for ext in replace}
    dropped = set(drop)
    start, end = _validity(not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject if subject is not None else original.cert.subject)
        .issuer_name(signer.cert.subject)
        .public_key(new_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    for ext in original.cert.extensions:
        if ext.oid in dropped:
            continue
        if ext.oid in replaced:
            ext = replaced.pop(ext.oid)
        elif ext.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
            ext = x509.Extension(ext.oid, ext.critical, _ski(new_key))
        elif ext.oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            ext = x509.Extension(ext.oid, ext.critical, _aki(signer))
        builder = builder.add_extension(ext.value, ext.critical)
    if replaced:
        raise ValueError(
            f"replace= names extensions the original lacks: {sorted(map(str, replaced))}"
        )
    for ext in add:
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(signer.key, _signature_hash(signer.key))
    return Credential(key_type, new_key, cert, signer)


@functools.cache
def cached_key(key_type: str, slot: int = 0) -> PrivateKey:
    """Key number ``slot`` of ``key_type``, made once per test run.

    Safe wherever a test does not need the key to be unused elsewhere (the
    variants below); a renewal meant to show a *new* key should use renew()'s
    fresh one.  "rsa-3072" is available here for other_key_size.
    """
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return generate_key(key_type)


# --- renewals that break exactly one rule --------------------------------------------------


def _extension(cred: Credential, oid: x509.ObjectIdentifier) -> x509.Extension[x509.ExtensionType]:
    return cred.cert.extensions.get_extension_for_oid(oid)


def _variant_key(original: Credential) -> PrivateKey:
    return cached_key(original.key_type, 1)


def other_subject(original: Credential) -> Credential:
    """Subject CN changed (SAN and everything else kept): the subject rule."""
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, "other.example")
        if attr.oid == NameOID.COMMON_NAME
        else attr
        for attr in original.cert.subject
    ]
    return renew(original, key=_variant_key(original), subject=x509.Name(attributes))


def extra_san(original: Credential, name: str = "extra.example") -> Credential:
    """One more dNSName in the subjectAltName: the extensions rule."""
    san = _extension(original, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert isinstance(san.value, x509.SubjectAlternativeName)
    wider = x509.SubjectAlternativeName([*san.value, x509.DNSName(name)])
    return renew(
        original, key=_variant_key(original), replace=[x509.Extension(san.oid, san.critical, wider)]
    )


def changed_key_usage(original: Credential) -> Credential:
    """keyUsage gains contentCommitment (nonRepudiation): the extensions rule."""
    usage = _extension(original, ExtensionOID.KEY_USAGE)
    value = usage.value
    assert isinstance(value, x509.KeyUsage)
    changed = x509.KeyUsage(
        digital_signature=value.digital_signature,
        content_commitment=not value.content_commitment,
        key_encipherment=value.key_encipherment,
        data_encipherment=value.data_encipherment,
        key_agreement=value.key_agreement,
        key_cert_sign=value.key_cert_sign,
        crl_sign=value.crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
    return renew(
        original,
        key=_variant_key(original),
        replace=[x509.Extension(usage.oid, usage.critical, changed)],
    )


def extra_extension(original: Credential) -> Credential:
    """A TLS Feature (OCSP must-staple, RFC 7633) the original lacks: the extensions rule."""
    feature = x509.TLSFeature([x509.TLSFeatureType.status_request])
    if any(ext.oid == feature.oid for ext in original.cert.extensions):
        raise ValueError("the original already carries a TLS Feature extension")
    return renew(
        original, key=_variant_key(original), add=[x509.Extension(feature.oid, False, feature)]
    )


def missing_extension(original: Credential) -> Credential:
    """The extendedKeyUsage left out: the extensions rule."""
    return renew(original, key=_variant_key(original), drop=[ExtensionOID.EXTENDED_KEY_USAGE])


@functools.cache
def _impostor_ca(ca: Credential) -> Credential:
    """Another CA with the same name and key type as ``ca`` (another key)."""
    common_name = ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(common_name, str)
    impostor = make_ca(ca.key_type, common_name=common_name)
    if impostor.cert.subject.public_bytes() != ca.cert.subject.public_bytes():
        raise ValueError("only a CA made by helpers.pki.make_ca can be impersonated")
    return impostor


@functools.cache
def _other_name_ca(key_type: str) -> Credential:
    return make_ca(key_type, common_name="longtls test CA (another one)")


def _issuer(original: Credential) -> Credential:
    if original.issuer is None:
        raise ValueError("a self-signed root has no renewal")
    return original.issuer


def other_issuer(original: Credential) -> Credential:
    """Issued by another CA with the same name (another CA key, so another
    authorityKeyIdentifier): the issuer rule."""
    return renew(original, key=_variant_key(original), issuer=_impostor_ca(_issuer(original)))


def other_issuer_name(original: Credential) -> Credential:
    """Issued by a CA with another name: the issuer rule."""
    return renew(
        original, key=_variant_key(original), issuer=_other_name_ca(_issuer(original).key_type)
    )


def other_key_type(original: Credential) -> Credential:
    """An Ed25519 key for an ECDSA original, an ECDSA P-256 key for any
    other: the key_algorithm rule."""
    key_type = "ed25519" if original.key_type.startswith("ecdsa") else "ecdsa-p256"
    return renew(original, key=cached_key(key_type), key_type=key_type)


# Same algorithm, another length (RSA modulus, EC curve, ML-DSA parameter set).
_OTHER_SIZE = {
    "rsa-2048": "rsa-3072",
    "ecdsa-p256": "ecdsa-p384",
    "ecdsa-p384": "ecdsa-p256",
    "ecdsa-p521": "ecdsa-p256",
    "ecdsa-brainpoolP256r1": "ecdsa-brainpoolP384r1",
    "ecdsa-brainpoolP384r1": "ecdsa-brainpoolP256r1",
    "ecdsa-brainpoolP512r1": "ecdsa-brainpoolP256r1",
    "mldsa44": "mldsa65",
    "mldsa65": "mldsa87",
    "mldsa87": "mldsa44",
}


def other_key_size(original: Credential) -> Credential:
    """A key of the same algorithm and another length: the key_size rule.

    Ed25519 and Ed448 have one size each (ValueError).
    """
    if original.key_type not in _OTHER_SIZE:
        raise ValueError(f"{original.key_type} keys have a single size")
    key_type = _OTHER_SIZE[original.key_type]
    return renew(original, key=cached_key(key_type), key_type=key_type)


def expired(original: Credential) -> Credential:
    """Same identity, valid until yesterday: only chain validation refuses it."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return renew(
        original,
        key=_variant_key(original),
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )


def not_yet_valid(original: Credential) -> Credential:
    """Same identity, valid from tomorrow: only chain validation refuses it."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return renew(
        original,
        key=_variant_key(original),
        not_before=now + datetime.timedelta(days=1),
        not_after=now + datetime.timedelta(days=30),
    )


def untrusted_ca(original: Credential) -> Credential:
    """A forgery: signed by an impostor CA with the trusted CA's name, carrying
    the original's authorityKeyIdentifier.  Every identity rule holds, so only
    chain validation (the signature does not verify under the trusted CA's
    key) refuses it: the identity rules are no substitute for the chain."""
    aki = _extension(original, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    return renew(
        original,
        key=_variant_key(original),
        issuer=_impostor_ca(_issuer(original)),
        replace=[aki],
    )


@dataclass(frozen=True)
class Variant:
    """A renewal that breaks one thing; ``rule`` is the identity rule it
    breaks, None if the identity holds and only chain validation refuses it."""

    make: Callable[[Credential], Credential]
    rule: IdentityRule | None


VARIANTS: dict[str, Variant] = {
    "other_subject": Variant(other_subject, IdentityRule.subject),
    "extra_san": Variant(extra_san, IdentityRule.extensions),
    "changed_key_usage": Variant(changed_key_usage, IdentityRule.extensions),
    "extra_extension": Variant(extra_extension, IdentityRule.extensions),
    "missing_extension": Variant(missing_extension, IdentityRule.extensions),
    "other_issuer": Variant(other_issuer, IdentityRule.issuer),
    "other_issuer_name": Variant(other_issuer_name, IdentityRule.issuer),
    "other_key_type": Variant(other_key_type, IdentityRule.key_algorithm),
    "other_key_size": Variant(other_key_size, IdentityRule.key_size),
    "expired": Variant(expired, None),
    "not_yet_valid": Variant(not_yet_valid, None),
    "untrusted_ca": Variant(untrusted_ca, None),
}
