"""Configuration of a longtls endpoint.

One ``Configuration`` can be shared by many connections; it holds policy and
credentials, never per-connection state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from cryptography import x509

from .certcompress import DEFAULT_CERTIFICATE_COMPRESSION, check_certificate_compression
from .constants import (
    CertificateCompressionAlgorithm,
    CipherSuite,
    ContentType,
    EKUProfileName,
    NamedGroup,
    PskKeyExchangeMode,
    SignatureScheme,
)
from .crypto.suites import DEFAULT_CIPHER_SUITES
from .errors import ConfigurationError
from .events import SessionTicket
from .keylog import KeyLogCallback, KeyLogFile
from .psk import ExternalPsk, PskLookup, check_psk_configuration
from .sni import ServerCredential

if TYPE_CHECKING:
    from .crypto.certificates import TrustStore
    from .crypto.groups import KeyShare
    from .crypto.peer_policy import PeerAllowList
    from .wire.messages import Extension

DEFAULT_GROUPS: tuple[NamedGroup, ...] = (
    NamedGroup.X25519MLKEM768,
    NamedGroup.x25519,
    NamedGroup.secp256r1,
    NamedGroup.secp384r1,
    NamedGroup.SecP256r1MLKEM768,
    NamedGroup.SecP384r1MLKEM1024,
    NamedGroup.MLKEM768,
    NamedGroup.MLKEM1024,
)
DEFAULT_KEY_SHARE_GROUPS: tuple[NamedGroup, ...] = (NamedGroup.X25519MLKEM768, NamedGroup.x25519)
#: A server answers at most one peer-started Extended Key Update per second
#: unless told otherwise (EKU draft-13 §11.3; SECURITY.md): each costs it a
#: key exchange, and an honest peer has no reason to update more often.
DEFAULT_SERVER_EKU_MIN_INTERVAL = 1.0
#: A DTLS server's own connection ID length when none is configured: 8 bytes,
#: enough to tell associations apart without guessing (docs/dtls.md).
DEFAULT_SERVER_CONNECTION_ID_LENGTH = 8

# Padding policy: given the content type and the length of the content, return
# how many zero bytes of padding to add (RFC 9846 §5.4).
PaddingPolicy = Callable[[ContentType, int], int]


class ClientAuth(Enum):
    """Whether a server asks for a client certificate."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


def pad_to_block(block: int) -> PaddingPolicy:
    """A padding policy that rounds each record's content up to a multiple of ``block``."""

    def policy(content_type: ContentType, length: int) -> int:
        return (-(length + 1)) % block

    return policy


