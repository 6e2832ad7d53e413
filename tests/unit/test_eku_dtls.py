"""Extended Key Update over DTLS 1.3: the state machine (handshake/eku.py) with
``transport=DTLS``, driven through a model DTLS host pair (helpers/eku_dtls.py:
epochs per direction, retention of the old receive epoch, message_seq, ACKs,
and a network the test controls record by record).

- The epoch tables of the texts themselves, read from the spec files: draft-13
  §6 ("Example DTLS 1.3 Extended Key Update: Epoch Changes") and the 2025-10
  copy's Figure 6, replayed step by step, both ends' (tx, rx) asserted after
  every row, with either side as the initiator; draft-05 (whose DTLS section
  names no flow) against the table of docs/eku-over-dtls.md.
- ACKs: deferred responses acknowledged with an ACK, late ACKs ignored, a lost
  ACK keeping the initiator on its old send epoch until it arrives.
- Crossed requests, retransmitted (duplicate) messages, and a seeded lossy
  link (loss, duplication, reordering) over many updates.
- Generation 1's secrets, from each text's formula with "dtls13" labels.
"""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from helpers.eku_dtls import (
    APPLICATION_EPOCH,
    ModelHost,
    Record,
    deliver,
    flush,
    key_exchange,
    pair,
    take,
)
from longtls.constants import AlertDescription, EKUProfileName, NamedGroup
from longtls.crypto.groups import get_group
from longtls.errors import LocalProtocolError, RemoteProtocolError
from longtls.events import KeyUpdateCompleted, KeyUpdateRejected, Side
from longtls.handshake.eku import EKUAdmission, Role
from longtls.handshake.eku_profiles import PROFILES
from vectors.rfc8448 import specs_dir

D13, D2510, D05 = EKUProfileName.draft_13, EKUProfileName.draft_2025_10, EKUProfileName.draft_05
ALL = list(EKUProfileName)

# -- the texts' epoch tables --------------------------------------------------------

_ROW = re.compile(r"^\s*\|([^|]+)\|\s*(\d+)/(\d+) -> (\d+)/(\d+)\s*\|\s*(\d+)/(\d+) -> (\d+)/(\d+)\s*\|")
_LABELS = {"req": "Req", "resp": "Resp", "Fin": "Fin", "NKU": "NKU", "ACK": "ACK", "APP": "APP"}

