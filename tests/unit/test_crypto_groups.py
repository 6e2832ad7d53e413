"""Key exchange groups: round trips, spec lengths, known answers and every malformed share."""

from __future__ import annotations

import subprocess
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning

from helpers.peers import require_binary
from longtls.constants import AlertDescription, NamedGroup
from longtls.crypto.groups import SUPPORTED_GROUPS, Group, KeyShare, ffdhe_prime, get_group
from longtls.errors import ConfigurationError, RemoteProtocolError

G = NamedGroup

# (initiator key_exchange, responder key_exchange, shared secret) lengths from
# draft-ietf-tls-ecdhe-mlkem §4, draft-ietf-tls-mlkem §3 and RFC 9846 §4.3.8.2.
EXPECTED_LENGTHS = {
    G.x25519: (32, 32, 32),
    G.secp256r1: (65, 65, 32),
    G.secp384r1: (97, 97, 48),
    G.X25519MLKEM768: (1216, 1120, 64),
    G.SecP256r1MLKEM768: (1249, 1153, 64),
    G.SecP384r1MLKEM1024: (1665, 1665, 80),
    G.MLKEM768: (1184, 1088, 32),
    G.MLKEM1024: (1568, 1568, 32),
    # RFC 9846 §4.3.8.2: 66-byte coordinates for P-521; RFC 7748: 56 bytes for X448.
    G.secp521r1: (133, 133, 66),
    G.x448: (56, 56, 56),
    # RFC 8734 §2: the same UncompressedPointRepresentation as the NIST curves.
    G.brainpoolP256r1tls13: (65, 65, 32),
    G.brainpoolP384r1tls13: (97, 97, 48),
    G.brainpoolP512r1tls13: (129, 129, 64),
    # RFC 9846 §4.3.8.1 / §7.4.1: Y and Z padded to the size of p.
    G.ffdhe2048: (256, 256, 256),
    G.ffdhe3072: (384, 384, 384),
    G.ffdhe4096: (512, 512, 512),
    G.ffdhe6144: (768, 768, 768),
    G.ffdhe8192: (1024, 1024, 1024),
}
FFDHE_GROUPS = (G.ffdhe2048, G.ffdhe3072, G.ffdhe4096, G.ffdhe6144, G.ffdhe8192)
KEM_GROUPS = (
    G.X25519MLKEM768,
    G.SecP256r1MLKEM768,
    G.SecP384r1MLKEM1024,
    G.MLKEM768,
    G.MLKEM1024,
)


def illegal_parameter() -> pytest.RaisesExc[RemoteProtocolError]:
    return pytest.raises(RemoteProtocolError, check=_is_illegal_parameter)


def _is_illegal_parameter(exc: RemoteProtocolError) -> bool:
    return exc.alert is AlertDescription.illegal_parameter


def test_supported_groups_are_exactly_the_implemented_ones() -> None:
    expected = (
        G.x25519,
        G.secp256r1,
        G.secp384r1,
        G.X25519MLKEM768,
        G.SecP256r1MLKEM768,
        G.SecP384r1MLKEM1024,
        G.MLKEM768,
        G.MLKEM1024,
        G.secp521r1,
        G.x448,
        G.brainpoolP256r1tls13,
        G.brainpoolP384r1tls13,
        G.brainpoolP512r1tls13,
        *FFDHE_GROUPS,
    )
    assert expected == SUPPORTED_GROUPS
    assert set(EXPECTED_LENGTHS) == set(SUPPORTED_GROUPS)


@pytest.mark.parametrize("code", [G.MLKEM512, 0x0016, 0x01FC, 0xFFFF])
def test_unsupported_group_is_a_configuration_error(code: int) -> None:
    with pytest.raises(ConfigurationError, match="not supported"):
        get_group(code)


