"""Certificate Update (draft-rosomakho-tls-cert-update-02) between two longtls peers.

Negotiation (the certificate_update_request extension, its request on the
wire), the flow both ways (event, peer_certificates, the fresh request that
follows), pending updates, post-handshake client authentication, every rule
a receiver enforces with its alert (a misbehaving sender is played by
injecting the message it would send), and 100 updates each way with data
and extended key updates from both sides, over TLS and DTLS.  DTLS-only
matters (loss, fragmentation, KeyUpdate ACKs, a lost EKU ACK) are in
test_cert_update_dtls.py.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography import x509

from helpers.cert_update import inject, peers, pki, renewed, request_for
from helpers.pair import configs
from helpers.pki import Credential, make_ca, make_leaf
from helpers.renewal import VARIANTS, cached_key, renew
from longtls.config import ClientAuth
from longtls.connection import Connection
from longtls.constants import (
    AlertDescription,
    EKUProfileName,
    ExtensionType,
    HandshakeType,
    SignatureScheme,
)
from longtls.crypto.cert_identity import IdentityRule
from longtls.crypto.certificates import TrustStore
from longtls.crypto.signatures import SUPPORTED_SIGNATURE_SCHEMES, schemes_for_key
from longtls.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from longtls.events import (
    CertificateUpdateDirection,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    SessionTicketReceived,
)
from longtls.handshake.exported_authenticators import (
    ExportedAuthenticators,
    authenticator_keys,
    create_authenticator,
)
from longtls.wire import extensions as X
from longtls.wire.cert_update import CertificateUpdate, CertificateUpdateRequest
from longtls.wire.messages import (
    CertificateRequest,
    ClientHello,
    Extension,
    encode_handshake,
    extensions_by_type,
)

TRANSPORTS = ["tls", "dtls"]
SENT = CertificateUpdateDirection.sent
RECEIVED = CertificateUpdateDirection.received
CU_EXTENSION = 0xFF1C  # PROVISIONAL (docs/certificate-update.md)


def chains(events: Sequence[Any]) -> list[tuple[x509.Certificate, ...]]:
    return [e.certificates for e in events]


def handshake_complete(events: list[Event]) -> HandshakeComplete:
    found = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(found) == 1
    return found[0]


# -- the code points and messages -------------------------------------------------------


def test_provisional_code_points() -> None:
    # Private-use ranges: extensions 0xFF00-0xFFFF (not 0xFF01,
    # renegotiation_info), handshake types 224-255.
    assert ExtensionType.certificate_update_request == CU_EXTENSION
    assert HandshakeType.certificate_update == 240
    assert HandshakeType.certificate_update_request == 241


def test_message_codecs() -> None:
    # CertificateUpdate: opaque authenticator<1..2^24-1>; CertificateUpdateRequest:
    # opaque authenticator_request<1..2^16-1> (draft §4, §5).
    assert CertificateUpdate(b"abc").encode() == b"\x00\x00\x03abc"
    assert CertificateUpdateRequest(b"abc").encode() == b"\x00\x03abc"
    assert CertificateUpdate.decode(b"\x00\x00\x01z").authenticator == b"z"
    with pytest.raises(ProtocolError) as err:
        CertificateUpdate.decode(b"\x00\x00\x00")  # <1..>
    assert err.value.alert is AlertDescription.decode_error
    for bad in (b"\x00\x00", b"\x00", b"\x00\x02a", b"\x00\x01ab"):
        with pytest.raises(ProtocolError) as err:
            CertificateUpdateRequest.decode(bad)
        assert err.value.alert is AlertDescription.illegal_parameter  # draft §5.1


# -- negotiation ------------------------------------------------------------------------


def _first_client_hello(client: Connection) -> ClientHello:
    """The ClientHello in the client's next bytes (after a compatibility CCS record)."""
    data = client.data_to_send()
    while data[0] != 22:  # not a handshake record
        data = data[5 + int.from_bytes(data[3:5], "big") :]
    length = int.from_bytes(data[3:5], "big")
    message = data[5 : 5 + length]
    assert message[0] == HandshakeType.client_hello
    return ClientHello.decode(message[4:])


def _decode_request(raw: bytes, msg_type: int) -> CertificateRequest:
    assert raw[0] == msg_type
    assert int.from_bytes(raw[1:4], "big") == len(raw) - 4  # the whole handshake message (decision 2)
    return CertificateRequest.decode(raw[4:])


def test_client_hello_carries_a_client_certificate_request() -> None:
    """Decisions 1-3: a ClientCertificateRequest (17, RFC 9261 §4), whole,
    with a fresh 32-byte context and signature_algorithms alone."""
    client_cfg, _, _ = configs(ca=pki().ca)
    client = Connection(client_cfg)
    client.start_handshake()
    exts = extensions_by_type(_first_client_hello(client).extensions)
    request = _decode_request(exts[CU_EXTENSION], HandshakeType.client_certificate_request)
    assert len(request.certificate_request_context) == 32
    assert [e.type for e in request.extensions] == [ExtensionType.signature_algorithms]
    assert X.decode_signature_algorithms(request.extensions[0].data) == SUPPORTED_SIGNATURE_SCHEMES


