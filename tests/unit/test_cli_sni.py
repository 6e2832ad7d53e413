"""Several certificates on one port, chosen by server_name (issue 15, docs/sni.md),
as a script runs ``longtls serve`` and ``longtls tunnel server``.

The proof of the issue: two names served from one port with the right chain
each, to ``openssl s_client -servername`` (a real peer) and to ``longtls
connect --servername``; then ``--cert-dir``, the pairing errors, and a renewal
of one certificate that reaches only the live connection that uses it, with
the expiry gauge per certificate.
"""

from __future__ import annotations

import re
import signal
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from helpers.cli import LONGTLS, longtls, summary
from helpers.echo import EchoBackend
from helpers.pair import Pair
from helpers.peers import LOOPBACK, PeerProcess, free_port, require_binary, run, start_process
from helpers.pki import Credential, make_ca, make_leaf
from helpers.renewal import renew
from longtls.aio.connections import LiveConnections
from longtls.cli import credential_set
from longtls.cli.common import CLIError, build_server_configuration
from longtls.cli.main import build_parser
from longtls.config import Configuration
from longtls.connection import Connection
from longtls.errors import ConfigurationError
from longtls.events import CertificateUpdated

INTERVAL = "0.1"  # --cert-check-interval here


@dataclass(frozen=True)
class Files:
    ca: Path
    default: Credential  # localhost, 127.0.0.1 (ECDSA)
    a: Credential  # a.example, www.a.example (ECDSA)
    b: Credential  # b.example (RSA)
    dir: Path


@pytest.fixture(scope="module")
def pki() -> tuple[Credential, Credential, Credential, Credential]:
    ca = make_ca("ecdsa-p256")
    return (
        ca,
        make_leaf(ca, "ecdsa-p256", ["localhost", "127.0.0.1"]),
        make_leaf(ca, "ecdsa-p256", ["a.example", "www.a.example"]),
        make_leaf(ca, "rsa-2048", ["b.example"]),
    )


@pytest.fixture
def files(pki: tuple[Credential, Credential, Credential, Credential], tmp_path: Path) -> Files:
    """default.pem (chain and key in one file), a.crt + a.key, b.crt + b.key, ca.pem."""
    ca, default, a, b = pki
    d = tmp_path / "certs"
    d.mkdir()
    (d / "default.pem").write_bytes(default.chain_pem() + default.key_pem())
    for name, cred in (("a", a), ("b", b)):
        (d / f"{name}.crt").write_bytes(cred.chain_pem())
        (d / f"{name}.key").write_bytes(cred.key_pem())
    (tmp_path / "ca.pem").write_bytes(ca.ca_pem())
    return Files(tmp_path / "ca.pem", default, a, b, d)


@pytest.fixture
def processes() -> Iterator[Callable[..., PeerProcess]]:
    """``start(ready_pattern, *longtls_args)``; every process is stopped at teardown."""
    stack: list[Any] = []

    def start(ready: str, *args: str) -> PeerProcess:
        context = start_process([*LONGTLS, *args], ready_pattern=ready)
        stack.append(context)
        peer: PeerProcess = context.__enter__()
        return peer

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def pairs(f: Files) -> list[str]:
    """The three credentials as flags: default first, a key after its cert, b's
    with --key before --chain-less --cert (each --key right after its --cert)."""
    d = f.dir
    return [
        "--cert", str(d / "default.pem"),
        "--cert", str(d / "a.crt"), "--key", str(d / "a.key"),
        "--cert", str(d / "b.crt"), "--key", str(d / "b.key"),
    ]


def openssl_leaf(port: int, ca: Path, servername: str | None) -> x509.Certificate:
    """The first certificate openssl s_client received (-showcerts prints it as PEM)."""
    openssl = require_binary("openssl")
    sni = ["-servername", servername] if servername else ["-noservername"]
    result = run(
        [openssl, "s_client", "-connect", f"{LOOPBACK}:{port}", *sni, "-CAfile", str(ca), "-tls1_3", "-showcerts"],
        input="", timeout=30, check=False,
    )
    block = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    assert block is not None, result.stdout + result.stderr
    return x509.load_pem_x509_certificate(block.group(0).encode())


