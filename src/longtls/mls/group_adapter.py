"""MLS-TLS on longtls's MLS group: the ``TwoPartyGroup`` of mls/two_party.py,
and the initiator's and responder's sides of the initial key agreement.

This is where docs/mls-tls.md's decisions meet RFC 9420 structures:

- §3, cross-protocol separation (draft-kohbrok-mls-tls-01 §"Preventing
  cross-protocol attacks", TODO there): the initiator's KeyPackage leaf node
  carries the ``mls_tls`` extension (data: the ASCII bytes "MLS-TLS"), and the
  GroupContext carries the same extension and a ``required_capabilities``
  naming it.  Every signature over a FramedContent (FramedContentTBS
  includes the GroupContext for member senders, RFC 9420 §6.1), every
  epoch secret (the GroupContext enters the key schedule, §8) and so every
  exported record secret is bound to MLS-TLS; a KeyPackage made for another
  application does not open an MLS-TLS channel, and one made for MLS-TLS
  cannot be added to a group of another application that does not list it.
- §4, ALPN: the offer is a ``mls_tls_alpn`` extension in the KeyPackage's own
  extensions (signed by the initiator), the choice the same extension in the
  GroupContext with exactly one name (authenticated by the Welcome's signed
  GroupInfo and the key schedule).  Both encode a ProtocolNameList as
  RFC 7301 §3.1 does.
- Commits travel as PublicMessages (the record layer encrypts them already;
  a PrivateMessage adds nothing inside a protected record) with an
  UpdatePath; a received PrivateMessage commit is accepted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..constants import AlertDescription, MLSTLSExtensionType
from ..errors import DecodeError, MLSError
from ..wire.extensions import decode_alpn, encode_alpn
from .framing import MLSMessage, PrivateMessage, PublicMessage
from .group import Group, IdentityCheck
from .key_package import (
    MAX_LIFETIME,
    CredentialCheck,
    KeyPackageBundle,
    create_key_package,
    default_capabilities,
    validate_key_package,
)
from .messages import (
    Capabilities,
    Credential,
    Extension,
    ExtensionType,
    GroupContext,
    KeyPackage,
    LeafNode,
    RequiredCapabilities,
    Welcome,
    find_extension,
)

__all__ = [
    "MLS_TLS_MARKER",
    "MLSTLSCreator",
    "MLSTLSGroup",
    "MLSTLSJoiner",
    "commit_framing",
    "mls_tls_capabilities",
]

#: The data of the ``mls_tls`` extension (docs/mls-tls.md §3).
MLS_TLS_MARKER = b"MLS-TLS"
_MARKER = Extension(MLSTLSExtensionType.mls_tls, MLS_TLS_MARKER)


def mls_tls_capabilities() -> Capabilities:
    """longtls's capabilities plus the two MLS-TLS extensions (RFC 9420 §7.2:
    every non-default extension a leaf, its KeyPackage or the group uses is listed)."""
    return replace(default_capabilities(),
                   extensions=(MLSTLSExtensionType.mls_tls, MLSTLSExtensionType.mls_tls_alpn))


def _has_marker(extensions: Sequence[Extension]) -> bool:
    found = find_extension(extensions, MLSTLSExtensionType.mls_tls)
    return found is not None and found.extension_data == MLS_TLS_MARKER


def _decode(message: bytes) -> MLSMessage:
    return MLSMessage.from_bytes(message)  # DecodeError on anything malformed or trailing


def commit_framing(message: bytes) -> tuple[bytes, int]:
    """(group_id, epoch) of a commit's framing: the responder of a resumption
    finds its stored state by the group_id and places the commit by its epoch
    (docs/mls-tls.md §8).  Both are in the clear in either framing
    (RFC 9420 §6.2, §6.3); nothing is verified here.  DecodeError if
    malformed, MLSError if it is neither a PublicMessage nor a PrivateMessage."""
    body = _decode(message).body
    if isinstance(body, PublicMessage):
        return body.content.group_id, body.content.epoch
    if isinstance(body, PrivateMessage):
        return body.group_id, body.epoch
    raise MLSError("a resumption commit must be a PublicMessage or PrivateMessage")


class MLSTLSGroup:
    """A ``TwoPartyGroup`` over a ``Group``: one pending commit at a time.

    For resumption (docs/mls-tls.md §8) it also keeps the pending commit's
    message as sent and the commit message that made the current epoch
    (``last_commit``), and ``snapshot`` copies it: ``Group`` objects never
    change (each epoch is a new one), so a copy shares them safely.
    """

    __slots__ = ("group", "_pending", "_pending_message", "last_commit", "_initiator_leaf", "alpn")

    def __init__(self, group: Group, *, initiator_leaf: int, alpn: bytes | None) -> None:
        self.group = group
        self._pending: Group | None = None
        self._pending_message: bytes | None = None
        #: The commit (MLSMessage bytes, as on the wire) that moved the group
        #: into its current epoch, ours or the peer's; None after the Welcome.
        self.last_commit: bytes | None = None
        self._initiator_leaf = initiator_leaf
        #: The application protocol the GroupContext names, if any.
        self.alpn = alpn

    def snapshot(self) -> MLSTLSGroup:
        """An independent copy: later commits on either leave the other as it was."""
        copy = MLSTLSGroup(self.group, initiator_leaf=self._initiator_leaf, alpn=self.alpn)
        copy._pending, copy._pending_message, copy.last_commit = self._pending, self._pending_message, self.last_commit
        return copy

    @property
    def group_id(self) -> bytes:
        return self.group.group_id

    def commit_epoch(self, message: bytes) -> int:
        """The epoch a commit's framing names; MLSError if another group's."""
        group_id, epoch = commit_framing(message)
        if group_id != self.group.group_id:
            raise MLSError("the commit is for another group")
        return epoch

    @property
    def pending_commit(self) -> bytes | None:
        """Our pending commit's MLSMessage, as sent, while one is pending."""
        return self._pending_message

    def __repr__(self) -> str:
        return f"<MLSTLSGroup {self.group!r} pending={self._pending is not None}>"

    @property
    def epoch(self) -> int:
        return self.group.epoch

    @property
    def cipher_suite(self) -> int:
        return self.group.context.cipher_suite

    @property
    def peer_leaf(self) -> LeafNode:
        peer = self.group.member(1 - self.group.own_leaf)
        if peer is None:
            raise MLSError("the group has no peer")
        return peer

    @property
    def peer_identity(self) -> bytes:
        return self.peer_leaf.credential.to_bytes()

    def export(self, label: bytes, context: bytes, length: int) -> bytes:
        return self.group.export(label, context, length)

    def create_self_update(self) -> bytes:
        if self._pending is not None:
            raise MLSError("a commit is already pending")
        out = self.group.commit()  # no proposals, with an UpdatePath: a self-update (RFC 9420 §12.4)
        self._pending = out.group
        self._pending_message = out.message.to_bytes()
        return self._pending_message

    def merge_pending(self) -> int:
        if self._pending is None:
            raise MLSError("no commit is pending")
        self.group, self._pending = self._pending, None
        self.last_commit, self._pending_message = self._pending_message, None
        return self.group.epoch

    def discard_pending(self) -> None:
        self._pending = None
        self._pending_message = None

    def process_commit(self, message: bytes) -> int:
        decoded = _decode(message)
        if not isinstance(decoded.body, (PublicMessage, PrivateMessage)):
            raise MLSError("a ConnectionUpdate must carry a PublicMessage or PrivateMessage")
        processed = self.group.process_commit(decoded)
        if self.group.own_leaf != self._initiator_leaf:
            # The peer is the initiator: its leaf keeps the marker (docs §3).
            leaf = processed.group.member(self._initiator_leaf)
            if leaf is None or not _has_marker(leaf.extensions):
                raise MLSError("the initiator's new leaf node lacks the mls_tls extension")
        self.group = processed.group
        self.last_commit = bytes(message)
        return self.group.epoch