def test_client_hello_after_hello_retry_request_repeats_the_request() -> None:
    """RFC 9846 §4.1.2: the second ClientHello repeats the first's extensions."""
    from longtls.constants import NamedGroup

    client_cfg, server_cfg, _ = configs(
        ca=pki().ca, client_key_share_groups=(NamedGroup.x25519,), server_groups=(NamedGroup.secp256r1,)
    )
    client, server = Connection(client_cfg), Connection(server_cfg)
    client.start_handshake()
    data = client.data_to_send()
    first = extensions_by_type(ClientHello.decode(data[5 + 4 :]).extensions)[CU_EXTENSION]
    server.receive_data(data)
    client.receive_data(server.data_to_send())  # HelloRetryRequest
    second = extensions_by_type(_first_client_hello(client).extensions)[CU_EXTENSION]
    assert second == first


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("client_on", "server_on"), [(True, True), (True, False), (False, True)])
def test_negotiation_matrix(transport: str, client_on: bool, server_on: bool) -> None:
    p = peers(transport, client_certificate_update=client_on, server_certificate_update=server_on)
    negotiated = client_on and server_on
    for side in ("client", "server"):
        assert p.conn(side).certificate_update_negotiated is negotiated
        assert handshake_complete(p.events(side)).certificate_update is negotiated
    if not negotiated:
        new = renewed(pki().server)
        with pytest.raises(LocalProtocolError, match="not negotiated"):
            p.server.update_certificate(new.chain, new.key)
        # A CertificateUpdate nobody negotiated is a message nobody expects.
        inject(p.server, HandshakeType.certificate_update, CertificateUpdate(b"\x14\x00\x00\x00").encode())
        p.settle()
        p.assert_alert("client", AlertDescription.unexpected_message)


@pytest.mark.parametrize(("client_auth", "post_handshake_auth", "request_sent"), [
    (ClientAuth.NONE, False, False),  # the client cannot authenticate: "empty" (§3.1)
    (ClientAuth.OPTIONAL, False, True),
    (ClientAuth.REQUIRED, False, True),
    (ClientAuth.NONE, True, True),  # decision 4: it may authenticate later
])
def test_server_request_in_encrypted_extensions(
    client_auth: ClientAuth, post_handshake_auth: bool, request_sent: bool
) -> None:
    p = peers("tls", client_auth=client_auth, client_post_handshake_auth=post_handshake_auth)
    assert p.client.certificate_update_negotiated
    raw = p.client.handshake.peer_update_request  # as EncryptedExtensions carried it
    if not request_sent:
        assert raw is None
        return
    assert raw is not None
    request = _decode_request(raw, HandshakeType.certificate_request)  # from a server (decision 1)
    assert len(request.certificate_request_context) == 32
    assert [e.type for e in request.extensions] == [ExtensionType.signature_algorithms]


def test_resumed_handshake_does_not_negotiate() -> None:
    """Decision: a PSK handshake has no certificate to compare an update with;
    the server does not answer the extension."""
    ca = pki().ca
    client_cfg, server_cfg, _ = configs(ca=ca, client_extended_key_update=False, server_extended_key_update=False)
    first = Connection(client_cfg), Connection(server_cfg)
    events = _handshake(*first)[0]
    ticket = next(e.ticket for e in events if isinstance(e, SessionTicketReceived))
    client_cfg.session_ticket = ticket
    client_events, server_events = _handshake(Connection(client_cfg), Connection(server_cfg))
    for events in (client_events, server_events):
        complete = handshake_complete(events)
        assert complete.resumed and not complete.certificate_update


def _handshake(client: Connection, server: Connection) -> tuple[list[Event], list[Event]]:
    """Run a handshake that may fail; the events of both ends."""
    client_events: list[Event] = []
    server_events: list[Event] = []
    client.start_handshake()
    for _ in range(20):
        c2s = client.data_to_send()
        if c2s:
            try:
                server.receive_data(c2s)
            except ProtocolError:
                pass
        s2c = server.data_to_send()
        if s2c:
            try:
                client.receive_data(s2c)
            except ProtocolError:
                pass
        client_events.extend(client.events())
        server_events.extend(server.events())
        if not c2s and not s2c:
            break
    return client_events, server_events


def _closed(events: list[Event]) -> ConnectionClosed:
    found = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(found) == 1
    return found[0]


def _request(msg_type: int, extensions: Sequence[Extension], context: bytes = b"c" * 32) -> bytes:
    return encode_handshake(msg_type, CertificateRequest(context, tuple(extensions)).encode())


