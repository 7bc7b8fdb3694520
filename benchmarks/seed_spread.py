"""Where the seed noise of short CPU runs comes from: the default W-MSE 2 point, trained from
several seeds in each of several regimes of about equal CPU cost, its test 5-NN and linear
accuracy summarised as mean ± std per regime.

A regime is a set of `python -m wsl_ray.train` flags added to the default point of the wmse
space (emb 64, w_size 128, lr 3e-3, w_iter 1) on CIFAR-10 (JPEG copy) with the narrow
resnet18_w8. Every run is a real training run; its final metrics and the CPU time of its
process (user + system, read from the kernel's rusage, so a loaded machine does not inflate
it) are appended to RUNS/runs.jsonl the moment it ends, and a run already there is not run
again: the script resumes where it stopped. At the end it prints one row per regime and
appends the table to BENCHMARKS.md:

    regime | optimiser steps | CPU-min per run | seeds | test 5-NN | test linear | val 5-NN
           | untrained 5-NN (val) | std x sqrt(CPU-min)

The last column ranks the regimes for a confirmation: with a budget of B CPU-minutes and c per
run, n = B / c runs give a mean whose standard error is std sqrt(c) / sqrt(B), so the regime
with the smallest std sqrt(c) resolves the smallest difference for the same CPU.

    python -m benchmarks.seed_spread --data_dir /work/data --runs /work/bench/spread
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import append_results
from wsl_ray.utils.markdown import markdown_table

TRAIN_IMAGES = 10_000
DEFAULT_POINT = ["--method", "w_mse", "--num_samples", "2", "--lr", "3e-3", "--emb", "64",
                 "--w_size", "128", "--w_iter", "1", "--arch", "resnet18_w8",
                 "--subset", str(TRAIN_IMAGES), "--dataset", "cifar10", "--device", "cpu",
                 "--eval_on", "val", "--eval_init", "--no_tensorboard"]  # fmt: skip
# Each regime: its flags, all at 5 epochs of 10,000 images (50,000 images seen, two views each).
# `now` is the cpu preset of 2026-12-04 shortened to the same cost: bs 512, constant lr.
REGIMES: dict[str, list[str]] = {
    "now: bs 512, constant lr": ["--bs", "512", "--epoch", "5", "--no_lr_warmup",
                                 "--lr_step", "none"],
    "steps: bs 128, constant lr": ["--bs", "128", "--epoch", "5", "--no_lr_warmup",
                                   "--lr_step", "none"],
    "schedule: bs 512, warm-up 1 epoch + cosine": ["--bs", "512", "--epoch", "5",
                                                   "--warmup_epochs", "1", "--lr_step",
                                                   "cos_step"],
    "both: bs 128, warm-up 1 epoch + cosine": ["--bs", "128", "--epoch", "5",
                                               "--warmup_epochs", "1", "--lr_step", "cos_step"],
}  # fmt: skip


def steps(flags: list[str]) -> int:
    """Optimiser steps of a regime: epochs x (training images // bs)."""

    def value(flag: str) -> int:
        return int(flags[flags.index(flag) + 1])

    return value("--epoch") * (TRAIN_IMAGES // value("--bs"))


def train_flags(regime: str, seed: int, data_dir: str, out: Path) -> list[str]:
    """The train command's flags for one run of `regime` from `seed`."""
    run = ["--seed", str(seed), "--data_dir", data_dir, "--out", str(out)]
    return [*DEFAULT_POINT, *REGIMES[regime], *run]


def run_one(regime: str, seed: int, data_dir: str, runs: Path, threads: int) -> dict[str, Any]:
    """Trains one run in a child process with `threads` threads; returns its record."""
    out = runs / f"{sorted(REGIMES).index(regime)}-{seed}"
    command = [sys.executable, "-m", "wsl_ray.train", *train_flags(regime, seed, data_dir, out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with (out.parent / f"{out.name}.log").open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{shlex.join(command)} failed: see {out}.log")
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "regime": regime,
        "seed": seed,
        "steps": steps(REGIMES[regime]),
        "cpu_min": (usage.ru_utime + usage.ru_stime) / 60,
        "test_acc_knn": last["test_acc_knn"],
        "test_acc": last["test_acc"],
        "val_acc_knn": last["val_acc_knn"],
        "init_val_acc_knn": untrained_knn(out.parent / f"{out.name}.log"),
    }


def untrained_knn(log: Path) -> float | None:
    """The untrained encoder's val 5-NN accuracy that a run with --eval_init printed."""
    found = re.search(r"untrained encoder: val \d+-NN ([\d.]+)%", log.read_text())
    return float(found[1]) / 100 if found else None


def mean_std(values: list[float]) -> str:
    """'mean ± std' in points (std: the sample standard deviation over seeds)."""
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def table(records: list[dict[str, Any]]) -> str:
    """One row per regime with at least 2 seeds, as Markdown."""
    header = ["regime", "optimiser steps", "CPU-min per run", "seeds", "test 5-NN",
              "test linear", "val 5-NN", "untrained val 5-NN", "std x sqrt(CPU-min)"]  # fmt: skip
    rows = []
    for regime in REGIMES:
        mine = [r for r in records if r["regime"] == regime]
        if len(mine) < 2:
            continue
        knn = [r["test_acc_knn"] for r in mine]
        cpu = statistics.mean(r["cpu_min"] for r in mine)
        init = [r["init_val_acc_knn"] for r in mine if r["init_val_acc_knn"] is not None]
        rows.append([
            regime, mine[0]["steps"], f"{cpu:.1f}", len(mine), mean_std(knn),
            mean_std([r["test_acc"] for r in mine]), mean_std([r["val_acc_knn"] for r in mine]),
            mean_std(init) if len(init) > 1 else "n/a",
            f"{100 * statistics.stdev(knn) * cpu**0.5:.1f}",
        ])  # fmt: skip
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", default="data", help="holds cifar-10-batches-py")
    parser.add_argument("--runs", required=True, help="folder of the runs and runs.jsonl")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per regime (>= 2)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once, 1 thread each")
    parser.add_argument(
        "--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES), metavar="REGIME"
    )
    args = parser.parse_args(argv)
    if not (Path(args.data_dir) / "cifar-10-batches-py").is_dir():
        parser.error(f"--data_dir {args.data_dir}: no cifar-10-batches-py there")
    if args.seeds < 2 or args.parallel < 1:
        parser.error("--seeds must be >= 2 and --parallel >= 1")
    runs = Path(args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    ledger = runs / "runs.jsonl"
    done = [json.loads(x) for x in ledger.read_text().splitlines()] if ledger.exists() else []
    have = {(r["regime"], r["seed"]) for r in done}
    todo = [(g, s) for s in range(args.seeds) for g in args.regimes if (g, s) not in have]
    print(f"{len(done)} runs recorded in {ledger}, {len(todo)} to run", flush=True)
    data_dir = str(Path(args.data_dir).resolve())
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_one, g, s, data_dir, runs, 1) for g, s in todo]
        for future in futures:
            record = future.result()
            with ledger.open("a") as f:
                f.write(json.dumps(record) + "\n")
            done.append(record)
            print(
                f"{record['regime']} seed {record['seed']}: test 5-NN "
                f"{record['test_acc_knn']:.2%}, {record['cpu_min']:.1f} CPU-min",
                flush=True,
            )
    body = (
        "The default point of the wmse space (emb 64, w_size 128, lr 3e-3) trained on 10,000 "
        "CIFAR-10 (JPEG copy) images with resnet18_w8, 5 epochs, one thread per run; "
        "std over seeds, in points.\n\n" + table(done)
    )
    append_results(
        "Seed spread of short CPU runs by regime",
        torch.device("cpu"),
        body,
        "python -m benchmarks.seed_spread " + shlex.join(argv),
    )


if __name__ == "__main__":
    main()
