"""Every code point longtls uses, in one place.

Values come from RFC 9846 (TLS 1.3, RFC 8446bis) appendix B unless a comment
says otherwise.  Code points that no registry has assigned yet are marked
PROVISIONAL; each lives here and nowhere else so it can change in one line.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

TLS13_VERSION = 0x0304
LEGACY_VERSION = 0x0303  # legacy_version / legacy_record_version (RFC 9846 §4.1.2, §5.1)
LEGACY_RECORD_VERSION_CLIENT_HELLO = 0x0301  # allowed for the initial ClientHello record

# DTLS 1.3 (RFC 9147): versions are the 1's complement of the TLS ones.
DTLS13_VERSION = 0xFEFC  # supported_versions (RFC 9147 §5.3)
DTLS_LEGACY_VERSION = 0xFEFD  # legacy_version / legacy_record_version: DTLS 1.2 (§4, §5.3)


class ContentType(IntEnum):
    INVALID = 0
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    ACK = 26  # DTLS 1.3 (RFC 9147 §7)


class AlertLevel(IntEnum):
    WARNING = 1
    FATAL = 2


class AlertDescription(IntEnum):
    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    too_many_cids_requested = 52  # RFC 9147 §9 (DTLS 1.3)
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    inappropriate_fallback = 86
    user_canceled = 90
    missing_extension = 109
    unsupported_extension = 110
    unrecognized_name = 112
    bad_certificate_status_response = 113
    unknown_psk_identity = 115
    certificate_required = 116
    general_error = 117
    no_application_protocol = 120
    # PROVISIONAL: EKU draft-05 only; first free value after ech_required(121).
    extended_key_update_required = 122


class HandshakeType(IntEnum):
    client_hello = 1
    server_hello = 2
    new_session_ticket = 4
    end_of_early_data = 5
    encrypted_extensions = 8
    request_connection_id = 9  # DTLS 1.3 (RFC 9147 §9)
    new_connection_id = 10  # DTLS 1.3 (RFC 9147 §9)
    certificate = 11
    certificate_request = 13
    certificate_verify = 15
    # RFC 9261 §4 (assigned): ClientCertificateRequest of Exported Authenticators.
    client_certificate_request = 17
    finished = 20
    key_update = 24
    compressed_certificate = 25  # RFC 8879 §4 (replaces Certificate)
    # PROVISIONAL: extended_key_update (EKU draft-13 and draft-2025-10).
    extended_key_update = 27
    # PROVISIONAL: EKU draft-05 uses three message types; 27 is shared with the
    # request on purpose (only one profile is active on a connection).
    extended_key_update_request = 27
    extended_key_update_response = 28
    new_key_update = 29
    # PROVISIONAL: Certificate Update (draft-rosomakho-tls-cert-update-02, IANA
    # Considerations: TBD1/TBD2).  224-255 is the registry's private-use range
    # (RFC 8447), clear of every assigned type and of message_hash (254);
    # docs/certificate-update.md.
    certificate_update = 240
    certificate_update_request = 241
    # PROVISIONAL: MLS-TLS (draft-kohbrok-mls-tls-01 §"Updating record layer
    # protection keys" leaves the message wrapper TODO): one private-use type
    # whose body is an MLSTLSMessage; docs/mls-tls.md §1.
    mls_tls = 242
    message_hash = 254


class ExtensionType(IntEnum):
    server_name = 0
    status_request = 5
    supported_groups = 10
    signature_algorithms = 13
    application_layer_protocol_negotiation = 16
    padding = 21
    compress_certificate = 27  # RFC 8879 §3 (ClientHello, CertificateRequest)
    record_size_limit = 28  # RFC 8449
    pre_shared_key = 41
    early_data = 42
    supported_versions = 43
    cookie = 44
    psk_key_exchange_modes = 45
    certificate_authorities = 47
    oid_filters = 48
    post_handshake_auth = 49
    signature_algorithms_cert = 50
    key_share = 51
    connection_id = 54  # RFC 9146 / RFC 9147 §9
    # PROVISIONAL: draft-ietf-tls-tlsflags "tls_flags" extension type.
    tls_flags = 62
    # PROVISIONAL: draft-rosomakho-tls-cert-update-02 (IANA: "TBD"), from the
    # private-use range 0xFF00-0xFFFF (RFC 9846 §11), away from 0xFF01
    # (renegotiation_info, RFC 5746, which sits in that range);
    # docs/certificate-update.md.
    certificate_update_request = 0xFF1C


class MLSTLSMessageType(IntEnum):
    """MLSTLSMessage.msg_type (docs/mls-tls.md §1).  PROVISIONAL, all six: the
    drafts define the messages (two-party profile -00 §4-§6) but no codes."""

    client_hello = 1  # MLSMessage key_package (profile §4)
    server_hello = 2  # MLSMessage welcome (profile §4)
    connection_update = 3  # MLSMessage commit with UpdatePath (profile §5)
    epoch_key_update = 4  # uint64 epoch (profile §5)
    resumption_request = 5  # MLSMessage commit (profile §6; not implemented yet)
    resumption_response = 6  # MLSMessage commit (profile §6; not implemented yet)


class MLSTLSExtensionType(IntEnum):
    """MLS extension types of MLS-TLS (RFC 9420 §17.3 registry).  PROVISIONAL,
    both: taken from the registry's private-use range 0xF000-0xFFFF, away from
    the X-Wing cipher suite's 0xF0A1 (another registry; docs/mls-tls.md §3-§4)."""

    # The cross-protocol marker in both leaf nodes and in the GroupContext
    # (draft-kohbrok-mls-tls-01 §"Preventing cross-protocol attacks", TODO).
    mls_tls = 0xF1A0
    # ALPN: the offer in the KeyPackage's extensions, the choice in the GroupContext.
    mls_tls_alpn = 0xF1A1


