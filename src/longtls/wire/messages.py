"""TLS 1.3 handshake messages: framing, reassembly and one codec per message.

Parsing only: no cryptography and no connection state.  Each message is a
frozen slotted dataclass whose ``encode()`` returns the message *body* (no
4-byte handshake header) and whose ``decode(body)`` parses a whole body
strictly, following RFC 9846 §4 and appendix B.  Every vector length is
checked against the spec's <min..max> and trailing bytes are rejected, both
with DecodeError (decode_error, "the message does not conform to the formal
protocol syntax", §6.2).  The few checks that need a different alert say so.

Semantic checks that need context (legacy_version == 0x0303, the single null
compression method, which extensions may appear in which message, duplicate
extensions via :func:`extensions_by_type`) belong to the handshake engine.

The extension_data codecs live in :mod:`longtls.wire.extensions` and are
re-exported here, so the engine can import everything wire-level from here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from ..constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    LEGACY_VERSION,
    MAX_HANDSHAKE_MESSAGE_DEFAULT,
    AlertDescription,
    ExtensionType,
    HandshakeType,
)
from ..errors import DecodeError, RemoteProtocolError
from . import extensions as _extensions
from .buffer import Buffer, u8, u16, u24
from .extensions import *  # noqa: F403 - re-exported through __all__ below
from .extensions import _check_bounds, _u16_tuple

__all__ = [
    "Certificate",
    "CertificateEntry",
    "CertificateRequest",
    "CertificateVerify",
    "ClientHello",
    "CompressedCertificate",
    "EncryptedExtensions",
    "EndOfEarlyData",
    "Extension",
    "Finished",
    "HandshakeMessage",
    "HandshakeReassembler",
    "KeyUpdate",
    "NewSessionTicket",
    "ServerHello",
    "decode_message",
    "encode_handshake",
    "encode_message",
    "extensions_by_type",
]
__all__ += _extensions.__all__

_U16_MAX = 0xFFFF
_U24_MAX = 0xFFFFFF
_TYPE_AND_LENGTH = struct.Struct(">HH").unpack_from


# -- extensions blocks (RFC 9846 §4.2) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Extension:
    """One ``Extension``: extension_type and opaque extension_data<0..2^16-1>."""

    type: int
    data: bytes


def _decode_extensions(block: bytes) -> tuple[Extension, ...]:
    """The contents of an ``Extension extensions<..>`` vector (prefix removed).

    A plain index loop rather than Buffer calls: every handshake message but
    Finished, CertificateVerify and KeyUpdate carries one of these blocks.
    """
    out: list[Extension] = []
    append = out.append
    pos = 0
    end = len(block)
    while pos < end:
        if end - pos < 4:
            raise DecodeError("extension header truncated")
        ext_type, n = _TYPE_AND_LENGTH(block, pos)
        pos += 4
        next_pos = pos + n
        if next_pos > end:
            raise DecodeError("extension_data truncated")
        append(Extension(ext_type, block[pos:next_pos]))
        pos = next_pos
    return tuple(out)


def _encode_extensions(exts: tuple[Extension, ...], lo: int = 0) -> bytes:
    """An ``Extension extensions<lo..2^16-1>`` vector, in the order given."""
    parts = [b""]
    total = 0
    for ext in exts:
        n = len(ext.data)
        if n > _U16_MAX:
            raise ValueError(f"extension {ext.type}: {n} bytes of data do not fit")
        parts.append(ext.type.to_bytes(2, "big") + n.to_bytes(2, "big"))
        parts.append(ext.data)
        total += 4 + n
    _check_bounds("extensions", total, lo, _U16_MAX)
    parts[0] = u16(total)
    return b"".join(parts)


def extensions_by_type(exts: tuple[Extension, ...]) -> dict[int, bytes]:
    """Map extension_type to extension_data, rejecting duplicates.

    RFC 9846 §4.2: "There MUST NOT be more than one extension of the same type
    in a given extension block."  A duplicate is syntactically fine but
    inconsistent, hence illegal_parameter.
    """
    out: dict[int, bytes] = {}
    for ext in exts:
        if ext.type in out:
            raise RemoteProtocolError(
                f"duplicate extension {ext.type} in one block", AlertDescription.illegal_parameter
            )
        out[ext.type] = ext.data
    return out


# -- ClientHello / ServerHello (RFC 9846 §4.1.2, §4.1.3) ---------------------


@dataclass(frozen=True, slots=True)
class ClientHello:
    msg_type: ClassVar[HandshakeType] = HandshakeType.client_hello

    random: bytes
    legacy_session_id: bytes
    cipher_suites: tuple[int, ...]
    extensions: tuple[Extension, ...]
    legacy_compression_methods: bytes = b"\x00"
    legacy_version: int = LEGACY_VERSION
    #: DTLS only (RFC 9147 §5.3): legacy_cookie<0..2^8-1>, between
    #: legacy_session_id and cipher_suites.  None: the TLS form, which has no
    #: such field; b"": the empty vector a DTLS 1.3 client sends.
    legacy_cookie: bytes | None = None

    def encode(self) -> bytes:
        """The body; extensions are written in the order given.

        An empty ``extensions`` omits the block entirely (a pre-TLS 1.3
        ClientHello, §4.1.2), which keeps decode/encode a round trip.
        """
        _check_bounds("random", len(self.random), 32, 32)
        sid = self.legacy_session_id
        _check_bounds("legacy_session_id", len(sid), 0, 32)
        suites = self.cipher_suites
        _check_bounds("cipher_suites", 2 * len(suites), 2, _U16_MAX - 1)
        comp = self.legacy_compression_methods
        _check_bounds("legacy_compression_methods", len(comp), 1, 255)
        cookie = self.legacy_cookie
        if cookie is not None:
            _check_bounds("legacy_cookie", len(cookie), 0, 255)
        parts = [
            u16(self.legacy_version),
            self.random,
            u8(len(sid)),
            sid,
            b"" if cookie is None else u8(len(cookie)) + cookie,
            u16(2 * len(suites)),
            b"".join([s.to_bytes(2, "big") for s in suites]),
            u8(len(comp)),
            comp,
        ]
        if self.extensions:
            parts.append(_encode_extensions(self.extensions, 7))
        return b"".join(parts)

    @classmethod
    def decode(cls, body: bytes, *, minimum_extensions_length: int = 7, dtls: bool = False) -> Self:
        """Parse a ClientHello body (``dtls``: the DTLS 1.3 form, with legacy_cookie).

        A body that ends right after legacy_compression_methods is a pre-TLS
        1.3 ClientHello without extensions (§4.1.2); it decodes with
        ``extensions == ()`` so the engine can answer protocol_version rather
        than decode_error.  If pre_shared_key is present it must be the last
        extension, else illegal_parameter (§4.2.11: "Servers MUST check that
        it is the last extension").

        ``minimum_extensions_length=0`` reads the extensions block with the
        syntax of earlier versions (``<0..2^16-1>`` rather than TLS 1.3's
        ``<7..2^16-1>``): only to tell a TLS 1.2-style ClientHello (RFC 9846
        Appendix E.2: protocol_version) from a malformed one (decode_error).
        Such a hello may not re-encode: ``encode`` writes TLS 1.3 ClientHellos.
        """
        buf = Buffer(body)
        legacy_version = buf.read_uint16()
        random = buf.read(32)
        sid = buf.read_vector(1, 0, 32)
        cookie = buf.read_vector(1, 0, 255) if dtls else None
        suites = _u16_tuple(buf.read_vector(2, 2, _U16_MAX - 1), "cipher_suites")
        comp = buf.read_vector(1, 1, 255)
        exts: tuple[Extension, ...] = ()
        if not buf.eof():
            exts = _decode_extensions(buf.read_vector(2, minimum_extensions_length, _U16_MAX))
            buf.expect_end("ClientHello")
            psk = ExtensionType.pre_shared_key
            for i in range(len(exts) - 1):
                if exts[i].type == psk:
                    raise RemoteProtocolError(
                        "pre_shared_key is not the last ClientHello extension",
                        AlertDescription.illegal_parameter,
                    )
        return cls(random, sid, suites, exts, comp, legacy_version, cookie)


@dataclass(frozen=True, slots=True)
class ServerHello:
    """ServerHello, and HelloRetryRequest which shares its structure (§4.1.4)."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.server_hello

    random: bytes
    legacy_session_id_echo: bytes
    cipher_suite: int
    extensions: tuple[Extension, ...]
    legacy_compression_method: int = 0
    legacy_version: int = LEGACY_VERSION

    @property
    def is_hello_retry_request(self) -> bool:
        # §4.1.3: a ServerHello whose random is SHA-256("HelloRetryRequest").
        return self.random == HELLO_RETRY_REQUEST_RANDOM

    def encode(self) -> bytes:
        _check_bounds("random", len(self.random), 32, 32)
        sid = self.legacy_session_id_echo
        _check_bounds("legacy_session_id_echo", len(sid), 0, 32)
        parts = [
            u16(self.legacy_version),
            self.random,
            u8(len(sid)),
            sid,
            u16(self.cipher_suite),
            u8(self.legacy_compression_method),
        ]
        if self.extensions:
            parts.append(_encode_extensions(self.extensions, 6))
        return b"".join(parts)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        """Parse a ServerHello or HelloRetryRequest body.

        As with ClientHello, a body without an extensions block (a TLS 1.2 or
        older server) decodes with ``extensions == ()`` so the engine can
        reject the version with protocol_version.
        """
        buf = Buffer(body)
        legacy_version = buf.read_uint16()
        random = buf.read(32)
        sid = buf.read_vector(1, 0, 32)
        cipher_suite = buf.read_uint16()
        compression = buf.read_uint8()
        exts: tuple[Extension, ...] = ()
        if not buf.eof():
            exts = _decode_extensions(buf.read_vector(2, 6, _U16_MAX))
            buf.expect_end("ServerHello")
        return cls(random, sid, cipher_suite, exts, compression, legacy_version)


# -- Server parameters (RFC 9846 §4.3) ---------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptedExtensions:
    msg_type: ClassVar[HandshakeType] = HandshakeType.encrypted_extensions

    extensions: tuple[Extension, ...]

    def encode(self) -> bytes:
        return _encode_extensions(self.extensions)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        buf = Buffer(body)
        exts = _decode_extensions(buf.read_vector(2, 0, _U16_MAX))
        buf.expect_end("EncryptedExtensions")
        return cls(exts)


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    msg_type: ClassVar[HandshakeType] = HandshakeType.certificate_request

    certificate_request_context: bytes
    extensions: tuple[Extension, ...]

    def encode(self) -> bytes:
        ctx = self.certificate_request_context
        _check_bounds("certificate_request_context", len(ctx), 0, 255)
        return u8(len(ctx)) + ctx + _encode_extensions(self.extensions)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        buf = Buffer(body)
        ctx = buf.read_vector(1, 0, 255)
        exts = _decode_extensions(buf.read_vector(2, 0, _U16_MAX))
        buf.expect_end("CertificateRequest")
        return cls(ctx, exts)


# -- Authentication messages (RFC 9846 §4.4) ---------------------------------


@dataclass(frozen=True, slots=True)
class CertificateEntry:
    """One certificate (X.509 DER, or a RawPublicKey SPKI) and its extensions."""

    cert_data: bytes
    extensions: tuple[Extension, ...] = ()

    def encode(self) -> bytes:
        cert = self.cert_data
        _check_bounds("cert_data", len(cert), 1, _U24_MAX)
        return u24(len(cert)) + cert + _encode_extensions(self.extensions)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        """Parse exactly one encoded entry (Certificate.decode reads lists)."""
        buf = Buffer(body)
        entry = cls._read(buf)
        buf.expect_end("CertificateEntry")
        return entry

    @classmethod
    def _read(cls, buf: Buffer) -> Self:
        cert = buf.read_vector(3, 1, _U24_MAX)
        return cls(cert, _decode_extensions(buf.read_vector(2, 0, _U16_MAX)))


@dataclass(frozen=True, slots=True)
class Certificate:
    msg_type: ClassVar[HandshakeType] = HandshakeType.certificate

    certificate_request_context: bytes
    certificate_list: tuple[CertificateEntry, ...]

    def encode(self) -> bytes:
        ctx = self.certificate_request_context
        _check_bounds("certificate_request_context", len(ctx), 0, 255)
        entries = b"".join([e.encode() for e in self.certificate_list])
        _check_bounds("certificate_list", len(entries), 0, _U24_MAX)
        return b"".join((u8(len(ctx)), ctx, u24(len(entries)), entries))

    @classmethod
    def decode(cls, body: bytes) -> Self:
        """Parse a Certificate body; an empty certificate_list is well-formed.

        Whether an empty list is acceptable (never from a server, §4.4.2) is
        the engine's decision.
        """
        buf = Buffer(body)
        ctx = buf.read_vector(1, 0, 255)
        entries = buf.sub(3, 0, _U24_MAX)
        buf.expect_end("Certificate")
        out = []
        while not entries.eof():
            out.append(CertificateEntry._read(entries))
        return cls(ctx, tuple(out))


@dataclass(frozen=True, slots=True)
class CompressedCertificate:
    """RFC 8879 §4: a Certificate body, compressed, sent in its place.

    The codec checks the syntax only; whether ``algorithm`` was offered, the
    size limit and the decompression itself belong to the engine
    (:mod:`longtls.certcompress`, which names the alert of each failure).
    """

    msg_type: ClassVar[HandshakeType] = HandshakeType.compressed_certificate

    algorithm: int
    uncompressed_length: int
    compressed_certificate_message: bytes

    def encode(self) -> bytes:
        data = self.compressed_certificate_message
        _check_bounds("compressed_certificate_message", len(data), 1, _U24_MAX)
        if not 0 <= self.uncompressed_length <= _U24_MAX:
            raise ValueError(f"uncompressed_length {self.uncompressed_length} is not a uint24")
        return b"".join((u16(self.algorithm), u24(self.uncompressed_length), u24(len(data)), data))

    @classmethod
    def decode(cls, body: bytes) -> Self:
        buf = Buffer(body)
        algorithm = buf.read_uint16()
        uncompressed_length = buf.read_uint24()
        data = buf.read_vector(3, 1, _U24_MAX)
        buf.expect_end("CompressedCertificate")
        return cls(algorithm, uncompressed_length, data)


@dataclass(frozen=True, slots=True)
class CertificateVerify:
    msg_type: ClassVar[HandshakeType] = HandshakeType.certificate_verify

    algorithm: int
    signature: bytes

    def encode(self) -> bytes:
        _check_bounds("signature", len(self.signature), 0, _U16_MAX)
        return u16(self.algorithm) + u16(len(self.signature)) + self.signature

    @classmethod
    def decode(cls, body: bytes) -> Self:
        buf = Buffer(body)
        algorithm = buf.read_uint16()
        signature = buf.read_vector(2, 0, _U16_MAX)
        buf.expect_end("CertificateVerify")
        return cls(algorithm, signature)


@dataclass(frozen=True, slots=True)
class Finished:
    """``opaque verify_data[Hash.length]``.

    The length depends on the negotiated hash, which the codec does not know:
    decode takes the body as-is and the engine compares it (decrypt_error on
    mismatch, §4.4.4; a wrong length is decode_error).
    """

    msg_type: ClassVar[HandshakeType] = HandshakeType.finished

    verify_data: bytes

    def encode(self) -> bytes:
        return self.verify_data

    @classmethod
    def decode(cls, body: bytes) -> Self:
        return cls(bytes(body))


@dataclass(frozen=True, slots=True)
class EndOfEarlyData:
    """``struct {} EndOfEarlyData`` (§4.5): the body must be empty."""

    msg_type: ClassVar[HandshakeType] = HandshakeType.end_of_early_data

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, body: bytes) -> Self:
        if body:
            raise DecodeError(f"{len(body)} trailing bytes in EndOfEarlyData")
        return cls()


