"""DTLS 1.3 over loopback UDP: longtls.aio against wolfSSL 5.5.4's example
client and server in their benchmark modes, and EKU over DTLS next to TLS.

longtls runs through its asyncio datagram API (``longtls.aio.connect_dtls``
and ``serve_dtls``): that is what an application uses over UDP, with the
association's timers, ACKs and demultiplexing, as wolfSSL's examples run
its whole library over blocking sockets.  The longtls server is a process of
its own (``run.py --internal-dtls-serve``), the longtls client runs in the
benchmark process; wolfSSL's server and client are its example programs
(``wolfssl_cases``).  Every client/server pair is measured, crossed ones too.

Two figures per pair, because wall-clock time over UDP is not only work:

- **wall clock**: handshakes per second of one client connecting again and
  again (wolfSSL's ``-b``), and MB/s of its echo loop (``-B``: a block out,
  the same block back, repeated);
- **CPU, both ends**: the client's CPU time (``time.process_time`` around
  the loop in this process; ``wait4``'s rusage for a wolfSSL client, its
  start-up included) plus the server process's, read from
  ``/proc/<pid>/task/*/schedstat`` (nanoseconds on the CPU) before and after.
  This is the figure comparable with the in-memory tables, and the one that
  does not depend on retransmission timers: wolfSSL's example server closes
  its socket and binds a new one after every connection, so a ClientHello
  that arrives in between is lost and sent again after the 1 s
  retransmission timer (its own ``-b`` client, which sends the next
  ClientHello right after its close_notify, hits this).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import wolfssl_cases
from harness import HANDSHAKE_SUITE, RUN_PY, Operation, Pki, log
from longtls_cases import configs

import longtls.aio
from longtls.aio.datagram import DatagramsEnded
from longtls.config import Configuration
from longtls.dtls_connection import DTLSConnection
from longtls.errors import TLSError
from longtls.events import HandshakeComplete, KeyUpdateCompleted

HOST = "127.0.0.1"
#: One group and suite both stacks have (wolfSSL 5.5.4 has no ML-KEM).
GROUP = "x25519"
SUITE = HANDSHAKE_SUITE  # AES-128-GCM
#: Bytes per echoed datagram: one record in one datagram, which wolfSSL's
#: ``-B`` needs (a bigger write fails with DTLS_SIZE_ERROR, -439) and which
#: fits longtls' default 1,200-byte MTU.
BLOCK = 1024
IMPLS = ("longtls", "wolfssl")
#: (client, server) pairs, as rows.
PAIRS = (("longtls", "longtls"), ("wolfssl", "wolfssl"), ("wolfssl", "longtls"), ("longtls", "wolfssl"))
NAMES = {"longtls": "longtls", "wolfssl": "wolfSSL"}


def cpu_ns(pid: int) -> int:
    """Nanoseconds process ``pid`` (all its threads) has run on a CPU so far."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended in between
    return total


# ------------------------------------------------------------------ the longtls server


async def _echo(association: longtls.aio.DTLSAssociation) -> None:
    """Send every datagram back, until close_notify (the benchmark's echo server)."""
    try:
        async for payload in association:
            association.send(payload)
    except (DatagramsEnded, TLSError, OSError):
        pass


async def serve(pki: Pki) -> None:
    """``run.py --internal-dtls-serve``: a DTLS echo server (x25519,
    AES-128-GCM, EKU offered, no update pacing: ``longtls_cases.configs``);
    print ``PORT group n`` lines, then ``READY``; exit when stdin closes."""
    servers = []
    for group in (GROUP,):
        server = await longtls.aio.serve_dtls(_echo, HOST, 0, configs(pki, group, SUITE)[1])
        servers.append(server)
        print(f"PORT {group} {server.port}", flush=True)
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


def serve_main(pki: Pki) -> None:
    asyncio.run(serve(pki))


