"""``longtls serve --www`` driven by ``openssl s_client`` (OpenSSL 3.0).

s_client's ``-msg`` trace shows every handshake message it receives and
sends, decrypted, in order, so each test asserts what arrived *before* the
HTTP response: the server's KeyUpdate (GET /keyupdate; s_client does not
speak Extended Key Update, so it is the RFC 9846 §4.7.3 KeyUpdate) and its
post-handshake CertificateRequest (GET /secret, RFC 9846 §4.7.2).  The
request goes in on s_client's stdin; ``-ign_eof`` keeps it reading until the
server's close_notify ends the HTTP/1.0 response.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.cli import LONGTLS
from helpers.peers import LOOPBACK, PeerProcess, free_port, run, start_process
from helpers.pki import Pki, PkiFiles

# s_client -msg lines for a handshake message it received (<<<) or sent (>>>).
RECEIVED_KEY_UPDATE = re.compile(r"^<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate\n\s+18 00 00 01 01\s*$", re.M)
RECEIVED_CERTIFICATE_REQUEST = re.compile(r"^<<< TLS 1\.3, Handshake \[length [0-9a-f]{4}\], CertificateRequest$", re.M)
SENT_CERTIFICATE_VERIFY = re.compile(r"^>>> TLS 1\.3, Handshake \[length [0-9a-f]{4}\], CertificateVerify$", re.M)


@dataclass
class Server:
    process: PeerProcess
    port: int
    bundle: Pki
    files: PkiFiles


@pytest.fixture
def www(pki: object, tmp_path: Path) -> Iterator[Server]:
    bundle: Pki = pki("ecdsa-p256")  # type: ignore[operator]
    files = bundle.write_pem(tmp_path / "pki")
    port = free_port()
    args = [
        *LONGTLS, "serve", "--www", "--port", str(port),
        "--cert", str(files.server.chain), "--key", str(files.server.key),
        "--ca", str(files.ca), "--verify-client", "none",
    ]
    with start_process(args, ready_pattern=r"^longtls: serving \(www\) on ") as process:
        yield Server(process, port, bundle, files)


def s_client(server: Server, path: str, *extra: str) -> str:
    """s_client sends ``GET path``; its stdout (-msg trace and the response)."""
    result = run(
        [
            "openssl", "s_client", "-connect", f"{LOOPBACK}:{server.port}", "-servername", "localhost",
            "-CAfile", str(server.files.ca), "-verify_return_error", "-tls1_3", "-msg", "-ign_eof", *extra,
        ],
        input=f"GET {path} HTTP/1.0\r\n\r\n", timeout=30,
    )
    return result.stdout


def response_at(output: str) -> int:
    position = output.find("HTTP/1.0 ")
    assert position >= 0, output
    return position


def test_keyupdate_reaches_s_client_before_the_response(www: Server) -> None:
    output = s_client(www, "/keyupdate")
    received = RECEIVED_KEY_UPDATE.search(output)
    assert received is not None, output  # KeyUpdate, request_update = update_requested (1)
    assert received.start() < response_at(output)
    # (OpenSSL sends its own KeyUpdate in answer only with its next write, and
    # s_client writes nothing after the request: none appears in the trace.)
    assert "HTTP/1.0 200 ok" in output
    assert "KeyUpdate (update_requested) sent before this response: sending key generation 1." in output
    assert re.search(r"^Extended Key Update: +no$", output, re.M), output
    www.process.wait_for_output(r"GET /keyupdate: KeyUpdate sent, sending key generation 1$")


def test_secret_names_the_s_client_certificate(www: Server) -> None:
    files = www.files
    output = s_client(www, "/secret", "-enable_pha", "-cert", str(files.client.chain), "-key", str(files.client.key))
    request = RECEIVED_CERTIFICATE_REQUEST.search(output)
    assert request is not None, output
    verify = SENT_CERTIFICATE_VERIFY.search(output)
    assert verify is not None and request.start() < verify.start() < response_at(output), output
    subject = www.bundle.client.cert.subject.rfc4514_string()
    assert "HTTP/1.0 200 ok" in output
    assert f"Client certificate subject: {subject}\n" in output, output
    www.process.wait_for_output(rf"GET /secret: client authenticated as {re.escape(subject)}$")


def test_secret_without_enable_pha_is_refused(www: Server) -> None:
    files = www.files
    output = s_client(www, "/secret", "-cert", str(files.client.chain), "-key", str(files.client.key))
    assert RECEIVED_CERTIFICATE_REQUEST.search(output) is None, output
    assert "HTTP/1.0 403 forbidden" in output
    assert "did not offer post_handshake_auth" in output


def test_status_page_for_s_client(www: Server) -> None:
    output = s_client(www, "/", "-groups", "P-384", "-ciphersuites", "TLS_AES_256_GCM_SHA384")
    assert "HTTP/1.0 200 ok" in output
    for row in (r"Protocol: +TLSv1\.3", r"Cipher suite: +TLS_AES_256_GCM_SHA384", r"Group: +secp384r1",
                r"Extended Key Update: +no", r"Send key generation: +0"):
        assert re.search(rf"^{row}$", output, re.M), (row, output)


def test_secret_declined_by_s_client_without_a_certificate(www: Server) -> None:
    """s_client -enable_pha without -cert answers the CertificateRequest with
    an empty Certificate (RFC 9846 §4.5.1 asks for it); --verify-client none
    accepts that, and /secret says no certificate came."""
    output = s_client(www, "/secret", "-enable_pha")
    request = RECEIVED_CERTIFICATE_REQUEST.search(output)
    assert request is not None and request.start() < response_at(output), output
    assert SENT_CERTIFICATE_VERIFY.search(output) is None, output  # nothing to sign with
    assert "HTTP/1.0 403 forbidden" in output
    assert "without a certificate" in output
    www.process.wait_for_output(r"GET /secret: the client sent no certificate$")
