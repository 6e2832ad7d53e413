"""The live demo: a longtls server and client on loopback, rekeying as they stream.

A throwaway CA made in memory signs the server's certificate; the client
verifies it.  Both sides stream random data at each other as fast as the
event loop allows, hashing what they send and what they receive, while an
extended key update (a fresh post-quantum hybrid key exchange by default)
runs every ``interval`` seconds, started by the client and the server in
turn.  Half-way through, the server's certificate is renewed (same CA, same
names, a new key and serial number) and handed to the client on the live
connection as a Certificate Update (draft-rosomakho-tls-cert-update-02),
while the data keeps flowing; the client shows the new certificate it
received.  At the end both streams close with close_notify and the SHA-256 of
every byte sent is compared with the SHA-256 of every byte received.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

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


@dataclass
class DemoOptions:
    duration: float = 10.0
    interval: float = 1.0  # seconds between key updates (and between plain status lines)
    group: NamedGroup = NamedGroup.X25519MLKEM768
    eku_profile: EKUProfileName = EKUProfileName.draft_13
    keylog: str | None = None
    #: Renew the server's certificate half-way through (Certificate Update).
    renew_certificate: bool = True


@dataclass(eq=False)
class Side:
    """One end's stream: what it sent, what it received, which updates it started."""

    name: str  # "client" or "server"
    reader: aio.TLSReader
    writer: aio.TLSWriter
    sent_hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    received_hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    sent: int = 0
    received: int = 0
    initiated: int = 0  # completed updates this side started
    latencies: list[float] = field(default_factory=list)  # seconds, as this side measured them


@dataclass
class Status:
    generation: int = 0
    group: str = "-"
    last_initiator: str = "-"
    last_latency: float | None = None
    errors: list[str] = field(default_factory=list)
    #: Certificates the client received in Certificate Updates.
    received_certificates: list[str] = field(default_factory=list)


def _configurations(options: DemoOptions, bundle: certs.Bundle) -> tuple[Configuration, Configuration]:
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


async def _watch(side: Side, status: Status, note: Callable[[str], None]) -> None:
    """Record the completed updates this side started, with the latency it
    measured, and the certificates the client received."""
    async for event in side.writer.events():
        if (
            isinstance(event, CertificateUpdated) and event.direction is CertificateUpdateDirection.received
            and event.certificates
        ):
            described = describe_certificate(event.certificates[0])
            status.received_certificates.append(described)
            note(f"the {side.name} received the renewed certificate on the live connection: {described}")
        if isinstance(event, KeyUpdateCompleted) and event.initiator == side.name:
            side.initiated += 1
            side.latencies.append(event.seconds)
            if event.generation > status.generation:
                status.generation = event.generation
                status.group = event.group.name
                status.last_initiator = event.initiator
                status.last_latency = event.seconds


