"""longtls operations: a client and a server Connection paired in memory.

Both ends run in this process and bytes move between them by hand, exactly as
an application would move them to and from a socket; nothing is skipped (the
client verifies the server's chain and name, tickets are processed).
"""

from __future__ import annotations

import dataclasses
import os

from harness import HANDSHAKE_SUITE, RECORD_SIZE, SUITES, Operation, Pki

from longtls.config import Configuration
from longtls.connection import Connection
from longtls.constants import CipherSuite, NamedGroup
from longtls.crypto.certificates import TrustStore
from longtls.crypto.groups import get_group
from longtls.events import (
    ApplicationData,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    SessionTicket,
    SessionTicketReceived,
)
from longtls.mls_connection import MLSConnection


def configs(
    pki: Pki, group: str, suite: str = HANDSHAKE_SUITE, *, eku: bool = True
) -> tuple[Configuration, Configuration]:
    """Client and server configurations offering exactly one group and one suite.

    ``eku=False`` turns Extended Key Update off on both ends, which resumption
    needs: draft-13 EKU makes the server send no tickets.
    """
    named = NamedGroup[group]
    cipher = CipherSuite[SUITES[suite][0]]
    common = {"groups": (named,), "cipher_suites": (cipher,), "extended_key_update": eku}
    client = Configuration(
        is_client=True, server_name="localhost", trust_store=TrustStore([pki.ca_cert]),
        key_share_groups=(named,), **common,  # type: ignore[arg-type]
    )
    server = Configuration(
        is_client=False, certificate_chain=list(pki.chain), private_key=pki.key,
        # The EKU benchmark measures updates back to back on one connection:
        # no pacing (a server's default answers one update a second).
        eku_min_interval=0.0,
        **common,  # type: ignore[arg-type]
    )
    return client, server


def pump(client: Connection | MLSConnection, server: Connection | MLSConnection) -> None:
    """Move bytes both ways until neither side has anything to send."""
    while True:
        c2s = client.data_to_send()
        if c2s:
            server.receive_data(c2s)
        s2c = server.data_to_send()
        if s2c:
            client.receive_data(s2c)
        if not c2s and not s2c:
            return


def handshake(
    client_cfg: Configuration, server_cfg: Configuration
) -> tuple[Connection, Connection, list[Event]]:
    """A complete handshake (tickets included); the client's events."""
    client, server = Connection(client_cfg), Connection(server_cfg)
    client.start_handshake()
    pump(client, server)
    server.events()
    events = client.events()
    if not any(isinstance(e, HandshakeComplete) for e in events):
        raise RuntimeError(f"longtls handshake did not complete: {events}")
    return client, server, events


def _ticket(events: list[Event]) -> SessionTicket:
    tickets = [e.ticket for e in events if isinstance(e, SessionTicketReceived)]
    if not tickets:
        raise RuntimeError("longtls server sent no session ticket")
    return tickets[-1]


def handshake_operation(pki: Pki, group: str, resumed: bool = False) -> Operation:
    """One full handshake per call, or one resumed (psk_dhe_ke) handshake with
    the ticket of the previous connection (tickets are single use: RFC 9846
    Appendix C.4)."""
    client_cfg, server_cfg = configs(pki, group, eku=not resumed)
    state = {"config": client_cfg}
    if resumed:
        _, _, events = handshake(client_cfg, server_cfg)
        state["config"] = dataclasses.replace(client_cfg, session_ticket=_ticket(events))

    def op() -> float:
        _, _, events = handshake(state["config"], server_cfg)
        done = next(e for e in events if isinstance(e, HandshakeComplete))
        if done.resumed != resumed:
            raise RuntimeError(f"longtls handshake resumed={done.resumed}, wanted {resumed}")
        if resumed:
            state["config"] = dataclasses.replace(client_cfg, session_ticket=_ticket(events))
        return 1.0

    op()
    return op


def bulk_operation(pki: Pki, suite: str, write_size: int) -> Operation:
    """Client ``send`` of ``write_size`` bytes, sealed into 16 KiB records, opened
    by the server; returns the bytes delivered as ApplicationData."""
    client, server, _ = handshake(*configs(pki, "x25519", suite))
    data = os.urandom(write_size)

    def op() -> float:
        client.send(data)
        server.receive_data(client.data_to_send())
        got = sum(len(e.data) for e in server.events() if isinstance(e, ApplicationData))
        if got != write_size:
            raise RuntimeError(f"longtls delivered {got} of {write_size} bytes")
        return float(got)

    op()
    if client.peer_record_size_limit <= RECORD_SIZE:  # the limit counts the content type
        raise RuntimeError("records are smaller than 16 KiB: check record_size_limit")
    return op


def eku_operation(pki: Pki, group: str) -> Operation:
    """One Extended Key Update (draft-13) started by the client, to completion."""
    client, server, events = handshake(*configs(pki, group))
    done = next(e for e in events if isinstance(e, HandshakeComplete))
    if not done.extended_key_update:
        raise RuntimeError("Extended Key Update was not negotiated")

    def op() -> float:
        client.extended_key_update()
        pump(client, server)
        server.events()
        if not any(isinstance(e, KeyUpdateCompleted) for e in client.events()):
            raise RuntimeError("extended key update did not complete")
        return 1.0

    op()
    return op


def key_exchange_operation(group: str) -> Operation:
    """The key exchange of one update and nothing else: a key share, the peer's
    response (encapsulation for ML-KEM) and its completion, with longtls' own
    group code (``longtls.crypto.groups``) over pyca/cryptography."""
    g = get_group(NamedGroup[group])

    def op() -> float:
        share = g.generate()
        response, secret = g.respond(share.public)
        if share.complete(response) != secret:
            raise RuntimeError(f"{group}: the two ends derived different secrets")
        return 1.0

    op()
    return op


def establish(pki: Pki, count: int) -> list[tuple[Connection, Connection]]:
    """``count`` idle, established pairs (x25519, AES-128-GCM, EKU negotiated,
    tickets received), with their event queues emptied."""
    client_cfg, server_cfg = configs(pki, "x25519")
    pairs = []
    for _ in range(count):
        client, server, _ = handshake(client_cfg, server_cfg)
        pairs.append((client, server))
    return pairs
