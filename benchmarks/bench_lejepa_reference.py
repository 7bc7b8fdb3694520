"""Our SIGReg and LeJEPA loss against the reference repository's own functions, on the same
random projections and the same slice directions: the largest differences of the values and
of the gradients.

The reference is not part of this repository. Fetch it into a git-ignored folder (gpu_ref/):

    # the fetch tool (source github:rbalestr-lab/lejepa) gives a bare git dir, e.g.
    # /work/.mirror/rbalestr-lab+lejepa/repo; extract a plain work tree from it:
    mkdir -p gpu_ref/lejepa
    git --git-dir=/work/.mirror/rbalestr-lab+lejepa/repo archive HEAD | tar -x -C gpu_ref/lejepa
    python -m benchmarks.bench_lejepa_reference --ref_dir gpu_ref/lejepa

The reference's `lejepa.univariate.EppsPulley(t_max, n_points)` inside its
`lejepa.multivariate.SlicingUnivariateTest(..., num_slices=K, reduction="mean")` runs,
imported from --ref_dir (its `moments.py` imports scipy at the top; where scipy is missing a
stub module stands in, as nothing here calls it). Its LeJEPA loss is MINIMAL.md's line,
    sigreg(proj) * lamb + (proj.mean(0) - proj).square().mean() * (1 - lamb),
on projections proj: [V, N, D]. The slicing module draws its directions itself, from a
generator seeded with its `global_step` buffer: we set that buffer to the case's seed and give
ours `sigreg_directions(D, K, torch.Generator().manual_seed(seed))`, so the same draw, and also
check that the two sets of directions are equal by giving the reference's univariate test
our directions' projections. Float64 cases run with float64 as the default dtype (the
reference draws its directions in the default dtype and casts its buffers with the module).
Each case is one random [V, N, D] projection (a Gaussian scaled per column, shifted, and
cubed in part, so that it is far from an isotropic Gaussian) and the gradients are
d loss / d proj.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.common import append_results
from wsl_ray.methods.losses import epps_pulley, lejepa_loss, sigreg, sigreg_directions
from wsl_ray.utils.markdown import markdown_table

# (V, N, D, K slices, points, t_max): MINIMAL.md's SIGReg (256 slices, 17 nodes on [0, 3]),
# the README's 1024 slices, and the ablation scripts' other t_max and node counts
CASES = [
    (2, 128, 64, 256, 17, 3.0),
    (4, 256, 512, 1024, 17, 3.0),
    (4, 64, 16, 256, 41, 5.0),
    (8, 32, 128, 512, 5, 1.0),
]
LAMBDA = 0.05
HOW_TO_GET = (
    "get it with the fetch tool (source github:rbalestr-lab/lejepa), then: mkdir -p {d} && "
    "git --git-dir=/work/.mirror/rbalestr-lab+lejepa/repo archive HEAD | tar -x -C {d}"
)


def load_reference(ref_dir: Path) -> types.ModuleType:
    """The reference's `lejepa` package from ref_dir (scipy stubbed where it is missing)."""
    if not (ref_dir / "lejepa" / "univariate" / "epps_pulley.py").exists():
        raise SystemExit(f"no reference at {ref_dir}: " + HOW_TO_GET.format(d=ref_dir))
    if importlib.util.find_spec("scipy") is None:
        for name in ("scipy", "scipy.stats", "scipy.integrate"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["scipy.stats"].norm = None  # moments.py's import; never called here
    sys.path.insert(0, str(ref_dir))
    lejepa = importlib.import_module("lejepa")
    if not Path(lejepa.__file__).resolve().is_relative_to(ref_dir.resolve()):
        raise RuntimeError(f"lejepa was imported from {lejepa.__file__}")
    return lejepa


@contextmanager
def default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def projections(v: int, n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(v, n, d, generator=g, dtype=torch.float64)
    z = z * torch.linspace(0.3, 2.0, d, dtype=torch.float64) + 0.2
    z[..., : d // 4] = z[..., : d // 4] ** 3 / 3  # heavy tails in a quarter of the columns
    return z.to(dtype)


def with_exact_nodes(univariate: torch.nn.Module, t_max: float, points: int) -> torch.nn.Module:
    """The reference's EppsPulley with its buffers (t, phi, weights), which its __init__
    always computes in float32, recomputed by the same formulas in float64: t = linspace(0,
    t_max, points), weights 2 dt inside and dt at both ends, times phi = exp(-t^2 / 2)."""
    t = torch.linspace(0, t_max, points, dtype=torch.float64)
    dt = t_max / (points - 1)
    weights = torch.full((points,), 2 * dt, dtype=torch.float64)
    weights[0] = weights[-1] = dt
    phi = (-0.5 * t * t).exp()
    exact = type(univariate)(t_max=t_max, n_points=points)
    exact.t, exact.phi, exact.weights = t, phi, weights * phi
    return exact


def compare(lejepa, case: tuple, dtype: torch.dtype, seed: int) -> dict[str, float]:
    v, n, d, k, points, t_max = case
    z = projections(v, n, d, dtype, seed)
    with default_dtype(dtype):
        univariate = lejepa.univariate.EppsPulley(t_max=t_max, n_points=points).to(dtype)
        slicing = lejepa.multivariate.SlicingUnivariateTest(univariate, num_slices=k)
        slicing.global_step.fill_(seed)
        ref_z = z.clone().requires_grad_()
        ref_sig = slicing(ref_z)
        ref_loss = ref_sig * LAMBDA + (ref_z.mean(0) - ref_z).square().mean() * (1 - LAMBDA)
        (ref_grad,) = torch.autograd.grad(ref_loss, ref_z)
    a = sigreg_directions(d, k, torch.Generator().manual_seed(seed), dtype=dtype)
    our_z = z.clone().requires_grad_()
    our_sig = sigreg(our_z, a, t_max, points)
    our_loss = lejepa_loss(list(our_z), LAMBDA, a, t_max, points)
    (our_grad,) = torch.autograd.grad(our_loss, our_z)
    # the univariate statistics on the same projections (our directions given to both),
    # and with the reference's nodes and weights made in float64 instead of float32
    per_slice = univariate(z @ a)
    ours_per_slice = epps_pulley(z @ a, t_max, points)
    exact_per_slice = with_exact_nodes(univariate, t_max, points)(z @ a)

    def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
        return float((x - ref).abs().max() / ref.abs().max())

    return {
        "sigreg": float(ref_sig.detach()),
        "sigreg rel": rel(our_sig.detach(), ref_sig.detach()),
        "per-slice rel": rel(ours_per_slice, per_slice.detach()),
        "exact-nodes rel": rel(ours_per_slice, exact_per_slice.detach()),
        "loss rel": rel(our_loss.detach(), ref_loss.detach()),
        "grad rel": rel(our_grad, ref_grad),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref_dir", type=Path, default=Path("gpu_ref/lejepa"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ref_commit", default="unknown", help="the reference's commit, for the record")
    p.add_argument("--no_record", action="store_true", help="print only, no BENCHMARKS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    lejepa = load_reference(args.ref_dir)
    rows, worst = [], {torch.float64: 0.0, torch.float32: 0.0}
    for dtype in (torch.float64, torch.float32):
        for case in CASES:
            results = [compare(lejepa, case, dtype, seed) for seed in range(args.seeds)]
            cols = ("sigreg rel", "per-slice rel", "exact-nodes rel", "loss rel", "grad rel")
            top = {c: max(r[c] for r in results) for c in cols}
            worst[dtype] = max(worst[dtype], *top.values())
            v, n, d, k, points, t_max = case
            rows.append(
                [str(dtype).removeprefix("torch."), f"{v} x {n} x {d}", k, points, t_max]
                + [f"{results[0]['sigreg']:.4g}"]
                + [f"{top[c]:.1e}" for c in cols]
            )
    header = ["dtype", "V x N x D", "slices", "points", "t_max", "SIGReg (seed 0)"]
    header += ["SIGReg", "per slice", "per slice, float64 nodes", "LeJEPA loss", "gradient"]
    body = (
        markdown_table(header, rows)
        + f"\n\nRelative differences, max |ours - reference| / max |reference|, the largest over "
        f"{args.seeds} seeds per case: {worst[torch.float64]:.1e} in float64, "
        f"{worst[torch.float32]:.1e} in float32 (reference: rbalestr-lab/lejepa at "
        f"{args.ref_commit}; LeJEPA loss with lambda {LAMBDA}). In float64 the difference is "
        "the reference's integration nodes and weights, which it always builds in float32: "
        "with them built in float64 by its formulas (the column 'float64 nodes'), the "
        "statistics agree to rounding."
    )
    command = "python -m benchmarks.bench_lejepa_reference " + shlex.join(argv or sys.argv[1:])
    if args.no_record:
        print(body)
    else:
        title = "LeJEPA's SIGReg against the reference's functions"
        append_results(title, torch.device("cpu"), body, command.strip())


if __name__ == "__main__":
    main()
