"""MLS interop with mls-rs (AWS's Rust RFC 9420 implementation) through the
`agentvault-mls-rs-uniffi` bindings (tests/helpers/mlsrs.py).

mls-rs' messages (KeyPackage, Welcome, commits) against longtls' MLS core:
they decode with ``mls/messages.py`` / ``mls/framing.py`` and re-encode to
the same bytes; mls-rs' signatures verify with ``mls/crypto.py``; its
KeyPackageRef is the one longtls computes (RFC 9420 §5.2); a longtls
KeyPackage is added by mls-rs and longtls opens the Welcome, checks the
GroupInfo signature, the transcript hash and the confirmation tag, and
derives the same MLS-Exporter values (§8.5) as mls-rs; longtls checks the
membership tag and signature of an mls-rs self-update commit. Two mls-rs
members agreeing over 20+ epochs is the wrapper's own sanity check.

Then longtls' ``Group`` (mls/group.py) and mls-rs in one group: a KeyPackage
from either side gives a Welcome the other joins from (tree in the
GroupInfo or out of band), self-updates alternate for 24 epochs with equal
MLS-Exporter values, crossed self-updates with either side winning, a
PrivateMessage commit and application data both ways. longtls accepts mls-rs' KeyPackages only with a ``max_lifetime`` of a
year (mls-rs' lifetime; the default maximum is 90 days).

The bindings offer suite 1 only (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519):
suites 3 and X-Wing cannot be tried against mls-rs through them
(docs/mls.md, "Interop with mls-rs").
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from helpers.mlsrs import (
    SUPPORTED_SUITES,
    MlsRsClient,
    MlsRsGroup,
    binding_suite_names,
    private_message_epoch,
    require_mls_rs,
)
from longtls.errors import MLSError
from longtls.mls.crypto import suite
from longtls.mls.framing import ContentType, MLSMessage, PublicMessage, SenderType, WireFormat
from longtls.mls.group import Group
from longtls.mls.key_package import MAX_LIFETIME, create_key_package, validate_key_package
from longtls.mls.key_schedule import derive_epoch, derive_epoch_from_joiner
from longtls.mls.messages import (
    BasicCredential,
    ExtensionType,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    ProtocolVersion,
    Welcome,
    find_extension,
    parse_ratchet_tree,
)
from longtls.mls.proposals import Add, Commit
from longtls.mls.protect import unprotect_public
from longtls.mls.transcript import (
    confirmed_transcript_hash,
    interim_transcript_hash,
    transcript_inputs,
    verify_confirmation_tag,
)
from longtls.mls.tree import RatchetTree
from longtls.mls.welcome import open_welcome, verify_group_info

pytestmark = pytest.mark.interop

mls_rs = require_mls_rs()

SUITE = 0x0001
#: mls-rs makes KeyPackages valid for 365 days and the bindings cannot
#: change that; longtls' default maximum (key_package.MAX_LIFETIME) is 90
#: days, so longtls accepts mls-rs' KeyPackages here with a year and a day
#: (the ``max_lifetime`` setting of validate_key_package and Group).
MLS_RS_LIFETIME = 366 * 24 * 3600
EPOCHS = 24  # the issue asks for "at least 20 epochs"


def _decode(data: bytes) -> MLSMessage:
    """MLSMessage.from_bytes, and the re-encoding gives the same bytes."""
    message = MLSMessage.from_bytes(data)
    assert message.to_bytes() == data
    return message


def _key_package(data: bytes) -> KeyPackage:
    body = _decode(data).body
    assert isinstance(body, KeyPackage)
    return body


def _public_commit(data: bytes) -> tuple[PublicMessage, Commit]:
    message = _decode(data)
    assert message.wire_format == WireFormat.mls_public_message
    body = message.body
    assert isinstance(body, PublicMessage)
    commit = body.content.content
    assert isinstance(commit, Commit)
    return body, commit


def _leaves(tree: tuple[object, ...]) -> list[LeafNode | None]:
    leaves = tree[::2]
    assert all(leaf is None or isinstance(leaf, LeafNode) for leaf in leaves)
    return [leaf if isinstance(leaf, LeafNode) else None for leaf in leaves]


# ------------------------------------------------------------- the bindings


def test_bindings_offer_suite_1_only() -> None:
    # What these tests can cover: a release with more suites must extend them.
    assert binding_suite_names() == {"CURVE25519_AES128"}
    assert {SUITE} == SUPPORTED_SUITES
    # ... and the member really is RFC 9420's suite 1 on the wire.
    assert _key_package(MlsRsClient(b"x").key_package()).cipher_suite == SUITE
    for other in (0x0003, 0xF0A1):
        with pytest.raises(ValueError, match="no cipher suite"):
            MlsRsClient(b"x", other)


def test_two_mlsrs_members_agree_over_many_epochs() -> None:
    """The wrapper itself: add by Welcome, then self-updates from alternating
    sides, each processed by the other; exporters equal and changing."""
    alice, bob = MlsRsClient(b"alice"), MlsRsClient(b"bob")
    a = alice.create_group(b"mls-rs pair")
    assert a.epoch == 0
    _, welcome = a.add_member(bob.key_package())
    b = bob.join(welcome)
    seen = set()
    for epoch in range(1, EPOCHS + 1):
        assert a.epoch == b.epoch == epoch
        context = epoch.to_bytes(2, "big")
        secret = a.export_secret(b"longtls interop", context, 32)
        assert b.export_secret(b"longtls interop", context, 32) == secret
        assert secret not in seen
        seen.add(secret)
        committer, receiver = (a, b) if epoch % 2 else (b, a)
        receiver.process(committer.self_update())
    # A commit of an epoch the receiver has left is refused.
    stale = a.self_update()
    b.process(stale)
    with pytest.raises(mls_rs.Error):
        b.process(stale)


def test_private_message_epoch_parser() -> None:
    # version 1, wire format 2, group_id "ab" (1-byte header), epoch 7
    data = bytes.fromhex("0001" "0002" "02" "6162" "0000000000000007") + b"rest"
    assert private_message_epoch(data) == 7
    # a 2-byte header (0b01 prefix): a 64-byte group_id
    data = bytes.fromhex("0001" "0002" "4040") + bytes(64) + (300).to_bytes(8, "big")
    assert private_message_epoch(data) == 300
    with pytest.raises(ValueError):
        private_message_epoch(bytes.fromhex("00010001") + bytes(16))


# --------------------------------------------- mls-rs messages in longtls


def test_mlsrs_key_package_decodes_and_verifies_with_longtls() -> None:
    client = MlsRsClient(b"mls-rs peer")
    data = client.key_package()
    kp = _key_package(data)
    cs = suite(kp.cipher_suite)
    assert kp.version == ProtocolVersion.mls10
    leaf = kp.leaf_node
    assert leaf.credential == BasicCredential(b"mls-rs peer")
    assert leaf.signature_key == client.signature_public_key
    assert leaf.leaf_node_source == LeafNodeSource.key_package
    # RFC 9420 §10: the KeyPackage and its leaf are signed with the
    # leaf's signature key, with SignWithLabel's labels.
    assert cs.verify_with_label(leaf.signature_key, b"KeyPackageTBS", kp.tbs(), kp.signature)
    assert cs.verify_with_label(leaf.signature_key, b"LeafNodeTBS", leaf.tbs(), leaf.signature)
    assert not cs.verify_with_label(leaf.signature_key, b"LeafNodeTBS", kp.tbs(), kp.signature)
    # Everything §10.1 asks of a KeyPackage before it is added.
    validate_key_package(kp, cipher_suite=SUITE, max_lifetime=MLS_RS_LIFETIME)
    # One bit off in the signed part: the signature no longer verifies.
    flipped = bytearray(data)
    flipped[10] ^= 1  # inside init_key
    tampered = _key_package(bytes(flipped))
    with pytest.raises(MLSError):
        validate_key_package(tampered, cipher_suite=SUITE, max_lifetime=MLS_RS_LIFETIME)


def test_mlsrs_welcome_and_commits_decode_with_longtls() -> None:
    alice, bob = MlsRsClient(b"alice"), MlsRsClient(b"bob")
    group = alice.create_group(b"decode me")
    kp_bytes = bob.key_package()
    kp = _key_package(kp_bytes)
    commit_bytes, welcome_bytes = group.add_member(kp_bytes)

    # The Add commit: a PublicMessage from leaf 0 in epoch 0, no path needed.
    message, commit = _public_commit(commit_bytes)
    content = message.content
    assert (content.group_id, content.epoch) == (b"decode me", 0)
    assert content.sender.sender_type == SenderType.member and content.sender.leaf_index == 0
    assert commit.proposals == (Add(kp),)
    assert message.auth.confirmation_tag is not None and message.membership_tag is not None

    # The Welcome names bob's KeyPackage by the KeyPackageRef longtls
    # computes: RefHash("MLS 1.0 KeyPackage Reference", KeyPackage) (§5.2).
    welcome = _decode(welcome_bytes).body
    assert isinstance(welcome, Welcome) and welcome.cipher_suite == SUITE
    (entry,) = welcome.secrets
    assert entry.new_member == suite(SUITE).make_key_package_ref(kp.to_bytes())

    # A self-update from each side: an empty Commit with an UpdatePath whose
    # leaf is a commit-source leaf signed over LeafNodeTBS with the group
    # and leaf index (§7.2), sent in the epoch it leaves.
    joined = bob.join(welcome_bytes)
    for epoch, (member, leaf_index, who) in enumerate(
            [(group, 0, alice), (joined, 1, bob)], start=1):
        message, commit = _public_commit(member.self_update())
        assert message.content.epoch == epoch
        assert message.content.sender.leaf_index == leaf_index
        assert commit.proposals == () and commit.path is not None
        leaf = commit.path.leaf_node
        assert leaf.leaf_node_source == LeafNodeSource.commit
        assert leaf.signature_key == who.signature_public_key
        cs = suite(SUITE)
        assert cs.verify_with_label(leaf.signature_key, b"LeafNodeTBS",
                                    leaf.tbs(b"decode me", leaf_index), leaf.signature)
        # Two leaves: the direct path of either is the root alone.
        assert len(commit.path.nodes) == 1
        (other,) = [g for g in (group, joined) if g is not member]
        other.process(MLSMessage(message).to_bytes())


# ------------------------------------------------ longtls joins via mls-rs


def test_longtls_key_package_welcome_from_mlsrs_opens_in_longtls() -> None:
    """A longtls KeyPackage, added by mls-rs; longtls opens the Welcome and
    arrives in the same epoch: GroupInfo signature, transcript hash,
    confirmation tag, the tree, and MLS-Exporter values equal to mls-rs'."""
    cs = suite(SUITE)
    bundle = create_key_package(SUITE, BasicCredential(b"longtls"))
    alice = MlsRsClient(b"alice")
    group = alice.create_group(b"longtls joins")
    commit_bytes, welcome_bytes = group.add_member(MLSMessage(bundle.key_package).to_bytes())
    welcome = _decode(welcome_bytes).body
    assert isinstance(welcome, Welcome)

    opened = open_welcome(welcome, bundle)
    info = opened.group_info
    context = info.group_context
    assert (context.group_id, context.epoch, context.cipher_suite) == (b"longtls joins", 1, SUITE)
    assert group.epoch == 1

    # The ratchet tree travels in the GroupInfo (§12.4.3.3), and it is the
    # tree mls-rs has: alice at leaf 0, our KeyPackage's leaf at leaf 1.
    extension = find_extension(info.extensions, ExtensionType.ratchet_tree)
    assert extension is not None
    assert extension.extension_data == group.ratchet_tree()
    leaves = _leaves(parse_ratchet_tree(extension.extension_data))
    assert len(leaves) == 2
    assert leaves[1] == bundle.key_package.leaf_node
    signer = leaves[info.signer]
    assert info.signer == 0 and signer is not None
    assert signer.signature_key == alice.signature_public_key
    verify_group_info(cs, signer.signature_key, info)

    # The GroupInfo's confirmation tag is the Add commit's. Its confirmed
    # transcript hash is Hash(interim_[0] || the commit's
    # ConfirmedTranscriptHashInput) (§8.2); mls-rs computes interim_[0] as
    # §11 says (from the epoch-0 confirmation tag over the empty confirmed
    # hash, under the creator's secret epoch-0 key), not as the empty string
    # of §8.2's pseudocode, so from outside only the "not §8.2" is visible.
    message, _ = _public_commit(commit_bytes)
    confirmed_input, tag = transcript_inputs(message.authenticated_content())
    assert tag == info.confirmation_tag
    assert context.confirmed_transcript_hash != confirmed_transcript_hash(cs, b"", confirmed_input)

    # The key schedule from the joiner secret (§8): the confirmation tag and
    # the exporter agree with mls-rs.
    epoch = derive_epoch_from_joiner(cs, opened.group_secrets.joiner_secret, context.to_bytes())
    assert verify_confirmation_tag(cs, epoch.confirmation_key, context.confirmed_transcript_hash,
                                   info.confirmation_tag)
    for label, ctx, length in [(b"longtls", b"", 32), (b"EXPORTER-MLS", b"ctx", 16), (b"x", bytes(100), 64)]:
        assert epoch.export(label, ctx, length) == group.export_secret(label, ctx, length)

    # mls-rs' next commit (a self-update) carries a membership tag under
    # this epoch's membership key and alice's signature: longtls checks both.
    update_message, update = _public_commit(group.self_update())
    assert update.path is not None
    authenticated = unprotect_public(
        cs, update_message, context, epoch.membership_key,
        lambda index: leaf.signature_key if (leaf := leaves[index]) is not None else None)
    assert authenticated.content.content_type == ContentType.commit
    # ... and a wrong membership key is refused.
    with pytest.raises(MLSError, match="membership_tag"):
        unprotect_public(cs, update_message, context, epoch.sender_data_secret,
                         lambda index: signer.signature_key)


