"""The live demo: longtls servers and clients on loopback, rekeying as they stream.

Two long-lived links run side by side for the same duration (``DemoOptions.links``
chooses one or both):

- the EKU link: TLS 1.3 whose traffic keys are renewed by Extended Key
  Update, a fresh key exchange (post-quantum hybrid by default) inside the
  live connection.  Half-way through, the server's certificate is renewed
  (same CA, same names, a new key and serial number) and handed to the
  client on the live connection as a Certificate Update
  (draft-rosomakho-tls-cert-update-02), while the data keeps flowing; the
  client shows the new certificate it received.
- the MLS link: MLS-TLS (docs/mls-tls.md), a two-party MLS group (RFC 9420)
  keying the TLS 1.3 record layer; each update is an MLS commit with a fresh
  path secret (the post-quantum suite 0xF0A1 by default) and moves the
  group to a new epoch.

On both, a throwaway CA made in memory certifies the server, whose
certificate the client verifies; both ends stream random data at each other
as fast as the event loop allows, hashing what they send and what they
receive, while an update runs every ``interval`` seconds, started by the
client and the server in turn.  At the end the updates stop, both streams
close with close_notify and the SHA-256 of every byte sent is compared with
the SHA-256 of every byte received, each way, on each link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TextIO

from . import aio, certs
from .config import Configuration
from .constants import EKUProfileName, NamedGroup
from .credentials import describe_certificate
from .crypto.certificates import TrustStore
from .errors import TLSError
from .events import CertificateUpdated, CertificateUpdateDirection, KeyUpdateCompleted

__all__ = ["DemoOptions", "run_demo"]

HOST = "127.0.0.1"
SERVER_NAME = "localhost"
_CHUNK = 65536
_TTY_REFRESH = 0.25  # seconds between redraws of the live table
_FINISH_TIMEOUT = 30.0  # seconds to let the last bytes and close_notify arrive

LinkKind = Literal["eku", "mls"]
#: The default: an EKU-keyed link next to an MLS-keyed one.
LINKS: tuple[LinkKind, ...] = ("eku", "mls")
#: The MLS link's default RFC 9420 cipher suite: ML-KEM-768 + X25519 (X-Wing),
#: the post-quantum counterpart of the EKU link's X25519MLKEM768.
DEFAULT_MLS_SUITE = 0xF0A1

SecureWriter = aio.TLSWriter | aio.MLSWriter


@dataclass
class DemoOptions:
    duration: float = 10.0
    interval: float = 1.0  # seconds between key updates (and between plain status lines)
    group: NamedGroup = NamedGroup.X25519MLKEM768  # the EKU link's
    eku_profile: EKUProfileName = EKUProfileName.draft_13
    keylog: str | None = None
    #: Renew the EKU link's server certificate half-way through (Certificate Update).
    renew_certificate: bool = True
    #: Which links run, side by side.
    links: tuple[LinkKind, ...] = LINKS
    mls_suite: int = DEFAULT_MLS_SUITE


@dataclass(eq=False)
class Side:
    """One end's stream: what it sent, what it received, which updates it started."""

    name: str  # "client" or "server"
    reader: aio.TLSReader
    writer: SecureWriter
    sent_hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    received_hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    sent: int = 0
    received: int = 0
    initiated: int = 0  # completed updates this side started
    latencies: list[float] = field(default_factory=list)  # seconds, as this side measured them


@dataclass
class Status:
    generation: int = 0  # the EKU link's key generation, the MLS link's epoch
    group: str = "-"
    last_initiator: str = "-"
    last_latency: float | None = None
    errors: list[str] = field(default_factory=list)
    #: Certificates the client received in Certificate Updates.
    received_certificates: list[str] = field(default_factory=list)


@dataclass(eq=False)
class Link:
    """One live connection of the demo: its two ends and what happened on it."""

    kind: LinkKind
    client: Side
    server: Side
    status: Status
    #: The server's Configuration (the EKU link's certificate renewal changes it).
    server_config: Configuration

    @property
    def label(self) -> str:
        return "EKU" if self.kind == "eku" else "MLS"

    @property
    def unit(self) -> str:
        """What one update advances."""
        return "generation" if self.kind == "eku" else "epoch"

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.client, self.server


