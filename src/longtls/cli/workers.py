"""tunnel server --workers N: one port, N worker processes and their supervisor.

The process started by the command line becomes a supervisor.  It starts N
workers, each the same ``longtls tunnel server`` command in a process of its
own, listening on the same address with SO_REUSEPORT: the kernel spreads new
connections over the workers' sockets, so the TLS handshakes and the key
updates of N processes run on N cores.  The supervisor itself accepts no
connection; it

- restarts a worker that dies, after a backoff (0.25 s, doubling for each
  death within 10 s of its start, at most 30 s), logging why it ended (exit
  status or signal).  A dead worker's connections are lost (their state, keys
  included, lived in it); the other workers' go on;
- forwards SIGTERM/SIGINT (drain within --grace; a second one cuts it short)
  and SIGHUP (reload: every worker reads its files again) to the workers;
- serves --metrics for the whole process group: each worker's families,
  summed (``merge_expositions``), plus the supervisor's own
  (``longtls_workers``, ``longtls_worker_restarts_total`` and per-worker
  ``longtls_worker_open_connections{worker,pid}`` and
  ``longtls_worker_handshakes_total{worker,pid}``, which show how the kernel
  spread the connections).  ``/healthz`` answers 200 while at least one
  worker runs, else 503, so a load balancer's check sees a dead instance;
- talks to systemd (cli/systemd.py) for the group; the workers do not.

Each worker gets one end of a socketpair as an inherited file descriptor
(``--worker-link FD``, a hidden flag: its value names a descriptor, not a
secret).  Over it, in frames of ``type (1 byte) || length (uint32) ||
payload``: the supervisor first sends ``K`` with the session-ticket keys (the
one key the supervisor generated when --ticket-keys is not given, so a
client resumes on any worker: never in argv or the environment, which ``ps``
shows; with --ticket-keys the payload is empty and each worker reads the
file itself, at start-up and at every SIGHUP); the worker answers ``R`` once
it listens; then each ``M`` from the supervisor gets an ``M`` back with the
worker's metrics in the Prometheus text format.  A worker whose link ends
(the supervisor was killed) stops as on SIGTERM.

Decision (counters across a restart): the supervisor keeps the counters and
histograms of each worker's last scrape and adds those of a dead worker to
the totals, so a counter does not go backwards when a worker dies (what the
worker counted after its last scrape is lost: scrape often).  Gauges of a
dead worker go with it.

Decision (ticket_generations): the EKU texts that invalidate tickets issued
before an update (draft-2025-10, draft-05; draft-13 sends no tickets at all)
keep the per-connection generations in memory, per process.  A ticket issued
before an EKU on worker A is refused by A afterwards, but still accepted by
worker B or another machine until it expires: across processes the guard is
only as good as the ticket lifetime.  docs/scaling.md says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..metrics import Metrics, serve_metrics
from ..tunnel import format_address
from . import logs, systemd
from .common import CLIError, logger, positive_int
from .ticket_keys import KEY_LENGTH, SharedTicketKeys
from .tunnel_runner import TunnelRunner, TunnelSpec

__all__ = ["Supervisor", "WorkerLink", "add_options", "merge_expositions", "supervise"]

# -- the link between a supervisor and a worker --------------------------------------

_HEADER = struct.Struct("!cI")
#: Frame types (see the module docstring).
KEYS, READY, METRICS = b"K", b"R", b"M"
#: Larger than any exposition longtls writes; a bound for a confused peer.
_MAX_FRAME = 16 * 1024 * 1024
#: Seconds the supervisor waits for one worker's metrics before leaving it out of a scrape.
SCRAPE_TIMEOUT = 2.0

#: Restart backoff (seconds): the first delay, the cap, and how long a worker
#: must have run for its death not to count as a crash loop.
RESTART_DELAY = 0.25
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 10.0
#: Beyond --grace, how long the supervisor waits for a stopping worker
#: before SIGKILL (the workers' own drain ends within --grace).
_EXIT_SLACK = 0.5
#: The variables a worker must not inherit: systemd talks to the supervisor only.
_SUPERVISOR_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def _frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    kind, length = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if length > _MAX_FRAME:
        raise ConnectionError(f"worker link frame of {length} bytes")
    return kind, await reader.readexactly(length)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the supervisor closed the worker link")
        data += chunk
    return data


def add_options(parser: argparse.ArgumentParser) -> None:
    """--workers N, and the hidden --worker-link FD a supervisor starts its workers with."""
    parser.add_argument(
        "--workers", type=positive_int, metavar="N",
        help="run N worker processes sharing --listen (SO_REUSEPORT) under a supervisor that restarts "
        "them and sums their --metrics (docs/scaling.md)",
    )
    parser.add_argument("--worker-link", type=int, metavar="FD", help=argparse.SUPPRESS)


class WorkerLink:
    """A worker's end of the link to its supervisor."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __repr__(self) -> str:
        return f"<WorkerLink fd={self._sock.fileno()}>"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WorkerLink | None:
        """The link of a worker (``--worker-link FD``), else None.

        Reads the supervisor's ticket keys at once: call it before building
        the Configuration, which takes them from ``args.shared_ticket_keys``."""
        fd = getattr(args, "worker_link", None)
        if fd is None:
            return None
        try:
            sock = socket.socket(fileno=fd)
            sock.setblocking(True)
            kind, length = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
            payload = _recv_exactly(sock, length) if kind == KEYS and length <= _MAX_FRAME else b""
        except (OSError, ConnectionError, struct.error) as exc:
            raise CLIError(f"--worker-link {fd}: no supervisor on it ({exc})") from None
        if kind != KEYS or len(payload) % KEY_LENGTH:
            raise CLIError(f"--worker-link {fd}: not a longtls supervisor (it is started by --workers)")
        keys = tuple(payload[i:i + KEY_LENGTH] for i in range(0, len(payload), KEY_LENGTH))
        if keys:
            args.shared_ticket_keys = SharedTicketKeys(keys)
        return cls(sock)

    async def run(self, runner: TunnelRunner, specs: Sequence[TunnelSpec]) -> int:
        """Run ``runner`` as a worker: ready and metrics to the supervisor, and stop when it goes."""
        # A worker serves no metrics endpoint (the runner has no metrics
        # address): it answers the supervisor's scrapes.
        metrics = runner.metrics = Metrics()
        self._sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=self._sock)
        running = asyncio.ensure_future(runner.run(specs))
        link = asyncio.ensure_future(self._serve(reader, writer, runner, metrics, running))
        try:
            return await running
        finally:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, runner: TunnelRunner,
        metrics: Metrics, running: asyncio.Future[int],
    ) -> None:
        # Ready once the listener is up.  The runner has no readiness event
        # to wait on; its tunnels appear once they listen.
        while not (runner.tunnels and all(t.sockets for t in runner.tunnels.values())):
            if running.done():
                return
            await asyncio.sleep(0.01)
        writer.write(_frame(READY))
        while True:
            try:
                kind, _ = await _read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                # The supervisor is gone (killed, or it crashed): stop as on
                # SIGTERM, draining within --grace, rather than run unsupervised.
                logger.warning("worker %d: the supervisor went away: stopping", os.getpid())
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if kind == METRICS:
                writer.write(_frame(METRICS, metrics.render().encode()))
                await writer.drain()


