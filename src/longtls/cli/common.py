"""What the subcommands share: the argument parser, TLS options, configuration
building, error wording and the connection summary."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import difflib
import ipaddress
import logging
import os
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from cryptography import x509

from .. import certcompress
from ..aio.connections import LiveConnections
from ..aio.datagram import DTLSAssociation
from ..config import ClientAuth, Configuration
from ..constants import (
    AlertDescription,
    CertificateCompressionAlgorithm,
    CipherSuite,
    EKUProfileName,
    NamedGroup,
    PskKeyExchangeMode,
)
from ..credentials import DEFAULT_CHECK_INTERVAL, CredentialWatcher, certificate_fields, put_in_use
from ..crypto.groups import SUPPORTED_GROUPS
from ..crypto.suites import SUITES
from ..errors import CertificateError, ConfigurationError, TLSError
from ..events import CertificateUpdated, HandshakeComplete, KeyUpdateCompleted
from ..handshake.eku_profiles import DEFAULT_PROFILE, PROFILES
from ..metrics import Metrics
from ..mls_connection import MLSConnection, parse_mls_suite
from ..psk import PSK_HASHES, ExternalPsk, load_psk_file
from ..record.dtls_reliability import DEFAULT_MTU
from . import access, credential_set, ticket_keys

PROG = "longtls"
logger = logging.getLogger("longtls.cli")


class CLIError(Exception):
    """A failure to report as one ``longtls: error: ...`` line (exit status 1)."""


#: Flags of openssl s_client/s_server, curl, ghostunnel and stunnel whose
#: longtls name is not close enough in spelling for difflib to find.
_FOREIGN_FLAGS = {
    "--cacert": "--ca", "-cafile": "--ca", "--cafile": "--ca", "-capath": "--ca", "--capath": "--ca",
    "-servername": "--servername", "--sni": "--servername", "-curves": "--groups",
    "--curves": "--groups", "-ciphersuites": "--ciphers", "--ciphersuites": "--ciphers",
    "-keylogfile": "--keylog", "--keylogfile": "--keylog", "-pass": "--key-password-file",
    "--pass": "--key-password-file", "-accept": "--port", "-k": "--insecure",
    "--keystore": "--cert", "--target": "--forward",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2, and
    an unknown flag close to a real one (or another tool's name for it:
    ``--cacert``, ``-CAfile``) gets "did you mean --ca?"."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A subcommand's parser sees its own flags: suggest there, before the
        # top-level parser reports the leftovers as "unrecognized arguments".
        parsed, extras = super().parse_known_args(args, namespace)
        for extra in extras:
            suggestion = self.suggest_flag(extra)
            if suggestion is not None:
                self.error(f"unrecognized argument {extra.partition('=')[0]}: did you mean {suggestion}?")
        return parsed, extras

    def suggest_flag(self, text: str) -> str | None:
        """The flag of this parser ``text`` most likely meant, or None."""
        if not text.startswith("-") or len(text) < 2 or text[1:2].isdigit():
            return None
        flag = text.partition("=")[0]
        known = [f for f in self._option_string_actions if f.startswith("--")]
        foreign = _FOREIGN_FLAGS.get(flag.lower())
        if foreign in known:
            return foreign
        close = difflib.get_close_matches(flag.lower(), known, n=1, cutoff=0.75)
        if not close and not flag.startswith("--"):
            close = difflib.get_close_matches("-" + flag.lower(), known, n=1, cutoff=0.75)
        return close[0] if close else None


# -- option types (argparse ``type=``: raise ArgumentTypeError with a clear message)


def _split(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty {what} name in {text!r} (give a comma-separated list)")
    return items


# OpenSSL's names for the NIST curves, so its -groups lists can be pasted as they are.
_GROUP_ALIASES = {
    "p-256": NamedGroup.secp256r1, "p-384": NamedGroup.secp384r1, "p-521": NamedGroup.secp521r1,
    "prime256v1": NamedGroup.secp256r1,
}


def group_list(text: str) -> tuple[NamedGroup, ...]:
    """NamedGroup names, any case, separated by commas or colons (OpenSSL's -groups
    form, P-256/P-384/P-521 included): ``x25519,X25519MLKEM768``, ``X448:ffdhe2048``."""
    by_name = {g.name.lower(): g for g in NamedGroup} | _GROUP_ALIASES
    groups: list[NamedGroup] = []
    for name in _split(text.replace(":", ","), "group"):
        group = by_name.get(name.lower())
        if group is None or group not in SUPPORTED_GROUPS:
            known = "unknown" if group is None else "unsupported"
            choices = ", ".join(g.name for g in SUPPORTED_GROUPS)
            raise argparse.ArgumentTypeError(f"{known} group {name!r} (choose from {choices})")
        if group not in groups:
            groups.append(group)
    return tuple(groups)


def group_name(text: str) -> NamedGroup:
    """One NamedGroup name, any case."""
    groups = group_list(text)
    if len(groups) != 1:
        raise argparse.ArgumentTypeError(f"give one group, not {text!r}")
    return groups[0]


def cipher_list(text: str) -> tuple[CipherSuite, ...]:
    """IANA cipher suite names separated by commas or colons (OpenSSL's -ciphersuites
    form): ``TLS_AES_128_GCM_SHA256,...``.  TLS_AES_128_CCM_8_SHA256 is
    available only this way (not in the defaults)."""
    by_name = {s.name.lower(): s for s in CipherSuite}
    suites: list[CipherSuite] = []
    for name in _split(text.replace(":", ","), "cipher suite"):
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


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid time {text!r} (give a number of seconds, 0 or more)")
    return value


def eku_profile_list(text: str) -> tuple[EKUProfileName, ...]:
    """Comma-separated EKU profiles to offer or accept: ``draft-13,draft-05``."""
    profiles: list[EKUProfileName] = []
    for name in _split(text, "EKU profile"):
        try:
            profile = EKUProfileName(name.lower())
        except ValueError:
            choices = ", ".join(p.value for p in PROFILES)
            raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {choices})") from None
        if profile not in profiles:
            profiles.append(profile)
    return tuple(profiles)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid number {text!r} (give a positive whole number)")
    return value


def byte_count(text: str) -> int:
    """A positive number of bytes, with an optional K, M or G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    number, scale = text.strip(), 1
    if number and number[-1].lower() in units:
        number, scale = number[:-1], units[number[-1].lower()]
    try:
        value = int(number) * scale
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid byte count {text!r} (give a positive number, e.g. 1048576 or 1M)"
        )
    return value


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """--groups, --ciphers, --alpn, --keylog, --timeout (client and server alike)."""
    tls = parser.add_argument_group("TLS options")
    tls.add_argument(
        "--groups", type=group_list, metavar="LIST",
        help="key exchange groups in order of preference, e.g. X25519MLKEM768,x25519 "
        "(also secp521r1, x448, ffdhe2048..ffdhe8192, brainpoolP256r1tls13..P512r1tls13; "
        "not offered by default)",
    )
    tls.add_argument(
        "--ciphers", type=cipher_list, metavar="LIST",
        help="cipher suites in order of preference, e.g. TLS_AES_256_GCM_SHA384 "
        "(default: the GCM suites, ChaCha20, then TLS_AES_128_CCM_SHA256; "
        "TLS_AES_128_CCM_8_SHA256 only when listed here)",
    )
    tls.add_argument("--alpn", type=alpn_list, metavar="LIST", help="ALPN protocols, e.g. h2,http/1.1")
    tls.add_argument("--keylog", metavar="FILE", help="append secrets to FILE (SSLKEYLOGFILE format)")
    tls.add_argument(
        "--timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
        help="handshake timeout (default: %(default)g)",
    )
    add_psk_options(parser)
    add_compression_options(parser)


