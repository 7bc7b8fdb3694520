"""Cluster configs against Ray's own validator, and a sweep that survives losing a node.

The fault test starts a real 3-node Ray cluster on this machine (a head and two
one-CPU worker nodes, `ray.cluster_utils.Cluster`), submits a small sweep as a Ray Job,
kills a worker node while trials run, and checks that every trial still finishes.
"""

import copy
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
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


SPACE = """
config:
  {method: w_mse, dataset: shapes, arch: resnet18_w8, head_size: 64, bs: 128, subset: 512,
   lr_warmup: false, w_eps: 0.01, ckpt_every: 1, epoch: 4, eval_every: 1, emb: 16}
params:
  lr: {distribution: loguniform, low: 1.0e-3, high: 1.0e-2}
  w_ratio: {distribution: categorical, choices: [2, 4]}
derived: {w_size: emb * w_ratio}
first: {lr: 3.0e-3, w_ratio: 4}
"""


def test_sweep_survives_losing_a_worker_node(tmp_path):
    import ray
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobStatus, JobSubmissionClient

    (tmp_path / "space.yaml").write_text(SPACE)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": True, "node_ip_address": "127.0.0.1"},
    )
    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address)
        client = JobSubmissionClient(
            f"http://{ray.get_runtime_context().gcs_address.split(':')[0]}:8265"
        )
        entry = (
            f"{sys.executable} -m wsl_ray.tune --space {tmp_path / 'space.yaml'} --num_trials 3 "
            f"--scheduler fifo --max-failures 3 --storage {tmp_path / 'results'} --name faults"
        )
        job = client.submit_job(
            entrypoint=entry, runtime_env={"env_vars": {"RAY_ADDRESS": cluster.address}}
        )
        result_files = lambda: list((tmp_path / "results" / "faults").glob("*/result.json"))  # noqa: E731
        deadline = time.time() + 300
        while not any(len(f.read_text().splitlines()) >= 2 for f in result_files()):
            assert time.time() < deadline, client.get_job_logs(job)[-3000:]
            time.sleep(1)
        cluster.remove_node(workers[0])  # a worker node dies mid-sweep
        while client.get_job_status(job) not in {
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.STOPPED,
        }:
            assert time.time() < deadline + 600, client.get_job_logs(job)[-3000:]
            time.sleep(2)
        logs = client.get_job_logs(job)
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    finally:
        ray.shutdown()
        cluster.shutdown()
    rows = pq.read_table(tmp_path / "results" / "faults" / "results.parquet").to_pylist()
    assert len(rows) == 3
    assert all(r["status"] == "TERMINATED" and r["epoch"] == 4 for r in rows), rows
