"""Codecs for the ``extension_data`` of the extensions longtls understands.

Each extension has an ``encode_<name>`` / ``decode_<name>`` pair that works on
the extension_data bytes only; the type and the 2-byte length around them
belong to :class:`longtls.wire.messages.Extension`.  Where RFC 9846 gives an
extension a different structure per message (``select (Handshake.msg_type)``)
the pair carries a ``_client`` / ``_server`` / ``_hrr`` / ``_nst`` suffix.

Decoders are strict.  Every vector bound from RFC 9846 appendix B (or from the
extension's own RFC) is checked and trailing data is rejected with
DecodeError (decode_error), as RFC 9846 §4.2 requires of an extension the
receiver processes.  A value that parses but is forbidden raises
RemoteProtocolError(illegal_parameter).  Code points that longtls does not
know (groups, schemes, versions, modes) come back as plain ints: the spec
says to ignore them, and only the caller knows which ones it understands.

Encoders check the same bounds and raise ValueError on a value they cannot
encode, so longtls never puts a malformed extension on the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..constants import AlertDescription
from ..errors import DecodeError, RemoteProtocolError
from .buffer import Buffer, u8, u16, u32, vec

__all__ = [
    "RECORD_SIZE_LIMIT_MIN",
    "TLS_FLAGS_MAX_BIT",
    "KeyShareEntry",
    "OfferedPsks",
    "PskIdentity",
    "decode_alpn",
    "decode_application_layer_protocol_negotiation",
    "decode_certificate_authorities",
    "decode_compress_certificate",
    "decode_cookie",
    "decode_early_data",
    "decode_early_data_nst",
    "decode_key_share_client",
    "decode_key_share_hrr",
    "decode_key_share_server",
    "decode_post_handshake_auth",
    "decode_pre_shared_key_client",
    "decode_pre_shared_key_server",
    "decode_psk_key_exchange_modes",
    "decode_record_size_limit",
    "decode_server_name",
    "decode_signature_algorithms",
    "decode_signature_algorithms_cert",
    "decode_supported_groups",
    "decode_supported_versions_client",
    "decode_supported_versions_server",
    "decode_tls_flags",
    "encode_alpn",
    "encode_application_layer_protocol_negotiation",
    "encode_certificate_authorities",
    "encode_compress_certificate",
    "encode_cookie",
    "encode_early_data",
    "encode_early_data_nst",
    "encode_key_share_client",
    "encode_key_share_hrr",
    "encode_key_share_server",
    "encode_post_handshake_auth",
    "encode_pre_shared_key_client",
    "encode_pre_shared_key_server",
    "encode_psk_binders",
    "encode_psk_key_exchange_modes",
    "encode_record_size_limit",
    "encode_server_name",
    "encode_signature_algorithms",
    "encode_signature_algorithms_cert",
    "encode_supported_groups",
    "encode_supported_versions_client",
    "encode_supported_versions_server",
    "encode_tls_flags",
    "offered_psks_binders_length",
]

_U16_MAX = 0xFFFF
_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")


# -- shared helpers ----------------------------------------------------------


def _illegal(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, AlertDescription.illegal_parameter)


def _check_bounds(what: str, n: int, lo: int, hi: int) -> None:
    """Encoder-side check of a vector length against the spec's <lo..hi>."""
    if n < lo or n > hi:
        raise ValueError(f"{what}: length {n} outside <{lo}..{hi}>")


def _u16_tuple(data: bytes, what: str) -> tuple[int, ...]:
    """The body of a vector of uint16 code points (no length prefix)."""
    if len(data) & 1:
        raise DecodeError(f"{what}: odd length {len(data)} for a list of uint16")
    return struct.unpack(f">{len(data) >> 1}H", data)


