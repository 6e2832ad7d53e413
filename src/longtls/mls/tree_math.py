"""Array-based tree math for MLS ratchet trees and secret trees (RFC 9420 §4.1, §7.1, Appendix C).

A tree with ``n_leaves`` leaves is held in an array of ``node_width(n_leaves)``
nodes: leaf ``i`` is node ``2*i`` and the parents sit at the odd indices
between their children.  RFC 9420 §7.7 keeps every ratchet tree full (the
number of leaves is a power of two: the tree doubles when it grows and halves
when the right half is blank), so every function that takes ``n_leaves``
insists on a power of two; a node index is checked against the width.

Node indices and leaf indices are both plain ``int``s; the aliases below say
which one a function expects.  Misuse (a leaf asked for its children, the root
for its parent, an index outside the tree) is a programming error in the
caller and raises ``ValueError``: a peer's message never reaches these
functions unchecked (leaf indices on the wire are checked against the tree by
the code that reads them).
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = [
    "LeafIndex",
    "NodeIndex",
    "common_ancestor",
    "copath",
    "direct_path",
    "is_leaf",
    "leaf_to_node",
    "left",
    "level",
    "log2",
    "node_to_leaf",
    "node_width",
    "parent",
    "right",
    "root",
    "sibling",
]

NodeIndex: TypeAlias = int
LeafIndex: TypeAlias = int


def log2(x: int) -> int:
    """The exponent of the largest power of 2 not above ``x`` (0 for 0), RFC 9420 App. C."""
    if x < 0:
        raise ValueError("log2 of a negative number")
    return max(x.bit_length() - 1, 0)


def level(x: NodeIndex) -> int:
    """The level of node ``x``: 0 for leaves, then one more per step up (App. C).

    The level is the number of trailing one bits of the node index.
    """
    _check_index(x)
    return ((x ^ (x + 1)).bit_length()) - 1


def is_leaf(x: NodeIndex) -> bool:
    """Leaves are the even node indices (App. C)."""
    _check_index(x)
    return x % 2 == 0


def leaf_to_node(leaf: LeafIndex) -> NodeIndex:
    """The node index of leaf ``leaf``: ``2*leaf`` (App. C)."""
    if leaf < 0:
        raise ValueError("negative leaf index")
    return 2 * leaf


def node_to_leaf(x: NodeIndex) -> LeafIndex:
    """The leaf index of a leaf node (``x/2``); a parent node has none."""
    if not is_leaf(x):
        raise ValueError(f"node {x} is a parent node, not a leaf")
    return x // 2


def node_width(n_leaves: int) -> int:
    """The number of nodes of a tree with ``n_leaves`` leaves: ``2*(n-1)+1`` (App. C)."""
    if n_leaves == 0:
        return 0
    _check_leaves(n_leaves)
    return 2 * (n_leaves - 1) + 1


def root(n_leaves: int) -> NodeIndex:
    """The root node of a tree with ``n_leaves`` leaves (App. C)."""
    if n_leaves == 0:
        raise ValueError("an empty tree has no root")
    return (1 << log2(node_width(n_leaves))) - 1


def left(x: NodeIndex) -> NodeIndex:
    """The left child of parent node ``x`` (App. C)."""
    k = level(x)
    if k == 0:
        raise ValueError(f"node {x} is a leaf: it has no children")
    return x ^ (0x01 << (k - 1))


def right(x: NodeIndex) -> NodeIndex:
    """The right child of parent node ``x`` (App. C); in a full tree it always exists."""
    k = level(x)
    if k == 0:
        raise ValueError(f"node {x} is a leaf: it has no children")
    return x ^ (0x03 << (k - 1))


def parent(x: NodeIndex, n_leaves: int) -> NodeIndex:
    """The parent of node ``x`` in a tree with ``n_leaves`` leaves (App. C)."""
    _check_node(x, n_leaves)
    if x == root(n_leaves):
        raise ValueError(f"node {x} is the root: it has no parent")
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: NodeIndex, n_leaves: int) -> NodeIndex:
    """The other child of ``x``'s parent (App. C)."""
    p = parent(x, n_leaves)
    return right(p) if x < p else left(p)


def direct_path(x: NodeIndex, n_leaves: int) -> list[NodeIndex]:
    """The direct path of ``x``: its parent, the parent's parent, ... up to and
    including the root; empty for the root (RFC 9420 §4.1.2, App. C)."""
    _check_node(x, n_leaves)
    r = root(n_leaves)
    path: list[NodeIndex] = []
    while x != r:
        x = parent(x, n_leaves)
        path.append(x)
    return path


def copath(x: NodeIndex, n_leaves: int) -> list[NodeIndex]:
    """The copath of ``x``: the siblings of ``x`` and of every node of its direct
    path except the root, leaf to root (RFC 9420 §4.1.2, App. C)."""
    path = [x, *direct_path(x, n_leaves)][:-1]
    return [sibling(y, n_leaves) for y in path]


def common_ancestor(x: NodeIndex, y: NodeIndex) -> NodeIndex:
    """The lowest node on the direct paths of both ``x`` and ``y`` (a node counts
    as on its own path), App. C ``common_ancestor_direct``.

    The tree size is not needed: in the array layout the ancestor of two nodes
    is fixed by their common high-order bits.
    """
    lx, ly = level(x) + 1, level(y) + 1
    # One is an ancestor of the other (or they are equal).
    if lx <= ly and x >> ly == y >> ly:
        return y
    if ly <= lx and x >> lx == y >> lx:
        return x
    xn, yn, k = x, y, 0
    while xn != yn:
        xn, yn, k = xn >> 1, yn >> 1, k + 1
    return (xn << k) + (1 << (k - 1)) - 1


def _check_index(x: NodeIndex) -> None:
    if x < 0:
        raise ValueError(f"negative node index {x}")


def _check_leaves(n_leaves: int) -> None:
    # RFC 9420 §7.7: a ratchet tree always has a power-of-two number of leaves.
    if n_leaves <= 0 or n_leaves & (n_leaves - 1):
        raise ValueError(f"a tree has a power-of-two number of leaves, not {n_leaves}")


def _check_node(x: NodeIndex, n_leaves: int) -> None:
    _check_index(x)
    if x >= node_width(n_leaves):
        raise ValueError(f"node {x} is outside a tree of {n_leaves} leaves")
