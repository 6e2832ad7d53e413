"""A key update that gets no answer in time ends the connection (issue 9).

``Configuration.rekey_timeout`` (30 s by default), or the ``timeout`` given to
one update, bounds the wait for the peer: an Extended Key Update from our
request to its completion (or from our response to the initiator's finish),
a KeyUpdate with update_requested until the peer's KeyUpdate.  Then longtls
sends user_canceled and close_notify -- as for the handshake timeout, since no
alert names a timeout -- and raises ``KeyUpdateTimeoutError``.

The sans-I/O tests drive the clock through ``Configuration.now``; a "peer that
swallows" is one whose bytes we hold back (it never answered in time).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from helpers.pair import Pair, configs, connect
from helpers.tamper import KeyLog, decode_last_record, split_records
from longtls import aio
from longtls.constants import AlertDescription, AlertLevel, ContentType, EKUProfileName
from longtls.errors import ConfigurationError, KeyUpdateTimeoutError, LocalProtocolError
from longtls.events import CloseNotifyReceived, ConnectionClosed, KeyUpdateCompleted, KeyUpdated

PROFILES = [p.value for p in EKUProfileName]
USER_CANCELED = (ContentType.ALERT, bytes([AlertLevel.WARNING, AlertDescription.user_canceled]))
CLOSE_NOTIFY = (ContentType.ALERT, bytes([AlertLevel.WARNING, AlertDescription.close_notify]))


def _clocked(profile: str | None = "draft-13", **kw: Any) -> tuple[Pair, list[float], KeyLog]:
    """A connected pair on one test clock; ``profile`` None turns EKU off."""
    clock = [time.time()]
    log = KeyLog()
    eku: dict[str, Any] = (
        {"client_eku_profile": profile, "server_eku_profile": profile} if profile is not None
        else {"client_extended_key_update": False, "server_extended_key_update": False}
    )
    c, s, _ = configs(
        client_now=lambda: clock[0], server_now=lambda: clock[0],
        client_keylog=log, server_keylog=log, **eku, **kw,
    )
    return connect(c, s), clock, log


def _alerts(data: bytes, log: KeyLog, side: str) -> list[tuple[int, bytes]]:
    """Each record of ``data`` (the last ones ``side`` sent), opened with its key log."""
    return [decode_last_record(record.raw, log, side) for record in split_records(data)]


def _closed(events: list[Any]) -> ConnectionClosed:
    (closed,) = [e for e in events if isinstance(e, ConnectionClosed)]
    return closed


# -- Extended Key Update ------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_initiator_gives_up_on_a_swallowed_request(profile: str) -> None:
    pair, clock, log = _clocked(profile)
    started = clock[0]
    pair.client.extended_key_update()
    held = pair.client.data_to_send()  # the request: the server never reads it in time
    assert pair.client.get_timer() == started + 30.0  # rekey_timeout's default
    clock[0] = started + 29.9
    pair.client.handle_timer()
    assert not pair.client.is_closed and pair.client.data_to_send() == b""
    clock[0] = started + 30.0
    with pytest.raises(KeyUpdateTimeoutError) as info:
        pair.client.handle_timer()
    error = info.value
    assert (error.kind, error.seconds, error.alert) == ("extended", 30.0, AlertDescription.close_notify)
    assert "did not complete the extended key update within 30 s (rekey_timeout)" in str(error)
    # On the wire: user_canceled, then close_notify (under the generation-0 key).
    assert _alerts(pair.client.data_to_send(), log, "client") == [USER_CANCELED, CLOSE_NOTIFY]
    closed = _closed(pair.client.events())
    assert (closed.alert, closed.by_peer) == (AlertDescription.close_notify, False)
    assert "rekey_timeout" in closed.reason
    assert pair.client.is_closed and pair.client.get_timer() is None
    assert held  # (it was sent; only the answer never came)


@pytest.mark.parametrize("profile", PROFILES)
def test_responder_gives_up_when_the_finish_never_comes(profile: str) -> None:
    """The server answered; the client's finish (and, in the four-message
    texts, its new_key_update) never arrives in time."""
    pair, clock, log = _clocked(profile)
    pair.client.extended_key_update()
    pair.server.receive_data(pair.client.data_to_send())
    answered = clock[0]
    response = pair.server.data_to_send()  # held: the client never reads it
    assert response and pair.server.get_timer() == answered + 30.0
    clock[0] = answered + 30.0
    with pytest.raises(KeyUpdateTimeoutError):
        pair.server.handle_timer()
    # draft-13's responder already sends under generation 1, the others under 0.
    assert _alerts(pair.server.data_to_send(), log, "server") == [USER_CANCELED, CLOSE_NOTIFY]
    assert _closed(pair.server.events()).alert == AlertDescription.close_notify


def test_the_peer_reads_the_alerts_as_a_close() -> None:
    """Delivered late, the response still completes the client's update, and
    the server's user_canceled + close_notify reach it as a clean close."""
    pair, clock, _ = _clocked("draft-13")
    pair.client.extended_key_update()
    pair.server.receive_data(pair.client.data_to_send())
    late = pair.server.data_to_send()
    clock[0] += 31.0
    with pytest.raises(KeyUpdateTimeoutError):
        pair.server.handle_timer()
    late += pair.server.data_to_send()
    pair.client.receive_data(late)
    events = pair.client.events()
    assert [e.generation for e in events if isinstance(e, KeyUpdateCompleted)] == [1]
    assert any(isinstance(e, CloseNotifyReceived) for e in events)