def _decode_u16_list(data: bytes, prefix: int, lo: int, hi: int, what: str) -> tuple[int, ...]:
    """A whole extension_data that is exactly one ``uint16 list<lo..hi>``.

    Parsed in place with one struct call: these lists (groups, schemes,
    versions) are in every ClientHello.
    """
    n = len(data) - prefix
    if n < 0:
        raise DecodeError(f"{what} truncated")
    declared = int.from_bytes(data[:prefix], "big")
    if declared != n:
        raise DecodeError(f"{what}: length {declared} but {n} bytes follow")
    if n < lo or n > hi or n & 1:
        raise DecodeError(f"{what}: list length {n} outside <{lo}..{hi}> or odd")
    return struct.unpack_from(f">{n >> 1}H", data, prefix)


def _encode_u16_list(values: Sequence[int], prefix: int, lo: int, hi: int, what: str) -> bytes:
    n = 2 * len(values)
    _check_bounds(what, n, lo, hi)
    try:
        return n.to_bytes(prefix, "big") + struct.pack(f">{len(values)}H", *values)
    except struct.error as exc:
        raise ValueError(f"{what}: a value is not a uint16") from exc


def _expect_empty(data: bytes, what: str) -> None:
    # RFC 9846 §4.2: data left over after the (empty) structure is a decode_error.
    if data:
        raise DecodeError(f"{what} extension must be empty, got {len(data)} bytes")


# -- server_name (RFC 6066 §3) -----------------------------------------------

_HOST_NAME = 0  # NameType host_name


def encode_server_name(host_name: str | None) -> bytes:
    """ServerNameList with one host_name; ``None`` gives the empty server form.

    RFC 6066 §3: a server that used the name answers with an empty
    server_name extension (in EncryptedExtensions for TLS 1.3).
    """
    if host_name is None:
        return b""
    name = host_name.encode("ascii")  # UnicodeEncodeError is a ValueError
    _check_bounds("HostName", len(name), 1, _U16_MAX)
    return vec(2, u8(_HOST_NAME) + vec(2, name))


def decode_server_name(data: bytes) -> str | None:
    """The host_name of a ServerNameList, or None for the empty server form.

    None is also returned for a list that has no host_name entry (only
    unknown name types).  A second host_name is illegal_parameter (RFC 6066
    §3: "MUST NOT contain more than one name of the same name_type"), and so
    is a host name that is not ASCII.  IP literals and trailing dots are the
    caller's to judge.
    """
    if not data:
        return None
    buf = Buffer(data)
    entries = buf.sub(2, 1, _U16_MAX)
    buf.expect_end("server_name")
    host: str | None = None
    while not entries.eof():
        name_type = entries.read_uint8()
        if name_type != _HOST_NAME:
            # RFC 6066 §3: structures for future NameTypes MUST begin with a
            # 16-bit length, so unknown entries can be skipped.
            entries.read_vector(2)
            continue
        name = entries.read_vector(2, 1, _U16_MAX)
        if host is not None:
            raise _illegal("server_name has more than one host_name")
        try:
            host = name.decode("ascii")
        except UnicodeDecodeError:
            raise _illegal("server_name host_name is not ASCII") from None
    return host


# -- supported_groups, signature_algorithms(_cert) (RFC 9846 §4.2.7, §4.2.3) --


def encode_supported_groups(groups: Sequence[int]) -> bytes:
    return _encode_u16_list(groups, 2, 2, _U16_MAX - 1, "named_group_list")


def decode_supported_groups(data: bytes) -> tuple[int, ...]:
    """NamedGroupList ``named_group_list<2..2^16-1>`` (so never empty)."""
    return _decode_u16_list(data, 2, 2, _U16_MAX, "named_group_list")


def encode_signature_algorithms(schemes: Sequence[int]) -> bytes:
    return _encode_u16_list(schemes, 2, 2, _U16_MAX - 1, "supported_signature_algorithms")


def decode_signature_algorithms(data: bytes) -> tuple[int, ...]:
    """SignatureSchemeList ``supported_signature_algorithms<2..2^16-2>``."""
    return _decode_u16_list(data, 2, 2, _U16_MAX - 1, "supported_signature_algorithms")


# signature_algorithms_cert carries the same SignatureSchemeList (§4.2.3).
encode_signature_algorithms_cert = encode_signature_algorithms
decode_signature_algorithms_cert = decode_signature_algorithms


