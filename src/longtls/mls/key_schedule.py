"""The MLS key schedule (RFC 9420 §8): one epoch's secrets, MLS-Exporter, PSKs.

An epoch starts from the previous epoch's ``init_secret`` (or, for a member
joining by Welcome, from the ``joiner_secret`` the Welcome carries), the
commit secret of the Commit that started it, the PSK secret (all zeros
without PSKs) and the new epoch's GroupContext, encoded (§8.1).  The
GroupContext is passed as bytes: its codec is the message layer's
(``mls/messages.py``), and the key schedule only ever uses its encoding.

``EpochSecrets`` keeps what the epoch still needs and nothing else: the
``epoch_secret`` itself is consumed by the derivations and not kept (§9.2:
consumed values are deleted), and neither is the ``commit_secret`` or the
previous ``init_secret`` (the caller drops its own references).  Every secret
field is left out of ``repr``.

The ``encryption_secret`` is the root of the secret tree (``mls/secret_tree.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .codec import Writer
from .crypto import Suite

__all__ = [
    "EpochSecrets",
    "derive_epoch",
    "derive_epoch_from_joiner",
    "joiner_secret",
    "mls_exporter",
    "psk_secret",
    "welcome_key_nonce",
    "welcome_secret",
]


@dataclass(frozen=True, slots=True)
class EpochSecrets:
    """The secrets of one epoch (RFC 9420 §8, "Epoch-Derived Secrets").

    ``joiner_secret`` and ``welcome_secret`` are kept because the committer
    still needs them to build the Welcome of the Commit that started the
    epoch (§12.4.3.1); a member who does not send a Welcome may ignore them.
    ``init_secret`` is the input of the next epoch.
    """

    suite: Suite
    joiner_secret: bytes = field(repr=False)
    welcome_secret: bytes = field(repr=False)
    sender_data_secret: bytes = field(repr=False)
    encryption_secret: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)
    external_secret: bytes = field(repr=False)
    confirmation_key: bytes = field(repr=False)
    membership_key: bytes = field(repr=False)
    resumption_psk: bytes = field(repr=False)
    epoch_authenticator: bytes = field(repr=False)
    init_secret: bytes = field(repr=False)

    def export(self, label: bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(label, context, length) of this epoch (§8.5)."""
        return mls_exporter(self.suite, self.exporter_secret, label, context, length)

    def external_key_pair(self) -> tuple[bytes, bytes]:
        """(external_priv, external_pub) = KEM.DeriveKeyPair(external_secret) (§8),
        both serialised as HPKE keys are (SerializePrivateKey / SerializePublicKey)."""
        return self.suite.derive_key_pair(self.external_secret)

    def welcome_key_nonce(self) -> tuple[bytes, bytes]:
        """The key and nonce that encrypt the Welcome's GroupInfo (§12.4.3.1)."""
        return welcome_key_nonce(self.suite, self.welcome_secret)


def joiner_secret(
    suite: Suite, init_secret: bytes, commit_secret: bytes, group_context: bytes
) -> bytes:
    """joiner_secret = ExpandWithLabel(KDF.Extract(init_secret_[n-1], commit_secret),
    "joiner", GroupContext_[n], KDF.Nh) (§8, the key schedule diagram: the
    init secret is the salt, the commit secret the IKM)."""
    prk = suite.kdf_extract(init_secret, commit_secret)
    return suite.expand_with_label(prk, b"joiner", group_context, suite.nh)


def _member_secret(suite: Suite, joiner: bytes, psk: bytes | None) -> bytes:
    # §8: KDF.Extract with the joiner secret as salt and psk_secret (or the
    # all-zero string of KDF.Nh bytes) as IKM; both the welcome secret and the
    # epoch secret come from it.
    return suite.kdf_extract(joiner, psk if psk is not None else bytes(suite.nh))


def welcome_secret(suite: Suite, joiner: bytes, psk: bytes | None = None) -> bytes:
    """welcome_secret = DeriveSecret(Extract(joiner_secret, psk_secret), "welcome") (§8).

    A joiner needs it before it can read the GroupContext (which sits in the
    encrypted GroupInfo), so it is available on its own.
    """
    return suite.derive_secret(_member_secret(suite, joiner, psk), b"welcome")


def welcome_key_nonce(suite: Suite, welcome: bytes) -> tuple[bytes, bytes]:
    """welcome_key = ExpandWithLabel(welcome_secret, "key", "", AEAD.Nk) and
    welcome_nonce = ExpandWithLabel(welcome_secret, "nonce", "", AEAD.Nn) (§12.4.3.1)."""
    return (
        suite.expand_with_label(welcome, b"key", b"", suite.nk),
        suite.expand_with_label(welcome, b"nonce", b"", suite.nn),
    )


