"""Who may connect: allow-list rules, CRLs, and both enforced in handshakes (issue 15).

docs/access-control.md describes the rules; crypto/peer_policy.py implements
them.  Matching is tested on certificates built here; the handshakes run two
longtls connections in memory and read the alert each end saw.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from helpers.cert_update import peers, pki
from helpers.mls_link import pump
from helpers.pair import Pair
from helpers.pki import Credential, make_ca, make_intermediate, make_leaf
from helpers.renewal import renew
from longtls import certs
from longtls.config import ClientAuth, Configuration
from longtls.connection import Connection
from longtls.constants import AlertDescription
from longtls.crypto.certificates import TrustStore
from longtls.crypto.peer_policy import (
    PeerAllowList,
    check_crls_against_anchors,
    check_revocation,
    crl_expiry_warning,
    load_crls,
)
from longtls.errors import AuthenticatorError, CertificateError, ConfigurationError, ProtocolError
from longtls.events import ConnectionClosed, HandshakeComplete, SessionTicketReceived
from longtls.mls_connection import MLSConnection

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


# --- matching rules ------------------------------------------------------------------------


def _cert(cn: str | None = "agent", sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
    """A self-signed certificate carrying exactly these names (matching reads nothing else)."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, None)


def dns(name: str) -> x509.DNSName:
    return x509.DNSName(name)


def ip(text: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_address(text))


def uri(text: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(text)


def test_cn_is_exact_and_case_sensitive() -> None:
    rules = PeerAllowList(cn="backup-agent")
    assert rules.matching_rule(_cert("backup-agent")) == "allow-cn 'backup-agent'"
    assert rules.matching_rule(_cert("Backup-Agent")) is None
    assert rules.matching_rule(_cert("backup-agent2")) is None
    assert rules.matching_rule(_cert(None, [dns("backup-agent")])) is None  # a SAN is no CN


@pytest.mark.parametrize(
    ("rule", "name", "admitted"),
    [
        ("db.example.com", "db.example.com", True),
        ("db.example.com", "DB.Example.COM", True),  # RFC 4343: DNS names ignore case
        ("DB.example.com.", "db.example.com", True),  # a trailing dot is the same name
        ("db.example.com", "db2.example.com", False),
        ("*.example.com", "a.example.com", True),  # RFC 6125 §6.4.3: one left-most label
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "a.example.org", False),
        ("a.example.com", "*.example.com", False),  # a wildcard certificate is not one name
        ("*.example.com", "*.example.com", True),  # ...but is the same wildcard
    ],
)
def test_dns_rules(rule: str, name: str, admitted: bool) -> None:
    assert (PeerAllowList(dns=rule).matching_rule(_cert(sans=[dns(name)])) is not None) is admitted


