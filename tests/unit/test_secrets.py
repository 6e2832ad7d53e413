"""No secret reaches a log, a repr, a str or an exception message.

Each test runs real sessions (handshake, data, updates, resumption, client
authentication, a failure, the asyncio layer) with logging at DEBUG on the
root and "longtls" loggers, collects

* every secret of the session: each key log line (``Configuration.keylog``),
  every attribute of both sides' ``HandshakeSecrets``, the EKU state's main,
  exporter and resumption secrets, the traffic keys and IVs derived from each
  traffic secret (``longtls.crypto.key_schedule.traffic_keys``), the finished
  keys, the ephemeral private keys and the (EC)DHE shared secret, the
  long-term private keys, the server's ticket key and each ticket's PSK;

* every public object reachable from the connections, their configurations
  and events (Connection, Configuration, events, handshake engines,
  ExtendedKeyUpdate, RecordProtection, Transcript, HandshakeSecrets,
  SessionTicket, KeyShare, Group, TrustStore, reassembler, reader ...), and
  takes ``repr`` and ``str`` of each, plus every exception raised and every
  log record;

and looks for each secret as lower- and upper-case hex, as its ``bytes``
repr, and by 16-byte windows of either (a truncated dump is a leak too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from helpers.pair import Pair, configs, connect
from helpers.tamper import KeyLog, negotiated_suite, rewrite_flight
from longtls.config import ClientAuth, Configuration
from longtls.connection import Connection
from longtls.constants import HandshakeType, NamedGroup
from longtls.crypto import key_schedule as ks
from longtls.crypto.groups import KeyShare, get_group
from longtls.crypto.suites import SUITES
from longtls.errors import TLSError
from longtls.events import Event, SessionTicketReceived

MIN_SECRET = 12  # IVs are the shortest secrets


# ---------------------------------------------------------------------------
# Collecting secrets
# ---------------------------------------------------------------------------


class Secrets:
    def __init__(self) -> None:
        self.values: dict[bytes, str] = {}  # secret -> where it came from

    def add(self, value: object, where: str) -> None:
        if isinstance(value, bytes | bytearray) and len(value) >= MIN_SECRET and any(value):
            self.values.setdefault(bytes(value), where)

    def add_traffic_secret(self, secret: bytes, where: str) -> None:
        self.add(secret, where)
        for suite in SUITES.values():
            if suite.hash_length == len(secret):
                key, iv = ks.traffic_keys(suite, secret)
                self.add(key, f"{where} key ({suite.suite.name})")
                self.add(iv, f"{where} iv ({suite.suite.name})")
                self.add(ks.finished_key(suite, secret), f"{where} finished key")

    def from_keylog(self, log: KeyLog, lines: list[str]) -> None:
        for line in lines:
            label, _random, secret = line.split()
            self.add_traffic_secret(bytes.fromhex(secret), f"keylog {label}")

    def from_connection(self, conn: Connection, side: str) -> None:
        hs = conn.handshake
        if hs.secrets is not None:
            for name in ks.HandshakeSecrets.__slots__:
                if name.endswith("_hash") or name == "suite":
                    continue  # transcript hashes are not secret
                value = getattr(hs.secrets, name)
                if "traffic" in name:
                    self.add_traffic_secret(value, f"{side} {name}")
                else:
                    self.add(value, f"{side} {name}")
            self.add(hs.secrets.binder_key(), f"{side} binder key")
        eku = conn.eku
        if eku is not None:
            self.add(eku._main_secret, f"{side} EKU main secret")
            self.add(eku.exporter_secret, f"{side} EKU exporter secret")
            self.add(eku.resumption_secret, f"{side} EKU resumption secret")
            for gen, secret in eku.epoch_exporters.items():
                self.add(secret, f"{side} epoch exporter {gen}")
        self.add_traffic_secret(conn.current_read_secret, f"{side} read secret")
        self.add_traffic_secret(conn.current_write_secret, f"{side} write secret")
        self.add(conn.resumption_secret, f"{side} resumption secret")

    def from_configuration(self, cfg: Configuration, side: str) -> None:
        self.add(cfg.ticket_key, f"{side} ticket_key")
        key = cfg.private_key
        if key is not None:
            self.add(
                key.private_bytes(
                    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                f"{side} private key (DER)",
            )
            numbers = getattr(key, "private_numbers", None)
            if numbers is not None:
                value = numbers().private_value
                self.add(value.to_bytes((value.bit_length() + 7) // 8, "big"), f"{side} private scalar")

    def from_events(self, events: Iterable[Event], side: str) -> None:
        for event in events:
            if isinstance(event, SessionTicketReceived):
                self.add(event.ticket.psk, f"{side} ticket PSK")


class FixedShares:
    """A key_share_factory with known private keys (x25519), recorded."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.private: list[bytes] = []

    def __call__(self, group: NamedGroup) -> KeyShare:
        assert group == NamedGroup.x25519
        data = bytes([self.seed, len(self.private) + 1]) * 16
        self.private.append(data)
        return get_group(group).from_private_bytes(data)


