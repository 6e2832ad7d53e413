"""A small private PKI: one CA, a server and a client certificate.

    bundle = make_bundle(["localhost", "127.0.0.1"], "ecdsa-p256")
    paths = write_bundle(bundle, "certs")     # ca.pem ca.key server.pem server.key client.pem client.key
    renew_files("certs")                      # new server and client certificates under the same CA

Enough for ``longtls serve``/``connect``/``tunnel`` and mutual TLS, and for
OpenSSL (``openssl verify -CAfile ca.pem server.pem``).  Not a CA product:
no revocation, no intermediates, keys unencrypted on disk (0600).

Why the CA's key type can differ from the leaves': cryptography's path
validation follows the Web PKI profile, which forbids EdDSA and brainpool CA
keys, so longtls refuses an Ed25519 or brainpool CA.  For ``ed25519`` and
``ecdsa-brainpoolp256r1`` the leaves get those keys under an ECDSA P-256 CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "FILES",
    "KEY_TYPES",
    "Bundle",
    "Issued",
    "make_bundle",
    "make_leaf",
    "renew",
    "renew_files",
    "write_bundle",
]

PrivateKey = CertificateIssuerPrivateKeyTypes

#: Leaf key type -> CA key type.
KEY_TYPES: dict[str, str] = {
    "ecdsa-p256": "ecdsa-p256",
    "ecdsa-p521": "ecdsa-p521",
    # RFC 8734 curve; the Web PKI profile refuses brainpool CA keys, not leaves.
    "ecdsa-brainpoolp256r1": "ecdsa-p256",
    "ed25519": "ecdsa-p256",  # EdDSA CA keys are refused by Web PKI path validation
    "rsa-2048": "rsa-2048",
    "mldsa65": "mldsa65",
}
#: What write_bundle writes, in order.
FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
ORGANIZATION = "longtls"
_BACKDATE = datetime.timedelta(hours=1)  # tolerate clock skew between peers


@dataclass(frozen=True, eq=False)
class Issued:
    """A certificate and its private key (``repr`` never shows the key)."""

    cert: x509.Certificate
    key: PrivateKey

    def __repr__(self) -> str:
        return f"<Issued {self.cert.subject.rfc4514_string()} serial={self.cert.serial_number:x}>"

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True, eq=False)
class Bundle:
    ca: Issued
    server: Issued
    client: Issued


def generate_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p521":
        return ec.generate_private_key(ec.SECP521R1())
    if key_type == "ecdsa-brainpoolp256r1":
        return ec.generate_private_key(ec.BrainpoolP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "mldsa65":
        return mldsa.MLDSA65PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA512 | None:
    # EdDSA and ML-DSA sign the message itself: no separate hash.  A P-521 CA
    # signs with SHA-512, the hash of its strength (as ecdsa_secp521r1_sha512).
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 384:
        return hashes.SHA512()
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return hashes.SHA256()
    return None


def _general_name(name: str) -> x509.GeneralName:
    """IP literals become iPAddress names, anything else a dNSName."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(*, ca: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_ca(key_type: str = "ecdsa-p256", *, days: int = 365, common_name: str | None = None) -> Issued:
    """A self-signed CA.  Its default name is unique (``longtls CA 2026-12-02
    3f9a61c0``): were every generated CA named alike, a certificate from another
    run's CA would be matched to ours by name and fail as a bad signature;
    with distinct names it fails as what it is, an unknown CA (RFC 5280
    §6.1: path building matches the issuer name first)."""
    key = generate_key(key_type)
    now = datetime.datetime.now(datetime.UTC)
    if common_name is None:
        common_name = f"longtls CA {now:%Y-%m-%d} {secrets.token_hex(4)}"
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        # path_length 0: this CA issues end-entity certificates only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _signature_hash(key))
    )
    return Issued(cert, key)


def make_leaf(
    ca: Issued, key_type: str, names: Sequence[str], *, client: bool = False, days: int = 365,
    common_name: str | None = None,
) -> Issued:
    """A server (serverAuth) or client (clientAuth) certificate for ``names``."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    key = generate_key(key_type)
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name or names[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + datetime.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # keyEncipherment only for RSA, for TLS 1.2 peers that still check it.
        .add_extension(
            _key_usage(ca=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.key, _signature_hash(ca.key))
    )
    return Issued(cert, key)


def _same_key_type(key: PrivateKey) -> PrivateKey:
    """A fresh key of ``key``'s algorithm and size (the identity rules of
    Certificate Update let the key change, not its algorithm or length)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(key.curve)
    if isinstance(key, rsa.RSAPrivateKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=key.key_size)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(key, mldsa.MLDSA65PrivateKey):
        return mldsa.MLDSA65PrivateKey.generate()
    raise ValueError(f"cannot renew a certificate with a {type(key).__name__} key")


