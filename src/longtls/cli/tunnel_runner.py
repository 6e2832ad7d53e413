"""Run one or several tunnels in one event loop (``longtls tunnel``).

The command line gives one tunnel, a config file (``--config``,
cli/tunnel_config.py) any number: both go through :class:`TunnelRunner`,
which starts them, serves one metrics endpoint for the process, handles the
signals, applies a reload and drains at the end.

A tunnel is described by a :class:`TunnelSpec`: the flags parsed by the real
``tunnel server|client`` parser and the Configuration built from them.  A
reload (SIGHUP) yields a new list of specs; the runner compares each with the
one running under the same name:

- same flags: the Configuration is replaced for new connections (the
  certificate, key and CA files read again), live connections go on, and a
  changed certificate is offered to those that negotiated Certificate Update;
- only flags that a running tunnel reads per connection changed (credentials,
  trust, TLS and EKU policy: everything that goes into the Configuration,
  and the forward/connect target): the same, plus the new target;
- any other flag changed (listen address, --udp, --mls, --idle-timeout, and
  any flag this module does not know): the old listener stops accepting, a
  new one starts with the new settings, and the old tunnel's connections get
  the grace period (``grace``) to finish;
- a name no longer there: it stops accepting and drains within ``grace``;
- a new name: it starts.

Decision (metrics): one endpoint for the process and one ``Metrics`` shared
by every tunnel, so the families are totals over the tunnels (no ``tunnel``
label: metrics.py renders one unlabelled set, and a label on every family is
a larger change than this issue needs); the certificate expiry gauge lists
the certificates of every tunnel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from ..config import Configuration
from ..credentials import CredentialWatcher
from ..metrics import Metrics, serve_metrics
from ..tunnel import Address, Tunnel, format_address
from ..tunnel_udp import UDPTunnel
from . import common, credential_set, proxy_options, systemd
from .common import CLIError, logger
from .credential_set import CredentialWatchers

__all__ = ["TunnelRunner", "TunnelSpec", "describe", "swappable_dests"]

AnyTunnel = Tunnel | UDPTunnel


@dataclass(eq=False)
class TunnelSpec:
    """One tunnel to run: its parsed ``tunnel server|client`` flags and the
    Configuration built from them.  ``name`` is the config file's table name
    (None: the one tunnel of the command line)."""

    args: argparse.Namespace
    configuration: Configuration
    name: str | None = None

    @property
    def key(self) -> str:
        return self.name or ""

    @property
    def mode(self) -> str:
        return str(self.args.mode)

    @property
    def target(self) -> Address:
        target: Address = self.args.forward if self.args.mode == "server" else self.args.connect
        return target

    @property
    def label(self) -> str:
        """How log lines name the tunnel: ``tunnel 'web'``, or ``tunnel`` alone."""
        return f"tunnel '{self.name}'" if self.name else "tunnel"


def swappable_dests() -> frozenset[str]:
    """The flags (argparse dests) a running tunnel can take without a new
    listener: those that only go into the Configuration (read for each new
    connection) and the target (read for each new connection too).  Taken
    from the option groups themselves, so a flag added to one of them later
    is covered; a flag added anywhere else means a restart (always correct)."""
    scratch = argparse.ArgumentParser(add_help=False)
    common.add_server_credential_options(scratch)
    common.add_tls_options(scratch)
    common.add_eku_options(scratch)
    common.add_cert_update_options(scratch, "")
    dests = {action.dest for action in scratch._actions}
    # Tunnel.require_eku and the client's own flags are read per connection as well.
    dests |= {"forward", "connect", "servername", "insecure", "require_eku", "mls_suite", "verbose"}
    # What the credential flags' own action records beside their dests (the
    # order of --cert/--key pairs, cli/credential_set.py): it follows them.
    dests |= {"credential_flags", "server_credential_sources"}
    return frozenset(dests)


def _changed_dests(old: argparse.Namespace, new: argparse.Namespace) -> set[str]:
    names = set(vars(old)) | set(vars(new))
    return {n for n in names if getattr(old, n, None) != getattr(new, n, None)}


def describe(spec: TunnelSpec, listening: str) -> str:
    """The start-up line of a tunnel (``listening``: the addresses, as text)."""
    args = spec.args
    secure, plain = ("DTLS", "plain UDP") if args.dtls else ("MLS-TLS" if args.mls else "TLS", "plain TCP")
    inbound = secure if args.mode == "server" else plain
    outbound = plain if args.mode == "server" else secure
    who = f"tunnel {args.mode}" + (f" '{spec.name}'" if spec.name else "")
    line = f"{who}: {inbound} on {listening} -> {outbound} to {format_address(spec.target)}"
    if args.mls:
        line += f" (MLS suites {', '.join(f'0x{s:04X}' for s in spec.configuration.mls_cipher_suites)})"
    if args.mode == "server":
        line += f"; {common.client_auth_description(args)}"
        line += credential_set.describe_served_names(spec.configuration, args)
    return line


@dataclass(eq=False)
class _Running:
    spec: TunnelSpec
    tunnel: AnyTunnel
    watcher: CredentialWatcher | CredentialWatchers | None = None
    drain: asyncio.Task[int] | None = field(default=None, repr=False)


class TunnelRunner:
    """Start ``specs``, serve metrics, and run until SIGTERM/SIGINT; SIGHUP
    calls ``reload`` (None: nothing to reload, the failure already logged) and
    applies what it returns (see the module docstring)."""

    def __init__(
        self,
        *,
        grace: float,
        metrics_address: Address | None = None,
        reload: Callable[[], Sequence[TunnelSpec] | None] | None = None,
        source: str | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.grace = grace
        #: TCP listeners with SO_REUSEPORT: a --workers worker shares its port (cli/workers.py).
        self.reuse_port = reuse_port
        self.metrics_address = metrics_address
        self.metrics = Metrics() if metrics_address is not None else None
        self._reload_source = reload
        #: The config file the tunnels come from (None: the command line), for the start-up line.
        self.source = source
        self._running: dict[str, _Running] = {}
        #: Tunnels replaced or removed by a reload, draining.
        self._retired: set[_Running] = set()
        self._stop = asyncio.Event()
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self.notifier = systemd.Notifier.from_environment()

    def __repr__(self) -> str:
        return f"<TunnelRunner tunnels={sorted(self._running)} retired={len(self._retired)}>"

    @property
    def tunnels(self) -> dict[str, AnyTunnel]:
        return {key: running.tunnel for key, running in self._running.items()}

    # -- building blocks ---------------------------------------------------------------

    def _make(self, spec: TunnelSpec) -> AnyTunnel:
        args = spec.args
        if args.dtls:
            return UDPTunnel(
                args.mode, args.listen, spec.target, spec.configuration, mtu=common.dtls_mtu(args, "--udp"),
                idle_timeout=args.idle_timeout, metrics=self.metrics, require_eku=args.require_eku,
            )
        return Tunnel(
            args.mode, args.listen, spec.target, spec.configuration,
            idle_timeout=args.idle_timeout, metrics=self.metrics, require_eku=args.require_eku, mls=args.mls,
            reuse_port=self.reuse_port, **proxy_options.tunnel_options(args),
        )

    async def _start(self, spec: TunnelSpec) -> _Running:
        tunnel = self._make(spec)
        try:
            await tunnel.start()
        except OSError as exc:
            where = format_address(spec.args.listen)
            prefix = f"{spec.label}: " if spec.name else ""
            raise CLIError(f"{prefix}cannot listen on {where}: {common.describe_error(exc)}") from None
        running = _Running(spec, tunnel)
        running.watcher = self._watch(running)
        return running

    def _watch(self, running: _Running) -> CredentialWatcher | CredentialWatchers | None:
        # MLS mode: a renewal goes to new connections only (no Certificate Update).
        tunnel = running.tunnel
        live = None if running.spec.args.mls else tunnel.connections
        return common.start_credential_watcher(
            running.spec.args, lambda: tunnel.configuration, live, metrics=self.metrics
        )

    def _certificates(self) -> list[x509.Certificate]:
        """Every certificate the running tunnels present (the expiry gauge)."""
        seen: list[x509.Certificate] = []
        for running in self._running.values():
            for cert in running.tunnel.configuration.certificate_chain:
                if cert not in seen:
                    seen.append(cert)
        return seen

    def _start_line(self, running: _Running) -> str:
        return describe(running.spec, ", ".join(format_address(a) for a in running.tunnel.sockets))

    # -- running -----------------------------------------------------------------------

    async def run(self, specs: Sequence[TunnelSpec]) -> int:
        """Start every tunnel (all or none), then run until stopped; returns the exit status."""
        try:
            for spec in specs:
                self._running[spec.key] = await self._start(spec)
        except CLIError:
            await self._shutdown_all(0)
            raise
        metrics_server = None
        if self.metrics is not None:  # served here, or (a --workers worker) by the supervisor
            # Read at each scrape: a reload or renewal replaces a tunnel's configuration.
            self.metrics.certificates = self._certificates
            self.metrics.credential_certificates = lambda: credential_set.labelled_chains(
                (r.tunnel.configuration, r.spec.args) for r in self._running.values()
            )  # several certificates by server_name: one series per credential (docs/sni.md)
        if self.metrics is not None and self.metrics_address is not None:
            try:
                metrics_server = await serve_metrics(self.metrics, *self.metrics_address)
            except OSError as exc:
                await self._shutdown_all(0)
                raise CLIError(
                    f"cannot serve metrics on {format_address(self.metrics_address)}: "
                    f"{common.describe_error(exc)}"
                ) from None

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

        metrics_text = (
            f"metrics on http://{format_address(self.metrics_address)}/metrics"
            if metrics_server is not None and self.metrics_address is not None else None
        )
        lines = [self._start_line(running) for running in self._running.values()]
        if self.source is None and len(lines) == 1:
            # The command line's one tunnel: one line, as before --config existed.
            print(f"{common.PROG}: {lines[0]}{'; ' + metrics_text if metrics_text else ''}", file=sys.stderr, flush=True)
        else:
            for line in lines:
                print(f"{common.PROG}: {line}", file=sys.stderr, flush=True)
            summary = f"{len(lines)} tunnel(s) from {self.source} running"
            print(
                f"{common.PROG}: {summary}{'; ' + metrics_text if metrics_text else ''}",
                file=sys.stderr, flush=True,
            )
        watchdog = None
        if self.notifier is not None:
            self.notifier.ready(self._status())
            watchdog = self.notifier.start_watchdog()

        await self._stop.wait()
        if self.notifier is not None:
            self.notifier.stopping()
        if self._reloading is not None:
            self._reloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloading
        cut = await self._shutdown_all(self.grace, announce=True)
        if cut:
            logger.warning("reset %d connection(s) still open after the grace period", cut)
        if metrics_server is not None:
            metrics_server.close()
        if watchdog is not None:
            watchdog.cancel()
        return 0

    def _status(self) -> str:
        listening = ", ".join(
            format_address(a) for running in self._running.values() for a in running.tunnel.sockets
        )
        return f"{len(self._running)} tunnel(s) listening on {listening}"

    def _on_stop(self) -> None:
        if self._stop.is_set():
            # A second signal: cut the grace period short.
            for running in [*self._running.values(), *self._retired]:
                running.tunnel.hurry()
        self._stop.set()

    async def _shutdown_all(self, grace: float, *, announce: bool = False) -> int:
        everything = [*self._running.values(), *self._retired]
        for running in everything:
            if running.watcher is not None:
                running.watcher.stop()
            if isinstance(running.tunnel, Tunnel):
                # Refuse new connections before saying so: the log line is a promise.
                running.tunnel.stop_accepting()
        if announce:
            streams = sum(r.tunnel.active for r in everything if isinstance(r.tunnel, Tunnel))
            associations = sum(r.tunnel.active for r in everything if isinstance(r.tunnel, UDPTunnel))
            if associations:
                logger.info("stopping: close_notify to %d open association(s)", associations)
            if streams:
                logger.info("stopping: %d open connection(s) get up to %g s to finish", streams, grace)
        cuts = await asyncio.gather(
            *(r.tunnel.shutdown(grace) for r in self._running.values()),
            *(r.drain for r in self._retired if r.drain is not None),
        )
        self._running.clear()
        self._retired.clear()
        return sum(cuts)

    # -- reload ------------------------------------------------------------------------

    def _on_reload(self) -> None:
        if self._reload_source is None or self._stop.is_set():
            return
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True  # one more pass when this one ends: the newest files win
            return
        self._reloading = asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        assert self._reload_source is not None
        while True:
            self._reload_again = False
            if self.notifier is not None:
                self.notifier.reloading()
            try:
                specs = self._reload_source()
                if specs is not None:
                    await self.apply(specs)
            except Exception as exc:  # a bug: one line (the traceback with -v), the service goes on
                logger.debug("reload failed", exc_info=True)
                logger.error("reload failed: internal error: %s: %s", type(exc).__name__, exc)
            if self.notifier is not None:
                self.notifier.ready(self._status())
            if not self._reload_again:
                return

    async def apply(self, specs: Sequence[TunnelSpec]) -> None:
        """Make the running tunnels those of ``specs``, one log line per tunnel."""
        wanted = {spec.key: spec for spec in specs}
        for key in [k for k in self._running if k not in wanted]:
            running = self._running.pop(key)
            self._retire(running)
            logger.info(
                "%s: removed: stopped accepting; %d open connection(s) get up to %g s to finish",
                running.spec.label, running.tunnel.active, self.grace,
            )
        swappable = swappable_dests()
        for spec in specs:
            old = self._running.get(spec.key)
            if old is None:
                try:
                    running = await self._start(spec)
                except CLIError as exc:
                    logger.error("%s: not started: %s", spec.label, exc)
                    continue
                self._running[spec.key] = running
                logger.info("%s: added: %s", spec.label, self._start_line(running))
            elif _changed_dests(old.spec.args, spec.args) - swappable:
                await self._replace(old, spec)
            else:
                self._swap(old, spec)

    def _retire(self, running: _Running) -> None:
        """Stop accepting now; the open connections get the grace period in the background."""
        if running.watcher is not None:
            running.watcher.stop()
        if isinstance(running.tunnel, Tunnel):
            running.tunnel.stop_accepting()
        running.drain = asyncio.ensure_future(self._drain(running))
        self._retired.add(running)

    async def _drain(self, running: _Running) -> int:
        cut = await running.tunnel.shutdown(self.grace)
        if cut:
            logger.warning(
                "%s: reset %d connection(s) of the previous listener still open after the grace period",
                running.spec.label, cut,
            )
        self._retired.discard(running)
        return cut

    async def _replace(self, old: _Running, spec: TunnelSpec) -> None:
        """New listener with the new settings; the old one drains within the grace period."""
        changed = sorted(_changed_dests(old.spec.args, spec.args) - swappable_dests())
        spec.configuration.ticket_key = old.tunnel.configuration.ticket_key
        spec.configuration.ticket_generations = old.tunnel.configuration.ticket_generations
        same_address = old.spec.args.listen == spec.args.listen and old.spec.args.dtls == spec.args.dtls
        previous = old.tunnel
        if same_address and isinstance(previous, UDPTunnel):
            # One UDP socket carries every association of the listen address:
            # the old one must go before the new one can bind (datagrams are
            # not streams; the peers get close_notify).
            await previous.shutdown(0)
        elif same_address and isinstance(previous, Tunnel):
            previous.stop_accepting()  # free the address for the new listener
        try:
            running = await self._start(spec)
        except CLIError as exc:
            if same_address and isinstance(previous, Tunnel):
                with contextlib.suppress(OSError):
                    await previous.start()  # listen again with the old settings
            logger.error("%s: not restarted, the previous settings stay: %s", spec.label, exc)
            return
        self._running[spec.key] = running
        self._retire(old)
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        logger.info(
            "%s: restarted (%s changed): %s; %d open connection(s) of the previous listener "
            "get up to %g s to finish",
            spec.label, flags, self._start_line(running), old.tunnel.active, self.grace,
        )

    def _swap(self, running: _Running, spec: TunnelSpec) -> None:
        """The new Configuration (and target) for new connections; live ones go on."""
        tunnel, configuration, args = running.tunnel, spec.configuration, spec.args
        previous = tunnel.configuration
        # Tickets and cookies sealed before the reload stay valid.
        configuration.ticket_key = previous.ticket_key
        configuration.ticket_generations = previous.ticket_generations
        tunnel.configuration = configuration
        moved = spec.target != running.spec.target
        tunnel.target = spec.target
        tunnel.require_eku = args.require_eku
        running.spec = spec
        if running.watcher is not None:
            running.watcher.stop()
        running.watcher = self._watch(running)  # the files may have changed names
        files = [f for f in (getattr(args, "cert", None), args.ca) if f]
        live = ""
        if args.cert_update and not args.mls:
            # "Reload now" covers the live connections too: each changed
            # certificate goes to those that use it, where the core lets it
            # replace theirs (the identity rules); never one outside its
            # validity period, which the peers would answer by ending the
            # connection (illegal_parameter).  docs/sni.md.
            live = credential_set.roll_out_reload(previous, configuration, tunnel.connections, args)
        if moved:
            live += f"; new connections go to {format_address(spec.target)}"
        prefix = f"{spec.label}: " if spec.name else ""
        logger.info(
            "%sreloaded %s for new connections%s", prefix, ", ".join(files) or "the configuration", live
        )
