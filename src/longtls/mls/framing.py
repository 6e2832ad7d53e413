"""MLS message framing and its codecs (RFC 9420 §6).

The structures that carry content between members: Sender, FramedContent,
its authentication (FramedContentAuthData, FramedContentTBS), the two wire
forms PublicMessage and PrivateMessage (with the plaintext
PrivateMessageContent and the AAD and sender-data structures its encryption
uses), the transcript-hash inputs of §8.2, and MLSMessage, the envelope
every message travels in.  Same conventions as ``messages.py``: frozen
slotted dataclasses, ``encode``/``decode``, ``to_bytes``/``from_bytes``,
syntax only.  The content of a FramedContent is ``bytes`` (application
data), a Proposal or a Commit; its ``content_type`` follows from that.
Structures whose layout depends on a field of an enclosing one
(FramedContentAuthData, PrivateMessageContent) take it as an argument of
``decode`` and have no ``from_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from ..errors import DecodeError
from .codec import Reader, Writer, decode
from .messages import (
    GroupContext,
    GroupInfo,
    KeyPackage,
    ProtocolVersion,
    Struct,
    Welcome,
    read_enum,
)
from .proposals import Commit, Proposal, decode_proposal, encode_proposal

__all__ = [
    "AuthenticatedContent",
    "AuthenticatedContentTBM",
    "ConfirmedTranscriptHashInput",
    "Content",
    "ContentType",
    "FramedContent",
    "FramedContentAuthData",
    "FramedContentTBS",
    "InterimTranscriptHashInput",
    "MLSMessage",
    "PrivateContentAAD",
    "PrivateMessage",
    "PrivateMessageContent",
    "PublicMessage",
    "Sender",
    "SenderData",
    "SenderDataAAD",
    "SenderType",
    "WireFormat",
    "content_type_of",
]


class WireFormat(IntEnum):
    """The "MLS Wire Formats" registry (RFC 9420 §17.2)."""

    mls_public_message = 1
    mls_private_message = 2
    mls_welcome = 3
    mls_group_info = 4
    mls_key_package = 5


class ContentType(IntEnum):
    """RFC 9420 §6: closed, 0 reserved."""

    application = 1
    proposal = 2
    commit = 3


class SenderType(IntEnum):
    """RFC 9420 §6: closed, 0 reserved."""

    member = 1
    external = 2
    new_member_proposal = 3
    new_member_commit = 4


#: What a FramedContent or PrivateMessageContent carries: application_data,
#: a Proposal, or a Commit.
Content: TypeAlias = bytes | Proposal | Commit


def content_type_of(content: Content) -> ContentType:
    if isinstance(content, bytes):
        return ContentType.application
    if isinstance(content, Commit):
        return ContentType.commit
    return ContentType.proposal


def _encode_content(w: Writer, content: Content) -> None:
    """The ``select (content_type)`` part, without the type itself."""
    if isinstance(content, bytes):
        w.opaque(content)
    elif isinstance(content, Commit):
        content.encode(w)
    else:
        encode_proposal(w, content)


def _decode_content(r: Reader, content_type: ContentType) -> Content:
    if content_type == ContentType.application:
        return r.opaque()
    if content_type == ContentType.proposal:
        return decode_proposal(r)
    return Commit.decode(r)


@dataclass(frozen=True, slots=True)
class Sender(Struct):
    """Who sent a message (RFC 9420 §6): ``leaf_index`` for a member,
    ``sender_index`` (into external_senders) for an external sender, nothing
    for the two new_member types.  Build with ``Sender.member(i)`` etc."""

    sender_type: SenderType
    leaf_index: int | None = None
    sender_index: int | None = None

    def __post_init__(self) -> None:
        if (self.leaf_index is not None) != (self.sender_type == SenderType.member) or (
                self.sender_index is not None) != (self.sender_type == SenderType.external):
            raise ValueError(f"Sender fields do not match sender_type {self.sender_type.name}")

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        return cls(SenderType.member, leaf_index=leaf_index)

    @classmethod
    def external(cls, sender_index: int) -> Sender:
        return cls(SenderType.external, sender_index=sender_index)

    @classmethod
    def new_member_proposal(cls) -> Sender:
        return cls(SenderType.new_member_proposal)

    @classmethod
    def new_member_commit(cls) -> Sender:
        return cls(SenderType.new_member_commit)

    def encode(self, w: Writer) -> None:
        w.u8(self.sender_type)
        if self.leaf_index is not None:
            w.u32(self.leaf_index)
        if self.sender_index is not None:
            w.u32(self.sender_index)

    @classmethod
    def decode(cls, r: Reader) -> Sender:
        sender_type = read_enum(r, SenderType)
        if sender_type == SenderType.member:
            return cls.member(r.u32())
        if sender_type == SenderType.external:
            return cls.external(r.u32())
        return cls(sender_type)


@dataclass(frozen=True, slots=True)
class FramedContent(Struct):
    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    content: Content

    @property
    def content_type(self) -> ContentType:
        return content_type_of(self.content)

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch)
        self.sender.encode(w)
        w.opaque(self.authenticated_data).u8(self.content_type)
        _encode_content(w, self.content)

    @classmethod
    def decode(cls, r: Reader) -> FramedContent:
        group_id = r.opaque()
        epoch = r.u64()
        sender = Sender.decode(r)
        authenticated_data = r.opaque()
        content = _decode_content(r, read_enum(r, ContentType))
        return cls(group_id, epoch, sender, authenticated_data, content)


@dataclass(frozen=True, slots=True)
class FramedContentAuthData:
    """The signature over FramedContentTBS, and for a commit the
    ``confirmation_tag`` (present exactly then: RFC 9420 §6.1)."""

    signature: bytes
    confirmation_tag: bytes | None = None

    def encode(self, w: Writer, content_type: ContentType) -> None:
        if (self.confirmation_tag is not None) != (content_type == ContentType.commit):
            raise ValueError("a confirmation_tag goes with commit content and only with it")
        w.opaque(self.signature)
        if self.confirmation_tag is not None:
            w.opaque(self.confirmation_tag)

    @classmethod
    def decode(cls, r: Reader, content_type: ContentType) -> FramedContentAuthData:
        signature = r.opaque()
        tag = r.opaque() if content_type == ContentType.commit else None
        return cls(signature, tag)


def _has_context(sender: Sender) -> bool:
    """FramedContentTBS carries the GroupContext for member and
    new_member_commit senders (RFC 9420 §6.1)."""
    return sender.sender_type in (SenderType.member, SenderType.new_member_commit)


@dataclass(frozen=True, slots=True)
class FramedContentTBS(Struct):
    """What a FramedContent signature covers (RFC 9420 §6.1).  ``context``
    is the sender's GroupContext exactly for member and new_member_commit
    senders."""

    wire_format: int
    content: FramedContent
    context: GroupContext | None = None
    version: int = ProtocolVersion.mls10

    def __post_init__(self) -> None:
        if (self.context is not None) != _has_context(self.content.sender):
            raise ValueError(
                "FramedContentTBS has a GroupContext exactly for member and new_member_commit senders")

    def encode(self, w: Writer) -> None:
        w.u16(self.version).u16(self.wire_format)
        self.content.encode(w)
        if self.context is not None:
            self.context.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> FramedContentTBS:
        version = r.u16()
        wire_format = r.u16()
        content = FramedContent.decode(r)
        context = GroupContext.decode(r) if _has_context(content.sender) else None
        return cls(wire_format, content, context, version)


@dataclass(frozen=True, slots=True)
class AuthenticatedContent(Struct):
    """A FramedContent with its authentication, as MLS processes it (§6)."""

    wire_format: int
    content: FramedContent
    auth: FramedContentAuthData

    def encode(self, w: Writer) -> None:
        w.u16(self.wire_format)
        self.content.encode(w)
        self.auth.encode(w, self.content.content_type)

    @classmethod
    def decode(cls, r: Reader) -> AuthenticatedContent:
        wire_format = r.u16()
        content = FramedContent.decode(r)
        return cls(wire_format, content, FramedContentAuthData.decode(r, content.content_type))

    def tbs(self, context: GroupContext | None) -> FramedContentTBS:
        """The FramedContentTBS its signature covers (give the GroupContext
        for member and new_member_commit senders)."""
        return FramedContentTBS(self.wire_format, self.content, context)


@dataclass(frozen=True, slots=True)
class AuthenticatedContentTBM(Struct):
    """What a PublicMessage's membership_tag covers (RFC 9420 §6.2)."""

    content_tbs: FramedContentTBS
    auth: FramedContentAuthData

    def encode(self, w: Writer) -> None:
        self.content_tbs.encode(w)
        self.auth.encode(w, self.content_tbs.content.content_type)

    @classmethod
    def decode(cls, r: Reader) -> AuthenticatedContentTBM:
        tbs = FramedContentTBS.decode(r)
        return cls(tbs, FramedContentAuthData.decode(r, tbs.content.content_type))


