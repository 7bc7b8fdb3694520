"""The optimiser and the learning-rate schedule of a run.

The learning rate is a pure function of the iteration (`learning_rate`), so a resumed run
needs no scheduler state. It reproduces the reference loops, including how their warm-up
interacts with the epoch schedules: the warm-up writes the lr at each of its iterations,
so a change that a schedule makes at the start of an epoch inside the warm-up is lost
(MultiStepLR's drops are relative, so a lost drop stays lost; the per-epoch cosine is
absolute, so it is back at the next epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..config import Config

WARMUP_ITERS = 500


def base_lr(cfg: Config) -> float:
    """The optimiser's peak lr: --lr, times bs / 256 with --lr_per_256 (the ImageNet rule)."""
    return cfg.lr * cfg.bs / 256 if cfg.lr_per_256 else cfg.lr


def cosine(lr: float, done: float, length: float, floor: float = 0.0) -> float:
    """The cosine annealing from `lr` (at 0) to `floor` (at `length`), at `done`:
    floor + (lr - floor) (1 + cos(pi done / length)) / 2."""
    return floor + (lr - floor) * (1 + math.cos(math.pi * done / length)) / 2


def _cosine_warm_restarts(cfg: Config, lr: float, epoch: float) -> float:
    """CosineAnnealingWarmRestarts(T_0 = T0 or epoch, T_mult, eta_min) at a fractional epoch."""
    t0 = cfg.T0 or cfg.epoch
    if cfg.Tmult == 1:
        t_cur, t_i = epoch % t0, t0
    else:
        n = int(math.log(epoch / t0 * (cfg.Tmult - 1) + 1, cfg.Tmult))
        t_cur = epoch - t0 * (cfg.Tmult**n - 1) / (cfg.Tmult - 1)
        t_i = t0 * cfg.Tmult**n
    return cosine(lr, t_cur, t_i, cfg.eta_min)


def learning_rate(cfg: Config, epoch: float, iteration: int, iters_per_epoch: int) -> float:
    """The reference's lr at global iteration `iteration` (0-based), in fractional `epoch`.

    With lr = base_lr(cfg):
    warm-up: lr (iteration + 1) / w for the first w iterations, w = 500 or --warmup_epochs
             x iters_per_epoch (none with --no_lr_warmup);
    then step: lr * drop_gamma ** (number of milestones m = epoch - drop[i] reached), where
               MultiStepLR never reaches m < 0 and the warm-up overwrites (loses) the drops
               at epochs that start inside it, m = 0 included;
          cos:  cosine annealing with warm restarts at the fractional epoch (W-MSE);
          cos_epoch: lr (1 + cos(pi e / epochs)) / 2 at integer epoch e (CW-RGP ImageNet);
               lr itself for the rest of an epoch that started inside the warm-up;
          cos_step: eta_min + (lr - eta_min) q, q = (1 + cos(pi (i + 1) / (I - w))) / 2 at
               iteration i counted from the warm-up's end, I = epochs x iters_per_epoch
               (INTL's adjust_learning_rate, whose eta_min is lr / 1000);
          none: lr.
    """
    lr = base_lr(cfg)
    warmup = 0
    if cfg.lr_warmup:
        warmup = WARMUP_ITERS if cfg.warmup_epochs is None else cfg.warmup_epochs * iters_per_epoch
    if iteration < warmup:
        return lr * (iteration + 1) / warmup

    def fires(m: int) -> bool:  # the schedule's change at the start of epoch m survives
        return m >= 0 and m * iters_per_epoch >= warmup

    e = int(epoch)
    if cfg.lr_step == "step":
        milestones = [cfg.epoch - d for d in cfg.drop]
        return lr * cfg.drop_gamma ** sum(e >= m and fires(m) for m in milestones)
    if cfg.lr_step == "cos":
        return _cosine_warm_restarts(cfg, lr, epoch)
    if cfg.lr_step == "cos_step":
        done, length = iteration - warmup + 1, max(cfg.epoch * iters_per_epoch - warmup, 1)
        return cosine(lr, done, length, cfg.eta_min)
    if cfg.lr_step == "cos_epoch":
        return cosine(lr, e, cfg.epoch) if fires(e) else lr
    return lr


class LARS(torch.optim.SGD):
    """SGD with momentum whose gradients are first rescaled layer-wise, as apex's LARC
    with clip=False (the one SimSiam's and CW-RGP's linear classification use).

    For each parameter p with gradient g and weight decay wd, where |p| > 0 and |g| > 0:
        g <- (g + wd p) * trust |p| / (|g| + wd |p| + eps)
    elsewhere g is left as it is; then a plain SGD step without weight decay.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.trust_coefficient, self.eps = trust_coefficient, eps

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decays = [group["weight_decay"] for group in self.param_groups]
        for group, wd in zip(self.param_groups, decays, strict=True):
            for p in group["params"]:
                if p.grad is None:
                    continue
                p_norm, g_norm = p.norm(), p.grad.norm()
                trust = self.trust_coefficient * p_norm / (g_norm + wd * p_norm + self.eps)
                scaled = (p.grad + wd * p) * trust
                p.grad.copy_(torch.where((p_norm > 0) & (g_norm > 0), scaled, p.grad))
            group["weight_decay"] = 0.0
        try:
            super().step()
        finally:
            for group, wd in zip(self.param_groups, decays, strict=True):
                group["weight_decay"] = wd
        return loss


def build_optimizer(
    name: str,
    params: Iterable,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    fused: bool = False,
    graph_ready: bool = False,
) -> torch.optim.Optimizer:
    """adam: Adam with coupled L2 (the CIFAR reference); adamw: AdamW, whose weight decay is
    decoupled, p <- p - lr wd p beside the Adam step (LeJEPA's recommendation); sgd: SGD with
    momentum (the CW-RGP ImageNet recipe); lars: LARS above (our addition for pre-training).

    graph_ready (adam only): fused Adam with `capturable=True` and the lr a 0-dim tensor on
    the parameters' device (`set_graph_ready`), so that a CUDA graph can capture its step
    and `set_lr` changes the lr in place between replays."""
    if name == "adam":
        if graph_ready:
            params = list(params)
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
            return set_graph_ready(optimizer)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adamw":  # not graph-ready: the captured step takes the fused Adam only
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown --optimizer {name!r}; choose adam, adamw, sgd or lars")


def set_graph_ready(optimizer: torch.optim.Optimizer, ready: bool = True) -> torch.optim.Optimizer:
    """Makes a fused Adam's step capturable (`ready`) or plain again. Ready: each group's lr
    becomes a 0-dim tensor on its parameters' device (float32 on CUDA, the parameters' dtype
    elsewhere, so float64 tests step exactly as with a float lr) and `capturable` is set;
    not ready: a float lr, capturable off. Call it after `load_state_dict` too, which puts
    back the saved groups' values (another run's lr and capturable). Returns the optimizer."""
    for group in optimizer.param_groups:
        first, value = group["params"][0], float(group["lr"])
        group["capturable"] = ready
        if not ready:
            group["lr"] = value
        elif not isinstance(group["lr"], torch.Tensor) or group["lr"].device != first.device:
            dtype = torch.float32 if first.device.type == "cuda" else first.dtype
            group["lr"] = torch.tensor(value, dtype=dtype, device=first.device)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Sets every group's lr: in place where it is a tensor (a graph-ready optimiser)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
