"""MLS structures and framing codecs (RFC 9420 §5-§12): mls/messages.py, mls/framing.py.

Proof against the official vectors: every field of messages.json decodes and
re-encodes to its bytes; every serialized structure in the other vector files
round-trips too (they carry what messages.json lacks: parent and blank nodes,
commit-source leaves, private messages, commits with proposals); the TBS
encodings are checked against the vectors' own Ed25519 signatures, and the
membership tag and transcript-hash inputs against their MACs and hashes,
computed here with pyca/cryptography from the RFC's formulas.  Hand-made
inputs: bytes built from the spec's layouts, malformed ones -> DecodeError.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from longtls.errors import DecodeError
from longtls.mls import messages as m
from longtls.mls import proposals as p
from longtls.mls.codec import Reader, Writer, decode
from longtls.mls.framing import (
    AuthenticatedContent,
    AuthenticatedContentTBM,
    ConfirmedTranscriptHashInput,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    FramedContentTBS,
    InterimTranscriptHashInput,
    MLSMessage,
    PrivateContentAAD,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
    SenderData,
    SenderDataAAD,
    SenderType,
    WireFormat,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls"

#: Suites whose signature scheme (Ed25519) and hash (SHA-256) the checks here
#: compute; the vectors' other suites (2, 4-7) are counted, not run.
ED25519_SHA256_SUITES = {1, 3}
OTHER_VECTOR_SUITES = {2, 4, 5, 6, 7}


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def roundtrip(data_hex: str, dec: Callable[[Reader], Any],
              enc: Callable[[Writer, Any], object] = m.encode_struct) -> Any:
    """Decode exactly the bytes, re-encode, compare: the vectors' check."""
    data = bytes.fromhex(data_hex)
    value = decode(data, dec)
    w = Writer()
    enc(w, value)
    assert w.bytes() == data
    return value


def sign_content(label: bytes, content: bytes) -> bytes:
    """SignContent (RFC 9420 §5.1.2), built here from the struct."""
    return Writer().opaque(b"MLS 1.0 " + label).opaque(content).bytes()


def ed25519_ok(public_key: bytes, signature: bytes, label: bytes, content: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, sign_content(label, content))
    except InvalidSignature:
        return False
    return True


# --- messages.json ----------------------------------------------------------

MLS_MESSAGE_FIELDS = {
    "mls_welcome": WireFormat.mls_welcome,
    "mls_group_info": WireFormat.mls_group_info,
    "mls_key_package": WireFormat.mls_key_package,
    "public_message_application": WireFormat.mls_public_message,
    "public_message_proposal": WireFormat.mls_public_message,
    "public_message_commit": WireFormat.mls_public_message,
    "private_message": WireFormat.mls_private_message,
}
PUBLIC_CONTENT_TYPES = {
    "public_message_application": ContentType.application,
    "public_message_proposal": ContentType.proposal,
    "public_message_commit": ContentType.commit,
}
STRUCT_FIELDS: dict[str, tuple[Callable[[Reader], Any], Callable[[Writer, Any], object]]] = {
    "ratchet_tree": (m.decode_ratchet_tree, m.encode_ratchet_tree),
    "group_secrets": (m.GroupSecrets.decode, m.encode_struct),
    "add_proposal": (p.Add.decode, m.encode_struct),
    "update_proposal": (p.Update.decode, m.encode_struct),
    "remove_proposal": (p.Remove.decode, m.encode_struct),
    "pre_shared_key_proposal": (p.PreSharedKey.decode, m.encode_struct),
    "re_init_proposal": (p.ReInit.decode, m.encode_struct),
    "external_init_proposal": (p.ExternalInit.decode, m.encode_struct),
    "group_context_extensions_proposal": (p.GroupContextExtensions.decode, m.encode_struct),
    "commit": (p.Commit.decode, m.encode_struct),
}


