"""Two longtls peers for Certificate Update tests, over TLS or DTLS, in memory.

``peers("tls" | "dtls", ...)`` connects a client and a server (ECDSA P-256
certificates from one CA, the client's own certificate too) and returns a
``Peers`` whose ``settle()`` moves bytes until both ends are quiet, catching
the protocol errors a test provokes (the ends queue their alert and a
ConnectionClosed event, which the tests read).

Also here: ``inject`` puts any handshake message on the wire from one end
(a misbehaving peer), and ``request_for`` reads the authenticator request an
end may answer with its next CertificateUpdate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from longtls.config import ClientAuth, Configuration
from longtls.connection import Connection
from longtls.connection_core import ConnectionCore
from longtls.constants import AlertDescription
from longtls.dtls_connection import DTLSConnection
from longtls.errors import ProtocolError
from longtls.events import (
    ApplicationData,
    CertificateUpdated,
    CertificateUpdateDirection,
    ConnectionClosed,
    Event,
)
from longtls.wire.messages import encode_handshake

from .dtls_link import Clock, DatagramLink
from .pair import configs
from .pki import Credential, make_ca, make_leaf
from .renewal import renew


@dataclass(frozen=True)
class Pki:
    ca: Credential
    server: Credential
    client: Credential


@functools.cache
def pki() -> Pki:
    """One CA, a server and a client certificate, made once per test run."""
    ca = make_ca("ecdsa-p256")
    return Pki(ca, make_leaf(ca, "ecdsa-p256"), make_leaf(ca, "ecdsa-p256", client=True))


@dataclass
class Peers:
    transport: str
    client: ConnectionCore
    server: ConnectionCore
    _settle: Callable[[], None]
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    link: DatagramLink | None = None

    def settle(self) -> None:
        self._settle()

    def events(self, side: str) -> list[Event]:
        return self.client_events if side == "client" else self.server_events

    def conn(self, side: str) -> ConnectionCore:
        return self.client if side == "client" else self.server

    def updates(self, side: str, direction: CertificateUpdateDirection) -> list[CertificateUpdated]:
        return [e for e in self.events(side) if isinstance(e, CertificateUpdated) and e.direction is direction]

    def closed(self, side: str) -> ConnectionClosed | None:
        found = [e for e in self.events(side) if isinstance(e, ConnectionClosed)]
        return found[0] if found else None

    def received(self, side: str) -> bytes:
        return b"".join(e.data for e in self.events(side) if isinstance(e, ApplicationData))

    def assert_alert(self, receiver: str, alert: AlertDescription) -> None:
        """``receiver`` ended the connection with ``alert``, and the other end got it."""
        other = "server" if receiver == "client" else "client"
        mine, theirs = self.closed(receiver), self.closed(other)
        assert mine is not None and mine.alert is alert and not mine.by_peer, (mine, alert)
        assert theirs is not None and theirs.alert is alert and theirs.by_peer, (theirs, alert)


def peers(
    transport: str, *, client_certificate: bool = True, client_auth: ClientAuth = ClientAuth.REQUIRED,
    server_pki: Credential | None = None, ca: Credential | None = None, **kwargs: Any,
) -> Peers:
    """A connected client and server.  kwargs: ``client_*`` / ``server_*``
    Configuration fields, ``link_*`` DatagramLink fields (DTLS)."""
    p = pki()
    ca = ca or p.ca
    clock = Clock()
    link_kw = {k[5:]: v for k, v in kwargs.items() if k.startswith("link_")}
    cfg_kw = {k: v for k, v in kwargs.items() if not k.startswith("link_")}
    if client_certificate:
        cfg_kw.setdefault("client_certificate_chain", p.client.chain)
        cfg_kw.setdefault("client_private_key", p.client.key)
    client_cfg, server_cfg, _ = configs(
        ca=ca, server_client_auth=client_auth, client_now=clock, server_now=clock, **cfg_kw
    )
    server_cred = server_pki or p.server
    server_cfg.certificate_chain, server_cfg.private_key = server_cred.chain, server_cred.key
    if transport == "tls":
        return _tls(client_cfg, server_cfg)
    return _dtls(client_cfg, server_cfg, clock, link_kw)


def _tls(client_cfg: Configuration, server_cfg: Configuration) -> Peers:
    client, server = Connection(client_cfg), Connection(server_cfg)
    result = Peers("tls", client, server, lambda: None)

    def settle() -> None:
        for _ in range(1000):
            c2s = client.data_to_send()
            if c2s:
                try:
                    server.receive_data(c2s)
                except ProtocolError:
                    pass  # the server queued its alert and closed
            s2c = server.data_to_send()
            if s2c:
                try:
                    client.receive_data(s2c)
                except ProtocolError:
                    pass
            result.client_events.extend(client.events())
            result.server_events.extend(server.events())
            if not c2s and not s2c:
                return
        raise AssertionError("the connections kept talking")

    result._settle = settle
    client.start_handshake()
    settle()
    assert client.handshake_complete and server.handshake_complete
    return result


def _dtls(client_cfg: Configuration, server_cfg: Configuration, clock: Clock, link_kw: dict[str, Any]) -> Peers:
    link = DatagramLink(DTLSConnection(client_cfg, mtu=link_kw.get("mtu", 1200)), server_cfg, clock, **link_kw)
    link.handshake()
    assert link.server is not None
    result = Peers("dtls", link.client, link.server, lambda: None, link.client_events, link.server_events, link)

    def settle() -> None:
        # Until nothing is in flight and no retransmission is due: the quiet link.
        link.run(max_seconds=600.0)

    result._settle = settle
    return result


def inject(conn: ConnectionCore, msg_type: int, body: bytes) -> None:
    """``conn`` sends a handshake message of our choosing (a misbehaving peer)."""
    conn._command(lambda: conn.queue_handshake(encode_handshake(msg_type, body)))


def request_for(conn: ConnectionCore) -> bytes:
    """The peer's unused authenticator request ``conn`` holds (what its next
    CertificateUpdate must answer)."""
    updates = conn._certificate_updates
    assert updates is not None and updates._peer_request is not None
    return updates._peer_request


def renewed(cred: Credential) -> Credential:
    """A fresh renewal of ``cred`` (same identity, new key, serial and dates)."""
    return renew(cred)
