"""Hostile peers: limits not covered by test_limits.py, and a live asyncio
server under abuse.

Part 1 (sans-I/O, fast): each limit exceeded ends the connection with the
alert the spec names, and stays within bounds before it is reached --
max_handshake_message_size against a huge Certificate, the largest record,
bytes buffered before they are processed, max_empty_records, hostile
certificates, eku_max_peer_updates for every EKU profile.

Part 2 (``longtls.aio.start_server`` on 127.0.0.1, in a process of its own;
attackers on raw sockets from this process): slowloris, a thousand half-open
connections, key update floods (EKU and classic), garbage, and a client
that vanishes in the middle of an update.  Throughout, a well-behaved
client (another process) completes handshakes, echoes and key updates; its
latency under abuse is printed next to its latency without it (and kept in
the pytest cache under ``longtls/abuse``).  The only timed assertions are
generous sanity bounds.

This file is also the server and the good client::

    python tests/unit/test_abuse.py serve --pki DIR [--handshake-timeout S] [--eku-min-interval S]
    python tests/unit/test_abuse.py client --pki DIR --port N --rounds N [--classic]
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make `helpers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from helpers.pair import Pair, configs, connect
from helpers.pki import Credential, generate_key, make_ca, make_leaf
from helpers.tamper import (
    KeyLog,
    negotiated_suite,
    rewrite_flight,
    seal,
    split_records,
)
from longtls.config import Configuration
from longtls.connection import Connection
from longtls.constants import (
    MAX_CIPHERTEXT_EXPANSION,
    MAX_PLAINTEXT,
    AlertDescription,
    ContentType,
    HandshakeType,
)
from longtls.errors import RemoteProtocolError
from longtls.events import ConnectionClosed, Event
from longtls.handshake.eku_profiles import PROFILES
from longtls.record.tls import HEADER_LENGTH, plaintext_record
from longtls.wire.messages import Certificate, CertificateEntry, encode_handshake

A = AlertDescription
REPO = Path(__file__).resolve().parent.parent.parent


def closed_alert(events: list[Event]) -> AlertDescription | None:
    closed = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(closed) == 1, closed
    return closed[0].alert


def big_leaf(ca: Credential, extension_bytes: int) -> Credential:
    """A server certificate padded with a non-critical private extension."""
    key = generate_key("ecdsa-p256")
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x04\x82" + (extension_bytes - 4).to_bytes(2, "big")
                + bytes(extension_bytes - 4)
            ),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Credential("ecdsa-p256", key, cert, ca)


# ===========================================================================
# Part 1: limits, sans-I/O
# ===========================================================================


@pytest.fixture(scope="module")
def huge_chain() -> tuple[Credential, Credential]:
    ca = make_ca("ecdsa-p256")
    return ca, big_leaf(ca, 40_000)


def test_huge_certificate_within_the_default_limit(huge_chain: tuple[Credential, Credential]) -> None:
    """A 40 KB certificate spans three records; the default limit (128 KiB) takes it."""
    ca, leaf = huge_chain
    c, s, _ = configs(ca=ca)
    s.certificate_chain, s.private_key = leaf.chain, leaf.key
    pair = connect(c, s)
    assert pair.client.handshake_complete and pair.server.handshake_complete


def test_huge_certificate_over_max_handshake_message_size(huge_chain: tuple[Credential, Credential]) -> None:
    """max_handshake_message_size: the client refuses the Certificate from its
    header alone (illegal_parameter), before buffering its 40 KB."""
    ca, leaf = huge_chain
    # Uncompressed (a compressed one is bounded by its uncompressed_length:
    # tests/unit/test_cert_compression.py).
    c, s, _ = configs(ca=ca, client_max_handshake_message_size=16_384, server_certificate_compression=())
    s.certificate_chain, s.private_key = leaf.chain, leaf.key
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    server.receive_data(client.data_to_send())
    flight = server.data_to_send()
    records = split_records(flight)
    assert sum(r.protected for r in records) >= 3  # the Certificate spans records
    # Only the records up to the first one holding the Certificate header.
    first_protected = next(i for i, r in enumerate(records) if r.protected)
    head = b"".join(r.raw for r in records[: first_protected + 1])
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(head)
    assert info.value.alert == A.illegal_parameter
    assert "exceeds the limit of 16384" in str(info.value)
    assert closed_alert(client.events()) == A.illegal_parameter
    assert len(client._reassembler._partial) == 0  # nothing of it was kept


def test_forged_handshake_length_is_refused_at_once() -> None:
    """A ClientHello header claiming 16 MiB: illegal_parameter from 4 bytes."""
    _, s, _ = configs()
    server = Connection(s)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(plaintext_record(ContentType.HANDSHAKE, b"\x01\xff\xff\xff", 0x0301))
    assert info.value.alert == A.illegal_parameter


def test_huge_client_certificate_over_the_servers_limit(huge_chain: tuple[Credential, Credential]) -> None:
    """The same limit on the server side, against a client's Certificate (mTLS)."""
    from longtls.config import ClientAuth

    ca, _ = huge_chain
    c, s, _ = configs(
        ca=ca, server_client_auth=ClientAuth.REQUIRED, server_max_handshake_message_size=8_192,
        client_certificate_compression=(),
    )
    client_leaf = big_leaf(ca, 20_000)
    c.certificate_chain, c.private_key = client_leaf.chain, client_leaf.key
    pair = Pair(Connection(c), Connection(s))
    pair.client.start_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        pair.pump()
    assert info.value.alert == A.illegal_parameter
    assert closed_alert(pair.server.events() + pair.server_events) == A.illegal_parameter


