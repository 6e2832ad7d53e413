"""PROXY protocol v2 (HAProxy's proxy-protocol.txt §2.2): the codec, a listener
that accepts it, and a tunnel that sends it on.

Expected headers are built here byte by byte from the layout of §2.2 (the
12-byte signature, version/command, family/transport, 16-bit length, address
block, TLVs), never with the encoder under test; CRC32C is checked against
RFC 3720 appendix B.4's test vectors.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Awaitable
from typing import Any

import pytest

from helpers.cli import LONGTLS
from helpers.pair import configs
from helpers.peers import LOOPBACK, free_port, start_process
from longtls import aio
from longtls.aio.proxy_protocol import header_to_send
from longtls.cli.main import main
from longtls.crypto.certificates import TrustStore
from longtls.errors import TLSError
from longtls.metrics import Metrics
from longtls.tunnel import Tunnel
from longtls.wire.proxy_protocol import (
    Command,
    Family,
    ProxyHeader,
    ProxyHeaderError,
    Transport,
    crc32c,
    parse,
)

SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def v2(ver_cmd: int, fam: int, block: bytes, length: int | None = None) -> bytes:
    """A version 2 header as §2.2 lays it out: sig, ver_cmd, fam, len (network order), block."""
    return SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(block) if length is None else length) + block


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind, len(value) >> 8, len(value) & 0xFF]) + value


def ipv4_block(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


def with_crc(header_without_crc_tlv: bytes) -> bytes:
    """Append a CRC32C TLV and patch the length, then fill in the checksum
    computed over the whole header with the field zeroed (§2.2.3)."""
    zeroed = bytearray(header_without_crc_tlv + tlv(0x03, bytes(4)))
    zeroed[14:16] = struct.pack(">H", len(zeroed) - 16)
    zeroed[-4:] = struct.pack(">I", crc32c(bytes(zeroed)))
    return bytes(zeroed)


# -- CRC32C --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        # RFC 3720 appendix B.4: the CRC bytes as listed (little-endian order on the wire there).
        (bytes(32), bytes.fromhex("aa36918a")),
        (b"\xff" * 32, bytes.fromhex("43aba862")),
        (bytes(range(32)), bytes.fromhex("4e79dd46")),
        (bytes(range(31, -1, -1)), bytes.fromhex("5cdb3f11")),
    ],
)
def test_crc32c_rfc3720_vectors(data: bytes, crc: bytes) -> None:
    assert crc32c(data) == int.from_bytes(crc, "little")


# -- parsing headers built from §2.2 -----------------------------------------------------------


def test_ipv4_tcp_proxy_header() -> None:
    wire = v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))
    assert len(wire) == 28
    header, used = parse(wire + b"\x16\x03\x01")  # the TLS that follows is not the header's
    assert used == 28
    assert header.command is Command.PROXY
    assert (header.family, header.transport) == (Family.INET, Transport.STREAM)
    assert header.source == ("203.0.113.7", 51000)
    assert header.destination == ("192.0.2.1", 443)
    assert header.tlvs == () and not header.crc32c_verified


def test_ipv6_udp_proxy_header() -> None:
    src, dst = ipaddress.IPv6Address("2001:db8::7"), ipaddress.IPv6Address("2001:db8::1:0:1")
    block = src.packed + dst.packed + (1234).to_bytes(2, "big") + (5678).to_bytes(2, "big")
    header, used = parse(v2(0x21, 0x22, block))
    assert used == 16 + 36
    assert (header.family, header.transport) == (Family.INET6, Transport.DGRAM)
    assert header.source == ("2001:db8::7", 1234)
    assert header.destination == ("2001:db8::1:0:1", 5678)


def test_unix_stream_proxy_header() -> None:
    block = b"/run/client.sock".ljust(108, b"\0") + b"/run/server.sock".ljust(108, b"\0")
    header, used = parse(v2(0x21, 0x31, block))
    assert used == 16 + 216
    assert header.family is Family.UNIX
    assert header.source == ("/run/client.sock", 0) and header.destination == ("/run/server.sock", 0)


def test_local_header_ignores_its_addresses() -> None:
    header, used = parse(v2(0x20, 0x00, b""))
    assert used == 16 and header.command is Command.LOCAL and not header.has_addresses
    # §2.2: receivers must use the length even for LOCAL, which may carry an address block.
    header, used = parse(v2(0x20, 0x11, ipv4_block("10.0.0.1", "10.0.0.2", 1, 2)))
    assert used == 28 and header.command is Command.LOCAL and not header.has_addresses


def test_tlvs_noop_dropped_unknown_kept_crc_verified() -> None:
    base = v2(0x21, 0x11, ipv4_block("198.51.100.9", "192.0.2.1", 40000, 8443)
              + tlv(0x04, b"\0\0") + tlv(0x02, b"example.com") + tlv(0xE1, b"x"))
    wire = with_crc(base)
    header, used = parse(wire)
    assert used == len(wire)
    assert header.tlvs == ((0x02, b"example.com"), (0xE1, b"x"))
    assert header.crc32c_verified
    flipped = bytearray(wire)
    flipped[-8] ^= 0x01  # a bit of the unknown TLV's value: the checksum no longer matches
    with pytest.raises(ProxyHeaderError, match="CRC32C"):
        parse(bytes(flipped))


def test_split_arrival_needs_more_until_complete() -> None:
    wire = with_crc(v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443) + tlv(0x05, b"id-1")))
    for cut in range(len(wire)):
        assert parse(wire[:cut]) is None, cut
    header, used = parse(wire)
    assert used == len(wire) and header.tlvs == ((0x05, b"id-1"),)


@pytest.mark.parametrize(
    ("wire", "reason", "fragment"),
    [
        (b"\x16\x03\x01\x00\xf4\x01", "missing", "signature"),  # a TLS ClientHello straight away
        (SIG[:5] + b"X", "missing", "signature"),  # refused at the first wrong byte
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "missing", "version 1"),
        (v2(0x11, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)), "malformed", "version 1"),
        (v2(0x22, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)), "malformed", "command"),
        (v2(0x21, 0x41, b""), "malformed", "family"),
        (v2(0x21, 0x13, b""), "malformed", "family"),
        (v2(0x21, 0x10, b""), "malformed", "not accepted"),  # AF_INET with an UNSPEC transport
        (v2(0x21, 0x11, b"\0" * 11), "malformed", "shorter than a INET address block"),
        (v2(0x21, 0x21, b"\0" * 12), "malformed", "shorter than a INET6 address block"),
        (v2(0x21, 0x31, b"\0" * 215), "malformed", "shorter than a UNIX address block"),
        (v2(0x21, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2) + b"\x02\x00"), "malformed", "too few"),
        (v2(0x21, 0x11, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2) + b"\x02\x00\x05abc"), "malformed", "runs past"),
        (v2(0x21, 0x00, tlv(0x03, b"\0\0\0")), "malformed", "CRC32C"),  # not 4 bytes
    ],
)
def test_malformed_headers_are_refused(wire: bytes, reason: str, fragment: str) -> None:
    with pytest.raises(ProxyHeaderError, match=fragment) as info:
        parse(wire)
    assert info.value.reason == reason


def test_refused_as_soon_as_the_fixed_part_is_wrong() -> None:
    # No need to wait for the 16-bit length: the 13th byte is already wrong.
    with pytest.raises(ProxyHeaderError, match="version"):
        parse(SIG + b"\x31")


# -- building --------------------------------------------------------------------------------


def test_encode_matches_the_layout() -> None:
    assert ProxyHeader.local().encode() == v2(0x20, 0x00, b"")
    header = ProxyHeader.proxy(("203.0.113.7", 51000), ("192.0.2.1", 443))
    assert header.encode() == v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))
    assert header.encode(with_crc32c=True) == with_crc(header.encode())
    # a dual-stack socket's IPv4-mapped addresses go out as IPv4
    mapped = ProxyHeader.proxy(("::ffff:203.0.113.7", 1), ("::ffff:192.0.2.1", 2))
    assert mapped.encode() == v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 1, 2))
    six = ProxyHeader.proxy(("2001:db8::7", 1), ("2001:db8::1", 2))
    assert six.encode()[12:16] == b"\x21\x21\x00\x24"


def test_header_to_send_falls_back_to_the_socket_then_local() -> None:
    received = parse(v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443) + tlv(0x05, b"hop")))
    assert received is not None
    info: dict[str, Any] = {"proxy_header": received[0], "peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}
    # the received addresses go on; the previous hop's TLVs do not
    assert header_to_send(info.get) == v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))
    info["proxy_header"] = ProxyHeader.local()
    assert header_to_send(info.get) == v2(0x21, 0x11, ipv4_block("127.0.0.1", "127.0.0.1", 1, 2))
    assert header_to_send({"peername": "/run/x.sock", "sockname": "/run/y.sock"}.get) == v2(0x20, 0x00, b"")


# -- a listener that accepts it -------------------------------------------------------------------


def run(coro: Awaitable[Any], timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def report_peer(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
    """Answer the peer address the server sees, then echo until EOF."""
    host, port = writer.get_extra_info("peername")[:2]
    writer.write(f"{host} {port}\n".encode())
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def tls_exchange(port: int, client_cfg: Any, first: bytes = b"", *, pieces: int = 1) -> bytes:
    """Connect, send ``first`` (in ``pieces`` writes) before TLS, then return the server's first line."""
    options = aio.StreamOptions()
    if first and pieces == 1:
        options = aio.StreamOptions(send_proxy=first)
        reader, writer = await aio.connect(LOOPBACK, port, client_cfg, options)
    else:
        # A header in many segments: write them on the socket, then start TLS on it.
        sock = socket.create_connection((LOOPBACK, port))
        step = max(1, len(first) // pieces)
        for i in range(0, len(first), step):
            sock.sendall(first[i:i + step])
            await asyncio.sleep(0.01)
        sock.setblocking(False)
        reader, writer = await aio.connect(None, None, client_cfg, options, sock=sock)  # type: ignore[arg-type]
    line = await reader.readline()
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.close()
    await writer.wait_closed()
    return line


def test_listener_takes_the_client_address_from_the_header(caplog: pytest.LogCaptureFixture) -> None:
    client_cfg, server_cfg, _ = configs()
    metrics = Metrics()
    header = v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))
    six = v2(0x21, 0x21, ipaddress.IPv6Address("2001:db8::7").packed + ipaddress.IPv6Address("2001:db8::1").packed
             + (7).to_bytes(2, "big") + (443).to_bytes(2, "big"))

    async def main() -> list[bytes]:
        server = await aio.start_server(
            report_peer, LOOPBACK, 0, server_cfg, aio.StreamOptions(accept_proxy=2.0, metrics=metrics)
        )
        port = server.sockets[0].getsockname()[1]
        lines = [
            await tls_exchange(port, client_cfg, header),
            await tls_exchange(port, client_cfg, header, pieces=len(header)),  # one byte at a time
            await tls_exchange(port, client_cfg, six),
        ]
        server.close()
        return lines

    with caplog.at_level(logging.WARNING, logger="longtls"):
        lines = run(main())
    assert lines == [b"203.0.113.7 51000\n", b"203.0.113.7 51000\n", b"2001:db8::7 7\n"]
    assert metrics.handshakes == {"ok": 3, "failed": 0}
    assert sum(metrics.proxy_header_errors.values()) == 0
    assert not caplog.records