@dataclass(frozen=True, slots=True)
class PublicMessage(Struct):
    """A signed, unencrypted message (RFC 9420 §6.2); ``membership_tag`` is
    present exactly for member senders."""

    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None

    def __post_init__(self) -> None:
        if (self.membership_tag is not None) != (
                self.content.sender.sender_type == SenderType.member):
            raise ValueError("a PublicMessage has a membership_tag exactly for member senders")

    def encode(self, w: Writer) -> None:
        self.content.encode(w)
        self.auth.encode(w, self.content.content_type)
        if self.membership_tag is not None:
            w.opaque(self.membership_tag)

    @classmethod
    def decode(cls, r: Reader) -> PublicMessage:
        content = FramedContent.decode(r)
        auth = FramedContentAuthData.decode(r, content.content_type)
        member = content.sender.sender_type == SenderType.member
        return cls(content, auth, r.opaque() if member else None)

    def authenticated_content(self) -> AuthenticatedContent:
        return AuthenticatedContent(WireFormat.mls_public_message, self.content, self.auth)


@dataclass(frozen=True, slots=True)
class PrivateMessage(Struct):
    """An encrypted message (RFC 9420 §6.3)."""

    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch).u8(self.content_type)
        w.opaque(self.authenticated_data).opaque(self.encrypted_sender_data)
        w.opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> PrivateMessage:
        return cls(r.opaque(), r.u64(), read_enum(r, ContentType), r.opaque(), r.opaque(),
                   r.opaque())


