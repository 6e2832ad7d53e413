"""DTLS 1.3 over asyncio UDP: ``connect_dtls``, ``serve_dtls`` and the association object.

    association = await longtls.aio.connect_dtls("127.0.0.1", 4433, configuration)
    association.send(b"one datagram")
    payload = await association.receive()
    await association.update_keys()
    association.close()
    await association.wait_closed()

Each :class:`DTLSAssociation` drives one sans-I/O
:class:`~longtls.dtls_connection.DTLSConnection`: datagrams from the socket
go to ``receive_datagram``, ``datagrams_to_send()`` goes straight back to
the socket, and every timer of the protocol (retransmission, ACK delay, the
handshake timeout, key update deadlines, the rekey policy) is the
connection's: this module only calls ``handle_timer`` when ``get_timer()``
says so.  One application datagram is one DTLS record (``send`` refuses more
than ``max_datagram_payload`` bytes); ``receive()`` returns the payloads in
order of arrival, each once (the record layer's replay window drops
duplicates, RFC 9147 §4.5.1).

A server (:func:`serve_dtls`) owns one UDP socket and demultiplexes by the
client's address, and by connection ID for a client whose address changed
(NAT rebinding): the association moves to the new address only once it
passed a reachability test (``DTLSServer``, docs/dtls.md "NAT rebinding").
Any other datagram from an address with no association goes to
``DTLSConnection.accept``, which answers a ClientHello without a valid
cookie statelessly (RFC 9147 §5.1): nothing is kept for that address until
the client has proved it receives there.  Associations are dropped when they
close, fail, or stay idle (no application data either way) for the idle
timeout, and their number is capped (``max_associations``): beyond it, new
handshakes are refused (logged), the existing ones go on.

Closing (RFC 9147 §5.10): ``close()`` sends close_notify; the association
ends when the peer's close_notify arrives too, or after
``StreamOptions.close_timeout`` (alerts are not retransmitted: a lost
close_notify must not keep an association for ever).  The peer's
close_notify ends ``receive()`` with :class:`DatagramsEnded` once the queued
payloads are read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509

from ..config import Configuration
from ..constants import AlertDescription, ContentType
from ..dtls_connection import DTLSConnection, PathProbe
from ..errors import AlertReceived, ConfigurationError, TLSError
from ..events import (
    ApplicationData,
    CloseNotifyReceived,
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdateRejected,
)
from ..record.dtls_reliability import DEFAULT_MTU
from .errors import ConnectionLostError, IdleTimeoutError, KeyUpdateRejectedError
from .events import DEFAULT_EVENT_BUFFER, EventDispatcher, EventHandler, EventStream
from .logrecords import failure_fields, log_event
from .options import StreamOptions
from .timer import CoreTimer

if TYPE_CHECKING:
    from ..metrics import ConnectionMetrics

__all__ = [
    "DEFAULT_MAX_ASSOCIATIONS",
    "DEFAULT_MAX_UNPROVEN",
    "DEFAULT_SERVER_IDLE_TIMEOUT",
    "PATH_PROBE_INTERVAL",
    "DTLSAssociation",
    "DTLSServer",
    "DatagramHandler",
    "DatagramsEnded",
    "address_bytes",
    "connect_dtls",
    "serve_dtls",
]

logger = logging.getLogger("longtls.aio")

_DEFAULT_OPTIONS = StreamOptions()
#: How many associations a server keeps at once by default.
DEFAULT_MAX_ASSOCIATIONS = 1024
#: How many associations without a cookie yet (reassembling a first
#: ClientHello too large for one datagram) a server keeps by default.
DEFAULT_MAX_UNPROVEN = 64
#: A server's idle timeout when ``StreamOptions.idle_timeout`` is None.
#: Decision: UDP has no FIN, so a client that vanished without close_notify
#: would keep its association for ever; a server drops an association after
#: this long without application data either way (close_notify first).
DEFAULT_SERVER_IDLE_TIMEOUT = 300.0
#: Received payloads an association queues for ``receive()`` before it drops
#: new ones (as a full socket buffer would; counted in ``datagrams_dropped``).
MAX_QUEUED_DATAGRAMS = 4096

#: The first byte of a DTLSPlaintext handshake record (RFC 9147 §4); a unified
#: header's first byte is 001xxxxx.
_PLAINTEXT_HANDSHAKE = bytes((ContentType.HANDSHAKE,))
#: A unified header with the C bit (RFC 9147 §4: 001CSLEE, C set): the
#: connection ID follows the first byte.
_CID_HEADER_MASK = 0xF0
_CID_HEADER = 0x30
#: Seconds between two reachability tests of new addresses for one
#: association (docs/dtls.md "NAT rebinding"): an unanswered probe is
#: replaced by a new one no sooner, so a stream of datagrams from unproven
#: addresses gets at most one small datagram a second in return.
PATH_PROBE_INTERVAL = 1.0

#: Called once per association after its handshake; a coroutine runs as a task.
DatagramHandler = Callable[["DTLSAssociation"], Awaitable[None] | None]


class DatagramsEnded(EOFError):
    """The peer sent close_notify and every payload before it was received."""


def address_bytes(address: tuple[Any, ...]) -> bytes:
    """A peer address packed as a DTLS cookie binds it: the IP address
    (4 or 16 bytes) then the port (2 bytes, big-endian)."""
    host, port = str(address[0]), int(address[1])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.inet_pton(family, host.split("%")[0]) + port.to_bytes(2, "big")


def _format_address(address: tuple[Any, ...]) -> str:
    host, port = str(address[0]), int(address[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DTLSAssociation:
    """One DTLS 1.3 association over a UDP socket, client or server side.

    Application datagrams: ``send(payload)`` and ``await receive()``; commands:
    ``update_keys()``, ``extended_key_update()``, ``close()``; events:
    ``events()`` / ``add_event_handler()`` (all but ApplicationData);
    ``handshake`` is the ``HandshakeComplete``.  Counters:
    ``datagrams_sent``, ``bytes_sent``, ``datagrams_received``,
    ``bytes_received`` (application payloads, not DTLS overhead).
    """

    __slots__ = (
        "_cids", "_close_timer", "_events", "_handler", "_idle_timeout", "_idle_timer", "_last_activity", "_loop",
        "_metrics", "_on_closed", "_peer_closed", "_probe", "_probe_address", "_probe_at", "_queue",
        "_receive_waiter", "_send", "_task", "_timer",
        "_update_waiters", "bytes_received", "bytes_sent", "closed", "connection",
        "datagrams_dropped", "datagrams_received", "datagrams_sent", "exception", "handshake_future",
        "options", "peer", "peername",
    )

    def __init__(
        self,
        connection: DTLSConnection,
        send: Callable[[bytes], None],
        peer: tuple[Any, ...],
        options: StreamOptions = _DEFAULT_OPTIONS,
        *,
        on_handshake: DatagramHandler | None = None,
        on_closed: Callable[[DTLSAssociation], None] | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.connection = connection
        self.options = options
        self.peer = peer
        self.peername = _format_address(peer)
        self._send = send
        self._handler = on_handshake
        self._on_closed = on_closed
        self.handshake_future: asyncio.Future[HandshakeComplete] = self._loop.create_future()
        self.handshake_future.add_done_callback(_consume_exception)
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.exception: BaseException | None = None
        self._events = EventDispatcher(self._loop, self._application_failed)
        if options.event_handler is not None:
            self._events.add_handler(options.event_handler)
        self._metrics: ConnectionMetrics | None = (
            options.metrics.connection(is_client=connection.is_client) if options.metrics is not None else None
        )
        self._queue: collections.deque[bytes] = collections.deque()
        self._receive_waiter: asyncio.Future[None] | None = None
        self._peer_closed = False
        self._update_waiters: list[asyncio.Future[None]] = []
        self._timer = CoreTimer(self._loop, connection.configuration.now, self._timer_fired, min_retry=0.01)
        self._close_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_timeout = idle_timeout if idle_timeout is not None else options.idle_timeout
        self._last_activity = self._loop.time()
        self._task: asyncio.Task[None] | None = None
        self.datagrams_sent = 0
        self.bytes_sent = 0
        self.datagrams_received = 0
        self.bytes_received = 0
        self.datagrams_dropped = 0
        # A server's NAT rebinding state (DTLSServer): the CIDs it routes to
        # us, and the reachability test of a new address under way.
        self._cids: tuple[bytes, ...] = ()
        self._probe: PathProbe | None = None
        self._probe_address: tuple[Any, ...] | None = None
        self._probe_at = float("-inf")

    def __repr__(self) -> str:
        return f"<DTLSAssociation {self.peername} {self.connection!r}>"

    # ------------------------------------------------------------ the API

    @property
    def handshake(self) -> HandshakeComplete:
        """The HandshakeComplete event: version, suite, group, peer certificates, EKU ..."""
        return self.handshake_future.result()

    @property
    def max_datagram_payload(self) -> int:
        """The largest payload ``send`` takes (one record in one ``mtu``-byte datagram)."""
        return self.connection.max_datagram_payload

    @property
    def mtu(self) -> int:
        """The largest datagram sent; settable (e.g. after a path MTU change,
        RFC 9147 §4.4: retransmissions are cut to the new size)."""
        return self.connection.mtu

    @mtu.setter
    def mtu(self, value: int) -> None:
        self.connection.mtu = value

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one application datagram (one DTLS record).

        Raises LocalProtocolError if it is over ``max_datagram_payload``, and
        the association's error if it failed or was closed.
        """
        if self.exception is not None:
            raise self.exception
        payload = bytes(data)
        self._command(lambda: self.connection.send(payload))
        self.datagrams_sent += 1
        self.bytes_sent += len(payload)
        self._last_activity = self._loop.time()
        if self._metrics is not None:
            self._metrics.sent(len(payload))

    async def receive(self) -> bytes:
        """The next application datagram's payload, in order of arrival.

        Raises :class:`DatagramsEnded` after the peer's close_notify (once
        the payloads before it are read), and the association's error if it
        failed (a fatal alert, a timeout).
        """
        while not self._queue:
            if self.exception is not None:
                raise self.exception
            if self._peer_closed or self.closed.done():
                raise DatagramsEnded("the peer closed the association (close_notify)")
            waiter = self._loop.create_future()
            self._receive_waiter = waiter
            try:
                await waiter
            finally:
                self._receive_waiter = None
        return self._queue.popleft()

    def __aiter__(self) -> DTLSAssociation:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except DatagramsEnded:
            raise StopAsyncIteration from None

    async def update_keys(self, timeout: float | None = None) -> int:
        """Update the traffic keys, awaited until both directions use new keys.

        With Extended Key Update negotiated: one EKU in the negotiated text's
        DTLS flow, returning the new generation (a crossing update of the
        peer's that wins counts, as over TLS).  Otherwise a KeyUpdate with
        update_requested (RFC 9147 §8), awaited until the peer acknowledged
        it (our records then use the new epoch, rfc9147bis §8) and answered
        with its own; returns our send generation.  ``timeout`` bounds the
        peer's answer (None: ``Configuration.rekey_timeout``):
        ``KeyUpdateTimeoutError`` and the association is closed.
        """
        conn = self.connection
        if not self.handshake.extended_key_update:
            self._command(lambda: conn.update_keys(request_peer_update=True, timeout=timeout))
            await self._wait_until(lambda: not conn.key_update_pending and not conn.key_update_answer_owed)
            return conn.send_key_generation
        eku = conn.eku
        assert eku is not None
        # One update at a time (draft-13 §11.3): let one under way complete,
        # so that two calls always mean two updates.
        await self._wait_until(lambda: not eku.in_progress)
        start = conn.key_generation
        self._command(lambda: conn.extended_key_update(timeout))
        await self._wait_until(lambda: conn.key_generation > start and not eku.in_progress)
        return conn.key_generation

    def extended_key_update(self, timeout: float | None = None) -> None:
        """Start an Extended Key Update without waiting for it."""
        self._command(lambda: self.connection.extended_key_update(timeout))

    def send_key_update(self, request_peer_update: bool = True) -> None:
        """Send a standard KeyUpdate now without waiting (DTLSConnection.update_keys)."""
        self._command(lambda: self.connection.update_keys(request_peer_update=request_peer_update))

    def export_keying_material(self, label: str | bytes, context: bytes, length: int) -> bytes:
        return self.connection.export_keying_material(label, context, length)

    def request_client_authentication(self) -> None:
        """Server: ask for a client certificate now (RFC 9846 §4.6.2); a
        ``PeerAuthenticated`` event follows."""
        self._command(self.connection.request_client_authentication)

    def update_certificate(
        self, chain: Sequence[x509.Certificate] | None = None, private_key: Any = None
    ) -> bool:
        """Hand the peer a renewed certificate (Certificate Update), as
        ``TLSWriter.update_certificate``: True if the CertificateUpdate left
        now, False if it waits (for the peer's request, an extended key update,
        or the ACK of a KeyUpdate of ours) and goes by itself."""
        self._command(lambda: self.connection.update_certificate(chain, private_key))
        return not self.connection.certificate_update_pending

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        """The peer's chain now in force (it follows its Certificate Updates)."""
        return self.connection.peer_certificates

    @property
    def local_certificates(self) -> tuple[x509.Certificate, ...]:
        """Our chain now in force (it follows our Certificate Updates)."""
        return self.connection.local_certificates

    def events(self, maxsize: int = DEFAULT_EVENT_BUFFER) -> EventStream:
        """The association's events from now on (all but ApplicationData), as an async iterator."""
        return self._events.subscribe(maxsize, ended=self.closed.done())

    def add_event_handler(self, handler: EventHandler) -> None:
        self._events.add_handler(handler)

    def close(self) -> None:
        """Send close_notify; the association ends on the peer's close_notify,
        or after ``StreamOptions.close_timeout`` seconds."""
        if self.closed.done():
            return
        self._run(self.connection.close)
        if not self.closed.done() and self._close_timer is None:
            self._close_timer = self._loop.call_later(self.options.close_timeout, self._close_timed_out)

    def abort(self) -> None:
        """End now without close_notify (the peer learns of it from its own timeouts)."""
        self._end(ConnectionAbortedError("association aborted"))

    def close_with_alert(self, alert: AlertDescription, reason: str = "closed by the application") -> None:
        """End the association with a fatal ``alert``."""
        with contextlib.suppress(TLSError):
            self._command(lambda: self.connection.abort(alert, reason))

    def is_closing(self) -> bool:
        return self.closed.done() or self.connection.is_closed

    async def wait_closed(self) -> None:
        """Wait until the association is over (never raises its error)."""
        await asyncio.shield(self.closed)

    # ------------------------------------------------------------ I/O side

    def start(self) -> None:
        """Client: send the ClientHello.  (A server's association starts in ``accept``.)"""
        self._run(self.connection.start_handshake)

    def datagram_received(self, data: bytes) -> None:
        self._run(lambda: self.connection.receive_datagram(data))

    def flush_accepted(self) -> None:
        """Server: send what ``accept`` queued, dispatch its events, arm the timers."""
        self._run(lambda: None)

    def _command(self, action: Callable[[], None]) -> None:
        if self.exception is not None:
            raise self.exception
        self._run(action, reraise=True)

    def _run(self, action: Callable[[], None], *, reraise: bool = False) -> None:
        """Run a connection method, send what it queued, dispatch its events, re-arm the timer."""
        conn = self.connection
        was_closed = conn.is_closed
        error: TLSError | None = None
        try:
            action()
        except TLSError as exc:
            error = exc
            if not was_closed and conn.is_closed and self.exception is None:
                self.exception = exc  # wins over the ConnectionClosed event's error
        for datagram in conn.datagrams_to_send():
            self._send(datagram)
        self._dispatch()
        self._arm_timer()
        if error is not None and reraise:
            raise error

    def _dispatch(self) -> None:
        conn = self.connection
        while (event := conn.next_event()) is not None:
            if isinstance(event, ApplicationData):
                data = event.data
                self.datagrams_received += 1
                self.bytes_received += len(data)
                self._last_activity = self._loop.time()
                if self._metrics is not None:
                    self._metrics.received(len(data))
                if len(self._queue) >= MAX_QUEUED_DATAGRAMS:
                    self.datagrams_dropped += 1
                    continue
                self._queue.append(data)
                self._wake_receiver()
                continue
            if self._metrics is not None:
                self._metrics.event(event)
            self._events.publish(event)
            if isinstance(event, HandshakeComplete):
                self._handshake_completed(event)
            elif isinstance(event, CloseNotifyReceived):
                self._peer_closed = True
                self._wake_receiver()
            elif isinstance(event, KeyUpdateRejected):
                self._fail_update_waiters(KeyUpdateRejectedError(event.status, event.retry_after))
            elif isinstance(event, ConnectionClosed):
                self._connection_closed(event)
        # update_keys() waiters check their condition again after every batch.
        if self._update_waiters:
            self._check_update_waiters()

    def _handshake_completed(self, event: HandshakeComplete) -> None:
        if self.handshake_future.done():
            return
        self.handshake_future.set_result(event)
        # No repr of the event (docs/logging.md): the programs above log the
        # connection_open record with its fields.
        logger.debug("%s: DTLS handshake complete", self.peername)
        if self.options.connections is not None:
            self.options.connections.add(self)
        if self._idle_timeout is not None:
            self._last_activity = self._loop.time()
            self._idle_timer = self._loop.call_later(self._idle_timeout, self._idle_check)
        if self._handler is None:
            return
        try:
            result = self._handler(self)
        except Exception:
            logger.exception("%s: association handler failed", self.peername)
            self._loop.call_soon(self._application_failed)
            return
        if asyncio.iscoroutine(result):
            self._task = self._loop.create_task(result)
            self._task.add_done_callback(self._handler_done)

    def _connection_closed(self, event: ConnectionClosed) -> None:
        error: BaseException | None = None
        if event.alert is not None:
            error = (
                AlertReceived(event.alert) if event.by_peer
                else TLSError(event.reason or "association failed", event.alert)
            )
        elif not self.handshake_future.done():
            who = "the peer" if event.by_peer else "we"
            error = ConnectionLostError(f"{who} closed the association during the DTLS handshake")
        self._end(self.exception or error)

    def _end(self, error: BaseException | None, *, quiet: bool = False) -> None:
        """The association is over: wake everyone, stop the timers, tell the owner.

        ``quiet``: no log line for a failed handshake (an eviction under a flood)."""
        if self.closed.done():
            return
        if error is not None and self.exception is None:
            self.exception = error
        exc = self.exception
        # The core may have completed the handshake in the same call that
        # failed (the last flight and a bad record in one datagram): that is
        # a failure after the handshake, not of it (as in aio.protocol).
        if not self.handshake_future.done():
            failure = exc or ConnectionLostError("the association ended during the DTLS handshake")
            if self.connection.handshake_complete:
                logger.debug("%s: association failed: %s", self.peername, failure)
            elif not quiet:
                # A server's failed handshakes reach no caller: logged here.  A
                # client's connect_dtls() raises it to a caller that reports it
                # (DEBUG here: each failure logged once, docs/logging.md).
                is_client = self.connection.is_client
                log_event(
                    logger, logging.DEBUG if is_client else logging.INFO, "handshake_failed",
                    "%s: DTLS handshake failed: %s", self.peername, failure,
                    peer=self.peername, side="client" if is_client else "server", transport="dtls",
                    **failure_fields(failure, handshake_done=False),
                )
            self.handshake_future.set_exception(failure)
            if self._metrics is not None:
                self._metrics.handshake_failed(failure)
        elif exc is not None:
            logger.debug("%s: association failed: %s", self.peername, exc)
        self._timer.release()
        for handle in (self._close_timer, self._idle_timer):
            if handle is not None:
                handle.cancel()
        self._close_timer = self._idle_timer = None
        self._wake_receiver()
        self._fail_update_waiters(exc or ConnectionLostError("the association closed"))
        self._events.end_streams()
        if self.options.connections is not None:
            self.options.connections.discard(self)
        if self._metrics is not None:
            self._metrics.closed()
        self.closed.set_result(None)
        if self._on_closed is not None:
            self._on_closed(self)
        # The association is over: drop what refers back to it (the timer's
        # and the dispatcher's bound methods, a server's send closure, which
        # holds the association): reference cycles that kept it until
        # Python's next full collection (issue 16, docs/benchmarks.md
        # "Freed on close").  Everything was sent; later output goes nowhere.
        self._events.release()
        self._send = _send_nothing
        self._handler = None

    def _close_timed_out(self) -> None:
        self._close_timer = None
        # §5.10: our close_notify (or the peer's) may have been lost; an
        # association that was closed on purpose ends cleanly anyway.
        self._end(None)

    def _arm_timer(self, fired: float | None = None) -> None:
        """Schedule ``handle_timer`` for ``get_timer()`` (on the Configuration's clock)."""
        deadline = None if self.closed.done() else self.connection.get_timer()
        self._timer.arm(deadline, fired)

    def _timer_fired(self, fired: float | None) -> None:
        self._run(self.connection.handle_timer)
        if self.connection.is_closed and not self.closed.done():
            self._end(self.exception)
        self._arm_timer(fired)

    def _idle_check(self) -> None:
        self._idle_timer = None
        idle = self._idle_timeout
        if self.closed.done() or idle is None:
            return
        remaining = self._last_activity + idle - self._loop.time()
        if remaining > 0:
            self._idle_timer = self._loop.call_later(remaining, self._idle_check)
            return
        # DEBUG: receive() raises the IdleTimeoutError, and the programs above
        # log the association's end (reason idle_timeout) once.
        logger.debug("%s: idle for %g seconds: closing", self.peername, idle)
        self._run(self.connection.close)  # close_notify first: a clean end for the peer
        self._end(IdleTimeoutError(f"no data either way for {idle:g} seconds (idle timeout)"))

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            if self.exception is not None:
                raise self.exception
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._update_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._update_waiters:
                    self._update_waiters.remove(waiter)

    def _check_update_waiters(self) -> None:
        waiters, self._update_waiters = self._update_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)  # the waiting loop checks its condition again

    def _fail_update_waiters(self, exc: BaseException) -> None:
        waiters, self._update_waiters = self._update_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def _wake_receiver(self) -> None:
        waiter = self._receive_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._task = None  # finished: not kept (its error's traceback holds this association)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            logger.error("%s: association handler failed", self.peername, exc_info=exc)
            self._application_failed()
        else:
            # Decision: a server association ends with its handler (close_notify),
            # so that a handler that returns leaves no state behind on a UDP server.
            self.close()

    def _application_failed(self) -> None:
        """A callback raised: this association ends with internal_error, the others go on."""
        if self.closed.done() or self.connection.is_closed:
            return
        self._run(lambda: self.connection.abort(AlertDescription.internal_error, "application callback failed"))


