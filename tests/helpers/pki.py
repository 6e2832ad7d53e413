"""A throwaway PKI for tests, built with cryptography's CertificateBuilder.

    ca = make_ca("ecdsa-p256")
    server = make_leaf(ca, "ecdsa-p256")                  # serverAuth, localhost + 127.0.0.1
    client = make_leaf(ca, "ed25519", client=True)        # clientAuth
    files = server.write_pem(tmp_path)                    # for openssl/gnutls command lines

Key types are the names in KEY_TYPES. "rsa-pss" (an RSASSA-PSS keyed
certificate, the rsa_pss_pss_* schemes) is NOT available: cryptography 50 can
sign certificates *with* PSS padding but cannot generate an RSASSA-PSS key, and
an RSASSA-PSS key it loads from PEM is re-encoded as a plain rsaEncryption
key, so it can never emit an id-RSASSA-PSS SubjectPublicKeyInfo. Asking for it
raises UnsupportedKeyType. (rsa_pss_rsae_* is exercised with "rsa-2048".)
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_TYPES: tuple[str, ...] = (
    "rsa-2048",
    "ecdsa-p256",
    "ecdsa-p384",
    "ecdsa-p521",
    "ecdsa-brainpoolP256r1",
    "ecdsa-brainpoolP384r1",
    "ecdsa-brainpoolP512r1",
    "ed25519",
    "ed448",
    "mldsa44",
    "mldsa65",
    "mldsa87",
)

# Key types a test might ask for but this PKI cannot make, and why.
UNSUPPORTED_KEY_TYPES: dict[str, str] = {
    "rsa-pss": (
        "cryptography 50 cannot create an RSASSA-PSS (id-RSASSA-PSS) keyed certificate: "
        "it has no RSA-PSS key generation and re-encodes loaded RSA-PSS keys as "
        "rsaEncryption; use 'rsa-2048' for rsa_pss_rsae_* signatures"
    ),
}

DEFAULT_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1")

# Validity used unless a test overrides it: started an hour ago (clock skew
# between peers), ends in 30 days.
_BACKDATE = datetime.timedelta(hours=1)
_LIFETIME = datetime.timedelta(days=30)

PrivateKey = CertificateIssuerPrivateKeyTypes


class UnsupportedKeyType(ValueError):
    """The PKI cannot make a key of this type (see UNSUPPORTED_KEY_TYPES)."""


def generate_key(key_type: str) -> PrivateKey:
    """A fresh private key of ``key_type`` (one of KEY_TYPES)."""
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ecdsa-p521":
        return ec.generate_private_key(ec.SECP521R1())
    # RFC 8734 curves. The Web PKI profile longtls verifies with refuses them
    # as CA keys: issue such leaves from a NIST-curve CA (ca_key_type=...).
    if key_type == "ecdsa-brainpoolP256r1":
        return ec.generate_private_key(ec.BrainpoolP256R1())
    if key_type == "ecdsa-brainpoolP384r1":
        return ec.generate_private_key(ec.BrainpoolP384R1())
    if key_type == "ecdsa-brainpoolP512r1":
        return ec.generate_private_key(ec.BrainpoolP512R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if key_type == "mldsa44":
        return mldsa.MLDSA44PrivateKey.generate()
    if key_type == "mldsa65":
        return mldsa.MLDSA65PrivateKey.generate()
    if key_type == "mldsa87":
        return mldsa.MLDSA87PrivateKey.generate()
    if key_type in UNSUPPORTED_KEY_TYPES:
        raise UnsupportedKeyType(f"{key_type!r}: {UNSUPPORTED_KEY_TYPES[key_type]}")
    raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None:
    """The hash CertificateBuilder.sign needs for ``key`` (None for EdDSA/ML-DSA)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return hashes.SHA256()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size > 384:
            return hashes.SHA512()
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    return None


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_certs(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _general_name(name: str) -> x509.GeneralName:
    """IP literals become iPAddress SANs, everything else a dNSName."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class PemFiles:
    """Paths of one credential written out for command-line peers."""

    cert: Path  # the end-entity (or CA) certificate alone
    key: Path  # its private key, PKCS#8, unencrypted
    chain: Path  # cert followed by its intermediates (no root): what a server sends
    ca: Path  # the root certificate: what the other side trusts


@dataclass(frozen=True, eq=False)
class Credential:
    """A certificate, its private key and the credential that issued it.

    ``issuer`` is None for a self-signed root.
    """

    key_type: str
    key: PrivateKey
    cert: x509.Certificate
    issuer: Credential | None = None

    @property
    def root(self) -> Credential:
        node = self
        while node.issuer is not None:
            node = node.issuer
        return node

    @property
    def chain(self) -> list[x509.Certificate]:
        """This certificate followed by its intermediates, root excluded."""
        certs = [self.cert]
        node = self.issuer
        while node is not None and node.issuer is not None:
            certs.append(node.cert)
            node = node.issuer
        return certs

    def cert_pem(self) -> bytes:
        return _pem_certs([self.cert])

    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def chain_pem(self) -> bytes:
        return _pem_certs(self.chain)

    def ca_pem(self) -> bytes:
        return _pem_certs([self.root.cert])

    def write_pem(self, directory: str | Path, stem: str | None = None) -> PemFiles:
        """Write ``<stem>.crt``, ``<stem>.key``, ``<stem>-chain.pem`` and ``ca.pem``.

        ``stem`` defaults to the key type. Returns the paths.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        stem = stem or self.key_type
        files = PemFiles(
            cert=d / f"{stem}.crt",
            key=d / f"{stem}.key",
            chain=d / f"{stem}-chain.pem",
            ca=d / "ca.pem",
        )
        files.cert.write_bytes(self.cert_pem())
        files.key.write_bytes(self.key_pem())
        files.key.chmod(0o600)
        files.chain.write_bytes(self.chain_pem())
        files.ca.write_bytes(self.ca_pem())
        return files


def _validity(
    not_before: datetime.datetime | None, not_after: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    start = not_before if not_before is not None else now - _BACKDATE
    end = not_after if not_after is not None else now + _LIFETIME
    return start, end


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _aki(issuer: Credential) -> x509.AuthorityKeyIdentifier:
    ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def make_ca(
    key_type: str = "ecdsa-p256",
    *,
    common_name: str | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Credential:
    """A self-signed root CA with a fresh ``key_type`` key."""
    key = generate_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "longtls tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"longtls test CA {key_type}"),
        ]
    )
    start, end = _validity(not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(_ski(key), critical=False)
    )
    cert = builder.sign(key, _signature_hash(key))
    return Credential(key_type, key, cert, None)


def make_intermediate(
    issuer: Credential,
    key_type: str,
    *,
    common_name: str | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Credential:
    """An intermediate CA under ``issuer`` (for chain-building tests)."""
    key = generate_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "longtls tests"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, common_name or f"longtls test intermediate {key_type}"
            ),
        ]
    )
    start, end = _validity(not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(_ski(key), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    cert = builder.sign(issuer.key, _signature_hash(issuer.key))
    return Credential(key_type, key, cert, issuer)


def make_leaf(
    ca: Credential,
    key_type: str,
    names: Sequence[str] = DEFAULT_NAMES,
    *,
    client: bool = False,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Credential:
    """An end-entity certificate issued by ``ca``.

    ``names`` become subjectAltName entries (dNSName, or iPAddress for IP
    literals); the first is also the subject CN. Server certificates carry the
    serverAuth EKU, client certificates (``client=True``) clientAuth.
    """
    if not names:
        raise ValueError("a leaf certificate needs at least one name")
    key = generate_key(key_type)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "longtls tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
        ]
    )
    eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    start, end = _validity(not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .add_extension(_ski(key), critical=False)
        .add_extension(_aki(ca), critical=False)
    )
    cert = builder.sign(ca.key, _signature_hash(ca.key))
    return Credential(key_type, key, cert, ca)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(key: PrivateKey) -> x509.KeyUsage:
    # keyEncipherment only matters to TLS 1.2 RSA key transport, which some
    # peers still check for an RSA server certificate; TLS 1.3 needs only
    # digitalSignature.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True, eq=False)
class Pki:
    """A root CA with one server and one client certificate under it."""

    ca: Credential
    server: Credential
    client: Credential

    def write_pem(self, directory: str | Path) -> PkiFiles:
        d = Path(directory)
        return PkiFiles(
            directory=d,
            server=self.server.write_pem(d, "server"),
            client=self.client.write_pem(d, "client"),
        )


@dataclass(frozen=True)
class PkiFiles:
    directory: Path
    server: PemFiles
    client: PemFiles

    @property
    def ca(self) -> Path:
        return self.server.ca


def make_pki(
    key_type: str, *, ca_key_type: str | None = None, names: Sequence[str] = DEFAULT_NAMES
) -> Pki:
    """Root CA (``ca_key_type``, default the same as ``key_type``) plus a
    server and a client leaf with ``key_type`` keys."""
    ca = make_ca(ca_key_type or key_type)
    return Pki(
        ca=ca,
        server=make_leaf(ca, key_type, names),
        client=make_leaf(ca, key_type, names, client=True),
    )
