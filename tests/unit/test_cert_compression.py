"""RFC 8879 certificate compression between two longtls peers, and every way a
peer can get it wrong.

Round trips: the server's Certificate (ClientHello offer), the client's in the
handshake and after it (CertificateRequest offer), with zlib, brotli and zstd.
What went over the wire is read back with the key log and checked against an
independent construction: the Certificate body built here from the chain's
DER, decompressed by the compression library itself, and the server's
Finished recomputed from the RFC 9846 §4.4.4 formula over the messages as sent
(so the transcript holds the CompressedCertificate, not the Certificate).

Failures: each one ends with the alert named in the test, on the wire, and a
closed connection.
"""

from __future__ import annotations

import hmac
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import brotli
import pytest
import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from helpers.cli import LONGTLS, longtls, summary
from helpers.pair import Pair, configs, connect
from helpers.peers import LOOPBACK, free_port, start_process
from helpers.pki import PkiFiles, make_ca, make_intermediate, make_leaf
from helpers.tamper import (
    KeyLog,
    Message,
    decode_last_record,
    negotiated_suite,
    open_protected,
    plaintext_messages,
    rewrite_flight,
    split_records,
)
from longtls import certcompress
from longtls.config import ClientAuth, Configuration
from longtls.connection import Connection
from longtls.constants import AlertDescription as A
from longtls.constants import (
    AlertLevel,
    CertificateCompressionAlgorithm,
    ContentType,
    ExtensionType,
    HandshakeType,
)
from longtls.crypto.certificates import TrustStore
from longtls.crypto.suites import SuiteInfo
from longtls.errors import ConfigurationError, DecodeError, ProtocolError
from longtls.events import ConnectionClosed, HandshakeComplete, PeerAuthenticated
from longtls.wire import extensions as X
from longtls.wire.messages import (
    CertificateRequest,
    ClientHello,
    CompressedCertificate,
    EncryptedExtensions,
    Extension,
    decode_message,
)

ALGORITHMS = list(CertificateCompressionAlgorithm)
ZLIB, BROTLI, ZSTD = (
    CertificateCompressionAlgorithm.zlib,
    CertificateCompressionAlgorithm.brotli,
    CertificateCompressionAlgorithm.zstd,
)


# -- independent references ------------------------------------------------------


def library_compress(algorithm: int, data: bytes) -> bytes:
    """The compression library itself, at its default settings."""
    if algorithm == ZLIB:
        return zlib.compress(data)
    if algorithm == BROTLI:
        out: bytes = brotli.compress(data)
        return out
    out = zstandard.ZstdCompressor().compress(data)
    return out


def library_decompress(algorithm: int, data: bytes) -> bytes:
    if algorithm == ZLIB:
        return zlib.decompress(data)
    if algorithm == BROTLI:
        out: bytes = brotli.decompress(data)
        return out
    out = zstandard.ZstdDecompressor().decompress(data)
    return out


def certificate_body(chain: list[x509.Certificate], context: bytes = b"") -> bytes:
    """RFC 9846 §4.4.2 Certificate, built by hand: context<0..255>, then
    certificate_list<0..2^24-1> of (cert_data<1..2^24-1>, extensions<0..2^16-1>)."""
    entries = b"".join(
        len(der).to_bytes(3, "big") + der + b"\x00\x00"
        for der in (c.public_bytes(Encoding.DER) for c in chain)
    )
    return bytes([len(context)]) + context + len(entries).to_bytes(3, "big") + entries


def hkdf_expand_label(secret: bytes, label: bytes, length: int, hash_name: str) -> bytes:
    """RFC 9846 §7.1 HKDF-Expand-Label with an empty context, from HMAC alone."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


def handshake_message(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


# -- helpers -----------------------------------------------------------------------------


def two_level_chain(key_type: str = "ecdsa-p256") -> tuple[x509.Certificate, list[x509.Certificate], object]:
    """A root, and a leaf + intermediate chain under it (what servers send)."""
    root = make_ca(key_type)
    intermediate = make_intermediate(root, key_type)
    leaf = make_leaf(intermediate, key_type)
    return root.cert, leaf.chain, leaf.key


def compression_configs(
    client: tuple[CertificateCompressionAlgorithm, ...] = tuple(ALGORITHMS),
    server: tuple[CertificateCompressionAlgorithm, ...] = tuple(ALGORITHMS),
    **kwargs: object,
) -> tuple[Configuration, Configuration, KeyLog, KeyLog]:
    c, s, _ca = configs(client_certificate_compression=client, server_certificate_compression=server, **kwargs)
    c.keylog, s.keylog = KeyLog(), KeyLog()
    return c, s, c.keylog, s.keylog


def server_flight(c: Configuration, s: Configuration) -> tuple[Connection, Connection, bytes, bytes]:
    """Client, server, the ClientHello bytes, the server's first flight."""
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    hello = client.data_to_send()
    server.receive_data(hello)
    return client, server, hello, server.data_to_send()


