"""MLS structures and their codecs (RFC 9420 §5-§12): credentials,
capabilities, extensions, tree nodes, KeyPackage, UpdatePath, PSK ids,
GroupContext and the joining structures (GroupInfo, GroupSecrets, Welcome).

One frozen slotted dataclass per ``struct`` of the spec, named as the spec
names it, with ``encode(w)`` / ``decode(r)`` over ``codec.Writer`` /
``codec.Reader`` and ``to_bytes()`` / ``from_bytes()`` for a whole value.
Proposals and Commit are in ``proposals.py``; message framing
(FramedContent, PublicMessage, PrivateMessage, MLSMessage) in ``framing.py``.

A ``select`` whose cases are different structures (Credential, Node,
Proposal, ProposalOrRef) is a union of Python types: the type of the value
*is* the discriminant, so a value that contradicts its type field cannot be
built.  Those unions are encoded and decoded by module functions
(``encode_credential`` / ``decode_credential``, ...).  A ``select`` that only
adds scalar fields (LeafNode's source, PreSharedKeyID) keeps the
discriminant as a field and checks the per-case fields in ``__post_init__``.

Decoding is purely syntactic (docs/mls.md, "Messages"): every length, every
closed enum (a value the ``select`` has no case for is a DecodeError),
duplicate extension types, the zero padding of PrivateMessageContent.
Registry values MLS says to ignore or to judge later (cipher suites,
versions, extension types, credential types in capabilities) are kept as
plain ints, so an unknown one round-trips and the validation of RFC 9420
§7.3 / §10.1 / §12.4.3 (in ``group.py``) can reject or ignore it.  Encoding
a value that does not fit its field raises ValueError (a local bug).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, TypeAlias, TypeVar

from ..errors import DecodeError
from .codec import Reader, Writer, decode

__all__ = [
    "BasicCredential",
    "Capabilities",
    "Certificate",
    "Credential",
    "CredentialType",
    "EncryptedGroupSecrets",
    "Extension",
    "ExtensionType",
    "ExternalPub",
    "ExternalSender",
    "GroupContext",
    "GroupInfo",
    "GroupSecrets",
    "HPKECiphertext",
    "HPKEPublicKey",
    "KeyPackage",
    "KeyPackageRef",
    "LeafNode",
    "LeafNodeSource",
    "Lifetime",
    "Node",
    "NodeType",
    "OtherCredential",
    "PSKType",
    "ParentNode",
    "PathSecret",
    "PreSharedKeyID",
    "ProtocolVersion",
    "RequiredCapabilities",
    "ResumptionPSKUsage",
    "SignaturePublicKey",
    "Struct",
    "UpdatePath",
    "UpdatePathNode",
    "Welcome",
    "X509Credential",
    "application_id_extension",
    "decode_credential",
    "decode_extensions",
    "decode_node",
    "decode_ratchet_tree",
    "encode_credential",
    "encode_extensions",
    "encode_node",
    "encode_ratchet_tree",
    "encode_struct",
    "find_extension",
    "parse_application_id",
    "parse_external_senders",
    "parse_ratchet_tree",
    "ratchet_tree_extension",
    "read_enum",
]

S = TypeVar("S", bound="Struct")
E = TypeVar("E", bound=IntEnum)
T = TypeVar("T")

#: Spec names for the opaque<V> fields that hold keys and references.
HPKEPublicKey: TypeAlias = bytes
SignaturePublicKey: TypeAlias = bytes
KeyPackageRef: TypeAlias = bytes


# --- registries and closed enums -------------------------------------------


class ProtocolVersion(IntEnum):
    """RFC 9420 §6 ``ProtocolVersion``; fields hold ints (unknown ones kept)."""

    mls10 = 1


class CredentialType(IntEnum):
    """The "MLS Credential Types" registry (RFC 9420 §17.7)."""

    basic = 1
    x509 = 2


class ExtensionType(IntEnum):
    """The "MLS Extension Types" registry (RFC 9420 §17.3)."""

    application_id = 1
    ratchet_tree = 2
    required_capabilities = 3
    external_pub = 4
    external_senders = 5


class LeafNodeSource(IntEnum):
    """RFC 9420 §7.2: closed, 0 reserved."""

    key_package = 1
    update = 2
    commit = 3


class NodeType(IntEnum):
    """RFC 9420 §7.8 / §12.4.3.3: closed, 0 reserved."""

    leaf = 1
    parent = 2


class PSKType(IntEnum):
    """RFC 9420 §8.4: closed, 0 reserved."""

    external = 1
    resumption = 2


class ResumptionPSKUsage(IntEnum):
    """RFC 9420 §8.4: closed, 0 reserved."""

    application = 1
    reinit = 2
    branch = 3


def read_enum(r: Reader, enum: type[E], size: int = 1) -> E:
    """A closed enum: a value with no case in the ``select`` (the reserved 0
    included) cannot be decoded, so it is a DecodeError."""
    value = r.u8() if size == 1 else r.u16()
    try:
        return enum(value)
    except ValueError:
        raise DecodeError(f"invalid {enum.__name__} {value}") from None


# --- the base of every struct ----------------------------------------------


class Struct:
    """``encode``/``decode`` per struct; ``to_bytes``/``from_bytes`` for all."""

    __slots__ = ()

    def encode(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def decode(cls: type[S], r: Reader) -> S:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.bytes()

    @classmethod
    def from_bytes(cls: type[S], data: bytes) -> S:
        """Exactly one value: trailing bytes are a DecodeError."""
        return decode(data, cls.decode)


def encode_struct(w: Writer, value: Struct) -> None:
    """An encoder function for ``Writer.vector`` / ``Writer.optional``."""
    value.encode(w)


def _u16s(r: Reader) -> tuple[int, ...]:
    return tuple(r.vector(Reader.u16))


# --- credentials (RFC 9420 §5.3) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Certificate(Struct):
    """One DER certificate of an X.509 credential."""

    cert_data: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.cert_data)

    @classmethod
    def decode(cls, r: Reader) -> Certificate:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class BasicCredential(Struct):
    """``credential_type = basic``: an identity whose format the application defines."""

    identity: bytes
    credential_type: ClassVar[int] = CredentialType.basic

    def encode(self, w: Writer) -> None:
        w.u16(self.credential_type).opaque(self.identity)

    @classmethod
    def decode(cls, r: Reader) -> BasicCredential:
        return _decode_credential_as(r, cls)


@dataclass(frozen=True, slots=True)
class X509Credential(Struct):
    """``credential_type = x509``: the chain, end-entity certificate first."""

    certificates: tuple[Certificate, ...]
    credential_type: ClassVar[int] = CredentialType.x509

    @classmethod
    def from_der(cls, chain: Iterable[bytes]) -> X509Credential:
        return cls(tuple(Certificate(der) for der in chain))

    def encode(self, w: Writer) -> None:
        w.u16(self.credential_type).vector(self.certificates, encode_struct)

    @classmethod
    def decode(cls, r: Reader) -> X509Credential:
        return _decode_credential_as(r, cls)


@dataclass(frozen=True, slots=True)
class OtherCredential(Struct):
    """A credential type this module does not know.

    RFC 9420 gives no layout for other types; basic and x509 are both a
    ``<V>`` vector after the type, and other implementations read a new type
    the same way, so its content is kept as one ``opaque<V>`` and encoded
    back unchanged.  Whether a group accepts it is leaf node validation
    (RFC 9420 §7.3, credential types in capabilities), not a decoding error.
    """

    credential_type: int  # an instance field here, a ClassVar in the two known classes
    content: bytes

    def __post_init__(self) -> None:
        if self.credential_type in (CredentialType.basic, CredentialType.x509):
            raise ValueError("basic and x509 credentials have their own classes")

    def encode(self, w: Writer) -> None:
        w.u16(self.credential_type).opaque(self.content)

    @classmethod
    def decode(cls, r: Reader) -> OtherCredential:
        return _decode_credential_as(r, cls)


Credential: TypeAlias = BasicCredential | X509Credential | OtherCredential


def encode_credential(w: Writer, cred: Credential) -> None:
    cred.encode(w)


def decode_credential(r: Reader) -> Credential:
    credential_type = r.u16()
    if credential_type == CredentialType.basic:
        return BasicCredential(r.opaque())
    if credential_type == CredentialType.x509:
        return X509Credential(tuple(r.vector(Certificate.decode)))
    return OtherCredential(credential_type, r.opaque())


C = TypeVar("C", BasicCredential, X509Credential, OtherCredential)


def _decode_credential_as(r: Reader, cls: type[C]) -> C:
    """A Credential that must be of one class (``X509Credential.from_bytes``)."""
    cred = decode_credential(r)
    if not isinstance(cred, cls):
        raise DecodeError(f"expected {cls.__name__}, got credential type {cred.credential_type}")
    return cred


# --- capabilities, lifetimes, extensions (RFC 9420 §7.2, §13) --------------


@dataclass(frozen=True, slots=True)
class Capabilities(Struct):
    """What a client supports.  Unknown and GREASE values are kept: a client
    "MUST ignore all unrecognized values" here (RFC 9420 §13)."""

    versions: tuple[int, ...] = (ProtocolVersion.mls10,)
    cipher_suites: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    proposals: tuple[int, ...] = ()
    credentials: tuple[int, ...] = ()

    def encode(self, w: Writer) -> None:
        for values in (self.versions, self.cipher_suites, self.extensions,
                       self.proposals, self.credentials):
            w.vector(values, Writer.u16)

    @classmethod
    def decode(cls, r: Reader) -> Capabilities:
        return cls(_u16s(r), _u16s(r), _u16s(r), _u16s(r), _u16s(r))


@dataclass(frozen=True, slots=True)
class Lifetime(Struct):
    """Seconds since the Unix epoch, both ends inclusive (RFC 9420 §7.2)."""

    not_before: int
    not_after: int

    def encode(self, w: Writer) -> None:
        w.u64(self.not_before).u64(self.not_after)

    @classmethod
    def decode(cls, r: Reader) -> Lifetime:
        return cls(r.u64(), r.u64())


@dataclass(frozen=True, slots=True)
class Extension(Struct):
    """An extension: its type and its encoded data, kept whatever the type,
    since unknown extensions are ignored, not rejected (RFC 9420 §13)."""

    extension_type: int
    extension_data: bytes

    def encode(self, w: Writer) -> None:
        w.u16(self.extension_type).opaque(self.extension_data)

    @classmethod
    def decode(cls, r: Reader) -> Extension:
        return cls(r.u16(), r.opaque())


def encode_extensions(w: Writer, extensions: Sequence[Extension]) -> None:
    """``Extension extensions<V>``; a type twice is refused here too (§13)."""
    if len({ext.extension_type for ext in extensions}) != len(extensions):
        raise ValueError("an extension list has one extension of each type (RFC 9420 §13)")
    w.vector(extensions, encode_struct)


def decode_extensions(r: Reader) -> tuple[Extension, ...]:
    """``Extension extensions<V>``.  "Any field containing a list of
    extensions MUST NOT have more than one extension of any given type"
    (RFC 9420 §13): a duplicate makes the list malformed."""
    extensions = tuple(r.vector(Extension.decode))
    seen: set[int] = set()
    for ext in extensions:
        if ext.extension_type in seen:
            raise DecodeError(f"extension type {ext.extension_type} appears twice (RFC 9420 §13)")
        seen.add(ext.extension_type)
    return extensions


def find_extension(extensions: Iterable[Extension], extension_type: int) -> Extension | None:
    """The extension of that type, if the list has one (at most one: §13)."""
    for ext in extensions:
        if ext.extension_type == extension_type:
            return ext
    return None


@dataclass(frozen=True, slots=True)
class RequiredCapabilities(Struct):
    """``required_capabilities`` extension data (RFC 9420 §11.1)."""

    extension_types: tuple[int, ...] = ()
    proposal_types: tuple[int, ...] = ()
    credential_types: tuple[int, ...] = ()

    def encode(self, w: Writer) -> None:
        for values in (self.extension_types, self.proposal_types, self.credential_types):
            w.vector(values, Writer.u16)

    @classmethod
    def decode(cls, r: Reader) -> RequiredCapabilities:
        return cls(_u16s(r), _u16s(r), _u16s(r))

    def extension(self) -> Extension:
        return Extension(ExtensionType.required_capabilities, self.to_bytes())


@dataclass(frozen=True, slots=True)
class ExternalPub(Struct):
    """``external_pub`` extension data (RFC 9420 §12.4.3.2)."""

    external_pub: HPKEPublicKey

    def encode(self, w: Writer) -> None:
        w.opaque(self.external_pub)

    @classmethod
    def decode(cls, r: Reader) -> ExternalPub:
        return cls(r.opaque())

    def extension(self) -> Extension:
        return Extension(ExtensionType.external_pub, self.to_bytes())


@dataclass(frozen=True, slots=True)
class ExternalSender(Struct):
    """One entry of the ``external_senders`` extension (RFC 9420 §12.1.8.1)."""

    signature_key: SignaturePublicKey
    credential: Credential

    def encode(self, w: Writer) -> None:
        w.opaque(self.signature_key)
        self.credential.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> ExternalSender:
        return cls(r.opaque(), decode_credential(r))


def parse_external_senders(data: bytes) -> tuple[ExternalSender, ...]:
    """``ExternalSender external_senders<V>`` from an extension's data."""
    return tuple(decode(data, lambda r: r.vector(ExternalSender.decode)))


