"""The first GPU stage: do the captures the training step relies on work on this torch?

1. W-MSE's whitening in a CUDA graph, standalone: batched `torch.linalg.cholesky_ex` and
   `solve_triangular` on a [48, 64, 64] batch of covariances, captured, replayed on new
   inputs under `torch.cuda.set_sync_debug_mode("error")` (which raises on any host sync)
   and compared with the same calls run eagerly.
2. The fallback after a failed capture (`training.graph.TrainStep`, --cuda_graph auto): a
   W-MSE step whose augmentation reads a device value on the host during the capture. The
   capture must fail, its generators be restored (torch 2.11 leaves them "capturing":
   pytorch#171263), the step be redone eagerly and the next steps run eagerly, drawing
   random numbers, with finite losses.

Each check prints one line; results are appended to BENCHMARKS.md (or WSL_RAY_BENCHMARKS_MD).
Without CUDA it prints that it skips and exits 0. tests/test_gpu.py runs both checks too.

    python -m benchmarks.capture_check [--device cuda[:N]]
"""

from __future__ import annotations

import argparse
import math

import torch

from benchmarks.common import append_results
from wsl_ray.config import Config
from wsl_ray.data import Augment
from wsl_ray.methods import get_method
from wsl_ray.training.device import resolve_device
from wsl_ray.training.graph import WARMUP_STEPS, TrainStep, capturing_into, on_side_stream
from wsl_ray.training.optim import build_optimizer

BATCH, N, D = 48, 128, 64  # 48 covariances of 64 x 64, each of 128 samples


def covariances(device: torch.device, seed: int) -> torch.Tensor:
    """[BATCH, D, D] positive definite sample covariances."""
    x = torch.randn(BATCH, N, D, device=device, generator=torch.Generator(device).manual_seed(seed))
    x = x - x.mean(1, keepdim=True)
    return x.mT @ x / (N - 1)


def check_cholesky_capture(device: torch.device) -> str:
    """Captures W = L^-1 (L = cholesky(cov)) for a [48, 64, 64] batch, replays it on new
    covariances under sync-debug "error" and compares with eager; raises AssertionError on a
    difference. Returns the line it prints."""
    static = covariances(device, 0)
    eye = torch.eye(D, device=device).expand(BATCH, D, D)

    def whiten() -> tuple[torch.Tensor, torch.Tensor]:
        L, info = torch.linalg.cholesky_ex(static)
        return torch.linalg.solve_triangular(L, eye, upper=False), info

    on_side_stream(lambda: whiten()[0])  # cuSOLVER's and cuBLAS's handles and workspaces
    graph = torch.cuda.CUDAGraph()
    with capturing_into(graph):
        W, info = whiten()
    static.copy_(covariances(device, 1))
    torch.cuda.set_sync_debug_mode("error")
    try:
        graph.replay()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    W_eager, info_eager = whiten()
    error = ((W - W_eager).abs().max() / W_eager.abs().max()).item()
    assert torch.equal(info, info_eager) and not info.any(), (info, info_eager)
    assert error < 1e-5, f"replayed W differs from eager by {error:.2e} (relative)"
    line = f"cholesky_ex + solve_triangular [{BATCH}, {D}, {D}]: captured, replayed without a "
    line += f"sync, max relative difference to eager {error:.1e}"
    print(line, flush=True)
    return line


def check_failed_capture_fallback(device: torch.device) -> str:
    """A W-MSE step whose capture fails (a host read of a device value in it), then
    WARMUP_STEPS + 3 steps in all: asserts the step fell back to eager steps with finite
    losses. Returns the line it prints (with the cause the step recorded)."""
    cfg = Config(arch="resnet18_w8", bs=64, emb=16, w_size=32, head_size=64)
    torch.manual_seed(0)
    model = get_method("w_mse")(cfg, 32).to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(
        "adam", model.parameters(), 1e-3, 1e-6, fused=True, graph_ready=True
    )
    generator = torch.Generator(device).manual_seed(1)
    augment = Augment.from_config(
        cfg, 32, (0.5,) * 3, (0.25,) * 3, generator=generator, channels_last=True
    )

    def syncing_augment(x: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
        views = augment(x, sizes)  # draws first: the restore must put the generator back
        if torch.cuda.is_current_stream_capturing():
            views[0].sum().item()  # a host read: the capture fails here
        return views

    step = TrainStep(model, model, optimizer, syncing_augment, [generator], eager_because=None)
    x = torch.randint(0, 256, (cfg.bs, 3, 32, 32), dtype=torch.uint8, device=device)
    sizes = torch.full((cfg.bs, 2), 32, device=device)
    losses = [step(x, sizes, 0.0).item() for _ in range(WARMUP_STEPS + 3)]
    assert step.graph is None and step.eager_because is not None, step.eager_because
    assert step.eager_because.startswith("the capture failed"), step.eager_because
    assert all(map(math.isfinite, losses)), losses
    line = f"failed capture: fell back to eager steps, losses finite ({step.eager_because})"
    print(line, flush=True)
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capture_check", description=__doc__)
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"capture_check: skipped: no CUDA device here (torch {torch.__version__})")
        return
    device = resolve_device(args.device)
    if device.type != "cuda":
        parser.error(f"--device {args.device}: the capture check needs a CUDA device")
    lines = [check_cholesky_capture(device), check_failed_capture_fallback(device)]
    body = "\n".join(f"- {line}" for line in lines)
    append_results("CUDA-graph capture check", device, body, "python -m benchmarks.capture_check")


if __name__ == "__main__":
    main()
