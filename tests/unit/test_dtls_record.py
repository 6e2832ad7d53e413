"""The DTLS 1.3 record layer (RFC 9147 §4, draft-ietf-tls-rfc9147bis-02).

What a peer relies on: the header bytes on the wire (DTLSPlaintext, the
unified header's 001CSLEE bits, connection IDs), record number encryption
and the AEAD computed exactly as §4 and §4.2.3 say (checked here against an
independent computation: HKDF-Expand-Label written out with the standard
library's hmac, AES-ECB / AES-GCM from pyca directly, and the ChaCha20 block
function of RFC 8439 §2.3 written out in Python), sequence numbers and
epochs reconstructed from their low bits across wrap-around (§4.2.2), the
replay window (§4.5.1), invalid records silently discarded and counted
(§4.5.2), the AEAD limits (§4.5.3) and datagrams of at most the MTU (§4.3).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from longtls.constants import CipherSuite, ContentType
from longtls.crypto.suites import SUITES, SuiteInfo
from longtls.errors import LocalProtocolError, UsageLimitError
from longtls.record.dtls_layer import DatagramPacker, DTLSRecord, DTLSRecordLayer, integrity_limit
from longtls.wire.dtls_record import (
    DiscardReason,
    DTLSPlaintextHeader,
    InvalidRecord,
    RecordNumber,
    UnifiedHeader,
    reconstruct_sequence_number,
)

ALL_SUITES = sorted(SUITES, key=int)
GCM = SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
CCM_8 = SUITES[CipherSuite.TLS_AES_128_CCM_8_SHA256]
HANDSHAKE, APPLICATION_DATA, ALERT, ACK = 22, 23, 21, 26


# --------------------------------------------------------------------------- independent computations


def hkdf_expand_label(hash_name: str, secret: bytes, label: bytes, length: int, context: bytes = b"") -> bytes:
    """HKDF-Expand-Label(Secret, Label, Context, Length) with DTLS 1.3's "dtls13"
    prefix (RFC 9147 §5.9, RFC 9846 §7.1), RFC 5869 §2.3 written out."""
    full = b"dtls13" + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((len(context),)) + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes((counter,)), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


def keys_of(suite: SuiteInfo, secret: bytes) -> tuple[bytes, bytes, bytes]:
    """[sender]_write_key, [sender]_write_iv and [sender]_sn_key (RFC 9147 §4.2.3)."""
    return (
        hkdf_expand_label(suite.hash_name, secret, b"key", suite.key_length),
        hkdf_expand_label(suite.hash_name, secret, b"iv", 12),
        hkdf_expand_label(suite.hash_name, secret, b"sn", suite.key_length),
    )


def _rotl(v: int, c: int) -> int:
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """The ChaCha20 block function, RFC 8439 §2.3, written out."""
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    state += [*struct.unpack("<8L", key), counter, *struct.unpack("<3L", nonce)]
    x = list(state)

    def quarter(a: int, b: int, c: int, d: int) -> None:
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = _rotl(x[b] ^ x[c], 7)

    rounds = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),  # columns
              (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))  # diagonals
    for _ in range(10):
        for indexes in rounds:
            quarter(*indexes)
    return struct.pack("<16L", *((a + b) & 0xFFFFFFFF for a, b in zip(x, state, strict=True)))


def test_chacha20_block_function_matches_rfc8439_vector() -> None:
    """RFC 8439 §2.3.2's test vector, so the helper below is right."""
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    assert chacha20_block(key, 1, nonce)[:16] == bytes.fromhex("10f1e7e4d13b5915500fdd1fa32071c4")


def record_number_mask(suite: SuiteInfo, sn_key: bytes, ciphertext: bytes) -> bytes:
    """§4.2.3: AES-ECB(sn_key, Ciphertext[0..15]), or the ChaCha20 block with
    counter = Ciphertext[0..3] (a little-endian 32-bit word) and nonce = Ciphertext[4..15]."""
    if suite.suite == CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
        counter = int.from_bytes(ciphertext[:4], "little")
        return chacha20_block(sn_key, counter, ciphertext[4:16])
    encryptor = Cipher(algorithms.AES(sn_key), modes.ECB()).encryptor()
    return encryptor.update(ciphertext[:16]) + encryptor.finalize()


def aead_of(suite: SuiteInfo, key: bytes) -> AESGCM | ChaCha20Poly1305 | AESCCM:
    if suite.suite == CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
        return ChaCha20Poly1305(key)
    if suite.suite in (CipherSuite.TLS_AES_128_CCM_SHA256, CipherSuite.TLS_AES_128_CCM_8_SHA256):
        return AESCCM(key, tag_length=suite.tag_length)
    return AESGCM(key)


def secret_for(suite: SuiteInfo, label: str = "") -> bytes:
    return hashlib.new(suite.hash_name, f"traffic secret {suite.suite.name} {label}".encode()).digest()


def pair(
    suite: SuiteInfo = GCM, epoch: int = 3, **options: object
) -> tuple[DTLSRecordLayer, DTLSRecordLayer, bytes]:
    """A sender and a receiver sharing ``epoch`` (one direction)."""
    sender = DTLSRecordLayer(**options)  # type: ignore[arg-type]
    receiver = DTLSRecordLayer(**options)  # type: ignore[arg-type]
    secret = secret_for(suite, str(epoch))
    if epoch >= 1:
        sender.set_write_epoch(epoch, suite, secret)
        receiver.set_read_epoch(epoch, suite, secret)
    return sender, receiver, secret


