"""tunnel server --workers N (issue 15, "Many cores").

One supervisor, two worker processes on one port (SO_REUSEPORT): the kernel
spreads connections over both, a client resumes on either worker with a
ticket from the other (the supervisor's key, handed over its link), killing
a worker loses its connections only and the supervisor restarts it, SIGHUP
reaches every worker, SIGTERM drains them all within --grace, and --metrics
is the sum of the workers' counters.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509

from helpers.cli import LONGTLS, longtls
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles
from longtls import aio
from longtls.cli.main import main
from longtls.cli.workers import Exposition, merge_expositions, render_exposition
from longtls.config import Configuration
from longtls.errors import TLSError
from longtls.events import Event, SessionTicket, SessionTicketReceived

READY = r"tunnel server: 2 workers \(pids (\d+), (\d+)\) share"
CONNECTIONS = 20
GRACE = 10.0
T = TypeVar("T")


async def _echo_backend(port: int) -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(echo, LOOPBACK, port)


async def _scrape(port: int) -> dict[str, float]:
    """/metrics as {series: value}, read the plain way (not with the code under test)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.0 200"), head
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def _per_worker(samples: dict[str, float], family: str) -> dict[int, float]:
    """{pid: value} of a per-worker family."""
    found = {}
    for series, value in samples.items():
        m = re.fullmatch(rf'{family}{{worker="\d+",pid="(\d+)"}}', series)
        if m:
            found[int(m.group(1))] = value
    return found


async def _healthz(port: int) -> str:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    response = (await reader.read()).decode()
    writer.close()
    return response.split("\r\n", 1)[0]


class Client:
    """One TLS client connection through the tunnel, and the tickets it got."""

    def __init__(self) -> None:
        self.tickets: list[SessionTicket] = []
        self.reader: aio.TLSReader | None = None
        self.writer: aio.TLSWriter | None = None

    def _event(self, event: Event) -> None:
        if isinstance(event, SessionTicketReceived):
            self.tickets.append(event.ticket)

    async def open(self, port: int, config: Configuration) -> Client:
        self.reader, self.writer = await aio.connect(
            LOOPBACK, port, config, aio.StreamOptions(event_handler=self._event)
        )
        return self

    async def echo(self, data: bytes) -> bool:
        """Send ``data`` and read it back through the backend; False if the connection is gone."""
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(data)
            await self.writer.drain()
            got = b""
            async with asyncio.timeout(10):
                while len(got) < len(data):
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        return False
                    got += chunk
        except (OSError, TLSError):  # reset, or truncated (no close_notify): the worker died
            return False
        assert got == data
        return True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


