"""RFC 8448 ("Example Handshake Traces for TLS 1.3") as machine-readable test data.

The spec text (``rfc8448-tls13-vectors.txt``) is parsed once, at import time.  It lives in
``../shared/specs`` -- a sibling of the repository root -- unless the environment variable
``LONGTLS_SPECS`` names another specs directory.

Data model
==========

Each trace section (3 Simple 1-RTT, 4 Resumed 0-RTT, 5 HelloRetryRequest, 6 Client
Authentication, 7 Compatibility Mode) becomes a :class:`Trace`: an ordered tuple of
:class:`Item`.  An item is one ``{client}``/``{server}`` heading of the trace::

    {server}  derive secret "tls13 c hs traffic":

          PRK (32 octets):  f2 c6 6e 28 ...

becomes ``Item(who="server", title='derive secret "tls13 c hs traffic"', note=None,
fields={"PRK": b"...", "hash": b"...", "info": b"...", "expanded": b"..."})``.

* ``title`` is the heading text, whitespace-collapsed, without the trailing colon and without
  a trailing parenthetical, which goes to ``note`` (``'same as server early secret'``).
  Items carrying such a "(same as ...)" note have no fields; :meth:`Trace.find` skips them.
* field names are the label before the colon minus the ``(N octets)`` part:
  ``"private key"``, ``"public key"``, ``"ClientHello"``, ``"payload"``,
  ``"complete record"``, ``"PRK"``, ``"hash"``, ``"info"``, ``"expanded"``, ``"salt"``,
  ``"IKM"``, ``"secret"``, ``"key info"``, ``"key expanded"``, ``"iv info"``,
  ``"iv expanded"``, ``"finished"``, ``"binder hash"``, ``"ClientHello prefix"``, ...
* hex wrapped over several lines (and over page breaks) is joined; every declared octet count
  is checked.  ``(empty)`` is ``b""``; ``salt:  0 (all zero octets)`` is ``Hash.length`` zero
  octets (32: every trace uses TLS_AES_128_GCM_SHA256).

Besides the generic :meth:`Trace.find`, a trace offers helpers for the values tests need most
(randoms, key shares, handshake messages, records, every key-schedule secret by name, traffic
keys, finished keys).  The module also carries small, independent implementations of the TLS 1.3
key-schedule functions (RFC 9846 section 7.1) -- :func:`hkdf_extract`, :func:`expand_label`,
:func:`derive_secret`, :func:`transcript_hash`, :func:`message_hash` -- for tests that need to
compute expected values from the spec formulas without trusting longtls.  Never import longtls
from here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

__all__ = [
    "HANDSHAKE_TYPES",
    "HRR_RANDOM",
    "RSA_SERVER_KEY",
    "SECRET_NAMES",
    "SPECS_ENV_VAR",
    "SPEC_FILENAME",
    "TRACES",
    "TRACE_KEYS",
    "HandshakeMessage",
    "Item",
    "KeyShare",
    "Phase",
    "RFC8448ParseError",
    "Record",
    "Trace",
    "TrafficKeys",
    "Vectors",
    "Who",
    "derive_secret",
    "expand_label",
    "hash_length",
    "hkdf_expand",
    "hkdf_extract",
    "hkdf_label",
    "load",
    "message_hash",
    "parse",
    "rsa_server_private_key",
    "spec_path",
    "specs_dir",
    "split_handshake_messages",
    "trace",
    "transcript_hash",
]

Who = Literal["client", "server"]
Phase = Literal["early", "handshake", "application"]

SPEC_FILENAME: Final = "rfc8448-tls13-vectors.txt"
SPECS_ENV_VAR: Final = "LONGTLS_SPECS"

#: ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 9846 §4.1.3).
HRR_RANDOM: Final = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

#: Handshake message type code points (RFC 9846 §4) for the messages the traces contain.
HANDSHAKE_TYPES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "ClientHello": 1,
        "ServerHello": 2,
        "NewSessionTicket": 4,
        "EndOfEarlyData": 5,
        "EncryptedExtensions": 8,
        "Certificate": 11,
        "CertificateRequest": 13,
        "CertificateVerify": 15,
        "Finished": 20,
        "KeyUpdate": 24,
        "message_hash": 254,
    }
)
_HANDSHAKE_NAMES: Final = {v: k for k, v in HANDSHAKE_TYPES.items()}

#: Short keys for the trace sections, by section title.
TRACE_KEYS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "Simple 1-RTT Handshake": "simple",
        "Resumed 0-RTT Handshake": "resumed",
        "HelloRetryRequest": "hrr",
        "Client Authentication": "client_auth",
        "Compatibility Mode": "compat",
    }
)
_TRACE_ALIASES: Final = {
    "1rtt": "simple",
    "resumption": "resumed",
    "0rtt": "resumed",
    "helloretryrequest": "hrr",
    "clientauth": "client_auth",
    "compatibility": "compat",
    "compatibilitymode": "compat",
}

_WHOS: Final[tuple[Who, Who]] = ("client", "server")

# Hash.length zero octets for 'salt:  0 (all zero octets)': every trace uses SHA-256.
_TRACE_HASH_LEN: Final = 32


class RFC8448ParseError(ValueError):
    """The spec text did not have the expected shape (message names the line)."""


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One ``{client}``/``{server}`` heading of a trace with its named hex fields."""

    who: Who
    title: str
    note: str | None
    fields: Mapping[str, bytes]
    line: int  # 1-based line number of the heading in the spec file

    @property
    def is_reference(self) -> bool:
        """True for "(same as ...)" items, which repeat nothing and carry no fields."""
        return not self.fields

    def __getitem__(self, name: str) -> bytes:
        return self.fields[name]


