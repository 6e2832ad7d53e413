"""Several server certificates on one port (``serve``, ``tunnel server``;
docs/sni.md): repeated ``--cert``/``--key``/``--chain`` and ``--cert-dir``.

Pairing (a decision, docs/sni.md): a ``--key`` or ``--chain`` belongs to the
``--cert`` right before it on the command line; a ``--cert`` with no
``--key`` after it holds its own key.  With one ``--cert`` the order does not
matter (``--key k --cert c`` works as it always did).  The first ``--cert``
is the default, presented to a client that sends no server_name or one no
certificate is for; the others are chosen by the leaf's DNS subjectAltNames
(longtls.sni).

``--cert-dir DIR``: every ``NAME.pem`` (chain and key in one file, or the key
in ``NAME.key``) and every ``NAME.crt`` with ``NAME.key``; other files are
ignored, a ``NAME.key`` without its certificate is an error.  The default:
the first ``--cert`` if there is one, else ``default.pem``/``default.crt``
if the directory has it, else the first file by name.

Each credential is watched on its own (``--cert-check-interval``), and a
renewal (or a SIGHUP reload that changed it) goes to the live connections
that use that credential only; with several credentials the expiry gauge
gets a ``credential`` label (the certificate file).

This module does not import ``cli.common`` (which imports it): its loader is
passed in, and its errors are ConfigurationError, which the CLI prints as
one ``longtls: error:`` line.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from ..aio.connections import CertificateRollout, LiveConnections
from ..config import Configuration
from ..connection_core import ConnectionCore
from ..credentials import (
    Credentials,
    CredentialWatcher,
    describe_certificate,
    describe_rollout,
    put_in_use,
    validity_problem,
)
from ..errors import ConfigurationError
from ..metrics import Metrics
from ..sni import ServerCredential

__all__ = [
    "CredentialFlag",
    "CredentialSource",
    "CredentialWatchers",
    "add_cert_dir_option",
    "describe_served_names",
    "labelled_chains",
    "load_server_credentials",
    "reload_credentials",
    "resolve",
    "roll_out_reload",
    "several",
    "start_watchers",
]

logger = logging.getLogger("longtls.credentials")

#: Loads one pair into a Configuration (cli.common.load_credentials: its
#: errors name the flag that fixes them, and it warns of a near expiry).
Loader = Callable[[Configuration, str, str | None, str | None, bytes | None], None]

_CERT_SUFFIXES = (".pem", ".crt")
_DEFAULT_STEM = "default"


@dataclass(frozen=True)
class CredentialSource:
    """The files of one credential: certificate (and chain), key (None: in
    ``cert``), intermediates to send after it."""

    cert: str
    key: str | None = None
    chain: str | None = None


class CredentialFlag(argparse._AppendAction):
    """``--cert``/``--key``/``--chain`` of a server: keeps the order they came
    in (``args.credential_flags``) for the pairing above, and the first of
    each in ``args.cert``/``key``/``chain`` until :func:`resolve` sets them
    to the default credential's.  An append action by class, so a config
    file's list (``cert = ["a.pem", "b.pem"]``, cli/tunnel_config.py) becomes
    the flag repeated, not one comma-joined file name."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: str | Sequence[Any] | None, option_string: str | None = None,
    ) -> None:
        earlier: list[tuple[str, str]] = getattr(namespace, "credential_flags", None) or []
        namespace.credential_flags = [*earlier, (self.dest, str(values))]
        if getattr(namespace, self.dest, None) is None:
            setattr(namespace, self.dest, str(values))


def add_cert_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cert-dir", metavar="DIR",
        help="serve every certificate in DIR (NAME.pem with its key, or NAME.crt + NAME.key), each "
        "chosen by the client's server_name (SNI) from its DNS names; default certificate: the first "
        "--cert, else DIR/default.pem, else the first by name (docs/sni.md)",
    )


# -- which files -------------------------------------------------------------------------


