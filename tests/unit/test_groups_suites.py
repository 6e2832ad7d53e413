"""P-521, X448, FFDHE and brainpool groups, the P-521 and brainpool signature
schemes, and the AES-CCM suites between two longtls peers (issue 9;
decisions in docs/groups-and-suites.md).

Key exchange and record protection are checked against values computed here
from the specs' formulas with raw primitives, not with longtls' own code:
the handshake secret from an independently computed (EC)DHE secret, and CCM
records decrypted with cryptography's AESCCM under keys derived with the
RFC 8448 helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x448
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.vectors.rfc8448 import derive_secret, expand_label, hkdf_extract

from helpers.cli import LONGTLS, longtls, summary
from helpers.pair import Pair, configs, connect
from helpers.peers import LOOPBACK, free_port, start_process
from helpers.pki import make_ca, make_leaf
from helpers.tamper import KeyLog, plaintext_messages, seal, split_records
from longtls.cli.common import cipher_list, group_list
from longtls.config import DEFAULT_GROUPS, ClientAuth, Configuration
from longtls.connection import Connection
from longtls.constants import (
    AlertDescription,
    CipherSuite,
    ContentType,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    SignatureScheme,
)
from longtls.crypto.groups import KeyShare, ffdhe_prime, get_group
from longtls.crypto.signatures import schemes_for_key
from longtls.crypto.suites import DEFAULT_CIPHER_SUITES, SUITES
from longtls.errors import RemoteProtocolError
from longtls.events import ConnectionClosed, Event, HandshakeComplete
from longtls.wire import extensions as X
from longtls.wire.messages import ClientHello, Extension, ServerHello, encode_handshake

G = NamedGroup
S = SignatureScheme
C = CipherSuite
A = AlertDescription

NEW_GROUPS = [
    G.secp521r1, G.x448,
    G.brainpoolP256r1tls13, G.brainpoolP384r1tls13, G.brainpoolP512r1tls13,
    G.ffdhe2048, G.ffdhe3072, G.ffdhe4096, G.ffdhe6144, G.ffdhe8192,
]
CCM_SUITES = [C.TLS_AES_128_CCM_SHA256, C.TLS_AES_128_CCM_8_SHA256]
TAG_LENGTH = {C.TLS_AES_128_CCM_SHA256: 16, C.TLS_AES_128_CCM_8_SHA256: 8}  # RFC 6655
NEW_SCHEMES = {  # leaf key type -> (CA key type, CertificateVerify scheme)
    "ecdsa-p521": ("ecdsa-p521", S.ecdsa_secp521r1_sha512),
    # The Web PKI profile refuses brainpool CA keys: brainpool leaves under a P-256 CA.
    "ecdsa-brainpoolP256r1": ("ecdsa-p256", S.ecdsa_brainpoolP256r1tls13_sha256),
    "ecdsa-brainpoolP384r1": ("ecdsa-p256", S.ecdsa_brainpoolP384r1tls13_sha384),
    "ecdsa-brainpoolP512r1": ("ecdsa-p256", S.ecdsa_brainpoolP512r1tls13_sha512),
}
#: A fatal illegal_parameter alert in a plaintext record (RFC 9846 §6, §5.1).
ILLEGAL_PARAMETER_RECORD = bytes([ContentType.ALERT, 3, 3, 0, 2, 2, A.illegal_parameter])


def _done(events: list[Event]) -> HandshakeComplete:
    (done,) = [e for e in events if isinstance(e, HandshakeComplete)]
    return done


def _group_pair(group: NamedGroup, **kw: Any) -> Pair:
    c, s, _ = configs(
        client_groups=[group], client_key_share_groups=[group], server_groups=[group], **kw
    )
    return connect(c, s)


def _both_ways(pair: Pair) -> None:
    pair.client.send(b"from the client")
    pair.server.send(b"from the server")
    pair.pump()
    assert pair.received("server").endswith(b"from the client")
    assert pair.received("client").endswith(b"from the server")


# --- defaults (docs/groups-and-suites.md) ---------------------------------------------------


def test_what_is_offered_by_default() -> None:
    """The new groups and CCM_8 are opt-in (the default ClientHello stays
    lean); TLS_AES_128_CCM_SHA256 is offered last; the new signature schemes
    are offered (two bytes each, used only with a key of their own type)."""
    assert not set(NEW_GROUPS) & set(DEFAULT_GROUPS)
    assert DEFAULT_CIPHER_SUITES[-1] is C.TLS_AES_128_CCM_SHA256
    assert C.TLS_AES_128_CCM_8_SHA256 not in DEFAULT_CIPHER_SUITES
    assert set(CCM_SUITES) <= set(SUITES)
    client = Connection(Configuration(is_client=True, server_name="localhost"))
    client.start_handshake()
    ((_, body),) = plaintext_messages(client.data_to_send())
    ch = ClientHello.decode(body)
    exts = {e.type: e.data for e in ch.extensions}
    assert not set(X.decode_supported_groups(exts[ExtensionType.supported_groups])) & set(NEW_GROUPS)
    assert ch.cipher_suites == (
        C.TLS_AES_128_GCM_SHA256, C.TLS_AES_256_GCM_SHA384, C.TLS_CHACHA20_POLY1305_SHA256,
        C.TLS_AES_128_CCM_SHA256,
    )
    offered = X.decode_signature_algorithms(exts[ExtensionType.signature_algorithms])
    assert {scheme for _, scheme in NEW_SCHEMES.values()} <= set(offered)


def test_a_server_accepts_a_new_group_only_when_configured() -> None:
    c, s, _ = configs(client_groups=[G.x448], client_key_share_groups=[G.x448])
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(client.data_to_send())
    assert info.value.alert is A.handshake_failure
    # The server's error (its log line) says what to change.
    assert "the client offers x448, which longtls implements but the configured groups" in str(info.value)
    assert server.data_to_send() == bytes([21, 3, 3, 0, 2, 2, A.handshake_failure])


def test_which_suite_default_peers_choose() -> None:
    """Defaults on both sides: GCM.  A device that speaks only CCM reaches a
    default server.  A server that prefers CCM gets it from a default client.
    CCM_8 needs the server to list it."""
    c, s, _ = configs()
    assert _done(connect(c, s).client_events).cipher_suite is C.TLS_AES_128_GCM_SHA256
    c, s, _ = configs(client_cipher_suites=[C.TLS_AES_128_CCM_SHA256])
    assert _done(connect(c, s).server_events).cipher_suite is C.TLS_AES_128_CCM_SHA256
    c, s, _ = configs(server_cipher_suites=[C.TLS_AES_128_CCM_SHA256, C.TLS_AES_128_GCM_SHA256])
    assert _done(connect(c, s).client_events).cipher_suite is C.TLS_AES_128_CCM_SHA256
    c, s, _ = configs(client_cipher_suites=[C.TLS_AES_128_CCM_8_SHA256])
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(client.data_to_send())
    assert info.value.alert is A.handshake_failure
    assert "the client offers TLS_AES_128_CCM_8_SHA256, which longtls implements" in str(info.value)


# --- handshakes over each new group ---------------------------------------------------------


@pytest.mark.parametrize("group", NEW_GROUPS, ids=lambda g: g.name)
def test_handshake_with_the_group_in_the_first_key_share(group: NamedGroup) -> None:
    pair = _group_pair(group)
    for events in (pair.client_events, pair.server_events):
        assert _done(events).group is group
    assert not pair.client.handshake.hello_retry_seen  # type: ignore[attr-defined]
    _both_ways(pair)


@pytest.mark.parametrize("group", NEW_GROUPS, ids=lambda g: g.name)
def test_handshake_with_the_group_after_a_hello_retry_request(group: NamedGroup) -> None:
    """The client sends only an x25519 share; the server wants ``group``."""
    c, s, _ = configs(
        client_groups=[G.x25519, group], client_key_share_groups=[G.x25519], server_groups=[group]
    )
    pair = connect(c, s)
    assert pair.client.handshake.hello_retry_seen  # type: ignore[attr-defined]
    assert _done(pair.client_events).group is group
    _both_ways(pair)


def _x448_public(private: bytes) -> bytes:
    return x448.X448PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _ec_public(curve: ec.EllipticCurve, scalar: int) -> ec.EllipticCurvePublicKey:
    return ec.derive_private_key(scalar, curve).public_key()


# (group, client private, server private, Z computed independently of longtls)
def _ffdhe_case() -> tuple[NamedGroup, bytes, bytes, bytes]:
    # Tiny exponents make Z = 2^(30*61) = 2^1830, 26 bytes shorter than p:
    # only a correctly left-padded Z (RFC 9846 §7.4.1) gives the right secret.
    p = ffdhe_prime(G.ffdhe2048)
    z = pow(pow(2, 30, p), 61, p)
    assert z == 2**1830
    return G.ffdhe2048, (30).to_bytes(256, "big"), (61).to_bytes(256, "big"), z.to_bytes(256, "big")


def _x448_case() -> tuple[NamedGroup, bytes, bytes, bytes]:
    a, b = bytes(range(1, 57)), bytes(range(101, 157))
    z = x448.X448PrivateKey.from_private_bytes(a).exchange(
        x448.X448PublicKey.from_public_bytes(_x448_public(b))
    )
    return G.x448, a, b, z


def _ec_case(group: NamedGroup, curve: ec.EllipticCurve) -> tuple[NamedGroup, bytes, bytes, bytes]:
    size = (curve.key_size + 7) // 8
    a, b = 0x1234567, 0x7654321
    z = ec.derive_private_key(a, curve).exchange(ec.ECDH(), _ec_public(curve, b))
    return group, a.to_bytes(size, "big"), b.to_bytes(size, "big"), z


SECRET_CASES: dict[str, Callable[[], tuple[NamedGroup, bytes, bytes, bytes]]] = {
    "ffdhe2048": _ffdhe_case,
    "x448": _x448_case,
    "secp521r1": lambda: _ec_case(G.secp521r1, ec.SECP521R1()),
    "brainpoolP256r1tls13": lambda: _ec_case(G.brainpoolP256r1tls13, ec.BrainpoolP256R1()),
    "brainpoolP512r1tls13": lambda: _ec_case(G.brainpoolP512r1tls13, ec.BrainpoolP512R1()),
}


@pytest.mark.parametrize("case", SECRET_CASES)
def test_handshake_secret_uses_the_spec_shared_secret(case: str) -> None:
    """client_handshake_traffic_secret (RFC 9846 §7.1) from a shared secret
    computed here: HKDF over the independently computed Z, with the ClientHello
    and ServerHello actually sent."""
    group, client_private, server_private, z = SECRET_CASES[case]()

    def factory(private: bytes) -> Callable[[NamedGroup], KeyShare]:
        return lambda g: get_group(g).from_private_bytes(private)

    log = KeyLog()
    c, s, _ = configs(
        client_groups=[group], client_key_share_groups=[group], server_groups=[group],
        client_cipher_suites=[C.TLS_AES_128_GCM_SHA256],
        client_key_share_factory=factory(client_private),
        server_key_share_factory=factory(server_private), client_keylog=log,
    )
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    ch = client.data_to_send()
    server.receive_data(ch)
    flight = server.data_to_send()
    client.receive_data(flight)
    (ch_msg,) = plaintext_messages(ch)
    sh_msg = next(m for m in plaintext_messages(flight) if m[0] == HandshakeType.server_hello)
    transcript = encode_handshake(*ch_msg) + encode_handshake(*sh_msg)

    early = hkdf_extract("sha256", None, None)
    handshake_secret = hkdf_extract("sha256", derive_secret("sha256", early, "derived", b""), z)
    expected = derive_secret("sha256", handshake_secret, "c hs traffic", transcript)
    assert log.secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET") == expected


# --- bad key shares get illegal_parameter, on the wire ---------------------------------------


def _p(group: NamedGroup) -> int:
    return ffdhe_prime(group)


def _off_curve(group: NamedGroup) -> bytes:
    size = (get_group(group).public_length - 1) // 2
    return b"\x04" + (1).to_bytes(size, "big") + (1).to_bytes(size, "big")


def _x_plus_p_brainpool512() -> bytes:
    """A genuine brainpoolP512r1 point with x replaced by x + p (same point mod p)."""
    p = int(
        "aadd9db8dbe9c48b3fd4e6ae33c9fc07cb308db3b3c9d20ed6639cca703308717d4d9b009bc66842aecda12ae6a380"
        "e62881ff2f2d82c68528aa6056583a48f3", 16,
    )
    for scalar in range(2, 1000):
        point = _ec_public(ec.BrainpoolP512R1(), scalar).public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        x = int.from_bytes(point[1:65], "big")
        if x + p < 2**512:
            return b"\x04" + (x + p).to_bytes(64, "big") + point[65:]
    raise AssertionError("no small x found")


BAD_SHARES = {
    "ffdhe2048-Y=1": (G.ffdhe2048, (1).to_bytes(256, "big")),
    "ffdhe2048-Y=0": (G.ffdhe2048, bytes(256)),
    "ffdhe2048-Y=p-1": (G.ffdhe2048, (_p(G.ffdhe2048) - 1).to_bytes(256, "big")),
    "ffdhe2048-Y=p": (G.ffdhe2048, _p(G.ffdhe2048).to_bytes(256, "big")),
    "ffdhe2048-unpadded": (G.ffdhe2048, (2**1000).to_bytes(126, "big")),
    "ffdhe3072-Y=p-1": (G.ffdhe3072, (_p(G.ffdhe3072) - 1).to_bytes(384, "big")),
    "ffdhe8192-Y=1": (G.ffdhe8192, (1).to_bytes(1024, "big")),
    "ffdhe8192-1023-bytes": (G.ffdhe8192, bytes(1022) + b"\x02"),
    "x448-zero": (G.x448, bytes(56)),  # all-zero shared secret (RFC 9846 §7.4.2)
    "x448-one": (G.x448, (1).to_bytes(56, "little")),
    "x448-55-bytes": (G.x448, bytes(range(55))),
    "secp521r1-off-curve": (G.secp521r1, _off_curve(G.secp521r1)),
    "secp521r1-132-bytes": (G.secp521r1, b"\x04" + bytes(131)),
    "secp521r1-compressed": (G.secp521r1, b"\x02" + bytes(range(66))),
    "brainpoolP256r1-off-curve": (G.brainpoolP256r1tls13, _off_curve(G.brainpoolP256r1tls13)),
    "brainpoolP384r1-infinity": (G.brainpoolP384r1tls13, b"\x04" + bytes(96)),
    "brainpoolP512r1-x-plus-p": (G.brainpoolP512r1tls13, _x_plus_p_brainpool512()),
}


def _share_hook(group: NamedGroup, key_exchange: bytes) -> Callable[[list[Extension]], list[Extension]]:
    data = X.encode_key_share_client([X.KeyShareEntry(group, key_exchange)])
    return lambda exts: [Extension(e.type, data) if e.type == ExtensionType.key_share else e for e in exts]


@pytest.mark.parametrize("case", BAD_SHARES)
def test_bad_client_key_share_gets_illegal_parameter(case: str) -> None:
    """RFC 9846 §4.3.8.1 (1 < Y < p-1, Y padded), §4.3.8.2 (points on the
    curve), §7.4.2 (all-zero X448 output): the server's answer on the wire is
    a fatal illegal_parameter alert, and nothing else."""
    group, key_exchange = BAD_SHARES[case]
    c, s, _ = configs(
        client_groups=[group], client_key_share_groups=[group], server_groups=[group],
        client_client_hello_hook=_share_hook(group, key_exchange),
    )
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(client.data_to_send())
    assert info.value.alert is A.illegal_parameter
    assert server.data_to_send() == ILLEGAL_PARAMETER_RECORD
    client.receive_data(ILLEGAL_PARAMETER_RECORD)
    (closed,) = [e for e in client.events() if isinstance(e, ConnectionClosed)]
    assert closed.alert is A.illegal_parameter and closed.by_peer


def _replace_server_share(flight: bytes, group: NamedGroup, key_exchange: bytes) -> bytes:
    """The server's first flight with the ServerHello's key_share replaced
    (the records after it are left as they are: the client never gets there)."""
    out = []
    for record in split_records(flight):
        if record.type == ContentType.HANDSHAKE:
            ((msg_type, body),) = plaintext_messages(record.raw)
            assert msg_type == HandshakeType.server_hello
            sh = ServerHello.decode(body)
            share = X.encode_key_share_server(X.KeyShareEntry(group, key_exchange))
            exts = tuple(Extension(e.type, share) if e.type == ExtensionType.key_share else e
                         for e in sh.extensions)
            new = ServerHello(sh.random, sh.legacy_session_id_echo, sh.cipher_suite, exts,
                              legacy_compression_method=sh.legacy_compression_method,
                              legacy_version=sh.legacy_version)
            out.append(bytes([22, 3, 3]) + len(encode_handshake(2, new.encode())).to_bytes(2, "big")
                       + encode_handshake(2, new.encode()))
        else:
            out.append(record.raw)
    return b"".join(out)


@pytest.mark.parametrize(
    "case", ["ffdhe2048-Y=p-1", "ffdhe8192-Y=1", "x448-zero", "secp521r1-off-curve",
             "brainpoolP512r1-x-plus-p"],
)
def test_bad_server_key_share_gets_illegal_parameter(case: str) -> None:
    group, key_exchange = BAD_SHARES[case]
    c, s, _ = configs(client_groups=[group], client_key_share_groups=[group], server_groups=[group])
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    server.receive_data(client.data_to_send())
    flight = _replace_server_share(server.data_to_send(), group, key_exchange)
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(flight)
    assert info.value.alert is A.illegal_parameter
    # No handshake keys yet: the alert goes out in the clear.
    assert client.data_to_send() == ILLEGAL_PARAMETER_RECORD


# --- signature schemes ------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", NEW_SCHEMES)
def test_certificate_verify_both_ways(key_type: str) -> None:
    """Server and client certificates with the key type; each side's
    CertificateVerify uses the one TLS 1.3 scheme of its curve."""
    ca_type, scheme = NEW_SCHEMES[key_type]
    ca = make_ca(ca_type)
    client_leaf = make_leaf(ca, key_type, client=True)
    c, s, _ = configs(
        key_type, ca=ca, server_client_auth=ClientAuth.REQUIRED,
        client_certificate_chain=client_leaf.chain, client_private_key=client_leaf.key,
    )
    pair = connect(c, s)
    client_done, server_done = _done(pair.client_events), _done(pair.server_events)
    assert client_done.signature_scheme is scheme and client_done.local_signature_scheme is scheme
    assert server_done.signature_scheme is scheme and server_done.client_authenticated
    assert server_done.peer_certificates[0] == client_leaf.cert
    _both_ways(pair)


def test_brainpool_ca_is_refused_with_a_clear_message() -> None:
    """cryptography's Web PKI profile refuses brainpool CA keys: a documented
    limitation, reported as unsupported_certificate with what does work."""
    c, s, _ = configs("ecdsa-brainpoolP256r1")  # CA and leaf both brainpoolP256r1
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    server.receive_data(client.data_to_send())
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(server.data_to_send())
    assert info.value.alert is A.unsupported_certificate
    message = str(info.value)
    assert "brainpool" in message and "P-256/P-384/P-521" in message
    server.receive_data(client.data_to_send())
    (closed,) = [e for e in server.events() if isinstance(e, ConnectionClosed)]
    assert closed.alert is A.unsupported_certificate and closed.by_peer


# --- AES-CCM suites ---------------------------------------------------------------------------


@pytest.mark.parametrize("suite", CCM_SUITES, ids=lambda s: s.name)
def test_ccm_records_on_the_wire(suite: CipherSuite) -> None:
    """Record length = content + 1 (type) + the suite's tag (RFC 9846 §5.2);
    the record decrypts with cryptography's AESCCM under the key and IV of
    §7.3 derived here from the logged traffic secret, nonce per §5.3."""
    log = KeyLog()
    c, s, _ = configs(client_cipher_suites=[suite], server_cipher_suites=[suite], client_keylog=log)
    pair = connect(c, s)
    assert _done(pair.client_events).cipher_suite is suite
    assert _done(pair.server_events).cipher_suite is suite
    secret = log.secret("CLIENT_TRAFFIC_SECRET_0")
    key = expand_label("sha256", secret, "key", b"", 16)
    iv = int.from_bytes(expand_label("sha256", secret, "iv", b"", 12), "big")
    aead = AESCCM(key, tag_length=TAG_LENGTH[suite])
    for sequence_number, size in enumerate([1, 100, 2**14]):
        content = bytes([sequence_number + 1]) * size
        pair.client.send(content)
        wire = pair.client.data_to_send()
        (record,) = split_records(wire)
        assert record.type == ContentType.APPLICATION_DATA
        assert len(record.fragment) == size + 1 + TAG_LENGTH[suite]
        nonce = (iv ^ sequence_number).to_bytes(12, "big")
        assert aead.decrypt(nonce, record.fragment, record.header) == content + b"\x17"
        pair.server.receive_data(wire)
    pair.pump()
    assert pair.received("server") == b"".join(bytes([i + 1]) * n for i, n in enumerate([1, 100, 2**14]))


@pytest.mark.parametrize("suite", CCM_SUITES, ids=lambda s: s.name)
def test_ccm_key_updates_and_eku(suite: CipherSuite) -> None:
    c, s, _ = configs(client_cipher_suites=[suite], server_cipher_suites=[suite])
    pair = connect(c, s)
    pair.client.extended_key_update()
    pair.pump()
    pair.server.extended_key_update()
    pair.pump()
    assert pair.client.key_generation == pair.server.key_generation == 2
    _both_ways(pair)
    c, s, _ = configs(client_cipher_suites=[suite], server_cipher_suites=[suite],
                      client_extended_key_update=False)
    pair = connect(c, s)
    pair.client.update_keys()
    pair.pump()
    _both_ways(pair)


@pytest.mark.parametrize("suite", CCM_SUITES, ids=lambda s: s.name)
def test_ccm_forged_record_is_bad_record_mac(suite: CipherSuite) -> None:
    c, s, _ = configs(client_cipher_suites=[suite], server_cipher_suites=[suite])
    pair = connect(c, s)
    pair.client.send(b"genuine")
    wire = bytearray(pair.client.data_to_send())
    wire[-1] ^= 1  # the last byte of the tag
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(bytes(wire))
    assert info.value.alert is A.bad_record_mac


def test_ccm_8_record_shorter_than_its_tag_is_bad_record_mac() -> None:
    suite = C.TLS_AES_128_CCM_8_SHA256
    c, s, _ = configs(client_cipher_suites=[suite], server_cipher_suites=[suite])
    pair = connect(c, s)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(bytes([23, 3, 3, 0, 7]) + bytes(7))
    assert info.value.alert is A.bad_record_mac


def test_record_size_limit_counts_ccm_8s_short_tag() -> None:
    """RFC 8449 §4: the limit is on TLSInnerPlaintext; a CCM_8 record's
    ciphertext is only 8 bytes longer.  One byte over the limit is
    record_overflow; exactly at the limit is fine."""
    suite = C.TLS_AES_128_CCM_8_SHA256
    log = KeyLog()
    c, s, _ = configs(
        client_cipher_suites=[suite], server_cipher_suites=[suite], server_record_size_limit=64,
        client_keylog=log,
    )
    pair = connect(c, s)
    secret = log.secret("CLIENT_TRAFFIC_SECRET_0")
    info = SUITES[suite]
    at_limit = seal(info, secret, ContentType.APPLICATION_DATA, bytes(63), sequence_number=0)
    assert len(at_limit) == 5 + 64 + 8
    pair.server.receive_data(at_limit)
    over = seal(info, secret, ContentType.APPLICATION_DATA, bytes(64), sequence_number=1)
    with pytest.raises(RemoteProtocolError) as exc:
        pair.server.receive_data(over)
    assert exc.value.alert is A.record_overflow


@pytest.mark.parametrize("suite", CCM_SUITES, ids=lambda s: s.name)
def test_ccm_usage_limit_triggers_a_key_update(suite: CipherSuite) -> None:
    """RFC 9147 Appendix B: 2^23 records per key for both CCM suites; longtls
    updates its keys at 7/8 of it (as for GCM, RFC 9846 §5.5)."""
    assert SUITES[suite].record_limit == 2**23
    c, s, _ = configs(client_cipher_suites=[suite], server_cipher_suites=[suite])
    pair = connect(c, s)
    protection = pair.client._records.write
    assert protection is not None and pair.server._records.read is not None
    protection.sequence_number = 2**23 - 2**20  # as if that many records had been sent
    pair.server._records.read.sequence_number = protection.sequence_number
    pair.client.send(b"still flowing")
    pair.pump()
    assert pair.client._records.write is not protection
    assert pair.client.key_generation == 1
    assert pair.received("server") == b"still flowing"


# --- the command line ---------------------------------------------------------------------------


def test_cli_group_and_suite_names() -> None:
    """OpenSSL's spellings are accepted as they are: colon-separated, P-521."""
    assert group_list("secp521r1:X448,ffdhe2048,brainpoolP256r1tls13,P-521") == (
        G.secp521r1, G.x448, G.ffdhe2048, G.brainpoolP256r1tls13,
    )
    assert group_list("FFDHE8192:brainpoolp512r1tls13") == (G.ffdhe8192, G.brainpoolP512r1tls13)
    assert cipher_list("TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256") == tuple(CCM_SUITES)


