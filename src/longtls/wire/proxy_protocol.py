"""The PROXY protocol, version 2 (binary): parse and build the header.

Written from HAProxy's "The PROXY protocol" (doc/proxy-protocol.txt, versions
1 & 2), section 2.2 ("Binary header format (version 2)"); section numbers
below are that text's.  A proxy (HAProxy, nginx, a cloud load balancer) sends
the header first on a TCP connection it opens on behalf of a client, so the
server learns the client's real address:

    header = ProxyHeader.proxy(("203.0.113.7", 51000), ("192.0.2.1", 443))
    wire = header.encode()
    parsed = parse(wire)            # -> (header, len(wire)), or None: need more bytes

``parse`` is incremental: on a prefix of a valid header it returns None (read
more), and it refuses as early as it can, so a peer that is not a proxy (a TLS
ClientHello starts with 0x16) is refused at its first byte.

Decisions where the text leaves room (docs/proxy-protocol.md):

- Version 1 (the text form, "PROXY TCP4 ...") is refused: only version 2 is
  accepted, as the issue asks.  Each accepted format is one more parser
  exposed to whoever reaches the port, and a proxy that can send version 2
  (HAProxy ``send-proxy-v2``) has no reason to send version 1.  A version 1
  header is recognised only to say so in the error.
- Only the protocol bytes §2.2 lists as "expected" are accepted: 0x00
  (UNSPEC), 0x11/0x12 (TCP/UDP over IPv4), 0x21/0x22 (IPv6) and 0x31/0x32
  (UNIX).  A nibble outside the defined values must be rejected (§2.2); the
  half-specified combinations (a family with an UNSPEC transport, or the
  reverse) have no defined address layout, so they are refused too rather
  than guessed at.
- The address block is read at the family's length; everything after it, up
  to the 16-bit length, is a TLV list (§2.2), for LOCAL headers as well (a
  LOCAL header ignores its addresses, but a CRC32C TLV still covers it).
- TLVs: PP2_TYPE_CRC32C is verified (§2.2.3; more than one, or a value that
  is not 4 bytes, is malformed); PP2_TYPE_NOOP is dropped (§2.2.4); every
  other type is kept, in order, as (type, value) for the application.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import TLSError

__all__ = [
    "MAX_HEADER_LENGTH",
    "SIGNATURE",
    "Command",
    "Family",
    "ProxyHeader",
    "ProxyHeaderError",
    "TLVType",
    "Transport",
    "crc32c",
    "parse",
]

#: The 12-byte signature that opens every version 2 header (§2.2).
SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
_FIXED = 16  # signature, version/command, family/transport, 16-bit length
#: 16 bytes and at most 65535 more (the length field is 16 bits).
MAX_HEADER_LENGTH = _FIXED + 0xFFFF
_VERSION = 0x2
_UNIX_ADDRESS = 108  # bytes per AF_UNIX address (§2.2)


class Command(IntEnum):
    """The low nibble of the 13th byte (§2.2)."""

    LOCAL = 0x0  # the proxy's own connection (a health check): use the socket's endpoints
    PROXY = 0x1  # on behalf of a client: the address block says who


class Family(IntEnum):
    """The high nibble of the 14th byte (§2.2)."""

    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3


class Transport(IntEnum):
    """The low nibble of the 14th byte (§2.2)."""

    UNSPEC = 0x0
    STREAM = 0x1
    DGRAM = 0x2


class TLVType(IntEnum):
    """The registered TLV types (§2.2)."""

    ALPN = 0x01
    AUTHORITY = 0x02
    CRC32C = 0x03
    NOOP = 0x04
    UNIQUE_ID = 0x05
    SSL = 0x20
    NETNS = 0x30


#: Address block length per (family, transport): the "expected" protocol
#: bytes of §2.2; any other combination is refused.
_ADDRESS_LENGTH: dict[tuple[Family, Transport], int] = {
    (Family.UNSPEC, Transport.UNSPEC): 0,
    (Family.INET, Transport.STREAM): 12,
    (Family.INET, Transport.DGRAM): 12,
    (Family.INET6, Transport.STREAM): 36,
    (Family.INET6, Transport.DGRAM): 36,
    (Family.UNIX, Transport.STREAM): 2 * _UNIX_ADDRESS,
    (Family.UNIX, Transport.DGRAM): 2 * _UNIX_ADDRESS,
}


class ProxyHeaderError(TLSError):
    """A PROXY protocol header that must be refused (§2.2: drop the connection).

    ``reason``: "missing" (the bytes do not start with a version 2 signature,
    e.g. a client talking TLS straight away, or a version 1 header) or
    "malformed" (a signature, then something invalid).  No TLS alert goes
    with it: TLS has not started.
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


# -- CRC32C (Castagnoli), as PP2_TYPE_CRC32C needs it (§2.2.3: "as described in
# RFC4960, Appendix B").  The standard library has only zlib's CRC-32; this is
# the reflected, table-driven form: polynomial 0x1EDC6F41 (reversed
# 0x82F63B78), initial value and final XOR 0xFFFFFFFF.

