"""Property-based tests (hypothesis) for every codec longtls has.

For each handshake message, each extension_data codec, the Extended Key
Update messages of all three profiles and the record layer:

* **round trip**: any valid value encodes, and decoding the encoding gives the
  value back (and, where the encoding is canonical, encoding what was decoded
  gives the same bytes);
* **hostile bytes**: arbitrary bytes -- random ones, and valid encodings with
  bytes changed, inserted, cut or appended -- decode to a value or raise the
  library's decode error (``DecodeError`` or another ``RemoteProtocolError``
  carrying the alert the spec names).  Any other exception fails the test.

tests/unit/test_wire.py has the RFC 8448 vectors and a first set of
properties; this file covers every codec one by one, the EKU messages and the
record layer, and stays under ~15 s (``max_examples=200``, no deadline).
The coverage-guided fuzzer (tests/fuzz/) drives the same code through live
connections.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.pair import configs
from helpers.tamper import split_records
from longtls.connection import Connection
from longtls.constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    MAX_CIPHERTEXT_EXPANSION,
    MAX_PLAINTEXT,
    AlertDescription,
    CipherSuite,
    ContentType,
    ExtensionType,
)
from longtls.crypto.suites import SUITES, suite_info
from longtls.errors import DecodeError, RemoteProtocolError, TLSError
from longtls.events import ConnectionClosed
from longtls.handshake.eku_profiles import PROFILES
from longtls.record.arrival import RECORD_TYPES
from longtls.record.tls import (
    HEADER_LENGTH,
    TAG_LENGTH,
    RecordProtection,
    RecordReader,
    plaintext_record,
)
from longtls.wire import extensions as wx
from longtls.wire.eku import (
    EKUCodec,
    EKUMessage,
    EKUWireFormat,
    ExtendedKeyUpdateResponseD05,
    Status,
)
from longtls.wire.messages import (
    Certificate,
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    CompressedCertificate,
    EncryptedExtensions,
    EndOfEarlyData,
    Extension,
    Finished,
    HandshakeReassembler,
    KeyShareEntry,
    KeyUpdate,
    NewSessionTicket,
    OfferedPsks,
    PskIdentity,
    ServerHello,
    decode_message,
    encode_handshake,
    encode_message,
)

PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------------------
# Strategies for valid values
# ---------------------------------------------------------------------------

u8s = st.integers(0, 0xFF)
u16s = st.integers(0, 0xFFFF)
u32s = st.integers(0, 0xFFFFFFFF)
key_share_entries = st.builds(KeyShareEntry, u16s, st.binary(min_size=1, max_size=120))
host_names = st.text(
    alphabet=string.ascii_letters + string.digits + ".-", min_size=1, max_size=60
)


@st.composite
def offered_psks(draw: st.DrawFn) -> OfferedPsks:
    identities = draw(
        st.lists(st.builds(PskIdentity, st.binary(min_size=1, max_size=60), u32s), min_size=1, max_size=4)
    )
    binders = [draw(st.binary(min_size=32, max_size=255)) for _ in identities]
    return OfferedPsks(tuple(identities), tuple(binders))


@dataclass(frozen=True)
class Codec:
    """One extension_data codec: a strategy for its values, encode, decode."""

    name: str
    values: st.SearchStrategy[Any]
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    #: Whether every accepted encoding is the one encode() produces.
    canonical: bool = True


EXTENSION_CODECS = [
    # server_name skips unknown NameTypes (RFC 6066 §3), so it is not canonical.
    Codec("server_name", st.one_of(st.none(), host_names), wx.encode_server_name,
          wx.decode_server_name, canonical=False),
    Codec("supported_groups", st.lists(u16s, min_size=1, max_size=60).map(tuple),
          wx.encode_supported_groups, wx.decode_supported_groups),
    Codec("signature_algorithms", st.lists(u16s, min_size=1, max_size=60).map(tuple),
          wx.encode_signature_algorithms, wx.decode_signature_algorithms),
    Codec("signature_algorithms_cert", st.lists(u16s, min_size=1, max_size=60).map(tuple),
          wx.encode_signature_algorithms_cert, wx.decode_signature_algorithms_cert),
    Codec("alpn", st.lists(st.binary(min_size=1, max_size=255), min_size=1, max_size=6).map(tuple),
          wx.encode_alpn, wx.decode_alpn),
    Codec("supported_versions_client", st.lists(u16s, min_size=1, max_size=127).map(tuple),
          wx.encode_supported_versions_client, wx.decode_supported_versions_client),
    Codec("supported_versions_server", u16s, wx.encode_supported_versions_server,
          wx.decode_supported_versions_server),
    Codec("key_share_client", st.lists(key_share_entries, max_size=5).map(tuple),
          wx.encode_key_share_client, wx.decode_key_share_client),
    Codec("key_share_server", key_share_entries, wx.encode_key_share_server,
          wx.decode_key_share_server),
    Codec("key_share_hrr", u16s, wx.encode_key_share_hrr, wx.decode_key_share_hrr),
    Codec("cookie", st.binary(min_size=1, max_size=400), wx.encode_cookie, wx.decode_cookie),
    Codec("psk_key_exchange_modes", st.lists(u8s, min_size=1, max_size=255).map(tuple),
          wx.encode_psk_key_exchange_modes, wx.decode_psk_key_exchange_modes),
    Codec("pre_shared_key_client", offered_psks(), wx.encode_pre_shared_key_client,
          wx.decode_pre_shared_key_client),
    Codec("pre_shared_key_server", u16s, wx.encode_pre_shared_key_server,
          wx.decode_pre_shared_key_server),
    Codec("early_data", st.none(), lambda _: wx.encode_early_data(), wx.decode_early_data),
    Codec("early_data_nst", u32s, wx.encode_early_data_nst, wx.decode_early_data_nst),
    Codec("record_size_limit", st.integers(wx.RECORD_SIZE_LIMIT_MIN, 0xFFFF),
          wx.encode_record_size_limit, wx.decode_record_size_limit),
    Codec("post_handshake_auth", st.none(), lambda _: wx.encode_post_handshake_auth(),
          wx.decode_post_handshake_auth),
    Codec("certificate_authorities",
          st.lists(st.binary(min_size=1, max_size=120), min_size=1, max_size=5).map(tuple),
          wx.encode_certificate_authorities, wx.decode_certificate_authorities),
    Codec("compress_certificate", st.lists(u16s, min_size=1, max_size=127).map(tuple),
          wx.encode_compress_certificate, wx.decode_compress_certificate),
    Codec("tls_flags", st.frozensets(st.integers(0, wx.TLS_FLAGS_MAX_BIT), min_size=1, max_size=12),
          wx.encode_tls_flags, wx.decode_tls_flags),
]


def test_every_extension_codec_is_covered() -> None:
    """A new encode_/decode_ pair in longtls.wire.extensions needs a Codec here."""
    decoders = {name for name in wx.__all__ if name.startswith("decode_")}
    covered = {codec.decode.__name__ for codec in EXTENSION_CODECS}
    # decode_alpn and decode_signature_algorithms_cert are aliases of covered functions.
    aliases = {"decode_alpn", "decode_signature_algorithms_cert"}
    assert decoders - aliases <= covered | aliases, sorted(decoders - covered - aliases)


# A valid extension block: real extension_data for known types, random bytes
# for unknown ones (which the codec carries as opaque).
def typed_extension() -> st.SearchStrategy[Extension]:
    by_name = {codec.name: codec for codec in EXTENSION_CODECS}
    typed = {
        ExtensionType.server_name: by_name["server_name"],
        ExtensionType.supported_groups: by_name["supported_groups"],
        ExtensionType.signature_algorithms: by_name["signature_algorithms"],
        ExtensionType.application_layer_protocol_negotiation: by_name["alpn"],
        ExtensionType.supported_versions: by_name["supported_versions_client"],
        ExtensionType.key_share: by_name["key_share_client"],
        ExtensionType.cookie: by_name["cookie"],
        ExtensionType.psk_key_exchange_modes: by_name["psk_key_exchange_modes"],
        ExtensionType.record_size_limit: by_name["record_size_limit"],
    }
    options = [
        codec.values.map(lambda v, c=codec, t=ext_type: Extension(t, c.encode(v)))
        for ext_type, codec in typed.items()
    ]
    options.append(st.builds(Extension, u16s, st.binary(max_size=40)))
    return st.one_of(options)


extension_blocks = st.lists(typed_extension(), max_size=6).map(tuple)


def hello_extensions(minimum: int) -> st.SearchStrategy[tuple[Extension, ...]]:
    """Blocks meeting a hello's <minimum..> length (or absent); pre_shared_key last."""
    psk_last = st.tuples(extension_blocks, st.booleans(), offered_psks()).map(
        lambda t: t[0] + ((Extension(ExtensionType.pre_shared_key,
                                     wx.encode_pre_shared_key_client(t[2])),) if t[1] else ())
    )
    return psk_last.map(
        lambda exts: tuple(e for e in exts[:-1] if e.type != ExtensionType.pre_shared_key) + exts[-1:]
    ).filter(lambda exts: not exts or sum(4 + len(e.data) for e in exts) >= minimum)


