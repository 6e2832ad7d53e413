"""TreeKEM (RFC 9420 §7.4-§7.6): a member's private keys in the ratchet
tree, creating an UpdatePath for a Commit and applying a received one.

The flow follows the order RFC 9420 §12.4.2 / §12.4.3 impose, because the
HPKE context of the path secrets is the *provisional* GroupContext, whose
tree_hash is that of the tree after the UpdatePath is merged:

committer::

    pending = create_update_path(tree, my_leaf, my_leaf_node, sig_priv, group_id)
    context = <provisional GroupContext with pending.tree.tree_hash()>
    path = pending.encrypt(context, exclude=new_members)
    # pending.tree, pending.private_key, pending.commit_secret

receiver::

    new_tree = merge_update_path(tree, sender, path, group_id)
    context = <provisional GroupContext with new_tree.tree_hash()>
    result = decrypt_update_path(new_tree, sender, path, my_private_key, context, exclude=new_members)
    # result.commit_secret, result.private_key

Neither function changes the tree it is given: they return the new one, so
a Commit that fails validation leaves the group's tree as it was.  Secrets
(path secrets, commit secret, private keys) never appear in a repr.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..errors import MLSError
from .crypto import Suite
from .messages import (
    Extension,
    HPKECiphertext,
    LeafNode,
    LeafNodeSource,
    ParentNode,
    UpdatePath,
    UpdatePathNode,
)
from .tree import RatchetTree, sign_leaf_node
from .tree_math import LeafIndex, NodeIndex, common_ancestor, direct_path, leaf_to_node

__all__ = [
    "UPDATE_PATH_NODE_LABEL",
    "PendingUpdatePath",
    "ProcessedUpdatePath",
    "TreeKEMPrivateKey",
    "create_update_path",
    "decrypt_update_path",
    "derive_node_key_pair",
    "merge_update_path",
    "next_path_secret",
]

#: EncryptWithLabel's label for path secrets (RFC 9420 §7.6).
UPDATE_PATH_NODE_LABEL = b"UpdatePathNode"


def next_path_secret(cs: Suite, path_secret: bytes) -> bytes:
    """path_secret[n] = DeriveSecret(path_secret[n-1], "path") (RFC 9420 §7.4);
    after the last node of the path this is the commit_secret (§12.4.2)."""
    return cs.derive_secret(path_secret, b"path")


def derive_node_key_pair(cs: Suite, path_secret: bytes) -> tuple[bytes, bytes]:
    """(node_priv, node_pub) = KEM.DeriveKeyPair(DeriveSecret(path_secret, "node")) (§7.4)."""
    return cs.derive_key_pair(cs.derive_secret(path_secret, b"node"))


@dataclass(frozen=True, slots=True)
class TreeKEMPrivateKey:
    """The private keys one member holds in the ratchet tree: its leaf's
    and those of the parent nodes above it it knows (the tree invariant,
    RFC 9420 §4.2).  ``keys`` maps a node index to (private key, public
    key), both serialised as the suite's KEM does.  Immutable: every change
    returns a new value, so a failed Commit leaves the old one intact."""

    leaf_index: LeafIndex
    keys: Mapping[NodeIndex, tuple[bytes, bytes]] = field(repr=False)

    @classmethod
    def from_leaf(cls, cs: Suite, leaf_index: LeafIndex, encryption_priv: bytes) -> TreeKEMPrivateKey:
        """A member that knows only its leaf's private key (a new member, §12.4.3.1)."""
        return cls(leaf_index, {leaf_to_node(leaf_index): (encryption_priv, cs.hpke_public_key(encryption_priv))})

    def with_node_secret(self, cs: Suite, node: NodeIndex, path_secret: bytes) -> TreeKEMPrivateKey:
        """This state plus the key pair of one node derived from its path secret."""
        return replace(self, keys={**self.keys, node: derive_node_key_pair(cs, path_secret)})

    def with_path_secret(self, cs: Suite, tree: RatchetTree, committer: LeafIndex,
                         path_secret: bytes) -> TreeKEMPrivateKey:
        """A new member's keys from the GroupSecrets' path_secret (RFC 9420
        §12.4.3.1): the path secret is that of the lowest common ancestor of
        our leaf and the committer's, and each non-blank node above it (the
        rest of the committer's filtered direct path: its other nodes were
        blanked by the Commit) gets the next one.  MLSError if a derived
        public key is not the node's."""
        if committer == self.leaf_index:
            raise ValueError("the committer's own leaf")
        ancestor = common_ancestor(leaf_to_node(self.leaf_index), leaf_to_node(committer))
        nodes = [ancestor, *direct_path(ancestor, tree.n_leaves)]
        keys = dict(self.keys)
        secret = path_secret
        first = True
        for x in nodes:
            node = tree.node(x)
            if node is None:
                if first:
                    raise MLSError("the common ancestor with the committer is blank: no path secret for it")
                continue
            if not first:
                secret = next_path_secret(cs, secret)
            first = False
            private, public = derive_node_key_pair(cs, secret)
            if public != node.encryption_key:
                raise MLSError(f"path secret gives a key pair that is not node {x}'s (RFC 9420 §12.4.3.1)")
            keys[x] = (private, public)
        return replace(self, keys=keys)

    def private_key(self, node: NodeIndex) -> bytes | None:
        pair = self.keys.get(node)
        return None if pair is None else pair[0]

    def check_against(self, tree: RatchetTree) -> None:
        """MLSError unless every node we hold a key for is non-blank in the
        tree and holds our public key (the vectors' consistency check)."""
        for x, (_, public) in self.keys.items():
            if x >= len(tree.nodes):
                raise MLSError(f"private key for node {x}, outside the tree")
            node = tree.node(x)
            if node is None or node.encryption_key != public:
                raise MLSError(f"private key for node {x} does not match the tree")

    def pruned(self, tree: RatchetTree) -> TreeKEMPrivateKey:
        """Without the keys of nodes that are now blank or hold another key
        (after an Update, a Remove or a truncation): outdated key pairs are
        deleted (RFC 9420 §7.5)."""
        n = len(tree.nodes)
        keep = {x: pair for x, pair in self.keys.items()
                if x < n and (node := tree.node(x)) is not None and node.encryption_key == pair[1]}
        return replace(self, keys=keep)


