"""What the subcommands share: the argument parser, TLS options, configuration
building, error wording and the connection summary."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..config import Configuration
from ..constants import CipherSuite, NamedGroup
from ..crypto.groups import SUPPORTED_GROUPS
from ..crypto.suites import SUITES
from ..errors import ConfigurationError, TLSError
from ..events import HandshakeComplete

PROG = "longtls"
logger = logging.getLogger("longtls.cli")


class CLIError(Exception):
    """A failure to report as one ``longtls: error: ...`` line (exit status 1)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# -- option types (argparse ``type=``: raise ArgumentTypeError with a clear message)


def _split(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty {what} name in {text!r} (give a comma-separated list)")
    return items


def group_list(text: str) -> tuple[NamedGroup, ...]:
    """Comma-separated NamedGroup names, any case: ``x25519,X25519MLKEM768``."""
    by_name = {g.name.lower(): g for g in NamedGroup}
    groups: list[NamedGroup] = []
    for name in _split(text, "group"):
        group = by_name.get(name.lower())
        if group is None or group not in SUPPORTED_GROUPS:
            known = "unknown" if group is None else "unsupported"
            choices = ", ".join(g.name for g in SUPPORTED_GROUPS)
            raise argparse.ArgumentTypeError(f"{known} group {name!r} (choose from {choices})")
        if group not in groups:
            groups.append(group)
    return tuple(groups)


def cipher_list(text: str) -> tuple[CipherSuite, ...]:
    """Comma-separated IANA cipher suite names: ``TLS_AES_128_GCM_SHA256,...``."""
    by_name = {s.name.lower(): s for s in CipherSuite}
    suites: list[CipherSuite] = []
    for name in _split(text, "cipher suite"):
        suite = by_name.get(name.lower())
        if suite is None or suite not in SUITES:
            choices = ", ".join(s.name for s in SUITES)
            raise argparse.ArgumentTypeError(f"unknown cipher suite {name!r} (choose from {choices})")
        if suite not in suites:
            suites.append(suite)
    return tuple(suites)


def alpn_list(text: str) -> tuple[str, ...]:
    """Comma-separated ALPN protocol ids: ``h2,http/1.1``."""
    protocols = _split(text, "ALPN protocol")
    for protocol in protocols:
        if len(protocol.encode()) > 255:
            raise argparse.ArgumentTypeError(f"ALPN protocol {protocol[:20]!r}... is over 255 bytes")
    return tuple(protocols)


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (give a number from 0 to 65535)")
    return port


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid time {text!r} (give a positive number of seconds)")
    return value


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """--groups, --ciphers, --alpn, --keylog, --timeout (client and server alike)."""
    tls = parser.add_argument_group("TLS options")
    tls.add_argument(
        "--groups", type=group_list, metavar="LIST",
        help="key exchange groups in order of preference, e.g. X25519MLKEM768,x25519",
    )
    tls.add_argument(
        "--ciphers", type=cipher_list, metavar="LIST",
        help="cipher suites in order of preference, e.g. TLS_AES_256_GCM_SHA384",
    )
    tls.add_argument("--alpn", type=alpn_list, metavar="LIST", help="ALPN protocols, e.g. h2,http/1.1")
    tls.add_argument("--keylog", metavar="FILE", help="append secrets to FILE (SSLKEYLOGFILE format)")
    tls.add_argument(
        "--timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
        help="handshake timeout (default: %(default)g)",
    )


# -- configuration ----------------------------------------------------------------------


def build_configuration(args: argparse.Namespace, *, is_client: bool) -> Configuration:
    """A Configuration with the shared TLS options of ``args`` applied."""
    config = Configuration(is_client=is_client)
    if args.groups:
        config.groups = args.groups
        # The first ClientHello carries a key share for the most preferred group
        # only; the server asks (HelloRetryRequest) if it wants another.
        config.key_share_groups = args.groups[:1]
    if args.ciphers:
        config.cipher_suites = args.ciphers
    if args.alpn:
        config.alpn_protocols = args.alpn
    if args.keylog:
        _check_writable(args.keylog, "key log file")
        config.set_keylog_file(args.keylog)
    return config


def load_credentials(
    config: Configuration, cert: str, key: str | None, chain: str | None = None
) -> None:
    """Certificate (+ intermediates) and private key; ConfigurationError says what is wrong."""
    config.load_cert_chain(cert, key)
    if chain is not None:
        from ..crypto.certificates import load_certificate_chain

        extra = [c for c in load_certificate_chain(chain) if c not in config.certificate_chain]
        config.certificate_chain = [*config.certificate_chain, *extra]


def _check_writable(path: str, what: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CLIError(f"cannot write {what} {path!r}: {exc.strerror}") from None
    os.close(fd)


# -- reporting --------------------------------------------------------------------------


def describe_error(exc: BaseException) -> str:
    """One line for the user: the reason and, for TLS errors, the alert name."""
    if isinstance(exc, ConfigurationError):
        return str(exc.args[0])
    if isinstance(exc, TLSError):
        return str(exc)  # "<reason> (<alert name>)"
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        # asyncio's strerror is "Connect call failed (...)"; the OS says why.
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def name_or_none(value: Any) -> str | None:
    return None if value is None else str(value.name)


def handshake_summary(event: HandshakeComplete) -> dict[str, Any]:
    return {
        "event": "handshake",
        "version": event.version,
        "cipher_suite": event.cipher_suite.name,
        "group": name_or_none(event.group),
        "signature_scheme": name_or_none(event.signature_scheme),
        "alpn": event.alpn_protocol,
        "peer_subject": event.peer_subject,
        "resumed": event.resumed,
    }


def setup_logging(verbose: bool) -> None:
    """``-v``: everything at DEBUG; otherwise warnings, as ``longtls: <message>``."""
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr,
            format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        )
    else:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{PROG}: %(message)s")


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def common_parent() -> ArgumentParser:
    """Options every subcommand accepts after its name as well (``longtls connect -v``)."""
    parent = ArgumentParser(add_help=False)
    parent.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="log at DEBUG level to stderr",
    )
    return parent


def subcommand(
    subparsers: Any, name: str, *, help: str, description: str, parents: Sequence[argparse.ArgumentParser]
) -> ArgumentParser:
    parser: ArgumentParser = subparsers.add_parser(
        name, help=help, description=description, parents=list(parents),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
