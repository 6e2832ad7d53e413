"""Key exchange groups: (EC)DHE, ML-KEM and ECDHE-MLKEM hybrids behind one interface.

The same three calls work for every group:

- the *initiator* (the TLS client, or whoever sends first) calls
  ``group.generate()`` and sends ``share.public`` as its ``key_exchange``;
- the *responder* calls ``group.respond(peer_key_exchange)`` and gets back
  ``(its own key_exchange, shared_secret)``;
- the initiator calls ``share.complete(responder_key_exchange)`` and gets
  the same shared secret.

For a DH group ``respond`` is a fresh DH key pair plus the exchange; for a
KEM group it is Encaps to the initiator's encapsulation key (the response is
the ciphertext) and ``complete`` is Decaps.  Hybrids do both and concatenate
in the order draft-ietf-tls-ecdhe-mlkem §4 gives.

Every malformed peer value ends in ``RemoteProtocolError`` with the
``illegal_parameter`` alert, as RFC 9846 §4.3.8.1 / §4.3.8.2 / §7.4,
draft-ietf-tls-mlkem §4.2 and draft-ietf-tls-ecdhe-mlkem §4 require.
Messages name the group and sizes only, never key bytes.

Groups: X25519 and X448 (RFC 7748), the NIST curves P-256/P-384/P-521, the
brainpool curves of RFC 8734, the RFC 7919 finite field groups ffdhe2048 to
ffdhe8192, ML-KEM and the ECDHE-MLKEM hybrids.  Which of them a
Configuration offers by default is config.DEFAULT_GROUPS' business (see
docs/groups-and-suites.md).

MLKEM512 (0x0200) is not supported: pyca/cryptography 50 offers only
ML-KEM-768 and ML-KEM-1024.

RFC 9846 section numbers are those of the spec text (specs/rfc9846-tls13-rfc8446bis.md);
RFC 8446 numbered the same sections one lower (§4.3.x there was §4.2.x, §4.5.x was §4.4.x).
"""

from __future__ import annotations

import abc
import functools
import hmac
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import dh, ec, mlkem, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning

from ..constants import AlertDescription, NamedGroup
from ..errors import ConfigurationError, ProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.dh import DHPrivateKey, DHPublicKey

__all__ = ["SUPPORTED_GROUPS", "Group", "KeyShare", "get_group", "not_enabled_hint"]


def _illegal(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, AlertDescription.illegal_parameter)


def _check_length(what: str, data: bytes, expected: int) -> None:
    if len(data) != expected:
        raise _illegal(f"{what} has {len(data)} bytes, expected {expected}")


class KeyShare(abc.ABC):
    """The initiator's private half of a key exchange (one ``KeyShareEntry``).

    ``public`` is the ``key_exchange`` value to send.  A share is single-use
    (RFC 9846 §4.3.8: "MUST NOT reuse a key share for multiple connections").
    """

    __slots__ = ("group", "public")

    def __init__(self, group: NamedGroup, public: bytes) -> None:
        self.group = group
        self.public = public

    @abc.abstractmethod
    def complete(self, peer_key_exchange: bytes) -> bytes:
        """Return the shared secret, given the responder's ``key_exchange``."""

    def __repr__(self) -> str:  # never show key material
        return f"<{type(self).__name__} {self.group.name}>"