def _eku_configurations(options: DemoOptions, bundle: certs.Bundle) -> tuple[Configuration, Configuration]:
    groups = (options.group,)
    server = Configuration(
        is_client=False, groups=groups, eku_profiles=(options.eku_profile,),
        # The demo's own client is the only peer and its schedule (--interval)
        # is the pacing: answer every update at once (servers default to 1 s).
        eku_min_interval=0.0,
        certificate_chain=[bundle.server.cert], private_key=bundle.server.key,
    )
    client = Configuration(
        is_client=True, server_name=SERVER_NAME, groups=groups, key_share_groups=groups,
        eku_profiles=(options.eku_profile,), trust_store=TrustStore([bundle.ca.cert]),
    )
    if options.keylog:
        client.set_keylog_file(options.keylog)  # one side is enough: both know every secret
    return client, server


def _mls_configurations(options: DemoOptions, bundle: certs.Bundle) -> tuple[Configuration, Configuration]:
    # MLS suites 1, 3 and 0xF0A1 sign with Ed25519: an Ed25519 server
    # certificate from the same CA, the MLS X.509 credential (RFC 9420 §5.3)
    # the client validates as it would a TLS server's (docs/mls-tls.md §12).
    # The client has a basic credential, which a server without client
    # authentication accepts.
    leaf = certs.make_leaf(bundle.ca, "ed25519", [SERVER_NAME, HOST], days=1)
    suites = (options.mls_suite,)
    server = Configuration(
        is_client=False, mls_cipher_suites=suites, certificate_chain=[leaf.cert], private_key=leaf.key,
    )
    client = Configuration(
        is_client=True, server_name=SERVER_NAME, mls_cipher_suites=suites,
        trust_store=TrustStore([bundle.ca.cert]),
    )
    if options.keylog:
        client.set_keylog_file(options.keylog)  # CLIENT/SERVER_TRAFFIC_SECRET_<epoch> lines
    return client, server


async def _open_link(
    kind: LinkKind, options: DemoOptions, bundle: certs.Bundle, stack: contextlib.AsyncExitStack,
) -> Link:
    """A server on a port of its own and a client connected to it; the server's
    handler stays alive until ``stack`` closes."""
    make = _eku_configurations if kind == "eku" else _mls_configurations
    client_config, server_config = make(options, bundle)
    accepted: asyncio.Future[tuple[aio.TLSReader, SecureWriter]] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def on_client(reader: aio.TLSReader, writer: SecureWriter) -> None:
        if not accepted.done():
            accepted.set_result((reader, writer))
        await done.wait()  # keep the handler alive for the whole demo

    server: asyncio.Server
    if kind == "eku":
        server = await aio.start_server(on_client, HOST, 0, server_config)
    else:
        server = await aio.start_mls_server(on_client, HOST, 0, server_config)
    await stack.enter_async_context(server)
    stack.callback(done.set)  # the handler ends before the server closes
    port = server.sockets[0].getsockname()[1]
    client_reader: aio.TLSReader
    client_writer: SecureWriter
    if kind == "eku":
        client_reader, client_writer = await aio.connect(HOST, port, client_config)
    else:
        client_reader, client_writer = await aio.connect_mls(HOST, port, client_config)
    server_reader, server_writer = await asyncio.wait_for(accepted, 10)
    # Closed before the servers (the stack unwinds in reverse).
    stack.push_async_callback(_close, client_writer, server_writer)
    # The MLS link starts in the Welcome's epoch (1); the EKU link in generation 0.
    status = Status(generation=(client_writer.handshake.epoch or 0) if kind == "mls" else 0)
    return Link(kind, Side("client", client_reader, client_writer), Side("server", server_reader, server_writer),
                status, server_config)


async def _close(*writers: SecureWriter) -> None:
    for writer in writers:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


