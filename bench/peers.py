"""The peers longtls is measured against, each paired with itself in memory.

- ``ssl``: Python's ssl module (its own OpenSSL, 3.0 here), SSLObject over a
  MemoryBIO pair.  Its TLS 1.3 suite and groups cannot be set from Python, so
  its cells run in a worker process whose OPENSSL_CONF pins them.
- pyOpenSSL over cryptography's OpenSSL (4.0), memory BIOs (``Connection(ctx, None)``).
- tlslite-ng 0.9.0b2 (pure Python as installed: no M2Crypto, pycryptodome or
  gmpy2; kyber-py for ML-KEM), over an in-memory pipe object with the two
  socket methods its record layer uses, driven through its async generators.
- the limit: pyca/cryptography's AEAD sealing and opening the same record
  payloads, and a "Python floor": the least work a Python TLS record layer does
  per record (see ``record_floor_operation``).

Every client verifies the server's certificate chain, except tlslite-ng's,
which (without a ``checker``) only checks the CertificateVerify signature;
``ssl`` and longtls also check the name, pyOpenSSL cannot (its bindings lack
``SSL_get0_param``).
"""

from __future__ import annotations

import errno
import os
import ssl
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from harness import GROUPS, HANDSHAKE_SUITE, RECORD_SIZE, SUITES, Operation, Pki

_HEADER = b"\x17\x03\x03"
_TAG = 16

# ----------------------------------------------------------------- Python ssl


