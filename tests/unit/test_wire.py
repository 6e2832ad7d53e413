"""Unit tests for longtls.wire.messages and longtls.wire.extensions.

The byte strings below are copied from RFC 8448 ("Example Handshake Traces
for TLS 1.3", ../shared/specs/rfc8448-tls13-vectors.txt): each is a whole
handshake message (4-byte header + body) as printed under "construct a ...
handshake message" (or the "send handshake record" payload, for the resumed
ClientHello whose binders are filled in there).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longtls.constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    AlertDescription,
    CipherSuite,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    SignatureScheme,
)
from longtls.errors import DecodeError, RemoteProtocolError
from longtls.wire import extensions as wx
from longtls.wire.messages import (
    Certificate,
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
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
    extensions_by_type,
)

# ---------------------------------------------------------------------------
# RFC 8448 vectors (whole handshake messages, header included)
# ---------------------------------------------------------------------------

# §3 Simple 1-RTT Handshake
S3_CLIENT_HELLO = bytes.fromhex(
    "010000c003036660261ff947cea49cce6cfad687f457cf1b14531ba14131a0e8f309a1d0b9c40000"
    "06130113031302010000910000000b0009000006736572766572ff01000100000a00140012001d00"
    "17001800190100010101020103010400230000003300260024001d00204cfdfcd178b784bf328cae"
    "793b136f2aedce005ff183d7bb1495207236647037002b0003020304000d0020001e040305030603"
    "020308040805080604010501060102010402050206020202002d00020101001c00024001"
)
S3_SERVER_HELLO = bytes.fromhex(
    "0200005603031274991495cf425857262dde2299342c315afba9b64a87d552515614e01b045d0013"
    "0100002e00330024001d0020c7bb6bdfc26350b929a08a41a76ddac210b096868d960c4845987dc3"
    "a7fa650a002b00020304"
)
S3_ENCRYPTED_EXTENSIONS = bytes.fromhex(
    "080000240022000a00140012001d00170018001901000101010201030104001c0002400100000000"
)
S3_CERTIFICATE = bytes.fromhex(
    "0b0001b9000001b50001b0308201ac30820115a003020102020102300d06092a864886f70d01010b"
    "0500300e310c300a06035504031303727361301e170d3136303733303031323335395a170d323630"
    "3733303031323335395a300e310c300a0603550403130372736130819f300d06092a864886f70d01"
    "0101050003818d0030818902818100b4bb498f8279303d980836399b36c6988c0c68de55e1bdb826"
    "d3901a2461eafd2de49a91d015abbc9a95137ace6c1af19eaa6af98c7ced43120998e187a80ee0cc"
    "b0524b1b018c3e0b63264d449a6d38e22a5fda430846748030530ef0461c8ca9d9efbfae8ea6d1d0"
    "3e2bd193eff0ab9a8002c47428a6d35a8d88d79f7f1e3f0203010001a31a301830090603551d1304"
    "023000300b0603551d0f0404030205a0300d06092a864886f70d01010b05000381810085aad2a0e5"
    "b9276b908c65f73a7267170618a54c5f8a7b337d2df7a594365417f2eae8f8a58c8f8172f9319cf3"
    "6b7fd6c55b80f21a03015156726096fd335e5e67f2dbf102702e608ccae6bec1fc63a42a99be5c3e"
    "b7107c3c54e9b9eb2bd5203b1c3b84e0a8b2f759409ba3eac9d91d402dcc0cc8f8961229ac9187b4"
    "2b4de10000"
)
S3_CERTIFICATE_VERIFY = bytes.fromhex(
    "0f00008408040080ace0af8e87d7c63cc9dbe7dcc12ff83bd55df0ccda9bf4e5a0f70100d9bc4d25"
    "aa684fd9d347642c942222526e163e3b0fba312b10e9b67eb0ac9c2be5fef490f81d7827e3bc12fa"
    "027ab439e71cc8459c14b94a8f3506ec44547d6c23e19cc7f9d5e0d1f595108fc240f5b0842c485a"
    "321487c4950377a52e917294715567cd"
)
S3_SERVER_FINISHED = bytes.fromhex(
    "140000204c92b1b256d861a1830167827d3e288d1a76f03484e9ec886d4ff66149cbec2f"
)
S3_NEW_SESSION_TICKET = bytes.fromhex(
    "040000c90000001e933d093202000000b2f35edae4e60404d6f40fa17f000000008393d163fb4f5f"
    "105fe2056caeb32ac7007070045931026db07d58dd58090d629af59ecb7fba353d5d9653a708fbcf"
    "0f515c1b82db6b08977179dfc684d22fcf7bd5c12222ab63ffd9d2bc46176d144ae98ad934168948"
    "22ac5064065f92995a6f052fa3a731703657817ea7a8de73148661768f7f62098fb45c0a9dde04a9"
    "cf1aa4206f13dd055df3ed5fa681bbf876e362ad9c0a68d2b5266c79aa806cbfe6113b0008002a00"
    "0400000400"
)

# §4 Resumed 0-RTT Handshake (the ClientHello as sent, binders included)
S4_CLIENT_HELLO = bytes.fromhex(
    "010001fc0303750e184c0c28d365ffab68b74cb202fdb495ad19f527c6e6cebec35b443b9b350000"
    "06130113031302010001cd0000000b0009000006736572766572ff01000100000a00140012001d00"
    "170018001901000101010201030104003300260024001d00205839e32b2b0e47211ff3098d998ed0"
    "379a07b299b846585b7fab62c61357d174002a0000002b0003020304000d0020001e040305030603"
    "020308040805080604010501060102010402050206020202002d00020101001c0002400100150057"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000002900dd00b800b2f35edae4e60404d6f40fa17f000000008393d163fb4f5f105f"
    "e2056caeb32ac7007070045931026db07d58dd58090d629af59ecb7fba353d5d9653a708fbcf0f51"
    "5c1b82db6b08977179dfc684d22fcf7bd5c12222ab63ffd9d2bc46176d144ae98ad93416894822ac"
    "5064065f92995a6f052fa3a731703657817ea7a8de73148661768f7f62098fb45c0a9dde04a9cf1a"
    "a4206f13dd055df3ed5fa681bbf876e362ad9c0a68d2b5266c79aa806cbfe6113b933d0937002120"
    "718cd8f22e8ed71d1a23f7c88f63d45487afe58157cbc57e66bd1323e41a8cd8"
)
# "ClientHello prefix": Truncate(ClientHello), the input of the binder hash
S4_CLIENT_HELLO_PREFIX = bytes.fromhex(
    "010001fc0303750e184c0c28d365ffab68b74cb202fdb495ad19f527c6e6cebec35b443b9b350000"
    "06130113031302010001cd0000000b0009000006736572766572ff01000100000a00140012001d00"
    "170018001901000101010201030104003300260024001d00205839e32b2b0e47211ff3098d998ed0"
    "379a07b299b846585b7fab62c61357d174002a0000002b0003020304000d0020001e040305030603"
    "020308040805080604010501060102010402050206020202002d00020101001c0002400100150057"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000002900dd00b800b2f35edae4e60404d6f40fa17f000000008393d163fb4f5f105f"
    "e2056caeb32ac7007070045931026db07d58dd58090d629af59ecb7fba353d5d9653a708fbcf0f51"
    "5c1b82db6b08977179dfc684d22fcf7bd5c12222ab63ffd9d2bc46176d144ae98ad93416894822ac"
    "5064065f92995a6f052fa3a731703657817ea7a8de73148661768f7f62098fb45c0a9dde04a9cf1a"
    "a4206f13dd055df3ed5fa681bbf876e362ad9c0a68d2b5266c79aa806cbfe6113b933d0937"
)
S4_ENCRYPTED_EXTENSIONS = bytes.fromhex(
    "080000280026000a00140012001d00170018001901000101010201030104001c0002400100000000002a0000"
)
S4_END_OF_EARLY_DATA = bytes.fromhex("05000000")

# §5 HelloRetryRequest
S5_HELLO_RETRY_REQUEST = bytes.fromhex(
    "020000ac0303cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c0013"
    "01000084003300020017002c00740072c8a457e4f6d9b8f485a6fbb2000000000944e8ada9c6414d"
    "2412d66659d64678003023f9de457f1f09e31dd322cfe0dc9147b7dc3ec0c577b010a0b0a8f28784"
    "226e0f061797aa37e95da2c006d12af13e0745b0d04918d14d429a0d50808857736687baff6d07c4"
    "682a007c62c3cb4afcb3002b00020304"
)
S5_CLIENT_HELLO_2 = bytes.fromhex(
    "010001fc0303c05333f1e168f732427e91815a093c990115f161130c68e9be3e563610ee94870000"
    "06130113031302010001cd0000000b0009000006736572766572ff01000100000a00080006001d00"
    "1700180033004700450017004104a8d6b4fc93bfb595d867814c45689f74708a33714a9340fe795d"
    "7958ef47fd56039baa382032f78d4c4bca4f24f65560b53b1c076be41bcc099856758545a898002b"
    "0003020304000d0020001e0403050306030203080408050806040105010601020104020502060202"
    "02002c00740072c8a457e4f6d9b8f485a6fbb2000000000944e8ada9c6414d2412d66659d6467800"
    "3023f9de457f1f09e31dd322cfe0dc9147b7dc3ec0c577b010a0b0a8f28784226e0f061797aa37e9"
    "5da2c006d12af13e0745b0d04918d14d429a0d50808857736687baff6d07c4682a007c62c3cb4afc"
    "b3002d00020101001c00024001001500af0000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
)

# §6 Client Authentication
S6_CERTIFICATE_REQUEST = bytes.fromhex(
    "0d000027000024000d0020001e040305030603020308040805080604010501060102010402050206020202"
)
S6_CLIENT_CERTIFICATE = bytes.fromhex(
    "0b0001bf000001bb0001b6308201b23082011ba003020102020101300d06092a864886f70d01010b"
    "05003011310f300d06035504031306636c69656e74301e170d3136303733303031323335395a170d"
    "3236303733303031323335395a3011310f300d06035504031306636c69656e7430819f300d06092a"
    "864886f70d010101050003818d0030818902818100c38175e004a68d093f823b9c379d201fbc0bb7"
    "a1c791905e3fbf76847e44e751ebbcd360bd945c81e5222bcc8846d3a8a0f93e9bf5bebabd92edf1"
    "de1ff19021703e7ab6c0901513f97e39b111f09c9348971c7b211984a754cd45fe095af0ea423682"
    "9bccf7a7fe9b2888e78ab477690a5b9e1ccbe91c6a4a0f97a7e02842010203010001a31a30183009"
    "0603551d1304023000300b0603551d0f040403020780300d06092a864886f70d01010b0500038181"
    "001a7a5a018532b022af0767d486160cff2d167a1915d23835b54594916dc680be5d2e626076c5d5"
    "2722ebcc775d7d99f980be2fc94d34acf6cc00ba90cbcfb0608aa1e7e3971ef0c07a41d47ad8345d"
    "1f81fe418a1cf41054429fd217bd777dc1cf08f05df90799c659361e0f1a8ee4ac0f7897420bdbc8"
    "23da80a2f2ba23081c0000"
)


def body_of(message: bytes) -> bytes:
    """Strip the 4-byte handshake header, checking its length field."""
    assert int.from_bytes(message[1:4], "big") == len(message) - 4
    return message[4:]


def alert_of(excinfo: pytest.ExceptionInfo[RemoteProtocolError]) -> AlertDescription:
    return excinfo.value.alert


# Every message vector with the class that decodes it.
MESSAGE_VECTORS: list[tuple[str, bytes, type[Any]]] = [
    ("S3_CLIENT_HELLO", S3_CLIENT_HELLO, ClientHello),
    ("S3_SERVER_HELLO", S3_SERVER_HELLO, ServerHello),
    ("S3_ENCRYPTED_EXTENSIONS", S3_ENCRYPTED_EXTENSIONS, EncryptedExtensions),
    ("S3_CERTIFICATE", S3_CERTIFICATE, Certificate),
    ("S3_CERTIFICATE_VERIFY", S3_CERTIFICATE_VERIFY, CertificateVerify),
    ("S3_SERVER_FINISHED", S3_SERVER_FINISHED, Finished),
    ("S3_NEW_SESSION_TICKET", S3_NEW_SESSION_TICKET, NewSessionTicket),
    ("S4_CLIENT_HELLO", S4_CLIENT_HELLO, ClientHello),
    ("S4_ENCRYPTED_EXTENSIONS", S4_ENCRYPTED_EXTENSIONS, EncryptedExtensions),
    ("S4_END_OF_EARLY_DATA", S4_END_OF_EARLY_DATA, EndOfEarlyData),
    ("S5_HELLO_RETRY_REQUEST", S5_HELLO_RETRY_REQUEST, ServerHello),
    ("S5_CLIENT_HELLO_2", S5_CLIENT_HELLO_2, ClientHello),
    ("S6_CERTIFICATE_REQUEST", S6_CERTIFICATE_REQUEST, CertificateRequest),
    ("S6_CLIENT_CERTIFICATE", S6_CLIENT_CERTIFICATE, Certificate),
]
VECTOR_IDS = [name for name, _, _ in MESSAGE_VECTORS]
# Finished takes any body (its length is the engine's check), so it has no
# truncated or trailing form.
STRICT_VECTORS = [v for v in MESSAGE_VECTORS if v[2] is not Finished]
STRICT_IDS = [name for name, _, _ in STRICT_VECTORS]


# ---------------------------------------------------------------------------
# RFC 8448: decode the real messages, check fields, re-encode byte for byte
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "message", "cls"), MESSAGE_VECTORS, ids=VECTOR_IDS)
def test_rfc8448_message_round_trip(name: str, message: bytes, cls: type[Any]) -> None:
    msg = cls.decode(body_of(message))
    assert msg.msg_type == message[0]
    assert msg.encode() == body_of(message)
    assert encode_message(msg) == message
    assert decode_message(message[0], body_of(message)) == msg


def test_rfc8448_client_hello() -> None:
    ch = ClientHello.decode(body_of(S3_CLIENT_HELLO))
    assert ch.legacy_version == 0x0303
    assert ch.random == bytes.fromhex(
        "6660261ff947cea49cce6cfad687f457cf1b14531ba14131a0e8f309a1d0b9c4"
    )
    assert ch.legacy_session_id == b""
    assert ch.cipher_suites == (0x1301, 0x1303, 0x1302)
    assert ch.cipher_suites == (
        CipherSuite.TLS_AES_128_GCM_SHA256,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        CipherSuite.TLS_AES_256_GCM_SHA384,
    )
    assert ch.legacy_compression_methods == b"\x00"
    # server_name, renegotiation_info, supported_groups, session_ticket,
    # key_share, supported_versions, signature_algorithms,
    # psk_key_exchange_modes, record_size_limit -- in wire order.
    assert [e.type for e in ch.extensions] == [0, 0xFF01, 10, 35, 51, 43, 13, 45, 28]

    exts = extensions_by_type(ch.extensions)
    assert wx.decode_server_name(exts[ExtensionType.server_name]) == "server"
    assert wx.decode_supported_groups(exts[ExtensionType.supported_groups]) == (
        NamedGroup.x25519,
        NamedGroup.secp256r1,
        NamedGroup.secp384r1,
        NamedGroup.secp521r1,
        NamedGroup.ffdhe2048,
        NamedGroup.ffdhe3072,
        NamedGroup.ffdhe4096,
        NamedGroup.ffdhe6144,
        NamedGroup.ffdhe8192,
    )
    (share,) = wx.decode_key_share_client(exts[ExtensionType.key_share])
    assert share == KeyShareEntry(
        NamedGroup.x25519,
        bytes.fromhex("4cfdfcd178b784bf328cae793b136f2aedce005ff183d7bb1495207236647037"),
    )
    assert wx.decode_supported_versions_client(exts[ExtensionType.supported_versions]) == (0x0304,)
    schemes = wx.decode_signature_algorithms(exts[ExtensionType.signature_algorithms])
    assert len(schemes) == 15
    assert schemes[:3] == (
        SignatureScheme.ecdsa_secp256r1_sha256,
        SignatureScheme.ecdsa_secp384r1_sha384,
        SignatureScheme.ecdsa_secp521r1_sha512,
    )
    assert SignatureScheme.rsa_pss_rsae_sha256 in schemes
    assert wx.decode_psk_key_exchange_modes(exts[ExtensionType.psk_key_exchange_modes]) == (1,)
    assert wx.decode_record_size_limit(exts[ExtensionType.record_size_limit]) == 0x4001
    # Re-encoding the typed values gives the original extension_data back.
    assert wx.encode_key_share_client((share,)) == exts[ExtensionType.key_share]
    assert wx.encode_signature_algorithms(schemes) == exts[ExtensionType.signature_algorithms]
    assert wx.encode_server_name("server") == exts[ExtensionType.server_name]
    assert ch.encode() == body_of(S3_CLIENT_HELLO)


def test_rfc8448_server_hello() -> None:
    sh = ServerHello.decode(body_of(S3_SERVER_HELLO))
    assert sh.legacy_version == 0x0303
    assert not sh.is_hello_retry_request
    assert sh.random == bytes.fromhex(
        "1274991495cf425857262dde2299342c315afba9b64a87d552515614e01b045d"
    )
    assert sh.legacy_session_id_echo == b""
    assert sh.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256
    assert sh.legacy_compression_method == 0
    exts = extensions_by_type(sh.extensions)
    assert wx.decode_key_share_server(exts[ExtensionType.key_share]) == KeyShareEntry(
        NamedGroup.x25519,
        bytes.fromhex("c7bb6bdfc26350b929a08a41a76ddac210b096868d960c4845987dc3a7fa650a"),
    )
    assert wx.decode_supported_versions_server(exts[ExtensionType.supported_versions]) == 0x0304
    assert sh.encode() == body_of(S3_SERVER_HELLO)


def test_rfc8448_server_flight() -> None:
    ee = EncryptedExtensions.decode(body_of(S3_ENCRYPTED_EXTENSIONS))
    exts = extensions_by_type(ee.extensions)
    assert list(exts) == [ExtensionType.supported_groups, ExtensionType.record_size_limit, 0]
    assert wx.decode_server_name(exts[ExtensionType.server_name]) is None  # acknowledgement
    assert wx.decode_record_size_limit(exts[ExtensionType.record_size_limit]) == 0x4001

    cert = Certificate.decode(body_of(S3_CERTIFICATE))
    assert cert.certificate_request_context == b""
    (entry,) = cert.certificate_list
    assert len(entry.cert_data) == 432 and entry.cert_data[0] == 0x30  # a DER SEQUENCE
    assert entry.extensions == ()

    cv = CertificateVerify.decode(body_of(S3_CERTIFICATE_VERIFY))
    assert cv.algorithm == SignatureScheme.rsa_pss_rsae_sha256
    assert len(cv.signature) == 128

    fin = Finished.decode(body_of(S3_SERVER_FINISHED))
    assert fin.verify_data == bytes.fromhex(
        "4c92b1b256d861a1830167827d3e288d1a76f03484e9ec886d4ff66149cbec2f"
    )


def test_rfc8448_new_session_ticket_and_resumption() -> None:
    nst = NewSessionTicket.decode(body_of(S3_NEW_SESSION_TICKET))
    assert nst.ticket_lifetime == 30
    assert nst.ticket_age_add == 0x933D0932
    assert nst.ticket_nonce == b"\x00\x00"
    (early,) = nst.extensions
    assert early.type == ExtensionType.early_data
    assert wx.decode_early_data_nst(early.data) == 1024

    ch = ClientHello.decode(body_of(S4_CLIENT_HELLO))
    assert ch.extensions[-1].type == ExtensionType.pre_shared_key
    exts = extensions_by_type(ch.extensions)
    wx.decode_early_data(exts[ExtensionType.early_data])  # empty: no exception
    offered = wx.decode_pre_shared_key_client(exts[ExtensionType.pre_shared_key])
    (identity,) = offered.identities
    assert identity.identity == nst.ticket  # the ticket is the PSK identity
    assert (identity.obfuscated_ticket_age - nst.ticket_age_add) % 2**32 < 60_000
    assert offered.binders == (
        bytes.fromhex("718cd8f22e8ed71d1a23f7c88f63d45487afe58157cbc57e66bd1323e41a8cd8"),
    )
    # Truncate(ClientHello) (RFC 9846 §4.2.11.2) is the "ClientHello prefix" of the trace.
    cut = wx.offered_psks_binders_length(offered)
    assert cut == 2 + 1 + 32
    assert S4_CLIENT_HELLO[:-cut] == S4_CLIENT_HELLO_PREFIX
    assert wx.encode_psk_binders(offered.binders) == S4_CLIENT_HELLO[-cut:]
    assert wx.encode_pre_shared_key_client(offered) == exts[ExtensionType.pre_shared_key]

    # Placeholder binders of the right length give the same truncated prefix.
    placeholder = OfferedPsks(offered.identities, (b"\x00" * 32,))
    replaced = ClientHello(
        ch.random,
        ch.legacy_session_id,
        ch.cipher_suites,
        (
            *ch.extensions[:-1],
            Extension(ExtensionType.pre_shared_key, wx.encode_pre_shared_key_client(placeholder)),
        ),
    )
    raw = encode_message(replaced)
    assert raw[:-cut] == S4_CLIENT_HELLO_PREFIX
    assert raw[:-cut] + wx.encode_psk_binders(offered.binders) == S4_CLIENT_HELLO

    ee = EncryptedExtensions.decode(body_of(S4_ENCRYPTED_EXTENSIONS))
    ee_exts = extensions_by_type(ee.extensions)
    wx.decode_early_data(ee_exts[ExtensionType.early_data])  # 0-RTT accepted
    assert EndOfEarlyData.decode(body_of(S4_END_OF_EARLY_DATA)) == EndOfEarlyData()


def test_rfc8448_hello_retry_request() -> None:
    hrr = ServerHello.decode(body_of(S5_HELLO_RETRY_REQUEST))
    assert hrr.is_hello_retry_request
    assert hrr.random == HELLO_RETRY_REQUEST_RANDOM
    exts = extensions_by_type(hrr.extensions)
    assert wx.decode_key_share_hrr(exts[ExtensionType.key_share]) == NamedGroup.secp256r1
    cookie = wx.decode_cookie(exts[ExtensionType.cookie])
    assert len(cookie) == 114
    assert wx.decode_supported_versions_server(exts[ExtensionType.supported_versions]) == 0x0304

    ch2 = ClientHello.decode(body_of(S5_CLIENT_HELLO_2))
    exts2 = extensions_by_type(ch2.extensions)
    assert wx.decode_cookie(exts2[ExtensionType.cookie]) == cookie  # echoed (§4.2.2)
    (share,) = wx.decode_key_share_client(exts2[ExtensionType.key_share])
    assert share.group == NamedGroup.secp256r1
    assert len(share.key_exchange) == 65 and share.key_exchange[0] == 4


def test_rfc8448_client_authentication() -> None:
    cr = CertificateRequest.decode(body_of(S6_CERTIFICATE_REQUEST))
    assert cr.certificate_request_context == b""
    exts = extensions_by_type(cr.extensions)
    schemes = wx.decode_signature_algorithms(exts[ExtensionType.signature_algorithms])
    assert schemes[0] == SignatureScheme.ecdsa_secp256r1_sha256
    cert = Certificate.decode(body_of(S6_CLIENT_CERTIFICATE))
    assert len(cert.certificate_list) == 1


# ---------------------------------------------------------------------------
# Strictness: truncation, trailing bytes, bounds
# ---------------------------------------------------------------------------


def _hello_without_extensions_length(message: bytes) -> int | None:
    """Body length where a hello could legitimately end (no extensions block)."""
    body = body_of(message)
    if message[0] == HandshakeType.client_hello:
        pos = 2 + 32
        pos += 1 + body[pos]
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
        return pos + 1 + body[pos]
    if message[0] == HandshakeType.server_hello:
        pos = 2 + 32
        return pos + 1 + body[pos] + 2 + 1
    return None


@pytest.mark.parametrize(("name", "message", "cls"), STRICT_VECTORS, ids=STRICT_IDS)
def test_truncated_messages_raise_decode_error(name: str, message: bytes, cls: type[Any]) -> None:
    body = body_of(message)
    legacy_end = _hello_without_extensions_length(message)
    for cut in range(len(body)):
        if cut == legacy_end:
            # A pre-TLS 1.3 hello without an extensions block: it parses.
            assert cls.decode(body[:cut]).extensions == ()
            continue
        with pytest.raises(DecodeError):
            cls.decode(body[:cut])


@pytest.mark.parametrize(("name", "message", "cls"), STRICT_VECTORS, ids=STRICT_IDS)
def test_trailing_bytes_raise_decode_error(name: str, message: bytes, cls: type[Any]) -> None:
    for extra in (b"\x00", b"\x00\x00", b"\x00\x00\x00\x00"):
        with pytest.raises(DecodeError) as excinfo:
            cls.decode(body_of(message) + extra)
        assert alert_of(excinfo) == AlertDescription.decode_error


def test_hellos_without_extensions_round_trip() -> None:
    ch = ClientHello(b"\x01" * 32, b"", (0x1301,), ())
    assert ch.encode()[-2:] == b"\x01\x00"  # ends with the compression methods
    assert ClientHello.decode(ch.encode()) == ch
    sh = ServerHello(b"\x02" * 32, b"", 0x1301, ())
    assert ServerHello.decode(sh.encode()) == sh


def test_hello_bounds() -> None:
    base = ClientHello(b"\x01" * 32, b"", (0x1301,), (Extension(43, b"\x02\x03\x04"),))
    body = base.encode()
    # legacy_session_id<0..32>: a 33-byte id is a decode_error.
    long_sid = body[:34] + b"\x21" + b"\x00" * 33 + body[35:]
    with pytest.raises(DecodeError):
        ClientHello.decode(long_sid)
    # cipher_suites<2..2^16-2>: empty and odd lengths are rejected.
    for suites in (b"\x00\x00", b"\x00\x03\x13\x01\x13"):
        bad = body[:35] + suites + body[39:]
        with pytest.raises(DecodeError):
            ClientHello.decode(bad)
    # legacy_compression_methods<1..2^8-1>: empty is rejected.
    with pytest.raises(DecodeError):
        ClientHello.decode(body[:39] + b"\x00" + body[41:])
    # Extension extensions<7..2^16-1>: a 4-byte empty extension alone is too short.
    short = ClientHello(b"\x01" * 32, b"", (0x1301,), (Extension(0x1234, b""),))
    with pytest.raises(ValueError):
        short.encode()
    with pytest.raises(DecodeError):
        ClientHello.decode(body[:41] + b"\x00\x04\x12\x34\x00\x00")
    # ... but a valid TLS 1.2-style block (<0..2^16-1>, RFC 9846 Appendix E.2),
    # read so only to answer protocol_version; one overrunning the message is
    # malformed under any version's rules.
    legacy = ClientHello.decode(body[:41] + b"\x00\x04\x12\x34\x00\x00", minimum_extensions_length=0)
    assert legacy.extensions == (Extension(0x1234, b""),)
    assert ClientHello.decode(body[:41] + b"\x00\x00", minimum_extensions_length=0).extensions == ()
    with pytest.raises(DecodeError):
        ClientHello.decode(body[:41] + b"\x00\x05\x12\x34\x00\x00", minimum_extensions_length=0)
    # ServerHello extensions<6..2^16-1>.
    with pytest.raises(DecodeError):
        ServerHello.decode(
            b"\x03\x03" + b"\x00" * 32 + b"\x00\x13\x01\x00" + b"\x00\x04\x12\x34\x00\x00"
        )


def test_encoders_refuse_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        ClientHello(b"\x01" * 31, b"", (0x1301,), ()).encode()
    with pytest.raises(ValueError):
        ClientHello(b"\x01" * 32, b"\x00" * 33, (0x1301,), ()).encode()
    with pytest.raises(ValueError):
        ClientHello(b"\x01" * 32, b"", (), ()).encode()
    with pytest.raises(ValueError):
        NewSessionTicket(1, 2, b"", b"", ()).encode()  # ticket<1..2^16-1>
    with pytest.raises(ValueError):
        CertificateEntry(b"").encode()
    with pytest.raises(ValueError):
        KeyUpdate(2).encode()
    with pytest.raises(ValueError):
        encode_handshake(1, b"\x00" * 2**24)
    with pytest.raises(ValueError):
        EncryptedExtensions((Extension(1, b"\x00" * 65536),)).encode()
    with pytest.raises(ValueError):
        wx.encode_supported_groups(())
    with pytest.raises(ValueError):
        wx.encode_supported_groups((0x10000,))
    with pytest.raises(ValueError):
        wx.encode_alpn((b"",))
    with pytest.raises(ValueError):
        wx.encode_server_name("bücher.example")
    with pytest.raises(ValueError):
        wx.encode_pre_shared_key_client(OfferedPsks((PskIdentity(b"id", 0),), ()))
    with pytest.raises(ValueError):
        wx.encode_psk_binders((b"\x00" * 31,))
    with pytest.raises(ValueError):
        wx.encode_record_size_limit(63)
    with pytest.raises(ValueError):
        wx.encode_tls_flags(set())
    with pytest.raises(ValueError):
        wx.encode_tls_flags({2040})


# ---------------------------------------------------------------------------
# Alerts other than decode_error
# ---------------------------------------------------------------------------


def test_duplicate_extensions_are_illegal_parameter() -> None:
    exts = (Extension(10, b"\x00\x02\x00\x1d"), Extension(43, b"\x02\x03\x04"), Extension(10, b""))
    with pytest.raises(RemoteProtocolError) as excinfo:
        extensions_by_type(exts)
    assert alert_of(excinfo) == AlertDescription.illegal_parameter
    # A duplicate in a real ClientHello: decoding is fine, the lookup is not.
    ch = ClientHello.decode(body_of(S3_CLIENT_HELLO))
    doubled = ClientHello(ch.random, b"", ch.cipher_suites, (*ch.extensions, ch.extensions[0]))
    again = ClientHello.decode(doubled.encode())
    with pytest.raises(RemoteProtocolError) as excinfo:
        extensions_by_type(again.extensions)
    assert alert_of(excinfo) == AlertDescription.illegal_parameter


def test_pre_shared_key_must_be_last_in_client_hello() -> None:
    ch = ClientHello.decode(body_of(S4_CLIENT_HELLO))
    psk = ch.extensions[-1]
    moved = ClientHello(ch.random, b"", ch.cipher_suites, (psk, *ch.extensions[:-1]))
    with pytest.raises(RemoteProtocolError) as excinfo:
        ClientHello.decode(moved.encode())
    assert alert_of(excinfo) == AlertDescription.illegal_parameter
    # In a ServerHello it may appear anywhere (§4.2).
    sh = ServerHello(
        b"\x00" * 32, b"", 0x1301, (Extension(41, b"\x00\x00"), Extension(43, b"\x03\x04"))
    )
    assert ServerHello.decode(sh.encode()) == sh


def test_key_update() -> None:
    assert KeyUpdate.decode(b"\x00") == KeyUpdate(0)
    assert KeyUpdate.decode(b"\x01").encode() == b"\x01"
    with pytest.raises(RemoteProtocolError) as excinfo:
        KeyUpdate.decode(b"\x02")
    assert alert_of(excinfo) == AlertDescription.illegal_parameter
    for bad in (b"", b"\x00\x00"):
        with pytest.raises(DecodeError):
            KeyUpdate.decode(bad)


def test_end_of_early_data_must_be_empty() -> None:
    with pytest.raises(DecodeError):
        EndOfEarlyData.decode(b"\x00")


def test_decode_message_unknown_type_is_unexpected_message() -> None:
    with pytest.raises(RemoteProtocolError) as excinfo:
        decode_message(3, b"")  # hello_verify_request_RESERVED
    assert alert_of(excinfo) == AlertDescription.unexpected_message


def test_record_size_limit() -> None:
    assert wx.decode_record_size_limit(wx.encode_record_size_limit(64)) == 64
    assert wx.decode_record_size_limit(b"\xff\xff") == 0xFFFF
    with pytest.raises(RemoteProtocolError) as excinfo:
        wx.decode_record_size_limit(b"\x00\x3f")
    assert alert_of(excinfo) == AlertDescription.illegal_parameter
    for bad in (b"", b"\x40", b"\x40\x00\x00"):
        with pytest.raises(DecodeError):
            wx.decode_record_size_limit(bad)


def test_offered_psks_identity_binder_mismatch_is_illegal_parameter() -> None:
    two = OfferedPsks(
        (PskIdentity(b"one", 1), PskIdentity(b"two", 2)), (b"\x11" * 32, b"\x22" * 48)
    )
    data = wx.encode_pre_shared_key_client(two)
    assert wx.decode_pre_shared_key_client(data) == two
    # Drop the second binder, fixing up the binders list length.
    ids_len = int.from_bytes(data[:2], "big")
    head = data[: 2 + ids_len]
    with pytest.raises(RemoteProtocolError) as excinfo:
        wx.decode_pre_shared_key_client(head + b"\x00\x21\x20" + b"\x11" * 32)
    assert alert_of(excinfo) == AlertDescription.illegal_parameter
    # A 31-byte binder is below PskBinderEntry<32..255>.
    with pytest.raises(DecodeError):
        wx.decode_pre_shared_key_client(head + b"\x00\x21\x1f" + b"\x11" * 32)


def test_server_name() -> None:
    assert wx.encode_server_name(None) == b""
    assert wx.decode_server_name(b"") is None
    data = wx.encode_server_name("example.com")
    assert data == b"\x00\x0e\x00\x00\x0bexample.com"
    assert wx.decode_server_name(data) == "example.com"
    # An unknown name_type is skipped (RFC 6066 §3: it starts with a 16-bit length).
    other = b"\x07\x00\x02ab"
    mixed = other + data[2:]
    assert wx.decode_server_name(len(mixed).to_bytes(2, "big") + mixed) == "example.com"
    assert wx.decode_server_name(len(other).to_bytes(2, "big") + other) is None
    # Two host_names, or a non-ASCII one, are illegal_parameter.
    two = data[2:] + data[2:]
    for bad in (len(two).to_bytes(2, "big") + two, b"\x00\x04\x00\x00\x01\xff"):
        with pytest.raises(RemoteProtocolError) as excinfo:
            wx.decode_server_name(bad)
        assert alert_of(excinfo) == AlertDescription.illegal_parameter
    # server_name_list<1..2^16-1> and HostName<1..2^16-1>.
    for bad in (b"\x00\x00", b"\x00\x03\x00\x00\x00", data + b"\x00"):
        with pytest.raises(DecodeError):
            wx.decode_server_name(bad)


# ---------------------------------------------------------------------------
# tls_flags (draft-ietf-tls-tlsflags §2)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "flags"),
    [
        ({0}, "01"),  # the draft's examples, written MSB first in the text
        ({1, 5}, "22"),
        ({3, 5, 23}, "28 00 80"),
        ({8}, "00 01"),
        ({2039}, "00 " * 254 + "80"),
    ],
)
def test_tls_flags_examples(bits: set[int], flags: str) -> None:
    octets = bytes.fromhex(flags)
    data = bytes([len(octets)]) + octets
    assert wx.encode_tls_flags(bits) == data
    assert wx.decode_tls_flags(data) == frozenset(bits)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no length
        b"\x00",  # flags<1..255>: zero length
        b"\x01\x00",  # all zero
        b"\x02\x01\x00",  # trailing zero octet
        b"\x02\x01",  # truncated
        b"\x01\x01\x01",  # trailing data
    ],
)
def test_tls_flags_invalid_is_illegal_parameter(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as excinfo:
        wx.decode_tls_flags(data)
    assert alert_of(excinfo) == AlertDescription.illegal_parameter


@given(st.frozensets(st.integers(0, wx.TLS_FLAGS_MAX_BIT), min_size=1))
def test_tls_flags_round_trip(bits: frozenset[int]) -> None:
    data = wx.encode_tls_flags(bits)
    assert data[-1] != 0 and data[0] == len(data) - 1 == max(bits) // 8 + 1
    assert wx.decode_tls_flags(data) == bits


# ---------------------------------------------------------------------------
# Extension round trips and strictness
# ---------------------------------------------------------------------------

# (encode, decode, value) for every typed extension codec.
EXTENSION_CASES: list[tuple[str, Callable[..., bytes], Callable[[bytes], Any], Any]] = [
    ("server_name", wx.encode_server_name, wx.decode_server_name, "server.example"),
    ("supported_groups", wx.encode_supported_groups, wx.decode_supported_groups, (29, 23, 0x11EC)),
    (
        "signature_algorithms",
        wx.encode_signature_algorithms,
        wx.decode_signature_algorithms,
        (0x0807, 0x0403),
    ),
    (
        "signature_algorithms_cert",
        wx.encode_signature_algorithms_cert,
        wx.decode_signature_algorithms_cert,
        (0x0905,),
    ),
    ("alpn", wx.encode_alpn, wx.decode_alpn, (b"h2", b"http/1.1")),
    (
        "supported_versions_client",
        wx.encode_supported_versions_client,
        wx.decode_supported_versions_client,
        (0x0304, 0x0303),
    ),
    (
        "supported_versions_server",
        wx.encode_supported_versions_server,
        wx.decode_supported_versions_server,
        0x0304,
    ),
    (
        "key_share_client",
        wx.encode_key_share_client,
        wx.decode_key_share_client,
        (KeyShareEntry(29, b"\x01" * 32), KeyShareEntry(0x11EC, b"\x02" * 1216)),
    ),
    ("key_share_client_empty", wx.encode_key_share_client, wx.decode_key_share_client, ()),
    (
        "key_share_server",
        wx.encode_key_share_server,
        wx.decode_key_share_server,
        KeyShareEntry(23, b"\x04" * 65),
    ),
    ("key_share_hrr", wx.encode_key_share_hrr, wx.decode_key_share_hrr, 0x11EC),
    ("cookie", wx.encode_cookie, wx.decode_cookie, b"cookie!"),
    (
        "psk_key_exchange_modes",
        wx.encode_psk_key_exchange_modes,
        wx.decode_psk_key_exchange_modes,
        (1, 0),
    ),
    (
        "pre_shared_key_client",
        wx.encode_pre_shared_key_client,
        wx.decode_pre_shared_key_client,
        OfferedPsks((PskIdentity(b"ticket", 0xDEADBEEF),), (b"\xaa" * 48,)),
    ),
    ("pre_shared_key_server", wx.encode_pre_shared_key_server, wx.decode_pre_shared_key_server, 3),
    ("early_data", lambda _: wx.encode_early_data(), wx.decode_early_data, None),
    ("early_data_nst", wx.encode_early_data_nst, wx.decode_early_data_nst, 0xFFFFFFFF),
    ("record_size_limit", wx.encode_record_size_limit, wx.decode_record_size_limit, 16385),
    (
        "post_handshake_auth",
        lambda _: wx.encode_post_handshake_auth(),
        wx.decode_post_handshake_auth,
        None,
    ),
    (
        "certificate_authorities",
        wx.encode_certificate_authorities,
        wx.decode_certificate_authorities,
        (b"\x30\x00", b"\x30\x03\x31\x01\x00"),
    ),
    ("tls_flags", wx.encode_tls_flags, wx.decode_tls_flags, frozenset({0, 9})),
]
EXTENSION_IDS = [case[0] for case in EXTENSION_CASES]


@pytest.mark.parametrize(("name", "encode", "decode", "value"), EXTENSION_CASES, ids=EXTENSION_IDS)
def test_extension_round_trip(
    name: str, encode: Callable[..., bytes], decode: Callable[[bytes], Any], value: Any
) -> None:
    assert decode(encode(value)) == value


@pytest.mark.parametrize(("name", "encode", "decode", "value"), EXTENSION_CASES, ids=EXTENSION_IDS)
def test_extension_truncated_or_trailing(
    name: str, encode: Callable[..., bytes], decode: Callable[[bytes], Any], value: Any
) -> None:
    data = encode(value)
    # tls_flags answers every invalid value with illegal_parameter (see its docstring).
    expected = RemoteProtocolError if name == "tls_flags" else DecodeError
    cuts = range(1, len(data)) if name == "server_name" else range(len(data))  # b"" = no name
    for cut in cuts:
        with pytest.raises(expected):
            decode(data[:cut])
    with pytest.raises(expected):
        decode(data + b"\x00")


def test_list_extension_bounds() -> None:
    with pytest.raises(DecodeError):
        wx.decode_supported_groups(b"\x00\x00")  # named_group_list<2..2^16-1>
    with pytest.raises(DecodeError):
        wx.decode_signature_algorithms(b"\x00\x03\x08\x07\x08")  # odd
    with pytest.raises(DecodeError):
        wx.decode_supported_versions_client(b"\x00")  # versions<2..254>
    with pytest.raises(DecodeError):
        wx.decode_alpn(b"\x00\x00")  # protocol_name_list<2..2^16-1>
    with pytest.raises(DecodeError):
        wx.decode_alpn(b"\x00\x02\x00\x00")  # ProtocolName<1..2^8-1>
    with pytest.raises(DecodeError):
        wx.decode_key_share_client(b"\x00\x04\x00\x1d\x00\x00")  # key_exchange<1..2^16-1>
    with pytest.raises(DecodeError):
        wx.decode_cookie(b"\x00\x00")  # cookie<1..2^16-1>
    with pytest.raises(DecodeError):
        wx.decode_psk_key_exchange_modes(b"\x00")  # ke_modes<1..255>
    with pytest.raises(DecodeError):
        wx.decode_certificate_authorities(b"\x00\x02\x00\x00")  # authorities<3..2^16-1>
    with pytest.raises(DecodeError):
        wx.decode_certificate_authorities(b"\x00\x03\x00\x00\x00")  # DistinguishedName<1..>
    # identities<7..2^16-1>: an identity must be at least 1 byte + uint32.
    with pytest.raises(DecodeError):
        wx.decode_pre_shared_key_client(
            b"\x00\x06\x00\x00\x00\x00\x00\x00" + b"\x00\x21\x20" + b"\x00" * 32
        )


# Hypothesis strategies for valid values -----------------------------------

u16s = st.integers(0, 0xFFFF)
u32s = st.integers(0, 0xFFFFFFFF)
small_bytes = st.binary(max_size=40)
extension_st = st.builds(Extension, u16s, small_bytes)
extensions_st = st.lists(extension_st, max_size=6).map(tuple)
key_share_st = st.builds(KeyShareEntry, u16s, st.binary(min_size=1, max_size=70))
psk_identity_st = st.builds(PskIdentity, st.binary(min_size=1, max_size=40), u32s)


@st.composite
def offered_psks_st(draw: st.DrawFn) -> OfferedPsks:
    ids = draw(st.lists(psk_identity_st, min_size=1, max_size=4))
    binders = [draw(st.binary(min_size=32, max_size=255)) for _ in ids]
    return OfferedPsks(tuple(ids), tuple(binders))


def hello_extensions(minimum: int) -> st.SearchStrategy[tuple[Extension, ...]]:
    """Extension blocks that meet a hello's <minimum..> length, or are absent."""
    return extensions_st.filter(
        lambda exts: not exts or sum(4 + len(e.data) for e in exts) >= minimum
    ).filter(lambda exts: all(e.type != ExtensionType.pre_shared_key for e in exts[:-1]))


