"""``longtls tunnel --config FILE`` (issue 15): several tunnels from one TOML
file, checked in full before anything starts, errors naming the file, the
tunnel and the key, and SIGHUP applying what changed without dropping live
connections (docs/tunnel-config.md)."""

from __future__ import annotations

import contextlib
import signal
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.cli import LONGTLS
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles
from longtls.cli import tunnel as tunnel_cli
from longtls.cli import tunnel_config, tunnel_runner
from longtls.cli.main import main

RUNNING = r"tunnel\(s\) from .* running"


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    return tmp_pki_files("ecdsa-p256")


class TaggedEcho(socketserver.ThreadingTCPServer):
    """Answers each line with ``TAG:`` + the line, so a test sees which backend it reached."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        super().__init__((LOOPBACK, 0), _TaggedHandler)
        self.port: int = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _TaggedHandler(socketserver.StreamRequestHandler):
    server: TaggedEcho

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            for line in self.rfile:
                self.wfile.write(self.server.tag + b":" + line)
                self.wfile.flush()


class UDPEcho:
    """Answers each datagram with ``echo:`` + the datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.sock.sendto(b"echo:" + data, address)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def backends() -> Iterator[Callable[[bytes], TaggedEcho]]:
    servers: list[TaggedEcho] = []

    def start(tag: bytes) -> TaggedEcho:
        servers.append(TaggedEcho(tag))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Line:
    """A plain TCP connection that sends a line and reads the answer line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=10)
        self.file = self.sock.makefile("rb")

    def ask(self, text: bytes) -> bytes:
        self.sock.sendall(text + b"\n")
        return self.file.readline().rstrip(b"\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def ask_once(port: int, text: bytes) -> bytes:
    line = Line(port)
    try:
        return line.ask(text)
    finally:
        line.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def credentials(files: PkiFiles, config_dir: Path) -> str:
    """cert/key keys relative to the config file's directory (as a user writes them)."""
    cert = Path(files.server.chain).relative_to(config_dir)
    key = Path(files.server.key).relative_to(config_dir)
    return f'cert = "{cert}"\nkey = "{key}"\n'


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, list[str], str]:
    """``longtls tunnel --config PATH --check`` in this process: status, stderr lines, stdout."""
    status = main(["tunnel", "--config", str(path), "--check"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return status, captured.err.splitlines(), captured.out


# -- checking ----------------------------------------------------------------------------


def test_check_prints_a_summary_and_resolves_paths_from_the_files_directory(
    files: PkiFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir("/")  # relative paths are the file's, not the working directory's
    port = free_port()
    config = write(tmp_path / "tunnels.toml", f"""
metrics = "127.0.0.1:9100"
grace = 5

[tunnel.web]
mode = "server"
listen = "127.0.0.1:{port}"
forward = "127.0.0.1:8000"
{credentials(files, tmp_path)}
groups = ["X25519", "P-256"]
cert-update = false

[tunnel.app]
mode = "client"
listen = "127.0.0.1:0"
connect = "127.0.0.1:{port}"
ca = "{Path(files.ca).relative_to(tmp_path)}"
""")
    status, err, out = check(capsys, config)
    assert (status, err) == (0, [])
    assert out.splitlines() == [
        f"{config}: 2 tunnel(s), no problem found",
        f"  tunnel server 'web': TLS on 127.0.0.1:{port} -> plain TCP to 127.0.0.1:8000; client certificates: none",
        f"  tunnel client 'app': plain TCP on 127.0.0.1:0 -> TLS to 127.0.0.1:{port}",
        "  metrics on http://127.0.0.1:9100/metrics; grace 5 s",
    ]
    # --check listened on nothing: the port is still free.
    with socket.socket() as probe:
        probe.bind((LOOPBACK, port))


def test_keys_are_the_flags_of_the_mode(files: PkiFiles, tmp_path: Path) -> None:
    # A list joins into a comma list, false turns a --x/--no-x flag off, a
    # relative path is the file's directory's, numbers become their text.
    config = write(tmp_path / "t.toml", f"""
[tunnel.web]
mode = "server"
listen = "*:0"
forward = "[::1]:8000"
{credentials(files, tmp_path)}
groups = ["X25519", "P-256"]
cert-update = false
rekey-interval = 30
eku-profile = ["draft-13", "draft-05"]
""")
    loaded = tunnel_config.load(str(config), tunnel_cli.add_parser, tunnel_cli._checked_build)
    (spec,) = loaded.specs
    args = spec.args
    assert spec.name == "web" and args.mode == "server"
    assert args.listen == ("", 0) and args.forward == ("::1", 8000)
    assert [g.name for g in args.groups] == ["x25519", "secp256r1"]
    assert args.cert_update is False and spec.configuration.certificate_update is False
    assert args.rekey_interval == 30.0 and spec.configuration.rekey_interval == 30.0
    assert [p.value for p in args.eku_profile] == ["draft-13", "draft-05"]
    assert args.cert == str(files.server.chain)  # absolute again
    assert loaded.grace == tunnel_config.DEFAULT_GRACE and loaded.metrics is None
    assert loaded.log_level is None and loaded.log_format is None


@pytest.mark.parametrize(
    ("change", "restart"),
    [
        # read per connection: swapped in, live connections untouched
        ('forward = "127.0.0.1:9"', False),
        ('cert = "{chain}"\nkey = "{key}"\nca = "{ca}"\nallow-cn = ["sensor-1"]', False),
        ('rekey-interval = 10\ngroups = ["P-256"]\ncert-update = false', False),
        # not: a new listener, the old one drains
        ('listen = "127.0.0.1:2"', True),
        ("udp = true", True),
        ("idle-timeout = 60", True),
    ],
)
def test_what_a_reload_swaps_and_what_restarts(files: PkiFiles, tmp_path: Path, change: str, restart: bool) -> None:
    base = f'mode = "server"\nlisten = "127.0.0.1:1"\nforward = "127.0.0.1:8"\n{credentials(files, tmp_path)}'
    change = change.format(chain=files.server.chain, key=files.server.key, ca=files.ca)
    changed = "\n".join(
        line for line in base.splitlines() if line.split(" = ")[0] not in [c.split(" = ")[0] for c in change.splitlines()]
    )
    before = write(tmp_path / "before.toml", "[tunnel.t]\n" + base)
    after = write(tmp_path / "after.toml", "[tunnel.t]\n" + changed + "\n" + change + "\n")
    (old,) = tunnel_config.load(str(before), tunnel_cli.add_parser, tunnel_cli._checked_build).specs
    (new,) = tunnel_config.load(str(after), tunnel_cli.add_parser, tunnel_cli._checked_build).specs
    differs = tunnel_runner._changed_dests(old.args, new.args)
    assert differs  # the change is seen
    assert bool(differs - tunnel_runner.swappable_dests()) is restart, differs


SERVER = 'mode = "server"\nlisten = "127.0.0.1:{port}"\nforward = "127.0.0.1:1"\n'


@pytest.mark.parametrize(
    ("table", "message"),
    [
        # bad type
        (SERVER + 'udp = "yes"\n{creds}', "key 'udp': expected true or false, not str 'yes'"),
        (SERVER + "rekey-interval = true\n{creds}", "key 'rekey-interval': expected a value (SECONDS), not true/false"),
        (SERVER + "rekey-interval = -3\n{creds}", "key 'rekey-interval': "),
        # unknown key, with the CLI's did-you-mean
        (SERVER + "rekey-intervall = 3\n{creds}", "key 'rekey-intervall': unknown key (did you mean 'rekey-interval'?)"),
        (SERVER + "cacert = 'x'\n{creds}", "key 'cacert': unknown key (did you mean 'ca'?)"),
        # missing keys
        ('mode = "server"\nlisten = "127.0.0.1:{port}"\n{creds}', "key 'forward': missing (a tunnel server needs it)"),
        ('listen = "127.0.0.1:{port}"\n', "key 'mode': missing: give mode = \"server\" or mode = \"client\""),
        ('mode = "relay"\n', "key 'mode': expected \"server\" or \"client\", not 'relay'"),
        # a process setting in a tunnel
        (SERVER + 'metrics = "127.0.0.1:9100"\n{creds}', "key 'metrics': set it at the top level of the file"),
        # bad values
        (SERVER.replace("127.0.0.1:1", "https://backend/") + "{creds}", "key 'forward': that is a URL, give HOST:PORT"),
        (SERVER + 'cert = "nothere.pem"\n', "key 'cert': cannot read certificate file '{dir}/nothere.pem'"),
    ],
)
def test_a_broken_tunnel_is_refused_naming_file_tunnel_and_key(
    files: PkiFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, message: str,
) -> None:
    creds = credentials(files, tmp_path)
    config = write(tmp_path / "broken.toml", "[tunnel.web]\n" + table.format(port=free_port(), creds=creds))
    status, err, out = check(capsys, config)
    assert status == 2 and out == ""
    assert len(err) == 1, err
    assert err[0].startswith(f"longtls: error: {config}: tunnel 'web': " + message.format(dir=tmp_path)), err


def test_two_tunnels_on_one_listen_address_are_refused(
    files: PkiFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    creds = credentials(files, tmp_path)
    config = write(tmp_path / "dup.toml", f"""
[tunnel.a]
{SERVER.format(port=port)}{creds}
[tunnel.b]
mode = "server"
listen = "*:{port}"
forward = "127.0.0.1:2"
{creds}
[tunnel.c]
mode = "server"
udp = true
listen = "127.0.0.1:{port}"
forward = "127.0.0.1:2"
{creds}""")
    status, err, _ = check(capsys, config)
    # c is UDP on the same port: another socket, allowed.
    assert (status, err) == (2, [
        f"longtls: error: {config}: tunnel 'b': key 'listen': *:{port} is also where tunnel 'a' listens "
        f"(127.0.0.1:{port})"
    ])


def test_every_problem_of_the_file_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "two.toml", """
grace = "long"
lisen = "x"
log-format = "xml"
[tunnel.a]
mode = "client"
[tunnel.b]
mode = "server"
listen = 8443
""")
    status, err, _ = check(capsys, config)
    assert status == 2
    assert err == [
        f"longtls: error: {config}: key 'lisen': unknown top-level key; "
        "the settings of a tunnel go in its [tunnel.NAME] table",
        f"longtls: error: {config}: key 'grace': expected a number of seconds above 0, not 'long'",
        f"longtls: error: {config}: key 'log-format': expected one of text, json, not 'xml'",
        f"longtls: error: {config}: tunnel 'a': key 'listen': missing (a tunnel client needs it)",
        f"longtls: error: {config}: tunnel 'b': key 'listen': expected HOST:PORT, got '8443'",
    ]


def test_not_toml_and_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "x.toml", "[tunnel.a\n")
    status, err, _ = check(capsys, config)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"longtls: error: {config}: not valid TOML: ")
    status, err, _ = check(capsys, tmp_path / "missing.toml")
    assert (status, err) == (2, [f"longtls: error: {tmp_path / 'missing.toml'}: cannot read it: No such file or directory"])


def test_mode_and_config_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tunnel"]) == 2
    assert capsys.readouterr().err == (
        "longtls: error: give a MODE (server or client) or --config FILE (see 'longtls tunnel --help')\n"
    )
    assert main(["tunnel", "--config", "t.toml", "client", "--listen", ":1", "--connect", "h:2"]) == 2
    assert "--config FILE and a MODE (client) exclude each other" in capsys.readouterr().err


# -- running -----------------------------------------------------------------------------


@contextlib.contextmanager
def running(config: Path) -> Iterator[PeerProcess]:
    with start_process([*LONGTLS, "tunnel", "--config", str(config)], ready_pattern=RUNNING, timeout=20) as proc:
        yield proc


@pytest.mark.slow
def test_three_kinds_of_tunnel_from_one_file_carry_data(
    files: PkiFiles, tmp_path: Path, backends: Callable[[bytes], TaggedEcho]
) -> None:
    # One process: plain TCP -> app (client) -> web (TLS server) -> TCP
    # service, and plain UDP -> dgram-out (client --udp) -> dgram-in (DTLS
    # server) -> UDP service.
    service, udp_service = backends(b"A"), UDPEcho()
    web, app = free_port(), free_port()
    dgram_in, dgram_out = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    creds = credentials(files, tmp_path)
    ca = Path(files.ca).relative_to(tmp_path)
    config = write(tmp_path / "tunnels.toml", f"""
[tunnel.web]
mode = "server"
listen = "127.0.0.1:{web}"
forward = "127.0.0.1:{service.port}"
{creds}
[tunnel.app]
mode = "client"
listen = "127.0.0.1:{app}"
connect = "127.0.0.1:{web}"
ca = "{ca}"

[tunnel.dgram-in]
mode = "server"
udp = true
listen = "127.0.0.1:{dgram_in}"
forward = "127.0.0.1:{udp_service.port}"
{creds}
[tunnel.dgram-out]
mode = "client"
udp = true
listen = "127.0.0.1:{dgram_out}"
connect = "127.0.0.1:{dgram_in}"
ca = "{ca}"
""")
    try:
        with running(config) as proc:
            for name in ("web", "app", "dgram-in", "dgram-out"):
                assert f" '{name}': " in proc.stderr, proc.describe()
            assert ask_once(app, b"over TLS") == b"A:over TLS", proc.describe()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(10)
                sock.sendto(b"over DTLS", (LOOPBACK, dgram_out))
                assert sock.recvfrom(1000)[0] == b"echo:over DTLS", proc.describe()
            assert "Traceback" not in proc.stderr, proc.describe()
    finally:
        udp_service.close()


@pytest.mark.slow
def test_sighup_applies_a_changed_file_and_keeps_live_connections(
    files: PkiFiles, tmp_path: Path, backends: Callable[[bytes], TaggedEcho]
) -> None:
    first, second = backends(b"A"), backends(b"B")
    web, app, extra = free_port(), free_port(), free_port()
    creds = credentials(files, tmp_path)

    def tunnels(target: int, *, with_extra: bool) -> str:
        text = f"""
grace = 5
[tunnel.web]
mode = "server"
listen = "127.0.0.1:{web}"
forward = "127.0.0.1:{target}"
{creds}
[tunnel.app]
mode = "client"
listen = "127.0.0.1:{app}"
connect = "127.0.0.1:{web}"
ca = "{Path(files.ca).relative_to(tmp_path)}"
"""
        if with_extra:
            text += f'[tunnel.extra]\nmode = "server"\nlisten = "127.0.0.1:{extra}"\nforward = "127.0.0.1:{first.port}"\n{creds}'
        return text

    config = write(tmp_path / "tunnels.toml", tunnels(first.port, with_extra=False))
    with running(config) as proc:
        live = Line(app)  # through app (unchanged) and web (changed below)
        try:
            assert live.ask(b"one") == b"A:one"
            # web forwards elsewhere now; a tunnel is added.
            write(config, tunnels(second.port, with_extra=True))
            proc.proc.send_signal(signal.SIGHUP)
            proc.wait_for_output(rf"^longtls: tunnel 'web': reloaded .* new connections go to 127.0.0.1:{second.port}$")
            proc.wait_for_output(r"^longtls: tunnel 'app': reloaded ")
            proc.wait_for_output(rf"^longtls: tunnel 'extra': added: tunnel server 'extra': TLS on 127.0.0.1:{extra} ")
            assert live.ask(b"two") == b"A:two", proc.describe()  # the live connection goes on, to A
            assert ask_once(app, b"new") == b"B:new", proc.describe()  # a new one goes to B
            with socket.create_connection((LOOPBACK, extra), timeout=5):
                pass  # the added tunnel listens

            # A broken file changes nothing, and says why in one line.
            config.write_text(tunnels(first.port, with_extra=False).replace('mode = "client"', 'mode = "clent"'))
            proc.proc.send_signal(signal.SIGHUP)
            proc.wait_for_output(
                rf"^longtls: reload failed, every tunnel keeps running as it was: {config}: tunnel 'app': "
                r"key 'mode': expected \"server\" or \"client\", not 'clent'$"
            )
            assert live.ask(b"three") == b"A:three", proc.describe()
            assert ask_once(app, b"still") == b"B:still", proc.describe()
            with socket.create_connection((LOOPBACK, extra), timeout=5):
                pass  # not removed by the broken file

            # The extra tunnel removed: it stops accepting.
            write(config, tunnels(second.port, with_extra=False))
            proc.proc.send_signal(signal.SIGHUP)
            proc.wait_for_output(r"^longtls: tunnel 'extra': removed: stopped accepting")
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((LOOPBACK, extra), timeout=5).close()
            assert live.ask(b"four") == b"A:four", proc.describe()
        finally:
            live.close()
        assert "Traceback" not in proc.stderr, proc.describe()


@pytest.mark.slow
def test_sighup_with_a_new_listen_address_moves_the_listener(
    files: PkiFiles, tmp_path: Path, backends: Callable[[bytes], TaggedEcho]
) -> None:
    service = backends(b"A")
    old, new, tls_port = free_port(), free_port(), free_port()
    creds = credentials(files, tmp_path)

    def tunnels(port: int) -> str:
        return f"""
[tunnel.plain]
mode = "client"
listen = "127.0.0.1:{port}"
connect = "127.0.0.1:{tls_port}"
ca = "{Path(files.ca).relative_to(tmp_path)}"
[tunnel.tls]
mode = "server"
listen = "127.0.0.1:{tls_port}"
forward = "127.0.0.1:{service.port}"
{creds}"""

    config = write(tmp_path / "t.toml", tunnels(old))
    with running(config) as proc:
        live = Line(old)
        try:
            assert live.ask(b"before") == b"A:before"
            write(config, tunnels(new))
            proc.proc.send_signal(signal.SIGHUP)
            proc.wait_for_output(r"^longtls: tunnel 'plain': restarted \(--listen changed\): .* get up to 30 s")
            proc.wait_for_output(r"^longtls: tunnel 'tls': reloaded ")
            assert ask_once(new, b"new address") == b"A:new address", proc.describe()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((LOOPBACK, old), timeout=5).close()
            # The connection accepted on the old address drains: it still works.
            assert live.ask(b"after") == b"A:after", proc.describe()
        finally:
            live.close()
        assert "Traceback" not in proc.stderr, proc.describe()


def test_a_port_taken_by_another_program_stops_the_tunnels_already_started(
    files: PkiFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only listening finds it: exit 1, and tunnel 'a' (started first) is stopped again.
    free = free_port()
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        creds = credentials(files, tmp_path)
        config = write(tmp_path / "t.toml", f"""
[tunnel.a]
{SERVER.format(port=free)}{creds}
[tunnel.b]
{SERVER.format(port=busy)}{creds}""")
        assert main(["tunnel", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"longtls: error: tunnel 'b': cannot listen on 127.0.0.1:{busy}: "), err
    assert len(err.splitlines()) == 1, err
    with socket.socket() as probe:
        probe.bind((LOOPBACK, free))
