"""PROXY protocol v2 (HAProxy's proxy-protocol.txt §2.2): the codec, a listener
that accepts it, and a tunnel that sends it on.

Expected headers are built here byte by byte from the layout of §2.2 (the
12-byte signature, version/command, family/transport, 16-bit length, address
block, TLVs), never with the encoder under test; CRC32C is checked against
RFC 3720 appendix B.4's test vectors.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest

from longtls.aio.proxy_protocol import header_to_send
from longtls.wire.proxy_protocol import (
    Command,
    Family,
    ProxyHeader,
    ProxyHeaderError,
    Transport,
    crc32c,
    parse,
)

SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def v2(ver_cmd: int, fam: int, block: bytes, length: int | None = None) -> bytes:
    """A version 2 header as §2.2 lays it out: sig, ver_cmd, fam, len (network order), block."""
    return SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(block) if length is None else length) + block


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind, len(value) >> 8, len(value) & 0xFF]) + value


def ipv4_block(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


def with_crc(header_without_crc_tlv: bytes) -> bytes:
    """Append a CRC32C TLV and patch the length, then fill in the checksum
    computed over the whole header with the field zeroed (§2.2.3)."""
    zeroed = bytearray(header_without_crc_tlv + tlv(0x03, bytes(4)))
    zeroed[14:16] = struct.pack(">H", len(zeroed) - 16)
    zeroed[-4:] = struct.pack(">I", crc32c(bytes(zeroed)))
    return bytes(zeroed)


# -- CRC32C --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        # RFC 3720 appendix B.4: the CRC bytes as listed (little-endian order on the wire there).
        (bytes(32), bytes.fromhex("aa36918a")),
        (b"\xff" * 32, bytes.fromhex("43aba862")),
        (bytes(range(32)), bytes.fromhex("4e79dd46")),
        (bytes(range(31, -1, -1)), bytes.fromhex("5cdb3f11")),
    ],
)
def test_crc32c_rfc3720_vectors(data: bytes, crc: bytes) -> None:
    assert crc32c(data) == int.from_bytes(crc, "little")


# -- parsing headers built from §2.2 -----------------------------------------------------------


def test_ipv4_tcp_proxy_header() -> None:
    wire = v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))
    assert len(wire) == 28
    header, used = parse(wire + b"\x16\x03\x01")  # the TLS that follows is not the header's
    assert used == 28
    assert header.command is Command.PROXY
    assert (header.family, header.transport) == (Family.INET, Transport.STREAM)
    assert header.source == ("203.0.113.7", 51000)
    assert header.destination == ("192.0.2.1", 443)
    assert header.tlvs == () and not header.crc32c_verified


def test_ipv6_udp_proxy_header() -> None:
    src, dst = ipaddress.IPv6Address("2001:db8::7"), ipaddress.IPv6Address("2001:db8::1:0:1")
    block = src.packed + dst.packed + (1234).to_bytes(2, "big") + (5678).to_bytes(2, "big")
    header, used = parse(v2(0x21, 0x22, block))
    assert used == 16 + 36
    assert (header.family, header.transport) == (Family.INET6, Transport.DGRAM)
    assert header.source == ("2001:db8::7", 1234)
    assert header.destination == ("2001:db8::1:0:1", 5678)


def test_unix_stream_proxy_header() -> None:
    block = b"/run/client.sock".ljust(108, b"\0") + b"/run/server.sock".ljust(108, b"\0")
    header, used = parse(v2(0x21, 0x31, block))
    assert used == 16 + 216
    assert header.family is Family.UNIX
    assert header.source == ("/run/client.sock", 0) and header.destination == ("/run/server.sock", 0)


def test_local_header_ignores_its_addresses() -> None:
    header, used = parse(v2(0x20, 0x00, b""))
    assert used == 16 and header.command is Command.LOCAL and not header.has_addresses
    # §2.2: receivers must use the length even for LOCAL, which may carry an address block.
    header, used = parse(v2(0x20, 0x11, ipv4_block("10.0.0.1", "10.0.0.2", 1, 2)))
    assert used == 28 and header.command is Command.LOCAL and not header.has_addresses


def test_tlvs_noop_dropped_unknown_kept_crc_verified() -> None:
    base = v2(0x21, 0x11, ipv4_block("198.51.100.9", "192.0.2.1", 40000, 8443)
              + tlv(0x04, b"\0\0") + tlv(0x02, b"example.com") + tlv(0xE1, b"x"))
    wire = with_crc(base)
    header, used = parse(wire)
    assert used == len(wire)
    assert header.tlvs == ((0x02, b"example.com"), (0xE1, b"x"))
    assert header.crc32c_verified
    flipped = bytearray(wire)
    flipped[-8] ^= 0x01  # a bit of the unknown TLV's value: the checksum no longer matches
    with pytest.raises(ProxyHeaderError, match="CRC32C"):
        parse(bytes(flipped))


def test_split_arrival_needs_more_until_complete() -> None:
    wire = with_crc(v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443) + tlv(0x05, b"id-1")))
    for cut in range(len(wire)):
        assert parse(wire[:cut]) is None, cut
    header, used = parse(wire)
    assert used == len(wire) and header.tlvs == ((0x05, b"id-1"),)


@pytest.mark.parametrize(
    ("wire", "reason", "fragment"),
    [
        (b"\x16\x03\x01\x00\xf4\x01", "missing", "signature"),  # a TLS ClientHello straight away
        (SIG[:5] + b"X", "missing", "signature"),  # refused at the first wrong byte
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "missing", "version 1"),
        (v2(0x11, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)), "malformed", "version 1"),
        (v2(0x22, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)), "malformed", "command"),
        (v2(0x21, 0x41, b""), "malformed", "family"),
        (v2(0x21, 0x13, b""), "malformed", "family"),
        (v2(0x21, 0x10, b""), "malformed", "not accepted"),  # AF_INET with an UNSPEC transport
        (v2(0x21, 0x11, b"\0" * 11), "malformed", "shorter than a INET address block"),
        (v2(0x21, 0x21, b"\0" * 12), "malformed", "shorter than a INET6 address block"),
        (v2(0x21, 0x31, b"\0" * 215), "malformed", "shorter than a UNIX address block"),
        (v2(0x21, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2) + b"\x02\x00"), "malformed", "too few"),
        (v2(0x21, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2) + b"\x02\x00\x05abc"), "malformed", "runs past"),
        (v2(0x21, 0x00, tlv(0x03, b"\0\0\0")), "malformed", "CRC32C"),  # not 4 bytes
    ],
)
def test_malformed_headers_are_refused(wire: bytes, reason: str, fragment: str) -> None:
    with pytest.raises(ProxyHeaderError, match=fragment) as info:
        parse(wire)
    assert info.value.reason == reason


def test_refused_as_soon_as_the_fixed_part_is_wrong() -> None:
    # No need to wait for the 16-bit length: the 13th byte is already wrong.
    with pytest.raises(ProxyHeaderError, match="version"):
        parse(SIG + b"\x31")


# -- building --------------------------------------------------------------------------------


def test_encode_matches_the_layout() -> None:
    assert ProxyHeader.local().encode() == v2(0x20, 0x00, b"")
    header = ProxyHeader.proxy(("203.0.113.7", 51000), ("192.0.2.1", 443))
    assert header.encode() == v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))
    assert header.encode(with_crc32c=True) == with_crc(header.encode())
    # a dual-stack socket's IPv4-mapped addresses go out as IPv4
    mapped = ProxyHeader.proxy(("::ffff:203.0.113.7", 1), ("::ffff:192.0.2.1", 2))
    assert mapped.encode() == v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 1, 2))
    six = ProxyHeader.proxy(("2001:db8::7", 1), ("2001:db8::1", 2))
    assert six.encode()[12:16] == b"\x21\x21\x00\x24"


def test_header_to_send_falls_back_to_the_socket_then_local() -> None:
    received = parse(v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443) + tlv(0x05, b"hop")))
    assert received is not None
    info: dict[str, Any] = {"proxy_header": received[0], "peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}
    # the received addresses go on; the previous hop's TLVs do not
    assert header_to_send(info.get) == v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))
    info["proxy_header"] = ProxyHeader.local()
    assert header_to_send(info.get) == v2(0x21, 0x11, ipv4_block("127.0.0.1", "127.0.0.1", 1, 2))
    assert header_to_send({"peername": "/run/x.sock", "sockname": "/run/y.sock"}.get) == v2(0x20, 0x00, b"")
