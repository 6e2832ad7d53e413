"""1,000 extended key updates over a real socket while a megabyte flows each way.

Two longtls Connections in one thread, joined by a connected pair of
non-blocking TCP-like stream sockets: updates are started alternately by the
client and the server while each side streams 1 MiB; the received bytes must
hash the same as the sent ones, for every profile and group.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import socket

import pytest

from helpers.pair import configs
from longtls.connection import Connection
from longtls.constants import NamedGroup
from longtls.events import ApplicationData, KeyUpdateCompleted
from longtls.handshake.eku_profiles import PROFILES

UPDATES = 1000
STREAM = 1 << 20
CHUNK = STREAM // UPDATES + 1  # the stream lasts as long as the updates do


class End:
    def __init__(self, conn: Connection, sock: socket.socket, data: bytes) -> None:
        self.conn, self.sock = conn, sock
        self.to_send = memoryview(data)
        self.received = hashlib.sha256()
        self.received_bytes = 0
        self.completed = 0
        self.out = bytearray()

    def flush(self) -> None:
        self.out += self.conn.data_to_send()
        if self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                return
            del self.out[:n]

    def read(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        self.conn.receive_data(data)
        for event in self.conn.events():
            if isinstance(event, ApplicationData):
                self.received.update(event.data)
                self.received_bytes += len(event.data)
            elif isinstance(event, KeyUpdateCompleted):
                self.completed = event.generation


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize(
    "group",
    [NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.X25519MLKEM768, NamedGroup.MLKEM768],
    ids=lambda g: g.name,
)
def test_thousand_updates_while_streaming(group: NamedGroup, profile: str) -> None:
    c, s, _ = configs(
        client_groups=[group], client_key_share_groups=[group], client_eku_profile=profile,
        server_eku_profile=profile,
    )
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    client_data, server_data = os.urandom(STREAM), os.urandom(STREAM)
    client = End(Connection(c), a, client_data)
    server = End(Connection(s), b, server_data)
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, client)
    sel.register(b, selectors.EVENT_READ, server)
    client.conn.start_handshake()
    started = 0
    try:
        for _ in range(200_000):
            for end in (client, server):
                if end.conn.handshake_complete and end.to_send:
                    end.conn.send(bytes(end.to_send[:CHUNK]))
                    end.to_send = end.to_send[CHUNK:]
                end.flush()
            # Start the next update (alternating initiators) once the last one is done.
            if (
                client.conn.handshake_complete and server.conn.handshake_complete
                and started < UPDATES and client.completed == server.completed == started
            ):
                initiator = client if started % 2 == 0 else server
                initiator.conn.extended_key_update()
                initiator.flush()
                started += 1
            for key, _mask in sel.select(timeout=0.5):
                key.data.read()
            if (
                started == UPDATES and client.completed == server.completed == UPDATES
                and client.received_bytes == STREAM and server.received_bytes == STREAM
            ):
                break
        else:
            raise AssertionError("did not finish")
    finally:
        sel.close()
        a.close()
        b.close()
    assert client.conn.key_generation == server.conn.key_generation == UPDATES
    assert server.received.digest() == hashlib.sha256(client_data).digest()
    assert client.received.digest() == hashlib.sha256(server_data).digest()