MESSAGES: dict[str, tuple[type[Any], st.SearchStrategy[Any]]] = {
    "ClientHello": (ClientHello, st.builds(
        ClientHello, st.binary(min_size=32, max_size=32), st.binary(max_size=32),
        st.lists(u16s, min_size=1, max_size=30).map(tuple), hello_extensions(7),
        st.binary(min_size=1, max_size=4), u16s,
    )),
    "ServerHello": (ServerHello, st.builds(
        ServerHello, st.one_of(st.just(HELLO_RETRY_REQUEST_RANDOM), st.binary(min_size=32, max_size=32)),
        st.binary(max_size=32), u16s, hello_extensions(6), u8s, u16s,
    )),
    "EncryptedExtensions": (EncryptedExtensions, st.builds(EncryptedExtensions, extension_blocks)),
    "CertificateRequest": (CertificateRequest, st.builds(
        CertificateRequest, st.binary(max_size=255), extension_blocks
    )),
    "CertificateEntry": (CertificateEntry, st.builds(
        CertificateEntry, st.binary(min_size=1, max_size=400), extension_blocks
    )),
    "Certificate": (Certificate, st.builds(
        Certificate, st.binary(max_size=255),
        st.lists(st.builds(CertificateEntry, st.binary(min_size=1, max_size=400), extension_blocks),
                 max_size=5).map(tuple),
    )),
    "CompressedCertificate": (CompressedCertificate, st.builds(
        CompressedCertificate, u16s, st.integers(0, 0xFFFFFF), st.binary(min_size=1, max_size=400)
    )),
    "CertificateVerify": (CertificateVerify, st.builds(CertificateVerify, u16s, st.binary(max_size=600))),
    "Finished": (Finished, st.builds(Finished, st.binary(max_size=64))),
    "EndOfEarlyData": (EndOfEarlyData, st.just(EndOfEarlyData())),
    "NewSessionTicket": (NewSessionTicket, st.builds(
        NewSessionTicket, u32s, u32s, st.binary(max_size=255), st.binary(min_size=1, max_size=400),
        extension_blocks,
    )),
    "KeyUpdate": (KeyUpdate, st.builds(KeyUpdate, st.integers(0, 1))),
}


