"""DTLSConnection (RFC 9147 with draft-ietf-tls-rfc9147bis-02): two longtls
DTLS connections over an in-memory datagram link (tests/helpers/dtls_link.py).

What is checked is what a user or a DTLS peer relies on: the datagrams on
the wire (record forms, epochs, sizes), the stateless cookie exchange, the
events, the ACK and retransmission behaviour under loss, KeyUpdate's epoch
switches on ACK (rfc9147bis §8), silent discard of invalid records, and the
key log against secrets derived here from the RFC 9846 / RFC 9147 formulas
with cryptography's primitives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from helpers.dtls_link import CLIENT_ADDRESS, Clock, DatagramLink
from helpers.pair import configs
from helpers.pki import make_ca, make_leaf
from longtls.config import DEFAULT_SERVER_CONNECTION_ID_LENGTH, ClientAuth, Configuration
from longtls.constants import HELLO_RETRY_REQUEST_RANDOM, AlertDescription, NamedGroup
from longtls.dtls_connection import DTLSConnection
from longtls.errors import HandshakeTimeoutError, LocalProtocolError
from longtls.events import (
    ApplicationData,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
    PeerAuthenticated,
    SessionTicketReceived,
)

X25519_ONLY = (NamedGroup.x25519,)


def make_link(
    key_type: str = "ecdsa-p256", *, mtu: int = 1200, client_groups: tuple[NamedGroup, ...] = X25519_ONLY,
    **kwargs: object,
) -> tuple[DatagramLink, Configuration, Configuration]:
    """A client and a server configuration on one simulated clock, and their link.

    ``client_groups`` are the client's key shares: x25519 alone keeps the
    first ClientHello in one datagram, so the cookie exchange is stateless."""
    clock = Clock()
    link_kw = {k[5:]: v for k, v in kwargs.items() if k.startswith("link_")}
    cfg_kw = {k: v for k, v in kwargs.items() if not k.startswith("link_")}
    cfg_kw.setdefault("client_key_share_groups", client_groups)
    # Most tests here are about the standard KeyUpdate (RFC 9147 §8), which
    # Extended Key Update replaces once negotiated (EKU draft-13 §4), and
    # about tickets, which draft-13 disables: EKU is off unless a test asks.
    cfg_kw.setdefault("client_extended_key_update", False)
    cfg_kw.setdefault("server_extended_key_update", False)
    client_cfg, server_cfg, _ = configs(key_type, client_now=clock, server_now=clock, **cfg_kw)
    link = DatagramLink(DTLSConnection(client_cfg, mtu=mtu), server_cfg, clock, mtu=mtu, **link_kw)  # type: ignore[arg-type]
    return link, client_cfg, server_cfg


def handshake_event(events: list[Event]) -> HandshakeComplete:
    found = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(found) == 1
    return found[0]


def closed_event(events: list[Event]) -> ConnectionClosed:
    found = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(found) == 1
    return found[0]


# -- reading datagrams as a peer or a capture would ------------------------------------


def records_of(datagram: bytes, cid_length: int = DEFAULT_SERVER_CONNECTION_ID_LENGTH) -> list[tuple[str, int, int, bytes]]:
    """Split a datagram into records by their headers (RFC 9147 §4):
    ("plain", epoch, content type, fragment) or ("cipher", epoch bits, 0, whole record).
    A record with the C bit carries a CID of ``cid_length`` bytes (by default
    what a longtls server asks its clients for)."""
    out = []
    pos = 0
    while pos < len(datagram):
        first = datagram[pos]
        if first & 0xE0 == 0x20:  # 001CSLEE: the unified header
            assert first & 0x0C == 0x0C, "16-bit sequence numbers and a length (longtls' defaults)"
            header = 5 + (cid_length if first & 0x10 else 0)
            length = int.from_bytes(datagram[pos + header - 2 : pos + header], "big")
            out.append(("cipher", first & 3, 0, datagram[pos : pos + header + length]))
            pos += header + length
        else:
            content_type, version, epoch = first, datagram[pos + 1 : pos + 3], int.from_bytes(datagram[pos + 3 : pos + 5], "big")
            assert version == b"\xfe\xfd"  # legacy_record_version {254, 253}
            length = int.from_bytes(datagram[pos + 11 : pos + 13], "big")
            out.append(("plain", epoch, content_type, datagram[pos + 13 : pos + 13 + length]))
            pos += 13 + length
    return out


# -- an independent key schedule: RFC 5869 HKDF, RFC 9846 §7.1 with "dtls13" (RFC 9147 §5.9) --


def _hmac(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    full = b"dtls13" + label
    info = struct.pack(">HB", length, len(full)) + full + bytes((len(context),)) + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = _hmac(secret, block + info + bytes((counter,)))
        out += block
        counter += 1
    return out[:length]


def open_record(
    secret: bytes, record: bytes, expected_sequence: int | None = None,
    cid_length: int = DEFAULT_SERVER_CONNECTION_ID_LENGTH,
) -> tuple[int, bytes]:
    """Decrypt one AES-128-GCM DTLSCiphertext record with keys derived from
    ``secret`` (RFC 9846 §7.3 with dtls13 labels; record number encryption,
    RFC 9147 §4.2.3; AAD = the header, CID included, with the clear sequence
    number, §4). Returns (content type, content)."""
    key = expand_label(secret, b"key", b"", 16)
    iv = expand_label(secret, b"iv", b"", 12)
    sn_key = expand_label(secret, b"sn", b"", 16)
    cid = cid_length if record[0] & 0x10 else 0
    header, ciphertext = bytearray(record[: 5 + cid]), record[5 + cid :]
    encryptor = Cipher(algorithms.AES(sn_key), modes.ECB()).encryptor()
    mask = encryptor.update(ciphertext[:16]) + encryptor.finalize()
    header[1 + cid] ^= mask[0]
    header[2 + cid] ^= mask[1]
    low_bits = int.from_bytes(header[1 + cid : 3 + cid], "big")
    if expected_sequence is not None:
        assert low_bits == expected_sequence & 0xFFFF
    sequence = low_bits if expected_sequence is None else expected_sequence
    nonce = bytes(a ^ b for a, b in zip(iv, sequence.to_bytes(12, "big"), strict=True))
    inner = AESGCM(key).decrypt(nonce, ciphertext, bytes(header)).rstrip(b"\x00")
    return inner[-1], inner[:-1]


# -- the handshake ------------------------------------------------------------------


@pytest.mark.parametrize(("group", "key_type"), [
    (NamedGroup.x25519, "ecdsa-p256"),
    (NamedGroup.secp256r1, "ecdsa-p256"),
    (NamedGroup.x25519, "rsa-2048"),
    (NamedGroup.secp256r1, "rsa-2048"),
])
def test_handshake_with_stateless_cookie(group: NamedGroup, key_type: str) -> None:
    link, _, _ = make_link(key_type, client_groups=(group,))
    link.client.start_handshake()
    link.collect()
    first = link.log["c2s"][0]
    # The first ClientHello fits one datagram: DTLSPlaintext, epoch 0.
    assert [(form, epoch, ctype) for form, epoch, ctype, _ in records_of(first)] == [("plain", 0, 22)]
    link.run(lambda: link.client.handshake_complete and link.server is not None and link.server.handshake_complete)
    # RFC 9147 §5.1: the first ClientHello got a HelloRetryRequest before any
    # connection existed, sent in one plaintext record that takes the
    # ClientHello's record number, message_seq 0.
    assert link.stateless_replies == 1
    hrr = link.log["s2c"][0]
    (form, epoch, ctype, fragment), = records_of(hrr)
    assert (form, epoch, ctype) == ("plain", 0, 22)
    assert hrr[5:11] == first[5:11]  # sequence_number
    assert fragment[0] == 2 and fragment[4:6] == b"\x00\x00"  # server_hello type, message_seq 0
    assert fragment[14:46] == HELLO_RETRY_REQUEST_RANDOM
    for side in (link.client_events, link.server_events):
        hs = handshake_event(side)
        assert hs.version == "DTLSv1.3"
        assert hs.group == group
        assert not hs.extended_key_update  # off in these configurations (make_link)
    assert handshake_event(link.client_events).signature_scheme is not None


def test_retransmitted_first_client_hello_gets_the_same_hello_retry_request() -> None:
    link, _, server_cfg = make_link()
    link.client.start_handshake()
    first = link.client.datagrams_to_send()[0]
    a = DTLSConnection.accept(server_cfg, CLIENT_ADDRESS, first)
    b = DTLSConnection.accept(server_cfg, CLIENT_ADDRESS, first)
    assert a[0] is None and b[0] is None
    assert a[1] == b[1] and len(a[1]) == 1


def test_hello_retry_request_for_a_group_mismatch_carries_the_cookie() -> None:
    link, _, _ = make_link(client_groups=(NamedGroup.x25519,), server_groups=(NamedGroup.secp256r1,))
    link.handshake()
    assert link.stateless_replies == 1
    assert handshake_event(link.client_events).group == NamedGroup.secp256r1
    assert handshake_event(link.server_events).group == NamedGroup.secp256r1


def test_a_first_client_hello_in_several_datagrams_is_answered_by_a_connection() -> None:
    # The default key shares (X25519MLKEM768 and x25519) make a ClientHello of
    # about 1.4 KB: two datagrams.  Its first fragment starts a connection,
    # whose engine answers with the cookie HelloRetryRequest.
    link, _, _ = make_link(client_groups=(NamedGroup.X25519MLKEM768, NamedGroup.x25519))
    link.client.start_handshake()
    link.collect()
    assert len(link.log["c2s"]) == 2
    assert all(len(d) <= 1200 for d in link.log["c2s"])
    link.run(lambda: link.client.handshake_complete and link.server is not None and link.server.handshake_complete)
    assert link.stateless_replies == 0
    hrr_records = records_of(link.log["s2c"][0])
    assert hrr_records[0][3][14:46] == HELLO_RETRY_REQUEST_RANDOM
    assert handshake_event(link.client_events).group == NamedGroup.X25519MLKEM768


def test_bad_cookie_is_answered_with_illegal_parameter_and_no_state() -> None:
    link, _, server_cfg = make_link()
    link.client.start_handshake()
    link.collect()
    link.step()  # the first ClientHello reaches accept(): HelloRetryRequest
    link.run(lambda: len(link.log["c2s"]) >= 2)
    second = link.log["c2s"][1]
    other = Configuration(
        is_client=False, certificate_chain=server_cfg.certificate_chain, private_key=server_cfg.private_key,
        now=server_cfg.now,
    )  # a server with another cookie secret
    conn, replies = DTLSConnection.accept(other, CLIENT_ADDRESS, second)
    assert conn is None
    (form, epoch, ctype, fragment), = records_of(replies[0])
    assert (form, epoch, ctype) == ("plain", 0, 21)
    assert fragment == bytes((2, AlertDescription.illegal_parameter))
    # The same ClientHello from another address: the cookie is bound to it.
    conn, replies = DTLSConnection.accept(server_cfg, b"\x7f\x00\x00\x02\x13\x88", second)
    assert conn is None and records_of(replies[0])[0][3] == bytes((2, AlertDescription.illegal_parameter))
    # And from the right address it starts the connection.
    conn, replies = DTLSConnection.accept(server_cfg, CLIENT_ADDRESS, second)
    assert conn is not None and replies == [] and not conn.is_closed


@pytest.mark.parametrize("datagram", [b"", b"\x00" * 40, b"\x16\xfe\xfd" + b"\x00" * 10, bytes(range(256)) * 4])
def test_garbage_from_an_unknown_address_is_dropped_without_state(datagram: bytes) -> None:
    _, _, server_cfg = make_link()
    assert DTLSConnection.accept(server_cfg, CLIENT_ADDRESS, datagram) == (None, [])


def test_epochs_on_the_wire() -> None:
    """RFC 9147 §6.1: 0 for the hellos, 2 for the rest of the handshake, 3 for
    application data; ACKs in the highest sending epoch (§7)."""
    link, _, _ = make_link()
    link.handshake()
    link.client.send(b"ping")
    link.server.send(b"pong")  # type: ignore[union-attr]
    link.run()
    c2s = [r[:3] for d in link.log["c2s"] for r in records_of(d)]
    s2c = [r[:3] for d in link.log["s2c"] for r in records_of(d)]
    # Client: ClientHello, ClientHello with cookie (epoch 0), its last flight
    # in epoch 2 (Finished ...), then epoch 3.
    assert c2s[:2] == [("plain", 0, 22), ("plain", 0, 22)]
    assert ("cipher", 2, 0) in c2s
    assert c2s[-1] == ("cipher", 3, 0)
    assert all(form == "cipher" for form, _, _ in c2s[2:])
    # Server: HelloRetryRequest and ServerHello in plaintext epoch 0, then epoch 2, then 3.
    assert s2c[:2] == [("plain", 0, 22), ("plain", 0, 22)]
    epochs = [epoch for form, epoch, _ in s2c[2:]]
    assert epochs == sorted(epochs) and epochs[0] == 2 and epochs[-1] == 3
    assert link.client.write_epoch == link.server.write_epoch == 3  # type: ignore[union-attr]


def test_server_acks_the_client_finished_and_the_client_keeps_epoch_2_until_then() -> None:
    link, _, _ = make_link()
    client = link.client
    client.start_handshake()
    # Deliver until the client has sent its last flight, holding back what the server sends next.
    link.run(lambda: client.handshake_complete)
    assert 2 in client._records.write_epochs  # kept to retransmit Finished (§4.2.1)
    assert client.messages_in_flight  # its last flight waits for an explicit ACK
    link.run(lambda: link.server is not None and link.server.handshake_complete)
    link.run(lambda: not client.messages_in_flight)
    assert 2 not in client._records.write_epochs
    # The server's ACK is a protected record: the client's Finished in epoch 2 was acknowledged from epoch 3.
    assert client.get_timer() is None or client.get_timer() > link.clock.now + 1  # nothing left to retransmit


def test_fragmentation_to_a_small_mtu() -> None:
    link, _, _ = make_link("rsa-2048", mtu=300)
    link.handshake()
    assert all(len(d) <= 300 for side in ("c2s", "s2c") for d in link.log[side])
    assert len(link.log["s2c"]) > 6  # the RSA certificate and signature need many fragments
    assert link.client.max_datagram_payload <= 300 - 5 - 16 - 1
    with pytest.raises(LocalProtocolError):
        link.client.send(b"x" * (link.client.max_datagram_payload + 1))
    link.client.send(b"y" * link.client.max_datagram_payload)
    link.run()
    assert link.received("server") == [b"y" * link.client.max_datagram_payload]


def test_mutual_authentication() -> None:
    ca = make_ca("ecdsa-p256")
    link, client_cfg, _ = make_link(ca=ca, server_client_auth=ClientAuth.REQUIRED)
    leaf = make_leaf(ca, "ecdsa-p256", client=True)
    link.client = DTLSConnection(_with(client_cfg, certificate_chain=leaf.chain, private_key=leaf.key))
    link.handshake()
    assert handshake_event(link.server_events).client_authenticated
    assert handshake_event(link.server_events).signature_scheme is not None


def test_mutual_authentication_without_a_client_certificate_fails() -> None:
    link, _, _ = make_link(server_client_auth=ClientAuth.REQUIRED)
    link.client.start_handshake()
    link.run(lambda: link.server is not None and link.server.is_closed)
    assert closed_event(link.server_events).alert == AlertDescription.certificate_required
    link.run(lambda: link.client.is_closed)
    assert closed_event(link.client_events).by_peer


def test_resumption_with_a_ticket() -> None:
    link, client_cfg, server_cfg = make_link()
    link.handshake()
    link.run()
    tickets = [e.ticket for e in link.client_events if isinstance(e, SessionTicketReceived)]
    assert tickets
    # The NewSessionTicket flight was acknowledged: nothing outstanding at the server.
    assert link.server is not None and not link.server.messages_in_flight
    again = DatagramLink(
        DTLSConnection(_with(client_cfg, session_ticket=tickets[0])), server_cfg, link.clock,
    )
    again.handshake()
    assert handshake_event(again.client_events).resumed
    assert handshake_event(again.server_events).resumed


def test_post_handshake_client_authentication() -> None:
    """RFC 9846 §4.6.2 over DTLS: the server's CertificateRequest is implicitly
    acknowledged by the client's answer, which the server ACKs (RFC 9147 §7.1)."""
    ca = make_ca("ecdsa-p256")
    link, client_cfg, _ = make_link(ca=ca)
    leaf = make_leaf(ca, "ecdsa-p256", client=True)
    link.client = DTLSConnection(_with(client_cfg, certificate_chain=leaf.chain, private_key=leaf.key, post_handshake_auth=True))
    link.handshake()
    link.run()
    assert link.server is not None
    link.server.request_client_authentication()
    link.run()
    (auth,) = [e for e in link.server_events if isinstance(e, PeerAuthenticated)]
    assert auth.peer_certificates[0] == leaf.cert
    assert not link.server.messages_in_flight and not link.client.messages_in_flight


