"""A closed connection is freed by reference counting alone (issue 16).

A connection's parts (handshake engine, KeyUpdate, EKU, Certificate Update,
the asyncio protocol and its streams) point back at what holds them.  Left as
reference cycles, a closed connection the application dropped lives until
Python's next full collection, which at 10,000 connections stops the event
loop for most of a second (docs/benchmarks.md, "Scale", "Freed on close").

Each test runs with the cyclic collector off and checks, through weak
references, that the objects are gone as soon as the last reference is
dropped.  What a user still reads after close (events, peer certificates,
negotiated parameters) is checked too.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from helpers.dtls_link import Clock, DatagramLink
from helpers.mls_link import pump as mls_pump
from helpers.pair import Pair, configs, connect
from longtls import aio
from longtls.config import Configuration
from longtls.connection import Connection
from longtls.constants import AlertDescription, ContentType, NamedGroup
from longtls.dtls_connection import DTLSConnection
from longtls.errors import HandshakeTimeoutError, RemoteProtocolError
from longtls.events import ApplicationData, ConnectionClosed, Event, KeyUpdateCompleted, KeyUpdated
from longtls.mls_connection import MLSConnection, MLSResumptionState


@pytest.fixture(autouse=True)
def no_cyclic_collector() -> Iterator[None]:
    """Only reference counting frees anything while a test runs."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _closed(events: list[Event]) -> ConnectionClosed:
    (closed,) = [e for e in events if isinstance(e, ConnectionClosed)]
    return closed


def _assert_freed(pair: Pair) -> None:
    """Drop the pair's references to its connections; both must be gone at once."""
    refs = [weakref.ref(pair.client), weakref.ref(pair.server)]
    refs += [weakref.ref(conn.handshake) for conn in (pair.client, pair.server)]
    pair.client = pair.server = None  # type: ignore[assignment]
    assert [ref() for ref in refs] == [None] * len(refs)


def test_clean_close_frees_both_ends() -> None:
    c, s, _ = configs()
    pair = connect(c, s)
    pair.client.send(b"ping")
    pair.pump()
    pair.client.close()
    pair.pump()
    pair.server.close()
    pair.pump()
    assert pair.client.is_closed and pair.server.is_closed
    # What a user reads after close still works: the peer's chain, the
    # negotiated parameters, the close reason.
    assert pair.client.peer_certificates[0] == s.certificate_chain[0]
    assert pair.client.handshake.suite is not None
    assert _closed(pair.client_events).alert is None and _closed(pair.client_events).by_peer
    assert not _closed(pair.server_events).by_peer
    _assert_freed(pair)


def test_fatal_alert_frees_both_ends() -> None:
    pair = connect(*configs()[:2])
    pair.server.abort(AlertDescription.insufficient_security)
    pair.pump()
    assert _closed(pair.client_events).alert == AlertDescription.insufficient_security
    assert _closed(pair.server_events).alert == AlertDescription.insufficient_security
    _assert_freed(pair)


def test_failed_handshake_frees_both_ends() -> None:
    # The client trusts another CA: it rejects the server's chain (RFC 9846 §4.4.2.4).
    c, _, _ = configs()
    _, s, _ = configs()
    pair = Pair(Connection(c), Connection(s))
    pair.client.start_handshake()
    with pytest.raises(RemoteProtocolError):
        pair.pump()
    pair.pump()
    alert = _closed(pair.client_events).alert
    assert alert is not None and not _closed(pair.client_events).by_peer
    assert _closed(pair.server_events) == ConnectionClosed(alert, by_peer=True, reason=f"peer sent alert {alert.name}")
    _assert_freed(pair)


def _tls_client(clock: list[float]) -> Connection:
    c, _, _ = configs(client_now=lambda: clock[0], client_handshake_timeout=5.0)
    return Connection(c)


def _mls_initiator(clock: list[float]) -> MLSConnection:
    return MLSConnection(Configuration(
        is_client=True, verify_peer=False, mls_cipher_suites=(0x0001,), mls_identity=b"client",
        handshake_timeout=5.0, now=lambda: clock[0],
    ))


@pytest.mark.parametrize("make", [_tls_client, _mls_initiator], ids=["tls", "mls"])
def test_timed_out_handshake_frees(make: Callable[[list[float]], Connection | MLSConnection]) -> None:
    clock = [1000.0]
    conn = make(clock)
    conn.start_handshake()
    assert conn.data_to_send()  # the first flight; no peer answers
    clock[0] += 10.0
    with pytest.raises(HandshakeTimeoutError):
        conn.handle_timer(clock[0])
    assert conn.is_closed
    ref = weakref.ref(conn)
    del conn
    assert ref() is None


def _updates(pair: Pair, start: Callable[[Connection], None], kind: type[Event]) -> None:
    before = sum(isinstance(e, kind) for e in pair.client_events)
    start(pair.client)
    pair.pump()
    assert sum(isinstance(e, kind) for e in pair.client_events) > before


