"""What every record layer offers the connection above it.

A record layer turns bytes from the network into (content type, content)
pairs and back, under the keys the connection installs.  TLS
(``record.tls_layer.TLSRecordLayer``) is the first; a DTLS 1.3 record layer
(epochs, record numbers, ACKs, RFC 9147) and an MLS channel (record
protection keyed from outside, no handshake) will offer the same members, so
the connection and the handshake engines stay the same.

``ReadPolicy`` is what a record layer asks its connection while reading: the
few handshake facts that decide whether a record is acceptable (RFC 9846 §5).
The handshake engines implement it; the record layer never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..constants import AlertDescription, AlertLevel, ContentType
from ..crypto.suites import SuiteInfo

#: Bytes of padding to add to a record of (content type, content length) (RFC 9846 §5.4).
PaddingPolicy = Callable[[ContentType, int], int]


class ReadPolicy(Protocol):
    """The handshake facts a record layer needs to judge a record."""

    #: Both Finished messages are through.
    complete: bool
    #: Protected application data may be delivered (RFC 9846 §2: after the handshake).
    application_data_allowed: bool

    @property
    def change_cipher_spec_allowed(self) -> bool:
        """A compatibility change_cipher_spec may arrive now (RFC 9846 §5)."""
        ...

    def skip_early_data_record(self, length: int) -> bool:
        """Drop an application_data record that arrived before we have a key to open it."""
        ...

    def skip_undecryptable(self, length: int, records_opened: int) -> bool:
        """Drop a record that failed to open after ``records_opened`` records did (rejected 0-RTT)."""
        ...


class RecordLayer(Protocol):
    """Records in, records out, under keys installed from above."""

    #: How many times each direction's key changed since the handshake (KeyUpdate, EKU).
    read_generation: int
    write_generation: int

    def feed(self, data: bytes) -> None:
        """Bytes (or a datagram) from the network."""

    def next_record(self) -> tuple[int, bytes] | None:
        """The next record's (content type, content), opened and checked; None if none is complete."""
        ...

    def send(self, content_type: ContentType, data: bytes) -> None:
        """Frame (and protect, once a write key is installed) ``data`` in as many records as it takes."""

    def send_alert(self, level: AlertLevel, description: AlertDescription) -> None: ...

    def data_to_send(self) -> bytes:
        """What to write to the network (empties the buffer)."""
        ...

    def set_read_secret(self, suite: SuiteInfo, secret: bytes) -> None: ...

    def set_write_secret(self, suite: SuiteInfo, secret: bytes) -> None: ...

    def next_read_generation(self, secret: bytes) -> None:
        """Open the peer's records under its next generation's traffic secret."""

    def next_write_generation(self, secret: bytes) -> None:
        """Protect our records under our next generation's traffic secret."""

    def drop_keys(self) -> None:
        """The connection is closed: forget the read key and both traffic secrets."""
