import contextlib
import os
import shutil
import socket
import tempfile

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
# test clusters run without token authentication: a fresh ray.init() would otherwise write
# ~/.ray/auth_token, which a later cluster on this machine then demands
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@contextlib.contextmanager
def own_ray_cluster(head_cpus: int, worker_cpus: tuple[int, ...] = ()):
    """A Ray cluster of this test's own on 127.0.0.1: a head (with the dashboard, which
    ASHA's stopped trials and the Jobs API need; its URL is `cluster.webui_url`) and worker
    nodes of `worker_cpus` CPUs; drivers connect to `cluster.address`.
    Its session lives in a short mkdtemp under /tmp (Ray's socket paths must stay under 107
    bytes, pytest's tmp_path is too long), and only its own processes are stopped: never
    `ray stop --force`, which would also kill a user's cluster on this machine."""
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="wr", dir="/tmp")
    node = dict(node_ip_address="127.0.0.1", object_store_memory=256 * 2**20)
    head = dict(node, num_cpus=head_cpus, temp_dir=temp, include_dashboard=True,
                dashboard_host="127.0.0.1")  # fmt: skip
    for attempt in range(3):  # Ray gives a node 30 s to register: a loaded machine may miss it
        try:
            head["dashboard_port"] = _free_port()
            cluster = Cluster(initialize_head=True, head_node_args=head)
            break
        except Exception:
            if attempt == 2:
                raise
    try:
        for cpus in worker_cpus:
            cluster.add_node(**node, num_cpus=cpus)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """The address of a 2-CPU Ray head of this test module's own, for sweep drivers."""
    with own_ray_cluster(2) as c:
        yield c.address
