"""Certificate compression (RFC 8879): the algorithms, bounded decompression,
and a cache of our own compressed Certificate messages.

zlib comes from the standard library and is always there; brotli and zstd
need the optional packages ``brotli`` (1.2 or newer: earlier versions cannot
cap their output) and ``zstandard`` (``pip install 'longtls[compression]'``).
An algorithm whose package is missing is neither offered nor accepted.

What is compressed is the body of the Certificate message that would have
been sent otherwise, without its 4-byte handshake header (RFC 8879 erratum
8753 says so explicitly; tlslite-ng, the interop peer, does the same).

Every way a CompressedCertificate can fail to give back a Certificate body is
bad_certificate (RFC 8879 §4: "If the received CompressedCertificate message
cannot be decompressed, the connection MUST be terminated with the
bad_certificate alert"), and so is one whose algorithm we never offered: we
cannot decompress it.  The declared uncompressed_length is checked against our
handshake message limit before any decompression (over it: illegal_parameter,
as for an uncompressed message that long), and the decompressor is never
allowed to produce more than uncompressed_length bytes (RFC 8879 §5), so a
"zip bomb" costs a few kilobytes of output at most.
"""

from __future__ import annotations

import functools
import importlib
import zlib
from collections.abc import Callable, Collection, Sequence
from types import ModuleType

from .constants import AlertDescription, CertificateCompressionAlgorithm
from .errors import ConfigurationError, RemoteProtocolError
from .wire.messages import CompressedCertificate

__all__ = [
    "ALGORITHM_PREFERENCE",
    "DEFAULT_CERTIFICATE_COMPRESSION",
    "MISSING_PACKAGE",
    "algorithm_name",
    "available_algorithms",
    "check_certificate_compression",
    "compress_certificate",
    "decompress_certificate",
    "is_available",
]

#: Our preference when we compress and when we list what we accept.  zstd
#: first: within a few percent of brotli on chains, better than it on a single
#: small certificate (which brotli sometimes fails to shrink at all), and tens
#: of times faster to compress (an uncached post-handshake answer pays that).
#: Then brotli, then zlib, which every peer that compresses at all speaks.
ALGORITHM_PREFERENCE: tuple[CertificateCompressionAlgorithm, ...] = (
    CertificateCompressionAlgorithm.zstd,
    CertificateCompressionAlgorithm.brotli,
    CertificateCompressionAlgorithm.zlib,
)

#: The PyPI package each optional algorithm needs.
MISSING_PACKAGE: dict[CertificateCompressionAlgorithm, str] = {
    CertificateCompressionAlgorithm.brotli: "brotli>=1.2",
    CertificateCompressionAlgorithm.zstd: "zstandard",
}

# Compression levels: each library's default (zlib 6, brotli 11, zstd 3).
# Stronger settings gain a few bytes on a certificate chain at most, and the
# defaults give the bytes a peer gets when it compresses the same message
# itself: tlslite-ng 0.9.0b2 re-encodes a CompressedCertificate it received
# and hashes that into its post-handshake authentication transcript, so with
# any other setting its CertificateVerify check fails
# (docs/certificate-compression.md).
_ZLIB_LEVEL = 6
_BROTLI_QUALITY = 11
_ZSTD_LEVEL = 3
# zstd decoders are only required to support windows up to 8 MiB (RFC 8878
# §3.1.1.1.2); a frame asking for more is refused before anything is allocated.
_ZSTD_MAX_WINDOW = 1 << 23
# A Certificate body is at least a 1-byte context length and a 3-byte list length.
_MIN_CERTIFICATE_BODY = 4
# Entries of the compressed-chain cache (one per chain and algorithm in use).
_CACHE_SIZE = 32


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_brotli = _import("brotli")
if _brotli is not None and not hasattr(_brotli, "Decompressor"):
    _brotli = None  # brotlipy and other look-alikes: no streaming decompressor
_zstd = _import("zstandard")


def is_available(algorithm: int) -> bool:
    """Whether this installation can compress and decompress with ``algorithm``."""
    if algorithm == CertificateCompressionAlgorithm.zlib:
        return True
    if algorithm == CertificateCompressionAlgorithm.brotli:
        return _brotli is not None and _brotli_caps_output()
    if algorithm == CertificateCompressionAlgorithm.zstd:
        return _zstd is not None
    return False


@functools.cache
def _brotli_caps_output() -> bool:
    """brotli 1.2 added ``output_buffer_limit``; without it a zip bomb could not
    be stopped, so an older brotli counts as not installed."""
    assert _brotli is not None
    try:
        _brotli.Decompressor().process(b"", output_buffer_limit=1)
    except TypeError:
        return False
    except Exception:  # an empty input is not an error in any version we know
        return True
    return True


def available_algorithms() -> tuple[CertificateCompressionAlgorithm, ...]:
    """Every algorithm this installation supports, in ``ALGORITHM_PREFERENCE`` order."""
    return tuple(a for a in ALGORITHM_PREFERENCE if is_available(a))


#: Configuration.certificate_compression's default: all of them (on by default,
#: as in Chrome, BoringSSL and OpenSSL 3.2+; docs/certificate-compression.md).
DEFAULT_CERTIFICATE_COMPRESSION = available_algorithms()


def check_certificate_compression(algorithms: Sequence[int]) -> None:
    """ConfigurationError unless every algorithm is known and installed."""
    if isinstance(algorithms, (str, bytes)):
        raise ConfigurationError("certificate_compression is a sequence of CertificateCompressionAlgorithm")
    for algorithm in algorithms:
        try:
            known = CertificateCompressionAlgorithm(algorithm)
        except ValueError:
            raise ConfigurationError(
                f"unknown certificate compression algorithm {algorithm!r}"
            ) from None
        if not is_available(known):
            raise ConfigurationError(
                f"certificate compression {known.name} needs the {MISSING_PACKAGE[known]!r} "
                "package: pip install 'longtls[compression]'"
            )
    if len(algorithms) > 127:
        raise ConfigurationError("too many certificate compression algorithms")


