"""Scale (issue 16): many idle connections on one ``longtls.aio`` server, each
making one Extended Key Update within a window.

    .venv/bin/python bench/scale.py                      # 10,000 connections, 60 s window
    .venv/bin/python bench/scale.py --quick              # 500 connections, 10 s window
    .venv/bin/python bench/scale.py --connections 2000 --window 30
    .venv/bin/python bench/scale.py --quick --profile-server /tmp/server.prof

Three kinds of process, so that the server has a process (and the file
descriptors of one process) to itself:

* the **server**: ``longtls.aio.start_server`` with an echo handler and the
  library's default Configuration (so the default key exchange group,
  X25519MLKEM768, the default suite and Extended Key Update draft-13 with the
  server's default pacing of one peer update a second per connection);
* the **clients**: ``--client-processes`` (2) processes that open the
  connections between them with ``longtls.aio.connect``, a bounded number of
  handshakes in flight each (the ramp-up), leave them idle, and then, once
  told, make one EKU on each connection at an instant drawn uniformly at
  random over the window, followed by an echo that proves both ends use the
  new keys;
* this process, which runs the other two and is itself the **well-behaved
  client**: one more connection sending a 32-byte request every 100 ms and
  timing the echo, during the ramp-up, the idle phase and the EKU window.

The server's memory is read by the server itself from ``/proc/self/status``
(VmRSS, VmHWM) after ``gc.collect()`` and ``malloc_trim(0)``, so that RSS
is live memory rather than what the allocator kept; its CPU time from
``/proc/<pid>/stat``.  Nothing here is judged by time in a test: ``--quick``
only proves the script runs.

Importable: ``scale_section(connections, window, quick)`` returns the
markdown tables and the target rows for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import random
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from harness import Pki, log, release_free_memory, table  # noqa: E402

import longtls.aio  # noqa: E402
from longtls.config import Configuration  # noqa: E402
from longtls.crypto.certificates import TrustStore  # noqa: E402
from longtls.errors import TLSError  # noqa: E402

HOST = "127.0.0.1"
SCALE_PY = Path(__file__).resolve()
#: The well-behaved client's request, echoed back.
PROBE = bytes(range(32))
PROBE_INTERVAL = 0.1
#: What each connection echoes after its EKU.
AFTER_EKU = b"after the update"
#: Handshakes in flight per client process during the ramp-up: enough to keep
#: the server busy, few enough that none waits near the 30 s handshake timeout
#: and the listen backlog (somaxconn, tcp_max_syn_backlog) never overflows.
RAMP_IN_FLIGHT = 32
#: Each EKU starts at least this long before the window ends, so that a
#: completion by the window's end is possible for every one of them.
EKU_RESERVE = 1.0
#: Seconds the echo after an EKU may take before it counts as a failure.
ECHO_TIMEOUT = 120.0
#: File descriptors a process needs besides its connections.
FD_SPARE = 64


@dataclass(frozen=True)
class Plan:
    connections: int
    window: float
    idle: float  # seconds of the idle phase, between ramp-up and window
    client_processes: int
    seed: int

    @classmethod
    def make(cls, connections: int | None, window: float | None, quick: bool,
             client_processes: int = 2, seed: int = 16) -> Plan:
        if quick:
            return cls(connections or 500, window or 10.0, 3.0, client_processes, seed)
        return cls(connections or 10_000, window or 60.0, 10.0, client_processes, seed)


# ------------------------------------------------------------------- helpers


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE to its hard limit; refuse to run if that is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"this process needs {needed} file descriptors but the hard limit is {hard} "
            "(ulimit -Hn): fewer connections, or more client processes"
        )
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = needed if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def memory_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB, after garbage collection and malloc_trim."""
    release_free_memory()
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def schedule_seconds(pids: Sequence[int]) -> tuple[float, float]:
    """CPU seconds the processes ran, and seconds they were runnable but
    waited for a CPU (other processes had it), so far: the first two fields
    of /proc/<pid>/schedstat, in nanoseconds (Documentation/scheduler/sched-stats)."""
    ran = waited = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
        ran += int(fields[0])
        waited += int(fields[1])
    return ran / 1e9, waited / 1e9


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100), at least 1
    return ordered[int(rank) - 1]


