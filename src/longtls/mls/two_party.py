"""The two-party profile of MLS as MLS-TLS runs it: a pure state machine.

draft-kohbrok-mls-two-party-profile-00 §4 (initial key agreement) and §5
(continuous key agreement), with the record keys of draft-kohbrok-mls-tls-01
§"Deriving keys for record layer protection".  ``TwoPartySession`` consumes
MLS-TLS messages (``wire.mls_tls``) and returns *actions*: messages to send,
record keys to install per direction, and what happened.  It never touches
records, sockets or clocks; the group behind it is any ``TwoPartyGroup``.

When each direction's key switches (docs/mls-tls.md §7 has the reasoning):
records of one direction arrive in the order they were sent, and a record
does not say which key protects it, so each direction may switch only at a
message both ends see at the same place in that direction's stream:

- B → A, from the party that *processed* a ConnectionUpdate (B) to the
  party that committed it (A): the EpochKeyUpdate.  B sends it under the
  old key and switches its send key right after it ("MUST start using the
  key material of the new epoch after sending the EpochKeyUpdate", profile
  §5); A switches its receive key right after reading it.
- A → B: the ConnectionUpdate itself.  B switches its receive key right
  after processing it, so A must send no record under the old key after its
  ConnectionUpdate: A "MUST wait until they receive the corresponding
  EpochKeyUpdate before they start using the key material of the new epoch"
  (§5), and between the two it sends nothing at all (``may_send_records`` is
  False; the channel holds application data back).  On the EpochKeyUpdate A
  switches both directions and sends again.  This is the only reading of §5
  under which neither party misreads a record, short of a message the
  drafts do not define or trial decryption (docs/mls-tls.md §7 weighs them).

Collisions (§5): the initiator ignores a ConnectionUpdate that arrives while
it waits (its own wins); the responder drops its pending commit and applies
the initiator's.  Neither party's stream has a record under a key the other
does not expect: the responder, waiting, sent nothing after its own update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from ..constants import AlertDescription, CipherSuite
from ..crypto.suites import SuiteInfo, suite_info
from ..errors import LocalProtocolError, MLSError, RemoteProtocolError
from ..events import Direction
from ..wire.mls_tls import (
    MLSTLSClientHello,
    MLSTLSConnectionUpdate,
    MLSTLSEpochKeyUpdate,
    MLSTLSMessage,
    MLSTLSResumptionRequest,
    MLSTLSResumptionResponse,
    MLSTLSServerHello,
)
from .crypto import CipherSuite as MLSCipherSuite

__all__ = [
    "CLIENT_TRAFFIC_LABEL",
    "SERVER_TRAFFIC_LABEL",
    "Action",
    "Established",
    "GroupCreator",
    "GroupJoiner",
    "InstallKey",
    "PeerUpdateIgnored",
    "Role",
    "SendMessage",
    "SessionState",
    "TwoPartyGroup",
    "TwoPartySession",
    "UpdateCompleted",
    "UpdateDropped",
    "record_suite",
    "traffic_secrets",
]

# draft-kohbrok-mls-tls-01 §"Deriving keys for record layer protection".
CLIENT_TRAFFIC_LABEL = b"MLS-TLS c ap traffic"
SERVER_TRAFFIC_LABEL = b"MLS-TLS s ap traffic"

# docs/mls-tls.md §5: the records are protected with the TLS 1.3 cipher suite
# whose AEAD and hash are the MLS suite's.
_RECORD_SUITES = {
    MLSCipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519: CipherSuite.TLS_AES_128_GCM_SHA256,
    MLSCipherSuite.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519: CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    MLSCipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519: CipherSuite.TLS_AES_128_GCM_SHA256,
}


def record_suite(mls_cipher_suite: int) -> SuiteInfo:
    """The TLS 1.3 record protection of an MLS cipher suite (same AEAD, same hash)."""
    try:
        return suite_info(_RECORD_SUITES[MLSCipherSuite(mls_cipher_suite)])
    except (ValueError, KeyError):
        raise MLSError(f"MLS cipher suite 0x{mls_cipher_suite:04x} is not implemented") from None


class TwoPartyGroup(Protocol):
    """What the two-party profile needs from one member's MLS group.

    ``create_self_update`` makes a Commit with UpdatePath and keeps it
    pending (the group stays in its epoch); ``merge_pending`` moves to the
    pending commit's epoch, ``discard_pending`` forgets it.
    ``process_commit`` validates and applies the peer's Commit (RFC 9420
    §12.4.2, its credential validated by the application's hook, §5.3.1)
    and returns the new epoch; anything invalid raises MLSError (or
    DecodeError) and leaves the group as it was.
    """

    @property
    def epoch(self) -> int: ...

    @property
    def cipher_suite(self) -> int: ...

    @property
    def peer_identity(self) -> bytes:
        """The peer's credential, as encoded in its leaf: it may never change (issue 13)."""
        ...

    def export(self, label: bytes, context: bytes, length: int) -> bytes: ...

    def create_self_update(self) -> bytes: ...

    def merge_pending(self) -> int: ...

    def discard_pending(self) -> None: ...

    def process_commit(self, message: bytes) -> int: ...


