"""Signature schemes for CertificateVerify (RFC 9846 §4.3.3, §4.5.2).

``sign`` and ``verify`` take the bytes to be signed as they are: building the
CertificateVerify content (64 spaces, context string, 0, transcript hash) is
the handshake's job.  ML-DSA follows draft-ietf-tls-mldsa: pure ML-DSA with an
empty context string.  ECDSA schemes bind the curve in TLS 1.3 (RFC 9846
§4.3.3): P-256/SHA-256, P-384/SHA-384, P-521/SHA-512, and RFC 8734's
brainpoolP256r1/SHA-256, brainpoolP384r1/SHA-384, brainpoolP512r1/SHA-512.

RFC 9846 section numbers are those of the spec text (specs/rfc9846-tls13-rfc8446bis.md);
RFC 8446 numbered the same sections one lower (§4.3.x there was §4.2.x, §4.5.x was §4.4.x).
"""

from __future__ import annotations

from typing import TypeAlias, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import PublicKeyAlgorithmOID

from ..constants import AlertDescription, SignatureScheme
from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "SUPPORTED_CERT_SIGNATURE_SCHEMES",
    "SUPPORTED_SIGNATURE_SCHEMES",
    "PrivateKey",
    "PublicKey",
    "key_description",
    "schemes_for_key",
    "sign",
    "verify",
]

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | mldsa.MLDSA44PrivateKey
    | mldsa.MLDSA65PrivateKey
    | mldsa.MLDSA87PrivateKey
)
PublicKey: TypeAlias = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | mldsa.MLDSA44PublicKey
    | mldsa.MLDSA65PublicKey
    | mldsa.MLDSA87PublicKey
)

S = SignatureScheme

#: Schemes longtls signs and verifies in CertificateVerify, most preferred first:
#: small and fast classical signatures, then RSA, then ML-DSA (2.4-4.6 KB).
#: All of them are offered by default: each costs two bytes in the hello and
#: is used only with a key of its own type (docs/groups-and-suites.md).
SUPPORTED_SIGNATURE_SCHEMES: tuple[SignatureScheme, ...] = (
    S.ecdsa_secp256r1_sha256,
    S.ecdsa_secp384r1_sha384,
    S.ecdsa_secp521r1_sha512,
    S.ed25519,
    S.ed448,
    S.ecdsa_brainpoolP256r1tls13_sha256,
    S.ecdsa_brainpoolP384r1tls13_sha384,
    S.ecdsa_brainpoolP512r1tls13_sha512,
    S.rsa_pss_rsae_sha256,
    S.rsa_pss_rsae_sha384,
    S.rsa_pss_rsae_sha512,
    S.rsa_pss_pss_sha256,
    S.rsa_pss_pss_sha384,
    S.rsa_pss_pss_sha512,
    S.mldsa44,
    S.mldsa65,
    S.mldsa87,
)

#: For "signature_algorithms_cert": RSASSA-PKCS1-v1_5 is not defined for
#: handshake signatures but CAs still sign certificates with it (RFC 9846 §4.3.3).
SUPPORTED_CERT_SIGNATURE_SCHEMES: tuple[SignatureScheme, ...] = (
    *SUPPORTED_SIGNATURE_SCHEMES,
    S.rsa_pkcs1_sha256,
    S.rsa_pkcs1_sha384,
    S.rsa_pkcs1_sha512,
)

_RSAE: tuple[SignatureScheme, ...] = (
    S.rsa_pss_rsae_sha256,
    S.rsa_pss_rsae_sha384,
    S.rsa_pss_rsae_sha512,
)
_PSS: tuple[SignatureScheme, ...] = (
    S.rsa_pss_pss_sha256,
    S.rsa_pss_pss_sha384,
    S.rsa_pss_pss_sha512,
)

_PSS_HASH: dict[SignatureScheme, hashes.HashAlgorithm] = {
    S.rsa_pss_rsae_sha256: hashes.SHA256(),
    S.rsa_pss_rsae_sha384: hashes.SHA384(),
    S.rsa_pss_rsae_sha512: hashes.SHA512(),
    S.rsa_pss_pss_sha256: hashes.SHA256(),
    S.rsa_pss_pss_sha384: hashes.SHA384(),
    S.rsa_pss_pss_sha512: hashes.SHA512(),
}
# RFC 9846 §4.3.3: salt length = hash length, MGF1 over the same hash.
_PSS_PADDING: dict[SignatureScheme, padding.PSS] = {
    scheme: padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
    for scheme, h in _PSS_HASH.items()
}
# Curve name (cryptography's) -> the one TLS 1.3 scheme for keys on that curve.
_ECDSA: dict[str, tuple[SignatureScheme, ec.ECDSA]] = {
    "secp256r1": (S.ecdsa_secp256r1_sha256, ec.ECDSA(hashes.SHA256())),
    "secp384r1": (S.ecdsa_secp384r1_sha384, ec.ECDSA(hashes.SHA384())),
    "secp521r1": (S.ecdsa_secp521r1_sha512, ec.ECDSA(hashes.SHA512())),
    # RFC 8734 §2: TLS 1.3 only; the TLS 1.2 brainpool code points do not apply.
    "brainpoolP256r1": (S.ecdsa_brainpoolP256r1tls13_sha256, ec.ECDSA(hashes.SHA256())),
    "brainpoolP384r1": (S.ecdsa_brainpoolP384r1tls13_sha384, ec.ECDSA(hashes.SHA384())),
    "brainpoolP512r1": (S.ecdsa_brainpoolP512r1tls13_sha512, ec.ECDSA(hashes.SHA512())),
}
_ECDSA_BY_SCHEME = {scheme: algorithm for scheme, algorithm in _ECDSA.values()}


