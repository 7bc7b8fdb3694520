"""BYOL: predict an EMA target network's projection (Grill et al., 2020)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from .base import BaseMethod
from .losses import byol_loss
from .networks import Float32Linear, ViewBatchNorm1d
from .spec import MethodConfig, MethodSpec, Option


def target_tau(progress: float, tau0: float = 0.99) -> float:
    """EMA rate tau = 1 - (1 - tau0) (cos(pi progress) + 1) / 2: tau0 at 0, 1 at the end."""
    return 1 - (1 - tau0) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(BaseMethod):
    """Owns the predictor q and the target encoder and head, updated by EMA in `step`."""

    def __init__(self, cfg: MethodConfig, image_size: int):
        super().__init__(cfg, image_size)
        self.pred = nn.Sequential(
            nn.Linear(cfg.emb, cfg.head_size),
            ViewBatchNorm1d(cfg.head_size),
            nn.ReLU(inplace=True),
            Float32Linear(cfg.head_size, cfg.emb),
        )
        self.model_t = copy.deepcopy(self.model).requires_grad_(False)
        self.head_t = copy.deepcopy(self.head).requires_grad_(False)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        # per view, as the reference: the head's and predictor's BatchNorm statistics are
        # those of one view, not of all views pooled
        shape = (len(views), views[0].shape[0], -1)
        p = self.per_view(lambda x: self.pred(self.head(self.encode(x))), views)
        with torch.no_grad():
            t = self.per_view(lambda x: self.head_t(self.model_t(x)), views)
        return byol_loss(p.view(shape), t.view(shape), self.cfg.norm)

    def schedule(self, progress: float) -> None:
        """This step's EMA weight 1 - tau(progress), into a device tensor in place."""
        self.device_scalar("ema_weight", 1 - target_tau(progress, self.cfg.byol_tau))

    def update(self) -> None:
        ema_update(self, self.ema_weight)


@torch.no_grad()
def ema_update(method: BaseMethod, weight: torch.Tensor) -> None:
    """target <- target + w (online - target) = tau target + (1 - tau) online, w = 1 - tau a
    0-dim device tensor, for the encoder's and head's parameters (model_t, head_t). One
    weight tensor per parameter (lerp's list form): its scalar form would read w on the
    host."""
    online = [*method.model.parameters(), *method.head.parameters()]
    target = [*method.model_t.parameters(), *method.head_t.parameters()]
    torch._foreach_lerp_(target, online, [weight] * len(target))


BYOL_SPEC = MethodSpec(
    "byol",
    "BYOL",
    BYOL,
    options={
        "byol_tau": Option(
            0.99,
            "starting EMA rate of BYOL's target network",
            valid=lambda v: 0 <= v <= 1,
            rule="must be in [0, 1]",
        )
    },
)
