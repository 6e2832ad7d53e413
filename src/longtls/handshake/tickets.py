"""Session tickets on the server side (RFC 9846 §4.6.1, §8.3): seal, open, judge.

longtls keeps no server-side session cache: a ticket carries its own state
(wire/tickets.py), sealed with AES-256-GCM under the first of
``Configuration.effective_ticket_keys`` and opened under whichever of them
the ticket names (rotation: docs/scaling.md).  RFC 9846 §4.6.1 leaves the
ticket's format to the server; ours follows the shape RFC 5077 §4
recommends, a key name in the clear and then the protected state:

    opaque key_name[8];     /* SHA-256("longtls ticket key name" || key)[:8] */
    opaque nonce[12];
    opaque sealed_state<..>; /* AES-256-GCM(key, nonce, TicketState, aad) */

so a server that holds several keys (processes or machines sharing a key
file) tries the one key the ticket names, not all of them.  The name is a
hash of the key: no secret leaks (SHA-256 is one-way), and nobody has to
give keys names.  Opening a ticket fails quietly (a full handshake follows) when it is not
ours or was tampered with (the AEAD's InvalidTag, and only that), when it
authenticates but its state does not decode (a ticket of another format
under the same key: not the peer's doing, so no alert), or when it is
expired, implausibly aged, of a suite no longer configured, or older than an
extended key update on the connection that issued it (EKU draft-13 §6 and
the earlier drafts invalidate those).
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..constants import CipherSuite, PskKind
from ..errors import DecodeError
from ..wire.tickets import ORIGIN_LENGTH, TicketState

__all__ = [
    "KEY_NAME_LENGTH", "ORIGIN_LENGTH", "Resumption", "open_ticket", "remember_generation", "seal_ticket",
    "ticket_key_name", "usable_ticket",
]

#: Grace for clock skew between the ticket's issue time and its use.
TICKET_AGE_TOLERANCE_MS = 10_000
#: Connections whose ticket generations a server remembers.
MAX_TICKET_ORIGINS = 100_000
_NONCE_LENGTH = 12
#: Bytes of the key name in front of every ticket: 2**64 names, so two keys
#: of one server collide with negligible odds (and a collision costs only a
#: second AEAD attempt, never a wrong opening: the tag decides).
KEY_NAME_LENGTH = 8
_KEY_NAME_LABEL = b"longtls ticket key name"
_TAG_LENGTH = 16
#: The tickets' additional data over TLS (transport.TLS.ticket_aad); DTLS
#: seals under its own, so a ticket never crosses transports.
_AAD = b"longtls ticket"


class Resumption:
    """What a valid ticket (or an external PSK we know) gave us."""

    __slots__ = ("psk", "suite", "alpn", "server_name", "kind", "identity")

    def __init__(
        self, psk: bytes, suite: CipherSuite, alpn: str | None, server_name: str | None,
        kind: PskKind = PskKind.RESUMPTION, identity: bytes | None = None,
    ) -> None:
        self.psk = psk
        self.suite = suite
        self.alpn = alpn
        self.server_name = server_name
        self.kind = kind
        self.identity = identity  # an external PSK's identity

    def __repr__(self) -> str:
        return f"<Resumption {self.kind.value} {self.suite.name}>"


def ticket_key_name(key: bytes) -> bytes:
    """The name a ticket carries for the key that sealed it (see the module docstring)."""
    return hashlib.sha256(_KEY_NAME_LABEL + key).digest()[:KEY_NAME_LENGTH]


def seal_ticket(key: bytes, nonce: bytes, state: TicketState, aad: bytes = _AAD) -> bytes:
    """The opaque ticket of NewSessionTicket: ``key_name || nonce || AES-256-GCM(key, state)``.

    ``aad`` names the transport (``Transport.ticket_aad``): a resumption PSK
    derived under "dtls13" labels is no PSK for TLS, nor the reverse (RFC
    9147 §5.9 separates the key schedules), so a ticket opens only over the
    transport that issued it."""
    # No table of AESGCM objects by key (about 4 us a ticket): a process-wide
    # one would keep a rotated-out ticket key in memory long after the
    # configuration dropped it, which is what rotation is for.
    return ticket_key_name(key) + nonce + AESGCM(key).encrypt(nonce, state.encode(), aad)


def open_ticket(keys: bytes | Sequence[bytes], ticket: bytes, aad: bytes = _AAD) -> TicketState | None:
    """The state inside ``ticket``, or None if it is not a ticket of ours
    (for this transport: ``aad`` as in :func:`seal_ticket`).

    ``keys``: one key, or every key we still accept (the sealing key and the
    older ones of a rotation); only a key whose name the ticket carries is
    tried.  A ticket under a key no longer held opens under none: None, and
    a full handshake follows, as for any ticket that is not ours."""
    if len(ticket) < KEY_NAME_LENGTH + _NONCE_LENGTH + _TAG_LENGTH:
        return None
    name = ticket[:KEY_NAME_LENGTH]
    nonce = ticket[KEY_NAME_LENGTH:KEY_NAME_LENGTH + _NONCE_LENGTH]
    sealed = ticket[KEY_NAME_LENGTH + _NONCE_LENGTH:]
    plaintext = None
    for key in (keys,) if isinstance(keys, bytes) else keys:
        if ticket_key_name(key) != name:
            continue
        try:
            plaintext = AESGCM(key).decrypt(nonce, sealed, aad)
            break
        except InvalidTag:
            continue  # tampered with (or a name collision): the next key of that name, if any
    if plaintext is None:
        return None  # not ours, under a retired key, or tampered with: a full handshake
    try:
        return TicketState.decode(plaintext)
    except DecodeError:
        return None  # ours, but of another format: a full handshake, no alert


def usable_ticket(
    state: TicketState, *, now_ms: int, obfuscated_age: int, cipher_suites: Container[int],
    ticket_generations: dict[bytes, int],
) -> Resumption | None:
    """The resumption a ticket's state grants now, or None if it may not be used."""
    age_ms = now_ms - state.issued_ms
    if age_ms < -TICKET_AGE_TOLERANCE_MS or age_ms > state.lifetime * 1000:
        return None  # expired (§4.6.1)
    client_age = (obfuscated_age - state.age_add) % 2**32
    if abs(client_age - age_ms) > TICKET_AGE_TOLERANCE_MS + age_ms // 10:
        return None  # §8.3: the client's view of the ticket age is implausible
    if state.cipher_suite not in cipher_suites:
        return None
    if state.generation < ticket_generations.get(state.origin, 0):
        return None  # issued before an extended key update on its connection
    return Resumption(state.psk, CipherSuite(state.cipher_suite), state.alpn, state.server_name)


def remember_generation(ticket_generations: dict[bytes, int], origin: bytes, generation: int) -> None:
    """Tickets of ``origin`` issued before ``generation`` are no longer accepted;
    the oldest origins are forgotten beyond MAX_TICKET_ORIGINS."""
    ticket_generations[origin] = generation
    while len(ticket_generations) > MAX_TICKET_ORIGINS:
        del ticket_generations[next(iter(ticket_generations))]