class GroupJoiner(Protocol):
    """The initiator's side of §4: a KeyPackage out, a Welcome in."""

    def key_package(self) -> bytes:
        """An MLSMessage carrying our KeyPackage (its private keys kept for ``join``)."""
        ...

    def join(self, welcome: bytes) -> TwoPartyGroup:
        """Join by the responder's Welcome (an MLSMessage), its credential validated."""
        ...


class GroupCreator(Protocol):
    """The responder's side of §4: validate the KeyPackage, create, add, welcome."""

    def create(self, key_package: bytes) -> tuple[TwoPartyGroup, bytes]:
        """The group with the initiator added, and the Welcome (an MLSMessage)."""
        ...


class Role(Enum):
    """Who sent the first message (profile §3).  The initiator takes the
    client's record secret, the responder the server's (docs/mls-tls.md §5)."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


class SessionState(Enum):
    START = "start"
    WAIT_SERVER_HELLO = "wait_server_hello"  # initiator, ClientHello sent
    WAIT_CLIENT_HELLO = "wait_client_hello"  # responder
    CONNECTED = "connected"  # phase 2: continuous key agreement
    FAILED = "failed"


# -- actions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Queue this message (handshake content) under the current send key."""

    message: MLSTLSMessage


@dataclass(frozen=True, slots=True)
class InstallKey:
    """From here on, protect (send) or open (receive) records under this
    traffic secret, sequence number 0 (draft-kohbrok-mls-tls-01 §"Protecting
    application data on the wire").  The channel derives key and iv
    (RFC 8446 §7.3) and deletes the secret; the session keeps no copy."""

    direction: Direction
    epoch: int
    traffic_secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Established:
    """Phase 1 is over: both keys of ``epoch`` are installed (profile §4)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class UpdateCompleted:
    """Both directions now use ``epoch``'s keys; ``by_us``: our ConnectionUpdate."""

    epoch: int
    by_us: bool


@dataclass(frozen=True, slots=True)
class UpdateDropped:
    """Responder: our pending commit lost a collision and was dropped (§5)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class PeerUpdateIgnored:
    """Initiator: the peer's ConnectionUpdate crossed ours and was ignored (§5)."""

    epoch: int


Action = SendMessage | InstallKey | Established | UpdateCompleted | UpdateDropped | PeerUpdateIgnored


def traffic_secrets(group: TwoPartyGroup, length: int) -> tuple[bytes, bytes]:
    """(client_application_traffic_secret, server_application_traffic_secret) of the group's epoch.

    MLS-Exporter(label, [], Length) with the labels of draft-kohbrok-mls-tls-01
    §"Deriving keys"; Length is the TLS suite's Hash.length.
    """
    return (group.export(CLIENT_TRAFFIC_LABEL, b"", length), group.export(SERVER_TRAFFIC_LABEL, b"", length))


