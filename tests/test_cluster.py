"""Cluster configs against Ray's own validator, the KubeRay manifest, and the sweep entry."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-gcp.yaml", "cluster-local.yaml"])
def test_launcher_configs_pass_rays_validator(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert any("pip install" in c and "wsl-ray" in c for c in config["setup_commands"])
    assert config["file_mounts"]
    if config["provider"]["type"] != "local":
        workers = [
            t for n, t in config["available_node_types"].items() if n != config["head_node_type"]
        ]
        assert any(t["resources"].get("GPU") == 1 and t["min_workers"] == 0 for t in workers)
        for node_type in config["available_node_types"].values():
            assert all(isinstance(v, int) for v in node_type["resources"].values())


def test_aws_config_has_a_docker_option():
    config = yaml.safe_load((CLUSTER / "cluster.yaml").read_text())
    assert config["docker"]["image"] and config["docker"]["container_name"]


def test_kuberay_job_runs_the_sweep_entry():
    job = yaml.safe_load((CLUSTER / "kuberay.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["entrypoint"].startswith("python cluster/sweep.py --space wmse")
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def test_sweep_entry_takes_the_tune_flags():
    out = subprocess.run(
        [sys.executable, str(CLUSTER / "sweep.py"), "--space", "no-such-space"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and "known: " in out.stderr and "wmse" in out.stderr
