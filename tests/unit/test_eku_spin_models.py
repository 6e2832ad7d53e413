"""The working group's SPIN models of EKU over DTLS, transition by transition,
against longtls' EKU state machine (handshake/eku.py, ``transport=DTLS``).

``../shared/specs/eku-spin-model/`` holds PROMELA models of draft-13's DTLS
state machines (App. B.2): ``extended_key_update.pml`` (one initiator, one
responder) and ``extended_key_update_crossed.pml`` (both peers initiate).
This test reads both files, finds every transition of the peers' processes
(every ``::`` option of Initiator, Responder, PeerA and PeerB, with its .pml
line), and requires each to be named by a row of ``TRANSITIONS`` below.  Each
row says what the model does, where longtls does it, and replays it:

- ``eku``: the EKU state machine itself: next state, epoch change, message, error;
- ``host``: the DTLS host's part (record epochs, message_seq duplicates,
  retransmission, ACKs), replayed on the model host of helpers/eku_dtls.py,
  with the state machine asserted untouched;
- ``arbiter``: the rules of handshake/post_handshake.py (classic KeyUpdate,
  post-handshake authentication), on the real PostHandshakeArbiter;
- ``differs``: longtls does something else, for a reason given in the row
  (docs/eku-over-dtls.md); the row asserts what longtls does;
- ``absent``: not in longtls (exported authenticators), or checked by another
  test named in the row.

Finally ``spin`` itself verifies both models (slow): no errors.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.eku_dtls import ModelHost, Record, deliver, key_exchange, pair, take
from helpers.peers import require_binary
from longtls.config import Configuration
from longtls.constants import AlertDescription, EKUProfileName, HandshakeType, NamedGroup
from longtls.errors import LocalProtocolError, RemoteProtocolError
from longtls.handshake.eku import EKUAdmission, Role
from longtls.handshake.post_handshake import PostHandshakeArbiter
from longtls.wire.eku import ExtendedKeyUpdateRequest, ExtendedKeyUpdateResponse
from longtls.wire.messages import encode_handshake
from vectors.rfc8448 import specs_dir

#: The SPIN models are of draft-13's DTLS machines (App. B.2, §6).
D13 = EKUProfileName.draft_13
SINGLE = "extended_key_update.pml"
CROSSED = "extended_key_update_crossed.pml"
PEERS = ("Initiator", "Responder", "PeerA", "PeerB")


def model_dir() -> Path:
    path = specs_dir() / "eku-spin-model"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the SPIN models are read from it (set $LONGTLS_SPECS)", pytrace=False)
    return path


# -- reading the models --------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One ``::`` option of a peer process: a transition or one of its branches."""

    model: str
    proctype: str
    region: str  # START, WAIT_RESP, WAIT_ACK (the labels of the process), or LOOP
    line: int
    text: str
    top: str  # the text of the top-level option it belongs to (itself if top-level)

    @property
    def nested(self) -> bool:
        return self.text != self.top


def read_options(model: str) -> list[Option]:
    options: list[Option] = []
    proctype = ""
    region = ""
    top = ""
    for number, line in enumerate((model_dir() / model).read_text().splitlines(), 1):
        m = re.match(r"proctype (\w+)\(", line)
        if m:
            proctype = m.group(1) if m.group(1) in PEERS else ""
            region = "START" if proctype.startswith("Peer") else ("LOOP" if proctype else "")
            continue
        if line.startswith("init") or line.startswith("ltl"):
            proctype = ""
        if not proctype:
            continue
        label = re.match(r"^(WAIT_RESP|WAIT_ACK|ABORT_[AB]):", line)
        if label:
            region = label.group(1)
            continue
        m = re.match(r"^( *)::\s*(.*)$", line)
        if m is None:
            continue
        text = m.group(2).strip()
        if len(m.group(1)) == 4:
            top = text
        options.append(Option(model, proctype, region, number, text, top))
    return options


# -- scenarios: the pair brought to a model state ----------------------------------------


def at_wait_resp() -> tuple[ModelHost, ModelHost]:
    """Initiator WAIT_RESP: its Req sent (in its outbox)."""
    i, r = pair(D13)
    i.eku.start()
    return i, r


def at_wait_i_fin() -> tuple[ModelHost, ModelHost]:
    """Responder WAIT_I_FIN: the Req read, the Resp in its outbox."""
    i, r = at_wait_resp()
    deliver(i, r, "Req")
    assert r.eku.role is Role.WAIT_FINISH
    return i, r


