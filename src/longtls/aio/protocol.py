"""One asyncio Protocol per TCP connection, driving one sans-I/O ``Connection``
(``TLSProtocol``) or ``MLSConnection`` (``aio.mls.MLSProtocol``).

Both are a ``StreamProtocol`` over a ``StreamConnection``: the commands and
events the stream machinery needs, which both sans-I/O connections offer.

``data_received`` feeds ``Connection.receive_data`` (``TLSProtocol``:
``receive_data_into``, the records' contents straight into the reader) and
writes ``data_to_send()`` straight back, so the event loop's own buffers
and the reader are the only buffering; the reader pauses the socket
through ``ReaderFlowControl``.  Every timer of the TLS protocol itself (the handshake
timeout, the rekey interval, deferred EKU answers, key update deadlines) is
the Connection's: this class only calls ``handle_timer`` when
``get_timer()`` says so.  The timers it owns are about the byte stream: the
idle timeout and the linger before closing the TCP connection.

Closing follows RFC 9846 §6.1, where close_notify closes one direction:

* the peer's close_notify is EOF on the reader; we may still write;
* ``write_eof()`` sends close_notify and keeps reading;
* ``close()`` does the same and closes the transport once the peer has
  closed its side too, or after ``close_timeout`` seconds;
* a fatal alert (sent or received), a protocol error, a handshake timeout or a
  TCP close without close_notify (truncation) makes ``reader.read()``,
  ``drain()`` and ``send()`` raise that error.  Unread data still buffered
  when the error happens is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from cryptography import x509

from ..config import Configuration
from ..connection import Connection
from ..constants import AlertDescription
from ..errors import AlertReceived, NotTLSError, NotTLSReason, TLSError
from ..events import (
    ApplicationData,
    CloseNotifyReceived,
    ConnectionClosed,
    Direction,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
    KeyUpdateRejected,
)
from .errors import ConnectionLostError, IdleTimeoutError, KeyUpdateRejectedError
from .events import EventDispatcher, EventHandler, EventStream
from .logrecords import failure_fields, log_event
from .options import StreamOptions
from .timer import CoreTimer

if TYPE_CHECKING:
    from ..metrics import ConnectionMetrics

__all__ = ["HandshakeCallback", "StreamConnection", "StreamProtocol", "TLSProtocol", "reset_transport"]

logger = logging.getLogger("longtls.aio")

#: Seconds to wait for the peer's FIN after our fatal alert before closing.
ALERT_LINGER = 1.0
_DEFAULT_OPTIONS = StreamOptions()

#: Called once the handshake is complete (the server's connection handler,
#: bound to its reader and writer).  A coroutine it returns runs as a task;
#: an exception from either ends the connection with internal_error.
HandshakeCallback = Callable[[], Awaitable[None] | None]


class StreamConnection(Protocol):
    """What a ``StreamProtocol`` drives: a sans-I/O connection over a byte
    stream (``connection.Connection``, ``mls_connection.MLSConnection``)."""

    configuration: Configuration
    is_client: bool

    @property
    def is_closed(self) -> bool: ...

    @property
    def handshake_complete(self) -> bool: ...

    def connection_made(self) -> None: ...

    def start_handshake(self) -> None: ...

    def receive_data(self, data: bytes) -> None: ...

    def data_to_send(self) -> bytes: ...

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self, alert: AlertDescription, reason: str = ...) -> None: ...

    def events(self) -> list[Event]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float | None = None) -> None: ...

    def export_keying_material(self, label: str | bytes, context: bytes, length: int) -> bytes: ...


ConnT = TypeVar("ConnT", bound=StreamConnection)


class StreamProtocol(asyncio.Protocol, Generic[ConnT]):
    """Drives one sans-I/O stream connection over one asyncio transport.

    ``reader`` receives the decrypted application data (a fresh
    ``asyncio.StreamReader`` of ``options.limit`` if not given).
    """

    #: The ``transport`` field of this connection's log records (docs/logging.md).
    log_transport = "tls"

    def __init__(
        self,
        connection: ConnT,
        options: StreamOptions = _DEFAULT_OPTIONS,
        *,
        reader: asyncio.StreamReader | None = None,
        on_handshake: HandshakeCallback | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.options = options
        self.connection = connection
        configuration = connection.configuration
        self.reader = reader if reader is not None else asyncio.StreamReader(options.limit, self._loop)
        self.handshake: asyncio.Future[HandshakeComplete] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.exception: Exception | None = None
        self.peername: str = "?"
        #: Application bytes sent and received (plaintext, not TLS overhead).
        self.bytes_sent = 0
        self.bytes_received = 0
        self._transport: asyncio.Transport | None = None
        self._events = EventDispatcher(self._loop, self._application_failed)
        if options.event_handler is not None:
            self._events.add_handler(options.event_handler)
        self._on_handshake = on_handshake
        self._metrics: ConnectionMetrics | None = (
            options.metrics.connection(is_client=configuration.is_client)
            if options.metrics is not None else None
        )
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_activity = self._loop.time()
        self._task: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None  # close and alert linger
        # Connection.get_timer(): handshake timeout, rekey interval, deferred
        # EKU answers, key update deadlines (the configuration's clock).
        self._connection_timer = CoreTimer(
            self._loop, self.connection.configuration.now, self._connection_timer_fired, min_retry=0.05
        )
        self._peer_closed = False  # the peer's close_notify arrived
        self._close_requested = False  # close() was called
        self._paused = False
        self._drain_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # update_keys() callers, woken by KeyUpdateCompleted
        self._update_waiters: list[asyncio.Future[int]] = []
        # A future nobody awaits must not log "exception was never retrieved".
        self.handshake.add_done_callback(_consume_exception)

    @property
    def transport(self) -> asyncio.Transport | None:
        """The TCP transport (None before ``connection_made``)."""
        return self._transport

    # ------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peername = _format_address(transport.get_extra_info("peername"))
        self.reader.set_transport(ReaderFlowControl(transport, self._loop))  # type: ignore[arg-type]
        if self.options.send_proxy:
            # The PROXY protocol header goes first, whole (proxy-protocol.txt §2.2).
            transport.write(self.options.send_proxy)
        # The Connection's handshake timeout runs from now, also for a server
        # whose peer never sends a byte.
        self.connection.connection_made()
        if self.connection.is_client:
            self._run(self.connection.start_handshake)
        else:
            self._arm_connection_timer()

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
        # TLS half-close: we may still write until close().
        return not self._close_requested

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_close_timer()
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
        self._events.end_streams()
        self._leave()
        if self._metrics is not None:
            self._metrics.closed()
        if not self.closed.done():
            self.closed.set_result(None)
        self._release_callbacks()

    def _release_callbacks(self) -> None:
        """The transport is gone: drop what refers back to this protocol.

        The dispatcher and the core timer hold bound methods of this
        protocol, a server's ``on_handshake`` closure holds it: reference
        cycles that kept every closed connection (Connection, buffers,
        reader) until Python's next full collection, a stop of the event
        loop of most of a second at 10,000 connections (issue 16,
        docs/benchmarks.md "Freed on close").  What the application reads
        after close (the connection, the transport's extra info, the
        futures, the counters) stays.
        """
        self._on_handshake = None
        self._events.release()
        self._connection_timer.release()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain_waiters(None)

    # ------------------------------------------------- used by the writer

    def send(self, data: bytes) -> None:
        self.command(lambda: self.connection.send(data))
        self._last_activity = self._loop.time()
        self.bytes_sent += len(data)
        if self._metrics is not None:
            self._metrics.sent(len(data))

    def add_event_handler(self, handler: EventHandler) -> None:
        self._events.add_handler(handler)

    def subscribe(self, maxsize: int) -> EventStream:
        return self._events.subscribe(maxsize, ended=self.closed.done() or self.connection.is_closed)

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
            self._cancel_close_timer()
            self._close_timer = self._loop.call_later(self.options.close_timeout, transport.close)

    def is_closing(self) -> bool:
        """close() was called, or the transport is closing or gone."""
        transport = self._transport
        return self._close_requested or transport is None or transport.is_closing()

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

    def key_update_waiter(self) -> asyncio.Future[int]:
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._update_waiters.append(waiter)
        return waiter

    def discard_key_update_waiter(self, waiter: asyncio.Future[int]) -> None:
        waiter.cancel()
        if waiter in self._update_waiters:
            self._update_waiters.remove(waiter)

    # ------------------------------------------------------------ internals

    def _run(self, action: Callable[[], None], *, reraise: bool = False) -> None:
        """Run a Connection method, then send what it queued and dispatch its events.

        An error that closed the Connection (it queued a fatal alert) ends the
        connection; any other (misuse, such as writing after close) is only raised.
        """
        was_closed = self.connection.is_closed
        try:
            action()
        except TLSError as exc:
            if not was_closed and self.connection.is_closed:
                self._fail(exc)  # first, so this error wins over the ConnectionClosed event
            self._after_run()
            # No local holding ``exc`` after this block: its traceback holds
            # this frame, a cycle that would keep the protocol (issue 16).
            if reraise:
                raise
            return
        self._after_run()

    def _after_run(self) -> None:
        """Send what a Connection method queued, dispatch its events, re-arm its timer."""
        self._flush()
        self._dispatch_events()
        self._arm_connection_timer()

    def _application_data(self, data: bytes | memoryview) -> None:
        """Application data for the reader: from an ApplicationData event, or
        (TLSProtocol) ``Connection.receive_data_into``'s sink, whose memoryview
        is valid only during the call: ``feed_data`` copies it."""
        self.reader.feed_data(data)
        size = len(data)
        self.bytes_received += size
        self._last_activity = self._loop.time()
        if self._metrics is not None:
            self._metrics.received(size)

    def _flush(self) -> None:
        data = self.connection.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _dispatch_events(self) -> None:
        events = self.connection.events()
        if not events:
            return
        for event in events:
            if isinstance(event, ApplicationData):
                self._application_data(event.data)
                continue
            if self._metrics is not None:
                self._metrics.event(event)
            self._events.publish(event)
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
                isinstance(event, KeyUpdated) and event.direction is Direction.receive
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
                self._events.end_streams()  # ConnectionClosed is the last event
                self._connection_closed(event)

    def _handshake_completed(self, event: HandshakeComplete) -> None:
        if self.handshake.done():
            return
        self.handshake.set_result(event)
        # No repr of the event (docs/logging.md): the programs above log the
        # connection_open record with its fields.
        logger.debug("%s: handshake complete", self.peername)
        if self.exception is None:
            self._join()
        idle_timeout = self.options.idle_timeout
        if idle_timeout is not None:
            self._last_activity = self._loop.time()
            self._idle_timer = self._loop.call_later(idle_timeout, self._idle_check)
        if self._on_handshake is None:
            return
        try:
            result = self._on_handshake()
        except Exception:
            logger.exception("%s: connection handler failed", self.peername)
            self._application_failed()
            return
        if asyncio.iscoroutine(result):
            self._task = self._loop.create_task(result)
            self._task.add_done_callback(self._callback_done)

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
        self._leave()
        self._cancel_close_timer()
        self._cancel_connection_timer()
        self._cancel_idle_timer()
        # The core may have completed the handshake in the same receive_data
        # call that failed (the client's Finished and a bad record in one TCP
        # segment): its HandshakeComplete is dispatched after this, so that is
        # a failure after the handshake, not of it.
        completed = self.connection.handshake_complete
        if not self.handshake.done() and not completed:
            if isinstance(exc, NotTLSError) and exc.reason is NotTLSReason.HTTP_REQUEST:
                # A common mistake (http:// for https://) deserves its own words.
                log_event(
                    logger, logging.WARNING, "handshake_failed", "plain HTTP request on a TLS port from %s",
                    self.peername, peer=self.peername, side="server", transport=self.log_transport,
                    **failure_fields(exc, handshake_done=False),
                )
            else:
                # Logged here only for a server: no caller ever sees its failed
                # handshakes.  A client's connect() raises the error to a caller
                # that reports it (the tunnel client, longtls connect), so here
                # it is DEBUG: each failure logged once (docs/logging.md).
                level = logging.DEBUG if self.connection.is_client else logging.INFO
                log_event(
                    logger, level, "handshake_failed", "%s: TLS handshake failed: %s", self.peername, exc,
                    peer=self.peername, side="client" if self.connection.is_client else "server",
                    transport=self.log_transport,
                    **failure_fields(exc, handshake_done=False),
                )
            if not self.connection.is_client:
                # No application ever sees a server's failed handshake (it is
                # logged above, and the original error of an internal one
                # with its traceback, connection_core.run_guarded).  Its
                # traceback would hold this protocol's frames (_run), a
                # cycle through self.exception and the future (which keeps
                # the traceback too): the connection waits for the cyclic
                # collector (issue 16, freed on close).  A client's error is
                # its caller's (connect() raises it) and keeps its traceback.
                exc.__traceback__ = None
            self.handshake.set_exception(exc)
            if self._metrics is not None:
                self._metrics.handshake_failed(exc)
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
            self._close_timer = self._loop.call_later(ALERT_LINGER, transport.close)
        else:
            transport.close()

    def _arm_connection_timer(self, fired: float | None = None) -> None:
        """Schedule ``Connection.handle_timer`` for ``Connection.get_timer()``."""
        deadline = None if self.exception is not None else self.connection.get_timer()
        self._connection_timer.arm(deadline, fired)

    def _connection_timer_fired(self, fired: float | None) -> None:
        self._run(self.connection.handle_timer)
        self._arm_connection_timer(fired)

    def _idle_check(self) -> None:
        """Close after ``idle_timeout`` seconds without application data either way.

        One timer, re-armed for the remaining time, so writes cost no timer churn.
        """
        self._idle_timer = None
        idle_timeout = self.options.idle_timeout
        if self.exception is not None or idle_timeout is None:
            return
        remaining = self._last_activity + idle_timeout - self._loop.time()
        if remaining > 0:
            self._idle_timer = self._loop.call_later(remaining, self._idle_check)
            return
        # DEBUG: the reader gets the IdleTimeoutError, and the programs above
        # log the connection's end (reason idle_timeout) once.
        logger.debug("%s: idle for %g seconds: closing", self.peername, idle_timeout)
        # close_notify first, so the peer sees a clean close, not a truncation.
        self._run(self.connection.close)
        self._fail(IdleTimeoutError(
            f"no data either way for {idle_timeout:g} seconds (idle timeout)"
        ))

    def _join(self) -> None:
        """The handshake is complete: join ``options.connections`` (TLSProtocol)."""

    def _leave(self) -> None:
        """Leave ``options.connections``: the connection failed or is gone."""

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _cancel_close_timer(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _cancel_connection_timer(self) -> None:
        self._connection_timer.cancel()
        self._connection_timer.deadline = None

    def _wake_drain_waiters(self, exc: BaseException | None) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    def _callback_done(self, task: asyncio.Task[None]) -> None:
        # Kept only so the running task is not collected (asyncio keeps weak
        # references to tasks); a finished one, and its error's traceback
        # (which holds the handler's frames, with this protocol in them),
        # need not be kept (issue 16, freed on close).
        self._task = None
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


class TLSProtocol(StreamProtocol[Connection]):
    """Drives one TLS ``Connection`` over one asyncio transport."""

    def data_received(self, data: bytes) -> None:
        # The records' contents are decrypted into this thread's scratch
        # buffer and copied into the reader a run at a time
        # (Connection.receive_data_into), not one ApplicationData event per
        # record: issue 16, docs/benchmarks.md "asyncio throughput".
        scratch = _scratch()
        self._run(lambda: self.connection.receive_data_into(data, scratch, self._application_data))

    def _flush(self) -> None:
        # The Connection's buffer itself goes to the transport, which sends
        # it or keeps what the socket did not take: no copy into bytes first
        # (issue 16: one copy less of every byte written).
        data = self.connection.take_data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def __init__(
        self,
        configuration: Configuration,
        options: StreamOptions = _DEFAULT_OPTIONS,
        *,
        reader: asyncio.StreamReader | None = None,
        on_handshake: HandshakeCallback | None = None,
    ) -> None:
        super().__init__(Connection(configuration), options, reader=reader, on_handshake=on_handshake)

    def update_certificate(
        self, chain: Sequence[x509.Certificate] | None = None, private_key: Any = None
    ) -> bool:
        """Certificate Update (``Connection.update_certificate``): True if the
        CertificateUpdate left now, False if it waits for the peer's request."""
        self.command(lambda: self.connection.update_certificate(chain, private_key))
        return not self.connection.certificate_update_pending

    def _join(self) -> None:
        if self.options.connections is not None:
            self.options.connections.add(self)

    def _leave(self) -> None:
        if self.options.connections is not None:
            self.options.connections.discard(self)


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


