"""Behind a real load balancer (issue 15's first proof point).

    200 clients (127.1.x.y) --TLS--> haproxy (TCP mode, roundrobin)
        --PROXY v2 + TLS--> instance A: tunnel server --workers 2 --accept-proxy --send-proxy --ticket-keys F
        --PROXY v2 + TLS--> instance B: (the same flags, the same key file)
            --PROXY v2 + HTTP--> one HTTP backend (here, asyncio), which records the client addresses

HAProxy (the Debian package) checks each instance's /healthz (``option
httpchk`` on the supervisor's --metrics port).  Each client makes a request,
an Extended Key Update and two more requests; the backend must see every
client's own address and port (HAProxy's PROXY header, read by longtls,
passed on by longtls' own).  Mid-run one worker of instance A is killed: the
clients it carried fail, all others carry on, and its supervisor restarts it.
A session ticket from one instance resumes on the other (the shared key
file), whichever way HAProxy sends the connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import LONGTLS
from helpers.peers import LOOPBACK, PeerProcess, free_port, require_binary, start_process
from longtls import aio
from longtls.config import Configuration
from longtls.errors import TLSError
from longtls.events import Event, SessionTicket, SessionTicketReceived
from longtls.wire.proxy_protocol import parse

CLIENTS = 200
READY = r"tunnel server: 2 workers \(pids (\d+), (\d+)\) share"


def haproxy_config(front: int, instances: list[tuple[int, int]]) -> str:
    servers = "\n".join(
        f"    server longtls{i} {LOOPBACK}:{port} send-proxy-v2 check port {health} inter 500ms"
        for i, (port, health) in enumerate(instances, 1)
    )
    return f"""\
global
    maxconn 2000

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend tls
    bind {LOOPBACK}:{front}
    default_backend longtls

backend longtls
    balance roundrobin
    option httpchk GET /healthz
{servers}
"""


class Backend:
    """An HTTP/1.1 server behind the tunnels: reads the PROXY v2 header
    longtls sends, then answers each request with the client address it gave."""

    def __init__(self) -> None:
        self.clients: list[tuple[str, int]] = []
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = b""
            while (parsed := parse(data)) is None:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                data += chunk
            header, used = parsed
            assert header.source is not None, header
            self.clients.append(header.source)
            client = f"{header.source[0]}:{header.source[1]}"
            pending = data[used:]
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                body = f"{client} {path}\n".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


class Client:
    def __init__(self, n: int) -> None:
        # Each client its own loopback address, as distinct clients are.
        self.source = f"127.1.{n // 250}.{n % 250 + 1}"
        self.tickets: list[SessionTicket] = []
        self.address: tuple[str, int] | None = None
        self.reader: aio.TLSReader | None = None
        self.writer: aio.TLSWriter | None = None

    def _event(self, event: Event) -> None:
        if isinstance(event, SessionTicketReceived):
            self.tickets.append(event.ticket)

    async def open(self, port: int, config: Configuration) -> None:
        self.reader, self.writer = await aio.connect(
            LOOPBACK, port, config, aio.StreamOptions(event_handler=self._event), local_addr=(self.source, 0)
        )
        self.address = self.writer.get_extra_info("sockname")[:2]

    async def get(self, path: str) -> str:
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: backend\r\n\r\n".encode())
        async with asyncio.timeout(20):
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            return (await self.reader.readexactly(length)).decode()

    async def session(self) -> bool:
        """An EKU, then two requests; False if the connection was lost."""
        assert self.writer is not None
        try:
            generation = await self.writer.update_keys()
            assert generation == 1
            for path in ("/after-eku", "/last"):
                assert await self.get(path) == f"{self.address[0]}:{self.address[1]} {path}\n"  # type: ignore[index]
        except (OSError, TLSError, asyncio.IncompleteReadError):
            return False
        return True


def _metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


async def _scrape(port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    response = (await reader.read()).decode()
    writer.close()
    return _metrics(response.partition("\r\n\r\n")[2])


def _workers(values: dict[str, float]) -> dict[int, float]:
    """{pid: open connections} of an instance's workers."""
    return {
        int(m.group(1)): value for series, value in values.items()
        if (m := re.fullmatch(r'longtls_worker_open_connections\{worker="\d+",pid="(\d+)"\}', series))
    }


@contextlib.contextmanager
def _instance(files: Any, keys: Path, port: int, backend: int, metrics: int) -> Iterator[PeerProcess]:
    command = [
        *LONGTLS, "tunnel", "server", "--listen", f"{LOOPBACK}:{port}", "--forward", f"{LOOPBACK}:{backend}",
        "--cert", str(files.server.chain), "--key", str(files.server.key), "--workers", "2",
        "--accept-proxy", "--send-proxy", "--ticket-keys", str(keys), "--metrics", f"{LOOPBACK}:{metrics}",
        "--grace", "3",
    ]
    with start_process(command) as process:  # ready: see _ready (both instances start at once)
        yield process


