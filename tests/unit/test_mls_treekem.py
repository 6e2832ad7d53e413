"""longtls.mls.treekem: UpdatePaths (RFC 9420 §7.4-§7.6, §12.4.2, §12.4.3.1).

Known answers: tests/vectors/mls/treekem.json, every vector of the suites
longtls implements (1 and 3; the other five RFC suites asserted
unimplemented): each member's private state checked against the tree, each
UpdatePath merged (parent hashes, tree_hash_after) and decrypted by every
other member (path secret, commit_secret), and a fresh UpdatePath from the
same sender decrypted by all.  The X-Wing suite has no vectors: a group is
grown and committed to in it (and in suite 1) end to end, with the spec's
derivation chain recomputed from DeriveSecret.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from longtls.errors import MLSDecryptError, MLSError
from longtls.mls.crypto import SUITES, CipherSuite, Suite, suite
from longtls.mls.messages import (
    BasicCredential,
    Capabilities,
    GroupContext,
    HPKECiphertext,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    UpdatePath,
)
from longtls.mls.tree import RatchetTree, sign_leaf_node
from longtls.mls.treekem import (
    TreeKEMPrivateKey,
    create_update_path,
    decrypt_update_path,
    merge_update_path,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "mls"
IMPLEMENTED = {int(cs) for cs in SUITES}
XWING = CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


def _treekem() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / "treekem.json").read_text())
    return data


def test_treekem_vectors_cover_exactly_the_unimplemented_suites() -> None:
    suites = [v["cipher_suite"] for v in _treekem()]
    ran = [cs for cs in suites if cs in IMPLEMENTED]
    not_run = [cs for cs in suites if cs not in IMPLEMENTED]
    assert ran == [1] * 11 + [3] * 11
    assert sorted(set(not_run)) == [2, 4, 5, 6, 7] and len(not_run) == 55
    for cs in set(not_run):
        with pytest.raises(MLSError, match="not supported"):
            suite(cs)


def _context(v: dict[str, Any], tree_hash: bytes) -> bytes:
    # test-vectors.md, "TreeKEM": the given fields, the tree hash after the
    # UpdatePath, empty extensions.
    return GroupContext(1, v["cipher_suite"], h(v["group_id"]), v["epoch"], tree_hash,
                        h(v["confirmed_transcript_hash"])).to_bytes()


@pytest.mark.parametrize("v", [v for v in _treekem() if v["cipher_suite"] in IMPLEMENTED],
                         ids=lambda v: f"suite{v['cipher_suite']}-{len(v['leaves_private'])}members")
def test_treekem_vector(v: dict[str, Any]) -> None:
    started = time.perf_counter()
    cs = suite(v["cipher_suite"])
    tree = RatchetTree.from_bytes(cs, h(v["ratchet_tree"]))
    group_id = h(v["group_id"])
    members = {i for i, _ in tree.members()}
    private: dict[int, TreeKEMPrivateKey] = {}
    signature_keys: dict[int, bytes] = {}
    for entry in v["leaves_private"]:
        key = TreeKEMPrivateKey.from_leaf(cs, entry["index"], h(entry["encryption_priv"]))
        for ps in entry["path_secrets"]:
            key = key.with_node_secret(cs, ps["node"], h(ps["path_secret"]))
        key.check_against(tree)  # every private key is the tree's public key's
        private[entry["index"]] = key
        signature_keys[entry["index"]] = h(entry["signature_priv"])
    assert set(private) == members

    for up in v["update_paths"]:
        sender = up["sender"]
        path = UpdatePath.from_bytes(h(up["update_path"]))
        merged = merge_update_path(tree, sender, path, group_id)  # checks the parent hashes
        assert merged.tree_hash() == h(up["tree_hash_after"])
        merged.verify_parent_hashes()
        context = _context(v, merged.tree_hash())
        for j, key in private.items():
            if j == sender:
                assert up["path_secrets"][j] is None
                continue
            result = decrypt_update_path(merged, sender, path, key, context)
            assert result.path_secret == h(up["path_secrets"][j])
            assert result.commit_secret == h(up["commit_secret"])
            result.private_key.check_against(merged)

        # A new UpdatePath from the same sender, processed by everyone.
        sender_leaf = tree.leaf(sender)
        assert sender_leaf is not None
        pending = create_update_path(tree, sender, sender_leaf, signature_keys[sender], group_id)
        new_context = _context(v, pending.tree.tree_hash())
        new_path = pending.encrypt(new_context)
        pending.private_key.check_against(pending.tree)
        pending.tree.verify(group_id, pending.tree.tree_hash())
        received = merge_update_path(tree, sender, new_path, group_id)
        assert received == pending.tree
        for j, key in private.items():
            if j != sender:
                result = decrypt_update_path(received, sender, new_path, key, new_context)
                assert result.commit_secret == pending.commit_secret
                assert result.path_secret == pending.path_secret_for(j)
    # Kept fast: the largest vectors (8 leaves) take well under a second.
    assert time.perf_counter() - started < 5


# ------------------------------------------------ a group built from scratch


class Member:
    def __init__(self, cs: Suite, name: bytes) -> None:
        self.signature_priv, signature_pub = cs.generate_signature_key_pair()
        self.encryption_priv, encryption_pub = cs.generate_key_pair()
        node = LeafNode(encryption_pub, signature_pub, BasicCredential(name),
                        Capabilities(cipher_suites=(cs.cipher_suite,), credentials=(1,)),
                        LeafNodeSource.key_package, Lifetime(0, 2**64 - 1))
        self.leaf_node = sign_leaf_node(cs, node, self.signature_priv)


GROUP_ID = b"treekem test group"


def _context_for(cs: Suite, tree: RatchetTree, epoch: int) -> bytes:
    return GroupContext(1, cs.cipher_suite, GROUP_ID, epoch, tree.tree_hash(), b"\x00" * 32).to_bytes()


@pytest.mark.parametrize("cipher_suite", [1, XWING], ids=["suite1", "xwing"])
def test_commit_adding_members_then_everyone_commits(cipher_suite: int) -> None:
    cs = suite(cipher_suite)
    alice = Member(cs, b"alice")
    tree = RatchetTree.with_leaf(cs, alice.leaf_node)
    keys = {0: TreeKEMPrivateKey.from_leaf(cs, 0, alice.encryption_priv)}
    members = {0: alice}

    # Alice adds four members and commits with a path, which the new members
    # are excluded from; they get their path secret as a Welcome would carry it.
    new = [Member(cs, b"member %d" % i) for i in range(1, 5)]
    added = [tree.add_leaf(m.leaf_node) for m in new]
    assert added == [1, 2, 3, 4] and tree.n_leaves == 8
    pending = create_update_path(tree, 0, alice.leaf_node, alice.signature_priv, GROUP_ID)
    context = _context_for(cs, pending.tree, 1)
    path = pending.encrypt(context, exclude=added)
    # Every copath resolution holds only new members: nothing is encrypted.
    assert all(node.encrypted_path_secret == () for node in path.nodes)
    assert [n.encryption_key for n in path.nodes] == [
        node.encryption_key for x in pending.tree.filtered_direct_path(0)
        if (node := pending.tree.node(x)) is not None]
    # The derivation chain of §7.4 from the first path secret, by the spec's formulas.
    secret = pending.path_secrets[0]
    for later in pending.path_secrets[1:]:
        secret = cs.derive_secret(secret, b"path")
        assert later == secret
    assert pending.commit_secret == cs.derive_secret(secret, b"path")
    tree = pending.tree
    keys[0] = pending.private_key
    for leaf_index, member in zip(added, new, strict=True):
        members[leaf_index] = member
        path_secret = pending.path_secret_for(leaf_index)
        assert path_secret is not None
        key = TreeKEMPrivateKey.from_leaf(cs, leaf_index, member.encryption_priv)
        keys[leaf_index] = key.with_path_secret(cs, tree, 0, path_secret)
        keys[leaf_index].check_against(tree)
    tree.verify(GROUP_ID, tree.tree_hash())

    # Each member in turn commits; every other member decrypts the same commit_secret.
    for epoch, sender in enumerate([3, 1, 4, 2, 0], start=2):
        sender_leaf = tree.leaf(sender)
        assert sender_leaf is not None
        pending = create_update_path(tree, sender, sender_leaf, members[sender].signature_priv, GROUP_ID)
        context = _context_for(cs, pending.tree, epoch)
        path = pending.encrypt(context)
        for j in members:
            if j == sender:
                continue
            merged = merge_update_path(tree, sender, path, GROUP_ID)
            assert merged == pending.tree
            result = decrypt_update_path(merged, sender, path, keys[j], context)
            assert result.commit_secret == pending.commit_secret
            keys[j] = result.private_key
        tree = pending.tree
        keys[sender] = pending.private_key
        for key in keys.values():
            key.check_against(tree)
        tree.verify(GROUP_ID, tree.tree_hash())


# --------------------------------------------------------- malformed paths


@pytest.fixture
def committed() -> tuple[RatchetTree, dict[int, Member], dict[int, TreeKEMPrivateKey], Any]:
    """A four-member suite-1 tree where leaf 0 has just built an UpdatePath."""
    cs = suite(1)
    people = {i: Member(cs, b"m%d" % i) for i in range(4)}
    tree = RatchetTree.with_leaf(cs, people[0].leaf_node)
    for i in range(1, 4):
        tree.add_leaf(people[i].leaf_node)
    keys = {i: TreeKEMPrivateKey.from_leaf(cs, i, m.encryption_priv) for i, m in people.items()}
    pending = create_update_path(tree, 0, people[0].leaf_node, people[0].signature_priv, GROUP_ID)
    return tree, people, keys, pending


def test_tampered_ciphertext_does_not_decrypt(committed: Any) -> None:
    tree, _, keys, pending = committed
    context = _context_for(tree.cs, pending.tree, 1)
    path = pending.encrypt(context)
    node = path.nodes[0]
    ct = node.encrypted_path_secret[0]
    bad_ct = HPKECiphertext(ct.kem_output, bytes([ct.ciphertext[0] ^ 1]) + ct.ciphertext[1:])
    bad = replace(path, nodes=(replace(node, encrypted_path_secret=(bad_ct,)), *path.nodes[1:]))
    merged = merge_update_path(tree, 0, bad, GROUP_ID)
    with pytest.raises(MLSDecryptError):
        decrypt_update_path(merged, 0, bad, keys[1], context)
    with pytest.raises(MLSDecryptError):  # the wrong context
        decrypt_update_path(merged, 0, path, keys[1], context + b"x")


def test_wrong_number_of_nodes_or_ciphertexts(committed: Any) -> None:
    tree, _, keys, pending = committed
    context = _context_for(tree.cs, pending.tree, 1)
    path = pending.encrypt(context)
    with pytest.raises(MLSError, match="filtered direct path"):
        merge_update_path(tree, 0, replace(path, nodes=path.nodes[:1]), GROUP_ID)
    merged = merge_update_path(tree, 0, path, GROUP_ID)
    top = path.nodes[1]
    short = replace(path, nodes=(path.nodes[0], replace(top, encrypted_path_secret=top.encrypted_path_secret[:1])))
    with pytest.raises(MLSError, match="ciphertexts"):
        decrypt_update_path(merged, 0, short, keys[2], context)


def test_leaf_parent_hash_and_signature_are_checked(committed: Any) -> None:
    tree, people, _, pending = committed
    path = pending.encrypt(_context_for(tree.cs, pending.tree, 1))
    # Re-signed with a wrong parent hash: the signature holds, the hash does not.
    wrong = sign_leaf_node(tree.cs, replace(path.leaf_node, parent_hash=bytes(32)), people[0].signature_priv,
                           GROUP_ID, 0)
    with pytest.raises(MLSError, match="parent_hash"):
        merge_update_path(tree, 0, replace(path, leaf_node=wrong), GROUP_ID)
    # Signed for another leaf index.
    other = sign_leaf_node(tree.cs, path.leaf_node, people[0].signature_priv, GROUP_ID, 1)
    with pytest.raises(MLSError, match="signature"):
        merge_update_path(tree, 0, replace(path, leaf_node=other), GROUP_ID)


def test_path_key_already_in_tree_is_rejected(committed: Any) -> None:
    tree, _, _, pending = committed
    path = pending.encrypt(_context_for(tree.cs, pending.tree, 1))
    reused = tree.leaf(3)
    assert reused is not None
    bad = replace(path, nodes=(replace(path.nodes[0], encryption_key=reused.encryption_key), *path.nodes[1:]))
    with pytest.raises(MLSError, match="already in the tree"):
        merge_update_path(tree, 0, bad, GROUP_ID)


def test_public_key_not_matching_path_secret_is_rejected(committed: Any) -> None:
    tree, _, keys, pending = committed
    context = _context_for(tree.cs, pending.tree, 1)
    path = pending.encrypt(context)
    merged = merge_update_path(tree, 0, path, GROUP_ID)
    swapped = replace(path, nodes=(replace(path.nodes[0], encryption_key=tree.cs.generate_key_pair()[1]),
                                   *path.nodes[1:]))
    with pytest.raises(MLSError, match="not UpdatePath node"):
        decrypt_update_path(merged, 0, swapped, keys[1], context)


def test_private_state_maintenance_and_reprs(committed: Any) -> None:
    tree, people, keys, pending = committed
    # No secret in a repr.
    for secret in (*pending.path_secrets, pending.commit_secret, people[1].encryption_priv):
        assert secret.hex() not in repr(pending) and secret.hex() not in repr(keys[1])
        assert repr(secret)[2:-1] not in repr(pending)
    new_tree = pending.tree
    # Leaf 1 joins through the path secret; a wrong one gives keys that are not the tree's.
    path_secret = pending.path_secret_for(1)
    assert path_secret is not None
    joined = keys[1].with_path_secret(tree.cs, new_tree, 0, path_secret)
    assert set(joined.keys) == {2, 1, 3}  # its leaf, then nodes 1 and 3 (the root)
    with pytest.raises(MLSError, match="not node"):
        keys[1].with_path_secret(tree.cs, new_tree, 0, bytes(32))
    # After leaf 0's Update the path above it is blank: those keys are dropped.
    updated = new_tree.copy()
    new_leaf = sign_leaf_node(tree.cs, replace(pending.leaf_node, leaf_node_source=LeafNodeSource.update,
                                               parent_hash=None, encryption_key=tree.cs.generate_key_pair()[1]),
                              people[0].signature_priv, GROUP_ID, 0)
    updated.update_leaf(0, new_leaf)
    assert set(joined.pruned(updated).keys) == {2}
