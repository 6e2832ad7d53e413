"""longtls.aio's receive path (issue 16): ``TLSProtocol.data_received`` hands a
run of records to the reader as one piece (``Connection.receive_data_into``),
and the reader's flow control pauses the socket only when the application
does not read (``aio.protocol.ReaderFlowControl``).

The protocol is driven with the bytes of an in-memory peer ``Connection``
over a transport that records what it is asked, so the test decides exactly
which records arrive in one ``data_received`` and where TCP cuts them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from helpers.pair import configs
from longtls.aio.options import StreamOptions
from longtls.aio.protocol import TLSProtocol
from longtls.aio.streams import TLSReader
from longtls.connection import Connection
from longtls.events import ApplicationData, Direction, Event, KeyUpdated

MAX = 2**14


class Transport(asyncio.Transport):
    """Records writes and reading pauses; never closes by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.pauses = 0
        self.resumes = 0
        self.reading = True
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += data

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True
        self.resumes += 1

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4433) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0


async def established(**kwargs: Any) -> tuple[TLSProtocol, Transport, Connection, list[Event]]:
    """A server TLSProtocol over a recording transport, handshake done with an in-memory client."""
    client_cfg, server_cfg, _ = configs(**kwargs)
    events: list[Event] = []
    loop = asyncio.get_running_loop()
    protocol = TLSProtocol(
        server_cfg, StreamOptions(event_handler=events.append), reader=TLSReader(loop=loop),
    )
    transport = Transport()
    protocol.connection_made(transport)
    client = Connection(client_cfg)
    client.start_handshake()
    for _ in range(10):
        c2s = client.data_to_send()
        if c2s:
            protocol.data_received(c2s)
        s2c = transport.take()
        if s2c:
            client.receive_data(s2c)
        if not c2s and not s2c:
            break
    await protocol.handshake
    client.events()
    return protocol, transport, client, events


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_key_update_between_application_records_in_one_receive() -> None:
    """RFC 9846 §4.6.3: application records, a KeyUpdate, application records, all in one
    data_received: the reader gets every byte in order, the handlers the KeyUpdated event."""

    async def scenario() -> None:
        protocol, _, client, events = await established(
            client_extended_key_update=False, server_extended_key_update=False
        )
        before, after = b"b" * (3 * MAX + 5), b"a" * (2 * MAX + 7)
        client.send(before)
        client.update_keys(request_peer_update=False)
        client.send(after)
        protocol.data_received(client.data_to_send())
        assert await protocol.reader.readexactly(len(before) + len(after)) == before + after
        assert [(e.direction, e.generation) for e in events if isinstance(e, KeyUpdated)] == [(Direction.receive, 1)]
        assert protocol.bytes_received == len(before) + len(after)

    run(scenario())


def test_an_extended_key_update_between_application_records() -> None:
    """EKU (draft-13): the request arrives in one receive with records on each side of it,
    the response and records come back; bytes in order both ways, generation 1 on both ends."""

    async def scenario() -> None:
        protocol, transport, client, _ = await established()
        client.send(b"x" * 40000)
        client.extended_key_update()
        client.send(b"y" * 40000)
        protocol.data_received(client.data_to_send())
        assert await protocol.reader.readexactly(80000) == b"x" * 40000 + b"y" * 40000
        protocol.send(b"z" * 30000)  # after the server's answer, in the same bytes
        client.receive_data(transport.take())
        client.send(b"w" * 100)
        protocol.data_received(client.data_to_send())
        assert await protocol.reader.readexactly(100) == b"w" * 100
        received = b"".join(e.data for e in client.events() if isinstance(e, ApplicationData))
        assert received == b"z" * 30000
        assert client.key_generation == protocol.connection.key_generation == 1

    run(scenario())


def test_a_record_cut_at_every_offset_of_its_header() -> None:
    """A record split across two data_received calls at every offset of its 5-byte header
    (and just around it): nothing lost, nothing twice, in order."""

    async def scenario() -> None:
        protocol, _, client, _ = await established()
        expected = b""
        for cut_in_header in range(-1, 7):
            first, second = bytes([65 + cut_in_header]) * 1000, bytes([97 + cut_in_header]) * MAX
            client.send(first)
            client.send(second)
            wire = client.data_to_send()
            cut = 5 + 1000 + 1 + 16 + cut_in_header  # offset inside the second record's header
            protocol.data_received(wire[:cut])
            protocol.data_received(wire[cut:])
            expected += first + second
        assert await protocol.reader.readexactly(len(expected)) == expected

    run(scenario())


def test_a_reader_that_reads_keeps_the_socket_reading() -> None:
    """A receive past twice the reader's limit, read by the application on the next turn of
    the loop: the socket is not paused (no pause and resume per receive)."""

    async def scenario() -> None:
        protocol, transport, client, _ = await established()
        total = 0
        for _ in range(8):
            client.send(bytes(256 * 1024))
            protocol.data_received(client.data_to_send())
            total += len(await protocol.reader.read(1 << 20))
            await asyncio.sleep(0)
        assert total == 8 * 256 * 1024
        assert (transport.pauses, transport.resumes) == (0, 0)

    run(scenario())


def test_a_reader_that_does_not_read_pauses_the_socket_until_it_reads() -> None:
    """What asyncio's StreamReader asks for is still done, one turn of the loop later: past
    twice the limit with nobody reading the socket pauses; reading below the limit resumes it."""

    async def scenario() -> None:
        protocol, transport, client, _ = await established()
        client.send(bytes(256 * 1024))
        protocol.data_received(client.data_to_send())
        assert transport.pauses == 0  # not yet: the application may read on this turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert (transport.pauses, transport.reading) == (1, False)
        assert len(await protocol.reader.read(1 << 20)) == 256 * 1024
        assert (transport.resumes, transport.reading) == (1, True)

    run(scenario())
