"""longtls certs --out DIR: a throwaway CA with a server and a client certificate.

Writes ca.pem, ca.key, server.pem, server.key, client.pem, client.key into
DIR (created with mode 0700; keys are 0600 and unencrypted).  The server
certificate is valid for --names (DNS names and IP addresses); the client
certificate (CN "longtls client") is for mutual TLS:

  longtls serve   --cert DIR/server.pem --key DIR/server.key --echo
  longtls connect 127.0.0.1:4433 --ca DIR/ca.pem
  longtls serve   ... --ca DIR/ca.pem --verify-client required
  longtls connect ... --cert DIR/client.pem --key DIR/client.key

--renew renews server.pem/server.key and client.pem/client.key in DIR under
the CA already there (same names and extensions, new keys and serial
numbers), as an ACME client would; a running serve or tunnel watching them
sends the new certificate to its live connections (Certificate Update).

Key types: ecdsa-p256 (default), ecdsa-p521, rsa-2048, mldsa65 (post-quantum
ML-DSA-65; OpenSSL 3.0 cannot read it), and ed25519 and ecdsa-brainpoolp256r1,
where the server and client keys are Ed25519 or brainpoolP256r1 but the CA's is
ECDSA P-256: longtls, like every verifier that follows the Web PKI profile
(cryptography's), refuses EdDSA and brainpool CA keys.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import certs
from . import common
from .common import CLIError

DESCRIPTION = __doc__


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = common.subcommand(
        subparsers, "certs", help="make a CA, a server and a client certificate for testing",
        description=DESCRIPTION, parents=parents,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the files to")
    p.add_argument(
        "--names", type=name_list, default=list(certs.DEFAULT_NAMES), metavar="LIST",
        help="names the server certificate is valid for (default: localhost,127.0.0.1,::1)",
    )
    p.add_argument(
        "--key-type", choices=list(certs.KEY_TYPES), default="ecdsa-p256",
        help="key type of the certificates (default: %(default)s; ed25519 and brainpool leaves get "
        "an ECDSA P-256 CA)",
    )
    p.add_argument(
        "--days", type=common.positive_int, default=365, metavar="N",
        help="validity in days (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="overwrite files that already exist")
    p.add_argument(
        "--renew", action="store_true",
        help="renew the server and client certificates already in --out under its CA "
        "(new keys and serial numbers, same names); --names, --key-type, --days do not apply",
    )
    p.set_defaults(run=run)


def name_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty name in {text!r} (give a comma-separated list)")
    return names


def run(args: argparse.Namespace) -> int:
    if args.renew:
        return _renew(args)
    try:
        bundle = certs.make_bundle(args.names, args.key_type, days=args.days)
    except ValueError as exc:  # a name the certificate builder refuses
        raise CLIError(f"cannot make the certificates: {exc}") from None
    try:
        paths = certs.write_bundle(bundle, args.out, overwrite=args.force)
    except FileExistsError as exc:
        raise CLIError(f"{exc.args[0]} (give --force to overwrite)") from None
    except OSError as exc:
        where = exc.filename or args.out
        raise CLIError(f"cannot write to {where!r}: {exc.strerror}") from None
    ca_type = certs.KEY_TYPES[args.key_type]
    print(
        f"{common.PROG}: wrote {', '.join(p.name for p in paths)} to {args.out} "
        f"({args.key_type}, CA {ca_type}; server names: {', '.join(args.names)})",
        file=sys.stderr,
    )
    return 0


def _renew(args: argparse.Namespace) -> int:
    try:
        paths = certs.renew_files(args.out)
    except OSError as exc:
        where = exc.filename or args.out
        raise CLIError(f"cannot renew in {args.out}: {where}: {exc.strerror} (make them with longtls certs --out DIR)") from None
    except ValueError as exc:
        raise CLIError(f"cannot renew in {args.out}: {exc}") from None
    print(f"{common.PROG}: renewed {', '.join(p.name for p in paths)} in {args.out}", file=sys.stderr)
    return 0
