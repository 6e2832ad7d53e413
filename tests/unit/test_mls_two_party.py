"""The two-party profile state machine (mls/two_party.py, docs/mls-tls.md §7).

A fake ``TwoPartyGroup`` stands in for the MLS group: its "epoch secret" is a
hash chain over the commits applied, so two fakes agree exactly when they
applied the same commits in the same order, and MLS-Exporter is an HMAC of
it.  A small link carries each direction's messages and records in order,
each record tagged with the traffic secret that protected it: a record read
under another secret is a misread the test reports.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
from collections import deque
from dataclasses import dataclass, field

import pytest

from longtls.constants import AlertDescription, CipherSuite, ContentType, MLSTLSExtensionType
from longtls.errors import LocalProtocolError, MLSError, RemoteProtocolError
from longtls.events import Direction
from longtls.mls.crypto import suite
from longtls.mls.framing import MLSMessage
from longtls.mls.group import Group
from longtls.mls.group_adapter import MLSTLSCreator, MLSTLSGroup, MLSTLSJoiner
from longtls.mls.key_package import create_key_package, validate_key_package
from longtls.mls.messages import (
    BasicCredential,
    ExtensionType,
    KeyPackage,
    RequiredCapabilities,
    find_extension,
)
from longtls.mls.two_party import (
    Action,
    Established,
    InstallKey,
    PeerUpdateIgnored,
    Role,
    SendMessage,
    SessionState,
    TwoPartyGroup,
    TwoPartySession,
    UpdateCompleted,
    UpdateDropped,
    record_suite,
)
from longtls.record.tls_layer import TLSRecordLayer
from longtls.wire.mls_tls import (
    MLSTLSClientHello,
    MLSTLSConnectionUpdate,
    MLSTLSEpochKeyUpdate,
    MLSTLSResumptionRequest,
    MLSTLSServerHello,
    decode_mls_tls_handshake,
    encode_mls_tls,
)

COMMIT_HEADER = bytes.fromhex("00010001")  # MLSMessage: mls10, mls_public_message


class FakeGroup:
    """A group whose state is a hash chain of the commits it applied."""

    def __init__(self, state: bytes, epoch: int, own: bytes, peer: bytes, suite: int = 1) -> None:
        self.state, self._epoch, self.own, self._peer, self.suite = state, epoch, own, peer, suite
        self.pending: bytes | None = None
        self.discarded = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def cipher_suite(self) -> int:
        return self.suite

    @property
    def peer_identity(self) -> bytes:
        return self._peer

    def export(self, label: bytes, context: bytes, length: int) -> bytes:
        assert length <= 32
        return hmac.digest(self.state, label + b"|" + context, "sha256")[:length]

    def create_self_update(self, identity: bytes | None = None) -> bytes:
        assert self.pending is None
        who = self.own if identity is None else identity
        self.pending = COMMIT_HEADER + self._epoch.to_bytes(8, "big") + bytes((len(who),)) + who + os.urandom(16)
        return self.pending

    def merge_pending(self) -> int:
        assert self.pending is not None
        self._apply(self.pending)
        self.pending = None
        return self._epoch

    def discard_pending(self) -> None:
        assert self.pending is not None
        self.pending = None
        self.discarded += 1

    def process_commit(self, message: bytes) -> int:
        if message[:4] != COMMIT_HEADER or int.from_bytes(message[4:12], "big") != self._epoch:
            raise MLSError("commit for another epoch")
        who = message[13 : 13 + message[12]]
        self._apply(message)
        self._peer = who  # a real group would refuse; the session must notice
        return self._epoch

    def _apply(self, commit: bytes) -> None:
        self.state = hashlib.sha256(self.state + commit).digest()
        self._epoch += 1


class FakeJoiner:
    def __init__(self, identity: bytes = b"initiator") -> None:
        self.identity = identity

    def key_package(self) -> bytes:
        return bytes.fromhex("00010005") + self.identity

    def join(self, welcome: bytes) -> TwoPartyGroup:
        if welcome[:4] != bytes.fromhex("00010003"):
            raise MLSError("not a Welcome")
        return FakeGroup(welcome[4:36], 1, self.identity, welcome[36:])


class FakeCreator:
    def __init__(self, identity: bytes = b"responder") -> None:
        self.identity = identity

    def create(self, key_package: bytes) -> tuple[TwoPartyGroup, bytes]:
        if key_package[:4] != bytes.fromhex("00010005"):
            raise MLSError("not a KeyPackage")
        state = os.urandom(32)
        group = FakeGroup(state, 1, self.identity, key_package[4:])
        return group, bytes.fromhex("00010003") + state + self.identity


def exporter(group: TwoPartyGroup, label: bytes) -> bytes:
    return group.export(label, b"", 32)


# -- a link: two parties, one ordered stream per direction -----------------------


@dataclass
class Party:
    session: TwoPartySession
    send_key: bytes | None = None
    receive_key: bytes | None = None
    send_epoch: int = 0
    receive_epoch: int = 0
    out: deque[tuple[str, bytes, bytes | None]] = field(default_factory=deque)
    sent_data: list[bytes] = field(default_factory=list)
    received_data: list[bytes] = field(default_factory=list)
    log: list[Action] = field(default_factory=list)

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            self.log.append(action)
            if isinstance(action, SendMessage):
                # Through the real codec, so what crosses the link is bytes.
                self.out.append(("handshake", encode_mls_tls(action.message), self.send_key))
            elif isinstance(action, InstallKey):
                if action.direction is Direction.send:
                    self.send_key, self.send_epoch = action.traffic_secret, action.epoch
                else:
                    self.receive_key, self.receive_epoch = action.traffic_secret, action.epoch

    def send_data(self, data: bytes) -> None:
        assert self.session.may_send_records
        self.sent_data.append(data)
        self.out.append(("data", data, self.send_key))


def deliver(sender: Party, receiver: Party) -> None:
    """One record from ``sender`` to ``receiver``, opened under the receiver's current key."""
    kind, payload, key = sender.out.popleft()
    assert key == receiver.receive_key, "a record was read under the wrong key"
    if kind == "data":
        receiver.received_data.append(payload)
    else:
        receiver.apply(receiver.session.receive(decode_mls_tls_handshake(payload)))


