"""The TLS 1.3 record layer (RFC 9846 §5) as one object.

``TLSRecordLayer`` owns what lies between the byte stream and the content of
records: the reader that frames incoming bytes, the read and write
protection and their generations, padding, the record size limits of
RFC 8449, the AEAD usage limits (§5.5), and the rules on which records may
arrive unprotected, which must be protected, and when a compatibility
change_cipher_spec is dropped.  What the records carry (handshake messages,
alerts, application data) is the connection's business.

The hot paths (issue 16, docs/benchmarks.md "Bulk: the record path"):
``send`` seals all the records of one call at once into the output buffer
(``RecordProtection.seal_records``: the buffer grows once, one copy of the
content per record), and ``open_application_data`` opens a run of protected
application data records in one loop (``RecordReader.open_application_data``),
handing anything else back to ``next_record``'s general path;
``open_application_data_into`` is the same loop decrypting into a caller's
scratch buffer for ``Connection.receive_data_into`` (longtls.aio, docs/benchmarks.md
"asyncio throughput").
"""

from __future__ import annotations

from collections.abc import Callable

from ..constants import MAX_PLAINTEXT, AlertDescription, AlertLevel, ContentType
from ..crypto.suites import SuiteInfo
from ..errors import RemoteProtocolError, UsageLimitError
from .arrival import RECORD_TYPES, SERVER_FIRST_RECORD_TYPES
from .layer import PaddingPolicy, ReadPolicy
from .tls import RecordProtection, RecordReader, plaintext_record

_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)  # a plain int: compared per record
_HANDSHAKE = int(ContentType.HANDSHAKE)
_ALERT = int(ContentType.ALERT)
_CHANGE_CIPHER_SPEC = int(ContentType.CHANGE_CIPHER_SPEC)
# RFC 9846 §5: a compatibility-mode peer sends one; a few more are tolerated.
_MAX_CCS_RECORDS = 16


