"""Certificate Update (draft-rosomakho-tls-cert-update-02), a post-handshake protocol.

Either side hands over a renewed certificate on the live connection as an
RFC 9261 exported authenticator, in a CertificateUpdate message, answering an
authenticator request the peer gave it earlier: in its
``certificate_update_request`` extension (ClientHello / EncryptedExtensions)
or in a CertificateUpdateRequest.  Each request is used once (draft §4.2);
the receiver of an update, once it accepted it, sends a fresh request (§5).

The receiver checks, in this order, and ends the connection with the alert
the draft names:

- unexpected_message (§4.2): no unused request of ours, or a client that
  never authenticated with a certificate (in the handshake or by
  post-handshake client authentication); a CertificateUpdate before the
  handshake completed never reaches this module (the engine refuses it);
- illegal_parameter (§4.1, §4.2): the RFC 9261 validation (Finished MAC,
  CertificateVerify, context, the chain against the trust store now, as the
  handshake checks it, with the server name for a server), an empty
  authenticator, the identity rules (crypto/cert_identity.py), the same
  SignatureScheme as the sender's last certificate authentication, a
  certificate the sender has not used before on this connection (its leaf
  DER), and the application's ``certificate_update_policy``.

Decisions where the draft is unclear or inconsistent (each is also in
docs/certificate-update.md, numbered the same):

1. Request naming.  The draft puts a "CertificateRequest" in ClientHello and
   has a client send one in CertificateUpdateRequest, the reverse of RFC 9261
   §4, where a client-generated request is a ClientCertificateRequest (17)
   and a server's a CertificateRequest (13).  We follow RFC 9261 (the
   structures are the same; only the type byte differs).
2. Request bytes: the whole handshake message, type and length included, as
   RFC 9261 §4 defines a request and as the authenticator transcript hashes
   it (§5.2.2).  The same bytes travel in the extension and in
   CertificateUpdateRequest.
3. "The extensions list inside the authenticator request MUST be empty"
   (draft §3.1, §5) against RFC 9261 (``extensions<2..2^16-1>``; a request
   MUST include signature_algorithms, §7.1, and the CertificateVerify scheme
   is chosen from it, §5.2.2): a request's only extension is
   signature_algorithms.  Ours carry exactly that (during the handshake our
   whole list; afterwards only the scheme the peer must keep using, so a
   conforming peer cannot pick another); one with any other extension, with
   none, or with a duplicate is illegal_parameter.
4. The deadlock after an empty extension (an endpoint that gave no request
   can never send a CertificateUpdateRequest, which needs a prior update):
   a server includes a request in EncryptedExtensions whenever the client
   offered the extension and may authenticate with a certificate (the
   server asks for one in the handshake, or the client offered
   post_handshake_auth); a client always includes one.  After a
   post-handshake client authentication, a server with no outstanding
   request sends a CertificateUpdateRequest.  A CertificateUpdateRequest is
   accepted whenever the peer has no request of its own outstanding with us
   (one while its previous one is unused is unexpected_message: requests are
   single-flight, and that bounds what we keep).
5. Order against an Extended Key Update.  EKU draft-13 §11 leaves exported
   authenticators unserialised because the epoch-aware exporter names the
   generation, but a CertificateUpdate carries no generation.  We never send
   a CertificateUpdate while an EKU of either direction is in progress
   locally, nor while post-handshake client authentication runs: it waits
   (pending) until they complete.  The in-order handshake stream then makes
   the receiver validate under the generation the sender used.  A
   CertificateUpdate received while our DTLS EKU waits for its ACK
   (Role.WAIT_ACK) proves the peer completed it (the arbiter calls
   ``peer_completed``, as for a CertificateRequest).

Limits: a peer's updates cost us a signature check and a chain validation
each; past ``Configuration.max_peer_certificate_updates`` we issue no new
request, so it cannot send another.  We keep one request of ours and one of
the peer's at a time, and a set of leaf digests per side.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from cryptography import x509

from ..config import Configuration
from ..constants import AlertDescription, ExtensionType, HandshakeType, SignatureScheme
from ..crypto import signatures
from ..crypto.cert_identity import IdentityViolation, check_same_identity
from ..crypto.certificates import certificate_der, check_key_matches_certificate
from ..errors import (
    AuthenticatorError,
    AuthenticatorRefused,
    ConfigurationError,
    LocalProtocolError,
    RemoteProtocolError,
)
from ..events import CertificateUpdated, CertificateUpdateDirection, Event
from ..wire import extensions as X
from ..wire.cert_update import CertificateUpdate, CertificateUpdateRequest
from ..wire.messages import CertificateRequest, Extension, encode_handshake
from .common import HandshakeEngine
from .exported_authenticators import (
    CONTEXT_LENGTH,
    ExportedAuthenticators,
    decode_authenticator_request,
    encode_authenticator_request,
)

__all__ = [
    "CertificateUpdateHost",
    "CertificateUpdates",
    "handshake_update_request",
    "parse_update_request",
]

logger = logging.getLogger("longtls")


# -- requests (decisions 1-3) ----------------------------------------------------------


def handshake_update_request(config: Configuration, *, from_client: bool, schemes: Sequence[int]) -> bytes:
    """The request we put in our certificate_update_request extension: a
    ClientCertificateRequest from a client, a CertificateRequest from a server
    (decision 1), whole (decision 2), offering ``schemes`` only (decision 3).
    Its fresh context is registered with the connection's Exported
    Authenticators once they exist, so it is never used again."""
    extension = Extension(ExtensionType.signature_algorithms, X.encode_signature_algorithms(list(schemes)))
    return encode_authenticator_request(
        from_client=from_client, context=config.random(CONTEXT_LENGTH), extensions=(extension,)
    )


def parse_update_request(raw: bytes, *, from_client: bool, where: str) -> tuple[bytes, tuple[int, ...]]:
    """The context and signature schemes of the peer's request (``from_client``:
    the peer is the client), in the extension or a CertificateUpdateRequest.

    Draft §3.2 and §5.1: a request that cannot be parsed, or whose extensions
    are not empty (decision 3: other than signature_algorithms alone), is
    illegal_parameter, whatever RFC 9261 would call the fault.
    """
    try:
        request = decode_authenticator_request(raw, from_client=from_client, require_signature_algorithms=False)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(
            f"malformed authenticator request in {where}: {exc.args[0]}", AlertDescription.illegal_parameter
        ) from None
    schemes = _only_signature_algorithms(request, where)
    return request.certificate_request_context, schemes


def _only_signature_algorithms(request: CertificateRequest, where: str) -> tuple[int, ...]:
    types = [ext.type for ext in request.extensions]
    if types != [ExtensionType.signature_algorithms]:
        raise RemoteProtocolError(
            f"the authenticator request in {where} must carry signature_algorithms and nothing else"
            f" (draft-rosomakho-tls-cert-update-02 §3.1; it carries extensions {types})",
            AlertDescription.illegal_parameter,
        )
    try:
        schemes = tuple(X.decode_signature_algorithms(request.extensions[0].data))
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(
            f"malformed signature_algorithms in the authenticator request in {where}: {exc.args[0]}",
            AlertDescription.illegal_parameter,
        ) from None
    return schemes


# -- the protocol ---------------------------------------------------------------------------


class CertificateUpdateHost(Protocol):
    """What Certificate Update needs from its connection."""

    @property
    def exported_authenticators(self) -> ExportedAuthenticators: ...

    def queue_handshake(self, message: bytes) -> None:
        """Send one handshake message (with its header) under the current write key."""

    def emit(self, event: Event) -> None: ...

    @property
    def close_sent(self) -> bool:
        """We sent close_notify: send nothing more (RFC 9846 §6.1)."""
        ...

    def certificate_update_may_go(self) -> bool:
        """Nothing holds our CertificateUpdate back now: no EKU of either
        direction and no client authentication in progress (decision 5), the
        transport lets a handshake message go (DTLS: no KeyUpdate awaiting its
        ACK), and we have not sent close_notify."""
        ...


def _leaf_id(chain: Sequence[x509.Certificate]) -> bytes:
    """What "used before" compares: the leaf's DER (draft §4.1), as a digest."""
    # certificate_der: no re-encoding of a certificate seen before (issue 16).
    return hashlib.sha256(certificate_der(chain[0])).digest()


