"""``longtls serve --www``: a small HTTP/1.0 responder, like ``openssl s_server -www``.

One request per connection, answered in plain text, then close_notify.  Its
paths make the post-handshake actions a *server* starts testable from any
client (``openssl s_client``, ``curl``, a browser):

``GET /``
    a status page: what the handshake negotiated (version, suite, group,
    signature scheme, Extended Key Update ...) and the key generations so far.
``GET /keyupdate``
    updates the traffic keys *before* answering: an Extended Key Update when
    EKU was negotiated (awaited until both sides use the new keys), else a
    KeyUpdate with update_requested (RFC 9846 §4.7.3; the client's own
    KeyUpdate is not awaited: it owes it only before its next application
    data).  The response is sent under the new key and says which update ran.
``GET /secret``
    asks for the client's certificate after the handshake (RFC 9846 §4.7.2)
    and answers once the client's Certificate, CertificateVerify and Finished
    arrived, naming the certificate's subject.  Only if the client offered
    post_handshake_auth (``openssl s_client -enable_pha``); otherwise 403 and
    why.  The certificate is verified against ``--ca`` (the system store
    without it): a chain that does not verify ends the connection with the
    alert it earned, as in the handshake.

Anything else: 404 (unknown path) or 400 (not GET).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from .. import aio
from ..errors import LocalProtocolError
from ..events import ConnectionClosed, PeerAuthenticated

logger = logging.getLogger("longtls.cli")

#: Seconds to wait for the request header.
REQUEST_TIMEOUT = 30.0
#: Seconds the client has to answer a CertificateRequest (GET /secret).
AUTH_TIMEOUT = 30.0
_MAX_REQUEST_LINES = 100

PATHS = {
    "/": "this status page",
    "/keyupdate": "a key update by the server (EKU if negotiated, else KeyUpdate), then this page",
    "/secret": "post-handshake client authentication (RFC 9846 §4.7.2), then who the client is",
}

Describe = Callable[[aio.TLSWriter], str]


@dataclass(frozen=True)
class Response:
    status: str  # "200 ok"
    body: str

    def encode(self) -> bytes:
        return f"HTTP/1.0 {self.status}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{self.body}".encode()


async def respond(reader: aio.TLSReader, writer: aio.TLSWriter, describe: Describe) -> None:
    """Read one request, act on it, answer.  ``describe`` renders the status page."""
    request = await asyncio.wait_for(read_request_head(reader), REQUEST_TIMEOUT)
    if not request:
        return  # closed without a request
    peer = _peer(writer)
    method, _, rest = request[0].decode("latin-1").partition(" ")
    path = rest.split(" ", 1)[0].split("?", 1)[0]
    if method != "GET":
        response = Response("400 bad request", "longtls serve --www answers GET requests only.\n")
    elif path == "/":
        response = Response("200 ok", status_page(writer, describe))
    elif path == "/keyupdate":
        response = await _key_update(writer, describe, peer)
    elif path == "/secret":
        response = await _secret(writer, describe, peer)
    else:
        listing = "".join(f"  GET {p:<11} {what}\n" for p, what in PATHS.items())
        response = Response("404 not found", f"longtls serve --www knows these paths:\n{listing}")
    writer.write(response.encode())
    await writer.drain()


async def read_request_head(reader: aio.TLSReader) -> list[bytes]:
    """The request line and header lines, up to the blank line (or EOF)."""
    lines: list[bytes] = []
    while len(lines) < _MAX_REQUEST_LINES:
        line = await reader.readline()
        if not line.strip():
            break
        lines.append(line.rstrip(b"\r\n"))
    return lines


def status_page(writer: aio.TLSWriter, describe: Describe) -> str:
    """``describe``'s page and the key generations so far, in its columns."""
    conn = writer.connection
    rows = [("Send key generation", str(conn.send_key_generation))]
    if conn.eku is not None:
        rows.append(("EKU generation", f"{conn.key_generation} (profile {conn.eku.profile.name})"))
    page = describe(writer).rstrip("\n")
    column = re.search(r"^[^:\n]+:\s+(?=\S)", page, re.MULTILINE)
    width = max(len(column.group(0)) if column else 0, max(len(label) + 2 for label, _ in rows))
    return page + "\n" + "".join(f"{label + ':':<{width}}{value}\n" for label, value in rows)


async def _key_update(writer: aio.TLSWriter, describe: Describe, peer: str) -> Response:
    if writer.handshake.extended_key_update:
        # Awaited (within the configuration's rekey_timeout): the response
        # goes out under the keys of the new generation.
        try:
            generation = await writer.update_keys()
        except aio.KeyUpdateRejectedError as exc:  # a draft-05 client may decline
            logger.info("%s: GET /keyupdate: the client declined the extended key update (%s)", peer, exc.status)
            return Response("503 service unavailable", f"No key update: {exc}.\n")
        done = f"Extended Key Update completed before this response: generation {generation}."
        logger.info("%s: GET /keyupdate: extended key update to generation %d", peer, generation)
    else:
        # RFC 9846 §4.7.3: our KeyUpdate goes out first, this response under
        # the new key; update_requested asks the client to update its own,
        # which it owes only before its next application data: not awaited.
        generation = writer.send_key_update(request_peer_update=True)
        done = f"KeyUpdate (update_requested) sent before this response: sending key generation {generation}."
        logger.info("%s: GET /keyupdate: KeyUpdate sent, sending key generation %d", peer, generation)
    return Response("200 ok", f"{done}\n\n{status_page(writer, describe)}")


async def _secret(writer: aio.TLSWriter, describe: Describe, peer: str) -> Response:
    if not getattr(writer.connection.handshake, "client_offered_post_handshake_auth", False):
        return Response("403 forbidden", (
            "GET /secret asks for a client certificate after the handshake, but this client\n"
            "did not offer post_handshake_auth (RFC 9846 §4.3.6); openssl s_client: -enable_pha.\n"
        ))
    with writer.events() as events:
        try:
            writer.request_client_authentication()
        except LocalProtocolError as exc:  # e.g. an extended key update is under way
            return Response("503 service unavailable", f"cannot ask for a client certificate now: {exc}\n")
        logger.info("%s: GET /secret: CertificateRequest sent", peer)
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                async for event in events:
                    if isinstance(event, PeerAuthenticated):
                        return _authenticated(writer, describe, peer, event)
                    if isinstance(event, ConnectionClosed):
                        break
        except TimeoutError:
            return Response("408 request timeout", (
                f"the client did not answer the CertificateRequest within {AUTH_TIMEOUT:g} seconds\n"
            ))
    raise ConnectionError("the connection closed during client authentication")


def _authenticated(writer: aio.TLSWriter, describe: Describe, peer: str, event: PeerAuthenticated) -> Response:
    if not event.peer_certificates:
        logger.info("%s: GET /secret: the client sent no certificate", peer)
        return Response("403 forbidden", "The client answered the CertificateRequest without a certificate.\n")
    leaf = event.peer_certificates[0]
    subject = leaf.subject.rfc4514_string()
    logger.info("%s: GET /secret: client authenticated as %s", peer, subject)
    scheme = event.signature_scheme.name if event.signature_scheme is not None else "none"
    body = (
        "Post-handshake client authentication (RFC 9846 §4.7.2) succeeded.\n"
        f"Client certificate subject: {subject}\n"
        f"Client certificate issuer: {leaf.issuer.rfc4514_string()}\n"
        f"Client signature scheme: {scheme}\n\n"
        f"{status_page(writer, describe)}"
    )
    return Response("200 ok", body)


def _peer(writer: aio.TLSWriter) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "?"
