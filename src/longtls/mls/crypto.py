"""MLS cipher suites and the cryptographic functions built on them (RFC 9420 §5).

A cipher suite fixes the HPKE KEM, KDF and AEAD, the hash (and HMAC over
it) and the signature scheme (§5.1).  ``suite(code)`` returns a ``Suite``
whose methods are the spec's functions under the spec's names:
ExpandWithLabel, DeriveSecret, DeriveTreeSecret (§8, §9.1), RefHash and the
KeyPackage/Proposal references (§5.2), SignWithLabel / VerifyWithLabel
(§5.1.2), EncryptWithLabel / DecryptWithLabel (§5.1.3), DeriveKeyPair (§5.1,
from RFC 9180), and the AEAD of the key schedule's keys.

Keys cross this API as bytes, in the forms MLS puts on the wire and the test
vectors use (tests/vectors/mls/test-vectors.md, "Representation"): HPKE keys
as SerializePublicKey / SerializePrivateKey give them, Ed25519 keys in their
RFC 8032 form.  Every primitive comes from pyca/cryptography; DeriveKeyPair,
which its HPKE module does not offer, is built from its HKDF, SHAKE256,
X25519 and ML-KEM-768 (docs/mls.md, "Cipher suites").

Three suites are implemented: the two X25519/Ed25519 suites of RFC 9420 §17.1
(0x0001, 0x0003), and a post-quantum hybrid one whose code point is
PROVISIONAL (``MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519``, see
``CipherSuite``).
"""

from __future__ import annotations

import hmac as _hmac
import os
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives import hmac as _crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from ..constants import SignatureScheme
from ..errors import MLSDecryptError, MLSError
from .codec import Writer

__all__ = [
    "MLS_LABEL_PREFIX",
    "SUITES",
    "AEADId",
    "CipherSuite",
    "KDFId",
    "KEMId",
    "Suite",
    "SuiteInfo",
    "suite",
]

#: Every label of ExpandWithLabel, SignWithLabel and EncryptWithLabel is
#: prefixed with this (RFC 9420 §5.1.2, §5.1.3, §8).
MLS_LABEL_PREFIX = b"MLS 1.0 "


class CipherSuite(IntEnum):
    """MLS cipher suites longtls implements (RFC 9420 §17.1 registry)."""

    MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 = 0x0001
    MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519 = 0x0003
    #: PROVISIONAL.  draft-ietf-mls-pq-ciphersuites-06 defines this suite
    #: (KEM 0x647a MLKEM768-X25519 = X-Wing, HKDF-SHA256, AES-128-GCM,
    #: SHA-256, Ed25519) but leaves its value "TBD1"; until IANA assigns one
    #: we use a value from RFC 9420's private-use range (0xF000-0xFFFF,
    #: §17.1).  Only longtls peers understand it.  docs/mls.md says why.
    MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 = 0xF0A1


class KEMId(IntEnum):
    """HPKE KEM identifiers (RFC 9180 §7.1; 0x647a: draft-connolly-cfrg-xwing-kem,
    renamed MLKEM768-X25519 by draft-ietf-hpke-pq)."""

    DHKEM_X25519_HKDF_SHA256 = 0x0020
    MLKEM768_X25519 = 0x647A


class KDFId(IntEnum):
    """HPKE KDF identifiers (RFC 9180 §7.2)."""

    HKDF_SHA256 = 0x0001


class AEADId(IntEnum):
    """HPKE AEAD identifiers (RFC 9180 §7.3)."""

    AES_128_GCM = 0x0001
    CHACHA20_POLY1305 = 0x0003


