"""Kernel ops per training step, a CPU proxy of what a GPU step costs to launch, and the ops
in it that would make the host wait for the GPU.

One training step (augmentation, forward, backward, fused Adam, the method's own update)
of each setting of `bench_train` and of each other method at its defaults runs under bf16
autocast, eagerly, as on CUDA: the graph-ready step (`graph.TrainStep`, capturable fused Adam)
inside an `OpCounter`; the second step is counted (the first creates the optimiser's state).
The last columns say whether CUDA runs the step as one CUDA graph (one launch per step) or
eagerly, and why (`graph.graph_fallback`). The ZCA takes its CUDA path (Newton-Schulz and its
convergence check) on the CPU too. The op graph does not depend on the encoder's
width or the batch size, so a narrow ResNet-18 (resnet18_w8) on 32x32 images stands in for
the full one.

    python -m benchmarks.count_ops [--settings "W-MSE 2" ...] [--no-record]
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from benchmarks.bench_train import SETTINGS
from benchmarks.common import append_results
from wsl_ray.config import METHODS, Config
from wsl_ray.data import Augment
from wsl_ray.methods import get_method, whitening
from wsl_ray.training.device import OpCounter
from wsl_ray.training.graph import TrainStep, graph_fallback
from wsl_ray.training.optim import build_optimizer
from wsl_ray.utils.markdown import markdown_table as table

SIZE = 32
OTHERS = {m: dict(method=m, bs=128) for m in METHODS if m not in ("w_mse", "cw_rgp", "byol")}


def count_step(settings: dict) -> tuple[OpCounter, str | None]:
    """The ops of one training step of a config (`OpCounter`: ops, kernels, syncs), and why
    CUDA would run it eagerly (None: as one CUDA graph)."""
    cfg = Config(**{"arch": "resnet18_w8", **settings})
    torch.manual_seed(0)
    model = get_method(cfg.method)(cfg, SIZE)
    ready = cfg.optimizer == "adam"
    optimizer = build_optimizer(
        cfg.optimizer, model.parameters(), cfg.lr, cfg.adam_l2, fused=True, graph_ready=ready
    )
    augment = Augment.from_config(cfg, SIZE, (0.5,) * 3, (0.25,) * 3)
    step = TrainStep(model, model, optimizer, augment)
    x = torch.randint(0, 256, (cfg.bs, 3, SIZE, SIZE), dtype=torch.uint8)
    sizes = torch.full((cfg.bs, 2), SIZE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step(x, sizes, 0.0)
        with OpCounter() as counter:
            step(x, sizes, 0.0)
    return counter, graph_fallback(cfg, model, torch.device("cuda"), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.count_ops", description=__doc__)
    everything = {**SETTINGS, **OTHERS}
    parser.add_argument("--settings", nargs="+", choices=list(everything), default=everything)
    parser.add_argument("--no-record", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    whitening.NS_DEVICES = ("cpu", "cuda")  # count the ops CUDA runs
    rows = []
    for name in args.settings:
        step, eager_because = count_step(everything[name])
        syncs = ", ".join(sorted(set(step.syncs))) or "none"
        launches = step.kernels if eager_because else "1 graph"
        rows.append([name, step.ops, step.kernels, syncs, launches, eager_because or "graph"])
        print(rows[-1], flush=True)
    heads = ["setting", "aten ops", "kernel ops", "host syncs on CUDA", "step launches on CUDA"]
    body = table([*heads, "CUDA step"], rows)
    command = "python -m benchmarks.count_ops " + shlex.join(argv or sys.argv[1:])
    if args.no_record:
        print(body)
    else:
        append_results("Kernel ops per training step", torch.device("cpu"), body, command)


if __name__ == "__main__":
    main()