@dataclass(frozen=True)
class HandshakeMessage:
    """A handshake message including its 4-octet header (type, uint24 length)."""

    who: Who
    name: str  # "ClientHello", "ServerHello" (also for HelloRetryRequest), "Finished", ...
    data: bytes

    @property
    def msg_type(self) -> int:
        return self.data[0]

    @property
    def body(self) -> bytes:
        """The message without its 4-octet header."""
        return self.data[4:]

    @property
    def is_hello_retry_request(self) -> bool:
        return self.msg_type == 2 and self.data[6:38] == HRR_RANDOM


@dataclass(frozen=True)
class Record:
    """A ``send <type> record`` item: the plaintext and the record as sent on the wire."""

    who: Who
    content_type: str  # from the title: "handshake", "application_data", "alert", ...
    payload: bytes  # TLSInnerPlaintext.content (before encryption, without the type octet)
    complete: bytes  # the whole TLSPlaintext/TLSCiphertext, 5-octet header included

    @property
    def outer_type(self) -> int:
        """Record-layer type octet on the wire (23 for every encrypted record)."""
        return self.complete[0]

    @property
    def encrypted(self) -> bool:
        return self.complete[5:] != self.payload

    @property
    def header(self) -> bytes:
        return self.complete[:5]

    @property
    def fragment(self) -> bytes:
        return self.complete[5:]


@dataclass(frozen=True)
class KeyShare:
    """An ephemeral key pair from a ``create an ephemeral <group> key pair`` item."""

    who: Who
    group: str  # "x25519" or "P-256", as the trace spells it
    private_key: bytes
    public_key: bytes


@dataclass(frozen=True)
class TrafficKeys:
    """``[sender]_write_key`` / ``[sender]_write_iv`` and the traffic secret they come from."""

    secret: bytes
    key: bytes
    iv: bytes


# Secret name -> (title substring, field name, who or None for "whoever has the values").
_SECRET_SOURCES: Final[dict[str, tuple[str, str, Who | None]]] = {
    "psk": ('extract secret "early"', "IKM", None),
    "early_secret": ('extract secret "early"', "secret", None),
    "binder_key": ("calculate PSK binder", "PRK", None),
    "binder_finished_key": ("calculate PSK binder", "expanded", None),
    "binder": ("calculate PSK binder", "finished", None),
    "client_early_traffic_secret": ('derive secret "tls13 c e traffic"', "expanded", None),
    "early_exporter_master_secret": ('derive secret "tls13 e exp master"', "expanded", None),
    "derived_for_handshake": ('derive secret for handshake "tls13 derived"', "expanded", None),
    "ecdhe": ('extract secret "handshake"', "IKM", None),
    "handshake_secret": ('extract secret "handshake"', "secret", None),
    "client_handshake_traffic_secret": ('derive secret "tls13 c hs traffic"', "expanded", None),
    "server_handshake_traffic_secret": ('derive secret "tls13 s hs traffic"', "expanded", None),
    "derived_for_master": ('derive secret for master "tls13 derived"', "expanded", None),
    "master_secret": ('extract secret "master"', "secret", None),
    "client_application_traffic_secret_0": (
        'derive secret "tls13 c ap traffic"',
        "expanded",
        None,
    ),
    "server_application_traffic_secret_0": (
        'derive secret "tls13 s ap traffic"',
        "expanded",
        None,
    ),
    "exporter_master_secret": ('derive secret "tls13 exp master"', "expanded", None),
    "resumption_master_secret": ('derive secret "tls13 res master"', "expanded", None),
    "ticket_nonce": ('generate resumption secret "tls13 resumption"', "hash", None),
    "resumption_psk": ('generate resumption secret "tls13 resumption"', "expanded", None),
    "server_finished_key": ('calculate finished "tls13 finished"', "expanded", "server"),
    "server_verify_data": ('calculate finished "tls13 finished"', "finished", "server"),
    "client_finished_key": ('calculate finished "tls13 finished"', "expanded", "client"),
    "client_verify_data": ('calculate finished "tls13 finished"', "finished", "client"),
}