def psk_mode_list(text: str) -> tuple[PskKeyExchangeMode, ...]:
    """Comma-separated PSK key exchange modes, in order of preference: ``psk_dhe_ke,psk_ke``."""
    modes: list[PskKeyExchangeMode] = []
    for name in _split(text, "PSK mode"):
        try:
            mode = PskKeyExchangeMode[name.lower()]
        except KeyError:
            raise argparse.ArgumentTypeError(
                f"unknown PSK mode {name!r} (choose from psk_dhe_ke, psk_ke)"
            ) from None
        if mode not in modes:
            modes.append(mode)
    return tuple(modes)


def add_psk_options(parser: argparse.ArgumentParser) -> None:
    """--psk-identity, --psk-file, --psk-hash, --psk-modes (external PSK, RFC 9846 §4.2.11)."""
    psk = parser.add_argument_group("external PSK options (docs/external-psk.md)")
    psk.add_argument("--psk-identity", metavar="ID", help="identity of the external PSK (needs --psk-file)")
    psk.add_argument(
        "--psk-file", metavar="FILE",
        help="the PSK in hex on the first line, as openssl -psk takes it (at least 16 bytes)",
    )
    psk.add_argument(
        "--psk-hash", choices=PSK_HASHES, default="sha256",
        help="hash the PSK is bound to; both peers must agree (default: %(default)s)",
    )
    psk.add_argument(
        "--psk-modes", type=psk_mode_list, metavar="LIST",
        help="PSK key exchange modes in order of preference: psk_dhe_ke (default; forward "
        "secret), psk_ke (no key exchange; also allows psk_ke resumption), or both",
    )


