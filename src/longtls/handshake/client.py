"""The client handshake (RFC 9846 §2, §4; state machine of Appendix A.1)."""

from __future__ import annotations

from enum import Enum, auto
from typing import ClassVar, NamedTuple

from ..config import Configuration
from ..constants import (
    AlertDescription,
    EKUProfileName,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    PskKeyExchangeMode,
    PskKind,
    SignatureScheme,
)
from ..crypto import key_schedule as ks
from ..crypto.groups import KeyShare, get_group
from ..crypto.suites import suite_info
from ..errors import LocalProtocolError, RemoteProtocolError
from ..events import SessionTicket, SessionTicketReceived
from ..psk import PskCandidate, client_candidates, hash_suite
from ..wire import extensions as X
from ..wire.cert_update import (
    decode_certificate_update_request_extension,
    encode_certificate_update_request_extension,
)
from ..wire.messages import (
    Certificate,
    CertificateRequest,
    ClientHello,
    EncryptedExtensions,
    Extension,
    NewSessionTicket,
    ServerHello,
    encode_handshake,
)
from .cert_update import handshake_update_request, parse_update_request
from .common import (
    CLIENT_CV_CONTEXT,
    ENCRYPTED_EXTENSIONS,
    HELLO_RETRY_EXTENSIONS,
    SERVER_CV_CONTEXT,
    SERVER_HELLO_EXTENSIONS,
    Handler,
    HandshakeEngine,
    check_response_extensions,
    decode_certificates,
    is_ip_address,
)
from .eku_profiles import acknowledged_profile, profile_flags
from .host import HandshakeHost
from .transport import TLS, Transport

# RFC 9846 §4.6.1: servers MUST NOT use a ticket lifetime over 7 days.
MAX_TICKET_LIFETIME = 604800


class _FixedExtensions(NamedTuple):
    """ClientHello extensions that depend on configuration values only (None:
    not sent), encoded once per distinct values (issue 16)."""

    supported_groups: Extension
    alpn: Extension | None
    supported_versions: Extension
    signature_algorithms: Extension
    psk_key_exchange_modes: Extension | None
    record_size_limit: Extension
    compress_certificate: Extension | None
    post_handshake_auth: Extension | None


#: Keyed by the values themselves, since a Configuration may be changed
#: between connections; bounded, as the values come from configurations.
_FIXED_EXTENSIONS: dict[tuple[object, ...], _FixedExtensions] = {}
_FIXED_EXTENSIONS_LIMIT = 64
#: The tls_flags extension offering each tuple of EKU profiles, likewise.
_TLS_FLAGS_EXTENSIONS: dict[tuple[EKUProfileName, ...], Extension] = {}


class ClientState(Enum):
    START = auto()
    WAIT_SH = auto()
    WAIT_EE = auto()
    WAIT_CERT_CR = auto()
    WAIT_CERT = auto()
    WAIT_CV = auto()
    WAIT_FINISHED = auto()
    CONNECTED = auto()


