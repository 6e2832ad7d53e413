"""MLS mode over asyncio: the MLS-TLS channel (docs/mls-tls.md) as streams.

    reader, writer = await longtls.aio.connect_mls("example.com", 4433, configuration)
    writer.write(b"hello")
    epoch = await writer.update_keys()      # an MLS self-update commit
    server = await longtls.aio.start_mls_server(handler, "0.0.0.0", 4433, server_configuration)

Resumption (docs/mls-tls.md §8): ``writer.resumption_state()`` once the
connection has ended; ``connect_mls(..., resume=state)`` resumes (either
original role may connect); ``start_mls_server(..., resumption_states=lookup)``
answers ResumptionRequests from the states the lookup finds by group_id.

The same machinery as TLS streams (``aio.protocol.StreamProtocol``: timers,
closing, events, metrics, idle timeout) drives an
``mls_connection.MLSConnection``; the reader is a ``TLSReader`` and the
writer an ``MLSWriter`` (a ``StreamWriter`` like ``TLSWriter``).
``StreamOptions.connections`` (the Certificate Update rollout set) does not
collect MLS connections: MLS has no Certificate Update.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509

from ..config import Configuration
from ..errors import ConfigurationError
from ..mls_connection import MLSConnection, MLSResumptionLookup, MLSResumptionState
from .options import StreamOptions
from .protocol import ALERT_LINGER, HandshakeCallback, StreamProtocol
from .proxy_protocol import accepting_proxy
from .streams import ConfigurationSource, StreamWriter, TLSReader

__all__ = ["MLSConnectedCallback", "MLSProtocol", "MLSWriter", "connect_mls", "start_mls_server"]

_DEFAULT_OPTIONS = StreamOptions()


class MLSProtocol(StreamProtocol[MLSConnection]):
    """Drives one ``MLSConnection`` over one asyncio transport."""

    log_transport = "mls-tls"

    def __init__(
        self,
        configuration: Configuration,
        options: StreamOptions = _DEFAULT_OPTIONS,
        *,
        reader: asyncio.StreamReader | None = None,
        on_handshake: HandshakeCallback | None = None,
        resume: MLSResumptionState | None = None,
        resumption_states: MLSResumptionLookup | None = None,
    ) -> None:
        connection = MLSConnection(configuration, resume=resume, resumption_states=resumption_states)
        super().__init__(connection, options, reader=reader, on_handshake=on_handshake)


class MLSWriter(StreamWriter[MLSConnection]):
    """The sending half of an MLS-TLS stream, shaped like ``asyncio.StreamWriter``."""

    async def update_keys(self, timeout: float | None = None) -> int:
        """Start an MLS self-update (a ConnectionUpdate) and return the new
        epoch once both directions use it.

        One update at a time (two-party profile §5): an update of ours still
        under way completes first, so two calls mean two updates.  If the
        peer's update crosses ours and wins (the initiator's does), this
        returns once that one completes.  The peer must answer within
        ``timeout`` seconds (None: ``Configuration.rekey_timeout``), else the
        connection ends with ``KeyUpdateTimeoutError``.
        """
        while self.connection.update_in_progress:
            await self._protocol.key_update_waiter()
        waiter = self._protocol.key_update_waiter()
        try:
            self._protocol.command(lambda: self.connection.update_keys(timeout))
        except BaseException:
            self._protocol.discard_key_update_waiter(waiter)
            raise
        return await waiter

    @property
    def epoch(self) -> int:
        """The MLS epoch both directions use."""
        return self.connection.epoch

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        """The peer's validated X.509 chain (empty for a basic credential)."""
        return self.connection.peer_certificates

    def resumption_state(self) -> MLSResumptionState | None:
        """What to keep to resume later (``MLSConnection.resumption_state``):
        take it once the connection has ended."""
        return self.connection.resumption_state()


async def connect_mls(
    host: str,
    port: int,
    configuration: Configuration,
    options: StreamOptions = _DEFAULT_OPTIONS,
    *,
    resume: MLSResumptionState | None = None,
    **kwargs: Any,
) -> tuple[TLSReader, MLSWriter]:
    """Open a TCP connection as the MLS-TLS initiator, complete the initial
    key agreement (ClientHello/ServerHello), return (reader, writer).

    ``resume``: resume from a stored state instead (ResumptionRequest,
    docs/mls-tls.md §8), whichever role this side had originally; the
    configuration's identity and trust settings are then not used (the
    group keeps the identities of the first connection).
    As ``aio.connect``: ``kwargs`` go to ``loop.create_connection``; a failed
    agreement raises its TLSError (the alert) or ConnectionLostError.
    """
    if not configuration.is_client and resume is None:
        raise ConfigurationError("connect_mls() needs an initiator configuration (is_client=True)")
    loop = asyncio.get_running_loop()
    reader = TLSReader(limit=options.limit, loop=loop)

    def factory() -> MLSProtocol:
        return MLSProtocol(configuration, options, reader=reader, resume=resume)

    _, protocol = await loop.create_connection(factory, host, port, **kwargs)
    try:
        await protocol.handshake
    except asyncio.CancelledError:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise
    except Exception:
        # Let our fatal alert reach the peer before the caller moves on.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(protocol.closed), ALERT_LINGER + 0.5)
        raise
    return reader, MLSWriter(protocol)


#: ``start_mls_server``'s callback (``aio.ClientConnectedCallback`` with an MLSWriter).
MLSConnectedCallback = Callable[[TLSReader, "MLSWriter"], Awaitable[None] | None]


async def start_mls_server(
    client_connected_cb: MLSConnectedCallback,
    host: str | None,
    port: int | None,
    configuration: ConfigurationSource,
    options: StreamOptions = _DEFAULT_OPTIONS,
    *,
    resumption_states: MLSResumptionLookup | None = None,
    **kwargs: Any,
) -> asyncio.Server:
    """Listen on host:port as an MLS-TLS responder; call
    ``client_connected_cb(reader, writer)`` (an ``MLSWriter``) after each
    initial key agreement or resumption (``writer.handshake.resumed``).

    ``resumption_states``: the stored state by group_id, or None
    (``unknown_psk_identity``); without it resumption is refused
    (``handshake_failure``).  Store ``writer.resumption_state()`` under
    ``state.group_id`` when a connection ends.  Otherwise as ``aio.start_server``."""
    get_configuration = configuration if callable(configuration) else lambda: configuration
    if get_configuration().is_client:
        raise ConfigurationError("start_mls_server() needs a responder configuration (is_client=False)")
    loop = asyncio.get_running_loop()

    def factory() -> MLSProtocol:
        reader = TLSReader(limit=options.limit, loop=loop)
        protocol = MLSProtocol(
            get_configuration(), options, reader=reader,
            on_handshake=lambda: client_connected_cb(reader, MLSWriter(protocol)),
            resumption_states=resumption_states,
        )
        return protocol

    # options.accept_proxy: a PROXY protocol header first (aio/proxy_protocol.py).
    serve = accepting_proxy(factory, options.accept_proxy, options.metrics)
    return await loop.create_server(serve, host, port, **kwargs)
