import os

import pytest
import torch
from helpers import own_ray_cluster

from wsl_ray.data import load_dataset

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
# test clusters run without token authentication: a fresh ray.init() would otherwise write
# ~/.ray/auth_token, which a later cluster on this machine then demands
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# under pytest-xdist (`make test`: 2 workers on CI's 2 cores) one thread per worker process
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


# Fixtures that start a Ray cluster: a test that uses one is marked `ray`, so that
# `make test-fast` (`-m "not ray and not slow"`) is the suite without them, and joins the
# xdist group "ray": under `make test` (`-n 2 --dist loadgroup`) the Ray tests run one after
# another on one worker, one cluster at a time, while the other worker takes the rest.
RAY_FIXTURES = {"cluster", "three_nodes", "local_ray"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts a Ray cluster (make test-fast leaves it out)")
    config.addinivalue_line(
        "markers", "graph: a GPU test of a captured step (gpu_check.sh runs them first, with -x)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="module")
def cluster():
    """The address of a 2-CPU Ray head of this test module's own, for sweep drivers."""
    with own_ray_cluster(2) as c:
        yield c.address


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    os.environ["WSL_RAY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return load_dataset("shapes", num_train=256, num_test=64)
