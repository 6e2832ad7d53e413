"""DTLS 1.3 connection ID management messages (RFC 9147 §9).

``NewConnectionId`` hands the peer connection IDs (CIDs) to put in the records
it sends us; ``RequestConnectionId`` asks the peer for some.  Both are
post-handshake handshake messages (types 10 and 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ..errors import DecodeError
from .buffer import Buffer, u8, vec

#: RFC 9146 §3: ``opaque cid<0..2^8-1>``.
MAX_CID_LENGTH = 255


class ConnectionIdUsage(IntEnum):
    """RFC 9147 §9: use one of the new CIDs at once, or keep them as spares."""

    cid_immediate = 0
    cid_spare = 1


@dataclass(frozen=True, slots=True)
class NewConnectionId:
    """``struct { ConnectionId cids<0..2^16-1>; ConnectionIdUsage usage; }``."""

    cids: tuple[bytes, ...]
    usage: ConnectionIdUsage

    def encode(self) -> bytes:
        for cid in self.cids:
            if len(cid) > MAX_CID_LENGTH:
                raise ValueError(f"a connection ID of {len(cid)} bytes (at most {MAX_CID_LENGTH})")
        return vec(2, b"".join(vec(1, cid) for cid in self.cids)) + u8(self.usage)

    @classmethod
    def decode(cls, body: bytes) -> NewConnectionId:
        buf = Buffer(body)
        inner = buf.sub(2, 0, 0xFFFF)
        cids = []
        while not inner.eof():
            cids.append(inner.read_vector(1, 0, MAX_CID_LENGTH))
        raw_usage = buf.read_uint8()
        buf.expect_end("NewConnectionId")
        try:
            usage = ConnectionIdUsage(raw_usage)
        except ValueError:
            raise DecodeError(f"NewConnectionId usage {raw_usage} is neither cid_immediate nor cid_spare") from None
        return cls(tuple(cids), usage)


@dataclass(frozen=True, slots=True)
class RequestConnectionId:
    """``struct { uint8 num_cids; }``."""

    num_cids: int

    def encode(self) -> bytes:
        return u8(self.num_cids)

    @classmethod
    def decode(cls, body: bytes) -> RequestConnectionId:
        buf = Buffer(body)
        num = buf.read_uint8()
        buf.expect_end("RequestConnectionId")
        return cls(num)
