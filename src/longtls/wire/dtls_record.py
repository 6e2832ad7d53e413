"""DTLS 1.3 record-level codecs (RFC 9147 §4, §7).

What every DTLS module shares: a record is named by its ``RecordNumber``
(epoch, sequence number), the pair ACK messages carry (§7) and the AEAD
nonce and replay window are keyed by.

The two record headers of §4:

- ``DTLSPlaintext`` (epoch 0 only): type, legacy_record_version {254, 253},
  a 16-bit epoch, a 48-bit sequence number and a 16-bit length; 13 bytes.
- The unified header of ``DTLSCiphertext``: a first byte ``001CSLEE`` (C: a
  connection ID follows; S: the sequence number is 16 bits, else 8; L: a
  16-bit length follows, else the record runs to the end of the datagram;
  EE: the two low bits of the epoch), then the connection ID, the low bits
  of the sequence number (encrypted on the wire, §4.2.3) and the length.

Parsing is bounds-checked and never raises anything but ``InvalidRecord``,
whose ``reason`` says why; in DTLS an invalid record is silently discarded
(§4.5.2), so the record layer counts the reason and moves on.  This module
does no cryptography: the sequence number bits it parses and writes are the
bytes on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from ..constants import DTLS_LEGACY_VERSION, AlertDescription, ContentType
from ..errors import DecodeError


class RecordNumber(NamedTuple):
    """A record's full 64-bit epoch and 64-bit sequence number (RFC 9147 §4, §7).

    A NamedTuple, not a dataclass: one is made per record sealed or opened,
    and a tuple is built in half the time.  Immutable, hashable, ordered
    (epoch first) and compared by value like the frozen dataclass it was.
    """

    epoch: int
    sequence_number: int


class DiscardReason(StrEnum):
    """Why a received DTLS record was discarded (RFC 9147 §4.5.2: silently).

    The record layer counts discarded records per reason (a ``Counter`` keyed
    by these; the strings are what a log or a metrics endpoint shows).
    """

    #: The first byte is neither a DTLSPlaintext type (alert, handshake, ack)
    #: nor ``001xxxxx`` (§4.1: "rejected as if it had failed deprotection").
    #: The rest of the datagram cannot be framed and is discarded with it.
    BAD_HEADER = "bad_header"
    #: The header, or the length it announces, runs past the end of the datagram.
    TRUNCATED = "truncated"
    #: A connection ID where none is expected, none where one is, or one that is not ours (§4, §9).
    BAD_CONNECTION_ID = "bad_connection_id"
    #: No open receive epoch has these epoch bits (§4.2.2; §6.1: "fails deprotection").
    UNKNOWN_EPOCH = "unknown_epoch"
    #: A DTLSPlaintext record while epoch 0 is closed, with an epoch other
    #: than 0, or of a type that may not be sent unprotected (§4.1: alert,
    #: handshake, ack only).
    PLAINTEXT_NOT_ALLOWED = "plaintext_not_allowed"
    #: Encrypted record shorter than the 16 bytes record number encryption samples (§4.2.3).
    SHORT_CIPHERTEXT = "short_ciphertext"
    #: Over 2^14 + 256 bytes of ciphertext or 2^14 bytes of content (RFC 9846 §5.1, §5.2).
    TOO_LONG = "too_long"
    #: The AEAD rejected the record: a forgery, corruption, or a wrong epoch guess (§4.5.3 counts these).
    AUTHENTICATION_FAILED = "authentication_failed"
    #: The record number was already received in this epoch (§4.5.1).
    REPLAYED = "replayed"
    #: The record number is left of the replay window (§4.5.1).
    TOO_OLD = "too_old"
    #: The epoch's key failed authentication more often than its integrity limit allows (§4.5.3).
    INTEGRITY_LIMIT = "integrity_limit"
    #: The decrypted DTLSInnerPlaintext has no non-zero content type, or one
    #: DTLS 1.3 does not carry, or one its epoch may not carry (§4, §6.1).
    BAD_CONTENT_TYPE = "bad_content_type"


class InvalidRecord(DecodeError):
    """A record header that cannot be parsed; ``reason`` is the ``DiscardReason``.

    It is a ``DecodeError`` for code that handles every decoding failure alike,
    but a DTLS record layer never turns it into an alert: it discards the
    record (RFC 9147 §4.5.2).
    """

    def __init__(self, reason: DiscardReason, message: str) -> None:
        super().__init__(message, AlertDescription.decode_error)
        self.reason = reason


#: DTLSPlaintext: type(1) legacy_record_version(2) epoch(2) sequence_number(6) length(2).
PLAINTEXT_HEADER_LENGTH = 13
#: §4.1: the only content types a DTLSPlaintext record may carry in DTLS 1.3.
PLAINTEXT_TYPES = frozenset((ContentType.ALERT, ContentType.HANDSHAKE, ContentType.ACK))
#: §4: DTLSPlaintext sequence numbers never exceed 2^48 - 1.
MAX_PLAINTEXT_SEQUENCE_NUMBER = 2**48 - 1

# The unified header's first byte (§4, Figure 3).
UNIFIED_FIXED_BITS = 0x20  # 001 in the three high bits
UNIFIED_FIXED_MASK = 0xE0
C_BIT = 0x10  # a connection ID is present
S_BIT = 0x08  # 16-bit sequence number (else 8)
L_BIT = 0x04  # 16-bit length present (else: to the end of the datagram)
EPOCH_BITS = 0x03  # the two low bits of the epoch

_PLAINTEXT_TYPES = frozenset(int(t) for t in PLAINTEXT_TYPES)  # plain ints: looked up per record


def is_unified_header(first_byte: int) -> bool:
    """Whether a record starting with this byte is a DTLSCiphertext (§4.1: 001xxxxx)."""
    return first_byte & UNIFIED_FIXED_MASK == UNIFIED_FIXED_BITS


@dataclass(slots=True)
class DTLSPlaintextHeader:
    """The 13-byte header of a DTLSPlaintext record (RFC 9147 §4)."""

    content_type: int
    epoch: int
    sequence_number: int
    length: int
    legacy_record_version: int = DTLS_LEGACY_VERSION

    def encode(self) -> bytes:
        if not 0 <= self.epoch <= 0xFFFF:
            raise ValueError("DTLSPlaintext epoch is 16 bits")
        if not 0 <= self.sequence_number <= MAX_PLAINTEXT_SEQUENCE_NUMBER:
            raise ValueError("DTLSPlaintext sequence_number is 48 bits (RFC 9147 §4)")
        if not 0 <= self.length <= 0xFFFF:
            raise ValueError("DTLSPlaintext length is 16 bits")
        return (
            bytes((self.content_type,))
            + self.legacy_record_version.to_bytes(2, "big")
            + self.epoch.to_bytes(2, "big")
            + self.sequence_number.to_bytes(6, "big")
            + self.length.to_bytes(2, "big")
        )

    @classmethod
    def parse(cls, data: bytes | memoryview, pos: int = 0) -> DTLSPlaintextHeader:
        """The header at ``data[pos:]``; its fragment must lie within ``data``.

        legacy_record_version is returned but not judged: §4 says it "MUST be
        ignored for all purposes".
        """
        end = pos + PLAINTEXT_HEADER_LENGTH
        if len(data) < end:
            raise InvalidRecord(DiscardReason.TRUNCATED, "DTLSPlaintext header cut short")
        content_type = data[pos]
        if content_type not in _PLAINTEXT_TYPES:
            raise InvalidRecord(DiscardReason.BAD_HEADER, f"content type {content_type} is not a DTLSPlaintext type")
        header = bytes(data[pos:end])
        length = int.from_bytes(header[11:13], "big")
        if len(data) < end + length:
            raise InvalidRecord(DiscardReason.TRUNCATED, "DTLSPlaintext fragment runs past the datagram")
        return cls(
            content_type,
            int.from_bytes(header[3:5], "big"),
            int.from_bytes(header[5:11], "big"),
            length,
            int.from_bytes(header[1:3], "big"),
        )


@dataclass(slots=True)
class UnifiedHeader:
    """The unified header of a DTLSCiphertext record (RFC 9147 §4, Figure 3).

    ``sequence_number`` is the 8 or 16 bits in the header as they are on the
    wire: encrypted (§4.2.3) in a received record, or the clear low bits when
    building the AEAD's additional data.  ``length`` is the encrypted_record's
    length, whether or not the L bit carries it (``length_present``).
    """

    epoch_bits: int
    sequence_number: int
    sequence_length: int = 2  # bytes: 1 (S = 0) or 2 (S = 1)
    length: int = 0
    length_present: bool = True
    connection_id: bytes | None = None  # None: no C bit

    @property
    def first_byte(self) -> int:
        byte = UNIFIED_FIXED_BITS | (self.epoch_bits & EPOCH_BITS)
        if self.connection_id is not None:
            byte |= C_BIT
        if self.sequence_length == 2:
            byte |= S_BIT
        if self.length_present:
            byte |= L_BIT
        return byte

    @property
    def header_length(self) -> int:
        cid = 0 if self.connection_id is None else len(self.connection_id)
        return 1 + cid + self.sequence_length + (2 if self.length_present else 0)

    def encode(self) -> bytes:
        if self.sequence_length not in (1, 2):
            raise ValueError("the unified header's sequence number is 8 or 16 bits")
        if not 0 <= self.sequence_number < 1 << (8 * self.sequence_length):
            raise ValueError("sequence number bits do not fit the header")
        out = bytearray((self.first_byte,))
        if self.connection_id is not None:
            out += self.connection_id
        out += self.sequence_number.to_bytes(self.sequence_length, "big")
        if self.length_present:
            if not 0 <= self.length <= 0xFFFF:
                raise ValueError("DTLSCiphertext length is 16 bits")
            out += self.length.to_bytes(2, "big")
        return bytes(out)

    @classmethod
    def parse(cls, data: bytes | memoryview, pos: int = 0, connection_id_length: int | None = None) -> UnifiedHeader:
        """The unified header at ``data[pos:]``.

        ``connection_id_length``: the length of the connection IDs we issued,
        or None if we expect none; the header does not carry it (§4, §9), so a
        record with the C bit can only be framed by the association that
        issued the CID.  The encrypted_record (``length`` bytes, or the rest
        of the datagram without L) must lie within ``data``.
        """
        size = len(data)
        if pos >= size:
            raise InvalidRecord(DiscardReason.TRUNCATED, "empty record")
        first = data[pos]
        if first & UNIFIED_FIXED_MASK != UNIFIED_FIXED_BITS:
            raise InvalidRecord(DiscardReason.BAD_HEADER, f"first byte 0x{first:02x} is not 001CSLEE")
        i = pos + 1
        connection_id: bytes | None = None
        if first & C_BIT:
            if connection_id_length is None:
                raise InvalidRecord(DiscardReason.BAD_CONNECTION_ID, "connection ID present but none was negotiated")
            if i + connection_id_length > size:
                raise InvalidRecord(DiscardReason.TRUNCATED, "connection ID cut short")
            connection_id = bytes(data[i : i + connection_id_length])
            i += connection_id_length
        sequence_length = 2 if first & S_BIT else 1
        if i + sequence_length > size:
            raise InvalidRecord(DiscardReason.TRUNCATED, "sequence number cut short")
        sequence_number = data[i] if sequence_length == 1 else (data[i] << 8) | data[i + 1]
        i += sequence_length
        length_present = bool(first & L_BIT)
        if length_present:
            if i + 2 > size:
                raise InvalidRecord(DiscardReason.TRUNCATED, "length cut short")
            length = (data[i] << 8) | data[i + 1]
            i += 2
            if i + length > size:
                raise InvalidRecord(DiscardReason.TRUNCATED, "encrypted_record runs past the datagram")
        else:
            length = size - i  # §4: "the record consumes the entire rest of the datagram"
        return cls(first & EPOCH_BITS, sequence_number, sequence_length, length, length_present, connection_id)


def reconstruct_sequence_number(expected: int, low_bits: int, bit_count: int) -> int:
    """The full sequence number whose low ``bit_count`` bits are ``low_bits``,
    numerically closest to ``expected`` (RFC 9147 §4.2.2: one plus the highest
    sequence number deprotected in the epoch), across wrap-around of the bits.

    A tie (exactly half the span away on both sides) goes to the higher
    candidate; a result is never negative and never above 2^64 - 1.
    """
    span = 1 << bit_count
    half = span >> 1
    candidate = (expected & ~(span - 1)) | low_bits
    if candidate + half <= expected and candidate + span <= 0xFFFFFFFFFFFFFFFF:
        return candidate + span
    if candidate > expected + half and candidate >= span:
        return candidate - span
    return candidate