def _paired(flags: Sequence[tuple[str, str]]) -> list[CredentialSource]:
    """The --cert/--key/--chain flags, in command-line order, as credentials."""
    certs = [value for dest, value in flags if dest == "cert"]
    if not certs:
        return []
    if len(certs) == 1:
        # One --cert: its --key and --chain wherever they are (as always).
        extra = {dest: value for dest, value in flags if dest != "cert"}
        for dest in ("key", "chain"):
            if sum(1 for d, _ in flags if d == dest) > 1:
                raise ConfigurationError(f"--{dest} is given twice for one --cert")
        return [CredentialSource(certs[0], extra.get("key"), extra.get("chain"))]
    sources: list[dict[str, str]] = []
    for dest, value in flags:
        if dest == "cert":
            sources.append({"cert": value})
            continue
        if not sources:
            raise ConfigurationError(
                f"--{dest} {value} comes before any --cert: with several --cert, give each --{dest} "
                "right after the --cert it belongs to"
            )
        if dest in sources[-1]:
            raise ConfigurationError(
                f"--{dest} is given twice after --cert {sources[-1]['cert']}: give each --{dest} "
                "right after the --cert it belongs to"
            )
        sources[-1][dest] = value
    return [CredentialSource(s["cert"], s.get("key"), s.get("chain")) for s in sources]


def directory_sources(directory: str) -> list[CredentialSource]:
    """The credentials of ``--cert-dir``, the default first (see the module docstring)."""
    path = Path(directory)
    try:
        files = sorted(p for p in path.iterdir() if p.is_file())
    except OSError as exc:
        raise ConfigurationError(f"cannot read --cert-dir {directory!r}: {exc.strerror}") from None
    names = {p.name for p in files}
    sources: list[tuple[str, CredentialSource]] = []
    for stem in sorted({p.stem for p in files if p.suffix in _CERT_SUFFIXES}):
        certs = [f"{stem}{suffix}" for suffix in _CERT_SUFFIXES if f"{stem}{suffix}" in names]
        if len(certs) > 1:
            raise ConfigurationError(
                f"--cert-dir {directory!r} has both {certs[0]} and {certs[1]}: keep one certificate per name"
            )
        key = f"{stem}.key" if f"{stem}.key" in names else None
        sources.append((stem, CredentialSource(str(path / certs[0]), str(path / key) if key else None)))
    stems = {stem for stem, _ in sources}
    orphans = sorted(p.name for p in files if p.suffix == ".key" and p.stem not in stems)
    if orphans:
        raise ConfigurationError(
            f"--cert-dir {directory!r}: {orphans[0]} is a key without its certificate "
            f"({Path(orphans[0]).stem}.pem or .crt)"
        )
    if not sources:
        raise ConfigurationError(f"--cert-dir {directory!r} holds no NAME.pem or NAME.crt certificate")
    # The default first: default.pem/.crt if there is one, else the first by name.
    sources.sort(key=lambda item: item[0] != _DEFAULT_STEM)
    return [source for _, source in sources]


def credential_sources(args: argparse.Namespace) -> list[CredentialSource]:
    """Every credential the flags name, the default first; [] if none."""
    flags: list[tuple[str, str]] | None = getattr(args, "credential_flags", None)
    if flags is None:
        # Arguments not parsed by our parser (a config file, a test): the
        # single --cert/--key/--chain of old.
        cert = getattr(args, "cert", None)
        sources = [CredentialSource(cert, getattr(args, "key", None), getattr(args, "chain", None))] if cert else []
    else:
        sources = _paired(flags)
    directory = getattr(args, "cert_dir", None)
    if directory:
        given = {os.path.realpath(s.cert) for s in sources}
        sources += [s for s in directory_sources(directory) if os.path.realpath(s.cert) not in given]
    return sources


def resolve(args: argparse.Namespace) -> None:
    """Set ``args.cert``/``key``/``chain`` to the default credential's files
    (what the single-certificate code loads and watches) and keep the rest in
    ``args.server_credential_sources``.  Idempotent (a reload calls it again)."""
    flags: list[tuple[str, str]] | None = getattr(args, "credential_flags", None)
    cert_dir = getattr(args, "cert_dir", None)
    if flags is None:
        if not cert_dir:
            args.server_credential_sources = []
            return
        # --cert-dir with arguments not from our parser: freeze their single
        # --cert/--key/--chain as flags, once.
        flags = [(dest, getattr(args, dest)) for dest in ("cert", "key", "chain") if getattr(args, dest, None)]
        args.credential_flags = flags
    if not any(dest == "cert" for dest, _ in flags):
        if flags and cert_dir:
            raise ConfigurationError("--key and --chain need a --cert (--cert-dir pairs its own files)")
        if not cert_dir:
            args.server_credential_sources = []  # the caller says "--key needs --cert"
            return
    sources = credential_sources(args)
    if not sources:
        args.server_credential_sources = []
        return
    default = sources[0]
    args.cert, args.key, args.chain = default.cert, default.key, default.chain
    args.server_credential_sources = sources[1:]


