"""longtls.aio's DTLS 1.3 datagram API over real loopback UDP sockets:
connect_dtls / serve_dtls, datagrams both ways, the stateless cookie, key
updates (KeyUpdate and EKU in each profile), a garbage flood, limits and
timeouts, and a lossy relay (tests/helpers/udp_relay.py) that drops,
duplicates and reorders datagrams."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Awaitable
from typing import Any

import pytest

from helpers.pair import configs
from helpers.pki import make_ca, make_leaf
from helpers.udp_relay import UDPRelay
from longtls import aio
from longtls.config import Configuration
from longtls.constants import ContentType, EKUProfileName, HandshakeType, NamedGroup
from longtls.dtls_connection import DTLSConnection
from longtls.errors import HandshakeTimeoutError, LocalProtocolError
from longtls.events import (
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
    PeerAuthenticated,
)

LOCAL = "127.0.0.1"


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def dtls_configs(**kwargs: Any) -> tuple[Configuration, Configuration]:
    client, server, _ = configs(**kwargs)
    return client, server


async def echo(association: aio.DTLSAssociation) -> None:
    async for payload in association:
        association.send(payload)


def test_datagrams_both_ways_each_delivered_whole_and_once() -> None:
    client_cfg, server_cfg = dtls_configs()
    seen: list[aio.DTLSAssociation] = []

    async def handler(association: aio.DTLSAssociation) -> None:
        seen.append(association)
        await echo(association)

    async def main() -> None:
        async with await aio.serve_dtls(handler, LOCAL, 0, server_cfg) as server:
            association = await aio.connect_dtls(LOCAL, server.port, client_cfg)
            hs = association.handshake
            assert isinstance(hs, HandshakeComplete) and hs.version == "DTLSv1.3"
            assert association.connection.write_epoch == 3  # RFC 9147 §6.1: first application keys
            # Datagram boundaries are kept: sizes 0..max, each echoed as itself.
            payloads = [os.urandom(n) for n in (1, 17, 500, association.max_datagram_payload)]
            for payload in payloads:
                association.send(payload)
                assert await association.receive() == payload
            assert (association.datagrams_sent, association.bytes_sent) == (4, sum(map(len, payloads)))
            assert (association.datagrams_received, association.bytes_received) == (4, sum(map(len, payloads)))
            with pytest.raises(LocalProtocolError, match="do not fit"):
                association.send(bytes(association.max_datagram_payload + 1))
            assert len(server.associations) == 1
            association.close()
            await association.wait_closed()
            # The server's association ended on our close_notify and was dropped.
            for _ in range(100):
                if not server.associations:
                    break
                await asyncio.sleep(0.01)
            assert not server.associations
            assert seen and seen[0].closed.done() and seen[0].exception is None
            assert association.exception is None

    run(main())


def test_ipv6_addresses_bind_the_cookie_and_key_the_association() -> None:
    client_cfg, server_cfg = dtls_configs()

    async def main() -> None:
        async with await aio.serve_dtls(echo, "::1", 0, server_cfg) as server:
            association = await aio.connect_dtls("::1", server.port, client_cfg)
            association.send(b"over IPv6")
            assert await association.receive() == b"over IPv6"
            ((host, _port, *_),) = server.associations
            assert host == "::1"
            # The cookie binds the 16-byte address and the port (RFC 9147 §5.1 leaves the form open).
            assert aio.datagram.address_bytes(("::1", 443)) == bytes(15) + b"\x01" + b"\x01\xbb"
            association.close()
            await association.wait_closed()

    run(main())


def test_server_keeps_no_state_before_a_valid_cookie() -> None:
    """RFC 9147 §5.1: a ClientHello without a cookie gets a stateless
    HelloRetryRequest and leaves nothing behind on the server."""
    client_cfg, server_cfg = dtls_configs(client_key_share_groups=(NamedGroup.x25519,))
    assert server_cfg.dtls_cookie

    async def main() -> None:
        async with await aio.serve_dtls(echo, LOCAL, 0, server_cfg) as server:
            probe = DTLSConnection(client_cfg)
            probe.start_handshake()
            (hello,) = probe.datagrams_to_send()  # x25519 only: one datagram
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                for _ in range(3):  # the same ClientHello three times: same answer, no state
                    sock.sendto(hello, (LOCAL, server.port))
                    reply = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), 5)
                    # A DTLSPlaintext handshake record (RFC 9147 §4) holding a ServerHello (the HRR).
                    assert reply[0] == ContentType.HANDSHAKE and reply[13] == HandshakeType.server_hello
                    assert not server.associations
                assert server.stateless_replies == 3
            finally:
                sock.close()
            # A real client answers the cookie and gets its association.
            association = await aio.connect_dtls(LOCAL, server.port, client_cfg)
            assert len(server.associations) == 1
            association.send(b"ping")
            assert await association.receive() == b"ping"
            association.close()
            await association.wait_closed()

    run(main())


def test_a_rebooted_client_on_the_same_address_replaces_its_association() -> None:
    """RFC 9147 §5.11: an epoch-0 ClientHello on an address that has an
    association starts a new handshake; the old association is abandoned
    once the new handshake completes, not before."""
    client_cfg, server_cfg = dtls_configs()
    handled: list[aio.DTLSAssociation] = []

    async def handler(association: aio.DTLSAssociation) -> None:
        handled.append(association)
        await echo(association)

    async def main() -> None:
        async with await aio.serve_dtls(handler, LOCAL, 0, server_cfg) as server:
            port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            port.bind((LOCAL, 0))
            local = port.getsockname()
            port.close()
            first = await aio.connect_dtls(LOCAL, server.port, client_cfg, local_addr=local)
            first.send(b"before")
            assert await first.receive() == b"before"
            first.abort()  # the client "reboots": no close_notify
            await first.wait_closed()
            await asyncio.sleep(0.05)  # the event loop releases the socket after its close
            assert len(server.associations) == 1 and not handled[0].closed.done()
            second = await aio.connect_dtls(LOCAL, server.port, client_cfg, local_addr=local)
            second.send(b"after")
            assert await second.receive() == b"after"
            assert list(server.associations) == [local]
            assert server.associations[local] is handled[1]
            assert handled[0].closed.done() and isinstance(handled[0].exception, aio.ConnectionLostError)
            second.close()
            await second.wait_closed()

    run(main())


def test_garbage_flood_does_not_stop_a_good_client() -> None:
    client_cfg, server_cfg = dtls_configs()
    rng = random.Random(11)
    blasted = 0

    async def blast(port: int, stop: asyncio.Event) -> None:
        nonlocal blasted
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
        try:
            while not stop.is_set():
                for sock in socks:
                    kind = rng.randrange(4)
                    size = rng.randrange(1, 1400)
                    body = rng.randbytes(size)
                    if kind == 1:  # looks like an epoch-0 handshake record
                        body = b"\x16\xfe\xfd\x00\x00" + body
                    elif kind == 2:  # a unified header with a 16-bit sequence number and length
                        body = bytes([0x2C | rng.randrange(4)]) + body
                    elif kind == 3:  # a ClientHello fragment header with random fields
                        body = b"\x16\xfe\xfd" + bytes(8) + size.to_bytes(2, "big") + b"\x01" + body
                    sock.sendto(body, (LOCAL, port))
                    blasted += 1
                # About 4,000 datagrams a second.  asyncio reads one datagram per
                # loop iteration, so an unpaced flood from this same loop would
                # only measure the kernel's socket buffer overflowing.
                await asyncio.sleep(0.002)
        finally:
            for sock in socks:
                sock.close()

    async def main() -> None:
        async with await aio.serve_dtls(echo, LOCAL, 0, server_cfg) as server:
            stop = asyncio.Event()
            flood = asyncio.create_task(blast(server.port, stop))
            try:
                await asyncio.sleep(0.05)
                association = await aio.connect_dtls(LOCAL, server.port, client_cfg)
                i = 0
                while i < 50 or blasted < 2000:  # data goes on while the flood does
                    payload = f"datagram {i}".encode()
                    association.send(payload)
                    assert await association.receive() == payload
                    i += 1
                    await asyncio.sleep(0.005)
            finally:
                stop.set()
                await flood
            # Only the good client holds state on the server.
            assert len(server.associations) == 1
            association.close()
            await association.wait_closed()

    run(main())


def forged_first_fragment(rng: random.Random) -> bytes:
    """A well-formed DTLSPlaintext record (RFC 9147 §4) holding the first
    fragment (§5.2 header) of a 2,000-byte ClientHello: what a client whose
    ClientHello needs two datagrams sends first, with random contents."""
    body = rng.randbytes(300)
    fragment = (
        bytes([HandshakeType.client_hello]) + (2000).to_bytes(3, "big") + (0).to_bytes(2, "big")
        + (0).to_bytes(3, "big") + len(body).to_bytes(3, "big") + body
    )
    return bytes([ContentType.HANDSHAKE]) + b"\xfe\xfd" + bytes(8) + len(fragment).to_bytes(2, "big") + fragment


def test_forged_first_fragments_cannot_crowd_out_a_good_client() -> None:
    """A first ClientHello fragment makes the server keep state before any
    cookie (DTLSConnection.accept reassembles it).  Such unproven associations
    are capped apart and evicted oldest first: a flood of forged ones from
    eight addresses, against a server with room for four associations, does
    not keep out a client whose own ClientHello needs two datagrams."""
    client_cfg, server_cfg = dtls_configs()  # X25519MLKEM768 + x25519 shares: ~1.4 KB
    rng = random.Random(5)
    forged = 0

    async def flood(port: int, stop: asyncio.Event) -> None:
        nonlocal forged
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
        try:
            while not stop.is_set():
                for sock in socks:
                    sock.sendto(forged_first_fragment(rng), (LOCAL, port))
                    forged += 1
                await asyncio.sleep(0.002)
        finally:
            for sock in socks:
                sock.close()

    async def main() -> None:
        server = await aio.serve_dtls(echo, LOCAL, 0, server_cfg, max_associations=4, max_unproven=2)
        async with server:
            stop = asyncio.Event()
            task = asyncio.create_task(flood(server.port, stop))
            try:
                await asyncio.sleep(0.1)
                assert server.evicted > 0 and len(server._unproven) <= 2
                association = await aio.connect_dtls(LOCAL, server.port, client_cfg)
                for i in range(20):
                    association.send(b"%d" % i)
                    assert await association.receive() == b"%d" % i
                    await asyncio.sleep(0.01)
                assert len(server._unproven) <= 2 and len(server.associations) <= 4
            finally:
                stop.set()
                await task
            assert forged > 100 and server.refused == 0
            association.close()
            await association.wait_closed()

    run(main())


def test_post_handshake_client_authentication_and_a_smaller_mtu() -> None:
    ca = make_ca("ecdsa-p256")
    leaf = make_leaf(ca, "ecdsa-p256", client=True)
    client_cfg, server_cfg, _ = configs(
        ca=ca, client_certificate_chain=leaf.chain, client_private_key=leaf.key, client_post_handshake_auth=True,
    )
    authenticated: list[PeerAuthenticated] = []

    async def handler(association: aio.DTLSAssociation) -> None:
        association.add_event_handler(
            lambda e: authenticated.append(e) if isinstance(e, PeerAuthenticated) else None
        )
        association.request_client_authentication()
        await echo(association)

    async def main() -> None:
        async with await aio.serve_dtls(handler, LOCAL, 0, server_cfg) as server:
            association = await aio.connect_dtls(LOCAL, server.port, client_cfg)
            association.send(b"x")
            assert await association.receive() == b"x"
            for _ in range(200):
                if authenticated:
                    break
                await asyncio.sleep(0.01)
            assert authenticated and authenticated[0].peer_certificates[0] == leaf.cert
            # RFC 9147 §4.4: the MTU may shrink; application datagrams must then fit it.
            association.mtu = 300
            assert association.max_datagram_payload < 300
            with pytest.raises(LocalProtocolError):
                association.send(bytes(300))
            association.close()
            await association.wait_closed()

    run(main())


def test_standard_key_update_awaited_until_both_directions_moved() -> None:
    client_cfg, server_cfg = dtls_configs()

    async def main() -> None:
        # Without EKU (which replaces KeyUpdate once negotiated, EKU draft-13 §4).
        async with await aio.serve_dtls(echo, LOCAL, 0, server_cfg, extended_key_update=False) as server:
            association = await aio.connect_dtls(LOCAL, server.port, client_cfg, extended_key_update=False)
            assert not association.handshake.extended_key_update
            events = association.events()
            for generation in (1, 2, 3):
                assert await association.update_keys() == generation
                # rfc9147bis §8: our epoch moved once the KeyUpdate was ACKed;
                # the peer's answer moved its epoch too.
                assert association.connection.write_epoch == 3 + generation
                assert association.connection.read_epoch == 3 + generation
                association.send(b"after %d" % generation)
                assert await association.receive() == b"after %d" % generation
            association.close()
            await association.wait_closed()
            updates = [e async for e in events if isinstance(e, KeyUpdated)]
            assert sorted((e.direction, e.generation) for e in updates) == sorted(
                [("send", g) for g in (1, 2, 3)] + [("receive", g) for g in (1, 2, 3)]
            )

    run(main())


def test_handshake_timeout_is_the_configurations() -> None:
    client_cfg, _ = dtls_configs(client_handshake_timeout=1.0)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOCAL, 0))  # receives the ClientHellos, never answers

    async def main() -> None:
        start = time.monotonic()
        with pytest.raises(HandshakeTimeoutError):
            await aio.connect_dtls(LOCAL, silent.getsockname()[1], client_cfg)
        assert 0.9 <= time.monotonic() - start < 3.0

    try:
        run(main())
    finally:
        silent.close()


def test_association_limit_refuses_new_handshakes_keeps_the_others() -> None:
    client_cfg, server_cfg = dtls_configs(client_handshake_timeout=1.5)

    async def main() -> None:
        async with await aio.serve_dtls(echo, LOCAL, 0, server_cfg, max_associations=1) as server:
            first = await aio.connect_dtls(LOCAL, server.port, client_cfg)
            with pytest.raises(HandshakeTimeoutError):
                await aio.connect_dtls(LOCAL, server.port, client_cfg)
            assert server.refused >= 1 and len(server.associations) == 1
            first.send(b"still here")
            assert await first.receive() == b"still here"
            first.close()
            await first.wait_closed()

    run(main())


def test_idle_association_is_closed_and_dropped() -> None:
    client_cfg, server_cfg = dtls_configs()

    async def main() -> None:
        options = aio.StreamOptions(idle_timeout=0.3)
        async with await aio.serve_dtls(echo, LOCAL, 0, server_cfg, options=options) as server:
            association = await aio.connect_dtls(LOCAL, server.port, client_cfg)
            association.send(b"x")
            assert await association.receive() == b"x"
            # The server's close_notify ends our receive() cleanly.
            with pytest.raises(aio.DatagramsEnded):
                await asyncio.wait_for(association.receive(), 3)
            assert not server.associations
            association.close()
            await association.wait_closed()

    run(main())


def test_handler_error_ends_that_association_with_internal_error() -> None:
    client_cfg, server_cfg = dtls_configs()

    async def broken(association: aio.DTLSAssociation) -> None:
        await association.receive()
        raise RuntimeError("application bug")

    async def main() -> None:
        async with await aio.serve_dtls(broken, LOCAL, 0, server_cfg) as server:
            association = await aio.connect_dtls(LOCAL, server.port, client_cfg)
            association.send(b"boom")
            with pytest.raises(Exception, match="internal_error"):
                await asyncio.wait_for(association.receive(), 5)
            await association.wait_closed()
            assert not server.associations

    run(main())


# ------------------------------------------------------------------ a lossy link


SEEDS = {EKUProfileName.draft_13: 13, EKUProfileName.draft_2025_10: 2025, EKUProfileName.draft_05: 5}


def _profile_configs(profile: EKUProfileName) -> tuple[Configuration, Configuration]:
    return dtls_configs(
        client_eku_profiles=(profile,), server_eku_profiles=(profile,),
        # RFC 9147 §5.8.2's back-off (doubling up to 60 s, kept until a message
        # is acknowledged without a retransmission) makes a handshake that loses
        # a few flights in a row at 20% loss last over the default 30 s, and
        # over many updates the timer can climb to tens of seconds: one more
        # loss then outlasts the default 30 s rekey timeout.
        client_key_share_groups=(NamedGroup.x25519,), client_rekey_timeout=300.0, server_rekey_timeout=300.0,
        client_handshake_timeout=90.0, server_handshake_timeout=90.0,
    )


@pytest.mark.slow
@pytest.mark.parametrize("profile", list(EKUProfileName), ids=[p.value for p in EKUProfileName])
def test_lossy_relay_handshake_ekus_and_datagrams_delivered_once(profile: EKUProfileName) -> None:
    """At 20% loss with duplication and reordering, through a real UDP relay:
    the handshake completes, 20 EKUs of the profile complete (10 started by
    each side), both ends agree on the epochs, and every application datagram
    that arrives is delivered once and intact."""
    client_cfg, server_cfg = _profile_configs(profile)
    updates = 10
    server_side: list[aio.DTLSAssociation] = []
    server_received: list[bytes] = []
    server_events: list[Event] = []

    async def handler(association: aio.DTLSAssociation) -> None:
        server_side.append(association)
        association.add_event_handler(server_events.append)
        async for payload in association:
            server_received.append(payload)

    async def main() -> None:
        server = await aio.serve_dtls(handler, LOCAL, 0, server_cfg, extended_key_update=True)
        relay = await UDPRelay.start(
            ("127.0.0.1", server.port), loss=0.2, duplicate=0.1, reorder=0.1, seed=SEEDS[profile]
        )
        try:
            client = await aio.connect_dtls(LOCAL, relay.port, client_cfg, extended_key_update=True)
            assert client.handshake.extended_key_update and client.handshake.eku_profile == profile
            while not server_side:
                await asyncio.sleep(0.01)
            server_assoc = server_side[0]
            sent_by_client: list[bytes] = []
            sent_by_server: list[bytes] = []
            client_received: list[bytes] = []

            async def client_reader() -> None:
                async for payload in client:
                    client_received.append(payload)

            reader = asyncio.create_task(client_reader())
            for i in range(updates):
                for side, log, name in ((client, sent_by_client, b"c"), (server_assoc, sent_by_server, b"s")):
                    payload = name + b"-%03d-" % i + os.urandom(40)
                    side.send(payload)
                    log.append(payload)
                # (The wait can be long: a lossy handshake leaves the retransmission
                # timer backed off, RFC 9147 §5.8.2, until a clean exchange.)
                generation = await asyncio.wait_for(client.update_keys(), 300)
                assert generation == client.connection.key_generation
                await asyncio.wait_for(server_assoc.update_keys(), 300)
                # Both ends agree on the generation and on each direction's epoch.
                cc, sc = client.connection, server_assoc.connection
                # The responder's last step may wait for a retransmission, and
                # RFC 9147 §5.8.2's back-off can reach tens of seconds at 20% loss.
                for _ in range(12000):
                    if cc.key_generation == sc.key_generation and (cc.write_epoch, cc.read_epoch) == (
                        sc.read_epoch, sc.write_epoch
                    ):
                        break
                    await asyncio.sleep(0.01)
                assert cc.key_generation == sc.key_generation == 2 * (i + 1)
                assert (cc.write_epoch, cc.read_epoch) == (sc.read_epoch, sc.write_epoch)
            await asyncio.sleep(0.3)  # the last datagrams still on their way
            reader.cancel()
            # Every datagram that arrived, arrived once and intact.
            for received, sent in ((server_received, sent_by_client), (client_received, sent_by_server)):
                assert len(received) == len(set(received)), "a datagram was delivered twice"
                assert set(received) <= set(sent), "a datagram was altered"
                assert received  # not vacuous: datagrams did get through
            completed = [e for e in server_events if isinstance(e, KeyUpdateCompleted)]
            assert len(completed) == 2 * updates
            stats = relay.stats
            for direction in (stats.to_server, stats.to_client):
                assert direction.dropped and direction.duplicated and direction.reordered
            client.close()
            await client.wait_closed()
        finally:
            relay.close()
            server.close()
            await server.wait_closed()

    run(main(), timeout=900)
