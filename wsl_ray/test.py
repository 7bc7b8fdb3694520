"""`python -m wsl_ray.test --fname CKPT`: evaluate a checkpoint's frozen encoder.

The configuration comes from the checkpoint; flags given on the command line override it
(for example `--data_dir`, `--knn`, `--eval_head`). Without --fname a randomly
initialised encoder is evaluated, as in the reference.
"""

from __future__ import annotations

import argparse
import sys

from .config import Config, ConfigError, add_config_flags, validate_config
from .data import load_dataset
from .methods import get_method
from .training.checkpoint import CheckpointError, read_checkpoint
from .training.device import resolve_device
from .training.evaluate import evaluate
from .training.weights import load_weights
from .utils.cli import Parser, command_name


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=command_name("wsl_ray.test"), description=__doc__)
    add_config_flags(parser)
    parser.add_argument("--clf", choices=("sgd", "knn", "both"), default="both")
    for action in parser._actions:  # only flags given on the command line override the run's
        if action.dest in Config().to_dict() and action.dest != "fname":
            action.default = argparse.SUPPRESS
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k != "clf"}  # flags on the command line
    try:
        payload = read_checkpoint(args.fname) if args.fname else {}
        cfg = Config.from_dict(payload.get("config", {}) | given)
        validate_config(cfg)
    except ConfigError as err:
        parser.error(str(err))
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(cfg.device)
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download).subset(cfg.subset)
        model = get_method(cfg.method)(cfg, data.crop_size).to(device)
        if args.fname:
            try:
                load_weights(model, payload)
            except (RuntimeError, TypeError, AttributeError) as err:
                raise ValueError(
                    f"--fname {args.fname}: its weights do not fit a {cfg.arch} {cfg.method} "
                    f"model with --emb {cfg.emb} (override flags to match the checkpoint): "
                    f"{str(err).splitlines()[0]}"
                ) from None
        else:
            print("evaluating a randomly initialised encoder")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics = evaluate(model, data, device, **cfg.eval_options, probe=args.clf != "knn")
    print(f"{data.summary()}; features of size {model.embed_size}")
    if args.clf in ("knn", "both"):
        print(f"{cfg.knn}-NN ({cfg.knn_metric}): {metrics['acc_knn']:.2%}")
    if args.clf in ("sgd", "both"):
        print(f"linear: top-1 {metrics['acc']:.2%}, top-5 {metrics['acc_5']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
