"""Certificate renewal without restart: watch a certificate and key file pair.

    watcher = CredentialWatcher(
        "server.pem", "server.key",
        in_use=lambda: configuration.certificate_chain,
        on_renewal=lambda new: put_in_use(configuration, new, connections, source="server.pem"),
    )
    watcher.start()          # polls every 2 s until watcher.stop()

An ACME client (certbot, lego, acme.sh ...) renews by writing new files over
the old ones: two files, one after the other, each maybe in several writes or
by a rename.  Each poll of :class:`CredentialWatcher`:

1. reads the files and compares their modification time, size and SHA-256
   with what it saw last; nothing changed, nothing to do.  The content is
   hashed every time, not only when the time changes: a copy that keeps the
   original's time (``cp -p``, ``rsync -t``, a rename of a file written
   elsewhere) changes the bytes without a new time, and these files are a
   few kilobytes;
2. loads them.  A file that does not parse (half written, or not there during
   a rename) or a key that does not match the certificate (one of the two is
   written, the other not yet) is "not yet": a DEBUG line, polled again; only
   if the pair is still unusable after ``settle`` seconds, one WARNING line;
3. a leaf certificate identical to the one in use is nothing to do (a
   ``touch``, or a SIGHUP that already loaded it);
4. refuses a certificate outside its validity period (expired, or not valid
   yet: the peer would end the connection, validating "now"), then checks
   the identity rules of Certificate Update
   (draft-rosomakho-tls-cert-update-02 §"Requirements for Authenticators",
   :func:`longtls.crypto.cert_identity.check_same_identity`) against the
   certificate in use: a renewal that breaks one is refused with one WARNING
   line naming the file and the rule, and the old certificate stays in use,
   for new connections too.  Decision: the watcher acts without an operator,
   so it only takes what a live connection could take; an operator who means
   to change the identity restarts ``serve``, or sends ``tunnel`` a SIGHUP;
5. otherwise calls ``on_renewal`` with the new :class:`Credentials`;
   :func:`put_in_use` is what ``longtls serve``/``connect``/``tunnel`` do
   with them: new connections use them, every live connection that
   negotiated Certificate Update is sent them, one INFO line says so.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .aio.connections import CertificateRollout, LiveConnections
from .aio.datagram import DTLSAssociation
from .aio.streams import TLSWriter
from .config import Configuration
from .connection_core import ConnectionCore
from .crypto.cert_identity import IdentityViolation, check_same_identity
from .crypto.certificates import (
    check_key_matches_certificate,
    load_certificate_chain,
    load_private_key,
)
from .errors import ConfigurationError, TLSError
from .metrics import Metrics

__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "CredentialWatcher",
    "Credentials",
    "Poll",
    "catch_up",
    "certificate_fields",
    "describe_certificate",
    "describe_rollout",
    "put_in_use",
    "validity_problem",
]

logger = logging.getLogger("longtls.credentials")

#: Seconds between two looks at the files (``--cert-check-interval``).
DEFAULT_CHECK_INTERVAL = 2.0
#: A changed pair still unusable after this many polls is worth a warning.
SETTLE_POLLS = 10

_FileState = tuple[int, int, bytes] | None  # (mtime_ns, size, sha256), None: unreadable


@dataclass(frozen=True, eq=False)
class Credentials:
    """A certificate chain (leaf first) and its private key, loaded and matched."""

    chain: tuple[x509.Certificate, ...]
    private_key: Any = field(repr=False)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


class Poll(StrEnum):
    """What one poll found."""

    unchanged = "unchanged"  # the files are as last seen
    waiting = "waiting"  # they changed, but are not a usable pair (yet)
    current = "current"  # they hold the certificate already in use
    refused = "refused"  # a new certificate that breaks an identity rule
    renewed = "renewed"  # a new certificate, handed to on_renewal


def certificate_fields(cert: x509.Certificate) -> dict[str, str]:
    """subject (RFC 4514), serial (lowercase hex) and not_after (ISO 8601 UTC),
    as the CLI's ``--summary json`` prints them."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def describe_certificate(cert: x509.Certificate) -> str:
    """For a log line: ``subject CN=..., serial 1f..., not after 2027-03-01T12:00:00Z``."""
    fields = certificate_fields(cert)
    return f"subject {fields['subject']}, serial {fields['serial']}, not after {fields['not_after']}"