# ---------------------------------------------------------------- client


class _ClientProtocol(asyncio.DatagramProtocol):
    """A connected UDP socket carrying one association."""

    def __init__(self) -> None:
        self.association: DTLSAssociation | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's selector datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.association is not None:
            self.association.datagram_received(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable ...) are no proof of anything on UDP;
        # the handshake timeout and the retransmission timer cover a dead peer.
        logger.debug("UDP error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.association is not None:
            self.association._end(exc or ConnectionLostError("the UDP socket was closed"))


async def connect_dtls(
    host: str,
    port: int,
    configuration: Configuration,
    *,
    mtu: int = DEFAULT_MTU,
    options: StreamOptions = _DEFAULT_OPTIONS,
    extended_key_update: bool | None = None,
    **kwargs: Any,
) -> DTLSAssociation:
    """Open a UDP socket to host:port, complete the DTLS 1.3 handshake, return the association.

    ``mtu``: the largest datagram to send (handshake messages are fragmented
    to it; ``send`` takes at most ``max_datagram_payload`` bytes).
    ``extended_key_update``: None offers Extended Key Update as the
    Configuration says; True or False overrides it (as ``DTLSConnection``).
    The handshake timeout is ``configuration.handshake_timeout`` (the
    core's; ``HandshakeTimeoutError``).  ``kwargs`` go to
    ``loop.create_datagram_endpoint`` (``local_addr``, ``family`` ...).
    Raises OSError if the socket cannot be opened, the TLSError that ended
    the handshake otherwise.
    """
    if not configuration.is_client:
        raise ConfigurationError("connect_dtls() needs a client configuration (is_client=True)")
    configuration.validate()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_ClientProtocol, remote_addr=(host, port), **kwargs)
    peer = transport.get_extra_info("peername") or (host, port)
    connection = DTLSConnection(configuration, mtu=mtu, extended_key_update=extended_key_update)

    def on_closed(_: DTLSAssociation) -> None:
        transport.close()

    association = DTLSAssociation(connection, transport.sendto, peer, options, on_closed=on_closed)
    protocol.association = association
    association.start()
    try:
        await association.handshake_future
    except BaseException:
        association.abort()
        raise
    return association


