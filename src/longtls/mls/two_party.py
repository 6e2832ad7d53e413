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

Resumption (profile §6, docs/mls-tls.md §8): a session built from a
``ResumptionState`` sends ResumptionRequest{commit} (the pending
ConnectionUpdate's commit if the old session was waiting for its
EpochKeyUpdate, else a fresh self-update) and waits; the responder finds the
state by the commit's group_id, places the commit by its epoch (the peer's
view may be one commit ahead of or behind its own: an EpochKeyUpdate or a
ResumptionResponse lost with the old connection), applies it, answers
ResumptionResponse{a fresh commit with UpdatePath} and keys both directions
with the epoch that commit creates.  The resumer applies both commits, keys
the same epoch and confirms with an EpochKeyUpdate, its first protected
record; until it arrives the responder keeps, for its own resumption state,
the epoch before its response with the response pending (a resumer that
never saw the response resends its commit, and the responder takes it as
already applied).  Crossed requests: the original initiator drops the
peer's, the original responder drops its own pending commit and answers.
"""

from __future__ import annotations

from collections.abc import Callable
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
    "ResumptionLookup",
    "ResumptionRequestIgnored",
    "ResumptionState",
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

    # For resumption (profile §6, docs/mls-tls.md §8):

    @property
    def group_id(self) -> bytes: ...

    @property
    def pending_commit(self) -> bytes | None:
        """Our pending commit's message as sent, while one is pending."""
        ...

    @property
    def last_commit(self) -> bytes | None:
        """The commit message that moved the group into its current epoch (None after the Welcome)."""
        ...

    def commit_epoch(self, message: bytes) -> int:
        """The epoch a commit of this group names in its framing (MLSError if another group's)."""
        ...

    def snapshot(self) -> TwoPartyGroup:
        """An independent copy, pending commit included."""
        ...


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
    WAIT_CLIENT_HELLO = "wait_client_hello"  # responder (a ClientHello or a ResumptionRequest)
    WAIT_RESUMPTION_RESPONSE = "wait_resumption_response"  # resumer, ResumptionRequest sent
    WAIT_RESUMPTION_CONFIRMATION = "wait_resumption_confirmation"  # responder, ResumptionResponse sent
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
    """Phase 1 (or 3: ``resumed``) is over: both keys of ``epoch`` are installed (profile §4, §6)."""

    epoch: int
    resumed: bool = False


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


@dataclass(frozen=True, slots=True)
class ResumptionRequestIgnored:
    """Original initiator: the peer's ResumptionRequest crossed ours and was dropped (§6)."""


Action = (SendMessage | InstallKey | Established | UpdateCompleted | UpdateDropped | PeerUpdateIgnored
          | ResumptionRequestIgnored)


@dataclass(frozen=True, slots=True)
class ResumptionState:
    """What one party keeps of a session to resume it (profile §6, docs/mls-tls.md §8).

    ``group``: a snapshot of the group at the last epoch this party switched
    to, with its pending commit if it was waiting for an EpochKeyUpdate (or,
    as responder of a resumption, for the confirming EpochKeyUpdate);
    ``original_role``: the role at the first connection of the chain, which
    decides crossed ResumptionRequests.  In memory only: it holds the
    group's private keys and secrets (never in its repr).  Each resumption
    works on its own copy, so the object may be used again, but only the
    newest state of a party resumes: the peer refuses an older one
    (``unknown_psk_identity``).
    """

    group: TwoPartyGroup = field(repr=False)
    original_role: Role

    def __repr__(self) -> str:
        pending = self.group.pending_commit is not None
        return f"<ResumptionState epoch={self.group.epoch} pending={pending} original_role={self.original_role.value}>"


#: The responder's store: the state to resume, by the ResumptionRequest's
#: commit message (the channel reads its group_id), or None if unknown.
ResumptionLookup = Callable[[bytes], ResumptionState | None]


def traffic_secrets(group: TwoPartyGroup, length: int) -> tuple[bytes, bytes]:
    """(client_application_traffic_secret, server_application_traffic_secret) of the group's epoch.

    MLS-Exporter(label, [], Length) with the labels of draft-kohbrok-mls-tls-01
    §"Deriving keys"; Length is the TLS suite's Hash.length.
    """
    return (group.export(CLIENT_TRAFFIC_LABEL, b"", length), group.export(SERVER_TRAFFIC_LABEL, b"", length))