def _describe_link(link: Link) -> str:
    hs = link.client.writer.handshake
    port = link.client.writer.get_extra_info("peername")[1]
    group = hs.group.name if hs.group else "none"
    if link.kind == "mls":
        return (
            f"MLS link on {HOST}:{port}: MLS-TLS, MLS cipher suite 0x{hs.mls_cipher_suite or 0:04X} "
            f"(KEM {group}), records {hs.cipher_suite.name}, epoch {hs.epoch}, server {hs.peer_subject}; "
            f"each update an MLS commit"
        )
    eku = hs.eku_profile if hs.eku_profile is not None else "NOT negotiated"
    return (
        f"EKU link on {HOST}:{port}: {hs.version} {hs.cipher_suite.name}, group {group}, "
        f"Extended Key Update {eku}"
    )


async def _stream(side: Side, stop: asyncio.Event) -> None:
    """Random chunks until ``stop``, then close_notify (our direction is done)."""
    while not stop.is_set():
        chunk = os.urandom(_CHUNK)
        side.sent_hash.update(chunk)
        side.writer.write(chunk)
        side.sent += len(chunk)
        await side.writer.drain()
        await asyncio.sleep(0)  # drain() only yields when paused: let the other side run
    side.writer.write_eof()


async def _receive(side: Side) -> None:
    while data := await side.reader.read(_CHUNK):
        side.received_hash.update(data)
        side.received += len(data)


async def _watch(side: Side, link: Link, note: Callable[[str], None]) -> None:
    """Record the completed updates this side started, with the latency it
    measured, and the certificates the client received."""
    status = link.status
    async for event in side.writer.events():
        if (
            isinstance(event, CertificateUpdated) and event.direction is CertificateUpdateDirection.received
            and event.certificates
        ):
            described = describe_certificate(event.certificates[0])
            status.received_certificates.append(described)
            note(f"{link.label} link: the {side.name} received the renewed certificate on the live "
                 f"connection: {described}")
        if isinstance(event, KeyUpdateCompleted) and event.initiator == side.name:
            side.initiated += 1
            side.latencies.append(event.seconds)
            if event.generation > status.generation:
                status.generation = event.generation
                status.group = event.group.name
                status.last_initiator = event.initiator
                status.last_latency = event.seconds


async def _schedule_updates(link: Link, options: DemoOptions, stop: asyncio.Event) -> None:
    """One update per interval, client and server in turn, until ``stop``;
    an update under way when ``stop`` is set completes first.

    Half an interval out of step with the status lines, so each line shows
    an update that has just completed.
    """
    turn = 0
    delay = options.interval / 2
    while True:
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return
        except TimeoutError:
            pass
        delay = options.interval
        side = link.sides[turn % 2]
        turn += 1
        try:
            await asyncio.wait_for(side.writer.update_keys(), max(5.0, options.interval * 5))
        except (TLSError, OSError, TimeoutError, aio.KeyUpdateRejectedError) as exc:
            link.status.errors.append(f"key update started by the {side.name} failed: {exc or 'timed out'}")
            return


async def _renew_certificate(
    link: Link, bundle: certs.Bundle, delay: float, note: Callable[[str], None],
) -> None:
    """After ``delay`` seconds: a renewed server certificate from the same CA,
    for new connections (the Configuration) and, as a Certificate Update, for
    the live one (``longtls serve``/``tunnel`` do this when the files change)."""
    await asyncio.sleep(delay)
    renewed = certs.renew(bundle.ca, bundle.server)
    link.server_config.certificate_chain = [renewed.cert]
    link.server_config.private_key = renewed.key
    writer = link.server.writer
    assert isinstance(writer, aio.TLSWriter)
    try:
        went = writer.update_certificate()
    except TLSError as exc:
        link.status.errors.append(f"the certificate update failed: {exc}")
        return
    note(
        f"{link.label} link: the server's certificate was renewed ({describe_certificate(renewed.cert)}): "
        + ("sent to the client" if went else "to be sent when the client asks")
    )


