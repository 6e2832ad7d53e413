"""Capturing loopback traffic with dumpcap, for the tests that read captures.

The file is complete when the block ends: dumpcap hands packets over in
batches (the libpcap buffer timeout), and on SIGINT it stops reading, so
whatever the kernel still holds for it would be lost; on a loaded machine
(the suite runs on every core) that was a whole short DTLS session.  So the
block's end waits for the last batch before the signal.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers.peers import require_binary, start_process

#: Longer than libpcap's buffer timeout on Linux (dumpcap asks for 1 s at most).
LAST_BATCH_SECONDS = 1.5


@contextmanager
def loopback_capture(capture_filter: str, path: Path) -> Iterator[None]:
    """Capture 'lo' with ``capture_filter`` (BPF) into ``path`` (pcapng)."""
    with start_process(
        [require_binary("dumpcap"), "-i", "lo", "-f", capture_filter, "-w", str(path)],
        ready_pattern=r"^File: ", timeout=15,
    ) as proc:
        yield
        time.sleep(LAST_BATCH_SECONDS)
        proc.proc.send_signal(signal.SIGINT)
        proc.wait(15)
