"""Counters for many TLS connections, served in the Prometheus text format.

    metrics = Metrics()
    server = await longtls.aio.start_server(
        handler, host, port, config, longtls.aio.StreamOptions(metrics=metrics)
    )
    http = await serve_metrics(metrics, "127.0.0.1", 9400)   # GET /metrics

The asyncio layer reports each connection's handshake result, application
bytes and key updates; ``render()`` writes them out.  Nothing here touches
key material: only counts, sizes and times.

Families (exposition format 0.0.4):

- ``longtls_open_connections`` (gauge): handshake complete, not yet closed.
- ``longtls_handshakes_total{result="ok|failed"}``.
- ``longtls_key_updates_total{initiator="local|peer",result="completed|failed"}``:
  extended key updates, or standard KeyUpdates where EKU was not negotiated.
  "failed" is a draft-05 decline or a connection that ended mid-update.
- ``longtls_bytes_total{direction="in|out"}``: application data bytes
  (plaintext) received from and sent to TLS peers.
- ``longtls_oldest_key_age_seconds`` (gauge): age of the oldest traffic key
  still in use on an open connection (0 with none open): what a rekey
  policy is meant to bound.
- ``longtls_certificate_updates_total{direction="sent|received"}``:
  Certificate Updates (draft-rosomakho-tls-cert-update-02) that went out, and
  that the peer sent and we accepted.
- ``longtls_certificate_reloads_total{result="applied|refused"}``: renewed
  certificate files a program (``longtls serve``/``tunnel``) took into use, or
  refused because they break an identity rule (``certificate_reloaded``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .events import (
    CertificateUpdated,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
    KeyUpdateRejected,
    KeyUpdateStarted,
)

__all__ = ["ConnectionMetrics", "Metrics", "serve_metrics"]

logger = logging.getLogger("longtls.metrics")

_MAX_REQUEST_HEAD = 8192
_REQUEST_TIMEOUT = 10.0


class Metrics:
    """Totals over every connection it was given, plus the open ones' state."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.handshakes = {"ok": 0, "failed": 0}
        self.key_updates = {
            (initiator, result): 0
            for initiator in ("local", "peer")
            for result in ("completed", "failed")
        }
        self.bytes = {"in": 0, "out": 0}
        self.certificate_updates = {"sent": 0, "received": 0}
        self.certificate_reloads = {"applied": 0, "refused": 0}
        self._open: set[ConnectionMetrics] = set()

    def __repr__(self) -> str:
        return f"<Metrics open={len(self._open)} handshakes={self.handshakes}>"

    def connection(self, *, is_client: bool) -> ConnectionMetrics:
        """A recorder for one new connection (called by longtls.aio)."""
        return ConnectionMetrics(self, is_client)

    def certificate_reloaded(self, *, applied: bool) -> None:
        """A renewed certificate file was taken into use (or refused)."""
        self.certificate_reloads["applied" if applied else "refused"] += 1

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def oldest_key_age(self) -> float:
        now = self.clock()
        return max((now - c.oldest_key_since for c in self._open), default=0.0)

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                text = repr(float(value)) if isinstance(value, float) else str(value)
                lines.append(f"{name}{labels} {text}")

        family(
            "longtls_open_connections", "gauge",
            "TLS connections with a completed handshake, not yet closed.",
            [("", self.open_connections)],
        )
        family(
            "longtls_handshakes_total", "counter", "TLS handshakes by result.",
            [(f'{{result="{r}"}}', n) for r, n in self.handshakes.items()],
        )
        family(
            "longtls_key_updates_total", "counter",
            "Key updates (extended, or standard without EKU) by initiator and result.",
            [
                (f'{{initiator="{i}",result="{r}"}}', n)
                for (i, r), n in self.key_updates.items()
            ],
        )
        family(
            "longtls_bytes_total", "counter",
            "Application data bytes received from (in) and sent to (out) TLS peers.",
            [(f'{{direction="{d}"}}', n) for d, n in self.bytes.items()],
        )
        family(
            "longtls_oldest_key_age_seconds", "gauge",
            "Age of the oldest traffic key in use across open connections.",
            [("", round(self.oldest_key_age(), 3))],
        )
        family(
            "longtls_certificate_updates_total", "counter",
            "Certificate Updates sent to and accepted from TLS peers.",
            [(f'{{direction="{d}"}}', n) for d, n in self.certificate_updates.items()],
        )
        family(
            "longtls_certificate_reloads_total", "counter",
            "Renewed certificate files taken into use (applied) or refused (identity rules).",
            [(f'{{result="{r}"}}', n) for r, n in self.certificate_reloads.items()],
        )
        return "\n".join(lines) + "\n"


