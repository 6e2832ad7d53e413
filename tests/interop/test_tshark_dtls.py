"""tshark 4.4 decrypts longtls DTLS 1.3 sessions with longtls' key log (issue 11).

Debian 12's tshark 4.0 cannot parse the DTLS 1.3 unified header (RFC 9147
§4), so it never finds a protected record (test_tshark.py pins that).
Wireshark 4.4 can: it removes the record number encryption (§4.2.3), derives
the record keys itself from the SSLKEYLOGFILE secrets with the "dtls13"
labels (§5.9) and follows a KeyUpdate (§8).  `make peers` unpacks Debian
trixie's tshark 4.4 into the peers cache (scripts/install-tshark44.sh,
docs/interop-tshark.md); ``require_tshark44()`` fails the test when it is not
there.

- A real capture: ``longtls serve --dtls --echo`` and ``longtls connect
  --dtls`` on loopback, captured by dumpcap, decrypted with the client's key
  log: the server's encrypted flight, the client's Finished and the exact
  application bytes both ways.
- Sans-I/O sessions (tests/helpers/dtls_link.py) written to a pcap file
  (tests/helpers/pcap.py), to control what happens: with a key log whose
  secrets are wrong nothing past the hellos opens; after a standard
  KeyUpdate tshark still decrypts (it derives "traffic upd" itself); after
  an Extended Key Update it decrypts the first generation only (the EKU
  messages themselves travel in epoch 3), because Wireshark knows nothing of
  EKU: the next generation's secrets come from a fresh key exchange it never
  sees, not from "traffic upd", so the records of the new epoch stay
  encrypted.  That is expected, not a longtls bug.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from helpers.capture import loopback_capture
from helpers.cli import LONGTLS, summary
from helpers.dtls_link import CLIENT_ADDRESS, Clock, DatagramLink
from helpers.pair import configs
from helpers.pcap import PcapWriter
from helpers.peers import LOOPBACK, free_port, require_tshark44, run, start_process
from helpers.pki import PkiFiles
from longtls.constants import HandshakeType, NamedGroup
from longtls.dtls_connection import DTLSConnection

pytestmark = pytest.mark.interop

SERVER = (LOOPBACK, 4433)
CLIENT = (socket.inet_ntoa(CLIENT_ADDRESS[:4]), int.from_bytes(CLIENT_ADDRESS[4:], "big"))
# What tshark decrypts in the server's flight and the client's (RFC 9846 §2;
# no client certificate is requested).
SERVER_ENCRYPTED = {HandshakeType.encrypted_extensions, HandshakeType.certificate_verify, HandshakeType.finished}
HELLOS = {HandshakeType.client_hello, HandshakeType.server_hello}


def tshark_frames(pcap: Path, port: int, keylog: Path, *fields: str) -> list[list[str]]:
    """One row per frame: the values of ``fields`` as tshark 4.4 dissects the
    capture with ``keylog`` (multiple values of a field joined by ",")."""
    args = [require_tshark44(), "-r", str(pcap), "-d", f"udp.port=={port},dtls", "-o", f"tls.keylog_file:{keylog}",
            "-T", "fields", "-E", "separator=|"]  # fmt: skip
    for name in fields:
        args += ["-e", name]
    out = run(args, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def handshake_types(rows: list[list[str]], column: int = 0) -> set[int]:
    return {int(t) for row in rows for t in row[column].split(",") if t}


def payloads(rows: list[list[str]], column: int) -> list[bytes]:
    """The decrypted application data of each frame that has some (tshark's
    data.data: the plaintext of records it could open)."""
    return [bytes.fromhex(part) for row in rows for part in row[column].split(",") if part]


def write_keylog(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def wrong_secrets(lines: list[str]) -> list[str]:
    """The same labels and client_random, every secret with its bits flipped."""
    out = []
    for line in lines:
        label, client_random, secret = line.split()
        out.append(f"{label} {client_random} {bytes(b ^ 0xFF for b in bytes.fromhex(secret)).hex()}")
    return out


# -- a real capture of the command line tool ------------------------------------------------


def test_tshark44_decrypts_a_captured_longtls_dtls_session(tmp_pki_files: Any, tmp_path: Path) -> None:
    files: PkiFiles = tmp_pki_files("ecdsa-p256")
    port = free_port(socket.SOCK_DGRAM)
    server_log, client_log, pcap = tmp_path / "server.keys", tmp_path / "client.keys", tmp_path / "dtls.pcapng"
    sent = b"dtls13-captured-plaintext-91c2\n"
    server_args = [
        *LONGTLS, "serve", "--dtls", "--echo", "--port", str(port), "--no-eku", "--keylog", str(server_log),
        "--cert", str(files.server.chain), "--key", str(files.server.key),
    ]  # fmt: skip
    with loopback_capture(f"udp port {port}", pcap), start_process(server_args, ready_pattern=r"serving \(echo, DTLS"):
        result = run(
            [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--dtls", "--no-eku", "--groups", "x25519",
             "--ca", str(files.ca), "--keylog", str(client_log), "--summary", "json"],
            input=sent.decode(), timeout=30,
        )  # fmt: skip
        assert summary(result.stderr)[0]["version"] == "DTLSv1.3"
        assert result.stdout.encode() == sent  # the echo
    assert sorted(client_log.read_text().splitlines()) == sorted(server_log.read_text().splitlines())

    rows = tshark_frames(pcap, port, client_log, "udp.srcport", "dtls.handshake.type", "data.data")
    from_server = [row for row in rows if row[0] == str(port)]
    from_client = [row for row in rows if row[0] != str(port)]
    # The server's encrypted flight (the certificate may travel compressed,
    # RFC 8879) and the client's Finished, under the handshake secrets.
    server_types = handshake_types(from_server, 1)
    assert server_types >= SERVER_ENCRYPTED, rows
    assert server_types & {HandshakeType.certificate, HandshakeType.compressed_certificate}, rows
    assert HandshakeType.finished in handshake_types(from_client, 1), rows
    # The application data, exactly, both ways (the server echoes it).
    assert b"".join(payloads(from_client, 2)) == sent, rows
    assert b"".join(payloads(from_server, 2)) == sent, rows


# -- sans-I/O sessions written to a pcap file -------------------------------------------------


class TappedLink:
    """A client and a server DTLSConnection on a DatagramLink whose every
    datagram (HelloRetryRequests included) also goes into a pcap file, with
    both ends' key log lines."""

    def __init__(self, *, eku_profile: str | None) -> None:
        self.clock = Clock()
        self.pcap = PcapWriter()
        self.client_log: list[str] = []
        self.server_log: list[str] = []
        eku = eku_profile is not None
        kwargs: dict[str, Any] = {"client_eku_profile": eku_profile, "server_eku_profile": eku_profile} if eku else {}
        client_cfg, server_cfg, _ = configs(
            "ecdsa-p256", client_now=self.clock, server_now=self.clock,
            # one X25519 key share keeps the first ClientHello in one datagram
            client_key_share_groups=(NamedGroup.x25519,),
            # no certificate compression offered: tshark shows the Certificate itself
            client_certificate_compression=(),
            client_extended_key_update=eku, server_extended_key_update=eku,
            client_keylog=self.client_log.append, server_keylog=self.server_log.append, **kwargs,
        )  # fmt: skip
        self.server_certificate = server_cfg.certificate_chain[0]
        self.link = DatagramLink(
            DTLSConnection(client_cfg, extended_key_update=eku), server_cfg, self.clock, drop=self._tap,
            extended_key_update=eku,
        )
        self.link.handshake()
        self.link.run()

    def _tap(self, direction: str, datagram: bytes, index: int) -> bool:
        src, dst = (CLIENT, SERVER) if direction == "c2s" else (SERVER, CLIENT)
        self.pcap.add(self.clock.now, src, dst, datagram)
        return False  # the tap drops nothing

    @property
    def server(self) -> DTLSConnection:
        assert self.link.server is not None
        return self.link.server

    def exchange(self, client_data: bytes, server_data: bytes) -> range:
        """Each end sends one datagram; the indexes of the frames that carry them."""
        first = len(self.pcap.packets)
        self.link.collect()
        self.link.client.send(client_data)
        self.server.send(server_data)
        self.link.run()
        assert self.link.received("server")[-1] == client_data and self.link.received("client")[-1] == server_data
        return range(first, len(self.pcap.packets))

    def dissect(self, tmp_path: Path, keylog_lines: list[str], *fields: str) -> list[list[str]]:
        pcap = tmp_path / "session.pcap"
        self.pcap.write(pcap)
        keylog = write_keylog(tmp_path / "session.keys", keylog_lines)
        rows = tshark_frames(pcap, SERVER[1], keylog, *fields)
        assert len(rows) == len(self.pcap.packets), rows
        return rows


