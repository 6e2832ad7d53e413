"""Post-handshake client authentication (RFC 9846 §4.6.2), a post-handshake protocol.

The server asks with a CertificateRequest that carries a fresh, unpredictable
context; the client answers with Certificate, CertificateVerify (when it has a
certificate to send) and Finished, each over the transcript of the handshake
(ClientHello..client Finished) followed by the messages of this exchange
(RFC 9846 §4.4; after a draft-13 extended key update, transcript_hash_N
instead: EKU draft-13 §8.1).  Every exchange has its own transcript, so
several may follow one another.

Each side is one object that the ``PostHandshakeArbiter`` routes its messages
to and asks whether an exchange is under way (no EKU during client
authentication and no client authentication during an EKU, EKU draft-13
§8.3).  The checks on certificates and signatures are the engines' own,
shared with the handshake: ``ServerHandshake.accept_client_certificate`` and
``ClientHandshake.answer_certificate_request``.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Protocol

from ..constants import AlertDescription, ExtensionType, HandshakeType
from ..crypto import key_schedule as ks
from ..errors import LocalProtocolError, RemoteProtocolError
from ..events import PeerAuthenticated
from ..wire.messages import CertificateRequest, encode_handshake
from .client import ClientHandshake
from .server import ServerHandshake

#: RFC 9846 §4.6.2 asks for a context unique on the connection and
#: unpredictable; 16 random bytes are both.
CONTEXT_LENGTH = 16


class ClientAuthentication(Protocol):
    """One side of post-handshake client authentication, as the arbiter and the connection see it."""

    @property
    def message_types(self) -> frozenset[int]: ...

    @property
    def in_progress(self) -> bool: ...

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None: ...

    def request(self) -> None:
        """Ask the peer for its certificate (a server only)."""


def client_authentication(engine: ClientHandshake | ServerHandshake) -> ClientAuthentication:
    """The side of post-handshake client authentication that goes with ``engine``."""
    if isinstance(engine, ServerHandshake):
        return AuthenticationRequester(engine)
    return AuthenticationResponder(engine)


class _Wait(Enum):
    """Where the server's exchange stands."""

    IDLE = auto()
    CERTIFICATE = auto()
    CERTIFICATE_VERIFY = auto()
    FINISHED = auto()


class AuthenticationRequester:
    """The server's side: it asks, then checks the client's answer."""

    message_types = frozenset({
        HandshakeType.certificate, HandshakeType.compressed_certificate,
        HandshakeType.certificate_verify, HandshakeType.finished,
    })

    def __init__(self, engine: ServerHandshake) -> None:
        self._engine = engine
        self._wait = _Wait.IDLE
        self._context = b""
        self._transcript: ks.Transcript | None = None

    def __repr__(self) -> str:
        return f"<AuthenticationRequester waiting for {self._wait.name}>"

    @property
    def in_progress(self) -> bool:
        return self._wait is not _Wait.IDLE

    def request(self) -> None:
        engine = self._engine
        if engine.external_psk_used:
            # RFC 9846 §4.3.2: not on a connection authenticated by an external PSK.
            raise LocalProtocolError("a connection authenticated with an external PSK cannot ask for a certificate")
        if not engine.client_offered_post_handshake_auth:
            raise LocalProtocolError("the client did not offer post_handshake_auth")
        if self.in_progress:
            raise LocalProtocolError("a client authentication request is already in progress")
        engine.conn.check_client_auth_may_start(requested_by_peer=False)
        self._context = engine.config.random(CONTEXT_LENGTH)
        transcript = engine.post_handshake_transcript()
        raw = encode_handshake(
            HandshakeType.certificate_request,
            CertificateRequest(self._context, engine.certificate_request_extensions()).encode(),
        )
        transcript.update(raw)
        engine.conn.queue_handshake(raw)
        self._transcript = transcript
        self._wait = _Wait.CERTIFICATE

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        engine, transcript = self._engine, self._transcript
        if self._wait is _Wait.CERTIFICATE and msg_type in (
            HandshakeType.certificate, HandshakeType.compressed_certificate
        ):
            assert transcript is not None
            cert = engine.client_certificate(msg_type, body)
            has_chain = engine.accept_client_certificate(cert, self._context, transcript, raw)
            self._wait = _Wait.CERTIFICATE_VERIFY if has_chain else _Wait.FINISHED
        elif self._wait is _Wait.CERTIFICATE_VERIFY and msg_type == HandshakeType.certificate_verify:
            assert transcript is not None
            engine.accept_client_certificate_verify(body, transcript, raw)
            self._wait = _Wait.FINISHED
        elif self._wait is _Wait.FINISHED and msg_type == HandshakeType.finished:
            assert transcript is not None
            engine.check_finished(body, engine.conn.current_read_secret, transcript)
            self._wait, self._context, self._transcript = _Wait.IDLE, b"", None
            engine.conn.emit(PeerAuthenticated(
                engine.peer_certificates, engine.peer_signature_scheme, engine.peer_certificate_compression
            ))
            engine.conn.post_handshake_auth_done()
        else:
            raise RemoteProtocolError(
                f"unexpected handshake message {HandshakeType(msg_type).name} after the handshake"
                f" (client authentication waiting for {self._wait.name})",
                AlertDescription.unexpected_message,
            )


class AuthenticationResponder:
    """The client's side: it answers each CertificateRequest at once, in one flight."""

    message_types = frozenset({HandshakeType.certificate_request})
    #: The client answers in the same step it is asked: nothing stays open.
    in_progress = False

    def __init__(self, engine: ClientHandshake) -> None:
        self._engine = engine
        self._requests = 0

    def __repr__(self) -> str:
        return f"<AuthenticationResponder answered={self._requests}>"

    def request(self) -> None:
        raise LocalProtocolError("only a server can request client authentication")

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        engine, config = self._engine, self._engine.config
        if engine.external_psk_used:
            # RFC 9846 §4.3.2: never after an external PSK handshake.
            raise RemoteProtocolError(
                "CertificateRequest on a connection authenticated with an external PSK",
                AlertDescription.unexpected_message,
            )
        if not (config.post_handshake_auth and config.certificate_chain):
            raise RemoteProtocolError(
                "CertificateRequest after the handshake without post_handshake_auth",
                AlertDescription.unexpected_message,
            )
        # Each request costs us a signature: a server asking without end is cut
        # off, with the alert of our other per-connection limits.
        self._requests += 1
        limit = config.max_post_handshake_auth_requests
        if limit is not None and self._requests > limit:
            raise RemoteProtocolError(
                f"more than {limit} post-handshake CertificateRequests (max_post_handshake_auth_requests)",
                AlertDescription.unexpected_message,
            )
        request = CertificateRequest.decode(body)
        if not request.certificate_request_context:
            raise RemoteProtocolError("post-handshake CertificateRequest needs a context", AlertDescription.illegal_parameter)
        if not any(e.type == ExtensionType.signature_algorithms for e in request.extensions):
            raise RemoteProtocolError("CertificateRequest without signature_algorithms", AlertDescription.missing_extension)
        # EKU draft-13 §8.3: not while an extended key update runs (the arbiter decides).
        engine.conn.check_client_auth_may_start(requested_by_peer=True)
        transcript = engine.post_handshake_transcript()
        transcript.update(raw)
        engine.answer_certificate_request(request.certificate_request_context, request, transcript)
        engine.conn.queue_handshake(encode_handshake(
            HandshakeType.finished, engine.finished_body(engine.conn.current_write_secret, transcript)
        ))
