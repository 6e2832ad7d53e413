"""The settings of one asyncio TLS stream, shared by ``connect``,
``start_server`` and :class:`~longtls.aio.protocol.TLSProtocol`.

What TLS itself does (suites, certificates, the handshake timeout, key
update policy) is the :class:`~longtls.config.Configuration`'s; what is here
is about the stream: buffers, timeouts of the byte stream, observers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .connections import LiveConnections
from .events import EventHandler

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_LIMIT",
    "StreamOptions",
]

#: ``Configuration.handshake_timeout``'s default.  The handshake timeout is the
#: Configuration's (one timer, the core's); this name stays for callers that
#: used it as a default of their own.
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: How long ``writer.close()`` waits for the peer's close_notify before
#: closing the TCP connection anyway.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: Reader buffer high-water mark, as in asyncio.streams.
DEFAULT_LIMIT = 2**16


@dataclass(frozen=True)
class StreamOptions:
    """How ``connect`` and ``start_server`` run each connection.

    One object for all of a server's connections; ``dataclasses.replace``
    makes a variant.
    """

    #: Close (close_notify, then ``IdleTimeoutError`` on the local reader)
    #: after that many seconds without application data in either direction;
    #: None: never.
    idle_timeout: float | None = None
    #: How long ``writer.close()`` waits for the peer's close_notify.
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    #: The reader's buffer limit (``asyncio.StreamReader``'s ``limit``).
    limit: int = DEFAULT_LIMIT
    #: Called with every event but ApplicationData, from the first
    #: (HandshakeComplete included); on a server, with every connection's.
    event_handler: EventHandler | None = None
    #: A ``longtls.metrics.Metrics`` that counts every connection.
    metrics: Metrics | None = None
    #: A :class:`~longtls.aio.connections.LiveConnections` every connection
    #: joins once its handshake completes and leaves when it ends (to reach
    #: them all, e.g. with a renewed certificate).
    connections: LiveConnections | None = None
    #: A server behind a proxy: expect a PROXY protocol v2 header before TLS,
    #: complete within that many seconds, and take the client address from
    #: it (:mod:`longtls.aio.proxy_protocol`); None: no header.
    accept_proxy: float | None = None
    #: Written on a client connection before the first TLS byte: a PROXY
    #: protocol v2 header (``longtls.wire.proxy_protocol.ProxyHeader.encode()``).
    send_proxy: bytes = b""

