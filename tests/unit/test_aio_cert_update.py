"""Certificate Update (draft-rosomakho-tls-cert-update-02) through the asyncio
layer: ``TLSWriter.update_certificate``, ``DTLSAssociation.update_certificate``,
``LiveConnections`` (a server's live connections, all handed a renewal at
once), the ``CertificateUpdated`` events reaching handlers and event streams,
and the metrics counters.

Everything runs over real loopback sockets in one event loop; the renewed
certificates come from helpers.renewal (same CA, same subject and names, new
key and serial number), as an ACME renewal would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from helpers.peers import LOOPBACK
from helpers.pki import Credential, make_ca, make_leaf
from helpers.renewal import extra_san, renew
from longtls import aio
from longtls.config import ClientAuth, Configuration
from longtls.credentials import catch_up
from longtls.crypto.certificates import TrustStore
from longtls.errors import LocalProtocolError
from longtls.events import CertificateUpdated, CertificateUpdateDirection, Event
from longtls.metrics import Metrics

SENT, RECEIVED = CertificateUpdateDirection.sent, CertificateUpdateDirection.received


def run(coro: Awaitable[Any], timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@dataclass
class Setup:
    ca: Credential
    server: Credential
    client: Credential
    server_config: Configuration
    client_config: Configuration


def setup(*, mutual: bool = False, client_offers: bool = True, server_accepts: bool = True) -> Setup:
    ca = make_ca("ecdsa-p256")
    server, client = make_leaf(ca, "ecdsa-p256"), make_leaf(ca, "ecdsa-p256", client=True)
    store = TrustStore([ca.cert])
    server_config = Configuration(
        is_client=False, certificate_chain=server.chain, private_key=server.key, trust_store=store,
        certificate_update=server_accepts,
        client_auth=ClientAuth.REQUIRED if mutual else ClientAuth.NONE,
    )
    client_config = Configuration(
        is_client=True, server_name="localhost", trust_store=store, certificate_update=client_offers,
    )
    if mutual:
        client_config.certificate_chain, client_config.private_key = client.chain, client.key
    return Setup(ca, server, client, server_config, client_config)


@dataclass
class Updates:
    """A handler collecting CertificateUpdated events."""

    events: list[CertificateUpdated] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        if isinstance(event, CertificateUpdated):
            self.events.append(event)

    def of(self, direction: CertificateUpdateDirection) -> list[CertificateUpdated]:
        return [e for e in self.events if e.direction is direction]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def echo(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def round_trip(reader: aio.TLSReader, writer: aio.TLSWriter, data: bytes) -> None:
    writer.write(data)
    assert await reader.readexactly(len(data)) == data


def test_a_server_renewal_reaches_every_live_client_through_live_connections() -> None:
    s = setup()
    live = aio.LiveConnections()
    server_metrics, client_metrics = Metrics(), Metrics()
    renewed = renew(s.server)

    async def main() -> None:
        options = aio.StreamOptions(connections=live, metrics=server_metrics)
        async with await aio.start_server(echo, LOOPBACK, 0, s.server_config, options) as server:
            port = server.sockets[0].getsockname()[1]
            clients = []
            for _ in range(2):
                updates = Updates()
                reader, writer = await aio.connect(
                    LOOPBACK, port, s.client_config,
                    aio.StreamOptions(event_handler=updates, metrics=client_metrics),
                )
                assert writer.handshake.certificate_update
                clients.append((reader, writer, updates, writer.events()))
            await until(lambda: len(live) == 2)

            rollout = live.update_certificate(renewed.chain, renewed.key)
            assert (rollout.sent, rollout.pending, rollout.not_negotiated, rollout.refused) == (2, 0, 0, 0)
            for reader, writer, updates, stream in clients:
                await round_trip(reader, writer, b"after the update")  # the same connection goes on
                [event] = updates.of(RECEIVED)
                assert event.certificates == (renewed.cert,)
                assert writer.peer_certificates == (renewed.cert,)
                # The HandshakeComplete is a record of the handshake: it keeps the original.
                assert writer.handshake.peer_certificates == (s.server.cert,)
                # The async event stream sees it too.
                while not isinstance(got := await stream.get(), CertificateUpdated):
                    assert got is not None
                assert got.certificates[0].serial_number == renewed.cert.serial_number
            for member in live:
                assert member.connection.local_certificates == (renewed.cert,)
            for _, writer, _, _ in clients:
                writer.close()
                await writer.wait_closed()
            await until(lambda: len(live) == 0)

    run(main())
    assert server_metrics.certificate_updates == {"sent": 2, "received": 0}
    assert client_metrics.certificate_updates == {"sent": 0, "received": 2}
    assert server_metrics.handshakes["ok"] == 2  # no reconnect
    assert 'longtls_certificate_updates_total{direction="sent"} 2' in server_metrics.render()


def test_a_client_renewal_reaches_the_server() -> None:
    s = setup(mutual=True)
    renewed = renew(s.client)
    server_updates = Updates()

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        writer.add_event_handler(server_updates)
        await echo(reader, writer)

    async def main() -> None:
        async with await aio.start_server(handler, LOOPBACK, 0, s.server_config) as server:
            port = server.sockets[0].getsockname()[1]
            client_updates = Updates()
            reader, writer = await aio.connect(
                LOOPBACK, port, s.client_config, aio.StreamOptions(event_handler=client_updates)
            )
            await round_trip(reader, writer, b"before")
            # After replacing the Configuration's credentials, no argument is needed.
            s.client_config.certificate_chain, s.client_config.private_key = renewed.chain, renewed.key
            assert writer.update_certificate() is True
            assert [e.certificates for e in client_updates.of(SENT)] == [(renewed.cert,)]
            assert writer.local_certificates == (renewed.cert,)
            await round_trip(reader, writer, b"after")
            await until(lambda: bool(server_updates.of(RECEIVED)))
            writer.close()
            await writer.wait_closed()

    run(main())
    [event] = server_updates.of(RECEIVED)
    assert event.certificates == (renewed.cert,)


def test_an_update_waits_for_the_peers_next_request_then_goes_by_itself() -> None:
    """Each request is used once (draft §4.2); the receiver sends a new one
    once it accepted an update (§5).  A second update asked for before that
    request arrived is pending, and leaves when it does."""
    s = setup()
    first, second = renew(s.server), renew(s.server)
    sent = Updates()

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        writer.add_event_handler(sent)
        assert writer.update_certificate(first.chain, first.key) is True
        assert writer.update_certificate(second.chain, second.key) is False
        assert writer.connection.certificate_update_pending
        await echo(reader, writer)

    async def main() -> None:
        async with await aio.start_server(handler, LOOPBACK, 0, s.server_config) as server:
            port = server.sockets[0].getsockname()[1]
            received = Updates()
            reader, writer = await aio.connect(
                LOOPBACK, port, s.client_config, aio.StreamOptions(event_handler=received)
            )
            await until(lambda: len(received.of(RECEIVED)) == 2)
            assert [e.certificates[0] for e in received.of(RECEIVED)] == [first.cert, second.cert]
            assert writer.peer_certificates == (second.cert,)
            await round_trip(reader, writer, b"still the same connection")
            writer.close()
            await writer.wait_closed()

    run(main())
    assert [e.certificates[0] for e in sent.of(SENT)] == [first.cert, second.cert]


@pytest.mark.parametrize("side", ["client", "server"])
def test_without_negotiation_live_connections_count_it_and_the_writer_refuses(side: str) -> None:
    s = setup(client_offers=side != "client", server_accepts=side != "server")
    live = aio.LiveConnections()
    renewed = renew(s.server)

    async def main() -> None:
        options = aio.StreamOptions(connections=live)
        async with await aio.start_server(echo, LOOPBACK, 0, s.server_config, options) as server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await aio.connect(LOOPBACK, port, s.client_config)
            assert writer.handshake.certificate_update is False
            await until(lambda: len(live) == 1)
            rollout = live.update_certificate(renewed.chain, renewed.key)
            assert (rollout.sent, rollout.pending, rollout.not_negotiated, rollout.refused) == (0, 0, 1, 0)
            [member] = list(live)
            with pytest.raises(LocalProtocolError, match="not negotiated"):
                member.update_certificate(renewed.chain, renewed.key)
            await round_trip(reader, writer, b"unaffected")
            assert writer.peer_certificates == (s.server.cert,)
            writer.close()
            await writer.wait_closed()

    run(main())


def test_a_certificate_of_another_identity_is_refused_locally_and_the_connection_goes_on() -> None:
    s = setup()
    live = aio.LiveConnections()
    other = extra_san(s.server)  # one more subjectAltName: the extensions rule

    async def main() -> None:
        options = aio.StreamOptions(connections=live)
        async with await aio.start_server(echo, LOOPBACK, 0, s.server_config, options) as server:
            port = server.sockets[0].getsockname()[1]
            updates = Updates()
            reader, writer = await aio.connect(
                LOOPBACK, port, s.client_config, aio.StreamOptions(event_handler=updates)
            )
            await until(lambda: len(live) == 1)
            rollout = live.update_certificate(other.chain, other.key)
            assert (rollout.sent, rollout.refused) == (0, 1)
            await round_trip(reader, writer, b"still fine")
            assert updates.events == []
            assert writer.peer_certificates == (s.server.cert,)
            writer.close()
            await writer.wait_closed()

    run(main())


def test_dtls_associations_take_a_renewal_too() -> None:
    s = setup()
    live = aio.LiveConnections()
    renewed = renew(s.server)
    metrics = Metrics()

    async def handler(association: aio.DTLSAssociation) -> None:
        async for payload in association:
            association.send(payload)

    async def main() -> None:
        options = aio.StreamOptions(connections=live, metrics=metrics)
        async with await aio.serve_dtls(handler, LOOPBACK, 0, s.server_config, options=options) as server:
            updates = Updates()
            association = await aio.connect_dtls(
                LOOPBACK, server.port, s.client_config, options=aio.StreamOptions(event_handler=updates)
            )
            assert association.handshake.certificate_update
            await until(lambda: len(live) == 1)
            rollout = live.update_certificate(renewed.chain, renewed.key)
            assert rollout.delivered == 1
            await until(lambda: bool(updates.of(RECEIVED)))
            assert association.peer_certificates == (renewed.cert,)
            association.send(b"datagram after the update")
            assert await association.receive() == b"datagram after the update"
            association.close()
            await association.wait_closed()
            await until(lambda: len(live) == 0)

    run(main())
    assert metrics.certificate_updates["sent"] == 1


def test_catch_up_hands_a_renewal_to_a_connection_that_joined_after_it() -> None:
    """A renewal that lands while a handshake is under way (our Certificate
    already sent, the connection not yet among the live ones) reaches that
    connection when its handshake completes (credentials.catch_up)."""
    s = setup()
    renewed = renew(s.server)
    results: list[bool] = []

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        assert writer.local_certificates == (s.server.cert,)  # the handshake used the old one
        results.append(catch_up(writer, s.server_config))  # unchanged Configuration: nothing to do
        s.server_config.certificate_chain, s.server_config.private_key = renewed.chain, renewed.key
        results.append(catch_up(writer, s.server_config))
        results.append(catch_up(writer, s.server_config))  # it holds the renewal now: nothing to do
        await echo(reader, writer)

    async def main() -> None:
        async with await aio.start_server(handler, LOOPBACK, 0, s.server_config) as server:
            port = server.sockets[0].getsockname()[1]
            updates = Updates()
            reader, writer = await aio.connect(
                LOOPBACK, port, s.client_config, aio.StreamOptions(event_handler=updates)
            )
            await until(lambda: bool(updates.of(RECEIVED)))
            assert writer.peer_certificates == (renewed.cert,)
            await round_trip(reader, writer, b"x")
            writer.close()
            await writer.wait_closed()

    run(main())
    assert results == [False, True, False]
