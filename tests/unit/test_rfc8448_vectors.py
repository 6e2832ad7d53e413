"""RFC 8448 traces: the vector parser, and an independent recomputation of the key schedule.

Everything cryptographic here is computed from the spec formulas in this file (RFC 9846 §7.1
HKDF-Expand-Label / Derive-Secret, §4.4.1 transcript hash incl. message_hash, §4.4.4 Finished),
using only pyca/cryptography primitives and the standard library.  No longtls module is
imported, so these tests vouch for the vectors (and the parser) independently of the engine.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.vectors import rfc8448
from tests.vectors.rfc8448 import HandshakeMessage, Trace, trace

HASH_LEN = 32  # every RFC 8448 trace uses TLS_AES_128_GCM_SHA256
KEY_LEN = 16
IV_LEN = 12
ALL_TRACES = ("simple", "resumed", "hrr", "client_auth", "compat")


# --------------------------------------------------------------------------------------------
# The key schedule, written out from RFC 9846 §7.1 (test-local on purpose).
# --------------------------------------------------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract(salt, IKM) = HMAC-Hash(salt, IKM) (RFC 5869 §2.2)."""
    return hmac.new(salt, ikm, "sha256").digest()


def _hkdf_label(label: bytes, context: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    return length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context


def _expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    info = _hkdf_label(label, context, length)
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(secret)


def _derive_secret(secret: bytes, label: bytes, messages: Iterable[bytes]) -> bytes:
    return _expand_label(secret, label, _h(b"".join(messages)), HASH_LEN)


def _finished_mac(base_key: bytes, messages: Iterable[bytes]) -> bytes:
    finished_key = _expand_label(base_key, b"finished", b"", HASH_LEN)
    return hmac.new(finished_key, _h(b"".join(messages)), "sha256").digest()


def _message_hash(client_hello1: bytes) -> bytes:
    """RFC 9846 §4.4.1: handshake type 254, uint24 length Hash.length, Hash(ClientHello1)."""
    return b"\xfe\x00\x00" + bytes([HASH_LEN]) + _h(client_hello1)


ZEROS = bytes(HASH_LEN)


def _ecdhe(tr: Trace) -> bytes:
    """The (EC)DHE shared secret computed from the trace's private/public keys."""
    client = tr.key_shares("client")[-1]  # after an HRR the client's second share counts
    server = tr.key_share("server")
    assert client.group == server.group
    if client.group == "x25519":
        priv = x25519.X25519PrivateKey.from_private_bytes(client.private_key)
        return priv.exchange(x25519.X25519PublicKey.from_public_bytes(server.public_key))
    assert client.group == "P-256"
    ec_priv = ec.derive_private_key(int.from_bytes(client.private_key, "big"), ec.SECP256R1())
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), server.public_key)
    return ec_priv.exchange(ec.ECDH(), peer)


def _handshake_transcript(tr: Trace) -> list[HandshakeMessage]:
    """The wire handshake messages of the main handshake (post-handshake NST dropped)."""
    return [m for m in tr.record_handshake_messages() if m.name != "NewSessionTicket"]


def _ticket_nonce(new_session_ticket: bytes) -> bytes:
    # type(1) length(3) ticket_lifetime(4) ticket_age_add(4) ticket_nonce<0..255> ...
    n = new_session_ticket[12]
    return new_session_ticket[13 : 13 + n]


def _psk_binders_offset(client_hello: bytes) -> int:
    """Offset in ClientHello of the PskBinderEntry list (RFC 9846 §4.2.11.2)."""
    pos = 4 + 2 + 32
    pos += 1 + client_hello[pos]  # legacy_session_id
    pos += 2 + int.from_bytes(client_hello[pos : pos + 2], "big")  # cipher_suites
    pos += 1 + client_hello[pos]  # legacy_compression_methods
    end = pos + 2 + int.from_bytes(client_hello[pos : pos + 2], "big")
    pos += 2
    while pos < end:
        ext_type = int.from_bytes(client_hello[pos : pos + 2], "big")
        ext_len = int.from_bytes(client_hello[pos + 2 : pos + 4], "big")
        if ext_type == 41:  # pre_shared_key, must be last
            assert pos + 4 + ext_len == end == len(client_hello)
            identities_len = int.from_bytes(client_hello[pos + 4 : pos + 6], "big")
            return pos + 4 + 2 + identities_len
        pos += 4 + ext_len
    raise AssertionError("no pre_shared_key extension")


