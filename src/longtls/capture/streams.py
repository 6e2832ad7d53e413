"""TCP streams and UDP flows out of a capture file, with ``tshark``.

tshark reads every capture format (pcap, pcapng, compressed files) and
dissects the link, IP and transport headers; it is asked for one line per
TCP or UDP packet with the fields below, and the TCP reassembly is done
here, from the raw sequence numbers, so that it is explicit what happens
with retransmissions, overlaps, out-of-order segments and holes:

- each byte of a direction is taken from the first packet that carried it
  (a retransmission adds only what was missing);
- a record is dated by the packet that completed it (the latest of the
  first arrivals of its bytes), as a receiver would have read it;
- a hole (bytes the capture never saw) ends the usable stream at the hole;
  :attr:`ByteStream.missing` says where.

tshark's own TCP reassembly and its TLS/DTLS dissectors are switched off:
they are not needed, and they cost time on long captures.
"""

from __future__ import annotations

import bisect
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Address = tuple[str, int]

#: The fields of each packet, in the order tshark prints them.
FIELDS = (
    "frame.number", "frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst",
    "tcp.stream", "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.flags.syn", "tcp.flags.ack", "tcp.payload",
    "udp.stream", "udp.srcport", "udp.dstport", "udp.payload",
)  # fmt: skip
#: ICMP errors quote the datagram that caused them, UDP header included: not traffic.
DISPLAY_FILTER = "(tcp or udp) and not icmp and not icmpv6"
_SEQUENCE_SPACE = 1 << 32


class CaptureError(Exception):
    """The capture cannot be read (not a capture file, damaged, tshark missing or failing)."""


@dataclass(frozen=True, slots=True)
class _Piece:
    start: int
    end: int
    time: float
    data: bytes