def longtls_subject(port: int, ca: Path, servername: str | None) -> str:
    """The server certificate's subject as ``longtls connect`` verified it."""
    sni = ["--servername", servername] if servername else []
    result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(ca), *sni, "--summary", "json", input="x\n")
    assert result.returncode == 0, result.stderr
    (handshake,) = [r for r in summary(result.stderr) if r["event"] == "handshake"]
    subject: str = handshake["peer_subject"]
    return subject


def subject(cred: Credential) -> str:
    return cred.cert.subject.rfc4514_string()


def test_two_names_on_one_port_get_their_own_chain(processes: Callable[..., PeerProcess], files: Files) -> None:
    port = free_port()
    server = processes(r"^longtls: serving \(echo\) on ", "serve", "--echo", "--port", str(port), *pairs(files))
    line = server.wait_for_output(r"^longtls: serving .*$").group(0)
    assert f"certificates: a.example, www.a.example ({files.dir / 'a.crt'}); b.example ({files.dir / 'b.crt'})" in line
    assert f"default: {files.dir / 'default.pem'}" in line
    # A real peer: OpenSSL's s_client, with and without server_name.
    assert openssl_leaf(port, files.ca, "a.example") == files.a.cert
    assert openssl_leaf(port, files.ca, "b.example") == files.b.cert
    assert openssl_leaf(port, files.ca, None) == files.default.cert
    assert openssl_leaf(port, files.ca, "unknown.example") == files.default.cert
    # longtls connect verifies each chain for its name.
    assert longtls_subject(port, files.ca, "a.example") == subject(files.a)
    assert longtls_subject(port, files.ca, "B.Example") == subject(files.b)  # any case


def test_cert_dir(processes: Callable[..., PeerProcess], files: Files) -> None:
    port = free_port()
    server = processes(r"^longtls: serving \(echo\) on ", "serve", "--echo", "--port", str(port), "--cert-dir", str(files.dir))
    # default.pem is the default, whatever its place by name.
    assert f"default: {files.dir / 'default.pem'}" in server.wait_for_output(r"^longtls: serving .*$").group(0)
    assert openssl_leaf(port, files.ca, "www.a.example") == files.a.cert
    assert openssl_leaf(port, files.ca, "b.example") == files.b.cert
    assert openssl_leaf(port, files.ca, None) == files.default.cert


def configuration(*args: str) -> Configuration:
    """``serve``'s Configuration for these arguments, built in this process."""
    parsed = build_parser().parse_args(["serve", "--echo", *args])
    return build_server_configuration(parsed)


def test_pairing(files: Files) -> None:
    d = files.dir
    cfg = configuration("--cert", f"{d}/a.crt", "--key", f"{d}/a.key", "--cert", f"{d}/default.pem",
                        "--cert", f"{d}/b.crt", "--key", f"{d}/b.key")
    assert cfg.certificate_chain[0] == files.a.cert  # the first --cert is the default
    assert [(c.certificate_chain[0], c.names) for c in cfg.server_credentials] == [
        (files.default.cert, ("localhost",)), (files.b.cert, ("b.example",)),
    ]
    # One --cert: its --key may come first, as it always could.
    one = configuration("--key", f"{d}/a.key", "--cert", f"{d}/a.crt")
    assert one.certificate_chain[0] == files.a.cert and not one.server_credentials
    # --cert with --cert-dir: the --cert is the default, the directory adds the
    # others (a file named by both counts once).
    mixed = configuration("--cert", f"{d}/b.crt", "--key", f"{d}/b.key", "--cert-dir", str(d))
    assert mixed.certificate_chain[0] == files.b.cert
    assert [c.certificate_chain[0] for c in mixed.server_credentials] == [files.default.cert, files.a.cert]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Several --cert: a --key belongs to the --cert right before it.
        (["--key", "{d}/a.key", "--cert", "{d}/a.crt", "--cert", "{d}/b.crt"], "comes before any --cert"),
        (["--cert", "{d}/a.crt", "--key", "{d}/a.key", "--key", "{d}/b.key", "--cert", "{d}/b.crt"],
         "--key is given twice after --cert"),
        # b.crt without its key after it: the file holds none.
        (["--cert", "{d}/a.crt", "--key", "{d}/a.key", "--cert", "{d}/b.crt"], "holds no private key"),
        (["--cert-dir", "{d}/missing"], "cannot read --cert-dir"),
        (["--key", "{d}/a.key", "--cert-dir", "{d}"], "--key and --chain need a --cert"),
    ],
)
def test_pairing_errors(files: Files, args: list[str], message: str) -> None:
    with pytest.raises((CLIError, ConfigurationError), match=re.escape(message)):
        configuration(*(a.format(d=files.dir) for a in args))


