"""Post-handshake protocols as peers, and the one place that decides what may run together.

After the handshake, several protocols share the handshake content type:
KeyUpdate (RFC 9846 §4.6.3), Extended Key Update (EKU draft-13), post-handshake
client authentication (RFC 9846 §4.6.2) and, from the engines, NewSessionTicket.
Each protocol owns its messages and says which handshake types it handles
(``message_types``); ``PostHandshakeArbiter`` routes every message to its
owner and holds every rule about what may overlap:

- EKU replaces KeyUpdate once negotiated (EKU draft-13 §4): a local
  ``update_keys()`` is refused (LocalProtocolError), a peer's KeyUpdate is an
  unexpected_message;
- KeyUpdate only after the handshake (RFC 9846 §4.6.3: "before ... Finished" is
  an unexpected_message);
- no EKU while client authentication runs, and no client authentication while
  an EKU runs (EKU draft-13 §8.3): our own start is refused, a peer's EKU
  request is deferred until the authentication is done, a peer's
  CertificateRequest during an update is an unexpected_message unless it
  crossed our own request;
- a peer's EKU requests are paced and counted (EKU draft-13 §11.3): at most one
  answered per ``eku_min_interval`` (later ones wait), at most
  ``eku_max_peer_updates`` in all (further ones are rejected);
- Certificate Update (draft-rosomakho-tls-cert-update-02; handshake/cert_update.py,
  decision 5) sends no CertificateUpdate while an EKU of either direction or
  client authentication is in progress (it stays pending), and a peer's
  CertificateUpdate received while our DTLS EKU waits for its ACK stands for
  that ACK, as a CertificateRequest does.

Exported Authenticators are not a protocol on the wire (RFC 9261 §7: bytes
the application carries) and need no rule here.
"""

from __future__ import annotations

from typing import Protocol

from ..config import Configuration
from ..constants import AlertDescription, HandshakeType
from ..errors import LocalProtocolError, RemoteProtocolError
from .eku import EKUAdmission, Role
from .key_update import KeyUpdateProtocol
from .post_auth import ClientAuthentication


class PostHandshakeProtocol(Protocol):
    """A protocol that runs on an established connection and owns some handshake types."""

    @property
    def message_types(self) -> frozenset[int]: ...

    @property
    def in_progress(self) -> bool:
        """An exchange of this protocol has started and not finished."""
        ...

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None: ...


class _Engine(Protocol):
    """What the arbiter reads from the handshake engine."""

    complete: bool

    @property
    def eku_negotiated(self) -> bool: ...


class _EKU(Protocol):
    """What the arbiter reads from an Extended Key Update state machine."""

    @property
    def message_types(self) -> frozenset[int]: ...

    @property
    def in_progress(self) -> bool: ...

    @property
    def role(self) -> Role:
        """Where the exchange in flight stands (Role.WAIT_RESP: our request awaits the peer's response)."""
        ...

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None: ...

    def respond_deferred(self) -> None:
        """Answer the peer's request that was deferred."""

    def peer_completed(self) -> None:
        """DTLS: the peer sent what it sends only after completing the update (our lost ACK)."""

    def start(self, timeout: float | None = None) -> None: ...