class Group(abc.ABC):
    """One named group.  Stateless; get instances from :func:`get_group`."""

    code: NamedGroup
    is_kem: bool
    #: length of the initiator's key_exchange (DH public value / encapsulation key)
    public_length: int
    #: length of the responder's key_exchange (DH public value / ciphertext)
    response_length: int
    #: length of the shared secret
    secret_length: int

    @abc.abstractmethod
    def generate(self) -> KeyShare:
        """A fresh ephemeral key share for the initiator."""

    @abc.abstractmethod
    def respond(
        self, peer_key_exchange: bytes, ephemeral: KeyShare | None = None
    ) -> tuple[bytes, bytes]:
        """Return ``(our key_exchange, shared_secret)`` for the initiator's share.

        ``ephemeral`` injects the DH part of our response (for deterministic
        tests); KEM encapsulation randomness cannot be injected.
        """

    @abc.abstractmethod
    def from_private_bytes(self, data: bytes) -> KeyShare:
        """A key share from fixed private bytes, for known-answer tests.

        X25519/X448: the 32/56-byte scalar; NIST and brainpool curves: the
        big-endian scalar of the field size; FFDHE: the big-endian exponent
        padded to the size of p; ML-KEM: the 64-byte seed d || z (FIPS 203);
        hybrids: the components' private bytes concatenated in key_exchange order.
        """

    def _own_share(self, ephemeral: KeyShare | None) -> KeyShare:
        if ephemeral is None:
            return self.generate()
        if ephemeral.group != self.code:
            raise ConfigurationError(
                f"ephemeral key share is for {ephemeral.group.name}, not {self.code.name}"
            )
        return ephemeral

    def __repr__(self) -> str:
        return f"<Group {self.code.name}>"


# --- X25519 and X448 (RFC 7748, RFC 9846 §4.3.8.2 and §7.4.2) -----------------------------

_XPrivateKey = x25519.X25519PrivateKey | x448.X448PrivateKey


class _DiffieHellmanGroup(Group):
    """A (EC)DH group: the responder's key_exchange is its own public value."""

    is_kem = False

    def respond(
        self, peer_key_exchange: bytes, ephemeral: KeyShare | None = None
    ) -> tuple[bytes, bytes]:
        share = self._own_share(ephemeral)
        return share.public, share.complete(peer_key_exchange)


class _XDHShare(KeyShare):
    __slots__ = ("_owner", "_private")

    def __init__(self, owner: _XDHGroup, private: _XPrivateKey) -> None:
        super().__init__(owner.code, private.public_key().public_bytes_raw())
        self._owner = owner
        self._private = private

    def complete(self, peer_key_exchange: bytes) -> bytes:
        owner = self._owner
        _check_length(f"{owner.name} public value", peer_key_exchange, owner.public_length)
        try:
            if isinstance(self._private, x25519.X25519PrivateKey):
                secret = self._private.exchange(
                    x25519.X25519PublicKey.from_public_bytes(peer_key_exchange)
                )
            else:
                secret = self._private.exchange(
                    x448.X448PublicKey.from_public_bytes(peer_key_exchange)
                )
        except ValueError:
            # OpenSSL refuses the all-zero output itself; same verdict as below.
            secret = owner.zero
        # RFC 9846 §7.4.2 / RFC 7748 §6: abort on an all-zero shared secret
        # (the peer sent a low-order point).  The alert is illegal_parameter per
        # draft-ietf-tls-ecdhe-mlkem §4.3.  Constant-time compare: it is a secret.
        if hmac.compare_digest(secret, owner.zero):
            raise _illegal(
                f"{owner.name} shared secret is all zero (peer sent a low-order point)"
            )
        return secret


class _XDHGroup(_DiffieHellmanGroup):
    def __init__(
        self,
        code: NamedGroup,
        name: str,
        private_cls: type[x25519.X25519PrivateKey] | type[x448.X448PrivateKey],
        length: int,
    ) -> None:
        self.code = code
        self.name = name
        self._private_cls = private_cls
        # RFC 7748 §6: the u-coordinate and the shared secret are 32 (X25519)
        # or 56 (X448) bytes.
        self.public_length = self.response_length = self.secret_length = length
        self.zero = bytes(length)

    def generate(self) -> KeyShare:
        return _XDHShare(self, self._private_cls.generate())

    def from_private_bytes(self, data: bytes) -> KeyShare:
        if len(data) != self.public_length:
            raise ConfigurationError(
                f"an {self.name} private key is {self.public_length} bytes, got {len(data)}"
            )
        return _XDHShare(self, self._private_cls.from_private_bytes(data))


