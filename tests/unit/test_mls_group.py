"""MLS group state (RFC 9420 §8-§12): the passive-client vectors, and the
two-party flows of draft-kohbrok-mls-two-party-profile (create, add,
Welcome, self-updates both ways) with the checks a receiver must make."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from longtls.errors import DecodeError, MLSError
from longtls.mls.crypto import CipherSuite, suite
from longtls.mls.framing import MLSMessage, PrivateMessage, PublicMessage, WireFormat
from longtls.mls.group import Group, ProcessedCommit
from longtls.mls.key_package import KeyPackageBundle, create_key_package
from longtls.mls.key_schedule import mls_exporter
from longtls.mls.messages import (
    BasicCredential,
    Credential,
    ExtensionType,
    GroupInfo,
    KeyPackage,
    PreSharedKeyID,
    Welcome,
)
from longtls.mls.proposals import Commit, PreSharedKey, Remove
from longtls.mls.welcome import encrypt_group_info, open_welcome, sign_group_info

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls"
IMPLEMENTED = {int(c) for c in CipherSuite}
XWING = int(CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519)


def _vectors(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())
    return data


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _run_passive(v: dict[str, Any]) -> int:
    """The passive-client check of test-vectors.md: join, then follow every
    epoch, comparing epoch authenticators.  Returns the epochs followed."""
    cs = suite(v["cipher_suite"])
    kp = MLSMessage.from_bytes(_h(v["key_package"])).body
    assert isinstance(kp, KeyPackage)
    bundle = KeyPackageBundle(kp, _h(v["init_priv"]), _h(v["encryption_priv"]), _h(v["signature_priv"]))
    # The private keys are the KeyPackage's.
    assert cs.hpke_public_key(bundle.init_private_key) == kp.init_key
    assert cs.hpke_public_key(bundle.encryption_private_key) == kp.leaf_node.encryption_key
    assert cs.signature_public_key(bundle.signature_private_key) == kp.leaf_node.signature_key
    psks = {_h(p["psk_id"]): _h(p["psk"]) for p in v["external_psks"]}
    welcome = MLSMessage.from_bytes(_h(v["welcome"])).body
    assert isinstance(welcome, Welcome)
    tree = _h(v["ratchet_tree"]) if v["ratchet_tree"] is not None else None
    group = Group.join(welcome, bundle, ratchet_tree=tree, psks=psks.get)
    assert group.epoch_authenticator == _h(v["initial_epoch_authenticator"])
    for epoch in v["epochs"]:
        for proposal in epoch["proposals"]:
            group.process_proposal(MLSMessage.from_bytes(_h(proposal)))
        before = group.epoch
        group = group.process_commit(MLSMessage.from_bytes(_h(epoch["commit"]))).group
        assert group.epoch == before + 1
        assert group.epoch_authenticator == _h(epoch["epoch_authenticator"])
    return len(v["epochs"])


@pytest.mark.parametrize(("name", "total", "runnable", "epochs"), [
    # 8 scenarios per suite: with/without the tree in the Welcome, with/without PSKs.
    ("passive-client-welcome.json", 56, 16, 0),
    # 13 scenarios per suite, 2 commits each: add, remove, external and
    # resumption PSKs, GroupContextExtensions, by value and by reference.
    ("passive-client-handling-commit.json", 91, 26, 52),
])
def test_passive_client_vectors(name: str, total: int, runnable: int, epochs: int) -> None:
    vectors = _vectors(name)
    run = [v for v in vectors if v["cipher_suite"] in IMPLEMENTED]
    assert len(vectors) == total and len(run) == runnable
    # Every entry of suites 1 and 3 runs; the others are exactly the
    # suites longtls does not implement.
    assert sorted({v["cipher_suite"] for v in run}) == [1, 3]
    assert sorted({v["cipher_suite"] for v in vectors if v not in run}) == [2, 4, 5, 6, 7]
    assert sum(_run_passive(v) for v in run) == epochs


# ---------------------------------------------------------- two parties


def _pair(cipher_suite: int = 1, **kw: Any) -> tuple[Group, Group, KeyPackageBundle]:
    """Responder and initiator after the profile's initial key agreement:
    KeyPackage from the initiator, Welcome from the responder."""
    cs = suite(cipher_suite)
    bundle = create_key_package(cipher_suite, BasicCredential(b"initiator"))
    responder = Group.create(cipher_suite, BasicCredential(b"responder"), cs.generate_signature_key_pair()[0],
                             **kw)
    out = responder.commit(adds=[bundle.key_package])
    assert out.welcome is not None and out.group.epoch == 1
    welcome = MLSMessage.from_bytes(MLSMessage(out.welcome).to_bytes()).body
    assert isinstance(welcome, Welcome)
    initiator = Group.join(welcome, bundle, **kw)
    return out.group, initiator, bundle


def _wire(message: MLSMessage) -> MLSMessage:
    return MLSMessage.from_bytes(message.to_bytes())


def _agree(a: Group, b: Group) -> None:
    assert a.epoch == b.epoch and a.context == b.context
    assert a.epoch_authenticator == b.epoch_authenticator
    assert a.export(b"EXPORTER-test", b"ctx", 32) == b.export(b"EXPORTER-test", b"ctx", 32)
    assert a.tree == b.tree


def test_initial_key_agreement_commit_and_welcome() -> None:
    responder, initiator, bundle = _pair()
    _agree(responder, initiator)
    assert (responder.own_leaf, initiator.own_leaf) == (0, 1)
    peer = initiator.member(0)
    assert peer is not None and peer.credential == BasicCredential(b"responder")
    # The Add commit carried an UpdatePath (PCS from the start): the
    # responder's leaf is a commit leaf now, and the root holds a key.
    assert responder.own_leaf_node.leaf_node_source.name == "commit"
    assert responder.tree.node(1) is not None
    # The initiator's leaf is exactly its KeyPackage's (§12.4.3.1).
    assert initiator.own_leaf_node == bundle.key_package.leaf_node


def test_welcome_contents_on_the_wire() -> None:
    cs = suite(1)
    bundle = create_key_package(1, BasicCredential(b"i"))
    responder = Group.create(1, BasicCredential(b"r"), cs.generate_signature_key_pair()[0])
    out = responder.commit(adds=[bundle.key_package])
    assert out.welcome is not None
    opened = open_welcome(out.welcome, bundle)
    info = opened.group_info
    # GroupInfo: signed by the committer (leaf 0), the ratchet_tree
    # extension, the new epoch's context and confirmation tag.
    assert info.signer == 0 and info.group_context == out.group.context
    assert info.confirmation_tag == out.group.confirmation_tag
    ext = [e for e in info.extensions if e.extension_type == ExtensionType.ratchet_tree]
    assert len(ext) == 1 and ext[0].extension_data == out.group.tree.to_bytes()
    # GroupSecrets: the path secret of the common ancestor (the root of a
    # two-leaf tree) whose node key is the root's public key (§7.4).
    assert opened.group_secrets.path_secret is not None
    node_secret = cs.derive_secret(opened.group_secrets.path_secret.path_secret, b"node")
    root = out.group.tree.node(1)
    assert root is not None and cs.derive_key_pair(node_secret)[1] == root.encryption_key
    # The commit message is a PublicMessage of epoch 0 with Add + path.
    body = out.message.body
    assert isinstance(body, PublicMessage) and body.content.epoch == 0
    commit = body.content.content
    assert isinstance(commit, Commit) and commit.path is not None and len(commit.proposals) == 1


@pytest.mark.parametrize("cipher_suite", [1, 3, XWING])
def test_fifty_self_updates_alternating_sides(cipher_suite: int) -> None:
    responder, initiator, _ = _pair(cipher_suite)
    groups = [responder, initiator]
    exporters = set()
    for i in range(50):
        sender, receiver = i % 2, 1 - i % 2
        wire_format = WireFormat.mls_private_message if i % 5 == 4 else WireFormat.mls_public_message
        out = groups[sender].commit(wire_format=wire_format)
        processed = groups[receiver].process_commit(_wire(out.message))
        assert isinstance(processed, ProcessedCommit) and processed.committer == groups[sender].own_leaf
        assert processed.credential_changes == ()
        groups[sender], groups[receiver] = out.group, processed.group
        _agree(groups[0], groups[1])
        exporters.add(groups[0].export(b"EXPORTER-test", b"", 32))
        # Application data under the new epoch, both ways.
        for a, b in ((0, 1), (1, 0)):
            leaf, data = groups[b].decrypt_application(_wire(groups[a].encrypt_application(b"e%d" % i)))
            assert (leaf, data) == (groups[a].own_leaf, b"e%d" % i)
    assert groups[0].epoch == 51 and len(exporters) == 50


def test_exporter_is_the_key_schedule_formula() -> None:
    # MLS-Exporter = ExpandWithLabel(DeriveSecret(exporter_secret, label),
    # "exported", Hash(context), length) (§8.5): both sides agree, and it
    # matches the key schedule module's function of the epoch's secret.
    responder, initiator, _ = _pair()
    got = initiator.export(b"label", b"context", 40)
    assert len(got) == 40 and got == responder.export(b"label", b"context", 40)
    assert got != initiator.export(b"label", b"context2", 40)
    assert mls_exporter(initiator.cs, initiator._epoch.exporter_secret, b"label", b"context", 40) == got


def test_pending_commit_leaves_the_group_unchanged_and_crossing_commits() -> None:
    responder, initiator, _ = _pair()
    # Both send a ConnectionUpdate; the profile: the responder drops its
    # pending commit and applies the initiator's; the initiator ignores the
    # responder's.  Nothing of the dropped commit may linger.
    r_out = responder.commit()
    i_out = initiator.commit()
    assert responder.epoch == initiator.epoch == 1  # commit() changes nothing
    processed = responder.process_commit(_wire(i_out.message))
    _agree(processed.group, i_out.group)
    # The responder's dropped commit is of the old epoch: the initiator's new
    # epoch refuses it.
    with pytest.raises(MLSError, match="epoch"):
        i_out.group.process_commit(_wire(r_out.message))


def _tampered_public(message: MLSMessage, **changes: Any) -> MLSMessage:
    body = message.body
    assert isinstance(body, PublicMessage)
    return MLSMessage(replace(body, **changes))


def test_receiver_rejections() -> None:
    responder, initiator, _ = _pair()
    out = initiator.commit()
    body = out.message.body
    assert isinstance(body, PublicMessage) and body.membership_tag is not None
    # Wrong membership tag.
    bad_tag = bytes([body.membership_tag[0] ^ 1]) + body.membership_tag[1:]
    with pytest.raises(MLSError, match="membership_tag"):
        responder.process_commit(_tampered_public(out.message, membership_tag=bad_tag))
    # A tampered commit (another confirmation tag): the membership tag fails first...
    with pytest.raises(MLSError):
        responder.process_commit(_tampered_public(
            out.message, auth=replace(body.auth, confirmation_tag=b"\x00" * 32)))
    # ...and with a membership tag recomputed by an insider, the confirmation tag.
    from longtls.mls.protect import membership_tag

    forged_auth = replace(body.auth, confirmation_tag=b"\x00" * 32)
    forged = replace(body, auth=forged_auth)
    forged = replace(forged, membership_tag=membership_tag(
        responder.cs, responder._epoch.membership_key, forged.authenticated_content(), responder.context))
    with pytest.raises(MLSError, match="confirmation_tag"):
        responder.process_commit(MLSMessage(forged))
    # A commit whose path was changed after signing: the signature fails.
    commit = body.content.content
    assert isinstance(commit, Commit) and commit.path is not None
    other_path = initiator.commit().message.body
    assert isinstance(other_path, PublicMessage) and isinstance(other_path.content.content, Commit)
    swapped = replace(body, content=replace(body.content, content=other_path.content.content))
    swapped = replace(swapped, membership_tag=membership_tag(
        responder.cs, responder._epoch.membership_key, swapped.authenticated_content(), responder.context))
    with pytest.raises(MLSError, match="signature"):
        responder.process_commit(MLSMessage(swapped))
    # Garbage bytes are a DecodeError, never anything else.
    with pytest.raises(DecodeError):
        MLSMessage.from_bytes(out.message.to_bytes()[:-3])
    # After all that, the genuine commit still applies.
    _agree(responder.process_commit(_wire(out.message)).group, out.group)


def test_changed_credential_is_refused_unless_the_identity_check_allows() -> None:
    responder, initiator, _ = _pair()
    out = initiator.commit(credential=BasicCredential(b"mallory"))
    with pytest.raises(MLSError, match="credential"):
        responder.process_commit(_wire(out.message))

    seen: list[tuple[Credential, Credential]] = []

    def same_prefix(old: Credential, new: Credential) -> None:
        seen.append((old, new))
        assert isinstance(old, BasicCredential) and isinstance(new, BasicCredential)
        if not new.identity.startswith(old.identity):
            raise MLSError("identity changed")

    responder, initiator, _ = _pair(identity_check=same_prefix)
    with pytest.raises(MLSError, match="identity changed"):
        responder.process_commit(_wire(initiator.commit(credential=BasicCredential(b"mallory")).message))
    out = initiator.commit(credential=BasicCredential(b"initiator-renewed"))
    processed = responder.process_commit(_wire(out.message))
    assert processed.credential_changes == (
        (1, BasicCredential(b"initiator"), BasicCredential(b"initiator-renewed")),)
    assert seen[-1] == (BasicCredential(b"initiator"), BasicCredential(b"initiator-renewed"))


def test_credential_check_sees_every_credential() -> None:
    seen: list[bytes] = []

    def check(cred: Credential, key: bytes) -> None:
        assert isinstance(cred, BasicCredential)
        seen.append(cred.identity)
        if cred.identity == b"evil":
            raise MLSError("untrusted")

    cs = suite(1)
    responder = Group.create(1, BasicCredential(b"r"), cs.generate_signature_key_pair()[0],
                             credential_check=check)
    with pytest.raises(MLSError, match="untrusted"):
        responder.commit(adds=[create_key_package(1, BasicCredential(b"evil")).key_package])
    bundle = create_key_package(1, BasicCredential(b"i"))
    out = responder.commit(adds=[bundle.key_package])
    assert out.welcome is not None
    seen.clear()
    Group.join(out.welcome, bundle, credential_check=check)
    assert sorted(seen) == [b"i", b"r"]
    # The responder's path: the initiator's credential is judged once.
    seen.clear()
    Group.create_and_add(create_key_package(1, BasicCredential(b"i2")).key_package, BasicCredential(b"r"),
                         cs.generate_signature_key_pair()[0], credential_check=check)
    assert seen == [b"i2"]


def test_join_rejections() -> None:
    cs = suite(1)
    bundle = create_key_package(1, BasicCredential(b"i"))
    signer_priv = cs.generate_signature_key_pair()[0]
    responder = Group.create(1, BasicCredential(b"r"), signer_priv)
    out = responder.commit(adds=[bundle.key_package])
    assert out.welcome is not None
    welcome = out.welcome
    new = out.group

    def rewrap(info: GroupInfo) -> Welcome:
        """A Welcome carrying another GroupInfo under the same secrets."""
        egi = encrypt_group_info(cs, new._epoch.welcome_secret, info)
        from longtls.mls.welcome import encrypt_group_secrets

        secrets = open_welcome(welcome, bundle).group_secrets
        return Welcome(1, (encrypt_group_secrets(cs, bundle.key_package, egi, secrets),), egi)

    info = open_welcome(welcome, bundle).group_info
    # Signed by another key.
    other = sign_group_info(cs, cs.generate_signature_key_pair()[0], info)
    with pytest.raises(MLSError, match="signature"):
        Group.join(rewrap(other), bundle)
    # A wrong confirmation tag (validly signed).
    with pytest.raises(MLSError, match="confirmation_tag"):
        Group.join(rewrap(sign_group_info(cs, signer_priv, replace(info, confirmation_tag=b"\x01" * 32))),
                   bundle)
    # No tree: neither in the GroupInfo nor given.
    with pytest.raises(MLSError, match="ratchet tree"):
        Group.join(rewrap(sign_group_info(cs, signer_priv, replace(info, extensions=()))), bundle)
    # The tree given out of band instead works.
    joined = Group.join(rewrap(sign_group_info(cs, signer_priv, replace(info, extensions=()))), bundle,
                        ratchet_tree=new.tree.to_bytes())
    _agree(joined, new)
    # A tree whose hash is not the GroupContext's.
    with pytest.raises(MLSError, match="hash"):
        Group.join(rewrap(sign_group_info(cs, signer_priv, replace(
            info, group_context=replace(info.group_context, tree_hash=b"\x00" * 32)))), bundle)
    # Another KeyPackage's holder finds no entry.
    with pytest.raises(MLSError, match="no entry"):
        Group.join(welcome, create_key_package(1, BasicCredential(b"x")))


def test_application_messages_and_replays() -> None:
    responder, initiator, _ = _pair()
    msg = _wire(initiator.encrypt_application(b"hello", padding=16))
    assert isinstance(msg.body, PrivateMessage)
    assert responder.decrypt_application(msg) == (1, b"hello")
    with pytest.raises(MLSError):
        responder.decrypt_application(msg)  # generation already used
    # A message of the previous epoch does not open in the next.
    old = initiator.encrypt_application(b"old")
    out = responder.commit()
    nxt = initiator.process_commit(_wire(out.message)).group
    with pytest.raises(MLSError, match="epoch"):
        out.group.decrypt_application(_wire(old))
    assert out.group.decrypt_application(_wire(nxt.encrypt_application(b"new"))) == (1, b"new")


def test_proposal_list_rules() -> None:
    responder, initiator, bundle = _pair()
    # Path required: no proposals (or a Remove) and no path, sending...
    with pytest.raises(ValueError, match="UpdatePath"):
        responder.commit(path=False)
    # ...and receiving: an insider's validly signed and tagged empty Commit
    # without a path (§12.4.2).
    from longtls.mls.framing import FramedContent, Sender
    from longtls.mls.protect import authenticated_content, protect_public

    framed = FramedContent(initiator.group_id, initiator.epoch, Sender.member(1), b"", Commit((), None))
    content = authenticated_content(initiator.cs, initiator._signature_private_key,
                                    WireFormat.mls_public_message, framed, initiator.context, b"\x00" * 32)
    msg = protect_public(initiator.cs, content, initiator.context, initiator._epoch.membership_key)
    with pytest.raises(MLSError, match="UpdatePath"):
        responder.process_commit(MLSMessage(msg))
    # The committer may not remove itself (§12.2).
    with pytest.raises(MLSError, match="removes the committer"):
        responder.commit([Remove(0)])
    # An Add of a client already in the group.
    with pytest.raises(MLSError, match="already in the group"):
        responder.commit(adds=[bundle.key_package])
    # Two PSK proposals for one PSK; an unknown PSK.
    psk = PreSharedKey(PreSharedKeyID.external(b"id", b"n" * 32))
    with pytest.raises(MLSError, match="PreSharedKey"):
        responder.commit([psk, psk])
    with pytest.raises(MLSError, match="PSK"):
        responder.commit([psk])


def test_external_psk_and_add_without_path() -> None:
    # Both sides know an external PSK; a Commit injects it (§8.4) and a
    # Remove then needs a path: exercised on a three-member group.
    psks = {b"id": b"secret value"}
    responder, initiator, _ = _pair(psks=psks.get)
    psk = PreSharedKey(PreSharedKeyID.external(b"id", b"n" * 32))
    out = responder.commit([psk], path=False)
    body = out.message.body
    assert isinstance(body, PublicMessage) and isinstance(body.content.content, Commit)
    assert body.content.content.path is None
    nxt = initiator.process_commit(_wire(out.message)).group
    _agree(out.group, nxt)
    # A third member added without a path, then removed with one.
    third = create_key_package(1, BasicCredential(b"third"))
    out = out.group.commit(adds=[third.key_package], path=False)
    assert out.welcome is not None
    joined = Group.join(out.welcome, third, psks=psks.get)
    processed = nxt.process_commit(_wire(out.message))
    assert processed.credential_changes == ((2, None, BasicCredential(b"third")),)
    _agree(out.group, processed.group)
    _agree(out.group, joined)
    out2 = joined.commit()
    a = out.group.process_commit(_wire(out2.message)).group
    b = processed.group.process_commit(_wire(out2.message)).group
    _agree(a, out2.group)
    _agree(b, out2.group)
    out3 = a.commit([Remove(2)])
    b = b.process_commit(_wire(out3.message)).group
    _agree(b, out3.group)
    with pytest.raises(MLSError, match="removes us"):
        out2.group.process_commit(_wire(out3.message))
    assert sum(1 for _ in b.tree.members()) == 2


def test_group_repr_has_no_secrets() -> None:
    responder, _, _ = _pair()
    text = repr(responder)
    assert "epoch=1" in text and responder._epoch.exporter_secret.hex() not in text


def test_create_and_add_is_the_responder_side() -> None:
    cs = suite(3)
    bundle = create_key_package(3, BasicCredential(b"initiator"))
    out = Group.create_and_add(bundle.key_package, BasicCredential(b"responder"),
                               cs.generate_signature_key_pair()[0], allowed_suites=[1, 3])
    assert out.welcome is not None and out.group.cs.cipher_suite == 3
    joined = Group.join(out.welcome, bundle, known_group_ids=[b"another group"])
    _agree(out.group, joined)
    # The Welcome's group_id must not be one of ours (§12.4.3.1).
    with pytest.raises(MLSError, match="group_id"):
        Group.join(out.welcome, bundle, known_group_ids=[joined.group_id])
    # A suite the responder does not allow; an invalid KeyPackage.
    with pytest.raises(MLSError, match="not allowed"):
        Group.create_and_add(bundle.key_package, BasicCredential(b"r"), cs.generate_signature_key_pair()[0],
                             allowed_suites=[1])
    broken = replace(bundle.key_package, signature=b"\x00" * 64)
    with pytest.raises(MLSError, match="signature"):
        Group.create_and_add(broken, BasicCredential(b"r"), cs.generate_signature_key_pair()[0])


def test_group_context_extensions_must_be_supported() -> None:
    from longtls.mls.messages import Extension

    cs = suite(1)
    with pytest.raises(MLSError, match="extension"):
        Group.create(1, BasicCredential(b"r"), cs.generate_signature_key_pair()[0],
                     extensions=(Extension(0xFF01, b""),))


def test_added_key_package_lifetime_maximum_is_a_setting() -> None:
    # mls-rs' KeyPackages live 365 days; the default maximum (90 days,
    # §7.2's application-defined maximum) refuses them, a caller may allow more.
    cs = suite(1)
    year = create_key_package(1, BasicCredential(b"i"), lifetime=365 * 24 * 3600)
    key = cs.generate_signature_key_pair()[0]
    with pytest.raises(MLSError, match="lifetime exceeds"):
        Group.create_and_add(year.key_package, BasicCredential(b"r"), key)
    with pytest.raises(MLSError, match="lifetime exceeds"):
        Group.create(1, BasicCredential(b"r"), key).commit(adds=[year.key_package])
    out = Group.create_and_add(year.key_package, BasicCredential(b"r"), key, max_lifetime=367 * 24 * 3600)
    assert out.welcome is not None
    _agree(out.group, Group.join(out.welcome, year))


def _mutate(rng: Any, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(b))
        if rng.random() < 0.8:
            b[i] ^= 1 << rng.randrange(8)
        else:
            del b[i:i + rng.randint(1, 8)]
    return bytes(b)


def test_garbled_commits_and_welcomes_end_in_mls_errors_only() -> None:
    # Outsiders' garbage (caught at the membership tag, the AEADs or the
    # codec) and an insider's: a member that garbles its commit and then signs
    # and tags it validly reaches the deep checks (leaf signatures, parent
    # hashes, path decryption, epochs, senders).  Either way: MLSError or
    # DecodeError, never another exception, never acceptance.
    import random

    from longtls.mls.framing import FramedContent
    from longtls.mls.protect import authenticated_content, protect_public

    rng = random.Random(1305)
    responder, initiator, _ = _pair()
    for wire_format in (WireFormat.mls_public_message, WireFormat.mls_private_message):
        data = initiator.commit(wire_format=wire_format).message.to_bytes()
        for _ in range(100):
            with pytest.raises((MLSError, DecodeError)):
                responder.process_commit(MLSMessage.from_bytes(_mutate(rng, data)))
    deep = 0
    for _ in range(150):
        body = initiator.commit().message.body
        assert isinstance(body, PublicMessage)
        try:
            framed = FramedContent.from_bytes(_mutate(rng, body.content.to_bytes()))
            content = authenticated_content(initiator.cs, initiator._signature_private_key,
                                            WireFormat.mls_public_message, framed, initiator.context,
                                            body.auth.confirmation_tag)
            message = MLSMessage(protect_public(initiator.cs, content, initiator.context,
                                               initiator._epoch.membership_key))
        except (DecodeError, ValueError):
            continue  # not a FramedContent a member could send
        deep += 1
        with pytest.raises((MLSError, DecodeError)):
            responder.process_commit(_wire(message))
    assert deep > 50
    # The group is untouched by all of it.
    out = initiator.commit()
    _agree(responder.process_commit(_wire(out.message)).group, out.group)

    bundle = create_key_package(1, BasicCredential(b"i"))
    added = Group.create(1, BasicCredential(b"r"), suite(1).generate_signature_key_pair()[0]).commit(
        adds=[bundle.key_package])
    assert added.welcome is not None
    data = MLSMessage(added.welcome).to_bytes()
    for _ in range(100):
        try:
            garbled = MLSMessage.from_bytes(_mutate(rng, data)).body
        except DecodeError:
            continue
        if not isinstance(garbled, Welcome):
            continue  # the wire format was garbled: not a Welcome for join at all
        with pytest.raises((MLSError, DecodeError)):
            Group.join(garbled, bundle)
