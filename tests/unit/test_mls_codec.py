"""longtls.mls.codec: the MLS presentation language (RFC 9420 §2.1).

The varint headers come from the official MLS test vectors
(tests/vectors/mls/deserialization.json, "Vector Deserialization"); the
examples in the prose are RFC 9420 §2.1.2's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from longtls.errors import DecodeError
from longtls.mls.codec import VARINT_MAX, Reader, Writer, decode, encode

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "mls"


def _deserialization() -> list[dict[str, object]]:
    data: list[dict[str, object]] = json.loads((VECTORS / "deserialization.json").read_text())
    return data


def test_every_deserialization_vector_decodes_and_encodes_back() -> None:
    vectors = _deserialization()
    assert len(vectors) == 14  # the file's entries, all run
    for v in vectors:
        header = bytes.fromhex(str(v["vlbytes_header"]))
        length = v["length"]
        assert decode(header, Reader.varint) == length
        # our encoder is minimal, so it writes exactly the vector's header
        assert Writer().varint(int(str(length))).bytes() == header


def test_vector_headers_in_front_of_their_content() -> None:
    # an opaque<V> of each vector's length reads back whole
    for v in _deserialization():
        header = bytes.fromhex(str(v["vlbytes_header"]))
        n = int(str(v["length"]))
        if n > 1 << 16:
            continue  # the 2^30-1 one is covered below without a gigabyte
        body = bytes(i % 251 for i in range(n))
        assert decode(header + body, Reader.opaque) == body
        assert Writer().opaque(body).bytes() == header + body


def test_rfc9420_examples() -> None:
    # RFC 9420 §2.1.2: "The four-byte length value 0x9d7f3e7d decodes to
    # 494878333 ... 0x7bbd decodes to 15293 ... 0x25 decodes to 37."
    assert decode(bytes.fromhex("9d7f3e7d"), Reader.varint) == 494878333
    assert decode(bytes.fromhex("7bbd"), Reader.varint) == 15293
    assert decode(bytes.fromhex("25"), Reader.varint) == 37


@pytest.mark.parametrize("value, encoding", [
    (0, "00"), (63, "3f"), (64, "4040"), (16383, "7fff"), (16384, "80004000"),
    (VARINT_MAX, "bfffffff"),
])
def test_varint_boundaries(value: int, encoding: str) -> None:
    assert Writer().varint(value).bytes().hex() == encoding
    assert decode(bytes.fromhex(encoding), Reader.varint) == value


@pytest.mark.parametrize("encoding", [
    "4000", "403f",                # 0 and 63 in two bytes
    "80000000", "80003fff",        # 0 and 16383 in four bytes
    "80000025",
])
def test_non_minimal_varints_are_malformed(encoding: str) -> None:
    with pytest.raises(DecodeError, match="minimal"):
        decode(bytes.fromhex(encoding), Reader.varint)


@pytest.mark.parametrize("encoding", ["c0", "c000000000000000", "ffffffff"])
def test_the_0b11_prefix_is_rejected(encoding: str) -> None:
    with pytest.raises(DecodeError, match="prefix"):
        decode(bytes.fromhex(encoding), Reader.varint)


def test_values_that_do_not_fit_are_our_error_not_a_decode_error() -> None:
    for bad in (-1, VARINT_MAX + 1):
        with pytest.raises(ValueError, match="variable-length"):
            Writer().varint(bad)
    with pytest.raises(ValueError):
        Writer().u8(256)
    with pytest.raises(ValueError):
        Writer().u16(-1)


def test_maximum_length_opaque_header_is_read_and_its_absence_is_truncation() -> None:
    # a 2^30-1 length prefix with nothing behind it: the length is accepted,
    # the missing bytes are a truncation, not an allocation of a gigabyte
    with pytest.raises(DecodeError, match="truncated"):
        decode(bytes.fromhex("bfffffff") + b"x" * 10, Reader.opaque)


@pytest.mark.parametrize("data", ["", "40", "8000", "800040", "05aabb", "02ff"])
def test_truncated_data_is_a_decode_error(data: str) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode(bytes.fromhex(data), Reader.opaque)


def test_fixed_width_integers_are_big_endian_and_bounds_checked() -> None:
    w = Writer().u8(1).u16(0x0203).u32(0x04050607).u64(0x08090A0B0C0D0E0F)
    assert w.bytes().hex() == "01" "0203" "04050607" "08090a0b0c0d0e0f"
    r = Reader(w.bytes())
    assert (r.u8(), r.u16(), r.u32(), r.u64()) == (1, 0x0203, 0x04050607, 0x08090A0B0C0D0E0F)
    r.done()
    for n, read in ((0, Reader.u8), (1, Reader.u16), (3, Reader.u32), (7, Reader.u64)):
        with pytest.raises(DecodeError):
            read(Reader(b"\x00" * n))


def test_trailing_bytes_are_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        decode(b"\x01a!", Reader.opaque)
    r = Reader(b"\x00\x01")
    r.u8()
    assert r.remaining == 1
    with pytest.raises(DecodeError):
        r.done()


def test_vector_of_structs() -> None:
    # struct { uint16 a; opaque b<V>; } items<V>
    def write_item(w: Writer, item: tuple[int, bytes]) -> None:
        w.u16(item[0]).opaque(item[1])

    def read_item(r: Reader) -> tuple[int, bytes]:
        return r.u16(), r.opaque()

    items = [(1, b""), (0xBEEF, b"abc")]
    data = Writer().vector(items, write_item).bytes()
    # 2+1 + 2+1+3 = 9 bytes of items behind a one-byte header
    assert data.hex() == "09" "0001" "00" "beef" "03616263"
    assert decode(data, lambda r: r.vector(read_item)) == items
    assert decode(b"\x00", lambda r: r.vector(read_item)) == []


def test_an_item_may_not_run_past_its_vector() -> None:
    # the vector says 3 bytes; the item inside wants 4 (a uint32), and the
    # bytes after the vector must not be read as its tail
    data = bytes.fromhex("03" "000000" "01")
    with pytest.raises(DecodeError, match="truncated"):
        decode(data, lambda r: (r.vector(Reader.u32), r.u8()))
    # an item that leaves part of the vector unread does too: the last u16
    # of a 3-byte vector of u16s is cut
    with pytest.raises(DecodeError):
        decode(bytes.fromhex("03" "0001" "02"), lambda r: r.vector(Reader.u16))
    # a vector longer than the data
    with pytest.raises(DecodeError, match="truncated"):
        decode(bytes.fromhex("05" "0001"), lambda r: r.vector(Reader.u16))


def test_nested_vectors_and_what_follows_them() -> None:
    value = [[b"a", b"bc"], [], [b""]]
    data = Writer().vector(value, lambda w, inner: w.vector(inner, Writer.opaque)).u8(7).bytes()
    r = Reader(data)
    assert r.vector(lambda r2: r2.vector(Reader.opaque)) == value
    assert r.u8() == 7
    r.done()


def test_optional() -> None:
    assert Writer().optional(None, Writer.u16).bytes() == b"\x00"
    assert Writer().optional(0x1234, Writer.u16).bytes() == b"\x01\x12\x34"
    assert decode(b"\x00", lambda r: r.optional(Reader.u16)) is None
    assert decode(b"\x01\x12\x34", lambda r: r.optional(Reader.u16)) == 0x1234
    for presence in (2, 0xFF):
        with pytest.raises(DecodeError, match="presence"):
            decode(bytes([presence, 0x12, 0x34]), lambda r: r.optional(Reader.u16))


def test_fixed_and_raw() -> None:
    assert Writer().raw(b"abc").u8(0).bytes() == b"abc\x00"
    r = Reader(b"abcd")
    assert r.fixed(3) == b"abc"
    with pytest.raises(DecodeError):
        r.fixed(2)
    assert r.fixed(1) == b"d"


def test_reprs_show_no_content() -> None:
    secret = b"\x42" * 32
    assert "42" not in repr(Reader(secret)) and "B" not in repr(Reader(secret))
    assert "42" not in repr(Writer().raw(secret))


@given(st.integers(min_value=0, max_value=VARINT_MAX))
def test_varint_round_trip_and_length(v: int) -> None:
    data = Writer().varint(v).bytes()
    assert len(data) == (1 if v < 64 else 2 if v < 16384 else 4)
    assert decode(data, Reader.varint) == v


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_vector_of_opaques_round_trip(values: list[bytes]) -> None:
    assert decode(encode(values, lambda w, vs: w.vector(vs, Writer.opaque)),
                  lambda r: r.vector(Reader.opaque)) == values