# -- Post-handshake messages (RFC 9846 §4.6) ---------------------------------


@dataclass(frozen=True, slots=True)
class NewSessionTicket:
    msg_type: ClassVar[HandshakeType] = HandshakeType.new_session_ticket

    ticket_lifetime: int
    ticket_age_add: int
    ticket_nonce: bytes
    ticket: bytes
    extensions: tuple[Extension, ...] = ()

    def encode(self) -> bytes:
        nonce = self.ticket_nonce
        ticket = self.ticket
        _check_bounds("ticket_nonce", len(nonce), 0, 255)
        _check_bounds("ticket", len(ticket), 1, _U16_MAX)
        return b"".join(
            (
                self.ticket_lifetime.to_bytes(4, "big"),
                self.ticket_age_add.to_bytes(4, "big"),
                u8(len(nonce)),
                nonce,
                u16(len(ticket)),
                ticket,
                _encode_extensions(self.extensions),
            )
        )

    @classmethod
    def decode(cls, body: bytes) -> Self:
        """Parse a NewSessionTicket body.

        ticket_lifetime above 604800 is a server MUST NOT but no alert is named;
        the client simply caps the lifetime (§4.6.1), so that is the engine's.
        """
        buf = Buffer(body)
        lifetime = buf.read_uint32()
        age_add = buf.read_uint32()
        nonce = buf.read_vector(1, 0, 255)
        ticket = buf.read_vector(2, 1, _U16_MAX)
        exts = _decode_extensions(buf.read_vector(2, 0, _U16_MAX))
        buf.expect_end("NewSessionTicket")
        return cls(lifetime, age_add, nonce, ticket, exts)


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    msg_type: ClassVar[HandshakeType] = HandshakeType.key_update

    request_update: int

    def encode(self) -> bytes:
        if self.request_update not in (0, 1):
            raise ValueError(f"request_update must be 0 or 1, not {self.request_update}")
        return u8(self.request_update)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        """Parse a KeyUpdate body.

        §4.6.3: "If an implementation receives any other value, it MUST
        terminate the connection with an illegal_parameter alert" -- so a
        value other than 0 or 1 is illegal_parameter, not decode_error.
        """
        if len(body) != 1:
            raise DecodeError(f"KeyUpdate body is {len(body)} bytes, not 1")
        value = body[0]
        if value > 1:
            raise RemoteProtocolError(
                f"KeyUpdate request_update {value} is neither 0 nor 1",
                AlertDescription.illegal_parameter,
            )
        return cls(value)


