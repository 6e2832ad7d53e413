"""Exceptions, each saying whose fault it was and which alert it maps to.

Messages never contain key material: only names, sizes and code points.
"""

from __future__ import annotations

from enum import Enum

from .constants import AlertDescription


class TLSError(Exception):
    """Base class of every error longtls raises."""

    alert: AlertDescription = AlertDescription.internal_error

    def __init__(self, message: str, alert: AlertDescription | None = None) -> None:
        super().__init__(message)
        if alert is not None:
            self.alert = alert

    def __str__(self) -> str:
        return f"{self.args[0]} ({self.alert.name})"


class ProtocolError(TLSError):
    """A protocol failure that ends the connection with a fatal alert."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol (or presented unacceptable credentials).

    longtls has queued the fatal alert ``self.alert``; flush ``data_to_send()``
    and close the transport.
    """


class LocalProtocolError(ProtocolError):
    """The application asked for something the protocol does not allow now.

    Nothing is sent and the connection stays as it was.
    """

    def __str__(self) -> str:
        return str(self.args[0])


class UsageLimitError(LocalProtocolError):
    """Our sending key reached the AEAD usage limit of its cipher (RFC 9846 §5.5)
    before a key update replaced it: our side's limit, not the peer's fault.

    longtls starts a key update at 7/8 of the limit; this is raised only when
    that update has not completed yet (e.g. an Extended Key Update waiting for
    the peer's answer).  Nothing was sent and the connection stays open: send
    again once the update completes.  ``alert`` (internal_error) is what the
    connection sends if it has to give up.
    """

    alert = AlertDescription.internal_error


class DecodeError(RemoteProtocolError):
    """A message or record could not be parsed."""

    alert = AlertDescription.decode_error


class MLSError(RemoteProtocolError):
    """An MLS object from the peer is invalid (RFC 9420): a key that is not a
    key of the group's cipher suite, a cipher suite we do not implement, a
    value that breaks a rule of the protocol.  Malformed encodings are
    ``DecodeError``s instead.

    MLS itself has no alerts; ``alert`` is what MLS mode's channel sends by
    default (illegal_parameter), and the channel may choose another.
    """

    alert = AlertDescription.illegal_parameter


class MLSDecryptError(MLSError):
    """An MLS ciphertext did not open: HPKE (DecryptWithLabel, RFC 9420 §5.1.3)
    or the AEAD under a key of the key schedule.  ``alert`` is decrypt_error
    ("a handshake (not record layer) cryptographic operation failed")."""

    alert = AlertDescription.decrypt_error


class AlertReceived(ProtocolError):
    """The peer ended the connection with a fatal alert."""

    def __init__(self, description: AlertDescription | int) -> None:
        try:
            desc = AlertDescription(description)
        except ValueError:
            desc = AlertDescription.internal_error
        super().__init__(f"peer sent fatal alert {int(description)}", desc)


class ConfigurationError(TLSError, ValueError):
    """The configuration is unusable; the message says what to change."""


class CertificateError(RemoteProtocolError):
    """A certificate chain failed validation; ``alert`` names the reason."""

    alert = AlertDescription.bad_certificate


class AuthenticatorError(TLSError):
    """An exported authenticator or authenticator request (RFC 9261) is not
    acceptable; ``alert`` names why (decode_error, decrypt_error,
    illegal_parameter, bad_certificate, ...).

    Authenticators are bytes the application carries (RFC 9261 §4, §5): the
    connection is not affected and nothing was sent.  A protocol that carries
    them inside TLS (Certificate Update) turns this into its own alert.
    """


class AuthenticatorRefused(AuthenticatorError):
    """The peer answered our authenticator request with a well-formed empty
    authenticator (RFC 9261 §6): it declined to authenticate.  RFC 9261 §7:
    "Well-formed empty authenticators are returned as invalid"; the request's
    context is used up."""

    alert = AlertDescription.certificate_required


class NotTLSReason(Enum):
    """What the first bytes from a peer looked like when they were not TLS."""

    #: An HTTP request (``GET / HTTP/1.1`` ...): a plain-HTTP client on a TLS port.
    HTTP_REQUEST = "plain HTTP request"
    #: An HTTP response (``HTTP/1.1 400 ...``): a TLS client talking to a plain-HTTP server.
    HTTP_RESPONSE = "plain HTTP response"
    #: An SSL 2.0-format CLIENT-HELLO (RFC 9846 Appendix E.5 forbids negotiating with it).
    SSL2_CLIENT_HELLO = "SSL 2.0 ClientHello"
    #: Anything else that does not start with a TLS record header.
    UNKNOWN = "not TLS"


class NotTLSError(RemoteProtocolError):
    """The peer's first bytes are not a TLS record at all (RFC 9846 §5).

    ``reason`` says what they looked like, so a server can log a plain-HTTP
    request on its TLS port as such.  The alert (already queued) is the one the
    spec names for the first bad header field; see docs/conformance.md.
    """

    def __init__(self, message: str, alert: AlertDescription, reason: NotTLSReason) -> None:
        super().__init__(message, alert)
        self.reason = reason


class KeyUpdateTimeoutError(ProtocolError):
    """The peer did not answer a key update within ``Configuration.rekey_timeout``
    (or the ``timeout`` given for that update): an Extended Key Update that did
    not complete, or a KeyUpdate with update_requested that got no KeyUpdate back.

    No alert names a timeout.  As for the handshake timeout, longtls sent
    user_canceled ("canceled for some reason unrelated to a protocol
    failure", RFC 9846 §6.1) and then close_notify; ``alert`` is close_notify.
    ``kind`` is "extended" or "standard"; ``seconds`` the time allowed.
    """

    def __init__(self, kind: str, seconds: float) -> None:
        what = (
            "did not complete the extended key update" if kind == "extended"
            else "did not answer our KeyUpdate (update_requested)"
        )
        super().__init__(
            f"the peer {what} within {seconds:g} s (rekey_timeout); the connection is closed",
            AlertDescription.close_notify,
        )
        self.kind = kind
        self.seconds = seconds


class HandshakeTimeoutError(ProtocolError, TimeoutError):
    """The handshake did not complete within ``Configuration.handshake_timeout``
    seconds (counted from the first message, or from ``Connection.connection_made``).

    No alert names a timeout: longtls sent user_canceled ("canceled for some
    reason unrelated to a protocol failure", RFC 9846 §6.1), then
    close_notify; ``alert`` is close_notify.  Also a ``TimeoutError``, so code
    catching timeouts in general sees it.  ``seconds`` is the time allowed.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"TLS handshake not complete after {seconds:g} seconds", AlertDescription.close_notify)
        self.seconds = seconds