class ClientHandshake(HandshakeEngine):
    def __init__(self, conn: HandshakeHost, config: Configuration, transport: Transport = TLS) -> None:
        super().__init__(conn, config, transport)
        self.key_shares: dict[int, KeyShare] = {}
        self.hello_retry_seen = False
        self.offered_extensions: set[int] = set()
        self.session_id = b""
        self.cookie: bytes | None = None
        self.ticket: SessionTicket | None = None
        self.psk_modes: tuple[int, ...] = ()
        #: The PSKs of the last ClientHello, in the order of its identities.
        self.offered_psks: list[PskCandidate] = []
        #: Their Early Secrets, extracted for the binders and used again for
        #: the handshake secret of the one the server selects (issue 16).
        self.offered_early_secrets: list[bytes] = []
        self.certificate_request: CertificateRequest | None = None
        # RFC 8879: the algorithms our ClientHello's compress_certificate listed.
        self.offered_compression: tuple[int, ...] = ()
        self.sent_ccs = False
        self.server_name = config.server_name
        self.client_hello: ClientHello | None = None
        self.tickets_taken = 0

    def initial_state(self) -> Enum:
        return ClientState.START

    # ---------------------------------------------------------- ClientHello

    def start(self) -> None:
        if self.state is not ClientState.START:
            # The application's mistake, not the peer's: nothing is sent (errors.LocalProtocolError).
            raise LocalProtocolError("the handshake was already started")
        cfg = self.config
        self.conn.client_random = cfg.random(32)
        self.own_connection_id = self.new_own_connection_id()
        # RFC 9147 §5, §5.3: DTLS has no compatibility mode; its
        # legacy_session_id is empty (we cache no pre-DTLS 1.3 session).
        compatibility = cfg.middlebox_compatibility and self.transport.middlebox_compatibility
        self.session_id = cfg.random(32) if compatibility else b""
        for group in cfg.key_share_groups:
            self.key_shares[group] = self._new_share(group)
        self.ticket = self._usable_ticket()
        self._send_client_hello()
        self.started = True
        self.state = ClientState.WAIT_SH

    def _new_share(self, group: int) -> KeyShare:
        if self.config.key_share_factory is not None:
            return self.config.key_share_factory(NamedGroup(group))
        return get_group(group).generate()

    def _usable_ticket(self) -> SessionTicket | None:
        t = self.config.session_ticket
        if t is None or t.cipher_suite not in self.config.cipher_suites:
            return None
        if self.config.checks_peer_access:
            return None  # a resumed server shows no certificate to check (docs/access-control.md)
        if self.config.now() - t.received_at > t.lifetime:
            return None  # expired (RFC 9846 §4.6.1)
        if t.server_name != self.server_name:
            return None
        return t

    def _fixed_extensions(self) -> _FixedExtensions:
        """The extensions of ``_FIXED_EXTENSIONS``, made or found."""
        cfg = self.config
        key = (
            tuple(cfg.groups), tuple(cfg.alpn_protocols or ()), self.transport.version, self.signature_algorithms,
            tuple(cfg.psk_key_exchange_modes), cfg.record_size_limit, tuple(cfg.certificate_compression),
            bool(cfg.post_handshake_auth and cfg.certificate_chain),
        )
        fixed = _FIXED_EXTENSIONS.get(key)
        if fixed is not None:
            return fixed
        groups, alpn, version, schemes, psk_modes, record_size_limit, compression, pha = key
        fixed = _FixedExtensions(
            Extension(ExtensionType.supported_groups, X.encode_supported_groups(list(groups))),
            Extension(
                ExtensionType.application_layer_protocol_negotiation,
                X.encode_application_layer_protocol_negotiation([p.encode() for p in alpn]),
            ) if alpn else None,
            Extension(ExtensionType.supported_versions, X.encode_supported_versions_client([version])),
            Extension(ExtensionType.signature_algorithms, X.encode_signature_algorithms(list(schemes))),
            Extension(
                ExtensionType.psk_key_exchange_modes, X.encode_psk_key_exchange_modes(list(psk_modes)),
            ) if psk_modes else None,
            Extension(ExtensionType.record_size_limit, X.encode_record_size_limit(record_size_limit)),
            # RFC 8879 §3: we accept a compressed server Certificate.
            Extension(
                ExtensionType.compress_certificate, X.encode_compress_certificate(list(compression)),
            ) if compression else None,
            Extension(ExtensionType.post_handshake_auth, X.encode_post_handshake_auth()) if pha else None,
        )
        if len(_FIXED_EXTENSIONS) < _FIXED_EXTENSIONS_LIMIT:
            _FIXED_EXTENSIONS[key] = fixed
        return fixed

    def _client_hello_extensions(self) -> list[Extension]:
        cfg = self.config
        groups, alpn, versions, schemes, psk_modes, record_size_limit, compression, pha = self._fixed_extensions()
        exts: list[Extension] = []
        if self.server_name and not is_ip_address(self.server_name):
            # RFC 6066 §3: IP literals are not sent as server_name.
            exts.append(Extension(ExtensionType.server_name, X.encode_server_name(self.server_name)))
        exts.append(groups)
        if alpn is not None:
            exts.append(alpn)
        exts.append(Extension(ExtensionType.key_share, X.encode_key_share_client(
            [X.KeyShareEntry(g, s.public) for g, s in self.key_shares.items()]
        )))
        exts.append(versions)
        exts.append(schemes)
        if self.cookie is not None:
            exts.append(Extension(ExtensionType.cookie, X.encode_cookie(self.cookie)))
        if psk_modes is not None:
            exts.append(psk_modes)
        exts.append(record_size_limit)
        if compression is not None:
            exts.append(compression)
        if pha is not None:
            exts.append(pha)
        if self.own_connection_id is not None:
            exts.append(Extension(ExtensionType.connection_id, X.encode_connection_id(self.own_connection_id)))
        if cfg.certificate_update:
            exts.append(self._certificate_update_extension())
        exts.extend(self.extra_client_hello_extensions())
        if cfg.client_hello_hook is not None:
            exts = list(cfg.client_hello_hook(exts))
        return exts

    def release_handshake_state(self) -> None:
        super().release_handshake_state()
        self.client_hello = None
        self.certificate_request = None
        self.key_shares = {}
        self.offered_psks = []  # they hold the PSKs themselves
        self.offered_early_secrets = []
        if not self.config.post_handshake_auth:
            self.handshake_transcript = None  # only post-handshake auth extends it

    def _certificate_update_extension(self) -> Extension:
        """draft-rosomakho-tls-cert-update-02 §3.1, with a request the server
        can answer with its first CertificateUpdate (decision 4 in
        handshake/cert_update.py: a client always includes one).  Made once,
        so a ClientHello after a HelloRetryRequest carries the same (RFC 9846 §4.1.2)."""
        if self.own_update_request is None:
            self.own_update_request = handshake_update_request(
                self.config, from_client=True, schemes=self.signature_algorithms
            )
        return Extension(
            ExtensionType.certificate_update_request,
            encode_certificate_update_request_extension(self.own_update_request),
        )

    def extra_client_hello_extensions(self) -> list[Extension]:
        # EKU draft-13 §3: support is offered with the tls_flags extension,
        # one flag per profile we speak (docs/eku-profiles.md).
        if not self.config.extended_key_update:
            return []
        names = self.config.eku_profile_names()
        extension = _TLS_FLAGS_EXTENSIONS.get(names)
        if extension is None:
            extension = Extension(ExtensionType.tls_flags, X.encode_tls_flags(profile_flags(names)))
            if len(_TLS_FLAGS_EXTENSIONS) < _FIXED_EXTENSIONS_LIMIT:
                _TLS_FLAGS_EXTENSIONS[names] = extension
        return [extension]

    def _send_client_hello(self) -> None:
        cfg = self.config
        exts = self._client_hello_extensions()
        suites = tuple(int(s) for s in cfg.cipher_suites)
        offered = self._psk_offer()
        self.offered_psks = [candidate for candidate, _ in offered]
        self.offered_early_secrets = []
        if offered:
            identities = tuple(X.PskIdentity(c.identity, age) for c, age in offered)
            placeholder = X.OfferedPsks(identities, tuple(bytes(hash_suite(c.hash_name).hash_length) for c, _ in offered))
            exts.append(Extension(ExtensionType.pre_shared_key, X.encode_pre_shared_key_client(placeholder)))
            hello = self._client_hello(suites, tuple(exts))
            raw = encode_handshake(HandshakeType.client_hello, hello.encode())
            truncated = raw[: len(raw) - X.offered_psks_binders_length(placeholder)]
            # RFC 9846 §4.2.11.2: each binder covers the transcript up to and
            # including the truncated ClientHello, hashed with its PSK's hash;
            # after a HelloRetryRequest, that transcript starts with
            # message_hash and the HRR (and only PSKs of the suite's hash remain).
            # DTLS (RFC 9147 §5.2): the transcript, binders included, is over
            # TLS-form messages (4-byte header, no message_seq or fragment
            # fields), whose body is the DTLS ClientHello with legacy_cookie.
            prefix = self.transport.label_prefix
            binders = []
            for candidate, _ in offered:
                suite = hash_suite(candidate.hash_name)
                early = candidate.early_secrets(prefix)
                self.offered_early_secrets.append(early.early_secret)
                if self.hello_retry_seen:
                    binder_hash = self.transcript.digest_with(truncated)
                else:
                    binder_hash = ks.transcript_digest(suite, truncated)
                binders.append(ks.finished_verify_data(suite, candidate.binder_key(prefix, early), binder_hash, prefix))
            exts[-1] = Extension(
                ExtensionType.pre_shared_key,
                X.encode_pre_shared_key_client(X.OfferedPsks(identities, tuple(binders))),
            )
            self.psk_modes = tuple(cfg.psk_key_exchange_modes)
            # The binders have their placeholders' lengths and end the message
            # (§4.2.11): the ClientHello is the truncated one and the binders,
            # without encoding it a second time (issue 16).
            body = raw[4 : len(raw) - X.offered_psks_binders_length(placeholder)] + X.encode_psk_binders(tuple(binders))
        self.offered_extensions = {e.type for e in exts}
        if ExtensionType.compress_certificate in self.offered_extensions:
            self.offered_compression = tuple(cfg.certificate_compression)
        hello = self._client_hello(suites, tuple(exts))
        self.client_hello = hello
        self.send(HandshakeType.client_hello, body if offered else hello.encode())

    def _client_hello(self, suites: tuple[int, ...], exts: tuple[Extension, ...]) -> ClientHello:
        t = self.transport
        # RFC 9147 §5.3: legacy_version 0xfefd and an empty legacy_cookie in DTLS.
        return ClientHello(
            self.conn.client_random, self.session_id, suites, exts, legacy_version=t.legacy_version,
            legacy_cookie=b"" if t.has_legacy_cookie else None,
        )

    def _psk_offer(self) -> list[tuple[PskCandidate, int]]:
        """The PSKs to offer, each with its obfuscated_ticket_age: the ticket
        first (a fresh PSK from the last connection), then the external PSKs
        in configuration order, with age 0 (RFC 9846 §4.2.11)."""
        cfg = self.config
        if not cfg.psk_key_exchange_modes:
            return []  # §4.2.9: no pre_shared_key without psk_key_exchange_modes
        offered: list[tuple[PskCandidate, int]] = []
        ticket = self.ticket
        if ticket is not None:
            age_ms = int((cfg.now() - ticket.received_at) * 1000)
            hash_name = suite_info(ticket.cipher_suite).hash_name
            candidate = PskCandidate(ticket.ticket, ticket.psk, hash_name, PskKind.RESUMPTION)
            offered.append((candidate, (age_ms + ticket.age_add) % 2**32))
        hashes = [suite_info(s).hash_name for s in cfg.cipher_suites]
        offered.extend((c, 0) for c in client_candidates(cfg.external_psks, hashes, self.transport.version))
        if self.hello_retry_seen:
            # §4.1.4: the PSKs must now be usable with the suite the HRR chose.
            assert self.suite is not None
            offered = [(c, age) for c, age in offered if c.hash_name == self.suite.hash_name]
        return offered

    # ---------------------------------------------------------- ServerHello

    def on_server_hello(self, body: bytes, raw: bytes) -> None:
        sh = ServerHello.decode(body)
        assert self.client_hello is not None
        versions = {e.type: e.data for e in sh.extensions}
        sv = versions.get(ExtensionType.supported_versions)
        t = self.transport
        if sv is None:
            # No supported_versions: the server negotiates TLS 1.2 or older (§4.2.1).
            raise RemoteProtocolError(
                f"server does not speak {t.protocol} (longtls speaks only {t.protocol})",
                AlertDescription.protocol_version,
            )
        if X.decode_supported_versions_server(sv) != t.version:
            # §4.2.1: a version we did not offer, or one prior to TLS 1.3
            # (over DTLS, 0xfefc is DTLS 1.3: RFC 9147 §5.3).
            raise RemoteProtocolError("server selected a version we did not offer", AlertDescription.illegal_parameter)
        if sh.legacy_version != t.legacy_version:
            raise RemoteProtocolError(
                f"ServerHello legacy_version is not 0x{t.legacy_version:04x}", AlertDescription.protocol_version
            )
        if not t.middlebox_compatibility and sh.legacy_session_id_echo:
            # rfc9147bis-02 §5 (RFC 9147 §5 only forbids the server to echo):
            # a DTLS 1.3 client aborts with illegal_parameter if it is not empty.
            raise RemoteProtocolError(
                "DTLS 1.3 ServerHello with a non-empty legacy_session_id_echo", AlertDescription.illegal_parameter
            )
        if sh.legacy_session_id_echo != self.session_id:
            raise RemoteProtocolError("legacy_session_id_echo mismatch", AlertDescription.illegal_parameter)
        if sh.legacy_compression_method != 0:
            raise RemoteProtocolError("non-zero compression method", AlertDescription.illegal_parameter)
        if sh.cipher_suite not in self.client_hello.cipher_suites:
            raise RemoteProtocolError("server chose a cipher suite we did not offer", AlertDescription.illegal_parameter)
        if sh.is_hello_retry_request:
            self._on_hello_retry_request(sh, raw)
            return
        exts = check_response_extensions(sh.extensions, self.offered_extensions, SERVER_HELLO_EXTENSIONS, "ServerHello")
        if self.suite is not None and self.suite.suite != sh.cipher_suite:
            raise RemoteProtocolError("ServerHello cipher suite differs from HelloRetryRequest's", AlertDescription.illegal_parameter)
        self.suite = suite_info(sh.cipher_suite)
        cid = exts.get(ExtensionType.connection_id)
        if cid is not None:
            self.peer_connection_id = X.decode_connection_id(cid)
        else:
            self.own_connection_id = None  # the server did not take up CIDs (RFC 9146 §3)
        if not self.hello_retry_seen:
            self.transcript.start(self.suite)
        self.transcript.update(raw)

        psk: bytes | None = None
        early_secret: bytes | None = None
        if ExtensionType.pre_shared_key in exts:
            selected = X.decode_pre_shared_key_server(exts[ExtensionType.pre_shared_key])
            if selected >= len(self.offered_psks):
                raise RemoteProtocolError("server selected a PSK we did not offer", AlertDescription.illegal_parameter)
            chosen = self.offered_psks[selected]
            if chosen.hash_name != self.suite.hash_name:
                raise RemoteProtocolError("PSK cipher suite hash mismatch", AlertDescription.illegal_parameter)
            psk = chosen.psk
            # Extracted with this PSK's hash, which is the suite's (checked above).
            early_secret = self.offered_early_secrets[selected]
            self.psk_kind, self.psk_identity = chosen.kind, chosen.display_identity
            if chosen.kind is PskKind.RESUMPTION:
                assert self.ticket is not None
                self.resumed = True
                self.alpn_protocol = self.ticket.alpn_protocol

        shared: bytes | None = None
        if ExtensionType.key_share in exts:
            entry = X.decode_key_share_server(exts[ExtensionType.key_share])
            share = self.key_shares.get(entry.group)
            if share is None:
                raise RemoteProtocolError("server key share for a group we did not send", AlertDescription.illegal_parameter)
            if self.psk_kind is not None and PskKeyExchangeMode.psk_dhe_ke not in self.psk_modes:
                raise RemoteProtocolError("key share with psk_ke only", AlertDescription.illegal_parameter)
            shared = share.complete(entry.key_exchange)
            self.group = entry.group
        elif self.psk_kind is None:
            raise RemoteProtocolError("ServerHello without key_share", AlertDescription.missing_extension)
        elif PskKeyExchangeMode.psk_ke not in self.psk_modes:
            raise RemoteProtocolError("server chose psk_ke which we did not offer", AlertDescription.illegal_parameter)
        else:
            # psk_ke: an extended key update uses the first group of our
            # supported_groups (docs/external-psk.md; the EKU drafts assume a
            # negotiated group, and psk_ke negotiates none).
            self.psk_ke_eku_group = self.config.groups[0]
        self.key_shares.clear()  # ephemeral keys are used once (RFC 9846 §4.2.8)

        self.secrets = ks.HandshakeSecrets(self.suite, psk, self.transport.label_prefix, early_secret=early_secret)
        self.secrets.derive_handshake(shared, self.transcript.digest())
        self.conn.log_secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET", self.secrets.client_handshake_traffic_secret)
        self.conn.log_secret("SERVER_HANDSHAKE_TRAFFIC_SECRET", self.secrets.server_handshake_traffic_secret)
        self.conn.set_read_secret(self.suite, self.secrets.server_handshake_traffic_secret)
        self._send_ccs_once()
        self.conn.set_write_secret(self.suite, self.secrets.client_handshake_traffic_secret)
        self.state = ClientState.WAIT_EE

    def _send_ccs_once(self) -> None:
        if self.config.middlebox_compatibility and self.transport.middlebox_compatibility and not self.sent_ccs:
            self.conn.compatibility_ccs()
            self.sent_ccs = True

    def _on_hello_retry_request(self, hrr: ServerHello, raw: bytes) -> None:
        if self.hello_retry_seen:
            raise RemoteProtocolError("second HelloRetryRequest", AlertDescription.unexpected_message)
        # §4.2: the cookie is the one extension a server may send unsolicited.
        exts = check_response_extensions(
            hrr.extensions, self.offered_extensions | {ExtensionType.cookie}, HELLO_RETRY_EXTENSIONS,
            "HelloRetryRequest",
        )
        self.hello_retry_seen = True
        self.suite = suite_info(hrr.cipher_suite)
        self.transcript.start(self.suite)
        self.transcript.restart_after_hello_retry(self.suite)
        self.transcript.update(raw)
        changed = False
        if ExtensionType.cookie in exts:
            self.cookie = X.decode_cookie(exts[ExtensionType.cookie])
            changed = True
        if ExtensionType.key_share in exts:
            group = X.decode_key_share_hrr(exts[ExtensionType.key_share])
            # §4.1.4: the group must be one we support and did not already send.
            if group not in self.config.groups or group in self.key_shares:
                raise RemoteProtocolError("HelloRetryRequest asks for an unusable group", AlertDescription.illegal_parameter)
            self.key_shares = {group: self._new_share(group)}
            changed = True
        if not changed:
            raise RemoteProtocolError("HelloRetryRequest would not change the ClientHello", AlertDescription.illegal_parameter)
        if self.ticket is not None and suite_info(self.ticket.cipher_suite).hash_name != self.suite.hash_name:
            self.ticket = None  # the PSK cannot be used with this hash (§4.1.4)
        self._send_ccs_once()
        self._send_client_hello()
        self.state = ClientState.WAIT_SH

    # -------------------------------------------------- encrypted handshake

    def on_encrypted_extensions(self, body: bytes, raw: bytes) -> None:
        ee = EncryptedExtensions.decode(body)
        exts = check_response_extensions(ee.extensions, self.offered_extensions, ENCRYPTED_EXTENSIONS, "EncryptedExtensions")
        self.transcript.update(raw)
        alpn = exts.get(ExtensionType.application_layer_protocol_negotiation)
        if alpn is not None:
            protocols = X.decode_application_layer_protocol_negotiation(alpn)
            if len(protocols) != 1 or protocols[0].decode("latin-1") not in self.config.alpn_protocols:
                raise RemoteProtocolError("server selected an ALPN protocol we did not offer", AlertDescription.illegal_parameter)
            self.alpn_protocol = protocols[0].decode("latin-1")
        elif not self.resumed:
            self.alpn_protocol = None
        limit = exts.get(ExtensionType.record_size_limit)
        if limit is not None:
            self.conn.set_peer_record_size_limit(X.decode_record_size_limit(limit))
            self.conn.enforce_record_size_limit()
        if ExtensionType.early_data in exts:
            raise RemoteProtocolError("early_data accepted but never offered", AlertDescription.unsupported_extension)
        self.on_encrypted_extensions_hook(exts)
        update = exts.get(ExtensionType.certificate_update_request)
        if update is not None:
            # draft-rosomakho-tls-cert-update-02 §3: negotiated; a request in it
            # lets us send our first CertificateUpdate (malformed: illegal_parameter, §3.2).
            request = decode_certificate_update_request_extension(update)
            if request is not None:
                parse_update_request(request, from_client=False, where="EncryptedExtensions")
            self.certificate_update_negotiated = True
            self.peer_update_request = request
        # A PSK handshake has no Certificate or CertificateVerify (RFC 9846 §2.2).
        self.state = ClientState.WAIT_FINISHED if self.psk_kind is not None else ClientState.WAIT_CERT_CR

    def on_encrypted_extensions_hook(self, exts: dict[int, bytes]) -> None:
        flags = exts.get(ExtensionType.tls_flags)
        if flags is None:
            return
        # draft-ietf-tls-tlsflags §3: only flags our ClientHello proposed may
        # be acknowledged; and one EKU profile at most (illegal_parameter).
        assert self.client_hello is not None
        sent = next((e.data for e in self.client_hello.extensions if e.type == ExtensionType.tls_flags), None)
        proposed = X.decode_tls_flags(sent) if sent is not None else frozenset()
        profile = acknowledged_profile(X.decode_tls_flags(flags), proposed)
        self.eku_profile = profile.name if profile is not None else None

    def on_certificate_request(self, body: bytes, raw: bytes) -> None:
        cr = CertificateRequest.decode(body)
        if cr.certificate_request_context:
            raise RemoteProtocolError("handshake CertificateRequest with a context", AlertDescription.illegal_parameter)
        exts = {e.type: e.data for e in cr.extensions}
        if ExtensionType.signature_algorithms not in exts:
            raise RemoteProtocolError("CertificateRequest without signature_algorithms", AlertDescription.missing_extension)
        if ExtensionType.compress_certificate in exts:
            # RFC 8879 §3; parsed now so a malformed one is refused on arrival.
            X.decode_compress_certificate(exts[ExtensionType.compress_certificate])
        if ExtensionType.certificate_update_request in exts:
            # draft-rosomakho-tls-cert-update-02 §3.1: only in ClientHello and
            # EncryptedExtensions; elsewhere illegal_parameter.
            raise RemoteProtocolError(
                "certificate_update_request in a CertificateRequest", AlertDescription.illegal_parameter
            )
        self.transcript.update(raw)
        self.certificate_request = cr
        self.state = ClientState.WAIT_CERT

    def on_certificate(self, body: bytes, raw: bytes) -> None:
        self._on_server_certificate(Certificate.decode(body), raw)

    def on_compressed_certificate(self, body: bytes, raw: bytes) -> None:
        """RFC 8879 §4: the server's Certificate, compressed; the transcript
        takes the CompressedCertificate as it was sent."""
        if not self.offered_compression:
            raise RemoteProtocolError(
                "CompressedCertificate, but our ClientHello offered no certificate compression",
                AlertDescription.unexpected_message,
            )
        self._on_server_certificate(self.open_compressed_certificate(body, self.offered_compression), raw)

    def _on_server_certificate(self, cert: Certificate, raw: bytes) -> None:
        if cert.certificate_request_context:
            raise RemoteProtocolError("server Certificate with a request context", AlertDescription.illegal_parameter)
        if not cert.certificate_list:
            raise RemoteProtocolError("server sent no certificate", AlertDescription.decode_error)
        for entry in cert.certificate_list:
            if entry.extensions:
                raise RemoteProtocolError("certificate extension we did not ask for", AlertDescription.unsupported_extension)
        certs = decode_certificates(cert.certificate_list, self.config.max_certificate_chain_length)
        self.peer_certificates = tuple(certs)
        if self.config.verify_peer:
            self.verify_peer_chain(certs, self.config.trust_store, self.server_name, is_server_cert=True)
        self.transcript.update(raw)
        self.state = ClientState.WAIT_CV

    def on_certificate_verify(self, body: bytes, raw: bytes) -> None:
        self.peer_signature_scheme = self.verify_certificate_verify(
            body, SERVER_CV_CONTEXT, self.transcript, self.signature_algorithms
        )
        self.transcript.update(raw)
        self.state = ClientState.WAIT_FINISHED

    def on_finished(self, body: bytes, raw: bytes) -> None:
        assert self.secrets is not None and self.suite is not None
        self.check_finished(body, self.secrets.server_handshake_traffic_secret, self.transcript)
        self.transcript.update(raw)
        self.peer_finished = True
        secrets = self.secrets
        secrets.derive_application(self.transcript.digest())
        self.conn.log_secret("CLIENT_TRAFFIC_SECRET_0", secrets.client_application_traffic_secret)
        self.conn.log_secret("SERVER_TRAFFIC_SECRET_0", secrets.server_application_traffic_secret)
        self.conn.log_secret("EXPORTER_SECRET", secrets.exporter_secret)
        self.conn.set_read_secret(self.suite, secrets.server_application_traffic_secret)

        local_scheme = None
        if self.certificate_request is not None:
            local_scheme = self.answer_certificate_request(b"", self.certificate_request, self.transcript)
        self.send(HandshakeType.finished, self.finished_body(secrets.client_handshake_traffic_secret, self.transcript))
        secrets.derive_resumption(self.transcript.digest())
        self.handshake_transcript = self.transcript
        self.conn.set_write_secret(self.suite, secrets.client_application_traffic_secret)
        self.finish_handshake(
            ClientState.CONNECTED, client_authenticated=local_scheme is not None,
            local_signature_scheme=local_scheme,
        )

    def answer_certificate_request(
        self, context: bytes, request: CertificateRequest, transcript: ks.Transcript
    ) -> SignatureScheme | None:
        """Certificate (+ CertificateVerify) in answer to a CertificateRequest;
        returns the scheme we signed with, or None if we sent no certificate."""
        exts = {e.type: e.data for e in request.extensions}
        peer_schemes = X.decode_signature_algorithms(exts[ExtensionType.signature_algorithms])
        # RFC 8879 §3: the compression algorithms the server accepts, if any.
        compression = exts.get(ExtensionType.compress_certificate)
        algorithms = X.decode_compress_certificate(compression) if compression is not None else ()
        scheme = None
        if self.config.certificate_chain and self.config.private_key is not None:
            try:
                scheme = self.choose_signature_scheme(peer_schemes)
            except RemoteProtocolError:
                scheme = None  # §4.4.2: no suitable certificate -> an empty Certificate
        if scheme is None:
            body = Certificate(context, ()).encode()
            raw = encode_handshake(HandshakeType.certificate, body)
            transcript.update(raw)
            self.conn.queue_handshake(raw)
            return None
        raw = encode_handshake(*self.certificate_message(context, algorithms))
        transcript.update(raw)
        self.conn.queue_handshake(raw)
        raw = encode_handshake(
            HandshakeType.certificate_verify, self.sign_certificate_verify(scheme, CLIENT_CV_CONTEXT, transcript)
        )
        transcript.update(raw)
        self.conn.queue_handshake(raw)
        return scheme

    # ------------------------------------------------------- post-handshake

    def on_new_session_ticket(self, body: bytes, raw: bytes) -> None:
        nst = NewSessionTicket.decode(body)
        assert self.secrets is not None and self.suite is not None
        if nst.ticket_lifetime > MAX_TICKET_LIFETIME:
            raise RemoteProtocolError("ticket lifetime over 7 days", AlertDescription.illegal_parameter)
        max_early = 0
        for ext in nst.extensions:
            if ext.type == ExtensionType.early_data:
                max_early = X.decode_early_data_nst(ext.data)
        if nst.ticket_lifetime == 0:
            return  # §4.6.1: a zero lifetime means discard at once
        if self.eku_negotiated and self.eku_disables_tickets:
            return  # EKU draft-13 §6: ticket resumption is disabled with EKU
        self.tickets_taken += 1
        if self.tickets_taken > self.config.max_session_tickets:
            return  # a server handing out tickets without end gets no more memory
        psk = ks.resumption_psk(self.suite, self.conn.resumption_secret, nst.ticket_nonce, self.transport.label_prefix)
        self.conn.emit(SessionTicketReceived(SessionTicket(
            ticket=nst.ticket, psk=psk, cipher_suite=self.suite.suite,  # already the CipherSuite member
            lifetime=nst.ticket_lifetime, age_add=nst.ticket_age_add, received_at=self.config.now(),
            server_name=self.server_name, alpn_protocol=self.alpn_protocol, max_early_data_size=max_early,
        )))

    TRANSITIONS: ClassVar[dict[tuple[Enum, int], Handler]] = {
        (ClientState.WAIT_SH, HandshakeType.server_hello): on_server_hello,
        (ClientState.WAIT_EE, HandshakeType.encrypted_extensions): on_encrypted_extensions,
        (ClientState.WAIT_CERT_CR, HandshakeType.certificate_request): on_certificate_request,
        (ClientState.WAIT_CERT_CR, HandshakeType.certificate): on_certificate,
        (ClientState.WAIT_CERT, HandshakeType.certificate): on_certificate,
        (ClientState.WAIT_CERT_CR, HandshakeType.compressed_certificate): on_compressed_certificate,
        (ClientState.WAIT_CERT, HandshakeType.compressed_certificate): on_compressed_certificate,
        (ClientState.WAIT_CV, HandshakeType.certificate_verify): on_certificate_verify,
        (ClientState.WAIT_FINISHED, HandshakeType.finished): on_finished,
        (ClientState.CONNECTED, HandshakeType.new_session_ticket): on_new_session_ticket,
    }

