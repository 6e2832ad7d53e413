"""The sans-I/O TLS 1.3 connection.

Bytes in (``receive_data``), bytes out (``data_to_send``), events out
(``next_event``), commands in (``send``, ``update_keys``, ``close`` ...).  The
connection never touches a socket, a clock (time comes from the
configuration's ``now``) or a thread.

Layering: the connection keeps the public API, the event queue, alerts and
closing, and dispatch.  Records (framing, protection, padding, size and usage
limits) are the record layer's (``record.tls_layer.TLSRecordLayer``); the
handshake is the client or server engine's (``handshake.client``,
``handshake.server``), which sees this class only as a
``handshake.host.HandshakeHost``; after the handshake each post-handshake
protocol (KeyUpdate, Extended Key Update, client authentication) handles its
own messages, routed and kept apart by ``handshake.post_handshake.PostHandshakeArbiter``.
"""

from __future__ import annotations

import logging
from collections import deque
from enum import Enum

from .config import Configuration
from .constants import (
    AlertDescription,
    AlertLevel,
    ContentType,
    KeyUpdateRequest,
)
from .crypto import key_schedule as ks
from .crypto.suites import SuiteInfo
from .errors import (
    HandshakeTimeoutError,
    KeyUpdateTimeoutError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TLSError,
    UsageLimitError,
)
from .events import (
    ApplicationData,
    CloseNotifyReceived,
    ConnectionClosed,
    Event,
)
from .handshake.client import ClientHandshake
from .handshake.common import HandshakeEngine
from .handshake.eku import EKUAdmission, ExtendedKeyUpdate
from .handshake.eku_profiles import PROFILES
from .handshake.key_update import KeyUpdateProtocol
from .handshake.post_auth import client_authentication
from .handshake.post_handshake import PostHandshakeArbiter
from .handshake.rekey import RekeyPolicy
from .handshake.server import ServerHandshake
from .keylog import format_line, from_environment
from .record.tls import RecordProtection
from .record.tls_layer import TLSRecordLayer
from .wire.messages import HandshakeReassembler

logger = logging.getLogger("longtls")

_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)  # a plain int: compared per record


def check_update_timeout(timeout: float | None) -> None:
    """A key update's ``timeout`` argument: None, or a positive number of seconds."""
    if timeout is not None and not timeout > 0:
        raise LocalProtocolError("a key update timeout must be positive (or None for rekey_timeout)")


class ConnectionState(Enum):
    HANDSHAKING = "handshaking"
    CONNECTED = "connected"
    CLOSED = "closed"