@dataclass(frozen=True, slots=True)
class SuiteInfo:
    """What a cipher suite is made of (RFC 9420 §17.1, the mapping table) and
    the sizes the protocol needs (RFC 9180's names)."""

    cipher_suite: CipherSuite
    kem: KEMId
    kdf: KDFId
    aead: AEADId
    hash_name: str  # "SHA256": the suite's hash, of HMAC, KDF and transcripts
    signature_scheme: SignatureScheme
    nh: int  # KDF.Nh: output size of KDF.Extract, and of the hash
    nk: int  # AEAD.Nk: key size
    nn: int  # AEAD.Nn: nonce size
    npk: int  # KEM.Npk: serialised public key size
    nsk: int  # KEM.Nsk: serialised private key size
    nenc: int  # KEM.Nenc: kem_output size
    provisional: bool = False  # the code point is not IANA's (see CipherSuite)


def _suite_info(cipher_suite: CipherSuite, kem: KEMId, aead: AEADId, provisional: bool = False) -> SuiteInfo:
    # Every suite here has HKDF-SHA256, SHA-256 and Ed25519 (RFC 9420 §17.1
    # for 0x0001 and 0x0003; draft-ietf-mls-pq-ciphersuites-06 for the hybrid).
    if kem is KEMId.DHKEM_X25519_HKDF_SHA256:
        npk, nsk, nenc = 32, 32, 32  # RFC 9180 §7.1
    else:
        # draft-connolly-cfrg-xwing-kem, "Encoding and sizes": the private
        # key is the 32-byte seed, not the expanded ML-KEM key.
        npk, nsk, nenc = 1216, 32, 1120
    nk = 16 if aead is AEADId.AES_128_GCM else 32  # RFC 9180 §7.3
    return SuiteInfo(cipher_suite, kem, KDFId.HKDF_SHA256, aead, "SHA256", SignatureScheme.ed25519,
                     nh=32, nk=nk, nn=12, npk=npk, nsk=nsk, nenc=nenc, provisional=provisional)


SUITES: dict[CipherSuite, SuiteInfo] = {
    info.cipher_suite: info for info in (
        _suite_info(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
                    KEMId.DHKEM_X25519_HKDF_SHA256, AEADId.AES_128_GCM),
        _suite_info(CipherSuite.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
                    KEMId.DHKEM_X25519_HKDF_SHA256, AEADId.CHACHA20_POLY1305),
        _suite_info(CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519,
                    KEMId.MLKEM768_X25519, AEADId.AES_128_GCM, provisional=True),
    )
}

# The suite's hash is its KDF's (HKDF-SHA256: SHA-256), as in every suite of
# RFC 9420 §17.1: HMAC, KDF.Extract/Expand, RefHash and transcripts share it.
_HASH: dict[KDFId, type[hashes.SHA256]] = {KDFId.HKDF_SHA256: hashes.SHA256}
_HPKE_KDF = {KDFId.HKDF_SHA256: hpke.KDF.HKDF_SHA256}
_HPKE_KEM = {KEMId.DHKEM_X25519_HKDF_SHA256: hpke.KEM.X25519, KEMId.MLKEM768_X25519: hpke.KEM.MLKEM768_X25519}
_HPKE_AEAD = {AEADId.AES_128_GCM: hpke.AEAD.AES_128_GCM, AEADId.CHACHA20_POLY1305: hpke.AEAD.CHACHA20_POLY1305}
_AEAD: dict[AEADId, type[AESGCM] | type[ChaCha20Poly1305]] = {
    AEADId.AES_128_GCM: AESGCM, AEADId.CHACHA20_POLY1305: ChaCha20Poly1305,
}

# X-Wing's component sizes (draft-connolly-cfrg-xwing-kem, "Encapsulation"):
# the public key is pk_M (ML-KEM-768, 1184 bytes) || pk_X (X25519, 32 bytes).
_MLKEM768_PK = 1184


def _kem_suite_id(kem: KEMId) -> bytes:
    # RFC 9180 §4.1: suite_id = concat("KEM", I2OSP(kem_id, 2)) inside the KEM.
    return b"KEM" + kem.to_bytes(2, "big")


