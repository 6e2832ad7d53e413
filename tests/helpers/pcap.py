"""Write UDP datagrams into a classic pcap file that Wireshark reads.

    writer = PcapWriter()
    writer.add(time, ("127.0.0.1", 5000), ("127.0.0.1", 4433), datagram)
    writer.write(path)

Link type LINKTYPE_RAW (101: each packet starts with its IPv4 header), so
each packet is an IPv4 header (RFC 791, with its header checksum), a UDP
header (RFC 768; checksum 0, "not computed", which IPv4 allows) and the
datagram.  The file header is the libpcap format (magic 0xa1b2c3d4,
version 2.4, microsecond timestamps).
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

LINKTYPE_RAW = 101
IPPROTO_UDP = 17


def _ipv4_checksum(header: bytes) -> int:
    """RFC 791 §3.1: the 16-bit one's complement of the one's complement sum."""
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes, ident: int = 0) -> bytes:
    """An IPv4 packet carrying one UDP datagram."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0x4000, 64, IPPROTO_UDP, 0,
        socket.inet_aton(src[0]), socket.inet_aton(dst[0]),
    )  # fmt: skip
    checksum = _ipv4_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + udp


class PcapWriter:
    def __init__(self) -> None:
        self.packets: list[tuple[float, bytes]] = []

    def add(self, time: float, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        self.packets.append((time, udp_packet(src, dst, payload, ident=len(self.packets))))

    def write(self, path: Path) -> None:
        out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)]
        for time, packet in self.packets:
            seconds, micros = divmod(round(time * 1_000_000), 1_000_000)
            out.append(struct.pack("<IIII", seconds, micros, len(packet), len(packet)) + packet)
        path.write_bytes(b"".join(out))
