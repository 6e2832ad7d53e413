"""An application callback that raises closes *that* connection with
internal_error; the server keeps serving everyone else.

A bug in the application's code is not the peer's fault and must not look
like a network failure: the peer is told, with a fatal internal_error alert
(RFC 9846 §6.2: "an internal error unrelated to the peer or the correctness
of the protocol"), rather than left with a TCP reset or a connection that
silently carries on.  Observed from a longtls client as
``ConnectionClosed(alert=internal_error, by_peer=True)`` and
``AlertReceived(internal_error)`` from its reader.

Each test: a server whose callback (``client_connected_cb``, sync or async,
or ``event_handler``) raises for the first connection only; a first client
that must see internal_error; a second client that must be served normally
(echo both ways and a key update).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from helpers.pair import configs
from longtls import aio
from longtls.constants import AlertDescription
from longtls.errors import AlertReceived
from longtls.events import ConnectionClosed, Event, HandshakeComplete, KeyUpdateCompleted

TIMEOUT = 5.0


class Boom(Exception):
    """The application's bug."""


async def echo(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class FirstOnly:
    """Counts connections; ``first`` is True for the first one only."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> bool:
        self.count += 1
        return self.count == 1


async def served_normally(port: int, client_cfg: Any) -> None:
    """The second client: echo, a key update, echo, clean close."""
    events: list[Event] = []
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await aio.connect(
            "127.0.0.1", port, client_cfg, aio.StreamOptions(event_handler=events.append)
        )
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        assert await writer.update_keys() >= 1
        writer.write(b"again")
        assert await reader.readexactly(5) == b"again"
        writer.close()
        await writer.wait_closed()
    closed = [e for e in events if isinstance(e, ConnectionClosed)]
    assert all(e.alert is None for e in closed), closed


async def sees_internal_error(
    port: int, client_cfg: Any, *, update: bool = False
) -> None:
    """The first client: after the handshake (and a key update if asked), the
    server must end the connection with a fatal internal_error alert."""
    events: list[Event] = []
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await aio.connect(
            "127.0.0.1", port, client_cfg, aio.StreamOptions(event_handler=events.append)
        )
        try:
            writer.write(b"ping")
            if update:
                await writer.update_keys()
            with pytest.raises(AlertReceived) as info:
                while await reader.read(65536):
                    pass  # the echo, if the server still answers
                raise AssertionError("the server closed cleanly instead of sending internal_error")
        except (ConnectionError, TimeoutError) as exc:
            raise AssertionError(
                f"expected a fatal internal_error alert from the server, got {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            writer.close()
    assert info.value.alert == AlertDescription.internal_error
    closed = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(closed) == 1, events
    assert closed[0].alert == AlertDescription.internal_error and closed[0].by_peer, closed[0]


def run_server_case(
    make_server: Callable[[Any], Awaitable[asyncio.Server]], *, update: bool = False
) -> None:
    client_cfg, server_cfg, _ = configs()

    async def main() -> None:
        server = await make_server(server_cfg)
        port = server.sockets[0].getsockname()[1]
        try:
            try:
                await sees_internal_error(port, client_cfg, update=update)
            except TimeoutError:
                raise AssertionError(
                    "the connection whose callback raised was neither closed nor answered "
                    f"within {TIMEOUT:g} s"
                ) from None
            await served_normally(port, client_cfg)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_sync_connected_callback_raises() -> None:
    first = FirstOnly()
    tasks: set[asyncio.Task[None]] = set()

    def callback(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        if first.next():
            raise Boom("application bug in client_connected_cb")
        task = asyncio.ensure_future(echo(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    run_server_case(lambda cfg: aio.start_server(callback, "127.0.0.1", 0, cfg))


def test_async_connected_callback_raises_at_once() -> None:
    first = FirstOnly()

    async def callback(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        if first.next():
            raise Boom("application bug in the connection task")
        await echo(reader, writer)

    run_server_case(lambda cfg: aio.start_server(callback, "127.0.0.1", 0, cfg))


def test_async_connected_callback_raises_mid_connection() -> None:
    first = FirstOnly()

    async def callback(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        if first.next():
            await reader.readexactly(4)  # the client's "ping"
            raise Boom("application bug after some traffic")
        await echo(reader, writer)

    run_server_case(lambda cfg: aio.start_server(callback, "127.0.0.1", 0, cfg))


@pytest.mark.parametrize("on", ["HandshakeComplete", "KeyUpdateCompleted"])
def test_server_event_handler_raises(on: str) -> None:
    kind = {"HandshakeComplete": HandshakeComplete, "KeyUpdateCompleted": KeyUpdateCompleted}[on]
    raised = [False]

    def handler(event: Event) -> None:
        if isinstance(event, kind) and not raised[0]:
            raised[0] = True
            raise Boom(f"application bug in event_handler({on})")

    run_server_case(
        lambda cfg: aio.start_server(echo, "127.0.0.1", 0, cfg, aio.StreamOptions(event_handler=handler)),
        update=on == "KeyUpdateCompleted",
    )
    assert raised[0]


def test_client_event_handler_raises() -> None:
    """The same rule on the client side: the server is told internal_error."""
    client_cfg, server_cfg, _ = configs()
    server_events: list[Event] = []

    def boom(event: Event) -> None:
        if isinstance(event, HandshakeComplete):
            raise Boom("application bug in the client's event_handler")

    async def main() -> None:
        server = await aio.start_server(
            echo, "127.0.0.1", 0, server_cfg, aio.StreamOptions(event_handler=server_events.append)
        )
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(TIMEOUT):
                try:
                    _, writer = await aio.connect(
                        "127.0.0.1", port, client_cfg, aio.StreamOptions(event_handler=boom)
                    )
                except Exception:
                    pass  # failing the connect is fine; the alert is what matters
                else:
                    writer.close()
                for _ in range(100):
                    if any(isinstance(e, ConnectionClosed) for e in server_events):
                        break
                    await asyncio.sleep(0.05)
            await served_normally(port, client_cfg)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    closed = [e for e in server_events if isinstance(e, ConnectionClosed)]
    assert closed, "the server never saw the first connection end"
    assert closed[0].alert == AlertDescription.internal_error and closed[0].by_peer, closed[0]