# -- summing the workers' metrics ------------------------------------------------------


@dataclass
class Exposition:
    """A Prometheus text exposition, parsed: families in order, samples by series."""

    #: family name -> (help, type)
    families: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: series (``name{labels}``, as written) -> value
    samples: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exposition:
        exposition = cls()
        helps: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, _, help_text = line[7:].partition(" ")
                helps[name] = help_text
            elif line.startswith("# TYPE "):
                name, _, kind = line[7:].partition(" ")
                exposition.families[name] = (helps.get(name, ""), kind)
            elif line and not line.startswith("#"):
                # The value is the last field (longtls writes no timestamps);
                # label values may hold spaces, the value never does.
                series, _, value = line.rpartition(" ")
                exposition.samples[series] = float(value)
        return exposition

    def family_of(self, series: str) -> str:
        name = series.split("{", 1)[0]
        if name not in self.families:
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[: -len(suffix)] in self.families:
                    return name[: -len(suffix)]
        return name

    def kind_of(self, series: str) -> str:
        return self.families.get(self.family_of(series), ("", "untyped"))[1]


def _takes_max(family: str) -> bool:
    """Gauges whose sum means nothing: the same certificate's notAfter in
    every worker, build info (always 1), the oldest key's age (the oldest
    over all workers is the largest)."""
    return family.endswith(("_timestamp_seconds", "_info")) or family == "longtls_oldest_key_age_seconds"


