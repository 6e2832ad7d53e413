"""The ``longtls`` command: ``longtls [-v] COMMAND ...``.

Each subcommand is a module with ``add_parser(subparsers, parents)``, which
sets ``run(args) -> int`` as the parser's default.  Exit status: 0 success,
1 failure (one ``longtls: error: ...`` line on stderr), 2 bad arguments,
130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ConfigurationError
from . import certs, common, connect, decrypt, demo, logs, serve, tunnel

logger = common.logger

COMMANDS = (serve, connect, tunnel, certs, demo, decrypt)


def build_parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(
        prog=common.PROG,
        description="TLS 1.3 with Extended Key Update: test client and server, tunnel, "
        "certificates and a live demo, built on longtls.",
    )
    logs.add_logging_options(parser, top_level=True)  # -v, -q, --log-level, --log-format
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parent = common.common_parent()
    logs.add_logging_options(parent)  # also after the subcommand's name: longtls serve -q
    parents = [parent]
    for command in COMMANDS:
        command.add_parser(subparsers, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, bad arguments
        return exc.code if isinstance(exc.code, int) else 1
    args.command_line = list(sys.argv[1:] if argv is None else argv)  # tunnel --workers runs it again
    logs.setup(args)  # the one rule for levels and formats (docs/logging.md)
    try:
        status: int = args.run(args)
    except (common.CLIError, ConfigurationError) as exc:
        print(f"{common.PROG}: error: {common.describe_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback with -v
        logger.debug("internal error", exc_info=True)
        hint = "" if args.verbose else " (run with -v for details)"
        print(f"{common.PROG}: error: internal error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
