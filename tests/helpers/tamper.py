"""Take TLS records apart, read and rewrite them, and forge new ones.

For negative tests: an in-the-middle attacker (or a broken peer) between two
longtls Connections.  Secrets come only from the public key log callback
(``Configuration.keylog``), never from Connection internals:

    log = KeyLog()
    server_cfg.keylog = log
    ...
    flight = server.data_to_send()
    secret = log.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET")
    flight = rewrite_flight(flight, negotiated_suite(flight), secret, edit)

Every function here works on whole records; a record is ``Record(type, raw)``
where ``raw`` includes the 5-byte header.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from longtls.constants import ContentType, HandshakeType
from longtls.crypto.suites import SUITES, SuiteInfo, suite_info
from longtls.errors import RemoteProtocolError
from longtls.record.tls import RecordProtection, plaintext_record
from longtls.wire.messages import ServerHello, encode_handshake

HEADER = 5

#: One handshake message: (msg_type, body).
Message = tuple[int, bytes]
Edit = Callable[[list[Message]], list[Message]]


class KeyLog:
    """A ``Configuration.keylog`` callback that keeps the secrets by label.

    Both ends log the same labels with the same values, so one KeyLog may be
    shared; ``secret(label)`` returns the latest value logged for the label.
    """

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}

    def __call__(self, line: str) -> None:
        label, _client_random, secret = line.split()
        self.secrets[label] = bytes.fromhex(secret)

    def secret(self, label: str) -> bytes:
        return self.secrets[label]

    def written_by(self, side: str) -> list[bytes]:
        """Every traffic secret ``side`` ("client" or "server") encrypts with."""
        prefix = side.upper() + "_"
        return [s for label, s in self.secrets.items() if label.startswith(prefix)]


@dataclass(frozen=True)
class Record:
    type: int
    raw: bytes

    @property
    def header(self) -> bytes:
        return self.raw[:HEADER]

    @property
    def fragment(self) -> bytes:
        return self.raw[HEADER:]

    @property
    def protected(self) -> bool:
        return self.type == ContentType.APPLICATION_DATA


def split_records(data: bytes) -> list[Record]:
    """The records in ``data``, which must hold whole records only."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER:
            raise ValueError("trailing bytes shorter than a record header")
        end = pos + HEADER + int.from_bytes(data[pos + 3 : pos + 5], "big")
        if end > len(data):
            raise ValueError("truncated record")
        out.append(Record(data[pos], data[pos:end]))
        pos = end
    return out


def join(records: Iterable[Record]) -> bytes:
    return b"".join(r.raw for r in records)


def split_messages(stream: bytes) -> list[Message]:
    """Cut a handshake byte stream into (msg_type, body) messages."""
    out = []
    pos = 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos + 1 : pos + 4], "big")
        out.append((stream[pos], stream[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    if pos != len(stream):
        raise ValueError("handshake stream ends inside a message")
    return out


def join_messages(messages: Iterable[Message]) -> bytes:
    return b"".join(encode_handshake(t, body) for t, body in messages)


def replace(messages: list[Message], msg_type: int, body: bytes) -> list[Message]:
    """``messages`` with the (single) message of ``msg_type`` given a new body."""
    found = [i for i, (t, _) in enumerate(messages) if t == msg_type]
    if len(found) != 1:
        raise ValueError(f"expected one message of type {msg_type}, found {len(found)}")
    out = list(messages)
    out[found[0]] = (msg_type, body)
    return out


def body_of(messages: list[Message], msg_type: int) -> bytes:
    (body,) = [b for t, b in messages if t == msg_type]
    return body


# -- plaintext records ---------------------------------------------------------


def plaintext_messages(data: bytes) -> list[Message]:
    """The handshake messages of the unprotected handshake records in ``data``."""
    stream = b"".join(r.fragment for r in split_records(data) if r.type == ContentType.HANDSHAKE)
    return split_messages(stream)


def rewrite_plaintext(data: bytes, edit: Edit) -> bytes:
    """Apply ``edit`` to the messages of the unprotected handshake records in ``data``.

    The edited messages go out in one handshake record where the first such
    record was; other records (CCS, protected ones) keep their place.
    """
    records = split_records(data)
    stream = join_messages(edit(plaintext_messages(data)))
    out: list[Record] = []
    for r in records:
        if r.type != ContentType.HANDSHAKE:
            out.append(r)
        elif not any(o.type == ContentType.HANDSHAKE for o in out):
            legacy = int.from_bytes(r.raw[1:3], "big")
            out.append(Record(r.type, plaintext_record(ContentType.HANDSHAKE, stream, legacy)))
    return join(out)


def negotiated_suite(server_flight: bytes) -> SuiteInfo:
    """The cipher suite the ServerHello in ``server_flight`` selected."""
    for msg_type, body in plaintext_messages(server_flight):
        if msg_type == HandshakeType.server_hello:
            sh = ServerHello.decode(body)
            if not sh.is_hello_retry_request:
                return suite_info(sh.cipher_suite)
    raise ValueError("no ServerHello in the flight")


# -- protected records ---------------------------------------------------------


def seal(
    suite: SuiteInfo, secret: bytes, content_type: int, content: bytes, *,
    sequence_number: int = 0, padding: int = 0,
) -> bytes:
    """One TLSCiphertext record, as the holder of ``secret`` would send it."""
    protection = RecordProtection(suite, secret)
    protection.sequence_number = sequence_number
    return protection.seal(content_type, content, padding)


def open_protected(suite: SuiteInfo, secret: bytes, records: Iterable[Record]) -> list[tuple[int, bytes]]:
    """Decrypt consecutive protected records sent under ``secret`` from sequence number 0."""
    protection = RecordProtection(suite, secret)
    return [protection.open(r.header, r.fragment) for r in records if r.protected]


def rewrite_flight(flight: bytes, suite: SuiteInfo, secret: bytes, edit: Edit) -> bytes:
    """Re-seal the protected handshake messages of ``flight`` after ``edit``.

    ``flight`` is what one side sent while its write key was ``secret`` (plus
    any unprotected records before that, kept as they are); the edited
    messages are sealed into one record with sequence number 0.
    """
    records = split_records(flight)
    protected = [r for r in records if r.protected]
    inner = open_protected(suite, secret, protected)
    if any(t != ContentType.HANDSHAKE for t, _ in inner):
        raise ValueError("the flight holds protected records other than handshake")
    messages = edit(split_messages(b"".join(c for _, c in inner)))
    sealed = seal(suite, secret, ContentType.HANDSHAKE, join_messages(messages))
    return join(r for r in records if not r.protected) + sealed


def decode_last_record(data: bytes, log: KeyLog | None, side: str) -> tuple[int, bytes]:
    """(content type, content) of the last record ``side`` sent in ``data``.

    A protected record is opened with whichever of ``side``'s logged traffic
    secrets (and a small sequence number) authenticates it.
    """
    last = split_records(data)[-1]
    if not last.protected:
        return last.type, last.fragment
    assert log is not None, "a protected record needs the sender's key log to read"
    for secret in log.written_by(side):
        for suite in SUITES.values():
            if suite.hash_length != len(secret):
                continue
            for seq in range(64):
                protection = RecordProtection(suite, secret)
                protection.sequence_number = seq
                try:
                    return protection.open(last.header, last.fragment)
                except RemoteProtocolError:
                    continue
    raise AssertionError(f"no logged {side} secret opens the last record")


def flip(record: bytes, index: int) -> bytes:
    """``record`` with the byte at ``index`` XORed with 0x01."""
    out = bytearray(record)
    out[index] ^= 0x01
    return bytes(out)
