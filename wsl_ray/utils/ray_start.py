"""Starting Ray for a command, so that a SIGTERM still runs the command's `finally` blocks."""

from __future__ import annotations

import signal
import sys


def init_ray(address: str | None = None) -> None:
    """ray.init (the cluster at `address`, else a local Ray), then SIGTERM as sys.exit(143).

    The order matters: ray.init installs Ray's own fatal-signal handler for SIGTERM, which
    aborts the process (exit -6) without running a `finally`, so the command's ray.shutdown
    and its summary never ran. Installed after it, ours raises SystemExit instead."""
    import ray

    ray.init(address=address, ignore_reinit_error=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
