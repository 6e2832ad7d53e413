"""Logging for the ``longtls`` command: one rule for the level, two formats.

The level (docs/logging.md, "Levels"):

1. ``--log-level debug|info|warning|error`` when given;
2. else ``-v``/``--verbose``: debug;
3. else ``-q``/``--quiet``: warning;
4. else the command's default: info for the long-running servers (``serve``,
   ``tunnel``), whose per-connection records are the point of a log;
   warning for ``connect``, ``demo`` and ``certs``, whose own output
   (``--summary``, ``--brief``, the demo's lines) already says what happened.

The level applies to every ``longtls.*`` logger at once: no module raises or
lowers its own.  ``-q`` therefore drops every INFO record (connection open
and close, key updates, handshake failures, reloads and renewals) and every
DEBUG one; warnings (a failure after the handshake, a refused renewal, an
unreachable target, an expiring certificate) and errors stay.

``--log-format text`` (the default) writes ``longtls: <message>`` lines, or
``<time> <logger> <LEVEL>: <message>`` at debug level; ``--log-format json``
writes one JSON object per line with the fixed keys ``time`` (epoch seconds),
``level``, ``logger``, ``event`` and ``message``, plus the record's own
fields (``JSONFormatter``; the schema is docs/logging.md's).  The start-up
line of a server (``announce``) follows the format too, so that in JSON mode
every line on stderr is a JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import traceback
from typing import Any, TextIO

from ..aio.logrecords import EVENT, FIELDS

__all__ = [
    "DEFAULT_LEVELS",
    "EVENT",
    "FIELDS",
    "LEVELS",
    "JSONFormatter",
    "add_logging_options",
    "announce",
    "log_level",
    "setup",
]

PROG = "longtls"
#: The --log-level choices and what they mean to ``logging``.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
#: Step 4 of the rule: the default level of each command (others: warning).
DEFAULT_LEVELS = {"serve": "info", "tunnel": "info"}
#: ``event`` of a record that is not one of docs/logging.md's events.
PLAIN_EVENT = "log"

_TEXT_FORMAT = f"{PROG}: %(message)s"
_DEBUG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"

#: Marks the handler ``setup`` installs.
_OURS = "_longtls_cli_handler"
#: How the current process formats its lines (set by ``setup``).
_format = "text"


def add_logging_options(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """-v, -q, --log-level, --log-format.  On a subcommand's parser (``top_level``
    False) the defaults are SUPPRESS, so that ``longtls -v serve`` keeps the -v
    given before the subcommand's name."""
    default: Any = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("logging (docs/logging.md)")
    group.add_argument(
        "-v", "--verbose", action="store_true", default=False if top_level else argparse.SUPPRESS,
        help="log at DEBUG level to stderr (as --log-level debug)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=False if top_level else argparse.SUPPRESS,
        help="warnings and errors only (as --log-level warning): no per-connection INFO lines",
    )
    group.add_argument(
        "--log-level", choices=list(LEVELS), default=default, metavar="LEVEL",
        help="debug, info, warning or error (default: info for serve and tunnel, warning for "
        "the others; beats -v and -q)",
    )
    group.add_argument(
        "--log-format", choices=("text", "json"), default=default, metavar="FORMAT",
        help="text ('longtls: ...' lines) or json (one object per line: time, level, logger, "
        "event, message and the event's fields) (default: text)",
    )


def log_level(args: argparse.Namespace) -> int:
    """The level the rule above gives for ``args``."""
    name: str | None = getattr(args, "log_level", None)
    if name is None:
        if getattr(args, "verbose", False):
            name = "debug"
        elif getattr(args, "quiet", False):
            name = "warning"
        else:
            name = DEFAULT_LEVELS.get(getattr(args, "command", "") or "", "warning")
    return LEVELS[name]


def setup(args: argparse.Namespace, stream: TextIO | None = None) -> None:
    """Install the one stderr handler of the ``longtls`` loggers."""
    global _format
    level = log_level(args)
    # Code that still asks ``args.verbose`` (the internal-error hint, older
    # level tweaks) sees what the rule decided: --log-level debug is -v.
    args.verbose = level <= logging.DEBUG
    _format = getattr(args, "log_format", None) or "text"
    if stream is None:
        stream = sys.stderr.raw if isinstance(sys.stderr, JSONLines) else sys.stderr
        if _format == "json":
            # Every line on stderr is a JSON object in JSON mode, also what is
            # printed rather than logged (an error line, a start-up line of
            # code that prints its own): see JSONLines.
            sys.stderr = JSONLines(stream)
    handler = logging.StreamHandler(stream)
    # The level is the handler's too: a logger set to INFO somewhere still
    # cannot bring INFO lines back under -q.
    handler.setLevel(level)
    if _format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(_DEBUG_FORMAT if level <= logging.DEBUG else _TEXT_FORMAT))
    # The root logger, as logging.basicConfig did: asyncio's own records (an
    # unhandled exception in a callback) come out the same way.  Only our own
    # earlier handler is replaced (main() run twice in one process): others
    # (pytest's log capture) stay.
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OURS, False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library code must not decide what the user sees: no longtls logger keeps
    # a level of its own (one rule, above).
    for name in list(logging.Logger.manager.loggerDict):
        if name == "longtls" or name.startswith("longtls."):
            logging.getLogger(name).setLevel(logging.NOTSET)


class JSONFormatter(logging.Formatter):
    """One JSON object per record (docs/logging.md, "JSON"): the fixed keys
    first, then the record's fields; a field never replaces a fixed key."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, EVENT, None) or PLAIN_EVENT,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                obj.setdefault(key, value)
        if record.exc_info and record.exc_info[0] is not None:
            # -v only (internal errors): the traceback as one string field.
            obj.setdefault("traceback", "".join(traceback.format_exception(*record.exc_info)).rstrip())
        return json.dumps(obj, default=str, ensure_ascii=False)


class JSONLines(io.TextIOBase):
    """stderr in JSON mode: a line that is already a JSON object (a log record,
    ``connect --summary json``) passes as it is; any other line becomes one
    object, ``event`` "output", its ``message`` the line without the
    ``longtls: `` prefix, ``level`` error or warning when the line says so."""

    def __init__(self, raw: TextIO) -> None:
        super().__init__()
        self.raw = raw
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self.raw.write(self._line(line) + "\n")
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def fileno(self) -> int:
        return self.raw.fileno()

    @staticmethod
    def _line(line: str) -> str:
        if line.startswith("{") and line.endswith("}"):
            return line
        message = line.removeprefix(f"{PROG}: ")
        level = "info"
        for name in ("error", "warning"):
            if message.startswith(f"{name}: "):
                level = name
        record = logging.LogRecord(f"{PROG}.cli", LEVELS[level], __file__, 0, message, None, None)
        setattr(record, EVENT, "output")
        return JSONFormatter().format(record)


def announce(message: str, event: str = "listening", **fields: Any) -> None:
    """A server's start-up line: ``longtls: <message>`` on stderr as it always
    was (scripts wait for it), or one JSON object in JSON mode.  Not a log
    record: it is printed whatever the level (even with -q), as the promise
    that the server is ready."""
    if _format == "json":
        record = logging.LogRecord(f"{PROG}.cli", logging.INFO, __file__, 0, message, None, None)
        setattr(record, EVENT, event)
        setattr(record, FIELDS, fields)
        line = JSONFormatter().format(record)
    else:
        line = f"{PROG}: {message}"
    print(line, file=sys.stderr, flush=True)
