"""``longtls demo``: what ``make demo`` runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any, cast

from helpers.cli import LONGTLS, longtls
from longtls import demo


def initiated(output: str, link: str, side: str) -> int:
    match = re.search(rf"^{link} link: updates initiated by {side}: (\d+)$", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


def assert_intact(output: str, link: str) -> None:
    for direction in ("client -> server", "server -> client"):
        line = next(line for line in output.splitlines() if line.startswith(f"{link} link: {direction}"))
        sent, received = re.search(r"sent (\d+) bytes, received (\d+) bytes", line).groups()  # type: ignore[union-attr]
        assert sent == received and int(sent) > 0, line
        assert line.endswith(": intact"), line


def test_demo_verifies_every_byte_and_both_sides_rekey_on_both_links() -> None:
    """The default (what ``make demo`` runs): an EKU-keyed link next to an MLS-keyed one."""
    result = longtls("demo", "--duration", "5", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert out.startswith("longtls demo: an EKU-keyed link next to an MLS-keyed link")
    for link in ("EKU", "MLS"):
        assert initiated(out, link, "client") >= 1
        assert initiated(out, link, "server") >= 1
        assert_intact(out, link)
    assert re.search(r"^verified: OK$", out, re.MULTILINE), out
    assert "group X25519MLKEM768" in out
    assert re.search(r"^  MLS link on 127\.0\.0\.1:\d+: MLS-TLS, MLS cipher suite 0xF0A1 \(KEM X25519MLKEM768\), "
                     r"records TLS_AES_128_GCM_SHA256, epoch 1, server CN=localhost", out, re.MULTILINE), out
    # Not a terminal: plain periodic lines, one per link, no escape sequences.
    assert "\x1b[" not in out
    eku_lines = re.findall(r"^\[ *[\d.]+s\] EKU generation (\d+) \((client|server), X25519MLKEM768, ", out, re.MULTILINE)
    mls_lines = re.findall(r"^\[ *[\d.]+s\] MLS epoch (\d+) \((client|server), X25519MLKEM768, ", out, re.MULTILINE)
    assert len(eku_lines) >= 3 and len(mls_lines) >= 3, out
    # The MLS link starts in epoch 1 (the Welcome's); each commit is the next
    # epoch, the client's and the server's in turn.
    epochs = [int(epoch) for epoch, _ in mls_lines]
    assert epochs == sorted(epochs) and epochs[0] >= 2, out
    commits = initiated(out, "MLS", "client") + initiated(out, "MLS", "server")
    assert re.search(rf"^MLS link: epoch changes \(MLS commits\): {commits}, epoch {commits + 1}, ", out, re.MULTILINE)
    assert {by for _, by in mls_lines} == {"client", "server"}
    # Half-way, the EKU link's server certificate is renewed and the client
    # receives it on the live connection (Certificate Update), the data still flowing.
    renewed = re.search(r"EKU link: the server's certificate was renewed \(subject (\S+), serial ([0-9a-f]+),", out)
    assert renewed, out
    assert re.search(
        rf"^\[ *[\d.]+s\] EKU link: the client received the renewed certificate on the live connection: "
        rf"subject {re.escape(renewed.group(1))}, serial {renewed.group(2)}, not after \S+Z$",
        out, re.MULTILINE,
    ), out
    assert re.search(r"^EKU link: certificate updates received by the client: 1$", out, re.MULTILINE), out


def test_demo_mls_only() -> None:
    result = longtls("demo", "--mls", "--duration", "2", "--interval", "0.4", "--mls-suite", "3", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("longtls demo: an MLS-keyed link,")
    assert "EKU" not in out and "certificate" not in out
    assert "MLS cipher suite 0x0003 (KEM x25519), records TLS_CHACHA20_POLY1305_SHA256" in out
    assert initiated(out, "MLS", "client") >= 2 and initiated(out, "MLS", "server") >= 2
    assert_intact(out, "MLS")
    assert re.search(r"^verified: OK$", out, re.MULTILINE), out


def test_demo_options_and_keylog(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    result = longtls(
        "demo", "--duration", "2", "--interval", "0.4", "--group", "x25519",
        "--eku-profile", "draft-05", "--mls-suite", "1", "--keylog", str(keylog), timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "group x25519" in result.stdout
    assert "Extended Key Update draft-05" in result.stdout
    assert "MLS cipher suite 0x0001 (KEM x25519)" in result.stdout
    assert initiated(result.stdout, "EKU", "client") + initiated(result.stdout, "EKU", "server") >= 3
    # Both links' clients log their secrets, each under its own "client random".
    by_random: dict[str, set[str]] = {}
    for line in keylog.read_text().splitlines():
        label, random, _ = line.split()
        by_random.setdefault(random, set()).add(label)
    assert len(by_random) == 2, by_random
    tls = next(labels for labels in by_random.values() if "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in labels)
    mls = next(labels for labels in by_random.values() if "CLIENT_HANDSHAKE_TRAFFIC_SECRET" not in labels)
    assert {"CLIENT_TRAFFIC_SECRET_0", "CLIENT_TRAFFIC_SECRET_1", "SERVER_TRAFFIC_SECRET_2"} <= tls
    # MLS-TLS: one pair per epoch, from the Welcome's epoch 1 to the last one.
    commits = initiated(result.stdout, "MLS", "client") + initiated(result.stdout, "MLS", "server")
    assert mls == {f"{side}_TRAFFIC_SECRET_{epoch}" for side in ("CLIENT", "SERVER") for epoch in range(1, commits + 2)}


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
    # The table (header, one row per link, the initiated line) is redrawn in place.
    assert "\x1b[4F\x1b[J" in out
    assert "client->server" in out and "verified: OK" in out
    assert re.search(r"^ +EKU +[\d.]+s +\d+ +X25519MLKEM768 ", out, re.MULTILINE), out
    assert re.search(r"^ +MLS +[\d.]+s +\d+ +X25519MLKEM768 ", out, re.MULTILINE), out
    assert re.search(r"^updates initiated: EKU client \d+, server \d+; MLS client \d+, server \d+", out, re.MULTILINE)


def test_summary_fails_on_a_mismatch(capsys: Any) -> None:
    def side(name: str, payload: bytes, received: bytes) -> demo.Side:
        s = demo.Side(name, cast(Any, None), cast(Any, None))
        s.sent_hash.update(payload)
        s.sent = len(payload)
        s.received_hash.update(received)
        s.received = len(received)
        return s

    lines: list[str] = []
    intact = demo.Link("eku", side("client", b"abc", b"def"), side("server", b"def", b"abc"), demo.Status(),
                       cast(Any, None))
    # One byte changed on the way to the server.
    garbled = demo.Link("mls", side("client", b"abc", b"xyz"), side("server", b"xyz", b"abd"), demo.Status(),
                        cast(Any, None))
    status = demo._summary([intact, garbled], lines.append)
    assert status == 1
    assert "verified: FAILED (the bytes received differ from the bytes sent)" in lines
    assert [line for line in lines if line.endswith("MISMATCH")] == [
        next(line for line in lines if line.startswith("MLS link: client -> server"))
    ]
    assert sum(line.endswith(": intact") for line in lines) == 3


def test_summary_fails_on_an_error_with_intact_bytes() -> None:
    link = demo.Link("mls", demo.Side("client", cast(Any, None), cast(Any, None)),
                     demo.Side("server", cast(Any, None), cast(Any, None)), demo.Status(), cast(Any, None))
    link.status.errors.append("key update started by the server failed: timed out")
    lines: list[str] = []
    assert demo._summary([link], lines.append) == 1
    assert "error: MLS link: key update started by the server failed: timed out" in lines