def _compute_schedule(tr: Trace) -> dict[str, bytes]:
    """Every value of the TLS 1.3 key schedule for ``tr``, from the trace's inputs only.

    Inputs: the wire handshake messages, the ephemeral private keys and, for the resumed
    trace, the simple trace's resumption_master_secret and NewSessionTicket (not the resumed
    trace's own PSK).
    """
    out: dict[str, bytes] = {}
    msgs = _handshake_transcript(tr)
    client_hello = msgs[0].data

    # -- Early Secret.  A PSK only in the resumed trace, from the previous connection.
    psk = ZEROS
    if tr.key == "resumed":
        prev = trace("simple")
        nonce = _ticket_nonce(prev.handshake_message("NewSessionTicket"))
        res_master = _compute_schedule(prev)["resumption_master_secret"]
        psk = _expand_label(res_master, b"resumption", nonce, HASH_LEN)
    out["psk"] = psk
    early = _extract(ZEROS, psk)
    out["early_secret"] = early
    if tr.key == "resumed":
        binder_key = _derive_secret(early, b"res binder", [])
        out["binder_key"] = binder_key
        out["binder_finished_key"] = _expand_label(binder_key, b"finished", b"", HASH_LEN)
        truncated = client_hello[: _psk_binders_offset(client_hello)]
        out["binder"] = _finished_mac(binder_key, [truncated])
        out["client_early_traffic_secret"] = _derive_secret(early, b"c e traffic", [client_hello])
        out["early_exporter_master_secret"] = _derive_secret(early, b"e exp master", [client_hello])

    # -- Transcript: ClientHello1 + HelloRetryRequest collapse into message_hash (§4.4.1).
    transcript: list[bytes] = []
    for m in msgs:
        if m.is_hello_retry_request:
            assert len(transcript) == 1
            transcript = [_message_hash(transcript[0])]
        transcript.append(m.data)

    # message_hash replaces ClientHello1 one-for-one, so indices into msgs and transcript
    # line up.
    assert len(transcript) == len(msgs)

    def upto(name: str, who: str, inclusive: bool = True) -> list[bytes]:
        """Transcript through (or, not inclusive, up to) the last ``name`` sent by ``who``
        (the last ServerHello is the real one after an HRR)."""
        idx = max(i for i, m in enumerate(msgs) if m.name == name and m.who == who)
        return transcript[: idx + 1 if inclusive else idx]

    # -- Handshake Secret.
    derived_hs = _derive_secret(early, b"derived", [])
    out["derived_for_handshake"] = derived_hs
    ecdhe = _ecdhe(tr)
    out["ecdhe"] = ecdhe
    hs = _extract(derived_hs, ecdhe)
    out["handshake_secret"] = hs
    through_sh = upto("ServerHello", "server")
    c_hs = _derive_secret(hs, b"c hs traffic", through_sh)
    s_hs = _derive_secret(hs, b"s hs traffic", through_sh)
    out["client_handshake_traffic_secret"] = c_hs
    out["server_handshake_traffic_secret"] = s_hs

    # -- Master Secret.
    derived_ms = _derive_secret(hs, b"derived", [])
    out["derived_for_master"] = derived_ms
    master = _extract(derived_ms, ZEROS)
    out["master_secret"] = master
    through_sfin = upto("Finished", "server")
    c_ap = _derive_secret(master, b"c ap traffic", through_sfin)
    s_ap = _derive_secret(master, b"s ap traffic", through_sfin)
    out["client_application_traffic_secret_0"] = c_ap
    out["server_application_traffic_secret_0"] = s_ap
    out["exporter_master_secret"] = _derive_secret(master, b"exp master", through_sfin)

    # -- Finished (§4.4.4): server over ..server CertificateVerify, client over everything
    #    up to (not incl.) its Finished, which includes EndOfEarlyData and client auth.
    out["server_finished_key"] = _expand_label(s_hs, b"finished", b"", HASH_LEN)
    out["server_verify_data"] = _finished_mac(s_hs, upto("Finished", "server", False))
    out["client_finished_key"] = _expand_label(c_hs, b"finished", b"", HASH_LEN)
    out["client_verify_data"] = _finished_mac(c_hs, upto("Finished", "client", False))
    through_cfin = upto("Finished", "client")
    res_master = _derive_secret(master, b"res master", through_cfin)
    out["resumption_master_secret"] = res_master

    # -- Resumption PSK for a NewSessionTicket sent in this connection.
    tickets = [m for m in tr.record_handshake_messages("server") if m.name == "NewSessionTicket"]
    if tickets:
        nonce = _ticket_nonce(tickets[0].data)
        out["ticket_nonce"] = nonce
        out["resumption_psk"] = _expand_label(res_master, b"resumption", nonce, HASH_LEN)

    # -- Traffic keys (§7.3).
    secrets = {
        ("client", "handshake"): c_hs,
        ("server", "handshake"): s_hs,
        ("client", "application"): c_ap,
        ("server", "application"): s_ap,
    }
    if "client_early_traffic_secret" in out:
        secrets[("client", "early")] = out["client_early_traffic_secret"]
    for (sender, phase), secret in secrets.items():
        out[f"{sender}_{phase}_key"] = _expand_label(secret, b"key", b"", KEY_LEN)
        out[f"{sender}_{phase}_iv"] = _expand_label(secret, b"iv", b"", IV_LEN)
    return out


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def test_all_trace_sections_are_parsed() -> None:
    assert set(rfc8448.TRACES) == set(ALL_TRACES)
    assert [trace(k).section for k in ALL_TRACES] == [3, 4, 5, 6, 7]
    assert trace("simple").title == "Simple 1-RTT Handshake"
    assert trace(5) is trace("hrr") is trace("HelloRetryRequest")
    assert trace("Resumed 0-RTT Handshake") is trace("resumed") is trace("0rtt")
    with pytest.raises(KeyError):
        trace("nonexistent")
    with pytest.raises(KeyError):
        trace(2)


