"""The DTLS contract of the ``longtls`` command (issue 11, "CLI"): ``serve
--dtls``, ``connect --dtls`` (standard input as datagrams split at the MTU's
payload, standard output in order of arrival, ``--summary json``), ``--mtu``,
``--keylog``, ``--rekey-count``, ``--eku-profile``, and ``tunnel --udp`` end
to end, driven through the real command line."""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import LONGTLS, assert_one_error_line, longtls, summary
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles
from helpers.udp_relay import UDPRelay
from longtls import aio
from longtls.config import Configuration
from longtls.crypto.certificates import TrustStore, load_certificate_chain

READY = r"^longtls: serving \(echo, DTLS 1\.3, MTU \d+\) on "
#: The connection ID a longtls server asks clients to put in their records
#: by default (RFC 9146, RFC 9147 §9); a client asks for none.
SERVER_CID_LENGTH = Configuration(is_client=False).effective_dtls_connection_id_length
#: A client's record to a longtls server: RFC 9147 §4's unified header as
#: longtls writes it (1 flags byte, the server's connection ID, a 16-bit
#: sequence number, a 16-bit length), RFC 9846 §5.2's inner content type
#: byte, AES-128-GCM's 16-byte tag.
RECORD_OVERHEAD = 1 + SERVER_CID_LENGTH + 2 + 2 + 1 + 16


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    return tmp_pki_files("ecdsa-p256")


@pytest.fixture
def serve(files: PkiFiles) -> Iterator[Callable[..., tuple[PeerProcess, int]]]:
    """``serve(*extra_args)`` starts ``longtls serve --dtls --echo`` on a free UDP port."""
    stack: list[Any] = []

    def start(*extra: str) -> tuple[PeerProcess, int]:
        port = free_port(socket.SOCK_DGRAM)
        args = [
            *LONGTLS, "serve", "--dtls", "--echo", "--cert", str(files.server.chain),
            "--key", str(files.server.key), "--port", str(port), *extra,
        ]
        context = start_process(args, ready_pattern=READY)
        stack.append(context)
        return context.__enter__(), port

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def connect(port: int, files: PkiFiles, *extra: str, input: str = "") -> Any:
    return longtls(
        "connect", f"{LOOPBACK}:{port}", "--dtls", "--ca", str(files.ca), "--summary", "json", *extra,
        input=input,
    )


def key_updates(stderr: str) -> list[dict[str, Any]]:
    return [r for r in summary(stderr) if r["event"] == "key_update"]


# -- serve --dtls --echo / connect --dtls --------------------------------------------------


def test_echo_round_trip_with_json_summary(serve: Any, files: PkiFiles) -> None:
    server, port = serve()
    message = "datagram over DTLS 1.3\n" * 300  # 6,900 bytes: several datagrams
    result = connect(port, files, input=message)
    assert result.returncode == 0, (result.stderr, server.describe())
    assert result.stdout == message
    assert "Traceback" not in result.stderr
    records = summary(result.stderr)
    handshake = records[0]
    assert handshake["event"] == "handshake" and handshake["version"] == "DTLSv1.3", records
    assert handshake["cipher_suite"] == "TLS_AES_128_GCM_SHA256"
    assert handshake["peer_subject"] == "CN=localhost,O=longtls tests"
    # The EKU flags apply over DTLS as over TLS: offered by default.
    assert handshake["eku"] is True and handshake["eku_profile"] == "draft-13"
    # Default MTU 1200: each datagram carries at most 1200 - overhead bytes.
    datagrams = math.ceil(len(message) / (1200 - RECORD_OVERHEAD))
    assert records[-1] == {
        "event": "closed", "alert": None, "by_peer": True,
        "datagrams_sent": datagrams, "bytes_sent": len(message),
        "datagrams_received": datagrams, "bytes_received": len(message),
    }


def _client_configuration(files: PkiFiles) -> Configuration:
    return Configuration(
        is_client=True, server_name="localhost", trust_store=TrustStore(load_certificate_chain(str(files.ca)))
    )


def _server_configuration(files: PkiFiles) -> Configuration:
    config = Configuration(is_client=False)
    config.load_cert_chain(str(files.server.chain), str(files.server.key))
    return config