def test_transcript_and_key_schedule_chain_into_the_next_epoch() -> None:
    """mls-rs adds two longtls KeyPackages one after the other, with Add-only
    commits (no path: commit_secret is zero, §12.4). From epoch 1 as the
    first joiner sees it, longtls predicts epoch 2 and the second Welcome
    agrees: the Add's membership tag under epoch 1's key, the confirmed
    transcript hash from interim_[1] (§8.2), the joiner secret from
    init_secret_[1] (§8), the confirmation tag and the exporter."""
    cs = suite(SUITE)
    first = create_key_package(SUITE, BasicCredential(b"longtls 1"))
    second = create_key_package(SUITE, BasicCredential(b"longtls 2"))
    group = MlsRsClient(b"alice").create_group(b"chain")
    _, welcome1 = group.add_member(MLSMessage(first.key_package).to_bytes())
    body1 = _decode(welcome1).body
    assert isinstance(body1, Welcome)
    opened1 = open_welcome(body1, first)
    context1 = opened1.group_info.group_context
    epoch1 = derive_epoch_from_joiner(cs, opened1.group_secrets.joiner_secret, context1.to_bytes())
    interim1 = interim_transcript_hash(cs, context1.confirmed_transcript_hash,
                                       opened1.group_info.confirmation_tag)
    extension = find_extension(opened1.group_info.extensions, ExtensionType.ratchet_tree)
    assert extension is not None
    leaves = _leaves(parse_ratchet_tree(extension.extension_data))

    commit2, welcome2 = group.add_member(MLSMessage(second.key_package).to_bytes())
    message2, add2 = _public_commit(commit2)
    assert add2.path is None and add2.proposals == (Add(second.key_package),)
    unprotect_public(cs, message2, context1, epoch1.membership_key,
                     lambda index: leaf.signature_key if (leaf := leaves[index]) is not None else None)
    body2 = _decode(welcome2).body
    assert isinstance(body2, Welcome)
    opened2 = open_welcome(body2, second)
    context2 = opened2.group_info.group_context
    assert (context2.group_id, context2.epoch) == (b"chain", 2)
    confirmed_input2, tag2 = transcript_inputs(message2.authenticated_content())
    assert tag2 == opened2.group_info.confirmation_tag
    assert context2.confirmed_transcript_hash == confirmed_transcript_hash(cs, interim1, confirmed_input2)
    predicted = derive_epoch(cs, epoch1.init_secret, bytes(cs.nh), context2.to_bytes())
    assert predicted.joiner_secret == opened2.group_secrets.joiner_secret
    assert verify_confirmation_tag(cs, predicted.confirmation_key, context2.confirmed_transcript_hash, tag2)
    assert predicted.export(b"chain", b"", 32) == group.export_secret(b"chain", b"", 32)


