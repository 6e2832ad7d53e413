"""The key schedule for every transport: the HKDF label prefix is a parameter
("tls13 " for TLS, RFC 9846 §7.1; "dtls13" for DTLS 1.3, RFC 9147 §5.9), and
DTLS's record-number key comes from the same traffic secret (RFC 9147 §4.2.3).

Every expected value is computed here from the formulas, with the standard
library's hmac (RFC 5869 HKDF-Expand written out), not with longtls.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from longtls.constants import CipherSuite
from longtls.crypto import key_schedule as ks
from longtls.crypto.suites import SUITES, SuiteInfo

ALL_SUITES = sorted(SUITES, key=int)


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 §2.3: T(i) = HMAC(PRK, T(i-1) | info | i), output the first L bytes."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


def expand_label(hash_name: str, secret: bytes, prefix: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """HkdfLabel (RFC 9846 §7.1): uint16 length, opaque label<7..255> =
    prefix + Label, opaque context<0..255>."""
    full = prefix + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((len(context),)) + context
    return hkdf_expand(hash_name, secret, info, length)


def _secret(suite: SuiteInfo) -> bytes:
    return hashlib.new(suite.hash_name, b"a traffic secret for " + suite.suite.name.encode()).digest()


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: CipherSuite(s).name)
@pytest.mark.parametrize(("label", "context"), [
    (b"key", b""), (b"iv", b""), (b"sn", b""), (b"c hs traffic", bytes(range(32))), (b"derived", b"\xff" * 48),
])
def test_dtls13_prefix_matches_the_formula(suite: CipherSuite, label: bytes, context: bytes) -> None:
    info = SUITES[suite]
    secret = _secret(info)
    for length in (info.key_length, info.iv_length, info.hash_length):
        got = ks.hkdf_expand_label(info, secret, label, context, length, ks.DTLS13_LABEL_PREFIX)
        assert got == expand_label(info.hash_name, secret, b"dtls13", label, context, length)
        # The same call with TLS's prefix (the default) is a different key.
        tls = ks.hkdf_expand_label(info, secret, label, context, length)
        assert tls == expand_label(info.hash_name, secret, b"tls13 ", label, context, length)
        assert tls != got


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: CipherSuite(s).name)
def test_dtls13_derive_secret_and_traffic_keys(suite: CipherSuite) -> None:
    info = SUITES[suite]
    secret = _secret(info)
    transcript = hashlib.new(info.hash_name, b"ClientHello...ServerHello").digest()
    assert ks.derive_secret(info, secret, b"s hs traffic", transcript, ks.DTLS13_LABEL_PREFIX) == expand_label(
        info.hash_name, secret, b"dtls13", b"s hs traffic", transcript, info.hash_length
    )
    key, iv = ks.traffic_keys(info, secret, ks.DTLS13_LABEL_PREFIX)
    assert key == expand_label(info.hash_name, secret, b"dtls13", b"key", b"", info.key_length)
    assert iv == expand_label(info.hash_name, secret, b"dtls13", b"iv", b"", info.iv_length)


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: CipherSuite(s).name)
def test_record_number_key(suite: CipherSuite) -> None:
    """RFC 9147 §4.2.3: [sender]_sn_key = HKDF-Expand-Label(Secret, "sn", "", key_length),
    as long as the AEAD key (16 bytes for the AES-128 suites, 32 otherwise)."""
    info = SUITES[suite]
    secret = _secret(info)
    sn_key = ks.record_number_key(info, secret)
    key, _ = ks.traffic_keys(info, secret, ks.DTLS13_LABEL_PREFIX)
    assert len(sn_key) == len(key) == info.key_length == (16 if "AES_128" in CipherSuite(suite).name else 32)
    assert sn_key == expand_label(info.hash_name, secret, b"dtls13", b"sn", b"", info.key_length)
    assert sn_key != key



def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 §2.2 (a zero-length salt is HashLen zeros)."""
    return hmac.new(salt or bytes(hashlib.new(hash_name).digest_size), ikm, hash_name).digest()


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: CipherSuite(s).name)
@pytest.mark.parametrize("psk", [None, b"\x42" * 32], ids=["ecdhe", "psk"])
def test_dtls13_handshake_key_schedule(suite: CipherSuite, psk: bytes | None) -> None:
    """RFC 9846 §7.1's schedule with every label under "dtls13" (RFC 9147 §5.9)."""
    info = SUITES[suite]
    name, n = info.hash_name, info.hash_length
    hello, finished_s, finished_c = (hashlib.new(name, m).digest() for m in (b"CH..SH", b"CH..sFin", b"CH..cFin"))
    shared = bytes(range(32))

    def derive(secret: bytes, label: bytes, context: bytes) -> bytes:
        return expand_label(name, secret, b"dtls13", label, context, n)

    empty = hashlib.new(name, b"").digest()
    early = hkdf_extract(name, b"", psk or bytes(n))
    handshake = hkdf_extract(name, derive(early, b"derived", empty), shared)
    main = hkdf_extract(name, derive(handshake, b"derived", empty), bytes(n))

    secrets = ks.HandshakeSecrets(info, psk, ks.DTLS13_LABEL_PREFIX)
    assert secrets.early_secret == early
    assert secrets.binder_key(b"ext binder") == derive(early, b"ext binder", empty)
    assert secrets.client_early_traffic_secret(hello) == derive(early, b"c e traffic", hello)
    secrets.derive_handshake(shared, hello)
    assert secrets.handshake_secret == handshake
    assert secrets.client_handshake_traffic_secret == derive(handshake, b"c hs traffic", hello)
    assert secrets.server_handshake_traffic_secret == derive(handshake, b"s hs traffic", hello)
    secrets.derive_application(finished_s)
    assert secrets.main_secret == main
    assert secrets.client_application_traffic_secret == derive(main, b"c ap traffic", finished_s)
    assert secrets.server_application_traffic_secret == derive(main, b"s ap traffic", finished_s)
    assert secrets.exporter_secret == derive(main, b"exp master", finished_s)
    secrets.derive_resumption(finished_c)
    assert secrets.resumption_secret == derive(main, b"res master", finished_c)
    # The other prefixed derivations a DTLS connection uses.
    traffic = secrets.client_application_traffic_secret
    assert ks.next_traffic_secret(info, traffic, ks.DTLS13_LABEL_PREFIX) == derive(traffic, b"traffic upd", b"")
    finished_key = expand_label(name, traffic, b"dtls13", b"finished", b"", n)
    assert ks.finished_verify_data(info, traffic, hello, ks.DTLS13_LABEL_PREFIX) == hmac.new(
        finished_key, hello, name
    ).digest()
    assert ks.resumption_psk(info, secrets.resumption_secret, b"\x00", ks.DTLS13_LABEL_PREFIX) == derive(
        secrets.resumption_secret, b"resumption", b"\x00"
    )
    exporter = derive(secrets.exporter_secret, b"EXPERIMENTAL x", empty)
    assert ks.export_keying_material(
        info, secrets.exporter_secret, b"EXPERIMENTAL x", b"ctx", 42, ks.DTLS13_LABEL_PREFIX
    ) == expand_label(name, exporter, b"dtls13", b"exporter", hashlib.new(name, b"ctx").digest(), 42)
    # The same handshake over TLS derives other secrets.
    tls = ks.HandshakeSecrets(info, psk)
    tls.derive_handshake(shared, hello)
    assert tls.client_handshake_traffic_secret != secrets.client_handshake_traffic_secret
