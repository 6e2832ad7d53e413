"""The PROXY protocol v2 flags of ``tunnel`` and ``serve`` (docs/proxy-protocol.md).

    --accept-proxy          expect a PROXY v2 header before TLS (behind HAProxy ...)
    --proxy-timeout SECONDS how long it may take (default 5)
    --send-proxy            write one first to the connection onwards (tunnel)

Kept here so the commands carry one line each.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..aio.proxy_protocol import DEFAULT_PROXY_HEADER_TIMEOUT
from . import common
from .common import CLIError

__all__ = ["accept_timeout", "add_accept_options", "add_send_option", "check", "tunnel_options"]


def add_accept_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accept-proxy", action="store_true",
        help="behind a proxy (HAProxy send-proxy-v2): every connection starts with a PROXY protocol v2 "
        "header, which gives the client's address; one missing, malformed or late closes the connection",
    )
    p.add_argument(
        "--proxy-timeout", type=common.positive_seconds, metavar="SECONDS",
        help=f"with --accept-proxy: how long a connection may take to send its PROXY header "
        f"(default: {DEFAULT_PROXY_HEADER_TIMEOUT:g})",
    )


def add_send_option(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument(
        "--send-proxy", action="store_true",
        help=f"write a PROXY protocol v2 header to {where} first: the client's address and the address "
        "it connected to",
    )


def check(args: argparse.Namespace, datagram_flag: str) -> None:
    """Refuse combinations that cannot work (before anything starts)."""
    accept = getattr(args, "accept_proxy", False)
    if getattr(args, "proxy_timeout", None) is not None and not accept:
        raise CLIError("--proxy-timeout applies to --accept-proxy only")
    if getattr(args, "dtls", False):
        # A PROXY header opens a byte stream; over UDP it would have to
        # prefix every datagram, which neither DTLS nor HAProxy does.
        for flag, given in (("--accept-proxy", accept), ("--send-proxy", getattr(args, "send_proxy", False))):
            if given:
                raise CLIError(f"{flag} does not apply to {datagram_flag} (the PROXY protocol is for TCP here)")


def accept_timeout(args: argparse.Namespace) -> float | None:
    """``StreamOptions.accept_proxy``: the header timeout, or None without --accept-proxy."""
    if not getattr(args, "accept_proxy", False):
        return None
    timeout = getattr(args, "proxy_timeout", None)
    return DEFAULT_PROXY_HEADER_TIMEOUT if timeout is None else float(timeout)


def tunnel_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``longtls.tunnel.Tunnel`` keyword arguments for these flags."""
    return {"accept_proxy": accept_timeout(args), "send_proxy": bool(getattr(args, "send_proxy", False))}