def test_mlsrs_refuses_a_welcome_for_another_key_package() -> None:
    """mls-rs joins only with a Welcome for one of its own KeyPackages: one
    made for another client's KeyPackage fails."""
    alice, bob, carol = MlsRsClient(b"alice"), MlsRsClient(b"bob"), MlsRsClient(b"carol")
    group: MlsRsGroup = alice.create_group()
    _, welcome = group.add_member(bob.key_package())
    carol.key_package()
    with pytest.raises(mls_rs.Error):
        carol.join(welcome)


# ------------------------------------ longtls' Group and mls-rs in one group


def _welcome(data: bytes) -> Welcome:
    body = _decode(data).body
    assert isinstance(body, Welcome)
    return body


def _longtls_welcome(*, tree_in_welcome: bool = True) -> tuple[Group, MlsRsGroup]:
    """mls-rs' KeyPackage; longtls creates the group (§11) and commits the
    Add with an UpdatePath; mls-rs joins from longtls' Welcome. With the tree
    in the Welcome this is the two-party responder's ``create_and_add``."""
    peer = MlsRsClient(b"mls-rs")
    key_package = _key_package(peer.key_package())
    signature_key, _ = suite(SUITE).generate_signature_key_pair()
    credential = BasicCredential(b"longtls")
    if tree_in_welcome:
        out = Group.create_and_add(key_package, credential, signature_key, allowed_suites=[SUITE],
                                   group_id=b"longtls group", max_lifetime=MLS_RS_LIFETIME)
    else:
        group = Group.create(SUITE, credential, signature_key, group_id=b"longtls group")
        out = group.commit(adds=[key_package], ratchet_tree_extension=False, max_lifetime=MLS_RS_LIFETIME)
    assert out.welcome is not None
    welcome = MLSMessage(out.welcome).to_bytes()
    tree = None if tree_in_welcome else out.group.tree.to_bytes()
    return out.group, peer.join(welcome, tree)