def protected_messages(flight: bytes, secret: bytes, suite: SuiteInfo | None = None) -> list[Message]:
    """The handshake messages in ``flight``'s protected records (``suite``: the
    ServerHello's in ``flight`` unless given)."""
    suite = suite or negotiated_suite(flight)
    inner = open_protected(suite, secret, [r for r in split_records(flight) if r.protected])
    stream = b"".join(content for _, content in inner)
    out: list[Message] = []
    pos = 0
    while pos < len(stream):
        n = int.from_bytes(stream[pos + 1 : pos + 4], "big")
        out.append((stream[pos], stream[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


def handshake_event(events: list[object]) -> HandshakeComplete:
    (done,) = [e for e in events if isinstance(e, HandshakeComplete)]
    return done


def expect_alert(
    victim: Connection, data: bytes, alert: A, *, peer: Connection | None = None, reason: str = ""
) -> None:
    """``victim`` refuses ``data`` with ``alert``: raised, sent as its last
    record (read with its key log), connection closed; ``peer`` reads it."""
    with pytest.raises(ProtocolError) as info:
        victim.receive_data(data)
    assert info.value.alert is alert, str(info.value)
    assert reason in str(info.value)
    assert victim.is_closed
    closed = [e.alert for e in victim.events() if isinstance(e, ConnectionClosed)]
    assert closed == [alert]
    out = victim.data_to_send()
    log = victim.configuration.keylog
    assert isinstance(log, KeyLog)
    side = "client" if victim.is_client else "server"
    assert decode_last_record(out, log, side) == (ContentType.ALERT, bytes((AlertLevel.FATAL, alert)))
    if peer is not None:
        peer.receive_data(out)
        assert [(e.alert, e.by_peer) for e in peer.events() if isinstance(e, ConnectionClosed)] == [(alert, True)]


def replace_certificate(body: bytes, msg_type: int = HandshakeType.compressed_certificate) -> Callable[[list[Message]], list[Message]]:
    """An edit putting (msg_type, body) where the Certificate or CompressedCertificate was."""
    cert_types = (HandshakeType.certificate, HandshakeType.compressed_certificate)

    def edit(messages: list[Message]) -> list[Message]:
        assert sum(t in cert_types for t, _ in messages) == 1
        return [(msg_type, body) if t in cert_types else (t, b) for t, b in messages]

    return edit


def tampered_server_flight(
    c: Configuration, s: Configuration, slog: KeyLog, body: bytes, msg_type: int = HandshakeType.compressed_certificate,
) -> tuple[Connection, Connection, bytes]:
    client, server, _, flight = server_flight(c, s)
    secret = slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET")
    return client, server, rewrite_flight(flight, negotiated_suite(flight), secret, replace_certificate(body, msg_type))


def server_chain_body(s: Configuration) -> bytes:
    return certificate_body(s.certificate_chain)


def compressed(algorithm: int, data: bytes, length: int | None = None) -> bytes:
    """A CompressedCertificate body made with the library itself."""
    declared = len(data) if length is None else length
    return CompressedCertificate(algorithm, declared, library_compress(algorithm, data)).encode()


# ================================================================== codecs (RFC 8879 §3, §4)


def test_compress_certificate_extension_codec() -> None:
    data = X.encode_compress_certificate([BROTLI, ZLIB, 0x4000])
    assert data == bytes.fromhex("06 0002 0001 4000")
    assert X.decode_compress_certificate(data) == (2, 1, 0x4000)  # unknown kept, for the caller to ignore


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x01\x00", b"\x03\x00\x01\x00", b"\x02\x00\x01\x00", b"\x04\x00\x01"],
    ids=["no-length", "empty-list", "odd", "odd-3", "trailing", "truncated"],
)
def test_compress_certificate_extension_malformed_is_decode_error(data: bytes) -> None:
    """``algorithms<2..2^8-2>``: an empty list is below the minimum."""
    with pytest.raises(DecodeError):
        X.decode_compress_certificate(data)


def test_compress_certificate_extension_too_long_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        X.encode_compress_certificate([1] * 128)  # 256 bytes > 254
    with pytest.raises(ValueError):
        X.encode_compress_certificate([])


def test_compressed_certificate_codec() -> None:
    msg = CompressedCertificate(ZLIB, 1000, b"\x78\x9c\x01")
    body = msg.encode()
    assert body == bytes.fromhex("0001 0003e8 000003 789c01")
    assert decode_message(HandshakeType.compressed_certificate, body) == msg


@pytest.mark.parametrize(
    "body",
    [bytes.fromhex("0001 0003e8 000000"), bytes.fromhex("0001 0003e8 000002 78"),
     bytes.fromhex("0001 0003e8 000001 78 00"), bytes.fromhex("0001 0003")],
    ids=["empty-data", "truncated", "trailing", "short"],
)
def test_compressed_certificate_malformed_is_decode_error(body: bytes) -> None:
    """``compressed_certificate_message<1..2^24-1>``; trailing bytes are a syntax error too."""
    with pytest.raises(DecodeError):
        CompressedCertificate.decode(body)


# ================================================================== the server's certificate


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=[a.name for a in ALGORITHMS])
def test_server_certificate_compressed(algorithm: CertificateCompressionAlgorithm) -> None:
    """The client offers one algorithm; the server's Certificate goes out as a
    CompressedCertificate whose content is exactly the Certificate it replaces,
    and the server's Finished covers the CompressedCertificate as sent."""
    root, chain, key = two_level_chain()
    c, s, _, slog = compression_configs(client=(algorithm,))
    c.trust_store = TrustStore([root])
    s.certificate_chain, s.private_key = chain, key
    client, server, hello, flight = server_flight(c, s)

    # ClientHello: compress_certificate lists exactly what the client offered.
    ((_, ch_body),) = plaintext_messages(hello)
    exts = {e.type: e.data for e in ClientHello.decode(ch_body).extensions}
    assert X.decode_compress_certificate(exts[ExtensionType.compress_certificate]) == (algorithm,)

    secret = slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET")
    messages = protected_messages(flight, secret)
    assert [t for t, _ in messages] == [
        HandshakeType.encrypted_extensions, HandshakeType.compressed_certificate,
        HandshakeType.certificate_verify, HandshakeType.finished,
    ]
    cc = CompressedCertificate.decode(messages[1][1])
    expected = certificate_body(chain)
    assert cc.algorithm == algorithm
    assert cc.uncompressed_length == len(expected)
    assert library_decompress(algorithm, cc.compressed_certificate_message) == expected
    assert len(cc.compressed_certificate_message) < len(expected)

    # RFC 9846 §4.4.4 Finished over ClientHello..CertificateVerify as sent.
    suite = negotiated_suite(flight)
    (sh,) = [handshake_message(t, b) for t, b in plaintext_messages(flight) if t == HandshakeType.server_hello]
    transcript = handshake_message(HandshakeType.client_hello, ch_body) + sh
    transcript += b"".join(handshake_message(t, b) for t, b in messages[:3])
    finished_key = hkdf_expand_label(secret, b"finished", suite.hash_length, suite.hash_name)
    digest = hashes.Hash(suite.hash)
    digest.update(transcript)
    assert hmac.new(finished_key, digest.finalize(), suite.hash_name).digest() == messages[3][1]

    pair = Pair(client, server)
    client.receive_data(flight)
    pair.pump()
    done = handshake_event(pair.client_events)
    assert done.peer_certificate_compression == algorithm
    assert list(done.peer_certificates) == chain
    assert handshake_event(pair.server_events).local_certificate_compression == algorithm
    pair.client.send(b"ping")
    pair.pump()
    pair.server.send(b"pong")
    pair.pump()
    assert pair.received("server") == b"ping" and pair.received("client") == b"pong"


def test_server_uses_its_own_preference_among_the_clients_algorithms() -> None:
    c, s, _, _ = compression_configs(client=(ZLIB, BROTLI, ZSTD), server=(ZSTD, ZLIB))
    pair = connect(c, s)
    assert handshake_event(pair.client_events).peer_certificate_compression == ZSTD


@pytest.mark.parametrize(
    ("client", "server"),
    [((ZLIB,), (BROTLI, ZSTD)), ((), tuple(ALGORITHMS)), (tuple(ALGORITHMS), ())],
    ids=["nothing-in-common", "client-off", "server-off"],
)
def test_no_compression_without_a_common_algorithm(
    client: tuple[CertificateCompressionAlgorithm, ...], server: tuple[CertificateCompressionAlgorithm, ...]
) -> None:
    """The plain Certificate, and a ClientHello without the extension when the
    client turned compression off."""
    c, s, _, slog = compression_configs(client=client, server=server)
    client_conn, server_conn, hello, flight = server_flight(c, s)
    ((_, ch_body),) = plaintext_messages(hello)
    sent = {e.type for e in ClientHello.decode(ch_body).extensions}
    assert (ExtensionType.compress_certificate in sent) == bool(client)
    types = [t for t, _ in protected_messages(flight, slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"))]
    assert HandshakeType.certificate in types and HandshakeType.compressed_certificate not in types
    pair = Pair(client_conn, server_conn)
    client_conn.receive_data(flight)
    pair.pump()
    assert handshake_event(pair.client_events).peer_certificate_compression is None
    assert handshake_event(pair.server_events).local_certificate_compression is None


def test_unknown_algorithms_in_the_offer_are_ignored() -> None:
    def hook(exts: list[Extension]) -> list[Extension]:
        other = [e for e in exts if e.type != ExtensionType.compress_certificate]
        return [*other, Extension(ExtensionType.compress_certificate, X.encode_compress_certificate([0x4000, 0, ZLIB]))]

    c, s, _, _ = compression_configs(client_client_hello_hook=hook)
    pair = connect(c, s)
    assert handshake_event(pair.server_events).local_certificate_compression == ZLIB
    assert handshake_event(pair.client_events).peer_certificate_compression == ZLIB


def test_default_offers_every_installed_algorithm_zstd_first() -> None:
    assert Configuration().certificate_compression == (ZSTD, BROTLI, ZLIB)
    c, s, _ = configs()
    pair = connect(c, s)
    assert handshake_event(pair.client_events).peer_certificate_compression == ZSTD


def test_next_algorithm_when_the_preferred_one_does_not_shrink(monkeypatch: pytest.MonkeyPatch) -> None:
    """brotli can fail to shrink one small certificate: the server then tries
    the next algorithm of its preference that the client accepts."""
    certcompress._compress_cached.cache_clear()
    real = certcompress._compress

    def no_gain_with_brotli(algorithm: CertificateCompressionAlgorithm, data: bytes) -> bytes:
        return data + b"!" if algorithm == BROTLI else real(algorithm, data)

    monkeypatch.setattr(certcompress, "_compress", no_gain_with_brotli)
    c, s, _, _ = compression_configs(client=(ZLIB, BROTLI), server=(BROTLI, ZSTD, ZLIB))
    pair = connect(c, s)
    assert handshake_event(pair.client_events).peer_certificate_compression == ZLIB
    certcompress._compress_cached.cache_clear()


def test_not_compressed_when_it_would_not_be_smaller(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8879 makes compression a MAY: a "compressed" form that is not
    smaller (post-quantum chains barely compress) is not sent."""
    certcompress._compress_cached.cache_clear()
    monkeypatch.setattr(certcompress, "_compress", lambda algorithm, data: data + b"!")
    c, s, _, _ = compression_configs()
    pair = connect(c, s)
    assert handshake_event(pair.client_events).peer_certificate_compression is None
    certcompress._compress_cached.cache_clear()


def test_own_chain_is_compressed_once_per_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server compresses its chain once, not once per connection; a second
    algorithm is a second entry."""
    certcompress._compress_cached.cache_clear()
    calls: list[int] = []
    real = certcompress._compress

    def counting(algorithm: CertificateCompressionAlgorithm, data: bytes) -> bytes:
        calls.append(algorithm)
        return real(algorithm, data)

    monkeypatch.setattr(certcompress, "_compress", counting)
    c, s, _, _ = compression_configs(client=(ZSTD,))
    for _ in range(3):
        pair = connect(c, s)
        assert handshake_event(pair.client_events).peer_certificate_compression == ZSTD
    c.certificate_compression = (ZLIB,)
    for _ in range(2):
        pair = connect(c, s)
        assert handshake_event(pair.client_events).peer_certificate_compression == ZLIB
    assert calls == [ZSTD, ZLIB]
    certcompress._compress_cached.cache_clear()


# ================================================================== the client's certificate


def mutual_configs(
    algorithm: CertificateCompressionAlgorithm, **kwargs: object
) -> tuple[Configuration, Configuration, KeyLog, KeyLog]:
    c, s, clog, slog = compression_configs(client=(algorithm,), server=(algorithm,), **kwargs)
    # Leaf + intermediate: one small leaf with a random request context around
    # it may not shrink under brotli, and then goes out uncompressed.
    ca = make_ca("ecdsa-p256")
    client_leaf = make_leaf(make_intermediate(ca, "ecdsa-p256"), "ecdsa-p256", client=True)
    c.certificate_chain, c.private_key = client_leaf.chain, client_leaf.key
    s.trust_store = TrustStore([ca.cert])
    return c, s, clog, slog


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=[a.name for a in ALGORITHMS])
def test_client_certificate_compressed_in_the_handshake(algorithm: CertificateCompressionAlgorithm) -> None:
    """The server's CertificateRequest offers compression; the client's
    Certificate comes back compressed and verifies."""
    c, s, clog, slog = mutual_configs(algorithm, server_client_auth=ClientAuth.REQUIRED)
    client, server, _, flight = server_flight(c, s)
    messages = protected_messages(flight, slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"))
    (cr_body,) = [b for t, b in messages if t == HandshakeType.certificate_request]
    cr = decode_message(HandshakeType.certificate_request, cr_body)
    cr_exts = {e.type: e.data for e in cr.extensions}  # type: ignore[union-attr]
    assert X.decode_compress_certificate(cr_exts[ExtensionType.compress_certificate]) == (algorithm,)

    client.receive_data(flight)
    second = client.data_to_send()
    answer = protected_messages(second, clog.secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET"), negotiated_suite(flight))
    assert [t for t, _ in answer] == [
        HandshakeType.compressed_certificate, HandshakeType.certificate_verify, HandshakeType.finished,
    ]
    cc = CompressedCertificate.decode(answer[0][1])
    assert library_decompress(algorithm, cc.compressed_certificate_message) == certificate_body(c.certificate_chain)

    pair = Pair(client, server)
    server.receive_data(second)
    pair.pump()
    done = handshake_event(pair.server_events)
    assert done.client_authenticated
    assert done.peer_certificate_compression == algorithm
    assert list(done.peer_certificates) == c.certificate_chain
    assert handshake_event(pair.client_events).local_certificate_compression == algorithm


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=[a.name for a in ALGORITHMS])
def test_client_certificate_compressed_after_the_handshake(algorithm: CertificateCompressionAlgorithm) -> None:
    """Post-handshake authentication (RFC 9846 §4.6.2), twice: each
    CertificateRequest offers compression, each answer is compressed, and each
    Finished (over the request, the CompressedCertificate, CertificateVerify) verifies."""
    c, s, _, _ = mutual_configs(algorithm, client_post_handshake_auth=True)
    pair = connect(c, s)
    assert handshake_event(pair.server_events).peer_certificate_compression is None  # none asked for yet
    for _ in range(2):
        pair.server.request_client_authentication()
        pair.pump()
    authenticated = [e for e in pair.server_events if isinstance(e, PeerAuthenticated)]
    assert [e.certificate_compression for e in authenticated] == [algorithm, algorithm]
    assert list(authenticated[-1].peer_certificates) == c.certificate_chain
    pair.client.send(b"still fine")
    pair.pump()
    assert pair.received("server") == b"still fine"


def test_post_handshake_certificate_not_compressed_when_the_server_does_not_offer() -> None:
    c, s, _, _ = mutual_configs(ZLIB, client_post_handshake_auth=True)
    s.certificate_compression = ()
    pair = connect(c, s)
    pair.server.request_client_authentication()
    pair.pump()
    (event,) = [e for e in pair.server_events if isinstance(e, PeerAuthenticated)]
    assert event.certificate_compression is None


# ================================================================== failures, client side


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=[a.name for a in ALGORITHMS])
@pytest.mark.parametrize("delta", [-1, 1])
def test_uncompressed_length_mismatch_is_bad_certificate(algorithm: int, delta: int) -> None:
    """RFC 8879 §4: "If after decompression the specified length does not
    match the actual length ... bad_certificate"."""
    c, s, _, slog = compression_configs()
    body = server_chain_body(s)
    client, server, flight = tampered_server_flight(c, s, slog, compressed(algorithm, body, len(body) + delta))
    expect_alert(client, flight, A.bad_certificate, peer=server)


def test_algorithm_we_did_not_offer_is_bad_certificate() -> None:
    """RFC 8879 §4: the algorithm "MUST be one of the algorithms listed in the
    peer's compress_certificate extension"; one we did not list we cannot
    decompress (bad_certificate, §4), even one we could."""
    c, s, _, slog = compression_configs(client=(ZLIB,))
    body = server_chain_body(s)
    client, server, flight = tampered_server_flight(c, s, slog, compressed(BROTLI, body))
    expect_alert(client, flight, A.bad_certificate, peer=server, reason="did not offer")


def test_unknown_algorithm_is_bad_certificate() -> None:
    c, s, _, slog = compression_configs()
    body = server_chain_body(s)
    forged = CompressedCertificate(0x4000, len(body), zlib.compress(body)).encode()
    client, server, flight = tampered_server_flight(c, s, slog, forged)
    expect_alert(client, flight, A.bad_certificate, peer=server, reason="did not offer")


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=[a.name for a in ALGORITHMS])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "trailing-bytes"])
def test_data_that_does_not_decompress_is_bad_certificate(algorithm: int, damage: str) -> None:
    """RFC 8879 §4: "If the received CompressedCertificate message cannot be
    decompressed ... bad_certificate"; a stream followed by other bytes is not
    the compressed Certificate either."""
    c, s, _, slog = compression_configs()
    body = server_chain_body(s)
    data = library_compress(algorithm, body)
    data = {
        "garbage": b"\xff" * 64 + data[64:],
        "truncated": data[: len(data) // 2],
        "trailing-bytes": data + b"\x00",
    }[damage]
    forged = CompressedCertificate(algorithm, len(body), data).encode()
    client, server, flight = tampered_server_flight(c, s, slog, forged)
    expect_alert(client, flight, A.bad_certificate, peer=server)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=[a.name for a in ALGORITHMS])
