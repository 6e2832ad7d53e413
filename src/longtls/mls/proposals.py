"""MLS proposals and the Commit (RFC 9420 §12.1-§12.4), with their codecs.

Conventions as in ``messages.py``.  A ``Proposal`` is the union of the seven
proposal structs; each knows its ``proposal_type``, and ``encode_proposal`` /
``decode_proposal`` write and read the type in front of it.  A
``ProposalOrRef`` is a Proposal or the bytes of a ProposalRef (RFC 9420 §5.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeAlias

from ..errors import DecodeError
from .codec import Reader, Writer
from .messages import (
    Extension,
    KeyPackage,
    LeafNode,
    PreSharedKeyID,
    Struct,
    UpdatePath,
    decode_extensions,
    encode_extensions,
    encode_struct,
    read_enum,
)

__all__ = [
    "Add",
    "Commit",
    "ExternalInit",
    "GroupContextExtensions",
    "PreSharedKey",
    "Proposal",
    "ProposalOrRef",
    "ProposalOrRefType",
    "ProposalRef",
    "ProposalType",
    "ReInit",
    "Remove",
    "Update",
    "decode_proposal",
    "decode_proposal_or_ref",
    "encode_proposal",
    "encode_proposal_or_ref",
]

#: RFC 9420 §5.2: ``HashReference ProposalRef``.
ProposalRef: TypeAlias = bytes


class ProposalType(IntEnum):
    """The "MLS Proposal Types" registry (RFC 9420 §17.4)."""

    add = 1
    update = 2
    remove = 3
    psk = 4
    reinit = 5
    external_init = 6
    group_context_extensions = 7


class ProposalOrRefType(IntEnum):
    """RFC 9420 §12.4: closed, 0 reserved."""

    proposal = 1
    reference = 2


# --- proposals (RFC 9420 §12.1) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Add(Struct):
    key_package: KeyPackage
    proposal_type: ClassVar[ProposalType] = ProposalType.add

    def encode(self, w: Writer) -> None:
        self.key_package.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Add:
        return cls(KeyPackage.decode(r))


@dataclass(frozen=True, slots=True)
class Update(Struct):
    leaf_node: LeafNode
    proposal_type: ClassVar[ProposalType] = ProposalType.update

    def encode(self, w: Writer) -> None:
        self.leaf_node.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Update:
        return cls(LeafNode.decode(r))


@dataclass(frozen=True, slots=True)
class Remove(Struct):
    removed: int  # uint32 leaf index
    proposal_type: ClassVar[ProposalType] = ProposalType.remove

    def encode(self, w: Writer) -> None:
        w.u32(self.removed)

    @classmethod
    def decode(cls, r: Reader) -> Remove:
        return cls(r.u32())


@dataclass(frozen=True, slots=True)
class PreSharedKey(Struct):
    psk: PreSharedKeyID
    proposal_type: ClassVar[ProposalType] = ProposalType.psk

    def encode(self, w: Writer) -> None:
        self.psk.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> PreSharedKey:
        return cls(PreSharedKeyID.decode(r))


@dataclass(frozen=True, slots=True)
class ReInit(Struct):
    group_id: bytes
    version: int
    cipher_suite: int
    extensions: tuple[Extension, ...] = ()
    proposal_type: ClassVar[ProposalType] = ProposalType.reinit

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u16(self.version).u16(self.cipher_suite)
        encode_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> ReInit:
        return cls(r.opaque(), r.u16(), r.u16(), decode_extensions(r))


@dataclass(frozen=True, slots=True)
class ExternalInit(Struct):
    kem_output: bytes
    proposal_type: ClassVar[ProposalType] = ProposalType.external_init

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output)

    @classmethod
    def decode(cls, r: Reader) -> ExternalInit:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupContextExtensions(Struct):
    extensions: tuple[Extension, ...] = ()
    proposal_type: ClassVar[ProposalType] = ProposalType.group_context_extensions

    def encode(self, w: Writer) -> None:
        encode_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> GroupContextExtensions:
        return cls(decode_extensions(r))


Proposal: TypeAlias = (Add | Update | Remove | PreSharedKey | ReInit | ExternalInit
                       | GroupContextExtensions)

_PROPOSALS: dict[int, type[Proposal]] = {
    cls.proposal_type: cls
    for cls in (Add, Update, Remove, PreSharedKey, ReInit, ExternalInit, GroupContextExtensions)
}


def encode_proposal(w: Writer, proposal: Proposal) -> None:
    """``Proposal``: proposal_type, then the proposal's own struct."""
    w.u16(proposal.proposal_type)
    proposal.encode(w)


def decode_proposal(r: Reader) -> Proposal:
    """A proposal type without a case here has no known layout and "will
    cause the enclosing message to be rejected" (RFC 9420 §13.5)."""
    proposal_type = r.u16()
    cls = _PROPOSALS.get(proposal_type)
    if cls is None:
        raise DecodeError(f"unsupported proposal type {proposal_type:#06x}")
    return cls.decode(r)


#: ``ProposalOrRef``: a proposal by value, or by reference (a ProposalRef,
#: the bytes of RFC 9420 §5.2's MakeProposalRef).
ProposalOrRef: TypeAlias = Proposal | ProposalRef


def encode_proposal_or_ref(w: Writer, value: ProposalOrRef) -> None:
    if isinstance(value, bytes):
        w.u8(ProposalOrRefType.reference).opaque(value)
    else:
        w.u8(ProposalOrRefType.proposal)
        encode_proposal(w, value)


def decode_proposal_or_ref(r: Reader) -> ProposalOrRef:
    if read_enum(r, ProposalOrRefType) == ProposalOrRefType.reference:
        return r.opaque()
    return decode_proposal(r)


@dataclass(frozen=True, slots=True)
class Commit(Struct):
    """RFC 9420 §12.4."""

    proposals: tuple[ProposalOrRef, ...] = ()
    path: UpdatePath | None = None

    def encode(self, w: Writer) -> None:
        w.vector(self.proposals, encode_proposal_or_ref)
        w.optional(self.path, encode_struct)

    @classmethod
    def decode(cls, r: Reader) -> Commit:
        return cls(tuple(r.vector(decode_proposal_or_ref)), r.optional(UpdatePath.decode))