def application_id_extension(application_id: bytes) -> Extension:
    """``application_id`` (RFC 9420 §5.3.3): ``opaque application_id<V>``."""
    return Extension(ExtensionType.application_id, Writer().opaque(application_id).bytes())


def parse_application_id(data: bytes) -> bytes:
    return decode(data, Reader.opaque)


# --- tree nodes (RFC 9420 §7.1, §7.2) --------------------------------------


@dataclass(frozen=True, slots=True)
class ParentNode(Struct):
    encryption_key: HPKEPublicKey
    parent_hash: bytes
    unmerged_leaves: tuple[int, ...] = ()  # uint32 leaf indices

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.parent_hash)
        w.vector(self.unmerged_leaves, Writer.u32)

    @classmethod
    def decode(cls, r: Reader) -> ParentNode:
        return cls(r.opaque(), r.opaque(), tuple(r.vector(Reader.u32)))


@dataclass(frozen=True, slots=True)
class LeafNode(Struct):
    """A member's leaf (RFC 9420 §7.2).

    ``lifetime`` is present exactly when ``leaf_node_source`` is key_package
    and ``parent_hash`` exactly when it is commit, as the ``select`` says.
    ``signature`` covers ``tbs(group_id, leaf_index)`` (LeafNodeTBS).
    """

    encryption_key: HPKEPublicKey
    signature_key: SignaturePublicKey
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None = None
    parent_hash: bytes | None = None
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def __post_init__(self) -> None:
        source = self.leaf_node_source
        if (self.lifetime is not None) != (source == LeafNodeSource.key_package):
            raise ValueError("a LeafNode has a lifetime exactly when its source is key_package")
        if (self.parent_hash is not None) != (source == LeafNodeSource.commit):
            raise ValueError("a LeafNode has a parent_hash exactly when its source is commit")

    def _encode_content(self, w: Writer) -> None:
        """The fields LeafNode and LeafNodeTBS share, in order."""
        w.opaque(self.encryption_key).opaque(self.signature_key)
        self.credential.encode(w)
        self.capabilities.encode(w)
        w.u8(self.leaf_node_source)
        if self.lifetime is not None:
            self.lifetime.encode(w)
        if self.parent_hash is not None:
            w.opaque(self.parent_hash)
        encode_extensions(w, self.extensions)

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> LeafNode:
        encryption_key = r.opaque()
        signature_key = r.opaque()
        credential = decode_credential(r)
        capabilities = Capabilities.decode(r)
        source = read_enum(r, LeafNodeSource)
        lifetime = Lifetime.decode(r) if source == LeafNodeSource.key_package else None
        parent_hash = r.opaque() if source == LeafNodeSource.commit else None
        extensions = decode_extensions(r)
        return cls(encryption_key, signature_key, credential, capabilities, source,
                   lifetime, parent_hash, extensions, r.opaque())

    def tbs(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """LeafNodeTBS (RFC 9420 §7.2): the content, then, for the update and
        commit sources, the group and leaf the node is bound to (which a
        key_package leaf node does not have)."""
        w = Writer()
        self._encode_content(w)
        if self.leaf_node_source == LeafNodeSource.key_package:
            if group_id is not None or leaf_index is not None:
                raise ValueError("a key_package LeafNodeTBS has no group_id or leaf_index")
        else:
            if group_id is None or leaf_index is None:
                raise ValueError(
                    f"a {self.leaf_node_source.name} LeafNodeTBS needs group_id and leaf_index")
            w.opaque(group_id).u32(leaf_index)
        return w.bytes()


Node: TypeAlias = LeafNode | ParentNode


def encode_node(w: Writer, node: Node) -> None:
    """``Node`` (RFC 9420 §12.4.3.3): node_type, then the leaf or parent."""
    w.u8(NodeType.leaf if isinstance(node, LeafNode) else NodeType.parent)
    node.encode(w)


def decode_node(r: Reader) -> Node:
    if read_enum(r, NodeType) == NodeType.leaf:
        return LeafNode.decode(r)
    return ParentNode.decode(r)


def encode_ratchet_tree(w: Writer, nodes: Sequence[Node | None]) -> None:
    """``optional<Node> ratchet_tree<V>`` in node-index order, blanks as None."""
    w.vector(nodes, _encode_optional_node)


def _encode_optional_node(w: Writer, node: Node | None) -> None:
    # optional<Node> by hand: mypy joins LeafNode | ParentNode to Struct in
    # Writer.optional's type variable.
    if node is None:
        w.u8(0)
    else:
        encode_node(w.u8(1), node)


def decode_ratchet_tree(r: Reader) -> tuple[Node | None, ...]:
    """The syntax only: the shape rules of RFC 9420 §12.4.3.3 (a full tree
    without trailing blanks, leaves at even indices) are the tree's."""
    return tuple(r.vector(lambda r2: r2.optional(decode_node)))


def ratchet_tree_extension(nodes: Sequence[Node | None]) -> Extension:
    w = Writer()
    encode_ratchet_tree(w, nodes)
    return Extension(ExtensionType.ratchet_tree, w.bytes())


def parse_ratchet_tree(data: bytes) -> tuple[Node | None, ...]:
    """A ``ratchet_tree`` extension's data."""
    return decode(data, decode_ratchet_tree)


# --- key packages (RFC 9420 §10) -------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPackage(Struct):
    version: int
    cipher_suite: int
    init_key: HPKEPublicKey
    leaf_node: LeafNode
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def _encode_content(self, w: Writer) -> None:
        w.u16(self.version).u16(self.cipher_suite).opaque(self.init_key)
        self.leaf_node.encode(w)
        encode_extensions(w, self.extensions)

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> KeyPackage:
        return cls(r.u16(), r.u16(), r.opaque(), LeafNode.decode(r), decode_extensions(r),
                   r.opaque())

    def tbs(self) -> bytes:
        """KeyPackageTBS: everything but the signature."""
        w = Writer()
        self._encode_content(w)
        return w.bytes()


# --- update paths (RFC 9420 §7.6) ------------------------------------------


@dataclass(frozen=True, slots=True)
class HPKECiphertext(Struct):
    kem_output: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output).opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> HPKECiphertext:
        return cls(r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class UpdatePathNode(Struct):
    encryption_key: HPKEPublicKey
    encrypted_path_secret: tuple[HPKECiphertext, ...]

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key).vector(self.encrypted_path_secret, encode_struct)

    @classmethod
    def decode(cls, r: Reader) -> UpdatePathNode:
        return cls(r.opaque(), tuple(r.vector(HPKECiphertext.decode)))


