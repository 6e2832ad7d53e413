"""Events the sans-I/O Connection hands to the application.

Each is a frozen, slotted dataclass.  None of them carries key material, so
printing one is always safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509

from .constants import (
    AlertDescription,
    CertificateCompressionAlgorithm,
    CipherSuite,
    EKUProfileName,
    NamedGroup,
    PskKeyExchangeMode,
    PskKind,
    SignatureScheme,
)


class Side(StrEnum):
    """Which end of the connection (e.g. who started an extended key update).

    A StrEnum whose values are the strings these fields always held, so the
    CLI's JSON lines (a contract) and comparisons with "client" are unchanged.
    """

    client = "client"
    server = "server"


class Direction(StrEnum):
    """Which of our two directions a standard KeyUpdate changed."""

    send = "send"
    receive = "receive"


class CertificateUpdateDirection(StrEnum):
    """Whether a Certificate Update was ours or the peer's (CertificateUpdated)."""

    sent = "sent"
    received = "received"


class UpdateRejection(StrEnum):
    """How a draft-05 peer declined our extended key update (draft-05 §4)."""

    retry = "retry"
    rejected = "rejected"


class Event:
    """Base class of all events."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """The handshake finished; application data may flow."""

    version: str
    cipher_suite: CipherSuite
    group: NamedGroup | None  # None for psk_ke (resumption or external PSK)
    signature_scheme: SignatureScheme | None  # the peer's CertificateVerify; None when resumed
    alpn_protocol: str | None
    peer_certificates: tuple[x509.Certificate, ...] = field(repr=False)
    resumed: bool
    server_name: str | None
    client_authenticated: bool = False
    extended_key_update: bool = False  # EKU negotiated
    #: Which EKU text was negotiated (tls_flags; docs/eku-profiles.md), or None.
    eku_profile: EKUProfileName | None = None
    #: The scheme of our own CertificateVerify, if we sent one.
    local_signature_scheme: SignatureScheme | None = None
    #: The PSK used, if any: resumption (a ticket; ``resumed`` is True),
    #: external or imported (RFC 9258) -- docs/external-psk.md.
    psk: PskKind | None = None
    #: The identity of an external or imported PSK (its external identity).
    psk_identity: bytes | None = None
    #: psk_ke or psk_dhe_ke when a PSK was used (RFC 9846 §4.2.9).
    psk_key_exchange_mode: PskKeyExchangeMode | None = None
    #: RFC 8879: the algorithm the peer's certificate arrived compressed with
    #: (None: uncompressed, or no certificate), and the one we sent ours with.
    peer_certificate_compression: CertificateCompressionAlgorithm | None = None
    local_certificate_compression: CertificateCompressionAlgorithm | None = None
    #: Certificate Update (draft-rosomakho-tls-cert-update-02) was negotiated:
    #: both sides sent the certificate_update_request extension.
    certificate_update: bool = False
    #: "tls", or "mls" for an MLS-TLS connection (mls_connection.MLSConnection;
    #: then ``cipher_suite`` is the record suite, ``group`` the MLS suite's KEM).
    mode: str = "tls"
    #: MLS mode: the RFC 9420 cipher suite and the group's epoch at the end of
    #: the initial key agreement.
    mls_cipher_suite: int | None = None
    epoch: int | None = None

    @property
    def peer_subject(self) -> str | None:
        return self.peer_certificates[0].subject.rfc4514_string() if self.peer_certificates else None


@dataclass(frozen=True, slots=True)
class ApplicationData(Event):
    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"ApplicationData(<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True)
class KeyUpdated(Event):
    """A standard KeyUpdate (RFC 9846 §4.6.3) changed one direction's keys."""

    direction: Direction
    generation: int  # number of updates of that direction so far
    #: send: this update answers the peer's request; receive: the peer asked us to answer.
    requested_by_peer: bool


@dataclass(frozen=True, slots=True)
class KeyUpdateStarted(Event):
    """An extended key update began (we sent or received a request)."""

    generation: int  # the generation it will establish
    initiator: Side


@dataclass(frozen=True, slots=True)
class KeyUpdateCompleted(Event):
    """An extended key update finished: both directions use generation ``generation``."""

    generation: int
    initiator: Side
    group: NamedGroup
    seconds: float  # from our request (or the peer's request) to completion
    #: "extended" (EKU), or "mls": an MLS epoch change (a ConnectionUpdate
    #: and its EpochKeyUpdate, docs/mls-tls.md §7); ``epoch`` is the new epoch.
    kind: str = "extended"
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class KeyUpdateRejected(Event):
    """draft-05: the peer declined our extended key update (retry or rejected)."""

    status: UpdateRejection
    retry_after: int  # seconds, for "retry"


@dataclass(frozen=True, slots=True)
class ExporterUpdated(Event):
    """A new exporter generation is in use on both sides (EKU draft-13 §9.2)."""

    generation: int


@dataclass(frozen=True, slots=True)
class SessionTicketReceived(Event):
    """The server sent a NewSessionTicket; keep ``ticket`` to resume later."""

    ticket: SessionTicket = field(repr=False)


@dataclass(frozen=True, slots=True)
class PeerAuthenticated(Event):
    """Post-handshake client authentication (RFC 9846 §4.6.2) completed."""

    peer_certificates: tuple[x509.Certificate, ...] = field(repr=False)
    signature_scheme: SignatureScheme | None
    #: RFC 8879: how the client's certificate arrived compressed, or None.
    certificate_compression: CertificateCompressionAlgorithm | None = None


@dataclass(frozen=True, slots=True)
class CertificateUpdated(Event):
    """A Certificate Update (draft-rosomakho-tls-cert-update-02) went through.

    ``received``: the peer's new chain passed RFC 9261 validation, every
    identity rule and the application's policy; ``peer_certificates`` follow.
    ``sent``: our CertificateUpdate left with this chain; ``local_certificates`` follow.
    """

    direction: CertificateUpdateDirection
    #: The new chain, leaf first.
    certificates: tuple[x509.Certificate, ...] = field(repr=False)

    @property
    def subject(self) -> str | None:
        return self.certificates[0].subject.rfc4514_string() if self.certificates else None


@dataclass(frozen=True, slots=True)
class CloseNotifyReceived(Event):
    """The peer will send no more data (half-close); we may still send."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection is over: after close_notify both ways, or a fatal alert."""

    alert: AlertDescription | None  # the fatal alert, sent or received; None for a clean close
    by_peer: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SessionTicket:
    """What a client needs to resume a session (RFC 9846 §4.6.1).

    Holds the resumption PSK: never log it.  ``repr`` shows none of it.
    """

    ticket: bytes = field(repr=False)
    psk: bytes = field(repr=False)
    cipher_suite: CipherSuite
    lifetime: int
    age_add: int = field(repr=False)
    received_at: float
    server_name: str | None
    alpn_protocol: str | None
    max_early_data_size: int = 0

    def __repr__(self) -> str:
        return (
            f"SessionTicket(cipher_suite={self.cipher_suite.name}, lifetime={self.lifetime}, "
            f"server_name={self.server_name!r})"
        )