class TwoPartySession:
    """One party's side of the two-party profile over MLS-TLS messages."""

    def __init__(self, role: Role, *, joiner: GroupJoiner | None = None,
                 creator: GroupCreator | None = None, group: TwoPartyGroup | None = None,
                 resume: ResumptionState | None = None, resumption_lookup: ResumptionLookup | None = None) -> None:
        #: Our role in this connection: it picks the record secrets and
        #: decides ConnectionUpdate collisions (§5).  A resumer starts as
        #: initiator ("the party initiating the resumption becomes the
        #: initiator", §6); a crossed resumption may make it the responder.
        self.role = role
        #: Our role at the first connection: it decides crossed ResumptionRequests (§6).
        self.original_role = role if resume is None else resume.original_role
        self._joiner = joiner
        self._creator = creator
        self._resume = resume
        self._lookup = resumption_lookup
        self.group = group
        self.state = SessionState.START
        #: The epoch our ConnectionUpdate moves to, while we wait for its EpochKeyUpdate.
        self.waiting_for: int | None = None
        #: Responder of a resumption, until the resumer's EpochKeyUpdate: the
        #: group before our ResumptionResponse's commit, that commit pending.
        self._unconfirmed: TwoPartyGroup | None = None
        self.resumed = False
        if resume is not None:
            if role is not Role.INITIATOR:
                raise ValueError("the party that resumes is the initiator (profile §6)")
            self.group = resume.group.snapshot()
        elif group is not None:
            self.state = SessionState.CONNECTED
        elif role is Role.RESPONDER:
            if creator is None and resumption_lookup is None:
                raise ValueError("a responder needs a GroupCreator or a ResumptionLookup")
            self.state = SessionState.WAIT_CLIENT_HELLO
        elif joiner is None:
            raise ValueError("an initiator needs a GroupJoiner")

    @classmethod
    def initiator(cls, joiner: GroupJoiner) -> TwoPartySession:
        return cls(Role.INITIATOR, joiner=joiner)

    @classmethod
    def responder(cls, creator: GroupCreator | None,
                  resumption_lookup: ResumptionLookup | None = None) -> TwoPartySession:
        """A responder to ClientHellos (with a creator) and to ResumptionRequests (with a lookup)."""
        return cls(Role.RESPONDER, creator=creator, resumption_lookup=resumption_lookup)

    @classmethod
    def resumer(cls, state: ResumptionState) -> TwoPartySession:
        """The initiator of a resumption from a stored state (profile §6)."""
        return cls(Role.INITIATOR, resume=state)

    def resumption_state(self) -> ResumptionState | None:
        """A snapshot to resume from later (None before a group exists).

        Taken after the connection ended: a snapshot taken while it goes on
        is outdated by its next epoch change, and the peer refuses it then.
        """
        group = self._unconfirmed if self._unconfirmed is not None else self.group
        if group is None:
            return None
        return ResumptionState(group.snapshot(), self.original_role)

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
        """Initiator: send the ClientHello (profile §4), or the ResumptionRequest (§6)."""
        if self.role is not Role.INITIATOR or self.state is not SessionState.START:
            raise LocalProtocolError("only an initiator that has not started sends a ClientHello")
        if self._resume is not None:
            return self._start_resumption()
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
        if isinstance(message, MLSTLSResumptionRequest):
            if state is SessionState.WAIT_CLIENT_HELLO:
                return self._on_resumption_request(message)
            if state is SessionState.WAIT_RESUMPTION_RESPONSE:
                return self._on_crossed_resumption_request(message)
            raise _unexpected(message, state)
        if isinstance(message, MLSTLSResumptionResponse):
            if state is SessionState.WAIT_RESUMPTION_RESPONSE:
                return self._on_resumption_response(message)
            raise _unexpected(message, state)
        if state is SessionState.WAIT_RESUMPTION_CONFIRMATION and isinstance(message, MLSTLSEpochKeyUpdate):
            return self._on_resumption_confirmed(message)
        if state is SessionState.WAIT_CLIENT_HELLO and isinstance(message, MLSTLSClientHello):
            if self._creator is None:
                # docs/mls-tls.md §8: a party listening only to resume.
                raise RemoteProtocolError("this MLS-TLS responder only resumes", AlertDescription.handshake_failure)
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

    # -- resumption (profile §6, docs/mls-tls.md §8) ---------------------------

    def _start_resumption(self) -> list[Action]:
        group = self._connected_group()
        commit = group.pending_commit
        if commit is None:
            # No ConnectionUpdate was waiting: a fresh self-update commit
            # with UpdatePath (the request carries "the commit", §6).
            commit = group.create_self_update()
        # Else §6: the initiator "MUST include the commit from the last
        # ConnectionUpdate", byte for byte, so that a peer that applied it
        # already recognises it (``_resume_as_responder``).
        self.state = SessionState.WAIT_RESUMPTION_RESPONSE
        return [SendMessage(MLSTLSResumptionRequest(commit))]

    def _on_resumption_request(self, message: MLSTLSResumptionRequest) -> list[Action]:
        if self._lookup is None:
            raise RemoteProtocolError("this MLS-TLS responder does not resume (no stored states)",
                                      AlertDescription.handshake_failure)
        stored = self._lookup(message.commit)
        if stored is None:
            # docs §8: the alert a TLS server sends for a PSK identity it does not know.
            raise RemoteProtocolError("ResumptionRequest for an unknown MLS group",
                                      AlertDescription.unknown_psk_identity)
        self.original_role = stored.original_role
        self.group = stored.group.snapshot()
        return self._resume_as_responder(message.commit)

    def _on_crossed_resumption_request(self, message: MLSTLSResumptionRequest) -> list[Action]:
        if self.original_role is Role.INITIATOR:
            # §6: "The initial initiator MUST drop the ResumptionRequest and continue waiting."
            return [ResumptionRequestIgnored()]
        # §6: "The initial responder MUST drop its pending commit and instead
        # validate and apply the incoming commit" (``_resume_as_responder``
        # drops it, or merges it when the incoming commit shows that the
        # peer applied it already).
        self.role = Role.RESPONDER
        return self._resume_as_responder(message.commit)

    def _resume_as_responder(self, commit: bytes) -> list[Action]:
        # On a copy: a failure leaves the state to resume from as it was.
        group = self._connected_group().snapshot()
        epoch, identity = group.epoch, group.peer_identity
        commit_epoch = group.commit_epoch(commit)
        if commit_epoch == epoch - 1 and commit == group.last_commit:
            # The peer's ConnectionUpdate (or ResumptionRequest) that we
            # applied already; its EpochKeyUpdate (our ResumptionResponse)
            # was lost with the connection.  A commit of ours pending on top
            # never reached the peer (it would have come after): dropped.
            group.discard_pending()
        elif commit_epoch == epoch:
            # The usual case; a commit of ours pending in this epoch never
            # reached the peer (its commit is for the same epoch): dropped.
            group.discard_pending()
            self._apply_peer_commit(group, commit, epoch)
        elif commit_epoch == epoch + 1 and group.pending_commit is not None:
            # The peer applied our pending commit (its EpochKeyUpdate was
            # lost) and committed on top: ours first, then the peer's (if
            # the peer's epoch + 1 came from another commit, its membership
            # tag does not verify: illegal_parameter).
            self._apply_peer_commit(group, commit, group.merge_pending())
        else:
            raise RemoteProtocolError(
                f"ResumptionRequest's commit is for epoch {commit_epoch}, our stored state is at epoch {epoch}"
                f"{' with a commit pending' if group.pending_commit is not None else ''}: stale or foreign",
                AlertDescription.unknown_psk_identity,
            )
        if group.peer_identity != identity:
            raise MLSError("the peer's commit changes its credential", AlertDescription.bad_certificate)
        # §6: "create a commit with UpdatePath to send back".  The keys are
        # those of the epoch it creates; until the resumer confirms it (its
        # EpochKeyUpdate), our resumption state is the epoch before it with
        # the commit pending, which either answer to a later resumption fits.
        response = group.create_self_update()
        self._unconfirmed = group.snapshot()
        group.merge_pending()
        self.group = group
        self.role = Role.RESPONDER
        self.state = SessionState.WAIT_RESUMPTION_CONFIRMATION
        # Plaintext like the ServerHello (docs §6); the resumer sent nothing
        # after its request, so our receive key switches at once.
        return [SendMessage(MLSTLSResumptionResponse(response)), *self._install(Direction.send, Direction.receive)]

    def _apply_peer_commit(self, group: TwoPartyGroup, commit: bytes, before: int) -> None:
        epoch = group.process_commit(commit)
        if epoch != before + 1 or group.epoch != epoch:
            raise MLSError(f"the peer's commit moved the group from epoch {before} to {epoch}")

    def _on_resumption_response(self, message: MLSTLSResumptionResponse) -> list[Action]:
        group = self._connected_group().snapshot()  # a failure leaves our state as it was
        identity = group.peer_identity
        # The responder applied our request's commit (or had already), then
        # committed on top: ours first, then its.
        before = group.merge_pending()
        self._apply_peer_commit(group, message.commit, before)
        if group.peer_identity != identity:
            raise MLSError("the peer's commit changes its credential", AlertDescription.bad_certificate)
        self.group = group
        self.state = SessionState.CONNECTED
        self.resumed = True
        # docs §8: confirm the responder's commit with an EpochKeyUpdate, our
        # first protected record; data may follow it at once.
        return [*self._install(Direction.receive, Direction.send), SendMessage(MLSTLSEpochKeyUpdate(group.epoch)),
                Established(group.epoch, resumed=True)]

    def _on_resumption_confirmed(self, message: MLSTLSEpochKeyUpdate) -> list[Action]:
        group = self._connected_group()
        if message.epoch != group.epoch:
            raise RemoteProtocolError(
                f"EpochKeyUpdate names epoch {message.epoch}, our ResumptionResponse moves to {group.epoch}",
                AlertDescription.illegal_parameter,
            )
        self._unconfirmed = None
        self.state = SessionState.CONNECTED
        self.resumed = True
        return [Established(group.epoch, resumed=True)]

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
