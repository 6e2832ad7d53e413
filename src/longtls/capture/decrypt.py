"""Decrypting the TLS 1.3 and DTLS 1.3 connections of a capture with a key log.

Each connection is found by its ClientHello (the first bytes of a TCP
stream, or a DTLSPlaintext ClientHello in a UDP flow); its client_random
selects the key log lines (draft-ietf-tls-keylogfile), and the records are
opened with the library's own record protection (``record.tls``,
``record.dtls_layer``) and key schedule (``crypto.key_schedule``).

**Generations.** A record's ``generation`` is the N of the
``[CLIENT|SERVER]_TRAFFIC_SECRET_N`` that protects it: 0 for the first
application traffic secret, +1 at each KeyUpdate or Extended Key Update of
its direction.  Plaintext and handshake-key records belong to generation 0
too; ``keys`` ("plaintext", "handshake", "application") tells them apart
(docs/decrypt.md).

**When a direction switches** is what the sender does:

- TLS (RFC 9846 §5.1: a key change ends a record): the handshake keys from
  the sender's first protected record, the first application secret after
  its Finished (§7.1); after a KeyUpdate the next secret, derived with
  "traffic upd" (§7.2) exactly as the connection does; after an Extended
  Key Update message that switches the sender's keys in the connection's
  profile (handshake/eku.py): draft-13 the response and the
  key_update_finish (§5 steps 3-5), draft-2025-10 and draft-05 the
  new_key_update of each side (draft-2025-10 §5 steps 3-4, draft-05 §4).
  An EKU generation comes from a fresh key exchange, so only the key log
  has its secrets.
- DTLS: the epoch of each record, from the two bits of its unified header
  reconstructed as a receiver does (RFC 9147 §4.2.2: the newest open epoch
  with those bits); epoch 2 is the handshake, epoch 3 + N generation N
  (§6.1).  The EKU texts move DTLS epochs on ACKs (draft-13 §6), and an old
  epoch stays in use for retransmissions, so the messages alone cannot say
  which key a record is under: its header does.  A reader keeps the
  current epoch, the one before and the next open (the next one's secret
  from the key log, else derived with "traffic upd", the dtls13 prefix).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..constants import (
    MAX_CIPHERTEXT_EXPANSION,
    MAX_PLAINTEXT,
    CipherSuite,
    ContentType,
    EKUProfileName,
    ExtensionType,
    HandshakeType,
)
from ..crypto import key_schedule as ks
from ..crypto.suites import SuiteInfo, suite_info
from ..errors import ConfigurationError, ProtocolError
from ..handshake.eku_profiles import PROFILES, EKUProfile
from ..record.dtls_layer import DTLSRecordLayer
from ..record.tls import RecordProtection
from ..wire.dtls_handshake import DTLSHandshakeFragment, decode_fragments
from ..wire.dtls_record import PLAINTEXT_HEADER_LENGTH, DTLSPlaintextHeader, InvalidRecord
from ..wire.eku import Kind
from ..wire.extensions import decode_connection_id, decode_tls_flags
from ..wire.messages import ClientHello, EncryptedExtensions, ServerHello
from .streams import Address, ByteStream, Capture, Datagram, TCPConnection, UDPFlow

CLIENT, SERVER = "client", "server"
PLAINTEXT, HANDSHAKE, APPLICATION = "plaintext", "handshake", "application"
_HANDSHAKE_EPOCH, _FIRST_APPLICATION_EPOCH = 2, 3  # RFC 9147 §6.1
_TLS_HEADER = 5
_RECORD_TYPES = frozenset((ContentType.CHANGE_CIPHER_SPEC, ContentType.ALERT, ContentType.HANDSHAKE,
                           ContentType.APPLICATION_DATA))  # fmt: skip


class KeyLog:
    """The secrets of an SSLKEYLOGFILE, by client_random and label.

    Lines that are not ``LABEL <64 hex> <hex>`` (comments, blank lines,
    other formats) are ignored, as Wireshark does.  ``repr`` shows counts only.
    """

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self._secrets: dict[bytes, dict[str, bytes]] = {}
        for line in lines:
            parts = line.split()
            if len(parts) != 3 or parts[0].startswith("#"):
                continue
            try:
                client_random, secret = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
            except ValueError:
                continue
            if len(client_random) == 32 and secret:
                self._secrets.setdefault(client_random, {})[parts[0]] = secret

    def __repr__(self) -> str:
        return f"<KeyLog connections={len(self._secrets)}>"

    @classmethod
    def read(cls, path: str) -> KeyLog:
        with open(path, encoding="ascii", errors="replace") as file:
            return cls(file)

    def secrets(self, client_random: bytes) -> dict[str, bytes]:
        return self._secrets.get(client_random, {})


@dataclass(frozen=True, slots=True)
class Record:
    """One record as its receiver read it.  ``data`` is the decrypted content."""

    time: float
    connection: int
    sender: str  # "client" | "server"
    generation: int
    content_type: int
    messages: tuple[str, ...]
    data: bytes
    keys: str  # "plaintext" | "handshake" | "application"
    #: The record's sequence number under its key (RFC 9846 §5.3; DTLS: the
    #: reconstructed record number, RFC 9147 §4.2.2); None for a TLS record
    #: sent in the clear, which has none.
    sequence_number: int | None
    epoch: int | None = None  # DTLS only

    def __repr__(self) -> str:  # the content is decrypted traffic: its length only
        return (f"<Record {self.connection} {self.sender} generation={self.generation} "
                f"{content_type_name(self.content_type)} length={len(self.data)}>")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The object of ``longtls decrypt --json`` (issue 15: these keys, never renamed)."""
        out: dict[str, Any] = {
            "time": self.time, "connection": self.connection, "from": self.sender,
            "generation": self.generation, "content_type": content_type_name(self.content_type),
            "messages": list(self.messages), "data_hex": self.data.hex(),
            "keys": self.keys, "sequence_number": self.sequence_number,
        }  # fmt: skip
        if self.epoch is not None:
            out["epoch"] = self.epoch
        return out