_PHASE_TEXT: Final[Mapping[Phase, str]] = MappingProxyType(
    {"early": "early application", "handshake": "handshake", "application": "application"}
)

#: Every name :meth:`Trace.secret` understands (a trace only has the ones its text shows).
SECRET_NAMES: Final[tuple[str, ...]] = (
    *_SECRET_SOURCES,
    *(
        f"{who}_{phase}_{part}"
        for phase in _PHASE_TEXT
        for who in ("client", "server")
        for part in ("key", "iv")
    ),
)

# Aliases: the key-schedule labels as RFC 9846 §7.1 spells them ("tls13 " prefix optional).
_SECRET_ALIASES: Final = {
    "early": "early_secret",
    "handshake": "handshake_secret",
    "master": "master_secret",
    "res binder": "binder_key",
    "c e traffic": "client_early_traffic_secret",
    "e exp master": "early_exporter_master_secret",
    "c hs traffic": "client_handshake_traffic_secret",
    "s hs traffic": "server_handshake_traffic_secret",
    "c ap traffic": "client_application_traffic_secret_0",
    "s ap traffic": "server_application_traffic_secret_0",
    "exp master": "exporter_master_secret",
    "res master": "resumption_master_secret",
    "resumption": "resumption_psk",
    "shared secret": "ecdhe",
}


