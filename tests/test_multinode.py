"""A sweep submitted as a Ray Job to a 3-node cluster on loopback survives losing a node.

The cluster is this test's own three nodes on 127.0.0.1 (`ray start` processes): a head
with no CPUs (it runs the job's driver, so trials can only train on the workers) and two
1-CPU worker nodes. Trials run one at a time. The second trial is held after its epoch
HELD_AT by the fault-injection point WSL_RAY_FAULT_HOLD (tests/fault_hold.py), and while it
is held the raylet of its node is SIGKILLed, which takes every process of that node with it.
Tune must retry the lost trial from its checkpoint on the other node, and keep every finished
result.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fault_hold import FaultHold
from helpers import RAY_ENV, SPACE, own_ray_cluster, trial_epochs, wait_for

ROOT = Path(__file__).resolve().parent.parent
EPOCHS, TRIALS, HELD_AT = 4, 2, 2


@pytest.fixture(scope="module")
def three_nodes():
    with own_ray_cluster(0, (1, 1)) as cluster:
        yield cluster


def parent(pid: int) -> tuple[int, str]:
    """The parent's pid and name of a live process (Linux /proc)."""
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return ppid, Path(f"/proc/{ppid}/comm").read_text().strip()


@pytest.mark.timeout(1500)  # a bound for a hang: the waits are long only under load
def test_sweep_job_survives_a_killed_worker_node(three_nodes, tmp_path):
    dashboard = f"http://{three_nodes.webui_url}"
    from ray.job_submission import JobStatus, JobSubmissionClient

    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    storage = tmp_path / "sweeps"
    hold = FaultHold(tmp_path / "hold", HELD_AT)
    hold.release(1)  # the first trial goes through; the second is held
    client = JobSubmissionClient(dashboard)
    job = submit(
        client,
        entrypoint=(
            f"{sys.executable} {ROOT / 'cluster' / 'sweep.py'} --space {space} --storage {storage} "
            f"--name t --num_trials {TRIALS} --epochs {EPOCHS} --eval_every 1 "
            "--scheduler fifo --concurrency 1 --max-failures 3"
        ),
        runtime_env={"env_vars": RAY_ENV | hold.env},
    )

    def finished() -> dict[str, str]:
        return {
            t: (storage / "t" / t / "result.json").read_text()
            for t, e in trial_epochs(storage).items()
            if e[-1:] == [EPOCHS]
        }

    def job_ended() -> bool:
        try:
            return client.get_job_status(job).is_terminal()
        except RuntimeError as err:  # an overloaded machine's dashboard can answer 504
            if "status code 5" not in str(err):
                raise
            return False  # the waits' bounds end a dashboard that never answers again

    claim = hold.wait_held(2, running=lambda: not job_ended())
    # the first trial ended before the second started; its results reach the storage
    wait_for(lambda: len(finished()) == 1, timeout=300)
    before = finished()
    raylet, name = parent(int(claim["pid"]))  # a Train worker is a child of its node's raylet
    assert name == "raylet", (raylet, name)
    os.kill(raylet, signal.SIGKILL)
    hold.release(2)

    def held_again() -> bool:
        return (hold.folder / "held-3").exists()

    try:
        wait_for(lambda: job_ended() or held_again(), timeout=600)
    except AssertionError:
        logs = client.get_job_logs(job)[-3000:]
        raise AssertionError(f"the job went on for 600 s: {logs}") from None
    assert not held_again(), "the retried trial reported its held epoch again: no resume"
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    rows = pq.read_table(storage / "t" / "results.parquet").to_pylist()
    assert len(rows) == TRIALS, rows
    assert all(r["status"] == "TERMINATED" and r["epochs"] == EPOCHS for r in rows), rows
    for trial, text in before.items():  # finished results are kept as they were
        assert (storage / "t" / trial / "result.json").read_text() == text
    (victim,) = set(trial_epochs(storage)) - set(before)
    assert list((storage / "t" / victim).glob("error.*")), "the killed trial did not fail"
    epochs = [
        json.loads(x)["epoch"]
        for x in (storage / "t" / victim / "result.json").read_text().splitlines()
    ]
    assert epochs == list(range(1, EPOCHS + 1)), epochs  # resumed from its checkpoint


def submit(client, timeout: float = 300, **job) -> str:
    """client.submit_job(**job), retried while the head's job agent is not up yet: it can come
    up after the dashboard answers, and a submit before then fails with HTTP 500 "No
    available agent" (seen on a loaded machine)."""
    deadline = time.time() + timeout
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.time() > deadline:
                raise
            time.sleep(2)