@dataclass(slots=True)
class Connection:
    """One TLS or DTLS connection of the capture and what could be decrypted of it."""

    number: int
    transport: str  # "TLS" | "DTLS"
    client: Address
    server: Address
    client_random: bytes = b""
    cipher_suite: CipherSuite | None = None
    eku_profile: EKUProfileName | None = None
    #: Whether the key log has any secret of this connection.
    keys_in_log: bool = False
    records: list[Record] = field(default_factory=list)
    #: What could not be read or decrypted, one sentence each.
    notes: list[str] = field(default_factory=list)


def content_type_name(content_type: int) -> str:
    try:
        return ContentType(content_type).name.lower()
    except ValueError:
        return f"unknown({content_type})"


def message_name(msg_type: int, body: bytes, profile: EKUProfile | None) -> str:
    """The name of a handshake message: its HandshakeType's name in constants,
    and for Extended Key Update the message within the exchange."""
    if profile is not None and msg_type in profile.message_types:
        kind = _eku_kind(profile, msg_type, body)
        if kind is None and body and not profile.separate_types:
            # The first fragment of a DTLS message (RFC 9147 §5.5): its subtype is all we need.
            kind = {0: Kind.REQUEST, 1: Kind.RESPONSE, 2: Kind.FINISH}.get(body[0])
        if kind is Kind.REQUEST:
            return "extended_key_update_request"
        if kind is Kind.RESPONSE:
            return "extended_key_update_response"
        if kind is Kind.FINISH:
            # draft-13 §4 "key_update_finish"; the older texts' "new_key_update".
            return "extended_key_update_finish" if profile.three_messages else "new_key_update"
    try:
        return HandshakeType(msg_type).name
    except ValueError:
        return f"unknown({msg_type})"


def _eku_kind(profile: EKUProfile, msg_type: int, body: bytes) -> Kind | None:
    try:
        return profile.codec.decode(msg_type, body).kind
    except ProtocolError:
        return None


