"""What the deferred Newton-Schulz check costs: a snapshot per step, and a failed step.

CW-RGP at `bench_train`'s CW-RGP 2 settings (bs 256, emb 512, w_size 64, groups 4, w_iter 4,
2 views, 32 x 32 uint8 batches), the ZCA on its CUDA path (Newton-Schulz, forced onto the
CPU here) and its check deferred (`training.deferred.DeferredCheck`). Timed per step: the
whole call, the state saved before the step (parameters, buffers and Adam's state copied
into preallocated buffers), and, for one step whose check is made to fail, the call that
finds the failure (restore, the failed step redone on the exact path, the next step redone,
then its own step). A second table times a snapshot alone for wider encoders (full resnet18:
its Adam state made by one step on zero gradients), whose steps take too long on a CPU.

    python -m benchmarks.bench_deferred [--arch resnet18_w8] [--steps 8] [--device cpu]
        [--snapshot_archs resnet18_w8 resnet18] [--no-record]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch

from benchmarks.bench_train import SETTINGS
from benchmarks.common import append_results
from wsl_ray.config import Config
from wsl_ray.data import Augment
from wsl_ray.methods import get_method, whitening
from wsl_ray.training import deferred
from wsl_ray.training.device import resolve_device
from wsl_ray.training.graph import TrainStep, default_generator
from wsl_ray.training.optim import build_optimizer
from wsl_ray.utils.markdown import markdown_table as table


def timed(device: torch.device, fn, *args) -> float:
    """Seconds fn(*args) takes, the device's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def parts(arch: str, device: torch.device):
    cfg = Config(arch=arch, **SETTINGS["CW-RGP 2"])
    torch.manual_seed(0)
    model = get_method(cfg.method)(cfg, 32).to(device)
    optimizer = build_optimizer(
        "adam", model.parameters(), 1e-3, 1e-6, fused=device.type == "cuda", graph_ready=True
    )
    return cfg, model, optimizer


def steps(arch: str, n: int, device: torch.device) -> list:
    """Times n deferred steps (the check of step n - 3 failing) and returns the table row."""
    cfg, model, optimizer = parts(arch, device)
    gen = torch.Generator(device).manual_seed(1)
    augment = Augment.from_config(cfg, 32, (0.5,) * 3, (0.25,) * 3, generator=gen)
    check = deferred.DeferredCheck(TrainStep(model, model, optimizer, augment), [gen], True)
    saves, real_save = [], deferred.Saved.save

    def timed_save(self, *args):
        saves.append(timed(device, real_save, self, *args))

    deferred.Saved.save = timed_save
    x = torch.randint(0, 256, (cfg.bs, 3, 32, 32), dtype=torch.uint8, device=device)
    sizes = torch.full((cfg.bs, 2), 32, device=device)
    calls, fail_at = [], n - 3
    try:
        for k in range(n):
            tol = whitening.NS_TOL[torch.float32]
            if k == fail_at:
                whitening.NS_TOL[torch.float32] = -1.0  # below any residual: the check fails
            calls.append(timed(device, check, x, sizes, 0.0, 1e-3))
            whitening.NS_TOL[torch.float32] = tol
            print(f"step {k}: {calls[-1]:.3f} s", flush=True)
        failures = check.finish()[1]
    finally:
        deferred.Saved.save = real_save
    assert failures == 1
    # calls 0 and 1 make the buffers and Adam's state; the failure shows at fail_at + 2
    normal = [c for k, c in enumerate(calls) if k >= 2 and k != fail_at + 2]
    normal_saves = saves[2 : fail_at + 2]  # before the failure (its redo saves again)
    step_s, save_s = statistics.median(normal), statistics.median(normal_saves)
    failure_s = calls[fail_at + 2] - step_s
    return [
        arch,
        f"{step_s:.3f}",
        f"{save_s * 1e3:.1f}",
        f"{save_s / step_s:.1%}",
        f"{failure_s:.3f}",
        f"{failure_s / step_s:.1f}",
    ]


def snapshot(arch: str, device: torch.device, repeats: int = 5) -> list:
    """Times saving and restoring the state of `arch`'s CW-RGP model with Adam's state."""
    _, model, optimizer = parts(arch, device)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # makes Adam's state
    saved, gens = deferred.Saved(device.type == "cuda"), [default_generator(device)]
    saved.save(model, optimizer, gens)  # allocates the buffers
    save = statistics.median(
        timed(device, saved.save, model, optimizer, gens) for _ in range(repeats)
    )
    restore = statistics.median(
        timed(device, saved.restore, model, optimizer, gens) for _ in range(repeats)
    )
    mb = sum(t.nbytes for t in saved.copies) / 2**20
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return [arch, f"{params:.2f}", f"{mb:.0f}", f"{save * 1e3:.1f}", f"{restore * 1e3:.1f}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_deferred", description=__doc__
    )
    parser.add_argument("--arch", default="resnet18_w8", help="the encoder of the timed steps")
    parser.add_argument("--steps", type=int, default=8, help="steps timed (at least 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--snapshot_archs", nargs="*", default=["resnet18_w8", "resnet18"])
    parser.add_argument("--no-record", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    if args.steps < 5:
        parser.error(
            f"--steps {args.steps}: at least 5 (two to warm up, a failure found two later)"
        )
    device = resolve_device(args.device)
    whitening.NS_DEVICES = (*whitening.NS_DEVICES, device.type)
    heads = ["encoder", "step s", "snapshot ms", "snapshot / step", "failure s", "failure / step"]
    body = table(heads, [steps(args.arch, args.steps, device)])
    heads = ["encoder", "parameters (M)", "saved MB", "save ms", "restore ms"]
    body += "\n\n" + table(heads, [snapshot(a, device) for a in args.snapshot_archs])
    command = "python -m benchmarks.bench_deferred " + shlex.join(argv or sys.argv[1:])
    if args.no_record:
        print(body)
    else:
        append_results("The deferred Newton-Schulz check, CW-RGP 2", device, body, command)


if __name__ == "__main__":
    main()
