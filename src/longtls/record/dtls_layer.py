"""The DTLS 1.3 record layer (RFC 9147 §4, with draft-ietf-tls-rfc9147bis-02).

``DTLSRecordLayer`` turns datagrams into opened records and records into
bytes for datagrams, under epochs the connection above opens and retires:

- epoch 0 is plaintext (DTLSPlaintext, §4); epoch 1 is 0-RTT, epoch 2 the
  handshake, 3 and up the application traffic secrets, one per key update
  (§6.1).  Each direction has its own epochs: an older write epoch stays
  usable for retransmissions (§4.2.1: "retransmissions ... using the same
  epoch and keying material as the original transmission") until the
  connection retires it, and several read epochs stay open at once (the old
  one until the peer has demonstrably moved on, §8).
- Protected records use the unified header (§4); their record numbers are
  encrypted (§4.2.3) and reconstructed from their low bits (§4.2.2); each
  read epoch has its replay window (§4.5.1) and counts its failed
  decryptions against the AEAD's integrity limit (§4.5.3).
- Invalid records are silently discarded (§4.5.2) and counted per
  ``DiscardReason`` in ``discarded``; ``open_datagram`` never raises for
  anything a peer (or an attacker) sends.

What the records carry (handshake fragments, ACKs, alerts, application
data) is the connection's business; so are reliability (ACKs,
retransmission: ``record.dtls_reliability``) and the rule of §5.10 about
data after a closure alert.  ``DatagramPacker`` gathers sealed records into
datagrams of at most the path MTU (§4.3: a record never spans datagrams).

The decisions where the RFC leaves room are in docs/dtls-record-layer.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from ..constants import MAX_CIPHERTEXT_EXPANSION, MAX_PLAINTEXT, CipherSuite, ContentType
from ..crypto.key_schedule import DTLS13_LABEL_PREFIX, record_number_key, traffic_keys
from ..crypto.suites import SuiteInfo
from ..errors import LocalProtocolError, UsageLimitError
from ..wire.dtls_record import (
    C_BIT,
    L_BIT,
    MAX_PLAINTEXT_SEQUENCE_NUMBER,
    PLAINTEXT_HEADER_LENGTH,
    PLAINTEXT_TYPES,
    S_BIT,
    UNIFIED_FIXED_BITS,
    UNIFIED_FIXED_MASK,
    DiscardReason,
    DTLSPlaintextHeader,
    InvalidRecord,
    RecordNumber,
    UnifiedHeader,
    reconstruct_sequence_number,
)
from .layer import PaddingPolicy

__all__ = ["DTLSRecord", "DTLSRecordLayer", "DatagramPacker", "integrity_limit"]

_ALERT = int(ContentType.ALERT)
_HANDSHAKE = int(ContentType.HANDSHAKE)
_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)
_ACK = int(ContentType.ACK)
_PLAINTEXT_TYPES = frozenset(int(t) for t in PLAINTEXT_TYPES)
#: The content types a DTLSInnerPlaintext may carry (§4.1, Figure 4: heartbeat is DTLS 1.2 only).
_PROTECTED_TYPES = frozenset((_ALERT, _HANDSHAKE, _APPLICATION_DATA, _ACK))
#: RFC 9846 §5.2, which §4 keeps: "Identical to the length field in a TLS 1.3 record".
_MAX_ENCRYPTED_RECORD = MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION
#: §4.2.3: record number encryption samples the first 16 bytes of the ciphertext.
_SAMPLE_LENGTH = 16
#: §6.1: epoch 2 carries the handshake; application data is never protected under it.
_HANDSHAKE_EPOCH = 2
#: §8 (rfc9147bis-02 and RFC 9147 alike): "sending implementations MUST NOT
#: allow the epoch to exceed 2^48-1".  rfc9147bis-02 §8 also allows a cap of
#: 2^16-1; we keep the RFC's larger bound, which a receiver must accept anyway.
MAX_EPOCH = 2**48 - 1
#: §4.5.1: "a window large enough to handle any plausible reordering"; 64 is
#: RFC 4303's minimum.  A Python int bitmap makes a wider window cheap.
DEFAULT_REPLAY_WINDOW = 256

# §4.5.3 integrity limits: records that may fail authentication under one key.
# AES-GCM and ChaCha20-Poly1305: 2^36 (§4.5.3).  AES-128-CCM: 2^23.5 (Appendix
# B.2).  AES-128-CCM-8: 2^7 (Appendix B.3) keeps the same forgery margin; §4.5.3
# says CCM_8 "MUST NOT be used in DTLS without additional safeguards against
# forgery" and lets the implementation set the limit from them.  We have none,
# so 2^7 it is: 128 forged records force a key update (or the end of the
# connection) per key, the denial of service B.3 warns about.
_INTEGRITY_LIMITS: dict[CipherSuite, int] = {
    CipherSuite.TLS_AES_128_GCM_SHA256: 2**36,
    CipherSuite.TLS_AES_256_GCM_SHA384: 2**36,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: 2**36,
    CipherSuite.TLS_AES_128_CCM_SHA256: int(2**23.5),
    CipherSuite.TLS_AES_128_CCM_8_SHA256: 2**7,
}


def integrity_limit(suite: SuiteInfo) -> int:
    """How many records may fail authentication under one key of ``suite`` (RFC 9147 §4.5.3)."""
    return _INTEGRITY_LIMITS[suite.suite]


class DTLSRecord:
    """One opened record: its full record number, its (inner) content type and content."""

    __slots__ = ("number", "content_type", "payload")

    def __init__(self, number: RecordNumber, content_type: int, payload: bytes) -> None:
        self.number = number
        self.content_type = content_type
        self.payload = payload

    def __repr__(self) -> str:  # the payload may be secret: only its length
        return (
            f"<DTLSRecord epoch={self.number.epoch} seq={self.number.sequence_number} "
            f"type={self.content_type} length={len(self.payload)}>"
        )


class _EpochKeys:
    """One direction's keys under one epoch's traffic secret: the AEAD with
    its write_iv (RFC 9846 §5.3, §7.3 with the "dtls13" prefix, RFC 9147 §5.9)
    and the record number mask (RFC 9147 §4.2.3)."""

    __slots__ = ("suite", "tag_length", "aead", "_iv", "_ecb", "_sn_key")

    def __init__(self, suite: SuiteInfo, secret: bytes) -> None:
        key, iv = traffic_keys(suite, secret, DTLS13_LABEL_PREFIX)
        self.suite = suite
        self.tag_length = suite.tag_length
        self.aead = suite.aead(key)
        self._iv = int.from_bytes(iv, "big")
        sn_key = record_number_key(suite, secret)
        self._ecb: CipherContext | None = None
        self._sn_key = b""
        if suite.suite == CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
            self._sn_key = sn_key  # a ChaCha20 context per record: its nonce is the sample
        else:
            # AES-ECB is stateless per block, so one encryptor serves every record.
            self._ecb = Cipher(algorithms.AES(sn_key), modes.ECB()).encryptor()

    def __repr__(self) -> str:
        return f"<_EpochKeys {self.suite.suite.name}>"

    def nonce(self, sequence_number: int) -> bytes:
        # RFC 9846 §5.3 with RFC 9147 §4: the 64-bit sequence number (not the
        # epoch), left-padded to iv_length (12 for every suite) and XORed with the IV.
        return (self._iv ^ sequence_number).to_bytes(12, "big")

    def mask(self, sample: bytes) -> bytes:
        """§4.2.3: the mask XORed with the header's sequence number bits; ``sample``
        is the first 16 bytes of the encrypted_record."""
        if self._ecb is not None:
            return self._ecb.update(sample)  # Mask = AES-ECB(sn_key, Ciphertext[0..15])
        # Mask = ChaCha20(sn_key, Ciphertext[0..3], Ciphertext[4..15]): the
        # first 4 bytes are the block counter (little-endian, RFC 8439 §2.3),
        # the next 12 the nonce, which is exactly pyca's 16-byte ChaCha20 nonce.
        return Cipher(algorithms.ChaCha20(self._sn_key, sample), None).encryptor().update(b"\x00\x00")


class _WriteEpoch:
    """What we send under one epoch: its keys (None for epoch 0) and next sequence number."""

    __slots__ = ("epoch", "keys", "sequence_number", "record_limit")

    def __init__(self, epoch: int, keys: _EpochKeys | None) -> None:
        self.epoch = epoch
        self.keys = keys
        self.sequence_number = 0
        # RFC 9147 §4.5.3 / RFC 9846 §5.5 confidentiality limit; epoch 0 is
        # bounded by its 48-bit field (§4).
        self.record_limit = MAX_PLAINTEXT_SEQUENCE_NUMBER + 1 if keys is None else keys.suite.record_limit

    def __repr__(self) -> str:
        return f"<_WriteEpoch {self.epoch} seq={self.sequence_number}>"


class _ReadEpoch:
    """What we receive under one epoch: keys, the replay window (§4.5.1) and
    the count of records that failed authentication (§4.5.3)."""

    __slots__ = ("epoch", "keys", "highest", "window", "failed", "integrity_limit")

    def __init__(self, epoch: int, keys: _EpochKeys | None) -> None:
        self.epoch = epoch
        self.keys = keys
        #: The right edge of the window: the highest sequence number deprotected (-1: none yet).
        self.highest = -1
        #: Bit i set: sequence number ``highest - i`` was received.
        self.window = 0
        self.failed = 0
        self.integrity_limit = 0 if keys is None else integrity_limit(keys.suite)

    def __repr__(self) -> str:
        return f"<_ReadEpoch {self.epoch} highest={self.highest} failed={self.failed}>"


class DTLSRecordLayer:
    """The records of one DTLS 1.3 association, both directions (RFC 9147 §4).

    Options (fixed for the association):

    - ``padding``: bytes of padding per record, as TLS's (RFC 9846 §5.4).
    - ``sequence_number_length``: 2 (S = 1, the default) or 1 byte of
      sequence number in the unified header we send.  8 bits save a byte but
      the receiver reconstructs across at most 128 lost records (§4.2.2).
    - ``length_present``: send the L bit and length (default).  Without it a
      record runs to the end of its datagram, so ``DatagramPacker`` closes
      the datagram after it.
    - ``replay_window``: records per read epoch the replay window covers (§4.5.1; at least 64).
    """

    def __init__(
        self,
        *,
        padding: PaddingPolicy | None = None,
        sequence_number_length: int = 2,
        length_present: bool = True,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
    ) -> None:
        if sequence_number_length not in (1, 2):
            raise ValueError("sequence_number_length is 1 or 2 bytes (RFC 9147 §4)")
        if replay_window < 64:
            raise ValueError("replay_window must cover at least 64 records (RFC 4303 §3.4.3)")
        self._padding = padding
        self._sequence_length = sequence_number_length
        self._length_present = length_present
        self._window_size = replay_window
        self._window_mask = (1 << replay_window) - 1
        self._write: dict[int, _WriteEpoch] = {0: _WriteEpoch(0, None)}
        self._read: dict[int, _ReadEpoch] = {0: _ReadEpoch(0, None)}
        #: The epoch ``seal`` uses unless told otherwise.
        self.write_epoch = 0
        # Epoch bits -> the newest open protected read epoch with those bits (§4.2.2).
        self._read_by_bits: dict[int, _ReadEpoch] = {}
        #: Records discarded, per reason (§4.5.2: silently, but counted).
        self.discarded: Counter[DiscardReason] = Counter()
        #: Read epochs whose failed decryptions passed the integrity limit
        #: (§4.5.3); their records are no longer opened.  If the newest read
        #: epoch is among them, the connection SHOULD close.
        self.integrity_exceeded: set[int] = set()
        #: The connection ID the peer asked us to put in our records (None: no C bit).
        self.peer_connection_id: bytes | None = None
        self._own_connection_ids: frozenset[bytes] = frozenset()
        self._own_connection_id_length: int | None = None
        #: The peer's record_size_limit (RFC 8449 §4), counting the inner content type.
        self.peer_record_size_limit = MAX_PLAINTEXT + 1
        #: The limit we hold the peer's protected records to: ours once the
        #: peer agreed to it (RFC 8449 §4), else 2^14 + 1.  It covers the whole
        #: DTLSInnerPlaintext (content, type and padding).
        self.receive_record_size_limit = MAX_PLAINTEXT + 1

    def __repr__(self) -> str:
        return (
            f"<DTLSRecordLayer write_epoch={self.write_epoch} write_epochs={self.write_epochs} "
            f"read_epochs={self.read_epochs}>"
        )

    # ------------------------------------------------------------------ epochs

    @property
    def write_epochs(self) -> tuple[int, ...]:
        """The epochs we may still seal under (the current one and those kept for retransmission)."""
        return tuple(sorted(self._write))

    @property
    def read_epochs(self) -> tuple[int, ...]:
        """The epochs whose records we open (0: DTLSPlaintext is accepted)."""
        return tuple(sorted(self._read))

    def set_write_epoch(self, epoch: int, suite: SuiteInfo, secret: bytes) -> None:
        """Protect our records under ``epoch`` from now on, keyed from its traffic
        secret (RFC 9147 §6.1: 1 early, 2 handshake, 3+ application).  Earlier
        write epochs stay usable (``seal(..., epoch=)``) until retired."""
        if not self.write_epoch < epoch <= MAX_EPOCH or epoch in self._write:
            raise LocalProtocolError(
                f"write epoch {epoch} must be new and above the current one ({self.write_epoch}), at most 2^48-1"
            )
        self._write[epoch] = _WriteEpoch(epoch, _EpochKeys(suite, secret))
        self.write_epoch = epoch

    def retire_write_epoch(self, epoch: int) -> None:
        """Forget a past write epoch's keys: nothing sent under it will be retransmitted."""
        if epoch == self.write_epoch:
            raise LocalProtocolError(f"epoch {epoch} is the current write epoch; set a newer one first")
        self._write.pop(epoch, None)

    def set_read_epoch(self, epoch: int, suite: SuiteInfo, secret: bytes) -> None:
        """Open the peer's records under ``epoch`` (keys from its traffic secret).
        The other open read epochs stay open until retired."""
        if not 0 < epoch <= 0xFFFFFFFFFFFFFFFF or epoch in self._read:
            raise LocalProtocolError(f"read epoch {epoch} is already open or out of range")
        self._read[epoch] = _ReadEpoch(epoch, _EpochKeys(suite, secret))
        self._index_read_epochs()

    def retire_read_epoch(self, epoch: int) -> None:
        """Stop opening the peer's records under ``epoch`` (0: stop accepting DTLSPlaintext)."""
        self._read.pop(epoch, None)
        self.integrity_exceeded.discard(epoch)
        self._index_read_epochs()

    def _index_read_epochs(self) -> None:
        # §4.2.2: "use the most recent past epoch which has matching bits".
        by_bits: dict[int, _ReadEpoch] = {}
        for epoch in sorted(self._read):
            state = self._read[epoch]
            if state.keys is not None:
                by_bits[epoch & 3] = state
        self._read_by_bits = by_bits

    def write_sequence_number(self, epoch: int | None = None) -> int:
        """The sequence number the next record sealed under ``epoch`` gets."""
        return self._write_state(epoch).sequence_number

    def set_write_sequence_number(self, epoch: int, sequence_number: int) -> None:
        """Skip ahead to ``sequence_number`` in a write epoch (never back: a nonce
        must not repeat).  For a connection that continues numbering begun by
        another object (a server that kept no state before the cookie, RFC
        9147 §5.1) and for tests near the wrap-around of the header's bits."""
        state = self._write_state(epoch)
        if sequence_number < state.sequence_number:
            raise LocalProtocolError("a write sequence number never goes back (nonce reuse)")
        state.sequence_number = sequence_number

    def _write_state(self, epoch: int | None) -> _WriteEpoch:
        if epoch is None:
            epoch = self.write_epoch
        state = self._write.get(epoch)
        if state is None:
            raise LocalProtocolError(f"write epoch {epoch} is not open (retired, or keys dropped)")
        return state

    def drop_keys(self) -> None:
        """The association is over: forget every key, in both directions."""
        self._write = {}
        self._read = {}
        self._read_by_bits = {}

    def set_peer_record_size_limit(self, limit: int) -> None:
        """The peer's record_size_limit (RFC 8449 §4, which DTLS keeps): the
        largest DTLSInnerPlaintext (content and type) it accepts."""
        self.peer_record_size_limit = min(limit, MAX_PLAINTEXT + 1)

    # ------------------------------------------------------------------ connection IDs

    def set_peer_connection_id(self, connection_id: bytes | None) -> None:
        """Put ``connection_id`` in every record we send from now on (C bit;
        RFC 9147 §9); None or empty: send no connection ID (RFC 9146: a zero-length CID)."""
        if connection_id is not None and len(connection_id) > 255:
            raise ValueError("a connection ID is at most 255 bytes")
        self.peer_connection_id = connection_id or None

    def set_own_connection_id(self, *connection_ids: bytes) -> None:
        """The connection IDs we issued and expect in the peer's records (one
        immediate and any spares, RFC 9147 §9; all of one length: the header
        does not carry it).  None given, or only empty ones: we expect no C bit."""
        ids = frozenset(cid for cid in connection_ids if cid)
        lengths = {len(cid) for cid in ids}
        if len(lengths) > 1:
            raise ValueError("our connection IDs must share one length to be parsed (RFC 9147 §4)")
        if lengths and lengths.pop() > 255:
            raise ValueError("a connection ID is at most 255 bytes")
        self._own_connection_ids = ids
        self._own_connection_id_length = len(next(iter(ids))) if ids else None

    # ------------------------------------------------------------------ writing

    def max_payload(self, mtu_budget: int, epoch: int | None = None) -> int:
        """How many content bytes fit in one record of at most ``mtu_budget``
        bytes under ``epoch`` (without padding; 0 if none fit)."""
        state = self._write_state(epoch)
        if state.keys is None:
            room = mtu_budget - PLAINTEXT_HEADER_LENGTH
        else:
            room = mtu_budget - self._unified_header_length() - state.keys.tag_length - 1
        return max(0, min(room, self._max_fragment(state)))

    def _unified_header_length(self) -> int:
        cid = self.peer_connection_id
        return 1 + (len(cid) if cid is not None else 0) + self._sequence_length + (2 if self._length_present else 0)

    def _max_fragment(self, state: _WriteEpoch) -> int:
        if state.keys is None:
            return MAX_PLAINTEXT
        # RFC 8449 §4: the peer's limit counts the inner content type byte.
        return min(MAX_PLAINTEXT, self.peer_record_size_limit - 1)

    def seal(
        self, content_type: int, payload: bytes | memoryview, epoch: int | None = None, *, budget: int | None = None
    ) -> tuple[bytes, RecordNumber]:
        """One record carrying ``payload`` under ``epoch`` (default: the current
        write epoch), and its record number (what an ACK will name, §7).

        ``budget``: the most bytes the record may take (room left in the
        datagram); padding is cut to fit it, content never is.
        Raises UsageLimitError once the epoch's key reached its AEAD limit
        (§4.5.3; a key update is overdue) and LocalProtocolError for a
        payload over the record size, an epoch not open, or a type that may
        not be sent in epoch 0.
        """
        state = self._write_state(epoch)
        n = len(payload)
        if n > self._max_fragment(state):
            raise LocalProtocolError(f"{n} bytes do not fit one record; split them (max_payload)")
        sequence_number = state.sequence_number
        if sequence_number >= state.record_limit:
            # §4.5.3 / RFC 9846 §5.5 (epoch 0: the 48-bit field, §4).
            raise UsageLimitError(f"AEAD usage limit of write epoch {state.epoch} reached; the key update is late")
        keys = state.keys
        if keys is None:
            if content_type not in _PLAINTEXT_TYPES:
                raise LocalProtocolError(f"content type {content_type} may not be sent unprotected (RFC 9147 §4.1)")
            state.sequence_number = sequence_number + 1
            plain_header = DTLSPlaintextHeader(content_type, 0, sequence_number, n).encode()
            return plain_header + payload, RecordNumber(0, sequence_number)
        if content_type not in _PROTECTED_TYPES:
            raise LocalProtocolError(f"content type {content_type} is not a DTLS 1.3 record type (RFC 9147 §4.1)")
        tag_length = keys.tag_length
        # §4.2.3: the encrypted_record must be at least 16 bytes; pad short ones (CCM_8).
        padding = max(0, _SAMPLE_LENGTH - tag_length - n - 1)
        policy = self._padding
        if policy is not None:
            wanted = policy(ContentType(content_type), n)
            limit = self.peer_record_size_limit - 1 - n
            if budget is not None:
                limit = min(limit, budget - self._unified_header_length() - tag_length - 1 - n)
            padding = max(padding, min(wanted, limit))
        inner_length = n + 1 + padding
        inner = bytearray(inner_length)
        inner[:n] = payload
        inner[n] = content_type
        length = inner_length + tag_length
        sequence_length = self._sequence_length
        low_bits = sequence_number & ((1 << (8 * sequence_length)) - 1)
        cid = self.peer_connection_id
        first = UNIFIED_FIXED_BITS | (state.epoch & 3)
        header = bytearray()
        header.append(0)  # the first byte, set below
        if cid is not None:
            first |= C_BIT
            header += cid
        seq_offset = len(header)
        if sequence_length == 2:
            first |= S_BIT
        header += low_bits.to_bytes(sequence_length, "big")
        if self._length_present:
            first |= L_BIT
            header += length.to_bytes(2, "big")
        header[0] = first
        state.sequence_number = sequence_number + 1
        # §4: the additional data is the header as sent, but with the sequence
        # number bits in the clear (before record number encryption, §4.2.3).
        ciphertext = keys.aead.encrypt(keys.nonce(sequence_number), bytes(inner), bytes(header))
        mask = keys.mask(ciphertext[:_SAMPLE_LENGTH])
        header[seq_offset] ^= mask[0]
        if sequence_length == 2:
            header[seq_offset + 1] ^= mask[1]
        header += ciphertext
        return bytes(header), RecordNumber(state.epoch, sequence_number)

    @property
    def write_near_limit(self) -> bool:
        """The current write key has sealed 7/8 of its AEAD limit: time to update keys (§4.5.3)."""
        state = self._write.get(self.write_epoch)
        if state is None:
            return False
        return state.sequence_number >= state.record_limit - (state.record_limit >> 3)

    @property
    def near_integrity_limit(self) -> bool:
        """The newest read epoch's failed decryptions reached 7/8 of its integrity
        limit: §4.5.3 says to send a KeyUpdate with update_requested now."""
        if not self._read:
            return False
        state = self._read[max(self._read)]
        return state.keys is not None and state.failed >= state.integrity_limit - (state.integrity_limit >> 3)

    # ------------------------------------------------------------------ reading

    def open_datagram(self, datagram: bytes) -> list[DTLSRecord]:
        """Every record in ``datagram`` that opens, in order; invalid ones are
        discarded and counted in ``discarded`` (RFC 9147 §4.5.2), never raised.

        A record whose framing fails (unknown first byte, a length past the
        end, a connection ID that is not ours) ends the datagram: the rest
        cannot be framed (§4: "the rest of the datagram MUST be discarded").
        """
        return list(self.records_in(datagram))

    def records_in(self, datagram: bytes) -> Iterator[DTLSRecord]:
        """``open_datagram`` one record at a time: each record is opened only
        when the previous one has been taken, so keys installed while
        processing a record open the records after it in the same datagram
        (a ServerHello and the epoch-2 EncryptedExtensions behind it, §4.3)."""
        data = bytes(datagram)
        size = len(data)
        pos = 0
        discarded = self.discarded
        while pos < size:
            first = data[pos]
            if first & UNIFIED_FIXED_MASK == UNIFIED_FIXED_BITS:
                try:
                    header = UnifiedHeader.parse(data, pos, self._own_connection_id_length)
                except InvalidRecord as error:
                    discarded[error.reason] += 1
                    break
                end = pos + header.header_length + header.length
                cid = header.connection_id
                if self._own_connection_ids:
                    if cid is None:
                        # §4: "If a Connection ID is negotiated, then it MUST be contained in all datagrams."
                        discarded[DiscardReason.BAD_CONNECTION_ID] += 1
                        pos = end
                        continue
                    if cid not in self._own_connection_ids:
                        discarded[DiscardReason.BAD_CONNECTION_ID] += 1
                        break
                record = self._open_protected(data, pos, header, end)
                pos = end
            elif first in _PLAINTEXT_TYPES:
                try:
                    plain = DTLSPlaintextHeader.parse(data, pos)
                except InvalidRecord as error:
                    discarded[error.reason] += 1
                    break
                start = pos + PLAINTEXT_HEADER_LENGTH
                pos = start + plain.length
                if plain.epoch != 0 or 0 not in self._read:
                    # §4: DTLS 1.3 sends DTLSPlaintext in epoch 0 only.
                    discarded[DiscardReason.PLAINTEXT_NOT_ALLOWED] += 1
                    continue
                if plain.length > MAX_PLAINTEXT:
                    discarded[DiscardReason.TOO_LONG] += 1
                    continue
                # No replay window in epoch 0: nothing authenticates these
                # records, so one forged record with a large sequence number
                # would push every genuine one out of the window.  The
                # handshake drops duplicates by message_seq (§5.2).
                record = DTLSRecord(RecordNumber(0, plain.sequence_number), plain.content_type, data[start:pos])
            else:
                # §4.1: "the record MUST be rejected as if it had failed deprotection".
                discarded[DiscardReason.BAD_HEADER] += 1
                break
            if record is not None:
                yield record

    def _open_protected(self, data: bytes, pos: int, header: UnifiedHeader, end: int) -> DTLSRecord | None:
        discarded = self.discarded
        state = self._read_by_bits.get(header.epoch_bits)
        if state is None:
            discarded[DiscardReason.UNKNOWN_EPOCH] += 1
            return None
        keys = state.keys
        assert keys is not None  # epoch 0 is never indexed by bits
        if state.failed > state.integrity_limit:
            discarded[DiscardReason.INTEGRITY_LIMIT] += 1
            return None
        length = header.length
        if length > _MAX_ENCRYPTED_RECORD:
            discarded[DiscardReason.TOO_LONG] += 1
            return None
        if length < _SAMPLE_LENGTH:
            discarded[DiscardReason.SHORT_CIPHERTEXT] += 1  # §4.2.3: "as if they had failed deprotection"
            return None
        start = end - length
        ciphertext = data[start:end]
        sequence_length = header.sequence_length
        mask = keys.mask(ciphertext[:_SAMPLE_LENGTH])
        if sequence_length == 2:
            low_bits = header.sequence_number ^ ((mask[0] << 8) | mask[1])
        else:
            low_bits = header.sequence_number ^ mask[0]
        sequence_number = reconstruct_sequence_number(state.highest + 1, low_bits, 8 * sequence_length)
        # The additional data: the header as received with its sequence number
        # bits decrypted (§4, "prior to record number encryption").
        seq_offset = pos + 1 + (0 if header.connection_id is None else len(header.connection_id))
        aad = (
            data[pos:seq_offset]
            + low_bits.to_bytes(sequence_length, "big")
            + data[seq_offset + sequence_length : start]
        )
        try:
            inner = keys.aead.decrypt(keys.nonce(sequence_number), ciphertext, aad)
        except InvalidTag:
            discarded[DiscardReason.AUTHENTICATION_FAILED] += 1
            state.failed += 1
            if state.failed > state.integrity_limit:
                self.integrity_exceeded.add(state.epoch)
            return None
        if len(inner) > self.receive_record_size_limit:
            # RFC 8449 §4: a DTLS endpoint "MAY either generate a fatal
            # record_overflow alert or discard the record"; we discard, as
            # RFC 9147 §4.5.2 does with every invalid record.
            discarded[DiscardReason.TOO_LONG] += 1
            return None
        # §4.5.1: checked after deprotection (no timing channel), and the
        # window moves only for a record that deprotected.
        highest = state.highest
        if sequence_number > highest:
            shift = sequence_number - highest
            state.window = 1 if shift >= self._window_size else ((state.window << shift) | 1) & self._window_mask
            state.highest = sequence_number
        else:
            offset = highest - sequence_number
            if offset >= self._window_size:
                discarded[DiscardReason.TOO_OLD] += 1
                return None
            bit = 1 << offset
            if state.window & bit:
                discarded[DiscardReason.REPLAYED] += 1
                return None
            state.window |= bit
        # RFC 9846 §5.4 (§4 keeps it): the content type is the last non-zero byte.
        content_type = inner[-1] if inner else 0
        if content_type:
            content = inner[:-1]
        else:
            content = inner.rstrip(b"\x00")
            content_type = content[-1] if content else 0
            content = content[:-1]
        if content_type not in _PROTECTED_TYPES or (
            content_type == _APPLICATION_DATA and state.epoch == _HANDSHAKE_EPOCH
        ):
            discarded[DiscardReason.BAD_CONTENT_TYPE] += 1
            return None
        if len(content) > MAX_PLAINTEXT:
            discarded[DiscardReason.TOO_LONG] += 1
            return None
        return DTLSRecord(RecordNumber(state.epoch, sequence_number), content_type, content)