# --- NIST curves (RFC 9846 §4.3.8.2 and §7.4.2) --------------------------------------------


class _ECDHShare(KeyShare):
    __slots__ = ("_owner", "_private")

    def __init__(self, owner: _ECDHGroup, private: ec.EllipticCurvePrivateKey) -> None:
        public = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        super().__init__(owner.code, public)
        self._owner = owner
        self._private = private

    def complete(self, peer_key_exchange: bytes) -> bytes:
        peer = self._owner.load_peer(peer_key_exchange)
        # The x-coordinate, left-padded to the field size (RFC 9846 §7.4.2);
        # OpenSSL's ECDH derive already returns the fixed-length octet string.
        return self._private.exchange(ec.ECDH(), peer)


class _ECDHGroup(_DiffieHellmanGroup):
    def __init__(self, code: NamedGroup, curve: ec.EllipticCurve) -> None:
        self.code = code
        self._curve = curve
        self._coordinate_length = (curve.key_size + 7) // 8
        # UncompressedPointRepresentation: legacy_form(4) || X || Y.
        self.public_length = self.response_length = 1 + 2 * self._coordinate_length
        self.secret_length = self._coordinate_length

    def load_peer(self, data: bytes) -> ec.EllipticCurvePublicKey:
        """Parse and validate a peer's point (RFC 9846 §4.3.8.2)."""
        what = f"{self._curve.name} public value"
        _check_length(what, data, self.public_length)
        if data[0] != 4:
            # Only the uncompressed form exists in TLS 1.3; legacy_form MUST be 4.
            raise _illegal(f"{what} has legacy_form {data[0]}, expected 4 (uncompressed)")
        try:
            # OpenSSL checks the three steps of §4.3.8.2: not the point at
            # infinity, coordinates in range, and on the curve.
            return ec.EllipticCurvePublicKey.from_encoded_point(self._curve, data)
        except ValueError:
            raise _illegal(f"{what} is not a valid point on the curve") from None

    def generate(self) -> KeyShare:
        return _ECDHShare(self, ec.generate_private_key(self._curve))

    def from_private_bytes(self, data: bytes) -> KeyShare:
        if len(data) != self._coordinate_length:
            raise ConfigurationError(
                f"a {self._curve.name} private scalar is {self._coordinate_length} bytes, "
                f"got {len(data)}"
            )
        try:
            private = ec.derive_private_key(int.from_bytes(data, "big"), self._curve)
        except ValueError:
            raise ConfigurationError(
                f"{self._curve.name} private scalar is out of range"
            ) from None
        return _ECDHShare(self, private)


# --- Finite field groups (RFC 7919, RFC 9846 §4.3.8.1 and §7.4.1) ------------------------
#
# pyca/cryptography 50 deprecates its FFDH API (a warning on every access to
# the dh module's classes), so the three classes are fetched once here with
# the warning silenced.  If a future cryptography drops FFDH, these groups go
# with it; nothing else in longtls uses dh.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    _DHParameterNumbers = dh.DHParameterNumbers
    _DHPublicNumbers = dh.DHPublicNumbers
    _DHPrivateNumbers = dh.DHPrivateNumbers

#: X of each RFC 7919 group (Appendix A): p = 2^b - 2^{b-64} + {[2^{b-130} e] + X} * 2^64 - 1.
_FFDHE_X = {
    NamedGroup.ffdhe2048: (2048, 560316),
    NamedGroup.ffdhe3072: (3072, 2625351),
    NamedGroup.ffdhe4096: (4096, 5736041),
    NamedGroup.ffdhe6144: (6144, 15705020),
    NamedGroup.ffdhe8192: (8192, 10965728),
}


