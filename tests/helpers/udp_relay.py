"""A real asyncio UDP relay that loses, duplicates and reorders datagrams.

    relay = await UDPRelay.start(("127.0.0.1", server_port), loss=0.2, duplicate=0.1, reorder=0.1, seed=7)
    association = await aio.connect_dtls("127.0.0.1", relay.port, config)
    ...
    relay.close()

The relay listens on one loopback port; the first address that sends to it is
the client.  Each datagram, in each direction, is dropped with probability
``loss``; a survivor is sent twice with probability ``duplicate``, and held
back with probability ``reorder`` until the next datagram in the same
direction has gone (or ``hold`` seconds have passed), so it arrives after a
later one.  One seeded ``random.Random`` makes every decision, so a run's
pattern of losses depends only on the seed and on the order datagrams reach
the relay.  ``stats`` counts what happened per direction.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, cast

Address = tuple[str, int]


@dataclass
class DirectionStats:
    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


@dataclass
class RelayStats:
    to_server: DirectionStats = field(default_factory=DirectionStats)
    to_client: DirectionStats = field(default_factory=DirectionStats)


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: UDPRelay, to_server: bool) -> None:
        self.relay = relay
        self.to_server = to_server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's selector datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._arrived(data, addr, self.to_server)

    def error_received(self, exc: Exception) -> None:
        pass  # the far end went away: a lossy link does not care


class UDPRelay:
    """Client <-> relay port <-> (own socket) <-> server, with seeded impairments."""

    def __init__(
        self, target: Address, *, loss: float, duplicate: float, reorder: float, seed: int, hold: float
    ) -> None:
        self.target = target
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.hold = hold
        self.random = random.Random(seed)
        self.stats = RelayStats()
        self.client: Address | None = None
        self._front: _Side | None = None  # faces the client
        self._back: _Side | None = None  # faces the server
        self._held: dict[bool, tuple[bytes, asyncio.TimerHandle] | None] = {True: None, False: None}

    @classmethod
    async def start(
        cls, target: Address, *, loss: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0,
        seed: int = 0, hold: float = 0.05,
    ) -> UDPRelay:
        relay = cls(target, loss=loss, duplicate=duplicate, reorder=reorder, seed=seed, hold=hold)
        loop = asyncio.get_running_loop()
        _, relay._front = await loop.create_datagram_endpoint(
            lambda: _Side(relay, to_server=True), local_addr=("127.0.0.1", 0)
        )
        _, relay._back = await loop.create_datagram_endpoint(
            lambda: _Side(relay, to_server=False), remote_addr=target
        )
        return relay

    @property
    def port(self) -> int:
        assert self._front is not None and self._front.transport is not None
        return int(self._front.transport.get_extra_info("sockname")[1])

    def _arrived(self, data: bytes, addr: Any, to_server: bool) -> None:
        stats = self.stats.to_server if to_server else self.stats.to_client
        stats.received += 1
        if to_server:
            if self.client is None:
                self.client = (addr[0], addr[1])
            elif (addr[0], addr[1]) != self.client:
                return  # one client per relay
        rng = self.random
        if rng.random() < self.loss:
            stats.dropped += 1
            return
        copies = 2 if rng.random() < self.duplicate else 1
        stats.duplicated += copies - 1
        if self._held[to_server] is None and rng.random() < self.reorder:
            # Held back until the next datagram this way has gone: reordered.
            stats.reordered += 1
            handle = asyncio.get_running_loop().call_later(self.hold, self._release, to_server)
            self._held[to_server] = (data, handle)
            for _ in range(copies - 1):
                self._forward(data, to_server)
            return
        for _ in range(copies):
            self._forward(data, to_server)
        self._release(to_server)

    def _release(self, to_server: bool) -> None:
        held = self._held[to_server]
        if held is None:
            return
        self._held[to_server] = None
        data, handle = held
        handle.cancel()
        self._forward(data, to_server)

    def _forward(self, data: bytes, to_server: bool) -> None:
        stats = self.stats.to_server if to_server else self.stats.to_client
        if to_server:
            side = self._back
            if side is not None and side.transport is not None and not side.transport.is_closing():
                side.transport.sendto(data)
                stats.forwarded += 1
        else:
            side = self._front
            if (
                self.client is not None and side is not None and side.transport is not None
                and not side.transport.is_closing()
            ):
                side.transport.sendto(data, self.client)
                stats.forwarded += 1

    def close(self) -> None:
        for to_server in (True, False):
            held = self._held[to_server]
            if held is not None:
                held[1].cancel()
                self._held[to_server] = None
        for side in (self._front, self._back):
            if side is not None and side.transport is not None:
                side.transport.close()
