"""tshark and a TLS 1.3 session with an Extended Key Update (README, "What
Wireshark can and cannot decrypt").

tests/interop/test_tshark.py shows that tshark follows longtls sessions
across a standard KeyUpdate (RFC 9846 §7.2: it derives the next generation
from the previous secret with "traffic upd"), and test_tshark_dtls.py that
tshark 4.4 stops at an Extended Key Update in DTLS.  This is the TLS over TCP
case: with the client's full key log, generation-1 lines included, tshark
decrypts the application data before the update and none after it, because
an EKU generation comes from a fresh key exchange (draft-ietf-tls-extended-
key-update-13 §6), which Wireshark does not know.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from helpers.driver import LongtlsServer, SocketDriver, client_config, connect, server_config
from helpers.peers import require_binary, run, start_process
from longtls.events import KeyUpdateCompleted

BEFORE = (b"client line in generation 0 4be1\n", b"server line in generation 0 9a07\n")
AFTER = (b"client line in generation 1 d35c\n", b"server line in generation 1 61fe\n")


def server_side(drv: SocketDriver) -> None:
    assert drv.recv_until(b"\n") == BEFORE[0]
    drv.send(BEFORE[1])
    assert drv.recv_until(b"\n") == AFTER[0]  # after the client's EKU
    drv.send(AFTER[1])


def test_tshark_decrypts_a_tls_session_only_up_to_the_extended_key_update(pki: Any, tmp_path: Path) -> None:
    require_binary("tshark")
    bundle = pki("ecdsa-p256")
    keylog, pcap = tmp_path / "client.keys", tmp_path / "eku.pcapng"
    ccfg = client_config(bundle.ca)
    ccfg.set_keylog_file(keylog)

    with LongtlsServer(server_config(bundle.server), server_side) as server, start_process(
        ["tshark", "-i", "lo", "-f", f"tcp port {server.port}", "-w", str(pcap)],
        ready_pattern=r"Capture started", timeout=15,
    ) as capture:
        drv = connect(ccfg, server.port)
        try:
            assert drv.handshake().extended_key_update
            drv.send(BEFORE[0])
            assert drv.recv_until(b"\n") == BEFORE[1]
            drv.conn.extended_key_update()
            drv.flush()
            assert drv.wait_for(KeyUpdateCompleted).generation == 1
            drv.send(AFTER[0])
            assert drv.recv_until(b"\n") == AFTER[1]
        finally:
            drv.close()
        server.join()
        time.sleep(1.5)  # dumpcap hands packets over in batches: let the last ones arrive
        capture.proc.send_signal(signal.SIGINT)
        capture.wait(15)

    labels = {line.split()[0] for line in keylog.read_text().splitlines() if line.strip()}
    assert {"CLIENT_TRAFFIC_SECRET_1", "SERVER_TRAFFIC_SECRET_1"} <= labels, labels

    streams = run(["tshark", "-r", str(pcap), "-Y", "tls", "-T", "fields", "-e", "tcp.stream"], timeout=60)
    stream = (streams.stdout.split() or ["0"])[0]
    follow = run(
        ["tshark", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}", "-q", "-z", f"follow,tls,ascii,{stream}"],
        timeout=60,
    ).stdout
    for line in BEFORE:
        assert line.decode().strip() in follow, follow
    for line in AFTER:
        assert line.decode().strip() not in follow, follow
