"""``longtls connect`` as an s_client user expects it (issue 14), as real processes.

A ``longtls serve --echo`` in the background, ``longtls connect`` run as a
script runs it: --brief and --showcerts on stderr with stdout left to the
data, Ctrl-C (SIGINT) closing with close_notify, a reader that goes away.
"""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from helpers.cli import LONGTLS, assert_one_error_line, longtls, summary
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles

READY = r"^longtls: serving \(echo\) on "
PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", re.DOTALL)


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    return tmp_pki_files("ecdsa-p256")


@pytest.fixture
def echo_server(files: PkiFiles) -> Iterator[tuple[PeerProcess, int]]:
    """``longtls serve --echo -v`` on a free port (-v: it logs each connection's end)."""
    port = free_port()
    args = [
        *LONGTLS, "serve", "-v", "--echo", "--cert", str(files.server.chain), "--key", str(files.server.key),
        "--port", str(port),
    ]
    with start_process(args, ready_pattern=READY) as server:
        yield server, port


def labelled(text: str) -> dict[str, str]:
    """The ``Label: value`` lines of --brief."""
    fields = {}
    for line in text.splitlines():
        label, sep, value = line.partition(": ")
        if sep and not line.startswith(("{", " ")):
            fields[label] = value
    return fields


def test_brief_summarises_the_connection_on_stderr(echo_server: Any, files: PkiFiles) -> None:
    server, port = echo_server
    message = "data stays alone on stdout\n"
    result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--brief", input=message)
    assert result.returncode == 0, (result.stderr, server.describe())
    assert result.stdout == message  # nothing of --brief mixed into the data
    assert "Traceback" not in result.stderr
    assert f"CONNECTION ESTABLISHED to {LOOPBACK}:{port}" in result.stderr
    leaf = x509.load_pem_x509_certificate(files.server.cert.read_bytes())
    fields = labelled(result.stderr)
    assert fields["Protocol version"] == "TLSv1.3"
    assert fields["Ciphersuite"] == "TLS_AES_128_GCM_SHA256"
    assert fields["Group"] == "X25519MLKEM768"
    assert fields["Peer certificate"] == leaf.subject.rfc4514_string()
    assert fields["Verification"].startswith("OK ") and str(files.ca) in fields["Verification"]
    assert fields["Extended Key Update"] == "yes (profile draft-13)"
    assert fields["Certificate Update"] == "yes"


def test_brief_says_when_eku_is_off_and_verification_skipped(echo_server: Any, files: PkiFiles) -> None:
    _, port = echo_server
    result = longtls("connect", f"{LOOPBACK}:{port}", "--insecure", "--no-eku", "--brief", input="x")
    assert result.returncode == 0, result.stderr
    fields = labelled(result.stderr)
    assert fields["Extended Key Update"] == "no"
    assert fields["Verification"] == "not verified (--insecure)"