@pytest.mark.parametrize(
    ("rule", "address", "admitted"),
    [
        ("10.1.2.3", "10.1.2.3", True),
        ("10.1.2.3", "10.1.2.4", False),
        ("10.0.0.0/8", "10.200.0.1", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("2001:db8::/32", "2001:db8:1::5", True),
        ("::ffff:10.0.0.0/104", "10.0.0.1", False),  # another IP version never matches
        ("[::1]", "::1", True),
    ],
)
def test_ip_rules(rule: str, address: str, admitted: bool) -> None:
    assert (PeerAllowList(ip=rule).matching_rule(_cert(sans=[ip(address)])) is not None) is admitted


def test_uri_is_exact() -> None:
    rules = PeerAllowList(uri=["spiffe://example.org/ns/prod/sa/api"])
    assert rules.matching_rule(_cert(sans=[uri("spiffe://example.org/ns/prod/sa/api")])) is not None
    assert rules.matching_rule(_cert(sans=[uri("spiffe://example.org/ns/prod/sa/api2")])) is None
    assert rules.matching_rule(_cert(sans=[uri("spiffe://example.org/ns/prod/sa")])) is None
    # The URI is not a DNS name, and a DNS name is not the URI.
    assert rules.matching_rule(_cert(sans=[dns("example.org")])) is None


def test_any_rule_admits() -> None:
    rules = PeerAllowList(cn="nobody", dns="*.agents.example.com", ip="192.0.2.0/24")
    assert rules.matching_rule(_cert("x", [ip("192.0.2.7")])) == "allow-ip '192.0.2.0/24'"
    assert rules.matching_rule(_cert("x", [dns("a.agents.example.com")])) == "allow-dns '*.agents.example.com'"
    assert rules.matching_rule(_cert("nobody")) == "allow-cn 'nobody'"
    assert rules.matching_rule(_cert("x", [dns("agents.example.com"), ip("192.0.3.1")])) is None


def test_a_miss_is_access_denied_naming_identity_and_rules() -> None:
    rules = PeerAllowList(cn="backup-agent", dns="*.agents.example.com")
    with pytest.raises(CertificateError) as caught:
        rules.check(_cert("intruder", [dns("intruder.example.com")]), peer="client")
    assert caught.value.alert is AlertDescription.access_denied
    message = str(caught.value.args[0])
    assert "client certificate CN='intruder' (DNS:intruder.example.com)" in message
    assert "allow-cn 'backup-agent'; allow-dns '*.agents.example.com'" in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "at least one rule"),
        ({"cn": ""}, "cannot be empty"),
        ({"dns": "w*.example.com"}, "whole left-most label"),
        ({"dns": "a.*.example.com"}, "whole left-most label"),
        ({"dns": "*.com"}, "at least two more labels"),
        ({"dns": "a..example.com"}, "not a DNS name"),
        ({"dns": "bücher.example"}, "A-label"),
        ({"ip": "10.0.0.1/8"}, "did you mean 10.0.0.0/8"),
        ({"ip": "10.0.0"}, "not an IP address"),
        ({"uri": "example.org/service"}, "is not a URI"),
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("*", r"\*").replace(".", r"\.")):
        PeerAllowList(**kwargs)  # type: ignore[arg-type]


# --- CRLs ----------------------------------------------------------------------------------


def make_crl(
    issuer: Credential, revoked: Sequence[x509.Certificate] = (),
    *, next_update: datetime.datetime | None = None, reason: x509.ReasonFlags | None = None,
    signer: Credential | None = None,
) -> x509.CertificateRevocationList:
    """A complete CRL of ``issuer`` listing ``revoked`` (signed by ``signer``'s key, default the issuer's)."""
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
        .last_update(NOW - DAY).next_update(next_update or NOW + 7 * DAY)
    )
    for cert in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(NOW - DAY)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign((signer or issuer).key, hashes.SHA256())


@pytest.fixture(scope="module")
def chain() -> tuple[Credential, Credential, Credential]:
    """root -> intermediate -> client leaf."""
    root = make_ca("ecdsa-p256", common_name="ACL test root")
    intermediate = make_intermediate(root, "ecdsa-p256", common_name="ACL test intermediate")
    return root, intermediate, make_leaf(intermediate, "ecdsa-p256", ["agent.example.com"], client=True)


def test_revoked_leaf_is_certificate_revoked(chain: tuple[Credential, Credential, Credential]) -> None:
    root, intermediate, leaf = chain
    path = [leaf.cert, intermediate.cert, root.cert]
    crl = make_crl(intermediate, [leaf.cert], reason=x509.ReasonFlags.key_compromise)
    with pytest.raises(CertificateError) as caught:
        check_revocation(path, [crl], now=NOW, peer="client")
    assert caught.value.alert is AlertDescription.certificate_revoked
    message = str(caught.value.args[0])
    assert f"serial {leaf.cert.serial_number:#x}" in message
    assert "CN=ACL test intermediate" in message and "reason key_compromise" in message
    check_revocation(path, [make_crl(intermediate, [])], now=NOW)  # not listed: admitted


def test_revoked_intermediate_is_certificate_revoked(chain: tuple[Credential, Credential, Credential]) -> None:
    root, intermediate, leaf = chain
    with pytest.raises(CertificateError) as caught:
        check_revocation([leaf.cert, intermediate.cert, root.cert], [make_crl(root, [intermediate.cert])], now=NOW)
    assert caught.value.alert is AlertDescription.certificate_revoked
    assert "a CA in the chain of" in str(caught.value.args[0])


