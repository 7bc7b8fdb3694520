"""The deferred Newton-Schulz check (`training.deferred`), proven on the CPU with the ZCA
forced onto its CUDA path: a failed check redoes its step on the exact path from the state
saved before it, and a run without failures is today's loop, bitwise in float64."""

import json

import pytest
import torch
from helpers import tiny_config

from wsl_ray.config import Config
from wsl_ray.data import Augment, load_dataset
from wsl_ray.methods import get_method, whitening
from wsl_ray.training.deferred import DeferredCheck, defers
from wsl_ray.training.graph import TrainStep
from wsl_ray.training.loop import train
from wsl_ray.training.optim import build_optimizer, set_lr

# CW-RGP with its covariance term switched off after epoch 1's first step (host state that a
# redone step must put back), in float64 over two epochs of two steps
CFG = Config(
    method="cw_rgp",
    arch="resnet18_w8",
    bs=16,
    emb=32,
    w_size=8,
    groups=2,
    head_size=16,
    epoch=2,
    cov_w=0.5,
    cov_stop=1,
)
LRS, PROGRESSES = [1e-3, 2e-3, 3e-3, 1e-3], [0.0, 0.0, 0.5, 0.5]


@pytest.fixture(autouse=True)
def newton_schulz_on_the_cpu(monkeypatch):
    monkeypatch.setattr(whitening, "NS_DEVICES", ("cpu", "cuda"))


def batches():
    gen = torch.Generator().manual_seed(1)
    return [
        (
            torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen),
            torch.full((16, 2), 16),
        )
        for _ in LRS
    ]


def run(deferred: bool, fail_at: int | None, monkeypatch) -> tuple[dict, int]:
    """Four float64 steps from the same start; at step `fail_at` every group's check fails
    (NS_TOL below any residual). Without `deferred`: today's loop, the check read per call
    (the failed step takes the exact path for every group). Returns the state dict and the
    failures the deferred check counted."""
    torch.manual_seed(0)
    model = get_method(CFG.method)(CFG, 16).double()
    optimizer = build_optimizer("adam", model.parameters(), 1e-3, 1e-6, graph_ready=True)
    augment = Augment.from_config(
        CFG, 16, (0.5,) * 3, (0.25,) * 3, generator=torch.Generator().manual_seed(2)
    )
    step = TrainStep(model, model, optimizer, lambda x, s: [v.double() for v in augment(x, s)])
    check = DeferredCheck(step, [augment.generator], deferred)
    torch.manual_seed(3)  # the whitening's sub-batches and groups
    for n, ((x, sizes), lr, progress) in enumerate(zip(batches(), LRS, PROGRESSES, strict=True)):
        with monkeypatch.context() as patch:
            if n == fail_at:
                patch.setitem(whitening.NS_TOL, torch.float64, -1.0)
            if deferred:
                check(x, sizes, progress, lr)
            else:
                set_lr(optimizer, lr)
                step(x, sizes, progress)
    failures = check.finish()[1]
    return {k: v.clone() for k, v in model.state_dict().items()}, failures


def differing(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("fail_at", [None, 0, 1, 2])
def test_a_failed_check_redoes_its_step_on_the_exact_path(fail_at, monkeypatch):
    """Failures found at the launch of step fail_at + 2 (0: before the optimiser had state;
    1: mid-run, step 2 redone after it) or at `finish` (2: its redo puts the covariance
    switch back). The deferred run equals, bitwise, today's loop with the exact path at
    that step; without a failure, today's loop itself."""
    ours, failures = run(True, fail_at, monkeypatch)
    theirs, _ = run(False, fail_at, monkeypatch)
    assert failures == (fail_at is not None)
    assert differing(ours, theirs) == []


def test_the_injected_failure_changes_the_run(monkeypatch):
    """The exact path's step differs from the iteration's (else the test above proves
    nothing about which path the redone step took)."""
    assert differing(run(False, 1, monkeypatch)[0], run(False, None, monkeypatch)[0]) != []


def test_saves_and_restores_copy_once_per_dtype(monkeypatch):
    """The snapshot's copies go through `torch._foreach_copy_` one dtype at a time (a call
    over float64 weights and int64 `num_batches_tracked` together would take PyTorch's
    per-tensor path): every call is one dtype and device, and both dtypes were copied, in
    saves and in the restore of a failed step (Adam's float32 step counts are a third)."""
    real, calls = torch._foreach_copy_, []

    def recording(targets, sources):
        calls.append({(t.dtype, t.device) for t in [*targets, *sources]})
        return real(targets, sources)

    monkeypatch.setattr(torch, "_foreach_copy_", recording)
    assert run(True, 1, monkeypatch)[1] == 1  # one failed step: a restore ran
    assert calls and all(len(kinds) == 1 for kinds in calls), calls
    assert {torch.float64, torch.int64} <= {dtype for kinds in calls for dtype, _ in kinds}


def test_only_zca_on_a_newton_schulz_device_with_one_worker_defers():
    cpu = torch.device("cpu")
    cw_rgp, w_mse = get_method("cw_rgp")(CFG, 16), get_method("w_mse")(Config(), 16)
    assert defers(cw_rgp, cpu, 1) and not defers(cw_rgp, cpu, 2) and not defers(w_mse, cpu, 1)


def test_the_run_counts_its_failed_steps(tmp_path, monkeypatch):
    """A CW-RGP run through `train`, whose third Newton-Schulz call fails: epoch 1's
    metrics count one failed step, epoch 2's none, and the loss stays finite."""
    real, calls = whitening.newton_schulz, []

    def third_fails(S, iters=whitening.NS_ITERS):
        W, residual = real(S, iters)
        calls.append(None)
        return W, residual + (float("inf") if len(calls) == 3 else 0.0)

    monkeypatch.setattr(whitening, "newton_schulz", third_fails)
    data = load_dataset("shapes", num_train=128, num_test=32)
    cfg = tiny_config(tmp_path, method="cw_rgp", emb=32, w_size=8, groups=2, epoch=2, bs=32)
    train(cfg, data=data, progress=False)
    history = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["whiten_ns_failures"] for m in history] == [1, 0]
    assert len(calls) == 2 * 4 + 1  # one call per step, the failed step's redo exact