@dataclass(frozen=True, slots=True)
class PrivateMessageContent:
    """The plaintext of ``PrivateMessage.ciphertext`` (RFC 9420 §6.3.1): the
    content, its auth data, then ``padding_length`` zero bytes."""

    content: Content
    auth: FramedContentAuthData
    padding_length: int = 0

    @property
    def content_type(self) -> ContentType:
        return content_type_of(self.content)

    def encode(self, w: Writer) -> None:
        _encode_content(w, self.content)
        self.auth.encode(w, self.content_type)
        w.raw(bytes(self.padding_length))

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.bytes()

    @classmethod
    def decode(cls, r: Reader, content_type: ContentType) -> PrivateMessageContent:
        """Reads to the end of ``r``: the padding is whatever follows auth."""
        content = _decode_content(r, content_type)
        auth = FramedContentAuthData.decode(r, content_type)
        padding = r.fixed(r.remaining)
        # "A receiver MUST verify that there are no non-zero bytes in the
        # padding field ... MUST be rejected as malformed" (RFC 9420 §6.3.1).
        if padding.count(0) != len(padding):
            raise DecodeError("PrivateMessageContent padding has a non-zero byte (RFC 9420 §6.3.1)")
        return cls(content, auth, len(padding))

    @classmethod
    def from_bytes(cls, data: bytes, content_type: ContentType) -> PrivateMessageContent:
        return decode(data, lambda r: cls.decode(r, content_type))