@pytest.mark.parametrize("code", SUPPORTED_GROUPS, ids=lambda c: c.name)
def test_round_trip(code: NamedGroup) -> None:
    group = get_group(code)
    public_len, response_len, secret_len = EXPECTED_LENGTHS[code]
    assert (group.code, group.is_kem) == (code, code in KEM_GROUPS)
    assert (group.public_length, group.response_length, group.secret_length) == (
        public_len,
        response_len,
        secret_len,
    )

    share = group.generate()
    assert share.group is code
    assert len(share.public) == public_len
    response, responder_secret = group.respond(share.public)
    assert len(response) == response_len
    assert len(responder_secret) == secret_len
    assert share.complete(response) == responder_secret

    # Fresh randomness every time.
    other = group.generate()
    assert other.public != share.public
    assert group.respond(other.public)[1] != responder_secret


@pytest.mark.parametrize("code", SUPPORTED_GROUPS, ids=lambda c: c.name)
def test_repr_shows_no_key_material(code: NamedGroup) -> None:
    share = get_group(code).generate()
    text = repr(share)
    assert code.name in text
    assert share.public.hex()[:16] not in text
    assert len(text) < 60


# --- known answers --------------------------------------------------------------------------

# RFC 8448 traces: the ephemeral keys, and the IKM of 'extract secret "handshake"',
# which is the (EC)DHE shared secret (RFC 9846 §7.1).


def test_rfc8448_simple_x25519() -> None:
    # RFC 8448 §3, Simple 1-RTT Handshake.
    client_private = bytes.fromhex(
        "70a1a8f491e82d530542c6d7a8dcd8cfa9e31f59bb336b550b13bfe199f542c5"
    )
    client_public = bytes.fromhex(
        "4cfdfcd178b784bf328cae793b136f2aedce005ff183d7bb1495207236647037"
    )
    server_private = bytes.fromhex(
        "5aa93ea18f4c5e4a39856f573af4ec1503bad0d5cdabaffc26c1ab4c361f86c8"
    )
    server_public = bytes.fromhex(
        "c7bb6bdfc26350b929a08a41a76ddac210b096868d960c4845987dc3a7fa650a"
    )
    shared_secret = bytes.fromhex(
        "1bea3fdfd25f94033804b68997a55d1931dc51124ad7f6e28959bb4672e3bd13"
    )
    group = get_group(G.x25519)
    client = group.from_private_bytes(client_private)
    assert client.public == client_public
    server = group.from_private_bytes(server_private)
    assert group.respond(client.public, ephemeral=server) == (server_public, shared_secret)
    assert client.complete(server_public) == shared_secret


def test_rfc8448_hrr_p256() -> None:
    # RFC 8448 §5, HelloRetryRequest: the second ClientHello's P-256 share.
    client_private = bytes.fromhex(
        "137b20ef0ca19c55dc62fcb087dbdcde1503cbea087e99f6894c85efad647e4d"
    )
    client_public = bytes.fromhex(
        "04a8d6b4fc93bfb595d867814c45689f74708a33714a9340fe795d7958ef47fd56"
        "039baa382032f78d4c4bca4f24f65560b53b1c076be41bcc099856758545a898"
    )
    server_private = bytes.fromhex(
        "78bcc621d5744f6c263c09b68583240b5230d32e2b637ff86d1358bbeb061461"
    )
    server_public = bytes.fromhex(
        "045d8b37a392a9a1ffc6edddd6a17292dd97e65d56585f78ee7ee926c59e00eae2"
        "33d108a2779fb1f09c29c47709da29592e13054f9d53c1d58d806b36da0a2337"
    )
    shared_secret = bytes.fromhex(
        "3188db87f5fedb1a049be816be7d60a83315246fbb7c3f5eafbe534a5ccd32b9"
    )
    group = get_group(G.secp256r1)
    client = group.from_private_bytes(client_private)
    assert client.public == client_public
    server = group.from_private_bytes(server_private)
    assert group.respond(client.public, ephemeral=server) == (server_public, shared_secret)
    assert client.complete(server_public) == shared_secret


def test_p384_secret_is_x_coordinate_full_length() -> None:
    # RFC 9846 §7.4.2: leading zeros of the x-coordinate are kept.
    group = get_group(G.secp384r1)
    for _ in range(64):
        share = group.generate()
        response, secret = group.respond(share.public)
        assert len(secret) == 48 and share.complete(response) == secret