@dataclass
class Configuration:
    """Settings for a client or a server.  Fields have safe defaults."""

    is_client: bool = True
    #: Client: the name sent in server_name and checked against the certificate.
    server_name: str | None = None
    alpn_protocols: Sequence[str] = ()
    cipher_suites: Sequence[CipherSuite] = DEFAULT_CIPHER_SUITES
    #: Groups we accept, in order of preference.
    groups: Sequence[NamedGroup] = DEFAULT_GROUPS
    #: Client: groups for which a key share goes in the first ClientHello.
    key_share_groups: Sequence[NamedGroup] = DEFAULT_KEY_SHARE_GROUPS
    signature_algorithms: Sequence[SignatureScheme] | None = None
    #: RFC 8879 certificate compression, in preference order: the algorithms
    #: we accept (offered in ClientHello / CertificateRequest) and may compress
    #: our own Certificate with.  Default: every one installed (zlib always;
    #: brotli and zstd with ``longtls[compression]``); () turns it off.
    certificate_compression: Sequence[CertificateCompressionAlgorithm] = DEFAULT_CERTIFICATE_COMPRESSION

    certificate_chain: list[x509.Certificate] = field(default_factory=list, repr=False)
    private_key: Any = field(default=None, repr=False)
    #: Server: more certificates, each for the connections whose ClientHello
    #: server_name it matches (RFC 6066 §3, RFC 9846 §4.4.2.2; longtls.sni,
    #: docs/sni.md); ``certificate_chain``/``private_key`` stay the default,
    #: for no name or a name none matches.  Without a default such a client
    #: gets missing_extension (no name) or unrecognized_name.
    server_credentials: Sequence[ServerCredential] = field(default=(), repr=False)

    #: Where trusted roots come from; None means the system store (client) or
    #: none (server).
    trust_store: TrustStore | None = field(default=None, repr=False)
    #: Client: verify the server's certificate (turn off only for testing).
    verify_peer: bool = True
    #: Who may connect (docs/access-control.md): the peer's validated
    #: certificate must match a rule (CN, DNS, URI or IP SAN), else
    #: access_denied.  A server needs client_auth REQUIRED for it.
    peer_allow: PeerAllowList | None = None
    #: Certificate revocation lists checked against the peer's validated path
    #: (certificate_revoked), in the handshake and on every certificate the
    #: peer presents later (crypto/peer_policy.py; longtls.crypto.peer_policy.load_crls).
    crls: Sequence[x509.CertificateRevocationList] = field(default=(), repr=False)
    #: Server: whether to ask for a client certificate.
    client_auth: ClientAuth = ClientAuth.NONE
    #: Client: offer post-handshake authentication (RFC 9846 §4.2.6).
    post_handshake_auth: bool = False
    #: Client: most post-handshake CertificateRequests answered on one
    #: connection (each costs a signature); one more ends the connection with
    #: unexpected_message.  None: no limit.
    max_post_handshake_auth_requests: int | None = 64

    #: Client: a ticket from an earlier connection to resume.
    session_ticket: SessionTicket | None = field(default=None, repr=False)
    #: External PSKs (RFC 9846 §4.2.11; longtls.psk.ExternalPsk).  Client: all
    #: are offered, after the ticket if there is one.  Server: the ones it
    #: accepts; a server with PSKs needs no certificate (docs/external-psk.md).
    external_psks: Sequence[ExternalPsk] = field(default=(), repr=False)
    #: Server: look an identity up instead of (or beyond) ``external_psks``.
    external_psk_lookup: PskLookup | None = field(default=None, repr=False)
    #: PSK key exchange modes offered (client) or accepted (server), in preference order.
    psk_key_exchange_modes: Sequence[PskKeyExchangeMode] = (PskKeyExchangeMode.psk_dhe_ke,)
    #: Server: tickets sent after each handshake (0 disables resumption).
    session_tickets: int = 2
    ticket_lifetime: int = 7200
    #: Server: key protecting tickets.  Share one Configuration between
    #: connections so tickets survive across them.
    ticket_key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    #: Server: ticket keys shared by processes or machines (``--ticket-keys``,
    #: docs/scaling.md), 32 bytes each: the first seals new tickets, every one
    #: opens the tickets it sealed (rotation).  Empty: ``ticket_key`` alone.
    ticket_keys: Sequence[bytes] = field(default=(), repr=False)
    #: DTLS server: answer a ClientHello without a valid cookie with a
    #: stateless HelloRetryRequest carrying one, keeping no state until the
    #: client echoes it from its address (RFC 9147 §5.1: SHOULD, and the
    #: default; turn off only where amplification is no threat).
    dtls_cookie: bool = True
    #: DTLS server: HMAC-SHA256 key of those cookies, generated per
    #: Configuration; servers that must accept each other's cookies share it.
    cookie_secret: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    #: The secret before the last rotate_cookie_secret(), still accepted so a
    #: handshake caught by the rotation completes (RFC 9147 §5.1).
    previous_cookie_secret: bytes | None = field(default=None, repr=False)
    #: Seconds a cookie is accepted after it was issued (docs/dtls-handshake.md).
    cookie_lifetime: float = 60.0
    #: DTLS: offer (client) or accept (server) the connection_id extension
    #: (RFC 9146, RFC 9147 §9).  A client offers it even when it wants no CID
    #: of its own (RFC 9147 §5.3: "SHOULD still offer"), so a server can.
    dtls_connection_ids: bool = True
    #: DTLS: the length of the connection IDs we ask the peer to put in our
    #: records (0: none).  None: 8 bytes for a server, which is what lets a
    #: client move to a new address (NAT rebinding) without a new handshake,
    #: and 0 for a client (docs/dtls.md).
    dtls_connection_id_length: int | None = None
    #: DTLS: the retransmission timer's initial value in seconds (RFC 9147
    #: §5.8.2: 1 s "unless implementations have deployment-specific and/or
    #: external information about the round trip time", then "1.5 times that
    #: RTT estimate").  Lower it only on a path known to be fast; 0.05 to 60
    #: (the timer's floor and cap, record/dtls_reliability.py;
    #: docs/dtls-reliability.md).
    dtls_initial_retransmit_timeout: float = 1.0

    #: RFC 8449: the largest protected record plaintext (content + type) we accept.
    record_size_limit: int = 2**14 + 1
    record_padding: PaddingPolicy | None = field(default=None, repr=False)
    # -- limits against hostile peers; each exceeded limit ends the connection
    #: Largest handshake message accepted (ML-DSA-87 chains run to ~25 KB).
    max_handshake_message_size: int = 2**17
    #: Most certificates in a peer's chain.
    max_certificate_chain_length: int = 10
    #: Most handshake records a peer may send before its Finished (tiny
    #: fragments cost us an AEAD operation each).
    max_handshake_records: int = 512
    #: Most empty application data records in a row.
    max_empty_records: int = 32
    #: Most ignorable warning alerts (user_canceled) on one connection.
    max_warning_alerts: int = 16
    #: Server: bytes of early data (0-RTT records, which longtls never accepts)
    #: skipped before the client's next flight, per RFC 9846 §4.3.10; more ends
    #: the connection (docs/conformance.md).
    max_early_data_skipped: int = 2**16
    #: Most standard KeyUpdates the peer may send in one second.  (Extended
    #: key updates are paced by ``eku_min_interval`` instead: one at a time,
    #: the response deferred, as EKU draft-13 §11.3 asks.)
    max_peer_key_updates_per_second: int = 32
    #: Client: most session tickets taken from one connection (more are ignored).
    max_session_tickets: int = 8
    #: Seconds allowed from the first message to the end of the handshake
    #: (None: no limit).  Enforced through get_timer()/handle_timer().
    handshake_timeout: float | None = 30.0
    #: Client: send a 32-byte legacy_session_id and the dummy change_cipher_spec
    #: (RFC 9846 Appendix D.4).
    middlebox_compatibility: bool = True

    #: Offer (client) or accept (server) Extended Key Update.
    extended_key_update: bool = True
    #: Which EKU drafts to offer (client) or accept (server).  Each has its own
    #: tls_flags bit; the server picks the newest both speak, whatever the
    #: order here (docs/eku-profiles.md).  A str is read as "draft-13,draft-05".
    eku_profiles: Sequence[EKUProfileName | str] = (EKUProfileName.draft_13,)
    #: The single-profile form older callers use: when set, it stands for
    #: ``eku_profiles=(eku_profile,)``.
    eku_profile: str | None = None
    #: DoS limit (EKU draft-13 §11.3): minimum seconds between updates the
    #: peer starts; a request arriving sooner gets its response deferred
    #: (draft-05: answered "retry").  None: 1 s for a server
    #: (``DEFAULT_SERVER_EKU_MIN_INTERVAL``), 0 (no pacing) for a client.
    eku_min_interval: float | None = None
    #: Seconds a key update may wait for the peer: from our EKU request to its
    #: completion, from our EKU response to the peer's finish, from a KeyUpdate
    #: with update_requested to the peer's KeyUpdate.  Then the connection ends
    #: with user_canceled + close_notify and ``KeyUpdateTimeoutError``.  Keep
    #: it above the peer's ``eku_min_interval``.  None: wait for ever.
    rekey_timeout: float | None = 30.0
    #: Rekey policy: start an update (EKU when negotiated, else KeyUpdate)
    #: after this many seconds, bytes sent, or records sent, whichever is first.
    #: The AEAD usage limits of RFC 9846 §5.5 apply regardless.
    rekey_interval: float | None = None
    rekey_bytes: int | None = None
    rekey_records: int | None = None
    #: MLS mode (``mls_connection.MLSConnection``, docs/mls-tls.md "Using MLS
    #: mode"): the RFC 9420 cipher suites, in order of preference (the
    #: initiator offers the first; the responder accepts any listed): 1, 3,
    #: or 0xF0A1 (ML-KEM-768 + X25519).  The MLS signature key is
    #: ``private_key`` (Ed25519) with ``certificate_chain`` as an X.509
    #: credential; without a chain a basic credential naming ``mls_identity``;
    #: without a key a fresh Ed25519 key per connection.
    mls_cipher_suites: Sequence[int] = (1,)
    mls_identity: bytes = b""
    #: Raw Ed25519 public keys whose basic (or X.509) credentials are
    #: accepted without a chain: pinned peer keys (docs/mls-tls.md).
    mls_peer_signature_keys: Sequence[bytes] = field(default=(), repr=False)
    #: Responder: the longest KeyPackage lifetime accepted (RFC 9420 §7.2
    #: "Applications MUST define a maximum total lifetime"); 90 days, as
    #: mls/key_package.MAX_LIFETIME.  mls-rs makes 365-day KeyPackages.
    mls_max_key_package_lifetime: int = 90 * 24 * 3600
    #: Most updates the peer may start on one connection (None: no limit).
    #: Beyond it, draft-05 answers "rejected"; the other texts defer forever.
    eku_max_peer_updates: int | None = None
    #: draft-05: close with extended_key_update_required if the peer declines.
    eku_required: bool = False
    #: Certificate Update (draft-rosomakho-tls-cert-update-02): offer (client)
    #: or accept (server) the certificate_update_request extension, so either
    #: side can hand over a renewed certificate on the live connection
    #: (docs/certificate-update.md).
    certificate_update: bool = True
    #: Called with (new_chain, previous_chain), leaf first, once the peer's
    #: CertificateUpdate passed every check of the draft; False refuses it and
    #: ends the connection with illegal_parameter (the draft's alert).
    certificate_update_policy: Callable[[Sequence[x509.Certificate], Sequence[x509.Certificate]], bool] | None = field(
        default=None, repr=False
    )
    #: Most CertificateUpdates accepted from the peer on one connection (each
    #: costs a signature check and a chain validation).  Past it we issue no
    #: new CertificateUpdateRequest, so the peer cannot send another.  None: no limit.
    max_peer_certificate_updates: int | None = 1024
    #: Server: which ticket generations each connection may still resume from
    #: (the older EKU texts invalidate tickets issued before an update).
    ticket_generations: dict[bytes, int] = field(default_factory=dict, repr=False)

    keylog: KeyLogCallback | None = field(default=None, repr=False)

    # Injectables for deterministic tests.
    now: Callable[[], float] = field(default=time.time, repr=False)
    random: Callable[[int], bytes] = field(default=os.urandom, repr=False)
    key_share_factory: Callable[[NamedGroup], KeyShare] | None = field(default=None, repr=False)
    #: Client: rewrite the ClientHello extension list before sending (testing and
    #: fingerprint shaping; longtls still enforces what it negotiated).
    client_hello_hook: Callable[[list[Extension]], list[Extension]] | None = field(
        default=None, repr=False
    )

    # -- convenience loaders -------------------------------------------------

    def load_cert_chain(
        self, certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None,
        password: bytes | str | None = None,
    ) -> None:
        """Load a PEM certificate chain (leaf first) and its private key."""
        from .crypto.certificates import (
            check_key_matches_certificate,
            load_certificate_chain,
            load_private_key,
        )

        chain = load_certificate_chain(certfile)
        pw = password.encode() if isinstance(password, str) else password
        key = load_private_key(keyfile if keyfile is not None else certfile, pw)
        check_key_matches_certificate(key, chain[0])
        self.certificate_chain = chain
        self.private_key = key

    def load_verify_locations(
        self, cafile: str | os.PathLike[str] | None = None,
        capath: str | os.PathLike[str] | None = None,
    ) -> None:
        """Trust the CA certificates in a PEM file or a directory of PEM files."""
        from .crypto.certificates import TrustStore

        if cafile is not None:
            self.trust_store = TrustStore.from_pem_file(cafile)
        elif capath is not None:
            self.trust_store = TrustStore.from_directory(capath)
        else:
            raise ConfigurationError("give a CA file or a CA directory")

    def set_keylog_file(self, path: str | os.PathLike[str]) -> None:
        self.keylog = KeyLogFile(path)

    def rotate_cookie_secret(self, secret: bytes | None = None) -> None:
        """Start issuing DTLS cookies under ``secret`` (default: a fresh random
        one); cookies under the current secret stay valid until the next rotation."""
        new = secret if secret is not None else os.urandom(32)
        if len(new) < 16:
            raise ConfigurationError("a cookie secret needs at least 16 bytes")
        self.previous_cookie_secret = self.cookie_secret
        self.cookie_secret = new

    def eku_profile_names(self) -> tuple[EKUProfileName, ...]:
        """The EKU profiles offered or accepted (``eku_profile`` if set, else
        ``eku_profiles``), without repeats; ConfigurationError names a bad one."""
        raw: Sequence[str] = (
            (self.eku_profile,) if self.eku_profile is not None
            else self.eku_profiles.split(",") if isinstance(self.eku_profiles, str)
            else self.eku_profiles
        )
        names: list[EKUProfileName] = []
        for item in raw:
            try:
                name = EKUProfileName(item.strip())
            except ValueError:
                choices = ", ".join(p.value for p in EKUProfileName)
                raise ConfigurationError(f"unknown EKU profile {item!r}; choose from {choices}") from None
            if name not in names:
                names.append(name)
        if not names and self.extended_key_update:
            raise ConfigurationError("no EKU profile configured (or set extended_key_update=False)")
        return tuple(names)

    @property
    def effective_eku_min_interval(self) -> float:
        """``eku_min_interval``, or its default for this side when it is None."""
        if self.eku_min_interval is not None:
            return self.eku_min_interval
        return 0.0 if self.is_client else DEFAULT_SERVER_EKU_MIN_INTERVAL

    @property
    def effective_dtls_connection_id_length(self) -> int:
        """``dtls_connection_id_length``, or its default for this side when it is None."""
        if self.dtls_connection_id_length is not None:
            return self.dtls_connection_id_length
        return 0 if self.is_client else DEFAULT_SERVER_CONNECTION_ID_LENGTH

    @property
    def effective_ticket_keys(self) -> tuple[bytes, ...]:
        """The keys tickets are opened with, the sealing key first: ``ticket_keys``, else ``ticket_key``."""
        return tuple(self.ticket_keys) or (self.ticket_key,)

    @property
    def checks_peer_access(self) -> bool:
        """An allow-list or CRLs are configured: every connection then makes a
        full handshake, so there is a certificate to check (no session
        tickets; docs/access-control.md "Resumption")."""
        return self.peer_allow is not None or bool(self.crls)

    @property
    def has_external_psks(self) -> bool:
        return bool(self.external_psks) or (not self.is_client and self.external_psk_lookup is not None)

    def _check_peer_access(self) -> None:
        # A rule or a CRL is checked against a certificate the peer proved it
        # holds and that chains to our trust store; without one it would
        # silently admit everyone.
        if self.is_client and not self.verify_peer:
            raise ConfigurationError("peer_allow and crls check the server's certificate: they need verify_peer")
        if not self.is_client and self.peer_allow is not None and self.client_auth is not ClientAuth.REQUIRED:
            raise ConfigurationError(
                "an allow-list on a server checks client certificates: it needs client_auth REQUIRED "
                "(and a trust store of the clients' CA)"
            )
        if not self.is_client and self.client_auth is ClientAuth.NONE:
            raise ConfigurationError("crls on a server check client certificates: they need client_auth")

    def validate(self) -> None:
        """Raise ConfigurationError with a helpful message if this cannot work."""
        if not self.cipher_suites:
            raise ConfigurationError("no cipher suites configured")
        if not self.groups:
            raise ConfigurationError("no key exchange groups configured")
        if self.is_client:
            for g in self.key_share_groups:
                if g not in self.groups:
                    raise ConfigurationError(f"key share group {g.name} is not in groups")
        elif (
            (not self.certificate_chain or self.private_key is None)
            and not self.has_external_psks and not self.server_credentials
        ):
            raise ConfigurationError(
                "a server needs a certificate chain and a private key, or external PSKs"
            )
        if self.server_credentials:
            if self.is_client:
                raise ConfigurationError("server_credentials are for a server (a client has certificate_chain)")
            if not all(isinstance(c, ServerCredential) for c in self.server_credentials):
                raise ConfigurationError("server_credentials must be longtls.sni.ServerCredential objects")
        if self.checks_peer_access:
            self._check_peer_access()
        if self.has_external_psks:
            check_psk_configuration(self.external_psks, self.psk_key_exchange_modes, self.cipher_suites)
        if self.extended_key_update:
            self.eku_profile_names()
        if self.eku_min_interval is not None and self.eku_min_interval < 0:
            raise ConfigurationError("eku_min_interval must not be negative")
        if self.rekey_timeout is not None and not self.rekey_timeout > 0:
            raise ConfigurationError("rekey_timeout must be positive (or None to wait for ever)")
        limit = self.max_post_handshake_auth_requests
        if limit is not None and limit < 0:
            raise ConfigurationError("max_post_handshake_auth_requests must not be negative")
        limit = self.max_peer_certificate_updates
        if limit is not None and limit < 0:
            raise ConfigurationError("max_peer_certificate_updates must not be negative")
        for name in ("rekey_interval", "rekey_bytes", "rekey_records"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive (or None to disable)")
        check_certificate_compression(self.certificate_compression)
        if not self.cookie_lifetime > 0:
            raise ConfigurationError("cookie_lifetime must be positive")
        cid = self.dtls_connection_id_length
        if cid is not None and not 0 <= cid <= 255:
            raise ConfigurationError("dtls_connection_id_length must be 0 to 255 (RFC 9146 §3)")
        # The bounds are record/dtls_reliability.py's MIN_ and MAX_RETRANSMIT_TIMEOUT
        # (config sits below the record layer and cannot import them).
        if not 0.05 <= self.dtls_initial_retransmit_timeout <= 60.0:
            raise ConfigurationError("dtls_initial_retransmit_timeout must be between 0.05 and 60 seconds")
        if len(self.cookie_secret) < 16:
            raise ConfigurationError("cookie_secret needs at least 16 bytes")
        if any(len(key) != 32 for key in self.ticket_keys):
            raise ConfigurationError("ticket_keys: each key must be 32 bytes (AES-256-GCM)")
        if not 64 <= self.record_size_limit <= 2**14 + 1:
            raise ConfigurationError("record_size_limit must be between 64 and 16385")
