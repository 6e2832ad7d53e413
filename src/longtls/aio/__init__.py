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

Stream settings travel in one :class:`StreamOptions`
(``connect(host, port, configuration, StreamOptions(idle_timeout=300))``):
``idle_timeout`` closes a connection (close_notify, then ``IdleTimeoutError``
on the local reader) after that many seconds without application data in
either direction.  The handshake is bounded by the Configuration's
``handshake_timeout`` (one timer, the core's; ``HandshakeTimeoutError``).

The package:

* ``protocol``: :class:`TLSProtocol`, one per TCP connection, driving a
  ``Connection`` and its timers; closing follows RFC 9846 §6.1 (its
  docstring says how);
* ``streams``: :class:`TLSReader`, :class:`TLSWriter`, ``connect``,
  ``start_server``;
* ``mls``: MLS mode (docs/mls-tls.md): :func:`connect_mls`,
  :func:`start_mls_server`, :class:`MLSWriter` (``update_keys`` is an MLS
  commit), on the same ``StreamProtocol`` machinery;
* ``datagram``: DTLS 1.3 over UDP: :func:`connect_dtls`, :func:`serve_dtls`,
  :class:`DTLSAssociation` (``send``/``receive`` of whole datagrams);
* ``events``: handlers and the :class:`EventStream` async iterator;
* ``connections``: :class:`LiveConnections`, the set of a server's live
  connections (``StreamOptions(connections=...)``), e.g. to hand them all a
  renewed certificate;
* ``options``: :class:`StreamOptions` and the defaults;
* ``errors``: the errors this layer adds.
"""

from __future__ import annotations

from .connections import CertificateRollout, LiveConnection, LiveConnections
from .datagram import (
    DatagramHandler,
    DatagramsEnded,
    DTLSAssociation,
    DTLSServer,
    connect_dtls,
    serve_dtls,
)
from .errors import (
    ConnectionLostError,
    HandshakeTimeoutError,
    IdleTimeoutError,
    KeyUpdateRejectedError,
)
from .events import DEFAULT_EVENT_BUFFER, EventHandler, EventStream
from .mls import MLSConnectedCallback, MLSProtocol, MLSWriter, connect_mls, start_mls_server
from .options import DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, StreamOptions
from .protocol import StreamConnection, StreamProtocol, TLSProtocol, reset_transport
from .streams import (
    ClientConnectedCallback,
    ConfigurationSource,
    StreamWriter,
    TLSReader,
    TLSWriter,
    connect,
    start_server,
)

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_EVENT_BUFFER",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "CertificateRollout",
    "ClientConnectedCallback",
    "ConfigurationSource",
    "ConnectionLostError",
    "DTLSAssociation",
    "DTLSServer",
    "DatagramHandler",
    "DatagramsEnded",
    "EventHandler",
    "EventStream",
    "HandshakeTimeoutError",
    "IdleTimeoutError",
    "KeyUpdateRejectedError",
    "LiveConnection",
    "LiveConnections",
    "MLSConnectedCallback",
    "MLSProtocol",
    "MLSWriter",
    "StreamConnection",
    "StreamOptions",
    "StreamProtocol",
    "StreamWriter",
    "TLSProtocol",
    "TLSReader",
    "TLSWriter",
    "connect",
    "connect_dtls",
    "connect_mls",
    "reset_transport",
    "serve_dtls",
    "start_mls_server",
    "start_server",
]
