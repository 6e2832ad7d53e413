"""Content authentication and message protection (RFC 9420 §6.1-§6.3).

A member turns a FramedContent into an AuthenticatedContent by signing it
(``sign_content``: SignWithLabel "FramedContentTBS" over the content, the
wire format it will travel in and the GroupContext of the epoch), then
protects it for the wire:

- as a PublicMessage (``protect_public``): the membership tag,
  MAC(membership_key, AuthenticatedContentTBM) (§6.2);
- as a PrivateMessage (``protect_private``): the PrivateMessageContent is
  sealed with the next key and nonce of the sender's handshake or
  application ratchet (the nonce XORed with a fresh reuse guard), and the
  SenderData with a key and nonce derived from ``sender_data_secret`` and a
  sample of that ciphertext (§6.3.1, §6.3.2).

``unprotect_public`` / ``unprotect_private`` undo that and check everything
§6 asks of a receiver: group and epoch, the membership tag, the AEADs, the
zero padding, that the sender's leaf is not blank, and the signature.  The
confirmation tag of a commit is the group's to check (it needs the new
epoch's confirmation key, §12.4.2).  Only member senders are supported:
longtls's groups have no external senders and take no external commits
(docs/mls.md, "Group").

Every failure is an ``MLSError`` (``MLSDecryptError`` for a ciphertext that
does not open); malformed encodings are ``DecodeError``s.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import MLSError
from .codec import decode
from .crypto import Suite
from .framing import (
    AuthenticatedContent,
    AuthenticatedContentTBM,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    FramedContentTBS,
    PrivateContentAAD,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
    SenderData,
    SenderDataAAD,
    SenderType,
    WireFormat,
)
from .messages import GroupContext
from .secret_tree import RatchetType, SecretTree, sender_data_key_nonce

__all__ = [
    "SignatureKeyLookup",
    "authenticated_content",
    "membership_tag",
    "protect_private",
    "protect_public",
    "sign_content",
    "unprotect_private",
    "unprotect_public",
    "verify_content",
]

#: The signature key of the member at a leaf index, or None for a blank leaf
#: (or one outside the tree): how the receiver finds the key a member
#: sender's signature must verify under (§6.1).
SignatureKeyLookup = Callable[[int], bytes | None]

_FRAMED_CONTENT_TBS = b"FramedContentTBS"


def _context_for(content: FramedContent, context: GroupContext) -> GroupContext | None:
    # FramedContentTBS carries the GroupContext for member and
    # new_member_commit senders only (§6.1).
    if content.sender.sender_type in (SenderType.member, SenderType.new_member_commit):
        return context
    return None


def sign_content(
    suite: Suite,
    signature_private_key: bytes,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext,
) -> bytes:
    """SignWithLabel(., "FramedContentTBS", FramedContentTBS) (§6.1): the
    signature of a FramedContent to be sent as ``wire_format`` in the epoch
    of ``context``."""
    tbs = FramedContentTBS(wire_format, content, _context_for(content, context))
    return suite.sign_with_label(signature_private_key, _FRAMED_CONTENT_TBS, tbs.to_bytes())


def verify_content(
    suite: Suite, signature_public_key: bytes, content: AuthenticatedContent, context: GroupContext
) -> None:
    """VerifyWithLabel of an AuthenticatedContent's signature (§6.1); MLSError
    if it does not verify."""
    tbs = content.tbs(_context_for(content.content, context))
    if not suite.verify_with_label(
        signature_public_key, _FRAMED_CONTENT_TBS, tbs.to_bytes(), content.auth.signature
    ):
        raise MLSError("FramedContent signature does not verify (RFC 9420 §6.1)")


def membership_tag(
    suite: Suite, membership_key: bytes, content: AuthenticatedContent, context: GroupContext
) -> bytes:
    """MAC(membership_key, AuthenticatedContentTBM) (§6.2)."""
    tbm = AuthenticatedContentTBM(content.tbs(_context_for(content.content, context)), content.auth)
    return suite.mac(membership_key, tbm.to_bytes())


def _check_group_epoch(group_id: bytes, epoch: int, context: GroupContext) -> None:
    # §12.4.2 (first step) and §6: a message of another group or epoch is not
    # processed with this epoch's keys.
    if group_id != context.group_id:
        raise MLSError("MLS message is for another group")
    if epoch != context.epoch:
        raise MLSError(f"MLS message is for epoch {epoch}, the group is in epoch {context.epoch}")


def _member_key(sender: Sender, lookup: SignatureKeyLookup) -> bytes:
    if sender.sender_type != SenderType.member or sender.leaf_index is None:
        raise MLSError(f"MLS sender type {sender.sender_type.name} is not supported")
    key = lookup(sender.leaf_index)
    if key is None:
        raise MLSError(f"MLS sender leaf {sender.leaf_index} is blank (RFC 9420 §6.3.2)")
    return key


# ------------------------------------------------------------ PublicMessage


def protect_public(
    suite: Suite, content: AuthenticatedContent, context: GroupContext, membership_key: bytes
) -> PublicMessage:
    """A member's AuthenticatedContent as a PublicMessage (§6.2).

    Application data is never sent this way ("Applications MUST use
    PrivateMessage to encrypt application messages", §6): ValueError.
    """
    if content.wire_format != WireFormat.mls_public_message:
        raise ValueError("the content was signed for another wire format")
    if content.content.content_type == ContentType.application:
        raise ValueError("application messages are PrivateMessages (RFC 9420 §6)")
    if content.content.sender.sender_type != SenderType.member:
        raise ValueError("only member senders are supported")
    tag = membership_tag(suite, membership_key, content, context)
    return PublicMessage(content.content, content.auth, tag)


def unprotect_public(
    suite: Suite,
    message: PublicMessage,
    context: GroupContext,
    membership_key: bytes,
    signature_key: SignatureKeyLookup,
) -> AuthenticatedContent:
    """Check a received PublicMessage (§6.2): group and epoch, the content
    type (never application), the membership tag, then the signature with
    the sender's key.  The confirmation tag of a commit is left to the group."""
    content = message.content
    _check_group_epoch(content.group_id, content.epoch, context)
    if content.content_type == ContentType.application:
        raise MLSError("application data in a PublicMessage (RFC 9420 §6)")
    public_key = _member_key(content.sender, signature_key)
    authenticated = message.authenticated_content()
    tag = message.membership_tag
    if tag is None or not suite.verify_mac(
        membership_key, AuthenticatedContentTBM(authenticated.tbs(context), authenticated.auth).to_bytes(), tag
    ):
        raise MLSError("PublicMessage membership_tag does not verify (RFC 9420 §6.2)")
    verify_content(suite, public_key, authenticated, context)
    return authenticated


# ----------------------------------------------------------- PrivateMessage


def _ratchet_type(content_type: ContentType) -> RatchetType:
    # §6.3.1: application messages use the application ratchet, proposals and
    # commits (handshake messages) the handshake ratchet.
    return RatchetType.APPLICATION if content_type == ContentType.application else RatchetType.HANDSHAKE


def _guarded(nonce: bytes, reuse_guard: bytes) -> bytes:
    """The nonce with its first four bytes XORed with the reuse guard (§6.3.1)."""
    head = bytes(a ^ b for a, b in zip(nonce[:4], reuse_guard, strict=True))
    return head + nonce[4:]


def protect_private(
    suite: Suite,
    content: AuthenticatedContent,
    sender_data_secret: bytes,
    secret_tree: SecretTree,
    *,
    padding: int = 0,
    reuse_guard: bytes | None = None,
) -> PrivateMessage:
    """A member's AuthenticatedContent as a PrivateMessage (§6.3).

    Takes the next generation of the sender's ratchet (each is used once).
    ``padding`` zero bytes follow the content; ``reuse_guard`` is fresh random
    bytes unless given (tests only).
    """
    framed = content.content
    if content.wire_format != WireFormat.mls_private_message:
        raise ValueError("the content was signed for another wire format")
    sender = framed.sender
    if sender.sender_type != SenderType.member or sender.leaf_index is None:
        # "the sender MUST verify Sender.sender_type is member" (§6.3.2)
        raise ValueError("only member senders send PrivateMessages")
    content_type = framed.content_type
    guard = os.urandom(4) if reuse_guard is None else reuse_guard
    step = secret_tree.ratchet(sender.leaf_index, _ratchet_type(content_type)).next()
    aad = PrivateContentAAD(framed.group_id, framed.epoch, content_type, framed.authenticated_data)
    plaintext = PrivateMessageContent(framed.content, content.auth, padding).to_bytes()
    ciphertext = suite.aead_encrypt(step.key, _guarded(step.nonce, guard), aad.to_bytes(), plaintext)

    sender_data = SenderData(sender.leaf_index, step.generation, guard)
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, ciphertext)
    sd_aad = SenderDataAAD(framed.group_id, framed.epoch, content_type)
    encrypted_sender_data = suite.aead_encrypt(sd_key, sd_nonce, sd_aad.to_bytes(), sender_data.to_bytes())
    return PrivateMessage(framed.group_id, framed.epoch, content_type, framed.authenticated_data,
                          encrypted_sender_data, ciphertext)