def _mlsrs_welcome(*, tree_in_welcome: bool = True) -> tuple[Group, MlsRsGroup]:
    """longtls' KeyPackage, mls-rs creates the group and commits the Add;
    longtls joins from mls-rs' Welcome (every §12.4.3.1 check)."""
    bundle = create_key_package(SUITE, BasicCredential(b"longtls"))
    peer = MlsRsClient(b"mls-rs", ratchet_tree_extension=tree_in_welcome).create_group(b"mls-rs group")
    _, welcome = peer.add_member(MLSMessage(bundle.key_package).to_bytes())
    tree = None if tree_in_welcome else peer.ratchet_tree()
    return Group.join(_welcome(welcome), bundle, ratchet_tree=tree), peer


SETUPS: dict[str, Callable[..., tuple[Group, MlsRsGroup]]] = {
    "longtls-welcome": _longtls_welcome,
    "mlsrs-welcome": _mlsrs_welcome,
}


def _agree(ours: Group, theirs: MlsRsGroup) -> bytes:
    """Same epoch and the same MLS-Exporter value (§8.5) on both sides."""
    assert ours.epoch == theirs.epoch
    context = ours.epoch.to_bytes(4, "big")
    secret = ours.export(b"longtls mls-rs interop", context, 32)
    assert theirs.export_secret(b"longtls mls-rs interop", context, 32) == secret
    return secret


