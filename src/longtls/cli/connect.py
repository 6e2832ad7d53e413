"""longtls connect HOST:PORT: a TLS client between stdin/stdout and a server.

Standard input goes to the server, the server's bytes to standard output.  At
the end of standard input the client sends close_notify and goes on reading
until the server closes too; a clean close exits with status 0.

--rekey-count N performs N key updates started by this client, one after the
other as fast as the server allows (an update the server starts meanwhile
does not count), then closes without reading standard input.  With Extended
Key Update negotiated each is an EKU; otherwise a standard KeyUpdate.

--summary json prints one JSON object per line on stderr: the handshake,
then each key update as it completes, e.g.
  {"event": "key_update", "kind": "extended", "generation": 1,
   "initiator": "client", "group": "X25519MLKEM768", "milliseconds": 1.234}
each certificate update (the server's renewed certificate received, or our
own --cert renewed on disk and sent), e.g.
  {"event": "certificate_update", "direction": "received",
   "subject": "CN=localhost,O=longtls", "serial": "5a0f...",
   "not_after": "2027-03-01T12:00:00Z"}
and last {"event": "closed", ...}.  The handshake line says whether
Extended Key Update was negotiated ("extended_key_update", also under its
older name "eku") and which draft text ("eku_profile").

--brief prints, after the handshake, a few lines like `openssl s_client
-brief`: protocol, cipher suite, group, signature, peer certificate subject,
verification result, ALPN, Extended Key Update and its profile, Certificate
Update.  --showcerts prints each certificate the server sent (subject,
issuer, subjectAltName, notBefore, notAfter, serial, SHA-256 fingerprint
and the PEM), then the verification result.  Both go to standard error:
standard output carries only the server's bytes (s_client -showcerts mixes
them; here `connect --showcerts > data` stays clean).

Ending early.  Ctrl-C (SIGINT) after the handshake sends close_notify, waits
at most 2 seconds for the server's (dropping what it still sends), prints
the final `closed` line with "interrupted": true, and exits 130; the server
sees a clean close, not a truncation.  A second Ctrl-C exits 130 at once.
During the handshake (a server that does not answer) Ctrl-C prints the
`closed` line and exits 130 (TLS; over DTLS it exits 130 at once).  When standard output goes away (`connect ... |
head -c 10`), connect closes the same way and exits 141 (128 + SIGPIPE,
what a shell reports for `cat` in that place) without an error line; the
`closed` line says "error": "Broken pipe".  Otherwise: 0 after a clean close,
1 on a failure (one `longtls: error:` line), 2 on bad arguments.

With --cert, the --cert/--key files are watched as `longtls serve` watches
its own (--cert-check-interval); a renewed pair is sent to the server if
Certificate Update was negotiated and the client authenticated with a certificate.

--dtls speaks DTLS 1.3 over UDP: standard input goes out as datagrams of at
most one record's payload at --mtu BYTES (each read of standard input is
split at that size), each datagram received is written to standard output
as it arrives, and the final --summary line adds "datagrams_sent",
"bytes_sent", "datagrams_received", "bytes_received" (application
datagrams and their payload bytes).

--mls speaks MLS-TLS (docs/mls-tls.md "Using MLS mode"): the client sends a
KeyPackage of --mls-suite N (default 1), joins by the server's Welcome, and
each key update (--key-update, --rekey-count, the --rekey-* policy) is an MLS
commit.  --ca validates an X.509 credential of the server (Ed25519 leaf) for
HOST or --servername; --insecure accepts any credential.  --summary json then
prints {"event": "handshake", ..., "mode": "mls", "mls_cipher_suite": 1,
"epoch": 1} and per epoch change {"event": "key_update", "kind": "mls",
"epoch": 2, "initiator": "client", "milliseconds": 0.9}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .. import aio
from ..config import Configuration
from ..constants import AlertDescription
from ..errors import CertificateError, TLSError
from ..events import (
    CertificateUpdated,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
    KeyUpdateRejected,
    SessionTicketReceived,
    Side,
    UpdateRejection,
)
from . import common, peer_report
from .common import CLIError
from .stdio import open_stdin, write_stdout

_CHUNK = 65536

DESCRIPTION = __doc__


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = common.subcommand(
        subparsers, "connect", help="connect to a TLS server; stdin to it, its bytes to stdout",
        description=DESCRIPTION, parents=parents,
    )
    p.add_argument("address", type=host_port, metavar="HOST:PORT", help="server to connect to")
    trust = p.add_mutually_exclusive_group()
    trust.add_argument("--ca", metavar="FILE", help="trust the CA certificates in FILE (default: the system's)")
    trust.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    p.add_argument("--servername", metavar="NAME", help="name to send (SNI) and verify (default: HOST)")
    p.add_argument("--cert", metavar="FILE", help="client certificate chain (PEM), if the server asks")
    p.add_argument("--key", metavar="FILE", help="private key of --cert (default: in the --cert file)")
    p.add_argument(
        "--summary", choices=["json"],
        help="print the handshake and later events as JSON lines on stderr",
    )
    p.add_argument(
        "--brief", action="store_true",
        help="print protocol, suite, group, peer, verification and EKU on stderr after the handshake",
    )
    p.add_argument(
        "--showcerts", action="store_true",
        help="print the server's certificate chain (fields and PEM) and the verify result on stderr",
    )
    common.add_key_password_option(p)
    p.add_argument(
        "--key-update", action="store_true",
        help="update the keys after the handshake (Extended Key Update if negotiated, else KeyUpdate)",
    )
    p.add_argument(
        "--rekey-count", type=common.positive_int, metavar="N",
        help="perform N key updates as fast as the server allows, then close (stdin is not read)",
    )
    common.add_tls_options(p)
    common.add_eku_options(p)
    common.add_cert_update_options(p, "--cert/--key (with --cert)")
    common.add_dtls_options(p)
    common.add_mls_options(p)
    p.set_defaults(run=run)


host_port = common.host_port


def run(args: argparse.Namespace) -> int:
    host, port = args.address
    mtu = common.dtls_mtu(args)
    config = common.build_client_configuration(args, host)
    common.apply_mls_options(config, args)
    if args.dtls:
        return asyncio.run(_connect_dtls(args, host, port, config, mtu))
    return asyncio.run(_connect(args, host, port, config))


class Summary:
    """``--summary json``: one JSON object per line on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.closed_event: ConnectionClosed | None = None

    def emit(self, record: dict[str, Any]) -> None:
        if self.enabled:
            print(json.dumps(record), file=sys.stderr, flush=True)

    def on_event(self, event: Event) -> None:
        if isinstance(event, HandshakeComplete):
            self.emit(common.handshake_summary(event))
        elif isinstance(event, KeyUpdated):
            self.emit({
                "event": "key_update", "kind": "standard", "direction": event.direction,
                "generation": event.generation, "requested_by_peer": event.requested_by_peer,
            })
        elif isinstance(event, KeyUpdateCompleted):
            self.emit(common.key_update_summary(event))
        elif isinstance(event, CertificateUpdated):
            self.emit(common.certificate_update_summary(event))
        elif isinstance(event, KeyUpdateRejected):
            self.emit({
                "event": "key_update_rejected", "status": event.status,
                "retry_after": event.retry_after,
            })
        elif isinstance(event, SessionTicketReceived):
            ticket = event.ticket
            self.emit({
                "event": "session_ticket", "lifetime": ticket.lifetime,
                "cipher_suite": ticket.cipher_suite.name,
                "max_early_data_size": ticket.max_early_data_size,
            })
        elif isinstance(event, ConnectionClosed):
            self.closed_event = event

    def closed(
        self, error: BaseException | None = None, counters: dict[str, int] | None = None,
        *, interrupted: bool = False,
    ) -> None:
        """The final record: the alert that ended the connection, or null
        (and, over DTLS, the datagram ``counters``; ``"interrupted": true``
        only after a Ctrl-C)."""
        event = self.closed_event
        record: dict[str, Any] = {
            "event": "closed",
            "alert": common.name_or_none(event.alert) if event is not None else None,
            "by_peer": event.by_peer if event is not None else None,
        }
        if counters is not None:
            record.update(counters)
        if error is not None:
            record["error"] = common.describe_error(error)
        if interrupted:
            record["interrupted"] = True
        self.emit(record)


