"""longtls serve: a TLS test server.

--www answers one HTTP GET per connection in plain text, then sends
close_notify (like ``openssl s_server -www``); its paths let any client test
what a server starts after the handshake:

  GET /           a page describing the connection (version, suite, group,
                  signature scheme, Extended Key Update, key generations)
  GET /keyupdate  the server updates the keys first -- an Extended Key Update
                  if negotiated, else a KeyUpdate (update_requested) -- then
                  answers under the new key
  GET /secret     the server asks for a client certificate (post-handshake
                  authentication, RFC 9846 §4.7.2; the client must offer it,
                  e.g. openssl s_client -enable_pha -cert FILE -key FILE) and
                  answers with the certificate's subject; the certificate is
                  verified against --ca

--echo sends every byte back.  Connections are served concurrently until
SIGINT or SIGTERM.  SIGHUP reads --cert/--key/--chain and --ca again now: new
connections get them, and a changed certificate goes to the live connections
that negotiated Certificate Update (a file that fails to load is logged and
the old credentials stay).

--cert and --key are watched (every --cert-check-interval seconds): a renewed
pair, written over them by an ACME client or anyone, goes to new connections
and, as a Certificate Update, to every live connection that negotiated it
(--no-cert-update turns that off); a renewal with another identity is refused
with one log line and the old certificate stays.

--dtls serves DTLS 1.3 over UDP instead (with --echo: every datagram is sent
back as one datagram); --mtu BYTES sets the largest datagram it sends.
--www needs a byte stream and is refused with --dtls.

--mls serves MLS-TLS (docs/mls-tls.md "Using MLS mode"): the keys come from a
two-party MLS group, the records are TLS 1.3's; with --echo only.  --cert and
--key (Ed25519) make an X.509 credential, without them the server has a basic
credential and a fresh key per connection; --mls-suite N accepts only that
RFC 9420 suite (default: 1, 3 and 0xF0A1).  --ca/--verify-client validate the
client's credential; the rekey options start MLS commits.  Certificate
renewal (--cert-check-interval) does not apply.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from .. import __version__, aio
from ..config import Configuration
from ..connlog import ConnectionLog
from ..constants import AlertDescription
from ..credentials import catch_up
from ..errors import ConfigurationError, LocalProtocolError, TLSError
from . import common, credential_set, logs, proxy_options, systemd, www
from .common import CLIError, logger

_CHUNK = 65536
_SHUTDOWN_GRACE = 2.0  # seconds open connections get to close at exit

DESCRIPTION = __doc__

Handler = Callable[[aio.TLSReader, aio.TLSWriter], Awaitable[None]]


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = common.subcommand(
        subparsers, "serve", help="run a TLS test server (--www or --echo)",
        description=DESCRIPTION, parents=parents,
    )
    common.add_server_credential_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument(
        "--port", type=common.port_number, default=4433, help="port to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--listen", type=common.listen_address, metavar="ADDR:PORT",
        help="--host and --port in one, as tunnel takes them; :PORT or *:PORT: every interface",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--www", action="store_true",
        help="answer HTTP GET /, /keyupdate, /secret (see above)",
    )
    mode.add_argument("--echo", action="store_true", help="send every byte back")
    common.add_tls_options(p)
    common.add_eku_options(p)
    common.add_cert_update_options(p, "--cert/--key/--chain")
    common.add_dtls_options(p)
    common.add_mls_options(p)
    proxy_options.add_accept_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.listen is not None:
        args.host, args.port = args.listen
    mtu = common.dtls_mtu(args)
    proxy_options.check(args, "--dtls")
    if args.dtls and args.www:
        raise CLIError("--www does not apply to --dtls (an HTTP exchange needs a byte stream): use --echo")
    if args.mls and args.www:
        raise CLIError("--www does not apply to --mls: use --echo")
    config = common.build_server_configuration(args)
    common.apply_mls_options(config, args)
    if args.mls:
        return asyncio.run(_serve_mls(args, config))
    if args.dtls:
        return asyncio.run(_serve_dtls(args, config, mtu))
    return asyncio.run(_serve(args, config))


async def _serve(args: argparse.Namespace, config: Configuration) -> int:
    handler: Handler = _www if args.www else _echo
    active: set[aio.TLSWriter] = set()
    connections = aio.LiveConnections()

    async def on_client(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        active.add(writer)
        peer = common.format_address(*writer.get_extra_info("peername")[:2])
        # connection_open now, its updates, connection_close at the end (docs/logging.md).
        conn_log = ConnectionLog.attach(writer, label=f"client {peer}", peer=peer, side="server")
        catch_up(writer, config)  # a renewal during its handshake
        try:
            if args.require_eku:
                problem = common.require_eku_message(writer.handshake, f"client {peer}")
                if problem is not None:
                    logger.warning("%s: closing", problem)
                    writer.close_with_alert(AlertDescription.insufficient_security, problem)
                    return
            await handler(reader, writer)
        except (TLSError, OSError, TimeoutError, ValueError) as exc:
            conn_log.ending(detail=common.describe_error(exc))  # said once, in connection_close
        finally:
            writer.close()
            active.discard(writer)

    where = common.format_address(args.host, args.port)
    try:
        server = await aio.start_server(
            on_client, args.host, args.port, config,
            aio.StreamOptions(connections=connections, accept_proxy=proxy_options.accept_timeout(args)),
        )
    except OSError as exc:
        raise CLIError(f"cannot listen on {where}: {common.describe_error(exc)}") from None
    watcher = common.start_credential_watcher(args, lambda: config, connections)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, systemd.on_stop(stop.set))
    loop.add_signal_handler(signal.SIGHUP, systemd.on_reload(_reloader(args, config, connections)))
    mode = "www" if args.www else "echo"
    logs.announce(
        f"serving ({mode}) on {where}; {common.client_auth_description(args)}"
        f"{credential_set.describe_served_names(config, args)}; Ctrl-C to stop", address=where,
    )
    systemd.ready(f"serving on {where}")  # sd_notify READY=1 under systemd (cli/systemd.py)
    async with server:
        await stop.wait()
        if watcher is not None:
            watcher.stop()
        server.close()
        writers = list(active)
        for writer in writers:
            writer.close()
        if writers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(w.wait_closed() for w in writers)), _SHUTDOWN_GRACE
                )
    return 0


async def _serve_mls(args: argparse.Namespace, config: Configuration) -> int:
    """serve --mls --echo: MLS-TLS connections, every byte back."""
    active: set[aio.MLSWriter] = set()

    async def on_client(reader: aio.TLSReader, writer: aio.MLSWriter) -> None:
        active.add(writer)
        peer = common.format_address(*writer.get_extra_info("peername")[:2])
        conn_log = ConnectionLog.attach(writer, label=f"client {peer}", peer=peer, side="server")
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        except (TLSError, OSError, TimeoutError) as exc:
            conn_log.ending(detail=common.describe_error(exc))  # said once, in connection_close
        finally:
            writer.close()
            active.discard(writer)

    where = common.format_address(args.host, args.port)
    try:
        server = await aio.start_mls_server(
            on_client, args.host, args.port, config,
            aio.StreamOptions(accept_proxy=proxy_options.accept_timeout(args)),
        )
    except OSError as exc:
        raise CLIError(f"cannot listen on {where}: {common.describe_error(exc)}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, systemd.on_stop(stop.set))
    # MLS: no Certificate Update
    loop.add_signal_handler(signal.SIGHUP, systemd.on_reload(_reloader(args, config, None)))
    suites = ", ".join(f"0x{s:04X}" for s in config.mls_cipher_suites)
    logs.announce(
        f"serving (echo, MLS-TLS, suites {suites}) on {where}; "
        f"{common.client_auth_description(args)}; Ctrl-C to stop", address=where,
    )
    systemd.ready(f"serving on {where}")  # sd_notify READY=1 under systemd (cli/systemd.py)
    async with server:
        await stop.wait()
        server.close()
        writers = list(active)
        for writer in writers:
            writer.close()
        if writers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(w.wait_closed() for w in writers)), _SHUTDOWN_GRACE
                )
    return 0


async def _serve_dtls(args: argparse.Namespace, config: Configuration, mtu: int) -> int:
    """serve --dtls --echo: every datagram back as one datagram."""

    connections = aio.LiveConnections()

    async def on_association(association: aio.DTLSAssociation) -> None:
        peer = association.peername
        conn_log = ConnectionLog.attach(association, label=f"client {peer}", peer=peer, side="server", transport="dtls")
        catch_up(association, config)  # a renewal during its handshake
        try:
            if args.require_eku:
                problem = common.require_eku_message(association.handshake, f"client {peer}")
                if problem is not None:
                    logger.warning("%s: closing", problem)
                    association.close_with_alert(AlertDescription.insufficient_security, problem)
                    return
            async for payload in association:
                try:
                    association.send(payload)
                except LocalProtocolError as exc:  # larger than our --mtu allows: UDP drops it
                    logger.info("%s: not echoed: %s", peer, exc)
        except (TLSError, OSError, TimeoutError) as exc:
            conn_log.ending(detail=common.describe_error(exc))  # said once, in connection_close

    where = common.format_address(args.host, args.port)
    try:
        # The EKU flags work as over TLS: EKU is offered unless --no-eku
        # (the core's DTLS opt-in, docs/dtls.md, is switched on here).
        server = await aio.serve_dtls(
            on_association, args.host, args.port, config, mtu=mtu,
            options=aio.StreamOptions(connections=connections),
            extended_key_update=config.extended_key_update,
        )
    except OSError as exc:
        raise CLIError(f"cannot listen on {where} (UDP): {common.describe_error(exc)}") from None
    watcher = common.start_credential_watcher(args, lambda: config, connections)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, systemd.on_stop(stop.set))
    loop.add_signal_handler(signal.SIGHUP, systemd.on_reload(_reloader(args, config, connections)))
    logs.announce(
        f"serving (echo, DTLS 1.3, MTU {mtu}) on {where} UDP; {common.client_auth_description(args)}"
        f"{credential_set.describe_served_names(config, args)}; Ctrl-C to stop", address=where,
    )
    systemd.ready(f"serving on {where}")  # sd_notify READY=1 under systemd (cli/systemd.py)
    async with server:
        await stop.wait()
        if watcher is not None:
            watcher.stop()
    return 0


def _reloader(
    args: argparse.Namespace, config: Configuration, connections: aio.LiveConnections | None
) -> Callable[[], None]:
    """SIGHUP (a reload, as for tunnel; it used to end serve): read the
    credential and CA files again into ``config``, which new connections use;
    keep the old ones if the new fail to load."""

    def reload() -> None:
        try:
            fresh = common.build_server_configuration(args)
        except (CLIError, ConfigurationError) as exc:
            logger.error("reload failed, still using the previous certificate: %s", common.describe_error(exc))
            return
        config.trust_store = fresh.trust_store
        config.ticket_keys = fresh.ticket_keys  # --ticket-keys re-read (rotation); none: the same key
        config.peer_allow, config.crls = fresh.peer_allow, fresh.crls  # --allow-*, --crl (docs/access-control.md)
        # Each changed certificate goes to new connections and to the live ones
        # that use it, if it is within its validity period (docs/sni.md).
        credential_set.reload_credentials(config, fresh, connections if args.cert_update else None, args)
        files = [f for f in (args.cert, args.key, args.chain, args.ca) if f]
        logger.info("reloaded %s for new connections", ", ".join(files) or "the configuration")

    return reload


async def _echo(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
    while data := await reader.read(_CHUNK):
        writer.write(data)
        await writer.drain()


async def _www(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
    await www.respond(reader, writer, describe_connection)


def describe_connection(writer: aio.TLSWriter) -> str:
    """The --www page: what was negotiated."""
    hs = writer.handshake
    # HandshakeComplete.signature_scheme is the *peer's* (the client's, if it
    # authenticated); the server's own choice is only on the handshake engine.
    own_scheme = getattr(writer.connection.handshake, "scheme", None)
    rows = [
        ("Protocol", hs.version),
        ("Cipher suite", hs.cipher_suite.name),
        ("Group", common.name_or_none(hs.group) or "none (PSK only)"),
        ("Signature scheme", common.name_or_none(own_scheme) or "none (PSK)"),
        ("ALPN", hs.alpn_protocol or "none"),
        ("Server name", hs.server_name or "none"),
        ("Client certificate", hs.peer_subject or "none"),
    ]
    if hs.peer_subject:
        rows.append(("Client signature scheme", common.name_or_none(hs.signature_scheme) or "none"))
    rows.append(("Extended Key Update", "yes" if hs.extended_key_update else "no"))
    rows.append(("Resumed", "yes" if hs.resumed else "no"))
    # RFC 8879: how our certificate went out (and the client's came in, if any).
    rows.append(("Certificate compression", common.name_or_none(hs.local_certificate_compression) or "none"))
    if hs.peer_subject:
        rows.append((
            "Client certificate compression",
            common.name_or_none(hs.peer_certificate_compression) or "none",
        ))
    if hs.psk is not None:  # e.g. "external 'meter-17', psk_ke"
        what: str = hs.psk
        if hs.psk_identity is not None:
            what += f" {hs.psk_identity.decode('utf-8', 'backslashreplace')!r}"
        rows.append(("PSK", f"{what}, {common.name_or_none(hs.psk_key_exchange_mode)}"))
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"longtls {__version__} serve --www", ""]
    lines += [f"{label + ':':<{width}} {value}" for label, value in rows]
    return "\n".join(lines) + "\n"
