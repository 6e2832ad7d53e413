"""longtls.aio over real loopback sockets: streaming with key updates, back-pressure,
timeouts, event streams, many connections, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from helpers.pair import configs
from helpers.peers import LOOPBACK
from helpers.pki import make_ca, make_leaf
from longtls import aio
from longtls.config import Configuration
from longtls.constants import AlertDescription, ContentType, HandshakeType
from longtls.errors import HandshakeTimeoutError
from longtls.events import (
    ConnectionClosed,
    Event,
    ExporterUpdated,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdateStarted,
    UpdateRejection,
)
from longtls.metrics import Metrics

Handler = Callable[[aio.TLSReader, aio.TLSWriter], Awaitable[None]]
DEFAULT_OPTIONS = aio.StreamOptions()


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def serve(
    handler: Handler, config: Configuration | Callable[[], Configuration],
    options: aio.StreamOptions = DEFAULT_OPTIONS, **kwargs: Any,
) -> tuple[asyncio.Server, int]:
    server = await aio.start_server(handler, LOOPBACK, 0, config, options, **kwargs)
    return server, server.sockets[0].getsockname()[1]


async def echo(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


# -- data both ways while both sides update the keys ---------------------------------


async def _send_all(writer: aio.TLSWriter, data: bytes, chunk: int = 32768) -> None:
    for i in range(0, len(data), chunk):
        writer.write(data[i : i + chunk])
        await writer.drain()
        await asyncio.sleep(0)
    writer.write_eof()


async def _read_all(reader: aio.TLSReader) -> bytes:
    parts = []
    while data := await reader.read(65536):
        parts.append(data)
    return b"".join(parts)


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10", "draft-05"])
def test_both_stream_while_both_update_keys(profile: str) -> None:
    client_config, server_config, _ = configs(client_eku_profile=profile, server_eku_profile=profile)
    size, updates = 4 << 20, 20
    client_data, server_data = os.urandom(size), os.urandom(size)

    async def scenario() -> None:
        accepted: asyncio.Future[tuple[aio.TLSReader, aio.TLSWriter]] = asyncio.get_running_loop().create_future()
        finished = asyncio.Event()

        async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
            accepted.set_result((reader, writer))
            await finished.wait()

        server, port = await serve(handler, server_config)
        async with server:
            c_reader, c_writer = await aio.connect(LOOPBACK, port, client_config)
            s_reader, s_writer = await accepted
            c_events = c_writer.events()

            async def update_keys() -> list[int]:
                generations = []
                for i in range(updates):
                    writer = c_writer if i % 2 == 0 else s_writer
                    generations.append(await writer.update_keys())
                return generations

            results = await asyncio.gather(
                _send_all(c_writer, client_data), _send_all(s_writer, server_data),
                _read_all(s_reader), _read_all(c_reader), update_keys(),
            )
            finished.set()
            await asyncio.gather(c_writer.wait_closed(), s_writer.wait_closed())
        _, _, at_server, at_client, generations = results
        assert hashlib.sha256(at_server).digest() == hashlib.sha256(client_data).digest()
        assert hashlib.sha256(at_client).digest() == hashlib.sha256(server_data).digest()
        assert generations == list(range(1, updates + 1))
        assert c_writer.connection.key_generation == s_writer.connection.key_generation == updates
        completed = [e for e in [e async for e in c_events] if isinstance(e, KeyUpdateCompleted)]
        assert [e.initiator for e in completed] == ["client", "server"] * (updates // 2)

    run(scenario())


# -- back-pressure -----------------------------------------------------------------------


def test_back_pressure_bounds_the_writer() -> None:
    """A reader that stops reading stops the writer: drain() blocks and nothing piles up."""
    client_config, server_config, _ = configs()
    total, chunk = 50 << 20, 1 << 16
    block = os.urandom(chunk)

    async def scenario() -> None:
        start_reading = asyncio.Event()
        received = asyncio.get_running_loop().create_future()

        async def slow_reader(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
            await start_reading.wait()
            digest, n = hashlib.sha256(), 0
            while data := await reader.read(1 << 16):
                digest.update(data)
                n += len(data)
            received.set_result((n, digest.digest()))
            writer.close()

        server, port = await serve(slow_reader, server_config)
        async with server:
            reader, writer = await aio.connect(LOOPBACK, port, client_config)
            written, largest_buffer = 0, 0
            blocked_at = None
            while written < total:
                writer.write(block)
                written += chunk
                largest_buffer = max(largest_buffer, writer.transport.get_write_buffer_size())
                try:
                    await asyncio.wait_for(asyncio.shield(writer.drain()), 0.5)
                except TimeoutError:
                    blocked_at = written  # drain() held us back: the peer is not reading
                    break
            assert blocked_at is not None, "drain() never blocked"
            # What the kernel buffers hold on loopback plus the reader's limit:
            # a few MB, not the 50 MB we wanted to write.
            assert blocked_at < 20 << 20, blocked_at
            assert largest_buffer <= 256 << 10, largest_buffer
            # The protocol held nothing back either: everything sealed went to the transport.
            assert writer.connection.data_to_send() == b""

            start_reading.set()
            await writer.drain()
            while written < total:
                writer.write(block)
                written += chunk
                largest_buffer = max(largest_buffer, writer.transport.get_write_buffer_size())
                await writer.drain()
            assert largest_buffer <= 256 << 10, largest_buffer
            writer.write_eof()
            n, digest = await received
            assert n == total
            assert digest == hashlib.sha256(block * (total // chunk)).digest()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

    run(scenario())


# -- timeouts ----------------------------------------------------------------------------


# The alerts that end a timed-out handshake, in plaintext records: user_canceled
# (warning), then close_notify (RFC 9846 §6.1; Connection.handle_timer).
TIMEOUT_ALERTS = [
    (ContentType.ALERT, bytes((1, AlertDescription.user_canceled))),
    (ContentType.ALERT, bytes((1, AlertDescription.close_notify))),
]


def records(data: bytes) -> list[tuple[int, bytes]]:
    """(content type, fragment) of each plaintext record in ``data`` (RFC 9846 §5.1)."""
    found = []
    while data:
        assert len(data) >= 5, data
        length = int.from_bytes(data[3:5], "big")
        found.append((data[0], data[5 : 5 + length]))
        data = data[5 + length :]
    return found


def test_client_handshake_timeout() -> None:
    client_config, _, _ = configs()
    client_config.handshake_timeout = 0.3  # the one handshake timeout: the Configuration's
    received: list[bytes] = []

    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.read())  # never answers
            writer.close()

        server = await asyncio.start_server(silent, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            started = time.monotonic()
            with pytest.raises(aio.HandshakeTimeoutError, match=r"0\.3 seconds") as info:
                await aio.connect(LOOPBACK, port, client_config)
            assert 0.25 < time.monotonic() - started < 5
            # The core's error, the same a sans-I/O caller of handle_timer gets.
            assert isinstance(info.value, HandshakeTimeoutError)
            assert info.value.seconds == 0.3
            assert info.value.alert is AlertDescription.close_notify

    run(scenario())
    # The ClientHello, then the timeout's alerts, then the FIN.
    sent = records(received[0])
    assert sent[0][0] == ContentType.HANDSHAKE and sent[0][1][0] == HandshakeType.client_hello
    assert sent[-2:] == TIMEOUT_ALERTS


def test_moved_keyword_arguments_say_where_they_went() -> None:
    client_config, server_config, _ = configs()

    async def scenario() -> None:
        with pytest.raises(TypeError, match=r"handshake_timeout=: set Configuration\.handshake_timeout"):
            await aio.connect(LOOPBACK, 1, client_config, handshake_timeout=1)
        with pytest.raises(TypeError, match=r"idle_timeout=: set StreamOptions\.idle_timeout"):
            await aio.start_server(echo, LOOPBACK, 0, server_config, idle_timeout=1)

    run(scenario())


def test_server_handshake_timeout() -> None:
    _, server_config, _ = configs()
    server_config.handshake_timeout = 0.3
    metrics = Metrics()
    called = []

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        called.append(writer)

    async def scenario() -> None:
        server, port = await serve(handler, server_config, aio.StreamOptions(metrics=metrics))
        async with server:
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            started = time.monotonic()
            # A client that never sends a byte: the server's clock ran from the
            # TCP connect; it sends the timeout's alerts and hangs up.
            assert records(await asyncio.wait_for(reader.read(), 5)) == TIMEOUT_ALERTS
            assert 0.25 < time.monotonic() - started < 5
            writer.close()

    run(scenario())
    assert called == []
    assert metrics.handshakes == {"ok": 0, "failed": 1}


def test_idle_timeout_closes_a_quiet_connection() -> None:
    client_config, server_config, _ = configs()
    server_error: asyncio.Future[BaseException] | None = None

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        try:
            while data := await reader.read(100):
                writer.write(data)
                await writer.drain()
        except Exception as exc:
            assert server_error is not None
            server_error.set_result(exc)

    async def scenario() -> None:
        nonlocal server_error
        server_error = asyncio.get_running_loop().create_future()
        server, port = await serve(handler, server_config, aio.StreamOptions(idle_timeout=0.4))
        async with server:
            reader, writer = await aio.connect(LOOPBACK, port, client_config)
            # Traffic every 0.1 s for a second keeps it open.
            for i in range(10):
                writer.write(b"%d" % i)
                assert await reader.read(100) == b"%d" % i
                await asyncio.sleep(0.1)
            started = time.monotonic()  # 0.1 s after the last data
            # Then silence: the server closes with close_notify (a clean EOF here).
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert 0.2 < time.monotonic() - started < 5
            assert isinstance(await server_error, aio.IdleTimeoutError)
            writer.close()
            await writer.wait_closed()

    run(scenario())


def test_client_idle_timeout() -> None:
    client_config, server_config, _ = configs()

    async def scenario() -> None:
        server, port = await serve(echo, server_config)
        async with server:
            options = aio.StreamOptions(idle_timeout=0.3)
            reader, writer = await aio.connect(LOOPBACK, port, client_config, options)
            with pytest.raises(aio.IdleTimeoutError):
                await asyncio.wait_for(reader.read(), 5)
            with pytest.raises(aio.IdleTimeoutError):
                writer.write(b"too late")
            await writer.wait_closed()

    run(scenario())


# -- many connections --------------------------------------------------------------------


def test_hundred_concurrent_connections() -> None:
    client_config, server_config, _ = configs()
    metrics = Metrics()

    async def one(port: int, i: int) -> bytes:
        reader, writer = await aio.connect(LOOPBACK, port, client_config)
        payload = f"connection {i}\n".encode() * 100
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        answer = await _read_all(reader)
        writer.close()
        await writer.wait_closed()
        return answer == payload and writer.handshake.version == "TLSv1.3"

    async def scenario() -> None:
        server, port = await serve(echo, server_config, aio.StreamOptions(metrics=metrics), backlog=200)
        async with server:
            results = await asyncio.gather(*(one(port, i) for i in range(100)))
            assert all(results)
            for _ in range(50):  # the server's side of the last connections is closing
                if metrics.open_connections == 0:
                    break
                await asyncio.sleep(0.05)

    run(scenario())
    assert metrics.handshakes == {"ok": 100, "failed": 0}
    assert metrics.open_connections == 0
    assert metrics.bytes["in"] == metrics.bytes["out"] == sum(len(f"connection {i}\n") * 100 for i in range(100))


# -- events ------------------------------------------------------------------------------


def test_event_stream_and_callback() -> None:
    client_config, server_config, _ = configs()
    seen: list[Event] = []

    async def scenario() -> list[Event]:
        server, port = await serve(echo, server_config)
        async with server:
            reader, writer = await aio.connect(
                LOOPBACK, port, client_config, aio.StreamOptions(event_handler=seen.append)
            )
            with writer.events() as events:
                assert await writer.update_keys() == 1
                assert await writer.update_keys() == 2
                writer.write_eof()
                assert await reader.read() == b""
                streamed = [event async for event in events]
            late = writer.events()  # after the end: an empty stream
            assert await late.get() is None
            await writer.wait_closed()
            return streamed

    streamed = run(scenario())
    kinds = [type(e) for e in streamed]
    assert kinds == [
        KeyUpdateStarted, KeyUpdateCompleted, ExporterUpdated,
        KeyUpdateStarted, KeyUpdateCompleted, ExporterUpdated,
        type(streamed[6]), ConnectionClosed,
    ], streamed
    assert isinstance(seen[0], HandshakeComplete)
    assert seen[1:] == streamed


def test_event_stream_drops_the_oldest_when_nobody_reads() -> None:
    client_config, server_config, _ = configs()

    async def scenario() -> None:
        server, port = await serve(echo, server_config)
        async with server:
            _, writer = await aio.connect(LOOPBACK, port, client_config)
            events = writer.events(maxsize=4)
            for _ in range(5):
                await writer.update_keys()
            assert events.dropped == 11  # 15 events, room for 4
            latest = [await events.get() for _ in range(4)]
            assert [type(e) for e in latest][-2:] == [KeyUpdateCompleted, ExporterUpdated]
            writer.close()
            await writer.wait_closed()

    run(scenario())


# -- failures reach update_keys() --------------------------------------------------------


def test_update_keys_raises_when_a_draft05_peer_rejects() -> None:
    client_config, server_config, _ = configs(
        client_eku_profile="draft-05", server_eku_profile="draft-05", server_eku_max_peer_updates=0
    )

    async def scenario() -> None:
        server, port = await serve(echo, server_config)
        async with server:
            reader, writer = await aio.connect(LOOPBACK, port, client_config)
            with pytest.raises(aio.KeyUpdateRejectedError, match="rejected") as info:
                await writer.update_keys()
            assert info.value.status is UpdateRejection.rejected
            writer.write(b"still usable")
            assert await reader.read(100) == b"still usable"
            writer.close()
            await writer.wait_closed()

    run(scenario())


def test_update_keys_raises_when_the_connection_is_cut() -> None:
    # The server defers its answer (rate limit), then the TCP connection dies.
    client_config, server_config, _ = configs(server_eku_min_interval=3600.0)
    server_writers: list[aio.TLSWriter] = []

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        server_writers.append(writer)
        await reader.read()

    async def scenario() -> None:
        server, port = await serve(handler, server_config)
        async with server:
            _, writer = await aio.connect(LOOPBACK, port, client_config)
            assert await writer.update_keys() == 1  # the first is admitted at once
            update = asyncio.ensure_future(writer.update_keys())
            await asyncio.sleep(0.2)
            assert not update.done()  # deferred by the server's rate limit
            server_writers[0].abort()
            # A reset, or a FIN without close_notify (ConnectionLostError is a ConnectionResetError).
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(update, 5)

    run(scenario())


# -- configuration per connection ---------------------------------------------------------


def test_configuration_function_applies_to_new_connections() -> None:
    client_config, server_config, ca = configs()
    rotated = make_leaf(ca, "ecdsa-p256", ["localhost", "rotated.example"])
    current = [server_config]

    async def subject(port: int) -> str | None:
        _, writer = await aio.connect(LOOPBACK, port, client_config)
        name = writer.handshake.peer_subject
        writer.close()
        await writer.wait_closed()
        return name

    async def scenario() -> None:
        server, port = await serve(echo, lambda: current[0])
        async with server:
            assert await subject(port) == "CN=localhost,O=longtls tests"
            new = Configuration(
                is_client=False, certificate_chain=rotated.chain, private_key=rotated.key
            )
            current[0] = new
            second = await subject(port)
            assert second is not None
            assert rotated.cert.subject.rfc4514_string() == second

    run(scenario())


def test_abort_is_a_truncation_for_the_peer() -> None:
    client_config, server_config, _ = configs()

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        writer.write(b"partial")
        await writer.drain()
        writer.abort()

    async def scenario() -> None:
        server, port = await serve(handler, server_config)
        async with server:
            reader, writer = await aio.connect(LOOPBACK, port, client_config)
            assert await reader.readexactly(7) == b"partial"
            with pytest.raises((aio.ConnectionLostError, ConnectionResetError)):
                await asyncio.wait_for(reader.read(), 5)
            await writer.wait_closed()

    run(scenario())


# -- metrics -----------------------------------------------------------------------------


def test_metrics_count_updates_by_initiator_and_key_age() -> None:
    client_config, server_config, _ = configs()
    metrics = Metrics()
    writers: list[aio.TLSWriter] = []

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        writers.append(writer)
        await echo(reader, writer)

    async def scenario() -> None:
        server, port = await serve(handler, server_config, aio.StreamOptions(metrics=metrics))
        async with server:
            _, writer = await aio.connect(LOOPBACK, port, client_config)
            await writer.update_keys()  # peer-initiated, for the server
            await writers[0].update_keys()  # local
            await writers[0].update_keys()
            assert metrics.open_connections == 1
            await asyncio.sleep(0.2)
            assert 0.15 < metrics.oldest_key_age() < 5
            text = metrics.render()
            writer.close()
            await writer.wait_closed()
        assert 'longtls_key_updates_total{initiator="local",result="completed"} 2' in text
        assert 'longtls_key_updates_total{initiator="peer",result="completed"} 1' in text
        assert 'longtls_handshakes_total{result="ok"} 1' in text
        assert "longtls_open_connections 1" in text
        assert "# TYPE longtls_oldest_key_age_seconds gauge" in text

    run(scenario())


def test_server_certificate_from_an_unrelated_ca_fails_the_handshake() -> None:
    client_config, _, _ = configs()
    other = make_leaf(make_ca("ecdsa-p256"), "ecdsa-p256")
    server_config = Configuration(is_client=False, certificate_chain=other.chain, private_key=other.key)
    metrics = Metrics()

    async def scenario() -> None:
        server, port = await serve(echo, server_config, aio.StreamOptions(metrics=metrics))
        async with server:
            with pytest.raises(Exception, match=r"unknown_ca|bad_certificate"):
                await aio.connect(LOOPBACK, port, client_config)
            for _ in range(50):
                if metrics.handshakes["failed"]:
                    break
                await asyncio.sleep(0.05)

    run(scenario())
    assert metrics.handshakes == {"ok": 0, "failed": 1}
