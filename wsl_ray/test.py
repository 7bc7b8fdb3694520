"""`python -m wsl_ray.test --fname CKPT`: evaluate a checkpoint's frozen encoder.

The configuration comes from the checkpoint; flags given on the command line override it
(for example `--data_dir`, `--knn`, `--eval_head`). Without --fname a randomly
initialised encoder is evaluated, as in the reference.
"""

from __future__ import annotations

import argparse
import sys

from .config import Config, ConfigError, add_config_flags, validate_config
from .data import dataset_spec, load_dataset
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


def load_checked(model, payload: dict, fname: str, cfg: Config) -> None:
    """Loads --fname's weights into `model`, or raises ValueError saying what the file is
    when it holds no encoder of this kind (a lincls checkpoint, an exported backbone)."""
    if "linear" in payload and "model" not in payload:
        raise ValueError(
            f"--fname {fname} is a lincls checkpoint (a linear classifier on a frozen encoder), "
            "not an encoder's; give the training checkpoint that lincls ran on"
        )
    try:
        load_weights(model, payload)
    except (RuntimeError, TypeError, AttributeError, ValueError) as err:
        exported = "config" not in payload and not {"model", "state_dict"} & set(payload)
        hint = (
            " It looks like an exported backbone (wsl_ray.export), which loads into "
            "torchvision (docs/training.md); test evaluates training checkpoints."
            if exported
            else " Override flags to match the checkpoint."
        )
        raise ValueError(
            f"--fname {fname}: its weights do not fit a {cfg.arch} {cfg.method} model with "
            f"--emb {cfg.emb}: {str(err).splitlines()[0]}.{hint}"
        ) from None


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
        # the weights first, then the data: a file that is no encoder's checkpoint is named
        # as such, not blamed on a dataset that its missing config defaulted to
        model = get_method(cfg.method)(cfg, dataset_spec(cfg.dataset).crop_size).to(device)
        if args.fname:
            load_checked(model, payload, args.fname, cfg)
        else:
            print("evaluating a randomly initialised encoder")
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download).subset(cfg.subset)
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
