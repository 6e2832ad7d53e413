"""MLS mode: the sans-I/O MLS-TLS connection (docs/mls-tls.md).

``MLSConnection`` has the command/event surface of ``connection.Connection``
where it applies: ``start_handshake``, ``receive_data``, ``data_to_send``,
``send``, ``close``, ``abort``, ``next_event``/``events``,
``get_timer``/``handle_timer``, ``update_keys`` (an MLS self-update commit),
``export_keying_material`` (MLS-Exporter), ``key_generation`` (the epoch),
``peer_certificates``.  Underneath:

- the two-party profile's state machine (``mls.two_party.TwoPartySession``)
  over longtls's MLS group (``mls.group_adapter``), whose ``SendMessage``
  actions become handshake records and whose ``InstallKey`` actions key
- a ``record.tls_layer.TLSRecordLayer``: TLS 1.3 records (RFC 8446 §5),
  sequence numbers from 0 for every key, padding per
  ``Configuration.record_padding``, the §5.5 usage limits.

The rules that are the channel's, not the state machine's:

- While our ConnectionUpdate waits for its EpochKeyUpdate we send no record
  (docs/mls-tls.md §7): application data and close_notify are held, in
  order, and go out under the new key.  A fatal alert goes at once.
- Updates start by themselves at 7/8 of the sending key's usage limit
  (docs/mls-tls.md §9) and per the rekey policy (``rekey_interval``,
  ``rekey_bytes``, ``rekey_records``); ``rekey_timeout`` bounds the wait for
  the EpochKeyUpdate (``KeyUpdateTimeoutError``).
- Closing (RFC 8446 §6.1: nothing is sent after close_notify): after our
  close_notify a ConnectionUpdate from the peer is ignored, since we could
  not answer it, and after the peer's close_notify our own pending update is
  abandoned (the peer will ignore it), so both sides keep the keys they have
  and the held data goes out under them.  Decision, docs/mls-tls.md §12.
- Every failure is one fatal alert and ``ConnectionClosed``: MLSError and
  DecodeError carry theirs (docs/mls-tls.md §10), never a traceback.
- Resumption (docs/mls-tls.md §8): ``resumption_state()`` hands the
  application an ``MLSResumptionState`` (in memory); a connection built with
  ``resume=`` sends the ResumptionRequest, one built with
  ``resumption_states=`` (a lookup by group_id) answers one.  The roles of
  the resumed connection are the resumption's, not the configuration's.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding

from .config import ClientAuth, Configuration
from .connection_core import ConnectionState, alert_level, check_update_timeout, failed, run_guarded
from .constants import (
    AlertDescription,
    AlertLevel,
    ContentType,
    HandshakeType,
    NamedGroup,
    SignatureScheme,
)
from .crypto.certificates import TrustStore, verify_chain
from .crypto.peer_policy import check_peer_access
from .errors import (
    ConfigurationError,
    HandshakeTimeoutError,
    KeyUpdateTimeoutError,
    LocalProtocolError,
    MLSError,
    ProtocolError,
    RemoteProtocolError,
    TLSError,
)
from .events import (
    ApplicationData,
    CloseNotifyReceived,
    ConnectionClosed,
    Direction,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    Side,
)
from .keylog import format_line, from_environment
from .mls.crypto import SUITES as MLS_SUITES
from .mls.crypto import CipherSuite as MLSCipherSuite
from .mls.crypto import suite as mls_suite
from .mls.group_adapter import MLSTLSCreator, MLSTLSGroup, MLSTLSJoiner, commit_framing
from .mls.messages import BasicCredential, Credential, X509Credential
from .mls.two_party import (
    Action,
    Established,
    InstallKey,
    PeerUpdateIgnored,
    ResumptionRequestIgnored,
    ResumptionState,
    Role,
    SendMessage,
    TwoPartySession,
    UpdateCompleted,
    UpdateDropped,
    record_suite,
)
from .record.tls_layer import TLSRecordLayer
from .wire.messages import HandshakeReassembler
from .wire.mls_tls import MLSTLSConnectionUpdate, decode_mls_tls_body, encode_mls_tls

__all__ = ["MLS_KEYLOG_LABELS", "MLSConnection", "MLSResumptionLookup", "MLSResumptionState", "parse_mls_suite"]

logger = logging.getLogger("longtls")

#: Key log labels of an epoch's record secrets (docs/mls-tls.md §12): the NSS
#: names of TLS 1.3's application traffic secrets, suffixed by the MLS epoch.
MLS_KEYLOG_LABELS = ("CLIENT_TRAFFIC_SECRET_", "SERVER_TRAFFIC_SECRET_")

_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)
_HANDSHAKE = int(ContentType.HANDSHAKE)
_ALERT = int(ContentType.ALERT)

#: The key exchange of each MLS suite, for HandshakeComplete.group.
_SUITE_KEM = {
    MLSCipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519: NamedGroup.x25519,
    MLSCipherSuite.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519: NamedGroup.x25519,
    MLSCipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519: NamedGroup.X25519MLKEM768,
}


def parse_mls_suite(text: str) -> int:
    """An MLS cipher suite number in decimal or 0x hex (``1``, ``3``, ``0xF0A1``),
    one longtls implements; ValueError otherwise."""
    value = int(text, 0)
    if value not in MLS_SUITES:
        known = ", ".join(f"{int(s)} (0x{int(s):04X})" for s in MLS_SUITES)
        raise ValueError(f"MLS cipher suite {text!r} is not implemented (choose from {known})")
    return value


class _ReadPolicy:
    """The record layer's ReadPolicy for a channel keyed by MLS: no TLS handshake.

    ``complete`` stays False on the responder until the first protected
    record arrives, so that a plaintext alert the initiator sends in answer
    to a ServerHello it refuses (it has no key) is still read (docs §6).
    """

    __slots__ = ("complete",)

    application_data_allowed = True
    change_cipher_spec_allowed = False

    def __init__(self) -> None:
        self.complete = False

    def skip_early_data_record(self, length: int) -> bool:
        return False

    def skip_undecryptable(self, length: int, records_opened: int) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class MLSResumptionState:
    """What an MLS-TLS party keeps to resume the connection later (docs/mls-tls.md §8).

    From ``MLSConnection.resumption_state()``; given back as
    ``MLSConnection(configuration, resume=state)`` (this side sends the
    ResumptionRequest) or returned by a ``resumption_states`` lookup (this
    side answers one).  An in-memory object, not serialisable: it holds the
    MLS group's private keys and epoch secrets (never in its repr), so keep
    it as you would a private key.  Only the newest state of a party
    resumes; the peer refuses an older one with ``unknown_psk_identity``.
    """

    session: ResumptionState = field(repr=False)
    #: The peer's validated chain and whether it was authenticated, as at the
    #: first connection (the identity never changes, issue 13).
    peer_certificates: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    peer_authenticated: bool = False

    @property
    def group_id(self) -> bytes:
        """The key a responder stores the state under (a ResumptionRequest names it)."""
        return self.session.group.group_id

    @property
    def epoch(self) -> int:
        return self.session.group.epoch

    @property
    def original_role(self) -> Role:
        return self.session.original_role

    def __repr__(self) -> str:
        pending = self.session.group.pending_commit is not None
        return (f"<MLSResumptionState epoch={self.epoch} pending_commit={pending} "
                f"original_role={self.original_role.value}>")


#: A responder's stored states, by group_id: the state to resume or None.
MLSResumptionLookup = Callable[[bytes], MLSResumptionState | None]


def _identity(config: Configuration) -> tuple[Credential, bytes]:
    """Our MLS credential and signature private key (docs/mls-tls.md §12)."""
    key = config.private_key
    if key is None:
        private, _ = mls_suite(MLSCipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519).generate_signature_key_pair()
        return BasicCredential(config.mls_identity), private
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(
            "MLS mode signs with Ed25519 (the signature scheme of RFC 9420 suites 1, 3 and 0xF0A1): "
            "private_key must be an Ed25519 key"
        )
    chain = config.certificate_chain
    if not chain:
        return BasicCredential(config.mls_identity), key.private_bytes_raw()
    leaf_key = chain[0].public_key()
    if not isinstance(leaf_key, ed25519.Ed25519PublicKey) or (
        leaf_key.public_bytes_raw() != key.public_key().public_bytes_raw()
    ):
        raise ConfigurationError("the certificate's public key is not private_key's")
    return X509Credential.from_der(c.public_bytes(Encoding.DER) for c in chain), key.private_bytes_raw()


def _refuse_identity_change(old: Credential, new: Credential) -> None:
    """Issue 13: the peer may not change identity with a commit (docs/mls-tls.md §10: bad_certificate)."""
    raise MLSError("the peer's commit changes its credential", AlertDescription.bad_certificate)


#: The pinned peer signature keys of a configuration that pins none.
_NOTHING_PINNED: frozenset[bytes] = frozenset()


class MLSConnection:
    """One MLS-TLS connection, initiator (``is_client``) or responder, no I/O.

    ``resume``: resume from a stored state (docs/mls-tls.md §8): this side
    sends the ResumptionRequest at ``start_handshake`` and is the initiator,
    whatever its original role and ``configuration.is_client``.
    ``resumption_states`` (a responder): look up the state a
    ResumptionRequest names by its group_id; without it a ResumptionRequest
    is refused (``handshake_failure``).  ``is_client`` follows the role of
    the connection (a crossed resumption can make a resumer the responder).
    """

    _protocol = "MLS-TLS"

    def __init__(self, configuration: Configuration, *, resume: MLSResumptionState | None = None,
                 resumption_states: MLSResumptionLookup | None = None) -> None:
        self.configuration = configuration
        self.is_client = configuration.is_client or resume is not None
        if resumption_states is not None and self.is_client:
            raise ConfigurationError("resumption_states is for a responder (is_client=False, no resume)")
        self._resumption_states = resumption_states
        suites = tuple(configuration.mls_cipher_suites)
        if not suites or any(s not in MLS_SUITES for s in suites):
            raise ConfigurationError(f"mls_cipher_suites {suites!r}: give suites longtls implements (1, 3, 0xF0A1)")
        if configuration.mls_max_key_package_lifetime <= 0:
            raise ConfigurationError("mls_max_key_package_lifetime must be positive")
        self.state = ConnectionState.HANDSHAKING
        # A list: an empty deque costs 600 bytes per idle connection (issue 16).
        self._events: list[Event] = []
        self._keylog = configuration.keylog or from_environment()
        self._credential, signature_private_key = _identity(configuration)
        # Most configurations pin nothing: share one empty set rather than
        # make a 216-byte one per connection (issue 16).
        pinned = configuration.mls_peer_signature_keys
        check = _PeerCredentialCheck(
            self, mls_suite(suites[0]).signature_public_key(signature_private_key),
            frozenset(bytes(k) for k in pinned) if pinned else _NOTHING_PINNED,
        )
        self._peer_certificates: tuple[x509.Certificate, ...] = ()
        self._peer_authenticated = False
        alpn = [p.encode() for p in configuration.alpn_protocols]
        if resume is not None:
            self._session = TwoPartySession.resumer(resume.session)
            self._peer_certificates = resume.peer_certificates
            self._peer_authenticated = resume.peer_authenticated
        elif self.is_client:
            joiner = MLSTLSJoiner(suites[0], self._credential, signature_private_key,
                                  credential_check=check,
                                  identity_check=_refuse_identity_change, alpn_protocols=alpn)
            self._session = TwoPartySession.initiator(joiner)
        else:
            creator = MLSTLSCreator(self._credential, signature_private_key, allowed_suites=suites,
                                    credential_check=check,
                                    identity_check=_refuse_identity_change, alpn_protocols=alpn,
                                    max_lifetime=configuration.mls_max_key_package_lifetime)
            self._session = TwoPartySession.responder(
                creator, None if resumption_states is None else _weak_method(self._lookup_resumption))
        self._policy = _ReadPolicy()
        self._records = TLSRecordLayer(self._policy, is_client=self.is_client, padding=configuration.record_padding)
        self._reassembler = HandshakeReassembler(configuration.max_handshake_message_size)
        #: What waits for our update to complete: (content type, data) in order (docs §7).
        self._held: list[tuple[int, bytes]] = []
        self._started_at: float | None = None
        self._close_sent = False
        self._close_received = False
        self._empty_records = 0
        self._warning_alerts = 0
        self._update_started_at: float | None = None
        self._update_timeout: float | None = None
        self._bytes_since_rekey = 0
        self._last_rekey_at = 0.0
        #: The key log's "client random" (docs §12): SHA-256 of the group_id.
        self._keylog_random = b""
        self.handshake_event: HandshakeComplete | None = None

    def __repr__(self) -> str:
        role = "initiator" if self.is_client else "responder"
        return f"<MLSConnection {role} {self.state.value} epoch={self._session.epoch}>"

    # ------------------------------------------------------------------ API

    def start_handshake(self) -> None:
        """Initiator: queue the ClientHello (profile §4).  A responder waits."""
        if not self.is_client:
            raise LocalProtocolError("only the initiator (client) starts MLS-TLS")
        self._started_at = self.configuration.now()
        self._guard(lambda: self._apply(self._session.start()))

    def connection_made(self) -> None:
        """The transport is open: the handshake timeout runs from now."""
        if self._started_at is None:
            self._started_at = self.configuration.now()

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; a protocol error queues the fatal alert, a
        ``ConnectionClosed`` event, and raises RemoteProtocolError."""
        if self.state is ConnectionState.CLOSED:
            return
        if self._started_at is None:
            self._started_at = self.configuration.now()
        self._records.feed(data)
        self._guard(self._process_records)

    def data_to_send(self) -> bytes:
        return self._records.data_to_send()

    def send(self, data: bytes) -> None:
        """Queue application data (held while our update waits, docs §7)."""
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError(f"cannot send application data while {self.state.value}")
        if self._close_sent:
            raise LocalProtocolError("cannot send after close()")
        if not data:
            return
        self._guard(lambda: self._send(bytes(data)))

    def update_keys(self, timeout: float | None = None) -> None:
        """Start an MLS self-update: a ConnectionUpdate (profile §5).

        ``KeyUpdateCompleted(kind="mls")`` follows once the peer's
        EpochKeyUpdate arrived; within ``timeout`` seconds (None:
        ``Configuration.rekey_timeout``), else ``handle_timer`` ends the
        connection with ``KeyUpdateTimeoutError``.  LocalProtocolError while
        an update of ours is under way.
        """
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("an MLS update is only possible once the channel is established")
        if self._close_sent or self._close_received:
            raise LocalProtocolError("no MLS update after close_notify (RFC 8446 §6.1)")
        check_update_timeout(timeout)
        if not self._session.may_start_update:
            raise LocalProtocolError("an MLS update is already waiting for its EpochKeyUpdate (profile §5)")
        self._guard(lambda: self._start_update(timeout))

    def resumption_state(self) -> MLSResumptionState | None:
        """What to keep to resume this connection later (docs/mls-tls.md §8).

        Take it once the connection has ended (closed, failed, or its
        transport lost): the group at the last epoch this side switched to,
        with its pending commit if an update of ours (or this side's
        resumption) was waiting for an answer.  A snapshot taken while the
        connection goes on is outdated by the next epoch change.  None
        before an MLS group exists (a fresh connection before its keys).
        """
        state = self._session.resumption_state()
        if state is None:
            return None
        return MLSResumptionState(state, self._peer_certificates, self._peer_authenticated)

    def _lookup_resumption(self, commit: bytes) -> ResumptionState | None:
        assert self._resumption_states is not None
        group_id, _ = commit_framing(commit)  # DecodeError: decode_error
        found = self._resumption_states(group_id)
        if found is None:
            return None
        self._peer_certificates = found.peer_certificates
        self._peer_authenticated = found.peer_authenticated
        return found.session

    @property
    def update_in_progress(self) -> bool:
        """Our ConnectionUpdate waits for its EpochKeyUpdate."""
        return self._session.waiting_for is not None

    def close(self) -> None:
        """Send close_notify (after any data held for an update under way)."""
        if self.state is ConnectionState.CLOSED or self._close_sent:
            return
        self._close_sent = True
        if self.state is ConnectionState.CONNECTED and not self._session.may_send_records:
            self._held.append((_ALERT, bytes((AlertLevel.WARNING, AlertDescription.close_notify))))
            return
        self._send_alert(AlertDescription.close_notify)
        if self._close_received or self.state is ConnectionState.HANDSHAKING:
            self._finish(None, by_peer=False, reason="closed")

    def abort(self, alert: AlertDescription, reason: str = "aborted by the application") -> None:
        if self.state is ConnectionState.CLOSED:
            return
        self._fail(ProtocolError(reason, alert))

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    def events(self) -> list[Event]:
        evs = self._events
        self._events = []
        return evs

    @property
    def is_closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    @property
    def handshake_complete(self) -> bool:
        return self.handshake_event is not None

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @property
    def close_received(self) -> bool:
        return self._close_received

    def export_keying_material(self, label: str | bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(label, context, length) of the current epoch (RFC 9420 §8.5)."""
        group = self._session.group
        if group is None or self.handshake_event is None:
            raise LocalProtocolError("exporters are available once the channel is established")
        return group.export(label.encode() if isinstance(label, str) else label, context, length)

    @property
    def epoch(self) -> int:
        """The MLS epoch whose keys both directions use (0 before the channel exists)."""
        return self._session.epoch or 0

    @property
    def key_generation(self) -> int:
        """The MLS epoch (``Connection.key_generation``'s counterpart)."""
        return self.epoch

    @property
    def mls_cipher_suite(self) -> int | None:
        group = self._session.group
        return None if group is None else group.cipher_suite

    @property
    def group(self) -> MLSTLSGroup | None:
        """The MLS group behind the channel (an ``MLSTLSGroup``), once established."""
        group = self._session.group
        return group if isinstance(group, MLSTLSGroup) else None

    @property
    def peer_credential(self) -> Credential | None:
        group = self.group
        return None if group is None else group.peer_leaf.credential

    @property
    def peer_signature_key(self) -> bytes | None:
        group = self.group
        return None if group is None else group.peer_leaf.signature_key

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        """The peer's validated X.509 chain (empty for a basic credential)."""
        return self._peer_certificates

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The handshake timeout, the wait for our EpochKeyUpdate, the rekey interval."""
        deadlines = []
        timeout = self.configuration.handshake_timeout
        if self.state is ConnectionState.HANDSHAKING and timeout is not None and self._started_at is not None:
            deadlines.append(self._started_at + timeout)
        update = self._update_deadline()
        if update is not None:
            deadlines.append(update)
        rekey = self._rekey_due_at()
        if rekey is not None:
            deadlines.append(rekey)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float | None = None) -> None:
        current = self.configuration.now() if now is None else now
        timeout = self.configuration.handshake_timeout
        if (self.state is ConnectionState.HANDSHAKING and timeout is not None and self._started_at is not None
                and current >= self._started_at + timeout):
            self._send_alert(AlertDescription.user_canceled)
            raise failed(self._fail, HandshakeTimeoutError(timeout))
        update = self._update_deadline()
        if update is not None and current >= update:
            assert self._update_timeout is not None
            self._send_alert(AlertDescription.user_canceled)
            raise failed(self._fail, KeyUpdateTimeoutError("mls", self._update_timeout))
        rekey = self._rekey_due_at()
        if rekey is not None and current >= rekey:
            self._guard(lambda: self._start_update(None))

    def _update_deadline(self) -> float | None:
        if (self.state is not ConnectionState.CONNECTED or self._update_started_at is None
                or self._update_timeout is None):
            return None
        return self._update_started_at + self._update_timeout

    def _rekey_possible(self) -> bool:
        return (self.state is ConnectionState.CONNECTED and not self._close_sent and not self._close_received
                and self._session.may_start_update)

    def _rekey_due_at(self) -> float | None:
        interval = self.configuration.rekey_interval
        if interval is None or not self._rekey_possible():
            return None
        return self._last_rekey_at + interval

    # -------------------------------------------------------------- internals

    def _send(self, data: bytes) -> None:
        if not self._session.may_send_records:
            self._held.append((_APPLICATION_DATA, data))
            return
        records = self._records
        write = records.write
        assert write is not None
        if write.near_limit and self._rekey_possible():
            # docs/mls-tls.md §9 (RFC 8446 §5.5): replace the key at 7/8 of its
            # limit; the data waits for the new key.
            self._start_update(None)
            self._held.append((_APPLICATION_DATA, data))
            return
        records.send(ContentType.APPLICATION_DATA, data)  # UsageLimitError past the limit
        self._bytes_since_rekey += len(data)
        cfg = self.configuration
        if ((cfg.rekey_bytes is not None and self._bytes_since_rekey >= cfg.rekey_bytes)
                or (cfg.rekey_records is not None and write.sequence_number >= cfg.rekey_records)) \
                and self._rekey_possible():
            self._start_update(None)

    def _start_update(self, timeout: float | None) -> None:
        self._apply(self._session.start_update())
        self._update_started_at = self.configuration.now()
        self._update_timeout = self.configuration.rekey_timeout if timeout is None else timeout
        # Count from the start, so a slow peer does not cause a storm of updates.
        self._rekeyed()

    def _rekeyed(self) -> None:
        self._bytes_since_rekey = 0
        self._last_rekey_at = self.configuration.now()

    def _process_records(self) -> None:
        records = self._records
        while self.state is not ConnectionState.CLOSED:
            record = records.next_record()
            if record is None:
                return
            if records.read is not None:
                self._policy.complete = True  # a protected record: alerts are protected from now on
            content_type, content = record
            if content_type != _HANDSHAKE and self._reassembler.has_partial():
                raise RemoteProtocolError("record interleaved with a fragmented handshake message",
                                          AlertDescription.unexpected_message)
            if content_type == _APPLICATION_DATA:
                self._on_application_data(content)
            elif content_type == _HANDSHAKE:
                self._on_handshake(content)
            elif content_type == _ALERT:
                if len(content) != 2:
                    raise RemoteProtocolError("alert record is not two bytes", AlertDescription.decode_error)
                self._alert_received(content[0], content[1])
            else:
                raise RemoteProtocolError(f"unknown record content type {content_type}",
                                          AlertDescription.unexpected_message)

    def _on_application_data(self, content: bytes) -> None:
        # The record layer refuses unprotected application data (docs §6): a
        # record here was opened under an installed key.
        if self._close_received:
            return  # RFC 8446 §6.1: ignored after close_notify
        if not content:
            self._empty_records += 1
            if self._empty_records > self.configuration.max_empty_records:
                raise RemoteProtocolError("too many empty records", AlertDescription.unexpected_message)
            return
        self._empty_records = 0
        self._events.append(ApplicationData(content))

    def _on_handshake(self, content: bytes) -> None:
        self._reassembler.feed(content)
        while self.state is not ConnectionState.CLOSED:
            message = self._reassembler.pop()
            if message is None:
                return
            msg_type, body, _ = message
            if msg_type != HandshakeType.mls_tls:
                # docs/mls-tls.md §2: e.g. a TLS ClientHello sent to an MLS-TLS responder.
                raise RemoteProtocolError(f"handshake message of type {msg_type} on an MLS-TLS connection",
                                          AlertDescription.unexpected_message)
            decoded = decode_mls_tls_body(body)
            if isinstance(decoded, MLSTLSConnectionUpdate) and self._close_sent:
                # We cannot answer after our close_notify (RFC 8446 §6.1); the
                # peer abandons its update when our close_notify arrives, and
                # our receive key stays (module doc).
                logger.debug("MLS-TLS: ConnectionUpdate after our close_notify ignored")
                continue
            self._apply(self._session.receive(decoded))

    def _apply(self, actions: list[Action]) -> None:
        """Carry out the state machine's actions, in order."""
        for action in actions:
            if isinstance(action, SendMessage):
                self._records.send(ContentType.HANDSHAKE, encode_mls_tls(action.message))
            elif isinstance(action, InstallKey):
                self._install(action)
            elif isinstance(action, Established):
                self._established(action.epoch)
            elif isinstance(action, UpdateCompleted):
                self._update_completed(action)
            elif isinstance(action, UpdateDropped):
                logger.debug("MLS-TLS: our update to epoch %d lost a collision", action.epoch)
            elif isinstance(action, PeerUpdateIgnored):
                logger.debug("MLS-TLS: the peer's update crossed ours (to epoch %d) and was ignored", action.epoch)
            elif isinstance(action, ResumptionRequestIgnored):
                logger.debug("MLS-TLS: the peer's ResumptionRequest crossed ours and was dropped")
        if self._session.waiting_for is None:
            self._update_started_at = None
            if self._held:
                # Our update completed, or lost a collision (UpdateDropped).
                self._release_held()

    def _install(self, action: InstallKey) -> None:
        group = self._session.group
        assert group is not None
        suite = record_suite(group.cipher_suite)
        records = self._records
        if not self._keylog_random and isinstance(group, MLSTLSGroup):
            self._keylog_random = hashlib.sha256(group.group.group_id).digest()
        # The roles are the session's: a resumption decides them (docs §8).
        self.is_client = self._session.role is Role.INITIATOR
        ours_is_client = self.is_client
        if action.direction is Direction.send:
            records.set_write_secret(suite, action.traffic_secret)
            records.write_secret = b""  # docs §5: no copy of the secret once the keys are derived
            self._log_secret(ours_is_client, action.epoch, action.traffic_secret)
        else:
            # RFC 8446 §5.1: a handshake message must not span a key change,
            # and the message that switches the key ends its record.
            if self._reassembler.has_partial() or self._reassembler.has_complete():
                raise RemoteProtocolError("handshake message spans a key change", AlertDescription.unexpected_message)
            records.set_read_secret(suite, action.traffic_secret)
            records.read_secret = b""
            self._log_secret(not ours_is_client, action.epoch, action.traffic_secret)

    def _log_secret(self, client: bool, epoch: int, secret: bytes) -> None:
        if self._keylog is not None:
            label = MLS_KEYLOG_LABELS[0 if client else 1] + str(epoch)
            self._keylog(format_line(label, self._keylog_random, secret))

    def _established(self, epoch: int) -> None:
        group = self.group
        assert group is not None
        self.state = ConnectionState.CONNECTED
        self._rekeyed()
        suite_number = group.cipher_suite
        event = HandshakeComplete(
            version="MLS-TLS",
            cipher_suite=record_suite(suite_number).suite,
            group=_SUITE_KEM[MLSCipherSuite(suite_number)],
            signature_scheme=SignatureScheme.ed25519,
            alpn_protocol=None if group.alpn is None else group.alpn.decode(errors="replace"),
            peer_certificates=self._peer_certificates,
            resumed=self._session.resumed,
            server_name=self.configuration.server_name,
            client_authenticated=not self.is_client and self._peer_authenticated,
            local_signature_scheme=SignatureScheme.ed25519,
            mode="mls",
            mls_cipher_suite=suite_number,
            epoch=epoch,
        )
        self.handshake_event = event
        self._events.append(event)

    def _update_completed(self, action: UpdateCompleted) -> None:
        started = self._update_started_at if action.by_us else None
        now = self.configuration.now()
        group = self.group
        assert group is not None
        ours = Side.client if self.is_client else Side.server
        theirs = Side.server if self.is_client else Side.client
        self._events.append(KeyUpdateCompleted(
            generation=action.epoch, initiator=ours if action.by_us else theirs,
            group=_SUITE_KEM[MLSCipherSuite(group.cipher_suite)],
            seconds=0.0 if started is None else max(0.0, now - started), kind="mls", epoch=action.epoch,
        ))
        self._rekeyed()

    def _release_held(self) -> None:
        """Our update completed (or was abandoned): what waited goes out, in order."""
        held, self._held = self._held, []
        for content_type, data in held:
            if self.state is ConnectionState.CLOSED:
                return
            if content_type == _ALERT:
                self._send_alert(AlertDescription.close_notify)
                if self._close_received:
                    self._finish(None, by_peer=False, reason="closed")
            elif self._session.may_send_records:
                self._send(data)
            else:  # a policy update started again meanwhile: keep the order
                self._held.append((content_type, data))

    def _peer_verified(self, chain: tuple[x509.Certificate, ...] | None) -> None:
        """What ``_PeerCredentialCheck`` established about the peer: its
        validated chain (None: a pinned key) authenticates it."""
        if chain is not None:
            self._peer_certificates = chain
        self._peer_authenticated = True

    def _alert_received(self, level: int, description: int) -> None:
        if description == AlertDescription.close_notify:
            self._close_received = True
            self._events.append(CloseNotifyReceived())
            if self._session.waiting_for is not None:
                # The peer sends nothing more, so our update cannot complete:
                # abandon it; the peer ignores it (module doc).
                self._session.abandon_update()
                self._update_started_at = None
                self._release_held()
            if self.state is not ConnectionState.CLOSED and (
                self._close_sent or self.state is ConnectionState.HANDSHAKING
            ):
                self._finish(None, by_peer=True, reason="closed by peer")
            return
        if description == AlertDescription.user_canceled and level == AlertLevel.WARNING:
            self._warning_alerts += 1
            if self._warning_alerts > self.configuration.max_warning_alerts:
                raise RemoteProtocolError("too many warning alerts", AlertDescription.unexpected_message)
            return
        try:
            desc = AlertDescription(description)
            name = desc.name
        except ValueError:
            desc = AlertDescription.internal_error
            name = f"unknown({description})"
        reason = f"peer sent alert {name}"
        if (self.is_client and self.state is ConnectionState.HANDSHAKING and self._records.read is None
                and desc is AlertDescription.unexpected_message):
            # docs/mls-tls.md §2: a TLS-only server answers our ClientHello so.
            reason += " in answer to the MLS-TLS ClientHello (the peer may not speak MLS-TLS)"
        self._finish(desc, by_peer=True, reason=reason)

    def _guard(self, action: Callable[[], None]) -> None:
        """Run ``action``; any failure is one fatal alert and ConnectionClosed (docs §10)."""
        run_guarded(action, self._fail, "MLS-TLS")

    def _send_alert(self, description: AlertDescription) -> None:
        self._records.send_alert(alert_level(description), description)

    def _fail(self, exc: ProtocolError) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        logger.debug("MLS-TLS connection failed: %s", exc)
        self._held.clear()
        try:
            self._send_alert(exc.alert)
        except TLSError:
            pass
        self._finish(exc.alert, by_peer=False, reason=str(exc.args[0]))

    def _finish(self, alert: AlertDescription | None, by_peer: bool, reason: str) -> None:
        self.state = ConnectionState.CLOSED
        self._records.drop_keys()
        self._held.clear()
        self._events.append(ConnectionClosed(alert=alert, by_peer=by_peer, reason=reason))


class _PeerCredentialCheck:
    """The AS of RFC 9420 §5.3.1 for the peer's credential (docs §12), as one
    connection's Configuration and role judge it.

    Pinned signature keys are accepted as they are; an X.509 chain is
    validated against the trust store (the responder's with the configured
    server_name) and must certify the leaf's signature key; a credential that
    is neither is accepted only when this side does not authenticate the
    peer (initiator: ``verify_peer`` False; responder: ``client_auth`` NONE).

    The MLS group keeps it across epochs and in resumption states: a stored
    group brings the first connection's trust settings (docs/mls-tls.md §8).
    It holds its connection weakly, only to record there what it verified: a
    bound method of the connection in the group would make every MLS
    connection a reference cycle, alive until the cyclic collector runs, and
    for as long as a resumption state taken from it (issue 16, freed on close).
    """

    __slots__ = ("_configuration", "_is_client", "_own_signature_key", "_pinned", "_connection")

    def __init__(self, connection: MLSConnection, own_signature_key: bytes, pinned: frozenset[bytes]) -> None:
        self._configuration = connection.configuration
        self._is_client = connection.is_client
        self._own_signature_key = own_signature_key
        self._pinned = pinned
        self._connection = weakref.ref(connection)

    def __call__(self, credential: Credential, signature_key: bytes) -> None:
        if signature_key == self._own_signature_key:
            return  # our own leaf, in the tree the Welcome carries
        if signature_key in self._pinned:
            self._verified(None)
            return
        cfg, is_client = self._configuration, self._is_client
        required = cfg.verify_peer if is_client else cfg.client_auth is ClientAuth.REQUIRED
        verify = required or (not is_client and cfg.client_auth is ClientAuth.OPTIONAL)
        if isinstance(credential, X509Credential) and verify:
            try:
                chain = [x509.load_der_x509_certificate(c.cert_data) for c in credential.certificates]
            except ValueError:
                raise MLSError("the peer's X.509 credential has a malformed certificate",
                               AlertDescription.bad_certificate) from None
            path = verify_chain(chain, cfg.trust_store or _system_store(),
                                server_name=cfg.server_name if is_client else None,
                                is_server_cert=is_client, now=_utc(cfg.now()))
            if cfg.checks_peer_access:  # allow-list and CRLs (docs/access-control.md)
                check_peer_access(path, allow=cfg.peer_allow, crls=cfg.crls, now=_utc(cfg.now()),
                                  is_server_cert=is_client)
            leaf_key = chain[0].public_key()
            if not isinstance(leaf_key, ed25519.Ed25519PublicKey) or leaf_key.public_bytes_raw() != signature_key:
                raise MLSError("the peer's certificate does not certify its MLS signature key",
                               AlertDescription.bad_certificate)
            self._verified(tuple(chain))
            return
        if required:
            raise MLSError("the peer's MLS credential is neither a valid X.509 chain nor a pinned key",
                           AlertDescription.bad_certificate)

    def _verified(self, chain: tuple[x509.Certificate, ...] | None) -> None:
        connection = self._connection()
        if connection is not None:  # else a resumed connection took them from the state
            connection._peer_verified(chain)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _weak_method(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """``method``, a bound method of an MLSConnection, without a strong
    reference to the connection: its MLS session holds it, and a bound
    method there would make the connection a reference cycle (issue 16,
    freed on close)."""
    ref = weakref.WeakMethod(method)

    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        bound = ref()
        if bound is None:
            raise LocalProtocolError("the MLS-TLS connection is gone")
        return bound(*args, **kwargs)

    return call


@functools.cache
def _system_store() -> TrustStore:
    """The system's roots, parsed once per process."""
    return TrustStore.system()


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
