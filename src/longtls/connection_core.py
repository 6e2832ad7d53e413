"""What a TLS 1.3 connection and a DTLS 1.3 association share.

``ConnectionCore`` is the transport-independent half of both sans-I/O
connections (``connection.Connection`` over a byte stream,
``dtls_connection.DTLSConnection`` over datagrams): the handshake engine and
the post-handshake protocols it hosts, the event queue, closing and aborting,
the guard that turns a failure into one fatal alert, the timers that do not
depend on records (handshake timeout, key update deadlines, deferred EKU
answers, the rekey interval), the exporters, and the host methods the
engines, KeyUpdate and EKU call that do not touch records.

A subclass supplies the transport: how records are framed, protected and
sent, how keys are switched (a TLS record stream or DTLS epochs), and the
few points where the core hands over to it, each an abstract method below
(``_flush``, ``_flush_handshake``, ``_drop_unsent_handshake``,
``_send_alert``, ``_drop_keys`` and the host methods that touch records).
RFC 9147 §5: DTLS "reuses the TLS 1.3 handshake messages and flows", so both
run the same engines with a ``handshake.transport.Transport`` telling them
(and the exporters here) which label prefix applies (RFC 9147 §5.9).
"""

from __future__ import annotations

import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from cryptography import x509

from .config import Configuration
from .constants import AlertDescription, AlertLevel, SignatureScheme
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
from .events import CloseNotifyReceived, ConnectionClosed, Event
from .handshake.cert_update import CertificateUpdates
from .handshake.client import ClientHandshake
from .handshake.common import HandshakeEngine
from .handshake.eku import EKUAdmission, ExtendedKeyUpdate
from .handshake.eku_profiles import PROFILES
from .handshake.exported_authenticators import (
    ChainVerifier,
    ExportedAuthenticators,
    Exporter,
    ExporterByGeneration,
    ValidatedAuthenticator,
    exported_authenticators_for,
)
from .handshake.key_update import KeyUpdateProtocol
from .handshake.post_auth import client_authentication
from .handshake.post_handshake import PostHandshakeArbiter
from .handshake.rekey import RekeyPolicy
from .handshake.server import ServerHandshake
from .handshake.transport import Transport
from .keylog import format_line, from_environment
from .sni import ServerCredential
from .wire.messages import Extension

__all__ = ["ConnectionCore", "ConnectionState", "alert_level", "check_update_timeout"]

logger = logging.getLogger("longtls")


def check_update_timeout(timeout: float | None) -> None:
    """A key update's ``timeout`` argument: None, or a positive number of seconds."""
    if timeout is not None and not timeout > 0:
        raise LocalProtocolError("a key update timeout must be positive (or None for rekey_timeout)")


def alert_level(description: AlertDescription) -> AlertLevel:
    """The level we send ``description`` at: close_notify and user_canceled are
    warnings (RFC 9846 §6.1), every error alert is fatal (§6.2)."""
    if description in (AlertDescription.close_notify, AlertDescription.user_canceled):
        return AlertLevel.WARNING
    return AlertLevel.FATAL


def run_guarded(action: Callable[[], None], fail: Callable[[ProtocolError], None], protocol: str) -> None:
    """Run a connection's ``action``; turn every failure into one fatal alert
    (``fail``) and one error type.  Shared by ConnectionCore and MLSConnection.

    A LocalProtocolError (the application asked for something not allowed
    now) is raised as it is: it comes before any state changes.
    """
    try:
        action()
    except UsageLimitError as exc:
        # Our sending key is used up in the middle of protocol work: the
        # connection cannot go on (RFC 9846 §5.5), though the peer is not to blame.
        fail(exc)
        raise
    except LocalProtocolError:
        raise
    except ProtocolError as exc:
        fail(exc)
        raise
    except TLSError as exc:
        raise failed(fail, ProtocolError(str(exc.args[0]), exc.alert)) from exc
    except Exception as exc:  # a bug must not escape as a stray exception
        logger.exception("internal error in %s processing", protocol)
        raise failed(fail, ProtocolError(f"internal error: {type(exc).__name__}", AlertDescription.internal_error)) from exc