class MLSTLSJoiner:
    """The initiator (a ``GroupJoiner``): a KeyPackage marked for MLS-TLS,
    then the join by the responder's Welcome."""

    def __init__(self, cipher_suite: int, credential: Credential, signature_private_key: bytes | None = None, *,
                 credential_check: CredentialCheck | None = None, identity_check: IdentityCheck | None = None,
                 alpn_protocols: Sequence[bytes] = ()) -> None:
        self.cipher_suite = cipher_suite
        self._credential = credential
        self._signature_private_key = signature_private_key
        self._credential_check = credential_check
        self._identity_check = identity_check
        self.alpn_protocols = tuple(alpn_protocols)
        self._bundle: KeyPackageBundle | None = None

    def key_package(self) -> bytes:
        offer = (Extension(MLSTLSExtensionType.mls_tls_alpn, encode_alpn(self.alpn_protocols)),) \
            if self.alpn_protocols else ()
        self._bundle = create_key_package(self.cipher_suite, self._credential, self._signature_private_key,
                                          capabilities=mls_tls_capabilities(), extensions=offer,
                                          leaf_extensions=(_MARKER,))
        return MLSMessage(self._bundle.key_package).to_bytes()

    def join(self, welcome: bytes) -> MLSTLSGroup:
        if self._bundle is None:
            raise MLSError("join before a KeyPackage was made")
        decoded = _decode(welcome)
        if not isinstance(decoded.body, Welcome):
            raise MLSError("the ServerHello does not carry a Welcome")
        group = Group.join(decoded.body, self._bundle, credential_check=self._credential_check,
                           identity_check=self._identity_check)
        self._bundle = None  # its private keys are spent
        _check_context(group.context)
        alpn = self._chosen_protocol(group.context)
        return MLSTLSGroup(group, initiator_leaf=group.own_leaf, alpn=alpn)

    def _chosen_protocol(self, context: GroupContext) -> bytes | None:
        ext = find_extension(context.extensions, MLSTLSExtensionType.mls_tls_alpn)
        if ext is None:
            return None
        try:
            names = decode_alpn(ext.extension_data)
        except DecodeError:
            raise MLSError("malformed mls_tls_alpn extension in the GroupContext") from None
        # RFC 7301 §3.1: the server names exactly one protocol, one we offered.
        if len(names) != 1 or names[0] not in self.alpn_protocols:
            raise MLSError("the responder chose an application protocol we did not offer",
                           AlertDescription.illegal_parameter)
        return names[0]