# --- which schemes fit a key -------------------------------------------------------------


def schemes_for_key(
    key: object, cert: x509.Certificate | None = None
) -> list[SignatureScheme]:
    """The CertificateVerify schemes ``key`` can make, most preferred first.

    ``cert`` (the certificate carrying the key) tells an RSASSA-PSS key
    (id-RSASSA-PSS SPKI: rsa_pss_pss_*, limited to the hash its parameters
    allow) from an rsaEncryption key (rsa_pss_rsae_*); without it an RSA key
    is taken to be rsaEncryption.  An unusable key gives an empty list.
    """
    public = _public(key)
    kind = _key_kind(public)
    if kind is rsa.RSAPublicKey:
        schemes = _RSAE
        if cert is not None and cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS:
            schemes = _pss_schemes_allowed_by(cert)
        # EMSA-PSS needs emLen >= hLen + sLen + 2 (RFC 8017 §9.1.1).
        em_len = (cast(rsa.RSAPublicKey, public).key_size + 6) // 8
        return [s for s in schemes if em_len >= 2 * _PSS_HASH[s].digest_size + 2]
    if kind is ec.EllipticCurvePublicKey:
        entry = _ECDSA.get(cast(ec.EllipticCurvePublicKey, public).curve.name)
        return [entry[0]] if entry else []
    single = _ONE_SCHEME.get(kind) if kind is not None else None
    return [single] if single is not None else []


#: Key types (abstract classes) with exactly one scheme.
_ONE_SCHEME: dict[type, SignatureScheme] = {
    ed25519.Ed25519PublicKey: S.ed25519,
    ed448.Ed448PublicKey: S.ed448,
    mldsa.MLDSA44PublicKey: S.mldsa44,
    mldsa.MLDSA65PublicKey: S.mldsa65,
    mldsa.MLDSA87PublicKey: S.mldsa87,
}
_KEY_KINDS = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, *_ONE_SCHEME)
#: The abstract class of each concrete key class seen (None: none of them).
#: isinstance against those ABCs goes through Python code every time, and a
#: handshake asks 3 times (issue 16); the concrete classes are few.
_KIND_OF_TYPE: dict[type, type | None] = {}


def _key_kind(public: object) -> type | None:
    """Which of ``_KEY_KINDS`` ``public`` is an instance of, or None."""
    concrete = type(public)
    try:
        return _KIND_OF_TYPE[concrete]
    except KeyError:
        kind = next((k for k in _KEY_KINDS if isinstance(public, k)), None)
        # Not for objects that claim another __class__ (test doubles): their
        # type does not say what isinstance sees.
        if public.__class__ is concrete and len(_KIND_OF_TYPE) < 64:
            _KIND_OF_TYPE[concrete] = kind
        return kind


def _public(key: object) -> object:
    public_key = getattr(key, "public_key", None)
    return public_key() if callable(public_key) else key


# RSASSA-PSS-params (RFC 4055 §3.1) in the SPKI restrict the key: its hash and
# MGF1 hash are fixed and saltLength is a minimum.  pyca/cryptography loads such
# a key as a plain RSA key and does not expose the parameters, so read them
# from the DER of the TBSCertificate (already strictly parsed by cryptography).
_HASH_OIDS = {  # DER contents of the id-sha* OIDs (NIST CSOR 2.16.840.1.101.3.4.2.x)
    bytes.fromhex("608648016503040201"): S.rsa_pss_pss_sha256,
    bytes.fromhex("608648016503040202"): S.rsa_pss_pss_sha384,
    bytes.fromhex("608648016503040203"): S.rsa_pss_pss_sha512,
}