# --- hybrid concatenation order (draft-ietf-tls-ecdhe-mlkem §4), built from the parts -----
#
# The draft has no known-answer vectors, so each test does one side by hand
# with raw cryptography primitives and checks longtls on the other side.


def _p_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def test_x25519mlkem768_initiator_order() -> None:
    share = get_group(G.X25519MLKEM768).generate()
    ek, x_public = share.public[:1184], share.public[1184:]  # ML-KEM first, then X25519
    kem_secret, ciphertext = mlkem.MLKEM768PublicKey.from_public_bytes(ek).encapsulate()
    server_x = x25519.X25519PrivateKey.generate()
    x_secret = server_x.exchange(x25519.X25519PublicKey.from_public_bytes(x_public))
    response = ciphertext + server_x.public_key().public_bytes_raw()
    assert share.complete(response) == kem_secret + x_secret


def test_x25519mlkem768_responder_order() -> None:
    client_kem = mlkem.MLKEM768PrivateKey.generate()
    client_x = x25519.X25519PrivateKey.generate()
    client_share = (
        client_kem.public_key().public_bytes_raw() + client_x.public_key().public_bytes_raw()
    )
    response, secret = get_group(G.X25519MLKEM768).respond(client_share)
    ciphertext, server_x = response[:1088], response[1088:]
    expected = client_kem.decapsulate(ciphertext) + client_x.exchange(
        x25519.X25519PublicKey.from_public_bytes(server_x)
    )
    assert secret == expected


@pytest.mark.parametrize(
    ("code", "curve", "kem_private", "point_len", "ek_len"),
    [
        (G.SecP256r1MLKEM768, ec.SECP256R1(), mlkem.MLKEM768PrivateKey, 65, 1184),
        (G.SecP384r1MLKEM1024, ec.SECP384R1(), mlkem.MLKEM1024PrivateKey, 97, 1568),
    ],
    ids=["SecP256r1MLKEM768", "SecP384r1MLKEM1024"],
)
def test_nist_hybrid_order_both_sides(
    code: NamedGroup,
    curve: ec.EllipticCurve,
    kem_private: type[mlkem.MLKEM768PrivateKey] | type[mlkem.MLKEM1024PrivateKey],
    point_len: int,
    ek_len: int,
) -> None:
    group = get_group(code)
    # Initiator is longtls: ECDH point first, then the encapsulation key.
    share = group.generate()
    point, ek = share.public[:point_len], share.public[point_len:]
    assert len(ek) == ek_len and point[0] == 4
    ek_key = (
        mlkem.MLKEM768PublicKey.from_public_bytes(ek)
        if ek_len == 1184
        else mlkem.MLKEM1024PublicKey.from_public_bytes(ek)
    )
    kem_secret, ciphertext = ek_key.encapsulate()
    server_ec = ec.generate_private_key(curve)
    ec_secret = server_ec.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    )
    assert share.complete(_p_point(server_ec) + ciphertext) == ec_secret + kem_secret

    # Responder is longtls.
    client_ec = ec.generate_private_key(curve)
    client_kem = kem_private.generate()
    response, secret = group.respond(
        _p_point(client_ec) + client_kem.public_key().public_bytes_raw()
    )
    server_point, server_ct = response[:point_len], response[point_len:]
    expected = client_ec.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(curve, server_point)
    ) + client_kem.decapsulate(server_ct)
    assert secret == expected


def test_hybrid_respond_with_injected_ephemeral_uses_its_dh_part() -> None:
    group = get_group(G.X25519MLKEM768)
    x_private = bytes(range(1, 33))
    seed = bytes(range(64))
    ephemeral = group.from_private_bytes(seed + x_private)  # ML-KEM seed first, like the share
    x_public = x25519.X25519PrivateKey.from_private_bytes(x_private).public_key()
    assert ephemeral.public[1184:] == x_public.public_bytes_raw()
    client = group.generate()
    response, secret = group.respond(client.public, ephemeral=ephemeral)
    assert response[1088:] == x_public.public_bytes_raw()
    assert client.complete(response) == secret


def test_mlkem_seed_is_deterministic() -> None:
    group = get_group(G.MLKEM768)
    seed = bytes(range(64))
    expected = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    assert group.from_private_bytes(seed).public == expected


