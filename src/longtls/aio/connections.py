"""The live connections of a server (or of a client that opens many), as one set.

    connections = LiveConnections()
    options = StreamOptions(connections=connections)
    server = await start_server(handler, host, port, configuration, options)
    ...
    rollout = connections.update_certificate(new_chain, new_key)   # after a renewal
    print(rollout.sent, "connections were sent the new certificate")

Every TLS stream and DTLS association started with those options joins the
set when its handshake completes and leaves it when it ends; the set is what
a program uses to act on all of them at once: hand every one a renewed
certificate (Certificate Update, draft-rosomakho-tls-cert-update-02), or
count them.  A program that never asks for it pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from ..connection_core import ConnectionCore
from ..errors import LocalProtocolError, TLSError

__all__ = ["CertificateRollout", "LiveConnection", "LiveConnections"]

logger = logging.getLogger("longtls.aio")


class LiveConnection(Protocol):
    """What joins a LiveConnections: a ``TLSProtocol`` or a ``DTLSAssociation``."""

    peername: str

    @property
    def connection(self) -> ConnectionCore: ...

    def update_certificate(self, chain: Sequence[x509.Certificate] | None = None, private_key: Any = None) -> bool:
        ...


@dataclass(frozen=True)
class CertificateRollout:
    """What ``LiveConnections.update_certificate`` did, connection by connection.

    ``sent``: the CertificateUpdate left at once; ``pending``: it waits for the
    peer's next request (or for an extended key update to end) and goes by
    itself; ``not_negotiated``: the peer does not do Certificate Update, so
    only a new connection will see the new certificate; ``refused``: the core
    refused it for that connection (e.g. the identity differs from the
    certificate that connection authenticated with).
    """

    sent: int = 0
    pending: int = 0
    not_negotiated: int = 0
    refused: int = 0

    @property
    def delivered(self) -> int:
        """Connections that were sent, or will be sent, the new certificate."""
        return self.sent + self.pending

    @property
    def live(self) -> int:
        return self.sent + self.pending + self.not_negotiated + self.refused


class LiveConnections:
    """The connections with a completed handshake that have not ended yet.

    Give it to ``connect``/``start_server``/``connect_dtls``/``serve_dtls``
    as ``StreamOptions(connections=...)``; one set may collect the
    connections of several servers and clients.
    """

    def __init__(self) -> None:
        self._members: dict[LiveConnection, None] = {}  # insertion order, for stable iteration

    def __repr__(self) -> str:
        return f"<LiveConnections {len(self._members)}>"

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[LiveConnection]:
        return iter(list(self._members))  # a snapshot: members may leave meanwhile

    def add(self, member: LiveConnection) -> None:
        """Called by the asyncio layer once a handshake completes."""
        self._members[member] = None

    def discard(self, member: LiveConnection) -> None:
        """Called by the asyncio layer when a connection ends."""
        self._members.pop(member, None)

    def update_certificate(
        self, chain: Sequence[x509.Certificate] | None = None, private_key: Any = None,
        *, only: Callable[[ConnectionCore], bool] | None = None,
    ) -> CertificateRollout:
        """Hand every live connection that negotiated Certificate Update the
        renewed ``chain`` (leaf first) and ``private_key``.

        ``only``: the connections to consider (the others are neither sent
        the certificate nor counted), e.g. those that use one server
        credential of several (``connection.server_credential is c``,
        docs/sni.md).

        None: each connection's own configuration's current chain and key
        (``ConnectionCore.update_certificate``).  A connection for which the
        core refuses the certificate (LocalProtocolError: the identity rules
        against the certificate it authenticated with, a key that does not
        match, a certificate it already used) is counted, logged at DEBUG
        and left as it is; the others are not affected.
        """
        sent = pending = not_negotiated = refused = 0
        for member in self:
            conn = member.connection
            if only is not None and not only(conn):
                continue
            if not conn.certificate_update_negotiated or conn.is_closed:
                not_negotiated += 1
                continue
            try:
                went = member.update_certificate(chain, private_key)
            except LocalProtocolError as exc:
                refused += 1
                logger.debug("%s: certificate not updated: %s", member.peername, exc)
                continue
            except (TLSError, OSError) as exc:
                # It failed since it joined (it is leaving the set): nothing to update.
                logger.debug("%s: certificate not updated, the connection failed: %s", member.peername, exc)
                continue
            if went:
                sent += 1
            else:
                pending += 1
        return CertificateRollout(sent, pending, not_negotiated, refused)