SIG_ALGS = Extension(ExtensionType.signature_algorithms, X.encode_signature_algorithms([0x0403]))
BAD_CLIENT_REQUESTS = {
    "truncated": b"\x11\x00\x00",
    "trailing bytes": _request(HandshakeType.client_certificate_request, [SIG_ALGS]) + b"\x00",
    "server's type from a client": _request(HandshakeType.certificate_request, [SIG_ALGS]),
    "another extension too": _request(
        HandshakeType.client_certificate_request, [SIG_ALGS, Extension(ExtensionType.server_name, b"")]
    ),
    "no extension": _request(HandshakeType.client_certificate_request, []),
    "signature_algorithms twice": _request(HandshakeType.client_certificate_request, [SIG_ALGS, SIG_ALGS]),
    "malformed signature_algorithms": _request(
        HandshakeType.client_certificate_request, [Extension(ExtensionType.signature_algorithms, b"\x00\x01\x04")]
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CLIENT_REQUESTS))
def test_malformed_request_in_client_hello(name: str) -> None:
    """Draft §3.2: illegal_parameter, whatever RFC 9261 would call it."""
    data = BAD_CLIENT_REQUESTS[name]

    def hook(exts: list[Extension]) -> list[Extension]:
        return [Extension(e.type, data) if e.type == CU_EXTENSION else e for e in exts]

    client_cfg, server_cfg, _ = configs(ca=pki().ca, client_client_hello_hook=hook)
    _, server_events = _handshake(Connection(client_cfg), Connection(server_cfg))
    assert _closed(server_events).alert is AlertDescription.illegal_parameter


def test_extension_twice_in_client_hello() -> None:
    def hook(exts: list[Extension]) -> list[Extension]:
        twice = [e for e in exts if e.type == CU_EXTENSION]
        return [*exts[:-1], *twice, exts[-1]]

    client_cfg, server_cfg, _ = configs(ca=pki().ca, client_client_hello_hook=hook)
    _, server_events = _handshake(Connection(client_cfg), Connection(server_cfg))
    assert _closed(server_events).alert is AlertDescription.illegal_parameter


def _misbehaving_server(**server_kw: object) -> tuple[Connection, Connection]:
    client_cfg, server_cfg, _ = configs(ca=pki().ca, server_client_auth=ClientAuth.OPTIONAL, **server_kw)
    return Connection(client_cfg), Connection(server_cfg)


@pytest.mark.parametrize("fault", ["twice", "malformed", "client's type"])
def test_bad_extension_in_encrypted_extensions(fault: str) -> None:
    client, server = _misbehaving_server()
    real = server.handshake._certificate_update_extensions  # type: ignore[attr-defined]

    def broken(client_exts: dict[int, bytes], resumption: object) -> list[Extension]:
        out: list[Extension] = real(client_exts, resumption)
        if fault == "twice":
            return out + out
        if fault == "malformed":
            return [Extension(CU_EXTENSION, out[0].data[:-1])]
        return [Extension(CU_EXTENSION, _request(HandshakeType.client_certificate_request, [SIG_ALGS]))]

    server.handshake._certificate_update_extensions = broken  # type: ignore[attr-defined]
    client_events, _ = _handshake(client, server)
    assert _closed(client_events).alert is AlertDescription.illegal_parameter


def test_extension_in_certificate_request() -> None:
    """Draft §3.1: only ClientHello and EncryptedExtensions; elsewhere illegal_parameter."""
    client, server = _misbehaving_server()
    real = server.handshake.certificate_request_extensions  # type: ignore[attr-defined]
    server.handshake.certificate_request_extensions = lambda: (  # type: ignore[attr-defined]
        *real(), Extension(CU_EXTENSION, b"")
    )
    client_events, _ = _handshake(client, server)
    assert _closed(client_events).alert is AlertDescription.illegal_parameter


def test_extension_in_encrypted_extensions_not_offered() -> None:
    """RFC 9846 §4.2: a response extension that was not offered."""
    client, server = _misbehaving_server(client_certificate_update=False)
    server.handshake._certificate_update_extensions = (  # type: ignore[attr-defined]
        lambda client_exts, resumption: [Extension(CU_EXTENSION, b"")]
    )
    client_events, _ = _handshake(client, server)
    assert _closed(client_events).alert is AlertDescription.unsupported_extension


