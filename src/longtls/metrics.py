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
- ``longtls_handshake_failures_total{alert="...",sent_by="local|peer|none"}``:
  each failed handshake once, by the alert that ended it (its AlertDescription
  name, e.g. ``bad_certificate``, ``unknown_ca``) and who sent that alert.
  Three failures no alert names get their own ``alert`` values: ``timeout``
  (the handshake timeout; we sent user_canceled, RFC 9846 §6.1), ``not_tls``
  (the peer spoke something else, e.g. plain HTTP) and ``connection_lost``
  (the transport ended with no alert; ``sent_by="none"``).
- ``longtls_handshake_duration_seconds`` (histogram): from the connection's
  start (TCP connected or accepted, first datagram) to HandshakeComplete,
  successful handshakes only.
- ``longtls_key_update_duration_seconds`` (histogram): extended key updates
  (and MLS epoch changes) from the request to completion, as the
  KeyUpdateCompleted event reports it.  Standard KeyUpdates (RFC 9846 §4.6.3)
  are one message with no answer to time, so they are not in it.
- ``longtls_key_updates_total{initiator="local|peer",result="completed|failed"}``:
  extended key updates, or standard KeyUpdates where EKU was not negotiated.
  "failed" is a draft-05 decline or a connection that ended mid-update.
- ``longtls_bytes_total{direction="in|out"}``: application data bytes
  (plaintext) received from and sent to TLS peers.
- ``longtls_oldest_key_age_seconds`` (gauge): age of the oldest traffic key
  still in use on an open connection: what a rekey policy is meant to bound.
  With no connection open there is no such key, and the family has no
  sample (only its HELP and TYPE lines): the Prometheus convention for "no
  value" is an absent series (``absent()`` in PromQL), not 0, which would
  read as a fresh key, nor NaN, which makes every threshold alert silently
  false.  ``Metrics.oldest_key_age()`` still returns 0.0 then.
- ``longtls_certificate_updates_total{direction="sent|received"}``:
  Certificate Updates (draft-rosomakho-tls-cert-update-02) that went out, and
  that the peer sent and we accepted.
- ``longtls_certificate_reloads_total{result="applied|refused"}``: renewed
  certificate files a program (``longtls serve``/``tunnel``) took into use, or
  refused because they break an identity rule (``certificate_reloaded``).
- ``longtls_certificate_not_after_timestamp_seconds{subject="...",serial="..."}``
  (gauge): the notAfter of each certificate in the chain we present, as Unix
  seconds; ``subject`` in RFC 4514 form, ``serial`` in upper-case hex (as
  ``openssl x509 -serial`` prints it).  Read from ``Metrics.certificates``
  at each scrape, so a reloaded or renewed certificate shows at once.  With
  several certificates chosen by server_name (docs/sni.md),
  ``Metrics.credential_certificates`` instead, and each sample has a
  ``credential="<certificate file>"`` label too.
- ``longtls_proxy_header_errors_total{reason="missing|malformed|closed|timeout"}``:
  connections a listener with ``--accept-proxy`` closed before TLS because
  their PROXY protocol v2 header was missing (the first bytes are not its
  signature), malformed, cut short by the peer's close, or not complete in
  time (docs/proxy-protocol.md).
- ``longtls_build_info{version="...",python="...",cryptography="..."}``
  (gauge, always 1): the versions in use, the usual ``_info`` pattern.

``serve_metrics`` also answers ``GET /healthz`` with 200 and ``ok``: the
process is up and its event loop answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import platform
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import cryptography
from cryptography import x509

from . import __version__
from .errors import AlertReceived, HandshakeTimeoutError, NotTLSError, TLSError
from .events import (
    CertificateUpdated,
    ConnectionClosed,
    Direction,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
    KeyUpdateRejected,
    KeyUpdateStarted,
    Side,
)

__all__ = ["ConnectionMetrics", "Histogram", "Metrics", "failure_label", "serve_metrics"]

logger = logging.getLogger("longtls.metrics")

_MAX_REQUEST_HEAD = 8192
_REQUEST_TIMEOUT = 10.0

#: Upper bounds (seconds) of the duration histograms' buckets.  A handshake
#: on loopback takes a few milliseconds, across a continent a few hundred,
#: and one that waits on a slow client certificate check seconds; EKU is one
#: round trip plus a key exchange, so it starts lower.
HANDSHAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KEY_UPDATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    # Exposition format 0.0.4: in label values, backslash, double quote and
    # line feed are escaped (an RFC 4514 subject can hold the first two).
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return f"{{{inner}}}" if inner else ""


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def failure_label(error: BaseException | None) -> tuple[str, str]:
    """``(alert, sent_by)`` for a failed handshake (see the module docstring)."""
    if error is None:
        return "connection_lost", "none"
    # Before TLSError: both are TLSErrors whose ``alert`` is not the reason.
    if isinstance(error, (HandshakeTimeoutError, TimeoutError)):
        return "timeout", "local"
    if isinstance(error, NotTLSError):
        return "not_tls", "local"
    if isinstance(error, AlertReceived):
        return error.alert.name, "peer"
    if isinstance(error, TLSError):
        return error.alert.name, "local"
    return "connection_lost", "none"  # OSError, ConnectionLostError: no alert


