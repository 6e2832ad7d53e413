"""KeyPackages: creation and validation (RFC 9420 §10, §10.1, §7.3).

``create_key_package`` makes a KeyPackage with a fresh HPKE init key, a
fresh leaf encryption key and (unless one is given) a fresh signature key,
and returns it with its private keys as a ``KeyPackageBundle``: the
initiator of a two-party connection sends ``bundle.key_package`` and keeps
the bundle to join from the Welcome.  ``validate_key_package`` is what the
responder does with a KeyPackage before adding it (§10.1): version, suite,
the leaf node as a key_package leaf (§7.3), the signature, init_key !=
encryption_key.  Credential validation (§5.3.1) is the application's: the
caller passes a ``credential_check`` (the channel checks an X.509 chain or
a pinned key there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import MLSError
from .crypto import SUITES, Suite, suite
from .messages import (
    Capabilities,
    Credential,
    CredentialType,
    Extension,
    ExtensionType,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    ProtocolVersion,
)
from .proposals import ProposalType
from .tree import sign_leaf_node

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "NOT_BEFORE_SKEW",
    "CredentialCheck",
    "KeyPackageBundle",
    "check_leaf_capabilities",
    "create_key_package",
    "default_capabilities",
    "validate_key_package",
]

#: How long a KeyPackage we create is valid (§7.2: the lifetime of a
#: key_package LeafNode).  A two-party KeyPackage is used at once, in the
#: ClientHello of one connection: a day is generous.  Our choice.
DEFAULT_LIFETIME = 24 * 3600
#: ``not_before`` of our KeyPackages lies this far in the past, so that a
#: peer whose clock is a little behind still accepts it.  Our choice.
NOT_BEFORE_SKEW = 3600
#: "Applications MUST define a maximum total lifetime that is acceptable for
#: a LeafNode, and reject any LeafNode where the total lifetime is longer"
#: (§7.2).  longtls: 90 days, for KeyPackages it is asked to add.
MAX_LIFETIME = 90 * 24 * 3600

#: The application's credential validation (§5.3.1): given a credential and
#: the signature key it is to authenticate, raise MLSError to refuse it.
CredentialCheck = Callable[[Credential, bytes], None]

# §7.2: the "default" proposal and extension types, which every client
# supports and which MUST NOT be listed in capabilities.
_DEFAULT_PROPOSALS = frozenset(int(p) for p in ProposalType)
_DEFAULT_EXTENSIONS = frozenset(int(e) for e in ExtensionType)


@dataclass(frozen=True, slots=True)
class KeyPackageBundle:
    """A KeyPackage with its three private keys (never in repr)."""

    key_package: KeyPackage
    init_private_key: bytes = field(repr=False)
    encryption_private_key: bytes = field(repr=False)
    signature_private_key: bytes = field(repr=False)

    @property
    def suite(self) -> Suite:
        return suite(self.key_package.cipher_suite)

    def ref(self) -> bytes:
        """The KeyPackageRef (§5.2) a Welcome names this KeyPackage by."""
        return self.suite.make_key_package_ref(self.key_package.to_bytes())


def default_capabilities(credential_types: tuple[int, ...] = (CredentialType.basic, CredentialType.x509)) -> Capabilities:
    """What longtls supports (§7.2): MLS 1.0, the suites of ``SUITES``, no
    non-default extensions or proposals (the defaults MUST NOT be listed),
    basic and X.509 credentials."""
    return Capabilities(
        versions=(ProtocolVersion.mls10,),
        cipher_suites=tuple(int(c) for c in SUITES),
        credentials=credential_types,
    )


def create_key_package(
    cipher_suite: int,
    credential: Credential,
    signature_private_key: bytes | None = None,
    *,
    capabilities: Capabilities | None = None,
    lifetime: int = DEFAULT_LIFETIME,
    now: int | None = None,
    extensions: tuple[Extension, ...] = (),
    leaf_extensions: tuple[Extension, ...] = (),
) -> KeyPackageBundle:
    """A fresh KeyPackage (§10): new init and encryption key pairs (distinct,
    as §10.1 requires), the given or a new signature key, a key_package leaf
    valid from ``now - NOT_BEFORE_SKEW`` for ``lifetime`` seconds, signed."""
    cs = suite(cipher_suite)
    if signature_private_key is None:
        signature_private_key, signature_public_key = cs.generate_signature_key_pair()
    else:
        signature_public_key = cs.signature_public_key(signature_private_key)
    init_private, init_public = cs.generate_key_pair()
    encryption_private, encryption_public = cs.generate_key_pair()
    start = int(time.time()) if now is None else now
    caps = capabilities or default_capabilities()
    leaf = sign_leaf_node(cs, LeafNode(
        encryption_public, signature_public_key, credential, caps, LeafNodeSource.key_package,
        lifetime=Lifetime(max(0, start - NOT_BEFORE_SKEW), start + lifetime),
        extensions=leaf_extensions,
    ), signature_private_key)
    unsigned = KeyPackage(ProtocolVersion.mls10, cipher_suite, init_public, leaf, extensions)
    signature = cs.sign_with_label(signature_private_key, b"KeyPackageTBS", unsigned.tbs())
    key_package = KeyPackage(unsigned.version, unsigned.cipher_suite, unsigned.init_key, leaf,
                             extensions, signature)
    check_leaf_capabilities(leaf, extensions)
    return KeyPackageBundle(key_package, init_private, encryption_private, signature_private_key)


def check_leaf_capabilities(leaf: LeafNode, other_extensions: tuple[Extension, ...] = ()) -> None:
    """The rules of §7.2/§7.3 a LeafNode's capabilities must satisfy on its
    own: its credential type is listed, every non-default extension of the
    leaf (and of ``other_extensions``, a KeyPackage's: §10) is listed, and
    no default proposal or extension type is listed."""
    caps = leaf.capabilities
    if leaf.credential.credential_type not in caps.credentials:
        raise MLSError("LeafNode credential type is not in its capabilities (RFC 9420 §7.2)")
    for ext in (*leaf.extensions, *other_extensions):
        if ext.extension_type not in _DEFAULT_EXTENSIONS and ext.extension_type not in caps.extensions:
            raise MLSError(f"extension {ext.extension_type} is not in the LeafNode's capabilities (RFC 9420 §7.3)")
    if _DEFAULT_PROPOSALS.intersection(caps.proposals) or _DEFAULT_EXTENSIONS.intersection(caps.extensions):
        raise MLSError("LeafNode capabilities list a default proposal or extension type (RFC 9420 §7.2)")


def validate_key_package(
    key_package: KeyPackage,
    *,
    cipher_suite: int | None = None,
    credential_check: CredentialCheck | None = None,
    now: int | None = None,
    check_time: bool = True,
    max_lifetime: int | None = MAX_LIFETIME,
) -> None:
    """KeyPackage validation (§10.1, with the key_package leaf rules of §7.3).

    ``cipher_suite``: the group's, if there is one yet (the two-party
    responder creates its group with the KeyPackage's own suite after this).
    ``now`` (default: the clock) must lie within the leaf's lifetime, which
    may not exceed ``max_lifetime`` seconds: the KeyPackage goes into a
    Commit we send (§7.3 makes the check a MUST then).  ``check_time=False``
    skips the clock for a KeyPackage in a Commit we receive (RECOMMENDED
    only: it may have expired in transit).  MLSError otherwise.
    """
    if key_package.version != ProtocolVersion.mls10:
        raise MLSError(f"KeyPackage version {key_package.version} is not mls10 (RFC 9420 §10.1)")
    if cipher_suite is not None and key_package.cipher_suite != cipher_suite:
        raise MLSError("KeyPackage cipher suite is not the group's (RFC 9420 §10.1)")
    cs = suite(key_package.cipher_suite)  # MLSError for a suite we do not implement
    leaf = key_package.leaf_node
    if leaf.leaf_node_source != LeafNodeSource.key_package or leaf.lifetime is None:
        raise MLSError("a KeyPackage's leaf node source must be key_package (RFC 9420 §10)")
    # The keys must be keys of the suite (§10: "MUST be valid for the cipher suite").
    cs.check_hpke_public_key(key_package.init_key)
    cs.check_hpke_public_key(leaf.encryption_key)
    cs.check_signature_public_key(leaf.signature_key)
    if key_package.cipher_suite not in leaf.capabilities.cipher_suites:
        raise MLSError("KeyPackage cipher suite is not in its leaf's capabilities (RFC 9420 §11)")
    if ProtocolVersion.mls10 not in leaf.capabilities.versions:
        raise MLSError("KeyPackage leaf does not support MLS 1.0 (RFC 9420 §7.2)")
    if credential_check is not None:
        credential_check(leaf.credential, leaf.signature_key)
    if not cs.verify_with_label(leaf.signature_key, b"LeafNodeTBS", leaf.tbs(), leaf.signature):
        raise MLSError("KeyPackage LeafNode signature does not verify (RFC 9420 §7.3)")
    check_leaf_capabilities(leaf, key_package.extensions)
    clock = int(time.time()) if now is None else now
    lifetime = leaf.lifetime
    if check_time and not lifetime.not_before <= clock <= lifetime.not_after:
        raise MLSError("KeyPackage is outside its lifetime (RFC 9420 §7.3)")
    if max_lifetime is not None and lifetime.not_after - lifetime.not_before > max_lifetime:
        raise MLSError(f"KeyPackage lifetime exceeds {max_lifetime} seconds (RFC 9420 §7.2)")
    if not cs.verify_with_label(leaf.signature_key, b"KeyPackageTBS", key_package.tbs(),
                                key_package.signature):
        raise MLSError("KeyPackage signature does not verify (RFC 9420 §10)")
    if key_package.init_key == leaf.encryption_key:
        raise MLSError("KeyPackage init_key equals its encryption_key (RFC 9420 §10.1)")
