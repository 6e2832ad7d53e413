"""The plaintext inside a longtls session ticket (RFC 9846 §4.6.1 leaves its format to the server).

A ticket is ``key_name || nonce || AES-256-GCM(ticket key, state)``; this
module is the codec of ``state`` only (no cryptography, no policy: handshake/tickets.py
seals, opens and judges it).

    struct {
        uint8 version = 1;
        uint16 cipher_suite;
        uint64 issued_ms;            /* the server's clock, milliseconds */
        uint32 ticket_lifetime;      /* seconds, as sent in NewSessionTicket */
        opaque origin[8];            /* the issuing connection, for EKU invalidation */
        uint32 generation;           /* extended key updates done on it at issue time */
        uint32 ticket_age_add;
        opaque psk<0..255>;
        opaque alpn<0..255>;         /* UTF-8, empty: none */
        opaque server_name<0..2^16-1>; /* UTF-8, empty: none */
    } TicketState;
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DecodeError
from .buffer import Buffer, u8, u16, u32, u64, vec

TICKET_STATE_VERSION = 1
#: Length of the random label that names the connection a ticket came from.
ORIGIN_LENGTH = 8


@dataclass(frozen=True)
class TicketState:
    cipher_suite: int
    issued_ms: int
    lifetime: int
    origin: bytes
    generation: int
    age_add: int
    psk: bytes = field(repr=False)  # a secret: never in a repr
    alpn: str | None
    server_name: str | None

    def encode(self) -> bytes:
        return b"".join((
            u8(TICKET_STATE_VERSION), u16(self.cipher_suite), u64(self.issued_ms), u32(self.lifetime),
            self.origin, u32(self.generation), u32(self.age_add), vec(1, self.psk),
            vec(1, (self.alpn or "").encode()), vec(2, (self.server_name or "").encode()),
        ))

    @classmethod
    def decode(cls, data: bytes) -> TicketState:
        """Raises DecodeError for another version, a short or long state, or names that are not UTF-8."""
        buf = Buffer(data)
        if buf.read_uint8() != TICKET_STATE_VERSION:
            raise DecodeError("ticket state of another version")
        suite = buf.read_uint16()
        issued_ms = buf.read_uint64()
        lifetime = buf.read_uint32()
        origin = buf.read(ORIGIN_LENGTH)
        generation = buf.read_uint32()
        age_add = buf.read_uint32()
        psk = buf.read_vector(1)
        try:
            alpn = buf.read_vector(1).decode() or None
            server_name = buf.read_vector(2).decode() or None
        except UnicodeDecodeError:
            raise DecodeError("ticket state names are not UTF-8") from None
        buf.expect_end("ticket state")
        return cls(suite, issued_ms, lifetime, origin, generation, age_add, psk, alpn, server_name)