def test_handshake_timeout_after_retransmissions_with_back_off() -> None:
    clock = Clock()
    client_cfg, _, _ = configs(client_now=clock, client_handshake_timeout=20.0, client_key_share_groups=X25519_ONLY)
    client = DTLSConnection(client_cfg)
    client.start_handshake()
    sent_at = [clock.now] * len(client.datagrams_to_send())
    while True:
        timer = client.get_timer()
        assert timer is not None
        clock.now = timer
        try:
            client.handle_timer()
        except HandshakeTimeoutError:
            break
        sent_at += [clock.now] * len(client.datagrams_to_send())
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(sent_at)]
    assert gaps == [1.0, 2.0, 4.0, 8.0]  # RFC 9147 §5.8.2: 1 s, doubled at each expiry
    assert client.is_closed and clock.now >= sent_at[0] + 20.0
    alerts = [records_of(d) for d in client.datagrams_to_send()]
    assert [r[3] for d in alerts for r in d] == [b"\x01\x5a", b"\x01\x00"]  # user_canceled, close_notify


def test_lost_stateless_hello_retry_request() -> None:
    link, _, _ = make_link()
    link.drop = drop_first("s2c", lambda: True)
    link.handshake()
    assert link.stateless_replies == 2  # the retransmitted ClientHello got it again