def _check_context(context: GroupContext) -> None:
    """docs/mls-tls.md §3: the GroupContext names MLS-TLS and requires it."""
    if not _has_marker(context.extensions):
        raise MLSError("the group is not an MLS-TLS group (no mls_tls GroupContext extension)")
    required = find_extension(context.extensions, ExtensionType.required_capabilities)
    try:
        types = () if required is None else RequiredCapabilities.from_bytes(required.extension_data).extension_types
    except DecodeError:
        raise MLSError("malformed required_capabilities extension") from None
    if MLSTLSExtensionType.mls_tls not in types:
        raise MLSError("the group's required_capabilities do not name mls_tls")


class MLSTLSCreator:
    """The responder (a ``GroupCreator``): validate the KeyPackage, create the
    group with the MLS-TLS GroupContext, commit the Add, return the Welcome."""

    def __init__(self, credential: Credential, signature_private_key: bytes, *,
                 allowed_suites: Sequence[int] | None = None, credential_check: CredentialCheck | None = None,
                 identity_check: IdentityCheck | None = None, alpn_protocols: Sequence[bytes] = (),
                 max_lifetime: int | None = MAX_LIFETIME) -> None:
        self._credential = credential
        self._signature_private_key = signature_private_key
        #: The longest KeyPackage lifetime accepted (RFC 9420 §7.2; the
        #: channel passes Configuration.mls_max_key_package_lifetime).
        self.max_lifetime = max_lifetime
        self.allowed_suites = None if allowed_suites is None else tuple(allowed_suites)
        self._credential_check = credential_check
        self._identity_check = identity_check
        self.alpn_protocols = tuple(alpn_protocols)

    def create(self, key_package: bytes) -> tuple[MLSTLSGroup, bytes]:
        decoded = _decode(key_package)
        kp = decoded.body
        if not isinstance(kp, KeyPackage):
            raise MLSError("the ClientHello does not carry a KeyPackage")
        # Two-party profile §4: "checks whether it supports the offered
        # ciphersuite ... MUST interface with the AS" (credential_check).
        if self.allowed_suites is not None and kp.cipher_suite not in self.allowed_suites:
            raise MLSError(f"KeyPackage cipher suite 0x{kp.cipher_suite:04x} is not allowed",
                           AlertDescription.handshake_failure)
        validate_key_package(kp, credential_check=self._credential_check, max_lifetime=self.max_lifetime)
        if not _has_marker(kp.leaf_node.extensions):
            raise MLSError("the KeyPackage is not marked for MLS-TLS (no mls_tls leaf extension)")
        alpn = self._select_protocol(kp)
        context_extensions = [_MARKER, RequiredCapabilities(extension_types=(MLSTLSExtensionType.mls_tls,)).extension()]
        if alpn is not None:
            context_extensions.append(Extension(MLSTLSExtensionType.mls_tls_alpn, encode_alpn([alpn])))
        group = Group.create(kp.cipher_suite, self._credential, self._signature_private_key,
                             extensions=tuple(context_extensions), capabilities=mls_tls_capabilities(),
                             credential_check=self._credential_check, identity_check=self._identity_check)
        out = group.commit(adds=[kp], max_lifetime=self.max_lifetime)
        assert out.welcome is not None
        initiator_leaf = 1 - out.group.own_leaf
        return MLSTLSGroup(out.group, initiator_leaf=initiator_leaf, alpn=alpn), MLSMessage(out.welcome).to_bytes()

    def _select_protocol(self, kp: KeyPackage) -> bytes | None:
        ext = find_extension(kp.extensions, MLSTLSExtensionType.mls_tls_alpn)
        if ext is None or not self.alpn_protocols:
            return None  # as in TLS: no offer, or nothing configured, is no ALPN
        try:
            offered = decode_alpn(ext.extension_data)
        except DecodeError:
            raise MLSError("malformed mls_tls_alpn extension in the KeyPackage") from None
        for name in self.alpn_protocols:  # our preference order, as a TLS server's
            if name in offered:
                return name
        # RFC 7301 §3.2.
        raise MLSError("no application protocol in common", AlertDescription.no_application_protocol)