def test_simple_trace_items_in_order() -> None:
    tr = trace("simple")
    first = tr.items[0]
    assert (first.who, first.title, first.note) == (
        "client",
        "create an ephemeral x25519 key pair",
        None,
    )
    assert list(first.fields) == ["private key", "public key"]
    assert first.line > 150
    assert [(i.who, i.title) for i in tr.items[1:3]] == [
        ("client", "construct a ClientHello handshake message"),
        ("client", "send handshake record"),
    ]
    assert tr.items[-1].title == "send alert record"
    # "(same as ...)" items are kept, note split off and wrapped headings joined.
    refs = [i for i in tr.items if i.is_reference]
    assert refs and all(i.note is not None and i.note.startswith("same as") for i in refs)
    wrapped = tr.select("client", 'extract secret "handshake"', include_references=True)
    assert [(i.title, i.note) for i in wrapped] == [
        ('extract secret "handshake"', "same as server handshake secret")
    ]
    # Items with values never carry a note.
    assert all(i.note is None for t in rfc8448.TRACES.values() for i in t.items if i.fields)


def test_simple_trace_values() -> None:
    tr = trace("simple")
    ch = tr.handshake_message("ClientHello")
    assert len(ch) == 196
    assert ch.startswith(bytes.fromhex("010000c0"))
    assert ch.endswith(bytes.fromhex("001c00024001"))
    assert tr.client_hello == ch
    assert tr.client_random == bytes.fromhex(
        "6660261ff947cea49cce6cfad687f457cf1b14531ba14131a0e8f309a1d0b9c4"
    )
    assert tr.server_random == bytes.fromhex(
        "1274991495cf425857262dde2299342c315afba9b64a87d552515614e01b045d"
    )
    server_share = tr.find("server", "create an ephemeral x25519 key pair")
    assert server_share["private key"] == bytes.fromhex(
        "5aa93ea18f4c5e4a39856f573af4ec1503bad0d5cdabaffc26c1ab4c361f86c8"
    )
    assert tr.ephemeral_private_key("server") == server_share["private key"]
    assert tr.ephemeral_public_key("client").hex().startswith("4cfdfcd178b784bf")
    assert len(tr.handshake_message("Certificate")) == 445
    assert tr.handshake_message("Finished", "client").hex().startswith("1400002080a2c0d6")
    # Multi-line hex across a page break (server private key straddles page 3/4).
    assert tr.secret("c hs traffic") == bytes.fromhex(
        "d7c28b57a857e961b5bf3e1d7b18d02757c4f97acb66a23372e5a7f3d0a71e07"
    )
    assert tr.secret("tls13 s hs traffic") == tr.secrets["server_handshake_traffic_secret"]
    assert tr.secret("early") == bytes.fromhex(
        "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"
    )
    hs_keys = tr.traffic_keys("server", "handshake")
    assert hs_keys.key == bytes.fromhex("4d15c00e47317fe99c714f8ebd92c4d1")
    assert hs_keys.iv == bytes.fromhex("18223084735f2f2d8588caaa")
    assert hs_keys.secret == tr.secret("s hs traffic")
    # The client's own write-handshake item is a reference; the server's read item is used.
    assert tr.traffic_keys("client", "handshake").key.hex() == "947fe41b60fa1bcf942d456268476e8d"
    assert tr.ticket_nonce == b"\x00\x00"
    # Zero salt and empty hash.
    early = tr.find("server", 'extract secret "early"')
    assert early["salt"] == early["IKM"] == bytes(32)
    assert tr.field("server", 'calculate finished "tls13 finished"', "hash") == b""


