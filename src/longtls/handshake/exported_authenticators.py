"""Exported Authenticators (RFC 9261): proofs of an identity made after the handshake.

An authenticator request (a CertificateRequest from a server, a
ClientCertificateRequest from a client, RFC 9261 §4) and an authenticator
(Certificate || CertificateVerify || Finished, §5) are bytes the application
carries however it likes; they are bound to the connection by two exporter
values (§5.1): the Handshake Context and the Finished MAC Key.

Two levels:

- the core functions (``authenticator_keys``, ``encode_authenticator_request``,
  ``decode_authenticator_request``, ``create_authenticator``,
  ``create_empty_authenticator``, ``open_authenticator``) build and check the
  messages from the keys and nothing else.  They raise RemoteProtocolError
  with the alert that fits a malformed or forged input; what that means for
  a connection is the caller's business (Certificate Update ends the
  connection, the public API does not);
- ``ExportedAuthenticators`` is the per-connection state behind the public
  API (RFC 9261 §7): it chooses contexts and signature schemes, keeps the
  contexts unique on the connection (§4, §5.2.1, §7), verifies chains like
  the handshake does, and turns the core's errors into
  ``errors.AuthenticatorError`` (the connection is not affected: these are
  application-layer bytes).

Every message is encoded as a TLS handshake message with its 4-byte header
(type, uint24 length), also over DTLS: RFC 9261 §4 and §5.2 say "TLS handshake
messages", and the DTLS handshake header only serves DTLS's own reassembly.
The exporter labels are RFC 9261's own; over DTLS the exporter's
HKDF-Expand-Label runs under "dtls13" (RFC 9147 §5.9), which the connection's
exporter does.

Generations (EKU draft-13 §11.2 updating RFC 9261 §5.1): the exporter comes
from the connection per generation, see ``ExporterByGeneration`` and
docs/exported-authenticators.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..config import Configuration
from ..constants import AlertDescription, ExtensionType, HandshakeType, SignatureScheme
from ..crypto import key_schedule as ks
from ..crypto import signatures
from ..crypto.suites import SuiteInfo
from ..errors import (
    AuthenticatorError,
    AuthenticatorRefused,
    DecodeError,
    LocalProtocolError,
    RemoteProtocolError,
)
from ..wire import extensions as X
from ..wire.buffer import Buffer
from ..wire.messages import (
    Certificate,
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    Extension,
    Finished,
    encode_handshake,
    extensions_by_type,
)
from .common import HandshakeEngine, decode_certificates

__all__ = [
    "CONTEXT_LENGTH",
    "AuthenticatorKeys",
    "ChainVerifier",
    "ExportedAuthenticators",
    "Exporter",
    "ExporterByGeneration",
    "ValidatedAuthenticator",
    "authenticator_keys",
    "create_authenticator",
    "create_empty_authenticator",
    "decode_authenticator_request",
    "encode_authenticator_request",
    "exported_authenticators_for",
    "open_authenticator",
]

#: TLS-Exporter(label, context_value, length), as the connection offers it.
Exporter = Callable[[bytes, bytes, int], bytes]
#: The exporter of a generation: None = the connection's current one.
#: Raises LocalProtocolError for a generation that is gone (or not there yet).
ExporterByGeneration = Callable[[int | None], Exporter]
#: Checks a peer's chain (leaf first); raises to refuse it.
ChainVerifier = Callable[[Sequence[x509.Certificate]], None]

#: Request and spontaneous contexts we choose: 32 random bytes, unique and
#: unpredictable (RFC 9261 §4, §5.2.1) with no need to remember which were drawn.
CONTEXT_LENGTH = 32

# RFC 9261 §5.1: the exporter labels, by the role of the authenticator's sender.
_HANDSHAKE_CONTEXT_LABEL = {
    True: b"EXPORTER-client authenticator handshake context",
    False: b"EXPORTER-server authenticator handshake context",
}
_FINISHED_KEY_LABEL = {
    True: b"EXPORTER-client authenticator finished key",
    False: b"EXPORTER-server authenticator finished key",
}
# RFC 9261 §5.2.2: the CertificateVerify context string.
_CV_CONTEXT = b"Exported Authenticator"
_REQUEST_TYPES = {True: HandshakeType.client_certificate_request, False: HandshakeType.certificate_request}
_DER = Encoding.DER


# --- keys ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class AuthenticatorKeys:
    """The Handshake Context and Finished MAC Key of one sender (RFC 9261 §5.1)."""

    handshake_context: bytes
    finished_key: bytes

    def __repr__(self) -> str:  # both are exporter outputs: never shown
        return f"<AuthenticatorKeys {len(self.finished_key)}-byte>"


def authenticator_keys(
    export: Exporter, hash_length: int, *, sender_is_client: bool
) -> AuthenticatorKeys:
    """RFC 9261 §5.1: both values from the exporter, empty context_value, the
    length of the authenticator hash (the suite's), labels by the sender's role."""
    return AuthenticatorKeys(
        handshake_context=export(_HANDSHAKE_CONTEXT_LABEL[sender_is_client], b"", hash_length),
        finished_key=export(_FINISHED_KEY_LABEL[sender_is_client], b"", hash_length),
    )


# --- requests (RFC 9261 §4) ----------------------------------------------------------------


def encode_authenticator_request(
    *, from_client: bool, context: bytes, extensions: Sequence[Extension]
) -> bytes:
    """The whole request message: ClientCertificateRequest (17) from a client,
    CertificateRequest (13) from a server; the structures are the same (§4)."""
    body = CertificateRequest(bytes(context), tuple(extensions)).encode()
    return encode_handshake(_REQUEST_TYPES[from_client], body)


def decode_authenticator_request(
    raw: bytes, *, from_client: bool, require_signature_algorithms: bool = True
) -> CertificateRequest:
    """Parse a request sent by a client (``from_client``) or a server.

    The wrong message type, a bad length, trailing bytes or a malformed
    extension block are decode_error (RFC 9846 §6.2); a duplicated extension
    is illegal_parameter; a request without signature_algorithms, which
    RFC 9261 §7 says it MUST include (the signature scheme is chosen from it,
    §5.2.2), is missing_extension unless ``require_signature_algorithms`` is
    False.  The result's ``msg_type`` is CertificateRequest's either way.
    """
    expected = _REQUEST_TYPES[from_client]
    msg_type, body = _split_one(raw, "authenticator request")
    if msg_type != expected:
        raise DecodeError(
            f"an authenticator request from a {'client' if from_client else 'server'} is a "
            f"{expected.name} (type {int(expected)}), not type {msg_type}"
        )
    request = CertificateRequest.decode(body)
    found = extensions_by_type(request.extensions)
    if ExtensionType.signature_algorithms in found:
        X.decode_signature_algorithms(found[ExtensionType.signature_algorithms])
    elif require_signature_algorithms:
        raise RemoteProtocolError(
            "authenticator request without signature_algorithms", AlertDescription.missing_extension
        )
    return request


def _spki(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def _split_one(raw: bytes, what: str) -> tuple[int, bytes]:
    buf = Buffer(raw)
    msg_type = buf.read_uint8()
    body = buf.read_vector(3)
    buf.expect_end(what)
    return msg_type, body


def _request_signature_algorithms(request: CertificateRequest) -> tuple[int, ...] | None:
    data = extensions_by_type(request.extensions).get(ExtensionType.signature_algorithms)
    return None if data is None else tuple(X.decode_signature_algorithms(data))


# --- authenticators (RFC 9261 §5.2, §6) ------------------------------------------------------


def _hash(suite: SuiteInfo, *parts: bytes) -> bytes:
    return ks.transcript_digest(suite, b"".join(parts))


def _finished(suite: SuiteInfo, keys: AuthenticatorKeys, transcript_hash: bytes) -> bytes:
    """RFC 9261 §5.2.3: HMAC keyed with the Finished MAC Key itself (no HKDF step,
    unlike the handshake's Finished)."""
    mac = hmac.HMAC(keys.finished_key, suite.hash)
    mac.update(transcript_hash)
    return mac.finalize()


def _certificate_verify_content(transcript_hash: bytes) -> bytes:
    # RFC 9261 §5.2.2: 64 x 0x20, "Exported Authenticator", 0x00, the hash.
    return b" " * 64 + _CV_CONTEXT + b"\x00" + transcript_hash


def _request_bytes(request: bytes | None) -> bytes:
    return b"" if request is None else request


def _check_context(request: bytes | None, context: bytes) -> None:
    if request is not None:
        _, body = _split_one(request, "authenticator request")
        if CertificateRequest.decode(body).certificate_request_context != context:
            raise LocalProtocolError("the context of an authenticator must be its request's")
    if len(context) > 255:
        raise LocalProtocolError("a certificate_request_context has at most 255 bytes")


def create_authenticator(
    suite: SuiteInfo, keys: AuthenticatorKeys, *, request: bytes | None, context: bytes,
    chain: Sequence[x509.Certificate], private_key: Any, scheme: SignatureScheme,
) -> bytes:
    """Certificate || CertificateVerify || Finished (RFC 9261 §5.2.4).

    ``request`` is the whole request message (None: a spontaneous server
    authenticator); ``context`` must be the request's.  The Certificate
    entries carry no extensions (we send none that a request could ask for).
    """
    _check_context(request, context)
    if not chain:
        raise LocalProtocolError("an authenticator needs a certificate chain (refuse with an empty one instead)")
    entries = tuple(CertificateEntry(cert.public_bytes(_DER), ()) for cert in chain)
    certificate = encode_handshake(HandshakeType.certificate, Certificate(context, entries).encode())
    prefix = keys.handshake_context + _request_bytes(request)
    content = _certificate_verify_content(_hash(suite, prefix, certificate))
    signature = signatures.sign(private_key, scheme, content)
    certificate_verify = encode_handshake(
        HandshakeType.certificate_verify, CertificateVerify(scheme, signature).encode()
    )
    verify_data = _finished(suite, keys, _hash(suite, prefix, certificate, certificate_verify))
    return certificate + certificate_verify + encode_handshake(HandshakeType.finished, Finished(verify_data).encode())


def create_empty_authenticator(
    suite: SuiteInfo, keys: AuthenticatorKeys, *, request: bytes | None, context: bytes
) -> bytes:
    """RFC 9261 §6: a Finished alone, the MAC over Handshake Context || request ||
    a Certificate with the context and no entries."""
    _check_context(request, context)
    certificate = encode_handshake(HandshakeType.certificate, Certificate(context, ()).encode())
    verify_data = _finished(suite, keys, _hash(suite, keys.handshake_context, _request_bytes(request), certificate))
    return encode_handshake(HandshakeType.finished, Finished(verify_data).encode())


@dataclass(frozen=True, slots=True)
class ValidatedAuthenticator:
    """What a valid authenticator proves: the identity and the context it answers."""

    context: bytes
    #: The chain, leaf first; () for an empty authenticator (a refusal, §6).
    certificates: tuple[x509.Certificate, ...]
    #: The CertificateVerify's scheme; None for an empty authenticator.
    signature_scheme: SignatureScheme | None

    @property
    def empty(self) -> bool:
        return not self.certificates


def _split_messages(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(type, body, whole message) of each handshake message in ``data``."""
    buf = Buffer(data)
    out: list[tuple[int, bytes, bytes]] = []
    while not buf.eof():
        start = len(data) - buf.remaining
        msg_type = buf.read_uint8()
        body = buf.read_vector(3)
        out.append((msg_type, body, data[start:len(data) - buf.remaining]))
    return out


_AUTHENTICATOR_SHAPES = (
    (HandshakeType.finished,),
    (HandshakeType.certificate, HandshakeType.certificate_verify, HandshakeType.finished),
)


def open_authenticator(
    suite: SuiteInfo, keys: AuthenticatorKeys, *, request: bytes | None, data: bytes,
    allowed_schemes: Sequence[int] | None,
    verify_chain: ChainVerifier | None,
    max_chain_length: int = 10,
) -> ValidatedAuthenticator:
    """Check an authenticator (RFC 9261 §5.2.4) or an empty one (§6).

    ``request`` is the whole request it answers (None: spontaneous, from a
    server); ``allowed_schemes`` the signature schemes its CertificateVerify
    may use (the request's signature_algorithms, or the ClientHello's, §5.2.2;
    None: any TLS 1.3 scheme); ``verify_chain`` checks the chain last (None:
    not at all).  The Finished MAC is checked first, in constant time, so
    nothing else of a forged authenticator is parsed.  Alerts: decode_error
    (framing, syntax, a Finished of the wrong length, a Certificate with no
    entries), unexpected_message (messages of the wrong types or order, an
    empty authenticator without a request), decrypt_error (MAC or signature),
    illegal_parameter (context, scheme), unsupported_extension (certificate
    entry extensions: our requests ask for none), bad_certificate (DER,
    chain length), and whatever ``verify_chain`` raises.
    """
    messages = _split_messages(data)
    shape = tuple(msg_type for msg_type, _, _ in messages)
    if shape not in _AUTHENTICATOR_SHAPES:
        raise RemoteProtocolError(
            "an authenticator is Certificate, CertificateVerify, Finished (or Finished alone), "
            f"not message types {list(shape)}",
            AlertDescription.unexpected_message,
        )
    finished_body = messages[-1][1]
    if len(finished_body) != suite.hash_length:
        raise DecodeError("authenticator Finished has the wrong length")
    prefix = keys.handshake_context + _request_bytes(request)

    if len(messages) == 1:
        if request is None:
            raise RemoteProtocolError(
                "an empty authenticator answers a request, and none was given",
                AlertDescription.unexpected_message,
            )
        context = decode_authenticator_request(
            request, from_client=request[0] == HandshakeType.client_certificate_request,
            require_signature_algorithms=False,
        ).certificate_request_context
        certificate = encode_handshake(HandshakeType.certificate, Certificate(context, ()).encode())
        _check_mac(suite, keys, finished_body, _hash(suite, prefix, certificate))
        return ValidatedAuthenticator(context, (), None)

    (_, certificate_body, certificate), (_, cv_body, certificate_verify), _ = messages
    _check_mac(suite, keys, finished_body, _hash(suite, prefix, certificate, certificate_verify))
    parsed = Certificate.decode(certificate_body)
    context = parsed.certificate_request_context
    if request is not None:
        expected = CertificateRequest.decode(_split_one(request, "authenticator request")[1])
        if context != expected.certificate_request_context:
            raise RemoteProtocolError(
                "authenticator context is not its request's", AlertDescription.illegal_parameter
            )
    if not parsed.certificate_list:
        raise DecodeError("authenticator Certificate without certificates (a refusal is a Finished alone)")
    if any(entry.extensions for entry in parsed.certificate_list):
        # RFC 9261 §5.2.1: only extensions the request carried; ours carry none
        # that a certificate entry answers.
        raise RemoteProtocolError(
            "authenticator certificate entry carries extensions we did not ask for",
            AlertDescription.unsupported_extension,
        )
    chain = decode_certificates(parsed.certificate_list, max_chain_length)
    cv = CertificateVerify.decode(cv_body)
    if allowed_schemes is not None and cv.algorithm not in allowed_schemes:
        raise RemoteProtocolError(
            f"authenticator CertificateVerify uses scheme 0x{cv.algorithm:04x}, which was not offered",
            AlertDescription.illegal_parameter,
        )
    leaf = chain[0]
    try:
        # schemes_for_key inside verify admits TLS 1.3 schemes only (§5.2.2:
        # no RSASSA-PKCS1-v1_5, ECDSA with the curve's own hash).
        signatures.verify(
            leaf.public_key(), cv.algorithm, cv.signature,
            _certificate_verify_content(_hash(suite, prefix, certificate)), cert=leaf,
        )
    except (ValueError, TypeError):
        raise RemoteProtocolError("authenticator certificate has a malformed field", AlertDescription.bad_certificate) from None
    if verify_chain is not None:
        verify_chain(chain)
    return ValidatedAuthenticator(context, tuple(chain), SignatureScheme(cv.algorithm))


def _check_mac(suite: SuiteInfo, keys: AuthenticatorKeys, verify_data: bytes, transcript_hash: bytes) -> None:
    if not ks.constant_time_equal(_finished(suite, keys, transcript_hash), verify_data):
        raise RemoteProtocolError(
            "authenticator Finished does not verify (another connection, generation or request?)",
            AlertDescription.decrypt_error,
        )


# --- the per-connection state behind the public API (RFC 9261 §7) ---------------------------


# How a certificate_request_context was used on a connection (bits).
_REQUESTED = 1  # in one of our requests
_BUILT = 2  # in an authenticator or refusal we made
_VALIDATED = 4  # in a peer's authenticator we validated


class ExportedAuthenticators:
    """Exported Authenticators on one established connection, either role.

    Uniqueness (RFC 9261 §4, §5.2.1, §7): a context we put in a request is
    never put in another of our requests; we never build a second
    authenticator (or refusal) for a context we already built one for or
    validated one for; a context validated once (a refusal included) is
    never validated again.  The sets grow by one small entry per use.
    """

    def __init__(
        self, *, is_client: bool, suite: SuiteInfo, exporter: ExporterByGeneration,
        configuration: Configuration, signature_algorithms: Sequence[int],
        client_hello_signature_algorithms: Sequence[int], verify_peer_chain: ChainVerifier | None,
        own_credential: Callable[[], tuple[Sequence[x509.Certificate], Any]] | None = None,
    ) -> None:
        self.is_client = is_client
        #: The chain and key an authenticator defaults to: the connection's
        #: (a server's chosen by server_name, docs/sni.md), read when used;
        #: None: the configuration's.
        self._own_credential = own_credential or (
            lambda: (configuration.certificate_chain, configuration.private_key)
        )
        self.suite = suite
        self._exporter = exporter
        self._config = configuration
        #: Ours: offered in our requests, and what we sign with.
        self._signature_algorithms = tuple(signature_algorithms)
        #: The ClientHello's (RFC 9261 §5.2.2: spontaneous server authenticators).
        self._client_hello_signature_algorithms = tuple(client_hello_signature_algorithms)
        self._verify_peer_chain = verify_peer_chain
        # Every context used, with how (_REQUESTED, _BUILT, _VALIDATED bits):
        # one dict that stays empty (64 bytes) on the many connections that
        # never use authenticators, where three empty sets took 648 (issue 16).
        self._contexts: dict[bytes, int] = {}

    def __repr__(self) -> str:
        return (
            f"<ExportedAuthenticators {'client' if self.is_client else 'server'} "
            f"requests={self._count(_REQUESTED)} built={self._count(_BUILT)} validated={self._count(_VALIDATED)}>"
        )

    def _count(self, use: int) -> int:
        return sum(1 for uses in self._contexts.values() if uses & use)

    def _used(self, context: bytes, uses: int) -> bool:
        """``context`` was used in one of the ways ``uses`` names."""
        return bool(self._contexts.get(context, 0) & uses)

    def _record(self, context: bytes, use: int) -> None:
        self._contexts[context] = self._contexts.get(context, 0) | use

    def keys(self, *, sender_is_client: bool, generation: int | None = None) -> AuthenticatorKeys:
        """The Handshake Context and Finished MAC Key of a sender, from the
        exporter of ``generation`` (None: the current one)."""
        return authenticator_keys(self._exporter(generation), self.suite.hash_length, sender_is_client=sender_is_client)

    def _fresh_context(self) -> bytes:
        while True:
            context = self._config.random(CONTEXT_LENGTH)
            if context not in self._contexts:
                return context

    # -- the "request" API (§7.1) --

    def request(
        self, context: bytes | None = None, *, signature_algorithms: Sequence[int] | None = None,
        extensions: Sequence[Extension] = (),
    ) -> bytes:
        """A new authenticator request: a ClientCertificateRequest from a client,
        a CertificateRequest from a server.  ``context`` defaults to 32 random
        bytes; one used in an earlier request of ours is refused.  The
        request offers ``signature_algorithms`` (default: ours) and then
        ``extensions``."""
        if context is None:
            context = self._fresh_context()
        elif len(context) > 255:
            raise LocalProtocolError("a certificate_request_context has at most 255 bytes")
        elif self._used(context, _REQUESTED):
            raise LocalProtocolError("this context was already used in a request on this connection")
        if any(ext.type == ExtensionType.signature_algorithms for ext in extensions):
            raise LocalProtocolError("pass signature_algorithms= rather than a signature_algorithms extension")
        schemes = self._signature_algorithms if signature_algorithms is None else tuple(signature_algorithms)
        if not schemes:
            raise LocalProtocolError("a request offers at least one signature scheme")
        first = Extension(ExtensionType.signature_algorithms, X.encode_signature_algorithms(list(schemes)))
        raw = encode_authenticator_request(from_client=self.is_client, context=context, extensions=(first, *extensions))
        self._record(bytes(context), _REQUESTED)
        return raw

    def register_request(self, request: bytes) -> None:
        """Count a request of ours made before this object existed (e.g. one
        sent during the handshake) so its context is never used again."""
        self._record(self._own_request(request).certificate_request_context, _REQUESTED)

    # -- the "authenticate" API (§7.3) --

    def authenticate(
        self, request: bytes | None, *, chain: Sequence[x509.Certificate] | None = None,
        private_key: Any = None, context: bytes | None = None, generation: int | None = None,
        scheme: SignatureScheme | None = None,
    ) -> bytes:
        """Our authenticator for the peer's ``request`` (None: a spontaneous
        one, a server only, with a fresh context unless ``context`` is given).

        ``chain`` and ``private_key`` default to the connection's own (the
        configuration's, or the credential a server chose by server_name).  The
        scheme is ``scheme`` if given (it must fit the key and be offered),
        else the first of ours that fits the key and is in the request's
        signature_algorithms (spontaneous: the ClientHello's).
        Raises AuthenticatorError if the request is malformed or no scheme
        fits, LocalProtocolError for a use the RFC forbids."""
        own_chain, own_key = self._own_credential()
        chain = list(own_chain if chain is None else chain)
        key = own_key if private_key is None else private_key
        if not chain or key is None:
            raise LocalProtocolError("an authenticator needs a certificate chain and its private key")
        if _spki(key.public_key()) != _spki(chain[0].public_key()):
            # Caught here: the peer would only see a signature that does not verify.
            raise LocalProtocolError("the private key is not the key of the chain's first certificate")
        context, offered = self._answering(request, context)
        if scheme is not None:
            offered = (scheme,) if scheme in offered else ()
        scheme = self._choose_scheme(key, chain[0], offered)
        keys = self.keys(sender_is_client=self.is_client, generation=generation)
        authenticator = create_authenticator(
            self.suite, keys, request=request, context=context, chain=chain, private_key=key, scheme=scheme
        )
        self._record(context, _BUILT)
        return authenticator

    def refuse(self, request: bytes, *, generation: int | None = None) -> bytes:
        """An empty authenticator (RFC 9261 §6): we decline the peer's request."""
        context, _ = self._answering(request, None)
        keys = self.keys(sender_is_client=self.is_client, generation=generation)
        authenticator = create_empty_authenticator(self.suite, keys, request=request, context=context)
        self._record(context, _BUILT)
        return authenticator

    def _answering(self, request: bytes | None, context: bytes | None) -> tuple[bytes, tuple[int, ...]]:
        """The context and the signature schemes offered for our answer to ``request``."""
        if request is None:
            if self.is_client:
                # RFC 9261 §5: "Clients MUST NOT send an authenticator without
                # a preceding authenticator request".
                raise LocalProtocolError("a client authenticates only in answer to a request")
            if context is None:
                context = self._fresh_context()
            elif context in self._contexts:
                raise LocalProtocolError("this context was already used on this connection")
            if len(context) > 255:
                raise LocalProtocolError("a certificate_request_context has at most 255 bytes")
            return context, self._client_hello_signature_algorithms
        try:
            parsed = decode_authenticator_request(request, from_client=not self.is_client)
        except RemoteProtocolError as exc:
            raise AuthenticatorError(f"the peer's authenticator request: {exc.args[0]}", exc.alert) from None
        if context is not None and context != parsed.certificate_request_context:
            raise LocalProtocolError("context= differs from the request's context")
        context = parsed.certificate_request_context
        if self._used(context, _REQUESTED):
            # RFC 9261 §4: a context of a ClientCertificateRequest "cannot be
            # used in an authenticator CertificateRequest on the same
            # connection, and vice versa".
            raise AuthenticatorError(
                "the peer's request reuses the context of one of our requests", AlertDescription.illegal_parameter
            )
        # RFC 9261 §5.2: no second authenticator for a context we already
        # built one for or validated one with.
        if self._used(context, _BUILT | _VALIDATED):
            raise LocalProtocolError("an authenticator for this context was already made or validated")
        offered = _request_signature_algorithms(parsed)
        assert offered is not None  # decode_authenticator_request required it
        return context, offered

    def _choose_scheme(self, key: Any, leaf: x509.Certificate, offered: Sequence[int]) -> SignatureScheme:
        for scheme in signatures.schemes_for_key(key, leaf):
            if scheme in offered and scheme in self._signature_algorithms:
                return scheme
        # §5.2.2: "If there are no available signature algorithms, then no
        # authenticator should be constructed."
        raise AuthenticatorError(
            f"no signature scheme offered by the peer fits our {signatures.key_description(key)} key",
            AlertDescription.handshake_failure,
        )

    # -- the "validate" API (§7.4) --

    def validate(
        self, authenticator: bytes, request: bytes | None = None, *, generation: int | None = None,
        verify_chain: ChainVerifier | None = None,
    ) -> ValidatedAuthenticator:
        """Check the peer's authenticator for our ``request`` (None: a
        spontaneous server authenticator, so a client only).

        The chain is checked by ``verify_chain`` if given, else as the
        handshake checks the peer's (trust store, time, and for a server's
        the server name; not at all for a client with verify_peer off).
        ``verify_chain`` refuses by raising: a RemoteProtocolError (e.g.
        CertificateError) becomes an AuthenticatorError with its alert, an
        AuthenticatorError passes as it is, anything else propagates; a
        refused authenticator does not use up its context.
        Raises AuthenticatorError (its ``alert`` names why) when invalid,
        AuthenticatorRefused for a well-formed empty authenticator (§7:
        "returned as invalid"), also when the context was validated before.
        The connection itself is not affected."""
        if request is None:
            if not self.is_client:
                raise LocalProtocolError("a client's authenticator always answers a request: pass it")
            offered: Sequence[int] | None = self._signature_algorithms  # the ClientHello's (§5.2.2)
        else:
            offered = _request_signature_algorithms(self._own_request(request))
        keys = self.keys(sender_is_client=not self.is_client, generation=generation)
        try:
            result = open_authenticator(
                self.suite, keys, request=request, data=authenticator, allowed_schemes=offered,
                verify_chain=verify_chain or self._verify_peer_chain,
                max_chain_length=self._config.max_certificate_chain_length,
            )
        except RemoteProtocolError as exc:
            raise AuthenticatorError(f"invalid authenticator: {exc.args[0]}", exc.alert) from None
        if self._used(result.context, _VALIDATED):
            raise AuthenticatorError(
                "an authenticator with this context was already validated", AlertDescription.illegal_parameter
            )
        self._record(result.context, _VALIDATED)
        if result.empty:
            raise AuthenticatorRefused("the peer declined the request (empty authenticator)", AlertDescription.certificate_required)
        return result

    def _own_request(self, request: bytes) -> CertificateRequest:
        try:
            return decode_authenticator_request(request, from_client=self.is_client, require_signature_algorithms=False)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"not a request of ours: {exc.args[0]}") from None

    # -- the "get context" API (§7.2) --

    @staticmethod
    def context_of(message: bytes) -> bytes:
        """The certificate_request_context of a request or an authenticator.
        An empty authenticator does not carry it (AuthenticatorError)."""
        try:
            msg_type = Buffer(message).read_uint8()
            if msg_type in (HandshakeType.certificate_request, HandshakeType.client_certificate_request):
                return CertificateRequest.decode(_split_one(message, "authenticator request")[1]).certificate_request_context
            if msg_type == HandshakeType.certificate:
                body = _split_messages(message)[0][1]
                return Certificate.decode(body).certificate_request_context
        except RemoteProtocolError as exc:
            raise AuthenticatorError(f"not an authenticator or request: {exc.args[0]}", exc.alert) from None
        if msg_type == HandshakeType.finished:
            raise AuthenticatorError(
                "an empty authenticator does not carry its context", AlertDescription.illegal_parameter
            )
        raise AuthenticatorError(f"not an authenticator or request (type {msg_type})", AlertDescription.decode_error)


def exported_authenticators_for(engine: HandshakeEngine, exporter: ExporterByGeneration) -> ExportedAuthenticators:
    """The state for a connection whose handshake ``engine`` has completed.

    Called at the connection's first use of authenticators, possibly long
    after the handshake: what it reads from the engine (suite, signature
    algorithms, the ClientHello's, server name, our handshake request, our
    credential) must stay on the engine once it is complete."""
    assert engine.suite is not None
    config = engine.config
    is_client = config.is_client

    # As the handshake checks the peer's chain: a server always checks a
    # client's; a client checks a server's, for its server name, unless
    # verify_peer is off (handshake/client.py, server.py).
    def verify_client(chain: Sequence[x509.Certificate]) -> None:
        engine.verify_peer_chain(list(chain), config.trust_store, None, is_server_cert=False)

    def verify_server(chain: Sequence[x509.Certificate]) -> None:
        engine.verify_peer_chain(list(chain), config.trust_store, engine.server_name, is_server_cert=True)

    verify: ChainVerifier | None = verify_client if not is_client else verify_server if config.verify_peer else None
    # RFC 9261 §5.2.2: spontaneous server authenticators sign with a scheme
    # from the ClientHello; a client's own list is what it sent there.
    hello_schemes = getattr(engine, "client_signature_algorithms", engine.signature_algorithms)
    state = ExportedAuthenticators(
        is_client=is_client, suite=engine.suite, exporter=exporter, configuration=config,
        signature_algorithms=engine.signature_algorithms, client_hello_signature_algorithms=hello_schemes,
        verify_peer_chain=verify,
        own_credential=lambda: (engine.own_certificate_chain, engine.own_private_key),
    )
    if engine.own_update_request is not None:
        # The certificate_update_request we sent in the handshake
        # (draft-rosomakho-tls-cert-update-02 §5) used its context (RFC 9261 §4).
        state.register_request(engine.own_update_request)
    return state
