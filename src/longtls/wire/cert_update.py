"""Certificate Update messages and extension (draft-rosomakho-tls-cert-update-02).

Parsing only, like :mod:`longtls.wire.messages`: each message is a frozen
slotted dataclass whose ``encode()`` returns the body (no handshake header)
and whose ``decode(body)`` parses a whole body strictly.  What the bytes
inside mean (an RFC 9261 authenticator, an authenticator request) is the
handshake layer's question (handshake/cert_update.py).

Decision (docs/certificate-update.md, decision 2): the authenticator request
carried in the ``certificate_update_request`` extension and in
CertificateUpdateRequest is the *whole* RFC 9261 §4 handshake message, type
and uint24 length included: RFC 9261 §4 defines requests as "encoded as TLS
handshake messages, including length and type fields", and the authenticator
transcript hashes exactly those bytes (§5.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from ..constants import AlertDescription, HandshakeType
from ..errors import DecodeError, RemoteProtocolError
from .buffer import Buffer, vec
from .extensions import _check_bounds

__all__ = [
    "CertificateUpdate",
    "CertificateUpdateRequest",
    "decode_certificate_update_request_extension",
    "encode_certificate_update_request_extension",
]

_U16_MAX = 0xFFFF
_U24_MAX = 0xFFFFFF


@dataclass(frozen=True, slots=True)
class CertificateUpdate:
    """``struct { opaque authenticator<1..2^24-1>; } CertificateUpdate;`` (draft §4).

    ``authenticator``: Certificate || CertificateVerify || Finished, each a
    handshake message with its header (RFC 9261 §5.2.4).
    """

    msg_type: ClassVar[HandshakeType] = HandshakeType.certificate_update

    authenticator: bytes

    def __repr__(self) -> str:
        return f"CertificateUpdate(<{len(self.authenticator)} bytes>)"

    def encode(self) -> bytes:
        _check_bounds("authenticator", len(self.authenticator), 1, _U24_MAX)
        return vec(3, self.authenticator)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        """A malformed body is decode_error (RFC 9846 §6.2: the draft names no alert for it)."""
        buf = Buffer(body)
        authenticator = buf.read_vector(3, 1, _U24_MAX)
        buf.expect_end("CertificateUpdate")
        return cls(authenticator)


@dataclass(frozen=True, slots=True)
class CertificateUpdateRequest:
    """``struct { opaque authenticator_request<1..2^16-1>; } CertificateUpdateRequest;`` (draft §5)."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.certificate_update_request

    authenticator_request: bytes

    def __repr__(self) -> str:
        return f"CertificateUpdateRequest(<{len(self.authenticator_request)} bytes>)"

    def encode(self) -> bytes:
        _check_bounds("authenticator_request", len(self.authenticator_request), 1, _U16_MAX)
        return vec(2, self.authenticator_request)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        """Draft §5.1: "If the message is malformed ... the connection MUST be
        terminated with an illegal_parameter alert" (not decode_error)."""
        buf = Buffer(body)
        try:
            request = buf.read_vector(2, 1, _U16_MAX)
            buf.expect_end("CertificateUpdateRequest")
        except DecodeError as exc:
            raise RemoteProtocolError(
                f"malformed CertificateUpdateRequest: {exc.args[0]}", AlertDescription.illegal_parameter
            ) from None
        return cls(request)


# -- the certificate_update_request extension (draft §3.1) -------------------


def encode_certificate_update_request_extension(request: bytes | None) -> bytes:
    """extension_data: empty ("can send, does not wish to receive", §3.1) or
    one authenticator request (the whole handshake message, decision 2)."""
    if request is None:
        return b""
    _check_bounds("certificate_update_request", len(request), 1, _U16_MAX)
    return request


def decode_certificate_update_request_extension(data: bytes) -> bytes | None:
    """The authenticator request in extension_data, or None when it is empty.

    Its contents are checked by the handshake layer (a malformed one is
    illegal_parameter, draft §3.2).
    """
    return data if data else None