def test_lost_hello_retry_request_of_a_reassembling_connection() -> None:
    link, _, _ = make_link(client_groups=(NamedGroup.X25519MLKEM768, NamedGroup.x25519))
    link.drop = drop_first("s2c", lambda: True)
    link.handshake()
    assert link.stateless_replies == 0 and link.drop.dropped == [0]  # type: ignore[attr-defined]
    first, again = link.log["s2c"][0], link.log["s2c"][1]
    assert again.startswith(first)  # the same HelloRetryRequest records, message_seq 0 (an ACK may follow)


def test_records_not_yet_readable_are_answered_with_an_ack() -> None:
    """rfc9147bis §7.1: EncryptedExtensions (epoch 2) arriving before the
    ServerHello cannot be deprotected or acknowledged; an empty ACK tells the
    server at once, rather than after its timer."""
    held: list[bytes] = []
    link, _, _ = make_link(mtu=400)

    def hold_server_flight(direction: str, datagram: bytes, index: int) -> bool:
        if direction == "s2c" and index >= 1 and not link.client.handshake_complete:
            held.append(datagram)
            return True
        return False

    link.drop = hold_server_flight
    link.client.start_handshake()
    link.run(lambda: len(held) >= 3)
    assert records_of(held[0])[0][:3] == ("plain", 0, 22)  # the ServerHello
    assert records_of(held[-1])[0][:2] == ("cipher", 2)
    link.client.receive_datagram(held[-1])  # epoch 2 before the ServerHello
    (ack,) = link.client.datagrams_to_send()
    assert [(form, epoch, ctype, body) for form, epoch, ctype, body in records_of(ack)] == [("plain", 0, 26, b"\x00\x00")]
    for datagram in held:
        link.client.receive_datagram(datagram)
    link.drop = None
    link.run(lambda: link.server is not None and link.server.handshake_complete)


