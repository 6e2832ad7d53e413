"""MLS-TLS message codecs (wire/mls_tls.py, docs/mls-tls.md §1-§2).

The bytes are built here from the wrapper's definition (a 4-byte handshake
header of type mls_tls, a uint8 MLSTLSMessageType, then an MLSMessage or a
uint64), not from the encoder, and malformed input ends in DecodeError.
"""

from __future__ import annotations

import pytest

from helpers.pair import configs
from longtls.connection import Connection
from longtls.constants import AlertDescription, ContentType, HandshakeType, MLSTLSMessageType
from longtls.errors import DecodeError, RemoteProtocolError
from longtls.record.tls import plaintext_record
from longtls.wire.mls_tls import (
    FirstFlight,
    MLSTLSClientHello,
    MLSTLSConnectionUpdate,
    MLSTLSEpochKeyUpdate,
    MLSTLSMessage,
    MLSTLSResumptionRequest,
    MLSTLSResumptionResponse,
    MLSTLSServerHello,
    decode_mls_tls_body,
    decode_mls_tls_handshake,
    encode_mls_tls,
    sniff_first_flight,
)

# An MLSMessage-shaped payload: version mls10 (1), wire_format mls_key_package (5), a body.
KEY_PACKAGE = bytes.fromhex("00010005") + b"kp" * 40
WELCOME = bytes.fromhex("00010003") + b"w" * 300
COMMIT = bytes.fromhex("00010001") + b"c" * 120


def handshake(msg_type: int, payload: bytes) -> bytes:
    body = bytes((msg_type,)) + payload
    return bytes((242,)) + len(body).to_bytes(3, "big") + body


MESSAGES: list[tuple[MLSTLSMessage, bytes]] = [
    (MLSTLSClientHello(KEY_PACKAGE), handshake(1, KEY_PACKAGE)),
    (MLSTLSServerHello(WELCOME), handshake(2, WELCOME)),
    (MLSTLSConnectionUpdate(COMMIT), handshake(3, COMMIT)),
    (MLSTLSEpochKeyUpdate(0x0102030405060708), handshake(4, bytes.fromhex("0102030405060708"))),
    (MLSTLSResumptionRequest(COMMIT), handshake(5, COMMIT)),
    (MLSTLSResumptionResponse(COMMIT), handshake(6, COMMIT)),
]


def test_code_points_are_the_documented_ones() -> None:
    assert HandshakeType.mls_tls == 242
    assert 224 <= HandshakeType.mls_tls <= 255  # RFC 8446 §11: private use
    assert [int(t) for t in MLSTLSMessageType] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("message", "wire"), MESSAGES, ids=lambda v: type(v).__name__)
def test_encoding_and_decoding(message: MLSTLSMessage, wire: bytes) -> None:
    assert encode_mls_tls(message) == wire
    assert decode_mls_tls_handshake(wire) == message
    assert decode_mls_tls_body(wire[4:]) == message


def test_epoch_key_update_extremes() -> None:
    for epoch in (0, 1, 2**64 - 1):
        wire = encode_mls_tls(MLSTLSEpochKeyUpdate(epoch))
        assert wire == bytes((242, 0, 0, 9, 4)) + epoch.to_bytes(8, "big")
        assert decode_mls_tls_handshake(wire) == MLSTLSEpochKeyUpdate(epoch)
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            encode_mls_tls(MLSTLSEpochKeyUpdate(bad))


def test_encoder_refuses_what_cannot_be_an_mls_message() -> None:
    with pytest.raises(ValueError):
        encode_mls_tls(MLSTLSConnectionUpdate(b"\x00\x01\x00"))


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no msg_type
        bytes((0,)) + COMMIT,  # msg_type 0 is not defined
        bytes((7,)) + COMMIT,
        bytes((255,)) + COMMIT,
        bytes((4,)) + bytes(7),  # EpochKeyUpdate: truncated uint64
        bytes((4,)) + bytes(9),  # EpochKeyUpdate: trailing byte
        bytes((1,)),  # ClientHello without its MLSMessage
        bytes((2,)) + b"\x00\x01\x00",  # too short for version and wire_format
        bytes((3,)) + b"\x00",
    ],
)
def test_malformed_bodies_are_decode_errors(body: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_mls_tls_body(body)
    assert info.value.alert is AlertDescription.decode_error


def test_malformed_handshake_framing_is_a_decode_error() -> None:
    wire = encode_mls_tls(MLSTLSEpochKeyUpdate(5))
    for bad in (
        bytes((HandshakeType.key_update,)) + wire[1:],  # not the mls_tls type
        wire[:-1],  # the header's length runs past the end
        wire + b"\x00",  # a byte after the message
        wire[:3],  # truncated header
    ):
        with pytest.raises(DecodeError):
            decode_mls_tls_handshake(bad)


def test_reprs_do_not_show_mls_messages() -> None:
    secret_looking = bytes.fromhex("00010001") + b"SECRET" * 4
    for message in (MLSTLSClientHello(secret_looking), MLSTLSServerHello(secret_looking),
                    MLSTLSConnectionUpdate(secret_looking), MLSTLSResumptionRequest(secret_looking),
                    MLSTLSResumptionResponse(secret_looking)):
        assert "SECRET" not in repr(message) and "28 bytes" in repr(message)


# -- telling MLS-TLS from TLS by the first bytes (docs/mls-tls.md §2) ------------


def test_first_flight_of_tls_and_mls_tls() -> None:
    client, _, _ = configs()
    tls = Connection(client)
    tls.start_handshake()
    assert sniff_first_flight(tls.data_to_send()) is FirstFlight.TLS
    mls = plaintext_record(ContentType.HANDSHAKE, encode_mls_tls(MLSTLSClientHello(KEY_PACKAGE)), 0x0301)
    assert sniff_first_flight(mls) is FirstFlight.MLS_TLS
    # Six bytes decide; fewer may not.
    assert sniff_first_flight(mls[:6]) is FirstFlight.MLS_TLS
    for n in range(6):
        assert sniff_first_flight(mls[:n]) is None
    assert sniff_first_flight(b"GET / HTTP/1.1\r\n") is FirstFlight.OTHER
    assert sniff_first_flight(b"\x16\x02") is FirstFlight.OTHER  # not a 0x03xx version
    assert sniff_first_flight(plaintext_record(ContentType.HANDSHAKE, b"\x02\x00\x00\x00")) is FirstFlight.OTHER


def test_a_tls_only_server_answers_an_mls_tls_client_hello_with_unexpected_message() -> None:
    # What an MLS-TLS initiator sees from a TLS-only longtls server (docs §2).
    _, server_cfg, _ = configs()
    server = Connection(server_cfg)
    first = plaintext_record(ContentType.HANDSHAKE, encode_mls_tls(MLSTLSClientHello(KEY_PACKAGE)), 0x0301)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(first)
    assert info.value.alert is AlertDescription.unexpected_message
    # A plaintext fatal alert record: level 2, unexpected_message (10).
    assert server.data_to_send() == plaintext_record(ContentType.ALERT, bytes((2, 10)))