def test_messages_vectors_every_field_round_trips() -> None:
    vectors = load("messages.json")
    assert len(vectors) == 300
    for entry in vectors:
        # The format lists exactly these fields: none is left unchecked.
        assert set(entry) == set(MLS_MESSAGE_FIELDS) | set(STRUCT_FIELDS)
        for name, wire_format in MLS_MESSAGE_FIELDS.items():
            msg = roundtrip(entry[name], MLSMessage.decode)
            assert msg.wire_format == wire_format
            data = bytes.fromhex(entry[name])
            assert data[:4] == b"\x00\x01" + wire_format.to_bytes(2, "big")
            assert MLSMessage.from_bytes(data) == msg
            if name in PUBLIC_CONTENT_TYPES:
                assert isinstance(msg.body, PublicMessage)
                assert msg.body.content.content_type == PUBLIC_CONTENT_TYPES[name]
        for name, (dec, enc) in STRUCT_FIELDS.items():
            roundtrip(entry[name], dec, enc)


def test_messages_vectors_extensions_parse() -> None:
    """The typed extension payloads the vectors carry decode and re-encode:
    ratchet_tree and external_pub in GroupInfo, required_capabilities in the
    GroupContext, and the ratchet tree extension matches the field."""
    seen: Counter[int] = Counter()
    for entry in load("messages.json"):
        info = MLSMessage.from_bytes(bytes.fromhex(entry["mls_group_info"])).body
        assert isinstance(info, m.GroupInfo)
        for ext in (*info.extensions, *info.group_context.extensions):
            seen[ext.extension_type] += 1
            if ext.extension_type == m.ExtensionType.ratchet_tree:
                tree = m.parse_ratchet_tree(ext.extension_data)
                assert m.ratchet_tree_extension(tree) == ext
            elif ext.extension_type == m.ExtensionType.external_pub:
                assert m.ExternalPub.from_bytes(ext.extension_data).extension() == ext
            elif ext.extension_type == m.ExtensionType.required_capabilities:
                assert m.RequiredCapabilities.from_bytes(ext.extension_data).extension() == ext
    assert seen == {m.ExtensionType.ratchet_tree: 300, m.ExtensionType.external_pub: 300,
                    m.ExtensionType.required_capabilities: 300}


def test_messages_vectors_tbs_signatures() -> None:
    """KeyPackageTBS, LeafNodeTBS (key_package source) and GroupInfoTBS are
    exactly what the vectors' signatures cover (SignWithLabel, RFC 9420 §5.1.2)."""
    suites: Counter[int] = Counter()
    for entry in load("messages.json"):
        kp = MLSMessage.from_bytes(bytes.fromhex(entry["mls_key_package"])).body
        info = MLSMessage.from_bytes(bytes.fromhex(entry["mls_group_info"])).body
        assert isinstance(kp, m.KeyPackage) and isinstance(info, m.GroupInfo)
        assert kp.cipher_suite == info.group_context.cipher_suite
        suites[kp.cipher_suite] += 1
        if kp.cipher_suite not in ED25519_SHA256_SUITES:
            continue
        leaf = kp.leaf_node
        assert leaf.leaf_node_source == m.LeafNodeSource.key_package
        assert ed25519_ok(leaf.signature_key, kp.signature, b"KeyPackageTBS", kp.tbs())
        assert ed25519_ok(leaf.signature_key, leaf.signature, b"LeafNodeTBS", leaf.tbs())
        # The signer's key is in the GroupInfo's own ratchet_tree (leaf i at node 2i).
        tree_ext = m.find_extension(info.extensions, m.ExtensionType.ratchet_tree)
        assert tree_ext is not None
        signer = m.parse_ratchet_tree(tree_ext.extension_data)[2 * info.signer]
        assert isinstance(signer, m.LeafNode)
        assert ed25519_ok(signer.signature_key, info.signature, b"GroupInfoTBS", info.tbs())
        # A changed byte of the TBS breaks it: the check can fail.
        assert not ed25519_ok(signer.signature_key, info.signature, b"GroupInfoTBS",
                              info.tbs() + b"\x00")
    assert suites == {1: 100, 2: 100, 3: 100}


# --- the other vector files: every serialized structure --------------------