def switches_sender_keys(profile: EKUProfile | None, msg_type: int, body: bytes) -> bool:
    """Whether the sender of this EKU message protects what follows it with
    the next generation (over TLS; see the module docstring)."""
    if profile is None or msg_type not in profile.message_types:
        return False
    kind = _eku_kind(profile, msg_type, body)
    # draft-13 §5 step 3: the responder switches right after its response.
    return kind is Kind.FINISH or (kind is Kind.RESPONSE and profile.three_messages)


def _profile_of(encrypted_extensions: EncryptedExtensions) -> EKUProfile | None:
    """The EKU profile the server's tls_flags acknowledged (docs/eku-profiles.md)."""
    for extension in encrypted_extensions.extensions:
        if extension.type == ExtensionType.tls_flags:
            flags = decode_tls_flags(extension.data)
            for profile in PROFILES.values():
                if profile.flag in flags:
                    return profile
    return None


class _Messages:
    """Cuts one direction's handshake content into messages (RFC 9846 §4: a
    4-byte header) and names those with bytes in each record."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, content: bytes) -> tuple[list[int], list[tuple[int, bytes]]]:
        """(types of the messages this content touches, (type, body) of those it completes)."""
        touched: list[int] = []
        complete: list[tuple[int, bytes]] = []
        if self._buffer:
            touched.append(self._buffer[0])
        self._buffer += content
        while len(self._buffer) >= 4:
            msg_type = self._buffer[0]
            if not touched or len(touched) <= len(complete):
                touched.append(msg_type)
            length = int.from_bytes(self._buffer[1:4], "big")
            if len(self._buffer) < 4 + length:
                break
            complete.append((msg_type, bytes(self._buffer[4 : 4 + length])))
            del self._buffer[: 4 + length]
        return touched, complete


# ------------------------------------------------------------------------ TLS

#: What a direction reports of each whole handshake message it read: (the direction, msg_type, body).
_OnMessage = Callable[["_TLSDirection", int, bytes], None]


class _TLSDirection:
    """One sender's records over TCP: the keys it uses now and how they change."""

    def __init__(self, connection: Connection, sender: str, secrets: dict[str, bytes]) -> None:
        self.connection = connection
        self.sender = sender
        self.secrets = secrets
        self.label = "CLIENT" if sender == CLIENT else "SERVER"
        self.keys = PLAINTEXT
        self.generation = 0
        self.secret = b""
        self.protection: RecordProtection | None = None
        self.suite: SuiteInfo | None = None
        self.messages = _Messages()
        self.stopped = False

    def _install(self, label: str, keys: str, generation: int, secret: bytes | None = None) -> None:
        self.keys, self.generation = keys, generation
        self.protection = None
        if self.suite is None:
            self.stop(f"{self.sender}'s protected records: no ServerHello, so no cipher suite")
            return
        secret = self.secrets.get(label) if secret is None else secret
        if secret is None:
            if self.connection.keys_in_log:
                self.stop(f"{self.sender}'s records from {keys} generation {generation} on: "
                           f"no {label} in the key log")  # fmt: skip
            return
        self.secret = secret
        self.protection = RecordProtection(self.suite, secret)

    def stop(self, note: str) -> None:
        if not self.stopped:
            self.connection.notes.append(f"not decrypted: {note}")
        self.stopped = True

    def read(self, stream: ByteStream, on_message: _OnMessage) -> Iterator[Record]:
        data = stream.data
        pos = 0
        while pos + _TLS_HEADER <= len(data) and not self.stopped:
            content_type, length = data[pos], int.from_bytes(data[pos + 3 : pos + 5], "big")
            if content_type not in _RECORD_TYPES or data[pos + 1] != 3 or length > MAX_PLAINTEXT + MAX_CIPHERTEXT_EXPANSION:
                self.stop(f"{self.sender}'s bytes from offset {pos} on are not a TLS record")
                return
            end = pos + _TLS_HEADER + length
            if end > len(data):
                break
            header, fragment = data[pos : pos + _TLS_HEADER], data[pos + _TLS_HEADER : end]
            time = stream.time_of(pos, end)
            pos = end
            record = self._open(time, content_type, header, fragment, on_message)
            if record is not None:
                yield record
        if not self.stopped:
            missing = stream.missing
            if missing is not None:
                self.stop(f"{self.sender}'s bytes from offset {missing} on: the capture misses some of them")
            elif pos < len(data):
                self.connection.notes.append(f"the capture ends inside a record of the {self.sender}")

    def _open(
        self, time: float, content_type: int, header: bytes, fragment: bytes, on_message: _OnMessage
    ) -> Record | None:
        if content_type == ContentType.CHANGE_CIPHER_SPEC:
            # RFC 9846 §5: the middlebox compatibility record is never protected.
            return Record(time, self.connection.number, self.sender, self.generation, content_type, (),
                          fragment, PLAINTEXT, None)  # fmt: skip
        if content_type == ContentType.APPLICATION_DATA and self.keys == PLAINTEXT:
            # The sender's first protected record: its handshake keys (RFC 9846 §7.1).
            self._install(f"{self.label}_HANDSHAKE_TRAFFIC_SECRET", HANDSHAKE, 0)
        keys, generation = self.keys, self.generation
        if content_type == ContentType.APPLICATION_DATA:
            if self.protection is None:
                self.stopped = True
                return None
            sequence_number = self.protection.sequence_number
            try:
                content_type, content = self.protection.open(header, fragment)
            except ProtocolError:
                self.stop(f"{self.sender}'s record {sequence_number} of {keys} generation {generation} "
                           "does not open with the key log's secret")  # fmt: skip
                return None
        else:
            sequence_number, content = None, fragment
        names: tuple[str, ...] = ()
        if content_type == ContentType.HANDSHAKE:
            touched, complete = self.messages.feed(content)
            profile = PROFILES.get(self.connection.eku_profile) if self.connection.eku_profile else None
            named = [message_name(msg_type, body, profile) for msg_type, body in complete]
            if len(touched) > len(complete):  # the last message continues in the next record
                named.append(message_name(touched[-1], b"", None))
            names = tuple(named)
            record = Record(time, self.connection.number, self.sender, generation, content_type, names,
                            content, keys, sequence_number)  # fmt: skip
            for msg_type, body in complete:
                on_message(self, msg_type, body)
                self._after(msg_type, body)
            return record
        return Record(time, self.connection.number, self.sender, generation, content_type, names,
                      content, keys, sequence_number)  # fmt: skip

    def _after(self, msg_type: int, body: bytes) -> None:
        """The key change a message of ours causes after its record (RFC 9846 §5.1)."""
        if self.keys == HANDSHAKE and msg_type == HandshakeType.finished:
            self._install(f"{self.label}_TRAFFIC_SECRET_0", APPLICATION, 0)
        elif self.keys == APPLICATION and msg_type == HandshakeType.key_update:
            # RFC 9846 §7.2: application_traffic_secret_N+1 from N with "traffic upd".
            if self.protection is None or self.suite is None:
                self.generation += 1
                return
            secret = ks.next_traffic_secret(self.suite, self.secret, ks.TLS13_LABEL_PREFIX)
            self._install("", APPLICATION, self.generation + 1, secret)
        elif self.keys == APPLICATION:
            profile = PROFILES.get(self.connection.eku_profile) if self.connection.eku_profile else None
            if switches_sender_keys(profile, msg_type, body):
                n = self.generation + 1
                self._install(f"{self.label}_TRAFFIC_SECRET_{n}", APPLICATION, n)


