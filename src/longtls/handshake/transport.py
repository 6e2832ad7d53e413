"""What the handshake engines need to know about the transport they run over.

TLS 1.3 (RFC 9846) and DTLS 1.3 (RFC 9147) share one set of handshake
engines: DTLS "reuses the TLS 1.3 handshake messages and flows" (RFC 9147
§5) and differs in a handful of facts, gathered here as one frozen value so
the engines never test "is this DTLS?" in more places than these fields:

- the HKDF-Expand-Label prefix of every key schedule derivation
  ("tls13 " / "dtls13", RFC 9147 §5.9);
- the version in supported_versions (0x0304 / 0xfefc) and the
  legacy_version of ClientHello and ServerHello (0x0303 / 0xfefd,
  RFC 9147 §5.3, §5.4);
- the legacy_cookie field that only a DTLS ClientHello has (§5.3);
- middlebox compatibility mode (RFC 9846 Appendix D.4), which DTLS does not
  have: no ChangeCipherSpec, an empty legacy_session_id, and a ServerHello
  whose legacy_session_id_echo is empty (RFC 9147 §5; rfc9147bis-02 §5
  adds the client's illegal_parameter check, which longtls follows).

Record-layer facts (epochs, record numbers, the sn key) are not here: the
record layer owns them.  The engines get a Transport as a constructor
argument, TLS by default, so the TLS path is what it always was.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import DTLS13_VERSION, DTLS_LEGACY_VERSION, LEGACY_VERSION, TLS13_VERSION
from ..crypto.key_schedule import DTLS13_LABEL_PREFIX, TLS13_LABEL_PREFIX

__all__ = ["DTLS", "TLS", "Transport"]


@dataclass(frozen=True, slots=True)
class Transport:
    """The facts of one transport that the handshake engines depend on."""

    #: "TLSv1.3" or "DTLSv1.3": HandshakeComplete.version.
    name: str
    #: "TLS 1.3" or "DTLS 1.3", for error messages.
    protocol: str
    #: HKDF-Expand-Label prefix (RFC 9846 §7.1; RFC 9147 §5.9).
    label_prefix: bytes
    #: The one version longtls puts in supported_versions and accepts.
    version: int
    #: legacy_version of ClientHello, ServerHello and HelloRetryRequest.
    legacy_version: int
    #: ClientHello carries legacy_cookie<0..2^8-1> after legacy_session_id (RFC 9147 §5.3).
    has_legacy_cookie: bool
    #: Middlebox compatibility mode exists (RFC 9846 App. D.4): a 32-byte
    #: legacy_session_id, its echo and the dummy change_cipher_spec.  DTLS
    #: has none of it (RFC 9147 §5).
    middlebox_compatibility: bool
    #: Additional data of sealed session tickets: a ticket issued over one
    #: transport does not open on the other (its PSK was derived with the
    #: other label prefix), so it falls back to a full handshake quietly.
    ticket_aad: bytes
    #: A datagram transport: the server answers a first ClientHello with a
    #: stateless HelloRetryRequest cookie when configured (RFC 9147 §5.1).
    datagram: bool

    def __repr__(self) -> str:
        return f"<Transport {self.name}>"


TLS = Transport(
    name="TLSv1.3",
    protocol="TLS 1.3",
    label_prefix=TLS13_LABEL_PREFIX,
    version=TLS13_VERSION,
    legacy_version=LEGACY_VERSION,
    has_legacy_cookie=False,
    middlebox_compatibility=True,
    ticket_aad=b"longtls ticket",
    datagram=False,
)

DTLS = Transport(
    name="DTLSv1.3",
    protocol="DTLS 1.3",
    label_prefix=DTLS13_LABEL_PREFIX,
    version=DTLS13_VERSION,
    legacy_version=DTLS_LEGACY_VERSION,
    has_legacy_cookie=True,
    middlebox_compatibility=False,
    ticket_aad=b"longtls dtls13 ticket",
    datagram=True,
)