def test_sequence_numbers_past_65536() -> None:
    """RFC 9147 §4.2.2: the receiver rebuilds the full sequence number from 16 bits across the wrap."""
    link, _, _ = make_link()
    link.handshake()
    link.run()
    link.client._records.set_write_sequence_number(3, 65_530)
    sent = [b"n%d" % i for i in range(20)]
    for payload in sent:
        link.client.send(payload)
        link.collect()
    link.run()
    assert link.received("server") == sent
    assert link.client._records.write_sequence_number(3) == 65_550


# -- data, alerts, closing, invalid records ---------------------------------------------


def test_application_data_both_ways_one_record_per_datagram_payload() -> None:
    link, _, _ = make_link()
    link.handshake()
    assert link.server is not None
    for i in range(20):
        link.client.send(b"c%d" % i)
        link.server.send(b"s%d" % i)
    link.run()
    assert link.received("server") == [b"c%d" % i for i in range(20)]
    assert link.received("client") == [b"s%d" % i for i in range(20)]


def test_record_size_limits_both_ways() -> None:
    """RFC 8449: each side seals within the peer's record_size_limit, and
    discards a record over its own (a peer ignoring the limit is simulated
    by lifting its cap)."""
    link, _, _ = make_link(client_record_size_limit=513, server_record_size_limit=1025)
    link.handshake()
    assert link.server is not None
    link.client.send(bytes(1024))
    link.server.send(bytes(512))
    with pytest.raises(LocalProtocolError):
        link.server.send(bytes(513))  # one record per send: over the client's limit
    link.run()
    assert [len(p) for p in link.received("server")] == [1024]
    assert [len(p) for p in link.received("client")] == [512]
    link.server._records.peer_record_size_limit = 2**14 + 1  # a peer that ignores our limit
    link.server.send(bytes(600))
    link.server.send(b"small")
    link.run()
    assert link.received("client")[1:] == [b"small"]
    assert not link.client.is_closed