HandshakeMessage = (
    ClientHello
    | ServerHello
    | EncryptedExtensions
    | CertificateRequest
    | Certificate
    | CompressedCertificate
    | CertificateVerify
    | Finished
    | EndOfEarlyData
    | NewSessionTicket
    | KeyUpdate
)

_MESSAGE_CLASSES: dict[int, type[HandshakeMessage]] = {
    cls.msg_type: cls
    for cls in (
        ClientHello,
        ServerHello,
        EncryptedExtensions,
        CertificateRequest,
        Certificate,
        CompressedCertificate,
        CertificateVerify,
        Finished,
        EndOfEarlyData,
        NewSessionTicket,
        KeyUpdate,
    )
}


def decode_message(msg_type: int, body: bytes) -> HandshakeMessage:
    """Decode a body by its HandshakeType.

    A type this module has no codec for is unexpected_message (§4: "A peer
    which receives a handshake message in an unexpected order MUST abort the
    handshake with an unexpected_message alert"); whether a known type is
    expected *now* is the engine's question.
    """
    cls = _MESSAGE_CLASSES.get(msg_type)
    if cls is None:
        raise RemoteProtocolError(
            f"unknown handshake message type {msg_type}", AlertDescription.unexpected_message
        )
    return cls.decode(body)


# -- Handshake framing (RFC 9846 §4, §5.1) -----------------------------------


