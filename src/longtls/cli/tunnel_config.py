"""``longtls tunnel --config FILE``: any number of tunnels from one TOML file.

The format (docs/tunnel-config.md)::

    metrics = "127.0.0.1:9100"      # optional: one endpoint for the process
    grace = 5                       # optional: seconds to drain (default 30)

    [tunnel.web]
    mode = "server"                 # "server" or "client"
    listen = "0.0.0.0:8443"
    forward = "127.0.0.1:8000"
    cert = "certs/server.pem"       # relative to this file's directory
    key = "certs/server.key"
    rekey-interval = 30

Each ``[tunnel.NAME]`` table is turned into the flags of ``longtls tunnel
MODE`` (``key = value`` -> ``--key=value``; ``true`` -> ``--key``; ``false``
-> ``--no-key`` where that flag exists, else nothing; a list -> the flag once
per item for a repeatable flag, else the items joined with commas) and parsed
by the real ``tunnel server|client`` parser: every flag of the command line
is a key of the file, with the same meaning and the same checks, including
flags added later.  The errors argparse and the configuration builder raise
are given back as ``FILE: tunnel 'NAME': key 'KEY': problem``.

Everything is checked before anything starts: the TOML, every key and value,
every file (certificates and keys load, CAs parse), and that no two tunnels
listen on the same address; ``--check`` stops there and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ..config import Configuration
from ..errors import ConfigurationError, TLSError
from ..tunnel import Address, format_address
from . import common, logs
from .common import CLIError, logger
from .tunnel_runner import TunnelRunner, TunnelSpec, describe

__all__ = ["ConfigFileError", "TunnelFile", "add_options", "load", "run"]

DEFAULT_GRACE = 30.0

#: Top-level keys: settings of the process, not of one tunnel.
TOP_LEVEL_KEYS = ("grace", "log-format", "log-level", "metrics", "tunnel")
#: Flags of ``tunnel MODE`` that belong to the process: at the top of the file.
_PROCESS_FLAGS = frozenset({"metrics", "grace", "log-level", "log-format"})
#: Flags that make no sense inside a file.  Decision: --workers runs copies
#: of one command line (cli/workers.py); a file describes one process; -v and
#: -q stay on the command line (log-level at the top of the file says it there).
_NOT_IN_FILE = frozenset({"help", "workers", "verbose", "quiet"})
#: Flags whose value is a path: relative to the config file's directory.
_PATH_METAVARS = frozenset({"FILE", "DIR", "PATH", "FILE|DIR", "DIR|FILE"})

AddParser = Callable[[Any, list[argparse.ArgumentParser]], None]
Build = Callable[[argparse.Namespace], Configuration]


class ConfigFileError(Exception):
    """The file cannot be used: ``problems`` holds one line per problem, each
    naming the file and, where there is one, the tunnel and the key."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass
class TunnelFile:
    """A checked config file: the process settings and one spec per tunnel, in file order."""

    path: Path
    grace: float = DEFAULT_GRACE
    metrics: Address | None = None
    log_level: str | None = None
    log_format: str | None = None
    specs: list[TunnelSpec] = field(default_factory=list)


class _Problem(Exception):
    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


