import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
# test clusters run without token authentication: a fresh ray.init() would otherwise write
# ~/.ray/auth_token, which a later cluster on this machine then demands
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
torch.set_num_threads(min(2, os.cpu_count() or 1))


# Fixtures that start a Ray cluster: a test that uses one is marked `ray`, so that
# `make test-fast` (`-m "not ray and not slow"`) is the suite without them.
RAY_FIXTURES = {"cluster", "three_nodes", "local_ray"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts a Ray cluster (make test-fast leaves it out)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


RAY = str(Path(sys.executable).parent / "ray")


@contextlib.contextmanager
def own_ray_cluster(head_cpus: int, worker_cpus: tuple[int, ...] = ()):
    """A Ray cluster of this test's own on 127.0.0.1 (`ray start` processes): a head with the
    dashboard (ASHA's stopped trials and the Jobs API need it; its address is `webui_url`)
    and worker nodes of `worker_cpus` CPUs; drivers connect to `address`.

    Its session lives in a short mkdtemp under /tmp (Ray's socket paths must stay under 107
    bytes, pytest's tmp_path is too long), and at the end only the processes whose command
    line names that folder are stopped: never `ray stop --force`, which would also kill a
    user's cluster on this machine.
    """
    temp = tempfile.mkdtemp(prefix="wr", dir="/tmp")
    port, dashboard = _free_port(), _free_port()
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_raylet_start_wait_time_s="120",
    )
    start = [RAY, "start", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        for attempt in range(3):  # a loaded machine can miss Ray's 30 s start-up window
            head = subprocess.run(
                [
                    *start,
                    "--head",
                    "--port",
                    str(port),
                    "--temp-dir",
                    temp,
                    "--num-cpus",
                    str(head_cpus),
                    "--include-dashboard",
                    "true",
                    "--dashboard-host",
                    "127.0.0.1",
                    "--dashboard-port",
                    str(dashboard),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if head.returncode == 0:
                break
            _stop_processes_naming(temp)
            assert attempt < 2, head.stderr[-2000:]
        for cpus in worker_cpus:
            subprocess.run(
                [*start, "--address", f"127.0.0.1:{port}", "--num-cpus", str(cpus)],
                check=True,
                env=env,
                capture_output=True,
            )
        yield SimpleNamespace(address=f"127.0.0.1:{port}", webui_url=f"127.0.0.1:{dashboard}")
    finally:
        _stop_processes_naming(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_processes_naming(text: str, grace_s: float = 2) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, to this user's processes whose command line
    contains `text` (the cluster's own temp folder). A throwaway cluster need not shut down
    gracefully: some of its processes outlast a 10 s grace, which cost 10 s per module."""

    def matching() -> list[int]:
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                own = proc.name == str(os.getpid())
                if proc.name.isdigit() and not own and text in (proc / "cmdline").read_text():
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in matching():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.time() + grace_s
        while matching() and time.time() < deadline:
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """The address of a 2-CPU Ray head of this test module's own, for sweep drivers."""
    with own_ray_cluster(2) as c:
        yield c.address
