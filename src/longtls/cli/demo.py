"""longtls demo: live key renewal on long-lived links, nothing to set up.

Two links run side by side on loopback, each a server and a client with a
CA made in memory, streaming random data both ways while their keys are
renewed every --interval seconds, by the client and the server in turn:

  EKU  TLS 1.3 with Extended Key Update: each update a fresh key exchange
       (X25519MLKEM768 hybrid by default, --group) inside the connection;
  MLS  MLS-TLS (docs/mls-tls.md): a two-party MLS group keys the TLS 1.3
       records; each update an MLS commit, a new epoch (suite 0xF0A1,
       ML-KEM-768 + X25519, by default; --mls-suite).

--mls runs the MLS link alone, --no-mls the EKU link alone.  On a terminal a
table is redrawn live (one row per link: generation or epoch, who started
the last update, its latency, throughput each way, bytes verified);
otherwise one line per link and interval.

Half-way through, the EKU link's server certificate is renewed (same CA and
names, a new key and serial number) and handed to the client on the live
connection as a Certificate Update; a line shows the certificate the client
received (--no-cert-update: no renewal; MLS has no Certificate Update).

At the end the SHA-256 of everything sent is compared with the SHA-256 of
everything received, each way on each link.  Exit status 0 means every byte
arrived intact and every update completed ("verified: OK").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ..constants import EKUProfileName
from ..demo import DEFAULT_MLS_SUITE, LINKS, DemoOptions, run_demo
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
        help="renew the EKU link's server certificate half-way and send it on the live connection (default: on)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--mls", dest="links", action="store_const", const=("mls",), default=LINKS,
        help="only the MLS-keyed link (default: both links, side by side)",
    )
    which.add_argument(
        "--no-mls", dest="links", action="store_const", const=("eku",),
        help="only the EKU-keyed link",
    )
    p.add_argument(
        "--mls-suite", type=common.mls_suite_number, default=DEFAULT_MLS_SUITE, metavar="N",
        help="the MLS link's cipher suite: 1, 3 or 0xF0A1 (61601, ML-KEM-768 + X25519; the default)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.keylog:
        common.check_writable(args.keylog, "key log file")
    options = DemoOptions(
        duration=args.duration, interval=args.interval, group=args.group,
        eku_profile=EKUProfileName(args.eku_profile), keylog=args.keylog,
        renew_certificate=args.cert_update, links=args.links, mls_suite=args.mls_suite,
    )
    return asyncio.run(run_demo(options, sys.stdout))
