"""Where a training step's time goes, measured before anything is optimised: for W-MSE 2
and W-MSE 4 (bench_train's settings), `--steps` training steps under torch.profiler, after
as many warm-up steps, print and record per step: wall ms (the steps end with a device
sync), host ms (the time the CPU takes to issue them, before that sync), kernels launched,
and the GPU's busy fraction (the union of its kernels' time over the wall time). A step
whose host ms is near its wall ms and whose GPU is far from busy is host-bound.

`--cuda_graph` (default auto) profiles the step as the training loop takes it: one CUDA graph
where it applies (the warm-up then includes its eager steps and the capture; `on` makes a
failed capture an error), else eager; the table's "step" column says which ran, and why.

On the CPU (a dry run) there are no GPU kernels: kernels are the aten ops the step runs
(`OpCounter`'s kernel ops), and the busy fraction is not defined.

    python -m benchmarks.profile_step [--device cuda] [--arch resnet18] [--steps 20]
        [--cuda_graph auto|on|off]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_train import SETTINGS
from benchmarks.common import append_results
from wsl_ray.config import Config
from wsl_ray.data import Augment
from wsl_ray.methods import get_method
from wsl_ray.training.device import OpCounter, resolve_device, setup_device
from wsl_ray.training.graph import WARMUP_STEPS, TrainStep, graph_fallback
from wsl_ray.training.optim import build_optimizer
from wsl_ray.utils.markdown import markdown_table as table

SIZE = 32  # CIFAR-10
PROFILED = ("W-MSE 2", "W-MSE 4")


def busy_fraction(prof: profile, wall_us: float) -> float:
    """The union of the GPU kernels' intervals over `wall_us`."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA
    )
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy / wall_us


def profile_setting(name: str, args: argparse.Namespace) -> list:
    """[setting, step, wall ms, host ms, kernels, GPU busy] per step of one setting ("step":
    "graph", or "eager: " and why)."""
    device = resolve_device(args.device)
    setup_device(device)
    cfg = Config(arch=args.arch, cuda_graph=args.cuda_graph, **SETTINGS[name])
    torch.manual_seed(0)
    model = get_method(cfg.method)(cfg, SIZE).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    eager_because = graph_fallback(cfg, model, device, 1)
    optimizer = build_optimizer(
        cfg.optimizer,
        model.parameters(),
        cfg.lr,
        cfg.adam_l2,
        fused=cuda,
        graph_ready=eager_because is None,
    )
    generator = torch.Generator(device).manual_seed(0)
    augment = Augment.from_config(cfg, SIZE, (0.5,) * 3, (0.25,) * 3, generator=generator)
    step = TrainStep(
        model, model, optimizer, augment, [generator], eager_because, args.cuda_graph == "on"
    )
    x = torch.randint(0, 256, (cfg.bs, 3, SIZE, SIZE), dtype=torch.uint8, device=device)
    sizes = torch.full((cfg.bs, 2), SIZE, device=device)

    def steps(n: int) -> None:
        for _ in range(n):
            step(x, sizes, 0.0)

    # warm-up: cuDNN autotuning, the optimiser's state, and a graph's eager steps and capture
    steps(max(args.steps, WARMUP_STEPS + 1) if eager_because is None else args.steps)
    if cuda:
        torch.cuda.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        steps(args.steps)
        issued = time.perf_counter()
        if cuda:
            torch.cuda.synchronize(device)
        done = time.perf_counter()
    wall_us = (done - start) * 1e6
    if cuda:
        kernels = sum(e.device_type == DeviceType.CUDA for e in prof.events()) / args.steps
        busy = f"{busy_fraction(prof, wall_us):.0%}"
    else:
        with OpCounter() as counter:
            steps(1)
        kernels, busy = counter.kernels, "n/a (CPU)"
    per_step = 1e3 / args.steps
    return [
        name,
        "graph" if step.eager_because is None else f"eager: {step.eager_because}",
        f"{(done - start) * per_step:.1f}",
        f"{(issued - start) * per_step:.1f}",
        f"{kernels:.0f}",
        busy,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--arch", default="resnet18", help="encoder (resnet18_w8 for a dry run)")
    parser.add_argument("--steps", type=int, default=20, help="steps profiled (and warm-up)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=PROFILED)
    parser.add_argument(
        "--cuda_graph",
        default="auto",
        choices=("auto", "on", "off"),
        help="the step as one CUDA graph where it applies (on: a failed capture is an error)",
    )
    parser.add_argument("--no-record", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps} must be >= 1")
    if args.cuda_graph == "on" and resolve_device(args.device).type != "cuda":
        parser.error(f"--cuda_graph on needs a CUDA device (--device {args.device})")
    rows = [profile_setting(name, args) for name in args.settings]
    header = ["setting", "step", "wall ms/step", "host ms/step", "kernels/step", "GPU busy"]
    body = table(header, rows)
    command = "python -m benchmarks.profile_step " + shlex.join(argv or sys.argv[1:])
    if args.no_record:
        print(body)
    else:
        append_results("Profile of a training step", resolve_device(args.device), body, command)


if __name__ == "__main__":
    main()