def compression_list(text: str) -> tuple[CertificateCompressionAlgorithm, ...]:
    """Comma-separated RFC 8879 algorithms, in order of preference: ``brotli,zlib``."""
    algorithms: list[CertificateCompressionAlgorithm] = []
    for name in _split(text, "compression algorithm"):
        try:
            algorithm = CertificateCompressionAlgorithm[name.lower()]
        except KeyError:
            choices = ", ".join(a.name for a in CertificateCompressionAlgorithm)
            raise argparse.ArgumentTypeError(f"unknown algorithm {name!r} (choose from {choices})") from None
        if not certcompress.is_available(algorithm):
            raise argparse.ArgumentTypeError(
                f"{algorithm.name} is not installed: pip install 'longtls[compression]' "
                f"(or {certcompress.MISSING_PACKAGE[algorithm]!r})"
            )
        if algorithm not in algorithms:
            algorithms.append(algorithm)
    return tuple(algorithms)


def add_compression_options(parser: argparse.ArgumentParser) -> None:
    """--compress-cert, --no-compress-cert (RFC 8879 certificate compression)."""
    group = parser.add_argument_group("certificate compression (RFC 8879)")
    choice = group.add_mutually_exclusive_group()
    available = ",".join(a.name for a in certcompress.DEFAULT_CERTIFICATE_COMPRESSION)
    choice.add_argument(
        "--compress-cert", type=compression_list, metavar="ALG[,ALG]",
        help="certificate compression algorithms to accept and to compress our certificate "
        f"with, in order of preference (default: every one installed, here {available})",
    )
    choice.add_argument(
        "--no-compress-cert", action="store_true",
        help="neither offer nor use certificate compression",
    )


def apply_compression_options(config: Configuration, args: argparse.Namespace) -> None:
    if getattr(args, "no_compress_cert", False):
        config.certificate_compression = ()
    elif getattr(args, "compress_cert", None):
        config.certificate_compression = args.compress_cert


def apply_psk_options(config: Configuration, args: argparse.Namespace) -> None:
    """The add_psk_options choices: one ExternalPsk from --psk-identity/--psk-file."""
    if getattr(args, "psk_modes", None):
        config.psk_key_exchange_modes = args.psk_modes
    identity, path = getattr(args, "psk_identity", None), getattr(args, "psk_file", None)
    if identity is None and path is None:
        return
    if identity is None or path is None:
        raise CLIError("--psk-identity and --psk-file go together: give both")
    config.external_psks = [ExternalPsk(identity.encode(), load_psk_file(path), hash_name=args.psk_hash)]
    with contextlib.suppress(OSError):
        if os.stat(path).st_mode & 0o077:
            logger.warning("PSK file %s can be read by other users: chmod 600 it", path)


