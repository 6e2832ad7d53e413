"""The stateless HelloRetryRequest cookie of a DTLS server (RFC 9147 §5.1; RFC 9846 §4.2.2).

A DTLS server answers a ClientHello that carries no cookie with a
HelloRetryRequest that carries one, and keeps nothing: everything it needs
to continue when the client's second ClientHello comes back is inside the
cookie, authenticated.  That is (RFC 9846 §4.4.1, RFC 9147 §5.1):

- Hash(ClientHello1), which the transcript carries as the synthetic
  message_hash message in place of ClientHello1;
- what is needed to rebuild the HelloRetryRequest byte for byte (its cipher
  suite and, when it asked for one, the key_share group; the rest is fixed by
  the transport and by the cookie itself);
- when it was issued, so that it expires;

and its MAC binds the client's address, so a cookie is worth nothing from
another address (RFC 9147 §5.1, §11: "The cookie MUST depend on the
client's address").

Wire format (docs/dtls-handshake.md), all integers big-endian::

    uint8  format = 1;
    uint64 issued_ms;            // the server's clock, milliseconds
    uint16 cipher_suite;         // the HelloRetryRequest's
    uint16 group;                // its key_share group, 0 if it had none
    opaque client_hello_hash<32..64>;   // u8 length; the suite's hash
    opaque mac[32];              // HMAC-SHA256 below

    mac = HMAC-SHA256(secret, "longtls dtls13 cookie" || uint16 version
                      || uint16 len(address) || address || all fields above)

The address is not carried in the cookie, only in the MAC; the cookie does
not let anyone reproduce the ClientHello (rfc9147bis-02 §11: it carries a
hash of it).  Secrets rotate with ``Configuration.rotate_cookie_secret``:
the current and the previous secret are both tried (RFC 9147 §5.1 "simply to
try verifying with both secrets").
"""

from __future__ import annotations

import hmac as _hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac

__all__ = ["COOKIE_CLOCK_SKEW", "CookieContents", "issue_cookie", "open_cookie"]

_FORMAT = 1
_LABEL = b"longtls dtls13 cookie"
_MAC_LENGTH = 32
_FIXED = struct.Struct(">BQHHB")  # format, issued_ms, cipher_suite, group, hash length
_HASH_LENGTHS = frozenset({32, 48, 64})
#: Seconds a cookie's issue time may lie ahead of our clock (servers that
#: share a cookie secret need not share a clock exactly).
COOKIE_CLOCK_SKEW = 5.0


@dataclass(frozen=True, slots=True)
class CookieContents:
    """What a valid cookie says: enough to rebuild the transcript's first two
    messages (message_hash(ClientHello1) and the HelloRetryRequest)."""

    issued_ms: int
    cipher_suite: int
    #: The group the HelloRetryRequest's key_share asked for, or None.
    group: int | None
    #: Hash(ClientHello1) under the cipher suite's hash (RFC 9846 §4.4.1).
    client_hello_hash: bytes


def _mac(secret: bytes, version: int, address: bytes, fields: bytes) -> bytes:
    h = hmac.HMAC(secret, hashes.SHA256())
    h.update(_LABEL + struct.pack(">HH", version, len(address)) + address + fields)
    return h.finalize()


def issue_cookie(secret: bytes, version: int, address: bytes, contents: CookieContents) -> bytes:
    """The cookie for ``contents``, bound to ``address`` and to the protocol
    ``version`` (supported_versions: DTLS 1.3's 0xfefc)."""
    digest = contents.client_hello_hash
    if len(digest) not in _HASH_LENGTHS:
        raise ValueError("client_hello_hash must be a SHA-256, SHA-384 or SHA-512 digest")
    fields = _FIXED.pack(
        _FORMAT, contents.issued_ms, contents.cipher_suite, contents.group or 0, len(digest)
    ) + digest
    return fields + _mac(secret, version, address, fields)


def open_cookie(
    cookie: bytes, secrets: Iterable[bytes], version: int, address: bytes,
    now: float, lifetime: float,
) -> CookieContents | None:
    """The contents of ``cookie`` if one of ``secrets`` authenticates it for
    ``address`` and it was issued within ``lifetime`` seconds of ``now``
    (and not more than COOKIE_CLOCK_SKEW ahead); else None.

    Never raises on malformed input: a cookie is attacker-controlled bytes.
    """
    if len(cookie) < _FIXED.size + _MAC_LENGTH:
        return None
    fmt, issued_ms, suite, group, hash_length = _FIXED.unpack_from(cookie)
    end = _FIXED.size + hash_length
    if fmt != _FORMAT or hash_length not in _HASH_LENGTHS or len(cookie) != end + _MAC_LENGTH:
        return None
    fields, tag = cookie[:end], cookie[end:]
    # Every secret is tried, so the time taken does not say which one matched.
    valid = False
    for secret in secrets:
        valid |= _hmac.compare_digest(_mac(secret, version, address, fields), tag)
    if not valid:
        return None
    age = now - issued_ms / 1000
    if age > lifetime or age < -COOKIE_CLOCK_SKEW:
        return None
    return CookieContents(issued_ms, suite, group or None, cookie[_FIXED.size:end])
