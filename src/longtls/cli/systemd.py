"""Tell systemd how a long-running command is doing: sd_notify without libsystemd.

The protocol (sd_notify(3); systemd.service(5), ``Type=notify``): the service
manager puts the address of an ``AF_UNIX`` datagram socket in the
``NOTIFY_SOCKET`` environment variable; the service sends it datagrams of
newline-separated ``VARIABLE=value`` assignments.  An address starting with
``@`` is in the abstract namespace (the ``@`` stands for the leading NUL
byte).  What longtls sends:

- ``READY=1`` (with ``STATUS=``, a line ``systemctl status`` shows) once every
  listener is up: with ``Type=notify`` the unit is "started" only then, so
  units ordered after it find the ports open;
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC in microseconds,
  which ``Type=notify-reload`` needs to tell this reload from an earlier one)
  when a SIGHUP reload begins, then ``READY=1`` when it is done (sd_notify(3):
  a service that sends RELOADING=1 must send READY=1 when the reload ends);
- ``STOPPING=1`` when SIGTERM/SIGINT starts the drain;
- ``WATCHDOG=1`` every half of ``WATCHDOG_USEC`` (the manager sets it from
  ``WatchdogSec=``; half is the interval sd_watchdog_enabled(3) recommends),
  only if ``WATCHDOG_PID`` is unset or is this process (the variable is for
  one process; a child that inherited it must not keep the parent alive).
  It is sent from the event loop, so a loop that hangs stops it and systemd
  restarts the service (``Restart=on-watchdog`` or ``on-failure``).

Nothing is sent when ``NOTIFY_SOCKET`` is unset (not under systemd).  A send
that fails (the manager went away) is logged at DEBUG and ignored: the
service does not depend on its supervisor's socket.  ``vsock:`` addresses
(systemd 253+, for virtual machines) are not supported: one warning line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "on_reload", "on_stop", "process_notifier", "ready", "watchdog_interval"]

logger = logging.getLogger("longtls.cli")


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between two WATCHDOG=1, or None when the watchdog is off or not ours."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


class Notifier:
    """The sd_notify messages of one service process (see the module docstring)."""

    def __init__(self, address: str, *, watchdog: float | None = None) -> None:
        #: The socket address as given (``/run/systemd/notify`` or ``@name``).
        self.address = address
        self.watchdog = watchdog
        # Linux: an abstract address is a string that starts with NUL.
        self._target = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def __repr__(self) -> str:
        return f"<Notifier {self.address!r} watchdog={self.watchdog}>"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A Notifier for ``NOTIFY_SOCKET``, or None when there is none."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        if not address.startswith(("/", "@")):
            logger.warning("NOTIFY_SOCKET=%s is not a Unix socket path or @name: not notifying systemd", address)
            return None
        return cls(address, watchdog=watchdog_interval(env))

    def send(self, *assignments: str) -> bool:
        """One datagram of ``VARIABLE=value`` lines; False if it could not be sent."""
        message = "\n".join(assignments).encode() + b"\n"
        try:
            self._socket.sendto(message, self._target)
        except OSError as exc:
            logger.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", "STATUS=" + _one_line(status))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", "STATUS=reloading", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def start_watchdog(self) -> asyncio.Task[None] | None:
        """Send WATCHDOG=1 from the running loop every ``watchdog`` seconds (None: off)."""
        if self.watchdog is None:
            return None
        return asyncio.ensure_future(self._keep_alive(self.watchdog))

    async def _keep_alive(self, interval: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        self._socket.close()


# -- for a command with its own signal handlers (longtls serve) -------------------------

_process: list[Notifier | None] = []  # the process's Notifier, made on first use
_status = [""]  # the last READY status, sent again when a reload ends
_watchdog: list[asyncio.Task[None] | None] = []


def process_notifier() -> Notifier | None:
    """The Notifier of this process (from the environment, once), or None."""
    if not _process:
        _process.append(Notifier.from_environment())
    return _process[0]


def ready(status: str) -> None:
    """READY=1 with ``status``; the first time, the watchdog starts (call it from the event loop)."""
    notifier = process_notifier()
    if notifier is None:
        return
    _status[0] = status
    notifier.ready(status)
    if not _watchdog:
        _watchdog.append(notifier.start_watchdog())


def on_stop(callback: Callable[[], None]) -> Callable[[], None]:
    """A SIGTERM/SIGINT handler: STOPPING=1, then ``callback``."""

    def stop() -> None:
        notifier = process_notifier()
        if notifier is not None:
            notifier.stopping()
        callback()

    return stop


def on_reload(callback: Callable[[], None]) -> Callable[[], None]:
    """A SIGHUP handler: RELOADING=1, ``callback`` (a synchronous reload), READY=1."""

    def reload() -> None:
        notifier = process_notifier()
        if notifier is not None:
            notifier.reloading()
        try:
            callback()
        finally:
            if notifier is not None:
                notifier.ready(_status[0])

    return reload


def _one_line(text: str) -> str:
    # A newline would start another assignment.
    return " ".join(text.split())