def test_every_handshake_message_is_covered() -> None:
    from longtls.wire import messages

    codecs = {
        name for name in messages.__all__
        if isinstance(getattr(messages, name), type) and hasattr(getattr(messages, name), "decode")
        and name not in ("HandshakeReassembler",)
    }
    assert codecs <= set(MESSAGES), sorted(codecs - set(MESSAGES))


# ---------------------------------------------------------------------------
# Hostile bytes: random, or a valid encoding with a few edits
# ---------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """Random bytes, or a valid encoding with bytes changed/inserted/cut/appended."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:  # change a byte (length fields are where the bugs are)
            i = min(pos, len(data) - 1)
            data[i] = draw(st.one_of(u8s, st.sampled_from([0, 1, 0x7F, 0x80, 0xFF])))
        elif op == 1:  # insert bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:  # cut the tail
            del data[pos:]
        elif op == 3 and data:  # delete a few bytes
            del data[pos : pos + draw(st.integers(1, 4))]
        else:  # append
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def check_tls_error(exc: RemoteProtocolError) -> None:
    """What a decode failure promises: an alert, and no internal error."""
    assert isinstance(exc.alert, AlertDescription)
    assert exc.alert != AlertDescription.internal_error, exc
    if isinstance(exc, DecodeError):
        assert exc.alert == AlertDescription.decode_error