# ------------------------------------------------------------ committing


@dataclass(frozen=True, slots=True)
class PendingUpdatePath:
    """The committer's side of an UpdatePath after the tree update and
    before the encryption of the path secrets (which needs the provisional
    GroupContext, hence the tree hash of ``tree``)."""

    sender: LeafIndex
    tree: RatchetTree  # the tree with the path merged
    leaf_node: LeafNode  # the committer's new, signed leaf
    #: (node of the filtered direct path, its child on the copath), leaf to root
    path: tuple[tuple[NodeIndex, NodeIndex], ...]
    path_secrets: tuple[bytes, ...] = field(repr=False)
    commit_secret: bytes = field(repr=False)
    private_key: TreeKEMPrivateKey = field(repr=False)

    def encrypt(self, group_context: bytes, exclude: Iterable[LeafIndex] = ()) -> UpdatePath:
        """The UpdatePath: for each node of the filtered direct path its new
        public key and its path secret encrypted with EncryptWithLabel(.,
        "UpdatePathNode", group_context, path_secret) to each node of the
        resolution of its copath child, without the leaves in ``exclude``
        (members added by this Commit, RFC 9420 §7.5, §7.6)."""
        excluded = list(exclude)
        nodes = []
        for (p, copath_child), secret in zip(self.path, self.path_secrets, strict=True):
            public = self.tree.node(p)
            assert public is not None
            ciphertexts = []
            for target in self.tree.resolution(copath_child, excluded):
                target_node = self.tree.node(target)
                assert target_node is not None
                kem_output, ciphertext = self.tree.cs.encrypt_with_label(
                    target_node.encryption_key, UPDATE_PATH_NODE_LABEL, group_context, secret)
                ciphertexts.append(HPKECiphertext(kem_output, ciphertext))
            nodes.append(UpdatePathNode(public.encryption_key, tuple(ciphertexts)))
        return UpdatePath(self.leaf_node, tuple(nodes))

    def path_secret_for(self, leaf: LeafIndex) -> bytes | None:
        """The path secret a member at ``leaf`` (a new one, for its
        GroupSecrets, §12.4.3.1) needs: that of the lowest node of our
        filtered direct path whose copath child has the leaf below it."""
        x = leaf_to_node(leaf)
        for (_, copath_child), secret in zip(self.path, self.path_secrets, strict=True):
            if self.tree.is_in_subtree(x, copath_child):
                return secret
        return None


