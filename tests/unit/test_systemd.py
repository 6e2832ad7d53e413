"""systemd integration (issue 15): sd_notify over NOTIFY_SOCKET (sd_notify(3),
systemd.service(5) Type=notify) from ``longtls tunnel`` and ``longtls serve``,
and the sample unit in docs/systemd/ (docs/systemd.md)."""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.cli import LONGTLS, longtls, summary
from helpers.peers import LOOPBACK, free_port, require_binary, start_process
from helpers.pki import PkiFiles
from longtls.cli import systemd

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "docs" / "systemd" / "longtls-tunnel.service"


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class FakeManager:
    """The service manager's end: an AF_UNIX datagram socket, path or abstract."""

    def __init__(self, tmp_path: Path, *, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"longtls-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = tmp_path / "notify"
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(10)

    def message(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        assert data.endswith("\n"), data
        return dict(line.split("=", 1) for line in data.splitlines())

    def until(self, key: str, timeout: float = 15.0) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Messages until one with ``key``; returns it and the ones before."""
        before: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.message()
            if key in message:
                return message, before
            before.append(message)
        pytest.fail(f"no {key} within {timeout} s; got {before}")

    def __enter__(self) -> FakeManager:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeManager]:
    with FakeManager(tmp_path, abstract=request.param == "abstract") as fake:
        yield fake


@pytest.fixture
def abstract_manager(tmp_path: Path) -> Iterator[FakeManager]:
    with FakeManager(tmp_path, abstract=True) as fake:
        yield fake


# -- the protocol --------------------------------------------------------------------------


def test_messages_reach_the_socket(manager: FakeManager) -> None:
    notifier = systemd.Notifier.from_environment({"NOTIFY_SOCKET": manager.address})
    assert notifier is not None
    try:
        assert notifier.ready("2 tunnel(s)\nlistening")
        assert manager.message() == {"READY": "1", "STATUS": "2 tunnel(s) listening"}  # one line
        before = monotonic_usec()
        assert notifier.reloading()
        message = manager.message()
        after = monotonic_usec()
        assert message["RELOADING"] == "1"
        assert before <= int(message["MONOTONIC_USEC"]) <= after  # CLOCK_MONOTONIC, microseconds
        assert notifier.stopping()
        assert manager.message()["STOPPING"] == "1"
    finally:
        notifier.close()


def test_no_socket_no_notifier(caplog: pytest.LogCaptureFixture) -> None:
    assert systemd.Notifier.from_environment({}) is None
    assert systemd.Notifier.from_environment({"NOTIFY_SOCKET": ""}) is None
    assert systemd.Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert "not a Unix socket path" in caplog.text


def test_a_manager_that_went_away_is_not_an_error(tmp_path: Path) -> None:
    notifier = systemd.Notifier(str(tmp_path / "gone"))
    try:
        assert notifier.ready("x") is False
    finally:
        notifier.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    pid = os.getpid()
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "200000"}) == 0.1
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(pid)}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(pid + 1)}) is None
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


# -- the commands --------------------------------------------------------------------------


@pytest.mark.slow
def test_tunnel_notifies_ready_watchdog_reload_and_stopping(
    tmp_pki_files: Callable[..., PkiFiles], tmp_path: Path, abstract_manager: FakeManager
) -> None:
    manager = abstract_manager  # an @name, as systemd's own socket is
    files = tmp_pki_files("ecdsa-p256")
    port = free_port()
    config = tmp_path / "tunnels.toml"
    config.write_text(
        f'[tunnel.web]\nmode = "server"\nlisten = "127.0.0.1:{port}"\nforward = "127.0.0.1:1"\n'
        f'cert = "{files.server.chain}"\nkey = "{files.server.key}"\n'
    )
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "200000"}
    with start_process([*LONGTLS, "tunnel", "--config", str(config)], env=env) as proc:
        ready, _ = manager.until("READY")
        # READY=1 comes once the listener is up.
        assert ready["STATUS"] == f"1 tunnel(s) listening on 127.0.0.1:{port}", proc.describe()
        socket.create_connection((LOOPBACK, port), timeout=5).close()
        # WATCHDOG=1 every 0.1 s (half of WATCHDOG_USEC).
        started = time.monotonic()
        for _ in range(3):
            manager.until("WATCHDOG")
        assert time.monotonic() - started < 2.0
        before = monotonic_usec()
        proc.proc.send_signal(signal.SIGHUP)
        reloading, _ = manager.until("RELOADING")
        assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        ready, _ = manager.until("READY")
        assert ready["STATUS"].startswith("1 tunnel(s) listening")
        proc.proc.send_signal(signal.SIGTERM)
        stopping, _ = manager.until("STOPPING")
        assert stopping["STOPPING"] == "1"
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr, proc.describe()


MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
# PR_SET_MDWE (65), PR_MDWE_REFUSE_EXEC_GAIN (1): what MemoryDenyWriteExecute=yes
# enforces (no memory both writable and executable), kept across execve.
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE failed (Linux 6.3+ needed): errno {ctypes.get_errno()}")
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.slow
def test_serve_notifies_and_runs_under_memory_deny_write_execute(
    tmp_pki_files: Callable[..., PkiFiles], tmp_path: Path
) -> None:
    # serve under the rule MemoryDenyWriteExecute=yes applies (the unit's
    # choice): the handshake, an ML-KEM Extended Key Update and the
    # notifications must all work without writable+executable memory.
    files = tmp_pki_files("ecdsa-p256")
    port = free_port()
    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(MDWE_WRAPPER)
    serve = [
        sys.executable, str(wrapper), *LONGTLS, "serve", "--echo", "--port", str(port),
        "--cert", str(files.server.chain), "--key", str(files.server.key),
    ]
    manager = FakeManager(tmp_path, abstract=False)  # a path
    with manager, start_process(serve, env={"NOTIFY_SOCKET": manager.address}) as proc:
        ready, _ = manager.until("READY")
        assert ready["STATUS"] == f"serving on 127.0.0.1:{port}", proc.describe()
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), input="hello")
        assert result.returncode == 0 and result.stdout == "hello", (result.stderr, proc.describe())
        result = longtls(
            "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--rekey-count", "1", "--summary", "json"
        )
        assert result.returncode == 0, (result.stderr, proc.describe())
        (update,) = [r for r in summary(result.stderr) if r["event"] == "key_update"]
        assert (update["kind"], update["group"]) == ("extended", "X25519MLKEM768")
        proc.proc.send_signal(signal.SIGHUP)
        manager.until("RELOADING")
        manager.until("READY")
        proc.proc.send_signal(signal.SIGTERM)
        manager.until("STOPPING")
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr, proc.describe()


def test_mdwe_wrapper_refuses_writable_executable_memory(tmp_path: Path) -> None:
    # The wrapper above is only a proof if the rule holds after execve.
    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(MDWE_WRAPPER)
    probe = (
        "import mmap\n"
        "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n    print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, str(wrapper), sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout) == (0, "refused\n"), result.stderr


# -- the sample unit -----------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_sample_unit_has_the_documented_settings() -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].endswith("longtls tunnel --config /etc/longtls/tunnels.toml")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(service["WatchdogSec"]) > 0
    assert service["LoadCredential"] == "server.key:/etc/longtls/private/server.key"
    for key in (
        "DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "MemoryDenyWriteExecute",
    ):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    assert service["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service["SystemCallFilter"] == "@system-service"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_sample_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")  # fails, not skips, without it (install-peers.sh)
    # verify wants ExecStart's program to exist: point it at this checkout's.
    program = shutil.which("longtls", path=str(Path(sys.executable).parent))
    assert program is not None
    unit = tmp_path / "longtls-tunnel.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/longtls", program))
    with contextlib.chdir(tmp_path):
        result = subprocess.run(
            [analyze, "verify", f"./{unit.name}"], capture_output=True, text=True, timeout=60
        )
    # verify exits 0 even for an unknown key or a bad value: it only warns; so no output at all.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
