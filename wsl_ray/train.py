"""`python -m wsl_ray.train`: one self-supervised training run.

Flags are a superset of the reference `train.py`'s, with the same names and defaults;
`--config run.yaml` reads them from a file (flags on the command line win). A direct run
writes TensorBoard events beside metrics.jsonl unless --no_tensorboard.
With `--workers N` the same loop runs as a Ray Train TorchTrainer with N DDP workers.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .config import (
    Config,
    ConfigError,
    add_config_flags,
    config_from_args,
    defaults_note,
    validate_config,
)
from .config.file import add_config_file_flags, read_config_file, resolved_yaml
from .data.paths import absolute_paths
from .methods import SPECS
from .utils.cli import Parser, command_name
from .utils.paths import writable_folder
from .utils.ray_start import init_ray


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=command_name("wsl_ray.train"),
        description="Self-supervised training: " + ", ".join(s.label for s in SPECS.values()) + ".",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_flags(parser)
    parser.add_argument(
        "--workers", type=int, default=0, help="Ray Train DDP workers (0: in this process)"
    )
    parser.add_argument(
        "--gpus-per-worker",
        "--gpus_per_worker",
        type=float,
        default=None,
        help="default: 1 if CUDA",
    )
    parser.add_argument("--cpus-per-worker", "--cpus_per_worker", type=float, default=1)
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    parser.add_argument(
        "--no_tensorboard",
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        help="write no TensorBoard events into --out (direct runs write them by default)",
    )
    parser.add_argument(
        "--recipe",
        default=None,
        help="start from a paper's setting (wsl_ray/config/recipes.py, e.g. wmse4_cifar10); "
        "flags given beside it override it",
    )
    add_config_file_flags(parser)
    return parser


def parse_run_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parses argv in layers: flags > the --config file > the --recipe > the flags' defaults
    (the method's own defaults fill the fields no layer sets: see Config). Exits via
    parser.error for an unknown recipe or a bad file."""
    first, _ = parser.parse_known_args(argv)
    layers: dict[str, Any] = {}
    try:
        if first.recipe:
            from .config.recipes import get_recipe

            recipe = get_recipe(first.recipe)
            print(f"recipe {recipe.name} ({recipe.source}): {recipe.line}", file=sys.stderr)
            layers |= recipe.values()
        if first.config:
            layers |= read_config_file(parser, first.config)
    except ValueError as err:
        parser.error(str(err))
    parser.set_defaults(**layers)
    return parser.parse_args(argv)


def run_with_ray(cfg, args) -> dict[str, Any]:
    """Runs the loop as a Ray Train TorchTrainer; the summary comes from its last checkpoint."""
    import ray

    from .training.checkpoint import read_checkpoint
    from .training.device import gpus_per_worker
    from .training.reporting import summarize
    from .training.runner import make_trainer

    gpus = gpus_per_worker(args.gpus_per_worker)
    init_ray()
    try:
        trainer = make_trainer(
            cfg, args.workers, gpus, args.cpus_per_worker, cfg.out, name="train", progress=True
        )
        result = trainer.fit()
    finally:
        ray.shutdown()  # the local Ray that ray.init started, on Ctrl-C too
    with result.checkpoint.as_directory() as folder:
        payload = read_checkpoint(folder)
    return summarize(payload["history"], payload["init_metrics"])


def check_run_flags(args: argparse.Namespace) -> None:
    """Raises ConfigError for the flags of this command that are not training config."""
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: must be 0 (this process) or more")
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker {args.gpus_per_worker}: must be 0 or more")
    if args.cpus_per_worker <= 0:
        raise ConfigError(f"--cpus-per-worker {args.cpus_per_worker}: must be more than 0")


def check_checkpoints(cfg: Config, resume: bool, workers: int) -> None:
    """Reads the checkpoints the run will load (--fname, --resume's), so that a missing,
    corrupt or refused file fails now, before the data is loaded (CheckpointError). A
    --resume needs a run to continue (checkpoint.pt in --out; with --workers, the Ray Train
    run --out/train) and starts from nothing else, so --fname beside it is refused."""
    from .training.checkpoint import CHECKPOINT_FILE, read_checkpoint, resume_problem

    if resume and cfg.fname:
        raise ConfigError(
            f"--resume continues the run in {cfg.out}; --fname {cfg.fname} starts a new one "
            "from those weights: give one of them"
        )
    if resume:
        if problem := resume_problem(Path(cfg.out) / ("train" if workers else CHECKPOINT_FILE)):
            raise ConfigError(problem)
        if not workers:
            read_checkpoint(cfg.out, flag="--resume")
    elif cfg.fname:
        read_checkpoint(cfg.fname)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_run_args(parser, argv)
    from .training.device import gpus_per_worker

    try:
        check_run_flags(args)
        cfg = config_from_args(args)
        if note := defaults_note(cfg):
            print(note, file=sys.stderr)
        # --sync_bn needs GPU workers (a direct run has none); --print_config suits any machine
        gpus = gpus_per_worker(args.gpus_per_worker) if args.workers else 0
        validate_config(cfg, workers=max(args.workers, 1), gpus=None if args.print_config else gpus)
        cfg = Config.from_dict(absolute_paths(cfg.to_dict()))  # Ray workers run elsewhere
        writable_folder(cfg.out, "--out")
        check_checkpoints(cfg, args.resume, args.workers)
    except ValueError as err:  # ConfigError, or a folder that cannot be written
        parser.error(str(err))
    if args.print_config:
        print(resolved_yaml(args, cfg), end="")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`s, stop our Ray
    os.environ.setdefault("WANDB_MODE", "offline")
    from .training.loop import train
    from .training.reporting import print_summary
    from .training.sinks import open_sinks

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
