"""The key schedule's fast paths (issue 16) give pyca/cryptography's bytes.

HKDF-Expand-Label runs one standard-library HMAC for outputs up to one hash
length (RFC 5869 §2.3: T(1) is the whole output), HKDFExpand beyond; the
transcript runs on hashlib.  Every expected value here comes from
pyca/cryptography's HKDF, HKDFExpand, HMAC and Hash, a second implementation
of the same RFCs, at every length around the one-block boundary.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from longtls.constants import CipherSuite, HandshakeType
from longtls.crypto import key_schedule as ks
from longtls.crypto.suites import SUITES

#: One suite per hash: SHA-256 and SHA-384.
HASH_SUITES = [SUITES[CipherSuite.TLS_AES_128_GCM_SHA256], SUITES[CipherSuite.TLS_AES_256_GCM_SHA384]]
IDS = ["sha256", "sha384"]


def reference_expand_label(
    hash_algorithm: hashes.HashAlgorithm, secret: bytes, prefix: bytes, label: bytes, context: bytes,
    length: int,
) -> bytes:
    full = prefix + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((len(context),)) + context
    return HKDFExpand(hash_algorithm, length, info).derive(secret)


@pytest.mark.parametrize("suite", HASH_SUITES, ids=IDS)
@pytest.mark.parametrize("prefix", [ks.TLS13_LABEL_PREFIX, ks.DTLS13_LABEL_PREFIX])
def test_expand_label_matches_hkdf_expand_at_every_length(suite: ks.SuiteInfo, prefix: bytes) -> None:
    secret = bytes(range(suite.hash_length))
    for length in range(0, 2 * suite.hash_length + 2):
        for context in (b"", bytes(range(7, 7 + suite.hash_length))):
            got = ks.hkdf_expand_label(suite, secret, b"c hs traffic", context, length, prefix)
            want = reference_expand_label(suite.hash, secret, prefix, b"c hs traffic", context, length)
            assert got == want, (length, context)


@pytest.mark.parametrize("suite", HASH_SUITES, ids=IDS)
def test_extract_matches_hkdf_extract(suite: ks.SuiteInfo) -> None:
    ikm = b"\x42" * suite.hash_length
    assert ks.hkdf_extract(suite, b"salt", ikm) == HKDF.extract(suite.hash, b"salt", ikm)
    # An empty salt is HashLen zeros (RFC 5869 §2.2).
    assert ks.hkdf_extract(suite, b"", ikm) == HKDF.extract(suite.hash, bytes(suite.hash_length), ikm)


@pytest.mark.parametrize("suite", HASH_SUITES, ids=IDS)
def test_finished_verify_data_is_hmac_of_the_finished_key(suite: ks.SuiteInfo) -> None:
    base_key, transcript_hash = b"\x07" * suite.hash_length, b"\x09" * suite.hash_length
    finished_key = reference_expand_label(suite.hash, base_key, b"tls13 ", b"finished", b"", suite.hash_length)
    mac = hmac.HMAC(finished_key, suite.hash)
    mac.update(transcript_hash)
    assert ks.finished_verify_data(suite, base_key, transcript_hash) == mac.finalize()


def reference_hash(algorithm: hashes.HashAlgorithm, *parts: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    for part in parts:
        h.update(part)
    return h.finalize()


@pytest.mark.parametrize("suite", HASH_SUITES, ids=IDS)
def test_transcript_digests_match_hash_of_the_messages(suite: ks.SuiteInfo) -> None:
    ch, sh, ee = b"\x01\x00\x00\x03abc", b"\x02\x00\x00\x02de", b"\x08\x00\x00\x00"
    transcript = ks.Transcript()
    transcript.update(ch)  # before the suite is known: kept raw
    transcript.start(suite)
    assert transcript.digest() == reference_hash(suite.hash, ch)
    transcript.update(sh)
    # digest() does not end the running hash: asking twice, then extending, still works.
    assert transcript.digest() == transcript.digest() == reference_hash(suite.hash, ch, sh)
    assert transcript.digest_with(ee) == reference_hash(suite.hash, ch, sh, ee)
    assert transcript.digest() == reference_hash(suite.hash, ch, sh)  # digest_with committed nothing
    fork = transcript.fork()
    fork.update(ee)
    assert fork.digest() == reference_hash(suite.hash, ch, sh, ee)
    assert transcript.digest() == reference_hash(suite.hash, ch, sh)
    assert ks.transcript_digest(suite, ch + sh) == reference_hash(suite.hash, ch, sh)


@pytest.mark.parametrize("suite", HASH_SUITES, ids=IDS)
def test_transcript_after_hello_retry_starts_with_message_hash(suite: ks.SuiteInfo) -> None:
    ch1, hrr = b"\x01\x00\x00\x01z", b"\x02\x00\x00\x01y"
    transcript = ks.Transcript()
    transcript.update(ch1)
    transcript.start(suite)
    transcript.restart_after_hello_retry(suite)
    transcript.update(hrr)
    ch1_hash = reference_hash(suite.hash, ch1)
    message_hash = bytes((HandshakeType.message_hash, 0, 0, len(ch1_hash))) + ch1_hash
    assert transcript.digest() == reference_hash(suite.hash, message_hash, hrr)


@pytest.mark.parametrize("suite", HASH_SUITES, ids=IDS)
@pytest.mark.parametrize("prefix", [ks.TLS13_LABEL_PREFIX, ks.DTLS13_LABEL_PREFIX])
def test_handshake_secret_without_psk_follows_the_formula(suite: ks.SuiteInfo, prefix: bytes) -> None:
    """Without a PSK the early secret and its "derived" salt are constants per
    hash and prefix (remembered); the handshake secret built on them is still
    RFC 9846 §7.1's, for each hash and prefix in turn."""
    zeros = bytes(suite.hash_length)
    early = HKDF.extract(suite.hash, zeros, zeros)
    salt = reference_expand_label(suite.hash, early, prefix, b"derived", suite.empty_hash, suite.hash_length)
    shared, hello_hash = b"\x33" * 32, b"\x44" * suite.hash_length
    handshake_secret = HKDF.extract(suite.hash, salt, shared)
    for _ in range(2):
        secrets = ks.HandshakeSecrets(suite, None, prefix)
        assert secrets.early_secret == early
        secrets.derive_handshake(shared, hello_hash)
        assert secrets.handshake_secret == handshake_secret
        assert secrets.client_handshake_traffic_secret == reference_expand_label(
            suite.hash, handshake_secret, prefix, b"c hs traffic", hello_hash, suite.hash_length
        )