def test_a_timely_answer_clears_the_timer() -> None:
    pair, clock, _ = _clocked("draft-13", client_rekey_timeout=5.0)
    pair.client.extended_key_update()
    assert pair.client.get_timer() == clock[0] + 5.0
    pair.pump()
    assert pair.client.get_timer() is None and pair.server.get_timer() is None
    clock[0] += 3600.0
    pair.client.handle_timer()
    pair.server.handle_timer()
    assert not pair.client.is_closed and not pair.server.is_closed


def test_a_deferred_response_counts_against_the_initiator() -> None:
    """The server paces updates (eku_min_interval 60 s); the client allows 10 s:
    its second update times out while the server still holds its answer."""
    pair, clock, _ = _clocked("draft-13", server_eku_min_interval=60.0, client_rekey_timeout=10.0)
    pair.client.extended_key_update()
    pair.pump()
    pair.client.extended_key_update()
    pair.pump()  # deferred: no response
    assert pair.server.get_timer() == clock[0] + 60.0  # the server's pacing timer, not a timeout
    clock[0] += 10.0
    with pytest.raises(KeyUpdateTimeoutError):
        pair.client.handle_timer()
    pair.server.receive_data(pair.client.data_to_send())
    assert any(isinstance(e, CloseNotifyReceived) for e in pair.server.events())


def test_per_update_timeout_overrides_the_configuration() -> None:
    pair, clock, _ = _clocked("draft-13")
    started = clock[0]
    pair.client.extended_key_update(timeout=2.5)
    assert pair.client.get_timer() == started + 2.5
    clock[0] = started + 2.5
    with pytest.raises(KeyUpdateTimeoutError) as info:
        pair.client.handle_timer()
    assert info.value.seconds == 2.5
    with pytest.raises(LocalProtocolError):
        _clocked("draft-13")[0].client.extended_key_update(timeout=0)


@pytest.mark.parametrize("how", ["configuration", "call"])
def test_no_limit_when_asked(how: str) -> None:
    kw = {"client_rekey_timeout": None} if how == "configuration" else {}
    pair, clock, _ = _clocked("draft-13", **kw)
    pair.client.extended_key_update(**({"timeout": math.inf} if how == "call" else {}))
    pair.client.data_to_send()
    assert pair.client.get_timer() is None
    clock[0] += 10 * 86400.0
    pair.client.handle_timer()
    assert not pair.client.is_closed


def test_no_timeout_once_the_peer_has_closed() -> None:
    """After the peer's close_notify it sends nothing more (RFC 9846 §6.1): an
    update it has not answered is not a timeout, and no new one may start."""
    pair, clock, _ = _clocked("draft-13")
    pair.client.extended_key_update()
    pair.client.data_to_send()  # never delivered
    pair.server.close()
    pair.client.receive_data(pair.server.data_to_send())
    clock[0] += 100.0
    assert pair.client.get_timer() is None
    pair.client.handle_timer()
    assert not pair.client.is_closed


def test_rekey_timeout_must_be_positive() -> None:
    c, _, _ = configs(client_rekey_timeout=0.0)
    with pytest.raises(ConfigurationError, match="rekey_timeout"):
        c.validate()


