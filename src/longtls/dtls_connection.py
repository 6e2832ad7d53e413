"""The sans-I/O DTLS 1.3 connection (RFC 9147, read with draft-ietf-tls-rfc9147bis-02).

Datagrams in (``receive_datagram``), datagrams out (``datagrams_to_send``),
events out (``next_event``), commands in (``send``, ``update_keys``,
``close`` ...), and timers: ``get_timer()`` says when ``handle_timer()`` is
due (retransmission, delayed ACKs, the handshake timeout, key update
deadlines).  Like ``connection.Connection`` it never touches a socket, a
clock (time comes from the configuration's ``now``) or a thread; the
commands and events have the same names.

What it ties together (docs/dtls.md):

- the record layer (``record.dtls_layer.DTLSRecordLayer``): epochs per
  direction, record number encryption, replay windows, silent discard;
- handshake reliability (``record.dtls_reliability``): message_seq,
  fragmentation to the MTU, reassembly, ACKs and retransmission;
- the TLS handshake engines with the ``DTLS`` transport (``handshake.transport``)
  and the stateless cookie (``DTLSConnection.accept``);
- the post-handshake protocols through the same ``PostHandshakeArbiter`` as
  TLS: KeyUpdate (RFC 9147 §8), NewSessionTicket, client authentication,
  Extended Key Update (its DTLS flows are the state machine's,
  handshake/eku.py) and connection ID updates (handshake/connection_ids.py).

Epochs (RFC 9147 §6.1): 0 plaintext hellos, 2 handshake, 3 the first
application keys, 4 and up one per key update, counted per direction.  A
KeyUpdate we send switches our write epoch only once it and every earlier
message are acknowledged (rfc9147bis §8, where the revision changes RFC 9147);
until then application data keeps flowing under the old epoch and further
handshake messages wait.

Where the texts leave room, the decision is written next to the code and
collected in docs/dtls.md.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Sequence

from .config import Configuration
from .connection_core import ConnectionCore, ConnectionState, alert_level, check_update_timeout
from .constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    AlertDescription,
    AlertLevel,
    ContentType,
    HandshakeType,
    KeyUpdateRequest,
)
from .crypto.suites import SuiteInfo
from .errors import (
    DecodeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TLSError,
)
from .events import (
    ApplicationData,
    Direction,
    Event,
    KeyUpdated,
)
from .handshake.connection_ids import MAX_OWN_CIDS, ConnectionIds
from .handshake.server import ServerHandshake, stateless_hello_retry
from .handshake.transport import DTLS
from .record.dtls_layer import DTLSRecord, DTLSRecordLayer
from .record.dtls_reliability import (
    DEFAULT_MTU,
    HandshakeReceiver,
    HandshakeSender,
    ReceivedMessage,
    RetransmissionTimer,
    pack_datagrams,
)
from .wire.connection_ids import ConnectionIdUsage
from .wire.dtls_ack import ACK, max_ack_record_numbers
from .wire.dtls_handshake import decode_fragments, encode_fragment, tls_message
from .wire.dtls_record import DiscardReason, RecordNumber

__all__ = ["DTLSConnection", "PathProbe"]

_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)  # plain ints: compared per record
_HANDSHAKE = int(ContentType.HANDSHAKE)
_ACK = int(ContentType.ACK)
_ALERT = int(ContentType.ALERT)
_HANDSHAKE_EPOCH = 2  # RFC 9147 §6.1
_FIRST_APPLICATION_EPOCH = 3
#: Below every protected record number (epochs 0 and 1 are not authenticated
#: by us: plaintext, or early data we never accept): the starting point of
#: ``last_datagram_advanced``'s single comparison per record.
_BEFORE_PROTECTED = RecordNumber(1, 2**64)
#: Post-handshake messages that expect no reply flight, only their ACK.
_SINGLE_FLIGHT = frozenset({
    HandshakeType.key_update, HandshakeType.new_connection_id, HandshakeType.request_connection_id,
})
#: The client's answers to a post-handshake CertificateRequest: they
#: implicitly acknowledge it (RFC 9147 §7.1, "The server's post-handshake
#: CertificateRequest" is implicitly acknowledged).
_CLIENT_AUTH_ANSWERS = frozenset((
    HandshakeType.certificate, HandshakeType.compressed_certificate,
    HandshakeType.certificate_verify, HandshakeType.finished,
))


def _is_hello_retry_request(message: bytes) -> bool:
    # type(1) length(3) legacy_version(2) random(32): RFC 9846 §4.1.3.
    return message[0] == HandshakeType.server_hello and message[6:38] == HELLO_RETRY_REQUEST_RANDOM


class _PendingSwitch:
    """A write epoch whose keys are known but not yet in use: it waits until
    the KeyUpdate before it and every earlier message are acknowledged
    (rfc9147bis §8)."""

    __slots__ = ("epoch", "events", "secret")

    def __init__(self, epoch: int, secret: bytes) -> None:
        self.epoch = epoch
        self.secret = secret
        #: KeyUpdated(send) events held back until the switch really happened.
        self.events: list[Event] = []

    def __repr__(self) -> str:  # no secret
        return f"<_PendingSwitch epoch={self.epoch}>"


class PathProbe:
    """A reachability test of a candidate peer address (NAT rebinding).

    RFC 9147 §11 (rfc9147bis-02 §11 the same): "MUST NOT update the address
    they send to in response to packets from a different address unless they
    first perform some reachability test; no such test is defined".  RFC 9146
    §6 adds that only a record newer than any received, that authenticates,
    may trigger one.  Decision (docs/dtls.md, "NAT rebinding"): the test is
    made of RFC 9147 messages only.  ``datagrams`` hold a NewConnectionId (one
    fresh cid_spare CID: §9 "SHOULD use a new CID whenever sending on a new
    path") to be sent ONLY to the candidate address; ``record_numbers`` are
    the records carrying it.  The candidate is reachable once an
    authenticated ACK names one of them (``DTLSConnection.path_validated``).
    Retransmissions of that message go to the current address under other
    record numbers, so they never validate the candidate.
    """

    __slots__ = ("datagrams", "record_numbers", "validated")

    def __init__(self, datagrams: list[bytes], record_numbers: frozenset[RecordNumber]) -> None:
        self.datagrams = datagrams
        self.record_numbers = record_numbers
        self.validated = False

    def __repr__(self) -> str:
        numbers = sorted(self.record_numbers)
        return f"<PathProbe records={[(n.epoch, n.sequence_number) for n in numbers]} validated={self.validated}>"


class DTLSConnection(ConnectionCore):
    """One DTLS 1.3 association, client or server, with no I/O of its own.

    A client: ``DTLSConnection(config)`` then ``start_handshake()``.  A
    server: every datagram from an address with no association goes to
    ``DTLSConnection.accept(config, address, datagram)``, which answers a
    ClientHello without a valid cookie statelessly (RFC 9147 §5.1) and
    creates a connection only for one that has it.

    ``mtu`` is the largest datagram to send (the path MTU minus IP and UDP
    headers); handshake messages are fragmented to it, and ``send`` refuses
    application data that does not fit one record in it.  ``client_address``
    (a server's peer, as bytes) binds its cookies; ``first_message_seq`` is
    where ``accept`` starts a server's message_seq counting after a
    stateless HelloRetryRequest (RFC 9147 §5.2).  ``extended_key_update``:
    None (the default) offers and accepts Extended Key Update as the
    Configuration says, as over TLS; True or False overrides it.

    The transport-independent part (events, closing, the guard, timers,
    exporters, the hosts' record-free methods) is ``ConnectionCore``'s; this
    class adds datagrams, epochs, ACKs, flights and retransmission.
    """

    _protocol = "DTLS"
    _log_name = "DTLS connection"

    # The association's own state in slots: with the core's attributes an
    # instance had 48, past the 30 that CPython 3.11 keeps inline, so each
    # one carried a 1.6 KB dict (issue 16).  The core's stay in __dict__.
    __slots__ = (
        "_ack_now", "_answered_peer", "_cid_sent", "_close_number", "_dtls13_known", "_eku_sent",
        "_flight_open", "_held", "_hello_retry_records", "_mtu", "_newest_read_epoch", "_newest_received",
        "_now", "_outbox", "_pending_switches", "_probe", "_queued_now", "_read_epoch", "_read_secret",
        "_receiver", "_records", "_sender", "_suite", "_unreadable_answered", "_write_epoch",
        "_write_secret", "client_address", "connection_ids", "last_datagram_advanced", "plaintext_dropped",
    )

    def __init__(
        self,
        configuration: Configuration,
        *,
        client_address: bytes = b"",
        mtu: int = DEFAULT_MTU,
        first_message_seq: int = 0,
        extended_key_update: bool | None = None,
    ) -> None:
        configuration.validate()
        if extended_key_update is not None and extended_key_update != configuration.extended_key_update:
            # The caller's Configuration is not changed.
            configuration = dataclasses.replace(configuration, extended_key_update=extended_key_update)
        super().__init__(configuration, DTLS, client_address=client_address)
        self.client_address = client_address
        self._now = configuration.now()
        #: The record number of the peer's close_notify (RFC 9147 §5.10).
        self._close_number: RecordNumber | None = None
        #: Unprotected handshake records dropped because they did not parse
        #: (§4.5.2; the record layer's ``discarded`` counts the rest).
        self.plaintext_dropped = 0

        self._records = DTLSRecordLayer(padding=configuration.record_padding)
        timer = RetransmissionTimer(configuration.dtls_initial_retransmit_timeout)  # §5.8.2
        self._sender = HandshakeSender(
            self._records, is_client=self.is_client, mtu=mtu, timer=timer, first_message_seq=first_message_seq
        )
        self._receiver = HandshakeReceiver(
            timer=timer, next_receive_seq=first_message_seq,
            max_message_size=configuration.max_handshake_message_size,
        )
        self._outbox: list[bytes] = []
        self._mtu = mtu

        # Write side: the epoch messages queued now belong to, its secret,
        # and the epochs whose keys wait for an ACK (rfc9147bis §8).
        self._write_epoch = 0
        self._write_secret = b""
        # Lists, not deques: both are empty on an idle association (two empty
        # deques were ~1.2 KB of it, issue 16) and hold a few entries at most.
        self._pending_switches: list[_PendingSwitch] = []
        #: Handshake messages queued behind a pending switch: (message, epoch).
        self._held: list[tuple[bytes, int]] = []
        self._flight_open = False
        self._queued_now = False
        # Read side: the epoch the peer's next handshake message must arrive
        # in, its secret, and the newest epoch a record opened in.
        self._read_epoch = 0
        self._read_secret = b""
        self._newest_read_epoch = 0
        #: The peer is known to speak DTLS 1.3: ACKs may be sent and are
        #: processed (rfc9147bis §7).
        self._dtls13_known = False
        self._answered_peer = False
        self._ack_now = False
        self._unreadable_answered = False
        self._suite: SuiteInfo | None = None
        #: The records of our HelloRetryRequest (a connection that had to
        #: reassemble the first ClientHello), sent again for a retransmitted one.
        self._hello_retry_records: list[bytes] = []

        #: Our EKU messages not yet acknowledged, by message_seq: an ACK of
        #: one is reported to the state machine (message_acknowledged).
        self._eku_sent: dict[int, bytes] = {}
        #: Connection ID updates (RFC 9147 §9), once the handshake negotiated CIDs.
        self.connection_ids: ConnectionIds | None = None
        #: Our NewConnectionId / RequestConnectionId not yet acknowledged, by message_seq.
        self._cid_sent: dict[int, int] = {}
        #: The newest authenticated record number received (RFC 9146 §6), and
        #: whether the last ``receive_datagram`` call raised it.
        self._newest_received = _BEFORE_PROTECTED
        self.last_datagram_advanced = False
        #: The reachability test under way (``probe_path``), if any.
        self._probe: PathProbe | None = None

    def __repr__(self) -> str:
        role = "client" if self.is_client else "server"
        return (
            f"<DTLSConnection {role} {self.state.value} write_epoch={self._records.write_epoch} "
            f"read_epoch={self._read_epoch}>"
        )

    # ------------------------------------------------------------------ server entry

    @classmethod
    def accept(
        cls, configuration: Configuration, client_address: bytes, datagram: bytes, *, mtu: int = DEFAULT_MTU,
        extended_key_update: bool | None = None,
    ) -> tuple[DTLSConnection | None, list[bytes]]:
        """A server's answer to a datagram from an address with no association.

        Returns ``(connection, [])`` when a handshake starts (the connection
        has processed the datagram; its ``datagrams_to_send()`` hold the
        answer), or ``(None, datagrams)``: the stateless HelloRetryRequest
        with a cookie (RFC 9147 §5.1), an alert for a ClientHello to refuse
        (illegal_parameter for a bad cookie, §5.1), or nothing at all for a
        datagram that starts no handshake (§4.5.2: silently discarded).
        Before a valid cookie nothing is kept: no connection, no buffer.

        ``client_address`` is the address as bytes (IP and port, packed the
        same way every time); cookies are bound to it.

        Decision: a first ClientHello that does not fit one datagram (the
        default key shares, X25519MLKEM768 and x25519, take about 1.4 KB) cannot
        be answered without reassembling it, which is state.  Its first
        fragment starts a connection whose engine answers the whole
        ClientHello with the same stateless HelloRetryRequest; the connection
        holds only the fragments (bounded by max_handshake_message_size) and
        is subject to the handshake timeout.  RFC 9147 does not address it.
        """
        probe = DTLSRecordLayer()
        for record in probe.open_datagram(datagram):
            if record.content_type != _HANDSHAKE or record.number.epoch != 0:
                continue
            try:
                fragments = decode_fragments(record.payload)
            except RemoteProtocolError:  # malformed (decode_error, unexpected_message): drop it
                continue
            for f in fragments:
                if f.msg_type != HandshakeType.client_hello:
                    continue
                if f.fragment_offset == 0 and len(f.fragment) == f.length and configuration.dtls_cookie:
                    reply = cls._stateless_reply(
                        configuration, client_address, record.number.sequence_number,
                        f.message_seq, tls_message(f.msg_type, f.fragment),
                    )
                    if reply is not None:
                        return None, reply
                conn = cls(
                    configuration, client_address=client_address, mtu=mtu, first_message_seq=f.message_seq,
                    extended_key_update=extended_key_update,
                )
                # Decision: the association's epoch-0 records continue the
                # client's numbering, as the HelloRetryRequest took the first
                # ClientHello's (below): no record number of ours repeats.
                conn._records.set_write_sequence_number(0, record.number.sequence_number)
                try:
                    conn.receive_datagram(datagram)
                except ProtocolError:
                    pass  # the alert is queued in the connection, which is closed
                return conn, []
        return None, []

    @staticmethod
    def _stateless_reply(
        configuration: Configuration, client_address: bytes, record_sequence: int, message_seq: int,
        client_hello: bytes,
    ) -> list[bytes] | None:
        try:
            retry = stateless_hello_retry(configuration, client_address, client_hello)
        except RemoteProtocolError as exc:
            if isinstance(exc, DecodeError) or exc.alert is None or exc.alert == AlertDescription.decode_error:
                return []  # §4.5.2: malformed and unauthenticated: drop it
            # §5.1: "terminate the handshake with an illegal_parameter alert"
            # (a bad cookie); the other refusals get their alert too.  It is
            # smaller than the ClientHello: nothing is amplified.
            probe = DTLSRecordLayer()
            probe.set_write_sequence_number(0, record_sequence)
            record, _ = probe.seal(ContentType.ALERT, bytes((AlertLevel.FATAL, exc.alert)), 0)
            return [record]
        if retry is None:
            return None
        # Decision: RFC 9147 is silent on the record and message numbers of a
        # stateless HelloRetryRequest.  The record reuses the ClientHello's
        # sequence number (as DTLS 1.2's HelloVerifyRequest did, RFC 6347
        # §4.2.1), so the same ClientHello always gets the same bytes; the
        # message takes the ClientHello's message_seq (0 for the first).
        probe = DTLSRecordLayer()
        probe.set_write_sequence_number(0, record_sequence)
        body = retry[4:]
        fragment = encode_fragment(retry[0], len(body), message_seq, 0, body)
        record, _ = probe.seal(ContentType.HANDSHAKE, fragment, 0)
        return [record]

    # ------------------------------------------------------------------ API

    def start_handshake(self) -> None:
        """Client: queue the ClientHello.  A server starts with ``accept``."""
        if not self.is_client:
            raise LocalProtocolError("only a client starts the handshake")
        self._now = self.configuration.now()
        self._started_at = self._now
        self._guard(self.handshake.start)

    def receive_datagram(self, data: bytes) -> None:
        """Process one datagram from the peer.

        Invalid records are discarded silently (RFC 9147 §4.5.2; counted in
        ``discarded``).  A protocol error in an authenticated record queues
        the fatal alert, queues ``ConnectionClosed`` and raises
        ``RemoteProtocolError``.  Datagrams of a closed connection are ignored.
        """
        self.last_datagram_advanced = False
        if self.state is ConnectionState.CLOSED:
            return
        self._now = self.configuration.now()
        if self._started_at is None:
            self._started_at = self._now
        self._guard(lambda: self._process_datagram(data))

    def datagrams_to_send(self) -> list[bytes]:
        """Datagrams to write to the transport, each at most ``mtu`` bytes (empties the queue)."""
        if not self._outbox:
            return []
        out, self._outbox = self._outbox, []
        return pack_datagrams(out, self.mtu)

    @property
    def mtu(self) -> int:
        """The largest datagram we send; may change at any time (RFC 9147 §4.4:
        retransmissions are cut to the new size)."""
        return self._mtu

    @mtu.setter
    def mtu(self, value: int) -> None:
        self._mtu = value
        self._sender.mtu = value

    @property
    def max_datagram_payload(self) -> int:
        """The largest application datagram ``send`` takes: one record in one ``mtu``."""
        return self._records.max_payload(self.mtu)

    def send(self, data: bytes) -> None:
        """Send one application datagram as one record (RFC 9147 §4.3: a
        record never spans datagrams).  LocalProtocolError if it does not fit
        one record in the MTU (``max_datagram_payload``)."""
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError(f"cannot send application data while {self.state.value}")
        if self._close_sent:
            raise LocalProtocolError("cannot send after close()")
        records = self._records
        if len(data) > records.max_payload(self.mtu):
            raise LocalProtocolError(
                f"{len(data)} bytes do not fit one DTLS record in a {self.mtu}-byte datagram "
                f"(at most {records.max_payload(self.mtu)}); split them"
            )
        if records.write_near_limit and not self._pending_switches:
            # RFC 9147 §4.5.3, RFC 9846 §5.5: replace the key before its limit.
            self._command(self._rekey.before_usage_limit)
        record, number = records.seal(_APPLICATION_DATA, data, budget=self._mtu)
        self._outbox.append(record)
        if self._rekey.sent(len(data), number.sequence_number + 1) and not self._pending_switches:
            self._command(self._rekey.start_update)

    def update_keys(self, request_peer_update: bool = True, timeout: float | None = None) -> None:
        """Send a KeyUpdate (RFC 9147 §8).  Our records switch to the next epoch
        once the peer has acknowledged it and every earlier message
        (rfc9147bis §8); ``KeyUpdated(send)`` is emitted then.  With
        ``request_peer_update`` the peer must answer with its own KeyUpdate
        within ``timeout`` (None: ``Configuration.rekey_timeout``), else
        ``handle_timer`` ends the connection with ``KeyUpdateTimeoutError``.

        LocalProtocolError while our previous KeyUpdate is not yet
        acknowledged (``key_update_pending``).
        """
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("KeyUpdate is only possible once the handshake is complete")
        if self._close_sent:
            raise LocalProtocolError("cannot update keys after close()")
        if self._pending_switches:
            raise LocalProtocolError("our previous KeyUpdate is not acknowledged yet (RFC 9147bis §8)")
        check_update_timeout(timeout)
        self.post_handshake.check_key_update(local=True)
        request = (
            KeyUpdateRequest.update_requested if request_peer_update
            else KeyUpdateRequest.update_not_requested
        )
        key_update = self.key_update
        assert key_update is not None
        self._command(lambda: key_update.send(request, timeout=timeout))

    @property
    def messages_in_flight(self) -> int:
        """Our handshake and post-handshake messages not yet acknowledged
        (explicitly or implicitly, RFC 9147 §7): 0 once a client's last
        flight, a NewSessionTicket or a KeyUpdate has been ACKed."""
        return len(self._sender.outstanding)

    @property
    def key_update_pending(self) -> bool:
        """Our KeyUpdate waits for its ACK: the next epoch is not in use yet."""
        return bool(self._pending_switches)

    @property
    def write_epoch(self) -> int:
        """The epoch our records are protected under now (RFC 9147 §6.1)."""
        return self._records.write_epoch

    @property
    def read_epoch(self) -> int:
        """The peer's current epoch: the one its next handshake message must use."""
        return self._read_epoch

    @property
    def read_epochs(self) -> tuple[int, ...]:
        """The peer's epochs whose records we still open (older ones kept for reordering)."""
        return self._records.read_epochs

    @property
    def discarded(self) -> int:
        """How many invalid records were silently discarded (RFC 9147 §4.5.2)."""
        return sum(self._records.discarded.values())

    @property
    def send_key_generation(self) -> int:
        """How many times our sending key changed (KeyUpdates in use)."""
        return max(0, self._records.write_epoch - _FIRST_APPLICATION_EPOCH)

    # -- connection IDs (RFC 9147 §9) --------------------------------------------

    @property
    def own_connection_ids(self) -> tuple[bytes, ...]:
        """The CIDs the peer may put in its records to us (what a server
        demultiplexes by): the handshake's and every one we issued since;
        empty if none were negotiated or ours is empty."""
        ids = self.connection_ids
        if ids is None:
            own = self.handshake.own_connection_id
            return (own,) if own else ()
        return tuple(cid for cid in ids.own if cid)

    @property
    def peer_connection_id(self) -> bytes | None:
        """The CID our records carry (None: none negotiated)."""
        ids = self.connection_ids
        return ids.peer if ids is not None else self.handshake.peer_connection_id

    def _cid_protocol(self) -> ConnectionIds:
        if self.state is not ConnectionState.CONNECTED or self.connection_ids is None:
            raise LocalProtocolError("connection IDs were not negotiated on this connection")
        return self.connection_ids

    def request_connection_ids(self, count: int = 1) -> None:
        """Ask the peer for ``count`` spare CIDs (RequestConnectionId)."""
        ids = self._cid_protocol()
        self._command(lambda: ids.request(count))

    def issue_connection_ids(self, count: int = 1, immediate: bool = False) -> list[bytes]:
        """Give the peer ``count`` fresh CIDs of ours (NewConnectionId), to use
        at once (``immediate``, cid_immediate) or as spares; returns them."""
        ids = self._cid_protocol()
        usage = ConnectionIdUsage.cid_immediate if immediate else ConnectionIdUsage.cid_spare
        issued: list[bytes] = []
        self._command(lambda: issued.extend(ids.issue(count, usage)))
        return issued

    def next_connection_id(self) -> bool:
        """Put the peer's next spare CID in our records from now on (RFC 9147 §9:
        a new CID for a new path); False if the peer gave us no spare."""
        return self._cid_protocol().next_peer_connection_id()

    # -- NAT rebinding: a reachability test of a new peer address ------------------

    def probe_path(self) -> PathProbe | None:
        """Start a reachability test of a candidate peer address (``PathProbe``).

        Send ``probe.datagrams`` to the candidate address only, everything
        else from ``datagrams_to_send()`` to the current one; then
        ``path_validated(probe)`` after each datagram received tells whether
        the candidate answered.  None when no test is possible now: CIDs not
        negotiated or ours empty (the peer could not have been routed to us
        from a new address), the connection not open or closing, a probe
        already under way (``abandon_probe`` first), our KeyUpdate waiting
        for its ACK (rfc9147bis §8: no new message before it), the CIDs we
        may issue used up (``MAX_OWN_CIDS``), or nothing to resend yet.

        Decision: if an earlier probe's NewConnectionId is still not
        acknowledged (§9: only one may be outstanding; its copy may have been
        lost on the way to the candidate, and its retransmissions went to an
        old address that may be dead), the new probe carries a retransmission
        of our unacknowledged messages instead, under new record numbers.
        """
        ids = self.connection_ids
        if (
            ids is None or not ids.own[0] or self.state is not ConnectionState.CONNECTED or self._closing
            or self._probe is not None or self._pending_switches or self._held
        ):
            return None
        records = self._records
        before = {epoch: records.write_sequence_number(epoch) for epoch in records.write_epochs}
        start = len(self._outbox)
        if HandshakeType.new_connection_id in self._cid_sent.values():
            sender = self._sender

            def resend() -> None:
                sender.on_peer_retransmission(self._now)  # rate-limited and refused if partly ACKed

            self._command(resend)
        elif len(ids.own) < MAX_OWN_CIDS:
            self.issue_connection_ids(1)
        if len(self._outbox) == start or self.state is not ConnectionState.CONNECTED:
            return None
        sent = self._outbox[start:]
        del self._outbox[start:]
        numbers = frozenset(
            RecordNumber(epoch, sequence_number)
            for epoch in records.write_epochs
            for sequence_number in range(before.get(epoch, 0), records.write_sequence_number(epoch))
        )
        self._probe = PathProbe(pack_datagrams(sent, self.mtu), numbers)
        return self._probe

    def path_validated(self, probe: PathProbe) -> bool:
        """True once an authenticated ACK named one of ``probe``'s records: the
        candidate address reaches the peer.  The probe is then over (a new one
        may start)."""
        if probe.validated and self._probe is probe:
            self._probe = None
        return probe.validated

    def abandon_probe(self, probe: PathProbe) -> None:
        """Give up on ``probe`` (no answer in time): its records no longer
        validate anything, and ``probe_path`` may start another."""
        if self._probe is probe:
            self._probe = None

    # The core's hooks for commands: the clock is read once per call (every
    # message and timer of that call uses it); nothing goes behind a KeyUpdate
    # not yet acknowledged.

    def _command(self, action: Callable[[], None]) -> None:
        self._now = self.configuration.now()
        self._guard(action)

    def _check_handshake_message_may_go(self) -> None:
        if self._pending_switches:
            raise LocalProtocolError("our KeyUpdate is not acknowledged yet (RFC 9147bis §8)")

    def _refuse_update_after_close(self) -> None:
        if self._closing:
            raise LocalProtocolError("cannot update keys once a close_notify was sent or received")

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should be called next, or None.

        Timers: retransmission (RFC 9147 §5.8), a delayed ACK (§7.1), the
        handshake timeout, the peer's answer to a KeyUpdate, the rekey interval.
        """
        if self.state is ConnectionState.CLOSED:
            return None
        deadlines = self._deadlines()
        retransmit = self._sender.next_deadline
        if retransmit is not None:
            deadlines.append(retransmit)
        ack = self._receiver.ack_deadline
        if ack is not None and self._dtls13_known:
            deadlines.append(ack)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float | None = None) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        self._now = self.configuration.now() if now is None else now
        super().handle_timer(self._now)

    def _run_timers(self, now: float) -> None:
        self._guard(lambda: self._on_timer(now))

    def _on_timer(self, now: float) -> None:
        self._sender.on_timeout(now)  # §5.8.1: retransmit what is due, back off
        if self._deferred_eku_due(now):
            self.post_handshake.respond_deferred_eku()
        if self._rekey_due(now):
            self._rekey.start_update()

    def _rekey_possible(self) -> bool:
        # Over DTLS no update starts after a close_notify either way, nor
        # while our KeyUpdate waits for its ACK (rfc9147bis §8).
        return not self._close_received and not self._pending_switches and super()._rekey_possible()

    # ------------------------------------------------------------ the hosts
    # What the engines (handshake.host.HandshakeHost) and KeyUpdate
    # (handshake.key_update.KeyUpdateHost) see of the connection.

    def emit(self, event: Event) -> None:
        if type(event) is KeyUpdated and event.direction is Direction.send and self._pending_switches:
            # Our KeyUpdate is sent but its epoch not yet in use: report the
            # switch when it happens (on the ACK, rfc9147bis §8).
            self._pending_switches[-1].events.append(event)
            return
        self._events.append(event)

    def queue_handshake(self, message: bytes) -> None:
        """One TLS-form handshake message from the engines or a post-handshake
        protocol, under the write epoch current for them."""
        epoch = self._write_epoch
        if self._held or epoch > self._records.write_epoch:
            self._held.append((message, epoch))  # behind a KeyUpdate not yet acknowledged
            return
        self._queue_message(message, epoch)

    def _queue_message(self, message: bytes, epoch: int) -> None:
        now = self._now
        self._queued_now = True
        if _is_hello_retry_request(message):
            # §3.1: no retransmission timer for a HelloRetryRequest; the
            # client's retransmitted ClientHello brings it again, the same
            # records (same message_seq: a second HelloRetryRequest would
            # make the client abort, RFC 9846 §4.1.4).
            self._sender.queue_message(message, epoch, now, retransmit=False)
            self._hello_retry_records = self._sender.records_to_send()
            self._outbox.extend(self._hello_retry_records)
            return
        seq = self._sender.queue_message(message, epoch, now)
        self._flight_open = True
        eku = self.eku
        if eku is not None and message[0] in eku.message_types:
            self._eku_sent[seq] = message
        if message[0] in _SINGLE_FLIGHT:
            # A KeyUpdate, NewConnectionId or RequestConnectionId expects no
            # reply flight: only its ACK completes it (§8, §9; rfc9147bis §5.8.4).
            if message[0] != HandshakeType.key_update:
                self._cid_sent[seq] = message[0]
            self._sender.end_flight(now, final=True)
            self._flight_open = False

    def compatibility_ccs(self) -> None:
        """DTLS 1.3 has no ChangeCipherSpec (RFC 9147 §5): nothing to send."""

    def handshake_done(self) -> None:
        super().handshake_done()
        hs = self.handshake
        if hs.own_connection_id is not None and hs.peer_connection_id is not None:
            # Negotiated (either CID may be empty): NewConnectionId and
            # RequestConnectionId have an owner; without CIDs the engine
            # refuses them as unexpected_message (§9).
            self.connection_ids = ConnectionIds(
                self, hs.own_connection_id, hs.peer_connection_id, self.configuration.random
            )
            self.post_handshake.register(self.connection_ids)

    # ConnectionIdHost (handshake.connection_ids): which CIDs the records carry.

    def use_peer_connection_id(self, cid: bytes) -> None:
        self._records.set_peer_connection_id(cid)

    def accept_own_connection_ids(self, cids: Sequence[bytes]) -> None:
        self._records.set_own_connection_id(*cids)

    def set_write_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        """The engines' key changes (handshake epoch 2, application epoch 3):
        in use at once; messages queued before keep their epoch (§4.2.1)."""
        epoch = _HANDSHAKE_EPOCH if self._write_epoch < _HANDSHAKE_EPOCH else self._write_epoch + 1
        if epoch == _HANDSHAKE_EPOCH:
            # RFC 9147 §9 (and its example): protected records carry the CID the
            # peer asked for in its hello; plaintext ones never do (§4).
            self._records.set_peer_connection_id(self.handshake.peer_connection_id)
        self._suite = suite
        self._records.set_write_epoch(epoch, suite, secret)
        self._write_epoch = epoch
        self._write_secret = secret

    def set_read_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        epoch = _HANDSHAKE_EPOCH if self._read_epoch < _HANDSHAKE_EPOCH else self._read_epoch + 1
        own = self.handshake.own_connection_id
        if epoch == _HANDSHAKE_EPOCH and own:
            self._records.set_own_connection_id(own)
        self._records.set_read_epoch(epoch, suite, secret)
        self._read_epoch = epoch
        self._read_secret = secret

    @property
    def current_read_secret(self) -> bytes:
        return self._read_secret

    @property
    def current_write_secret(self) -> bytes:
        """The secret of the newest write epoch, in use or waiting for its ACK."""
        return self._write_secret

    def post_handshake_auth_done(self) -> None:
        """Client authentication finished: answer an update it held back (draft-13 §8.3),
        send a CertificateUpdate that waited for it (docs/certificate-update.md)."""
        self._certificate_update_resume(client_authenticated=True)
        if self._deferred_eku_due(self._now):
            self.post_handshake.respond_deferred_eku()

    def set_peer_record_size_limit(self, limit: int) -> None:
        self._records.set_peer_record_size_limit(limit)

    def enforce_record_size_limit(self) -> None:
        """The peer has agreed to our record_size_limit: its larger records
        are discarded from now on (RFC 8449 §4 allows that over DTLS)."""
        self._records.receive_record_size_limit = self.configuration.record_size_limit

    # KeyUpdate's host (handshake.key_update.KeyUpdateHost)

    @property
    def read_generation(self) -> int:
        return max(0, self._read_epoch - _FIRST_APPLICATION_EPOCH)

    @property
    def write_generation(self) -> int:
        """Generation of the newest write secret (in use, or waiting for its ACK)."""
        return max(0, self._write_epoch - _FIRST_APPLICATION_EPOCH)

    @property
    def handshake_data_pending(self) -> bool:
        # The reliability layer keeps fragments per epoch and ends an epoch's
        # handshake stream at a KeyUpdate (rfc9147bis §8): nothing can follow
        # it in the same record that the engines would see.
        return False

    def advance_write_secret(self, secret: bytes) -> None:
        """After our KeyUpdate: the next epoch's keys, used once it is acknowledged (rfc9147bis §8)."""
        epoch = self._write_epoch + 1
        self._write_epoch = epoch
        self._write_secret = secret
        self._pending_switches.append(_PendingSwitch(epoch, secret))
        self._try_switch()

    def advance_read_secret(self, secret: bytes) -> None:
        """The peer's KeyUpdate: open its next epoch.  The old one stays open
        for records still on their way (§8: "retain the pre-update keying
        material until receipt and successful decryption of a message using
        the new keys"; see ``_retire_read_epochs``)."""
        assert self._suite is not None
        epoch = self._read_epoch + 1
        self._records.set_read_epoch(epoch, self._suite, secret)
        self._read_epoch = epoch
        self._read_secret = secret

    # Extended Key Update's host (handshake.eku.EKUHost).  Over DTLS the
    # state machine itself waits for the ACKs the EKU texts name before it
    # asks for a send switch (it learns of them through message_acknowledged),
    # so the switch is made and confirmed at once (handshake/eku.py).

    def request_send_switch(self, secret: bytes) -> None:
        assert self._suite is not None and self.eku is not None
        epoch = self._write_epoch + 1
        self._records.set_write_epoch(epoch, self._suite, secret)
        self._write_epoch = epoch
        self._write_secret = secret
        self.eku.send_switch_done()

    def switch_receive(self, secret: bytes) -> None:
        """The peer's next epoch; the old one stays readable until a record
        under the new one arrives, and one step longer (``_retire_read_epochs``)."""
        self.advance_read_secret(secret)

    def send_ack(self) -> None:
        """An ACK of the handshake records received so far, sent when this
        call ends (so under a send epoch switched just before, RFC 9147 §7)."""
        self._receiver.acknowledge_now(self._now)

    def acknowledged_implicitly(self, message: bytes) -> None:
        """The peer's message answers ``message`` of ours: it and everything we
        sent before it have arrived (RFC 9147 §7.2, §5.2); stop retransmitting them."""
        seq = max((s for s, m in self._eku_sent.items() if m == message), default=None)
        if seq is None:
            return
        sender = self._sender
        for outstanding in sender.outstanding:
            if outstanding <= seq:
                sender.implicit_ack(self._now, outstanding)
        for done in [s for s in self._eku_sent if s <= seq]:
            del self._eku_sent[done]
        self._retire_write_epochs()

    def _try_switch(self) -> None:
        """Put pending write epochs in use once everything sent before them is
        acknowledged (rfc9147bis §8: "MUST NOT send records with the new keys
        until the KeyUpdate and all preceding messages have been
        acknowledged"), then send the messages that waited for them."""
        sender = self._sender
        while self._pending_switches:
            pending = self._pending_switches[0]
            if self._held and self._held[0][1] < pending.epoch:
                return
            if not sender.acknowledged_through(sender.next_message_seq - 1):
                return
            del self._pending_switches[0]
            assert self._suite is not None
            self._records.set_write_epoch(pending.epoch, self._suite, pending.secret)
            self._events.extend(pending.events)
            while self._held and self._held[0][1] <= self._records.write_epoch:
                message, epoch = self._held.pop(0)
                self._queue_message(message, epoch)
            if not self._pending_switches:
                # A CertificateUpdate waits for no KeyUpdate any more (it
                # respects _check_handshake_message_may_go; docs/certificate-update.md).
                self._certificate_update_resume()
        self._retire_write_epochs()

    def _retire_write_epochs(self) -> None:
        """Called when messages were acknowledged (explicitly or not): the only
        time an old write epoch can stop being needed."""
        records = self._records
        in_use = self._sender.epochs_in_use
        for epoch in records.write_epochs:
            if epoch < records.write_epoch and epoch not in in_use:
                # §4.2.1: retransmissions use their original epoch; nothing
                # sent under this one is waiting for an ACK any more.
                records.retire_write_epoch(epoch)

    # -------------------------------------------------------------- receiving

    def _process_datagram(self, data: bytes) -> None:
        now = self._now
        discarded = self._records.discarded
        handshaking = not self.handshake.complete
        unreadable = discarded[DiscardReason.UNKNOWN_EPOCH] if handshaking else 0
        newest = self._newest_received
        for record in self._records.records_in(data):
            if self.state is ConnectionState.CLOSED:
                return
            close_number = self._close_number
            if close_number is not None and record.number > close_number:
                # §5.10: "Any data received with an epoch/sequence number
                # pair after that of a valid received closure alert MUST be ignored."
                continue
            number = record.number
            if number > newest:
                # RFC 9146 §6: only a record newer than any received (and
                # authenticated: epochs from 2 on) may move the peer's address.
                newest = number
            epoch = number.epoch
            if epoch > self._newest_read_epoch:
                self._newest_read_epoch = epoch
                self._retire_read_epochs(epoch)
            content_type = record.content_type
            if content_type == _APPLICATION_DATA:
                # The record layer opens application data only in epochs >= 3,
                # which exist only once the engine allows it (RFC 9147 §6.1).
                if record.payload:
                    self._events.append(ApplicationData(record.payload))
            elif content_type == _HANDSHAKE:
                self._on_handshake_record(record, now)
            elif content_type == _ACK:
                self._on_ack_record(record, now)
            elif content_type == _ALERT:
                self._on_alert_record(record)
        if newest is not self._newest_received:
            self._newest_received = newest
            self.last_datagram_advanced = True
        if self._answered_peer and self._queued_now:
            # Our flight answers the peer's: an implicit acknowledgement
            # (§7.1: "ACKs SHOULD NOT be sent for these flights").
            self._receiver.clear_acks()
        if (
            handshaking and self._dtls13_known and not self._queued_now and not self.handshake.complete
            and discarded[DiscardReason.UNKNOWN_EPOCH] > unreadable and not self._unreadable_answered
        ):
            # A record we cannot deprotect yet: the peer is ahead of us, so
            # something of its flight, or our answer to it, was lost.
            # rfc9147bis §7.1: an ACK, empty if need be, tells the peer what we
            # have (epoch 2 before the ServerHello that keys it), so it
            # retransmits before its timer would.  §5.8.1: application data
            # of epoch 3 before the peer's Finished (we read its epoch 2
            # already) MAY be taken "as evidence of reordering or packet
            # loss" to "retransmit their final flight immediately"; the peer's
            # retransmission of its Finished follows ours.  Decision: once
            # until the handshake makes progress, so a burst of such records
            # gets one answer.
            self._unreadable_answered = True
            self._ack_now = True
            if self._read_epoch >= _HANDSHAKE_EPOCH:
                self._sender.on_peer_retransmission(now)
        if self._ack_now:
            # A flight that expects no reply (the client's last flight, a
            # post-handshake message): §7.1 "All other flights MUST be ACKed".
            self._receiver.acknowledge_now(now)

    def _retire_read_epochs(self, newest: int) -> None:
        """A record opened in ``newest``: the peer has moved on to it.

        Decision (rfc9147bis §8 requires keeping the old keys "until receipt
        and successful decryption of a message using the new keys"; issue
        tlswg/dtls13-spec#325 leaves the rest open): we keep one epoch below
        the newest for records still on their way (reordering), and close
        everything older.  So the handshake epoch 2 stays open until the
        peer's epoch 4: a client may retransmit its Finished under epoch 2
        while it already sends application data under 3.  Epoch 0 closes with
        the first protected record of the peer.
        """
        for epoch in self._records.read_epochs:
            if epoch < newest - 1 and epoch != self._read_epoch:
                self._records.retire_read_epoch(epoch)

    def _on_handshake_record(self, record: DTLSRecord, now: float) -> None:
        number = record.number
        receiver = self._receiver
        if number.epoch == 0 and self._read_epoch > 0:
            # An unprotected hello after the peer's keys are in use: a
            # retransmission (our answer was lost: §5.8.1 case 3) or an
            # injection, which must not reach the handshake.
            try:
                fragments = decode_fragments(record.payload)
            except RemoteProtocolError:
                return
            if fragments and all(f.message_seq < receiver.next_receive_seq for f in fragments):
                self._sender.on_peer_retransmission(now)
            return
        try:
            result = receiver.receive_record(number, record.payload, now)
        except RemoteProtocolError:
            if number.epoch == 0:
                # §4.5.2: an unauthenticated record that does not parse is
                # dropped, not fatal (anyone can send one).
                self.plaintext_dropped += 1
                return
            raise
        if result.retransmission:
            engine = self.handshake
            if self._hello_retry_records and isinstance(engine, ServerHandshake) and engine.awaiting_cookie:
                self._outbox.extend(self._hello_retry_records)  # our HelloRetryRequest was lost
            self._sender.on_peer_retransmission(now)
        for message in result.messages:
            self._on_message(message, now)
            if self.state is ConnectionState.CLOSED:
                return

    def _on_message(self, message: ReceivedMessage, now: float) -> None:
        raw = message.message
        msg_type = raw[0]
        self._unreadable_answered = False
        if message.epoch != self._read_epoch:
            # RFC 9147 §6.1 assigns each message its epoch; RFC 9846 §5.1: a
            # message under the wrong keys is unexpected_message.
            raise RemoteProtocolError(
                f"handshake message of type {msg_type} in epoch {message.epoch}, expected {self._read_epoch}",
                AlertDescription.unexpected_message,
            )
        handshake = self.handshake
        was_complete = handshake.complete
        if not was_complete:
            # §7.2: "the receipt of any record responding to a given flight
            # MUST be taken as an implicit acknowledgement for the entire flight".
            if self._sender.implicit_ack(now, last_flight=not self.is_client and msg_type == HandshakeType.finished):
                self._retire_write_epochs()
            self._answered_peer = self.is_client or msg_type == HandshakeType.client_hello
        elif not self.is_client and msg_type in _CLIENT_AUTH_ANSWERS:
            self._sender.implicit_ack(now)  # the client answers our CertificateRequest (§7.1)
        body = raw[4:]
        if self.state is not ConnectionState.CONNECTED or not self.post_handshake.dispatch(msg_type, body, raw):
            handshake.handle(msg_type, body, raw)
        if msg_type in (HandshakeType.client_hello, HandshakeType.server_hello):
            # rfc9147bis §7: the peer negotiates DTLS 1.3 (the engine checked
            # supported_versions); ACKs may flow from now on.
            self._dtls13_known = True
        if self.is_client:
            if was_complete and msg_type == HandshakeType.certificate_request:
                self._answered_peer = True
            elif was_complete:
                self._ack_now = True  # NewSessionTicket, KeyUpdate (§7.1)
        elif handshake.complete and msg_type != HandshakeType.client_hello:
            self._ack_now = True  # the client's last flight, or a post-handshake message
        self._try_switch()

    def _on_ack_record(self, record: DTLSRecord, now: float) -> None:
        if not self._dtls13_known:
            return  # rfc9147bis §7: "ACK records received in epoch 0 MUST be ignored" until then
        epoch = record.number.epoch
        try:
            ack = ACK.decode(record.payload)
            if epoch >= _FIRST_APPLICATION_EPOCH:
                # Decision: rfc9147bis §7.2 terminates on an ACK naming "an
                # epoch that is higher than the epoch in which the ACK was
                # received".  During the handshake we read it as the ACK
                # record's epoch (its purpose: a plaintext ACK must not touch
                # protected records).  After it, epochs are per direction and
                # the peer ACKs from its own newest epoch, which may lag ours
                # (tlswg/dtls13-spec#331), so we read it as our own newest
                # write epoch: an ACK naming an epoch we never sent in is refused.
                epoch = max(epoch, self._records.write_epoch, self._write_epoch)
            done = self._sender.on_ack(ack, epoch, now)
        except RemoteProtocolError:
            if record.number.epoch == 0:
                return  # §4.5.2: unauthenticated, dropped
            raise
        probe = self._probe
        if probe is not None and record.number.epoch >= _HANDSHAKE_EPOCH and not probe.validated:
            # An authenticated ACK naming a record that went only to the
            # candidate address: the peer received it there (PathProbe).
            numbers = probe.record_numbers
            probe.validated = any(rn in numbers for rn in ack.record_numbers)
        if done:
            ids = self.connection_ids
            if ids is not None and self._cid_sent:
                for seq in done:
                    msg_type = self._cid_sent.pop(seq, None)
                    if msg_type is not None:
                        ids.message_acknowledged(msg_type)
            eku = self.eku
            if eku is not None and self._eku_sent:
                for seq in done:
                    message = self._eku_sent.pop(seq, None)
                    if message is not None:
                        eku.message_acknowledged(message)
            self._try_switch()

    def _on_alert_record(self, record: DTLSRecord) -> None:
        content = record.payload
        if record.number.epoch == 0 and self._read_epoch > 0:
            return  # unauthenticated, and the peer has keys: an injection (§4.5.2)
        if len(content) != 2:
            if record.number.epoch == 0:
                return
            raise RemoteProtocolError("alert record is not two bytes", AlertDescription.decode_error)
        if content[1] == AlertDescription.close_notify:
            self._close_number = record.number
        self._alert_received(content[0], content[1])

    # -------------------------------------------------------------- internals

    def _flush(self) -> None:
        """End the flight just queued, collect its records, send an ACK that is due."""
        self._answered_peer = False
        self._ack_now = False
        self._queued_now = False
        if self.state is ConnectionState.CLOSED:
            return
        now = self._now
        sender = self._sender
        if self._flight_open:
            self._flight_open = False
            # A flight that expects a reply is implicitly acknowledged by it:
            # the ClientHello, the server's flight, a post-handshake
            # CertificateRequest.  Every other one waits for an explicit ACK
            # (§5.7 note, §7.1).
            final = self.handshake.complete and (self.is_client or not self.post_handshake.client_auth_in_progress)
            sender.end_flight(now, final=final)
        self._outbox.extend(sender.records_to_send())
        receiver = self._receiver
        if self._dtls13_known and receiver.ack_due(now):
            self._send_ack()

    def _send_ack(self) -> None:
        records = self._records
        # §7: "the highest available sending epoch" (never epoch 1: we send no early data).
        epoch = records.write_epoch
        room = records.max_payload(self.mtu, epoch)
        ack = self._receiver.build_ack(max_ack_record_numbers(room))
        record, _ = records.seal(_ACK, ack.encode(), epoch)
        self._outbox.append(record)

    def _send_alert(self, description: AlertDescription) -> None:
        try:
            record, _ = self._records.seal(_ALERT, bytes((alert_level(description), description)))
        except TLSError:
            return  # no key to send it under (keys dropped, or the AEAD limit)
        self._outbox.append(record)

    def _flush_handshake(self) -> None:
        """Nothing waits to be put in records: the sender has every message
        queued, and its records go out in ``_flush``; alerts are not
        retransmitted (RFC 9147 §5.10): a lost close_notify leaves the peer
        to its own timeouts."""

    def _drop_unsent_handshake(self) -> None:
        self._sender.records_to_send()  # nothing of the handshake goes after the alert

    def _drop_keys(self) -> None:
        self._records.drop_keys()
        self._held.clear()
        self._pending_switches.clear()

    def _release_host_references(self) -> None:
        # The connection IDs hold their host too (ConnectionCore's docstring: issue 16).
        super()._release_host_references()
        if self.connection_ids is not None:
            self.connection_ids.host = weakref.proxy(self)
