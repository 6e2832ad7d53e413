"""MLS mode over real loopback sockets (aio.connect_mls / aio.start_mls_server):
1,000 epoch updates started by both sides, some crossed, while data streams
both ways; a commit that changes the credential refused with an alert."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable
from typing import Any

import pytest

from helpers.peers import LOOPBACK
from longtls import aio
from longtls.config import Configuration
from longtls.constants import AlertDescription, ContentType
from longtls.errors import AlertReceived, TLSError
from longtls.events import Event, KeyUpdateCompleted, Side
from longtls.mls.messages import BasicCredential
from longtls.wire.mls_tls import MLSTLSConnectionUpdate, encode_mls_tls

UPDATES = 1000


def run(coro: Awaitable[Any], timeout: float = 120.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def stream_out(writer: aio.MLSWriter, seed: int, chunks: int) -> bytes:
    """Random chunks, written while the updates run; returns what was sent."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    for _ in range(chunks):
        chunk = rng.randbytes(rng.randrange(1, 6000))
        digest.update(chunk)
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)
    return digest.digest()


async def stream_in(reader: aio.TLSReader, length_wanted: int) -> bytes:
    digest = hashlib.sha256()
    got = 0
    while got < length_wanted:
        data = await reader.read(65536)
        assert data, "EOF before all the data arrived"
        digest.update(data)
        got += len(data)
    assert got == length_wanted
    return digest.digest()


def total_length(seed: int, chunks: int) -> int:
    rng = random.Random(seed)
    total = 0
    for _ in range(chunks):
        n = rng.randrange(1, 6000)
        rng.randbytes(n)
        total += n
    return total


async def update_until(writer: aio.MLSWriter, epoch: int, rng: random.Random) -> int:
    calls = 0
    while writer.epoch < epoch:
        await writer.update_keys()
        calls += 1
        if rng.random() < 0.3:
            await asyncio.sleep(0)  # let the other side start one: some cross
    return calls


def test_a_thousand_updates_by_both_sides_with_data_both_ways() -> None:
    chunks = 300
    client_seed, server_seed = 1, 2
    events: dict[str, list[Event]] = {"client": [], "server": []}

    async def main() -> tuple[int, int, int, float]:
        results: dict[str, Any] = {}

        async def handler(reader: aio.TLSReader, writer: aio.MLSWriter) -> None:
            out = asyncio.ensure_future(stream_out(writer, server_seed, chunks))
            inbound = asyncio.ensure_future(stream_in(reader, total_length(client_seed, chunks)))
            results["server_calls"] = await update_until(writer, UPDATES + 1, random.Random(5))
            results["server_sent"] = await out
            results["server_got"] = await inbound
            results["server_export"] = writer.export_keying_material("EXPORTER-test", b"", 32)
            writer.close()

        server = await aio.start_mls_server(handler, LOOPBACK, 0, Configuration(is_client=False),
                                            aio.StreamOptions(event_handler=events["server"].append))
        port = server.sockets[0].getsockname()[1]
        started = time.perf_counter()
        reader, writer = await aio.connect_mls(LOOPBACK, port, Configuration(is_client=True, verify_peer=False),
                                               aio.StreamOptions(event_handler=events["client"].append))
        assert writer.handshake.mode == "mls" and writer.handshake.epoch == 1
        out = asyncio.ensure_future(stream_out(writer, client_seed, chunks))
        inbound = asyncio.ensure_future(stream_in(reader, total_length(server_seed, chunks)))
        client_calls = await update_until(writer, UPDATES + 1, random.Random(6))
        sent = await out
        got = await inbound
        export = writer.export_keying_material("EXPORTER-test", b"", 32)
        assert await reader.read() == b""  # the server's close_notify
        writer.close()
        await writer.wait_closed()
        elapsed = time.perf_counter() - started
        server.close()
        await server.wait_closed()
        assert sent == results["server_got"] and got == results["server_sent"]
        assert export == results["server_export"]
        return client_calls, results["server_calls"], writer.epoch, elapsed

    client_calls, server_calls, epoch, elapsed = run(main())
    assert epoch >= UPDATES + 1
    for side in ("client", "server"):
        updates = [e for e in events[side] if isinstance(e, KeyUpdateCompleted)]
        assert [e.epoch for e in updates] == list(range(2, epoch + 1))
        assert all(e.kind == "mls" for e in updates)
    by = [e.initiator for e in events["client"] if isinstance(e, KeyUpdateCompleted)]
    assert by.count(Side.client) > 100 and by.count(Side.server) > 100
    # Crossed updates: calls that returned on the other side's update (the
    # initiator's wins) rather than their own.
    crossed = client_calls + server_calls - (epoch - 1)
    assert crossed > 0, (client_calls, server_calls, epoch)
    print(f"{epoch - 1} updates, {crossed} crossed, {elapsed:.1f} s")


def test_a_commit_changing_the_credential_is_refused_with_an_alert() -> None:
    async def main() -> tuple[BaseException, BaseException]:
        outcome: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def handler(reader: aio.TLSReader, writer: aio.MLSWriter) -> None:
            assert await reader.readexactly(2) == b"go"  # the client's handshake is complete
            conn = writer.connection
            assert conn.group is not None
            # A self-update commit whose new leaf names another identity.
            commit = conn.group.group.commit(credential=BasicCredential(b"mallory")).message.to_bytes()
            writer._protocol.command(lambda: conn._records.send(
                ContentType.HANDSHAKE, encode_mls_tls(MLSTLSConnectionUpdate(commit))))
            try:
                await reader.read()
            except TLSError as exc:
                outcome.set_result(exc)

        server = await aio.start_mls_server(handler, LOOPBACK, 0, Configuration(is_client=False))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await aio.connect_mls(LOOPBACK, port, Configuration(is_client=True, verify_peer=False))
        writer.write(b"go")
        with pytest.raises(TLSError) as info:
            await reader.read()
        server_error = await outcome
        server.close()
        await server.wait_closed()
        return info.value, server_error

    client_error, server_error = run(main(), timeout=30)
    assert isinstance(client_error, TLSError) and client_error.alert is AlertDescription.bad_certificate
    assert isinstance(server_error, AlertReceived) and server_error.alert is AlertDescription.bad_certificate
