"""The MLS flavour of the TLS presentation language (RFC 9420 §2.1).

MLS encodes structures as TLS does (RFC 9846 §3), with one difference: a
vector's length is not a fixed-size field but a variable-length integer
(RFC 9420 §2.1.2), written ``<V>`` in the spec.  ``Reader`` and ``Writer``
are the only code in ``mls/`` that touches bytes: every read is
bounds-checked and ends in ``DecodeError`` on short, trailing or malformed
data, so a decoder built on them cannot index out of range.

Decoders are plain functions ``Callable[[Reader], T]`` and encoders
``Callable[[Writer, T], object]``, so ``vector`` and ``optional`` compose
them::

    names = decode(data, lambda r: r.vector(Reader.opaque))
    data = Writer().vector(names, Writer.opaque).bytes()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from ..errors import DecodeError

T = TypeVar("T")

#: The largest value a variable-length integer can hold: 30 usable bits
#: (RFC 9420 §2.1.2, "Summary of Integer Encodings").
VARINT_MAX = (1 << 30) - 1


class Reader:
    """A bounds-checked read cursor over one encoded value."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data)

    def __repr__(self) -> str:  # never the content: it may be key material
        return f"<Reader pos={self._pos} len={self._end}>"

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def done(self) -> None:
        """Raise DecodeError if anything is left: a value is exactly its bytes."""
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing bytes after an MLS value")

    def fixed(self, n: int) -> bytes:
        """``opaque x[n]``: exactly n bytes."""
        end = self._pos + n
        if n < 0 or end > self._end:
            raise DecodeError("MLS value truncated")
        data = self._data[self._pos:end]
        self._pos = end
        return data

    def u8(self) -> int:
        if self._pos >= self._end:
            raise DecodeError("MLS value truncated")
        v = self._data[self._pos]
        self._pos += 1
        return v

    def u16(self) -> int:
        return int.from_bytes(self.fixed(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.fixed(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.fixed(8), "big")

    def varint(self) -> int:
        """A variable-length integer (RFC 9420 §2.1.2): 1, 2 or 4 bytes, the
        two top bits of the first byte saying which.  The prefix 0b11 and an
        encoding longer than needed are malformed ("MUST be treated as
        malformed", "MUST be rejected")."""
        first = self.u8()
        prefix = first >> 6
        if prefix == 0:
            return first
        if prefix == 3:
            raise DecodeError("invalid variable-length integer prefix 0b11 (RFC 9420 §2.1.2)")
        length = 1 << prefix  # 2 or 4 bytes
        v = ((first & 0x3F) << (8 * (length - 1))) | int.from_bytes(self.fixed(length - 1), "big")
        # "Check if the value would fit in half the provided length."
        if v < 1 << (8 * (length // 2) - 2):
            raise DecodeError("variable-length integer not minimally encoded (RFC 9420 §2.1.2)")
        return v

    def opaque(self) -> bytes:
        """``opaque x<V>``: a varint byte length, then the bytes."""
        return self.fixed(self.varint())

    def vector(self, item: Callable[[Reader], T]) -> list[T]:
        """``T x<V>``: a varint byte length, then items that fill it exactly.

        An item that runs past the declared length is a DecodeError, never a
        read into whatever follows the vector.
        """
        n = self.varint()
        end = self._pos + n
        if end > self._end:
            raise DecodeError("MLS vector truncated")
        outer_end = self._end
        self._end = end  # confine the items to the vector
        try:
            items: list[T] = []
            while self._pos < end:
                items.append(item(self))
        finally:
            self._end = outer_end
        return items

    def optional(self, item: Callable[[Reader], T]) -> T | None:
        """``optional<T>``: uint8 present (0 or 1), then the value if 1
        (RFC 9420 §2.1.1); any other presence byte is malformed."""
        present = self.u8()
        if present == 0:
            return None
        if present != 1:
            raise DecodeError(f"optional<T> presence byte {present} is neither 0 nor 1")
        return item(self)


class Writer:
    """Builds one encoded value; every method returns the writer, so calls chain.

    Values that do not fit their field raise ValueError: that is our bug, not
    the peer's, so it is not a DecodeError.
    """

    __slots__ = ("_out",)

    def __init__(self) -> None:
        self._out = bytearray()

    def __repr__(self) -> str:
        return f"<Writer len={len(self._out)}>"

    def _uint(self, v: int, size: int) -> Writer:
        if not 0 <= v < 1 << (8 * size):
            raise ValueError(f"{v} does not fit in uint{8 * size}")
        self._out += v.to_bytes(size, "big")
        return self

    def u8(self, v: int) -> Writer:
        return self._uint(v, 1)

    def u16(self, v: int) -> Writer:
        return self._uint(v, 2)

    def u32(self, v: int) -> Writer:
        return self._uint(v, 4)

    def u64(self, v: int) -> Writer:
        return self._uint(v, 8)

    def varint(self, v: int) -> Writer:
        """The minimal variable-length encoding of v (RFC 9420 §2.1.2)."""
        if v < 0 or v > VARINT_MAX:
            # RFC 9420 §2.1.2: "SHOULD provide a clear error when such an
            # overflow condition occurs".
            raise ValueError(f"{v} does not fit in an MLS variable-length integer (max 2^30-1)")
        if v < 1 << 6:
            self._out.append(v)
        elif v < 1 << 14:
            self._out += (0x4000 | v).to_bytes(2, "big")
        else:
            self._out += (0x8000_0000 | v).to_bytes(4, "big")
        return self

    def raw(self, data: bytes | bytearray | memoryview) -> Writer:
        """Bytes as they are: ``opaque x[n]`` or an already encoded value."""
        self._out += data
        return self

    def opaque(self, data: bytes | bytearray | memoryview) -> Writer:
        """``opaque x<V>``: varint length, then the bytes."""
        self.varint(len(data))
        self._out += data
        return self

    def vector(self, items: Iterable[T], item: Callable[[Writer, T], object]) -> Writer:
        """``T x<V>``: the items encoded one after the other, prefixed with
        their total byte length as a varint."""
        inner = Writer()
        for value in items:
            item(inner, value)
        return self.opaque(inner._out)

    def optional(self, value: T | None, item: Callable[[Writer, T], object]) -> Writer:
        """``optional<T>`` (RFC 9420 §2.1.1): 0, or 1 and the value."""
        if value is None:
            return self.u8(0)
        self.u8(1)
        item(self, value)
        return self

    def bytes(self) -> bytes:
        return bytes(self._out)


def decode(data: bytes | bytearray | memoryview, item: Callable[[Reader], T]) -> T:
    """Decode exactly one value from data: trailing bytes are a DecodeError."""
    reader = Reader(data)
    value = item(reader)
    reader.done()
    return value


def encode(value: T, item: Callable[[Writer, T], object]) -> bytes:
    """The encoding of one value with an encoder function."""
    writer = Writer()
    item(writer, value)
    return writer.bytes()
