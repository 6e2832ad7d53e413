"""wolfSSL 5.5.4's DTLS 1.3 example server and client as test peers.

    build = wolfssl_build()                    # fails (never skips) when not built
    files = pki("ecdsa-p256").write_pem(tmp_path)
    port = free_port(socket.SOCK_DGRAM)
    with start_server(server_command(build, port, files.server, echo=True)) as server:
        client = run_client(client_command(build, port, files.client))
    assert client.returncode == 0 and CLIENT_MESSAGE in client.stdout

The binaries are built from Debian's source package by
scripts/build-wolfssl.sh (`make peers`) into a cache outside the checkout;
``wolfssl_build()`` asks that script where (``--print-dir``). Both programs
must run with the wolfSSL source tree as working directory (they look for
./certs/dh2048.pem upwards and exit with "wolf root not found" otherwise):
the functions here do that, so certificate paths must be absolute.

Options of examples/server/server and examples/client/client (wolfSSL 5.5.4;
`-?` prints them; docs/interop-wolfssl.md has the same list with what each
prints):

- DTLS 1.3: ``-u -v 4``. ``-u`` takes an optional MTU attached or as the next
  word (``-u300``, ``-u 300``): wolfSSL_CTX_dtls_set_mtu, so handshake
  messages are fragmented to fit (build flag --enable-dtls-mtu).
- Port ``-p N`` (server: binds 127.0.0.1 only unless ``-b``; the client
  connects to ``-h HOST``, default 127.0.0.1).
- Certificates (PEM files): ``-c`` chain/cert, ``-k`` key, ``-A`` the CA that
  verifies the peer. The server asks for a client certificate unless ``-d``;
  the client sends one unless ``-x``; ``-d`` on the client skips verifying
  the server.
- Groups: client ``-t`` offers only an X25519 key share, ``-Y`` only secp256r1
  (default: secp256r1 and ffdhe2048 key shares); server ``-t`` / ``-Y``
  accepts only that group. Client ``-J`` sends no key share at all, so the
  server must answer with a HelloRetryRequest naming the group.
- Cookie: the server always answers the first ClientHello with a
  HelloRetryRequest carrying a cookie (stateless, WOLFSSL_SEND_HRR_COOKIE,
  on with --enable-dtls13); ``-J n`` turns the cookie exchange off.
- KeyUpdate: client ``-I`` sends a KeyUpdate (update_requested) right
  before its message and then sends the message a second time after the
  reply; server ``-U`` sends one before its reply and then reads a second
  message. Neither can send more than one.
- Connection IDs: ``--cid [ID]`` on either side (ID: the ASCII bytes this
  side wants to receive; without ID an empty CID). Prints "CID extension was
  negotiated" and "Sending CID is <hex>".
- Post-handshake auth: server ``-Q`` requests a client certificate after the
  handshake (client ``-Q`` allows it). Server ``--send-ticket`` sends one more
  NewSessionTicket; one is sent after every handshake anyway.
- Data: there is no stdin mode. The client sends CLIENT_MESSAGE
  ("hello wolfssl!") once, reads one reply and prints it, then sends
  close_notify. The server prints "Client message: ..." (the example's read
  loop can drop that line, do not rely on it) and replies SERVER_REPLY;
  with ``-e`` it echoes every record back until close_notify instead (so the
  client prints its own message back). ``-C N`` serves N connections, ``-i``
  loops forever.
- Success: both print "SSL version is DTLSv1.3", "SSL cipher suite is
  TLS_...", "SSL curve name is X25519|SECP256R1". Errors: "wolfSSL error:
  ..." on stderr and exit status 1.
- Key log: our build appends the handshake's TLS 1.3 secrets to
  $SSLKEYLOGFILE (scripts/wolfssl-keylog.c), not those of KeyUpdates.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from helpers.peers import LOOPBACK, PeerProcess, require_binary, start_process
from helpers.pki import PemFiles

WOLFSSL_VERSION = "5.5.4"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-wolfssl.sh"

CLIENT_MESSAGE = "hello wolfssl!"  # what examples/client/client sends
SERVER_REPLY = "I hear you fa shizzle!"  # what examples/server/server answers without -e
DTLS13_BANNER = "SSL version is DTLSv1.3"  # both print it after the handshake

# the group names the examples print ("SSL curve name is ...") and their options
GROUP_OPTION = {"x25519": "-t", "secp256r1": "-Y"}
GROUP_PRINTED = {"x25519": "X25519", "secp256r1": "SECP256R1"}


@dataclass(frozen=True)
class WolfsslBuild:
    """Where the built wolfSSL is: its source tree (the examples' working
    directory) and the two example programs."""

    directory: Path
    source: Path
    server: Path
    client: Path
    info: str  # BUILD-INFO: Debian version, configure flags, build time


@functools.cache
def _build_directory() -> Path:
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{BUILD_SCRIPT} --print-dir failed ({result.returncode}): {result.stderr}",
            pytrace=False,
        )
    return Path(result.stdout.strip())


def wolfssl_build() -> WolfsslBuild:
    """The built wolfSSL DTLS 1.3 peer; fails the test (never skips) when it
    is not there, with the command that builds it."""
    directory = _build_directory()
    source = directory / f"wolfssl-{WOLFSSL_VERSION}"
    server = source / "examples" / "server" / "server"
    client = source / "examples" / "client" / "client"
    info = directory / "BUILD-INFO"
    missing = [str(p) for p in (info, server, client) if not p.exists()]
    if missing or not (os.access(server, os.X_OK) and os.access(client, os.X_OK)):
        pytest.fail(
            f"wolfSSL {WOLFSSL_VERSION} with DTLS 1.3 (the interop peer of DTLS tests) "
            f"is not built: missing {', '.join(missing) or 'execute permission'}. "
            f"Run `make peers` (scripts/build-wolfssl.sh builds it from Debian's source "
            f"package into {directory}) and re-run the tests.",
            pytrace=False,
        )
    return WolfsslBuild(directory, source, server, client, info.read_text())


def _common_options(
    *,
    group: str | None,
    mtu: int | None,
    cid: str | None,
    cipher: str | None,
) -> list[str]:
    args = ["-v", "4", f"-u{mtu}" if mtu is not None else "-u"]
    if group is not None:
        args.append(GROUP_OPTION[group])
    if cid is not None:
        # an empty CID must not swallow the next option: --cid then nothing
        args += ["--cid", cid] if cid else ["--cid"]
    if cipher is not None:
        args += ["-l", cipher]
    return args


def server_command(
    build: WolfsslBuild,
    port: int,
    credential: PemFiles,
    *,
    verify_client: bool = True,
    echo: bool = False,
    connections: int | None = None,
    group: str | None = None,
    mtu: int | None = None,
    cid: str | None = None,
    key_update: bool = False,
    cookie: bool = True,
    cipher: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """examples/server/server for one DTLS 1.3 peer on 127.0.0.1:``port``.

    ``credential`` is the server's PemFiles (its ``ca`` verifies clients when
    ``verify_client``). ``connections``: how many to serve (None: one; 0:
    forever, ``-i``). ``key_update``: send a KeyUpdate before the reply (``-U``;
    not with ``echo``). ``cookie=False``: no HelloRetryRequest cookie (``-J n``).
    """
    args = [str(build.server), "-p", str(port), "-c", str(credential.chain)]
    args += ["-k", str(credential.key)]
    args += ["-A", str(credential.ca)] if verify_client else ["-d"]
    args += _common_options(group=group, mtu=mtu, cid=cid, cipher=cipher)
    if key_update:
        args.append("-U")
    if echo:
        args.append("-e")
    if connections == 0:
        args.append("-i")
    elif connections is not None:
        args += ["-C", str(connections)]
    if not cookie:
        args += ["-J", "n"]
    return args + list(extra)


def client_command(
    build: WolfsslBuild,
    port: int,
    credential: PemFiles | None,
    *,
    ca: Path | None = None,
    host: str = LOOPBACK,
    group: str | None = None,
    hello_retry: bool = False,
    mtu: int | None = None,
    cid: str | None = None,
    key_update: bool = False,
    cipher: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """examples/client/client connecting to ``host:port`` with DTLS 1.3.

    ``credential``: the client's PemFiles (certificate sent, its ``ca``
    verifies the server), or None for no client certificate (then ``ca`` is
    required). ``hello_retry``: offer no key share (``-J``), forcing a
    HelloRetryRequest that names the group. ``key_update``: send a KeyUpdate
    before the message (``-I``).
    """
    args = [str(build.client), "-h", host, "-p", str(port)]
    if credential is not None:
        args += ["-c", str(credential.chain), "-k", str(credential.key)]
        args += ["-A", str(ca or credential.ca)]
    else:
        assert ca is not None, "client_command: give a credential or ca"
        args += ["-x", "-A", str(ca)]
    args += _common_options(group=group, mtu=mtu, cid=cid, cipher=cipher)
    if hello_retry:
        args.append("-J")
    if key_update:
        args.append("-I")
    return args + list(extra)


def udp_port_bound(port: int) -> bool:
    """True if some local UDP socket (IPv4 or IPv6) is bound to ``port``
    (read from /proc/net/udp*, so probing never sends the server a datagram)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)  # header line
            for line in f:
                fields = line.split()
                if len(fields) > 1 and fields[1].endswith(wanted):
                    return True
    return False