async def _which_worker(metrics_port: int, connect: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """Run ``connect`` alone and return what it returned and the pid of the worker that took it."""
    before = _per_worker(await _scrape(metrics_port), "longtls_worker_handshakes_total")
    result = await connect()
    after = _per_worker(await _scrape(metrics_port), "longtls_worker_handshakes_total")
    (pid,) = [p for p in after if after[p] > before.get(p, 0)]
    return result, pid


def test_two_workers_spread_resume_survive_a_kill_reload_and_drain(
    tmp_pki_files: Callable[..., PkiFiles],
) -> None:
    files = tmp_pki_files("ecdsa-p256")
    port, backend_port, metrics_port = free_port(), free_port(), free_port()
    command = [
        *LONGTLS, "tunnel", "server", "--listen", f"{LOOPBACK}:{port}", "--forward", f"{LOOPBACK}:{backend_port}",
        "--cert", str(files.server.cert), "--key", str(files.server.key), "--workers", "2",
        "--metrics", f"{LOOPBACK}:{metrics_port}", "--grace", str(GRACE),
    ]
    with start_process(command, ready_pattern=READY, timeout=60) as supervisor:
        pids = {int(p) for p in supervisor.wait_for_output(READY).groups()}
        asyncio.run(_scenario(supervisor, files, pids, port, backend_port, metrics_port))


async def _scenario(
    supervisor: PeerProcess, files: PkiFiles, pids: set[int], port: int, backend_port: int, metrics_port: int,
) -> None:
    backend = await _echo_backend(backend_port)
    config = Configuration(is_client=True, server_name="localhost")
    config.load_verify_locations(str(files.server.ca))
    assert (await _healthz(metrics_port)) == "HTTP/1.0 200 OK"

    # -- the kernel spreads connections over both workers; the metrics are their sum
    clients = [await Client().open(port, config) for _ in range(CONNECTIONS)]
    assert all([await c.echo(b"x" * 100) for c in clients])
    samples = await _scrape(metrics_port)
    open_per_worker = _per_worker(samples, "longtls_worker_open_connections")
    assert set(open_per_worker) == pids
    assert all(n > 0 for n in open_per_worker.values()), open_per_worker  # 2 * 2**-20 odds otherwise
    assert samples["longtls_open_connections"] == CONNECTIONS == sum(open_per_worker.values())
    assert samples['longtls_handshakes_total{result="ok"}'] == CONNECTIONS
    assert samples['longtls_bytes_total{direction="in"}'] == CONNECTIONS * 100
    assert samples["longtls_workers"] == 2
    # Gauges that do not add up are not added: the certificate's notAfter once, as in the file.
    leaf = x509.load_pem_x509_certificate(files.server.cert.read_bytes())
    (not_after,) = [v for k, v in samples.items() if k.startswith("longtls_certificate_not_after_timestamp_seconds")]
    assert not_after == leaf.not_valid_after_utc.timestamp()

    # -- kill -9 one worker: its connections die, the other's go on, it is restarted
    victim = min(pids)
    lost = int(open_per_worker[victim])
    os.kill(victim, signal.SIGKILL)
    alive = [c for c in clients if await c.echo(b"after the kill")]
    assert len(alive) == CONNECTIONS - lost
    supervisor.wait_for_output(rf"worker \d \(pid {victim}\) killed by SIGKILL", timeout=10)

    async def restarted() -> bool:
        now = await _scrape(metrics_port)
        return now["longtls_workers"] == 2 and now["longtls_worker_restarts_total"] == 1

    await _until(restarted, "the supervisor restarts the killed worker")
    samples = await _scrape(metrics_port)
    new_pids = set(_per_worker(samples, "longtls_worker_open_connections"))
    assert victim not in new_pids and len(new_pids) == 2 and (pids - {victim}) < new_pids
    assert samples["longtls_open_connections"] == CONNECTIONS - lost
    # The dead worker's counters stay in the totals (its last scrape).
    assert samples['longtls_handshakes_total{result="ok"}'] == CONNECTIONS

    # -- a ticket from one worker resumes on the other (the restarted one too):
    # one key for the group, handed to each worker by the supervisor.
    no_eku = Configuration(**{**config.__dict__, "extended_key_update": False})  # draft-13 §6: no tickets

    async def fresh() -> Client:
        client = await Client().open(port, no_eku)
        assert await client.echo(b"ticket, please")  # the tickets came before the echo
        client.close()
        return client

    first, issuer = await _which_worker(metrics_port, fresh)
    assert first.tickets
    resumed_on: set[int] = set()
    for ticket in first.tickets * 8:  # each worker gets one within a few tries (the kernel's hash)
        resuming = Configuration(**{**no_eku.__dict__, "session_ticket": ticket})

        async def resume(config: Configuration = resuming) -> bool:
            client = await Client().open(port, config)
            assert client.writer is not None
            resumed = client.writer.handshake.resumed
            client.close()
            return resumed

        was_resumed, pid = await _which_worker(metrics_port, resume)
        assert was_resumed, f"not resumed on worker {pid}"
        resumed_on.add(pid)
        if resumed_on - {issuer}:
            break
    assert resumed_on - {issuer}, "no resumption landed on the other worker"

    # -- SIGHUP reaches every worker (each re-reads its files)
    reloads = len(re.findall(r"reloaded .* for new connections", supervisor.stderr))
    os.kill(supervisor.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while len(re.findall(r"reloaded .* for new connections", supervisor.stderr)) < reloads + 2:
        assert time.monotonic() < deadline, supervisor.describe()
        await asyncio.sleep(0.1)

    # -- SIGTERM: the workers stop accepting, live connections drain, all exit within --grace
    started = time.monotonic()
    os.kill(supervisor.proc.pid, signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert all([await c.echo(b"while draining") for c in alive])
    for client in alive:
        client.close()
    status = await asyncio.to_thread(supervisor.wait, GRACE + 5)
    assert status == 0, supervisor.describe()
    assert time.monotonic() - started < GRACE, "the drain ended because the grace period ran out"
    assert not any(_pid_alive(p) for p in new_pids)
    backend.close()


def test_merging_sums_counters_and_takes_the_largest_of_what_does_not_add_up() -> None:
    one = (
        "# HELP longtls_open_connections Open.\n# TYPE longtls_open_connections gauge\nlongtls_open_connections 3\n"
        "# HELP longtls_x_seconds D.\n# TYPE longtls_x_seconds histogram\n"
        'longtls_x_seconds_bucket{le="0.1"} 1\nlongtls_x_seconds_bucket{le="+Inf"} 2\n'
        "longtls_x_seconds_sum 0.25\nlongtls_x_seconds_count 2\n"
        "# HELP longtls_oldest_key_age_seconds Age.\n# TYPE longtls_oldest_key_age_seconds gauge\n"
        "longtls_oldest_key_age_seconds 12.5\n"
        "# HELP longtls_c_timestamp_seconds T.\n# TYPE longtls_c_timestamp_seconds gauge\n"
        'longtls_c_timestamp_seconds{subject="CN=a b,O=x"} 1800000000\n'
    )
    two = (
        "# HELP longtls_open_connections Open.\n# TYPE longtls_open_connections gauge\nlongtls_open_connections 4\n"
        "# HELP longtls_x_seconds D.\n# TYPE longtls_x_seconds histogram\n"
        'longtls_x_seconds_bucket{le="0.1"} 0\nlongtls_x_seconds_bucket{le="+Inf"} 1\n'
        "longtls_x_seconds_sum 0.5\nlongtls_x_seconds_count 1\n"
        "# HELP longtls_oldest_key_age_seconds Age.\n# TYPE longtls_oldest_key_age_seconds gauge\n"
        "# HELP longtls_c_timestamp_seconds T.\n# TYPE longtls_c_timestamp_seconds gauge\n"
        'longtls_c_timestamp_seconds{subject="CN=a b,O=x"} 1800000000\n'
    )
    text = render_exposition(merge_expositions([Exposition.parse(one), Exposition.parse(two)]))
    assert text == (
        "# HELP longtls_open_connections Open.\n# TYPE longtls_open_connections gauge\nlongtls_open_connections 7\n"
        "# HELP longtls_x_seconds D.\n# TYPE longtls_x_seconds histogram\n"
        'longtls_x_seconds_bucket{le="0.1"} 1\nlongtls_x_seconds_bucket{le="+Inf"} 3\n'
        "longtls_x_seconds_sum 0.75\nlongtls_x_seconds_count 3\n"
        "# HELP longtls_oldest_key_age_seconds Age.\n# TYPE longtls_oldest_key_age_seconds gauge\n"
        "longtls_oldest_key_age_seconds 12.5\n"
        "# HELP longtls_c_timestamp_seconds T.\n# TYPE longtls_c_timestamp_seconds gauge\n"
        'longtls_c_timestamp_seconds{subject="CN=a b,O=x"} 1800000000\n'
    )


@pytest.mark.parametrize(("extra", "message"), [
    (["--udp"], "--workers applies to TCP tunnels"),
    (["--listen", "127.0.0.1:0"], "--workers needs a fixed --listen port"),
])
def test_workers_refuses_what_cannot_be_shared(
    capsys: pytest.CaptureFixture[str], tmp_pki_files: Callable[..., PkiFiles], extra: list[str], message: str,
    tmp_path: Path,
) -> None:
    files = tmp_pki_files("ecdsa-p256")
    args = ["tunnel", "server", "--listen", f"127.0.0.1:{free_port()}", "--forward", "127.0.0.1:9",
            "--cert", str(files.server.cert), "--key", str(files.server.key), "--workers", "2", *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("longtls: error: ") and message in err, err


def test_a_worker_that_cannot_listen_stops_the_group(tmp_pki_files: Callable[..., PkiFiles]) -> None:
    files = tmp_pki_files("ecdsa-p256")
    with socket.socket() as taken:  # bound without SO_REUSEPORT: no worker can share it
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = longtls(
            "tunnel", "server", "--listen", f"{LOOPBACK}:{port}", "--forward", f"{LOOPBACK}:9",
            "--cert", str(files.server.cert), "--key", str(files.server.key), "--workers", "1", timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert "cannot listen on" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.rstrip().endswith(
        "ended before it listened (its error is above); the other workers were stopped"
    ), result.stderr
