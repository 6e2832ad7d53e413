"""How a connection's events (all but ApplicationData) reach the application.

Two ways, both fed by one :class:`EventDispatcher` per connection: handlers,
called synchronously as each event happens, and :class:`EventStream` async
iterators that buffer them::

    async for event in writer.events():      # ends after ConnectionClosed
        if isinstance(event, KeyUpdateCompleted):
            print("generation", event.generation, "in", event.seconds, "s")
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from ..events import Event

__all__ = ["DEFAULT_EVENT_BUFFER", "EventDispatcher", "EventHandler", "EventStream"]

logger = logging.getLogger("longtls.aio")

#: Called with every event except ApplicationData (which goes to the reader).
EventHandler = Callable[[Event], None]
#: Events an ``EventStream`` holds before it drops the oldest (a consumer that
#: stopped reading must not make a long-lived connection grow without bound).
DEFAULT_EVENT_BUFFER = 1024


class EventStream:
    """The connection's events (all but ApplicationData), from the moment it
    was created: ``async for event in writer.events(): ...``.

    Iteration ends after ``ConnectionClosed``, or when the TCP connection is
    gone.  If the consumer falls more than ``maxsize`` events behind, the
    oldest are dropped and counted in ``dropped``.  ``close()`` (or leaving a
    ``with`` block) unsubscribes.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        maxsize: int = DEFAULT_EVENT_BUFFER,
        unsubscribe: Callable[[EventStream], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._loop = loop
        self._unsubscribe = unsubscribe
        self._events: collections.deque[Event] = collections.deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self.dropped = 0

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open"
        return f"<EventStream {state} queued={len(self._events)} dropped={self.dropped}>"

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.popleft()

    async def get(self) -> Event | None:
        """The next event, or None once the stream has ended."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return None

    def close(self) -> None:
        """Stop receiving events (what is queued can still be read)."""
        if self._unsubscribe is not None:
            self._unsubscribe(self)
        self._end()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _put(self, event: Event) -> None:
        if self._ended:
            return
        if len(self._events) >= self._maxsize:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class EventDispatcher:
    """One connection's event handlers and event streams.

    ``on_handler_error`` is called (later, outside the dispatch) when a
    handler raises: the connection then ends with internal_error.
    """

    # One per connection, and a server holds thousands of idle ones, most of
    # them with no handler and no stream: slots, and the containers made on
    # first use (two fewer objects per connection for the cyclic garbage
    # collector to walk; docs/benchmarks.md, "Scale").
    __slots__ = ("_loop", "_on_handler_error", "_handlers", "_streams")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_handler_error: Callable[[], None]) -> None:
        self._loop = loop
        self._on_handler_error = on_handler_error
        self._handlers: list[EventHandler] | None = None
        self._streams: set[EventStream] | None = None

    def add_handler(self, handler: EventHandler) -> None:
        if self._handlers is None:
            self._handlers = []
        self._handlers.append(handler)

    def subscribe(self, maxsize: int, *, ended: bool) -> EventStream:
        """A new stream; ``ended``: the connection is already over (an empty stream)."""
        stream = EventStream(self._loop, maxsize, self._unsubscribe)
        if ended:
            stream._end()
        else:
            if self._streams is None:
                self._streams = set()
            self._streams.add(stream)
        return stream

    def publish(self, event: Event) -> None:
        """Call every handler, then queue ``event`` on every stream."""
        for handler in self._handlers or ():
            try:
                handler(event)
            except Exception:
                # The event's type, not its repr: no event repr in a log (docs/logging.md).
                logger.exception("event handler failed on %s", type(event).__name__)
                # Outside this dispatch loop: end the connection with internal_error.
                self._loop.call_soon(self._on_handler_error)
        if self._streams:
            for stream in list(self._streams):
                stream._put(event)

    def end_streams(self) -> None:
        """The last event was published (or the connection is gone): end every stream."""
        if self._streams:
            for stream in list(self._streams):
                stream.close()

    def _unsubscribe(self, stream: EventStream) -> None:
        if self._streams is not None:
            self._streams.discard(stream)

    def release(self) -> None:
        """The connection is gone: drop ``on_handler_error``, the protocol's
        bound method (the protocol holds this dispatcher: a reference cycle
        that kept every closed connection until a full collection, issue 16).
        A handler failing later has no connection left to end."""
        self._on_handler_error = _connection_gone


def _connection_gone() -> None:
    """``on_handler_error`` of a released dispatcher: nothing to end."""
