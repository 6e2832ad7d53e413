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
from ..errors import RemoteProtocolError, UsageLimitError
from .arrival import MAX_CIPHERTEXT_LENGTH, PROTECTED_RECORD_TYPE, RECORD_TYPES, header_error

HEADER_LENGTH = 5
#: The AEAD tag of every suite but TLS_AES_128_CCM_8_SHA256 (8 bytes); a
#: RecordProtection's ``tag_length`` is the one of its suite.
TAG_LENGTH = 16
_APPLICATION_DATA_HEADER = bytes((ContentType.APPLICATION_DATA, 3, 3))
# Room for one record's ciphertext, appended then overwritten by encrypt_into.
_ZEROS = memoryview(bytes(MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION))


class RecordProtection:
    """AEAD protection of one direction under one traffic secret (RFC 9846 §5.2-5.3)."""

    __slots__ = ("suite", "tag_length", "_aead", "_iv", "sequence_number", "_inner")

    def __init__(self, suite: SuiteInfo, traffic_secret: bytes) -> None:
        key, iv = traffic_keys(suite, traffic_secret)
        self.suite = suite
        #: What the AEAD adds to each record (RFC 9846 §5.2: length = inner plaintext + tag).
        self.tag_length = suite.tag_length
        self._aead = suite.aead(key)
        self._iv = int.from_bytes(iv, "big")
        self.sequence_number = 0
        self._inner = bytearray()  # reused TLSInnerPlaintext buffer

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
        out = bytearray()
        self.seal_into(out, content_type, content, padding)
        return bytes(out)

    def seal_into(
        self, out: bytearray, content_type: int, content: bytes | memoryview, padding: int = 0
    ) -> None:
        """Append one complete TLSCiphertext record carrying ``content`` to ``out``.

        The hot path of bulk data: the content is copied once into the
        TLSInnerPlaintext and sealed straight into ``out`` (no intermediate
        ciphertext object).
        """
        if self.exhausted:
            # §5.5: our own limit; the key update that replaces this key is late.
            raise UsageLimitError("AEAD usage limit of the sending key reached; the key update has not completed")
        n = len(content)
        inner_length = n + 1 + padding
        inner = self._inner
        if len(inner) < inner_length:
            inner = self._inner = bytearray(inner_length)
        inner[:n] = content
        inner[n] = content_type
        if padding:
            inner[n + 1 : inner_length] = bytes(padding)
        length = inner_length + self.tag_length
        start = len(out)
        out += _APPLICATION_DATA_HEADER
        out += length.to_bytes(2, "big")
        out += _ZEROS[:length]
        with memoryview(out) as view, memoryview(inner) as plain:
            self._aead.encrypt_into(
                self._nonce(), plain[:inner_length], view[start : start + HEADER_LENGTH],
                view[start + HEADER_LENGTH :],
            )

    def discard_failed_open(self) -> None:
        """Give back the sequence number a failed ``open`` used: the record is
        dropped as if it never arrived (a server skipping rejected 0-RTT, RFC 9846 §4.3.10)."""
        self.sequence_number -= 1

    def open(self, header: bytes, encrypted_record: bytes | memoryview) -> tuple[int, bytes]:
        """Decrypt one record; returns (inner content type, content)."""
        try:
            inner = self._aead.decrypt(self._nonce(), encrypted_record, header)
        except InvalidTag:
            raise RemoteProtocolError(
                "record failed authentication", AlertDescription.bad_record_mac
            ) from None
        if inner and inner[-1]:  # no padding: the common case
            end = len(inner)
        else:
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
    """Splits a byte stream into TLS records (RFC 9846 §5.1).

    Each header is judged as soon as its 5 bytes are in (content type, the
    major byte of legacy_record_version, length; see ``record.arrival``), so
    bytes that are not TLS end the connection at once instead of being
    buffered until the handshake timeout.  Records are handed out as
    memoryview slices of the received bytes, so a record is not copied before
    it is decrypted.
    """

    __slots__ = ("_data", "_pos", "_allowed", "_first")

    def __init__(self, first_record_types: frozenset[int] = RECORD_TYPES) -> None:
        """``first_record_types``: the content types the peer's first record may
        have (a server passes ``SERVER_FIRST_RECORD_TYPES``)."""
        self._data = b""
        self._pos = 0
        self._allowed = first_record_types
        self._first = True

    def __repr__(self) -> str:
        return f"<RecordReader buffered={self.buffered}>"

    @property
    def started(self) -> bool:
        """Whether a record from the peer has arrived."""
        return not self._first

    @property
    def buffered(self) -> int:
        return len(self._data) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._data):
            self._data = bytes(data)
        else:
            self._data = self._data[self._pos :] + data
        self._pos = 0

    def pop(self) -> tuple[int, bytes, memoryview] | None:
        """The next whole record as (outer content type, header, fragment), if there is one.

        Raises RemoteProtocolError (NotTLSError for a first record that is not
        TLS) as soon as a header is unacceptable, whole record or not.
        """
        data, pos = self._data, self._pos
        if len(data) - pos < HEADER_LENGTH:
            if pos and pos == len(data):
                # All handed out: keep no reference to the last bytes received
                # (an idle connection held its peer's last flight, issue 16).
                self._data = b""
                self._pos = 0
            return None
        content_type = data[pos]
        if content_type not in self._allowed or data[pos + 1] != 3:
            raise header_error(data[pos : pos + 16], self._first, self._allowed)
        length = (data[pos + 3] << 8) | data[pos + 4]
        # §5.2: a protected record (outer type application_data) carries up to
        # 2^14 + 256 bytes; the plaintext types up to 2^14 (§5.1).
        limit = MAX_CIPHERTEXT_LENGTH if content_type == PROTECTED_RECORD_TYPE else MAX_PLAINTEXT
        if length > limit:
            raise RemoteProtocolError(
                f"record of {length} bytes exceeds {limit}", AlertDescription.record_overflow
            )
        end = pos + HEADER_LENGTH + length
        if len(data) < end:
            return None
        self._pos = end
        if self._first:
            self._first = False
            self._allowed = RECORD_TYPES
        return content_type, data[pos : pos + HEADER_LENGTH], memoryview(data)[pos + HEADER_LENGTH : end]


def plaintext_record(content_type: int, fragment: bytes, legacy_version: int = 0x0303) -> bytes:
    """An unprotected TLSPlaintext record (RFC 9846 §5.1)."""
    return bytes((content_type,)) + legacy_version.to_bytes(2, "big") + len(fragment).to_bytes(
        2, "big"
    ) + fragment
