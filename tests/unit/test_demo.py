"""``longtls demo``: what ``make demo`` runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any, cast

from helpers.cli import LONGTLS, longtls
from longtls import demo


def initiated(output: str, side: str) -> int:
    match = re.search(rf"^updates initiated by {side}: (\d+)$", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


def test_demo_verifies_every_byte_and_both_sides_rekey() -> None:
    result = longtls("demo", "--duration", "5", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert initiated(out, "client") >= 1
    assert initiated(out, "server") >= 1
    assert re.search(r"^verified: OK$", out, re.MULTILINE), out
    assert "group X25519MLKEM768" in out
    # Not a terminal: plain periodic lines, no escape sequences.
    assert "\x1b[" not in out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(lines) >= 3, out
    assert "X25519MLKEM768" in lines[-1] and "MB/s" in lines[-1]
    for direction in ("client -> server", "server -> client"):
        line = next(line for line in out.splitlines() if line.startswith(direction))
        assert line.endswith(": intact"), line
    # Half-way, the server's certificate is renewed and the client receives it
    # on the live connection (Certificate Update), the data still flowing.
    renewed = re.search(r"the server's certificate was renewed \(subject (\S+), serial ([0-9a-f]+),", out)
    assert renewed, out
    assert re.search(
        rf"^\[ *[\d.]+s\] the client received the renewed certificate on the live connection: "
        rf"subject {re.escape(renewed.group(1))}, serial {renewed.group(2)}, not after \S+Z$",
        out, re.MULTILINE,
    ), out
    assert re.search(r"^certificate updates received by the client: 1$", out, re.MULTILINE), out


def test_demo_options_and_keylog(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    result = longtls(
        "demo", "--duration", "2", "--interval", "0.4", "--group", "x25519",
        "--eku-profile", "draft-05", "--keylog", str(keylog), timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "group x25519" in result.stdout
    assert "Extended Key Update draft-05" in result.stdout
    assert initiated(result.stdout, "client") + initiated(result.stdout, "server") >= 3
    labels = {line.split()[0] for line in keylog.read_text().splitlines()}
    assert {"CLIENT_TRAFFIC_SECRET_0", "CLIENT_TRAFFIC_SECRET_1", "SERVER_TRAFFIC_SECRET_2"} <= labels


def test_demo_live_table_on_a_terminal() -> None:
    controller, terminal = os.openpty()
    try:
        proc = subprocess.run(
            [*LONGTLS, "demo", "--duration", "1.5", "--interval", "0.5"],
            stdout=terminal, stderr=subprocess.PIPE, timeout=60, check=False,
        )
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    out = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "\x1b[3F\x1b[J" in out  # the table is redrawn in place
    assert "client->server" in out and "verified: OK" in out


def test_summary_fails_on_a_mismatch(capsys: Any) -> None:
    def side(name: str, payload: bytes, received: bytes) -> demo.Side:
        s = demo.Side(name, cast(Any, None), cast(Any, None))
        s.sent_hash.update(payload)
        s.sent = len(payload)
        s.received_hash.update(received)
        s.received = len(received)
        return s

    lines: list[str] = []
    client = side("client", b"abc", b"xyz")
    server = side("server", b"xyz", b"abd")  # one byte changed on the way to the server
    status = demo._summary((client, server), demo.Status(), lines.append)
    assert status == 1
    assert "verified: FAILED (the bytes received differ from the bytes sent)" in lines
    assert any(line.startswith("client -> server") and line.endswith("MISMATCH") for line in lines)