def at_wait_ack() -> tuple[ModelHost, ModelHost]:
    """Initiator WAIT_ACK: the Resp read (rx bumped), the Fin in its outbox."""
    i, r = at_wait_i_fin()
    deliver(r, i, "Resp")
    assert i.eku.role is Role.WAIT_ACK
    return i, r


def at_responder_finished() -> tuple[ModelHost, ModelHost]:
    """Responder FINISHED with retention: the Fin read, its ACK in the outbox."""
    i, r = at_wait_ack()
    deliver(i, r, "Fin")
    assert r.eku.role is Role.IDLE
    return i, r


def raw_request(group: int = NamedGroup.x25519, key_exchange: bytes = b"\x01" * 32) -> bytes:
    return ExtendedKeyUpdateRequest(group, key_exchange).encode()


def handle(host: ModelHost, raw: bytes) -> None:
    host.eku.handle(raw[0], raw[4:], raw)


def expect_alert(alert: AlertDescription, action: Callable[[], None]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        action()
    assert info.value.alert == alert


class _ClientAuth:
    message_types: frozenset[int] = frozenset()

    def __init__(self, in_progress: bool = False) -> None:
        self.in_progress = in_progress

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        raise AssertionError("not used")

    def request(self) -> None:
        raise AssertionError("not used")


class _Engine:
    complete = True
    eku_negotiated = True


def arbiter_for(host: ModelHost, *, client_auth_in_progress: bool = False) -> PostHandshakeArbiter:
    arbiter = PostHandshakeArbiter(
        _Engine(), Configuration(is_client=host.is_client), _ClientAuth(client_auth_in_progress)  # type: ignore[arg-type]
    )
    arbiter.register_eku(host.eku)
    return arbiter


# -- the checks ---------------------------------------------------------------------


def check_initiate() -> None:
    """START -> WAIT_RESP: send Req [tag=tx], updating := 1; no epoch moves."""
    i, _ = pair(D13)
    assert i.eku.role is Role.IDLE and not i.eku.in_progress  # not initiating: nothing happens
    i.eku.start()
    req = take(i, "Req")
    assert req.epoch == i.tx == 3 and i.eku.role is Role.WAIT_RESP and i.epochs == (3, 3)


def check_app_send() -> None:
    """APP may be sent at any time, tagged with the sender's current tx, and is read."""
    for setup in (at_wait_resp, at_wait_i_fin, at_wait_ack, at_responder_finished):
        i, r = setup()
        for src, dst in ((i, r), (r, i)):
            src.send_app()
            app = deliver(src, dst, "APP")
            assert app.epoch == src.tx and dst.app_received[-1][0] == src.tx and not dst.discarded


def check_app_acceptance() -> None:
    """App. B.2.1: accept if e == rx or (retain_old && e == old_rx); the first
    APP under the new rx ends retention (the host's record layer)."""
    i, r = at_responder_finished()  # r: tx=rx=4, retains 3; i: tx=3, rx=4, retains 3
    assert r.old_rx == 3 and i.old_rx == 3
    i.send_app(b"old")
    deliver(i, r, "APP")
    assert r.app_received == [(3, b"old")] and r.old_rx == 3  # old epoch read, retention kept
    deliver(r, i, "ACK")  # under 4: the initiator's retention ends, its tx moves
    assert i.old_rx is None and i.epochs == (4, 4)
    i.send_app(b"new")
    deliver(i, r, "APP")
    assert r.app_received[-1] == (4, b"new") and r.old_rx is None  # cleared on APP at new rx
    r.receive(Record("app", 3, message=b"late", label="APP"))  # epoch 3, now retired
    assert r.discarded[-1].message == b"late" and r.app_received[-1] == (4, b"new")


def check_classic_key_update() -> None:
    """A classic KeyUpdate once EKU is negotiated: unexpected_message (draft-13 §4)."""
    for setup in (at_wait_resp, at_wait_ack):
        i, r = setup()
        for host in (i, r):
            # What dispatch() runs for every KeyUpdate before its protocol sees it.
            expect_alert(AlertDescription.unexpected_message, lambda h=host: arbiter_for(h).check_key_update(local=False))  # type: ignore[misc]


def check_unknown_subtype() -> None:
    """An ExtendedKeyUpdate with an unknown subtype: unexpected_message, in any state."""
    raw = encode_handshake(HandshakeType.extended_key_update, b"\x03")
    for setup in (at_wait_resp, at_wait_ack):
        i, r = setup()
        for host in (i, r):
            expect_alert(AlertDescription.unexpected_message, lambda h=host: handle(h, raw))  # type: ignore[misc]


def check_bad_group() -> None:
    """A KeyShareEntry for another group than the negotiated one: illegal_parameter."""
    _, r = pair(D13)
    expect_alert(AlertDescription.illegal_parameter, lambda: handle(r, raw_request(NamedGroup.secp256r1, b"\x04" * 65)))
    i, _ = at_wait_resp()
    bad = ExtendedKeyUpdateResponse(NamedGroup.secp256r1, b"\x04" * 65).encode()
    expect_alert(AlertDescription.illegal_parameter, lambda: handle(i, bad))


def check_pha_answered_by_initiator() -> None:
    """The initiator answers the peer's CertificateRequest (PHAReq -> PHAFin):
    allowed while its request is unanswered (the requests cross, draft-13 §8.3);
    in WAIT_ACK the peer has completed the update (it starts no authentication
    during one), so the request stands for the ACK (EKU.peer_completed; the
    arbiter must call it first, see docs/eku-over-dtls.md)."""
    i, _ = at_wait_resp()
    arbiter_for(i).check_client_auth_may_start(requested_by_peer=True)
    i, r = at_responder_finished()
    take(r, "ACK")  # lost
    arbiter = arbiter_for(i)
    i.eku.peer_completed()
    assert i.eku.role is Role.IDLE and i.epochs == (4, 4) and i.eku.generation == 1
    arbiter.check_client_auth_may_start(requested_by_peer=True)


def check_pha_defers_eku() -> None:
    """A Req during post-handshake authentication is deferred and acknowledged
    with an ACK (the model's "deferred-request ACK in DTLS mode"); once the
    authentication is done it is answered (the model's deferred_req)."""
    i, r = at_wait_resp()
    assert arbiter_for(r, client_auth_in_progress=True).eku_admission() is EKUAdmission.DEFER
    r.admission = EKUAdmission.DEFER  # what that arbiter answers the state machine
    deliver(i, r, "Req")
    assert r.eku.role is Role.RESPONDING and [x.label for x in r.outbox] == ["ACK"]
    assert not any(x.label == "Resp" for x in r.outbox)  # no EKU progress while PHA is pending
    deliver(r, i, "ACK")
    assert i.eku.role is Role.WAIT_RESP and i.epochs == (3, 3) and not i.unacked
    r.eku.respond_deferred()  # PHAFin arrived: answer now
    resp = take(r, "Resp")
    assert resp.epoch == 3 and r.eku.role is Role.WAIT_FINISH


def check_pha_not_during_eku() -> None:
    """No CertificateRequest of our own while our EKU runs (guard !updating)."""
    i, _ = at_wait_resp()
    with pytest.raises(LocalProtocolError):
        arbiter_for(i).check_client_auth_may_start(requested_by_peer=False)
    _, r = at_wait_i_fin()
    with pytest.raises(LocalProtocolError):
        arbiter_for(r).check_client_auth_may_start(requested_by_peer=False)
    idle, _ = pair(D13)
    arbiter_for(idle).check_client_auth_may_start(requested_by_peer=False)


def check_req_retransmission() -> None:
    """Retransmit Req while waiting, until the Resp or an ACK confirms it (§6 step 1)."""
    i, r = at_wait_resp()
    first = take(i, "Req")
    i.retransmit()
    again = take(i, "Req")
    assert again == first and again.epoch == 3 and i.eku.role is Role.WAIT_RESP
    r.admission = EKUAdmission.DEFER
    r.receive(again)
    deliver(r, i, "ACK")  # req_acked
    i.retransmit()
    assert not i.outbox


def check_resp_at_initiator() -> None:
    """recv Resp [e == rx]: derive, old_rx := rx, retain, rx++, send Fin [tag=old tx], WAIT_ACK."""
    i, r = at_wait_i_fin()
    deliver(r, i, "Resp")
    fin = take(i, "Fin")
    assert i.eku.role is Role.WAIT_ACK and i.epochs == (3, 4) and i.old_rx == 3 and fin.epoch == 3
    assert not i.unacked.get(0)  # the Resp acknowledged the Req implicitly (§6 step 3)


def check_resp_bad_epoch() -> None:
    """A record under an epoch the receiver cannot read is discarded (e != rx -> skip)."""
    i, r = at_wait_i_fin()
    resp = take(r, "Resp")
    i.receive(resp._replace(epoch=7))
    assert i.discarded and i.eku.role is Role.WAIT_RESP and i.epochs == (3, 3)


def check_resp_not_acceptable() -> None:
    """!acc -> unexpected: a response longtls cannot take (here: no request of ours)."""
    _, r = at_wait_i_fin()
    resp = take(r, "Resp").message
    expect_alert(AlertDescription.unexpected_message, lambda: handle(r, resp))  # r has no request


def check_stray_resp() -> None:
    """Crossed model: a Resp while not initiating is ignored; longtls: unexpected_message.
    Unreachable with in-order delivery: a peer answers our request only if it
    had not started its own, and then it cannot start one (in progress)."""
    i, r = at_wait_i_fin()
    resp = take(r, "Resp").message
    handle(i, resp)
    expect_alert(AlertDescription.unexpected_message, lambda: handle(i, resp))  # now in WAIT_ACK


def check_ack_in_wait_resp() -> None:
    """recv ACK [e == rx] in WAIT_RESP: delivery of Req confirmed, no epoch change; other epochs: discarded."""
    i, r = at_wait_resp()
    r.admission = EKUAdmission.DEFER
    deliver(i, r, "Req")
    ack = take(r, "ACK")
    i.receive(ack._replace(epoch=9))
    assert i.discarded and i.unacked
    i.receive(ack)
    assert not i.unacked and i.eku.role is Role.WAIT_RESP and i.epochs == (3, 3)


def check_fin_retransmission() -> None:
    """Retransmit Fin [tag=old tx] until the ACK (§6 step 7)."""
    i, r = at_wait_ack()
    first = take(i, "Fin")
    i.retransmit()
    again = take(i, "Fin")
    assert again == first and again.epoch == 3 and i.epochs == (3, 4)
    r.receive(again)
    deliver(r, i, "ACK")
    i.retransmit()
    assert not i.outbox and i.eku.role is Role.IDLE


def check_ack_completes_initiator() -> None:
    """recv ACK [e == rx] in WAIT_ACK: tx := rx, retain_old := 0, done; a late ACK is ignored."""
    i, r = pair(D13)
    i.eku.start()
    req = deliver(i, r, "Req")
    deliver(r, i, "Resp")
    deliver(i, r, "Fin")
    i.eku.message_acknowledged(req.message)  # a late ACK of the request: nothing
    assert i.eku.role is Role.WAIT_ACK and i.epochs == (3, 4)
    ack = deliver(r, i, "ACK")
    assert ack.epoch == 4
    assert i.epochs == (4, 4) and i.old_rx is None and i.eku.role is Role.IDLE and i.eku.generation == 1


def check_dup_resp_in_wait_ack() -> None:
    """A repeated Resp in WAIT_ACK changes nothing (the host knows its message_seq)."""
    i, r = at_wait_i_fin()
    resp = take(r, "Resp")
    i.receive(resp)
    i.receive(resp)
    assert i.eku.role is Role.WAIT_ACK and i.epochs == (3, 4)


def check_req_in_wait_ack() -> None:
    """Model: a Req in WAIT_ACK is a retransmission of the lower crossing request
    (ignored) or else unexpected.  longtls: a retransmission is known by its
    message_seq and changes nothing (the host ACKs it again); a new request
    proves the peer completed our update (our Fin arrived), so it stands for
    the lost ACK and is answered (Decision; never reached in the model's runs,
    which hold one update)."""
    a, b = pair(D13)
    a.eku.start()
    b.eku.start()
    req_a, req_b = take(a, "Req"), take(b, "Req")
    high, low = (a, b) if key_exchange(req_a, D13) > key_exchange(req_b, D13) else (b, a)
    high_req, low_req = (req_a, req_b) if high is a else (req_b, req_a)
    high.receive(low_req)
    take(high, "ACK")  # lost: the lower request will come again
    low.receive(high_req)
    deliver(low, high, "Resp")
    assert high.eku.role is Role.WAIT_ACK and high.epochs == (3, 4)
    high.receive(low_req)  # the retransmission
    assert high.eku.role is Role.WAIT_ACK and high.epochs == (3, 4)
    assert [x.label for x in high.outbox] == ["Fin", "ACK", "Fin"]  # re-ACKed; Fin resent
    i, r = at_responder_finished()
    take(r, "ACK")  # lost
    r.eku.start()
    deliver(r, i, "Req")
    assert i.eku.generation == 1 and i.epochs == (4, 4) and i.eku.role is Role.WAIT_FINISH


def check_fin_in_wait_ack() -> None:
    """Model: a stray Fin at the initiator is discarded.  longtls: unexpected_message
    (no peer sends a Fin to a side that initiated: stricter, never reached benignly)."""
    i, _ = at_wait_ack()
    fin = take(i, "Fin").message
    expect_alert(AlertDescription.unexpected_message, lambda: handle(i, fin))


def check_responder_answers_req() -> None:
    """START: recv Req [e == rx] -> send Resp [tag=tx] (or defer: ACK the Req)."""
    _, r = at_wait_i_fin()
    resp = take(r, "Resp")
    assert resp.epoch == 3 and r.epochs == (3, 3) and r.eku.role is Role.WAIT_FINISH
    i, r = at_wait_resp()
    r.admission = EKUAdmission.DEFER
    deliver(i, r, "Req")
    assert [(x.label, x.epoch) for x in r.outbox] == [("ACK", 3)] and r.eku.role is Role.RESPONDING


def check_dup_req_at_responder() -> None:
    """A repeated Req: the Resp again (updating) or, while deferred, the ACK again."""
    i, r = at_wait_i_fin()
    first = take(r, "Resp")
    i.retransmit()
    deliver(i, r, "Req")
    assert take(r, "Resp") == first and r.eku.role is Role.WAIT_FINISH
    i, r = at_wait_resp()
    r.admission = EKUAdmission.DEFER
    deliver(i, r, "Req")
    take(r, "ACK")
    i.retransmit()
    deliver(i, r, "Req")
    assert [x.label for x in r.outbox] == ["ACK"] and r.eku.role is Role.RESPONDING


def check_req_bad_epoch() -> None:
    """Req under an epoch the responder cannot read: discarded."""
    i, r = at_wait_resp()
    r.receive(take(i, "Req")._replace(epoch=8))
    assert r.discarded and r.eku.role is Role.IDLE


def check_crossed_tie_break() -> None:
    """App. B.2.1: peer < local -> ignore (longtls also ACKs it, so its sender stops
    retransmitting); peer == local -> unexpected_message; peer > local -> abandon, respond."""
    a, b = pair(D13)
    a.eku.start()
    b.eku.start()
    req_a, req_b = take(a, "Req"), take(b, "Req")
    high, low = (a, b) if key_exchange(req_a, D13) > key_exchange(req_b, D13) else (b, a)
    high_req, low_req = (req_a, req_b) if high is a else (req_b, req_a)
    high.receive(low_req)
    assert high.eku.role is Role.WAIT_RESP and [x.label for x in high.outbox] == ["ACK"]
    low.receive(high_req)
    assert low.eku.role is Role.WAIT_FINISH and [x.label for x in low.outbox] == ["Resp"]
    own = high_req.message
    expect_alert(AlertDescription.unexpected_message, lambda: handle(high, own))


def check_new_req_while_responding() -> None:
    """Crossed model: a Req with another key_exchange while responding: unexpected
    (draft-13 §11.3: a new update before the previous one completed)."""
    _, r = at_wait_i_fin()
    expect_alert(AlertDescription.unexpected_message, lambda: handle(r, raw_request()))


def check_deferred_resp_retransmission() -> None:
    """A deferred Resp, once sent, is retransmitted until acknowledged (by the Fin)."""
    i, r = at_wait_resp()
    r.admission = EKUAdmission.DEFER
    deliver(i, r, "Req")
    take(r, "ACK")
    r.eku.respond_deferred()
    first = take(r, "Resp")
    r.retransmit()
    assert take(r, "Resp") == first
    i.receive(first)
    deliver(i, r, "Fin")
    assert not r.unacked  # the Fin acknowledged the Resp implicitly


def check_fin_at_responder() -> None:
    """recv Fin [e == rx] while updating: old_rx := rx, retain, rx++, tx++, ACK [tag=new tx], done."""
    i, r = at_wait_ack()
    deliver(i, r, "Fin")
    ack = take(r, "ACK")
    assert r.epochs == (4, 4) and r.old_rx == 3 and ack.epoch == 4
    assert r.eku.role is Role.IDLE and r.eku.generation == 1


def check_dup_fin_at_responder() -> None:
    """A repeated Fin during retention (the ACK was lost): the ACK again, under the new tx;
    after retention (or under an unreadable epoch) the record is discarded."""
    i, r = at_responder_finished()
    take(r, "ACK")
    i.retransmit()
    deliver(i, r, "Fin")
    assert [(x.label, x.epoch) for x in r.outbox] == [("ACK", 4)] and r.eku.generation == 1
    r.old_rx = None  # retention over
    i.retransmit()
    r.outbox.clear()
    deliver(i, r, "Fin")
    assert r.discarded and not r.outbox


def check_ack_at_responder() -> None:
    """An ACK of the responder's own message (the Resp) moves nothing."""
    _, r = at_wait_i_fin()
    resp = r.unacked[0]
    r.eku.message_acknowledged(resp.message)
    assert r.eku.role is Role.WAIT_FINISH and r.epochs == (3, 3)


def check_bounded_wait() -> None:
    """Crossed model: retries exhausted -> abort.  longtls: rekey_timeout bounds the
    whole exchange (the connection closes with KeyUpdateTimeoutError); the state
    machine has a deadline while it waits for the peer."""
    for setup in (at_wait_resp, at_wait_i_fin, at_wait_ack):
        i, r = pair(D13)
        i.configuration.rekey_timeout = r.configuration.rekey_timeout = 5.0
        i.eku.start()
        waiting = i
        if setup is not at_wait_resp:
            deliver(i, r, "Req")
            waiting = r
        if setup is at_wait_ack:
            deliver(r, i, "Resp")
            waiting = i
        assert waiting.eku.deadline == 5.0, setup.__name__


def check_exported_authenticators() -> None:
    """Not in longtls yet (handshake/exported_authenticators.py is planned); the
    models make EA independent of EKU, so there is nothing of EKU to replay."""


def check_early_eku() -> None:
    """EKU before the peer's Finished: the engines (shared by TLS and DTLS) reject it;
    tests/unit/test_eku.py::test_eku_message_before_the_peer_finished_is_unexpected."""
    source = Path(__file__).with_name("test_eku.py").read_text()
    assert "def test_eku_message_before_the_peer_finished_is_unexpected" in source


# -- the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """Model transitions (``::`` options) and what longtls does with them."""

    name: str
    layer: str  # eku, host, arbiter, differs, absent
    top: str  # regex on the top-level option
    nested: str | None  # regex on nested options (None: the top line and all its branches)
    check: Callable[[], None]
    models: tuple[str, ...] = (SINGLE, CROSSED)
    regions: tuple[str, ...] = ()  # () = any
    proctypes: tuple[str, ...] = PEERS

    def claims(self, option: Option) -> bool:
        if option.model not in self.models or option.proctype not in self.proctypes:
            return False
        if self.regions and option.region not in self.regions:
            return False
        if not re.search(self.top, option.top):
            return False
        if not option.nested:
            return self.nested is None or self.nested == ""
        return self.nested is None or (bool(self.nested) and re.search(self.nested, option.text) is not None)


INIT = ("Initiator", "PeerA", "PeerB")
RESP = ("Responder", "PeerA", "PeerB")
EA = r"EA_TRIGGER|EA_SPONT|EAReq|EAFin"

TRANSITIONS = [
    Transition("initiate (START -> WAIT_RESP)", "eku", r"INITIATE_|^else -> skip", None, check_initiate,
               models=(CROSSED,), regions=("START",)),
    Transition("APP send at any time", "host", r"app_quota", None, check_app_send),
    Transition("APP acceptance and retention", "host", r"_RECV\(APP", None, check_app_acceptance),
    Transition("classic KeyUpdate", "arbiter", r"_RECV\(KeyUpdate", None, check_classic_key_update),
    Transition("unknown EKU subtype", "eku", r"_RECV\(UnknownEKU", None, check_unknown_subtype),
    Transition("EKU before Finished", "absent", r"_RECV\(EarlyEKU", None, check_early_eku),
    Transition("wrong KeyShareEntry group", "eku", r"_RECV\(BadGroup", None, check_bad_group),
    Transition("exported authenticators", "absent", EA, None, check_exported_authenticators),
    Transition("ACK of a spontaneous EAFin", "absent", r"_RECV\(ACK", r"ea_spont_pending", check_exported_authenticators),
    Transition("PHAReq answered by the initiator", "arbiter", r"_RECV\(PHAReq", None, check_pha_answered_by_initiator),
    Transition("PHA completion; deferred Req answered", "arbiter",
               r"_RECV\(PHAFin|deferred_req", None, check_pha_defers_eku),
    Transition("Req during PHA: deferred and ACKed", "eku", r"_RECV\(Req", r"^PHA_PENDING ->", check_pha_defers_eku),
    Transition("EKU frozen while PHA is pending (the model's PHA_PENDING -> skip)", "differs",
               r"_RECV\((Resp|Fin|ACK)", r"^PHA_PENDING -> skip", check_pha_defers_eku),
    Transition("no own PHA during EKU", "arbiter", r"ENABLE_PHA && PHA_TRIGGER", None, check_pha_not_during_eku),
    Transition("Req retransmission", "host", r"updating.*initiated.*req_retries > 0|updating_i && !req_acked_i",
               None, check_req_retransmission),
    Transition("Resp at the initiator", "eku", r"_RECV\(Resp", r"^else ->$", check_resp_at_initiator,
               regions=("WAIT_RESP",), proctypes=INIT),
    Transition("Resp at the initiator (top)", "eku", r"_RECV\(Resp", "", check_resp_at_initiator,
               regions=("WAIT_RESP",), proctypes=INIT),
    Transition("Resp under an unreadable epoch", "host", r"_RECV\(Resp", r"e != rx", check_resp_bad_epoch),
    Transition("Resp not acceptable", "eku", r"_RECV\(Resp", r"!acc", check_resp_not_acceptable),
    Transition("stray Resp while not initiating", "differs", r"_RECV\(Resp", r"!updating \|\| !initiated",
               check_stray_resp),
    Transition("ACK in WAIT_RESP", "eku", r"_RECV\(ACK", r"e == rx.*req_acked|^else -> skip",
               check_ack_in_wait_resp, regions=("WAIT_RESP",), proctypes=INIT),
    Transition("ACK in WAIT_RESP (top)", "eku", r"_RECV\(ACK", "", check_ack_in_wait_resp,
               regions=("WAIT_RESP",), proctypes=INIT),
    Transition("Fin retransmission", "host", r"fin_retries > 0", None, check_fin_retransmission),
    Transition("ACK completes the initiator", "eku", r"_RECV\(ACK", None, check_ack_completes_initiator,
               regions=("WAIT_ACK",)),
    Transition("repeated Resp in WAIT_ACK", "host", r"_RECV\(Resp", None, check_dup_resp_in_wait_ack,
               regions=("WAIT_ACK",)),
    Transition("Req in WAIT_ACK", "differs", r"_RECV\(Req", None, check_req_in_wait_ack, regions=("WAIT_ACK",)),
    Transition("Fin in WAIT_ACK", "differs", r"_RECV\(Fin", None, check_fin_in_wait_ack, regions=("WAIT_ACK",)),
    Transition("PHAFin at the initiator in WAIT_ACK", "arbiter", r"_RECV\(PHAFin", None, check_pha_defers_eku,
               regions=("WAIT_ACK",)),
    Transition("Req at the responder", "eku", r"_RECV\(Req", r"^else ->$|!updating|^\(\(e == rx\) \|\|",
               check_responder_answers_req, regions=("LOOP", "WAIT_RESP")),
    Transition("Req at the responder (top)", "eku", r"_RECV\(Req", "", check_responder_answers_req,
               regions=("LOOP", "WAIT_RESP")),
    Transition("repeated Req at the responder", "host", r"_RECV\(Req",
               r"updating_r\)|deferred_resp|kx == peer_kx_active|else -> [AB]2[AB]_SEND\(Resp", check_dup_req_at_responder,
               regions=("LOOP", "WAIT_RESP")),
    Transition("Req under an unreadable epoch", "host", r"_RECV\(Req", r"e != rx|^else ->\s*$|^else -> skip",
               check_req_bad_epoch, regions=("LOOP", "WAIT_RESP")),
    Transition("crossed requests tie-break", "eku", r"_RECV\(Req", r"initiated\)|kx < local_kx|kx == local_kx|^else ->$",
               check_crossed_tie_break, models=(CROSSED,), regions=("WAIT_RESP",)),
    Transition("another Req while responding", "eku", r"_RECV\(Req", r"unexpected = true", check_new_req_while_responding,
               models=(CROSSED,), regions=("WAIT_RESP",)),
    Transition("deferred Resp (re)transmission", "host", r"deferred_resp.*resp_retries", None,
               check_deferred_resp_retransmission),
    Transition("Fin at the responder", "eku", r"_RECV\(Fin", r"updating.*e == rx", check_fin_at_responder,
               regions=("LOOP", "WAIT_RESP")),
    Transition("Fin at the responder (top)", "eku", r"_RECV\(Fin", "", check_fin_at_responder,
               regions=("LOOP", "WAIT_RESP")),
    Transition("repeated Fin at the responder", "host", r"_RECV\(Fin",
               r"retain_old.*old_rx|!updating_r && !retain_old_r|^else ->", check_dup_fin_at_responder,
               regions=("LOOP", "WAIT_RESP")),
    Transition("ACK at the responder", "eku", r"_RECV\(ACK", r"^else -> skip", check_ack_at_responder,
               models=(SINGLE,), proctypes=("Responder",)),
    Transition("ACK at the responder (top)", "eku", r"_RECV\(ACK", "", check_ack_at_responder,
               proctypes=("Responder",)),
    Transition("ACK at PeerB outside WAIT_ACK", "eku", r"_RECV\(ACK", r"^else -> skip", check_ack_at_responder,
               models=(CROSSED,), regions=("WAIT_RESP",)),
    Transition("bounded retries, then abort", "differs", r"req_retries == 0|resp_wait_retries|fin_retries == 0|^\(updating && !initiated &&$",
               None, check_bounded_wait, models=(CROSSED,)),
]


def _options() -> list[Option]:
    return read_options(SINGLE) + read_options(CROSSED)


def test_every_model_transition_is_in_the_table() -> None:
    options = _options()
    assert len(options) > 200, "the models were not read"
    unclaimed = [o for o in options if not any(t.claims(o) for t in TRANSITIONS)]
    assert not unclaimed, "transitions of the SPIN models without a row:\n" + "\n".join(
        f"{o.model}:{o.line} {o.proctype}/{o.region}: {o.text}" for o in unclaimed
    )


@pytest.mark.parametrize("transition", TRANSITIONS, ids=[t.name for t in TRANSITIONS])
def test_transition(transition: Transition) -> None:
    lines = [f"{o.model}:{o.line}" for o in _options() if transition.claims(o)]
    assert lines, f"{transition.name}: names no transition of the models (renamed?)"
    transition.check()


#: Bounds that keep the state spaces small enough for a test: one lost datagram
#: in the single-initiator model, none in the crossed one (its interleavings
#: of two initiators are the point), one retransmission each.  With the
#: models' defaults (2 drops, 4 retries) pan needs tens of GB and many minutes.
_BOUNDS = {
    SINGLE: ("-DDROPS=1", "-DREQ_RETRIES=1", "-DFIN_RETRIES=1"),
    CROSSED: ("-DDROPS=0", "-DREQ_RETRIES=1", "-DFIN_RETRIES=1", "-DRESP_WAIT_RETRIES=1"),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "claims"),
    [
        (SINGLE, ("no_unexpected", "no_illegal_parameter", "epoch_consistency")),
        (CROSSED, ("no_unexpected", "epoch_consistency")),
    ],
    ids=["single", "crossed"],
)
def test_spin_verifies_the_model(model: str, claims: tuple[str, ...], tmp_path: Path) -> None:
    """``spin -a`` + gcc + ``./pan -a -N claim`` as spin-check.sh runs them, in
    bitstate mode (-b, as the script runs the crossed model; 2^22 bits) and
    with a memory cap: no errors, and the search went deep enough to reach
    both peers' completion (depth > 100)."""
    spin = require_binary("spin")
    gcc = shutil.which("gcc") or pytest.fail("gcc is needed to build SPIN's verifier", pytrace=False)
    shutil.copy(model_dir() / model, tmp_path / model)
    subprocess.run([spin, "-a", *_BOUNDS[model], model], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    subprocess.run(
        [gcc, "-O2", "-DMEMLIM=1500", "-o", "pan", "pan.c"], cwd=tmp_path, check=True, capture_output=True, timeout=300
    )
    for claim in claims:
        run = subprocess.run(
            ["./pan", "-a", "-N", claim, "-b", "-w22"], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        found = re.search(r"depth reached (\d+), errors: (\d+)", run.stdout)
        assert found is not None, f"{model} {claim}: no verdict\n{run.stdout[-3000:]}{run.stderr[-1000:]}"
        assert found.group(2) == "0", f"{model} {claim}:\n{run.stdout[-3000:]}"
        assert int(found.group(1)) > 100, f"{model} {claim}: search too shallow\n{run.stdout[-3000:]}"