# -- the flow ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("sender", ["server", "client"])
def test_one_update(transport: str, sender: str) -> None:
    p = peers(transport)
    receiver = "client" if sender == "server" else "server"
    original = pki().server if sender == "server" else pki().client
    assert p.conn(receiver).peer_certificates == tuple(original.chain)
    assert p.conn(sender).local_certificates == tuple(original.chain)
    new = renewed(original)
    p.conn(sender).update_certificate(new.chain, new.key)
    assert not p.conn(sender).certificate_update_pending  # the request from the handshake was there
    p.settle()
    assert chains(p.updates(sender, SENT)) == [tuple(new.chain)]
    assert chains(p.updates(receiver, RECEIVED)) == [tuple(new.chain)]
    assert p.conn(receiver).peer_certificates == tuple(new.chain)
    assert p.conn(sender).local_certificates == tuple(new.chain)
    # The receiver sent a fresh request (§5): the next update goes at once.
    again = renewed(original)
    p.conn(sender).update_certificate(again.chain, again.key)
    assert not p.conn(sender).certificate_update_pending
    p.settle()
    assert chains(p.updates(receiver, RECEIVED)) == [tuple(new.chain), tuple(again.chain)]
    assert p.closed("client") is None and p.closed("server") is None


def test_client_update_right_behind_its_finished() -> None:
    """Draft §4.2: "after the sender has sent and received the Finished":
    the client may update in the flight of its Finished; the server reads
    it right after completing."""
    client_cfg, server_cfg, _ = configs(
        ca=pki().ca, client_certificate_chain=pki().client.chain, client_private_key=pki().client.key,
        server_client_auth=ClientAuth.REQUIRED,
    )
    client, server = Connection(client_cfg), Connection(server_cfg)
    client.start_handshake()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.handshake_complete and not server.handshake_complete
    new = renewed(pki().client)
    client.update_certificate(new.chain, new.key)
    server.receive_data(client.data_to_send())
    assert [type(e).__name__ for e in server.events()] == ["HandshakeComplete", "CertificateUpdated"]
    assert server.peer_certificates == tuple(new.chain)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_waits_for_the_next_request(transport: str) -> None:
    """Each request is used once (§4.2): a second update before the peer's
    CertificateUpdateRequest arrived waits; a third call replaces it."""
    p = peers(transport)
    first, second, third = (renewed(pki().server) for _ in range(3))
    p.server.update_certificate(first.chain, first.key)
    p.server.update_certificate(second.chain, second.key)
    assert p.server.certificate_update_pending
    p.server.update_certificate(third.chain, third.key)
    p.settle()
    assert not p.server.certificate_update_pending
    assert chains(p.updates("client", RECEIVED)) == [tuple(first.chain), tuple(third.chain)]
    assert chains(p.updates("server", SENT)) == [tuple(first.chain), tuple(third.chain)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_defaults_to_the_configuration(transport: str) -> None:
    """What a file watcher does: replace the configuration's chain and key,
    then update_certificate() with no argument."""
    p = peers(transport)
    new = renewed(pki().server)
    p.server.configuration.certificate_chain, p.server.configuration.private_key = new.chain, new.key
    p.server.update_certificate()
    p.settle()
    assert p.client.peer_certificates == tuple(new.chain)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_authenticated_after_the_handshake(transport: str) -> None:
    """Draft §4.2: a client may update once it authenticated, here by
    post-handshake authentication (with the request of decision 4)."""
    p = peers(transport, client_auth=ClientAuth.NONE, client_post_handshake_auth=True)
    new = renewed(pki().client)
    with pytest.raises(LocalProtocolError, match="never authenticated"):
        p.client.update_certificate(new.chain, new.key)
    p.server.request_client_authentication()
    p.settle()
    assert p.server.peer_certificates == tuple(pki().client.chain)
    p.client.update_certificate(new.chain, new.key)
    p.settle()
    assert chains(p.updates("server", RECEIVED)) == [tuple(new.chain)]
    assert p.server.peer_certificates == tuple(new.chain)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_policy_sees_every_chain(transport: str) -> None:
    seen: list[tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]] = []

    def policy(new: Sequence[x509.Certificate], previous: Sequence[x509.Certificate]) -> bool:
        seen.append((tuple(new), tuple(previous)))
        return True

    p = peers(transport, client_certificate_update_policy=policy)
    first, second = renewed(pki().server), renewed(pki().server)
    for new in (first, second):
        p.server.update_certificate(new.chain, new.key)
        p.settle()
    assert seen == [
        (tuple(first.chain), tuple(pki().server.chain)),
        (tuple(second.chain), tuple(first.chain)),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_policy_refusal_ends_the_connection(transport: str) -> None:
    p = peers(transport, client_certificate_update_policy=lambda new, previous: False)
    new = renewed(pki().server)
    p.server.update_certificate(new.chain, new.key)
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)
    assert p.client.peer_certificates == tuple(pki().server.chain)
    assert not p.updates("client", RECEIVED)


def test_peer_update_limit() -> None:
    """max_peer_certificate_updates: past it no new request, so the peer's
    next update waits for ever instead of costing us work."""
    p = peers("tls", server_max_peer_certificate_updates=2)
    for _ in range(3):
        new = renewed(pki().client)
        p.client.update_certificate(new.chain, new.key)
        p.settle()
    assert len(p.updates("server", RECEIVED)) == 2
    assert p.client.certificate_update_pending
    assert p.closed("client") is None and p.closed("server") is None


