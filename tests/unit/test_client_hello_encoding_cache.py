"""The client encodes its configuration-only ClientHello extensions once per
distinct values (issue 16); a Configuration changed between connections must
still be what the next ClientHello says."""

from __future__ import annotations

from longtls.config import Configuration
from longtls.connection import Connection
from longtls.constants import ExtensionType, HandshakeType, NamedGroup
from longtls.wire import extensions as X
from longtls.wire.messages import ClientHello, extensions_by_type


def _client_hello_extensions(config: Configuration) -> dict[int, bytes]:
    conn = Connection(config)
    conn.start_handshake()
    record = conn.data_to_send()
    # One plaintext handshake record (RFC 9846 §5.1): 5-byte header, then the message.
    assert record[5] == HandshakeType.client_hello
    return extensions_by_type(ClientHello.decode(record[9:]).extensions)


def test_a_changed_configuration_is_what_the_next_client_hello_offers() -> None:
    config = Configuration(
        is_client=True, server_name="example.com", alpn_protocols=["h2"],
        groups=(NamedGroup.x25519, NamedGroup.secp256r1), key_share_groups=(NamedGroup.x25519,),
        record_size_limit=4096,
    )
    first = _client_hello_extensions(config)
    assert X.decode_supported_groups(first[ExtensionType.supported_groups]) == (
        NamedGroup.x25519, NamedGroup.secp256r1,
    )
    assert X.decode_application_layer_protocol_negotiation(
        first[ExtensionType.application_layer_protocol_negotiation]
    ) == (b"h2",)
    assert X.decode_record_size_limit(first[ExtensionType.record_size_limit]) == 4096

    # The same object, changed in place.
    config.groups = (NamedGroup.secp256r1, NamedGroup.x25519)
    config.key_share_groups = (NamedGroup.secp256r1,)
    config.alpn_protocols = ["http/1.1", "h2"]
    config.record_size_limit = 2048
    second = _client_hello_extensions(config)
    assert X.decode_supported_groups(second[ExtensionType.supported_groups]) == (
        NamedGroup.secp256r1, NamedGroup.x25519,
    )
    assert X.decode_application_layer_protocol_negotiation(
        second[ExtensionType.application_layer_protocol_negotiation]
    ) == (b"http/1.1", b"h2")
    assert X.decode_record_size_limit(second[ExtensionType.record_size_limit]) == 2048

    # ALPN and psk_key_exchange_modes switched off: not sent at all.
    config.alpn_protocols = []
    config.psk_key_exchange_modes = ()
    third = _client_hello_extensions(config)
    assert ExtensionType.application_layer_protocol_negotiation not in third
    assert ExtensionType.psk_key_exchange_modes not in third
    assert ExtensionType.psk_key_exchange_modes in second
