"""Extended Key Update over TLS 1.3 (draft-ietf-tls-extended-key-update).

A fresh key exchange inside a live connection, with the group negotiated in
the handshake, that derives a new main secret and new application traffic,
exporter and resumption secrets (draft-13 §6).

This module implements the draft-13 profile (the default) for TLS.  The
profile table also describes draft-2025-10 and draft-05 (labels and
derivation inputs); their message flows are not implemented yet, and asking
for them is a ConfigurationError.

Decisions where the texts are silent (see ../shared/specs/README.md):
EKU messages enter every hash with their 4-byte handshake header; key_exchange
values are compared byte-wise (a prefix is lower); transcript_hash_N is used
directly as the HKDF-Expand-Label context.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

from .constants import AlertDescription, HandshakeType, NamedGroup
from .crypto import key_schedule as ks
from .crypto.groups import KeyShare, get_group
from .crypto.suites import SuiteInfo
from .errors import ConfigurationError, LocalProtocolError, RemoteProtocolError
from .events import ExporterUpdated, KeyUpdateCompleted, KeyUpdateStarted
from .wire.buffer import Buffer, u8, u16, vec
from .wire.messages import encode_handshake

if TYPE_CHECKING:
    from .connection import Connection


@dataclass(frozen=True, slots=True)
class EKUProfile:
    """What differs between the three texts (specs README, "The three profiles")."""

    name: str
    derived_label: bytes
    client_traffic_label: bytes
    server_traffic_label: bytes
    exporter_label: bytes
    resumption_label: bytes
    chained_transcript: bool  # draft-13: transcript_hash_N+1 = Hash(th_N || Req || Resp)
    implemented: bool


PROFILES: dict[str, EKUProfile] = {
    "draft-13": EKUProfile(
        "draft-13", b"derived", b"c ap traffic", b"s ap traffic", b"exp master", b"res master",
        chained_transcript=True, implemented=True,
    ),
    "draft-2025-10": EKUProfile(
        "draft-2025-10", b"key derived", b"c ap traffic2", b"s ap traffic2", b"exp main2",
        b"res main2", chained_transcript=False, implemented=False,
    ),
    "draft-05": EKUProfile(
        "draft-05", b"key derived", b"c ap traffic2", b"s ap traffic2", b"exp master2",
        b"res master2", chained_transcript=False, implemented=False,
    ),
}
DEFAULT_PROFILE = "draft-13"


def get_profile(name: str) -> EKUProfile:
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown EKU profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None
    if not profile.implemented:
        raise ConfigurationError(f"EKU profile {name} is not implemented yet; use draft-13")
    return profile


class EKUType(IntEnum):
    """ExtendedKeyUpdateType (draft-13 §4)."""

    key_update_request = 0
    key_update_response = 1
    key_update_finish = 2


def encode_eku(eku_type: EKUType, group: int | None = None, key_exchange: bytes = b"") -> bytes:
    """An ExtendedKeyUpdate handshake message, header included (draft-13 §4)."""
    body = u8(eku_type)
    if eku_type != EKUType.key_update_finish:
        assert group is not None
        body += u16(group) + vec(2, key_exchange)
    return encode_handshake(HandshakeType.extended_key_update, body)


def decode_eku(body: bytes) -> tuple[EKUType, int, bytes]:
    buf = Buffer(body)
    raw_type = buf.read_uint8()
    try:
        eku_type = EKUType(raw_type)
    except ValueError:
        # draft-13 §4: an unexpected subtype is unexpected_message.
        raise RemoteProtocolError(
            f"unknown ExtendedKeyUpdate subtype {raw_type}", AlertDescription.unexpected_message
        ) from None
    group, key_exchange = 0, b""
    if eku_type != EKUType.key_update_finish:
        group = buf.read_uint16()
        key_exchange = buf.read_vector(2, 1)
    buf.expect_end("ExtendedKeyUpdate")
    return eku_type, group, key_exchange


class _Role(Enum):
    IDLE = "idle"
    WAIT_RESP = "wait_resp"  # initiator, request sent
    WAIT_FIN = "wait_fin"  # responder, response sent, send keys already new


class ExtendedKeyUpdate:
    """The EKU state of one connection: generation N's secrets and the exchange in flight.

    Holds key material; ``repr`` shows only the generation and state.
    """

    def __init__(
        self, conn: Connection, profile: EKUProfile, suite: SuiteInfo, group: int,
        main_secret: bytes, handshake_hash: bytes, exporter_secret: bytes,
        exporter_eku_secret: bytes,
    ) -> None:
        self.conn = conn
        self.profile = profile
        self.suite = suite
        self.group = get_group(group)
        self.generation = 0
        self.role = _Role.IDLE
        self._main_secret = main_secret
        # transcript_hash_0 covers ClientHello..client Finished (draft-13 §6).
        self._transcript_hash = handshake_hash
        self.exporter_secret = exporter_secret
        # Epoch-aware exporter: generation 0 uses "exporter eku" (draft-13 §9.1).
        self.epoch_exporters: dict[int, bytes] = {0: exporter_eku_secret}
        self.resumption_secret = b""
        self._next_exporter = b""
        self._share: KeyShare | None = None
        self._request = b""
        self._pending: tuple[bytes, bytes] | None = None  # responder's new (send, receive) secrets
        self._initiated_locally = False
        self._started_at = 0.0
        self.deferred_request: tuple[int, bytes, bytes] | None = None

    def __repr__(self) -> str:
        return f"<ExtendedKeyUpdate {self.profile.name} generation={self.generation} {self.role.value}>"

    @property
    def in_progress(self) -> bool:
        return self.role is not _Role.IDLE

    # ------------------------------------------------------------- initiator

    def start(self) -> None:
        if self.role is not _Role.IDLE:
            raise LocalProtocolError("an extended key update is already in progress")
        # A fresh ephemeral for every update, never reused (draft-13 §4).
        self._share = self.group.generate()
        self._request = encode_eku(EKUType.key_update_request, self.group.code, self._share.public)
        self.role = _Role.WAIT_RESP
        self._initiated_locally = True
        self._started_at = self.conn.configuration.now()
        self.conn.queue_handshake(self._request)
        self.conn.emit(KeyUpdateStarted(generation=self.generation + 1, initiator=self._side(local=True)))

    def _side(self, local: bool) -> str:
        return "client" if self.conn.is_client == local else "server"

    # --------------------------------------------------------------- receive

    def handle(self, body: bytes, raw: bytes) -> None:
        eku_type, group, key_exchange = decode_eku(body)
        if eku_type != EKUType.key_update_finish and group != self.group.code:
            raise RemoteProtocolError(
                f"ExtendedKeyUpdate key share for group {group}, not the negotiated one",
                AlertDescription.illegal_parameter,
            )
        if eku_type == EKUType.key_update_request:
            self._on_request(key_exchange, raw)
        elif eku_type == EKUType.key_update_response:
            self._on_response(key_exchange, raw)
        else:
            self._on_finish()

    def _on_request(self, key_exchange: bytes, raw: bytes) -> None:
        if self.role is _Role.WAIT_FIN:
            raise RemoteProtocolError(
                "new extended key update while one is in progress", AlertDescription.unexpected_message
            )
        if self.role is _Role.WAIT_RESP:
            # Crossed requests (draft-13 §5): the lower key_exchange is ignored;
            # equal ones are a protocol violation.
            assert self._share is not None
            ours = self._share.public
            if key_exchange == ours:
                raise RemoteProtocolError(
                    "crossed extended key update requests with equal key shares",
                    AlertDescription.unexpected_message,
                )
            if key_exchange < ours:
                return
            # The peer's request wins: abandon ours and answer theirs.
            self._share = None
            self.role = _Role.IDLE
        if not self.conn.eku_may_respond_now():
            # DoS limit (draft-13 §11.3): defer the response, don't refuse it.
            self.deferred_request = (self.group.code, key_exchange, raw)
            self.role = _Role.WAIT_FIN
            self._initiated_locally = False
            self.conn.emit(KeyUpdateStarted(generation=self.generation + 1, initiator=self._side(local=False)))
            return
        self._initiated_locally = False
        self._started_at = self.conn.configuration.now()
        self.conn.emit(KeyUpdateStarted(generation=self.generation + 1, initiator=self._side(local=False)))
        self._respond(key_exchange, raw)

    def respond_deferred(self) -> None:
        """Send a response that the rate limit held back."""
        if self.deferred_request is None:
            return
        _group, key_exchange, raw = self.deferred_request
        self.deferred_request = None
        self._started_at = self.conn.configuration.now()
        self._respond(key_exchange, raw)

    def _respond(self, key_exchange: bytes, raw_request: bytes) -> None:
        response_share, shared = self.group.respond(key_exchange)
        response = encode_eku(EKUType.key_update_response, self.group.code, response_share)
        client_secret, server_secret = self._derive(shared, raw_request, response)
        send, receive = (client_secret, server_secret) if self.conn.is_client else (server_secret, client_secret)
        # Steps 2-3: the response goes under the old keys, then our send keys change.
        self.conn.queue_handshake(response)
        self.conn.eku_switch_send(send)
        self._pending = (send, receive)
        self.role = _Role.WAIT_FIN

    def _on_response(self, key_exchange: bytes, raw: bytes) -> None:
        if self.role is not _Role.WAIT_RESP or self._share is None:
            raise RemoteProtocolError(
                "ExtendedKeyUpdate response without a request", AlertDescription.unexpected_message
            )
        shared = self._share.complete(key_exchange)
        self._share = None
        client_secret, server_secret = self._derive(shared, self._request, raw)
        send, receive = (client_secret, server_secret) if self.conn.is_client else (server_secret, client_secret)
        # Step 4: the responder already sends under the new keys.
        self.conn.eku_switch_receive(receive)
        # Step 5: finish under the old send keys, then switch.
        self.conn.queue_handshake(encode_eku(EKUType.key_update_finish))
        self.conn.eku_switch_send(send)
        self._complete()

    def _on_finish(self) -> None:
        if self.role is not _Role.WAIT_FIN or self._pending is None:
            raise RemoteProtocolError(
                "ExtendedKeyUpdate finish out of place", AlertDescription.unexpected_message
            )
        self.conn.eku_switch_receive(self._pending[1])
        self._pending = None
        self._complete()

    def _complete(self) -> None:
        self.role = _Role.IDLE
        self.generation += 1
        self.exporter_secret = self._next_exporter
        self._next_exporter = b""
        # Keep the previous generation's exporter too, for the peer that
        # switches a moment later (draft-13 §9.2).
        self.epoch_exporters = {
            self.generation - 1: self.epoch_exporters.get(self.generation - 1, b""),
            self.generation: self.exporter_secret,
        }
        elapsed = self.conn.configuration.now() - self._started_at
        self.conn.log_secret(f"EXPORTER_SECRET_{self.generation}", self.exporter_secret)
        self.conn.emit(KeyUpdateCompleted(
            generation=self.generation,
            initiator=self._side(local=self._initiated_locally),
            group=NamedGroup(self.group.code),
            seconds=max(elapsed, 0.0),
        ))
        self.conn.emit(ExporterUpdated(generation=self.generation))

    # ---------------------------------------------------------- derivation

    def _derive(self, shared: bytes, request: bytes, response: bytes) -> tuple[bytes, bytes]:
        """Generation N+1's secrets (draft-13 §6, Figure "Key Derivation Hierarchy")."""
        s, p = self.suite, self.profile
        salt = ks.derive_secret(s, self._main_secret, p.derived_label, ks.empty_hash(s))
        self._main_secret = ks.hkdf_extract(s, salt, shared)
        if p.chained_transcript:
            context = ks.transcript_digest(s, self._transcript_hash + request + response)
            self._transcript_hash = context
        else:
            context = ks.transcript_digest(s, request + response)
        client = ks.derive_secret(s, self._main_secret, p.client_traffic_label, context)
        server = ks.derive_secret(s, self._main_secret, p.server_traffic_label, context)
        # The new exporter is used once both sides switched (draft-13 §9.2).
        self._next_exporter = ks.derive_secret(s, self._main_secret, p.exporter_label, context)
        self.resumption_secret = ks.derive_secret(s, self._main_secret, p.resumption_label, context)
        n = self.generation + 1
        self.conn.log_secret(f"CLIENT_TRAFFIC_SECRET_{n}", client)
        self.conn.log_secret(f"SERVER_TRAFFIC_SECRET_{n}", server)
        return client, server