class CredentialWatcher:
    """Polls ``certfile`` (and ``keyfile``, ``chainfile``) for a renewed pair.

    ``in_use()`` is the chain in use now (leaf first; the identity rules
    compare against its leaf); ``on_renewal(credentials)`` puts a renewed
    pair to use.  ``keyfile`` None: the key is in ``certfile``; ``password``
    for an encrypted key.  ``poll()`` is one look (synchronous); ``start()``
    runs it every ``interval`` seconds as a task.
    """

    def __init__(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str] | None = None,
        chainfile: str | os.PathLike[str] | None = None,
        *,
        in_use: Callable[[], Sequence[x509.Certificate]],
        on_renewal: Callable[[Credentials], object],
        password: bytes | None = None,
        interval: float = DEFAULT_CHECK_INTERVAL,
        settle: float | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval > 0:
            raise ValueError("interval must be a positive number of seconds")
        self.certfile = Path(certfile)
        self.keyfile = Path(keyfile) if keyfile is not None else None
        self.chainfile = Path(chainfile) if chainfile is not None else None
        self.in_use = in_use
        self.on_renewal = on_renewal
        self.password = password
        self.interval = interval
        self.settle = settle if settle is not None else SETTLE_POLLS * interval
        self.metrics = metrics
        self.clock = clock
        self._seen: tuple[_FileState, ...] | None = None  # None: never looked (the first poll loads)
        self._waiting_since: float | None = None
        self._why_waiting = ""  # what was wrong with the pair at the last load
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<CredentialWatcher {self.certfile} every {self.interval:g} s>"

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.certfile, self.keyfile, self.chainfile) if p is not None)

    def _names(self) -> str:
        return " and ".join(str(p) for p in self.files)

    # -- polling ----------------------------------------------------------------------------

    def poll(self) -> Poll:
        """Look at the files once; act on a renewal (see the module docstring)."""
        state = tuple(_file_state(p) for p in self.files)
        if state == self._seen:
            if self._waiting_since is not None:
                self._maybe_warn()
                return Poll.waiting
            return Poll.unchanged
        first = self._seen is None
        self._seen = state
        try:
            credentials = self._load()
        except ConfigurationError as exc:
            # Half written, mid-rename, or one file of the two renewed so far.
            if self._waiting_since is None:
                self._waiting_since = self.clock()
                self._warned = False
            self._why_waiting = str(exc.args[0]) if exc.args else "unusable"
            logger.debug("%s changed but are not a usable pair yet: %s", self._names(), self._why_waiting)
            self._maybe_warn()
            return Poll.waiting
        self._waiting_since = None
        in_use = list(self.in_use())
        if in_use and _der(in_use[0]) == _der(credentials.leaf):
            return Poll.current
        if first and not in_use:
            return Poll.current  # nothing to compare with: what was loaded at start
        problem = validity_problem(credentials.leaf)
        if in_use and problem is None:
            try:
                check_same_identity(in_use[0], credentials.leaf)
            except IdentityViolation as violation:
                problem = str(violation)
        if problem is not None:
            still = f"the certificate with {describe_certificate(in_use[0])}" if in_use else "the previous one"
            logger.warning("refusing the renewed certificate in %s: %s; still using %s", self.certfile, problem, still)
            if self.metrics is not None:
                self.metrics.certificate_reloaded(applied=False)
            return Poll.refused
        self.on_renewal(credentials)
        if self.metrics is not None:
            self.metrics.certificate_reloaded(applied=True)
        return Poll.renewed

    def _load(self) -> Credentials:
        chain = load_certificate_chain(self.certfile)
        key = load_private_key(self.keyfile if self.keyfile is not None else self.certfile, self.password)
        check_key_matches_certificate(key, chain[0])
        if self.chainfile is not None:
            chain += [c for c in load_certificate_chain(self.chainfile) if c not in chain]
        return Credentials(tuple(chain), key)

    def _maybe_warn(self) -> None:
        since = self._waiting_since
        if since is None or self._warned or self.clock() - since < self.settle:
            return
        self._warned = True
        logger.warning(
            "%s changed %.0f s ago but are still not a usable certificate and key: %s; "
            "still using the previous certificate",
            self._names(), self.clock() - since, self._why_waiting,
        )

    # -- the task ---------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Poll every ``interval`` seconds in a task (until ``stop()``)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.poll()
            except Exception:
                # A bug in on_renewal must not stop the watching, nor the program.
                logger.exception("checking %s failed", self._names())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def _file_state(path: Path) -> _FileState:
    try:
        with path.open("rb") as f:
            stat = os.fstat(f.fileno())
            data = f.read()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, hashlib.sha256(data).digest())