def test_no_request_after_close_notify() -> None:
    """RFC 9846 §6.1: after our close_notify we send nothing, not even the
    fresh request an accepted update calls for (§5)."""
    p = peers("tls")
    new = renewed(pki().server)
    p.server.update_certificate(new.chain, new.key)
    p.client.close()  # crosses the update
    p.settle()
    assert p.client.peer_certificates == tuple(new.chain)
    again = renewed(pki().server)
    p.server.update_certificate(again.chain, again.key)
    assert p.server.certificate_update_pending  # no request came
    with pytest.raises(LocalProtocolError):
        p.client.update_certificate(renewed(pki().client).chain, pki().client.key)


# -- what the sender refuses locally --------------------------------------------------------


LOCAL_RULES = {name: v for name, v in VARIANTS.items() if v.rule is not None}


@pytest.fixture(scope="module")
def bad_server_renewals() -> dict[str, Credential]:
    return {name: variant.make(pki().server) for name, variant in VARIANTS.items()}


@pytest.mark.parametrize("name", sorted(LOCAL_RULES))
def test_sender_refuses_another_identity(name: str, bad_server_renewals: dict[str, Credential]) -> None:
    p = peers("tls")
    bad = bad_server_renewals[name]
    rule = LOCAL_RULES[name].rule
    with pytest.raises(LocalProtocolError, match=f"{rule} rule"):
        p.server.update_certificate(bad.chain, bad.key)
    assert not p.server.certificate_update_pending and not p.server.data_to_send()


def test_sender_refuses_reuse_and_a_foreign_key() -> None:
    p = peers("tls")
    server = pki().server
    with pytest.raises(LocalProtocolError, match="reuse rule"):
        p.server.update_certificate(server.chain, server.key)
    new = renewed(server)
    with pytest.raises(LocalProtocolError, match="private key does not match"):
        p.server.update_certificate(new.chain, server.key)
    p.server.update_certificate(new.chain, new.key)
    p.settle()
    with pytest.raises(LocalProtocolError, match="reuse rule"):
        p.server.update_certificate(new.chain, new.key)


def test_client_without_certificate_cannot_update() -> None:
    p = peers("tls", client_certificate=False, client_auth=ClientAuth.OPTIONAL)
    new = renewed(pki().client)
    with pytest.raises(LocalProtocolError, match="never authenticated"):
        p.client.update_certificate(new.chain, new.key)


# -- what the receiver enforces (a misbehaving sender) -----------------------------------------


def send_update(sender: Any, chain: Sequence[x509.Certificate], key: Any) -> None:
    """``sender`` answers the peer's request with this chain, skipping every
    check of its own (as a broken or hostile peer would)."""
    authenticator = sender.exported_authenticators.authenticate(request_for(sender), chain=chain, private_key=key)
    inject(sender, HandshakeType.certificate_update, CertificateUpdate(authenticator).encode())


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_receiver_refuses_a_broken_rule(
    transport: str, name: str, bad_server_renewals: dict[str, Credential]
) -> None:
    """Draft §4.1 identity rules (subject, extensions, issuer, key algorithm
    and size) and RFC 9261 validation of the chain now (expired, not yet
    valid, another CA): illegal_parameter."""
    p = peers(transport)
    bad = bad_server_renewals[name]
    send_update(p.server, bad.chain, bad.key)
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)
    assert p.client.peer_certificates == tuple(pki().server.chain)
    rule = VARIANTS[name].rule
    closed = p.closed("client")
    assert closed is not None
    if rule is None or rule is IdentityRule.issuer:
        # Refused by RFC 9261 validation first: the chain does not validate
        # now (the other issuers are not trusted; the next test trusts one).
        assert "invalid authenticator" in closed.reason
    else:
        assert f"({rule} rule)" in closed.reason


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_receiver_refuses_another_trusted_issuer(transport: str) -> None:
    """The issuer rule itself: a renewal from another CA the client trusts too."""
    p = peers(transport)
    second = make_ca("ecdsa-p256", common_name="longtls test CA, the second")
    p.client.configuration.trust_store = TrustStore([pki().ca.cert, second.cert])
    bad = renew(pki().server, issuer=second)
    send_update(p.server, bad.chain, bad.key)
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)
    closed = p.closed("client")
    assert closed is not None and "(issuer rule)" in closed.reason


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", ["other_subject", "extra_san", "other_issuer", "expired", "untrusted_ca"])
def test_server_refuses_a_clients_broken_rule(transport: str, name: str) -> None:
    p = peers(transport)
    bad = VARIANTS[name].make(pki().client)
    send_update(p.client, bad.chain, bad.key)
    p.settle()
    p.assert_alert("server", AlertDescription.illegal_parameter)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_receiver_refuses_a_reused_certificate(transport: str) -> None:
    p = peers(transport)
    server = pki().server
    new = renewed(server)
    p.server.update_certificate(new.chain, new.key)
    p.settle()
    send_update(p.server, new.chain, new.key)  # the previous update's certificate
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_receiver_refuses_the_handshake_certificate(transport: str) -> None:
    p = peers(transport)
    send_update(p.server, pki().server.chain, pki().server.key)
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)


