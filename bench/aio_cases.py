"""Over loopback with asyncio: longtls.aio against asyncio streams with ``ssl``.

The server of each implementation runs in its own process (``run.py
--internal-serve IMPL``), the clients in the benchmark process, so the two
ends use the machine's two cores as a real client and server would.  The
server speaks a line protocol: ``SINK n`` (read n bytes, answer ``OK``) and
``PING`` (answer ``PONG``); it closes when the client does.

Measured: N connections opened concurrently (handshakes per second), then
each of them doing an update concurrently (for longtls an Extended Key Update;
Python's ``ssl`` has no key update API, so its "update" is what its users do
today, a reconnect), and the throughput of one connection.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from harness import HANDSHAKE_SUITE, RUN_PY, Pki, openssl_conf, release_free_memory

import longtls.aio
from longtls.errors import TLSError

HOST = "127.0.0.1"
IMPLS = ("longtls", "ssl")

# ------------------------------------------------------------------ server side


async def _handle(reader: asyncio.StreamReader, writer: Any) -> None:
    try:
        while line := await reader.readline():
            command, _, argument = line.strip().partition(b" ")
            if command == b"SINK":
                remaining = int(argument)
                while remaining:
                    chunk = await reader.read(min(remaining, 1 << 20))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                writer.write(b"OK\n")
            elif command == b"PING":
                writer.write(b"PONG\n")
            else:
                return
    except (ConnectionError, OSError, TLSError):
        pass
    finally:
        writer.close()


async def serve(impl: str, pki: Pki) -> None:
    """Serve on an ephemeral port, print ``PORT n``, exit when stdin closes."""
    from longtls_cases import configs

    if impl == "longtls":
        server = await longtls.aio.start_server(
            _handle, HOST, 0, configs(pki, "x25519")[1], backlog=4096
        )
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(pki.chain_file, pki.key_file)
        server = await asyncio.start_server(_handle, HOST, 0, ssl=ctx, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


class ServerProcess:
    def __init__(self, impl: str, pki: Pki) -> None:
        env = None
        if impl == "ssl":  # pin the suite as the longtls server does
            conf = pki.directory / "openssl-aio.cnf"
            conf.write_text(openssl_conf(HANDSHAKE_SUITE))
            env = dict(os.environ, OPENSSL_CONF=str(conf))
        self.proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), "--internal-serve", impl, "--pki", str(pki.directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{impl} server did not start: {line!r}")
        self.port = int(line.split()[1])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait()


# ------------------------------------------------------------------ client side


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: Any  # longtls.aio.TLSWriter or asyncio.StreamWriter


def _ssl_client_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(pki.ca_file)
    return ctx


def connector(impl: str, pki: Pki, port: int) -> Callable[[], Awaitable[Client]]:
    if impl == "longtls":
        from longtls_cases import configs

        config = configs(pki, "x25519")[0]

        async def connect_longtls() -> Client:
            return Client(*await longtls.aio.connect(HOST, port, config))

        return connect_longtls
    ctx = _ssl_client_context(pki)

    async def connect_ssl() -> Client:
        reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname="localhost")
        return Client(reader, writer)

    return connect_ssl


async def _ping(client: Client) -> None:
    client.writer.write(b"PING\n")
    if await client.reader.readline() != b"PONG\n":
        raise RuntimeError("no PONG after the update")


async def _close(client: Client) -> None:
    client.writer.close()
    try:
        await client.writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def _update(impl: str, client: Client, connect: Callable[[], Awaitable[Client]]) -> Client:
    if impl == "longtls":  # an Extended Key Update, awaited until both ends use it
        before = client.writer.connection.key_generation
        if await client.writer.update_keys() != before + 1:
            raise RuntimeError("the extended key update did not advance the generation")
        return client
    client.writer.close()  # ssl: a reconnect
    return await connect()


async def storm(impl: str, pki: Pki, port: int, count: int) -> tuple[float, float]:
    """``count`` concurrent connects, then ``count`` concurrent updates; rates per second."""
    connect = connector(impl, pki, port)
    release_free_memory()
    start = time.perf_counter()
    clients = await asyncio.gather(*(connect() for _ in range(count)))
    connect_rate = count / (time.perf_counter() - start)
    start = time.perf_counter()
    updated = await asyncio.gather(*(_update(impl, c, connect) for c in clients))
    update_rate = count / (time.perf_counter() - start)
    await asyncio.gather(*(_ping(c) for c in updated))  # each connection still works
    everyone = {id(c): c for c in (*clients, *updated)}
    await asyncio.gather(*(_close(c) for c in everyone.values()))
    return connect_rate, update_rate


async def _sink(client: Client, payload: bytes, total: int) -> float:
    client.writer.write(f"SINK {total}\n".encode())
    sent = 0
    while sent < total:
        client.writer.write(payload)
        await client.writer.drain()
        sent += len(payload)
    if await client.reader.readline() != b"OK\n":
        raise RuntimeError("the sink did not confirm")
    return float(total)


async def throughput(client: Client, min_time: float, total: int, write_size: int) -> float:
    """Bytes per second through one connection, client to server, for ``min_time`` seconds."""
    payload = bytes(write_size)
    done = 0.0
    start = time.perf_counter()
    while True:
        done += await _sink(client, payload, total)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return done / elapsed


@dataclass
class AioResults:
    connect: dict[str, float]  # handshakes per second, per implementation
    update: dict[str, float]  # updates (longtls) / reconnects (ssl) per second
    throughput: dict[str, float]  # bytes per second


async def run_all(
    pki: Pki, ports: dict[str, int], *, count: int, rounds: int, rate_rounds: int, min_time: float,
    total: int, write_size: int,
) -> AioResults:
    import statistics

    connects: dict[str, list[float]] = {i: [] for i in IMPLS}
    updates: dict[str, list[float]] = {i: [] for i in IMPLS}
    rates: dict[str, list[float]] = {i: [] for i in IMPLS}
    for r in range(rounds):
        order = IMPLS if r % 2 == 0 else IMPLS[::-1]
        for impl in order:
            c, u = await storm(impl, pki, ports[impl], count)
            connects[impl].append(c)
            updates[impl].append(u)
    # Throughput: each round against a fresh server process and over a new
    # connection.  The rate of one process pair varies with the process
    # itself (heap layout, where the scheduler puts it: up to +-20% between
    # two identical server processes on this VM, docs/benchmarks.md
    # "Noise"), so a median over the same two servers would measure them.
    for r in range(rate_rounds):
        order = IMPLS if r % 2 == 0 else IMPLS[::-1]
        for impl in order:
            server = ServerProcess(impl, pki)
            try:
                client = await connector(impl, pki, server.port)()
                await _sink(client, bytes(write_size), total)  # warm-up: buffers, caches, allocator
                rates[impl].append(await throughput(client, min_time, total, write_size))
                await _close(client)
            finally:
                server.close()
    med = statistics.median
    return AioResults(
        {i: med(v) for i, v in connects.items()},
        {i: med(v) for i, v in updates.items()},
        {i: med(v) for i, v in rates.items()},
    )


def serve_main(impl: str, pki: Pki) -> None:
    asyncio.run(serve(impl, pki))