# -- application_layer_protocol_negotiation (RFC 7301 §3.1) ------------------


def encode_application_layer_protocol_negotiation(protocols: Sequence[bytes]) -> bytes:
    """ProtocolNameList; the server sends a list of exactly one name."""
    parts = []
    for name in protocols:
        _check_bounds("ProtocolName", len(name), 1, 255)
        parts.append(u8(len(name)))
        parts.append(name)
    body = b"".join(parts)
    _check_bounds("protocol_name_list", len(body), 2, _U16_MAX)
    return u16(len(body)) + body


def decode_application_layer_protocol_negotiation(data: bytes) -> tuple[bytes, ...]:
    """``ProtocolName protocol_name_list<2..2^16-1>``, each name <1..2^8-1>.

    The server-side rule "exactly one name" (RFC 7301 §3.1) is the caller's.
    """
    buf = Buffer(data)
    names = buf.sub(2, 2, _U16_MAX)
    buf.expect_end("application_layer_protocol_negotiation")
    out = []
    while not names.eof():
        out.append(names.read_vector(1, 1, 255))
    return tuple(out)


encode_alpn = encode_application_layer_protocol_negotiation
decode_alpn = decode_application_layer_protocol_negotiation


# -- supported_versions (RFC 9846 §4.2.1) -------------------------------------


def encode_supported_versions_client(versions: Sequence[int]) -> bytes:
    return _encode_u16_list(versions, 1, 2, 254, "versions")


def decode_supported_versions_client(data: bytes) -> tuple[int, ...]:
    """ClientHello form: ``ProtocolVersion versions<2..254>``."""
    return _decode_u16_list(data, 1, 2, 254, "versions")


def encode_supported_versions_server(version: int) -> bytes:
    """ServerHello and HelloRetryRequest form: one selected_version."""
    return u16(version)


def decode_supported_versions_server(data: bytes) -> int:
    if len(data) != 2:
        raise DecodeError(f"supported_versions selected_version is {len(data)} bytes, not 2")
    return (data[0] << 8) | data[1]


# -- key_share (RFC 9846 §4.2.8) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyShareEntry:
    group: int
    key_exchange: bytes

    def encode(self) -> bytes:
        _check_bounds("key_exchange", len(self.key_exchange), 1, _U16_MAX)
        return _UINT16.pack(self.group) + u16(len(self.key_exchange)) + self.key_exchange


def _read_key_share_entry(buf: Buffer) -> KeyShareEntry:
    group = buf.read_uint16()
    return KeyShareEntry(group, buf.read_vector(2, 1, _U16_MAX))


def encode_key_share_client(entries: Sequence[KeyShareEntry]) -> bytes:
    """KeyShareClientHello; an empty list asks the server for a HelloRetryRequest."""
    body = b"".join([e.encode() for e in entries])
    _check_bounds("client_shares", len(body), 0, _U16_MAX)
    return u16(len(body)) + body


def decode_key_share_client(data: bytes) -> tuple[KeyShareEntry, ...]:
    """``KeyShareEntry client_shares<0..2^16-1>``.

    The "one share per group, in supported_groups order" rules are the
    server's to enforce (illegal_parameter, §4.2.8).
    """
    buf = Buffer(data)
    shares = buf.sub(2, 0, _U16_MAX)
    buf.expect_end("key_share")
    out = []
    while not shares.eof():
        out.append(_read_key_share_entry(shares))
    return tuple(out)


def encode_key_share_server(entry: KeyShareEntry) -> bytes:
    return entry.encode()


def decode_key_share_server(data: bytes) -> KeyShareEntry:
    """KeyShareServerHello: exactly one server_share."""
    buf = Buffer(data)
    entry = _read_key_share_entry(buf)
    buf.expect_end("key_share")
    return entry


def encode_key_share_hrr(selected_group: int) -> bytes:
    return u16(selected_group)


