"""Extended Key Update messages: one dataclass per message, per wire format.

Parsing only, like :mod:`longtls.wire.messages`: no cryptography and no state.
``encode()`` returns the whole handshake message (with its 4-byte header,
because EKU messages enter every hash with it: specs README), and
:meth:`EKUCodec.decode` parses a body strictly over the bounds-checked
:class:`~longtls.wire.buffer.Buffer` (trailing bytes: decode_error).

The three texts use two wire formats:

- :attr:`EKUWireFormat.SUBTYPED` -- draft-13 §4 and draft-2025-10 §4: one
  HandshakeType ``extended_key_update`` whose body starts with a subtype:
  0 request (a KeyShareEntry), 1 response (a KeyShareEntry), 2 the
  bodiless third message (draft-13 "key_update_finish", draft-2025-10
  "new_key_update").  The two texts' messages are the same bytes, so one
  dataclass per message serves both profiles.
- :attr:`EKUWireFormat.SEPARATE_TYPES` -- draft-05 §4: one HandshakeType per
  message; the response carries a status (accepted + KeyShareEntry, retry +
  delay, rejected, clashed) and new_key_update has an empty body.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import ClassVar

from ..constants import AlertDescription, HandshakeType
from ..errors import DecodeError, RemoteProtocolError
from .buffer import Buffer, u8, u16, vec
from .messages import encode_handshake


class Kind(Enum):
    """The role of a message in the exchange, the same in every text."""

    REQUEST = "request"
    RESPONSE = "response"
    FINISH = "finish"  # key_update_finish (draft-13) / new_key_update (older texts)


class Status(IntEnum):
    """ExtendedKeyUpdateResponseStatus (draft-05 §4)."""

    accepted = 0
    retry = 1
    rejected = 2
    clashed = 3


class EKUWireFormat(Enum):
    SUBTYPED = "subtyped"  # draft-13, draft-2025-10
    SEPARATE_TYPES = "separate_types"  # draft-05


def _share(group: int, key_exchange: bytes) -> bytes:
    """KeyShareEntry (RFC 9846 §4.2.8): NamedGroup, key_exchange<1..2^16-1>."""
    return u16(group) + vec(2, key_exchange)


_EXTENDED_KEY_UPDATE = int(HandshakeType.extended_key_update)
#: draft-13 §4 / draft-2025-10 §4: the bodiless third message (subtype 2), whole.
_FINISH_MESSAGE = encode_handshake(_EXTENDED_KEY_UPDATE, u8(2))


def _subtyped_share_message(subtype: int, group: int, key_exchange: bytes) -> bytes:
    """The whole extended_key_update message of subtype request (0) or
    response (1): the subtype, then the KeyShareEntry (draft-13 §4)."""
    return encode_handshake(_EXTENDED_KEY_UPDATE, u8(subtype) + _share(group, key_exchange))


# -- draft-13 / draft-2025-10: HandshakeType extended_key_update + subtype -------


@dataclass(frozen=True, slots=True)
class ExtendedKeyUpdateRequest:
    """Subtype key_update_request (0): the initiator's fresh key share."""

    kind: ClassVar[Kind] = Kind.REQUEST
    status: ClassVar[Status] = Status.accepted
    group: int
    key_exchange: bytes

    def __repr__(self) -> str:
        return f"ExtendedKeyUpdateRequest(group={self.group})"

    def encode(self) -> bytes:
        return _subtyped_share_message(0, self.group, self.key_exchange)


@dataclass(frozen=True, slots=True)
class ExtendedKeyUpdateResponse:
    """Subtype key_update_response (1): the responder's key share."""

    kind: ClassVar[Kind] = Kind.RESPONSE
    status: ClassVar[Status] = Status.accepted
    group: int
    key_exchange: bytes

    def __repr__(self) -> str:
        return f"ExtendedKeyUpdateResponse(group={self.group})"

    def encode(self) -> bytes:
        return _subtyped_share_message(1, self.group, self.key_exchange)


