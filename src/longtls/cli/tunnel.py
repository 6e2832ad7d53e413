"""longtls tunnel server|client: relay plain TCP over longtls.

  tunnel server --listen ADDR:PORT --forward ADDR:PORT --cert FILE --key FILE
      TLS in, plain TCP out: put it in front of a service.
  tunnel client --listen ADDR:PORT --connect ADDR:PORT [--ca FILE]
      plain TCP in, TLS out: applications connect to --listen.
  tunnel --config FILE [--check]
      every tunnel of a TOML file, in one process (docs/tunnel-config.md):
      [tunnel.NAME] tables with mode = "server"|"client" and the flags of
      that mode as keys; SIGHUP re-reads the file and applies what changed.

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
from typing import Any

from ..config import Configuration
from ..errors import ConfigurationError
from . import access, common, proxy_options, tunnel_config, workers
from .common import CLIError, logger
from .tunnel_runner import TunnelRunner, TunnelSpec

DESCRIPTION = __doc__
_DEFAULT_GRACE = 30.0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = common.subcommand(
        subparsers, "tunnel", help="relay plain TCP over TLS (server: TLS in; client: TLS out)",
        description=DESCRIPTION, parents=parents,
    )
    # Without a MODE, --config FILE names the tunnels (cli/tunnel_config.py).
    tunnel_config.add_options(p)
    p.set_defaults(run=run_config, mode=None)
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=False)

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
    proxy_options.add_accept_options(server)
    proxy_options.add_send_option(server, "--forward")
    _add_shared_options(server)
    workers.add_options(server)
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
    access.add_access_options(client, checks="server")  # --allow-*, --crl on the server's certificate
    proxy_options.add_send_option(client, "--connect (before TLS)")
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


def _check(args: argparse.Namespace) -> None:
    """What the flags of one tunnel cannot say together (CLIError)."""
    common.dtls_mtu(args, "--udp")  # --mtu without --udp is refused
    proxy_options.check(args, "--udp")
    if args.mls and args.dtls:
        # MLS-TLS is defined over a byte stream (draft-kohbrok-mls-tls-01 uses
        # TLS 1.3 records, not DTLS's): no datagram variant to tunnel over.
        raise CLIError("--udp does not apply to --mls (MLS-TLS runs over TCP)")
    if args.mode == "client" and args.insecure and not args.mls:
        raise CLIError("--insecure applies to --mls only (a TLS tunnel client always verifies: give --ca)")


def _checked_build(args: argparse.Namespace) -> Configuration:
    _check(args)
    return _build(args)


def run_config(args: argparse.Namespace) -> int:
    """``longtls tunnel --config FILE [--check]`` (and ``longtls tunnel`` alone: an error)."""
    return tunnel_config.run(args, add_parser, _checked_build)


def run(args: argparse.Namespace) -> int:
    if args.config is not None or args.check:
        return run_config(args)  # refused there: a MODE and --config exclude each other
    _check(args)
    # A --workers worker reads its supervisor's ticket key first (_build uses it).
    worker = workers.WorkerLink.from_args(args)
    spec = TunnelSpec(args, _build(args))
    if getattr(args, "workers", None) and worker is None:
        return workers.supervise(args, args.command_line)  # checked and built once above

    def reload() -> list[TunnelSpec] | None:
        """SIGHUP: read the credential files again; keep the old ones if the new fail."""
        try:
            return [TunnelSpec(args, _build(args))]
        except (CLIError, ConfigurationError) as exc:
            logger.error(
                "reload failed, still using the previous certificate: %s", common.describe_error(exc)
            )
            return None

    runner = TunnelRunner(
        grace=args.grace, metrics_address=None if worker else args.metrics, reload=reload,
        reuse_port=worker is not None,
    )
    return asyncio.run(runner.run([spec]) if worker is None else worker.run(runner, [spec]))
