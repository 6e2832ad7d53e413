"""The key updates a connection starts by itself.

Two reasons (RFC 9846 §5.5 and ``Configuration.rekey_*``):

- the AEAD usage limit: at 7/8 of the records a key may protect, an update
  starts before the next write (an Extended Key Update if negotiated, else a
  KeyUpdate without update_requested: only our sending key is at its limit);
- the rekey policy: after ``rekey_bytes`` bytes, ``rekey_records`` records or
  ``rekey_interval`` seconds, an Extended Key Update if negotiated, else a
  KeyUpdate with update_requested (both directions renew).

Which update may start now is the arbiter's decision (handshake/post_handshake.py).
"""

from __future__ import annotations

from ..config import Configuration
from ..constants import KeyUpdateRequest
from ..errors import LocalProtocolError
from .post_handshake import PostHandshakeArbiter


class RekeyPolicy:
    """Counts what the policy limits and starts the update when one is due."""

    def __init__(self, arbiter: PostHandshakeArbiter, configuration: Configuration) -> None:
        self._arbiter = arbiter
        self._config = configuration
        self.bytes_since_rekey = 0
        self.last_rekey_at = 0.0

    def __repr__(self) -> str:
        return f"<RekeyPolicy bytes_since_rekey={self.bytes_since_rekey}>"

    def rekeyed(self) -> None:
        """Our sending key changed (or the connection was established): count from now."""
        self.bytes_since_rekey = 0
        self.last_rekey_at = self._config.now()

    def sent(self, length: int, records_under_key: int) -> bool:
        """Count ``length`` bytes of application data; whether the byte or record threshold is reached."""
        self.bytes_since_rekey += length
        cfg = self._config
        return (cfg.rekey_bytes is not None and self.bytes_since_rekey >= cfg.rekey_bytes) or (
            cfg.rekey_records is not None and records_under_key >= cfg.rekey_records
        )

    def interval_due(self) -> float | None:
        """When ``rekey_interval`` asks for the next update, or None."""
        interval = self._config.rekey_interval
        return None if interval is None else self.last_rekey_at + interval

    def start_update(self) -> None:
        """Start the update the policy asks for, unless one is under way."""
        arbiter = self._arbiter
        eku = arbiter.eku
        if eku is not None:
            if not eku.in_progress and arbiter.eku_may_start:
                try:
                    eku.start()
                except LocalProtocolError:
                    # draft-05 "retry" delay still running: try again one interval later.
                    self.last_rekey_at = self._config.now()
                    return
                # Count from the start, so a slow peer does not trigger a storm.
                self.rekeyed()
        elif arbiter.key_update is not None and arbiter.key_update_allowed:
            arbiter.key_update.send(KeyUpdateRequest.update_requested)

    def before_usage_limit(self) -> None:
        """RFC 9846 §5.5: our sending key nears its AEAD usage limit; replace it."""
        arbiter = self._arbiter
        eku = arbiter.eku
        if eku is not None:
            if not eku.in_progress:
                eku.start()
        elif arbiter.key_update is not None and arbiter.key_update_allowed:
            arbiter.key_update.send(KeyUpdateRequest.update_not_requested)