def test_close_notify_both_ways() -> None:
    link, _, _ = make_link()
    link.handshake()
    assert link.server is not None
    link.client.send(b"last")
    link.client.close()
    with pytest.raises(LocalProtocolError):
        link.client.send(b"more")
    link.run()
    assert link.received("server") == [b"last"]
    assert link.server.close_received and not link.server.is_closed
    link.server.send(b"reply")  # half-closed: the server may still send
    link.server.close()
    link.run()
    assert link.received("client") == [b"reply"]
    assert link.client.is_closed and link.server.is_closed
    assert closed_event(link.client_events).alert is None
    assert closed_event(link.server_events).alert is None


def test_records_of_a_closed_connection_are_ignored() -> None:
    link, _, _ = make_link()
    link.handshake()
    assert link.server is not None
    link.client.send(b"after close")
    late = link.client.datagrams_to_send()
    link.server.abort(AlertDescription.internal_error)
    link.server.receive_datagram(late[0])  # no exception, no event
    assert [e for e in link.server.events() if not isinstance(e, ConnectionClosed)] == []
    link.run()
    closed = closed_event(link.client_events)
    assert closed.by_peer and closed.alert == AlertDescription.internal_error


def test_data_after_close_notify_in_record_order_is_ignored() -> None:
    """RFC 9147 §5.10: data with a record number after the close_notify's is ignored,
    data before it is delivered even if it arrives later."""
    link, _, _ = make_link()
    link.handshake()
    assert link.server is not None
    link.client.send(b"before")
    before = link.client.datagrams_to_send()
    link.client._close_sent = False  # a peer that keeps sending after its close_notify
    link.client._send_alert(AlertDescription.close_notify)
    close = link.client.datagrams_to_send()
    link.client.send(b"after")
    after = link.client.datagrams_to_send()
    for datagram in (close, after, before):
        link.server.receive_datagram(datagram[0])
    assert [e.data for e in link.server.events() if isinstance(e, ApplicationData)] == [b"before"]


def test_invalid_records_are_discarded_silently() -> None:
    link, _, _ = make_link()
    link.handshake()
    server = link.server
    assert server is not None
    link.client.send(b"genuine")
    (datagram,) = link.client.datagrams_to_send()
    flipped = bytearray(datagram)
    flipped[-1] ^= 1
    before = server.discarded
    for junk in (b"", b"\xff" * 50, bytes(flipped), datagram[:-3], b"\x2e" + datagram[1:], b"\x16\xfe\xfd" + b"\x00" * 20):
        server.receive_datagram(junk)
    assert server.discarded > before
    assert not server.is_closed and server.events() == []
    server.receive_datagram(datagram)
    server.receive_datagram(datagram)  # a replay (§4.5.1)
    assert [e.data for e in server.events() if isinstance(e, ApplicationData)] == [b"genuine"]
    server.send(b"still fine")
    link.run()
    assert link.received("client") == [b"still fine"]


def test_a_flood_of_garbage_does_not_stop_a_good_handshake() -> None:
    """Ten garbage datagrams before every genuine one, both ways: random
    bytes, unified headers of every epoch, DTLSPlaintext handshake, alert and
    ACK records with random bodies.  All are dropped silently (§4.5.2) and
    the handshake, data and a KeyUpdate complete."""
    rng = random.Random(5)
    link, _, _ = make_link()

    def garbage() -> bytes:
        kind = rng.randrange(4)
        body = rng.randbytes(rng.randrange(1, 300))
        if kind == 0:
            return body
        if kind == 1:  # a unified header: 001 0 1 1 EE, sequence number, length
            return bytes((0x2C | rng.randrange(4),)) + rng.randbytes(2) + len(body).to_bytes(2, "big") + body
        content_type = (21, 22, 26)[rng.randrange(3)]  # alert, handshake, ack in plaintext
        return bytes((content_type, 0xFE, 0xFD)) + bytes(2) + rng.randbytes(6) + len(body).to_bytes(2, "big") + body

    original = link._deliver

    def flooded(direction: str, datagram: bytes) -> None:
        for _ in range(10):
            original(direction, garbage())
        original(direction, datagram)

    link._deliver = flooded  # type: ignore[method-assign]
    link.handshake()
    assert link.server is not None
    link.client.send(b"through the flood")
    link.client.update_keys()
    link.run(lambda: not link.client.key_update_pending and link.server is not None and link.server.write_epoch == 4)
    link.server.send(b"and back")
    link.run()
    assert link.received("server") == [b"through the flood"] and link.received("client") == [b"and back"]
    assert link.client.discarded + link.client.plaintext_dropped > 0 and not link.client.is_closed
    assert link.server.discarded + link.server.plaintext_dropped > 0 and not link.server.is_closed


def test_a_fatal_alert_from_the_peer_closes_the_connection() -> None:
    link, _, _ = make_link()
    link.handshake()
    link.client.abort(AlertDescription.insufficient_security, "policy")
    link.run()
    assert link.server is not None and link.server.is_closed
    closed = closed_event(link.server_events)
    assert closed.by_peer and closed.alert == AlertDescription.insufficient_security


