"""Memory of packed trials: PSS and USS summed over a sweep's processes, with and without
the node-shared dataset (wsl_ray/shared_data.py).

    python -m benchmarks.bench_memory [--trials 4] [--no-share]

Runs a small packed shapes sweep (`--trials` trials at once, 0.5 CPU each) on a fresh local
Ray and samples /proc/PID/smaps_rollup of every process the sweep started, every 2 s. Once
every trial runs it takes `ray memory --stats-only`, keeps the peak sums over the trial
processes (`ray::` workers) and over all of them (raylet, GCS, driver too) for `--samples`
samples, then stops the sweep. RSS would count the shared object-store pages once per
process and cannot show the saving; PSS splits them between the processes that map them,
USS counts only private pages.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

MIB = 2**20


def rollup(pid: int) -> dict[str, int] | None:
    """Pss and USS (private clean + dirty) of one process, in bytes."""
    try:
        text = open(f"/proc/{pid}/smaps_rollup").read()
    except OSError:
        return None
    kb = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return {"pss": kb["Pss"] * 1024, "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) * 1024}


def descendants(root: int) -> dict[int, str]:
    """root and every process below it, with their command lines (from /proc)."""
    parents, commands = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ")
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[int(entry)] = cmd.decode(errors="replace").strip()
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in found]
        found.update(children)
        frontier.extend(children)
    return {pid: commands.get(pid, "") for pid in found}


def sample(root: int) -> tuple[dict[str, float], str | None]:
    """Sums over root's descendants (all of them, and the `ray::` trial processes), and the
    address of their GCS for `ray memory`."""
    totals = {"pss": 0, "uss": 0, "trial_pss": 0, "trial_uss": 0, "trainers": 0}
    address = None
    for pid, cmd in descendants(root).items():
        mem = rollup(pid)
        if mem is None:
            continue
        totals["pss"] += mem["pss"]
        totals["uss"] += mem["uss"]
        if cmd.startswith("ray::"):
            totals["trial_pss"] += mem["pss"]
            totals["trial_uss"] += mem["uss"]
            totals["trainers"] += cmd.startswith("ray::RayTrainWorker")
        port = re.search(r"--gcs_server_port=(\d+)", cmd)
        ip = re.search(r"--node-ip-address=([\d.]+)", cmd)
        if "gcs_server" in cmd and port and ip:
            address = f"{ip.group(1)}:{port.group(1)}"
    return totals, address


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-share", action="store_true", help="every trial loads its own copy")
    parser.add_argument(
        "--samples", type=int, default=10, help="samples (2 s apart) with every trial running"
    )
    args = parser.parse_args()
    storage = tempfile.mkdtemp(prefix="bench_memory_")
    env = dict(os.environ, WSL_RAY_SHARE_DATA="0" if args.no_share else "1",
               RAY_USAGE_STATS_ENABLED="0", WANDB_MODE="offline")  # fmt: skip
    env["RAY_ADDRESS"] = "local"  # a fresh Ray of its own, not one found on the machine
    cmd = [
        sys.executable, "-m", "wsl_ray.tune", "--space", "wmse", "--dataset", "shapes",
        "--num_trials", str(args.trials), "--concurrency", str(args.trials),
        "--cpus-per-trial", str(2 / args.trials), "--epochs", str(args.epochs),
        "--eval_every", "1", "--scheduler", "fifo", "--max-failures", "0",
        "--storage", storage, "--name", "mem", "--set", "arch=resnet18_w8", "subset=2000",
        "bs=128", "emb=16", "head_size=64", "lr_warmup=false", "w_eps=0.01",
    ]  # fmt: skip
    sweep = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak: dict[str, float] = {}
    stats, full = "", 0
    while sweep.poll() is None:
        now, address = sample(sweep.pid)
        if now["trainers"] == args.trials:
            full += 1
            if now["trial_pss"] > peak.get("trial_pss", 0):
                peak = now
            if not stats and address:
                stats = subprocess.run(
                    [os.path.join(os.path.dirname(sys.executable), "ray"), "memory",
                     "--stats-only", "--address", address],
                    capture_output=True, text=True, env=env, timeout=300,
                ).stdout  # fmt: skip
        if full >= args.samples and stats:  # enough: stop the sweep (Tune stops on SIGINT)
            sweep.send_signal(signal.SIGINT)
            break
        time.sleep(2)
    sweep.wait(timeout=600)
    out = sweep.stdout.read().decode()
    if not peak:
        print(out[-3000:])
        print(f"sweep exited with {sweep.returncode}; peak sample with all trials: {peak}")
        return 1
    mode = "own copy per trial" if args.no_share else "one shared copy"
    print(f"{args.trials} packed trials, {mode}: peak with {peak['trainers']} Train workers")
    print(f"  trial processes: PSS {peak['trial_pss'] / MIB:.0f} MiB, "
          f"USS {peak['trial_uss'] / MIB:.0f} MiB")  # fmt: skip
    print(f"  all processes:   PSS {peak['pss'] / MIB:.0f} MiB, USS {peak['uss'] / MIB:.0f} MiB")
    print(stats.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
