"""The three Extended Key Update texts as data, and how a connection picks one.

Each text (specs README, "The three profiles"; docs/eku-profiles.md) is one
frozen :class:`EKUProfile`: its tls_flags bit, its wire format, its key
schedule labels and the few behaviours that differ.  Profiles are looked up
by :class:`~longtls.constants.EKUProfileName` or by flag, never by string.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ..constants import AlertDescription, EKUProfileName, TLSFlag
from ..crypto.key_schedule import EKULabels
from ..errors import RemoteProtocolError
from ..wire.eku import SEPARATE_TYPES, SUBTYPED, EKUCodec


@dataclass(frozen=True, slots=True)
class EKUProfile:
    """What differs between the three texts."""

    name: EKUProfileName
    flag: TLSFlag  # its bit in tls_flags (PROVISIONAL, constants.TLSFlag)
    codec: EKUCodec  # its wire format (wire/eku.py)
    labels: EKULabels  # its key schedule labels and transcript rule
    three_messages: bool  # draft-13: Req, Resp, Finish; older: Req, Resp, NKU, NKU
    log_exporter: bool  # EXPORTER_SECRET_N key log lines (not in draft-05)
    disable_tickets: bool  # draft-13 §6; the older texts invalidate earlier tickets instead

    @property
    def chained_transcript(self) -> bool:
        """draft-13: transcript_hash_N+1 = Hash(th_N || Req || Resp)."""
        return self.labels.chained_transcript

    @property
    def separate_types(self) -> bool:
        """draft-05: one HandshakeType per message, the response has a status."""
        return self.codec is SEPARATE_TYPES

    @property
    def message_types(self) -> frozenset[int]:
        return self.codec.message_types


#: The three texts, newest first: ``select_profile`` picks the first both speak.
PROFILES: dict[EKUProfileName, EKUProfile] = {
    EKUProfileName.draft_13: EKUProfile(
        EKUProfileName.draft_13, TLSFlag.extended_key_update, SUBTYPED,
        EKULabels(b"derived", b"c ap traffic", b"s ap traffic", b"exp master", b"res master",
                  chained_transcript=True),
        three_messages=True, log_exporter=True, disable_tickets=True,
    ),
    EKUProfileName.draft_2025_10: EKUProfile(
        EKUProfileName.draft_2025_10, TLSFlag.extended_key_update_draft_2025_10, SUBTYPED,
        EKULabels(b"key derived", b"c ap traffic2", b"s ap traffic2", b"exp main2", b"res main2",
                  chained_transcript=False),
        three_messages=False, log_exporter=True, disable_tickets=False,
    ),
    EKUProfileName.draft_05: EKUProfile(
        EKUProfileName.draft_05, TLSFlag.extended_key_update_draft_05, SEPARATE_TYPES,
        EKULabels(b"key derived", b"c ap traffic2", b"s ap traffic2", b"exp master2", b"res master2",
                  chained_transcript=False),
        three_messages=False, log_exporter=False, disable_tickets=False,
    ),
}
DEFAULT_PROFILE = EKUProfileName.draft_13
_BY_FLAG: dict[int, EKUProfile] = {profile.flag: profile for profile in PROFILES.values()}


def profile_flags(names: Iterable[EKUProfileName]) -> frozenset[int]:
    """The tls_flags bits that offer (or accept) these profiles."""
    return frozenset(PROFILES[name].flag for name in names)


def select_profile(offered_flags: Collection[int], ours: Iterable[EKUProfileName]) -> EKUProfile | None:
    """Server: the newest profile the client offered that we speak, or None.

    The flags are a set on the wire, so the client cannot say which it
    prefers; the newest text wins because each revision fixes its
    predecessor, and a fixed rule lets both ends predict the outcome.
    """
    accepted = set(ours)
    for profile in PROFILES.values():  # newest first
        if profile.name in accepted and profile.flag in offered_flags:
            return profile
    return None


def acknowledged_profile(acknowledged: Collection[int], proposed: Collection[int]) -> EKUProfile | None:
    """Client: the profile the server's tls_flags in EncryptedExtensions chose
    (``proposed``: the flags of our ClientHello).

    draft-ietf-tls-tlsflags §3: a flag acknowledged without having been
    proposed is illegal_parameter.  Acknowledging two EKU profiles is not a
    choice either (each is a different wire format): illegal_parameter too.
    """
    unsolicited = sorted(set(acknowledged) - set(proposed))
    if unsolicited:
        raise RemoteProtocolError(
            f"server acknowledged tls_flags {unsolicited} that we did not offer",
            AlertDescription.illegal_parameter,
        )
    chosen = [_BY_FLAG[flag] for flag in sorted(acknowledged) if flag in _BY_FLAG]
    if len(chosen) > 1:
        raise RemoteProtocolError(
            "server acknowledged several Extended Key Update profiles "
            f"({', '.join(p.name for p in chosen)}); it must choose one",
            AlertDescription.illegal_parameter,
        )
    return chosen[0] if chosen else None