# --- local misuse ---------------------------------------------------------------------------


def test_ephemeral_of_another_group_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="secp256r1"):
        get_group(G.x25519).respond(bytes(32), ephemeral=get_group(G.secp256r1).generate())


def test_pure_kem_takes_no_ephemeral() -> None:
    group = get_group(G.MLKEM768)
    client = group.generate()
    with pytest.raises(ConfigurationError):
        group.respond(client.public, ephemeral=group.generate())


@pytest.mark.parametrize(
    ("code", "data"),
    [
        (G.x25519, bytes(31)),
        (G.secp256r1, bytes(31)),
        (G.secp256r1, bytes(32)),  # scalar 0 is out of range
        (G.MLKEM768, bytes(32)),
    ],
)
def test_bad_private_bytes_are_configuration_errors(code: NamedGroup, data: bytes) -> None:
    with pytest.raises(ConfigurationError):
        get_group(code).from_private_bytes(data)


# --- malformed peer shares: all illegal_parameter --------------------------------------------


def _wrong_lengths(n: int) -> list[bytes]:
    return [b"", bytes(n - 1), bytes(n + 1), bytes(2 * n)]


@pytest.mark.parametrize("code", SUPPORTED_GROUPS, ids=lambda c: c.name)
def test_wrong_length_initiator_share(code: NamedGroup) -> None:
    group = get_group(code)
    valid = group.generate().public
    for data in [*_wrong_lengths(len(valid)), valid[:-1], valid + b"\x00"]:
        with illegal_parameter():
            group.respond(data)


@pytest.mark.parametrize("code", SUPPORTED_GROUPS, ids=lambda c: c.name)
def test_wrong_length_responder_share(code: NamedGroup) -> None:
    group = get_group(code)
    share = group.generate()
    valid, _ = group.respond(share.public)
    for data in [*_wrong_lengths(len(valid)), valid[:-1], valid + b"\x00"]:
        with illegal_parameter():
            share.complete(data)


# X25519 low-order points (RFC 7748 §6.1: the all-zero output check).
LOW_ORDER_X25519 = [
    bytes(32),  # 0
    (1).to_bytes(32, "little"),  # 1
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),  # order 8
]


@pytest.mark.parametrize("point", LOW_ORDER_X25519, ids=["zero", "one", "order8"])
def test_x25519_all_zero_secret(point: bytes) -> None:
    group = get_group(G.x25519)
    with illegal_parameter():
        group.respond(point)
    with illegal_parameter():
        group.generate().complete(point)


def test_x25519mlkem768_all_zero_secret() -> None:
    group = get_group(G.X25519MLKEM768)
    client = group.generate()
    with illegal_parameter():
        group.respond(client.public[:1184] + LOW_ORDER_X25519[0])
    response, _ = group.respond(client.public)
    with illegal_parameter():
        client.complete(response[:1088] + LOW_ORDER_X25519[2])


P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1


def _bad_points(curve_code: NamedGroup) -> dict[str, bytes]:
    valid = get_group(curve_code).generate().public
    size = (len(valid) - 1) // 2
    points = {
        "compressed-form-byte": b"\x02" + valid[1:],
        "hybrid-form-byte": b"\x06" + valid[1:],
        "zero-form-byte": b"\x00" + valid[1:],
        "not-on-curve": valid[:-1] + bytes([valid[-1] ^ 1]),
        "all-zero": b"\x04" + bytes(2 * size),
        "x-all-ones": b"\x04" + b"\xff" * size + valid[1 + size :],
    }
    if curve_code is G.secp256r1:
        # x = p is out of range even though it has the right length (§4.3.8.2 step 2).
        points["x-equals-p"] = b"\x04" + P256_P.to_bytes(32, "big") + valid[33:]
    return points


BAD_POINT_CASES = [
    (code, case)
    for code in (
        G.secp256r1, G.secp384r1, G.secp521r1,
        G.brainpoolP256r1tls13, G.brainpoolP384r1tls13, G.brainpoolP512r1tls13,
    )
    for case in _bad_points(code)
]