def test_largest_record() -> None:
    """2^14 bytes of content (+ type) is the largest protected record accepted;
    one byte of padding more is record_overflow (RFC 9846 §5.2, §5.4)."""
    log = KeyLog()
    c, s, _ = configs(server_keylog=log)
    pair = connect(c, s)
    suite = pair.server.read_protection.suite  # type: ignore[union-attr]
    secret = log.secret("CLIENT_TRAFFIC_SECRET_0")
    largest = seal(suite, secret, ContentType.APPLICATION_DATA, bytes(MAX_PLAINTEXT), sequence_number=0)
    assert len(largest) == HEADER_LENGTH + MAX_PLAINTEXT + 1 + 16
    pair.server.receive_data(largest)
    assert sum(len(e.data) for e in pair.server.events() if hasattr(e, "data")) == MAX_PLAINTEXT
    too_big = seal(suite, secret, ContentType.APPLICATION_DATA, bytes(MAX_PLAINTEXT), sequence_number=1, padding=1)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(too_big)
    assert info.value.alert == A.record_overflow


def test_ciphertext_length_over_the_maximum_is_refused_from_the_header() -> None:
    """2^14 + 256 is the largest TLSCiphertext length; one more is refused
    from the 5-byte header, before the body is buffered."""
    pair = connect(*configs()[:2])
    ok_header = bytes((ContentType.APPLICATION_DATA, 3, 3)) + (MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION).to_bytes(2, "big")
    pair.server.receive_data(ok_header)  # waits for the body
    assert not pair.server.is_closed
    pair2 = connect(*configs()[:2])
    bad_header = bytes((ContentType.APPLICATION_DATA, 3, 3)) + (MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION + 1).to_bytes(2, "big")
    with pytest.raises(RemoteProtocolError) as info:
        pair2.server.receive_data(bad_header)
    assert info.value.alert == A.record_overflow


def test_unprocessed_bytes_are_bounded() -> None:
    """What a peer can make us hold before processing: one partial record
    (at most 5 + 2^14 + 256 bytes) and one partial handshake message (at most
    max_handshake_message_size), whatever it sends."""
    pair = connect(*configs()[:2])
    limit = HEADER_LENGTH + MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION
    almost = bytes((ContentType.APPLICATION_DATA, 3, 3)) + (limit - HEADER_LENGTH).to_bytes(2, "big")
    pair.server.receive_data(almost + bytes(limit - HEADER_LENGTH - 1))  # one byte short
    assert pair.server._records.reader.buffered == limit - 1
    # Once complete, the record is judged (here: over our record_size_limit).
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(b"\x00")
    assert info.value.alert == A.record_overflow
    # A closed connection ignores input entirely: nothing more is buffered.
    held = pair.server._records.reader.buffered
    pair.server.receive_data(bytes(10_000_000))
    assert pair.server._records.reader.buffered == held
    # Before the handshake, a handshake message can be held up to
    # max_handshake_message_size, spread over at most max_handshake_records records.
    _, s, _ = configs(server_max_handshake_message_size=1000, server_max_handshake_records=8)
    server = Connection(s)
    header = b"\x01" + (1000).to_bytes(3, "big")
    server.receive_data(plaintext_record(ContentType.HANDSHAKE, header + bytes(100), 0x0301))
    for _ in range(7):
        server.receive_data(plaintext_record(ContentType.HANDSHAKE, bytes(100)))
    assert len(server._reassembler._partial) == 804
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(plaintext_record(ContentType.HANDSHAKE, bytes(1)))
    assert info.value.alert == A.unexpected_message  # the 9th record


