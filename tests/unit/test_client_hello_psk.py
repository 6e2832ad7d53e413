"""A ClientHello offering PSKs is encoded once, its binders appended (issue 16).

RFC 9846 §4.2.11.2: the binders end the ClientHello and keep their
placeholders' lengths, so the truncated ClientHello followed by the real
binders list is the ClientHello with the real binders.  Checked here: the
bytes on the wire are exactly the encoding of the ClientHello the client
keeps (with its real binders), for one PSK and for two of different hashes;
the binders' values are checked against the RFC formula in
test_external_psk.py.
"""

from __future__ import annotations

import pytest

from helpers.pair import configs
from longtls.connection import Connection
from longtls.constants import HandshakeType, NamedGroup
from longtls.psk import ExternalPsk
from longtls.wire.messages import encode_handshake

PSK_256 = ExternalPsk(b"client-1", bytes(range(32)))
PSK_384 = ExternalPsk(b"client-2", bytes(range(48)), hash_name="sha384")
HASH_LENGTH = {"sha256": 32, "sha384": 48}


@pytest.mark.parametrize("psks", [(PSK_256,), (PSK_256, PSK_384)], ids=["one", "two hashes"])
def test_client_hello_bytes_are_the_kept_client_hello(psks: tuple[ExternalPsk, ...]) -> None:
    client_cfg, _, _ = configs(
        client_external_psks=psks, client_groups=[NamedGroup.x25519], client_key_share_groups=[NamedGroup.x25519],
    )
    client = Connection(client_cfg)
    sent: list[bytes] = []
    original = client.queue_handshake

    def queue(message: bytes) -> None:
        sent.append(bytes(message))
        original(message)

    client.queue_handshake = queue  # type: ignore[method-assign]
    client.start_handshake()
    (hello,) = sent
    kept = client.handshake.client_hello
    assert kept is not None
    assert hello == encode_handshake(HandshakeType.client_hello, kept.encode())
    # The binders are real ones, not the zero placeholders (one per PSK, its hash's length).
    binders = hello[-sum(1 + HASH_LENGTH[p.hash_name] for p in psks):]
    assert binders.count(0) < len(binders) // 4