def test_showcerts_prints_the_chain_the_server_sent(echo_server: Any, files: PkiFiles) -> None:
    _, port = echo_server
    message = "hello\n"
    result = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--showcerts", "--summary", "json", input=message,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == message
    # The PEM blocks are byte for byte the chain file the server was given.
    sent = x509.load_pem_x509_certificates(files.server.chain.read_bytes())
    shown = [x509.load_pem_x509_certificate(block.encode()) for block in PEM.findall(result.stderr)]
    assert shown == sent
    for depth, cert in enumerate(sent):
        assert f" {depth} s:{cert.subject.rfc4514_string()}\n   i:{cert.issuer.rfc4514_string()}\n" in result.stderr
        digest = cert.fingerprint(hashes.SHA256()).hex(":").upper()
        assert f"   SHA-256 fingerprint: {digest}\n" in result.stderr
        assert f"   serial: {cert.serial_number:x}\n" in result.stderr
        assert f"   notAfter: {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}\n" in result.stderr
        assert f"   notBefore: {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}\n" in result.stderr
    san = sent[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    for name in san.get_values_for_type(x509.DNSName):
        assert re.search(rf"   subjectAltName: .*\bDNS:{re.escape(name)}\b", result.stderr), result.stderr
    assert "\nVerification: OK " in result.stderr
    # --summary json still parses: the report lines are not JSON objects.
    records = summary(result.stderr)
    assert [records[0]["event"], records[-1]["event"]] == ["handshake", "closed"]


# -- ending: Ctrl-C and a reader that goes away ----------------------------------------------


def test_ctrl_c_closes_with_close_notify_and_exits_130(echo_server: Any, files: PkiFiles) -> None:
    server, port = echo_server
    with start_process(
        [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json"], port=None
    ) as client:
        client.write("still here\n")
        client.wait_for_output("still here")
        client.proc.send_signal(signal.SIGINT)
        assert client.wait() == 130, client.describe()
    assert "Traceback" not in client.stderr, client.describe()
    # The last line: the server answered our close_notify with its own.
    assert summary(client.stderr)[-1] == {"event": "closed", "alert": None, "by_peer": True, "interrupted": True}
    # The server saw a clean close, not a truncation.
    assert "without close_notify" not in server.stderr, server.describe()
    assert "truncated" not in server.stderr, server.describe()


def test_a_broken_stdout_pipe_exits_141_after_close_notify(echo_server: Any, files: PkiFiles) -> None:
    server, port = echo_server
    connect = shlex.join([*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json"])
    # 2 MB to echo, of which `head` reads 10 bytes and goes away.
    script = f'head -c 2000000 /dev/zero | {connect} | head -c 10; exit "${{PIPESTATUS[1]}}"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout == "\0" * 10
    assert result.returncode == 141, result.stderr  # 128 + SIGPIPE, as `cat` killed by it
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("{") for line in lines), result.stderr  # no error line: like cat, silent
    closed = summary(result.stderr)[-1]
    assert (closed["event"], closed["error"]) == ("closed", "Broken pipe"), closed
    assert "without close_notify" not in server.stderr, server.describe()


def test_ctrl_c_over_dtls_closes_and_exits_130(files: PkiFiles) -> None:
    port = free_port(socket.SOCK_DGRAM)
    server_args = [
        *LONGTLS, "serve", "--dtls", "--echo", "--cert", str(files.server.chain), "--key", str(files.server.key),
        "--port", str(port),
    ]
    with start_process(server_args, ready_pattern=r"^longtls: serving \(echo, DTLS 1\.3"), start_process(
        [*LONGTLS, "connect", "--dtls", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json"], port=None
    ) as client:
        client.write("one datagram\n")
        client.wait_for_output("one datagram")
        client.proc.send_signal(signal.SIGINT)
        assert client.wait() == 130, client.describe()
    assert "Traceback" not in client.stderr, client.describe()
    closed = summary(client.stderr)[-1]
    assert (closed["event"], closed["interrupted"], closed["datagrams_received"]) == ("closed", True, 1), closed


def test_ctrl_c_during_the_handshake_prints_the_closed_line(files: PkiFiles) -> None:
    with socket.create_server((LOOPBACK, 0)) as silent:  # accepts, never answers
        silent.settimeout(20)
        port = silent.getsockname()[1]
        with start_process(
            [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json"], port=None
        ) as client:
            accepted, _ = silent.accept()
            with accepted:
                accepted.settimeout(20)
                assert accepted.recv(1) == b"\x16"  # its ClientHello: the handshake is under way
                client.proc.send_signal(signal.SIGINT)
                assert client.wait() == 130, client.describe()
    assert "Traceback" not in client.stderr, client.describe()
    assert summary(client.stderr) == [{"event": "closed", "alert": None, "by_peer": None, "interrupted": True}]


def test_showcerts_with_an_unknown_ca_says_how_to_see_the_chain(
    echo_server: Any, tmp_pki_files: Callable[..., PkiFiles]
) -> None:
    _, port = echo_server
    other_ca = tmp_pki_files("ed25519").ca
    result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(other_ca), "--showcerts")
    assert_one_error_line(result, "(unknown_ca)", "add --insecure")
    assert "BEGIN CERTIFICATE" not in result.stderr


def test_brief_in_mls_mode_names_the_mls_suite() -> None:
    port = free_port()
    with start_process(
        [*LONGTLS, "serve", "--mls", "--echo", "--port", str(port)], ready_pattern=r"^longtls: serving "
    ):
        result = longtls("connect", "--mls", f"{LOOPBACK}:{port}", "--insecure", "--brief", input="x")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "x"
    fields = labelled(result.stderr)
    assert fields["Protocol version"] == "MLS-TLS"
    assert fields["MLS cipher suite"].startswith("1, epoch 1;")  # --mls-suite's default, the first epoch