def drain(a: Party, b: Party) -> None:
    while a.out or b.out:
        if a.out:
            deliver(a, b)
        if b.out:
            deliver(b, a)


def established() -> tuple[Party, Party]:
    initiator = Party(TwoPartySession.initiator(FakeJoiner()))
    responder = Party(TwoPartySession.responder(FakeCreator()))
    initiator.apply(initiator.session.start())
    drain(initiator, responder)
    return initiator, responder


def assert_agree(i: Party, r: Party) -> None:
    gi, gr = i.session.group, r.session.group
    assert gi is not None and gr is not None
    assert gi.epoch == gr.epoch == i.send_epoch == i.receive_epoch == r.send_epoch == r.receive_epoch
    client = exporter(gi, b"MLS-TLS c ap traffic")
    server = exporter(gi, b"MLS-TLS s ap traffic")
    assert client != server
    assert exporter(gr, b"MLS-TLS c ap traffic") == client
    # The initiator is the client (docs/mls-tls.md §5).
    assert i.send_key == r.receive_key == client
    assert r.send_key == i.receive_key == server


# -- phase 1: ClientHello / ServerHello -----------------------------------------


def test_initial_key_agreement() -> None:
    i, r = established()
    assert i.session.state is r.session.state is SessionState.CONNECTED
    assert_agree(i, r)
    assert Established(1) in i.log and Established(1) in r.log
    # The responder sends its ServerHello in plaintext, then switches (§6 of the doc).
    sends = [a for a in r.log if isinstance(a, (SendMessage, InstallKey))]
    assert isinstance(sends[0], SendMessage) and isinstance(sends[0].message, MLSTLSServerHello)
    assert [a.direction for a in sends[1:] if isinstance(a, InstallKey)] == [Direction.send, Direction.receive]
    i.send_data(b"ping")
    r.send_data(b"pong")
    drain(i, r)
    assert r.received_data == [b"ping"] and i.received_data == [b"pong"]