def server_configuration(pki: Pki) -> Configuration:
    """The library's defaults, with the benchmark certificate."""
    return Configuration(is_client=False, certificate_chain=list(pki.chain), private_key=pki.key)


def client_configuration(pki: Pki) -> Configuration:
    return Configuration(is_client=True, server_name="localhost", trust_store=TrustStore([pki.ca_cert]))


async def read_stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def emit(kind: str, payload: dict[str, Any]) -> None:
    """One line to the parent: ``KIND {json}``."""
    print(f"{kind} {json.dumps(payload)}", flush=True)


# -------------------------------------------------------------------- server


@dataclass
class ServerCounts:
    handled: int = 0  # connections whose handshake completed (the handler ran)
    live: int = 0
    echoed: int = 0  # requests echoed


async def _echo(counts: ServerCounts, reader: longtls.aio.TLSReader, writer: longtls.aio.TLSWriter) -> None:
    counts.handled += 1
    counts.live += 1
    try:
        while data := await reader.read(65536):
            writer.write(data)
            counts.echoed += 1
            await writer.drain()
    except (ConnectionError, OSError, TLSError):
        pass
    finally:
        counts.live -= 1
        writer.close()


class FullCollections:
    """The automatic full (generation 2) collections of Python's cyclic garbage
    collector, timed: each stops the event loop, so every connection waits."""

    def __init__(self) -> None:
        self.explicit = False  # our own gc.collect() calls are not counted
        self.pauses: list[float] = []
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2 or self.explicit:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._start)

    def take(self) -> list[float]:
        pauses, self.pauses = self.pauses, []
        return pauses


async def serve(pki: Pki, connections: int) -> None:
    """Serve on an ephemeral port; answer ``STATS`` lines on stdin; end at EOF."""
    raise_fd_limit(connections + FD_SPARE)
    counts = ServerCounts()
    collections = FullCollections()
    server = await longtls.aio.start_server(
        lambda r, w: _echo(counts, r, w), HOST, 0, server_configuration(pki), backlog=4096
    )
    emit("PORT", {"port": server.sockets[0].getsockname()[1]})
    loop = asyncio.get_running_loop()
    while line := await read_stdin_line():
        if line.strip() == "STATS":
            automatic = collections.take()
            collections.explicit = True
            memory = memory_status()
            # What an idle connection leaves for the event loop and the
            # garbage collector: timers scheduled (asyncio's private heap,
            # read for this report only) and the objects a full collection
            # walks, with the time one takes (the pause every connection sees).
            start, start_cpu = time.perf_counter(), time.process_time()
            gc.collect()
            pause, pause_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            collections.explicit = False
            emit("STATS", {**memory, "handled": counts.handled, "live": counts.live,
                           "echoed": counts.echoed, "timers": len(getattr(loop, "_scheduled", ())),
                           "objects": len(gc.get_objects()), "gc_seconds": pause,
                           "gc_cpu_seconds": pause_cpu, "full_collections": automatic})
    server.close()


def server_main(pki_dir: Path, connections: int, profile: Path | None) -> None:
    pki = Pki.load(pki_dir)
    if profile is None:
        asyncio.run(serve(pki, connections))
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(pki, connections))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


# ------------------------------------------------------------------- clients


@dataclass
class Failures:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, exc: BaseException) -> None:
        key = f"{what}: {type(exc).__name__}"
        self.counts[key] = self.counts.get(key, 0) + 1


async def _open(port: int, configuration: Configuration, gate: asyncio.Semaphore,
                failures: Failures) -> tuple[longtls.aio.TLSReader, longtls.aio.TLSWriter] | None:
    async with gate:
        try:
            return await longtls.aio.connect(HOST, port, configuration)
        except (OSError, TLSError) as exc:
            failures.add("handshake", exc)
            return None


