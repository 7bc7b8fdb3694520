"""INTL (Weng et al., ICLR 2024, "Modulate Your Spectrum in Self-Supervised Learning").

Each view's projection is whitened on its own by IterNorm with few steps (`whitening.
iternorm_matrix`, T = --intl_iters), which only partly whitens its spectrum; the views'
normalised MSE plus a trace loss on the whitened views' variances is minimised, with no
stop-gradient. With --intl_m an EMA target network (INTL-M, the reference's intl_m.py)
embeds view 0 and the online network the others.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .base import BaseMethod
from .byol import ema_update, target_tau
from .distributed import gather_batch, rank_and_world
from .losses import intl_loss, intl_trade_off
from .networks import Float32Linear, ViewBatchNorm1d
from .spec import MethodConfig, MethodSpec, Option


def intl_head(in_size: int, emb: int, layers: int, width: int) -> nn.Sequential:
    """The reference's projector: (layers - 1) x [Linear without bias -> BN -> ReLU], then
    Linear(emb) with a bias (in float32) and no BatchNorm after it."""
    modules: list[nn.Module] = []
    for _ in range(layers - 1):
        modules += [nn.Linear(in_size, width, bias=False), ViewBatchNorm1d(width), nn.ReLU(True)]
        in_size = width
    return nn.Sequential(*modules, Float32Linear(in_size, emb))


class INTL(BaseMethod):
    """The encoder and the head see each view on its own (BatchNorm statistics per view),
    as in the reference. Under DDP the embeddings of all workers are gathered and every
    rank computes the loss of the global batch, as the reference's all-gather before
    IterNorm does; DDP's averaging of the gradients then gives the single-process gradient
    (see `distributed`; every rank's loss is the global one, so no share is needed)."""

    head_per_view = True

    def __init__(self, cfg: MethodConfig, image_size: int):
        super().__init__(cfg, image_size)
        self.head = intl_head(self.out_size, cfg.emb, cfg.head_layers, cfg.head_size)
        self.trade_off = trade_off(cfg)
        self.momentum = cfg.intl_m is not None
        if self.momentum:
            self.model_t = copy.deepcopy(self.model).requires_grad_(False)
            self.head_t = copy.deepcopy(self.head).requires_grad_(False)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        target = None
        if self.momentum:
            with torch.no_grad():
                target = self.head_t(self.model_t(views[0]))
            views = views[1:]
        h = self.project(views)
        if rank_and_world()[1] > 1:
            h = gather_batch(h)
            target = None if target is None else gather_batch(target[None])[0]
        return intl_loss(h, self.trade_off, c.intl_iters, c.intl_axis, target)

    def schedule(self, progress: float) -> None:
        """INTL-M: target <- m target + (1 - m) online for the encoder's and head's
        parameters (not the BatchNorm statistics), m = 1 - (1 - m0) (1 + cos(pi p)) / 2
        rising from --intl_m to 1, as the reference's adjust_momentum: 1 - m into a device
        tensor here, the update in `update`."""
        if self.momentum:
            self.device_scalar("ema_weight", 1 - target_tau(progress, self.cfg.intl_m))

    def update(self) -> None:
        if self.momentum:
            ema_update(self, self.ema_weight)


def trade_off(cfg: MethodConfig) -> float:
    """--intl_tl_w, or the reference's rule from the global --bs (channel axis) or --emb."""
    if cfg.intl_tl_w is not None:
        return cfg.intl_tl_w
    return intl_trade_off(cfg.intl_axis, cfg.bs, cfg.emb)


def _problems(cfg: MethodConfig, workers: int) -> list[str]:
    """IterNorm's covariance needs 2 or more features (channel axis) or samples per view;
    the default trace-loss weight must not be negative (--bs or --emb below 8)."""
    problems = []
    if cfg.intl_axis == "channel" and cfg.emb < 2:
        problems.append(f"--emb {cfg.emb}: INTL's channel axis needs 2 or more features")
    if cfg.intl_tl_w is None and trade_off(cfg) < 0:
        size = "--bs" if cfg.intl_axis == "channel" else "--emb"
        problems.append(
            f"{size} {cfg.bs if size == '--bs' else cfg.emb} gives INTL's trace-loss weight "
            f"(log2({size[2:]}) - 3) x 0.01 = {trade_off(cfg):.3f} < 0: use {size} 8 or more, "
            "or set --intl_tl_w"
        )
    return problems


INTL_SPEC = MethodSpec(
    "intl",
    "INTL",
    INTL,
    defaults={"emb": 2048},
    check=_problems,
    options={
        "intl_iters": Option(4, "INTL: IterNorm's Newton steps T", bounds=(1, 64)),
        "intl_axis": Option(
            "channel",
            "INTL: whiten over the channels (the reference's axis 0) or the batch (axis 1)",
            choices=("channel", "batch"),
        ),
        "intl_tl_w": Option(
            None,
            "INTL: weight of the trace loss (default: (log2(bs) - 3) x 0.01 on the channel "
            "axis, (log2(emb) - 3) x 0.01 on the batch axis)",
            type=float,
            valid=lambda v: v is None or v >= 0,
            rule="must be 0 or more (or unset)",
        ),
        "intl_m": Option(
            None,
            "INTL-M: base momentum of an EMA target network that embeds view 0 (the "
            "reference's --m: 0.999 CIFAR, 0.996 ImageNet); unset: no target network",
            type=float,
            valid=lambda v: v is None or 0 <= v <= 1,
            rule="must be in [0, 1] (or unset)",
        ),
    },
    describe=lambda config: (
        f"{config.get('intl_axis') or 'channel'}, T {config.get('intl_iters') or 4}"
        + (", EMA" if config.get("intl_m") is not None else "")
    ),
)
