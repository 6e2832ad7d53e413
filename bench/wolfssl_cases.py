"""wolfSSL 5.5.4's DTLS 1.3 example server and client in their benchmark modes.

The build is the interop tests' (``tests/helpers/wolfssl.py``:
``scripts/build-wolfssl.sh``, ``make peers``, docs/interop-wolfssl.md).  A
missing build fails the "dtls" section with the command that makes it; it
never drops the section.

Both programs run with the wolfSSL source tree as working directory (they
look for ./certs upwards), DTLS 1.3 (``-u -v 4``), X25519 only (``-t``),
TLS_AES_128_GCM_SHA256 only (``-l``), our ECDSA P-256 chain, no client
certificate (server ``-d``, client ``-x``).  From ``examples/client/client.c``:

- ``-b N``: N connections one after another (handshake, close_notify, a new
  socket), then prints "wolfSSL_connect avg took: x milliseconds" (the
  average of the last 90%);
- ``-B total,block``: one connection; ``block`` bytes written, the same
  read back (the server echoes), until ``total``; prints "Connect x ms" and
  the TX and RX times.  The server needs the same ``-B total,block``.

The server serves for ever (``-i``); for ``-B`` it echoes ``total`` bytes of
each connection.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import Pki

VERSION = "5.5.4"
WOLFSSL_SUITE = "TLS13-AES128-GCM-SHA256"
COMMON = ["-v", "4", "-u", "-t", "-l", WOLFSSL_SUITE]


def _helpers() -> Any:
    """tests/helpers/wolfssl.py (the build lookup, the UDP port probe),
    imported when needed: it imports pytest."""
    from helpers import wolfssl

    return wolfssl


def build() -> tuple[Path, Path, Path, str]:
    """(source tree, server, client, BUILD-INFO's first line).  The helper
    fails a test with pytest.fail; here that is a RuntimeError naming the
    command that builds wolfSSL, and the section fails with it."""
    import pytest

    try:
        b = _helpers().wolfssl_build()
    except pytest.fail.Exception as exc:
        raise RuntimeError(f"the dtls section needs wolfSSL: {exc.msg}") from None
    return b.source, b.server, b.client, b.info.splitlines()[0]


@dataclass
class ClientRun:
    wall: float  # seconds, process start to exit
    cpu: float  # seconds of CPU, user + system (wait4)
    output: str

    def connect_seconds(self) -> float:
        match = re.search(r"Connect\s+([0-9.]+) ms", self.output)
        if match is None:
            raise RuntimeError(f"wolfSSL client printed no connect time:\n{self.output}")
        return float(match.group(1)) / 1e3


@dataclass
class Wolfssl:
    """The wolfSSL example programs, and the servers started from them."""

    pki: Pki
    source: Path
    server_binary: Path
    client_binary: Path
    info: str
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def find(cls, pki: Pki) -> Wolfssl:
        return cls(pki, *build())

    def start_server(self, extra: list[str]) -> tuple[int, int]:
        """A server on a free UDP port of 127.0.0.1, serving for ever; (port, pid)."""
        import socket

        wolfssl = _helpers()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        errors = self.pki.directory / f"wolfssl-server-{port}.stderr"
        with open(errors, "wb") as sink:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [str(self.server_binary), "-p", str(port), "-c", str(self.pki.chain_file),
                 "-k", str(self.pki.key_file), "-d", "-i", *COMMON, *extra],
                cwd=self.source, stdout=subprocess.DEVNULL, stderr=sink, stdin=subprocess.DEVNULL,
            )
        self.servers.append(proc)
        deadline = time.monotonic() + 10
        while not wolfssl.udp_port_bound(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wolfSSL server {extra} did not start: {errors.read_text(errors='replace')}")
            time.sleep(0.02)
        return port, proc.pid

    def client(self, port: int, extra: list[str], timeout: float = 600.0) -> ClientRun:
        """Run the client against 127.0.0.1:port to its end; fails unless it
        exits 0 having printed what its mode prints."""
        with tempfile.TemporaryFile() as out:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [str(self.client_binary), "-h", "127.0.0.1", "-p", str(port), "-x", "-A", str(self.pki.ca_file),
                 *COMMON, *extra],
                cwd=self.source, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            deadline = start + timeout
            while True:  # wait4 gives the child's own CPU time
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    raise RuntimeError(f"wolfSSL client {extra} did not finish in {timeout:g} s")
                time.sleep(0.002)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            output = out.read().decode(errors="replace")
        expected = "avg took" if "-b" in extra else "Client Benchmark"
        if proc.returncode != 0 or expected not in output:
            raise RuntimeError(f"wolfSSL client {extra} failed ({proc.returncode}):\n{output}")
        return ClientRun(wall, usage.ru_utime + usage.ru_stime, output)

    def close(self) -> None:
        for proc in self.servers:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.servers.clear()
