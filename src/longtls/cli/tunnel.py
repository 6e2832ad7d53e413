"""longtls tunnel server|client: relay plain TCP over longtls.

  tunnel server --listen ADDR:PORT --forward ADDR:PORT --cert FILE --key FILE
      TLS in, plain TCP out: put it in front of a service.
  tunnel client --listen ADDR:PORT --connect ADDR:PORT [--ca FILE]
      plain TCP in, TLS out: applications connect to --listen.

--listen :PORT or *:PORT listens on every interface (IPv4 and IPv6).

Bytes are relayed in order, with back-pressure, never dropped.  A clean end
of one direction (FIN, close_notify) is passed on as a clean end and the other
direction keeps flowing; an unclean end (reset, TLS error, truncation) is
passed on as a reset, so an application never takes a cut-short stream for
a complete one.

Certificate renewal: the server's --cert/--key/--chain (and a client's
--cert/--key) are watched every --cert-check-interval seconds.  A renewed
pair, written over them by an ACME client or anyone, is used for new
connections and sent, as a Certificate Update, to every live connection that
negotiated it (--no-cert-update turns that off): no reconnect, no byte lost.
A renewal with another identity (subject, names, issuer, key type) is refused
with one log line and the old certificate stays.

Signals: SIGHUP reloads the certificate, key and CA files now, for new
connections, and sends a changed certificate to the live ones that can take
it (a file that fails to load is logged and the old credentials stay); SIGTERM or SIGINT stops accepting and lets open connections finish for
up to --grace seconds, then resets what is left and exits 0 (a second signal
cuts the grace period short).

--udp carries UDP datagrams over DTLS 1.3 instead (tunnel server --udp:
DTLS in, plain UDP out; tunnel client --udp: plain UDP in, DTLS out).  Each
local UDP peer address gets its own DTLS association on the client side; the
server side forwards each association to --forward from a socket of its own.
A datagram is never split: one larger than one DTLS record at --mtu is
dropped (logged), as UDP would.  --idle-timeout defaults to 300 s with --udp.

--mls makes the secure side MLS-TLS (docs/mls-tls.md "Using MLS mode"): keys
from a two-party MLS group (RFC 9420), records as TLS 1.3's; both tunnel ends
need it.  --cert/--key must then be Ed25519 (X.509 credential; a tunnel
server without them uses a basic credential and a fresh key per
connection, which a client accepts only with --insecure); --mls-suite N: the
client offers suite N (default 1), the server accepts only N (default 1, 3
and 0xF0A1).  --rekey-interval/--rekey-bytes start MLS commits (an epoch
change, counted in longtls_key_updates_total; -v logs each).  Not with
--udp or --require-eku; a renewed certificate reaches new connections only
(MLS has no Certificate Update).

--metrics ADDR:PORT serves Prometheus metrics at http://ADDR:PORT/metrics:
longtls_open_connections, longtls_handshakes_total{result},
longtls_key_updates_total{initiator,result}, longtls_bytes_total{direction},
longtls_oldest_key_age_seconds, longtls_certificate_updates_total{direction},
longtls_certificate_reloads_total{result}.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from ..config import Configuration
from ..credentials import describe_rollout, validity_problem
from ..errors import ConfigurationError
from ..metrics import Metrics, serve_metrics
from ..tunnel import Tunnel, format_address
from ..tunnel_udp import UDPTunnel
from . import common
from .common import CLIError, logger

DESCRIPTION = __doc__
_DEFAULT_GRACE = 30.0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = common.subcommand(
        subparsers, "tunnel", help="relay plain TCP over TLS (server: TLS in; client: TLS out)",
        description=DESCRIPTION, parents=parents,
    )
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True)

    server = common.subcommand(
        modes, "server", help="TLS in, plain TCP out (in front of a service)",
        description=DESCRIPTION, parents=parents,
    )
    server.add_argument(
        "--listen", required=True, type=common.listen_address, metavar="ADDR:PORT",
        help="where TLS clients connect (:PORT or *:PORT: every interface)",
    )
    server.add_argument(
        "--forward", required=True, type=common.host_port, metavar="ADDR:PORT",
        help="the plain TCP service to relay to",
    )
    common.add_server_credential_options(server)
    _add_shared_options(server)
    server.set_defaults(run=run)

    client = common.subcommand(
        modes, "client", help="plain TCP in, TLS out (next to an application)",
        description=DESCRIPTION, parents=parents,
    )
    client.add_argument(
        "--listen", required=True, type=common.listen_address, metavar="ADDR:PORT",
        help="where plain TCP clients connect (:PORT or *:PORT: every interface)",
    )
    client.add_argument(
        "--connect", required=True, type=common.host_port, metavar="ADDR:PORT",
        help="the tunnel server (or any TLS server) to relay to",
    )
    client.add_argument("--ca", metavar="FILE", help="trust the CA certificates in FILE (default: the system's)")
    client.add_argument(
        "--insecure", action="store_true",
        help="with --mls: do not authenticate the server (accepts any credential)",
    )
    client.add_argument(
        "--servername", metavar="NAME", help="name to send (SNI) and verify (default: the --connect host)"
    )
    client.add_argument("--cert", metavar="FILE", help="client certificate chain (PEM), for mutual TLS")
    client.add_argument("--key", metavar="FILE", help="private key of --cert (default: in the --cert file)")
    common.add_key_password_option(client)
    _add_shared_options(client)
    client.set_defaults(run=run)


def _add_shared_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics", type=common.host_port, metavar="ADDR:PORT",
        help="serve Prometheus metrics at http://ADDR:PORT/metrics",
    )
    p.add_argument(
        "--idle-timeout", type=common.positive_seconds, metavar="SECONDS",
        help="close a connection after this long without data either way (default: never)",
    )
    p.add_argument(
        "--grace", type=common.positive_seconds, default=_DEFAULT_GRACE, metavar="SECONDS",
        help="on SIGTERM, how long open connections may go on (default: %(default)g)",
    )
    common.add_tls_options(p)
    common.add_eku_options(p)
    common.add_cert_update_options(p, "--cert/--key/--chain")
    common.add_dtls_options(p, "--udp")
    common.add_mls_options(p)


def _build(args: argparse.Namespace) -> Configuration:
    if args.mode == "server":
        configuration = common.build_server_configuration(args)
    else:
        configuration = common.build_client_configuration(args, args.connect[0])
    common.apply_mls_options(configuration, args)
    return configuration


def run(args: argparse.Namespace) -> int:
    common.dtls_mtu(args, "--udp")  # --mtu without --udp is refused
    if args.mls and args.dtls:
        # MLS-TLS is defined over a byte stream (draft-kohbrok-mls-tls-01 uses
        # TLS 1.3 records, not DTLS's): no datagram variant to tunnel over.
        raise CLIError("--udp does not apply to --mls (MLS-TLS runs over TCP)")
    if args.mode == "client" and args.insecure and not args.mls:
        raise CLIError("--insecure applies to --mls only (a TLS tunnel client always verifies: give --ca)")
    configuration = _build(args)
    return asyncio.run(_tunnel(args, configuration))


async def _tunnel(args: argparse.Namespace, configuration: Configuration) -> int:
    # Startup, reloads, refused handshakes and unreachable targets are worth a
    # line by default; per-connection chatter is for -v.
    if not args.verbose:
        # A TCP tunnel client reports a failed handshake itself (which
        # application connection, which target): longtls.aio's line would say
        # it twice.
        names = ["longtls.cli", "longtls.tunnel", "longtls.credentials"]
        if args.mode == "server" or args.dtls:
            names.append("longtls.aio")
        for name in names:
            logging.getLogger(name).setLevel(logging.INFO)
    target = args.forward if args.mode == "server" else args.connect
    metrics = Metrics() if args.metrics else None
    tunnel: Tunnel | UDPTunnel
    if args.dtls:
        tunnel = UDPTunnel(
            args.mode, args.listen, target, configuration, mtu=common.dtls_mtu(args, "--udp"),
            idle_timeout=args.idle_timeout, metrics=metrics, require_eku=args.require_eku,
        )
    else:
        tunnel = Tunnel(
            args.mode, args.listen, target, configuration,
            idle_timeout=args.idle_timeout, metrics=metrics, require_eku=args.require_eku, mls=args.mls,
        )
    if metrics is not None:
        # Read at each scrape: a reload or renewal replaces tunnel.configuration.
        metrics.certificates = lambda: tunnel.configuration.certificate_chain
    where = format_address(args.listen)
    try:
        await tunnel.start()
    except OSError as exc:
        raise CLIError(f"cannot listen on {where}: {common.describe_error(exc)}") from None
    metrics_server = None
    if metrics is not None:
        try:
            metrics_server = await serve_metrics(metrics, *args.metrics)
        except OSError as exc:
            await tunnel.shutdown(0)
            raise CLIError(
                f"cannot serve metrics on {format_address(args.metrics)}: {common.describe_error(exc)}"
            ) from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        if stop.is_set():
            tunnel.hurry()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, _reloader(args, tunnel))
    # MLS mode: a renewal goes to new connections only (no Certificate Update).
    live = None if args.mls else tunnel.connections
    watcher = common.start_credential_watcher(args, lambda: tunnel.configuration, live, metrics=metrics)

    listening = ", ".join(format_address(a) for a in tunnel.sockets)
    secure, plain = ("DTLS", "plain UDP") if args.dtls else ("MLS-TLS" if args.mls else "TLS", "plain TCP")
    inbound = secure if args.mode == "server" else plain
    outbound = plain if args.mode == "server" else secure
    line = (
        f"{common.PROG}: tunnel {args.mode}: {inbound} on {listening} -> "
        f"{outbound} to {format_address(target)}"
    )
    if args.mls:
        line += f" (MLS suites {', '.join(f'0x{s:04X}' for s in configuration.mls_cipher_suites)})"
    if args.mode == "server":
        line += f"; {common.client_auth_description(args)}"
    if metrics_server is not None:
        line += f"; metrics on http://{format_address(args.metrics)}/metrics"
    print(line, file=sys.stderr, flush=True)

    await stop.wait()
    if watcher is not None:
        watcher.stop()
    if isinstance(tunnel, Tunnel):
        # Refuse new connections before saying so: the log line is a promise.
        tunnel.stop_accepting()
    if tunnel.active and args.dtls:
        logger.info("stopping: close_notify to %d open association(s)", tunnel.active)
    elif tunnel.active:
        logger.info(
            "stopping: %d open connection(s) get up to %g s to finish", tunnel.active, args.grace
        )
    cut = await tunnel.shutdown(args.grace)
    if cut:
        logger.warning("reset %d connection(s) still open after the grace period", cut)
    if metrics_server is not None:
        metrics_server.close()
    return 0


def _reloader(args: argparse.Namespace, tunnel: Tunnel | UDPTunnel) -> Callable[[], None]:
    """SIGHUP: read the credential files again; keep the old ones if the new fail."""

    def reload() -> None:
        try:
            configuration = _build(args)
        except (CLIError, ConfigurationError) as exc:
            logger.error(
                "reload failed, still using the previous certificate: %s", common.describe_error(exc)
            )
            return
        # Tickets and cookies sealed before the reload stay valid.
        previous = tunnel.configuration
        configuration.ticket_key = previous.ticket_key
        configuration.ticket_generations = previous.ticket_generations
        tunnel.configuration = configuration
        files = [f for f in (getattr(args, "cert", None), args.ca) if f]
        live = ""
        chain = configuration.certificate_chain
        if chain and list(chain) != list(previous.certificate_chain) and args.cert_update and not args.mls:
            # "Reload now" covers the live connections too, where the core
            # lets the new certificate replace theirs (the identity rules);
            # never one outside its validity period, which the peers would
            # answer by ending the connection (illegal_parameter).
            problem = validity_problem(chain[0])
            if problem is None:
                rollout = tunnel.connections.update_certificate(chain, configuration.private_key)
                live = f"; certificate {describe_rollout(rollout)}"
            else:
                live = f"; certificate not sent to live connections: {problem}"
        logger.info("reloaded %s for new connections%s", ", ".join(files) or "the configuration", live)

    return reload
