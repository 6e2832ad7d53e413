"""A record header is judged the moment its 5 bytes are in (RFC 9846 §5, §5.1, §5.2).

Waiting for the whole record before looking at the header lets a peer that
is not speaking TLS at all hold a connection until the handshake timeout:
``GET / HTTP/1.1`` announces a record of 0x2f20 = 12,064 bytes.  So
``RecordReader`` checks the content type, the major byte of
legacy_record_version and the length as soon as the header is complete, and
this module says what a header that fails looks like and which alert it gets
(the decisions are also in docs/conformance.md):

- a content type that is not a TLS record type (§5: "If a TLS implementation
  receives an unexpected record type, it MUST terminate the connection with
  an unexpected_message alert").  If this is the peer's very first record the
  bytes are not TLS at all: ``NotTLSError`` says what they looked like (an
  HTTP request or response, an SSL 2.0 CLIENT-HELLO, anything else).  An SSL
  2.0 CLIENT-HELLO gets protocol_version instead: it is a hello offering only
  versions TLS 1.3 must not negotiate with (Appendix E.2, D.5), the same
  answer a TLS 1.2-style ClientHello gets;
- a first record of a type that cannot come first (a server's first record
  must carry the ClientHello: §5 treats a change_cipher_spec "before the first
  ClientHello" as an unexpected record type, and application data and alerts
  cannot precede it either) -> unexpected_message;
- a legacy_record_version whose first byte is not 3 -> protocol_version.  The
  field is otherwise ignored, as §5.1 and Appendix E require; only its major
  byte is judged, because Appendix E.5 says implementations "SHOULD NOT
  accept any records with a version less than 0x0300" and no SSL 3.0 or TLS
  record has any other major version;
- a length over the limit -> record_overflow: 2^14 for the plaintext types
  (§5.1), 2^14 + 256 for protected records, whose outer type is always
  application_data (§5.2).
"""

from __future__ import annotations

from ..constants import MAX_CIPHERTEXT_EXPANSION, MAX_PLAINTEXT, AlertDescription, ContentType
from ..errors import NotTLSError, NotTLSReason, RemoteProtocolError

#: The content types a TLS 1.3 record may carry on the wire (§5).
RECORD_TYPES = frozenset((
    ContentType.CHANGE_CIPHER_SPEC, ContentType.ALERT, ContentType.HANDSHAKE, ContentType.APPLICATION_DATA,
))
#: A server's first record carries the ClientHello.
SERVER_FIRST_RECORD_TYPES = frozenset((ContentType.HANDSHAKE,))
MAX_CIPHERTEXT_LENGTH = MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION
#: The outer type of every protected record (a plain int: compared per record).
PROTECTED_RECORD_TYPE = int(ContentType.APPLICATION_DATA)

#: Request methods (RFC 9110 §9, RFC 5789) and the HTTP/2 connection preface
#: ("PRI * HTTP/2.0"): any of them followed by a space opens a plain-HTTP request.
HTTP_METHODS = (
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"PATCH", b"TRACE", b"PRI",
)

_NOT_TLS_MESSAGES = {
    NotTLSReason.HTTP_REQUEST: "plain HTTP request on a TLS port (the client should use https://)",
    NotTLSReason.HTTP_RESPONSE: "the peer answered in plain HTTP: it is not a TLS server",
    NotTLSReason.SSL2_CLIENT_HELLO: "SSL 2.0 ClientHello (TLS 1.3 never negotiates with one)",
    NotTLSReason.UNKNOWN: "the peer's first bytes are not a TLS record",
}


def classify_not_tls(first_bytes: bytes) -> NotTLSReason:
    """What the first bytes of a connection that is not TLS look like.

    At least the 5 bytes of a record header are in; a method longer than four
    letters may not have its space yet, so a prefix of ``METHOD `` counts.
    """
    for method in HTTP_METHODS:
        token = method + b" "
        if first_bytes.startswith(token) or (len(first_bytes) < len(token) and token.startswith(first_bytes)):
            return NotTLSReason.HTTP_REQUEST
    if first_bytes.startswith(b"HTTP/"):
        return NotTLSReason.HTTP_RESPONSE
    # SSL 2.0 CLIENT-HELLO: a two-byte length with the high bit set, msg_type 1,
    # then the client's version (0x0002 for SSL 2.0, 0x03xx for SSL 3.0/TLS).
    if len(first_bytes) >= 4 and first_bytes[0] & 0x80 and first_bytes[2] == 1 and first_bytes[3] in (0, 3):
        return NotTLSReason.SSL2_CLIENT_HELLO
    return NotTLSReason.UNKNOWN


def header_error(header: bytes, first: bool, allowed_types: frozenset[int]) -> RemoteProtocolError:
    """The error for a record header whose content type or version is unacceptable.

    ``header`` holds at least the 5 header bytes (and whatever followed them);
    ``first``: it is the peer's first record; ``allowed_types``: the content
    types that may arrive now.
    """
    content_type = header[0]
    if content_type not in RECORD_TYPES:
        if first:
            reason = classify_not_tls(header)
            alert = (
                AlertDescription.protocol_version if reason is NotTLSReason.SSL2_CLIENT_HELLO
                else AlertDescription.unexpected_message
            )
            return NotTLSError(_NOT_TLS_MESSAGES[reason], alert, reason)
        return RemoteProtocolError(
            f"record of unknown content type {content_type}", AlertDescription.unexpected_message
        )
    if content_type not in allowed_types:
        return RemoteProtocolError(
            f"first record is {ContentType(content_type).name.lower()}, not handshake",
            AlertDescription.unexpected_message,
        )
    version = (header[1] << 8) | header[2]
    return RemoteProtocolError(
        f"record version 0x{version:04x} is not TLS (the first byte must be 3)",
        AlertDescription.protocol_version,
    )