def test_default_lifetime_maximum_refuses_mlsrs_key_packages() -> None:
    """Why the longtls side passes ``max_lifetime``: mls-rs' KeyPackages
    live 365 days, longtls' default maximum (§7.2: "Applications MUST define
    a maximum total lifetime") is key_package.MAX_LIFETIME, 90 days."""
    key_package = _key_package(MlsRsClient(b"mls-rs").key_package())
    assert key_package.leaf_node.lifetime is not None
    lifetime = key_package.leaf_node.lifetime
    assert MAX_LIFETIME < lifetime.not_after - lifetime.not_before <= MLS_RS_LIFETIME
    signature_key, _ = suite(SUITE).generate_signature_key_pair()
    with pytest.raises(MLSError, match="lifetime exceeds"):
        Group.create_and_add(key_package, BasicCredential(b"longtls"), signature_key)


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("tree_in_welcome", [True, False], ids=["tree-in-welcome", "tree-out-of-band"])
def test_welcome_joins_and_exporters_agree(setup: str, tree_in_welcome: bool) -> None:
    """A KeyPackage from either side gives a Welcome the other accepts, with
    the ratchet tree in the GroupInfo or passed out of band (§12.4.3.3)."""
    ours, theirs = SETUPS[setup](tree_in_welcome=tree_in_welcome)
    assert ours.epoch == 1
    _agree(ours, theirs)
    assert RatchetTree.from_bytes(suite(SUITE), theirs.ratchet_tree()).tree_hash() == ours.context.tree_hash
    assert [leaf.credential for _, leaf in ours.tree.members()] in (
        [BasicCredential(b"longtls"), BasicCredential(b"mls-rs")],
        [BasicCredential(b"mls-rs"), BasicCredential(b"longtls")],
    )


