"""The bulk data path of a TLS connection: many records per send, many per receive (issue 16).

``Connection.send`` seals all the records of one call at once
(``RecordProtection.seal_records``), and ``receive_data`` opens a run of
application data records in one loop (``RecordReader.open_application_data``).
These tests hold both to RFC 9846 §5: the records are checked with keys and
nonces derived here from the key log with pyca/cryptography (§7.1, §7.3, §5.3),
and records for the receiver are sealed here the same way, so a run can mix
what the fast loop hands back (padding, empty records, handshake messages,
alerts) with what it opens, and the events must be those of one record at a time.
"""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from helpers.pair import Pair, configs, connect
from helpers.tamper import KeyLog
from longtls.config import pad_to_block
from longtls.constants import AlertDescription, CipherSuite, ContentType
from longtls.errors import RemoteProtocolError, UsageLimitError
from longtls.events import ApplicationData, CloseNotifyReceived, ConnectionClosed, Event, KeyUpdated

MAX = 2**14
SUITES = {
    CipherSuite.TLS_AES_128_GCM_SHA256: (AESGCM, 16),
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: (ChaCha20Poly1305, 32),
}


def expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label(secret, label, "", length) with SHA-256 (RFC 9846 §7.1)."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


class Keys:
    """One direction's record protection, from its traffic secret (§7.3, §5.3)."""

    def __init__(self, suite: CipherSuite, secret: bytes, sequence_number: int = 0) -> None:
        aead_class, key_length = SUITES[suite]
        self.aead = aead_class(expand_label(secret, b"key", key_length))
        self.iv = int.from_bytes(expand_label(secret, b"iv", 12), "big")
        self.sequence_number = sequence_number

    def nonce(self) -> bytes:
        nonce = (self.iv ^ self.sequence_number).to_bytes(12, "big")
        self.sequence_number += 1
        return nonce

    def seal(self, inner: bytes) -> bytes:
        """A TLSCiphertext record carrying the TLSInnerPlaintext ``inner`` (§5.2)."""
        header = bytes((23, 3, 3)) + (len(inner) + 16).to_bytes(2, "big")
        return header + self.aead.encrypt(self.nonce(), inner, header)

    def open_all(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """(header, TLSInnerPlaintext) of every record in ``data``, in order."""
        out = []
        while data:
            header, length = data[:5], int.from_bytes(data[3:5], "big")
            out.append((header, self.aead.decrypt(self.nonce(), data[5 : 5 + length], header)))
            data = data[5 + length :]
        return out


def established(suite: CipherSuite = CipherSuite.TLS_AES_128_GCM_SHA256, **kwargs: object) -> tuple[Pair, KeyLog]:
    log = KeyLog()
    client, server, _ = configs(client_cipher_suites=[suite], client_keylog=log, **kwargs)
    pair = connect(client, server)
    pair.client.events(), pair.server.events()
    return pair, log


def client_keys(log: KeyLog, suite: CipherSuite = CipherSuite.TLS_AES_128_GCM_SHA256) -> Keys:
    # The client sends nothing under its application key during the handshake.
    return Keys(suite, log.secret("CLIENT_TRAFFIC_SECRET_0"))


def data_of(events: list[Event]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, ApplicationData)]


