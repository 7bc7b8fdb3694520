"""Speed of the whitening losses at the papers' settings, forward and backward, on one device.

    python -m benchmarks.bench_whiten [--device cpu] [--repeats 10] [--label after]

Rows: CW-RGP 2 as in the paper's CIFAR-10 script (bs 256, emb 512, w_size 64, groups 4,
w_iter 4, 2 views) and W-MSE 2 (bs 512, emb 64, w_size 128, 2 views), float32; then the ZCA
matrix alone for CW-RGP 2's 128 group covariances of 64 x 64 per step, by the exact float64
eigh and by the Newton-Schulz iteration. Each time is the median of `--repeats` calls after
one warm-up call; the result is printed as a table and appended to BENCHMARKS.md with the
date and the hardware.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from wsl_ray.methods.losses import cwrgp_loss, wmse_loss
from wsl_ray.utils.markdown import markdown_table as table

from .common import append_results

SETTINGS = {
    "CW-RGP 2 (bs 256, emb 512, w_size 64, groups 4, w_iter 4)": (
        256,
        512,
        lambda v: cwrgp_loss(v, w_size=64, groups=4, w_iter=4),
    ),
    "W-MSE 2 (bs 512, emb 64, w_size 128)": (512, 64, lambda v: wmse_loss(v, w_size=128)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loss(
    loss_f, bs: int, emb: int, device: torch.device, repeats: int, inputs: list | None = None
) -> tuple[float, float, float]:
    """Median seconds of (forward, forward + backward, process CPU time of both) of loss_f on
    2 random correlated views [bs, emb] (or on `inputs`); the backward is of the output's sum.
    The CPU time is what to compare on a shared machine, where wall times vary with load."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(bs, emb, generator=g)
    views = inputs or [
        (base + 0.5 * torch.randn(bs, emb, generator=g)).to(device) for _ in range(2)
    ]
    fwd, both, cpu = [], [], []
    for i in range(repeats + 1):
        leaves = [v.clone().requires_grad_() for v in views]
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = loss_f(leaves)
        _sync(device)
        t1 = time.perf_counter()
        loss.sum().backward()
        _sync(device)
        t2, c2 = time.perf_counter(), time.process_time()
        if i:  # the first call is the warm-up
            fwd.append(t1 - t0)
            both.append(t2 - t0)
            cpu.append(c2 - c0)
    return statistics.median(fwd), statistics.median(both), statistics.median(cpu)


def time_zca(device: torch.device, repeats: int) -> dict[str, tuple[float, float, float]]:
    """CW-RGP 2's per-step ZCA work: 2 views x 4 iterations x 4 sub-batches x 4 groups."""
    from wsl_ray.methods import whitening

    if not hasattr(whitening, "newton_schulz"):  # the code before the iteration
        return {}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 64, 128, generator=g)
    x = x - x.mean(-1, keepdim=True)
    S = (x @ x.mT / 127).to(device)
    fns = {
        "ZCA matrix, exact (float64 eigh)": whitening.zca_exact,
        "ZCA matrix, Newton-Schulz (float32)": lambda s: whitening.newton_schulz(s)[0],
    }
    return {
        name: time_loss(lambda v, f=f: f(v[0]), 0, 0, device, repeats, inputs=[S])
        for name, f in fns.items()
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--label", default="", help="a word for the code version, e.g. before/after")
    p.add_argument("--no-append", action="store_true", help="print only")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for name, (bs, emb, loss_f) in SETTINGS.items():
        rows.append([name, args.label, *time_loss(loss_f, bs, emb, device, args.repeats)])
    rows += [[name, args.label, *t] for name, t in time_zca(device, args.repeats).items()]
    rows = [[*row[:2], *(f"{t * 1e3:.1f}" for t in row[2:])] for row in rows]
    header = ["what (float32 input)", "code", "forward ms", "fwd + bwd ms", "fwd + bwd CPU ms"]
    body = table(header, rows) + f"\n\nLoad average while measuring: {os.getloadavg()[0]:.1f}."
    if args.no_append:
        print(body)
    else:
        command = "python -m benchmarks.bench_whiten " + " ".join(argv or sys.argv[1:])
        append_results("Whitening losses", device, body, command.strip())


if __name__ == "__main__":
    main()