class DatagramPacker:
    """Gathers sealed records into datagrams of at most ``mtu`` bytes (RFC 9147 §4.3).

    Records are never split: one that does not fit the current datagram
    starts the next; one larger than ``mtu`` on its own goes out alone (the
    caller sized it with ``DTLSRecordLayer.max_payload``, so that is a
    deliberate choice).  A record without a length field (L bit clear) runs
    to the end of its datagram, so the datagram is closed after it.
    """

    __slots__ = ("mtu", "_current", "_datagrams")

    def __init__(self, mtu: int) -> None:
        if mtu <= 0:
            raise ValueError("the path MTU must be positive")
        self.mtu = mtu
        self._current = bytearray()
        self._datagrams: list[bytes] = []

    def __repr__(self) -> str:
        return f"<DatagramPacker mtu={self.mtu} pending={len(self._datagrams)} current={len(self._current)}>"

    @property
    def room(self) -> int:
        """Bytes left in the datagram being filled (what ``seal``'s ``budget`` may be)."""
        return self.mtu - len(self._current)

    def add(self, record: bytes) -> None:
        current = self._current
        if current and len(current) + len(record) > self.mtu:
            self._close()
        self._current += record
        first = record[0] if record else 0
        if first & UNIFIED_FIXED_MASK == UNIFIED_FIXED_BITS and not first & L_BIT:
            self._close()

    def add_all(self, records: Iterable[bytes]) -> None:
        for record in records:
            self.add(record)

    def _close(self) -> None:
        if self._current:
            self._datagrams.append(bytes(self._current))
            self._current = bytearray()

    def datagrams(self) -> list[bytes]:
        """Every datagram filled so far, the current one included; the packer is empty after."""
        self._close()
        out, self._datagrams = self._datagrams, []
        return out