def decode_key_share_hrr(data: bytes) -> int:
    """KeyShareHelloRetryRequest: the selected_group."""
    if len(data) != 2:
        raise DecodeError(f"key_share selected_group is {len(data)} bytes, not 2")
    return (data[0] << 8) | data[1]


# -- cookie (RFC 9846 §4.2.2) ------------------------------------------------


def encode_cookie(cookie: bytes) -> bytes:
    _check_bounds("cookie", len(cookie), 1, _U16_MAX)
    return u16(len(cookie)) + cookie


def decode_cookie(data: bytes) -> bytes:
    """``opaque cookie<1..2^16-1>``."""
    buf = Buffer(data)
    cookie = buf.read_vector(2, 1, _U16_MAX)
    buf.expect_end("cookie")
    return cookie


def encode_connection_id(cid: bytes) -> bytes:
    """``opaque cid<0..2^8-1>`` (RFC 9146 §3): the CID the sender wants to receive."""
    _check_bounds("connection_id", len(cid), 0, 255)
    return u8(len(cid)) + cid


def decode_connection_id(data: bytes) -> bytes:
    buf = Buffer(data)
    cid = buf.read_vector(1, 0, 255)
    buf.expect_end("connection_id")
    return cid


# -- psk_key_exchange_modes (RFC 9846 §4.2.9) --------------------------------


def encode_psk_key_exchange_modes(modes: Sequence[int]) -> bytes:
    _check_bounds("ke_modes", len(modes), 1, 255)
    return u8(len(modes)) + bytes(modes)


def decode_psk_key_exchange_modes(data: bytes) -> tuple[int, ...]:
    """``PskKeyExchangeMode ke_modes<1..255>``; unknown modes are kept."""
    buf = Buffer(data)
    modes = buf.read_vector(1, 1, 255)
    buf.expect_end("psk_key_exchange_modes")
    return tuple(modes)


# -- pre_shared_key (RFC 9846 §4.2.11) ---------------------------------------


@dataclass(frozen=True, slots=True)
class PskIdentity:
    identity: bytes
    obfuscated_ticket_age: int


@dataclass(frozen=True, slots=True)
class OfferedPsks:
    identities: tuple[PskIdentity, ...]
    binders: tuple[bytes, ...]


def encode_psk_binders(binders: Sequence[bytes]) -> bytes:
    """``PskBinderEntry binders<33..2^16-1>``: the tail of a ClientHello.

    The binders are computed over the ClientHello truncated just before this
    list (§4.2.11.2).  Encode the ClientHello with placeholder binders of the
    right lengths, hash ``raw[:-offered_psks_binders_length(offered)]``, then
    append ``encode_psk_binders(real_binders)``: the lengths do not change, so
    the result equals encoding the ClientHello with the real binders.
    """
    parts = []
    for binder in binders:
        _check_bounds("PskBinderEntry", len(binder), 32, 255)
        parts.append(u8(len(binder)))
        parts.append(binder)
    body = b"".join(parts)
    _check_bounds("binders", len(body), 33, _U16_MAX)
    return u16(len(body)) + body


def offered_psks_binders_length(offered: OfferedPsks) -> int:
    """Bytes the binders list takes at the very end of the encoded ClientHello.

    pre_shared_key is the last extension (§4.2.11) and binders the last field
    of OfferedPsks, so Truncate(ClientHello) is ``raw[:-this]``.
    """
    return 2 + sum(1 + len(b) for b in offered.binders)


def encode_pre_shared_key_client(offered: OfferedPsks) -> bytes:
    if len(offered.identities) != len(offered.binders):
        raise ValueError("OfferedPsks needs exactly one binder per identity")
    parts = []
    for psk in offered.identities:
        _check_bounds("identity", len(psk.identity), 1, _U16_MAX)
        parts.append(u16(len(psk.identity)))
        parts.append(psk.identity)
        parts.append(_UINT32.pack(psk.obfuscated_ticket_age))
    ids = b"".join(parts)
    _check_bounds("identities", len(ids), 7, _U16_MAX)
    return u16(len(ids)) + ids + encode_psk_binders(offered.binders)