# -- KeyUpdate with update_requested ---------------------------------------------------


def test_unanswered_key_update_request_times_out() -> None:
    pair, clock, log = _clocked(None, client_rekey_timeout=7.0)
    started = clock[0]
    pair.client.update_keys(request_peer_update=True)
    pair.client.data_to_send()  # the server swallows it
    assert pair.client.key_update_answer_owed
    assert pair.client.get_timer() == started + 7.0
    clock[0] = started + 6.9
    pair.client.handle_timer()
    clock[0] = started + 7.0
    with pytest.raises(KeyUpdateTimeoutError) as info:
        pair.client.handle_timer()
    assert (info.value.kind, info.value.seconds) == ("standard", 7.0)
    assert "did not answer our KeyUpdate" in str(info.value)
    # Under the updated send key (generation 1), as everything after a KeyUpdate.
    assert _alerts(pair.client.data_to_send(), log, "client") == [USER_CANCELED, CLOSE_NOTIFY]
    assert _closed(pair.client.events()).alert == AlertDescription.close_notify


def test_key_update_answered_in_time_and_not_requested_twice() -> None:
    """RFC 9846 §4.6.3: no second update_requested before the peer's KeyUpdate;
    the answer clears the deadline."""
    pair, clock, _ = _clocked(None)
    pair.client.update_keys(request_peer_update=True)
    pair.client.update_keys(request_peer_update=True)  # sent as update_not_requested
    pair.pump()
    received = [e for e in pair.server_events if isinstance(e, KeyUpdated) and e.direction == "receive"]
    assert [e.requested_by_peer for e in received] == [True, False]
    answers = [e for e in pair.client_events if isinstance(e, KeyUpdated) and e.direction == "receive"]
    assert len(answers) == 1
    assert not pair.client.key_update_answer_owed and pair.client.get_timer() is None
    clock[0] += 3600.0
    pair.client.handle_timer()
    assert not pair.client.is_closed
    pair.client.update_keys(request_peer_update=True)  # may ask again now
    pair.pump()
    answers = [e for e in pair.client_events if isinstance(e, KeyUpdated) and e.direction == "receive"]
    assert len(answers) == 2


def test_update_not_requested_has_no_deadline() -> None:
    pair, _, _ = _clocked(None)
    pair.client.update_keys(request_peer_update=False)
    pair.client.data_to_send()
    assert pair.client.get_timer() is None


# -- asyncio ------------------------------------------------------------------------------


def test_aio_update_keys_timeout_against_a_silent_peer() -> None:
    """A draft-13 server that holds every response back for good
    (eku_max_peer_updates=0): ``update_keys(timeout=0.3)`` raises
    KeyUpdateTimeoutError after 0.3 s, and the server sees a clean close."""
    client_config, server_config, _ = configs(server_eku_max_peer_updates=0)
    server_closed: list[ConnectionClosed] = []
    server_saw_close_notify: list[CloseNotifyReceived] = []

    def on_server_event(event: Any) -> None:
        if isinstance(event, ConnectionClosed):
            server_closed.append(event)
        elif isinstance(event, CloseNotifyReceived):
            server_saw_close_notify.append(event)

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    async def scenario() -> float:
        server = await aio.start_server(
            handler, "127.0.0.1", 0, server_config, aio.StreamOptions(event_handler=on_server_event)
        )
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await aio.connect("127.0.0.1", port, client_config)
            start = time.monotonic()
            with pytest.raises(KeyUpdateTimeoutError) as info:
                await asyncio.wait_for(writer.update_keys(timeout=0.3), 10)
            elapsed = time.monotonic() - start
            assert info.value.kind == "extended"
            with pytest.raises(KeyUpdateTimeoutError):
                await reader.read(1)  # the connection's error, for every reader and writer
            await asyncio.wait_for(writer.wait_closed(), 5)
            for _ in range(50):
                if server_closed:
                    break
                await asyncio.sleep(0.05)
            return elapsed

    elapsed = asyncio.run(scenario())
    assert 0.3 <= elapsed < 5.0
    # user_canceled is a warning the server passes over, then close_notify:
    # a clean close, no error alert.
    assert len(server_saw_close_notify) == 1
    (closed,) = server_closed
    assert closed.alert is None
