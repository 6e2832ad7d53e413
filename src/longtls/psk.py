"""External pre-shared keys (RFC 9846 §4.2.11, RFC 9257) and the RFC 9258 importer.

An ``ExternalPsk`` is a key provisioned outside TLS together with its identity
and the one hash it may be used with (RFC 9846 §2.2: "the PSK identity and the
KDF hash algorithm ... MUST also be provisioned"; SHA-256 when none is given,
§4.2.11).  Both ends list the same ``ExternalPsk`` in their Configuration.

With ``importer=True`` the key is never used directly: RFC 9258 derives one
imported PSK per target hash from it, offered under a serialized
``ImportedIdentity`` and bound with the "imp binder" label, so that the same
external key can serve both hashes (and, through ``context``, both roles or
several protocols) without the outputs ever colliding.

What the handshake engines use is a ``PskCandidate``: the identity as it goes
on the wire, the PSK, its hash and the binder label (RFC 9846 §7.1: "ext binder"
for external PSKs, "res binder" for tickets; RFC 9258 §5.2: "imp binder").

Decisions (docs/external-psk.md): keys shorter than 16 bytes are refused
(RFC 9257 §6: a PSK "MUST be at least 128 bits long"; RFC 9846 §2.2 warns
against low-entropy PSKs); an identity is looked up byte for byte (RFC 9257
§6.1.1); ``repr`` never shows a key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .constants import CipherSuite, PskKeyExchangeMode, PskKind
from .crypto import key_schedule as ks
from .crypto.suites import SUITES, SuiteInfo
from .errors import ConfigurationError, DecodeError
from .wire.buffer import Buffer, u16, vec

#: Shortest external key accepted, in bytes (decision: see the module docstring).
MIN_EXTERNAL_PSK_LENGTH = 16
#: Hashes a TLS 1.3 PSK can be bound to (those of the TLS 1.3 cipher suites).
PSK_HASHES = ("sha256", "sha384")

#: RFC 9258 §5.1: ImportedIdentity.target_protocol for TLS 1.3 (its ProtocolVersion).
TLS13_TARGET_PROTOCOL = 0x0304
#: RFC 9258 §10, "TLS KDF Identifiers": ImportedIdentity.target_kdf per hash.
TARGET_KDF = {"sha256": 0x0001, "sha384": 0x0002}
_KDF_HASH = {code: name for name, code in TARGET_KDF.items()}



@dataclass(frozen=True, slots=True)
class ExternalPsk:
    """One externally provisioned PSK: identity, key, and the hash it is bound to.

    RFC 9257 §4.1, §6 and RFC 9846 Appendix E.8: an external PSK is meant to be
    known to exactly one client and one server.  Do not let a node use the same PSK
    both as a client and as a server (a "Selfie" reflection makes it talk to
    itself): provision one PSK per direction, or use the importer with a
    ``context`` naming both ends, e.g. ``b"client=meter-17;server=gw-2"``.
    """

    identity: bytes
    key: bytes = field(repr=False)
    #: The KDF hash this PSK is used with: "sha256" (the default of RFC 9846
    #: §4.2.11) or "sha384".  Ignored as a restriction with ``importer=True``
    #: (then it is the hash of the importer's own HKDF, RFC 9258 §5.1).
    hash_name: str = "sha256"
    #: Use only through the RFC 9258 importer (both ends must agree).
    importer: bool = False
    #: RFC 9258 ImportedIdentity.context (sent in clear; no secrets in it).
    context: bytes = b""

    def __post_init__(self) -> None:
        _require_bytes("identity", self.identity)
        _require_bytes("key", self.key)
        _require_bytes("context", self.context)
        if not 1 <= len(self.identity) <= 0xFFFF:
            raise ConfigurationError("a PSK identity must be 1 to 65535 bytes long")
        if len(self.key) < MIN_EXTERNAL_PSK_LENGTH:
            raise ConfigurationError(
                f"external PSK {self.identity!r} is {len(self.key)} bytes; at least "
                f"{MIN_EXTERNAL_PSK_LENGTH} random bytes are needed (RFC 9257 §6: no low-entropy keys)"
            )
        if self.hash_name not in PSK_HASHES:
            raise ConfigurationError(
                f"unsupported PSK hash {self.hash_name!r} (choose from {', '.join(PSK_HASHES)})"
            )
        if len(self.context) > 0xFFFF:
            raise ConfigurationError("an importer context must be at most 65535 bytes")

    def __repr__(self) -> str:
        extra = ", importer=True" if self.importer else ""
        return f"ExternalPsk(identity={self.identity!r}, hash_name={self.hash_name!r}{extra})"


def _require_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise ConfigurationError(f"an external PSK's {name} must be bytes, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class ImportedIdentity:
    """RFC 9258 §5.1: what an imported PSK's identity is, serialized on the wire."""

    external_identity: bytes
    context: bytes
    target_protocol: int
    target_kdf: int

    def encode(self) -> bytes:
        return b"".join((
            vec(2, self.external_identity), vec(2, self.context),
            u16(self.target_protocol), u16(self.target_kdf),
        ))

    @classmethod
    def decode(cls, data: bytes) -> ImportedIdentity | None:
        """The ImportedIdentity in ``data``, or None if it is not one (then it is
        some other kind of identity: a ticket, or a directly used external PSK)."""
        buf = Buffer(data)
        try:
            identity = buf.read_vector(2, 1)
            context = buf.read_vector(2)
            protocol, kdf = buf.read_uint16(), buf.read_uint16()
            buf.expect_end("ImportedIdentity")
        except DecodeError:
            return None
        return cls(identity, context, protocol, kdf)


