"""A listener behind a proxy: read the PROXY protocol v2 header before TLS.

``StreamOptions(accept_proxy=5.0)`` makes ``start_server`` (and
``start_mls_server``) expect, on every accepted TCP connection, a PROXY
protocol version 2 header (HAProxy's proxy-protocol.txt §2.2, parsed by
:mod:`longtls.wire.proxy_protocol`) within that many seconds, before the first
TLS byte.  Until it is complete no TLS protocol object exists; then the
transport is handed to one (``transport.set_protocol``) with the bytes that
followed the header, and from there on the connection's ``peername`` extra
info -- what every log line, ``writer.get_extra_info("peername")`` and the
programs above show -- is the client address the header carried.  Also
available: ``get_extra_info("proxy_header")`` (the parsed
:class:`~longtls.wire.proxy_protocol.ProxyHeader`) and
``get_extra_info("transport_peername")`` (the proxy's own address).

A header that is missing (the first bytes are not its signature: a client that
bypassed the proxy), malformed, incomplete when the peer closes, or late,
closes the TCP connection: no TLS alert (TLS has not started), one WARNING line
on ``longtls.aio`` (event ``proxy_header_refused``, fields ``peer``,
``reason``, ``detail``), and ``Metrics.proxy_header_failed(reason)``.

A LOCAL header (§2.2: "the connection was established on purpose by the
proxy", a health check) keeps the socket's addresses.  A health check
usually ends right after the header: a LOCAL connection that ends (or stays
silent past the timeout) before any byte after its header is closed quietly
(a DEBUG line), not counted as a failed handshake; one that goes on to send
TLS (HAProxy ``check-ssl``) gets its handshake as any other.

A PROXY header with UNIX or UNSPEC addresses keeps the socket's peername too
(a UNIX path is no client address to log or to pass on as one); the header
is still there under ``proxy_header``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from ..wire.proxy_protocol import Command, Family, ProxyHeader, ProxyHeaderError, Transport, parse
from .logrecords import log_event

__all__ = [
    "DEFAULT_PROXY_HEADER_TIMEOUT",
    "FailureCounter",
    "ProxiedTransport",
    "ProxyHeaderReceiver",
    "accepting_proxy",
    "header_to_send",
]

logger = logging.getLogger("longtls.aio")

#: How long an accepted connection may take to send its whole PROXY header.
#: A proxy sends it at once, in its first segment (§2.2: "The sender must
#: ensure that all the protocol header is sent at once"), so a few seconds
#: only cover a slow network, not a slow sender.
DEFAULT_PROXY_HEADER_TIMEOUT = 5.0


@runtime_checkable
class FailureCounter(Protocol):
    """Where refused headers are counted: ``longtls.metrics.Metrics``, or any
    object with this method (``StreamOptions.metrics`` without it counts nothing)."""

    def proxy_header_failed(self, reason: str) -> None: ...


def _format(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "?"


def accepting_proxy(
    factory: Callable[[], asyncio.Protocol], timeout: float | None, metrics: object = None
) -> Callable[[], asyncio.Protocol]:
    """``factory`` itself when ``timeout`` is None (no PROXY header expected),
    else a factory of :class:`ProxyHeaderReceiver` that calls ``factory`` once
    a header has arrived (for ``loop.create_server``)."""
    if timeout is None:
        return factory
    counter = metrics if isinstance(metrics, FailureCounter) else None
    return lambda: ProxyHeaderReceiver(factory, timeout, counter)


def header_to_send(get_extra_info: Callable[[str], Any]) -> bytes:
    """The PROXY header to send on the connection onwards (``--send-proxy``)
    for the connection whose ``get_extra_info`` (a transport's, a writer's)
    is given.

    Source and destination are what a PROXY header received on it carried
    (the client's address and the address it connected to, at the proxy in
    front of us), or else the connection's own peer and local addresses;
    LOCAL (§2.2: no address) when neither is an IP address.
    """
    received = get_extra_info("proxy_header")
    if isinstance(received, ProxyHeader) and received.has_addresses:
        # Pass on what the proxy in front said, but not its TLVs: they
        # describe that hop (its TLS, its unique ID), not ours.
        return ProxyHeader(
            Command.PROXY, received.family, received.transport, received.source, received.destination
        ).encode()
    peer, local = get_extra_info("peername"), get_extra_info("sockname")
    if isinstance(peer, tuple) and isinstance(local, tuple) and len(peer) >= 2 and len(local) >= 2:
        try:
            return ProxyHeader.proxy((str(peer[0]), int(peer[1])), (str(local[0]), int(local[1])), Transport.STREAM).encode()
        except ValueError:
            pass  # not IP addresses (a scope ID, a UNIX socket): LOCAL
    return ProxyHeader.local().encode()


class ProxiedTransport(asyncio.Transport):
    """A TCP transport seen through a PROXY header: ``peername`` is the
    client's (when the header has an IP address), everything else the
    socket's."""

    def __init__(self, transport: asyncio.Transport, header: ProxyHeader) -> None:
        super().__init__()
        self._transport = transport
        self._override: dict[str, Any] = {
            "proxy_header": header,
            "transport_peername": transport.get_extra_info("peername"),
        }
        if header.has_addresses and header.source is not None and header.family in (Family.INET, Family.INET6):
            host, port = header.source
            # The socket module's shapes: (host, port) for IPv4, a 4-tuple for IPv6.
            self._override["peername"] = (host, port) if header.family is Family.INET else (host, port, 0, 0)

    def __repr__(self) -> str:
        return f"<ProxiedTransport {_format(self.get_extra_info('peername'))} via {self._transport!r}>"

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._override:
            return self._override[name]
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()


