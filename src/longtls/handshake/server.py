"""The server handshake (RFC 9846 §2, §4; state machine of Appendix A.2)."""

from __future__ import annotations

from enum import Enum, auto
from typing import TYPE_CHECKING, ClassVar, cast

from ..config import ClientAuth, Configuration
from ..constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    AlertDescription,
    CipherSuite,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    PskKeyExchangeMode,
    PskKind,
    SignatureScheme,
)
from ..crypto import groups as _groups
from ..crypto import key_schedule as ks
from ..crypto import suites as _suites
from ..crypto.groups import get_group
from ..crypto.signatures import schemes_for_key
from ..crypto.suites import SuiteInfo, suite_info
from ..errors import DecodeError, RemoteProtocolError
from ..psk import find_external, server_candidate
from ..sni import ServerCredential, normalize_server_name, select_server_credential
from ..wire import extensions as X
from ..wire.buffer import u8
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
    extensions_by_type,
)
from ..wire.tickets import TicketState
from .cert_update import handshake_update_request, parse_update_request
from .common import (
    CLIENT_CV_CONTEXT,
    SERVER_CV_CONTEXT,
    Handler,
    HandshakeEngine,
    decode_certificates,
)
from .cookie import CookieContents, issue_cookie, open_cookie
from .eku_profiles import select_profile
from .host import HandshakeHost
from .tickets import (
    ORIGIN_LENGTH,
    Resumption,
    open_ticket,
    remember_generation,
    seal_ticket,
    usable_ticket,
)
from .transport import DTLS, TLS, Transport

if TYPE_CHECKING:
    from .eku import ExtendedKeyUpdate


class ServerState(Enum):
    START = auto()
    WAIT_CH2 = auto()
    WAIT_CERT = auto()
    WAIT_CV = auto()
    WAIT_FINISHED = auto()
    CONNECTED = auto()


def _pre_tls13_client_hello(body: bytes, dtls: bool) -> ClientHello:
    """A ClientHello that failed TLS 1.3's syntax: is it a TLS 1.2-style one?

    Its extensions block may be shorter than the <7..> minimum of a TLS 1.3
    ClientHello (a TLS 1.2 block is <0..2^16-1>; supported_versions alone
    takes 7 bytes).  If it parses that way and has no supported_versions it
    is returned, for the protocol_version answer (Appendix E.2); anything
    else is malformed: decode_error.
    """
    ch = ClientHello.decode(body, minimum_extensions_length=0, dtls=dtls)
    if any(e.type == ExtensionType.supported_versions for e in ch.extensions):
        raise DecodeError("ClientHello extensions block shorter than 7 bytes")
    return ch


def _client_groups(exts: dict[int, bytes]) -> tuple[tuple[int, ...], dict[int, bytes]]:
    """The client's supported_groups and its key shares by group; the shares
    must be for groups it lists (RFC 9846 §4.2.8)."""
    client_groups: tuple[int, ...] = ()
    shares: dict[int, bytes] = {}
    if ExtensionType.key_share in exts:
        if ExtensionType.supported_groups not in exts:
            raise RemoteProtocolError("key_share without supported_groups", AlertDescription.missing_extension)
        for entry in X.decode_key_share_client(exts[ExtensionType.key_share]):
            if entry.group in shares:
                raise RemoteProtocolError("two key shares for one group", AlertDescription.illegal_parameter)
            shares[entry.group] = entry.key_exchange
    if ExtensionType.supported_groups in exts:
        client_groups = X.decode_supported_groups(exts[ExtensionType.supported_groups])
        for g in shares:
            if g not in client_groups:
                raise RemoteProtocolError("key share for a group not in supported_groups", AlertDescription.illegal_parameter)
    return client_groups, shares