def _rate(nbytes: float) -> str:
    return f"{nbytes / 1e6:7.1f} MB/s"


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


class LiveView:
    """A table redrawn in place on a terminal (one row per link); one plain
    line per link and interval otherwise."""

    COLUMNS = (
        ("link", 4), ("elapsed", 8), ("gen/epoch", 9), ("group", 16), ("last by", 7), ("latency", 9),
        ("client->server", 14), ("server->client", 14), ("verified", 10),
    )

    def __init__(self, out: TextIO, links: list[Link], options: DemoOptions) -> None:
        self.out = out
        self.tty = out.isatty()
        self.links = links
        self.options = options
        self.started = time.monotonic()
        self._last = {id(link): (self.started, 0, 0) for link in links}
        self._drawn = 0

    def note(self, line: str) -> None:
        """A line about something that happened, above the live table."""
        elapsed = f"[{time.monotonic() - self.started:5.1f}s]"
        if self.tty and self._drawn:
            # Clear the table; the next draw puts it back below the line.
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        self.out.write(f"{elapsed} {line}\n")
        self.out.flush()

    def _values(self, link: Link) -> list[str]:
        """This moment's figures; throughput is over the time since the last call."""
        now = time.monotonic()
        then, c2s_before, s2c_before = self._last[id(link)]
        span = max(now - then, 1e-9)
        c2s, s2c = link.server.received, link.client.received
        self._last[id(link)] = (now, c2s, s2c)
        status = link.status
        latency = status.last_latency
        return [
            link.label,
            f"{now - self.started:.1f}s",
            str(status.generation),
            status.group,
            status.last_initiator,
            "-" if latency is None else f"{latency * 1000:.1f} ms",
            _rate((c2s - c2s_before) / span),
            _rate((s2c - s2c_before) / span),
            _size(c2s + s2c),
        ]

    def draw(self) -> None:
        rows = [self._values(link) for link in self.links]
        if self.tty:
            header = "  ".join(f"{name:>{width}}" for name, width in self.COLUMNS)
            lines = [header]
            for values in rows:
                lines.append("  ".join(
                    f"{value:>{width}}" for value, (_, width) in zip(values, self.COLUMNS, strict=True)
                ))
            lines.append("updates initiated: " + "; ".join(
                f"{link.label} client {link.client.initiated}, server {link.server.initiated}"
                for link in self.links
            ))
            # Move back over the previous drawing and clear it, then redraw.
            prefix = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.out.write(prefix + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            for link, values in zip(self.links, rows, strict=True):
                label, elapsed, generation, group, by, latency, c2s, s2c, verified = values
                detail = f" ({by}, {group}, {latency})" if by != "-" else ""
                self.out.write(
                    f"[{elapsed:>6}] {label} {link.unit} {generation}{detail}  client->server {c2s.strip()}  "
                    f"server->client {s2c.strip()}  verified {verified}\n"
                )
        self.out.flush()

    async def run(self, stop: asyncio.Event) -> None:
        period = _TTY_REFRESH if self.tty else self.options.interval
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), period)
            except TimeoutError:
                self.draw()
        if self.tty:
            self.draw()