async def _connect(args: argparse.Namespace, host: str, port: int, config: Configuration) -> int:
    where = common.format_address(host, port)
    summary = Summary(args.summary == "json")
    connections = aio.LiveConnections()
    reader: aio.TLSReader
    writer: aio.TLSWriter | aio.MLSWriter
    try:
        with _interruptible() as interrupted:
            try:
                if args.mls:
                    reader, writer = await aio.connect_mls(
                        host, port, config, aio.StreamOptions(event_handler=summary.on_event)
                    )
                else:
                    reader, writer = await aio.connect(
                        host, port, config,
                        aio.StreamOptions(event_handler=summary.on_event, connections=connections),
                    )
            except asyncio.CancelledError:
                if not interrupted():
                    raise
                # Ctrl-C before the handshake completed (a server that does not
                # answer): no session to close_notify; the last line all the same.
                summary.closed(interrupted=True)
                return EXIT_INTERRUPTED
    except (TLSError, aio.ConnectionLostError, aio.HandshakeTimeoutError) as exc:
        summary.closed(exc)
        hint = ""
        if (args.brief or args.showcerts) and isinstance(exc, CertificateError):
            # s_client shows a chain that fails verification; we abort the
            # handshake first (RFC 9846 §4.4.2.4), so say how to see it.
            hint = "; to see the chain the server sent, add --insecure"
        advice = common.handshake_hint(exc, host=host, servername=args.servername)
        if advice is not None:
            hint += f"; {advice}"
        raise CLIError(f"TLS handshake with {where} failed: {_explain(exc)}{hint}") from None
    except OSError as exc:
        raise CLIError(f"cannot connect to {where}: {common.describe_error(exc)}") from None

    _report(args, writer.handshake, where)
    if args.require_eku:
        problem = common.require_eku_message(writer.handshake, f"the server at {where}")
        if problem is not None:
            # The peer cannot give the post-compromise security asked for.
            writer.close_with_alert(AlertDescription.insufficient_security, problem)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            summary.closed()
            raise CLIError(problem)
    watcher = None if args.mls else common.start_credential_watcher(args, lambda: config, connections)
    try:
        with _interruptible() as interrupted:
            try:
                if args.key_update:
                    # Extended Key Update when negotiated (it replaces KeyUpdate), else
                    # KeyUpdate; finished before any of our data or our close_notify.
                    await writer.update_keys()
                if args.rekey_count:
                    await _rekey_and_close(args.rekey_count, reader, writer)
                    summary.closed()
                    return 0
                async with open_stdin() as stdin:
                    sender = asyncio.create_task(_send_stdin(stdin, writer))
                    try:
                        stdout_open = await _receive(reader)
                    finally:
                        sender.cancel()
            except asyncio.CancelledError:
                if not interrupted():
                    raise
                # Ctrl-C: end the connection cleanly rather than truncate it.
                await _close_promptly(reader, writer)
                summary.closed(interrupted=True)
                return EXIT_INTERRUPTED
        if not stdout_open:
            # Our reader went away (`connect ... | head -c 10`): close_notify to
            # the server, then exit as a program killed by SIGPIPE would.
            await _close_promptly(reader, writer)
            summary.closed(BrokenPipeError(errno.EPIPE, "Broken pipe"))
            return EXIT_BROKEN_PIPE
        # The server closed its side; close ours (a no-op if stdin already did).
        writer.close()
        await writer.wait_closed()
    except (TLSError, OSError, TimeoutError) as exc:
        writer.close()
        summary.closed(exc)
        raise CLIError(f"connection to {where} failed: {_explain(exc)}") from None
    except aio.KeyUpdateRejectedError as exc:
        writer.close()
        summary.closed(exc)
        raise CLIError(f"key update with {where} failed: {exc}") from None
    finally:
        if watcher is not None:
            watcher.stop()
    summary.closed()
    return 0