def _floor_e_times_2_to(bits: int) -> int:
    """floor(e * 2^bits), from the series e = sum 1/k!, in integers.

    64 guard bits absorb the truncation of each term (a few thousand terms at
    most, each off by less than one unit in the last guard place).
    """
    guard = 64
    total, term, k = 0, 1 << (bits + guard), 0
    while term:
        total += term
        k += 1
        term //= k
    return total >> guard


@functools.cache
def ffdhe_prime(code: NamedGroup) -> int:
    """The safe prime p of an RFC 7919 group, from the RFC's own definition (Appendix A).

    Computed rather than pasted: the formula is the specification, and the
    tests compare the result with OpenSSL's built-in copies of the groups.
    """
    b, x = _FFDHE_X[code]
    return (1 << b) - (1 << (b - 64)) + ((_floor_e_times_2_to(b - 130) + x) << 64) - 1


class _FFDHEShare(KeyShare):
    __slots__ = ("_owner", "_private")

    def __init__(self, owner: _FFDHEGroup, private: DHPrivateKey) -> None:
        # RFC 9846 §4.3.8.1: Y big-endian, left-padded with zeros to the size of p.
        y = private.public_key().public_numbers().y
        super().__init__(owner.code, y.to_bytes(owner.public_length, "big"))
        self._owner = owner
        self._private = private

    def complete(self, peer_key_exchange: bytes) -> bytes:
        owner = self._owner
        peer = owner.load_peer(peer_key_exchange)
        try:
            secret = self._private.exchange(peer)
        except ValueError:  # unreachable after load_peer's checks; never a traceback
            raise _illegal(f"{owner.code.name} public value is unusable") from None
        # RFC 9846 §7.4.1: Z left-padded with zeros to the size of p (cryptography
        # already returns it so; TLS 1.2 stripped the zeros, TLS 1.3 must not).
        return secret.rjust(owner.secret_length, b"\x00")


class _FFDHEGroup(_DiffieHellmanGroup):
    def __init__(self, code: NamedGroup) -> None:
        self.code = code
        bits, _ = _FFDHE_X[code]
        self.public_length = self.response_length = self.secret_length = bits // 8

    @functools.cached_property
    def _parameter_numbers(self) -> dh.DHParameterNumbers:
        return _DHParameterNumbers(ffdhe_prime(self.code), 2)  # RFC 7919: g = 2

    @functools.cached_property
    def _parameters(self) -> dh.DHParameters:
        # OpenSSL recognises the RFC 7919 primes as named groups and draws
        # short exponents of the strength RFC 7919 §5.2 asks for (225 bits
        # for ffdhe2048 up to 400 for ffdhe8192).
        return self._parameter_numbers.parameters()

    def load_peer(self, data: bytes) -> DHPublicKey:
        """Parse and check a peer's Y (RFC 9846 §4.3.8.1)."""
        what = f"{self.code.name} public value"
        # Y is always padded to the size of p, so any other length is malformed.
        _check_length(what, data, self.public_length)
        y = int.from_bytes(data, "big")
        p = ffdhe_prime(self.code)
        # "Peers MUST validate each other's public key Y by ensuring that
        # 1 < Y < p-1": rules out 0, 1 and p-1 (the order-1 and order-2
        # elements, the only small subgroup of a safe prime) and Y >= p.
        # A full subgroup test (Y^q = 1) is not required: with a safe prime
        # it only tells whether Y is a quadratic residue, which leaks at most
        # the low bit of our single-use exponent (RFC 7919 §5.1).
        if not 1 < y < p - 1:
            raise _illegal(f"{what} is outside 1 < Y < p-1")
        try:
            return _DHPublicNumbers(y, self._parameter_numbers).public_key()
        except ValueError:
            raise _illegal(f"{what} is not usable in the group") from None

    def generate(self) -> KeyShare:
        return _FFDHEShare(self, self._parameters.generate_private_key())

    def from_private_bytes(self, data: bytes) -> KeyShare:
        if len(data) != self.public_length:
            raise ConfigurationError(
                f"an {self.code.name} private exponent is {self.public_length} bytes "
                f"(big-endian, padded), got {len(data)}"
            )
        x = int.from_bytes(data, "big")
        p = ffdhe_prime(self.code)
        if not 1 < x < p - 1:
            raise ConfigurationError(f"{self.code.name} private exponent is out of range")
        public = _DHPublicNumbers(pow(2, x, p), self._parameter_numbers)
        return _FFDHEShare(self, _DHPrivateNumbers(x, public).private_key())


