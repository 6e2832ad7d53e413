"""DTLS 1.3 record-level codecs (RFC 9147 §4, §7).

What every DTLS module shares: a record is named by its ``RecordNumber``
(epoch, sequence number), the pair ACK messages carry (§7) and the AEAD
nonce and replay window are keyed by.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True, slots=True)
class RecordNumber:
    """A record's full 64-bit epoch and 64-bit sequence number (RFC 9147 §4, §7)."""

    epoch: int
    sequence_number: int
