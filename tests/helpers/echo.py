"""A plain TCP echo service on loopback, for the tunnels' backends.

    backend = EchoBackend()            # listening, served from a daemon thread
    ... "--forward", f"127.0.0.1:{backend.port}" ...
    backend.shutdown(); backend.server_close()

Each connection gets back what it sends until EOF, then is closed.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading

from helpers.peers import LOOPBACK


class EchoBackend(socketserver.ThreadingTCPServer):
    """Echo on ``LOOPBACK``, an ephemeral ``port``, one thread a connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _EchoHandler)
        self.port: int = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        with contextlib.suppress(OSError):  # the tunnel may reset it
            while data := sock.recv(1 << 16):
                sock.sendall(data)