def unprotect_private(
    suite: Suite,
    message: PrivateMessage,
    context: GroupContext,
    sender_data_secret: bytes,
    secret_tree: SecretTree,
    signature_key: SignatureKeyLookup,
) -> AuthenticatedContent:
    """Decrypt and check a received PrivateMessage (§6.3): group and epoch,
    the sender data (its leaf must not be blank), the content under the
    generation it names, the zero padding, then the signature.  The key of
    that generation is deleted only once all of that passed (§9.2)."""
    _check_group_epoch(message.group_id, message.epoch, context)
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, message.ciphertext)
    sd_aad = SenderDataAAD(message.group_id, message.epoch, message.content_type)
    sender_data = decode(
        suite.aead_decrypt(sd_key, sd_nonce, sd_aad.to_bytes(), message.encrypted_sender_data),
        SenderData.decode,
    )
    sender = Sender.member(sender_data.leaf_index)
    public_key = _member_key(sender, signature_key)
    if sender_data.leaf_index >= secret_tree.n_leaves:
        raise MLSError(f"MLS sender leaf {sender_data.leaf_index} is outside the tree")

    ratchet = secret_tree.ratchet(sender_data.leaf_index, _ratchet_type(message.content_type))
    step = ratchet.get(sender_data.generation)
    aad = PrivateContentAAD(message.group_id, message.epoch, message.content_type,
                            message.authenticated_data)
    plaintext = suite.aead_decrypt(step.key, _guarded(step.nonce, sender_data.reuse_guard),
                                   aad.to_bytes(), message.ciphertext)
    private_content = PrivateMessageContent.from_bytes(plaintext, message.content_type)

    framed = FramedContent(message.group_id, message.epoch, sender, message.authenticated_data,
                           private_content.content)
    authenticated = AuthenticatedContent(WireFormat.mls_private_message, framed, private_content.auth)
    verify_content(suite, public_key, authenticated, context)
    # The key is consumed once the message proved genuine (§9.2): one that
    # fails any check above leaves the generation open for the real one.
    ratchet.delete(sender_data.generation)
    return authenticated


def authenticated_content(
    suite: Suite,
    signature_private_key: bytes,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext,
    confirmation_tag: bytes | None = None,
) -> AuthenticatedContent:
    """Sign ``content`` and wrap it as an AuthenticatedContent (for a commit,
    ``confirmation_tag`` is added after the signature: it depends on it, §8.2)."""
    signature = sign_content(suite, signature_private_key, wire_format, content, context)
    return AuthenticatedContent(wire_format, content, FramedContentAuthData(signature, confirmation_tag))

