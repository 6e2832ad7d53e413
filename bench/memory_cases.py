"""Idle established DTLS 1.3 and MLS-mode pairs in memory, for the memory section.

``longtls_cases.establish`` holds idle TLS pairs; these are the same for the
two other transports, so one measurement (RSS growth, or tracemalloc by
line) covers all three:

- ``establish_dtls(pki, count)``: ``count`` pairs of ``DTLSConnection``s
  (x25519, AES-128-GCM, ECDSA P-256 verified by the client, Extended Key
  Update negotiated, as the TLS pairs), with the stateless cookie exchange a
  DTLS server makes (RFC 9147 §5.1) and every ACK and retransmission timer
  run out on a simulated clock, so each end is as an idle association is
  after the handshake: nothing in flight, nothing to acknowledge;
- ``establish_mls(pki, count)``: ``count`` pairs of ``MLSConnection``s
  (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, the two-party profile:
  the group, the Welcome and the first epoch's record keys).

Each returns the pairs as ``(client, server)`` tuples with every event
queue emptied; the caller keeps them alive while it measures.
"""

from __future__ import annotations

import time

from harness import Pki
from longtls_cases import configs, pump

from longtls.config import Configuration
from longtls.dtls_connection import DTLSConnection
from longtls.events import HandshakeComplete
from longtls.mls_connection import MLSConnection

#: The address the in-memory DTLS client "sends from" (cookies are bound to it).
CLIENT_ADDRESS = b"\x7f\x00\x00\x01\x13\x88"  # 127.0.0.1:5000
#: MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (RFC 9420 §17.1).
MLS_SUITE = 0x0001


class _Clock:
    """A clock the pairs share, moved by hand to run their timers out."""

    def __init__(self) -> None:
        self.now = time.time()  # real time: certificates are checked against it

    def __call__(self) -> float:
        return self.now


def _dtls_pair(client_cfg: Configuration, server_cfg: Configuration, clock: _Clock) -> tuple[DTLSConnection, DTLSConnection]:
    client = DTLSConnection(client_cfg)
    client.start_handshake()
    server: DTLSConnection | None = None
    for _ in range(100):
        moved = False
        for datagram in client.datagrams_to_send():
            moved = True
            if server is None:
                server, replies = DTLSConnection.accept(server_cfg, CLIENT_ADDRESS, datagram)
                for reply in replies:  # the stateless HelloRetryRequest (cookie)
                    client.receive_datagram(reply)
            else:
                server.receive_datagram(datagram)
        if server is not None:
            for datagram in server.datagrams_to_send():
                moved = True
                client.receive_datagram(datagram)
        if moved:
            continue
        # Nothing in flight: run the next timer (delayed ACKs, retransmissions)
        # until neither end has one left within a few seconds.
        timers = [t for t in (client.get_timer(), server.get_timer() if server else None) if t is not None]
        if not timers or min(timers) > clock.now + 5.0:
            break
        clock.now = max(clock.now, min(timers))
        client.handle_timer(clock.now)
        if server is not None:
            server.handle_timer(clock.now)
    if server is None or not client.handshake_complete or not server.handshake_complete:
        raise RuntimeError("longtls DTLS handshake did not complete")
    return client, server


def establish_dtls(pki: Pki, count: int) -> list[tuple[DTLSConnection, DTLSConnection]]:
    """``count`` idle, established DTLS 1.3 pairs (x25519, AES-128-GCM, EKU
    negotiated), their event queues emptied."""
    clock = _Clock()
    client_cfg, server_cfg = configs(pki, "x25519")
    client_cfg.now = clock
    server_cfg.now = clock
    pairs = []
    for _ in range(count):
        client, server = _dtls_pair(client_cfg, server_cfg, clock)
        events = client.events()
        server.events()
        done = next((e for e in events if isinstance(e, HandshakeComplete)), None)
        if done is None or not done.extended_key_update:
            raise RuntimeError(f"longtls DTLS pair without Extended Key Update: {events}")
        pairs.append((client, server))
    return pairs


def establish_mls(pki: Pki, count: int) -> list[tuple[MLSConnection, MLSConnection]]:
    """``count`` idle, established MLS-mode pairs (``MLS_SUITE``), their event
    queues emptied.  ``pki`` is unused (MLS credentials here are basic
    Ed25519 ones, as in bench/mls_cases.py); it keeps the signature of
    ``longtls_cases.establish``."""
    del pki
    client_cfg = Configuration(
        is_client=True, verify_peer=False, mls_cipher_suites=(MLS_SUITE,), mls_identity=b"client"
    )
    server_cfg = Configuration(is_client=False, mls_cipher_suites=(MLS_SUITE,), mls_identity=b"server")
    pairs = []
    for _ in range(count):
        client, server = MLSConnection(client_cfg), MLSConnection(server_cfg)
        client.start_handshake()
        pump(client, server)
        events = client.events()
        server.events()
        if not any(isinstance(e, HandshakeComplete) for e in events):
            raise RuntimeError(f"longtls MLS-mode handshake did not complete: {events}")
        pairs.append((client, server))
    return pairs