class CertificateUpdates:
    """Certificate Update on one connection whose handshake negotiated it.

    Holds no secret (the authenticators' keys are the Exported
    Authenticators'); ``repr`` shows counts only.
    """

    message_types = frozenset({HandshakeType.certificate_update, HandshakeType.certificate_update_request})
    #: A CertificateUpdate is one message; the request that follows it is not
    #: awaited by anything: nothing stays open that another protocol must respect.
    in_progress = False

    def __init__(self, host: CertificateUpdateHost, engine: HandshakeEngine) -> None:
        self.host = host
        self._engine = engine
        self._config = engine.config
        self.is_client = engine.config.is_client
        #: Our request the peer has not answered yet, and the peer's we have not used.
        self._own_request: bytes | None = engine.own_update_request
        self._peer_request: bytes | None = engine.peer_update_request
        # The contexts and leaves used so far are tuples, not sets: they grow by
        # one per certificate update (a renewal: a handful in a connection's
        # life), and an empty or one-entry set costs 216 bytes on every
        # connection, a tuple 40-48 (issue 16).
        self._peer_contexts: tuple[bytes, ...] = ()
        # Our handshake request's context is counted as used by
        # exported_authenticators_for, whenever that state is made.
        if self._peer_request is not None:
            self._peer_contexts += (self._context_of_peer_request(self._peer_request),)
        # The peer's identity: the chain and scheme of its last certificate
        # authentication (handshake or post-handshake), what every update is
        # compared with; and the chain now in force (it follows updates).
        self._peer_anchor: tuple[x509.Certificate, ...] = ()
        self._peer_scheme: SignatureScheme | None = None
        self._peer_chain: tuple[x509.Certificate, ...] = ()
        self._peer_used: tuple[bytes, ...] = ()
        self.peer_authenticated()
        # Ours: the engine keeps the chain and scheme of our last certificate
        # authentication (engine.local_certificates); this is the chain in
        # force once we sent updates.
        self._local_seen: tuple[x509.Certificate, ...] = ()
        self._local_chain: tuple[x509.Certificate, ...] = ()
        self._local_used: tuple[bytes, ...] = ()
        self._sync_local()
        #: An update the application asked for that has not gone yet: (chain, key).
        self._pending: tuple[tuple[x509.Certificate, ...], Any] | None = None
        self.received = 0
        self.sent = 0

    def __repr__(self) -> str:
        return (
            f"<CertificateUpdates sent={self.sent} received={self.received}"
            f" own_request={self._own_request is not None} peer_request={self._peer_request is not None}"
            f" pending={self._pending is not None}>"
        )

    # -- what the connection reads ------------------------------------------------------

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        return self._peer_chain

    @property
    def local_certificates(self) -> tuple[x509.Certificate, ...]:
        self._sync_local()
        return self._local_chain

    @property
    def pending(self) -> bool:
        return self._pending is not None

    # -- identities -----------------------------------------------------------------------

    def peer_authenticated(self) -> None:
        """The peer (re)authenticated with a certificate by the TLS mechanism:
        the handshake, or a completed post-handshake client authentication
        (RFC 9846 §4.6.2, which the application asked for and which may
        change the identity).  Its chain and scheme are the new reference."""
        engine = self._engine
        chain = engine.peer_certificates
        if not chain or engine.peer_signature_scheme is None or chain is self._peer_anchor:
            return
        self._peer_anchor = self._peer_chain = chain
        self._peer_scheme = engine.peer_signature_scheme
        self._peer_used += (_leaf_id(chain),)

    def _sync_local(self) -> None:
        """Our side of ``peer_authenticated``: the engine records the chain of
        every certificate authentication we make (handshake, or our answer to
        post-handshake client authentication)."""
        chain = self._engine.local_certificates
        if chain and chain is not self._local_seen:
            self._local_seen = self._local_chain = chain
            self._local_used += (_leaf_id(chain),)

    # -- receiving ------------------------------------------------------------------------

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        if msg_type == HandshakeType.certificate_update:
            self._on_certificate_update(body)
        else:
            self._on_certificate_update_request(body)

    def _on_certificate_update(self, body: bytes) -> None:
        request = self._own_request
        if request is None:
            # §4.2: "MUST NOT be sent unless a valid authenticator request has
            # been received from the peer and has not yet been used".
            raise RemoteProtocolError(
                "CertificateUpdate without an unused authenticator request of ours",
                AlertDescription.unexpected_message,
            )
        if not self._peer_anchor:
            # §4.2: a client that never authenticated with a certificate.
            raise RemoteProtocolError(
                "CertificateUpdate from a client that never authenticated with a certificate",
                AlertDescription.unexpected_message,
            )
        message = CertificateUpdate.decode(body)
        self._own_request = None  # §4.2: single-use, whatever the outcome
        try:
            result = self.host.exported_authenticators.validate(message.authenticator, request)
        except AuthenticatorRefused:
            # §4.2: "If the authenticator is empty ... illegal_parameter".
            raise RemoteProtocolError(
                "CertificateUpdate carries an empty authenticator", AlertDescription.illegal_parameter
            ) from None
        except AuthenticatorError as exc:
            # §4.2: validation according to RFC 9261 failed (MAC, signature,
            # context, or the chain against the trust store now).
            raise RemoteProtocolError(
                f"CertificateUpdate: {exc.args[0]}", AlertDescription.illegal_parameter
            ) from None
        chain = result.certificates
        try:
            check_same_identity(self._peer_anchor[0], chain[0])
        except IdentityViolation as exc:
            raise RemoteProtocolError(f"CertificateUpdate: {exc}", AlertDescription.illegal_parameter) from None
        if result.signature_scheme != self._peer_scheme:
            assert result.signature_scheme is not None and self._peer_scheme is not None
            raise RemoteProtocolError(
                f"CertificateUpdate signed with {result.signature_scheme.name}, but the peer authenticated"
                f" with {self._peer_scheme.name} (the same SignatureScheme is required)",
                AlertDescription.illegal_parameter,
            )
        leaf = _leaf_id(chain)
        if leaf in self._peer_used:
            raise RemoteProtocolError(
                "CertificateUpdate with a certificate already used on this connection",
                AlertDescription.illegal_parameter,
            )
        policy = self._config.certificate_update_policy
        if policy is not None and not policy(chain, self._peer_chain):
            raise RemoteProtocolError(
                "CertificateUpdate refused by the application's certificate_update_policy",
                AlertDescription.illegal_parameter,
            )
        self._peer_used += (leaf,)
        self._peer_chain = chain
        self.received += 1
        self.host.emit(CertificateUpdated(CertificateUpdateDirection.received, chain))
        # §5: a fresh request, so the peer can update again.
        self.issue_request()

    def _on_certificate_update_request(self, body: bytes) -> None:
        raw = CertificateUpdateRequest.decode(body).authenticator_request
        context = self._context_of_peer_request(raw)
        if self._peer_request is not None:
            # §5.1: "MUST wait for the peer to complete a CertificateUpdate
            # using the outstanding request before sending a new one".
            raise RemoteProtocolError(
                "CertificateUpdateRequest while the previous request is still unused",
                AlertDescription.unexpected_message,
            )
        if context in self._peer_contexts:
            # RFC 9261 §4: a context is unique to one request on a connection.
            raise RemoteProtocolError(
                "CertificateUpdateRequest reuses an earlier request's context", AlertDescription.illegal_parameter
            )
        self._peer_contexts += (context,)
        self._peer_request = raw
        self.resume()

    def _context_of_peer_request(self, raw: bytes) -> bytes:
        context, _ = parse_update_request(raw, from_client=not self.is_client, where="the peer's request")
        return context

    def issue_request(self) -> None:
        """Send a CertificateUpdateRequest if we have none outstanding (§5;
        after post-handshake client authentication too: decision 4)."""
        limit = self._config.max_peer_certificate_updates
        if (
            self._own_request is not None or self._peer_scheme is None or self.host.close_sent
            or (limit is not None and self.received >= limit)
        ):
            return
        # Decision 3: offer only the scheme the peer must keep using.
        request = self.host.exported_authenticators.request(signature_algorithms=(self._peer_scheme,))
        self.host.queue_handshake(encode_handshake(
            HandshakeType.certificate_update_request, CertificateUpdateRequest(request).encode()
        ))
        self._own_request = request

    # -- sending --------------------------------------------------------------------------

    def update(self, chain: Sequence[x509.Certificate], private_key: Any) -> None:
        """The application's update: check what we can check locally
        (LocalProtocolError names the rule), then send it now or keep it
        pending (the latest call wins)."""
        new = tuple(chain)
        self._check_local(new, private_key)
        if self._peer_request is not None:
            # The request is there: a request we cannot answer is the peer's
            # choice, refused now rather than after it was used.
            self._scheme_for(self._peer_request, new, private_key)
        self._pending = (new, private_key)
        self.resume(raise_errors=True)

    def _check_local(self, chain: tuple[x509.Certificate, ...], key: Any) -> None:
        self._sync_local()
        anchor, scheme = self._engine.local_certificates, self._engine.local_signature_scheme
        if not anchor or scheme is None:
            raise LocalProtocolError(
                "we never authenticated with a certificate on this connection: there is nothing to update"
            )
        if not chain or key is None:
            raise LocalProtocolError("a certificate update needs a certificate chain and its private key")
        try:
            check_key_matches_certificate(key, chain[0])
        except (ConfigurationError, AttributeError, TypeError, ValueError) as exc:
            raise LocalProtocolError(f"certificate update refused: the private key does not match: {exc}") from None
        try:
            check_same_identity(anchor[0], chain[0])
        except IdentityViolation as exc:
            raise LocalProtocolError(f"certificate update refused: {exc}") from None
        if scheme not in signatures.schemes_for_key(key, chain[0]):
            raise LocalProtocolError(
                f"certificate update refused (signature scheme rule): the new key cannot sign with"
                f" {scheme.name}, the scheme of our handshake authentication"
            )
        if _leaf_id(chain) in self._local_used:
            raise LocalProtocolError(
                "certificate update refused (reuse rule): this certificate was already used on this connection"
            )

    def _scheme_for(self, request: bytes, chain: tuple[x509.Certificate, ...], key: Any) -> None:
        """Whether we can answer ``request`` with the scheme of our last
        certificate authentication (draft §4.1): the request offers it and the
        key can sign with it; LocalProtocolError if not."""
        scheme = self._engine.local_signature_scheme
        _, offered = parse_update_request(request, from_client=not self.is_client, where="the peer's request")
        if scheme is None or scheme not in offered or scheme not in signatures.schemes_for_key(key, chain[0]):
            assert scheme is not None
            raise LocalProtocolError(
                f"certificate update refused (signature scheme rule): the peer's request does not let us"
                f" sign with {scheme.name}, the scheme of our handshake authentication"
            )

    def resume(self, *, raise_errors: bool = False) -> None:
        """Send the pending update if nothing holds it back any more: the
        peer's request arrived, an EKU or a client authentication ended, the
        transport lets it go (decision 5).

        An update that waited and can no longer go (a post-handshake
        authentication moved our reference, the peer's new request does not
        offer our scheme) is dropped with a warning: the old certificate stays
        in use.  ``raise_errors``: the application is calling, raise instead.
        """
        pending, request = self._pending, self._peer_request
        if pending is None or request is None or not self.host.certificate_update_may_go():
            return
        chain, key = pending
        self._pending = None
        try:
            self._check_local(chain, key)
            self._scheme_for(request, chain, key)
            authenticator = self.host.exported_authenticators.authenticate(
                request, chain=chain, private_key=key, scheme=self._engine.local_signature_scheme
            )
        except (LocalProtocolError, AuthenticatorError) as exc:
            if raise_errors:
                raise LocalProtocolError(f"certificate update refused: {exc.args[0]}") from None
            logger.warning("pending certificate update dropped: %s", exc)
            return
        self._peer_request = None  # §4.2: single-use
        self.host.queue_handshake(encode_handshake(
            HandshakeType.certificate_update, CertificateUpdate(authenticator).encode()
        ))
        self._local_used += (_leaf_id(chain),)
        self._local_chain = chain
        self.sent += 1
        self.host.emit(CertificateUpdated(CertificateUpdateDirection.sent, chain))
