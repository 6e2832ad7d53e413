"""Exported Authenticators (RFC 9261) between two longtls connections, TLS and DTLS.

Every authenticator longtls makes is taken apart here and checked against
values this file derives itself from the RFCs' formulas, with
pyca/cryptography's HKDF, hashes and public keys and the standard library's
HMAC: the four exporter values (RFC 9261 §5.1 over RFC 8446 §7.5, from the
exporter secrets in the key log), the CertificateVerify input (§5.2.2), the
Finished MAC (§5.2.3) and the empty authenticator (§6); over DTLS under the
"dtls13" label prefix (RFC 9147 §5.9); before and after extended key updates
(EKU draft-13 §11.2).
"""

from __future__ import annotations

import datetime
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding

from helpers.dtls_link import Clock, DatagramLink
from helpers.pair import Pair, configs
from helpers.pki import Credential, make_ca, make_leaf
from longtls.config import Configuration
from longtls.connection import Connection
from longtls.connection_core import ConnectionCore
from longtls.constants import (
    AlertDescription,
    CipherSuite,
    ExtensionType,
    HandshakeType,
    SignatureScheme,
)
from longtls.crypto.certificates import TrustStore
from longtls.dtls_connection import DTLSConnection
from longtls.errors import (
    AuthenticatorError,
    AuthenticatorRefused,
    LocalProtocolError,
    RemoteProtocolError,
)
from longtls.handshake.exported_authenticators import (
    AuthenticatorKeys,
    ExportedAuthenticators,
    authenticator_keys,
    create_authenticator,
    decode_authenticator_request,
    encode_authenticator_request,
    open_authenticator,
)
from longtls.wire.messages import Extension

# --- RFC formulas, computed here ----------------------------------------------------------

_SPACES = b"\x20" * 64


def expand_label(hash_: hashes.HashAlgorithm, secret: bytes, label: bytes, context: bytes, length: int, prefix: bytes) -> bytes:
    """HKDF-Expand-Label (RFC 8446 §7.1), prefix "tls13 " or "dtls13" (RFC 9147 §5.9)."""
    full = prefix + label
    info = struct.pack(">HB", length, len(full)) + full + bytes([len(context)]) + context
    return HKDFExpand(hash_, length, info).derive(secret)


