"""MLS-TLS messages: the MLSTLSMessage wrapper and its six bodies.

draft-kohbrok-mls-tls-01 §"Updating record layer protection keys" carries
the two-party profile's messages "as the content of a TLSInnerPlaintext
message with type set to handshake" and leaves TODO the wrapper that tells a
receiver what to deserialize.  longtls's answer (docs/mls-tls.md §1):

    struct {
        HandshakeType msg_type = mls_tls;     /* private use, PROVISIONAL */
        uint24 length;
        MLSTLSMessage body;
    } Handshake;                               /* RFC 8446 §4 header */

    struct {
        MLSTLSMessageType msg_type;            /* uint8, PROVISIONAL */
        select (msg_type) {
            case client_hello:        MLSMessage key_package;
            case server_hello:        MLSMessage welcome;
            case connection_update:   MLSMessage update;
            case epoch_key_update:    uint64 epoch;
            case resumption_request:  MLSMessage commit;
            case resumption_response: MLSMessage commit;
        };
    } MLSTLSMessage;

An MLSMessage (RFC 9420 §6) runs to the end of the handshake body.  This
layer keeps it opaque (wire/ does not import mls/): it only checks that it is
at least as long as an MLSMessage's version and wire_format fields; the MLS
layer decodes it and rejects trailing bytes.  Parsing only: no cryptography,
no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from ..constants import ContentType, HandshakeType, MLSTLSMessageType
from ..errors import DecodeError
from .buffer import Buffer, u8, u64
from .messages import encode_handshake

__all__ = [
    "FirstFlight",
    "MLSTLSClientHello",
    "MLSTLSConnectionUpdate",
    "MLSTLSEpochKeyUpdate",
    "MLSTLSMessage",
    "MLSTLSResumptionRequest",
    "MLSTLSResumptionResponse",
    "MLSTLSServerHello",
    "decode_mls_tls_body",
    "decode_mls_tls_handshake",
    "encode_mls_tls",
    "sniff_first_flight",
]

# MLSMessage starts with ProtocolVersion version and WireFormat wire_format
# (RFC 9420 §6), two uint16s: anything shorter cannot be one.
_MIN_MLS_MESSAGE = 4
_UINT64_MAX = 2**64 - 1


def _check_mls_message(data: bytes, what: str) -> bytes:
    """For encoding: a message too short to be an MLSMessage is our own bug."""
    if len(data) < _MIN_MLS_MESSAGE:
        raise ValueError(f"{what}: {len(data)} bytes cannot hold an MLSMessage")
    return data


@dataclass(frozen=True, slots=True)
class MLSTLSClientHello:
    """ClientHello (two-party profile §4): the initiator's KeyPackage as an MLSMessage."""

    msg_type: ClassVar[MLSTLSMessageType] = MLSTLSMessageType.client_hello
    key_package: bytes

    def __repr__(self) -> str:
        return f"MLSTLSClientHello(key_package=<{len(self.key_package)} bytes>)"

    def payload(self) -> bytes:
        return _check_mls_message(self.key_package, "ClientHello.key_package")


@dataclass(frozen=True, slots=True)
class MLSTLSServerHello:
    """ServerHello (two-party profile §4): the responder's Welcome as an MLSMessage."""

    msg_type: ClassVar[MLSTLSMessageType] = MLSTLSMessageType.server_hello
    welcome: bytes

    def __repr__(self) -> str:
        return f"MLSTLSServerHello(welcome=<{len(self.welcome)} bytes>)"

    def payload(self) -> bytes:
        return _check_mls_message(self.welcome, "ServerHello.welcome")


@dataclass(frozen=True, slots=True)
class MLSTLSConnectionUpdate:
    """ConnectionUpdate (two-party profile §5): a Commit with UpdatePath as an MLSMessage."""

    msg_type: ClassVar[MLSTLSMessageType] = MLSTLSMessageType.connection_update
    update: bytes

    def __repr__(self) -> str:
        return f"MLSTLSConnectionUpdate(update=<{len(self.update)} bytes>)"

    def payload(self) -> bytes:
        return _check_mls_message(self.update, "ConnectionUpdate.update")


@dataclass(frozen=True, slots=True)
class MLSTLSEpochKeyUpdate:
    """EpochKeyUpdate (two-party profile §5): the epoch the sender's keys now come from."""

    msg_type: ClassVar[MLSTLSMessageType] = MLSTLSMessageType.epoch_key_update
    epoch: int

    def payload(self) -> bytes:
        if not 0 <= self.epoch <= _UINT64_MAX:
            raise ValueError(f"epoch {self.epoch} is not a uint64")
        return u64(self.epoch)