def load_server_credentials(
    config: Configuration, args: argparse.Namespace, load: Loader, password: bytes | None,
) -> None:
    """``config.server_credentials`` from the credentials after the default
    (:func:`resolve` first); a ConfigurationError names the file."""
    credentials: list[ServerCredential] = []
    if getattr(args, "mls", False) and several(args):
        # MLS-TLS has no ClientHello to carry a server_name.
        raise ConfigurationError("--mls serves one credential: give one --cert (no --cert-dir)")
    for source in getattr(args, "server_credential_sources", ()):
        scratch = Configuration(is_client=False)
        load(scratch, source.cert, source.key, source.chain, password)
        try:
            credentials.append(ServerCredential(scratch.certificate_chain, scratch.private_key))
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{source.cert}: {exc.args[0]} (only the default, the first --cert, may have none)"
            ) from None
    config.server_credentials = credentials


def several(args: argparse.Namespace) -> bool:
    """More than one certificate is served."""
    return bool(getattr(args, "server_credential_sources", ()))


# -- what is served ------------------------------------------------------------------------


def _slots(config: Configuration) -> list[tuple[Sequence[x509.Certificate], ServerCredential | None]]:
    """Each credential's chain and object, the default (None) first."""
    return [(config.certificate_chain, None), *((c.certificate_chain, c) for c in config.server_credentials)]


def describe_served_names(config: Configuration, args: argparse.Namespace) -> str:
    """For the start-up line, with several certificates: ``; certificates:
    a.example, www.a.example (a.pem); b.example (b.pem); default: server.pem``
    ("" with one)."""
    if not several(args):
        return ""
    parts = [
        f"{', '.join(credential.names)} ({source.cert})"
        for credential, source in zip(config.server_credentials, args.server_credential_sources, strict=False)
    ]
    return f"; certificates: {'; '.join(parts)}; default: {args.cert}"


def labelled_chains(
    served: Iterable[tuple[Configuration, argparse.Namespace]],
) -> list[tuple[str, Sequence[x509.Certificate]]]:
    """(certificate file, chain now in use) of every credential of the
    running servers ``served`` (configuration, arguments), for the expiry
    gauge's ``credential`` label (Metrics.credential_certificates); [] when
    none serves several (the gauge keeps its labels of old)."""
    served = list(served)
    if not any(several(args) for _, args in served):
        return []
    out: list[tuple[str, Sequence[x509.Certificate]]] = []
    for config, args in served:
        files = [args.cert, *(s.cert for s in getattr(args, "server_credential_sources", ()))]
        out += [(file, chain) for file, (chain, _) in zip(files, _slots(config), strict=False) if file]
    return out


# -- renewal: each credential on its own -----------------------------------------------------


def _users(credential: ServerCredential | None) -> Callable[[ConnectionCore], bool]:
    """The live connections that use ``credential`` (None: the default pair).
    A connection made before a reload holds the credential object of its
    time: the same names make it the same credential."""
    if credential is None:
        return lambda conn: conn.server_credential is None

    def uses(conn: ConnectionCore) -> bool:
        own = conn.server_credential
        return own is credential or (own is not None and own.names == credential.names)

    return uses


def _renew(
    config: Configuration, index: int, new: Credentials, connections: LiveConnections | None, source: str,
) -> CertificateRollout:
    """Credential ``index`` (0: the default) of ``config`` is now ``new``:
    new connections get it, and the live connections that use it are sent it."""
    if index == 0:
        return put_in_use(new, config, connections, source=source, only=_users(None))
    credential = config.server_credentials[index - 1]
    credential.certificate_chain, credential.private_key = list(new.chain), new.private_key
    rollout = CertificateRollout()
    if connections is not None:
        rollout = connections.update_certificate(new.chain, new.private_key, only=_users(credential))
    reach = describe_rollout(rollout) if connections is not None else "for new connections only"
    logger.info("certificate renewed from %s: %s; %s", source, describe_certificate(new.leaf), reach)
    return rollout