def test_find_and_select() -> None:
    tr = trace("hrr")
    assert tr.find("client", "create an ephemeral", nth=1)["public key"][0] == 0x04
    assert tr.find("client", "create an ephemeral", nth=-1) == tr.find(
        "client", "create an ephemeral P-256 key pair"
    )
    assert [s.group for s in tr.key_shares()] == ["x25519", "P-256", "P-256"]
    assert len(tr.select(None, "construct a ClientHello")) == 2
    with pytest.raises(KeyError):
        tr.find("client", "create an ephemeral", nth=2)
    with pytest.raises(KeyError):
        tr.find("server", "no such heading")
    with pytest.raises(KeyError):
        tr.field("server", "create an ephemeral", "no such field")
    with pytest.raises(KeyError):
        tr.secret("binder_key")
    # find returns a fresh dict
    d = tr.find("server", "create an ephemeral")
    d.clear()
    assert tr.find("server", "create an ephemeral")


@pytest.mark.parametrize("key", ALL_TRACES)
def test_messages_records_and_lengths(key: str) -> None:
    tr = trace(key)
    for it in tr.items:
        assert it.who in ("client", "server")
    constructed = tr.handshake_messages()
    wire = tr.record_handshake_messages()
    # Every constructed message went out in a record, in the same order; only the resumed
    # trace prints a truncated ClientHello (without binders).
    assert [(m.who, m.name) for m in constructed] == [(m.who, m.name) for m in wire]
    for c, w in zip(constructed, wire, strict=True):
        if key == "resumed" and c.name == "ClientHello":
            assert len(c.data) == 477 and len(w.data) == 512 and w.data.startswith(c.data)
            assert tr.field("client", "calculate PSK binder", "ClientHello prefix") == c.data
        else:
            assert c.data == w.data
            assert int.from_bytes(c.data[1:4], "big") == len(c.data) - 4
    for rec in tr.records():
        assert int.from_bytes(rec.complete[3:5], "big") == len(rec.complete) - 5
        if rec.encrypted:
            # TLSCiphertext: opaque_type 23, legacy 0x0303, content + type octet + 16-octet tag
            assert rec.header[:3] == b"\x17\x03\x03"
            assert len(rec.fragment) == len(rec.payload) + 1 + 16
        else:
            assert rec.fragment == rec.payload
            assert rec.outer_type == {"handshake": 22, "change_cipher_spec": 20}[rec.content_type]
    hrr = tr.hello_retry_request
    assert (hrr is not None) == (key == "hrr")
    assert tr.server_hello[6:38] != rfc8448.HRR_RANDOM
    for share in tr.key_shares():
        assert len(share.private_key) == 32
        assert len(share.public_key) == (32 if share.group == "x25519" else 65)


def test_section_2_rsa_key() -> None:
    key = rfc8448.RSA_SERVER_KEY
    assert key["public exponent"] == b"\x01\x00\x01"
    assert len(key["modulus"]) == 128
    priv = rfc8448.rsa_server_private_key()
    assert priv.key_size == 1024
    assert priv.public_key().public_numbers().n == int.from_bytes(key["modulus"], "big")


def test_parser_rejects_bad_lengths_and_joins_page_breaks() -> None:
    good = (
        "3.  Simple 1-RTT Handshake\n\n"
        "   {client}  create an ephemeral x25519 key pair:\n\n"
        "      private key (4 octets):  01 02\n\n\n\n"
        "Thomson                  Expires March 31, 2019                 [Page 4]\n"
        "\f\n"
        "Internet-Draft               TLS 1.3 Traces               September 2018\n\n\n"
        "         03 04\n\n"
        '   {server}  extract secret "early" (same as\n      client early secret)\n'
    )
    parsed = rfc8448.parse(good).traces["simple"]
    assert parsed.items[0].fields == {"private key": b"\x01\x02\x03\x04"}
    assert (parsed.items[1].title, parsed.items[1].note) == (
        'extract secret "early"',
        "same as client early secret",
    )
    with pytest.raises(rfc8448.RFC8448ParseError, match="declares 5 octets"):
        rfc8448.parse(good.replace("(4 octets)", "(5 octets)"))
    with pytest.raises(rfc8448.RFC8448ParseError, match="unexpected line"):
        rfc8448.parse(good.replace("         03 04", "      03 04 zz"))


