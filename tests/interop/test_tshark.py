"""tshark decrypts a captured longtls session with longtls' own key log.

A longtls client and a longtls server talk over loopback while tshark
captures the port; both write SSLKEYLOGFILE lines (Configuration.keylog).
tshark (Wireshark 4.0) then decrypts the capture with that key log alone: the
application data both ways, before and after a KeyUpdate, must show up in
clear.  This checks the key log independently of longtls: Wireshark derives
the record keys itself from the logged secrets.

A second test does the same with openssl s_server as the peer, so the
secrets are checked against a session longtls did not run both ends of.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import LONGTLS, summary
from helpers.driver import LongtlsServer, SocketDriver, client_config, connect, server_config
from helpers.peers import LOOPBACK, PeerProcess, free_port, require_binary, run, start_process
from helpers.pki import PkiFiles
from longtls.constants import CipherSuite, NamedGroup

CLIENT_LINES = [b"GET /longtls-client-plaintext-1 HTTP/1.0\n", b"client-after-keyupdate-7d1f\n"]
SERVER_LINES = [b"server-plaintext-reply-3a9c\n", b"server-after-keyupdate-b62e\n"]
KEYLOG_LABELS = {
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET",
}


class Capture:
    """tshark capturing one TCP (or UDP) port on loopback into a pcapng file."""

    def __init__(self, port: int, path: Path, transport: str = "tcp") -> None:
        self.port = port
        self.path = path
        self._cm = start_process(
            ["tshark", "-i", "lo", "-f", f"{transport} port {port}", "-w", str(path)],
            ready_pattern=r"Capture started",
            timeout=15,
        )
        self.proc: PeerProcess | None = None

    def __enter__(self) -> Capture:
        self.proc = self._cm.__enter__()
        return self

    def stop(self) -> None:
        """SIGINT: tshark tells dumpcap to stop and flushes the file."""
        assert self.proc is not None
        # dumpcap hands packets over in batches (libpcap buffer timeout);
        # give the last ones time to arrive before stopping.
        time.sleep(1.5)
        if self.proc.proc.poll() is None:
            self.proc.proc.send_signal(signal.SIGINT)
            self.proc.wait(15)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)  # type: ignore[arg-type]


def decode_as_tls(port: int) -> list[str]:
    """tshark's "Decode As": the server's port is TLS, whatever its heuristics say."""
    return ["-d", f"tcp.port=={port},tls"]


def tls_stream(pcap: Path, port: int) -> str:
    """The index of the TCP connection that carries TLS.

    Not always 0: a port probe (a peer's readiness check) can be the first
    connection in the capture.
    """
    streams = run(
        ["tshark", "-r", str(pcap), *decode_as_tls(port), "-Y", "tls", "-T", "fields", "-e", "tcp.stream"],
        timeout=60,
    )
    return (streams.stdout.split() or ["0"])[0]


def decrypted_stream(pcap: Path, keylog: Path, port: int) -> tuple[str, str]:
    """(follow,tls output, hex dump of decrypted records) for the capture."""
    follow = run(
        ["tshark", "-r", str(pcap), *decode_as_tls(port), "-o", f"tls.keylog_file:{keylog}", "-q", "-z",
         f"follow,tls,ascii,{tls_stream(pcap, port)}"],
        timeout=60,
    ).stdout
    dump = run(
        ["tshark", "-r", str(pcap), *decode_as_tls(port), "-o", f"tls.keylog_file:{keylog}", "-Y", "tls", "-x"],
        timeout=60,
    ).stdout
    return follow, dump


def assert_capture_complete(pcap: Path) -> None:
    """The capture holds the whole TCP connection (SYN to FIN or RST): a
    failure here is a capture problem, not a decryption one."""
    packets = run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "tcp.flags.str"], timeout=60).stdout
    assert "S" in packets and ("F" in packets or "R" in packets), f"capture incomplete:\n{packets}"


def assert_plaintext_visible(pcap: Path, keylog: Path, lines: list[bytes], port: int) -> None:
    assert_capture_complete(pcap)
    follow, dump = decrypted_stream(pcap, keylog, port)
    for line in lines:
        if line.decode().strip() not in follow:
            packets = run(["tshark", "-r", str(pcap), *decode_as_tls(port)], timeout=60).stdout
            raise AssertionError(f"{line!r} not decrypted by tshark:\n{follow}\nthe capture:\n{packets}")
    assert "Decrypted TLS" in dump, dump[-3000:]
    # Without the key log, tshark sees none of it.
    blind = run(
        ["tshark", "-r", str(pcap), *decode_as_tls(port), "-q", "-z", f"follow,tls,ascii,{tls_stream(pcap, port)}"],
        timeout=60,
    ).stdout
    for line in lines:
        assert line.decode().strip() not in blind, blind


def _keylog_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def server_side(drv: SocketDriver) -> None:
    assert drv.recv_until(b"\n") == CLIENT_LINES[0]
    drv.send(SERVER_LINES[0])
    assert drv.recv_until(b"\n") == CLIENT_LINES[1]  # after the client's KeyUpdate
    assert [e.generation for e in drv.key_updates("receive")] == [1]
    drv.send(SERVER_LINES[1])  # after answering it


@pytest.mark.parametrize("suite", list(CipherSuite), ids=[s.name for s in CipherSuite])
def test_tshark_decrypts_longtls_session_with_key_log(pki: Any, tmp_path: Path, suite: CipherSuite) -> None:
    require_binary("tshark")
    bundle = pki("ecdsa-p256")
    client_keylog = tmp_path / "client.keys"
    server_keylog = tmp_path / "server.keys"
    pcap = tmp_path / "longtls.pcapng"
    # EKU (longtls' default) has no Wireshark support: use the classic KeyUpdate.
    ccfg = client_config(bundle.ca, cipher_suites=[suite], extended_key_update=False)
    ccfg.set_keylog_file(client_keylog)
    # The server lists the suite too: the CCM suites are on request only.
    scfg = server_config(bundle.server, extended_key_update=False, cipher_suites=[suite])
    scfg.set_keylog_file(server_keylog)

    with LongtlsServer(scfg, server_side) as server, Capture(server.port, pcap) as capture:
        drv = connect(ccfg, server.port)
        try:
            done = drv.handshake()
            assert done.cipher_suite == suite
            drv.send(CLIENT_LINES[0])
            assert drv.recv_until(b"\n") == SERVER_LINES[0]
            drv.update_keys(request_peer_update=True)
            drv.send(CLIENT_LINES[1])
            assert drv.recv_until(b"\n") == SERVER_LINES[1]
            assert [e.generation for e in drv.key_updates("receive")] == [1]
        finally:
            drv.close()
        server.join()
        capture.stop()

    # Both ends logged the same secrets, for the same client_random.
    client_lines = _keylog_lines(client_keylog)
    server_lines = _keylog_lines(server_keylog)
    assert {label for label, _, _ in client_lines} >= KEYLOG_LABELS | {
        "CLIENT_TRAFFIC_SECRET_1", "SERVER_TRAFFIC_SECRET_1",
    }, client_lines
    assert sorted(map(tuple, client_lines)) == sorted(map(tuple, server_lines))
    assert len({random for _, random, _ in client_lines}) == 1
    assert client_lines[0][1] == drv.conn.client_random.hex()

    assert pcap.stat().st_size > 0
    assert_plaintext_visible(pcap, client_keylog, CLIENT_LINES + SERVER_LINES, server.port)


def test_tshark_decrypts_longtls_client_to_openssl_with_hello_retry(pki: Any, tmp_path: Path) -> None:
    """longtls client, openssl s_server (HelloRetryRequest to secp384r1): only
    longtls' key log is given to tshark."""
    require_binary("tshark")
    bundle = pki("ecdsa-p256")
    files = bundle.write_pem(tmp_path / "pki")
    keylog = tmp_path / "client.keys"
    pcap = tmp_path / "openssl.pcapng"
    cfg = client_config(bundle.ca)
    cfg.set_keylog_file(keylog)
    port = free_port()
    s_server = [
        "openssl", "s_server", "-accept", f"{LOOPBACK}:{port}", "-naccept", "1",
        "-cert", str(files.server.cert), "-key", str(files.server.key), "-tls1_3", "-groups", "P-384",
    ]  # fmt: skip
    with Capture(port, pcap) as capture, start_process(s_server, ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(cfg, port)
        try:
            done = drv.handshake()
            assert done.group == NamedGroup.secp384r1
            assert drv.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]
            drv.send(CLIENT_LINES[0])
            srv.wait_for_output(r"longtls-client-plaintext-1")
            srv.write(SERVER_LINES[0].decode())
            assert drv.recv_until(b"\n") == SERVER_LINES[0]
            drv.update_keys(request_peer_update=True)
            drv.send(CLIENT_LINES[1])
            srv.wait_for_output(r"client-after-keyupdate-7d1f")
            srv.write(SERVER_LINES[1].decode())
            assert drv.recv_until(b"\n") == SERVER_LINES[1]
        finally:
            drv.close()
        srv.wait(10)
        capture.stop()
    assert_plaintext_visible(pcap, keylog, CLIENT_LINES + SERVER_LINES, port)


DTLS_LINES = ["dtls13-client-plaintext-5e1a", "dtls13-second-datagram-c04f"]


def _tshark_version() -> tuple[int, int]:
    match = re.search(r"TShark \(Wireshark\) (\d+)\.(\d+)", run(["tshark", "--version"], timeout=30).stdout)
    assert match, "cannot read tshark's version"
    return int(match[1]), int(match[2])


@pytest.mark.interop
def test_tshark_and_a_longtls_dtls13_session_with_key_log(
    tmp_pki_files: Any, tmp_path: Path
) -> None:
    """A longtls DTLS 1.3 session (serve --dtls --echo, connect --dtls; no
    EKU, x25519 so the first ClientHello fits one datagram) captured on
    loopback, with both ends' key logs.

    Wireshark 4.0 (Debian 12's tshark 4.0.17) cannot decrypt it: its DTLS
    dissector parses DTLSPlaintext (RFC 9147 §4, epoch 0) but not the
    unified header that every protected DTLS 1.3 record uses (first byte
    001CSLEE), so it never finds a record to decrypt, key log or not (it has
    no dtls unified-header field at all: ``tshark -G fields``).  This test
    pins that: it checks the hellos tshark does dissect (DTLS 1.3 in
    supported_versions, the cookie HelloRetryRequest), and that the protected
    records are left undissected.  On a tshark that parses the unified
    header it asserts that the key log decrypts the application data instead.
    """
    require_binary("tshark")
    files: PkiFiles = tmp_pki_files("ecdsa-p256")
    port = free_port(socket.SOCK_DGRAM)
    server_log, client_log = tmp_path / "server.keys", tmp_path / "client.keys"
    pcap = tmp_path / "dtls.pcapng"
    server_args = [
        *LONGTLS, "serve", "--dtls", "--echo", "--port", str(port), "--no-eku", "--keylog", str(server_log),
        "--cert", str(files.server.chain), "--key", str(files.server.key),
    ]
    with Capture(port, pcap, "udp") as capture, start_process(server_args, ready_pattern=r"serving \(echo, DTLS"):
        result = run(
            [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--dtls", "--no-eku", "--groups", "x25519",
             "--ca", str(files.ca), "--keylog", str(client_log), "--summary", "json"],
            input="\n".join(DTLS_LINES) + "\n", timeout=30,
        )
        assert summary(result.stderr)[0]["version"] == "DTLSv1.3"
        capture.stop()
    client_lines = sorted(client_log.read_text().splitlines())
    assert client_lines and sorted(server_log.read_text().splitlines()) == client_lines

    keylog = ["-d", f"udp.port=={port},dtls", "-o", f"tls.keylog_file:{client_log}"]
    fields = run(
        ["tshark", "-r", str(pcap), *keylog, "-T", "fields", "-E", "separator=|", "-e", "udp.length",
         "-e", "dtls.handshake.type", "-e", "dtls.handshake.extensions.supported_version",
         "-e", "dtls.record.content_type"],
        timeout=60,
    ).stdout.splitlines()
    rows = [line.split("|") for line in fields]
    assert len(rows) >= 8, fields  # hellos, the server's flight, the client's, data both ways
    # ClientHello, the stateless HelloRetryRequest (a ServerHello), ClientHello
    # with the cookie, ServerHello: DTLSPlaintext, all offering/choosing DTLS 1.3.
    assert [row[1].split(",")[0] for row in rows[:4]] == ["1", "2", "1", "2"], rows[:4]
    assert all("0xfefc" in row[2] for row in rows[:4]), rows[:4]
    dump = run(["tshark", "-r", str(pcap), *keylog, "-x"], timeout=60).stdout
    texts = run(
        ["tshark", "-r", str(pcap), *keylog, "-o", "data.show_as_text:TRUE", "-T", "fields", "-e", "data.text"],
        timeout=60,
    ).stdout
    if _tshark_version() < (4, 2):
        # Every datagram after the ServerHello's is protected: none dissected.
        assert all(row[3] == "" for row in rows[4:]), rows
        assert "Decrypted" not in dump
        assert not any(line in texts for line in DTLS_LINES)
    else:  # not exercised on Debian 12
        assert "Decrypted" in dump, dump[-3000:]
        for line in DTLS_LINES:
            assert line in texts, f"{line!r} not decrypted by tshark:\n{texts}"


def test_root_can_capture_on_loopback() -> None:
    """The capture tests need dumpcap on 'lo' (root, or CAP_NET_RAW)."""
    require_binary("tshark")
    out = subprocess.run(["tshark", "-D"], capture_output=True, text=True, timeout=30)
    assert re.search(r"^\d+\. lo\b", out.stdout, re.M), out.stdout + out.stderr

