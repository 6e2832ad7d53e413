"""Chain verification once per distinct chain and trust store (issue 16).

``load_der_certificate`` gives one certificate object per distinct DER, and
``verify_chain`` remembers, per TrustStore, the chains of such objects that
verified for a server name and purpose.  What a user relies on: a remembered
chain still fails once a certificate in it is out of its validity period,
for another name, another purpose or another trust store; and the
validation itself (pyca/cryptography's verifier) runs once per distinct
chain, not once per connection.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from helpers.pair import configs, connect
from helpers.pki import make_ca, make_intermediate, make_leaf
from longtls.constants import AlertDescription
from longtls.crypto import certificates
from longtls.crypto.certificates import (
    TrustStore,
    certificate_der,
    load_der_certificate,
    verify_chain,
)
from longtls.errors import CertificateError

A = AlertDescription
DAY = datetime.timedelta(days=1)


def received(chain: list[x509.Certificate]) -> list[x509.Certificate]:
    """The chain as a peer's Certificate message delivers it: parsed from DER."""
    return [load_der_certificate(c.public_bytes(Encoding.DER)) for c in chain]


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the path validations pyca/cryptography runs (each builds a PolicyBuilder)."""
    calls: list[int] = []
    real = certificates.PolicyBuilder

    def counting_builder() -> object:
        calls.append(1)
        return real()

    monkeypatch.setattr(certificates, "PolicyBuilder", counting_builder)
    return calls


def test_same_der_gives_the_same_certificate_object() -> None:
    ca = make_ca()
    der = make_leaf(ca, "ecdsa-p256").cert.public_bytes(Encoding.DER)
    first = load_der_certificate(der)
    assert load_der_certificate(bytes(der)) is first
    assert certificate_der(first) == der
    with pytest.raises(ValueError):
        load_der_certificate(der[:-1])


def test_a_chain_received_again_is_validated_once(validations: list[int]) -> None:
    ca = make_ca()
    inter = make_intermediate(ca, "ecdsa-p256")
    leaf = make_leaf(inter, "ecdsa-p256")
    store = TrustStore([ca.cert])
    paths = [verify_chain(received(leaf.chain), store, server_name="localhost", is_server_cert=True)
             for _ in range(3)]
    assert len(validations) == 1
    assert paths[0] == paths[1] == paths[2] == [leaf.cert, inter.cert, ca.cert]
    # The same certificates as other objects (not parsed by load_der_certificate): validated again.
    verify_chain(list(leaf.chain), store, server_name="localhost", is_server_cert=True)
    assert len(validations) == 2


@pytest.mark.parametrize("when", ["expired", "not yet valid"])
def test_validity_is_checked_at_every_use(validations: list[int], when: str) -> None:
    ca = make_ca()
    now = datetime.datetime.now(datetime.UTC)
    # The intermediate's period is the narrowest: the window is the whole chain's.
    inter = make_intermediate(ca, "ecdsa-p256", not_before=now - DAY, not_after=now + DAY)
    leaf = make_leaf(inter, "ecdsa-p256")
    store, chain = TrustStore([ca.cert]), received(leaf.chain)
    verify_chain(chain, store, server_name="localhost", is_server_cert=True, now=now)
    outside = now + 2 * DAY if when == "expired" else now - 2 * DAY
    with pytest.raises(CertificateError, match=f"^certificate {when}: ") as raised:
        verify_chain(chain, store, server_name="localhost", is_server_cert=True, now=outside)
    assert raised.value.alert is A.certificate_expired
    # Naive datetimes are UTC, as without the cache.
    verify_chain(chain, store, server_name="localhost", is_server_cert=True, now=now.replace(tzinfo=None))
    assert len(validations) == 2


def test_another_name_purpose_or_store_is_validated_afresh(validations: list[int]) -> None:
    ca = make_ca()
    leaf = make_leaf(ca, "ecdsa-p256", ["localhost"])
    store, chain = TrustStore([ca.cert]), received(leaf.chain)
    verify_chain(chain, store, server_name="localhost", is_server_cert=True)
    with pytest.raises(CertificateError, match="name mismatch") as raised:
        verify_chain(chain, store, server_name="other.example", is_server_cert=True)
    assert raised.value.alert is A.bad_certificate
    # A server certificate (serverAuth only) offered as a client's.
    with pytest.raises(CertificateError, match="lacks clientAuth") as raised:
        verify_chain(chain, store, server_name=None, is_server_cert=False)
    assert raised.value.alert is A.unsupported_certificate
    with pytest.raises(CertificateError, match="unknown CA") as raised:
        verify_chain(chain, TrustStore([make_ca(common_name="another CA").cert]), server_name="localhost",
                     is_server_cert=True)
    assert raised.value.alert is A.unknown_ca
    assert len(validations) == 4


def test_the_cache_is_bounded(validations: list[int]) -> None:
    ca = make_ca()
    store = TrustStore([ca.cert])
    first = received(make_leaf(ca, "ecdsa-p256").chain)
    verify_chain(first, store, server_name="localhost", is_server_cert=True)
    for _ in range(certificates._VERIFIED_LIMIT):
        verify_chain(received(make_leaf(ca, "ecdsa-p256").chain), store, server_name="localhost",
                     is_server_cert=True)
    assert len(validations) == 1 + certificates._VERIFIED_LIMIT
    verify_chain(first, store, server_name="localhost", is_server_cert=True)  # evicted: validated again
    assert len(validations) == 2 + certificates._VERIFIED_LIMIT


def test_a_handshake_after_the_certificate_expired_fails(validations: list[int]) -> None:
    """Two handshakes with the same configurations: the second, after the
    server certificate's notAfter, ends with certificate_expired (RFC 9846 §6.2)."""
    clock = [datetime.datetime.now(datetime.UTC).timestamp()]
    client_cfg, server_cfg, _ = configs(client_now=lambda: clock[0])
    assert len(connect(client_cfg, server_cfg).client_events) > 0
    leaf = server_cfg.certificate_chain[0]
    clock[0] = (leaf.not_valid_after_utc + DAY).timestamp()
    with pytest.raises(CertificateError) as raised:
        connect(client_cfg, server_cfg)
    assert raised.value.alert is A.certificate_expired
    assert len(validations) == 2
