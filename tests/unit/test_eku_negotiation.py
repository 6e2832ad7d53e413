"""Extended Key Update profile negotiation (issue 9): each profile has its own
tls_flags bit, a client offers several, the server acknowledges the newest it
also speaks, and every combination either runs EKU in that profile or runs
without EKU -- and an update completes both ways, never hangs.

docs/eku-profiles.md describes the flags and the rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from helpers.cli import LONGTLS, longtls, summary
from helpers.pair import Pair, configs, connect
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import Credential, PkiFiles, make_ca
from helpers.tamper import plaintext_messages
from longtls.config import Configuration
from longtls.connection import Connection
from longtls.constants import (
    AlertDescription,
    EKUProfileName,
    ExtensionType,
    HandshakeType,
    NamedGroup,
)
from longtls.errors import ConfigurationError, RemoteProtocolError
from longtls.events import (
    ApplicationData,
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdated,
)
from longtls.wire import extensions as X
from longtls.wire.eku import ExtendedKeyUpdateResponseD05, Status
from longtls.wire.messages import ClientHello, Extension

D13, D2510, D05 = EKUProfileName.draft_13, EKUProfileName.draft_2025_10, EKUProfileName.draft_05
NEWEST_FIRST = (D13, D2510, D05)
#: Every non-empty subset of the three profiles, and None for EKU turned off.
PROFILE_SETS: list[tuple[EKUProfileName, ...] | None] = [
    subset for n in (1, 2, 3) for subset in itertools.combinations(NEWEST_FIRST, n)
] + [None]
#: The provisional bits, written out here so the test does not take them
#: from the code it checks (constants.TLSFlag, docs/eku-profiles.md).
BIT = {D13: 0, D2510: 1, D05: 2}


def _label(profiles: tuple[EKUProfileName, ...] | None) -> str:
    return "off" if profiles is None else "+".join(p.value for p in profiles)


def _expected(
    client: tuple[EKUProfileName, ...] | None, server: tuple[EKUProfileName, ...] | None
) -> EKUProfileName | None:
    """The newest profile in both sets (written independently of select_profile)."""
    if client is None or server is None:
        return None
    common = set(client) & set(server)
    for profile in NEWEST_FIRST:
        if profile in common:
            return profile
    return None


@pytest.fixture(scope="module")
def ca() -> Credential:
    return make_ca("ecdsa-p256")


def _side(profiles: tuple[EKUProfileName, ...] | None, side: str) -> dict[str, Any]:
    if profiles is None:
        return {f"{side}_extended_key_update": False}
    # Listed oldest first on purpose: the order is not a preference.
    return {f"{side}_eku_profiles": tuple(reversed(profiles))}


def _pair(
    ca: Credential, client: tuple[EKUProfileName, ...] | None, server: tuple[EKUProfileName, ...] | None,
    **kw: Any,
) -> Pair:
    group = NamedGroup.x25519
    c, s, _ = configs(
        ca=ca, client_groups=[group], client_key_share_groups=[group], server_groups=[group],
        **_side(client, "client"), **_side(server, "server"), **kw,
    )
    return connect(c, s)


def _handshake(events: list[Any]) -> HandshakeComplete:
    (done,) = [e for e in events if isinstance(e, HandshakeComplete)]
    return done


def _exchange(pair: Pair, message: bytes) -> None:
    """Application data both ways under the current keys, checked on arrival."""
    before_c, before_s = pair.received("client"), pair.received("server")
    pair.client.send(b"c:" + message)
    pair.server.send(b"s:" + message)
    pair.pump()
    assert pair.received("server") == before_s + b"c:" + message
    assert pair.received("client") == before_c + b"s:" + message


@pytest.mark.parametrize("server", PROFILE_SETS, ids=_label)
@pytest.mark.parametrize("client", PROFILE_SETS, ids=_label)
def test_every_pair_of_profile_sets(
    ca: Credential, client: tuple[EKUProfileName, ...] | None, server: tuple[EKUProfileName, ...] | None
) -> None:
    expected = _expected(client, server)
    pair = _pair(ca, client, server)
    for events in (pair.client_events, pair.server_events):
        done = _handshake(events)
        assert done.eku_profile == expected
        assert done.extended_key_update == (expected is not None)
    _exchange(pair, b"before")
    if expected is not None:
        for conn in (pair.client, pair.server):
            assert conn.eku is not None and conn.eku.profile.name == expected
        # An update started by each side completes (pump raises if the two
        # connections keep talking; an unanswered update leaves no generation).
        pair.client.extended_key_update()
        pair.pump()
        pair.server.extended_key_update()
        pair.pump()
        for events in (pair.client_events, pair.server_events):
            updates = [e for e in events if isinstance(e, KeyUpdateCompleted)]
            assert [(u.generation, u.initiator) for u in updates] == [(1, "client"), (2, "server")]
        assert pair.client.key_generation == pair.server.key_generation == 2
    else:
        assert pair.client.eku is None and pair.server.eku is None
        # The classic KeyUpdate in each direction, answered (RFC 9846 §4.6.3).
        pair.client.update_keys(request_peer_update=True)
        pair.pump()
        pair.server.update_keys(request_peer_update=True)
        pair.pump()
        for events in (pair.client_events, pair.server_events):
            updated = [(e.direction, e.generation) for e in events if isinstance(e, KeyUpdated)]
            assert sorted(updated) == [("receive", 1), ("receive", 2), ("send", 1), ("send", 2)]
        assert pair.client.get_timer() is None and pair.server.get_timer() is None
    _exchange(pair, b"after")
    assert not pair.client.is_closed and not pair.server.is_closed


def _client_hello_flags(config: Configuration) -> bytes | None:
    client = Connection(config)
    client.start_handshake()
    ((msg_type, body),) = plaintext_messages(client.data_to_send())
    assert msg_type == HandshakeType.client_hello
    hello = ClientHello.decode(body)
    found = [e.data for e in hello.extensions if e.type == ExtensionType.tls_flags]
    return found[0] if found else None


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=_label)
def test_client_hello_carries_one_bit_per_offered_profile(
    ca: Credential, profiles: tuple[EKUProfileName, ...] | None
) -> None:
    c, _, _ = configs(ca=ca, **_side(profiles, "client"))
    flags = _client_hello_flags(c)
    if profiles is None:
        assert flags is None  # EKU off: no tls_flags at all
        return
    # draft-ietf-tls-tlsflags §2: one octet holds flags 0-7, least significant bit first.
    octet = sum(1 << BIT[p] for p in profiles)
    assert flags == bytes([1, octet])


def test_server_acknowledges_exactly_one_bit(ca: Credential) -> None:
    """The EncryptedExtensions of a server that speaks all three, to a client
    offering all three: tls_flags with bit 0 (draft-13) only."""
    acknowledged: list[bytes] = []

    def spy(client_exts: dict[int, bytes]) -> list[Extension]:
        out = original(client_exts)
        acknowledged.extend(e.data for e in out if e.type == ExtensionType.tls_flags)
        return out

    c, s, _ = configs(ca=ca, client_eku_profiles=NEWEST_FIRST, server_eku_profiles=NEWEST_FIRST)
    client, server = Connection(c), Connection(s)
    original = server.handshake.extra_encrypted_extensions  # type: ignore[attr-defined]
    server.handshake.extra_encrypted_extensions = spy  # type: ignore[attr-defined]
    client.start_handshake()
    server.receive_data(client.data_to_send())
    assert acknowledged == [bytes([1, 0b001])]


# -- a server that acknowledges wrongly --------------------------------------------------


def _misbehaving_server(
    ca: Credential, client: tuple[EKUProfileName, ...] | None, acknowledged: set[int] | bytes
) -> tuple[Connection, Connection]:
    """A client offering ``client`` against a server whose EncryptedExtensions
    carry tls_flags ``acknowledged`` (flag numbers, or raw extension data)."""
    c, s, _ = configs(ca=ca, **_side(client, "client"), server_eku_profiles=NEWEST_FIRST)
    client_conn, server_conn = Connection(c), Connection(s)
    data = acknowledged if isinstance(acknowledged, bytes) else X.encode_tls_flags(acknowledged)

    def broken(client_exts: dict[int, bytes]) -> list[Extension]:
        return [Extension(ExtensionType.tls_flags, data)]

    server_conn.handshake.extra_encrypted_extensions = broken  # type: ignore[attr-defined]
    return client_conn, server_conn


@pytest.mark.parametrize(("client", "acknowledged", "alert"), [
    # draft-ietf-tls-tlsflags §3: "An endpoint that receives an unsolicited
    # flag in [...] EE [...] MUST generate a fatal illegal_parameter alert".
    ((D13,), {BIT[D2510]}, AlertDescription.illegal_parameter),
    ((D13, D05), {BIT[D2510]}, AlertDescription.illegal_parameter),
    ((D13,), {BIT[D13], 5}, AlertDescription.illegal_parameter),
    ((D13,), {8}, AlertDescription.illegal_parameter),
    # Two profiles acknowledged: not a choice (docs/eku-profiles.md).
    ((D13, D05), {BIT[D13], BIT[D05]}, AlertDescription.illegal_parameter),
    ((D13, D2510, D05), {BIT[D13], BIT[D2510], BIT[D05]}, AlertDescription.illegal_parameter),
    # An invalid tls_flags value (trailing zero octet): illegal_parameter (tlsflags §3).
    ((D13,), b"\x02\x01\x00", AlertDescription.illegal_parameter),
    # EKU off, so no tls_flags offered: RFC 9846 §4.2, an extension in a
    # response that was not in the ClientHello is unsupported_extension.
    (None, {BIT[D13]}, AlertDescription.unsupported_extension),
], ids=["unsolicited-profile", "unsolicited-among-several", "extra-unknown-bit", "unknown-bit",
        "two-profiles", "three-profiles", "invalid-encoding", "not-offered-at-all"])
def test_bad_acknowledgement_is_refused_with_its_alert(
    ca: Credential, client: tuple[EKUProfileName, ...] | None, acknowledged: set[int] | bytes,
    alert: AlertDescription,
) -> None:
    client_conn, server_conn = _misbehaving_server(ca, client, acknowledged)
    client_conn.start_handshake()
    server_conn.receive_data(client_conn.data_to_send())
    with pytest.raises(RemoteProtocolError) as info:
        client_conn.receive_data(server_conn.data_to_send())
    assert info.value.alert == alert
    (closed,) = [e for e in client_conn.events() if isinstance(e, ConnectionClosed)]
    assert closed.alert == alert and not closed.by_peer
    # The alert on the wire, as the server reads it (under the handshake keys).
    server_conn.receive_data(client_conn.data_to_send())
    (seen,) = [e for e in server_conn.events() if isinstance(e, ConnectionClosed)]
    assert (seen.alert, seen.by_peer) == (alert, True)
    assert not [e for e in server_conn.events() if isinstance(e, HandshakeComplete)]


# -- configuration ------------------------------------------------------------------------


def test_configuration_forms(ca: Credential) -> None:
    # The older single-profile field keeps working and wins over eku_profiles.
    legacy = Configuration(eku_profile="draft-05")
    assert legacy.eku_profile_names() == (D05,)
    assert _client_hello_flags(configs(ca=ca, client_eku_profile="draft-2025-10")[0]) == bytes([1, 0b010])
    # A string is a comma-separated list; repeats are dropped.
    assert Configuration(eku_profiles="draft-13, draft-05,draft-13").eku_profile_names() == (D13, D05)
    assert Configuration().eku_profile_names() == (D13,)  # the default: the current text only
    with pytest.raises(ConfigurationError, match="unknown EKU profile 'draft-99'"):
        Configuration(eku_profiles=("draft-13", "draft-99")).validate()
    with pytest.raises(ConfigurationError, match="no EKU profile"):
        Configuration(eku_profiles=()).validate()
    Configuration(eku_profiles=(), extended_key_update=False).validate()


def test_legacy_profile_field_negotiates(ca: Credential) -> None:
    c, s, _ = configs(ca=ca, client_eku_profile="draft-05", server_eku_profiles=NEWEST_FIRST)
    pair = connect(c, s)
    assert _handshake(pair.client_events).eku_profile == D05
    pair.server.extended_key_update()
    pair.pump()
    assert [e.generation for e in pair.client_events if isinstance(e, KeyUpdateCompleted)] == [1]


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def files(tmp_pki_files: Any) -> PkiFiles:
    files: PkiFiles = tmp_pki_files("ecdsa-p256")
    return files


def _serve(files: PkiFiles, *args: str) -> tuple[Any, int]:
    port = free_port()
    context = start_process(
        [*LONGTLS, "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
         "--port", str(port), "--echo", "--eku-min-interval", "0", *args],
        ready_pattern=r"^longtls: serving \(echo\) on ",
    )
    return context, port


def _connect(files: PkiFiles, port: int, *args: str) -> list[dict[str, Any]]:
    result = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json", "--rekey-count", "2",
        *args, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return summary(result.stderr)


@pytest.mark.parametrize(("server_args", "client_args", "profile"), [
    # The three first-contact failures of issue 9, each now a working connection.
    ((), ("--eku-profile", "draft-2025-10"), None),  # hung after the handshake
    (("--eku-profile", "draft-2025-10"), (), None),  # "update complete", then bad_record_mac
    ((), ("--eku-profile", "draft-05"), None),  # "TLS handshake failed" after a handshake
    (("--eku-profile", "draft-05"), (), None),
    # Several profiles offered: the newest both speak.
    (("--eku-profile", "draft-2025-10,draft-05"), ("--eku-profile", "draft-13,draft-05"), "draft-05"),
    (("--eku-profile", "draft-05,draft-13"), ("--eku-profile", "draft-13,draft-05"), "draft-13"),
], ids=["2025-10-vs-default", "default-vs-2025-10", "05-vs-default", "default-vs-05", "lists-05", "lists-13"])
def test_cli_profiles(files: PkiFiles, server_args: Sequence[str], client_args: Sequence[str],
                      profile: str | None) -> None:
    context, port = _serve(files, *server_args)
    with context as server:
        assert isinstance(server, PeerProcess)
        records = _connect(files, port, *client_args)
    handshake = records[0]
    assert handshake["event"] == "handshake"
    assert handshake["eku"] is (profile is not None)
    assert handshake["eku_profile"] == profile
    updates = [r for r in records if r["event"] == "key_update"]
    if profile is not None:
        assert [(u["kind"], u["generation"]) for u in updates] == [("extended", 1), ("extended", 2)]
    else:
        # Without EKU, --rekey-count uses KeyUpdate, each answered by the server.
        assert [(u["direction"], u["generation"]) for u in updates if u["kind"] == "standard"] == [
            ("send", 1), ("receive", 1), ("send", 2), ("receive", 2)
        ]
    assert records[-1] == {"event": "closed", "alert": None, "by_peer": True}
    for trouble in ("failed", "bad_record_mac", "unexpected_message", "truncated"):
        assert trouble not in server.stderr, server.describe()


def test_cli_rejects_an_unknown_profile_in_a_list(files: PkiFiles) -> None:
    result = longtls("connect", f"{LOOPBACK}:1", "--eku-profile", "draft-13,draft-99")
    assert result.returncode == 2
    assert "invalid choice: 'draft-99'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_only_the_negotiated_profile_is_spoken(ca: Credential) -> None:
    """A client that offered draft-05 too, on a connection that negotiated
    draft-13, may not use draft-05's messages: its response type (28) is
    unexpected_message to the server."""
    pair = _pair(ca, (D13, D05), (D13,))
    assert _handshake(pair.client_events).eku_profile == D13
    stray = ExtendedKeyUpdateResponseD05(Status.rejected).encode()
    pair.client.queue_handshake(stray)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.alert == AlertDescription.unexpected_message
    assert not [e for e in pair.server.events() if isinstance(e, ApplicationData)]
