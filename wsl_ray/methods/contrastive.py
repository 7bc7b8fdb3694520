"""Contrastive: SimCLR's NT-Xent loss (Chen et al., 2020), as in the W-MSE paper's baseline."""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import BaseMethod
from .distributed import gather_batch, rank_and_world, with_global_value
from .losses import contrastive_loss
from .spec import MethodConfig, MethodSpec, Option


class Contrastive(BaseMethod):
    """Adds a BatchNorm after the head, as the reference code does. With --global_negatives
    under DDP, each rank's anchors meet the negatives of every rank (see `distributed`)."""

    def __init__(self, cfg: MethodConfig, image_size: int):
        super().__init__(cfg, image_size)
        self.bn_last = nn.BatchNorm1d(cfg.emb)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        z = self.project(views)
        z = self.bn_last(z.flatten(0, 1)).view_as(z)
        rank, world = rank_and_world() if self.cfg.global_negatives else (0, 1)
        if world == 1:
            return contrastive_loss(z, self.cfg.tau, self.cfg.norm)
        loss = contrastive_loss(gather_batch(z), self.cfg.tau, self.cfg.norm, (rank, world))
        return with_global_value(loss)


def _contrastive_problems(cfg: MethodConfig, workers: int) -> list[str]:
    if cfg.global_negatives and cfg.bs % workers:
        return [f"--global_negatives needs --bs {cfg.bs} divisible by {workers} workers"]
    return []


CONTRASTIVE_SPEC = MethodSpec(
    "contrastive",
    "Contrastive",
    Contrastive,
    check=_contrastive_problems,
    options={
        "tau": Option(
            0.5, "contrastive loss temperature", valid=lambda v: v > 0, rule="must be > 0"
        ),
        "global_negatives": Option(False, "with --workers N, Contrastive negatives of all workers"),
    },
    flags=("global_negatives",),
)
