"""BYOL: predict an EMA target network's projection (Grill et al., 2020)."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ..training.models import Float32Linear, ViewBatchNorm1d
from .base import BaseMethod
from .losses import byol_loss
from .spec import MethodSpec, Option

if TYPE_CHECKING:
    from ..config import Config


def target_tau(progress: float, tau0: float = 0.99) -> float:
    """EMA rate tau = 1 - (1 - tau0) (cos(pi progress) + 1) / 2: tau0 at 0, 1 at the end."""
    return 1 - (1 - tau0) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(BaseMethod):
    """Owns the predictor q and the target encoder and head, updated by EMA in `step`."""

    def __init__(self, cfg: Config, image_size: int):
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

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """target <- tau target + (1 - tau) online, for the encoder's and head's parameters."""
        online = [*self.model.parameters(), *self.head.parameters()]
        target = [*self.model_t.parameters(), *self.head_t.parameters()]
        torch._foreach_lerp_(target, online, 1 - tau)

    def step(self, progress: float) -> None:
        self.update_target(target_tau(progress, self.cfg.byol_tau))


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