def _command(build: WolfsslBuild, args: Sequence[str]) -> list[str]:
    # The examples printf() their results; through a pipe stdout is block
    # buffered and would only arrive at exit. stdbuf -oL makes it line buffered.
    assert args and Path(args[0]).parent.parent.parent == build.source, args
    return [require_binary("stdbuf"), "-oL", "-eL", *args]


def _env(keylog: Path | None) -> dict[str, str]:
    return {"SSLKEYLOGFILE": str(keylog)} if keylog is not None else {}


@contextlib.contextmanager
def start_server(
    args: Sequence[str],
    *,
    keylog: Path | None = None,
    build: WolfsslBuild | None = None,
    timeout: float = 10.0,
) -> Iterator[PeerProcess]:
    """Start a server_command(); yield it once its UDP port is bound; kill it on exit.

    ``keylog``: file its handshake secrets are appended to (SSLKEYLOGFILE).
    """
    build = build or wolfssl_build()
    port = int(args[list(args).index("-p") + 1])
    with start_process(
        _command(build, args), env=_env(keylog), cwd=build.source, timeout=timeout
    ) as server:
        deadline = time.monotonic() + timeout
        while not udp_port_bound(port):
            if server.proc.poll() is not None:
                pytest.fail(f"wolfSSL server exited before binding\n{server.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"wolfSSL server did not bind UDP {port}\n{server.describe()}")
            time.sleep(0.02)
        yield server


@dataclass
class ClientResult:
    returncode: int
    stdout: str
    stderr: str
    description: str = field(repr=False)  # command, status and output, for assertions


def run_client(
    args: Sequence[str],
    *,
    keylog: Path | None = None,
    build: WolfsslBuild | None = None,
    timeout: float = 20.0,
) -> ClientResult:
    """Run a client_command() to completion (fails the test on timeout)."""
    build = build or wolfssl_build()
    with start_process(_command(build, args), env=_env(keylog), cwd=build.source) as client:
        returncode = client.wait(timeout)
        return ClientResult(returncode, client.stdout, client.stderr, client.describe())


# --- looking at what the peers send ---------------------------------------------------


@dataclass(frozen=True)
class RecordHeader:
    """One record of a datagram, as its header shows it (RFC 9147 §4).

    ``content_type`` is set for DTLSPlaintext (22 handshake, 21 alert, 26 ack);
    ``unified`` (the first byte, 0b001CSLEE) for DTLSCiphertext, whose
    sequence number bytes are still encrypted (§4.2.3).
    """

    raw: bytes = field(repr=False)  # the whole record, header and body
    content_type: int | None = None
    epoch: int | None = None  # DTLSPlaintext: the full 16-bit epoch
    unified: int | None = None

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def cid_present(self) -> bool:
        return self.unified is not None and bool(self.unified & 0x10)

    @property
    def seq_bits(self) -> int:
        assert self.unified is not None
        return 16 if self.unified & 0x08 else 8

    @property
    def length_present(self) -> bool:
        return self.unified is not None and bool(self.unified & 0x04)

    @property
    def epoch_bits(self) -> int:
        assert self.unified is not None
        return self.unified & 0x03


def split_records(datagram: bytes, cid_length: int = 0) -> list[RecordHeader]:
    """The records of one DTLS 1.3 datagram (RFC 9147 §4 and §4.1's
    demultiplexing), or ValueError if it does not parse. ``cid_length``: the
    length of the CIDs this receiver gets, when negotiated."""
    records = []
    at = 0
    while at < len(datagram):
        first = datagram[at]
        if first in (21, 22, 26):  # DTLSPlaintext: type, version, epoch, seq(6), length
            if at + 13 > len(datagram):
                raise ValueError("truncated DTLSPlaintext header")
            epoch = int.from_bytes(datagram[at + 3 : at + 5], "big")
            size = 13 + int.from_bytes(datagram[at + 11 : at + 13], "big")
            records.append(RecordHeader(datagram[at : at + size], content_type=first, epoch=epoch))
        elif first >> 5 == 0b001:  # DTLSCiphertext, unified header
            header = 1 + (cid_length if first & 0x10 else 0) + (2 if first & 0x08 else 1)
            if first & 0x04:
                if at + header + 2 > len(datagram):
                    raise ValueError("truncated unified header")
                size = header + 2 + int.from_bytes(datagram[at + header : at + header + 2], "big")
            else:  # no length: the record runs to the end of the datagram
                size = len(datagram) - at
            records.append(RecordHeader(datagram[at : at + size], unified=first))
        else:
            raise ValueError(f"not a DTLS 1.3 record: first byte {first}")
        if at + size > len(datagram):
            raise ValueError("record longer than the datagram")
        at += size
    return records


class RecordingRelay:
    """A UDP relay on 127.0.0.1 that forwards one client's datagrams to a
    server and back, unchanged, and records them: ``datagrams`` is a list of
    (direction, payload) with direction "c2s" or "s2c", in order of arrival.

        with RecordingRelay(server_port) as relay:
            run_client(client_command(build, relay.port, ...))
        relay.datagrams
    """

    def __init__(self, server_port: int, host: str = LOOPBACK) -> None:
        self.server = (host, server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.datagrams: list[tuple[str, bytes]] = []
        self._client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if source == self.server:
                    if self._client is None:
                        continue
                    self.datagrams.append(("s2c", data))
                    target = self._client
                else:
                    self._client = source
                    self.datagrams.append(("c2s", data))
                    target = self.server
            with contextlib.suppress(OSError):
                self.sock.sendto(data, target)

    def __enter__(self) -> RecordingRelay:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# --- opening wolfSSL's records with its key log (independently of longtls) -------------
# Straight from the specs, for the AES-GCM suites with SHA-256 (wolfSSL's default
# TLS_AES_128_GCM_SHA256), so tests can check what wolfSSL sent and which
# secrets it used without trusting longtls' own record layer.


def read_keylog(path: Path) -> dict[str, bytes]:
    """label -> secret of a key log holding one connection (draft-ietf-tls-keylogfile)."""
    secrets = {}
    for line in path.read_text().splitlines():
        label, _client_random, secret = line.split()
        secrets[label] = bytes.fromhex(secret)
    return secrets


def expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label with DTLS 1.3's "dtls13" prefix (RFC 9147 §5.9, no
    trailing space) and an empty context, SHA-256."""
    full_label = b"dtls13" + label
    info = length.to_bytes(2, "big") + bytes([len(full_label)]) + full_label + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


@dataclass(frozen=True)
class TrafficKeys:
    """One direction's record protection keys for one epoch (RFC 9846 §7.3,
    RFC 9147 §4.2.3 for sn_key)."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)
    sn_key: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes, key_length: int = 16) -> TrafficKeys:
        return cls(
            key=expand_label(secret, b"key", key_length),
            iv=expand_label(secret, b"iv", 12),
            sn_key=expand_label(secret, b"sn", key_length),
        )


