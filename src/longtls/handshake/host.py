"""What a handshake engine needs from the connection it runs in.

The client and server engines (and the post-handshake protocols) see their
connection only through ``HandshakeHost``: they queue handshake messages,
install traffic secrets, raise events and log secrets; everything about
records (framing, record versions, protection, sequence numbers) stays with
the host and its record layer.  The TLS ``Connection`` implements it; a DTLS
connection (epochs, ACKs) and an MLS channel will implement the same members,
so nothing here names a TLS record detail.

This module imports nothing from higher layers: a host is described, never imported.
"""

from __future__ import annotations

from typing import Protocol

from ..crypto.suites import SuiteInfo
from ..events import Event


class HandshakeHost(Protocol):
    """The connection as a handshake engine sees it."""

    #: ClientHello.random: the key log's key for this connection (NSS key log
    #: format). The engine that learns it first sets it.
    client_random: bytes

    # -- messages and events -----------------------------------------------

    def queue_handshake(self, message: bytes) -> None:
        """Queue one encoded handshake message (with its header) under the current write key."""

    def compatibility_ccs(self) -> None:
        """A flight boundary where middlebox compatibility mode places its dummy
        change_cipher_spec (RFC 9846 Appendix D.4).  A TLS host sends it there;
        a transport without ChangeCipherSpec (DTLS 1.3, RFC 9147 §5) ignores it."""

    def emit(self, event: Event) -> None:
        """Hand an event to the application."""

    # -- keys ------------------------------------------------------------------

    def set_read_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        """Open what the peer sends next under ``secret`` (RFC 9846 §7.3).

        Raises RemoteProtocolError if a handshake message spans the change (§5.1)."""

    def set_write_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        """Protect what we send next under ``secret``; messages queued before go out under the old key."""

    @property
    def current_read_secret(self) -> bytes:
        """The traffic secret the peer's records are opened with (post-handshake Finished keys)."""
        ...

    @property
    def current_write_secret(self) -> bytes:
        """The traffic secret our records are protected with."""
        ...

    def log_secret(self, label: str, secret: bytes) -> None:
        """Write ``label client_random secret`` to the key log, if one was asked for."""

    # -- milestones ------------------------------------------------------------

    def handshake_done(self) -> None:
        """Both Finished messages are through: the connection is established."""

    def post_handshake_auth_done(self) -> None:
        """Post-handshake client authentication finished (RFC 9846 §4.6.2)."""

    def check_client_auth_may_start(self, requested_by_peer: bool) -> None:
        """Whether post-handshake client authentication may start now, given the
        other post-handshake protocols running (EKU draft-13 §8.3).

        Raises LocalProtocolError for our own request, RemoteProtocolError for the peer's."""

    # -- record size (RFC 8449) ------------------------------------------------

    def set_peer_record_size_limit(self, limit: int) -> None:
        """The peer's record_size_limit: the largest TLSInnerPlaintext it accepts."""

    def enforce_record_size_limit(self) -> None:
        """The peer agreed to our record_size_limit: hold it to it (RFC 8449 §4)."""

    # -- what key updates changed ------------------------------------------------

    @property
    def resumption_secret(self) -> bytes:
        """The resumption secret of the current generation (an extended key update replaces it)."""
        ...

    @property
    def key_generation(self) -> int:
        """How many extended key updates completed on this connection."""
        ...

    @property
    def post_handshake_transcript_hash(self) -> bytes | None:
        """The transcript hash a post-handshake CertificateRequest extends after a
        draft-13 extended key update (transcript_hash_N, EKU draft-13 §8.1), or
        None: then it extends the handshake's transcript (RFC 9846 §4.4)."""
        ...