def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C (Castagnoli) of ``data`` (RFC 4960 Appendix B; RFC 3720 B.4 test vectors)."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


#: An address: (host, port) for INET/INET6 (host in its usual text form), or
#: (path, 0) for UNIX (the 108-byte field up to its first NUL, as text).
Address = tuple[str, int]


@dataclass(frozen=True)
class ProxyHeader:
    """One version 2 header.

    ``source``/``destination`` are None when the header carries no address
    (family UNSPEC).  For a LOCAL command they are what the header said, which
    §2.2 says to ignore: use the socket's endpoints (:attr:`addresses` does).
    ``tlvs``: every TLV but NOOP and CRC32C, in order (``crc32c_verified``
    says whether a CRC32C was present, and it matched: a mismatch is refused).
    """

    command: Command
    family: Family = Family.UNSPEC
    transport: Transport = Transport.UNSPEC
    source: Address | None = None
    destination: Address | None = None
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())
    crc32c_verified: bool = False

    @classmethod
    def local(cls) -> ProxyHeader:
        """The header of a connection the proxy makes for itself (§2.2: LOCAL, UNSPEC, no address)."""
        return cls(Command.LOCAL)

    @classmethod
    def proxy(
        cls, source: Address, destination: Address, transport: Transport = Transport.STREAM
    ) -> ProxyHeader:
        """A PROXY header for an IP connection from ``source`` to ``destination``.

        Both must be of one family; an IPv4-mapped IPv6 address (a dual-stack
        socket's view of an IPv4 peer) counts as IPv4 when the other one is
        IPv4 or mapped too, and an IPv4 address is mapped when the other is
        IPv6 (one address block holds one family).
        """
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped and (
            isinstance(dst, ipaddress.IPv4Address) or (isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped)
        ):
            src = src.ipv4_mapped
        if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped and isinstance(src, ipaddress.IPv4Address):
            dst = dst.ipv4_mapped
        if src.version != dst.version:
            src, dst = (ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a for a in (src, dst))
        family = Family.INET if src.version == 4 else Family.INET6
        return cls(Command.PROXY, family, transport, (str(src), source[1]), (str(dst), destination[1]))

    @property
    def has_addresses(self) -> bool:
        """A PROXY header with an address block (INET, INET6 or UNIX): the
        addresses to use instead of the socket's."""
        return self.command is Command.PROXY and self.source is not None

    def encode(self, *, tlvs: tuple[tuple[int, bytes], ...] | None = None, with_crc32c: bool = False) -> bytes:
        """The header's bytes; ``tlvs`` (default: ``self.tlvs``) follow the
        address block, then a PP2_TYPE_CRC32C if ``with_crc32c`` (§2.2.3)."""
        block = self._address_block()
        for tlv_type, value in self.tlvs if tlvs is None else tlvs:
            block += _tlv(tlv_type, value)
        crc_at = -1
        if with_crc32c:
            crc_at = _FIXED + len(block) + 3
            block += _tlv(TLVType.CRC32C, bytes(4))  # §2.2.3: computed with the field zeroed
        if len(block) > 0xFFFF:
            raise ValueError(f"a PROXY header holds at most 65535 bytes after its first 16, not {len(block)}")
        header = bytearray(SIGNATURE)
        header += bytes([(_VERSION << 4) | self.command, (self.family << 4) | self.transport])
        header += struct.pack("!H", len(block)) + block
        if with_crc32c:
            header[crc_at:crc_at + 4] = struct.pack("!I", crc32c(header))
        return bytes(header)

    def _address_block(self) -> bytes:
        length = _ADDRESS_LENGTH.get((self.family, self.transport))
        if length is None:
            raise ValueError(f"no address layout for family {self.family.name} over {self.transport.name}")
        if length == 0:
            return b""
        if self.source is None or self.destination is None:
            raise ValueError(f"a {self.family.name} header needs a source and a destination")
        if self.family is Family.UNIX:
            return b"".join(_unix_address(a[0]) for a in (self.source, self.destination))
        version = 4 if self.family is Family.INET else 6
        hosts = [ipaddress.ip_address(a[0]) for a in (self.source, self.destination)]
        if any(h.version != version for h in hosts):
            raise ValueError(f"a {self.family.name} header needs IPv{version} addresses")
        return b"".join(h.packed for h in hosts) + struct.pack("!HH", self.source[1], self.destination[1])


def _tlv(tlv_type: int, value: bytes) -> bytes:
    if not 0 <= tlv_type <= 0xFF or len(value) > 0xFFFF:
        raise ValueError("a TLV has a one-byte type and at most 65535 bytes of value")
    return struct.pack("!BH", tlv_type, len(value)) + value


def _unix_address(path: str) -> bytes:
    raw = path.encode()
    if len(raw) > _UNIX_ADDRESS:
        raise ValueError(f"a UNIX address holds at most {_UNIX_ADDRESS} bytes")
    return raw.ljust(_UNIX_ADDRESS, b"\x00")


