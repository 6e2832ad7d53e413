"""Plumbing shared by the benchmarks: PKI, names, timing, rounds, tables, workers.

Every measurement is an *operation*: a zero-argument callable that does one
unit of work (one handshake, one extended key update, one write of N bytes
through a connection pair) and returns how many units it did (1, or N bytes).
A *cell* measures an operation for a while and returns units per second; the
runner measures all cells of a table round-robin, ``rounds`` times, and keeps
the median, so slow drift on a noisy machine hits every column alike.

Some cells run in a worker process (``run.py --internal-worker``): Python's
``ssl`` module reads the OpenSSL configuration once, when it is imported, and
that is the only way to pin its TLS 1.3 cipher suite and groups.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RUN_PY = BENCH_DIR / "run.py"

# The throwaway PKI of the test suite (tests/helpers/pki.py).
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

KIB = 1024
MIB = 1024 * 1024
RECORD_SIZE = 16 * KIB  # application data per TLS record (2^14)

#: An operation does one unit of work and returns how many units it did.
Operation = Callable[[], float]
Spec = dict[str, Any]


# ------------------------------------------------------------------ names

#: Groups by their IANA name: (OpenSSL name, tlslite-ng name).
GROUPS: dict[str, tuple[str, str]] = {
    "x25519": ("X25519", "x25519"),
    "secp256r1": ("P-256", "secp256r1"),
    "X25519MLKEM768": ("X25519MLKEM768", "x25519mlkem768"),
    "MLKEM768": ("MLKEM768", "mlkem768"),
}

#: Suites by a short name: (IANA/OpenSSL name, tlslite-ng name).
SUITES: dict[str, tuple[str, str]] = {
    "AES-128-GCM": ("TLS_AES_128_GCM_SHA256", "aes128gcm"),
    "ChaCha20-Poly1305": ("TLS_CHACHA20_POLY1305_SHA256", "chacha20-poly1305"),
}

HANDSHAKE_SUITE = "AES-128-GCM"


# -------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    """One ECDSA P-256 root and one ECDSA P-256 server leaf for "localhost",
    as objects and as PEM files (for ``ssl`` and for worker processes)."""

    directory: Path
    ca_cert: x509.Certificate
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def chain_file(self) -> Path:
        return self.directory / "server-chain.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "server.key"

    @classmethod
    def create(cls, directory: Path | None = None) -> Pki:
        from helpers.pki import make_ca, make_leaf

        ca = make_ca("ecdsa-p256")
        leaf = make_leaf(ca, "ecdsa-p256")
        d = directory or Path(tempfile.mkdtemp(prefix="longtls-bench-"))
        leaf.write_pem(d, "server")
        key = leaf.key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(d, ca.cert, leaf.chain, key)

    @classmethod
    def load(cls, directory: Path) -> Pki:
        d = Path(directory)
        ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
        chain = x509.load_pem_x509_certificates((d / "server-chain.pem").read_bytes())
        key = serialization.load_pem_private_key((d / "server.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(d, ca, chain, key)


# ----------------------------------------------------------------- timing


def measure(op: Operation, min_time: float) -> float:
    """Run ``op`` until ``min_time`` seconds have passed (at least once); units per second."""
    gc.collect()
    done = 0.0
    start = time.perf_counter()
    while True:
        done += op()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return done / elapsed


class Cell(Protocol):
    def measure(self, min_time: float) -> float: ...


class LocalCell:
    """An operation built in this process (lazily, on first use)."""

    def __init__(self, build: Callable[[], Operation]) -> None:
        self._build = build
        self._op: Operation | None = None

    def measure(self, min_time: float) -> float:
        if self._op is None:
            self._op = self._build()
        return measure(self._op, min_time)


class Worker:
    """A ``run.py --internal-worker`` process: measures specs sent as JSON lines.

    ``openssl_conf`` becomes its OPENSSL_CONF, read by ``ssl`` at import time.
    """

    def __init__(self, pki: Pki, name: str, openssl_conf: str | None = None) -> None:
        env = dict(os.environ)
        if openssl_conf is not None:
            path = pki.directory / f"openssl-{name}.cnf"
            path.write_text(openssl_conf)
            env["OPENSSL_CONF"] = str(path)
        self._proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), "--internal-worker", "--pki", str(pki.directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )

    def request(self, spec: Spec, min_time: float) -> float:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"spec": spec, "min_time": min_time}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited ({self._proc.wait()}) on {spec}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"benchmark worker failed on {spec}: {answer['error']}")
        return float(answer["rate"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class RemoteCell:
    def __init__(self, worker: Worker, spec: Spec) -> None:
        self.worker = worker
        self.spec = spec

    def measure(self, min_time: float) -> float:
        return self.worker.request(self.spec, min_time)


def openssl_conf(suite: str, groups: str = "X25519") -> str:
    """An OpenSSL configuration pinning ``ssl``'s TLS 1.3 suite and groups."""
    return (
        "openssl_conf = default_conf\n"
        "[default_conf]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = system_default_sect\n"
        "[system_default_sect]\n"
        f"Ciphersuites = {SUITES[suite][0]}\n"
        f"Groups = {groups}\n"
    )


def run_rounds(cells: dict[str, Cell], rounds: int, min_time: float) -> dict[str, float]:
    """Measure every cell ``rounds`` times, round-robin (rotating who goes
    first); the median rate of each cell."""
    keys = list(cells)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        shift = r % len(keys) if keys else 0
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(cells[key].measure(min_time))
    return {k: statistics.median(v) for k, v in samples.items()}


def vm_rss_kib() -> int:
    """This process's resident set size (VmRSS of /proc/self/status), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def pin_malloc() -> bool:
    """Make glibc keep freed large buffers instead of returning them to the kernel.

    By default glibc serves buffers over a (moving) threshold with fresh
    mmaps, and trims the heap top once a few hundred KiB are free.  Whether a
    stack's transient per-write buffers then page-fault on every write depends
    on heap layout (longtls at 256 KiB writes: 0, 98 or 160 minor faults per
    write from one process to the next, 1,550 vs 900 vs 710 MB/s).  With the
    thresholds fixed, as in a warmed-up long-running process, runs repeat.
    Returns False where there is no glibc (the numbers may then vary more).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok: bool = libc.mallopt(m_mmap_threshold, 4 * MIB) == 1
        return ok and bool(libc.mallopt(m_trim_threshold, 128 * MIB) == 1)
    except (OSError, AttributeError):
        return False


def release_free_memory() -> None:
    """Collect garbage and hand free heap pages back (glibc ``malloc_trim``), so
    RSS reflects live memory rather than what the allocator happens to keep."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------- tables


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    r = a / b
    if r >= 100:
        return f"{r:,.0f}x"
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def fmt_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.3f}"


def table(
    title: str, header: Sequence[str], rows: Iterable[Sequence[str]], notes: str = "",
    text_columns: int = 1,
) -> str:
    """A markdown table with a bold title line and optional notes below it; the
    first ``text_columns`` columns are left-aligned, the numbers right-aligned."""
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the tables."""
    print(message, file=sys.stderr, flush=True)
