"""A UDP tunnel over DTLS 1.3: plain UDP on one side, longtls DTLS on the other.

    # DTLS in, plain UDP out (in front of a UDP service):
    tunnel = UDPTunnel("server", ("0.0.0.0", 4433), ("127.0.0.1", 5683), server_config)
    # plain UDP in, DTLS out (next to the UDP clients):
    tunnel = UDPTunnel("client", ("127.0.0.1", 5683), ("server.example", 4433), client_config)
    await tunnel.start()
    ...
    await tunnel.shutdown()

One datagram is one datagram all the way: a UDP datagram becomes one DTLS
record (RFC 9147 §4.3) and comes out as one UDP datagram.  Like UDP itself,
the tunnel may lose datagrams and never splits them: a datagram larger than
the association's ``max_datagram_payload`` (set by ``mtu``) is dropped and
counted in ``oversized``.

The client side gives each local UDP peer address its own DTLS association
(datagrams that arrive during its handshake wait, up to
``PENDING_DATAGRAMS`` of them); the server side forwards each association to
the target from a UDP socket of its own, so the service sees one address per
tunnel client peer and its answers find their way back.  An association is
closed (close_notify) after ``idle_timeout`` seconds without a datagram
either way (default ``aio.datagram.DEFAULT_SERVER_IDLE_TIMEOUT``): UDP has no
end of its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, Literal, cast

from . import aio
from .aio.datagram import DEFAULT_SERVER_IDLE_TIMEOUT
from .aio.logrecords import failure_fields, log_event
from .config import Configuration
from .connlog import ConnectionLog
from .constants import AlertDescription
from .credentials import catch_up
from .errors import TLSError
from .metrics import Metrics
from .record.dtls_reliability import DEFAULT_MTU

__all__ = ["PENDING_DATAGRAMS", "UDPTunnel"]

logger = logging.getLogger("longtls.tunnel")

Address = tuple[str, int]
Mode = Literal["server", "client"]

#: Datagrams a client-side peer may send before its association's handshake
#: completes; more are dropped (as a full socket buffer would).
PENDING_DATAGRAMS = 64


def _format(address: tuple[Any, ...]) -> str:
    host, port = str(address[0]), int(address[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Socket(asyncio.DatagramProtocol):
    """A UDP socket that hands every datagram to a callback."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's selector datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)  # e.g. the service's port is closed: UDP loses it


