"""`python -m wsl_ray.train`: one self-supervised training run.

Flags are a superset of the reference `train.py`'s, with the same names and defaults;
`--config run.yaml` reads them from a file (flags on the command line win). A direct run
writes TensorBoard events beside metrics.jsonl unless --no_tensorboard.
With `--workers N` the same loop runs as a Ray Train TorchTrainer with N DDP workers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .config import ConfigError, add_config_flags, config_from_args, validate_config
from .config_file import add_config_file_flags, parse_args_with_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wsl_ray.train",
        description="Self-supervised training with W-MSE, CW-RGP, Contrastive or BYOL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_flags(parser)
    parser.add_argument(
        "--workers", type=int, default=0, help="Ray Train DDP workers (0: in this process)"
    )
    parser.add_argument("--gpus-per-worker", type=float, default=None, help="default: 1 if CUDA")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    parser.add_argument(
        "--no_tensorboard", dest="tensorboard", action="store_false",
        help="write no TensorBoard events into --out (direct runs write them by default)",
    )  # fmt: skip
    add_config_file_flags(parser)
    return parser


def print_summary(summary: dict[str, Any], out: str) -> None:
    print("\n== summary ==")
    print(f"epochs {summary.get('epochs', 0)}, time {summary.get('time_total_s', 0):.1f} s")
    if "acc_knn" in summary:
        for key, name in (("acc_knn", "k-NN"), ("acc", "linear top-1"), ("acc_5", "linear top-5")):
            line = f"{name:>13}: final {summary[key]:.2%}, best {summary['best_' + key]:.2%}"
            if f"init_{key}" in summary:
                gain = (summary[key] - summary[f"init_{key}"]) * 100
                line += f", untrained {summary[f'init_{key}']:.2%} ({gain:+.1f} points)"
            print(line)
    print(f"checkpoint and metrics: {out}")


def run_with_ray(cfg, args) -> dict[str, Any]:
    """Runs the loop as a Ray Train TorchTrainer; the summary comes from its last checkpoint."""
    import ray
    import torch

    from .ray_train import make_trainer
    from .trainer import read_checkpoint, summarize

    gpus = args.gpus_per_worker
    if gpus is None:
        gpus = 1 if torch.cuda.is_available() else 0
    ray.init(ignore_reinit_error=True)
    storage = str(Path(cfg.out).resolve())
    trainer = make_trainer(
        cfg, args.workers, gpus, args.cpus_per_worker, storage, name="train", progress=True
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        payload = read_checkpoint(folder)
    return summarize(payload["history"], payload["init_metrics"])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_with_config(parser, argv)
    cfg = config_from_args(args)
    try:
        validate_config(cfg, workers=max(args.workers, 1))
    except ConfigError as err:
        parser.error(str(err))
    os.environ.setdefault("WANDB_MODE", "offline")
    from .logging_sinks import open_sinks
    from .trainer import train

    try:
        if args.workers:
            summary = run_with_ray(cfg, args)
        else:
            sinks = open_sinks(cfg, tensorboard=args.tensorboard)
            summary = train(cfg, resume_from=Path(cfg.out) if args.resume else None, sinks=sinks)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(summary, cfg.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