def test_no_records_before_keys_and_handshake_order_enforced() -> None:
    initiator = TwoPartySession.initiator(FakeJoiner())
    responder = TwoPartySession.responder(FakeCreator())
    assert not initiator.may_send_records and not responder.may_send_records
    with pytest.raises(LocalProtocolError):
        initiator.start_update()
    with pytest.raises(RemoteProtocolError) as info:
        responder.receive(MLSTLSEpochKeyUpdate(1))
    assert info.value.alert is AlertDescription.unexpected_message
    assert responder.state is SessionState.FAILED
    with pytest.raises(LocalProtocolError):
        responder.receive(MLSTLSClientHello(b"\x00\x01\x00\x05x"))
    initiator.start()
    with pytest.raises(LocalProtocolError):
        initiator.start()
    with pytest.raises(RemoteProtocolError) as info:
        initiator.receive(MLSTLSClientHello(b"\x00\x01\x00\x05x"))
    assert info.value.alert is AlertDescription.unexpected_message


def test_a_second_client_hello_is_unexpected() -> None:
    _, r = established()
    with pytest.raises(RemoteProtocolError) as info:
        r.session.receive(MLSTLSClientHello(b"\x00\x01\x00\x05again"))
    assert info.value.alert is AlertDescription.unexpected_message


def test_resumption_is_refused_with_handshake_failure() -> None:
    responder = TwoPartySession.responder(FakeCreator())
    with pytest.raises(RemoteProtocolError) as info:
        responder.receive(MLSTLSResumptionRequest(COMMIT_HEADER + b"x"))
    assert info.value.alert is AlertDescription.handshake_failure


def test_a_bad_key_package_fails_the_responder() -> None:
    responder = TwoPartySession.responder(FakeCreator())
    with pytest.raises(MLSError):
        responder.receive(MLSTLSClientHello(b"\x00\x01\x00\x01not a key package"))
    assert responder.state is SessionState.FAILED


# -- phase 2: one update, each side ------------------------------------------------


@pytest.mark.parametrize("committer", ["initiator", "responder"])
def test_update_rules(committer: str) -> None:
    i, r = established()
    a, b = (i, r) if committer == "initiator" else (r, i)
    old_a_send, old_b_send = a.send_key, b.send_key
    a.apply(a.session.start_update())
    # §5: no second ConnectionUpdate while waiting; and (docs §7) no records at all.
    assert a.session.waiting_for == 2 and not a.session.may_send_records and not a.session.may_start_update
    with pytest.raises(LocalProtocolError):
        a.session.start_update()
    # The ConnectionUpdate left under the old key.
    assert a.out[-1][2] == old_a_send
    b.send_data(b"before the update")
    deliver(a, b)  # b processes the commit
    # b answered EpochKeyUpdate(2) under its old key, then switched both keys.
    kinds = [type(x).__name__ for x in b.log[-4:]]
    assert kinds == ["SendMessage", "InstallKey", "InstallKey", "UpdateCompleted"]
    answer = b.log[-4]
    assert isinstance(answer, SendMessage) and answer.message == MLSTLSEpochKeyUpdate(2)
    assert b.out[-1][2] == old_b_send and b.send_epoch == b.receive_epoch == 2
    assert b.log[-1] == UpdateCompleted(2, by_us=False)
    b.send_data(b"after the update")
    drain(a, b)
    assert a.log[-1] == UpdateCompleted(2, by_us=True)
    assert a.session.may_send_records and a.session.waiting_for is None
    assert a.received_data == [b"before the update", b"after the update"]
    assert_agree(i, r)
    assert old_a_send not in (a.send_key, b.receive_key)


def test_epoch_key_update_must_name_the_pending_epoch() -> None:
    i, _r = established()
    i.apply(i.session.start_update())
    with pytest.raises(RemoteProtocolError) as info:
        i.session.receive(MLSTLSEpochKeyUpdate(3))
    assert info.value.alert is AlertDescription.illegal_parameter
    assert i.session.state is SessionState.FAILED
    group = i.session.group
    assert group is not None and group.epoch == 1  # nothing merged


def test_epoch_key_update_without_an_update_is_unexpected() -> None:
    _i, r = established()
    with pytest.raises(RemoteProtocolError) as info:
        r.session.receive(MLSTLSEpochKeyUpdate(1))
    assert info.value.alert is AlertDescription.unexpected_message


def test_an_invalid_commit_fails_the_session_and_installs_nothing() -> None:
    _i, r = established()
    group = r.session.group
    assert isinstance(group, FakeGroup)
    bad = COMMIT_HEADER + (7).to_bytes(8, "big") + b"\x01x"  # built for another epoch
    with pytest.raises(MLSError):
        r.session.receive(MLSTLSConnectionUpdate(bad))
    assert r.session.state is SessionState.FAILED and group.epoch == 1


