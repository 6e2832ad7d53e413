"""The MLS key schedule (RFC 9420 §8) against key-schedule.json: every epoch of
every vector whose cipher suite longtls implements, including the exporter and
the external key pair."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from longtls.mls.codec import Writer
from longtls.mls.crypto import CipherSuite, suite
from longtls.mls.framing import MLSMessage
from longtls.mls.key_schedule import (
    EpochSecrets,
    derive_epoch,
    derive_epoch_from_joiner,
    joiner_secret,
    mls_exporter,
    psk_secret,
    welcome_key_nonce,
    welcome_secret,
)
from longtls.mls.messages import GroupInfo, GroupSecrets, KeyPackage, Welcome
from longtls.mls.transcript import verify_confirmation_tag

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls" / "key-schedule.json"
IMPLEMENTED = {int(c) for c in CipherSuite}
# The vector suites longtls does not implement (P-256, X448, P-521, P-384 suites).
NOT_IMPLEMENTED = {2, 4, 5, 6, 7}

SECRET_NAMES = (
    "joiner_secret",
    "welcome_secret",
    "init_secret",
    "sender_data_secret",
    "encryption_secret",
    "exporter_secret",
    "epoch_authenticator",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
)


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())
    return data


def _group_context(
    cipher_suite: int, group_id: bytes, epoch: int, tree_hash: bytes, cth: bytes
) -> bytes:
    # struct { ProtocolVersion version = mls10; CipherSuite cipher_suite;
    # opaque group_id<V>; uint64 epoch; opaque tree_hash<V>;
    # opaque confirmed_transcript_hash<V>; Extension extensions<V>; } (§8.1),
    # extensions empty as the vector format says.
    return (
        Writer()
        .u16(1)
        .u16(cipher_suite)
        .opaque(group_id)
        .u64(epoch)
        .opaque(tree_hash)
        .opaque(cth)
        .opaque(b"")
        .bytes()
    )


def test_vector_suites_are_the_implemented_ones_and_the_rest() -> None:
    suites = [v["cipher_suite"] for v in _vectors()]
    assert len(suites) == 7
    assert {s for s in suites if s in IMPLEMENTED} == {1, 3}
    assert {s for s in suites if s not in IMPLEMENTED} == NOT_IMPLEMENTED


def _exporter_label(vector_label: str) -> bytes:
    # The format description says "label": string.  The generator's labels
    # look like hex, but the string itself (its ASCII bytes) is the label;
    # the context, binary data, is hex-decoded.
    return vector_label.encode("ascii")


@pytest.mark.parametrize("cipher_suite", sorted({1, 3}))
def test_key_schedule_vectors(cipher_suite: int) -> None:
    (vector,) = [v for v in _vectors() if v["cipher_suite"] == cipher_suite]
    cs = suite(cipher_suite)
    group_id = bytes.fromhex(vector["group_id"])
    init = bytes.fromhex(vector["initial_init_secret"])
    assert len(vector["epochs"]) == 5
    for epoch, e in enumerate(vector["epochs"]):
        gc = _group_context(
            cipher_suite,
            group_id,
            epoch,
            bytes.fromhex(e["tree_hash"]),
            bytes.fromhex(e["confirmed_transcript_hash"]),
        )
        assert gc.hex() == e["group_context"]
        secrets = derive_epoch(
            cs, init, bytes.fromhex(e["commit_secret"]), gc, psk=bytes.fromhex(e["psk_secret"])
        )
        for name in SECRET_NAMES:
            assert getattr(secrets, name).hex() == e[name], (epoch, name)
        # external_pub = DeriveKeyPair(external_secret).public (§8).
        assert secrets.external_key_pair()[1].hex() == e["external_pub"]
        ex = e["exporter"]
        exported = secrets.export(
            _exporter_label(ex["label"]), bytes.fromhex(ex["context"]), ex["length"]
        )
        assert exported.hex() == ex["secret"]
        assert len(exported) == ex["length"]
        # A joiner starts from the joiner secret and reaches the same epoch.
        joined = derive_epoch_from_joiner(
            cs, secrets.joiner_secret, gc, bytes.fromhex(e["psk_secret"])
        )
        assert joined == secrets
        assert (
            welcome_secret(cs, secrets.joiner_secret, bytes.fromhex(e["psk_secret"])).hex()
            == e["welcome_secret"]
        )
        init = secrets.init_secret


def _expand_with_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    # RFC 5869 HKDF-Expand with SHA-256 over KDFLabel (§8), written out here
    # from the RFCs so the test does not lean on the code under test.
    def vec(data: bytes) -> bytes:  # opaque<V> with a 1- or 2-byte length (§2.1.2)
        n = len(data)
        assert n < 1 << 14
        return (bytes([n]) if n < 64 else (0x4000 | n).to_bytes(2, "big")) + data

    info = length.to_bytes(2, "big") + vec(b"MLS 1.0 " + label) + vec(context)
    out, block = b"", b""
    counter = 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def test_no_psk_is_the_all_zero_vector() -> None:
    cs = suite(1)
    init, commit = bytes(range(32)), bytes(range(32, 64))
    gc = _group_context(1, b"group", 3, b"\x01" * 32, b"\x02" * 32)
    assert derive_epoch(cs, init, commit, gc) == derive_epoch(cs, init, commit, gc, psk=bytes(32))
    assert psk_secret(cs, []) is None
    # The joiner secret written out from the §8 diagram with RFC 5869 HMAC.
    expected = _expand_with_label(_extract(init, commit), b"joiner", gc, 32)
    assert joiner_secret(cs, init, commit, gc) == expected


def test_exporter_and_welcome_key_follow_the_formulas() -> None:
    cs = suite(3)  # ChaCha20-Poly1305: Nk 32, Nn 12
    exporter_secret = bytes(range(100, 132))
    # §8.5: ExpandWithLabel(DeriveSecret(exporter_secret, Label), "exported", Hash(Context), Length)
    derived = _expand_with_label(exporter_secret, b"EXPORTER-test", b"", 32)
    expected = _expand_with_label(derived, b"exported", hashlib.sha256(b"ctx").digest(), 42)
    assert mls_exporter(cs, exporter_secret, b"EXPORTER-test", b"ctx", 42) == expected
    welcome = bytes(range(7, 39))
    key, nonce = welcome_key_nonce(cs, welcome)
    assert key == _expand_with_label(welcome, b"key", b"", 32)
    assert nonce == _expand_with_label(welcome, b"nonce", b"", 12)


def test_psk_secret_chains_the_psks_in_order() -> None:
    cs = suite(1)
    zero = bytes(32)
    psks = [(b"\x01id-one", b"k" * 32), (b"\x01id-two", b"q" * 16)]
    # §8.4, written out: psk_input_i = ExpandWithLabel(Extract(0, psk_i),
    # "derived psk", PSKLabel_i, Nh); psk_secret_i+1 = Extract(psk_input_i, psk_secret_i).
    secret = zero
    for index, (psk_id, psk) in enumerate(psks):
        label = psk_id + index.to_bytes(2, "big") + len(psks).to_bytes(2, "big")
        psk_input = _expand_with_label(_extract(zero, psk), b"derived psk", label, 32)
        secret = _extract(psk_input, secret)
    assert psk_secret(cs, psks) == secret
    assert psk_secret(cs, psks[::-1]) != secret


def test_epoch_secrets_repr_holds_no_secret() -> None:
    cs = suite(1)
    secrets = derive_epoch(cs, bytes(32), bytes(32), b"context")
    text = repr(secrets)
    assert "EpochSecrets" in text
    for name in SECRET_NAMES:
        value = getattr(secrets, name)
        assert value.hex() not in text
        assert repr(value) not in text


def test_wrong_sizes_are_refused() -> None:
    cs = suite(1)
    with pytest.raises(ValueError):
        derive_epoch(cs, bytes(31), bytes(32), b"gc")
    with pytest.raises(ValueError):
        derive_epoch(cs, bytes(32), bytes(48), b"gc")
    with pytest.raises(ValueError):
        derive_epoch(cs, bytes(32), bytes(32), b"gc", psk=bytes(16))
    assert isinstance(derive_epoch(cs, bytes(32), bytes(32), b"gc"), EpochSecrets)


PASSIVE_WELCOME = VECTORS.with_name("passive-client-welcome.json")


def test_joining_by_welcome_with_and_without_psks() -> None:
    # passive-client-welcome.json, the join only (the epochs after it need the
    # ratchet tree and commit processing): open the Welcome with init_priv,
    # compute psk_secret from the GroupSecrets' PSK list and the vector's
    # external PSKs (§8.4), derive the epoch from the joiner secret, and
    # check the GroupInfo's confirmation tag and the epoch authenticator.
    vectors: list[dict[str, Any]] = json.loads(PASSIVE_WELCOME.read_text())
    run = [v for v in vectors if v["cipher_suite"] in IMPLEMENTED]
    assert sorted({v["cipher_suite"] for v in run}) == [1, 3]
    assert {v["cipher_suite"] for v in vectors} - IMPLEMENTED == NOT_IMPLEMENTED
    with_psks = 0
    for v in run:
        cs = suite(v["cipher_suite"])
        welcome = MLSMessage.from_bytes(bytes.fromhex(v["welcome"])).body
        key_package = MLSMessage.from_bytes(bytes.fromhex(v["key_package"])).body
        assert isinstance(welcome, Welcome) and isinstance(key_package, KeyPackage)
        ref = cs.make_key_package_ref(key_package.to_bytes())
        (mine,) = [s for s in welcome.secrets if s.new_member == ref]
        # §12.4.3.1: the GroupSecrets are encrypted with label "Welcome" and
        # the encrypted GroupInfo as context.
        group_secrets = GroupSecrets.from_bytes(
            cs.decrypt_with_label(
                bytes.fromhex(v["init_priv"]),
                b"Welcome",
                welcome.encrypted_group_info,
                mine.encrypted_group_secrets.kem_output,
                mine.encrypted_group_secrets.ciphertext,
            )
        )
        external = {bytes.fromhex(p["psk_id"]): bytes.fromhex(p["psk"]) for p in v["external_psks"]}
        psks = [(p.to_bytes(), external[p.psk_id or b""]) for p in group_secrets.psks]
        with_psks += bool(psks)
        psk = psk_secret(cs, psks)

        key, nonce = welcome_key_nonce(cs, welcome_secret(cs, group_secrets.joiner_secret, psk))
        group_info = GroupInfo.from_bytes(
            cs.aead_decrypt(key, nonce, b"", welcome.encrypted_group_info)
        )
        context = group_info.group_context
        secrets = derive_epoch_from_joiner(cs, group_secrets.joiner_secret, context.to_bytes(), psk)
        assert verify_confirmation_tag(
            cs,
            secrets.confirmation_key,
            context.confirmed_transcript_hash,
            group_info.confirmation_tag,
        )
        assert secrets.epoch_authenticator.hex() == v["initial_epoch_authenticator"]
    assert len(run) == 16 and with_psks == 8


def test_the_post_quantum_suite_has_the_same_schedule_and_its_own_external_key() -> None:
    # All three suites use HKDF-SHA256 (docs/mls.md, "Cipher suites"), so the
    # key schedule gives the same secrets; only the external key pair (the
    # suite's KEM, §8) differs.  No official vectors exist for this suite.
    xwing = suite(CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)
    (vector,) = [v for v in _vectors() if v["cipher_suite"] == 1]
    e = vector["epochs"][0]
    args = (
        bytes.fromhex(vector["initial_init_secret"]),
        bytes.fromhex(e["commit_secret"]),
        bytes.fromhex(e["group_context"]),
        bytes.fromhex(e["psk_secret"]),
    )
    pq = derive_epoch(xwing, *args)
    classic = derive_epoch(suite(1), *args)
    for name in SECRET_NAMES:
        assert getattr(pq, name) == getattr(classic, name)
    private, public = pq.external_key_pair()
    assert (len(private), len(public)) == (32, 1216)
    assert xwing.hpke_public_key(private) == public
    assert pq.external_key_pair() == (private, public)  # deterministic