# -- compressing our own Certificate -------------------------------------------


def _compress(algorithm: CertificateCompressionAlgorithm, data: bytes) -> bytes:
    if algorithm == CertificateCompressionAlgorithm.zlib:
        return zlib.compress(data, _ZLIB_LEVEL)
    if algorithm == CertificateCompressionAlgorithm.brotli:
        assert _brotli is not None
        out: bytes = _brotli.compress(data, quality=_BROTLI_QUALITY)
        return out
    assert _zstd is not None
    # One-shot with the content size in the frame header: the receiver knows
    # the exact output size before it decodes a byte.
    out = _zstd.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True).compress(data)
    return out


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compress_cached(algorithm: CertificateCompressionAlgorithm, data: bytes) -> bytes:
    # Keyed by the whole encoded Certificate body: the same chain (and empty
    # request context) on every connection hits, a changed chain cannot.
    return _compress(algorithm, data)


def compress_certificate(
    algorithm: CertificateCompressionAlgorithm, certificate_body: bytes, *, cache: bool = True
) -> CompressedCertificate:
    """The CompressedCertificate carrying ``certificate_body`` (a Certificate
    message body, no handshake header).

    ``cache``: remember the result for the next connection.  Worth it for the
    handshake's Certificate (empty request context, same chain every time),
    not for post-handshake answers whose context is fresh each time.
    """
    data = _compress_cached(algorithm, certificate_body) if cache else _compress(algorithm, certificate_body)
    return CompressedCertificate(algorithm, len(certificate_body), data)


# -- decompressing the peer's ----------------------------------------------------


def _bad(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, AlertDescription.bad_certificate)


def decompress_certificate(
    message: CompressedCertificate, offered: Collection[int], max_size: int
) -> bytes:
    """The Certificate body inside ``message``, or RemoteProtocolError(bad_certificate).

    ``offered``: the algorithms we listed in our compress_certificate extension
    (RFC 8879 §4: "The algorithm MUST be one of the algorithms listed in the
    peer's compress_certificate extension").  ``max_size``: our limit on a
    handshake message, applied to the uncompressed Certificate as if it had
    come uncompressed (RFC 8879 §5).
    """
    algorithm = message.algorithm
    if algorithm not in offered or not is_available(algorithm):
        raise _bad(f"CompressedCertificate uses algorithm {algorithm}, which we did not offer")
    expected = message.uncompressed_length
    if expected < _MIN_CERTIFICATE_BODY:
        raise _bad(f"uncompressed_length {expected} is too short for a Certificate")
    if expected > max_size:
        # RFC 8879 §5: "the same limit as if no compression were used", so the
        # same alert as HandshakeReassembler's for an uncompressed message this
        # long: illegal_parameter (a valid length over our limit).
        raise RemoteProtocolError(
            f"compressed certificate of {expected} bytes exceeds the limit of {max_size}",
            AlertDescription.illegal_parameter,
        )
    decompress = _DECOMPRESSORS[CertificateCompressionAlgorithm(algorithm)]
    try:
        body = decompress(message.compressed_certificate_message, expected)
    except RemoteProtocolError:
        raise
    except Exception:  # each library has its own error types; all mean "corrupt"
        raise _bad(f"compressed certificate does not decompress ({algorithm_name(algorithm)})") from None
    if len(body) != expected:
        # RFC 8879 §4: the length must match exactly.
        raise _bad(
            f"compressed certificate decompresses to {len(body)} bytes, not the "
            f"{expected} its uncompressed_length says"
        )
    return body


def algorithm_name(algorithm: int) -> str:
    try:
        return CertificateCompressionAlgorithm(algorithm).name
    except ValueError:
        return f"algorithm {algorithm}"


# Each decompressor returns at most ``expected + 1`` bytes (or a little more,
# for brotli's output chunking) so that "too long" is seen without producing
# the rest, and raises on a truncated, corrupt or trailing-garbage stream.


def _zlib_decompress(data: bytes, expected: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, expected + 1)
    if not d.eof or d.unused_data or d.unconsumed_tail:
        # truncated; or more than expected (unconsumed_tail); or bytes after the stream
        raise _bad("zlib stream is truncated, too long or followed by other data")
    return out


def _brotli_decompress(data: bytes, expected: int) -> bytes:
    assert _brotli is not None
    d = _brotli.Decompressor()
    out: bytes = d.process(data, output_buffer_limit=expected + 1)
    if not d.is_finished():
        raise _bad("brotli stream is truncated or longer than uncompressed_length")
    return out


def _zstd_decompress(data: bytes, expected: int) -> bytes:
    assert _zstd is not None
    declared = _zstd.frame_content_size(data)
    if declared >= 0 and declared != expected:
        # zstandard would allocate whatever the frame declares: decide first.
        raise _bad(f"zstd frame declares {declared} bytes, uncompressed_length {expected}")
    dctx = _zstd.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    # max_output_size bounds a frame without a declared size; a declared one
    # equals expected (checked above) and the library enforces it.
    out: bytes = dctx.decompress(data, max_output_size=expected, allow_extra_data=False)
    return out


_DECOMPRESSORS: dict[CertificateCompressionAlgorithm, Callable[[bytes, int], bytes]] = {
    CertificateCompressionAlgorithm.zlib: _zlib_decompress,
    CertificateCompressionAlgorithm.brotli: _brotli_decompress,
    CertificateCompressionAlgorithm.zstd: _zstd_decompress,
}