@pytest.mark.parametrize("victim", ["initiator", "responder"])
def test_a_commit_that_changes_the_peers_credential_is_refused(victim: str) -> None:
    i, r = established()
    committer, receiver = (r, i) if victim == "initiator" else (i, r)
    group = committer.session.group
    assert isinstance(group, FakeGroup)
    commit = group.create_self_update(identity=b"mallory")
    with pytest.raises(MLSError) as info:
        receiver.session.receive(MLSTLSConnectionUpdate(commit))
    assert info.value.alert is AlertDescription.bad_certificate
    # No key of the new epoch was handed out.
    assert receiver.send_epoch == receiver.receive_epoch == 1


# -- collisions (§5) ---------------------------------------------------------------


@pytest.mark.parametrize("first_delivered", ["to_initiator", "to_responder"])
def test_crossed_updates_the_initiators_wins(first_delivered: str) -> None:
    i, r = established()
    i.apply(i.session.start_update())
    r.apply(r.session.start_update())
    responder_group = r.session.group
    assert isinstance(responder_group, FakeGroup)
    if first_delivered == "to_initiator":
        deliver(r, i)  # the initiator ignores the responder's update and keeps waiting
        assert i.log[-1] == PeerUpdateIgnored(2) and i.session.waiting_for == 2
        deliver(i, r)
    else:
        deliver(i, r)  # the responder drops its own and applies the initiator's
        deliver(r, i)  # its stale ConnectionUpdate: ignored
        assert PeerUpdateIgnored(2) in i.log
    assert UpdateDropped(2) in r.log and responder_group.discarded == 1
    assert UpdateCompleted(2, by_us=False) in r.log
    drain(i, r)
    assert UpdateCompleted(2, by_us=True) in i.log
    assert_agree(i, r)
    # The epoch is the initiator's commit: the responder's was never applied.
    initiator_group = i.session.group
    assert isinstance(initiator_group, FakeGroup) and initiator_group.state == responder_group.state


def test_update_right_after_answering_one() -> None:
    # b answers a's update and at once starts its own: a sees EKU(2) then CU(2->3).
    i, r = established()
    r.apply(r.session.start_update())
    deliver(r, i)
    i.apply(i.session.start_update())
    assert i.session.waiting_for == 3
    drain(i, r)
    assert_agree(i, r)
    assert i.session.epoch == 3


# -- many updates, random crossings, data both ways --------------------------------


def test_a_thousand_updates_with_random_crossings() -> None:
    rng = random.Random(13)
    i, r = established()
    parties = (i, r)
    completed = crossings = 0
    counter = 0
    while completed < 1000:
        for p in parties:
            if p.session.may_start_update and rng.random() < 0.3:
                p.apply(p.session.start_update())
            if p.session.may_send_records and rng.random() < 0.6:
                counter += 1
                p.send_data(counter.to_bytes(4, "big"))
        for sender, receiver in ((i, r), (r, i)):
            for _ in range(rng.randrange(3)):
                if sender.out:
                    before = len(receiver.log)
                    deliver(sender, receiver)
                    new = receiver.log[before:]
                    completed += sum(1 for a in new if isinstance(a, UpdateCompleted) and not a.by_us)
                    crossings += sum(1 for a in new if isinstance(a, (PeerUpdateIgnored, UpdateDropped)))
    drain(i, r)
    assert_agree(i, r)
    assert i.session.epoch is not None and i.session.epoch > 1000
    # Every epoch change counted once per side; crossings happened, both kinds.
    assert any(isinstance(a, PeerUpdateIgnored) for a in i.log)
    assert any(isinstance(a, UpdateDropped) for a in r.log)
    assert crossings > 20
    # Byte-exact, in order, both ways.
    assert r.received_data == i.sent_data and i.received_data == r.sent_data
    assert len(i.sent_data) > 500 and len(r.sent_data) > 500


# -- record keys -----------------------------------------------------------------------


def test_record_suite_of_each_mls_suite() -> None:
    assert record_suite(0x0001).suite is CipherSuite.TLS_AES_128_GCM_SHA256
    assert record_suite(0x0003).suite is CipherSuite.TLS_CHACHA20_POLY1305_SHA256
    assert record_suite(0xF0A1).suite is CipherSuite.TLS_AES_128_GCM_SHA256
    for unimplemented in (0x0002, 0x0004, 0x0005, 0x0006, 0x0007, 0xF0A2):
        with pytest.raises(MLSError):
            record_suite(unimplemented)


