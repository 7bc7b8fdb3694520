"""Seconds per epoch and images/s of W-MSE training, and the evaluation's time.

Runs the real training loop (`wsl_ray.trainer.train`) for W-MSE 2 (bs 512) and W-MSE 4
(bs 256): epoch 1 warms up (cuDNN autotuning, compilation), epoch 2 is timed and ends with
the evaluation. On a CPU use a subset (`--subset 1024`) and a narrow net; on a GPU the whole
of CIFAR-10. s/epoch is for the full 50,000 training images.

    python -m benchmarks.bench_train --data_dir data [--subset N] [--arch resnet18] [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import append_results, table
from wsl_ray.config import Config
from wsl_ray.data import load_dataset
from wsl_ray.trainer import resolve_device, train

SETTINGS = {"W-MSE 2": dict(num_samples=2, bs=512), "W-MSE 4": dict(num_samples=4, bs=256)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_dir).subset(args.subset)
    full = 50_000
    rows = []
    for name, setting in SETTINGS.items():
        with tempfile.TemporaryDirectory() as out:
            cfg = Config(
                dataset=args.dataset, arch=args.arch, epoch=2, eval_every=2, lr=3e-3,
                emb=64, w_size=128, compile=args.compile, device=args.device, out=out,
                **setting,
            )  # fmt: skip
            train(cfg, data=data, progress=False)
            lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
        timed = json.loads(lines[-1])
        ips = timed["images_per_s"]
        rows.append(
            [name, setting["bs"], f"{ips:,.0f}", f"{ips * setting['num_samples']:,.0f}",
             f"{full / ips:.1f}", f"{timed['eval_time_s']:.1f}"]
        )  # fmt: skip
    body = (
        f"{args.dataset}{f' (first {args.subset} images)' if args.subset else ''}, "
        f"{args.arch}{', compiled' if args.compile else ''}, {device.type}\n\n"
        + table(
            ["setting", "batch", "images/s", "views/s", "s per 50k-image epoch", "eval s"],
            rows,
        )
    )
    command = " ".join(["python -m benchmarks.bench_train", *sys.argv[1:]])
    append_results("Training throughput", device, body, command)


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    main()