def test_empty_application_data_records() -> None:
    """max_empty_records in a row is tolerated (RFC 9846 §5.1 allows empty
    application data, e.g. as traffic analysis cover); one more is
    unexpected_message, and real data resets the count."""
    pair = connect(*configs(server_max_empty_records=8)[:2])
    for _ in range(3):
        for _ in range(8):
            pair.client._records.send(ContentType.APPLICATION_DATA, b"")
        pair.client.send(b"x")
        pair.server.receive_data(pair.client.data_to_send())
    assert not pair.server.is_closed
    for _ in range(9):
        pair.client._records.send(ContentType.APPLICATION_DATA, b"")
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.alert == A.unexpected_message


def test_change_cipher_spec_flood() -> None:
    """Middlebox compatibility tolerates dummy change_cipher_spec records
    during the handshake, but not without end."""
    c, s, _ = configs()
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    server.receive_data(client.data_to_send())
    ccs = plaintext_record(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(ccs * 1000)
    assert info.value.alert == A.unexpected_message


def _corrupt(der: bytes, field: str) -> bytes:
    """The certificate with one field made invalid.

    issuer/subject: invalid UTF-8 in a UTF8String -- ``load_der_x509_certificate``
    still accepts it (cryptography parses names lazily), reading the name
    raises ValueError.  version: v42 -- ``load_der_x509_certificate`` raises
    ``x509.InvalidVersion``, which is not a ValueError.
    """
    if field == "version":
        index = der.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT Version v3
        return der[: index + 4] + b"\x29" + der[index + 5 :]
    if field == "extension":
        # subjectAltName (2.5.29.17): its OCTET STRING wraps a SEQUENCE (0x30);
        # a SET (0x31) there parses only when the extension is read.
        index = der.index(b"\x06\x03\x55\x1d\x11")
        inner = der.index(b"\x30", index + 5)
        return der[:inner] + b"\x31" + der[inner + 1 :]
    value = b"longtls test"  # in the issuer CN (first) and the subject O (last)
    index = der.index(value) if field == "issuer" else der.rindex(value)
    return der[:index] + b"\x8e\x90\x91\x98" + der[index + 4 :]


@pytest.mark.parametrize("field", ["issuer", "subject", "version", "extension"])
def test_corrupt_certificate_is_bad_certificate(field: str) -> None:
    """A certificate whose outer DER parses but whose fields do not is
    bad_certificate (RFC 9846 §6.2: "a certificate was corrupt"), never
    internal_error.  Found by the fuzzer (tests/fuzz, target client)."""
    log = KeyLog()
    # The edit rewrites a plain Certificate: no RFC 8879 compression here.
    c, s, _ = configs(server_keylog=log, server_certificate_compression=())
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    server.receive_data(client.data_to_send())
    flight = server.data_to_send()

    def edit(messages: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        out = []
        for msg_type, body in messages:
            if msg_type == HandshakeType.certificate:
                cert = Certificate.decode(body)
                leaf = cert.certificate_list[0]
                entry = CertificateEntry(_corrupt(leaf.cert_data, field), leaf.extensions)
                body = Certificate(cert.certificate_request_context, (entry,)).encode()
            out.append((msg_type, body))
        return out

    tampered = rewrite_flight(flight, negotiated_suite(flight), log.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), edit)
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(tampered)
    assert info.value.alert == A.bad_certificate, str(info.value)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_eku_max_peer_updates_is_enforced(profile: str) -> None:
    """eku_max_peer_updates: beyond it the peer's requests are not answered
    (draft-05: "rejected"; draft-13 and draft-2025-10: deferred for good,
    EKU draft-13 §11.3), the connection keeps working under the current keys,
    and no timer is left firing for the request that will never be answered."""
    clock = [time.time()]
    c, s, _ = configs(
        client_eku_profile=profile, server_eku_profile=profile, server_eku_max_peer_updates=2,
        server_now=lambda: clock[0], client_now=lambda: clock[0],
    )
    pair = connect(c, s)
    for _ in range(2):
        clock[0] += 1
        pair.client.extended_key_update()
        pair.pump()
    assert pair.server.key_generation == 2
    clock[0] += 1
    pair.client.extended_key_update()
    pair.pump()
    clock[0] += 3600
    pair.server.handle_timer()
    pair.pump()
    assert pair.server.key_generation == 2, "the server answered an update beyond eku_max_peer_updates"
    timer = pair.server.get_timer()
    assert timer is None or timer > clock[0], "a timer is left firing for an update never answered"
    pair.client.send(b"still")
    pair.server.send(b"working")
    pair.pump()
    assert pair.received("server").endswith(b"still") and pair.received("client").endswith(b"working")


def test_classic_key_update_flood_with_answers_requested() -> None:
    """KeyUpdate(update_requested) in a tight loop: each costs us an answer,
    so max_peer_key_updates_per_second cuts it off (unexpected_message)."""
    c, s, _ = configs(client_extended_key_update=False, server_extended_key_update=False)
    pair = connect(c, s)
    flood = b""
    for _ in range(200):
        pair.client.update_keys(request_peer_update=True)
        flood += pair.client.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(flood)
    assert info.value.alert == A.unexpected_message
    answers = [r for r in split_records(pair.server.data_to_send()) if r.protected]
    assert len(answers) <= s.max_peer_key_updates_per_second + 1  # answers, then the alert


@pytest.mark.parametrize("profile", list(PROFILES))
def test_eku_request_flood_without_waiting(profile: str) -> None:
    """A peer that sends request after request without waiting for the
    answers is cut off at the second (unexpected_message, draft-13 §11.3);
    the server did at most one key exchange for it."""
    c, s, _ = configs(client_eku_profile=profile, server_eku_profile=profile)
    pair = connect(c, s)
    codec = PROFILES[profile].codec
    eku = pair.client.eku
    assert eku is not None
    flood = b""
    for _ in range(50):
        share = eku.group.generate()
        pair.client.queue_handshake(codec.request(eku.group.code, share.public).encode())
        flood += pair.client.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(flood)
    assert info.value.alert == A.unexpected_message


# ===========================================================================
# Part 2: the asyncio server under abuse
# ===========================================================================

SERVER_HANDSHAKE_TIMEOUT = 3.0
EKU_MIN_INTERVAL = 0.05
GOOD_ROUNDS = 30
SANITY_SECONDS = 10.0  # generous: a good round takes ~10 ms on an idle machine


def _load_pki(directory: Path) -> tuple[Configuration, Configuration]:
    server = Configuration(is_client=False)
    server.load_cert_chain(directory / "server-chain.pem", directory / "server.key")
    client = Configuration(is_client=True, server_name="localhost")
    client.load_verify_locations(directory / "ca.pem")
    return client, server


async def _serve(args: Any) -> None:
    """The server process: echo, EKU paced by --eku-min-interval, stats on SIGTERM."""
    from longtls import aio

    _, config = _load_pki(Path(args.pki))
    config.eku_min_interval = args.eku_min_interval
    config.handshake_timeout = args.handshake_timeout
    stats: dict[str, Any] = {"handshakes": 0, "closed": {}, "handler_errors": 0}

    def on_event(event: Event) -> None:
        if isinstance(event, ConnectionClosed):
            key = event.alert.name if event.alert is not None else "clean"
            stats["closed"][key] = stats["closed"].get(key, 0) + 1

    async def echo(reader: Any, writer: Any) -> None:
        stats["handshakes"] += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except Exception:
            stats["handler_errors"] += 1
        finally:
            writer.close()

    server = await aio.start_server(
        echo, "127.0.0.1", 0, config, aio.StreamOptions(event_handler=on_event), backlog=2048,
    )
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "fds": _fd_count()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps({**stats, "fds": _fd_count()}), flush=True))
    await stop.wait()
    server.close()
    print(json.dumps({**stats, "fds": _fd_count()}), flush=True)