class TLSFlag(IntEnum):
    """Flag numbers in tls_flags (draft-ietf-tls-tlsflags §2).

    PROVISIONAL, all three.  Every EKU text asks IANA for one
    "extended_key_update" flag (draft-13 §12.1 "TBD1") and none is assigned.
    The three texts longtls speaks are incompatible on the wire, so each gets
    its own bit: a client offers every profile it is configured with, the
    server acknowledges exactly one (docs/eku-profiles.md).
    - 0, draft-13: the bit it always had, which the only other flags-based
      EKU prototype uses too.
    - 1, draft-2025-10 and 2, draft-05: the next bits, so that any
      combination still fits in one flags octet; below 8, the registry's
      one initial entry (resumption_across_names); inside 0-15, which the
      registry keeps for Standards Action, so no other specification can be
      given them before the EKU document is.
    """

    extended_key_update = 0  # EKU draft-13
    extended_key_update_draft_2025_10 = 1  # EKU editor's copy of 23 Oct 2025
    extended_key_update_draft_05 = 2  # EKU draft-05


class EKUProfileName(StrEnum):
    """The Extended Key Update texts longtls speaks, newest first (specs README,
    "The three Extended Key Update profiles"; each has its TLSFlag above)."""

    draft_13 = "draft-13"
    draft_2025_10 = "draft-2025-10"
    draft_05 = "draft-05"


class CipherSuite(IntEnum):
    TLS_AES_128_GCM_SHA256 = 0x1301
    TLS_AES_256_GCM_SHA384 = 0x1302
    TLS_CHACHA20_POLY1305_SHA256 = 0x1303
    TLS_AES_128_CCM_SHA256 = 0x1304
    TLS_AES_128_CCM_8_SHA256 = 0x1305