def _report(args: argparse.Namespace, event: HandshakeComplete, where: str) -> None:
    """--brief and --showcerts, on stderr: stdout carries only the server's bytes."""
    if args.brief:
        sys.stderr.write(peer_report.brief(event, args, where))
    if args.showcerts:
        sys.stderr.write(peer_report.showcerts(event, args))
    sys.stderr.flush()


async def _rekey_and_close(count: int, reader: aio.TLSReader, writer: aio.TLSWriter | aio.MLSWriter) -> None:
    """``count`` updates started by us, back to back; then close_notify and wait for the peer's."""
    ours = 0
    local = "client"

    def on_event(event: Event) -> None:
        nonlocal ours
        if isinstance(event, KeyUpdateCompleted) and event.initiator == local:
            ours += 1

    writer.add_event_handler(on_event)
    receiver = asyncio.create_task(_receive(reader))
    try:
        if not writer.handshake.extended_key_update and writer.handshake.mode != "mls":
            # Standard KeyUpdate: each is complete as soon as it is sent.
            for _ in range(count):
                await writer.update_keys()
        else:
            while ours < count:
                try:
                    # Returns when our update completes, or a crossing one of
                    # the server's that won (then ours is not counted: go again).
                    # In MLS mode the client's commit wins a crossing (profile §5).
                    await writer.update_keys()
                except aio.KeyUpdateRejectedError as exc:
                    if exc.status is not UpdateRejection.retry:
                        raise
                    logging.getLogger("longtls.cli").info("%s; waiting", exc)
                    await asyncio.sleep(max(exc.retry_after, 0.01))
        writer.close()
        await receiver  # until the server's close_notify (or the connection's error)
    finally:
        receiver.cancel()
    await writer.wait_closed()


