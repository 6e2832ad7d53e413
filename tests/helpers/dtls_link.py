"""Two DTLSConnections wired through an in-memory datagram link on a simulated clock.

The link delivers each datagram after ``latency`` seconds; with a seeded
``random.Random`` it may drop (``loss``), duplicate (``duplicate``) or delay
a datagram past later ones (``reorder``: an extra delay of up to 3 x latency).
A ``drop`` hook drops chosen datagrams (the tests' "lose the server's first
flight").  Time only moves when nothing is in flight before the next
deadline: to the next delivery or the next ``get_timer()`` of either end,
whose ``handle_timer()`` is then called.  Both connections read the same
``Clock`` through their Configuration's ``now``.

A server is started the way a DTLS server must be: the first datagrams of a
client go through ``DTLSConnection.accept`` until it returns a connection
(the stateless cookie exchange, RFC 9147 §5.1).
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from longtls.config import Configuration
from longtls.dtls_connection import DTLSConnection
from longtls.errors import ProtocolError
from longtls.events import ApplicationData, Event

CLIENT_ADDRESS = b"\x7f\x00\x00\x01\x13\x88"  # 127.0.0.1:5000


class Clock:
    """A settable clock for Configuration.now."""

    def __init__(self, start: float | None = None) -> None:
        # Real time by default: certificates are checked against it.
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now


#: (direction "c2s" or "s2c", datagram, index of the datagram in that direction) -> drop it?
DropHook = Callable[[str, bytes, int], bool]


@dataclass
class DatagramLink:
    client: DTLSConnection
    server_config: Configuration
    clock: Clock
    latency: float = 0.01
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    drop: DropHook | None = None
    mtu: int = 1200
    #: The server's DTLSConnection(extended_key_update=...): None follows the configuration.
    extended_key_update: bool | None = None
    server: DTLSConnection | None = None
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    #: Datagrams each way: sent by the ends, and delivered by the link.
    sent: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    delivered: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    #: Every datagram sent, per direction, in order (before loss).
    log: dict[str, list[bytes]] = field(default_factory=lambda: {"c2s": [], "s2c": []})
    #: Datagrams answered statelessly by DTLSConnection.accept (HelloRetryRequests).
    stateless_replies: int = 0
    #: Indexes (into ``log``) of the datagrams that reached the other end.
    arrived: dict[str, set[int]] = field(default_factory=lambda: {"c2s": set(), "s2c": set()})
    _queue: list[tuple[float, int, str, int, bytes]] = field(default_factory=list)
    _order: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # -- moving datagrams ------------------------------------------------------

    def _emit(self, direction: str, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            index = self.sent[direction]
            self.sent[direction] += 1
            self.log[direction].append(datagram)
            if self.drop is not None and self.drop(direction, datagram, index):
                continue
            if self.loss and self._rng.random() < self.loss:
                continue
            copies = 2 if self.duplicate and self._rng.random() < self.duplicate else 1
            for _ in range(copies):
                delay = self.latency
                if self.reorder and self._rng.random() < self.reorder:
                    delay += self._rng.uniform(0, 3 * self.latency)
                self._order += 1
                heapq.heappush(self._queue, (self.clock.now + delay, self._order, direction, index, datagram))

    def collect(self) -> None:
        """Take what both ends have to send, and their events."""
        self._emit("c2s", self.client.datagrams_to_send())
        if self.server is not None:
            self._emit("s2c", self.server.datagrams_to_send())
        self.client_events.extend(self.client.events())
        if self.server is not None:
            self.server_events.extend(self.server.events())

    def _deliver(self, direction: str, datagram: bytes) -> None:
        self.delivered[direction] += 1
        try:
            self._receive(direction, datagram)
        except ProtocolError:
            pass  # the end queued its alert and closed (ConnectionClosed); the tests read the events

    def _receive(self, direction: str, datagram: bytes) -> None:
        if direction == "s2c":
            self.client.receive_datagram(datagram)
            return
        if self.server is None:
            conn, replies = DTLSConnection.accept(
                self.server_config, CLIENT_ADDRESS, datagram, mtu=self.mtu, extended_key_update=self.extended_key_update
            )
            if conn is None:
                self.stateless_replies += bool(replies)
                self._emit("s2c", replies)
                return
            self.server = conn
            return
        self.server.receive_datagram(datagram)

    def _next_timer(self) -> float | None:
        timers = [t for t in (self.client.get_timer(), self.server.get_timer() if self.server else None) if t is not None]
        return min(timers) if timers else None

    def step(self) -> bool:
        """Deliver the next datagram or fire the next timer; False when nothing is left."""
        self.collect()
        timer = self._next_timer()
        arrival = self._queue[0][0] if self._queue else None
        if arrival is None and timer is None:
            return False
        if arrival is not None and (timer is None or arrival <= timer):
            when, _, direction, index, datagram = heapq.heappop(self._queue)
            self.clock.now = max(self.clock.now, when)
            self.arrived[direction].add(index)
            self._deliver(direction, datagram)
        else:
            assert timer is not None
            self.clock.now = max(self.clock.now, timer)
            for end in (self.client, self.server):
                if end is not None:
                    due = end.get_timer()
                    if due is not None and due <= self.clock.now:
                        end.handle_timer()
        self.collect()
        return True

    def run(self, until: Callable[[], bool] | None = None, *, max_seconds: float = 120.0, max_steps: int = 200_000) -> None:
        """Step until ``until()`` holds (or, without it, until the link is quiet:
        nothing in flight and no timer within ``quiet`` seconds)."""
        deadline = self.clock.now + max_seconds
        for _ in range(max_steps):
            self.collect()
            if until is not None and until():
                return
            if until is None and not self._queue:
                timer = self._next_timer()
                if timer is None or timer > self.clock.now + 5.0:
                    return
            if self.clock.now > deadline or not self.step():
                break
        if until is not None and not until():
            raise AssertionError(f"link stalled at t+{self.clock.now:g}: client={self.client!r} server={self.server!r}")

    def handshake(self, **kwargs: float) -> None:
        self.client.start_handshake()
        self.run(lambda: self.client.handshake_complete and self.server is not None and self.server.handshake_complete, **kwargs)

    def received(self, side: str) -> list[bytes]:
        events = self.client_events if side == "client" else self.server_events
        return [e.data for e in events if isinstance(e, ApplicationData)]
