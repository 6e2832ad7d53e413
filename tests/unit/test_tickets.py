"""Server session tickets: the state codec (wire/tickets.py) and sealing, opening, judging (handshake/tickets.py)."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from longtls.constants import CipherSuite
from longtls.errors import DecodeError
from longtls.handshake.tickets import open_ticket, remember_generation, seal_ticket, usable_ticket
from longtls.wire.tickets import TicketState

KEY = bytes(range(32))
PSK = bytes.fromhex("5e" * 32)
NOW_MS = 1_700_000_000_000


def _state(**changes: object) -> TicketState:
    fields: dict[str, object] = dict(
        cipher_suite=CipherSuite.TLS_AES_128_GCM_SHA256, issued_ms=NOW_MS, lifetime=7200,
        origin=b"origin!!", generation=0, age_add=12345, psk=PSK, alpn="h2", server_name="example.com",
    )
    fields.update(changes)
    return TicketState(**fields)  # type: ignore[arg-type]


def test_state_round_trips_and_hides_the_psk() -> None:
    state = _state()
    assert TicketState.decode(state.encode()) == state
    assert TicketState.decode(_state(alpn=None, server_name=None).encode()).alpn is None
    assert PSK.hex() not in repr(state) and repr(PSK) not in repr(state)


@pytest.mark.parametrize("mangle", [
    lambda b: b"\x02" + b[1:],  # another version
    lambda b: b[:-1],  # truncated
    lambda b: b + b"\x00",  # trailing bytes
    lambda b: b[:-13] + b"\x00\x0b" + b"\xff" * 11,  # server_name not UTF-8
])
def test_malformed_state_is_a_decode_error(mangle: object) -> None:
    assert callable(mangle)
    with pytest.raises(DecodeError):
        TicketState.decode(mangle(_state().encode()))


def test_open_returns_what_seal_sealed() -> None:
    ticket = seal_ticket(KEY, os.urandom(12), _state())
    assert open_ticket(KEY, ticket) == _state()


def test_foreign_tampered_and_short_tickets_are_ignored() -> None:
    ticket = seal_ticket(KEY, os.urandom(12), _state())
    assert open_ticket(bytes(32), ticket) is None  # another server's key
    assert open_ticket(KEY, ticket[:-1] + bytes((ticket[-1] ^ 1,))) is None  # tampered with
    assert open_ticket(KEY, ticket[:27]) is None  # shorter than nonce and tag


def test_a_valid_ticket_with_malformed_state_is_ignored() -> None:
    """Authenticates under our key but does not decode: a full handshake, not an alert."""
    nonce = os.urandom(12)
    name = hashlib.sha256(b"longtls ticket key name" + KEY).digest()[:8]
    ticket = name + nonce + AESGCM(KEY).encrypt(nonce, b"\x01 not a ticket state", b"longtls ticket")
    assert open_ticket(KEY, ticket) is None


def test_only_the_aead_failure_is_swallowed() -> None:
    """Opening catches InvalidTag only: a broken key is a bug that must surface."""
    broken = b"not an AES key"
    name = hashlib.sha256(b"longtls ticket key name" + broken).digest()[:8]
    ticket = name + seal_ticket(KEY, os.urandom(12), _state())[8:]  # names the broken key
    with pytest.raises(ValueError):
        open_ticket(broken, ticket)


def _use(state: TicketState, now_ms: int = NOW_MS, generations: dict[bytes, int] | None = None) -> object:
    age = now_ms - state.issued_ms
    return usable_ticket(
        state, now_ms=now_ms, obfuscated_age=(age + state.age_add) % 2**32,
        cipher_suites=[CipherSuite.TLS_AES_128_GCM_SHA256], ticket_generations=generations or {},
    )


def test_usable_ticket_rules() -> None:
    resumption = _use(_state(), NOW_MS + 1000)
    assert resumption is not None and resumption.psk == PSK  # type: ignore[attr-defined]
    assert _use(_state(), NOW_MS + 7201 * 1000) is None  # past its lifetime (RFC 9846 §4.6.1)
    assert _use(_state(cipher_suite=CipherSuite.TLS_AES_256_GCM_SHA384)) is None  # suite not configured
    generations: dict[bytes, int] = {}
    remember_generation(generations, b"origin!!", 1)
    assert _use(_state(generation=0), generations=generations) is None  # issued before an EKU
    assert _use(_state(generation=1), generations=generations) is not None