async def _good_client(args: Any) -> None:
    """The well-behaved client: per round, connect, echo, update keys, echo, close."""
    from longtls import aio

    config, _ = _load_pki(Path(args.pki))
    config.extended_key_update = not args.classic
    times: list[dict[str, float]] = []
    for i in range(args.rounds):
        t0 = time.perf_counter()
        reader, writer = await aio.connect("127.0.0.1", args.port, config)
        t1 = time.perf_counter()
        payload = f"round {i} ".encode() * 100
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        generation = await writer.update_keys()
        assert generation >= 1
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        t2 = time.perf_counter()
        writer.close()
        await writer.wait_closed()
        times.append({"handshake": t1 - t0, "round": t2 - t0})
    print(json.dumps(times), flush=True)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    fds_at_start: int

    def stats(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGUSR1)
        assert self.proc.stdout is not None
        return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return dict(json.loads(out.strip().splitlines()[-1]))


@dataclass
class Latencies:
    results: dict[str, dict[str, float]] = field(default_factory=dict)

    def record(self, name: str, baseline: list[dict[str, float]], abused: list[dict[str, float]]) -> str:
        def med(rounds: list[dict[str, float]], key: str) -> float:
            return 1000 * statistics.median(r[key] for r in rounds)

        def worst(rounds: list[dict[str, float]], key: str) -> float:
            return 1000 * max(r[key] for r in rounds)

        self.results[name] = {
            "baseline_round_ms": med(baseline, "round"), "abused_round_ms": med(abused, "round"),
            "baseline_worst_ms": worst(baseline, "round"), "abused_worst_ms": worst(abused, "round"),
            "baseline_handshake_ms": med(baseline, "handshake"),
            "abused_handshake_ms": med(abused, "handshake"),
        }
        r = self.results[name]
        return (
            f"{name:28s} round median {r['baseline_round_ms']:7.1f} ms -> {r['abused_round_ms']:7.1f} ms"
            f"   worst {r['baseline_worst_ms']:7.1f} -> {r['abused_worst_ms']:7.1f} ms"
            f"   handshake {r['baseline_handshake_ms']:6.1f} -> {r['abused_handshake_ms']:6.1f} ms"
        )


