"""KeyUpdate (RFC 9846 §4.6.3): the classic, one-direction-at-a-time key update.

Owns the KeyUpdate message: answering a peer's update_requested, asking the
peer to update (at most one answer owed at a time), the deadline for that
answer, and the rate limit on peer-started updates.  Whether KeyUpdate may be
used at all (not before Finished, not once Extended Key Update was
negotiated) is the arbiter's rule (handshake/post_handshake.py).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from ..config import Configuration
from ..constants import AlertDescription, HandshakeType, KeyUpdateRequest
from ..crypto import key_schedule as ks
from ..crypto.suites import SuiteInfo
from ..errors import RemoteProtocolError
from ..events import Direction, Event, KeyUpdated
from ..wire.messages import KeyUpdate, encode_handshake


class KeyUpdateHost(Protocol):
    """What KeyUpdate needs from its connection."""

    is_client: bool

    @property
    def configuration(self) -> Configuration: ...

    @property
    def close_sent(self) -> bool: ...

    @property
    def close_received(self) -> bool: ...

    @property
    def current_read_secret(self) -> bytes: ...

    @property
    def current_write_secret(self) -> bytes: ...

    @property
    def read_generation(self) -> int: ...

    @property
    def write_generation(self) -> int: ...

    @property
    def handshake_data_pending(self) -> bool:
        """Bytes of another handshake message follow in the peer's current record."""
        ...

    def queue_handshake(self, message: bytes) -> None: ...

    def advance_write_secret(self, secret: bytes) -> None:
        """Send what is queued under the current key, then protect with ``secret`` (next generation)."""

    def advance_read_secret(self, secret: bytes) -> None:
        """Open the peer's records with ``secret`` (next generation)."""

    def log_secret(self, label: str, secret: bytes) -> None: ...

    def emit(self, event: Event) -> None: ...

    def rekeyed(self) -> None:
        """Our sending key changed (the rekey policy counts from now)."""


class KeyUpdateProtocol:
    """The KeyUpdate exchanges of one connection."""

    message_types = frozenset({HandshakeType.key_update})

    def __init__(
        self, host: KeyUpdateHost, suite: SuiteInfo, prefix: bytes = ks.TLS13_LABEL_PREFIX
    ) -> None:
        self.host = host
        self.suite = suite
        # "traffic upd" under the transport's label prefix (RFC 9147 §5.9, §8).
        self.prefix = prefix
        # Our KeyUpdate(update_requested) awaits the peer's KeyUpdate (§4.6.3),
        # until the deadline if there is one (rekey_timeout).
        self.answer_owed = False
        self.deadline: float | None = None
        self.timeout = 0.0
        # Created at the first peer-started update: most connections never see
        # one, and an empty deque costs 600 bytes (issue 16).
        self._peer_update_times: deque[float] | None = None

    def __repr__(self) -> str:
        return f"<KeyUpdateProtocol answer_owed={self.answer_owed}>"

    @property
    def in_progress(self) -> bool:
        return self.answer_owed

    def count_peer_update(self) -> None:
        """At most ``max_peer_key_updates_per_second`` peer-started updates a second."""
        cfg = self.host.configuration
        now = cfg.now()
        times = self._peer_update_times
        if times is None:
            times = self._peer_update_times = deque()
        times.append(now)
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) > cfg.max_peer_key_updates_per_second:
            raise RemoteProtocolError("peer requests key updates faster than allowed", AlertDescription.unexpected_message)

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        """The peer's KeyUpdate (the arbiter has checked that one may arrive)."""
        host = self.host
        if self.answer_owed:
            # The answer to our update_requested (§4.6.3: any KeyUpdate from the
            # peer after ours is the one we may ask again after).
            self.answer_owed = False
            self.deadline = None
        else:
            self.count_peer_update()
        request = KeyUpdate.decode(body).request_update
        # RFC 9846 §5.1: a KeyUpdate must end its record.
        if host.handshake_data_pending:
            raise RemoteProtocolError("data after KeyUpdate in the same record", AlertDescription.unexpected_message)
        host.advance_read_secret(ks.next_traffic_secret(self.suite, host.current_read_secret, self.prefix))
        host.log_secret(self._traffic_label(peer=True), host.current_read_secret)
        host.emit(KeyUpdated(
            direction=Direction.receive, generation=host.read_generation,
            requested_by_peer=request == KeyUpdateRequest.update_requested,
        ))
        if request == KeyUpdateRequest.update_requested and not host.close_sent:
            # §4.6.3: answer before our next application data record.  If we
            # already sent an update the peer has not yet seen, one more is
            # still correct (it simply advances our key once more).
            self.send(KeyUpdateRequest.update_not_requested, requested_by_peer=True)

    def send(self, request: KeyUpdateRequest, requested_by_peer: bool = False, timeout: float | None = None) -> None:
        """Send a KeyUpdate and switch to our next sending key."""
        host = self.host
        if request == KeyUpdateRequest.update_requested:
            if self.answer_owed or host.close_received:
                # §4.6.3: no second update_requested before the peer's KeyUpdate;
                # §6.1: none after the peer's close_notify, which ends its sending.
                request = KeyUpdateRequest.update_not_requested
            else:
                cfg = host.configuration
                self.answer_owed = True
                allowed = cfg.rekey_timeout if timeout is None else timeout
                self.timeout = allowed if allowed is not None else math.inf
                self.deadline = None if allowed is None or math.isinf(allowed) else cfg.now() + allowed
        host.queue_handshake(encode_handshake(HandshakeType.key_update, KeyUpdate(request).encode()))
        host.advance_write_secret(ks.next_traffic_secret(self.suite, host.current_write_secret, self.prefix))
        host.log_secret(self._traffic_label(peer=False), host.current_write_secret)
        host.emit(KeyUpdated(direction=Direction.send, generation=host.write_generation, requested_by_peer=requested_by_peer))
        host.rekeyed()

    def _traffic_label(self, peer: bool) -> str:
        client_side = self.host.is_client != peer
        generation = self.host.read_generation if peer else self.host.write_generation
        return f"{'CLIENT' if client_side else 'SERVER'}_TRAFFIC_SECRET_{generation}"