async def refused(port: int, data: bytes, *, then_close: bool = False) -> bytes:
    """Send ``data`` raw; return what comes back before the server closes (it must close)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(data)
    if then_close:
        writer.write_eof()
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        answer = b""
    writer.close()
    return answer


@pytest.mark.parametrize(
    ("data", "then_close", "reason", "message"),
    [
        (b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03", False, "missing", "not its signature"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n", False, "missing", "version 1"),
        (v2(0x21, 0x11, b"\0" * 4), False, "malformed", "shorter than a INET address block"),
        (v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 1, 2))[:20], True, "closed", "before a complete"),
        (b"", False, "timeout", "within 0.3 s"),
        (SIG[:8], False, "timeout", "within 0.3 s"),
    ],
)
def test_missing_malformed_cut_or_late_header_closes_and_logs_once(
    caplog: pytest.LogCaptureFixture, data: bytes, then_close: bool, reason: str, message: str
) -> None:
    _, server_cfg, _ = configs()
    metrics = Metrics()
    reached: list[bool] = []

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        reached.append(True)

    async def main() -> bytes:
        server = await aio.start_server(
            handler, LOOPBACK, 0, server_cfg, aio.StreamOptions(accept_proxy=0.3, metrics=metrics)
        )
        answer = await refused(server.sockets[0].getsockname()[1], data, then_close=then_close)
        await asyncio.sleep(0.05)
        server.close()
        return answer

    with caplog.at_level(logging.DEBUG, logger="longtls"):
        answer = run(main())
    assert answer == b""  # no TLS alert, no byte at all: TLS never started
    assert not reached
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert message in warnings[0].getMessage() and "127.0.0.1:" in warnings[0].getMessage()
    assert metrics.proxy_header_errors[reason] == 1 and sum(metrics.proxy_header_errors.values()) == 1
    assert metrics.handshakes == {"ok": 0, "failed": 0}  # not a TLS handshake failure
    assert f'longtls_proxy_header_errors_total{{reason="{reason}"}} 1' in metrics.render()


def test_local_health_check_is_quiet_and_local_then_tls_works(caplog: pytest.LogCaptureFixture) -> None:
    client_cfg, server_cfg, _ = configs()
    metrics = Metrics()

    async def main() -> bytes:
        server = await aio.start_server(
            report_peer, LOOPBACK, 0, server_cfg, aio.StreamOptions(accept_proxy=0.3, metrics=metrics)
        )
        port = server.sockets[0].getsockname()[1]
        # a health check: LOCAL header, then the proxy closes; and one that stays silent
        assert await refused(port, v2(0x20, 0x00, b""), then_close=True) == b""
        assert await refused(port, v2(0x20, 0x00, b"")) == b""
        # LOCAL followed by TLS (HAProxy check-ssl): the socket's own address
        line = await tls_exchange(port, client_cfg, v2(0x20, 0x00, b""))
        server.close()
        return line

    with caplog.at_level(logging.INFO, logger="longtls"):
        line = run(main())
    host, port = line.decode().split()
    assert host == LOOPBACK and int(port) > 0
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    assert metrics.handshakes == {"ok": 1, "failed": 0}
    assert sum(metrics.proxy_header_errors.values()) == 0


# -- the tunnel: accept, then send on ------------------------------------------------------------


async def header_reading_backend(seen: list[bytes]) -> tuple[asyncio.Server, int]:
    """A plain TCP service that records the first 28 bytes (an IPv4 PROXY header) and echoes the rest."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readexactly(28))
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    return server, server.sockets[0].getsockname()[1]


