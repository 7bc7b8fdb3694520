"""Memory of packed trials: PSS summed over a sweep's processes, with and without the
node-shared dataset (wsl_ray/data/shared.py), split into the object store and the rest.

    python -m benchmarks.bench_memory [--dataset cifar10 --data_dir DIR] [--trials 4] [--no-share]

Runs a packed W-MSE sweep (`--trials` trials at once, 2/trials CPU each) on a fresh local Ray
and samples /proc/PID/smaps of every process the sweep started, every 2 s. Once every trial's
Train worker runs and `--settle` seconds have passed (the trials then train), it keeps
`--samples` samples, takes `ray memory --stats-only`, then stops the sweep. Each sample
sums the PSS of every mapping over the processes, by kind of mapping: `store` (Ray's
shared-memory object store: /dev/shm or plasma files), `anon` (heap, stacks, anonymous
mappings: where an unshared dataset lives) and `file` (libraries, other files); and by
group of processes: the Train workers (`ray::RayTrainWorker`), every `ray::` worker,
and all of them (driver, raylet, GCS too). RSS would count shared pages once per process;
PSS splits each page between the processes that map it, so the sums count every page once.

Every trial reads its dataset whole whether or not `--subset` is given (`ImageData.subset`
slices views of the full arrays), so the default, no subset, is what a real sweep holds.
Without sharing, each Train worker holds its own decoded copy in `anon`; with sharing, the
driver's `ray.put` writes one copy to `store` and the workers map it (pages a worker has not
touched yet count for the driver). The driver keeps its own loaded copy in both arms.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 2**20
KINDS = ("store", "anon", "file")
GROUPS = ("trainers", "workers", "all")
# a mapping line of /proc/PID/smaps: "start-end perms offset dev inode [path]"
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$")


def mapping_kind(path: str) -> str:
    """store, anon or file: the kind of a mapping, from its path in /proc/PID/smaps."""
    if path.startswith("/dev/shm") or "plasma" in path:
        return "store"
    if not path or path.startswith("["):  # [heap], [stack], [anon:...], [vdso]
        return "anon"
    return "file"


def smaps_pss(text: str) -> dict[str, int]:
    """PSS in bytes by kind of mapping, from the text of /proc/PID/smaps."""
    pss = dict.fromkeys(KINDS, 0)
    kind = "anon"
    for line in text.splitlines():
        found = MAPPING.match(line)
        if found:
            kind = mapping_kind(found.group(1).strip())
        elif line.startswith("Pss:"):
            pss[kind] += int(line.split()[1]) * 1024
    return pss


def process_pss(pid: int) -> dict[str, int] | None:
    try:
        with open(f"/proc/{pid}/smaps") as f:
            return smaps_pss(f.read())
    except OSError:  # it has ended
        return None


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
    """PSS sums over root's descendants, keyed "GROUP/KIND" and "GROUP/total", the number of
    Train workers ("n_trainers"), and the address of their GCS (for `ray memory`)."""
    sums: dict[str, float] = {f"{g}/{k}": 0 for g in GROUPS for k in (*KINDS, "total")}
    sums["n_trainers"] = 0
    address = None
    for pid, cmd in descendants(root).items():
        pss = process_pss(pid)
        if pss is None:
            continue
        groups = ["all"]
        if cmd.startswith("ray::"):
            groups.append("workers")
        if cmd.startswith("ray::RayTrainWorker"):
            groups.append("trainers")
            sums["n_trainers"] += 1
        for group in groups:
            for kind, value in pss.items():
                sums[f"{group}/{kind}"] += value
                sums[f"{group}/total"] += value
        if "gcs_server" in cmd:
            address = gcs_address(cmd) or address
    return sums, address


def gcs_address(cmd: str) -> str | None:
    """IP:PORT of the GCS from its command line. A local `ray.init()` starts it with
    --gcs_server_port=0 and the port it bound is in SESSION/gcs_server_port_NODEID."""
    port = re.search(r"--gcs_server_port=(\d+)", cmd)
    ip = re.search(r"--node[-_]ip[-_]address=([\d.]+)", cmd)
    logs = re.search(r"--log_dir=(\S+)", cmd)
    if not (port and ip):
        return None
    number = port.group(1)
    if number == "0" and logs:
        files = glob.glob(os.path.join(os.path.dirname(logs.group(1)), "gcs_server_port_*"))
        number = open(files[0]).read().strip() if files else "0"
    return f"{ip.group(1)}:{number}" if number != "0" else None


def spread(values: list[float]) -> str:
    """median [min-max] in MiB."""
    mib = [v / MIB for v in values]
    return f"{statistics.median(mib):.0f} [{min(mib):.0f}-{max(mib):.0f}]"


def ray_memory(address: str, env: dict[str, str]) -> str:
    """`ray memory --stats-only` of the sweep's cluster: its output, or why there is none."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    # a new local cluster has token auth unless RAY_AUTH_MODE says otherwise (Ray 2.60); the
    # CLI sends the token (~/.ray/auth_token) only when told the mode
    env = env | {"RAY_AUTH_MODE": env.get("RAY_AUTH_MODE", "token")}
    done = subprocess.run(
        [ray, "memory", "--stats-only", "--address", address],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode:
        return f"ray memory failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
    return done.stdout.strip()


def sweep_command(args: argparse.Namespace, storage: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "wsl_ray.tune",
        "--space",
        "wmse",
        "--dataset",
        args.dataset,
        "--num_trials",
        str(args.trials),
        "--concurrency",
        str(args.trials),
        "--cpus-per-trial",
        str(2 / args.trials),
        "--epochs",
        str(args.epochs),
        "--eval_every",
        "1",
        "--scheduler",
        "fifo",
        "--max-failures",
        "0",
        "--storage",
        storage,
        "--name",
        "mem",
        "--set",
        "arch=resnet18_w8",
        "bs=128",
        "emb=16",
        "head_size=64",
        "lr_warmup=false",
        "w_eps=0.01",
    ]
    if args.subset:
        cmd.append(f"subset={args.subset}")
    if args.data_dir:
        cmd += ["--data_dir", args.data_dir]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--data_dir", default=None, help="the dataset's folder")
    parser.add_argument("--subset", type=int, default=None, help="images per role to train on")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-share", action="store_true", help="every trial loads its own copy")
    parser.add_argument(
        "--samples", type=int, default=10, help="samples (2 s apart) with every trial running"
    )
    parser.add_argument(
        "--settle", type=float, default=30, help="seconds to wait after every trial started"
    )
    args = parser.parse_args()
    storage = tempfile.mkdtemp(prefix="bench_memory_")
    env = dict(
        os.environ,
        WSL_RAY_SHARE_DATA="0" if args.no_share else "1",
        RAY_USAGE_STATS_ENABLED="0",
        WANDB_MODE="offline",
    )
    env["RAY_ADDRESS"] = "local"  # a fresh Ray of its own, not one found on the machine
    sweep = subprocess.Popen(
        sweep_command(args, storage), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    samples: list[dict[str, float]] = []
    stats, loads, started = "", [], 0.0
    while sweep.poll() is None:
        now, address = sample(sweep.pid)
        if now["n_trainers"] == args.trials:
            started = started or time.monotonic()  # then imports, loading the data
        if now["n_trainers"] == args.trials and time.monotonic() - started >= args.settle:
            samples.append(now)
            loads.append(os.getloadavg()[0])
            if len(samples) >= args.samples:
                if address:
                    stats = ray_memory(address, env)
                sweep.send_signal(signal.SIGINT)  # enough: Tune stops on SIGINT
                break
        time.sleep(2)
    out, _ = sweep.communicate(timeout=600)
    if not samples:
        print(out.decode()[-3000:])
        print(f"sweep exited with {sweep.returncode} before all {args.trials} trials ran")
        return 1
    mode = "own copy per trial" if args.no_share else "one shared copy"
    load = f"load average {min(loads):.1f}-{max(loads):.1f}"
    print(
        f"{args.trials} packed {args.dataset} trials, {mode}: {len(samples)} samples with "
        f"every Train worker running, {load}"
    )
    print("PSS in MiB, median [min-max] over the samples")
    print(f"{'processes':<26}" + "".join(f"{k:>18}" for k in (*KINDS, "total")))
    names = {
        "trainers": f"{args.trials} Train workers",
        "workers": "all ray:: workers",
        "all": "all (driver, raylet too)",
    }
    for group in GROUPS:
        cells = [spread([s[f"{group}/{k}"] for s in samples]) for k in (*KINDS, "total")]
        print(f"{names[group]:<26}" + "".join(f"{c:>18}" for c in cells))
    print(stats or "ray memory --stats-only: no GCS address found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