async def _eku(reader: longtls.aio.TLSReader, writer: longtls.aio.TLSWriter, t0: float,
               offset: float, failures: Failures) -> tuple[float, float] | None:
    """One EKU at ``t0 + offset`` (epoch seconds), then an echo: (started, completed), relative to t0."""
    await asyncio.sleep(max(0.0, t0 + offset - time.time()))
    started = time.time() - t0
    try:
        before = writer.connection.key_generation
        if await writer.update_keys() != before + 1:
            raise RuntimeError("the extended key update did not advance the generation")
        writer.write(AFTER_EKU)
        # The update itself is bounded by the Configuration's rekey_timeout
        # (30 s); the echo by this, so that a lost answer cannot hang the run.
        echo = await asyncio.wait_for(reader.readexactly(len(AFTER_EKU)), ECHO_TIMEOUT)
        if echo != AFTER_EKU:
            raise RuntimeError("the echo after the update differs")
    except (OSError, EOFError, RuntimeError, TLSError) as exc:  # TimeoutError is an OSError
        failures.add("eku", exc)
        return None
    return started, time.time() - t0


async def _close(writer: longtls.aio.TLSWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 10)
    except (TimeoutError, OSError):
        writer.abort()


async def clients(pki: Pki, port: int, count: int, seed: int) -> None:
    """Open ``count`` connections, report READY; on ``GO t0 window`` make the EKUs, report DONE."""
    raise_fd_limit(count + FD_SPARE)
    configuration = client_configuration(pki)
    failures = Failures()
    gate = asyncio.Semaphore(RAMP_IN_FLIGHT)
    start = time.time()
    opened = await asyncio.gather(*(_open(port, configuration, gate, failures) for _ in range(count)))
    end = time.time()
    live = [c for c in opened if c is not None]
    emit("READY", {"opened": len(live), "failures": failures.counts, "start": start, "end": end})

    line = (await read_stdin_line()).split()
    if not line or line[0] != "GO":
        return
    t0, window = float(line[1]), float(line[2])
    rng = random.Random(seed)
    failures = Failures()
    results = await asyncio.gather(*(
        _eku(reader, writer, t0, rng.uniform(0.0, window - EKU_RESERVE), failures)
        for reader, writer in live
    ))
    done = [r for r in results if r is not None]
    emit("DONE", {"started": [r[0] for r in done], "completed": [r[1] for r in done],
                  "failures": failures.counts})

    await read_stdin_line()  # CLOSE, or EOF
    await asyncio.gather(*(_close(writer) for _, writer in live))


# ------------------------------------------------------- the well-behaved one


class Probe:
    """One connection, a 32-byte request every 100 ms, round trips by phase."""

    def __init__(self, reader: longtls.aio.TLSReader, writer: longtls.aio.TLSWriter) -> None:
        self.reader, self.writer = reader, writer
        self.phase = "ramp-up"
        self.samples: dict[str, list[float]] = {}
        self.failure: BaseException | None = None
        self._stop = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while not self._stop:
                phase = self.phase
                start = time.perf_counter()
                self.writer.write(PROBE)
                if await self.reader.readexactly(len(PROBE)) != PROBE:
                    raise RuntimeError("the probe's echo differs")
                self.samples.setdefault(phase, []).append(time.perf_counter() - start)
                # Every 100 ms on a fixed schedule; a late answer is not
                # followed by a burst to catch up.
                next_at = max(next_at + PROBE_INTERVAL, loop.time())
                await asyncio.sleep(next_at - loop.time())
        except (OSError, EOFError, RuntimeError, TLSError) as exc:
            self.failure = exc

    def stop(self) -> None:
        self._stop = True


# -------------------------------------------------------------- orchestrator


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process

    @classmethod
    async def start(cls, name: str, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SCALE_PY), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24,
        )
        return cls(name, proc)

    async def expect(self, kind: str, timeout: float | None = None) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout)).decode()
        got, _, payload = line.partition(" ")
        if got != kind:
            raise RuntimeError(f"{self.name}: expected {kind}, got {line[:200]!r} (exit {self.proc.returncode})")
        result: dict[str, Any] = json.loads(payload)
        return result

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def finish(self, timeout: float = 60) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Result:
    plan: Plan
    group: str = ""
    suite: str = ""
    eku_profile: str = ""
    opened: int = 0
    handshake_failures: dict[str, int] = field(default_factory=dict)
    ramp_seconds: float = 0.0
    server_handled: int = 0
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> the server's STATS
    #: checkpoint -> role ("server", "clients") -> (CPU seconds ran, seconds waited for a CPU)
    schedule: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    #: checkpoint -> the machine's 1-minute load average (/proc/loadavg)
    load: dict[str, float] = field(default_factory=dict)
    eku_started: list[float] = field(default_factory=list)
    eku_completed: list[float] = field(default_factory=list)
    eku_failures: dict[str, int] = field(default_factory=dict)
    probe: dict[str, list[float]] = field(default_factory=dict)
    probe_failure: str = ""