def add_eku_options(parser: argparse.ArgumentParser) -> None:
    """Extended Key Update and rekey policy: --eku-profile, --no-eku, --require-eku, --rekey-*."""
    eku = parser.add_argument_group("key update options")
    eku.add_argument(
        "--eku-profile", type=eku_profile_list, default=(DEFAULT_PROFILE,), metavar="LIST",
        help=f"Extended Key Update drafts to offer (client) or accept (server), comma-separated, "
        f"from {', '.join(PROFILES)}; the server picks the newest both speak (default: {DEFAULT_PROFILE})",
    )
    eku.add_argument(
        "--no-eku", action="store_true",
        help="do not offer or accept Extended Key Update (key updates use the standard KeyUpdate)",
    )
    eku.add_argument(
        "--require-eku", action="store_true",
        help="refuse a peer that does not negotiate Extended Key Update",
    )
    eku.add_argument(
        "--rekey-interval", type=positive_seconds, metavar="SECONDS",
        help="update the keys after this many seconds (EKU if negotiated, else KeyUpdate)",
    )
    eku.add_argument(
        "--rekey-bytes", type=byte_count, metavar="N",
        help="update the keys after sending N bytes (suffix K, M or G allowed)",
    )
    eku.add_argument(
        "--rekey-timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
        help="end the connection if the peer does not answer a key update within this time "
        "(default: %(default)g)",
    )
    eku.add_argument(
        "--eku-min-interval", type=non_negative_seconds, metavar="SECONDS",
        help="answer at most one peer-started Extended Key Update per SECONDS; later ones wait "
        "(default: 1 for serve and tunnel server, 0 for clients)",
    )


def add_cert_update_options(parser: argparse.ArgumentParser, files: str) -> None:
    """--cert-update/--no-cert-update and --cert-check-interval (Certificate
    Update, draft-rosomakho-tls-cert-update-02; docs/certificate-update.md).
    ``files``: which files are watched, for the help text."""
    group = parser.add_argument_group("certificate update options (docs/certificate-update.md)")
    group.add_argument(
        "--cert-update", action=argparse.BooleanOptionalAction, default=True,
        help="offer (client) or accept (server) Certificate Update, so that a renewed certificate "
        "reaches live connections; used when the peer supports it (default: on)",
    )
    group.add_argument(
        "--cert-check-interval", type=non_negative_seconds, default=DEFAULT_CHECK_INTERVAL,
        metavar="SECONDS",
        help=f"look at {files} this often; a renewed pair goes to new connections and to every live "
        "one with Certificate Update; one with another identity is refused (a log line) "
        "(default: %(default)g; 0: do not watch)",
    )


def start_credential_watcher(
    args: argparse.Namespace,
    current: Callable[[], Configuration],
    connections: LiveConnections | None,
    *,
    metrics: Metrics | None = None,
) -> CredentialWatcher | credential_set.CredentialWatchers | None:
    """Watch --cert/--key/--chain (if given and --cert-check-interval is not 0):
    a renewed pair is put in use in ``current()`` (the Configuration new
    connections get) and sent to ``connections`` (longtls.credentials)."""
    certfile: str | None = getattr(args, "cert", None)
    interval: float = getattr(args, "cert_check_interval", 0.0)
    if certfile is None or not interval:
        return None
    if credential_set.several(args):  # one watcher per certificate (docs/sni.md)
        return credential_set.start_watchers(
            args, current, connections, password=read_key_password(args), interval=interval, metrics=metrics
        )
    # Renewals are INFO lines (refusals WARNING): shown by default for serve
    # and tunnel, dropped by -q (one rule for levels: cli/logs.py).
    watcher = CredentialWatcher(
        certfile, args.key, getattr(args, "chain", None),
        in_use=lambda: current().certificate_chain,
        on_renewal=lambda new: put_in_use(new, current(), connections, source=certfile),
        password=read_key_password(args), interval=interval, metrics=metrics,
    )
    watcher.start()
    return watcher


#: ``--mtu`` bounds: at least room for one DTLS record with a useful
#: payload; at most the largest UDP payload over IPv4.
MIN_MTU = 128
MAX_MTU = 65507