def shared_secrets(a: FixedShares, b: FixedShares) -> Iterator[bytes]:
    for pa in a.private:
        for pb in b.private:
            peer = x25519.X25519PrivateKey.from_private_bytes(pb).public_key()
            yield x25519.X25519PrivateKey.from_private_bytes(pa).exchange(peer)


# ---------------------------------------------------------------------------
# Collecting what could leak
# ---------------------------------------------------------------------------

_LEAVES = (str, bytes, bytearray, memoryview, int, float, complex, bool, type(None), enum.Enum, type)


def reachable(roots: Iterable[object]) -> list[object]:
    """Objects reachable from ``roots`` through attributes and containers,
    following longtls objects (not the event loop or cryptography internals)."""
    seen: set[int] = set()
    out: list[object] = []
    queue: deque[object] = deque(roots)
    while queue:
        obj = queue.popleft()
        if id(obj) in seen or isinstance(obj, _LEAVES) or (callable(obj) and not _is_longtls(obj)):
            continue
        seen.add(id(obj))
        out.append(obj)
        if isinstance(obj, list | tuple | set | frozenset | deque):
            queue.extend(obj)
            continue
        if isinstance(obj, dict):
            queue.extend(obj.keys())
            queue.extend(obj.values())
            continue
        if not _is_longtls(obj):
            continue
        for name in _attribute_names(obj):
            try:
                queue.append(getattr(obj, name))
            except AttributeError:
                pass
    return out


def _is_longtls(obj: object) -> bool:
    return type(obj).__module__.startswith("longtls")


def _attribute_names(obj: object) -> set[str]:
    names: set[str] = set(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
    if dataclasses.is_dataclass(obj):
        names.update(f.name for f in dataclasses.fields(obj))
    return names - {"__weakref__", "__dict__"}


def texts_of(objects: Iterable[object]) -> list[tuple[str, str]]:
    """repr and str of each object (containers are walked, not printed: a
    dict of secrets held privately is not something anyone prints)."""
    out = []
    for obj in objects:
        if isinstance(obj, list | tuple | set | frozenset | deque | dict):
            continue
        for fn in (repr, str):
            try:
                out.append((f"{fn.__name__}({type(obj).__name__})", fn(obj)))
            except Exception as exc:  # a repr that fails is a bug of its own
                raise AssertionError(f"{fn.__name__} of {type(obj).__name__} raised {exc!r}") from exc
    return out


def find_leaks(secrets: Secrets, texts: list[tuple[str, str]]) -> list[str]:
    needles: list[tuple[str, str]] = []
    for secret, where in secrets.values.items():
        forms = {secret.hex(), secret.hex().upper(), repr(secret)[2:-1]}
        for i in range(0, max(1, len(secret) - 16 + 1), 8):
            window = secret[i : i + 16]
            if len(window) == 16:
                forms.update({window.hex(), window.hex().upper()})
        needles.extend((form, where) for form in forms if len(form) >= 2 * MIN_SECRET)
    leaks = []
    for label, text in texts:
        for form, where in needles:
            if form in text:
                leaks.append(f"{where} appears in {label}: ...{text[max(0, text.find(form) - 40):][:120]}...")
    return leaks


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="longtls")
    caplog.set_level(logging.DEBUG, logger="longtls.aio")
    return caplog