def test_specs_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert rfc8448.spec_path().is_file()
    monkeypatch.setenv(rfc8448.SPECS_ENV_VAR, str(tmp_path))
    assert rfc8448.specs_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=rfc8448.SPECS_ENV_VAR):
        rfc8448.load()
    monkeypatch.delenv(rfc8448.SPECS_ENV_VAR)
    shutil.copy(rfc8448.spec_path(), tmp_path / rfc8448.SPEC_FILENAME)
    monkeypatch.setenv(rfc8448.SPECS_ENV_VAR, str(tmp_path))
    reloaded = rfc8448.load()
    assert reloaded.traces["simple"].items == trace("simple").items


# --------------------------------------------------------------------------------------------
# Every HKDF invocation the traces print, checked on its own (all five traces).
# --------------------------------------------------------------------------------------------


def _label_from_title(title: str) -> bytes:
    if title.startswith(("calculate finished", "calculate PSK binder")):
        return b"finished"
    start = title.index('"tls13 ') + len('"tls13 ')
    return title[start : title.index('"', start)].encode()


@pytest.mark.parametrize("key", ALL_TRACES)
def test_every_printed_hkdf_step(key: str) -> None:
    tr = trace(key)
    checked = 0
    for it in tr.items:
        f = it.fields
        if "IKM" in f:  # extract secret "...": salt, IKM -> secret
            assert _extract(f["salt"], f["IKM"]) == f["secret"], it.line
            checked += 1
        if "info" in f:  # HKDF-Expand-Label(PRK, label, hash, len(expanded))
            info = _hkdf_label(_label_from_title(it.title), f["hash"], len(f["expanded"]))
            assert f["info"] == info, it.line
            got = HKDFExpand(hashes.SHA256(), len(f["expanded"]), f["info"]).derive(f["PRK"])
            assert got == f["expanded"], it.line
            checked += 1
        if "finished" in f:  # HMAC(finished_key, hash of transcript)
            transcript_hash = f.get("binder hash")
            if transcript_hash is not None:
                assert transcript_hash == _h(f["ClientHello prefix"])
                mac = hmac.new(f["expanded"], transcript_hash, "sha256").digest()
                assert mac == f["finished"]
        if "key info" in f:
            assert f["key info"] == _hkdf_label(b"key", b"", KEY_LEN)
            assert f["iv info"] == _hkdf_label(b"iv", b"", IV_LEN)
            assert _expand_label(f["PRK"], b"key", b"", KEY_LEN) == f["key expanded"]
            assert _expand_label(f["PRK"], b"iv", b"", IV_LEN) == f["iv expanded"]
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize("key", ALL_TRACES)
def test_vectors_module_helpers_match_trace(key: str) -> None:
    """rfc8448.expand_label/derive_secret (for later tests) reproduce the trace too."""
    tr = trace(key)
    s = tr.secrets
    msgs = [m.data for m in tr.record_handshake_messages()]
    assert (
        rfc8448.derive_secret("sha256", s["early_secret"], "derived", b"")
        == s["derived_for_handshake"]
    )
    assert rfc8448.hkdf_extract("sha256", s["derived_for_master"], None) == s["master_secret"]
    assert rfc8448.hkdf_extract("SHA-256", None, s["psk"]) == s["early_secret"]
    if key != "hrr":
        sh_idx = next(i for i, m in enumerate(msgs) if m[0] == 2)
        assert (
            rfc8448.derive_secret(
                "sha256", s["handshake_secret"], b"c hs traffic", msgs[: sh_idx + 1]
            )
            == s["client_handshake_traffic_secret"]
        )
    else:
        mh = rfc8448.message_hash("sha256", msgs[0])
        assert mh == _message_hash(msgs[0])
        assert (
            rfc8448.derive_secret("sha256", s["handshake_secret"], "s hs traffic", [mh, *msgs[1:4]])
            == s["server_handshake_traffic_secret"]
        )
    for sender in ("client", "server"):
        tk = tr.traffic_keys(sender, "application")
        assert rfc8448.expand_label("sha256", tk.secret, "key", b"", 16) == tk.key
        assert rfc8448.expand_label("sha256", tk.secret, b"iv", b"", 12) == tk.iv
    assert rfc8448.transcript_hash("sha256") == _h(b"")
    with pytest.raises(ValueError, match="prefix"):
        rfc8448.expand_label("sha256", s["master_secret"], "tls13 key", b"", 16)
    with pytest.raises(ValueError, match="unsupported hash"):
        rfc8448.expand_label("md5", s["master_secret"], "key", b"", 16)
    assert len(rfc8448.expand_label("sha384", bytes(48), "key", b"", 32)) == 32


