"""The TLS 1.3 key schedule (RFC 9846 §7.1) and the transcript hash (§4.4.1).

Built so that later generations can be derived: every function takes the
secret it starts from, so the extended key update reuses them with its own
labels and contexts (:func:`next_eku_generation`).

Built for every transport: the HKDF-Expand-Label prefix is a parameter
(``"tls13 "`` for TLS, ``"dtls13"`` for DTLS 1.3, RFC 9147 §5.9), defaulting
to TLS so the TLS hot path pays nothing, and :func:`record_number_key` gives
DTLS its record-number key (RFC 9147 §4.2.3).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from ..constants import HandshakeType
from .suites import SuiteInfo

#: The HKDF-Expand-Label prefix of TLS 1.3 (RFC 9846 §7.1) ...
TLS13_LABEL_PREFIX = b"tls13 "
#: ... and of DTLS 1.3 (RFC 9147 §5.9: "dtls13", no trailing space).
DTLS13_LABEL_PREFIX = b"dtls13"


# Speed (issue 16): HKDF and the transcript hash run on the standard library's
# hmac.digest and hashlib, which are C over OpenSSL like pyca/cryptography's,
# but without its per-call Python objects: a handshake makes ~40 HMACs and
# ~20 hash copies, and one HKDFExpand object costs more than the HMAC inside
# it.  The results are the same bytes (RFC 5869 and FIPS 180-4 define them);
# tests/unit/test_key_schedule_fast.py checks them against pyca/cryptography's
# HKDF, HMAC and Hash for every suite hash.  Outputs longer than one hash
# (an exporter asked for more) still use HKDFExpand.
_HASHLIB: dict[str, Callable[..., Any]] = {"sha256": hashlib.sha256, "sha384": hashlib.sha384}

# Every HMAC is ``_hmac_new(key, msg, hash_name).digest()``: CPython's
# OpenSSL binding (_hashlib.hmac_new, an HMAC_CTX keyed with the digest
# CPython has already fetched), called directly, not through hmac.new's
# Python class.  Not _hashlib.hmac_digest (what hmac.digest calls): it runs
# OpenSSL 3's one-shot HMAC(), which looks the HMAC algorithm and the digest
# up by name on every call (issue 16, second round: ~20,700 against ~24,300
# instructions per HMAC, 0.7x the time; same bytes, RFC 2104).
_hmac_new: Callable[[bytes, bytes, str], Any]
try:
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # pragma: no cover - CPython built without OpenSSL
    _hmac_new = _hmac.new
_LABEL_HEADS: dict[tuple[bytes, bytes, int], bytes] = {}  # see hkdf_expand_label
_LABEL_HEADS_LIMIT = 256


def hkdf_extract(suite: SuiteInfo, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2): HMAC-Hash(salt, IKM); an empty salt means
    HashLen zeros."""
    prk: bytes = _hmac_new(salt or bytes(suite.hash_length), ikm, suite.hash_name).digest()
    return prk


def hkdf_expand_label(
    suite: SuiteInfo, secret: bytes, label: bytes, context: bytes, length: int,
    prefix: bytes = TLS13_LABEL_PREFIX,
) -> bytes:
    """HKDF-Expand-Label (RFC 9846 §7.1): label is given without the transport's
    prefix (``"tls13 "``; DTLS 1.3: ``"dtls13"``, RFC 9147 §5.9)."""
    # HkdfLabel's length and label fields depend on the call site only:
    # encoded once per (prefix, label, length), up to a bound (exporter labels
    # come from applications).
    head = _LABEL_HEADS.get((prefix, label, length))
    if head is None:
        full = prefix + label
        head = length.to_bytes(2, "big") + bytes((len(full),)) + full
        if len(_LABEL_HEADS) < _LABEL_HEADS_LIMIT:
            _LABEL_HEADS[(prefix, label, length)] = head
    if length <= suite.hash_length:
        # RFC 5869 §2.3: T(1) = HMAC-Hash(PRK, info | 0x01) and OKM is its
        # first L octets; every secret, key and IV of TLS 1.3 fits in T(1).
        # An empty context (key, iv, finished, traffic upd) is a zero length
        # byte, then the counter.
        if context:
            info_and_counter = b"".join((head, bytes((len(context),)), context, b"\x01"))
        else:
            info_and_counter = head + b"\x00\x01"
        okm: bytes = _hmac_new(secret, info_and_counter, suite.hash_name).digest()
        return okm if length == len(okm) else okm[:length]
    return HKDFExpand(suite.hash, length, head + bytes((len(context),)) + context).derive(secret)


def transcript_digest(suite: SuiteInfo, data: bytes) -> bytes:
    """Hash(data) with the suite's hash (RFC 9846 §4.4.1)."""
    digest: bytes = _HASHLIB[suite.hash_name](data).digest()
    return digest


