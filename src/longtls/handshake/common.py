"""What the client and server handshakes share.

Each engine is a state machine whose transitions are listed in one table,
``TRANSITIONS``: ``(state, message type) -> handler``.  A message that has no
entry for the current state is an unexpected_message, so an impossible
transition cannot be reached by accident.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
from collections.abc import Callable, Collection, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa

from .. import certcompress
from ..config import Configuration
from ..constants import (
    AlertDescription,
    CertificateCompressionAlgorithm,
    EKUProfileName,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    PskKeyExchangeMode,
    PskKind,
    SignatureScheme,
)
from ..crypto import key_schedule as ks
from ..crypto import signatures
from ..crypto.certificates import TrustStore, certificate_der, load_der_certificate, verify_chain
from ..crypto.peer_policy import check_peer_access
from ..crypto.suites import SuiteInfo
from ..errors import DecodeError, LocalProtocolError, RemoteProtocolError
from ..events import HandshakeComplete
from ..sni import ServerCredential
from ..wire.messages import (
    Certificate,
    CertificateEntry,
    CertificateVerify,
    CompressedCertificate,
    Extension,
    Finished,
    encode_handshake,
    extensions_by_type,
)
from .eku_profiles import PROFILES
from .host import HandshakeHost
from .transport import TLS, Transport

if TYPE_CHECKING:
    from .eku import ExtendedKeyUpdate

Handler = Callable[[Any, bytes, bytes], None]

# RFC 9846 §4.4.3: the context strings of CertificateVerify.
SERVER_CV_CONTEXT = b"TLS 1.3, server CertificateVerify"
CLIENT_CV_CONTEXT = b"TLS 1.3, client CertificateVerify"


def certificate_verify_content(context: bytes, transcript_hash: bytes) -> bytes:
    """64 spaces, the context string, a zero byte, then the transcript hash (§4.4.3)."""
    return b" " * 64 + context + b"\x00" + transcript_hash


@functools.lru_cache(maxsize=256)
def is_ip_address(name: str) -> bool:
    # Cached: a client asks for every connection to its server name, and
    # ipaddress parses by raising on a DNS name (issue 16).
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def decode_certificates(
    entries: Sequence[CertificateEntry], max_length: int
) -> list[x509.Certificate]:
    if len(entries) > max_length:
        raise RemoteProtocolError(
            f"certificate chain of {len(entries)} certificates exceeds the limit of {max_length}",
            AlertDescription.bad_certificate,
        )
    certs = []
    for entry in entries:
        try:
            # One object per distinct DER, with the fields validation and error
            # messages read parsed now (cryptography parses them lazily), so a
            # corrupt one is bad_certificate here; verify_chain's cache keys on it.
            certs.append(load_der_certificate(entry.cert_data))
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion):
            # cryptography reports malformed DER and names with any of these.
            raise RemoteProtocolError(
                "peer sent a certificate that is not valid DER X.509",
                AlertDescription.bad_certificate,
            ) from None
    return certs


def check_response_extensions(
    extensions: Sequence[Extension], offered: Collection[int], allowed: Collection[int], where: str
) -> dict[int, bytes]:
    """RFC 9846 §4.2: a response may only carry extensions we offered, and only
    those defined for that message."""
    found = extensions_by_type(tuple(extensions))
    for ext_type in found:
        if ext_type not in offered:
            raise RemoteProtocolError(
                f"{where} carries extension {ext_type} that was not offered",
                AlertDescription.unsupported_extension,
            )
        if ext_type not in allowed:
            raise RemoteProtocolError(
                f"extension {ext_type} is not allowed in {where}", AlertDescription.illegal_parameter
            )
    return found


class Side(Enum):
    CLIENT = "client"
    SERVER = "server"


class HandshakeEngine:
    """State shared by both roles; subclasses add their states and handlers."""

    TRANSITIONS: ClassVar[dict[tuple[Enum, int], Handler]] = {}

    def __init__(self, conn: HandshakeHost, config: Configuration, transport: Transport = TLS) -> None:
        self.conn = conn
        self.config = config
        #: TLS or DTLS (transport.py): label prefix, versions, legacy fields.
        self.transport = transport
        self.state: Enum = self.initial_state()
        self.transcript = ks.Transcript()
        self.suite: SuiteInfo | None = None
        self.secrets: ks.HandshakeSecrets | None = None
        self.complete = False
        self.peer_finished = False
        self.started = False
        self.group: int | None = None
        self.peer_signature_scheme: SignatureScheme | None = None
        self.peer_certificates: tuple[x509.Certificate, ...] = ()
        self.alpn_protocol: str | None = None
        self.resumed = False
        self.server_name: str | None = None
        self.application_data_allowed = False
        self.signature_algorithms: tuple[int, ...] = tuple(
            config.signature_algorithms or signatures.SUPPORTED_SIGNATURE_SCHEMES
        )
        # post-handshake authentication: the transcript up to client Finished.
        self.handshake_transcript: ks.Transcript | None = None
        # RFC 8879: how the peer's last Certificate arrived, and how we sent ours.
        self.peer_certificate_compression: CertificateCompressionAlgorithm | None = None
        self.local_certificate_compression: CertificateCompressionAlgorithm | None = None
        #: The Extended Key Update profile negotiated in tls_flags, or None.
        self.eku_profile: EKUProfileName | None = None
        # The PSK the handshake used (RFC 9846 §4.2.11): its kind and, for an
        # external one, its identity (never the key: these outlive the handshake).
        self.psk_kind: PskKind | None = None
        self.psk_identity: bytes | None = None
        #: psk_ke negotiates no group; EKU then uses this one (docs/external-psk.md).
        self.psk_ke_eku_group: int | None = None
        # DTLS connection IDs (RFC 9146, RFC 9147 §9): the one the peer puts in
        # the records it sends us, and the one we put in ours; None until the
        # connection_id extension was negotiated (either may be empty).
        self.own_connection_id: bytes | None = None
        self.peer_connection_id: bytes | None = None
        # Certificate Update (draft-rosomakho-tls-cert-update-02 §3): both
        # sides sent certificate_update_request; the authenticator request we
        # put in ours and the one the peer put in its (None: empty extension).
        self.certificate_update_negotiated = False
        self.own_update_request: bytes | None = None
        self.peer_update_request: bytes | None = None
        #: Our chain and CertificateVerify scheme in our last certificate
        #: authentication (the handshake's, or post-handshake client
        #: authentication's): what a Certificate Update must stay true to.
        self.local_certificates: tuple[x509.Certificate, ...] = ()
        self.local_signature_scheme: SignatureScheme | None = None
        #: A server's certificate chosen by the client's server_name from
        #: ``server_credentials`` (handshake/server.py, docs/sni.md); None:
        #: the configuration's own pair (the default; always for a client).
        self.server_credential: ServerCredential | None = None

    @property
    def own_certificate_chain(self) -> Sequence[x509.Certificate]:
        """The chain we authenticate with, read when it is used (a renewal
        replaces it in place): the chosen credential's, else the configuration's."""
        credential = self.server_credential
        return credential.certificate_chain if credential is not None else self.config.certificate_chain

    @property
    def own_private_key(self) -> Any:
        """The private key of ``own_certificate_chain``."""
        credential = self.server_credential
        return credential.private_key if credential is not None else self.config.private_key

    def new_own_connection_id(self) -> bytes | None:
        """The CID we ask for in our hello, or None if we do not negotiate CIDs
        (TLS, or a DTLS configuration with dtls_connection_ids off)."""
        cfg = self.config
        if not (self.transport.datagram and cfg.dtls_connection_ids):
            return None
        length = cfg.effective_dtls_connection_id_length
        return cfg.random(length) if length else b""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.name}>"

    def initial_state(self) -> Enum:
        raise NotImplementedError

    @property
    def eku_group(self) -> int | None:
        """The group of extended key updates: the handshake's, or under psk_ke
        the client's first supported group."""
        return self.group if self.group is not None else self.psk_ke_eku_group

    @property
    def external_psk_used(self) -> bool:
        return self.psk_kind in (PskKind.EXTERNAL, PskKind.IMPORTED)

    def start(self) -> None:
        raise LocalProtocolError("this side does not start the handshake")

    # -- dispatch ----------------------------------------------------------

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        handler = self.TRANSITIONS.get((self.state, msg_type))
        if handler is None:
            try:
                name = HandshakeType(msg_type).name
            except ValueError:
                name = f"type {msg_type}"
            raise RemoteProtocolError(
                f"unexpected handshake message {name} in state {self.state.name}",
                AlertDescription.unexpected_message,
            )
        handler(self, body, raw)

    # -- hooks the connection asks ------------------------------------------

    def skip_undecryptable(self, length: int, records_opened: int) -> bool:
        """Whether to drop a record of ``length`` bytes that failed to open under
        the current read key, after ``records_opened`` records did (a server
        skipping rejected 0-RTT); the record layer then forgets the attempt."""
        return False

    @property
    def change_cipher_spec_allowed(self) -> bool:
        """RFC 9846 §5: a compatibility change_cipher_spec may arrive between the
        first ClientHello and the peer's Finished (never in DTLS 1.3, RFC 9147 §5)."""
        return self.started and not self.peer_finished and self.transport.middlebox_compatibility

    def skip_early_data_record(self, length: int) -> bool:
        """Whether to drop an application_data record that arrived before we
        have a key to open it (a server skipping 0-RTT after a HelloRetryRequest)."""
        return False

    @property
    def eku_negotiated(self) -> bool:
        return self.eku_profile is not None

    @property
    def eku_disables_tickets(self) -> bool:
        """The negotiated profile disables ticket resumption (EKU draft-13 §6)."""
        return self.eku_profile is not None and PROFILES[self.eku_profile].disable_tickets

    def on_extended_key_update(self, eku: ExtendedKeyUpdate | None) -> None:
        """Called when an extended key update completed."""

    def release_handshake_state(self) -> None:
        """Drop what only the handshake needed: memory per idle connection, and
        secrets kept no longer than they are used."""
        secrets = self.secrets
        if secrets is not None:
            secrets.client_handshake_traffic_secret = b""
            secrets.server_handshake_traffic_secret = b""
            secrets.handshake_secret = b""
            secrets.early_secret = b""

    def post_handshake_transcript(self) -> ks.Transcript:
        """The transcript a post-handshake CertificateRequest extends.

        RFC 9846 §4.4: the handshake's (ClientHello..client Finished); after a
        draft-13 extended key update, transcript_hash_N+1 instead (EKU draft-13 §8.1).
        """
        chained = self.conn.post_handshake_transcript_hash
        if chained is not None:
            assert self.suite is not None
            transcript = ks.Transcript()
            transcript.start(self.suite)
            transcript.update(chained)
            return transcript
        assert self.handshake_transcript is not None
        return self.handshake_transcript.fork()

    def export(self, label: bytes, context: bytes, length: int) -> bytes:
        assert self.secrets is not None and self.suite is not None
        return ks.export_keying_material(
            self.suite, self.secrets.exporter_secret, label, context, length, self.transport.label_prefix
        )

    # -- helpers for subclasses -------------------------------------------------

    def finish_handshake(
        self, connected: Enum, *, client_authenticated: bool,
        local_signature_scheme: SignatureScheme | None,
    ) -> None:
        """Both Finished messages are done: application data may flow."""
        assert self.suite is not None
        self.complete = True
        self.application_data_allowed = True
        self.state = connected
        self.conn.handshake_done()
        self.release_handshake_state()
        self.conn.emit(HandshakeComplete(
            version=self.transport.name,
            cipher_suite=self.suite.suite,  # already the CipherSuite member
            group=NamedGroup(self.group) if self.group is not None else None,
            signature_scheme=self.peer_signature_scheme,
            alpn_protocol=self.alpn_protocol,
            peer_certificates=self.peer_certificates,
            resumed=self.resumed,
            server_name=self.server_name,
            client_authenticated=client_authenticated,
            extended_key_update=self.eku_negotiated,
            eku_profile=self.eku_profile,
            local_signature_scheme=local_signature_scheme,
            peer_certificate_compression=self.peer_certificate_compression,
            local_certificate_compression=self.local_certificate_compression,
            psk=self.psk_kind,
            psk_identity=self.psk_identity,
            psk_key_exchange_mode=self._psk_mode(),
            certificate_update=self.certificate_update_negotiated,
        ))

    def _psk_mode(self) -> PskKeyExchangeMode | None:
        if self.psk_kind is None:
            return None
        return PskKeyExchangeMode.psk_ke if self.group is None else PskKeyExchangeMode.psk_dhe_ke

    def send(self, msg_type: HandshakeType, body: bytes) -> bytes:
        raw = encode_handshake(msg_type, body)
        self.transcript.update(raw)
        self.conn.queue_handshake(raw)
        return raw

    def build_certificate(self, context: bytes) -> bytes:
        entries = tuple(
            CertificateEntry(certificate_der(cert), ()) for cert in self.own_certificate_chain
        )
        return Certificate(context, entries).encode()

    def certificate_message(self, context: bytes, peer_algorithms: Sequence[int]) -> tuple[HandshakeType, bytes]:
        """Our Certificate body, or a CompressedCertificate in its place (RFC 8879 §4).

        Compressed with the first algorithm of our preference that is among
        ``peer_algorithms`` (the peer's compress_certificate list) and makes
        the message smaller; if none does (post-quantum chains barely
        compress) the Certificate goes out as it is.  The handshake's
        Certificate (empty context) is compressed once per chain and cached.
        """
        body = self.build_certificate(context)
        self.local_certificates = tuple(self.own_certificate_chain)
        self.local_certificate_compression = None
        for algorithm in self.config.certificate_compression:
            if algorithm not in peer_algorithms:
                continue
            chosen = CertificateCompressionAlgorithm(algorithm)
            compressed = certcompress.compress_certificate(chosen, body, cache=not context).encode()
            if len(compressed) < len(body):
                self.local_certificate_compression = chosen
                return HandshakeType.compressed_certificate, compressed
        return HandshakeType.certificate, body

    def open_compressed_certificate(self, body: bytes, offered: Sequence[int]) -> Certificate:
        """The Certificate inside a CompressedCertificate body (RFC 8879 §4).

        ``offered``: the algorithms of our compress_certificate extension.  A
        malformed CompressedCertificate is decode_error; one longer than our
        handshake message limit illegal_parameter; one that cannot be
        decompressed, or does not decompress to a Certificate, bad_certificate.
        """
        # A server sends the same compressed chain to every client (it
        # compresses once, above): a client decompresses and decodes each
        # distinct one once (issue 16).  Only successes are remembered, under
        # everything the result depends on.
        key = (bytes(body), tuple(offered), self.config.max_handshake_message_size)
        known = _opened_certificates.get(key)
        if known is None:
            message = CompressedCertificate.decode(body)
            inner = certcompress.decompress_certificate(
                message, offered, self.config.max_handshake_message_size
            )
            try:
                certificate = Certificate.decode(inner)
            except DecodeError:
                raise RemoteProtocolError(
                    "compressed certificate does not decompress to a Certificate message",
                    AlertDescription.bad_certificate,
                ) from None
            known = (certificate, CertificateCompressionAlgorithm(message.algorithm))
            with _opened_certificates_lock:
                while len(_opened_certificates) >= _OPENED_CERTIFICATES_LIMIT:
                    del _opened_certificates[next(iter(_opened_certificates))]  # the oldest
                _opened_certificates[key] = known
        certificate, self.peer_certificate_compression = known
        return certificate

    def choose_signature_scheme(self, peer_schemes: Sequence[int]) -> SignatureScheme:
        chain = self.own_certificate_chain
        ours = signatures.schemes_for_key(self.own_private_key, chain[0] if chain else None)
        for scheme in ours:
            if scheme in peer_schemes and scheme in self.signature_algorithms:
                return scheme
        raise RemoteProtocolError(
            "no signature scheme in common with the peer for our certificate key",
            AlertDescription.handshake_failure,
        )

    def sign_certificate_verify(
        self, scheme: SignatureScheme, context: bytes, transcript: ks.Transcript
    ) -> bytes:
        content = certificate_verify_content(context, transcript.digest())
        signature = signatures.sign(self.own_private_key, scheme, content)
        self.local_signature_scheme = scheme
        return CertificateVerify(scheme, signature).encode()

    def verify_certificate_verify(
        self, body: bytes, context: bytes, transcript: ks.Transcript, offered: Sequence[int]
    ) -> SignatureScheme:
        cv = CertificateVerify.decode(body)
        if cv.algorithm not in offered:
            raise RemoteProtocolError(
                f"CertificateVerify uses scheme 0x{cv.algorithm:04x} that we did not offer",
                AlertDescription.illegal_parameter,
            )
        scheme = SignatureScheme(cv.algorithm)
        content = certificate_verify_content(context, transcript.digest())
        assert self.peer_certificates
        key = self.peer_certificates[0].public_key()
        if not isinstance(key, _VERIFIABLE_KEY_TYPES):
            raise RemoteProtocolError(
                "peer certificate key type cannot sign in TLS 1.3", AlertDescription.unsupported_certificate
            )
        try:
            signatures.verify(key, scheme, cv.signature, content, cert=self.peer_certificates[0])
        except (ValueError, TypeError):
            raise RemoteProtocolError(
                "peer certificate has a malformed field", AlertDescription.bad_certificate
            ) from None
        return scheme

    def finished_body(self, base_key: bytes, transcript: ks.Transcript) -> bytes:
        assert self.suite is not None
        return Finished(ks.finished_verify_data(
            self.suite, base_key, transcript.digest(), self.transport.label_prefix
        )).encode()

    def check_finished(self, body: bytes, base_key: bytes, transcript: ks.Transcript) -> None:
        assert self.suite is not None
        if len(body) != self.suite.hash_length:
            raise RemoteProtocolError("Finished has the wrong length", AlertDescription.decode_error)
        expected = ks.finished_verify_data(self.suite, base_key, transcript.digest(), self.transport.label_prefix)
        if not ks.constant_time_equal(expected, Finished.decode(body).verify_data):
            raise RemoteProtocolError("Finished verify_data is wrong", AlertDescription.decrypt_error)

    def verify_peer_chain(
        self, certs: list[x509.Certificate], store: TrustStore | None, server_name: str | None,
        is_server_cert: bool,
    ) -> None:
        if store is None:
            store = _system_store()
        now = _utc(self.config.now())
        try:
            path = verify_chain(
                certs, store, server_name=server_name, is_server_cert=is_server_cert, now=now,
            )
            # Who may connect (docs/access-control.md): after the chain
            # verified, on the path it verified, and outside verify_chain so
            # no cache of it can skip this; the handshake, post-handshake
            # authentication and every authenticator (Certificate Update) pass here.
            if self.config.checks_peer_access:
                check_peer_access(
                    path, allow=self.config.peer_allow, crls=self.config.crls, now=now,
                    is_server_cert=is_server_cert,
                )
        except (ValueError, TypeError):
            # cryptography parses extensions lazily: a malformed one surfaces
            # here (RFC 9846 §6.2: "a certificate was corrupt").
            raise RemoteProtocolError(
                "peer certificate has a malformed field", AlertDescription.bad_certificate
            ) from None