def validity_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is outside its validity period now, or None.  A peer
    validates an updated chain as of now (draft-rosomakho-tls-cert-update-02
    §"Requirements for Authenticators") and ends the connection with
    illegal_parameter if it does not: a file with a certificate expired or
    not yet valid must never be sent to live connections."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if start <= now <= end:
        return None
    when = "expired" if now > end else "not valid yet"
    return f"it is {when} (valid from {start:%Y-%m-%dT%H:%M:%SZ} to {end:%Y-%m-%dT%H:%M:%SZ})"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def put_in_use(
    credentials: Credentials,
    configuration: Configuration,
    connections: LiveConnections | None,
    *,
    source: str | os.PathLike[str],
    only: Callable[[ConnectionCore], bool] | None = None,
) -> CertificateRollout:
    """New connections use ``credentials`` (``configuration`` is changed in
    place), and every connection in ``connections`` that negotiated
    Certificate Update is sent them; one INFO line says which certificate and
    how many connections.  A connection whose own handshake certificate the
    new one cannot replace (after a SIGHUP reload to another identity, say)
    keeps its certificate (``CertificateRollout.refused``).  ``only``: the
    connections to consider (LiveConnections.update_certificate), e.g. those
    on the default pair when the server has ``server_credentials``."""
    configuration.certificate_chain = list(credentials.chain)
    configuration.private_key = credentials.private_key
    rollout = CertificateRollout()
    if connections is not None:
        rollout = connections.update_certificate(credentials.chain, credentials.private_key, only=only)
    # None: the live connections cannot take one (MLS mode: no Certificate Update).
    reach = describe_rollout(rollout) if connections is not None else "for new connections only"
    logger.info(
        "certificate renewed from %s: %s; %s", os.fspath(source), describe_certificate(credentials.leaf), reach,
    )
    return rollout


def catch_up(connection: TLSWriter | DTLSAssociation, configuration: Configuration) -> bool:
    """Call once a connection's handshake completed: if ``configuration``'s
    certificate was renewed while the handshake was under way (after our
    Certificate went out, before the connection joined its LiveConnections,
    so ``put_in_use`` missed it), hand it the renewal now.  True if an update
    was sent or is pending.  Nothing happens without Certificate Update, for a
    certificate outside its validity period, or for one the core refuses
    (another identity after a reload: that connection keeps its own)."""
    conn = connection.connection
    # The connection's own credential: the one chosen by server_name, if any
    # (docs/sni.md), else the configuration's default pair.
    own = conn.server_credential
    chain = own.certificate_chain if own is not None else configuration.certificate_chain
    key = own.private_key if own is not None else configuration.private_key
    ours = conn.local_certificates
    if not chain or not ours or not conn.certificate_update_negotiated or _der(ours[0]) == _der(chain[0]):
        return False
    if validity_problem(chain[0]) is not None:
        return False
    try:
        connection.update_certificate(chain, key)
    except (TLSError, OSError) as exc:  # LocalProtocolError: the core's rules; others: it failed meanwhile
        logger.debug("a connection that completed its handshake during a renewal keeps its certificate: %s", exc)
        return False
    logger.debug("a connection that completed its handshake during a renewal was sent the renewed certificate")
    return True


def describe_rollout(rollout: CertificateRollout) -> str:
    """``sent to 2 of 3 live connection(s) (1 without Certificate Update)``."""
    text = f"sent to {rollout.delivered} of {rollout.live} live connection(s)"
    notes = []
    if rollout.pending:
        notes.append(f"{rollout.pending} when the peer next asks")
    if rollout.not_negotiated:
        notes.append(f"{rollout.not_negotiated} without Certificate Update")
    if rollout.refused:
        # The reason per connection is logged at DEBUG (-v) by LiveConnections.
        notes.append(f"{rollout.refused} could not take it")
    if notes:
        text += f" ({'; '.join(notes)})"
    return text