@pytest.mark.time_limit(150)  # six Pythons, HAProxy and 200 clients: 13-36 s seen, more on a loaded machine
def test_two_instances_with_two_workers_each_behind_haproxy(tmp_pki_files: Any, tmp_path: Path) -> None:
    require_binary("haproxy")
    files = tmp_pki_files("ecdsa-p256")
    keys = tmp_path / "ticket.keys"
    keys.write_text("# shared by both instances\n" + base64.b64encode(os.urandom(32)).decode() + "\n")
    keys.chmod(0o600)
    backend_port, front = free_port(), free_port()
    a, b = (free_port(), free_port()), (free_port(), free_port())  # (TLS port, metrics port)
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(front, [a, b]))
    with (
        _instance(files, keys, a[0], backend_port, a[1]) as instance_a,
        _instance(files, keys, b[0], backend_port, b[1]) as instance_b,
    ):
        for instance in (instance_a, instance_b):
            instance.wait_for_output(READY, timeout=60)
        with start_process(["haproxy", "-db", "-f", str(config)], port=front) as lb:
            try:
                asyncio.run(_scenario(files, front, a[1], b[1], instance_a, backend_port))
            except BaseException:
                print(lb.describe(), instance_a.describe(), instance_b.describe(), sep="\n")
                raise


async def _scenario(
    files: Any, front: int, metrics_a: int, metrics_b: int, instance_a: PeerProcess, backend_port: int
) -> None:
    backend = Backend()
    await backend.start(backend_port)
    config = Configuration(is_client=True, server_name="localhost")
    config.load_verify_locations(str(files.ca))

    # -- 200 clients through HAProxy, one request each
    clients = [Client(n) for n in range(CLIENTS)]
    limit = asyncio.Semaphore(50)  # HAProxy and four workers on two cores: not all handshakes at once

    async def first(client: Client) -> None:
        async with limit:
            await client.open(front, config)
            assert client.address is not None
            assert await client.get("/first") == f"{client.address[0]}:{client.address[1]} /first\n"

    await asyncio.gather(*(first(c) for c in clients))
    # The backend saw each client's own address and port, not HAProxy's nor longtls'.
    assert sorted(backend.clients) == sorted(c.address for c in clients if c.address)
    values_a, values_b = await _scrape(metrics_a), await _scrape(metrics_b)
    assert values_a["longtls_open_connections"] + values_b["longtls_open_connections"] == CLIENTS
    assert values_a["longtls_open_connections"] > 0 and values_b["longtls_open_connections"] > 0

    # -- kill one worker of instance A: its clients fail, every other one goes on
    workers_a = _workers(values_a)
    victim = max(workers_a, key=lambda pid: workers_a[pid])
    lost = int(workers_a[victim])
    assert lost > 0, workers_a
    os.kill(victim, signal.SIGKILL)

    async def second(client: Client) -> bool:
        async with limit:
            return await client.session()

    survived = await asyncio.gather(*(second(c) for c in clients))
    assert survived.count(False) == lost and survived.count(True) == CLIENTS - lost
    for client in clients:
        if client.writer is not None:
            client.writer.close()
    instance_a.wait_for_output(rf"worker \d \(pid {victim}\) killed by SIGKILL", timeout=10)
    deadline = time.monotonic() + 30
    while not (
        (now := await _scrape(metrics_a))["longtls_workers"] == 2 and now["longtls_worker_restarts_total"] == 1
    ):
        assert time.monotonic() < deadline, "instance A did not restart its worker"
        await asyncio.sleep(0.2)
    assert victim not in _workers(now)

    # -- a ticket from one instance resumes on the other
    no_eku = Configuration(**{**config.__dict__, "extended_key_update": False})  # EKU draft-13 §6: no tickets

    async def handshakes() -> tuple[float, float]:
        a, b = await _scrape(metrics_a), await _scrape(metrics_b)
        return a['longtls_handshakes_total{result="ok"}'], b['longtls_handshakes_total{result="ok"}']

    async def which_instance(client: Client, configuration: Configuration) -> str:
        before = await handshakes()
        await client.open(front, configuration)
        assert client.address is not None
        await client.get("/tickets")  # the tickets came before the answer
        after = await handshakes()
        assert client.writer is not None
        client.writer.close()
        (instance,) = [name for name, x, y in zip("AB", before, after, strict=True) if y > x]
        return instance

    issuer_client = Client(CLIENTS)
    issuer = await which_instance(issuer_client, no_eku)
    assert issuer_client.tickets
    resumed_on = set()
    for n, ticket in enumerate(issuer_client.tickets * 4):
        client = Client(CLIENTS + 1 + n)
        instance = await which_instance(client, Configuration(**{**no_eku.__dict__, "session_ticket": ticket}))
        assert client.writer is not None and client.writer.handshake.resumed, instance
        resumed_on.add(instance)
        if instance != issuer:
            break
    assert resumed_on - {issuer}, "HAProxy never sent a resumption to the other instance"
    assert backend.server is not None
    backend.server.close()
