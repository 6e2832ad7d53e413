"""Structured log records: how a ``logging`` record carries an event and its
fields (docs/logging.md), for the asyncio layer and the programs above it.

A structured record is an ordinary ``logging`` record (its message is the
readable text line) with two extra attributes: ``longtls_event`` (the event
name, e.g. ``"handshake_failed"``) and ``longtls_fields`` (a dict of JSON
values).  ``longtls.cli.logs.JSONFormatter`` writes them as one JSON object;
the text format shows the message only, which therefore states the same
facts.  The attribute names are namespaced so that no field can collide with
an attribute of ``logging.LogRecord`` (``message``, ``name``, ``process``).

Nothing secret goes in a field: addresses, names, counts, alert names.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import (
    AlertReceived,
    HandshakeTimeoutError,
    KeyUpdateTimeoutError,
    NotTLSError,
    TLSError,
)
from .errors import IdleTimeoutError

__all__ = ["EVENT", "FIELDS", "failure_fields", "log_event"]

#: The LogRecord attribute holding the event name.
EVENT = "longtls_event"
#: The LogRecord attribute holding the event's fields (a dict).
FIELDS = "longtls_fields"


def log_event(
    logger: logging.Logger, level: int, event: str, message: str, *args: object, **fields: Any
) -> None:
    """``logger.log(level, message, *args)`` as a structured record."""
    if logger.isEnabledFor(level):
        logger.log(level, message, *args, extra={EVENT: event, FIELDS: fields})


def failure_fields(exc: BaseException | None, *, handshake_done: bool) -> dict[str, Any]:
    """Why a connection ended, as the record fields ``reason``, ``alert``,
    ``closed_by`` and ``detail`` (docs/logging.md, "Reasons").

    ``reason`` is one token: ``peer_alert`` (the peer sent a fatal alert),
    ``local_alert`` (we did: the peer broke the protocol, or this side refused
    it), ``timeout`` (the handshake did not complete in time),
    ``update_failed`` (a key update was not answered in time),
    ``idle_timeout``, ``not_tls`` (the bytes were not TLS), ``aborted`` (this
    side reset the connection), ``truncated`` (the transport ended after the
    handshake without close_notify) or ``connection_lost`` (it ended during
    the handshake, or failed); ``close_notify`` for ``exc`` None.
    """
    alert: str | None = None
    if exc is None:
        reason, closed_by = "close_notify", None
    elif isinstance(exc, AlertReceived):
        reason, closed_by, alert = "peer_alert", "peer", exc.alert.name
    elif isinstance(exc, KeyUpdateTimeoutError):
        # RFC 9846 §4.6.3 / EKU draft-13 §5: no answer to our update in time.
        reason, closed_by = "update_failed", "local"
    elif isinstance(exc, HandshakeTimeoutError):
        reason, closed_by = "timeout", "local"
    elif isinstance(exc, IdleTimeoutError):
        reason, closed_by = "idle_timeout", "local"
    elif isinstance(exc, NotTLSError):
        reason, closed_by, alert = "not_tls", "local", exc.alert.name
    elif isinstance(exc, TLSError):
        reason, closed_by = "local_alert", "local"
        alert = exc.alert.name if exc.alert is not None else None
    elif isinstance(exc, ConnectionAbortedError):
        reason, closed_by = "aborted", "local"
    elif isinstance(exc, TimeoutError):
        reason, closed_by = "timeout", "local"
    else:  # ConnectionLostError, resets: the transport went away under us
        reason, closed_by = ("truncated" if handshake_done else "connection_lost"), "peer"
    fields: dict[str, Any] = {"reason": reason, "alert": alert, "closed_by": closed_by}
    if exc is not None:
        fields["detail"] = str(exc) or type(exc).__name__
    return fields
