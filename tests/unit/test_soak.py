"""One minute of scripts/soak.py: data both ways, key updates from both sides
every 100 ms, nothing lost or corrupted (SHA-256 per direction), resident
memory flat, no descriptor leaked.  The script is the test; run it longer by
hand (``scripts/soak.py``, ten minutes by default)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent.parent / "scripts" / "soak.py"
DURATION = 60


@pytest.mark.slow
def test_soak_one_minute(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--duration", str(DURATION)],
        capture_output=True, text=True, timeout=DURATION + 120,
    )
    with capsys.disabled():
        print("\n" + "\n".join(f"  {line}" for line in proc.stdout.splitlines()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