def parse(data: bytes | bytearray | memoryview) -> tuple[ProxyHeader, int] | None:
    """Parse a version 2 header at the start of ``data``.

    Returns (header, bytes it took) -- what follows belongs to the next
    protocol (TLS) -- or None when ``data`` is a valid beginning that needs
    more bytes.  Raises :class:`ProxyHeaderError` as soon as the bytes cannot
    be a valid header.
    """
    whole, available = data, len(data)
    data = bytes(data[:_FIXED])  # the rest is copied only once it is all there
    prefix = data[:len(SIGNATURE)]
    if not SIGNATURE.startswith(prefix):
        if b"PROXY".startswith(data[:5]) and data:
            if len(data) < 5:
                return None  # maybe version 1: refused once it is certain
            raise ProxyHeaderError("a PROXY protocol version 1 (text) header: only version 2 is accepted", "missing")
        raise ProxyHeaderError("no PROXY protocol header (the first bytes are not its signature)", "missing")
    if len(data) < _FIXED:
        if len(data) > len(SIGNATURE):
            _version_and_command(data[12])
        if len(data) > len(SIGNATURE) + 1:
            _family_and_transport(data[13])
        return None
    command = _version_and_command(data[12])
    family, transport = _family_and_transport(data[13])
    (length,) = struct.unpack_from("!H", data, 14)
    address_length = _ADDRESS_LENGTH[(family, transport)]
    if length < address_length:
        # §2.2: the length covers at least the address block of the family.
        raise ProxyHeaderError(
            f"PROXY header length {length} is shorter than a {family.name} address block ({address_length} bytes)"
        )
    total = _FIXED + length
    if available < total:
        return None  # §2.2: parse nothing before the whole block is there
    header = bytes(whole[:total])
    source, destination = _addresses(family, header[_FIXED:_FIXED + address_length])
    tlvs, verified = _tlvs(header, _FIXED + address_length)
    return ProxyHeader(command, family, transport, source, destination, tlvs, verified), total


def _version_and_command(byte: int) -> Command:
    if byte >> 4 != _VERSION:
        # §2.2: "the receiver must only accept this value".
        raise ProxyHeaderError(f"PROXY protocol version {byte >> 4} (only 2 is accepted)")
    try:
        return Command(byte & 0x0F)
    except ValueError:
        # §2.2: "Receivers must drop connections presenting unexpected values here."
        raise ProxyHeaderError(f"unknown PROXY protocol command 0x{byte & 0x0F:X}") from None


def _family_and_transport(byte: int) -> tuple[Family, Transport]:
    try:
        family, transport = Family(byte >> 4), Transport(byte & 0x0F)
    except ValueError:
        raise ProxyHeaderError(f"unknown PROXY protocol family/transport byte 0x{byte:02X}") from None
    if (family, transport) not in _ADDRESS_LENGTH:
        raise ProxyHeaderError(f"PROXY protocol family {family.name} with transport {transport.name} is not accepted")
    return family, transport


def _addresses(family: Family, block: bytes) -> tuple[Address | None, Address | None]:
    if family is Family.UNSPEC:
        return None, None  # §2.2: "The receiver should ignore address information."
    if family is Family.UNIX:
        paths = [block[i:i + _UNIX_ADDRESS].split(b"\x00", 1)[0] for i in (0, _UNIX_ADDRESS)]
        src, dst = (p.decode(errors="backslashreplace") for p in paths)
        return (src, 0), (dst, 0)
    size = 4 if family is Family.INET else 16
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * size)
    hosts = [
        str(ipaddress.IPv4Address(raw) if size == 4 else ipaddress.IPv6Address(raw))
        for raw in (block[:size], block[size:2 * size])
    ]
    return (hosts[0], source_port), (hosts[1], destination_port)


def _tlvs(header: bytes, offset: int) -> tuple[tuple[tuple[int, bytes], ...], bool]:
    """The TLV list from ``offset`` to the end of ``header`` (§2.2), CRC32C checked (§2.2.3)."""
    tlvs: list[tuple[int, bytes]] = []
    crc_at = -1
    while offset < len(header):
        if offset + 3 > len(header):
            raise ProxyHeaderError(f"PROXY header: {len(header) - offset} byte(s) after the last TLV, too few for one")
        tlv_type, length = struct.unpack_from("!BH", header, offset)
        start = offset + 3
        if start + length > len(header):
            raise ProxyHeaderError(
                f"PROXY header: TLV 0x{tlv_type:02X} of {length} bytes runs past the header's end"
            )
        value = header[start:start + length]
        if tlv_type == TLVType.CRC32C:
            if crc_at >= 0 or length != 4:
                raise ProxyHeaderError("PROXY header: a CRC32C TLV must be one, of 4 bytes")
            crc_at = start
        elif tlv_type != TLVType.NOOP:  # §2.2.4: "should be ignored when parsed"
            tlvs.append((tlv_type, value))
        offset = start + length
    if crc_at >= 0:
        (received,) = struct.unpack_from("!I", header, crc_at)
        zeroed = header[:crc_at] + bytes(4) + header[crc_at + 4:]
        if crc32c(zeroed) != received:
            # §2.2.3: "the receiver MUST treat the TCP connection ... as invalid".
            raise ProxyHeaderError("PROXY header: CRC32C mismatch")
    return tuple(tlvs), crc_at >= 0