class ServerHandshake(HandshakeEngine):
    def __init__(
        self, conn: HandshakeHost, config: Configuration, transport: Transport = TLS,
        client_address: bytes = b"",
    ) -> None:
        super().__init__(conn, config, transport)
        #: The client's transport address as the host sees it: DTLS cookies
        #: are bound to it (RFC 9147 §5.1).
        self.client_address = client_address
        #: RFC 9147 §5.1: a DTLS server keeps no state before the client
        #: echoes a valid cookie (Configuration.dtls_cookie).
        self.stateless_cookie = transport.datagram and config.dtls_cookie
        #: We answered the last ClientHello with a stateless HelloRetryRequest
        #: and kept nothing of it: the host may drop this engine (a fresh one
        #: takes the second ClientHello just as well).
        self.awaiting_cookie = False
        self.client_hello: ClientHello | None = None
        self.client_extensions: dict[int, bytes] = {}
        self.client_offered_post_handshake_auth = False
        self.hrr_group: int | None = None
        self.hrr_cookie: bytes | None = None
        self.certificate_requested = False
        self.client_authenticated = False
        self.skip_budget = 0
        self.tickets_sent = 0
        # RFC 8879: the client's compress_certificate list (for our Certificate),
        # and what our CertificateRequest offered (for the client's).
        self.client_compression: tuple[int, ...] = ()
        self.requested_compression: tuple[int, ...] = ()
        self.client_psk_modes: tuple[int, ...] = ()
        self.client_signature_algorithms: tuple[int, ...] = ()
        self.selected_identity = 0
        #: The Early Secret of the PSK whose binder verified (a secret: kept
        #: from _check_psk until the server flight uses it).
        self.psk_early_secret: bytes | None = None
        # An offered PSK identity we know but cannot use (hash or mode): the
        # alert a server without a certificate sends (docs/external-psk.md).
        self.known_psk_unusable = False
        # Names this connection inside its tickets, so an extended key update
        # can invalidate the ones issued before it.
        self.ticket_origin = config.random(ORIGIN_LENGTH)
        self.scheme: SignatureScheme | None = None

    def initial_state(self) -> Enum:
        return ServerState.START

    # ---------------------------------------------------------- ClientHello

    def on_client_hello(self, body: bytes, raw: bytes) -> None:
        self.started = True
        ch, exts = self._parse_client_hello(body)
        if self.state is ServerState.START and self.stateless_cookie:
            retry = self.cookie_admission(ch, exts, raw)
            if retry is not None:
                self.conn.queue_handshake(retry)
                self.awaiting_cookie = True
                return
            # A valid cookie: the transcript holds message_hash(ClientHello1)
            # and our HelloRetryRequest, and we are in WAIT_CH2.

        if self.state is ServerState.WAIT_CH2:
            self._check_second_client_hello(ch, exts)
            # §4.3.10: early data, skipped since the HelloRetryRequest, ends
            # with this ClientHello; from now on every record must open.
            self.skip_budget = 0
        else:
            self.suite = self._choose_suite(ch, exts)
            self.transcript.start(self.suite)
        assert self.suite is not None
        self.client_hello = ch
        self.client_extensions = exts
        self.client_offered_post_handshake_auth = ExtensionType.post_handshake_auth in exts

        if ExtensionType.server_name in exts:
            self.server_name = X.decode_server_name(exts[ExtensionType.server_name])
        if ExtensionType.record_size_limit in exts:
            self.conn.set_peer_record_size_limit(X.decode_record_size_limit(exts[ExtensionType.record_size_limit]))
        if ExtensionType.psk_key_exchange_modes in exts:
            self.client_psk_modes = X.decode_psk_key_exchange_modes(exts[ExtensionType.psk_key_exchange_modes])
        if ExtensionType.signature_algorithms in exts:
            self.client_signature_algorithms = X.decode_signature_algorithms(exts[ExtensionType.signature_algorithms])
        if ExtensionType.compress_certificate in exts:
            self.client_compression = X.decode_compress_certificate(exts[ExtensionType.compress_certificate])
        if ExtensionType.early_data in exts:
            # We never accept 0-RTT: skip the client's early records (§4.2.10).
            self.skip_budget = self.config.max_early_data_skipped
        # RFC 6066 §3, RFC 9846 §4.4.2.2: server_name guides which certificate
        # we present (longtls.sni, docs/sni.md).
        self.server_credential = self._select_credential()

        client_groups, shares = _client_groups(exts)

        # The binder covers the transcript up to the truncated ClientHello, so
        # check the PSK before this ClientHello enters the transcript.
        resumption = self._check_psk(ch, exts, raw)
        self.transcript.update(raw)

        use_dhe = True
        if resumption is not None:
            # §4.2.9: a mode both allow, in our order of preference (psk_dhe_ke
            # needs the client's groups); none in common means no PSK.
            mode = self._choose_psk_mode(client_groups)
            if mode is None:
                self.known_psk_unusable = True
                resumption = None
            elif mode == PskKeyExchangeMode.psk_ke:
                use_dhe = False
                # EKU's group under psk_ke: the client's first supported group,
                # if we have it (docs/external-psk.md).
                if client_groups and client_groups[0] in self.config.groups:
                    self.psk_ke_eku_group = client_groups[0]

        if resumption is None and not (self.own_certificate_chain and self.own_private_key is not None):
            if self.config.server_credentials:
                raise self._no_credential_for_name()
            raise self._no_usable_psk(ExtensionType.pre_shared_key in exts)
        if resumption is None:
            if ExtensionType.signature_algorithms not in exts:
                raise RemoteProtocolError("ClientHello without signature_algorithms", AlertDescription.missing_extension)
            if ExtensionType.supported_groups not in exts or ExtensionType.key_share not in exts:
                raise RemoteProtocolError("ClientHello without supported_groups or key_share", AlertDescription.missing_extension)
            self.scheme = self.choose_signature_scheme(self.client_signature_algorithms)

        shared: bytes | None = None
        server_share: X.KeyShareEntry | None = None
        if use_dhe:
            group = self._choose_group(client_groups, shares)
            if group not in shares:
                if self.state is ServerState.WAIT_CH2:
                    raise RemoteProtocolError("second ClientHello lacks the requested key share", AlertDescription.illegal_parameter)
                self._send_hello_retry_request(ch, group)
                return
            ephemeral = None
            if self.config.key_share_factory is not None and not get_group(group).is_kem:
                ephemeral = self.config.key_share_factory(NamedGroup(group))
            response, shared = get_group(group).respond(shares[group], ephemeral)
            server_share = X.KeyShareEntry(group, response)
            self.group = group

        if resumption is not None:
            self.psk_kind, self.psk_identity = resumption.kind, resumption.identity
            if resumption.kind is PskKind.RESUMPTION:
                self.resumed = True
                self.alpn_protocol = resumption.alpn
        self._send_server_flight(ch, exts, resumption, server_share, shared)

    def _parse_client_hello(self, body: bytes) -> tuple[ClientHello, dict[int, bytes]]:
        """Decode a ClientHello and check what every ClientHello must get right."""
        t = self.transport
        try:
            ch = ClientHello.decode(body, dtls=t.has_legacy_cookie)
        except DecodeError:
            ch = _pre_tls13_client_hello(body, t.has_legacy_cookie)
        exts = extensions_by_type(ch.extensions)
        sv = exts.get(ExtensionType.supported_versions)
        if sv is None or t.version not in X.decode_supported_versions_client(sv):
            # A DTLS server refuses TLS versions and a TLS server DTLS ones (RFC 9147 §5.3).
            raise RemoteProtocolError(
                f"client does not offer {t.protocol} (longtls speaks only {t.protocol})",
                AlertDescription.protocol_version,
            )
        if ch.legacy_version != t.legacy_version:
            raise RemoteProtocolError(
                f"ClientHello legacy_version is not 0x{t.legacy_version:04x}", AlertDescription.protocol_version
            )
        if ch.legacy_cookie:
            # RFC 9147 §5.3: "If a DTLS 1.3 ClientHello is received with any
            # other value in this field, the server MUST abort the handshake
            # with an illegal_parameter alert."
            raise RemoteProtocolError("DTLS 1.3 ClientHello with a non-empty legacy_cookie", AlertDescription.illegal_parameter)
        if ch.legacy_compression_methods != b"\x00":
            raise RemoteProtocolError("compression methods other than null", AlertDescription.illegal_parameter)
        if ch.extensions and ExtensionType.pre_shared_key in exts and ch.extensions[-1].type != ExtensionType.pre_shared_key:
            raise RemoteProtocolError("pre_shared_key is not the last extension", AlertDescription.illegal_parameter)
        return ch, exts

    def _choose_psk_mode(self, client_groups: tuple[int, ...]) -> PskKeyExchangeMode | None:
        for mode in self.config.psk_key_exchange_modes:
            if mode in self.client_psk_modes and (mode == PskKeyExchangeMode.psk_ke or client_groups):
                return PskKeyExchangeMode(mode)
        return None

    def _no_usable_psk(self, offered: bool) -> RemoteProtocolError:
        """A server without a certificate found no PSK it can use (§4.2.11;
        the alerts are the decision of docs/external-psk.md)."""
        if not offered:
            return RemoteProtocolError(
                "this server authenticates with external PSKs only, and the client offered none",
                AlertDescription.handshake_failure,
            )
        if self.known_psk_unusable:
            return RemoteProtocolError(
                "the client's PSK cannot be used with the cipher suites or PSK modes we share",
                AlertDescription.handshake_failure,
            )
        return RemoteProtocolError("no PSK identity the client offered is known", AlertDescription.unknown_psk_identity)

    def _select_credential(self) -> ServerCredential | None:
        """The credential of ``server_credentials`` for the client's name
        (None: the default pair); of several for one name, the first whose
        key signs with a scheme the client offers and we allow."""

        if not self.config.server_credentials:
            return None  # the default pair, as select_server_credential answers (issue 16: no work)

        def usable(credential: ServerCredential) -> bool:
            chain = credential.certificate_chain
            return any(
                scheme in self.client_signature_algorithms and scheme in self.signature_algorithms
                for scheme in schemes_for_key(credential.private_key, chain[0] if chain else None)
            )

        return select_server_credential(self.config.server_credentials, self.server_name, usable)

    def _no_credential_for_name(self) -> RemoteProtocolError:
        """A server with ``server_credentials`` and no default pair found no
        certificate for this client: RFC 9846 §9.2 (a server that requires
        server_name answers its absence with missing_extension) and RFC 6066
        §3 (a name it does not recognise: unrecognized_name)."""
        if self.server_name is None:
            return RemoteProtocolError(
                "this server chooses its certificate by server_name, and the ClientHello has none",
                AlertDescription.missing_extension,
            )
        return RemoteProtocolError(
            f"no certificate for server name {self.server_name!r}", AlertDescription.unrecognized_name
        )

    def _ticket_name_matches(self, resumption: Resumption) -> bool:
        """A server that chooses its certificate by name resumes a ticket only
        for the name it was issued under: the resumed session is authenticated
        by that name's certificate, which need not cover another (RFC 9846
        §4.6.1: "if a server implementation declines all PSK identities with
        different SNI values", the session's and the new name are the same).
        With one certificate, any name (RFC 9846 §4.2.11: no need to
        associate an SNI value with the ticket)."""
        if not self.config.server_credentials:
            return True
        return normalize_server_name(resumption.server_name) == normalize_server_name(self.server_name)

    def _choose_suite(self, ch: ClientHello, exts: dict[int, bytes]) -> SuiteInfo:
        common = [s for s in self.config.cipher_suites if s in ch.cipher_suites]
        if not common:
            hint = _suites.not_enabled_hint(ch.cipher_suites, self.config.cipher_suites)
            raise RemoteProtocolError(
                "no cipher suite in common" + hint, AlertDescription.handshake_failure
            )
        # §4.2.11: "externally established PSKs SHOULD influence cipher suite
        # selection": our best suite with the hash of the first one we know.
        wanted = self._external_psk_hash(exts)
        for suite in common:
            if suite_info(suite).hash_name == wanted:
                return suite_info(suite)
        return suite_info(common[0])

    def _external_psk_hash(self, exts: dict[int, bytes]) -> str | None:
        data = exts.get(ExtensionType.pre_shared_key)
        if data is None or not self.config.has_external_psks:
            return None
        for identity in X.decode_pre_shared_key_client(data).identities:
            found = find_external(
                self.config.external_psks, self.config.external_psk_lookup, identity.identity, self.transport.version
            )
            if found is not None:
                return found[1]
        return None

    def _choose_group(self, client_groups: tuple[int, ...], shares: dict[int, bytes]) -> int:
        # Prefer a group the client already sent a share for (saves a round
        # trip), in our order of preference; else our best common group.
        for g in self.config.groups:
            if g in shares:
                return g
        for g in self.config.groups:
            if g in client_groups:
                return g
        hint = _groups.not_enabled_hint(client_groups, self.config.groups)
        raise RemoteProtocolError(
            "no key exchange group in common" + hint, AlertDescription.handshake_failure
        )

    def _check_second_client_hello(self, ch: ClientHello, exts: dict[int, bytes]) -> None:
        # §4.1.2: the second ClientHello answers the HelloRetryRequest.
        assert self.suite is not None
        if self.suite.suite not in ch.cipher_suites:
            raise RemoteProtocolError("second ClientHello drops the chosen suite", AlertDescription.illegal_parameter)
        first = self.client_hello  # None after a stateless retry: nothing of it was kept
        if first is not None and (ch.random != first.random or ch.legacy_session_id != first.legacy_session_id):
            raise RemoteProtocolError("second ClientHello changed random or session id", AlertDescription.illegal_parameter)
        cookie = exts.get(ExtensionType.cookie)
        if cookie is None or X.decode_cookie(cookie) != self.hrr_cookie:
            raise RemoteProtocolError("second ClientHello does not echo our cookie", AlertDescription.illegal_parameter)
        if ExtensionType.early_data in exts:
            raise RemoteProtocolError("early_data after HelloRetryRequest", AlertDescription.illegal_parameter)
        if self.hrr_group is None:
            return  # a cookie-only HelloRetryRequest (DTLS) asked for no key share
        shares = X.decode_key_share_client(exts.get(ExtensionType.key_share, b"\x00\x00"))
        if len(shares) != 1 or shares[0].group != self.hrr_group:
            raise RemoteProtocolError("second ClientHello must carry exactly the requested share", AlertDescription.illegal_parameter)

    def _send_hello_retry_request(self, ch: ClientHello, group: int) -> None:
        assert self.suite is not None
        self.hrr_group = group
        # The cookie binds the retry to this ClientHello; we keep state, so it
        # only has to be unpredictable and echoed verbatim (§4.2.2).
        self.hrr_cookie = self.config.random(32)
        raw = self._hello_retry_request(ch, self.suite.suite, group, self.hrr_cookie)
        self.transcript.restart_after_hello_retry(self.suite)
        self.transcript.update(raw)
        self.conn.queue_handshake(raw)
        if self._session_id_echo(ch):
            self.conn.compatibility_ccs()
        self.state = ServerState.WAIT_CH2

    def _hello_retry_request(self, ch: ClientHello, suite: int, group: int | None, cookie: bytes) -> bytes:
        """The whole HelloRetryRequest message (RFC 9846 §4.1.4).  A stateless
        server rebuilds it from its cookie, so it depends on nothing else."""
        t = self.transport
        exts = [Extension(ExtensionType.supported_versions, X.encode_supported_versions_server(t.version))]
        if group is not None:
            exts.append(Extension(ExtensionType.key_share, X.encode_key_share_hrr(group)))
        exts.append(Extension(ExtensionType.cookie, X.encode_cookie(cookie)))
        hrr = ServerHello(
            HELLO_RETRY_REQUEST_RANDOM, self._session_id_echo(ch), suite, tuple(exts),
            legacy_version=t.legacy_version,
        )
        return encode_handshake(HandshakeType.server_hello, hrr.encode())

    def _session_id_echo(self, ch: ClientHello) -> bytes:
        # RFC 9147 §5 (and rfc9147bis-02 §5): a DTLS 1.3 server never echoes
        # legacy_session_id; its legacy_session_id_echo is empty.
        return ch.legacy_session_id if self.transport.middlebox_compatibility else b""

    # ---------------------------------------------------- stateless cookie

    def cookie_admission(self, ch: ClientHello, exts: dict[int, bytes], raw: bytes) -> bytes | None:
        """RFC 9147 §5.1 at a stateless server, for a ClientHello that finds
        this engine in START.

        Without a cookie: returns the HelloRetryRequest to send, with a
        cookie holding all the engine needs later (handshake/cookie.py), and
        changes nothing here: no state, no key exchange, no signature before
        the client has shown it receives at its address.  With a valid
        cookie: returns None, having restored the transcript
        (message_hash(ClientHello1), then the HelloRetryRequest rebuilt byte
        for byte) and the WAIT_CH2 state, so the ClientHello is handled as
        the answer to our own HelloRetryRequest.  A cookie that fails its
        MAC, has expired or was issued to another address is
        illegal_parameter (RFC 9147 §5.1: "If a server receives a
        ClientHello with an invalid cookie, it MUST terminate the handshake
        with an illegal_parameter alert"); a new HelloRetryRequest would be
        no use, a client aborts on a second one (RFC 9846 §4.1.4).
        """
        cfg, t = self.config, self.transport
        data = exts.get(ExtensionType.cookie)
        if data is None:
            return self._stateless_hello_retry_request(ch, exts, raw)
        cookie = X.decode_cookie(data)
        secrets = [cfg.cookie_secret]
        if cfg.previous_cookie_secret is not None:
            secrets.append(cfg.previous_cookie_secret)
        contents = open_cookie(cookie, secrets, t.version, self.client_address, cfg.now(), cfg.cookie_lifetime)
        if contents is None:
            raise RemoteProtocolError(
                "ClientHello cookie is invalid, expired or from another address", AlertDescription.illegal_parameter
            )
        if contents.cipher_suite not in cfg.cipher_suites:
            # Ours, but issued under a configuration that has since changed.
            raise RemoteProtocolError("ClientHello cookie names a cipher suite no longer enabled", AlertDescription.illegal_parameter)
        suite = suite_info(contents.cipher_suite)
        digest = contents.client_hello_hash
        self.suite = suite
        self.hrr_group = contents.group
        self.hrr_cookie = cookie
        # RFC 9846 §4.4.1: ClientHello1 enters the transcript as message_hash.
        self.transcript.start(suite)
        self.transcript.update(bytes((HandshakeType.message_hash, 0, 0, len(digest))) + digest)
        self.transcript.update(self._hello_retry_request(ch, suite.suite, contents.group, cookie))
        self.state = ServerState.WAIT_CH2
        self.awaiting_cookie = False
        return None

    def _stateless_hello_retry_request(self, ch: ClientHello, exts: dict[int, bytes], raw: bytes) -> bytes:
        """The HelloRetryRequest with a fresh cookie for ClientHello ``raw``.

        It asks for a key share too when the client sent none for the group
        we would choose, so one round trip serves both (RFC 9147 §5.1 and
        RFC 9846 §4.1.4 allow both in one HelloRetryRequest)."""
        cfg, t = self.config, self.transport
        suite = self._choose_suite(ch, exts)
        client_groups, shares = _client_groups(exts)
        group: int | None = None
        if client_groups:
            try:
                chosen = self._choose_group(client_groups, shares)
            except RemoteProtocolError:
                chosen = None  # decided on ClientHello2 (a psk_ke resumption needs no group)
            if chosen is not None and chosen not in shares:
                group = chosen
        # Whole seconds: a ClientHello retransmitted within the same second gets
        # the same HelloRetryRequest byte for byte, as a retransmission should
        # be (RFC 9147 §3.1: the server answers a retransmitted ClientHello by
        # retransmitting its HelloRetryRequest; §5.5: bytes never change).
        contents = CookieContents(
            issued_ms=int(cfg.now()) * 1000, cipher_suite=suite.suite, group=group,
            client_hello_hash=ks.transcript_digest(suite, raw),
        )
        cookie = issue_cookie(cfg.cookie_secret, t.version, self.client_address, contents)
        return self._hello_retry_request(ch, suite.suite, group, cookie)

    # ----------------------------------------------------------- resumption

    def _check_psk(self, ch: ClientHello, exts: dict[int, bytes], raw: bytes) -> Resumption | None:
        data = exts.get(ExtensionType.pre_shared_key)
        if data is None:
            return None
        if ExtensionType.psk_key_exchange_modes not in exts:
            raise RemoteProtocolError("pre_shared_key without psk_key_exchange_modes", AlertDescription.missing_extension)
        offered = X.decode_pre_shared_key_client(data)
        if len(offered.identities) != len(offered.binders):
            raise RemoteProtocolError("PSK identities and binders differ in number", AlertDescription.illegal_parameter)
        if not self.config.psk_key_exchange_modes:
            return None
        assert self.suite is not None
        # §4.2.11: the first identity we can use; unknown ones are skipped.
        for index, identity in enumerate(offered.identities):
            found = None
            # A resumption carries no certificate to hold against an
            # allow-list or CRL: full handshakes only (docs/access-control.md).
            if self.config.session_tickets > 0 and not self.config.checks_peer_access:
                found = self._open_ticket(identity.identity, identity.obfuscated_ticket_age)
                if found is not None and suite_info(found.suite).hash_name != self.suite.hash_name:
                    found = None
                if found is not None and not self._ticket_name_matches(found):
                    found = None
            if found is None and self.config.has_external_psks:
                found = self._external_psk(identity.identity)
            if found is None:
                continue
            # §4.2.11.2: verify the binder before accepting the PSK.
            truncated = raw[: len(raw) - X.offered_psks_binders_length(offered)]
            # DTLS: over the TLS-form ClientHello, under "dtls13" labels (RFC 9147 §5.2, §5.9).
            prefix = self.transport.label_prefix
            early = ks.HandshakeSecrets(self.suite, found.psk, prefix)
            binder_key = early.binder_key(found.kind.binder_label)
            expected = ks.finished_verify_data(self.suite, binder_key, self.transcript.digest_with(truncated), prefix)
            if not ks.constant_time_equal(expected, offered.binders[index]):
                raise RemoteProtocolError("PSK binder does not verify", AlertDescription.decrypt_error)
            self.selected_identity = index
            # The handshake secret starts from this Early Secret (RFC 9846 §7.1):
            # kept, so it is extracted once (issue 16).
            self.psk_early_secret = early.early_secret
            return found
        return None

    def _external_psk(self, identity: bytes) -> Resumption | None:
        assert self.suite is not None
        cfg = self.config
        candidate = server_candidate(
            cfg.external_psks, cfg.external_psk_lookup, identity, self.suite.hash_name, self.transport.version
        )
        if candidate is None:
            if find_external(cfg.external_psks, cfg.external_psk_lookup, identity, self.transport.version) is not None:
                self.known_psk_unusable = True  # ours, but bound to the other hash
            return None
        return Resumption(
            candidate.psk, CipherSuite(self.suite.suite), None, None, candidate.kind, candidate.display_identity
        )

    def _seal_ticket(self, psk: bytes, age_add: int) -> bytes:
        assert self.suite is not None
        cfg = self.config
        state = TicketState(
            self.suite.suite, int(cfg.now() * 1000), cfg.ticket_lifetime, self.ticket_origin,
            self.conn.key_generation, age_add, psk, self.alpn_protocol, self.server_name,
        )
        # The first key seals; the others only open (rotation, docs/scaling.md).
        return seal_ticket(cfg.effective_ticket_keys[0], cfg.random(12), state, self.transport.ticket_aad)

    def _open_ticket(self, ticket: bytes, obfuscated_age: int) -> Resumption | None:
        state = open_ticket(self.config.effective_ticket_keys, ticket, self.transport.ticket_aad)
        if state is None:
            return None
        return usable_ticket(
            state, now_ms=int(self.config.now() * 1000), obfuscated_age=obfuscated_age,
            cipher_suites=self.config.cipher_suites, ticket_generations=self.config.ticket_generations,
        )

    # ---------------------------------------------------------- server flight

    def _send_server_flight(
        self, ch: ClientHello, exts: dict[int, bytes], resumption: Resumption | None,
        server_share: X.KeyShareEntry | None, shared: bytes | None,
    ) -> None:
        assert self.suite is not None
        cfg = self.config
        sh_exts: list[Extension] = []
        if resumption is not None:
            sh_exts.append(Extension(ExtensionType.pre_shared_key, X.encode_pre_shared_key_server(self.selected_identity)))
        if server_share is not None:
            sh_exts.append(Extension(ExtensionType.key_share, X.encode_key_share_server(server_share)))
        t = self.transport
        sh_exts.append(Extension(ExtensionType.supported_versions, X.encode_supported_versions_server(t.version)))
        peer_cid = exts.get(ExtensionType.connection_id)
        own_cid = self.new_own_connection_id() if peer_cid is not None else None
        if peer_cid is not None and own_cid is not None:
            # RFC 9146 §3 / RFC 9147 §9: both sides sent the extension: CIDs are
            # negotiated (either may be empty).  Not in a HelloRetryRequest.
            self.peer_connection_id = X.decode_connection_id(peer_cid)
            self.own_connection_id = own_cid
            sh_exts.append(Extension(ExtensionType.connection_id, X.encode_connection_id(own_cid)))
        session_id_echo = self._session_id_echo(ch)
        self.send(HandshakeType.server_hello, ServerHello(
            cfg.random(32), session_id_echo, self.suite.suite, tuple(sh_exts), legacy_version=t.legacy_version,
        ).encode())
        if session_id_echo and self.hrr_group is None:
            self.conn.compatibility_ccs()

        if resumption is not None:
            secrets = ks.HandshakeSecrets(self.suite, resumption.psk, t.label_prefix, early_secret=self.psk_early_secret)
        else:
            secrets = ks.HandshakeSecrets(self.suite, None, t.label_prefix)
        self.psk_early_secret = None
        self.secrets = secrets
        self.conn.client_random = ch.random
        secrets.derive_handshake(shared, self.transcript.digest())
        self.conn.log_secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET", secrets.client_handshake_traffic_secret)
        self.conn.log_secret("SERVER_HANDSHAKE_TRAFFIC_SECRET", secrets.server_handshake_traffic_secret)
        self.conn.set_write_secret(self.suite, secrets.server_handshake_traffic_secret)
        self.conn.set_read_secret(self.suite, secrets.client_handshake_traffic_secret)

        self.send(HandshakeType.encrypted_extensions, EncryptedExtensions(tuple(self._encrypted_extensions(exts, resumption))).encode())
        if resumption is None:
            if cfg.client_auth is not ClientAuth.NONE:
                cr = CertificateRequest(b"", self.certificate_request_extensions())
                self.send(HandshakeType.certificate_request, cr.encode())
                self.certificate_requested = True
            self.send(*self.certificate_message(b"", self.client_compression))
            assert self.scheme is not None
            self.send(HandshakeType.certificate_verify, self.sign_certificate_verify(self.scheme, SERVER_CV_CONTEXT, self.transcript))
        self.send(HandshakeType.finished, self.finished_body(secrets.server_handshake_traffic_secret, self.transcript))
        secrets.derive_application(self.transcript.digest())
        self.conn.log_secret("CLIENT_TRAFFIC_SECRET_0", secrets.client_application_traffic_secret)
        self.conn.log_secret("SERVER_TRAFFIC_SECRET_0", secrets.server_application_traffic_secret)
        self.conn.log_secret("EXPORTER_SECRET", secrets.exporter_secret)
        self.conn.set_write_secret(self.suite, secrets.server_application_traffic_secret)
        self.state = ServerState.WAIT_CERT if self.certificate_requested else ServerState.WAIT_FINISHED

    def _encrypted_extensions(self, exts: dict[int, bytes], resumption: Resumption | None) -> list[Extension]:
        out: list[Extension] = []
        if ExtensionType.server_name in exts and self.server_name is not None:
            out.append(Extension(ExtensionType.server_name, b""))
        alpn = exts.get(ExtensionType.application_layer_protocol_negotiation)
        if alpn is not None and self.config.alpn_protocols:
            offered = [p.decode("latin-1") for p in X.decode_application_layer_protocol_negotiation(alpn)]
            chosen = next((p for p in self.config.alpn_protocols if p in offered), None)
            if chosen is None:
                raise RemoteProtocolError("no application protocol in common", AlertDescription.no_application_protocol)
            if resumption is not None and resumption.alpn is not None and resumption.alpn != chosen:
                chosen = resumption.alpn if resumption.alpn in offered else chosen
            self.alpn_protocol = chosen
            out.append(Extension(
                ExtensionType.application_layer_protocol_negotiation,
                X.encode_application_layer_protocol_negotiation([chosen.encode("latin-1")]),
            ))
        else:
            self.alpn_protocol = None
        if ExtensionType.record_size_limit in exts:
            out.append(Extension(ExtensionType.record_size_limit, X.encode_record_size_limit(self.config.record_size_limit)))
            self.conn.enforce_record_size_limit()
        out.extend(self.extra_encrypted_extensions(exts))
        out.extend(self._certificate_update_extensions(exts, resumption))
        return out

    def _certificate_update_extensions(self, client_exts: dict[int, bytes], resumption: Resumption | None) -> list[Extension]:
        """draft-rosomakho-tls-cert-update-02 §3.1: answer the client's
        certificate_update_request in EncryptedExtensions."""
        data = client_exts.get(ExtensionType.certificate_update_request)
        if data is None or not self.config.certificate_update:
            return []
        request = decode_certificate_update_request_extension(data)
        if request is not None:
            parse_update_request(request, from_client=True, where="ClientHello")  # §3.2: illegal_parameter
        if resumption is not None:
            # Decision (docs/certificate-update.md): a PSK handshake has no
            # certificate for an update to be compared with (§4.1 speaks of
            # "the certificate originally presented ... during the
            # handshake"), so we do not answer: not negotiated.
            return []
        self.certificate_update_negotiated = True
        self.peer_update_request = request
        # Decision 4 (handshake/cert_update.py): a request of ours whenever the
        # client may authenticate with a certificate, in the handshake or after it.
        if self.config.client_auth is not ClientAuth.NONE or self.client_offered_post_handshake_auth:
            self.own_update_request = handshake_update_request(
                self.config, from_client=False, schemes=self.signature_algorithms
            )
        return [Extension(
            ExtensionType.certificate_update_request,
            encode_certificate_update_request_extension(self.own_update_request),
        )]

    def release_handshake_state(self) -> None:
        super().release_handshake_state()
        self.client_hello = None
        self.client_extensions = {}
        if not self.client_offered_post_handshake_auth:
            self.handshake_transcript = None  # only post-handshake auth extends it

    def extra_encrypted_extensions(self, client_exts: dict[int, bytes]) -> list[Extension]:
        # EKU draft-13 §3: acknowledge the client's flag in EncryptedExtensions.
        flags = client_exts.get(ExtensionType.tls_flags)
        if flags is None or self.eku_group is None:  # psk_ke without a usable group
            return []
        offered = X.decode_tls_flags(flags)
        if not self.config.extended_key_update:
            return []
        # One flag per EKU profile: acknowledge exactly one, the newest both
        # speak (docs/eku-profiles.md); unknown flags are ignored.
        profile = select_profile(offered, self.config.eku_profile_names())
        if profile is None:
            return []
        self.eku_profile = profile.name
        return [Extension(ExtensionType.tls_flags, X.encode_tls_flags({profile.flag}))]

    def skip_undecryptable(self, length: int, records_opened: int) -> bool:
        # §4.3.10: a server that rejects 0-RTT discards records that fail to
        # decrypt under the handshake key, up to a limit.  "Once a record is
        # deprotected successfully, it is treated as the start of the client's
        # second flight": after that a record that fails is bad_record_mac.
        second_flight_started = records_opened > 0
        if self.skip_budget > 0 and not second_flight_started and not self.peer_finished:
            self.skip_budget -= length
            return self.skip_budget >= 0
        self.skip_budget = 0
        return False

    def skip_early_data_record(self, length: int) -> bool:
        # §4.3.10: after a HelloRetryRequest the server "ignores early data by
        # skipping all records with an external content type of
        # application_data ... up to the configured max_early_data_size",
        # until the second ClientHello.  Past the limit the record is an
        # unexpected one (unexpected_message).
        if self.state is ServerState.WAIT_CH2 and self.skip_budget > 0:
            self.skip_budget -= length
            return self.skip_budget >= 0
        return False

    # -------------------------------------------------- client's second flight

    def certificate_request_extensions(self) -> tuple[Extension, ...]:
        """The extensions of our CertificateRequest, in the handshake or after it."""
        exts = [Extension(ExtensionType.signature_algorithms, X.encode_signature_algorithms(list(self.signature_algorithms)))]
        self.requested_compression = tuple(self.config.certificate_compression)
        if self.requested_compression:
            # RFC 8879 §3: we accept a compressed client Certificate.
            exts.append(Extension(
                ExtensionType.compress_certificate, X.encode_compress_certificate(list(self.requested_compression))
            ))
        return tuple(exts)

    # The client's Certificate and CertificateVerify, checked the same way in
    # the handshake and after it (handshake/post_auth.py); the caller owns the
    # transcript and the states.

    def client_certificate(self, msg_type: int, body: bytes) -> Certificate:
        """The client's Certificate, or the one inside its CompressedCertificate
        (RFC 8879 §4: only in answer to a CertificateRequest that offered compression)."""
        if msg_type == HandshakeType.certificate:
            self.peer_certificate_compression = None
            return Certificate.decode(body)
        if not self.requested_compression:
            raise RemoteProtocolError(
                "CompressedCertificate, but our CertificateRequest offered no certificate compression",
                AlertDescription.unexpected_message,
            )
        return self.open_compressed_certificate(body, self.requested_compression)

    def accept_client_certificate(
        self, cert: Certificate, context: bytes, transcript: ks.Transcript, raw: bytes
    ) -> bool:
        """Check the client's Certificate against our request; True if it carries
        a chain (a CertificateVerify follows), False if it is empty."""
        if cert.certificate_request_context != context:
            raise RemoteProtocolError("Certificate has the wrong request context", AlertDescription.illegal_parameter)
        transcript.update(raw)
        if not cert.certificate_list:
            if self.config.client_auth is ClientAuth.REQUIRED:
                raise RemoteProtocolError("client certificate required", AlertDescription.certificate_required)
            return False
        certs = decode_certificates(cert.certificate_list, self.config.max_certificate_chain_length)
        self.peer_certificates = tuple(certs)
        self.verify_peer_chain(certs, self.config.trust_store, None, is_server_cert=False)
        return True

    def accept_client_certificate_verify(self, body: bytes, transcript: ks.Transcript, raw: bytes) -> None:
        self.peer_signature_scheme = self.verify_certificate_verify(body, CLIENT_CV_CONTEXT, transcript, self.signature_algorithms)
        transcript.update(raw)
        self.client_authenticated = True

    def on_certificate(self, body: bytes, raw: bytes) -> None:
        cert = self.client_certificate(HandshakeType.certificate, body)
        self.state = ServerState.WAIT_CV if self.accept_client_certificate(cert, b"", self.transcript, raw) else ServerState.WAIT_FINISHED

    def on_compressed_certificate(self, body: bytes, raw: bytes) -> None:
        cert = self.client_certificate(HandshakeType.compressed_certificate, body)
        self.state = ServerState.WAIT_CV if self.accept_client_certificate(cert, b"", self.transcript, raw) else ServerState.WAIT_FINISHED

    def on_certificate_verify(self, body: bytes, raw: bytes) -> None:
        self.accept_client_certificate_verify(body, self.transcript, raw)
        self.state = ServerState.WAIT_FINISHED

    def on_finished(self, body: bytes, raw: bytes) -> None:
        assert self.secrets is not None and self.suite is not None
        secrets = self.secrets
        self.check_finished(body, secrets.client_handshake_traffic_secret, self.transcript)
        self.transcript.update(raw)
        self.peer_finished = True
        secrets.derive_resumption(self.transcript.digest())
        self.handshake_transcript = self.transcript.fork()
        self.conn.set_read_secret(self.suite, secrets.client_application_traffic_secret)
        self.finish_handshake(
            ServerState.CONNECTED, client_authenticated=self.client_authenticated,
            local_signature_scheme=self.scheme,
        )
        self.send_session_tickets(self.config.session_tickets)

    def send_session_tickets(self, count: int) -> None:
        # §4.6.1: only to a client that can use them (it sent psk_key_exchange_modes).
        if not self.client_psk_modes or not self.config.psk_key_exchange_modes or not self.tickets_allowed():
            return
        assert self.secrets is not None and self.suite is not None
        for _ in range(count):
            nonce = u8(self.tickets_sent)
            self.tickets_sent += 1
            age_add = int.from_bytes(self.config.random(4), "big")
            psk = ks.resumption_psk(self.suite, self.conn.resumption_secret, nonce, self.transport.label_prefix)
            nst = NewSessionTicket(self.config.ticket_lifetime, age_add, nonce, self._seal_ticket(psk, age_add), ())
            raw = nst.encode()
            self.conn.queue_handshake(encode_handshake(HandshakeType.new_session_ticket, raw))

    def tickets_allowed(self) -> bool:
        # EKU draft-13 §6: endpoints that enable EKU disable ticket resumption.
        # No tickets under an allow-list or CRLs either (_check_psk).
        return (
            self.tickets_sent < 255 and not (self.eku_negotiated and self.eku_disables_tickets)
            and not self.config.checks_peer_access
        )

    def on_extended_key_update(self, eku: ExtendedKeyUpdate | None) -> None:
        # draft-2025-10 §7 / draft-05 §5: tickets issued before an update are
        # invalidated; fresh ones, from the new resumption secret, replace them.
        if eku is None or eku.profile.disable_tickets:
            return
        remember_generation(self.config.ticket_generations, self.ticket_origin, eku.generation)
        self.send_session_tickets(self.config.session_tickets)

    TRANSITIONS: ClassVar[dict[tuple[Enum, int], Handler]] = {
        (ServerState.START, HandshakeType.client_hello): on_client_hello,
        (ServerState.WAIT_CH2, HandshakeType.client_hello): on_client_hello,
        (ServerState.WAIT_CERT, HandshakeType.certificate): on_certificate,
        (ServerState.WAIT_CERT, HandshakeType.compressed_certificate): on_compressed_certificate,
        (ServerState.WAIT_CV, HandshakeType.certificate_verify): on_certificate_verify,
        (ServerState.WAIT_FINISHED, HandshakeType.finished): on_finished,
    }