_NO_DATAGRAMS = {"datagrams_sent": 0, "bytes_sent": 0, "datagrams_received": 0, "bytes_received": 0}


async def _connect_dtls(
    args: argparse.Namespace, host: str, port: int, config: Configuration, mtu: int
) -> int:
    """connect --dtls: standard input as datagrams, datagrams to standard output."""
    where = common.format_address(host, port)
    summary = Summary(args.summary == "json")
    connections = aio.LiveConnections()
    try:
        # The EKU flags work as over TLS: EKU is offered unless --no-eku
        # (the core's DTLS opt-in, docs/dtls.md, is switched on here).
        association = await aio.connect_dtls(
            host, port, config, mtu=mtu,
            options=aio.StreamOptions(event_handler=summary.on_event, connections=connections),
            extended_key_update=config.extended_key_update,
        )
    except (TLSError, aio.ConnectionLostError) as exc:
        summary.closed(exc, _NO_DATAGRAMS)
        raise CLIError(f"DTLS handshake with {where} failed: {_explain(exc)}") from None
    except OSError as exc:
        raise CLIError(f"cannot connect to {where} (UDP): {common.describe_error(exc)}") from None

    _report(args, association.handshake, where)
    if args.require_eku:
        problem = common.require_eku_message(association.handshake, f"the server at {where}")
        if problem is not None:
            association.close_with_alert(AlertDescription.insufficient_security, problem)
            summary.closed(None, common.dtls_summary(association))
            raise CLIError(problem)
    watcher = common.start_credential_watcher(args, lambda: config, connections)
    stdout_open = True
    try:
        with _interruptible() as interrupted:
            try:
                if args.key_update:
                    await association.update_keys()
                if args.rekey_count:
                    await _rekey_dtls(args.rekey_count, association)
                else:
                    async with open_stdin() as stdin:
                        sender = asyncio.create_task(_send_stdin_datagrams(stdin, association))
                        try:
                            async for payload in association:  # until the server's close_notify
                                if not write_stdout(payload):
                                    stdout_open = False
                                    break
                        finally:
                            sender.cancel()
            except asyncio.CancelledError:
                if not interrupted():
                    raise
                # Ctrl-C: close_notify, as over TLS (RFC 9147 §5.10 keeps TLS's alerts).
                association.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(association.wait_closed(), _CLOSE_GRACE)
                summary.closed(None, common.dtls_summary(association), interrupted=True)
                return EXIT_INTERRUPTED
        association.close()
        await association.wait_closed()
        if association.exception is not None:
            raise association.exception
        if not stdout_open:
            summary.closed(BrokenPipeError(errno.EPIPE, "Broken pipe"), common.dtls_summary(association))
            return EXIT_BROKEN_PIPE
    except (TLSError, OSError, TimeoutError) as exc:
        association.close()
        summary.closed(exc, common.dtls_summary(association))
        raise CLIError(f"association with {where} failed: {_explain(exc)}") from None
    except aio.KeyUpdateRejectedError as exc:
        association.close()
        summary.closed(exc, common.dtls_summary(association))
        raise CLIError(f"key update with {where} failed: {exc}") from None
    finally:
        if watcher is not None:
            watcher.stop()
    summary.closed(None, common.dtls_summary(association))
    return 0


