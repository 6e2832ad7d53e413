"""PublicMessage / PrivateMessage protection (RFC 9420 §6.1-§6.3) against
message-protection.json, both ways, and what a receiver must reject."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from longtls.errors import DecodeError, MLSDecryptError, MLSError
from longtls.mls.codec import Writer, decode
from longtls.mls.crypto import CipherSuite, Suite, suite
from longtls.mls.framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateContentAAD,
    PrivateMessage,
    PublicMessage,
    Sender,
    SenderData,
    SenderDataAAD,
    WireFormat,
)
from longtls.mls.messages import GroupContext
from longtls.mls.proposals import Commit, Remove, decode_proposal, encode_proposal
from longtls.mls.protect import (
    authenticated_content,
    membership_tag,
    protect_private,
    protect_public,
    unprotect_private,
    unprotect_public,
)
from longtls.mls.secret_tree import RatchetType, SecretTree, sender_data_key_nonce

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls" / "message-protection.json"
IMPLEMENTED = {int(c) for c in CipherSuite}
SENDER = 1  # "use the member with LeafIndex 1 as the sender"


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())
    return data


def _vector(cipher_suite: int) -> dict[str, Any]:
    (v,) = [v for v in _vectors() if v["cipher_suite"] == cipher_suite]
    return v


def test_vector_suites_are_the_implemented_ones_and_the_rest() -> None:
    suites = [v["cipher_suite"] for v in _vectors()]
    assert sorted(s for s in suites if s in IMPLEMENTED) == [1, 3]
    assert sorted(s for s in suites if s not in IMPLEMENTED) == [2, 4, 5, 6, 7]


class Epoch:
    """What the vector gives of one epoch, for one cipher suite."""

    def __init__(self, v: dict[str, Any]) -> None:
        self.cs: Suite = suite(v["cipher_suite"])
        self.context = GroupContext(1, v["cipher_suite"], bytes.fromhex(v["group_id"]), v["epoch"],
                                    bytes.fromhex(v["tree_hash"]),
                                    bytes.fromhex(v["confirmed_transcript_hash"]))
        self.signature_priv = bytes.fromhex(v["signature_priv"])
        self.signature_pub = bytes.fromhex(v["signature_pub"])
        self.encryption_secret = bytes.fromhex(v["encryption_secret"])
        self.sender_data_secret = bytes.fromhex(v["sender_data_secret"])
        self.membership_key = bytes.fromhex(v["membership_key"])

    def lookup(self, leaf: int) -> bytes | None:
        # Leaf 0 is a member whose key the vector does not give: any other key.
        return {SENDER: self.signature_pub, 0: bytes(32)}.get(leaf)

    def tree(self) -> SecretTree:
        return SecretTree(self.cs, self.encryption_secret, 2)

    def sign(self, wire_format: WireFormat, content: bytes | Any, tag: bytes | None = None,
             authenticated_data: bytes = b"") -> AuthenticatedContent:
        framed = FramedContent(self.context.group_id, self.context.epoch, Sender.member(SENDER),
                               authenticated_data, content)
        return authenticated_content(self.cs, self.signature_priv, wire_format, framed, self.context, tag)

    def unprotect(self, data: bytes, tree: SecretTree | None = None) -> AuthenticatedContent:
        body = MLSMessage.from_bytes(data).body
        if isinstance(body, PublicMessage):
            return unprotect_public(self.cs, body, self.context, self.membership_key, self.lookup)
        assert isinstance(body, PrivateMessage)
        return unprotect_private(self.cs, body, self.context, self.sender_data_secret,
                                 tree or self.tree(), self.lookup)

    def private(self, content: AuthenticatedContent, tree: SecretTree | None = None, **kw: Any) -> bytes:
        msg = protect_private(self.cs, content, self.sender_data_secret, tree or self.tree(), **kw)
        return MLSMessage(msg).to_bytes()

    def public(self, content: AuthenticatedContent) -> bytes:
        return MLSMessage(protect_public(self.cs, content, self.context, self.membership_key)).to_bytes()


def _raw(content: bytes | Any) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, Commit):
        return content.to_bytes()
    w = Writer()
    encode_proposal(w, content)
    return w.bytes()


@pytest.mark.parametrize("cipher_suite", [1, 3])
@pytest.mark.parametrize("kind", ["proposal", "commit", "application"])
def test_message_protection_vectors(cipher_suite: int, kind: str) -> None:
    v = _vector(cipher_suite)
    e = Epoch(v)
    raw = bytes.fromhex(v[kind])
    value: bytes | Any = raw
    if kind == "proposal":
        value = decode(raw, decode_proposal)
    elif kind == "commit":
        value = Commit.from_bytes(raw)

    # The vector's PublicMessage verifies and carries the raw value.
    if kind != "application":
        got = e.unprotect(bytes.fromhex(v[f"{kind}_pub"]))
        assert _raw(got.content.content) == raw
        assert got.content.sender == Sender.member(SENDER)
    # The vector's PrivateMessage opens with a fresh secret tree.
    got = e.unprotect(bytes.fromhex(v[f"{kind}_priv"]))
    assert _raw(got.content.content) == raw and got.wire_format == WireFormat.mls_private_message

    tag = e.cs.mac(b"k" * 32, b"t") if kind == "commit" else None
    # Ours as a PublicMessage verifies (application data may not be one).
    if kind == "application":
        with pytest.raises(ValueError):
            e.public(e.sign(WireFormat.mls_public_message, value))
    else:
        ours = e.public(e.sign(WireFormat.mls_public_message, value, tag))
        got = e.unprotect(ours)
        assert _raw(got.content.content) == raw and got.auth.confirmation_tag == tag
    # Ours as a PrivateMessage opens with the receiver's own secret tree.
    ours = e.private(e.sign(WireFormat.mls_private_message, value, tag, b"aad"), padding=7)
    got = e.unprotect(ours)
    assert _raw(got.content.content) == raw and got.content.authenticated_data == b"aad"
    assert got.auth.confirmation_tag == tag


def _commit_epoch() -> tuple[Epoch, Commit]:
    v = _vector(1)
    return Epoch(v), Commit.from_bytes(bytes.fromhex(v["commit"]))


def test_public_message_membership_tag_is_mac_of_tbm() -> None:
    # membership_tag = MAC(membership_key, AuthenticatedContentTBM) (§6.2),
    # recomputed here from the struct's fields, independently of protect.
    e, commit = _commit_epoch()
    content = e.sign(WireFormat.mls_public_message, commit, b"\x01" * 32)
    msg = protect_public(e.cs, content, e.context, e.membership_key)
    tbm = (Writer().u16(1).u16(WireFormat.mls_public_message).bytes() + content.content.to_bytes()
           + e.context.to_bytes() + Writer().opaque(content.auth.signature).opaque(b"\x01" * 32).bytes())
    assert msg.membership_tag == e.cs.mac(e.membership_key, tbm)
    assert membership_tag(e.cs, e.membership_key, content, e.context) == msg.membership_tag


def test_public_message_rejections() -> None:
    e, commit = _commit_epoch()
    good = protect_public(e.cs, e.sign(WireFormat.mls_public_message, commit, b"\x01" * 32), e.context,
                          e.membership_key)

    def check(msg: PublicMessage, lookup: Any = None) -> None:
        unprotect_public(e.cs, msg, e.context, e.membership_key, lookup or e.lookup)

    check(good)
    assert good.membership_tag is not None
    bad_tag = bytes([good.membership_tag[0] ^ 1]) + good.membership_tag[1:]
    with pytest.raises(MLSError, match="membership_tag"):
        check(replace(good, membership_tag=bad_tag))
    # Another sender's key: the signature does not verify.
    with pytest.raises(MLSError, match="signature"):
        check(good, lambda leaf: e.cs.generate_signature_key_pair()[1])
    # A blank sender leaf.
    with pytest.raises(MLSError, match="blank"):
        check(good, lambda leaf: None)
    # Another epoch or group.
    with pytest.raises(MLSError, match="epoch"):
        check(replace(good, content=replace(good.content, epoch=good.content.epoch + 1)))
    with pytest.raises(MLSError, match="another group"):
        check(replace(good, content=replace(good.content, group_id=b"other")))
    # A changed confirmation tag breaks the membership tag (it covers auth).
    with pytest.raises(MLSError):
        check(replace(good, auth=FramedContentAuthData(good.auth.signature, b"\x02" * 32)))
    # Application data in a PublicMessage, even with a valid tag and signature.
    app = e.sign(WireFormat.mls_public_message, b"data")
    msg = PublicMessage(app.content, app.auth, membership_tag(e.cs, e.membership_key, app, e.context))
    with pytest.raises(MLSError, match="application"):
        check(msg)
    # Signed for PrivateMessage, sent as PublicMessage: the signature covers the wire format.
    wrong = e.sign(WireFormat.mls_private_message, commit, b"\x01" * 32)
    msg = PublicMessage(wrong.content, wrong.auth,
                        membership_tag(e.cs, e.membership_key, replace(wrong, wire_format=1), e.context))
    with pytest.raises(MLSError, match="signature"):
        check(msg)


def test_private_message_rejections() -> None:
    e, _ = _commit_epoch()
    sender_tree = e.tree()
    content = e.sign(WireFormat.mls_private_message, b"hello")
    data = e.private(content, sender_tree)
    msg = MLSMessage.from_bytes(data).body
    assert isinstance(msg, PrivateMessage)

    receiver = e.tree()
    flipped = bytes([msg.ciphertext[-1] ^ 1])
    with pytest.raises(MLSDecryptError):
        unprotect_private(e.cs, replace(msg, ciphertext=msg.ciphertext[:-1] + flipped), e.context,
                          e.sender_data_secret, receiver, e.lookup)
    with pytest.raises(MLSDecryptError):
        unprotect_private(e.cs, replace(msg, authenticated_data=b"x"), e.context, e.sender_data_secret,
                          receiver, e.lookup)
    with pytest.raises(MLSError, match="epoch"):
        unprotect_private(e.cs, replace(msg, epoch=msg.epoch + 1), e.context, e.sender_data_secret,
                          receiver, e.lookup)
    with pytest.raises(MLSError, match="signature"):
        unprotect_private(e.cs, msg, e.context, e.sender_data_secret, receiver,
                          lambda leaf: e.cs.generate_signature_key_pair()[1])
    # The failed attempts did not burn the generation: the genuine one opens, once.
    assert unprotect_private(e.cs, msg, e.context, e.sender_data_secret, receiver,
                             e.lookup).content.content == b"hello"
    with pytest.raises(MLSDecryptError):
        unprotect_private(e.cs, msg, e.context, e.sender_data_secret, receiver, e.lookup)
    # Sender data naming a blank leaf.
    with pytest.raises(MLSError, match="blank"):
        unprotect_private(e.cs, MLSMessage.from_bytes(e.private(content)).body,  # type: ignore[arg-type]
                          e.context, e.sender_data_secret, e.tree(), lambda leaf: None)


def _seal_by_hand(e: Epoch, plaintext: bytes, generation: int = 0) -> PrivateMessage:
    """A PrivateMessage sealed from the spec's formulas (§6.3.1, §6.3.2),
    without protect_private, for a plaintext of our choosing."""
    guard = b"\x0a\x0b\x0c\x0d"
    step = e.tree().ratchet(SENDER, RatchetType.APPLICATION)
    for _ in range(generation):
        step.next()
    k = step.next()
    nonce = bytes(a ^ b for a, b in zip(k.nonce[:4], guard, strict=True)) + k.nonce[4:]
    ctx = e.context
    aad = PrivateContentAAD(ctx.group_id, ctx.epoch, 1, b"").to_bytes()  # type: ignore[arg-type]
    ciphertext = e.cs.aead_encrypt(k.key, nonce, aad, plaintext)
    sd_key, sd_nonce = sender_data_key_nonce(e.cs, e.sender_data_secret, ciphertext)
    sd = e.cs.aead_encrypt(sd_key, sd_nonce, SenderDataAAD(ctx.group_id, ctx.epoch, 1).to_bytes(),  # type: ignore[arg-type]
                           SenderData(SENDER, generation, guard).to_bytes())
    return PrivateMessage(ctx.group_id, ctx.epoch, 1, b"", sd, ciphertext)  # type: ignore[arg-type]


def test_private_message_by_hand_and_padding() -> None:
    e, _ = _commit_epoch()
    content = e.sign(WireFormat.mls_private_message, b"hi")
    body = Writer().opaque(b"hi").opaque(content.auth.signature).bytes()
    # Zero padding is accepted and the generation is the one named.
    got = unprotect_private(e.cs, _seal_by_hand(e, body + bytes(5), generation=3), e.context,
                            e.sender_data_secret, e.tree(), e.lookup)
    assert got.content.content == b"hi"
    # "A receiver MUST verify that there are no non-zero bytes in the padding" (§6.3.1)
    with pytest.raises(DecodeError):
        unprotect_private(e.cs, _seal_by_hand(e, body + b"\x00\x01"), e.context,
                          e.sender_data_secret, e.tree(), e.lookup)


def test_private_message_padding_and_reuse_guard_on_the_wire() -> None:
    e, _ = _commit_epoch()
    content = e.sign(WireFormat.mls_private_message, b"x")
    short = MLSMessage.from_bytes(e.private(content)).body
    padded = MLSMessage.from_bytes(e.private(content, padding=100)).body
    assert isinstance(short, PrivateMessage) and isinstance(padded, PrivateMessage)
    assert len(padded.ciphertext) == len(short.ciphertext) + 100
    # Two messages of the same generation differ by their random reuse guard.
    assert e.private(content) != e.private(content)


def test_protect_refuses_remove_as_application_and_wrong_wire_format() -> None:
    e, _ = _commit_epoch()
    with pytest.raises(ValueError):
        protect_public(e.cs, e.sign(WireFormat.mls_private_message, Remove(0)), e.context, e.membership_key)
    with pytest.raises(ValueError):
        protect_private(e.cs, e.sign(WireFormat.mls_public_message, Remove(0)), e.sender_data_secret,
                        e.tree())