def mtu_bytes(text: str) -> int:
    """A datagram size for --mtu."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not MIN_MTU <= value <= MAX_MTU:
        raise argparse.ArgumentTypeError(
            f"invalid MTU {text!r} (give a datagram size in bytes, {MIN_MTU} to {MAX_MTU})"
        )
    return value


def add_dtls_options(parser: argparse.ArgumentParser, flag: str = "--dtls") -> None:
    """``--dtls`` (or ``--udp`` for the tunnel) and ``--mtu BYTES``."""
    dtls = parser.add_argument_group("DTLS options (docs/dtls.md)")
    what = "carry UDP datagrams over DTLS 1.3" if flag == "--udp" else "speak DTLS 1.3 over UDP instead of TLS"
    dtls.add_argument(flag, dest="dtls", action="store_true", help=what)
    dtls.add_argument(
        "--mtu", type=mtu_bytes, metavar="BYTES",
        help=f"with {flag}: the largest datagram to send (handshake messages are fragmented to it, "
        f"application datagrams must fit one record in it; default: {DEFAULT_MTU})",
    )


def dtls_mtu(args: argparse.Namespace, flag: str = "--dtls") -> int:
    """The --mtu to use; CLIError for --mtu without ``flag``."""
    mtu: int | None = getattr(args, "mtu", None)
    if not getattr(args, "dtls", False):
        if mtu is not None:
            raise CLIError(f"--mtu applies to {flag} only")
        return DEFAULT_MTU
    return mtu if mtu is not None else DEFAULT_MTU


def dtls_summary(association: DTLSAssociation) -> dict[str, int]:
    """The DTLS counters of the final --summary json line: application
    datagrams and payload bytes, each way."""
    return {
        "datagrams_sent": association.datagrams_sent, "bytes_sent": association.bytes_sent,
        "datagrams_received": association.datagrams_received, "bytes_received": association.bytes_received,
    }


def mls_suite_number(text: str) -> int:
    """An RFC 9420 cipher suite longtls implements, decimal or 0x hex: 1, 3, 0xF0A1 (61601)."""
    try:
        return parse_mls_suite(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_mls_options(parser: argparse.ArgumentParser) -> None:
    """--mls and --mls-suite N (MLS mode, docs/mls-tls.md "Using MLS mode")."""
    mls = parser.add_argument_group("MLS mode (docs/mls-tls.md)")
    mls.add_argument(
        "--mls", action="store_true",
        help="MLS-TLS: keys from a two-party MLS group (RFC 9420), records as TLS 1.3; "
        "--cert/--key must then be Ed25519 (without them: a basic credential and a fresh key)",
    )
    mls.add_argument(
        "--mls-suite", type=mls_suite_number, metavar="N",
        help="with --mls: the MLS cipher suite, 1, 3 or 0xF0A1 (61601, ML-KEM-768 + X25519); "
        "the client offers it (default 1), the server accepts only it (default: any of the three)",
    )


def apply_mls_options(config: Configuration, args: argparse.Namespace) -> None:
    """--mls-suite into the Configuration; CLIError for flags that do not apply to --mls,
    and for credentials MLS cannot use (checked here, at start-up, not per connection)."""
    suite: int | None = getattr(args, "mls_suite", None)
    if not getattr(args, "mls", False):
        if suite is not None:
            raise CLIError("--mls-suite applies to --mls only")
        return
    for flag, name in (("dtls", "--dtls"), ("require_eku", "--require-eku")):
        if getattr(args, flag, False):
            raise CLIError(f"{name} does not apply to --mls")
    if suite is not None:
        config.mls_cipher_suites = (suite,)
    elif not config.is_client:
        config.mls_cipher_suites = (1, 3, 0xF0A1)
    try:
        MLSConnection(config)
    except ConfigurationError as exc:
        raise CLIError(f"--mls: {exc.args[0]}") from None


def add_key_password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-password-file", metavar="FILE",
        help="read the password of an encrypted --key from the first line of FILE",
    )


# -- configuration ----------------------------------------------------------------------


def build_configuration(args: argparse.Namespace, *, is_client: bool) -> Configuration:
    """A Configuration with the shared TLS options of ``args`` applied."""
    config = Configuration(is_client=is_client)
    config.handshake_timeout = args.timeout  # --timeout
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
        check_writable(args.keylog, "key log file")
        config.set_keylog_file(args.keylog)
    apply_eku_options(config, args)
    apply_psk_options(config, args)
    apply_compression_options(config, args)
    config.certificate_update = getattr(args, "cert_update", True)
    return config


def apply_eku_options(config: Configuration, args: argparse.Namespace) -> None:
    """The add_eku_options choices, for the subcommands that have them."""
    if not hasattr(args, "eku_profile"):
        return
    if args.no_eku and args.require_eku:
        raise CLIError("--no-eku and --require-eku contradict each other: choose one")
    config.extended_key_update = not args.no_eku
    config.eku_profiles = args.eku_profile
    config.rekey_interval = args.rekey_interval
    config.rekey_bytes = args.rekey_bytes
    config.rekey_timeout = args.rekey_timeout
    config.eku_min_interval = args.eku_min_interval  # None: the side's default


def require_eku_message(event: HandshakeComplete, peer: str) -> str | None:
    """With --require-eku: why this connection must not be used, or None if it may."""
    if event.extended_key_update:
        return None
    return (
        f"{peer} did not negotiate Extended Key Update (--require-eku); "
        "it may not support it, may run with it turned off, or may speak none of "
        "the --eku-profile drafts offered"
    )


def read_key_password(args: argparse.Namespace) -> bytes | None:
    path = getattr(args, "key_password_file", None)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError as exc:
        raise CLIError(f"cannot read key password file {path!r}: {exc.strerror}") from None
    return line.rstrip(b"\r\n")


def build_server_configuration(args: argparse.Namespace) -> Configuration:
    """serve and tunnel server: --cert/--key/--chain, --ca/--verify-client, TLS and EKU options."""
    config = build_configuration(args, is_client=False)
    credential_set.resolve(args)  # several --cert, --cert-dir: args.cert/key/chain are the default's (docs/sni.md)
    if args.cert or args.key:
        if not args.cert:
            raise CLIError("--key needs --cert")
        # --key unsaid: the key is in the --cert file (ghostunnel's --keystore habit).
        load_credentials(config, args.cert, args.key, args.chain, password=read_key_password(args))
        credential_set.load_server_credentials(config, args, load_credentials, read_key_password(args))
    elif not config.external_psks and not getattr(args, "mls", False):
        raise CLIError("give --cert FILE --key FILE, or --psk-identity ID --psk-file FILE, or both")
    config.client_auth = client_auth_mode(args)
    if args.ca:
        config.load_verify_locations(args.ca)
    elif config.client_auth is not ClientAuth.NONE:
        raise CLIError(f"--verify-client {args.verify_client} needs --ca FILE (the CA of client certificates)")
    access.apply_access_options(config, args)  # --allow-*, --crl (docs/access-control.md)
    ticket_keys.apply(config, args)  # --ticket-keys (docs/scaling.md)
    return config


def client_auth_mode(args: argparse.Namespace) -> ClientAuth:
    """--verify-client as given; unsaid, ``required`` when --ca names the CA of
    client certificates (a CA given and then not asked for would let any client
    in), else ``none``."""
    if args.verify_client is not None:
        return ClientAuth(args.verify_client)
    return ClientAuth.REQUIRED if args.ca else ClientAuth.NONE


def client_auth_description(args: argparse.Namespace) -> str:
    """For the start-up line: which client certificates the server asks for, and why."""
    mode = client_auth_mode(args)
    if mode is ClientAuth.NONE:
        return "client certificates: none" + (" (--verify-client none)" if args.ca else "")
    how = "--verify-client " + mode.value if args.verify_client is not None else "default with --ca"
    return f"client certificates: {mode.value} ({how}; CA {args.ca})"


def build_client_configuration(args: argparse.Namespace, host: str) -> Configuration:
    """connect and tunnel client: --ca/--insecure, --servername, --cert/--key, TLS and EKU options."""
    if args.key and not args.cert:
        raise CLIError("--key needs --cert")
    config = build_configuration(args, is_client=True)
    config.server_name = args.servername or host
    if getattr(args, "insecure", False):
        config.verify_peer = False
    elif args.ca:
        config.load_verify_locations(args.ca)
    if args.cert:
        load_credentials(config, args.cert, args.key, password=read_key_password(args))
    access.apply_access_options(config, args)  # --allow-*, --crl (docs/access-control.md)
    return config


def add_server_credential_options(p: argparse.ArgumentParser) -> None:
    """--cert, --key, --chain (repeatable: docs/sni.md), --cert-dir, --key-password-file, --ca, --verify-client."""
    flag = credential_set.CredentialFlag
    p.add_argument(
        "--cert", metavar="FILE", action=flag,
        help="certificate (PEM; may hold the chain); optional with --psk-file; repeat it to serve several, "
        "chosen by the client's server_name (SNI), the first the default",
    )
    p.add_argument(
        "--key", metavar="FILE", action=flag,
        help="private key of the --cert before it (PEM; default: in the --cert file)",
    )
    p.add_argument("--chain", metavar="FILE", action=flag, help="intermediate certificates to send after the --cert before it")
    credential_set.add_cert_dir_option(p)
    add_key_password_option(p)
    p.add_argument("--ca", metavar="FILE", help="CA certificates that issue client certificates")
    p.add_argument(
        "--verify-client", choices=[c.value for c in ClientAuth], default=None,
        help="ask for a client certificate (default: required with --ca, else none)",
    )
    access.add_access_options(p)
    ticket_keys.add_option(p)


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``; a URL (curl's habit) is refused with the
    HOST:PORT it names."""
    if "://" in text or text.endswith("/"):
        url = urllib.parse.urlsplit(text if "://" in text else "//" + text)
        try:
            default_port = {"https": 443, "http": 80}.get(url.scheme, 4443)
            example = format_address(url.hostname or "localhost", url.port or default_port)
        except ValueError:
            example = "localhost:4443"
        raise argparse.ArgumentTypeError(f"that is a URL, give HOST:PORT (e.g. {example})")
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:443
    return host, port_number(port)


