"""Starting Ray for a command: a local Ray that Ray Train's helpers can find, and a SIGTERM
that still runs the command's `finally` blocks."""

from __future__ import annotations

import os
import signal
import socket
import sys


def init_ray(address: str | None = None) -> bool:
    """ray.init: the cluster at `address`, else a local Ray; then SIGTERM as sys.exit(143).
    Returns whether this process started the Ray it joined: a local Ray, which has the
    machine's CPUs and GPUs and never more (no autoscaler adds nodes to it), rather than a
    running cluster (found at `address`, or by Ray from RAY_ADDRESS or the machine's
    running instance).

    A local Ray's processes are told its dashboard's address (RAY_API_SERVER_ADDRESS,
    inherited from this process): Ray Train's PlacementGroupCleaner otherwise finds the
    dashboard by autodetection, which fails while another Ray instance runs on the machine
    ("Found multiple active Ray instances"), and a trial that ASHA stopped then keeps its
    placement group: the next trials wait for its CPUs until WorkerGroupStartupTimeoutError.

    The handler comes after ray.init, which installs Ray's own fatal-signal handler for
    SIGTERM: that one aborts the process (exit -6) without running a `finally`, so the
    command's ray.shutdown and its summary never ran."""
    import ray

    if address:
        ray.init(address=address, ignore_reinit_error=True)
    else:
        with socket.socket() as s:  # a free port for the dashboard
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.setdefault("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{port}")
        ray.init(include_dashboard=True, dashboard_port=port, ignore_reinit_error=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    node = ray._private.worker._global_node  # the head this process started, or a client's
    return bool(node is not None and node.head)