def derive_epoch_from_joiner(
    suite: Suite, joiner: bytes, group_context: bytes, psk: bytes | None = None
) -> EpochSecrets:
    """Every secret of the epoch from its joiner secret (§8): what a member
    joining by Welcome does (§12.4.3.1), and the second half of ``derive_epoch``.

    ``psk`` is the psk_secret (§8.4); None means no PSK (the all-zero vector).
    """
    if psk is not None and len(psk) != suite.nh:
        raise ValueError(f"psk_secret must be KDF.Nh = {suite.nh} bytes")
    member = _member_secret(suite, joiner, psk)
    epoch_secret = suite.expand_with_label(member, b"epoch", group_context, suite.nh)

    def derive(label: bytes) -> bytes:
        return suite.derive_secret(epoch_secret, label)

    # Labels: §8, "Epoch-Derived Secrets"; init_secret_[n] = DeriveSecret(epoch_secret, "init").
    return EpochSecrets(
        suite=suite,
        joiner_secret=joiner,
        welcome_secret=suite.derive_secret(member, b"welcome"),
        sender_data_secret=derive(b"sender data"),
        encryption_secret=derive(b"encryption"),
        exporter_secret=derive(b"exporter"),
        external_secret=derive(b"external"),
        confirmation_key=derive(b"confirm"),
        membership_key=derive(b"membership"),
        resumption_psk=derive(b"resumption"),
        epoch_authenticator=derive(b"authentication"),
        init_secret=derive(b"init"),
    )


def derive_epoch(
    suite: Suite,
    init_secret: bytes,
    commit_secret: bytes,
    group_context: bytes,
    psk: bytes | None = None,
) -> EpochSecrets:
    """The secrets of epoch n from init_secret_[n-1], the commit secret, the
    PSK secret and GroupContext_[n] (§8).

    For a new group's first epoch (§11) ``init_secret`` is a fresh random
    value and ``commit_secret`` the all-zero vector; a Commit without a path
    also has an all-zero commit secret (§12.4).
    """
    for name, value in (("init_secret", init_secret), ("commit_secret", commit_secret)):
        if len(value) != suite.nh:
            raise ValueError(f"{name} must be KDF.Nh = {suite.nh} bytes")
    return derive_epoch_from_joiner(
        suite, joiner_secret(suite, init_secret, commit_secret, group_context), group_context, psk
    )


def mls_exporter(
    suite: Suite, exporter_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """MLS-Exporter(Label, Context, Length) = ExpandWithLabel(DeriveSecret(exporter_secret,
    Label), "exported", Hash(Context), Length) (§8.5)."""
    return suite.expand_with_label(
        suite.derive_secret(exporter_secret, label), b"exported", suite.hash(context), length
    )


def psk_secret(suite: Suite, psks: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """psk_secret from the PSKs of a Commit or Welcome, in their order (§8.4).

    Each entry is (the encoded PreSharedKeyID, the PSK's value).  Returns None
    (the all-zero vector: what ``derive_epoch`` takes for "no PSK") when there
    are none.

        psk_extracted_[i] = KDF.Extract(0, psk_[i])
        psk_input_[i] = ExpandWithLabel(psk_extracted_[i], "derived psk", PSKLabel, KDF.Nh)
        psk_secret_[i] = KDF.Extract(psk_input_[i-1], psk_secret_[i-1]), psk_secret_[0] = 0
    """
    if not psks:
        return None
    count = len(psks)
    if count > 0xFFFF:
        raise ValueError("PSKLabel counts PSKs in a uint16")
    zero = bytes(suite.nh)
    secret = zero
    for index, (psk_id, psk) in enumerate(psks):
        extracted = suite.kdf_extract(zero, psk)
        # struct { PreSharedKeyID id; uint16 index; uint16 count; } PSKLabel;
        label = Writer().raw(psk_id).u16(index).u16(count).bytes()
        psk_input = suite.expand_with_label(extracted, b"derived psk", label, suite.nh)
        # The pseudocode's order, KDF.Extract(salt=psk_input_[i-1],
        # ikm=psk_secret_[i-1]); §8.4's figure draws them the other way round.
        # The official vectors (passive-client-welcome.json with PSKs) agree
        # with the pseudocode (docs/mls.md, "Key schedule").
        secret = suite.kdf_extract(psk_input, secret)
    return secret