class CredentialWatchers:
    """One CredentialWatcher per credential (``stop()`` stops them all)."""

    def __init__(self, watchers: Sequence[CredentialWatcher]) -> None:
        self.watchers = list(watchers)

    def __repr__(self) -> str:
        return f"<CredentialWatchers {len(self.watchers)}>"

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()


def start_watchers(
    args: argparse.Namespace, current: Callable[[], Configuration], connections: LiveConnections | None,
    *, password: bytes | None, interval: float, metrics: Metrics | None = None,
) -> CredentialWatchers:
    """Watch every credential's files; a renewal of one reaches only its
    connections (``current()``: the Configuration new connections get)."""
    sources = [CredentialSource(args.cert, args.key, args.chain), *args.server_credential_sources]
    watchers: list[CredentialWatcher] = []
    for index, source in enumerate(sources):

        def in_use(index: int = index) -> Sequence[x509.Certificate]:
            slots = _slots(current())
            return slots[index][0] if index < len(slots) else ()

        def on_renewal(new: Credentials, index: int = index, source: CredentialSource = source) -> object:
            return _renew(current(), index, new, connections, source.cert)

        watcher = CredentialWatcher(
            source.cert, source.key, source.chain, in_use=in_use, on_renewal=on_renewal,
            password=password, interval=interval, metrics=metrics,
        )
        watcher.start()
        watchers.append(watcher)
    return CredentialWatchers(watchers)


# -- reloads (SIGHUP) ----------------------------------------------------------------------


def reload_credentials(
    config: Configuration, fresh: Configuration, connections: LiveConnections | None, args: argparse.Namespace,
) -> None:
    """``serve``'s SIGHUP: take ``fresh``'s certificates into ``config`` (in
    place: new connections get them), each changed one sent to the live
    connections that use it, never one outside its validity period (the peer
    would end the connection: illegal_parameter)."""
    sources = [args.cert, *(s.cert for s in getattr(args, "server_credential_sources", ()))]
    old, new = _slots(config), _slots(fresh)
    if len(old) != len(new) or any(
        a is not None and b is not None and a.names != b.names for (_, a), (_, b) in zip(old, new, strict=True)
    ):
        # Other names (files edited to other certificates): take the new set
        # for new connections; the live ones keep their certificates.
        config.server_credentials = list(fresh.server_credentials)
        new = new[:1]
    for index, ((before, _), (chain, credential)) in enumerate(zip(old, new, strict=False)):
        if not chain or list(chain) == list(before):
            continue
        key = fresh.private_key if credential is None else credential.private_key
        live = connections if validity_problem(chain[0]) is None else None
        _renew(config, index, Credentials(tuple(chain), key), live, sources[index])


def roll_out_reload(
    previous: Configuration, configuration: Configuration, connections: LiveConnections,
    args: argparse.Namespace,
) -> str:
    """``tunnel``'s SIGHUP installs ``configuration`` whole: send each
    credential whose certificate changed to the live connections that used
    its ``previous`` version.  Returns the log line's tail
    (``; certificate sent to 2 of 2 live connection(s)``)."""
    sources = [args.cert, *(s.cert for s in getattr(args, "server_credential_sources", ()))]
    old, new = _slots(previous), _slots(configuration)
    parts: list[str] = []
    for index, ((before, was), (chain, credential)) in enumerate(zip(old, new, strict=False)):
        if not chain or list(chain) == list(before):
            continue
        what = "certificate" if len(new) == 1 else f"certificate {sources[index]}"
        problem = validity_problem(chain[0])
        if problem is not None:
            parts.append(f"{what} not sent to live connections: {problem}")
            continue
        key = configuration.private_key if credential is None else credential.private_key
        rollout = connections.update_certificate(chain, key, only=_users(was))
        parts.append(f"{what} {describe_rollout(rollout)}")
    return "".join(f"; {part}" for part in parts)