#: CompressedCertificate bodies a client opened: (body, offered, limit) -> (Certificate, algorithm).
_opened_certificates: dict[tuple[bytes, tuple[int, ...], int], tuple[Certificate, CertificateCompressionAlgorithm]] = {}
_OPENED_CERTIFICATES_LIMIT = 16
_opened_certificates_lock = threading.Lock()


@functools.cache
def _system_store() -> TrustStore:
    """The system's roots, parsed once per process."""
    return TrustStore.system()


def _utc(ts: float) -> Any:
    import datetime

    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)


_VERIFIABLE_KEY_TYPES = (
    rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey,
    mldsa.MLDSA44PublicKey, mldsa.MLDSA65PublicKey, mldsa.MLDSA87PublicKey,
)

# Extensions that may appear in each response message (RFC 9846 §4.2 table).
SERVER_HELLO_EXTENSIONS = {
    ExtensionType.key_share, ExtensionType.pre_shared_key, ExtensionType.supported_versions,
    ExtensionType.connection_id,  # DTLS only: offered by DTLS clients only (RFC 9147 §9)
}
HELLO_RETRY_EXTENSIONS = {
    ExtensionType.key_share, ExtensionType.cookie, ExtensionType.supported_versions,
}
ENCRYPTED_EXTENSIONS = {
    ExtensionType.server_name, ExtensionType.supported_groups,
    ExtensionType.application_layer_protocol_negotiation, ExtensionType.record_size_limit,
    ExtensionType.early_data, ExtensionType.tls_flags,
    ExtensionType.certificate_update_request,  # draft-rosomakho-tls-cert-update-02 §3.1
}
