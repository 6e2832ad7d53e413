"""Extended Key Update over TLS 1.3 (draft-ietf-tls-extended-key-update).

A fresh key exchange inside a live connection, with the group negotiated in
the handshake, derives a new main secret and new application traffic,
exporter and resumption secrets.  The draft changed twice; longtls speaks all
three texts, one per connection.  Each has its own tls_flags bit: a client
offers the profiles it is configured with, the server acknowledges the newest
one it also speaks (``select_profile``, docs/eku-profiles.md):

- ``draft-13`` (default): one HandshakeType with subtypes request, response,
  finish; three messages; the responder switches its send keys right after
  its response; chained transcript hash; labels "derived", "c ap traffic"...
- ``draft-2025-10``: same message type, subtype 2 is new_key_update; four
  messages (NKU from each side); context Hash(Req || Resp); labels
  "key derived", "c ap traffic2", "exp main2", "res main2".
- ``draft-05``: three HandshakeTypes (request, response, new_key_update); the
  response carries a status (accepted, retry + delay, rejected, clashed);
  four messages; labels "key derived", "c ap traffic2", "exp master2"...

Decisions where the texts are silent (../shared/specs/README.md): EKU
messages enter every hash with their 4-byte handshake header; key_exchange
values compare byte-wise (a prefix is lower); draft-13's transcript_hash_N is
used directly as the HKDF-Expand-Label context.  In the four-message flows the
initiator switches its send keys right after its new_key_update (draft-2025-10
§5 step 4, and the only reading of draft-05 §4 under which "the NewKeyUpdate
encrypted with the old key is received before any message with the new key").
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

from .constants import AlertDescription, EKUProfileName, HandshakeType, NamedGroup, TLSFlag
from .crypto import key_schedule as ks
from .crypto.groups import KeyShare, get_group
from .crypto.suites import SuiteInfo
from .errors import ConfigurationError, LocalProtocolError, RemoteProtocolError
from .events import ExporterUpdated, KeyUpdateCompleted, KeyUpdateRejected, KeyUpdateStarted
from .wire.buffer import Buffer, u8, u16, vec
from .wire.messages import encode_handshake

if TYPE_CHECKING:
    from .connection import Connection


class Kind(Enum):
    REQUEST = "request"
    RESPONSE = "response"
    FINISH = "finish"  # key_update_finish (draft-13) / new_key_update (older texts)


class Status(IntEnum):
    """ExtendedKeyUpdateResponseStatus (draft-05 §4)."""

    accepted = 0
    retry = 1
    rejected = 2
    clashed = 3


@dataclass(frozen=True, slots=True)
class EKUMessage:
    kind: Kind
    group: int = 0
    key_exchange: bytes = b""
    status: Status = Status.accepted
    delay: int = 0

    def __repr__(self) -> str:
        return f"EKUMessage({self.kind.value}, group={self.group}, status={self.status.name})"


@dataclass(frozen=True, slots=True)
class EKUProfile:
    """What differs between the three texts (specs README, "The three profiles")."""

    name: EKUProfileName
    flag: TLSFlag  # its bit in tls_flags (PROVISIONAL, constants.TLSFlag)
    derived_label: bytes
    client_traffic_label: bytes
    server_traffic_label: bytes
    exporter_label: bytes
    resumption_label: bytes
    chained_transcript: bool  # draft-13: transcript_hash_N+1 = Hash(th_N || Req || Resp)
    three_messages: bool  # draft-13: Req, Resp, Finish; older: Req, Resp, NKU, NKU
    separate_types: bool  # draft-05: one HandshakeType per message, response has a status
    log_exporter: bool  # EXPORTER_SECRET_N key log lines (not in draft-05)
    disable_tickets: bool  # draft-13 §6; the older texts invalidate earlier tickets instead

    @property
    def message_types(self) -> frozenset[int]:
        if self.separate_types:
            return frozenset((
                HandshakeType.extended_key_update_request,
                HandshakeType.extended_key_update_response,
                HandshakeType.new_key_update,
            ))
        return frozenset((HandshakeType.extended_key_update,))

    # -- codec ----------------------------------------------------------------

    def encode(self, msg: EKUMessage) -> bytes:
        """The message with its 4-byte handshake header."""
        share = u16(msg.group) + vec(2, msg.key_exchange)
        if self.separate_types:
            if msg.kind is Kind.REQUEST:
                return encode_handshake(HandshakeType.extended_key_update_request, share)
            if msg.kind is Kind.RESPONSE:
                body = u8(msg.status)
                if msg.status == Status.accepted:
                    body += share
                elif msg.status == Status.retry:
                    body += u8(msg.delay)
                return encode_handshake(HandshakeType.extended_key_update_response, body)
            return encode_handshake(HandshakeType.new_key_update, b"")
        subtype = {Kind.REQUEST: 0, Kind.RESPONSE: 1, Kind.FINISH: 2}[msg.kind]
        body = u8(subtype) + (share if msg.kind is not Kind.FINISH else b"")
        return encode_handshake(HandshakeType.extended_key_update, body)

    def decode(self, msg_type: int, body: bytes) -> EKUMessage:
        buf = Buffer(body)
        if self.separate_types:
            if msg_type == HandshakeType.extended_key_update_request:
                msg = EKUMessage(Kind.REQUEST, buf.read_uint16(), buf.read_vector(2, 1))
            elif msg_type == HandshakeType.extended_key_update_response:
                raw_status = buf.read_uint8()
                try:
                    status = Status(raw_status)
                except ValueError:
                    raise RemoteProtocolError(
                        f"unknown ExtendedKeyUpdateResponse status {raw_status}",
                        AlertDescription.illegal_parameter,
                    ) from None
                if status == Status.accepted:
                    msg = EKUMessage(Kind.RESPONSE, buf.read_uint16(), buf.read_vector(2, 1))
                elif status == Status.retry:
                    msg = EKUMessage(Kind.RESPONSE, status=status, delay=buf.read_uint8())
                else:
                    msg = EKUMessage(Kind.RESPONSE, status=status)
            else:
                msg = EKUMessage(Kind.FINISH)
        else:
            subtype = buf.read_uint8()
            if subtype > 2:
                # draft-13 §4 / draft-2025-10 §4: unknown subtype.
                raise RemoteProtocolError(
                    f"unknown ExtendedKeyUpdate subtype {subtype}", AlertDescription.unexpected_message
                )
            kind = (Kind.REQUEST, Kind.RESPONSE, Kind.FINISH)[subtype]
            if kind is Kind.FINISH:
                msg = EKUMessage(kind)
            else:
                msg = EKUMessage(kind, buf.read_uint16(), buf.read_vector(2, 1))
        buf.expect_end("ExtendedKeyUpdate")
        return msg


#: The three texts, newest first: ``select_profile`` picks the first both speak.
PROFILES: dict[EKUProfileName, EKUProfile] = {
    EKUProfileName.draft_13: EKUProfile(
        EKUProfileName.draft_13, TLSFlag.extended_key_update,
        b"derived", b"c ap traffic", b"s ap traffic", b"exp master", b"res master",
        chained_transcript=True, three_messages=True, separate_types=False, log_exporter=True,
        disable_tickets=True,
    ),
    EKUProfileName.draft_2025_10: EKUProfile(
        EKUProfileName.draft_2025_10, TLSFlag.extended_key_update_draft_2025_10,
        b"key derived", b"c ap traffic2", b"s ap traffic2", b"exp main2", b"res main2",
        chained_transcript=False, three_messages=False, separate_types=False,
        log_exporter=True, disable_tickets=False,
    ),
    EKUProfileName.draft_05: EKUProfile(
        EKUProfileName.draft_05, TLSFlag.extended_key_update_draft_05,
        b"key derived", b"c ap traffic2", b"s ap traffic2", b"exp master2", b"res master2",
        chained_transcript=False, three_messages=False, separate_types=True,
        log_exporter=False, disable_tickets=False,
    ),
}
DEFAULT_PROFILE = EKUProfileName.draft_13
_BY_FLAG: dict[int, EKUProfile] = {profile.flag: profile for profile in PROFILES.values()}


def get_profile(name: str) -> EKUProfile:
    """The profile called ``name`` ("draft-13", or an EKUProfileName)."""
    try:
        return PROFILES[EKUProfileName(name)]
    except ValueError:
        raise ConfigurationError(
            f"unknown EKU profile {name!r}; choose from {', '.join(PROFILES)}"
        ) from None


def profile_flags(names: Iterable[str]) -> frozenset[int]:
    """The tls_flags bits that offer (or accept) these profiles."""
    return frozenset(get_profile(name).flag for name in names)


def select_profile(offered_flags: Collection[int], ours: Iterable[str]) -> EKUProfile | None:
    """Server: the newest profile the client offered that we speak, or None.

    The flags are a set on the wire, so the client cannot say which it
    prefers; the newest text wins because each revision fixes its
    predecessor, and a fixed rule lets both ends predict the outcome.
    """
    accepted = {EKUProfileName(name) for name in ours}
    for profile in PROFILES.values():  # newest first
        if profile.name in accepted and profile.flag in offered_flags:
            return profile
    return None


def acknowledged_profile(acknowledged: Collection[int], proposed: Collection[int]) -> EKUProfile | None:
    """Client: the profile the server's tls_flags in EncryptedExtensions chose
    (``proposed``: the flags of our ClientHello).

    draft-ietf-tls-tlsflags §3: a flag acknowledged without having been
    proposed is illegal_parameter.  Acknowledging two EKU profiles is not a
    choice either (each is a different wire format): illegal_parameter too.
    """
    unsolicited = sorted(set(acknowledged) - set(proposed))
    if unsolicited:
        raise RemoteProtocolError(
            f"server acknowledged tls_flags {unsolicited} that we did not offer",
            AlertDescription.illegal_parameter,
        )
    chosen = [_BY_FLAG[flag] for flag in sorted(acknowledged) if flag in _BY_FLAG]
    if len(chosen) > 1:
        raise RemoteProtocolError(
            "server acknowledged several Extended Key Update profiles "
            f"({', '.join(p.name for p in chosen)}); it must choose one",
            AlertDescription.illegal_parameter,
        )
    return chosen[0] if chosen else None


class Role(Enum):
    IDLE = "idle"
    WAIT_RESP = "wait_resp"  # initiator: request sent
    WAIT_PEER_FINISH = "wait_peer_finish"  # initiator (4 messages): our NKU sent, send keys new
    RESPONDING = "responding"  # responder: response deferred (rate limit or PHA in progress)
    WAIT_FINISH = "wait_finish"  # responder: response sent, waiting for the initiator's finish


class ExtendedKeyUpdate:
    """The EKU state of one connection: generation N's secrets and the exchange in flight.

    Holds key material; ``repr`` shows only the profile, generation and state.
    """

    def __init__(
        self, conn: Connection, profile: EKUProfile, suite: SuiteInfo, group: int,
        main_secret: bytes, handshake_hash: bytes, exporter_secret: bytes,
        epoch0_exporter: bytes,
    ) -> None:
        self.conn = conn
        self.profile = profile
        self.suite = suite
        self.group = get_group(group)
        self.generation = 0
        self.role = Role.IDLE
        self._main_secret = main_secret
        # draft-13 §6: transcript_hash_0 covers ClientHello..client Finished.
        self.transcript_hash = handshake_hash
        self.exporter_secret = exporter_secret
        # The epoch-aware exporter (draft-13 §9.1: generation 0 is "exporter eku").
        self.epoch_exporters: dict[int, bytes] = {0: epoch0_exporter}
        self.resumption_secret = b""
        self._next: tuple[bytes, bytes, bytes, bytes] | None = None  # send, receive, exporter, resumption
        self._share: KeyShare | None = None
        self._request = b""
        self._peer_request = b""
        self._peer_key_exchange = b""
        self._clash_pending = False
        self._initiated_locally = False
        self._started_at = 0.0
        #: draft-05 "retry": no new request from us before this time.
        self.retry_not_before = float("-inf")
        # The peer must have answered (sent its response or finish) by then;
        # Connection.handle_timer enforces it (rekey_timeout).
        self._deadline: float | None = None
        #: Seconds the exchange under way was given (for the error message).
        self.timeout = math.inf

    def __repr__(self) -> str:
        return f"<ExtendedKeyUpdate {self.profile.name} generation={self.generation} {self.role.value}>"

    @property
    def in_progress(self) -> bool:
        return self.role is not Role.IDLE

    @property
    def deadline(self) -> float | None:
        """When the peer's next message of this update is overdue, or None.

        Only while we wait for the peer: not while idle, and not while we hold
        our own response back (RESPONDING: the wait is ours, not the peer's).
        """
        if self.role in (Role.WAIT_RESP, Role.WAIT_PEER_FINISH, Role.WAIT_FINISH):
            return self._deadline
        return None

    def _arm_deadline(self, timeout: float | None) -> None:
        """The whole exchange, from our request (or our response) to its
        completion, gets ``timeout`` seconds (None: rekey_timeout)."""
        allowed = self.conn.configuration.rekey_timeout if timeout is None else timeout
        self.timeout = math.inf if allowed is None else allowed
        self._deadline = None if math.isinf(self.timeout) else self.conn.configuration.now() + self.timeout

    @property
    def message_types(self) -> frozenset[int]:
        return self.profile.message_types

    def _side(self, local: bool) -> str:
        return "client" if self.conn.is_client == local else "server"

    def _send(self, msg: EKUMessage) -> bytes:
        raw = self.profile.encode(msg)
        self.conn.queue_handshake(raw)
        return raw

    # ------------------------------------------------------------- initiator

    def start(self, timeout: float | None = None) -> None:
        if self.role is not Role.IDLE:
            raise LocalProtocolError("an extended key update is already in progress")
        if self.conn.configuration.now() < self.retry_not_before:
            raise LocalProtocolError("the peer asked us to wait before the next extended key update")
        # A fresh ephemeral for every update, never reused (draft-13 §4).
        self._share = self.group.generate()
        self.role = Role.WAIT_RESP
        self._initiated_locally = True
        self._started_at = self.conn.configuration.now()
        self._arm_deadline(timeout)
        self._request = self._send(EKUMessage(Kind.REQUEST, self.group.code, self._share.public))
        self.conn.emit(KeyUpdateStarted(generation=self.generation + 1, initiator=self._side(local=True)))

    # --------------------------------------------------------------- receive

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        msg = self.profile.decode(msg_type, body)
        if msg.kind is not Kind.FINISH and msg.status == Status.accepted and msg.group != self.group.code:
            raise RemoteProtocolError(
                f"ExtendedKeyUpdate key share for group {msg.group}, not the negotiated one",
                AlertDescription.illegal_parameter,
            )
        if msg.kind is Kind.REQUEST:
            self._on_request(msg, raw)
        elif msg.kind is Kind.RESPONSE:
            self._on_response(msg, raw)
        else:
            self._on_finish()

    def _on_request(self, msg: EKUMessage, raw: bytes) -> None:
        if self.conn.close_sent:
            return  # RFC 9846 §6.1: after our close_notify we send nothing more
        if self.role in (Role.WAIT_FINISH, Role.RESPONDING, Role.WAIT_PEER_FINISH):
            # draft-13 §11.3: a new update before the previous one completed.
            raise RemoteProtocolError(
                "new extended key update while one is in progress", AlertDescription.unexpected_message
            )
        if self.role is Role.WAIT_RESP:
            # Crossed requests: the lower key_exchange loses (draft-13 §5,
            # draft-2025-10 §5: ignored; draft-05 §4: answered with clashed).
            assert self._share is not None
            ours = self._share.public
            if msg.key_exchange == ours:
                raise RemoteProtocolError(
                    "crossed extended key update requests with equal key shares",
                    AlertDescription.unexpected_message,
                )
            if msg.key_exchange < ours:
                if self.profile.separate_types:
                    self._send(EKUMessage(Kind.RESPONSE, status=Status.clashed))
                return
            self._share = None  # the peer's request wins: answer it instead
            self.role = Role.IDLE
            # draft-05: the peer will still answer our abandoned request, with "clashed".
            self._clash_pending = self.profile.separate_types
        self._initiated_locally = False
        self._started_at = self.conn.configuration.now()
        self._peer_request = raw
        self._peer_key_exchange = msg.key_exchange
        self.conn.emit(KeyUpdateStarted(generation=self.generation + 1, initiator=self._side(local=False)))
        verdict = self.conn.eku_admission()
        if verdict == "reject":
            if self.profile.separate_types:
                self.role = Role.IDLE
                self._send(EKUMessage(Kind.RESPONSE, status=Status.rejected))
            else:
                # draft-13 / draft-2025-10 have no way to refuse: the response
                # is held back for good (the connection keeps its keys).
                self.role = Role.RESPONDING
            return
        if verdict == "defer":
            # Rate limit (draft-13 §11.3) or client authentication in progress
            # (draft-13 §8.3): hold the response back.  draft-05 has a status
            # for that instead: retry after a delay.
            if self.profile.separate_types:
                self.role = Role.IDLE
                wait = self.conn.eku_wait_seconds()
                self._send(EKUMessage(Kind.RESPONSE, status=Status.retry, delay=min(255, math.ceil(wait))))
                return
            self.role = Role.RESPONDING
            return
        self._respond()

    def respond_deferred(self) -> None:
        """Send the response that a rate limit or a client authentication held back."""
        if self.role is Role.RESPONDING:
            self._respond()

    def _respond(self) -> None:
        response_share, shared = self.group.respond(self._peer_key_exchange)
        self._peer_key_exchange = b""
        response = self._send(EKUMessage(Kind.RESPONSE, self.group.code, response_share))
        self._derive(shared, self._peer_request, response)
        self.role = Role.WAIT_FINISH
        self._arm_deadline(None)  # the initiator's finish is due within rekey_timeout
        if self.profile.three_messages:
            # draft-13 §5 step 3: the responder switches its send keys right after its response.
            assert self._next is not None
            self.conn.eku_switch_send(self._next[0])

    def _on_response(self, msg: EKUMessage, raw: bytes) -> None:
        if msg.status == Status.clashed and self._clash_pending:
            self._clash_pending = False
            return
        if self.role is not Role.WAIT_RESP or self._share is None:
            raise RemoteProtocolError(
                "ExtendedKeyUpdate response without a request", AlertDescription.unexpected_message
            )
        if msg.status != Status.accepted:
            self._on_declined(msg)
            return
        if self.conn.close_sent:
            # We closed meanwhile and may send no finish.  In draft-13 the peer
            # already sends under the new keys, so follow it on receive only.
            shared = self._share.complete(msg.key_exchange)
            self._share = None
            self.role = Role.IDLE
            if self.profile.three_messages:
                self._derive(shared, self._request, raw)
                assert self._next is not None
                self.conn.eku_switch_receive(self._next[1])
                self._next = None
            return
        shared = self._share.complete(msg.key_exchange)
        self._share = None
        self._derive(shared, self._request, raw)
        assert self._next is not None
        send, receive = self._next[0], self._next[1]
        if self.profile.three_messages:
            # draft-13 §5 step 4-5: the responder already sends under the new
            # keys; finish under the old send keys, then switch.
            self.conn.eku_switch_receive(receive)
            self._send(EKUMessage(Kind.FINISH))
            self.conn.eku_switch_send(send)
            self._complete()
        else:
            # draft-2025-10 §5 step 3-4: our NKU under the old keys, then our
            # send keys change; receive keys change on the responder's NKU.
            self._send(EKUMessage(Kind.FINISH))
            self.conn.eku_switch_send(send)
            self.role = Role.WAIT_PEER_FINISH

    def _on_declined(self, msg: EKUMessage) -> None:
        """draft-05 §4: retry, rejected, or clashed."""
        self._share = None
        self.role = Role.IDLE
        if msg.status == Status.clashed:
            # Our request lost a crossing: the peer's own request is on its way
            # and will be answered; nothing to report.
            return
        if msg.status == Status.retry:
            self.retry_not_before = self.conn.configuration.now() + msg.delay
        self.conn.emit(KeyUpdateRejected(status=msg.status.name, retry_after=msg.delay))
        if self.conn.configuration.eku_required:
            raise RemoteProtocolError(
                f"peer declined the extended key update ({msg.status.name})",
                AlertDescription.extended_key_update_required,
            )

    def _on_finish(self) -> None:
        if self.role is Role.WAIT_FINISH and self._next is not None:
            send, receive = self._next[0], self._next[1]
            self.conn.eku_switch_receive(receive)
            if not self.profile.three_messages and not self.conn.close_sent:
                # draft-2025-10 §5 step 4: answer with our own NKU, then switch.
                self._send(EKUMessage(Kind.FINISH))
                self.conn.eku_switch_send(send)
            self._complete()
        elif self.role is Role.WAIT_PEER_FINISH and self._next is not None:
            self.conn.eku_switch_receive(self._next[1])
            self._complete()
        else:
            raise RemoteProtocolError(
                "ExtendedKeyUpdate finish out of place", AlertDescription.unexpected_message
            )

    def _complete(self) -> None:
        assert self._next is not None
        _send, _receive, exporter, resumption = self._next
        self._next = None
        self.role = Role.IDLE
        self.generation += 1
        previous = self.epoch_exporters.get(self.generation - 1, b"")
        self.exporter_secret = exporter
        self.resumption_secret = resumption
        # Keep the previous generation's exporter for the peer that switches
        # a moment later (draft-13 §9.2).
        self.epoch_exporters = {self.generation - 1: previous, self.generation: exporter}
        if self.profile.log_exporter:
            self.conn.log_secret(f"EXPORTER_SECRET_{self.generation}", exporter)
        elapsed = self.conn.configuration.now() - self._started_at
        self.conn.emit(KeyUpdateCompleted(
            generation=self.generation,
            initiator=self._side(local=self._initiated_locally),
            group=NamedGroup(self.group.code),
            seconds=max(elapsed, 0.0),
        ))
        self.conn.emit(ExporterUpdated(generation=self.generation))
        self.conn.eku_completed()

    # ---------------------------------------------------------- derivation

    def _derive(self, shared: bytes, request: bytes, response: bytes) -> None:
        """Generation N+1's secrets (draft-13 §6; draft-2025-10 §7; draft-05 §5)."""
        s, p = self.suite, self.profile
        salt = ks.derive_secret(s, self._main_secret, p.derived_label, ks.empty_hash(s))
        self._main_secret = ks.hkdf_extract(s, salt, shared)
        if p.chained_transcript:
            context = ks.transcript_digest(s, self.transcript_hash + request + response)
            self.transcript_hash = context
        else:
            context = ks.transcript_digest(s, request + response)
        client = ks.derive_secret(s, self._main_secret, p.client_traffic_label, context)
        server = ks.derive_secret(s, self._main_secret, p.server_traffic_label, context)
        exporter = ks.derive_secret(s, self._main_secret, p.exporter_label, context)
        # draft-13 disables ticket resumption with EKU: its resumption secret
        # would never be used, so it is not derived.
        resumption = (
            b"" if p.disable_tickets
            else ks.derive_secret(s, self._main_secret, p.resumption_label, context)
        )
        n = self.generation + 1
        self.conn.log_secret(f"CLIENT_TRAFFIC_SECRET_{n}", client)
        self.conn.log_secret(f"SERVER_TRAFFIC_SECRET_{n}", server)
        send, receive = (client, server) if self.conn.is_client else (server, client)
        self._next = (send, receive, exporter, resumption)