def create_update_path(tree: RatchetTree, sender: LeafIndex, leaf_node: LeafNode, signature_private_key: bytes,
                       group_id: bytes, *, leaf_secret: bytes | None = None) -> PendingUpdatePath:
    """Update the committer's direct path (RFC 9420 §7.4, §7.5), on a copy of ``tree``.

    A fresh ``leaf_secret`` (random unless given, for tests) gives the leaf's
    key pair (DeriveKeyPair(DeriveSecret(leaf_secret, "node"))) and
    path_secret[0] = DeriveSecret(leaf_secret, "path"), as in §7.4's
    derivation figure; each further node of the filtered direct path gets the
    next path secret, and the one after the last is the commit_secret
    (§12.4.2).  The direct path is blanked, the filtered direct path set to
    the new public keys, the parent hashes computed root to leaf, and
    ``leaf_node`` (the committer's leaf as it should be: credential,
    capabilities, extensions, signature key) becomes a commit-source leaf
    with the new encryption key and parent hash, signed over LeafNodeTBS
    with the group and leaf.
    """
    cs = tree.cs
    if tree.leaf(sender) is None:
        raise ValueError(f"leaf {sender} is blank: it cannot commit")
    if leaf_secret is None:
        leaf_secret = os.urandom(cs.nh)
    new_tree = tree.copy()
    path = new_tree.filtered_direct_path_with_copath(sender)
    leaf_private, leaf_public = derive_node_key_pair(cs, leaf_secret)
    keys: dict[NodeIndex, tuple[bytes, bytes]] = {leaf_to_node(sender): (leaf_private, leaf_public)}
    secrets = []
    secret = leaf_secret
    new_tree.blank_direct_path(sender)
    for p, _ in path:
        secret = next_path_secret(cs, secret)
        secrets.append(secret)
        keys[p] = derive_node_key_pair(cs, secret)
        new_tree.set_node(p, ParentNode(keys[p][1], b"", ()))
    commit_secret = next_path_secret(cs, secret)
    leaf_parent_hash = new_tree.set_path_parent_hashes(sender)
    new_leaf = replace(leaf_node, encryption_key=leaf_public, leaf_node_source=LeafNodeSource.commit,
                       lifetime=None, parent_hash=leaf_parent_hash, signature=b"")
    new_leaf = sign_leaf_node(cs, new_leaf, signature_private_key, group_id, sender)
    new_tree.set_leaf(sender, new_leaf)
    return PendingUpdatePath(sender, new_tree, new_leaf, tuple(path), tuple(secrets), commit_secret,
                             TreeKEMPrivateKey(sender, keys))


# ------------------------------------------------------------- receiving


def merge_update_path(tree: RatchetTree, sender: LeafIndex, update_path: UpdatePath, group_id: bytes,
                      *, group_extensions: Sequence[Extension] = ()) -> RatchetTree:
    """The tree with a received UpdatePath merged (RFC 9420 §7.5, §12.4.2);
    ``tree`` is the tree after the Commit's proposals and is not changed.

    Checks, each an MLSError: one UpdatePathNode per node of the sender's
    filtered direct path; the new leaf node is valid for a Commit (§7.3:
    source commit, signature over the group and leaf, capabilities, new and
    unique keys); no public key of the path appears in the tree already or
    twice in the path; the leaf's parent_hash is the one the merged path
    gives (§7.9.2).  ``group_extensions`` are the provisional GroupContext's
    extensions (their required_capabilities apply to the leaf).
    """
    cs = tree.cs
    if tree.leaf(sender) is None:
        raise MLSError(f"an UpdatePath from blank leaf {sender}")
    path = tree.filtered_direct_path_with_copath(sender)
    if len(update_path.nodes) != len(path):
        raise MLSError(f"UpdatePath has {len(update_path.nodes)} nodes, the sender's filtered direct path "
                       f"{len(path)} (RFC 9420 §7.6)")
    leaf_node = update_path.leaf_node
    tree.validate_leaf_node(leaf_node, sender, source=LeafNodeSource.commit, group_id=group_id,
                            group_extensions=group_extensions, replaces=sender)
    # "Verify that none of the public keys in the UpdatePath appear in any
    # node of the new ratchet tree" (§12.4.2), nor twice in the path.
    path_keys = [leaf_node.encryption_key, *(n.encryption_key for n in update_path.nodes)]
    tree_keys = {node.encryption_key for node in tree.nodes if node is not None}
    if len(set(path_keys)) != len(path_keys) or tree_keys.intersection(path_keys):
        raise MLSError("an UpdatePath public key is already in the tree (RFC 9420 §12.4.2)")
    for path_node in update_path.nodes:
        try:
            cs.check_hpke_public_key(path_node.encryption_key)
        except MLSError:
            raise MLSError("an UpdatePath node's encryption_key is not a key of the suite's KEM") from None
    new_tree = tree.copy()
    new_tree.blank_direct_path(sender)
    for (p, _), path_node in zip(path, update_path.nodes, strict=True):
        new_tree.set_node(p, ParentNode(path_node.encryption_key, b"", ()))
    if new_tree.set_path_parent_hashes(sender) != leaf_node.parent_hash:
        raise MLSError("the UpdatePath leaf's parent_hash is not that of its path (RFC 9420 §7.9.2)")
    new_tree.set_leaf(sender, leaf_node)
    return new_tree