def decode_pre_shared_key_client(data: bytes) -> OfferedPsks:
    """OfferedPsks: ``identities<7..2^16-1>``, ``binders<33..2^16-1>``.

    The binders list must have one entry per identity ("one for each value in
    the identities list", §4.2.11); a count mismatch parses but is
    inconsistent, hence illegal_parameter.
    """
    buf = Buffer(data)
    ids = buf.sub(2, 7, _U16_MAX)
    binder_list = buf.sub(2, 33, _U16_MAX)
    buf.expect_end("pre_shared_key")
    identities = []
    while not ids.eof():
        identity = ids.read_vector(2, 1, _U16_MAX)
        identities.append(PskIdentity(identity, ids.read_uint32()))
    binders = []
    while not binder_list.eof():
        binders.append(binder_list.read_vector(1, 32, 255))
    if len(binders) != len(identities):
        raise _illegal(
            f"pre_shared_key has {len(identities)} identities but {len(binders)} binders"
        )
    return OfferedPsks(tuple(identities), tuple(binders))


def encode_pre_shared_key_server(selected_identity: int) -> bytes:
    return u16(selected_identity)


def decode_pre_shared_key_server(data: bytes) -> int:
    """ServerHello form: ``uint16 selected_identity`` (range is the caller's)."""
    if len(data) != 2:
        raise DecodeError(f"pre_shared_key selected_identity is {len(data)} bytes, not 2")
    return (data[0] << 8) | data[1]


# -- early_data (RFC 9846 §4.2.10) -------------------------------------------


def encode_early_data() -> bytes:
    """ClientHello and EncryptedExtensions form: empty."""
    return b""


def decode_early_data(data: bytes) -> None:
    _expect_empty(data, "early_data")


def encode_early_data_nst(max_early_data_size: int) -> bytes:
    """NewSessionTicket form: ``uint32 max_early_data_size``."""
    return u32(max_early_data_size)


def decode_early_data_nst(data: bytes) -> int:
    if len(data) != 4:
        raise DecodeError(f"early_data max_early_data_size is {len(data)} bytes, not 4")
    return int(_UINT32.unpack(data)[0])


# -- record_size_limit (RFC 8449 §4) -----------------------------------------

RECORD_SIZE_LIMIT_MIN = 64


def encode_record_size_limit(limit: int) -> bytes:
    if limit < RECORD_SIZE_LIMIT_MIN:
        raise ValueError(f"record_size_limit {limit} is below the minimum of 64 (RFC 8449 §4)")
    return u16(limit)


def decode_record_size_limit(data: bytes) -> int:
    """``uint16 RecordSizeLimit``; below 64 is illegal_parameter (RFC 8449 §4).

    The client-side check against the protocol maximum (2^14 + 1 for TLS 1.3)
    is optional and left to the caller: a server MUST NOT enforce it.
    """
    if len(data) != 2:
        raise DecodeError(f"record_size_limit is {len(data)} bytes, not 2")
    limit = (data[0] << 8) | data[1]
    if limit < RECORD_SIZE_LIMIT_MIN:
        raise _illegal(f"record_size_limit {limit} is below 64")
    return limit


# -- post_handshake_auth (RFC 9846 §4.2.6) -----------------------------------


def encode_post_handshake_auth() -> bytes:
    return b""


def decode_post_handshake_auth(data: bytes) -> None:
    _expect_empty(data, "post_handshake_auth")


# -- certificate_authorities (RFC 9846 §4.2.4) -------------------------------


def encode_certificate_authorities(names: Sequence[bytes]) -> bytes:
    parts = []
    for name in names:
        _check_bounds("DistinguishedName", len(name), 1, _U16_MAX)
        parts.append(u16(len(name)))
        parts.append(name)
    body = b"".join(parts)
    _check_bounds("authorities", len(body), 3, _U16_MAX)
    return u16(len(body)) + body