class ByteStream:
    """One direction of a TCP connection, reassembled by sequence number.

    ``add`` the segments in capture order; ``data`` is the contiguous prefix
    from the first byte after the SYN (or, without a SYN in the capture,
    from the lowest sequence number of the segments), ``missing`` the offset
    of the first hole, if there is one.
    """

    def __init__(self) -> None:
        self._base: int | None = None  # the sequence number of offset 0
        self._highest = 0  # the highest offset seen, to unwrap 32-bit sequence numbers
        self._starts: list[int] = []
        self._pieces: list[_Piece] = []
        self._pending: list[tuple[float, int, bytes]] = []  # segments before the base is known
        self._data: bytes | None = None  # ``data``, until the next segment

    def __repr__(self) -> str:  # lengths only: the bytes are TLS records
        return f"<ByteStream pieces={len(self._pieces)} bytes={sum(p.end - p.start for p in self._pieces)}>"

    def syn(self, sequence_number: int) -> None:
        """A SYN: data starts at the next sequence number (RFC 9293 §3.4)."""
        if self._base is None:
            self._base = (sequence_number + 1) % _SEQUENCE_SPACE
            self._data = None

    def add(self, time: float, sequence_number: int, payload: bytes) -> None:
        if not payload:
            return
        self._data = None
        if self._base is None:
            self._pending.append((time, sequence_number, payload))
            return
        self._insert(time, self._offset(sequence_number), payload)

    def _offset(self, sequence_number: int) -> int:
        assert self._base is not None
        relative = (sequence_number - self._base) % _SEQUENCE_SPACE
        # The 32-bit sequence number wraps every 4 GiB: take the offset closest
        # to the highest one seen so far (a negative one is before the first
        # byte: a segment older than the SYN's successor, nothing of this stream).
        wraps = (self._highest - relative + _SEQUENCE_SPACE // 2) // _SEQUENCE_SPACE
        return relative + wraps * _SEQUENCE_SPACE

    def _insert(self, time: float, start: int, payload: bytes) -> None:
        end = start + len(payload)
        if end <= 0:
            return
        if start < 0:
            payload, start = payload[-start:], 0
        self._highest = max(self._highest, end)
        # Fill only the holes between the pieces already held: the first copy of a byte wins.
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and self._pieces[i].end > start:
            cursor = self._pieces[i].end
        else:
            cursor = start
        i = max(i + 1, 0)
        new: list[_Piece] = []
        while cursor < end:
            next_start = self._pieces[i].start if i < len(self._pieces) else end
            if next_start > cursor:
                stop = min(next_start, end)
                new.append(_Piece(cursor, stop, time, payload[cursor - start : stop - start]))
            if i < len(self._pieces):
                cursor = max(cursor, self._pieces[i].end)
                i += 1
            else:
                break
        for piece in new:
            j = bisect.bisect_left(self._starts, piece.start)
            self._starts.insert(j, piece.start)
            self._pieces.insert(j, piece)

    def _settle(self) -> None:
        """Without a SYN: the lowest sequence number (in a window of 2 GiB) is offset 0."""
        if self._pending and self._base is None:
            first = self._pending[0][1]
            self._base = min(
                (s for _, s, _ in self._pending), key=lambda s: (s - first + _SEQUENCE_SPACE // 2) % _SEQUENCE_SPACE
            )
        pending, self._pending = self._pending, []
        for time, sequence_number, payload in pending:
            self._insert(time, self._offset(sequence_number), payload)

    @property
    def data(self) -> bytes:
        """The bytes from offset 0 up to the first hole."""
        self._settle()
        if self._data is None:
            out = bytearray()
            for piece in self._pieces:
                if piece.start != len(out):
                    break
                out += piece.data
            self._data = bytes(out)
        return self._data

    @property
    def missing(self) -> int | None:
        """The offset of the first byte the capture does not have, if later bytes are there."""
        self._settle()
        cursor = 0
        for piece in self._pieces:
            if piece.start != cursor:
                return cursor
            cursor = piece.end
        return None

    def time_of(self, start: int, end: int) -> float:
        """When bytes ``start..end`` were all in: the latest first arrival among them."""
        self._settle()
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        latest = float("-inf")
        while i < len(self._pieces) and self._pieces[i].start < end:
            if self._pieces[i].end > start:
                latest = max(latest, self._pieces[i].time)
            i += 1
        return latest


@dataclass(slots=True)
class TCPConnection:
    """The two directions of one TCP connection (tshark's tcp.stream)."""

    stream: int
    first_time: float
    #: The endpoint that sent the SYN, if the capture has it.
    initiator: Address | None = None
    directions: dict[Address, ByteStream] = field(default_factory=dict)
    peers: dict[Address, Address] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Datagram:
    time: float
    source: Address
    destination: Address
    payload: bytes


@dataclass(slots=True)
class UDPFlow:
    """The datagrams between two UDP endpoints (tshark's udp.stream), in capture order."""

    stream: int
    first_time: float
    datagrams: list[Datagram] = field(default_factory=list)


@dataclass(slots=True)
class Capture:
    tcp: list[TCPConnection] = field(default_factory=list)
    udp: list[UDPFlow] = field(default_factory=list)
    #: What tshark said about a capture it could read only in part (cut short, damaged at the end).
    warning: str | None = None


def find_tshark(explicit: str | None = None) -> str:
    path = shutil.which(explicit or "tshark")
    if path is None:
        where = f"{explicit!r} is not an executable" if explicit else "tshark is not on PATH"
        raise CaptureError(f"{where}: install Wireshark's tshark (apt install tshark) or give --tshark PATH")
    return path


def run_tshark(path: str, tshark: str, timeout: float | None = None) -> tuple[list[str], str | None]:
    """tshark's lines for ``path`` (one per packet) and its complaint if it stopped early."""
    args = [
        tshark, "-n", "-r", path, "-Y", DISPLAY_FILTER,
        "-o", "tcp.desegment_tcp_streams:FALSE", "--disable-protocol", "tls", "--disable-protocol", "dtls",
        "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f",
    ]  # fmt: skip
    for name in FIELDS:
        args += ["-e", name]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except OSError as exc:
        raise CaptureError(f"cannot run {tshark}: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise CaptureError(f"tshark took more than {timeout} s to read {path}") from None
    complaint = _tshark_complaint(done.stderr)
    lines = [line for line in done.stdout.splitlines() if line]
    if done.returncode != 0 and not lines:
        raise CaptureError(complaint or f"tshark failed on {path} (exit status {done.returncode})")
    return lines, complaint if done.returncode != 0 else None


def _tshark_complaint(stderr: str) -> str | None:
    """tshark's message, without its warning about running as root."""
    lines = [
        line.strip() for line in stderr.splitlines()
        if line.strip() and "could be dangerous" not in line and not line.startswith("Running as user")
    ]  # fmt: skip
    return " ".join(lines) if lines else None


def read_capture(path: str, tshark: str | None = None, timeout: float | None = None) -> Capture:
    """Every TCP connection and UDP flow in the capture file at ``path``."""
    lines, warning = run_tshark(path, find_tshark(tshark), timeout)
    capture = parse_fields(lines)
    capture.warning = warning
    return capture


def _address(host: str, port: str) -> Address:
    return host, int(port)


def parse_fields(lines: Iterable[str]) -> Capture:
    """The capture from tshark's field lines (``FIELDS``, tab-separated)."""
    capture = Capture()
    tcp: dict[int, TCPConnection] = {}
    udp: dict[int, UDPFlow] = {}
    for number, line in enumerate(lines, 1):
        values = line.split("\t")
        if len(values) != len(FIELDS):
            raise CaptureError(f"unexpected tshark output on line {number}: {len(values)} fields, not {len(FIELDS)}")
        row = dict(zip(FIELDS, values, strict=True))
        try:
            _add_packet(row, tcp, udp)
        except ValueError:
            raise CaptureError(f"unexpected tshark output on line {number} (frame {row['frame.number']})") from None
    capture.tcp = sorted(tcp.values(), key=lambda c: c.first_time)
    capture.udp = sorted(udp.values(), key=lambda f: f.first_time)
    return capture


def _add_packet(row: dict[str, str], tcp: dict[int, TCPConnection], udp: dict[int, UDPFlow]) -> None:
    time = float(row["frame.time_epoch"])
    source_host = row["ip.src"] or row["ipv6.src"]
    destination_host = row["ip.dst"] or row["ipv6.dst"]
    if row["tcp.stream"]:
        source = _address(source_host, row["tcp.srcport"])
        destination = _address(destination_host, row["tcp.dstport"])
        connection = tcp.setdefault(int(row["tcp.stream"]), TCPConnection(int(row["tcp.stream"]), time))
        stream = connection.directions.setdefault(source, ByteStream())
        connection.directions.setdefault(destination, ByteStream())
        connection.peers[source], connection.peers[destination] = destination, source
        sequence_number = int(row["tcp.seq_raw"])
        if _true(row["tcp.flags.syn"]):
            stream.syn(sequence_number)
            if not _true(row["tcp.flags.ack"]) and connection.initiator is None:
                connection.initiator = source
            sequence_number += 1  # data on a SYN (TCP Fast Open) follows the SYN's own number
        stream.add(time, sequence_number, _hex(row["tcp.payload"]))
    elif row["udp.stream"]:
        source = _address(source_host, row["udp.srcport"])
        destination = _address(destination_host, row["udp.dstport"])
        flow = udp.setdefault(int(row["udp.stream"]), UDPFlow(int(row["udp.stream"]), time))
        flow.datagrams.append(Datagram(time, source, destination, _hex(row["udp.payload"])))


def _true(value: str) -> bool:
    # tshark prints booleans as 1/0 (4.0) or True/False (4.2 and later).
    return value in ("1", "True", "true")


def _hex(value: str) -> bytes:
    # tshark 4.0 prints bytes as plain hex; older versions separate them with colons.
    return bytes.fromhex(value.replace(":", ""))


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def segments_to_stream(segments: Sequence[tuple[float, int, bytes]], syn: int | None = None) -> ByteStream:
    """A ByteStream from (time, sequence number, payload) segments in capture order (for tests and tools)."""
    stream = ByteStream()
    if syn is not None:
        stream.syn(syn)
    for time, sequence_number, payload in segments:
        stream.add(time, sequence_number, payload)
    return stream