@dataclass(frozen=True, slots=True)
class MLSTLSResumptionRequest:
    """ResumptionRequest (two-party profile §6): a Commit as an MLSMessage."""

    msg_type: ClassVar[MLSTLSMessageType] = MLSTLSMessageType.resumption_request
    commit: bytes

    def __repr__(self) -> str:
        return f"MLSTLSResumptionRequest(commit=<{len(self.commit)} bytes>)"

    def payload(self) -> bytes:
        return _check_mls_message(self.commit, "ResumptionRequest.commit")


@dataclass(frozen=True, slots=True)
class MLSTLSResumptionResponse:
    """ResumptionResponse (two-party profile §6): a Commit as an MLSMessage."""

    msg_type: ClassVar[MLSTLSMessageType] = MLSTLSMessageType.resumption_response
    commit: bytes

    def __repr__(self) -> str:
        return f"MLSTLSResumptionResponse(commit=<{len(self.commit)} bytes>)"

    def payload(self) -> bytes:
        return _check_mls_message(self.commit, "ResumptionResponse.commit")


MLSTLSMessage = (
    MLSTLSClientHello
    | MLSTLSServerHello
    | MLSTLSConnectionUpdate
    | MLSTLSEpochKeyUpdate
    | MLSTLSResumptionRequest
    | MLSTLSResumptionResponse
)

_MLS_MESSAGE_BODIES: dict[int, type[MLSTLSClientHello | MLSTLSServerHello | MLSTLSConnectionUpdate
                                      | MLSTLSResumptionRequest | MLSTLSResumptionResponse]] = {
    MLSTLSMessageType.client_hello: MLSTLSClientHello,
    MLSTLSMessageType.server_hello: MLSTLSServerHello,
    MLSTLSMessageType.connection_update: MLSTLSConnectionUpdate,
    MLSTLSMessageType.resumption_request: MLSTLSResumptionRequest,
    MLSTLSMessageType.resumption_response: MLSTLSResumptionResponse,
}


def encode_mls_tls(message: MLSTLSMessage) -> bytes:
    """The whole handshake message: the 4-byte header of type ``mls_tls``, then the MLSTLSMessage."""
    return encode_handshake(HandshakeType.mls_tls, u8(message.msg_type) + message.payload())


def decode_mls_tls_body(body: bytes) -> MLSTLSMessage:
    """An MLSTLSMessage from a handshake body (after the 4-byte header).

    Unknown msg_type, a truncated or oversized epoch, an MLSMessage too short
    to be one: DecodeError (decode_error).
    """
    buf = Buffer(body)
    msg_type = buf.read_uint8()
    if msg_type == MLSTLSMessageType.epoch_key_update:
        epoch = buf.read_uint64()
        buf.expect_end("EpochKeyUpdate")
        return MLSTLSEpochKeyUpdate(epoch)
    cls = _MLS_MESSAGE_BODIES.get(msg_type)
    if cls is None:
        raise DecodeError(f"unknown MLSTLSMessageType {msg_type}")
    message = buf.read(buf.remaining)
    if len(message) < _MIN_MLS_MESSAGE:
        raise DecodeError(f"{cls.__name__}: {len(message)} bytes cannot hold an MLSMessage")
    return cls(message)


def decode_mls_tls_handshake(data: bytes) -> MLSTLSMessage:
    """One whole handshake message (header and body) that must be an MLSTLSMessage."""
    buf = Buffer(data)
    handshake_type = buf.read_uint8()
    if handshake_type != HandshakeType.mls_tls:
        raise DecodeError(f"handshake type {handshake_type} is not mls_tls")
    body = buf.read_vector(3)
    buf.expect_end("MLS-TLS handshake message")
    return decode_mls_tls_body(body)


class FirstFlight(Enum):
    """What a connection's first bytes are (docs/mls-tls.md §2)."""

    TLS = "tls"  # a handshake record whose first message is a TLS ClientHello (type 1)
    MLS_TLS = "mls-tls"  # a handshake record whose first message is an MLSTLSMessage
    OTHER = "other"  # anything else: left to the TLS record layer, which names the alert


def sniff_first_flight(data: bytes) -> FirstFlight | None:
    """Tell MLS-TLS from TLS by the first six bytes a responder receives; None: too few yet.

    Both start with a plaintext handshake record (content type 22, a
    legacy_record_version 0x03xx, a length; RFC 8446 §5.1); the next byte is
    the first handshake message's type: client_hello (1) for TLS, mls_tls
    for MLS-TLS.
    """
    if len(data) < 1:
        return None
    if data[0] != ContentType.HANDSHAKE:
        return FirstFlight.OTHER
    if len(data) < 2:
        return None
    if data[1] != 0x03:
        return FirstFlight.OTHER
    if len(data) < 6:
        return None
    if data[5] == HandshakeType.client_hello:
        return FirstFlight.TLS
    if data[5] == HandshakeType.mls_tls:
        return FirstFlight.MLS_TLS
    return FirstFlight.OTHER