def test_exporter_labels_past_the_label_cache_bound_still_derive_right() -> None:
    """HkdfLabel heads are remembered up to a bound; exporter labels come from
    applications, so labels past it are encoded each time, with the same bytes."""
    suite = HASH_SUITES[0]
    secret = b"\x05" * suite.hash_length
    for i in range(ks._LABEL_HEADS_LIMIT + 10):
        label = b"EXPORTER-app-%d" % i
        got = ks.export_keying_material(suite, secret, label, b"ctx", 40)
        inner = reference_expand_label(suite.hash, secret, b"tls13 ", label, suite.empty_hash, suite.hash_length)
        context = reference_hash(suite.hash, b"ctx")
        assert got == reference_expand_label(suite.hash, inner, b"tls13 ", b"exporter", context, 40), i
    assert len(ks._LABEL_HEADS) <= ks._LABEL_HEADS_LIMIT


@pytest.mark.parametrize("suite", HASH_SUITES, ids=IDS)
@pytest.mark.parametrize("prefix", [ks.TLS13_LABEL_PREFIX, ks.DTLS13_LABEL_PREFIX])
@pytest.mark.parametrize("chained", [True, False], ids=["draft-13", "older"])
def test_next_eku_generation_follows_the_formulas(suite: ks.SuiteInfo, prefix: bytes, chained: bool) -> None:
    """EKU draft-13 §6 (chained transcript) / draft-2025-10 §7 (Hash(Req || Resp)):
    every secret of generation N+1, resumption included, from pyca's HKDF,
    twice in a row (the second from remembered HkdfLabel heads)."""
    labels = ks.EKULabels(b"derived", b"c ap traffic", b"s ap traffic", b"exp master", b"res master", chained)
    main, th = b"\x11" * suite.hash_length, b"\x22" * suite.hash_length
    shared, request, response = b"\x33" * 32, b"\x18\x00\x00\x05req", b"\x18\x00\x00\x06resp"
    for _ in range(2):
        got = ks.next_eku_generation(suite, labels, main, th, shared, request, response, prefix=prefix)
        salt = reference_expand_label(suite.hash, main, prefix, b"derived", suite.empty_hash, suite.hash_length)
        main_next = HKDF.extract(suite.hash, salt, shared)
        context = reference_hash(suite.hash, *((th,) if chained else ()), request, response)

        def secret(label: bytes, main_next: bytes = main_next, context: bytes = context) -> bytes:
            return reference_expand_label(suite.hash, main_next, prefix, label, context, suite.hash_length)

        assert got.main_secret == main_next
        assert got.transcript_hash == (context if chained else th)
        assert got.client_traffic_secret == secret(b"c ap traffic")
        assert got.server_traffic_secret == secret(b"s ap traffic")
        assert got.exporter_secret == secret(b"exp master")
        assert got.resumption_secret == secret(b"res master")
    skipped = ks.next_eku_generation(
        suite, labels, main, th, shared, request, response, with_resumption=False, prefix=prefix
    )
    assert skipped.resumption_secret == b"" and skipped.client_traffic_secret == got.client_traffic_secret


@pytest.mark.parametrize("suite", [*HASH_SUITES, SUITES[CipherSuite.TLS_CHACHA20_POLY1305_SHA256]],
                         ids=[*IDS, "chacha20"])
@pytest.mark.parametrize("prefix", [ks.TLS13_LABEL_PREFIX, ks.DTLS13_LABEL_PREFIX])
def test_traffic_keys_follow_the_formula(suite: ks.SuiteInfo, prefix: bytes) -> None:
    """RFC 9846 §7.3: key and iv are HKDF-Expand-Label(secret, "key"/"iv", "", length)."""
    secret = bytes(range(1, suite.hash_length + 1))
    for _ in range(2):  # the second from the remembered HMAC inputs
        key, iv = ks.traffic_keys(suite, secret, prefix)
        assert key == reference_expand_label(suite.hash, secret, prefix, b"key", b"", suite.key_length)
        assert iv == reference_expand_label(suite.hash, secret, prefix, b"iv", b"", suite.iv_length)