def test_structures_in_other_vectors_round_trip() -> None:
    seen: Counter[str] = Counter()

    def walk_tree(nodes: tuple[m.Node | None, ...]) -> None:
        for node in nodes:
            if node is None:
                seen["blank"] += 1
            elif isinstance(node, m.ParentNode):
                seen["parent"] += 1
            else:
                seen[f"leaf:{node.leaf_node_source.name}"] += 1

    def walk_message(msg: MLSMessage) -> None:
        seen[msg.wire_format.name] += 1
        if isinstance(msg.body, PublicMessage):
            content = msg.body.content.content
            seen[type(content).__name__] += 1
            if isinstance(content, p.Commit):
                for item in content.proposals:
                    seen[f"in commit:{type(item).__name__}"] += 1

    for entry in load("welcome.json"):
        walk_message(roundtrip(entry["key_package"], MLSMessage.decode))
        walk_message(roundtrip(entry["welcome"], MLSMessage.decode))
    for entry in load("treekem.json"):
        walk_tree(roundtrip(entry["ratchet_tree"], m.decode_ratchet_tree, m.encode_ratchet_tree))
        for path in entry["update_paths"]:
            leaf = roundtrip(path["update_path"], m.UpdatePath.decode).leaf_node
            seen[f"path leaf:{leaf.leaf_node_source.name}"] += 1
    for entry in load("tree-operations.json"):
        seen[type(roundtrip(entry["proposal"], p.decode_proposal, p.encode_proposal)).__name__] += 1
        for tree in ("tree_before", "tree_after"):
            walk_tree(roundtrip(entry[tree], m.decode_ratchet_tree, m.encode_ratchet_tree))
    for name in ("passive-client-welcome.json", "passive-client-handling-commit.json"):
        for entry in load(name):
            walk_message(roundtrip(entry["key_package"], MLSMessage.decode))
            walk_message(roundtrip(entry["welcome"], MLSMessage.decode))
            if entry["ratchet_tree"] is not None:
                walk_tree(roundtrip(entry["ratchet_tree"], m.decode_ratchet_tree,
                                    m.encode_ratchet_tree))
            for epoch in entry["epochs"]:
                for proposal in epoch["proposals"]:
                    walk_message(roundtrip(proposal, MLSMessage.decode))
                walk_message(roundtrip(epoch["commit"], MLSMessage.decode))
    for entry in load("message-protection.json"):
        roundtrip(entry["proposal"], p.decode_proposal, p.encode_proposal)
        roundtrip(entry["commit"], p.Commit.decode)
        for field in ("proposal_pub", "proposal_priv", "commit_pub", "commit_priv",
                      "application_priv"):
            walk_message(roundtrip(entry[field], MLSMessage.decode))
    for entry in load("transcript-hashes.json"):
        roundtrip(entry["authenticated_content"], AuthenticatedContent.decode)

    # What these files add to messages.json was really decoded.
    for kind in ("blank", "parent", "leaf:key_package", "leaf:commit", "leaf:update",
                 "path leaf:commit", "mls_private_message", "mls_welcome", "mls_key_package",
                 "Add", "Update", "Remove", "PreSharedKey", "GroupContextExtensions",
                 "in commit:bytes", "in commit:Add", "in commit:PreSharedKey"):
        assert seen[kind] > 0, kind


def test_leaf_node_tbs_for_commit_source() -> None:
    """LeafNodeTBS of a commit-source leaf binds group_id and the sender's
    leaf index (RFC 9420 §7.2): the treekem vectors' UpdatePath leaves verify."""
    checked = 0
    suites: Counter[int] = Counter()
    for entry in load("treekem.json"):
        suites[entry["cipher_suite"]] += 1
        if entry["cipher_suite"] not in ED25519_SHA256_SUITES:
            continue
        group_id = bytes.fromhex(entry["group_id"])
        for path in entry["update_paths"]:
            leaf = m.UpdatePath.from_bytes(bytes.fromhex(path["update_path"])).leaf_node
            tbs = leaf.tbs(group_id, path["sender"])
            assert ed25519_ok(leaf.signature_key, leaf.signature, b"LeafNodeTBS", tbs)
            assert not ed25519_ok(leaf.signature_key, leaf.signature, b"LeafNodeTBS",
                                  leaf.tbs(group_id, path["sender"] + 1))
            checked += 1
    assert checked > 0
    assert set(suites) - ED25519_SHA256_SUITES == OTHER_VECTOR_SUITES


