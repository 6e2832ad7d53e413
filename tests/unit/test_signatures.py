"""CertificateVerify signature schemes: which fit a key, sign/verify, and the alerts."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed448,
    ed25519,
    mldsa,
    padding,
    rsa,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from longtls.constants import AlertDescription, SignatureScheme
from longtls.crypto.signatures import (
    SUPPORTED_CERT_SIGNATURE_SCHEMES,
    SUPPORTED_SIGNATURE_SCHEMES,
    PrivateKey,
    schemes_for_key,
    sign,
    verify,
)
from longtls.errors import LocalProtocolError, RemoteProtocolError

S = SignatureScheme
DATA = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00" + bytes(range(32))


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {
        "rsa": rsa.generate_private_key(65537, 2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "bp256": ec.generate_private_key(ec.BrainpoolP256R1()),
        "bp384": ec.generate_private_key(ec.BrainpoolP384R1()),
        "bp512": ec.generate_private_key(ec.BrainpoolP512R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ed448": ed448.Ed448PrivateKey.generate(),
        "mldsa44": mldsa.MLDSA44PrivateKey.generate(),
        "mldsa65": mldsa.MLDSA65PrivateKey.generate(),
        "mldsa87": mldsa.MLDSA87PrivateKey.generate(),
    }


EXPECTED = {
    "rsa": [S.rsa_pss_rsae_sha256, S.rsa_pss_rsae_sha384, S.rsa_pss_rsae_sha512],
    "p256": [S.ecdsa_secp256r1_sha256],
    "p384": [S.ecdsa_secp384r1_sha384],
    "p521": [S.ecdsa_secp521r1_sha512],
    # RFC 8734 §2: the TLS 1.3 brainpool schemes, curve and hash bound together.
    "bp256": [S.ecdsa_brainpoolP256r1tls13_sha256],
    "bp384": [S.ecdsa_brainpoolP384r1tls13_sha384],
    "bp512": [S.ecdsa_brainpoolP512r1tls13_sha512],
    "ed25519": [S.ed25519],
    "ed448": [S.ed448],
    "mldsa44": [S.mldsa44],
    "mldsa65": [S.mldsa65],
    "mldsa87": [S.mldsa87],
}


def raises_alert(alert: AlertDescription) -> pytest.RaisesExc[RemoteProtocolError]:
    return pytest.raises(RemoteProtocolError, check=lambda e: e.alert is alert)


# --- schemes_for_key -----------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPECTED)
def test_schemes_for_private_and_public_key(keys: dict[str, PrivateKey], name: str) -> None:
    assert schemes_for_key(keys[name]) == EXPECTED[name]
    assert schemes_for_key(keys[name].public_key()) == EXPECTED[name]


def test_unusable_keys_have_no_scheme() -> None:
    assert schemes_for_key(ec.generate_private_key(ec.SECP224R1())) == []
    assert schemes_for_key(ec.generate_private_key(ec.SECP256K1())) == []
    assert schemes_for_key(x25519.X25519PrivateKey.generate()) == []
    assert schemes_for_key(object()) == []


def test_small_rsa_key_cannot_do_pss_sha512() -> None:
    # EMSA-PSS needs emLen >= 2 * hLen + 2: 130 bytes for SHA-512, a 1024-bit key has 128.
    key = rsa.generate_private_key(65537, 1024)
    assert schemes_for_key(key) == [S.rsa_pss_rsae_sha256, S.rsa_pss_rsae_sha384]


def test_supported_lists() -> None:
    assert set(SUPPORTED_SIGNATURE_SCHEMES) == {s for v in EXPECTED.values() for s in v} | {
        S.rsa_pss_pss_sha256,
        S.rsa_pss_pss_sha384,
        S.rsa_pss_pss_sha512,
    }
    pkcs1 = {S.rsa_pkcs1_sha256, S.rsa_pkcs1_sha384, S.rsa_pkcs1_sha512}
    assert not pkcs1 & set(SUPPORTED_SIGNATURE_SCHEMES)  # RFC 9846 §4.3.3
    assert set(SUPPORTED_CERT_SIGNATURE_SCHEMES) == set(SUPPORTED_SIGNATURE_SCHEMES) | pkcs1
    assert len(set(SUPPORTED_CERT_SIGNATURE_SCHEMES)) == len(SUPPORTED_CERT_SIGNATURE_SCHEMES)


# --- sign / verify round trips -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "scheme"), [(name, s) for name, schemes in EXPECTED.items() for s in schemes]
)
def test_sign_verify(keys: dict[str, PrivateKey], name: str, scheme: SignatureScheme) -> None:
    key = keys[name]
    signature = sign(key, scheme, DATA)
    verify(key.public_key(), scheme, signature, DATA)
    with raises_alert(AlertDescription.decrypt_error):
        verify(key.public_key(), scheme, signature, DATA + b"x")
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    with raises_alert(AlertDescription.decrypt_error):
        verify(key.public_key(), scheme, tampered, DATA)
    with raises_alert(AlertDescription.decrypt_error):
        verify(key.public_key(), scheme, b"", DATA)


@pytest.mark.parametrize("hash_cls", [hashes.SHA256, hashes.SHA384, hashes.SHA512])
def test_rsa_pss_salt_is_hash_length_and_mgf1_same_hash(
    keys: dict[str, PrivateKey], hash_cls: type[hashes.HashAlgorithm]
) -> None:
    # RFC 9846 §4.3.3: MGF1 over the signing hash, salt length = hash length.
    key = keys["rsa"]
    assert isinstance(key, rsa.RSAPrivateKey)
    h = hash_cls()
    scheme = {32: S.rsa_pss_rsae_sha256, 48: S.rsa_pss_rsae_sha384, 64: S.rsa_pss_rsae_sha512}[
        h.digest_size
    ]
    signature = sign(key, scheme, DATA)
    # cryptography checks the exact salt length when given one.
    key.public_key().verify(signature, DATA, padding.PSS(padding.MGF1(h), h.digest_size), h)
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, DATA, padding.PSS(padding.MGF1(h), 0), h)

    # And we refuse a peer's signature with another salt length or MGF1 hash.
    for pss in (
        padding.PSS(padding.MGF1(h), 0),
        padding.PSS(padding.MGF1(h), padding.PSS.MAX_LENGTH),
        padding.PSS(padding.MGF1(hashes.SHA1()), h.digest_size),
    ):
        other = key.sign(DATA, pss, h)
        with raises_alert(AlertDescription.decrypt_error):
            verify(key.public_key(), scheme, other, DATA)


# The hash each ECDSA scheme signs with (RFC 9846 §4.3.3, RFC 8734 §2), checked
# with cryptography directly rather than through longtls' own table.
ECDSA_HASHES = {
    "p256": hashes.SHA256, "p384": hashes.SHA384, "p521": hashes.SHA512,
    "bp256": hashes.SHA256, "bp384": hashes.SHA384, "bp512": hashes.SHA512,
}


@pytest.mark.parametrize("name", ECDSA_HASHES)
def test_ecdsa_scheme_uses_its_hash(keys: dict[str, PrivateKey], name: str) -> None:
    key = keys[name]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = sign(key, EXPECTED[name][0], DATA)
    key.public_key().verify(signature, DATA, ec.ECDSA(ECDSA_HASHES[name]()))
    for other in {hashes.SHA256, hashes.SHA384, hashes.SHA512} - {ECDSA_HASHES[name]}:
        with pytest.raises(InvalidSignature):
            key.public_key().verify(signature, DATA, ec.ECDSA(other()))
    # And a peer's signature made with the scheme's hash verifies through longtls.
    verify(key.public_key(), EXPECTED[name][0], key.sign(DATA, ec.ECDSA(ECDSA_HASHES[name]())), DATA)


def test_ecdsa_signature_is_der(keys: dict[str, PrivateKey]) -> None:
    signature = sign(keys["p256"], S.ecdsa_secp256r1_sha256, DATA)
    r, s = decode_dss_signature(signature)  # RFC 9846 §4.3.3: DER ECDSA-Sig-Value
    assert r > 0 and s > 0


def test_mldsa_uses_empty_context(keys: dict[str, PrivateKey]) -> None:
    key = keys["mldsa65"]
    assert isinstance(key, mldsa.MLDSA65PrivateKey)
    signature = sign(key, S.mldsa65, DATA)
    key.public_key().verify(signature, DATA)
    key.public_key().verify(signature, DATA, b"")
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, DATA, b"TLS")


# --- scheme does not fit the key: illegal_parameter (RFC 9846 §4.5.2) ----------------------

MISFITS = [
    ("p256", S.ed25519),
    ("p256", S.ecdsa_secp384r1_sha384),  # right algorithm, wrong curve
    ("p384", S.ecdsa_secp256r1_sha256),
    ("p521", S.ecdsa_secp384r1_sha384),
    ("p384", S.ecdsa_secp521r1_sha512),
    # Same hash, other curve: TLS 1.3 schemes name the curve (RFC 8734 §2).
    ("bp256", S.ecdsa_secp256r1_sha256),
    ("p256", S.ecdsa_brainpoolP256r1tls13_sha256),
    ("bp384", S.ecdsa_secp384r1_sha384),
    ("bp512", S.ecdsa_secp521r1_sha512),
    ("p521", S.ecdsa_brainpoolP512r1tls13_sha512),
    ("bp256", S.ecdsa_brainpoolP384r1tls13_sha384),
    ("ed25519", S.ed448),
    ("ed448", S.ed25519),
    ("rsa", S.rsa_pkcs1_sha256),  # never valid in CertificateVerify
    ("rsa", S.rsa_pss_pss_sha256),  # rsaEncryption key: rsae only
    ("rsa", S.ecdsa_secp256r1_sha256),
    ("mldsa65", S.mldsa44),
    ("mldsa44", S.mldsa87),
    ("mldsa87", S.ed25519),
    ("ed25519", 0x0201),  # rsa_pkcs1_sha1, not even in our enum
    ("ed25519", 0xFEFE),  # private use
]


@pytest.mark.parametrize(("name", "scheme"), MISFITS)
def test_scheme_not_fitting_key_is_illegal_parameter(
    keys: dict[str, PrivateKey], name: str, scheme: int
) -> None:
    key = keys[name]
    # A genuine signature from the key, to show the verdict is about the scheme.
    good_scheme = EXPECTED[name][0]
    signature = sign(key, good_scheme, DATA)
    with raises_alert(AlertDescription.illegal_parameter):
        verify(key.public_key(), scheme, signature, DATA)


# Signing may use rsa_pss_pss_* with any RSA key: the certificate decides (schemes_for_key).
SIGN_MISFITS = [
    (name, S(scheme))
    for name, scheme in MISFITS
    if scheme in set(S) and scheme != S.rsa_pss_pss_sha256
]


@pytest.mark.parametrize(("name", "scheme"), SIGN_MISFITS)
def test_signing_with_a_misfit_scheme_is_a_local_error(
    keys: dict[str, PrivateKey], name: str, scheme: SignatureScheme
) -> None:
    with pytest.raises(LocalProtocolError, match="cannot sign"):
        sign(keys[name], scheme, DATA)


# --- RSASSA-PSS keys (id-RSASSA-PSS SubjectPublicKeyInfo) ----------------------------------
#
# cryptography cannot write an id-RSASSA-PSS SPKI, so these tests rewrite the
# SPKI algorithm of a normal certificate in DER.  The certificate signature no
# longer matches, which does not matter: only the SPKI is read.

_RSASSA_PSS_OID = bytes.fromhex("06092a864886f70d01010a")
_MGF1_OID = bytes.fromhex("06092a864886f70d010108")
_HASH_OID = {
    "sha1": bytes.fromhex("06052b0e03021a"),
    "sha256": bytes.fromhex("0609608648016503040201"),
    "sha384": bytes.fromhex("0609608648016503040202"),
    "sha512": bytes.fromhex("0609608648016503040203"),
}


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _elements(data: bytes) -> list[bytes]:
    """Split concatenated DER TLVs into their full encodings."""
    out, pos = [], 0
    while pos < len(data):
        length, header = data[pos + 1], 2
        if length & 0x80:
            header += length & 0x7F
            length = int.from_bytes(data[pos + 2 : pos + header], "big")
        out.append(data[pos : pos + header + length])
        pos += header + length
    return out


def _strip_header(tlv: bytes) -> bytes:
    length = tlv[1]
    return tlv[2 + (length & 0x7F if length & 0x80 else 0) :]


def _pss_params(
    hash_name: str | None = "sha256",
    mgf_hash: str | None = "sha256",
    salt: int | None = None,
) -> bytes:
    fields = b""
    if hash_name is not None:
        fields += _tlv(0xA0, _tlv(0x30, _HASH_OID[hash_name] + b"\x05\x00"))
    if mgf_hash is not None:
        inner = _tlv(0x30, _HASH_OID[mgf_hash] + b"\x05\x00")
        fields += _tlv(0xA1, _tlv(0x30, _MGF1_OID + inner))
    if salt is not None:
        fields += _tlv(0xA2, _tlv(0x02, salt.to_bytes(1, "big")))
    return _tlv(0x30, fields)


def _with_pss_spki(cert: x509.Certificate, params: bytes | None) -> x509.Certificate:
    der = cert.public_bytes(Encoding.DER)
    tbs, signature_algorithm, signature_value = _elements(_strip_header(der))
    fields = _elements(_strip_header(tbs))
    spki_index = 6 if fields[0][0] == 0xA0 else 5
    _, bit_string = _elements(_strip_header(fields[spki_index]))
    algorithm = _tlv(0x30, _RSASSA_PSS_OID + (params or b""))
    fields[spki_index] = _tlv(0x30, algorithm + bit_string)
    new_tbs = _tlv(0x30, b"".join(fields))
    return x509.load_der_x509_certificate(
        _tlv(0x30, new_tbs + signature_algorithm + signature_value)
    )


@pytest.fixture(scope="module")
def rsa_cert(keys: dict[str, PrivateKey]) -> x509.Certificate:
    key = keys["rsa"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pss test")])
    start = datetime.datetime(2025, 1, 1)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


PSS_CASES = {
    "no-params": (None, [S.rsa_pss_pss_sha256, S.rsa_pss_pss_sha384, S.rsa_pss_pss_sha512]),
    "sha256": (_pss_params("sha256", "sha256", 32), [S.rsa_pss_pss_sha256]),
    "sha384": (_pss_params("sha384", "sha384", 48), [S.rsa_pss_pss_sha384]),
    "sha512-default-salt": (_pss_params("sha512", "sha512"), [S.rsa_pss_pss_sha512]),
    "sha256-small-min-salt": (_pss_params("sha256", "sha256", 16), [S.rsa_pss_pss_sha256]),
    "salt-above-hash-length": (_pss_params("sha256", "sha256", 64), []),
    "mgf1-other-hash": (_pss_params("sha256", "sha384"), []),
    "default-sha1": (_pss_params(None, None), []),
    "default-mgf1-sha1": (_pss_params("sha256", None), []),
}


@pytest.mark.parametrize("case", PSS_CASES)
def test_rsassa_pss_key_schemes(
    keys: dict[str, PrivateKey], rsa_cert: x509.Certificate, case: str
) -> None:
    params, expected = PSS_CASES[case]
    cert = _with_pss_spki(rsa_cert, params)
    assert cert.public_key_algorithm_oid == x509.oid.PublicKeyAlgorithmOID.RSASSA_PSS
    assert cert.public_key() == keys["rsa"].public_key()
    assert schemes_for_key(keys["rsa"], cert) == expected
    assert schemes_for_key(cert.public_key(), cert) == expected


def test_rsassa_pss_key_sign_verify(
    keys: dict[str, PrivateKey], rsa_cert: x509.Certificate
) -> None:
    cert = _with_pss_spki(rsa_cert, _pss_params("sha256", "sha256", 32))
    key = keys["rsa"]
    signature = sign(key, S.rsa_pss_pss_sha256, DATA)
    verify(cert.public_key(), S.rsa_pss_pss_sha256, signature, DATA, cert=cert)
    # The rsae code point does not fit an id-RSASSA-PSS key (RFC 9846 §4.3.3)...
    with raises_alert(AlertDescription.illegal_parameter):
        verify(cert.public_key(), S.rsa_pss_rsae_sha256, signature, DATA, cert=cert)
    # ...nor does a hash the key's parameters forbid.
    signature384 = sign(key, S.rsa_pss_pss_sha384, DATA)
    with raises_alert(AlertDescription.illegal_parameter):
        verify(cert.public_key(), S.rsa_pss_pss_sha384, signature384, DATA, cert=cert)
    # With an rsaEncryption certificate it is the other way round.
    rsae = sign(key, S.rsa_pss_rsae_sha256, DATA)
    verify(rsa_cert.public_key(), S.rsa_pss_rsae_sha256, rsae, DATA, cert=rsa_cert)
    with raises_alert(AlertDescription.illegal_parameter):
        verify(rsa_cert.public_key(), S.rsa_pss_pss_sha256, rsae, DATA, cert=rsa_cert)