class TwoPartySession:
    """One party's side of the two-party profile over MLS-TLS messages."""

    def __init__(self, role: Role, *, joiner: GroupJoiner | None = None,
                 creator: GroupCreator | None = None, group: TwoPartyGroup | None = None) -> None:
        self.role = role
        self._joiner = joiner
        self._creator = creator
        self.group = group
        self.state = SessionState.START
        #: The epoch our ConnectionUpdate moves to, while we wait for its EpochKeyUpdate.
        self.waiting_for: int | None = None
        if group is not None:
            self.state = SessionState.CONNECTED
        elif role is Role.RESPONDER:
            if creator is None:
                raise ValueError("a responder needs a GroupCreator")
            self.state = SessionState.WAIT_CLIENT_HELLO
        elif joiner is None:
            raise ValueError("an initiator needs a GroupJoiner")

    @classmethod
    def initiator(cls, joiner: GroupJoiner) -> TwoPartySession:
        return cls(Role.INITIATOR, joiner=joiner)

    @classmethod
    def responder(cls, creator: GroupCreator) -> TwoPartySession:
        return cls(Role.RESPONDER, creator=creator)

    def __repr__(self) -> str:
        epoch = None if self.group is None else self.group.epoch
        return f"<TwoPartySession {self.role.value} {self.state.value} epoch={epoch} waiting_for={self.waiting_for}>"

    @property
    def epoch(self) -> int | None:
        return None if self.group is None else self.group.epoch

    @property
    def may_send_records(self) -> bool:
        """May the channel send records now?  Not before the keys exist, and
        not between our ConnectionUpdate and its EpochKeyUpdate (module doc)."""
        return self.state is SessionState.CONNECTED and self.waiting_for is None

    @property
    def may_start_update(self) -> bool:
        """Profile §5: not while waiting for an EpochKeyUpdate."""
        return self.state is SessionState.CONNECTED and self.waiting_for is None

    # -- commands ------------------------------------------------------------

    def start(self) -> list[Action]:
        """Initiator: send the ClientHello (profile §4)."""
        if self.role is not Role.INITIATOR or self.state is not SessionState.START:
            raise LocalProtocolError("only an initiator that has not started sends a ClientHello")
        assert self._joiner is not None
        key_package = self._joiner.key_package()
        self.state = SessionState.WAIT_SERVER_HELLO
        return [SendMessage(MLSTLSClientHello(key_package))]

    def start_update(self) -> list[Action]:
        """Send a ConnectionUpdate: a self-update Commit with UpdatePath (profile §5).

        From here until its EpochKeyUpdate arrives, ``may_send_records`` is False.
        """
        if not self.may_start_update:
            raise LocalProtocolError(
                "an MLS update is already waiting for its EpochKeyUpdate (two-party profile §5)"
                if self.waiting_for is not None else "the MLS-TLS channel is not established"
            )
        group = self._connected_group()
        commit = group.create_self_update()
        self.waiting_for = group.epoch + 1
        return [SendMessage(MLSTLSConnectionUpdate(commit))]

    def abandon_update(self) -> None:
        """Forget our pending ConnectionUpdate without its EpochKeyUpdate.

        For the channel only, when the peer's close_notify arrives while we
        wait: the peer sends nothing more (RFC 8446 §6.1), so the update can
        never complete, and a peer that has sent close_notify ignores a
        ConnectionUpdate (docs/mls-tls.md §12): both keep the current keys.
        """
        if self.waiting_for is not None:
            self._connected_group().discard_pending()
            self.waiting_for = None

    # -- messages from the peer ------------------------------------------------

    def receive(self, message: MLSTLSMessage) -> list[Action]:
        """Handle one message from the peer; an error leaves the session FAILED."""
        if self.state is SessionState.FAILED:
            raise LocalProtocolError("the MLS-TLS session has failed")
        try:
            return self._receive(message)
        except Exception:
            self.state = SessionState.FAILED
            raise

    def _receive(self, message: MLSTLSMessage) -> list[Action]:
        state = self.state
        if isinstance(message, (MLSTLSResumptionRequest, MLSTLSResumptionResponse)):
            if state is SessionState.WAIT_CLIENT_HELLO:
                # docs/mls-tls.md §8: resumption is not implemented yet.
                raise RemoteProtocolError("MLS-TLS resumption is not supported",
                                          AlertDescription.handshake_failure)
            raise _unexpected(message, state)
        if state is SessionState.WAIT_CLIENT_HELLO and isinstance(message, MLSTLSClientHello):
            return self._on_client_hello(message)
        if state is SessionState.WAIT_SERVER_HELLO and isinstance(message, MLSTLSServerHello):
            return self._on_server_hello(message)
        if state is SessionState.CONNECTED:
            if isinstance(message, MLSTLSConnectionUpdate):
                return self._on_connection_update(message)
            if isinstance(message, MLSTLSEpochKeyUpdate):
                return self._on_epoch_key_update(message)
        raise _unexpected(message, state)

    def _on_client_hello(self, message: MLSTLSClientHello) -> list[Action]:
        # Profile §4: the creator checks suite, capabilities and credential
        # (the AS), creates the group, commits the Add and returns the Welcome.
        assert self._creator is not None
        group, welcome = self._creator.create(message.key_package)
        self.group = group
        self.state = SessionState.CONNECTED
        # The ServerHello goes in plaintext; everything after it is protected.
        # The initiator sends nothing between its ClientHello and our
        # ServerHello (it has no key), so the receive key can switch at once.
        return [SendMessage(MLSTLSServerHello(welcome)), *self._install(Direction.send, Direction.receive),
                Established(group.epoch)]

    def _on_server_hello(self, message: MLSTLSServerHello) -> list[Action]:
        assert self._joiner is not None
        group = self._joiner.join(message.welcome)
        self.group = group
        self.state = SessionState.CONNECTED
        return [*self._install(Direction.receive, Direction.send), Established(group.epoch)]

    def _on_connection_update(self, message: MLSTLSConnectionUpdate) -> list[Action]:
        group = self._connected_group()
        actions: list[Action] = []
        if self.waiting_for is not None:
            if self.role is Role.INITIATOR:
                # §5: "it MUST ignore the ConnectionUpdate and resume waiting".
                return [PeerUpdateIgnored(self.waiting_for)]
            # §5: the responder "MUST drop its locally pending commit and
            # validate and apply the commit as if it hadn't been waiting".
            group.discard_pending()
            actions.append(UpdateDropped(self.waiting_for))
            self.waiting_for = None
        before, identity = group.epoch, group.peer_identity
        epoch = group.process_commit(message.update)
        if epoch != before + 1 or group.epoch != epoch:
            raise MLSError(f"the peer's commit moved the group from epoch {before} to {epoch}")
        if group.peer_identity != identity:
            # Issue 13: the peer may not change identity with a commit.  The
            # group moved, but its keys are never installed: the channel closes.
            raise MLSError("the peer's commit changes its credential", AlertDescription.bad_certificate)
        # §5: answer with EpochKeyUpdate(new epoch) under the old key, then
        # use the new epoch's keys.  The peer sent nothing after its update
        # (it waits), so our receive key switches here too.
        actions += [SendMessage(MLSTLSEpochKeyUpdate(epoch)), *self._install(Direction.send, Direction.receive),
                    UpdateCompleted(epoch, by_us=False)]
        return actions

    def _on_epoch_key_update(self, message: MLSTLSEpochKeyUpdate) -> list[Action]:
        group = self._connected_group()
        if self.waiting_for is None:
            raise RemoteProtocolError(
                f"EpochKeyUpdate({message.epoch}) without a ConnectionUpdate of ours to confirm",
                AlertDescription.unexpected_message,
            )
        if message.epoch != self.waiting_for:
            raise RemoteProtocolError(
                f"EpochKeyUpdate names epoch {message.epoch}, our ConnectionUpdate moves to {self.waiting_for}",
                AlertDescription.illegal_parameter,
            )
        epoch = group.merge_pending()
        if epoch != message.epoch:
            raise LocalProtocolError(f"our pending commit moved to epoch {epoch}, not {message.epoch}")
        self.waiting_for = None
        # The peer switched its send key right after this message; we may
        # send again, under the new key (module doc).
        return [*self._install(Direction.receive, Direction.send), UpdateCompleted(epoch, by_us=True)]

    # -- helpers ---------------------------------------------------------------

    def _connected_group(self) -> TwoPartyGroup:
        if self.group is None:
            raise LocalProtocolError("the MLS-TLS channel is not established")
        return self.group

    def _install(self, *directions: Direction) -> list[Action]:
        """The current epoch's keys, in the order given."""
        group = self._connected_group()
        client, server = traffic_secrets(group, record_suite(group.cipher_suite).hash_length)
        ours, theirs = (client, server) if self.role is Role.INITIATOR else (server, client)
        return [InstallKey(d, group.epoch, ours if d is Direction.send else theirs) for d in directions]

    def established_keys(self) -> list[Action]:
        """Both keys of the current epoch, for a session built around an existing group."""
        return self._install(Direction.send, Direction.receive)


def _unexpected(message: MLSTLSMessage, state: SessionState) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"unexpected MLS-TLS {type(message).__name__.removeprefix('MLSTLS')} in state {state.value}",
        AlertDescription.unexpected_message,
    )