def test_framed_content_tbs_and_membership_tag() -> None:
    """message-protection.json: FramedContentTBS (with the GroupContext the
    format describes) is what the signature covers, and
    AuthenticatedContentTBM is what the membership_tag MACs (RFC 9420 §6.1, §6.2)."""
    suites = set()
    for entry in load("message-protection.json"):
        suites.add(entry["cipher_suite"])
        if entry["cipher_suite"] not in ED25519_SHA256_SUITES:
            continue
        context = m.GroupContext(
            m.ProtocolVersion.mls10, entry["cipher_suite"], bytes.fromhex(entry["group_id"]),
            entry["epoch"], bytes.fromhex(entry["tree_hash"]),
            bytes.fromhex(entry["confirmed_transcript_hash"]))
        for field in ("proposal_pub", "commit_pub"):
            msg = MLSMessage.from_bytes(bytes.fromhex(entry[field])).body
            assert isinstance(msg, PublicMessage) and msg.membership_tag is not None
            assert msg.content.sender == Sender.member(1)
            tbs = msg.authenticated_content().tbs(context)
            assert ed25519_ok(bytes.fromhex(entry["signature_pub"]), msg.auth.signature,
                              b"FramedContentTBS", tbs.to_bytes())
            assert FramedContentTBS.from_bytes(tbs.to_bytes()) == tbs
            tbm = AuthenticatedContentTBM(tbs, msg.auth).to_bytes()
            tag = hmac.new(bytes.fromhex(entry["membership_key"]), tbm, hashlib.sha256).digest()
            assert tag == msg.membership_tag
            raw = bytes.fromhex(entry["proposal" if field == "proposal_pub" else "commit"])
            content = msg.content.content
            if isinstance(content, p.Commit):
                assert content.to_bytes() == raw
            else:
                assert not isinstance(content, bytes)
                w = Writer()
                p.encode_proposal(w, content)
                assert w.bytes() == raw
    assert suites - ED25519_SHA256_SUITES == OTHER_VECTOR_SUITES


def test_transcript_hash_inputs() -> None:
    """ConfirmedTranscriptHashInput and InterimTranscriptHashInput (RFC 9420
    §8.2) from the vectors' AuthenticatedContent give their hashes."""
    suites = set()
    for entry in load("transcript-hashes.json"):
        suites.add(entry["cipher_suite"])
        if entry["cipher_suite"] not in ED25519_SHA256_SUITES:
            continue
        auth = AuthenticatedContent.from_bytes(bytes.fromhex(entry["authenticated_content"]))
        assert auth.content.content_type == ContentType.commit
        assert auth.auth.confirmation_tag is not None
        confirmed_input = ConfirmedTranscriptHashInput(
            auth.wire_format, auth.content, auth.auth.signature).to_bytes()
        confirmed = hashlib.sha256(
            bytes.fromhex(entry["interim_transcript_hash_before"]) + confirmed_input).digest()
        assert confirmed.hex() == entry["confirmed_transcript_hash_after"]
        interim = hashlib.sha256(
            confirmed + InterimTranscriptHashInput(auth.auth.confirmation_tag).to_bytes()).digest()
        assert interim.hex() == entry["interim_transcript_hash_after"]
    assert suites - ED25519_SHA256_SUITES == OTHER_VECTOR_SUITES


# --- hand-made values: bytes from the spec's layouts ------------------------


def test_credentials_on_the_wire() -> None:
    basic = m.BasicCredential(b"alice")
    assert basic.to_bytes() == bytes.fromhex("0001") + b"\x05alice"
    x509 = m.X509Credential.from_der([b"\x30\x01", b"abc"])
    # credential_type x509, then Certificate certificates<V>: 7 bytes of
    # two opaque<V> cert_data.
    assert x509.to_bytes() == bytes.fromhex("0002" "07" "023001" "03616263")
    assert m.X509Credential.from_bytes(x509.to_bytes()) == x509
    # An unknown type keeps its <V> body and re-encodes it unchanged.
    grease = bytes.fromhex("0a0a" "03" "010203")
    other = decode(grease, m.decode_credential)
    assert other == m.OtherCredential(0x0A0A, b"\x01\x02\x03")
    assert other.to_bytes() == grease
    with pytest.raises(DecodeError):
        m.X509Credential.from_bytes(basic.to_bytes())
    with pytest.raises(ValueError):
        m.OtherCredential(m.CredentialType.basic, b"x")