@dataclass(frozen=True, slots=True)
class ExtendedKeyUpdateFinish:
    """Subtype 2, no body: draft-13's key_update_finish, draft-2025-10's new_key_update."""

    kind: ClassVar[Kind] = Kind.FINISH
    status: ClassVar[Status] = Status.accepted

    def encode(self) -> bytes:
        return _FINISH_MESSAGE


# -- draft-05: one HandshakeType per message -----------------------------------


@dataclass(frozen=True, slots=True)
class ExtendedKeyUpdateRequestD05:
    """extended_key_update_request: a KeyShareEntry."""

    kind: ClassVar[Kind] = Kind.REQUEST
    status: ClassVar[Status] = Status.accepted
    group: int
    key_exchange: bytes

    def __repr__(self) -> str:
        return f"ExtendedKeyUpdateRequestD05(group={self.group})"

    def encode(self) -> bytes:
        return encode_handshake(HandshakeType.extended_key_update_request, _share(self.group, self.key_exchange))


@dataclass(frozen=True, slots=True)
class ExtendedKeyUpdateResponseD05:
    """extended_key_update_response: a status, then a KeyShareEntry (accepted)
    or a delay in seconds (retry); nothing for rejected and clashed."""

    kind: ClassVar[Kind] = Kind.RESPONSE
    status: Status
    group: int = 0
    key_exchange: bytes = b""
    delay: int = 0

    def __repr__(self) -> str:
        return f"ExtendedKeyUpdateResponseD05({self.status.name}, group={self.group}, delay={self.delay})"

    def encode(self) -> bytes:
        body = u8(self.status)
        if self.status == Status.accepted:
            body += _share(self.group, self.key_exchange)
        elif self.status == Status.retry:
            body += u8(self.delay)
        return encode_handshake(HandshakeType.extended_key_update_response, body)


@dataclass(frozen=True, slots=True)
class NewKeyUpdateD05:
    """new_key_update: an empty body."""

    kind: ClassVar[Kind] = Kind.FINISH
    status: ClassVar[Status] = Status.accepted

    def encode(self) -> bytes:
        return encode_handshake(HandshakeType.new_key_update, b"")


EKURequest = ExtendedKeyUpdateRequest | ExtendedKeyUpdateRequestD05
EKUResponse = ExtendedKeyUpdateResponse | ExtendedKeyUpdateResponseD05
EKUMessage = (
    ExtendedKeyUpdateRequest | ExtendedKeyUpdateResponse | ExtendedKeyUpdateFinish
    | ExtendedKeyUpdateRequestD05 | ExtendedKeyUpdateResponseD05 | NewKeyUpdateD05
)