@pytest.fixture(scope="module")
def abuse_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("abuse-pki")
    ca = make_ca("ecdsa-p256")
    leaf = make_leaf(ca, "ecdsa-p256")
    leaf.write_pem(directory, "server")
    return directory


@pytest.fixture(scope="module")
def latencies(request: pytest.FixtureRequest) -> Iterator[Latencies]:
    table = Latencies()
    yield table
    if table.results:
        request.config.cache.set("longtls/abuse", table.results)


@pytest.fixture(scope="module", autouse=True)
def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@contextlib.contextmanager
def server_process(pki: Path, *, handshake_timeout: float = SERVER_HANDSHAKE_TIMEOUT) -> Iterator[ServerProcess]:
    cmd = [sys.executable, __file__, "serve", "--pki", str(pki),
           "--handshake-timeout", str(handshake_timeout), "--eku-min-interval", str(EKU_MIN_INTERVAL)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"server did not start: {proc.communicate(timeout=10)[1]}")
        hello = json.loads(line)
        yield ServerProcess(proc, hello["port"], hello["fds"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def good_client(pki: Path, port: int, *, rounds: int = GOOD_ROUNDS, classic: bool = False) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "client", "--pki", str(pki), "--port", str(port), "--rounds", str(rounds)]
    if classic:
        cmd.append("--classic")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def finish_good_client(proc: subprocess.Popen[str], timeout: float) -> list[dict[str, float]]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the good client did not finish within {timeout:g} s: {err[-2000:]}") from None
    assert proc.returncode == 0, f"the good client failed: {err[-3000:]}"
    rounds = list(json.loads(out.strip().splitlines()[-1]))
    assert all(r["round"] < SANITY_SECONDS for r in rounds), rounds
    return rounds


def measure(
    pki: Path, server: ServerProcess, attack: Callable[[asyncio.Event], Any], *, classic: bool = False
) -> tuple[list[dict[str, float]], list[dict[str, float]], Any]:
    """Good client alone, then again while ``attack`` runs; returns both and the attack's result."""
    baseline = finish_good_client(good_client(pki, server.port, classic=classic), 60)

    async def run() -> tuple[list[dict[str, float]], Any]:
        stop = asyncio.Event()
        task = asyncio.ensure_future(attack(stop))
        await asyncio.sleep(0.5)  # let the abuse build up
        proc = good_client(pki, server.port, classic=classic)
        loop = asyncio.get_running_loop()
        rounds = await loop.run_in_executor(None, finish_good_client, proc, 60 + GOOD_ROUNDS * SANITY_SECONDS)
        stop.set()
        return rounds, await task

    abused, result = asyncio.run(run())
    return baseline, abused, result


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  abuse latency: {line}", flush=True)


async def _read_until_closed(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or ``timeout`` passes (False)."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
        return data, True
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        return data, True


def _alerts_in(data: bytes) -> list[int]:
    """Plaintext alert descriptions in a server's byte stream (before keys)."""
    out, pos = [], 0
    while pos + 5 <= len(data):
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if data[pos] == ContentType.ALERT and length == 2 and pos + 7 <= len(data):
            out.append(data[pos + 6])
        pos += 5 + length
    return out


def _client_hello() -> bytes:
    client = Connection(Configuration(is_client=True, server_name="localhost", verify_peer=False))
    client.start_handshake()
    return client.data_to_send()


@pytest.mark.slow
def test_slowloris(abuse_pki: Path, latencies: Latencies, capsys: pytest.CaptureFixture[str]) -> None:
    """200 connections each sending a ClientHello one byte every 100 ms: the
    server cuts each at its handshake timeout; the good client is served."""
    hello = _client_hello()
    outcome: dict[str, int] = {"cut": 0, "survived": 0, "refused": 0}

    async def loris(stop: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            outcome["refused"] += 1
            return
        give_up = time.monotonic() + SERVER_HANDSHAKE_TIMEOUT + 5
        try:
            for byte in hello:
                if reader.at_eof() or time.monotonic() > give_up:
                    break
                writer.write(bytes((byte,)))
                await writer.drain()
                await asyncio.sleep(0.1)
            _, closed = await _read_until_closed(reader, max(0.1, give_up - time.monotonic()))
            outcome["cut" if closed else "survived"] += 1
        except (ConnectionResetError, BrokenPipeError):
            outcome["cut"] += 1
        finally:
            writer.close()

    async def attack(stop: asyncio.Event) -> None:
        await asyncio.gather(*(loris(stop) for _ in range(200)))

    with server_process(abuse_pki) as server:
        baseline, abused, _ = measure(abuse_pki, server, attack)
        stats = server.stop()
    report(capsys, latencies.record("slowloris (200 conns)", baseline, abused))
    assert outcome["cut"] == 200, outcome  # every one was closed by the server's handshake timeout
    assert stats["handshakes"] == 2 * GOOD_ROUNDS


@pytest.mark.slow
def test_thousand_half_open_connections(
    abuse_pki: Path, latencies: Latencies, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,000 TCP connections that never send a byte: each is closed after the
    handshake timeout, none leaks a descriptor, the good client is served."""
    socks: list[socket.socket] = []

    async def attack(stop: asyncio.Event) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        for _ in range(1000):
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", server.port))
            socks.append(s)
        await stop.wait()
        # After the handshake timeout every one must have been closed by the server.
        deadline = time.monotonic() + SERVER_HANDSHAKE_TIMEOUT + 10
        open_ones = list(socks)
        while open_ones and time.monotonic() < deadline:
            still = []
            for s in open_ones:
                try:
                    while s.recv(4096):  # whatever the server sent before closing
                        pass
                except BlockingIOError:
                    still.append(s)  # nothing yet: still open
                except ConnectionResetError:
                    pass
                # b"" (EOF) or a reset: closed by the server
            open_ones = still
            await asyncio.sleep(0.2)
        return {"still_open": len(open_ones)}

    with server_process(abuse_pki) as server:
        try:
            baseline, abused, result = measure(abuse_pki, server, attack)
            stats = server.stats()
        finally:
            for s in socks:
                s.close()
        time.sleep(0.5)
        final = server.stop()
    report(capsys, latencies.record("1000 half-open conns", baseline, abused))
    assert result["still_open"] == 0, result
    assert stats["handshakes"] == 2 * GOOD_ROUNDS
    assert final["fds"] <= server.fds_at_start + 2, final  # nothing leaked


class _TLSAttacker:
    """A longtls client on a raw asyncio stream, for misbehaving on purpose."""

    def __init__(self, config: Configuration) -> None:
        self.conn = Connection(config)
        self.events: list[Event] = []
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.conn.start_handshake()
        await self.flush()
        while not self.conn.handshake_complete:
            await self.receive_once(10)
        await self.flush()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def receive_once(self, timeout: float) -> bool:
        async with asyncio.timeout(timeout):
            data = await self.reader.read(65536)
        if not data:
            return False
        try:
            self.conn.receive_data(data)
        finally:
            self.events += self.conn.events()
        return True

    def closed_by_peer(self) -> AlertDescription | None:
        closed = [e for e in self.events if isinstance(e, ConnectionClosed)]
        return closed[0].alert if closed and closed[0].by_peer else None


@pytest.mark.slow
def test_classic_key_update_flood(abuse_pki: Path, latencies: Latencies, capsys: pytest.CaptureFixture[str]) -> None:
    """A client without EKU sends KeyUpdate(update_requested) as fast as it
    can: the server cuts it off (unexpected_message) at
    max_peer_key_updates_per_second; the good client (classic too) is served."""
    client_cfg, _ = _load_pki(abuse_pki)
    client_cfg.extended_key_update = False
    outcome: dict[str, Any] = {}

    async def attack(stop: asyncio.Event) -> None:
        attacker = _TLSAttacker(client_cfg)
        await attacker.connect(server.port)
        sent = 0
        try:
            while not attacker.conn.is_closed and sent < 100_000:
                attacker.conn.update_keys(request_peer_update=True)
                sent += 1
                await attacker.flush()
                with contextlib.suppress(TimeoutError):
                    await attacker.receive_once(0.001)
        except (RemoteProtocolError, ConnectionError):
            pass
        while not attacker.conn.is_closed:
            try:
                if not await attacker.receive_once(5):
                    break
            except (RemoteProtocolError, ConnectionError, TimeoutError):
                break
        outcome.update(sent=sent, alert=attacker.closed_by_peer())
        attacker.writer.close()
        await stop.wait()

    with server_process(abuse_pki) as server:
        baseline, abused, _ = measure(abuse_pki, server, attack, classic=True)
        stats = server.stop()
    report(capsys, latencies.record("classic KeyUpdate flood", baseline, abused))
    assert outcome["alert"] == A.unexpected_message, outcome
    assert stats["closed"].get("unexpected_message", 0) >= 1, stats


@pytest.mark.slow
def test_eku_flood(abuse_pki: Path, latencies: Latencies, capsys: pytest.CaptureFixture[str]) -> None:
    """Two attackers: one starts extended key update after extended key
    update as fast as the server answers (paced by eku_min_interval: at most
    one answer per interval), one sends requests without waiting (cut off
    with unexpected_message).  The good client's updates go through."""
    client_cfg, _ = _load_pki(abuse_pki)
    outcome: dict[str, Any] = {}

    async def paced(stop: asyncio.Event) -> None:
        attacker = _TLSAttacker(client_cfg)
        await attacker.connect(server.port)
        started = time.monotonic()
        completed = 0
        while not stop.is_set() and not attacker.conn.is_closed:
            eku = attacker.conn.eku
            assert eku is not None
            if not eku.in_progress:
                attacker.conn.extended_key_update()
                await attacker.flush()
            with contextlib.suppress(TimeoutError):
                await attacker.receive_once(0.5)
            await attacker.flush()
            completed = attacker.conn.key_generation
        outcome["paced"] = {"completed": completed, "seconds": time.monotonic() - started}
        attacker.writer.close()

    async def unpaced(stop: asyncio.Event) -> None:
        attacker = _TLSAttacker(client_cfg)
        await attacker.connect(server.port)
        eku = attacker.conn.eku
        assert eku is not None
        codec = PROFILES[eku.profile.name].codec  # the negotiated profile
        # The first request properly (so the attacker can read the answer),
        # then requests without waiting for it.
        attacker.conn.extended_key_update()
        await attacker.flush()
        for _ in range(1000):
            share = eku.group.generate()
            attacker.conn.queue_handshake(codec.request(eku.group.code, share.public).encode())
            try:
                await attacker.flush()
            except ConnectionError:
                break
        while not attacker.conn.is_closed:
            try:
                if not await attacker.receive_once(5):
                    break
            except (RemoteProtocolError, ConnectionError, TimeoutError):
                break
        outcome["unpaced_alert"] = attacker.closed_by_peer()
        attacker.writer.close()
        await stop.wait()

    async def attack(stop: asyncio.Event) -> None:
        await asyncio.gather(paced(stop), unpaced(stop))

    with server_process(abuse_pki) as server:
        baseline, abused, _ = measure(abuse_pki, server, attack)
        stats = server.stop()
    report(capsys, latencies.record("EKU flood", baseline, abused))
    assert outcome["unpaced_alert"] == A.unexpected_message, outcome
    assert stats["closed"].get("unexpected_message", 0) >= 1, stats
    paced_result = outcome["paced"]
    # The server answers at most one peer-started update per eku_min_interval.
    assert paced_result["completed"] <= paced_result["seconds"] / EKU_MIN_INTERVAL + 2, paced_result
    assert paced_result["completed"] >= 1, paced_result


@pytest.mark.slow
def test_garbage_on_the_socket(abuse_pki: Path, latencies: Latencies, capsys: pytest.CaptureFixture[str]) -> None:
    """Random bytes, a garbage ClientHello, a record header announcing 64 KiB,
    an HTTP request, an SSLv2-style hello, and garbage after a completed
    handshake: each connection is closed at once with the alert the spec names
    (every record header is judged from its 5 bytes, docs/conformance.md),
    never with internal_error; the good client is served throughout."""
    import random

    client_cfg, _ = _load_pki(abuse_pki)
    results: dict[str, Any] = {}
    rng = random.Random(20240601)
    payloads = {
        "random": rng.randbytes(20_000),
        "garbage ClientHello": plaintext_record(
            ContentType.HANDSHAKE, encode_handshake(HandshakeType.client_hello, rng.randbytes(296)), 0x0301
        ),
        "huge record": bytes((ContentType.HANDSHAKE, 3, 1, 0xFF, 0xFF)) + rng.randbytes(100),
        "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "sslv2 hello": bytes.fromhex("802b0103010012000000200000") + rng.randbytes(32),
    }

    async def raw(name: str, payload: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        writer.write(payload)
        await writer.drain()
        data, closed = await _read_until_closed(reader, SERVER_HANDSHAKE_TIMEOUT + 5)
        results[name] = (_alerts_in(data), closed, time.monotonic() - started)
        writer.close()

    async def after_handshake() -> None:
        attacker = _TLSAttacker(client_cfg)
        await attacker.connect(server.port)
        attacker.writer.write(bytes((ContentType.APPLICATION_DATA, 3, 3, 0, 100)) + os.urandom(100))
        await attacker.writer.drain()
        while True:
            try:
                if not await attacker.receive_once(10):
                    break
            except (RemoteProtocolError, ConnectionError, TimeoutError):
                break
        results["after handshake"] = attacker.closed_by_peer()
        attacker.writer.close()

    async def attack(stop: asyncio.Event) -> None:
        rounds = 0
        while not stop.is_set() or rounds == 0:
            await asyncio.gather(*(raw(n, p) for n, p in payloads.items()), after_handshake())
            rounds += 1

    with server_process(abuse_pki) as server:
        baseline, abused, _ = measure(abuse_pki, server, attack)
        server.stop()
    report(capsys, latencies.record("garbage", baseline, abused))
    for name in payloads:
        alerts, closed, seconds = results[name]
        assert closed, f"{name}: the server kept the connection open"
        assert A.internal_error not in alerts, (name, alerts)
        assert len(alerts) == 1, (name, alerts, seconds)
    assert results["huge record"][0] == [A.record_overflow]
    assert results["http"][0] == [A.unexpected_message]
    assert results["sslv2 hello"][0] == [A.protocol_version]
    assert results["garbage ClientHello"][0] == [A.decode_error]
    assert results["after handshake"] == A.bad_record_mac


@pytest.mark.slow
def test_client_vanishes_mid_update(abuse_pki: Path, latencies: Latencies, capsys: pytest.CaptureFixture[str]) -> None:
    """Clients that start an extended key update (or a KeyUpdate) and vanish
    -- with a FIN, or with a RST -- before it completes: the server cleans up
    (no descriptor left behind) and keeps serving."""
    client_cfg, _ = _load_pki(abuse_pki)
    vanished = 0

    async def vanish(reset: bool) -> None:
        nonlocal vanished
        attacker = _TLSAttacker(client_cfg)
        await attacker.connect(server.port)
        attacker.conn.extended_key_update()
        await attacker.flush()
        if reset:  # SO_LINGER 0: the close is a RST
            sock = attacker.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            attacker.writer.transport.abort()
        else:
            attacker.writer.close()
        vanished += 1

    async def attack(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.gather(*(vanish(reset=i % 2 == 0) for i in range(10)))

    with server_process(abuse_pki) as server:
        baseline, abused, _ = measure(abuse_pki, server, attack)
        time.sleep(1.5)  # the alert linger of the last ones
        final = server.stop()
    report(capsys, latencies.record(f"vanishing mid-update ({vanished})", baseline, abused))
    assert vanished >= 10
    assert final["fds"] <= server.fds_at_start + 2, final
    assert final["handler_errors"] <= vanished  # each vanished connection ends its handler once


# ---------------------------------------------------------------------------
# Script entry points (the server and the good client run as processes)
# ---------------------------------------------------------------------------


def _main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--pki", required=True)
    serve.add_argument("--handshake-timeout", type=float, default=SERVER_HANDSHAKE_TIMEOUT)
    serve.add_argument("--eku-min-interval", type=float, default=EKU_MIN_INTERVAL)
    client = sub.add_parser("client")
    client.add_argument("--pki", required=True)
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--rounds", type=int, default=GOOD_ROUNDS)
    client.add_argument("--classic", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args) if args.role == "serve" else _good_client(args))


if __name__ == "__main__":
    _main(sys.argv[1:])

