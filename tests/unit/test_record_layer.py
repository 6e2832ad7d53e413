"""The TLS record layer as its own object (record.tls_layer) and errors that blame the right side."""

from __future__ import annotations

import pytest

from helpers.pair import Pair, configs, connect
from longtls.connection import Connection
from longtls.constants import AlertDescription, CipherSuite, ContentType, NamedGroup
from longtls.crypto.suites import SUITES
from longtls.errors import LocalProtocolError, RemoteProtocolError, UsageLimitError
from longtls.events import ConnectionClosed
from longtls.record.tls import RecordProtection


def _records(data: bytes) -> list[tuple[int, int, bytes]]:
    """(content type, legacy_record_version, fragment) of each record in ``data``."""
    out = []
    while data:
        length = int.from_bytes(data[3:5], "big")
        out.append((data[0], int.from_bytes(data[1:3], "big"), data[5 : 5 + length]))
        data = data[5 + length :]
    return out


def test_only_the_initial_client_hello_uses_record_version_0x0301() -> None:
    """RFC 9846 §5.1: 0x0301 for an initial ClientHello, 0x0303 for the one after a HelloRetryRequest."""
    c, s, _ = configs(
        client_groups=[NamedGroup.x25519, NamedGroup.secp384r1],
        client_key_share_groups=[NamedGroup.x25519],
        server_groups=[NamedGroup.secp384r1],
        client_middlebox_compatibility=False,
    )
    pair = Pair(Connection(c), Connection(s))
    pair.client.start_handshake()
    first = pair.client.data_to_send()
    assert [(t, v) for t, v, _ in _records(first)] == [(ContentType.HANDSHAKE, 0x0301)]
    pair.server.receive_data(first)
    pair.client.receive_data(pair.server.data_to_send())  # the HelloRetryRequest
    assert pair.client.handshake.hello_retry_seen  # type: ignore[attr-defined]
    second = pair.client.data_to_send()
    assert [(t, v) for t, v, _ in _records(second)] == [(ContentType.HANDSHAKE, 0x0303)]
    pair.server.receive_data(second)
    pair.pump()
    assert pair.client.handshake_complete and pair.server.handshake_complete


def test_a_second_start_is_the_applications_error() -> None:
    """A double start is not the peer's fault: LocalProtocolError, nothing sent, the handshake goes on."""
    c, s, _ = configs()
    pair = Pair(Connection(c), Connection(s))
    pair.client.start_handshake()
    hello = pair.client.data_to_send()
    with pytest.raises(LocalProtocolError) as info:
        pair.client.start_handshake()
    assert not isinstance(info.value, RemoteProtocolError)
    assert pair.client.data_to_send() == b"" and not pair.client.is_closed
    pair.server.receive_data(hello)
    pair.pump()
    assert pair.client.handshake_complete and pair.server.handshake_complete


def test_record_protection_refuses_past_the_usage_limit_as_our_error() -> None:
    """RFC 9846 §5.5: sealing past the limit is refused, and it is our side's limit."""
    suite = SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
    protection = RecordProtection(suite, bytes(32))
    protection.sequence_number = suite.record_limit
    with pytest.raises(UsageLimitError) as info:
        protection.seal(ContentType.APPLICATION_DATA, b"x")
    assert isinstance(info.value, LocalProtocolError) and not isinstance(info.value, RemoteProtocolError)
    assert info.value.alert == AlertDescription.internal_error
    assert protection.sequence_number == suite.record_limit  # no nonce was used


def test_send_at_the_usage_limit_sends_nothing_and_keeps_the_connection() -> None:
    """While the key update that replaces a used-up key is still under way (an
    EKU waiting for the peer), ``send`` refuses the whole write up front."""
    pair = connect(*configs()[:2])
    assert pair.client.eku is not None
    pair.client.extended_key_update()
    pair.client.data_to_send()  # the request, not delivered: the update stays in progress
    write = pair.client._records.write
    assert write is not None
    write.sequence_number = write.suite.record_limit - 1  # room for exactly one record
    before = write.sequence_number
    with pytest.raises(UsageLimitError):
        pair.client.send(b"x" * (2**14 + 1))  # two records
    assert write.sequence_number == before and pair.client.data_to_send() == b""
    assert not pair.client.is_closed
    assert not any(isinstance(e, ConnectionClosed) for e in pair.client.events())
    pair.client.send(b"y")  # one record still fits
    assert pair.client.data_to_send()
