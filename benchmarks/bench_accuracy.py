"""Accuracy and time of one W-MSE 2 run at the reference settings, for a short budget.

The reference settings on CIFAR-10 (bs 512, lr 3e-3, emb 64, w_size 128, Adam), for
`--epochs` epochs (25 by default) with a constant lr after the warm-up (`--lr_step none`: at
25 epochs the reference's warm-up overwrites its milestone-0 drop, so it trains at the full
lr). Evaluates once at the end: 5-NN and linear accuracy, and the median s per epoch.

    python -m benchmarks.bench_accuracy --data_dir data [--epochs 25] [--compile]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import append_results, step_ran_as
from wsl_ray.config import Config
from wsl_ray.training.device import resolve_device
from wsl_ray.training.loop import train
from wsl_ray.utils.markdown import markdown_table as table


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        cfg = Config(
            dataset=args.dataset,
            data_dir=args.data_dir,
            arch=args.arch,
            subset=args.subset,
            epoch=args.epochs,
            eval_every=args.epochs,
            bs=512,
            lr=3e-3,
            emb=64,
            w_size=128,
            lr_step="none",
            compile=args.compile,
            device=args.device,
            out=out,
            ckpt_every=10**6,
        )
        summary = train(cfg)
        history = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
    epoch_s = statistics.median(m["epoch_time_s"] for m in history[1:] or history)
    row = [
        "W-MSE 2",
        args.epochs,
        f"{summary['acc_knn']:.2%}",
        f"{summary['acc']:.2%}",
        f"{epoch_s:.2f}",
        f"{history[-1]['eval_time_s']:.2f}",
        f"{summary['time_total_s']:.0f}",
        step_ran_as(history[-1]),
    ]
    header = ["method", "epochs", "5-NN", "linear", "s/epoch (median)", "eval s", "total s", "step"]
    scope = f"first {args.subset} images" if args.subset else "all images"
    body = (
        f"{args.dataset} ({scope}), {args.arch}{', compiled' if args.compile else ''}, "
        f"bs 512, lr 3e-3, emb 64, w_size 128, --lr_step none\n\n" + table(header, [row])
    )
    command = "python -m benchmarks.bench_accuracy " + shlex.join(argv)
    append_results("Short W-MSE 2 run", resolve_device(args.device), body, command)


if __name__ == "__main__":
    main()
