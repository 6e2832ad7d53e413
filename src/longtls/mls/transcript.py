"""MLS transcript hashes and the confirmation tag (RFC 9420 §8.2, §6.1).

    confirmed_transcript_hash_[epoch] =
        Hash(interim_transcript_hash_[epoch - 1] || ConfirmedTranscriptHashInput_[epoch])
    interim_transcript_hash_[epoch] =
        Hash(confirmed_transcript_hash_[epoch] || InterimTranscriptHashInput_[epoch])

Both start as the empty string for a new group (epoch 0).  The inputs are the
Commit's AuthenticatedContent split in two: ConfirmedTranscriptHashInput is
``wire_format || FramedContent || signature<V>`` (every field but the last)
and InterimTranscriptHashInput is the ``confirmation_tag`` as a MAC
(``opaque<V>``).  The confirmation tag itself is
``MAC(confirmation_key, confirmed_transcript_hash)`` of the new epoch (§6.1).

Functions here take the encoded ConfirmedTranscriptHashInput and the tag;
``split_authenticated_content`` cuts an encoded AuthenticatedContent into
the two (§6), ``transcript_inputs`` makes them from a decoded one (the
structures are ``mls/framing.py``'s).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from .codec import Reader, Writer
from .crypto import Suite
from .framing import AuthenticatedContent, ConfirmedTranscriptHashInput, InterimTranscriptHashInput

__all__ = [
    "TranscriptHashes",
    "confirmation_tag",
    "confirmed_transcript_hash",
    "interim_transcript_hash",
    "split_authenticated_content",
    "transcript_inputs",
    "verify_confirmation_tag",
]


def confirmed_transcript_hash(suite: Suite, interim_before: bytes, confirmed_input: bytes) -> bytes:
    """Hash(interim_transcript_hash_[epoch-1] || ConfirmedTranscriptHashInput) (§8.2)."""
    return suite.hash(interim_before + confirmed_input)


def interim_transcript_hash(suite: Suite, confirmed: bytes, tag: bytes) -> bytes:
    """Hash(confirmed_transcript_hash || InterimTranscriptHashInput) (§8.2), where
    InterimTranscriptHashInput is ``struct { MAC confirmation_tag; }`` and MAC is
    ``opaque<V>``.  A member joining by Welcome computes it from the GroupInfo's
    confirmation tag (§12.4.3.1)."""
    return suite.hash(confirmed + Writer().opaque(tag).bytes())


def confirmation_tag(suite: Suite, confirmation_key: bytes, confirmed: bytes) -> bytes:
    """MAC(confirmation_key, GroupContext.confirmed_transcript_hash) (§6.1)."""
    return suite.mac(confirmation_key, confirmed)


def verify_confirmation_tag(
    suite: Suite, confirmation_key: bytes, confirmed: bytes, tag: bytes
) -> bool:
    """Whether ``tag`` is the confirmation tag of the epoch; compared in constant time."""
    return hmac.compare_digest(confirmation_tag(suite, confirmation_key, confirmed), tag)


@dataclass(frozen=True, slots=True)
class TranscriptHashes:
    """The two transcript hashes of an epoch (§8.2); empty for a new group."""

    confirmed: bytes = b""
    interim: bytes = b""

    def update(self, suite: Suite, confirmed_input: bytes, tag: bytes) -> TranscriptHashes:
        """The hashes of the epoch a Commit starts, from this epoch's interim hash,
        the Commit's ConfirmedTranscriptHashInput and its confirmation tag.

        The confirmation tag is computed over (and checked against) the new
        confirmed hash between the two steps: a sender calls
        ``confirmed_transcript_hash`` first, derives the new epoch, computes the
        tag, then calls this (or ``interim_transcript_hash``).
        """
        confirmed = confirmed_transcript_hash(suite, self.interim, confirmed_input)
        return TranscriptHashes(confirmed, interim_transcript_hash(suite, confirmed, tag))


def split_authenticated_content(data: bytes) -> tuple[bytes, bytes]:
    """(ConfirmedTranscriptHashInput, confirmation_tag) from an encoded
    AuthenticatedContent carrying a Commit (§6, §8.2).

    AuthenticatedContent is ``wire_format || FramedContent || signature<V> ||
    confirmation_tag<V>`` for a commit, and ConfirmedTranscriptHashInput is
    its first three fields: the hash input is the received bytes up to the
    tag (the codec admits one encoding per value, so these are also the bytes
    the sender hashed).  A content type other than commit, or anything
    malformed, is a DecodeError: only commits enter the transcript.
    """
    r = Reader(data)
    ConfirmedTranscriptHashInput.decode(r)
    confirmed_end = len(data) - r.remaining
    tag = InterimTranscriptHashInput.decode(r).confirmation_tag
    r.done()
    return data[:confirmed_end], tag


def transcript_inputs(content: AuthenticatedContent) -> tuple[bytes, bytes]:
    """(ConfirmedTranscriptHashInput, confirmation_tag) of a decoded or
    freshly built commit's AuthenticatedContent (§8.2)."""
    tag = content.auth.confirmation_tag
    if tag is None:
        raise ValueError("only a commit's AuthenticatedContent enters the transcript")
    confirmed_input = ConfirmedTranscriptHashInput(
        content.wire_format, content.content, content.auth.signature
    )
    return confirmed_input.to_bytes(), tag