async def _stats(server: Child) -> dict[str, Any]:
    server.send("STATS")
    return await server.expect("STATS", 120)


async def run_scale(plan: Plan, profile_server: Path | None = None) -> Result:
    result = Result(plan)
    per_process = -(-plan.connections // plan.client_processes)
    raise_fd_limit(FD_SPARE)
    pki = Pki.create(Path(tempfile.mkdtemp(prefix="longtls-scale-")))
    server_args = ["--internal-role", "server", "--pki", str(pki.directory),
                   "--connections", str(plan.connections)]
    if profile_server is not None:
        server_args += ["--profile-server", str(profile_server)]
    server = await Child.start("server", *server_args)
    workers: list[Child] = []
    probe: Probe | None = None
    probe_task: asyncio.Task[None] | None = None
    try:
        port = (await server.expect("PORT", 60))["port"]
        reader, writer = await longtls.aio.connect(HOST, port, client_configuration(pki))
        handshake = writer.handshake
        result.group = handshake.group.name if handshake.group is not None else "?"
        result.suite = handshake.cipher_suite.name
        result.eku_profile = str(handshake.eku_profile) if handshake.extended_key_update else "none"
        probe = Probe(reader, writer)
        probe_task = asyncio.create_task(probe.run())
        await asyncio.sleep(1.0)
        result.memory["baseline"] = await _stats(server)

        def mark(checkpoint: str) -> None:
            result.schedule[checkpoint] = {
                "server": schedule_seconds([server.proc.pid]),
                "clients": schedule_seconds([w.proc.pid for w in workers]),
            }
            result.load[checkpoint] = float(Path("/proc/loadavg").read_text().split()[0])

        mark("ramp-up start")

        log(f"scale: opening {plan.connections} connections from {plan.client_processes} processes")
        remaining = plan.connections
        for index in range(plan.client_processes):
            count = min(per_process, remaining)
            remaining -= count
            workers.append(await Child.start(
                f"clients {index}", "--internal-role", "clients", "--pki", str(pki.directory),
                "--port", str(port), "--connections", str(count), "--seed", str(plan.seed + index),
            ))
        ready = [await w.expect("READY", None) for w in workers]
        result.opened = sum(r["opened"] for r in ready)
        for r in ready:
            for key, n in r["failures"].items():
                result.handshake_failures[key] = result.handshake_failures.get(key, 0) + n
        result.ramp_seconds = max(r["end"] for r in ready) - min(r["start"] for r in ready)
        mark("ramp-up end")
        stats = await _stats(server)
        result.server_handled = stats["handled"] - 1  # the probe's connection
        result.memory["after ramp-up"] = stats
        log(f"scale: {result.opened} open in {result.ramp_seconds:.1f} s; idle for {plan.idle:.0f} s")

        probe.phase = "idle"
        mark("idle start")
        await asyncio.sleep(plan.idle)
        mark("idle end")

        t0 = time.time() + 1.0
        for w in workers:
            w.send(f"GO {t0!r} {plan.window!r}")
        await asyncio.sleep(max(0.0, t0 - time.time()))
        probe.phase = "EKU window"
        mark("EKU window start")
        log(f"scale: one EKU per connection within {plan.window:.0f} s")
        done_waits = [asyncio.create_task(w.expect("DONE", None)) for w in workers]
        await asyncio.sleep(plan.window)
        mark("EKU window end")
        probe.phase = "after the window"
        dones = await asyncio.gather(*done_waits)
        mark("EKUs done")
        for d in dones:
            result.eku_started += d["started"]
            result.eku_completed += d["completed"]
            for key, n in d["failures"].items():
                result.eku_failures[key] = result.eku_failures.get(key, 0) + n
        result.memory["after the EKUs"] = await _stats(server)
    finally:
        if probe is not None and probe_task is not None:
            probe.stop()
            await asyncio.wait([probe_task], timeout=5)
            result.probe = probe.samples
            result.probe_failure = repr(probe.failure) if probe.failure else ""
            probe.writer.close()
        for w in workers:
            w.send("CLOSE")
        for w in workers:
            await w.finish()
        await server.finish()
    if profile_server is not None:
        log(f"scale: server profile in {profile_server}; top 30 by own time:")
        stats_out = pstats.Stats(str(profile_server), stream=sys.stderr)
        stats_out.sort_stats("tottime").print_stats(30)
    return result


# -------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def report(result: Result) -> tuple[str, list[tuple[str, str, str, str]]]:
    plan = result.plan
    n = plan.connections
    completed = result.eku_completed
    within = sum(1 for c in completed if c <= plan.window)
    base = result.memory.get("baseline", {})
    ramp = result.memory.get("after ramp-up", {})
    after = result.memory.get("after the EKUs", {})
    per_conn = (ramp["VmRSS"] - base["VmRSS"]) / max(result.server_handled, 1) if ramp and base else 0.0
    eku_latency = [c - s for s, c in zip(result.eku_started, completed, strict=True)]

    def used(start: str, end: str, role: str) -> tuple[float, float]:
        """(CPU seconds ran, seconds waited for a CPU) of ``role`` between two checkpoints."""
        if start not in result.schedule or end not in result.schedule:
            return float("nan"), float("nan")
        (ran0, waited0), (ran1, waited1) = result.schedule[start][role], result.schedule[end][role]
        return ran1 - ran0, waited1 - waited0

    def cpu(start: str, end: str) -> str:
        server, clients = used(start, end, "server"), used(start, end, "clients")
        return (f"server {server[0]:.1f} s (waited {server[1]:.1f} s), "
                f"clients {clients[0]:.1f} s (waited {clients[1]:.1f} s)")

    handshake_cpu = used("ramp-up start", "ramp-up end", "server")[0]
    eku_cpu = used("EKU window start", "EKUs done", "server")[0]

    def collections(stats: dict[str, Any]) -> str:
        pauses = stats.get("full_collections", [])
        if not pauses:
            return "none"
        return f"{len(pauses)}, longest {_ms(max(pauses))} ms, {_ms(sum(pauses))} ms in all"

    def failures(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"

    rows = [
        ["key exchange, suite, EKU", f"{result.group}, {result.suite}, {result.eku_profile}"],
        ["connections established", f"{result.opened} of {n} (server handled {result.server_handled})"],
        ["handshake failures", failures(result.handshake_failures)],
        ["ramp-up", f"{result.ramp_seconds:.1f} s, {result.opened / max(result.ramp_seconds, 1e-9):.0f} handshakes/s"],
        ["CPU ran (waited for a CPU) during ramp-up", cpu("ramp-up start", "ramp-up end")],
        ["server CPU per handshake", f"{handshake_cpu * 1000 / max(result.opened, 1):.2f} ms"],
        ["server RSS before (1 connection)", f"{_mib(base.get('VmRSS', 0))}"],
        ["server RSS after ramp-up (VmRSS / VmHWM)", f"{_mib(ramp.get('VmRSS', 0))} / {_mib(ramp.get('VmHWM', 0))}"],
        ["server RSS per idle connection", f"{per_conn:.1f} KiB"],
        ["server after ramp-up: timers, objects the collector tracks, one full gc.collect()",
         f"{ramp.get('timers', 0)} timers, {ramp.get('objects', 0)} objects "
         f"({(ramp.get('objects', 0) - base.get('objects', 0)) / max(result.server_handled, 1):.0f} per "
         f"connection), {_ms(ramp.get('gc_seconds', float('nan')))} ms "
         f"({_ms(ramp.get('gc_cpu_seconds', float('nan')))} ms CPU)"],
        ["server: automatic full collections during ramp-up", collections(ramp)],
        [f"CPU ran (waited) in the {plan.idle:.0f} s idle", cpu("idle start", "idle end")],
        ["EKUs completed within the window", f"{within} of {n} ({within * 100 / n:.1f}%), "
         f"{len(completed) - within} later"],
        ["EKU failures", failures(result.eku_failures)],
        ["EKU + echo, client's view p50 / p99 / max",
         f"{_ms(percentile(eku_latency, 50))} / {_ms(percentile(eku_latency, 99))} / "
         f"{_ms(max(eku_latency, default=float('nan')))} ms"],
        [f"CPU ran (waited) in the {plan.window:.0f} s window", cpu("EKU window start", "EKU window end")],
        ["machine load average (1 min) at ramp-up end, window start, window end",
         " / ".join(f"{result.load.get(c, float('nan')):.1f}"
                    for c in ("ramp-up end", "EKU window start", "EKU window end"))],
        ["server CPU per EKU (window start to the last EKU)",
         f"{eku_cpu * 1000 / max(len(completed), 1):.2f} ms"],
        ["server: automatic full collections from idle to the last EKU", collections(after)],
        ["server RSS after the EKUs (VmRSS / VmHWM)",
         f"{_mib(after.get('VmRSS', 0))} / {_mib(after.get('VmHWM', 0))}"],
    ]
    main = table(
        f"Scale: {n} idle connections on one longtls.aio server, one EKU each within {plan.window:.0f} s",
        ["", "measured"], rows, text_columns=2,
        notes=(f"Server: one process, echo handler, the default Configuration. Clients: "
               f"{plan.client_processes} processes, {RAMP_IN_FLIGHT} handshakes in flight each; then "
               f"{plan.idle:.0f} s idle; then each connection's EKU (draft-13) starts at a uniformly "
               f"random instant in the window's first {plan.window - EKU_RESERVE:.0f} s, followed by "
               "an echo; 'within the window' counts those whose echo came back before it ended. "
               "RSS after gc.collect() and malloc_trim(0); per connection: (after ramp-up - before) "
               "/ connections."),
    )
    probe_rows = []
    for phase in ("ramp-up", "idle", "EKU window"):
        samples = result.probe.get(phase, [])
        probe_rows.append([phase, str(len(samples)), _ms(percentile(samples, 50)),
                           _ms(percentile(samples, 99)), _ms(max(samples, default=float("nan")))])
    probe_notes = "A 32-byte request every 100 ms on its own connection, round trip to the echo."
    if result.probe_failure:
        probe_notes += f" The probe failed: {result.probe_failure}."
    probe_table = table("Well-behaved client: round trip, ms", ["phase", "requests", "p50", "p99", "max"],
                        probe_rows, notes=probe_notes)
    idle_p99 = percentile(result.probe.get("idle", []), 99)
    window_p99 = percentile(result.probe.get("EKU window", []), 99)
    all_in = within == n and not result.eku_failures
    targets = [
        (f"all {n} EKUs within {plan.window:.0f} s", f"{n} idle connections, one aio server",
         f"{within}/{n} ({within * 100 / n:.1f}%)", "met" if all_in else "**missed**"),
        ("server RSS per idle connection", f"{n} connections, EKU negotiated", f"{per_conn:.1f} KiB",
         "reported"),
        ("p99 of a well-behaved client", "idle / EKU window", f"{_ms(idle_p99)} / {_ms(window_p99)} ms",
         "reported"),
    ]
    return main + "\n" + probe_table, targets


def scale_section(connections: int, window: float, quick: bool) -> tuple[str, list[tuple[str, str, str, str]]]:
    """The "scale" section of bench/run.py: the tables and the target rows
    (target, case, measured, result)."""
    plan = Plan.make(connections, window, quick)
    return report(asyncio.run(run_scale(plan)))


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, help="idle connections (default 10000, --quick 500)")
    parser.add_argument("--window", type=float, help="seconds within which each makes one EKU (default 60, --quick 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 connections, 10 s window")
    parser.add_argument("--client-processes", type=int, default=2, help="processes holding the connections (2)")
    parser.add_argument("--profile-server", type=Path, metavar="FILE",
                        help="run the server under cProfile, write its stats to FILE and print the top")
    parser.add_argument("--internal-role", choices=("server", "clients"), help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=16, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.internal_role == "server":
        server_main(args.pki, args.connections, args.profile_server)
        return 0
    if args.internal_role == "clients":
        asyncio.run(clients(Pki.load(args.pki), args.port, args.connections, args.seed))
        return 0
    plan = Plan.make(args.connections, args.window, args.quick, args.client_processes)
    if plan.window <= EKU_RESERVE:
        parser.error(f"--window must be more than {EKU_RESERVE} s")
    gc.collect()
    result = asyncio.run(run_scale(plan, args.profile_server))
    text, targets = report(result)
    print(text)
    print(table("Targets", ["target", "case", "measured", "result"], [list(t) for t in targets], text_columns=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