async def _schedule_updates(
    sides: tuple[Side, Side], options: DemoOptions, status: Status, stop: asyncio.Event
) -> None:
    """One extended key update per interval, client and server in turn.

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
        side = sides[turn % 2]
        turn += 1
        try:
            await asyncio.wait_for(side.writer.update_keys(), max(5.0, options.interval * 5))
        except (TLSError, OSError, TimeoutError, aio.KeyUpdateRejectedError) as exc:
            status.errors.append(f"key update started by the {side.name} failed: {exc or 'timed out'}")
            return


async def _renew_certificate(
    server: Side, bundle: certs.Bundle, configuration: Configuration, delay: float,
    status: Status, note: Callable[[str], None],
) -> None:
    """After ``delay`` seconds: a renewed server certificate from the same CA,
    for new connections (the Configuration) and, as a Certificate Update, for
    the live one (``longtls serve``/``tunnel`` do this when the files change)."""
    await asyncio.sleep(delay)
    renewed = certs.renew(bundle.ca, bundle.server)
    configuration.certificate_chain = [renewed.cert]
    configuration.private_key = renewed.key
    try:
        went = server.writer.update_certificate()
    except TLSError as exc:
        status.errors.append(f"the certificate update failed: {exc}")
        return
    note(
        f"the server's certificate was renewed ({describe_certificate(renewed.cert)}): "
        + ("sent to the client" if went else "to be sent when the client asks")
    )


def _rate(nbytes: float) -> str:
    return f"{nbytes / 1e6:7.1f} MB/s"


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


class LiveView:
    """A table redrawn in place on a terminal; one plain line per interval otherwise."""

    COLUMNS = (
        ("elapsed", 8), ("generation", 10), ("group", 16), ("last by", 7), ("latency", 9),
        ("client->server", 14), ("server->client", 14), ("verified", 10),
    )

    def __init__(self, out: TextIO, sides: tuple[Side, Side], status: Status, options: DemoOptions) -> None:
        self.out = out
        self.tty = out.isatty()
        self.sides = sides
        self.status = status
        self.options = options
        self.started = time.monotonic()
        self._last = (self.started, 0, 0)
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

    def _values(self) -> list[str]:
        """This moment's figures; throughput is over the time since the last call."""
        now = time.monotonic()
        client, server = self.sides
        then, c2s_before, s2c_before = self._last
        span = max(now - then, 1e-9)
        c2s, s2c = server.received, client.received
        self._last = (now, c2s, s2c)
        latency = self.status.last_latency
        return [
            f"{now - self.started:.1f}s",
            str(self.status.generation),
            self.status.group,
            self.status.last_initiator,
            "-" if latency is None else f"{latency * 1000:.1f} ms",
            _rate((c2s - c2s_before) / span),
            _rate((s2c - s2c_before) / span),
            _size(c2s + s2c),
        ]

    def draw(self) -> None:
        values = self._values()
        client, server = self.sides
        if self.tty:
            header = "  ".join(f"{name:>{width}}" for name, width in self.COLUMNS)
            row = "  ".join(f"{value:>{width}}" for value, (_, width) in zip(values, self.COLUMNS, strict=True))
            lines = [header, row, f"updates initiated: client {client.initiated}, server {server.initiated}"]
            # Move back over the previous drawing and clear it, then redraw.
            prefix = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.out.write(prefix + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            elapsed, generation, group, by, latency, c2s, s2c, verified = values
            detail = f" ({by}, {group}, {latency})" if by != "-" else ""
            self.out.write(
                f"[{elapsed:>6}] generation {generation}{detail}  client->server {c2s.strip()}  "
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
    bundle = certs.make_bundle([SERVER_NAME, HOST], "ecdsa-p256", days=1)
    client_config, server_config = _configurations(options, bundle)
    accepted: asyncio.Future[tuple[aio.TLSReader, aio.TLSWriter]] = (
        asyncio.get_running_loop().create_future()
    )
    done = asyncio.Event()

    async def on_client(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        if not accepted.done():
            accepted.set_result((reader, writer))
        await done.wait()  # keep the handler alive for the whole demo

    server = await aio.start_server(on_client, HOST, 0, server_config)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client_reader, client_writer = await aio.connect(HOST, port, client_config)
        server_reader, server_writer = await asyncio.wait_for(accepted, 10)
        client = Side("client", client_reader, client_writer)
        server_side = Side("server", server_reader, server_writer)
        sides = (client, server_side)
        hs = client_writer.handshake
        say(
            f"longtls demo: client and server on {HOST}:{port}, {hs.version} "
            f"{hs.cipher_suite.name}, group {hs.group.name if hs.group else 'none'}, "
            f"Extended Key Update {hs.eku_profile if hs.eku_profile is not None else 'NOT negotiated'}, "
            f"an update every {options.interval:g} s for {options.duration:g} s"
        )
        renewing = options.renew_certificate and hs.certificate_update
        if renewing:
            say(
                f"Certificate Update negotiated: the server's certificate is renewed after "
                f"{options.duration / 2:g} s ({describe_certificate(bundle.server.cert)})"
            )
        status = Status()
        stop = asyncio.Event()
        view = LiveView(out, sides, status, options)
        watchers = [asyncio.create_task(_watch(s, status, view.note)) for s in sides]
        receivers = [asyncio.create_task(_receive(s)) for s in sides]
        streamers = [asyncio.create_task(_stream(s, stop)) for s in sides]
        scheduler = asyncio.create_task(_schedule_updates(sides, options, status, stop))
        live = asyncio.create_task(view.run(stop))
        renewal = asyncio.create_task(
            _renew_certificate(server_side, bundle, server_config, options.duration / 2, status, view.note)
            if renewing else asyncio.sleep(0)
        )
        try:
            await asyncio.sleep(options.duration)
            stop.set()
            await asyncio.wait_for(
                asyncio.gather(*streamers, *receivers, scheduler, live, renewal), _FINISH_TIMEOUT
            )
            if renewing and client_writer.peer_certificates[:1] != tuple(server_config.certificate_chain[:1]):
                status.errors.append("the client does not hold the renewed server certificate")
        except (TLSError, OSError, TimeoutError) as exc:
            status.errors.append(f"the connection failed: {exc or 'timed out'}")
        finally:
            stop.set()
            for task in (*streamers, *receivers, scheduler, live, renewal):
                task.cancel()
            done.set()
            client_writer.close()
            server_writer.close()
            await asyncio.gather(client_writer.wait_closed(), server_writer.wait_closed())
            for task in watchers:
                task.cancel()
    return _summary(sides, status, say)


def _summary(sides: tuple[Side, Side], status: Status, say: Callable[[str], None]) -> int:
    client, server = sides
    latencies = [s for side in sides for s in side.latencies]
    say("")
    say(f"updates initiated by client: {client.initiated}")
    say(f"updates initiated by server: {server.initiated}")
    say(f"certificate updates received by the client: {len(status.received_certificates)}")
    if latencies:
        say(
            f"key updates: {len(latencies)}, generation {status.generation}, latency "
            f"min {min(latencies) * 1000:.1f} / avg {sum(latencies) / len(latencies) * 1000:.1f} / "
            f"max {max(latencies) * 1000:.1f} ms"
        )
    ok = True
    for sender, receiver, label in ((client, server, "client -> server"), (server, client, "server -> client")):
        sent, got = sender.sent_hash.hexdigest(), receiver.received_hash.hexdigest()
        match = sent == got and sender.sent == receiver.received
        ok = ok and match
        say(
            f"{label}: sent {sender.sent} bytes, received {receiver.received} bytes, "
            f"sha256 {sent[:16]}... {'=' if sent == got else '!='} {got[:16]}...: "
            f"{'intact' if match else 'MISMATCH'}"
        )
    for error in status.errors:
        say(f"error: {error}")
    say(f"verified: {'OK' if ok else 'FAILED (the bytes received differ from the bytes sent)'}")
    return 0 if ok and not status.errors else 1
