"""`python -m wsl_ray.lincls --fname CKPT`: linear classification on a frozen encoder.

The protocol (SimSiam's and CW-RGP's `ImageNet/lincls.py`) and its loop are
`wsl_ray.training.linear_eval`'s. The checkpoint is ours (its config names the encoder and
dataset) or a reference one (W-MSE or CW-RGP: give --arch and --dataset). With --workers N
the loop runs as a Ray Train job of N DDP workers (`wsl_ray.training.linear_runner`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .config.checks import MAX_SEED
from .training.checkpoint import read_checkpoint, resume_problem
from .training.linear_eval import CHECKPOINT_FILE, train_linear
from .utils.cli import Parser, command_name
from .utils.paths import writable_folder


def build_parser() -> argparse.ArgumentParser:
    """The parser of lincls's flags, each with its default in --help."""
    p = Parser(
        prog=command_name("wsl_ray.lincls"),
        description="Linear classification on a frozen encoder (SimSiam / CW-RGP protocol).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--fname", required=True, help="checkpoint: ours, W-MSE's or CW-RGP's")
    p.add_argument("--arch", default=None, help="encoder; default: the checkpoint's config")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's config")
    p.add_argument("--data_dir", "--data-dir", default=None)
    p.add_argument("--subset", type=int, default=None, help="at most this many images per role")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--bs", type=int, default=1024, help="batch size, all workers together")
    p.add_argument("--lr", type=float, default=0.1, help="base lr; the lr is lr x bs / 256")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", type=float, default=0.0, help="weight decay")
    p.add_argument("--optimizer", choices=("sgd", "lars"), default="sgd")
    p.add_argument(
        "--crop_s0", "--crop-s0", type=float, default=0.08, help="smallest crop area fraction"
    )
    p.add_argument("--out", default="runs/lincls", help="checkpoint and metrics folder")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="Ray Train DDP workers (0: here)")
    p.add_argument(
        "--gpus-per-worker",
        "--gpus_per_worker",
        type=float,
        default=None,
        help="default: 1 if CUDA",
    )
    p.add_argument("--cpus-per-worker", "--cpus_per_worker", type=float, default=1)
    return p


def flag_problem(args: argparse.Namespace) -> str | None:
    """The first flag whose value cannot work, by what it means, or None."""
    counts = {"epochs": args.epochs, "bs": args.bs}
    if args.subset is not None:
        counts["subset"] = args.subset
    for flag, value in counts.items():
        if value < 1:
            return f"--{flag} {value}: must be at least 1"
    rules = {  # flag: (value, holds, what it must be)
        "lr": (args.lr, 0 < args.lr < math.inf, "a number > 0"),
        "momentum": (args.momentum, 0 <= args.momentum < 1, "in [0, 1)"),
        "wd": (args.wd, 0 <= args.wd < math.inf, "a number, 0 or more"),
        "crop_s0": (args.crop_s0, 0 < args.crop_s0 <= 1, "an area fraction in (0, 1]"),
        "workers": (args.workers, args.workers >= 0, "0 (this process) or more"),
        "cpus-per-worker": (args.cpus_per_worker, 0 < args.cpus_per_worker < math.inf, "> 0"),
        "seed": (args.seed, 0 <= args.seed < MAX_SEED, "in [0, 2**53)"),
    }
    if args.gpus_per_worker is not None:
        gpus = args.gpus_per_worker
        rules["gpus-per-worker"] = (gpus, 0 <= gpus < math.inf, "a number, 0 or more")
    for flag, (value, holds, what) in rules.items():
        if not holds:  # NaN fails every comparison, so it lands here too
            return f"--{flag} {value}: must be {what}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Runs lincls on `argv` (default: the command line), prints the summary as JSON and
    returns the exit status: 0, or 2 after a one-line error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := flag_problem(args):
        parser.error(problem)
    args.fname = str(Path(args.fname).resolve())  # Ray workers run elsewhere
    if args.data_dir is not None:
        args.data_dir = str(Path(args.data_dir).resolve())
    try:
        writable_folder(args.out, "--out")
        found = Path(args.out) / ("lincls" if args.workers else CHECKPOINT_FILE)
        if args.resume and (problem := resume_problem(found)):
            raise ValueError(problem)
        read_checkpoint(args.fname)  # a missing or unsafe --fname fails before any work
        if args.workers:
            from .training.linear_runner import train_linear_with_ray  # imports Ray

            summary = train_linear_with_ray(args)
        else:
            summary = train_linear(args, resume_from=Path(args.out) if args.resume else None)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
