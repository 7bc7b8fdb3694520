"""The test's side of the fault-injection point WSL_RAY_FAULT_HOLD (wsl_ray/utils/fault.py): a
test that kills something mid-run holds a run at a chosen epoch, kills while it is held, then
releases it, instead of polling for a moment that a fast or slow machine may skip."""

import json
import time
from collections.abc import Callable
from pathlib import Path

from wsl_ray.utils.fault import FAULT_HOLD


class FaultHold:
    """Holds the runs that reach `epoch` (one after the other: run K claims held-K) until the
    test releases them. `env` is what the runs' processes need in their environment."""

    def __init__(self, folder: Path, epoch: int):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.env = {FAULT_HOLD: f"{epoch}:{folder}"}

    def release(self, number: int) -> None:
        """Lets run `number` go on, or pass without waiting if it has not arrived yet."""
        (self.folder / f"release-{number}").touch()

    def wait_held(
        self, number: int, running: Callable[[], bool], timeout: float = 900
    ) -> dict[str, object]:
        """Waits until run `number` is held; returns its claim (pid, host, epoch). Fails at
        once when `running()` turns false first (what should arrive has ended), and after
        `timeout` seconds (generous: a loaded machine starts Ray slowly)."""
        held = self.folder / f"held-{number}"
        deadline = time.monotonic() + timeout
        while not held.exists():
            assert running(), f"ended before run {number} reached the held epoch"
            assert time.monotonic() < deadline, f"no run {number} held within {timeout:.0f} s"
            time.sleep(0.5)
        return json.loads(held.read_text())
