"""Run a sans-I/O longtls Connection over a real socket, for interop tests.

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    drv = SocketDriver(sock, Connection(client_config))
    done = drv.handshake()                     # HandshakeComplete
    drv.send(b"ping\\n")
    assert drv.recv_until(b"\\n") == b"pong\\n"
    drv.update_keys(request_peer_update=True)
    drv.close()

    with LongtlsServer(server_config, handler) as server:   # background thread
        ...  # point a client peer at server.port
    server.result  # what handler(driver) returned; its exception is re-raised

Everything is blocking with a deadline: no call waits longer than its
``timeout``, so a broken peer fails the test instead of hanging CI.  Every
event longtls emits is kept in ``SocketDriver.events``, in order.
"""

from __future__ import annotations

import datetime
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cryptography import x509
from cryptography.x509.oid import NameOID

from longtls.config import ClientAuth, Configuration
from longtls.connection import Connection
from longtls.crypto.certificates import TrustStore
from longtls.errors import ProtocolError
from longtls.events import (
    ApplicationData,
    CloseNotifyReceived,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    KeyUpdated,
    SessionTicketReceived,
)

from .peers import LOOPBACK
from .pki import (
    Credential,
    Pki,
    _signature_hash,
    generate_key,
    make_ca,
    make_intermediate,
    make_leaf,
)

DEFAULT_TIMEOUT = 15.0

E = TypeVar("E", bound=Event)


class DriverError(AssertionError):
    """The TLS session failed: longtls raised, the peer closed or timed out.

    An AssertionError so pytest shows it as a plain test failure; the message
    carries the events seen so far.
    """