@dataclass(frozen=True, slots=True)
class UpdatePath(Struct):
    leaf_node: LeafNode
    nodes: tuple[UpdatePathNode, ...]

    def encode(self, w: Writer) -> None:
        self.leaf_node.encode(w)
        w.vector(self.nodes, encode_struct)

    @classmethod
    def decode(cls, r: Reader) -> UpdatePath:
        return cls(LeafNode.decode(r), tuple(r.vector(UpdatePathNode.decode)))


# --- pre-shared keys (RFC 9420 §8.4) ---------------------------------------


@dataclass(frozen=True, slots=True)
class PreSharedKeyID(Struct):
    """``psk_id`` is set exactly for external PSKs; ``usage``,
    ``psk_group_id`` and ``psk_epoch`` exactly for resumption PSKs."""

    psktype: PSKType
    psk_nonce: bytes
    psk_id: bytes | None = None
    usage: ResumptionPSKUsage | None = None
    psk_group_id: bytes | None = None
    psk_epoch: int | None = None

    def __post_init__(self) -> None:
        external = (self.psk_id,)
        resumption = (self.usage, self.psk_group_id, self.psk_epoch)
        want_external = self.psktype == PSKType.external
        if any(v is None for v in (external if want_external else resumption)) or any(
                v is not None for v in (resumption if want_external else external)):
            raise ValueError(f"PreSharedKeyID fields do not match psktype {self.psktype.name}")

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.external, psk_nonce, psk_id=psk_id)

    @classmethod
    def resumption(cls, usage: ResumptionPSKUsage, psk_group_id: bytes, psk_epoch: int,
                   psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.resumption, psk_nonce, usage=usage, psk_group_id=psk_group_id,
                   psk_epoch=psk_epoch)

    def encode(self, w: Writer) -> None:
        w.u8(self.psktype)
        if self.psktype == PSKType.external:
            w.opaque(_present(self.psk_id))
        else:
            w.u8(_present(self.usage)).opaque(_present(self.psk_group_id))
            w.u64(_present(self.psk_epoch))
        w.opaque(self.psk_nonce)

    @classmethod
    def decode(cls, r: Reader) -> PreSharedKeyID:
        if read_enum(r, PSKType) == PSKType.external:
            psk_id = r.opaque()
            return cls.external(psk_id, r.opaque())
        usage = read_enum(r, ResumptionPSKUsage)
        group_id = r.opaque()
        epoch = r.u64()
        return cls.resumption(usage, group_id, epoch, r.opaque())


