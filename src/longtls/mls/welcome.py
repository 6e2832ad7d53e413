"""The cryptographic parts of joining (RFC 9420 §12.4.3, §12.4.3.1).

- GroupInfo: signed by the committer (SignWithLabel "GroupInfoTBS") and
  encrypted with the welcome key and nonce of the new epoch:
  ``encrypted_group_info = AEAD.Seal(welcome_key, welcome_nonce, "", GroupInfo)``.
- GroupSecrets: encrypted to each new member's KeyPackage init key with
  ``EncryptWithLabel(init_key, "Welcome", encrypted_group_info, group_secrets)``
  and named by the KeyPackageRef.
- ``open_welcome``: the joiner's first steps: find its entry, decrypt the
  GroupSecrets, derive the welcome secret (with the PSKs it names), decrypt
  the GroupInfo.  The rest
  of joining (the tree, the signature with the signer's key from the tree,
  the confirmation tag) is ``group.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import MLSError
from .codec import decode
from .crypto import Suite, suite
from .key_package import KeyPackageBundle
from .key_schedule import psk_secret, welcome_key_nonce, welcome_secret
from .messages import (
    EncryptedGroupSecrets,
    GroupInfo,
    GroupSecrets,
    HPKECiphertext,
    KeyPackage,
    PreSharedKeyID,
    PSKType,
    ResumptionPSKUsage,
    Welcome,
)

__all__ = [
    "OpenedWelcome",
    "PSKLookup",
    "ResumptionPSKLookup",
    "decrypt_group_info",
    "encrypt_group_info",
    "encrypt_group_secrets",
    "external_psk_secret",
    "open_welcome",
    "sign_group_info",
    "verify_group_info",
]

#: The value of an external PSK by its psk_id, or None if we do not have it.
PSKLookup = Callable[[bytes], bytes | None]
#: The resumption_psk of (group_id, epoch), or None if we do not have it.
ResumptionPSKLookup = Callable[[bytes, int], bytes | None]

_WELCOME = b"Welcome"
_GROUP_INFO_TBS = b"GroupInfoTBS"


def sign_group_info(suite: Suite, signature_private_key: bytes, info: GroupInfo) -> GroupInfo:
    """The GroupInfo with ``signature = SignWithLabel(., "GroupInfoTBS", GroupInfoTBS)``."""
    signature = suite.sign_with_label(signature_private_key, _GROUP_INFO_TBS, info.tbs())
    return GroupInfo(info.group_context, info.extensions, info.confirmation_tag, info.signer, signature)


def verify_group_info(suite: Suite, signature_public_key: bytes, info: GroupInfo) -> None:
    """MLSError unless the GroupInfo's signature verifies under the signer's key."""
    if not suite.verify_with_label(signature_public_key, _GROUP_INFO_TBS, info.tbs(), info.signature):
        raise MLSError("GroupInfo signature does not verify (RFC 9420 §12.4.3)")


def encrypt_group_info(suite: Suite, welcome_secret: bytes, info: GroupInfo) -> bytes:
    """encrypted_group_info under welcome_key / welcome_nonce, empty AAD (§12.4.3.1)."""
    key, nonce = welcome_key_nonce(suite, welcome_secret)
    return suite.aead_encrypt(key, nonce, b"", info.to_bytes())


def decrypt_group_info(suite: Suite, welcome_secret: bytes, encrypted_group_info: bytes) -> GroupInfo:
    """MLSDecryptError if it does not open; DecodeError if it is not a GroupInfo."""
    key, nonce = welcome_key_nonce(suite, welcome_secret)
    return GroupInfo.from_bytes(suite.aead_decrypt(key, nonce, b"", encrypted_group_info))


def encrypt_group_secrets(
    suite: Suite, key_package: KeyPackage, encrypted_group_info: bytes, secrets: GroupSecrets
) -> EncryptedGroupSecrets:
    """One new member's entry: EncryptWithLabel(init_key, "Welcome",
    encrypted_group_info, GroupSecrets), named by its KeyPackageRef (§12.4.3.1)."""
    kem_output, ciphertext = suite.encrypt_with_label(
        key_package.init_key, _WELCOME, encrypted_group_info, secrets.to_bytes())
    return EncryptedGroupSecrets(suite.make_key_package_ref(key_package.to_bytes()),
                                 HPKECiphertext(kem_output, ciphertext))


def external_psk_secret(
    suite: Suite,
    psks: tuple[PreSharedKeyID, ...],
    lookup: PSKLookup | None,
    resumption: ResumptionPSKLookup | None = None,
) -> bytes | None:
    """psk_secret (§8.4) of a Commit's or Welcome's PSKs, in their order, or
    None for none.  External PSKs come from ``lookup``; resumption PSKs of
    usage ``application`` from ``resumption`` (a group's earlier epochs,
    §8.6).  longtls does not reinitialise or branch groups, so the other
    usages, like a PSK we do not have, are one "the client is not in
    possession of": MLSError (§12.4.2, §12.4.3.1).  A psk_nonce must be
    KDF.Nh bytes (§8.4)."""
    if not psks:
        return None
    values = []
    for psk in psks:
        if len(psk.psk_nonce) != suite.nh:
            raise MLSError("psk_nonce is not KDF.Nh bytes (RFC 9420 §8.4)")
        value = None
        if psk.psktype == PSKType.external:
            if psk.psk_id is not None and lookup is not None:
                value = lookup(psk.psk_id)
        elif (psk.usage == ResumptionPSKUsage.application and resumption is not None
              and psk.psk_group_id is not None and psk.psk_epoch is not None):
            value = resumption(psk.psk_group_id, psk.psk_epoch)
        if value is None:
            raise MLSError(f"PSK {psk.psktype.name} is not available (RFC 9420 §8.4)")
        values.append((psk.to_bytes(), value))
    return psk_secret(suite, values)


@dataclass(frozen=True, slots=True)
class OpenedWelcome:
    """What a joiner learns from its Welcome before it looks at the tree."""

    group_secrets: GroupSecrets
    group_info: GroupInfo
    psk_secret: bytes | None = field(repr=False, default=None)


def open_welcome(welcome: Welcome, bundle: KeyPackageBundle, psks: PSKLookup | None = None) -> OpenedWelcome:
    """The first steps of joining (§12.4.3.1): our entry in ``secrets`` (by
    KeyPackageRef, with the Welcome's suite, which must be our KeyPackage's),
    the GroupSecrets under our init key, the PSKs it names (external ones
    from ``psks``), then the GroupInfo under the welcome key.  The
    GroupInfo's suite must be ours too."""
    kp = bundle.key_package
    if welcome.cipher_suite != kp.cipher_suite:
        raise MLSError("Welcome cipher suite is not our KeyPackage's (RFC 9420 §12.4.3.1)")
    cs = suite(welcome.cipher_suite)
    ref = cs.make_key_package_ref(kp.to_bytes())
    entries = [s for s in welcome.secrets if s.new_member == ref]
    if not entries:
        raise MLSError("the Welcome has no entry for our KeyPackage (RFC 9420 §12.4.3.1)")
    sealed = entries[0].encrypted_group_secrets
    secrets = decode(
        cs.decrypt_with_label(bundle.init_private_key, _WELCOME, welcome.encrypted_group_info,
                              sealed.kem_output, sealed.ciphertext),
        GroupSecrets.decode,
    )
    if len(secrets.joiner_secret) != cs.nh:
        raise MLSError("joiner_secret is not KDF.Nh bytes")
    psk = external_psk_secret(cs, secrets.psks, psks)
    info = decrypt_group_info(cs, welcome_secret(cs, secrets.joiner_secret, psk), welcome.encrypted_group_info)
    if info.group_context.cipher_suite != kp.cipher_suite:
        raise MLSError("GroupInfo cipher suite is not our KeyPackage's (RFC 9420 §12.4.3.1)")
    return OpenedWelcome(secrets, info, psk)