@pytest.mark.parametrize("kind", ["extended", "standard"])
def test_after_key_updates(kind: str) -> None:
    # With EKU negotiated the standard KeyUpdate is refused (EKU draft-13
    # §4): one pair for each.
    pair = connect(*configs(client_extended_key_update=kind == "extended")[:2])
    if kind == "extended":
        _updates(pair, lambda conn: conn.extended_key_update(), KeyUpdateCompleted)
        _updates(pair, lambda conn: conn.extended_key_update(), KeyUpdateCompleted)
    else:
        _updates(pair, lambda conn: conn.update_keys(), KeyUpdated)
    pair.client.send(b"after the updates")
    pair.pump()
    assert pair.received("server") == b"after the updates"
    pair.client.close()
    pair.pump()
    pair.server.close()
    pair.pump()
    _assert_freed(pair)


def test_after_exported_authenticators_were_used() -> None:
    pair = connect(*configs()[:2])
    request = pair.client.authenticator_request()
    assert pair.server.export_authenticator(request)
    pair.client.close()
    pair.pump()
    pair.server.close()
    pair.pump()
    _assert_freed(pair)



def _run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 30.0)

    asyncio.run(bounded())


async def _settle() -> None:
    """Let the loop run the callbacks the closes scheduled (connection_lost ...)."""
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.parametrize("who_closes", ["client", "server"])
def test_aio_server_connection_freed_after_close(who_closes: str) -> None:
    c, s, _ = configs()

    async def main() -> None:
        server_side: list[weakref.ref[object]] = []
        done = asyncio.get_running_loop().create_future()

        async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
            # The protocol is not public; the writer's is the one to check.
            server_side.extend([weakref.ref(writer.connection), weakref.ref(writer._protocol)])
            if who_closes == "server":
                writer.write(b"bye")
                writer.close()
            assert await reader.read() == (b"" if who_closes == "server" else b"hello")
            writer.close()
            await writer.wait_closed()
            # What a user reads after close still works.
            assert writer.connection.is_closed and writer.exception is None
            assert writer.get_extra_info("peername") is not None
            assert writer.handshake.cipher_suite is not None
            done.set_result(None)

        server = await aio.start_server(handler, "127.0.0.1", 0, s)
        try:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await aio.connect("127.0.0.1", port, c)
            client_side = [weakref.ref(writer.connection), weakref.ref(writer._protocol)]
            if who_closes == "client":
                writer.write(b"hello")
                await writer.drain()
            else:
                assert await reader.read() == b"bye"
            writer.close()
            await writer.wait_closed()
            await done
            await _settle()
            assert writer.connection.peer_certificates[0] == s.certificate_chain[0]
            del reader, writer
            assert [ref() for ref in server_side + client_side] == [None] * 4
        finally:
            server.close()
            await server.wait_closed()

    _run(main())


def _dtls_link() -> DatagramLink:
    clock = Clock()
    # x25519 alone: the first ClientHello fits one datagram (stateless cookie exchange).
    c, s, _ = configs(client_now=clock, server_now=clock, client_key_share_groups=(NamedGroup.x25519,))
    link = DatagramLink(DTLSConnection(c), s, clock)
    link.handshake()
    return link


def _assert_dtls_freed(link: DatagramLink) -> None:
    assert link.server is not None
    refs = [weakref.ref(link.client), weakref.ref(link.server)]
    assert link.client.connection_ids is not None  # negotiated: its host is part of the check
    refs.append(weakref.ref(link.client.connection_ids))
    link.client = link.server = None  # type: ignore[assignment]
    assert [ref() for ref in refs] == [None] * len(refs)


@pytest.mark.parametrize("ending", ["close", "fatal alert", "extended key update, then close"])
def test_dtls_pair_freed(ending: str) -> None:
    link = _dtls_link()
    assert link.server is not None
    if ending == "fatal alert":
        link.server.abort(AlertDescription.insufficient_security)
        link.run()
        assert _closed(link.client_events).alert == AlertDescription.insufficient_security
    else:
        if ending != "close":
            link.client.extended_key_update()
            link.run(lambda: any(isinstance(e, KeyUpdateCompleted) for e in link.client_events))
        link.client.send(b"hi")
        link.run()
        assert link.received("server") == [b"hi"]
        link.client.close()
        link.run()
        link.server.close()
        link.run()
        assert _closed(link.client_events).alert is None
    assert link.client.is_closed and link.server.is_closed
    _assert_dtls_freed(link)


def _server_connections() -> list[Connection]:
    # No weak reference to take: a failed handshake never reaches the
    # application.  Every live object is in gc.get_objects() (the collector
    # is off, not the tracking); ``type(...) is``: a weak proxy passes isinstance.
    return [o for o in gc.get_objects() if type(o) is Connection and not o.is_client]