def decode_certificate_authorities(data: bytes) -> tuple[bytes, ...]:
    """``DistinguishedName authorities<3..2^16-1>``, each DER <1..2^16-1>.

    The names are returned as DER bytes; parsing them is the caller's.
    """
    buf = Buffer(data)
    names = buf.sub(2, 3, _U16_MAX)
    buf.expect_end("certificate_authorities")
    out = []
    while not names.eof():
        out.append(names.read_vector(2, 1, _U16_MAX))
    return tuple(out)


# -- compress_certificate (RFC 8879 §3) --------------------------------------


def encode_compress_certificate(algorithms: Sequence[int]) -> bytes:
    """CertificateCompressionAlgorithms: ``algorithms<2..2^8-2>``."""
    return _encode_u16_list(algorithms, 1, 2, 254, "algorithms")


def decode_compress_certificate(data: bytes) -> tuple[int, ...]:
    """``CertificateCompressionAlgorithm algorithms<2..2^8-2>``.

    An empty list is below the vector's minimum, hence decode_error (RFC 9846
    §4.2, §6.2); RFC 8879 names no other alert for it.  Algorithms we do not
    know come back as ints, for the caller to ignore.
    """
    return _decode_u16_list(data, 1, 2, 254, "algorithms")


# -- tls_flags (draft-ietf-tls-tlsflags §2) ----------------------------------

# ``opaque flags<1..255>``: 255 octets of 8 flags each, so flags 0..2039.
TLS_FLAGS_MAX_BIT = 255 * 8 - 1


def encode_tls_flags(bits: Iterable[int]) -> bytes:
    """FlagExtensions with the given flag numbers set.

    Flag n lives in octet n // 8 at bit n % 8, counting from the least
    significant bit, and the octet string is as short as possible (no
    trailing zero octets).  The draft forbids a zero-length extension, so an
    empty set is a ValueError: leave the extension out instead.
    """
    flags = set(bits)
    if not flags:
        raise ValueError("tls_flags needs at least one flag; omit the extension instead")
    if min(flags) < 0 or max(flags) > TLS_FLAGS_MAX_BIT:
        raise ValueError(f"tls_flags bit numbers must be in 0..{TLS_FLAGS_MAX_BIT}")
    out = bytearray(max(flags) // 8 + 1)
    for bit in flags:
        out[bit >> 3] |= 1 << (bit & 7)
    return u8(len(out)) + bytes(out)


def decode_tls_flags(data: bytes) -> frozenset[int]:
    """The set flag numbers of a FlagExtensions.

    Unlike other extensions, every invalid tls_flags value -- including a bad
    length, an all-zero value, or trailing zero octets -- is illegal_parameter:
    the draft says "An implementation that receives an invalid tls_flags
    extension MUST terminate the TLS handshake with a fatal illegal_parameter
    alert", which is more specific than RFC 9846 §4.2's decode_error.
    """
    known = _TLS_FLAGS_DECODED.get(data) if type(data) is bytes else None
    if known is not None:
        return known
    n = len(data) - 1
    if n < 1 or data[0] != n:
        raise _illegal("tls_flags is not a single opaque flags<1..255>")
    if data[n] == 0:
        # Also catches the all-zero value: its last octet is zero.
        raise _illegal("tls_flags has trailing zero octets")
    out: list[int] = []
    for i in range(n):
        octet = data[1 + i]
        if octet:
            base = i << 3
            out.extend(base + b for b in range(8) if octet >> b & 1)
    flags = frozenset(out)
    if len(_TLS_FLAGS_DECODED) < _TLS_FLAGS_DECODED_LIMIT:
        _TLS_FLAGS_DECODED[bytes(data)] = flags  # a copy: data may be a bytearray
    return flags


# A handshake decodes tls_flags three times (the server the ClientHello's, the
# client its own and the server's answer), nearly always the same few values:
# valid ones are remembered, up to a bound (issue 16).  Frozensets: shareable.
_TLS_FLAGS_DECODED: dict[bytes, frozenset[int]] = {}
_TLS_FLAGS_DECODED_LIMIT = 64
