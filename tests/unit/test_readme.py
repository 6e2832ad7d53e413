"""The README runs as written (issue 14, "README that runs").

Every fenced block of README.md says in its info string whether it runs:

- ```` ```sh ```` and ```` ```python ```` blocks run, as written;
- ```` ```sh no-run ```` (or ``python no-run``) marks a block that is not
  meant to run here: commands of another kind (``make test``, the install
  step, whose result the test already runs in), a usage synopsis;
- ```` ```text ```` is not code (a tree, an output sample).

A block without an info string, or in another language, fails the test, so
whoever adds a block decides.  The shell block is the Quick start: it runs
with bash (``-e -o pipefail``) in a scratch directory, with this virtual
environment's ``bin`` first on PATH, and leaves its servers running; the
Python blocks then run as files in that directory, the sans-I/O one against
the Quick start's echo server on port 4433, the asyncio one with its own
server on 4434.  Everything the shell started is in one process group
(``start_new_session``), killed in a ``finally``.

The ports are the README's, fixed: a port already in use fails the test
loudly, naming the port (it is never skipped).  Two runs of this test at the
same time on one machine therefore cannot both pass; the rest of the suite
uses ephemeral ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
RUNNABLE = frozenset({"sh", "python"})
NOT_CODE = frozenset({"text"})
NO_RUN = "no-run"
# The Quick start's ports (serve, http.server, tunnel server, tunnel client,
# metrics) and the asyncio example's.
PORTS = (4433, 8000, 8443, 8080, 9400, 4434)
FENCE = re.compile(r"^```(.*)$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    info: str
    text: str

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def runs(self) -> bool:
        return self.language in RUNNABLE and NO_RUN not in self.info.split()


def readme_blocks() -> list[Block]:
    """The fenced blocks of README.md (fences at the start of a line)."""
    blocks: list[Block] = []
    opening: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if opening is None:
            if match:
                opening, body = (number, match.group(1).strip()), []
        elif line.strip() == "```":
            blocks.append(Block(opening[0], opening[1], "\n".join(body) + "\n"))
            opening = None
        else:
            body.append(line)
    assert opening is None, f"README.md line {opening[0]}: fence never closed"
    return blocks


def test_every_readme_block_says_whether_it_runs() -> None:
    blocks = readme_blocks()
    for block in blocks:
        assert block.language in RUNNABLE | NOT_CODE, (
            f"README.md line {block.line}: info string {block.info!r}; say sh, python "
            f"(runs), sh {NO_RUN} / python {NO_RUN} (does not run) or text (not code)"
        )
    running = [block.language for block in blocks if block.runs]
    # The Quick start, the sans-I/O example, the asyncio example.
    assert running == ["sh", "python", "python"]


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers bind (asyncio and http.server set SO_REUSEADDR): a
        # port in TIME_WAIT is free for them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def stop_process_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def summary_records(stderr: str) -> list[dict[str, Any]]:
    """The ``--summary json`` lines among everything the servers also logged."""
    records = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if isinstance(record, dict) and "event" in record:
                records.append(record)
    return records


@pytest.mark.slow
def test_readme_quick_start_and_api_examples_run(tmp_path: Path) -> None:
    blocks = [block for block in readme_blocks() if block.runs]
    (quick_start,) = (block for block in blocks if block.language == "sh")
    sans_io = next(block for block in blocks if "from longtls.connection import Connection" in block.text)
    asyncio_example = next(block for block in blocks if "from longtls import aio" in block.text)

    busy = [port for port in PORTS if port_in_use(port)]
    if busy:
        pytest.fail(
            f"port(s) {busy} on 127.0.0.1 already in use: the README's Quick start and examples "
            f"need {list(PORTS)}; see what listens with `ss -ltnp` and stop it"
        )

    scratch = tmp_path / "quickstart"
    scratch.mkdir()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SSLKEYLOGFILE", None)
    (tmp_path / "quickstart.sh").write_text(quick_start.text)
    out_path, err_path = tmp_path / "quickstart.out", tmp_path / "quickstart.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        # Files, not pipes: the servers left running keep their output open.
        shell = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", str(tmp_path / "quickstart.sh")],
            cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )
    try:
        try:
            status = shell.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the Quick start did not finish in 90 s; stderr:\n{err_path.read_text()}")
        stdout, stderr = out_path.read_text(), err_path.read_text()
        assert status == 0, f"the Quick start failed ({status}):\n{stdout}\n{stderr}"

        # echo hello | longtls connect: the echo server's answer.
        assert "hello" in stdout.splitlines()
        # --rekey-count 3 --summary json: three extended key updates, then closed.
        records = summary_records(stderr)
        updates = [record for record in records if record["event"] == "key_update"]
        assert [record["generation"] for record in updates] == [1, 2, 3]
        assert {record["kind"] for record in updates} == {"extended"}
        assert {record["initiator"] for record in updates} == {"client"}
        assert records[-1]["event"] == "closed"
        # curl through the tunnel reaches http.server's listing of the scratch
        # directory; then the tunnel server's metrics.
        assert "Directory listing for /" in stdout and "certs/" in stdout
        assert re.search(r'^longtls_handshakes_total\{result="ok"\} [1-9]', stdout, re.MULTILINE)
        assert "longtls_key_updates_total" in stdout

        # Both at once (ports 4433 and 4434 do not collide): the test stays short.
        examples = {"sans_io": sans_io, "asyncio": asyncio_example}
        running: dict[str, subprocess.Popen[str]] = {}
        results: dict[str, tuple[str, str]] = {}
        try:
            for name, block in examples.items():
                script = tmp_path / f"readme_{name}_example.py"  # not asyncio.py: that would shadow asyncio
                script.write_text(block.text)
                running[name] = subprocess.Popen(
                    [sys.executable, str(script)], cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
            for name, process in running.items():
                results[name] = process.communicate(timeout=60)
                assert process.returncode == 0, f"README line {examples[name].line}:\n" + "\n".join(results[name])
        finally:
            for process in running.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
    finally:
        stop_process_group(shell.pid)

    # The sans-I/O example prints the echo of its line.
    assert results["sans_io"][0] == "b'hello\\n'\n"
    # The asyncio example: the handshake, its echo, one awaited EKU and that
    # update's completion event.
    lines = results["asyncio"][0].splitlines()
    assert lines[0].startswith("connected: ") and lines[0].endswith("EKU: True")
    assert lines[1:3] == ["b'hello'", "traffic keys are now generation 1"]
    assert lines[3] == "b''"
    assert re.fullmatch(r"update 1 by the client: \d+\.\d ms", lines[4])
    assert len(lines) == 5