# --- ML-KEM (FIPS 203, draft-ietf-tls-mlkem) ----------------------------------------------

_MLKEMPrivateKey = mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey
_MLKEMPublicKey = mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey


class _MLKEMShare(KeyShare):
    __slots__ = ("_owner", "_private")

    def __init__(self, owner: _MLKEMGroup, private: _MLKEMPrivateKey) -> None:
        super().__init__(owner.code, private.public_key().public_bytes_raw())
        self._owner = owner
        self._private = private

    def complete(self, peer_key_exchange: bytes) -> bytes:
        # draft-ietf-tls-mlkem §4.2: "the client MUST check if the ciphertext
        # length matches the selected parameter set" -> illegal_parameter.
        _check_length(f"{self._owner.name} ciphertext", peer_key_exchange,
                      self._owner.response_length)
        try:
            return self._private.decapsulate(peer_key_exchange)
        except ValueError:
            # Decaps of a right-length ciphertext cannot fail (implicit
            # rejection yields a pseudo-random secret).  Any other failure is
            # internal_error per draft-ietf-tls-mlkem §4.2.
            raise ProtocolError(
                f"{self._owner.name} decapsulation failed", AlertDescription.internal_error
            ) from None


class _MLKEMGroup(Group):
    is_kem = True
    secret_length = 32

    def __init__(
        self,
        code: NamedGroup,
        name: str,
        private_cls: type[mlkem.MLKEM768PrivateKey] | type[mlkem.MLKEM1024PrivateKey],
        public_cls: type[mlkem.MLKEM768PublicKey] | type[mlkem.MLKEM1024PublicKey],
        public_length: int,
        response_length: int,
    ) -> None:
        self.code = code
        self.name = name
        self._private_cls = private_cls
        self._public_cls = public_cls
        self.public_length = public_length
        self.response_length = response_length

    def load_peer(self, data: bytes) -> _MLKEMPublicKey:
        """Parse and check an encapsulation key (FIPS 203 §7.2)."""
        what = f"{self.name} encapsulation key"
        # FIPS 203 §7.2 check 1 (type/length), draft-ietf-tls-mlkem §4.2.
        _check_length(what, data, self.public_length)
        try:
            # FIPS 203 §7.2 check 2 (modulus): ByteEncode12(ByteDecode12(ek)) == ek,
            # i.e. every 12-bit coefficient < q = 3329.  OpenSSL performs it on
            # import (verified by test_crypto_groups); it reports a length error
            # text, so the length was checked above to keep the verdicts apart.
            return self._public_cls.from_public_bytes(data)
        except ValueError:
            raise _illegal(
                f"{what} fails the FIPS 203 §7.2 modulus check (a coefficient is >= q)"
            ) from None

    def generate(self) -> KeyShare:
        return _MLKEMShare(self, self._private_cls.generate())

    def respond(
        self, peer_key_exchange: bytes, ephemeral: KeyShare | None = None
    ) -> tuple[bytes, bytes]:
        if ephemeral is not None:
            raise ConfigurationError(f"{self.code.name} responses take no ephemeral key share")
        shared_secret, ciphertext = self.load_peer(peer_key_exchange).encapsulate()
        return ciphertext, shared_secret

    def from_private_bytes(self, data: bytes) -> KeyShare:
        if len(data) != 64:
            raise ConfigurationError(f"an {self.name} seed is 64 bytes, got {len(data)}")
        return _MLKEMShare(self, self._private_cls.from_seed_bytes(data))


