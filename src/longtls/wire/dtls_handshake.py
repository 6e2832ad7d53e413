"""The DTLS 1.3 handshake header and its fragments (RFC 9147 §5.2, §5.5).

On the wire every DTLS handshake message (or piece of one) carries a 12-byte
header::

    struct {
        HandshakeType msg_type;
        uint24 length;             /* bytes in the whole message body */
        uint16 message_seq;
        uint24 fragment_offset;
        uint24 fragment_length;
        opaque fragment[fragment_length];
    } DTLSHandshake;

The handshake engines and the transcript use the TLS form instead (§5.2: "the
message transcript is computed over the original TLS 1.3-style Handshake
messages without the message_seq, fragment_offset, and fragment_length
values"), so this module also converts between the two.  Codecs only: no
state, no cryptography.

Alerts (RFC 9846 §6.2, decisions recorded in docs/dtls-reliability.md): a
header cut short, or a fragment reaching past its message's ``length``, is
decode_error ("some field was out of the specified range or the length of the
message was incorrect"); a zero-length fragment of a non-empty message is
unexpected_message, as RFC 9846 §5.1 says of zero-length handshake fragments.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..constants import AlertDescription
from ..errors import DecodeError, RemoteProtocolError

__all__ = [
    "DTLS_HANDSHAKE_HEADER_LENGTH",
    "MAX_MESSAGE_SEQ",
    "TLS_HANDSHAKE_HEADER_LENGTH",
    "DTLSHandshakeFragment",
    "decode_fragments",
    "encode_fragment",
    "split_tls_message",
    "tls_message",
]

DTLS_HANDSHAKE_HEADER_LENGTH = 12
TLS_HANDSHAKE_HEADER_LENGTH = 4
MAX_MESSAGE_SEQ = 0xFFFF  # uint16; §5.2: message_seq MUST NOT wrap
_U24_MAX = 0xFFFFFF

# msg_type and length as one uint32 (type << 24 | length), then message_seq.
_TYPE_LENGTH_SEQ = struct.Struct(">IH")
_TYPE_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class DTLSHandshakeFragment:
    """One DTLSHandshake structure: a whole message or a piece of one (§5.5).

    ``fragment`` is the piece of the message *body* (no header) that starts at
    ``fragment_offset``; an unfragmented message is the degenerate case
    fragment_offset=0, fragment_length=length.  The repr never shows the
    bytes: a handshake body can carry secret-bearing values.
    """

    msg_type: int
    length: int
    message_seq: int
    fragment_offset: int
    fragment: bytes

    def __repr__(self) -> str:
        return (
            f"DTLSHandshakeFragment(msg_type={self.msg_type}, length={self.length}, "
            f"message_seq={self.message_seq}, fragment_offset={self.fragment_offset}, "
            f"fragment_length={len(self.fragment)})"
        )

    @property
    def fragment_length(self) -> int:
        return len(self.fragment)

    @property
    def end(self) -> int:
        """Offset just past this fragment in the message body."""
        return self.fragment_offset + len(self.fragment)

    def encode(self) -> bytes:
        return encode_fragment(
            self.msg_type, self.length, self.message_seq, self.fragment_offset, self.fragment
        )


def encode_fragment(
    msg_type: int,
    length: int,
    message_seq: int,
    fragment_offset: int,
    fragment: bytes | memoryview,
) -> bytes:
    """The DTLSHandshake bytes of one fragment (12-byte header + fragment).

    Our own values only: a value out of range is a programming error
    (ValueError), not a peer's fault.
    """
    fragment_length = len(fragment)
    if not (0 <= msg_type <= 0xFF and 0 <= length <= _U24_MAX and 0 <= message_seq <= MAX_MESSAGE_SEQ):
        raise ValueError("DTLS handshake header field out of range")
    if fragment_offset < 0 or fragment_offset + fragment_length > length:
        raise ValueError(
            f"fragment [{fragment_offset}, {fragment_offset + fragment_length}) "
            f"outside a message of {length} bytes"
        )
    return b"".join(
        (
            _TYPE_LENGTH_SEQ.pack((msg_type << 24) | length, message_seq),
            ((fragment_offset << 24) | fragment_length).to_bytes(6, "big"),
            fragment,
        )
    )


def decode_fragments(payload: bytes) -> list[DTLSHandshakeFragment]:
    """Every DTLSHandshake fragment in one handshake record's payload.

    §5.5: several handshake messages (of one flight) may share a record, so a
    payload holds one or more fragments back to back.  The whole payload is
    checked before anything is returned, so a malformed record has no partial
    effect.
    """
    if not payload:
        raise RemoteProtocolError(
            "zero-length DTLS handshake record", AlertDescription.unexpected_message
        )
    fragments: list[DTLSHandshakeFragment] = []
    pos = 0
    end = len(payload)
    while pos < end:
        if end - pos < DTLS_HANDSHAKE_HEADER_LENGTH:
            raise DecodeError("DTLS handshake header truncated")
        type_length, message_seq = _TYPE_LENGTH_SEQ.unpack_from(payload, pos)
        offset_and_length = int.from_bytes(payload[pos + 6 : pos + 12], "big")
        fragment_offset = offset_and_length >> 24
        fragment_length = offset_and_length & _U24_MAX
        length = type_length & _U24_MAX
        pos += DTLS_HANDSHAKE_HEADER_LENGTH
        if fragment_length > end - pos:
            raise DecodeError("DTLS handshake fragment truncated")
        if fragment_offset + fragment_length > length:
            raise DecodeError(
                f"DTLS handshake fragment [{fragment_offset}, {fragment_offset + fragment_length}) "
                f"reaches past its message length {length}"
            )
        if fragment_length == 0 and length != 0:
            raise RemoteProtocolError(
                "zero-length DTLS handshake fragment", AlertDescription.unexpected_message
            )
        fragments.append(
            DTLSHandshakeFragment(
                type_length >> 24, length, message_seq, fragment_offset,
                payload[pos : pos + fragment_length],
            )
        )
        pos += fragment_length
    return fragments


def tls_message(msg_type: int, body: bytes | bytearray | memoryview) -> bytes:
    """The TLS-encoded Handshake (4-byte header + body) the engines and the
    transcript use (RFC 9147 §5.2)."""
    return b"".join((_TYPE_LENGTH.pack((msg_type << 24) | len(body)), body))


def split_tls_message(message: bytes) -> tuple[int, bytes]:
    """``(msg_type, body)`` of one TLS-encoded Handshake from our own engine.

    The engine hands over exactly one whole message; anything else is a local
    programming error (ValueError).
    """
    if len(message) < TLS_HANDSHAKE_HEADER_LENGTH:
        raise ValueError("a TLS handshake message has a 4-byte header")
    (type_length,) = _TYPE_LENGTH.unpack_from(message)
    if (type_length & _U24_MAX) != len(message) - TLS_HANDSHAKE_HEADER_LENGTH:
        raise ValueError("TLS handshake header length does not match the message")
    return type_length >> 24, message[TLS_HANDSHAKE_HEADER_LENGTH:]