def hash_suite(hash_name: str) -> SuiteInfo:
    """A suite with this hash, to drive the key schedule functions (which only
    use the suite's hash): PSK binders and the importer depend on nothing else."""
    for info in SUITES.values():
        if info.hash_name == hash_name:
            return info
    raise ConfigurationError(f"no cipher suite uses {hash_name!r}")


def imported_psk(epsk: ExternalPsk, target_hash: str, target_protocol: int = TLS13_TARGET_PROTOCOL) -> bytes:
    """ipskx for ``epsk`` imported for ``target_protocol`` (TLS 1.3 0x0304,
    DTLS 1.3 0xfefc) with ``target_hash`` (RFC 9258 §5.1):

        epskx = HKDF-Extract(0, epsk)
        ipskx = HKDF-Expand-Label(epskx, "derived psk", Hash(ImportedIdentity), L)

    HKDF and Hash use the EPSK's own hash; L is the target KDF's output length.
    """
    kdf = hash_suite(epsk.hash_name)
    identity = imported_identity(epsk, target_hash, target_protocol).encode()
    epskx = ks.hkdf_extract(kdf, b"", epsk.key)
    length = hash_suite(target_hash).hash_length
    return ks.hkdf_expand_label(kdf, epskx, b"derived psk", ks.transcript_digest(kdf, identity), length)


def imported_identity(
    epsk: ExternalPsk, target_hash: str, target_protocol: int = TLS13_TARGET_PROTOCOL
) -> ImportedIdentity:
    """RFC 9258 §5.1: the protocol is part of the identity, so a PSK imported
    for DTLS 1.3 (0xfefc) is never the one imported for TLS 1.3 (0x0304)."""
    return ImportedIdentity(epsk.identity, epsk.context, target_protocol, TARGET_KDF[target_hash])


@dataclass(frozen=True, slots=True)
class PskCandidate:
    """A PSK as the handshake offers or accepts it."""

    identity: bytes  # as on the wire (a ticket, an identity, or an ImportedIdentity)
    psk: bytes = field(repr=False)
    hash_name: str
    kind: PskKind
    #: What to show the application: the external identity (None for tickets).
    display_identity: bytes | None = None

    def __repr__(self) -> str:
        return f"<PskCandidate {self.kind.value} {self.display_identity!r} {self.hash_name}>"

    def early_secrets(self, prefix: bytes = ks.TLS13_LABEL_PREFIX) -> ks.HandshakeSecrets:
        """The Early Secret of this PSK (RFC 9846 §7.1), under its hash."""
        return ks.HandshakeSecrets(hash_suite(self.hash_name), self.psk, prefix)

    def binder_key(
        self, prefix: bytes = ks.TLS13_LABEL_PREFIX, early: ks.HandshakeSecrets | None = None
    ) -> bytes:
        """binder_key under the transport's label prefix ("dtls13" over DTLS, RFC 9147 §5.9);
        ``early``: this PSK's :meth:`early_secrets`, when the caller keeps them."""
        return (early or self.early_secrets(prefix)).binder_key(self.kind.binder_label)


def client_candidates(
    psks: Iterable[ExternalPsk], suite_hashes: Sequence[str], target_protocol: int = TLS13_TARGET_PROTOCOL
) -> list[PskCandidate]:
    """The external PSKs a client offers, in configuration order.

    A direct PSK is offered if one of our suites has its hash.  An imported
    one is offered once per hash of our suites (RFC 9258 §5.1: endpoints
    import a PSK for each hash they may negotiate), in the suites' order.
    """
    hashes = list(dict.fromkeys(suite_hashes))
    out: list[PskCandidate] = []
    for epsk in psks:
        if not epsk.importer:
            if epsk.hash_name in hashes:
                out.append(PskCandidate(epsk.identity, epsk.key, epsk.hash_name, PskKind.EXTERNAL, epsk.identity))
            continue
        for target in hashes:
            out.append(PskCandidate(
                imported_identity(epsk, target, target_protocol).encode(),
                imported_psk(epsk, target, target_protocol), target,
                PskKind.IMPORTED, epsk.identity,
            ))
    return out


