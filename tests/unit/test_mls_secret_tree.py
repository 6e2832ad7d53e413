"""The MLS secret tree, its ratchets and the sender data key (RFC 9420 §9,
§6.3.2) against secret-tree.json, and the deletion rules of §9.2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from longtls.errors import LocalProtocolError, MLSDecryptError
from longtls.mls.codec import decode
from longtls.mls.crypto import CipherSuite, Suite, suite
from longtls.mls.framing import (
    ContentType,
    MLSMessage,
    PrivateContentAAD,
    PrivateMessage,
    PrivateMessageContent,
    SenderData,
    SenderDataAAD,
)
from longtls.mls.proposals import Commit, decode_proposal
from longtls.mls.secret_tree import (
    GenerationError,
    HashRatchet,
    RatchetType,
    SecretTree,
    sender_data_key_nonce,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls" / "secret-tree.json"
IMPLEMENTED = {int(c) for c in CipherSuite}

HS, APP = RatchetType.HANDSHAKE, RatchetType.APPLICATION


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())
    return data


def test_vector_suites_are_the_implemented_ones_and_the_rest() -> None:
    vectors = _vectors()
    run = [v for v in vectors if v["cipher_suite"] in IMPLEMENTED]
    rest = [v for v in vectors if v["cipher_suite"] not in IMPLEMENTED]
    # Three trees (1, 8 and 32 leaves) per suite; suites 1 and 3 run, the
    # five suites longtls does not implement (2, 4, 5, 6, 7) do not.
    assert len(vectors) == 21
    assert sorted({v["cipher_suite"] for v in run}) == [1, 3] and len(run) == 6
    assert sorted({v["cipher_suite"] for v in rest}) == [2, 4, 5, 6, 7] and len(rest) == 15


@pytest.mark.parametrize("cipher_suite", [1, 3])
def test_secret_tree_vectors(cipher_suite: int) -> None:
    cs = suite(cipher_suite)
    vectors = [v for v in _vectors() if v["cipher_suite"] == cipher_suite]
    assert sorted(len(v["leaves"]) for v in vectors) == [1, 8, 32]
    checked = 0
    for v in vectors:
        sd = v["sender_data"]
        key, nonce = sender_data_key_nonce(
            cs, bytes.fromhex(sd["sender_data_secret"]), bytes.fromhex(sd["ciphertext"])
        )
        assert (key.hex(), nonce.hex()) == (sd["key"], sd["nonce"])

        tree = SecretTree(cs, bytes.fromhex(v["encryption_secret"]), len(v["leaves"]))
        for leaf, entries in enumerate(v["leaves"]):
            for entry in entries:
                g = entry["generation"]
                hs = tree.ratchet(leaf, HS).get(g)
                app = tree.ratchet(leaf, APP).get(g)
                assert hs.generation == app.generation == g
                assert hs.key.hex() == entry["handshake_key"]
                assert hs.nonce.hex() == entry["handshake_nonce"]
                assert app.key.hex() == entry["application_key"]
                assert app.nonce.hex() == entry["application_nonce"]
                checked += 1
    assert checked == 2 * (1 + 8 + 32)  # generations 0 and 15 of every leaf


def test_sender_data_sample_is_at_most_nh_bytes() -> None:
    cs = suite(1)
    secret = bytes(range(32))
    long = bytes(range(80))
    assert sender_data_key_nonce(cs, secret, long) == sender_data_key_nonce(cs, secret, long[:32])
    assert sender_data_key_nonce(cs, secret, long[:32]) != sender_data_key_nonce(
        cs, secret, long[:31]
    )
    # A ciphertext shorter than Nh is used whole.
    key, nonce = sender_data_key_nonce(cs, secret, b"short")
    assert (len(key), len(nonce)) == (16, 12)


def test_receiver_and_sender_agree_out_of_order() -> None:
    cs = suite(3)
    sender = HashRatchet(cs, bytes(range(32)))
    sent = [sender.next() for _ in range(10)]
    assert [k.generation for k in sent] == list(range(10))
    assert len({k.key for k in sent}) == 10
    assert (len(sent[0].key), len(sent[0].nonce)) == (32, 12)

    receiver = HashRatchet(cs, bytes(range(32)))
    for g in (7, 2, 9, 0):
        assert receiver.get(g) == sent[g]
        receiver.delete(g)
    # A used key is gone (§9.2): the same generation again cannot be read.
    for g in (7, 2, 9, 0):
        with pytest.raises(GenerationError):
            receiver.get(g)
    assert receiver.get(5) == sent[5]


def test_a_key_stays_until_its_message_decrypted() -> None:
    receiver = HashRatchet(suite(1), bytes(32))
    first = receiver.get(4)
    # A forged message naming generation 4 that fails to decrypt does not
    # burn the key of the genuine one: the caller deletes only on success.
    assert receiver.get(4) == first
    receiver.delete(4)
    with pytest.raises(GenerationError):
        receiver.get(4)


def test_forward_and_skipped_limits() -> None:
    cs = suite(1)
    receiver = HashRatchet(cs, bytes(32), max_forward=20, max_skipped=3)
    with pytest.raises(GenerationError) as info:
        receiver.get(21)
    assert isinstance(info.value, MLSDecryptError)
    assert receiver.generation == 0  # nothing was derived
    receiver.get(20)
    # Generations 0..19 were skipped; only the newest keys are kept.
    for g in (0, 16):
        with pytest.raises(GenerationError):
            receiver.get(g)
    receiver.get(18)
    with pytest.raises(GenerationError):
        receiver.get(1 << 32)
    with pytest.raises(GenerationError):
        receiver.get(-1)


def test_leaf_secrets_are_derived_once_and_parents_deleted() -> None:
    # RFC 9420 §9.2's example: a four-member tree, a message from D (leaf 3).
    # The tree secrets D, F and G are consumed; E (node 1) and C (node 4) stay.
    cs = suite(1)
    tree = SecretTree(cs, bytes(range(32)), 4)
    assert tree.held_nodes == [3]
    tree.ratchet(3, APP).get(1)
    assert tree.held_nodes == [1, 4]
    # The other ratchet of D comes from the same leaf secret, already consumed.
    assert tree.ratchet(3, HS).generation == 0
    assert tree.held_nodes == [1, 4]
    tree.ratchet(0, HS)
    assert tree.held_nodes == [2, 4]
    tree.ratchet(2, HS)
    tree.ratchet(1, HS)
    assert tree.held_nodes == []
    # Leaves of the same tree give different ratchets; a second tree from the
    # same secret gives the same ones.
    other = SecretTree(cs, bytes(range(32)), 4)
    assert other.ratchet(2, APP).get(0) == tree.ratchet(2, APP).get(0)
    assert tree.ratchet(1, APP).get(0) != tree.ratchet(2, APP).get(0)
    assert tree.ratchet(1, APP).get(0) != tree.ratchet(1, HS).get(0)
    with pytest.raises(ValueError):
        tree.ratchet(4, APP)


def test_reprs_hold_no_secret() -> None:
    cs = suite(1)
    secret = bytes(range(200, 232))
    tree = SecretTree(cs, secret, 2)
    ratchet = tree.ratchet(1, APP)
    key = ratchet.get(3)
    for text in (repr(tree), repr(ratchet), repr(key)):
        assert (
            secret.hex() not in text and key.key.hex() not in text and key.nonce.hex() not in text
        )
        assert repr(key.key) not in text


MESSAGE_PROTECTION = VECTORS.with_name("message-protection.json")


def _open(
    cs: Suite, tree: SecretTree, sender_data_secret: bytes, message: PrivateMessage
) -> tuple[int, bytes]:
    # RFC 9420 §6.3.2 then §6.3.1, as a receiver does: the sender data key
    # from a sample of the ciphertext, SenderData, the ratchet of the
    # sender's leaf for the content type, the nonce XOR the reuse guard.
    key, nonce = sender_data_key_nonce(cs, sender_data_secret, message.ciphertext)
    sender_aad = SenderDataAAD(message.group_id, message.epoch, message.content_type).to_bytes()
    sender = SenderData.from_bytes(
        cs.aead_decrypt(key, nonce, sender_aad, message.encrypted_sender_data)
    )
    kind = APP if message.content_type == ContentType.application else HS
    ratchet = tree.ratchet(sender.leaf_index, kind)
    k = ratchet.get(sender.generation)
    guarded = (
        bytes(a ^ b for a, b in zip(k.nonce[:4], sender.reuse_guard, strict=True)) + k.nonce[4:]
    )
    aad = PrivateContentAAD(
        message.group_id, message.epoch, message.content_type, message.authenticated_data
    ).to_bytes()
    plaintext = cs.aead_decrypt(k.key, guarded, aad, message.ciphertext)
    ratchet.delete(sender.generation)
    return sender.leaf_index, plaintext


def test_message_protection_private_messages_open_with_the_tree() -> None:
    # message-protection.json's PrivateMessages (suites 1 and 3), opened with
    # a two-leaf secret tree from the vector's encryption_secret: the keys of
    # a real sender's generation, for both ratchets.
    vectors: list[dict[str, Any]] = json.loads(MESSAGE_PROTECTION.read_text())
    run = [v for v in vectors if v["cipher_suite"] in IMPLEMENTED]
    assert sorted(v["cipher_suite"] for v in run) == [1, 3]
    assert sorted(v["cipher_suite"] for v in vectors if v not in run) == [2, 4, 5, 6, 7]
    for v in run:
        cs = suite(v["cipher_suite"])
        expected: dict[str, Any] = {
            "application": bytes.fromhex(v["application"]),
            "proposal": decode(bytes.fromhex(v["proposal"]), decode_proposal),
            "commit": Commit.from_bytes(bytes.fromhex(v["commit"])),
        }
        for name, content in expected.items():
            tree = SecretTree(cs, bytes.fromhex(v["encryption_secret"]), 2)
            message = MLSMessage.from_bytes(bytes.fromhex(v[f"{name}_priv"])).body
            assert isinstance(message, PrivateMessage)
            leaf, plaintext = _open(cs, tree, bytes.fromhex(v["sender_data_secret"]), message)
            assert leaf == 1  # the vectors' sender
            assert (
                PrivateMessageContent.from_bytes(plaintext, message.content_type).content == content
            )
            # The key is gone once the message opened: a replay does not open.
            with pytest.raises(GenerationError):
                _open(cs, tree, bytes.fromhex(v["sender_data_secret"]), message)


def test_the_last_generation_is_uint32_max() -> None:
    cs = suite(1)
    ratchet = HashRatchet(cs, bytes(32), max_forward=1 << 32)
    # Jump the ratchet's state to its last generation without 2^32 steps.
    ratchet._generation = 0xFFFFFFFF
    assert ratchet.next().generation == 0xFFFFFFFF
    with pytest.raises(LocalProtocolError):
        ratchet.next()
    with pytest.raises(GenerationError):
        ratchet.get(0xFFFFFFFF)  # used: not held
