"""The KeyUpdate conversation every interop peer holds with longtls.

One script (RFC 9846 §4.6.3), played from both ends: ``longtls_side(drv,
peer)`` is longtls' end (a SocketDriver), ``peer_side(end, peer)`` the peer's
(an adapter over a peer library's connection, ``SocketEnd``, or over a
command-line peer's stdin/stdout, ``ProcessEnd``).  Lines are numbered in the
order they are sent; a peer's lines carry its name::

     1  peer -> longtls   "1 <peer> to longtls"
     2  longtls -> peer   "2 longtls to <peer>"
        longtls: KeyUpdate(update_requested); the peer answers with its own
     3  longtls -> peer   "3 longtls after its KeyUpdate"
     4  peer -> longtls   "4 <peer> after answering the KeyUpdate"
     5  longtls -> peer   "5 longtls done" (a peer that cannot start a KeyUpdate: the end)
                          "5 longtls ready"
        peer: KeyUpdate(update_requested); longtls answers with its own
     6  peer -> longtls   "6 <peer> after its KeyUpdate"
     7  longtls -> peer   "7 longtls after answering" (the end, unless:)
        peer: KeyUpdate(update_not_requested); longtls does not answer
     8  peer -> longtls   "8 <peer> after a KeyUpdate not requesting one"
     9  longtls -> peer   "9 longtls done"

Each line read under a key proves that key: line 4 arrives under the peer's
updated key (it answered the request), line 6 under its second one.  Lines
start with a digit because openssl s_server/s_client read some leading
letters as commands.  The two ends run concurrently (threads, or a peer
process); ``in_background`` runs one end in a thread.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .driver import SocketDriver
from .peers import PeerProcess

_LINES = {
    1: "1 {peer} to longtls",
    2: "2 longtls to {peer}",
    3: "3 longtls after its KeyUpdate",
    4: "4 {peer} after answering the KeyUpdate",
    6: "6 {peer} after its KeyUpdate",
    7: "7 longtls after answering",
    8: "8 {peer} after a KeyUpdate not requesting one",
    9: "9 longtls done",
}


@dataclass(frozen=True)
class KeyUpdatePeer:
    """A peer, as far as the conversation goes: its name and which KeyUpdates it can start."""

    name: str
    starts_key_update: bool = False  # sends KeyUpdate(update_requested) of its own
    sends_not_requested: bool = False  # then also KeyUpdate(update_not_requested)

    def line(self, n: int) -> bytes:
        if n == 5:
            text = "5 longtls ready" if self.starts_key_update else "5 longtls done"
        else:
            text = _LINES[n].format(peer=self.name)
        return text.encode() + b"\n"

    @property
    def lines_to_peer(self) -> list[bytes]:
        """What the peer reads from longtls, in order."""
        last = 9 if self.sends_not_requested else 7 if self.starts_key_update else 5
        return [self.line(n) for n in (2, 3, 5, 7, 9) if n <= last]


def longtls_side(drv: SocketDriver, peer: KeyUpdatePeer) -> None:
    """longtls' end of the conversation, checking its KeyUpdated events at each step."""

    def hear(n: int) -> None:
        assert drv.recv_until(b"\n") == peer.line(n), drv.describe()

    def sent() -> list[tuple[int, bool]]:
        return [(e.generation, e.requested_by_peer) for e in drv.key_updates("send")]

    def received() -> list[int]:
        return [e.generation for e in drv.key_updates("receive")]

    hear(1)
    drv.send(peer.line(2))
    # longtls updates its sending key and asks the peer to update its own.
    drv.update_keys(request_peer_update=True)
    drv.send(peer.line(3))
    hear(4)
    assert sent() == [(1, False)], drv.describe()
    # the peer's answer (update_not_requested) arrived before line 4
    assert received() == [1], drv.describe()
    drv.send(peer.line(5))
    if not peer.starts_key_update:
        return
    # the peer updates and asks for an update back: longtls answers at once
    hear(6)
    assert received() == [1, 2], drv.describe()
    assert sent() == [(1, False), (2, True)], drv.describe()
    drv.send(peer.line(7))
    if not peer.sends_not_requested:
        return
    # an update that asks for nothing back: longtls sends no KeyUpdate
    hear(8)
    assert received() == [1, 2, 3], drv.describe()
    assert len(sent()) == 2, drv.describe()
    drv.send(peer.line(9))