class UDPTunnel:
    """UDP datagrams over DTLS, one association per UDP peer (see the module docstring)."""

    def __init__(
        self,
        mode: Mode,
        listen: Address,
        target: Address,
        configuration: Configuration,
        *,
        mtu: int = DEFAULT_MTU,
        idle_timeout: float | None = None,
        metrics: Metrics | None = None,
        require_eku: bool = False,
        max_associations: int = aio.datagram.DEFAULT_MAX_ASSOCIATIONS,
    ) -> None:
        self.mode = mode
        self.listen = listen
        self.target = target
        #: Replaced on reload; new associations use the current one.
        self.configuration = configuration
        self.mtu = mtu
        self.idle_timeout = idle_timeout if idle_timeout is not None else DEFAULT_SERVER_IDLE_TIMEOUT
        #: The DTLS associations with a completed handshake, not yet ended
        #: (to hand them a renewed certificate: longtls.credentials.put_in_use).
        self.connections = aio.LiveConnections()
        self.options = aio.StreamOptions(
            idle_timeout=self.idle_timeout, metrics=metrics, connections=self.connections
        )
        self.require_eku = require_eku
        self.max_associations = max_associations
        #: Datagrams dropped because they did not fit one DTLS record.
        self.oversized = 0
        self._server: aio.DTLSServer | None = None
        self._front: _Socket | None = None  # client mode: the local UDP socket
        self._sessions: dict[tuple[Any, ...], _ClientSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> list[Address]:
        if self._server is not None:
            return [(str(a[0]), int(a[1])) for a in self._server.sockets]
        if self._front is not None and self._front.transport is not None:
            name = self._front.transport.get_extra_info("sockname")
            return [(str(name[0]), int(name[1]))]
        return []

    @property
    def active(self) -> int:
        """Associations open now."""
        if self._server is not None:
            return len(self._server.associations)
        return len(self._sessions)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        eku = self.configuration.extended_key_update
        if self.mode == "server":
            self._server = await aio.serve_dtls(
                self._serve_association, self.listen[0], self.listen[1], lambda: self.configuration,
                mtu=self.mtu, options=self.options, max_associations=self.max_associations,
                extended_key_update=eku,
            )
        else:
            _, self._front = await loop.create_datagram_endpoint(
                lambda: _Socket(self._from_local_peer), local_addr=self.listen
            )

    def hurry(self) -> None:
        """Nothing to hurry: shutdown() does not wait for datagrams (kept for the CLI's second signal)."""

    async def shutdown(self, grace: float = 0.0) -> int:
        """close_notify on every association, then close the sockets.  Returns 0
        (datagrams are not streams: nothing is cut short)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for session in list(self._sessions.values()):
            session.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._front is not None and self._front.transport is not None:
            self._front.transport.close()
        return 0

    def _forward(self, association: aio.DTLSAssociation, payload: bytes) -> None:
        """One datagram into the association; oversized ones are dropped, as UDP would."""
        if len(payload) > association.max_datagram_payload:
            self.oversized += 1
            logger.info(
                "%s: dropped a %d-byte datagram: over the %d bytes one DTLS record carries at MTU %d",
                association.peername, len(payload), association.max_datagram_payload, association.mtu,
            )
            return
        association.send(payload)

    def _eku_refused(self, association: aio.DTLSAssociation, who: str) -> bool:
        if self.require_eku and not association.handshake.extended_key_update:
            problem = f"{who} {association.peername} did not negotiate Extended Key Update (--require-eku)"
            logger.warning("%s: closing", problem)
            association.close_with_alert(AlertDescription.insufficient_security, problem)
            return True
        return False

    # ------------------------------------------------------------ server side

    async def _serve_association(self, association: aio.DTLSAssociation) -> None:
        peer = association.peername
        # connection_open now; key and certificate updates; connection_close at the end.
        ConnectionLog.attach(association, label=f"client {peer}", peer=peer, side="server", transport="dtls")
        catch_up(association, self.configuration)  # a renewal during its handshake
        if self._eku_refused(association, "client"):
            return
        loop = asyncio.get_running_loop()

        def from_service(data: bytes, _: tuple[Any, ...]) -> None:
            if not association.is_closing():
                try:
                    self._forward(association, data)
                except TLSError as exc:
                    logger.info("%s: %s", association.peername, exc)

        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Socket(from_service), remote_addr=self.target
            )
        except OSError as exc:
            logger.warning("cannot reach %s: %s", _format(self.target), exc)
            return
        logger.debug("%s: relaying to %s", association.peername, _format(self.target))
        try:
            async for payload in association:
                transport.sendto(payload)
        except (TLSError, OSError, TimeoutError) as exc:
            # The association's error: its connection_close record says it.
            logger.debug("%s: %s", association.peername, exc)
        finally:
            transport.close()

    # ------------------------------------------------------------ client side

    def _from_local_peer(self, data: bytes, addr: tuple[Any, ...]) -> None:
        session = self._sessions.get(addr)
        if session is None:
            if len(self._sessions) >= self.max_associations:
                logger.warning("%s: dropped: %d associations open (the limit)", _format(addr), len(self._sessions))
                return
            session = _ClientSession(self, addr)
            self._sessions[addr] = session
            task = asyncio.get_running_loop().create_task(session.run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        session.datagram(data)

    def _reply(self, addr: tuple[Any, ...], payload: bytes) -> None:
        front = self._front
        if front is not None and front.transport is not None and not front.transport.is_closing():
            front.transport.sendto(payload, addr)


class _ClientSession:
    """One local UDP peer and its DTLS association to the tunnel server."""

    def __init__(self, tunnel: UDPTunnel, peer: tuple[Any, ...]) -> None:
        self.tunnel = tunnel
        self.peer = peer
        self.association: aio.DTLSAssociation | None = None
        self.pending: collections.deque[bytes] = collections.deque()
        self.closed = False

    def datagram(self, data: bytes) -> None:
        association = self.association
        if association is None:
            if len(self.pending) < PENDING_DATAGRAMS:
                self.pending.append(data)
            return
        try:
            self.tunnel._forward(association, data)
        except TLSError as exc:
            logger.info("%s: %s", _format(self.peer), exc)

    def close(self) -> None:
        self.closed = True
        if self.association is not None:
            self.association.close()

    async def run(self) -> None:
        tunnel = self.tunnel
        host, port = tunnel.target
        try:
            association = await aio.connect_dtls(
                host, port, tunnel.configuration, mtu=tunnel.mtu, options=tunnel.options,
                extended_key_update=tunnel.configuration.extended_key_update,
            )
        except (TLSError, OSError, TimeoutError) as exc:
            # The one line for this failure (aio logs a client's at DEBUG only).
            where = _format(tunnel.target)
            log_event(
                logger, logging.WARNING, "handshake_failed", "%s: DTLS handshake with %s failed: %s",
                _format(self.peer), where, exc, peer=where, plain_peer=_format(self.peer), side="client",
                transport="dtls", **failure_fields(exc, handshake_done=False),
            )
            tunnel._sessions.pop(self.peer, None)
            return
        self.association = association
        where = _format(tunnel.target)
        ConnectionLog.attach(
            association, label=f"the server at {where} for {_format(self.peer)}", peer=where, side="client",
            transport="dtls", fields={"plain_peer": _format(self.peer)},
        )
        catch_up(association, tunnel.configuration)  # our client certificate renewed during the handshake
        try:
            if self.closed or tunnel._eku_refused(association, "the server"):
                association.close()
                return
            logger.debug("%s: relaying over DTLS to %s", _format(self.peer), _format(tunnel.target))
            while self.pending:
                self.datagram(self.pending.popleft())
            async for payload in association:
                tunnel._reply(self.peer, payload)
        except (TLSError, OSError, TimeoutError) as exc:
            # The association's error: its connection_close record says it.
            logger.debug("%s: %s", _format(self.peer), exc)
        finally:
            association.close()
            if tunnel._sessions.get(self.peer) is self:
                del tunnel._sessions[self.peer]