def test_an_ack_naming_a_protected_epoch_from_plaintext_is_ignored() -> None:
    link, _, _ = make_link()
    link.handshake()
    assert link.server is not None
    # A plaintext ACK (epoch 0) naming epoch 3 records: unauthenticated, dropped.
    ack = bytes((26,)) + b"\xfe\xfd" + b"\x00\x00" + b"\x00" * 6 + struct.pack(">HH", 18, 16) + struct.pack(">QQ", 3, 0)
    link.server.receive_datagram(ack)
    assert not link.server.is_closed


# -- KeyUpdate (RFC 9147 §8, rfc9147bis) --------------------------------------------


@pytest.mark.parametrize("initiator", ["client", "server"])
@pytest.mark.parametrize("request_peer_update", [True, False])
def test_key_update_switches_on_ack(initiator: str, request_peer_update: bool) -> None:
    link, _, _ = make_link()
    link.handshake()
    link.run()
    assert link.server is not None
    me, peer = (link.client, link.server) if initiator == "client" else (link.server, link.client)
    my_events = link.client_events if initiator == "client" else link.server_events
    peer_events = link.server_events if initiator == "client" else link.client_events
    me.update_keys(request_peer_update=request_peer_update)
    assert me.key_update_pending and me.write_epoch == 3
    with pytest.raises(LocalProtocolError):
        me.update_keys()  # the previous one is not acknowledged yet
    me.send(b"old epoch")  # application data continues under epoch 3 until the ACK
    (datagram,) = me.datagrams_to_send()
    assert [r[:2] for r in records_of(datagram)] == [("cipher", 3), ("cipher", 3)]
    link._emit("c2s" if initiator == "client" else "s2c", [datagram])
    link.run()
    assert me.write_epoch == 4 and not me.key_update_pending
    assert peer.read_epoch == 4
    sent = [e for e in my_events if isinstance(e, KeyUpdated) and e.direction == "send"]
    assert [e.generation for e in sent] == [1]
    received = [e for e in peer_events if isinstance(e, KeyUpdated) and e.direction == "receive"]
    assert [(e.generation, e.requested_by_peer) for e in received] == [(1, request_peer_update)]
    assert peer.write_epoch == (4 if request_peer_update else 3)
    me.send(b"new epoch")
    peer.send(b"answer")
    link.run()
    assert b"old epoch" in link.received("server" if initiator == "client" else "client")
    assert link.received("server" if initiator == "client" else "client")[-1] == b"new epoch"
    # The old receive epoch was closed once the new one was in use.
    assert 3 in peer.read_epochs and 2 not in peer.read_epochs


def test_repeated_one_sided_key_updates() -> None:
    """The peer never updates, so it ACKs our epoch-5 KeyUpdate from its
    epoch 3 (see docs/dtls.md on rfc9147bis §7.2 and tlswg/dtls13-spec#331)."""
    link, _, _ = make_link()
    link.handshake()
    link.run()
    for n in range(1, 6):
        link.client.update_keys(request_peer_update=False)
        link.run(lambda: not link.client.key_update_pending)
        assert link.client.write_epoch == 3 + n
    link.client.send(b"epoch 8")
    link.run()
    assert link.server is not None and link.server.write_epoch == 3 and link.server.read_epoch == 8
    assert link.received("server") == [b"epoch 8"]


# -- retransmission -------------------------------------------------------------------


def drop_first(direction: str, when: Callable[[], bool], count: int = 1) -> Callable[[str, bytes, int], bool]:
    dropped: list[int] = []

    def hook(d: str, datagram: bytes, index: int) -> bool:
        if d == direction and len(dropped) < count and when():
            dropped.append(index)
            return True
        return False

    hook.dropped = dropped  # type: ignore[attr-defined]
    return hook


def test_lost_server_flight_is_retransmitted() -> None:
    link, _, _ = make_link()
    # Every server datagram after the HelloRetryRequest is lost once (ServerHello .. Finished).
    link.drop = drop_first("s2c", lambda: link.server is not None and link.server.messages_in_flight > 0, count=3)
    link.handshake()
    assert len(link.drop.dropped) == 3  # type: ignore[attr-defined]


def test_lost_client_finished_is_retransmitted() -> None:
    link, _, _ = make_link()
    link.drop = drop_first("c2s", lambda: link.client.handshake_complete, count=1)
    link.handshake()
    assert link.drop.dropped  # type: ignore[attr-defined]
    link.run(lambda: not link.client.messages_in_flight)


def test_data_overtaking_a_lost_finished_prompts_retransmission() -> None:
    """RFC 9147 §5.8.1: epoch-3 data before the client's Finished is
    discarded (the server has no epoch-3 keys yet, "MUST either discard or
    buffer"), and taken as evidence of loss: the server retransmits its
    flight at once, the client answers with its Finished, long before the
    1 s retransmission timer."""
    link, _, _ = make_link()
    link.drop = drop_first("c2s", lambda: link.client.handshake_complete, count=1)
    link.client.start_handshake()
    link.run(lambda: link.client.handshake_complete)
    link.client.send(b"overtakes the lost Finished")
    started = link.clock.now
    link.run(lambda: link.server is not None and link.server.handshake_complete)
    assert link.clock.now - started < 0.2
    assert link.received("server") == []  # discarded, not delivered out of order
    assert link.server is not None and link.server.discarded >= 1


def test_lost_ack_of_the_client_finished() -> None:
    link, _, _ = make_link()
    link.drop = drop_first("s2c", lambda: link.server is not None and link.server.handshake_complete, count=1)
    link.handshake()
    link.run(lambda: not link.client.messages_in_flight and 2 not in link.client._records.write_epochs)
    assert link.drop.dropped  # type: ignore[attr-defined]