@pytest.mark.parametrize(
    ("code", "case"), BAD_POINT_CASES, ids=[f"{c.name}-{n}" for c, n in BAD_POINT_CASES]
)
def test_invalid_nist_point(code: NamedGroup, case: str) -> None:
    group = get_group(code)
    point = _bad_points(code)[case]
    with illegal_parameter():
        group.respond(point)
    with illegal_parameter():
        group.generate().complete(point)


@pytest.mark.parametrize(
    ("code", "curve"),
    [(G.SecP256r1MLKEM768, G.secp256r1), (G.SecP384r1MLKEM1024, G.secp384r1)],
    ids=["SecP256r1MLKEM768", "SecP384r1MLKEM1024"],
)
def test_invalid_point_inside_hybrid(code: NamedGroup, curve: NamedGroup) -> None:
    group = get_group(code)
    point_len = get_group(curve).public_length
    client = group.generate()
    response, _ = group.respond(client.public)
    for point in _bad_points(curve).values():
        with illegal_parameter():
            group.respond(point + client.public[point_len:])
        with illegal_parameter():
            client.complete(point + response[point_len:])


def _with_first_coefficient(ek: bytes, value: int) -> bytes:
    """Set ek's first 12-bit coefficient (FIPS 203 ByteEncode12, little-endian)."""
    return bytes([value & 0xFF, (ek[1] & 0xF0) | (value >> 8)]) + ek[2:]


def _with_last_coefficient(ek: bytes, value: int) -> bytes:
    """Set the last coefficient of t-hat (just before the 32-byte rho)."""
    end = len(ek) - 32
    last_two = bytes([(ek[end - 2] & 0x0F) | ((value & 0x0F) << 4), value >> 4])
    return ek[: end - 2] + last_two + ek[end:]


@pytest.mark.parametrize("code", [G.MLKEM768, G.MLKEM1024], ids=lambda c: c.name)
def test_mlkem_modulus_check(code: NamedGroup) -> None:
    # FIPS 203 §7.2 check 2 / draft-ietf-tls-mlkem §4.2: every coefficient < q.
    group = get_group(code)
    ek = group.generate().public
    q = 3329
    # q - 1 is the largest valid coefficient: accepted (cryptography really checks).
    group.respond(_with_first_coefficient(ek, q - 1))
    group.respond(_with_last_coefficient(ek, q - 1))
    for value in (q, q + 1, 0xFFF):
        with illegal_parameter():
            group.respond(_with_first_coefficient(ek, value))
        with illegal_parameter():
            group.respond(_with_last_coefficient(ek, value))


@pytest.mark.parametrize(
    ("code", "kem_first", "dh_len"),
    [
        (G.X25519MLKEM768, True, 32),
        (G.SecP256r1MLKEM768, False, 65),
        (G.SecP384r1MLKEM1024, False, 97),
    ],
    ids=lambda v: v.name if isinstance(v, NamedGroup) else None,
)
def test_mlkem_modulus_check_inside_hybrid(
    code: NamedGroup, kem_first: bool, dh_len: int
) -> None:
    group = get_group(code)
    public = group.generate().public
    if kem_first:
        bad = _with_first_coefficient(public[:-dh_len], 0xFFF) + public[-dh_len:]
    else:
        bad = public[:dh_len] + _with_first_coefficient(public[dh_len:], 0xFFF)
    with illegal_parameter():
        group.respond(bad)


@pytest.mark.parametrize("code", KEM_GROUPS, ids=lambda c: c.name)
def test_tampered_ciphertext_gives_a_different_secret(code: NamedGroup) -> None:
    # ML-KEM's implicit rejection: no error, just a secret the peer does not
    # share, so the handshake fails later at Finished.
    group = get_group(code)
    share = group.generate()
    response, secret = group.respond(share.public)
    # Flip a byte inside the ciphertext part (after the point for the NIST hybrids).
    index = {G.SecP256r1MLKEM768: 65 + 10, G.SecP384r1MLKEM1024: 97 + 10}.get(code, 10)
    tampered = response[:index] + bytes([response[index] ^ 1]) + response[index + 1 :]
    assert share.complete(tampered) != secret


