"""Cluster configs against Ray's own validator, the KubeRay manifest, and the sweep entry.

The configs take per-user settings (${WSL_RAY_...}) that cluster/render.py fills in from the
environment; they are validated as rendered with example settings.
"""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
sys.path.insert(0, str(CLUSTER))
from fetch_data import main as fetch_data  # noqa: E402
from render import main as render_main  # noqa: E402
from render import render  # noqa: E402

SETTINGS = {
    "WSL_RAY_AMI": "ami-0123456789abcdef0",
    "WSL_RAY_GCP_PROJECT": "my-project",
    "WSL_RAY_HEAD_IP": "10.0.0.10",
    "WSL_RAY_WORKER_IPS": "[10.0.0.11, 10.0.0.12]",
    "WSL_RAY_SSH_USER": "researcher",
    "WSL_RAY_DATA": "s3://my-bucket/datasets",
    "WSL_RAY_SOURCE": "https://example.org/wsl-ray.zip",
}
DOCKERFILE = (CLUSTER / "Dockerfile").read_text()
RAY_VERSION = re.search(r"FROM rayproject/ray:(\d+\.\d+\.\d+)-", DOCKERFILE)[1]
LAUNCHER = ["cluster.yaml", "cluster-gcp.yaml", "cluster-local.yaml"]


def rendered(name: str, **settings) -> dict:
    return yaml.safe_load(render((CLUSTER / name).read_text(), SETTINGS | settings))


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_configs_pass_rays_validator(name):
    config = rendered(name)
    validate_config(prepare_config(copy.deepcopy(config)))
    setup = config["setup_commands"]
    assert any("pip install" in c and "wsl-ray" in c for c in setup)
    assert any("fetch_data.py" in c and "s3://my-bucket/datasets" in c for c in setup)
    assert config["file_mounts"]
    if config["provider"]["type"] != "local":
        workers = [
            t for n, t in config["available_node_types"].items() if n != config["head_node_type"]
        ]
        assert any(t["resources"].get("GPU") == 1 and t["min_workers"] == 0 for t in workers)
        for node_type in config["available_node_types"].values():
            assert all(isinstance(v, int) for v in node_type["resources"].values())
        # a public image at the pinned Ray version, with the project installed by setup
        assert config["docker"]["image"] == f"rayproject/ray:{RAY_VERSION}-py311-gpu"


@pytest.mark.parametrize("name", LAUNCHER)
def test_dashboard_stays_on_localhost_with_token_auth(name):
    config = rendered(name)
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head
    starts = [
        c
        for k in ("head_start_ray_commands", "worker_start_ray_commands")
        for c in config[k]
        if "ray start" in c
    ]
    assert all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    assert any(target.endswith(".ray/auth_token") for target in config["file_mounts"])
    assert "0.0.0.0" not in (CLUSTER / name).read_text()


def test_aws_config_reads_the_ami_from_the_environment(monkeypatch, capsys):
    assert (
        rendered("cluster.yaml")["available_node_types"]["head"]["node_config"]["ImageId"]
        == (SETTINGS["WSL_RAY_AMI"])
    )
    monkeypatch.delenv("WSL_RAY_AMI", raising=False)
    assert render_main([str(CLUSTER / "cluster.yaml")]) == 2
    err = capsys.readouterr().err
    assert "export WSL_RAY_AMI=" in err and "Ubuntu 22.04" in err
    no_data = rendered("cluster.yaml", WSL_RAY_DATA="")  # data is optional: shapes needs none
    assert any('fetch_data.py "" ' in c for c in no_data["setup_commands"])


def test_data_copy_fails_loudly_and_copies_a_folder(tmp_path, capsys):
    assert fetch_data([str(tmp_path / "missing"), str(tmp_path / "data")]) == 1
    assert "copying the datasets from" in capsys.readouterr().err
    (tmp_path / "src" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "src" / "cifar-10-batches-py" / "test_batch").write_text("x")
    assert fetch_data([str(tmp_path / "src"), str(tmp_path / "data")]) == 0
    assert (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").read_text() == "x"
    assert fetch_data(["", str(tmp_path / "none")]) == 0


def test_kuberay_job_runs_the_sweep_on_public_images_with_data_on_the_head():
    job = rendered("kuberay.yaml")
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["entrypoint"].startswith("python -m wsl_ray.tune --space wmse")
    assert "--data_dir /data" in job["spec"]["entrypoint"]
    runtime = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime["working_dir"] == SETTINGS["WSL_RAY_SOURCE"] and runtime["pip"]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert cluster["authOptions"] == {"mode": "token"}  # KubeRay makes the token and sets it
    head = cluster["headGroupSpec"]["template"]["spec"]
    workers = cluster["workerGroupSpecs"][0]["template"]["spec"]
    assert workers["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    for pod in (head, workers):
        (container,) = pod["containers"]
        assert container["image"].startswith(f"rayproject/ray:{RAY_VERSION}-py311")
        assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
        assert pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True


def auth_after_setup(state: Path, **env: str) -> str:
    """The token settings that cluster/slurm_common.sh's wsl_auth_token leaves exported."""
    script = (
        f"source {CLUSTER / 'slurm_common.sh'}; STATE_DIR={state}; wsl_auth_token; "
        'echo "${RAY_AUTH_MODE:-}|${RAY_AUTH_TOKEN_PATH:-}|${RAY_AUTH_TOKEN:-}"'
    )
    path = str(Path(sys.executable).parent) + ":/usr/bin:/bin"  # the `python` it calls
    done = subprocess.run(
        ["bash", "-c", script], env={"PATH": path, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_slurm_job_makes_its_own_token_that_only_its_user_reads(tmp_path):
    given = {"RAY_AUTH_TOKEN": "someone-elses", "RAY_AUTH_MODE": "token"}
    for job, env in (("1", {}), ("2", given)):
        (tmp_path / job).mkdir()
        token = tmp_path / job / "auth_token"
        assert auth_after_setup(tmp_path / job, **env) == f"token|{token}|"
        assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())
        assert token.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "1" / "auth_token").read_text() != (
        tmp_path / "2" / "auth_token"
    ).read_text()
    (tmp_path / "off").mkdir()
    assert auth_after_setup(tmp_path / "off", RAY_AUTH_MODE="disabled") == "disabled||"
    assert not (tmp_path / "off" / "auth_token").exists()


def test_sweep_entry_takes_the_tune_flags():
    out = subprocess.run(
        [sys.executable, str(CLUSTER / "sweep.py"), "--space", "no-such-space"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and "known: " in out.stderr and "wmse" in out.stderr