def _first_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of a TCP stream (plaintext handshake records), or None."""
    messages = _Messages()
    pos = 0
    while pos + _TLS_HEADER <= len(data) and data[pos] == ContentType.HANDSHAKE and data[pos + 1] == 3:
        end = pos + _TLS_HEADER + int.from_bytes(data[pos + 3 : pos + 5], "big")
        if end > len(data):
            return None
        _, complete = messages.feed(data[pos + _TLS_HEADER : end])
        pos = end
        if complete:
            msg_type, body = complete[0]
            if msg_type != HandshakeType.client_hello:
                return None
            try:
                return ClientHello.decode(body)
            except ProtocolError:
                return None
    return None


def decrypt_tls(tcp: TCPConnection, number: int, keylog: KeyLog) -> Connection | None:
    """The records of one TCP connection, or None if it carries no TLS ClientHello."""
    hello: ClientHello | None = None
    client = server = None
    for address, stream in tcp.directions.items():
        hello = _first_client_hello(stream.data)
        if hello is not None:
            client, server = address, tcp.peers[address]
            break
    if hello is None or client is None or server is None:
        return None
    connection = Connection(number, "TLS", client, server, hello.random)
    secrets = keylog.secrets(hello.random)
    connection.keys_in_log = bool(secrets)
    if not secrets:
        connection.notes.append("not decrypted: the key log has no secrets for its client_random")
    sides = {CLIENT: _TLSDirection(connection, CLIENT, secrets), SERVER: _TLSDirection(connection, SERVER, secrets)}

    def on_message(direction: _TLSDirection, msg_type: int, body: bytes) -> None:
        if direction.sender == SERVER and msg_type == HandshakeType.server_hello:
            try:
                hello = ServerHello.decode(body)
                suite = suite_info(hello.cipher_suite)
            except (ProtocolError, ConfigurationError):
                direction.stop("a ServerHello that does not parse, or an unknown cipher suite")
                return
            connection.cipher_suite = suite.suite
            sides[CLIENT].suite = sides[SERVER].suite = suite
        elif direction.sender == SERVER and msg_type == HandshakeType.encrypted_extensions:
            try:
                profile = _profile_of(EncryptedExtensions.decode(body))
            except ProtocolError:
                profile = None
            connection.eku_profile = profile.name if profile else None

    # The server's direction first: its ServerHello and EncryptedExtensions
    # say how to read the client's (suite, EKU profile).
    records = list(sides[SERVER].read(tcp.directions[server], on_message))
    records += sides[CLIENT].read(tcp.directions[client], on_message)
    connection.records = sorted(records, key=lambda r: r.time)
    return connection


# ----------------------------------------------------------------------- DTLS


class _DTLSDirection:
    """One sender's records over UDP, opened by a DTLSRecordLayer used as its receiver."""

    def __init__(self, connection: Connection, sender: str, secrets: dict[str, bytes]) -> None:
        self.connection = connection
        self.sender = sender
        self.label = "CLIENT" if sender == CLIENT else "SERVER"
        self.secrets = secrets
        self.reader = DTLSRecordLayer()
        self.suite: SuiteInfo | None = None
        self.epoch_secrets: dict[int, bytes] = {}

    def install(self, suite: SuiteInfo) -> None:
        self.suite = suite
        handshake = self.secrets.get(f"{self.label}_HANDSHAKE_TRAFFIC_SECRET")
        if handshake is not None:
            self.reader.set_read_epoch(_HANDSHAKE_EPOCH, suite, handshake)
        first = self.secrets.get(f"{self.label}_TRAFFIC_SECRET_0")
        if first is not None:
            self.epoch_secrets[_FIRST_APPLICATION_EPOCH] = first
            self.reader.set_read_epoch(_FIRST_APPLICATION_EPOCH, suite, first)
            self.advance(_FIRST_APPLICATION_EPOCH)

    def advance(self, epoch: int) -> None:
        """A record of ``epoch`` opened: open the next epoch, and retire those
        whose two bits it would share (RFC 9147 §4.2.2)."""
        following = epoch + 1
        if self.suite is None or following in self.epoch_secrets:
            return
        generation = following - _FIRST_APPLICATION_EPOCH
        secret = self.secrets.get(f"{self.label}_TRAFFIC_SECRET_{generation}")
        if secret is None:
            # A KeyUpdate's next secret (RFC 9147 §8, RFC 9846 §7.2, "dtls13" labels).
            secret = ks.next_traffic_secret(self.suite, self.epoch_secrets[epoch], ks.DTLS13_LABEL_PREFIX)
        for old in self.reader.read_epochs:
            if 0 < old <= following - 4:
                self.reader.retire_read_epoch(old)
        self.epoch_secrets[following] = secret
        self.reader.set_read_epoch(following, self.suite, secret)