@dataclass(frozen=True, slots=True)
class PrivateContentAAD(Struct):
    """The AAD of the content encryption (RFC 9420 §6.3.1)."""

    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch).u8(self.content_type)
        w.opaque(self.authenticated_data)

    @classmethod
    def decode(cls, r: Reader) -> PrivateContentAAD:
        return cls(r.opaque(), r.u64(), read_enum(r, ContentType), r.opaque())


@dataclass(frozen=True, slots=True)
class SenderData(Struct):
    """RFC 9420 §6.3.2: who sent a PrivateMessage, with which generation."""

    leaf_index: int
    generation: int
    reuse_guard: bytes  # opaque[4]

    def __post_init__(self) -> None:
        if len(self.reuse_guard) != 4:
            raise ValueError("reuse_guard is 4 bytes")

    def encode(self, w: Writer) -> None:
        w.u32(self.leaf_index).u32(self.generation).raw(self.reuse_guard)

    @classmethod
    def decode(cls, r: Reader) -> SenderData:
        return cls(r.u32(), r.u32(), r.fixed(4))


@dataclass(frozen=True, slots=True)
class SenderDataAAD(Struct):
    """The AAD of the sender data encryption (RFC 9420 §6.3.2)."""

    group_id: bytes
    epoch: int
    content_type: ContentType

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch).u8(self.content_type)

    @classmethod
    def decode(cls, r: Reader) -> SenderDataAAD:
        return cls(r.opaque(), r.u64(), read_enum(r, ContentType))


@dataclass(frozen=True, slots=True)
class ConfirmedTranscriptHashInput(Struct):
    """RFC 9420 §8.2: a commit's FramedContent and signature."""

    wire_format: int
    content: FramedContent
    signature: bytes

    def __post_init__(self) -> None:
        if self.content.content_type != ContentType.commit:
            raise ValueError("ConfirmedTranscriptHashInput holds a commit")

    def encode(self, w: Writer) -> None:
        w.u16(self.wire_format)
        self.content.encode(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> ConfirmedTranscriptHashInput:
        wire_format = r.u16()
        content = FramedContent.decode(r)
        if content.content_type != ContentType.commit:
            raise DecodeError("ConfirmedTranscriptHashInput content is not a commit")
        return cls(wire_format, content, r.opaque())


@dataclass(frozen=True, slots=True)
class InterimTranscriptHashInput(Struct):
    """RFC 9420 §8.2."""

    confirmation_tag: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.confirmation_tag)

    @classmethod
    def decode(cls, r: Reader) -> InterimTranscriptHashInput:
        return cls(r.opaque())


#: The message an MLSMessage carries, by wire format.
MLSMessageBody: TypeAlias = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

_BODIES: dict[WireFormat, type[MLSMessageBody]] = {
    WireFormat.mls_public_message: PublicMessage,
    WireFormat.mls_private_message: PrivateMessage,
    WireFormat.mls_welcome: Welcome,
    WireFormat.mls_group_info: GroupInfo,
    WireFormat.mls_key_package: KeyPackage,
}
_WIRE_FORMATS = {body: wire_format for wire_format, body in _BODIES.items()}


@dataclass(frozen=True, slots=True)
class MLSMessage(Struct):
    """The envelope of every MLS message (RFC 9420 §6): version, wire_format
    (which follows from the body's type), body."""

    body: MLSMessageBody

    @property
    def wire_format(self) -> WireFormat:
        return _WIRE_FORMATS[type(self.body)]

    def encode(self, w: Writer) -> None:
        w.u16(ProtocolVersion.mls10).u16(self.wire_format)
        self.body.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> MLSMessage:
        # ``ProtocolVersion version = mls10``: another version's messages may
        # be laid out differently, so they cannot be read as mls10 ones.
        version = r.u16()
        if version != ProtocolVersion.mls10:
            raise DecodeError(f"MLSMessage version {version} is not mls10 (RFC 9420 §6)")
        wire_format = read_enum(r, WireFormat, size=2)
        return cls(_BODIES[wire_format].decode(r))
