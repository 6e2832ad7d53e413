"""One asyncio timer that drives a sans-I/O connection's ``get_timer``/``handle_timer``.

Both ``Connection`` (TLS) and ``DTLSConnection`` tell the time of their next
deadline on their Configuration's clock; the asyncio layer schedules one
``call_later`` for it and re-arms after every event.  A deadline that did
not move after it fired is retried no sooner than ``min_retry`` seconds, so a
connection whose clock and the loop's disagree never spins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CoreTimer:
    """The next ``get_timer()`` deadline of one connection, as an asyncio timer."""

    __slots__ = ("_loop", "_now", "_fire", "_min_retry", "_handle", "deadline")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, now: Callable[[], float],
        fire: Callable[[float | None], None], min_retry: float,
    ) -> None:
        self._loop = loop
        self._now = now  # the Configuration's clock (deadlines are on it)
        self._fire = fire  # called with the deadline that fired
        self._min_retry = min_retry
        self._handle: asyncio.TimerHandle | None = None
        #: The deadline scheduled, or None.
        self.deadline: float | None = None

    def __repr__(self) -> str:
        return f"<CoreTimer deadline={self.deadline}>"

    def arm(self, deadline: float | None, fired: float | None = None) -> None:
        """Schedule ``deadline`` (None: no timer); ``fired`` is the deadline that just fired, if any."""
        if deadline == self.deadline and fired is None:
            return
        self.cancel()
        self.deadline = deadline
        if deadline is None:
            return
        delay = deadline - self._now()
        if fired is not None and deadline <= fired:
            delay = max(delay, self._min_retry)  # the deadline did not move: never spin
        self._handle = self._loop.call_later(max(delay, 0.0), self._fired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def release(self) -> None:
        """The connection is gone: cancel, and drop ``fire`` (the protocol's
        bound method; the protocol holds this timer: a reference cycle,
        issue 16).  A deadline armed later fires into nothing."""
        self.cancel()
        self.deadline = None
        self._fire = _connection_gone

    def _fired(self) -> None:
        self._handle = None
        fired, self.deadline = self.deadline, None
        self._fire(fired)


def _connection_gone(fired: float | None) -> None:
    """``fire`` of a released timer: no connection to run."""
