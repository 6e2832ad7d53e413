"""Several server certificates chosen by server_name (RFC 6066 §3, RFC 9846
§4.4.2.2; longtls.sni, docs/sni.md), between two in-memory longtls peers.

Each test looks at what the client received: the leaf of the chain in the
server's Certificate (``HandshakeComplete.peer_certificates``), the scheme of
its CertificateVerify, the alert that ended the handshake.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography import x509

from helpers.dtls_link import Clock, DatagramLink
from helpers.pair import Pair
from helpers.pki import Credential, make_ca, make_leaf
from helpers.renewal import renew
from longtls.config import Configuration
from longtls.connection import Connection
from longtls.constants import AlertDescription, SignatureScheme
from longtls.crypto.certificates import TrustStore
from longtls.dtls_connection import DTLSConnection
from longtls.errors import ConfigurationError, RemoteProtocolError
from longtls.events import (
    CertificateUpdated,
    CertificateUpdateDirection,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    SessionTicketReceived,
)
from longtls.sni import ServerCredential, dns_names, select_server_credential

CA = make_ca("ecdsa-p256")
DEFAULT = make_leaf(CA, "ecdsa-p256", ["default.example"])
A = make_leaf(CA, "ecdsa-p256", ["a.example", "www.a.example"])
B = make_leaf(CA, "rsa-2048", ["b.example"])
WILD = make_leaf(CA, "ecdsa-p256", ["*.w.example"])
STORE = TrustStore([CA.cert])


def credential(leaf: Credential, names: Sequence[str] = ()) -> ServerCredential:
    return ServerCredential(leaf.chain, leaf.key, tuple(names))


def server_config(*credentials: ServerCredential, default: Credential | None = DEFAULT, **kw: Any) -> Configuration:
    cfg = Configuration(is_client=False, server_credentials=credentials, eku_min_interval=0.0, **kw)
    if default is not None:
        cfg.certificate_chain, cfg.private_key = default.chain, default.key
    return cfg


def client_config(server_name: str | None, **kw: Any) -> Configuration:
    kw.setdefault("trust_store", STORE)
    return Configuration(is_client=True, server_name=server_name, **kw)


def handshake(client_cfg: Configuration, server_cfg: Configuration) -> Pair:
    pair = Pair(Connection(client_cfg), Connection(server_cfg))
    pair.client.start_handshake()
    try:
        pair.pump()
    except RemoteProtocolError:
        # The server refused: its alert goes to the client; the test reads
        # both sides' ConnectionClosed.
        pair.server_events.extend(pair.server.events())
        try:
            pair.client.receive_data(pair.server.data_to_send())
        except RemoteProtocolError:
            pass
        pair.client_events.extend(pair.client.events())
    return pair


def completed(events: list[Event]) -> HandshakeComplete:
    (done,) = [e for e in events if isinstance(e, HandshakeComplete)]
    return done


def served_leaf(server_name: str | None, server_cfg: Configuration, **client_kw: Any) -> x509.Certificate:
    """The leaf the server presented to a client asking for ``server_name``
    (verified by the client against the CA and that name)."""
    pair = handshake(client_config(server_name, **client_kw), server_cfg)
    return completed(pair.client_events).peer_certificates[0]


def closing_alert(events: list[Event]) -> AlertDescription | None:
    (closed,) = [e for e in events if isinstance(e, ConnectionClosed)]
    return closed.alert


# -- the rule on its own ------------------------------------------------------------------------


def test_names_come_from_the_leafs_dns_subject_alt_names() -> None:
    assert credential(A).names == ("a.example", "www.a.example")
    assert credential(WILD).names == ("*.w.example",)
    # Given names replace them, normalised (case, trailing dot).
    assert credential(A, ["A.Example.", "*.Other.Example"]).names == ("a.example", "*.other.example")
    ip_only = make_leaf(CA, "ecdsa-p256", ["192.0.2.1"])
    assert dns_names(ip_only.cert) == ()
    with pytest.raises(ConfigurationError, match="no DNS name"):
        credential(ip_only)


@pytest.mark.parametrize("bad", ["f*.example.com", "a.*.example.com", "*.com", "", "bücher.example", "a..example"])
def test_names_that_no_server_name_could_select_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        credential(A, [bad])


def test_a_key_of_another_certificate_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="does not match"):
        ServerCredential(A.chain, B.key)


def test_select_exact_then_wildcard_case_and_trailing_dot() -> None:
    a, wild, other = credential(A), credential(WILD), credential(A, ["x.w.example"])
    creds = [a, wild, other]
    assert select_server_credential(creds, "a.example") is a
    assert select_server_credential(creds, "WWW.A.Example.") is a
    # An exact name wins over the wildcard that also covers it, whatever the order.
    assert select_server_credential(creds, "x.w.example") is other
    assert select_server_credential(creds, "y.w.example") is wild
    # A wildcard stands for exactly one label (RFC 9525 §6.3).
    assert select_server_credential(creds, "w.example") is None
    assert select_server_credential(creds, "z.y.w.example") is None
    assert select_server_credential(creds, None) is None
    assert select_server_credential([], "a.example") is None


# -- the handshake -------------------------------------------------------------------------------


def test_each_name_gets_its_own_chain_and_others_the_default() -> None:
    cfg = server_config(credential(A), credential(B), credential(WILD))
    assert served_leaf("a.example", cfg) == A.cert
    assert served_leaf("www.a.example", cfg) == A.cert
    assert served_leaf("b.example", cfg) == B.cert
    assert served_leaf("x.w.example", cfg) == WILD.cert
    assert served_leaf("default.example", cfg) == DEFAULT.cert
    # A name the server has no certificate for gets the default (the client
    # then refuses it for the name, which is its business).
    unknown = handshake(client_config("unknown.example", verify_peer=False), cfg)
    assert completed(unknown.client_events).peer_certificates[0] == DEFAULT.cert
    # An IP address is never sent as server_name (RFC 6066 §3): the default.
    no_sni = handshake(client_config("192.0.2.7", verify_peer=False), cfg)
    assert completed(no_sni.server_events).server_name is None
    assert completed(no_sni.client_events).peer_certificates[0] == DEFAULT.cert


def test_the_connection_remembers_its_credential() -> None:
    a = credential(A)
    cfg = server_config(a, credential(B))
    pair = handshake(client_config("a.example"), cfg)
    assert pair.server.server_credential is a
    assert pair.server.local_certificates == tuple(A.chain)
    default = handshake(client_config("default.example"), cfg)
    assert default.server.server_credential is None
    assert pair.client.server_credential is None


def test_rsa_and_ecdsa_certificates_sign_with_their_own_key_type() -> None:
    cfg = server_config(credential(A), credential(B))
    rsa = completed(handshake(client_config("b.example"), cfg).client_events)
    ecdsa = completed(handshake(client_config("a.example"), cfg).client_events)
    assert rsa.signature_scheme in (
        SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512,
    )
    assert ecdsa.signature_scheme is SignatureScheme.ecdsa_secp256r1_sha256


def test_two_certificates_for_one_name_the_one_the_client_can_verify() -> None:
    rsa_a = make_leaf(CA, "rsa-2048", ["a.example"])
    cfg = server_config(credential(A), credential(rsa_a))
    only_rsa = (SignatureScheme.rsa_pss_rsae_sha256,)
    only_ecdsa = (SignatureScheme.ecdsa_secp256r1_sha256,)
    assert served_leaf("a.example", cfg, signature_algorithms=only_rsa) == rsa_a.cert
    assert served_leaf("a.example", cfg, signature_algorithms=only_ecdsa) == A.cert
    # Both: the first listed.
    assert served_leaf("a.example", cfg) == A.cert


def test_a_chosen_certificate_the_client_cannot_verify_is_handshake_failure() -> None:
    # The scheme check applies to the chosen credential, not to the default.
    cfg = server_config(credential(B))
    pair = handshake(client_config("b.example", signature_algorithms=(SignatureScheme.ecdsa_secp256r1_sha256,)), cfg)
    assert closing_alert(pair.server_events) is AlertDescription.handshake_failure


def test_without_a_default_no_name_is_missing_extension_and_an_unknown_one_unrecognized_name() -> None:
    cfg = server_config(credential(A), default=None)
    cfg.validate()  # credentials alone are a valid server configuration
    assert served_leaf("a.example", cfg) == A.cert
    pair = handshake(client_config("192.0.2.7", verify_peer=False), cfg)
    assert closing_alert(pair.server_events) is AlertDescription.missing_extension  # RFC 9846 §9.2
    pair = handshake(client_config("c.example", verify_peer=False), cfg)
    assert closing_alert(pair.server_events) is AlertDescription.unrecognized_name  # RFC 6066 §3
    assert closing_alert(pair.client_events) is AlertDescription.unrecognized_name


def test_configuration_checks() -> None:
    with pytest.raises(ConfigurationError, match="for a server"):
        Configuration(is_client=True, server_credentials=[credential(A)]).validate()
    with pytest.raises(ConfigurationError, match="ServerCredential"):
        Configuration(is_client=False, server_credentials=[(A.chain, A.key)]).validate()  # type: ignore[list-item]
    assert "server_credentials" not in repr(server_config(credential(A)))


# -- resumption ----------------------------------------------------------------------------------


def _ticket(server_name: str, cfg: Configuration) -> Any:
    pair = handshake(client_config(server_name, extended_key_update=False), cfg)
    tickets = [e.ticket for e in pair.client_events if isinstance(e, SessionTicketReceived)]
    assert tickets
    return tickets[0]


def test_a_ticket_resumes_only_under_the_name_it_was_issued_for() -> None:
    cfg = server_config(credential(A), credential(B))
    ticket = _ticket("a.example", cfg)
    same = handshake(client_config("a.example", extended_key_update=False, session_ticket=ticket), cfg)
    assert completed(same.server_events).resumed
    # longtls's client offers a ticket only for its own name; a client that
    # offers it for another (RFC 9846 §4.6.1 lets it, "if such an indication
    # is provided") gets a full handshake with the other name's certificate.
    moved = dataclasses.replace(ticket, server_name="b.example")
    other = handshake(client_config("b.example", extended_key_update=False, session_ticket=moved), cfg)
    done = completed(other.client_events)
    assert not done.resumed and done.peer_certificates[0] == B.cert


def test_with_one_certificate_a_ticket_resumes_under_any_name() -> None:
    # RFC 9846 §4.2.11: no need to tie the ticket to a name when every name
    # gets the same certificate; unchanged behaviour without server_credentials.
    cfg = server_config()
    ticket = _ticket("default.example", cfg)
    moved = dataclasses.replace(ticket, server_name="other.example")
    again = handshake(client_config("other.example", extended_key_update=False, session_ticket=moved), cfg)
    assert completed(again.server_events).resumed


# -- what the connection's credential is used for after the handshake ---------------------------


def test_exported_authenticators_use_the_connections_credential() -> None:
    cfg = server_config(credential(A), credential(B))
    pair = handshake(client_config("b.example"), cfg)
    authenticator = pair.server.export_authenticator(None)  # spontaneous (RFC 9261 §5)
    assert pair.client.validate_authenticator(authenticator).certificates == tuple(B.chain)


def test_a_renewed_credential_goes_to_its_connections_as_a_certificate_update() -> None:
    b = credential(B)
    cfg = server_config(credential(A), b)
    on_b = handshake(client_config("b.example"), cfg)
    on_default = handshake(client_config("default.example"), cfg)
    renewed = renew(B)
    b.certificate_chain, b.private_key = renewed.chain, renewed.key  # what a renewal does
    # update_certificate() defaults to the connection's own credential, now renewed.
    on_b.server.update_certificate()
    on_b.pump()
    (update,) = [e for e in on_b.client_events if isinstance(e, CertificateUpdated)]
    assert update.direction is CertificateUpdateDirection.received and update.certificates[0] == renewed.cert
    # New connections for the name get it too; the default's connections are untouched.
    assert served_leaf("b.example", cfg) == renewed.cert
    assert on_default.server.local_certificates == tuple(DEFAULT.chain)


def test_over_dtls_too() -> None:
    # The DTLS server runs the same engine (handshake/transport.py).
    cfg = server_config(credential(A), credential(B))
    for name, leaf in (("b.example", B), ("a.example", A), ("default.example", DEFAULT)):
        link = DatagramLink(DTLSConnection(client_config(name)), cfg, Clock())
        link.handshake()
        assert completed(link.client_events).peer_certificates[0] == leaf.cert
        assert link.server is not None and link.server.local_certificates[0] == leaf.cert