def test_groups_and_shares_are_the_public_interface() -> None:
    for code in SUPPORTED_GROUPS:
        group = get_group(code)
        assert isinstance(group, Group)
        assert isinstance(group.generate(), KeyShare)
        assert get_group(int(code)) is group


# --- P-521 and brainpool (RFC 9846 §4.3.8.2, §7.4.2; RFC 8734 §2) ------------------------

# (p, a, b) of each curve: SEC 2 for P-521, RFC 5639 §3.4-3.7 for brainpool.
# test_curve_constants proves them against points OpenSSL makes.
CURVES = {
    G.secp521r1: (ec.SECP521R1(), 2**521 - 1, 2**521 - 4, int(
        "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b"
        "1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00", 16)),
    G.brainpoolP256r1tls13: (ec.BrainpoolP256R1(), int(
        "a9fb57dba1eea9bc3e660a909d838d726e3bf623d52620282013481d1f6e5377", 16), int(
        "7d5a0975fc2c3057eef67530417affe7fb8055c126dc5c6ce94a4b44f330b5d9", 16), int(
        "26dc5c6ce94a4b44f330b5d9bbd77cbf958416295cf7e1ce6bccdc18ff8c07b6", 16)),
    G.brainpoolP384r1tls13: (ec.BrainpoolP384R1(), int(
        "8cb91e82a3386d280f5d6f7e50e641df152f7109ed5456b412b1da197fb71123acd3a729901d1a71874700133107ec53",
        16), int(
        "7bc382c63d8c150c3c72080ace05afa0c2bea28e4fb22787139165efba91f90f8aa5814a503ad4eb04a8c7dd22ce2826",
        16), int(
        "04a8c7dd22ce28268b39b55416f0447c2fb77de107dcd2a62e880ea53eeb62d57cb4390295dbc9943ab78696fa504c11",
        16)),
    G.brainpoolP512r1tls13: (ec.BrainpoolP512R1(), int(
        "aadd9db8dbe9c48b3fd4e6ae33c9fc07cb308db3b3c9d20ed6639cca703308717d4d9b009bc66842aecda12ae6a380"
        "e62881ff2f2d82c68528aa6056583a48f3", 16), int(
        "7830a3318b603b89e2327145ac234cc594cbdd8d3df91610a83441caea9863bc2ded5d5aa8253aa10a2ef1c98b9ac8"
        "b57f1117a72bf2c7b9e7c1ac4d77fc94ca", 16), int(
        "3df91610a83441caea9863bc2ded5d5aa8253aa10a2ef1c98b9ac8b57f1117a72bf2c7b9e7c1ac4d77fc94cadc083e"
        "67984050b75ebae5dd2809bd638016f723", 16)),
}


def _xy(point: bytes) -> tuple[int, int]:
    size = (len(point) - 1) // 2
    return int.from_bytes(point[1 : 1 + size], "big"), int.from_bytes(point[1 + size :], "big")


@pytest.mark.parametrize("code", CURVES, ids=lambda c: c.name)
def test_curve_constants(code: NamedGroup) -> None:
    _, p, a, b = CURVES[code]
    x, y = _xy(get_group(code).generate().public)
    assert (y * y - (x**3 + a * x + b)) % p == 0


@pytest.mark.parametrize("code", CURVES, ids=lambda c: c.name)
def test_coordinates_at_or_above_p_are_refused(code: NamedGroup) -> None:
    """§4.3.8.2 step 2: x and y in [0, p-1].  (x + p, y) is the same point
    modulo p, so only a range check can refuse it."""
    group = get_group(code)
    _, p, _, _ = CURVES[code]
    size = (group.public_length - 1) // 2
    limit = 1 << (8 * size)
    tried = 0
    for coordinate in (0, 1):
        while True:  # a point whose coordinate + p still fits in the field size
            point = group.generate().public
            xy = list(_xy(point))
            tried += 1
            assert tried < 500, "no point with a small enough coordinate"
            if xy[coordinate] + p < limit:
                break
        group.respond(point)  # the genuine point is fine
        xy[coordinate] += p
        shifted = b"\x04" + b"".join(v.to_bytes(size, "big") for v in xy)
        with illegal_parameter():
            group.respond(shifted)
        with illegal_parameter():
            group.generate().complete(shifted)


