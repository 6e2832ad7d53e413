"""mls-rs (AWS's Rust MLS, RFC 9420) as a test-only MLS peer, through the
`agentvault-mls-rs-uniffi` package (UniFFI bindings; import name
``mls_rs_uniffi``).

    alice = MlsRsClient(b"alice")               # suite 1, basic credential "alice"
    group = alice.create_group()
    commit, welcome = group.add_member(key_package_bytes)   # applied at once
    bob_group = MlsRsClient(b"bob").join(welcome)
    update = group.self_update()                 # applied at once
    bob_group.process(update)
    group.export_secret(b"label", b"context", 32) == bob_group.export_secret(...)
    bob_group.decrypt_application(group.encrypt_application(b"data")) == b"data"

Every message goes in and out as RFC 9420 ``MLSMessage`` bytes (§6): the
package's ``Message.to_bytes`` / ``Message.from_bytes`` (the fork's addition
to upstream mls-rs-uniffi 0.13).

What the bindings (0.1.1) offer, and so what this wrapper can do:

- One cipher suite: ``CipherSuite.CURVE25519_AES128``, RFC 9420 suite 1
  (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519). Not 3, not X-Wing.
- Basic credentials only: the identity given to the client.
- KeyPackages with mls-rs's defaults (a lifetime of 365 days, capabilities
  listing suites 1-7 and the basic credential), no way to set them.
- The ratchet tree travels in the Welcome's GroupInfo (``ratchet_tree``
  extension, RFC 9420 §12.4.3.3): ``use_ratchet_tree_extension`` is on in the
  default configuration (``ratchet_tree_extension=False`` turns it off),
  and ``join`` needs an out-of-band tree exactly when the Welcome has none.
- A commit (Add, or an empty one with a path: a self-update) is a
  PublicMessage; it is pending until the committer processes it, which this
  wrapper does at once (two-party groups: nobody else can commit between).
- No getter for the epoch: ``MlsRsGroup.epoch`` reads it from the clear
  header of a PrivateMessage mls-rs seals (RFC 9420 §6.3), which costs one
  generation of our own application ratchet and nothing else.

A missing package fails the test with an install hint, never skips it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest

#: The `test` extra's requirement (pyproject.toml), for the install hint.
REQUIREMENT = "agentvault-mls-rs-uniffi==0.1.1"

#: RFC 9420 cipher suites the bindings can make groups with (§17.1 values).
SUPPORTED_SUITES = frozenset({0x0001})

_WIRE_FORMAT_PRIVATE_MESSAGE = 0x0002  # RFC 9420 §6


def require_mls_rs() -> ModuleType:
    """The ``mls_rs_uniffi`` module; fails (not skips) the test if missing."""
    try:
        return importlib.import_module("mls_rs_uniffi")
    except ImportError as exc:
        pytest.fail(
            f"mls-rs peer module 'mls_rs_uniffi' cannot be imported ({exc}). Run `make venv` "
            f"(installs the `test` extra, incl. {REQUIREMENT!r}) and run the tests with "
            f".venv/bin/python.",
            pytrace=False,
        )


def binding_suite_names() -> frozenset[str]:
    """The names of the bindings' CipherSuite members (read from the
    bindings, so a release that adds suites shows up in the tests)."""
    return frozenset(member.name for member in require_mls_rs().CipherSuite)


# The bindings' enum member -> the RFC 9420 value mls-rs puts on the wire
# for it (mls_rs_uniffi.CipherSuite is "a subset of mls_rs::CipherSuite").
_RFC_SUITE = {"CURVE25519_AES128": 0x0001}


def _binding_suite(cipher_suite: int) -> Any:
    mls = require_mls_rs()
    for name, value in _RFC_SUITE.items():
        if value == cipher_suite:
            return getattr(mls.CipherSuite, name)
    raise ValueError(
        f"mls-rs-uniffi ({REQUIREMENT}) has no cipher suite {cipher_suite:#06x}; "
        f"it offers {sorted(SUPPORTED_SUITES)}"
    )


def _message(data: bytes) -> Any:
    return require_mls_rs().Message.from_bytes(data)


def _read_varint_length(data: bytes, offset: int) -> tuple[int, int]:
    """RFC 9420 §2.1.2 variable-length vector header at ``offset``:
    (length, offset of the vector's first byte)."""
    first = data[offset]
    size = 1 << (first >> 6)
    if size > 4:
        raise ValueError("invalid variable-length integer prefix 0b11")
    value = first & 0x3F
    for byte in data[offset + 1: offset + size]:
        value = (value << 8) | byte
    return value, offset + size


def private_message_epoch(data: bytes) -> int:
    """The epoch in an MLSMessage carrying a PrivateMessage: ``version(2)
    wire_format(2) group_id<V> epoch(8)`` (RFC 9420 §6, §6.3). Parsed here
    on purpose, not with longtls' codec, so the wrapper stays independent."""
    if int.from_bytes(data[2:4], "big") != _WIRE_FORMAT_PRIVATE_MESSAGE:
        raise ValueError("not an MLSMessage with a PrivateMessage")
    length, start = _read_varint_length(data, 4)
    end = start + length
    return int.from_bytes(data[end:end + 8], "big")


class MlsRsClient:
    """An mls-rs client: one identity (basic credential), one signature key
    pair made by mls-rs, one cipher suite."""

    def __init__(self, identity: bytes, cipher_suite: int = 0x0001, *,
                 ratchet_tree_extension: bool = True) -> None:
        """``ratchet_tree_extension=False``: the Welcomes this client makes
        carry no ratchet tree; the joiner needs ``MlsRsGroup.ratchet_tree()``
        out of band."""
        mls = require_mls_rs()
        self.identity = identity
        self.cipher_suite = cipher_suite
        keypair = mls.generate_signature_keypair(_binding_suite(cipher_suite))
        #: The Ed25519 public key (RFC 8032 form) mls-rs signs with.
        self.signature_public_key: bytes = keypair.public_key.bytes
        config = mls.client_config_default()  # an in-memory group state storage
        config.use_ratchet_tree_extension = ratchet_tree_extension
        self._client = mls.Client(identity, keypair, config)

    def __repr__(self) -> str:
        return f"MlsRsClient(identity={self.identity!r}, cipher_suite={self.cipher_suite:#06x})"

    def key_package(self) -> bytes:
        """A fresh KeyPackage as MLSMessage bytes (mls-rs keeps its private keys)."""
        data: bytes = self._client.generate_key_package_message().to_bytes()
        return data

    def create_group(self, group_id: bytes | None = None) -> MlsRsGroup:
        """A new one-member group at epoch 0 (mls-rs picks a random group_id
        when none is given)."""
        return MlsRsGroup(self._client.create_group(group_id))

    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> MlsRsGroup:
        """Join from a Welcome (MLSMessage bytes). ``ratchet_tree`` is the
        encoded ``optional<Node> ratchet_tree<V>`` (RFC 9420 §12.4.3.3) when
        the Welcome's GroupInfo carries no ratchet_tree extension."""
        mls = require_mls_rs()
        tree = None if ratchet_tree is None else mls.RatchetTree(bytes=ratchet_tree)
        info = self._client.join_group(tree, _message(welcome))
        return MlsRsGroup(info.group)


class MlsRsGroup:
    """One mls-rs member's view of a group. Methods raise
    ``mls_rs_uniffi.Error`` (``Error.MlsError`` ...) when mls-rs refuses."""

    def __init__(self, group: Any) -> None:
        self._group = group

    def __repr__(self) -> str:
        return "MlsRsGroup(<mls-rs>)"

    def _apply(self, output: Any) -> bytes:
        # mls-rs keeps its own commit pending until it processes it (as the
        # other members do); a two-party committer applies it at once.
        commit = output.commit_message
        received = self._group.process_incoming_message(commit)
        if not received.is_commit():
            raise AssertionError(f"mls-rs did not apply its own commit: {received}")
        data: bytes = commit.to_bytes()
        return data

    def add_member(self, key_package: bytes) -> tuple[bytes, bytes]:
        """Commit an Add of ``key_package`` (MLSMessage bytes) and apply it:
        (commit, welcome), both MLSMessage bytes."""
        output = self._group.add_members([_message(key_package)])
        if output.welcome_message is None:
            raise AssertionError("mls-rs made no Welcome for an Add")
        welcome: bytes = output.welcome_message.to_bytes()
        return self._apply(output), welcome

    def self_update(self, *, apply: bool = True) -> bytes:
        """An empty Commit with an UpdatePath (RFC 9420 §12.4: a
        self-update): the commit's MLSMessage bytes. ``apply=False`` leaves
        it pending (crossed commits): ``process`` of these bytes applies it,
        a commit from the other member in the same epoch replaces it."""
        output = self._group.commit()
        if not apply:
            data: bytes = output.commit_message.to_bytes()
            return data
        return self._apply(output)

    def process(self, message: bytes) -> None:
        """Process a commit (MLSMessage bytes) from the other member, or our
        own pending one; anything that is not a commit mls-rs accepts is an
        AssertionError or mls-rs's own error."""
        received = self._group.process_incoming_message(_message(message))
        if not received.is_commit():
            raise AssertionError(f"expected a commit, mls-rs saw {received}")
        if not received.effect.is_new_epoch():
            raise AssertionError(f"the commit did not start a new epoch: {received.effect}")

    def encrypt_application(self, data: bytes) -> bytes:
        """Application data as a PrivateMessage (MLSMessage bytes, RFC 9420 §6.3)."""
        sealed: bytes = self._group.encrypt_application_message(data).to_bytes()
        return sealed

    def decrypt_application(self, message: bytes) -> bytes:
        """The application data of a PrivateMessage from the other member."""
        received = self._group.process_incoming_message(_message(message))
        if not received.is_application_message():
            raise AssertionError(f"expected application data, mls-rs saw {received}")
        data: bytes = received.data
        return data

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(label, context, length) of the current epoch (RFC 9420 §8.5)."""
        data: bytes = self._group.export_secret(label, context, length)
        return data

    def ratchet_tree(self) -> bytes:
        """The encoded ratchet tree (RFC 9420 §12.4.3.3) of the current epoch."""
        data: bytes = self._group.export_tree().bytes
        return data

    @property
    def epoch(self) -> int:
        """The current epoch, as mls-rs writes it on the wire (see the module
        docstring: one PrivateMessage is sealed to read it)."""
        sealed: bytes = self._group.encrypt_application_message(b"").to_bytes()
        return private_message_epoch(sealed)
