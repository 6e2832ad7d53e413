"""Certificate Update over DTLS 1.3: what the datagram transport adds.

The messages are ordinary handshake messages (draft-rosomakho-tls-cert-update-02
"Applicability to DTLS"): fragmented, acknowledged and retransmitted by
RFC 9147's machinery, so updates survive loss and small MTUs; a KeyUpdate
waiting for its ACK holds a CertificateUpdate back (pending, not an error);
and a CertificateUpdate received while our extended key update waits for
its ACK stands for that ACK (decision 5).  Negotiation, the rules and the
flow are tested over both transports in test_cert_update.py.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding

from helpers.cert_update import Peers, peers, pki, renewed
from longtls.dtls_connection import DTLSConnection
from longtls.events import CertificateUpdated, CertificateUpdateDirection, Event
from longtls.handshake.eku import Role

RECEIVED = CertificateUpdateDirection.received
SENT = CertificateUpdateDirection.sent


def received_chains(p: Peers, side: str) -> list[tuple[object, ...]]:
    return [e.certificates for e in p.updates(side, RECEIVED)]


def quiet(p: Peers) -> bool:
    """No update waits and no extended key update is under way, on either side."""
    return all(
        not conn.certificate_update_pending and not (conn.eku is not None and conn.eku.in_progress)
        for conn in (p.client, p.server)
    )


def test_updates_under_loss_with_key_updates() -> None:
    """20% of the datagrams lost each way, 10% duplicated, 20% reordered:
    every update of both sides still arrives once, in order, between
    extended key updates from both sides."""
    p = peers(
        "dtls", link_loss=0.2, link_duplicate=0.1, link_reorder=0.2, link_seed=7,
        client_rekey_timeout=None, server_rekey_timeout=None,  # back-off at 20% loss can be long
    )
    assert p.link is not None
    server_sent, client_sent = [], []
    for i in range(20):
        s_new, c_new = renewed(pki().server), renewed(pki().client)
        p.server.update_certificate(s_new.chain, s_new.key)
        server_sent.append(tuple(s_new.chain))
        if i % 3 == 0:
            p.client.extended_key_update()
        elif i % 3 == 1:
            p.server.extended_key_update()
        p.client.update_certificate(c_new.chain, c_new.key)
        client_sent.append(tuple(c_new.chain))
        p.link.run(
            lambda n=i + 1: len(p.updates("client", RECEIVED)) == n == len(p.updates("server", RECEIVED)) and quiet(p),
            max_seconds=3600.0,
        )
    assert p.link.delivered["s2c"] < p.link.sent["s2c"] and p.link.delivered["c2s"] < p.link.sent["c2s"]
    assert received_chains(p, "client") == server_sent
    assert received_chains(p, "server") == client_sent
    assert p.client.key_generation == p.server.key_generation == 14
    assert p.closed("client") is None and p.closed("server") is None


def test_fragmented_updates_under_loss() -> None:
    """An MTU smaller than a CertificateUpdate: the message goes in fragments
    (RFC 9147 §5.5), some lost and sent again."""
    mtu = 400
    p = peers("dtls", link_mtu=mtu, link_loss=0.1, link_seed=3)
    assert p.link is not None
    new = renewed(pki().server)
    assert len(new.cert.public_bytes(Encoding.DER)) > mtu
    p.server.update_certificate(new.chain, new.key)
    p.link.run(lambda: bool(p.updates("client", RECEIVED)) and quiet(p), max_seconds=600.0)
    assert p.client.peer_certificates == tuple(new.chain)
    assert all(len(d) <= mtu for d in p.link.log["s2c"])
    assert p.link.delivered["s2c"] < p.link.sent["s2c"]


def test_key_update_holds_the_update_back() -> None:
    """A handshake message may not follow a KeyUpdate before its ACK
    (rfc9147bis §8, _check_handshake_message_may_go): the update waits."""
    p = peers("dtls", client_extended_key_update=False, server_extended_key_update=False)
    assert isinstance(p.client, DTLSConnection) and p.link is not None
    p.client.update_keys(request_peer_update=False)
    assert p.client.key_update_pending
    new = renewed(pki().client)
    p.client.update_certificate(new.chain, new.key)
    assert p.client.certificate_update_pending
    p.link.run(lambda: not p.client.certificate_update_pending and bool(p.updates("server", RECEIVED)))
    assert p.server.peer_certificates == tuple(new.chain)
    assert p.closed("client") is None and p.closed("server") is None


def _deliver(sender: DTLSConnection, receiver: DTLSConnection) -> None:
    for datagram in sender.datagrams_to_send():
        receiver.receive_datagram(datagram)


def test_update_stands_for_a_lost_extended_key_update_ack() -> None:
    """Decision 5: the server sends its update only once its side of the
    update is complete; read in order after our Finish, it proves the Finish
    arrived, so it completes our update as the lost ACK would have, and is
    validated under the new generation."""
    p = peers("dtls")
    client, server = p.client, p.server
    assert isinstance(client, DTLSConnection) and isinstance(server, DTLSConnection)
    assert client.eku is not None and server.eku is not None
    client.extended_key_update()
    _deliver(client, server)  # request
    new = renewed(pki().server)
    server.update_certificate(new.chain, new.key)
    assert server.certificate_update_pending  # the server is answering an update
    _deliver(server, client)  # response: the client sends its finish
    assert client.eku.role is Role.WAIT_ACK
    send_ack = server._send_ack
    server._send_ack = lambda: None  # type: ignore[method-assign]
    try:
        _deliver(client, server)  # the server completes and its update leaves, its ACK lost
    finally:
        server._send_ack = send_ack  # type: ignore[method-assign]
    assert not server.certificate_update_pending and server.key_generation == 1
    assert client.eku.role is Role.WAIT_ACK
    _deliver(server, client)  # the update alone
    events: list[Event] = client.events()
    assert client.key_generation == 1 and client.eku.role is Role.IDLE
    assert [e.certificates for e in events if isinstance(e, CertificateUpdated)] == [tuple(new.chain)]
    assert client.peer_certificates == tuple(new.chain)
    assert not client.is_closed and not server.is_closed
