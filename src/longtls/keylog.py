"""Key log output in the SSLKEYLOGFILE format (draft-ietf-tls-keylogfile).

Each line is ``<label> <client_random hex> <secret hex>``.  This is the one
place secrets may be written, and only when the user asked for it: with a
configured file or the SSLKEYLOGFILE environment variable.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

KeyLogCallback = Callable[[str], None]

_lock = threading.Lock()


class KeyLogFile:
    """Appends key log lines to a file, one write per line so several
    connections (and processes) can share it."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"KeyLogFile({self.path!r})"

    def __call__(self, line: str) -> None:
        with _lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode("ascii"))
            finally:
                os.close(fd)


def from_environment() -> KeyLogCallback | None:
    path = os.environ.get("SSLKEYLOGFILE")
    return KeyLogFile(path) if path else None


def format_line(label: str, client_random: bytes, secret: bytes) -> str:
    return f"{label} {client_random.hex()} {secret.hex()}"