#: What ``:PORT`` and ``*:PORT`` listen on: every interface (asyncio binds
#: all of them, IPv4 and IPv6, for the empty host).
ALL_INTERFACES = ""


def listen_address(text: str) -> tuple[str, int]:
    """A listen address: ``HOST:PORT``, ``[v6]:PORT``, or ``:PORT`` / ``*:PORT``
    for every interface (the forms ghostunnel and stunnel users type)."""
    host, sep, port = text.rpartition(":")
    if sep and host in ("", "*"):
        return ALL_INTERFACES, port_number(port)
    return host_port(text)


def load_credentials(
    config: Configuration, cert: str, key: str | None, chain: str | None = None,
    password: bytes | None = None,
) -> None:
    """Certificate (+ intermediates) and private key (``key`` None: in the
    ``cert`` file); ConfigurationError or CLIError says what is wrong, naming
    the flag that fixes it."""
    key_file = key if key is not None else cert
    with contextlib.suppress(OSError):  # unreadable: load_cert_chain says so
        with open(key_file, "rb") as f:
            data = f.read()
        if key is None and b"PRIVATE KEY-----" not in data:
            raise CLIError(f"{cert!r} holds no private key: give --key FILE")
        if password is None and b"ENCRYPTED" in data:
            raise CLIError(f"key file {key_file!r} is encrypted: give its password with --key-password-file FILE")
    config.load_cert_chain(cert, key, password)
    if chain is not None:
        from ..crypto.certificates import load_certificate_chain

        extra = [c for c in load_certificate_chain(chain) if c not in config.certificate_chain]
        config.certificate_chain = [*config.certificate_chain, *extra]
    warn_if_expiring(cert, config.certificate_chain[0])


