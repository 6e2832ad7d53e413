"""MLS mode (docs/mls-tls.md): two ``MLSConnection``s paired in memory, as
``longtls_cases`` pairs TLS connections, so the figures sit next to TLS's.

- an epoch update: ``update_keys()`` on the initiator, a commit with a fresh
  leaf and path (ConnectionUpdate), the responder processing it and
  answering (EpochKeyUpdate), both ends installing the new epoch's record
  keys; both ends' work, to ``KeyUpdateCompleted``;
- the handshake, for scale: group creation, KeyPackage, Welcome, both ends;
- record throughput: the initiator's ``send`` of 256 KiB, sealed into TLS 1.3
  records under the epoch's keys, opened by the responder.

Credentials are basic (an identity and a pinned-or-unchecked Ed25519 key:
the client does not verify the peer, as in tests/unit/test_mls_connection);
an update does no certificate validation either way.
"""

from __future__ import annotations

import os

from harness import RECORD_SIZE, Operation
from longtls_cases import pump

from longtls.config import Configuration
from longtls.events import ApplicationData, HandshakeComplete, KeyUpdateCompleted
from longtls.mls_connection import MLSConnection

#: MLS cipher suites by name (RFC 9420 §17.1; 0xF0A1 is longtls' provisional
#: X-Wing suite, docs/mls.md): (number, the TLS group of the same KEM, the
#: record suite's short name in harness.SUITES).
MLS_SUITES: dict[str, tuple[int, str, str]] = {
    "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519": (0x0001, "x25519", "AES-128-GCM"),
    "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519": (0x0003, "x25519", "ChaCha20-Poly1305"),
    "MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519": (0xF0A1, "X25519MLKEM768", "AES-128-GCM"),
}


def configs(suite: int) -> tuple[Configuration, Configuration]:
    # The defaults set no rekey policy (rekey_interval/bytes/records), so no
    # update starts by itself in the bulk figures; nor does the 7/8-of-the-
    # usage-limit update (docs/mls-tls.md §9) within a run's records.
    client = Configuration(is_client=True, verify_peer=False, mls_cipher_suites=(suite,), mls_identity=b"client")
    server = Configuration(is_client=False, mls_cipher_suites=(suite,), mls_identity=b"server")
    return client, server


def handshake(suite: int) -> tuple[MLSConnection, MLSConnection]:
    client_cfg, server_cfg = configs(suite)
    client, server = MLSConnection(client_cfg), MLSConnection(server_cfg)
    client.start_handshake()
    pump(client, server)
    done = [e for e in client.events() if isinstance(e, HandshakeComplete)]
    server.events()
    if not done or done[0].mls_cipher_suite != suite:
        raise RuntimeError(f"MLS-TLS handshake with suite {suite:#06x} did not complete: {done}")
    return client, server


def handshake_operation(suite: int) -> Operation:
    def op() -> float:
        handshake(suite)
        return 1.0

    op()
    return op


def update_operation(suite: int) -> Operation:
    """One epoch update started by the initiator, to completion on both ends."""
    client, server = handshake(suite)

    def op() -> float:
        epoch = client.epoch
        client.update_keys()
        pump(client, server)
        server.events()
        if not any(isinstance(e, KeyUpdateCompleted) for e in client.events()) or client.epoch != epoch + 1:
            raise RuntimeError("MLS epoch update did not complete")
        return 1.0

    op()
    return op


def bulk_operation(suite: int, write_size: int) -> Operation:
    """Initiator ``send`` of ``write_size`` bytes, opened by the responder."""
    client, server = handshake(suite)
    data = os.urandom(write_size)
    wire_sizes: list[int] = []

    def op() -> float:
        client.send(data)
        wire = client.data_to_send()
        if not wire_sizes:
            wire_sizes.append(len(wire))
        server.receive_data(wire)
        got = sum(len(e.data) for e in server.events() if isinstance(e, ApplicationData))
        if got != write_size:
            raise RuntimeError(f"MLS mode delivered {got} of {write_size} bytes")
        return float(got)

    op()
    # 16 KiB records, as the TLS bulk figures: a record costs 22 bytes
    # (header, content type, tag), so smaller records would show here.
    records = -(-write_size // RECORD_SIZE)
    if wire_sizes[0] - write_size > 64 * records:
        raise RuntimeError(f"MLS mode records are smaller than 16 KiB ({wire_sizes[0]} bytes for {write_size})")
    wire_sizes.clear()
    return op