class _RaisingParser(common.ArgumentParser):
    """The tunnel parsers, but a usage error is an exception to map to a key, not an exit."""

    def error(self, message: str) -> NoReturn:
        raise _Problem(message)


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--check`` on ``longtls tunnel``."""
    group = parser.add_argument_group("config file (docs/tunnel-config.md)")
    group.add_argument(
        "--config", metavar="FILE",
        help="run the tunnels of a TOML file (instead of MODE and its flags); "
        "SIGHUP reads it again and applies what changed",
    )
    group.add_argument(
        "--check", action="store_true",
        help="with --config: check the whole file (keys, values, certificates, listen addresses), "
        "print a summary and exit (0: usable, 2: not) without listening",
    )


# -- reading ----------------------------------------------------------------------------


def _mode_parsers(add_parser: AddParser) -> tuple[argparse.ArgumentParser, dict[str, common.ArgumentParser]]:
    """A fresh ``longtls tunnel`` parser tree whose errors raise, and its mode parsers."""
    root = _RaisingParser(prog=common.PROG, add_help=False)
    commands = root.add_subparsers(dest="command")
    add_parser(commands, [common.common_parent()])
    tunnel = _subparsers(root)["tunnel"]
    return root, _subparsers(tunnel)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, common.ArgumentParser]:
    # Built by common.subcommand from a _RaisingParser: each is one (argparse
    # makes subparsers of the parent's class).
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {name: sub for name, sub in action.choices.items() if isinstance(sub, common.ArgumentParser)}
    return {}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _scalar(key: str, value: Any, action: argparse.Action, base: Path) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Problem(f"expected a value ({action.metavar or 'text'}), not {_kind(value)}", key)
    text = str(value)
    if action.metavar in _PATH_METAVARS and text:
        text = str(base / os.path.expanduser(text))  # an absolute path stays as it is
    return text


def _flags(key: str, value: Any, parser: common.ArgumentParser, base: Path) -> list[str]:
    """The command-line flags for ``key = value`` in a tunnel table."""
    flag = "--" + key
    action = parser._option_string_actions.get(flag)
    if key in _NOT_IN_FILE or key.startswith("-"):
        raise _Problem("not allowed in a config file", key)
    if key in _PROCESS_FLAGS:
        raise _Problem("set it at the top level of the file (one for the whole process)", key)
    if action is None:
        suggestion = parser.suggest_flag(flag)
        hint = f" (did you mean '{suggestion[2:]}'?)" if suggestion else ""
        raise _Problem(f"unknown key{hint}", key)
    if action.nargs == 0:  # a switch: store_true, --x/--no-x ...
        if not isinstance(value, bool):
            raise _Problem(f"expected true or false, not {_kind(value)} {value!r}", key)
        if value:
            return [flag]
        negative = "--no-" + key
        return [negative] if negative in action.option_strings else []
    if isinstance(value, list):
        items = [_scalar(key, item, action, base) for item in value]
        if isinstance(action, argparse._AppendAction | argparse._ExtendAction):
            return [f"{flag}={item}" for item in items]
        if action.nargs in ("+", "*") or isinstance(action.nargs, int):
            return [flag, *items]
        return [f"{flag}={','.join(items)}"]  # --groups, --alpn, --eku-profile ...: comma lists
    return [f"{flag}={_scalar(key, value, action, base)}"]


_ARGUMENT = re.compile(r"^argument ([^:]+): (.*)$", re.DOTALL)
_REQUIRED = re.compile(r"^the following arguments are required: (.*)$")
_FLAG = re.compile(r"--[a-z0-9][a-z0-9-]*")


def _key_of(flags: str, table: dict[str, Any]) -> str | None:
    """The key of ``table`` that one of ``flags`` ("--a/--no-a", "--b, --c") came from."""
    for flag in _FLAG.findall(flags):
        name: str = flag[2:]
        if name in table:
            return name
        if name.startswith("no-") and name[3:] in table:
            return name[3:]
    names: list[str] = _FLAG.findall(flags)
    return names[0][2:] if names else None


def _parse_table(
    name: str, table: dict[str, Any], root: argparse.ArgumentParser,
    modes: dict[str, common.ArgumentParser], base: Path,
) -> argparse.Namespace:
    mode = table.get("mode")
    if mode is None:
        raise _Problem('missing: give mode = "server" or mode = "client"', "mode")
    if mode not in modes:
        raise _Problem(f'expected "server" or "client", not {mode!r}', "mode")
    parser = modes[mode]
    argv: list[str] = []
    for key, value in table.items():
        if key != "mode":
            argv += _flags(key, value, parser, base)
    try:
        args = root.parse_args(["tunnel", str(mode), *argv])
    except _Problem as exc:
        message = exc.message.split(" (see '")[0]  # common.ArgumentParser's pointer to --help
        if m := _ARGUMENT.match(message):
            raise _Problem(m.group(2), _key_of(m.group(1), table)) from None
        if m := _REQUIRED.match(message):
            missing = _key_of(m.group(1), table)
            raise _Problem(f"missing (a tunnel {mode} needs it)", missing) from None
        raise
    return args


def _problem_key(message: str, table: dict[str, Any], args: argparse.Namespace) -> str | None:
    """For a failure of the configuration builder: the key it is about, by a
    flag it names that the table sets, else by the file or value it quotes,
    else by a flag it names that the table lacks ("give --key FILE")."""
    flags: list[str] = [flag[2:] for flag in _FLAG.findall(message)]
    for name in flags:
        if name in table:
            return name
    for key in table:
        value = getattr(args, key.replace("-", "_"), None)
        if isinstance(value, str) and value and (f"'{value}'" in message or f'"{value}"' in message):
            return key
    return flags[0] if flags else None


def _listen_conflict(a: argparse.Namespace, b: argparse.Namespace) -> bool:
    """Would the two listeners take the same address (same transport, same port,
    same host or one of them on every interface)?"""
    (host_a, port_a), (host_b, port_b) = a.listen, b.listen
    if port_a == 0 or port_a != port_b or bool(a.dtls) != bool(b.dtls):
        return False
    return host_a == host_b or common.ALL_INTERFACES in (host_a, host_b)


def load(path: str, add_parser: AddParser, build: Build, *, verbose: bool = False) -> TunnelFile:
    """Read and check the whole file; ConfigFileError lists every problem found."""
    where = path
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigFileError([f"{where}: cannot read it: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([f"{where}: not valid TOML: {exc}"]) from None
    base = Path(path).resolve().parent
    loaded = TunnelFile(Path(path))
    problems: list[str] = []

    for key in document:
        if key not in TOP_LEVEL_KEYS:
            close = [k for k in TOP_LEVEL_KEYS if k in key or key in k]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(
                f"{where}: key '{key}': unknown top-level key{hint}; "
                "the settings of a tunnel go in its [tunnel.NAME] table"
            )
    grace = document.get("grace", DEFAULT_GRACE)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace <= 0:
        problems.append(f"{where}: key 'grace': expected a number of seconds above 0, not {grace!r}")
    else:
        loaded.grace = float(grace)
    metrics = document.get("metrics")
    if metrics is not None:
        try:
            if not isinstance(metrics, str):
                raise argparse.ArgumentTypeError(f'expected "ADDR:PORT", not {_kind(metrics)}')
            loaded.metrics = common.host_port(metrics)
        except argparse.ArgumentTypeError as exc:
            problems.append(f"{where}: key 'metrics': {exc}")

    for key, choices in (("log-level", tuple(logs.LEVELS)), ("log-format", ("text", "json"))):
        value = document.get(key)
        if value is not None and value not in choices:
            problems.append(f"{where}: key '{key}': expected one of {', '.join(choices)}, not {value!r}")
        elif value is not None:
            setattr(loaded, key.replace("-", "_"), value)

    tunnels = document.get("tunnel")
    if not isinstance(tunnels, dict) or not tunnels:
        problems.append(f"{where}: no [tunnel.NAME] table: nothing to run")
        raise ConfigFileError(problems)
    root, modes = _mode_parsers(add_parser)
    for name, table in tunnels.items():
        prefix = f"{where}: tunnel '{name}'"
        if not isinstance(table, dict):
            problems.append(f"{prefix}: expected a table ([tunnel.{name}]), not {_kind(table)}")
            continue
        try:
            args = _parse_table(name, table, root, modes, base)
        except _Problem as exc:
            problems.append(f"{prefix}: key '{exc.key}': {exc.message}" if exc.key else f"{prefix}: {exc.message}")
            continue
        args.verbose = verbose
        args.config = None
        try:
            configuration = build(args)
        except (CLIError, ConfigurationError, TLSError, OSError) as exc:
            message = common.describe_error(exc)
            culprit = _problem_key(message, table, args)
            problems.append(f"{prefix}: key '{culprit}': {message}" if culprit else f"{prefix}: {message}")
            continue
        for other in loaded.specs:
            if _listen_conflict(other.args, args):
                problems.append(
                    f"{prefix}: key 'listen': {common.format_address(*args.listen)} is also where tunnel "
                    f"'{other.name}' listens ({common.format_address(*other.args.listen)})"
                )
                break
        else:
            loaded.specs.append(TunnelSpec(args, configuration, name=str(name)))
    if problems:
        raise ConfigFileError(problems)
    return loaded


# -- running ----------------------------------------------------------------------------


def summary(loaded: TunnelFile) -> str:
    """What ``--check`` prints: the tunnels as they would start."""
    lines = [f"{loaded.path}: {len(loaded.specs)} tunnel(s), no problem found"]
    lines += [f"  {describe(spec, common.format_address(*spec.args.listen))}" for spec in loaded.specs]
    metrics = f"metrics on http://{format_address(loaded.metrics)}/metrics" if loaded.metrics else "no metrics"
    lines.append(f"  {metrics}; grace {loaded.grace:g} s")
    return "\n".join(lines)


def run(args: argparse.Namespace, add_parser: AddParser, build: Build) -> int:
    """``longtls tunnel --config FILE [--check]``: the exit status."""
    def refuse(problems: Sequence[str]) -> int:
        for problem in problems:
            print(f"{common.PROG}: error: {problem}", file=sys.stderr)
        return 2

    if args.mode is not None:
        return refuse([
            f"--config FILE and a MODE ({args.mode}) exclude each other: the file gives each tunnel its mode"
        ])
    if args.config is None:
        hint = "--check needs --config FILE" if args.check else "give a MODE (server or client) or --config FILE"
        return refuse([f"{hint} (see '{common.PROG} tunnel --help')"])
    try:
        loaded = load(args.config, add_parser, build, verbose=args.verbose)
    except ConfigFileError as exc:
        return refuse(exc.problems)
    if args.check:
        print(summary(loaded))
        return 0
    # The file's logging settings; the command line's (-v, -q, --log-*) win.
    said = args.log_level is not None or args.verbose or getattr(args, "quiet", False)
    if (loaded.log_level and not said) or (loaded.log_format and args.log_format is None):
        args.log_level = args.log_level if said else loaded.log_level
        args.log_format = args.log_format or loaded.log_format
        logs.setup(args)

    def reload() -> list[TunnelSpec] | None:
        """SIGHUP: the whole file again; if anything is wrong, nothing changes."""
        try:
            again = load(args.config, add_parser, build, verbose=args.verbose)
        except ConfigFileError as exc:
            for problem in exc.problems:
                logger.error("reload failed, every tunnel keeps running as it was: %s", problem)
            return None
        if again.metrics != loaded.metrics:
            logger.warning(
                "%s: key 'metrics': a new metrics address needs a restart; still serving on %s",
                args.config, format_address(loaded.metrics) if loaded.metrics else "none",
            )
        runner.grace = again.grace
        return again.specs

    runner = TunnelRunner(
        grace=loaded.grace, metrics_address=loaded.metrics, reload=reload,
        source=args.config,
    )
    return asyncio.run(runner.run(loaded.specs))
