"""--ticket-keys: session-ticket keys shared by servers, with rotation (issue 15).

A ticket sealed by one server opens on another that reads the same key file;
after a rotation (a new first key) old tickets still open and new ones are
sealed under the new key; a ticket under a key dropped from the file gets a
full handshake, not an error; a broken file is one error line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.cli import LONGTLS
from helpers.pair import Pair, configs, connect
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles
from longtls import aio
from longtls.cli import ticket_keys
from longtls.cli.main import main
from longtls.config import Configuration
from longtls.errors import ConfigurationError
from longtls.events import Event, HandshakeComplete, SessionTicket, SessionTicketReceived

K1, K2, K3 = (bytes([n]) * 32 for n in (1, 2, 3))


def _write(path: Path, *lines: str, mode: int = 0o600) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(mode)
    return str(path)


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _name(key: bytes) -> bytes:
    """The key name in front of a ticket, from the construction docs/scaling.md gives."""
    return hashlib.sha256(b"longtls ticket key name" + key).digest()[:8]


def _servers() -> tuple[Configuration, Configuration]:
    # Tickets need a profile that allows them: EKU draft-13 §6 disables them.
    client, server, _ = configs(client_extended_key_update=False, server_extended_key_update=False)
    return client, server


def _server_with(server: Configuration, keys: tuple[bytes, ...]) -> Configuration:
    """Another server process: the same certificate, its own ticket_key, keys from a file."""
    return Configuration(**{**server.__dict__, "ticket_key": os.urandom(32), "ticket_keys": keys,
                            "ticket_generations": {}})


def _tickets(pair: Pair) -> list[SessionTicket]:
    return [e.ticket for e in pair.client_events if isinstance(e, SessionTicketReceived)]


def _resumed(client: Configuration, server: Configuration, ticket: SessionTicket) -> Pair:
    pair = connect(Configuration(**{**client.__dict__, "session_ticket": ticket}), server)
    (done,) = [e for e in pair.client_events if isinstance(e, HandshakeComplete)]
    (server_done,) = [e for e in pair.server_events if isinstance(e, HandshakeComplete)]
    assert done.resumed == server_done.resumed
    pair.client.send(b"after the handshake")
    pair.pump()
    assert pair.received("server") == b"after the handshake"  # resumed or not, it works
    return pair


def _was_resumed(pair: Pair) -> bool:
    return any(e.resumed for e in pair.client_events if isinstance(e, HandshakeComplete))


def test_a_ticket_from_server_a_resumes_on_server_b_with_the_same_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "keys", "# shared by a and b", _b64(K1))
    client, base = _servers()
    a = _server_with(base, ticket_keys.load_ticket_keys(path))
    b = _server_with(base, ticket_keys.load_ticket_keys(path))
    ticket = _tickets(connect(client, a))[0]
    assert ticket.ticket[:8] == _name(K1)
    assert _was_resumed(_resumed(client, b, ticket))
    # Without the file, each process has its own random ticket_key: no resumption.
    assert not _was_resumed(_resumed(client, _server_with(base, ()), ticket))


def test_rotation_keeps_old_tickets_and_seals_new_ones_under_the_new_key(tmp_path: Path) -> None:
    client, base = _servers()
    path = tmp_path / "keys"
    before = _server_with(base, ticket_keys.load_ticket_keys(_write(path, _b64(K1))))
    old_ticket = _tickets(connect(client, before))[0]

    # Rotation: a new first key, the old one kept below it.
    after = _server_with(base, ticket_keys.load_ticket_keys(_write(path, _b64(K2), _b64(K1))))
    assert after.effective_ticket_keys == (K2, K1)
    resumed = _resumed(client, after, old_ticket)
    assert _was_resumed(resumed)
    new_ticket = _tickets(resumed)[0]
    assert new_ticket.ticket[:8] == _name(K2)
    # Sealed under K2 indeed: a server with K2 alone opens it, one with K1 alone does not.
    assert _was_resumed(_resumed(client, _server_with(base, (K2,)), new_ticket))
    assert not _was_resumed(_resumed(client, _server_with(base, (K1,)), new_ticket))


def test_a_ticket_under_a_removed_key_gets_a_full_handshake(tmp_path: Path) -> None:
    client, base = _servers()
    old = _server_with(base, (K1,))
    ticket = _tickets(connect(client, old))[0]
    retired = _server_with(base, ticket_keys.load_ticket_keys(_write(tmp_path / "keys", _b64(K2), _b64(K3))))
    pair = _resumed(client, retired, ticket)  # no alert, no exception: a full handshake
    assert not _was_resumed(pair)
    assert _tickets(pair)[0].ticket[:8] == _name(K2)


def test_the_file_format(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "keys",
        "# newest first", "", f"  {_b64(K2)}  ", K1.hex(), _b64(K2), "   # an indented comment",
    )
    assert ticket_keys.load_ticket_keys(path) == (K2, K1)  # hex too; repeats dropped


@pytest.mark.parametrize(("lines", "fragment"), [
    (["# only a comment", ""], "holds no ticket key"),
    (["# a short key", _b64(b"\x05" * 16)], "line 2: not a ticket key"),
    ([_b64(K1), "not base64 at all!"], "line 2: not a ticket key"),
    ([_b64(K1) + _b64(K2)], "line 1: not a ticket key"),
    (["zz" * 32], "line 1: not a ticket key"),
])
def test_a_broken_file_is_refused_with_its_line_never_its_contents(
    tmp_path: Path, lines: list[str], fragment: str
) -> None:
    path = _write(tmp_path / "keys", *lines)
    with pytest.raises(ConfigurationError) as info:
        ticket_keys.load_ticket_keys(path)
    message = str(info.value)
    assert message.startswith(path) and fragment in message, message
    for line in lines:
        if line and not line.startswith("#"):
            assert line not in message


def test_a_missing_or_binary_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"--ticket-keys .*missing: No such file"):
        ticket_keys.load_ticket_keys(str(tmp_path / "missing"))
    binary = tmp_path / "binary"
    binary.write_bytes(os.urandom(16) + b"\xff\xfe")
    with pytest.raises(ConfigurationError, match="not a text file"):
        ticket_keys.load_ticket_keys(str(binary))


def test_a_file_others_may_read_is_used_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    private = _write(tmp_path / "private", _b64(K1), mode=0o600)
    shared = _write(tmp_path / "shared", _b64(K1), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="longtls.cli"):
        assert ticket_keys.load_ticket_keys(private) == (K1,)
        assert not caplog.records
        assert ticket_keys.load_ticket_keys(shared) == (K1,)
    (record,) = caplog.records
    assert "mode 644" in record.getMessage() and "chmod 600" in record.getMessage()
    assert _b64(K1) not in record.getMessage()


def test_configuration_refuses_keys_that_are_not_32_bytes() -> None:
    _, server = _servers()
    server.ticket_keys = (K1, b"\x01" * 16)
    with pytest.raises(ConfigurationError, match="32 bytes"):
        server.validate()
    assert repr(K1) not in repr(Configuration(is_client=False, ticket_keys=(K1,)))


def test_serve_and_tunnel_refuse_a_broken_ticket_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tmp_pki_files: Callable[..., PkiFiles]
) -> None:
    files = tmp_pki_files("ecdsa-p256")
    cert, key = str(files.server.cert), str(files.server.key)
    bad = _write(tmp_path / "keys", "# nothing yet")
    for command in (
        ["serve", "--echo", "--port", "0"],
        ["tunnel", "server", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9"],
    ):
        status = main([*command, "--cert", cert, "--key", key, "--ticket-keys", bad])
        err = capsys.readouterr().err.strip()
        assert status == 1, err
        assert err == f"longtls: error: {bad} holds no ticket key (one per line: 32 bytes in base64 " \
            "(head -c 32 /dev/urandom | base64) or 64 hex digits)", err


async def _ticket_from(port: int, config: Configuration) -> tuple[bool, list[SessionTicket]]:
    """Connect, exchange a line (the tickets come before the answer), close:
    (resumed?, the tickets received)."""
    tickets: list[SessionTicket] = []

    def on_event(event: Event) -> None:
        if isinstance(event, SessionTicketReceived):
            tickets.append(event.ticket)

    reader, writer = await aio.connect(LOOPBACK, port, config, aio.StreamOptions(event_handler=on_event))
    writer.write(b"ping\n")
    async with asyncio.timeout(10):
        assert await reader.readexactly(5) == b"ping\n"
    resumed = writer.handshake.resumed
    writer.close()
    return resumed, tickets


@pytest.mark.parametrize("command", ["serve", "tunnel"])
def test_sighup_rereads_the_file_and_keeps_what_it_still_lists(
    tmp_path: Path, tmp_pki_files: Callable[..., PkiFiles], command: str
) -> None:
    files = tmp_pki_files("ecdsa-p256")
    keys = tmp_path / "keys"
    _write(keys, _b64(K1))
    port, backend_port = free_port(), free_port()
    where = ["serve", "--echo", "--port", str(port)] if command == "serve" else [
        "tunnel", "server", "--listen", f"{LOOPBACK}:{port}", "--forward", f"{LOOPBACK}:{backend_port}",
    ]
    args = [*LONGTLS, *where, "--cert", str(files.server.cert), "--key", str(files.server.key),
            "--ticket-keys", str(keys), "--no-eku"]  # EKU draft-13 §6 would disable tickets
    config = Configuration(is_client=True, server_name="localhost", extended_key_update=False)
    config.load_verify_locations(str(files.server.ca))

    def offering(ticket: SessionTicket) -> Configuration:
        return Configuration(**{**config.__dict__, "session_ticket": ticket})

    async def scenario(server: PeerProcess) -> None:
        backend = await asyncio.start_server(_echo, LOOPBACK, backend_port)
        _, (old, *_) = await _ticket_from(port, config)
        assert old.ticket[:8] == _name(K1)
        # Rotation: K2 first, K1 kept; SIGHUP.
        _write(keys, _b64(K2), _b64(K1))
        server.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(server.wait_for_output, "reloaded")
        resumed, (new, *_) = await _ticket_from(port, offering(old))
        assert resumed and new.ticket[:8] == _name(K2)
        # K1 retired: its tickets get a full handshake; K2's still resume.
        _write(keys, _b64(K2))
        server.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(server.wait_for_output, r"reloaded[^\n]*\n(.|\n)*reloaded")
        assert (await _ticket_from(port, offering(old)))[0] is False
        assert (await _ticket_from(port, offering(new)))[0] is True
        # A broken file at a reload keeps the keys in use.
        _write(keys, "not a key")
        server.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(server.wait_for_output, "line 1: not a ticket key")
        assert (await _ticket_from(port, offering(new)))[0] is True
        backend.close()

    with start_process(args, ready_pattern=r"^longtls: (serving|tunnel server)") as server:
        asyncio.run(scenario(server))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