def test_crl_of_another_ca_is_ignored(chain: tuple[Credential, Credential, Credential]) -> None:
    root, intermediate, leaf = chain
    path = [leaf.cert, intermediate.cert, root.cert]
    # Same issuer name, another key (RFC 5280 §6.3.3 (f)): not this CA's CRL.
    impostor = make_intermediate(root, "ecdsa-p256", common_name="ACL test intermediate")
    check_revocation(path, [make_crl(intermediate, [leaf.cert], signer=impostor)], now=NOW)
    # Another CA entirely, listing the same serial number.
    other = make_ca("ecdsa-p256", common_name="ACL other CA")
    forged = (
        x509.CertificateRevocationListBuilder().issuer_name(other.cert.subject)
        .last_update(NOW - DAY).next_update(NOW + DAY)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(leaf.cert.serial_number).revocation_date(NOW).build()
        ).sign(other.key, hashes.SHA256())
    )
    check_revocation(path, [forged], now=NOW)


def test_stale_crl_fails_closed(chain: tuple[Credential, Credential, Credential]) -> None:
    root, intermediate, leaf = chain
    path = [leaf.cert, intermediate.cert, root.cert]
    stale = make_crl(intermediate, [], next_update=NOW - DAY)
    with pytest.raises(CertificateError) as caught:
        check_revocation(path, [stale], now=NOW)
    assert caught.value.alert is AlertDescription.certificate_unknown
    assert "past its nextUpdate" in str(caught.value.args[0])
    # A fresh CRL of the same CA next to the stale one decides.
    check_revocation(path, [stale, make_crl(intermediate, [])], now=NOW)
    # A stale CRL still revokes what it lists.
    with pytest.raises(CertificateError) as caught:
        check_revocation(path, [make_crl(intermediate, [leaf.cert], next_update=NOW - DAY)], now=NOW)
    assert caught.value.alert is AlertDescription.certificate_revoked


def test_load_crls_pem_bundle_and_der(tmp_path: Path, chain: tuple[Credential, Credential, Credential]) -> None:
    root, intermediate, leaf = chain
    first, second = make_crl(root, []), make_crl(intermediate, [leaf.cert])
    bundle = tmp_path / "crls.pem"
    bundle.write_bytes(
        b"a comment\n" + first.public_bytes(serialization.Encoding.PEM) + second.public_bytes(serialization.Encoding.PEM)
    )
    loaded = load_crls(bundle)
    assert [c.issuer for c in loaded] == [root.cert.subject, intermediate.cert.subject]
    assert loaded[1].get_revoked_certificate_by_serial_number(leaf.cert.serial_number) is not None
    der = tmp_path / "crl.der"
    der.write_bytes(second.public_bytes(serialization.Encoding.DER))
    assert [c.issuer for c in load_crls(der)] == [intermediate.cert.subject]


