"""--allow-cn/--allow-dns/--allow-uri/--allow-ip and --crl: who may connect (docs/access-control.md).

On ``serve`` and ``tunnel server`` they check the client's certificate (so
they need client certificates: --ca, and not --verify-client optional/none);
on ``tunnel client`` the server's.  The rules and the CRL checks are the
library's (crypto/peer_policy.py, ``Configuration.peer_allow`` and
``crls``); this module turns flags into them.  The CRL files are read each
time the Configuration is built, so SIGHUP (which rebuilds it from the
flags) reads them again.
"""

from __future__ import annotations

import argparse
import datetime
import logging

from cryptography import x509

from ..config import ClientAuth, Configuration
from ..crypto.peer_policy import (
    PeerAllowList,
    check_crls_against_anchors,
    crl_expiry_warning,
    load_crls,
)
from ..errors import ConfigurationError

# cli/common.py calls this module, so it cannot import common's CLIError or
# logger: ConfigurationError is reported the same way (one error line), and
# this is common's logger by name.
logger = logging.getLogger("longtls.cli")

#: The flags, as argparse dests, in the order messages name them.
ALLOW_FLAGS = ("allow_cn", "allow_dns", "allow_uri", "allow_ip")


def add_access_options(parser: argparse.ArgumentParser, *, checks: str = "client") -> None:
    """The four --allow-* flags and --crl; ``checks`` names whose certificate
    they apply to ("client" on a server, "server" on a client)."""
    group = parser.add_argument_group(
        f"who may connect: checks on the {checks}'s certificate (docs/access-control.md)"
    )
    group.add_argument(
        "--allow-cn", action="append", metavar="NAME", default=None,
        help=f"admit a {checks} certificate whose subject CN is exactly NAME (repeatable; "
        "any matching --allow-* rule admits, no rule matching: access_denied)",
    )
    group.add_argument(
        "--allow-dns", action="append", metavar="NAME", default=None,
        help=f"admit a {checks} certificate with DNS name NAME in its subjectAltName; "
        "*.example.com matches one left-most label (repeatable)",
    )
    group.add_argument(
        "--allow-uri", action="append", metavar="URI", default=None,
        help=f"admit a {checks} certificate with this exact URI in its subjectAltName, "
        "e.g. a SPIFFE ID spiffe://example.org/service (repeatable)",
    )
    group.add_argument(
        "--allow-ip", action="append", metavar="ADDR[/LEN]", default=None,
        help=f"admit a {checks} certificate with an IP address SAN equal to ADDR or inside "
        "the network ADDR/LEN (repeatable)",
    )
    group.add_argument(
        "--crl", action="append", metavar="FILE", default=None,
        help=f"refuse a {checks} certificate (or intermediate) its CA revoked: certificate_revoked "
        "(FILE: PEM with one or more CRLs, or DER; repeatable; re-read on SIGHUP; "
        "a CRL past its nextUpdate refuses its CA's certificates)",
    )


def apply_access_options(config: Configuration, args: argparse.Namespace) -> None:
    """Set ``config.peer_allow`` and ``config.crls`` from the flags (if the
    command has them); ConfigurationError names the flag at fault."""
    rules = {name: getattr(args, name, None) or () for name in ALLOW_FLAGS}
    crl_files: list[str] = getattr(args, "crl", None) or []
    if not any(rules.values()) and not crl_files:
        return
    given = [_flag(name) for name, value in rules.items() if value] + (["--crl"] if crl_files else [])
    _check_combination(config, args, given, allow=any(rules.values()))
    if any(rules.values()):
        try:
            config.peer_allow = PeerAllowList(
                cn=rules["allow_cn"], dns=rules["allow_dns"], uri=rules["allow_uri"], ip=rules["allow_ip"]
            )
        except ConfigurationError as exc:
            message = str(exc.args[0])
            raise ConfigurationError(f"--{message}" if message.startswith("allow-") else message) from None
    crls: list[x509.CertificateRevocationList] = []
    now = datetime.datetime.now(datetime.UTC)
    for path in crl_files:
        try:
            loaded = load_crls(path)
        except ConfigurationError as exc:
            raise ConfigurationError(f"--crl: {exc.args[0]}") from None
        for crl in loaded:
            warning = crl_expiry_warning(path, crl, now=now)
            if warning is not None:
                logger.warning("warning: %s", warning)
        crls.extend(loaded)
    if crls and config.trust_store is not None:
        try:
            check_crls_against_anchors(crls, config.trust_store.certificates)
        except ConfigurationError as exc:
            raise ConfigurationError(f"--crl: {exc.args[0]}") from None
    config.crls = tuple(crls)


def _check_combination(config: Configuration, args: argparse.Namespace, given: list[str], *, allow: bool) -> None:
    flags = "/".join(given)
    if getattr(args, "mls", False) and getattr(args, "insecure", False):
        raise ConfigurationError(f"{flags} check the peer's certificate: not with --insecure")
    if config.is_client:
        if not config.verify_peer:
            raise ConfigurationError(f"{flags} check the server's certificate: not with --insecure")
        return
    # A server checks client certificates; without one the rules could not
    # run, and an optional one would let a client without any past them.
    if config.client_auth is ClientAuth.NONE or (allow and config.client_auth is not ClientAuth.REQUIRED):
        how = f"--verify-client {config.client_auth.value}" if getattr(args, "verify_client", None) else "no --ca"
        raise ConfigurationError(
            f"{flags} check client certificates, which this server does not require ({how}): "
            "give --ca FILE (the CA of client certificates) and leave --verify-client at required"
        )


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")