# ---------------------------------------------------------------------------
# Extension codecs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("codec", EXTENSION_CODECS, ids=lambda c: c.name)
@PROPERTY
@given(data=st.data())
def test_extension_round_trip(codec: Codec, data: st.DataObject) -> None:
    value = data.draw(codec.values)
    encoded = codec.encode(value)
    assert codec.decode(encoded) == value
    assert codec.encode(codec.decode(encoded)) == encoded


@pytest.mark.parametrize("codec", EXTENSION_CODECS, ids=lambda c: c.name)
@PROPERTY
@given(data=st.data())
def test_extension_decoder_on_hostile_bytes(codec: Codec, data: st.DataObject) -> None:
    raw = data.draw(mutated(codec.values.map(codec.encode)))
    try:
        value = codec.decode(raw)
    except RemoteProtocolError as exc:
        check_tls_error(exc)
        return
    # Accepted: it means something encodable, and means the same once re-encoded.
    again = codec.encode(value)
    assert codec.decode(again) == value
    if codec.canonical:
        assert again == raw


# ---------------------------------------------------------------------------
# Handshake messages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MESSAGES))
@PROPERTY
@given(data=st.data())
def test_message_round_trip(name: str, data: st.DataObject) -> None:
    cls, values = MESSAGES[name]
    msg = data.draw(values)
    body = msg.encode()
    assert cls.decode(body) == msg
    if name != "CertificateEntry":  # an entry is not a message of its own
        raw = encode_message(msg)
        assert raw[0] == cls.msg_type and int.from_bytes(raw[1:4], "big") == len(body)
        assert decode_message(raw[0], raw[4:]) == msg


@pytest.mark.parametrize("name", list(MESSAGES))
@PROPERTY
@given(data=st.data())
def test_message_decoder_on_hostile_bytes(name: str, data: st.DataObject) -> None:
    cls, values = MESSAGES[name]
    body = data.draw(mutated(values.map(lambda m: m.encode())))
    try:
        msg = cls.decode(body)
    except RemoteProtocolError as exc:
        check_tls_error(exc)
        return
    assert msg.encode() == body  # every accepted body is canonical


@PROPERTY
@given(u8s, st.binary(max_size=200))
def test_decode_message_any_type(msg_type: int, body: bytes) -> None:
    try:
        msg = decode_message(msg_type, body)
    except RemoteProtocolError as exc:
        check_tls_error(exc)
        return
    assert msg.msg_type == msg_type


# ---------------------------------------------------------------------------
# Extended Key Update messages, all three profiles
# ---------------------------------------------------------------------------