def test_groups_and_ciphers_apply_over_dtls(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--groups", "secp256r1,x25519", "--ciphers", "TLS_CHACHA20_POLY1305_SHA256")
    result = connect(port, files, "--groups", "x25519,secp256r1", "--ciphers",
                     "TLS_AES_256_GCM_SHA384,TLS_CHACHA20_POLY1305_SHA256", input="x")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "x"
    handshake = summary(result.stderr)[0]
    # The server's choice: its own suite; the group of the client's key share it accepts.
    assert (handshake["cipher_suite"], handshake["group"]) == ("TLS_CHACHA20_POLY1305_SHA256", "x25519")


def test_client_certificates_over_dtls(serve: Any, files: PkiFiles) -> None:
    server, port = serve("--ca", str(files.ca))  # --verify-client required by default with --ca
    refused = connect(port, files, input="x")
    assert_one_error_line(refused, "certificate_required", "--cert")
    assert summary(refused.stderr)[-1]["alert"] == "certificate_required"
    accepted = connect(port, files, "--cert", str(files.client.chain), "--key", str(files.client.key), input="x")
    assert accepted.returncode == 0, (accepted.stderr, server.describe())
    assert accepted.stdout == "x"


def test_connect_splits_stdin_at_the_mtu_payload_and_prints_datagrams_in_arrival_order(files: PkiFiles) -> None:
    """An in-process DTLS server records the datagrams ``connect --dtls --mtu
    300`` sends, and answers each with two datagrams of its own."""
    received: list[bytes] = []
    data = bytes(range(256)) * 4  # 1,024 bytes
    payload = 300 - RECORD_OVERHEAD

    async def handler(association: aio.DTLSAssociation) -> None:
        async for datagram in association:
            received.append(datagram)
            n = len(received)
            association.send(b"<%d:%d>" % (n, len(datagram)))
            association.send(b"[%d]\n" % n)

    async def main() -> tuple[int, bytes, bytes]:
        async with await aio.serve_dtls(handler, LOOPBACK, 0, _server_configuration(files), mtu=300) as server:
            proc = await asyncio.create_subprocess_exec(
                *LONGTLS, "connect", f"{LOOPBACK}:{server.port}", "--dtls", "--mtu", "300", "--ca", str(files.ca),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(proc.communicate(data), 30)
            assert proc.returncode is not None
            return proc.returncode, stdout, stderr

    status, stdout, stderr = asyncio.run(main())
    assert status == 0, stderr.decode()
    sizes = [len(d) for d in received]
    assert sizes == [payload, payload, payload, len(data) - 3 * payload], sizes
    assert b"".join(received) == data
    assert stdout == b"".join(b"<%d:%d>[%d]\n" % (i + 1, size, i + 1) for i, size in enumerate(sizes))


def test_mtu_300_fragments_the_handshake_and_every_datagram_fits(serve: Any, files: PkiFiles) -> None:
    """``serve --dtls --mtu 300``: through a relay that measures datagrams,
    the server's handshake flight is cut into datagrams of at most 300 bytes."""
    _, port = serve("--mtu", "300")

    async def main() -> list[int]:
        relay = await UDPRelay.start((LOOPBACK, port))
        sizes: list[int] = []
        forward = relay._forward

        def measure(data: bytes, to_server: bool) -> None:
            if not to_server:
                sizes.append(len(data))
            forward(data, to_server)

        relay._forward = measure  # type: ignore[method-assign]
        try:
            association = await aio.connect_dtls(LOOPBACK, relay.port, _client_configuration(files), mtu=300)
            assert association.max_datagram_payload == 300 - RECORD_OVERHEAD
            association.send(b"x" * (300 - RECORD_OVERHEAD))
            assert await association.receive() == b"x" * (300 - RECORD_OVERHEAD)
            association.close()
            await association.wait_closed()
        finally:
            relay.close()
        return sizes

    sizes = asyncio.run(main())
    assert max(sizes) <= 300, sizes
    assert len(sizes) >= 4, sizes  # HRR, then a certificate flight that needed several datagrams


def test_keylog_files_of_both_ends_hold_the_same_secrets(serve: Any, files: PkiFiles, tmp_path: Path) -> None:
    server_log, client_log = tmp_path / "server.keys", tmp_path / "client.keys"
    _, port = serve("--keylog", str(server_log))
    result = connect(port, files, "--keylog", str(client_log), input="hello\n")
    assert result.returncode == 0, result.stderr
    client_lines = sorted(client_log.read_text().splitlines())
    labels = {line.split()[0] for line in client_lines}
    assert {
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET",
    } <= labels, client_lines
    for _ in range(50):  # the server writes its lines as it goes
        if sorted(server_log.read_text().splitlines()) == client_lines:
            break
        threading.Event().wait(0.05)
    assert sorted(server_log.read_text().splitlines()) == client_lines


# -- key updates -------------------------------------------------------------------------


def test_rekey_count_performs_that_many_extended_updates(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--eku-min-interval", "0")
    result = connect(port, files, "--rekey-count", "5")
    assert result.returncode == 0, result.stderr
    updates = key_updates(result.stderr)
    assert [u["generation"] for u in updates] == [1, 2, 3, 4, 5], updates
    assert all(u["kind"] == "extended" and u["initiator"] == "client" for u in updates), updates
    assert summary(result.stderr)[-1]["event"] == "closed"
    assert summary(result.stderr)[-1]["alert"] is None


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10", "draft-05"])
def test_every_eku_profile(serve: Any, files: PkiFiles, profile: str) -> None:
    _, port = serve("--eku-profile", profile, "--eku-min-interval", "0")
    result = connect(port, files, "--eku-profile", profile, "--rekey-count", "3", input="")
    assert result.returncode == 0, result.stderr
    assert summary(result.stderr)[0]["eku_profile"] == profile
    assert [u["generation"] for u in key_updates(result.stderr)] == [1, 2, 3]


def test_key_update_then_data(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--eku-min-interval", "0")
    result = connect(port, files, "--key-update", input="after the update\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "after the update\n"
    assert [(u["kind"], u["generation"]) for u in key_updates(result.stderr)] == [("extended", 1)]


def test_no_eku_rekey_count_uses_the_standard_key_update(serve: Any, files: PkiFiles) -> None:
    _, port = serve()
    result = connect(port, files, "--no-eku", "--rekey-count", "2")
    assert result.returncode == 0, result.stderr
    assert summary(result.stderr)[0]["eku"] is False
    updates = key_updates(result.stderr)
    # RFC 9147 §8: each KeyUpdate moves our sending epoch once ACKed, and the
    # server's answer (update_requested) moves its own.
    assert sorted((u["direction"], u["generation"]) for u in updates) == [
        ("receive", 1), ("receive", 2), ("send", 1), ("send", 2)
    ], updates
    assert all(u["kind"] == "standard" for u in updates)


def test_server_rekey_interval_starts_updates(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--rekey-interval", "0.3", "--eku-min-interval", "0")
    with start_process(
        [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--dtls", "--ca", str(files.ca), "--summary", "json"],
    ) as client:
        client.wait_for_output(r'"initiator": "server"', timeout=10)


def test_serve_exits_cleanly_on_sigterm_and_open_clients_see_close_notify(serve: Any, files: PkiFiles) -> None:
    server, port = serve()
    with start_process(
        [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--dtls", "--ca", str(files.ca), "--summary", "json"],
    ) as idle:
        idle.write("still here\n")
        idle.wait_for_output("still here")
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0, server.describe()
        # The open association got close_notify: the client exits cleanly.
        assert idle.wait() == 0, idle.describe()
        closed = summary(idle.stderr)[-1]
        assert closed["event"] == "closed" and closed["alert"] is None, idle.describe()
    assert "Traceback" not in server.stderr, server.describe()


# -- refusals ----------------------------------------------------------------------------


def test_www_is_refused_with_dtls(files: PkiFiles) -> None:
    result = longtls(
        "serve", "--dtls", "--www", "--cert", str(files.server.chain), "--key", str(files.server.key)
    )
    assert_one_error_line(result, "--www does not apply to --dtls")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["connect", "127.0.0.1:1", "--mtu", "300"], "--mtu applies to --dtls only"),
        (["connect", "127.0.0.1:1", "--dtls", "--mtu", "20"], "invalid MTU '20'"),
        (["tunnel", "client", "--listen", "127.0.0.1:1", "--connect", "127.0.0.1:2", "--mtu", "500"],
         "--mtu applies to --udp only"),
    ],
)
def test_bad_dtls_arguments(args: list[str], fragment: str) -> None:
    assert_one_error_line(longtls(*args), fragment)


# -- tunnel --udp ------------------------------------------------------------------------


class UDPEcho:
    """A UDP service answering each datagram with ``b"echo:" + datagram``, from its own thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.2)
        self.peers: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.peers.add(address)
            self.sock.sendto(b"echo:" + data, address)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_tunnel_udp_end_to_end_with_a_udp_echo_service(files: PkiFiles) -> None:
    service = UDPEcho()
    dtls_port, local_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    server_args = [
        *LONGTLS, "tunnel", "server", "--udp", "--listen", f"{LOOPBACK}:{dtls_port}",
        "--forward", f"{LOOPBACK}:{service.port}", "--cert", str(files.server.chain), "--key", str(files.server.key),
    ]
    client_args = [
        *LONGTLS, "tunnel", "client", "--udp", "--listen", f"{LOOPBACK}:{local_port}",
        "--connect", f"{LOOPBACK}:{dtls_port}", "--ca", str(files.ca), "--mtu", "400",
    ]
    try:
        with start_process(server_args, ready_pattern=r"tunnel server: DTLS on .* -> plain UDP to") as server, \
                start_process(client_args, ready_pattern=r"tunnel client: plain UDP on .* -> DTLS to") as client:
            apps = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            try:
                for app in apps:
                    app.settimeout(10)
                for i in range(5):
                    for n, app in enumerate(apps):
                        message = b"app %d datagram %d" % (n, i)
                        app.sendto(message, (LOOPBACK, local_port))
                        reply, _ = app.recvfrom(65536)
                        assert reply == b"echo:" + message, (server.describe(), client.describe())
                # A datagram is never split: the largest one record carries at --mtu 400 goes
                # through whole; one byte more is dropped by the tunnel client.
                largest = bytes(400 - RECORD_OVERHEAD)
                apps[0].sendto(largest, (LOOPBACK, local_port))
                assert apps[0].recvfrom(65536)[0] == b"echo:" + largest
                apps[0].sendto(largest + b"!", (LOOPBACK, local_port))
                apps[0].sendto(b"after", (LOOPBACK, local_port))
                assert apps[0].recvfrom(65536)[0] == b"echo:after"
            finally:
                for app in apps:
                    app.close()
            # Each application's address got its own association, so the
            # service saw two addresses (the server side's own sockets).
            assert len(service.peers) == 2, service.peers
            client.wait_for_output(rf"dropped a {400 - RECORD_OVERHEAD + 1}-byte datagram")
    finally:
        service.close()

