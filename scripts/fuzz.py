#!/usr/bin/env python3
"""Run longtls' fuzz targets (tests/fuzz/targets.py).

    scripts/fuzz.py                                  # every target, 60 s each
    scripts/fuzz.py --targets client,eku --time 3600 # an hour each, two targets
    scripts/fuzz.py --jobs 2 --time 600              # two targets at a time
    scripts/fuzz.py --reproduce .fuzz/artifacts/client/crash-1234 --targets client

Engine: atheris (libFuzzer, coverage-guided over longtls' own bytecode) when
it is installed, else a plain random mutator over the same seeds (not
coverage-guided: install atheris for real fuzzing).  ``--engine`` forces one.

Each target runs in a process of its own.  Its corpus grows in
``--corpus-dir/<target>`` (default ``.fuzz/corpus``), seeded from real longtls
conversations; an input that makes longtls misbehave is written to
``--artifacts-dir/<target>/`` (default ``.fuzz/artifacts``) and the run
exits non-zero.  See docs/fuzzing.md.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ_DIR = ROOT / "tests" / "fuzz"
TARGET_NAMES = ("codecs", "records", "client", "server", "eku")
MAX_LEN = 8192


def _load_targets(instrument: bool) -> object:
    """Import tests/fuzz/targets.py, with longtls instrumented for atheris if asked."""
    sys.path.insert(0, str(FUZZ_DIR))
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["longtls", "targets"]):
            import targets
    else:
        import targets
    return targets


def _write_seeds(targets: object, target: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    found = targets.seeds(target)  # type: ignore[attr-defined]
    for data in found:
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(found)


# --------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> int:
    """Fuzz one target in this process (libFuzzer exits the process when done)."""
    target = args.worker
    corpus = Path(args.corpus_dir) / target
    artifacts = Path(args.artifacts_dir) / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    engine = args.engine
    # Connection._guard logs every masked exception; the finding reports it anyway.
    logging.getLogger("longtls").setLevel(logging.CRITICAL)
    targets = _load_targets(instrument=engine == "atheris")
    function: Callable[[bytes], None] = targets.TARGETS[target]  # type: ignore[attr-defined]
    seed_dir = Path(tempfile.mkdtemp(prefix=f"longtls-seeds-{target}-"))
    count = _write_seeds(targets, target, seed_dir)
    print(f"[{target}] engine={engine} seeds={count} corpus={corpus} time={args.time}s", flush=True)
    if engine == "atheris":
        import atheris

        argv = [
            sys.argv[0], str(corpus), str(seed_dir),
            f"-max_total_time={int(args.time)}", f"-artifact_prefix={artifacts}/",
            f"-max_len={MAX_LEN}", "-timeout=20", "-rss_limit_mb=3072",
            "-print_final_stats=1",
        ]
        if args.seed:
            argv.append(f"-seed={args.seed}")
        atheris.Setup(argv, function)
        atheris.Fuzz()  # does not return
        return 0
    return _mutate_loop(target, function, [corpus, seed_dir], artifacts, args.time, args.seed)


def _mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(out))
        if op == 0 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1 and out:
            out[min(pos, len(out) - 1)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 2:
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 4 and len(out) > 4:  # overwrite a length-like 16/24-bit field
            i = rng.randrange(len(out) - 3)
            out[i : i + 2] = rng.choice((0, 1, 0xFF, 0xFFFF, len(out))).to_bytes(3, "big")[-2:]
        elif op == 5 and corpus:  # splice with another input
            other = rng.choice(corpus)
            cut = rng.randint(0, len(other))
            out[pos:] = other[cut:]
        else:  # the first bytes select scenario/point/mode
            if out:
                out[rng.randrange(min(3, len(out)))] = rng.randrange(256)
    return bytes(out[:MAX_LEN])


def _mutate_loop(
    target: str, function: Callable[[bytes], None], dirs: list[Path], artifacts: Path,
    seconds: float, seed: int,
) -> int:
    corpus = [p.read_bytes() for d in dirs for p in sorted(d.iterdir()) if p.is_file()]
    rng = random.Random(seed or None)
    deadline = time.monotonic() + seconds
    runs = 0
    inputs = list(corpus) or [b""]
    while time.monotonic() < deadline:
        data = inputs[runs] if runs < len(inputs) else _mutate(rng, rng.choice(inputs), inputs)
        runs += 1
        try:
            function(data)
        except Exception:
            path = artifacts / f"crash-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            traceback.print_exc()
            print(f"[{target}] CRASH after {runs} runs; input written to {path}", flush=True)
            return 1
    print(f"[{target}] done: {runs} runs in {seconds:g}s, no finding", flush=True)
    return 0


# --------------------------------------------------------------------- driver


def _engine(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "mutate"
    return "atheris"


def reproduce(args: argparse.Namespace) -> int:
    targets = _load_targets(instrument=False)
    (target,) = args.targets.split(",")
    data = Path(args.reproduce).read_bytes()
    print(f"[{target}] running {args.reproduce} ({len(data)} bytes)")
    targets.TARGETS[target](data)  # type: ignore[attr-defined]
    print("no finding")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(TARGET_NAMES),
                        help=f"comma-separated, from {', '.join(TARGET_NAMES)}")
    parser.add_argument("--time", type=float, default=60.0, help="seconds per target (default 60)")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at the same time")
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    parser.add_argument("--corpus-dir", default=str(ROOT / ".fuzz" / "corpus"))
    parser.add_argument("--artifacts-dir", default=str(ROOT / ".fuzz" / "artifacts"))
    parser.add_argument("--seed", type=int, default=0, help="random seed (0: pick one)")
    parser.add_argument("--reproduce", metavar="FILE", help="run one input through one target")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.engine = _engine(args.engine)
    if args.worker:
        return worker(args)
    if args.reproduce:
        return reproduce(args)
    names = [t for t in args.targets.split(",") if t]
    unknown = set(names) - set(TARGET_NAMES)
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}")
    pending = list(names)
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            name = pending.pop(0)
            cmd = [sys.executable, __file__, "--worker", name, "--time", str(args.time),
                   "--engine", args.engine, "--corpus-dir", args.corpus_dir,
                   "--artifacts-dir", args.artifacts_dir, "--seed", str(args.seed)]
            running.append((name, subprocess.Popen(cmd, env={**os.environ, "PYTHONHASHSEED": "0"})))
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                if proc.returncode != 0:
                    failed.append(name)
        time.sleep(0.2)
    if failed:
        print(f"fuzz: findings in {', '.join(failed)}; inputs under {args.artifacts_dir}", file=sys.stderr)
        return 1
    print(f"fuzz: {', '.join(names)}: no findings ({args.engine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