@pytest.mark.parametrize("setup", SETUPS)
def test_self_updates_both_ways_over_many_epochs(setup: str) -> None:
    """Alternating self-updates (empty Commits with an UpdatePath), each
    processed by the other side; the exporter agrees in every epoch and is
    new in each; mls-rs' commits change no credential."""
    ours, theirs = SETUPS[setup]()
    seen = {_agree(ours, theirs)}
    for turn in range(EPOCHS):
        if turn % 2 == 0:
            out = ours.commit()
            theirs.process(out.message.to_bytes())
            ours = out.group
        else:
            processed = ours.process_commit(MLSMessage.from_bytes(theirs.self_update()))
            assert processed.credential_changes == ()
            assert processed.committer != ours.own_leaf
            ours = processed.group
        secret = _agree(ours, theirs)
        assert secret not in seen
        seen.add(secret)
    assert ours.epoch == EPOCHS + 1


@pytest.mark.parametrize("setup", SETUPS)
def test_private_message_commit_and_application_data(setup: str) -> None:
    """A longtls self-update sent as a PrivateMessage (the handshake ratchet,
    §6.3) is processed by mls-rs; application data (PrivateMessages of the
    application ratchet) flows both ways in the new epoch."""
    ours, theirs = SETUPS[setup]()
    out = ours.commit(wire_format=WireFormat.mls_private_message)
    assert out.message.wire_format == WireFormat.mls_private_message
    theirs.process(out.message.to_bytes())
    ours = out.group
    _agree(ours, theirs)
    for i in range(3):
        data = f"longtls to mls-rs {i}".encode()
        assert theirs.decrypt_application(ours.encrypt_application(data).to_bytes()) == data
        data = f"mls-rs to longtls {i}".encode()
        sender, plain = ours.decrypt_application(MLSMessage.from_bytes(theirs.encrypt_application(data)))
        assert (sender, plain) == (1 - ours.own_leaf, data)


@pytest.mark.parametrize("setup", SETUPS)
def test_crossed_self_updates_either_side_wins(setup: str) -> None:
    """Both sides commit in the same epoch (the two-party profile's
    collision): whichever commit the pair settles on, the other side
    processes it while its own is pending and drops its own, and the
    loser's commit is refused as a commit of an epoch already left."""
    ours, theirs = SETUPS[setup]()
    for turn in range(6):
        out = ours.commit()
        their_commit = theirs.self_update(apply=False)
        if turn % 2 == 0:  # longtls' commit wins
            theirs.process(out.message.to_bytes())
            ours = out.group
            with pytest.raises(MLSError):
                ours.process_commit(MLSMessage.from_bytes(their_commit))
        else:  # mls-rs' commit wins; ``out`` is dropped unused
            ours = ours.process_commit(MLSMessage.from_bytes(their_commit)).group
            theirs.process(their_commit)
            with pytest.raises(mls_rs.Error):
                theirs.process(out.message.to_bytes())
        _agree(ours, theirs)
    assert ours.epoch == 7


def test_longtls_refuses_a_tampered_mlsrs_commit() -> None:
    """A bit flipped in mls-rs' commit (its UpdatePath leaf) is refused and
    the group stays usable: the genuine commit is processed after it."""
    ours, theirs = _mlsrs_welcome()
    data = theirs.self_update()
    message, commit = _public_commit(data)
    assert commit.path is not None
    key = commit.path.leaf_node.encryption_key
    at = data.index(key)
    tampered = bytearray(data)
    tampered[at] ^= 1
    with pytest.raises(MLSError):
        ours.process_commit(MLSMessage.from_bytes(bytes(tampered)))
    ours = ours.process_commit(MLSMessage(message)).group
    _agree(ours, theirs)