@pytest.mark.parametrize("suite", list(SUITES))
def test_one_send_is_full_records_then_the_rest(suite: CipherSuite) -> None:
    """§5.1/§5.2: 2^14 bytes of content per record, header 0x17 0x0303 length,
    content type 23 last, nonces in sequence; the receiver gets the same bytes."""
    pair, log = established(suite)
    data = bytes(range(256)) * (3 * MAX // 256) + b"tail" * 25
    pair.client.send(data)
    wire = pair.client.data_to_send()
    records = client_keys(log, suite).open_all(wire)
    assert [len(inner) for _, inner in records] == [MAX + 1, MAX + 1, MAX + 1, 101]
    assert [header for header, _ in records] == [
        b"\x17\x03\x03" + (n + 16).to_bytes(2, "big") for n in (MAX + 1, MAX + 1, MAX + 1, 101)
    ]
    assert all(inner[-1] == ContentType.APPLICATION_DATA for _, inner in records)
    assert b"".join(inner[:-1] for _, inner in records) == data
    pair.server.receive_data(wire)
    assert data_of(pair.server.events()) == [data[:MAX], data[MAX : 2 * MAX], data[2 * MAX : 3 * MAX], data[3 * MAX :]]


def test_sends_queued_before_data_to_send_follow_each_other() -> None:
    """Two sends (and a short one between) before one data_to_send: records in order, nonces in sequence."""
    pair, log = established()
    pair.client.send(b"a" * (MAX + 1))
    pair.client.send(b"b")
    pair.client.send(b"c" * MAX)
    records = client_keys(log).open_all(pair.client.data_to_send())
    assert [inner for _, inner in records] == [b"a" * MAX + b"\x17", b"a\x17", b"b\x17", b"c" * MAX + b"\x17"]


def test_records_fit_the_peers_record_size_limit() -> None:
    """RFC 8449 §4: the limit counts the inner content type, so 999 bytes of content per record."""
    pair, log = established(server_record_size_limit=1000)
    data = bytes(2500)
    pair.client.send(data)
    records = client_keys(log).open_all(pair.client.data_to_send())
    assert [len(inner) for _, inner in records] == [1000, 1000, 503]


def test_padding_policy_pads_every_record() -> None:
    """§5.4: each TLSInnerPlaintext is content, type, zeros, rounded as the policy says."""
    pair, log = established(client_record_padding=pad_to_block(512))
    data = b"x" * (MAX + 700)
    pair.client.send(data)
    wire = pair.client.data_to_send()
    records = client_keys(log).open_all(wire)
    # The first record is capped by the peer's limit (2^14 + 1): no room for padding.
    assert [len(inner) for _, inner in records] == [MAX + 1, 1024]
    assert records[1][1] == b"x" * 700 + b"\x17" + bytes(1024 - 701)
    pair.server.receive_data(wire)
    assert data_of(pair.server.events()) == [data[:MAX], data[MAX:]]


def test_an_empty_send_is_one_empty_record_and_no_event() -> None:
    pair, log = established()
    pair.client.send(b"")
    wire = pair.client.data_to_send()
    assert [inner for _, inner in client_keys(log).open_all(wire)] == [b"\x17"]
    pair.server.receive_data(wire)
    assert pair.server.events() == []


def test_the_last_records_before_the_usage_limit_are_sent() -> None:
    """§5.5: exactly the records left under the key go; one more is refused before anything is sealed
    (an EKU under way: the update that replaces the key has not completed)."""
    pair, _ = established()
    pair.client.extended_key_update()
    pair.client.data_to_send()  # the request, not delivered: the update stays in progress
    write = pair.client._records.write
    assert write is not None
    write.sequence_number = write.suite.record_limit - 2
    pair.client.send(b"y" * (MAX + 1))  # two records: the last two allowed
    assert write.sequence_number == write.suite.record_limit
    sent = pair.client.data_to_send()
    with pytest.raises(UsageLimitError):
        pair.client.send(b"z")
    assert pair.client.data_to_send() == b"" and len(sent) == 2 * 5 + MAX + 1 + 2 + 2 * 16


def test_a_run_of_records_is_one_event_per_record() -> None:
    """What ApplicationData has always been: one event per record, in order, whatever arrives at once."""
    pair, log = established()
    keys = client_keys(log)
    contents = [b"first", b"x" * MAX, b"third" * 100]
    pair.server.receive_data(b"".join(keys.seal(c + b"\x17") for c in contents))
    assert data_of(pair.server.events()) == contents


def test_padded_and_empty_records_inside_a_run() -> None:
    """§5.4: padding is stripped and an empty application data record is no event, mid-run too."""
    pair, log = established()
    keys = client_keys(log)
    wire = b"".join(keys.seal(inner) for inner in (
        b"one\x17", b"two\x17" + bytes(300), b"\x17", b"\x17" + bytes(10), b"three\x17",
    ))
    pair.server.receive_data(wire)
    assert data_of(pair.server.events()) == [b"one", b"two", b"three"]


def test_a_key_update_inside_a_run_changes_keys_between_records() -> None:
    """RFC 9846 §4.6.3: records after the KeyUpdate open under the next generation, events in order."""
    pair, _ = established(client_extended_key_update=False, server_extended_key_update=False)
    pair.client.send(b"before")
    pair.client.update_keys(request_peer_update=False)
    pair.client.send(b"after" * 4000)
    pair.server.receive_data(pair.client.data_to_send())
    events = pair.server.events()
    assert [type(e) for e in events] == [ApplicationData, KeyUpdated, ApplicationData, ApplicationData]
    assert data_of(events) == [b"before", (b"after" * 4000)[:MAX], (b"after" * 4000)[MAX:]]


def test_records_split_anywhere_across_receive_calls() -> None:
    """Whole records are opened whatever the cuts: inside a header, inside a fragment, between records."""
    pair, log = established()
    keys = client_keys(log)
    contents = [b"a" * 1000, b"b" * MAX, b"c" * 10]
    wire = b"".join(keys.seal(c + b"\x17") for c in contents)
    cuts = [3, 1007, 1030, 1030 + MAX, len(wire) - 1]
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        pair.server.receive_data(wire[start:end])
    assert data_of(pair.server.events()) == contents


def test_any_cuts_give_the_same_events() -> None:
    """TCP delivers records cut at random places (the reader completes a cut record from the
    head of the next bytes and reads on in them): the events are those of the records, in order."""
    rng = random.Random(16)
    for _ in range(20):
        pair, log = established()
        keys = client_keys(log)
        contents = [bytes([i]) * rng.choice((1, 200, 5000, MAX)) for i in range(1, 9)]
        wire = b"".join(keys.seal(c + b"\x17") for c in contents)
        cuts = sorted(rng.sample(range(1, len(wire)), rng.randint(1, 12)))
        for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            pair.server.receive_data(wire[start:end])
        assert data_of(pair.server.events()) == contents
        assert pair.server._records.reader.buffered == 0


def test_records_before_one_that_fails_are_delivered_then_bad_record_mac() -> None:
    """§5.2: a record that does not open ends the connection; the ones before it were genuine."""
    pair, log = established()
    keys = client_keys(log)
    good = [keys.seal(b"one\x17"), keys.seal(b"two\x17")]
    bad = bytearray(keys.seal(b"three\x17"))
    bad[7] ^= 1
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(b"".join(good) + bytes(bad) + keys.seal(b"four\x17"))
    assert info.value.alert is AlertDescription.bad_record_mac
    events = pair.server.events()
    assert data_of(events) == [b"one", b"two"]
    assert isinstance(events[-1], ConnectionClosed) and events[-1].alert is AlertDescription.bad_record_mac


def test_a_record_over_our_limit_inside_a_run_is_record_overflow() -> None:
    """RFC 8449 §4: once the peer agreed to our record_size_limit, a longer record is record_overflow."""
    pair, log = established(server_record_size_limit=1000)
    keys = client_keys(log)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(keys.seal(b"a" * 999 + b"\x17") + keys.seal(b"b" * 1000 + b"\x17"))
    assert info.value.alert is AlertDescription.record_overflow
    assert data_of(pair.server.events()) == [b"a" * 999]


def test_data_after_close_notify_in_the_same_run_is_ignored() -> None:
    """RFC 9846 §6.1: the peer's close_notify ends its data, even with records behind it in the buffer."""
    pair, log = established()
    keys = client_keys(log)
    wire = keys.seal(b"last\x17") + keys.seal(b"\x01\x00\x15") + keys.seal(b"late\x17")
    pair.server.receive_data(wire)
    events = pair.server.events()
    assert data_of(events) == [b"last"]
    assert any(isinstance(e, CloseNotifyReceived) for e in events)


def test_take_data_to_send_hands_over_the_records_once() -> None:
    """The asyncio protocol's flush: the same records as data_to_send, in a buffer the caller
    owns (changing it changes nothing later), and nothing left behind."""
    pair, log = established()
    keys = client_keys(log)
    pair.client.send(b"one" * 7000)
    taken = pair.client.take_data_to_send()
    assert isinstance(taken, bytearray)
    assert [inner[:-1] for _, inner in keys.open_all(bytes(taken))] == [(b"one" * 7000)[:MAX], (b"one" * 7000)[MAX:]]
    assert pair.client.data_to_send() == b"" and pair.client.take_data_to_send() == b""
    pair.server.receive_data(bytes(taken))
    taken[:] = bytes(len(taken))
    pair.client.send(b"two")
    assert [inner for _, inner in keys.open_all(pair.client.data_to_send())] == [b"two\x17"]
    assert data_of(pair.server.events()) == [(b"one" * 7000)[:MAX], (b"one" * 7000)[MAX:]]