def test_cert_dir_refuses_a_key_without_its_certificate(files: Files) -> None:
    (files.dir / "c.key").write_bytes(files.a.key_pem())
    with pytest.raises(ConfigurationError, match=r"c\.key is a key without its certificate"):
        configuration("--cert-dir", str(files.dir))


def test_a_second_certificate_without_dns_names_is_refused(
    files: Files, pki: tuple[Credential, Credential, Credential, Credential]
) -> None:
    ip_only = make_leaf(pki[0], "ecdsa-p256", ["192.0.2.1"])
    (files.dir / "ip.pem").write_bytes(ip_only.chain_pem() + ip_only.key_pem())
    with pytest.raises(ConfigurationError, match=r"ip\.pem: .*no DNS name"):
        configuration("--cert", str(files.dir / "default.pem"), "--cert", str(files.dir / "ip.pem"))
    # As the default it is fine: no name has to select it.
    assert configuration("--cert", str(files.dir / "ip.pem")).certificate_chain[0] == ip_only.cert


# -- renewal of one certificate of several -------------------------------------------------


def not_after_gauge(port: int) -> dict[tuple[str, str], float]:
    """longtls_certificate_not_after_timestamp_seconds by (credential, serial)."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    gauge: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("longtls_certificate_not_after_timestamp_seconds{"):
            labels, value = line.rsplit(" ", 1)
            serial = re.search(r'serial="([0-9A-F]+)"', labels)
            credential = re.search(r'credential="([^"]*)"', labels)
            assert serial is not None and credential is not None, line
            gauge[(credential.group(1), serial.group(1))] = float(value)
    return gauge


def test_a_renewal_reaches_only_the_connections_of_its_certificate(
    processes: Callable[..., PeerProcess], files: Files
) -> None:
    backend = EchoBackend()
    port, metrics_port = free_port(), free_port()
    try:
        server = processes(
            r"^longtls: tunnel server: ", "tunnel", "server", "--listen", f"{LOOPBACK}:{port}",
            "--forward", f"{LOOPBACK}:{backend.port}", *pairs(files),
            "--cert-check-interval", INTERVAL, "--metrics", f"{LOOPBACK}:{metrics_port}",
        )
        assert "certificates: a.example, www.a.example" in server.wait_for_output(r"^longtls: tunnel server: .*$").group(0)
        a_crt, b_crt = str(files.dir / "a.crt"), str(files.dir / "b.crt")
        before = not_after_gauge(metrics_port)
        for cred, label in ((files.a, a_crt), (files.b, b_crt)):
            assert before[(label, f"{cred.cert.serial_number:X}")] == cred.cert.not_valid_after_utc.timestamp()

        def client(name: str) -> PeerProcess:
            return processes(
                r'"event": "handshake"', "connect", f"{LOOPBACK}:{port}", "--servername", name,
                "--ca", str(files.ca), "--summary", "json",
            )

        on_a, on_b = client("a.example"), client("b.example")
        renewed = renew(files.a)
        (files.dir / "a.key").write_bytes(renewed.key_pem())  # an ACME client: key, then certificate
        (files.dir / "a.crt").write_bytes(renewed.chain_pem())
        on_a.wait_for_output(r'"event": "certificate_update"')
        line = server.wait_for_output(r"^longtls: certificate renewed from .*$").group(0)
        # Two live connections, one of them on a.example: only that one counts.
        assert a_crt in line and "sent to 1 of 1 live connection(s)" in line
        records = {}
        for name, proc in (("a", on_a), ("b", on_b)):
            proc.write("bye\n")
            assert proc.proc.stdin is not None
            proc.proc.stdin.close()
            assert proc.wait(15) == 0, proc.describe()
            records[name] = [r for r in summary(proc.stderr) if r["event"] == "certificate_update"]
        assert records["a"] == [{
            "event": "certificate_update", "direction": "received", "subject": subject(renewed),
            "serial": f"{renewed.cert.serial_number:x}",
            "not_after": renewed.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }]
        assert records["b"] == []
        # The gauge follows a's renewal; b's and the default's stay.
        after = not_after_gauge(metrics_port)
        assert after[(a_crt, f"{renewed.cert.serial_number:X}")] == renewed.cert.not_valid_after_utc.timestamp()
        assert (a_crt, f"{files.a.cert.serial_number:X}") not in after
        assert (b_crt, f"{files.b.cert.serial_number:X}") in after
        assert (str(files.dir / "default.pem"), f"{files.default.cert.serial_number:X}") in after
        assert "Traceback" not in server.stderr
    finally:
        backend.shutdown()
        backend.server_close()


def _finish(proc: PeerProcess) -> list[dict[str, Any]]:
    """End a ``connect --summary json`` cleanly; its certificate_update records."""
    proc.write("bye\n")
    assert proc.proc.stdin is not None
    proc.proc.stdin.close()
    assert proc.wait(15) == 0, proc.describe()
    return [r for r in summary(proc.stderr) if r["event"] == "certificate_update"]


def test_sighup_sends_each_changed_certificate_to_its_own_connections(
    processes: Callable[..., PeerProcess], files: Files
) -> None:
    port = free_port()
    server = processes(
        r"^longtls: serving \(echo\) on ", "serve", "--echo", "--port", str(port), *pairs(files),
        "--cert-check-interval", "0",  # no watching: the reload is SIGHUP's doing
    )
    on_a, on_b = (
        processes(r'"event": "handshake"', "connect", f"{LOOPBACK}:{port}", "--servername", name,
                  "--ca", str(files.ca), "--summary", "json")
        for name in ("a.example", "b.example")
    )
    renewed = renew(files.b)
    (files.dir / "b.key").write_bytes(renewed.key_pem())
    (files.dir / "b.crt").write_bytes(renewed.chain_pem())
    server.proc.send_signal(signal.SIGHUP)
    line = server.wait_for_output(r"^longtls: certificate renewed from .*$").group(0)
    assert str(files.dir / "b.crt") in line and "sent to 1 of 1 live connection(s)" in line
    on_b.wait_for_output(r'"event": "certificate_update"')
    assert [r["serial"] for r in _finish(on_b)] == [f"{renewed.cert.serial_number:x}"]
    assert _finish(on_a) == []
    assert server.stderr.count("certificate renewed") == 1  # a's and the default did not change
    assert openssl_leaf(port, files.ca, "b.example") == renewed.cert  # and new connections get it


class _Member:
    """A live connection of LiveConnections over an in-memory pair: the server side."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.peername = "in-memory"

    @property
    def connection(self) -> Connection:
        return self.pair.server

    def update_certificate(self, chain: Any = None, private_key: Any = None) -> bool:
        self.pair.server.update_certificate(chain, private_key)
        went = not self.pair.server.certificate_update_pending
        self.pair.pump()
        return went