class NamedGroup(IntEnum):
    secp256r1 = 0x0017
    secp384r1 = 0x0018
    secp521r1 = 0x0019
    x25519 = 0x001D
    x448 = 0x001E
    # RFC 8734: the brainpool curves for TLS 1.3 (distinct from the TLS 1.2 code points)
    brainpoolP256r1tls13 = 0x001F
    brainpoolP384r1tls13 = 0x0020
    brainpoolP512r1tls13 = 0x0021
    # RFC 7919 finite field groups
    ffdhe2048 = 0x0100
    ffdhe3072 = 0x0101
    ffdhe4096 = 0x0102
    ffdhe6144 = 0x0103
    ffdhe8192 = 0x0104
    # draft-ietf-tls-mlkem (assigned)
    MLKEM512 = 0x0200
    MLKEM768 = 0x0201
    MLKEM1024 = 0x0202
    # draft-ietf-tls-ecdhe-mlkem (assigned)
    SecP256r1MLKEM768 = 0x11EB
    X25519MLKEM768 = 0x11EC
    SecP384r1MLKEM1024 = 0x11ED


class SignatureScheme(IntEnum):
    rsa_pkcs1_sha256 = 0x0401
    rsa_pkcs1_sha384 = 0x0501
    rsa_pkcs1_sha512 = 0x0601
    ecdsa_secp256r1_sha256 = 0x0403
    ecdsa_secp384r1_sha384 = 0x0503
    ecdsa_secp521r1_sha512 = 0x0603
    rsa_pss_rsae_sha256 = 0x0804
    rsa_pss_rsae_sha384 = 0x0805
    rsa_pss_rsae_sha512 = 0x0806
    ed25519 = 0x0807
    ed448 = 0x0808
    rsa_pss_pss_sha256 = 0x0809
    rsa_pss_pss_sha384 = 0x080A
    rsa_pss_pss_sha512 = 0x080B
    # RFC 8734: ECDSA on the brainpool curves, TLS 1.3 only
    ecdsa_brainpoolP256r1tls13_sha256 = 0x081A
    ecdsa_brainpoolP384r1tls13_sha384 = 0x081B
    ecdsa_brainpoolP512r1tls13_sha512 = 0x081C
    # draft-ietf-tls-mldsa
    mldsa44 = 0x0904
    mldsa65 = 0x0905
    mldsa87 = 0x0906


class CertificateCompressionAlgorithm(IntEnum):
    """RFC 8879 §3 (the IANA "Certificate Compression Algorithm IDs" registry)."""

    zlib = 1  # RFC 1950
    brotli = 2  # RFC 7932
    zstd = 3  # RFC 8878


class PskKeyExchangeMode(IntEnum):
    psk_ke = 0
    psk_dhe_ke = 1


class PskKind(StrEnum):
    """Where the PSK a handshake used came from (HandshakeComplete.psk).

    A StrEnum whose values are the strings the event always carried, so the
    CLI's JSON lines keep them.
    """

    RESUMPTION = "resumption"  # a NewSessionTicket (RFC 9846 §4.6.1)
    EXTERNAL = "external"  # provisioned outside TLS, used directly (§4.2.11)
    IMPORTED = "imported"  # an external PSK through the RFC 9258 importer

    @property
    def binder_label(self) -> bytes:
        """The label of binder_key (RFC 9846 §7.1; RFC 9258 §5.2)."""
        return _BINDER_LABELS[self]


_BINDER_LABELS = {
    PskKind.RESUMPTION: b"res binder",
    PskKind.EXTERNAL: b"ext binder",
    PskKind.IMPORTED: b"imp binder",
}


class KeyUpdateRequest(IntEnum):
    update_not_requested = 0
    update_requested = 1


class CertificateType(IntEnum):
    X509 = 0
    RawPublicKey = 2


# RFC 9846 §4.1.3: the special ServerHello.random that marks a HelloRetryRequest.
HELLO_RETRY_REQUEST_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

# Record layer limits (RFC 9846 §5.1, §5.2).
MAX_PLAINTEXT = 2**14
MAX_CIPHERTEXT_EXPANSION = 256
MAX_HANDSHAKE_MESSAGE_DEFAULT = 2**16 + 2**15  # generous for ML-DSA chains
