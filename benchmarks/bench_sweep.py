"""A real-data sweep end to end: W-MSE 2 searched on validation, then confirmed over seeds.

Runs the command a user runs, `python -m wsl_ray.tune --space wmse ... --confirm 1 --seeds 5`,
on CIFAR-10 (JPEG copy): Optuna's TPE and ASHA select on the validation split's 5-NN
accuracy; the validation-selected best and the space's default point are then re-run with the
same 5 new seeds each, and their test 5-NN accuracies compared seed by seed (the paired
interval beside Welch's). Prints the
tune command's own output as it runs, then appends one row to BENCHMARKS.md: the best
configuration, the test accuracy of each arm (mean ± std over seeds), the difference with its
interval and the verdict, the wall time and the CPU- or GPU-hours (the sweep's bill, and the
confirmation's trials' hours counted the same way).

    python -m benchmarks.bench_sweep --preset cpu --data_dir data  # about an hour on 2 cores
    python -m benchmarks.bench_sweep --preset gpu --data_dir data  # one 9-minute call, one GPU
    python -m benchmarks.bench_sweep --preset cpu --plan           # its plan: time and hours

DATA_DIR holds cifar-10-batches-py, which `python ../shared/datasets/cifar10-jpeg/to_batches.py
DATA_DIR` writes. The experiments go to --storage (a temporary folder unless given); the
tune output is also kept in STORAGE/bench-sweep-PRESET.log when --storage is given.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import append_results
from wsl_ray.sweep.bill import duration
from wsl_ray.sweep.confirmation import DEFAULT_LABEL, confirm_folder, summarize_confirmation
from wsl_ray.sweep.experiment import read_record
from wsl_ray.sweep.results import collect_rows, ranked
from wsl_ray.utils.markdown import markdown_table

# Each preset: the tune flags besides --data_dir and --storage, and what it is sized for.
# Both warm up over the first epoch and follow a cosine to 0 at the run's end (the reference's
# 500-iteration warm-up and milestones are sized for 200 full epochs): with a constant lr the
# cpu preset's seeds spread 7-9 points of test 5-NN, with this schedule 1.2 (BENCHMARKS.md,
# "Seed spread of short CPU runs by regime"). The grace is 4 of 5 epochs because earlier
# epochs ranked the cpu preset's trials little better than chance ("Does an early rung rank
# trials as the end does?"); the gpu preset keeps the same fraction of its budget. The cpu
# preset trains the narrow encoder on 10,000 images; the gpu preset is the papers' ResNet-18
# at bs 512 on all 50,000 images, 4 trials sharing the GPU (not yet run).
SCHEDULE = ["warmup_epochs=1", "lr_step=cos_step"]
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "sized_for": "about an hour on 2 CPU cores",
        "device": "cpu",
        "flags": [
            "--num_trials", "8", "--epochs", "5", "--eval_every", "1", "--grace", "4",
            "--cpus-per-trial", "1",
            "--set", "arch=resnet18_w8", "subset=10000", "bs=512", *SCHEDULE, "device=cpu",
        ],
    },
    "gpu": {
        "sized_for": "one 9-minute call on one H100 or H200 (estimated, not run)",
        "device": "cuda",
        "flags": [
            "--num_trials", "8", "--epochs", "8", "--eval_every", "2", "--grace", "6",
            "--gpus-per-trial", "0.25", "--cpus-per-trial", "2",
            "--set", "arch=resnet18", "bs=512", *SCHEDULE,
        ],
    },
}  # fmt: skip
SEARCHED = ("lr", "emb", "w_size", "w_iter")  # the wmse space's parameters, as trained
COMMON = ["--space", "wmse", "--dataset", "cifar10", "--seed", "0", "--confirm", "1"]


def tune_command(preset: str, data_dir: str, storage: str, seeds: int) -> list[str]:
    """The `python -m wsl_ray.tune` command line of a preset."""
    name = f"bench-sweep-{preset}"
    return [sys.executable, "-m", "wsl_ray.tune", *COMMON, "--seeds", str(seeds)] + [
        "--data_dir", data_dir, "--storage", storage, "--name", name, *PRESETS[preset]["flags"]
    ]  # fmt: skip


def run_logged(command: list[str], log: Path) -> int:
    """Runs `command`, its output to this terminal and to `log`; returns its exit code."""
    with (
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
        log.open("w") as f,
    ):
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
    return proc.returncode


def trial_hours(rows: list[dict[str, Any]], per_trial: float) -> float:
    """Hours held by the trials of one experiment: their time (start-up included) x units."""
    return sum(r.get("time_total_s") or 0 for r in rows) * per_trial / 3600


def summary_body(experiment: str, wall_s: float, note: str) -> str:
    """The results of the sweep at `experiment` and of its confirmation, as Markdown."""
    record = read_record(experiment)
    metric, bill = record["metric"], record["bill"]
    best = ranked(collect_rows(experiment), metric)[0]
    searched = {k: best.get(f"config/{k}") for k in SEARCHED}
    confirm_rows = collect_rows(confirm_folder(experiment))
    table, verdict = summarize_confirmation(confirm_rows, metric)
    unit, per_trial = bill["unit"], bill["units_per_trial"]
    confirm_h = trial_hours(confirm_rows, per_trial)
    arms = {t["config"]: t for t in table}
    test_key = next(k for k in table[0] if k.startswith("test_") and k.endswith("mean ± std"))
    header = ["stage", "trials", "trial-epochs", f"{unit}-hours", "result"]
    rows = [
        [
            "sweep",
            len(collect_rows(experiment)),
            f"{bill['trial_epochs']} (planned {bill['planned_trial_epochs']['expected']:g})",
            f"{bill['hours']:.2f}",
            f"best {best['trial_id']}: {metric} {best[metric]:.2%}, "
            + ", ".join(f"{k} {v:.3g}" for k, v in searched.items()),
        ],
        [
            "confirmation",
            len(confirm_rows),
            sum(r.get("epochs") or 0 for r in confirm_rows),
            f"{confirm_h:.2f}",
            "; ".join(f"{label}: {t[test_key]}" for label, t in arms.items()),
        ],
    ]
    best = next((t for c, t in arms.items() if c != DEFAULT_LABEL), {})
    return (
        f"{note}\n\n{markdown_table(header, rows)}\n\nTest 5-NN, best minus default, points "
        f"[95% interval]: paired {best.get('paired (95% CI)', 'n/a')} (correlation of the "
        f"arms {best.get('r', 'n/a')}), Welch {best.get('vs default (95% CI)', 'n/a')}. "
        f"{verdict}\nWall time {duration(wall_s)}; "
        f"{bill['hours'] + confirm_h:.2f} {unit}-hours in all."
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--data_dir", default="data", help="holds cifar-10-batches-py")
    parser.add_argument("--storage", default=None, help="experiment folder (default: temporary)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per confirmed arm (>= 3)")
    parser.add_argument(
        "--plan", action="store_true", help="print the tune command's --plan of the preset, only"
    )
    args = parser.parse_args(argv)
    if not (Path(args.data_dir) / "cifar-10-batches-py").is_dir():
        parser.error(
            f"--data_dir {args.data_dir}: no cifar-10-batches-py there; write it with "
            f"`python ../shared/datasets/cifar10-jpeg/to_batches.py {args.data_dir}`"
        )
    if args.seeds < 3:
        parser.error(f"--seeds {args.seeds}: the confirmation needs 3 or more seeds per arm")
    preset = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as scratch:
        storage = str(Path(args.storage or scratch).resolve())
        Path(storage).mkdir(parents=True, exist_ok=True)
        command = tune_command(args.preset, str(Path(args.data_dir).resolve()), storage, args.seeds)
        if args.plan:
            sys.exit(subprocess.run([*command, "--plan"]).returncode)
        start = time.monotonic()
        rc = run_logged(command, Path(storage) / f"bench-sweep-{args.preset}.log")
        wall_s = time.monotonic() - start
        if rc != 0:
            sys.exit(f"bench_sweep: the tune command failed (exit {rc}): {shlex.join(command)}")
        note = (
            f"CIFAR-10 (JPEG copy), W-MSE 2, preset `{args.preset}` ({preset['sized_for']}): "
            f"`{shlex.join(['python', *command[1:]]).replace(storage, 'STORAGE')}`"
        )
        body = summary_body(f"{storage}/bench-sweep-{args.preset}", wall_s, note)
    device = torch.device(preset["device"] if torch.cuda.is_available() else "cpu")
    append_results(
        f"Real-data sweep ({args.preset} preset)",
        device,
        body,
        "python -m benchmarks.bench_sweep " + shlex.join(argv),
    )


if __name__ == "__main__":
    main()