@dataclass(frozen=True, slots=True)
class EKUCodec:
    """The messages of one wire format: build them by role, decode by type."""

    format: EKUWireFormat

    @property
    def message_types(self) -> frozenset[int]:
        if self.format is EKUWireFormat.SEPARATE_TYPES:
            return frozenset((
                HandshakeType.extended_key_update_request,
                HandshakeType.extended_key_update_response,
                HandshakeType.new_key_update,
            ))
        return frozenset((HandshakeType.extended_key_update,))

    def request(self, group: int, key_exchange: bytes) -> EKURequest:
        if self.format is EKUWireFormat.SEPARATE_TYPES:
            return ExtendedKeyUpdateRequestD05(group, key_exchange)
        return ExtendedKeyUpdateRequest(group, key_exchange)

    def response(self, group: int, key_exchange: bytes) -> EKUResponse:
        """The accepting response."""
        if self.format is EKUWireFormat.SEPARATE_TYPES:
            return ExtendedKeyUpdateResponseD05(Status.accepted, group, key_exchange)
        return ExtendedKeyUpdateResponse(group, key_exchange)

    def finish(self) -> ExtendedKeyUpdateFinish | NewKeyUpdateD05:
        if self.format is EKUWireFormat.SEPARATE_TYPES:
            return NewKeyUpdateD05()
        return _FINISH  # no fields: one object serves every update

    # The whole messages as bytes, ``request(...).encode()`` and so on,
    # without building the message object first (every update sends two or
    # three of them, issue 16).

    def request_message(self, group: int, key_exchange: bytes) -> bytes:
        if self.format is EKUWireFormat.SUBTYPED:
            return _subtyped_share_message(0, group, key_exchange)
        return self.request(group, key_exchange).encode()

    def response_message(self, group: int, key_exchange: bytes) -> bytes:
        """The accepting response."""
        if self.format is EKUWireFormat.SUBTYPED:
            return _subtyped_share_message(1, group, key_exchange)
        return self.response(group, key_exchange).encode()

    def finish_message(self) -> bytes:
        if self.format is EKUWireFormat.SUBTYPED:
            return _FINISH_MESSAGE
        return NewKeyUpdateD05().encode()

    def decode(self, msg_type: int, body: bytes) -> EKUMessage:
        """One message of this format (``msg_type`` is one of ``message_types``)."""
        if self.format is EKUWireFormat.SUBTYPED:
            return _decode_subtyped(body)
        # draft-05 §4: one HandshakeType per message.
        buf = Buffer(body)
        msg: EKUMessage
        if msg_type == HandshakeType.extended_key_update_request:
            msg = ExtendedKeyUpdateRequestD05(buf.read_uint16(), buf.read_vector(2, 1))
        elif msg_type == HandshakeType.extended_key_update_response:
            raw_status = buf.read_uint8()
            try:
                status = Status(raw_status)
            except ValueError:
                raise RemoteProtocolError(
                    f"unknown ExtendedKeyUpdateResponse status {raw_status}",
                    AlertDescription.illegal_parameter,
                ) from None
            if status == Status.accepted:
                msg = ExtendedKeyUpdateResponseD05(status, buf.read_uint16(), buf.read_vector(2, 1))
            elif status == Status.retry:
                msg = ExtendedKeyUpdateResponseD05(status, delay=buf.read_uint8())
            else:
                msg = ExtendedKeyUpdateResponseD05(status)
        else:
            msg = NewKeyUpdateD05()
        buf.expect_end("ExtendedKeyUpdate")
        return msg


_FINISH = ExtendedKeyUpdateFinish()


def _decode_subtyped(body: bytes) -> EKUMessage:
    """draft-13 §4 / draft-2025-10 §4: a subtype, then for request (0) and
    response (1) a KeyShareEntry (RFC 9846 §4.2.8: NamedGroup,
    key_exchange<1..2^16-1>), for the third message (2) nothing.

    Read by hand rather than through a Buffer (two of the three messages of
    every update come through here, issue 16); the same checks, in the same
    order, with the same errors: decode_error for a short or long body or an
    empty key_exchange, unexpected_message for an unknown subtype.
    """
    size = len(body)
    if not size:
        raise DecodeError("message truncated")
    subtype = body[0]
    if subtype == 2:
        if size != 1:
            raise DecodeError(f"{size - 1} trailing bytes in ExtendedKeyUpdate")
        return _FINISH
    if subtype > 2:
        raise RemoteProtocolError(f"unknown ExtendedKeyUpdate subtype {subtype}", AlertDescription.unexpected_message)
    if size < 5:
        raise DecodeError("message truncated")
    length = (body[3] << 8) | body[4]
    if not length:
        raise DecodeError("vector length 0 outside <1..65535>")
    end = 5 + length
    if size < end:
        raise DecodeError("message truncated")
    if size > end:
        raise DecodeError(f"{size - end} trailing bytes in ExtendedKeyUpdate")
    group = (body[1] << 8) | body[2]
    if subtype == 0:
        return ExtendedKeyUpdateRequest(group, body[5:end])
    return ExtendedKeyUpdateResponse(group, body[5:end])


SUBTYPED = EKUCodec(EKUWireFormat.SUBTYPED)
SEPARATE_TYPES = EKUCodec(EKUWireFormat.SEPARATE_TYPES)
