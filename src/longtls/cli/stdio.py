"""Non-blocking standard input and output for the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import stat
import sys
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def open_stdin(fd: int = 0) -> AsyncIterator[asyncio.StreamReader]:
    """A StreamReader on standard input.

    Pipes, terminals and sockets are read by the event loop; regular files and
    /dev/null (which epoll refuses) by a thread, where a read never blocks for
    long.  The descriptor's blocking mode is restored on exit, so the shell's
    terminal is left as it was.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    was_blocking = os.get_blocking(fd)
    # A duplicate, so closing the pipe transport leaves fd 0 itself open.
    pipe = open(os.dup(fd), "rb", buffering=0)  # noqa: SIM115 - the transport owns it
    transport: asyncio.BaseTransport | None = None
    feeder: asyncio.Task[None] | None = None
    if _pollable(fd):
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    else:
        feeder = asyncio.create_task(_feed_from_thread(pipe.fileno(), reader))
    try:
        yield reader
    finally:
        if transport is not None:
            transport.close()
        elif feeder is not None and feeder.done():
            pipe.close()
        # else a thread may still be reading it; the descriptor goes at exit.
        with contextlib.suppress(OSError):
            os.set_blocking(fd, was_blocking)


def _pollable(fd: int) -> bool:
    """Whether the event loop can wait on ``fd`` (epoll refuses regular files and /dev/null)."""
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        return False
    with selectors.DefaultSelector() as probe:
        try:
            probe.register(fd, selectors.EVENT_READ)
        except (OSError, ValueError):
            return False
    return True


async def _feed_from_thread(fd: int, reader: asyncio.StreamReader) -> None:
    while data := await asyncio.to_thread(os.read, fd, 65536):
        reader.feed_data(data)
    reader.feed_eof()


def write_stdout(data: bytes) -> bool:
    """Write to standard output now; False once the reader has gone (broken pipe)."""
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True
