"""longtls demo: a live Extended Key Update demonstration, nothing to set up.

A server and a client on loopback, with a CA made in memory, stream random
data both ways while an extended key update (a fresh X25519MLKEM768 hybrid
key exchange by default) runs every --interval seconds, started by the client
and the server in turn.  On a terminal a table is redrawn live (generation,
who started the last update, its latency, throughput each way, bytes
verified); otherwise one line per interval.

Half-way through, the server's certificate is renewed (same CA and names, a
new key and serial number) and handed to the client on the live connection
as a Certificate Update; a line shows the certificate the client received
(--no-cert-update: no renewal).

At the end the SHA-256 of everything sent is compared with the SHA-256 of
everything received, each way.  Exit status 0 means every byte arrived intact
and every update completed ("verified: OK").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ..constants import EKUProfileName
from ..demo import DemoOptions, run_demo
from ..handshake.eku_profiles import DEFAULT_PROFILE, PROFILES
from . import common

DESCRIPTION = __doc__


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = common.subcommand(
        subparsers, "demo", help="watch a connection rekey itself while data streams both ways",
        description=DESCRIPTION, parents=parents,
    )
    p.add_argument(
        "--duration", type=common.positive_seconds, default=10.0, metavar="SECONDS",
        help="how long to stream (default: %(default)g)",
    )
    p.add_argument(
        "--interval", type=common.positive_seconds, default=1.0, metavar="SECONDS",
        help="seconds between key updates (default: %(default)g)",
    )
    p.add_argument(
        "--group", type=common.group_name, default=DemoOptions.group, metavar="NAME",
        help="key exchange group for the handshake and every update (default: X25519MLKEM768)",
    )
    p.add_argument(
        "--eku-profile", choices=[p.value for p in PROFILES], default=DEFAULT_PROFILE.value,
        help="Extended Key Update draft to speak (default: %(default)s)",
    )
    p.add_argument("--keylog", metavar="FILE", help="append secrets to FILE (SSLKEYLOGFILE format)")
    p.add_argument(
        "--cert-update", action=argparse.BooleanOptionalAction, default=True,
        help="renew the server's certificate half-way and send it on the live connection (default: on)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.keylog:
        common.check_writable(args.keylog, "key log file")
    options = DemoOptions(
        duration=args.duration, interval=args.interval, group=args.group,
        eku_profile=EKUProfileName(args.eku_profile), keylog=args.keylog,
        renew_certificate=args.cert_update,
    )
    return asyncio.run(run_demo(options, sys.stdout))
