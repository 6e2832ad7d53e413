"""DTLS 1.3 connection ID updates (RFC 9147 §9), a post-handshake protocol.

Once the handshake negotiated the connection_id extension (RFC 9146), each
side names the CIDs it wants to find in the records it receives, and may hand
over more (``NewConnectionId``) or ask the peer for more
(``RequestConnectionId``).  A CID is what lets a DTLS server find a
connection whose client moved to a new address (NAT rebinding) without a new
handshake; fresh CIDs let a client that moves on purpose not be linked to
its old path (RFC 9146 §8).

The rules of §9, and how longtls applies them:

- an endpoint that receives an empty CID never sends NewConnectionId (it
  cannot start receiving CIDs), and one that sends an empty CID never sends
  RequestConnectionId; receiving either in breach of that is
  unexpected_message (§9), as is either message without negotiated CIDs (the
  protocol is then not registered, and the engine refuses the message);
- at most one NewConnectionId and one RequestConnectionId of ours are
  unacknowledged at a time (§9, rfc9147bis §5.8.4): a second is held back
  until the host reports the ACK of the first;
- the peer's CIDs are used in the order given (§9 "SHOULD"); spares beyond
  ``MAX_SPARE_PEER_CIDS`` are discarded ("MAY simply discard");
- a request is answered with at most ``MAX_CIDS_PER_ANSWER`` fresh CIDs, as
  cid_spare; past ``MAX_OWN_CIDS`` CIDs issued on one connection, requests
  get none, and a peer asking more than ``MAX_PEER_REQUESTS`` times is cut
  off with too_many_cids_requested (§9 allows both).

docs/dtls.md has the same decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..constants import AlertDescription, HandshakeType
from ..errors import DecodeError, LocalProtocolError, RemoteProtocolError
from ..wire.connection_ids import ConnectionIdUsage, NewConnectionId, RequestConnectionId
from ..wire.messages import encode_handshake

#: Spare CIDs of the peer we keep; more are discarded (RFC 9147 §9 "MAY").
MAX_SPARE_PEER_CIDS = 8
#: CIDs we hand out in answer to one RequestConnectionId.
MAX_CIDS_PER_ANSWER = 4
#: CIDs we accept on one connection in all (the handshake's included).
MAX_OWN_CIDS = 32
#: RequestConnectionIds a peer may send on one connection before we close it.
MAX_PEER_REQUESTS = 64


class ConnectionIdHost(Protocol):
    """What connection ID updates need from the DTLS connection."""

    def queue_handshake(self, message: bytes) -> None:
        """Send one encoded handshake message (reliably: the host retransmits it until ACKed)."""

    def use_peer_connection_id(self, cid: bytes) -> None:
        """Put ``cid`` in the records we send from now on."""

    def accept_own_connection_ids(self, cids: Sequence[bytes]) -> None:
        """Accept records carrying any of ``cids`` (all we issued and still honour)."""


class ConnectionIds:
    """One side's connection IDs after a handshake that negotiated them."""

    message_types = frozenset({HandshakeType.new_connection_id, HandshakeType.request_connection_id})
    #: Both messages are single-flight (rfc9147bis §5.8.4): nothing stays open
    #: at the protocol level; the host's ACKs cover their delivery.
    in_progress = False

    def __init__(
        self, host: ConnectionIdHost, own: bytes, peer: bytes, random: Callable[[int], bytes]
    ) -> None:
        self.host = host
        self._random = random
        #: Every CID we issued and accept, the handshake's first.
        self.own: list[bytes] = [own]
        #: The CID we put in our records, and the peer's spares in the order given.
        self.peer = peer
        # Lists and a tuple, not deques and a set: every DTLS association has
        # this object, and four empty deques and a set were 2.6 KB of an idle
        # one (issue 16); they hold a few entries at most.
        self.peer_spares: list[bytes] = []
        self._requests_received = 0
        # Our own messages waiting for the ACK of the previous one of their type.
        self._unacked: tuple[int, ...] = ()
        self._held: dict[int, list[bytes]] = {}

    def __repr__(self) -> str:  # CIDs are not secret, but they link a connection: counts only
        return f"<ConnectionIds own={len(self.own)} spare_peer={len(self.peer_spares)}>"

    # -- our side --------------------------------------------------------------

    def request(self, num_cids: int) -> None:
        """Ask the peer for ``num_cids`` more CIDs to use (RequestConnectionId)."""
        if not 1 <= num_cids <= 255:
            raise LocalProtocolError("ask for 1 to 255 connection IDs")
        if not self.peer:
            # §9: "MUST NOT send RequestConnectionId when sending an empty Connection ID".
            raise LocalProtocolError("the peer receives no connection IDs: it cannot issue new ones")
        self._send(HandshakeType.request_connection_id, RequestConnectionId(num_cids).encode())

    def issue(self, num_cids: int, usage: ConnectionIdUsage = ConnectionIdUsage.cid_spare) -> list[bytes]:
        """Hand the peer ``num_cids`` fresh CIDs (NewConnectionId); returns them."""
        if not self.own[0]:
            # §9: one that negotiated receiving an empty CID MUST NOT send NewConnectionId.
            raise LocalProtocolError("this connection receives no connection IDs")
        if not 1 <= num_cids <= MAX_OWN_CIDS - len(self.own):
            raise LocalProtocolError(f"at most {MAX_OWN_CIDS} connection IDs per connection")
        cids = self._fresh(num_cids)
        self._send(HandshakeType.new_connection_id, NewConnectionId(tuple(cids), usage).encode())
        return cids

    def next_peer_connection_id(self) -> bool:
        """Move our records to the peer's next spare CID (e.g. on a new path,
        §9 "SHOULD use a new CID whenever sending on a new path"); False if none is left."""
        if not self.peer_spares:
            return False
        self.peer = self.peer_spares.pop(0)
        self.host.use_peer_connection_id(self.peer)
        return True

    def message_acknowledged(self, msg_type: int) -> None:
        """The host saw our message of ``msg_type`` acknowledged: the next one may go."""
        self._unacked = tuple(t for t in self._unacked if t != msg_type)
        held = self._held.get(msg_type)
        if held:
            self._unacked += (msg_type,)
            self.host.queue_handshake(held.pop(0))

    def _send(self, msg_type: HandshakeType, body: bytes) -> None:
        raw = encode_handshake(msg_type, body)
        if msg_type in self._unacked:
            # §9: "MUST NOT have more than one NewConnectionId message
            # outstanding" (RequestConnectionId likewise, rfc9147bis §5.8.4).
            self._held.setdefault(msg_type, []).append(raw)
            return
        self._unacked += (msg_type,)
        self.host.queue_handshake(raw)

    def _fresh(self, count: int) -> list[bytes]:
        length = len(self.own[0])
        cids: list[bytes] = []
        while len(cids) < count:
            cid = self._random(length)
            if cid not in self.own and cid not in cids:
                cids.append(cid)
        self.own.extend(cids)
        self.host.accept_own_connection_ids(self.own)
        return cids

    # -- the peer's messages ----------------------------------------------------------

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        try:
            if msg_type == HandshakeType.new_connection_id:
                self._on_new_connection_id(NewConnectionId.decode(body))
            else:
                self._on_request_connection_id(RequestConnectionId.decode(body))
        except DecodeError as exc:
            raise RemoteProtocolError(str(exc), AlertDescription.decode_error) from None

    def _on_new_connection_id(self, message: NewConnectionId) -> None:
        if not self.peer:
            # §9: the peer negotiated receiving an empty CID: it MUST NOT send this.
            raise RemoteProtocolError(
                "NewConnectionId from a peer that receives no connection IDs", AlertDescription.unexpected_message
            )
        cids = [cid for cid in message.cids if cid != self.peer and cid not in self.peer_spares]
        if any(len(cid) != len(self.peer) or not cid for cid in cids):
            # A CID's length is what the peer's record parser keys on; a new
            # length (or an empty CID) would make its records unreadable.
            raise RemoteProtocolError(
                "NewConnectionId with a connection ID of another length", AlertDescription.illegal_parameter
            )
        if message.usage is ConnectionIdUsage.cid_immediate:
            if not cids:
                raise RemoteProtocolError(
                    "cid_immediate NewConnectionId without a new connection ID", AlertDescription.illegal_parameter
                )
            self.peer = cids.pop(0)
            self.host.use_peer_connection_id(self.peer)
        room = MAX_SPARE_PEER_CIDS - len(self.peer_spares)
        self.peer_spares.extend(cids[:max(room, 0)])

    def _on_request_connection_id(self, message: RequestConnectionId) -> None:
        if not self.own[0]:
            # §9: the peer sends us an empty CID: it MUST NOT ask for more.
            raise RemoteProtocolError(
                "RequestConnectionId from a peer that sends an empty connection ID",
                AlertDescription.unexpected_message,
            )
        self._requests_received += 1
        if self._requests_received > MAX_PEER_REQUESTS:
            raise RemoteProtocolError(
                f"more than {MAX_PEER_REQUESTS} RequestConnectionId messages",
                AlertDescription.too_many_cids_requested,
            )
        # §9: "SHOULD respond ... with usage cid_spare"; fewer (even none) when excessive.
        count = min(message.num_cids, MAX_CIDS_PER_ANSWER, MAX_OWN_CIDS - len(self.own))
        cids = self._fresh(count) if count > 0 else []
        self._send(
            HandshakeType.new_connection_id, NewConnectionId(tuple(cids), ConnectionIdUsage.cid_spare).encode()
        )
