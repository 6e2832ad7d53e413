"""Pair two longtls Connections in memory, passing bytes until both are quiet."""

from __future__ import annotations

from dataclasses import dataclass, field

from longtls.config import Configuration
from longtls.connection import Connection
from longtls.crypto.certificates import TrustStore
from longtls.events import ApplicationData, Event

from .pki import Credential, make_ca, make_leaf


@dataclass
class Pair:
    client: Connection
    server: Connection
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)

    def step(self) -> None:
        """One round trip's worth of bytes, leaving later replies in flight."""
        c2s = self.client.data_to_send()
        if c2s:
            self.server.receive_data(c2s)
        self.client_events.extend(self.client.events())
        self.server_events.extend(self.server.events())

    def pump(self, max_rounds: int = 100) -> None:
        """Move bytes both ways until neither side has anything to send."""
        for _ in range(max_rounds):
            c2s = self.client.data_to_send()
            if c2s:
                self.server.receive_data(c2s)
            s2c = self.server.data_to_send()
            if s2c:
                self.client.receive_data(s2c)
            self.client_events.extend(self.client.events())
            self.server_events.extend(self.server.events())
            if not c2s and not s2c:
                return
        raise AssertionError("connections kept talking")

    def received(self, side: str) -> bytes:
        events = self.client_events if side == "client" else self.server_events
        return b"".join(e.data for e in events if isinstance(e, ApplicationData))


def configs(
    key_type: str = "ecdsa-p256", *, ca: Credential | None = None, **kwargs: object
) -> tuple[Configuration, Configuration, Credential]:
    """A client and a server configuration trusting a fresh CA."""
    ca = ca or make_ca(key_type)
    leaf = make_leaf(ca, key_type)
    client_kw = {k[7:]: v for k, v in kwargs.items() if k.startswith("client_")}
    server_kw = {k[7:]: v for k, v in kwargs.items() if k.startswith("server_")}
    # Tests drive extended key updates back to back; a server's default pacing
    # (1 s, Configuration.eku_min_interval) would defer every second one.  The
    # default itself is tested in test_safe_defaults.py; pass server_eku_min_interval
    # to test pacing.
    server_kw.setdefault("eku_min_interval", 0.0)
    store = TrustStore([ca.cert])
    client = Configuration(is_client=True, server_name="localhost", trust_store=store, **client_kw)  # type: ignore[arg-type]
    server = Configuration(
        is_client=False, certificate_chain=leaf.chain, private_key=leaf.key, trust_store=store,
        **server_kw,  # type: ignore[arg-type]
    )
    return client, server, ca


def connect(client_cfg: Configuration, server_cfg: Configuration) -> Pair:
    pair = Pair(Connection(client_cfg), Connection(server_cfg))
    pair.client.start_handshake()
    pair.pump()
    return pair