@pytest.mark.parametrize("peer", ["sends a malformed ClientHello", "sends nothing (handshake timeout)"])
def test_aio_server_failed_handshake_freed(peer: str) -> None:
    _, s, _ = configs(server_handshake_timeout=0.3)

    async def main() -> None:
        server = await aio.start_server(lambda r, w: None, "127.0.0.1", 0, s)
        try:
            port = server.sockets[0].getsockname()[1]
            assert _server_connections() == []
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if peer.startswith("sends a malformed"):
                # A handshake record whose 5-byte body is no ClientHello: decode_error.
                writer.write(bytes([ContentType.HANDSHAKE, 3, 1, 0, 5]) + b"hello")
            # The server's fatal alert, then its FIN.
            answer = await reader.read()
            assert answer[:1] == bytes([ContentType.ALERT])
            writer.close()
            await writer.wait_closed()
            for _ in range(20):
                if not _server_connections():
                    break
                await asyncio.sleep(0.05)  # the server's side of the close (ALERT_LINGER at most)
            assert _server_connections() == []
        finally:
            server.close()
            await server.wait_closed()

    _run(main())


def test_aio_dtls_associations_freed_after_close() -> None:
    c, s, _ = configs(client_key_share_groups=(NamedGroup.x25519,))

    async def main() -> None:
        refs: list[weakref.ref[object]] = []

        async def echo(association: aio.DTLSAssociation) -> None:
            refs.append(weakref.ref(association.connection))
            async for payload in association:
                association.send(payload)

        async with await aio.serve_dtls(echo, "127.0.0.1", 0, s) as server:
            association = await aio.connect_dtls("127.0.0.1", server.port, c)
            refs.append(weakref.ref(association.connection))
            association.send(b"hi")
            assert await association.receive() == b"hi"
            association.close()
            await association.wait_closed()
            for _ in range(50):
                if not server.associations:
                    break
                await asyncio.sleep(0.02)  # the server's side of the close
            assert not server.associations
            await _settle()
            assert association.peer_certificates[0] == s.certificate_chain[0]
            del association
            assert [ref() for ref in refs] == [None] * 2
            # DTLSAssociation has slots and no weak references: looked for among all objects.
            assert [o for o in gc.get_objects() if type(o) is aio.DTLSAssociation] == []

    _run(main())


# ------------------------------------------------------------------ MLS mode


def _mls_pair(store: dict[bytes, MLSResumptionState] | None = None) -> tuple[MLSConnection, MLSConnection]:
    """An established MLS-mode pair (suite 0x0001, basic credentials); with
    ``store`` the responder answers resumptions from it."""
    initiator = MLSConnection(
        Configuration(is_client=True, verify_peer=False, mls_cipher_suites=(0x0001,), mls_identity=b"client")
    )
    responder = MLSConnection(
        Configuration(is_client=False, mls_cipher_suites=(0x0001,), mls_identity=b"server"),
        resumption_states=None if store is None else store.get,
    )
    initiator.start_handshake()
    mls_pump(initiator, responder)
    assert initiator.handshake_complete and responder.handshake_complete
    return initiator, responder


def _mls_close(a: MLSConnection, b: MLSConnection) -> None:
    a.close()
    mls_pump(a, b)
    b.close()  # its own close_notify: closed once both went (RFC 9846 §6.1)
    mls_pump(a, b)
    assert a.is_closed and b.is_closed


@pytest.mark.parametrize("ending", ["close", "update, then close", "resuming responder, close"])
def test_mls_pair_freed(ending: str) -> None:
    initiator, responder = _mls_pair({} if ending.startswith("resuming") else None)
    if ending.startswith("update"):
        initiator.update_keys()
        mls_pump(initiator, responder)
        assert any(isinstance(e, KeyUpdateCompleted) for e in initiator.events())
    _mls_close(initiator, responder)
    assert responder.peer_credential is not None  # still readable after close
    refs = [weakref.ref(initiator), weakref.ref(responder)]
    del initiator, responder
    assert [ref() for ref in refs] == [None, None]


def test_mls_resumption_states_outlive_their_connections() -> None:
    """A state the application keeps does not keep the connection it came
    from, and it still resumes once that connection is gone."""
    store: dict[bytes, MLSResumptionState] = {}
    initiator, responder = _mls_pair(store)
    _mls_close(initiator, responder)
    mine, theirs = initiator.resumption_state(), responder.resumption_state()
    assert mine is not None and theirs is not None
    store[theirs.group_id] = theirs
    first = weakref.ref(initiator)
    del initiator
    assert first() is None
    resumed = MLSConnection(
        Configuration(is_client=True, verify_peer=False, mls_cipher_suites=(0x0001,), mls_identity=b"client"),
        resume=mine,
    )
    answering = MLSConnection(
        Configuration(is_client=False, mls_cipher_suites=(0x0001,), mls_identity=b"server"),
        resumption_states=store.get,
    )
    resumed.start_handshake()
    mls_pump(resumed, answering)
    assert resumed.handshake_complete and answering.handshake_complete
    assert resumed.epoch == answering.epoch == theirs.epoch + 2
    resumed.send(b"after resumption")
    mls_pump(resumed, answering)
    assert b"".join(e.data for e in answering.events() if isinstance(e, ApplicationData)) == b"after resumption"