def derive_secret(
    suite: SuiteInfo, secret: bytes, label: bytes, transcript_hash: bytes,
    prefix: bytes = TLS13_LABEL_PREFIX,
) -> bytes:
    """Derive-Secret(Secret, Label, Messages), given Transcript-Hash(Messages) already."""
    return hkdf_expand_label(suite, secret, label, transcript_hash, suite.hash_length, prefix)


def empty_hash(suite: SuiteInfo) -> bytes:
    return suite.empty_hash


def traffic_keys(
    suite: SuiteInfo, traffic_secret: bytes, prefix: bytes = TLS13_LABEL_PREFIX
) -> tuple[bytes, bytes]:
    """[sender]_write_key and [sender]_write_iv (RFC 9846 §7.3)."""
    key = hkdf_expand_label(suite, traffic_secret, b"key", b"", suite.key_length, prefix)
    iv = hkdf_expand_label(suite, traffic_secret, b"iv", b"", suite.iv_length, prefix)
    return key, iv


def record_number_key(
    suite: SuiteInfo, traffic_secret: bytes, prefix: bytes = DTLS13_LABEL_PREFIX
) -> bytes:
    """[sender]_sn_key, which encrypts DTLS 1.3 record numbers (RFC 9147 §4.2.3):
    HKDF-Expand-Label(Secret, "sn", "", key_length), beside key and iv."""
    return hkdf_expand_label(suite, traffic_secret, b"sn", b"", suite.key_length, prefix)


def next_traffic_secret(
    suite: SuiteInfo, traffic_secret: bytes, prefix: bytes = TLS13_LABEL_PREFIX
) -> bytes:
    """application_traffic_secret_N+1 (RFC 9846 §7.2)."""
    return hkdf_expand_label(suite, traffic_secret, b"traffic upd", b"", suite.hash_length, prefix)


def finished_key(suite: SuiteInfo, base_key: bytes, prefix: bytes = TLS13_LABEL_PREFIX) -> bytes:
    return hkdf_expand_label(suite, base_key, b"finished", b"", suite.hash_length, prefix)