class LongtlsServer:
    """The ``run.py --internal-dtls-serve`` process; ``ports`` by group once
    ``wait_ready()`` returned (started first, so that other processes can
    start meanwhile)."""

    def __init__(self, pki: Pki) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), "--internal-dtls-serve", "--pki", str(pki.directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.ports: dict[str, int] = {}
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        while (line := self.proc.stdout.readline()) != "READY\n":
            if not line.startswith("PORT "):
                self.close()
                raise RuntimeError(f"the longtls DTLS server did not start: {line!r}")
            _, group, port = line.split()
            self.ports[group] = int(port)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------ longtls clients


async def _handshakes(port: int, config: Configuration, count: int) -> tuple[float, float]:
    """``count`` connections one after another: handshake, close_notify both
    ways; (wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        association = await longtls.aio.connect_dtls(HOST, port, config)
        association.close()
        await association.wait_closed()
    return time.perf_counter() - wall, time.process_time() - cpu


async def _echo_loop(port: int, config: Configuration, total: int) -> tuple[float, float]:
    """One association: ``total`` bytes in BLOCK-byte datagrams, each echoed
    back before the next goes (wolfSSL's ``-B``); the loop's wall and CPU seconds."""
    association = await longtls.aio.connect_dtls(HOST, port, config)
    block = os.urandom(BLOCK)
    wall, cpu = time.perf_counter(), time.process_time()
    sent = 0
    while sent < total:
        size = min(BLOCK, total - sent)
        association.send(block[:size])
        if await association.receive() != block[:size]:
            raise RuntimeError("the echo differs from what was sent")
        sent += size
    result = time.perf_counter() - wall, time.process_time() - cpu
    association.close()
    await association.wait_closed()
    return result


async def _updates(port: int, config: Configuration, count: int) -> float:
    """``count`` Extended Key Updates on one association, each awaited until
    both ends use the new keys; wall seconds."""
    association = await longtls.aio.connect_dtls(HOST, port, config)
    if not association.handshake.extended_key_update:
        raise RuntimeError("Extended Key Update was not negotiated over DTLS")
    start = time.perf_counter()
    for _ in range(count):
        await association.update_keys()
    took = time.perf_counter() - start
    association.close()
    await association.wait_closed()
    return took


async def _tls_updates(port: int, config: Configuration, count: int) -> float:
    """The same over TLS (``longtls.aio.connect``) against the asyncio section's server."""
    _reader, writer = await longtls.aio.connect(HOST, port, config)
    start = time.perf_counter()
    for _ in range(count):
        await writer.update_keys()
    took = time.perf_counter() - start
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError, TLSError):
        pass
    return took


def loopback_updates(port: int, config: Configuration, count: int, tls: bool = False) -> float:
    """Updates per second over loopback, DTLS (or TLS with ``tls``)."""
    run = _tls_updates if tls else _updates
    return count / asyncio.run(run(port, config, count))


# ------------------------------------------------------------------ one measurement


@dataclass
class Sample:
    wall: float  # seconds
    client_cpu: float  # seconds
    server_cpu: float  # seconds

    def per(self, count: int) -> Sample:
        return Sample(self.wall / count, self.client_cpu / count, self.server_cpu / count)


def handshake_sample(
    client: str, server: str, pki: Pki, ports: dict[str, int], pids: dict[str, int], count: int,
    wolf: wolfssl_cases.Wolfssl,
) -> Sample:
    before = cpu_ns(pids[server])
    if client == "longtls":
        wall, cpu = asyncio.run(_handshakes(ports[server], configs(pki, GROUP, SUITE)[0], count))
    else:
        run = wolf.client(ports[server], ["-b", str(count)])
        wall, cpu = run.wall, run.cpu
    return Sample(wall, cpu, (cpu_ns(pids[server]) - before) / 1e9)


def echo_sample(
    client: str, server: str, pki: Pki, ports: dict[str, int], pids: dict[str, int], total: int,
    wolf: wolfssl_cases.Wolfssl, handshake: Sample,
) -> Sample:
    """The echo loop of one association.  ``handshake``: one handshake's
    cost for this pair (a handshake sample divided by its count), taken off
    what includes the association's handshake: the server's CPU, and a
    wolfSSL client's (its process does both; a longtls client's loop is
    timed alone)."""
    before = cpu_ns(pids[server])
    if client == "longtls":
        wall, cpu = asyncio.run(_echo_loop(ports[server], configs(pki, GROUP, SUITE)[0], total))
    else:
        run = wolf.client(ports[server], ["-B", f"{total},{BLOCK}"])
        # Its wall clock less the handshake it prints ("Connect x ms"); its
        # start-up (1-3 ms of CPU) stays in.
        wall, cpu = run.wall - run.connect_seconds(), run.cpu - handshake.client_cpu
    server_cpu = (cpu_ns(pids[server]) - before) / 1e9 - handshake.server_cpu
    # Never below zero (a --quick run's few handshakes can overestimate one).
    return Sample(wall, max(cpu, 0.0), max(server_cpu, 0.0))


# ------------------------------------------------------------------ EKU in memory


class _Clock:
    """Configuration.now for an in-memory DTLS pair: real time, moved forward
    to a pending timer when nothing else can happen (an ACK delay)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _dtls_pump(client: DTLSConnection, server: DTLSConnection, clock: _Clock, done: Callable[[], bool]) -> None:
    for _ in range(1000):
        moved = False
        for a, b in ((client, server), (server, client)):
            for datagram in a.datagrams_to_send():
                moved = True
                b.receive_datagram(datagram)
        if moved:
            continue
        if done():
            return
        timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
        if not timers:
            break
        clock.now = max(clock.now, min(timers))
        for end in (client, server):
            due = end.get_timer()
            if due is not None and due <= clock.now:
                end.handle_timer()
    raise RuntimeError(f"in-memory DTLS pair stalled: {client!r} {server!r}")


def dtls_pair(pki: Pki, group: str) -> tuple[DTLSConnection, DTLSConnection, _Clock]:
    """A DTLS 1.3 client and server connected in memory (the cookie exchange
    through ``DTLSConnection.accept``, as a server does it)."""
    clock = _Clock()
    client_cfg, server_cfg = (dataclasses.replace(c, now=clock) for c in configs(pki, group, SUITE))
    client = DTLSConnection(client_cfg)
    client.start_handshake()
    address = b"\x7f\x00\x00\x01\x13\x88"
    server: DTLSConnection | None = None
    for _ in range(4):
        for datagram in client.datagrams_to_send():
            if server is None:
                server, replies = DTLSConnection.accept(server_cfg, address, datagram)
                for reply in replies:
                    client.receive_datagram(reply)
            else:
                server.receive_datagram(datagram)
        if server is not None:
            break
    if server is None:
        raise RuntimeError("the in-memory DTLS server never accepted the ClientHello")
    _dtls_pump(client, server, clock, lambda: client.handshake_complete and server.handshake_complete)
    return client, server, clock


def dtls_eku_operation(pki: Pki, group: str) -> Operation:
    """One Extended Key Update over DTLS started by the client, to completion
    on both ends (ACKs included), in memory: table 3's update, over DTLS."""
    client, server, clock = dtls_pair(pki, group)
    done = next(e for e in client.events() if isinstance(e, HandshakeComplete))
    server.events()
    if not done.extended_key_update:
        raise RuntimeError("Extended Key Update was not negotiated over DTLS")

    def op() -> float:
        eku = client.eku
        assert eku is not None
        start = client.key_generation
        client.extended_key_update()
        _dtls_pump(client, server, clock,
                   lambda: client.key_generation > start and not eku.in_progress and not client.messages_in_flight)
        server.events()
        if not any(isinstance(e, KeyUpdateCompleted) for e in client.events()):
            raise RuntimeError("extended key update over DTLS did not complete")
        return 1.0

    op()
    log(f"  dtls eku {group}: in-memory pair ready")
    return op
