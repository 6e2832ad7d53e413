"""TLS 1.3 record protection (RFC 9846 §5).

``RecordProtection`` is one direction under one traffic secret: it owns the
AEAD, the per-record nonce and the sequence number, and knows the usage limit
of its cipher (§5.5).  ``RecordReader`` splits incoming bytes into records and
applies the size checks of §5.1/§5.2.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag

from ..constants import MAX_CIPHERTEXT_EXPANSION, MAX_PLAINTEXT, AlertDescription, ContentType
from ..crypto.key_schedule import traffic_keys
from ..crypto.suites import SuiteInfo
from ..errors import RemoteProtocolError

HEADER_LENGTH = 5
TAG_LENGTH = 16
_APPLICATION_DATA_HEADER = bytes((ContentType.APPLICATION_DATA, 3, 3))


class RecordProtection:
    """AEAD protection of one direction under one traffic secret (RFC 9846 §5.2-5.3)."""

    __slots__ = ("suite", "_aead", "_iv", "sequence_number")

    def __init__(self, suite: SuiteInfo, traffic_secret: bytes) -> None:
        key, iv = traffic_keys(suite, traffic_secret)
        self.suite = suite
        self._aead = suite.aead(key)
        self._iv = int.from_bytes(iv, "big")
        self.sequence_number = 0

    def __repr__(self) -> str:
        return f"<RecordProtection {self.suite.suite.name} seq={self.sequence_number}>"

    @property
    def near_limit(self) -> bool:
        """True once this key has sealed enough records that it should be replaced.

        We ask for a key update at 7/8 of the §5.5 limit, leaving headroom for
        the records sent while the update is in flight.
        """
        return self.sequence_number >= self.suite.record_limit - (self.suite.record_limit >> 3)

    @property
    def exhausted(self) -> bool:
        return self.sequence_number >= self.suite.record_limit

    def _nonce(self) -> bytes:
        # §5.3: the 64-bit sequence number, left-padded to iv_length, XORed with the IV.
        nonce = (self._iv ^ self.sequence_number).to_bytes(12, "big")
        self.sequence_number += 1
        return nonce

    def seal(self, content_type: int, content: bytes, padding: int = 0) -> bytes:
        """One complete TLSCiphertext record carrying ``content``."""
        if self.exhausted:
            raise RemoteProtocolError(
                "AEAD usage limit reached without a key update", AlertDescription.internal_error
            )
        inner = b"".join((content, bytes((content_type,)), bytes(padding)))
        header = _APPLICATION_DATA_HEADER + (len(inner) + TAG_LENGTH).to_bytes(2, "big")
        return header + self._aead.encrypt(self._nonce(), inner, header)

    def open(self, header: bytes, encrypted_record: bytes) -> tuple[int, bytes]:
        """Decrypt one record; returns (inner content type, content)."""
        try:
            inner = self._aead.decrypt(self._nonce(), encrypted_record, header)
        except InvalidTag:
            raise RemoteProtocolError(
                "record failed authentication", AlertDescription.bad_record_mac
            ) from None
        # §5.4: the content type is the last non-zero byte; the zeros after it are padding.
        end = len(inner.rstrip(b"\x00"))
        if end == 0:
            raise RemoteProtocolError(
                "protected record has no non-zero content type", AlertDescription.unexpected_message
            )
        if end - 1 > MAX_PLAINTEXT:
            raise RemoteProtocolError(
                "decrypted record longer than 2^14 bytes", AlertDescription.record_overflow
            )
        return inner[end - 1], inner[: end - 1]


class RecordReader:
    """Splits a byte stream into TLS records (RFC 9846 §5.1)."""

    __slots__ = ("_buffer", "max_buffered")

    def __init__(self, max_buffered: int = 1 << 20) -> None:
        self._buffer = bytearray()
        self.max_buffered = max_buffered

    def __repr__(self) -> str:
        return f"<RecordReader buffered={len(self._buffer)}>"

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def pop(self) -> tuple[int, bytes, bytes] | None:
        """The next whole record as (outer content type, header, fragment), if there is one."""
        buf = self._buffer
        if len(buf) < HEADER_LENGTH:
            return None
        length = (buf[3] << 8) | buf[4]
        if length > MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION:
            raise RemoteProtocolError(
                f"record of {length} bytes exceeds 2^14 + 256", AlertDescription.record_overflow
            )
        end = HEADER_LENGTH + length
        if len(buf) < end:
            return None
        header = bytes(buf[:HEADER_LENGTH])
        fragment = bytes(buf[HEADER_LENGTH:end])
        del buf[:end]
        return header[0], header, fragment


def plaintext_record(content_type: int, fragment: bytes, legacy_version: int = 0x0303) -> bytes:
    """An unprotected TLSPlaintext record (RFC 9846 §5.1)."""
    return bytes((content_type,)) + legacy_version.to_bytes(2, "big") + len(fragment).to_bytes(
        2, "big"
    ) + fragment