def log_texts(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    out = [("log text", caplog.text)]
    for record in caplog.records:
        out.append((f"log {record.name}", record.getMessage()))
        out.append((f"log args {record.name}", repr(record.args)))
        if record.exc_info and record.exc_info[1] is not None:
            out.append(("log exception", repr(record.exc_info[1])))
    return out


def check(secrets: Secrets, roots: list[object], extra: list[tuple[str, str]]) -> int:
    objects = reachable(roots)
    texts = texts_of(objects) + extra
    leaks = find_leaks(secrets, texts)
    assert not leaks, "\n".join(leaks[:20])
    # the test is only as good as what it looked at
    assert len(secrets.values) >= 20, len(secrets.values)
    return len(objects)


def session_configs(**kwargs: Any) -> tuple[Configuration, Configuration, KeyLog, list[str], FixedShares, FixedShares]:
    lines: list[str] = []
    log = KeyLog()

    def keylog(line: str) -> None:
        lines.append(line)
        log(line)

    c_shares, s_shares = FixedShares(1), FixedShares(2)
    c, s, _ = configs(
        client_groups=[NamedGroup.x25519], client_key_share_groups=[NamedGroup.x25519],
        client_key_share_factory=c_shares, server_key_share_factory=s_shares,
        client_keylog=keylog, server_keylog=keylog, **kwargs,
    )
    return c, s, log, lines, c_shares, s_shares


def all_secrets(
    pairs: list[Pair], log: KeyLog, lines: list[str], shares: tuple[FixedShares, FixedShares]
) -> Secrets:
    secrets = Secrets()
    secrets.from_keylog(log, lines)
    for pair in pairs:
        secrets.from_connection(pair.client, "client")
        secrets.from_connection(pair.server, "server")
        secrets.from_configuration(pair.client.configuration, "client")
        secrets.from_configuration(pair.server.configuration, "server")
        secrets.from_events(pair.client_events, "client")
    for share in shares:
        for private in share.private:
            secrets.add(private, "ephemeral private key")
    for shared in shared_secrets(*shares):
        secrets.add(shared, "ECDHE shared secret")
    return secrets


def roots_of(pairs: list[Pair]) -> list[object]:
    roots: list[object] = []
    for pair in pairs:
        roots += [pair, pair.client, pair.server, pair.client.configuration, pair.server.configuration]
        roots += [pair.client.handshake, pair.server.handshake, pair.client.eku, pair.server.eku]
        roots += [pair.client.read_protection, pair.server.read_protection]
        roots += [pair.client.handshake.transcript, pair.server.handshake.transcript]
        roots += [pair.client.handshake.secrets, pair.server.handshake.secrets]
        roots += pair.client_events + pair.server_events
    return roots


# ---------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10", "draft-05"])
def test_handshake_and_extended_key_updates(profile: str, debug_logs: pytest.LogCaptureFixture) -> None:
    c, s, log, lines, cs, ss = session_configs(client_eku_profile=profile, server_eku_profile=profile)
    snapshots: list[Secrets] = []
    pair = connect(c, s)
    for i in range(4):
        (pair.client if i % 2 == 0 else pair.server).extended_key_update()
        pair.client.send(b"client data")
        pair.server.send(b"server data")
        pair.pump()
        snapshots.append(all_secrets([pair], log, lines, (cs, ss)))  # every generation
        pair.client.export_keying_material("EXPERIMENTAL test", b"", 32)
        pair.client.export_epoch_keying_material("EXPERIMENTAL test", b"", 32)
    secrets = all_secrets([pair], log, lines, (cs, ss))
    for snap in snapshots:
        for value, where in snap.values.items():
            secrets.values.setdefault(value, where)
    assert pair.client.key_generation == 4
    check(secrets, roots_of([pair]), log_texts(debug_logs))


def test_classic_key_updates_tickets_and_resumption(debug_logs: pytest.LogCaptureFixture) -> None:
    c, s, log, lines, cs, ss = session_configs(
        client_extended_key_update=False, server_extended_key_update=False,
    )
    pair = connect(c, s)
    for _ in range(3):
        pair.client.update_keys()
        pair.server.update_keys(request_peer_update=False)
        pair.client.send(b"x")
        pair.pump()
    tickets = [e.ticket for e in pair.client_events if isinstance(e, SessionTicketReceived)]
    assert tickets
    c2, s2, _, _, _, _ = session_configs(client_extended_key_update=False, server_extended_key_update=False)
    c2.keylog, s2.keylog = c.keylog, s.keylog
    c2.session_ticket = tickets[0]
    s2.ticket_key = s.ticket_key
    s2.certificate_chain, s2.private_key = s.certificate_chain, s.private_key
    c2.trust_store = c.trust_store
    resumed = connect(c2, s2)
    assert resumed.client.handshake.resumed
    secrets = all_secrets([pair, resumed], log, lines, (cs, ss))
    check(secrets, roots_of([pair, resumed]) + tickets, log_texts(debug_logs))


def test_client_authentication_and_post_handshake_auth(debug_logs: pytest.LogCaptureFixture) -> None:
    from helpers.pki import make_ca, make_leaf
    from longtls.crypto.certificates import TrustStore

    ca = make_ca("ecdsa-p256")
    client_leaf = make_leaf(ca, "ecdsa-p256", client=True)
    server_leaf = make_leaf(ca, "ecdsa-p256")
    c, s, log, lines, cs, ss = session_configs(
        client_post_handshake_auth=True, client_extended_key_update=False,
        server_extended_key_update=False, server_client_auth=ClientAuth.REQUIRED,
    )
    store = TrustStore([ca.cert])
    c.trust_store = s.trust_store = store
    c.certificate_chain, c.private_key = client_leaf.chain, client_leaf.key
    s.certificate_chain, s.private_key = server_leaf.chain, server_leaf.key
    pair = connect(c, s)
    pair.server.request_client_authentication()
    pair.pump()
    secrets = all_secrets([pair], log, lines, (cs, ss))
    check(secrets, roots_of([pair]), log_texts(debug_logs))


def test_failed_handshake_and_its_exception(debug_logs: pytest.LogCaptureFixture) -> None:
    """A wrong server Finished: decrypt_error.  The exception (str, repr,
    cause chain), the events and the logs say why, never with what."""
    c, s, log, lines, cs, ss = session_configs()
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    server.receive_data(client.data_to_send())
    flight = server.data_to_send()

    def edit(messages: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        return [
            (t, bytes(b ^ 1 for b in body) if t == HandshakeType.finished else body)
            for t, body in messages
        ]

    tampered = rewrite_flight(flight, negotiated_suite(flight), log.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), edit)
    errors: list[BaseException] = []
    try:
        client.receive_data(tampered)
    except TLSError as exc:
        errors.append(exc)
    assert errors
    chain: list[BaseException] = []
    exc: BaseException | None = errors[0]
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    pair = Pair(client, server, client.events(), server.events())
    secrets = all_secrets([pair], log, lines, (cs, ss))
    extra = log_texts(debug_logs) + [("exception", f"{e!s} {e!r} {e.args!r}") for e in chain]
    check(secrets, roots_of([pair]) + chain, extra)


def test_asyncio_layer(debug_logs: pytest.LogCaptureFixture) -> None:
    """The same through longtls.aio: its DEBUG logs, writer, protocol and events."""
    from longtls import aio

    c, s, log, lines, cs, ss = session_configs()
    objects: list[object] = []
    server_events: list[Event] = []
    client_events: list[Event] = []

    async def echo(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        objects.extend([reader, writer, writer.connection])
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await aio.start_server(
            echo, "127.0.0.1", 0, s, aio.StreamOptions(event_handler=server_events.append)
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await aio.connect(
            "127.0.0.1", port, c, aio.StreamOptions(event_handler=client_events.append)
        )
        objects.extend([reader, writer, writer.connection, writer.handshake])
        for _ in range(3):
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            await writer.update_keys()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    conns = [o for o in objects if isinstance(o, Connection)]
    assert len(conns) == 2
    client = next(x for x in conns if x.is_client)
    server = next(x for x in conns if not x.is_client)
    pair = Pair(client, server, client_events, server_events)
    secrets = all_secrets([pair], log, lines, (cs, ss))
    assert any(r.name.startswith("longtls") for r in debug_logs.records)
    check(secrets, roots_of([pair]) + objects, log_texts(debug_logs))


def test_the_checker_finds_a_leak() -> None:
    """The search itself works: a secret in a repr, in hex or truncated, is found."""
    secrets = Secrets()
    secret = bytes(range(1, 49))
    secrets.add(secret, "test secret")
    assert find_leaks(secrets, [("x", f"key={secret.hex()}")])
    assert find_leaks(secrets, [("x", f"key={secret[8:30].hex().upper()}")])
    assert find_leaks(secrets, [("x", repr(secret))])
    assert not find_leaks(secrets, [("x", "nothing here")])