class TLSRecordLayer:
    """The records of one TLS 1.3 connection, both directions."""

    def __init__(self, policy: ReadPolicy, *, is_client: bool, padding: PaddingPolicy | None = None) -> None:
        self._policy = policy
        self._is_client = is_client
        self._padding = padding
        # RFC 9846 §5: a server's first record must carry the ClientHello.
        self.reader = RecordReader(RECORD_TYPES if is_client else SERVER_FIRST_RECORD_TYPES)
        self.read: RecordProtection | None = None
        self.write: RecordProtection | None = None
        self.read_secret = b""
        self.write_secret = b""
        self.read_generation = 0
        self.write_generation = 0
        self._out = bytearray()
        # Largest TLSInnerPlaintext the peer accepts (RFC 8449); until it tells us, 2^14 + 1.
        self.peer_record_size_limit = MAX_PLAINTEXT + 1
        # The limit we enforce: ours once the peer agreed to it (RFC 8449 §4), else 2^14 + 1.
        self.receive_record_size_limit = MAX_PLAINTEXT + 1
        self._ccs_seen = 0

    def __repr__(self) -> str:
        return f"<TLSRecordLayer read={self.read!r} write={self.write!r}>"

    # ------------------------------------------------------------------ reading

    def feed(self, data: bytes) -> None:
        self.reader.feed(data)

    def next_record(self) -> tuple[int, bytes] | None:
        """The next record's (content type, content), opened and checked.

        None once no whole record is buffered.  Compatibility
        change_cipher_spec records and skipped 0-RTT records are consumed here.
        Raises RemoteProtocolError (alert named) for a record that breaks §5.
        """
        reader = self.reader
        while True:
            record = reader.pop()
            if record is None:
                return None
            outer_type, header, fragment = record
            read = self.read
            if outer_type == _APPLICATION_DATA and read is not None and self._policy.application_data_allowed:
                # The hot path: protected application data on an established connection.
                if len(fragment) - read.tag_length > self.receive_record_size_limit:
                    raise RemoteProtocolError(
                        "record exceeds our record_size_limit", AlertDescription.record_overflow
                    )
                return read.open(header, fragment)
            opened = self._other_record(outer_type, header, fragment, read)
            if opened is not None:
                return opened

    def open_application_data(self, contents: list[bytes]) -> tuple[int, bytes] | None:
        """The hot path of bulk data: open buffered records while they carry
        application data, appending their contents to ``contents``; see
        ``RecordReader.open_application_data``.  Returns the record that
        stopped the run, if it opened, else None: ``next_record`` goes on
        from there (and judges a record this path left alone)."""
        read = self.read
        if read is None or not self._policy.application_data_allowed:
            return None
        return self.reader.open_application_data(read, self.receive_record_size_limit, contents)

    def open_application_data_into(
        self, scratch: bytearray, sink: Callable[[memoryview], object]
    ) -> tuple[int, bytes] | None:
        """``open_application_data`` with the contents decrypted into
        ``scratch`` and handed to ``sink`` a run at a time
        (``RecordReader.open_application_data_into``)."""
        read = self.read
        if read is None or not self._policy.application_data_allowed:
            return None
        return self.reader.open_application_data_into(read, self.receive_record_size_limit, scratch, sink)

    def _other_record(
        self, outer_type: int, header: bytes, fragment: memoryview, read: RecordProtection | None
    ) -> tuple[int, bytes] | None:
        policy = self._policy
        if outer_type == _CHANGE_CIPHER_SPEC:
            self._check_change_cipher_spec(fragment)
            return None
        if read is None or (outer_type == _ALERT and not policy.complete):
            # Unprotected records: the hellos, and a peer's alert sent before it
            # had our handshake keys.
            if outer_type == _APPLICATION_DATA and read is None and policy.skip_early_data_record(len(fragment)):
                return None  # RFC 9846 §4.3.10: 0-RTT after our HelloRetryRequest
            if outer_type not in (_HANDSHAKE, _ALERT):
                raise RemoteProtocolError(
                    f"unexpected unprotected record of type {outer_type}",
                    AlertDescription.unexpected_message,
                )
            if len(fragment) > MAX_PLAINTEXT:
                raise RemoteProtocolError("plaintext record over 2^14 bytes", AlertDescription.record_overflow)
            return outer_type, bytes(fragment)
        if outer_type != _APPLICATION_DATA:
            raise RemoteProtocolError(
                "unprotected record after keys were established", AlertDescription.unexpected_message
            )
        # RFC 8449 §4 / RFC 9846 §5.4: the limit covers the whole
        # TLSInnerPlaintext (content, type and padding).
        if len(fragment) - read.tag_length > self.receive_record_size_limit:
            raise RemoteProtocolError("record exceeds our record_size_limit", AlertDescription.record_overflow)
        try:
            return read.open(header, fragment)
        except RemoteProtocolError:
            # The failed attempt used a sequence number; the ones before it opened.
            if policy.skip_undecryptable(len(fragment), read.sequence_number - 1):
                read.discard_failed_open()
                return None
            raise

    def _check_change_cipher_spec(self, fragment: memoryview) -> None:
        # RFC 9846 §5: a single 0x01 byte between the first ClientHello and the
        # peer's Finished is dropped; anything else is unexpected.
        if bytes(fragment) != b"\x01" or not self._policy.change_cipher_spec_allowed:
            raise RemoteProtocolError("unexpected change_cipher_spec record", AlertDescription.unexpected_message)
        self._ccs_seen += 1
        if self._ccs_seen > _MAX_CCS_RECORDS:
            raise RemoteProtocolError("too many change_cipher_spec records", AlertDescription.unexpected_message)

    # ------------------------------------------------------------------ writing

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def take_data_to_send(self) -> bytearray:
        """``data_to_send`` without the copy into ``bytes``: the buffer itself
        is handed over (the caller owns it; the next records go to a new one)."""
        out = self._out
        self._out = bytearray()
        return out

    def send(self, content_type: ContentType, data: bytes) -> None:
        """``data`` in records of at most the peer's limit, protected once a write key is in."""
        size = self._max_fragment()
        write = self.write
        if write is None:
            # RFC 9846 §5.1: only the initial ClientHello (one not generated
            # after a HelloRetryRequest, i.e. before anything arrived) may use 0x0301.
            version = 0x0301 if self._is_client and not self.reader.started else 0x0303
            for i in range(0, len(data), size):
                self._out += plaintext_record(content_type, data[i : i + size], version)
            return
        if self._padding is None:
            # All records at once (seal_records refuses, sealing nothing, if
            # they would pass the key's limit, §5.5): ``_out`` grows once.
            out = self._out
            start = len(out)
            room = write.sealed_room(len(data), size)
            if start:
                out += bytes(room)
            else:
                out = self._out = bytearray(room)
            del out[write.seal_records(out, start, content_type, data, size) :]
            return
        if not data:
            self._seal(content_type, data)
            return
        if write.sequence_number + (len(data) - 1) // size >= write.suite.record_limit:
            # §5.5: refuse before sealing anything rather than send part of ``data``.
            raise UsageLimitError("AEAD usage limit of the sending key reached; the key update has not completed")
        view = memoryview(data)
        for i in range(0, len(data), size):
            self._seal(content_type, view[i : i + size])

    def send_alert(self, level: AlertLevel, description: AlertDescription) -> None:
        payload = bytes((level, description))
        if self.write is None:
            self._out += plaintext_record(ContentType.ALERT, payload)
        else:
            self._seal(ContentType.ALERT, payload)

    def send_change_cipher_spec(self) -> None:
        """The dummy change_cipher_spec of middlebox compatibility mode (RFC 9846 App. D.4)."""
        self._out += plaintext_record(ContentType.CHANGE_CIPHER_SPEC, b"\x01")

    def _max_fragment(self) -> int:
        if self.write is None:
            return MAX_PLAINTEXT
        # The peer's limit counts the inner content type byte (RFC 8449 §4).
        return min(MAX_PLAINTEXT, self.peer_record_size_limit - 1)

    def _seal(self, content_type: ContentType, content: bytes | memoryview) -> None:
        assert self.write is not None
        padding = 0
        policy = self._padding
        if policy is not None:
            limit = self.peer_record_size_limit - 1 - len(content)
            padding = max(0, min(policy(content_type, len(content)), limit))
        self.write.seal_into(self._out, content_type, content, padding)

    # ------------------------------------------------------------------ keys

    def set_read_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        self.read = RecordProtection(suite, secret)
        self.read_secret = secret

    def set_write_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        self.write = RecordProtection(suite, secret)
        self.write_secret = secret

    def next_read_generation(self, secret: bytes) -> None:
        assert self.read is not None
        self.read_generation += 1
        self.set_read_secret(self.read.suite, secret)

    def next_write_generation(self, secret: bytes) -> None:
        assert self.write is not None
        self.write_generation += 1
        self.set_write_secret(self.write.suite, secret)

    def reset_generations(self) -> None:
        """The handshake is complete: its application traffic secrets are generation 0."""
        self.read_generation = 0
        self.write_generation = 0

    def set_peer_record_size_limit(self, limit: int) -> None:
        """The peer's record_size_limit; RFC 8449 §4 binds both ends once it is negotiated."""
        self.peer_record_size_limit = min(limit, MAX_PLAINTEXT + 1)

    def drop_keys(self) -> None:
        self.read = None
        self.read_secret = b""
        self.write_secret = b""