def _ssl_contexts(pki: Pki) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(pki.chain_file, pki.key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and hostname
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.load_verify_locations(pki.ca_file)
    return client, server


class _SslPair:
    def __init__(
        self, cctx: ssl.SSLContext, sctx: ssl.SSLContext, session: ssl.SSLSession | None = None
    ) -> None:
        self.c_in, self.c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.s_in, self.s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = cctx.wrap_bio(self.c_in, self.c_out, server_hostname="localhost", session=session)
        self.server = sctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        client_done = server_done = False
        while not (client_done and server_done):
            if not client_done:
                try:
                    self.client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            self.s_in.write(self.c_out.read())
            if not server_done:
                try:
                    self.server.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
            self.c_in.write(self.s_out.read())
        try:  # process the NewSessionTickets
            self.client.read(1)
        except ssl.SSLWantReadError:
            pass


def ssl_handshake_operation(pki: Pki, group: str, resumed: bool = False) -> Operation:
    if group != "x25519":
        raise ValueError(f"{ssl.OPENSSL_VERSION} has no {group}")
    cctx, sctx = _ssl_contexts(pki)
    first = _SslPair(cctx, sctx)
    if first.client.cipher()[0] != SUITES[HANDSHAKE_SUITE][0]:  # type: ignore[index]
        raise RuntimeError(f"ssl negotiated {first.client.cipher()}: is OPENSSL_CONF set?")
    session = [first.client.session]

    def op() -> float:
        pair = _SslPair(cctx, sctx, session[0] if resumed else None)
        if pair.client.session_reused != resumed:
            raise RuntimeError(f"ssl session_reused={pair.client.session_reused}, wanted {resumed}")
        session[0] = pair.client.session  # tickets are single use (RFC 8446 C.4)
        return 1.0

    op()
    return op


def ssl_bulk_operation(pki: Pki, suite: str, write_size: int) -> Operation:
    pair = _SslPair(*_ssl_contexts(pki))
    if pair.client.cipher()[0] != SUITES[suite][0]:  # type: ignore[index]
        raise RuntimeError(f"ssl negotiated {pair.client.cipher()}: is OPENSSL_CONF set?")
    data = os.urandom(write_size)

    def op() -> float:
        pair.client.write(data)
        pair.s_in.write(pair.c_out.read())
        got = 0
        try:
            while True:
                got += len(pair.server.read(4 * RECORD_SIZE))
        except ssl.SSLWantReadError:
            pass
        if got != write_size:
            raise RuntimeError(f"ssl delivered {got} of {write_size} bytes")
        return float(got)

    op()
    return op


def ssl_establish(pki: Pki, count: int) -> list[_SslPair]:
    cctx, sctx = _ssl_contexts(pki)
    return [_SslPair(cctx, sctx) for _ in range(count)]


# ------------------------------------------------------------------ pyOpenSSL


def _pyopenssl_contexts(pki: Pki, group: str, suite: str) -> tuple[Any, Any]:
    from OpenSSL import SSL, crypto
    from OpenSSL._util import lib

    contexts = []
    for server in (False, True):
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_tls13_ciphersuites(SUITES[suite][0].encode())
        if lib.SSL_CTX_set1_curves_list(ctx._context, GROUPS[group][0].encode()) != 1:
            raise ValueError(f"pyOpenSSL's OpenSSL does not know {group}")
        if server:
            ctx.use_certificate(crypto.X509.from_cryptography(pki.chain[0]))
            ctx.use_privatekey(crypto.PKey.from_cryptography_key(pki.key))
        else:
            store = ctx.get_cert_store()
            assert store is not None
            store.add_cert(crypto.X509.from_cryptography(pki.ca_cert))
            ctx.set_verify(SSL.VERIFY_PEER, None)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
        contexts.append(ctx)
    return contexts[0], contexts[1]


def _pyopenssl_pair(cctx: Any, sctx: Any, session: Any = None) -> tuple[Any, Any]:
    from OpenSSL import SSL

    client = SSL.Connection(cctx, None)
    client.set_connect_state()
    client.set_tlsext_host_name(b"localhost")
    if session is not None:
        client.set_session(session)
    server = SSL.Connection(sctx, None)
    server.set_accept_state()
    client_done = server_done = False
    while not (client_done and server_done):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except SSL.WantReadError:
                pass
        _bio_move(client, server)
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except SSL.WantReadError:
                pass
        _bio_move(server, client)
    try:  # process the NewSessionTickets
        client.recv(1)
    except SSL.WantReadError:
        pass
    return client, server


def _bio_move(src: Any, dst: Any) -> None:
    from OpenSSL import SSL

    while True:
        try:
            data = src.bio_read(1 << 20)
        except SSL.WantReadError:
            return
        dst.bio_write(data)


def pyopenssl_handshake_operation(pki: Pki, group: str, resumed: bool = False) -> Operation:
    from OpenSSL import SSL
    from OpenSSL._util import lib

    cctx, sctx = _pyopenssl_contexts(pki, group, HANDSHAKE_SUITE)
    first, _ = _pyopenssl_pair(cctx, sctx)
    if (first.get_group_name() or "").lower() != GROUPS[group][0].lower():
        raise RuntimeError(f"pyOpenSSL negotiated {first.get_group_name()}, wanted {group}")
    session = [first.get_session()]
    first.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)

    def op() -> float:
        client, _ = _pyopenssl_pair(cctx, sctx, session[0] if resumed else None)
        if bool(lib.SSL_session_reused(client._ssl)) != resumed:
            raise RuntimeError(f"pyOpenSSL resumption != {resumed}")
        session[0] = client.get_session()
        # As if closed cleanly: OpenSSL makes the session of a connection freed
        # without a shutdown not resumable (ssl_clear_bad_session).
        client.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        return 1.0

    op()
    return op


def pyopenssl_bulk_operation(pki: Pki, suite: str, write_size: int) -> Operation:
    from OpenSSL import SSL

    client, server = _pyopenssl_pair(*_pyopenssl_contexts(pki, "x25519", suite))
    if client.get_cipher_name() != SUITES[suite][0]:
        raise RuntimeError(f"pyOpenSSL negotiated {client.get_cipher_name()}")
    data = os.urandom(write_size)

    def op() -> float:
        client.sendall(data)
        _bio_move(client, server)
        got = 0
        try:
            while True:
                got += len(server.recv(4 * RECORD_SIZE))
        except SSL.WantReadError:
            pass
        if got != write_size:
            raise RuntimeError(f"pyOpenSSL delivered {got} of {write_size} bytes")
        return float(got)

    op()
    return op


