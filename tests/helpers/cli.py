"""Run the ``longtls`` command line the way a script does, and read what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from .peers import run

LONGTLS = [sys.executable, "-m", "longtls.cli.main"]


def longtls(*args: str, input: str = "", timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return run([*LONGTLS, *args], input=input, timeout=timeout, check=False)


def summary(stderr: str) -> list[dict[str, Any]]:
    """The --summary json records (stderr lines that are JSON objects)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, no traceback, exactly one ``longtls: error:`` line containing ``fragments``."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("longtls: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line
