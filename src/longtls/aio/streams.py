"""Reader, writer, ``connect`` and ``start_server``: the asyncio streams API.

``connect`` and ``start_server`` mirror ``asyncio.open_connection`` and
``asyncio.start_server``, except that both return (or call back) only once
the TLS handshake is complete (``writer.handshake`` is its
``HandshakeComplete``).  Both take their stream settings as one
:class:`~longtls.aio.options.StreamOptions`; the handshake timeout is the
Configuration's (``Configuration.handshake_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic

from cryptography import x509

from ..config import Configuration
from ..connection import Connection
from ..constants import AlertDescription
from ..errors import ConfigurationError
from ..events import HandshakeComplete
from .events import DEFAULT_EVENT_BUFFER, EventHandler, EventStream
from .options import StreamOptions
from .protocol import ALERT_LINGER, ConnT, StreamProtocol, TLSProtocol
from .proxy_protocol import accepting_proxy

__all__ = [
    "ClientConnectedCallback",
    "ConfigurationSource",
    "StreamWriter",
    "TLSReader",
    "TLSWriter",
    "connect",
    "start_server",
]

ClientConnectedCallback = Callable[["TLSReader", "TLSWriter"], Awaitable[None] | None]
#: A Configuration, or a function returning the one to use for each new
#: connection (so a server can swap certificates without restarting).
ConfigurationSource = Configuration | Callable[[], Configuration]

_DEFAULT_OPTIONS = StreamOptions()
#: The keyword arguments ``connect`` and ``start_server`` took before
#: StreamOptions (and the Configuration's handshake timeout) replaced them.
_MOVED = {
    "handshake_timeout": "Configuration.handshake_timeout",
    "idle_timeout": "StreamOptions.idle_timeout",
    "close_timeout": "StreamOptions.close_timeout",
    "limit": "StreamOptions.limit",
    "event_handler": "StreamOptions.event_handler",
    "metrics": "StreamOptions.metrics",
}


class TLSReader(asyncio.StreamReader):
    """Decrypted bytes from the peer (``read``, ``readline``, ``readexactly`` ...).

    EOF means the peer sent close_notify.  A failed connection raises its
    error from every read.
    """


class StreamWriter(Generic[ConnT]):
    """The sending half, shaped like ``asyncio.StreamWriter``: what TLS
    (``TLSWriter``) and MLS mode (``aio.mls.MLSWriter``) writers share."""

    def __init__(self, protocol: StreamProtocol[ConnT]) -> None:
        self._protocol = protocol

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._protocol.peername} {self._protocol.connection!r}>"

    @property
    def connection(self) -> ConnT:
        """The sans-I/O connection (exporters, post-handshake auth ...)."""
        return self._protocol.connection

    @property
    def transport(self) -> asyncio.Transport:
        transport = self._protocol.transport
        assert transport is not None
        return transport

    @property
    def handshake(self) -> HandshakeComplete:
        """The HandshakeComplete event: version, suite, group, peer certificates ..."""
        return self._protocol.handshake.result()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    @property
    def bytes_sent(self) -> int:
        """Application bytes written so far (plaintext, not TLS overhead)."""
        return self._protocol.bytes_sent

    @property
    def bytes_received(self) -> int:
        """Application bytes received so far (plaintext, not TLS overhead)."""
        return self._protocol.bytes_received

    @property
    def exception(self) -> BaseException | None:
        """The error that ended the connection (a fatal alert, a truncation,
        an idle timeout, ``abort()``), or None: open, or closed cleanly."""
        return self._protocol.exception

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

    def events(self, maxsize: int = DEFAULT_EVENT_BUFFER) -> EventStream:
        """The connection's events from now on, as an async iterator.

        Every call returns a new, independent stream; each receives every event.
        """
        return self._protocol.subscribe(maxsize)

    def add_event_handler(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` for every later event (like ``StreamOptions.event_handler``)."""
        self._protocol.add_event_handler(handler)

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
        return self._protocol.is_closing()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is gone (never raises the connection's error)."""
        await asyncio.shield(self._protocol.closed)


class TLSWriter(StreamWriter[Connection]):
    """The sending half of a TLS stream, shaped like ``asyncio.StreamWriter``."""

    _protocol: TLSProtocol

    def __init__(self, protocol: TLSProtocol) -> None:
        super().__init__(protocol)

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

    def update_certificate(
        self, chain: Sequence[x509.Certificate] | None = None, private_key: Any = None
    ) -> bool:
        """Hand the peer a renewed certificate on this live connection
        (Certificate Update, draft-rosomakho-tls-cert-update-02).

        ``chain`` (leaf first) and ``private_key`` default to the
        Configuration's current ones: after a renewal, set
        ``configuration.certificate_chain``/``private_key`` (new connections
        use them too) and call this with no argument.  Returns True if the
        CertificateUpdate left now, False if it waits for the peer's next
        request (or for an extended key update to end) and goes by itself; a
        ``CertificateUpdated(direction=sent)`` event says when.  Raises
        LocalProtocolError, naming the rule, if Certificate Update was not
        negotiated (``handshake.certificate_update``) or the certificate
        breaks an identity rule against the one this connection authenticated with.
        """
        return self._protocol.update_certificate(chain, private_key)

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        """The peer's chain now in force: the handshake's, or the last one it
        updated to (``handshake.peer_certificates`` stays the handshake's)."""
        return self.connection.peer_certificates

    @property
    def local_certificates(self) -> tuple[x509.Certificate, ...]:
        """Our chain now in force: the handshake's, or the last one we sent in an update."""
        return self.connection.local_certificates


async def connect(
    host: str,
    port: int,
    configuration: Configuration,
    options: StreamOptions = _DEFAULT_OPTIONS,
    **kwargs: Any,
) -> tuple[TLSReader, TLSWriter]:
    """Open a TCP connection, complete the TLS handshake, return (reader, writer).

    ``kwargs`` go to ``loop.create_connection`` (``local_addr``, ``family`` ...).
    Raises OSError if the TCP connection fails; if the handshake fails, a
    TLSError (a fatal alert, sent or received, or ``HandshakeTimeoutError``
    after ``configuration.handshake_timeout`` seconds) or ConnectionLostError
    (the peer closed the TCP connection).  The timeout covers the handshake
    only; bound the TCP connect with ``asyncio.timeout``.
    ``options.event_handler`` sees every event from the first
    (HandshakeComplete included); ``options.metrics`` counts this connection.
    """
    _check_moved(kwargs, "connect")
    if not configuration.is_client:
        raise ConfigurationError("connect() needs a client configuration (is_client=True)")
    configuration.validate()
    loop = asyncio.get_running_loop()
    reader = TLSReader(limit=options.limit, loop=loop)

    def factory() -> TLSProtocol:
        return TLSProtocol(configuration, options, reader=reader)

    _, protocol = await loop.create_connection(factory, host, port, **kwargs)
    try:
        await protocol.handshake
    except asyncio.CancelledError:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise
    except Exception:
        # Let our fatal alert reach the peer and the transport close (the
        # peer's FIN, or the linger timer) before the caller moves on.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(protocol.closed), ALERT_LINGER + 0.5)
        raise
    return reader, TLSWriter(protocol)


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | None,
    port: int | None,
    configuration: ConfigurationSource,
    options: StreamOptions = _DEFAULT_OPTIONS,
    **kwargs: Any,
) -> asyncio.Server:
    """Listen on host:port; call ``client_connected_cb(reader, writer)`` after each handshake.

    A coroutine callback runs as a task.  Connections whose handshake fails or
    times out (``Configuration.handshake_timeout``) never reach the callback
    (they are logged at INFO on ``longtls.aio``).  ``configuration`` may be a
    function returning the Configuration for each new connection
    (certificate rotation).  ``options.event_handler`` is called with the
    events of every connection; ``options.metrics`` counts them all.
    ``kwargs`` go to ``loop.create_server``.
    """
    _check_moved(kwargs, "start_server")
    get_configuration = configuration if callable(configuration) else lambda: configuration
    first = get_configuration()
    if first.is_client:
        raise ConfigurationError("start_server() needs a server configuration (is_client=False)")
    first.validate()
    loop = asyncio.get_running_loop()

    def factory() -> TLSProtocol:
        reader = TLSReader(limit=options.limit, loop=loop)
        protocol = TLSProtocol(
            get_configuration(), options, reader=reader,
            on_handshake=lambda: client_connected_cb(reader, TLSWriter(protocol)),
        )
        return protocol

    # options.accept_proxy: a PROXY protocol header first (aio/proxy_protocol.py).
    serve = accepting_proxy(factory, options.accept_proxy, options.metrics)
    return await loop.create_server(serve, host, port, **kwargs)


def _check_moved(kwargs: dict[str, Any], function: str) -> None:
    """A clear error for a keyword argument that moved, rather than the event
    loop's "unexpected keyword argument"."""
    for name in kwargs:
        if name in _MOVED:
            raise TypeError(f"{function}() no longer takes {name}=: set {_MOVED[name]} instead")
