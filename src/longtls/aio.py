"""asyncio streams over the sans-I/O :class:`~longtls.connection.Connection`.

    reader, writer = await longtls.aio.connect("example.com", 443, configuration)
    writer.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
    await writer.drain()
    page = await reader.read()
    writer.close()
    await writer.wait_closed()

``connect`` and ``start_server`` mirror ``asyncio.open_connection`` and
``asyncio.start_server``, except that both return only once the TLS
handshake is complete (``writer.handshake`` is its ``HandshakeComplete``).

Events other than application data (key updates, tickets, close) reach the
application two ways: an ``event_handler`` callback, called synchronously as
they happen, or an async stream that buffers them::

    async for event in writer.events():      # ends after ConnectionClosed
        if isinstance(event, KeyUpdateCompleted):
            print("generation", event.generation, "in", event.seconds, "s")

``handshake_timeout`` bounds the handshake; ``idle_timeout`` closes a
connection (close_notify, then ``IdleTimeoutError`` on the local reader)
after that many seconds without application data in either direction.

One :class:`TLSProtocol` per TCP connection: ``data_received`` feeds
``Connection.receive_data`` and writes ``data_to_send()`` straight back, so
the event loop's own buffers are the only buffering.

Closing follows RFC 9846 §6.1, where close_notify closes one direction:

* the peer's close_notify is EOF on the reader; we may still write;
* ``writer.write_eof()`` sends close_notify and keeps reading;
* ``writer.close()`` does the same and closes the transport once the peer has
  closed its side too, or after ``close_timeout`` seconds;
* a fatal alert (sent or received), a protocol error, a handshake timeout or a
  TCP close without close_notify (truncation) makes ``reader.read()``,
  ``writer.drain()`` and ``writer.write()`` raise that error.  Unread data
  still buffered when the error happens is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .config import Configuration
from .connection import Connection
from .constants import AlertDescription
from .errors import AlertReceived, ConfigurationError, NotTLSError, NotTLSReason, TLSError
from .events import (
    ApplicationData,
    CloseNotifyReceived,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
    KeyUpdateRejected,
)

if TYPE_CHECKING:
    from .metrics import ConnectionMetrics, Metrics

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "ClientConnectedCallback",
    "ConfigurationSource",
    "ConnectionLostError",
    "EventHandler",
    "EventStream",
    "HandshakeTimeoutError",
    "IdleTimeoutError",
    "KeyUpdateRejectedError",
    "TLSProtocol",
    "TLSReader",
    "TLSWriter",
    "connect",
    "start_server",
]

logger = logging.getLogger("longtls.aio")

DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: How long ``writer.close()`` waits for the peer's close_notify before
#: closing the TCP connection anyway.
DEFAULT_CLOSE_TIMEOUT = 5.0
_ALERT_LINGER = 1.0  # seconds to wait for the peer's FIN after our fatal alert
_DEFAULT_LIMIT = 2**16  # reader buffer high-water mark, as in asyncio.streams

#: Called with every event except ApplicationData (which goes to the reader).
EventHandler = Callable[[Event], None]
ClientConnectedCallback = Callable[["TLSReader", "TLSWriter"], Awaitable[None] | None]
#: A Configuration, or a function returning the one to use for each new
#: connection (so a server can swap certificates without restarting).
ConfigurationSource = Configuration | Callable[[], Configuration]
#: Events an ``EventStream`` holds before it drops the oldest (a consumer that
#: stopped reading must not make a long-lived connection grow without bound).
DEFAULT_EVENT_BUFFER = 1024


class ConnectionLostError(ConnectionResetError):
    """The TCP connection ended before the TLS connection did: during the
    handshake, or without close_notify (a possible truncation attack)."""


class HandshakeTimeoutError(TimeoutError):
    """The handshake did not complete within ``handshake_timeout`` seconds."""


class IdleTimeoutError(TimeoutError):
    """No application data either way for ``idle_timeout`` seconds; we sent close_notify."""


class KeyUpdateRejectedError(Exception):
    """draft-05: the peer declined our extended key update.

    ``status`` is "retry" (try again after ``retry_after`` seconds) or "rejected".
    """

    def __init__(self, status: str, retry_after: int) -> None:
        detail = f"; retry after {retry_after} s" if status == "retry" else ""
        super().__init__(f"the peer declined the extended key update ({status}{detail})")
        self.status = status
        self.retry_after = retry_after


class TLSReader(asyncio.StreamReader):
    """Decrypted bytes from the peer (``read``, ``readline``, ``readexactly`` ...).

    EOF means the peer sent close_notify.  A failed connection raises its
    error from every read.
    """


class EventStream:
    """The connection's events (all but ApplicationData), from the moment it
    was created: ``async for event in writer.events(): ...``.

    Iteration ends after ``ConnectionClosed``, or when the TCP connection is
    gone.  If the consumer falls more than ``maxsize`` events behind, the
    oldest are dropped and counted in ``dropped``.  ``close()`` (or leaving a
    ``with`` block) unsubscribes.
    """

    def __init__(self, protocol: TLSProtocol, maxsize: int = DEFAULT_EVENT_BUFFER) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._protocol = protocol
        self._events: collections.deque[Event] = collections.deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self.dropped = 0

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open"
        return f"<EventStream {state} queued={len(self._events)} dropped={self.dropped}>"

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = self._protocol._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()

    async def get(self) -> Event | None:
        """The next event, or None once the stream has ended."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return None

    def close(self) -> None:
        """Stop receiving events (what is queued can still be read)."""
        self._protocol._subscribers.discard(self)
        self._end()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _put(self, event: Event) -> None:
        if self._ended:
            return
        if len(self._events) >= self._maxsize:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class TLSProtocol(asyncio.Protocol):
    """Drives one Connection over one asyncio transport."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        limit: int = _DEFAULT_LIMIT,
        event_handler: EventHandler | None = None,
        client_connected_cb: ClientConnectedCallback | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.connection = Connection(configuration)
        self.reader = TLSReader(limit=limit, loop=self._loop)
        self.writer = TLSWriter(self)
        self.handshake: asyncio.Future[HandshakeComplete] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.exception: Exception | None = None
        self.peername: str = "?"
        self._transport: asyncio.Transport | None = None
        self._handshake_timeout = handshake_timeout
        self._close_timeout = close_timeout
        self._event_handlers: list[EventHandler] = [event_handler] if event_handler else []
        self._subscribers: set[EventStream] = set()
        self._client_connected_cb = client_connected_cb
        self._metrics: ConnectionMetrics | None = (
            metrics.connection(is_client=configuration.is_client) if metrics is not None else None
        )
        self._idle_timeout = idle_timeout
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_activity = self._loop.time()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # handshake timeout, close linger
        self._connection_timer: asyncio.TimerHandle | None = None  # Connection.get_timer()
        self._connection_deadline: float | None = None
        self._peer_closed = False  # the peer's close_notify arrived
        self._close_requested = False  # writer.close() was called
        self._paused = False
        self._drain_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # writer.update_keys() callers, woken by KeyUpdateCompleted
        self._update_waiters: list[asyncio.Future[int]] = []
        # A future nobody awaits must not log "exception was never retrieved".
        self.handshake.add_done_callback(_consume_exception)

    # ------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peername = _format_address(transport.get_extra_info("peername"))
        self.reader.set_transport(transport)
        if self._handshake_timeout is not None:
            self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_timed_out)
        if self.connection.is_client:
            self._run(self.connection.start_handshake)

    def data_received(self, data: bytes) -> None:
        self._run(lambda: self.connection.receive_data(data))

    def eof_received(self) -> bool:
        if self.exception is not None:
            return False
        if not self._peer_closed:
            if self.handshake.done():
                message = "the peer closed the TCP connection without close_notify (truncated)"
            else:
                message = "the peer closed the TCP connection during the TLS handshake"
            self._fail(ConnectionLostError(message))
            return False
        # TLS half-close: we may still write until writer.close().
        return not self._close_requested

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._cancel_connection_timer()
        if self.exception is None:
            if exc is not None and not self.handshake.done():
                lost = ConnectionLostError(f"connection lost during the TLS handshake: {exc}")
                lost.__cause__ = exc
                self._fail(lost)
            elif exc is not None:
                self._fail(exc)
            elif not self.handshake.done():
                self._fail(ConnectionLostError("connection closed during the TLS handshake"))
            elif not self._peer_closed and not self._close_requested:
                self._fail(ConnectionLostError(
                    "the TCP connection closed without close_notify (truncated)"
                ))
        self.reader.feed_eof()  # no-op for a reader that already holds an error
        gone: Exception = self.exception or ConnectionResetError("connection lost")
        self._wake_drain_waiters(gone)
        self._fail_update_waiters(gone)
        self._cancel_idle_timer()
        for stream in list(self._subscribers):
            stream.close()
        if self._metrics is not None:
            self._metrics.closed()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain_waiters(None)

    # ------------------------------------------------- used by the writer

    def send(self, data: bytes) -> None:
        self.command(lambda: self.connection.send(data))
        self._last_activity = self._loop.time()
        if self._metrics is not None:
            self._metrics.sent(len(data))

    def add_event_handler(self, handler: EventHandler) -> None:
        self._event_handlers.append(handler)

    def subscribe(self, maxsize: int) -> EventStream:
        stream = EventStream(self, maxsize)
        if self.closed.done() or self.connection.is_closed:
            stream._end()
        else:
            self._subscribers.add(stream)
        return stream

    def abort(self) -> None:
        """Close the TCP connection now, without close_notify: the peer sees a truncation."""
        self._fail(ConnectionAbortedError("connection aborted"), abort=True)

    def command(self, action: Callable[[], None]) -> None:
        """Run a Connection command (update_keys, extended_key_update ...) and send its output."""
        if self.exception is not None:
            raise self.exception
        self._run(action, reraise=True)

    def write_eof(self) -> None:
        """Send close_notify; reading goes on (RFC 9846 §6.1).

        No TCP FIN: close_notify is the half-close, and the Connection may
        still have to send (an answer to a KeyUpdate already on its way).
        """
        if self.exception is not None:
            return
        self._run(self.connection.close)
        if self.connection.is_closed and self._transport is not None and not self._transport.is_closing():
            self._transport.close()  # both directions are done

    def close(self) -> None:
        if self._close_requested:
            return
        self._close_requested = True
        self.write_eof()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._cancel_timer()
            self._timer = self._loop.call_later(self._close_timeout, transport.close)

    async def drain(self) -> None:
        if self.exception is not None:
            raise self.exception
        if self._transport is not None and self._transport.is_closing():
            # Let connection_lost run first, as asyncio.StreamWriter.drain does.
            await asyncio.sleep(0)
            if self.exception is not None:
                raise self.exception
        if not self._paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)

    # ------------------------------------------------------------ internals

    def _run(self, action: Callable[[], None], *, reraise: bool = False) -> None:
        """Run a Connection method, then send what it queued and dispatch its events.

        An error that closed the Connection (it queued a fatal alert) ends the
        connection; any other (misuse, such as writing after close) is only raised.
        """
        was_closed = self.connection.is_closed
        error: TLSError | None = None
        try:
            action()
        except TLSError as exc:
            error = exc
            if not was_closed and self.connection.is_closed:
                self._fail(exc)  # first, so this error wins over the ConnectionClosed event
        self._flush()
        self._dispatch_events()
        self._arm_connection_timer()
        if error is not None and reraise:
            raise error

    def _flush(self) -> None:
        data = self.connection.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _dispatch_events(self) -> None:
        for event in self.connection.events():
            if isinstance(event, ApplicationData):
                self.reader.feed_data(event.data)
                self._last_activity = self._loop.time()
                if self._metrics is not None:
                    self._metrics.received(len(event.data))
                continue
            if self._metrics is not None:
                self._metrics.event(event)
            for handler in self._event_handlers:
                try:
                    handler(event)
                except Exception:
                    logger.exception("event handler failed on %r", event)
                    # Outside this dispatch loop: end the connection with internal_error.
                    self._loop.call_soon(self._application_failed)
            for stream in list(self._subscribers):
                stream._put(event)
            if isinstance(event, HandshakeComplete):
                self._handshake_completed(event)
            elif isinstance(event, CloseNotifyReceived):
                self._peer_closed = True
                self.reader.feed_eof()
                # The peer sends nothing more: an update of ours it has not
                # answered yet never completes (RFC 9846 §6.1).
                self._fail_update_waiters(ConnectionLostError(
                    "the peer closed its side (close_notify) before the key update completed"
                ))
            elif isinstance(event, KeyUpdateCompleted) or (
                isinstance(event, KeyUpdated) and event.direction == "receive"
            ):
                # An extended key update completed, or the peer's KeyUpdate
                # answered ours (the two never share a connection).
                waiters, self._update_waiters = self._update_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(event.generation)
            elif isinstance(event, KeyUpdateRejected):
                self._fail_update_waiters(KeyUpdateRejectedError(event.status, event.retry_after))
            elif isinstance(event, ConnectionClosed):
                for stream in list(self._subscribers):
                    stream.close()  # ConnectionClosed is the last event
                self._connection_closed(event)

    def _handshake_completed(self, event: HandshakeComplete) -> None:
        self._cancel_timer()
        if self.handshake.done():
            return
        self.handshake.set_result(event)
        logger.debug("%s: handshake complete: %r", self.peername, event)
        if self._idle_timeout is not None:
            self._last_activity = self._loop.time()
            self._idle_timer = self._loop.call_later(self._idle_timeout, self._idle_check)
        if self._client_connected_cb is None:
            return
        try:
            result = self._client_connected_cb(self.reader, self.writer)
        except Exception:
            logger.exception("%s: connection handler failed", self.peername)
            self._application_failed()
            return
        if asyncio.iscoroutine(result):
            self._task = self._loop.create_task(result)
            self._task.add_done_callback(self._callback_done)

    def key_update_waiter(self) -> asyncio.Future[int]:
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._update_waiters.append(waiter)
        return waiter

    def discard_key_update_waiter(self, waiter: asyncio.Future[int]) -> None:
        waiter.cancel()
        if waiter in self._update_waiters:
            self._update_waiters.remove(waiter)

    def _fail_update_waiters(self, exc: BaseException) -> None:
        waiters, self._update_waiters = self._update_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def _connection_closed(self, event: ConnectionClosed) -> None:
        self._fail_update_waiters(ConnectionLostError(f"connection closed: {event.reason or 'closed'}"))
        if event.alert is not None:
            if event.by_peer:
                self._fail(AlertReceived(event.alert))
            else:
                # Our own fatal alert; _run normally recorded the error already.
                self._fail(TLSError(event.reason or "connection failed", event.alert))
            return
        # Clean close: close_notify both ways (or closed before the handshake ended).
        self.reader.feed_eof()
        if not self.handshake.done():
            who = "the peer" if event.by_peer else "we"
            self._fail(ConnectionLostError(f"{who} closed the connection during the TLS handshake"))
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _fail(self, exc: Exception, *, abort: bool = False) -> None:
        """End the connection with ``exc``: flush any alert, wake everyone, close.

        ``abort``: reset the TCP connection instead, sending nothing more.
        """
        if self.exception is not None:
            return
        self.exception = exc
        self._cancel_timer()
        self._cancel_connection_timer()
        self._cancel_idle_timer()
        if not self.handshake.done():
            if isinstance(exc, NotTLSError) and exc.reason is NotTLSReason.HTTP_REQUEST:
                # A common mistake (http:// for https://) deserves its own words.
                logger.warning("plain HTTP request on a TLS port from %s", self.peername)
            else:
                logger.info("%s: TLS handshake failed: %s", self.peername, exc)
            self.handshake.set_exception(exc)
            if self._metrics is not None:
                self._metrics.handshake_failed()
        else:
            logger.debug("%s: connection failed: %s", self.peername, exc)
        if not self._peer_closed:  # after the peer's close_notify, EOF stays EOF
            self.reader.set_exception(exc)
        self._wake_drain_waiters(exc)
        self._fail_update_waiters(exc)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if abort:
            reset_transport(transport)
            return
        self._flush()
        if isinstance(exc, TLSError) and not isinstance(exc, AlertReceived) and transport.can_write_eof():
            # We sent a fatal alert.  Closing now, with the peer's records still
            # unread, would send a RST that may destroy the alert before the peer
            # reads it: half-close, discard input, close on its FIN or soon after.
            transport.write_eof()
            self._timer = self._loop.call_later(_ALERT_LINGER, transport.close)
        else:
            transport.close()

    def _arm_connection_timer(self, fired: float | None = None) -> None:
        """Schedule ``Connection.handle_timer`` for ``Connection.get_timer()``
        (rekey interval, deferred EKU answers).  Both use the configuration's clock."""
        deadline = None if self.exception is not None else self.connection.get_timer()
        if deadline == self._connection_deadline and fired is None:
            return
        if self._connection_timer is not None:
            self._connection_timer.cancel()
            self._connection_timer = None
        self._connection_deadline = deadline
        if deadline is None:
            return
        delay = deadline - self.connection.configuration.now()
        if fired is not None and deadline <= fired:
            delay = max(delay, 0.05)  # the deadline did not move: never spin
        self._connection_timer = self._loop.call_later(max(delay, 0.0), self._connection_timer_fired)

    def _connection_timer_fired(self) -> None:
        self._connection_timer = None
        fired = self._connection_deadline
        self._connection_deadline = None
        self._run(self.connection.handle_timer)
        self._arm_connection_timer(fired)

    def _idle_check(self) -> None:
        """Close after ``idle_timeout`` seconds without application data either way.

        One timer, re-armed for the remaining time, so writes cost no timer churn.
        """
        self._idle_timer = None
        if self.exception is not None or self._idle_timeout is None:
            return
        remaining = self._last_activity + self._idle_timeout - self._loop.time()
        if remaining > 0:
            self._idle_timer = self._loop.call_later(remaining, self._idle_check)
            return
        logger.info("%s: idle for %g seconds: closing", self.peername, self._idle_timeout)
        # close_notify first, so the peer sees a clean close, not a truncation.
        self._run(self.connection.close)
        self._fail(IdleTimeoutError(
            f"no data either way for {self._idle_timeout:g} seconds (idle timeout)"
        ))

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _handshake_timed_out(self) -> None:
        self._timer = None
        self._fail(HandshakeTimeoutError(f"TLS handshake not complete after {self._handshake_timeout:g} seconds"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_connection_timer(self) -> None:
        if self._connection_timer is not None:
            self._connection_timer.cancel()
            self._connection_timer = None
        self._connection_deadline = None

    def _wake_drain_waiters(self, exc: BaseException | None) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    def _callback_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            exc: BaseException | None = None
        else:
            exc = task.exception()
        if exc is not None:
            logger.error("%s: connection handler failed", self.peername, exc_info=exc)
            self._application_failed()

    def _application_failed(self) -> None:
        """An application callback raised: that connection ends with internal_error
        (RFC 9846 §6.2), the others go on."""
        if self.exception is not None or self.connection.is_closed:
            return
        self._run(lambda: self.connection.abort(
            AlertDescription.internal_error, "application callback failed"
        ))


class TLSWriter:
    """The sending half, shaped like ``asyncio.StreamWriter``."""

    def __init__(self, protocol: TLSProtocol) -> None:
        self._protocol = protocol

    def __repr__(self) -> str:
        return f"<TLSWriter {self._protocol.peername} {self._protocol.connection!r}>"

    @property
    def connection(self) -> Connection:
        """The sans-I/O connection (exporters, post-handshake auth ...)."""
        return self._protocol.connection

    @property
    def transport(self) -> asyncio.Transport:
        transport = self._protocol._transport
        assert transport is not None
        return transport

    @property
    def handshake(self) -> HandshakeComplete:
        """The HandshakeComplete event: version, suite, group, peer certificates ..."""
        return self._protocol.handshake.result()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data`` (raises if the connection failed or was closed)."""
        if data:
            self._protocol.send(bytes(data))

    def writelines(self, lines: list[bytes]) -> None:
        self.write(b"".join(lines))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send close_notify; the peer may go on sending until it closes too."""
        self._protocol.write_eof()

    async def update_keys(self, timeout: float | None = None) -> int:
        """Update the traffic keys and return the new generation.

        With Extended Key Update negotiated: a fresh key exchange, awaited until
        both sides use the new keys.  If the peer's own update crosses ours and
        wins (draft-13 §5), this returns once that one completes.  Otherwise a
        standard KeyUpdate (RFC 9846 §4.6.3) that asks the peer to update too.

        A standard KeyUpdate returns (our send generation) once the peer's own
        KeyUpdate came back, so both directions use new keys.

        The peer must answer within ``timeout`` seconds (None: the
        configuration's ``rekey_timeout``, 30 s by default; ``math.inf``: no
        limit), else the connection ends (user_canceled, close_notify) and
        this raises ``KeyUpdateTimeoutError``.

        Raises KeyUpdateRejectedError if a draft-05 peer declines, and the
        connection's error if it fails first.
        """
        if not self.handshake.extended_key_update:
            waiter = self._protocol.key_update_waiter()
            try:
                self._protocol.command(
                    lambda: self.connection.update_keys(request_peer_update=True, timeout=timeout)
                )
            except BaseException:
                self._protocol.discard_key_update_waiter(waiter)
                raise
            generation = self.connection.send_key_generation
            if self.connection.key_update_answer_owed:
                await waiter  # the peer's KeyUpdate (RFC 9846 §4.6.3)
            else:
                self._protocol.discard_key_update_waiter(waiter)
            return generation
        while (eku := self.connection.eku) is not None and eku.in_progress:
            # One update at a time (draft-13 §11.3): let the one under way
            # (the peer's, or ours still finishing) complete, then start ours,
            # so that two calls always mean two updates.
            await self._protocol.key_update_waiter()
        waiter = self._protocol.key_update_waiter()
        try:
            self._protocol.command(lambda: self.connection.extended_key_update(timeout))
        except BaseException:
            self._protocol.discard_key_update_waiter(waiter)
            raise
        return await waiter

    def events(self, maxsize: int = DEFAULT_EVENT_BUFFER) -> EventStream:
        """The connection's events from now on, as an async iterator.

        Every call returns a new, independent stream; each receives every event.
        """
        return self._protocol.subscribe(maxsize)

    def add_event_handler(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` for every later event (like ``event_handler``)."""
        self._protocol.add_event_handler(handler)

    def extended_key_update(self) -> None:
        """Start an Extended Key Update without waiting for it (see ``update_keys``)."""
        self._protocol.command(self.connection.extended_key_update)

    def send_key_update(self, request_peer_update: bool = True, timeout: float | None = None) -> int:
        """Send a standard KeyUpdate now, without waiting for the peer's answer,
        and return our new sending generation (Connection.update_keys).

        For request/response protocols: the peer owes its own KeyUpdate only
        "prior to sending its next Application Data record" (RFC 9846 §4.7.3),
        and some peers (OpenSSL) send it only then, so a server that waited
        for it before answering a request would wait for ever.
        """
        self._protocol.command(
            lambda: self.connection.update_keys(request_peer_update=request_peer_update, timeout=timeout)
        )
        return self.connection.send_key_generation

    def request_client_authentication(self) -> None:
        """Server: ask for a client certificate now (RFC 9846 §4.6.2)."""
        self._protocol.command(self.connection.request_client_authentication)

    def export_keying_material(self, label: str | bytes, context: bytes, length: int) -> bytes:
        return self.connection.export_keying_material(label, context, length)

    async def drain(self) -> None:
        await self._protocol.drain()

    def close(self) -> None:
        """Send close_notify and close the transport once the peer closes too."""
        self._protocol.close()

    def close_with_alert(self, alert: AlertDescription, reason: str = "closed by the application") -> None:
        """End the connection with a fatal ``alert`` (e.g. insufficient_security
        when the peer lacks a feature this side requires)."""
        self._protocol.command(lambda: self.connection.abort(alert, reason))

    def abort(self) -> None:
        """Reset the TCP connection now, without close_notify.

        The peer sees a truncated connection, never a clean end: use it when
        the data stream is incomplete (a relay lost its other side).
        """
        self._protocol.abort()

    def is_closing(self) -> bool:
        transport = self._protocol._transport
        return self._protocol._close_requested or transport is None or transport.is_closing()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is gone (never raises the connection's error)."""
        await asyncio.shield(self._protocol.closed)


async def connect(
    host: str,
    port: int,
    configuration: Configuration,
    *,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: float | None = None,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    limit: int = _DEFAULT_LIMIT,
    event_handler: EventHandler | None = None,
    metrics: Metrics | None = None,
    **kwargs: Any,
) -> tuple[TLSReader, TLSWriter]:
    """Open a TCP connection, complete the TLS handshake, return (reader, writer).

    ``kwargs`` go to ``loop.create_connection`` (``local_addr``, ``family`` ...).
    Raises OSError if the TCP connection fails; if the handshake fails, a
    TLSError (a fatal alert, sent or received), ConnectionLostError (the peer
    closed the TCP connection) or HandshakeTimeoutError.  The timeout
    covers the handshake only; bound the TCP connect with ``asyncio.timeout``.
    ``event_handler`` sees every event from the first (HandshakeComplete
    included); ``metrics`` (a ``longtls.metrics.Metrics``) counts this connection.
    """
    if not configuration.is_client:
        raise ConfigurationError("connect() needs a client configuration (is_client=True)")
    configuration.validate()
    loop = asyncio.get_running_loop()

    def factory() -> TLSProtocol:
        return TLSProtocol(
            configuration, handshake_timeout=handshake_timeout, idle_timeout=idle_timeout,
            close_timeout=close_timeout, limit=limit, event_handler=event_handler, metrics=metrics,
        )

    _, protocol = await loop.create_connection(factory, host, port, **kwargs)
    try:
        await protocol.handshake
    except asyncio.CancelledError:
        if protocol._transport is not None:
            protocol._transport.abort()
        raise
    except Exception:
        # Let our fatal alert reach the peer and the transport close (the
        # peer's FIN, or the linger timer) before the caller moves on.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(protocol.closed), _ALERT_LINGER + 0.5)
        raise
    return protocol.reader, protocol.writer


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | None,
    port: int | None,
    configuration: ConfigurationSource,
    *,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: float | None = None,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    limit: int = _DEFAULT_LIMIT,
    event_handler: EventHandler | None = None,
    metrics: Metrics | None = None,
    **kwargs: Any,
) -> asyncio.Server:
    """Listen on host:port; call ``client_connected_cb(reader, writer)`` after each handshake.

    A coroutine callback runs as a task.  Connections whose handshake fails or
    times out never reach the callback (they are logged at INFO on
    ``longtls.aio``).  ``configuration`` may be a function returning the
    Configuration for each new connection (certificate rotation).
    ``event_handler`` is called with the events of every connection;
    ``metrics`` counts them all.  ``kwargs`` go to ``loop.create_server``.
    """
    get_configuration = configuration if callable(configuration) else lambda: configuration
    first = get_configuration()
    if first.is_client:
        raise ConfigurationError("start_server() needs a server configuration (is_client=False)")
    first.validate()
    loop = asyncio.get_running_loop()

    def factory() -> TLSProtocol:
        return TLSProtocol(
            get_configuration(), handshake_timeout=handshake_timeout, idle_timeout=idle_timeout,
            close_timeout=close_timeout, limit=limit, event_handler=event_handler,
            client_connected_cb=client_connected_cb, metrics=metrics,
        )

    return await loop.create_server(factory, host, port, **kwargs)


def reset_transport(transport: asyncio.Transport) -> None:
    """Close a TCP transport with a RST (SO_LINGER 0), not a FIN.

    A FIN reads as a clean end of stream to a plain TCP peer; a reset tells it
    the stream was cut short.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # not a TCP socket, or already closed: a plain close will do
    transport.abort()


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "?"