def merge_expositions(expositions: Iterable[Exposition]) -> Exposition:
    """One exposition for a process group: counters, histograms and gauges
    summed over the workers, except the gauges ``_takes_max`` names."""
    merged = Exposition()
    for exposition in expositions:
        for name, meta in exposition.families.items():
            merged.families.setdefault(name, meta)
        for series, value in exposition.samples.items():
            if series not in merged.samples:
                merged.samples[series] = value
            elif _takes_max(exposition.family_of(series)):
                merged.samples[series] = max(merged.samples[series], value)
            else:
                merged.samples[series] += value
    return merged


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)


def render_exposition(exposition: Exposition) -> str:
    lines: list[str] = []
    by_family: dict[str, list[str]] = {name: [] for name in exposition.families}
    for series in exposition.samples:
        by_family.setdefault(exposition.family_of(series), []).append(series)
    for name, series_list in by_family.items():
        help_text, kind = exposition.families.get(name, ("", "untyped"))
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{series} {_number(exposition.samples[series])}" for series in series_list)
    return "\n".join(lines) + "\n"


# -- the supervisor ----------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    quick_deaths: int = 0
    #: The answer to the scrape under way.
    pending: asyncio.Future[bytes] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The last metrics it sent (folded into the totals when it dies).
    last: Exposition | None = None
    reader_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None and self.ready.is_set()


def _describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