class SocketDriver:
    """One longtls Connection bound to one connected socket."""

    def __init__(self, sock: socket.socket, conn: Connection, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock
        self.conn = conn
        self.timeout = timeout
        self.events: list[Event] = []
        self._returned: set[int] = set()  # indices of events wait_for() returned
        self._buffer = bytearray()  # application data received, not yet returned
        self.received_total = bytearray()  # every application byte ever received
        self.eof = False
        self.error: ProtocolError | None = None

    # ------------------------------------------------------------- plumbing

    def describe(self) -> str:
        role = "client" if self.conn.is_client else "server"
        lines = [f"longtls {role}: {self.conn!r}, eof={self.eof}, error={self.error!r}"]
        lines += [f"  event: {e!r}" for e in self.events]
        return "\n".join(lines)

    def _fail(self, message: str) -> DriverError:
        return DriverError(f"{message}\n{self.describe()}")

    def flush(self) -> None:
        """Write whatever longtls has queued to the socket."""
        data = self.conn.data_to_send()
        if data:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)

    def _collect(self) -> None:
        for event in self.conn.events():
            self.events.append(event)
            if isinstance(event, ApplicationData):
                self._buffer += event.data
                self.received_total += event.data

    def _read_once(self, deadline: float) -> None:
        """Read one chunk from the socket and feed it to longtls.

        Raises DriverError on timeout, or if longtls rejects the bytes (after
        sending its alert to the peer).
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._fail("timed out waiting for the peer")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise self._fail("timed out waiting for the peer") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return
        try:
            self.conn.receive_data(data)
        except ProtocolError as exc:
            self.error = exc
            self._collect()
            try:
                self.flush()  # the fatal alert
            except OSError:
                pass
            raise self._fail(f"longtls rejected the peer's data: {exc}") from exc
        finally:
            self._collect()
        self.flush()

    def pump_until(self, condition: Callable[[], bool], timeout: float | None = None, what: str = "") -> None:
        """Flush, then read until ``condition()`` holds.

        Fails on timeout, on EOF and on a ConnectionClosed event, unless
        ``condition`` is already true.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        self.flush()
        while not condition():
            closed = [e for e in self.events if isinstance(e, ConnectionClosed)]
            if closed:
                raise self._fail(f"connection closed while waiting for {what or condition}")
            if self.eof:
                raise self._fail(f"peer closed the TCP connection while waiting for {what or condition}")
            self._read_once(deadline)

    # ---------------------------------------------------------------- API

    def handshake(self, timeout: float | None = None) -> HandshakeComplete:
        """Run the handshake to completion; return the HandshakeComplete event."""
        if self.conn.is_client:
            self.conn.start_handshake()
        return self.wait_for(HandshakeComplete, timeout)

    def wait_for(self, kind: type[E], timeout: float | None = None) -> E:
        """The next not yet returned event of type ``kind`` (reading as needed)."""

        def find() -> E | None:
            for i, event in enumerate(self.events):
                if i not in self._returned and isinstance(event, kind):
                    self._returned.add(i)
                    return event
            return None

        found: list[E] = []

        def condition() -> bool:
            event = find()
            if event is not None:
                found.append(event)
            return bool(found)

        self.pump_until(condition, timeout, what=kind.__name__)
        return found[0]

    def of_type(self, kind: type[E]) -> list[E]:
        """Every event of type ``kind`` seen so far."""
        return [e for e in self.events if isinstance(e, kind)]

    def send(self, data: bytes) -> None:
        self.conn.send(data)
        self.flush()

    def recv_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """Application data up to and including ``marker`` (consumed)."""
        self.pump_until(lambda: marker in self._buffer, timeout, what=f"application data {marker!r}")
        end = self._buffer.index(marker) + len(marker)
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def recv_exactly(self, n: int, timeout: float | None = None) -> bytes:
        self.pump_until(lambda: len(self._buffer) >= n, timeout, what=f"{n} bytes of application data")
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def pending(self) -> bytes:
        """Application data received but not yet returned (consumed)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def update_keys(self, request_peer_update: bool = True) -> None:
        self.conn.update_keys(request_peer_update=request_peer_update)
        self.flush()

    def key_updates(self, direction: str) -> list[KeyUpdated]:
        return [e for e in self.of_type(KeyUpdated) if e.direction == direction]

    def tickets(self) -> list[SessionTicketReceived]:
        return self.of_type(SessionTicketReceived)

    def wait_for_tickets(self, count: int = 1, timeout: float | None = None) -> list[SessionTicketReceived]:
        self.pump_until(lambda: len(self.tickets()) >= count, timeout, what=f"{count} session ticket(s)")
        return self.tickets()

    def drain(self, duration: float) -> None:
        """Read whatever arrives during ``duration`` seconds (EOF ends it early)."""
        deadline = time.monotonic() + duration
        self.flush()
        while not self.eof and not self.conn.is_closed:
            if time.monotonic() >= deadline:
                return
            try:
                self._read_once(deadline)
            except DriverError:
                if self.error is not None:
                    raise
                return  # plain timeout

    def wait_for_peer_close(self, timeout: float | None = None) -> None:
        """Read until the peer sends close_notify or closes the TCP connection."""
        self.pump_until(lambda: self.close_notify_received or self.eof, timeout, what="the peer to close")

    def close(self, wait_for_peer: bool = True, timeout: float = 5.0) -> None:
        """Send close_notify; optionally wait for the peer's close_notify or EOF.

        Always closes the socket.
        """
        try:
            self.conn.close()
            self.flush()
            if wait_for_peer:
                deadline = time.monotonic() + timeout
                while not self.eof and not self.of_type(CloseNotifyReceived) and not self.conn.is_closed:
                    try:
                        self._read_once(deadline)
                    except DriverError:
                        if self.error is not None:
                            raise
                        break
        finally:
            self.sock.close()

    @property
    def close_notify_received(self) -> bool:
        return bool(self.of_type(CloseNotifyReceived))


def connect(
    config: Configuration, port: int, host: str = LOOPBACK, timeout: float = DEFAULT_TIMEOUT
) -> SocketDriver:
    """A SocketDriver for a fresh longtls client connected to host:port (no handshake yet)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SocketDriver(sock, Connection(config), timeout)