def pyopenssl_establish(pki: Pki, count: int) -> list[tuple[Any, Any]]:
    cctx, sctx = _pyopenssl_contexts(pki, "x25519", HANDSHAKE_SUITE)
    return [_pyopenssl_pair(cctx, sctx) for _ in range(count)]


# ------------------------------------------------------------------ tlslite-ng


class MemorySocket:
    """One end of an in-memory byte pipe, with the socket methods tlslite-ng's
    record layer calls; ``recv`` on an empty pipe would block, as a
    non-blocking socket's does, so tlslite's generators yield 0 ("want read")."""

    def __init__(self) -> None:
        self.inbox = bytearray()
        self.peer: MemorySocket = self

    @classmethod
    def pair(cls) -> tuple[MemorySocket, MemorySocket]:
        a, b = cls(), cls()
        a.peer, b.peer = b, a
        return a, b

    def send(self, data: bytes) -> int:
        self.peer.inbox += data
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.peer.inbox += data

    def recv(self, size: int) -> bytes:
        if not self.inbox:
            raise BlockingIOError(errno.EWOULDBLOCK, "would block")
        data = bytes(self.inbox[:size])
        del self.inbox[:size]
        return data

    def close(self) -> None:
        pass


class _Tlslite:
    """tlslite-ng credentials and settings for one group and suite."""

    def __init__(self, pki: Pki, group: str, suite: str) -> None:
        import tlslite.api as tls
        from cryptography.hazmat.primitives import serialization

        self.tls = tls
        self.chain = tls.X509CertChain()
        self.chain.parsePemList(pki.chain_file.read_text())
        key_pem = pki.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.key = tls.parsePEMKey(key_pem.decode(), private=True)
        self.group = GROUPS[group][1]
        self.suite = SUITES[suite][1]
        self.ticket_keys = [bytearray(os.urandom(32))]

    def settings(self, server: bool) -> Any:
        s = self.tls.HandshakeSettings()
        s.minVersion = s.maxVersion = (3, 4)
        s.eccCurves = [self.group]
        s.keyShares = [self.group]
        s.cipherNames = [self.suite]
        s.psk_modes = ["psk_dhe_ke"]
        if server:
            s.ticketKeys = self.ticket_keys
        return s

    def pair(self, session: Any = None) -> tuple[Any, Any]:
        a, b = MemorySocket.pair()
        client, server = self.tls.TLSConnection(a), self.tls.TLSConnection(b)
        steps = [
            client.handshakeClientCert(
                settings=self.settings(False), serverName="localhost", session=session, async_=True
            ),
            server.handshakeServerAsync(
                certChain=self.chain, privateKey=self.key, settings=self.settings(True)
            ),
        ]
        while steps:  # step both ends in turn until both handshakes are done
            for gen in list(steps):
                try:
                    next(gen)
                except StopIteration:
                    steps.remove(gen)
        _tlslite_read(client, 0)  # process the NewSessionTickets
        return client, server


def _tlslite_read(conn: Any, size: int) -> bytes:
    """Read ``size`` bytes (0: whatever is there) without blocking on an empty pipe."""
    for result in conn.readAsync(max=size or None, min=size):
        if result in (0, 1):
            if size:
                raise RuntimeError("tlslite-ng wants more data than was sent")
            return b""
        return bytes(result)
    return b""


def tlslite_handshake_operation(pki: Pki, group: str, resumed: bool = False) -> Operation:
    t = _Tlslite(pki, group, HANDSHAKE_SUITE)
    first, _ = t.pair()
    session = [first.session]

    def op() -> float:
        client, _ = t.pair(session[0] if resumed else None)
        if bool(client.resumed) != resumed:
            raise RuntimeError(f"tlslite-ng resumed={client.resumed}, wanted {resumed}")
        session[0] = client.session
        return 1.0

    op()
    return op