def encode_handshake(msg_type: int, body: bytes) -> bytes:
    """``Handshake``: msg_type, uint24 length, body."""
    n = len(body)
    if n > _U24_MAX:
        raise ValueError(f"handshake body of {n} bytes does not fit a uint24 length")
    return b"".join((u8(msg_type), n.to_bytes(3, "big"), body))


def encode_message(msg: HandshakeMessage) -> bytes:
    """The full handshake message (header and body), as hashed into the transcript."""
    return encode_handshake(msg.msg_type, msg.encode())


class HandshakeReassembler:
    """Cuts the handshake content stream into whole messages (TLS, not DTLS).

    ``feed()`` takes the payload of each handshake record in order;
    ``pop()`` returns ``(msg_type, body, raw)`` for the next complete message
    (``raw`` is header + body, the bytes the transcript hashes), or None.
    Messages may be coalesced into one record or split over many (§5.1).

    ``max_message_size`` bounds the uint24 body length we are willing to
    buffer.  A larger length is reported as illegal_parameter: the length
    field is syntactically valid (any uint24 is), so decode_error -- "does not
    conform to the formal protocol syntax" (§6.2) -- would be wrong, whereas
    illegal_parameter covers errors that "conform to the formal protocol
    syntax but are otherwise incorrect".  OpenSSL sends the same alert here.
    The check runs as soon as the 4-byte header is in, so the peer cannot
    make us buffer an oversized message first.

    Copying: a record holding whole messages is sliced directly (a message
    that fills the whole record is not copied at all for ``raw``); only a
    message split over records is accumulated in a bytearray, which keeps a
    peer sending 1-byte records linear rather than quadratic.
    """

    __slots__ = ("_data", "_partial", "_pos", "max_message_size")

    def __init__(self, max_message_size: int = MAX_HANDSHAKE_MESSAGE_DEFAULT) -> None:
        self.max_message_size = max_message_size
        self._data = b""  # the record payload being consumed
        self._pos = 0  # read offset into _data
        self._partial = bytearray()  # an incomplete message carried across feeds

    def __repr__(self) -> str:  # sizes only: buffered bytes may be secret-bearing
        buffered = len(self._data) - self._pos + len(self._partial)
        return f"<HandshakeReassembler buffered={buffered}>"

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add the payload of one handshake record.

        §5.1: "Implementations MUST NOT send zero-length fragments of
        Handshake types"; receiving one is answered with unexpected_message.
        """
        if not data:
            raise RemoteProtocolError(
                "zero-length handshake record", AlertDescription.unexpected_message
            )
        if self._pos < len(self._data):
            # The previous record ended inside a message: start accumulating.
            self._partial += memoryview(self._data)[self._pos :]
        self._data = b""
        self._pos = 0
        if not self._partial:
            # pop() checks each header; bytes(data) does not copy a bytes object.
            self._data = bytes(data)
            return
        partial = self._partial
        partial += data
        if len(partial) >= 4:
            length = self._check_header(partial)
            if len(partial) >= 4 + length:
                # Complete (maybe with more after it): hand over for slicing.
                self._data = bytes(partial)
                partial.clear()

    def _check_header(self, data: bytes | bytearray) -> int:
        """Body length of the message at the start of ``data`` (-1 if unknown)."""
        pos = self._pos
        if len(data) - pos < 4:
            return -1
        length = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        if length > self.max_message_size:
            raise RemoteProtocolError(
                f"handshake message of {length} bytes exceeds the limit of {self.max_message_size}",
                AlertDescription.illegal_parameter,
            )
        return length

    def pop(self) -> tuple[int, bytes, bytes] | None:
        """The next complete ``(msg_type, body, raw_message_with_header)``, or None."""
        data = self._data
        pos = self._pos
        length = self._check_header(data)
        if length < 0:
            if pos and pos == len(data):
                # All handed out: keep no reference to the last record's
                # payload (an idle connection held its last messages, issue 16).
                self._data = b""
                self._pos = 0
            return None
        end = pos + 4 + length
        if end > len(data):
            return None
        raw = data if (pos == 0 and end == len(data)) else data[pos:end]
        self._pos = end
        return raw[0], raw[4:], raw

    def has_complete(self) -> bool:
        """True if ``pop()`` would return a message now."""
        if self._partial:
            return False  # _partial only ever holds an incomplete first message
        data = self._data
        pos = self._pos
        if len(data) - pos < 4:
            return False
        length = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        return pos + 4 + length <= len(data)

    def has_partial(self) -> bool:
        """True if buffered bytes end inside a message (complete ones aside).

        §5.1: handshake messages MUST NOT span a key change, so the engine
        checks this before switching keys and answers True with
        unexpected_message.  Messages not yet popped do not count: a key
        change must also find ``has_complete()`` False, since a message
        already in the buffer was protected under the old keys.
        """
        if self._partial:
            return True
        data = self._data
        pos = self._pos
        end = len(data)
        while end - pos >= 4:
            pos += 4 + ((data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3])
        return pos != end
