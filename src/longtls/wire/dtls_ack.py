"""The DTLS 1.3 ACK message (RFC 9147 §7, draft-ietf-tls-rfc9147bis-02 §7).

::

    struct {
        uint64 epoch;
        uint64 sequence_number;
    } RecordNumber;

    struct {
        RecordNumber record_numbers<0..2^16-1>;
    } ACK;

ACK is its own content type (26), not a handshake message, so it never
enters the transcript.  An empty list is legal: the revision (§7.1) names the
empty ACK as a liveness signal that can trigger faster retransmission, once
DTLS 1.3 has been selected.  Codec only: which records to list and when is
``record.dtls_reliability``'s.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import DecodeError
from .dtls_record import RecordNumber

__all__ = ["ACK", "ACK_RECORD_NUMBER_LENGTH", "MAX_ACK_RECORD_NUMBERS", "max_ack_record_numbers"]

ACK_RECORD_NUMBER_LENGTH = 16  # uint64 epoch + uint64 sequence_number
# The vector's length is a uint16 byte count: at most 65535 // 16 entries.
MAX_ACK_RECORD_NUMBERS = 0xFFFF // ACK_RECORD_NUMBER_LENGTH
_RECORD_NUMBER = struct.Struct(">QQ")
_U64_MAX = (1 << 64) - 1


def max_ack_record_numbers(payload_room: int) -> int:
    """How many record numbers an ACK may list to fit ``payload_room`` bytes."""
    return max(0, min(MAX_ACK_RECORD_NUMBERS, (payload_room - 2) // ACK_RECORD_NUMBER_LENGTH))


@dataclass(frozen=True, slots=True)
class ACK:
    """An ACK: the records (epoch, sequence_number) received and processed or
    buffered (§7).

    §7 says the list is "in numerically increasing order"; ``from_records``
    sorts, ``decode`` accepts any order (the text names no alert for a peer
    that does not sort, and order carries no meaning for the receiver).
    """

    record_numbers: tuple[RecordNumber, ...] = ()

    @classmethod
    def from_records(cls, records: Iterable[RecordNumber]) -> ACK:
        return cls(tuple(sorted(records)))

    def encode(self) -> bytes:
        numbers = self.record_numbers
        if len(numbers) > MAX_ACK_RECORD_NUMBERS:
            raise ValueError(f"an ACK lists at most {MAX_ACK_RECORD_NUMBERS} record numbers")
        pack = _RECORD_NUMBER.pack
        parts = [(len(numbers) * ACK_RECORD_NUMBER_LENGTH).to_bytes(2, "big")]
        for rn in numbers:
            if not (0 <= rn.epoch <= _U64_MAX and 0 <= rn.sequence_number <= _U64_MAX):
                raise ValueError("record number field out of uint64 range")
            parts.append(pack(rn.epoch, rn.sequence_number))
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> ACK:
        """Parse one ACK record's whole payload (decode_error on any bad length)."""
        if len(payload) < 2:
            raise DecodeError("ACK truncated")
        n = int.from_bytes(payload[:2], "big")
        if n % ACK_RECORD_NUMBER_LENGTH:
            raise DecodeError(f"ACK record_numbers length {n} is not a multiple of 16")
        if len(payload) != 2 + n:
            raise DecodeError(
                "ACK truncated" if len(payload) < 2 + n else f"{len(payload) - 2 - n} trailing bytes in ACK"
            )
        return cls(
            tuple(RecordNumber(e, s) for e, s in _RECORD_NUMBER.iter_unpack(memoryview(payload)[2:]))
        )