@pytest.mark.parametrize(
    "inner", [b"\x00\x00\x00\x05hello", b"\x00\x00\x00\x05\x00\x00\x01\x30\x00", b"\x00\x00\x00"],
    ids=["not-entries", "truncated-entry", "too-short"],
)
def test_content_that_is_not_a_certificate_is_bad_certificate(algorithm: int, inner: bytes) -> None:
    """It decompresses, to the right length, but not to a Certificate message."""
    c, s, _, slog = compression_configs()
    forged = compressed(algorithm, inner)
    client, server, flight = tampered_server_flight(c, s, slog, forged)
    expect_alert(client, flight, A.bad_certificate, peer=server)


@pytest.mark.parametrize(
    "body", [bytes.fromhex("0001 000400 000000"), bytes.fromhex("0001 000400 000003 789c")],
    ids=["empty-data", "length-past-end"],
)
def test_malformed_compressed_certificate_is_decode_error(body: bytes) -> None:
    """The message itself does not parse (RFC 9846 §6.2 decode_error)."""
    c, s, _, slog = compression_configs()
    client, server, flight = tampered_server_flight(c, s, slog, body)
    expect_alert(client, flight, A.decode_error, peer=server)


def test_compressed_certificate_without_our_offer_is_unexpected_message() -> None:
    """The client offered no compression: a CompressedCertificate is a
    message it never asked for (RFC 9846 §4 unexpected_message)."""
    c, s, _, slog = compression_configs(client=())
    body = server_chain_body(s)
    client, server, flight = tampered_server_flight(c, s, slog, compressed(ZLIB, body))
    expect_alert(client, flight, A.unexpected_message, peer=server)