@dataclass(frozen=True, slots=True)
class ProcessedUpdatePath:
    """What a receiver gets out of an UpdatePath: the path secret it
    decrypted (for the node where its path joins the sender's), the
    commit_secret, and its private keys for the new tree."""

    path_secret: bytes = field(repr=False)
    commit_secret: bytes = field(repr=False)
    private_key: TreeKEMPrivateKey = field(repr=False)


def decrypt_update_path(tree: RatchetTree, sender: LeafIndex, update_path: UpdatePath,
                        private_key: TreeKEMPrivateKey, group_context: bytes,
                        exclude: Iterable[LeafIndex] = ()) -> ProcessedUpdatePath:
    """Decrypt our path secret from a merged UpdatePath (RFC 9420 §7.5,
    "decrypts the path secrets"): find the node of the sender's filtered
    direct path whose copath child has our leaf below it, a node of that
    child's resolution (without the ``exclude``d new members) we hold a
    private key for, DecryptWithLabel the matching ciphertext, derive the
    path secrets and key pairs up to the root, check each public key against
    the UpdatePath, and derive the commit_secret.

    ``tree`` is the tree ``merge_update_path`` returned.  MLSError for a
    path that does not match the tree, MLSDecryptError for a ciphertext that
    does not open.
    """
    cs = tree.cs
    me = private_key.leaf_index
    excluded = list(exclude)
    if me == sender:
        raise ValueError("the committer does not decrypt its own UpdatePath")
    if me in excluded:
        raise ValueError("a member added by this Commit gets its path secret from the Welcome")
    path = tree.filtered_direct_path_with_copath(sender)
    if len(update_path.nodes) != len(path):
        raise MLSError("UpdatePath does not match the sender's filtered direct path (RFC 9420 §7.6)")
    start = None
    for k, ((_, copath_child), path_node) in enumerate(zip(path, update_path.nodes, strict=True)):
        resolution = tree.resolution(copath_child, excluded)
        # "The length of the encrypted_path_secret vector MUST be equal to
        # the length of the resolution of the copath node" (§7.6).
        if len(path_node.encrypted_path_secret) != len(resolution):
            raise MLSError(f"UpdatePath node {k} has {len(path_node.encrypted_path_secret)} ciphertexts for "
                           f"a resolution of {len(resolution)} (RFC 9420 §7.6)")
        if start is None and tree.is_in_subtree(leaf_to_node(me), copath_child):
            start = k
            targets = resolution
    if start is None:
        raise MLSError(f"leaf {me} is under no node of the sender's filtered direct path")
    held = [(i, private_key.keys[target]) for i, target in enumerate(targets) if target in private_key.keys]
    if not held:
        raise MLSError("we hold no private key for the resolution the path secret is encrypted to")
    i, pair = held[0]
    ciphertext = update_path.nodes[start].encrypted_path_secret[i]
    path_secret = cs.decrypt_with_label(pair[0], UPDATE_PATH_NODE_LABEL, group_context,
                                        ciphertext.kem_output, ciphertext.ciphertext)
    # Our old keys on the sender's direct path were replaced or blanked.
    sender_path = set(tree.direct_path(sender))
    keys = {x: p for x, p in private_key.keys.items() if x not in sender_path}
    secret = path_secret
    for k in range(start, len(path)):
        if k > start:
            secret = next_path_secret(cs, secret)
        node_private, node_public = derive_node_key_pair(cs, secret)
        if node_public != update_path.nodes[k].encryption_key:
            raise MLSError(f"path secret gives a key pair that is not UpdatePath node {k}'s (RFC 9420 §7.5)")
        keys[path[k][0]] = (node_private, node_public)
    return ProcessedUpdatePath(path_secret, next_path_secret(cs, secret), replace(private_key, keys=keys))