GENERATION_0 = (b"client says: generation 0 e5a1", b"server says: generation 0 77d0")
GENERATION_1 = (b"client says: generation 1 c3f8", b"server says: generation 1 1b92")


def test_tshark44_decrypts_the_handshake_and_data_and_follows_a_key_update(tmp_path: Path) -> None:
    session = TappedLink(eku_profile=None)
    before = session.exchange(*GENERATION_0)
    session.link.client.update_keys(request_peer_update=True)
    session.link.run(lambda: not session.link.client.key_update_pending and not session.server.key_update_pending)
    session.link.run()
    assert session.link.client.write_epoch == session.server.write_epoch == 4
    after = session.exchange(*GENERATION_1)
    assert sorted(session.client_log) == sorted(session.server_log)

    rows = session.dissect(tmp_path, session.client_log, "dtls.handshake.type", "data.data", "dtls.handshake.certificate")
    # The server's certificate, decrypted from its epoch-2 flight, is ours, byte for byte.
    certificates = {c for row in rows for c in row[2].split(",") if c}
    assert certificates == {session.server_certificate.public_bytes(Encoding.DER).hex()}, certificates
    assert x509.load_der_x509_certificate(bytes.fromhex(certificates.pop())).subject == session.server_certificate.subject
    assert SERVER_ENCRYPTED | {HandshakeType.certificate, HandshakeType.key_update} <= handshake_types(rows), rows
    # Every application datagram, exactly, in both generations: Wireshark
    # follows the standard KeyUpdate (RFC 9147 §8) by itself.
    assert [payloads([rows[i]], 1) for i in before] == [[GENERATION_0[0]], [GENERATION_0[1]]], rows
    assert [payloads([rows[i]], 1) for i in after] == [[GENERATION_1[0]], [GENERATION_1[1]]], rows

    # With the right client_random but wrong secrets, nothing past the hellos opens.
    blind = session.dissect(tmp_path, wrong_secrets(session.client_log), "dtls.handshake.type", "data.data")
    assert handshake_types(blind) == HELLOS, blind
    assert payloads(blind, 1) == [], blind


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10", "draft-05"])
def test_tshark44_decrypts_only_the_generation_before_an_extended_key_update(profile: str, tmp_path: Path) -> None:
    session = TappedLink(eku_profile=profile)
    before = session.exchange(*GENERATION_0)
    eku_start = len(session.pcap.packets)
    session.link.client.extended_key_update()
    client, server = session.link.client, session.server
    assert client.eku is not None and server.eku is not None
    session.link.run(lambda: client.key_generation == server.key_generation == 1
                     and not client.eku.in_progress and not server.eku.in_progress)  # type: ignore[union-attr]  # fmt: skip
    session.link.run()
    eku_frames = range(eku_start, len(session.pcap.packets))
    after = session.exchange(*GENERATION_1)
    # longtls logs the new generation's secrets, and Wireshark reads the file, but
    # cannot place them: it only expects secrets derived by a KeyUpdate.
    assert {"CLIENT_TRAFFIC_SECRET_1", "SERVER_TRAFFIC_SECRET_1"} <= {line.split()[0] for line in session.client_log}

    # dtls.enc_content: the ciphertext of a record tshark could not open.
    rows = session.dissect(tmp_path, session.client_log, "dtls.handshake.type", "data.data", "dtls.enc_content")
    assert SERVER_ENCRYPTED | {HandshakeType.certificate} <= handshake_types(rows), rows
    assert [payloads([rows[i]], 1) for i in before] == [[GENERATION_0[0]], [GENERATION_0[1]]], rows
    assert all(not rows[i][2] for i in before), rows
    # The client's first EKU message goes in a record of the old epoch, which
    # tshark opens (a handshake message of a type it does not name).
    assert eku_frames and not rows[eku_frames[0]][2], rows
    # The new generation's records stay encrypted: the ciphertext is there,
    # no plaintext, and the bytes sent appear nowhere in the dissection.
    for i in after:
        assert rows[i][2] and not rows[i][1], rows[i]
    everything = "\n".join("|".join(row) for row in rows)
    for data in GENERATION_1:
        assert data.hex() not in everything