# --------------------------------------------------------------------------------------------
# Independent key schedule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ALL_TRACES)
def test_ecdhe_from_private_keys(key: str) -> None:
    tr = trace(key)
    for share in tr.key_shares():
        if share.group == "x25519":
            priv = x25519.X25519PrivateKey.from_private_bytes(share.private_key)
            assert priv.public_key().public_bytes_raw() == share.public_key
        else:
            ec_priv = ec.derive_private_key(
                int.from_bytes(share.private_key, "big"), ec.SECP256R1()
            )
            point = ec_priv.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
            assert point == share.public_key
    assert _ecdhe(tr) == tr.ecdhe_shared_secret


def test_simple_key_schedule_step_by_step() -> None:
    tr = trace("simple")
    s = tr.secrets
    ch = tr.handshake_message("ClientHello")
    sh = tr.handshake_message("ServerHello")
    ee = tr.handshake_message("EncryptedExtensions")
    cert = tr.handshake_message("Certificate")
    cv = tr.handshake_message("CertificateVerify")
    sfin = tr.handshake_message("Finished", "server")
    cfin = tr.handshake_message("Finished", "client")

    shared = x25519.X25519PrivateKey.from_private_bytes(
        tr.ephemeral_private_key("client")
    ).exchange(x25519.X25519PublicKey.from_public_bytes(tr.ephemeral_public_key("server")))
    assert shared == s["ecdhe"]

    early = _extract(ZEROS, ZEROS)
    assert early == s["early_secret"]
    derived = _derive_secret(early, b"derived", [])
    assert derived == s["derived_for_handshake"]
    hs = _extract(derived, shared)
    assert hs == s["handshake_secret"]
    c_hs = _derive_secret(hs, b"c hs traffic", [ch, sh])
    s_hs = _derive_secret(hs, b"s hs traffic", [ch, sh])
    assert c_hs == s["client_handshake_traffic_secret"]
    assert s_hs == s["server_handshake_traffic_secret"]
    assert tr.field("server", 'derive secret "tls13 c hs traffic"', "hash") == _h(ch + sh)

    derived2 = _derive_secret(hs, b"derived", [])
    assert derived2 == s["derived_for_master"]
    master = _extract(derived2, ZEROS)
    assert master == s["master_secret"]
    server_flight = [ch, sh, ee, cert, cv, sfin]
    c_ap = _derive_secret(master, b"c ap traffic", server_flight)
    s_ap = _derive_secret(master, b"s ap traffic", server_flight)
    assert c_ap == s["client_application_traffic_secret_0"]
    assert s_ap == s["server_application_traffic_secret_0"]
    assert _derive_secret(master, b"exp master", server_flight) == s["exporter_master_secret"]
    res_master = _derive_secret(master, b"res master", [*server_flight, cfin])
    assert res_master == s["resumption_master_secret"]

    # Finished keys and verify_data (RFC 9846 §4.4.4).
    s_fk = _expand_label(s_hs, b"finished", b"", HASH_LEN)
    c_fk = _expand_label(c_hs, b"finished", b"", HASH_LEN)
    assert s_fk == s["server_finished_key"]
    assert c_fk == s["client_finished_key"]
    server_verify = hmac.new(s_fk, _h(ch + sh + ee + cert + cv), "sha256").digest()
    assert server_verify == s["server_verify_data"] == sfin[4:]
    client_verify = hmac.new(c_fk, _h(b"".join(server_flight)), "sha256").digest()
    assert client_verify == s["client_verify_data"] == cfin[4:]
    assert cfin == b"\x14\x00\x00\x20" + client_verify

    # Traffic keys / IVs for each direction and epoch.
    for sender, phase, secret in [
        ("client", "handshake", c_hs),
        ("server", "handshake", s_hs),
        ("client", "application", c_ap),
        ("server", "application", s_ap),
    ]:
        tk = tr.traffic_keys(sender, phase)  # type: ignore[arg-type]
        assert tk.secret == secret
        assert _expand_label(secret, b"key", b"", KEY_LEN) == tk.key
        assert _expand_label(secret, b"iv", b"", IV_LEN) == tk.iv

    # The ticket's PSK (used by the resumed trace).
    nst = tr.handshake_message("NewSessionTicket")
    nonce = _ticket_nonce(nst)
    assert nonce == tr.ticket_nonce == b"\x00\x00"
    psk = _expand_label(res_master, b"resumption", nonce, HASH_LEN)
    assert psk == s["resumption_psk"]


