"""``longtls serve --www``: GET /, GET /keyupdate, GET /secret.

A ``longtls serve --www`` process on 127.0.0.1 (module-scoped: one server for
every test); the client is a sans-I/O longtls Connection on a socket
(``helpers.driver.SocketDriver``), which keeps every event in order, so the
tests can assert what arrived *before* the response: the server's KeyUpdate
(or its Extended Key Update), its CertificateRequest.  (The interop
counterparts with ``openssl s_client`` are in tests/interop/test_www_openssl.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import LONGTLS, longtls
from helpers.driver import SocketDriver, client_config, connect_with_retry
from helpers.peers import PeerProcess, free_port, start_process
from helpers.pki import Pki
from longtls.events import (
    ApplicationData,
    Event,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
)


class WWW:
    def __init__(self, process: PeerProcess, port: int, bundle: Pki) -> None:
        self.process = process
        self.port = port
        self.bundle = bundle


@pytest.fixture(scope="module")
def www(pki: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WWW]:
    bundle: Pki = pki("ecdsa-p256")  # type: ignore[operator]
    files = bundle.write_pem(tmp_path_factory.mktemp("www-pki"))
    port = free_port()
    args = [
        *LONGTLS, "serve", "--www", "--port", str(port),
        "--cert", str(files.server.chain), "--key", str(files.server.key),
        # /secret verifies the client certificate against --ca; no certificate
        # is asked for in the handshake itself.
        "--ca", str(files.ca), "--verify-client", "none",
    ]
    with start_process(args, ready_pattern=r"^longtls: serving \(www\) on ") as process:
        yield WWW(process, port, bundle)


def get(www: WWW, path: str, **client_kwargs: object) -> tuple[SocketDriver, str, str]:
    """One request on a fresh connection: (driver, status line, body)."""
    drv = connect_with_retry(client_config(www.bundle.ca, **client_kwargs), www.port)
    drv.handshake()
    drv.send(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    drv.wait_for_peer_close()  # HTTP/1.0: the answer ends with close_notify
    text = drv.pending().decode()
    drv.close()
    head, _, body = text.partition("\r\n\r\n")
    return drv, head.split("\r\n")[0], body


def fields(body: str) -> dict[str, str]:
    out = {}
    for line in body.splitlines():
        label, sep, value = line.partition(":")
        if sep:
            out[label] = value.strip()
    return out


def first_index(events: list[Event], kind: type[Event], **attrs: object) -> int:
    for i, event in enumerate(events):
        if isinstance(event, kind) and all(getattr(event, k) == v for k, v in attrs.items()):
            return i
    raise AssertionError(f"no {kind.__name__} {attrs} in {events}")


# -------------------------------------------------------------------------- GET /


def test_status_page(www: WWW) -> None:
    drv, status, body = get(www, "/")
    assert status == "HTTP/1.0 200 ok"
    done = drv.of_type(HandshakeComplete)[0]
    page = fields(body)
    assert page["Protocol"] == "TLSv1.3" == done.version
    assert page["Cipher suite"] == done.cipher_suite.name
    assert page["Group"] == done.group.name  # type: ignore[union-attr]
    assert page["Extended Key Update"] == "yes" and done.extended_key_update
    assert page["Send key generation"] == "0"
    assert page["EKU generation"].startswith("0 (profile ")


def test_status_page_without_eku(www: WWW) -> None:
    _, status, body = get(www, "/", extended_key_update=False)
    assert status == "HTTP/1.0 200 ok"
    page = fields(body)
    assert page["Extended Key Update"] == "no"
    assert "EKU generation" not in page


# ------------------------------------------------------------------ GET /keyupdate


def test_keyupdate_is_an_extended_key_update_before_the_response(www: WWW) -> None:
    """EKU negotiated: the server runs an Extended Key Update, awaited to
    completion, and only then answers (under generation 1)."""
    drv, status, body = get(www, "/keyupdate")
    assert status == "HTTP/1.0 200 ok"
    completed = first_index(drv.events, KeyUpdateCompleted, initiator="server", generation=1)
    assert completed < first_index(drv.events, ApplicationData)
    assert not drv.key_updates("receive")  # no classic KeyUpdate once EKU is negotiated
    assert "Extended Key Update completed before this response: generation 1." in body
    assert drv.conn.key_generation == 1
    assert fields(body)["EKU generation"].startswith("1 (profile ")
    www.process.wait_for_output(r"GET /keyupdate: extended key update to generation 1$")


def test_keyupdate_is_a_key_update_before_the_response_without_eku(www: WWW) -> None:
    """No EKU: a KeyUpdate with update_requested (RFC 9846 §4.7.3) precedes
    the response, which is protected under the server's next key; the client
    answered with its own KeyUpdate."""
    drv, status, body = get(www, "/keyupdate", extended_key_update=False)
    assert status == "HTTP/1.0 200 ok"
    received = first_index(drv.events, KeyUpdated, direction="receive", generation=1, requested_by_peer=True)
    assert received < first_index(drv.events, ApplicationData)
    assert [e.generation for e in drv.key_updates("send")] == [1]  # our answer
    assert "KeyUpdate (update_requested) sent before this response: sending key generation 1." in body
    assert fields(body)["Send key generation"] == "1"


def test_keyupdate_declined_by_a_draft05_client(pki: object, tmp_path: Path) -> None:
    """EKU draft-05 lets a peer decline an update ("rejected"): the answer
    says so (503) instead of failing the connection."""
    bundle: Pki = pki("ecdsa-p256")  # type: ignore[operator]
    files = bundle.write_pem(tmp_path / "pki")
    port = free_port()
    args = [
        *LONGTLS, "serve", "--www", "--port", str(port), "--eku-profile", "draft-05",
        "--cert", str(files.server.chain), "--key", str(files.server.key),
    ]
    with start_process(args, ready_pattern=r"^longtls: serving \(www\) on ") as process:
        server = WWW(process, port, bundle)
        _, status, body = get(server, "/keyupdate", eku_profile="draft-05", eku_max_peer_updates=0)
        assert status == "HTTP/1.0 503 service unavailable", body
        assert "declined the extended key update (rejected)" in body
        process.wait_for_output(r"GET /keyupdate: the client declined the extended key update \(rejected\)$")


# --------------------------------------------------------------------- GET /secret


def test_secret_authenticates_the_client_after_the_handshake(www: WWW) -> None:
    """RFC 9846 §4.7.2: the client offered post_handshake_auth; the server
    asks, the client answers with its certificate, and the response names it."""
    client = www.bundle.client
    drv, status, body = get(www, "/secret", client_cert=client, post_handshake_auth=True)
    assert status == "HTTP/1.0 200 ok", body
    subject = client.cert.subject.rfc4514_string()
    page = fields(body)
    assert page["Client certificate subject"] == subject
    assert page["Client certificate issuer"] == www.bundle.ca.cert.subject.rfc4514_string()
    assert page["Client signature scheme"] == "ecdsa_secp256r1_sha256"
    assert not drv.of_type(HandshakeComplete)[0].client_authenticated  # not in the handshake
    www.process.wait_for_output(rf"GET /secret: client authenticated as {re.escape(subject)}$")


def test_secret_without_post_handshake_auth_is_refused(www: WWW) -> None:
    _, status, body = get(www, "/secret", client_cert=www.bundle.client)  # cert, but no offer
    assert status == "HTTP/1.0 403 forbidden"
    assert "did not offer post_handshake_auth" in body and "-enable_pha" in body


# -------------------------------------------------------------------- other requests


def test_unknown_path_lists_the_paths(www: WWW) -> None:
    _, status, body = get(www, "/nope")
    assert status == "HTTP/1.0 404 not found"
    assert all(f"GET {p}" in body for p in ("/ ", "/keyupdate", "/secret"))


def test_not_get(www: WWW) -> None:
    drv = connect_with_retry(client_config(www.bundle.ca), www.port)
    drv.handshake()
    drv.send(b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    drv.wait_for_peer_close()
    assert drv.pending().startswith(b"HTTP/1.0 400 bad request\r\n")
    drv.close()


def test_help_documents_the_paths(tmp_path: Path) -> None:
    result = longtls("serve", "--help")
    assert result.returncode == 0
    for path in ("GET /keyupdate", "GET /secret", "GET /  "):
        assert path in result.stdout, result.stdout
    assert "-enable_pha" in result.stdout
