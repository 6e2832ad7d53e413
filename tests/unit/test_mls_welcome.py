"""KeyPackages (RFC 9420 §10) and the Welcome's encryption (§12.4.3.1):
welcome.json, KeyPackage creation and every validation rule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from longtls.errors import MLSDecryptError, MLSError
from longtls.mls.codec import Writer
from longtls.mls.crypto import CipherSuite, suite
from longtls.mls.framing import MLSMessage
from longtls.mls.key_package import (
    MAX_LIFETIME,
    KeyPackageBundle,
    create_key_package,
    validate_key_package,
)
from longtls.mls.key_schedule import derive_epoch_from_joiner
from longtls.mls.messages import (
    BasicCredential,
    Capabilities,
    Extension,
    GroupContext,
    GroupInfo,
    GroupSecrets,
    KeyPackage,
    Lifetime,
    PathSecret,
    PreSharedKeyID,
    ResumptionPSKUsage,
    Welcome,
)
from longtls.mls.tree import sign_leaf_node
from longtls.mls.welcome import (
    encrypt_group_info,
    encrypt_group_secrets,
    open_welcome,
    sign_group_info,
    verify_group_info,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls" / "welcome.json"
IMPLEMENTED = {int(c) for c in CipherSuite}
NOW = 1_800_000_000


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())
    return data


def test_vector_suites_are_the_implemented_ones_and_the_rest() -> None:
    suites = [v["cipher_suite"] for v in _vectors()]
    assert sorted(s for s in suites if s in IMPLEMENTED) == [1, 3]
    assert sorted(s for s in suites if s not in IMPLEMENTED) == [2, 4, 5, 6, 7]


@pytest.mark.parametrize("cipher_suite", [1, 3])
def test_welcome_vectors(cipher_suite: int) -> None:
    (v,) = [v for v in _vectors() if v["cipher_suite"] == cipher_suite]
    cs = suite(cipher_suite)
    kp = MLSMessage.from_bytes(bytes.fromhex(v["key_package"])).body
    welcome = MLSMessage.from_bytes(bytes.fromhex(v["welcome"])).body
    assert isinstance(kp, KeyPackage) and isinstance(welcome, Welcome)
    # Only the init key is given: the other private keys play no part here.
    bundle = KeyPackageBundle(kp, bytes.fromhex(v["init_priv"]), b"", b"")
    opened = open_welcome(welcome, bundle)
    info = opened.group_info
    verify_group_info(cs, bytes.fromhex(v["signer_pub"]), info)
    # The confirmation tag: the key schedule from the joiner secret, no PSKs.
    epoch = derive_epoch_from_joiner(cs, opened.group_secrets.joiner_secret, info.group_context.to_bytes())
    assert info.confirmation_tag == cs.mac(epoch.confirmation_key,
                                           info.group_context.confirmed_transcript_hash)
    # Another key's signature does not verify.
    with pytest.raises(MLSError):
        verify_group_info(cs, cs.generate_signature_key_pair()[1], info)


# ------------------------------------------------------------- KeyPackages


def _bundle(cipher_suite: int = 1, **kw: Any) -> KeyPackageBundle:
    return create_key_package(cipher_suite, BasicCredential(b"alice"), now=NOW, **kw)


@pytest.mark.parametrize("cipher_suite", [int(c) for c in CipherSuite])
def test_created_key_package_is_valid_and_fresh(cipher_suite: int) -> None:
    b = _bundle(cipher_suite)
    kp = b.key_package
    cs = suite(cipher_suite)
    validate_key_package(kp, cipher_suite=cipher_suite, now=NOW)
    # The private keys are the public keys' (§10: init_key, leaf encryption_key, signature_key).
    assert cs.hpke_public_key(b.init_private_key) == kp.init_key
    assert cs.hpke_public_key(b.encryption_private_key) == kp.leaf_node.encryption_key
    assert cs.signature_public_key(b.signature_private_key) == kp.leaf_node.signature_key
    # Signatures from their formulas (§5.1.2): SignContent{"MLS 1.0 KeyPackageTBS", tbs}.
    tbs = Writer().u16(1).u16(cipher_suite).opaque(kp.init_key).bytes() + kp.leaf_node.to_bytes() + b"\x00"
    assert tbs == kp.tbs()
    assert cs.verify_with_label(kp.leaf_node.signature_key, b"KeyPackageTBS", tbs, kp.signature)
    lifetime = kp.leaf_node.lifetime
    assert lifetime is not None and lifetime.not_before <= NOW < lifetime.not_after
    assert cipher_suite in kp.leaf_node.capabilities.cipher_suites
    # Fresh keys every time; a KeyPackage survives the wire.
    other = _bundle(cipher_suite).key_package
    assert other.init_key != kp.init_key and other.leaf_node.encryption_key != kp.leaf_node.encryption_key
    assert MLSMessage.from_bytes(MLSMessage(kp).to_bytes()).body == kp
    assert "init_private_key" not in repr(b).split("key_package=")[0] and b.init_private_key.hex() not in repr(b)


def test_given_signature_key_is_used() -> None:
    cs = suite(1)
    priv, pub = cs.generate_signature_key_pair()
    b = create_key_package(1, BasicCredential(b"a"), priv, now=NOW)
    assert b.key_package.leaf_node.signature_key == pub


def _resign(b: KeyPackageBundle, kp: KeyPackage, leaf_too: bool = True) -> KeyPackage:
    """kp with valid signatures (after a change), so the check tested is the one failing."""
    cs = suite(1)
    leaf = kp.leaf_node
    if leaf_too:
        leaf = sign_leaf_node(cs, leaf, b.signature_private_key)
    kp = replace(kp, leaf_node=leaf)
    return replace(kp, signature=cs.sign_with_label(b.signature_private_key, b"KeyPackageTBS", kp.tbs()))


def test_key_package_validation_rules() -> None:
    b = _bundle()
    kp = b.key_package
    leaf = kp.leaf_node

    def bad(k: KeyPackage, match: str, **kw: Any) -> None:
        with pytest.raises(MLSError, match=match):
            validate_key_package(k, now=kw.pop("now", NOW), **kw)

    bad(_resign(b, replace(kp, version=2)), "version")
    bad(kp, "cipher suite", cipher_suite=3)
    bad(_resign(b, replace(kp, cipher_suite=2)), "not supported")
    bad(replace(kp, signature=kp.signature[:-1] + bytes([kp.signature[-1] ^ 1])), "KeyPackage signature")
    bad_leaf = replace(leaf, signature=leaf.signature[:-1] + bytes([leaf.signature[-1] ^ 1]))
    bad(_resign(b, replace(kp, leaf_node=bad_leaf), leaf_too=False), "LeafNode signature")
    bad(_resign(b, replace(kp, init_key=leaf.encryption_key)), "init_key")
    bad(_resign(b, replace(kp, init_key=b"\x01" * 31)), "HPKE public key")
    # Lifetime: outside it, or longer than the maximum (§7.2, §7.3).
    bad(kp, "lifetime", now=NOW + 2 * 24 * 3600)
    bad(kp, "lifetime", now=NOW - 2 * 3600)
    long = replace(leaf, lifetime=Lifetime(NOW - 10, NOW - 10 + MAX_LIFETIME + 1))
    bad(_resign(b, replace(kp, leaf_node=long)), "exceeds")
    validate_key_package(_resign(b, replace(kp, leaf_node=long)), now=NOW, max_lifetime=None)
    # Capabilities: the credential type, the suite, extensions, defaults not listed.
    caps = leaf.capabilities
    bad(_resign(b, replace(kp, leaf_node=replace(leaf, capabilities=replace(caps, credentials=(2,))))),
        "credential type")
    bad(_resign(b, replace(kp, leaf_node=replace(leaf, capabilities=replace(caps, cipher_suites=(3,))))),
        "capabilities")
    bad(_resign(b, replace(kp, leaf_node=replace(leaf, capabilities=replace(caps, proposals=(1,))))),
        "default")
    bad(_resign(b, replace(kp, extensions=(Extension(0xFF00, b""),))), "extension")
    ok_caps = replace(caps, extensions=(0xFF00,))
    validate_key_package(_resign(b, replace(kp, extensions=(Extension(0xFF00, b""),),
                                            leaf_node=replace(leaf, capabilities=ok_caps))), now=NOW)

    # The application's credential check is called with the credential and key.
    seen: list[Any] = []

    def refuse(cred: Any, key: bytes) -> None:
        seen.append((cred, key))
        raise MLSError("not trusted")

    bad(kp, "not trusted", credential_check=refuse)
    assert seen == [(BasicCredential(b"alice"), leaf.signature_key)]


def test_capabilities_must_list_mls10() -> None:
    b = _bundle(capabilities=Capabilities(versions=(2,), cipher_suites=(1,), credentials=(1,)))
    with pytest.raises(MLSError, match=r"MLS 1\.0"):
        validate_key_package(b.key_package, now=NOW)


# ------------------------------------------------------------ the Welcome


def _group_info(cs_code: int, signer_priv: bytes) -> GroupInfo:
    cs = suite(cs_code)
    ctx = GroupContext(1, cs_code, b"group", 1, b"t" * 32, b"c" * 32)
    return sign_group_info(cs, signer_priv, GroupInfo(ctx, (), b"tag", 0))


def _welcome(b: KeyPackageBundle, joiner: bytes, info: GroupInfo, psks: tuple[PreSharedKeyID, ...] = ()) -> Welcome:
    from longtls.mls.key_schedule import welcome_secret

    cs = b.suite
    egi = encrypt_group_info(cs, welcome_secret(cs, joiner), info)
    secrets = GroupSecrets(joiner, PathSecret(b"p" * 32), psks)
    return Welcome(b.key_package.cipher_suite, (encrypt_group_secrets(cs, b.key_package, egi, secrets),), egi)


def test_welcome_round_trip_and_rejections() -> None:
    b = _bundle()
    cs = b.suite
    signer_priv, signer_pub = cs.generate_signature_key_pair()
    info = _group_info(1, signer_priv)
    joiner = b"j" * 32
    w = _welcome(b, joiner, info)
    opened = open_welcome(w, b)
    assert opened.group_info == info and opened.group_secrets.joiner_secret == joiner
    assert opened.group_secrets.path_secret == PathSecret(b"p" * 32)
    verify_group_info(cs, signer_pub, opened.group_info)
    assert w.secrets[0].new_member == b.ref()

    other = _bundle()
    with pytest.raises(MLSError, match="no entry"):
        open_welcome(w, other)
    with pytest.raises(MLSError, match="cipher suite"):
        open_welcome(replace(w, cipher_suite=3), b)
    # A tampered encrypted GroupInfo: the GroupSecrets' HPKE context covers it.
    tampered = replace(w, encrypted_group_info=w.encrypted_group_info[:-1] + b"\x00")
    with pytest.raises(MLSDecryptError):
        open_welcome(tampered, b)
    # Our init key, but another KeyPackage with the same ref cannot be forged: wrong key fails.
    wrong_key = replace(b, init_private_key=other.init_private_key)
    with pytest.raises(MLSDecryptError):
        open_welcome(w, wrong_key)
    # PSKs: an unknown one is refused; a known one enters the welcome secret.
    psk_id = PreSharedKeyID.external(b"id", b"n" * 32)
    with pytest.raises(MLSError, match="PSK"):
        open_welcome(_welcome(b, joiner, info, (psk_id,)), b)
    with pytest.raises(MLSError, match="PSK"):
        open_welcome(_welcome(b, joiner, info, (psk_id,)), b, {b"other": b"v"}.get)
    resumption = PreSharedKeyID.resumption(ResumptionPSKUsage.application, b"g", 1, b"n" * 32)
    with pytest.raises(MLSError, match="PSK"):
        open_welcome(_welcome(b, joiner, info, (resumption,)), b, {b"id": b"v"}.get)
    # The sender encrypted the GroupInfo without the PSK: it does not open with it.
    with pytest.raises(MLSDecryptError):
        open_welcome(_welcome(b, joiner, info, (psk_id,)), b, {b"id": b"v"}.get)
    # A GroupInfo of another suite inside.
    with pytest.raises(MLSError, match="GroupInfo cipher suite"):
        open_welcome(_welcome(b, joiner, _group_info(3, signer_priv)), b)
