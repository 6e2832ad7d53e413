"""MLS transcript hashes and the confirmation tag (RFC 9420 §8.2, §6.1)
against transcript-hashes.json."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from longtls.errors import DecodeError
from longtls.mls.codec import Writer
from longtls.mls.crypto import CipherSuite, suite
from longtls.mls.framing import AuthenticatedContent
from longtls.mls.transcript import (
    TranscriptHashes,
    confirmation_tag,
    confirmed_transcript_hash,
    interim_transcript_hash,
    split_authenticated_content,
    transcript_inputs,
    verify_confirmation_tag,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls" / "transcript-hashes.json"
IMPLEMENTED = {int(c) for c in CipherSuite}


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())
    return data


def test_vector_suites_are_the_implemented_ones_and_the_rest() -> None:
    suites = [v["cipher_suite"] for v in _vectors()]
    assert sorted(s for s in suites if s in IMPLEMENTED) == [1, 3]
    assert sorted(s for s in suites if s not in IMPLEMENTED) == [2, 4, 5, 6, 7]


@pytest.mark.parametrize("cipher_suite", [1, 3])
def test_transcript_hash_vectors(cipher_suite: int) -> None:
    (v,) = [v for v in _vectors() if v["cipher_suite"] == cipher_suite]
    cs = suite(cipher_suite)
    content = bytes.fromhex(v["authenticated_content"])
    before = bytes.fromhex(v["interim_transcript_hash_before"])
    confirmed_after = bytes.fromhex(v["confirmed_transcript_hash_after"])
    key = bytes.fromhex(v["confirmation_key"])

    confirmed_input, tag = split_authenticated_content(content)
    # The same two inputs from the decoded structure.
    assert transcript_inputs(AuthenticatedContent.from_bytes(content)) == (confirmed_input, tag)
    # The tag is the last field: the confirmed input is what precedes its
    # opaque<V> encoding (a one-byte length for a 32-byte MAC).
    assert content == confirmed_input + bytes([len(tag)]) + tag
    assert len(tag) == 32

    confirmed = confirmed_transcript_hash(cs, before, confirmed_input)
    assert confirmed.hex() == v["confirmed_transcript_hash_after"]
    assert interim_transcript_hash(cs, confirmed, tag).hex() == v["interim_transcript_hash_after"]
    # The confirmation tag is MAC(confirmation_key, confirmed_transcript_hash).
    assert verify_confirmation_tag(cs, key, confirmed_after, tag)
    assert confirmation_tag(cs, key, confirmed_after) == tag
    assert not verify_confirmation_tag(cs, key, before, tag)
    assert not verify_confirmation_tag(cs, key, confirmed_after, bytes([tag[0] ^ 1]) + tag[1:])

    after = TranscriptHashes(b"", before).update(cs, confirmed_input, tag)
    assert after == TranscriptHashes(
        confirmed_after, bytes.fromhex(v["interim_transcript_hash_after"])
    )


def test_hashes_follow_the_formulas() -> None:
    cs = suite(1)
    # §8.2 written out with hashlib: Hash(interim || input), Hash(confirmed || tag<V>).
    confirmed = confirmed_transcript_hash(cs, b"I" * 32, b"input")
    assert confirmed == hashlib.sha256(b"I" * 32 + b"input").digest()
    assert (
        interim_transcript_hash(cs, confirmed, b"T" * 32)
        == hashlib.sha256(confirmed + b"\x20" + b"T" * 32).digest()
    )
    assert (
        confirmation_tag(cs, b"k" * 32, confirmed)
        == hmac.new(b"k" * 32, confirmed, hashlib.sha256).digest()
    )
    # A new group starts with two empty hashes (§8.2).
    assert TranscriptHashes() == TranscriptHashes(b"", b"")


def _commit_content(content_type: int = 3, sender_type: int = 1) -> Writer:
    w = Writer().u16(1)  # wire_format mls_public_message
    w.opaque(b"group").u64(7).u8(sender_type)
    if sender_type in (1, 2):
        w.u32(1)
    w.opaque(b"")  # authenticated_data
    w.u8(content_type)
    if content_type == 3:
        w.opaque(b"")  # no proposals
        w.u8(0)  # no path
    else:
        w.opaque(b"data")
    return w


def test_split_a_hand_made_commit() -> None:
    body = _commit_content().opaque(b"S" * 64).bytes()
    data = body + Writer().opaque(b"C" * 32).bytes()
    assert split_authenticated_content(data) == (body, b"C" * 32)
    # new_member_commit has no sender index.
    body = _commit_content(sender_type=4).opaque(b"S" * 64).bytes()
    assert split_authenticated_content(body + b"\x01C") == (body, b"C")
    # An application message has no confirmation tag and no transcript input.
    app = AuthenticatedContent.from_bytes(_commit_content(content_type=1).opaque(b"S").bytes())
    with pytest.raises(ValueError):
        transcript_inputs(app)


def test_split_refuses_what_is_not_one_commit() -> None:
    good = _commit_content().opaque(b"S" * 64).opaque(b"C" * 32).bytes()
    for bad in (
        good[:-1],  # truncated tag
        good + b"\x00",  # trailing byte
        _commit_content(content_type=1).opaque(b"S").opaque(b"C").bytes(),  # application
        _commit_content(sender_type=9).opaque(b"S").opaque(b"C").bytes(),  # unknown sender
        b"",
    ):
        with pytest.raises(DecodeError):
            split_authenticated_content(bad)