@pytest.mark.parametrize("code", CURVES, ids=lambda c: c.name)
def test_ecdh_against_raw_cryptography(code: NamedGroup) -> None:
    """The shared secret is the x-coordinate at full field length (§7.4.2),
    computed on the other side with cryptography directly."""
    curve = CURVES[code][0]
    group = get_group(code)
    peer = ec.generate_private_key(curve)
    response, secret = group.respond(_p_point(peer))
    expected = peer.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(curve, response)
    )
    assert secret == expected and len(secret) == (curve.key_size + 7) // 8
    share = group.generate()
    theirs = peer.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(curve, share.public)
    )
    assert share.complete(_p_point(peer)) == theirs


def test_p521_known_private_scalar() -> None:
    scalar = (12345).to_bytes(66, "big")
    share = get_group(G.secp521r1).from_private_bytes(scalar)
    assert share.public == _p_point(ec.derive_private_key(12345, ec.SECP521R1()))


# --- X448 (RFC 7748) ------------------------------------------------------------------------


def test_x448_rfc7748_vector() -> None:
    # RFC 7748 §6.2, Diffie-Hellman with Curve448.
    alice_private = bytes.fromhex(
        "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf574a9419744897391006382a6f127ab1d9ac2d8c0a598726b"
    )
    alice_public = bytes.fromhex(
        "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bbc836647241d953d40c5b12da88120d53177f80e532c41fa0"
    )
    bob_private = bytes.fromhex(
        "1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d6927c120bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d"
    )
    bob_public = bytes.fromhex(
        "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b43027d8b972fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609"
    )
    shared = bytes.fromhex(
        "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56fd2464c335543936521c24403085d59a449a5037514a879d"
    )
    group = get_group(G.x448)
    alice = group.from_private_bytes(alice_private)
    assert alice.public == alice_public
    bob = group.from_private_bytes(bob_private)
    assert group.respond(alice.public, ephemeral=bob) == (bob_public, shared)
    assert alice.complete(bob_public) == shared


X448_P = 2**448 - 2**224 - 1
# Points whose X448 output is all zero (RFC 7748 §6.2: "MAY check ... all-zero value"),
# which RFC 9846 §7.4.2 turns into a MUST abort.
LOW_ORDER_X448 = [0, 1, X448_P - 1]


@pytest.mark.parametrize("u", LOW_ORDER_X448, ids=["zero", "one", "p-1"])
def test_x448_all_zero_secret(u: int) -> None:
    group = get_group(G.x448)
    point = u.to_bytes(56, "little")
    with illegal_parameter():
        group.respond(point)
    with illegal_parameter():
        group.generate().complete(point)


def test_x448_is_raw_cryptography_compatible() -> None:
    peer = x448.X448PrivateKey.generate()
    response, secret = get_group(G.x448).respond(peer.public_key().public_bytes_raw())
    assert peer.exchange(x448.X448PublicKey.from_public_bytes(response)) == secret


# --- FFDHE (RFC 7919; RFC 9846 §4.3.8.1 and §7.4.1) ---------------------------------------


def _openssl_ffdhe_prime(code: NamedGroup) -> int:
    """p of OpenSSL's built-in copy of the group (an independent source)."""
    out = subprocess.run(
        [require_binary("openssl"), "genpkey", "-genparam", "-algorithm", "DH",
         "-pkeyopt", f"group:{code.name}"],
        capture_output=True, check=True, timeout=30,
    ).stdout
    with warnings.catch_warnings():  # cryptography 50 deprecates its FFDH API
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        numbers = serialization.load_pem_parameters(out).parameter_numbers()  # type: ignore[union-attr]
    assert numbers.g == 2
    p: int = numbers.p
    return p


@pytest.mark.parametrize("code", FFDHE_GROUPS, ids=lambda c: c.name)
def test_ffdhe_prime_is_rfc7919s(code: NamedGroup) -> None:
    p = ffdhe_prime(code)
    bits = int(code.name.removeprefix("ffdhe"))
    assert p.bit_length() == bits
    # RFC 7919 Appendix A: the top and bottom 64 bits are all ones.
    assert p >> (bits - 64) == 2**64 - 1 and p & (2**64 - 1) == 2**64 - 1
    assert p == _openssl_ffdhe_prime(code)


