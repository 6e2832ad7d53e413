"""The MLS ratchet tree (RFC 9420 §4.1, §7): nodes, membership changes,
resolutions, tree hashes, parent hashes, leaf node validation and the
``ratchet_tree`` extension.

``RatchetTree`` is the public state of one epoch's tree: an array of
optional nodes in the array layout of ``tree_math`` (leaf ``i`` at node
``2*i``, parents at odd indices), with a power-of-two number of leaves
(§7.7: the tree is always full).  It is mutable, since every Commit changes
it in several steps (proposals, then the UpdatePath); ``copy()`` gives the
provisional tree a Commit is built or checked on.  The TreeKEM operations on
it (creating and applying UpdatePaths) are in ``treekem.py``.

Errors: anything a peer got wrong (a tree that does not verify, a leaf node
that is not valid, a proposal naming a blank leaf) is an ``MLSError``; a
caller's misuse (a leaf index outside the tree) is a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from ..errors import DecodeError, MLSError
from .codec import Writer, decode
from .crypto import Suite
from .messages import (
    Extension,
    ExtensionType,
    LeafNode,
    LeafNodeSource,
    Node,
    NodeType,
    ParentNode,
    RequiredCapabilities,
    decode_ratchet_tree,
    encode_ratchet_tree,
    find_extension,
)
from .proposals import Add, Remove, Update
from .tree_math import (
    LeafIndex,
    NodeIndex,
    direct_path,
    is_leaf,
    leaf_to_node,
    left,
    level,
    node_to_leaf,
    node_width,
    right,
    root,
    sibling,
)

__all__ = [
    "DEFAULT_EXTENSION_TYPES",
    "DEFAULT_PROPOSAL_TYPES",
    "LEAF_NODE_SIGNATURE_LABEL",
    "RatchetTree",
    "leaf_node_signature_valid",
    "sign_leaf_node",
]

#: SignWithLabel's label for LeafNodeTBS (RFC 9420 §7.2).
LEAF_NODE_SIGNATURE_LABEL = b"LeafNodeTBS"

#: Proposal and extension types every client supports, which capabilities
#: "MUST NOT" list (RFC 9420 §7.2).
DEFAULT_PROPOSAL_TYPES = frozenset(range(1, 8))
DEFAULT_EXTENSION_TYPES = frozenset(range(1, 6))


def sign_leaf_node(cs: Suite, leaf_node: LeafNode, signature_private_key: bytes,
                   group_id: bytes | None = None, leaf_index: LeafIndex | None = None) -> LeafNode:
    """``leaf_node`` with its signature: SignWithLabel(., "LeafNodeTBS",
    LeafNodeTBS) (RFC 9420 §7.2).  group_id and leaf_index are given exactly
    for the update and commit sources."""
    tbs = leaf_node.tbs(group_id, leaf_index)
    return replace(leaf_node, signature=cs.sign_with_label(signature_private_key, LEAF_NODE_SIGNATURE_LABEL, tbs))


def leaf_node_signature_valid(cs: Suite, leaf_node: LeafNode, group_id: bytes | None = None,
                              leaf_index: LeafIndex | None = None) -> bool:
    """Whether the LeafNode's signature verifies under its own signature_key
    (RFC 9420 §7.3).  A key_package leaf is checked without group context,
    an update or commit leaf with the group and the leaf it sits at."""
    if leaf_node.leaf_node_source == LeafNodeSource.key_package:
        tbs = leaf_node.tbs()
    else:
        if group_id is None or leaf_index is None:
            raise ValueError(f"a {leaf_node.leaf_node_source.name} leaf node is verified with group_id and leaf_index")
        tbs = leaf_node.tbs(group_id, leaf_index)
    return cs.verify_with_label(leaf_node.signature_key, LEAF_NODE_SIGNATURE_LABEL, tbs, leaf_node.signature)


class RatchetTree:
    """The public ratchet tree of one epoch (RFC 9420 §7)."""

    __slots__ = ("cs", "_nodes")

    def __init__(self, cs: Suite, nodes: Sequence[Node | None] = ()) -> None:
        """A tree from its nodes in array order; ``nodes`` must already have
        the width of a full tree (``from_nodes`` pads and checks a peer's).
        No nodes: a tree of one blank leaf."""
        self.cs = cs
        self._nodes: list[Node | None] = list(nodes) or [None]
        n_leaves = (len(self._nodes) + 1) // 2
        if node_width(n_leaves) != len(self._nodes):
            raise ValueError(f"{len(self._nodes)} nodes are not a full tree")
        for i, node in enumerate(self._nodes):
            if node is not None and isinstance(node, LeafNode) != is_leaf(i):
                raise ValueError(f"node {i} holds the wrong kind of node")

    @classmethod
    def with_leaf(cls, cs: Suite, leaf_node: LeafNode) -> RatchetTree:
        """A one-member tree: the group creator's (RFC 9420 §11)."""
        return cls(cs, [leaf_node])

    def copy(self) -> RatchetTree:
        """A tree whose changes do not reach this one (nodes are immutable)."""
        return RatchetTree(self.cs, self._nodes)

    def __repr__(self) -> str:
        return f"<RatchetTree {self.n_leaves} leaves, {sum(1 for _ in self.members())} members>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RatchetTree):
            return NotImplemented
        return self.cs is other.cs and self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]  # mutable

    # ------------------------------------------------------------ structure

    @property
    def n_leaves(self) -> int:
        return (len(self._nodes) + 1) // 2

    @property
    def nodes(self) -> tuple[Node | None, ...]:
        """Every node in array order, blanks as None."""
        return tuple(self._nodes)

    def node(self, x: NodeIndex) -> Node | None:
        self._check_node(x)
        return self._nodes[x]

    def leaf(self, leaf: LeafIndex) -> LeafNode | None:
        node = self.node(self._leaf_node_index(leaf))
        assert node is None or isinstance(node, LeafNode)
        return node

    def parent_node(self, x: NodeIndex) -> ParentNode | None:
        node = self.node(x)
        if isinstance(node, LeafNode):
            raise ValueError(f"node {x} is a leaf")
        return node

    def members(self) -> Iterator[tuple[LeafIndex, LeafNode]]:
        """The non-blank leaves, left to right."""
        for i in range(0, len(self._nodes), 2):
            node = self._nodes[i]
            if node is not None:
                assert isinstance(node, LeafNode)
                yield i // 2, node

    def set_node(self, x: NodeIndex, node: Node | None) -> None:
        """Set or blank one node (the kind must fit its position)."""
        self._check_node(x)
        if node is not None and isinstance(node, LeafNode) != is_leaf(x):
            raise ValueError(f"node {x} cannot hold a {type(node).__name__}")
        self._nodes[x] = node

    def set_leaf(self, leaf: LeafIndex, leaf_node: LeafNode | None) -> None:
        self.set_node(self._leaf_node_index(leaf), leaf_node)

    def direct_path(self, leaf: LeafIndex) -> list[NodeIndex]:
        return direct_path(self._leaf_node_index(leaf), self.n_leaves)

    def blank_direct_path(self, leaf: LeafIndex) -> None:
        for x in self.direct_path(leaf):
            self._nodes[x] = None

    def is_in_subtree(self, x: NodeIndex, top: NodeIndex) -> bool:
        """Whether node x is ``top`` or below it.  In the array layout the
        subtree of a node at level k spans the 2^(k+1)-1 indices centred on it."""
        half = (1 << level(top)) - 1
        return top - half <= x <= top + half

    def _leaf_node_index(self, leaf: LeafIndex) -> NodeIndex:
        if not 0 <= leaf < self.n_leaves:
            raise ValueError(f"leaf {leaf} is outside a tree of {self.n_leaves} leaves")
        return leaf_to_node(leaf)

    def _check_node(self, x: NodeIndex) -> None:
        if not 0 <= x < len(self._nodes):
            raise ValueError(f"node {x} is outside a tree of {self.n_leaves} leaves")

    # ---------------------------------------------- resolution and paths (§4.1)

    def resolution(self, x: NodeIndex, exclude: Iterable[LeafIndex] = ()) -> list[NodeIndex]:
        """The resolution of node x (RFC 9420 §4.1.1): a non-blank node and
        its unmerged leaves; a blank leaf nothing; a blank parent the
        resolutions of its children, left then right.

        ``exclude`` drops those leaves from the result: the members an
        UpdatePath must not encrypt to, added by the same Commit (§7.6)."""
        self._check_node(x)
        excluded = {leaf_to_node(leaf) for leaf in exclude}
        return [y for y in self._resolution(x) if y not in excluded]

    def _resolution(self, x: NodeIndex) -> list[NodeIndex]:
        node = self._nodes[x]
        if node is not None:
            if isinstance(node, ParentNode):
                return [x, *(leaf_to_node(leaf) for leaf in node.unmerged_leaves)]
            return [x]
        if is_leaf(x):
            return []
        return self._resolution(left(x)) + self._resolution(right(x))

    def filtered_direct_path(self, leaf: LeafIndex) -> list[NodeIndex]:
        """The direct path of the leaf without the nodes whose child on the
        leaf's copath has an empty resolution (RFC 9420 §4.1.2; unmerged
        leaves count toward the resolution)."""
        return [p for p, _ in self.filtered_direct_path_with_copath(leaf)]

    def filtered_direct_path_with_copath(self, leaf: LeafIndex) -> list[tuple[NodeIndex, NodeIndex]]:
        """(node of the filtered direct path, its child on the leaf's copath)."""
        x = self._leaf_node_index(leaf)
        out = []
        for p in direct_path(x, self.n_leaves):
            copath_child = sibling(x, self.n_leaves)
            if self._resolution(copath_child):
                out.append((p, copath_child))
            x = p
        return out

    # --------------------------------------------- adding and removing (§7.7)

    def extend(self) -> None:
        """Double the number of leaves: a new blank root whose left subtree
        is the old tree and whose right subtree is all blank (§7.7)."""
        self._nodes.extend([None] * (len(self._nodes) + 1))

    def truncate(self) -> None:
        """Halve the tree while the right subtree of the root has no
        non-blank node (§7.7); a tree keeps at least one leaf."""
        while len(self._nodes) > 1:
            r = root(self.n_leaves)
            if any(node is not None for node in self._nodes[r + 1:]):
                return
            del self._nodes[r:]

    def add_leaf(self, leaf_node: LeafNode) -> LeafIndex:
        """Apply an Add (RFC 9420 §12.1.1): the new member takes the leftmost
        blank leaf, or the first leaf of a new right half; it becomes an
        unmerged leaf of every non-blank parent above it."""
        for leaf in range(self.n_leaves):
            if self._nodes[2 * leaf] is None:
                break
        else:
            leaf = self.n_leaves
            self.extend()
        for p in self.direct_path(leaf):
            node = self._nodes[p]
            if node is not None:
                assert isinstance(node, ParentNode)
                # unmerged_leaves "MUST be sorted in increasing order" (§7.1)
                unmerged = tuple(sorted({*node.unmerged_leaves, leaf}))
                self._nodes[p] = replace(node, unmerged_leaves=unmerged)
        self._nodes[2 * leaf] = leaf_node
        return leaf

    def update_leaf(self, leaf: LeafIndex, leaf_node: LeafNode) -> None:
        """Apply an Update (RFC 9420 §12.1.2): replace the sender's leaf and
        blank its direct path."""
        if self.leaf(leaf) is None:
            raise MLSError(f"an Update from blank leaf {leaf}")
        self.set_leaf(leaf, leaf_node)
        self.blank_direct_path(leaf)

    def remove_leaf(self, leaf: LeafIndex) -> None:
        """Apply a Remove (RFC 9420 §12.1.3): blank the leaf and its direct
        path, then truncate.  A Remove of a blank leaf is invalid."""
        if not 0 <= leaf < self.n_leaves or self.leaf(leaf) is None:
            raise MLSError(f"Remove names leaf {leaf}, which is not a member (RFC 9420 §12.1.3)")
        self.set_leaf(leaf, None)
        self.blank_direct_path(leaf)
        self.truncate()

    def apply_proposal(self, proposal: Add | Update | Remove, sender: LeafIndex) -> LeafIndex | None:
        """Apply one membership proposal by member ``sender``; an Add returns
        the new member's leaf index.  Validation of the proposal itself
        (§12.2) is the group's."""
        if isinstance(proposal, Add):
            return self.add_leaf(proposal.key_package.leaf_node)
        if isinstance(proposal, Update):
            self.update_leaf(sender, proposal.leaf_node)
        else:
            self.remove_leaf(proposal.removed)
        return None

    # ------------------------------------------------------ tree hash (§7.8)

    def tree_hash(self) -> bytes:
        """The tree hash of the root: what GroupContext.tree_hash holds."""
        return self.node_tree_hash(root(self.n_leaves))

    def node_tree_hash(self, x: NodeIndex, exclude: frozenset[LeafIndex] = frozenset()) -> bytes:
        """The tree hash of node x: Hash(TreeHashInput) (RFC 9420 §7.8),
        computed over its subtree.  ``exclude`` is for the original sibling
        tree hash (§7.9): those leaves count as blank and are dropped from
        every unmerged_leaves list."""
        self._check_node(x)
        return self._tree_hash(x, exclude, None)

    def tree_hashes(self) -> list[bytes]:
        """The tree hash of every node, in one pass over the tree."""
        hashes: dict[NodeIndex, bytes] = {}
        self._tree_hash(root(self.n_leaves), frozenset(), hashes)
        return [hashes[x] for x in range(len(self._nodes))]

    def _tree_hash(self, x: NodeIndex, exclude: frozenset[LeafIndex], out: dict[NodeIndex, bytes] | None) -> bytes:
        node = self._nodes[x]
        w = Writer()
        if is_leaf(x):
            # struct { uint32 leaf_index; optional<LeafNode> leaf_node; } LeafNodeHashInput
            leaf = node_to_leaf(x)
            w.u8(NodeType.leaf).u32(leaf)
            if node is None or leaf in exclude:
                w.u8(0)
            else:
                node.encode(w.u8(1))
        else:
            # struct { optional<ParentNode> parent_node; opaque left_hash<V>;
            #          opaque right_hash<V>; } ParentNodeHashInput
            left_hash = self._tree_hash(left(x), exclude, out)
            right_hash = self._tree_hash(right(x), exclude, out)
            w.u8(NodeType.parent)
            if node is None:
                w.u8(0)
            else:
                assert isinstance(node, ParentNode)
                if exclude and exclude.intersection(node.unmerged_leaves):
                    node = replace(node, unmerged_leaves=tuple(
                        leaf for leaf in node.unmerged_leaves if leaf not in exclude))
                node.encode(w.u8(1))
            w.opaque(left_hash).opaque(right_hash)
        digest = self.cs.hash(w.bytes())
        if out is not None:
            out[x] = digest
        return digest

    # ---------------------------------------------------- parent hash (§7.9)

    def parent_hash(self, p: NodeIndex, copath_child: NodeIndex) -> bytes:
        """The parent hash of non-blank parent p with copath child S
        (RFC 9420 §7.9): Hash(ParentHashInput{p.encryption_key,
        p.parent_hash, original_sibling_tree_hash}), where the original
        sibling tree hash is S's tree hash with p's unmerged leaves blanked."""
        node = self.parent_node(p)
        if node is None:
            raise ValueError(f"node {p} is blank: it has no parent hash")
        if copath_child not in (left(p), right(p)):
            raise ValueError(f"node {copath_child} is not a child of {p}")
        sibling_hash = self._tree_hash(copath_child, frozenset(node.unmerged_leaves), None)
        return self._parent_hash(node.encryption_key, node.parent_hash, sibling_hash)

    def _parent_hash(self, encryption_key: bytes, parent_hash: bytes, original_sibling_tree_hash: bytes) -> bytes:
        w = Writer().opaque(encryption_key).opaque(parent_hash).opaque(original_sibling_tree_hash)
        return self.cs.hash(w.bytes())

    def set_path_parent_hashes(self, leaf: LeafIndex) -> bytes:
        """Fill in the parent_hash fields along the leaf's filtered direct
        path, from the root down, and return the leaf's own parent hash
        (RFC 9420 §7.9, "Using Parent Hashes": each node's field is the
        parent hash of the next node above it on the filtered direct path;
        the root's is empty).  The path's nodes must be set and have no
        unmerged leaves, as right after an UpdatePath: the original sibling
        tree hash is then the sibling's tree hash."""
        above = b""
        for p, copath_child in reversed(self.filtered_direct_path_with_copath(leaf)):
            node = self.parent_node(p)
            if node is None or node.unmerged_leaves:
                raise ValueError(f"node {p} of the path is not freshly set")
            node = replace(node, parent_hash=above)
            self._nodes[p] = node
            above = self._parent_hash(node.encryption_key, above, self._tree_hash(copath_child, frozenset(), None))
        return above

    def verify_parent_hashes(self) -> None:
        """MLSError unless every non-blank parent node is parent-hash valid
        (RFC 9420 §7.9.2), checked top-down: exactly one descendant D of each
        non-blank parent P has P's parent hash (with copath child S) in its
        parent_hash field, D is in the resolution of the other child C, and
        P's unmerged leaves under C are exactly the resolution of C without D.
        A chain of such links from every parent ends at a leaf, since each
        step goes down."""
        for p in range(1, len(self._nodes), 2):
            node = self._nodes[p]
            if node is None:
                continue
            assert isinstance(node, ParentNode)
            unmerged = {leaf_to_node(leaf) for leaf in node.unmerged_leaves}
            found = 0
            for c, s in ((left(p), right(p)), (right(p), left(p))):
                expected = self.parent_hash(p, s)
                resolution = self._resolution(c)
                unmerged_under_c = {y for y in unmerged if self.is_in_subtree(y, c)}
                for d in resolution:
                    d_node = self._nodes[d]
                    assert d_node is not None
                    if d_node.parent_hash != expected:
                        continue
                    if unmerged_under_c == set(resolution) - {d}:
                        found += 1
            if found != 1:
                raise MLSError(f"parent node {p} is not parent-hash valid (RFC 9420 §7.9.2)")

    # ----------------------------------------- leaf node validation (§7.3)

    def validate_leaf_node(
        self,
        leaf_node: LeafNode,
        leaf: LeafIndex | None,
        *,
        source: LeafNodeSource,
        group_id: bytes | None = None,
        group_extensions: Sequence[Extension] = (),
        now: int | None = None,
        replaces: LeafIndex | None = None,
    ) -> None:
        """Validate a new LeafNode against this tree (RFC 9420 §7.3): MLSError
        unless it is valid.

        ``leaf`` is where the node sits or will sit (None for a key_package
        leaf not yet placed), ``source`` what its context requires
        (key_package in a KeyPackage, update in an Update, commit in an
        UpdatePath).  ``group_extensions`` are the GroupContext's
        (their required_capabilities apply).  ``now`` (seconds since the
        epoch), when given, is checked against a key_package leaf's lifetime
        (MUST for what we send, RECOMMENDED for what we receive: the caller
        decides).  ``replaces`` is the leaf this node replaces (an Update or a
        Commit's own leaf): its keys do not count as another member's, but an
        Update must bring a new encryption key.

        Not here: the credential itself, which the application's
        authentication service judges (§5.3.1), and the maximum total lifetime
        the application sets (§7.2).
        """
        self._check_leaf_node(leaf_node, leaf, source=source, group_id=group_id,
                              group_extensions=group_extensions, now=now, replaces=replaces, fresh=True)

    def _check_leaf_node(
        self, leaf_node: LeafNode, leaf: LeafIndex | None, *, source: LeafNodeSource, group_id: bytes | None,
        group_extensions: Sequence[Extension], now: int | None, replaces: LeafIndex | None, fresh: bool,
    ) -> None:
        # fresh: the node is new (it must not reuse the replaced leaf's
        # encryption key); False for a leaf already in a tree being verified.
        if leaf_node.leaf_node_source != source:
            raise MLSError(f"leaf node source is {leaf_node.leaf_node_source.name}, expected {source.name}")
        context_id = None if source == LeafNodeSource.key_package else group_id
        context_leaf = None if source == LeafNodeSource.key_package else leaf
        if source != LeafNodeSource.key_package and (group_id is None or leaf is None):
            raise ValueError(f"a {source.name} leaf node is validated with group_id and its leaf index")
        if not leaf_node_signature_valid(self.cs, leaf_node, context_id, context_leaf):
            raise MLSError("leaf node signature does not verify (RFC 9420 §7.3)")
        caps = leaf_node.capabilities
        required = find_extension(group_extensions, ExtensionType.required_capabilities)
        if required is not None:
            try:
                req = decode(required.extension_data, RequiredCapabilities.decode)
            except DecodeError:
                raise MLSError("the group's required_capabilities extension is malformed") from None
            if (not set(req.extension_types) - DEFAULT_EXTENSION_TYPES <= set(caps.extensions)
                    or not set(req.proposal_types) - DEFAULT_PROPOSAL_TYPES <= set(caps.proposals)
                    or not set(req.credential_types) <= set(caps.credentials)):
                raise MLSError("leaf node lacks a capability the group requires (RFC 9420 §11.1)")
        # The leaf's own credential type must be in its capabilities (§7.2),
        # supported by every member, and it must support every member's.
        own_type = leaf_node.credential.credential_type
        if own_type not in caps.credentials:
            raise MLSError(f"credential type {own_type} is not in the leaf's capabilities (RFC 9420 §7.2)")
        others = [(i, member) for i, member in self.members() if i != replaces]
        for _, member in others:
            if own_type not in member.capabilities.credentials:
                raise MLSError(f"a member does not support credential type {own_type} (RFC 9420 §7.3)")
            if member.credential.credential_type not in caps.credentials:
                raise MLSError(
                    f"leaf node does not support credential type {member.credential.credential_type} "
                    "used in the group (RFC 9420 §7.3)")
        lifetime = leaf_node.lifetime
        if now is not None and lifetime is not None and not lifetime.not_before <= now <= lifetime.not_after:
            raise MLSError("leaf node lifetime does not include the current time (RFC 9420 §7.3)")
        for ext in leaf_node.extensions:
            if ext.extension_type not in DEFAULT_EXTENSION_TYPES and ext.extension_type not in caps.extensions:
                raise MLSError(f"leaf node extension {ext.extension_type} is not in its capabilities (RFC 9420 §7.3)")
        if fresh and replaces is not None and source == LeafNodeSource.update:
            old = self.leaf(replaces)
            if old is not None and old.encryption_key == leaf_node.encryption_key:
                raise MLSError("an Update must carry a new encryption key (RFC 9420 §7.3)")
        # signature_key and encryption_key unique among the members (§7.3);
        # the encryption key against parent nodes too (§12.4.3.1, §7.6).
        for i, member in others:
            if member.signature_key == leaf_node.signature_key:
                raise MLSError(f"leaf node's signature key is leaf {i}'s (RFC 9420 §7.3)")
            if member.encryption_key == leaf_node.encryption_key:
                raise MLSError(f"leaf node's encryption key is leaf {i}'s (RFC 9420 §7.3)")
        if fresh and replaces is not None and source == LeafNodeSource.commit:
            old = self.leaf(replaces)
            if old is not None and old.encryption_key == leaf_node.encryption_key:
                raise MLSError("a Commit's leaf node must carry a new encryption key (RFC 9420 §12.4.2)")

    # ------------------------------------------ the ratchet_tree extension

    @classmethod
    def from_nodes(cls, cs: Suite, nodes: Sequence[Node | None]) -> RatchetTree:
        """A tree from a peer's node list (RFC 9420 §12.4.3.3): the last node
        must be non-blank; the list is padded with blanks to the width of a
        full tree; leaves must sit at even positions and parents at odd ones.
        Syntax only: ``verify`` checks what the tree says."""
        if not nodes:
            raise MLSError("an empty ratchet tree (RFC 9420 §12.4.3.3)")
        if nodes[-1] is None:
            raise MLSError("a ratchet tree ends with a blank node (RFC 9420 §12.4.3.3)")
        n_leaves = 1
        while node_width(n_leaves) < len(nodes):
            n_leaves *= 2
        padded = [*nodes, *([None] * (node_width(n_leaves) - len(nodes)))]
        for i, node in enumerate(padded):
            if node is not None and isinstance(node, LeafNode) != is_leaf(i):
                kind = "leaf" if is_leaf(i) else "parent"
                raise MLSError(f"ratchet tree node {i} is not a {kind} node (RFC 9420 §12.4.3.3)")
        return cls(cs, padded)

    @classmethod
    def from_bytes(cls, cs: Suite, data: bytes) -> RatchetTree:
        """A tree from an encoded ``optional<Node> ratchet_tree<V>`` (the
        ``ratchet_tree`` extension's data)."""
        return cls.from_nodes(cs, decode(data, decode_ratchet_tree))

    def export_nodes(self) -> tuple[Node | None, ...]:
        """The nodes as the ratchet_tree extension lists them: without the
        trailing blanks ("MUST NOT include blank nodes after the last
        non-blank node", §12.4.3.3)."""
        end = len(self._nodes)
        while end > 0 and self._nodes[end - 1] is None:
            end -= 1
        return tuple(self._nodes[:end])

    def to_bytes(self) -> bytes:
        """The encoded ``optional<Node> ratchet_tree<V>``."""
        w = Writer()
        encode_ratchet_tree(w, self.export_nodes())
        return w.bytes()

    def extension(self) -> Extension:
        """The ``ratchet_tree`` extension for a GroupInfo (§12.4.3.3)."""
        return Extension(ExtensionType.ratchet_tree, self.to_bytes())

    def verify(self, group_id: bytes, tree_hash: bytes, *, group_extensions: Sequence[Extension] = (),
               now: int | None = None) -> None:
        """The integrity checks of a joiner's tree (RFC 9420 §12.4.3.1):
        the tree hash is GroupInfo's, every non-blank parent is parent-hash
        valid, every leaf is a valid LeafNode (§7.3), every unmerged leaf of a
        parent is a member below it and unmerged at every non-blank node in
        between, and no encryption key appears twice in the tree.
        MLSError on the first failure."""
        if self.tree_hash() != tree_hash:
            raise MLSError("the ratchet tree's hash is not the group's tree_hash (RFC 9420 §12.4.3.3)")
        if not any(True for _ in self.members()):
            raise MLSError("the ratchet tree has no members")
        self.verify_parent_hashes()
        for leaf, leaf_node in self.members():
            source = leaf_node.leaf_node_source
            # In a tree a leaf may come from any source: its own says which
            # signature context applies.
            self._check_leaf_node(leaf_node, leaf, source=source, group_id=group_id,
                                  group_extensions=group_extensions, now=now, replaces=leaf, fresh=False)
        seen_keys: set[bytes] = set()
        for x, node in enumerate(self._nodes):
            if node is None:
                continue
            if node.encryption_key in seen_keys:
                raise MLSError(f"encryption key of node {x} appears twice in the tree (RFC 9420 §12.4.3.1)")
            seen_keys.add(node.encryption_key)
            if isinstance(node, ParentNode):
                self._verify_unmerged_leaves(x, node)

    def _verify_unmerged_leaves(self, p: NodeIndex, node: ParentNode) -> None:
        leaves = node.unmerged_leaves
        if list(leaves) != sorted(set(leaves)):
            raise MLSError(f"unmerged_leaves of node {p} are not in increasing order (RFC 9420 §7.1)")
        for leaf in leaves:
            x = 2 * leaf
            if not (0 <= leaf < self.n_leaves and self._nodes[x] is not None and self.is_in_subtree(x, p)):
                raise MLSError(f"unmerged leaf {leaf} of node {p} is not a member below it (RFC 9420 §12.4.3.1)")
            for q in direct_path(x, self.n_leaves):
                if q == p:
                    break
                between = self._nodes[q]
                if between is not None:
                    assert isinstance(between, ParentNode)
                    if leaf not in between.unmerged_leaves:
                        raise MLSError(f"unmerged leaf {leaf} of node {p} is not unmerged at node {q} "
                                       "(RFC 9420 §12.4.3.1)")
