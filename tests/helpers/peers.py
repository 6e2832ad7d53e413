"""Run external TLS peers (openssl, gnutls, tshark...) on loopback for tests.

    port = free_port()
    with start_process(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", ..., "-key", ...],
        ready_pattern=r"^ACCEPT$",
    ) as server:
        ...  # connect to 127.0.0.1:port
        assert "something" in server.output(), server.describe()

A missing peer is a test failure with an install hint (require_binary /
require_module), never a skip: the suite only means something when every
peer it names actually ran.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import pytest

LOOPBACK = "127.0.0.1"

# binary -> Debian package providing it (for the install hint)
_DEBIAN_PACKAGE = {
    "openssl": "openssl",
    "gnutls-cli": "gnutls-bin",
    "gnutls-serv": "gnutls-bin",
    "certtool": "gnutls-bin",
    "tshark": "tshark",
}

# import name -> PyPI requirement in the `test` extra (for the install hint)
_PYPI_PACKAGE = {
    "tlslite": "tlslite-ng==0.9.0b2",
    "OpenSSL": "pyOpenSSL>=26",
    "kyber_py": "kyber-py",
    "dilithium_py": "dilithium-py",
}


def require_binary(name: str) -> str:
    """Absolute path of ``name`` on PATH; fails the test (not skip) if missing."""
    path = shutil.which(name)
    if path is None:
        package = _DEBIAN_PACKAGE.get(name, name)
        pytest.fail(
            f"interop peer {name!r} is not installed. Run `make peers` "
            f"(scripts/install-peers.sh, Debian package {package!r}) and re-run the tests.",
            pytrace=False,
        )
    return path


REPO_ROOT = Path(__file__).resolve().parents[2]
TSHARK44_SCRIPT = REPO_ROOT / "scripts" / "install-tshark44.sh"


@functools.cache
def require_tshark44() -> str:
    """The tshark 4.4 wrapper that scripts/install-tshark44.sh installs into
    the peers cache (Debian trixie's tshark run with trixie's loader; Debian
    12's tshark 4.0 cannot parse DTLS 1.3 records). Fails the test (not skip)
    with the command that installs it when it is not there or does not run."""
    where = subprocess.run(
        ["bash", str(TSHARK44_SCRIPT), "--print-dir"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if where.returncode != 0:
        pytest.fail(
            f"{TSHARK44_SCRIPT} --print-dir failed ({where.returncode}): {where.stderr}",
            pytrace=False,
        )
    wrapper = Path(where.stdout.strip()) / "bin" / "tshark"
    banner = ""
    if os.access(wrapper, os.X_OK):
        banner = subprocess.run(
            [str(wrapper), "-v"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    if not banner.startswith("TShark (Wireshark) 4.4."):
        pytest.fail(
            f"interop peer tshark 4.4 is not installed at {wrapper} (or does not run: {banner[:200]!r}). "
            f"Run `make peers` (scripts/install-tshark44.sh unpacks Debian trixie's tshark there) "
            f"and re-run the tests.",
            pytrace=False,
        )
    return str(wrapper)


def require_module(name: str) -> ModuleType:
    """Import ``name``; fails the test (not skip) with an install hint if missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        error = str(exc)
    requirement = _PYPI_PACKAGE.get(name.split(".")[0], name)
    pytest.fail(
        f"interop peer module {name!r} cannot be imported ({error}). Run `make venv` "
        f"(installs the `test` extra, incl. {requirement!r}) and run the tests "
        f"with .venv/bin/python.",
        pytrace=False,
    )


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (TCP by default; SOCK_DGRAM for DTLS)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> bool:
    """True once a TCP connect to host:port succeeds, False after ``timeout``.

    Note that the probe is itself a connection the server will see (and may
    count against ``-naccept``); prefer a ready_pattern where the peer prints one.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


class _Collector(threading.Thread):
    """Drains one pipe into a buffer so the child never blocks on a full pipe."""

    def __init__(self, stream: object, sink: list[str], cond: threading.Condition) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._sink = sink
        self._cond = cond

    def run(self) -> None:
        stream = self._stream
        assert hasattr(stream, "readline")
        for line in iter(stream.readline, ""):
            with self._cond:
                self._sink.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()


class PeerProcess:
    """A running peer: its Popen, what it printed so far, and helpers."""

    def __init__(self, args: Sequence[str], proc: subprocess.Popen[str], port: int | None) -> None:
        self.args = list(args)
        self.proc = proc
        self.port = port
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        assert proc.stdout is not None and proc.stderr is not None
        self._threads = [
            _Collector(proc.stdout, self._stdout, self._cond),
            _Collector(proc.stderr, self._stderr, self._cond),
        ]
        for t in self._threads:
            t.start()

    @property
    def stdout(self) -> str:
        with self._cond:
            return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self._stderr)

    def output(self) -> str:
        """stdout then stderr, as collected so far."""
        return self.stdout + self.stderr

    def describe(self) -> str:
        """A block for assertion messages: command, exit status, output."""
        with self._cond:
            return self._describe()

    def _describe(self) -> str:
        # caller holds self._cond (it is not reentrant)
        rc = self.proc.poll()
        status = "running" if rc is None else f"exited with {rc}"
        return (
            f"peer: {' '.join(self.args)}\n({status})\n"
            f"--- stdout ---\n{''.join(self._stdout)}"
            f"--- stderr ---\n{''.join(self._stderr)}--- end ---"
        )

    def write(self, data: str) -> None:
        """Send ``data`` to the peer's stdin (e.g. text for s_server to echo)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait_for_output(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until ``pattern`` (a multiline regex) appears in stdout or stderr.

        Fails the test with the peer's output if it does not, or if the peer
        exits first.
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for text in ("".join(self._stdout), "".join(self._stderr)):
                    m = regex.search(text)
                    if m is not None:
                        return m
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                    pytest.fail(
                        f"peer exited before printing {pattern!r}\n{self._describe()}",
                        pytrace=False,
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(
                        f"peer did not print {pattern!r} within {timeout}s\n{self._describe()}",
                        pytrace=False,
                    )
                self._cond.wait(min(remaining, 0.1))

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the peer to exit by itself; fails the test on timeout."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"peer still running after {timeout}s\n{self.describe()}", pytrace=False)
        for t in self._threads:
            t.join(timeout=2)
        return rc

    def stop(self) -> None:
        """Terminate the peer and its whole process group, then reap it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(3)
        else:
            # the leader is gone; make sure no child it left behind survives
            _signal_group(self.proc, signal.SIGKILL)
        for t in self._threads:
            t.join(timeout=2)


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def start_process(
    args: Sequence[str],
    *,
    ready_pattern: str | None = None,
    port: int | None = None,
    host: str = LOOPBACK,
    timeout: float = 10.0,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Iterator[PeerProcess]:
    """Start ``args`` in its own process group, wait until it is ready, yield it,
    and kill the group on exit.

    Ready means: ``ready_pattern`` (a multiline regex) appeared on stdout or
    stderr, else, if ``port`` is given, a TCP connect to host:port succeeded,
    else simply started. A peer that exits or times out before it is ready
    fails the test with its output. ``args[0]`` is checked with require_binary.
    stdin is a pipe kept open (PeerProcess.write), so peers that quit on EOF
    (openssl s_server/s_client) keep running.
    """
    require_binary(args[0])
    full_env = dict(os.environ)
    if env is not None:
        full_env.update(env)
    proc = subprocess.Popen(
        list(args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    peer = PeerProcess(args, proc, port)
    try:
        if ready_pattern is not None:
            peer.wait_for_output(ready_pattern, timeout)
        elif port is not None and not wait_for_port(port, host, timeout):
            pytest.fail(
                f"peer did not accept on {host}:{port} within {timeout}s\n{peer.describe()}",
                pytrace=False,
            )
        yield peer
    finally:
        peer.stop()


def run(
    args: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 30.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot peer command (e.g. ``openssl s_client``) to completion.

    Fails the test, with the command's output, on timeout or (if ``check``)
    a non-zero exit.
    """
    require_binary(args[0])
    full_env = dict(os.environ)
    if env is not None:
        full_env.update(env)
    try:
        result = subprocess.run(
            list(args),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=full_env,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(args)} did not finish within {timeout}s\n"
            f"--- stdout ---\n{_text(exc.stdout)}--- stderr ---\n{_text(exc.stderr)}--- end ---",
            pytrace=False,
        )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited with {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}--- end ---",
            pytrace=False,
        )
    return result


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


class PeerServerThread:
    """An interop peer's server in a thread on a loopback port.

    It accepts ``accept`` connections and hands each raw socket to
    ``serve(raw)`` (the peer's handshake, the test's handler); ``results``
    keeps what each returned and ``error`` the first failure, which leaving
    the ``with`` block raises.
    """

    name = "peer"

    def __init__(self, accept: int = 1, timeout: float = 15.0) -> None:
        self.accept = accept
        self.timeout = timeout
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(timeout)
        self.port: int = self.listener.getsockname()[1]
        self.results: list[object] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def result(self) -> object:
        return self.results[0] if self.results else None

    def serve(self, raw: socket.socket) -> object:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            for _ in range(self.accept):
                raw, _ = self.listener.accept()
                raw.settimeout(self.timeout)
                try:
                    self.results.append(self.serve(raw))
                finally:
                    raw.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self.listener.close()

    def __enter__(self) -> PeerServerThread:
        self.thread.start()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.thread.join(self.timeout + 5 if exc_type is None else 3)
        if exc_type is None:
            assert not self.thread.is_alive(), f"{self.name} server thread still running"
        if self.error is not None:
            raise AssertionError(f"the {self.name} server failed: {self.error!r}") from self.error