def test_sender_and_psk_id_on_the_wire() -> None:
    assert Sender.member(5).to_bytes() == bytes.fromhex("01 00000005")
    assert Sender.external(2).to_bytes() == bytes.fromhex("02 00000002")
    assert Sender.new_member_commit().to_bytes() == b"\x04"
    assert Sender.from_bytes(b"\x03") == Sender.new_member_proposal()
    resumption = m.PreSharedKeyID.resumption(
        m.ResumptionPSKUsage.reinit, b"g", 7, b"nn")
    assert resumption.to_bytes() == bytes.fromhex("02 02 0167 0000000000000007 026e6e")
    assert m.PreSharedKeyID.from_bytes(resumption.to_bytes()) == resumption
    external = m.PreSharedKeyID.external(b"id", b"n")
    assert external.to_bytes() == bytes.fromhex("01 026964 016e")
    with pytest.raises(ValueError):
        Sender(SenderType.member)
    with pytest.raises(ValueError):
        m.PreSharedKeyID(m.PSKType.external, b"n", usage=m.ResumptionPSKUsage.application)


def _leaf(source: m.LeafNodeSource, **kw: Any) -> m.LeafNode:
    return m.LeafNode(b"E" * 32, b"S" * 32, m.BasicCredential(b"bob"), m.Capabilities(), source,
                      **kw)


def test_leaf_node_source_fields_and_tbs() -> None:
    kp_leaf = _leaf(m.LeafNodeSource.key_package, lifetime=m.Lifetime(1, 2), signature=b"sig")
    commit_leaf = _leaf(m.LeafNodeSource.commit, parent_hash=b"ph", signature=b"sig")
    update_leaf = _leaf(m.LeafNodeSource.update, signature=b"sig")
    for leaf in (kp_leaf, commit_leaf, update_leaf):
        assert m.LeafNode.from_bytes(leaf.to_bytes()) == leaf
        # LeafNode = LeafNodeTBS's content fields + signature<V>.
        content = leaf.to_bytes()[:-4]
        assert leaf.to_bytes()[-4:] == b"\x03sig"
        if leaf is kp_leaf:
            assert leaf.tbs() == content
        else:
            assert leaf.tbs(b"grp", 3) == content + b"\x03grp" + bytes.fromhex("00000003")
            with pytest.raises(ValueError):
                leaf.tbs()
    with pytest.raises(ValueError):
        kp_leaf.tbs(b"grp", 3)
    with pytest.raises(ValueError):
        _leaf(m.LeafNodeSource.commit)  # no parent_hash
    with pytest.raises(ValueError):
        _leaf(m.LeafNodeSource.update, lifetime=m.Lifetime(1, 2))


def test_commit_and_ratchet_tree_on_the_wire() -> None:
    assert p.Commit().to_bytes() == b"\x00\x00"  # no proposals, path absent
    ref = b"r" * 32
    commit = p.Commit((ref, p.Remove(9)))
    assert commit.to_bytes() == (bytes.fromhex("29") + b"\x02\x20" + ref
                                 + bytes.fromhex("01 0003 00000009") + b"\x00")
    assert p.Commit.from_bytes(commit.to_bytes()) == commit
    parent = m.ParentNode(b"K", b"", (0, 2))
    tree = (None, parent, None)
    ext = m.ratchet_tree_extension(tree)
    assert ext.extension_data == bytes.fromhex("10" "00" "01 02 014b 00 08 00000000 00000002" "00")
    assert m.parse_ratchet_tree(ext.extension_data) == tree