def test_tunnel_server_accepts_and_sends_the_real_client_address(caplog: pytest.LogCaptureFixture) -> None:
    client_cfg, server_cfg, _ = configs()
    seen: list[bytes] = []

    async def main() -> None:
        backend, backend_port = await header_reading_backend(seen)
        tunnel = Tunnel(
            "server", (LOOPBACK, 0), (LOOPBACK, backend_port), server_cfg, accept_proxy=2.0, send_proxy=True
        )
        await tunnel.start()
        port = tunnel.sockets[0][1]
        header = v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))
        reader, writer = await aio.connect(LOOPBACK, port, client_cfg, aio.StreamOptions(send_proxy=header))
        writer.write(b"through the tunnel")
        assert await reader.readexactly(18) == b"through the tunnel"
        writer.close()
        await writer.wait_closed()
        await tunnel.shutdown(1)
        backend.close()

    with caplog.at_level(logging.DEBUG, logger="longtls.tunnel"):
        run(main())
    assert seen == [v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))]
    # the tunnel's own lines name the client, not the proxy
    assert "203.0.113.7:51000: relaying" in caplog.text


def test_tunnel_client_sends_the_application_address_to_the_tls_server() -> None:
    client_cfg, server_cfg, _ = configs()

    async def main() -> tuple[bytes, tuple[str, int]]:
        server = await aio.start_server(report_peer, LOOPBACK, 0, server_cfg, aio.StreamOptions(accept_proxy=2.0))
        tunnel = Tunnel(
            "client", (LOOPBACK, 0), (LOOPBACK, server.sockets[0].getsockname()[1]), client_cfg, send_proxy=True
        )
        await tunnel.start()
        reader, writer = await asyncio.open_connection(*tunnel.sockets[0])
        app_address = writer.get_extra_info("sockname")[:2]
        line = await reader.readline()
        writer.close()
        await tunnel.shutdown(1)
        server.close()
        return line, app_address

    line, (host, port) = run(main())
    assert line == f"{host} {port}\n".encode()