def _present(value: T | None) -> T:
    if value is None:  # __post_init__ makes this unreachable
        raise ValueError("missing field")
    return value


# --- group context and joining (RFC 9420 §8.1, §12.4.3) --------------------


@dataclass(frozen=True, slots=True)
class GroupContext(Struct):
    version: int
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: tuple[Extension, ...] = ()

    def encode(self, w: Writer) -> None:
        w.u16(self.version).u16(self.cipher_suite).opaque(self.group_id).u64(self.epoch)
        w.opaque(self.tree_hash).opaque(self.confirmed_transcript_hash)
        encode_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> GroupContext:
        return cls(r.u16(), r.u16(), r.opaque(), r.u64(), r.opaque(), r.opaque(),
                   decode_extensions(r))


@dataclass(frozen=True, slots=True)
class GroupInfo(Struct):
    """``signature`` covers ``tbs()`` (GroupInfoTBS), signed by leaf ``signer``."""

    group_context: GroupContext
    extensions: tuple[Extension, ...]
    confirmation_tag: bytes
    signer: int
    signature: bytes = b""

    def _encode_content(self, w: Writer) -> None:
        self.group_context.encode(w)
        encode_extensions(w, self.extensions)
        w.opaque(self.confirmation_tag).u32(self.signer)

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> GroupInfo:
        return cls(GroupContext.decode(r), decode_extensions(r), r.opaque(), r.u32(), r.opaque())

    def tbs(self) -> bytes:
        """GroupInfoTBS: everything but the signature."""
        w = Writer()
        self._encode_content(w)
        return w.bytes()


