"""TLS 1.3 record protection (RFC 9846 §5).

``RecordProtection`` is one direction under one traffic secret: it owns the
AEAD, the per-record nonce and the sequence number, and knows the usage limit
of its cipher (§5.5).  ``RecordReader`` splits incoming bytes into records and
applies the size checks of §5.1/§5.2.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from ..constants import MAX_PLAINTEXT, AlertDescription, ContentType
from ..crypto.key_schedule import traffic_keys
from ..crypto.suites import SuiteInfo
from ..errors import RemoteProtocolError, UsageLimitError
from .arrival import MAX_CIPHERTEXT_LENGTH, PROTECTED_RECORD_TYPE, RECORD_TYPES, header_error

HEADER_LENGTH = 5
#: The AEAD tag of every suite but TLS_AES_128_CCM_8_SHA256 (8 bytes); a
#: RecordProtection's ``tag_length`` is the one of its suite.
TAG_LENGTH = 16
_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)  # a plain int: compared per record
_APPLICATION_DATA_HEADER = bytes((ContentType.APPLICATION_DATA, 3, 3))
#: The least scratch ``RecordReader.open_application_data_into`` decrypts
#: into: the largest TLSInnerPlaintext (RFC 9846 §5.2: 2^14 bytes of content
#: and its content type; RFC 8449 §4 limits count the same bytes).
SCRATCH_MINIMUM = MAX_PLAINTEXT + 1


class RecordProtection:
    """AEAD protection of one direction under one traffic secret (RFC 9846 §5.2-5.3)."""

    __slots__ = ("suite", "tag_length", "_aead", "_iv", "sequence_number")

    def __init__(self, suite: SuiteInfo, traffic_secret: bytes) -> None:
        key, iv = traffic_keys(suite, traffic_secret)
        self.suite = suite
        #: What the AEAD adds to each record (RFC 9846 §5.2: length = inner plaintext + tag).
        self.tag_length = suite.tag_length
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

    def seal(self, content_type: int, content: bytes, padding: int = 0) -> bytes:
        """One complete TLSCiphertext record carrying ``content``."""
        out = bytearray()
        self.seal_into(out, content_type, content, padding)
        return bytes(out)

    def seal_into(
        self, out: bytearray, content_type: int, content: bytes | memoryview, padding: int = 0
    ) -> None:
        """Append one complete TLSCiphertext record carrying ``content`` to ``out``."""
        start = len(out)
        out += bytes(self.sealed_room(len(content), len(content) or 1, padding))
        del out[self.seal_records(out, start, content_type, content, len(content) or 1, padding) :]

    def sealed_room(self, length: int, fragment_size: int, padding: int = 0) -> int:
        """Bytes ``seal_records`` needs for ``length`` bytes of content: the
        records, then room to assemble one TLSInnerPlaintext in."""
        count = (length - 1) // fragment_size + 1 if length else 1
        overhead = HEADER_LENGTH + 1 + padding + self.tag_length
        return length + count * overhead + min(length, fragment_size) + 1 + padding

    def seal_records(
        self, out: bytearray, start: int, content_type: int, data: bytes | memoryview,
        fragment_size: int, padding: int = 0,
    ) -> int:
        """Seal ``data`` into ``out[start:]`` as records of ``fragment_size``
        bytes of content (the last one shorter; empty ``data`` is one empty
        record), each with ``padding`` zeros (RFC 9846 §5.2, §5.4).

        ``out`` must hold ``sealed_room(...)`` bytes from ``start``, zeros
        where padding goes.  Returns where the records end; the bytes after
        them are scratch the caller cuts off.  Raises UsageLimitError if the
        records would pass this key's limit (§5.5: ours; the key update that
        replaces the key is late), having sealed nothing and cut ``out``
        back to ``start``, as for any other failure.

        The hot path of bulk data.  Each TLSInnerPlaintext (content, type,
        padding) is assembled in the scratch room after the records, where
        the AEAD reads it and seals it straight into the record's place
        before it: one copy of the content per record, no buffer kept between
        calls, and the AEAD's input never overlaps its output (pyca's
        ``encrypt_into`` promises nothing for overlapping buffers).
        """
        length = len(data)
        count = (length - 1) // fragment_size + 1 if length else 1
        seq = self.sequence_number
        if seq + count > self.suite.record_limit:
            del out[start:]
            raise UsageLimitError("AEAD usage limit of the sending key reached; the key update has not completed")
        aead, iv, tag_length = self._aead, self._iv, self.tag_length
        # §5.2: the header (the AEAD's additional data) is the same for every
        # full record; only a shorter last one needs its own.
        full_length = fragment_size + 1 + padding + tag_length
        full_header = _APPLICATION_DATA_HEADER + full_length.to_bytes(2, "big")
        scratch = start + length + count * (HEADER_LENGTH + 1 + padding + tag_length)
        pos = start
        try:
            with memoryview(out) as view, memoryview(data) as content:
                for offset in range(0, length or 1, fragment_size):
                    chunk = content[offset : offset + fragment_size]
                    n = len(chunk)
                    view[scratch : scratch + n] = chunk
                    out[scratch + n] = content_type  # the zeros after it are the padding
                    if n == fragment_size:
                        header = full_header
                    else:  # the last record, shorter
                        header = _APPLICATION_DATA_HEADER + (n + 1 + padding + tag_length).to_bytes(2, "big")
                        if padding:  # zeros over what a longer record left there
                            view[scratch + n + 1 : scratch + n + 1 + padding] = bytes(padding)
                    view[pos : pos + HEADER_LENGTH] = header
                    pos += HEADER_LENGTH
                    end = pos + n + 1 + padding + tag_length
                    # §5.3: the 64-bit sequence number, left-padded to iv_length, XORed with the IV.
                    aead.encrypt_into(
                        (iv ^ seq).to_bytes(12, "big"), view[scratch : scratch + n + 1 + padding], header,
                        view[pos:end],
                    )
                    seq += 1
                    pos = end
        except BaseException:
            del out[start:]  # nothing sealed: the sequence number is unchanged too
            raise
        self.sequence_number = seq
        return pos

    def discard_failed_open(self) -> None:
        """Give back the sequence number a failed ``open`` used: the record is
        dropped as if it never arrived (a server skipping rejected 0-RTT, RFC 9846 §4.3.10)."""
        self.sequence_number -= 1

    def open(self, header: bytes, encrypted_record: bytes | memoryview) -> tuple[int, bytes]:
        """Decrypt one record; returns (inner content type, content)."""
        seq = self.sequence_number
        self.sequence_number = seq + 1
        try:
            # §5.3: the 64-bit sequence number, left-padded to iv_length, XORed with the IV.
            inner = self._aead.decrypt((self._iv ^ seq).to_bytes(12, "big"), encrypted_record, header)
        except InvalidTag:
            raise _bad_record_mac() from None
        return inner_content(inner)


def inner_content(inner: bytes) -> tuple[int, bytes]:
    """(content type, content) of a decrypted TLSInnerPlaintext (RFC 9846 §5.2, §5.4)."""
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


def _bad_record_mac() -> RemoteProtocolError:
    return RemoteProtocolError("record failed authentication", AlertDescription.bad_record_mac)


class RecordReader:
    """Splits a byte stream into TLS records (RFC 9846 §5.1).

    Each header is judged as soon as its 5 bytes are in (content type, the
    major byte of legacy_record_version, length; see ``record.arrival``), so
    bytes that are not TLS end the connection at once instead of being
    buffered until the handshake timeout.  Records are handed out as
    memoryview slices of the received bytes, so a record is not copied before
    it is decrypted.
    """

    __slots__ = ("_data", "_pos", "_allowed", "_first", "_rest", "_rest_pos")

    def __init__(self, first_record_types: frozenset[int] = RECORD_TYPES) -> None:
        """``first_record_types``: the content types the peer's first record may
        have (a server passes ``SERVER_FIRST_RECORD_TYPES``)."""
        self._data = b""
        self._pos = 0
        self._allowed = first_record_types
        self._first = True
        # Received bytes that follow ``_data`` (see ``feed``), from ``_rest_pos``.
        self._rest: bytes | None = None
        self._rest_pos = 0

    def __repr__(self) -> str:
        return f"<RecordReader buffered={self.buffered}>"

    @property
    def started(self) -> bool:
        """Whether a record from the peer has arrived."""
        return not self._first

    @property
    def buffered(self) -> int:
        rest = 0 if self._rest is None else len(self._rest) - self._rest_pos
        return len(self._data) - self._pos + rest

    def feed(self, data: bytes) -> None:
        data = bytes(data)
        pos = self._pos
        if self._rest is not None:  # an earlier feed not read through (the connection closed)
            self._data, pos = self._data[pos:] + self._rest[self._rest_pos :], 0
            self._rest = None
        if pos >= len(self._data):
            self._data, self._pos = data, 0
            return
        leftover = self._data[pos:]
        self._pos = 0
        missing = HEADER_LENGTH + ((leftover[3] << 8) | leftover[4]) - len(leftover) if len(leftover) >= 5 else 0
        if 0 < missing < len(data):
            # TCP cuts records anywhere: the bytes left over are the start of
            # one record.  Complete it from the head of ``data`` and read on
            # in ``data`` itself, so only that record is copied, not
            # everything received.
            self._data = leftover + data[:missing]
            self._rest, self._rest_pos = data, missing
        else:
            self._data = leftover + data

    def _read_rest(self) -> bool:
        """Go on in the bytes after ``_data`` once ``_data`` is read through."""
        if self._rest is None or self._pos != len(self._data):
            return False
        self._data, self._pos = self._rest, self._rest_pos
        self._rest = None
        return True

    def pop(self) -> tuple[int, bytes, memoryview] | None:
        """The next whole record as (outer content type, header, fragment), if there is one.

        Raises RemoteProtocolError (NotTLSError for a first record that is not
        TLS) as soon as a header is unacceptable, whole record or not.
        """
        data, pos = self._data, self._pos
        if len(data) - pos < HEADER_LENGTH:
            if self._read_rest():
                return self.pop()
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
            return None  # (never with bytes after ``_data``: it then ends with a whole record)
        self._pos = end
        if self._first:
            self._first = False
            self._allowed = RECORD_TYPES
        return content_type, data[pos : pos + HEADER_LENGTH], memoryview(data)[pos + HEADER_LENGTH : end]

    def open_application_data(
        self, protection: RecordProtection, size_limit: int, contents: list[bytes]
    ) -> tuple[int, bytes] | None:
        """The hot path of receiving bulk data: open the buffered records one
        after the other while they carry application data, appending each
        one's content to ``contents``.

        Stops at a record that opens to anything else (a post-handshake
        message, an alert, an empty or padded record) and returns its
        (content type, content), as ``RecordProtection.open`` would.  Returns
        None when no whole record is left, or when the next one is not a
        well-formed protected record whose TLSInnerPlaintext fits in
        ``size_limit`` (RFC 8449 §4): that one stays buffered for ``pop``,
        which judges it.  Raises bad_record_mac (RFC 9846 §5.2) for a record
        that does not open.

        The same checks and the same nonces as ``pop`` and ``open``, for a
        few operations per record: one memoryview for the run, header fields
        read in place, one AEAD call and one copy of each content.
        """
        if self._first:
            return None  # application data never comes first (pop judges the first record)
        data, pos = self._data, self._pos
        available = len(data)
        aead, iv, seq = protection._aead, protection._iv, protection.sequence_number
        # §5.2: at most 2^14 + 256 bytes; RFC 8449 §4: the inner plaintext
        # (content, type, padding) within our limit, checked before decrypting.
        limit = min(MAX_CIPHERTEXT_LENGTH, min(size_limit, MAX_PLAINTEXT + 1) + protection.tag_length)
        opened: tuple[int, bytes] | None = None
        with memoryview(data) as view:
            try:
                while available - pos >= HEADER_LENGTH:
                    if data[pos] != PROTECTED_RECORD_TYPE or data[pos + 1] != 3:
                        break
                    length = (data[pos + 3] << 8) | data[pos + 4]
                    end = pos + HEADER_LENGTH + length
                    if length > limit or end > available:
                        break
                    # §5.3: the 64-bit sequence number, left-padded to iv_length, XORed with the IV.
                    nonce = (iv ^ seq).to_bytes(12, "big")
                    seq += 1
                    inner = aead.decrypt(nonce, view[pos + HEADER_LENGTH : end], data[pos : pos + HEADER_LENGTH])
                    pos = end
                    if len(inner) > 1 and inner[-1] == _APPLICATION_DATA:
                        contents.append(inner[:-1])
                    else:
                        opened = inner_content(inner)
                        break
            except InvalidTag:
                raise _bad_record_mac() from None
            finally:
                self._pos = pos
                protection.sequence_number = seq
        if opened is None and self._read_rest():
            return self.open_application_data(protection, size_limit, contents)
        return opened

    def open_application_data_into(
        self, protection: RecordProtection, size_limit: int, scratch: bytearray,
        sink: Callable[[memoryview], object],
    ) -> tuple[int, bytes] | None:
        """``open_application_data`` for a consumer that copies the contents
        into a buffer of its own at once (longtls.aio's stream reader).

        Each record is decrypted straight into ``scratch`` (``decrypt_into``:
        no new zero-filled object per record, no copy of the content out of
        it), the contents of consecutive records side by side: the next
        record's content overwrites the previous one's inner content type.
        ``sink`` gets the contents as one memoryview of ``scratch``, valid
        only during the call, each time the next record would not fit and
        when the run ends (also when a later record fails: what opened
        before it is delivered).  ``scratch`` must hold a whole
        TLSInnerPlaintext (``SCRATCH_MINIMUM`` bytes); it holds nothing
        between calls, so connections may share one.  The same checks, nonces
        and returns as ``open_application_data``.
        """
        if self._first:
            return None
        if len(scratch) < SCRATCH_MINIMUM:
            raise ValueError(f"scratch buffer smaller than {SCRATCH_MINIMUM} bytes")
        data, pos = self._data, self._pos
        available = len(data)
        aead, iv, seq = protection._aead, protection._iv, protection.sequence_number
        tag_length = protection.tag_length
        # §5.2 and RFC 8449 §4, as in open_application_data: at most
        # SCRATCH_MINIMUM bytes of TLSInnerPlaintext, checked before decrypting.
        limit = min(MAX_CIPHERTEXT_LENGTH, min(size_limit, MAX_PLAINTEXT + 1) + tag_length)
        capacity = len(scratch)
        filled = 0  # contents in scratch[:filled], not yet handed to sink
        opened: tuple[int, bytes] | None = None
        with memoryview(data) as view, memoryview(scratch) as out:
            try:
                while available - pos >= HEADER_LENGTH:
                    if data[pos] != PROTECTED_RECORD_TYPE or data[pos + 1] != 3:
                        break
                    length = (data[pos + 3] << 8) | data[pos + 4]
                    end = pos + HEADER_LENGTH + length
                    inner_length = length - tag_length
                    # An inner plaintext must hold its content type (§5.2):
                    # shorter ones go the general way, which fails them.
                    if length > limit or end > available or inner_length < 1:
                        break
                    if filled + inner_length > capacity:
                        sink(out[:filled])
                        filled = 0
                    # §5.3: the 64-bit sequence number, left-padded to iv_length, XORed with the IV.
                    aead.decrypt_into(
                        (iv ^ seq).to_bytes(12, "big"), view[pos + HEADER_LENGTH : end],
                        data[pos : pos + HEADER_LENGTH], out[filled : filled + inner_length],
                    )
                    seq += 1
                    pos = end
                    if inner_length > 1 and out[filled + inner_length - 1] == _APPLICATION_DATA:
                        filled += inner_length - 1
                    else:
                        opened = inner_content(bytes(out[filled : filled + inner_length]))
                        break
            except InvalidTag:
                # scratch past ``filled`` holds the failed record's
                # unauthenticated output: never handed out.
                raise _bad_record_mac() from None
            finally:
                self._pos = pos
                protection.sequence_number = seq
                if filled:
                    sink(out[:filled])
        if opened is None and self._read_rest():
            return self.open_application_data_into(protection, size_limit, scratch, sink)
        return opened


def plaintext_record(content_type: int, fragment: bytes, legacy_version: int = 0x0303) -> bytes:
    """An unprotected TLSPlaintext record (RFC 9846 §5.1)."""
    return bytes((content_type,)) + legacy_version.to_bytes(2, "big") + len(fragment).to_bytes(
        2, "big"
    ) + fragment