def digest(hash_: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(hash_)
    h.update(data)
    return h.finalize()


def tls_exporter(hash_: hashes.HashAlgorithm, secret: bytes, label: bytes, length: int, prefix: bytes) -> bytes:
    """RFC 8446 §7.5 with an empty context_value (RFC 9261 §5.1)."""
    derived = expand_label(hash_, secret, label, digest(hash_, b""), hash_.digest_size, prefix)
    return expand_label(hash_, derived, b"exporter", digest(hash_, b""), length, prefix)


@dataclass
class Expected:
    """The RFC 9261 §5.1 values of one sender, from an exporter secret."""

    hash: hashes.HashAlgorithm
    handshake_context: bytes
    finished_key: bytes

    @classmethod
    def derive(cls, hash_: hashes.HashAlgorithm, exporter_secret: bytes, *, sender_is_client: bool, prefix: bytes) -> Expected:
        role = b"client" if sender_is_client else b"server"
        n = hash_.digest_size
        return cls(
            hash_,
            tls_exporter(hash_, exporter_secret, b"EXPORTER-" + role + b" authenticator handshake context", n, prefix),
            tls_exporter(hash_, exporter_secret, b"EXPORTER-" + role + b" authenticator finished key", n, prefix),
        )

    def mac(self, *messages: bytes) -> bytes:
        """Finished = HMAC(Finished MAC Key, Hash(Handshake Context || ...)) (§5.2.3, §6)."""
        transcript = digest(self.hash, self.handshake_context + b"".join(messages))
        return hmac.new(self.finished_key, transcript, self.hash.name).digest()

    def signed_content(self, request: bytes, certificate: bytes) -> bytes:
        """§5.2.2: 64 x 0x20 || "Exported Authenticator" || 0 || Hash(HC || request || Certificate)."""
        return _SPACES + b"Exported Authenticator\x00" + digest(self.hash, self.handshake_context + request + certificate)


def split(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(type, body, whole message) of each 4-byte-header handshake message."""
    out, pos = [], 0
    while pos < len(data):
        msg_type, length = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
        out.append((msg_type, data[pos + 4:pos + 4 + length], data[pos:pos + 4 + length]))
        pos += 4 + length
    assert pos == len(data)
    return out


def parse_certificate(body: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """certificate_request_context and (cert_data, extensions) of each entry."""
    n = body[0]
    context, rest = body[1:1 + n], body[1 + n:]
    total = int.from_bytes(rest[:3], "big")
    entries, pos, block = [], 0, rest[3:]
    assert len(block) == total
    while pos < total:
        size = int.from_bytes(block[pos:pos + 3], "big")
        cert = block[pos + 3:pos + 3 + size]
        ext_len = int.from_bytes(block[pos + 3 + size:pos + 5 + size], "big")
        entries.append((cert, block[pos + 5 + size:pos + 5 + size + ext_len]))
        pos += 5 + size + ext_len
    return context, entries


def message(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def verify_signature(leaf: x509.Certificate, scheme: int, signature: bytes, content: bytes) -> None:
    """The CertificateVerify signature, with the leaf's public key (RFC 8446 §4.2.3)."""
    key = leaf.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert scheme == SignatureScheme.ecdsa_secp256r1_sha256
        key.verify(signature, content, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPublicKey):
        assert scheme == SignatureScheme.rsa_pss_rsae_sha256
        key.verify(signature, content, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    else:
        assert isinstance(key, ed25519.Ed25519PublicKey) and scheme == SignatureScheme.ed25519
        key.verify(signature, content)


def check_authenticator(
    data: bytes, expected: Expected, *, request: bytes, chain: list[x509.Certificate], context: bytes
) -> int:
    """Every byte of an authenticator against the RFC; returns its scheme."""
    (t1, cert_body, certificate), (t2, cv_body, certificate_verify), (t3, finished, _) = split(data)
    assert (t1, t2, t3) == (HandshakeType.certificate, HandshakeType.certificate_verify, HandshakeType.finished)
    got_context, entries = parse_certificate(cert_body)
    assert got_context == context
    assert entries == [(cert.public_bytes(Encoding.DER), b"") for cert in chain]  # no entry extensions
    scheme = int.from_bytes(cv_body[:2], "big")
    signature = cv_body[4:]
    assert int.from_bytes(cv_body[2:4], "big") == len(signature)
    verify_signature(chain[0], scheme, signature, expected.signed_content(request, certificate))
    assert finished == expected.mac(request, certificate, certificate_verify)
    return scheme


# --- two connections --------------------------------------------------------------------

_CA = make_ca("ecdsa-p256")
_SERVER = make_leaf(_CA, "ecdsa-p256")
_CLIENT = make_leaf(_CA, "ecdsa-p256", client=True)


@dataclass
class Link:
    """A connected client and server over TLS or DTLS, and the client's key log."""

    client: ConnectionCore
    server: ConnectionCore
    prefix: bytes
    settle: Callable[[], None]
    #: The application data the server received so far.
    server_received: Callable[[], bytes]
    keylog: list[str] = field(default_factory=list)

    def exporter_secret(self, generation: int = 0) -> bytes:
        label = "EXPORTER_SECRET" if generation == 0 else f"EXPORTER_SECRET_{generation}"
        found = [line.split()[2] for line in self.keylog if line.split()[0] == label]
        assert len(found) == 1, label
        return bytes.fromhex(found[0])

    @property
    def hash(self) -> hashes.HashAlgorithm:
        """The authenticator hash: the negotiated suite's (RFC 9261 §5.1)."""
        suite = self.client.handshake.suite
        assert suite is not None
        return hashes.SHA384() if suite.suite.name.endswith("SHA384") else hashes.SHA256()

    def expected(self, *, sender_is_client: bool, generation: int = 0) -> Expected:
        return Expected.derive(self.hash, self.exporter_secret(generation), sender_is_client=sender_is_client, prefix=self.prefix)

    def update_keys(self, by_client: bool) -> None:
        target = self.client.key_generation + 1
        (self.client if by_client else self.server).extended_key_update()
        self.settle()
        assert self.client.key_generation == self.server.key_generation == target


def make_link(
    transport: str, *, server: Credential = _SERVER, eku_profile: str | None = None, **kwargs: object
) -> Link:
    """``kwargs`` go to the client's Configuration; ``eku_profile`` to both."""
    keylog: list[str] = []
    clock = Clock()
    store = TrustStore([_CA.cert])
    client_cfg = Configuration(
        is_client=True, server_name="localhost", trust_store=store, keylog=keylog.append, now=clock,
        eku_profile=eku_profile, **kwargs,  # type: ignore[arg-type]
    )
    server_cfg = Configuration(
        is_client=False, certificate_chain=server.chain, private_key=server.key, trust_store=store,
        eku_min_interval=0.0, now=clock, eku_profile=eku_profile,
    )
    if transport == "tls":
        pair = Pair(Connection(client_cfg), Connection(server_cfg))
        pair.client.start_handshake()
        pair.pump()
        assert pair.client.handshake_complete and pair.server.handshake_complete
        return Link(pair.client, pair.server, b"tls13 ", pair.pump, lambda: pair.received("server"), keylog)
    link = DatagramLink(DTLSConnection(client_cfg), server_cfg, clock)
    link.handshake()
    assert link.server is not None

    def quiet(conn: ConnectionCore | None) -> bool:
        return conn is not None and (conn.eku is None or not conn.eku.in_progress)

    def settle() -> None:
        """Until no extended key update runs and both ends agree on the generation."""
        link.run(lambda: quiet(link.client) and quiet(link.server) and link.client.key_generation == server.key_generation)

    server = link.server

    return Link(link.client, server, b"dtls13", settle, lambda: b"".join(link.received("server")), keylog)


TRANSPORTS = ["tls", "dtls"]


# --- the exporter values and the three sequences (RFC 9261 §3) --------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_authenticator_keys_are_rfc9261_exporter_values(transport: str) -> None:
    link = make_link(transport)
    for sender_is_client in (True, False):
        keys = link.client.exported_authenticators.keys(sender_is_client=sender_is_client)
        expected = link.expected(sender_is_client=sender_is_client)
        assert (keys.handshake_context, keys.finished_key) == (expected.handshake_context, expected.finished_key)
        # the server derives the same from its own exporter
        assert link.server.exported_authenticators.keys(sender_is_client=sender_is_client) == keys
    assert len({link.expected(sender_is_client=True).finished_key, link.expected(sender_is_client=False).finished_key}) == 2


def test_authenticator_keys_repr_shows_no_secret() -> None:
    link = make_link("tls")
    keys = link.client.exported_authenticators.keys(sender_is_client=True)
    for text in (repr(keys), str(keys), repr(link.client.exported_authenticators)):
        for secret in (keys.handshake_context, keys.finished_key):
            assert secret.hex()[:8] not in text and repr(secret)[2:10] not in text
    assert repr(AuthenticatorKeys(b"\x11" * 32, b"\x22" * 32)) == "<AuthenticatorKeys 32-byte>"


@pytest.mark.parametrize(
    ("transport", "key_type"),
    [("tls", "ecdsa-p256"), ("tls", "rsa-2048"), ("tls", "ed25519"), ("dtls", "ecdsa-p256"), ("dtls", "ed25519")],
)
def test_server_request_client_authenticator(transport: str, key_type: str) -> None:
    """Client authentication: the server's CertificateRequest (13), the client's
    authenticator (ECDSA, RSA-PSS, Ed25519 leaves), the server's validation."""
    link = make_link(transport)
    identity = _CLIENT if key_type == "ecdsa-p256" else make_leaf(_CA, key_type, client=True)
    request = link.server.authenticator_request()
    assert request[0] == HandshakeType.certificate_request
    context = link.server.authenticator_context(request)
    assert len(context) == 32
    authenticator = link.client.export_authenticator(request, chain=identity.chain, private_key=identity.key)
    scheme = check_authenticator(
        authenticator, link.expected(sender_is_client=True), request=request, chain=identity.chain, context=context
    )
    result = link.server.validate_authenticator(authenticator, request)
    assert result.certificates == tuple(identity.chain) and result.signature_scheme == scheme
    assert result.context == context and not result.empty


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_request_server_authenticator(transport: str) -> None:
    """Server authentication: the client's ClientCertificateRequest (17), the
    server's authenticator (its configured chain), the client's validation."""
    link = make_link(transport)
    request = link.client.authenticator_request(b"ctx")
    assert request == message(
        HandshakeType.client_certificate_request,
        b"\x03ctx" + struct.pack(">H", len(request) - 10) + request[10:],
    )
    assert decode_authenticator_request(request, from_client=True).extensions[0].type == ExtensionType.signature_algorithms
    authenticator = link.server.export_authenticator(request)
    check_authenticator(authenticator, link.expected(sender_is_client=False), request=request, chain=_SERVER.chain, context=b"ctx")
    assert link.client.validate_authenticator(authenticator, request).certificates == tuple(_SERVER.chain)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spontaneous_server_authenticator(transport: str) -> None:
    """§5: a server may authenticate without a request; the context is fresh
    and random, the scheme one of the ClientHello's; a client may not."""
    link = make_link(transport)
    first = link.server.export_authenticator(None)
    second = link.server.export_authenticator(None)
    contexts = [ExportedAuthenticators.context_of(a) for a in (first, second)]
    assert len(contexts[0]) == 32 and contexts[0] != contexts[1]
    check_authenticator(first, link.expected(sender_is_client=False), request=b"", chain=_SERVER.chain, context=contexts[0])
    assert link.client.validate_authenticator(first).context == contexts[0]
    assert link.client.validate_authenticator(second).context == contexts[1]
    with pytest.raises(LocalProtocolError, match="only in answer to a request"):
        link.client.export_authenticator(None, chain=_CLIENT.chain, private_key=_CLIENT.key)
    with pytest.raises(LocalProtocolError):
        link.server.validate_authenticator(first)  # a client's authenticator always has a request


def test_spontaneous_scheme_comes_from_the_client_hello() -> None:
    """A server with an RSA and an ECDSA identity: the client offered only
    rsa_pss_rsae_sha256, so the spontaneous authenticator of the ECDSA one
    cannot be made, the RSA one is signed with that scheme."""
    rsa_leaf = make_leaf(_CA, "rsa-2048")
    link = make_link("tls", signature_algorithms=[SignatureScheme.rsa_pss_rsae_sha256], server=rsa_leaf)
    authenticator = link.server.export_authenticator(None)
    assert split(authenticator)[1][1][:2] == struct.pack(">H", SignatureScheme.rsa_pss_rsae_sha256)
    with pytest.raises(AuthenticatorError) as info:
        link.server.export_authenticator(None, chain=_SERVER.chain, private_key=_SERVER.key)
    assert info.value.alert == AlertDescription.handshake_failure
    assert link.client.validate_authenticator(authenticator).signature_scheme == SignatureScheme.rsa_pss_rsae_sha256


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_empty_authenticator(transport: str) -> None:
    """§6: a Finished alone, the MAC over HC || request || Certificate(context, no
    entries); validate reports it as invalid (AuthenticatorRefused) and the
    context is used up."""
    link = make_link(transport)
    request = link.server.authenticator_request()
    context = ExportedAuthenticators.context_of(request)
    refusal = link.client.refuse_authenticator(request)
    empty_certificate = message(HandshakeType.certificate, bytes([len(context)]) + context + b"\x00\x00\x00")
    assert refusal == message(HandshakeType.finished, link.expected(sender_is_client=True).mac(request, empty_certificate))
    with pytest.raises(AuthenticatorRefused):
        link.server.validate_authenticator(refusal, request)
    with pytest.raises(AuthenticatorError, match="already validated"):
        link.server.validate_authenticator(refusal, request)
    with pytest.raises(LocalProtocolError):  # §5.2: nothing more for a context already answered
        link.client.export_authenticator(request, chain=_CLIENT.chain, private_key=_CLIENT.key)
    keys = link.server.exported_authenticators.keys(sender_is_client=True)
    opened = open_authenticator(link.server.exported_authenticators.suite, keys, request=request, data=refusal,
                                allowed_schemes=None, verify_chain=None)
    assert opened.empty and opened.context == context and opened.signature_scheme is None


# --- after extended key updates (EKU draft-13 §11.2) -------------------------------------------


@pytest.mark.parametrize(
    ("transport", "profile"),
    [("tls", "draft-13"), ("dtls", "draft-13"), ("tls", "draft-2025-10"), ("dtls", "draft-2025-10")],
)
def test_generations_follow_extended_key_updates(transport: str, profile: str) -> None:
    link = make_link(transport, eku_profile=profile)
    assert link.client.handshake.eku_profile == profile
    before = link.server.export_authenticator(None)
    link.update_keys(by_client=True)
    # the current generation by default: exporter_secret_1
    request = link.server.authenticator_request()
    authenticator = link.client.export_authenticator(request, chain=_CLIENT.chain, private_key=_CLIENT.key)
    check_authenticator(authenticator, link.expected(sender_is_client=True, generation=1), request=request,
                        chain=_CLIENT.chain, context=ExportedAuthenticators.context_of(request))
    link.server.validate_authenticator(authenticator, request)
    # made before the update: generation 0 is the handshake's exporter_master_secret
    with pytest.raises(AuthenticatorError) as info:
        link.client.validate_authenticator(before)
    assert info.value.alert == AlertDescription.decrypt_error
    assert link.client.validate_authenticator(before, generation=0).certificates == tuple(_SERVER.chain)

    link.update_keys(by_client=False)
    current = link.server.export_authenticator(None)
    check_authenticator(current, link.expected(sender_is_client=False, generation=2), request=b"",
                        chain=_SERVER.chain, context=ExportedAuthenticators.context_of(current))
    previous = link.server.export_authenticator(None, generation=1)
    check_authenticator(previous, link.expected(sender_is_client=False, generation=1), request=b"",
                        chain=_SERVER.chain, context=ExportedAuthenticators.context_of(previous))
    # generation mismatch
    with pytest.raises(AuthenticatorError) as info:
        link.client.validate_authenticator(current, generation=1)
    assert info.value.alert == AlertDescription.decrypt_error
    assert link.client.validate_authenticator(previous, generation=1).signature_scheme is not None
    assert link.client.validate_authenticator(current, generation=2).signature_scheme is not None
    # only the current and the previous generation are kept
    for gone in (0, 3, -1):
        with pytest.raises(LocalProtocolError, match="generation"):
            link.server.export_authenticator(None, generation=gone)


def test_generations_under_draft_05() -> None:
    """The same mapping under the draft-05 profile (whose key log has no
    EXPORTER_SECRET_N, so only the behaviour is checked here)."""
    link = make_link("tls", eku_profile="draft-05")
    assert link.client.handshake.eku_profile == "draft-05"
    before = link.server.export_authenticator(None)
    link.update_keys(by_client=False)
    current = link.server.export_authenticator(None)
    for authenticator, right, wrong in ((before, 0, 1), (current, 1, 0)):
        with pytest.raises(AuthenticatorError):
            link.client.validate_authenticator(authenticator, generation=wrong)
        assert link.client.validate_authenticator(authenticator, generation=right).certificates == tuple(_SERVER.chain)
    # generation=None is the current one, the same as export_keying_material's
    assert link.client.exported_authenticators.keys(sender_is_client=False) == link.client.exported_authenticators.keys(
        sender_is_client=False, generation=1)


# --- validation failures --------------------------------------------------------------------


def answered(link: Link) -> tuple[bytes, bytes]:
    request = link.server.authenticator_request()
    return request, link.client.export_authenticator(request, chain=_CLIENT.chain, private_key=_CLIENT.key)


def alert_of(link: Link, authenticator: bytes, request: bytes | None) -> AlertDescription:
    with pytest.raises(AuthenticatorError) as info:
        link.server.validate_authenticator(authenticator, request)
    return info.value.alert


def test_tampered_finished_wrong_request_and_other_connection() -> None:
    link = make_link("tls")
    request, authenticator = answered(link)
    tampered = authenticator[:-1] + bytes([authenticator[-1] ^ 1])
    assert alert_of(link, tampered, request) == AlertDescription.decrypt_error
    other_request = link.server.authenticator_request()
    assert alert_of(link, authenticator, other_request) == AlertDescription.decrypt_error
    # the same request answered on another connection (same configurations)
    other = make_link("tls")
    foreign = other.client.export_authenticator(request, chain=_CLIENT.chain, private_key=_CLIENT.key)
    assert alert_of(link, foreign, request) == AlertDescription.decrypt_error
    # none of that harmed the connection or used up the context
    assert link.server.validate_authenticator(authenticator, request).certificates == tuple(_CLIENT.chain)
    link.client.send(b"still up")
    link.settle()
    assert link.server_received() == b"still up"
    assert alert_of(link, authenticator, request) == AlertDescription.illegal_parameter  # validated once only


def test_tampered_signature_under_a_valid_mac() -> None:
    """A CertificateVerify whose signature does not verify, re-MACed with the
    Finished key computed here, so only the signature check can catch it."""
    link = make_link("tls")
    request, authenticator = answered(link)
    (_, _, certificate), (_, cv_body, _), _ = split(authenticator)
    bad_cv = message(HandshakeType.certificate_verify, cv_body[:-1] + bytes([cv_body[-1] ^ 1]))
    forged = certificate + bad_cv + message(HandshakeType.finished, link.expected(sender_is_client=True).mac(request, certificate, bad_cv))
    assert alert_of(link, forged, request) == AlertDescription.decrypt_error
    with pytest.raises(InvalidSignature):  # and it really is a bad signature
        verify_signature(_CLIENT.cert, SignatureScheme.ecdsa_secp256r1_sha256, bad_cv[8:],
                         link.expected(sender_is_client=True).signed_content(request, certificate))


def test_scheme_not_offered_and_context_mismatch() -> None:
    link = make_link("tls")
    suite = link.server.exported_authenticators.suite
    keys = authenticator_keys(link.client.export_keying_material, suite.hash_length, sender_is_client=True)
    request = link.server.authenticator_request(signature_algorithms=[SignatureScheme.ed25519])
    context = ExportedAuthenticators.context_of(request)
    # the client refuses to sign with a scheme the request does not offer
    with pytest.raises(AuthenticatorError) as info:
        link.client.export_authenticator(request, chain=_CLIENT.chain, private_key=_CLIENT.key)
    assert info.value.alert == AlertDescription.handshake_failure
    # scheme= insists on one scheme: used when offered, refused when not
    with pytest.raises(AuthenticatorError):
        link.client.export_authenticator(
            link.server.authenticator_request(), chain=_CLIENT.chain, private_key=_CLIENT.key,
            scheme=SignatureScheme.ecdsa_secp384r1_sha384,
        )
    both = link.server.authenticator_request(
        signature_algorithms=[SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ed25519]
    )
    insisted = link.client.export_authenticator(
        both, chain=_CLIENT.chain, private_key=_CLIENT.key, scheme=SignatureScheme.ecdsa_secp256r1_sha256
    )
    assert link.server.validate_authenticator(insisted, both).signature_scheme == SignatureScheme.ecdsa_secp256r1_sha256
    # a peer that does it anyway (built with the core): illegal_parameter
    forced = create_authenticator(suite, keys, request=request, context=context, chain=_CLIENT.chain,
                                  private_key=_CLIENT.key, scheme=SignatureScheme.ecdsa_secp256r1_sha256)
    assert alert_of(link, forced, request) == AlertDescription.illegal_parameter
    # a correctly MACed authenticator for another context than the request's
    plain = link.server.authenticator_request()
    (_, _, certificate), (_, cv, _), _ = split(
        create_authenticator(suite, keys, request=None, context=b"other", chain=_CLIENT.chain,
                             private_key=_CLIENT.key, scheme=SignatureScheme.ecdsa_secp256r1_sha256)
    )
    cv_msg = message(HandshakeType.certificate_verify, cv)
    mismatched = certificate + cv_msg + message(HandshakeType.finished, link.expected(sender_is_client=True).mac(plain, certificate, cv_msg))
    assert alert_of(link, mismatched, plain) == AlertDescription.illegal_parameter


def test_untrusted_and_expired_chains() -> None:
    link = make_link("tls")
    stranger = make_leaf(make_ca("ecdsa-p256", common_name="stranger CA"), "ecdsa-p256", client=True)
    request = link.server.authenticator_request()
    untrusted = link.client.export_authenticator(request, chain=stranger.chain, private_key=stranger.key)
    assert alert_of(link, untrusted, request) == AlertDescription.unknown_ca
    now = datetime.datetime.now(datetime.UTC)
    old = make_leaf(_CA, "ecdsa-p256", client=True, not_before=now - datetime.timedelta(days=30),
                    not_after=now + datetime.timedelta(days=1))
    request = link.server.authenticator_request()
    authenticator = link.client.export_authenticator(request, chain=old.chain, private_key=old.key)
    link.server.configuration.now = lambda: (now + datetime.timedelta(days=2)).timestamp()  # time moves on
    assert alert_of(link, authenticator, request) == AlertDescription.certificate_expired
    # the application's own chain check replaces the default one
    seen: list[x509.Certificate] = []
    result = link.server.validate_authenticator(authenticator, request, verify_chain=seen.extend)
    assert seen == old.chain and result.certificates == tuple(old.chain)


def test_malformed_authenticators() -> None:
    link = make_link("tls")
    request, authenticator = answered(link)
    messages = split(authenticator)
    cases = {
        authenticator[:-1]: AlertDescription.decode_error,
        authenticator + b"\x00": AlertDescription.decode_error,
        messages[0][2] + messages[2][2]: AlertDescription.unexpected_message,
        messages[1][2] + messages[0][2] + messages[2][2]: AlertDescription.unexpected_message,
        authenticator + messages[2][2]: AlertDescription.unexpected_message,
        messages[0][2] + messages[1][2] + message(HandshakeType.finished, b"\x00" * 7): AlertDescription.decode_error,
        b"": AlertDescription.unexpected_message,
    }
    for data, alert in cases.items():
        assert alert_of(link, data, request) == alert, data[:8].hex()
    with pytest.raises(AuthenticatorError):  # an empty authenticator does not carry its context
        ExportedAuthenticators.context_of(link.client.refuse_authenticator(link.server.authenticator_request()))


# --- requests and uniqueness ------------------------------------------------------------------


def test_request_codec_errors() -> None:
    good = encode_authenticator_request(
        from_client=False, context=b"c",
        extensions=[Extension(ExtensionType.signature_algorithms, b"\x00\x02\x04\x03")],
    )
    assert good == message(HandshakeType.certificate_request, b"\x01c\x00\x08\x00\x0d\x00\x04\x00\x02\x04\x03")
    assert decode_authenticator_request(good, from_client=False).certificate_request_context == b"c"
    bare = encode_authenticator_request(from_client=True, context=b"c", extensions=())
    cases = [
        (good, True, AlertDescription.decode_error),  # a server's type where a client's is due
        (good + b"\x00", False, AlertDescription.decode_error),
        (good[:-1], False, AlertDescription.decode_error),
        (bare, True, AlertDescription.missing_extension),
        (message(HandshakeType.certificate_request, b"\x01c\x00\x10" + b"\x00\x0d\x00\x04\x00\x02\x04\x03" * 2), False,
         AlertDescription.illegal_parameter),
    ]
    for raw, from_client, alert in cases:
        with pytest.raises(RemoteProtocolError) as info:
            decode_authenticator_request(raw, from_client=from_client)
        assert info.value.alert == alert
    assert decode_authenticator_request(bare, from_client=True, require_signature_algorithms=False).extensions == ()


def test_contexts_are_used_once() -> None:
    link = make_link("tls")
    request = link.client.authenticator_request(b"once")
    with pytest.raises(LocalProtocolError):
        link.client.authenticator_request(b"once")
    link.server.export_authenticator(request)
    with pytest.raises(LocalProtocolError):
        link.server.export_authenticator(request)
    with pytest.raises(LocalProtocolError):
        link.server.refuse_authenticator(request)
    # a peer request reusing one of our own request contexts (§4: "and vice versa")
    ours = link.server.authenticator_request(b"mine")
    theirs = encode_authenticator_request(
        from_client=True, context=ExportedAuthenticators.context_of(ours),
        extensions=[Extension(ExtensionType.signature_algorithms, b"\x00\x02\x04\x03")],
    )
    with pytest.raises(AuthenticatorError) as info:
        link.server.export_authenticator(theirs)
    assert info.value.alert == AlertDescription.illegal_parameter
    # a request without signature_algorithms cannot be answered (§5.2.2)
    bare = encode_authenticator_request(from_client=True, context=b"bare", extensions=())
    with pytest.raises(AuthenticatorError) as info:
        link.server.export_authenticator(bare)
    assert info.value.alert == AlertDescription.missing_extension
    # a key that is not the leaf's is caught before anything is built
    fresh = link.server.authenticator_request()
    with pytest.raises(LocalProtocolError, match="not the key"):
        link.client.export_authenticator(fresh, chain=_CLIENT.chain, private_key=_SERVER.key)
    link.client.export_authenticator(fresh, chain=_CLIENT.chain, private_key=_CLIENT.key)  # the context is still free
    # 32 random bytes from Configuration.random, never the same twice
    assert len({ExportedAuthenticators.context_of(link.server.authenticator_request()) for _ in range(20)}) == 20


def test_not_before_the_handshake_nor_after_close() -> None:
    client_cfg, _, _ = configs()
    conn = Connection(client_cfg)
    with pytest.raises(LocalProtocolError, match="handshake"):
        conn.authenticator_request()
    with pytest.raises(LocalProtocolError, match="handshake"):
        conn.exported_authenticators  # noqa: B018
    link = make_link("tls")
    request = link.server.authenticator_request()
    link.client.abort(AlertDescription.user_canceled)
    with pytest.raises(LocalProtocolError, match="closed"):
        link.client.export_authenticator(request, chain=_CLIENT.chain, private_key=_CLIENT.key)


def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/exported-authenticators.md's example, as written, on files like `longtls certs` writes."""
    text = (Path(__file__).parents[2] / "docs" / "exported-authenticators.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    certs = tmp_path / "certs"
    certs.mkdir()
    for name, credential in (("server", _SERVER), ("client", _CLIENT)):
        (certs / f"{name}.pem").write_bytes(credential.chain_pem())
        (certs / f"{name}.key").write_bytes(credential.key_pem())
    (certs / "ca.pem").write_bytes(_CA.cert_pem())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "exported-authenticators.md", "exec"), {"__name__": "example"})
    assert capsys.readouterr().out.splitlines() == [
        f"client proved {_CLIENT.cert.subject.rfc4514_string()} with ecdsa_secp256r1_sha256",
        f"server proved {_SERVER.cert.subject.rfc4514_string()}",
        "the server declined",
        "refused: illegal_parameter",
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sha384_suite_uses_48_byte_values(transport: str) -> None:
    """§5.1: the exported values and the MAC have the length of the suite's hash."""
    link = make_link(transport, cipher_suites=[CipherSuite.TLS_AES_256_GCM_SHA384])
    assert link.hash.digest_size == 48
    keys = link.server.exported_authenticators.keys(sender_is_client=False)
    assert len(keys.handshake_context) == len(keys.finished_key) == 48
    request = link.client.authenticator_request()
    authenticator = link.server.export_authenticator(request)
    check_authenticator(authenticator, link.expected(sender_is_client=False), request=request, chain=_SERVER.chain,
                        context=ExportedAuthenticators.context_of(request))
    assert len(split(authenticator)[2][1]) == 48
    link.client.validate_authenticator(authenticator, request)


def test_registered_requests_keep_their_context() -> None:
    """A request made before the state existed (Certificate Update's, in the
    handshake) is registered so its context is not used again."""
    link = make_link("tls")
    early = encode_authenticator_request(from_client=True, context=b"early", extensions=())
    link.client.exported_authenticators.register_request(early)
    with pytest.raises(LocalProtocolError):
        link.client.authenticator_request(b"early")
    with pytest.raises(LocalProtocolError):  # a server's request is not one of a client's
        link.client.exported_authenticators.register_request(link.server.authenticator_request())
