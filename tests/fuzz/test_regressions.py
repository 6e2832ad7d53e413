"""Inputs the fuzzer once found a bug with, replayed on every test run.

Each file under ``regressions/<target>/`` is fed to that target of
``targets.py``; the target raises ``Finding`` if longtls misbehaves (an
internal_error, a stray exception, a connection left open).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fuzz import targets

HERE = Path(__file__).resolve().parent / "regressions"
CASES = sorted(HERE.glob("*/*"))


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name[:18]}")
def test_fuzz_regression(case: Path) -> None:
    target = getattr(targets, f"target_{case.parent.name}")
    target(case.read_bytes())
