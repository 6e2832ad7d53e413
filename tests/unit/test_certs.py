"""``longtls certs``: files that OpenSSL and longtls accept, for plain and mutual TLS."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa

from helpers.cli import LONGTLS, assert_one_error_line, longtls
from helpers.peers import LOOPBACK, free_port, require_binary, run, start_process
from longtls.crypto.cert_identity import check_same_identity

READY = r"^longtls: serving \((www|echo)\) on "
GET = "GET / HTTP/1.0\r\n\r\n"
FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
CA_KEY = {"ecdsa-p256": ec.EllipticCurvePrivateKey, "rsa-2048": rsa.RSAPrivateKey,
          "ed25519": ec.EllipticCurvePrivateKey, "mldsa65": mldsa.MLDSA65PrivateKey,
          "ecdsa-p521": ec.EllipticCurvePrivateKey, "ecdsa-brainpoolp256r1": ec.EllipticCurvePrivateKey}
# The curve of the server key and of the CA key, for the EC key types.
CURVES = {"ecdsa-p256": ("secp256r1", "secp256r1"), "ecdsa-p521": ("secp521r1", "secp521r1"),
          "ecdsa-brainpoolp256r1": ("brainpoolP256r1", "secp256r1")}


def make(out: Path, *args: str) -> Path:
    result = longtls("certs", "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return out


def test_files_and_permissions(tmp_path: Path) -> None:
    out = make(tmp_path / "new" / "pki")
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in FILES:
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), (name, oct(mode))


@pytest.mark.parametrize(
    "key_type", ["ecdsa-p256", "rsa-2048", "ed25519", "ecdsa-p521", "ecdsa-brainpoolp256r1"]
)
def test_openssl_verifies_the_certificates(tmp_path: Path, key_type: str) -> None:
    out = make(tmp_path, "--key-type", key_type)
    openssl = require_binary("openssl")
    result = run([openssl, "verify", "-CAfile", str(out / "ca.pem"), str(out / "server.pem"), str(out / "client.pem")])
    assert result.stdout == f"{out / 'server.pem'}: OK\n{out / 'client.pem'}: OK\n"
    result = run([openssl, "verify", "-purpose", "sslserver", "-CAfile", str(out / "ca.pem"), str(out / "server.pem")])
    assert result.returncode == 0
    result = run([openssl, "verify", "-purpose", "sslclient", "-CAfile", str(out / "ca.pem"), str(out / "client.pem")])
    assert result.returncode == 0


@pytest.mark.parametrize(
    "key_type", ["ecdsa-p256", "rsa-2048", "ed25519", "mldsa65", "ecdsa-p521", "ecdsa-brainpoolp256r1"]
)
def test_key_types(tmp_path: Path, key_type: str) -> None:
    out = make(tmp_path, "--key-type", key_type)
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca_key = load_pem_private_key((out / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, CA_KEY[key_type])
    assert ca_key.public_key() == ca.public_key()
    if key_type == "ed25519":
        # longtls refuses EdDSA CA keys (Web PKI profile): Ed25519 leaves, ECDSA CA.
        assert isinstance(server.public_key(), ed25519.Ed25519PublicKey)
    if key_type in CURVES:
        # Brainpool CA keys are refused too: brainpool leaves, P-256 CA.
        server_key, ca_public = server.public_key(), ca.public_key()
        assert isinstance(server_key, ec.EllipticCurvePublicKey)
        assert isinstance(ca_public, ec.EllipticCurvePublicKey)
        assert (server_key.curve.name, ca_public.curve.name) == CURVES[key_type]
    assert server.issuer == ca.subject
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca


def test_names(tmp_path: Path) -> None:
    out = make(tmp_path, "--names", "example.test,10.1.2.3,::1")
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("::1")
    ]


# ecdsa-p521: `serve` takes P-521 keys (ecdsa_secp521r1_sha512).  OpenSSL 3.0
# has no TLS 1.3 brainpool schemes; brainpool is tested against OpenSSL 4.0 in
# tests/interop/test_groups_suites.py.
@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048", "ed25519", "ecdsa-p521"])
def test_openssl_s_client_against_longtls_serve(tmp_path: Path, key_type: str) -> None:
    out = make(tmp_path, "--key-type", key_type)
    port = free_port()
    with start_process(
        [*LONGTLS, "serve", "--cert", str(out / "server.pem"), "--key", str(out / "server.key"),
         "--port", str(port), "--www"],
        ready_pattern=READY,
    ):
        result = run(
            [require_binary("openssl"), "s_client", "-connect", f"{LOOPBACK}:{port}",
             "-servername", "localhost", "-CAfile", str(out / "ca.pem"), "-verify_return_error",
             "-ign_eof"],
            input=GET,
        )
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout
    assert "HTTP/1.0 200 ok" in result.stdout


def test_mutual_tls_with_openssl_and_longtls(tmp_path: Path) -> None:
    out = make(tmp_path)
    port = free_port()
    with start_process(
        [*LONGTLS, "serve", "--cert", str(out / "server.pem"), "--key", str(out / "server.key"),
         "--port", str(port), "--www", "--ca", str(out / "ca.pem"), "--verify-client", "required"],
        ready_pattern=READY,
    ):
        result = run(
            [require_binary("openssl"), "s_client", "-connect", f"{LOOPBACK}:{port}",
             "-CAfile", str(out / "ca.pem"), "-verify_return_error", "-ign_eof",
             "-cert", str(out / "client.pem"), "-key", str(out / "client.key")],
            input=GET,
        )
        assert "Verify return code: 0 (ok)" in result.stdout, result.stdout
        assert re.search(r"Client certificate:\s+CN=longtls client,O=longtls", result.stdout), result.stdout

        connected = longtls(
            "connect", f"{LOOPBACK}:{port}", "--ca", str(out / "ca.pem"),
            "--cert", str(out / "client.pem"), "--key", str(out / "client.key"), input=GET,
        )
        assert connected.returncode == 0, connected.stderr
        assert re.search(r"Client certificate:\s+CN=longtls client,O=longtls", connected.stdout)

        refused = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(out / "ca.pem"), input=GET)
        assert_one_error_line(refused, "certificate_required")


def test_mldsa65_with_longtls(tmp_path: Path) -> None:
    """Post-quantum certificates end to end (OpenSSL 3.0 cannot read ML-DSA)."""
    out = make(tmp_path, "--key-type", "mldsa65")
    port = free_port()
    with start_process(
        [*LONGTLS, "serve", "--cert", str(out / "server.pem"), "--key", str(out / "server.key"),
         "--port", str(port), "--echo", "--ca", str(out / "ca.pem"), "--verify-client", "required"],
        ready_pattern=READY,
    ):
        result = longtls(
            "connect", f"{LOOPBACK}:{port}", "--ca", str(out / "ca.pem"), "--summary", "json",
            "--cert", str(out / "client.pem"), "--key", str(out / "client.key"), input="pq",
        )
    assert (result.returncode, result.stdout) == (0, "pq"), result.stderr
    assert '"signature_scheme": "mldsa65"' in result.stderr


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    make(tmp_path)
    before = (tmp_path / "ca.key").read_bytes()
    again = longtls("certs", "--out", str(tmp_path))
    assert_one_error_line(again, "ca.pem already exists", "--force")
    assert (tmp_path / "ca.key").read_bytes() == before
    make(tmp_path, "--force")
    assert (tmp_path / "ca.key").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_renew_keeps_the_identity_under_the_same_ca(tmp_path: Path, key_type: str) -> None:
    """--renew: what an ACME renewal writes, so a live connection can take it
    (Certificate Update's identity rules); the CA is untouched."""
    make(tmp_path, "--key-type", key_type)
    before = {name: (tmp_path / name).read_bytes() for name in FILES}
    result = longtls("certs", "--out", str(tmp_path), "--renew")
    assert result.returncode == 0, result.stderr
    assert "renewed server.pem, server.key, client.pem, client.key" in result.stderr
    assert (tmp_path / "ca.pem").read_bytes() == before["ca.pem"]
    assert (tmp_path / "ca.key").read_bytes() == before["ca.key"]
    ca = x509.load_pem_x509_certificate(before["ca.pem"])
    for stem in ("server", "client"):
        old = x509.load_pem_x509_certificate(before[f"{stem}.pem"])
        new = x509.load_pem_x509_certificate((tmp_path / f"{stem}.pem").read_bytes())
        assert new.serial_number != old.serial_number
        assert new.public_key() != old.public_key()
        check_same_identity(old, new)  # raises IdentityViolation otherwise
        new.verify_directly_issued_by(ca)
        assert stat.S_IMODE((tmp_path / f"{stem}.key").stat().st_mode) == 0o600
    # The renewed pair works as before.
    port = free_port()
    with start_process(
        [*LONGTLS, "serve", "--cert", str(tmp_path / "server.pem"), "--key", str(tmp_path / "server.key"),
         "--port", str(port), "--echo"], ready_pattern=READY,
    ):
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(tmp_path / "ca.pem"), input="renewed")
    assert (result.returncode, result.stdout) == (0, "renewed"), result.stderr


def test_renew_needs_the_files(tmp_path: Path) -> None:
    result = longtls("certs", "--out", str(tmp_path), "--renew")
    assert_one_error_line(result, "cannot renew", "ca.pem", "longtls certs --out DIR")


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = longtls("certs", "--out", str(blocker / "pki"))
    assert_one_error_line(result, "cannot write")


def test_bad_arguments() -> None:
    result = longtls("certs", "--out", "x", "--key-type", "dsa")
    assert_one_error_line(result, "invalid choice")
    assert result.returncode == 2
