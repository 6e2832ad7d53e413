"""A bounded run of the coverage-guided fuzzer over every target (about two
minutes in all; ``LONGTLS_FUZZ_SECONDS`` changes the total).

Each target runs ``scripts/fuzz.py`` in a process of its own, from the seed
corpus captured from real longtls conversations, with a fixed libFuzzer seed.
A finding fails the test with the input (hex) and the command that
reproduces it.  docs/fuzzing.md describes longer runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FUZZ = ROOT / "scripts" / "fuzz.py"
TOTAL_SECONDS = float(os.environ.get("LONGTLS_FUZZ_SECONDS", "120"))
#: Share of the time per target: the conversation targets are ~100x slower per input.
WEIGHTS = {"codecs": 1, "records": 1, "client": 2, "server": 2, "eku": 2}


@pytest.mark.slow
@pytest.mark.parametrize("target", list(WEIGHTS))
def test_fuzz_bounded(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seconds = max(1, round(TOTAL_SECONDS * WEIGHTS[target] / sum(WEIGHTS.values())))
    artifacts = tmp_path / "artifacts"
    cmd = [
        sys.executable, str(FUZZ), "--targets", target, "--time", str(seconds),
        "--corpus-dir", str(tmp_path / "corpus"), "--artifacts-dir", str(artifacts), "--seed", "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "LONGTLS_FUZZ_ALLOW"}  # CI tolerates nothing
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 180, cwd=ROOT, env=env)
    output = proc.stdout + proc.stderr
    summary = [
        line for line in output.splitlines()
        if line.startswith(f"[{target}]") or "Done " in line or "stat::number_of_executed_units" in line
        or (line.startswith("#") and " DONE " in line)
    ]
    with capsys.disabled():
        print("\n" + "\n".join(f"  fuzz {line}" for line in summary))
    if proc.returncode != 0:
        crashes = sorted((artifacts / target).glob("*")) if (artifacts / target).is_dir() else []
        detail = []
        for crash in crashes[:3]:
            detail.append(f"input {crash} ({crash.stat().st_size} bytes): {crash.read_bytes()[:2048].hex()}")
            detail.append(f"reproduce: {sys.executable} {FUZZ} --targets {target} --reproduce {crash}")
        finding = [
            line for line in output.splitlines()
            if "Finding" in line or "Error" in line or "Traceback" in line
        ][-12:]
        pytest.fail(
            f"fuzz target {target!r} found a problem:\n" + "\n".join(finding + detail)
            + f"\n--- last output ---\n{output[-4000:]}",
            pytrace=False,
        )
