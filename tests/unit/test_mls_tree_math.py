"""MLS array-based tree math (RFC 9420 §4.1, Appendix C) against tree-math.json
and the RFC's own worked example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from longtls.mls import tree_math as tm

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls" / "tree-math.json"


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())
    return data


def test_tree_math_vectors() -> None:
    vectors = _vectors()
    # Every entry runs: 1, 2, 4, ... 512 leaves.
    assert [v["n_leaves"] for v in vectors] == [1 << k for k in range(10)]
    for v in vectors:
        n = v["n_leaves"]
        assert tm.node_width(n) == v["n_nodes"]
        assert tm.root(n) == v["root"]
        for i in range(v["n_nodes"]):
            expected_left = v["left"][i]
            if expected_left is None:
                with pytest.raises(ValueError):
                    tm.left(i)
                with pytest.raises(ValueError):
                    tm.right(i)
            else:
                assert tm.left(i) == expected_left
                assert tm.right(i) == v["right"][i]
            if v["parent"][i] is None:
                assert i == v["root"]
                with pytest.raises(ValueError):
                    tm.parent(i, n)
                with pytest.raises(ValueError):
                    tm.sibling(i, n)
            else:
                assert tm.parent(i, n) == v["parent"][i]
                assert tm.sibling(i, n) == v["sibling"][i]


# RFC 9420 §4.1.2, "A Complete Tree with Five Members": leaves A B _ _ E F G _
# at leaf indices 0..7; T=1 U=3 V=5 W=7 X=9 Y=11 Z=13 by the array layout.
A, B, E, F, G = 0, 2, 8, 10, 12
T, U, V, W, X, Y, Z, H = 1, 3, 5, 7, 9, 11, 13, 14


@pytest.mark.parametrize(
    ("node", "path", "cop"),
    [
        (A, [T, U, W], [B, V, Y]),
        (B, [T, U, W], [A, V, Y]),
        (E, [X, Y, W], [F, Z, U]),
        (F, [X, Y, W], [E, Z, U]),
        (G, [Z, Y, W], [H, X, U]),
    ],
)
def test_direct_path_and_copath_rfc_example(node: int, path: list[int], cop: list[int]) -> None:
    assert tm.direct_path(node, 8) == path
    assert tm.copath(node, 8) == cop


def test_root_has_empty_paths() -> None:
    assert tm.direct_path(7, 8) == []
    assert tm.copath(7, 8) == []
    assert tm.direct_path(0, 1) == []
    assert tm.copath(0, 1) == []


def test_levels_and_leaf_indices() -> None:
    # §4.1.1 / App. C: leaves are level 0 at even indices; node 2^k - 1 is at level k.
    for k in range(12):
        assert tm.level((1 << k) - 1) == k
    assert [tm.level(i) for i in range(15)] == [0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0]
    for leaf in range(64):
        assert tm.leaf_to_node(leaf) == 2 * leaf
        assert tm.node_to_leaf(2 * leaf) == leaf
        assert tm.is_leaf(2 * leaf)
        assert not tm.is_leaf(2 * leaf + 1)
    with pytest.raises(ValueError):
        tm.node_to_leaf(3)
    assert [tm.log2(x) for x in (0, 1, 2, 3, 4, 7, 8, 1023, 1024)] == [0, 0, 1, 1, 2, 2, 3, 9, 10]


def test_common_ancestor_is_the_lowest_shared_node() -> None:
    # The semantic definition (App. C common_ancestor_semantic), computed from
    # the paths, against the bit-twiddling one for every pair of a 32-leaf tree.
    n = 32
    width = tm.node_width(n)
    for x in range(width):
        px = {x, *tm.direct_path(x, n)}
        for y in range(width):
            shared = px & {y, *tm.direct_path(y, n)}
            assert tm.common_ancestor(x, y) == min(shared, key=tm.level)
    assert tm.common_ancestor(A, B) == T
    assert tm.common_ancestor(A, G) == W
    assert tm.common_ancestor(E, G) == Y


def test_sizes_that_are_not_a_full_tree_are_refused() -> None:
    # RFC 9420 §7.7 keeps the number of leaves a power of two.
    for n in (3, 5, 6, 7, 12):
        with pytest.raises(ValueError):
            tm.node_width(n)
    with pytest.raises(ValueError):
        tm.root(0)
    assert tm.node_width(0) == 0
    # A node outside the tree.
    with pytest.raises(ValueError):
        tm.parent(7, 4)
    with pytest.raises(ValueError):
        tm.direct_path(-1, 4)