def renew(ca: Issued, leaf: Issued) -> Issued:
    """``leaf`` renewed by ``ca``, as a CA answers an ACME renewal: the same
    subject and extensions (so the same names and usages), a fresh key of the
    same type, a new serial number and a validity of the same length from now.
    What Certificate Update (draft-rosomakho-tls-cert-update-02) lets a live
    connection switch to; the subjectKeyIdentifier follows the new key."""
    key = _same_key_type(leaf.key)
    now = datetime.datetime.now(datetime.UTC)
    lifetime = leaf.cert.not_valid_after_utc - leaf.cert.not_valid_before_utc
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now - _BACKDATE + lifetime, ca.cert.not_valid_after_utc))
    )
    for ext in leaf.cert.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(value, ext.critical)
    return Issued(builder.sign(ca.key, _signature_hash(ca.key)), key)


def make_bundle(
    names: Sequence[str] = DEFAULT_NAMES, key_type: str = "ecdsa-p256", *, days: int = 365,
    client_name: str = "longtls client",
) -> Bundle:
    """A CA, a server certificate for ``names`` and a client certificate."""
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")
    ca = make_ca(KEY_TYPES[key_type], days=days)
    return Bundle(
        ca=ca,
        server=make_leaf(ca, key_type, names, days=days),
        client=make_leaf(ca, key_type, [client_name], client=True, days=days),
    )


def _load_issued(cert_path: Path, key_path: Path) -> Issued:
    """A certificate and key written by write_bundle (ValueError if they are not)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
                      | mldsa.MLDSA65PrivateKey):
        raise ValueError(f"{key_path} holds a key type longtls certs does not make")
    if key.public_key() != cert.public_key():
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return Issued(cert, key)


def renew_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Renew server.pem/server.key and client.pem/client.key in ``directory``
    under its ca.pem/ca.key (:func:`renew`: same names, new keys and serial
    numbers), as an ACME client renews: the key first, then the certificate,
    each replaced by a rename.  A running ``longtls serve`` or ``tunnel``
    watching them hands the new certificate to its live connections.
    OSError for a missing file, ValueError for one that is not what
    write_bundle wrote."""
    out = Path(directory)
    ca = _load_issued(out / "ca.pem", out / "ca.key")
    written: list[Path] = []
    for stem in ("server", "client"):
        new = renew(ca, _load_issued(out / f"{stem}.pem", out / f"{stem}.key"))
        _write(out / f"{stem}.key", new.key_pem(), secret=True)
        _write(out / f"{stem}.pem", new.cert_pem(), secret=False)
        written += [out / f"{stem}.pem", out / f"{stem}.key"]
    return written


def write_bundle(bundle: Bundle, directory: str | os.PathLike[str], *, overwrite: bool = False) -> list[Path]:
    """Write FILES into ``directory`` (created 0700); keys are 0600.

    Raises FileExistsError naming the first file that exists, unless ``overwrite``.
    """
    out = Path(directory)
    if not out.is_dir():
        out.mkdir(mode=0o700, parents=True)
        out.chmod(0o700)  # whatever the umask: the directory holds private keys
    contents = {
        "ca.pem": bundle.ca.cert_pem(),
        "ca.key": bundle.ca.key_pem(),
        # The chain a server sends: its certificate (there is no intermediate).
        "server.pem": bundle.server.cert_pem(),
        "server.key": bundle.server.key_pem(),
        "client.pem": bundle.client.cert_pem(),
        "client.key": bundle.client.key_pem(),
    }
    paths = [out / name for name in FILES]
    if not overwrite:
        for path in paths:
            if path.exists():
                raise FileExistsError(f"{path} already exists")
    for path in paths:
        _write(path, contents[path.name], secret=path.suffix == ".key")
    return paths


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    """Write via a temporary file and rename, so a reader never sees half a key;
    a key is 0600 from the moment it exists."""
    mode = 0o600 if secret else 0o644
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            os.fchmod(f.fileno(), mode)  # O_CREAT's mode does not apply to an existing file
            f.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