message_st = st.one_of(
    st.builds(
        ClientHello,
        st.binary(min_size=32, max_size=32),
        st.binary(max_size=32),
        st.lists(u16s, min_size=1, max_size=20).map(tuple),
        hello_extensions(7),
        st.binary(min_size=1, max_size=4),
        u16s,
    ),
    st.builds(
        ServerHello,
        st.one_of(st.just(HELLO_RETRY_REQUEST_RANDOM), st.binary(min_size=32, max_size=32)),
        st.binary(max_size=32),
        u16s,
        hello_extensions(6),
        st.integers(0, 255),
        u16s,
    ),
    st.builds(EncryptedExtensions, extensions_st),
    st.builds(CertificateRequest, st.binary(max_size=255), extensions_st),
    st.builds(
        Certificate,
        st.binary(max_size=255),
        st.lists(
            st.builds(CertificateEntry, st.binary(min_size=1, max_size=300), extensions_st),
            max_size=4,
        ).map(tuple),
    ),
    st.builds(CertificateVerify, u16s, st.binary(max_size=300)),
    st.builds(Finished, st.binary(max_size=64)),
    st.just(EndOfEarlyData()),
    st.builds(
        NewSessionTicket,
        u32s,
        u32s,
        st.binary(max_size=255),
        st.binary(min_size=1, max_size=300),
        extensions_st,
    ),
    st.builds(KeyUpdate, st.integers(0, 1)),
)


