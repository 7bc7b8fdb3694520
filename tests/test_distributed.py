"""--whiten_global, --global_negatives and INTL: 2 DDP workers equal one process on the full
batch.

Two gloo processes on CPU (plain torch.distributed, no Ray) each take half of a fixed float64
batch; the models are in eval mode so that BatchNorm uses the same (running) statistics on
every rank. The loss each rank reports and the gradients after DDP's all-reduce must equal a
single process's on the whole batch. One spawn runs every case.
"""

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from wsl_ray.config import Config
from wsl_ray.methods import get_method

WORLD, BS, IMAGE = 2, 64, 8
SMALL = dict(arch="resnet18_w8", head_size=16, bs=BS)
CASES = {
    "w_mse": dict(method="w_mse", emb=8, w_size=16, w_iter=2, whiten_global=True),
    # The CW-RGP study's methods zero-init residual BNs by default, which leaves the blocks'
    # convs without a gradient at the first step: every parameter's gradient is compared here
    "cw_rgp": dict(
        method="cw_rgp", emb=32, w_size=8, groups=2, whiten_global=True, zero_init_residual=False
    ),
    "whitened_mse": dict(
        method="whitened_mse",
        emb=8,
        w_size=64,
        w_matrix="zca",
        groups=2,
        w_random_groups=True,
        whiten_global=True,
        zero_init_residual=False,
    ),
    "contrastive": dict(method="contrastive", emb=8, global_negatives=True),
    # INTL always whitens the global batch, as its reference's all-gather; INTL-M's target too
    "intl": dict(method="intl", emb=8),
    "intl_m": dict(method="intl", emb=8, intl_m=0.99),
    "w_mse_local": dict(method="w_mse", emb=8, w_size=16, w_iter=2),  # each rank on its own
}


def build(case: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = Config(**SMALL, **CASES[case])
    return get_method(cfg.method)(cfg, IMAGE).double().eval()


def fixed_views() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(BS, 3, IMAGE, IMAGE, generator=gen, dtype=torch.float64)
    return [images + 0.3 * torch.randn(images.shape, generator=gen, dtype=images.dtype)]


def loss_and_grads(model: torch.nn.Module, views: list[torch.Tensor]) -> dict:
    net = model if not dist.is_initialized() else DistributedDataParallel(model)
    loss = net(views)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}  # no EMA target
    return {"loss": loss.item(), "grads": grads}


def worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    n = BS // WORLD
    images = fixed_views()[0]
    views = [images[rank * n : (rank + 1) * n], images.flip(-1)[rank * n : (rank + 1) * n]]
    results = {case: loss_and_grads(build(case), views) for case in CASES}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(str(Path(tmp) / "init"), tmp), nprocs=WORLD)
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def one_process(case: str) -> dict:
    images = fixed_views()[0]
    return loss_and_grads(build(case), [images, images.flip(-1)])


@pytest.mark.parametrize("case", [c for c in CASES if not c.endswith("_local")])
def test_two_workers_equal_one_process_on_the_whole_batch(two_workers, case):
    expected = one_process(case)
    for rank in range(WORLD):
        got = two_workers[rank][case]
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5, abs=1e-7), rank
        for name, grad in expected["grads"].items():
            assert grad is not None and grad.abs().sum() > 0, name
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-5, atol=1e-7)


def test_without_the_global_batch_the_workers_differ_from_one_process(two_workers):
    """The check above can fail: whitening each rank's half alone gives other gradients."""
    expected = one_process("w_mse_local")["grads"]
    got = two_workers[0]["w_mse_local"]["grads"]
    assert not all(torch.allclose(got[n], g, rtol=1e-3) for n, g in expected.items())