def test_install_key_reprs_hide_the_secret() -> None:
    i, _ = established()
    installs = [a for a in i.log if isinstance(a, InstallKey)]
    assert installs and all(a.traffic_secret.hex() not in repr(a) for a in installs)
    assert "traffic_secret" not in repr(installs[0])


def test_session_around_an_existing_group() -> None:
    group = FakeGroup(b"\x07" * 32, 9, b"me", b"you", suite=3)
    session = TwoPartySession(Role.RESPONDER, group=group)
    keys = session.established_keys()
    assert keys == [
        InstallKey(Direction.send, 9, exporter(group, b"MLS-TLS s ap traffic")),
        InstallKey(Direction.receive, 9, exporter(group, b"MLS-TLS c ap traffic")),
    ]
    assert session.may_start_update


# -- over two real MLS groups (mls/group_adapter.py) ------------------------------------


def real_pair(cipher_suite: int = 1, *, initiator_alpn: tuple[bytes, ...] = (),
              responder_alpn: tuple[bytes, ...] = ()) -> tuple[Party, Party]:

    signature_key = suite(cipher_suite).generate_signature_key_pair()[0]
    joiner = MLSTLSJoiner(cipher_suite, BasicCredential(b"initiator"), alpn_protocols=initiator_alpn)
    creator = MLSTLSCreator(BasicCredential(b"responder"), signature_key, alpn_protocols=responder_alpn)
    i = Party(TwoPartySession.initiator(joiner))
    r = Party(TwoPartySession.responder(creator))
    i.apply(i.session.start())
    drain(i, r)
    return i, r


@pytest.mark.parametrize("cipher_suite", [1, 3, 0xF0A1])
def test_real_groups_handshake_and_updates_with_crossings(cipher_suite: int) -> None:
    i, r = real_pair(cipher_suite)
    assert_agree_real(i, r, 1)
    rng = random.Random(cipher_suite)
    updates = 20 if cipher_suite == 1 else 4
    while True:
        gi = i.session.group
        assert isinstance(gi, MLSTLSGroup)
        if gi.epoch > updates:
            break
        # Sometimes both start at once: a crossing the initiator wins.
        starters = [p for p in (i, r) if p.session.may_start_update and rng.random() < 0.7] or [i]
        for p in starters:
            if p.session.may_start_update:
                p.apply(p.session.start_update())
        for p in (i, r):
            if p.session.may_send_records:
                p.send_data(os.urandom(8))
        drain(i, r)
    assert_agree_real(i, r, i.session.epoch or 0)
    if cipher_suite == 1:  # crossings happened, and went the initiator's way
        assert any(isinstance(a, PeerUpdateIgnored) for a in i.log)
        assert any(isinstance(a, UpdateDropped) for a in r.log)
    assert r.received_data == i.sent_data and i.received_data == r.sent_data


def assert_agree_real(i: Party, r: Party, epoch: int) -> None:
    gi, gr = i.session.group, r.session.group
    assert isinstance(gi, MLSTLSGroup) and isinstance(gr, MLSTLSGroup)
    assert gi.epoch == gr.epoch == epoch
    assert gi.group.epoch_authenticator == gr.group.epoch_authenticator
    # The record secrets are MLS-Exporter outputs of the epoch, computed here
    # from the group's exporter with the draft's labels; initiator = client.
    client = gi.group.export(b"MLS-TLS c ap traffic", b"", 32)
    server = gr.group.export(b"MLS-TLS s ap traffic", b"", 32)
    assert i.send_key == r.receive_key == client and r.send_key == i.receive_key == server
    assert gi.peer_identity != gr.peer_identity