@given(message_st)
def test_message_round_trip(msg: Any) -> None:
    raw = encode_message(msg)
    assert raw[0] == msg.msg_type
    assert int.from_bytes(raw[1:4], "big") == len(raw) - 4
    assert type(msg).decode(raw[4:]) == msg
    assert decode_message(raw[0], raw[4:]) == msg


@given(
    st.one_of(
        st.builds(lambda v: ("groups", v), st.lists(u16s, min_size=1, max_size=50).map(tuple)),
        st.builds(
            lambda v: ("alpn", v),
            st.lists(st.binary(min_size=1, max_size=255), min_size=1, max_size=5).map(tuple),
        ),
        st.builds(lambda v: ("versions", v), st.lists(u16s, min_size=1, max_size=127).map(tuple)),
        st.builds(lambda v: ("shares", v), st.lists(key_share_st, max_size=4).map(tuple)),
        st.builds(lambda v: ("psk", v), offered_psks_st()),
        st.builds(
            lambda v: ("cas", v),
            st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=4).map(tuple),
        ),
        st.builds(
            lambda v: ("modes", v),
            st.lists(st.integers(0, 255), min_size=1, max_size=255).map(tuple),
        ),
    )
)
def test_extension_round_trip_property(case: tuple[str, Any]) -> None:
    kind, value = case
    codecs: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "groups": (wx.encode_supported_groups, wx.decode_supported_groups),
        "alpn": (wx.encode_alpn, wx.decode_alpn),
        "versions": (wx.encode_supported_versions_client, wx.decode_supported_versions_client),
        "shares": (wx.encode_key_share_client, wx.decode_key_share_client),
        "psk": (wx.encode_pre_shared_key_client, wx.decode_pre_shared_key_client),
        "cas": (wx.encode_certificate_authorities, wx.decode_certificate_authorities),
        "modes": (wx.encode_psk_key_exchange_modes, wx.decode_psk_key_exchange_modes),
    }
    encode, decode = codecs[kind]
    data = encode(value)
    assert decode(data) == value
    if kind == "psk":
        assert data[-wx.offered_psks_binders_length(value) :] == wx.encode_psk_binders(
            value.binders
        )