def _plaintext_client_random(payload: bytes) -> bytes | None:
    """The random of a ClientHello whose first fragment is in the DTLSPlaintext
    records of this datagram (a ClientHello with post-quantum key shares is
    fragmented, RFC 9147 §5.5; its random is in the first 34 bytes)."""
    pos = 0
    while pos + PLAINTEXT_HEADER_LENGTH <= len(payload):
        try:
            header = DTLSPlaintextHeader.parse(payload, pos)
        except InvalidRecord:
            return None
        start = pos + PLAINTEXT_HEADER_LENGTH
        pos = start + header.length
        if header.content_type != ContentType.HANDSHAKE or header.epoch != 0:
            continue
        try:
            fragments = decode_fragments(payload[start:pos])
        except ProtocolError:
            return None
        for fragment in fragments:
            if fragment.msg_type == HandshakeType.client_hello and fragment.fragment_offset == 0:
                # legacy_version (2 bytes), then the random (RFC 9147 §5.3).
                return fragment.fragment[2:34] if fragment.fragment_length >= 34 else None
    return None


class _Fragments:
    """Whole DTLS handshake messages out of their fragments (RFC 9147 §5.5),
    for the few the decryption needs to parse (ClientHello, ServerHello,
    EncryptedExtensions)."""

    def __init__(self) -> None:
        self._parts: dict[tuple[int, int], dict[int, bytes]] = {}
        #: The name of each message by (message_seq, msg_type), from its first
        #: fragment, for the records that carry the others.
        self.names: dict[tuple[int, int], str] = {}

    def add(self, fragment: DTLSHandshakeFragment) -> bytes | None:
        """The message body once this fragment completes it, else None."""
        if fragment.fragment_offset == 0 and fragment.fragment_length == fragment.length:
            return fragment.fragment
        parts = self._parts.setdefault((fragment.message_seq, fragment.msg_type), {})
        parts[fragment.fragment_offset] = fragment.fragment
        body = bytearray()
        for offset in sorted(parts):
            if offset > len(body):
                return None  # a hole
            piece = parts[offset]
            if offset + len(piece) > len(body):
                body += piece[len(body) - offset :]
        if len(body) < fragment.length:
            return None
        del self._parts[(fragment.message_seq, fragment.msg_type)]
        return bytes(body[: fragment.length])