Row = tuple[str, bool, tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


def parse_epoch_table(text: str) -> list[Row]:
    """Rows of an epoch table in the drafts' notation: ``| Fin  ---> | 3/4 -> 3/4 | 3/3 -> 4/4 |``.

    Each row: (message label, sent by the initiator, initiator's tx/rx before,
    after, responder's tx/rx before, after).  The drafts' client is the
    initiator and "-->" goes from it to the responder.
    """
    rows: list[Row] = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m is None:
            continue
        cell = m.group(1).strip()
        from_initiator = not cell.startswith("<")
        word = cell.strip("<->").strip()
        n = [int(g) for g in m.groups()[1:]]
        rows.append((_LABELS[word], from_initiator, (n[0], n[1]), (n[2], n[3]), (n[4], n[5]), (n[6], n[7])))
    return rows


def spec_table(filename: str) -> list[Row]:
    path = specs_dir() / filename
    if not path.exists():
        pytest.fail(f"spec text {path} is missing: the tables are read from it (set $LONGTLS_SPECS)", pytrace=False)
    rows = parse_epoch_table(path.read_text(encoding="utf-8"))
    assert len(rows) >= 8, f"no epoch table found in {path}"
    return rows


#: draft-05 has no DTLS flow (§7 only asks to retain the old keys).  Decision
#: (docs/eku-over-dtls.md): its four messages run the DTLS steps of its own
#: revision, draft-2025-10 §6, which its step 5 ("After receiving the
#: NewKeyUpdate message from the responder, the initiator MUST update its
#: traffic keys") already implies; the same notation as the drafts' tables.
DRAFT05_TABLE = """
| APP ------------>  | 3/3 -> 3/3     | 3/3 -> 3/3   |
| <------------ APP  | 3/3 -> 3/3     | 3/3 -> 3/3   |
| req -------------> | 3/3 -> 3/3     | 3/3 -> 3/3   |
| <------------ resp | 3/3 -> 3/3     | 3/3 -> 3/3   |
| NKU  ------------> | 3/3 -> 3/3     | 3/3 -> 3/4   |
| <------------- NKU | 3/3 -> 4/4     | 3/4 -> 3/4   |
| ACK -------------> | 4/4 -> 4/4     | 3/4 -> 4/4   |
| <------------- APP | 4/4 -> 4/4     | 4/4 -> 4/4   |
| APP -------------> | 4/4 -> 4/4     | 4/4 -> 4/4   |
"""


def tables() -> dict[EKUProfileName, list[Row]]:
    return {
        D13: spec_table("draft-ietf-tls-extended-key-update-13.md"),
        D2510: spec_table("draft-ietf-tls-extended-key-update-2025-10-23.txt"),
        D05: parse_epoch_table(DRAFT05_TABLE),
    }


def replay(rows: list[Row], initiator: ModelHost, responder: ModelHost) -> list[Record]:
    """Play each row: the sender sends the row's message (application data and
    the first request are sent on command; every other message must be the one
    the state machines produced), the network delivers it, and both ends'
    epochs must be the row's."""
    sent = []
    for step, (label, from_initiator, i_before, i_after, r_before, r_after) in enumerate(rows):
        where = f"row {step} ({label}, {'I->R' if from_initiator else 'R->I'})"
        assert (initiator.epochs, responder.epochs) == (i_before, r_before), where
        src, dst = (initiator, responder) if from_initiator else (responder, initiator)
        if label == "APP":
            src.send_app()
        elif label == "Req":
            src.eku.start()
        record = deliver(src, dst, label)
        # A record goes under its sender's current send epoch: the texts'
        # "tagged with OLD tx" for Fin/NKU and "ACK (tag=new)".
        assert record.epoch == (i_before if from_initiator else r_before)[0], where
        assert not dst.discarded, f"{where}: the receiver could not read epoch {record.epoch}"
        assert (initiator.epochs, responder.epochs) == (i_after, r_after), where
        sent.append(record)
    assert not initiator.outbox and not responder.outbox
    return sent


def test_the_spec_tables_are_read() -> None:
    """The parser reads the texts' tables as printed (so the replays below test the texts)."""
    t = tables()
    assert [r[0] for r in t[D13]] == ["APP", "APP", "Req", "Resp", "Fin", "ACK", "APP", "APP"]
    assert [r[0] for r in t[D2510]] == ["APP", "APP", "Req", "Resp", "NKU", "NKU", "ACK", "APP", "APP"]
    # draft-13 §6: "Step 6: responder bumps BOTH tx and rx on Fin-in".
    assert t[D13][4] == ("Fin", True, (3, 4), (3, 4), (3, 3), (4, 4))
    # draft-2025-10 Figure 6: "Step 8: initiator bumps BOTH tx and rx on NKU-in".
    assert t[D2510][5] == ("NKU", False, (3, 3), (4, 4), (3, 4), (3, 4))


@pytest.mark.parametrize("initiator_is_client", [True, False], ids=["client-initiates", "server-initiates"])
@pytest.mark.parametrize("profile", ALL)
def test_epoch_table_step_by_step(profile: EKUProfileName, initiator_is_client: bool) -> None:
    initiator, responder = pair(profile, initiator_is_client=initiator_is_client)
    records = replay(tables()[profile], initiator, responder)
    labels = [r.label for r in records if r.label != "APP"]
    if PROFILES[profile].three_messages:
        assert labels == ["Req", "Resp", "Fin", "ACK"]
    else:
        assert labels == ["Req", "Resp", "NKU", "NKU", "ACK"]
    # Both ends completed generation 1 and moved to the same secrets, each
    # direction paired (the initiator's send = the responder's receive).
    for host in (initiator, responder):
        assert host.eku.role is Role.IDLE and host.eku.generation == 1 and host.completed == 1
        done = [e for e in host.events if isinstance(e, KeyUpdateCompleted)]
        assert [(e.generation, e.initiator) for e in done] == [
            (1, Side.client if initiator_is_client else Side.server)
        ]
    e = APPLICATION_EPOCH + 1
    assert initiator.tx_secrets[e] == responder.rx_secrets[e]
    assert responder.tx_secrets[e] == initiator.rx_secrets[e]
    assert initiator.tx_secrets[e] != responder.tx_secrets[e]
    assert initiator.eku.exporter_secret == responder.eku.exporter_secret
    # Every EKU message was acknowledged, explicitly or implicitly: nothing
    # is left to retransmit on either side.
    assert not initiator.unacked and not responder.unacked


def test_draft13_responder_keeps_its_send_epoch_after_its_response() -> None:
    """Over TLS the draft-13 responder switches its send keys right after its
    response (§5 step 3); over DTLS it does not (§6: "Sent under OLD epoch.
    Server does NOT bump yet."), and its data keeps the old epoch until the Finish."""
    initiator, responder = pair(D13)
    initiator.eku.start()
    deliver(initiator, responder, "Req")
    assert responder.eku.role is Role.WAIT_FINISH and responder.epochs == (3, 3)
    responder.send_app(b"between")
    deliver(responder, initiator, "Resp")
    assert initiator.epochs == (3, 4) and initiator.old_rx == 3
    # The responder's data sent under epoch 3 after its response still reads:
    # the initiator retains epoch 3 (§6 "receivers MUST retain the pre-update keying material").
    deliver(responder, initiator, "APP")
    assert initiator.app_received == [(3, b"between")] and not initiator.discarded


# -- the secrets, from the texts' formulas ------------------------------------------------

INITIATOR_X25519 = bytes(range(1, 33))
RESPONDER_X25519 = bytes(range(101, 133))


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def _expand_label(secret: bytes, label: bytes, context: bytes) -> bytes:
    """HKDF-Expand-Label (RFC 9846 §7.1) with DTLS's "dtls13" prefix (RFC 9147 §5.9), 32 bytes."""
    full = b"dtls13" + label
    info = struct.pack(">H", 32) + bytes([len(full)]) + full + bytes([len(context)]) + context
    return _hmac(secret, info + b"\x01")  # one HKDF-Expand block is 32 bytes for SHA-256


@pytest.mark.parametrize("profile", ALL)
def test_secrets_follow_the_texts_with_dtls13_labels(profile: EKUProfileName, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generation 1's traffic secrets over DTLS, from each text's formula written
    out here (draft-13 §6 key schedule; draft-2025-10 §7; draft-05 §5) with the
    "dtls13" label prefix, equal the secrets the hosts switched to."""
    group = get_group(NamedGroup.x25519)
    shares = iter([group.from_private_bytes(INITIATOR_X25519), group.from_private_bytes(RESPONDER_X25519)])
    monkeypatch.setattr(group, "generate", lambda: next(shares))
    main, transcript_hash = b"\x11" * 32, b"\x22" * 32
    initiator, responder = pair(profile, main_secret=main, handshake_hash=transcript_hash)
    initiator.eku.start()
    request = deliver(initiator, responder, "Req").message
    response = deliver(responder, initiator, "Resp").message
    flush(initiator, responder)
    shared = X25519PrivateKey.from_private_bytes(INITIATOR_X25519).exchange(
        X25519PrivateKey.from_private_bytes(RESPONDER_X25519).public_key()
    )
    if profile is D13:
        derived, client_label, server_label = b"derived", b"c ap traffic", b"s ap traffic"
        context = _sha256(transcript_hash + request + response)  # transcript_hash_1
    else:
        derived, client_label, server_label = b"key derived", b"c ap traffic2", b"s ap traffic2"
        context = _sha256(request + response)
    salt = _expand_label(main, derived, _sha256(b""))
    next_main = _hmac(salt, shared)  # HKDF-Extract(salt, shared secret)
    client = _expand_label(next_main, client_label, context)
    server = _expand_label(next_main, server_label, context)
    e = APPLICATION_EPOCH + 1
    assert initiator.tx_secrets[e] == responder.rx_secrets[e] == client  # the initiator is the client
    assert responder.tx_secrets[e] == initiator.rx_secrets[e] == server


# -- ACKs --------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [D13, D2510])
def test_deferred_response_is_acknowledged_then_sent(profile: EKUProfileName) -> None:
    """draft-13 / 2025-10 §6 step 2: a responder that defers "MUST acknowledge
    receipt of the key_update_request with an ACK" and sends the response
    later; the ACK confirms delivery only and moves no epoch."""
    initiator, responder = pair(profile)
    responder.admission = EKUAdmission.DEFER
    initiator.eku.start()
    deliver(initiator, responder, "Req")
    assert responder.eku.role is Role.RESPONDING
    assert [r.label for r in responder.outbox] == ["ACK"]
    ack = deliver(responder, initiator, "ACK")
    assert ack.epoch == 3 and ack.acks == (0,)
    # The request is delivered: no more retransmission, and no epoch moved.
    assert not initiator.unacked
    assert initiator.eku.role is Role.WAIT_RESP and initiator.epochs == (3, 3)
    initiator.retransmit()
    assert not initiator.outbox
    responder.eku.respond_deferred()
    flush(initiator, responder)
    assert initiator.eku.generation == responder.eku.generation == 1
    assert initiator.epochs == responder.epochs == (4, 4)


@pytest.mark.parametrize("profile", [D13, D2510])
def test_late_ack_of_the_request_is_ignored(profile: EKUProfileName) -> None:
    """draft-13 §6 step 2: "key_update_response and ACK message MAY be received
    out of order; a late ACK MUST be ignored and MUST NOT affect the extended
    key update state machine"."""
    initiator, responder = pair(profile)
    responder.admission = EKUAdmission.DEFER
    initiator.eku.start()
    request = deliver(initiator, responder, "Req")
    ack = take(responder, "ACK")
    responder.eku.respond_deferred()
    deliver(responder, initiator, "Resp")  # the response overtakes the ACK
    role, epochs = initiator.eku.role, initiator.epochs
    assert role is (Role.WAIT_ACK if profile is D13 else Role.WAIT_PEER_FINISH)
    initiator.receive(ack)
    assert (initiator.eku.role, initiator.epochs) == (role, epochs)
    # Even a host that reports the late ACK (ours filtered it: the response
    # had acknowledged the request already) moves nothing.
    initiator.eku.message_acknowledged(request.message)
    assert (initiator.eku.role, initiator.epochs) == (role, epochs)
    flush(initiator, responder)
    assert initiator.eku.generation == responder.eku.generation == 1
    assert initiator.epochs == responder.epochs == (4, 4)


def test_draft13_lost_ack_keeps_the_initiator_on_its_old_send_epoch() -> None:
    """draft-13 §6 step 7: the initiator updates its send epoch on the ACK of
    its Finish, and "If this ACK is not received, the initiator re-transmits
    its ExtendedKeyUpdate(key_update_finish) until ACK is received"."""
    initiator, responder = pair(D13)
    initiator.eku.start()
    deliver(initiator, responder, "Req")
    deliver(responder, initiator, "Resp")
    deliver(initiator, responder, "Fin")
    assert responder.epochs == (4, 4) and responder.eku.generation == 1
    lost = take(responder, "ACK")
    assert lost.epoch == 4
    # Without the ACK the initiator stays on send epoch 3, and what it sends
    # meanwhile still reads at the responder (which retains epoch 3).
    assert initiator.epochs == (3, 4) and initiator.eku.role is Role.WAIT_ACK
    initiator.send_app(b"still old")
    deliver(initiator, responder, "APP")
    assert responder.app_received == [(3, b"still old")]
    # The timer fires: the Finish again, under epoch 3; the responder has it
    # already and acknowledges it again, under epoch 4.
    initiator.retransmit()
    fin = deliver(initiator, responder, "Fin")
    assert fin.epoch == 3 and responder.eku.generation == 1 and responder.epochs == (4, 4)
    ack = deliver(responder, initiator, "ACK")
    assert ack.epoch == 4
    assert initiator.epochs == (4, 4) and initiator.eku.role is Role.IDLE and initiator.eku.generation == 1
    initiator.send_app(b"new")
    deliver(initiator, responder, "APP")
    assert responder.app_received[-1] == (4, b"new") and responder.old_rx is None


@pytest.mark.parametrize("profile", [D2510, D05])
def test_four_message_lost_ack_keeps_the_responder_on_its_old_send_epoch(profile: EKUProfileName) -> None:
    """draft-2025-10 §6 step 9: "If this ACK is not received, the responder
    re-transmits its ExtendedKeyUpdate(new_key_update) until ACK is received"."""
    initiator, responder = pair(profile)
    initiator.eku.start()
    deliver(initiator, responder, "Req")
    deliver(responder, initiator, "Resp")
    deliver(initiator, responder, "NKU")
    deliver(responder, initiator, "NKU")
    assert initiator.epochs == (4, 4) and initiator.eku.generation == 1
    take(initiator, "ACK")  # lost
    assert responder.epochs == (3, 4) and responder.eku.role is Role.WAIT_ACK
    responder.retransmit()
    nku = deliver(responder, initiator, "NKU")
    assert nku.epoch == 3 and initiator.epochs == (4, 4) and initiator.eku.generation == 1
    deliver(initiator, responder, "ACK")
    assert responder.epochs == (4, 4) and responder.eku.generation == 1


@pytest.mark.parametrize("profile", ALL)
def test_peers_next_request_stands_for_a_lost_ack(profile: EKUProfileName) -> None:
    """Decision (docs/eku-over-dtls.md): the side that completed first may start
    the next update at once; its request, read in message_seq order after our
    last message, proves that message arrived, so it completes our update as
    the lost ACK would have, and is then answered."""
    initiator, responder = pair(profile)
    initiator.eku.start()
    deliver(initiator, responder, "Req")
    deliver(responder, initiator, "Resp")
    deliver(initiator, responder)  # Fin / NKU
    if PROFILES[profile].three_messages:
        waiting, done = initiator, responder
    else:
        deliver(responder, initiator, "NKU")
        waiting, done = responder, initiator
    take(done, "ACK")  # lost
    assert waiting.eku.role is Role.WAIT_ACK and done.eku.role is Role.IDLE
    done.eku.start()
    request = deliver(done, waiting, "Req")
    assert request.epoch == 4
    assert waiting.eku.generation == 1 and waiting.epochs == (4, 4)
    assert waiting.eku.role in (Role.WAIT_FINISH, Role.IDLE)  # answering generation 2
    flush(initiator, responder)
    assert initiator.eku.generation == responder.eku.generation == 2
    assert initiator.epochs == responder.epochs == (5, 5)
    assert initiator.tx_secrets[5] == responder.rx_secrets[5] and responder.tx_secrets[5] == initiator.rx_secrets[5]


# -- duplicates -----------------------------------------------------------------------


@pytest.mark.parametrize("profile", ALL)
def test_retransmitted_request_gets_the_same_response_again(profile: EKUProfileName) -> None:
    """The response is lost; the initiator's timer resends the request; the
    responder already has it (message_seq, RFC 9147 §5.2) and resends its
    response, byte for byte, under the same epoch, without a second exchange
    ("Duplicate messages are tolerated", App. B.2)."""
    initiator, responder = pair(profile)
    initiator.eku.start()
    deliver(initiator, responder, "Req")
    first = take(responder, "Resp")  # lost
    initiator.retransmit()
    deliver(initiator, responder, "Req")
    assert responder.eku.role is Role.WAIT_FINISH and responder.epochs == (3, 3)
    again = take(responder, "Resp")
    assert again == first
    initiator.receive(again)
    flush(initiator, responder)
    assert initiator.eku.generation == responder.eku.generation == 1
    assert initiator.epochs == responder.epochs == (4, 4)
    completed = [e.generation for e in responder.events if isinstance(e, KeyUpdateCompleted)]
    assert completed == [1]


@pytest.mark.parametrize("profile", ALL)
def test_duplicated_response_moves_no_epoch_twice(profile: EKUProfileName) -> None:
    initiator, responder = pair(profile)
    initiator.eku.start()
    deliver(initiator, responder, "Req")
    response = take(responder, "Resp")
    initiator.receive(response)
    epochs, role = initiator.epochs, initiator.eku.role
    initiator.receive(response)  # the network duplicated it
    assert (initiator.epochs, initiator.eku.role) == (epochs, role)
    # The repeat made the initiator resend its unacknowledged Finish / NKU.
    assert [r.label for r in initiator.outbox].count("Fin" if profile is D13 else "NKU") == 2
    flush(initiator, responder)
    assert initiator.eku.generation == responder.eku.generation == 1
    assert initiator.epochs == responder.epochs == (4, 4)


# -- crossed requests --------------------------------------------------------------------


@pytest.mark.parametrize("profile", ALL)
def test_crossed_requests_one_generation(profile: EKUProfileName) -> None:
    """App. B.2.1 (draft-13 and 2025-10): the request with the lower
    key_exchange is ignored (its sender abandons it and answers the other);
    draft-05 §4 answers it with "clashed".  Either way one generation, and the
    abandoned request is acknowledged so nothing is retransmitted for ever."""
    a, b = pair(profile)
    a.eku.start()
    b.eku.start()
    req_a, req_b = take(a, "Req"), take(b, "Req")
    winner, loser = (a, b) if key_exchange(req_a, profile) > key_exchange(req_b, profile) else (b, a)
    winner_req, loser_req = (req_a, req_b) if winner is a else (req_b, req_a)
    winner.receive(loser_req)
    assert winner.eku.role is Role.WAIT_RESP
    if PROFILES[profile].separate_types:
        assert [r.label for r in winner.outbox] == ["Resp"]  # status clashed
    else:
        assert [r.label for r in winner.outbox] == ["ACK"]  # ignored, but acknowledged
    loser.receive(winner_req)
    assert loser.eku.role is Role.WAIT_FINISH  # abandoned its own, answering the winner's
    flush(a, b)
    for host in (a, b):
        assert host.eku.role is Role.IDLE and host.eku.generation == 1 and host.epochs == (4, 4)
        assert not host.unacked
        done = [e for e in host.events if isinstance(e, KeyUpdateCompleted)]
        assert [e.initiator for e in done] == [Side.client if winner.is_client else Side.server]
    assert a.tx_secrets[4] == b.rx_secrets[4] and b.tx_secrets[4] == a.rx_secrets[4]


@pytest.mark.parametrize("profile", ALL)
def test_crossed_requests_with_equal_key_shares_abort(profile: EKUProfileName) -> None:
    a, _ = pair(profile)
    a.eku.start()
    own = take(a, "Req").message
    with pytest.raises(RemoteProtocolError) as info:
        a.eku.handle(own[0], own[4:], own)
    assert info.value.alert == AlertDescription.unexpected_message


def test_draft05_refusals_over_dtls() -> None:
    """draft-05's retry and rejected responses are responses: they acknowledge
    the request implicitly and move no epoch."""
    for admission, status in ((EKUAdmission.DEFER, "retry"), (EKUAdmission.REJECT, "rejected")):
        initiator, responder = pair(D05)
        responder.admission = admission
        initiator.eku.start()
        deliver(initiator, responder, "Req")
        deliver(responder, initiator, "Resp")
        assert not initiator.unacked and not initiator.outbox
        assert initiator.eku.role is Role.IDLE and responder.eku.role is Role.IDLE
        assert initiator.epochs == responder.epochs == (3, 3)
        rejected = [e for e in initiator.events if isinstance(e, KeyUpdateRejected)]
        assert [e.status.value for e in rejected] == [status]


def test_a_new_update_waits_for_the_ack() -> None:
    """draft-13 §6 step 1: "While an extended key update is in progress, the
    initiator MUST NOT initiate further key updates": in progress until the ACK."""
    initiator, responder = pair(D13)
    initiator.eku.start()
    deliver(initiator, responder, "Req")
    deliver(responder, initiator, "Resp")
    assert initiator.eku.role is Role.WAIT_ACK and initiator.eku.in_progress
    with pytest.raises(LocalProtocolError):
        initiator.eku.start()


# -- a lossy link ------------------------------------------------------------------------


def _lossy_run(profile: EKUProfileName, seed: int, updates: int) -> tuple[ModelHost, ModelHost]:
    """Updates started by either side or both at once (crossed), over a link
    that loses 20%, duplicates 10% and reorders every batch of records; timers
    fire whenever the link falls quiet with an update unfinished."""
    rng = random.Random(seed)
    a, b = pair(profile)
    started = 0
    for _ in range(20000):
        idle = a.eku.role is Role.IDLE and b.eku.role is Role.IDLE
        if idle and a.eku.generation == b.eku.generation == started:
            if started == updates:
                break
            starters = rng.choice([(a,), (b,), (a, b)])
            for host in starters:
                host.eku.start()
            started += 1
        elif rng.random() < 0.05:
            # A side that has completed may start the next update while the
            # peer still waits for an ACK (see test_peers_next_request_stands_for_a_lost_ack).
            host = rng.choice([a, b])
            # Never past ``updates``: the loop ends only when both are idle at it.
            if host.eku.role is Role.IDLE and host.eku.generation == started < updates:
                host.eku.start()
                started += 1
        in_flight: list[tuple[ModelHost, Record]] = []
        for src, dst in ((a, b), (b, a)):
            for record in src.outbox:
                if rng.random() < 0.2:
                    continue
                in_flight.append((dst, record))
                if rng.random() < 0.1:
                    in_flight.append((dst, record))
            src.outbox.clear()
        rng.shuffle(in_flight)
        for dst, record in in_flight:
            dst.receive(record)
        if not in_flight and not a.outbox and not b.outbox:
            a.retransmit()
            b.retransmit()
    else:
        raise AssertionError(f"{profile}: no progress after many rounds ({a.eku!r}, {b.eku!r})")
    return a, b


@pytest.mark.parametrize("profile", ALL)
def test_lossy_link_many_updates(profile: EKUProfileName) -> None:
    updates = 40
    a, b = _lossy_run(profile, seed=11, updates=updates)
    assert a.eku.generation == b.eku.generation == updates
    e = APPLICATION_EPOCH + updates
    assert a.epochs == b.epochs == (e, e)
    # Both ends agree on every generation's secrets, each direction paired.
    for n in range(APPLICATION_EPOCH + 1, e + 1):
        assert a.tx_secrets[n] == b.rx_secrets[n] and b.tx_secrets[n] == a.rx_secrets[n]
    assert a.eku.exporter_secret == b.eku.exporter_secret


def test_spec_dir_exists() -> None:
    """The tables above come from ../shared/specs (beside the checkout)."""
    assert isinstance(specs_dir(), Path) and (specs_dir() / "eku-spin-model").is_dir()