# -- the command line -------------------------------------------------------------------------------


def test_cli_flags_documented_and_refused_where_they_cannot_work(capsys: pytest.CaptureFixture[str]) -> None:
    def longtls(*argv: str) -> tuple[int, str]:
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out + err

    helps = longtls("tunnel", "server", "--help")[1] + longtls("serve", "--help")[1]
    for flag in ("--accept-proxy", "--proxy-timeout", "--send-proxy"):
        assert flag in helps
    assert "--send-proxy" in longtls("tunnel", "client", "--help")[1]
    status, err = longtls(
        "tunnel", "server", "--udp", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1", "--accept-proxy"
    )
    assert (status, err) == (1, "longtls: error: --accept-proxy does not apply to --udp (the PROXY protocol is for TCP here)\n")
    status, err = longtls("serve", "--echo", "--proxy-timeout", "3")
    assert (status, err) == (1, "longtls: error: --proxy-timeout applies to --accept-proxy only\n")


def test_serve_accept_proxy(tmp_pki_files: Any) -> None:
    """``longtls serve --echo --accept-proxy`` as a program: a client behind a header is
    echoed, one without is closed before TLS with one line naming why."""
    files = tmp_pki_files("ecdsa-p256")
    client_cfg, _, _ = configs()
    client_cfg.trust_store = TrustStore.from_pem_file(str(files.ca))
    port = free_port()
    header = v2(0x21, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 51000, 443))

    async def clients() -> None:
        reader, writer = await aio.connect(LOOPBACK, port, client_cfg, aio.StreamOptions(send_proxy=header))
        writer.write(b"echo me")
        assert await reader.readexactly(7) == b"echo me"
        writer.close()
        await writer.wait_closed()
        with pytest.raises((TLSError, aio.ConnectionLostError, OSError)):
            await aio.connect(LOOPBACK, port, client_cfg)

    with start_process(
        [*LONGTLS, "serve", "--echo", "--listen", f"{LOOPBACK}:{port}", "--cert", str(files.server.chain),
         "--key", str(files.server.key), "--accept-proxy"],
        ready_pattern=r"serving \(echo\)",
    ) as serve:
        run(clients())
        serve.wait_for_output(r"not its signature\): closing")
        refusals = [line for line in serve.stderr.splitlines() if "PROXY protocol header" in line]
        assert len(refusals) == 1 and f"{LOOPBACK}:" in refusals[0], serve.describe()