class PeerEnd(Protocol):
    """What ``peer_side`` needs from a peer."""

    def say(self, line: bytes) -> None: ...

    def expect(self, line: bytes) -> None: ...

    def key_update(self, requested: bool) -> None: ...


def peer_side(end: PeerEnd, peer: KeyUpdatePeer) -> None:
    """The peer's end of the conversation."""
    end.say(peer.line(1))
    end.expect(peer.line(2))
    end.expect(peer.line(3))
    end.say(peer.line(4))
    end.expect(peer.line(5))
    if peer.starts_key_update:
        end.key_update(requested=True)
        end.say(peer.line(6))
        end.expect(peer.line(7))
    if peer.sends_not_requested:
        end.key_update(requested=False)
        end.say(peer.line(8))
        end.expect(peer.line(9))


@dataclass
class SocketEnd:
    """A peer library's connection (ssl, pyOpenSSL, tlslite-ng): write bytes,
    read a line, and, if the library can, start a KeyUpdate.  ``heard`` keeps
    the lines read, in order."""

    send: Callable[[bytes], object]
    read_line: Callable[[], bytes]
    start_key_update: Callable[[bool], None] | None = None
    heard: list[bytes] = field(default_factory=list)

    def say(self, line: bytes) -> None:
        self.send(line)

    def expect(self, line: bytes) -> None:
        got = self.read_line()
        self.heard.append(got)
        assert got == line, (got, line)

    def key_update(self, requested: bool) -> None:
        assert self.start_key_update is not None, "this peer cannot start a KeyUpdate"
        self.start_key_update(requested)


@dataclass
class ProcessEnd:
    """A command-line peer (openssl s_client/s_server, gnutls-cli) typed into
    through stdin and read through its output.

    ``commands`` maps update_requested to the line that makes the peer send a
    KeyUpdate.  Both openssl tools act on the first byte of one read() of
    stdin and drop the rest, so after a command nothing is typed until the
    KeyUpdate was seen: ``confirmation`` is a regex the peer prints once per
    KeyUpdate, or ``confirm(n)`` waits for the peer's n-th KeyUpdate some
    other way (s_server prints nothing unbuffered).
    """

    proc: PeerProcess
    commands: Mapping[bool, str]
    confirmation: str | None = None
    confirm: Callable[[int], None] | None = None
    updates: int = 0

    def say(self, line: bytes) -> None:
        self.proc.write(line.decode())

    def expect(self, line: bytes) -> None:
        self.proc.wait_for_output("^" + re.escape(line.decode().rstrip("\n")) + "$")

    def key_update(self, requested: bool) -> None:
        self.proc.write(self.commands[requested] + "\n")
        self.updates += 1
        if self.confirm is not None:
            self.confirm(self.updates)
        else:
            assert self.confirmation is not None
            self.proc.wait_for_output(f"(?s)(?:{self.confirmation}.*?){{{self.updates}}}")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` (e.g. another thread's view of a driver's events)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def in_background(func: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Iterator[None]:
    """Run ``func(*args)`` in a thread while the ``with`` body runs; wait for it
    at the end and raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            func(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"peer-{getattr(func, '__name__', 'side')}", daemon=True)
    thread.start()
    try:
        yield
    except BaseException as exc:
        thread.join(3)
        if errors:
            exc.add_note(f"--- the peer side failed too ---\n{errors[0]!r}")
        raise
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{thread.name} still running after {timeout}s")
    if errors:
        raise errors[0]