def test_private_message_content_padding() -> None:
    auth = FramedContentAuthData(b"sig")
    content = PrivateMessageContent(b"hello", auth, padding_length=3)
    data = content.to_bytes()
    assert data == b"\x05hello" + b"\x03sig" + bytes(3)
    assert PrivateMessageContent.from_bytes(data, ContentType.application) == content
    # "A receiver MUST verify that there are no non-zero bytes in the padding" (§6.3.1).
    with pytest.raises(DecodeError):
        PrivateMessageContent.from_bytes(data[:-1] + b"\x01", ContentType.application)
    commit = PrivateMessageContent(p.Commit(), FramedContentAuthData(b"s", b"tag"))
    assert commit.to_bytes() == b"\x00\x00" + b"\x01s" + b"\x03tag"
    assert PrivateMessageContent.from_bytes(commit.to_bytes(), ContentType.commit) == commit
    with pytest.raises(ValueError):  # a commit's auth has a confirmation_tag
        PrivateMessageContent(p.Commit(), auth).to_bytes()


def test_private_message_aads_and_sender_data() -> None:
    assert PrivateContentAAD(b"g", 1, ContentType.commit, b"ad").to_bytes() == bytes.fromhex(
        "0167 0000000000000001 03 026164")
    assert SenderDataAAD(b"g", 2, ContentType.application).to_bytes() == bytes.fromhex(
        "0167 0000000000000002 01")
    sender_data = SenderData(1, 2, b"\xaa\xbb\xcc\xdd")
    assert sender_data.to_bytes() == bytes.fromhex("00000001 00000002 aabbccdd")
    assert SenderData.from_bytes(sender_data.to_bytes()) == sender_data
    private = PrivateMessage(b"g", 3, ContentType.proposal, b"", b"esd", b"ct")
    assert MLSMessage(private).to_bytes() == bytes.fromhex(
        "0001 0002 0167 0000000000000003 02 00 03657364 026374")


def test_secrets_not_in_repr() -> None:
    secrets = m.GroupSecrets(b"JOINER-SECRET", m.PathSecret(b"PATH-SECRET"))
    assert "JOINER" not in repr(secrets) and "PATH-SECRET" not in repr(secrets)


# --- malformed input --------------------------------------------------------


def _public_message(sender_type: int = 1, content_type: int = 1, source: int | None = None) -> bytes:
    """An MLSMessage(PublicMessage) built field by field from RFC 9420 §6."""
    w = Writer().u16(1).u16(1)  # mls10, mls_public_message
    w.opaque(b"grp").u64(4).u8(sender_type)
    if sender_type in (1, 2):
        w.u32(0)
    w.opaque(b"").u8(content_type)
    if content_type == 1:
        w.opaque(b"data")
    elif content_type == 2:  # an Update proposal whose leaf has the given source
        w.u16(2).opaque(b"E").opaque(b"S").u16(1).opaque(b"id")
        for _ in range(5):
            w.vector([], Writer.u16)
        w.u8(source if source is not None else 2).vector([], Writer.u16).opaque(b"ls")
    w.opaque(b"sig")
    if sender_type == 1:
        w.opaque(b"tag")
    return w.bytes()


def test_hand_built_public_message_decodes() -> None:
    app = MLSMessage.from_bytes(_public_message())
    assert isinstance(app.body, PublicMessage)
    assert app.body.content == FramedContent(b"grp", 4, Sender.member(0), b"", b"data")
    assert app.body.membership_tag == b"tag"
    proposal = MLSMessage.from_bytes(_public_message(content_type=2)).body
    assert isinstance(proposal, PublicMessage)
    assert isinstance(proposal.content.content, p.Update)
    assert MLSMessage.from_bytes(_public_message(sender_type=3)).to_bytes() == _public_message(
        sender_type=3)