class ReaderFlowControl:
    """What the reader sees as its transport: its ``pause_reading`` only
    pauses the socket if the application has not read below the reader's
    limit by the time the callbacks already scheduled have run.

    ``asyncio.StreamReader.feed_data`` asks to pause as soon as it holds more
    than twice its limit (128 KiB by default), which one receive of
    application data always passes (asyncio reads up to 256 KiB at a time):
    paused and resumed at every receive, two ``epoll_ctl`` calls and two
    event loop turns each time, while the application reads it all on the
    next turn anyway.  Deferring the decision to after the reading task has
    run (it was woken first) keeps the bound asyncio's own SSL transport has
    (sslproto: the application's pause only stops deliveries, the socket
    pauses once its buffer fills): at most one receive past the limit.
    """

    __slots__ = ("_transport", "_loop", "_wanted", "_paused")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._wanted = False  # the reader asked to pause
        self._paused = False  # the socket is paused

    def pause_reading(self) -> None:
        if not self._wanted:
            self._wanted = True
            self._loop.call_soon(self._pause_if_still_wanted)

    def resume_reading(self) -> None:
        self._wanted = False
        if self._paused:
            self._paused = False
            self._transport.resume_reading()

    def _pause_if_still_wanted(self) -> None:
        if self._wanted and not self._paused and not self._transport.is_closing():
            self._paused = True
            self._transport.pause_reading()


def _scratch() -> bytearray:
    """This thread's buffer for ``Connection.receive_data_into``.

    One per thread, not per connection (10,000 idle connections hold none):
    an event loop runs in one thread, and it hands one receive to one
    protocol at a time, which copies the contents out before it returns.
    """
    try:
        buffer: bytearray = _thread_scratch.buffer
    except AttributeError:
        buffer = _thread_scratch.buffer = bytearray(SCRATCH_SIZE)
    return buffer


#: ``_scratch()``'s size: 32 KiB, so a run of full records (16 KiB of
#: content each) reaches the reader about a record at a time and smaller
#: records several at a time.  Small on purpose: what was just decrypted is
#: still in the CPU's nearest caches when the reader copies it.  Measured
#: (docs/benchmarks.md "asyncio throughput"): the aio bench server spent ~8%
#: less CPU per MiB than with 256 KiB (one receive in one piece), although
#: it calls the reader's ``feed_data`` 16 times per receive instead of 1-2.
SCRATCH_SIZE = 32 * 1024
_thread_scratch = threading.local()


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "?"
