"""Optimisers and schedules against the reference loops (W-MSE train.py, CW-RGP ImageNet)."""

import math

import pytest
import torch
from helpers import our_lrs, reference_lrs

from wsl_ray.config import Config
from wsl_ray.training.optim import LARS, base_lr, build_optimizer, learning_rate


def multistep(cfg):
    milestones = [cfg.epoch - d for d in cfg.drop]
    return lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, cfg.drop_gamma)


@pytest.mark.parametrize(
    "epoch, drop, iters",
    [
        (25, [50, 25], 40),  # milestones -25 and 0: 0 fires at construction, warm-up undoes it
        (8, [6, 2], 50),  # milestone 2 starts at iteration 100, inside the warm-up: lost
        (8, [3, 2], 100),  # milestones 5 and 6 start after the warm-up: both fire
        (4, [4, 4], 200),  # a doubled milestone at 0: both drops lost
    ],
)
def test_drops_at_epochs_inside_the_warmup_are_lost_as_in_the_reference(epoch, drop, iters):
    cfg = Config(epoch=epoch, lr=1e-3, drop=drop)
    assert our_lrs(cfg, iters) == pytest.approx(reference_lrs(cfg, iters, multistep(cfg)), rel=1e-9)


def test_a_drop_at_epoch_zero_without_warmup_applies_from_the_start():
    cfg = Config(epoch=25, lr=1e-3, drop=[50, 25], lr_warmup=False)
    assert our_lrs(cfg, 10)[0] == pytest.approx(2e-4)
    assert our_lrs(cfg, 10) == pytest.approx(reference_lrs(cfg, 10, multistep(cfg)), rel=1e-9)


def imagenet_reference_lrs(cfg, iters_per_epoch):
    """CW-RGP ImageNet/train.py: adjust_learning_rate each epoch, then lr_warmup each step."""
    init_lr = cfg.lr * cfg.bs / 256
    group, lrs = {}, []
    for epoch in range(cfg.epoch):
        group["lr"] = init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epoch))
        for i in range(iters_per_epoch):
            step = i + epoch * iters_per_epoch
            if step < 500:
                group["lr"] = init_lr * (step + 1) / 500
            lrs.append(group["lr"])
    return lrs


@pytest.mark.parametrize("iters", [150, 600])
def test_per_epoch_cosine_after_warmup_equals_the_imagenet_reference(iters):
    cfg = Config(epoch=12, lr=0.05, bs=512, lr_per_256=True, lr_step="cos_epoch")
    assert base_lr(cfg) == pytest.approx(0.1)
    ours, ref = our_lrs(cfg, iters), imagenet_reference_lrs(cfg, iters)
    assert ours == pytest.approx(ref, rel=1e-12)
    # with 150 iterations an epoch the warm-up ends inside epoch 3, which keeps the full lr
    assert learning_rate(cfg, 3.5, 525, 150) == pytest.approx(0.1)


def test_lars_rescales_each_gradient_as_larc_without_clipping():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))  # zero norm: plain SGD
    w0 = w.detach().clone()
    opt = LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.001)
    w.grad, b.grad = torch.randn_like(w), torch.randn_like(b)
    g, gb = w.grad.clone(), b.grad.clone()
    opt.step()
    trust = 0.001 * w0.norm() / (g.norm() + 0.1 * w0.norm() + 1e-8)
    assert torch.allclose(w, w0 - 0.5 * trust * (g + 0.1 * w0), rtol=1e-12)
    assert torch.allclose(b, -0.5 * gb, rtol=1e-12)
    assert opt.param_groups[0]["weight_decay"] == 0.1  # restored after the step


def test_build_optimizer_names():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer("sgd", params, 0.1, 1e-4, momentum=0.9)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["weight_decay"] == 1e-4
    assert type(build_optimizer("adam", params, 1e-3, 1e-6)) is torch.optim.Adam
    assert type(build_optimizer("lars", params, 0.1, 0.0)) is LARS
    adamw = build_optimizer("adamw", params, 1e-3, 5e-4)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 5e-4
    with pytest.raises(ValueError, match="--optimizer"):
        build_optimizer("rmsprop", params, 0.1, 0.0)


def test_adamw_decays_the_weights_apart_from_the_gradient():
    """AdamW's first step from zero moments: p <- p (1 - lr wd) - lr g / (|g| + eps), where
    Adam's coupled L2 would put wd p into the normalised gradient instead."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    p.grad = torch.tensor([0.5, 0.25], dtype=torch.float64)
    build_optimizer("adamw", [p], 0.1, 0.2).step()
    g = torch.tensor([0.5, 0.25], dtype=torch.float64)
    expected = torch.tensor([1.0, -2.0], dtype=torch.float64) * (1 - 0.1 * 0.2) - 0.1 * g / (
        g.abs() + 1e-8
    )
    assert torch.allclose(p.detach(), expected, rtol=1e-12)


def intl_reference_lr(base: float, step: int, warmup_steps: int, total_steps: int) -> float:
    """INTL's cifar/main.py adjust_learning_rate, re-derived."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    step -= warmup_steps
    q = 0.5 * (1 + math.cos(math.pi * (step + 1) / (total_steps - warmup_steps)))
    return base * q + base * 0.001 * (1 - q)


@pytest.mark.parametrize("bs, iters", [(256, 195), (128, 7)])
def test_warmup_epochs_and_the_per_iteration_cosine_equal_intl(bs, iters):
    cfg = Config(
        lr=0.3, bs=bs, lr_per_256=True, epoch=10, lr_step="cos_step", warmup_epochs=2,
        eta_min=0.3 * bs / 256 * 0.001,
    )  # fmt: skip
    base = 0.3 * bs / 256
    for i in range(10 * iters):
        got = learning_rate(cfg, i / iters, i, iters)
        assert got == pytest.approx(intl_reference_lr(base, i, 2 * iters, 10 * iters)), i
    assert learning_rate(cfg, 10 - 1 / iters, 10 * iters - 1, iters) == pytest.approx(base / 1000)