# ---------------------------------------------------------------- server


class DTLSServer:
    """What ``serve_dtls`` returns: one UDP socket and its associations.

    ``close()`` sends close_notify on every association and closes the
    socket; ``wait_closed()`` waits for that.  Usable as ``async with``.

    Associations are found by the client's address, and, for a datagram from
    an address with none, by the connection ID of its first record (RFC 9147
    §9, RFC 9146).  Such a datagram is processed by its association, but the
    association keeps sending to the old address until the new one passed a
    reachability test (RFC 9147 §11, rfc9147bis-02 §11: "MUST NOT update the
    address they send to ... unless they first perform some reachability
    test"): see ``_from_new_address`` and docs/dtls.md "NAT rebinding".
    """

    def __init__(
        self,
        handler: DatagramHandler,
        configuration: Callable[[], Configuration],
        *,
        mtu: int,
        options: StreamOptions,
        max_associations: int,
        max_unproven: int,
        extended_key_update: bool | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._handler = handler
        self._configuration = configuration
        self.mtu = mtu
        self.options = options
        self.max_associations = max_associations
        self.extended_key_update = extended_key_update
        idle = options.idle_timeout
        self.idle_timeout = idle if idle is not None else DEFAULT_SERVER_IDLE_TIMEOUT
        self.transport: asyncio.DatagramTransport | None = None
        #: Associations by the client's address.
        self.associations: dict[tuple[Any, ...], DTLSAssociation] = {}
        #: New handshakes on an address that has an association (a rebooted
        #: client), until they complete (``_promote``).
        self._successors: dict[tuple[Any, ...], DTLSAssociation] = {}
        #: Associations that hold only a first ClientHello's fragments, oldest first.
        self._unproven: dict[tuple[Any, ...], DTLSAssociation] = {}
        self.max_unproven = max_unproven
        #: Unproven associations dropped to make room (see ``_accept``).
        self.evicted = 0
        #: Datagrams answered statelessly (a cookie HelloRetryRequest or an alert).
        self.stateless_replies = 0
        #: New associations refused because ``max_associations`` were open.
        self.refused = 0
        #: Associations by the CIDs they issued (``DTLSConnection.own_connection_ids``),
        #: and how many registered CIDs have each length (the server's CID
        #: length is each association's Configuration.effective_dtls_connection_id_length).
        self._by_cid: dict[bytes, DTLSAssociation] = {}
        self._cid_lengths: collections.Counter[int] = collections.Counter()
        #: Reachability tests sent to new addresses, and associations moved after one passed.
        self.probes_sent = 0
        self.migrations = 0
        self._closed: asyncio.Future[None] = self._loop.create_future()

    def __repr__(self) -> str:
        return f"<DTLSServer {self.sockets} associations={len(self.associations)}>"

    @property
    def sockets(self) -> list[tuple[Any, ...]]:
        """The address the socket is bound to (one entry)."""
        if self.transport is None:
            return []
        return [self.transport.get_extra_info("sockname")]

    @property
    def port(self) -> int:
        return int(self.sockets[0][1])

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        association = self.associations.get(addr)
        if association is None:
            if (
                self._by_cid and data and data[0] & _CID_HEADER_MASK == _CID_HEADER
                and self._from_new_address(data, addr)
            ):
                return
            if not self._closed.done():
                self._accept(data, addr, None)
            return
        if self._unproven and addr in self._unproven:
            association.datagram_received(data)
            if association.connection.write_epoch != 0:  # a ServerHello went out: the cookie was valid
                self._unproven.pop(addr, None)
            return
        successor = self._successors.get(addr)
        if successor is not None:
            # Both see the datagram: each opens only records under its own keys.
            successor.datagram_received(data)
        elif (
            data[:1] == _PLAINTEXT_HANDSHAKE and association.handshake_future.done()
            and not self._closed.done()
        ):
            # RFC 9147 §5.11 (rfc9147bis the same), "Establishing New Associations
            # with Existing Parameters": an epoch-0 ClientHello on an address
            # with an association (a client that rebooted) starts a new
            # handshake; the old association stays until the new one has
            # delivered a verifiable Finished (_promote), so a forged
            # ClientHello cannot destroy it.
            self._accept(data, addr, association)
        association.datagram_received(data)
        if association._probe is not None and association.connection.path_validated(association._probe):
            # The probe's ACK came from the current address: the client is
            # still reachable here, the candidate is not adopted.
            association._probe = association._probe_address = None
        if association.connection.own_connection_ids != association._cids:
            self._register_cids(association)

    # -- connection IDs and NAT rebinding --------------------------------------------

    def _register_cids(self, association: DTLSAssociation) -> None:
        """Route the association's CIDs to it (new ones come from the handshake,
        a NewConnectionId of ours: a probe, an answer to RequestConnectionId)."""
        cids = association.connection.own_connection_ids
        by_cid = self._by_cid
        for cid in cids:
            if cid not in association._cids and by_cid.setdefault(cid, association) is association:
                # setdefault: a CID another association already has (short
                # CIDs may collide) keeps routing to the first one.
                self._cid_lengths[len(cid)] += 1
        association._cids = cids

    def _unregister_cids(self, association: DTLSAssociation) -> None:
        for cid in association._cids:
            if self._by_cid.get(cid) is association:
                del self._by_cid[cid]
                lengths = self._cid_lengths
                lengths[len(cid)] -= 1
                if not lengths[len(cid)]:
                    del lengths[len(cid)]
        association._cids = ()

    def _from_new_address(self, data: bytes, addr: tuple[Any, ...]) -> bool:
        """A datagram whose first record carries a CID, from an address with no
        association: False if the CID is not one of ours.

        Decision (docs/dtls.md "NAT rebinding"): the association processes it
        (its records are authenticated or silently discarded, §4.5.2); if a
        record authenticated and is newer than any received (RFC 9146 §6:
        ``last_datagram_advanced``), a reachability test goes to the new
        address only (``DTLSConnection.probe_path``: a NewConnectionId whose
        ACK must name the probe's own records), at most one per
        ``PATH_PROBE_INTERVAL``.  The association moves once the ACK that
        validates the probe arrives from that address; one arriving from
        elsewhere ends the probe without a move (the client answers from
        another address than the candidate: the candidate is not its new one).
        """
        association = None
        for length in self._cid_lengths:
            association = self._by_cid.get(data[1 : 1 + length])
            if association is not None:
                break
        if association is None:
            return False
        association.datagram_received(data)
        conn = association.connection
        if conn.own_connection_ids != association._cids:
            self._register_cids(association)
        probe = association._probe
        if probe is not None and conn.path_validated(probe):
            if association._probe_address == addr:
                self._move(association, addr)
            association._probe = association._probe_address = None
        elif conn.last_datagram_advanced and association.handshake_future.done():
            self._test_address(association, addr)
        return True

    def _test_address(self, association: DTLSAssociation, addr: tuple[Any, ...]) -> None:
        transport = self.transport
        now = self._loop.time()
        if (
            transport is None or transport.is_closing() or now - association._probe_at < PATH_PROBE_INTERVAL
            or self.associations.get(association.peer) is not association
        ):
            return
        association._probe_at = now
        conn = association.connection
        if association._probe is not None:
            conn.abandon_probe(association._probe)  # unanswered for PATH_PROBE_INTERVAL
            association._probe = association._probe_address = None
        probes: list[PathProbe | None] = []
        association._run(lambda: probes.append(conn.probe_path()))
        probe = probes[0] if probes else None
        if probe is None:
            return
        association._probe = probe
        association._probe_address = addr
        for datagram in probe.datagrams:
            transport.sendto(datagram, addr)
        self.probes_sent += 1
        self._register_cids(association)  # the probe issued a CID
        logger.debug(
            "%s: authenticated datagram from %s: testing that address (NAT rebinding?)",
            association.peername, _format_address(addr),
        )

    def _move(self, association: DTLSAssociation, addr: tuple[Any, ...]) -> None:
        """The probe passed: the association sends to ``addr`` from now on."""
        old = association.peer
        if self.associations.get(addr) not in (None, association) or self.associations.get(old) is not association:
            return  # another association took the address meanwhile, or this one is being replaced
        del self.associations[old]
        self.associations[addr] = association
        association.peer = addr
        association.peername = _format_address(addr)
        self.migrations += 1
        logger.info(
            "%s: DTLS association moved from %s to %s (NAT rebinding, reachability confirmed)",
            association.peername, _format_address(old), association.peername,
        )

    def _accept(self, data: bytes, addr: tuple[Any, ...], predecessor: DTLSAssociation | None) -> None:
        # RFC 9147 §5.1: nothing is kept for this address before a valid cookie.
        conn, replies = DTLSConnection.accept(
            self._configuration(), address_bytes(addr), data, mtu=self.mtu,
            extended_key_update=self.extended_key_update,
        )
        transport = self.transport
        if transport is None:
            return
        for reply in replies:
            transport.sendto(reply, addr)
        self.stateless_replies += bool(replies)
        if conn is None:
            return
        # An association whose connection has not sent a ServerHello (write
        # epoch 0) holds only the fragments of a first ClientHello that did
        # not fit one datagram (DTLSConnection.accept's decision): its client
        # has proved nothing, its address may be forged.  Such associations
        # are capped apart (max_unproven), the oldest evicted first, so a
        # flood of forged first fragments can never crowd out proven ones.
        unproven = conn.write_epoch == 0 and not conn.is_closed
        if predecessor is None and len(self.associations) >= self.max_associations and not self._evict_unproven():
            # Decision: a full server refuses new associations rather than
            # evicting live ones; the client retransmits and may get in once
            # one closes.  Nothing is sent: an alert would cost us more.
            self.refused += 1
            logger.warning(
                "%s: DTLS association refused: %d associations open (the limit)",
                _format_address(addr), len(self.associations),
            )
            return
        if unproven and predecessor is None and len(self._unproven) >= self.max_unproven:
            self._evict_unproven()

        def send(datagram: bytes) -> None:
            if not transport.is_closing():
                # The association's current address: it may move (``_move``).
                transport.sendto(datagram, association.peer)

        association = DTLSAssociation(
            conn, send, addr, self.options,
            on_handshake=self._handler if predecessor is None else self._promote,
            on_closed=self._association_closed, idle_timeout=self.idle_timeout,
        )
        if predecessor is None:
            self.associations[addr] = association
            if unproven:
                self._unproven[addr] = association
        else:
            self._successors[addr] = association
        association.flush_accepted()
        if conn.is_closed:
            association._end(association.exception)

    def _promote(self, association: DTLSAssociation) -> Awaitable[None] | None:
        """A new association's handshake completed on an address that had one:
        the client has proved it is there, the old association is abandoned
        ("MUST abandon the previous association") and the handler runs."""
        addr = association.peer
        self._successors.pop(addr, None)
        old = self.associations.get(addr)
        self.associations[addr] = association
        if old is not None and old is not association:
            logger.info("%s: a new DTLS handshake replaced the association of this address", association.peername)
            old._end(ConnectionLostError("replaced by a new association from the same address"))
        return self._handler(association)

    def _evict_unproven(self) -> bool:
        """Drop the oldest association that holds only a first ClientHello's
        fragments (no cookie yet); False if there is none."""
        if not self._unproven:
            return False
        addr = next(iter(self._unproven))
        association = self._unproven.pop(addr)
        self.evicted += 1
        logger.debug("%s: evicted an unproven DTLS handshake (no cookie yet)", association.peername)
        association._end(ConnectionLostError("evicted: a handshake without a cookie yet"), quiet=True)
        return True

    def _association_closed(self, association: DTLSAssociation) -> None:
        self._unregister_cids(association)
        addr = association.peer
        if self._unproven.get(addr) is association:
            del self._unproven[addr]
        if self.associations.get(addr) is association:
            del self.associations[addr]
        if self._successors.get(addr) is association:
            del self._successors[addr]

    def close(self) -> None:
        """close_notify to every association, then close the socket."""
        if self._closed.done():
            return
        for association in [*self.associations.values(), *self._successors.values()]:
            association.close()
            association._end(None)  # the socket goes now: no waiting for answers
        if self.transport is not None:
            self.transport.close()
        self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def __aenter__(self) -> DTLSServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


class _ServerProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DTLSServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.server.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)  # an ICMP error for some client: nothing to do