def next_traffic_secret(secret: bytes) -> bytes:
    """application_traffic_secret_N+1 after a KeyUpdate (RFC 9846 §7.2), "dtls13" labels."""
    return expand_label(secret, b"traffic upd", 32)


@dataclass(frozen=True)
class OpenedRecord:
    sequence_number: int
    content_type: int
    content: bytes


def open_record(record: RecordHeader, keys: TrafficKeys, cid_length: int = 0) -> OpenedRecord:
    """Decrypt one DTLSCiphertext record (AES-GCM): remove the record number
    encryption (RFC 9147 §4.2.3: mask = AES-ECB(sn_key, ciphertext[0..15])),
    rebuild the AAD (the header with the plaintext sequence number, §4), open
    the AEAD with nonce = iv XOR sequence number (RFC 9846 §5.3), strip the
    padding. Only the low 8/16 bits of the sequence number are known here: fine
    for the first 256/65,536 records of an epoch. Raises cryptography's
    InvalidTag when the keys are wrong."""
    assert record.unified is not None, "not a DTLSCiphertext record"
    raw = record.raw
    seq_at = 1 + (cid_length if record.cid_present else 0)
    seq_len = record.seq_bits // 8
    body_at = seq_at + seq_len + (2 if record.length_present else 0)
    ciphertext = raw[body_at:]
    encryptor = Cipher(algorithms.AES(keys.sn_key), modes.ECB()).encryptor()
    mask = encryptor.update(ciphertext[:16]) + encryptor.finalize()
    seq_bytes = bytes(a ^ b for a, b in zip(raw[seq_at : seq_at + seq_len], mask, strict=False))
    sequence_number = int.from_bytes(seq_bytes, "big")
    aad = raw[:seq_at] + seq_bytes + raw[seq_at + seq_len : body_at]
    nonce = bytes(a ^ b for a, b in zip(keys.iv, sequence_number.to_bytes(12, "big"), strict=True))
    inner = AESGCM(keys.key).decrypt(nonce, ciphertext, aad).rstrip(b"\x00")
    return OpenedRecord(sequence_number, inner[-1], inner[:-1])