class ProxyHeaderReceiver(asyncio.Protocol):
    """The first protocol of an accepted connection: reads the PROXY header,
    then hands the transport to ``factory()``'s protocol (module docstring)."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], timeout: float, metrics: FailureCounter | None) -> None:
        self._factory = factory
        self._timeout = timeout
        self._metrics = metrics
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = bytearray()
        self._header: ProxyHeader | None = None
        self._peer = "?"
        self._finished = False  # handed over, refused or closed: ignore what follows

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._peer = _format(transport.get_extra_info("peername"))
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return
        self._buffer += data
        if self._header is None:
            try:
                parsed = parse(self._buffer)
            except ProxyHeaderError as exc:
                self._refuse(exc.reason, str(exc))
                return
            if parsed is None:
                return  # the header arrives in pieces: wait for the rest (or the timeout)
            self._header, used = parsed
            del self._buffer[:used]
        if self._header.command is Command.LOCAL and not self._buffer:
            return  # maybe a health check that ends here (module docstring)
        self._hand_over(self._header)

    def eof_received(self) -> bool:
        self._ended("closed the connection")
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended("reset the connection" if exc is not None else "closed the connection")

    def _ended(self, what: str) -> None:
        if self._finished:
            return
        if self._header is not None:  # LOCAL, nothing after it
            self._finish()
            logger.debug("%s: proxy health check (PROXY LOCAL) ended", self._peer)
            return
        self._refuse("closed", f"the peer {what} before a complete PROXY protocol header")

    def _timed_out(self) -> None:
        self._timer = None
        if self._finished:
            return
        if self._header is not None:
            self._finish()
            logger.debug("%s: proxy health check (PROXY LOCAL) idle for %g s: closing", self._peer, self._timeout)
            return
        self._refuse("timeout", f"no complete PROXY protocol header within {self._timeout:g} s")

    def _finish(self) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()

    def _refuse(self, reason: str, message: str) -> None:
        # §2.2: a connection with a missing, partial or invalid header is
        # dropped; TLS has not started, so there is no alert to send.
        self._finish()
        self._buffer.clear()
        # A structured record (docs/logging.md): event proxy_header_refused.
        log_event(
            logger, logging.WARNING, "proxy_header_refused", "%s: %s: closing", self._peer, message,
            peer=self._peer, reason=reason, detail=message,
        )
        if self._metrics is not None:
            self._metrics.proxy_header_failed(reason)

    def _hand_over(self, header: ProxyHeader) -> None:
        assert self._transport is not None
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if header.has_addresses:
            assert header.source is not None and header.destination is not None
            logger.debug(
                "%s: PROXY header: client %s, to %s", self._peer, _format(header.source), _format(header.destination)
            )
        protocol = self._factory()
        self._transport.set_protocol(protocol)
        protocol.connection_made(ProxiedTransport(self._transport, header))
        rest, self._buffer = bytes(self._buffer), bytearray()
        if rest and not self._transport.is_closing():
            protocol.data_received(rest)