# --- Hybrids (draft-ietf-tls-ecdhe-mlkem §4) ----------------------------------------------
#
# Every hybrid concatenates the two components in the same order in the client
# share, the server share and the shared secret:
#   X25519MLKEM768:     ML-KEM first, then X25519 ("reversed for historical reasons")
#   SecP256r1MLKEM768:  ECDH first, then ML-KEM
#   SecP384r1MLKEM1024: ECDH first, then ML-KEM
# Each component has a fixed length, so checking the total length and splitting
# at the fixed offset checks each component's length too; each component then
# runs its own checks (point validation, modulus check, all-zero X25519).


class _HybridShare(KeyShare):
    __slots__ = ("_owner", "dh_share", "kem_share")

    def __init__(self, owner: _HybridGroup, kem_share: KeyShare, dh_share: KeyShare) -> None:
        public = owner.join(kem_share.public, dh_share.public)
        super().__init__(owner.code, public)
        self._owner = owner
        self.kem_share = kem_share
        self.dh_share = dh_share

    def complete(self, peer_key_exchange: bytes) -> bytes:
        owner = self._owner
        _check_length(f"{owner.code.name} response key share", peer_key_exchange,
                      owner.response_length)
        kem_ct, dh_public = owner.split(peer_key_exchange, owner.kem.response_length)
        # ECDH first: its checks (point validation, all-zero X25519) are the
        # ones a peer can fail; Decaps of a right-length ciphertext cannot.
        dh_secret = self.dh_share.complete(dh_public)
        return owner.join(self.kem_share.complete(kem_ct), dh_secret)


class _HybridGroup(Group):
    is_kem = True

    def __init__(
        self, code: NamedGroup, kem: _MLKEMGroup, dh: Group, *, kem_first: bool
    ) -> None:
        self.code = code
        self.kem = kem
        self.dh = dh
        self.kem_first = kem_first
        self.public_length = kem.public_length + dh.public_length
        self.response_length = kem.response_length + dh.response_length
        self.secret_length = kem.secret_length + dh.secret_length

    def join(self, kem_part: bytes, dh_part: bytes) -> bytes:
        return kem_part + dh_part if self.kem_first else dh_part + kem_part

    def split(self, data: bytes, kem_length: int) -> tuple[bytes, bytes]:
        """Split into (kem part, dh part); the caller has checked the total length."""
        if self.kem_first:
            return data[:kem_length], data[kem_length:]
        dh_length = len(data) - kem_length
        return data[dh_length:], data[:dh_length]

    def generate(self) -> KeyShare:
        return _HybridShare(self, self.kem.generate(), self.dh.generate())

    def respond(
        self, peer_key_exchange: bytes, ephemeral: KeyShare | None = None
    ) -> tuple[bytes, bytes]:
        _check_length(f"{self.code.name} key share", peer_key_exchange, self.public_length)
        kem_ek, dh_public = self.split(peer_key_exchange, self.kem.public_length)
        dh_ephemeral = None
        if ephemeral is not None:
            own = self._own_share(ephemeral)
            if not isinstance(own, _HybridShare):
                raise ConfigurationError(f"ephemeral key share is not a {self.code.name} share")
            dh_ephemeral = own.dh_share
        # Validate both components before any encapsulation work.
        peer_ek = self.kem.load_peer(kem_ek)
        dh_response, dh_secret = self.dh.respond(dh_public, dh_ephemeral)
        kem_secret, kem_ct = peer_ek.encapsulate()
        return self.join(kem_ct, dh_response), self.join(kem_secret, dh_secret)

    def from_private_bytes(self, data: bytes) -> KeyShare:
        dh_length = len(data) - 64
        if dh_length <= 0:
            raise ConfigurationError(f"{self.code.name} private bytes are too short")
        kem_seed, dh_private = self.split(data, 64)
        return _HybridShare(
            self, self.kem.from_private_bytes(kem_seed), self.dh.from_private_bytes(dh_private)
        )