@dataclass(frozen=True)
class Trace:
    """One trace section of RFC 8448: its items in document order plus lookup helpers."""

    key: str  # "simple", "resumed", "hrr", "client_auth", "compat"
    section: int
    title: str
    items: tuple[Item, ...]
    hash_name: str = "sha256"  # every RFC 8448 trace negotiates TLS_AES_128_GCM_SHA256

    # ---- generic lookup ---------------------------------------------------------------

    def select(
        self, who: Who | None, title_substring: str, *, include_references: bool = False
    ) -> list[Item]:
        """Items (in document order) whose title contains ``title_substring``.

        ``who=None`` matches both sides.  "(same as ...)" items are left out unless
        ``include_references``.
        """
        return [
            it
            for it in self.items
            if (who is None or it.who == who)
            and title_substring in it.title
            and (include_references or not it.is_reference)
        ]

    def find_item(self, who: Who | None, title_substring: str, nth: int = 0) -> Item:
        """The ``nth`` (0-based) item with values whose title contains ``title_substring``."""
        found = self.select(who, title_substring)
        if nth >= len(found) or nth < -len(found):
            raise KeyError(
                f"{self.key}: no item #{nth} for who={who!r} title~{title_substring!r} "
                f"({len(found)} match)"
            )
        return found[nth]

    def find(self, who: Who | None, title_substring: str, nth: int = 0) -> dict[str, bytes]:
        """Field name -> bytes of the ``nth`` matching item (see :meth:`find_item`).

        e.g. ``trace("simple").find("server", "create an ephemeral x25519")["private key"]``.
        """
        return dict(self.find_item(who, title_substring, nth).fields)

    def field(self, who: Who | None, title_substring: str, name: str, nth: int = 0) -> bytes:
        """One field of the ``nth`` matching item."""
        item = self.find_item(who, title_substring, nth)
        try:
            return item.fields[name]
        except KeyError:
            raise KeyError(
                f"{self.key}: item {item.title!r} (line {item.line}) has no field {name!r}; "
                f"it has {sorted(item.fields)}"
            ) from None

    # ---- key shares ----------------------------------------------------------------------

    def key_shares(self, who: Who | None = None) -> list[KeyShare]:
        """Every ``create an ephemeral <group> key pair`` item, in order."""
        shares = []
        for it in self.select(who, "create an ephemeral "):
            m = re.fullmatch(r"create an ephemeral (\S+) key pair", it.title)
            if m is None:
                raise RFC8448ParseError(f"line {it.line}: unexpected key-pair title {it.title!r}")
            shares.append(KeyShare(it.who, m.group(1), it["private key"], it["public key"]))
        return shares

    def key_share(self, who: Who, nth: int = 0) -> KeyShare:
        """The ``nth`` key pair ``who`` generated (HRR trace: client nth=1 is the P-256 one)."""
        return self.key_shares(who)[nth]

    def ephemeral_private_key(self, who: Who, nth: int = 0) -> bytes:
        return self.key_share(who, nth).private_key

    def ephemeral_public_key(self, who: Who, nth: int = 0) -> bytes:
        return self.key_share(who, nth).public_key

    # ---- handshake messages and records ----------------------------------------------------

    def handshake_messages(
        self, who: Who | None = None, name: str | None = None
    ) -> list[HandshakeMessage]:
        """Messages from the ``construct a <Name> handshake message`` items, in trace order.

        These are the bytes as the trace prints them, header included.  Caveat: in the
        resumed trace the printed ClientHello (477 octets) is the *truncated* ClientHello
        without the PSK binders; the complete one is in the record payload (see
        :meth:`record_handshake_messages`).
        """
        out = []
        for it in self.select(who, "construct a "):
            m = re.fullmatch(r"construct an? (\w+) handshake message", it.title)
            if m is None:
                raise RFC8448ParseError(f"line {it.line}: unexpected title {it.title!r}")
            msg_name = m.group(1)
            if name is None or name == msg_name:
                out.append(HandshakeMessage(it.who, msg_name, it[msg_name]))
        return out

    def handshake_message(self, name: str, who: Who | None = None, nth: int = 0) -> bytes:
        """Bytes of the ``nth`` constructed ``name`` message (header included)."""
        msgs = self.handshake_messages(who, name)
        if nth >= len(msgs) or nth < -len(msgs):
            raise KeyError(f"{self.key}: no {name} #{nth} (who={who!r}); {len(msgs)} present")
        return msgs[nth].data

    def records(self, who: Who | None = None, content_type: str | None = None) -> list[Record]:
        """Every ``send <type> record`` item, in trace order.

        ``content_type`` filters on the inner type named in the title ("handshake",
        "application_data", "alert", "change_cipher_spec").
        """
        out = []
        for it in self.select(who, "send "):
            m = re.fullmatch(r"send (\w+) record", it.title)
            if m is None:
                raise RFC8448ParseError(f"line {it.line}: unexpected title {it.title!r}")
            if content_type is None or m.group(1) == content_type:
                out.append(Record(it.who, m.group(1), it["payload"], it["complete record"]))
        return out

    def record_handshake_messages(self, who: Who | None = None) -> list[HandshakeMessage]:
        """Handshake messages split out of the plaintext of every handshake record, in order.

        This is what actually went over the wire (e.g. the full ClientHello with binders in
        the resumed trace).  It includes post-handshake messages (NewSessionTicket).
        """
        out = []
        for rec in self.records(who, "handshake"):
            for data in split_handshake_messages(rec.payload):
                out.append(HandshakeMessage(rec.who, _HANDSHAKE_NAMES.get(data[0], "?"), data))
        return out

    @property
    def client_hello(self) -> bytes:
        """The first ClientHello as sent (complete, from the record)."""
        return self._wire("ClientHello", 0)

    @property
    def server_hello(self) -> bytes:
        """The real ServerHello (not a HelloRetryRequest), as sent."""
        return next(
            m.data
            for m in self.record_handshake_messages("server")
            if m.name == "ServerHello" and not m.is_hello_retry_request
        )

    @property
    def hello_retry_request(self) -> bytes | None:
        """The HelloRetryRequest message, or None if the trace has none."""
        for m in self.record_handshake_messages("server"):
            if m.is_hello_retry_request:
                return m.data
        return None

    @property
    def client_random(self) -> bytes:
        return self.client_hello[6:38]

    @property
    def server_random(self) -> bytes:
        return self.server_hello[6:38]

    def _wire(self, name: str, nth: int) -> bytes:
        return [m.data for m in self.record_handshake_messages() if m.name == name][nth]

    # ---- key schedule --------------------------------------------------------------------

    @property
    def secrets(self) -> dict[str, bytes]:
        """Every key-schedule value the trace shows, by name (see :data:`SECRET_NAMES`).

        Names: psk, early_secret, binder_key, binder_finished_key, binder,
        client_early_traffic_secret, early_exporter_master_secret, derived_for_handshake,
        ecdhe, handshake_secret, {client,server}_handshake_traffic_secret, derived_for_master,
        master_secret, {client,server}_application_traffic_secret_0, exporter_master_secret,
        resumption_master_secret, ticket_nonce, resumption_psk, {client,server}_finished_key,
        {client,server}_verify_data and {client,server}_{early,handshake,application}_{key,iv}
        (the *sender's* write key/iv).
        """
        out: dict[str, bytes] = {}
        for name, (title, fname, who) in _SECRET_SOURCES.items():
            found = self.select(who, title)
            if found:
                out[name] = found[0][fname]
        for phase in _PHASE_TEXT:
            for sender in _WHOS:
                tk = self._traffic_keys_or_none(sender, phase)
                if tk is not None:
                    out[f"{sender}_{phase}_key"] = tk.key
                    out[f"{sender}_{phase}_iv"] = tk.iv
        return out

    def secret(self, name: str) -> bytes:
        """One value from :attr:`secrets`.

        Also accepts the RFC 9846 label ("c hs traffic", "tls13 res master", "early",
        "handshake", "master", "res binder", "resumption", ...).
        """
        key = name.removeprefix("tls13 ")
        key = _SECRET_ALIASES.get(key, key)
        secrets = self.secrets
        try:
            return secrets[key]
        except KeyError:
            raise KeyError(
                f"{self.key}: no secret {name!r}; this trace has {sorted(secrets)}"
            ) from None

    def traffic_keys(self, sender: Who, phase: Phase) -> TrafficKeys:
        """The write key/iv of ``sender`` for ``phase`` and the traffic secret they expand.

        Looks for ``{sender} derive write traffic keys for <phase> data`` and, when that is
        only a "(same as ...)" reference, the peer's matching ``derive read ...`` item.
        """
        tk = self._traffic_keys_or_none(sender, phase)
        if tk is None:
            raise KeyError(f"{self.key}: no {phase} traffic keys for {sender}")
        return tk

    def _traffic_keys_or_none(self, sender: Who, phase: Phase) -> TrafficKeys | None:
        peer: Who = "server" if sender == "client" else "client"
        text = _PHASE_TEXT[phase]
        found = self.select(sender, f"derive write traffic keys for {text} data") or self.select(
            peer, f"derive read traffic keys for {text} data"
        )
        if not found:
            return None
        it = found[0]
        return TrafficKeys(it["PRK"], it["key expanded"], it["iv expanded"])

    def finished_key(self, who: Who) -> bytes:
        return self.secret(f"{who}_finished_key")

    def verify_data(self, who: Who) -> bytes:
        return self.secret(f"{who}_verify_data")

    @property
    def ecdhe_shared_secret(self) -> bytes:
        """The (EC)DHE shared secret: IKM of ``extract secret "handshake"``."""
        return self.secret("ecdhe")

    @property
    def ticket_nonce(self) -> bytes:
        return self.secret("ticket_nonce")


