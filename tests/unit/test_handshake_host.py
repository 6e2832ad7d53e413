"""The engines need nothing of their host but handshake.host.HandshakeHost.

Two engines complete a handshake over a host that has no TLS records at all
(no framing, no protection, no ChangeCipherSpec): the shape a DTLS
connection or an MLS channel will give them.  The secrets each side installs
must match the other side's, and both must reach the same exporter.
"""

from __future__ import annotations

from helpers.pair import configs
from longtls.config import Configuration
from longtls.crypto.suites import SuiteInfo
from longtls.events import Event, HandshakeComplete
from longtls.handshake.client import ClientHandshake
from longtls.handshake.common import HandshakeEngine
from longtls.handshake.host import HandshakeHost
from longtls.handshake.server import ServerHandshake
from longtls.wire.messages import HandshakeReassembler


class MessageHost:
    """A HandshakeHost that hands whole handshake messages to a peer: no records."""

    def __init__(self) -> None:
        self.client_random = b""
        self.outbox: list[bytes] = []
        self.events: list[Event] = []
        self.read_secrets: list[bytes] = []
        self.write_secrets: list[bytes] = []
        self.ccs_points = 0
        self.done = False
        self.logged: list[str] = []

    def queue_handshake(self, message: bytes) -> None:
        self.outbox.append(message)

    def compatibility_ccs(self) -> None:
        self.ccs_points += 1  # a transport without ChangeCipherSpec ignores it

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def set_read_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        self.read_secrets.append(secret)

    def set_write_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        self.write_secrets.append(secret)

    @property
    def current_read_secret(self) -> bytes:
        return self.read_secrets[-1]

    @property
    def current_write_secret(self) -> bytes:
        return self.write_secrets[-1]

    def log_secret(self, label: str, secret: bytes) -> None:
        self.logged.append(label)

    def handshake_done(self) -> None:
        self.done = True

    def post_handshake_auth_done(self) -> None:
        pass

    def check_client_auth_may_start(self, requested_by_peer: bool) -> None:
        pass

    def set_peer_record_size_limit(self, limit: int) -> None:
        pass

    def enforce_record_size_limit(self) -> None:
        pass

    @property
    def resumption_secret(self) -> bytes:
        return b""

    @property
    def key_generation(self) -> int:
        return 0

    @property
    def post_handshake_transcript_hash(self) -> bytes | None:
        return None


def _deliver(source: MessageHost, engine: HandshakeEngine) -> None:
    reassembler = HandshakeReassembler()
    for message in source.outbox:
        reassembler.feed(message)
        while (popped := reassembler.pop()) is not None:
            engine.handle(*popped)
    source.outbox.clear()


def _run(client_cfg: Configuration, server_cfg: Configuration) -> tuple[MessageHost, MessageHost, HandshakeEngine, HandshakeEngine]:
    client_host, server_host = MessageHost(), MessageHost()
    hosts: tuple[HandshakeHost, HandshakeHost] = (client_host, server_host)  # mypy: they are hosts
    client = ClientHandshake(hosts[0], client_cfg)
    server = ServerHandshake(hosts[1], server_cfg)
    client.start()
    for _ in range(10):
        if not client_host.outbox and not server_host.outbox:
            break
        _deliver(client_host, server)
        _deliver(server_host, client)
    return client_host, server_host, client, server


def test_a_handshake_over_a_host_without_records() -> None:
    c, s, _ = configs()
    client_host, server_host, client, server = _run(c, s)
    assert client_host.done and server_host.done
    assert client.complete and server.complete
    assert any(isinstance(e, HandshakeComplete) for e in client_host.events)
    assert any(isinstance(e, HandshakeComplete) for e in server_host.events)
    # Each side reads with the secrets the other writes with: handshake, then application.
    assert client_host.read_secrets == server_host.write_secrets
    assert server_host.read_secrets == client_host.write_secrets
    assert len(client_host.write_secrets) == 2
    assert client.export(b"label", b"", 32) == server.export(b"label", b"", 32)
    # The engine says where a compatibility CCS may go; this host sends none.
    assert client_host.ccs_points == 1 and server_host.ccs_points == 1
    assert "CLIENT_TRAFFIC_SECRET_0" in client_host.logged