#: A DTLS association in a UDP flow: client_random, client, server, its datagrams.
_Association = tuple[bytes, Address, Address, list[Datagram]]


def _dtls_connections(flow: UDPFlow) -> Iterator[_Association]:
    """The DTLS associations of a UDP flow: a ClientHello with a new random starts one."""
    current: _Association | None = None
    for datagram in flow.datagrams:
        client_random = _plaintext_client_random(datagram.payload)
        if client_random is not None and (current is None or client_random != current[0]):
            if current is not None:
                yield current
            current = (client_random, datagram.source, datagram.destination, [])
        if current is not None:
            current[3].append(datagram)
    if current is not None:
        yield current


def decrypt_dtls(
    number: int, client_random: bytes, client: Address, server: Address, datagrams: list[Datagram],
    keylog: KeyLog,
) -> Connection:
    connection = Connection(number, "DTLS", client, server, client_random)
    secrets = keylog.secrets(client_random)
    connection.keys_in_log = bool(secrets)
    if not secrets:
        connection.notes.append("not decrypted: the key log has no secrets for its client_random")
    sides = {CLIENT: _DTLSDirection(connection, CLIENT, secrets), SERVER: _DTLSDirection(connection, SERVER, secrets)}
    profile: EKUProfile | None = None
    client_hello: ClientHello | None = None
    assemblers = {CLIENT: _Fragments(), SERVER: _Fragments()}
    failures: Counter[tuple[str, str]] = Counter()
    for datagram in datagrams:
        sender = CLIENT if datagram.source == client else SERVER
        side = sides[sender]
        before = Counter(side.reader.discarded)
        for opened in side.reader.records_in(datagram.payload):
            epoch = opened.number.epoch
            keys = PLAINTEXT if epoch == 0 else HANDSHAKE if epoch == _HANDSHAKE_EPOCH else APPLICATION
            generation = max(0, epoch - _FIRST_APPLICATION_EPOCH)
            names: list[str] = []
            if opened.content_type == ContentType.HANDSHAKE:
                try:
                    fragments = decode_fragments(opened.payload)
                except ProtocolError:
                    fragments = []
                for fragment in fragments:
                    assembler = assemblers[sender]
                    body = assembler.add(fragment)
                    key = (fragment.message_seq, fragment.msg_type)
                    if fragment.fragment_offset == 0 or key not in assembler.names:
                        first = fragment.fragment if fragment.fragment_offset == 0 else b""
                        assembler.names[key] = message_name(fragment.msg_type, first if body is None else body, profile)
                    names.append(assembler.names[key])
                    if body is None:
                        continue
                    if sender == CLIENT and fragment.msg_type == HandshakeType.client_hello:
                        try:
                            client_hello = ClientHello.decode(body, dtls=True)
                        except ProtocolError:
                            client_hello = None
                    elif sender == SERVER and fragment.msg_type == HandshakeType.server_hello and side.suite is None:
                        suite = _dtls_server_hello(connection, sides, client_hello, body)
                        if suite is not None:
                            for each in sides.values():
                                each.install(suite)
                    elif sender == SERVER and fragment.msg_type == HandshakeType.encrypted_extensions:
                        try:
                            profile = _profile_of(EncryptedExtensions.decode(body))
                        except ProtocolError:
                            profile = None
                        connection.eku_profile = profile.name if profile else None
            if epoch >= _FIRST_APPLICATION_EPOCH:
                side.advance(epoch)
            connection.records.append(Record(
                datagram.time, number, sender, generation, opened.content_type, tuple(names),
                bytes(opened.payload), keys, opened.number.sequence_number, epoch,
            ))
        for discarded, count in (side.reader.discarded - before).items():
            failures[(sender, str(discarded))] += count
    for (sender, why), count in sorted(failures.items()):
        if connection.keys_in_log or why != "unknown_epoch":
            connection.notes.append(f"not decrypted: {count} record(s) of the {sender} ({why})")
    return connection


