"""Safe defaults (issue 9).

- A server given a client CA (``serve --ca``, ``tunnel server --ca``) asks for
  and requires a client certificate unless ``--verify-client optional|none``
  says otherwise, and its start-up line says which.
- Servers pace peer-started Extended Key Updates: one a second by default.
- A server sending post-handshake CertificateRequests without end is cut off
  at ``max_post_handshake_auth_requests`` (64) with unexpected_message.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.cli import LONGTLS, longtls, summary
from helpers.pair import configs, connect
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles, make_ca, make_leaf
from longtls.cli.common import client_auth_mode
from longtls.cli.main import build_parser
from longtls.config import DEFAULT_SERVER_EKU_MIN_INTERVAL, ClientAuth, Configuration
from longtls.constants import AlertDescription
from longtls.errors import ConfigurationError, RemoteProtocolError
from longtls.events import (
    ConnectionClosed,
    KeyUpdateCompleted,
    KeyUpdateRejected,
    PeerAuthenticated,
)

# -- client certificates with --ca --------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def echo_backend() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def files(tmp_pki_files: Any) -> PkiFiles:
    files: PkiFiles = tmp_pki_files("ecdsa-p256")
    return files


@contextlib.contextmanager
def _tunnel_server(files: PkiFiles, backend: int, *args: str) -> Iterator[tuple[PeerProcess, int]]:
    port = free_port()
    with start_process(
        [*LONGTLS, "tunnel", "server", "--listen", f"{LOOPBACK}:{port}", "--forward", f"{LOOPBACK}:{backend}",
         "--cert", str(files.server.chain), "--key", str(files.server.key), *args],
        ready_pattern=r"^longtls: tunnel server: ",
    ) as proc:
        yield proc, port


@contextlib.contextmanager
def _serve(files: PkiFiles, *args: str) -> Iterator[tuple[PeerProcess, int]]:
    port = free_port()
    with start_process(
        [*LONGTLS, "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
         "--port", str(port), "--echo", *args],
        ready_pattern=r"^longtls: serving \(echo\) on ",
    ) as proc:
        yield proc, port


def _startup_line(proc: PeerProcess) -> str:
    return next(line for line in proc.stderr.splitlines() if line.startswith("longtls: "))


def _connect(files: PkiFiles, port: int, *args: str) -> Any:
    return longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json", *args,
        input="over the tunnel\n", timeout=60,
    )


def _with_client_certificate(files: PkiFiles) -> tuple[str, ...]:
    return ("--cert", str(files.client.chain), "--key", str(files.client.key))


def test_tunnel_server_with_a_client_ca_requires_client_certificates(
    files: PkiFiles, echo_backend: int
) -> None:
    with _tunnel_server(files, echo_backend, "--ca", str(files.ca)) as (server, port):
        line = _startup_line(server)
        assert f"client certificates: required (default with --ca; CA {files.ca})" in line, line
        refused = _connect(files, port)
        assert refused.returncode == 1, refused.stderr
        assert "certificate_required" in refused.stderr
        # The alert on the wire, as the client read it.
        assert summary(refused.stderr)[-1]["alert"] == "certificate_required"
        assert refused.stdout == ""  # nothing was relayed
        server.wait_for_output("certificate_required")
        accepted = _connect(files, port, *_with_client_certificate(files))
        assert accepted.returncode == 0, accepted.stderr
        assert accepted.stdout == "over the tunnel\n"


def test_tunnel_server_verify_client_none_still_works(files: PkiFiles, echo_backend: int) -> None:
    args = ("--ca", str(files.ca), "--verify-client", "none")
    with _tunnel_server(files, echo_backend, *args) as (server, port):
        assert "client certificates: none (--verify-client none)" in _startup_line(server)
        result = _connect(files, port)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "over the tunnel\n"


def test_serve_with_a_client_ca_requires_client_certificates(files: PkiFiles) -> None:
    with _serve(files, "--ca", str(files.ca)) as (server, port):
        assert "client certificates: required (default with --ca" in _startup_line(server)
        refused = _connect(files, port)
        assert refused.returncode == 1 and "certificate_required" in refused.stderr, refused.stderr
        accepted = _connect(files, port, *_with_client_certificate(files))
        assert accepted.returncode == 0 and accepted.stdout == "over the tunnel\n", accepted.stderr


@pytest.mark.parametrize(("args", "mode"), [
    ((), ClientAuth.NONE),
    (("--ca", "ca.pem"), ClientAuth.REQUIRED),
    (("--ca", "ca.pem", "--verify-client", "optional"), ClientAuth.OPTIONAL),
    (("--ca", "ca.pem", "--verify-client", "none"), ClientAuth.NONE),
    (("--ca", "ca.pem", "--verify-client", "required"), ClientAuth.REQUIRED),
    (("--verify-client", "required"), ClientAuth.REQUIRED),  # refused later: needs --ca
])
def test_client_auth_mode_from_the_options(args: tuple[str, ...], mode: ClientAuth) -> None:
    for command in (["serve", "--echo"], ["tunnel", "server", "--listen", "127.0.0.1:1", "--forward", "127.0.0.1:2"]):
        parsed = build_parser().parse_args([*command, "--cert", "c.pem", "--key", "k.pem", *args])
        assert client_auth_mode(parsed) is mode


def test_serve_without_a_client_ca_says_none(files: PkiFiles) -> None:
    with _serve(files) as (server, _):
        line = _startup_line(server)
        assert "client certificates: none;" in line, line


# -- pacing of peer-started Extended Key Updates --------------------------------------------


def test_server_default_pacing_is_one_second() -> None:
    assert DEFAULT_SERVER_EKU_MIN_INTERVAL == 1.0
    assert Configuration(is_client=False).effective_eku_min_interval == 1.0
    assert Configuration(is_client=True).effective_eku_min_interval == 0.0
    assert Configuration(is_client=False, eku_min_interval=0.0).effective_eku_min_interval == 0.0
    assert Configuration(is_client=False, eku_min_interval=5.0).effective_eku_min_interval == 5.0
    with pytest.raises(ConfigurationError, match="eku_min_interval"):
        Configuration(is_client=True, eku_min_interval=-1.0).validate()


def _clocked_default_server(profile: str) -> tuple[Any, list[float]]:
    clock = [time.time()]
    c, s, _ = configs(
        client_eku_profile=profile, server_eku_profile=profile,
        client_now=lambda: clock[0], server_now=lambda: clock[0],
        server_eku_min_interval=None,  # the server's own default, not the test helpers' 0
    )
    return connect(c, s), clock


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10"])
def test_server_defers_a_second_update_within_the_second(profile: str) -> None:
    pair, clock = _clocked_default_server(profile)
    pair.client.extended_key_update()
    pair.pump()
    pair.client.extended_key_update()
    pair.pump()
    done = [e.generation for e in pair.client_events if isinstance(e, KeyUpdateCompleted)]
    assert done == [1]  # the second waits for its answer
    assert pair.server.get_timer() == pytest.approx(clock[0] + 1.0)
    clock[0] += 0.5
    pair.server.handle_timer()
    pair.pump()
    assert [e.generation for e in pair.client_events if isinstance(e, KeyUpdateCompleted)] == [1]
    clock[0] += 0.5
    pair.server.handle_timer()
    pair.pump()
    assert [e.generation for e in pair.client_events if isinstance(e, KeyUpdateCompleted)] == [1, 2]


def test_draft_05_server_answers_retry_by_default() -> None:
    pair, clock = _clocked_default_server("draft-05")
    pair.client.extended_key_update()
    pair.pump()
    pair.client.extended_key_update()
    pair.pump()
    (rejected,) = [e for e in pair.client_events if isinstance(e, KeyUpdateRejected)]
    assert (rejected.status, rejected.retry_after) == ("retry", 1)
    clock[0] += 1.0
    pair.client.extended_key_update()
    pair.pump()
    assert [e.generation for e in pair.client_events if isinstance(e, KeyUpdateCompleted)] == [1, 2]


def test_a_client_does_not_pace_the_server_by_default() -> None:
    pair, _ = _clocked_default_server("draft-13")
    for _ in range(3):
        pair.server.extended_key_update()
        pair.pump()
    assert [e.generation for e in pair.server_events if isinstance(e, KeyUpdateCompleted)] == [1, 2, 3]


# -- post-handshake CertificateRequest flood ------------------------------------------------


def _pha_pair(**kw: Any) -> Any:
    ca = make_ca("ecdsa-p256")
    client_leaf = make_leaf(ca, "ecdsa-p256", client=True)
    c, s, _ = configs(ca=ca, client_post_handshake_auth=True, **kw)
    c.certificate_chain, c.private_key = client_leaf.chain, client_leaf.key
    return connect(c, s)


def test_certificate_request_flood_is_cut_off_at_the_default_limit() -> None:
    assert Configuration().max_post_handshake_auth_requests == 64
    pair = _pha_pair()
    for _ in range(64):
        pair.server.request_client_authentication()
        pair.pump()
    assert len([e for e in pair.server_events if isinstance(e, PeerAuthenticated)]) == 64
    pair.server.request_client_authentication()
    with pytest.raises(RemoteProtocolError) as info:
        pair.client.receive_data(pair.server.data_to_send())
    assert info.value.alert == AlertDescription.unexpected_message
    assert "max_post_handshake_auth_requests" in str(info.value)
    # The alert on the wire, as the server reads it.
    pair.server.receive_data(pair.client.data_to_send())
    (closed,) = [e for e in pair.server.events() if isinstance(e, ConnectionClosed)]
    assert (closed.alert, closed.by_peer) == (AlertDescription.unexpected_message, True)


def test_certificate_request_limit_is_configurable() -> None:
    pair = _pha_pair(client_max_post_handshake_auth_requests=2)
    for _ in range(2):
        pair.server.request_client_authentication()
        pair.pump()
    pair.server.request_client_authentication()
    with pytest.raises(RemoteProtocolError) as info:
        pair.client.receive_data(pair.server.data_to_send())
    assert info.value.alert == AlertDescription.unexpected_message
    unlimited = _pha_pair(client_max_post_handshake_auth_requests=None)
    for _ in range(70):
        unlimited.server.request_client_authentication()
        unlimited.pump()
    assert not unlimited.client.is_closed