@dataclass(frozen=True, slots=True)
class PathSecret(Struct):
    path_secret: bytes = field(repr=False)

    def encode(self, w: Writer) -> None:
        w.opaque(self.path_secret)

    @classmethod
    def decode(cls, r: Reader) -> PathSecret:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupSecrets(Struct):
    """What a Welcome encrypts to one new member (RFC 9420 §12.4.3.1)."""

    joiner_secret: bytes = field(repr=False)
    path_secret: PathSecret | None = None
    psks: tuple[PreSharedKeyID, ...] = ()

    def encode(self, w: Writer) -> None:
        w.opaque(self.joiner_secret).optional(self.path_secret, encode_struct)
        w.vector(self.psks, encode_struct)

    @classmethod
    def decode(cls, r: Reader) -> GroupSecrets:
        return cls(r.opaque(), r.optional(PathSecret.decode), tuple(r.vector(PreSharedKeyID.decode)))


@dataclass(frozen=True, slots=True)
class EncryptedGroupSecrets(Struct):
    new_member: KeyPackageRef
    encrypted_group_secrets: HPKECiphertext

    def encode(self, w: Writer) -> None:
        w.opaque(self.new_member)
        self.encrypted_group_secrets.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> EncryptedGroupSecrets:
        return cls(r.opaque(), HPKECiphertext.decode(r))


@dataclass(frozen=True, slots=True)
class Welcome(Struct):
    cipher_suite: int
    secrets: tuple[EncryptedGroupSecrets, ...]
    encrypted_group_info: bytes

    def encode(self, w: Writer) -> None:
        w.u16(self.cipher_suite).vector(self.secrets, encode_struct)
        w.opaque(self.encrypted_group_info)

    @classmethod
    def decode(cls, r: Reader) -> Welcome:
        return cls(r.u16(), tuple(r.vector(EncryptedGroupSecrets.decode)), r.opaque())
