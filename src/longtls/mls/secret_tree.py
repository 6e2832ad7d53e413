"""The MLS secret tree and its sender ratchets (RFC 9420 §9), and the sender
data key and nonce (§6.3.2).

The tree of secrets has the shape of the ratchet tree, with the epoch's
``encryption_secret`` at the root.  Each leaf's secret starts two hash
ratchets, one for handshake messages (proposals, commits) and one for
application messages; step ``j`` of a ratchet gives the key and nonce of the
sender's ``j``-th message of that type in the epoch (§9.1).

Deletion (§9.2).  Secrets are derived when first needed and deleted as soon
as they are consumed: deriving a leaf walks down from the lowest secret still
held, keeping the sibling at each step and dropping the parent; the leaf
secret is dropped once both ratchet roots exist; a ratchet secret is dropped
when the next one is derived.  Keys of generations a receiver skipped over
(out-of-order delivery) are kept, up to a bound, until used or evicted.

What this module does not do: the reuse_guard (§6.3.1) is applied to the
nonce by the framing code, and AEAD itself is the framing's too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from ..errors import LocalProtocolError, MLSDecryptError
from . import tree_math
from .crypto import Suite

__all__ = [
    "DEFAULT_MAX_FORWARD",
    "DEFAULT_MAX_SKIPPED",
    "GenerationError",
    "HashRatchet",
    "RatchetKey",
    "RatchetType",
    "SecretTree",
    "sender_data_key_nonce",
]

#: How far ahead of the next expected generation a received message may be.
#: Each step costs three HKDF-Expand calls; the bound keeps a peer from making
#: us ratchet forward without limit.  RFC 9420 leaves it to the application
#: (§9.2 "some reasonable amount of time", §14.2 delayed messages); 1024 is
#: our choice (docs/mls.md, "Key schedule").
DEFAULT_MAX_FORWARD = 1024
#: How many keys of skipped generations one ratchet keeps for messages that
#: arrive late (§14.2): the oldest goes first.  Our choice, as above.
DEFAULT_MAX_SKIPPED = 32


class GenerationError(MLSDecryptError):
    """A received message names a generation whose key is gone (already used,
    evicted, or before a deleted one) or one too far ahead (§9.2, §14.2):
    it cannot be decrypted.
    """


class RatchetType(Enum):
    """The two ratchets of each leaf (§9): the label of their root derivation."""

    HANDSHAKE = "handshake"
    APPLICATION = "application"


@dataclass(frozen=True, slots=True)
class RatchetKey:
    """ratchet_key_[N]_[j] and ratchet_nonce_[N]_[j] (§9.1), before the reuse_guard."""

    generation: int
    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)


class HashRatchet:
    """One sender ratchet (§9.1):

        ratchet_nonce_[N]_[j] = DeriveTreeSecret(ratchet_secret_[N]_[j], "nonce", j, AEAD.Nn)
        ratchet_key_[N]_[j] = DeriveTreeSecret(ratchet_secret_[N]_[j], "key", j, AEAD.Nk)
        ratchet_secret_[N]_[j+1] = DeriveTreeSecret(ratchet_secret_[N]_[j], "secret", j, KDF.Nh)

    A sender takes keys in order with ``next()``.  A receiver asks ``get(j)``
    for the generation a message names and, once the message decrypted,
    ``delete(j)``: a message that fails to decrypt does not burn the key of
    the genuine one (§9.2 counts a key as consumed when it "(successfully)"
    decrypted a message).
    """

    __slots__ = ("_suite", "_secret", "_generation", "_keys", "max_forward", "max_skipped")

    def __init__(
        self,
        suite: Suite,
        secret: bytes,
        *,
        max_forward: int = DEFAULT_MAX_FORWARD,
        max_skipped: int = DEFAULT_MAX_SKIPPED,
    ) -> None:
        self._suite = suite
        self._secret: bytes | None = secret
        self._generation = 0  # the generation _secret is ratchet_secret_[N]_[j] of
        # Derived, not yet deleted keys of generations below _generation, oldest first.
        self._keys: OrderedDict[int, RatchetKey] = OrderedDict()
        self.max_forward = max_forward
        self.max_skipped = max_skipped

    def __repr__(self) -> str:
        return f"<HashRatchet generation={self._generation} held_keys={sorted(self._keys)}>"

    @property
    def generation(self) -> int:
        """The next generation the ratchet would derive."""
        return self._generation

    def _step(self) -> RatchetKey:
        secret = self._secret
        if secret is None:
            # Only next() gets here (get() refuses generations above uint32):
            # our own 2^32 messages in one epoch, so a commit is due.
            raise LocalProtocolError("MLS sender ratchet exhausted: generations are uint32")
        j = self._generation
        suite = self._suite
        out = RatchetKey(
            generation=j,
            key=suite.derive_tree_secret(secret, b"key", j, suite.nk),
            nonce=suite.derive_tree_secret(secret, b"nonce", j, suite.nn),
        )
        # ratchet_secret_[j] is consumed: only its successor is kept.  The
        # generation is a uint32 (SenderData, §6.3.2): the last one has none.
        if j == 0xFFFFFFFF:
            self._secret = None
        else:
            self._secret = suite.derive_tree_secret(secret, b"secret", j, suite.nh)
        self._generation = j + 1
        return out

    def next(self) -> RatchetKey:
        """The key and nonce for our next message (sending side): each is used once."""
        return self._step()

    def get(self, generation: int) -> RatchetKey:
        """The key and nonce of ``generation`` for a received message.

        Ratchets forward if needed, keeping the keys it passes (at most
        ``max_skipped``).  The key stays until ``delete(generation)``.
        """
        if generation < 0 or generation > 0xFFFFFFFF:
            raise GenerationError(f"MLS generation {generation} is not a uint32")
        if generation < self._generation:
            held = self._keys.get(generation)
            if held is None:
                raise GenerationError(f"MLS generation {generation} already used or too old")
            return held
        if generation - self._generation > self.max_forward:
            raise GenerationError(
                f"MLS generation {generation} is more than {self.max_forward} ahead of {self._generation}"
            )
        while True:
            key = self._step()
            self._keys[key.generation] = key
            while len(self._keys) > max(self.max_skipped, 1):
                self._keys.popitem(last=False)  # evict the oldest skipped key
            if key.generation == generation:
                return key

    def delete(self, generation: int) -> None:
        """Forget the key of ``generation`` (its message decrypted, §9.2)."""
        self._keys.pop(generation, None)


class SecretTree:
    """The secret tree of one epoch (§9) for a tree of ``n_leaves`` leaves.

    ``ratchet(leaf, RatchetType.APPLICATION)`` is the application ratchet of
    the member at leaf index ``leaf``, created on first use.
    """

    __slots__ = ("_suite", "_n_leaves", "_nodes", "_ratchets", "_max_forward", "_max_skipped")

    def __init__(
        self,
        suite: Suite,
        encryption_secret: bytes,
        n_leaves: int,
        *,
        max_forward: int = DEFAULT_MAX_FORWARD,
        max_skipped: int = DEFAULT_MAX_SKIPPED,
    ) -> None:
        self._suite = suite
        self._n_leaves = n_leaves
        # tree_node_[N]_secret for the nodes not yet consumed; the root's is
        # the encryption_secret.
        self._nodes: dict[int, bytes] = {tree_math.root(n_leaves): encryption_secret}
        self._ratchets: dict[tuple[int, RatchetType], HashRatchet] = {}
        self._max_forward = max_forward
        self._max_skipped = max_skipped

    def __repr__(self) -> str:
        return f"<SecretTree n_leaves={self._n_leaves} held_nodes={sorted(self._nodes)}>"

    @property
    def n_leaves(self) -> int:
        return self._n_leaves

    @property
    def held_nodes(self) -> list[int]:
        """The nodes whose tree secret is still held (§9.2), for inspection."""
        return sorted(self._nodes)

    def ratchet(self, leaf: int, ratchet_type: RatchetType) -> HashRatchet:
        """The ``ratchet_type`` ratchet of leaf index ``leaf``.

        The caller checks that ``leaf`` names a member (§6.3.2: a non-blank
        leaf) before it asks; an index outside the tree is a ValueError.
        """
        if not 0 <= leaf < self._n_leaves:
            raise ValueError(f"leaf {leaf} is outside a tree of {self._n_leaves} leaves")
        existing = self._ratchets.get((leaf, ratchet_type))
        if existing is not None:
            return existing
        leaf_secret = self._take_leaf_secret(tree_math.leaf_to_node(leaf))
        # §9: the roots of the two ratchets, then the leaf secret is consumed.
        for kind in RatchetType:
            root = self._suite.expand_with_label(
                leaf_secret, kind.value.encode(), b"", self._suite.nh
            )
            self._ratchets[(leaf, kind)] = HashRatchet(
                self._suite, root, max_forward=self._max_forward, max_skipped=self._max_skipped
            )
        return self._ratchets[(leaf, ratchet_type)]

    def _take_leaf_secret(self, node: int) -> bytes:
        # The lowest held ancestor (or the node itself).  Each leaf's secret is
        # taken once, so its whole direct path below that ancestor is unheld.
        path = [node, *tree_math.direct_path(node, self._n_leaves)]
        start = next(i for i, n in enumerate(path) if n in self._nodes)
        for i in range(start, 0, -1):
            parent = path[i]
            secret = self._nodes.pop(parent)
            # tree_node_[left(N)]_secret = ExpandWithLabel(., "tree", "left", KDF.Nh),
            # likewise "right" (§9).
            left, right = tree_math.left(parent), tree_math.right(parent)
            self._nodes[left] = self._suite.expand_with_label(
                secret, b"tree", b"left", self._suite.nh
            )
            self._nodes[right] = self._suite.expand_with_label(
                secret, b"tree", b"right", self._suite.nh
            )
        return self._nodes.pop(node)


def sender_data_key_nonce(
    suite: Suite, sender_data_secret: bytes, ciphertext: bytes
) -> tuple[bytes, bytes]:
    """sender_data_key and sender_data_nonce for a PrivateMessage (§6.3.2):

    ciphertext_sample = ciphertext[0..KDF.Nh-1]   (the whole ciphertext if shorter)
    sender_data_key = ExpandWithLabel(sender_data_secret, "key", ciphertext_sample, AEAD.Nk)
    sender_data_nonce = ExpandWithLabel(sender_data_secret, "nonce", ciphertext_sample, AEAD.Nn)
    """
    sample = ciphertext[: suite.nh]
    return (
        suite.expand_with_label(sender_data_secret, b"key", sample, suite.nk),
        suite.expand_with_label(sender_data_secret, b"nonce", sample, suite.nn),
    )
