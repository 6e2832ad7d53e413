"""The engines need nothing of their host but handshake.host.HandshakeHost.

Two engines complete a handshake over a host that has no TLS records at all
(no framing, no protection, no ChangeCipherSpec): the shape a DTLS
connection or an MLS channel will give them.  The secrets each side installs
must match the other side's, and both must reach the same exporter.
"""

from __future__ import annotations

from helpers.dtls_engines import MessageHost
from helpers.pair import configs
from longtls.config import Configuration
from longtls.events import HandshakeComplete
from longtls.handshake.client import ClientHandshake
from longtls.handshake.common import HandshakeEngine
from longtls.handshake.host import HandshakeHost
from longtls.handshake.server import ServerHandshake
from longtls.wire.messages import HandshakeReassembler


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
