"""`python -m wsl_ray.train`: one self-supervised training run.

Flags are a superset of the reference `train.py`'s, with the same names and defaults.
With `--workers N` the same loop runs as a Ray Train TorchTrainer with N DDP workers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .config import (
    SYNC_BN_NEEDS_GPUS,
    ConfigError,
    add_config_flags,
    config_from_args,
    validate_config,
)


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
        "--recipe",
        default=None,
        help="start from a paper's setting (wsl_ray/recipes.py, e.g. wmse4_cifar10); "
        "flags given beside it override it",
    )
    return parser


def parse_with_recipe(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parses argv; with --recipe, its values become the defaults and argv is parsed again."""
    args = parser.parse_args(argv)
    if args.recipe:
        from .recipes import get_recipe

        try:
            recipe = get_recipe(args.recipe)
        except ValueError as err:
            parser.error(str(err))
        print(f"recipe {recipe.name} ({recipe.source}): {recipe.line}", file=sys.stderr)
        parser.set_defaults(**recipe.values())
        args = parser.parse_args(argv)
    return args


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


def _gpus_per_worker(args: argparse.Namespace) -> float:
    """--gpus-per-worker, by default 1 where CUDA is available and 0 elsewhere."""
    if args.gpus_per_worker is not None:
        return args.gpus_per_worker
    import torch

    return 1 if torch.cuda.is_available() else 0


def run_with_ray(cfg, args) -> dict[str, Any]:
    """Runs the loop as a Ray Train TorchTrainer; the summary comes from its last checkpoint."""
    import ray

    from .ray_train import make_trainer
    from .trainer import read_checkpoint, summarize

    gpus = _gpus_per_worker(args)
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
    args = parse_with_recipe(parser, argv)
    cfg = config_from_args(args)
    try:
        validate_config(cfg, workers=max(args.workers, 1))
    except ConfigError as err:
        parser.error(str(err))
    if cfg.sync_bn and not (args.workers and _gpus_per_worker(args)):
        parser.error(SYNC_BN_NEEDS_GPUS)
    os.environ.setdefault("WANDB_MODE", "offline")
    from .trainer import train

    try:
        if args.workers:
            summary = run_with_ray(cfg, args)
        else:
            summary = train(cfg, resume_from=Path(cfg.out) if args.resume else None)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(summary, cfg.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
