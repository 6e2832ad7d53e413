"""longtls.mls.crypto: MLS cipher suites and their functions (RFC 9420 §5).

Known answers come from outside longtls: the official MLS test vectors
(tests/vectors/mls/crypto-basics.json, "Crypto Basics" in test-vectors.md),
RFC 9180 Appendix A.1.1 (DeriveKeyPair of DHKEM(X25519, HKDF-SHA256)), and
for the X-Wing suite draft-connolly-cfrg-xwing-kem's and draft-ietf-hpke-pq's
vectors (tests/vectors/xwing/README.md).  Other expected values are computed
here from the spec's formulas with hashlib/hmac, not with the module under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from longtls.errors import MLSDecryptError, MLSError
from longtls.mls.crypto import SUITES, AEADId, CipherSuite, KEMId, Suite, suite

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
XWING = CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519
IMPLEMENTED = {int(cs) for cs in SUITES}


def _varint(n: int) -> bytes:
    # RFC 9420 §2.1.2, written out again so the tests do not lean on the codec
    return bytes([n]) if n < 64 else (0x4000 | n).to_bytes(2, "big") if n < 16384 else (0x8000_0000 | n).to_bytes(4, "big")


def _opaque(data: bytes) -> bytes:
    return _varint(len(data)) + data


def _crypto_basics() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / "mls" / "crypto-basics.json").read_text())
    return data


def _implemented_vectors() -> list[dict[str, Any]]:
    return [v for v in _crypto_basics() if v["cipher_suite"] in IMPLEMENTED]


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


# ------------------------------------------------------------ crypto-basics


def test_crypto_basics_covers_exactly_the_unimplemented_suites() -> None:
    # Every vector whose suite we implement runs below; the rest must be
    # exactly the RFC 9420 suites longtls leaves out (P-256, X448, P-521, P-384).
    suites = [v["cipher_suite"] for v in _crypto_basics()]
    ran = [cs for cs in suites if cs in IMPLEMENTED]
    not_run = [cs for cs in suites if cs not in IMPLEMENTED]
    assert ran == [1, 3]
    assert not_run == [2, 4, 5, 6, 7]
    for cs in not_run:
        with pytest.raises(MLSError, match="not supported"):
            suite(cs)


@pytest.fixture(params=_implemented_vectors(), ids=lambda v: f"suite{v['cipher_suite']}")
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    v: dict[str, Any] = request.param
    return v


def test_ref_hash(vector: dict[str, Any]) -> None:
    v = vector["ref_hash"]
    assert suite(vector["cipher_suite"]).ref_hash(v["label"].encode(), h(v["value"])) == h(v["out"])


def test_expand_with_label(vector: dict[str, Any]) -> None:
    v = vector["expand_with_label"]
    s = suite(vector["cipher_suite"])
    assert s.expand_with_label(h(v["secret"]), v["label"].encode(), h(v["context"]), v["length"]) == h(v["out"])


def test_derive_secret(vector: dict[str, Any]) -> None:
    v = vector["derive_secret"]
    assert suite(vector["cipher_suite"]).derive_secret(h(v["secret"]), v["label"].encode()) == h(v["out"])


def test_derive_tree_secret(vector: dict[str, Any]) -> None:
    v = vector["derive_tree_secret"]
    s = suite(vector["cipher_suite"])
    out = s.derive_tree_secret(h(v["secret"]), v["label"].encode(), v["generation"], v["length"])
    assert out == h(v["out"])


def test_sign_with_label(vector: dict[str, Any]) -> None:
    v = vector["sign_with_label"]
    s = suite(vector["cipher_suite"])
    label, content = v["label"].encode(), h(v["content"])
    assert s.verify_with_label(h(v["pub"]), label, content, h(v["signature"]))
    fresh = s.sign_with_label(h(v["priv"]), label, content)
    assert s.verify_with_label(h(v["pub"]), label, content, fresh)
    # Ed25519 is deterministic (RFC 8032 §5.1.6): the same bytes as the vector's
    assert fresh == h(v["signature"])
    assert s.signature_public_key(h(v["priv"])) == h(v["pub"])
    # anything else does not verify: another label, content or key
    assert not s.verify_with_label(h(v["pub"]), label + b"!", content, fresh)
    assert not s.verify_with_label(h(v["pub"]), label, content + b"\x00", fresh)
    other_priv, other_pub = s.generate_signature_key_pair()
    assert not s.verify_with_label(other_pub, label, content, fresh)
    assert s.verify_with_label(other_pub, label, content, s.sign_with_label(other_priv, label, content))
    assert not s.verify_with_label(h(v["pub"])[:31], label, content, fresh)  # not a key at all


def test_encrypt_with_label(vector: dict[str, Any]) -> None:
    v = vector["encrypt_with_label"]
    s = suite(vector["cipher_suite"])
    label, context, plaintext = v["label"].encode(), h(v["context"]), h(v["plaintext"])
    assert s.decrypt_with_label(h(v["priv"]), label, context, h(v["kem_output"]), h(v["ciphertext"])) == plaintext
    kem_output, ciphertext = s.encrypt_with_label(h(v["pub"]), label, context, plaintext)
    assert len(kem_output) == 32 and len(ciphertext) == len(plaintext) + 16
    assert s.decrypt_with_label(h(v["priv"]), label, context, kem_output, ciphertext) == plaintext
    assert s.hpke_public_key(h(v["priv"])) == h(v["pub"])


def test_decrypt_with_label_refuses_what_does_not_open(vector: dict[str, Any]) -> None:
    v = vector["encrypt_with_label"]
    s = suite(vector["cipher_suite"])
    args = (h(v["priv"]), v["label"].encode(), h(v["context"]), h(v["kem_output"]), h(v["ciphertext"]))
    flipped_ct = args[4][:-1] + bytes([args[4][-1] ^ 1])
    other_priv, _ = s.generate_key_pair()
    for bad in (
        (args[0], b"Welcome", *args[2:]),  # another label
        (*args[:2], args[2] + b"x", *args[3:]),  # another context
        (*args[:4], flipped_ct),
        (*args[:3], bytes(32), args[4]),  # another (low-order) kem_output
        (*args[:3], args[3][:31], args[4]),  # kem_output of the wrong size
        (other_priv, *args[1:]),
    ):
        with pytest.raises(MLSDecryptError):
            s.decrypt_with_label(*bad)


# ------------------------------------------------- values from the formulas


@pytest.mark.parametrize("cs", sorted(SUITES))
def test_references_and_labels_follow_the_formulas(cs: CipherSuite) -> None:
    s = suite(cs)
    kp = b"an encoded KeyPackage"
    # RefHash(label, value) = Hash(RefHashInput{opaque label<V>; opaque value<V>}) (§5.2)
    label = b"MLS 1.0 KeyPackage Reference"
    assert s.make_key_package_ref(kp) == hashlib.sha256(_opaque(label) + _opaque(kp)).digest()
    label = b"MLS 1.0 Proposal Reference"
    assert s.make_proposal_ref(kp) == hashlib.sha256(_opaque(label) + _opaque(kp)).digest()
    # ExpandWithLabel with a 300-byte context (two-byte varint) and 48 bytes of output:
    # HKDF-Expand (RFC 5869 §2.3) over KDFLabel (§8), block by block
    secret, context = bytes(range(32)), bytes(300)
    info = (48).to_bytes(2, "big") + _opaque(b"MLS 1.0 test") + _opaque(context)
    t1 = hmac.new(secret, info + b"\x01", "sha256").digest()
    t2 = hmac.new(secret, t1 + info + b"\x02", "sha256").digest()
    assert s.expand_with_label(secret, b"test", context, 48) == (t1 + t2)[:48]
    assert s.mac(b"k", b"data") == hmac.new(b"k", b"data", "sha256").digest()
    assert s.verify_mac(b"k", b"data", s.mac(b"k", b"data"))
    assert not s.verify_mac(b"k", b"data", s.mac(b"k", b"datA"))
    assert s.kdf_extract(b"salt", b"ikm") == hmac.new(b"salt", b"ikm", "sha256").digest()
    assert s.hash(b"abc") == hashlib.sha256(b"abc").digest()


def test_suite_parameters() -> None:
    one, three, xwing = suite(1), suite(3), suite(XWING)
    assert (one.nh, one.nk, one.nn) == (32, 16, 12)  # AES-128-GCM
    assert (three.nh, three.nk, three.nn) == (32, 32, 12)  # ChaCha20Poly1305
    assert (xwing.nh, xwing.nk, xwing.nn) == (32, 16, 12)
    assert xwing.info.kem is KEMId.MLKEM768_X25519 and xwing.info.aead is AEADId.AES_128_GCM
    assert (xwing.info.npk, xwing.info.nsk, xwing.info.nenc) == (1216, 32, 1120)
    # the private-use range of RFC 9420 §17.1, and marked so
    assert 0xF000 <= XWING <= 0xFFFF and xwing.info.provisional
    assert not one.info.provisional and not three.info.provisional
    assert suite(0xF0A1) is xwing and isinstance(xwing, Suite)
    assert "MLKEM768X25519" in repr(xwing)


@pytest.mark.parametrize("cs, aead", [(1, AESGCM), (3, ChaCha20Poly1305), (XWING, AESGCM)])
def test_aead_is_the_suites(cs: int, aead: type[AESGCM] | type[ChaCha20Poly1305]) -> None:
    s = suite(cs)
    key, nonce = bytes(range(s.nk)), bytes(range(12))
    sealed = s.aead_encrypt(key, nonce, b"aad", b"secret message")
    assert aead(key).decrypt(nonce, sealed, b"aad") == b"secret message"
    assert s.aead_decrypt(key, nonce, b"aad", sealed) == b"secret message"
    with pytest.raises(MLSDecryptError):
        s.aead_decrypt(key, nonce, b"aaD", sealed)
    with pytest.raises(MLSDecryptError):
        s.aead_decrypt(key, nonce, b"aad", sealed[:-1] + bytes([sealed[-1] ^ 0x80]))


# ---------------------------------------------------------- DeriveKeyPair


def test_derive_key_pair_dhkem_x25519_rfc9180_a11() -> None:
    # RFC 9180 Appendix A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM)
    s = suite(1)
    sk_e, pk_e = s.derive_key_pair(h("7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234"))
    assert sk_e == h("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
    assert pk_e == h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    sk_r, _ = s.derive_key_pair(h("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037"))
    assert sk_r == h("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    # the KEM's DeriveKeyPair does not depend on the suite's AEAD
    assert suite(3).derive_key_pair(b"\x07" * 32) == s.derive_key_pair(b"\x07" * 32)


def _hpke_pq_vectors(kem_id: int) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / "xwing" / "hpke-pq-kem-647a-and-20.json").read_text())
    return [v for v in data if v["kem_id"] == kem_id]


def test_derive_key_pair_draft_ietf_hpke_pq_vectors() -> None:
    xwing_vectors, x25519_vectors = _hpke_pq_vectors(0x647A), _hpke_pq_vectors(0x0020)
    assert (len(xwing_vectors), len(x25519_vectors)) == (2, 1)
    for v in xwing_vectors:
        assert suite(XWING).derive_key_pair(h(v["ikmR"])) == (h(v["skRm"]), h(v["pkRm"]))
        assert suite(XWING).hpke_public_key(h(v["skRm"])) == h(v["pkRm"])
    for v in x25519_vectors:
        assert suite(1).derive_key_pair(h(v["ikmR"])) == (h(v["skRm"]), h(v["pkRm"]))


def test_xwing_key_expansion_draft_vectors() -> None:
    # draft-connolly-cfrg-xwing-kem's vectors: decapsulation key -> encapsulation key
    vectors = json.loads((VECTORS / "xwing" / "xwing-kem.json").read_text())
    assert len(vectors) == 3
    for v in vectors:
        assert suite(XWING).hpke_public_key(h(v["sk"])) == h(v["pk"])
        suite(XWING).check_hpke_public_key(h(v["pk"]))


def test_xwing_derive_key_pair_is_deterministic_and_sized() -> None:
    s = suite(XWING)
    sk, pk = s.derive_key_pair(b"path secret" * 3)
    assert (sk, pk) == s.derive_key_pair(b"path secret" * 3)
    assert (len(sk), len(pk)) == (32, 1216)
    other_sk, other_pk = s.derive_key_pair(b"path secret" * 3 + b"!")
    assert other_sk != sk and other_pk != pk
    fresh_sk, fresh_pk = s.generate_key_pair()
    assert s.hpke_public_key(fresh_sk) == fresh_pk and fresh_sk != sk


# ------------------------------------------------------------------ X-Wing


def _xwing_private_key_from_spec(sk: bytes) -> hpke.MLKEM768X25519PrivateKey:
    # expandDecapsulationKey (draft-connolly-cfrg-xwing-kem): SHAKE256(sk, 96 bytes);
    # ML-KEM-768 from d || z = expanded[0:64]; the X25519 key is expanded[64:96]
    expanded = hashlib.shake_256(sk).digest(96)
    return hpke.MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
                                         x25519.X25519PrivateKey.from_private_bytes(expanded[64:]))


def _encrypt_context(label: bytes, context: bytes) -> bytes:
    # EncryptContext{opaque label<V> = "MLS 1.0 " + Label; opaque context<V>} (§5.1.3)
    return _opaque(b"MLS 1.0 " + label) + _opaque(context)


def test_xwing_interop_with_pyca_hpke() -> None:
    s = suite(XWING)
    sk, pk = s.derive_key_pair(b"interop" * 5)
    pyca = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    # pyca encrypts to the public key as the draft lays it out (pk_M || pk_X) ...
    public = hpke.MLKEM768X25519PublicKey(mlkem.MLKEM768PublicKey.from_public_bytes(pk[:1184]),
                                          x25519.X25519PublicKey.from_public_bytes(pk[1184:]))
    sealed = pyca.encrypt(b"joiner secret", public, _encrypt_context(b"Welcome", b"ctx"))
    # ... and we open it with the 32-byte private key: kem_output is the first Nenc bytes
    assert s.decrypt_with_label(sk, b"Welcome", b"ctx", sealed[:1120], sealed[1120:]) == b"joiner secret"
    # the other way: what we seal, pyca opens with the key expanded from the spec's formula
    kem_output, ciphertext = s.encrypt_with_label(pk, b"UpdatePathNode", b"group context", b"path secret")
    assert len(kem_output) == 1120
    opened = pyca.decrypt(kem_output + ciphertext, _xwing_private_key_from_spec(sk),
                          _encrypt_context(b"UpdatePathNode", b"group context"))
    assert opened == b"path secret"


def test_xwing_round_trip_and_refusals() -> None:
    s = suite(XWING)
    sk, pk = s.derive_key_pair(bytes(32))
    kem_output, ciphertext = s.encrypt_with_label(pk, b"label", b"context", b"plaintext")
    assert s.decrypt_with_label(sk, b"label", b"context", kem_output, ciphertext) == b"plaintext"
    with pytest.raises(MLSDecryptError):
        s.decrypt_with_label(sk, b"label", b"contexT", kem_output, ciphertext)
    with pytest.raises(MLSDecryptError):  # X-Wing rejects implicitly: a wrong key, then no tag match
        s.decrypt_with_label(s.derive_key_pair(b"\x01" * 32)[0], b"label", b"context", kem_output, ciphertext)
    with pytest.raises(MLSDecryptError):
        s.decrypt_with_label(sk, b"label", b"context", kem_output[:32], ciphertext)
    # public keys that are not X-Wing keys: an X25519 key, and an ML-KEM part
    # whose coefficients are out of range (FIPS 203 §7.2 encapsulation key check)
    for bad in (pk[:32], pk + b"\x00", b"\xff" * 1184 + pk[1184:]):
        with pytest.raises(MLSError):
            s.check_hpke_public_key(bad)
        with pytest.raises(MLSError):
            s.encrypt_with_label(bad, b"label", b"context", b"plaintext")


def test_x25519_public_keys_are_checked_for_size() -> None:
    with pytest.raises(MLSError):
        suite(1).check_hpke_public_key(bytes(31))
    suite(1).check_hpke_public_key(suite(1).derive_key_pair(b"ikm")[1])
    with pytest.raises(MLSError):
        suite(1).check_signature_public_key(bytes(33))