def _pad(value: int, code: NamedGroup) -> bytes:
    return value.to_bytes(get_group(code).public_length, "big")


def test_ffdhe_known_answer_from_the_formula() -> None:
    """Y = g^x mod p and Z = Y_peer^x mod p computed here with pow() (RFC 7919 g = 2)."""
    code = G.ffdhe2048
    p = ffdhe_prime(code)
    group = get_group(code)
    x_client = int.from_bytes(bytes(range(1, 33)), "big")
    x_server = int.from_bytes(bytes(range(100, 132)), "big")
    client = group.from_private_bytes(_pad(x_client, code))
    server = group.from_private_bytes(_pad(x_server, code))
    y_client, y_server = pow(2, x_client, p), pow(2, x_server, p)
    assert client.public == _pad(y_client, code)
    z = pow(y_client, x_server, p)
    assert group.respond(client.public, ephemeral=server) == (_pad(y_server, code), _pad(z, code))
    assert client.complete(server.public) == _pad(z, code)


@pytest.mark.parametrize("code", FFDHE_GROUPS, ids=lambda c: c.name)
def test_ffdhe_shared_secret_keeps_leading_zeros(code: NamedGroup) -> None:
    """§7.4.1: Z is left-padded to the size of p (TLS 1.2 stripped the zeros).
    The peer's Y = 2 (g itself, a legal public value) and our x = 1000 give
    Z = 2^1000, far shorter than p."""
    ours = get_group(code).from_private_bytes(_pad(1000, code))
    secret = ours.complete(_pad(2, code))
    assert secret == _pad(2**1000, code)
    assert secret[:8] == bytes(8)


def _bad_ffdhe_values(code: NamedGroup) -> dict[str, bytes]:
    p = ffdhe_prime(code)
    size = get_group(code).public_length
    return {
        "Y=0": _pad(0, code),
        "Y=1": _pad(1, code),
        "Y=p-1": _pad(p - 1, code),
        "Y=p": _pad(p, code),
        "Y=p+1": _pad(p + 1, code),
        "all-ones": b"\xff" * size,
        # Y is always padded to the size of p: a minimal encoding is malformed
        # even when the value itself (2^1000) is fine.
        "unpadded": (2**1000).to_bytes(126, "big"),
    }


BAD_FFDHE_CASES = [(code, case) for code in FFDHE_GROUPS for case in _bad_ffdhe_values(G.ffdhe2048)]


@pytest.mark.parametrize(
    ("code", "case"), BAD_FFDHE_CASES, ids=[f"{c.name}-{n}" for c, n in BAD_FFDHE_CASES]
)
def test_ffdhe_public_value_outside_1_y_p_minus_1(code: NamedGroup, case: str) -> None:
    """§4.3.8.1: "Peers MUST validate each other's public key Y by ensuring
    that 1 < Y < p-1" -> illegal_parameter, as initiator and as responder."""
    group = get_group(code)
    value = _bad_ffdhe_values(code)[case]
    with illegal_parameter():
        group.respond(value)
    with illegal_parameter():
        group.generate().complete(value)


@pytest.mark.parametrize("code", FFDHE_GROUPS, ids=lambda c: c.name)
def test_ffdhe_extreme_legal_values(code: NamedGroup) -> None:
    """Y = 2 and Y = p-2 pass §4.3.8.1 (p-2 is not even in g's subgroup: the
    spec's check is the range, see groups.py for why that suffices)."""
    p = ffdhe_prime(code)
    group = get_group(code)
    x = 0xC0FFEE
    ours = group.from_private_bytes(_pad(x, code))
    for y in (2, p - 2):
        assert ours.complete(_pad(y, code)) == _pad(pow(y, x, p), code)


@pytest.mark.parametrize("data", [bytes(256), _pad(1, G.ffdhe2048), bytes(255)])
def test_ffdhe_bad_private_bytes(data: bytes) -> None:
    with pytest.raises(ConfigurationError):
        get_group(G.ffdhe2048).from_private_bytes(data)