@pytest.mark.parametrize("lose", ["key_update", "ack"])
def test_lost_key_update_or_its_ack(lose: str) -> None:
    link, _, _ = make_link()
    link.handshake()
    link.run()
    assert link.server is not None
    if lose == "key_update":
        link.drop = drop_first("c2s", lambda: link.client.key_update_pending)
    else:
        link.drop = drop_first("s2c", lambda: link.server is not None and link.server.read_epoch == 4)
    link.client.update_keys(request_peer_update=False)
    link.run(lambda: link.client.write_epoch == 4)
    assert link.drop.dropped  # type: ignore[attr-defined]
    link.client.send(b"after the update")
    link.run()
    assert link.received("server") == [b"after the update"]


def test_lossy_link_handshake_key_updates_and_data() -> None:
    """20% loss, 10% duplication, 20% reordering: the handshake completes, 50
    KeyUpdates complete (both sides, with and without update_requested), both
    ends agree on every epoch, and every application datagram that arrived
    is delivered exactly once and intact (and nothing else is)."""
    link, _, _ = make_link(link_loss=0.2, link_duplicate=0.1, link_reorder=0.2, link_seed=11)
    link.handshake(max_seconds=600)
    assert link.server is not None
    server = link.server
    # payload -> (direction, index of the datagram that carried it)
    carried: dict[bytes, tuple[str, int]] = {}
    counter = 0
    updates = 0
    for n in range(50):
        updater = link.client if n % 2 == 0 else server
        link.run(lambda u=updater: not u.key_update_pending and not u.key_update_answer_owed, max_seconds=600)  # type: ignore[misc]
        before = updater.write_epoch
        updater.update_keys(request_peer_update=n % 3 != 0)
        for _ in range(3):
            for direction, end in (("c2s", link.client), ("s2c", server)):
                counter += 1
                payload = hashlib.sha256(b"%d" % counter).digest() + b"%s %d" % (direction.encode(), counter)
                link.collect()  # what is queued before goes in earlier datagrams
                end.send(payload)
                carried[payload] = (direction, link.sent[direction])
                link.collect()
            link.step()
        link.run(lambda: not link.client.key_update_pending and not server.key_update_pending, max_seconds=600)
        updates += updater.write_epoch > before
        # Both ends agree on every epoch once the update settled.
        link.run(lambda: link.client.write_epoch == server.read_epoch and server.write_epoch == link.client.read_epoch, max_seconds=600)
    assert updates == 50
    link.loss = link.duplicate = link.reorder = 0.0
    link.run()
    assert link.delivered["c2s"] < link.sent["c2s"] and link.delivered["s2c"] < link.sent["s2c"]  # it was lossy
    for receiver, direction in (("server", "c2s"), ("client", "s2c")):
        got = link.received(receiver)
        assert len(got) == len(set(got))  # once
        arrived = {p for p, (d, index) in carried.items() if d == direction and index in link.arrived[d]}
        assert set(got) == arrived  # every one that arrived, intact, and nothing else
        assert len(arrived) < 150
    assert not link.client.is_closed and not server.is_closed


# -- Extended Key Update over DTLS (opt-in) ----------------------------------------------

EKU_PROFILES = ["draft-13", "draft-2025-10", "draft-05"]


def eku_link(profile: str, **kwargs: object) -> DatagramLink:
    link, client_cfg, _ = make_link(client_eku_profile=profile, server_eku_profile=profile, link_extended_key_update=True, **kwargs)
    link.client = DTLSConnection(client_cfg, extended_key_update=True)
    return link


def eku_settled(link: DatagramLink, generation: int) -> bool:
    client, server = link.client, link.server
    return (
        server is not None and client.key_generation == server.key_generation == generation
        and client.eku is not None and server.eku is not None
        and not client.eku.in_progress and not server.eku.in_progress
    )


def test_extended_key_update_follows_the_configuration() -> None:
    """As over TLS: negotiated with the default Configuration (which then refuses
    the standard KeyUpdate, EKU draft-13 §4); off when either side turns it off."""
    link, _, _ = make_link(client_extended_key_update=True, server_extended_key_update=True)
    link.handshake()
    assert handshake_event(link.client_events).extended_key_update
    with pytest.raises(LocalProtocolError):
        link.client.update_keys()
    off, _, _ = make_link(client_extended_key_update=True, server_extended_key_update=False)
    off.handshake()
    assert not handshake_event(off.client_events).extended_key_update
    with pytest.raises(LocalProtocolError):
        off.client.extended_key_update()


@pytest.mark.parametrize("profile", EKU_PROFILES)
def test_extended_key_update_over_dtls(profile: str) -> None:
    link = eku_link(profile)
    link.handshake()
    link.run()
    assert link.server is not None
    assert handshake_event(link.client_events).eku_profile == profile
    for n in range(1, 5):
        (link.client if n % 2 else link.server).extended_key_update()
        link.run(lambda n=n: eku_settled(link, n))  # type: ignore[misc]
        # Each update moved both directions one epoch on both ends.
        assert link.client.write_epoch == link.server.read_epoch == 3 + n
        assert link.server.write_epoch == link.client.read_epoch == 3 + n
    completed = [e for e in link.client_events if isinstance(e, KeyUpdateCompleted)]
    assert [e.generation for e in completed] == [1, 2, 3, 4]
    assert link.client.export_keying_material("x", b"", 32) == link.server.export_keying_material("x", b"", 32)
    assert link.client.export_epoch_keying_material("x", b"", 32) == link.server.export_epoch_keying_material("x", b"", 32)
    link.client.send(b"generation 4")
    link.server.send(b"also 4")
    link.run()
    assert link.received("server") == [b"generation 4"] and link.received("client") == [b"also 4"]
    with pytest.raises(LocalProtocolError):
        link.client.update_keys()  # EKU replaces KeyUpdate once negotiated (draft-13 §4)