#: A certificate that ends within this much gets a warning when it is loaded.
EXPIRY_WARNING = datetime.timedelta(days=7)


def warn_if_expiring(path: str, cert: x509.Certificate, *, now: datetime.datetime | None = None) -> str | None:
    """One warning line when ``cert`` (loaded from ``path``) is expired, not
    valid yet, or ends within EXPIRY_WARNING: the server still starts (a test
    may want exactly that), but peers will refuse it (RFC 5280 §6.1.3:
    the validity period is checked on every path).  Returns the warning."""
    now = now or datetime.datetime.now(datetime.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    if now > end:
        days = (now - end).days
        ago = f"{days} day(s) ago" if days else "less than a day ago"
        message = f"certificate {path!r} expired {ago} ({end:{stamp}}): peers will refuse it"
    elif now < start:
        message = f"certificate {path!r} is not valid before {start:{stamp}}: peers will refuse it until then"
    elif end - now <= EXPIRY_WARNING:
        days = (end - now).days
        within = f"in {days} day(s)" if days else "in less than a day"
        message = f"certificate {path!r} expires {within} ({end:{stamp}}): renew it"
    else:
        return None
    logger.warning("warning: %s", message)
    return message


def check_writable(path: str, what: str) -> None:
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


def handshake_hint(exc: BaseException, *, host: str, servername: str | None) -> str | None:
    """What a client that failed its handshake with ``host`` should try, for
    the failures whose alert alone misleads; None when there is nothing to add."""
    if not isinstance(exc, TLSError):
        return None
    if exc.alert is AlertDescription.protocol_version:
        # Sent by a peer, or by us, when the other speaks an older version
        # only (RFC 9846 §6.2, §D.1 "Negotiating with an Older Server"):
        # longtls offers TLS 1.3 only.
        return "the server does not speak TLS 1.3 (longtls speaks TLS 1.3 only)"
    if isinstance(exc, CertificateError) and servername is None and str(exc.args[0]).startswith("name mismatch"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        # Connecting by address verifies the address, which matches only an
        # iPAddress name, never a DNS name (RFC 9525 §6.3).
        return f"you connected to the address {host}: give --servername NAME, one of the names the certificate is for"
    return None


def name_or_none(value: Any) -> str | None:
    return None if value is None else str(value.name)


def key_update_summary(event: KeyUpdateCompleted) -> dict[str, Any]:
    """One completed extended key update, as a --summary json record; in MLS
    mode one epoch change: ``{"event": "key_update", "kind": "mls", "epoch": N,
    "initiator": "client"|"server", "milliseconds": ...}`` (a contract)."""
    if event.kind == "mls":
        return {
            "event": "key_update", "kind": "mls", "epoch": event.epoch, "initiator": event.initiator,
            "milliseconds": round(event.seconds * 1000, 3),
        }
    return {
        "event": "key_update", "kind": "extended", "generation": event.generation,
        "initiator": event.initiator, "group": event.group.name,
        "milliseconds": round(event.seconds * 1000, 3),
    }


def certificate_update_summary(event: CertificateUpdated) -> dict[str, Any]:
    """One Certificate Update, as a --summary json record (a contract):
    ``{"event": "certificate_update", "direction": "sent"|"received",
    "subject": RFC 4514, "serial": lowercase hex, "not_after": ISO 8601 UTC}``."""
    record: dict[str, Any] = {"event": "certificate_update", "direction": event.direction.value}
    if event.certificates:
        record.update(certificate_fields(event.certificates[0]))
    return record


def handshake_summary(event: HandshakeComplete) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event": "handshake",
        "version": event.version,
        "cipher_suite": event.cipher_suite.name,
        "group": name_or_none(event.group),
        "signature_scheme": name_or_none(event.signature_scheme),
        "alpn": event.alpn_protocol,
        "peer_subject": event.peer_subject,
        "resumed": event.resumed,
        # "eku" is the original name, kept (a contract); "extended_key_update"
        # spells it out, as HandshakeComplete does (issue 14).
        "eku": event.extended_key_update,
        "extended_key_update": event.extended_key_update,
        "eku_profile": event.eku_profile.value if event.eku_profile is not None else None,
        "certificate_update": event.certificate_update,
    }
    if event.psk is not None:
        # Only with a PSK: "psk" ("external", "imported" or "resumption"), the
        # external PSK's identity (null for a ticket), and the mode.
        identity = event.psk_identity
        record["psk"] = event.psk
        record["psk_identity"] = identity.decode("utf-8", "backslashreplace") if identity is not None else None
        record["psk_mode"] = name_or_none(event.psk_key_exchange_mode)
    if event.peer_certificate_compression is not None:
        # Only when the peer's certificate arrived compressed (RFC 8879).
        record["peer_certificate_compression"] = event.peer_certificate_compression.name
    if event.mode == "mls":
        # Only in MLS mode (a contract): the RFC 9420 suite and the epoch the
        # initial key agreement ends in; cipher_suite is the record protection.
        record["mode"] = "mls"
        record["mls_cipher_suite"] = event.mls_cipher_suite
        record["epoch"] = event.epoch
    return record


def format_address(host: str, port: int) -> str:
    if host == ALL_INTERFACES:
        return f"*:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def common_parent() -> ArgumentParser:
    """Options every subcommand accepts after its name as well (``longtls connect -v``);
    main adds the logging ones (-v, -q, --log-level, --log-format: cli/logs.py)."""
    return ArgumentParser(add_help=False)


def subcommand(
    subparsers: Any, name: str, *, help: str, description: str, parents: Sequence[argparse.ArgumentParser]
) -> ArgumentParser:
    parser: ArgumentParser = subparsers.add_parser(
        name, help=help, description=description, parents=list(parents),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