def test_compress_certificate_in_encrypted_extensions_is_illegal_parameter() -> None:
    """RFC 8879 §7: the extension belongs in ClientHello and CertificateRequest
    only (RFC 9846 §4.2: illegal_parameter where it is not allowed)."""
    c, s, _, slog = compression_configs()

    def edit(messages: list[Message]) -> list[Message]:
        out = []
        for t, b in messages:
            if t == HandshakeType.encrypted_extensions:
                ee = EncryptedExtensions.decode(b)
                extra = Extension(ExtensionType.compress_certificate, X.encode_compress_certificate([ZLIB]))
                b = EncryptedExtensions((*ee.extensions, extra)).encode()
            out.append((t, b))
        return out

    client, server, _, flight = server_flight(c, s)
    flight = rewrite_flight(flight, negotiated_suite(flight), slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), edit)
    expect_alert(client, flight, A.illegal_parameter, peer=server)


def test_empty_algorithm_list_in_certificate_request_is_decode_error() -> None:
    c, s, _, slog = mutual_configs(ZLIB, server_client_auth=ClientAuth.REQUIRED)

    def edit(messages: list[Message]) -> list[Message]:
        out = []
        for t, b in messages:
            if t == HandshakeType.certificate_request:
                cr = CertificateRequest.decode(b)
                assert ExtensionType.compress_certificate in {e.type for e in cr.extensions}
                b = CertificateRequest(cr.certificate_request_context, tuple(
                    Extension(e.type, b"\x00") if e.type == ExtensionType.compress_certificate else e
                    for e in cr.extensions
                )).encode()
            out.append((t, b))
        return out

    client, server, _, flight = server_flight(c, s)
    flight = rewrite_flight(flight, negotiated_suite(flight), slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), edit)
    expect_alert(client, flight, A.decode_error, peer=server)