@pytest.fixture(scope="module")
def rsa_server() -> Credential:
    return make_leaf(pki().ca, "rsa-2048")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_receiver_refuses_another_signature_scheme(transport: str, rsa_server: Credential) -> None:
    """Draft §4.1: the CertificateVerify's scheme is the handshake's.  An RSA
    key signs with several; the ClientHello's request offers them all, so
    only the rule refuses the other one."""
    p = peers(transport, server_pki=rsa_server)
    handshake_scheme = handshake_complete(p.client_events).signature_scheme
    new = renew(rsa_server, key=cached_key("rsa-2048", 3))
    other = next(s for s in schemes_for_key(new.key, new.cert) if s != handshake_scheme)
    request = request_for(p.server)
    ea = p.server.exported_authenticators
    keys = authenticator_keys(p.server.export_keying_material, ea.suite.hash_length, sender_is_client=False)
    authenticator = create_authenticator(
        ea.suite, keys, request=request, context=ExportedAuthenticators.context_of(request),
        chain=new.chain, private_key=new.key, scheme=SignatureScheme(other),
    )
    inject(p.server, HandshakeType.certificate_update, CertificateUpdate(authenticator).encode())
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)
    # The same renewal signed with the handshake's scheme is accepted.
    q = peers(transport, server_pki=rsa_server)
    q.server.update_certificate(new.chain, new.key)
    q.settle()
    assert q.client.peer_certificates == tuple(new.chain)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", ["tampered", "empty"])
def test_receiver_refuses_an_invalid_authenticator(transport: str, fault: str) -> None:
    """RFC 9261 validation (the Finished MAC) and an empty authenticator
    (draft §4.2): illegal_parameter."""
    p = peers(transport)
    request = request_for(p.server)
    if fault == "empty":
        authenticator = p.server.exported_authenticators.refuse(request)
    else:
        new = renewed(pki().server)
        good = p.server.exported_authenticators.authenticate(request, chain=new.chain, private_key=new.key)
        authenticator = good[:-1] + bytes([good[-1] ^ 1])
    inject(p.server, HandshakeType.certificate_update, CertificateUpdate(authenticator).encode())
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_without_a_request(transport: str) -> None:
    """Draft §4.2: no unused request of ours (here: the limit stopped us from
    issuing another) -> unexpected_message."""
    p = peers(transport, client_max_peer_certificate_updates=1)
    new = renewed(pki().server)
    p.server.update_certificate(new.chain, new.key)
    p.settle()
    assert p.client.peer_certificates == tuple(new.chain)
    inject(p.server, HandshakeType.certificate_update, CertificateUpdate(b"\x14\x00\x00\x00").encode())
    p.settle()
    p.assert_alert("client", AlertDescription.unexpected_message)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_from_an_unauthenticated_client(transport: str) -> None:
    """Draft §4.2: the server gave a request (the client may authenticate
    later, decision 4), but the client never did -> unexpected_message."""
    p = peers(transport, client_certificate=False, client_auth=ClientAuth.NONE, client_post_handshake_auth=True)
    inject(p.client, HandshakeType.certificate_update, CertificateUpdate(b"\x14\x00\x00\x00").encode())
    p.settle()
    p.assert_alert("server", AlertDescription.unexpected_message)


def test_update_before_the_handshake_completed() -> None:
    """Draft §4.2: a CertificateUpdate before the sender's Finished is an
    unexpected_message (here ahead of the client's Finished)."""
    client_cfg, server_cfg, _ = configs(ca=pki().ca)
    client, server = Connection(client_cfg), Connection(server_cfg)
    queue = client.queue_handshake

    def queue_with_update_first(message: bytes) -> None:
        if message[0] == HandshakeType.finished:
            queue(encode_handshake(HandshakeType.certificate_update, CertificateUpdate(b"\x14\x00\x00\x00").encode()))
        queue(message)

    client.queue_handshake = queue_with_update_first  # type: ignore[method-assign]
    _, server_events = _handshake(client, server)
    assert _closed(server_events).alert is AlertDescription.unexpected_message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_update(transport: str) -> None:
    p = peers(transport)
    inject(p.server, HandshakeType.certificate_update, b"\x00\x00\x05abc")
    p.settle()
    p.assert_alert("client", AlertDescription.decode_error)