def _der_children(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each TLV in ``data`` (definite lengths only)."""
    out = []
    pos = 0
    while pos < len(data):
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def _pss_schemes_allowed_by(cert: x509.Certificate) -> tuple[SignatureScheme, ...]:
    try:
        tbs = _der_children(_der_children(cert.tbs_certificate_bytes)[0][1])
        if tbs[0][0] == 0xA0:  # [0] EXPLICIT version
            tbs = tbs[1:]
        # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
        algorithm = _der_children(_der_children(tbs[5][1])[0][1])
        if len(algorithm) < 2:
            return _PSS  # parameters absent: the key is not restricted
        params = dict(_der_children(algorithm[1][1]))
        # Absent fields take their DEFAULTs: SHA-1, MGF1-SHA-1, saltLength 20.
        hash_field, mgf_field = params.get(0xA0), params.get(0xA1)
        if hash_field is None or mgf_field is None:
            return ()  # SHA-1 somewhere: no TLS 1.3 scheme fits
        scheme = _HASH_OIDS.get(_algorithm_oid(hash_field))
        mgf_hash = _der_children(_der_children(mgf_field)[0][1])[1][1]
        if scheme is None or _algorithm_oid(mgf_hash, wrapped=False) != _algorithm_oid(
            hash_field
        ):
            return ()  # MGF1 must use the signing hash (RFC 9846 §4.3.3)
        salt_field = params.get(0xA2)
        if salt_field is not None:
            min_salt = int.from_bytes(_der_children(salt_field)[0][1], "big")
            if min_salt > _PSS_HASH[scheme].digest_size:
                return ()  # TLS uses salt = hash length, below the key's minimum
        return (scheme,)
    except (IndexError, KeyError):
        return ()  # unreadable parameters: refuse rather than guess


def _algorithm_oid(field: bytes, *, wrapped: bool = True) -> bytes:
    """The OID contents of an AlgorithmIdentifier (inside an EXPLICIT tag if wrapped)."""
    identifier = _der_children(field)[0][1] if wrapped else field
    return _der_children(identifier)[0][1]


# EdDSA (PureEdDSA) and ML-DSA (pure, empty context) sign the message itself.
_MESSAGE_SIGNERS = (
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    mldsa.MLDSA44PublicKey,
    mldsa.MLDSA65PublicKey,
    mldsa.MLDSA87PublicKey,
)


# --- sign and verify ----------------------------------------------------------------------


def sign(private_key: PrivateKey, scheme: SignatureScheme, data: bytes) -> bytes:
    """Sign ``data`` with ``scheme``; the caller picked it via :func:`schemes_for_key`."""
    probe = scheme
    if scheme in _PSS and isinstance(private_key, rsa.RSAPrivateKey):
        # rsa_pss_pss_* and rsa_pss_rsae_* sign the same way; which of them the
        # key may use is the certificate's business (schemes_for_key with cert).
        probe = _RSAE[_PSS.index(scheme)]
    if probe not in schemes_for_key(private_key):
        raise LocalProtocolError(
            f"cannot sign with {_name(scheme)} using a {key_description(private_key)} key",
            AlertDescription.internal_error,
        )
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, _PSS_PADDING[scheme], _PSS_HASH[scheme])
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, _ECDSA_BY_SCHEME[scheme])  # DER ECDSA-Sig-Value
    # Ed25519/Ed448 (PureEdDSA) and ML-DSA (pure, empty context) take the message.
    return private_key.sign(data)


def verify(
    public_key: CertificatePublicKeyTypes,
    scheme: int,
    signature: bytes,
    data: bytes,
    *,
    cert: x509.Certificate | None = None,
) -> None:
    """Check a peer's signature; raise RemoteProtocolError if it is not acceptable.

    ``public_key`` is typically ``cert.public_key()`` of the peer's end-entity
    certificate; pass ``cert`` too so RSASSA-PSS keys are recognised.

    A scheme that does not fit the key (type, curve, rsae vs pss, or one not
    allowed in handshake signatures at all) is ``illegal_parameter``
    (RFC 9846 §4.5.2: "MUST be compatible with the key"); a signature that
    does not verify is ``decrypt_error`` (RFC 9846 §4.5.2, §6.2).
    """
    if scheme not in schemes_for_key(public_key, cert):
        raise RemoteProtocolError(
            f"peer used signature scheme {_name(scheme)}, which does not fit its "
            f"{key_description(public_key)} key",
            AlertDescription.illegal_parameter,
        )
    scheme = SignatureScheme(scheme)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, _PSS_PADDING[scheme], _PSS_HASH[scheme])
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, _ECDSA_BY_SCHEME[scheme])
        elif isinstance(public_key, _MESSAGE_SIGNERS):
            public_key.verify(signature, data)
        else:  # unreachable: schemes_for_key gave no scheme for any other key type
            raise AssertionError(f"no verifier for {key_description(public_key)}")
    except InvalidSignature:
        raise RemoteProtocolError(
            f"{scheme.name} signature does not verify with the peer's certificate key",
            AlertDescription.decrypt_error,
        ) from None


def _name(scheme: int) -> str:
    try:
        return SignatureScheme(scheme).name
    except ValueError:
        return f"0x{scheme:04x}"


def key_description(key: object) -> str:
    """A short name for a key's type, e.g. "RSA-2048", "EC secp256r1", "MLDSA65"."""
    public = _public(key)
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA-{public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"EC {public.curve.name}"
    return type(public).__name__.removesuffix("PublicKey")
