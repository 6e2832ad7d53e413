"""--ticket-keys FILE: session-ticket keys shared by processes and machines.

RFC 9846 §4.6.1 leaves the ticket's contents to the server, and longtls keeps
its session state inside the ticket (handshake/tickets.py).  A client can
resume on any server that holds the key its ticket was sealed with, so
servers behind one load balancer share their keys through this file
(docs/scaling.md):

    # longtls ticket keys: the first seals new tickets, every one opens tickets
    <the newest key: 44 characters of base64>
    <the one before it, still opening the tickets it sealed>

One key per line, 32 random bytes in base64 (``head -c 32 /dev/urandom |
base64``) or as 64 hex digits; blank lines and lines starting with ``#`` are
ignored.  Rotation: put a new key first and keep the old ones below it for as
long as their tickets live (``Configuration.ticket_lifetime``, 2 hours), then
drop them; a ticket under a key no longer in the file gets a full handshake,
never an error.  The file is read at start-up and again on SIGHUP (not
polled: a rotation is a step an operator or a cron job takes on every
machine, followed by a reload); a file that fails to load at a reload keeps
the keys in use.

The keys are as secret as a private key: whoever has them opens every
ticket and learns its resumption PSK, so can pose as this server to each
client that resumes with one, and, where resumption runs without (EC)DHE
(psk_ke; longtls offers and accepts psk_dhe_ke by default), decrypt those
connections too (RFC 9846 §8.1 and its security appendix on self-encrypted
tickets).  A file that group or others may read is used, with a warning.

This module must not import ``cli.common`` (which calls it): its errors are
ConfigurationErrors, which the command line prints as one error line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import os
import stat

from ..config import Configuration
from ..errors import ConfigurationError

__all__ = ["KEY_LENGTH", "SharedTicketKeys", "add_option", "apply", "load_ticket_keys", "parse_ticket_keys"]

logger = logging.getLogger("longtls.cli")

#: AES-256-GCM keys (handshake/tickets.py seals with AES-256-GCM).
KEY_LENGTH = 32
_EXPECTED = (
    f"{KEY_LENGTH} bytes in base64 (head -c {KEY_LENGTH} /dev/urandom | base64) "
    f"or {2 * KEY_LENGTH} hex digits"
)


class SharedTicketKeys:
    """Ticket keys a ``--workers`` supervisor handed to its worker (no --ticket-keys):
    kept on the parsed arguments, so every configuration the worker builds (at
    start-up and at each reload) uses them.  Its repr shows no key."""

    __slots__ = ("keys",)

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self.keys = keys

    def __repr__(self) -> str:
        return f"<SharedTicketKeys {len(self.keys)} key(s)>"


def parse_ticket_keys(text: str, source: str) -> tuple[bytes, ...]:
    """The keys in a ticket key file's text, first (sealing) key first, without repeats.

    Raises ConfigurationError naming ``source`` and the line (never its contents:
    a line that is almost a key is still a secret)."""
    keys: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = _decode_key(line)
        if key is None:
            raise ConfigurationError(f"{source}, line {number}: not a ticket key ({_EXPECTED})")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise ConfigurationError(f"{source} holds no ticket key (one per line: {_EXPECTED})")
    return tuple(keys)


def _decode_key(line: str) -> bytes | None:
    if len(line) == 2 * KEY_LENGTH:
        try:
            return bytes.fromhex(line)
        except ValueError:
            pass  # 64 characters of base64 would be 48 bytes: not a key either way
    try:
        key = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_LENGTH else None


def load_ticket_keys(path: str) -> tuple[bytes, ...]:
    """Read a ticket key file; warn (once per read) if group or others may read it."""
    try:
        with open(path, encoding="utf-8") as file:
            mode = os.fstat(file.fileno()).st_mode
            text = file.read()
    except OSError as exc:
        raise ConfigurationError(f"--ticket-keys {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"--ticket-keys {path}: not a text file ({_EXPECTED}, one per line)") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "%s: group or others may read the ticket keys (mode %03o): whoever reads them can open "
            "every session ticket and pose as this server to the clients resuming; chmod 600 %s",
            path, stat.S_IMODE(mode), path,
        )
    return parse_ticket_keys(text, path)


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ticket-keys", metavar="FILE",
        help="session-ticket keys shared by processes and machines, one per line (32 bytes, base64): "
        "the first seals new tickets, all open them; re-read on SIGHUP (docs/scaling.md)",
    )


def apply(config: Configuration, args: argparse.Namespace) -> None:
    """Put --ticket-keys (or the keys a --workers supervisor handed over) in ``config``."""
    path = getattr(args, "ticket_keys", None)
    if path:
        config.ticket_keys = load_ticket_keys(path)
        return
    shared = getattr(args, "shared_ticket_keys", None)
    if isinstance(shared, SharedTicketKeys):
        config.ticket_keys = shared.keys