def _mutations(good: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Truncations, bit flips, splices and random bytes around a valid message."""
    out = []
    for i in range(count):
        data = bytearray(good)
        kind = i % 4
        if kind == 0:
            data = data[: rng.randrange(len(data))]
        elif kind == 1:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 2:
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 64)))
        out.append(bytes(data))
    return out


def test_garbled_messages_end_in_the_drafts_alerts() -> None:
    """Malformed input gets an alert, never a traceback: every mutation of a
    valid CertificateUpdate or CertificateUpdateRequest is refused with the
    alert the draft names (or, for a request still well-formed, accepted)."""
    p = peers("tls", client_auth=ClientAuth.NONE)
    updates = p.client._certificate_updates
    assert updates is not None
    own = updates._own_request
    new = renewed(pki().server)
    good = p.server.exported_authenticators.authenticate(request_for(p.server), chain=new.chain, private_key=new.key)
    rng = random.Random(12)
    for body in _mutations(CertificateUpdate(good).encode(), rng, 200):
        updates._own_request = own
        with pytest.raises(RemoteProtocolError) as err:
            updates.handle(HandshakeType.certificate_update, body, b"")
        assert err.value.alert in (AlertDescription.decode_error, AlertDescription.illegal_parameter), err.value
    good_request = _server_request(b"z" * 32)
    for body in _mutations(good_request, rng, 200):
        updates._peer_request = None
        try:
            updates.handle(HandshakeType.certificate_update_request, body, b"")
        except RemoteProtocolError as exc:
            assert exc.alert is AlertDescription.illegal_parameter, exc


def _server_request(context: bytes, extensions: Sequence[Extension] = (SIG_ALGS,)) -> bytes:
    return CertificateUpdateRequest(_request(HandshakeType.certificate_request, extensions, context)).encode()


BAD_UPDATE_REQUESTS = {
    "malformed": b"\x00",
    "another extension": _server_request(b"x" * 32, (SIG_ALGS, Extension(ExtensionType.server_name, b""))),
    "no extension": _server_request(b"x" * 32, ()),
    "client's type from a server": CertificateUpdateRequest(
        _request(HandshakeType.client_certificate_request, [SIG_ALGS])
    ).encode(),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", sorted(BAD_UPDATE_REQUESTS))
def test_malformed_update_request(transport: str, name: str) -> None:
    """Draft §5.1: a malformed request, or one with extensions (decision 3:
    other than signature_algorithms alone) -> illegal_parameter."""
    p = peers(transport, client_auth=ClientAuth.NONE)  # the client holds no request of the server's
    inject(p.server, HandshakeType.certificate_update_request, BAD_UPDATE_REQUESTS[name])
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_request_while_the_previous_is_unused(transport: str) -> None:
    """Draft §5.1: one request at a time (decision 4) -> unexpected_message."""
    p = peers(transport)  # the client holds the server's request from EncryptedExtensions
    inject(p.server, HandshakeType.certificate_update_request, _server_request(b"y" * 32))
    p.settle()
    p.assert_alert("client", AlertDescription.unexpected_message)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_request_reusing_a_context(transport: str) -> None:
    """RFC 9261 §4: a context is unique on the connection -> illegal_parameter."""
    p = peers(transport, server_max_peer_certificate_updates=1)
    first = request_for(p.client)  # the server's request in EncryptedExtensions
    new = renewed(pki().client)
    p.client.update_certificate(new.chain, new.key)
    p.settle()
    assert p.server.peer_certificates == tuple(new.chain)  # and no new request (the limit)
    inject(p.server, HandshakeType.certificate_update_request, CertificateUpdateRequest(first).encode())
    p.settle()
    p.assert_alert("client", AlertDescription.illegal_parameter)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_our_handshake_request_context_is_never_reused(transport: str, side: str) -> None:
    """RFC 9261 §4: the certificate_request_context of the request we sent in
    the handshake is used on this connection, so a later authenticator request
    of ours may not take it again (the Exported Authenticators state is made
    at its first use, long after the handshake, and must count it then)."""
    p = peers(transport)
    ours, peer = (p.client, p.server) if side == "client" else (p.server, p.client)
    context = ours.authenticator_context(request_for(peer))  # ours, as the peer holds it
    with pytest.raises(LocalProtocolError, match="already used in a request"):
        ours.authenticator_request(context)
    assert ours.authenticator_context(ours.authenticator_request()) != context


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_request_offers_only_the_handshake_scheme(transport: str) -> None:
    """Decision 3: after an update, our request offers exactly the scheme the
    peer must keep using."""
    p = peers(transport)
    new = renewed(pki().server)
    p.server.update_certificate(new.chain, new.key)
    p.settle()
    request = _decode_request(request_for(p.server), HandshakeType.client_certificate_request)
    assert [e.type for e in request.extensions] == [ExtensionType.signature_algorithms]
    assert X.decode_signature_algorithms(request.extensions[0].data) == (SignatureScheme.ecdsa_secp256r1_sha256,)


# -- Extended Key Update and client authentication (decision 5) ------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_waits_for_our_extended_key_update(transport: str) -> None:
    p = peers(transport)
    p.client.extended_key_update()
    new = renewed(pki().client)
    p.client.update_certificate(new.chain, new.key)
    assert p.client.certificate_update_pending  # never while an EKU is in progress
    p.settle()
    assert not p.client.certificate_update_pending
    assert p.client.key_generation == p.server.key_generation == 1
    assert p.server.peer_certificates == tuple(new.chain)


def test_update_waits_for_the_peers_extended_key_update() -> None:
    """Decision 5, the other direction: answering the peer's update counts too."""
    p = peers("tls")
    p.client.extended_key_update()
    p.server.receive_data(p.client.data_to_send())  # the server answers, and waits for the finish
    assert p.server.eku is not None and p.server.eku.in_progress
    new = renewed(pki().server)
    p.server.update_certificate(new.chain, new.key)
    assert p.server.certificate_update_pending
    p.settle()
    assert not p.server.certificate_update_pending
    assert p.client.key_generation == p.server.key_generation == 1
    assert p.client.peer_certificates == tuple(new.chain)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("initiator", ["client", "server"])
@pytest.mark.parametrize("profile", list(EKUProfileName))
def test_update_crossing_an_extended_key_update(transport: str, initiator: str, profile: EKUProfileName) -> None:
    """The update leaves before the peer's EKU request arrives: both cross on
    the wire, and the receiver, mid-update, validates it under the
    generation it was made in.  Every EKU profile."""
    p = peers(transport, client_eku_profiles=(profile,), server_eku_profiles=(profile,))
    assert handshake_complete(p.client_events).eku_profile is profile
    sender = "server" if initiator == "client" else "client"
    original = pki().server if sender == "server" else pki().client
    new = renewed(original)
    p.conn(sender).update_certificate(new.chain, new.key)  # goes at once
    p.conn(initiator).extended_key_update()  # crosses it
    p.settle()
    assert p.conn(initiator).peer_certificates == tuple(new.chain)
    assert p.client.key_generation == p.server.key_generation == 1
    # And one made under generation 1, while the other side starts generation 2.
    again = renewed(original)
    p.conn(sender).update_certificate(again.chain, again.key)
    p.conn(initiator).extended_key_update()
    p.settle()
    assert p.conn(initiator).peer_certificates == tuple(again.chain)
    assert p.client.key_generation == p.server.key_generation == 2
    assert p.closed("client") is None and p.closed("server") is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_update_waits_for_client_authentication(transport: str) -> None:
    """The server does not send its update while its CertificateRequest is
    unanswered (decision 5)."""
    p = peers(transport, client_post_handshake_auth=True)
    p.server.request_client_authentication()
    new = renewed(pki().server)
    p.server.update_certificate(new.chain, new.key)
    assert p.server.certificate_update_pending
    p.settle()
    assert p.client.peer_certificates == tuple(new.chain)


# -- many updates with data and extended key updates ---------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hundred_updates_each_way_with_data_and_key_updates(transport: str) -> None:
    p = peers(transport)
    server_sent: list[tuple[x509.Certificate, ...]] = []
    client_sent: list[tuple[x509.Certificate, ...]] = []
    c2s, s2c = bytearray(), bytearray()
    ekus = 0
    for i in range(100):
        s_new, c_new = renewed(pki().server), renewed(pki().client)
        p.server.update_certificate(s_new.chain, s_new.key)
        server_sent.append(tuple(s_new.chain))
        if i % 4 == 1 and not p.client.eku.in_progress:  # type: ignore[union-attr]
            p.client.extended_key_update()  # crosses the server's update
            ekus += 1
        elif i % 4 == 3 and not p.server.eku.in_progress:  # type: ignore[union-attr]
            p.server.extended_key_update()
            ekus += 1
        p.client.update_certificate(c_new.chain, c_new.key)  # pending while the client's EKU runs
        client_sent.append(tuple(c_new.chain))
        up, down = f"c{i:03d}".encode() * 50, f"s{i:03d}".encode() * 70
        p.client.send(up)
        p.server.send(down)
        c2s += up
        s2c += down
        p.settle()
    assert chains(p.updates("client", RECEIVED)) == server_sent == chains(p.updates("server", SENT))
    assert chains(p.updates("server", RECEIVED)) == client_sent == chains(p.updates("client", SENT))
    assert p.client.peer_certificates == server_sent[-1] and p.server.peer_certificates == client_sent[-1]
    assert p.received("server") == bytes(c2s) and p.received("client") == bytes(s2c)
    assert p.client.key_generation == p.server.key_generation == ekus
    assert p.closed("client") is None and p.closed("server") is None
