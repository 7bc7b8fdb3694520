"""A fault-injection point for tests: a run waits at a chosen epoch until the test lets it go.

`WSL_RAY_FAULT_HOLD=EPOCH:FOLDER` switches it on; unset, `hold` returns at once. Rank 0 of a
run, right after reporting epoch EPOCH, claims the next free `FOLDER/held-K` (K = 1, 2, ...,
created exclusively; it holds the process's pid and host) and waits until `FOLDER/release-K`
exists. A test thus kills a node, a driver or a worker while a run is known to be held, and
then writes the release; a release written beforehand lets the K-th run pass without waiting.
The wait is bounded (HOLD_LIMIT_S) and ends in an error, never in going on silently.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

FAULT_HOLD = "WSL_RAY_FAULT_HOLD"
HOLD_LIMIT_S = 1800.0


class FaultHoldError(RuntimeError):
    pass


def hold(epoch: int) -> None:
    """Waits for the test's release when WSL_RAY_FAULT_HOLD names this `epoch` (see above)."""
    setting = os.environ.get(FAULT_HOLD)
    if not setting:
        return
    at, sep, folder = setting.partition(":")
    if not (sep and at.isdigit() and folder):
        raise FaultHoldError(f"{FAULT_HOLD}={setting!r}: expected EPOCH:FOLDER")
    if int(at) != epoch:
        return
    claim = {"pid": os.getpid(), "host": socket.gethostname(), "epoch": epoch}
    written = Path(folder) / f".claim{os.getpid()}"
    written.write_text(json.dumps(claim))
    number = 1
    while True:  # a hard link appears whole and fails where the name is taken
        try:
            os.link(written, Path(folder) / f"held-{number}")
            break
        except FileExistsError:
            number += 1
    written.unlink()
    release = Path(folder) / f"release-{number}"
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not release.exists():
        if time.monotonic() > deadline:
            raise FaultHoldError(f"{release} did not appear within {HOLD_LIMIT_S:.0f} s")
        time.sleep(0.2)
