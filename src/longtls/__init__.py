"""longtls: TLS 1.3 and DTLS 1.3 for long-lived connections."""

from __future__ import annotations

__version__ = "0.1.0"