def finished_verify_data(
    suite: SuiteInfo, base_key: bytes, transcript_hash: bytes, prefix: bytes = TLS13_LABEL_PREFIX
) -> bytes:
    """verify_data = HMAC(finished_key, Transcript-Hash(...)) (RFC 9846 §4.4.4)."""
    mac: bytes = _hmac_new(finished_key(suite, base_key, prefix), transcript_hash, suite.hash_name).digest()
    return mac


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare MACs (Finished, binders) without leaking where they differ."""
    return _hmac.compare_digest(a, b)


def resumption_psk(
    suite: SuiteInfo, resumption_secret: bytes, ticket_nonce: bytes, prefix: bytes = TLS13_LABEL_PREFIX
) -> bytes:
    """The PSK a ticket stands for (RFC 9846 §4.6.1)."""
    return hkdf_expand_label(suite, resumption_secret, b"resumption", ticket_nonce, suite.hash_length, prefix)


def export_keying_material(
    suite: SuiteInfo, exporter_secret: bytes, label: bytes, context: bytes, length: int,
    prefix: bytes = TLS13_LABEL_PREFIX,
) -> bytes:
    """TLS-Exporter (RFC 9846 §7.5)."""
    secret = derive_secret(suite, exporter_secret, label, empty_hash(suite), prefix)
    return hkdf_expand_label(
        suite, secret, b"exporter", transcript_digest(suite, context), length, prefix
    )


class Transcript:
    """The running handshake transcript (RFC 9846 §4.4.1).

    Until the cipher suite is known (client side, before ServerHello) the raw
    messages are kept; afterwards only a running hash is.
    """

    __slots__ = ("_pending", "_hash")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._hash: Any = None  # a hashlib object (see _HASHLIB) once started

    def __repr__(self) -> str:
        return "<Transcript>"

    def update(self, message: bytes) -> None:
        if self._hash is None:
            self._pending.append(message)
        else:
            self._hash.update(message)

    def start(self, suite: SuiteInfo) -> None:
        """Fix the hash function (once the cipher suite is chosen)."""
        self._hash = _HASHLIB[suite.hash_name](b"".join(self._pending))
        self._pending.clear()

    def digest(self) -> bytes:
        if self._hash is None:
            raise RuntimeError("transcript hash used before the cipher suite was chosen")
        digest: bytes = self._hash.digest()  # hashlib's digest() leaves the running hash as it is
        return digest

    def restart_after_hello_retry(self, suite: SuiteInfo) -> None:
        """Replace ClientHello1 with message_hash(Hash(ClientHello1)) (RFC 9846 §4.4.1)."""
        ch1 = self.digest()
        self._hash = _HASHLIB[suite.hash_name](bytes((HandshakeType.message_hash, 0, 0, len(ch1))) + ch1)

    def fork(self) -> Transcript:
        """An independent copy that can be extended without touching this one."""
        other = Transcript()
        other._hash = self._hash.copy() if self._hash is not None else None
        other._pending = list(self._pending)
        return other

    def digest_with(self, extra: bytes) -> bytes:
        """Hash of the transcript followed by ``extra``, without committing it."""
        if self._hash is None:
            raise RuntimeError("transcript hash used before the cipher suite was chosen")
        h = self._hash.copy()
        h.update(extra)
        digest: bytes = h.digest()
        return digest


# Without a PSK, the Early Secret is HKDF-Extract(0, 0) and the salt of the
# Handshake Secret is Derive-Secret(Early Secret, "derived", "") (RFC 9846
# §7.1): the same bytes on every full handshake with a suite's hash, so they
# are derived once per hash and label prefix (issue 16: 2 of the ~24 HMACs each
# end makes per full handshake).  Public values: no secret is kept.
_NO_PSK_EARLY: dict[tuple[str, bytes], tuple[bytes, bytes]] = {}


def _no_psk_early(suite: SuiteInfo, prefix: bytes) -> tuple[bytes, bytes]:
    """(Early Secret, its "derived" salt) of a handshake without a PSK."""
    key = (suite.hash_name, prefix)
    known = _NO_PSK_EARLY.get(key)
    if known is None:
        early = hkdf_extract(suite, b"", bytes(suite.hash_length))
        known = (early, derive_secret(suite, early, b"derived", suite.empty_hash, prefix))
        _NO_PSK_EARLY[key] = known
    return known


class HandshakeSecrets:
    """The secrets of one handshake, derived step by step (RFC 9846 §7.1).

    Attributes hold key material; ``repr`` shows none of it.  ``prefix`` is
    the transport's HKDF label prefix (TLS "tls13 ", DTLS 1.3 "dtls13").
    """

    __slots__ = (
        "suite",
        "prefix",
        "early_secret",
        "handshake_secret",
        "main_secret",
        "client_handshake_traffic_secret",
        "server_handshake_traffic_secret",
        "client_application_traffic_secret",
        "server_application_traffic_secret",
        "exporter_secret",
        "resumption_secret",
        "server_finished_hash",
        "client_finished_hash",
        "_handshake_salt",
    )

    def __init__(
        self, suite: SuiteInfo, psk: bytes | None = None, prefix: bytes = TLS13_LABEL_PREFIX,
        *, early_secret: bytes | None = None,
    ) -> None:
        """``early_secret``: HKDF-Extract(0, psk) when the caller already has
        it (it computed the PSK binder with a suite of the same hash), so a
        resumed handshake extracts it once per side, not twice (issue 16)."""
        self.suite = suite
        self.prefix = prefix
        #: Derive-Secret(early_secret, "derived", "") when it is a constant (no PSK).
        self._handshake_salt = b""
        if psk and early_secret is not None:
            self.early_secret = early_secret
        elif psk:
            self.early_secret = hkdf_extract(suite, b"", psk)
        else:
            self.early_secret, self._handshake_salt = _no_psk_early(suite, prefix)
        self.handshake_secret = b""
        self.main_secret = b""
        self.client_handshake_traffic_secret = b""
        self.server_handshake_traffic_secret = b""
        self.client_application_traffic_secret = b""
        self.server_application_traffic_secret = b""
        self.exporter_secret = b""
        self.resumption_secret = b""
        self.server_finished_hash = b""
        self.client_finished_hash = b""

    def __repr__(self) -> str:
        return f"<HandshakeSecrets {self.suite.suite.name}>"

    def binder_key(self, label: bytes = b"res binder") -> bytes:
        """RFC 9846 §7.1: "res binder" for tickets, "ext binder" for external PSKs;
        "imp binder" for imported ones (RFC 9258 §5.2)."""
        return derive_secret(self.suite, self.early_secret, label, empty_hash(self.suite), self.prefix)

    def client_early_traffic_secret(self, hello_hash: bytes) -> bytes:
        return derive_secret(self.suite, self.early_secret, b"c e traffic", hello_hash, self.prefix)

    def derive_handshake(self, shared_secret: bytes | None, hello_hash: bytes) -> None:
        """After ServerHello: handshake secret and both handshake traffic secrets."""
        s, prefix = self.suite, self.prefix
        salt = self._handshake_salt or derive_secret(s, self.early_secret, b"derived", empty_hash(s), prefix)
        self.handshake_secret = hkdf_extract(s, salt, shared_secret or bytes(s.hash_length))
        self.client_handshake_traffic_secret = derive_secret(
            s, self.handshake_secret, b"c hs traffic", hello_hash, prefix
        )
        self.server_handshake_traffic_secret = derive_secret(
            s, self.handshake_secret, b"s hs traffic", hello_hash, prefix
        )

    def derive_application(self, server_finished_hash: bytes) -> None:
        """After server Finished: main secret, application and exporter secrets."""
        s, prefix = self.suite, self.prefix
        self.server_finished_hash = server_finished_hash
        salt = derive_secret(s, self.handshake_secret, b"derived", empty_hash(s), prefix)
        self.main_secret = hkdf_extract(s, salt, bytes(s.hash_length))
        self.client_application_traffic_secret = derive_secret(
            s, self.main_secret, b"c ap traffic", server_finished_hash, prefix
        )
        self.server_application_traffic_secret = derive_secret(
            s, self.main_secret, b"s ap traffic", server_finished_hash, prefix
        )
        self.exporter_secret = derive_secret(s, self.main_secret, b"exp master", server_finished_hash, prefix)

    def derive_resumption(self, client_finished_hash: bytes) -> None:
        self.client_finished_hash = client_finished_hash
        self.resumption_secret = derive_secret(
            self.suite, self.main_secret, b"res master", client_finished_hash, self.prefix
        )


# -- Extended Key Update (draft-ietf-tls-extended-key-update) -------------------


def eku_exporter_secret(
    suite: SuiteInfo, main_secret: bytes, server_finished_hash: bytes, prefix: bytes = TLS13_LABEL_PREFIX
) -> bytes:
    """Generation 0 of the epoch-aware exporter (EKU draft-13 §9.1):
    Derive-Secret(main_secret, "exporter eku", ClientHello..server Finished)."""
    return derive_secret(suite, main_secret, b"exporter eku", server_finished_hash, prefix)


@dataclass(frozen=True, slots=True)
class EKULabels:
    """The labels and transcript rule of one EKU text (specs README, "The three profiles")."""

    derived: bytes
    client_traffic: bytes
    server_traffic: bytes
    exporter: bytes
    resumption: bytes
    #: draft-13 §6: transcript_hash_N+1 = Hash(transcript_hash_N || Req || Resp);
    #: the older texts use Hash(Req || Resp).
    chained_transcript: bool


class EKUGeneration:
    """Generation N+1's secrets.  Key material only: ``repr`` shows none of it.

    A plain slotted class, not a frozen dataclass: two are made per update,
    and a frozen dataclass sets each field through ``object.__setattr__``
    (issue 16, second round).  Nothing changes them after construction.
    """

    __slots__ = (
        "main_secret", "transcript_hash", "client_traffic_secret", "server_traffic_secret",
        "exporter_secret", "resumption_secret",
    )

    def __init__(
        self, main_secret: bytes, transcript_hash: bytes, client_traffic_secret: bytes,
        server_traffic_secret: bytes, exporter_secret: bytes, resumption_secret: bytes,
    ) -> None:
        self.main_secret = main_secret
        self.transcript_hash = transcript_hash  # the transcript_hash_N+1 to chain on (draft-13)
        self.client_traffic_secret = client_traffic_secret
        self.server_traffic_secret = server_traffic_secret
        self.exporter_secret = exporter_secret
        self.resumption_secret = resumption_secret  # b"" when not derived

    def __repr__(self) -> str:
        return "EKUGeneration()"


def next_eku_generation(
    suite: SuiteInfo, labels: EKULabels, main_secret: bytes, transcript_hash: bytes,
    shared_secret: bytes, request: bytes, response: bytes, *,
    with_resumption: bool = True, prefix: bytes = TLS13_LABEL_PREFIX,
) -> EKUGeneration:
    """main_N -> main_N+1 -> traffic, exporter and resumption secrets
    (draft-13 §6; draft-2025-10 §7; draft-05 §5).

    ``request`` and ``response`` are the whole EKU messages, with their
    handshake headers; ``transcript_hash`` is transcript_hash_N (used only
    when ``labels.chained_transcript``).  ``with_resumption=False`` skips the
    resumption secret (draft-13 §6 disables tickets with EKU: it would never
    be used); it is then b"".
    """
    salt = derive_secret(suite, main_secret, labels.derived, suite.empty_hash, prefix)
    main = hkdf_extract(suite, salt, shared_secret)
    # draft-13 §6: Hash(transcript_hash_N || Req || Resp), also transcript_hash_N+1;
    # the older texts: Hash(Req || Resp).
    if labels.chained_transcript:
        context = transcript_hash = transcript_digest(suite, transcript_hash + request + response)
    else:
        context = transcript_digest(suite, request + response)
    return EKUGeneration(
        main,
        transcript_hash,
        derive_secret(suite, main, labels.client_traffic, context, prefix),
        derive_secret(suite, main, labels.server_traffic, context, prefix),
        derive_secret(suite, main, labels.exporter, context, prefix),
        derive_secret(suite, main, labels.resumption, context, prefix) if with_resumption else b"",
    )
