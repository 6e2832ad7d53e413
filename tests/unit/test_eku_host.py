"""The EKU state machine against its declared host interface (handshake/eku.py, EKUHost).

A send-key switch is requested by the state machine and confirmed by the host.
A TLS Connection confirms at once; over DTLS the state machine waits for the
ACK itself before requesting (tests/unit/test_eku_dtls.py), and the interface
still allows a host to confirm later.  These tests drive two state
machines through minimal hosts that confirm late, and
check that an update completes only once both directions have switched, and
that both ends switch to the same secrets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from longtls.constants import AlertDescription, CipherSuite, EKUProfileName, NamedGroup
from longtls.crypto.suites import SUITES
from longtls.errors import LocalProtocolError, RemoteProtocolError
from longtls.events import Event, KeyUpdateCompleted, Side
from longtls.handshake.eku import EKUAdmission, ExtendedKeyUpdate, Role
from longtls.handshake.eku_profiles import PROFILES

SUITE = SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]


@dataclass
class _Config:
    rekey_timeout: float | None = None
    eku_required: bool = False

    def now(self) -> float:
        return 0.0


@dataclass
class LateHost:
    """An EKUHost that confirms send switches only when told to (like DTLS on ACK)."""

    is_client: bool
    configuration: _Config = field(default_factory=_Config)
    close_sent: bool = False
    sent: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    pending_send: list[bytes] = field(default_factory=list)
    send_secret: bytes = b"old"
    receive_secret: bytes = b"old"
    completed: int = 0

    def queue_handshake(self, message: bytes) -> None:
        self.sent.append(message)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def log_secret(self, label: str, secret: bytes) -> None:
        pass

    def request_send_switch(self, secret: bytes) -> None:
        self.pending_send.append(secret)

    def switch_receive(self, secret: bytes) -> None:
        self.receive_secret = secret

    def eku_admission(self) -> EKUAdmission:
        return EKUAdmission.ACCEPT

    def eku_wait_seconds(self) -> float:
        return 0.0

    def eku_completed(self) -> None:
        self.completed += 1

    def acknowledge(self, eku: ExtendedKeyUpdate) -> None:
        """The peer acknowledged what we sent under the old key: switch now."""
        self.send_secret = self.pending_send.pop(0)
        eku.send_switch_done()


def _pair(profile: EKUProfileName) -> tuple[ExtendedKeyUpdate, LateHost, ExtendedKeyUpdate, LateHost]:
    main, handshake_hash, exporter = os.urandom(32), os.urandom(32), os.urandom(32)
    ends = []
    for is_client in (True, False):
        host = LateHost(is_client)
        eku = ExtendedKeyUpdate(
            host, PROFILES[profile], SUITE, NamedGroup.x25519, main, handshake_hash, exporter, exporter
        )
        ends += [eku, host]
    return ends[0], ends[1], ends[2], ends[3]  # type: ignore[return-value]


def _deliver(sender: LateHost, receiver: ExtendedKeyUpdate) -> None:
    messages, sender.sent[:] = list(sender.sent), []
    for raw in messages:
        receiver.handle(raw[0], raw[4:], raw)


def _completed(host: LateHost) -> list[KeyUpdateCompleted]:
    return [e for e in host.events if isinstance(e, KeyUpdateCompleted)]


@pytest.mark.parametrize("profile", list(EKUProfileName))
def test_update_completes_only_once_the_send_switch_is_confirmed(profile: EKUProfileName) -> None:
    client, chost, server, shost = _pair(profile)
    client.start()
    _deliver(chost, server)  # request
    _deliver(shost, client)  # response
    _deliver(chost, server)  # draft-13: finish; older texts: the client's new_key_update
    if not PROFILES[profile].three_messages:
        _deliver(shost, client)  # the server's new_key_update
    # Every message is exchanged and the receive keys are new, but neither
    # host has confirmed its send switch: nothing is complete yet.
    assert client.role is Role.SWITCHING and server.role is Role.SWITCHING
    assert client.generation == server.generation == 0
    assert not _completed(chost) and not _completed(shost) and chost.completed == shost.completed == 0
    assert chost.send_secret == shost.send_secret == b"old"
    # A new request while one is still switching is the draft-13 §11.3 error.
    with pytest.raises(RemoteProtocolError) as info:
        server.handle(*_request_from(client))
    assert info.value.alert == AlertDescription.unexpected_message

    chost.acknowledge(client)
    assert client.role is Role.IDLE and client.generation == 1
    assert [(e.generation, e.initiator) for e in _completed(chost)] == [(1, Side.client)]
    shost.acknowledge(server)
    assert server.role is Role.IDLE and server.generation == 1
    assert [(e.generation, e.initiator) for e in _completed(shost)] == [(1, Side.client)]
    # Both ends moved to the same generation-1 secrets, each direction paired.
    assert chost.send_secret == shost.receive_secret != b"old"
    assert shost.send_secret == chost.receive_secret != b"old"
    assert chost.send_secret != shost.send_secret
    assert client.exporter_secret == server.exporter_secret


def _request_from(eku: ExtendedKeyUpdate) -> tuple[int, bytes, bytes]:
    raw = eku.profile.codec.request(NamedGroup.x25519, eku.group.generate().public).encode()
    return raw[0], raw[4:], raw


@pytest.mark.parametrize("profile", list(EKUProfileName))
def test_confirmation_without_a_request_is_a_local_error(profile: EKUProfileName) -> None:
    client, _, _, _ = _pair(profile)
    with pytest.raises(LocalProtocolError):
        client.send_switch_done()
