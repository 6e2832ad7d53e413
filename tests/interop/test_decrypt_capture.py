"""``longtls decrypt`` on live loopback captures (issue 15, the last proof point).

dumpcap captures real longtls connections on loopback; each makes 20
Extended Key Updates in one of the three profiles (initiated by each side in
turn over TCP), or KeyUpdates, with numbered application lines both ways.
``longtls decrypt --json`` must show every application record of every
generation, in order in each direction, with exactly the bytes that were
sent, in the generation it was sent in (the connection's own
``key_generation`` when it sent it, not our reading of the capture).  A
connection whose client logged nothing is reported, and the others are
still decrypted.  The same over DTLS 1.3 (UDP), where the generation is
read from the record epochs.

dumpcap and tshark are peers (scripts/install-peers.sh): a missing one fails
the test, never skips it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.capture import loopback_capture
from helpers.cli import assert_one_error_line, longtls
from helpers.driver import LongtlsServer, SocketDriver, client_config, connect, server_config
from helpers.dtls_udp import UDPDriver
from helpers.peers import require_binary
from longtls.config import Configuration
from longtls.dtls_connection import DTLSConnection
from longtls.events import ApplicationData, HandshakeComplete, KeyUpdateCompleted

UPDATES = 20
PROFILES = ("draft-13", "draft-2025-10", "draft-05")
KEY_UPDATES = 4


def client_line(connection: int, generation: int) -> bytes:
    return f"connection {connection} client line {generation:02d} in generation {generation}\n".encode()


def server_line(connection: int, generation: int) -> bytes:
    return f"connection {connection} server line {generation:02d} in generation {generation}\n".encode()


def decrypt_json(pcap: Path, keylog: Path, *extra: str) -> tuple[list[dict[str, Any]], str]:
    require_binary("tshark")
    result = longtls("decrypt", str(pcap), "--keylog", str(keylog), "--json", *extra, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def application_records(records: list[dict[str, Any]], connection: int, sender: str) -> list[tuple[int, bytes]]:
    return [
        (r["generation"], bytes.fromhex(r["data_hex"])) for r in records
        if r["connection"] == connection and r["from"] == sender and r["content_type"] == "application_data"
    ]  # fmt: skip


# ------------------------------------------------------------------ TLS (TCP)


def tls_server_side(number: int, eku: bool) -> Callable[[SocketDriver], list[tuple[int, bytes]]]:
    """The server of connection ``number``: answers each client line with its
    own; starts every second EKU itself.  Returns (generation, line) sent."""

    def handler(drv: SocketDriver) -> list[tuple[int, bytes]]:
        sent = []
        rounds = UPDATES if eku else KEY_UPDATES
        for generation in range(rounds + 1):
            assert drv.recv_until(b"\n") == client_line(number, generation)
            sent.append((drv.conn.write_generation, server_line(number, generation)))
            drv.send(server_line(number, generation))
            if eku and generation < rounds:
                if generation % 2:
                    drv.conn.extended_key_update()
                    drv.flush()
                assert drv.wait_for(KeyUpdateCompleted).generation == generation + 1
        drv.recv_until(b"bye\n")
        return sent

    return handler


def tls_client_side(drv: SocketDriver, number: int, eku: bool) -> list[tuple[int, bytes]]:
    sent = []
    rounds = UPDATES if eku else KEY_UPDATES
    for generation in range(rounds + 1):
        sent.append((drv.conn.write_generation, client_line(number, generation)))
        drv.send(client_line(number, generation))
        assert drv.recv_until(b"\n") == server_line(number, generation)
        if generation == rounds:
            break
        if not eku:
            # RFC 9846 §4.6.3: our KeyUpdate, and the peer's answer to update_requested.
            drv.update_keys(request_peer_update=True)
            continue
        if generation % 2 == 0:
            drv.conn.extended_key_update()
            drv.flush()
        assert drv.wait_for(KeyUpdateCompleted).generation == generation + 1
    sent.append((drv.conn.write_generation, b"bye\n"))
    drv.send(b"bye\n")
    return sent


@pytest.mark.time_limit(150)  # 100 EKUs and 5 handshakes: ~20 s, and a loaded machine can triple that
def test_decrypt_shows_every_application_record_of_20_extended_key_updates_per_profile_over_tls(
    pki: Any, tmp_path: Path,
) -> None:
    bundle = pki("ecdsa-p256")
    keylog, unlogged, pcap = tmp_path / "keys.log", tmp_path / "other.log", tmp_path / "tls.pcapng"
    # Connections 1-3: 20 EKUs in each profile; 4: KeyUpdates (no EKU);
    # 5: a client whose secrets go to another file.
    plans: list[tuple[str | None, Path]] = [(p, keylog) for p in PROFILES] + [(None, keylog), ("draft-13", unlogged)]
    scfg = server_config(bundle.server, eku_profiles=PROFILES, eku_min_interval=0)
    handlers = [tls_server_side(n, eku=profile is not None) for n, (profile, _) in enumerate(plans, 1)]
    client_sent: list[list[tuple[int, bytes]]] = []
    with LongtlsServer(scfg, handlers) as server, loopback_capture(f"tcp port {server.port}", pcap):
        for number, (profile, log) in enumerate(plans, 1):
            ccfg = client_config(
                bundle.ca, eku_profiles=(profile,) if profile else PROFILES, extended_key_update=profile is not None,
            )
            ccfg.set_keylog_file(log)
            drv = connect(ccfg, server.port)
            try:
                assert drv.handshake().extended_key_update == (profile is not None)
                client_sent.append(tls_client_side(drv, number, eku=profile is not None))
            finally:
                drv.close()
        server.join()
    server_sent = server.results

    records, stderr = decrypt_json(pcap, keylog)
    for number, (profile, _) in enumerate(plans[:4], 1):
        # Every line, in order, with the bytes sent, in the generation it was sent in.
        assert application_records(records, number, "client") == client_sent[number - 1], number
        assert application_records(records, number, "server") == server_sent[number - 1], number
        rounds = UPDATES if profile else KEY_UPDATES
        assert [g for g, _ in client_sent[number - 1][:-1]] == list(range(rounds + 1))  # the last is "bye"
        assert [g for g, _ in server_sent[number - 1]] == list(range(rounds + 1))
        mine = [r for r in records if r["connection"] == number]
        assert set(mine[0]) >= {"time", "connection", "from", "generation", "content_type", "messages", "data_hex"}
        times = [r["time"] for r in mine]
        assert times == sorted(times)
        names = [m for r in mine for m in r["messages"]]
        assert names[:2] == ["client_hello", "server_hello"], names
        if profile == "draft-13":
            assert names.count("extended_key_update_request") == UPDATES
            assert names.count("extended_key_update_finish") == UPDATES
        elif profile:
            assert names.count("new_key_update") == 2 * UPDATES
        else:
            assert names.count("key_update") == 2 * KEY_UPDATES
    # Connection 5: its ClientHello and ServerHello, nothing decrypted, and said so.
    fifth = [r for r in records if r["connection"] == 5]
    assert {r["keys"] for r in fifth} == {"plaintext"}, fifth
    assert [line for line in stderr.splitlines() if "not decrypted" in line] == [
        "longtls decrypt: connection 5: not decrypted: the key log has no secrets for its client_random"
    ], stderr

    # The text transcript: one heading per connection, the lines as text.
    text = longtls("decrypt", str(pcap), "--keylog", str(keylog), "--connection", "2", timeout=60)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("connection 2: TLS 127.0.0.1:"), text.stdout
    assert "EKU draft-2025-10" in text.stdout.splitlines()[0]
    assert json.dumps(client_line(2, 20).decode()) in text.stdout
    assert "gen 20" in text.stdout and "connection 1:" not in text.stdout


# ---------------------------------------------------------------- DTLS (UDP)


class EchoServer:
    """A DTLS server on its own thread that sends back every datagram it gets."""

    def __init__(self, config: Configuration) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.driver = UDPDriver.server(config, on_event=self._on_event)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: self.driver.run(self.stop.is_set, timeout=50), daemon=True)

    def _on_event(self, driver: UDPDriver, event: object) -> None:
        if isinstance(event, ApplicationData) and driver.connection is not None:
            self.sent.append((driver.connection.write_generation, event.data))
            driver.connection.send(event.data)

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.driver.close()


def dtls_client_side(number: int, config: Configuration, server: EchoServer) -> list[tuple[int, bytes]]:
    """One line per generation, each echoed back, then an EKU started by the client."""
    conn = DTLSConnection(config)
    client = UDPDriver.client(conn, server.driver.port)

    def updated(generation: int) -> bool:
        peer = server.driver.connection
        return (conn.key_generation == generation and conn.eku is not None and not conn.eku.in_progress
                and peer is not None and peer.key_generation == generation)  # fmt: skip

    sent = []
    try:
        conn.start_handshake()
        client.run(lambda: any(isinstance(e, HandshakeComplete) for e in client.events))
        for generation in range(UPDATES + 1):
            line = client_line(number, generation)
            sent.append((conn.write_generation, line))
            conn.send(line)
            client.run(lambda: line in client.received())  # noqa: B023 (run returns before the loop goes on)
            if generation < UPDATES:
                conn.extended_key_update()
                client.run(lambda: updated(generation + 1))  # noqa: B023
    finally:
        client.close()
    return sent


@pytest.mark.time_limit(150)  # 60 EKUs over UDP and 3 handshakes: likewise
def test_decrypt_follows_20_extended_key_updates_per_profile_over_dtls(pki: Any, tmp_path: Path) -> None:
    bundle = pki("ecdsa-p256")
    keylog, pcap = tmp_path / "keys.log", tmp_path / "dtls.pcapng"
    servers = [EchoServer(server_config(bundle.server, eku_profile=p, eku_min_interval=0)) for p in PROFILES]
    ports = " or ".join(f"udp port {s.driver.port}" for s in servers)
    client_sent: list[list[tuple[int, bytes]]] = []
    with loopback_capture(ports, pcap):
        for number, (profile, server) in enumerate(zip(PROFILES, servers, strict=True), 1):
            ccfg = client_config(bundle.ca, eku_profile=profile)
            ccfg.set_keylog_file(keylog)
            with server:
                client_sent.append(dtls_client_side(number, ccfg, server))

    records, stderr = decrypt_json(pcap, keylog)
    assert "not decrypted" not in stderr, stderr
    for number, server in enumerate(servers, 1):
        assert application_records(records, number, "client") == client_sent[number - 1], number
        assert application_records(records, number, "server") == server.sent, number
        assert [g for g, _ in server.sent] == list(range(UPDATES + 1))
        mine = [r for r in records if r["connection"] == number]
        # RFC 9147 §6.1: generation N is epoch 3 + N.
        assert {(r["generation"], r["epoch"] - 3) for r in mine if r["keys"] == "application"} == {
            (g, g) for g in range(UPDATES + 1)
        }
        # Over UDP a flight may be sent again when its ACK is late (RFC 9147 §5.8):
        # count each response once, by its sender and DTLS message_seq.
        responses = {
            (r["from"], seq)
            for r in mine
            for name, seq in dtls_handshake_messages(r)
            if name == "extended_key_update_response"
        }
        assert len(responses) == UPDATES, sorted(responses)


def dtls_handshake_messages(record: dict[str, Any]) -> list[tuple[str, int]]:
    """The (name, message_seq) of each DTLS handshake message in a decrypted record (RFC 9147 §5.2)."""
    if record["content_type"] != "handshake":
        return []
    data, seqs = bytes.fromhex(record["data_hex"]), []
    while len(data) >= 12:
        seqs.append(int.from_bytes(data[4:6], "big"))
        data = data[12 + int.from_bytes(data[9:12], "big") :]
    assert len(seqs) == len(record["messages"]), record
    return list(zip(record["messages"], seqs, strict=True))


def test_a_file_that_is_not_a_capture_is_one_error_line_and_status_2(tmp_path: Path) -> None:
    require_binary("tshark")
    notes, keylog = tmp_path / "notes.pcap", tmp_path / "keys.log"
    notes.write_text("this is not a capture\n")
    keylog.write_text("")
    result = longtls("decrypt", str(notes), "--keylog", str(keylog))
    assert result.returncode == 2
    assert_one_error_line(result, str(notes), "isn't a capture file")
