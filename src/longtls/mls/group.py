"""One member's state of an MLS group, epoch by epoch (RFC 9420 §8-§12).

A ``Group`` is a member's view of one epoch: the GroupContext, the public
ratchet tree, its own TreeKEM private keys, the epoch's secrets and secret
tree, and the interim transcript hash.  Operations that change the epoch
never change the Group they are called on; they return the next one, so a
commit can stay pending (the two-party profile's ConnectionUpdate waits for
its EpochKeyUpdate before the sender moves) and a commit that fails any
check leaves the group as it was::

    bundle = create_key_package(suite, credential)                 # initiator
    group = Group.create(suite, credential, signature_key)          # responder (§11)
    out = group.commit(adds=[key_package])                         # Add + UpdatePath, Welcome (§12.4)
    group = out.group; welcome = out.welcome
    joined = Group.join(welcome, bundle)                           # §12.4.3.1
    out = joined.commit()                                          # self-update with path
    processed = group.process_commit(out.message)                  # §12.4.2
    processed.credential_changes                                   # [(leaf, old, new)] for identity policy
    group = processed.group
    group.export(label, context, length)                           # MLS-Exporter (§8.5)

Supported: member senders; Add, Update, Remove, PreSharedKey (external
PSKs) and GroupContextExtensions proposals, by value or by reference;
commits with or without an UpdatePath; PublicMessage and PrivateMessage
framing; Welcome with the ratchet_tree extension or a tree given out of
band.  Not supported (MLSError when met): external senders and external
commits, ReInit, resumption PSKs (docs/mls.md, "Group").
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from ..errors import DecodeError, MLSError
from .codec import Writer
from .crypto import Suite, suite
from .framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    WireFormat,
)
from .key_package import (
    MAX_LIFETIME,
    CredentialCheck,
    KeyPackageBundle,
    create_key_package,
    validate_key_package,
)
from .key_schedule import EpochSecrets, derive_epoch, derive_epoch_from_joiner
from .messages import (
    Capabilities,
    Credential,
    Extension,
    ExtensionType,
    GroupContext,
    GroupInfo,
    GroupSecrets,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    PathSecret,
    PreSharedKeyID,
    ProtocolVersion,
    RequiredCapabilities,
    Welcome,
    find_extension,
    parse_ratchet_tree,
)
from .proposals import (
    Add,
    Commit,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ProposalOrRef,
    ProposalType,
    ReInit,
    Remove,
    Update,
)
from .protect import (
    authenticated_content,
    protect_private,
    protect_public,
    unprotect_private,
    unprotect_public,
)
from .secret_tree import SecretTree
from .transcript import confirmation_tag, confirmed_transcript_hash, interim_transcript_hash
from .tree import DEFAULT_EXTENSION_TYPES, DEFAULT_PROPOSAL_TYPES, RatchetTree
from .treekem import TreeKEMPrivateKey, create_update_path, decrypt_update_path, merge_update_path
from .welcome import (
    PSKLookup,
    encrypt_group_info,
    encrypt_group_secrets,
    external_psk_secret,
    open_welcome,
    sign_group_info,
    verify_group_info,
)

__all__ = [
    "RESUMPTION_PSK_EPOCHS",
    "CommitOutput",
    "CredentialChange",
    "Group",
    "IdentityCheck",
    "ProcessedCommit",
]

#: A member's credential replaced by a Commit: (leaf index, the old
#: credential or None for a new member, the new one).  The channel refuses
#: identity changes from these.
CredentialChange = tuple[int, Credential | None, Credential]

#: Judges a member's new credential against its old one (a Commit's path
#: leaf or an Update): raise MLSError to refuse the Commit.  Without one, a
#: Group refuses every change of an existing member's credential.
IdentityCheck = Callable[[Credential, Credential], None]

#: How many epochs' resumption_psk a member keeps (this one included) for
#: resumption PSKs of usage application (§8.6).  RFC 9420 leaves it to the
#: application; our choice.
RESUMPTION_PSK_EPOCHS = 8

# §12.4: the proposal types that require an UpdatePath.
_PATH_REQUIRED = frozenset({ProposalType.update, ProposalType.remove, ProposalType.external_init,
                            ProposalType.group_context_extensions})


@dataclass(frozen=True, slots=True)
class CommitOutput:
    """A Commit we created: ``message`` to send (protected with the keys of
    the epoch it was created in), the ``welcome`` for members it adds, and
    the ``group`` of the new epoch, to adopt once the Commit is confirmed."""

    message: MLSMessage
    welcome: Welcome | None
    group: Group


@dataclass(frozen=True, slots=True)
class ProcessedCommit:
    """A received Commit that passed every check: the ``group`` of the new
    epoch, who committed, and the credentials it replaced or added."""

    group: Group
    committer: int
    credential_changes: tuple[CredentialChange, ...]


@dataclass(frozen=True, slots=True)
class _Applied:
    """The result of applying a proposal list (§12.3) to a copy of the tree."""

    tree: RatchetTree
    extensions: tuple[Extension, ...]
    added: tuple[tuple[int, KeyPackage], ...]  # (new leaf, its KeyPackage), in order
    psks: tuple[PreSharedKeyID, ...]
    path_required: bool


class Group:
    """A member's state of one epoch of a group (see the module docstring)."""

    __slots__ = (
        "cs", "context", "tree", "own_leaf", "interim_transcript_hash", "confirmation_tag",
        "_signature_private_key", "_tree_keys", "_epoch", "_secret_tree", "_proposals",
        "_psks", "_credential_check", "_identity_check", "_resumption_psks",
    )

    def __init__(
        self,
        *,
        cs: Suite,
        context: GroupContext,
        tree: RatchetTree,
        own_leaf: int,
        signature_private_key: bytes,
        tree_keys: TreeKEMPrivateKey,
        epoch: EpochSecrets,
        interim_transcript_hash: bytes,
        confirmation_tag: bytes,
        psks: PSKLookup | None = None,
        credential_check: CredentialCheck | None = None,
        identity_check: IdentityCheck | None = None,
        resumption_psks: Mapping[int, bytes] | None = None,
    ) -> None:
        self.cs = cs
        self.context = context
        self.tree = tree
        self.own_leaf = own_leaf
        self.interim_transcript_hash = interim_transcript_hash
        self.confirmation_tag = confirmation_tag
        self._signature_private_key = signature_private_key
        self._tree_keys = tree_keys
        self._epoch = epoch
        self._secret_tree = SecretTree(cs, epoch.encryption_secret, tree.n_leaves)
        # Proposals received this epoch, by ProposalRef: (proposal, sender leaf).
        self._proposals: dict[bytes, tuple[Proposal, int]] = {}
        self._psks = psks
        self._credential_check = credential_check
        self._identity_check = identity_check
        # resumption_psk of this and the last RESUMPTION_PSK_EPOCHS - 1
        # epochs, by epoch (§8.6: a later Commit may inject one).
        history = {**(resumption_psks or {}), context.epoch: epoch.resumption_psk}
        self._resumption_psks = {e: history[e] for e in sorted(history)[-RESUMPTION_PSK_EPOCHS:]}

    def __repr__(self) -> str:
        return (f"<Group epoch={self.context.epoch} leaf={self.own_leaf} "
                f"members={sum(1 for _ in self.tree.members())} suite=0x{self.cs.cipher_suite:04x}>")

    # ------------------------------------------------------------ accessors

    @property
    def group_id(self) -> bytes:
        return self.context.group_id

    @property
    def epoch(self) -> int:
        return self.context.epoch

    @property
    def epoch_authenticator(self) -> bytes:
        """The epoch authenticator (§8.7): equal for every member of the epoch."""
        return self._epoch.epoch_authenticator

    @property
    def own_leaf_node(self) -> LeafNode:
        node = self.tree.leaf(self.own_leaf)
        assert node is not None
        return node

    def member(self, leaf: int) -> LeafNode | None:
        """The LeafNode at a leaf index, None for a blank or absent leaf."""
        if not 0 <= leaf < self.tree.n_leaves:
            return None
        return self.tree.leaf(leaf)

    def export(self, label: bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(label, context, length) of this epoch (§8.5)."""
        return self._epoch.export(label, context, length)

    def _resumption_psk(self, group_id: bytes, epoch: int) -> bytes | None:
        return self._resumption_psks.get(epoch) if group_id == self.group_id else None

    def _signature_key(self, leaf: int) -> bytes | None:
        node = self.member(leaf)
        return None if node is None else node.signature_key

    # -------------------------------------------------------------- creation

    @classmethod
    def create(
        cls,
        cipher_suite: int,
        credential: Credential,
        signature_private_key: bytes,
        *,
        group_id: bytes | None = None,
        extensions: tuple[Extension, ...] = (),
        capabilities: Capabilities | None = None,
        psks: PSKLookup | None = None,
        credential_check: CredentialCheck | None = None,
        identity_check: IdentityCheck | None = None,
    ) -> Group:
        """A one-member group (§11): our leaf (a key_package leaf, as a
        KeyPackage of ours would carry), epoch 0, an empty confirmed
        transcript hash, a random first init secret (the all-zero commit
        secret), and the interim transcript hash from the confirmation tag
        over the empty confirmed hash.  group_id: KDF.Nh random bytes unless
        given ("a freshly generated random value of size KDF.Nh", §11)."""
        cs = suite(cipher_suite)
        bundle = create_key_package(cipher_suite, credential, signature_private_key, capabilities=capabilities)
        _check_extensions_supported(extensions, bundle.key_package.leaf_node)
        tree = RatchetTree.with_leaf(cs, bundle.key_package.leaf_node)
        gid = os.urandom(cs.nh) if group_id is None else group_id
        context = GroupContext(ProtocolVersion.mls10, cipher_suite, gid, 0, tree.tree_hash(), b"", extensions)
        epoch = derive_epoch(cs, os.urandom(cs.nh), bytes(cs.nh), context.to_bytes())
        tag = confirmation_tag(cs, epoch.confirmation_key, b"")
        return cls(cs=cs, context=context, tree=tree, own_leaf=0, signature_private_key=signature_private_key,
                   tree_keys=TreeKEMPrivateKey.from_leaf(cs, 0, bundle.encryption_private_key),
                   epoch=epoch, interim_transcript_hash=interim_transcript_hash(cs, b"", tag),
                   confirmation_tag=tag, psks=psks, credential_check=credential_check,
                   identity_check=identity_check)

    @classmethod
    def create_and_add(
        cls,
        key_package: KeyPackage,
        credential: Credential,
        signature_private_key: bytes,
        *,
        allowed_suites: Sequence[int] | None = None,
        credential_check: CredentialCheck | None = None,
        identity_check: IdentityCheck | None = None,
        group_id: bytes | None = None,
        capabilities: Capabilities | None = None,
        max_lifetime: int | None = MAX_LIFETIME,
    ) -> CommitOutput:
        """The responder's side of the two-party profile's initial key
        agreement: validate the initiator's KeyPackage (§10.1, with
        ``credential_check``: "The responder MUST interface with the AS"),
        create a group in its cipher suite (which must be in
        ``allowed_suites``, if given), and commit an Add of it with an
        UpdatePath.  The output's ``welcome`` goes in the ServerHello; its
        ``group`` is the responder's state (the Welcome is the confirmation:
        there is nothing to wait for).  The other arguments as for ``create``.

        No downgrade check beyond ``allowed_suites`` (§11 asks the creator
        to pick the best suite all members support): the suite is the
        initiator's own, signed choice, which an attacker cannot change.
        """
        if allowed_suites is not None and key_package.cipher_suite not in allowed_suites:
            raise MLSError(f"KeyPackage cipher suite 0x{key_package.cipher_suite:04x} is not allowed")
        # The KeyPackage is validated (§10.1) by the commit, like any Add.
        group = cls.create(key_package.cipher_suite, credential, signature_private_key, group_id=group_id,
                           capabilities=capabilities, credential_check=credential_check,
                           identity_check=identity_check)
        return group.commit(adds=[key_package], max_lifetime=max_lifetime)

    # ------------------------------------------------------------- joining

    @classmethod
    def join(
        cls,
        welcome: Welcome,
        bundle: KeyPackageBundle,
        *,
        ratchet_tree: bytes | None = None,
        psks: PSKLookup | None = None,
        credential_check: CredentialCheck | None = None,
        identity_check: IdentityCheck | None = None,
        now: int | None = None,
        known_group_ids: Collection[bytes] = (),
    ) -> Group:
        """Join from a Welcome with one of our KeyPackages (§12.4.3.1), doing
        every check the section lists: our entry and the suites, the PSKs,
        the GroupInfo (decryption, the signer's signature with its key from
        the tree), the tree (from the ratchet_tree extension, or
        ``ratchet_tree``: the encoded ``optional<Node> ratchet_tree<V>``;
        tree hash, parent hashes, every leaf, unmerged leaves, unique keys),
        our leaf (identical to our KeyPackage's), the path secret's keys,
        support of the GroupContext extensions, the confirmation tag.
        ``credential_check`` sees every member's credential (§5.3.1).
        ``now``, when given, is checked against the leaves' lifetimes (only
        RECOMMENDED for received leaves, §7.3).  ``known_group_ids``: the
        groups we are in, which the new one's group_id must not be (§12.4.3.1:
        "Verify that the group_id is unique")."""
        opened = open_welcome(welcome, bundle, psks)
        info = opened.group_info
        secrets = opened.group_secrets
        ctx = info.group_context
        cs = suite(ctx.cipher_suite)
        if ctx.group_id in known_group_ids:
            raise MLSError("the Welcome's group_id is one of a group we are in (RFC 9420 §12.4.3.1)")
        if ctx.version != ProtocolVersion.mls10:
            raise MLSError(f"GroupContext version {ctx.version} is not mls10")
        tree_ext = find_extension(info.extensions, ExtensionType.ratchet_tree)
        if tree_ext is not None:
            tree_data = tree_ext.extension_data
        elif ratchet_tree is not None:
            tree_data = ratchet_tree
        else:
            raise MLSError("no ratchet tree: neither in the GroupInfo nor given (RFC 9420 §12.4.3)")
        try:
            tree = RatchetTree.from_nodes(cs, parse_ratchet_tree(tree_data))
        except DecodeError as exc:
            raise MLSError(f"malformed ratchet tree: {exc}") from None
        signer = tree.leaf(info.signer) if info.signer < tree.n_leaves else None
        if signer is None:
            raise MLSError("GroupInfo signer is a blank leaf (RFC 9420 §12.4.3.1)")
        verify_group_info(cs, signer.signature_key, info)
        tree.verify(ctx.group_id, ctx.tree_hash, group_extensions=ctx.extensions, now=now)
        own_leaf = next((i for i, node in tree.members() if node == bundle.key_package.leaf_node), None)
        if own_leaf is None:
            raise MLSError("our KeyPackage's leaf is not in the tree (RFC 9420 §12.4.3.1)")
        if credential_check is not None:
            for _, node in tree.members():
                credential_check(node.credential, node.signature_key)
        _check_extensions_supported(ctx.extensions, tree.leaf(own_leaf))
        keys = TreeKEMPrivateKey.from_leaf(cs, own_leaf, bundle.encryption_private_key)
        if secrets.path_secret is not None:
            if info.signer == own_leaf:
                raise MLSError("GroupInfo signer is our own leaf")
            keys = keys.with_path_secret(cs, tree, info.signer, secrets.path_secret.path_secret)
        epoch = derive_epoch_from_joiner(cs, secrets.joiner_secret, ctx.to_bytes(), opened.psk_secret)
        if not cs.verify_mac(epoch.confirmation_key, ctx.confirmed_transcript_hash, info.confirmation_tag):
            raise MLSError("GroupInfo confirmation_tag does not verify (RFC 9420 §12.4.3.1)")
        return cls(cs=cs, context=ctx, tree=tree, own_leaf=own_leaf,
                   signature_private_key=bundle.signature_private_key, tree_keys=keys, epoch=epoch,
                   interim_transcript_hash=interim_transcript_hash(cs, ctx.confirmed_transcript_hash,
                                                                   info.confirmation_tag),
                   confirmation_tag=info.confirmation_tag, psks=psks, credential_check=credential_check,
                   identity_check=identity_check)

    # ------------------------------------------------------ application data

    def encrypt_application(self, data: bytes, *, authenticated_data: bytes = b"",
                            padding: int = 0) -> MLSMessage:
        """Application data as a PrivateMessage (§6.3, "Applications MUST use
        PrivateMessage", §6)."""
        framed = FramedContent(self.group_id, self.epoch, Sender.member(self.own_leaf), authenticated_data, data)
        content = authenticated_content(self.cs, self._signature_private_key, WireFormat.mls_private_message,
                                        framed, self.context)
        return MLSMessage(protect_private(self.cs, content, self._epoch.sender_data_secret, self._secret_tree,
                                          padding=padding))

    def decrypt_application(self, message: MLSMessage) -> tuple[int, bytes]:
        """(sender leaf, application data) of a received PrivateMessage."""
        content = self._unprotect(message)
        data = content.content.content
        if not isinstance(data, bytes):
            raise MLSError("expected application data")
        assert content.content.sender.leaf_index is not None
        return content.content.sender.leaf_index, data

    def _unprotect(self, message: MLSMessage) -> AuthenticatedContent:
        body = message.body
        if isinstance(body, PublicMessage):
            return unprotect_public(self.cs, body, self.context, self._epoch.membership_key,
                                    self._signature_key)
        if isinstance(body, PrivateMessage):
            return unprotect_private(self.cs, body, self.context, self._epoch.sender_data_secret,
                                     self._secret_tree, self._signature_key)
        raise MLSError(f"a {message.wire_format.name} is not a framed message")

    # ------------------------------------------------------------ proposals

    def process_proposal(self, message: MLSMessage) -> bytes:
        """Keep a received proposal for a later Commit by reference; returns
        its ProposalRef (§5.2: RefHash of the AuthenticatedContent)."""
        content = self._unprotect(message)
        proposal = content.content.content
        if isinstance(proposal, bytes | Commit):
            raise MLSError("expected a proposal")
        sender = content.content.sender.leaf_index
        assert sender is not None
        ref = self.cs.make_proposal_ref(content.to_bytes())
        self._proposals[ref] = (proposal, sender)
        return ref

    def _resolve(self, proposals: Sequence[ProposalOrRef], committer: int) -> list[tuple[Proposal, int]]:
        out = []
        for item in proposals:
            if isinstance(item, bytes):
                found = self._proposals.get(item)
                if found is None:
                    raise MLSError("a Commit refers to a proposal we do not have (RFC 9420 §12.4)")
                out.append(found)
            else:
                out.append((item, committer))
        return out

    def _apply_proposals(self, proposals: list[tuple[Proposal, int]], committer: int, *,
                         sending: bool, max_lifetime: int | None = MAX_LIFETIME) -> _Applied:
        """Validate the proposal list (§12.2, each proposal as §12.1 says)
        and apply it to a copy of the tree in §12.3's order."""
        by_type: dict[type, list[tuple[Proposal, int]]] = {}
        for proposal, sender in proposals:
            if isinstance(proposal, ReInit | ExternalInit):
                raise MLSError(f"{type(proposal).__name__} proposals are not supported (RFC 9420 §12.2)")
            by_type.setdefault(type(proposal), []).append((proposal, sender))
        updates = by_type.get(Update, [])
        removes = by_type.get(Remove, [])
        adds = by_type.get(Add, [])
        psk_proposals = by_type.get(PreSharedKey, [])
        gces = by_type.get(GroupContextExtensions, [])

        touched: set[int] = set()
        for _, sender in updates:
            if sender == committer:
                raise MLSError("a Commit includes an Update of the committer (RFC 9420 §12.2)")
            if sender in touched:
                raise MLSError("two Update/Remove proposals for one leaf (RFC 9420 §12.2)")
            touched.add(sender)
        for proposal, _ in removes:
            assert isinstance(proposal, Remove)
            if proposal.removed == committer:
                raise MLSError("a Commit removes the committer (RFC 9420 §12.2)")
            if proposal.removed in touched:
                raise MLSError("two Update/Remove proposals for one leaf (RFC 9420 §12.2)")
            touched.add(proposal.removed)
        if len(gces) > 1:
            raise MLSError("more than one GroupContextExtensions proposal (RFC 9420 §12.2)")
        psk_ids = [p.psk.to_bytes() for p, _ in psk_proposals if isinstance(p, PreSharedKey)]
        if len(set(psk_ids)) != len(psk_ids):
            raise MLSError("two PreSharedKey proposals for one PSK (RFC 9420 §12.2)")

        tree = self.tree.copy()
        extensions = self.context.extensions
        if gces:
            gce = gces[0][0]
            assert isinstance(gce, GroupContextExtensions)
            extensions = gce.extensions
            # §12.1.7: every member must support the new extensions and meet
            # any required_capabilities (for the members the Commit keeps).
            removed = {p.removed for p, _ in removes if isinstance(p, Remove)}
            for leaf, node in tree.members():
                if leaf not in removed:
                    _check_extensions_supported(extensions, node)
        for proposal, sender in updates:
            assert isinstance(proposal, Update)
            tree.validate_leaf_node(proposal.leaf_node, sender, source=LeafNodeSource.update,
                                    group_id=self.group_id, group_extensions=extensions, replaces=sender)
            self._check_credential(proposal.leaf_node)
            tree.update_leaf(sender, proposal.leaf_node)
        for proposal, _ in removes:
            assert isinstance(proposal, Remove)
            tree.remove_leaf(proposal.removed)
        added: list[tuple[int, KeyPackage]] = []
        signature_keys = {node.signature_key for _, node in tree.members()}
        for proposal, _ in adds:
            assert isinstance(proposal, Add)
            kp = proposal.key_package
            # §12.1.1: a valid KeyPackage (§10.1), whose client is not in the
            # group already (identical signature keys: the same client).
            validate_key_package(kp, cipher_suite=self.cs.cipher_suite, credential_check=self._credential_check,
                                 check_time=sending, max_lifetime=max_lifetime if sending else None)
            if kp.leaf_node.signature_key in signature_keys:
                raise MLSError("an Add of a client already in the group (RFC 9420 §12.2)")
            tree.validate_leaf_node(kp.leaf_node, None, source=LeafNodeSource.key_package,
                                    group_extensions=extensions)
            _check_extensions_supported(extensions, kp.leaf_node)
            signature_keys.add(kp.leaf_node.signature_key)
            added.append((tree.add_leaf(kp.leaf_node), kp))
        psks = tuple(p.psk for p, _ in psk_proposals if isinstance(p, PreSharedKey))
        path_required = not proposals or any(p.proposal_type in _PATH_REQUIRED for p, _ in proposals)
        return _Applied(tree, extensions, tuple(added), psks, path_required)

    def _check_credential(self, node: LeafNode) -> None:
        if self._credential_check is not None:
            self._credential_check(node.credential, node.signature_key)

    # ---------------------------------------------------------- committing

    def commit(
        self,
        proposals: Sequence[Proposal] = (),
        *,
        adds: Sequence[KeyPackage] = (),
        path: bool = True,
        wire_format: WireFormat = WireFormat.mls_public_message,
        authenticated_data: bytes = b"",
        credential: Credential | None = None,
        ratchet_tree_extension: bool = True,
        leaf_secret: bytes | None = None,
        max_lifetime: int | None = MAX_LIFETIME,
    ) -> CommitOutput:
        """Create a Commit (§12.4.1) with ``proposals`` and an Add for each of
        ``adds``, all by value, and (``path``, the default) an UpdatePath with
        a fresh leaf: no proposals at all is the self-update of the two-party
        profile.  ``credential`` replaces our leaf's credential in the path
        (the peer's identity policy judges it).  The message is protected
        with this epoch's keys; the Welcome (if anyone is added) carries a
        GroupInfo signed by us with the ratchet_tree extension unless
        ``ratchet_tree_extension`` is False.  KeyPackages we add must be
        within their lifetime now, and it may not exceed ``max_lifetime``
        seconds (§7.2, §7.3).  This Group is not changed."""
        cs = self.cs
        all_proposals: list[Proposal] = [*proposals, *(Add(kp) for kp in adds)]
        applied = self._apply_proposals([(p, self.own_leaf) for p in all_proposals], self.own_leaf, sending=True,
                                        max_lifetime=max_lifetime)
        if applied.path_required and not path:
            raise ValueError("these proposals require an UpdatePath (RFC 9420 §12.4)")
        new_epoch_number = self.epoch + 1
        exclude = [leaf for leaf, _ in applied.added]
        update_path = None
        path_secrets: dict[int, bytes] = {}
        if path:
            template = self.own_leaf_node
            if credential is not None:
                template = LeafNode(template.encryption_key, template.signature_key, credential,
                                    template.capabilities, template.leaf_node_source, template.lifetime,
                                    template.parent_hash, template.extensions, template.signature)
            pending = create_update_path(applied.tree, self.own_leaf, template, self._signature_private_key,
                                         self.group_id, leaf_secret=leaf_secret)
            tree = pending.tree
            provisional = GroupContext(self.context.version, self.context.cipher_suite, self.group_id,
                                       new_epoch_number, tree.tree_hash(), self.context.confirmed_transcript_hash,
                                       applied.extensions)
            update_path = pending.encrypt(provisional.to_bytes(), exclude)
            commit_secret = pending.commit_secret
            keys = pending.private_key
            for leaf in exclude:
                secret = pending.path_secret_for(leaf)
                if secret is not None:
                    path_secrets[leaf] = secret
        else:
            tree = applied.tree
            commit_secret = bytes(cs.nh)
            keys = self._tree_keys.pruned(tree)
        commit = Commit(tuple(all_proposals), update_path)
        framed = FramedContent(self.group_id, self.epoch, Sender.member(self.own_leaf), authenticated_data, commit)
        content = authenticated_content(cs, self._signature_private_key, wire_format, framed, self.context)
        nxt, tag = self._next_epoch(content, tree, applied, commit_secret, keys)
        content = AuthenticatedContent(wire_format, framed, FramedContentAuthData(content.auth.signature, tag))
        if wire_format == WireFormat.mls_public_message:
            message = MLSMessage(protect_public(cs, content, self.context, self._epoch.membership_key))
        else:
            message = MLSMessage(protect_private(cs, content, self._epoch.sender_data_secret, self._secret_tree))
        welcome = None
        if applied.added:
            welcome = nxt._welcome(applied, path_secrets, ratchet_tree_extension)
        return CommitOutput(message, welcome, nxt)

    def _next_epoch(self, content: AuthenticatedContent, tree: RatchetTree, applied: _Applied,
                    commit_secret: bytes, keys: TreeKEMPrivateKey) -> tuple[Group, bytes]:
        """The Group of the epoch a Commit starts (§12.4.1, §12.4.2): the
        confirmed transcript hash over the signed Commit, the new
        GroupContext, the key schedule, and the confirmation tag (returned,
        for the sender to set and the receiver to compare)."""
        cs = self.cs
        signature_input = (Writer().u16(content.wire_format).bytes() + content.content.to_bytes()
                           + Writer().opaque(content.auth.signature).bytes())
        confirmed = confirmed_transcript_hash(cs, self.interim_transcript_hash, signature_input)
        context = GroupContext(self.context.version, self.context.cipher_suite, self.group_id, self.epoch + 1,
                               tree.tree_hash(), confirmed, applied.extensions)
        psk = external_psk_secret(cs, applied.psks, self._psks, self._resumption_psk)
        epoch = derive_epoch(cs, self._epoch.init_secret, commit_secret, context.to_bytes(), psk)
        tag = confirmation_tag(cs, epoch.confirmation_key, confirmed)
        nxt = Group(cs=cs, context=context, tree=tree, own_leaf=self.own_leaf,
                    signature_private_key=self._signature_private_key, tree_keys=keys.pruned(tree), epoch=epoch,
                    interim_transcript_hash=interim_transcript_hash(cs, confirmed, tag), confirmation_tag=tag,
                    psks=self._psks, credential_check=self._credential_check,
                    identity_check=self._identity_check, resumption_psks=self._resumption_psks)
        return nxt, tag

    def _welcome(self, applied: _Applied, path_secrets: Mapping[int, bytes], with_tree: bool) -> Welcome:
        """The Welcome for the members a Commit added (§12.4.3.1), built on
        the new epoch (self)."""
        cs = self.cs
        extensions = (self.tree.extension(),) if with_tree else ()
        info = sign_group_info(cs, self._signature_private_key,
                               GroupInfo(self.context, extensions, self.confirmation_tag, self.own_leaf))
        encrypted_info = encrypt_group_info(cs, self._epoch.welcome_secret, info)
        secrets = []
        for leaf, kp in applied.added:
            secret = path_secrets.get(leaf)
            group_secrets = GroupSecrets(self._epoch.joiner_secret,
                                         None if secret is None else PathSecret(secret), applied.psks)
            secrets.append(encrypt_group_secrets(cs, kp, encrypted_info, group_secrets))
        return Welcome(cs.cipher_suite, tuple(secrets), encrypted_info)

    def group_info(self, *, with_tree: bool = True) -> GroupInfo:
        """A signed GroupInfo of this epoch (§12.4.3)."""
        extensions = (self.tree.extension(),) if with_tree else ()
        return sign_group_info(self.cs, self._signature_private_key,
                               GroupInfo(self.context, extensions, self.confirmation_tag, self.own_leaf))

    # ----------------------------------------------------- processing commits

    def process_commit(self, message: MLSMessage) -> ProcessedCommit:
        """Check and apply a Commit from another member (§12.4.2): epoch and
        group, the membership tag or the decryption, the signature, the
        proposal list (§12.2) and each proposal (§12.1), the PSKs, the path
        (required or not, its leaf node, its keys, parent hashes, our path
        secret), the transcript hashes, the key schedule and the
        confirmation tag.  Returns the next epoch's Group and the
        credentials that changed; MLSError (or DecodeError) and this Group
        unchanged otherwise."""
        content = self._unprotect(message)
        framed = content.content
        commit = framed.content
        if not isinstance(commit, Commit):
            raise MLSError("expected a Commit")
        committer = framed.sender.leaf_index
        assert committer is not None  # _unprotect accepts member senders only
        if committer == self.own_leaf:
            raise MLSError("a Commit of our own leaf: ours are applied from CommitOutput.group")
        proposals = self._resolve(commit.proposals, committer)
        applied = self._apply_proposals(proposals, committer, sending=False)
        if applied.path_required and commit.path is None:
            raise MLSError("the Commit needs an UpdatePath and has none (RFC 9420 §12.4)")
        if self.own_leaf >= applied.tree.n_leaves or applied.tree.leaf(self.own_leaf) is None:
            raise MLSError("the Commit removes us from the group")
        exclude = [leaf for leaf, _ in applied.added]
        if commit.path is not None:
            tree = merge_update_path(applied.tree, committer, commit.path, self.group_id,
                                     group_extensions=applied.extensions)
            self._check_credential(commit.path.leaf_node)
            provisional = GroupContext(self.context.version, self.context.cipher_suite, self.group_id,
                                       self.epoch + 1, tree.tree_hash(), self.context.confirmed_transcript_hash,
                                       applied.extensions)
            result = decrypt_update_path(tree, committer, commit.path, self._tree_keys.pruned(applied.tree),
                                         provisional.to_bytes(), exclude)
            commit_secret, keys = result.commit_secret, result.private_key
        else:
            tree = applied.tree
            commit_secret, keys = bytes(self.cs.nh), self._tree_keys.pruned(tree)
        nxt, tag = self._next_epoch(content, tree, applied, commit_secret, keys)
        received = content.auth.confirmation_tag
        if received is None or not hmac.compare_digest(tag, received):
            raise MLSError("Commit confirmation_tag does not verify (RFC 9420 §12.4.2)")
        changes: list[CredentialChange] = []
        added = {leaf for leaf, _ in applied.added}
        for leaf, node in tree.members():
            old = self.tree.leaf(leaf) if leaf < self.tree.n_leaves and leaf not in added else None
            if old is None:
                changes.append((leaf, None, node.credential))
            elif old.credential != node.credential:
                # A member's identity may change only as the application
                # allows (§5.3.3, "Uniquely Identifying Clients"; the
                # two-party profile's peer may not change identity at all).
                if self._identity_check is None:
                    raise MLSError(f"the Commit changes the credential of leaf {leaf}")
                self._identity_check(old.credential, node.credential)
                changes.append((leaf, old.credential, node.credential))
        return ProcessedCommit(nxt, committer, tuple(changes))


def _check_extensions_supported(extensions: Sequence[Extension], node: LeafNode | None) -> None:
    """A member must support every non-default GroupContext extension
    (§12.1.7, §12.4.3.1: "MUST be supported by the new joiner") and meet
    the group's required_capabilities (§11.1)."""
    if node is None:
        return
    caps = node.capabilities
    for ext in extensions:
        if ext.extension_type not in DEFAULT_EXTENSION_TYPES and ext.extension_type not in caps.extensions:
            raise MLSError(f"a member does not support GroupContext extension {ext.extension_type} "
                           "(RFC 9420 §12.1.7)")
    required = find_extension(extensions, ExtensionType.required_capabilities)
    if required is not None:
        try:
            req = RequiredCapabilities.from_bytes(required.extension_data)
        except DecodeError:
            raise MLSError("malformed required_capabilities extension") from None
        if (not set(req.extension_types) - DEFAULT_EXTENSION_TYPES <= set(caps.extensions)
                or not set(req.proposal_types) - DEFAULT_PROPOSAL_TYPES <= set(caps.proposals)
                or not set(req.credential_types) <= set(caps.credentials)):
            raise MLSError("a member lacks a capability the group requires (RFC 9420 §11.1)")