async def run_demo(options: DemoOptions, out: TextIO, say: Callable[[str], None] | None = None) -> int:
    """Run the demo, printing to ``out``; 0 if every byte arrived intact and every update completed."""

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    say = say or emit
    if not options.links:
        raise ValueError("DemoOptions.links: give at least one link")
    bundle = certs.make_bundle([SERVER_NAME, HOST], "ecdsa-p256", days=1)
    watchers: list[asyncio.Task[None]] = []
    failures: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        links = [await _open_link(kind, options, bundle, stack) for kind in options.links]
        what = " next to ".join(f"an {link.label}-keyed link" for link in links)
        say(
            f"longtls demo: {what}, client and server on {HOST}, an update every {options.interval:g} s "
            f"(client and server in turn) for {options.duration:g} s"
        )
        for link in links:
            say("  " + _describe_link(link))
        renewing = [
            link for link in links
            if link.kind == "eku" and options.renew_certificate and link.client.writer.handshake.certificate_update
        ]
        for link in renewing:
            say(
                f"  {link.label} link: Certificate Update negotiated: the server's certificate is renewed after "
                f"{options.duration / 2:g} s ({describe_certificate(bundle.server.cert)})"
            )
        stop_updates, stop_streams = asyncio.Event(), asyncio.Event()
        view = LiveView(out, links, options)
        sides = [side for link in links for side in link.sides]
        watchers.extend(asyncio.create_task(_watch(side, link, view.note)) for link in links for side in link.sides)
        receivers = [asyncio.create_task(_receive(side)) for side in sides]
        streamers = [asyncio.create_task(_stream(side, stop_streams)) for side in sides]
        schedulers = [asyncio.create_task(_schedule_updates(link, options, stop_updates)) for link in links]
        live = asyncio.create_task(view.run(stop_streams))
        renewals = [
            asyncio.create_task(_renew_certificate(link, bundle, options.duration / 2, view.note))
            for link in renewing
        ]
        tasks = [*streamers, *receivers, *schedulers, live, *renewals]
        try:
            await asyncio.sleep(options.duration)
            # Updates first (one under way completes), then the streams end:
            # a close_notify never crosses an update still in flight.
            stop_updates.set()
            await asyncio.wait_for(asyncio.gather(*schedulers, *renewals), _FINISH_TIMEOUT)
            stop_streams.set()
            await asyncio.wait_for(asyncio.gather(*tasks), _FINISH_TIMEOUT)
            for link in renewing:
                held = link.client.writer.peer_certificates[:1]
                if held != tuple(link.server_config.certificate_chain[:1]):
                    link.status.errors.append("the client does not hold the renewed server certificate")
        except (TLSError, OSError, TimeoutError) as exc:
            failures.append(f"a connection failed: {exc or 'timed out'}")
        finally:
            stop_updates.set()
            stop_streams.set()
            for task in tasks:
                task.cancel()
        # Leaving the stack closes the connections, then the servers.
    for task in watchers:
        task.cancel()
    return _summary(links, say, failures)


def _summary(links: list[Link], say: Callable[[str], None], failures: Sequence[str] = ()) -> int:
    """The closing lines; 0 if every byte arrived intact and nothing failed."""
    say("")
    ok = True
    errors = list(failures)
    for link in links:
        client, server = link.sides
        status = link.status
        prefix = f"{link.label} link: "
        say(f"{prefix}updates initiated by client: {client.initiated}")
        say(f"{prefix}updates initiated by server: {server.initiated}")
        if link.kind == "eku":
            say(f"{prefix}certificate updates received by the client: {len(status.received_certificates)}")
        latencies = [s for side in link.sides for s in side.latencies]
        if latencies:
            what = "key updates" if link.kind == "eku" else "epoch changes (MLS commits)"
            say(
                f"{prefix}{what}: {len(latencies)}, {link.unit} {status.generation}, latency "
                f"min {min(latencies) * 1000:.1f} / avg {sum(latencies) / len(latencies) * 1000:.1f} / "
                f"max {max(latencies) * 1000:.1f} ms"
            )
        for sender, receiver, label in ((client, server, "client -> server"), (server, client, "server -> client")):
            sent, got = sender.sent_hash.hexdigest(), receiver.received_hash.hexdigest()
            match = sent == got and sender.sent == receiver.received
            ok = ok and match
            say(
                f"{prefix}{label}: sent {sender.sent} bytes, received {receiver.received} bytes, "
                f"sha256 {sent[:16]}... {'=' if sent == got else '!='} {got[:16]}...: "
                f"{'intact' if match else 'MISMATCH'}"
            )
        errors.extend(f"{prefix}{error}" for error in status.errors)
    for error in errors:
        say(f"error: {error}")
    say(f"verified: {'OK' if ok else 'FAILED (the bytes received differ from the bytes sent)'}")
    return 0 if ok and not errors else 1