async def _rekey_dtls(count: int, association: aio.DTLSAssociation) -> None:
    """``count`` updates started by us, back to back (received datagrams go to standard output)."""
    ours = 0

    def on_event(event: Event) -> None:
        nonlocal ours
        if isinstance(event, KeyUpdateCompleted) and event.initiator is Side.client:
            ours += 1

    association.add_event_handler(on_event)

    async def receive() -> None:
        async for payload in association:
            write_stdout(payload)

    receiver = asyncio.create_task(receive())
    try:
        if not association.handshake.extended_key_update:
            for _ in range(count):
                await association.update_keys()  # KeyUpdate, ACKed and answered
        else:
            while ours < count:
                try:
                    await association.update_keys()
                except aio.KeyUpdateRejectedError as exc:
                    if exc.status is not UpdateRejection.retry:
                        raise
                    logging.getLogger("longtls.cli").info("%s; waiting", exc)
                    await asyncio.sleep(max(exc.retry_after, 0.01))
    finally:
        receiver.cancel()


async def _send_stdin_datagrams(stdin: asyncio.StreamReader, association: aio.DTLSAssociation) -> None:
    """Standard input as datagrams of at most one record's payload; at its
    end, close_notify (we go on receiving until the server closes)."""
    size = association.max_datagram_payload
    try:
        while data := await stdin.read(_CHUNK):
            for start in range(0, len(data), size):
                association.send(data[start:start + size])
        association.close()
    except (TLSError, OSError):
        pass  # the association failed: the receiving side reports why


_HINTS = {
    AlertDescription.certificate_required: "the server wants a client certificate: give --cert FILE --key FILE",
    AlertDescription.no_application_protocol: "the server accepts none of the --alpn protocols",
    AlertDescription.handshake_failure: "check --groups and --ciphers against what the server supports",
}


def _explain(exc: BaseException) -> str:
    """The error, the alert name, and what to do about it when we know."""
    text = common.describe_error(exc)
    if isinstance(exc, TLSError) and exc.alert in _HINTS:
        text += f"; {_HINTS[exc.alert]}"
    return text


async def _send_stdin(stdin: asyncio.StreamReader, writer: aio.TLSWriter | aio.MLSWriter) -> None:
    """Standard input to the server; at its end, close_notify (half-close)."""
    try:
        while data := await stdin.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (TLSError, OSError):
        pass  # the connection failed: the receiving side reports why


async def _receive(reader: aio.TLSReader) -> bool:
    """The server's bytes to standard output, until its close_notify; False
    if standard output went away first (a broken pipe)."""
    while data := await reader.read(_CHUNK):
        if not write_stdout(data):
            return False  # nobody reads our output any more
    return True


#: Exit statuses, as a shell reports a program ended by that signal (128 + N):
#: SIGINT after a clean close, and a reader of our output that went away.
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

#: How long a Ctrl-C or a broken pipe waits for the server's close_notify.
_CLOSE_GRACE = 2.0


@contextlib.contextmanager
def _interruptible() -> Iterator[Callable[[], bool]]:
    """The first SIGINT (Ctrl-C) cancels the current task, so that it can close
    the connection with close_notify (RFC 9846 §6.1: without one the server sees
    a truncation); it yields whether that happened.  A second SIGINT gets
    Python's default: KeyboardInterrupt, exit 130 at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    seen = False

    def on_sigint() -> None:
        nonlocal seen
        seen = True
        loop.remove_signal_handler(signal.SIGINT)
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (ValueError, RuntimeError, NotImplementedError):
        yield lambda: False  # not the main thread, or no signals here: Ctrl-C as before
        return
    try:
        yield lambda: seen
    finally:
        if seen and task is not None:
            task.uncancel()
        loop.remove_signal_handler(signal.SIGINT)


async def _close_promptly(reader: aio.TLSReader, writer: aio.TLSWriter | aio.MLSWriter) -> None:
    """Send close_notify and wait (at most _CLOSE_GRACE seconds) for the
    server's, dropping what it still sends; then reset if it has not closed."""
    writer.close()

    async def discard() -> None:
        with contextlib.suppress(TLSError, OSError):
            while await reader.read(_CHUNK):
                pass

    dropper = asyncio.create_task(discard())
    try:
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_GRACE)
    except TimeoutError:
        writer.abort()
    finally:
        dropper.cancel()
