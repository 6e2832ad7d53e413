"""NAT rebinding for DTLS 1.3: connection IDs route a client's datagrams from a
new address, and an ACK-based reachability test moves the peer address
(RFC 9147 §9 and §11 with rfc9147bis-02, RFC 9146 §6; docs/dtls.md "NAT rebinding").

In memory (tests/helpers/dtls_link.py): the probe's records, validation by
the ACK that names them, a retransmission sent to the old path that never
validates, no probe without CIDs, ``last_datagram_advanced``.  Over real
UDP (longtls.aio behind ``NATRelay``): a client whose source port changes
mid-session keeps its association; replayed, forged or unanswered
candidates never move it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from typing import Any

import pytest

from helpers.dtls_link import Clock, DatagramLink
from helpers.pair import configs
from helpers.udp_relay import NATRelay
from longtls import aio
from longtls.constants import NamedGroup
from longtls.dtls_connection import DTLSConnection
from longtls.events import HandshakeComplete

LOCAL = "127.0.0.1"


# -- in memory -------------------------------------------------------------------------


def _link(**kwargs: object) -> DatagramLink:
    clock = Clock()
    client_cfg, server_cfg, _ = configs(
        client_now=clock, server_now=clock, client_key_share_groups=(NamedGroup.x25519,), **kwargs
    )
    link = DatagramLink(DTLSConnection(client_cfg), server_cfg, clock)
    link.handshake()
    link.run()
    return link


def _record_count(datagrams: list[bytes]) -> int:
    """Protected records in ``datagrams``, framed by their unified headers (RFC 9147 §4:
    our defaults, a 16-bit sequence number and a length; the client asked for no CID)."""
    count = 0
    for datagram in datagrams:
        pos = 0
        while pos < len(datagram):
            first = datagram[pos]
            assert first & 0xE0 == 0x20 and first & 0x0C == 0x0C and not first & 0x10
            pos += 5 + int.from_bytes(datagram[pos + 3 : pos + 5], "big")
            count += 1
    return count


def _answer(link: DatagramLink, datagrams: list[bytes]) -> list[bytes]:
    """Give ``datagrams`` to the client directly (the candidate path) and return its answer."""
    for datagram in datagrams:
        link.client.receive_datagram(datagram)
    return link.client.datagrams_to_send()


def test_probe_records_are_validated_by_the_ack_that_names_them() -> None:
    link = _link()
    server = link.server
    assert server is not None
    cids_before = server.own_connection_ids
    probe = server.probe_path()
    assert probe is not None and probe.datagrams
    # Nothing of the probe goes to the current address: it is the caller's to send.
    assert server.datagrams_to_send() == []
    # One record per NewConnectionId (one 8-byte CID fits one record), under our current epoch.
    assert len(probe.record_numbers) == _record_count(probe.datagrams) == 1
    assert {n.epoch for n in probe.record_numbers} == {server.write_epoch}
    # The NewConnectionId carries one fresh CID (RFC 9147 §9: a new CID for a new path).
    assert len(server.own_connection_ids) == len(cids_before) + 1
    assert server.probe_path() is None  # one at a time
    assert not server.path_validated(probe)
    ack = _answer(link, probe.datagrams)
    assert ack  # RFC 9147 §7.1: a post-handshake message is ACKed
    for datagram in ack:
        server.receive_datagram(datagram)
    assert server.path_validated(probe)
    ids = link.client.connection_ids
    assert ids is not None and list(ids.peer_spares) == [server.own_connection_ids[-1]]
    assert server.messages_in_flight == 0
    # The probe is over: another may start.
    assert server.probe_path() is not None


def test_a_retransmission_to_the_old_path_does_not_validate() -> None:
    """The probe's copy is lost; the timer's retransmission (to the current
    address, other record numbers) is ACKed: the candidate stays unproven."""
    link = _link()
    server = link.server
    assert server is not None
    probe = server.probe_path()
    assert probe is not None  # its datagrams are never delivered
    sent_before = len(link.log["s2c"])
    link.run()  # the retransmission timer fires, the link carries it to the client, its ACK back
    assert len(link.log["s2c"]) > sent_before  # the retransmission went by the link (the old path)
    assert server.messages_in_flight == 0  # the NewConnectionId was acknowledged ...
    assert not server.path_validated(probe)  # ... but not through the probe's record
    assert server.probe_path() is None  # still the probe under way until abandoned
    server.abandon_probe(probe)
    assert server.probe_path() is not None


def test_a_new_probe_resends_an_unacknowledged_new_connection_id() -> None:
    """The first probe's copy and every retransmission are lost (the old
    address is dead): a later probe carries the same message under new record
    numbers (§9: one NewConnectionId outstanding), and its ACK validates."""
    link = _link()
    server = link.server
    assert server is not None
    link.drop = lambda direction, datagram, index: direction == "s2c"
    first = server.probe_path()
    assert first is not None
    link.clock.now += 2.0
    link.run(max_seconds=3.0)
    server.abandon_probe(first)
    cids = server.own_connection_ids
    second = server.probe_path()
    assert second is not None and server.own_connection_ids == cids  # no second NewConnectionId
    assert not second.record_numbers & first.record_numbers
    link.drop = None
    for datagram in _answer(link, second.datagrams):
        server.receive_datagram(datagram)
    assert server.path_validated(second) and not server.path_validated(first)


def test_no_probe_without_connection_ids() -> None:
    link = _link(client_dtls_connection_ids=False)
    assert link.server is not None and link.server.connection_ids is None
    assert link.server.probe_path() is None
    link = _link()
    # A longtls client asks for no CID: the server cannot route to it by CID
    # and it issues none (§9), so it has nothing to probe with.
    assert link.client.own_connection_ids == () and link.client.probe_path() is None


def test_last_datagram_advanced_only_for_newer_authentic_records() -> None:
    link = _link()
    server = link.server
    assert server is not None
    link.client.send(b"one")
    (first,) = link.client.datagrams_to_send()
    link.client.send(b"two")
    (second,) = link.client.datagrams_to_send()
    server.receive_datagram(second)
    assert server.last_datagram_advanced
    server.receive_datagram(first)  # authentic, but older than one received (RFC 9146 §6)
    assert not server.last_datagram_advanced
    server.receive_datagram(second)  # a replay: dropped (§4.5.1)
    assert not server.last_datagram_advanced
    forged = second[:-1] + bytes((second[-1] ^ 1,))
    server.receive_datagram(forged)  # fails authentication (§4.5.2)
    assert not server.last_datagram_advanced
    link.client.send(b"three")
    (third,) = link.client.datagrams_to_send()
    server.receive_datagram(third)
    assert server.last_datagram_advanced
    assert [e.data for e in server.events() if hasattr(e, "data")] == [b"two", b"one", b"three"]


# -- over UDP, behind a NAT ----------------------------------------------------------------


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def echo(association: aio.DTLSAssociation) -> None:
    async for payload in association:
        association.send(payload)


async def _echoed(association: aio.DTLSAssociation, label: bytes, tries: int = 40) -> list[bytes]:
    """Send ``label-i`` until an echo of one of them comes back (UDP: the
    server's answers before the move may go to the old address)."""
    sent: list[bytes] = []
    for i in range(tries):
        payload = label + b"-%d" % i
        sent.append(payload)
        association.send(payload)
        try:
            got = await asyncio.wait_for(association.receive(), 0.25)
        except TimeoutError:
            continue
        assert got in sent
        return sent
    raise AssertionError(f"no echo of {label!r} after {tries} datagrams")


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


class _Attacker(asyncio.DatagramProtocol):
    """A socket at a third address; keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


async def _attacker() -> _Attacker:
    _, attacker = await asyncio.get_running_loop().create_datagram_endpoint(_Attacker, local_addr=(LOCAL, 0))
    return attacker


def _peer(association: aio.DTLSAssociation) -> tuple[str, int]:
    return (str(association.peer[0]), int(association.peer[1]))


def test_nat_rebinding_moves_the_association_without_a_new_handshake(caplog: pytest.LogCaptureFixture) -> None:
    """The client's source port changes and the old mapping is gone: its
    datagrams reach its association by CID, the probe to the new port is
    ACKed from there, and the server sends to the new port from then on."""
    caplog.set_level(logging.INFO, logger="longtls.aio")
    client_cfg, server_cfg, _ = configs()
    handshakes: list[aio.DTLSAssociation] = []

    async def handler(association: aio.DTLSAssociation) -> None:
        handshakes.append(association)
        await echo(association)

    async def main() -> None:
        async with await aio.serve_dtls(handler, LOCAL, 0, server_cfg) as server:
            relay = await NATRelay.start((LOCAL, server.port))
            client_events: list[object] = []
            association = await aio.connect_dtls(
                LOCAL, relay.port, client_cfg,
                options=aio.StreamOptions(event_handler=client_events.append),
            )
            try:
                association.send(b"before")
                assert await association.receive() == b"before"
                (server_side,) = server.associations.values()
                old = relay.address
                assert _peer(server_side) == old
                stateless = server.stateless_replies

                new = await relay.rebind(keep_old=False)
                assert new != old
                await _echoed(association, b"after")
                assert _peer(server_side) == new and [_peer(a) for a in server.associations.values()] == [new]
                assert server.migrations == 1 and server.probes_sent == 1
                # The server's datagrams now reach the new mapping, both ways keep flowing.
                received_new = relay.received[1]
                for payload in (os.urandom(100), os.urandom(700)):
                    association.send(payload)
                    assert await association.receive() == payload
                assert relay.received[1] >= received_new + 2
                # No new handshake: one handler call, no stateless replies, one HandshakeComplete.
                assert handshakes == [server_side] and server.stateless_replies == stateless
                assert sum(isinstance(e, HandshakeComplete) for e in client_events) == 1
                assert association.handshake is not None
                # The probe's fresh CID (§9) is one the server routes by.
                assert len(server_side.connection.own_connection_ids) == 2
            finally:
                association.close()
                relay.close()

    run(main())
    moved = [r.getMessage() for r in caplog.records if "moved from" in r.getMessage()]
    assert len(moved) == 1 and "NAT rebinding, reachability confirmed" in moved[0]


def test_a_candidate_that_never_acks_is_not_adopted() -> None:
    """The NAT gives a new port, but what the server sends there is lost
    (and the old mapping still works): data flows through the old address,
    the candidate gets nothing but the probes (one a second) and is never adopted.
    The NewConnectionId's retransmissions go to the old address and are ACKed
    from the new one: they do not validate it."""
    client_cfg, server_cfg, _ = configs()

    async def main() -> None:
        async with await aio.serve_dtls(echo, LOCAL, 0, server_cfg) as server:
            relay = await NATRelay.start((LOCAL, server.port))
            association = await aio.connect_dtls(LOCAL, relay.port, client_cfg)
            try:
                association.send(b"before")
                assert await association.receive() == b"before"
                (server_side,) = server.associations.values()
                old = relay.address
                await relay.rebind(keep_old=True)
                relay.deliver_from[1] = False
                loop = asyncio.get_running_loop()
                end = loop.time() + 2.6
                while loop.time() < end:
                    payload = os.urandom(32)
                    association.send(payload)
                    assert await asyncio.wait_for(association.receive(), 5) == payload  # via the old address
                    await asyncio.sleep(0.05)
                assert _peer(server_side) == old and server.migrations == 0
                assert 2 <= server.probes_sent <= 3  # at most one per PATH_PROBE_INTERVAL
                # Nothing but the probes went to the unproven address (no amplification).
                assert relay.received[1] == server.probes_sent
                assert not server_side.connection.is_closed
            finally:
                association.close()
                relay.close()

    run(main())


def test_replayed_and_forged_datagrams_from_elsewhere_do_not_move_the_association() -> None:
    client_cfg, server_cfg, _ = configs()

    async def main() -> None:
        async with await aio.serve_dtls(echo, LOCAL, 0, server_cfg) as server:
            relay = await NATRelay.start((LOCAL, server.port))
            association = await aio.connect_dtls(LOCAL, relay.port, client_cfg)
            attacker = await _attacker()
            try:
                for payload in (b"one", b"two"):
                    association.send(payload)
                    assert await association.receive() == payload
                (server_side,) = server.associations.values()
                old = relay.address
                genuine = relay.sent_log[-1]  # authentic, and already received
                cid = server_side.connection.own_connection_ids[0]
                assert genuine[0] & 0xF0 == 0x30 and genuine[1 : 1 + len(cid)] == cid
                forged = [
                    genuine,  # a replay (§4.5.1)
                    genuine[:-1] + bytes((genuine[-1] ^ 0x80,)),  # a flipped bit: fails authentication
                    bytes((genuine[0],)) + cid + os.urandom(2) + (40).to_bytes(2, "big") + os.urandom(40),
                    bytes((genuine[0],)) + cid,  # truncated
                ]
                discarded = server_side.connection.discarded
                for datagram in forged:
                    attacker.transport.sendto(datagram, (LOCAL, server.port))
                await _until(lambda: server_side.connection.discarded >= discarded + 3)
                await asyncio.sleep(0.2)
                assert attacker.received == [] and server.probes_sent == 0
                assert _peer(server_side) == old and server.migrations == 0
                association.send(b"still here")
                assert await association.receive() == b"still here"
            finally:
                association.close()
                attacker.transport.close()
                relay.close()

    run(main())


def test_stolen_datagrams_raced_from_elsewhere_do_not_move_the_association() -> None:
    """An attacker that sees the client's datagrams first sends one from its
    own address A: it authenticates and is the newest, so the server probes A.
    The attacker cannot ACK.  If it passes the probe on to the client, the
    client's ACK validates A only when it comes from A (docs/dtls.md): one
    sent on from another address B, or one arriving from the client's real
    address, ends the probe without a move, and later datagrams from A
    cannot complete it."""
    client_cfg, server_cfg, _ = configs()

    async def main() -> None:
        async with await aio.serve_dtls(echo, LOCAL, 0, server_cfg) as server:
            relay = await NATRelay.start((LOCAL, server.port))
            association = await aio.connect_dtls(LOCAL, relay.port, client_cfg)
            attacker, other = await _attacker(), await _attacker()
            server_address = (LOCAL, server.port)
            try:
                association.send(b"one")
                assert await association.receive() == b"one"
                (server_side,) = server.associations.values()
                old = relay.address
                stolen: list[bytes] = []

                def steal(datagram: bytes) -> bool:
                    stolen.append(datagram)
                    relay.forward_filter = None  # one datagram only
                    return False

                async def steal_next() -> bytes:
                    count = len(stolen)
                    relay.forward_filter = steal
                    await _until(lambda: len(stolen) > count)
                    return stolen[-1]

                async def race(payload: bytes, *, probed: bool = True) -> bytes | None:
                    """The client sends ``payload``; the attacker steals it and sends it from A;
                    the probe A receives (``probed``: wait for it), else None."""
                    probes = len(attacker.received)
                    relay.forward_filter = steal
                    association.send(payload)
                    await _until(lambda: relay.forward_filter is None)
                    attacker.transport.sendto(stolen[-1], server_address)
                    # The payload is delivered (once), and echoed to the client's real address.
                    assert await asyncio.wait_for(association.receive(), 5) == payload
                    if not probed:
                        await asyncio.sleep(0.2)
                        return None
                    await _until(lambda: len(attacker.received) > probes)
                    return attacker.received[-1]

                # 1. The client's ACK of the probe, stolen and sent from B.
                probe = await race(b"stolen-1")
                assert probe is not None and server.probes_sent == 1
                ack_task = asyncio.ensure_future(steal_next())
                relay._from_server(probe, 0)  # passed on to the client, as if from the server
                ack = await ack_task
                other.transport.sendto(ack, server_address)
                await asyncio.sleep(0.2)
                assert _peer(server_side) == old and server.migrations == 0

                # 2. A second probe (one per PATH_PROBE_INTERVAL), ACKed from the client's real address.
                await asyncio.sleep(aio.datagram.PATH_PROBE_INTERVAL)
                probe = await race(b"stolen-2")
                assert probe is not None and server.probes_sent == 2
                relay._from_server(probe, 0)
                await asyncio.sleep(0.2)
                # ... then more of the client's datagrams from A: the probe is over, no move.
                await race(b"stolen-3", probed=False)
                assert _peer(server_side) == old and server.migrations == 0
                association.send(b"two")
                assert await association.receive() == b"two"
                assert all(len(d) < 100 for d in attacker.received)  # probes only: no data went there
                assert other.received == []
            finally:
                association.close()
                attacker.transport.close()
                other.transport.close()
                relay.close()

    run(main())