def test_resumed_psk_binder_chain() -> None:
    simple, tr = trace("simple"), trace("resumed")
    s = tr.secrets
    # res master (simple) + ticket nonce -> PSK -> the resumed trace's early secret.
    psk = _expand_label(
        simple.secret("res master"),
        b"resumption",
        _ticket_nonce(simple.handshake_message("NewSessionTicket")),
        HASH_LEN,
    )
    assert psk == simple.secret("resumption_psk") == s["psk"]
    early = _extract(ZEROS, psk)
    assert early == s["early_secret"]
    binder_key = _derive_secret(early, b"res binder", [])
    assert binder_key == s["binder_key"]
    binder_fk = _expand_label(binder_key, b"finished", b"", HASH_LEN)
    assert binder_fk == s["binder_finished_key"]

    ch = tr.client_hello  # complete, as sent
    offset = _psk_binders_offset(ch)
    truncated = ch[:offset]
    assert truncated == tr.handshake_message("ClientHello")
    assert _h(truncated) == tr.field("client", "calculate PSK binder", "binder hash")
    binder = hmac.new(binder_fk, _h(truncated), "sha256").digest()
    assert binder == s["binder"]
    # PskBinderEntry list on the wire: uint16 length, then <1>-prefixed binder.
    assert ch[offset:] == b"\x00\x21\x20" + binder

    assert _derive_secret(early, b"c e traffic", [ch]) == s["client_early_traffic_secret"]
    assert _derive_secret(early, b"e exp master", [ch]) == s["early_exporter_master_secret"]
    early_keys = tr.traffic_keys("client", "early")
    assert early_keys.secret == s["client_early_traffic_secret"]
    assert _expand_label(early_keys.secret, b"key", b"", KEY_LEN) == early_keys.key

    # Handshake secret mixes the fresh ECDHE into the PSK-based early secret.
    hs = _extract(_derive_secret(early, b"derived", []), _ecdhe(tr))
    assert hs == s["handshake_secret"]
    sh = tr.server_hello
    assert _derive_secret(hs, b"c hs traffic", [ch, sh]) == s["client_handshake_traffic_secret"]


def test_hrr_message_hash_transcript() -> None:
    tr = trace("hrr")
    s = tr.secrets
    ch1, hrr, ch2, sh = (m.data for m in tr.record_handshake_messages()[:4])
    assert ch1 == tr.handshake_message("ClientHello", nth=0)
    assert ch2 == tr.handshake_message("ClientHello", nth=1)
    assert hrr == tr.hello_retry_request
    assert hrr[6:38] == _h(b"HelloRetryRequest")
    assert sh == tr.server_hello == tr.handshake_message("ServerHello", nth=1)

    synthetic = _message_hash(ch1)
    assert synthetic[:4] == bytes.fromhex("fe000020")
    th = _h(synthetic + hrr + ch2 + sh)
    assert th == tr.field("server", 'derive secret "tls13 c hs traffic"', "hash")
    # A transcript without the substitution would not match.
    assert _h(ch1 + hrr + ch2 + sh) != th

    # P-256 ECDHE from the client's second key share and the server's share.
    client_share = tr.key_share("client", 1)
    assert client_share.group == "P-256"
    ecdhe = _ecdhe(tr)
    assert ecdhe == s["ecdhe"]
    early = _extract(ZEROS, ZEROS)
    hs = _extract(_derive_secret(early, b"derived", []), ecdhe)
    assert hs == s["handshake_secret"]
    c_hs = _expand_label(hs, b"c hs traffic", th, HASH_LEN)
    s_hs = _expand_label(hs, b"s hs traffic", th, HASH_LEN)
    assert c_hs == s["client_handshake_traffic_secret"]
    assert s_hs == s["server_handshake_traffic_secret"]

    rest = [m.data for m in tr.record_handshake_messages()[4:]]
    ee, cert, cv, sfin, cfin = rest
    master = _extract(_derive_secret(hs, b"derived", []), ZEROS)
    flight = [synthetic, hrr, ch2, sh, ee, cert, cv, sfin]
    assert (
        _derive_secret(master, b"c ap traffic", flight) == s["client_application_traffic_secret_0"]
    )
    assert _finished_mac(s_hs, flight[:-1]) == sfin[4:]
    assert _finished_mac(c_hs, flight) == cfin[4:] == s["client_verify_data"]
    assert _derive_secret(master, b"res master", [*flight, cfin]) == s["resumption_master_secret"]