def tlslite_bulk_operation(pki: Pki, suite: str, write_size: int) -> Operation:
    client, server = _Tlslite(pki, "x25519", suite).pair()
    data = os.urandom(write_size)

    def op() -> float:
        for _ in client.writeAsync(data):
            pass
        got = len(_tlslite_read(server, write_size))
        if got != write_size:
            raise RuntimeError(f"tlslite-ng delivered {got} of {write_size} bytes")
        return float(got)

    op()
    return op


# ----------------------------------------------------------- the AEAD limit


def _aead(suite: str) -> AESGCM | ChaCha20Poly1305:
    if suite == "AES-128-GCM":
        return AESGCM(AESGCM.generate_key(128))
    return ChaCha20Poly1305(ChaCha20Poly1305.generate_key())


def aead_limit_operation(suite: str, write_size: int) -> Operation:
    """pyca/cryptography sealing and opening ``write_size`` bytes as TLS 1.3
    records would carry them (16 KiB + content type, header as AAD), and
    nothing else: the ceiling for any record layer built on it."""
    aead = _aead(suite)
    records = write_size // RECORD_SIZE
    inner = os.urandom(RECORD_SIZE) + b"\x17"
    header = _HEADER + (len(inner) + _TAG).to_bytes(2, "big")
    iv = int.from_bytes(os.urandom(12), "big")

    def op() -> float:
        for seq in range(records):
            nonce = (iv ^ seq).to_bytes(12, "big")
            aead.decrypt(nonce, aead.encrypt(nonce, inner, header), header)
        return float(records * RECORD_SIZE)

    op()
    return op


def record_floor_operation(suite: str, write_size: int) -> Operation:
    """The least a Python TLS 1.3 record layer does for ``write_size`` bytes:
    seal each 16 KiB fragment (content type appended, header as AAD) straight
    into one output buffer (``encrypt_into``), hand the transport one ``bytes``,
    split it into records by memoryview offsets, open each in place and copy
    its content out as the ``bytes`` the application receives.  Per record:
    three copies of the content (into the plaintext buffer, the wire bytes,
    the received content), two AEAD calls, a few dozen Python operations.
    Not longtls: a reference for what longtls' record layer could reach."""
    aead = _aead(suite)
    records = write_size // RECORD_SIZE
    data = memoryview(os.urandom(write_size))
    iv = int.from_bytes(os.urandom(12), "big")
    record_len = 5 + RECORD_SIZE + 1 + _TAG
    out = bytearray(records * record_len)
    out_view = memoryview(out)
    inner = bytearray(RECORD_SIZE + 1)
    inner_view = memoryview(inner)
    seq = [0, 0]

    def op() -> float:
        # Sender: Connection.send + data_to_send.
        pos = 0
        for start in range(0, write_size, RECORD_SIZE):
            chunk = data[start : start + RECORD_SIZE]
            n = len(chunk)
            inner_view[:n] = chunk
            inner[n] = 0x17
            length = n + 1 + _TAG
            out_view[pos : pos + 5] = _HEADER + length.to_bytes(2, "big")
            nonce = (iv ^ seq[0]).to_bytes(12, "big")
            seq[0] += 1
            aead.encrypt_into(
                nonce, inner_view[: n + 1], out_view[pos : pos + 5], out_view[pos + 5 : pos + 5 + length]
            )
            pos += 5 + length
        wire = bytes(out_view[:pos])
        # Receiver: Connection.receive_data + events.
        view = memoryview(wire)
        got = 0
        pos = 0
        while pos + 5 <= len(wire):
            length = (wire[pos + 3] << 8) | wire[pos + 4]
            nonce = (iv ^ seq[1]).to_bytes(12, "big")
            seq[1] += 1
            plain = aead.decrypt(nonce, view[pos + 5 : pos + 5 + length], view[pos : pos + 5])
            end = len(plain.rstrip(b"\x00"))
            content = plain[: end - 1]
            got += len(content)
            pos += 5 + length
        if got != write_size:
            raise RuntimeError(f"floor delivered {got} of {write_size} bytes")
        return float(got)

    op()
    return op