def failed(fail: Callable[[ProtocolError], None], error: ProtocolError) -> ProtocolError:
    """``fail(error)``, then ``error`` for the caller to raise.

    Why not a local variable raised after ``fail``: the raised error's
    traceback holds the raising frame, whose locals would hold the error
    (a reference cycle) and the connection, so a connection that failed
    would wait for the cyclic collector (issue 16, freed on close)."""
    fail(error)
    return error


def _weak_exporter(conn: ConnectionCore) -> ExporterByGeneration:
    """``conn._authenticator_exporter`` without a strong reference to ``conn``:
    the Exported Authenticators state is the connection's, and a bound method
    stored in it would make a reference cycle (issue 16, freed on close)."""
    ref = weakref.ref(conn)

    def exporter(generation: int | None) -> Exporter:
        live = ref()
        if live is None:
            raise LocalProtocolError("the connection is gone: no exporter")
        return live._authenticator_exporter(generation)

    return exporter


class ConnectionState(Enum):
    HANDSHAKING = "handshaking"
    CONNECTED = "connected"
    CLOSED = "closed"


class ConnectionCore(ABC):
    """The transport-independent core of a connection, client or server.

    The engines see it as a ``handshake.host.HandshakeHost``, KeyUpdate as a
    ``handshake.key_update.KeyUpdateHost``, EKU as a ``handshake.eku.EKUHost``
    (structural protocols: mypy checks them where ``self`` is passed).
    """

    #: How the logs name the protocol and the connection.
    _protocol = "TLS"
    _log_name = "connection"

    def __init__(self, configuration: Configuration, transport: Transport, *, client_address: bytes = b"") -> None:
        # The subclass has validated ``configuration``.
        self.configuration = configuration
        self.is_client = configuration.is_client
        self.state = ConnectionState.HANDSHAKING
        self._transport = transport
        # A list, not a deque: an idle connection's empty queue is 56 bytes
        # instead of 600 (issue 16); queues are short (what one call
        # produced), so next_event's pop(0) moves a few pointers.
        self._events: list[Event] = []
        self._keylog = configuration.keylog or from_environment()
        #: ClientHello.random, the key log's key (HandshakeHost).
        self.client_random = b""
        self._started_at: float | None = None
        self._close_sent = False
        self._close_received = False
        self._warning_alerts = 0
        #: The classic KeyUpdate (handshake/key_update.py), once connected.
        self.key_update: KeyUpdateProtocol | None = None
        #: Extended Key Update, once negotiated.
        self.eku: ExtendedKeyUpdate | None = None
        engine = (
            ClientHandshake(self, configuration, transport) if self.is_client
            else ServerHandshake(self, configuration, transport, client_address)
        )
        self.handshake: HandshakeEngine = engine
        #: Routes post-handshake messages and decides what may run together.
        self.post_handshake = PostHandshakeArbiter(engine, configuration, client_authentication(engine))
        #: The updates this side starts by itself (usage limits, Configuration.rekey_*).
        self._rekey = RekeyPolicy(self.post_handshake, configuration)
        #: Exported Authenticators (RFC 9261), made at first use once the handshake is complete.
        self._exported_authenticators: ExportedAuthenticators | None = None
        #: Certificate Update (draft-rosomakho-tls-cert-update-02), once negotiated.
        self._certificate_updates: CertificateUpdates | None = None

    # ------------------------------------------------------------------ API

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    def events(self) -> list[Event]:
        """All pending events (empties the queue)."""
        evs = self._events
        self._events = []
        return evs

    @property
    def handshake_complete(self) -> bool:
        return self.state is ConnectionState.CONNECTED or (
            self.state is ConnectionState.CLOSED and self.handshake.complete
        )

    @property
    def is_closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

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
        """TLS-Exporter (RFC 9846 §7.5); under dtls13 labels over DTLS (RFC 9147 §5.9)."""
        if not self.handshake.complete:
            raise LocalProtocolError("exporters are available once the handshake is complete")
        lab = label.encode() if isinstance(label, str) else label
        eku = self.eku
        if eku is not None and eku.generation > 0:
            # EKU draft-13 §9.2: after an update, the current generation's exporter.
            return ks.export_keying_material(
                eku.suite, eku.exporter_secret, lab, context, length, self._transport.label_prefix
            )
        return self.handshake.export(lab, context, length)

    def export_epoch_keying_material(
        self, label: str | bytes, context: bytes, length: int, generation: int | None = None
    ) -> bytes:
        """EKU draft-13 §9: the epoch-aware exporter.

        Generation 0 uses the "exporter eku" secret, generation N the exporter
        secret of the N-th extended key update; the current and the previous
        generation are available.  Under dtls13 labels over DTLS.
        """
        eku = self.eku
        if eku is None:
            raise LocalProtocolError("the epoch-aware exporter needs Extended Key Update")
        gen = eku.generation if generation is None else generation
        secret = eku.epoch_exporters.get(gen)
        if not secret:
            raise LocalProtocolError(f"exporter generation {gen} is no longer (or not yet) available")
        lab = label.encode() if isinstance(label, str) else label
        return ks.export_keying_material(eku.suite, secret, lab, context, length, self._transport.label_prefix)

    @property
    def key_generation(self) -> int:
        """How many extended key updates completed on this connection."""
        return self.eku.generation if self.eku is not None else 0

    @property
    def key_update_answer_owed(self) -> bool:
        """Our KeyUpdate(update_requested) still awaits the peer's KeyUpdate."""
        return self.key_update is not None and self.key_update.answer_owed

    def extended_key_update(self, timeout: float | None = None) -> None:
        """Start an Extended Key Update: a fresh key exchange that derives new
        traffic and exporter secrets (EKU draft-13).  ``KeyUpdateCompleted``
        follows once the peer answered; if it has not within ``timeout``
        seconds (None: ``Configuration.rekey_timeout``; ``math.inf``: no
        limit), ``handle_timer`` ends the connection with ``KeyUpdateTimeoutError``."""
        eku = self.eku
        if self.state is not ConnectionState.CONNECTED or eku is None:
            raise LocalProtocolError("Extended Key Update was not negotiated on this connection")
        self._refuse_update_after_close()
        self.post_handshake.check_eku_may_start()
        check_update_timeout(timeout)
        self._command(lambda: eku.start(timeout))

    def _refuse_update_after_close(self) -> None:
        if self._close_sent:
            raise LocalProtocolError("cannot update keys after close()")
        if self._close_received:
            # RFC 9846 §6.1: the peer sends nothing after its close_notify.
            raise LocalProtocolError("the peer has closed its side and can no longer answer a key update")

    def request_client_authentication(self) -> None:
        """Server: ask for a client certificate after the handshake (RFC 9846 §4.6.2)."""
        if self.is_client or self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("only a connected server can request client authentication")
        self._check_handshake_message_may_go()
        self._command(self.post_handshake.client_auth.request)

    # ----------------------------------------- Exported Authenticators (RFC 9261)
    # Thin wrappers over handshake/exported_authenticators.py (docs/exported-authenticators.md).
    # Requests and authenticators are bytes the application carries as it likes;
    # nothing here sends anything, and an invalid authenticator does not end the
    # connection (AuthenticatorError).  ``generation`` selects the exporter:
    # None the current one, 0 the handshake's, N that of the N-th extended key
    # update while it is kept (see _authenticator_exporter).

    @property
    def exported_authenticators(self) -> ExportedAuthenticators:
        """The connection's Exported Authenticators state (contexts used, keys)."""
        state = self._exported_authenticators
        if state is None:
            if not self.handshake.complete:
                raise LocalProtocolError("exported authenticators are available once the handshake is complete")
            # Made at first use, not when the handshake completes: most
            # connections never use authenticators, and the state is ~700
            # bytes per connection (issue 16).
            state = self._exported_authenticators = exported_authenticators_for(
                self.handshake, _weak_exporter(self)
            )
        return state

    def _authenticators(self) -> ExportedAuthenticators:
        if self.state is ConnectionState.CLOSED:
            raise LocalProtocolError("the connection is closed: no exported authenticators")
        return self.exported_authenticators

    def authenticator_request(
        self, context: bytes | None = None, *, signature_algorithms: Sequence[int] | None = None,
        extensions: Sequence[Extension] = (),
    ) -> bytes:
        """A new authenticator request (RFC 9261 §4, §7.1): a CertificateRequest
        from a server, a ClientCertificateRequest from a client, with a fresh
        32-byte context unless ``context`` is given (never one used before)."""
        return self._authenticators().request(context, signature_algorithms=signature_algorithms, extensions=extensions)

    def export_authenticator(
        self, request: bytes | None, *, chain: Sequence[x509.Certificate] | None = None,
        private_key: Any = None, context: bytes | None = None, generation: int | None = None,
        scheme: SignatureScheme | None = None,
    ) -> bytes:
        """Our authenticator (RFC 9261 §5, §7.3) answering the peer's ``request``,
        or a spontaneous one (``request=None``, a server only).  The chain and
        key default to the configuration's; the signature scheme to the first
        of ours the key fits and the request offers (``scheme`` to insist on one)."""
        return self._authenticators().authenticate(
            request, chain=chain, private_key=private_key, context=context, generation=generation, scheme=scheme
        )

    def refuse_authenticator(self, request: bytes, *, generation: int | None = None) -> bytes:
        """An empty authenticator (RFC 9261 §6): we decline the peer's ``request``."""
        return self._authenticators().refuse(request, generation=generation)

    def validate_authenticator(
        self, authenticator: bytes, request: bytes | None = None, *, generation: int | None = None,
        verify_chain: ChainVerifier | None = None,
    ) -> ValidatedAuthenticator:
        """Check the peer's authenticator for our ``request`` (RFC 9261 §7.4);
        ``request=None``: a server's spontaneous authenticator.  Returns the
        validated identity; raises AuthenticatorError if it is invalid,
        AuthenticatorRefused if the peer declined (an empty authenticator)."""
        return self._authenticators().validate(
            authenticator, request, generation=generation, verify_chain=verify_chain
        )

    @staticmethod
    def authenticator_context(message: bytes) -> bytes:
        """The certificate_request_context of a request or an authenticator (RFC 9261 §7.2)."""
        return ExportedAuthenticators.context_of(message)

    def _authenticator_exporter(self, generation: int | None) -> Exporter:
        """The exporter authenticators of ``generation`` are keyed from.

        None: the connection's current exporter (export_keying_material):
        exporter_master_secret before any extended key update, the current
        generation's exporter secret after one (EKU draft-13 §11.2 updating
        RFC 9261 §5.1).  0: exporter_master_secret (RFC 9261 §5.1), not the
        epoch-aware "exporter eku" secret of draft-13 §9.1, so that
        ``generation=g`` always means "made while g was current".  N >= 1:
        the N-th update's exporter secret.  Like export_epoch_keying_material,
        only the current and the previous generation are available (draft-13
        §9.2: the previous exporter is kept "for a short period"), 0 included.
        """
        if generation is None:
            return self.export_keying_material
        eku = self.eku
        if generation == 0 and (eku is None or eku.generation <= 1):
            return self.handshake.export
        secret = eku.epoch_exporters.get(generation) if eku is not None and generation > 0 else None
        if eku is None or not secret:
            raise LocalProtocolError(f"exporter generation {generation} is no longer (or not yet) available")
        suite, prefix = eku.suite, self._transport.label_prefix

        def export(label: bytes, context: bytes, length: int) -> bytes:
            return ks.export_keying_material(suite, secret, label, context, length, prefix)

        return export

    # ------------------------------ Certificate Update (draft-rosomakho-tls-cert-update-02)
    # handshake/cert_update.py and docs/certificate-update.md.

    @property
    def certificate_update_negotiated(self) -> bool:
        """Both sides sent the certificate_update_request extension."""
        return self._certificate_updates is not None

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        """The peer's chain now in force, leaf first: the handshake's, then
        that of each accepted CertificateUpdate or post-handshake client
        authentication; () if the peer never authenticated with a certificate."""
        updates = self._certificate_updates
        if updates is not None and updates.peer_certificates:
            return updates.peer_certificates
        return self.handshake.peer_certificates

    @property
    def server_credential(self) -> ServerCredential | None:
        """A server: the credential of ``Configuration.server_credentials``
        chosen for this connection by the client's server_name (docs/sni.md);
        None: the configuration's own certificate_chain/private_key (the
        default; always None for a client)."""
        return self.handshake.server_credential

    @property
    def local_certificates(self) -> tuple[x509.Certificate, ...]:
        """Our chain now in force: the one we last authenticated with, or last
        sent in a CertificateUpdate; () if we never sent a certificate."""
        updates = self._certificate_updates
        if updates is not None:
            return updates.local_certificates
        return self.handshake.local_certificates

    @property
    def certificate_update_pending(self) -> bool:
        """An update asked for with ``update_certificate`` waits: for the peer's
        request, or for an extended key update or client authentication to end."""
        return self._certificate_updates is not None and self._certificate_updates.pending

    def update_certificate(self, chain: Sequence[x509.Certificate] | None = None, private_key: Any = None) -> None:
        """Hand the peer a renewed certificate (a CertificateUpdate).

        ``chain`` (leaf first) and ``private_key`` default to the
        configuration's current ones, so after replacing
        ``configuration.certificate_chain`` and ``private_key`` call it with
        no argument (a server's connection that was given one of
        ``server_credentials``: that credential's current ones, docs/sni.md).
        LocalProtocolError, naming the rule, if Certificate
        Update was not negotiated, if we never authenticated with a
        certificate, or if the chain breaks a rule we can check here (the
        same identity as our handshake certificate, a key that matches it and
        can sign with our handshake's scheme, a certificate not used before).
        The update goes at once if the peer's request is there and nothing
        holds it back, else it waits (``certificate_update_pending``; a later
        call replaces it).  ``CertificateUpdated(sent)`` when it goes.
        """
        updates = self._certificate_updates
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("a certificate update needs an established connection")
        if updates is None:
            raise LocalProtocolError("Certificate Update was not negotiated on this connection")
        if self._close_sent:
            raise LocalProtocolError("cannot update the certificate after close()")
        # Our own pair by default: a server's may be the credential chosen by
        # server_name (docs/sni.md), renewed in place.
        own = self.handshake
        new = list(own.own_certificate_chain) if chain is None else list(chain)
        key = own.own_private_key if private_key is None and chain is None else private_key
        self._command(lambda: updates.update(new, key))

    def certificate_update_may_go(self) -> bool:
        """CertificateUpdateHost: nothing holds our CertificateUpdate back
        (the arbiter's rules, decision 5; the transport's; no close_notify sent)."""
        if self.state is not ConnectionState.CONNECTED or self._close_sent:
            return False
        try:
            self._check_handshake_message_may_go()
        except LocalProtocolError:
            return False
        return self.post_handshake.certificate_update_may_send

    def _certificate_update_resume(self, client_authenticated: bool = False) -> None:
        """Something that held a CertificateUpdate back ended (an extended key
        update, client authentication, a DTLS KeyUpdate's ACK): send what waits.
        ``client_authenticated``: a server's post-handshake client
        authentication completed, the client's new reference identity."""
        updates = self._certificate_updates
        if updates is None or self.state is not ConnectionState.CONNECTED:
            return
        if client_authenticated:
            updates.peer_authenticated()
            updates.issue_request()  # decision 4
        updates.resume()

    def _check_handshake_message_may_go(self) -> None:
        """Raise LocalProtocolError if a handshake message of ours cannot be
        sent now for a reason of the transport's (DTLS: a KeyUpdate not yet acknowledged)."""
        return  # over TLS nothing holds one back

    def _command(self, action: Callable[[], None]) -> None:
        """Run an application command's protocol work under the guard."""
        self._guard(action)

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should be called next, or None.

        Timers: the handshake timeout, a deferred EKU response (rate limit),
        the rekey interval, and the peer's answer to a key update (rekey_timeout).
        """
        deadlines = self._deadlines()
        return min(deadlines) if deadlines else None

    def _deadlines(self) -> list[float]:
        """The transport-independent deadlines ``get_timer`` chooses from."""
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
        return deadlines

    def handle_timer(self, now: float | None = None) -> None:
        """Run what ``get_timer`` asked for, if its time has come.

        Raises ``HandshakeTimeoutError`` / ``KeyUpdateTimeoutError`` (user_canceled
        and close_notify are queued) when the peer took too long.
        """
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
            self._send_alert(AlertDescription.user_canceled)
            raise failed(self._fail, HandshakeTimeoutError(timeout))
        update_deadline = self._update_deadline()
        if update_deadline is not None and current >= update_deadline[0]:
            # The same pair of alerts as the handshake timeout: user_canceled,
            # then close_notify (errors.KeyUpdateTimeoutError).
            self._send_alert(AlertDescription.user_canceled)
            raise failed(self._fail, KeyUpdateTimeoutError(update_deadline[1], update_deadline[2]))
        self._run_timers(current)

    def _run_timers(self, now: float) -> None:
        """The timers that do protocol work, each under the guard."""
        if self._deferred_eku_due(now):
            self._guard(self.post_handshake.respond_deferred_eku)
        if self._rekey_due(now):
            self._guard(self._rekey.start_update)

    def _deferred_eku_due(self, now: float) -> bool:
        """An EKU answer held back by pacing or client authentication is due (draft-13 §11.3, §8.3)."""
        due = self.post_handshake.deferred_eku_due()
        return due is not None and now >= due

    def _rekey_due(self, now: float) -> bool:
        due = self._rekey.interval_due()
        return due is not None and self._rekey_possible() and now >= due

    @property
    def _closing(self) -> bool:
        """A close_notify went either way."""
        return self._close_sent or self._close_received

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
        if self.state is not ConnectionState.CONNECTED or self._closing:
            return None
        found: tuple[float, str, float] | None = None
        ku = self.key_update
        if ku is not None and ku.answer_owed and ku.deadline is not None:
            found = (ku.deadline, "standard", ku.timeout)
        eku = self.eku
        if eku is not None and eku.deadline is not None and (found is None or eku.deadline < found[0]):
            found = (eku.deadline, "extended", eku.timeout)
        return found

    # ------------------------------------------------------------ the hosts
    # Host methods that do not touch records; the transport's are abstract below.

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def log_secret(self, label: str, secret: bytes) -> None:
        if self._keylog is not None:
            self._keylog(format_line(label, self.client_random, secret))

    def handshake_done(self) -> None:
        self.state = ConnectionState.CONNECTED
        self._rekey.rekeyed()
        hs = self.handshake
        assert hs.suite is not None
        # "traffic upd" under the transport's label prefix (RFC 9147 §5.9, §8).
        prefix = self._transport.label_prefix
        self.key_update = KeyUpdateProtocol(self, hs.suite, prefix)
        self.post_handshake.register_key_update(self.key_update)
        if hs.eku_negotiated:
            secrets, suite = hs.secrets, hs.suite
            group = hs.eku_group  # under psk_ke, not the handshake's (docs/external-psk.md)
            assert secrets is not None and group is not None and hs.eku_profile is not None
            profile = PROFILES[hs.eku_profile]
            # EKU draft-13 §9.1: the epoch-aware exporter's generation 0.
            exporter_eku = ks.eku_exporter_secret(suite, secrets.main_secret, secrets.server_finished_hash, prefix)
            self.eku = ExtendedKeyUpdate(
                self, profile, suite, group, secrets.main_secret, secrets.client_finished_hash,
                secrets.exporter_secret, exporter_eku if profile.chained_transcript else secrets.exporter_secret,
                transport=self._transport,
            )
            self.post_handshake.register_eku(self.eku)
        if hs.certificate_update_negotiated:
            self._certificate_updates = CertificateUpdates(self, hs)
            self.post_handshake.register_certificate_update(self._certificate_updates)

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

    @property
    def resumption_secret(self) -> bytes:
        """The resumption secret of the current generation (EKU updates it)."""
        if self.eku is not None and self.eku.generation > 0:
            return self.eku.resumption_secret
        secrets = self.handshake.secrets
        return secrets.resumption_secret if secrets is not None else b""

    def eku_admission(self) -> EKUAdmission:
        """Whether to answer a peer's update request now (the arbiter's pacing, EKU draft-13 §11.3, §8.3)."""
        return self.post_handshake.eku_admission()

    def eku_wait_seconds(self) -> float:
        return self.post_handshake.eku_wait_seconds()

    def eku_completed(self) -> None:
        self._rekey.rekeyed()
        self.handshake.on_extended_key_update(self.eku)
        if self._certificate_updates is not None:
            self._certificate_update_resume()  # decision 5: a CertificateUpdate may have waited

    def rekeyed(self) -> None:
        self._rekey.rekeyed()

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @property
    def close_received(self) -> bool:
        return self._close_received

    # The transport's host methods (records, keys, acknowledgements).

    @abstractmethod
    def queue_handshake(self, message: bytes) -> None: ...

    @abstractmethod
    def compatibility_ccs(self) -> None: ...

    @abstractmethod
    def set_write_secret(self, suite: SuiteInfo, secret: bytes) -> None: ...

    @abstractmethod
    def set_read_secret(self, suite: SuiteInfo, secret: bytes) -> None: ...

    @property
    @abstractmethod
    def current_read_secret(self) -> bytes: ...

    @property
    @abstractmethod
    def current_write_secret(self) -> bytes: ...

    @property
    @abstractmethod
    def read_generation(self) -> int: ...

    @property
    @abstractmethod
    def write_generation(self) -> int: ...

    @property
    @abstractmethod
    def handshake_data_pending(self) -> bool: ...

    @abstractmethod
    def advance_write_secret(self, secret: bytes) -> None: ...

    @abstractmethod
    def advance_read_secret(self, secret: bytes) -> None: ...

    @abstractmethod
    def request_send_switch(self, secret: bytes) -> None: ...

    @abstractmethod
    def switch_receive(self, secret: bytes) -> None: ...

    @abstractmethod
    def send_ack(self) -> None: ...

    @abstractmethod
    def acknowledged_implicitly(self, message: bytes) -> None: ...

    @abstractmethod
    def post_handshake_auth_done(self) -> None: ...

    @abstractmethod
    def set_peer_record_size_limit(self, limit: int) -> None: ...

    @abstractmethod
    def enforce_record_size_limit(self) -> None: ...

    # -------------------------------------------------------------- internals

    def _guard(self, action: Callable[[], None]) -> None:
        """Run ``action``, then send what it produced (``_flush``); turn every
        failure into a fatal alert and one error type.

        A LocalProtocolError (the application asked for something not allowed
        now) leaves the connection as it was: it is raised before any state changes.
        """
        try:
            run_guarded(action, self._fail, self._protocol)
        finally:
            self._flush()

    def _fail(self, exc: ProtocolError) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        logger.debug("%s failed: %s", self._log_name, exc)
        try:
            self._drop_unsent_handshake()
            self._send_alert(exc.alert)
        except TLSError:
            pass
        self._finish(exc.alert, by_peer=False, reason=str(exc.args[0]))

    def _finish(self, alert: AlertDescription | None, by_peer: bool, reason: str) -> None:
        self.state = ConnectionState.CLOSED
        self._drop_keys()
        self._events.append(ConnectionClosed(alert=alert, by_peer=by_peer, reason=reason))
        self._release_host_references()

    def _release_host_references(self) -> None:
        """The connection is closed: its parts stop holding it strongly.

        The handshake engine, KeyUpdate, EKU and Certificate Update each keep
        their host (this connection), which keeps them: a reference cycle, so
        a closed connection the application dropped waited for Python's
        cyclic collector (issue 16, docs/benchmarks.md "Freed on close").
        Their back-pointers become weak proxies: code still on the stack
        (``_finish`` runs inside the engines' calls) keeps working, the parts
        stay readable (peer certificates, suite, ...), and once the
        application drops the connection, reference counting frees it all.
        Nothing drives a part of a closed connection again; one kept beyond
        its connection raises ReferenceError if it is driven.
        """
        host = weakref.proxy(self)
        self.handshake.conn = host
        for part in (self.key_update, self.eku, self._certificate_updates):
            if part is not None:
                part.host = host

    def _alert_received(self, level: int, description: int) -> None:
        """The peer's alert (two bytes checked by the transport)."""
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

    @abstractmethod
    def _flush(self) -> None:
        """End of every guarded call: send what the protocols queued."""

    @abstractmethod
    def _flush_handshake(self) -> None:
        """Before close_notify: handshake messages queued but not yet in records go first."""

    @abstractmethod
    def _drop_unsent_handshake(self) -> None:
        """On a fatal error: nothing of the handshake goes after the alert."""

    @abstractmethod
    def _send_alert(self, description: AlertDescription) -> None:
        """Queue one alert record under the current write key (its level from ``alert_level``)."""

    @abstractmethod
    def _drop_keys(self) -> None:
        """The connection is closed: forget every key (and what waited for one)."""