class ConnectionMetrics:
    """What one connection reports to its Metrics."""

    __slots__ = (
        "_metrics", "_local", "_open", "_pending", "_send_since", "_receive_since", "_done",
    )

    def __init__(self, metrics: Metrics, is_client: bool) -> None:
        self._metrics = metrics
        self._local = "client" if is_client else "server"
        self._open = False
        self._done = False
        self._pending: str | None = None  # initiator of the extended key update under way
        now = metrics.clock()
        self._send_since = now
        self._receive_since = now

    @property
    def oldest_key_since(self) -> float:
        return min(self._send_since, self._receive_since)

    def _initiator(self, side: str) -> str:
        return "local" if side == self._local else "peer"

    def _count_update(self, initiator: str, result: str) -> None:
        self._metrics.key_updates[(initiator, result)] += 1

    def sent(self, n: int) -> None:
        self._metrics.bytes["out"] += n

    def received(self, n: int) -> None:
        self._metrics.bytes["in"] += n

    def handshake_failed(self) -> None:
        if not self._open and not self._done:
            self._metrics.handshakes["failed"] += 1
            self._done = True

    def event(self, event: Event) -> None:
        now = self._metrics.clock()
        if isinstance(event, HandshakeComplete):
            if self._done:
                return
            self._metrics.handshakes["ok"] += 1
            self._open = True
            self._metrics._open.add(self)
            self._send_since = self._receive_since = now
        elif isinstance(event, KeyUpdateStarted):
            # A crossing request that wins replaces ours: the latest start is the one under way.
            self._pending = self._initiator(event.initiator)
        elif isinstance(event, KeyUpdateCompleted):
            self._pending = None
            self._count_update(self._initiator(event.initiator), "completed")
            self._send_since = self._receive_since = now
        elif isinstance(event, KeyUpdateRejected):
            self._pending = None
            self._count_update("local", "failed")
        elif isinstance(event, KeyUpdated):
            # Standard KeyUpdate: each direction on its own.  Our send update
            # that nobody asked for, or a receive update the peer wants
            # answered, starts an exchange; the answers are not counted again.
            if event.direction == "send":
                self._send_since = now
                if not event.requested_by_peer:
                    self._count_update("local", "completed")
            else:
                self._receive_since = now
                if event.requested_by_peer:
                    self._count_update("peer", "completed")
        elif isinstance(event, CertificateUpdated):
            self._metrics.certificate_updates[event.direction.value] += 1
        elif isinstance(event, ConnectionClosed):
            self.closed()

    def closed(self) -> None:
        """The connection is over (idempotent)."""
        if self._pending is not None:
            self._count_update(self._pending, "failed")
            self._pending = None
        if not self._open and not self._done:
            self._metrics.handshakes["failed"] += 1
        self._done = True
        self._open = False
        self._metrics._open.discard(self)


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """An HTTP/1.0 endpoint: ``GET /metrics`` answers ``metrics.render()``.

    Deliberately tiny (no keep-alive, no TLS): a scrape target on a trusted
    network or loopback.  Raises OSError if the address cannot be bound.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
            method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, body = "405 Method Not Allowed", "GET /metrics only\n"
            elif path != b"/metrics":
                status, body = "404 Not Found", "metrics are at /metrics\n"
            else:
                status, body = "200 OK", metrics.render()
            payload = body.encode()
            writer.write(
                f"HTTP/1.0 {status}\r\n"
                f"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(payload)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a scraper that went away or sent junk: nothing to answer
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST_HEAD)
