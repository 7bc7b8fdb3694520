"""Helpers that several test modules share: tiny configs and data, sweeps run as a user
runs them, and readers of what runs leave behind (wandb's offline logs, trial folders)."""

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import torch

from wsl_ray.config import Config
from wsl_ray.training.optim import learning_rate
from wsl_ray.training.reporting import LocalReporter


def reference_lrs(cfg, iters_per_epoch, scheduler):
    """The lr each iteration of the reference train.py loop would use."""
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = scheduler(opt)
    warmup, lrs = 0 if cfg.lr_warmup else 500, []
    for ep in range(cfg.epoch):
        for n in range(iters_per_epoch):
            if warmup < 500:
                for pg in opt.param_groups:
                    pg["lr"] = cfg.lr * (warmup + 1) / 500
                warmup += 1
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()  # no gradients: changes nothing, keeps the scheduler's order check quiet
            if cfg.lr_step == "cos" and warmup >= 500:
                sched.step(ep + n / iters_per_epoch)  # sets the next iteration's lr
        if cfg.lr_step == "step":
            sched.step()
    return lrs


def our_lrs(cfg, iters):
    return [
        learning_rate(cfg, e + n / iters, e * iters + n, iters)
        for e in range(cfg.epoch)
        for n in range(iters)
    ]


def tiny_config(out, **overrides):
    values = dict(
        dataset="shapes",
        arch="resnet18_w8",
        bs=64,
        emb=8,
        w_size=32,
        head_size=32,
        epoch=3,
        lr=3e-3,
        lr_warmup=False,
        eval_every=100,
        ckpt_every=1,
        w_eps=0.01,
        out=str(out),
    )
    return Config(**(values | overrides))


class Crash(Exception):
    pass


class CrashingReporter(LocalReporter):
    """Dies right after reporting `at_epoch`, as a killed process would."""

    def __init__(self, out, at_epoch):
        super().__init__(out)
        self.at_epoch = at_epoch

    def report(self, metrics, checkpoint_dir):
        super().report(metrics, checkpoint_dir)
        if metrics["epoch"] == self.at_epoch:
            raise Crash


# a throwaway test cluster on loopback: no usage stats, no token (a fresh `ray.init()` on this
# machine may have left one behind that a later cluster would otherwise demand)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


SPACE = """
config:
  method: w_mse
  dataset: shapes
  arch: resnet18_w8
  head_size: 64
  bs: 128
  subset: 512
  lr_warmup: false
  w_eps: 0.01
  ckpt_every: 1
params:
  lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}
  emb: {distribution: categorical, choices: [8, 16]}
  w_ratio: {distribution: categorical, choices: [2, 4]}
derived: {w_size: emb * w_ratio}
first: {lr: 3.0e-3, emb: 16, w_ratio: 4}
"""


def sweep(cluster, space_file, storage, *args, wait=True, timeout=600):
    cmd = [
        sys.executable,
        "-m",
        "wsl_ray.tune",
        "--space",
        str(space_file),
        "--storage",
        str(storage),
        "--name",
        "t",
        *args,
    ]
    env = dict(os.environ, RAY_ADDRESS=cluster, **RAY_ENV)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def results(storage):
    return pq.read_table(storage / "t" / "results.parquet").to_pylist()


def trial_epochs(storage):
    """Per Tune trial folder, the epochs it reported, in order."""
    epochs = {}
    for result_file in (storage / "t").glob("*/result.json"):
        lines = result_file.read_text().splitlines()
        epochs[result_file.parent.name] = [json.loads(x)["epoch"] for x in lines]
    return epochs


def wait_for(condition, timeout=400):
    start = time.time()
    while not condition():
        assert time.time() - start < timeout, "timed out"
        time.sleep(1)


BLOCK = 32768  # wandb's transaction log: LevelDB-style 32 KiB blocks of checksummed records


HEADER = 7  # ":W&B", 2 magic bytes, a version byte


RECORD_HEADER = 7  # crc32 (4), length (2, little-endian), type (1: full, 2-4: first/mid/last;
# 0: the rest of the block is zero padding)


def read_records(path: Path) -> list:
    """The protobuf Records of an offline run's `run-ID.wandb` file."""
    # imported here: conftest imports this module, and the GPU machine has no wandb
    from wandb.proto import wandb_internal_pb2

    raw, pos, records, pending = path.read_bytes(), HEADER, [], b""
    while pos + RECORD_HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:  # the block's zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + RECORD_HEADER])
        if kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        pending += raw[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_runs(log_dir: Path) -> list[dict]:
    """Per offline run folder under log_dir/wandb (oldest first): id, group, logged steps."""
    runs = []
    for folder in sorted((Path(log_dir) / "wandb").glob("offline-run-*")):
        (log,) = folder.glob("run-*.wandb")
        run, steps = None, []
        for record in read_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                steps.append(record.history.step.num)
        runs.append(
            {
                "folder": folder.name,
                "id": run.run_id,
                "group": run.run_group,
                "config": run.config,
                "steps": steps,
            }
        )
    return runs


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
        # Ray Train's placement-group cleaner finds the dashboard here, not by autodetection,
        # which fails while another Ray runs on this machine (wsl_ray.utils.ray_start.init_ray)
        RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dashboard}",
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


@contextlib.contextmanager
def optuna_dashboard(storage: Path):
    """The real optuna-dashboard (its console script, as docs/sweeps.md runs it) serving the
    Optuna storage file `storage` on 127.0.0.1 at a free port; yields `get(path)`, which
    returns the JSON of one of its API paths, once the server answers."""
    port = _free_port()
    script = Path(sys.executable).with_name("optuna-dashboard")
    cmd = [str(script), str(storage), "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy

    def get(path: str):
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return json.loads(response.read().decode())

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get("/api/meta")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(
                        f"optuna-dashboard: no answer: {proc.stderr.read()}"
                    ) from None
                time.sleep(0.2)
        yield get
    finally:
        proc.terminate()
        proc.wait(timeout=10)
