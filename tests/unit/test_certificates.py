"""Certificate/key loading, trust stores and chain verification with its alerts."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, padding, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers.pki import Credential, generate_key, make_ca, make_intermediate, make_leaf
from longtls.constants import AlertDescription
from longtls.crypto.certificates import (
    TrustStore,
    check_key_matches_certificate,
    load_certificate_chain,
    load_private_key,
    verify_chain,
)
from longtls.errors import CertificateError, ConfigurationError

A = AlertDescription
UTC = datetime.UTC


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def cert_error(alert: AlertDescription, match: str) -> pytest.RaisesExc[CertificateError]:
    return pytest.raises(CertificateError, match=match, check=lambda e: e.alert is alert)


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _verify_server(
    leaf: Credential | Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    server_name: str = "localhost",
    now: datetime.datetime | None = None,
) -> list[x509.Certificate]:
    chain = leaf.chain if isinstance(leaf, Credential) else list(leaf)
    return verify_chain(
        chain, TrustStore(anchors), server_name=server_name, is_server_cert=True, now=now
    )


def _verify_client(
    leaf: Credential | Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    chain = leaf.chain if isinstance(leaf, Credential) else list(leaf)
    return verify_chain(chain, TrustStore(anchors), server_name=None, is_server_cert=False)


# A hand-rolled builder for the certificates helpers.pki deliberately does not make.


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _build(
    subject_key: object,
    subject: x509.Name,
    issuer: Credential,
    *,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    rsa_padding: padding.PSS | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(subject_key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    if rsa_padding is not None:
        assert isinstance(issuer.key, rsa.RSAPrivateKey)
        return builder.sign(issuer.key, hashes.SHA256(), rsa_padding=rsa_padding)
    classical = isinstance(issuer.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return builder.sign(issuer.key, hashes.SHA256() if classical else None)


def _aki(issuer: Credential) -> tuple[x509.ExtensionType, bool]:
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    return aki, False


def _san(*names: str) -> tuple[x509.ExtensionType, bool]:
    return x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False


def _eku(*oids: x509.ObjectIdentifier) -> tuple[x509.ExtensionType, bool]:
    return x509.ExtendedKeyUsage(list(oids)), False


@pytest.fixture(scope="module")
def ca() -> Credential:
    return make_ca("ecdsa-p256")


@pytest.fixture(scope="module")
def server(ca: Credential) -> Credential:
    return make_leaf(ca, "ecdsa-p256")  # localhost + 127.0.0.1, serverAuth


# --- loading -------------------------------------------------------------------------------


def test_load_certificate_chain_keeps_file_order(tmp_path: Path, ca: Credential) -> None:
    intermediate = make_intermediate(ca, "ecdsa-p256")
    leaf = make_leaf(intermediate, "ed25519")
    path = tmp_path / "chain.pem"
    path.write_bytes(b"comment before\n" + leaf.chain_pem())
    assert load_certificate_chain(path) == [leaf.cert, intermediate.cert]
    assert load_certificate_chain(str(path)) == [leaf.cert, intermediate.cert]


def test_load_certificate_chain_failures(tmp_path: Path, server: Credential) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError, match="cannot read certificate file"):
        load_certificate_chain(missing)
    key_only = tmp_path / "key.pem"
    key_only.write_bytes(server.key_pem())
    with pytest.raises(ConfigurationError, match="contains no PEM certificate"):
        load_certificate_chain(key_only)
    der = tmp_path / "cert.der"
    der.write_bytes(server.cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(ConfigurationError, match="contains no PEM certificate"):
        load_certificate_chain(der)
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigurationError, match="malformed PEM certificate"):
        load_certificate_chain(broken)


@pytest.mark.parametrize(
    "key_type",
    ["rsa-2048", "ecdsa-p256", "ecdsa-p384", "ed25519", "ed448", "mldsa44", "mldsa65", "mldsa87"],
)
def test_load_private_key_every_type(tmp_path: Path, key_type: str) -> None:
    key = generate_key(key_type)
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret pw"),
        )
    )
    loaded = load_private_key(path, b"secret pw")
    assert loaded.public_key() == key.public_key()


def test_load_private_key_passwords(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    pkcs8 = tmp_path / "pkcs8.pem"
    pkcs8.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"right"),
        )
    )
    traditional = tmp_path / "traditional.pem"
    traditional.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"right"),
        )
    )
    plain = tmp_path / "plain.pem"
    plain.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    for path in (pkcs8, traditional):
        assert load_private_key(path, b"right").public_key() == key.public_key()
        with pytest.raises(ConfigurationError, match=f"wrong password for key file .*{path.name}"):
            load_private_key(path, b"wrong")
        with pytest.raises(ConfigurationError, match="is encrypted; give its password"):
            load_private_key(path)
    # A password for an unencrypted key is ignored (as OpenSSL does).
    assert load_private_key(plain, b"unneeded").public_key() == key.public_key()


def test_load_private_key_failures(tmp_path: Path, server: Credential) -> None:
    with pytest.raises(ConfigurationError, match="cannot read key file"):
        load_private_key(tmp_path / "missing.key")
    cert_only = tmp_path / "cert.pem"
    cert_only.write_bytes(server.cert_pem())
    with pytest.raises(ConfigurationError, match="contains no PEM private key"):
        load_private_key(cert_only)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigurationError, match="could not be parsed"):
        load_private_key(garbage)
    unusable_keys: list[tuple[x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey, str]] = [
        (x25519.X25519PrivateKey.generate(), "X25519"),
        (ec.generate_private_key(ec.SECP256K1()), "secp256k1"),  # P-521 is usable since issue 9
    ]
    for unusable, label in unusable_keys:
        path = tmp_path / f"{label}.pem"
        path.write_bytes(
            unusable.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(ConfigurationError, match=f"{label}.*no TLS 1.3 signature scheme"):
            load_private_key(path)


def test_key_must_match_certificate(server: Credential, ca: Credential) -> None:
    check_key_matches_certificate(server.key, server.cert)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="private key does not match the certificate"):
        check_key_matches_certificate(ca.key, server.cert)  # type: ignore[arg-type]
    other_type = mldsa.MLDSA65PrivateKey.generate()
    with pytest.raises(ConfigurationError, match="does not match"):
        check_key_matches_certificate(other_type, server.cert)


# --- trust stores --------------------------------------------------------------------------


def test_trust_store_from_file_and_directory(tmp_path: Path, ca: Credential) -> None:
    other = make_ca("rsa-2048")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(_pem([ca.cert, other.cert, ca.cert]))
    store = TrustStore.from_path(bundle)
    assert store.certificates == (ca.cert, other.cert)  # duplicates dropped
    assert len(store) == 2 and "2 certificates" in repr(store)

    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "a.pem").write_bytes(ca.cert_pem())
    (directory / "b.crt").write_bytes(other.cert_pem())
    (directory / "bundle.crt").write_bytes(_pem([ca.cert, other.cert]))  # like Debian's
    (directory / "README").write_text("not a certificate\n")
    (directory / "sub").mkdir()
    store = TrustStore.from_path(directory)
    assert set(store.certificates) == {ca.cert, other.cert} and len(store) == 2


def test_trust_store_failures(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="at least one CA"):
        TrustStore([])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("nothing here")
    with pytest.raises(ConfigurationError, match="contains no PEM certificate"):
        TrustStore.from_path(empty)
    with pytest.raises(ConfigurationError, match="cannot read CA file"):
        TrustStore.from_path(tmp_path / "missing.pem")


def test_system_trust_store_honours_ssl_cert_file(
    tmp_path: Path, ca: Credential, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.cert_pem())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert TrustStore.system().certificates == (ca.cert,)
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    assert TrustStore.system().certificates == (ca.cert,)


@pytest.mark.skipif(
    not os.path.exists("/etc/ssl/certs/ca-certificates.crt"), reason="no Debian CA bundle"
)
def test_system_trust_store_debian(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    assert len(TrustStore.system()) > 50


# --- successful verification ---------------------------------------------------------------

CHAIN_TYPES = [
    # (CA key type, leaf key type)
    ("rsa-2048", "rsa-2048"),
    ("ecdsa-p256", "ecdsa-p256"),
    ("ecdsa-p384", "ecdsa-p384"),
    ("ecdsa-p256", "ed25519"),  # EdDSA leaves are fine; EdDSA CAs are not (see below)
    ("ecdsa-p384", "ed448"),
    ("mldsa65", "mldsa65"),  # ML-DSA chains verify natively in cryptography 50
    ("mldsa44", "ecdsa-p256"),
    ("rsa-2048", "mldsa87"),
]


@pytest.mark.parametrize(("ca_type", "leaf_type"), CHAIN_TYPES)
def test_verify_server_and_client_chains(ca_type: str, leaf_type: str) -> None:
    root = make_ca(ca_type)
    intermediate = make_intermediate(root, ca_type)
    server = make_leaf(intermediate, leaf_type)
    client = make_leaf(intermediate, leaf_type, ["alice.example"], client=True)
    path = [server.cert, intermediate.cert, root.cert]
    assert _verify_server(server, [root.cert]) == path
    assert _verify_server(server, [root.cert], server_name="127.0.0.1") == path
    assert _verify_client(client, [root.cert]) == [client.cert, intermediate.cert, root.cert]


def test_rsa_pss_signed_certificates() -> None:
    # RSASSA-PSS *signatures* on certificates (rsaEncryption CA key) verify.
    root = make_ca("rsa-2048")
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    key = generate_key("ecdsa-p256")
    leaf = _build(
        key,
        _name("pss.example"),
        root,
        extensions=[_san("pss.example"), _aki(root)],
        rsa_padding=pss,
    )
    assert leaf.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS
    assert _verify_server([leaf], [root.cert], "pss.example") == [leaf, root.cert]


def test_server_names(server: Credential, ca: Credential) -> None:
    for name in ("localhost", "LOCALHOST", "localhost.", "127.0.0.1"):
        _verify_server(server, [ca.cert], server_name=name)
    wildcard = make_leaf(ca, "ecdsa-p256", ["*.example.com", "::1"])
    _verify_server(wildcard, [ca.cert], server_name="www.example.com")
    _verify_server(wildcard, [ca.cert], server_name="[::1]")


def test_client_certificate_without_san_is_accepted(ca: Credential) -> None:
    key = generate_key("ecdsa-p256")
    cert = _build(
        key, _name("alice"), ca, extensions=[_aki(ca), _eku(ExtendedKeyUsageOID.CLIENT_AUTH)]
    )
    assert _verify_client([cert], [ca.cert]) == [cert, ca.cert]


def test_injected_time(server: Credential, ca: Credential) -> None:
    _verify_server(server, [ca.cert], now=_now())
    naive_utc = datetime.datetime.now(UTC).replace(tzinfo=None)
    _verify_server(server, [ca.cert], now=naive_utc)
    other_zone = _now().astimezone(datetime.timezone(datetime.timedelta(hours=-9)))
    _verify_server(server, [ca.cert], now=other_zone)


# --- each failure, its reason and its alert (RFC 9846 §6.2) --------------------------------


def test_expired_leaf(server: Credential, ca: Credential) -> None:
    later = _now() + datetime.timedelta(days=300)
    with cert_error(A.certificate_expired, r"certificate expired: 'CN=localhost.*' was valid"):
        _verify_server(server, [ca.cert], now=later)
    client = make_leaf(ca, "ecdsa-p256", client=True)
    with cert_error(A.certificate_expired, "certificate expired"):
        verify_chain(
            client.chain, TrustStore([ca.cert]), server_name=None, is_server_cert=False, now=later
        )


def test_not_yet_valid_leaf(server: Credential, ca: Credential) -> None:
    earlier = _now() - datetime.timedelta(days=2)
    with cert_error(A.certificate_expired, r"certificate not yet valid: 'CN=localhost"):
        _verify_server(server, [ca.cert], now=earlier)


def test_expired_intermediate_and_root_are_named() -> None:
    soon = _now() + datetime.timedelta(days=1)
    root = make_ca("ecdsa-p256", common_name="Short Root", not_after=soon)
    with_short_root = make_leaf(root, "ecdsa-p256")
    long_root = make_ca("ecdsa-p256")
    intermediate = make_intermediate(
        long_root, "ecdsa-p256", common_name="Short Int", not_after=soon
    )
    with_short_intermediate = make_leaf(intermediate, "ecdsa-p256")
    later = _now() + datetime.timedelta(days=2)
    with cert_error(A.certificate_expired, "certificate expired: 'CN=Short Root"):
        _verify_server(with_short_root, [root.cert], now=later)
    with cert_error(A.certificate_expired, "certificate expired: 'CN=Short Int"):
        _verify_server(with_short_intermediate, [long_root.cert], now=later)


def test_unknown_ca(server: Credential, ca: Credential) -> None:
    stranger = make_ca("ecdsa-p256", common_name="Stranger CA")
    with cert_error(A.unknown_ca, r"unknown CA: no trusted CA issued 'CN=longtls test CA"):
        _verify_server(server, [stranger.cert])
    client = make_leaf(ca, "ecdsa-p256", client=True)
    with cert_error(A.unknown_ca, "unknown CA"):
        _verify_client(client, [stranger.cert])


def test_missing_intermediate_is_unknown_ca() -> None:
    root = make_ca("ecdsa-p256")
    intermediate = make_intermediate(root, "ecdsa-p256")
    leaf = make_leaf(intermediate, "ecdsa-p256")
    with cert_error(A.unknown_ca, "unknown CA.*intermediate"):
        _verify_server([leaf.cert], [root.cert])


def test_name_mismatch(server: Credential, ca: Credential) -> None:
    for name in ("example.com", "127.0.0.2", "::1", "sub.localhost"):
        with cert_error(A.bad_certificate, rf"name mismatch: .*localhost, 127.0.0.1.*{name!r}"):
            _verify_server(server, [ca.cert], server_name=name)


def test_bad_signature(server: Credential, ca: Credential) -> None:
    # bad_certificate, not decrypt_error: RFC 9846 §6.2 gives certificate
    # signatures that do not verify to bad_certificate.
    der = bytearray(server.cert.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    tampered = x509.load_der_x509_certificate(bytes(der))
    with cert_error(A.bad_certificate, "bad signature"):
        _verify_server([tampered], [ca.cert])


def test_same_name_different_key_is_bad_signature(server: Credential, ca: Credential) -> None:
    impostor = make_ca("ecdsa-p256")  # same default subject as `ca`, new key
    assert impostor.cert.subject == ca.cert.subject
    with cert_error(A.bad_certificate, "bad signature.*same name"):
        _verify_server(server, [impostor.cert])


@pytest.mark.parametrize("ca_type", ["ed25519", "ed448"])
def test_eddsa_ca_is_unsupported(ca_type: str) -> None:
    # cryptography's Web PKI profile refuses EdDSA CA keys (CA/B BR 7.1.3.1).
    root = make_ca(ca_type)
    leaf = make_leaf(root, "ecdsa-p256")
    with cert_error(A.unsupported_certificate, "unsupported certificate algorithm") as info:
        _verify_server(leaf, [root.cert])
    assert "AlgorithmIdentifier" not in str(info.value)  # no key parameters in the message


def test_wrong_extended_key_usage(ca: Credential) -> None:
    client = make_leaf(ca, "ecdsa-p256", client=True)  # clientAuth only
    with cert_error(A.unsupported_certificate, "not valid for this purpose.*serverAuth"):
        _verify_server(client, [ca.cert])
    server = make_leaf(ca, "ecdsa-p256")  # serverAuth only
    with cert_error(A.unsupported_certificate, "not valid for this purpose.*clientAuth"):
        _verify_client(server, [ca.cert])


def test_key_usage_without_digital_signature(ca: Credential) -> None:
    # RFC 9846 §4.5.1.2: keyUsage, when present, must allow digitalSignature.
    key = generate_key("rsa-2048")
    key_encipherment_only = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    extensions = [_san("localhost"), _aki(ca), (key_encipherment_only, True)]
    cert = _build(key, _name("localhost"), ca, extensions=extensions)
    with cert_error(A.unsupported_certificate, "keyUsage lacks digitalSignature"):
        _verify_server([cert], [ca.cert])


def test_structural_problems_are_bad_certificate(ca: Credential) -> None:
    key = generate_key("ecdsa-p256")
    no_aki = _build(key, _name("localhost"), ca, extensions=[_san("localhost")])
    with cert_error(A.bad_certificate, r"authorityKeyIdentifier \(2.5.29.35\)"):
        _verify_server([no_aki], [ca.cert])
    leaf_is_ca = _build(
        key,
        _name("localhost"),
        ca,
        extensions=[_san("localhost"), _aki(ca), (x509.BasicConstraints(True, None), True)],
    )
    with cert_error(A.bad_certificate, "basicConstraints"):
        _verify_server([leaf_is_ca], [ca.cert])


def test_empty_chain() -> None:
    store = TrustStore([make_ca("ecdsa-p256").cert])
    with cert_error(A.decode_error, "no certificate"):
        verify_chain([], store, server_name="localhost", is_server_cert=True)
    with cert_error(A.certificate_required, "no certificate"):
        verify_chain([], store, server_name=None, is_server_cert=False)


@pytest.mark.parametrize("name", [None, "", "exa mple.com", "bücher.example", "a..b"])
def test_bad_server_name_is_a_configuration_error(
    server: Credential, ca: Credential, name: str | None
) -> None:
    with pytest.raises(ConfigurationError):
        verify_chain(server.chain, TrustStore([ca.cert]), server_name=name, is_server_cert=True)


def test_messages_are_short_and_printable(ca: Credential) -> None:
    key = generate_key("ecdsa-p256")
    evil = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "evil\nname\x00")]
        + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "x" * 60)] * 10
    )
    cert = _build(key, evil, ca, extensions=[_san("evil.example"), _aki(ca)])
    with pytest.raises(CertificateError) as info:
        _verify_server([cert], [ca.cert], server_name="other.example")
    text = str(info.value)
    assert "\n" not in text and "\x00" not in text and len(text) < 400
