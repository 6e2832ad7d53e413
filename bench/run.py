"""longtls side by side with Python ssl, pyOpenSSL and tlslite-ng.

    .venv/bin/python bench/run.py                 # everything (several minutes: scale holds 10,000 connections)
    .venv/bin/python bench/run.py --quick         # a smoke run, under a minute
    .venv/bin/python bench/run.py --only bulk,eku # some sections
    .venv/bin/python bench/run.py --only dtls,mls # DTLS 1.3 (vs wolfSSL) and MLS mode
    .venv/bin/python bench/run.py --profile eku   # cProfile of one longtls case

Prints a header describing the machine, then one markdown table per
measurement and a summary of issue 16's targets (met / missed, computed from
this run).  Every number is the median of ``--rounds`` rounds measured
round-robin across the columns of its table, all in this one run.  Progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_cases
import dtls_cases
import harness
import longtls_cases
import mls_cases
import peers
import wolfssl_cases
from harness import (
    HANDSHAKE_SUITE,
    KIB,
    MIB,
    SUITES,
    Cell,
    LocalCell,
    Operation,
    Pki,
    RemoteCell,
    Spec,
    Worker,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    log,
    table,
)

SECTIONS = ("handshakes", "bulk", "eku", "memory", "asyncio", "dtls", "mls", "scale")
NAMES = {"longtls": "longtls", "ssl": "ssl", "pyopenssl": "pyOpenSSL", "tlslite": "tlslite-ng"}
PEERS = ("ssl", "pyopenssl", "tlslite")
HANDSHAKE_CASES = (("x25519", False), ("X25519MLKEM768", False), ("x25519", True), ("X25519MLKEM768", True))
EKU_GROUPS = ("x25519", "secp256r1", "X25519MLKEM768", "MLKEM768")
BULK_IMPLS = ("longtls", "ssl", "pyopenssl", "tlslite", "floor", "aead")
MEMORY_IMPLS = ("longtls", "ssl", "pyopenssl", "dtls", "mls")
MEMORY_NAMES = {**NAMES, "dtls": "longtls DTLS", "mls": "longtls MLS"}


@dataclass(frozen=True)
class Settings:
    quick: bool
    rounds: int
    min_time: float  # seconds per timed round of one cell
    connections: int  # memory and asyncio sections
    memory_rounds: int
    aio_rounds: int
    # Bytes per send(): 16 records of 16 KiB (see harness.pin_malloc for why
    # the allocator is pinned: transient buffers of this size page-fault otherwise).
    bulk_write: int = 256 * KIB
    tlslite_write: int = 16 * KIB  # tlslite-ng seals ~0.3 MB/s: one record per send
    aio_total: int = 16 * MIB  # bytes per SINK command
    aio_write: int = 256 * KIB
    # throughput rounds, each against fresh server processes (aio_cases.run_all)
    aio_rate_rounds: int = 7
    # dtls: handshakes per client run, bytes echoed per run, updates over
    # loopback per run, rounds of each (every pair once per round)
    dtls_handshakes: int = 50
    dtls_echo_bytes: int = 2 * MIB
    dtls_updates: int = 100
    dtls_rounds: int = 3
    # scale (bench/scale.py): idle connections and the window of their EKUs
    # (--quick: its own quick mode's; fewer saved little, its ramp-up and
    # process start-ups dominate)
    scale_connections: int = 10_000
    scale_window: float = 60.0

    @classmethod
    def make(cls, quick: bool, rounds: int | None) -> Settings:
        if quick:
            return cls(True, rounds or 3, 0.05, 100, 1, 1, aio_total=2 * MIB, aio_rate_rounds=1, dtls_handshakes=5,
                       dtls_echo_bytes=64 * KIB, dtls_updates=10, dtls_rounds=1, scale_connections=500,
                       scale_window=10.0)
        return cls(False, rounds or 5, 0.5, 1000, 3, 3)


# ---------------------------------------------------------------- operations

HANDSHAKES: dict[str, Callable[[Pki, str, bool], Operation]] = {
    "longtls": longtls_cases.handshake_operation,
    "ssl": peers.ssl_handshake_operation,
    "pyopenssl": peers.pyopenssl_handshake_operation,
    "tlslite": peers.tlslite_handshake_operation,
}
BULK: dict[str, Callable[[Pki, str, int], Operation]] = {
    "longtls": longtls_cases.bulk_operation,
    "ssl": peers.ssl_bulk_operation,
    "pyopenssl": peers.pyopenssl_bulk_operation,
    "tlslite": peers.tlslite_bulk_operation,
    "floor": lambda _pki, suite, size: peers.record_floor_operation(suite, size),
    "aead": lambda _pki, suite, size: peers.aead_limit_operation(suite, size),
}


def build_operation(spec: Spec, pki: Pki) -> Operation:
    impl, kind = spec["impl"], spec["kind"]
    if kind == "handshake":
        return HANDSHAKES[impl](pki, spec["group"], spec["resumed"])
    if kind == "bulk":
        return BULK[impl](pki, spec["suite"], spec["write_size"])
    if kind == "eku":
        return longtls_cases.eku_operation(pki, spec["group"])
    if kind == "kx":
        return longtls_cases.key_exchange_operation(spec["group"])
    if kind == "dtls_eku":
        return dtls_cases.dtls_eku_operation(pki, spec["group"])
    if kind == "mls_update":
        return mls_cases.update_operation(spec["mls_suite"])
    if kind == "mls_bulk":
        return mls_cases.bulk_operation(spec["mls_suite"], spec["write_size"])
    raise ValueError(f"unknown operation kind {kind!r}")


def supported(impl: str, group: str) -> bool:
    # Python's ssl here is linked against OpenSSL 3.0: no ML-KEM groups.
    return impl != "ssl" or group == "x25519"


# ------------------------------------------------------------------ the bench


@dataclass
class Bench:
    settings: Settings
    pki: Pki
    workers: dict[str, Worker] = field(default_factory=dict)
    #: (target, case, measured, result): result "met", "**missed**" or
    #: "reported" (a figure the issue asks for, with no target).
    targets: list[tuple[str, str, str, str]] = field(default_factory=list)

    def worker(self, suite: str) -> Worker:
        if suite not in self.workers:
            self.workers[suite] = Worker(self.pki, suite, harness.openssl_conf(suite))
        return self.workers[suite]

    def cell(self, spec: Spec) -> Cell:
        if spec["impl"] == "ssl":
            return RemoteCell(self.worker(spec.get("suite", HANDSHAKE_SUITE)), spec)
        return LocalCell(lambda: build_operation(spec, self.pki))

    def measure(self, cells: dict[str, Cell]) -> dict[str, float]:
        s = self.settings
        return harness.run_rounds(cells, s.rounds, s.min_time)

    def target(self, name: str, case: str, measured: str, met: bool | None) -> None:
        """A row of the targets table; ``met=None``: reported, no target."""
        result = "reported" if met is None else "met" if met else "**missed**"
        self.targets.append((name, case, measured, result))

    def close(self) -> None:
        for w in self.workers.values():
            w.close()

    # -------------------------------------------------------------- 1

    def handshakes(self) -> str:
        cells: dict[str, Cell] = {}
        for group, resumed in HANDSHAKE_CASES:
            for impl in NAMES:
                if supported(impl, group):
                    spec = {"impl": impl, "kind": "handshake", "group": group, "resumed": resumed}
                    cells[f"{impl} {group} {resumed}"] = self.cell(spec)
        r = self.measure(cells)
        rows = []
        for group, resumed in HANDSHAKE_CASES:
            values = {impl: r.get(f"{impl} {group} {resumed}") for impl in NAMES}
            case = f"{'resumed (psk_dhe_ke)' if resumed else 'full'}, {group} + ECDSA P-256"
            lt = values["longtls"]
            rows.append([case, *(fmt_rate(values[i]) for i in NAMES),
                         *(fmt_ratio(lt, values[p]) for p in PEERS)])
            if values["pyopenssl"] is not None and lt is not None:
                ratio = lt / values["pyopenssl"]
                self.target("handshakes >= 1.0x pyOpenSSL", case, f"{ratio:.2f}x", ratio >= 1.0)
        return table(
            "1. Handshakes per second (client and server in one process, paired in memory)",
            ["handshake", *NAMES.values(), *(f"longtls / {NAMES[p]}" for p in PEERS)],
            rows,
            f"One handshake is both ends' work. {HANDSHAKE_SUITE}, one key share, the client "
            "verifies the chain, the server sends 2 tickets which the client processes. "
            f"`ssl` is {ssl.OPENSSL_VERSION}: no ML-KEM. tlslite-ng does not validate the chain. "
            "longtls negotiates Extended Key Update on full handshakes; resumption has it off "
            "(draft-13 EKU disables tickets).",
        )

    # -------------------------------------------------------------- 2

    def bulk(self) -> str:
        s = self.settings
        cells: dict[str, Cell] = {}
        for suite in SUITES:
            for impl in BULK_IMPLS:
                size = s.tlslite_write if impl == "tlslite" else s.bulk_write
                spec = {"impl": impl, "kind": "bulk", "suite": suite, "write_size": size}
                cells[f"{impl} {suite}"] = self.cell(spec)
        r = self.measure(cells)
        mb = {k: v / 1e6 for k, v in r.items()}
        rows = []
        for suite in SUITES:
            v = {impl: mb[f"{impl} {suite}"] for impl in BULK_IMPLS}
            lt = v["longtls"]
            rows.append([suite, *(fmt_rate(v[i]) for i in BULK_IMPLS),
                         fmt_ratio(lt, v["ssl"]), fmt_ratio(lt, v["pyopenssl"]),
                         fmt_ratio(lt, v["tlslite"]), fmt_ratio(lt, v["aead"]),
                         fmt_ratio(v["floor"], v["aead"])])
            ratio = lt / v["floor"]
            self.target("bulk >= 0.9x Python floor", suite, f"{ratio:.2f}x", ratio >= 0.9)
            ratio = lt / v["pyopenssl"]
            self.target("bulk >= 1.2x pyOpenSSL", suite, f"{ratio:.2f}x", ratio >= 1.2)
        return table(
            "2. Bulk throughput, MB/s (10^6 bytes) of application data, one direction, 16 KiB records",
            ["suite", "longtls", "ssl", "pyOpenSSL", "tlslite-ng", "Python floor", "raw AEAD limit",
             "longtls / ssl", "longtls / pyOpenSSL", "longtls / tlslite-ng", "longtls / limit",
             "floor / limit"],
            rows,
            f"Writes of {s.bulk_write // KIB} KiB ({s.tlslite_write // KIB} KiB for tlslite-ng), "
            "sealed by the client and opened by the server in one process. Raw AEAD limit: "
            "pyca/cryptography sealing and opening the same 16 KiB + 1 record payloads and nothing "
            "else. Python floor: the least a Python record layer can do around those AEAD calls "
            "(`encrypt_into` into one buffer, memoryview parsing, one copy out; "
            "`peers.record_floor_operation`), not a product.",
        )

    # -------------------------------------------------------------- 3

    def eku(self) -> str:
        cells: dict[str, Cell] = {}
        for group in EKU_GROUPS:
            base = {"impl": "longtls", "group": group}
            cells[f"eku {group}"] = self.cell({**base, "kind": "eku"})
            cells[f"kx {group}"] = self.cell({**base, "kind": "kx"})
            cells[f"full {group}"] = self.cell({**base, "kind": "handshake", "resumed": False})
            cells[f"resumed {group}"] = self.cell({**base, "kind": "handshake", "resumed": True})
        r = self.measure(cells)
        rows = []
        for group in EKU_GROUPS:
            eku, kx, full, resumed = (
                1 / r[f"{k} {group}"] for k in ("eku", "kx", "full", "resumed")
            )
            rows.append([group, fmt_rate(1 / eku), fmt_ms(eku), fmt_ms(kx), fmt_ms(full),
                         fmt_ms(resumed), f"{eku / full:.2f}", f"{eku / resumed:.2f}",
                         f"{kx / full:.2f}"])
            bound = kx + 0.1 * full
            self.target("EKU <= its key exchange + 0.1x full handshake", group,
                        f"{eku * 1e3:.3f} ms (bound {bound * 1e3:.3f} ms)", eku <= bound)
        return table(
            "3. Extended Key Update (draft-13) over a paired connection, longtls",
            ["group", "updates/s", "update (ms)", "its key exchange alone (ms)",
             "full handshake (ms)", "resumed handshake (ms)", "update / full", "update / resumed",
             "key exchange alone / full"],
            rows,
            "An update is started by the client and runs to completion on both ends (request, "
            "response, finish). The handshakes use the same group, ECDSA P-256 and "
            f"{HANDSHAKE_SUITE}; the resumed one (psk_dhe_ke, EKU off) is the reconnect users do "
            "today. Times are both ends' work. \"Its key exchange alone\" is the group's "
            "cryptography with no TLS around it (key share, response, completion): the floor "
            "of an update, and of \"update / full\" (last column).",
        )

    # -------------------------------------------------------------- 4

    def memory(self) -> str:
        s = self.settings
        samples: dict[str, list[dict[str, float]]] = {i: [] for i in MEMORY_IMPLS}
        for r in range(s.memory_rounds):
            order = MEMORY_IMPLS[r % len(MEMORY_IMPLS):] + MEMORY_IMPLS[: r % len(MEMORY_IMPLS)]
            for impl in order:
                samples[impl].append(self._memory_process(impl, s.connections))
        rows = []
        per: dict[str, float] = {}
        for impl in MEMORY_IMPLS:
            runs = sorted(samples[impl], key=lambda x: x["per_connection"])
            mid = runs[len(runs) // 2]
            per[impl] = mid["per_connection"]
            rows.append([MEMORY_NAMES[impl], f"{s.connections:,} pairs", f"{mid['before'] / 1024:.1f}",
                         f"{mid['after'] / 1024:.1f}", f"{per[impl] / 1024:.1f}", ""])
        for row, impl in zip(rows, MEMORY_IMPLS, strict=True):
            row[-1] = fmt_ratio(per[impl], per["ssl"])
        ratio = per["longtls"] / per["ssl"]
        self.target("memory per connection <= 0.5x ssl", "idle, established, EKU negotiated",
                    f"{ratio:.2f}x", ratio <= 0.5)
        for impl in ("dtls", "mls"):
            self.target("memory per connection vs ssl", f"{MEMORY_NAMES[impl]}, idle, established",
                        f"{per[impl] / per['ssl']:.2f}x", None)
        return table(
            "4. Memory per established idle connection (RSS growth of a fresh process)",
            ["implementation", "established", "RSS before (MiB)", "RSS after (MiB)",
             "per connection (KiB)", "vs ssl"],
            rows,
            f"Each process sets up its contexts, makes and drops 10 warm-up pairs, then holds "
            f"{s.connections:,} established pairs (x25519, {HANDSHAKE_SUITE}, tickets received, "
            f"events drained); per connection = RSS growth / {2 * s.connections:,}, measured after "
            "gc and malloc_trim. The ssl and pyOpenSSL pairs include their memory BIOs. longtls "
            "has Extended Key Update negotiated. longtls DTLS: `DTLSConnection` pairs, the same suite, "
            "group, chain and EKU, after the cookie exchange, with every ACK and retransmission timer "
            "run out (`memory_cases.establish_dtls`). longtls MLS: `MLSConnection` pairs of MLS suite "
            "0x0001 (DHKEM X25519, AES-128-GCM, Ed25519, basic credentials) in their first epoch "
            "(`memory_cases.establish_mls`). vs ssl: per connection over ssl's (TLS). Median of "
            f"{s.memory_rounds} process(es) each.",
        )

    def _memory_process(self, impl: str, connections: int) -> dict[str, float]:
        env = dict(os.environ)
        if impl == "ssl":
            conf = self.pki.directory / "openssl-memory.cnf"
            conf.write_text(harness.openssl_conf(HANDSHAKE_SUITE))
            env["OPENSSL_CONF"] = str(conf)
        log(f"  memory: {impl}, {connections} pairs")
        proc = subprocess.run(
            [sys.executable, str(harness.RUN_PY), "--internal-memory", impl,
             "--connections", str(connections), "--pki", str(self.pki.directory)],
            env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory measurement of {impl} failed:\n{proc.stderr}")
        result: dict[str, float] = json.loads(proc.stdout)
        return result

    # -------------------------------------------------------------- 5

    def asyncio(self) -> str:
        s = self.settings
        servers = {impl: aio_cases.ServerProcess(impl, self.pki) for impl in aio_cases.IMPLS}
        try:
            res = asyncio.run(aio_cases.run_all(
                self.pki, {i: srv.port for i, srv in servers.items()}, count=s.connections,
                rounds=s.aio_rounds, rate_rounds=s.aio_rate_rounds, min_time=s.min_time * 2,
                total=s.aio_total,
                write_size=s.aio_write,
            ))
        finally:
            for srv in servers.values():
                srv.close()
        n = f"{s.connections:,}"
        ratio = res.throughput["longtls"] / res.throughput["ssl"]
        self.target("asyncio one-connection throughput >= 1.2x asyncio + ssl", "loopback, AES-128-GCM",
                    f"{ratio:.2f}x", ratio >= 1.2)
        rows = [
            [f"open {n} connections concurrently (handshakes/s)",
             fmt_rate(res.connect["longtls"]), fmt_rate(res.connect["ssl"]),
             fmt_ratio(res.connect["longtls"], res.connect["ssl"])],
            [f"then each of the {n} updates, concurrently (updates/s; ssl: reconnects/s)",
             fmt_rate(res.update["longtls"]), fmt_rate(res.update["ssl"]),
             fmt_ratio(res.update["longtls"], res.update["ssl"])],
            ["one connection, client to server (MB/s)",
             fmt_rate(res.throughput["longtls"] / 1e6), fmt_rate(res.throughput["ssl"] / 1e6),
             fmt_ratio(res.throughput["longtls"], res.throughput["ssl"])],
        ]
        return table(
            "5. asyncio over loopback: longtls.aio vs asyncio streams with ssl",
            ["measurement", "longtls.aio", "asyncio + ssl", "longtls / ssl"],
            rows,
            "Servers in their own processes, clients in the benchmark process (x25519, "
            f"{HANDSHAKE_SUITE}, ECDSA P-256). longtls' update is an Extended Key Update; "
            "Python's ssl has no key update API, so its row is a reconnect (close, full "
            f"handshake). Connections and updates: median of {s.aio_rounds} round(s). Throughput: "
            f"{s.aio_write // KIB} KiB writes with drain(), {s.aio_total // MIB} MiB per transfer, "
            f"for at least {s.min_time * 2:g} s; median of {s.aio_rate_rounds} round(s), each "
            "against a fresh server process over a new connection, after one transfer not timed.",
        )

    # -------------------------------------------------------------- 6

    def dtls(self) -> str:
        s = self.settings
        wolf = wolfssl_cases.Wolfssl.find(self.pki)  # no build: RuntimeError, the run fails
        pairs = dtls_cases.PAIRS
        handshakes: dict[tuple[str, str], list[dtls_cases.Sample]] = {p: [] for p in pairs}
        echoes: dict[tuple[str, str], list[dtls_cases.Sample]] = {p: [] for p in pairs}
        updates: dict[str, list[float]] = {"dtls": [], "tls": []}
        with contextlib.ExitStack() as stack:
            stack.callback(wolf.close)
            server = dtls_cases.LongtlsServer(self.pki)
            stack.callback(server.close)
            tls_server = aio_cases.ServerProcess("longtls", self.pki)  # while ours starts
            stack.callback(tls_server.close)
            server.wait_ready()
            hs_port, hs_pid = wolf.start_server([])
            echo_port, echo_pid = wolf.start_server(["-B", f"{s.dtls_echo_bytes},{dtls_cases.BLOCK}"])
            longtls_port = server.ports[dtls_cases.GROUP]
            hs_ports = {"longtls": longtls_port, "wolfssl": hs_port}
            echo_ports = {"longtls": longtls_port, "wolfssl": echo_port}
            hs_pids = {"longtls": server.pid, "wolfssl": hs_pid}
            echo_pids = {"longtls": server.pid, "wolfssl": echo_pid}
            client_cfg = longtls_cases.configs(self.pki, dtls_cases.GROUP)[0]
            for r in range(s.dtls_rounds):
                order = pairs[r % len(pairs):] + pairs[: r % len(pairs)]
                for client, srv in order:
                    log(f"  dtls: {client} -> {srv}, {s.dtls_handshakes} handshakes, "
                        f"{s.dtls_echo_bytes // KIB} KiB echoed")
                    hs = dtls_cases.handshake_sample(
                        client, srv, self.pki, hs_ports, hs_pids, s.dtls_handshakes, wolf)
                    handshakes[client, srv].append(hs)
                    echoes[client, srv].append(dtls_cases.echo_sample(
                        client, srv, self.pki, echo_ports, echo_pids, s.dtls_echo_bytes, wolf,
                        hs.per(s.dtls_handshakes)))
                for kind in (("dtls", "tls") if r % 2 == 0 else ("tls", "dtls")):
                    port = longtls_port if kind == "dtls" else tls_server.port
                    updates[kind].append(dtls_cases.loopback_updates(port, client_cfg, s.dtls_updates,
                                                                     tls=kind == "tls"))
        cells: dict[str, Cell] = {}
        for group in EKU_GROUPS:
            cells[f"dtls {group}"] = LocalCell(functools.partial(dtls_cases.dtls_eku_operation, self.pki, group))
            cells[f"tls {group}"] = LocalCell(functools.partial(longtls_cases.eku_operation, self.pki, group))
        eku = self.measure(cells)
        return self._dtls_tables(wolf.info, handshakes, echoes, updates, eku)

    def _dtls_tables(
        self, wolf_info: str, handshakes: dict[tuple[str, str], list[dtls_cases.Sample]],
        echoes: dict[tuple[str, str], list[dtls_cases.Sample]], updates: dict[str, list[float]],
        eku: dict[str, float],
    ) -> str:
        s = self.settings
        med = statistics.median
        rows = []
        hs_cpu: dict[tuple[str, str], float] = {}
        echo_cpu: dict[tuple[str, str], float] = {}
        mb = s.dtls_echo_bytes / 1e6
        for pair in dtls_cases.PAIRS:
            hs, ec = handshakes[pair], echoes[pair]
            n = s.dtls_handshakes
            hs_cpu[pair] = med([(x.client_cpu + x.server_cpu) / n for x in hs])
            echo_cpu[pair] = med([mb / max(x.client_cpu + x.server_cpu, 1e-9) for x in ec])
            client, srv = (dtls_cases.NAMES[i] for i in pair)
            rows.append([
                f"{client} client, {srv} server",
                fmt_rate(med([n / x.wall for x in hs])),
                fmt_ms(hs_cpu[pair]),
                f"{fmt_ms(med([x.client_cpu / n for x in hs]))} + {fmt_ms(med([x.server_cpu / n for x in hs]))}",
                fmt_rate(med([mb / x.wall for x in ec])),
                fmt_rate(echo_cpu[pair]),
            ])
        same = ("longtls", "longtls"), ("wolfssl", "wolfssl")
        hs_ratio = hs_cpu[same[1]] / hs_cpu[same[0]]  # CPU per handshake: wolfSSL's / ours = our speed ratio
        echo_ratio = echo_cpu[same[0]] / echo_cpu[same[1]]
        self.target("DTLS 1.3 handshake, CPU both ends: longtls / wolfSSL", "x25519, AES-128-GCM, loopback UDP",
                    f"{hs_ratio:.2f}x", None)
        self.target("DTLS 1.3 echo, MB per CPU-second: longtls / wolfSSL", f"{dtls_cases.BLOCK}-byte datagrams",
                    f"{echo_ratio:.2f}x", None)
        first = table(
            f"6. DTLS 1.3 over loopback UDP: longtls.aio vs wolfSSL {wolfssl_cases.VERSION} examples "
            "(benchmark modes)",
            ["client, server", "handshakes/s (wall)", "handshake CPU (ms), both ends", "client + server (ms)",
             "echo MB/s (wall)", "echo MB per CPU-second, both ends"],
            rows,
            f"x25519, TLS_AES_128_GCM_SHA256, ECDSA P-256 chain verified by the client, no client certificate, "
            "a cookie HelloRetryRequest on every handshake (both servers ask for one). wolfSSL: "
            f"{wolf_info}, the interop tests' build (`make peers`: no `--enable-aesni`, no `--enable-sp` "
            "ECC code, so its AES-GCM and P-256 are portable C; a build tuned for speed does better); "
            f"its client's `-b {s.dtls_handshakes}` and `-B {s.dtls_echo_bytes},{dtls_cases.BLOCK}`, "
            "its server `-i` (and the same `-B`). longtls: `connect_dtls` in the benchmark process, "
            "`serve_dtls` (an echo handler) in its own process. longtls offers EKU, wolfSSL does not: "
            "a longtls pair negotiates it and so sends no ticket (draft-13); a longtls server sends a "
            "wolfSSL client 2 tickets, a wolfSSL server sends 1. "
            f"Handshakes: {s.dtls_handshakes} connections one after another (handshake, close_notify). "
            f"Echo: one association, {s.dtls_echo_bytes // KIB} KiB as {dtls_cases.BLOCK}-byte datagrams, "
            "each echoed back before the next goes. CPU: the client's (a wolfSSL client's start-up, "
            "1-3 ms, included) plus the server process's, per handshake, or per MB echoed (each MB "
            "crosses both ways; the association's handshake, as measured in the same round, taken "
            "off); it is the comparable figure. The wall clock of a wolfSSL server row includes "
            "1 s retransmissions: its example server binds a new socket after each connection and "
            "loses a ClientHello sent in between. Median of "
            f"{s.dtls_rounds} round(s).",
        )
        rows = []
        for group in EKU_GROUPS:
            d, t = 1 / eku[f"dtls {group}"], 1 / eku[f"tls {group}"]
            rows.append([f"{group}, paired in memory", fmt_rate(1 / d), fmt_ms(d), fmt_ms(t), f"{d / t:.2f}"])
        d, t = 1 / med(updates["dtls"]), 1 / med(updates["tls"])
        rows.append([f"{dtls_cases.GROUP}, loopback (longtls.aio, one connection)", fmt_rate(1 / d), fmt_ms(d),
                     fmt_ms(t), f"{d / t:.2f}"])
        self.target("EKU over DTLS / over TLS", f"{dtls_cases.GROUP}, paired in memory",
                    f"{eku[f'tls {dtls_cases.GROUP}'] / eku[f'dtls {dtls_cases.GROUP}']:.2f}x the time", None)
        second = table(
            "6b. Extended Key Update (draft-13) over DTLS 1.3 next to TLS, longtls",
            ["group, setting", "DTLS updates/s", "DTLS update (ms)", "TLS update (ms)", "DTLS / TLS"],
            rows,
            "In memory: table 3's update (client starts, both ends complete; AES-128-GCM, ECDSA P-256), "
            "over a `DTLSConnection` pair (datagrams moved by hand, the cookie exchange through "
            "`DTLSConnection.accept`; a pending ACK timer is fired at once instead of waited for) "
            "and over a `Connection` pair. Over DTLS an update is also acknowledged (ACK records, "
            "RFC 9147 §7) and installs epochs. Loopback: `await update_keys()` "
            f"{s.dtls_updates} times on one association (`connect_dtls`) or one TLS connection "
            "(`longtls.aio.connect`, table 5's server), server pacing off; the wall clock, both ends "
            "on the machine's two cores.",
        )
        return first + "\n" + second

    # -------------------------------------------------------------- 7

    def mls(self) -> str:
        s = self.settings
        cells: dict[str, Cell] = {}
        for name, (number, group, suite) in mls_cases.MLS_SUITES.items():
            if number != 0x0003:  # the ChaCha20 suite has suite 1's KEM: throughput only
                cells[f"mls update {name}"] = LocalCell(functools.partial(mls_cases.update_operation, number))
                cells[f"mls handshake {name}"] = LocalCell(functools.partial(mls_cases.handshake_operation, number))
                base = {"impl": "longtls", "group": group}
                cells[f"eku {group}"] = self.cell({**base, "kind": "eku"})
                cells[f"full {group}"] = self.cell({**base, "kind": "handshake", "resumed": False})
            cells[f"mls bulk {name}"] = LocalCell(functools.partial(mls_cases.bulk_operation, number, s.bulk_write))
            cells[f"tls bulk {suite}"] = self.cell(
                {"impl": "longtls", "kind": "bulk", "suite": suite, "write_size": s.bulk_write})
        r = self.measure(cells)
        rows = []
        for name, (number, group, _suite) in mls_cases.MLS_SUITES.items():
            if number == 0x0003:
                continue
            upd, hs, eku, full = (1 / r[k] for k in (f"mls update {name}", f"mls handshake {name}",
                                                     f"eku {group}", f"full {group}"))
            rows.append([f"{name} ({number:#06x})", fmt_rate(1 / upd), fmt_ms(upd), group, fmt_ms(eku),
                         f"{upd / eku:.2f}", fmt_ms(hs), fmt_ms(full)])
            self.target("MLS epoch update / EKU, same KEM", f"{number:#06x} vs {group}", f"{upd / eku:.2f}x the time",
                        None)
        first = table(
            "7. MLS mode: an epoch update vs an Extended Key Update with the same KEM, longtls",
            ["MLS cipher suite", "MLS updates/s", "MLS update (ms)", "TLS group", "EKU update (ms)",
             "MLS / EKU", "MLS handshake (ms)", "TLS full handshake (ms)"],
            rows,
            "Both ends paired in memory, both ends' work. An MLS update: the initiator's commit with a "
            "fresh leaf and path (ConnectionUpdate), the responder's processing and EpochKeyUpdate, new "
            "record keys on both ends (docs/mls-tls.md §5). An EKU: table 3's (draft-13, ECDSA P-256 "
            "handshake). Same KEM: DHKEM(X25519) vs x25519; 0xF0A1 is X-Wing (ML-KEM-768 + X25519, "
            "longtls' provisional suite) vs X25519MLKEM768, the same two primitives combined differently. "
            "MLS signs with Ed25519 and uses basic credentials (the client does not verify the peer); "
            "the TLS handshake verifies an ECDSA P-256 chain.",
        )
        rows = []
        for name, (number, _group, suite) in mls_cases.MLS_SUITES.items():
            mls_rate, tls_rate = r[f"mls bulk {name}"] / 1e6, r[f"tls bulk {suite}"] / 1e6
            rows.append([suite, f"{number:#06x}", fmt_rate(mls_rate), fmt_rate(tls_rate), fmt_ratio(mls_rate, tls_rate)])
            self.target("MLS mode records / TLS records", f"{suite} ({number:#06x})",
                        f"{mls_rate / tls_rate:.2f}x", None)
        second = table(
            "7b. MLS mode record throughput, MB/s (10^6 bytes), one direction, in memory",
            ["AEAD", "MLS suite", "MLS mode", "TLS 1.3", "MLS / TLS"],
            rows,
            f"Writes of {s.bulk_write // KIB} KiB sealed into 16 KiB TLS 1.3 records by the initiator "
            "(MLS mode keys its records from the epoch: docs/mls-tls.md §6) and opened by the responder; "
            "TLS is table 2's longtls cell for the same AEAD.",
        )
        return first + "\n" + second

    # -------------------------------------------------------------- 8

    def scale(self) -> str:
        import scale

        s = self.settings
        text, targets = scale.scale_section(s.scale_connections, s.scale_window, s.quick)
        self.targets.extend(targets)
        return text

    # ---------------------------------------------------------- targets

    def targets_table(self) -> str:
        rows = [list(t) for t in self.targets]
        return table("Targets of issue 16 (computed from this run)", ["target", "case", "measured", "result"],
                     rows, text_columns=2)


# -------------------------------------------------------------------- header


def machine(malloc_pinned: bool) -> str:
    import cryptography
    import OpenSSL
    import tlslite
    from cryptography.hazmat.backends.openssl import backend

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows = [
        ["CPUs (nproc)", str(len(os.sched_getaffinity(0)))],
        ["CPU model", cpu],
        ["kernel", platform.release()],
        ["Python", platform.python_version()],
        ["Python ssl", ssl.OPENSSL_VERSION],
        ["cryptography / pyOpenSSL", f"{cryptography.__version__} / {OpenSSL.__version__}, "
                                     f"{backend.openssl_version_text()}"],
        ["tlslite-ng", f"{tlslite.__version__} (pure Python primitives)"],
        ["malloc", "glibc, mmap threshold 4 MiB, trim threshold 128 MiB (harness.pin_malloc)"
         if malloc_pinned else "default (no glibc mallopt)"],
        ["date", time.strftime("%Y-%m-%d %H:%M %Z")],
    ]
    return table("Machine", ["", ""], rows, text_columns=2)


# ---------------------------------------------------------------- internals


def worker_main(pki: Pki) -> None:
    """--internal-worker: measure specs read from stdin, one JSON line each."""
    ops: dict[str, Operation] = {}
    for line in sys.stdin:
        request = json.loads(line)
        spec = request["spec"]
        key = json.dumps(spec, sort_keys=True)
        try:
            if key not in ops:
                ops[key] = build_operation(spec, pki)
            answer: dict[str, object] = {"rate": harness.measure(ops[key], request["min_time"])}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


def memory_main(impl: str, pki: Pki, connections: int) -> None:
    """--internal-memory: RSS growth of ``connections`` established pairs."""
    import memory_cases

    establish: Callable[[Pki, int], list[object]] = {  # type: ignore[assignment]
        "longtls": longtls_cases.establish,
        "ssl": peers.ssl_establish,
        "pyopenssl": peers.pyopenssl_establish,
        "dtls": memory_cases.establish_dtls,
        "mls": memory_cases.establish_mls,
    }[impl]
    warm = establish(pki, 10)  # imports, caches, lazily built state
    del warm
    harness.release_free_memory()
    before = harness.vm_rss_kib()
    pairs = establish(pki, connections)
    harness.release_free_memory()
    after = harness.vm_rss_kib()
    assert len(pairs) == connections
    per = (after - before) * 1024 / (2 * connections)
    print(json.dumps({"before": before, "after": after, "per_connection": per}))


PROFILES: dict[str, Spec] = {
    "handshake": {"impl": "longtls", "kind": "handshake", "group": "x25519", "resumed": False},
    "handshake-mlkem": {"impl": "longtls", "kind": "handshake", "group": "X25519MLKEM768", "resumed": False},
    "resumed": {"impl": "longtls", "kind": "handshake", "group": "x25519", "resumed": True},
    "resumed-mlkem": {"impl": "longtls", "kind": "handshake", "group": "X25519MLKEM768", "resumed": True},
    "bulk": {"impl": "longtls", "kind": "bulk", "suite": "AES-128-GCM", "write_size": 256 * KIB},
    "bulk-chacha": {"impl": "longtls", "kind": "bulk", "suite": "ChaCha20-Poly1305", "write_size": 256 * KIB},
    "eku": {"impl": "longtls", "kind": "eku", "group": "x25519"},
    "eku-mlkem": {"impl": "longtls", "kind": "eku", "group": "X25519MLKEM768"},
    "eku-dtls": {"impl": "longtls", "kind": "dtls_eku", "group": "x25519"},
    "mls-update": {"impl": "longtls", "kind": "mls_update", "mls_suite": 0x0001},
    "mls-update-xwing": {"impl": "longtls", "kind": "mls_update", "mls_suite": 0xF0A1},
    "mls-bulk": {"impl": "longtls", "kind": "mls_bulk", "mls_suite": 0x0001, "write_size": 256 * KIB},
}


def profile_main(name: str, pki: Pki, seconds: float, top: int = 30, sort: str = "own") -> None:
    """cProfile one longtls operation; functions by own time (``sort="incl"``:
    by time including what they call), with their share."""
    import cProfile
    import pstats

    if name == "memory":
        memory_profile(pki, top)
        return
    op = build_operation(PROFILES[name], pki)
    profiler = cProfile.Profile()
    count = 0
    start = time.perf_counter()
    profiler.enable()
    while time.perf_counter() - start < seconds:
        op()
        count += 1
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())
    calls = sum(v[1] for v in entries.values())
    print(f"**cProfile of `{name}`: {count} operations, {total:.2f} s of profiled time, "
          f"{calls / count:,.0f} Python function calls per operation**\n")
    print("| own % | incl. % | calls/op | function |\n|---:|---:|---:|---|")
    column = 3 if sort == "incl" else 2  # pstats: (cc, ncalls, tottime, cumtime, callers)
    rows = sorted(entries.items(), key=lambda kv: kv[1][column], reverse=True)[:top]
    root = str(harness.ROOT) + "/"
    for (path, line, func), (_cc, ncalls, tottime, cumtime, _callers) in rows:
        where = f"{path.replace(root, '')}:{line}({func})" if line else func
        print(f"| {100 * tottime / total:.1f} | {100 * cumtime / total:.1f} | "
              f"{ncalls / count:.1f} | `{where}` |")


def memory_profile(pki: Pki, top: int) -> None:
    """tracemalloc of 200 established longtls pairs: Python bytes per connection, by line."""
    import gc
    import tracemalloc

    n = 200
    longtls_cases.establish(pki, 10)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    pairs = longtls_cases.establish(pki, n)
    gc.collect()
    after = tracemalloc.take_snapshot()
    diff = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in diff)
    print(f"**tracemalloc: {total / (2 * n):,.0f} Python bytes per established longtls "
          f"connection ({n} pairs)**\n")
    print("| bytes/conn | objects/conn | allocated at |\n|---:|---:|---|")
    root = str(harness.ROOT) + "/"
    for d in diff[:top]:
        frame = d.traceback[0]
        print(f"| {d.size_diff / (2 * n):,.0f} | {d.count_diff / (2 * n):.1f} | "
              f"`{frame.filename.replace(root, '')}:{frame.lineno}` |")
    del pairs


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 short rounds, 100 connections (CI; under a minute)")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help=f"run only these sections: {', '.join(SECTIONS)}")
    parser.add_argument("--rounds", type=int, help="rounds per cell (default 5, --quick 3)")
    parser.add_argument("--profile", metavar="CASE", choices=[*PROFILES, "memory"],
                        help=f"cProfile one longtls case instead: {', '.join([*PROFILES, 'memory'])}")
    parser.add_argument("--profile-sort", choices=("own", "incl"), default="own",
                        help="--profile: rank functions by own time (default) or including their callees")
    parser.add_argument("--internal-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--internal-memory", metavar="IMPL", help=argparse.SUPPRESS)
    parser.add_argument("--internal-serve", metavar="IMPL", help=argparse.SUPPRESS)
    parser.add_argument("--internal-dtls-serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.internal_memory:  # the allocator as users have it
        memory_main(args.internal_memory, Pki.load(args.pki), args.connections)
        return 0
    malloc_pinned = harness.pin_malloc()
    if args.internal_worker:
        worker_main(Pki.load(args.pki))
        return 0
    if args.internal_serve:
        aio_cases.serve_main(args.internal_serve, Pki.load(args.pki))
        return 0
    if args.internal_dtls_serve:
        dtls_cases.serve_main(Pki.load(args.pki))
        return 0

    settings = Settings.make(args.quick, args.rounds)
    pki = Pki.create()
    try:
        if args.profile:
            profile_main(args.profile, pki, 1.0 if args.quick else 5.0, sort=args.profile_sort)
            return 0
        return run_sections(parser, args, settings, pki, malloc_pinned)
    finally:
        shutil.rmtree(pki.directory, ignore_errors=True)


def run_sections(
    parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings, pki: Pki,
    malloc_pinned: bool,
) -> int:
    only = SECTIONS if not args.only else tuple(x.strip() for x in args.only.split(","))
    unknown = [x for x in only if x not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    bench = Bench(settings, pki)
    started = time.perf_counter()
    mode = "quick" if settings.quick else "full"
    print(f"# longtls benchmarks ({mode} run)\n")
    print(machine(malloc_pinned))
    try:
        for name in SECTIONS:
            if name in only:
                log(f"{name} ...")
                t0 = time.perf_counter()
                print(getattr(bench, name)(), flush=True)
                log(f"{name}: {time.perf_counter() - t0:.0f} s")
    finally:
        bench.close()
    if bench.targets:
        print(bench.targets_table())
    took = time.perf_counter() - started
    print(f"_{mode} run: {settings.rounds} round(s) of {settings.min_time:g} s per cell, "
          f"{settings.connections:,} connections; {took:.0f} s in all._")
    return 0


if __name__ == "__main__":
    sys.exit(main())