# ================================================================== limits: zip bombs


def test_uncompressed_length_over_our_limit_is_refused_before_decompressing(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8879 §5: the same limit as an uncompressed message (our
    max_handshake_message_size), judged from uncompressed_length alone --
    the decompressor never runs -- with the alert an uncompressed message that
    long gets (illegal_parameter)."""
    c, s, _, slog = compression_configs(client_max_handshake_message_size=4096)
    ran: list[int] = []
    for algorithm in ALGORITHMS:
        real = certcompress._DECOMPRESSORS[algorithm]
        monkeypatch.setitem(
            certcompress._DECOMPRESSORS, algorithm,
            lambda data, expected, real=real: ran.append(expected) or real(data, expected),
        )
    big = b"\x00" + (5000 - 4).to_bytes(3, "big") + b"\x00" * (5000 - 4)  # 5000 bytes
    client, server, flight = tampered_server_flight(c, s, slog, compressed(ZLIB, big))
    expect_alert(client, flight, A.illegal_parameter, peer=server, reason="exceeds the limit of 4096")
    assert ran == []


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=[a.name for a in ALGORITHMS])
def test_zip_bomb_costs_nothing(algorithm: int) -> None:
    """8 MiB of zeros that claim to be a 2 KB Certificate: refused with
    bad_certificate, quickly, without the 8 MiB ever being produced."""
    bomb_size = 8 << 20
    zeros = bytes(bomb_size)
    if algorithm == ZLIB:
        data = zlib.compress(zeros, 9)
    elif algorithm == BROTLI:
        data = brotli.compress(zeros, quality=1)
    else:
        data = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(zeros)
    del zeros
    assert len(data) < 9000  # fits one record, so the peer really sends it
    c, s, _, slog = compression_configs()
    forged = CompressedCertificate(algorithm, 2000, data).encode()
    client, server, flight = tampered_server_flight(c, s, slog, forged)
    tracemalloc.start()
    started = time.monotonic()
    try:
        expect_alert(client, flight, A.bad_certificate, peer=server)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated while refusing the bomb"
    assert elapsed < 1.0


def test_zstd_frame_declaring_a_huge_size_is_refused_before_decoding() -> None:
    """zstd frames may carry their content size; one that disagrees with
    uncompressed_length is refused from the header, before any allocation."""
    c, s, _, slog = compression_configs()
    data = zstandard.ZstdCompressor(level=1).compress(bytes(4 << 20))
    assert zstandard.frame_content_size(data) == 4 << 20
    forged = CompressedCertificate(ZSTD, 2000, data).encode()
    client, server, flight = tampered_server_flight(c, s, slog, forged)
    expect_alert(client, flight, A.bad_certificate, peer=server, reason="declares")


# ================================================================== failures, server side


def tampered_client_flight(
    c: Configuration, s: Configuration, clog: KeyLog, body: bytes, msg_type: int = HandshakeType.compressed_certificate,
) -> tuple[Connection, Connection, bytes]:
    client, server, _, flight = server_flight(c, s)
    client.receive_data(flight)
    second = client.data_to_send()
    secret = clog.secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET")
    return client, server, rewrite_flight(second, negotiated_suite(flight), secret, replace_certificate(body, msg_type))


def test_client_compressed_certificate_length_mismatch_is_bad_certificate() -> None:
    c, s, clog, _ = mutual_configs(ZSTD, server_client_auth=ClientAuth.REQUIRED)
    body = certificate_body(c.certificate_chain)
    client, server, flight = tampered_client_flight(c, s, clog, compressed(ZSTD, body, len(body) - 1))
    expect_alert(server, flight, A.bad_certificate, peer=client)


def test_client_compressed_certificate_in_an_algorithm_not_offered_is_bad_certificate() -> None:
    c, s, clog, _ = mutual_configs(ZSTD, server_client_auth=ClientAuth.REQUIRED)
    body = certificate_body(c.certificate_chain)
    client, server, flight = tampered_client_flight(c, s, clog, compressed(ZLIB, body))
    expect_alert(server, flight, A.bad_certificate, peer=client, reason="did not offer")


def test_client_compressed_certificate_without_the_servers_offer_is_unexpected_message() -> None:
    """The server's CertificateRequest offered no compression."""
    c, s, clog, _ = mutual_configs(ZLIB, server_client_auth=ClientAuth.REQUIRED)
    s.certificate_compression = ()
    body = certificate_body(c.certificate_chain)
    client, server, flight = tampered_client_flight(c, s, clog, compressed(ZLIB, body), HandshakeType.compressed_certificate)
    expect_alert(server, flight, A.unexpected_message, peer=client)


def test_empty_algorithm_list_in_client_hello_is_decode_error() -> None:
    """``algorithms<2..2^8-2>``: an empty list does not parse (RFC 9846 §4.2)."""
    def hook(exts: list[Extension]) -> list[Extension]:
        return [e if e.type != ExtensionType.compress_certificate else Extension(e.type, b"\x00") for e in exts]

    c, s, _, _ = compression_configs(client_client_hello_hook=hook)
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    expect_alert(server, client.data_to_send(), A.decode_error, peer=client)


def test_client_hello_extension_is_checked_even_with_compression_off() -> None:
    """A server that compresses nothing still parses the extension it knows."""

    def hook(exts: list[Extension]) -> list[Extension]:
        return [*exts, Extension(ExtensionType.compress_certificate, b"\x01\x00")]  # odd length

    c, s, _, _ = compression_configs(client=(), server=(), client_client_hello_hook=hook)
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    expect_alert(server, client.data_to_send(), A.decode_error, peer=client)


# ================================================================== configuration


def test_configuration_rejects_unknown_algorithms() -> None:
    with pytest.raises(ConfigurationError, match="unknown certificate compression algorithm"):
        Configuration(certificate_compression=(7,)).validate()  # type: ignore[arg-type]


def test_configuration_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(certcompress, "_brotli", None)
    assert certcompress.available_algorithms() == (ZSTD, ZLIB)
    with pytest.raises(ConfigurationError, match=r"longtls\[compression\]"):
        Configuration(certificate_compression=(BROTLI,)).validate()
    # What was never offered is refused (bad_certificate), not decompressed.
    message = CompressedCertificate(BROTLI, 10, b"\x00")
    with pytest.raises(ProtocolError) as info:
        certcompress.decompress_certificate(message, (BROTLI, ZLIB), 1000)
    assert info.value.alert is A.bad_certificate


# ================================================================== command line


@pytest.fixture
def echo_server(tmp_pki_files: Callable[..., PkiFiles]) -> Iterator[tuple[PkiFiles, int]]:
    """``longtls serve --echo`` with its default compression (all installed)."""
    files = tmp_pki_files("ecdsa-p256")
    port = free_port()
    args = [
        *LONGTLS, "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
        "--port", str(port), "--echo",
    ]
    with start_process(args, ready_pattern=r"^longtls: serving \(echo\) on "):
        yield files, port


@pytest.mark.parametrize(
    ("flags", "expected"),
    [((), "zstd"), (("--compress-cert", "zlib,zstd"), "zstd"), (("--compress-cert", "ZLIB"), "zlib"),
     (("--no-compress-cert",), None)],
    ids=["default", "server-chooses", "zlib", "off"],
)
def test_connect_summary_says_how_the_certificate_arrived(
    echo_server: tuple[PkiFiles, int], flags: tuple[str, ...], expected: str | None
) -> None:
    files, port = echo_server
    result = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json", *flags, input="hi\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    handshake = summary(result.stderr)[0]
    assert handshake["event"] == "handshake"
    assert handshake.get("peer_certificate_compression") == expected


def test_serve_compress_cert_flag_limits_what_the_server_uses(tmp_pki_files: Callable[..., PkiFiles]) -> None:
    files = tmp_pki_files("ecdsa-p256")
    port = free_port()
    args = [
        *LONGTLS, "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
        "--port", str(port), "--www", "--compress-cert", "zlib",
    ]
    with start_process(args, ready_pattern=r"^longtls: serving \(www\) on "):
        result = longtls(
            "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json",
            input="GET / HTTP/1.0\r\n\r\n",
        )
    assert result.returncode == 0, result.stderr
    assert summary(result.stderr)[0]["peer_certificate_compression"] == "zlib"
    assert "Certificate compression: zlib" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [(("--compress-cert", "lzma"), "unknown algorithm 'lzma'"),
     (("--compress-cert", "zlib", "--no-compress-cert"), "not allowed with argument")],
    ids=["unknown", "both"],
)
def test_compress_cert_usage_errors(flags: tuple[str, ...], fragment: str) -> None:
    result = longtls("connect", f"{LOOPBACK}:1", *flags)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_a_chain_opened_before_is_refused_when_its_algorithm_was_not_offered() -> None:
    """A client remembers the compressed chains it opened (issue 16) under what
    it offered too: bytes one client opened are still bad_certificate for a
    client that did not offer their algorithm (RFC 8879 §4)."""
    c, s, _, slog = compression_configs(client=(ZLIB, BROTLI))
    body = compressed(BROTLI, server_chain_body(s))
    client, _, flight = tampered_server_flight(c, s, slog, body)
    with pytest.raises(ProtocolError) as info:
        client.receive_data(flight)  # opened; the CertificateVerify then fails (transcript changed)
    assert info.value.alert is A.decrypt_error, str(info.value)
    c.certificate_compression = (ZLIB,)
    client, server, flight = tampered_server_flight(c, s, slog, body)
    expect_alert(client, flight, A.bad_certificate, peer=server, reason="did not offer")