def test_real_groups_carry_the_mls_tls_marker_and_alpn() -> None:
    i, r = real_pair(initiator_alpn=(b"h2", b"echo"), responder_alpn=(b"echo", b"h2"))
    gi, gr = i.session.group, r.session.group
    assert isinstance(gi, MLSTLSGroup) and isinstance(gr, MLSTLSGroup)
    assert gi.alpn == gr.alpn == b"echo"  # the responder's preference, as in TLS
    context = gi.group.context
    marker = find_extension(context.extensions, MLSTLSExtensionType.mls_tls)
    assert marker is not None and marker.extension_data == b"MLS-TLS"
    required = find_extension(context.extensions, ExtensionType.required_capabilities)
    assert required is not None
    assert MLSTLSExtensionType.mls_tls in RequiredCapabilities.from_bytes(required.extension_data).extension_types
    alpn = find_extension(context.extensions, MLSTLSExtensionType.mls_tls_alpn)
    assert alpn is not None and alpn.extension_data == bytes.fromhex("0005") + b"\x04echo"  # RFC 7301 §3.1
    leaf = gi.group.own_leaf_node
    assert find_extension(leaf.extensions, MLSTLSExtensionType.mls_tls) is not None


def test_real_groups_alpn_without_overlap_is_no_application_protocol() -> None:
    with pytest.raises(MLSError) as info:
        real_pair(initiator_alpn=(b"h2",), responder_alpn=(b"echo",))
    assert info.value.alert is AlertDescription.no_application_protocol


def test_a_key_package_without_the_marker_is_refused() -> None:
    plain = create_key_package(1, BasicCredential(b"messaging client"))
    creator = MLSTLSCreator(BasicCredential(b"responder"), suite(1).generate_signature_key_pair()[0])
    session = TwoPartySession.responder(creator)
    with pytest.raises(MLSError, match="MLS-TLS"):
        session.receive(MLSTLSClientHello(MLSMessage(plain.key_package).to_bytes()))


def test_a_welcome_to_a_group_without_the_marker_is_refused() -> None:
    joiner = MLSTLSJoiner(1, BasicCredential(b"initiator"))
    session = TwoPartySession.initiator(joiner)
    hello = session.start()[0]
    assert isinstance(hello, SendMessage) and isinstance(hello.message, MLSTLSClientHello)
    kp = MLSMessage.from_bytes(hello.message.key_package).body
    assert isinstance(kp, KeyPackage)
    validate_key_package(kp)
    # A responder that is not MLS-TLS: a plain group, no marker in its context.
    group = Group.create(1, BasicCredential(b"other app"), suite(1).generate_signature_key_pair()[0])
    welcome = group.commit(adds=[kp]).welcome
    assert welcome is not None
    with pytest.raises(MLSError, match="not an MLS-TLS group"):
        session.receive(MLSTLSServerHello(MLSMessage(welcome).to_bytes()))


def test_real_groups_refuse_a_changed_credential() -> None:
    i, r = real_pair()
    gi = i.session.group
    assert isinstance(gi, MLSTLSGroup)
    commit = gi.group.commit(credential=BasicCredential(b"mallory")).message.to_bytes()
    with pytest.raises(MLSError, match="credential"):
        r.session.receive(MLSTLSConnectionUpdate(commit))
    assert r.session.state is SessionState.FAILED and r.send_epoch == 1


class _Established:
    """The ReadPolicy of a channel whose keys come from MLS: no TLS handshake."""

    complete = True
    application_data_allowed = True
    change_cipher_spec_allowed = False

    def skip_early_data_record(self, length: int) -> bool:
        return False

    def skip_undecryptable(self, length: int, records_opened: int) -> bool:
        return False