def stateless_hello_retry(config: Configuration, client_address: bytes, client_hello: bytes) -> bytes | None:
    """What a DTLS server answers a ClientHello with before it keeps any state
    (RFC 9147 §5.1).

    ``client_hello`` is the whole message in TLS form (4-byte header, as the
    transcript has it, RFC 9147 §5.2); ``client_address`` the bytes the
    connection names the client's address with.  Returns the HelloRetryRequest
    (TLS form) to send, cookie inside; or None when the ClientHello carries a
    valid cookie: then start ``ServerHandshake(host, config, transport=DTLS,
    client_address=...)`` and hand it the same message.  Raises
    RemoteProtocolError for a ClientHello to refuse: a bad cookie
    (illegal_parameter), a malformed message (decode_error), no DTLS 1.3
    (protocol_version), no suite in common (handshake_failure).
    """
    if not config.dtls_cookie:
        return None  # the cookie exchange is turned off: start the engine at once
    if len(client_hello) < 4 or client_hello[0] != HandshakeType.client_hello:
        raise RemoteProtocolError("the first handshake message is not a ClientHello", AlertDescription.unexpected_message)
    if int.from_bytes(client_hello[1:4], "big") != len(client_hello) - 4:
        raise DecodeError("ClientHello length does not match its header")
    # The engine is used only for its checks and choices, which touch no host.
    engine = ServerHandshake(cast(HandshakeHost, None), config, DTLS, client_address)
    ch, exts = engine._parse_client_hello(client_hello[4:])
    return engine.cookie_admission(ch, exts, client_hello)
