"""Client and server handshake engines driven over a host with no records (TLS or DTLS).

Whole handshake messages go from one engine to the other, the shape a DTLS
connection gives them once its reliability layer reassembled them; the tests
of the DTLS engines (transport=DTLS) and of what they negotiate use it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from longtls.config import Configuration
from longtls.constants import CipherSuite, HandshakeType, NamedGroup
from longtls.crypto.groups import KeyShare, get_group
from longtls.crypto.suites import SuiteInfo
from longtls.events import Event
from longtls.handshake.client import ClientHandshake
from longtls.handshake.common import HandshakeEngine
from longtls.handshake.host import HandshakeHost
from longtls.handshake.server import ServerHandshake
from longtls.handshake.transport import DTLS, Transport

from .pair import configs

ADDRESS = b"\x7f\x00\x00\x01\x13\x88"  # 127.0.0.1:5000, as a connection might name it
CLIENT_X25519 = bytes(range(1, 33))
SERVER_X25519 = bytes(range(101, 133))


@dataclass
class MessageHost:
    """A HandshakeHost that hands whole handshake messages to its peer."""

    client_random: bytes = b""
    outbox: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    read_secrets: list[bytes] = field(default_factory=list)
    write_secrets: list[bytes] = field(default_factory=list)
    ccs_points: int = 0
    done: bool = False
    #: Labels of the secrets the engine logged (never the secrets).
    logged: list[str] = field(default_factory=list)
    #: The engine whose resumption secret this host reports, as a connection does.
    engine: HandshakeEngine | None = None

    def queue_handshake(self, message: bytes) -> None:
        self.outbox.append(message)

    def compatibility_ccs(self) -> None:
        self.ccs_points += 1

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
        secrets = self.engine.secrets if self.engine is not None else None
        return secrets.resumption_secret if secrets is not None else b""

    @property
    def key_generation(self) -> int:
        return 0

    @property
    def post_handshake_transcript_hash(self) -> bytes | None:
        return None

    def take(self) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out


def as_host(host: MessageHost) -> HandshakeHost:
    return host  # mypy checks that MessageHost is a HandshakeHost


def feed(engine: HandshakeEngine, messages: list[bytes]) -> None:
    for raw in messages:
        engine.handle(raw[0], raw[4:], raw)


def x25519_factory(private: bytes) -> Callable[[NamedGroup], KeyShare]:
    def factory(group: NamedGroup) -> KeyShare:
        if group != NamedGroup.x25519:
            return get_group(group).generate()  # only x25519 secrets are checked
        return get_group(group).from_private_bytes(private)
    return factory


def engine_configs(**kwargs: object) -> tuple[Configuration, Configuration]:
    """x25519 with known private keys, one suite, no EKU, no tickets unless asked."""
    settings: dict[str, object] = {
        "client_extended_key_update": False,
        "server_extended_key_update": False,
        "server_session_tickets": 0,
        "client_cipher_suites": (CipherSuite.TLS_AES_128_GCM_SHA256,),
        "client_groups": (NamedGroup.x25519, NamedGroup.secp256r1),
        "client_key_share_groups": (NamedGroup.x25519,),
        "client_key_share_factory": x25519_factory(CLIENT_X25519),
        "server_cipher_suites": (CipherSuite.TLS_AES_128_GCM_SHA256,),
        "server_groups": (NamedGroup.x25519, NamedGroup.secp256r1),
        "server_key_share_factory": x25519_factory(SERVER_X25519),
    }
    settings.update(kwargs)
    client, server, _ = configs(**settings)
    return client, server


@dataclass
class Run:
    client: ClientHandshake
    server: ServerHandshake
    client_host: MessageHost
    server_host: MessageHost
    #: Every message in the order it was delivered (both directions).
    wire: list[bytes]


def drive_handshake(
    client_cfg: Configuration, server_cfg: Configuration, transport: Transport = DTLS,
    server_factory: Callable[[MessageHost], ServerHandshake] | None = None,
) -> Run:
    """Client and server engines, messages passed until both are quiet.

    ``server_factory`` builds the server engine; by default one DTLS server
    whose cookie exchange is off, unless the configuration says otherwise."""
    client_host, server_host = MessageHost(), MessageHost()
    client = ClientHandshake(as_host(client_host), client_cfg, transport)
    server = (
        server_factory(server_host) if server_factory is not None
        else ServerHandshake(as_host(server_host), server_cfg, transport, ADDRESS)
    )
    client_host.engine, server_host.engine = client, server
    wire: list[bytes] = []
    client.start()
    for _ in range(10):
        to_server, to_client = client_host.take(), []
        wire += to_server
        feed(server, to_server)
        to_client = server_host.take()
        wire += to_client
        feed(client, to_client)
        if not to_server and not to_client:
            break
    return Run(client, server, client_host, server_host, wire)


def parse_extensions(block: bytes) -> dict[int, bytes]:
    """A raw extensions block (after its length), parsed by hand."""
    out, pos = {}, 0
    while pos < len(block):
        ext_type, length = struct.unpack_from(">HH", block, pos)
        out[ext_type] = block[pos + 4: pos + 4 + length]
        pos += 4 + length
    assert pos == len(block)
    return out


def parse_dtls_client_hello(raw: bytes) -> tuple[int, bytes, bytes, dict[int, bytes]]:
    """legacy_version, legacy_session_id, legacy_cookie and extensions of a
    DTLS 1.3 ClientHello (RFC 9147 §5.3), read byte by byte."""
    assert raw[0] == HandshakeType.client_hello
    assert int.from_bytes(raw[1:4], "big") == len(raw) - 4
    body = raw[4:]
    version = int.from_bytes(body[0:2], "big")
    pos = 2 + 32
    sid = body[pos + 1: pos + 1 + body[pos]]
    pos += 1 + len(sid)
    cookie = body[pos + 1: pos + 1 + body[pos]]
    pos += 1 + len(cookie)
    suites_length = int.from_bytes(body[pos: pos + 2], "big")
    pos += 2 + suites_length
    pos += 1 + body[pos]  # legacy_compression_methods
    exts_length = int.from_bytes(body[pos: pos + 2], "big")
    pos += 2
    assert pos + exts_length == len(body)
    return version, sid, cookie, parse_extensions(body[pos:])


def parse_server_hello(raw: bytes) -> tuple[int, bytes, bytes, dict[int, bytes]]:
    """legacy_version, random, legacy_session_id_echo and extensions."""
    assert raw[0] == HandshakeType.server_hello
    body = raw[4:]
    sid_length = body[34]
    pos = 35 + sid_length + 2 + 1
    return (
        int.from_bytes(body[0:2], "big"), body[2:34], body[35: 35 + sid_length],
        parse_extensions(body[pos + 2:]),
    )