def opened(records: list[DTLSRecord]) -> list[tuple[int, int, int, bytes]]:
    return [(r.number.epoch, r.number.sequence_number, r.content_type, r.payload) for r in records]


# --------------------------------------------------------------------------- header codecs


def test_dtls_plaintext_header_bytes() -> None:
    """§4: type, legacy_record_version {254, 253}, uint16 epoch, uint48 sequence_number, uint16 length."""
    header = DTLSPlaintextHeader(HANDSHAKE, 0, 0x0000A1B2C3D4, 0x012C)
    assert header.encode() == bytes.fromhex("16" "fefd" "0000" "0000a1b2c3d4" "012c")
    datagram = header.encode() + bytes(0x12C)
    assert DTLSPlaintextHeader.parse(datagram) == header
    # Every byte of the header matters: one short and it does not parse.
    for cut in range(13):
        with pytest.raises(InvalidRecord) as info:
            DTLSPlaintextHeader.parse(datagram[:cut])
        assert info.value.reason is DiscardReason.TRUNCATED
    with pytest.raises(InvalidRecord):
        DTLSPlaintextHeader.parse(datagram[:-1])  # fragment cut short
    with pytest.raises(ValueError):
        DTLSPlaintextHeader(HANDSHAKE, 0, 2**48, 0).encode()


@pytest.mark.parametrize("c", [False, True])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("length_present", [False, True])
@pytest.mark.parametrize("epoch_bits", [0, 1, 2, 3])
def test_unified_header_bits(c: bool, s: int, length_present: bool, epoch_bits: int) -> None:
    """§4, Figure 3: 0 0 1 C S L E E, then CID, 8/16-bit sequence number, 16-bit length."""
    cid = b"\xc1\xd2\xe3" if c else None
    header = UnifiedHeader(epoch_bits, 0xAB if s == 1 else 0xABCD, s, 0x0123, length_present, cid)
    wire = header.encode()
    expected_first = 0b0010_0000 | (0x10 if c else 0) | (0x08 if s == 2 else 0) | (0x04 if length_present else 0)
    assert wire[0] == expected_first | epoch_bits
    expected = bytes((wire[0],)) + (cid or b"") + (b"\xab" if s == 1 else b"\xab\xcd")
    expected += b"\x01\x23" if length_present else b""
    assert wire == expected
    assert header.header_length == len(wire)
    body = bytes(0x0123)
    parsed = UnifiedHeader.parse(b"junk" + wire + body, 4, 3 if c else None)
    assert parsed == header
    if not length_present:
        # Without L the record runs to the end of the datagram (§4).
        assert UnifiedHeader.parse(wire + bytes(7), 0, 3 if c else None).length == 7
    else:
        with pytest.raises(InvalidRecord) as info:
            UnifiedHeader.parse(wire + body[:-1], 0, 3 if c else None)
        assert info.value.reason is DiscardReason.TRUNCATED
    for cut in range(len(wire)):  # any header cut short
        with pytest.raises(InvalidRecord):
            UnifiedHeader.parse(wire[:cut], 0, 3 if c else None)


@settings(max_examples=200, deadline=None)
@given(
    epoch_bits=st.integers(0, 3),
    sequence_length=st.sampled_from((1, 2)),
    sequence=st.integers(0, 0xFFFF),
    length_present=st.booleans(),
    cid=st.one_of(st.none(), st.binary(min_size=0, max_size=20)),
    body=st.binary(max_size=64),
    trailing=st.binary(max_size=8),
)
def test_unified_header_round_trip(
    epoch_bits: int, sequence_length: int, sequence: int, length_present: bool,
    cid: bytes | None, body: bytes, trailing: bytes,
) -> None:
    header = UnifiedHeader(epoch_bits, sequence % (1 << (8 * sequence_length)), sequence_length, len(body),
                           length_present, cid)
    datagram = header.encode() + body
    if length_present:
        datagram += trailing  # the next record: not this one's
    parsed = UnifiedHeader.parse(datagram, 0, None if cid is None else len(cid))
    assert parsed == header
    assert parsed.header_length + parsed.length == len(datagram) - (len(trailing) if length_present else 0)


def test_unified_header_refusals() -> None:
    with pytest.raises(InvalidRecord) as info:
        UnifiedHeader.parse(b"\x40\x00\x00\x00\x00", 0, None)  # 010xxxxx: not a DTLSCiphertext
    assert info.value.reason is DiscardReason.BAD_HEADER
    with pytest.raises(InvalidRecord) as info:
        UnifiedHeader.parse(b"\x3c\x00\x00\x00\x00", 0, None)  # C bit, but we issued no CID
    assert info.value.reason is DiscardReason.BAD_CONNECTION_ID


