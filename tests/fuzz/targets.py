"""Fuzz targets for longtls, independent of the fuzzing engine.

Each target is a function ``target(data: bytes) -> None`` that raises
:class:`Finding` (or lets any unexpected exception escape) when longtls
misbehaves.  "Misbehaves" means: anything other than a longtls
``ProtocolError`` escaping the library, an ``internal_error`` alert in answer
to peer input (longtls turns a stray Python exception inside the core into
``internal_error``; see ``Connection._guard``), or a failed connection that
did not close properly (no ``ConnectionClosed`` event, no alert queued).

Targets (``TARGETS``):

``codecs``
    One byte picks a decoder (every handshake message, every extension_data
    codec, the EKU messages of all three profiles); the rest is its input.
    Whatever is accepted must re-encode to something that decodes the same.
``records``
    Raw bytes on the wire into a fresh server, a client that just sent its
    ClientHello, and connected endpoints (as the plaintext of protected
    records sealed under the right key).
``client`` / ``server``
    A live longtls handshake (and post-handshake traffic) between two
    Connections in memory, with the fuzz input injected into what the peer
    sends to the *victim*, at any handshake message of the conversation:
    every state of the client and server state machines, including
    HelloRetryRequest, client authentication, resumption, post-handshake
    authentication, NewSessionTicket and KeyUpdate.  Protected records are
    opened and re-sealed with the victim's current read key, so the fuzzer
    reaches the message parsers and state machines behind the AEAD.
``eku``
    The same, over Extended Key Update exchanges of all three profiles
    (draft-13, draft-2025-10, draft-05), the victim initiating, responding
    and crossing updates.

Input layout of the conversation targets: ``[scenario][point][mode] payload``.
``point`` picks the peer handshake message (counted over the whole
conversation; one past the last means "after everything"); ``mode``:

0. replace that message with ``payload`` (a whole handshake message, header included);
1. insert ``payload`` before it;
2. replace it with ``payload[1:]`` as a handshake body of type ``payload[0]``;
3. send ``payload`` as one record: ``payload[0]`` is the content type
   (sealed if the victim has a read key), the rest its content;
4. send ``payload`` raw on the wire, unsealed, before that message;
5. replace the body of that message with ``payload`` (type kept, length fixed).

The seed corpus (``seeds()``) is captured from real longtls conversations:
every message each scenario's peer sends, in each mode.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from helpers.pki import make_ca, make_leaf  # noqa: E402
from longtls.config import ClientAuth, Configuration  # noqa: E402
from longtls.connection import Connection  # noqa: E402
from longtls.constants import (  # noqa: E402
    MAX_PLAINTEXT,
    AlertDescription,
    ContentType,
    NamedGroup,
)
from longtls.crypto.certificates import TrustStore  # noqa: E402
from longtls.errors import LocalProtocolError, ProtocolError, RemoteProtocolError  # noqa: E402
from longtls.events import ConnectionClosed, Event, SessionTicketReceived  # noqa: E402
from longtls.handshake.eku_profiles import PROFILES  # noqa: E402
from longtls.record.tls import RecordProtection, RecordReader, plaintext_record  # noqa: E402
from longtls.wire import extensions as wx  # noqa: E402
from longtls.wire import messages as wm  # noqa: E402

HEADER = 5
MAX_PAYLOAD = MAX_PLAINTEXT + 512
#: Exploration only: findings whose message matches this regular expression
#: (already reported, not yet fixed) are tolerated, so a long run can look
#: for others.  CI never sets it.
_ALLOW = re.compile(os.environ["LONGTLS_FUZZ_ALLOW"]) if os.environ.get("LONGTLS_FUZZ_ALLOW") else None


class Finding(AssertionError):
    """longtls misbehaved on this input (a bug to report, with the input)."""


# ---------------------------------------------------------------------------
# What a failure must look like
# ---------------------------------------------------------------------------


def check_protocol_error(exc: ProtocolError, where: str) -> None:
    """A ProtocolError from peer input: the alert the spec names, not a masked bug."""
    if isinstance(exc, LocalProtocolError):
        raise Finding(f"{where}: LocalProtocolError from peer input: {exc}") from exc
    # Connection._guard turns a stray exception into internal_error "from" it;
    # a deliberate translation (a VerificationError into bad_certificate, say)
    # names its own alert.  No peer input deserves internal_error.
    if exc.alert == AlertDescription.internal_error:
        cause = exc.__cause__
        detail = f" (from {type(cause).__name__}: {cause})" if cause is not None else ""
        message = f"{where}: internal_error in answer to peer input: {exc}{detail}"
        if _ALLOW is not None and _ALLOW.search(message):
            return
        raise Finding(message) from exc


def check_closed(conn: Connection, events: list[Event], exc: ProtocolError, where: str) -> None:
    """After a fatal error: closed, one ConnectionClosed carrying the alert, alert queued."""
    if not conn.is_closed:
        raise Finding(f"{where}: {exc} raised but the connection is not closed")
    closed = [e for e in events if isinstance(e, ConnectionClosed)]
    if len(closed) != 1 or closed[0].alert != exc.alert or closed[0].by_peer:
        raise Finding(f"{where}: {exc} raised but ConnectionClosed events are {closed!r}")


def guarded(conn: Connection, events: list[Event], where: str, action: Callable[[], None]) -> bool:
    """Run ``action`` on ``conn``; True if it failed (as it may, properly)."""
    try:
        action()
    except LocalProtocolError:
        return False  # the scripted command is not allowed now: fine
    except ProtocolError as exc:
        check_protocol_error(exc, where)
        events.extend(conn.events())
        check_closed(conn, events, exc, where)
        return True
    finally:
        events.extend(conn.events())
    return False


# ---------------------------------------------------------------------------
# Credentials and scenarios (made once per process)
# ---------------------------------------------------------------------------


@functools.cache
def _pki() -> tuple[TrustStore, Any, Any]:
    ca = make_ca("ecdsa-p256")
    return TrustStore([ca.cert]), make_leaf(ca, "ecdsa-p256"), make_leaf(ca, "ecdsa-p256", client=True)


Action = tuple[str, str]  # (who: client|server|victim|peer, what)


@dataclass
class Scenario:
    name: str
    victim: str  # "client" or "server"
    client: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    script: tuple[Action, ...] = ()
    #: take a session ticket from a first connection and resume with it
    resume: bool = False
    #: inject only after the handshake (the EKU scenarios: the handshake is
    #: the other targets' job)
    post_handshake_only: bool = False
    #: both ends read the conversation's clock (advanced by ("clock", seconds))
    clocked: bool = False

    def configs(self) -> tuple[Configuration, Configuration]:
        return _configs(self.name)


SCENARIOS: list[Scenario] = [
    # -- handshakes, victim client ------------------------------------------------
    Scenario("client-full", "client", script=(("peer", "data"), ("victim", "data"))),
    Scenario("client-hrr", "client",
             client={"groups": [NamedGroup.x25519, NamedGroup.secp256r1],
                     "key_share_groups": [NamedGroup.x25519]},
             server={"groups": [NamedGroup.secp256r1]}),
    Scenario("client-mtls", "client", client={"_cert": True}, server={"client_auth": ClientAuth.REQUIRED}),
    Scenario("client-tickets-keyupdate", "client",
             client={"extended_key_update": False}, server={"extended_key_update": False},
             script=(("peer", "key_update"), ("victim", "key_update"), ("peer", "tickets"),
                     ("peer", "close"))),
    Scenario("client-pha", "client",
             client={"_cert": True, "post_handshake_auth": True, "extended_key_update": False},
             server={"extended_key_update": False, "session_tickets": 0},
             script=(("server", "pha"), ("peer", "data"))),
    Scenario("client-resume", "client",
             client={"extended_key_update": False, "psk_key_exchange_modes": (1, 0)},
             server={"extended_key_update": False}, resume=True),
    # -- handshakes, victim server ------------------------------------------------
    Scenario("server-full", "server", script=(("peer", "data"), ("victim", "data"), ("peer", "close"))),
    Scenario("server-hrr", "server",
             client={"groups": [NamedGroup.x25519, NamedGroup.secp256r1],
                     "key_share_groups": [NamedGroup.x25519]},
             server={"groups": [NamedGroup.secp256r1]}),
    Scenario("server-mtls", "server", client={"_cert": True}, server={"client_auth": ClientAuth.REQUIRED}),
    Scenario("server-keyupdate", "server",
             client={"extended_key_update": False}, server={"extended_key_update": False},
             script=(("peer", "key_update"), ("victim", "key_update"), ("peer", "close"))),
    Scenario("server-pha", "server",
             client={"_cert": True, "post_handshake_auth": True, "extended_key_update": False},
             server={"extended_key_update": False, "session_tickets": 0},
             script=(("server", "pha"), ("peer", "data"))),
    Scenario("server-resume", "server",
             client={"extended_key_update": False, "psk_key_exchange_modes": (1, 0)},
             server={"extended_key_update": False}, resume=True),
]
# -- Extended Key Update, every profile, victim on either side --------------------
EKU_SCRIPT: tuple[Action, ...] = (
    ("peer", "eku"), ("victim", "data"), ("victim", "eku"), ("peer", "data"),
    ("both", "eku"),  # crossed requests
    ("peer", "eku"),
)
EKU_SCENARIOS: list[Scenario] = [
    Scenario(f"eku-{profile}-{victim}", victim,
             client={"eku_profile": profile},
             # Unpaced: updates back to back (a server's default answers one a second).
             server={"eku_profile": profile, "eku_min_interval": 0.0}, script=EKU_SCRIPT,
             post_handshake_only=True)
    for profile in PROFILES
    for victim in ("client", "server")
]
# Paced: the server defers (draft-05: "retry") updates closer than 0.5 s and
# answers at most three; the clock moves only when the script says so.
PACED_SCRIPT: tuple[Action, ...] = (
    ("client", "eku"), ("clock", "0.1"), ("client", "eku"), ("server", "timer"),
    ("clock", "1"), ("both", "timer"), ("client", "eku"), ("clock", "2"), ("both", "timer"),
    ("client", "eku"), ("clock", "2"), ("both", "timer"), ("client", "eku"), ("clock", "2"),
    ("both", "timer"), ("server", "eku"), ("client", "data"),
)
EKU_SCENARIOS += [
    Scenario(f"eku-paced-{profile}-{victim}", victim,
             client={"eku_profile": profile},
             server={"eku_profile": profile, "eku_min_interval": 0.5, "eku_max_peer_updates": 3},
             script=PACED_SCRIPT, post_handshake_only=True, clocked=True)
    for profile in PROFILES
    for victim in ("client", "server")
]
ALL_SCENARIOS = SCENARIOS + EKU_SCENARIOS
_BASE_TIME = time.time()
_CLOCK = [_BASE_TIME]


def _clock() -> float:
    return _CLOCK[0]
_BY_NAME = {s.name: s for s in ALL_SCENARIOS}


@functools.cache
def _configs(name: str) -> tuple[Configuration, Configuration]:
    scenario = _BY_NAME[name]
    store, server_cred, client_cred = _pki()
    ckw = dict(scenario.client)
    skw = dict(scenario.server)
    ckw.setdefault("groups", [NamedGroup.x25519])
    ckw.setdefault("key_share_groups", [NamedGroup.x25519])
    if scenario.clocked:
        ckw["now"] = skw["now"] = _clock
    if ckw.pop("_cert", False):
        ckw["certificate_chain"], ckw["private_key"] = client_cred.chain, client_cred.key
    client = Configuration(is_client=True, server_name="localhost", trust_store=store, **ckw)
    server = Configuration(
        is_client=False, certificate_chain=server_cred.chain, private_key=server_cred.key,
        trust_store=store, **skw,
    )
    if scenario.resume:
        client.session_ticket = _ticket(client, server)
    return client, server


def _ticket(client_cfg: Configuration, server_cfg: Configuration) -> Any:
    client, server = Connection(client_cfg), Connection(server_cfg)
    client.start_handshake()
    for _ in range(10):
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    for event in client.events():
        if isinstance(event, SessionTicketReceived):
            return event.ticket
    raise RuntimeError("no session ticket from the first connection")


# ---------------------------------------------------------------------------
# A conversation with an interposer on the peer -> victim direction
# ---------------------------------------------------------------------------


def split_records(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        end = pos + HEADER + int.from_bytes(data[pos + 3 : pos + 5], "big")
        out.append(data[pos:end])
        pos = end
    return out


def split_messages(stream: bytes) -> list[bytes] | None:
    """Whole handshake messages (header included), or None if one is cut."""
    out, pos = [], 0
    while pos < len(stream):
        if len(stream) - pos < 4:
            return None
        end = pos + 4 + int.from_bytes(stream[pos + 1 : pos + 4], "big")
        if end > len(stream):
            return None
        out.append(stream[pos:end])
        pos = end
    return out


@dataclass
class Injection:
    point: int
    mode: int
    payload: bytes


class Conversation:
    """Two longtls Connections talking, with the peer's handshake messages
    counted (and recorded, or replaced at one point) on their way to the victim."""

    MAX_ROUNDS = 40

    def __init__(self, scenario: Scenario, injection: Injection | None = None) -> None:
        self.scenario = scenario
        self.injection = injection
        self.injected = False
        self.count = 0  # peer handshake messages seen so far
        self.recorded: list[tuple[int, bytes]] = []  # (content type, message) in order
        self.stopped = False
        client_cfg, server_cfg = scenario.configs()
        self.client, self.server = Connection(client_cfg), Connection(server_cfg)
        if scenario.victim == "client":
            self.victim, self.peer = self.client, self.server
        else:
            self.victim, self.peer = self.server, self.client
        self.victim_events: list[Event] = []
        self.peer_events: list[Event] = []
        _CLOCK[0] = _BASE_TIME  # every run of a clocked scenario sees the same times

    # -- running ------------------------------------------------------------

    def run(self) -> None:
        self._do(self.client, self._events_of(self.client), "start", self.client.start_handshake)
        self.pump()
        self.handshake_messages = self.count
        for who, what in self.scenario.script:
            if self.stopped:
                break
            self.act(who, what)
            self.pump()
        if not self.stopped and self.injection is not None and not self.injected:
            self._inject_between(b"")  # "after everything": inject now
            self.pump()

    def _events_of(self, conn: Connection) -> list[Event]:
        return self.victim_events if conn is self.victim else self.peer_events

    def _do(self, conn: Connection, events: list[Event], where: str, action: Callable[[], None]) -> None:
        role = "victim" if conn is self.victim else "peer"
        if guarded(conn, events, f"{role} {where}", action):
            self.stopped = True

    def act(self, who: str, what: str) -> None:
        if who == "clock":
            _CLOCK[0] += float(what)
            return
        targets = {
            "victim": [self.victim], "peer": [self.peer], "client": [self.client],
            "server": [self.server], "both": [self.client, self.server],
        }[who]
        for conn in targets:
            if conn.is_closed or not conn.handshake_complete:
                continue
            action: Callable[[], None]
            if what == "data":
                action = functools.partial(conn.send, b"fuzz" * 8)
            elif what == "key_update":
                action = functools.partial(conn.update_keys, True)
            elif what == "eku":
                action = conn.extended_key_update
            elif what == "pha":
                action = conn.request_client_authentication
            elif what == "tickets":
                action = functools.partial(conn.handshake.send_session_tickets, 1)  # type: ignore[attr-defined]
            elif what == "close":
                action = conn.close
            elif what == "timer":
                action = conn.handle_timer
            else:
                raise ValueError(what)
            self._do(conn, self._events_of(conn), what, action)

    def pump(self) -> None:
        for _ in range(self.MAX_ROUNDS):
            if self.stopped:
                return
            moved = False
            to_peer = self.victim.data_to_send()
            if to_peer and not self.peer.is_closed:
                moved = True
                self._do(self.peer, self.peer_events, "receive", functools.partial(self.peer.receive_data, to_peer))
            if self.stopped:
                return
            to_victim = self.peer.data_to_send()
            if to_victim and not self.victim.is_closed:
                moved = True
                self._interpose(to_victim)
            if not moved:
                return

    # -- the interposer -----------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        if data and not self.stopped and not self.victim.is_closed:
            self._do(self.victim, self.victim_events, "receive",
                     functools.partial(self.victim.receive_data, data))

    def seal_for_victim(self, content_type: int, content: bytes, version: int = 0x0303) -> bytes:
        """One record as the victim expects it now: sealed under its read key, or plain."""
        current = self.victim.read_protection
        if current is None:
            out = b""
            for i in range(0, max(len(content), 1), 0xFFFF):
                out += plaintext_record(content_type, content[i : i + 0xFFFF], version)
            return out
        protection = RecordProtection(current.suite, self.victim.current_read_secret)
        protection.sequence_number = current.sequence_number
        return protection.seal(content_type, content[: 0xFFFF - 300])

    def _open(self, record: bytes) -> tuple[int, bytes]:
        current = self.victim.read_protection
        if record[0] != ContentType.APPLICATION_DATA or current is None:
            return record[0], record[HEADER:]
        protection = RecordProtection(current.suite, self.victim.current_read_secret)
        protection.sequence_number = current.sequence_number
        return protection.open(record[:HEADER], record[HEADER:])

    def _interpose(self, data: bytes) -> None:
        for record in split_records(data):
            if self.stopped or self.victim.is_closed:
                return
            if self.injected:
                self._deliver(record)
                continue
            try:
                content_type, content = self._open(record)
            except RemoteProtocolError:
                # The victim expects another key than the peer used (the
                # injection changed the victim's state): the victim will say so.
                self._deliver(record)
                continue
            messages = split_messages(content) if content_type == ContentType.HANDSHAKE else None
            if not messages:
                self._deliver(record)
                continue
            version = int.from_bytes(record[1:3], "big")
            for i, message in enumerate(messages):
                self.recorded.append((content_type, message))
                if self.injection is not None and not self.injected and self.count == self.injection.point:
                    if i:  # the messages before it, in a record of their own
                        self._deliver(self.seal_for_victim(ContentType.HANDSHAKE, b"".join(messages[:i]), version))
                    rest = self._inject(message, version)
                    rest_messages = ([message] if rest else []) + messages[i + 1 :]
                    if rest_messages and not self.stopped:
                        self._deliver(self.seal_for_victim(ContentType.HANDSHAKE, b"".join(rest_messages), version))
                    self.count += len(messages) - i
                    break
                self.count += 1
            else:
                self._deliver(record)

    def _inject(self, message: bytes, version: int) -> bool:
        """Deliver the injection in place of / before ``message``; True to keep ``message``."""
        assert self.injection is not None
        self.injected = True
        mode, payload = self.injection.mode % 6, self.injection.payload[:MAX_PAYLOAD]
        if mode == 0:
            if payload:
                self._deliver(self.seal_for_victim(ContentType.HANDSHAKE, payload, version))
            return False
        if mode == 1:
            if payload:
                self._deliver(self.seal_for_victim(ContentType.HANDSHAKE, payload, version))
            return True
        if mode == 2:
            if payload:
                body = payload[1:]
                framed = bytes((payload[0],)) + len(body).to_bytes(3, "big") + body
                self._deliver(self.seal_for_victim(ContentType.HANDSHAKE, framed, version))
            return False
        if mode == 3:
            if payload:
                self._deliver(self.seal_for_victim(payload[0], payload[1:], version))
            return False
        if mode == 4:
            self._deliver(payload)
            return True
        body = payload
        framed = message[:1] + len(body).to_bytes(3, "big") + body
        self._deliver(self.seal_for_victim(ContentType.HANDSHAKE, framed, version))
        return False

    def _inject_between(self, message: bytes) -> None:
        """The injection after the scripted conversation, when all is quiet."""
        if self.victim.is_closed:
            return
        self._inject(message or b"\x00\x00\x00\x00", 0x0303)


def parse_conversation_input(data: bytes, scenarios: list[Scenario]) -> tuple[Scenario, Injection] | None:
    if len(data) < 3:
        return None
    scenario = scenarios[data[0] % len(scenarios)]
    first, total = injection_points(scenario.name)
    return scenario, Injection(first + data[1] % (total - first + 1), data[2], data[3:])


@functools.cache
def _run_reference(name: str) -> tuple[tuple[tuple[int, bytes], ...], int]:
    conversation = Conversation(_BY_NAME[name])
    conversation.run()
    if conversation.stopped:
        raise RuntimeError(f"scenario {name} fails without any injection")
    return tuple(conversation.recorded), conversation.handshake_messages


def _reference(name: str) -> tuple[tuple[int, bytes], ...]:
    return _run_reference(name)[0]


def injection_points(name: str) -> tuple[int, int]:
    """(first, last) message index an input may pick; ``last`` means "after everything"."""
    recorded, handshake = _run_reference(name)
    return (handshake if _BY_NAME[name].post_handshake_only else 0), len(recorded)


def message_count(name: str) -> int:
    return len(_reference(name))


def run_conversation(data: bytes, scenarios: list[Scenario]) -> None:
    parsed = parse_conversation_input(data, scenarios)
    if parsed is None:
        return
    scenario, injection = parsed
    Conversation(scenario, injection).run()


CLIENT_SCENARIOS = [s for s in SCENARIOS if s.victim == "client"]
SERVER_SCENARIOS = [s for s in SCENARIOS if s.victim == "server"]


def target_client(data: bytes) -> None:
    run_conversation(data, CLIENT_SCENARIOS)


def target_server(data: bytes) -> None:
    run_conversation(data, SERVER_SCENARIOS)


def target_eku(data: bytes) -> None:
    run_conversation(data, EKU_SCENARIOS)


# ---------------------------------------------------------------------------
# records: raw bytes on the wire
# ---------------------------------------------------------------------------


def target_records(data: bytes) -> None:
    """``[state][chunk] bytes``: state 0 fresh server, 1 client after its
    ClientHello, 2/3 connected client/server fed sealed inner records
    (``type, uint16 length, content`` repeated), 4 the RecordReader alone."""
    if len(data) < 2:
        return
    state, chunk, rest = data[0] % 5, data[1] + 1, data[2:]
    if state == 4:
        reader = RecordReader()
        try:
            for i in range(0, len(rest), chunk):
                reader.feed(rest[i : i + chunk])
                while reader.pop() is not None:
                    pass
        except RemoteProtocolError as exc:
            check_protocol_error(exc, "RecordReader")
        return
    if state in (0, 1):
        client_cfg, server_cfg = _configs("server-full")
        if state == 0:
            victim = Connection(server_cfg)
        else:
            victim = Connection(client_cfg)
            victim.start_handshake()
            victim.data_to_send()
        events: list[Event] = []
        for i in range(0, len(rest), chunk):
            if guarded(victim, events, "receive", functools.partial(victim.receive_data, rest[i : i + chunk])):
                return
        return
    conversation = Conversation(_BY_NAME["client-full" if state == 2 else "server-full"])
    conversation.run()
    pos = 0
    while pos + 3 <= len(rest) and not conversation.stopped and not conversation.victim.is_closed:
        content_type = rest[pos]
        length = int.from_bytes(rest[pos + 1 : pos + 3], "big")
        content = rest[pos + 3 : pos + 3 + length]
        pos += 3 + length
        conversation._deliver(conversation.seal_for_victim(content_type, content))
        conversation.pump()


# ---------------------------------------------------------------------------
# codecs
# ---------------------------------------------------------------------------

_MESSAGE_CODECS: list[type[Any]] = [
    wm.ClientHello, wm.ServerHello, wm.EncryptedExtensions, wm.CertificateRequest,
    wm.CertificateEntry, wm.Certificate, wm.CertificateVerify, wm.Finished,
    wm.EndOfEarlyData, wm.NewSessionTicket, wm.KeyUpdate,
]
_EXTENSION_CODECS: list[tuple[Callable[[Any], bytes], Callable[[bytes], Any], bool]] = [
    (wx.encode_server_name, wx.decode_server_name, False),
    (wx.encode_supported_groups, wx.decode_supported_groups, True),
    (wx.encode_signature_algorithms, wx.decode_signature_algorithms, True),
    (wx.encode_alpn, wx.decode_alpn, True),
    (wx.encode_supported_versions_client, wx.decode_supported_versions_client, True),
    (wx.encode_supported_versions_server, wx.decode_supported_versions_server, True),
    (wx.encode_key_share_client, wx.decode_key_share_client, True),
    (wx.encode_key_share_server, wx.decode_key_share_server, True),
    (wx.encode_key_share_hrr, wx.decode_key_share_hrr, True),
    (wx.encode_cookie, wx.decode_cookie, True),
    (wx.encode_psk_key_exchange_modes, wx.decode_psk_key_exchange_modes, True),
    (wx.encode_pre_shared_key_client, wx.decode_pre_shared_key_client, True),
    (wx.encode_pre_shared_key_server, wx.decode_pre_shared_key_server, True),
    (lambda _: wx.encode_early_data(), wx.decode_early_data, True),
    (wx.encode_early_data_nst, wx.decode_early_data_nst, True),
    (wx.encode_record_size_limit, wx.decode_record_size_limit, True),
    (lambda _: wx.encode_post_handshake_auth(), wx.decode_post_handshake_auth, True),
    (wx.encode_certificate_authorities, wx.decode_certificate_authorities, True),
    (wx.encode_tls_flags, wx.decode_tls_flags, True),
]
_PROFILES = list(PROFILES.values())
CODEC_COUNT = len(_MESSAGE_CODECS) + len(_EXTENSION_CODECS) + len(_PROFILES) + 1


def target_codecs(data: bytes) -> None:
    """``[codec] input``: codec < 11 a message, then extensions, then the
    three EKU profiles (``[msg_type] body``), then ``[msg_type] body`` for
    decode_message."""
    if not data:
        return
    index, body = data[0] % CODEC_COUNT, data[1:]
    try:
        if index < len(_MESSAGE_CODECS):
            cls = _MESSAGE_CODECS[index]
            msg = cls.decode(body)
            if msg.encode() != body:
                raise Finding(f"{cls.__name__}: accepted a non-canonical body")
            return
        index -= len(_MESSAGE_CODECS)
        if index < len(_EXTENSION_CODECS):
            encode, decode, canonical = _EXTENSION_CODECS[index]
            value = decode(body)
            again = encode(value)
            if decode(again) != value or (canonical and again != body):
                raise Finding(f"{decode.__name__}: decode/encode mismatch")
            return
        index -= len(_EXTENSION_CODECS)
        if not body:
            return
        if index < len(_PROFILES):
            profile = _PROFILES[index]
            eku = profile.codec.decode(body[0], body[1:])
            raw = eku.encode()
            if profile.codec.decode(raw[0], raw[4:]) != eku:
                raise Finding(f"EKU {profile.name}: decode/encode mismatch")
            return
        msg = wm.decode_message(body[0], body[1:])
        if wm.encode_message(msg)[4:] != body[1:]:
            raise Finding("decode_message accepted a non-canonical body")
    except RemoteProtocolError as exc:
        check_protocol_error(exc, "decoder")
    except ValueError as exc:
        # Encoders raise ValueError on values they cannot encode: a decoder
        # that returned such a value accepted something invalid.
        raise Finding(f"decoder accepted a value its encoder refuses: {exc}") from exc


TARGETS: dict[str, Callable[[bytes], None]] = {
    "codecs": target_codecs,
    "records": target_records,
    "client": target_client,
    "server": target_server,
    "eku": target_eku,
}


# ---------------------------------------------------------------------------
# Seed corpus, captured from real conversations
# ---------------------------------------------------------------------------


def _conversation_seeds(scenarios: list[Scenario]) -> Iterator[bytes]:
    for si, scenario in enumerate(scenarios):
        recorded = _reference(scenario.name)
        first, _total = injection_points(scenario.name)
        for k, (_ct, message) in enumerate(recorded):
            if k < first:
                continue
            head = bytes((si, k - first))
            yield head + b"\x00" + message  # replace with itself
            yield head + b"\x05" + message[4:]  # the body, framing fixed
            yield head + b"\x01" + message  # the message twice
            yield head + b"\x02" + message[:1] + message[4:]
        after = bytes((si, len(recorded) - first))
        yield after + b"\x03" + bytes((ContentType.ALERT, 2, AlertDescription.decode_error))
        yield after + b"\x03" + bytes((ContentType.APPLICATION_DATA,)) + b"data"
        yield after + b"\x03" + bytes((ContentType.ALERT, 1, 0))
        yield bytes((si, 0, 4)) + plaintext_record(ContentType.CHANGE_CIPHER_SPEC, b"\x01")


def _records_seeds() -> Iterator[bytes]:
    conversation = Conversation(_BY_NAME["server-full"])
    client = conversation.client
    client.start_handshake()
    hello = client.data_to_send()
    yield b"\x00\xff" + hello
    yield b"\x00\x07" + hello
    server = conversation.server
    server.receive_data(hello)
    flight = server.data_to_send()
    yield b"\x01\xff" + flight
    yield b"\x04\xff" + hello + flight
    for state in (2, 3):
        for content_type, content in (
            (ContentType.APPLICATION_DATA, b"hello"), (ContentType.ALERT, b"\x01\x00"),
            (ContentType.HANDSHAKE, b"\x18\x00\x00\x01\x00"), (ContentType.APPLICATION_DATA, b""),
        ):
            yield bytes((state, 0xFF, content_type)) + len(content).to_bytes(2, "big") + content


def _codec_seeds() -> Iterator[bytes]:
    index = {cls.msg_type: i for i, cls in enumerate(_MESSAGE_CODECS) if hasattr(cls, "msg_type")}
    by_decoder = {decode.__name__: len(_MESSAGE_CODECS) + i for i, (_e, decode, _c) in enumerate(_EXTENSION_CODECS)}
    ext_decoders = {
        0: "decode_server_name", 10: "decode_supported_groups", 13: "decode_signature_algorithms",
        16: "decode_application_layer_protocol_negotiation", 43: "decode_supported_versions_client",
        51: "decode_key_share_client", 44: "decode_cookie", 45: "decode_psk_key_exchange_modes",
        41: "decode_pre_shared_key_client", 28: "decode_record_size_limit",
        49: "decode_post_handshake_auth", 42: "decode_early_data",
    }
    eku_base = len(_MESSAGE_CODECS) + len(_EXTENSION_CODECS)
    for scenario in ALL_SCENARIOS:
        for _ct, message in _reference(scenario.name):
            msg_type, body = message[0], message[4:]
            yield bytes((CODEC_COUNT - 1, msg_type)) + body
            if msg_type in index:
                yield bytes((index[msg_type],)) + body
                try:
                    decoded = _MESSAGE_CODECS[index[msg_type]].decode(body)
                except RemoteProtocolError:
                    continue
                for ext in getattr(decoded, "extensions", ()):
                    name = ext_decoders.get(ext.type)
                    if name in by_decoder:
                        yield bytes((by_decoder[name],)) + ext.data
            for pi, profile in enumerate(_PROFILES):
                if msg_type in profile.message_types:
                    yield bytes((eku_base + pi, msg_type)) + body


def seeds(target: str) -> list[bytes]:
    """The seed corpus of ``target``, from real longtls conversations."""
    if target == "codecs":
        found = _codec_seeds()
    elif target == "records":
        found = _records_seeds()
    else:
        found = _conversation_seeds(
            {"client": CLIENT_SCENARIOS, "server": SERVER_SCENARIOS, "eku": EKU_SCENARIOS}[target]
        )
    unique = dict.fromkeys(found)  # keep order, drop duplicates
    return list(unique)