# --- Registry --------------------------------------------------------------------------

_MLKEM768 = _MLKEMGroup(
    NamedGroup.MLKEM768, "ML-KEM-768", mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey,
    1184, 1088,
)
_MLKEM1024 = _MLKEMGroup(
    NamedGroup.MLKEM1024, "ML-KEM-1024", mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey,
    1568, 1568,
)
_X25519 = _XDHGroup(NamedGroup.x25519, "X25519", x25519.X25519PrivateKey, 32)
_P256 = _ECDHGroup(NamedGroup.secp256r1, ec.SECP256R1())
_P384 = _ECDHGroup(NamedGroup.secp384r1, ec.SECP384R1())

_GROUPS: dict[int, Group] = {
    g.code: g
    for g in (
        _X25519,
        _P256,
        _P384,
        _HybridGroup(NamedGroup.X25519MLKEM768, _MLKEM768, _X25519, kem_first=True),
        _HybridGroup(NamedGroup.SecP256r1MLKEM768, _MLKEM768, _P256, kem_first=False),
        _HybridGroup(NamedGroup.SecP384r1MLKEM1024, _MLKEM1024, _P384, kem_first=False),
        _MLKEM768,
        _MLKEM1024,
        # Groups not offered by default (docs/groups-and-suites.md):
        _ECDHGroup(NamedGroup.secp521r1, ec.SECP521R1()),
        _XDHGroup(NamedGroup.x448, "X448", x448.X448PrivateKey, 56),
        # RFC 8734 §2: the same encoding and checks as the NIST curves (the
        # uncompressed point, validated on the curve; the cofactor is 1).
        _ECDHGroup(NamedGroup.brainpoolP256r1tls13, ec.BrainpoolP256R1()),
        _ECDHGroup(NamedGroup.brainpoolP384r1tls13, ec.BrainpoolP384R1()),
        _ECDHGroup(NamedGroup.brainpoolP512r1tls13, ec.BrainpoolP512R1()),
        *(_FFDHEGroup(code) for code in _FFDHE_X),
    )
}

#: Every group longtls implements (a registry, not a preference order).
#: MLKEM512 is absent: pyca/cryptography 50 has no ML-KEM-512.
#: secp521r1 onwards are implemented but not in config.DEFAULT_GROUPS.
SUPPORTED_GROUPS: tuple[NamedGroup, ...] = tuple(NamedGroup(code) for code in _GROUPS)


def not_enabled_hint(offered: Iterable[int], enabled: Iterable[int]) -> str:
    """Why a server found no group in common, when the peer offered groups
    longtls implements but ``enabled`` (Configuration.groups) does not list:
    text to append to the handshake_failure message, or ""."""
    enabled_set = set(enabled)
    names = [NamedGroup(g).name for g in offered if g in _GROUPS and g not in enabled_set]
    if not names:
        return ""
    return (
        f"; the client offers {', '.join(names)}, which longtls implements but the "
        f"configured groups do not list (add them to Configuration.groups / --groups)"
    )


def get_group(code: int) -> Group:
    """The :class:`Group` for a NamedGroup code point.

    Raises ConfigurationError for a group longtls does not implement; code
    that handles a peer's list should filter with ``SUPPORTED_GROUPS`` first.
    """
    group = _GROUPS.get(code)
    if group is None:
        try:
            label = NamedGroup(code).name
        except ValueError:
            label = f"0x{code:04x}"
        supported = ", ".join(g.name for g in SUPPORTED_GROUPS)
        raise ConfigurationError(
            f"named group {label} is not supported; choose from {supported}"
        )
    return group
