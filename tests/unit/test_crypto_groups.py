"""Key exchange groups: round trips, spec lengths, known answers and every malformed share."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from longtls.constants import AlertDescription, NamedGroup
from longtls.crypto.groups import SUPPORTED_GROUPS, Group, KeyShare, get_group
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
}
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
    )
    assert expected == SUPPORTED_GROUPS
    assert set(EXPECTED_LENGTHS) == set(SUPPORTED_GROUPS)


@pytest.mark.parametrize("code", [G.MLKEM512, G.x448, G.secp521r1, 0xFFFF])
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
    for code in (G.secp256r1, G.secp384r1)
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
