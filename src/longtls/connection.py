"""The sans-I/O TLS 1.3 connection.

Bytes in (``receive_data``), bytes out (``data_to_send``), events out
(``next_event``), commands in (``send``, ``update_keys``, ``close`` ...).  The
connection never touches a socket, a clock (time comes from the
configuration's ``now``) or a thread.

Layering: the connection keeps the public API, the event queue, alerts and
closing, and dispatch; what it shares with the DTLS connection (events,
closing, the guard, timers, exporters) is ``connection_core.ConnectionCore``'s,
so this module holds only the byte stream's part.  Records (framing, protection, padding, size and usage
limits) are the record layer's (``record.tls_layer.TLSRecordLayer``); the
handshake is the client or server engine's (``handshake.client``,
``handshake.server``), which sees this class only as a
``handshake.host.HandshakeHost``; after the handshake each post-handshake
protocol (KeyUpdate, Extended Key Update, client authentication) handles its
own messages, routed and kept apart by ``handshake.post_handshake.PostHandshakeArbiter``.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Configuration
from .connection_core import ConnectionCore, ConnectionState, alert_level, check_update_timeout
from .constants import (
    AlertDescription,
    ContentType,
    KeyUpdateRequest,
)
from .crypto.suites import SuiteInfo
from .errors import (
    LocalProtocolError,
    RemoteProtocolError,
)
from .events import ApplicationData
from .handshake.transport import TLS
from .record.tls import SCRATCH_MINIMUM, RecordProtection
from .record.tls_layer import TLSRecordLayer
from .wire.messages import HandshakeReassembler

# ConnectionState and check_update_timeout live in connection_core; they are
# importable from here as before.
__all__ = ["Connection", "ConnectionState", "check_update_timeout"]

_APPLICATION_DATA = int(ContentType.APPLICATION_DATA)  # a plain int: compared per record
_NO_SCRATCH = bytearray()  # receive_data_into's scratch outside the call: never written to


class Connection(ConnectionCore):
    """One TLS 1.3 connection, client or server, with no I/O of its own.

    The transport-independent part (events, closing, the guard, timers,
    exporters, the hosts' record-free methods) is ``ConnectionCore``'s; this
    class adds the byte stream: records, the handshake reassembler, CCS.
    """

    def __init__(self, configuration: Configuration) -> None:
        configuration.validate()
        self._reassembler = HandshakeReassembler(configuration.max_handshake_message_size)
        self._pending_handshake = bytearray()
        self._empty_records = 0
        self._handshake_records = 0
        # receive_data_into's consumer of application data, during that call only.
        self._sink: Callable[[memoryview], object] | None = None
        self._scratch = _NO_SCRATCH
        super().__init__(configuration, TLS)
        #: Framing, protection, padding and record limits (record.tls_layer).
        self._records = TLSRecordLayer(
            self.handshake, is_client=self.is_client, padding=configuration.record_padding
        )

    def __repr__(self) -> str:
        role = "client" if self.is_client else "server"
        return f"<Connection {role} {self.state.value}>"

    # ------------------------------------------------------------------ API

    def start_handshake(self) -> None:
        """Client: queue the ClientHello.  A server waits for the peer instead."""
        if not self.is_client:
            raise LocalProtocolError("only a client starts the handshake")
        self._started_at = self.configuration.now()
        self._guard(self.handshake.start)

    def connection_made(self) -> None:
        """The transport is open: the handshake timeout runs from now.

        Without this a server's clock starts with the first byte received, and
        a peer that opens a connection and sends nothing is never timed out.
        """
        if self._started_at is None:
            self._started_at = self.configuration.now()

    def receive_data(self, data: bytes) -> None:
        """Process bytes from the peer.

        On a protocol error the fatal alert is queued in ``data_to_send()``, a
        ``ConnectionClosed`` event is queued, and ``RemoteProtocolError`` is raised.
        """
        if self.state is ConnectionState.CLOSED:
            return
        if self._started_at is None:
            self._started_at = self.configuration.now()
        self._records.feed(data)
        self._guard(self._process_records)

    def receive_data_into(
        self, data: bytes, scratch: bytearray, sink: Callable[[memoryview], object]
    ) -> None:
        """``receive_data`` for a stream API that copies application data into
        a buffer of its own at once (``longtls.aio``'s reader).

        The content of application data records goes to ``sink`` instead of
        ApplicationData events: each run of them decrypted straight into
        ``scratch`` and handed over as one memoryview of it, valid only during
        the call (``RecordReader.open_application_data_into``; ``scratch``: at
        least ``record.tls.SCRATCH_MINIMUM`` bytes, holding nothing between
        calls).  Every byte reaches ``sink`` in the order received, while the
        records are processed, so before the events queued by the same call
        are read (``events()``); content delivered before a record that fails
        stays delivered.  Everything else is ``receive_data``'s: events,
        alerts, errors.
        """
        if len(scratch) < SCRATCH_MINIMUM:
            raise ValueError(f"receive_data_into needs a scratch buffer of at least {SCRATCH_MINIMUM} bytes")
        self._sink, self._scratch = sink, scratch
        try:
            self.receive_data(data)
        finally:
            # Nothing reaches the sink after the call, and the scratch
            # buffer (shared, in longtls.aio) is not kept.
            self._sink, self._scratch = None, _NO_SCRATCH

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport (empties the buffer)."""
        self._flush_handshake()
        return self._records.data_to_send()

    def take_data_to_send(self) -> bytearray:
        """``data_to_send`` as the connection's own buffer, handed over without
        a copy, for a transport that takes any bytes-like object (asyncio's
        ``Transport.write``): the caller owns it, nothing writes to it again."""
        self._flush_handshake()
        return self._records.take_data_to_send()

    def send(self, data: bytes) -> None:
        """Queue application data."""
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError(f"cannot send application data while {self.state.value}")
        if self._close_sent:
            raise LocalProtocolError("cannot send after close()")
        records = self._records
        write = records.write
        if write is not None and write.near_limit:
            # RFC 9846 §5.5: replace the key before its AEAD usage limit.
            self._rekey.before_usage_limit()
        records.send(ContentType.APPLICATION_DATA, data)
        write = records.write  # a key update may have replaced it
        if self._rekey.sent(len(data), write.sequence_number if write is not None else 0):
            self._rekey.start_update()

    def update_keys(self, request_peer_update: bool = True, timeout: float | None = None) -> None:
        """Send a KeyUpdate (RFC 9846 §4.6.3) and switch to the next sending key.

        With ``request_peer_update`` the peer must answer with its own KeyUpdate
        within ``timeout`` seconds (None: ``Configuration.rekey_timeout``;
        ``math.inf``: no limit), else ``handle_timer`` ends the connection with
        ``KeyUpdateTimeoutError``.  While an answer is still owed, a further
        update does not ask again (§4.6.3: "MUST NOT send another KeyUpdate with
        request_update set to update_requested").
        """
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError("KeyUpdate is only possible once the handshake is complete")
        check_update_timeout(timeout)
        self._guard(lambda: self.post_handshake.check_key_update(local=True))
        request = (
            KeyUpdateRequest.update_requested if request_peer_update
            else KeyUpdateRequest.update_not_requested
        )
        assert self.key_update is not None
        self.key_update.send(request, timeout=timeout)

    @property
    def send_key_generation(self) -> int:
        """How many times our sending key changed (KeyUpdate or EKU)."""
        return self._records.write_generation

    # ------------------------------------------------------------ the hosts
    # What the protocols below see of the connection: the engines'
    # handshake.host.HandshakeHost, EKU's handshake.eku.EKUHost and KeyUpdate's
    # handshake.key_update.KeyUpdateHost (structural protocols: mypy checks them).

    def queue_handshake(self, message: bytes) -> None:
        """Queue one encoded handshake message (with header) under the current write key."""
        self._pending_handshake += message

    def compatibility_ccs(self) -> None:
        """The dummy change_cipher_spec of middlebox compatibility mode (RFC 9846 App. D.4)."""
        self._flush_handshake()
        self._records.send_change_cipher_spec()

    def set_write_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        self._flush_handshake()
        self._records.set_write_secret(suite, secret)

    def set_read_secret(self, suite: SuiteInfo, secret: bytes) -> None:
        self._check_key_change()
        self._records.set_read_secret(suite, secret)

    def _check_key_change(self) -> None:
        # RFC 9846 §5.1: handshake messages must not span a change of keys,
        # and the message that announces the change ends its record.
        if self._reassembler.has_partial() or self._reassembler.has_complete():
            raise RemoteProtocolError(
                "handshake message spans a key change", AlertDescription.unexpected_message
            )

    def handshake_done(self) -> None:
        # The application keys start the generations KeyUpdate and EKU count.
        self._records.reset_generations()
        super().handshake_done()

    # EKU hooks (handshake.eku.EKUHost): switch one direction to a new
    # generation's traffic secret.  TLS confirms a send switch at once.

    def request_send_switch(self, secret: bytes) -> None:
        assert self.eku is not None
        self._flush_handshake()
        self._records.next_write_generation(secret)
        self.eku.send_switch_done()

    def switch_receive(self, secret: bytes) -> None:
        self._check_key_change()
        self._records.next_read_generation(secret)

    def post_handshake_auth_done(self) -> None:
        """Client authentication finished: answer an update it held back (draft-13 §8.3),
        send a CertificateUpdate that waited for it (docs/certificate-update.md)."""
        self._certificate_update_resume(client_authenticated=True)
        self.handle_timer()

    def send_ack(self) -> None:
        """EKUHost, DTLS only (RFC 9147 §7 ACK): TCP acknowledges; never called over TLS."""

    def acknowledged_implicitly(self, message: bytes) -> None:
        """EKUHost, DTLS only (RFC 9147 §7.2): TLS retransmits nothing; never called over TLS."""

    def set_peer_record_size_limit(self, limit: int) -> None:
        """The peer's record_size_limit; RFC 8449 §4 binds both ends once it is negotiated."""
        self._records.set_peer_record_size_limit(limit)

    @property
    def peer_record_size_limit(self) -> int:
        """Largest TLSInnerPlaintext the peer accepts (RFC 8449)."""
        return self._records.peer_record_size_limit

    def enforce_record_size_limit(self) -> None:
        """The peer has agreed to our record_size_limit: hold it to it."""
        self._records.receive_record_size_limit = self.configuration.record_size_limit

    @property
    def read_protection(self) -> RecordProtection | None:
        return self._records.read

    @property
    def current_read_secret(self) -> bytes:
        return self._records.read_secret

    @property
    def current_write_secret(self) -> bytes:
        return self._records.write_secret

    # KeyUpdate's host (handshake.key_update.KeyUpdateHost)

    @property
    def read_generation(self) -> int:
        return self._records.read_generation

    @property
    def write_generation(self) -> int:
        return self._records.write_generation

    @property
    def handshake_data_pending(self) -> bool:
        return self._reassembler.has_partial() or self._reassembler.has_complete()

    def advance_write_secret(self, secret: bytes) -> None:
        self._flush_handshake()
        self._records.next_write_generation(secret)

    def advance_read_secret(self, secret: bytes) -> None:
        self._check_key_change()
        self._records.next_read_generation(secret)

    # -------------------------------------------------------------- internals

    def _process_records(self) -> None:
        records, handshake = self._records, self.handshake
        contents: list[bytes] = []
        while self.state is not ConnectionState.CLOSED:
            record = None
            if (
                handshake.application_data_allowed and not self._close_received
                and not self._reassembler.has_partial()
            ):
                if self._sink is not None:
                    # receive_data_into: a run decrypted into the scratch
                    # buffer, handed to the sink (_deliver_run) as one piece.
                    record = records.open_application_data_into(self._scratch, self._deliver_run)
                else:
                    # The hot path: a run of application data records on an
                    # established connection, one ApplicationData event each.
                    try:
                        record = records.open_application_data(contents)
                    finally:  # those before a record that failed are delivered
                        if contents:
                            self._empty_records = 0
                            self._events.extend(map(ApplicationData, contents))
                            contents.clear()
            if record is None:
                record = records.next_record()
                if record is None:
                    return
            content_type, content = record
            if (
                content_type == _APPLICATION_DATA and content and handshake.application_data_allowed
                and not self._close_received and not self._reassembler.has_partial()
            ):
                # The hot path: application data on an established connection.
                self._deliver(content)
            else:
                self._handle_content(content_type, content)

    def _handle_content(self, content_type: int, content: bytes) -> None:
        if not content and content_type != ContentType.APPLICATION_DATA:
            # RFC 9846 §5.1: zero-length handshake and alert fragments are forbidden.
            raise RemoteProtocolError(
                f"empty record of type {content_type}", AlertDescription.unexpected_message
            )
        if content_type != ContentType.HANDSHAKE and self._reassembler.has_partial():
            raise RemoteProtocolError(
                "record interleaved with a fragmented handshake message",
                AlertDescription.unexpected_message,
            )
        if content_type == ContentType.HANDSHAKE:
            if not self.handshake.complete:
                self._handshake_records += 1
                if self._handshake_records > self.configuration.max_handshake_records:
                    raise RemoteProtocolError(
                        "too many handshake records before Finished", AlertDescription.unexpected_message
                    )
            self._handle_handshake_fragment(content)
        elif content_type == ContentType.ALERT:
            self._handle_alert(content)
        elif content_type == ContentType.APPLICATION_DATA:
            self._handle_application_data(content)
        else:
            raise RemoteProtocolError(
                f"unknown record content type {content_type}", AlertDescription.unexpected_message
            )

    def _handle_handshake_fragment(self, content: bytes) -> None:
        self._reassembler.feed(content)
        while self.state is not ConnectionState.CLOSED:
            message = self._reassembler.pop()
            if message is None:
                return
            msg_type, body, raw = message
            # After the handshake each post-handshake protocol handles its own
            # messages; the rest (NewSessionTicket, anything unexpected) go to the engine.
            if self.state is not ConnectionState.CONNECTED or not self.post_handshake.dispatch(msg_type, body, raw):
                self.handshake.handle(msg_type, body, raw)

    def _handle_alert(self, content: bytes) -> None:
        if len(content) != 2:
            raise RemoteProtocolError("alert record is not two bytes", AlertDescription.decode_error)
        self._alert_received(content[0], content[1])

    def _handle_application_data(self, content: bytes) -> None:
        if not self.handshake.application_data_allowed:
            raise RemoteProtocolError(
                "application data before the handshake completed", AlertDescription.unexpected_message
            )
        if self._close_received:
            return  # RFC 9846 §6.1: data after a closure alert is ignored
        if not content:
            self._empty_records += 1
            if self._empty_records > self.configuration.max_empty_records:
                raise RemoteProtocolError("too many empty records", AlertDescription.unexpected_message)
            return
        self._deliver(content)

    def _deliver(self, content: bytes) -> None:
        """Application data from one record: an ApplicationData event, or
        receive_data_into's sink (in order with the runs it gets)."""
        self._empty_records = 0
        if self._sink is None:
            self._events.append(ApplicationData(content))
        else:
            self._sink(memoryview(content))

    def _deliver_run(self, contents: memoryview) -> None:
        self._empty_records = 0
        assert self._sink is not None
        self._sink(contents)

    # The core's hand-overs (connection_core.ConnectionCore).

    def _send_alert(self, description: AlertDescription) -> None:
        self._records.send_alert(alert_level(description), description)

    def _flush(self) -> None:
        self._flush_handshake()

    def _flush_handshake(self) -> None:
        if self._pending_handshake:
            data = bytes(self._pending_handshake)
            self._pending_handshake.clear()
            self._records.send(ContentType.HANDSHAKE, data)

    def _drop_unsent_handshake(self) -> None:
        self._pending_handshake.clear()

    def _drop_keys(self) -> None:
        self._records.drop_keys()
