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


class _NATSide(asyncio.DatagramProtocol):
    """One socket of ``NATRelay``: the client-facing one, or one server-facing mapping."""

    def __init__(self, relay: NATRelay, mapping: int | None) -> None:
        self.relay = relay
        self.mapping = mapping  # None: faces the client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.mapping is None:
            self.relay._from_client(data, (addr[0], addr[1]))
        else:
            self.relay._from_server(data, self.mapping)

    def error_received(self, exc: Exception) -> None:
        pass


class NATRelay:
    """A NAT in front of one client: client <-> relay port <-> mapping socket <-> server.

        relay = await NATRelay.start(("127.0.0.1", server_port))
        association = await aio.connect_dtls("127.0.0.1", relay.port, config)
        await relay.rebind()          # NAT rebinding: a new source port toward the server

    Each mapping is its own UDP socket, so the server sees the client at
    ``relay.address`` (the current mapping's port).  ``rebind()`` opens a new
    mapping for everything the client sends from then on; the old one stays
    open and still carries the server's datagrams to the client unless
    ``keep_old=False`` (a NAT that forgot it).  ``deliver_from[mapping] =
    False`` drops what the server sends to that mapping.  ``received[mapping]``
    counts datagrams from the server per mapping; ``sent_log`` keeps every
    datagram forwarded to the server, in order (an attacker's material).
    """

    def __init__(self, target: Address) -> None:
        self.target = target
        self.client: Address | None = None
        self.mappings: list[_NATSide] = []
        self.received: list[int] = []
        self.deliver_from: list[bool] = []
        self.sent_log: list[bytes] = []
        #: Called with each datagram from the client; False holds it back (not forwarded).
        self.forward_filter: Any = None
        self._front: _NATSide | None = None

    @classmethod
    async def start(cls, target: Address) -> NATRelay:
        relay = cls(target)
        loop = asyncio.get_running_loop()
        _, relay._front = await loop.create_datagram_endpoint(
            lambda: _NATSide(relay, None), local_addr=("127.0.0.1", 0)
        )
        await relay.rebind()
        return relay

    @property
    def port(self) -> int:
        assert self._front is not None and self._front.transport is not None
        return int(self._front.transport.get_extra_info("sockname")[1])

    def mapping_address(self, mapping: int) -> Address:
        transport = self.mappings[mapping].transport
        assert transport is not None
        host, port = transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    @property
    def address(self) -> Address:
        """Where the server sees the client now."""
        return self.mapping_address(len(self.mappings) - 1)

    async def rebind(self, *, keep_old: bool = True) -> Address:
        """Send the client's datagrams from a new source port from now on; the new address."""
        if self.mappings and not keep_old:
            old = self.mappings[-1].transport
            if old is not None:
                old.close()
        loop = asyncio.get_running_loop()
        mapping = len(self.mappings)
        _, side = await loop.create_datagram_endpoint(lambda: _NATSide(self, mapping), remote_addr=self.target)
        self.mappings.append(side)
        self.received.append(0)
        self.deliver_from.append(True)
        return self.address

    def _from_client(self, data: bytes, addr: Address) -> None:
        if self.client is None:
            self.client = addr
        if addr != self.client:
            return
        if self.forward_filter is not None and not self.forward_filter(data):
            return
        self.sent_log.append(data)
        transport = self.mappings[-1].transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data)

    def _from_server(self, data: bytes, mapping: int) -> None:
        self.received[mapping] += 1
        front = self._front
        if (
            self.deliver_from[mapping] and self.client is not None and front is not None
            and front.transport is not None and not front.transport.is_closing()
        ):
            front.transport.sendto(data, self.client)

    def close(self) -> None:
        for side in (self._front, *self.mappings):
            if side is not None and side.transport is not None:
                side.transport.close()