def test_load_crls_refusals(tmp_path: Path, chain: tuple[Credential, Credential, Credential]) -> None:
    root = chain[0]
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a CRL")
    with pytest.raises(ConfigurationError, match="not a PEM or DER certificate revocation list"):
        load_crls(garbage)
    with pytest.raises(ConfigurationError, match="cannot read CRL file"):
        load_crls(tmp_path / "missing.pem")
    delta = (
        x509.CertificateRevocationListBuilder().issuer_name(root.cert.subject)
        .last_update(NOW).next_update(NOW + DAY).add_extension(x509.DeltaCRLIndicator(1), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    (tmp_path / "delta.pem").write_bytes(delta.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigurationError, match="delta CRL"):
        load_crls(tmp_path / "delta.pem")


def test_crl_signed_by_another_key_of_a_trusted_name(chain: tuple[Credential, Credential, Credential]) -> None:
    root = chain[0]
    impostor = make_ca("ecdsa-p256", common_name="ACL test root")
    check_crls_against_anchors([make_crl(root)], [root.cert])
    with pytest.raises(ConfigurationError, match="not signed by that trusted CA's key"):
        check_crls_against_anchors([make_crl(root, signer=impostor)], [root.cert])


def test_crl_expiry_warning(chain: tuple[Credential, Credential, Credential]) -> None:
    root = chain[0]
    assert crl_expiry_warning("c.pem", make_crl(root), now=NOW) is None
    soon = crl_expiry_warning("c.pem", make_crl(root, next_update=NOW + datetime.timedelta(hours=3)), now=NOW)
    assert soon is not None and "reaches its nextUpdate" in soon
    past = crl_expiry_warning("c.pem", make_crl(root, next_update=NOW - DAY), now=NOW)
    assert past is not None and "past its nextUpdate" in past and "certificate_unknown" in past


# --- configuration -------------------------------------------------------------------------


def test_configuration_refuses_checks_that_cannot_run() -> None:
    allow = PeerAllowList(cn="x")
    with pytest.raises(ConfigurationError, match="need verify_peer"):
        Configuration(is_client=True, verify_peer=False, peer_allow=allow).validate()
    p = pki()
    for auth in (ClientAuth.NONE, ClientAuth.OPTIONAL):
        server = Configuration(
            is_client=False, certificate_chain=p.server.chain, private_key=p.server.key,
            client_auth=auth, peer_allow=allow,
        )
        with pytest.raises(ConfigurationError, match="client_auth REQUIRED"):
            server.validate()
    server = Configuration(
        is_client=False, certificate_chain=p.server.chain, private_key=p.server.key,
        crls=(make_crl(p.ca),),
    )
    with pytest.raises(ConfigurationError, match="crls on a server"):
        server.validate()


# --- in handshakes -------------------------------------------------------------------------


def _handshake(client_cfg: Configuration, server_cfg: Configuration) -> tuple[Pair, list[ProtocolError]]:
    """Run a handshake in memory; the errors the ends raised (their alerts are on the wire)."""
    pair = Pair(Connection(client_cfg), Connection(server_cfg))
    errors: list[ProtocolError] = []
    pair.client.start_handshake()
    for _ in range(20):
        c2s = pair.client.data_to_send()
        try:
            pair.server.receive_data(c2s)
        except ProtocolError as exc:
            errors.append(exc)
        s2c = pair.server.data_to_send()
        try:
            pair.client.receive_data(s2c)
        except ProtocolError as exc:
            errors.append(exc)
        pair.client_events.extend(pair.client.events())
        pair.server_events.extend(pair.server.events())
        if not c2s and not s2c:
            break
    return pair, errors


def _closed(events: list[object]) -> ConnectionClosed:
    found = [e for e in events if isinstance(e, ConnectionClosed)]
    assert found, events
    return found[0]


def _configs(client: Credential, **server_kw: object) -> tuple[Configuration, Configuration]:
    p = pki()
    store = TrustStore([p.ca.cert])
    client_cfg = Configuration(
        is_client=True, server_name="localhost", trust_store=store,
        certificate_chain=client.chain, private_key=client.key,
    )
    server_cfg = Configuration(
        is_client=False, certificate_chain=p.server.chain, private_key=p.server.key, trust_store=store,
        client_auth=ClientAuth.REQUIRED, **server_kw,  # type: ignore[arg-type]
    )
    return client_cfg, server_cfg


@pytest.fixture(scope="module")
def clients() -> dict[str, Credential]:
    ca = pki().ca
    return {
        "allowed": make_leaf(ca, "ecdsa-p256", ["backup-agent"], client=True),
        "outsider": make_leaf(ca, "ecdsa-p256", ["intruder"], client=True),
    }


def test_allowed_client_connects(clients: dict[str, Credential]) -> None:
    client_cfg, server_cfg = _configs(clients["allowed"], peer_allow=PeerAllowList(cn="backup-agent"))
    pair, errors = _handshake(client_cfg, server_cfg)
    assert not errors
    assert pair.server.handshake_complete and pair.client.handshake_complete
    done = [e for e in pair.server_events if isinstance(e, HandshakeComplete)]
    assert done[0].peer_certificates[0] == clients["allowed"].cert


def test_client_outside_the_list_gets_access_denied(clients: dict[str, Credential]) -> None:
    client_cfg, server_cfg = _configs(
        clients["outsider"], peer_allow=PeerAllowList(cn="backup-agent", dns="*.agents.example.com")
    )
    pair, errors = _handshake(client_cfg, server_cfg)
    server_end, client_end = _closed(pair.server_events), _closed(pair.client_events)
    assert server_end.alert is AlertDescription.access_denied and not server_end.by_peer
    assert client_end.alert is AlertDescription.access_denied and client_end.by_peer
    assert not pair.server.handshake_complete
    refusal = [e for e in errors if isinstance(e, CertificateError)]
    assert "client certificate CN='intruder'" in refusal[0].args[0]
    assert "allow-cn 'backup-agent'; allow-dns '*.agents.example.com'" in refusal[0].args[0]


def test_revoked_client_gets_certificate_revoked(clients: dict[str, Credential]) -> None:
    p = pki()
    client_cfg, server_cfg = _configs(clients["allowed"], crls=(make_crl(p.ca, [clients["allowed"].cert]),))
    pair, errors = _handshake(client_cfg, server_cfg)
    assert _closed(pair.server_events).alert is AlertDescription.certificate_revoked
    client_end = _closed(pair.client_events)
    assert client_end.alert is AlertDescription.certificate_revoked and client_end.by_peer
    # A CRL of the same CA that does not list it admits it.
    client_cfg, server_cfg = _configs(clients["allowed"], crls=(make_crl(p.ca, [clients["outsider"].cert]),))
    pair, errors = _handshake(client_cfg, server_cfg)
    assert not errors and pair.server.handshake_complete


def test_client_refuses_a_server_outside_its_list(clients: dict[str, Credential]) -> None:
    client_cfg, server_cfg = _configs(clients["allowed"])
    client_cfg.peer_allow = PeerAllowList(dns="db.example.com")  # the server is localhost
    pair, errors = _handshake(client_cfg, server_cfg)
    client_end, server_end = _closed(pair.client_events), _closed(pair.server_events)
    assert client_end.alert is AlertDescription.access_denied and not client_end.by_peer
    assert server_end.alert is AlertDescription.access_denied and server_end.by_peer
    assert any("server certificate CN='localhost'" in str(e.args[0]) for e in errors)
    client_cfg.peer_allow = PeerAllowList(dns="localhost")
    pair, errors = _handshake(client_cfg, server_cfg)
    assert not errors and pair.client.handshake_complete


def test_access_control_means_full_handshakes(clients: dict[str, Credential]) -> None:
    """A ticket from a server without access control is not resumed by one
    with it (same ticket key): the client shows its certificate again."""
    client_cfg, plain = _configs(clients["outsider"])
    # EKU draft-13 §6 disables tickets: without EKU, a server issues them.
    client_cfg.extended_key_update = plain.extended_key_update = False
    pair, errors = _handshake(client_cfg, plain)
    tickets = [e.ticket for e in pair.client_events if isinstance(e, SessionTicketReceived)]
    assert not errors and tickets
    _, guarded = _configs(clients["outsider"], peer_allow=PeerAllowList(cn="backup-agent"))
    guarded.extended_key_update = False
    guarded.ticket_key = plain.ticket_key
    client_cfg.session_ticket = tickets[0]
    pair, errors = _handshake(client_cfg, guarded)
    assert _closed(pair.server_events).alert is AlertDescription.access_denied
    # The same ticket resumes on the server without access control: it was usable.
    pair, errors = _handshake(client_cfg, plain)
    done = [e for e in pair.client_events if isinstance(e, HandshakeComplete)]
    assert not errors and done[0].resumed
    # A server with access control issues no tickets to a client it admits...
    client_cfg, guarded = _configs(clients["allowed"], peer_allow=PeerAllowList(cn="backup-agent"))
    client_cfg.extended_key_update = guarded.extended_key_update = False
    pair, errors = _handshake(client_cfg, guarded)
    assert pair.server.handshake_complete
    assert not [e for e in pair.client_events if isinstance(e, SessionTicketReceived)]
    # ...and a client with an allow-list does not offer one (a full handshake, checked).
    client_cfg.session_ticket = tickets[0]
    client_cfg.peer_allow = PeerAllowList(dns="localhost")
    pair, errors = _handshake(client_cfg, plain)
    done = [e for e in pair.client_events if isinstance(e, HandshakeComplete)]
    assert not errors and not done[0].resumed and done[0].peer_certificates


# --- on every later certificate ------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tls", "dtls"])
def test_certificate_update_to_a_revoked_certificate_is_refused(transport: str) -> None:
    p = pki()
    link = peers(transport, server_crls=(make_crl(p.ca, []),))
    new = renew(p.client)
    # The CA revokes the renewal before the client sends it; the server reads
    # its (mutable) configuration at each check.
    link.server.configuration.crls = (make_crl(p.ca, [new.cert]),)
    link.client.update_certificate(new.chain, new.key)
    link.settle()
    # draft-rosomakho-tls-cert-update-02 §5: a failed validation is illegal_parameter.
    link.assert_alert("server", AlertDescription.illegal_parameter)
    closed = link.closed("server")
    assert closed is not None and "revoked" in closed.reason


def test_certificate_update_outside_the_allow_list_is_refused() -> None:
    p = pki()
    link = peers("tls", server_peer_allow=PeerAllowList(cn=p.client.cert.subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value))
    link.server.configuration.peer_allow = PeerAllowList(cn="someone-else")
    new = renew(p.client)
    link.client.update_certificate(new.chain, new.key)
    link.settle()
    link.assert_alert("server", AlertDescription.illegal_parameter)
    closed = link.closed("server")
    assert closed is not None and "matches no allow-list rule" in closed.reason


def test_exported_authenticator_of_a_revoked_certificate_is_invalid() -> None:
    p = pki()
    other = make_leaf(p.ca, "ecdsa-p256", ["other-agent"], client=True)
    link = peers("tls", server_crls=(make_crl(p.ca, [other.cert]),))
    # RFC 9261 §7.4: the application carries the bytes; the chain is checked
    # as the handshake checks the peer's, CRLs and allow-list included.
    request = link.server.authenticator_request()
    authenticator = link.client.export_authenticator(request, chain=other.chain, private_key=other.key)
    with pytest.raises(AuthenticatorError) as caught:
        link.server.validate_authenticator(authenticator, request)
    assert caught.value.alert is AlertDescription.certificate_revoked
    # The connection is not affected, and an unrevoked certificate validates.
    request = link.server.authenticator_request()
    authenticator = link.client.export_authenticator(request)
    assert link.server.validate_authenticator(authenticator, request).certificates[0] == p.client.cert


def test_mls_mode_checks_the_x509_credential() -> None:
    """MLS mode's X.509 credentials pass the same checks (docs/access-control.md "MLS mode")."""
    ca = certs.make_ca("ecdsa-p256")  # the Web PKI verifier refuses Ed25519 CA keys
    server = certs.make_leaf(ca, "ed25519", ["localhost"])
    store = TrustStore([ca.cert])
    server_cfg = Configuration(is_client=False, certificate_chain=[server.cert], private_key=server.key)
    for allow, alert in ((PeerAllowList(dns="db.example.com"), AlertDescription.access_denied),
                         (PeerAllowList(dns="localhost"), None)):
        client_cfg = Configuration(is_client=True, server_name="localhost", trust_store=store, peer_allow=allow)
        c, s = MLSConnection(client_cfg), MLSConnection(server_cfg)
        c.start_handshake()
        try:
            pump(c, s)
        except ProtocolError:
            pass
        closed = [e for e in c.events() if isinstance(e, ConnectionClosed)]
        assert (closed[0].alert if closed else None) is alert