def test_record_layer_keyed_from_the_installed_secrets() -> None:
    # docs/mls-tls.md §5: TLS 1.3 records under the exported secrets, one
    # sequence number per direction, reset with every new key.
    i, r = real_pair(3)
    layers = {id(i): TLSRecordLayer(_Established(), is_client=True),
              id(r): TLSRecordLayer(_Established(), is_client=False)}
    li, lr = layers[id(i)], layers[id(r)]
    # The hellos in plaintext records (§6), the ClientHello's with version 0x0301.
    hellos = [encode_mls_tls(a.message) for p in (i, r) for a in p.log if isinstance(a, SendMessage)][:2]
    li.send(ContentType.HANDSHAKE, hellos[0])
    wire = li.data_to_send()
    assert wire[:3] == bytes((22, 3, 1)) and wire[5] == 242
    lr.feed(wire)
    assert lr.next_record() == (22, hellos[0])
    lr.send(ContentType.HANDSHAKE, hellos[1])
    wire = lr.data_to_send()
    assert wire[:3] == bytes((22, 3, 3))
    li.feed(wire)
    assert li.next_record() == (22, hellos[1])
    for p in (i, r):
        layer = layers[id(p)]
        group = p.session.group
        assert isinstance(group, MLSTLSGroup) and p.send_key and p.receive_key
        layer.set_write_secret(record_suite(group.cipher_suite), p.send_key)
        layer.set_read_secret(record_suite(group.cipher_suite), p.receive_key)
    for n in range(3):
        li.send(ContentType.APPLICATION_DATA, b"to responder %d" % n)
    lr.feed(li.data_to_send())
    assert [lr.next_record() for _ in range(3)] == [(23, b"to responder %d" % n) for n in range(3)]
    assert li.write is not None and li.write.suite.suite is CipherSuite.TLS_CHACHA20_POLY1305_SHA256
    # One update; the new keys start at sequence number 0 and the old ones no longer open.
    i.apply(i.session.start_update())
    drain(i, r)
    suite_info = record_suite(3)
    assert i.send_key and i.receive_key and r.send_key and r.receive_key
    li.set_write_secret(suite_info, i.send_key)
    lr.set_read_secret(suite_info, r.receive_key)
    assert li.write is not None and li.write.sequence_number == 0
    li.send(ContentType.APPLICATION_DATA, b"epoch 2")
    lr.feed(li.data_to_send())
    assert lr.next_record() == (23, b"epoch 2")
    stale = TLSRecordLayer(_Established(), is_client=True)
    stale.set_read_secret(suite_info, r.send_key)  # the wrong direction's secret
    li.send(ContentType.APPLICATION_DATA, b"x")
    stale.feed(li.data_to_send())
    with pytest.raises(RemoteProtocolError) as info:
        stale.next_record()
    assert info.value.alert is AlertDescription.bad_record_mac


def test_responder_refuses_a_suite_it_does_not_allow() -> None:
    joiner = MLSTLSJoiner(3, BasicCredential(b"initiator"))
    creator = MLSTLSCreator(BasicCredential(b"responder"), suite(1).generate_signature_key_pair()[0],
                            allowed_suites=(1,))
    hello = TwoPartySession.initiator(joiner).start()[0]
    assert isinstance(hello, SendMessage)
    with pytest.raises(MLSError) as info:
        TwoPartySession.responder(creator).receive(hello.message)
    assert info.value.alert is AlertDescription.handshake_failure


def test_hellos_must_carry_the_right_mls_message() -> None:
    i, _ = real_pair()
    hello = next(a.message for a in i.log if isinstance(a, SendMessage))
    assert isinstance(hello, MLSTLSClientHello)
    group = i.session.group
    assert isinstance(group, MLSTLSGroup)
    commit = group.group.commit().message.to_bytes()
    # A KeyPackage where the Welcome belongs, and the reverse.
    joiner = MLSTLSJoiner(1, BasicCredential(b"initiator"))
    session = TwoPartySession.initiator(joiner)
    session.start()
    with pytest.raises(MLSError, match="Welcome"):
        session.receive(MLSTLSServerHello(hello.key_package))
    creator = MLSTLSCreator(BasicCredential(b"responder"), suite(1).generate_signature_key_pair()[0])
    with pytest.raises(MLSError, match="KeyPackage"):
        TwoPartySession.responder(creator).receive(MLSTLSClientHello(commit))


def test_mutated_connection_updates_fail_cleanly() -> None:
    # Whatever the bytes, a ConnectionUpdate is applied or refused with a
    # protocol error carrying an alert, and a refused one changes nothing.
    i, r = real_pair()
    gi, gr = i.session.group, r.session.group
    assert isinstance(gi, MLSTLSGroup) and isinstance(gr, MLSTLSGroup)
    commit = gi.group.commit().message.to_bytes()
    rng = random.Random(9420)
    for _ in range(150):
        data = bytearray(commit)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        session = TwoPartySession(Role.RESPONDER, group=MLSTLSGroup(gr.group, initiator_leaf=1, alpn=None))
        try:
            session.receive(MLSTLSConnectionUpdate(bytes(data)))
        except RemoteProtocolError as exc:
            assert exc.alert in (AlertDescription.decode_error, AlertDescription.illegal_parameter,
                                 AlertDescription.decrypt_error, AlertDescription.bad_certificate)
            assert session.state is SessionState.FAILED
    assert gr.epoch == 1