class Connection:
    """One TLS 1.3 connection, client or server, with no I/O of its own."""

    def __init__(self, configuration: Configuration) -> None:
        configuration.validate()
        self.configuration = configuration
        self.is_client = configuration.is_client
        self.state = ConnectionState.HANDSHAKING
        self._events: deque[Event] = deque()
        self._reassembler = HandshakeReassembler(configuration.max_handshake_message_size)
        self._pending_handshake = bytearray()
        self._keylog = configuration.keylog or from_environment()
        self.client_random = b""
        self._empty_records = 0
        self._handshake_records = 0
        self._warning_alerts = 0
        #: The classic KeyUpdate (handshake/key_update.py), once connected.
        self.key_update: KeyUpdateProtocol | None = None
        self._started_at: float | None = None
        self._close_sent = False
        self._close_received = False
        self.eku: ExtendedKeyUpdate | None = None
        engine = ClientHandshake(self, configuration) if self.is_client else ServerHandshake(self, configuration)
        self.handshake: HandshakeEngine = engine
        #: Routes post-handshake messages and decides what may run together.
        self.post_handshake = PostHandshakeArbiter(self.handshake, configuration, client_authentication(engine))
        #: The updates this side starts by itself (usage limits, Configuration.rekey_*).
        self._rekey = RekeyPolicy(self.post_handshake, configuration)
        #: Framing, protection, padding and record limits (record.tls_layer).
        self._records = TLSRecordLayer(
            self.handshake, is_client=self.is_client, padding=configuration.record_padding
        )

    def __repr__(self) -> str:
        role = "client" if self.is_client else "server"
        return f"<Connection {role} {self.state.value}>"

    # ------------------------------------------------------------------ API

    def start_handshake(self) -> None:
        """Client: queue the ClientHello.  A server waits for the peer instead."""
        if not self.is_client:
            raise LocalProtocolError("only a client starts the handshake")
        self._started_at = self.configuration.now()
        self._guard(self.handshake.start)

    def connection_made(self) -> None:
        """The transport is open: the handshake timeout runs from now.

        Without this a server's clock starts with the first byte received, and
        a peer that opens a connection and sends nothing is never timed out.
        """
        if self._started_at is None:
            self._started_at = self.configuration.now()

    def receive_data(self, data: bytes) -> None:
        """Process bytes from the peer.

        On a protocol error the fatal alert is queued in ``data_to_send()``, a
        ``ConnectionClosed`` event is queued, and ``RemoteProtocolError`` is raised.
        """
        if self.state is ConnectionState.CLOSED:
            return
        if self._started_at is None:
            self._started_at = self.configuration.now()
        self._records.feed(data)
        self._guard(self._process_records)

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport (empties the buffer)."""
        self._flush_handshake()
        return self._records.data_to_send()

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """All pending events (empties the queue)."""
        evs = list(self._events)
        self._events.clear()
        return evs

    @property
    def handshake_complete(self) -> bool:
        return self.state is ConnectionState.CONNECTED or (
            self.state is ConnectionState.CLOSED and self.handshake.complete
        )

    @property
    def is_closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    def send(self, data: bytes) -> None:
        """Queue application data."""
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError(f"cannot send application data while {self.state.value}")
        if self._close_sent:
            raise LocalProtocolError("cannot send after close()")
        records = self._records
        write = records.write
        if write is not None and write.near_limit:
            # RFC 9846 §5.5: replace the key before its AEAD usage limit.
            self._rekey.before_usage_limit()
        records.send(ContentType.APPLICATION_DATA, data)
        write = records.write  # a key update may have replaced it
        if self._rekey.sent(len(data), write.sequence_number if write is not None else 0):
            self._rekey.start_update()

    def update_keys(self, request_peer_update: bool = True, timeout: float | None = None) -> None:
        """Send a KeyUpdate (RFC 9846 §4.6.3) and switch to the next sending key.

        With ``request_peer_update`` the peer must answer with its own KeyUpdate
        within ``timeout`` seconds (None: ``Configuration.rekey_timeout``;
        ``math.inf``: no limit), else ``handle_timer`` ends the connection with
        ``KeyUpdateTimeoutError``.  While an answer is still owed, a further
        update does not ask again (§4.6.3: "MUST NOT send another KeyUpdate with
        request_update set to update_requested").
        """
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("KeyUpdate is only possible once the handshake is complete")
        check_update_timeout(timeout)
        self._guard(lambda: self.post_handshake.check_key_update(local=True))
        request = (
            KeyUpdateRequest.update_requested if request_peer_update
            else KeyUpdateRequest.update_not_requested
        )
        assert self.key_update is not None
        self.key_update.send(request, timeout=timeout)

    def extended_key_update(self, timeout: float | None = None) -> None:
        """Start an Extended Key Update: a fresh key exchange that derives new
        traffic and exporter secrets (EKU draft-13).  ``KeyUpdateCompleted``
        follows once the peer answered; if it has not within ``timeout``
        seconds (None: ``Configuration.rekey_timeout``; ``math.inf``: no
        limit), ``handle_timer`` ends the connection with ``KeyUpdateTimeoutError``."""
        if self.state is not ConnectionState.CONNECTED or self.eku is None:
            raise LocalProtocolError("Extended Key Update was not negotiated on this connection")
        if self._close_sent:
            raise LocalProtocolError("cannot update keys after close()")
        if self._close_received:
            # RFC 9846 §6.1: the peer sends nothing after its close_notify.
            raise LocalProtocolError("the peer has closed its side and can no longer answer a key update")
        self.post_handshake.check_eku_may_start()
        check_update_timeout(timeout)
        eku = self.eku
        self._guard(lambda: eku.start(timeout))

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should be called next, or None.

        Timers: the handshake timeout, a deferred EKU response (rate limit),
        the rekey interval, and the peer's answer to a key update (rekey_timeout).
        """
        deadlines = []
        timeout = self.configuration.handshake_timeout
        if self.state is ConnectionState.HANDSHAKING and timeout is not None and self._started_at is not None:
            deadlines.append(self._started_at + timeout)
        eku_due = self.post_handshake.deferred_eku_due()
        if eku_due is not None:
            deadlines.append(eku_due)
        update_deadline = self._update_deadline()
        if update_deadline is not None:
            deadlines.append(update_deadline[0])
        rekey_due = self._rekey.interval_due()
        if rekey_due is not None and self._rekey_possible():
            deadlines.append(rekey_due)
        return min(deadlines) if deadlines else None

    def _rekey_possible(self) -> bool:
        """Whether the rekey policy could start an update now (else its timer waits
        for the update or the client authentication under way to finish)."""
        if self.state is not ConnectionState.CONNECTED or self._close_sent:
            return False
        if self.post_handshake.client_auth_in_progress:
            return False
        if self.eku is not None and self._close_received:
            return False  # an EKU needs the peer's answer; it sends nothing after close_notify
        return self.eku is None or not self.eku.in_progress

    def _update_deadline(self) -> tuple[float, str, float] | None:
        """The earliest time the peer must have answered a key update by:
        (deadline, "extended" or "standard", seconds allowed), or None.

        After a close_notify either way the peer owes us nothing more (§6.1),
        and our own close has its own timeout in the I/O layer.
        """
        if self.state is not ConnectionState.CONNECTED or self._close_sent or self._close_received:
            return None
        found: tuple[float, str, float] | None = None
        ku = self.key_update
        if ku is not None and ku.answer_owed and ku.deadline is not None:
            found = (ku.deadline, "standard", ku.timeout)
        eku = self.eku
        if eku is not None and eku.deadline is not None and (found is None or eku.deadline < found[0]):
            found = (eku.deadline, "extended", eku.timeout)
        return found

    def handle_timer(self, now: float | None = None) -> None:
        """Run what ``get_timer`` asked for, if its time has come."""
        current = self.configuration.now() if now is None else now
        timeout = self.configuration.handshake_timeout
        if (
            self.state is ConnectionState.HANDSHAKING and timeout is not None
            and self._started_at is not None and current >= self._started_at + timeout
        ):
            # No alert names a timeout; user_canceled is "canceled for some
            # reason unrelated to a protocol failure" and is followed by
            # close_notify (RFC 9846 §6.1).
            # Raised like KeyUpdateTimeoutError below, so that every caller (the
            # asyncio layer included) reports this one error.
            timed_out = HandshakeTimeoutError(timeout)
            self._send_alert(AlertDescription.user_canceled)
            self._fail(timed_out)
            raise timed_out
        update_deadline = self._update_deadline()
        if update_deadline is not None and current >= update_deadline[0]:
            # The same pair of alerts as the handshake timeout: user_canceled,
            # then close_notify (errors.KeyUpdateTimeoutError).
            error = KeyUpdateTimeoutError(update_deadline[1], update_deadline[2])
            self._send_alert(AlertDescription.user_canceled)
            self._fail(error)
            raise error
        eku_due = self.post_handshake.deferred_eku_due()
        if eku_due is not None and current >= eku_due:
            self._guard(self.post_handshake.respond_deferred_eku)
        rekey_due = self._rekey.interval_due()
        if rekey_due is not None and self._rekey_possible() and current >= rekey_due:
            self._guard(self._rekey.start_update)

    def export_epoch_keying_material(
        self, label: str | bytes, context: bytes, length: int, generation: int | None = None
    ) -> bytes:
        """EKU draft-13 §9: the epoch-aware exporter.

        Generation 0 uses the "exporter eku" secret, generation N the exporter
        secret of the N-th extended key update; the current and the previous
        generation are available.
        """
        if self.eku is None:
            raise LocalProtocolError("the epoch-aware exporter needs Extended Key Update")
        gen = self.eku.generation if generation is None else generation
        secret = self.eku.epoch_exporters.get(gen)
        if not secret:
            raise LocalProtocolError(f"exporter generation {gen} is no longer (or not yet) available")
        lab = label.encode() if isinstance(label, str) else label
        return ks.export_keying_material(self.eku.suite, secret, lab, context, length)

    @property
    def key_generation(self) -> int:
        """How many extended key updates completed on this connection."""
        return self.eku.generation if self.eku is not None else 0

    @property
    def key_update_answer_owed(self) -> bool:
        """Our KeyUpdate(update_requested) still awaits the peer's KeyUpdate."""
        return self.key_update is not None and self.key_update.answer_owed

    @property
    def send_key_generation(self) -> int:
        """How many times our sending key changed (KeyUpdate or EKU)."""
        return self._records.write_generation

    def close(self) -> None:
        """Send close_notify.  We may still receive until the peer closes too."""
        if self.state is ConnectionState.CLOSED or self._close_sent:
            return
        self._flush_handshake()
        self._send_alert(AlertDescription.close_notify)
        self._close_sent = True
        if self._close_received or not self.handshake.complete:
            self._finish(None, by_peer=False, reason="closed")

    def abort(self, alert: AlertDescription, reason: str = "aborted by the application") -> None:
        """End the connection at once with a fatal ``alert`` of the application's
        choosing (e.g. insufficient_security when the peer lacks a required feature)."""
        if self.state is ConnectionState.CLOSED:
            return
        self._fail(ProtocolError(reason, alert))

    def export_keying_material(self, label: str | bytes, context: bytes, length: int) -> bytes:
        """TLS-Exporter (RFC 9846 §7.5)."""
        if not self.handshake.complete:
            raise LocalProtocolError("exporters are available once the handshake is complete")
        lab = label.encode() if isinstance(label, str) else label
        if self.eku is not None and self.eku.generation > 0:
            # EKU draft-13 §9.2: after an update, the current generation's exporter.
            return ks.export_keying_material(self.eku.suite, self.eku.exporter_secret, lab, context, length)
        return self.handshake.export(lab, context, length)

    def request_client_authentication(self) -> None:
        """Server: ask for a client certificate after the handshake (RFC 9846 §4.6.2)."""
        if self.is_client or self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("only a connected server can request client authentication")
        self._guard(self.post_handshake.client_auth.request)

    # ------------------------------------------------------------ the hosts
    # What the protocols below see of the connection: the engines'
    # handshake.host.HandshakeHost, EKU's handshake.eku.EKUHost and KeyUpdate's
    # handshake.key_update.KeyUpdateHost (structural protocols: mypy checks them).

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def queue_handshake(self, message: bytes) -> None:
        """Queue one encoded handshake message (with header) under the current write key."""
        self._pending_handshake += message

    def compatibility_ccs(self) -> None:
        """The dummy change_cipher_spec of middlebox compatibility mode (RFC 9846 App. D.4)."""
        self._flush_handshake()
        self._records.send_change_cipher_spec()

    def set_write_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        self._flush_handshake()
        self._records.set_write_secret(suite, secret)

    def set_read_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        self._check_key_change()
        self._records.set_read_secret(suite, secret)

    def _check_key_change(self) -> None:
        # RFC 9846 §5.1: handshake messages must not span a change of keys,
        # and the message that announces the change ends its record.
        if self._reassembler.has_partial() or self._reassembler.has_complete():
            raise RemoteProtocolError(
                "handshake message spans a key change", AlertDescription.unexpected_message
            )

    def check_client_auth_may_start(self, requested_by_peer: bool) -> None:
        """EKU draft-13 §8.3: post-handshake authentication and EKU never overlap."""
        self.post_handshake.check_client_auth_may_start(requested_by_peer)

    @property
    def post_handshake_transcript_hash(self) -> bytes | None:
        """transcript_hash_N after a draft-13 extended key update (EKU draft-13 §8.1)."""
        eku = self.eku
        if eku is not None and eku.generation > 0 and eku.profile.chained_transcript:
            return eku.transcript_hash
        return None

    def log_secret(self, label: str, secret: bytes) -> None:
        if self._keylog is not None:
            self._keylog(format_line(label, self.client_random, secret))

    def handshake_done(self) -> None:
        self.state = ConnectionState.CONNECTED
        self._rekey.rekeyed()
        self._records.reset_generations()
        hs = self.handshake
        assert hs.suite is not None
        self.key_update = KeyUpdateProtocol(self, hs.suite)
        self.post_handshake.register_key_update(self.key_update)
        if hs.eku_negotiated:
            secrets, suite = hs.secrets, hs.suite
            group = hs.eku_group  # under psk_ke, not the handshake's (docs/external-psk.md)
            assert secrets is not None and suite is not None and group is not None
            # EKU draft-13 §9.1: the epoch-aware exporter's generation 0.
            exporter_eku = ks.eku_exporter_secret(suite, secrets.main_secret, secrets.server_finished_hash)
            assert hs.eku_profile is not None
            profile = PROFILES[hs.eku_profile]
            self.eku = ExtendedKeyUpdate(
                self, profile, suite, group, secrets.main_secret,
                secrets.client_finished_hash, secrets.exporter_secret,
                exporter_eku if profile.chained_transcript else secrets.exporter_secret,
            )
            self.post_handshake.register_eku(self.eku)

    # EKU hooks (handshake.eku.EKUHost): switch one direction to a new
    # generation's traffic secret.  TLS confirms a send switch at once.

    def request_send_switch(self, secret: bytes) -> None:
        assert self.eku is not None
        self._flush_handshake()
        self._records.next_write_generation(secret)
        self.eku.send_switch_done()

    def switch_receive(self, secret: bytes) -> None:
        self._check_key_change()
        self._records.next_read_generation(secret)

    def eku_admission(self) -> EKUAdmission:
        """Whether to answer a peer's update request now (the arbiter's pacing, EKU draft-13 §11.3, §8.3)."""
        return self.post_handshake.eku_admission()

    def eku_wait_seconds(self) -> float:
        return self.post_handshake.eku_wait_seconds()

    def post_handshake_auth_done(self) -> None:
        """Client authentication finished: answer an update it held back (draft-13 §8.3)."""
        self.handle_timer()

    def eku_completed(self) -> None:
        self.rekeyed()
        self.handshake.on_extended_key_update(self.eku)

    def send_ack(self) -> None:
        """EKUHost, DTLS only (RFC 9147 §7 ACK): TCP acknowledges; never called over TLS."""

    def acknowledged_implicitly(self, message: bytes) -> None:
        """EKUHost, DTLS only (RFC 9147 §7.2): TLS retransmits nothing; never called over TLS."""

    @property
    def resumption_secret(self) -> bytes:
        """The resumption secret of the current generation (EKU updates it)."""
        if self.eku is not None and self.eku.generation > 0:
            return self.eku.resumption_secret
        secrets = self.handshake.secrets
        return secrets.resumption_secret if secrets is not None else b""

    def set_peer_record_size_limit(self, limit: int) -> None:
        """The peer's record_size_limit; RFC 8449 §4 binds both ends once it is negotiated."""
        self._records.set_peer_record_size_limit(limit)

    @property
    def peer_record_size_limit(self) -> int:
        """Largest TLSInnerPlaintext the peer accepts (RFC 8449)."""
        return self._records.peer_record_size_limit

    def enforce_record_size_limit(self) -> None:
        """The peer has agreed to our record_size_limit: hold it to it."""
        self._records.receive_record_size_limit = self.configuration.record_size_limit

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @property
    def read_protection(self) -> RecordProtection | None:
        return self._records.read

    @property
    def current_read_secret(self) -> bytes:
        return self._records.read_secret

    @property
    def current_write_secret(self) -> bytes:
        return self._records.write_secret

    # KeyUpdate's host (handshake.key_update.KeyUpdateHost)

    @property
    def close_received(self) -> bool:
        return self._close_received

    @property
    def read_generation(self) -> int:
        return self._records.read_generation

    @property
    def write_generation(self) -> int:
        return self._records.write_generation

    @property
    def handshake_data_pending(self) -> bool:
        return self._reassembler.has_partial() or self._reassembler.has_complete()

    def advance_write_secret(self, secret: bytes) -> None:
        self._flush_handshake()
        self._records.next_write_generation(secret)

    def advance_read_secret(self, secret: bytes) -> None:
        self._check_key_change()
        self._records.next_read_generation(secret)

    def rekeyed(self) -> None:
        self._rekey.rekeyed()

    # -------------------------------------------------------------- internals

    def _guard(self, action: object) -> None:
        """Run ``action``; turn every failure into a fatal alert and one error type.

        A LocalProtocolError (the application asked for something not allowed
        now) leaves the connection as it was: it is raised before any state changes.
        """
        assert callable(action)
        try:
            action()
        except UsageLimitError as exc:
            # Our sending key is used up in the middle of protocol work: the
            # connection cannot go on (RFC 9846 §5.5), though the peer is not to blame.
            self._fail(exc)
            raise
        except LocalProtocolError:
            raise
        except ProtocolError as exc:
            self._fail(exc)
            raise
        except TLSError as exc:
            err = ProtocolError(str(exc.args[0]), exc.alert)
            self._fail(err)
            raise err from exc
        except Exception as exc:  # a bug must not escape as a stray exception
            logger.exception("internal error in TLS processing")
            err = ProtocolError(f"internal error: {type(exc).__name__}", AlertDescription.internal_error)
            self._fail(err)
            raise err from exc
        finally:
            self._flush_handshake()

    def _fail(self, exc: ProtocolError) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        logger.debug("connection failed: %s", exc)
        try:
            self._pending_handshake.clear()
            self._send_alert(exc.alert)
        except TLSError:
            pass
        self._finish(exc.alert, by_peer=False, reason=str(exc.args[0]))

    def _finish(self, alert: AlertDescription | None, by_peer: bool, reason: str) -> None:
        self.state = ConnectionState.CLOSED
        self._records.drop_keys()
        self._events.append(ConnectionClosed(alert=alert, by_peer=by_peer, reason=reason))

    def _process_records(self) -> None:
        records, handshake = self._records, self.handshake
        while self.state is not ConnectionState.CLOSED:
            record = records.next_record()
            if record is None:
                return
            content_type, content = record
            if (
                content_type == _APPLICATION_DATA and content and handshake.application_data_allowed
                and not self._close_received and not self._reassembler.has_partial()
            ):
                # The hot path: application data on an established connection.
                self._empty_records = 0
                self._events.append(ApplicationData(content))
            else:
                self._handle_content(content_type, content)

    def _handle_content(self, content_type: int, content: bytes) -> None:
        if not content and content_type != ContentType.APPLICATION_DATA:
            # RFC 9846 §5.1: zero-length handshake and alert fragments are forbidden.
            raise RemoteProtocolError(
                f"empty record of type {content_type}", AlertDescription.unexpected_message
            )
        if content_type != ContentType.HANDSHAKE and self._reassembler.has_partial():
            raise RemoteProtocolError(
                "record interleaved with a fragmented handshake message",
                AlertDescription.unexpected_message,
            )
        if content_type == ContentType.HANDSHAKE:
            if not self.handshake.complete:
                self._handshake_records += 1
                if self._handshake_records > self.configuration.max_handshake_records:
                    raise RemoteProtocolError(
                        "too many handshake records before Finished", AlertDescription.unexpected_message
                    )
            self._handle_handshake_fragment(content)
        elif content_type == ContentType.ALERT:
            self._handle_alert(content)
        elif content_type == ContentType.APPLICATION_DATA:
            self._handle_application_data(content)
        else:
            raise RemoteProtocolError(
                f"unknown record content type {content_type}", AlertDescription.unexpected_message
            )

    def _handle_handshake_fragment(self, content: bytes) -> None:
        self._reassembler.feed(content)
        while self.state is not ConnectionState.CLOSED:
            message = self._reassembler.pop()
            if message is None:
                return
            msg_type, body, raw = message
            # After the handshake each post-handshake protocol handles its own
            # messages; the rest (NewSessionTicket, anything unexpected) go to the engine.
            if self.state is not ConnectionState.CONNECTED or not self.post_handshake.dispatch(msg_type, body, raw):
                self.handshake.handle(msg_type, body, raw)

    def _handle_alert(self, content: bytes) -> None:
        if len(content) != 2:
            raise RemoteProtocolError("alert record is not two bytes", AlertDescription.decode_error)
        level, description = content[0], content[1]
        if description == AlertDescription.close_notify:
            self._close_received = True
            self._events.append(CloseNotifyReceived())
            if self._close_sent or not self.handshake.complete:
                self._finish(None, by_peer=True, reason="closed by peer")
            return
        if description == AlertDescription.user_canceled and level == AlertLevel.WARNING:
            # RFC 9846 §6.1: followed by close_notify; nothing to do yet.
            self._warning_alerts += 1
            if self._warning_alerts > self.configuration.max_warning_alerts:
                raise RemoteProtocolError("too many warning alerts", AlertDescription.unexpected_message)
            return
        # §6: every other alert is an error alert, whatever its level.
        try:
            desc = AlertDescription(description)
            name = desc.name
        except ValueError:
            desc = AlertDescription.internal_error
            name = f"unknown({description})"
        self._finish(desc, by_peer=True, reason=f"peer sent alert {name}")

    def _handle_application_data(self, content: bytes) -> None:
        if not self.handshake.application_data_allowed:
            raise RemoteProtocolError(
                "application data before the handshake completed", AlertDescription.unexpected_message
            )
        if self._close_received:
            return  # RFC 9846 §6.1: data after a closure alert is ignored
        if not content:
            self._empty_records += 1
            if self._empty_records > self.configuration.max_empty_records:
                raise RemoteProtocolError("too many empty records", AlertDescription.unexpected_message)
            return
        self._empty_records = 0
        self._events.append(ApplicationData(content))

    def _send_alert(self, description: AlertDescription) -> None:
        level = AlertLevel.WARNING if description in (
            AlertDescription.close_notify, AlertDescription.user_canceled
        ) else AlertLevel.FATAL
        self._records.send_alert(level, description)

    def _flush_handshake(self) -> None:
        if self._pending_handshake:
            data = bytes(self._pending_handshake)
            self._pending_handshake.clear()
            self._records.send(ContentType.HANDSHAKE, data)
