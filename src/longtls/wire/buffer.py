"""Bounds-checked reading and writing of TLS presentation-language values.

Every read that would run past the end raises DecodeError, so a parser built
on Buffer cannot index out of range (RFC 9846 §3 vectors and integers).
"""

from __future__ import annotations

from ..errors import DecodeError


class Buffer:
    """A read cursor over immutable bytes."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data)

    def __repr__(self) -> str:  # never show content: it may be key material
        return f"<Buffer pos={self._pos} len={self._end}>"

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def expect_end(self, what: str = "message") -> None:
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing bytes in {what}")

    def read(self, n: int) -> bytes:
        if n < 0 or self._pos + n > self._end:
            raise DecodeError("message truncated")
        start = self._pos
        self._pos += n
        return self._data[start : self._pos]

    def read_uint8(self) -> int:
        if self._pos + 1 > self._end:
            raise DecodeError("message truncated")
        v = self._data[self._pos]
        self._pos += 1
        return v

    # The fixed-size reads and read_vector index the bytes themselves instead
    # of calling read(): they run ~200 times per handshake (issue 16).

    def read_uint16(self) -> int:
        pos = self._pos
        if pos + 2 > self._end:
            raise DecodeError("message truncated")
        self._pos = pos + 2
        data = self._data
        return (data[pos] << 8) | data[pos + 1]

    def read_uint24(self) -> int:
        pos = self._pos
        if pos + 3 > self._end:
            raise DecodeError("message truncated")
        self._pos = pos + 3
        return int.from_bytes(self._data[pos : pos + 3], "big")

    def read_uint32(self) -> int:
        return int.from_bytes(self.read(4), "big")

    def read_uint48(self) -> int:
        return int.from_bytes(self.read(6), "big")

    def read_uint64(self) -> int:
        return int.from_bytes(self.read(8), "big")

    def read_vector(self, length_bytes: int, min_len: int = 0, max_len: int | None = None) -> bytes:
        """Read an opaque vector ``<min..max>`` with a length prefix of ``length_bytes``."""
        pos = self._pos
        start = pos + length_bytes
        if start > self._end:
            raise DecodeError("message truncated")
        data = self._data
        n = data[pos] if length_bytes == 1 else int.from_bytes(data[pos:start], "big")
        if n < min_len or (max_len is not None and n > max_len):
            raise DecodeError(f"vector length {n} outside <{min_len}..{max_len}>")
        end = start + n
        if end > self._end:
            raise DecodeError("message truncated")
        self._pos = end
        return data[start:end]

    def sub(self, length_bytes: int, min_len: int = 0, max_len: int | None = None) -> Buffer:
        """A Buffer over the next length-prefixed vector."""
        return Buffer(self.read_vector(length_bytes, min_len, max_len))


def u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u24(v: int) -> bytes:
    return v.to_bytes(3, "big")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def u48(v: int) -> bytes:
    return v.to_bytes(6, "big")


def u64(v: int) -> bytes:
    return v.to_bytes(8, "big")


def vec(length_bytes: int, data: bytes) -> bytes:
    """Encode an opaque vector with a ``length_bytes`` length prefix."""
    if len(data) >= 1 << (8 * length_bytes):
        raise ValueError(f"vector of {len(data)} bytes does not fit a {length_bytes}-byte length")
    return len(data).to_bytes(length_bytes, "big") + data