def eku_messages(codec: EKUCodec) -> st.SearchStrategy[EKUMessage]:
    share = st.tuples(u16s, st.binary(min_size=1, max_size=1300))
    options: list[st.SearchStrategy[EKUMessage]] = [
        share.map(lambda s: codec.request(s[0], s[1])),
        share.map(lambda s: codec.response(s[0], s[1])),
        st.just(codec.finish()),
    ]
    if codec.format is EKUWireFormat.SEPARATE_TYPES:  # draft-05: a status in the response
        options += [
            u8s.map(lambda d: ExtendedKeyUpdateResponseD05(Status.retry, delay=d)),
            st.just(ExtendedKeyUpdateResponseD05(Status.rejected)),
            st.just(ExtendedKeyUpdateResponseD05(Status.clashed)),
        ]
    return st.one_of(options)


@pytest.mark.parametrize("profile", list(PROFILES))
@PROPERTY
@given(data=st.data())
def test_eku_round_trip(profile: str, data: st.DataObject) -> None:
    codec = PROFILES[profile].codec
    msg = data.draw(eku_messages(codec))
    raw = msg.encode()
    assert raw[0] in codec.message_types
    assert int.from_bytes(raw[1:4], "big") == len(raw) - 4
    assert codec.decode(raw[0], raw[4:]) == msg


@pytest.mark.parametrize("profile", list(PROFILES))
@PROPERTY
@given(data=st.data())
def test_eku_decoder_on_hostile_bytes(profile: str, data: st.DataObject) -> None:
    codec = PROFILES[profile].codec
    raw = data.draw(mutated(eku_messages(codec).map(lambda m: m.encode())))
    if len(raw) < 4:
        return
    msg_type = raw[0] if data.draw(st.booleans()) else data.draw(st.sampled_from(sorted(codec.message_types)))
    body = raw[4:]
    try:
        msg = codec.decode(msg_type, body)
    except RemoteProtocolError as exc:
        check_tls_error(exc)
        return
    again = msg.encode()
    assert codec.decode(again[0], again[4:]) == msg
    if msg_type in codec.message_types:
        assert again[4:] == body, "an accepted EKU body re-encodes to itself"


# ---------------------------------------------------------------------------
# Handshake framing and the reassembler
# ---------------------------------------------------------------------------


