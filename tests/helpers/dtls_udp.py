"""Drive one DTLSConnection over a real UDP socket (for interop tests).

A client driver owns a connection and a connected socket; a server driver
owns a bound socket and answers the first datagrams from a peer with
``DTLSConnection.accept`` (the stateless cookie exchange, RFC 9147 §5.1)
until a connection exists.  ``run(until)`` moves datagrams and fires the
connection's timers (``get_timer``/``handle_timer``) on the wall clock until
``until()`` holds, failing the test with what happened if it does not in time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from longtls.config import Configuration
from longtls.dtls_connection import DTLSConnection
from longtls.errors import ProtocolError
from longtls.events import ApplicationData, Event


def address_bytes(address: tuple[str, int]) -> bytes:
    """The client address as a DTLS cookie binds it: IPv4 address and port."""
    return socket.inet_aton(address[0]) + address[1].to_bytes(2, "big")


class UDPDriver:
    """One end of a DTLS association on a UDP socket."""

    def __init__(
        self,
        sock: socket.socket,
        connection: DTLSConnection | None = None,
        *,
        server_config: Configuration | None = None,
        mtu: int = 1200,
        on_event: Callable[[UDPDriver, Event], None] | None = None,
        drop: Callable[[str, int, bytes], bool] | None = None,
    ) -> None:
        assert (connection is None) != (server_config is None), "a client connection or a server configuration"
        self.sock = sock
        self.connection = connection
        self.server_config = server_config
        self.mtu = mtu
        self.on_event = on_event
        #: (direction "out" or "in", index in that direction, datagram) -> lose it.
        self.drop = drop
        self.dropped: list[tuple[str, int]] = []
        self._counts = {"out": 0, "in": 0}
        self.peer: tuple[str, int] | None = None
        self.events: list[Event] = []
        self.errors: list[ProtocolError] = []
        self.stateless_replies = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.peer_gone = False
        #: Every datagram received and sent, in order (for tests that look inside).
        self.received_datagrams: list[bytes] = []
        self.sent_datagrams: list[bytes] = []

    @classmethod
    def client(cls, connection: DTLSConnection, port: int, host: str = "127.0.0.1", **kwargs: object) -> UDPDriver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((host, port))
        driver = cls(sock, connection, **kwargs)  # type: ignore[arg-type]
        driver.peer = (host, port)
        return driver

    @classmethod
    def server(cls, config: Configuration, host: str = "127.0.0.1", **kwargs: object) -> UDPDriver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        return cls(sock, server_config=config, **kwargs)  # type: ignore[arg-type]

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def received(self) -> list[bytes]:
        return [e.data for e in self.events if isinstance(e, ApplicationData)]

    def _flush(self) -> None:
        conn = self.connection
        if conn is None:
            return
        for _ in range(2):  # an event handler may queue more
            for datagram in conn.datagrams_to_send():
                assert self.peer is not None
                if self._lost("out", datagram):
                    continue
                self.sock.sendto(datagram, self.peer)
                self.datagrams_sent += 1
                self.sent_datagrams.append(datagram)
            for event in conn.events():
                self.events.append(event)
                if self.on_event is not None:
                    self.on_event(self, event)

    def _lost(self, direction: str, datagram: bytes) -> bool:
        index = self._counts[direction]
        self._counts[direction] += 1
        if self.drop is not None and self.drop(direction, index, datagram):
            self.dropped.append((direction, index))
            return True
        return False

    def _receive(self, data: bytes, address: tuple[str, int]) -> None:
        if self._lost("in", data):
            return
        self.datagrams_received += 1
        self.received_datagrams.append(data)
        if self.connection is None:
            assert self.server_config is not None
            conn, replies = DTLSConnection.accept(self.server_config, address_bytes(address), data, mtu=self.mtu)
            for reply in replies:
                self.sock.sendto(reply, address)
            self.stateless_replies += bool(replies)
            if conn is not None:
                self.connection, self.peer = conn, address
            return
        if address != self.peer:
            return  # one association per driver
        try:
            self.connection.receive_datagram(data)
        except ProtocolError as exc:
            self.errors.append(exc)

    def run(self, until: Callable[[], bool], timeout: float = 10.0, describe: Callable[[], str] = str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._flush()
            if until():
                return
            now = time.monotonic()
            if now >= deadline:
                pytest.fail(
                    f"DTLS association did not get there in {timeout}s: {self.connection!r}, "
                    f"errors {self.errors}, events {self.events}\n{describe()}",
                    pytrace=False,
                )
            conn = self.connection
            timer = conn.get_timer() if conn is not None else None
            wait = deadline - now
            if timer is not None:
                wait = min(wait, max(0.0, timer - time.time()))
            self.sock.settimeout(max(0.001, min(wait, 0.2)))
            try:
                data, address = self.sock.recvfrom(65536)
            except ConnectionRefusedError:
                # ICMP port unreachable for a datagram we sent: the peer's
                # process has gone (a UDP socket reports it on the next call).
                self.peer_gone = True
                continue
            except TimeoutError:
                if conn is not None:
                    try:
                        conn.handle_timer()
                    except ProtocolError as exc:
                        self.errors.append(exc)
                continue
            self._receive(data, address)

    def close(self) -> None:
        self.sock.close()