def _two_fields(a: bytes, b: bytes) -> bytes:
    """struct { opaque a<V>; opaque b<V>; }: SignContent (§5.1.2),
    EncryptContext (§5.1.3) and RefHashInput (§5.2) are all this shape."""
    return Writer().opaque(a).opaque(b).bytes()


class Suite:
    """One MLS cipher suite's functions (RFC 9420 §5).  Get it with ``suite()``."""

    __slots__ = ("info", "_hash", "_hpke")

    def __init__(self, info: SuiteInfo) -> None:
        self.info = info
        self._hash: hashes.HashAlgorithm = _HASH[info.kdf]()
        self._hpke = hpke.Suite(_HPKE_KEM[info.kem], _HPKE_KDF[info.kdf], _HPKE_AEAD[info.aead])

    def __repr__(self) -> str:
        return f"<Suite {self.info.cipher_suite.name} (0x{self.info.cipher_suite:04x})>"

    # ---------------------------------------------------------------- sizes

    @property
    def cipher_suite(self) -> CipherSuite:
        return self.info.cipher_suite

    @property
    def nh(self) -> int:
        return self.info.nh

    @property
    def nk(self) -> int:
        return self.info.nk

    @property
    def nn(self) -> int:
        return self.info.nn

    # ------------------------------------------------- hash, MAC and the KDF

    def hash(self, data: bytes) -> bytes:
        h = hashes.Hash(self._hash)
        h.update(data)
        return h.finalize()

    def mac(self, key: bytes, data: bytes) -> bytes:
        """MAC(key, data): HMAC with the suite's hash (RFC 9420 §17.1)."""
        h = _crypto_hmac.HMAC(key, self._hash)
        h.update(data)
        return h.finalize()

    def verify_mac(self, key: bytes, data: bytes, tag: bytes) -> bool:
        """Whether tag is MAC(key, data), compared in constant time (the
        confirmation and membership tags, §6.2, §8.1)."""
        return _hmac.compare_digest(self.mac(key, data), tag)

    def kdf_extract(self, salt: bytes, ikm: bytes) -> bytes:
        """KDF.Extract (HKDF-Extract, RFC 5869 §2.2)."""
        return HKDF.extract(self._hash, salt, ikm)

    def kdf_expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        """KDF.Expand (HKDF-Expand, RFC 5869 §2.3)."""
        return HKDFExpand(self._hash, length, info).derive(prk)

    def expand_with_label(self, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
        """ExpandWithLabel(Secret, Label, Context, Length) (RFC 9420 §8):
        KDF.Expand(Secret, KDFLabel, Length) with
        KDFLabel = struct { uint16 length; opaque label<V>; opaque context<V>; },
        label = "MLS 1.0 " + Label."""
        kdf_label = Writer().u16(length).opaque(MLS_LABEL_PREFIX + label).opaque(context).bytes()
        return self.kdf_expand(secret, kdf_label, length)

    def derive_secret(self, secret: bytes, label: bytes) -> bytes:
        """DeriveSecret(Secret, Label) = ExpandWithLabel(Secret, Label, "", KDF.Nh) (§8)."""
        return self.expand_with_label(secret, label, b"", self.info.nh)

    def derive_tree_secret(self, secret: bytes, label: bytes, generation: int, length: int) -> bytes:
        """DeriveTreeSecret(Secret, Label, Generation, Length) =
        ExpandWithLabel(Secret, Label, Generation as a big-endian uint32, Length) (§9.1)."""
        return self.expand_with_label(secret, label, generation.to_bytes(4, "big"), length)

    # ------------------------------------------------------ references (§5.2)

    def ref_hash(self, label: bytes, value: bytes) -> bytes:
        """RefHash(label, value) = Hash(RefHashInput{label<V>, value<V>}).  The
        label is used as given: the callers below pass "MLS 1.0 ..." themselves."""
        return self.hash(_two_fields(label, value))

    def make_key_package_ref(self, key_package: bytes) -> bytes:
        """KeyPackageRef of an encoded KeyPackage (§5.2)."""
        return self.ref_hash(b"MLS 1.0 KeyPackage Reference", key_package)

    def make_proposal_ref(self, authenticated_content: bytes) -> bytes:
        """ProposalRef of the encoded AuthenticatedContent carrying a Proposal (§5.2)."""
        return self.ref_hash(b"MLS 1.0 Proposal Reference", authenticated_content)

    # ------------------------------------------------------ signatures (§5.1.2)

    def generate_signature_key_pair(self) -> tuple[bytes, bytes]:
        """A fresh (private, public) signature key pair of the suite's scheme."""
        key = ed25519.Ed25519PrivateKey.generate()
        return key.private_bytes_raw(), key.public_key().public_bytes_raw()

    def signature_public_key(self, signature_private_key: bytes) -> bytes:
        """The SignaturePublicKey (RFC 8032 form) of a private key."""
        return self._signing_key(signature_private_key).public_key().public_bytes_raw()

    def check_signature_public_key(self, signature_public_key: bytes) -> None:
        """Raise MLSError unless the bytes are a public key of the suite's scheme."""
        self._verifying_key(signature_public_key)

    def sign_with_label(self, signature_private_key: bytes, label: bytes, content: bytes) -> bytes:
        """SignWithLabel(SignatureKey, Label, Content) (§5.1.2): the signature
        over SignContent{"MLS 1.0 " + Label, Content}."""
        sign_content = _two_fields(MLS_LABEL_PREFIX + label, content)
        return self._signing_key(signature_private_key).sign(sign_content)

    def verify_with_label(
        self, signature_public_key: bytes, label: bytes, content: bytes, signature: bytes
    ) -> bool:
        """VerifyWithLabel(VerificationKey, Label, Content, SignatureValue) (§5.1.2).

        False for a signature that does not verify, and for a key that is not
        a key of the suite's scheme: either way nothing was proven.
        """
        try:
            key = self._verifying_key(signature_public_key)
            key.verify(signature, _two_fields(MLS_LABEL_PREFIX + label, content))
        except (InvalidSignature, MLSError):
            return False
        return True

    def _signing_key(self, private: bytes) -> ed25519.Ed25519PrivateKey:
        # Ed25519 is the scheme of every suite in SUITES (RFC 9420 §17.1).
        if len(private) != 32:
            raise ValueError("an Ed25519 private key is 32 bytes (RFC 8032)")
        return ed25519.Ed25519PrivateKey.from_private_bytes(private)

    def _verifying_key(self, public: bytes) -> ed25519.Ed25519PublicKey:
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(public)
        except ValueError:
            raise MLSError(f"not an Ed25519 public key ({len(public)} bytes)") from None

    # ---------------------------------------------------------- HPKE (§5.1.3)

    def generate_key_pair(self) -> tuple[bytes, bytes]:
        """A fresh HPKE key pair (GenerateKeyPair, RFC 9180 §4): DeriveKeyPair
        of Nsk random bytes, which has the same distribution."""
        return self.derive_key_pair(os.urandom(self.info.nsk))

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """DeriveKeyPair(ikm) -> (SerializePrivateKey(sk), SerializePublicKey(pk)).

        DHKEM(X25519, HKDF-SHA256): RFC 9180 §7.1.3.  MLKEM768-X25519 (X-Wing):
        draft-ietf-hpke-pq §"Hybrid KEMs" over X-Wing's key expansion
        (docs/mls.md, "Cipher suites", says why not X-Wing's own DeriveKeyPair).
        """
        if self.info.kem is KEMId.DHKEM_X25519_HKDF_SHA256:
            sk = _dhkem_x25519_derive_private(ikm)
            public = x25519.X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()
            return sk, public
        seed = _shake256_labeled_derive(_kem_suite_id(KEMId.MLKEM768_X25519), ikm, b"DeriveKeyPair", b"", 32)
        mlkem_key, x25519_key = _xwing_expand_decapsulation_key(seed)
        return seed, _xwing_public_bytes(mlkem_key, x25519_key)

    def hpke_public_key(self, hpke_private_key: bytes) -> bytes:
        """SerializePublicKey of the public key of a serialised private key."""
        key = self._hpke_private(hpke_private_key)
        if isinstance(key, x25519.X25519PrivateKey):
            return key.public_key().public_bytes_raw()
        return _xwing_public_bytes(*_xwing_expand_decapsulation_key(hpke_private_key))

    def check_hpke_public_key(self, hpke_public_key: bytes) -> None:
        """Raise MLSError unless the bytes are a public key of the suite's KEM
        (DeserializePublicKey succeeds: right length, and for ML-KEM the
        encapsulation key check of FIPS 203 §7.2)."""
        self._hpke_public(hpke_public_key)

    def encrypt_with_label(
        self, hpke_public_key: bytes, label: bytes, context: bytes, plaintext: bytes
    ) -> tuple[bytes, bytes]:
        """EncryptWithLabel(PublicKey, Label, Context, Plaintext) (§5.1.3):
        SealBase(PublicKey, EncryptContext, "", Plaintext) with
        EncryptContext{"MLS 1.0 " + Label, Context}.  Returns (kem_output, ciphertext).
        """
        info = _two_fields(MLS_LABEL_PREFIX + label, context)
        # pyca's Suite.encrypt is SealBase with empty aad; its output is
        # enc || ct (RFC 9180 §6.1's single-shot API returns both).
        sealed = self._hpke.encrypt(plaintext, self._hpke_public(hpke_public_key), info)
        nenc = self.info.nenc
        return sealed[:nenc], sealed[nenc:]

    def decrypt_with_label(
        self, hpke_private_key: bytes, label: bytes, context: bytes, kem_output: bytes, ciphertext: bytes
    ) -> bytes:
        """DecryptWithLabel(PrivateKey, Label, Context, KEMOutput, Ciphertext)
        (§5.1.3): OpenBase(KEMOutput, PrivateKey, EncryptContext, "", Ciphertext).

        MLSDecryptError if it does not open (wrong key, label, context or a
        tampered kem_output or ciphertext).
        """
        if len(kem_output) != self.info.nenc:
            raise MLSDecryptError(f"kem_output is {len(kem_output)} bytes, the suite's KEM has {self.info.nenc}")
        info = _two_fields(MLS_LABEL_PREFIX + label, context)
        try:
            return self._hpke.decrypt(kem_output + ciphertext, self._hpke_private(hpke_private_key), info)
        except (InvalidTag, ValueError):
            raise MLSDecryptError(f"HPKE ciphertext with label {label!r} does not open") from None

    def _hpke_public(self, public: bytes) -> x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey:
        if len(public) != self.info.npk:
            raise MLSError(f"HPKE public key is {len(public)} bytes, the suite's KEM has {self.info.npk}")
        try:
            if self.info.kem is KEMId.DHKEM_X25519_HKDF_SHA256:
                return x25519.X25519PublicKey.from_public_bytes(public)
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(public[:_MLKEM768_PK]),
                x25519.X25519PublicKey.from_public_bytes(public[_MLKEM768_PK:]),
            )
        except ValueError:
            raise MLSError("not a valid HPKE public key of the suite's KEM") from None

    def _hpke_private(self, private: bytes) -> x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey:
        if len(private) != self.info.nsk:
            raise ValueError(f"HPKE private key must be {self.info.nsk} bytes")
        if self.info.kem is KEMId.DHKEM_X25519_HKDF_SHA256:
            return x25519.X25519PrivateKey.from_private_bytes(private)
        return hpke.MLKEM768X25519PrivateKey(*_xwing_expand_decapsulation_key(private))

    # ------------------------------------------------------------- the AEAD

    def aead_encrypt(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """AEAD.Seal with a key and nonce of the key schedule (ciphertext || tag)."""
        return _AEAD[self.info.aead](key).encrypt(nonce, plaintext, aad)

    def aead_decrypt(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """AEAD.Open; MLSDecryptError if the ciphertext does not authenticate."""
        try:
            return _AEAD[self.info.aead](key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise MLSDecryptError("MLS ciphertext does not authenticate") from None


# -------------------------------------------------------------- DeriveKeyPair


def _dhkem_x25519_derive_private(ikm: bytes) -> bytes:
    """RFC 9180 §7.1.3 for DHKEM(X25519, HKDF-SHA256):
    dkp_prk = LabeledExtract("", "dkp_prk", ikm); sk = LabeledExpand(dkp_prk, "sk", "", Nsk).
    Any 32 bytes are an X25519 private key (clamped when used, RFC 7748 §5),
    so there is no rejection loop."""
    suite_id = _kem_suite_id(KEMId.DHKEM_X25519_HKDF_SHA256)
    sha256 = hashes.SHA256()
    # LabeledExtract(salt, label, ikm) = Extract(salt, "HPKE-v1" || suite_id || label || ikm) (§4)
    dkp_prk = HKDF.extract(sha256, b"", b"HPKE-v1" + suite_id + b"dkp_prk" + ikm)
    # LabeledExpand(prk, label, info, L) = Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L)
    nsk = 32
    return HKDFExpand(sha256, nsk, nsk.to_bytes(2, "big") + b"HPKE-v1" + suite_id + b"sk").derive(dkp_prk)


def _shake256_labeled_derive(suite_id: bytes, ikm: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """LabeledDerive with the one-stage KDF SHAKE256 (draft-ietf-hpke-hpke
    §"Cryptographic Dependencies" / draft-ietf-hpke-pq): Derive(ikm || "HPKE-v1"
    || suite_id || lengthPrefixed(label) || I2OSP(L, 2) || context, L)."""
    labeled_ikm = (ikm + b"HPKE-v1" + suite_id + len(label).to_bytes(2, "big") + label
                   + length.to_bytes(2, "big") + context)
    h = hashes.Hash(hashes.SHAKE256(length))
    h.update(labeled_ikm)
    return h.finalize()


def _xwing_expand_decapsulation_key(seed: bytes) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    """expandDecapsulationKey(sk) (draft-connolly-cfrg-xwing-kem, "Key generation"):
    expanded = SHAKE256(sk, 96 bytes); ML-KEM-768.KeyGen_internal(d = expanded[0:32],
    z = expanded[32:64]) (FIPS 203's 64-byte seed d || z is what
    ``from_seed_bytes`` takes); sk_X = expanded[64:96]."""
    if len(seed) != 32:
        raise ValueError("an X-Wing private key (decapsulation key) is 32 bytes")
    h = hashes.Hash(hashes.SHAKE256(96))
    h.update(seed)
    expanded = h.finalize()
    return (mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
            x25519.X25519PrivateKey.from_private_bytes(expanded[64:]))


def _xwing_public_bytes(mlkem_key: mlkem.MLKEM768PrivateKey, x25519_key: x25519.X25519PrivateKey) -> bytes:
    # pk = concat(pk_M, pk_X) (draft-connolly-cfrg-xwing-kem, "Key generation")
    return mlkem_key.public_key().public_bytes_raw() + x25519_key.public_key().public_bytes_raw()


_SUITE_OBJECTS = {code: Suite(info) for code, info in SUITES.items()}


def suite(cipher_suite: int) -> Suite:
    """The Suite of a cipher suite code point; MLSError for one longtls does
    not implement (a peer's KeyPackage or GroupInfo may name any)."""
    try:
        return _SUITE_OBJECTS[CipherSuite(cipher_suite)]
    except ValueError:
        raise MLSError(f"MLS cipher suite 0x{cipher_suite:04x} is not supported") from None
