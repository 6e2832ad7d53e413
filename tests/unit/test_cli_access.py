"""``--allow-*`` and ``--crl`` on the command line (issue 15), as real processes on 127.0.0.1.

The proof of issue 15: an allowed client connects; a client of the same CA
outside the list gets access_denied, a revoked one certificate_revoked, and
the tunnel server's log line names the rule.  The PKI is ``longtls.certs``'s
(what ``longtls certs`` writes), with one more client and a CRL made here.
"""

from __future__ import annotations

import contextlib
import datetime
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from helpers.cli import LONGTLS, assert_one_error_line, longtls
from helpers.echo import EchoBackend
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from longtls import certs
from longtls.cli.common import build_server_configuration
from longtls.cli.main import build_parser
from longtls.config import Configuration
from longtls.connection import Connection
from longtls.constants import AlertDescription
from longtls.errors import ConfigurationError, ProtocolError
from longtls.events import ApplicationData, ConnectionClosed, HandshakeComplete

READY = r"^longtls: tunnel (server|client): "


@dataclass(frozen=True)
class Files:
    directory: Path
    bundle: certs.Bundle

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def client_args(self, stem: str) -> list[str]:
        return ["--cert", self.path(f"{stem}.pem"), "--key", self.path(f"{stem}.key")]

    def write_crl(self, revoked: list[x509.Certificate], *, next_update: datetime.timedelta) -> str:
        """crl.pem: the CA's CRL listing ``revoked`` (rewritten in place)."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder().issuer_name(self.bundle.ca.cert.subject)
            .last_update(now - datetime.timedelta(minutes=5)).next_update(now + next_update)
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build()
            )
        crl = builder.sign(self.bundle.ca.key, hashes.SHA256())
        (self.directory / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return self.path("crl.pem")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """``longtls certs``'s bundle (client CN 'longtls client') plus intruder.pem,
    a client certificate of the same CA named 'intruder'."""
    directory = tmp_path_factory.mktemp("access") / "certs"
    bundle = certs.make_bundle()
    certs.write_bundle(bundle, directory)
    intruder = certs.make_leaf(bundle.ca, "ecdsa-p256", ["intruder"], client=True)
    (directory / "intruder.pem").write_bytes(intruder.cert_pem())
    (directory / "intruder.key").write_bytes(intruder.key_pem())
    return Files(directory, bundle)


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    server = EchoBackend()
    yield server.port
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def tunnel(mode: str, *args: str) -> Iterator[tuple[PeerProcess, int]]:
    port = free_port()
    with start_process(
        [*LONGTLS, "tunnel", mode, "--listen", f"{LOOPBACK}:{port}", *args], ready_pattern=READY
    ) as proc:
        yield proc, port


def connect(files: Files, port: int, client: str) -> tuple[bytes, AlertDescription | None]:
    """A longtls client (in this process, over TCP) with ``client``'s
    certificate sends a line: what came back, and the alert that ended it."""
    config = Configuration(is_client=True, server_name="localhost")
    config.load_verify_locations(files.path("ca.pem"))
    config.load_cert_chain(files.path(f"{client}.pem"), files.path(f"{client}.key"))
    conn = Connection(config)
    received = b""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        conn.start_handshake()
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            with contextlib.suppress(ProtocolError):  # the peer's fatal alert
                conn.receive_data(data)
            for event in conn.events():
                if isinstance(event, HandshakeComplete):
                    conn.send(b"hi\n")
                elif isinstance(event, ApplicationData):
                    received += event.data
                    if received.endswith(b"\n"):
                        conn.close()
                elif isinstance(event, ConnectionClosed):
                    return received, event.alert
            sock.sendall(conn.data_to_send())
    return received, None


def test_allowed_outsider_and_revoked_clients(files: Files, backend: int) -> None:
    crl = files.write_crl([], next_update=datetime.timedelta(hours=5))
    with tunnel(
        "server", "--forward", f"{LOOPBACK}:{backend}", "--cert", files.path("server.pem"),
        "--key", files.path("server.key"), "--ca", files.path("ca.pem"),
        "--allow-cn", "longtls client", "--allow-dns", "*.agents.example.com", "--crl", crl,
    ) as (server, port):
        # A CRL that reaches its nextUpdate within a day is worth a warning.
        assert "reaches its nextUpdate" in server.stderr, server.describe()

        assert connect(files, port, "client") == (b"hi\n", None)
        assert connect(files, port, "intruder") == (b"", AlertDescription.access_denied)
        line = server.wait_for_output(r"^.*matches no allow-list rule.*$").group(0)
        assert "client certificate CN='intruder' (DNS:intruder)" in line
        assert "(allow-cn 'longtls client'; allow-dns '*.agents.example.com')" in line
        assert "access_denied" in line

        # The CA revokes the allowed client; SIGHUP reads the CRL file again.
        files.write_crl([files.bundle.client.cert], next_update=datetime.timedelta(days=7))
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_output("reloaded")
        assert connect(files, port, "client") == (b"", AlertDescription.certificate_revoked)
        line = server.wait_for_output(r"^.*is revoked.*$").group(0)
        assert f"serial {files.bundle.client.cert.serial_number:#x}" in line
        assert "Traceback" not in server.stderr, server.describe()


def test_tunnel_client_refuses_a_server_outside_its_list(files: Files, backend: int) -> None:
    with tunnel(
        "server", "--forward", f"{LOOPBACK}:{backend}",
        "--cert", files.path("server.pem"), "--key", files.path("server.key"),
    ) as (_, server_port), tunnel(
        "client", "--connect", f"{LOOPBACK}:{server_port}", "--ca", files.path("ca.pem"),
        "--allow-dns", "db.example.com",
    ) as (client, port), socket.create_connection((LOOPBACK, port)) as app:
        app.settimeout(10)
        app.sendall(b"hi\n")
        with pytest.raises(ConnectionResetError):
            while app.recv(100):
                pass
        line = client.wait_for_output(r"^.*matches no allow-list rule.*$").group(0)
        # The server certificate of `longtls certs` is for localhost, 127.0.0.1 and ::1.
        assert "server certificate CN='localhost' (DNS:localhost, IP:127.0.0.1, IP:::1)" in line
        assert "allow-dns 'db.example.com'" in line


def _server_configuration_error(files: Files, *flags: str) -> str:
    """The one-line error of ``tunnel server`` with ``flags``, built in-process
    (argparse and the Configuration builder, as ``main`` runs them)."""
    args = build_parser().parse_args([
        "tunnel", "server", "--listen", f"{LOOPBACK}:1", "--forward", f"{LOOPBACK}:9",
        "--cert", files.path("server.pem"), "--key", files.path("server.key"), *flags,
    ])
    with pytest.raises(ConfigurationError) as caught:
        build_server_configuration(args)
    return str(caught.value.args[0])


def test_flag_errors(files: Files, tmp_path: Path) -> None:
    # As the user sees it: one line, exit status 1, before anything listens.
    assert_one_error_line(
        longtls("tunnel", "server", "--listen", f"{LOOPBACK}:{free_port()}", "--forward", f"{LOOPBACK}:9",
                "--cert", files.path("server.pem"), "--key", files.path("server.key"), "--allow-cn", "x"),
        "--allow-cn check client certificates, which this server does not require (no --ca)", "give --ca FILE",
    )
    ca = ("--ca", files.path("ca.pem"))
    assert "--verify-client optional" in _server_configuration_error(
        files, *ca, "--verify-client", "optional", "--allow-ip", "10.0.0.0/8"
    )
    assert _server_configuration_error(files, *ca, "--allow-ip", "10.0.0.1/8") == (
        "--allow-ip rule '10.0.0.1/8' has host bits set: did you mean 10.0.0.0/8?"
    )
    assert "a wildcard must be the whole left-most label" in _server_configuration_error(
        files, *ca, "--allow-dns", "*.com"
    )
    assert _server_configuration_error(files, *ca, "--crl", str(tmp_path / "missing.pem")).startswith(
        "--crl: cannot read CRL file"
    )
    (tmp_path / "bad.pem").write_text("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    assert "is not a PEM or DER certificate revocation list" in _server_configuration_error(
        files, *ca, "--crl", str(tmp_path / "bad.pem")
    )
    # A CRL named after our CA but signed by another key would never apply.
    impostor = certs.make_ca(common_name=files.bundle.ca.cert.subject.rfc4514_string().split(",")[0][3:])
    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder().issuer_name(files.bundle.ca.cert.subject)
        .last_update(now).next_update(now + datetime.timedelta(days=1)).sign(impostor.key, hashes.SHA256())
    )
    (tmp_path / "other.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    assert "not signed by that trusted CA's key" in _server_configuration_error(
        files, *ca, "--crl", str(tmp_path / "other.pem")
    )


@pytest.mark.parametrize("command", [["serve"], ["tunnel", "server"], ["tunnel", "client"]])
def test_help_lists_the_flags(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    shown = capsys.readouterr().out
    for flag in ("--allow-cn", "--allow-dns", "--allow-uri", "--allow-ip", "--crl"):
        assert flag in shown, (flag, shown)
    whose = "server" if command[-1] == "client" else "client"
    assert f"who may connect: checks on the {whose}'s certificate" in shown