def brute_force_closest(expected: int, low: int, bits: int) -> int:
    """The candidate with the given low bits nearest to ``expected`` (the higher one on a tie)."""
    span = 1 << bits
    candidates = [k * span + low for k in range(max(0, expected // span - 2), expected // span + 3)]
    return min(candidates, key=lambda v: (abs(v - expected), -v))


@pytest.mark.parametrize("bits", [8, 16])
def test_sequence_number_reconstruction(bits: int) -> None:
    """§4.2.2: the full number closest to one plus the highest deprotected, across wrap-around."""
    span = 1 << bits
    rng = random.Random(bits)
    edges = [0, 1, span // 2, span - 1, span, span + 1, 3 * span - 2, 2**32 + 5, 2**48 - 3]
    for expected in edges + [rng.randrange(2**40) for _ in range(300)]:
        for low in {0, 1, span // 2 - 1, span // 2, span // 2 + 1, span - 1, expected % span, rng.randrange(span)}:
            assert reconstruct_sequence_number(expected, low, bits) == brute_force_closest(expected, low, bits), (
                expected, low
            )
    # The wrap-around cases spelled out: just past 256 / 65,536, and a late record from before it.
    assert reconstruct_sequence_number(span - 1, 2, bits) == span + 2
    assert reconstruct_sequence_number(span + 3, span - 4, bits) == span - 4


# --------------------------------------------------------------------------- protection against the spec


@pytest.mark.parametrize("suite_id", ALL_SUITES, ids=lambda s: CipherSuite(s).name)
@pytest.mark.parametrize("cid", [None, b"\x0a\x0b\x0c\x0d"])
@pytest.mark.parametrize("sequence_length", [1, 2])
def test_record_bytes_against_independent_computation(
    suite_id: CipherSuite, cid: bytes | None, sequence_length: int
) -> None:
    """A sealed record, taken apart with nothing from longtls: record number
    encryption (§4.2.3), the AAD = the header with the sequence number in the
    clear (§4), the nonce = write_iv XOR the 64-bit sequence number (RFC 9846 §5.3)."""
    suite = SUITES[suite_id]
    # Below every suite's AEAD limit (2^23 for CCM), every byte different.
    sequence = 0x6A5B3C
    layer = DTLSRecordLayer(sequence_number_length=sequence_length)
    secret = secret_for(suite)
    layer.set_write_epoch(6, suite, secret)
    layer.set_peer_connection_id(cid)
    layer.set_write_sequence_number(6, sequence)
    payload = b"application bytes"
    record, number = layer.seal(APPLICATION_DATA, payload)
    assert number == RecordNumber(6, sequence)
    key, iv, sn_key = keys_of(suite, secret)

    cid_bytes = cid or b""
    first = 0x20 | (0x10 if cid else 0) | (0x08 if sequence_length == 2 else 0) | 0x04 | (6 & 3)
    assert record[0] == first
    assert record[1 : 1 + len(cid_bytes)] == cid_bytes
    seq_at = 1 + len(cid_bytes)
    length_at = seq_at + sequence_length
    ciphertext = record[length_at + 2 :]
    assert int.from_bytes(record[length_at : length_at + 2], "big") == len(ciphertext)
    assert len(ciphertext) == len(payload) + 1 + suite.tag_length

    mask = record_number_mask(suite, sn_key, ciphertext)
    clear_seq = bytes(a ^ b for a, b in zip(record[seq_at:length_at], mask, strict=False))
    assert clear_seq == (sequence).to_bytes(8, "big")[-sequence_length:]
    aad = record[:seq_at] + clear_seq + record[length_at : length_at + 2]
    nonce = (int.from_bytes(iv, "big") ^ sequence).to_bytes(12, "big")
    assert aead_of(suite, key).decrypt(nonce, ciphertext, aad) == payload + bytes((APPLICATION_DATA,))


@pytest.mark.parametrize("suite_id", ALL_SUITES, ids=lambda s: CipherSuite(s).name)
def test_seal_open_round_trip(suite_id: CipherSuite) -> None:
    suite = SUITES[suite_id]
    sender, receiver, _ = pair(suite)
    messages = [(APPLICATION_DATA, b"x" * n) for n in (0, 1, 7, 100, 1200)] + [
        (HANDSHAKE, b"\x18\x00\x00\x01\x01"), (ALERT, b"\x01\x00"), (ACK, b"\x00\x00"),
    ]
    for seq, (content_type, payload) in enumerate(messages):
        record, number = sender.seal(content_type, payload)
        assert number == RecordNumber(3, seq)
        # §4.2.3: the encrypted_record is never shorter than 16 bytes (CCM_8 pads).
        assert len(record) - 5 >= 16
        assert opened(receiver.open_datagram(record)) == [(3, seq, content_type, payload)]
    assert not receiver.discarded


@settings(max_examples=60, deadline=None)
@given(
    suite_id=st.sampled_from(ALL_SUITES),
    content_type=st.sampled_from((ALERT, HANDSHAKE, APPLICATION_DATA, ACK)),
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    padding=st.integers(0, 40),
    sequence_length=st.sampled_from((1, 2)),
    length_present=st.booleans(),
)
def test_any_records_round_trip(
    suite_id: CipherSuite, content_type: int, payloads: list[bytes], padding: int,
    sequence_length: int, length_present: bool,
) -> None:
    """Whatever is sealed, in one datagram, opens to the same records in order."""
    suite = SUITES[suite_id]
    sender = DTLSRecordLayer(padding=lambda t, n: padding, sequence_number_length=sequence_length,
                             length_present=length_present)
    receiver = DTLSRecordLayer()
    secret = secret_for(suite)
    sender.set_write_epoch(4, suite, secret)
    receiver.set_read_epoch(4, suite, secret)
    if not length_present:
        payloads = payloads[:1]  # a record without a length is the last in its datagram
    datagram = b"".join(sender.seal(content_type, payload)[0] for payload in payloads)
    assert opened(receiver.open_datagram(datagram)) == [
        (4, i, content_type, payload) for i, payload in enumerate(payloads)
    ]


def test_padding_policy_and_budget() -> None:
    """Padding (RFC 9846 §5.4) is removed by the receiver and cut to the datagram's room."""
    sender = DTLSRecordLayer(padding=lambda content_type, length: -(length + 1) % 64)
    receiver = DTLSRecordLayer()
    secret = secret_for(GCM)
    sender.set_write_epoch(3, GCM, secret)
    receiver.set_read_epoch(3, GCM, secret)
    record, _ = sender.seal(APPLICATION_DATA, b"abc")
    assert len(record) == 5 + 64 + 16  # 3 bytes + type + 60 zeros = 64, plus the tag
    assert opened(receiver.open_datagram(record)) == [(3, 0, APPLICATION_DATA, b"abc")]
    record, _ = sender.seal(APPLICATION_DATA, b"abc", budget=40)
    assert len(record) == 40
    assert opened(receiver.open_datagram(record)) == [(3, 1, APPLICATION_DATA, b"abc")]


def test_inner_plaintext_without_content_type_is_discarded() -> None:
    """An all-zero DTLSInnerPlaintext (no content type) is discarded, not delivered."""
    key, iv, sn_key = keys_of(GCM, secret_for(GCM, "3"))
    receiver = DTLSRecordLayer()
    receiver.set_read_epoch(3, GCM, secret_for(GCM, "3"))
    header = bytes((0x2F, 0x00, 0x00, 0x00, 4 + 16))
    ciphertext = AESGCM(key).encrypt(iv, bytes(4), header)
    mask = record_number_mask(GCM, sn_key, ciphertext)
    record = header[:1] + bytes((mask[0], mask[1])) + header[3:] + ciphertext
    assert receiver.open_datagram(record) == []
    assert receiver.discarded == {DiscardReason.BAD_CONTENT_TYPE: 1}


def test_wolfssl_record_from_the_illustrated_dtls_connection() -> None:
    """An external vector: the server's EncryptedExtensions record (epoch 2,
    TLS_AES_128_GCM_SHA256) of "The Illustrated DTLS Connection"
    (https://dtls.xargs.org, captured from wolfSSL; values from its
    generate/index-02-zzz-handkeys and index-03-encext pages).  Our record is
    wolfSSL's byte for byte: header 2e, encrypted record number 79fa, length
    002f, and the ciphertext whose first 16 bytes (the sample) and tag the page gives."""
    shared_secret = bytes.fromhex("df4a291baa1eb7cfa6934b29b474baad2697e29f1f920dcc77c8a0a088447624")
    hello_hash = bytes.fromhex("aee8eba0d2ee87052fbbc6864c1514c5a927d6f0ffb4f7954c7f379d95f1b1d7")
    # RFC 9846 §7.1 with the "dtls13" prefix, written out (HKDF-Extract = HMAC(salt, IKM)).
    early_secret = hmac.new(bytes(32), bytes(32), "sha256").digest()
    derived = hkdf_expand_label("sha256", early_secret, b"derived", 32, hashlib.sha256().digest())
    handshake_secret = hmac.new(derived, shared_secret, "sha256").digest()
    server_secret = hkdf_expand_label("sha256", handshake_secret, b"s hs traffic", 32, hello_hash)
    assert keys_of(GCM, server_secret) == (
        bytes.fromhex("004e03e64ab6cba6b542775ec230e20a"),
        bytes.fromhex("6d9924be044ee97c624913f2"),
        bytes.fromhex("7173fac51194e775001d625ef69d7c9f"),  # the page's "server record number key"
    )
    # msg_type 8, length 18, message_seq 1, fragment 0+18 (§5.2), then the extensions.
    encrypted_extensions = bytes.fromhex("08000012" "0001" "000000" "000012" "0010000a000c000a0017001d001800190100")
    server = DTLSRecordLayer()
    server.set_write_epoch(2, GCM, server_secret)
    record, number = server.seal(HANDSHAKE, encrypted_extensions)
    assert number == RecordNumber(2, 0)
    assert record[:5] == bytes.fromhex("2e79fa002f")
    assert record[5:21] == bytes.fromhex("ee9dcff3f8679a4859fe68377fb34ada")
    assert record[-16:] == bytes.fromhex("f67fe442e7d7d2b8a3d5fa59574ffd00")
    client = DTLSRecordLayer()
    client.set_read_epoch(2, GCM, server_secret)
    assert opened(client.open_datagram(record)) == [(2, 0, HANDSHAKE, encrypted_extensions)]


# --------------------------------------------------------------------------- reconstruction across wrap-around


@pytest.mark.parametrize(("sequence_length", "edge"), [(1, 256), (2, 65536)])
def test_sequence_numbers_past_the_wrap(sequence_length: int, edge: int) -> None:
    """Records sealed around 256 (8-bit numbers) and 65,536 (16-bit) reopen
    with their full sequence number, in order, with losses and reordering."""
    sender, receiver, _ = pair(sequence_number_length=sequence_length)
    start = edge - 40
    sender.set_write_sequence_number(3, start)
    receiver_seen = []
    records = [sender.seal(APPLICATION_DATA, i.to_bytes(4, "big")) for i in range(start, edge + 300)]
    # Walk up to the edge (the receiver must have followed the epoch to get there).
    rng = random.Random(edge)
    delivered = [r for r in records if rng.random() > 0.2]  # 20% lost
    for i in range(0, len(delivered) - 1, 7):
        delivered[i], delivered[i + 1] = delivered[i + 1], delivered[i]  # reordered
    for record, number in delivered:
        for r in receiver.open_datagram(record):
            assert r.number == number
            assert int.from_bytes(r.payload, "big") == number.sequence_number
            receiver_seen.append(number.sequence_number)
    assert sorted(receiver_seen) == sorted(n.sequence_number for _, n in delivered)
    assert max(receiver_seen) >= edge + 250
    assert not receiver.discarded


def test_large_sequence_numbers_still_decrypt() -> None:
    """The nonce uses all 64 bits (RFC 9846 §5.3): a receiver that followed the
    epoch up to 2^32 + k opens the next records (ChaCha20: no AEAD limit below 2^64)."""
    sender, receiver, _ = pair(SUITES[CipherSuite.TLS_CHACHA20_POLY1305_SHA256])
    for base in (2**32 - 3, 2**40 + 7):
        sender.set_write_sequence_number(3, base)
        receiver._read[3].highest = base - 1  # as if it had followed the epoch so far
        for i in range(6):
            record, _ = sender.seal(APPLICATION_DATA, b"late")
            assert opened(receiver.open_datagram(record)) == [(3, base + i, APPLICATION_DATA, b"late")]


# --------------------------------------------------------------------------- replay window


def test_replay_is_rejected_and_counted() -> None:
    sender, receiver, _ = pair()
    record, _ = sender.seal(APPLICATION_DATA, b"once")
    assert len(receiver.open_datagram(record)) == 1
    assert receiver.open_datagram(record) == []
    assert receiver.open_datagram(record) == []
    assert receiver.discarded == {DiscardReason.REPLAYED: 2}


@pytest.mark.parametrize("window", [64, 256])
def test_records_left_of_the_window_are_dropped(window: int) -> None:
    sender, receiver, _ = pair(replay_window=window)
    records = [sender.seal(APPLICATION_DATA, bytes(4))[0] for _ in range(window + 10)]
    for i, record in enumerate(records):
        if i not in (5, 12):
            assert len(receiver.open_datagram(record)) == 1
    # Highest is window + 9: 12 is still inside (offset window - 3), 5 is not.
    assert len(receiver.open_datagram(records[12])) == 1
    assert receiver.open_datagram(records[5]) == []
    assert receiver.discarded == {DiscardReason.TOO_OLD: 1}


def test_reordered_records_inside_the_window_are_accepted_once() -> None:
    sender, receiver, _ = pair()
    records = [sender.seal(APPLICATION_DATA, bytes((i,)))[0] for i in range(100)]
    order = list(range(100))
    random.Random(7).shuffle(order)
    got = []
    for i in order:
        got += [r.payload[0] for r in receiver.open_datagram(records[i])]
        got += [r.payload[0] for r in receiver.open_datagram(records[i])]  # and a duplicate
    assert sorted(got) == list(range(100))
    assert receiver.discarded == {DiscardReason.REPLAYED: 100}


def test_window_moves_only_after_authentication() -> None:
    """§4.5.1: a forged record with a far-ahead number does not push genuine records out."""
    sender, receiver, _ = pair()
    records = [sender.seal(APPLICATION_DATA, b"ok")[0] for _ in range(3)]
    forged = bytearray(records[2])
    forged[2] ^= 0x80  # a different sequence number: the AEAD fails
    assert receiver.open_datagram(bytes(forged)) == []
    assert [len(receiver.open_datagram(r)) for r in records] == [1, 1, 1]
    assert receiver.discarded == {DiscardReason.AUTHENTICATION_FAILED: 1}


# --------------------------------------------------------------------------- datagrams


def test_several_records_per_datagram_one_bad_in_the_middle() -> None:
    sender, receiver, _ = pair()
    plain = DTLSRecordLayer()
    hello, _ = plain.seal(HANDSHAKE, b"\x01hello")  # epoch 0 (DTLSPlaintext)
    records = [sender.seal(APPLICATION_DATA, f"record {i}".encode())[0] for i in range(5)]
    bad = bytearray(records[2])
    bad[-1] ^= 1  # the tag
    datagram = hello + records[0] + records[1] + bytes(bad) + records[3] + records[4]
    got = receiver.open_datagram(datagram)
    assert opened(got) == [(0, 0, HANDSHAKE, b"\x01hello")] + [
        (3, i, APPLICATION_DATA, f"record {i}".encode()) for i in (0, 1, 3, 4)
    ]
    assert receiver.discarded == {DiscardReason.AUTHENTICATION_FAILED: 1}


def test_record_without_length_ends_the_datagram() -> None:
    sender, receiver, secret = pair(length_present=False)
    with_length = DTLSRecordLayer()  # the same keys, sending with L, further along the epoch
    with_length.set_write_epoch(3, GCM, secret)
    with_length.set_write_sequence_number(3, 100)
    packer = DatagramPacker(1400)
    first, _ = with_length.seal(APPLICATION_DATA, b"first")
    last, _ = sender.seal(APPLICATION_DATA, b"last")
    assert last[0] & 0x04 == 0
    packer.add(first)
    packer.add(last)
    packer.add(with_length.seal(APPLICATION_DATA, b"next datagram")[0])
    datagrams = packer.datagrams()
    assert len(datagrams) == 2
    assert [r.payload for d in datagrams for r in receiver.open_datagram(d)] == [b"first", b"last", b"next datagram"]


@pytest.mark.parametrize("suite_id", ALL_SUITES, ids=lambda s: CipherSuite(s).name)
@pytest.mark.parametrize("cid", [None, b"\x01" * 8])
def test_max_payload_fills_the_budget_exactly(suite_id: CipherSuite, cid: bytes | None) -> None:
    suite = SUITES[suite_id]
    for sequence_length in (1, 2):
        layer = DTLSRecordLayer(sequence_number_length=sequence_length)
        layer.set_peer_connection_id(cid)
        assert len(layer.seal(HANDSHAKE, bytes(layer.max_payload(300)))[0]) == 300  # epoch 0
        layer.set_write_epoch(2, suite, secret_for(suite))
        for budget in (100, 300, 1200):
            n = layer.max_payload(budget)
            assert len(layer.seal(HANDSHAKE, bytes(n))[0]) == budget
            assert layer.max_payload(budget, epoch=0) == budget - 13
    assert DTLSRecordLayer().max_payload(10) == 0
    assert DTLSRecordLayer().max_payload(100_000) == 2**14


def test_peer_record_size_limit_caps_records() -> None:
    """RFC 8449 §4: the peer's limit counts the DTLSInnerPlaintext's content and type."""
    sender, receiver, _ = pair()
    sender.set_peer_record_size_limit(101)
    assert sender.max_payload(1400) == 100
    assert [len(r.payload) for r in receiver.open_datagram(sender.seal(APPLICATION_DATA, bytes(100))[0])] == [100]
    with pytest.raises(LocalProtocolError):
        sender.seal(APPLICATION_DATA, bytes(101))
    sender.drop_keys()
    with pytest.raises(LocalProtocolError):
        sender.seal(APPLICATION_DATA, b"after close")


def test_our_record_size_limit_discards_larger_records() -> None:
    """RFC 8449 §4: over DTLS a record over our advertised limit may be
    discarded; the limit covers content, type and padding, and the window
    does not move for the discarded record."""
    sender, receiver, _ = pair()
    receiver.receive_record_size_limit = 101
    big = sender.seal(APPLICATION_DATA, bytes(101))[0]  # 102 bytes of inner plaintext
    fits = sender.seal(APPLICATION_DATA, bytes(100))[0]
    assert list(receiver.open_datagram(big)) == []
    assert receiver.discarded[DiscardReason.TOO_LONG] == 1
    assert [len(r.payload) for r in receiver.open_datagram(fits)] == [100]


def test_datagram_packer_respects_the_mtu() -> None:
    sender, receiver, _ = pair()
    packer = DatagramPacker(500)
    sizes = [100, 250, 120, 400, 30, 30, 30, 470, 5, 700]
    for i, n in enumerate(sizes):
        packer.add(sender.seal(APPLICATION_DATA, bytes((i,)) * n)[0])
    datagrams = packer.datagrams()
    assert packer.datagrams() == []
    assert all(len(d) <= 500 for d in datagrams[:-1])
    assert len(datagrams[-1]) == 700 + 1 + 5 + 16  # too big for any datagram: alone, not split
    payloads = [r.payload for d in datagrams for r in receiver.open_datagram(d)]
    assert payloads == [bytes((i,)) * n for i, n in enumerate(sizes)]
    # Greedy: a record starts a new datagram only when it does not fit the current one.
    for d, following in itertools.pairwise(datagrams):
        first_record = 5 + int.from_bytes(following[3:5], "big")
        assert len(d) + first_record > 500


# --------------------------------------------------------------------------- garbage


def test_garbage_datagrams_are_dropped_without_exception() -> None:
    """Random bytes, truncations, bit flips, wrong epoch bits and random headers:
    never an exception, never a record that was not sent."""
    sender, receiver, _ = pair()
    receiver.set_own_connection_id(b"\x00\x01\x02\x03")
    sender.set_peer_connection_id(b"\x00\x01\x02\x03")
    rng = random.Random(20261201)
    sent = [rng.randbytes(rng.randrange(60)) for _ in range(50)]
    genuine = [sender.seal(APPLICATION_DATA, payload)[0] for payload in sent]
    plain = DTLSRecordLayer().seal(HANDSHAKE, b"hello")[0]
    delivered: set[RecordNumber] = set()
    for i in range(3000):
        kind = i % 6
        base = genuine[rng.randrange(len(genuine))] + (plain if rng.random() < 0.3 else b"")
        if kind == 0:
            datagram = rng.randbytes(rng.randrange(1, 200))
        elif kind == 1:
            datagram = base[: rng.randrange(len(base))]
        elif kind == 2:
            flipped = bytearray(base)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            datagram = bytes(flipped)
        elif kind == 3:
            datagram = bytes((base[0] ^ rng.randrange(1, 4),)) + base[1:]  # wrong epoch bits
        elif kind == 4:
            datagram = bytes((0x20 | rng.randrange(32),)) + rng.randbytes(rng.randrange(40))
        else:
            datagram = bytes((rng.choice((21, 22, 26)),)) + rng.randbytes(rng.randrange(30))
        for record in receiver.open_datagram(datagram):
            # Protected records: only what was sent, each once (when a mangling
            # left one whole).  Epoch 0 is unauthenticated (a flipped bit in
            # the plaintext record reaches the handshake, which checks it), but
            # only with a type DTLSPlaintext may carry.
            if record.number.epoch == 0:
                assert record.content_type in (ALERT, HANDSHAKE, ACK)
            else:
                assert record.number not in delivered
                delivered.add(record.number)
                assert record.payload == sent[record.number.sequence_number]
    assert sum(receiver.discarded.values()) > 2000
    assert DiscardReason.AUTHENTICATION_FAILED in receiver.discarded
    assert DiscardReason.BAD_HEADER in receiver.discarded
    assert DiscardReason.TRUNCATED in receiver.discarded
    # The association still works.
    fresh, _ = sender.seal(APPLICATION_DATA, b"still here")
    assert [r.payload for r in receiver.open_datagram(fresh)] == [b"still here"]


def test_unknown_epoch_and_plaintext_rules() -> None:
    sender, receiver, _ = pair(epoch=2)
    record, _ = sender.seal(HANDSHAKE, b"finished")
    wrong_epoch = bytes((record[0] ^ 0x01,)) + record[1:]  # epoch bits 3: nothing open
    assert receiver.open_datagram(wrong_epoch) == []
    # §6.1: application data is never protected under the handshake epoch.
    assert receiver.open_datagram(sender.seal(APPLICATION_DATA, b"too early")[0]) == []
    # DTLSPlaintext: epoch 0 only, the types alert/handshake/ack only, and only while epoch 0 is open.
    plain = DTLSPlaintextHeader(HANDSHAKE, 1, 0, 2).encode() + b"hi"
    assert receiver.open_datagram(plain) == []
    app = bytes((APPLICATION_DATA,)) + DTLSPlaintextHeader(HANDSHAKE, 0, 0, 2).encode()[1:] + b"hi"
    assert receiver.open_datagram(app) == []
    hello = DTLSPlaintextHeader(HANDSHAKE, 0, 7, 2).encode() + b"hi"
    assert opened(receiver.open_datagram(hello)) == [(0, 7, HANDSHAKE, b"hi")]
    receiver.retire_read_epoch(0)
    assert receiver.open_datagram(hello) == []
    assert receiver.discarded == {
        DiscardReason.UNKNOWN_EPOCH: 1,
        DiscardReason.BAD_CONTENT_TYPE: 1,
        DiscardReason.PLAINTEXT_NOT_ALLOWED: 2,
        DiscardReason.BAD_HEADER: 1,
    }
    with pytest.raises(LocalProtocolError):
        DTLSRecordLayer().seal(APPLICATION_DATA, b"never in the clear")


# --------------------------------------------------------------------------- epochs


def test_two_read_epochs_open_at_once() -> None:
    """The old receive epoch stays open until retired: records of epochs 3 and 4
    interleave (a retransmission under the old epoch, §4.2.1) and both open."""
    suite = GCM
    sender, receiver = DTLSRecordLayer(), DTLSRecordLayer()
    s3, s4 = secret_for(suite, "3"), secret_for(suite, "4")
    sender.set_write_epoch(3, suite, s3)
    receiver.set_read_epoch(3, suite, s3)
    old = [sender.seal(HANDSHAKE, b"key update")[0]]
    sender.set_write_epoch(4, suite, s4)
    receiver.set_read_epoch(4, suite, s4)
    assert sender.write_epochs == (0, 3, 4) and receiver.read_epochs == (0, 3, 4)
    new = [sender.seal(APPLICATION_DATA, b"new keys")[0]]
    old.append(sender.seal(HANDSHAKE, b"key update again", epoch=3)[0])  # retransmitted under epoch 3
    got = receiver.open_datagram(new[0] + old[1] + old[0])
    assert opened(got) == [
        (4, 0, APPLICATION_DATA, b"new keys"), (3, 1, HANDSHAKE, b"key update again"), (3, 0, HANDSHAKE, b"key update"),
    ]
    receiver.retire_read_epoch(3)
    assert receiver.open_datagram(sender.seal(HANDSHAKE, b"late", epoch=3)[0]) == []
    assert receiver.discarded == {DiscardReason.UNKNOWN_EPOCH: 1}
    sender.retire_write_epoch(3)
    with pytest.raises(LocalProtocolError):
        sender.seal(HANDSHAKE, b"gone", epoch=3)
    with pytest.raises(LocalProtocolError):
        sender.retire_write_epoch(4)  # the current one
    with pytest.raises(LocalProtocolError):
        sender.set_write_epoch(4, suite, s4)  # epochs only go up
    with pytest.raises(LocalProtocolError):
        sender.set_write_sequence_number(4, 0)  # never back: the nonce would repeat


def test_newest_epoch_with_matching_bits_is_chosen() -> None:
    """§4.2.2: epochs 3 and 7 share their bits; the newer one is tried."""
    sender, receiver = DTLSRecordLayer(), DTLSRecordLayer()
    s3, s7 = secret_for(GCM, "3"), secret_for(GCM, "7")
    sender.set_write_epoch(7, GCM, s7)
    receiver.set_read_epoch(3, GCM, s3)
    receiver.set_read_epoch(7, GCM, s7)
    assert opened(receiver.open_datagram(sender.seal(APPLICATION_DATA, b"7")[0])) == [(7, 0, APPLICATION_DATA, b"7")]


# --------------------------------------------------------------------------- connection IDs


def test_connection_ids() -> None:
    """§4, §9: the C bit and the CID we were given; the receiver frames records
    with the length of the CIDs it issued, and checks they are its own."""
    sender, receiver, _ = pair()
    sender.set_peer_connection_id(b"\xaa\xbb\xcc")
    receiver.set_own_connection_id(b"\xaa\xbb\xcc", b"\x11\x22\x33")  # immediate + spare
    record, _ = sender.seal(APPLICATION_DATA, b"with cid")
    assert record[0] & 0x10 and record[1:4] == b"\xaa\xbb\xcc"
    assert [r.payload for r in receiver.open_datagram(record)] == [b"with cid"]
    sender.set_peer_connection_id(b"\x11\x22\x33")  # the spare one
    assert [r.payload for r in receiver.open_datagram(sender.seal(APPLICATION_DATA, b"spare")[0])] == [b"spare"]

    # A CID that is not ours ends the datagram (§4); a record without one is dropped.
    sender.set_peer_connection_id(b"\x99\x99\x99")
    foreign, _ = sender.seal(APPLICATION_DATA, b"not ours")
    sender.set_peer_connection_id(None)
    without, _ = sender.seal(APPLICATION_DATA, b"no cid")
    sender.set_peer_connection_id(b"\xaa\xbb\xcc")
    good, _ = sender.seal(APPLICATION_DATA, b"good")
    assert [r.payload for r in receiver.open_datagram(without + good)] == [b"good"]
    assert receiver.open_datagram(foreign + sender.seal(APPLICATION_DATA, b"lost")[0]) == []
    assert receiver.discarded == {DiscardReason.BAD_CONNECTION_ID: 2}
    # The CID is covered by the AEAD: an altered CID that is still ours fails authentication.
    tampered = bytearray(sender.seal(APPLICATION_DATA, b"x")[0])
    tampered[1:4] = b"\x11\x22\x33"
    assert receiver.open_datagram(bytes(tampered)) == []
    assert receiver.discarded[DiscardReason.AUTHENTICATION_FAILED] == 1
    # No CID negotiated: a C bit cannot be framed.
    plain_receiver = DTLSRecordLayer()
    plain_receiver.set_read_epoch(3, GCM, secret_for(GCM, "3"))
    assert plain_receiver.open_datagram(good) == []
    assert plain_receiver.discarded == {DiscardReason.BAD_CONNECTION_ID: 1}
    with pytest.raises(ValueError):
        receiver.set_own_connection_id(b"\x01", b"\x01\x02")


# --------------------------------------------------------------------------- AEAD limits


def test_confidentiality_limit_of_the_write_key() -> None:
    """§4.5.3 (RFC 9846 §5.5; CCM: 2^23, Appendix B.1): near the limit at 7/8, refused at it."""
    suite = SUITES[CipherSuite.TLS_AES_128_CCM_SHA256]
    sender, _, _ = pair(suite)
    assert suite.record_limit == 2**23
    sender.set_write_sequence_number(3, 2**23 - (2**23 >> 3) - 1)
    assert not sender.write_near_limit
    sender.seal(APPLICATION_DATA, b"x")
    assert sender.write_near_limit
    sender.set_write_sequence_number(3, 2**23 - 1)
    sender.seal(APPLICATION_DATA, b"last")
    with pytest.raises(UsageLimitError):
        sender.seal(APPLICATION_DATA, b"one too many")


def test_integrity_limit_counts_failed_decryptions() -> None:
    """§4.5.3: failed authentications are counted per key; past the limit
    (2^7 for CCM_8, Appendix B.3) the epoch's records are no longer opened."""
    assert integrity_limit(GCM) == 2**36
    assert integrity_limit(SUITES[CipherSuite.TLS_CHACHA20_POLY1305_SHA256]) == 2**36
    assert integrity_limit(SUITES[CipherSuite.TLS_AES_128_CCM_SHA256]) == int(2**23.5)
    assert integrity_limit(CCM_8) == 2**7
    sender, receiver, _ = pair(CCM_8)
    genuine, _ = sender.seal(APPLICATION_DATA, b"genuine")
    forged = bytearray(genuine)
    forged[-1] ^= 0xFF
    for i in range(128):
        assert receiver.open_datagram(bytes(forged)) == []
        assert receiver.near_integrity_limit == (i + 1 >= 112)
        assert not receiver.integrity_exceeded
    assert receiver.open_datagram(bytes(forged)) == []
    assert receiver.integrity_exceeded == {3}
    assert receiver.open_datagram(genuine) == []
    assert receiver.discarded == {DiscardReason.AUTHENTICATION_FAILED: 129, DiscardReason.INTEGRITY_LIMIT: 1}
    receiver.retire_read_epoch(3)
    assert not receiver.integrity_exceeded


def test_short_ciphertext_is_refused() -> None:
    """§4.2.3: an encrypted_record under 16 bytes is rejected as failing deprotection."""
    _, receiver, _ = pair()
    assert receiver.open_datagram(bytes((0x2F, 0, 0, 0, 15)) + bytes(15)) == []
    assert receiver.discarded == {DiscardReason.SHORT_CIPHERTEXT: 1}


def test_repr_shows_no_secret() -> None:
    sender, _, secret = pair()
    record = DTLSRecord(RecordNumber(3, 1), APPLICATION_DATA, b"secret payload")
    for text in (repr(sender), repr(sender._write[3]), repr(sender._write[3].keys), repr(record)):
        assert secret.hex() not in text and "secret payload" not in text


def test_records_in_opens_each_record_with_the_keys_installed_before_it() -> None:
    """A ServerHello (epoch 0) and the epoch-2 records behind it share a
    datagram (§4.3); the epoch-2 keys exist only once the ServerHello is
    processed.  ``records_in`` opens lazily, so keys installed between two
    records open the second; ``open_datagram`` opens everything at once."""
    secret = bytes(range(32))
    sender = DTLSRecordLayer()
    hello, _ = sender.seal(ContentType.HANDSHAKE, b"server hello", 0)
    sender.set_write_epoch(2, GCM, secret)
    encrypted, _ = sender.seal(ContentType.HANDSHAKE, b"encrypted extensions")
    datagram = hello + encrypted

    eager = DTLSRecordLayer()
    assert [r.payload for r in eager.open_datagram(datagram)] == [b"server hello"]
    assert eager.discarded[DiscardReason.UNKNOWN_EPOCH] == 1

    lazy = DTLSRecordLayer()
    opened = []
    for record in lazy.records_in(datagram):
        opened.append((record.number.epoch, record.payload))
        if record.number.epoch == 0:
            lazy.set_read_epoch(2, GCM, secret)  # what processing the ServerHello does
    assert opened == [(0, b"server hello"), (2, b"encrypted extensions")]
    assert not lazy.discarded