def connect_with_retry(
    config: Configuration, port: int, host: str = LOOPBACK, timeout: float = DEFAULT_TIMEOUT,
    wait: float = 10.0,
) -> SocketDriver:
    """Like connect(), retrying ECONNREFUSED for ``wait`` seconds (peer starting up)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return connect(config, port, host, timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


Handler = Callable[[SocketDriver], Any]


class LongtlsServer:
    """longtls as a server in a background thread, for client-side peers.

    Listens on 127.0.0.1:<free port> (``self.port``) before ``__enter__``
    returns.  For each of ``accept`` connections it makes a Connection from
    ``config``, runs the handshake, then calls ``handler(driver)`` (which
    defaults to doing nothing more) and finally closes the driver.
    ``handler`` may also be a list with one handler per connection (then
    ``accept`` is its length).  Results
    land in ``self.results`` / ``self.drivers``; the first exception is
    re-raised by ``join()`` / ``__exit__`` in the test's thread.
    """

    def __init__(
        self, config: Configuration, handler: Handler | Sequence[Handler | None] | None = None, *,
        accept: int | None = None, timeout: float = DEFAULT_TIMEOUT, close: bool = True,
    ) -> None:
        self.config = config
        # One handler for every connection, or a list with one per connection.
        if handler is None or callable(handler):
            self.handlers: list[Handler | None] = [handler] * (accept or 1)
        else:
            self.handlers = list(handler)
            if accept is not None and accept != len(self.handlers):
                raise ValueError("give one handler per accepted connection")
        self.accept_count = len(self.handlers)
        self.timeout = timeout
        self.close_after = close
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self.drivers: list[SocketDriver] = []
        self.results: list[Any] = []
        self.handshakes: list[HandshakeComplete] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"longtls-server-{self.port}", daemon=True)

    @property
    def result(self) -> Any:
        return self.results[0] if self.results else None

    @property
    def driver(self) -> SocketDriver:
        return self.drivers[0]

    def start(self) -> LongtlsServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.listener.settimeout(self.timeout)
            for handler in self.handlers:
                sock, _addr = self.listener.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                driver = SocketDriver(sock, Connection(self.config), self.timeout)
                self.drivers.append(driver)
                try:
                    self.handshakes.append(driver.handshake())
                    self.results.append(handler(driver) if handler is not None else None)
                finally:
                    if self.close_after:
                        try:
                            driver.close(wait_for_peer=False)
                        except Exception:  # the first failure is the one worth reporting
                            pass
        except BaseException as exc:  # re-raised in the test's thread
            self.error = exc
        finally:
            self.listener.close()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout if timeout is not None else self.timeout * self.accept_count + 5)
        if self._thread.is_alive():
            raise DriverError(
                "longtls server thread still running\n"
                + "\n".join(d.describe() for d in self.drivers)
            )
        if self.error is not None:
            raise self.error

    def __enter__(self) -> LongtlsServer:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            # The test already failed; don't wait long.  If the longtls side
            # failed too (often the cause), add its error to the test's.
            self._thread.join(3)
            for d in self.drivers:
                try:
                    d.sock.close()
                except OSError:
                    pass
            try:
                self.listener.close()
            except OSError:
                pass
            if self.error is not None and isinstance(exc, BaseException):
                exc.add_note(f"--- the longtls server failed too ---\n{self.error}")
            return
        self.join()


# ----------------------------------------------------------- configurations


def client_config(
    ca: Credential, *, client_cert: Credential | None = None, server_name: str | None = "localhost",
    **kwargs: Any,
) -> Configuration:
    """A longtls client trusting ``ca``; with ``client_cert`` it can do mutual TLS."""
    cfg = Configuration(is_client=True, server_name=server_name, trust_store=TrustStore([ca.cert]), **kwargs)
    if client_cert is not None:
        cfg.certificate_chain = client_cert.chain
        cfg.private_key = client_cert.key
    return cfg


def server_config(
    server_cert: Credential, *, client_ca: Credential | None = None,
    client_auth: ClientAuth = ClientAuth.NONE, **kwargs: Any,
) -> Configuration:
    """A longtls server with ``server_cert``; ``client_ca`` is trusted for client certificates."""
    store = TrustStore([client_ca.cert]) if client_ca is not None else None
    return Configuration(
        is_client=False, certificate_chain=server_cert.chain, private_key=server_cert.key,
        trust_store=store, client_auth=client_auth, **kwargs,
    )


def long_chain_pki(key_type: str, intermediates: int = 2) -> Pki:
    """A root, ``intermediates`` CAs in a line below it (distinct names, path
    lengths that allow the chain) and a server and a client leaf: for
    Certificate messages that span several records.

    (helpers.pki.make_intermediate always sets pathLenConstraint 0, so it
    can only make the last intermediate.)
    """
    root = make_ca(key_type)
    issuer = root
    for depth in range(intermediates - 1, 0, -1):
        issuer = _intermediate(issuer, key_type, f"longtls test intermediate {intermediates - depth}", depth)
    if intermediates:
        issuer = make_intermediate(issuer, key_type, common_name=f"longtls test intermediate {intermediates}")
    return Pki(ca=root, server=make_leaf(issuer, key_type), client=make_leaf(issuer, key_type, client=True))


def _intermediate(issuer: Credential, key_type: str, name: str, path_length: int) -> Credential:
    key = generate_key(key_type)
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "longtls tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
    )
    cert = builder.sign(issuer.key, _signature_hash(issuer.key))
    return Credential(key_type, key, cert, issuer)
