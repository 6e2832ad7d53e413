"""Two sans-I/O MLS-TLS (or TLS) connections wired back to back, in memory."""

from __future__ import annotations

from longtls.connection import Connection
from longtls.errors import ProtocolError
from longtls.mls_connection import MLSConnection


def pump(a: MLSConnection | Connection, b: MLSConnection | Connection) -> None:
    """Deliver everything both sides queue until neither has anything to send.

    A ProtocolError of the receiving side is kept until the alert it queued
    has been delivered too, then raised."""
    moved = True
    failure: ProtocolError | None = None
    while moved:
        moved = False
        for x, y in ((a, b), (b, a)):
            data = x.data_to_send()
            if data and not y.is_closed:
                moved = True
                try:
                    y.receive_data(data)
                except ProtocolError as exc:
                    failure = failure or exc
    if failure is not None:
        raise failure