class Histogram:
    """A Prometheus histogram: cumulative buckets, sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)  # per bucket, not yet cumulative
        self.sum = 0.0
        self.count = 0

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} sum={self.sum:.3f}>"

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def samples(self, name: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        total = 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            total += n
            out.append((f'{name}_bucket{{le="{_number(float(bound))}"}}', str(total)))
        out.append((f'{name}_bucket{{le="+Inf"}}', str(self.count)))
        out.append((f"{name}_sum", repr(self.sum)))
        out.append((f"{name}_count", str(self.count)))
        return out


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
        #: Connections refused for their PROXY protocol header, by reason.
        self.proxy_header_errors = {"missing": 0, "malformed": 0, "closed": 0, "timeout": 0}
        #: (alert, sent_by) -> failed handshakes; see ``failure_label``.
        self.handshake_failures: dict[tuple[str, str], int] = {}
        self.handshake_duration = Histogram(HANDSHAKE_BUCKETS)
        self.key_update_duration = Histogram(KEY_UPDATE_BUCKETS)
        #: The certificates we present, read at each scrape (a program sets
        #: it to follow its current configuration across reloads).
        self.certificates: Callable[[], Sequence[x509.Certificate]] = tuple
        #: Several certificates chosen by server_name (docs/sni.md): (label,
        #: chain) of each, read at each scrape instead of ``certificates``;
        #: every sample gets ``credential="<label>"`` (its certificate file).
        #: An empty answer: ``certificates``, without the label.
        self.credential_certificates: Callable[[], Sequence[tuple[str, Sequence[x509.Certificate]]]] | None = None
        self._open: set[ConnectionMetrics] = set()

    def __repr__(self) -> str:
        return f"<Metrics open={len(self._open)} handshakes={self.handshakes}>"

    def connection(self, *, is_client: bool) -> ConnectionMetrics:
        """A recorder for one new connection (called by longtls.aio)."""
        return ConnectionMetrics(self, is_client)

    def certificate_reloaded(self, *, applied: bool) -> None:
        """A renewed certificate file was taken into use (or refused)."""
        self.certificate_reloads["applied" if applied else "refused"] += 1

    def proxy_header_failed(self, reason: str) -> None:
        """A connection closed for its PROXY protocol header (longtls.aio.proxy_protocol)."""
        self.proxy_header_errors[reason] = self.proxy_header_errors.get(reason, 0) + 1

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def oldest_key_age(self) -> float:
        now = self.clock()
        return max((now - c.oldest_key_since for c in self._open), default=0.0)

    def _not_after_samples(self) -> list[tuple[str, float]]:
        """longtls_certificate_not_after_timestamp_seconds: one sample per
        certificate, with a ``credential`` label when there are several (a
        CA shared by two chains is then two series, one per credential)."""
        labelled: Sequence[tuple[str | None, Sequence[x509.Certificate]]] = (
            self.credential_certificates() if self.credential_certificates is not None else ()
        ) or [(None, self.certificates())]
        rows: dict[str, float] = {}
        for credential, chain in labelled:
            for cert in chain:
                pairs = [("subject", cert.subject.rfc4514_string()), ("serial", f"{cert.serial_number:X}")]
                if credential is not None:
                    pairs.append(("credential", credential))
                rows.setdefault(_labels(pairs), cert.not_valid_after_utc.timestamp())
        return list(rows.items())

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {_number(value)}")

        def samples(name: str, kind: str, help_text: str, rows: list[tuple[str, str]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{key} {value}" for key, value in rows)

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
            "longtls_handshake_failures_total", "counter",
            "Failed TLS handshakes by the alert that ended them and who sent it.",
            [
                (_labels([("alert", alert), ("sent_by", by)]), n)
                for (alert, by), n in sorted(self.handshake_failures.items())
            ],
        )
        samples(
            "longtls_handshake_duration_seconds", "histogram",
            "Time from connection start to a completed TLS handshake.",
            self.handshake_duration.samples("longtls_handshake_duration_seconds"),
        )
        samples(
            "longtls_key_update_duration_seconds", "histogram",
            "Time from an extended key update's request to its completion.",
            self.key_update_duration.samples("longtls_key_update_duration_seconds"),
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
            # No sample with no connection open: see the module docstring.
            [("", round(self.oldest_key_age(), 3))] if self._open else [],
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
        family(
            "longtls_proxy_header_errors_total", "counter",
            "Connections closed for a missing, malformed, incomplete (closed) or late PROXY header.",
            [(f'{{reason="{r}"}}', n) for r, n in self.proxy_header_errors.items()],
        )
        family(
            "longtls_certificate_not_after_timestamp_seconds", "gauge",
            "notAfter of each certificate we present, in Unix seconds.",
            self._not_after_samples(),
        )
        family(
            "longtls_build_info", "gauge",
            "Versions of longtls, Python and pyca/cryptography in use (value always 1).",
            [(_BUILD_LABELS, 1)],
        )
        return "\n".join(lines) + "\n"


_BUILD_LABELS = _labels([
    ("version", __version__),
    ("python", platform.python_version()),
    ("cryptography", cryptography.__version__),
])


class ConnectionMetrics:
    """What one connection reports to its Metrics."""

    __slots__ = (
        "_metrics", "_local", "_open", "_pending", "_send_since", "_receive_since", "_done", "_started",
    )

    def __init__(self, metrics: Metrics, is_client: bool) -> None:
        self._metrics = metrics
        self._local = Side.client if is_client else Side.server
        self._open = False
        self._done = False
        self._pending: str | None = None  # initiator of the extended key update under way
        now = metrics.clock()
        self._started = now  # the handshake duration counts from here
        self._send_since = now
        self._receive_since = now

    @property
    def oldest_key_since(self) -> float:
        return min(self._send_since, self._receive_since)

    def _initiator(self, side: Side) -> str:
        """The ``initiator`` label: whether ``side`` is this end or its peer."""
        return "local" if side is self._local else "peer"

    def _count_update(self, initiator: str, result: str) -> None:
        self._metrics.key_updates[(initiator, result)] += 1

    def sent(self, n: int) -> None:
        self._metrics.bytes["out"] += n

    def received(self, n: int) -> None:
        self._metrics.bytes["in"] += n

    def handshake_failed(self, error: BaseException | None = None) -> None:
        """The handshake failed with ``error`` (None: the transport just ended)."""
        if not self._open and not self._done:
            self._count_failure(failure_label(error))
            self._done = True

    def _count_failure(self, key: tuple[str, str]) -> None:
        self._metrics.handshakes["failed"] += 1
        failures = self._metrics.handshake_failures
        failures[key] = failures.get(key, 0) + 1

    def event(self, event: Event) -> None:
        now = self._metrics.clock()
        if isinstance(event, HandshakeComplete):
            if self._done:
                return
            self._metrics.handshakes["ok"] += 1
            self._metrics.handshake_duration.observe(max(0.0, now - self._started))
            self._open = True
            self._metrics._open.add(self)
            self._send_since = self._receive_since = now
        elif isinstance(event, KeyUpdateStarted):
            # A crossing request that wins replaces ours: the latest start is the one under way.
            self._pending = self._initiator(event.initiator)
        elif isinstance(event, KeyUpdateCompleted):
            self._pending = None
            self._count_update(self._initiator(event.initiator), "completed")
            self._metrics.key_update_duration.observe(max(0.0, event.seconds))
            self._send_since = self._receive_since = now
        elif isinstance(event, KeyUpdateRejected):
            self._pending = None
            self._count_update("local", "failed")
        elif isinstance(event, KeyUpdated):
            # Standard KeyUpdate: each direction on its own.  Our send update
            # that nobody asked for, or a receive update the peer wants
            # answered, starts an exchange; the answers are not counted again.
            if event.direction is Direction.send:
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
            if event.alert is not None and not self._open and not self._done:
                # The core reports the fatal alert, sent or received, before
                # the asyncio layer sees the exception it raises: label by it.
                self._count_failure((event.alert.name, "peer" if event.by_peer else "local"))
                self._done = True
            self.closed()

    def closed(self) -> None:
        """The connection is over (idempotent)."""
        if self._pending is not None:
            self._count_update(self._pending, "failed")
            self._pending = None
        if not self._open and not self._done:
            self._count_failure(failure_label(None))
        self._done = True
        self._open = False
        self._metrics._open.discard(self)


async def serve_metrics(
    metrics: Metrics | Callable[[], Awaitable[str]], host: str, port: int,
    *, healthy: Callable[[], bool] | None = None,
) -> asyncio.Server:
    """An HTTP/1.0 endpoint: ``GET /metrics`` answers ``metrics.render()``,
    ``GET /healthz`` answers ``ok``.

    ``metrics`` may instead be a coroutine function returning the exposition
    (a ``--workers`` supervisor gathers its workers'); ``healthy``, when
    given, makes ``/healthz`` answer 503 while it returns False (no worker
    running: docs/scaling.md).

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
            elif path == b"/healthz" and healthy is not None and not healthy():
                status, body = "503 Service Unavailable", "unavailable\n"
            elif path == b"/healthz":
                status, body = "200 OK", "ok\n"  # liveness: the loop answers
            elif path != b"/metrics":
                status, body = "404 Not Found", "metrics are at /metrics\n"
            else:
                status, body = "200 OK", metrics.render() if isinstance(metrics, Metrics) else await metrics()
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