@PROPERTY
@given(
    st.lists(st.tuples(u8s, st.binary(max_size=300)), min_size=1, max_size=8),
    st.lists(st.integers(1, 3000), max_size=30),
)
def test_reassembler_any_fragmentation(messages: list[tuple[int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(encode_handshake(t, b) for t, b in messages)
    points = sorted({c % len(stream) for c in cuts if c % len(stream)})
    reassembler = HandshakeReassembler()
    out: list[tuple[int, bytes]] = []
    for start, end in zip([0, *points], [*points, len(stream)], strict=True):
        reassembler.feed(stream[start:end])
        while (item := reassembler.pop()) is not None:
            msg_type, body, raw = item
            assert raw == encode_handshake(msg_type, body)
            out.append((msg_type, bytes(body)))
    assert out == messages
    assert not reassembler.has_partial() and not reassembler.has_complete()


@PROPERTY
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=20), st.integers(4, 1 << 17))
def test_reassembler_on_hostile_bytes(chunks: list[bytes], limit: int) -> None:
    reassembler = HandshakeReassembler(limit)
    try:
        for chunk in chunks:
            reassembler.feed(chunk)
            while (item := reassembler.pop()) is not None:
                assert len(item[1]) <= limit
    except RemoteProtocolError as exc:
        assert exc.alert == AlertDescription.illegal_parameter  # message over the limit


# ---------------------------------------------------------------------------
# Record layer
# ---------------------------------------------------------------------------

record_types = st.sampled_from(list(ContentType))
plain_records = st.tuples(record_types, st.binary(max_size=MAX_PLAINTEXT), u16s)


# What RecordReader frames: the four TLS content types (RFC 9846 §5), any
# legacy_record_version whose first byte is 3 (the rest of it is ignored, §5.1).
tls_record_types = st.sampled_from(sorted(RECORD_TYPES))
tls_versions = st.integers(0, 0xFF).map(lambda minor: 0x0300 | minor)


@PROPERTY
@given(st.lists(st.tuples(tls_record_types, st.binary(max_size=2000), tls_versions), min_size=1, max_size=6),
       st.lists(st.integers(1, 20000), max_size=10))
def test_record_framing_round_trip(records: list[tuple[int, bytes, int]], cuts: list[int]) -> None:
    stream = b"".join(plaintext_record(t, f, v) for t, f, v in records)
    points = sorted({c % len(stream) for c in cuts if c % len(stream)})
    reader = RecordReader()
    out = []
    for start, end in zip([0, *points], [*points, len(stream)], strict=True):
        reader.feed(stream[start:end])
        while (item := reader.pop()) is not None:
            out.append(item)
    assert [(t, f) for t, _h, f in out] == [(t, f) for t, f, _v in records]
    assert [int.from_bytes(h[1:3], "big") for _t, h, _f in out] == [v for _t, _f, v in records]
    assert reader.buffered == 0


@PROPERTY
@given(st.lists(st.binary(max_size=400), max_size=10))
def test_record_reader_on_hostile_bytes(chunks: list[bytes]) -> None:
    reader = RecordReader()
    fed = consumed = 0
    try:
        for chunk in chunks:
            reader.feed(chunk)
            fed += len(chunk)
            while (item := reader.pop()) is not None:
                _t, header, fragment = item
                assert len(fragment) <= MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION
                consumed += len(header) + len(fragment)
    except RemoteProtocolError as exc:
        # §5: unknown type; Appendix E.5: a version below 0x0300; §5.1/§5.2: too long.
        assert exc.alert in (
            AlertDescription.unexpected_message, AlertDescription.protocol_version,
            AlertDescription.record_overflow,
        )
        return
    assert consumed + reader.buffered == fed


@PROPERTY
@given(u8s, u8s, u16s)
def test_record_header_alone_is_judged(content_type: int, major: int, length: int) -> None:
    """The 5 header bytes alone decide: a record the reader will frame waits
    for its body; any other header raises at once (RFC 9846 §5, §5.1, §5.2)."""
    reader = RecordReader()
    reader.feed(bytes((content_type, major, 3)) + length.to_bytes(2, "big"))
    limit = MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION if content_type == ContentType.APPLICATION_DATA else MAX_PLAINTEXT
    acceptable = content_type in RECORD_TYPES and major == 3 and length <= limit
    try:
        item = reader.pop()
    except RemoteProtocolError:
        assert not acceptable
        return
    assert acceptable
    assert (item is None) == (length > 0)
    assert reader.buffered < HEADER_LENGTH + MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION


@PROPERTY
@given(
    st.sampled_from(list(SUITES)),
    st.binary(min_size=48, max_size=48),
    st.lists(st.tuples(st.sampled_from([ContentType.HANDSHAKE, ContentType.ALERT,
                                        ContentType.APPLICATION_DATA]),
                       st.binary(max_size=3000), st.integers(0, 300)), min_size=1, max_size=5),
)
def test_record_protection_round_trip(
    suite: CipherSuite, secret_material: bytes, records: list[tuple[ContentType, bytes, int]]
) -> None:
    info = suite_info(suite)
    secret = secret_material[: info.hash_length]
    sender, receiver = RecordProtection(info, secret), RecordProtection(info, secret)
    for content_type, content, padding in records:
        record = sender.seal(content_type, content, padding)
        assert record[0] == ContentType.APPLICATION_DATA and record[1:3] == b"\x03\x03"
        # The suite's tag: 16 bytes, 8 for TLS_AES_128_CCM_8_SHA256 (RFC 6655).
        tag = 8 if suite == CipherSuite.TLS_AES_128_CCM_8_SHA256 else TAG_LENGTH
        assert len(record) == HEADER_LENGTH + len(content) + 1 + padding + tag
        assert int.from_bytes(record[3:5], "big") == len(record) - HEADER_LENGTH
        # Trailing zeros of the content survive: the type byte is non-zero.
        assert receiver.open(record[:HEADER_LENGTH], record[HEADER_LENGTH:]) == (content_type, content)
    assert sender.sequence_number == receiver.sequence_number == len(records)


@PROPERTY
@given(st.sampled_from(list(SUITES)), st.binary(max_size=400), st.binary(min_size=5, max_size=5),
       st.integers(0, 2**40))
def test_record_protection_open_on_hostile_bytes(
    suite: CipherSuite, fragment: bytes, header: bytes, sequence: int
) -> None:
    info = suite_info(suite)
    protection = RecordProtection(info, bytes(info.hash_length))
    protection.sequence_number = sequence
    with pytest.raises(RemoteProtocolError) as info_exc:
        protection.open(header, fragment)
    assert info_exc.value.alert == AlertDescription.bad_record_mac


@PROPERTY
@given(st.binary(min_size=1, max_size=200), st.integers(0, 2000), st.data())
def test_record_protection_detects_any_change(content: bytes, index: int, data: st.DataObject) -> None:
    info = suite_info(CipherSuite.TLS_AES_128_GCM_SHA256)
    record = RecordProtection(info, bytes(32)).seal(ContentType.APPLICATION_DATA, content)
    tampered = bytearray(record)
    i = index % len(record)
    if i in (3, 4):  # the length field: the reader frames by it, not the AEAD
        return
    tampered[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RemoteProtocolError) as exc:
        RecordProtection(info, bytes(32)).open(bytes(tampered[:5]), bytes(tampered[5:]))
    assert exc.value.alert == AlertDescription.bad_record_mac


# ---------------------------------------------------------------------------
# The whole receive path: a Connection fed hostile bytes
# ---------------------------------------------------------------------------

_CLIENT_CFG, _SERVER_CFG, _ = configs()


def _client_hello() -> bytes:
    client = Connection(_CLIENT_CFG)
    client.start_handshake()
    return client.data_to_send()


_CLIENT_HELLO = _client_hello()


def feed_hostile(conn: Connection, data: bytes, chunk: int) -> None:
    """Feed ``data`` in pieces; only a ProtocolError may come out, and it closes."""
    try:
        for i in range(0, len(data), chunk):
            conn.receive_data(data[i : i + chunk])
    except RemoteProtocolError as exc:
        # A stray Python exception inside the core comes out as internal_error
        # with the original exception as its cause: that is a bug.
        assert exc.alert != AlertDescription.internal_error or not (
            exc.__cause__ is not None and not isinstance(exc.__cause__, TLSError)
        ), f"internal error: {exc.__cause__!r}"
        assert conn.is_closed
        closed = [e for e in conn.events() if isinstance(e, ConnectionClosed)]
        assert len(closed) == 1 and closed[0].alert == exc.alert and not closed[0].by_peer
        # The fatal alert is the last record queued: in the clear, or sealed.
        last = split_records(conn.data_to_send())[-1]
        if last.type == ContentType.ALERT:
            assert last.fragment == bytes((2, exc.alert))
        else:
            assert last.type == ContentType.APPLICATION_DATA
        conn.receive_data(data)  # a closed connection ignores input
        assert not conn.data_to_send() and not conn.events()


@PROPERTY
@given(mutated(st.just(_CLIENT_HELLO)), st.integers(1, 600))
def test_server_on_hostile_first_flight(data: bytes, chunk: int) -> None:
    feed_hostile(Connection(_SERVER_CFG), data, chunk)


@PROPERTY
@given(st.binary(max_size=400), st.integers(1, 600))
def test_client_on_hostile_server_bytes(data: bytes, chunk: int) -> None:
    client = Connection(_CLIENT_CFG)
    client.start_handshake()
    client.data_to_send()
    feed_hostile(client, data, chunk)
