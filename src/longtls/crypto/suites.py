"""Cipher suites: the AEAD and the hash of each (RFC 9846 §B.4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ..constants import CipherSuite
from ..errors import ConfigurationError

AEAD: TypeAlias = AESGCM | ChaCha20Poly1305

# RFC 9846 §5.5: AES-GCM may protect up to 2^24.5 full-size records under one
# key.  We rekey well before that.  ChaCha20-Poly1305's sequence number would
# wrap first, so its only limit is the 64-bit sequence space.
AES_GCM_RECORD_LIMIT = int(2**24.5)
SEQUENCE_LIMIT = 2**64 - 1


@dataclass(frozen=True, slots=True)
class SuiteInfo:
    suite: CipherSuite
    key_length: int
    hash_name: str  # "sha256" or "sha384"
    record_limit: int  # records we may seal under one key (RFC 9846 §5.5)
    iv_length: int = 12
    # Derived once: the key schedule asks for these dozens of times per handshake.
    hash: hashes.HashAlgorithm = field(init=False, repr=False, compare=False)
    hash_length: int = field(init=False, repr=False, compare=False)
    empty_hash: bytes = field(init=False, repr=False, compare=False)  # Hash("")

    def __post_init__(self) -> None:
        algorithm = hashes.SHA384() if self.hash_name == "sha384" else hashes.SHA256()
        digest = hashes.Hash(algorithm)
        object.__setattr__(self, "hash", algorithm)
        object.__setattr__(self, "hash_length", algorithm.digest_size)
        object.__setattr__(self, "empty_hash", digest.finalize())

    def aead(self, key: bytes) -> AEAD:
        if self.suite == CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
            return ChaCha20Poly1305(key)
        return AESGCM(key)


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
}

DEFAULT_CIPHER_SUITES: tuple[CipherSuite, ...] = (
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
)


def suite_info(suite: int) -> SuiteInfo:
    try:
        return SUITES[CipherSuite(suite)]
    except (ValueError, KeyError):
        raise ConfigurationError(f"unsupported cipher suite 0x{suite:04x}") from None