async def serve_dtls(
    handler: DatagramHandler,
    host: str | None,
    port: int,
    configuration: Configuration | Callable[[], Configuration],
    *,
    mtu: int = DEFAULT_MTU,
    options: StreamOptions = _DEFAULT_OPTIONS,
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
    max_unproven: int = DEFAULT_MAX_UNPROVEN,
    extended_key_update: bool | None = None,
    **kwargs: Any,
) -> DTLSServer:
    """Listen on UDP host:port; call ``handler(association)`` after each DTLS handshake.

    A coroutine handler runs as a task; when it returns the association is
    closed (close_notify), if it raises the association ends with
    internal_error.  Handshakes that fail or time out never reach the
    handler (logged at INFO on ``longtls.aio``).  ``configuration`` may be a
    function returning the Configuration for each new association.
    ``options.idle_timeout`` drops an association without application data
    for that long (default here: ``DEFAULT_SERVER_IDLE_TIMEOUT``);
    ``max_associations`` caps how many are kept, of which at most
    ``max_unproven`` may hold only the fragments of a first ClientHello too
    large for one datagram (no cookie yet; the oldest is evicted for a new
    one).  ``kwargs`` go to ``loop.create_datagram_endpoint``.
    """
    get_configuration = configuration if callable(configuration) else lambda: configuration
    first = get_configuration()
    if first.is_client:
        raise ConfigurationError("serve_dtls() needs a server configuration (is_client=False)")
    first.validate()
    if max_associations < 1 or max_unproven < 1:
        raise ValueError("max_associations and max_unproven must be at least 1")
    loop = asyncio.get_running_loop()
    server = DTLSServer(
        handler, get_configuration, mtu=mtu, options=options, max_associations=max_associations,
        max_unproven=max_unproven, extended_key_update=extended_key_update,
    )
    await loop.create_datagram_endpoint(lambda: _ServerProtocol(server), local_addr=(host or "0.0.0.0", port), **kwargs)
    return server


def _send_nothing(datagram: bytes) -> None:
    """The ``send`` of an association that ended."""


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