@dataclass(frozen=True)
class Vectors:
    """Everything parsed from the file."""

    traces: Mapping[str, Trace]
    rsa_server_key: Mapping[str, bytes] = field(default_factory=dict)


def split_handshake_messages(data: bytes) -> Iterator[bytes]:
    """Split concatenated handshake messages (each with its 4-octet header)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise RFC8448ParseError(f"truncated handshake header at offset {pos}")
        end = pos + 4 + int.from_bytes(data[pos + 1 : pos + 4], "big")
        if end > len(data):
            raise RFC8448ParseError(f"handshake message at offset {pos} overruns its record")
        yield data[pos:end]
        pos = end


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

_PAGE_FOOTER = re.compile(r"^\S.*\s\[Page \d+\]$")
_PAGE_HEADER = re.compile(r"^Internet-Draft\s{2,}\S")
_SECTION = re.compile(r"^(\d+)\.\s{2}(\S.*?)\s*$")
_HEADING = re.compile(r"^ {3}\{(client|server)\}\s+(\S.*?)\s*$")
_FIELD = re.compile(
    r"^ {6}(?P<name>[A-Za-z][A-Za-z0-9_ -]*?)(?: \((?P<n>\d+) octets?\))?:\s+(?P<value>\S.*?)\s*$"
)
_HEX_LINE = re.compile(r"^[0-9a-f]{2}(?: [0-9a-f]{2})*$")
_CONTINUATION = re.compile(r"^ {9}(?P<hex>[0-9a-f]{2}(?: [0-9a-f]{2})*)\s*$")
_KEY_FIELD = re.compile(
    r"^ {3}(?P<name>[a-z][a-z0-9 ]*?)(?: \([a-z ]+\))?:\s+(?P<hex>[0-9a-f ]+?)\s*$"
)
_KEY_CONTINUATION = re.compile(r"^ {6}(?P<hex>[0-9a-f]{2}(?: [0-9a-f]{2})*)\s*$")
_TRAILING_NOTE = re.compile(r"^(?P<title>.*?)\s*\((?P<note>[^()]*)\)$")

_ZERO_MARKER = "0 (all zero octets)"
_EMPTY_MARKER = "(empty)"


@dataclass
class _FieldBuilder:
    name: str
    declared: int | None
    line: int
    hex_parts: list[str]
    zero: bool = False

    def finish(self) -> bytes:
        if self.zero:
            data = bytes(_TRACE_HASH_LEN)
        else:
            data = bytes.fromhex(" ".join(self.hex_parts))
        if self.declared is not None and len(data) != self.declared:
            raise RFC8448ParseError(
                f"line {self.line}: field {self.name!r} declares {self.declared} octets "
                f"but has {len(data)}"
            )
        return data


@dataclass
class _ItemBuilder:
    who: Who
    heading: list[str]
    line: int
    fields: dict[str, bytes]
    current: _FieldBuilder | None = None

    def close_field(self) -> None:
        if self.current is not None:
            if self.current.name in self.fields:
                raise RFC8448ParseError(
                    f"line {self.current.line}: duplicate field {self.current.name!r}"
                )
            self.fields[self.current.name] = self.current.finish()
            self.current = None

    def finish(self) -> Item:
        self.close_field()
        title = " ".join(" ".join(self.heading).split())
        title = title.removesuffix(":").rstrip()
        note: str | None = None
        m = _TRAILING_NOTE.match(title)
        if m is not None:
            title, note = m.group("title"), " ".join(m.group("note").split())
        if note is not None and self.fields:
            raise RFC8448ParseError(f"line {self.line}: '({note})' item has values")
        return Item(self.who, title, note, MappingProxyType(dict(self.fields)), self.line)


def _clean_lines(text: str) -> list[str]:
    """Lines with page furniture (form feeds, running headers/footers) blanked out."""
    out = []
    for raw in text.splitlines():
        line = raw.replace("\f", "").rstrip()
        if _PAGE_FOOTER.match(line) or _PAGE_HEADER.match(line):
            line = ""
        out.append(line)
    return out


def _trace_key(title: str) -> str:
    return TRACE_KEYS.get(title) or re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def parse(text: str) -> Vectors:
    """Parse the RFC 8448 text.  Raises :class:`RFC8448ParseError` on anything unexpected."""
    lines = _clean_lines(text)
    traces: dict[str, Trace] = {}
    rsa: dict[str, bytes] = {}

    section: tuple[int, str] | None = None
    items: list[Item] = []
    item: _ItemBuilder | None = None
    key_field: tuple[str, list[str]] | None = None  # section 2 (RSA key) field in progress

    def close_key_field() -> None:
        nonlocal key_field
        if key_field is not None:
            rsa[key_field[0]] = bytes.fromhex(" ".join(key_field[1]))
            key_field = None

    def close_item() -> None:
        nonlocal item
        if item is not None:
            items.append(item.finish())
            item = None

    def close_section() -> None:
        nonlocal items
        close_item()
        close_key_field()
        if section is not None and items:
            key = _trace_key(section[1])
            if key in traces:
                raise RFC8448ParseError(f"duplicate trace key {key!r}")
            traces[key] = Trace(key, section[0], section[1], tuple(items))
        items = []

    i = 0
    while i < len(lines):
        line = lines[i]
        lineno = i + 1
        i += 1
        if not line:
            continue
        if m := _SECTION.match(line):
            close_section()
            section = (int(m.group(1)), m.group(2))
            continue
        if section is None:
            continue
        if m := _HEADING.match(line):
            close_item()
            heading = [m.group(2)]
            # Wrapped headings: continuation lines follow immediately, before the blank line.
            while i < len(lines) and lines[i] and not _FIELD.match(lines[i]):
                heading.append(lines[i])
                i += 1
            who: Who = "client" if m.group(1) == "client" else "server"
            item = _ItemBuilder(who, heading, lineno, {})
            continue
        if section[0] == 2:  # "Private Keys": the server's RSA key
            if km := _KEY_FIELD.match(line):
                close_key_field()
                key_field = (km.group("name"), [km.group("hex")])
            elif (kc := _KEY_CONTINUATION.match(line)) and key_field is not None:
                key_field[1].append(kc.group("hex"))
            else:
                close_key_field()
            continue
        if item is None:
            continue  # prose
        if fm := _FIELD.match(line):
            item.close_field()
            value = fm.group("value")
            declared = int(fm.group("n")) if fm.group("n") is not None else None
            fb = _FieldBuilder(fm.group("name"), declared, lineno, [])
            if value == _ZERO_MARKER:
                fb.zero = True
            elif value != _EMPTY_MARKER:
                if not _HEX_LINE.match(value):
                    raise RFC8448ParseError(f"line {lineno}: bad hex in field: {line!r}")
                fb.hex_parts.append(value)
            item.current = fb
            continue
        if cm := _CONTINUATION.match(line):
            if item.current is None or item.current.zero:
                raise RFC8448ParseError(f"line {lineno}: hex continuation outside a field")
            item.current.hex_parts.append(cm.group("hex"))
            continue
        if line.startswith("   ") and not line.startswith("    "):
            close_item()  # prose at section level ends the item
            continue
        raise RFC8448ParseError(f"line {lineno}: unexpected line inside an item: {line!r}")
    close_section()
    _check(traces)
    return Vectors(MappingProxyType(traces), MappingProxyType(rsa))


def _check(traces: Mapping[str, Trace]) -> None:
    """Cross-checks that catch a mis-parse early (import fails loudly rather than tests lying)."""
    for tr in traces.values():
        for msg in tr.handshake_messages():
            expected = HANDSHAKE_TYPES.get(msg.name)
            if expected is None or msg.msg_type != expected:
                raise RFC8448ParseError(f"{tr.key}: {msg.name} has type octet {msg.msg_type}")
            declared = int.from_bytes(msg.data[1:4], "big")
            # The resumed trace prints the ClientHello truncated before its PSK binders.
            truncated_ch = msg.name == "ClientHello" and declared > len(msg.data) - 4
            if declared != len(msg.data) - 4 and not truncated_ch:
                raise RFC8448ParseError(f"{tr.key}: {msg.name} length field mismatch")
        for rec in tr.records():
            if int.from_bytes(rec.complete[3:5], "big") != len(rec.complete) - 5:
                raise RFC8448ParseError(f"{tr.key}: record length field mismatch")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def specs_dir() -> Path:
    """``$LONGTLS_SPECS`` if set, else ``<repo root>/../shared/specs``."""
    env = os.environ.get(SPECS_ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "specs"


def spec_path() -> Path:
    return specs_dir() / SPEC_FILENAME


def load(path: Path | None = None) -> Vectors:
    p = spec_path() if path is None else path
    try:
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"RFC 8448 vectors not found at {p} (set {SPECS_ENV_VAR} to the specs directory)"
        ) from None
    return parse(text)


_VECTORS: Final = load()

#: Trace key -> Trace: "simple", "resumed", "hrr", "client_auth", "compat".
TRACES: Final[Mapping[str, Trace]] = _VECTORS.traces

#: The server's RSA key from section 2: modulus, public exponent, private exponent, prime1,
#: prime2, exponent1, exponent2, coefficient (big-endian bytes).
RSA_SERVER_KEY: Final[Mapping[str, bytes]] = _VECTORS.rsa_server_key


def trace(name: str | int) -> Trace:
    """A trace by key ("simple", "resumed", "hrr", "client_auth", "compat"), alias, section
    number (3..7) or section title."""
    if isinstance(name, int):
        for tr in TRACES.values():
            if tr.section == name:
                return tr
        raise KeyError(f"no trace in section {name}")
    if name in TRACES:
        return TRACES[name]
    folded = re.sub(r"[^a-z0-9]", "", name.lower())
    for tr in TRACES.values():
        if folded in (re.sub(r"[^a-z0-9]", "", tr.title.lower()), tr.key.replace("_", "")):
            return tr
    alias = _TRACE_ALIASES.get(folded)
    if alias is not None and alias in TRACES:
        return TRACES[alias]
    raise KeyError(f"no trace {name!r}; have {sorted(TRACES)}")


def rsa_server_private_key() -> rsa.RSAPrivateKey:
    """The section 2 RSA key (the server's certificate key in most traces) for pyca."""
    k = {name: int.from_bytes(v, "big") for name, v in RSA_SERVER_KEY.items()}
    pub = rsa.RSAPublicNumbers(k["public exponent"], k["modulus"])
    return rsa.RSAPrivateNumbers(
        p=k["prime1"],
        q=k["prime2"],
        d=k["private exponent"],
        dmp1=k["exponent1"],
        dmq1=k["exponent2"],
        iqmp=k["coefficient"],
        public_numbers=pub,
    ).private_key()


# --------------------------------------------------------------------------------------------
# Independent key-schedule primitives (RFC 9846 section 7.1).  No longtls imports.
# --------------------------------------------------------------------------------------------

_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = MappingProxyType(
    {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
)


def _hash_key(hash_name: str) -> str:
    key = hash_name.lower().replace("-", "").replace("_", "")
    if key not in _HASHES:
        raise ValueError(f"unsupported hash {hash_name!r}; use one of {sorted(_HASHES)}")
    return key


def hash_length(hash_name: str) -> int:
    return hashlib.new(_hash_key(hash_name)).digest_size


def transcript_hash(hash_name: str, messages: bytes | Iterable[bytes] = b"") -> bytes:
    """Transcript-Hash(M1, ..., Mn) = Hash(M1 || ... || Mn)."""
    data = messages if isinstance(messages, bytes | bytearray) else b"".join(messages)
    return hashlib.new(_hash_key(hash_name), data).digest()


def message_hash(hash_name: str, client_hello1: bytes) -> bytes:
    """The synthetic ``message_hash`` handshake message replacing ClientHello1 after an HRR:
    ``fe 00 00 Hash.length || Hash(ClientHello1)`` (RFC 9846 §4.4.1)."""
    digest = transcript_hash(hash_name, client_hello1)
    return bytes([HANDSHAKE_TYPES["message_hash"], 0, 0, len(digest)]) + digest


def hkdf_extract(hash_name: str, salt: bytes | None, ikm: bytes | None) -> bytes:
    """HKDF-Extract(salt, IKM) = HMAC-Hash(salt, IKM).  ``None``/empty salt or IKM is
    Hash.length zero octets, as the TLS 1.3 key schedule's "0" means."""
    n = hash_length(hash_name)
    return hmac.new(salt or bytes(n), ikm or bytes(n), _hash_key(hash_name)).digest()


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand(PRK, info, L) via pyca/cryptography."""
    algorithm = _HASHES[_hash_key(hash_name)]()
    return HKDFExpand(algorithm=algorithm, length=length, info=info).derive(prk)


def hkdf_label(label: str | bytes, context: bytes, length: int) -> bytes:
    """Serialized HkdfLabel: uint16 length, opaque label<7..255> = "tls13 " + Label,
    opaque context<0..255>.  ``label`` is given *without* the "tls13 " prefix."""
    raw = label.encode("ascii") if isinstance(label, str) else bytes(label)
    if raw.startswith(b"tls13 "):
        raise ValueError(f"pass the label without the 'tls13 ' prefix: {raw!r}")
    full = b"tls13 " + raw
    if not 7 <= len(full) <= 255 or len(context) > 255 or not 0 <= length <= 0xFFFF:
        raise ValueError("HkdfLabel field out of range")
    return length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context


def expand_label(
    hash_name: str, secret: bytes, label: str | bytes, context: bytes, length: int
) -> bytes:
    """HKDF-Expand-Label(Secret, Label, Context, Length) (RFC 9846 §7.1).

    ``label`` without the "tls13 " prefix, e.g. ``expand_label("sha256", s, "key", b"", 16)``.
    """
    return hkdf_expand(hash_name, secret, hkdf_label(label, context, length), length)


def derive_secret(
    hash_name: str, secret: bytes, label: str | bytes, messages: bytes | Sequence[bytes]
) -> bytes:
    """Derive-Secret(Secret, Label, Messages) =
    HKDF-Expand-Label(Secret, Label, Transcript-Hash(Messages), Hash.length).

    ``messages`` are the handshake messages themselves (hashed here), either concatenated or
    as a sequence; pass ``b""`` for the empty transcript.
    """
    return expand_label(
        hash_name,
        secret,
        label,
        transcript_hash(hash_name, messages),
        hash_length(hash_name),
    )