@pytest.mark.parametrize("profile", EKU_PROFILES)
def test_extended_key_updates_on_a_lossy_link(profile: str) -> None:
    """20% loss, duplication and reordering: 200 extended key updates started
    by either side and, every fifth, by both at once (crossed requests); both
    ends agree on every epoch after each, and every application datagram that
    arrived is delivered once and intact."""
    # Back-off after repeated losses can exceed the default 30 s rekey_timeout
    # on this simulated clock; the test is about completion, not patience.
    link = eku_link(
        profile, link_loss=0.2, link_duplicate=0.1, link_reorder=0.2, link_seed=7,
        client_rekey_timeout=600.0, server_rekey_timeout=600.0,
    )
    link.handshake(max_seconds=600)
    server = link.server
    assert server is not None
    carried: dict[bytes, tuple[str, int]] = {}
    for n in range(1, 201):
        if n % 5 == 0:
            link.client.extended_key_update()
            server.extended_key_update()
        else:
            (link.client if n % 2 else server).extended_key_update()
        link.run(lambda n=n: eku_settled(link, n), max_seconds=600)  # type: ignore[misc]
        assert link.client.write_epoch == server.read_epoch and server.write_epoch == link.client.read_epoch
        for direction, end in (("c2s", link.client), ("s2c", server)):
            payload = hashlib.sha256(b"%s %d" % (direction.encode(), n)).digest()
            link.collect()
            end.send(payload)
            carried[payload] = (direction, link.sent[direction])
            link.collect()
        link.step()
    assert link.client.write_epoch == server.write_epoch == 203
    link.loss = link.duplicate = link.reorder = 0.0
    link.run()
    for receiver, direction in (("server", "c2s"), ("client", "s2c")):
        got = link.received(receiver)
        arrived = {p for p, (d, index) in carried.items() if d == direction and index in link.arrived[d]}
        assert len(got) == len(set(got)) and set(got) == arrived and len(arrived) < 200


# -- the key log -----------------------------------------------------------------------


def test_key_log_matches_independent_derivation() -> None:
    lines: list[str] = []
    link, client_cfg, _ = make_link()
    link.client = DTLSConnection(_with(client_cfg, keylog=lines.append))
    link.handshake()
    link.run()
    link.client.update_keys(request_peer_update=False)
    link.run(lambda: not link.client.key_update_pending)
    link.client.send(b"generation one")
    link.collect()
    logged = {}
    for line in lines:
        label, random_hex, secret_hex = line.split()
        assert bytes.fromhex(random_hex) == link.client.client_random
        logged[label] = bytes.fromhex(secret_hex)
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
            "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET", "CLIENT_TRAFFIC_SECRET_1"} <= set(logged)
    # RFC 9846 §7.2 with RFC 9147 §5.9: application_traffic_secret_N+1 =
    # HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length), label "dtls13traffic upd".
    assert logged["CLIENT_TRAFFIC_SECRET_1"] == expand_label(logged["CLIENT_TRAFFIC_SECRET_0"], b"traffic upd", b"", 32)
    # The records on the wire open with keys derived here from the logged secrets.
    records = [r for d in link.log["c2s"] for r in records_of(d)]
    epoch2 = [r for r in records if r[:2] == ("cipher", 2)]
    content_type, content = open_record(logged["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], epoch2[0][3])
    assert content_type == 22 and content[0] in (11, 15, 20, 25)  # certificate, CV, finished, compressed_certificate
    (last,) = [r for r in records_of(link.log["c2s"][-1])]
    assert last[:2] == ("cipher", 0)  # epoch 4: low bits 0
    assert open_record(logged["CLIENT_TRAFFIC_SECRET_1"], last[3], expected_sequence=0) == (23, b"generation one")
    s2c = [r for d in link.log["s2c"] for r in records_of(d) if r[:2] == ("cipher", 2)]
    assert open_record(logged["SERVER_HANDSHAKE_TRAFFIC_SECRET"], s2c[0][3])[1][0] == 8  # EncryptedExtensions
    # The server's first epoch-3 record (its ACK of our Finished, or a ticket) opens under SERVER_TRAFFIC_SECRET_0.
    s2c3 = [r for d in link.log["s2c"] for r in records_of(d) if r[:2] == ("cipher", 3)]
    assert open_record(logged["SERVER_TRAFFIC_SECRET_0"], s2c3[0][3])[0] in (22, 26)
    # RFC 9846 §7.5 under dtls13: the exporter from the logged EXPORTER_SECRET.
    empty_hash = hashlib.sha256(b"").digest()
    derived = expand_label(logged["EXPORTER_SECRET"], b"label", empty_hash, 32)
    expected = expand_label(derived, b"exporter", hashlib.sha256(b"context").digest(), 16)
    assert link.client.export_keying_material("label", b"context", 16) == expected
    assert link.server.export_keying_material("label", b"context", 16) == expected  # type: ignore[union-attr]


# -- helpers -------------------------------------------------------------------------------


def _with(config: Configuration, **changes: object) -> Configuration:
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]