class Supervisor:
    """Start ``count`` workers of ``command`` and keep them running (module docstring)."""

    def __init__(
        self, command: Sequence[str], count: int, *, ticket_keys: tuple[bytes, ...], grace: float,
        metrics_address: tuple[str, int] | None = None, listen: str = "",
    ) -> None:
        self.command = list(command)
        self.workers = [_Worker(i + 1) for i in range(count)]
        self._ticket_keys = ticket_keys
        self.grace = grace
        self.metrics_address = metrics_address
        self.listen = listen
        self.restarts = 0
        #: Counters and histograms of dead workers (their last scrape).
        self._retired = Exposition()
        self._stopping = False
        self._stop = asyncio.Event()
        #: Workers sent SIGTERM (by pid).
        self._terminated: set[int] = set()
        self.notifier = systemd.Notifier.from_environment()

    def __repr__(self) -> str:
        return f"<Supervisor workers={[w.pid for w in self.workers]} restarts={self.restarts}>"

    # -- starting and keeping workers --------------------------------------------------

    async def _spawn(self, worker: _Worker) -> None:
        parent, child = socket.socketpair()
        env = {k: v for k, v in os.environ.items() if k not in _SUPERVISOR_ONLY_ENV}
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self.command, "--worker-link", str(child.fileno()),
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL, env=env,
                # Its own session: a terminal's Ctrl-C reaches the supervisor
                # only, which stops the workers in order (one SIGTERM each).
                start_new_session=True,
            )
        finally:
            child.close()
        worker.started_at = time.monotonic()
        worker.ready = asyncio.Event()
        worker.last = None
        parent.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        worker.writer = writer
        writer.write(_frame(KEYS, b"".join(self._ticket_keys)))
        worker.reader_task = asyncio.ensure_future(self._read_link(worker, reader))

    async def _read_link(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError):
            while True:
                kind, payload = await _read_frame(reader)
                if kind == READY:
                    worker.ready.set()
                elif kind == METRICS and worker.pending is not None and not worker.pending.done():
                    worker.pending.set_result(payload)
        if worker.pending is not None and not worker.pending.done():
            worker.pending.set_exception(ConnectionError("worker link closed"))

    async def _started(self, worker: _Worker) -> bool:
        """Wait until ``worker`` listens (True) or exits first (False)."""
        assert worker.process is not None
        exited = asyncio.ensure_future(worker.process.wait())
        ready = asyncio.ensure_future(worker.ready.wait())
        await asyncio.wait({exited, ready}, return_when=asyncio.FIRST_COMPLETED)
        for task in (exited, ready):
            task.cancel()
        return worker.ready.is_set()

    async def _keep(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it dies, until the supervisor stops."""
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            self._forget(worker)
            if self._stopping:
                return
            ran = time.monotonic() - worker.started_at
            worker.quick_deaths = worker.quick_deaths + 1 if ran < STABLE_AFTER else 0
            delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** max(0, worker.quick_deaths - 1))
            logger.warning(
                "worker %d (pid %d) %s after %.1f s: its connections are lost; restarting in %g s",
                worker.index, worker.process.pid, _describe_exit(status), ran, delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            self.restarts += 1
            await self._spawn(worker)
            if await self._started(worker):
                logger.info("worker %d restarted (pid %d)", worker.index, worker.process.pid)

    def _forget(self, worker: _Worker) -> None:
        """A worker ended: keep its counters, close its link."""
        if worker.last is not None:
            kept = Exposition(
                dict(worker.last.families),
                {s: v for s, v in worker.last.samples.items() if worker.last.kind_of(s) in ("counter", "histogram")},
            )
            self._retired = merge_expositions([self._retired, kept])
            worker.last = None
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None

    # -- metrics -----------------------------------------------------------------------

    async def _scrape(self, worker: _Worker) -> Exposition | None:
        if not worker.running or worker.writer is None:
            return None
        async with worker.lock:
            worker.pending = asyncio.get_running_loop().create_future()
            try:
                worker.writer.write(_frame(METRICS))
                payload = await asyncio.wait_for(worker.pending, SCRAPE_TIMEOUT)
            except (TimeoutError, ConnectionError, OSError):
                return None  # busy or dying: left out of this scrape
            finally:
                worker.pending = None
        worker.last = Exposition.parse(payload.decode())
        return worker.last

    async def render(self) -> str:
        """The group's exposition: the workers' families summed, then the supervisor's."""
        scraped = await asyncio.gather(*(self._scrape(w) for w in self.workers))
        merged = merge_expositions([self._retired, *(e for e in scraped if e is not None)])
        own = Exposition()
        own.families["longtls_workers"] = ("Worker processes running (--workers).", "gauge")
        own.samples["longtls_workers"] = sum(w.running for w in self.workers)
        own.families["longtls_worker_restarts_total"] = ("Workers restarted after they died.", "counter")
        own.samples["longtls_worker_restarts_total"] = self.restarts
        own.families["longtls_worker_open_connections"] = (
            "Open connections (longtls_open_connections) of each worker process.", "gauge",
        )
        own.families["longtls_worker_handshakes_total"] = (
            "Completed handshakes of each worker process since it started.", "counter",
        )
        for worker, exposition in zip(self.workers, scraped, strict=True):
            if exposition is None:
                continue
            labels = f'{{worker="{worker.index}",pid="{worker.pid}"}}'
            own.samples[f"longtls_worker_open_connections{labels}"] = exposition.samples.get(
                "longtls_open_connections", 0.0
            )
            own.samples[f"longtls_worker_handshakes_total{labels}"] = exposition.samples.get(
                'longtls_handshakes_total{result="ok"}', 0.0
            )
        return render_exposition(merged) + render_exposition(own)

    def healthy(self) -> bool:
        """/healthz: at least one worker accepts connections."""
        return any(w.running for w in self.workers)

    # -- signals -----------------------------------------------------------------------

    def _signal_workers(self, sig: signal.Signals, *, again: bool = True) -> None:
        """Send ``sig`` to every running worker; ``again=False``: SIGTERM only
        those not sent one yet (a second SIGTERM cuts a worker's drain short)."""
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None:
                continue
            if sig is signal.SIGTERM:
                if not again and process.pid in self._terminated:
                    continue
                self._terminated.add(process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    def _on_stop(self) -> None:
        if not self._stopping and self.notifier is not None:
            self.notifier.stopping()
        # A second signal is forwarded too: the workers cut their grace period short.
        self._stopping = True
        self._stop.set()
        self._signal_workers(signal.SIGTERM)

    def _on_reload(self) -> None:
        if self._stopping:
            return
        if self.notifier is not None:
            self.notifier.reloading()
        logger.info("reload: SIGHUP to %d worker(s)", sum(w.running for w in self.workers))
        self._signal_workers(signal.SIGHUP)
        if self.notifier is not None:
            self.notifier.ready(self._status())

    def _status(self) -> str:
        return f"{sum(w.running for w in self.workers)} of {len(self.workers)} workers on {self.listen}"

    # -- running -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        for worker in self.workers:
            await self._spawn(worker)
        started = await asyncio.gather(*(self._started(w) for w in self.workers))
        if self._stop.is_set():  # SIGTERM while starting
            await self._stop_workers(self.grace)
            return 0
        if not all(started):
            await self._stop_workers(0.0)
            failed = [w for w, ok in zip(self.workers, started, strict=True) if not ok]
            raise CLIError(
                f"worker {failed[0].index} ended before it listened (its error is above); "
                "the other workers were stopped"
            )
        metrics_server = None
        if self.metrics_address is not None:
            try:
                metrics_server = await serve_metrics(self.render, *self.metrics_address, healthy=self.healthy)
            except OSError as exc:
                await self._stop_workers(0.0)
                raise CLIError(
                    f"cannot serve metrics on {format_address(self.metrics_address)}: {exc.strerror or exc}"
                ) from None
        keepers = [asyncio.ensure_future(self._keep(w)) for w in self.workers]
        pids = ", ".join(str(w.pid) for w in self.workers)
        line = f"tunnel server: {len(self.workers)} workers (pids {pids}) share {self.listen}"
        if metrics_server is not None and self.metrics_address is not None:
            line += f"; metrics on http://{format_address(self.metrics_address)}/metrics"
        logs.announce(line, address=self.listen, workers=[w.pid for w in self.workers])
        watchdog = None
        if self.notifier is not None:
            self.notifier.ready(self._status())
            watchdog = self.notifier.start_watchdog()
        await self._stop.wait()
        # No restarts from here on (a worker spawned during a restart is
        # signalled with the others, or ends itself when its link closes).
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        await self._stop_workers(self.grace)
        if metrics_server is not None:
            metrics_server.close()
        if watchdog is not None:
            watchdog.cancel()
        return 0

    async def _stop_workers(self, grace: float) -> None:
        """SIGTERM every worker; SIGKILL those still running after ``grace`` (and a little)."""
        self._stopping = True
        self._stop.set()
        self._signal_workers(signal.SIGTERM, again=False)
        processes = [w.process for w in self.workers if w.process is not None]
        waits = [asyncio.ensure_future(p.wait()) for p in processes]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace + _EXIT_SLACK)
            if pending:
                logger.warning("%d worker(s) still running after the grace period: killed", len(pending))
                self._signal_workers(signal.SIGKILL)
                await asyncio.wait(pending, timeout=5.0)
        for worker in self.workers:
            if worker.reader_task is not None:
                worker.reader_task.cancel()
            self._forget(worker)


def worker_command(command_line: Sequence[str]) -> list[str]:
    """The command a worker runs: this one, through the interpreter running now."""
    return [sys.executable, "-m", "longtls", *command_line]


def supervise(args: argparse.Namespace, command_line: Sequence[str]) -> int:
    """``tunnel server --workers N``: run the supervisor (``args`` already checked and built once)."""
    if args.dtls:
        raise CLIError("--workers applies to TCP tunnels (with --udp, a DTLS association must stay in one process)")
    if args.listen[1] == 0:
        raise CLIError("--workers needs a fixed --listen port (with port 0 each worker would get its own)")
    # No --ticket-keys: one key for the group, handed to each worker over its
    # link, so a ticket from one worker opens on every other.
    keys = () if args.ticket_keys else (os.urandom(KEY_LENGTH),)
    supervisor = Supervisor(
        worker_command(command_line), args.workers, ticket_keys=keys, grace=args.grace,
        metrics_address=args.metrics, listen=format_address(args.listen),
    )
    return asyncio.run(supervisor.run())