def test_a_tunnel_reload_sends_each_changed_certificate_to_its_own_connections(files: Files) -> None:
    """``tunnel``'s SIGHUP installs a new Configuration whole (cli/tunnel_runner.py);
    credential_set.roll_out_reload sends what changed to the connections of
    the previous one that used it."""
    args = build_parser().parse_args([
        "tunnel", "server", "--listen", ":0", "--forward", "127.0.0.1:1", *pairs(files),
    ])
    previous = build_server_configuration(args)
    live = LiveConnections()
    members = {}
    for name in ("a.example", "b.example", "localhost"):
        client = Configuration(is_client=True, server_name=name)
        client.load_verify_locations(files.ca)
        pair = Pair(Connection(client), Connection(previous))
        pair.client.start_handshake()
        pair.pump()
        members[name] = _Member(pair)
        live.add(members[name])
    renewed = renew(files.b)
    (files.dir / "b.key").write_bytes(renewed.key_pem())
    (files.dir / "b.crt").write_bytes(renewed.chain_pem())
    fresh = build_server_configuration(args)  # what the reload builds
    tail = credential_set.roll_out_reload(previous, fresh, live, args)
    assert tail == f"; certificate {files.dir / 'b.crt'} sent to 1 of 1 live connection(s)"
    updates = {
        name: [e.certificates[0] for e in m.pair.client_events if isinstance(e, CertificateUpdated)]
        for name, m in members.items()
    }
    assert updates == {"a.example": [], "b.example": [renewed.cert], "localhost": []}
    assert credential_set.roll_out_reload(fresh, fresh, live, args) == ""  # nothing changed: nothing sent
