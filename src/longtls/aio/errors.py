"""The errors the asyncio layer adds to those of the sans-I/O core.

The handshake timeout is the core's (``Configuration.handshake_timeout``,
enforced by ``Connection.handle_timer``), so its error is the core's
:class:`longtls.errors.HandshakeTimeoutError`, re-exported here.
"""

from __future__ import annotations

from ..errors import HandshakeTimeoutError
from ..events import UpdateRejection

__all__ = [
    "ConnectionLostError",
    "HandshakeTimeoutError",
    "IdleTimeoutError",
    "KeyUpdateRejectedError",
]


class ConnectionLostError(ConnectionResetError):
    """The TCP connection ended before the TLS connection did: during the
    handshake, or without close_notify (a possible truncation attack)."""


class IdleTimeoutError(TimeoutError):
    """No application data either way for ``idle_timeout`` seconds; we sent close_notify."""


class KeyUpdateRejectedError(Exception):
    """draft-05: the peer declined our extended key update.

    ``status`` is ``UpdateRejection.retry`` (try again after ``retry_after``
    seconds) or ``UpdateRejection.rejected``.
    """

    def __init__(self, status: UpdateRejection, retry_after: int) -> None:
        detail = f"; retry after {retry_after} s" if status is UpdateRejection.retry else ""
        super().__init__(f"the peer declined the extended key update ({status.value}{detail})")
        self.status = status
        self.retry_after = retry_after