def test_cli_serve_and_connect_with_p521_ffdhe_and_ccm_8(tmp_pki_files: Any) -> None:
    """`longtls serve` takes a P-521 key; both ends opt in to ffdhe3072 and
    CCM_8 on the command line and run an extended key update over them."""
    files = tmp_pki_files("ecdsa-p521")
    port = free_port()
    options = ["--groups", "ffdhe3072", "--ciphers", "TLS_AES_128_CCM_8_SHA256"]
    with start_process(
        [*LONGTLS, "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
         "--port", str(port), "--echo", *options],
        ready_pattern=r"^longtls: serving \(echo\) on ",
    ) as server:
        result = longtls(
            "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json",
            "--rekey-count", "1", *options,
        )
    assert result.returncode == 0, (result.stderr, server.describe())
    records = summary(result.stderr)
    handshake = records[0]
    assert handshake["cipher_suite"] == "TLS_AES_128_CCM_8_SHA256"
    assert handshake["group"] == "ffdhe3072"
    assert handshake["signature_scheme"] == "ecdsa_secp521r1_sha512"
    updates = [r for r in records if r["event"] == "key_update"]
    assert [(u["kind"], u["group"]) for u in updates] == [("extended", "ffdhe3072")], records


@pytest.mark.parametrize("key_type", ["ecdsa-p521", "ecdsa-brainpoolp256r1"])
def test_serve_loads_p521_and_brainpool_keys(tmp_path: Any, key_type: str) -> None:
    """What `longtls serve --cert --key` does with the files `longtls certs` writes."""
    assert longtls("certs", "--out", str(tmp_path), "--key-type", key_type).returncode == 0
    config = Configuration(is_client=False)
    config.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    config.validate()
    scheme = {"ecdsa-p521": S.ecdsa_secp521r1_sha512,
              "ecdsa-brainpoolp256r1": S.ecdsa_brainpoolP256r1tls13_sha256}[key_type]
    assert schemes_for_key(config.private_key, config.certificate_chain[0]) == [scheme]