# ---------------------------------------------------------------------------
# Fuzzing: any bytes give a message or a TLS error, nothing else
# ---------------------------------------------------------------------------

MESSAGE_DECODERS: list[Callable[[bytes], Any]] = [
    ClientHello.decode,
    ServerHello.decode,
    EncryptedExtensions.decode,
    CertificateRequest.decode,
    CertificateEntry.decode,
    Certificate.decode,
    CertificateVerify.decode,
    Finished.decode,
    EndOfEarlyData.decode,
    NewSessionTicket.decode,
    KeyUpdate.decode,
]
EXTENSION_DECODERS: list[Callable[[bytes], Any]] = [case[2] for case in EXTENSION_CASES]
ALL_DECODERS = MESSAGE_DECODERS + EXTENSION_DECODERS


@st.composite
def fuzz_input(draw: st.DrawFn) -> bytes:
    """Random bytes, or a real message body with a few bytes changed or cut."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    _, message, _ = draw(st.sampled_from(MESSAGE_VECTORS))
    body = bytearray(body_of(message))
    for _ in range(draw(st.integers(1, 4))):
        if not body:
            break
        i = draw(st.integers(0, len(body) - 1))
        body[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(body)))
    return bytes(body[:cut]) if draw(st.booleans()) else bytes(body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(ALL_DECODERS))), fuzz_input())
def test_decoders_only_raise_tls_errors(index: int, data: bytes) -> None:
    decode = ALL_DECODERS[index]
    try:
        result = decode(data)
    except RemoteProtocolError as exc:  # DecodeError is one of these
        assert isinstance(exc.alert, AlertDescription)
        return
    if decode in MESSAGE_DECODERS:
        # Anything accepted is canonical: it re-encodes to the same bytes.
        assert result.encode() == data


@settings(max_examples=300)
@given(st.sampled_from([v for v in MESSAGE_VECTORS if len(v[1]) > 4]), st.data())
def test_decode_message_on_mutated_vectors(
    vector: tuple[str, bytes, type[Any]], data: st.DataObject
) -> None:
    """One flipped byte anywhere in a real body: a message or a TLS error."""
    _, message, _ = vector
    body = bytearray(body_of(message))
    i = data.draw(st.integers(0, len(body) - 1))
    body[i] ^= data.draw(st.integers(1, 255))
    try:
        msg = decode_message(message[0], bytes(body))
    except RemoteProtocolError as exc:
        assert isinstance(exc.alert, AlertDescription)
        return
    assert msg.encode() == bytes(body)


# ---------------------------------------------------------------------------
# HandshakeReassembler
# ---------------------------------------------------------------------------

FLIGHT = [
    S3_SERVER_HELLO,
    S3_ENCRYPTED_EXTENSIONS,
    S3_CERTIFICATE,
    S3_CERTIFICATE_VERIFY,
    S3_SERVER_FINISHED,
]
FLIGHT_BYTES = b"".join(FLIGHT)


def drain(reassembler: HandshakeReassembler) -> list[tuple[int, bytes, bytes]]:
    out = []
    while (item := reassembler.pop()) is not None:
        out.append(item)
    return out


def expected_items(messages: list[bytes]) -> list[tuple[int, bytes, bytes]]:
    return [(m[0], m[4:], m) for m in messages]


def test_reassembler_one_message_per_feed() -> None:
    r = HandshakeReassembler()
    assert r.pop() is None and not r.has_partial()
    r.feed(S3_CLIENT_HELLO)
    msg_type, body, raw = r.pop() or (0, b"", b"")
    assert msg_type == HandshakeType.client_hello
    assert body == body_of(S3_CLIENT_HELLO) and raw == S3_CLIENT_HELLO
    assert r.pop() is None and not r.has_partial()


def test_reassembler_several_messages_in_one_feed() -> None:
    r = HandshakeReassembler()
    r.feed(FLIGHT_BYTES)
    assert not r.has_partial()  # complete messages waiting are not "partial"
    assert r.has_complete()
    assert drain(r) == expected_items(FLIGHT)
    assert not r.has_partial() and not r.has_complete()


def test_reassembler_has_complete() -> None:
    r = HandshakeReassembler()
    assert not r.has_complete()
    r.feed(S3_SERVER_HELLO[:3])
    assert not r.has_complete() and r.has_partial()
    r.feed(S3_SERVER_HELLO[3:] + S3_ENCRYPTED_EXTENSIONS[:10])
    assert r.has_complete() and r.has_partial()
    assert r.pop() is not None
    assert not r.has_complete() and r.has_partial()
    r.feed(S3_ENCRYPTED_EXTENSIONS[10:])
    assert r.has_complete() and not r.has_partial()
    assert r.pop() is not None
    assert not r.has_complete() and not r.has_partial()


def test_reassembler_byte_at_a_time() -> None:
    r = HandshakeReassembler()
    got = []
    for i in range(len(FLIGHT_BYTES)):
        r.feed(FLIGHT_BYTES[i : i + 1])
        got.extend(drain(r))
        assert not r.has_complete()
        boundary = i + 1 in {sum(map(len, FLIGHT[:k])) for k in range(1, len(FLIGHT) + 1)}
        assert r.has_partial() is not boundary
    assert got == expected_items(FLIGHT)


@given(st.lists(st.integers(1, len(FLIGHT_BYTES) - 1), max_size=20).map(sorted))
def test_reassembler_arbitrary_splits(cuts: list[int]) -> None:
    r = HandshakeReassembler()
    got = []
    bounds = [0, *cuts, len(FLIGHT_BYTES)]
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        r.feed(FLIGHT_BYTES[start:end])
        got.extend(drain(r))
    assert got == expected_items(FLIGHT)
    assert not r.has_partial()


def test_reassembler_message_ending_a_record_then_partial() -> None:
    r = HandshakeReassembler()
    r.feed(S3_SERVER_HELLO + S3_ENCRYPTED_EXTENSIONS[:2])  # header itself split
    assert r.has_partial()
    assert drain(r) == expected_items([S3_SERVER_HELLO])
    assert r.has_partial()
    r.feed(S3_ENCRYPTED_EXTENSIONS[2:] + S3_CERTIFICATE[:100])
    assert drain(r) == expected_items([S3_ENCRYPTED_EXTENSIONS])
    assert r.has_partial()
    r.feed(S3_CERTIFICATE[100:])
    assert drain(r) == expected_items([S3_CERTIFICATE])
    assert not r.has_partial()


def test_reassembler_empty_body_message() -> None:
    r = HandshakeReassembler()
    r.feed(S4_END_OF_EARLY_DATA + S4_END_OF_EARLY_DATA[:3])
    assert drain(r) == [(HandshakeType.end_of_early_data, b"", S4_END_OF_EARLY_DATA)]
    assert r.has_partial()


def test_reassembler_rejects_oversize_messages_early() -> None:
    r = HandshakeReassembler(max_message_size=1000)
    r.feed(encode_handshake(HandshakeType.certificate, b"\x00" * 1000))
    assert drain(r)[0][1] == b"\x00" * 1000
    # The header announces 1001 bytes: rejected before the body is buffered,
    # whether the header arrives whole ...
    r.feed(b"\x0b\x00\x03\xe9")
    with pytest.raises(RemoteProtocolError) as excinfo:
        r.pop()
    assert alert_of(excinfo) == AlertDescription.illegal_parameter
    # ... or split behind a partial message.
    r = HandshakeReassembler(max_message_size=1000)
    r.feed(b"\x0b\x00")
    assert r.pop() is None
    with pytest.raises(RemoteProtocolError) as excinfo:
        r.feed(b"\x03\xe9\x00")
    assert alert_of(excinfo) == AlertDescription.illegal_parameter


def test_reassembler_rejects_empty_records() -> None:
    r = HandshakeReassembler()
    with pytest.raises(RemoteProtocolError) as excinfo:
        r.feed(b"")
    assert alert_of(excinfo) == AlertDescription.unexpected_message


def test_reassembler_accepts_bytearray_and_memoryview() -> None:
    r = HandshakeReassembler()
    r.feed(bytearray(FLIGHT_BYTES[:50]))
    r.feed(memoryview(FLIGHT_BYTES)[50:])
    got = drain(r)
    assert got == expected_items(FLIGHT)
    assert all(type(body) is bytes and type(raw) is bytes for _, body, raw in got)


def test_encode_handshake() -> None:
    assert (
        encode_handshake(HandshakeType.finished, b"\xaa" * 32) == b"\x14\x00\x00\x20" + b"\xaa" * 32
    )
    assert encode_handshake(HandshakeType.end_of_early_data, b"") == S4_END_OF_EARLY_DATA
