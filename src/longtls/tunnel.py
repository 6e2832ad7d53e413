"""A TLS tunnel: plain TCP on one side, longtls on the other.

    # TLS in, plain TCP out (in front of a service):
    tunnel = Tunnel("server", ("0.0.0.0", 8443), ("127.0.0.1", 8000), server_config)
    # plain TCP in, TLS out (next to a client):
    tunnel = Tunnel("client", ("127.0.0.1", 8000), ("server.example", 8443), client_config)
    # MLS-TLS instead of TLS on the secure side (docs/mls-tls.md, "Using MLS mode"):
    tunnel = Tunnel("server", ("0.0.0.0", 8443), ("127.0.0.1", 8000), server_config, mls=True)
    await tunnel.start()
    ...
    await tunnel.shutdown(grace=30)

Each accepted connection gets one connection on the other side, and two
pumps copy bytes between them, one per direction, in order, with
back-pressure (a pump waits for ``drain()`` before it reads more).

Endings travel across:

- a clean end of one direction goes through as a clean end: a TCP FIN
  becomes close_notify and close_notify becomes a FIN, and the other
  direction keeps flowing (half-close);
- an unclean end (a reset, a TLS error, a truncated TLS connection) becomes
  an unclean end: the other side is reset (plain TCP: RST; TLS: no
  close_notify, which the peer reports as truncation), so a cut-short stream
  never reaches an application as a complete one.

With ``mls=True`` the secure side is MLS-TLS (``aio.connect_mls`` /
``aio.start_mls_server``): the same relay, endings and metrics; key updates
(the Configuration's rekey policy) are MLS commits, each an epoch change
counted and logged as an extended key update is.  MLS has no Certificate
Update: a renewed certificate reaches new connections only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Literal

from . import aio
from .aio.logrecords import failure_fields, log_event
from .aio.proxy_protocol import header_to_send
from .config import Configuration
from .connlog import ConnectionLog
from .credentials import catch_up
from .errors import TLSError
from .metrics import Metrics

__all__ = ["Address", "Tunnel", "splice"]

logger = logging.getLogger("longtls.tunnel")

Address = tuple[str, int]
Mode = Literal["server", "client"]
#: The secure side's writer: TLS, or MLS-TLS (``Tunnel(mls=True)``).
SecureWriter = aio.TLSWriter | aio.MLSWriter

_CHUNK = 65536
_CLOSE_WAIT = 5.0  # seconds to wait for both transports to close after a clean end
#: Of a shutdown's grace period, the part kept for what follows the drain: the
#: reset of what is left and the process exit (the interpreter's own teardown
#: takes a few tenths of a second).  Without it, --grace 2 ended after 2.3 to
#: 3.8 s on a busy machine; --grace is a promise to a supervisor.
_EXIT_RESERVE = 0.5
_MIN_RESET_WAIT = 0.05  # at least this long for the reset connections' tasks to end
DEFAULT_CONNECT_TIMEOUT = 10.0


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(writer: asyncio.StreamWriter | SecureWriter) -> str:
    name = writer.get_extra_info("peername")
    return format_address((str(name[0]), int(name[1]))) if name else "?"


def _reset_plain(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if isinstance(transport, asyncio.Transport) and not transport.is_closing():
        aio.reset_transport(transport)


async def _pump(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter | SecureWriter
) -> int:
    """Copy until a clean end of ``src``, then end ``dst`` cleanly (half-close)."""
    total = 0
    while data := await src.read(_CHUNK):
        dst.write(data)
        await dst.drain()  # back-pressure: read no more until the other side takes it
        total += len(data)
    if not dst.is_closing():
        dst.write_eof()
    return total


async def splice(
    tls_reader: aio.TLSReader,
    tls_writer: SecureWriter,
    plain_reader: asyncio.StreamReader,
    plain_writer: asyncio.StreamWriter,
) -> tuple[int, int]:
    """Relay both ways until both directions have ended; return (plain->TLS, TLS->plain) bytes.

    Raises the first error (after resetting both sides); a cancellation
    resets both sides too.
    """
    up = asyncio.create_task(_pump(plain_reader, tls_writer))
    down = asyncio.create_task(_pump(tls_reader, plain_writer))
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
        for task in (up, down):
            error = task.exception() if task in done else None
            if error is not None:
                raise error
    except BaseException as exc:
        for task in (up, down):
            task.cancel()
        if isinstance(exc, aio.IdleTimeoutError):
            # Not a loss: nothing was in flight, and the TLS peer got close_notify.
            plain_writer.close()
        else:
            tls_writer.abort()
            _reset_plain(plain_writer)
        raise
    tls_writer.close()
    plain_writer.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(tls_writer.wait_closed(), plain_writer.wait_closed(), return_exceptions=True),
            _CLOSE_WAIT,
        )
    return up.result(), down.result()


def describe(exc: BaseException) -> str:
    """One line for a log: what ended a tunnelled connection."""
    if isinstance(exc, TLSError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        # asyncio's strerror is "Connect call failed (...)"; the OS says why.
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


class Tunnel:
    """One listening tunnel and the connections it relays.

    ``configuration`` is read for each new connection, so assigning a new
    one (certificate reload) affects only later connections; ``connections``
    holds the live TLS connections, to hand them a renewed certificate
    (``longtls.credentials.put_in_use``).  ``mls``: the secure side speaks
    MLS-TLS (its connections never join ``connections``: MLS has no
    Certificate Update).
    """

    def __init__(
        self,
        mode: Mode,
        listen: Address,
        target: Address,
        configuration: Configuration,
        *,
        idle_timeout: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        metrics: Metrics | None = None,
        require_eku: bool = False,
        mls: bool = False,
        reuse_port: bool = False,
        accept_proxy: float | None = None,
        send_proxy: bool = False,
    ) -> None:
        if configuration.is_client != (mode == "client"):
            raise ValueError(f"a tunnel {mode} needs a {'client' if mode == 'client' else 'server'} configuration")
        if mls and require_eku:
            raise ValueError("require_eku does not apply to an MLS-TLS tunnel")
        self.mode = mode
        self.listen = listen
        self.target = target
        self.configuration = configuration
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.metrics = metrics
        self.require_eku = require_eku
        self.mls = mls
        #: Listen with SO_REUSEPORT: several processes share the port and the
        #: kernel spreads new connections over them (``--workers``, docs/scaling.md).
        self.reuse_port = reuse_port
        #: PROXY protocol v2 (docs/proxy-protocol.md): a tunnel server expects
        #: a header within this many seconds before TLS (None: none);
        #: ``send_proxy``: write one first to the connection onwards.
        self.accept_proxy = accept_proxy if mode == "server" else None
        self.send_proxy = send_proxy
        #: The TLS connections with a completed handshake, not yet ended.
        self.connections = aio.LiveConnections()
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._cut = False  # the grace period is over: refuse connections still arriving
        self._hurry = asyncio.Event()  # a second stop request: skip the rest of the grace period

    def __repr__(self) -> str:
        return (
            f"<Tunnel {self.mode}{' MLS-TLS' if self.mls else ''} {format_address(self.listen)} -> {format_address(self.target)} "
            f"sessions={len(self._sessions)}>"
        )

    @property
    def sockets(self) -> list[Address]:
        """The addresses actually listened on (port 0 resolved)."""
        if self._server is None:
            return []
        return [s.getsockname()[:2] for s in self._server.sockets]

    @property
    def active(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        """Listen; raises OSError (port in use ...) or ConfigurationError."""
        host, port = self.listen
        reuse_port = self.reuse_port or None  # None: the event loop's default
        if self.mode == "server" and self.mls:
            self._server = await aio.start_mls_server(
                self._on_tls_client, host, port, lambda: self.configuration, self._stream_options(),
                reuse_port=reuse_port,
            )
        elif self.mode == "server":
            self._server = await aio.start_server(
                self._on_tls_client, host, port, lambda: self.configuration, self._stream_options(),
                reuse_port=reuse_port,
            )
        else:
            self.configuration.validate()
            self._server = await asyncio.start_server(self._on_plain_client, host, port, reuse_port=reuse_port)

    def stop_accepting(self) -> None:
        """Close the listening socket now: new connections are refused from here on."""
        if self._server is not None:
            self._server.close()

    async def shutdown(self, grace: float) -> int:
        """Stop accepting, give open connections ``grace`` seconds to end, then reset
        the rest.  Returns how many had to be reset."""
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        drain_until = deadline - min(_EXIT_RESERVE, grace / 4)
        # Connections still handshaking may become sessions meanwhile: loop.
        while self._sessions and not self._hurry.is_set() and (remaining := drain_until - loop.time()) > 0:
            hurry = asyncio.ensure_future(self._hurry.wait())
            try:
                await asyncio.wait(
                    {*self._sessions, hurry}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                hurry.cancel()
        self._cut = True
        left = list(self._sessions)
        for task in left:
            task.cancel()
        if left:
            # A reset needs no answer from the peer: the rest of the grace period is plenty.
            await asyncio.wait(left, timeout=max(deadline - loop.time(), _MIN_RESET_WAIT))
        return len(left)

    def hurry(self) -> None:
        """End a running ``shutdown`` grace period now."""
        self._hurry.set()

    def _stream_options(self) -> aio.StreamOptions:
        """The settings of each TLS connection (read per connection, like the configuration)."""
        # Key and certificate updates are logged per connection (connlog).
        return aio.StreamOptions(
            idle_timeout=self.idle_timeout, metrics=self.metrics, connections=self.connections,
            accept_proxy=self.accept_proxy,
        )

    # -- sessions -----------------------------------------------------------------------

    def _track(self) -> Callable[[], None]:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        return lambda: self._sessions.discard(task)

    async def _on_tls_client(self, reader: aio.TLSReader, writer: SecureWriter) -> None:
        """server mode: a TLS (or MLS-TLS) client arrived; open the plain connection to the target."""
        untrack = self._track()
        peer = _peer(writer)
        # connection_open now; key and certificate updates; connection_close at the end.
        conn_log = ConnectionLog.attach(writer, label=f"client {peer}", peer=peer, side="server")
        if isinstance(writer, aio.TLSWriter):
            catch_up(writer, self.configuration)  # a renewal during its handshake
        try:
            if self._cut:
                conn_log.ending("shutdown")
                writer.abort()
                return
            if not self._eku_ok(writer, f"client {peer}"):
                # Not close_notify: through a tunnel client that would reach the
                # application as a clean, empty stream.
                conn_log.ending(detail="no Extended Key Update (--require-eku)")
                writer.abort()
                return
            try:
                plain_reader, plain_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), self.connect_timeout
                )
            except (OSError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
                log_event(
                    logger, logging.WARNING, "target_unreachable", "%s: cannot connect to %s: %s",
                    peer, format_address(self.target), reason,
                    peer=peer, target=format_address(self.target), detail=reason,
                )
                conn_log.ending(detail=f"cannot connect to {format_address(self.target)}: {reason}")
                writer.abort()  # the client must not mistake this for an empty, complete stream
                return
            if self.send_proxy:
                plain_writer.write(header_to_send(writer.get_extra_info))  # before any byte of the client's
            await self._relay(conn_log, reader, writer, plain_reader, plain_writer)
        finally:
            untrack()

    async def _on_plain_client(
        self, plain_reader: asyncio.StreamReader, plain_writer: asyncio.StreamWriter
    ) -> None:
        """client mode: a plain client arrived; open the TLS (or MLS-TLS) connection to the target."""
        untrack = self._track()
        peer = _peer(plain_writer)
        try:
            if self._cut:
                _reset_plain(plain_writer)
                return
            where = format_address(self.target)
            protocol = "MLS-TLS" if self.mls else "TLS"
            writer: SecureWriter
            try:
                # The handshake times out on its own (the Configuration's
                # handshake_timeout); this bounds the TCP connect before it.
                handshake_timeout = self.configuration.handshake_timeout
                async with asyncio.timeout(
                    None if handshake_timeout is None else self.connect_timeout + handshake_timeout
                ):
                    options = self._stream_options()
                    if self.send_proxy:
                        # Our application's address, to the TLS server (behind which it is lost).
                        options = dataclasses.replace(options, send_proxy=header_to_send(plain_writer.get_extra_info))
                    if self.mls:
                        reader, writer = await aio.connect_mls(
                            self.target[0], self.target[1], self.configuration, options
                        )
                    else:
                        reader, writer = await aio.connect(
                            self.target[0], self.target[1], self.configuration, options
                        )
            except (TLSError, aio.ConnectionLostError, aio.HandshakeTimeoutError) as exc:
                # The one line for this failure (aio logs a client's at DEBUG only).
                log_event(
                    logger, logging.WARNING, "handshake_failed", "%s: %s handshake with %s failed: %s",
                    peer, protocol, where, describe(exc),
                    peer=where, plain_peer=peer, side="client", transport="mls-tls" if self.mls else "tls",
                    **failure_fields(exc, handshake_done=False),
                )
                _reset_plain(plain_writer)
                return
            except (OSError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
                log_event(
                    logger, logging.WARNING, "target_unreachable", "%s: cannot connect to %s: %s",
                    peer, where, reason, peer=peer, target=where, detail=reason,
                )
                _reset_plain(plain_writer)
                return
            conn_log = ConnectionLog.attach(
                writer, label=f"the server at {where} for {peer}", peer=where, side="client",
                fields={"plain_peer": peer},
            )
            if not self._eku_ok(writer, f"the server at {where}"):
                conn_log.ending(detail="no Extended Key Update (--require-eku)")
                writer.close()
                _reset_plain(plain_writer)
                return
            if isinstance(writer, aio.TLSWriter):
                catch_up(writer, self.configuration)  # our client certificate renewed during the handshake
            await self._relay(conn_log, reader, writer, plain_reader, plain_writer)
        except asyncio.CancelledError:
            if not self._cut:
                raise
            # Cut at shutdown before the relay began (handshaking): reset the
            # application and end normally (see _relay).
            _reset_plain(plain_writer)
        finally:
            untrack()

    def _eku_ok(self, writer: SecureWriter, who: str) -> bool:
        if not self.require_eku or writer.handshake.extended_key_update:
            return True
        logger.warning(
            "%s did not negotiate Extended Key Update (--require-eku): closing", who
        )
        return False

    async def _relay(
        self, conn_log: ConnectionLog, reader: aio.TLSReader, writer: SecureWriter,
        plain_reader: asyncio.StreamReader, plain_writer: asyncio.StreamWriter,
    ) -> None:
        """Relay; the connection_close record (connlog) says how it ended."""
        logger.debug("%s: relaying (%s)", conn_log.label, self.mode)
        try:
            await splice(reader, writer, plain_reader, plain_writer)
        except asyncio.CancelledError:
            if not self._cut:
                raise
            # Our own shutdown cancelled it (grace period over): end the task
            # normally, or asyncio.start_server's callback logs the
            # cancellation as an error with a traceback (Python 3.11).
            conn_log.ending("shutdown", "reset at shutdown (grace period over)")
            return
        except Exception as exc:
            # An unclean end was passed on as one (see the module docstring);
            # the cause may be the plain side's (a reset), which the TLS
            # connection's own error (our abort) does not say.
            conn_log.ending(detail=describe(exc))