#: Server: find the ExternalPsk for an identity (for large or changing sets).
PskLookup = Callable[[bytes], ExternalPsk | None]


def find_external(
    psks: Sequence[ExternalPsk], lookup: PskLookup | None, identity: bytes,
    target_protocol: int = TLS13_TARGET_PROTOCOL,
) -> tuple[ExternalPsk, str, ImportedIdentity | None] | None:
    """Server: the external PSK an offered identity names, the hash it must be
    used with, and its ImportedIdentity if it came through the importer.

    A direct identity is tried first; otherwise, if the identity parses as an
    ImportedIdentity for ``target_protocol`` and a known KDF, its external_identity and
    context must match a PSK configured with ``importer=True``.
    """
    epsk = _lookup(psks, lookup, identity)
    if epsk is not None and not epsk.importer:
        return epsk, epsk.hash_name, None
    imported = ImportedIdentity.decode(identity)
    if imported is None or imported.target_protocol != target_protocol:
        return None
    target = _KDF_HASH.get(imported.target_kdf)
    epsk = _lookup(psks, lookup, imported.external_identity)
    if target is None or epsk is None or not epsk.importer or epsk.context != imported.context:
        return None
    return epsk, target, imported


def server_candidate(
    psks: Sequence[ExternalPsk], lookup: PskLookup | None, identity: bytes, suite_hash: str,
    target_protocol: int = TLS13_TARGET_PROTOCOL,
) -> PskCandidate | None:
    """The PskCandidate for an offered identity if it is ours and usable with
    the negotiated hash (RFC 9846 §4.2.11: "a compatible PSK"), else None."""
    found = find_external(psks, lookup, identity, target_protocol)
    if found is None or found[1] != suite_hash:
        return None
    epsk, target, imported = found
    if imported is None:
        return PskCandidate(identity, epsk.key, target, PskKind.EXTERNAL, epsk.identity)
    return PskCandidate(
        identity, imported_psk(epsk, target, target_protocol), target, PskKind.IMPORTED, epsk.identity
    )


def _lookup(psks: Sequence[ExternalPsk], lookup: PskLookup | None, identity: bytes) -> ExternalPsk | None:
    """The configured PSK with this identity (compared byte for byte), else
    what the application's lookup returns."""
    for epsk in psks:
        if epsk.identity == identity:
            return epsk
    return lookup(identity) if lookup is not None else None


def load_psk_file(path: str) -> bytes:
    """The key in a PSK file: hexadecimal on the first line, as ``openssl -psk``
    and ``gnutls-cli --pskkey`` take it.  Raises ConfigurationError."""
    try:
        with open(path, encoding="ascii", errors="strict") as f:
            line = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not an ASCII text file"
        raise ConfigurationError(f"cannot read PSK file {path!r}: {reason}") from None
    try:
        return bytes.fromhex(line)
    except ValueError:
        raise ConfigurationError(
            f"PSK file {path!r} must hold the key in hexadecimal on its first line"
        ) from None


def check_psk_configuration(
    external_psks: Iterable[object], psk_key_exchange_modes: Sequence[PskKeyExchangeMode],
    cipher_suites: Iterable[CipherSuite],
) -> None:
    """Configuration.validate's checks of the external PSKs (ConfigurationError).

    Given the Configuration's fields rather than the Configuration itself, so
    that this module (data: the ExternalPsk type) never imports config, which
    imports it.
    """
    if not psk_key_exchange_modes:
        raise ConfigurationError("external PSKs need psk_key_exchange_modes (psk_dhe_ke, psk_ke or both)")
    suite_hashes = {SUITES[s].hash_name for s in cipher_suites if s in SUITES}
    seen: set[bytes] = set()
    for epsk in external_psks:
        if not isinstance(epsk, ExternalPsk):
            raise ConfigurationError("external_psks must hold longtls.psk.ExternalPsk objects")
        if epsk.identity in seen:
            raise ConfigurationError(f"two external PSKs have the identity {epsk.identity!r}")
        seen.add(epsk.identity)
        if not epsk.importer and epsk.hash_name not in suite_hashes:
            raise ConfigurationError(
                f"external PSK {epsk.identity!r} is bound to {epsk.hash_name}, "
                "which none of the configured cipher suites uses"
            )
