"""Newton-Schulz steps that CW-RGP's real group matrices need to reach the ZCA check's residual.

A short CW-RGP run (CIFAR-10 2 settings of `bench_train`: bs 256, emb 512, w_size 64, groups
4, w_iter 4, 2 views; resnet18_w8 on the CPU) records the group covariances S that its ZCA
whitens (128 matrices of 64 x 64 per step) every `--every` steps. For each recorded S (float32,
as in training) the smallest k with max |W_k S W_k - I| <= NS_TOL (1e-3) is found, W_k the
k-step Newton-Schulz matrix (`whitening.newton_schulz`). The table gives, per recorded step,
the largest k over its matrices, and the range of their condition numbers.

    python -m benchmarks.ns_steps --data_dir DIR [--steps 300] [--every 25] [--no-record]
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from benchmarks.bench_train import SETTINGS
from benchmarks.common import append_results
from wsl_ray.config import Config
from wsl_ray.data import Augment, iterate_batches, load_dataset
from wsl_ray.methods import whitening
from wsl_ray.training.loop import initial_model, train_step
from wsl_ray.training.optim import base_lr, build_optimizer
from wsl_ray.utils.markdown import markdown_table as table

MAX_STEPS = 40


def steps_to_tolerance(S: torch.Tensor, tol: float, most: int = MAX_STEPS) -> torch.Tensor:
    """Per slice of S [..., p, p]: the fewest Newton-Schulz steps whose residual is <= tol
    (most + 1 where none up to `most` reaches it)."""
    needed = torch.full(S.shape[:-2], most + 1)
    for k in range(most, 0, -1):
        _, residual = whitening.newton_schulz(S, k)
        needed = torch.where(residual <= tol, k, needed)
    return needed


def record(cfg: Config, steps: int, every: int) -> dict[int, torch.Tensor]:
    """Trains cfg for `steps` steps; returns the ZCA's group covariances at every `every`th."""
    data = load_dataset(cfg.dataset, cfg.data_dir).subset(cfg.subset)
    model = initial_model(cfg, data.crop_size, torch.device("cpu"))
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), base_lr(cfg), cfg.adam_l2)
    augment = Augment.from_config(
        cfg, data.crop_size, data.mean, data.std, data.blur, torch.Generator().manual_seed(0)
    )
    seen: dict[int, list[torch.Tensor]] = {}
    exact, step = whitening.zca_matrix, 0

    def recording(S: torch.Tensor) -> torch.Tensor:
        if step % every == every - 1:
            seen.setdefault(step + 1, []).append(S.detach().float().reshape(-1, *S.shape[-2:]))
        return exact(S)

    whitening.zca_matrix = recording
    gen = torch.Generator().manual_seed(cfg.seed)
    try:
        while step < steps:
            batches = iterate_batches(
                data.train_x, data.train_y, cfg.bs, generator=gen, with_sizes=True
            )
            for x, _, sizes in batches:
                if step == steps:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = base_lr(cfg) * min(1.0, (step + 1) / 500)  # the warm-up
                train_step(model, model, optimizer, augment, x, sizes, 0.0)
                step += 1
                if step % every == 0:
                    print(f"step {step}", flush=True)
    finally:
        whitening.zca_matrix = exact
    return {k: torch.cat(v) for k, v in seen.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ns_steps", description=__doc__)
    parser.add_argument("--data_dir", required=True, help="holds cifar-10-batches-py/")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--no-record", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    cfg = Config(
        dataset="cifar10", data_dir=args.data_dir, arch="resnet18_w8", **SETTINGS["CW-RGP 2"]
    )
    tol = whitening.NS_TOL[torch.float32]
    rows = []
    for step, S in record(cfg, args.steps, args.every).items():
        needed = steps_to_tolerance(S, tol)
        eig = torch.linalg.eigvalsh(S.double())
        kappa = eig[..., -1] / eig[..., 0].clamp_min(1e-300)
        rows.append(
            [
                step,
                S.shape[0],
                int(needed.median()),
                int(needed.max()),
                f"{kappa.min():.1e} - {kappa.max():.1e}",
            ]
        )
        print(rows[-1], flush=True)
    heads = ["step", "matrices", "median steps", "most steps", "condition numbers"]
    body = table(heads, rows)
    command = "python -m benchmarks.ns_steps " + shlex.join(argv or sys.argv[1:])
    if args.no_record:
        print(body)
    else:
        title = f"Newton-Schulz steps to a {tol:g} residual, CW-RGP on CIFAR-10 (JPEG copy)"
        append_results(title, torch.device("cpu"), body, command)


if __name__ == "__main__":
    main()