class PostHandshakeArbiter:
    """Routes post-handshake messages to their protocol and applies the ordering rules."""

    def __init__(self, engine: _Engine, configuration: Configuration, client_auth: ClientAuthentication) -> None:
        self._engine = engine
        self._config = configuration
        # EKU draft-13 §11.3: when we last admitted a peer-started update, and how many.
        self._last_peer_eku = float("-inf")
        self._peer_updates = 0
        #: Post-handshake client authentication (handshake/post_auth.py): the
        #: server's requester or the client's responder.
        self.client_auth = client_auth
        self.eku: _EKU | None = None
        self.key_update: KeyUpdateProtocol | None = None
        #: Certificate Update (handshake/cert_update.py), once negotiated.
        self.certificate_update: PostHandshakeProtocol | None = None
        self._owners: dict[int, PostHandshakeProtocol] = {}
        self.register(self.client_auth)

    def __repr__(self) -> str:
        return f"<PostHandshakeArbiter {sorted(self._owners)}>"

    def register(self, protocol: PostHandshakeProtocol) -> None:
        """Give ``protocol`` its message types; a type has one owner."""
        for msg_type in protocol.message_types:
            owner = self._owners.get(msg_type)
            if owner is not None and owner is not protocol:
                raise ValueError(f"handshake type {msg_type} already belongs to {owner!r}")
            self._owners[msg_type] = protocol

    def register_key_update(self, key_update: KeyUpdateProtocol) -> None:
        self.key_update = key_update
        self.register(key_update)

    def register_eku(self, eku: _EKU) -> None:
        self.eku = eku
        self.register(eku)

    def register_certificate_update(self, protocol: PostHandshakeProtocol) -> None:
        self.certificate_update = protocol
        self.register(protocol)

    def dispatch(self, msg_type: int, body: bytes, raw: bytes) -> bool:
        """Hand a post-handshake message to the protocol that owns it, once the
        rules allow it; False if no protocol owns it (the engine's, e.g. NewSessionTicket)."""
        owner = self._owners.get(msg_type)
        if owner is None:
            return False
        if msg_type == HandshakeType.key_update:
            self.check_key_update(local=False)
        elif msg_type == HandshakeType.certificate_update:
            self._certificate_update_received()
        owner.handle(msg_type, body, raw)
        return True

    # -- Certificate Update (draft-rosomakho-tls-cert-update-02; decision 5) ------

    @property
    def certificate_update_may_send(self) -> bool:
        """Our CertificateUpdate may go now: no extended key update of either
        direction and no client authentication in progress.  A CertificateUpdate
        names no generation, so it is sent only between updates; the in-order
        handshake stream then has the peer validate it under the generation
        we made it in (docs/certificate-update.md, decision 5)."""
        eku = self.eku
        return not self.client_auth.in_progress and (eku is None or not eku.in_progress)

    def _certificate_update_received(self) -> None:
        eku = self.eku
        if eku is not None and eku.role is Role.WAIT_ACK:
            # DTLS: the peer sends a CertificateUpdate only with no update in
            # progress on its side, so, read in message_seq order after our
            # last EKU message, it stands for the ACK we still wait for (as a
            # CertificateRequest does, check_client_auth_may_start).
            eku.peer_completed()

    # -- KeyUpdate (RFC 9846 §4.6.3) ---------------------------------------------

    @property
    def key_update_allowed(self) -> bool:
        """The classic KeyUpdate may be used: after the handshake, and only without EKU."""
        return self._engine.complete and not self._engine.eku_negotiated

    def check_key_update(self, local: bool) -> None:
        if not self._engine.complete:
            raise RemoteProtocolError("KeyUpdate before the handshake completed", AlertDescription.unexpected_message)
        if self._engine.eku_negotiated:
            # EKU draft-13 §4: once negotiated, EKU replaces the standard KeyUpdate.
            if local:
                raise LocalProtocolError("Extended Key Update was negotiated: use extended_key_update() instead")
            raise RemoteProtocolError(
                "classic KeyUpdate after Extended Key Update was negotiated", AlertDescription.unexpected_message
            )

    # -- EKU and client authentication (EKU draft-13 §8.3) -----------------------

    @property
    def client_auth_in_progress(self) -> bool:
        return self.client_auth.in_progress

    @property
    def eku_may_start(self) -> bool:
        """An extended key update may start now (ours, or an answer to the peer's)."""
        return not self.client_auth.in_progress

    def check_eku_may_start(self) -> None:
        if self.client_auth.in_progress:
            raise LocalProtocolError("client authentication is in progress; update keys afterwards")

    def check_client_auth_may_start(self, requested_by_peer: bool) -> None:
        eku = self.eku
        if eku is not None and requested_by_peer and eku.role is Role.WAIT_ACK:
            # DTLS: the server starts client authentication only once it has
            # completed the update (§8.3), so its CertificateRequest, read in
            # message_seq order, stands for the ACK we are still waiting for
            # (docs/eku-over-dtls.md).
            eku.peer_completed()
        if eku is None or not eku.in_progress:
            return
        if not requested_by_peer:
            raise LocalProtocolError("an extended key update is in progress; authenticate afterwards")
        if eku.role is not Role.WAIT_RESP:
            # The server must not start client authentication during an
            # update; only our own request may cross its request.
            raise RemoteProtocolError(
                "CertificateRequest during an extended key update", AlertDescription.unexpected_message
            )

    # -- pacing a peer's extended key updates (EKU draft-13 §11.3) -----------------

    def eku_admission(self) -> EKUAdmission:
        """Whether to answer a peer's update request now: accept, defer or reject.

        At most one peer-started update per ``eku_min_interval`` seconds, at
        most ``eku_max_peer_updates`` in all (§11.3), and never while client
        authentication is in progress (§8.3).
        """
        cfg = self._config
        limit = cfg.eku_max_peer_updates
        if limit is not None and self._peer_updates >= limit:
            return EKUAdmission.REJECT
        if self.client_auth.in_progress:
            return EKUAdmission.DEFER
        if cfg.now() - self._last_peer_eku < cfg.effective_eku_min_interval:
            return EKUAdmission.DEFER
        self._admit_peer_update()
        return EKUAdmission.ACCEPT

    def _admit_peer_update(self) -> None:
        self._last_peer_eku = self._config.now()
        self._peer_updates += 1

    def eku_wait_seconds(self) -> float:
        """How long a deferred request will wait (what a draft-05 "retry" response announces)."""
        if self.client_auth.in_progress:
            return 1.0
        cfg = self._config
        return max(0.0, self._last_peer_eku + cfg.effective_eku_min_interval - cfg.now())

    def deferred_eku_due(self) -> float | None:
        """When a peer's update that waits for the rate limit is to be answered, or
        None (none waits, it waits for client authentication instead, or
        ``eku_max_peer_updates`` refuses it for good)."""
        limit = self._config.eku_max_peer_updates
        eku = self.eku
        if (
            eku is None or eku.role is not Role.RESPONDING or self.client_auth.in_progress
            or (limit is not None and self._peer_updates >= limit)
        ):
            return None
        return self._last_peer_eku + self._config.effective_eku_min_interval

    def respond_deferred_eku(self) -> None:
        """Answer the deferred update now (its time has come, or client authentication ended)."""
        if self.eku is not None and self.deferred_eku_due() is not None:
            self._admit_peer_update()
            self.eku.respond_deferred()