def _dtls_server_hello(
    connection: Connection, sides: dict[str, _DTLSDirection], client_hello: ClientHello | None, body: bytes
) -> SuiteInfo | None:
    try:
        hello = ServerHello.decode(body)
        if hello.is_hello_retry_request:
            return None
        suite = suite_info(hello.cipher_suite)
    except (ProtocolError, ConfigurationError):
        connection.notes.append("not decrypted: a ServerHello that does not parse, or an unknown cipher suite")
        return None
    connection.cipher_suite = suite.suite
    # RFC 9147 §9: once both hellos carry connection_id, each side puts the
    # connection ID the other issued in its records.  (Connection IDs issued
    # later with NewConnectionId are not followed: docs/decrypt.md.)
    issued = {}
    client_extensions = client_hello.extensions if client_hello is not None else ()
    for sender, extensions in ((CLIENT, client_extensions), (SERVER, hello.extensions)):
        for extension in extensions:
            if extension.type == ExtensionType.connection_id:
                try:
                    issued[sender] = decode_connection_id(extension.data)
                except ProtocolError:
                    pass
    if len(issued) == 2:
        sides[CLIENT].reader.set_own_connection_id(issued[SERVER])
        sides[SERVER].reader.set_own_connection_id(issued[CLIENT])
    return suite


def decrypt_capture(capture: Capture, keylog: KeyLog) -> list[Connection]:
    """Every TLS and DTLS connection of the capture, numbered from 1 in the
    order of their first packet."""
    found: list[tuple[float, TCPConnection | _Association]] = [(tcp.first_time, tcp) for tcp in capture.tcp]
    for flow in capture.udp:
        for client_random, client, server, datagrams in _dtls_connections(flow):
            found.append((datagrams[0].time, (client_random, client, server, datagrams)))
    found.sort(key=lambda item: item[0])
    connections: list[Connection] = []
    for _, item in found:
        number = len(connections) + 1
        if isinstance(item, TCPConnection):
            connection = decrypt_tls(item, number, keylog)
            if connection is not None:
                connections.append(connection)
        else:
            client_random, client, server, datagrams = item
            connections.append(decrypt_dtls(number, client_random, client, server, datagrams, keylog))
    return connections
