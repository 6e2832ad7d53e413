"""longtls.mls.tree: the ratchet tree (RFC 9420 §4.1, §7.1-§7.9, §12.1, §12.4.3.3).

Known answers come from the official MLS vectors (tests/vectors/mls:
tree-operations.json whole, the trees of treekem.json for parent-hash
validity and signatures) and the RFC's own examples (§4.1.1 resolution,
§4.1.2 filtered direct paths, §7.7 extend/truncate); hashes of small trees
are recomputed here with hashlib from the TreeHashInput / ParentHashInput
layouts, not with the module under test.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from longtls.errors import MLSError
from longtls.mls.codec import decode
from longtls.mls.crypto import SUITES, suite
from longtls.mls.messages import (
    BasicCredential,
    Capabilities,
    Extension,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    ParentNode,
    RequiredCapabilities,
    X509Credential,
)
from longtls.mls.proposals import Add, Remove, Update, decode_proposal
from longtls.mls.tree import RatchetTree, leaf_node_signature_valid, sign_leaf_node

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "mls"
IMPLEMENTED = {int(cs) for cs in SUITES}
CS = suite(1)


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


def _vectors(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())
    return data


def _varint(n: int) -> bytes:
    # RFC 9420 §2.1.2, written out so the hashes below do not lean on the codec
    return bytes([n]) if n < 64 else (0x4000 | n).to_bytes(2, "big")


def _opaque(data: bytes) -> bytes:
    return _varint(len(data)) + data


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(i: int, *, credentials: tuple[int, ...] = (1,)) -> LeafNode:
    """A structurally complete leaf (unsigned: for shape tests only)."""
    return LeafNode(bytes([i]) * 32, bytes([0x80 | i]) * 32, BasicCredential(b"member %d" % i),
                    Capabilities(cipher_suites=(1,), credentials=credentials), LeafNodeSource.update)


def parent(i: int, unmerged: tuple[int, ...] = ()) -> ParentNode:
    return ParentNode(bytes([0x40 | i]) * 32, b"", unmerged)


# --------------------------------------------------- tree-operations.json


def test_tree_operations_vectors_cover_the_implemented_suites() -> None:
    suites = [v["cipher_suite"] for v in _vectors("tree-operations.json")]
    assert [cs for cs in suites if cs in IMPLEMENTED] == [1, 1, 1, 1, 1]  # all 5 run
    assert [cs for cs in suites if cs not in IMPLEMENTED] == []


@pytest.mark.parametrize("vector", _vectors("tree-operations.json"),
                         ids=lambda v: f"suite{v['cipher_suite']}-{v['proposal'][:8]}")
def test_tree_operations(vector: dict[str, Any]) -> None:
    cs = suite(vector["cipher_suite"])
    tree = RatchetTree.from_bytes(cs, h(vector["tree_before"]))
    assert tree.to_bytes() == h(vector["tree_before"])  # import/export round trip
    assert tree.tree_hash() == h(vector["tree_hash_before"])
    proposal = decode(h(vector["proposal"]), decode_proposal)
    assert isinstance(proposal, Add | Update | Remove)
    before = tree.copy()
    tree.apply_proposal(proposal, vector["proposal_sender"])
    assert tree.to_bytes() == h(vector["tree_after"])
    assert tree.tree_hash() == h(vector["tree_hash_after"])
    assert before.to_bytes() == h(vector["tree_before"])  # copy() is independent


def test_tree_operations_cover_add_update_remove() -> None:
    kinds = {type(decode(h(v["proposal"]), decode_proposal)) for v in _vectors("tree-operations.json")}
    assert kinds == {Add, Update, Remove}


# ------------------------------------------------------------- tree hash


def test_tree_hash_of_one_leaf() -> None:
    # TreeHashInput{node_type = leaf(1), LeafNodeHashInput{uint32 leaf_index,
    # optional<LeafNode>}} (§7.8)
    node = leaf(0)
    tree = RatchetTree.with_leaf(CS, node)
    assert tree.tree_hash() == _sha256(b"\x01" + (0).to_bytes(4, "big") + b"\x01" + node.to_bytes())


def test_tree_hash_of_two_leaves_with_blank_parent_and_blank_leaf() -> None:
    a = leaf(0)
    tree = RatchetTree(CS, [a, None, None])
    left_hash = _sha256(b"\x01" + (0).to_bytes(4, "big") + b"\x01" + a.to_bytes())
    right_hash = _sha256(b"\x01" + (1).to_bytes(4, "big") + b"\x00")
    # ParentNodeHashInput{optional<ParentNode> (absent), left_hash<V>, right_hash<V>}
    root_hash = _sha256(b"\x02" + b"\x00" + _opaque(left_hash) + _opaque(right_hash))
    assert tree.tree_hash() == root_hash
    assert tree.tree_hashes() == [left_hash, root_hash, right_hash]
    p = parent(1)
    tree.set_node(1, p)
    assert tree.tree_hash() == _sha256(b"\x02\x01" + p.to_bytes() + _opaque(left_hash) + _opaque(right_hash))


def test_tree_hashes_match_per_node_hashes() -> None:
    v = _vectors("treekem.json")[6]
    tree = RatchetTree.from_bytes(suite(v["cipher_suite"]), h(v["ratchet_tree"]))
    assert tree.tree_hashes() == [tree.node_tree_hash(x) for x in range(len(tree.nodes))]


# -------------------------------------------- resolution and paths (§4.1)


def _rfc_resolution_tree() -> RatchetTree:
    # RFC 9420 §4.1.1's example: X (node 3) with unmerged leaf B, Y (node 9),
    # everything else in the left half and node 11, 13 blank; leaves A B _ D E F _ H.
    nodes: list[Any] = [None] * 15
    for i in (0, 1, 3, 4, 5, 7):
        nodes[2 * i] = leaf(i)
    nodes[3] = parent(3, (1,))
    nodes[9] = parent(9)
    return RatchetTree(CS, nodes)


def test_resolution_rfc_example() -> None:
    tree = _rfc_resolution_tree()
    assert tree.resolution(3) == [3, 2]  # [X, B]
    assert tree.resolution(4) == [] and tree.resolution(12) == []  # leaves 2 and 6
    assert tree.resolution(7) == [3, 2, 9, 14]  # [X, B, Y, H]
    assert tree.resolution(7, exclude=[1, 7]) == [3, 9]


def test_filtered_direct_path_rfc_example() -> None:
    # RFC 9420 §4.1.2: leaves A B _ _ E F G _, T = 1, U = 3 (blank), V = 5
    # (blank), W = 7, X = 9, Y = 11, Z = 13 (blank).
    nodes: list[Any] = [None] * 15
    for i in (0, 1, 4, 5, 6):
        nodes[2 * i] = leaf(i)
    for x in (1, 7, 9, 11):
        nodes[x] = parent(x)
    tree = RatchetTree(CS, nodes)
    assert tree.direct_path(0) == [1, 3, 7]
    assert tree.filtered_direct_path(0) == [1, 7]  # A: T, W
    assert tree.filtered_direct_path(1) == [1, 7]  # B: T, W
    assert tree.filtered_direct_path(4) == [9, 11, 7]  # E: X, Y, W
    assert tree.filtered_direct_path(5) == [9, 11, 7]  # F: X, Y, W
    assert tree.filtered_direct_path(6) == [11, 7]  # G: Y, W


# ---------------------------------------------- add and remove (§7.7, §12.1)


def test_add_takes_leftmost_blank_leaf_then_extends() -> None:
    tree = RatchetTree.with_leaf(CS, leaf(0))
    assert tree.add_leaf(leaf(1)) == 1 and tree.n_leaves == 2
    assert tree.add_leaf(leaf(2)) == 2 and tree.n_leaves == 4  # doubled
    assert tree.nodes[5:] == (None, None)
    tree.remove_leaf(1)
    assert tree.n_leaves == 4  # leaf 2 keeps the right half
    assert tree.add_leaf(leaf(3)) == 1  # the hole is filled first


def test_add_marks_leaf_unmerged_at_non_blank_parents() -> None:
    nodes: list[Any] = [leaf(0), parent(1), leaf(1), parent(3, (2,)), leaf(2), None, None]
    tree = RatchetTree(CS, nodes)
    new = leaf(3)
    assert tree.add_leaf(new) == 3
    assert tree.node(6) == new
    assert tree.parent_node(3) == parent(3, (2, 3))  # sorted, appended
    assert tree.parent_node(5) is None  # blank parents stay blank
    assert tree.parent_node(1) == parent(1)  # not on the new leaf's path


def test_remove_blanks_path_and_truncates() -> None:
    nodes: list[Any] = [None] * 15
    for i in range(5):
        nodes[2 * i] = leaf(i)
    nodes[7] = parent(7)
    nodes[9] = parent(9)
    tree = RatchetTree(CS, nodes)
    tree.remove_leaf(4)
    # The right half is empty: the tree halves (and the root goes, §7.7).
    assert tree.n_leaves == 4 and len(tree.nodes) == 7
    assert tree.export_nodes() == tuple(nodes[:7])
    tree.remove_leaf(1)
    assert tree.n_leaves == 4  # leaves 2 and 3 remain on the right
    tree.remove_leaf(3)
    tree.remove_leaf(2)
    assert tree.n_leaves == 1 and list(tree.nodes) == [nodes[0]]


def test_remove_of_blank_or_absent_leaf_is_an_error() -> None:
    tree = RatchetTree(CS, [leaf(0), None, None])
    with pytest.raises(MLSError):
        tree.remove_leaf(1)
    with pytest.raises(MLSError):
        tree.remove_leaf(5)


def test_update_replaces_leaf_and_blanks_path() -> None:
    tree = RatchetTree(CS, [leaf(0), parent(1), leaf(1)])
    tree.update_leaf(0, leaf(9))
    assert tree.nodes == (leaf(9), None, leaf(1))


# --------------------------------------- ratchet_tree extension (§12.4.3.3)


def test_import_pads_to_a_full_tree_and_export_strips_trailing_blanks() -> None:
    tree = RatchetTree.from_nodes(CS, [leaf(0), parent(1), leaf(1), None, leaf(2)])
    assert tree.n_leaves == 4 and tree.nodes[5:] == (None, None)
    assert tree.export_nodes() == (leaf(0), parent(1), leaf(1), None, leaf(2))
    assert RatchetTree.from_bytes(CS, tree.to_bytes()) == tree
    ext = tree.extension()
    assert ext.extension_type == 2 and ext.extension_data == tree.to_bytes()


@pytest.mark.parametrize("nodes", [
    [],  # empty
    [leaf(0), None, None],  # ends with a blank ("MUST check that the last node ... is non-blank")
    [leaf(0), leaf(1), leaf(2)],  # a leaf at a parent position
    [parent(0)],  # a parent at a leaf position
])
def test_import_rejects_malformed_trees(nodes: list[Any]) -> None:
    with pytest.raises(MLSError):
        RatchetTree.from_nodes(CS, nodes)


# ------------------------------------------------- parent hashes (§7.9)


def _treekem_trees() -> list[tuple[RatchetTree, bytes]]:
    return [(RatchetTree.from_bytes(suite(v["cipher_suite"]), h(v["ratchet_tree"])), h(v["group_id"]))
            for v in _vectors("treekem.json") if v["cipher_suite"] in IMPLEMENTED]


def test_vector_trees_verify() -> None:
    trees = _treekem_trees()
    assert len(trees) == 22  # suites 1 and 3, 11 trees each
    for tree, group_id in trees:
        tree.verify(group_id, tree.tree_hash())


def test_commit_leaf_parent_hash_by_formula() -> None:
    # A commit leaf's parent_hash is Hash(ParentHashInput{encryption_key,
    # parent_hash, original_sibling_tree_hash}) of the first node of its
    # filtered direct path (§7.9), when that node has no unmerged leaves.
    checked = 0
    for tree, _ in _treekem_trees():
        for i, node in tree.members():
            fdp = tree.filtered_direct_path_with_copath(i)
            if node.leaf_node_source != LeafNodeSource.commit or not fdp:
                continue
            p, s = fdp[0]
            p_node = tree.parent_node(p)
            if p_node is None or p_node.unmerged_leaves:
                continue
            expected = _sha256(_opaque(p_node.encryption_key) + _opaque(p_node.parent_hash)
                               + _opaque(tree.node_tree_hash(s)))
            if node.parent_hash == expected:
                checked += 1
    assert checked > 20


def test_tampered_parent_node_is_not_parent_hash_valid() -> None:
    tree, _ = _treekem_trees()[6]
    root = 7
    node = tree.parent_node(root)
    assert node is not None
    tree.set_node(root, replace(node, encryption_key=bytes(32)))
    with pytest.raises(MLSError, match="parent-hash valid"):
        tree.verify_parent_hashes()


def test_verify_rejects_wrong_tree_hash_and_group() -> None:
    tree, group_id = _treekem_trees()[6]
    with pytest.raises(MLSError, match="tree_hash"):
        tree.verify(group_id, bytes(32))
    with pytest.raises(MLSError, match="signature"):
        tree.verify(group_id + b"x", tree.tree_hash())


def _tree_with_unmerged_leaves() -> tuple[RatchetTree, bytes, int, ParentNode]:
    for tree, group_id in _treekem_trees():
        for x, node in enumerate(tree.nodes):
            if isinstance(node, ParentNode) and node.unmerged_leaves:
                return tree, group_id, x, node
    raise AssertionError("no vector tree has unmerged leaves")


def test_verify_rejects_bad_unmerged_leaves() -> None:
    tree, group_id, x, node = _tree_with_unmerged_leaves()
    tree.verify(group_id, tree.tree_hash())
    unsorted = tree.copy()
    unsorted.set_node(x, replace(node, unmerged_leaves=node.unmerged_leaves + node.unmerged_leaves[:1]))
    with pytest.raises(MLSError):
        unsorted.verify(group_id, unsorted.tree_hash())
    # A leaf outside the parent's subtree (§12.4.3.1: "a descendant of the parent node").
    outside = tree.copy()
    outside.set_node(x, replace(node, unmerged_leaves=(*node.unmerged_leaves, tree.n_leaves - 1)))
    with pytest.raises(MLSError):
        outside.verify(group_id, outside.tree_hash())


def test_verify_rejects_duplicate_encryption_key() -> None:
    tree, group_id = _treekem_trees()[0]  # two members
    a, b = tree.leaf(0), tree.leaf(1)
    assert a is not None and b is not None
    tree.set_leaf(1, replace(b, encryption_key=a.encryption_key))
    with pytest.raises(MLSError):
        tree.verify(group_id, tree.tree_hash())


# -------------------------------------------- leaf node validation (§7.3)

GROUP = b"group"


def signed_member(i: int, source: LeafNodeSource = LeafNodeSource.key_package, *,
                  credentials: tuple[int, ...] = (1,), extensions: tuple[Extension, ...] = (),
                  cap_extensions: tuple[int, ...] = (),
                  lifetime: Lifetime | None = None) -> tuple[LeafNode, bytes]:
    lifetime = lifetime or Lifetime(0, 2**63)
    sig_priv, sig_pub = CS.generate_signature_key_pair()
    _, enc_pub = CS.generate_key_pair()
    node = LeafNode(enc_pub, sig_pub, BasicCredential(b"member %d" % i),
                    Capabilities(cipher_suites=(1,), credentials=credentials, extensions=cap_extensions),
                    source, lifetime if source == LeafNodeSource.key_package else None,
                    b"" if source == LeafNodeSource.commit else None, extensions)
    if source == LeafNodeSource.key_package:
        return sign_leaf_node(CS, node, sig_priv), sig_priv
    return sign_leaf_node(CS, node, sig_priv, GROUP, i), sig_priv


def test_signature_of_leaf_node_binds_group_and_leaf() -> None:
    node, _ = signed_member(1, LeafNodeSource.update)
    assert leaf_node_signature_valid(CS, node, GROUP, 1)
    assert not leaf_node_signature_valid(CS, node, GROUP, 2)
    assert not leaf_node_signature_valid(CS, node, b"other", 1)
    kp_node, _ = signed_member(1)
    assert leaf_node_signature_valid(CS, kp_node)


def test_validate_key_package_leaf() -> None:
    a, _ = signed_member(0)
    tree = RatchetTree.with_leaf(CS, a)
    b, _ = signed_member(1)
    tree.validate_leaf_node(b, None, source=LeafNodeSource.key_package, now=1_700_000_000)
    with pytest.raises(MLSError, match="source"):
        tree.validate_leaf_node(b, 1, source=LeafNodeSource.update, group_id=GROUP)
    with pytest.raises(MLSError, match="signature"):
        tree.validate_leaf_node(replace(b, signature=bytes(64)), None, source=LeafNodeSource.key_package)
    expired, _ = signed_member(2, lifetime=Lifetime(0, 10))
    with pytest.raises(MLSError, match="lifetime"):
        tree.validate_leaf_node(expired, None, source=LeafNodeSource.key_package, now=1_700_000_000)
    tree.validate_leaf_node(expired, None, source=LeafNodeSource.key_package)  # no clock: not checked


def test_validate_credential_types_both_ways() -> None:
    a, _ = signed_member(0)
    tree = RatchetTree.with_leaf(CS, a)
    x509_only, _ = signed_member(1, credentials=(2,))  # its basic credential is not in its own list
    with pytest.raises(MLSError, match="credential type"):
        tree.validate_leaf_node(x509_only, None, source=LeafNodeSource.key_package)
    both, both_priv = signed_member(1, credentials=(1, 2))
    tree.validate_leaf_node(both, None, source=LeafNodeSource.key_package)
    # Member 0 supports only basic: a leaf with an x509 credential is refused
    # although it supports both types itself.
    x509_leaf = sign_leaf_node(CS, replace(both, credential=X509Credential.from_der([b"cert"])), both_priv)
    with pytest.raises(MLSError, match="a member does not support credential type 2"):
        tree.validate_leaf_node(x509_leaf, None, source=LeafNodeSource.key_package)
    # And once a member uses x509, a newcomer that supports only basic is refused.
    tree.add_leaf(x509_leaf)
    basic_only, _ = signed_member(2)
    with pytest.raises(MLSError, match="does not support credential type 2"):
        tree.validate_leaf_node(basic_only, None, source=LeafNodeSource.key_package)


def test_validate_extensions_and_required_capabilities() -> None:
    a, _ = signed_member(0)
    tree = RatchetTree.with_leaf(CS, a)
    unlisted, _ = signed_member(1, extensions=(Extension(0xF0F0, b""),))
    with pytest.raises(MLSError, match="extension"):
        tree.validate_leaf_node(unlisted, None, source=LeafNodeSource.key_package)
    listed, _ = signed_member(1, extensions=(Extension(0xF0F0, b""),), cap_extensions=(0xF0F0,))
    tree.validate_leaf_node(listed, None, source=LeafNodeSource.key_package)
    required = (RequiredCapabilities(extension_types=(0xF0F1,)).extension(),)
    with pytest.raises(MLSError, match="requires"):
        tree.validate_leaf_node(listed, None, source=LeafNodeSource.key_package, group_extensions=required)
    default_only = (RequiredCapabilities(extension_types=(2,)).extension(),)  # default types need no listing
    tree.validate_leaf_node(listed, None, source=LeafNodeSource.key_package, group_extensions=default_only)


def test_validate_unique_keys_and_fresh_update_key() -> None:
    a, a_priv = signed_member(0)
    tree = RatchetTree.with_leaf(CS, a)
    b, b_priv = signed_member(1)
    tree.add_leaf(b)
    c, _ = signed_member(2)
    with pytest.raises(MLSError, match="signature key"):
        tree.validate_leaf_node(sign_leaf_node(CS, replace(c, signature_key=a.signature_key), a_priv), None,
                                source=LeafNodeSource.key_package)
    same_enc = sign_leaf_node(CS, replace(c, encryption_key=b.encryption_key), b_priv)
    with pytest.raises(MLSError):
        tree.validate_leaf_node(same_enc, None, source=LeafNodeSource.key_package)
    # An Update by leaf 1: its own old signature key may stay, its encryption key must change.
    update = LeafNode(b.encryption_key, b.signature_key, b.credential, b.capabilities, LeafNodeSource.update)
    with pytest.raises(MLSError, match="new encryption key"):
        tree.validate_leaf_node(sign_leaf_node(CS, update, b_priv, GROUP, 1), 1, source=LeafNodeSource.update,
                                group_id=GROUP, replaces=1)
    fresh = sign_leaf_node(CS, replace(update, encryption_key=CS.generate_key_pair()[1]), b_priv, GROUP, 1)
    tree.validate_leaf_node(fresh, 1, source=LeafNodeSource.update, group_id=GROUP, replaces=1)


def test_add_proposal_from_key_package() -> None:
    a, _ = signed_member(0)
    tree = RatchetTree.with_leaf(CS, a)
    b, _ = signed_member(1)
    kp = KeyPackage(1, 1, CS.generate_key_pair()[1], b)
    assert tree.apply_proposal(Add(kp), 0) == 1
    assert tree.leaf(1) == b
