"""Cipher suites: the AEAD, its tag length, its usage limit and the hash of each (RFC 9846 §B.4).

The AES-CCM suites (docs/groups-and-suites.md): TLS_AES_128_CCM_SHA256 is
in the defaults, last, so constrained devices that speak only CCM reach a
default server while everyone else keeps GCM/ChaCha20; TLS_AES_128_CCM_8_SHA256
is on request only (``cipher_suites=`` or ``--ciphers``): with its 8-byte tag
it "is not suitable for general use" (RFC 9147 Appendix B.3; §4.5.3).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from ..constants import CipherSuite
from ..errors import ConfigurationError

AEAD: TypeAlias = AESGCM | ChaCha20Poly1305 | AESCCM

# RFC 9846 §5.5: AES-GCM may protect up to 2^24.5 full-size records under one
# key.  We rekey well before that.  ChaCha20-Poly1305's sequence number would
# wrap first, so its only limit is the 64-bit sequence space.
AES_GCM_RECORD_LIMIT = int(2**24.5)
SEQUENCE_LIMIT = 2**64 - 1
# RFC 9846 §5.5 gives no figure for AES-CCM.  RFC 9147 Appendix B.1 (the
# analysis draft-irtf-cfrg-aead-limits summarises) derives q <= 2^23 full-size
# records for the same 2^-60 confidentiality margin; it does not depend on the
# tag, so CCM_8 shares it.  The integrity limits there (2^23.5 forgeries for
# CCM, only 2^7 for CCM_8) count records that fail authentication; TLS closes
# the connection at the first one (bad_record_mac), so at most one forgery is
# ever tried per key and those limits cannot be reached.
AES_CCM_RECORD_LIMIT = 2**23


@dataclass(frozen=True, slots=True)
class SuiteInfo:
    suite: CipherSuite
    key_length: int
    hash_name: str  # "sha256" or "sha384"
    record_limit: int  # records we may seal under one key (RFC 9846 §5.5)
    iv_length: int = 12
    #: bytes the AEAD adds to each record: 16, or 8 for AES-128-CCM-8 (RFC 6655)
    tag_length: int = 16
    # Derived once: the key schedule asks for these dozens of times per handshake.
    hash: hashes.HashAlgorithm = field(init=False, repr=False, compare=False)
    hash_length: int = field(init=False, repr=False, compare=False)
    empty_hash: bytes = field(init=False, repr=False, compare=False)  # Hash("")
    #: ``aead(key)``: a new AEAD object under ``key``.  The constructor itself,
    #: chosen once, not a method that calls it: a handshake builds 8, an
    #: extended key update 4 (issue 16).
    aead: Callable[[bytes], AEAD] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        algorithm = hashes.SHA384() if self.hash_name == "sha384" else hashes.SHA256()
        digest = hashes.Hash(algorithm)
        object.__setattr__(self, "hash", algorithm)
        object.__setattr__(self, "hash_length", algorithm.digest_size)
        object.__setattr__(self, "empty_hash", digest.finalize())
        aead_class: Callable[[bytes], AEAD] = AESGCM
        if self.suite == CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
            aead_class = ChaCha20Poly1305
        elif self.suite in _CCM_SUITES:
            # RFC 9846 §5.3: a 12-byte nonce for every suite, so CCM's length
            # field is 3 bytes (messages up to 2^24 bytes, far above 2^14 + 256).
            aead_class = functools.partial(AESCCM, tag_length=self.tag_length)
        object.__setattr__(self, "aead", aead_class)


_CCM_SUITES = frozenset(
    (CipherSuite.TLS_AES_128_CCM_SHA256, CipherSuite.TLS_AES_128_CCM_8_SHA256)
)


SUITES: dict[CipherSuite, SuiteInfo] = {
    CipherSuite.TLS_AES_128_GCM_SHA256: SuiteInfo(
        CipherSuite.TLS_AES_128_GCM_SHA256, 16, "sha256", AES_GCM_RECORD_LIMIT
    ),
    CipherSuite.TLS_AES_256_GCM_SHA384: SuiteInfo(
        CipherSuite.TLS_AES_256_GCM_SHA384, 32, "sha384", AES_GCM_RECORD_LIMIT
    ),
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: SuiteInfo(
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256, 32, "sha256", SEQUENCE_LIMIT
    ),
    CipherSuite.TLS_AES_128_CCM_SHA256: SuiteInfo(
        CipherSuite.TLS_AES_128_CCM_SHA256, 16, "sha256", AES_CCM_RECORD_LIMIT
    ),
    # Not in DEFAULT_CIPHER_SUITES: on request only (see the module docstring).
    CipherSuite.TLS_AES_128_CCM_8_SHA256: SuiteInfo(
        CipherSuite.TLS_AES_128_CCM_8_SHA256, 16, "sha256", AES_CCM_RECORD_LIMIT, tag_length=8
    ),
}

#: In preference order; a server picks by its own order, so CCM is used only
#: with peers that offer none of the others (or that prefer it as servers).
DEFAULT_CIPHER_SUITES: tuple[CipherSuite, ...] = (
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    CipherSuite.TLS_AES_128_CCM_SHA256,
)


def not_enabled_hint(offered: Iterable[int], enabled: Iterable[int]) -> str:
    """Why a server found no cipher suite in common, when the peer offered
    suites longtls implements but ``enabled`` (Configuration.cipher_suites)
    does not list (TLS_AES_128_CCM_8_SHA256, typically): text to append, or ""."""
    enabled_set = set(enabled)
    names = [
        CipherSuite(s).name for s in offered if s in set(SUITES) and s not in enabled_set
    ]
    if not names:
        return ""
    return (
        f"; the client offers {', '.join(names)}, which longtls implements but the "
        f"configured cipher suites do not list (add them to Configuration.cipher_suites / "
        f"--ciphers)"
    )


def suite_info(suite: int) -> SuiteInfo:
    # An IntEnum member hashes and compares as its int: a plain int finds its
    # suite without building the enum (issue 16: ~6 look-ups per handshake).
    info: SuiteInfo | None = SUITES.get(suite)  # type: ignore[call-overload]
    if info is None:
        raise ConfigurationError(f"unsupported cipher suite 0x{suite:04x}")
    return info
