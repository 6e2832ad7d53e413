"""``longtls decrypt`` without a capture file: TCP reassembly and TLS decryption
on streams made by two in-memory longtls connections (longtls.capture).

The bytes are what the connections really sent; they are cut into TCP
segments here (records split across segments, segments retransmitted,
overlapping and out of order, a hole) to check what the reassembly keeps.
The expected generation of each application record is the sender's own
``write_generation`` when it sent it, not a value read back from our output.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.dtls_link import Clock, DatagramLink
from helpers.pair import configs
from longtls.capture.decrypt import (
    KeyLog,
    decrypt_dtls,
    decrypt_tls,
    message_name,
    switches_sender_keys,
)
from longtls.capture.streams import (
    FIELDS,
    ByteStream,
    CaptureError,
    Datagram,
    TCPConnection,
    parse_fields,
    segments_to_stream,
)
from longtls.cli import decrypt as decrypt_cli
from longtls.connection import Connection
from longtls.constants import EKUProfileName, HandshakeType
from longtls.dtls_connection import DTLSConnection
from longtls.handshake.eku_profiles import PROFILES
from longtls.wire.eku import SEPARATE_TYPES, SUBTYPED

CLIENT, SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 443)
ISN = {CLIENT: 0xFFFFFF00, SERVER: 1000}  # the client's sequence numbers wrap around 2^32


# --------------------------------------------------------------- reassembly


def test_a_record_split_across_segments_is_dated_by_the_segment_that_completes_it() -> None:
    data = bytes(range(200))
    stream = segments_to_stream([(1.0, 101, data[:50]), (2.0, 151, data[50:120]), (3.0, 221, data[120:])], syn=100)
    assert stream.data == data and stream.missing is None
    assert stream.time_of(0, 50) == 1.0
    assert stream.time_of(40, 60) == 2.0  # its last byte came with the second segment
    assert stream.time_of(100, 200) == 3.0


def test_retransmitted_and_overlapping_segments_keep_the_first_copy_of_each_byte() -> None:
    data = b"abcdefghijklmnopqrstuvwxyz"
    stream = segments_to_stream([
        (1.0, 0, data[:10]),
        (2.0, 20, data[20:]),  # out of order: arrives before 10..20
        (3.0, 5, b"X" * 10),  # overlaps 5..15: only 10..15 is new, and is taken from it
        (4.0, 0, data[:26]),  # a full retransmission adds only what is still missing
    ], syn=2**32 - 1)  # fmt: skip
    assert stream.data == data[:10] + b"XXXXX" + data[15:]
    assert stream.time_of(0, 10) == 1.0
    assert stream.time_of(10, 15) == 3.0
    assert stream.time_of(15, 20) == 4.0
    assert stream.time_of(20, 26) == 2.0


def test_a_hole_ends_the_stream_and_says_where() -> None:
    stream = segments_to_stream([(1.0, 1, b"0123456789"), (2.0, 21, b"abc")], syn=0)
    assert stream.data == b"0123456789"
    assert stream.missing == 10


def test_without_a_syn_the_lowest_sequence_number_is_the_start() -> None:
    stream = segments_to_stream([(1.0, 110, b"later"), (2.0, 100, b"0123456789")])
    assert stream.data == b"0123456789later"


def test_sequence_numbers_wrap_around() -> None:
    stream = segments_to_stream([(1.0, 2**32 - 3, b"abc"), (2.0, 0, b"def")], syn=2**32 - 4)
    assert stream.data == b"abcdef"


def test_tshark_lines_become_streams_and_datagrams() -> None:
    def line(**values: str) -> str:
        return "\t".join(values.get(name.replace(".", "_"), "") for name in FIELDS)

    lines = [
        line(frame_number="1", frame_time_epoch="10.5", ip_src="10.0.0.1", ip_dst="10.0.0.2", tcp_stream="0",
             tcp_srcport="40000", tcp_dstport="443", tcp_seq_raw="99", tcp_flags_syn="1", tcp_flags_ack="0"),
        line(frame_number="2", frame_time_epoch="10.6", ip_src="10.0.0.1", ip_dst="10.0.0.2", tcp_stream="0",
             tcp_srcport="40000", tcp_dstport="443", tcp_seq_raw="100", tcp_flags_syn="0", tcp_flags_ack="1",
             tcp_payload="16030100"),
        line(frame_number="3", frame_time_epoch="11.0", ipv6_src="::1", ipv6_dst="::1", udp_stream="0",
             udp_srcport="5000", udp_dstport="4433", udp_payload="2fab"),
    ]  # fmt: skip
    capture = parse_fields(lines)
    (tcp,) = capture.tcp
    assert tcp.initiator == CLIENT
    assert tcp.directions[CLIENT].data == bytes.fromhex("16030100")
    ((datagram,),) = [flow.datagrams for flow in capture.udp]
    assert (datagram.time, datagram.source, datagram.payload) == (11.0, ("::1", 5000), b"\x2f\xab")
    with pytest.raises(CaptureError, match="line 1"):
        parse_fields(["not\ttshark"])


# ------------------------------------------------------------------- TLS


@dataclass
class Tap:
    """Two in-memory connections whose bytes are also cut into TCP segments."""

    client: Connection
    server: Connection
    segments: dict[tuple[str, int], list[tuple[float, int, bytes]]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    clock: float = 1000.0
    #: (sender, generation the sender was in, bytes) of every send() call.
    sent: list[tuple[str, int, bytes]] = field(default_factory=list)

    def _wire(self, source: tuple[str, int], data: bytes, segment: int = 700) -> None:
        for start in range(0, len(data), segment):
            self.clock += 0.001
            offset = self.offsets.get(source, 0)
            piece = data[start : start + segment]
            self.segments.setdefault(source, []).append((self.clock, (ISN[source] + 1 + offset) % 2**32, piece))
            self.offsets[source] = offset + len(piece)

    def pump(self) -> None:
        for _ in range(100):
            c2s, s2c = self.client.data_to_send(), self.server.data_to_send()
            if c2s:
                self._wire(CLIENT, c2s)
                self.server.receive_data(c2s)
            if s2c:
                self._wire(SERVER, s2c)
                self.client.receive_data(s2c)
            list(self.client.events())
            list(self.server.events())
            if not c2s and not s2c:
                return
        raise AssertionError("connections kept talking")

    def send(self, side: str, data: bytes) -> None:
        conn = self.client if side == "client" else self.server
        self.sent.append((side, conn.write_generation, data))
        conn.send(data)
        self.pump()

    def tcp(self, reorder: bool = True) -> TCPConnection:
        tcp = TCPConnection(0, 0.0, CLIENT, peers={CLIENT: SERVER, SERVER: CLIENT})
        for source, segments in self.segments.items():
            arrived = list(segments)
            if reorder:
                # Every third segment is lost and retransmitted after the next one.
                for i in range(2, len(arrived) - 1, 3):
                    arrived[i], arrived[i + 1] = arrived[i + 1], arrived[i]
                arrived.insert(len(arrived) // 2, arrived[len(arrived) // 3])  # a spurious retransmission
            tcp.directions[source] = segments_to_stream(arrived, syn=ISN[source])
        return tcp


def tapped(profile: str | None, keylog: list[str]) -> Tap:
    eku = {"eku_profile": profile} if profile else {"extended_key_update": False}
    client_cfg, server_cfg, _ = configs(**{f"client_{k}": v for k, v in eku.items()},
                                        **{f"server_{k}": v for k, v in eku.items()})  # fmt: skip
    client_cfg.keylog = keylog.append
    tap = Tap(Connection(client_cfg), Connection(server_cfg))
    tap.client.start_handshake()
    tap.pump()
    return tap


def application(records: list[object], sender: str) -> list[tuple[int, bytes]]:
    return [
        (r.generation, r.data) for r in records  # type: ignore[attr-defined]
        if r.sender == sender and r.content_type == 23  # type: ignore[attr-defined]
    ]  # fmt: skip


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10", "draft-05"])
def test_tls_records_are_decrypted_across_extended_key_updates_started_by_either_side(profile: str) -> None:
    keylog: list[str] = []
    tap = tapped(profile, keylog)
    for generation in range(4):
        tap.send("client", b"c%d" % generation + bytes(3000))  # records that span segments
        tap.send("server", b"s%d" % generation)
        starter = tap.client if generation % 2 == 0 else tap.server
        starter.extended_key_update()
        tap.pump()
        assert tap.client.key_generation == tap.server.key_generation == generation + 1
    tap.send("client", b"last")

    connection = decrypt_tls(tap.tcp(), 1, KeyLog(keylog))
    assert connection is not None
    assert connection.notes == []
    assert connection.eku_profile == EKUProfileName(profile)
    assert connection.client_random == tap.client.client_random
    for side in ("client", "server"):
        assert application(connection.records, side) == [(g, d) for s, g, d in tap.sent if s == side]
    assert [g for s, g, _ in tap.sent if s == "client"] == [0, 1, 2, 3, 4]


def test_tls_key_updates_are_followed_by_deriving_the_next_secret() -> None:
    keylog: list[str] = []
    tap = tapped(None, keylog)
    for generation in range(3):
        tap.send("client", b"c%d" % generation)
        tap.send("server", b"s%d" % generation)
        tap.client.update_keys(request_peer_update=True)
        tap.pump()
    tap.send("server", b"last")
    # Only the handshake's secrets: every later one must be derived ("traffic upd").
    first = [line for line in keylog if not line.split()[0][-1].isdigit() or line.split()[0].endswith("_0")]
    connection = decrypt_tls(tap.tcp(reorder=False), 1, KeyLog(first))
    assert connection is not None and connection.notes == []
    for side in ("client", "server"):
        assert application(connection.records, side) == [(g, d) for s, g, d in tap.sent if s == side]
    assert max(g for _, g, _ in tap.sent) == 3


def test_missing_secrets_and_a_missing_generation_are_reported() -> None:
    keylog: list[str] = []
    tap = tapped("draft-13", keylog)
    tap.send("client", b"before")
    tap.client.extended_key_update()
    tap.pump()
    tap.send("client", b"after")

    nothing = decrypt_tls(tap.tcp(), 1, KeyLog([]))
    assert nothing is not None and not nothing.keys_in_log
    assert nothing.notes == ["not decrypted: the key log has no secrets for its client_random"]
    assert {r.keys for r in nothing.records} == {"plaintext"}
    assert [m for r in nothing.records for m in r.messages] == ["client_hello", "server_hello"]

    without_1 = [line for line in keylog if not line.startswith("CLIENT_TRAFFIC_SECRET_1 ")]
    partial = decrypt_tls(tap.tcp(), 1, KeyLog(without_1))
    assert partial is not None
    assert application(partial.records, "client") == [(0, b"before")]
    assert "not decrypted: client's records from application generation 1 on: no CLIENT_TRAFFIC_SECRET_1 in the key log" in partial.notes


def test_a_hole_in_the_capture_is_reported() -> None:
    keylog: list[str] = []
    tap = tapped("draft-13", keylog)
    tap.send("client", b"x" * 5000)
    tcp = tap.tcp(reorder=False)
    segments = tap.segments[CLIENT]
    tcp.directions[CLIENT] = segments_to_stream(segments[:-3] + segments[-2:], syn=ISN[CLIENT])
    connection = decrypt_tls(tcp, 1, KeyLog(keylog))
    assert connection is not None
    assert any("the capture misses some of them" in note for note in connection.notes), connection.notes


def test_a_stream_without_a_client_hello_is_not_a_tls_connection() -> None:
    tcp = TCPConnection(0, 0.0, CLIENT, peers={CLIENT: SERVER, SERVER: CLIENT})
    tcp.directions = {CLIENT: segments_to_stream([(1.0, 1, b"GET / HTTP/1.1\r\n\r\n")], syn=0), SERVER: ByteStream()}
    assert decrypt_tls(tcp, 1, KeyLog([])) is None


# ------------------------------------------------------------------ DTLS


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10", "draft-05"])
def test_dtls_records_are_decrypted_by_epoch_with_loss_duplicates_and_reordering(profile: str) -> None:
    """What a capture beside each receiver sees of a lossy link (retransmitted
    flights, duplicated and reordered datagrams, a fragmented ClientHello):
    every application record a receiver read, in its generation."""
    keylog: list[str] = []
    clock = Clock()
    client_cfg, server_cfg, _ = configs(
        client_now=clock, server_now=clock, client_eku_profile=profile, server_eku_profile=profile
    )
    client_cfg.keylog = keylog.append
    link = DatagramLink(DTLSConnection(client_cfg), server_cfg, clock, loss=0.1, duplicate=0.2, reorder=0.2, seed=7)
    captured: list[Datagram] = []
    deliver = link._receive

    def tap(direction: str, datagram: bytes) -> None:
        source, destination = (CLIENT, SERVER) if direction == "c2s" else (SERVER, CLIENT)
        captured.append(Datagram(clock.now, source, destination, datagram))
        deliver(direction, datagram)

    link._receive = tap  # type: ignore[method-assign]
    link.handshake()
    server = link.server
    assert server is not None
    for generation in range(3):
        link.client.send(b"c%d" % generation)
        server.send(b"s%d" % generation)
        starter = link.client if generation % 2 == 0 else server
        starter.extended_key_update()
        link.run(lambda g=generation: link.client.key_generation == server.key_generation == g + 1  # type: ignore[misc]
                 and not link.client.eku.in_progress and not server.eku.in_progress)  # type: ignore[union-attr]  # fmt: skip
    link.client.send(b"last")
    link.run(lambda: b"last" in link.received("server"))

    payloads = [d.payload for d in captured]
    assert len(set(payloads)) < len(payloads)  # duplicated datagrams were captured twice
    assert len(set(payloads)) < sum(link.sent.values())  # lost ones not at all
    connection = decrypt_dtls(1, link.client.client_random, CLIENT, SERVER, captured, KeyLog(keylog))
    assert connection.eku_profile == EKUProfileName(profile)
    decrypted = {
        side: [r.data for r in connection.records if r.sender == side and r.content_type == 23]
        for side in ("client", "server")
    }  # fmt: skip
    # What each receiver read, and nothing else (duplicates are dropped by record number, §4.5.1).
    assert decrypted["client"] == link.received("server")
    assert decrypted["server"] == link.received("client")
    generations = {bytes(r.data): r.generation for r in connection.records if r.content_type == 23}
    assert generations == {b"c0": 0, b"s0": 0, b"c1": 1, b"s1": 1, b"c2": 2, b"s2": 2, b"last": 3}
    assert all(r.epoch == r.generation + 3 for r in connection.records if r.keys == "application")


# ------------------------------------------------------------- names, key log


def test_extended_key_update_messages_are_named_per_profile() -> None:
    draft13, draft2025, draft05 = (PROFILES[EKUProfileName(p)] for p in ("draft-13", "draft-2025-10", "draft-05"))
    request, response, finish = (m.encode()[4:] for m in (
        SUBTYPED.request(0x001D, bytes(32)), SUBTYPED.response(0x001D, bytes(32)), SUBTYPED.finish()))  # fmt: skip
    eku = HandshakeType.extended_key_update
    assert [message_name(eku, b, draft13) for b in (request, response, finish)] == [
        "extended_key_update_request", "extended_key_update_response", "extended_key_update_finish"]  # fmt: skip
    assert message_name(eku, finish, draft2025) == "new_key_update"
    # draft-13 §5 step 3: the responder's keys change after its response; the older texts' after new_key_update.
    assert [switches_sender_keys(draft13, eku, b) for b in (request, response, finish)] == [False, True, True]
    assert [switches_sender_keys(draft2025, eku, b) for b in (request, response, finish)] == [False, False, True]
    d05 = [m.encode() for m in (SEPARATE_TYPES.request(0x001D, bytes(32)), SEPARATE_TYPES.response(0x001D, bytes(32)),
                                SEPARATE_TYPES.finish())]  # fmt: skip
    assert [message_name(m[0], m[4:], draft05) for m in d05] == [
        "extended_key_update_request", "extended_key_update_response", "new_key_update"]  # fmt: skip
    assert [switches_sender_keys(draft05, m[0], m[4:]) for m in d05] == [False, False, True]
    assert message_name(HandshakeType.key_update, b"\x00", None) == "key_update"


def test_key_log_lines_that_are_not_secrets_are_ignored() -> None:
    random = bytes(range(32))
    log = KeyLog(["# comment", "", "CLIENT_TRAFFIC_SECRET_0 nothex ab", "SHORT 0102 0304",
                  f"SERVER_TRAFFIC_SECRET_3 {random.hex()} {'ab' * 32}"])  # fmt: skip
    assert log.secrets(random) == {"SERVER_TRAFFIC_SECRET_3": bytes([0xAB] * 32)}
    assert "ab" * 32 not in repr(log)


# ------------------------------------------------------------------- CLI


def test_cli_refuses_a_key_log_it_cannot_read_with_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = tmp_path / "c.pcap"
    capture.write_bytes(b"")
    # The subcommand's own parser (cli/main.py lists it in COMMANDS).
    parser = argparse.ArgumentParser(prog="longtls")
    decrypt_cli.add_parser(parser.add_subparsers(), [])
    args = parser.parse_args(["decrypt", str(capture), "--keylog", str(tmp_path / "absent.log")])
    assert args.run(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"longtls: error: cannot read the key log {tmp_path / 'absent.log'}: No such file or directory"]


def test_record_json_has_the_keys_of_the_contract() -> None:
    keylog: list[str] = []
    tap = tapped("draft-13", keylog)
    tap.send("server", b"hello")
    connection = decrypt_tls(tap.tcp(), 7, KeyLog(keylog))
    assert connection is not None
    last = json.loads(json.dumps(connection.records[-1].to_json()))
    assert {k: last[k] for k in ("connection", "from", "generation", "content_type", "messages", "data_hex")} == {
        "connection": 7, "from": "server", "generation": 0, "content_type": "application_data",
        "messages": [], "data_hex": b"hello".hex(),
    }  # fmt: skip
    assert isinstance(last["time"], float)
