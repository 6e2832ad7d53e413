"""One log record per connection event: open, key update, close
(docs/logging.md is the schema, a contract).

The tunnel (TCP and UDP) and ``longtls serve`` attach a ``ConnectionLog`` to
each connection once its handshake is complete::

    log = ConnectionLog.attach(writer, label=f"client {peer}", peer=peer, side="server")

and it writes, on the ``longtls.connections`` logger:

- ``connection_open`` (INFO) at once: peer address, SNI, ALPN, group, cipher
  suite, client certificate subject, EKU profile;
- ``key_update`` (INFO) per completed update: an Extended Key Update, a
  standard KeyUpdate (one record per direction), an MLS epoch change, a
  Certificate Update; with kind, generation (or epoch), group, initiator and
  milliseconds;
- ``update_failed`` (WARNING) when the peer declines an update and the
  connection goes on (draft-05's rejection);
- ``connection_close`` when the transport is gone: bytes each way, duration,
  key updates, who closed and why (INFO for an orderly end, WARNING for a
  failure: an alert either way, a failed update, a truncation).

A failure after the handshake is logged once, in that close record, as what
it was (``reason``: peer_alert, local_alert, update_failed, idle_timeout,
truncated ...); handshake failures are the asyncio layer's records
(``handshake_failed``) on a server and the caller's on a client.  Each record
is a structured ``logging`` record (``aio.logrecords``); its text message says
the same facts.  No event repr and nothing secret is ever logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from cryptography import x509

from .aio.events import EventHandler
from .aio.logrecords import failure_fields, log_event
from .credentials import certificate_fields, describe_certificate
from .events import (
    CertificateUpdated,
    CertificateUpdateDirection,
    ConnectionClosed,
    Direction,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
    KeyUpdateRejected,
    KeyUpdateStarted,
)

__all__ = ["ConnectionLog", "LoggedConnection", "logger"]

logger = logging.getLogger("longtls.connections")

#: Close reasons that are an orderly end (INFO); any other is a failure (WARNING).
_ORDERLY = frozenset({"close_notify", "idle_timeout", "shutdown"})

#: The ``connection`` field: a number per connection, unique in the process.
_ids = itertools.count(1)
#: Keeps the close watchers alive until they run (asyncio holds tasks weakly).
_watchers: set[asyncio.Task[None]] = set()


class LoggedConnection(Protocol):
    """What a ``ConnectionLog`` reads: ``aio.TLSWriter``, ``aio.MLSWriter`` and
    ``aio.DTLSAssociation`` all are one."""

    @property
    def handshake(self) -> HandshakeComplete: ...

    @property
    def bytes_sent(self) -> int: ...

    @property
    def bytes_received(self) -> int: ...

    @property
    def exception(self) -> BaseException | None: ...

    def add_event_handler(self, handler: EventHandler) -> None: ...

    async def wait_closed(self) -> None: ...


class ConnectionLog:
    """The records of one connection (see the module docstring).

    ``label`` starts each text line (``client 127.0.0.1:40112``); ``peer`` is
    the secure peer's address; ``side`` ours ("client" or "server");
    ``transport`` "tls", "dtls" or "mls-tls"; ``fields`` more fields for every
    record of this connection (the tunnel client's ``plain_peer``).
    """

    def __init__(
        self,
        connection: LoggedConnection,
        *,
        label: str,
        peer: str,
        side: str,
        transport: str,
        fields: dict[str, Any] | None = None,
        log: logging.Logger = logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = next(_ids)
        self.connection = connection
        self.label = label
        self.side = side
        self.peer_side = "client" if side == "server" else "server"
        self.log = log
        self._clock = clock
        self._opened = clock()
        self._common: dict[str, Any] = {
            "connection": self.id, "peer": peer, "side": side, "transport": transport, **(fields or {}),
        }
        #: Completed key updates (Certificate Updates not counted).
        self.key_updates = 0
        self._update_under_way = False  # an EKU started and not completed
        self._asked_at: float | None = None  # our standard KeyUpdate asked the peer's, at
        self._close_fields: dict[str, Any] | None = None  # what ConnectionClosed said
        self._peer_closed_first: bool | None = None
        self._reason: str | None = None  # set by the owner: "shutdown"
        self._detail: str | None = None
        self._closed = False

    @classmethod
    def attach(
        cls,
        connection: LoggedConnection,
        *,
        label: str,
        peer: str,
        side: str,
        transport: str | None = None,
        fields: dict[str, Any] | None = None,
        log: logging.Logger = logger,
    ) -> ConnectionLog:
        """Log ``connection_open`` now, then its key updates, and
        ``connection_close`` once its transport is gone."""
        if transport is None:
            transport = "mls-tls" if connection.handshake.mode == "mls" else "tls"
        conn_log = cls(connection, label=label, peer=peer, side=side, transport=transport, fields=fields, log=log)
        conn_log.opened()
        connection.add_event_handler(conn_log.on_event)
        task = asyncio.get_running_loop().create_task(conn_log._watch())
        _watchers.add(task)
        task.add_done_callback(_watchers.discard)
        return conn_log

    # -- what the owner tells us -----------------------------------------------------

    def ending(self, reason: str | None = None, detail: BaseException | str | None = None) -> None:
        """The owner knows why the connection ends: ``reason`` ("shutdown")
        replaces the one read from the connection; ``detail`` (what ended the
        relay: the plain side's reset, say) is added to the close record."""
        if reason is not None:
            self._reason = reason
        if detail is not None and self._detail is None:
            self._detail = str(detail) or type(detail).__name__

    # -- records --------------------------------------------------------------------

    def _emit(self, level: int, event: str, message: str, **fields: Any) -> None:
        log_event(self.log, level, event, "%s: %s", self.label, message, **self._common, **fields)

    def opened(self) -> None:
        hs = self.connection.handshake
        client_subject = hs.peer_subject if self.side == "server" else self._own_subject(hs)
        fields: dict[str, Any] = {
            "sni": hs.server_name,
            "alpn": hs.alpn_protocol,
            "group": hs.group.name if hs.group is not None else None,
            "cipher_suite": hs.cipher_suite.name,
            "client_subject": client_subject,
            "peer_subject": hs.peer_subject,
            "extended_key_update": hs.extended_key_update,
            "eku_profile": hs.eku_profile.value if hs.eku_profile is not None else None,
            "resumed": hs.resumed,
        }
        if hs.mode == "mls":
            fields["mls_cipher_suite"] = hs.mls_cipher_suite
            fields["epoch"] = hs.epoch
        parts = [hs.version, hs.cipher_suite.name, fields["group"] or "no group (PSK only)"]
        parts.append(f"SNI {hs.server_name}" if hs.server_name else "no SNI")
        if hs.alpn_protocol:
            parts.append(f"ALPN {hs.alpn_protocol}")
        if client_subject:
            parts.append(f"client certificate {client_subject}")
        if hs.mode == "mls":
            parts.append(f"MLS suite 0x{hs.mls_cipher_suite or 0:04X}, epoch {hs.epoch}")
        elif hs.eku_profile is not None:
            parts.append(f"EKU {hs.eku_profile.value}")
        else:
            parts.append("no EKU")
        if hs.resumed:
            parts.append("resumed")
        self._emit(logging.INFO, "connection_open", "connection open: " + ", ".join(parts), **fields)

    def _own_subject(self, hs: HandshakeComplete) -> str | None:
        """A client's own certificate subject, if it authenticated with one."""
        if not hs.client_authenticated:
            return None
        ours: tuple[x509.Certificate, ...] = getattr(self.connection, "local_certificates", ())
        return ours[0].subject.rfc4514_string() if ours else None

    def on_event(self, event: Event) -> None:
        """The event handler: key updates, certificate updates, the close."""
        if isinstance(event, KeyUpdateStarted):
            self._update_under_way = True
        elif isinstance(event, KeyUpdateCompleted):
            self._update_under_way = False
            self.key_updates += 1
            self._extended(event)
        elif isinstance(event, KeyUpdated):
            self.key_updates += 1
            self._standard(event)
        elif isinstance(event, KeyUpdateRejected):
            # draft-05: the peer declined; the connection goes on.
            self._update_under_way = False
            detail = f"; retry after {event.retry_after} s" if event.status.value == "retry" else ""
            self._emit(
                logging.WARNING, "update_failed",
                f"the peer declined the extended key update ({event.status.value}{detail})",
                kind="extended_key_update", initiator=self.side, reason="rejected",
                status=event.status.value, retry_after=event.retry_after,
            )
        elif isinstance(event, CertificateUpdated):
            self._certificate(event)
        elif isinstance(event, ConnectionClosed):
            if event.alert is not None:
                self._close_fields = {
                    "reason": "peer_alert" if event.by_peer else "local_alert",
                    "alert": event.alert.name,
                    "closed_by": "peer" if event.by_peer else "local",
                }
            else:
                # The last close_notify completes the close: sent by the peer,
                # we had closed first (RFC 9846 §6.1).
                self._peer_closed_first = not event.by_peer

    def _extended(self, event: KeyUpdateCompleted) -> None:
        ms = round(event.seconds * 1000, 3)
        initiator = str(event.initiator)
        if event.kind == "mls":
            # An MLS commit: the epoch is the "generation" of MLS mode.
            self._emit(
                logging.INFO, "key_update", f"MLS epoch {event.epoch}, started by the {initiator}, {ms:.1f} ms",
                kind="mls_epoch", generation=None, epoch=event.epoch, group=event.group.name,
                initiator=initiator, milliseconds=ms,
            )
            return
        self._emit(
            logging.INFO, "key_update",
            f"key generation {event.generation} (extended key update, {event.group.name}), "
            f"started by the {initiator}, {ms:.1f} ms",
            kind="extended_key_update", generation=event.generation, group=event.group.name,
            initiator=initiator, milliseconds=ms,
        )

    def _standard(self, event: KeyUpdated) -> None:
        """RFC 9846 §4.6.3: each direction updates on its own; the exchange's
        starter is the side whose KeyUpdate had update_requested, or who sent
        one unasked."""
        now = self._clock()
        ms: float | None = None
        if event.direction is Direction.send:
            initiator = self.peer_side if event.requested_by_peer else self.side
            if not event.requested_by_peer:
                self._asked_at = now
        elif event.requested_by_peer or self._asked_at is None:
            initiator = self.peer_side
        else:  # the peer's answer to ours
            initiator = self.side
            ms = round((now - self._asked_at) * 1000, 3)
            self._asked_at = None
        direction = event.direction.value
        took = f", {ms:.1f} ms" if ms is not None else ""
        self._emit(
            logging.INFO, "key_update",
            f"key generation {event.generation} ({direction} direction, KeyUpdate), started by the {initiator}{took}",
            kind="key_update", generation=event.generation, direction=direction, group=None,
            initiator=initiator, milliseconds=ms,
        )

    def _certificate(self, event: CertificateUpdated) -> None:
        if not event.certificates:
            return
        leaf = event.certificates[0]
        received = event.direction is CertificateUpdateDirection.received
        # The wording of longtls.credentials' lines before this record existed.
        what = "certificate updated by the peer" if received else "sent our renewed certificate"
        self._emit(
            logging.INFO, "key_update", f"{what}: {describe_certificate(leaf)}",
            kind="certificate_update", direction=event.direction.value,
            initiator=self.peer_side if received else self.side, **certificate_fields(leaf),
        )

    async def _watch(self) -> None:
        try:
            await self.connection.wait_closed()
        except asyncio.CancelledError:
            # The process is ending (asyncio.run cancels what is left).
            self.ending("shutdown")
            self.closed()
            raise
        self.closed()

    def closed(self) -> None:
        """Log ``connection_close`` (once)."""
        if self._closed:
            return
        self._closed = True
        conn = self.connection
        exc = conn.exception
        if self._close_fields is not None and exc is None:
            fields = dict(self._close_fields)
        else:
            fields = failure_fields(exc, handshake_done=True)
            if exc is None:
                fields["closed_by"] = "peer" if self._peer_closed_first else "local"
        if fields["reason"] in ("peer_alert", "local_alert") and self._update_under_way:
            # An alert in the middle of an update: the update failed (EKU
            # draft-13 §5, §8.3), whoever sent it; "alert" says which.
            fields["reason"] = "update_failed"
        if self._reason is not None:
            fields["reason"] = self._reason
        if self._detail is not None and self._detail != fields.get("detail"):
            fields["detail"] = f"{fields['detail']}; {self._detail}" if fields.get("detail") else self._detail
        fields.setdefault("detail", None)
        duration = round(self._clock() - self._opened, 3)
        stats: dict[str, Any] = {
            "bytes_in": conn.bytes_received, "bytes_out": conn.bytes_sent,
            "duration_seconds": duration, "key_updates": self.key_updates,
        }
        reason = fields["reason"]
        why = reason if reason == "close_notify" else reason.replace("_", " ")
        if fields.get("alert"):
            why += f" {fields['alert']}"
        if fields["detail"] and reason not in ("close_notify",):
            why += f": {fields['detail']}"
        by = {"local": " by us", "peer": " by the peer"}.get(fields.get("closed_by") or "", "")
        message = (
            f"connection closed{by} ({why}) after {duration:.3f} s: {stats['bytes_in']} bytes in, "
            f"{stats['bytes_out']} bytes out, {self.key_updates} key update(s)"
        )
        level = logging.INFO if reason in _ORDERLY else logging.WARNING
        self._emit(level, "connection_close", message, **stats, **fields)