@pytest.mark.parametrize("data", [
    pytest.param(_public_message(sender_type=0), id="sender_type 0 (reserved)"),
    pytest.param(_public_message(sender_type=5), id="sender_type 5"),
    pytest.param(_public_message(content_type=0), id="content_type 0 (reserved)"),
    pytest.param(_public_message(content_type=4), id="content_type 4"),
    pytest.param(_public_message(content_type=2, source=0), id="leaf_node_source 0"),
    pytest.param(_public_message(content_type=2, source=4), id="leaf_node_source 4"),
    pytest.param(b"\x00\x02" + _public_message()[2:], id="version 2"),
    pytest.param(b"\x00\x01\x00\x00" + _public_message()[4:], id="wire_format 0"),
    pytest.param(b"\x00\x01\x00\x06" + _public_message()[4:], id="wire_format 6"),
    pytest.param(b"\x00\x01\xf0\x00" + _public_message()[4:], id="wire_format private use"),
    pytest.param(_public_message()[:-1], id="truncated"),
    pytest.param(_public_message() + b"\x00", id="trailing byte"),
    pytest.param(_public_message(sender_type=3) + b"\x03tag", id="membership_tag for new member"),
])
def test_malformed_mls_message(data: bytes) -> None:
    with pytest.raises(DecodeError):
        MLSMessage.from_bytes(data)


@pytest.mark.parametrize(("data", "dec"), [
    pytest.param(bytes.fromhex("0008"), p.decode_proposal, id="proposal type 8"),
    pytest.param(bytes.fromhex("0a0a"), p.decode_proposal, id="GREASE proposal type"),
    pytest.param(bytes.fromhex("0000"), p.decode_proposal, id="proposal type 0"),
    pytest.param(bytes.fromhex("03 00 00"), p.decode_proposal_or_ref, id="ProposalOrRefType 3"),
    pytest.param(bytes.fromhex("00 02"), p.Commit.decode, id="optional presence 2"),
    pytest.param(bytes.fromhex("00 016e"), m.PreSharedKeyID.decode, id="psktype 0"),
    pytest.param(bytes.fromhex("02 04 0167 0000000000000001 016e"), m.PreSharedKeyID.decode,
                 id="resumption usage 4"),
    pytest.param(bytes.fromhex("03 03 00"), m.decode_ratchet_tree, id="node_type 3"),
    pytest.param(bytes.fromhex("08 0001 0161 0001 0162"), p.GroupContextExtensions.decode,
                 id="extension type twice"),
    pytest.param(bytes.fromhex("05 0001 0161 00"), p.GroupContextExtensions.decode,
                 id="extension overruns its vector"),
    pytest.param(bytes.fromhex("05 0102"), m.GroupSecrets.decode, id="joiner_secret truncated"),
])
def test_malformed_structures(data: bytes, dec: Callable[[Reader], Any]) -> None:
    with pytest.raises(DecodeError):
        decode(data, dec)


def test_duplicate_extension_types_are_not_encoded() -> None:
    twice = (m.Extension(0x0A0A, b"a"), m.Extension(0x0A0A, b"b"))
    with pytest.raises(ValueError):
        p.GroupContextExtensions(twice).to_bytes()
    assert p.GroupContextExtensions(twice[:1]).to_bytes() == bytes.fromhex("04 0a0a 0161")


def test_mutated_vector_messages_decode_canonically_or_fail_cleanly() -> None:
    """Random byte changes in real messages: the result either decodes, and
    then re-encodes to exactly the changed bytes (one encoding per value, so
    what is signed is what was received), or is a DecodeError, never another
    exception."""
    rng = random.Random(9420)
    vectors = load("messages.json")
    outcomes: Counter[str] = Counter()
    for _ in range(3000):
        entry = vectors[rng.randrange(len(vectors))]
        data = bytearray(bytes.fromhex(entry[rng.choice(sorted(MLS_MESSAGE_FIELDS))]))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            msg = MLSMessage.from_bytes(bytes(data))
        except DecodeError:
            outcomes["DecodeError"] += 1
        else:
            assert msg.to_bytes() == bytes(data)
            outcomes["decoded"] += 1
    assert outcomes["DecodeError"] > 100 and outcomes["decoded"] > 100


def test_every_truncation_of_a_vector_message_is_a_decode_error() -> None:
    """No prefix of a real Welcome, GroupInfo or commit decodes, or raises
    anything but DecodeError."""
    entry = load("messages.json")[0]
    for name in ("mls_welcome", "mls_group_info", "public_message_commit"):
        data = bytes.fromhex(entry[name])
        for n in range(len(data)):
            with pytest.raises(DecodeError):
                MLSMessage.from_bytes(data[:n])
