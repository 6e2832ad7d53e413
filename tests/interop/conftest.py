"""Interop-only fixtures: a hard per-test time limit.

Every blocking call in helpers.driver and helpers.peers has its own timeout;
this alarm is the backstop so that a wedged peer can never hang CI.  It fails
the test (pytest.fail), it never skips it.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

#: Wall-clock seconds one interop test may take (the slowest are the pure-
#: Python ML-DSA/ML-KEM handshakes against tlslite-ng).
INTEROP_TEST_TIMEOUT = 60


@pytest.fixture(autouse=True)
def interop_time_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return
    # A test that is CPU-bound by design (a SPIN model check) names its own
    # limit with @pytest.mark.time_limit(SECONDS).
    marker = request.node.get_closest_marker("time_limit")
    limit = int(marker.args[0]) if marker is not None else INTEROP_TEST_TIMEOUT

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        pytest.fail(f"{request.node.nodeid} took more than {limit}s (interop time limit)", pytrace=True)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