@pytest.mark.parametrize("key", ALL_TRACES)
def test_full_key_schedule_recomputed(key: str) -> None:
    """Every value the trace shows equals the independently computed one, and none is left
    unchecked."""
    tr = trace(key)
    expected = tr.secrets
    computed = _compute_schedule(tr)
    missing = set(expected) - set(computed)
    assert not missing, f"trace values without an independent check: {sorted(missing)}"
    for name, value in expected.items():
        assert computed[name] == value, name
    # Finished messages on the wire carry exactly the verify_data.
    for who in ("client", "server"):
        fin = tr.handshake_message("Finished", who)
        assert fin[4:] == computed[f"{who}_verify_data"]


# --------------------------------------------------------------------------------------------
# Records and signatures: the parsed bytes decrypt/verify under the recomputed keys.
# --------------------------------------------------------------------------------------------

_INNER_TYPES = {"handshake": 22, "application_data": 23, "alert": 21}


@pytest.mark.parametrize("key", ALL_TRACES)
def test_encrypted_records_decrypt(key: str) -> None:
    tr = trace(key)
    sched = _compute_schedule(tr)
    epochs = {
        who: [
            (sched[f"{who}_{phase}_key"], sched[f"{who}_{phase}_iv"])
            for phase in ("early", "handshake", "application")
            if f"{who}_{phase}_key" in sched
        ]
        for who in ("client", "server")
    }
    state = {"client": [0, 0], "server": [0, 0]}  # epoch index, sequence number
    decrypted = 0
    for rec in tr.records():
        if not rec.encrypted:
            continue
        epoch, seq = state[rec.who]
        while True:
            write_key, iv = epochs[rec.who][epoch]
            nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(IV_LEN, "big")
            try:
                inner = AESGCM(write_key).decrypt(nonce, rec.fragment, rec.header)
                break
            except InvalidTag:
                epoch, seq = epoch + 1, 0  # the sender switched keys
                assert epoch < len(epochs[rec.who]), f"undecryptable {rec.who} record"
        state[rec.who] = [epoch, seq + 1]
        assert inner == rec.payload + bytes([_INNER_TYPES[rec.content_type]])
        decrypted += 1
    assert decrypted >= 4


def _leaf_public_key(certificate_msg: bytes) -> object:
    # Certificate: context<0..255>, certificate_list<0..2^24-1> of {cert_data<1..2^24-1>, ...}
    pos = 4 + 1 + certificate_msg[4] + 3
    n = int.from_bytes(certificate_msg[pos : pos + 3], "big")
    cert = x509.load_der_x509_certificate(certificate_msg[pos + 3 : pos + 3 + n])
    return cert.public_key()


@pytest.mark.parametrize("key", ALL_TRACES)
def test_certificate_verify_signatures(key: str) -> None:
    tr = trace(key)
    msgs = _handshake_transcript(tr)
    transcript: list[bytes] = []
    leaf: dict[str, object] = {}
    verified = 0
    for m in msgs:
        if m.is_hello_retry_request:
            transcript = [_message_hash(transcript[0])]
        if m.name == "Certificate":
            leaf[m.who] = _leaf_public_key(m.data)
        if m.name == "CertificateVerify":
            scheme = int.from_bytes(m.data[4:6], "big")
            sig = m.data[8 : 8 + int.from_bytes(m.data[6:8], "big")]
            context = f"TLS 1.3, {m.who} CertificateVerify".encode()
            content = b" " * 64 + context + b"\x00" + _h(b"".join(transcript))
            pub = leaf[m.who]
            if scheme == 0x0804:  # rsa_pss_rsae_sha256
                assert isinstance(pub, rsa.RSAPublicKey)
                pss = padding.PSS(padding.MGF1(hashes.SHA256()), HASH_LEN)
                pub.verify(sig, content, pss, hashes.SHA256())
            else:
                assert scheme == 0x0403  # ecdsa_secp256r1_sha256
                assert isinstance(pub, ec.EllipticCurvePublicKey)
                pub.verify(sig, content, ec.ECDSA(hashes.SHA256()))
            verified += 1
        transcript.append(m.data)
    assert verified == (2 if key == "client_auth" else 0 if key == "resumed" else 1)
    if key in ("simple", "hrr", "compat"):
        assert isinstance(leaf["server"], rsa.RSAPublicKey)
        modulus = leaf["server"].public_numbers().n
        assert modulus == int.from_bytes(rfc8448.RSA_SERVER_KEY["modulus"], "big")
