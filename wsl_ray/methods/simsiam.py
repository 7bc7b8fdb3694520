"""SimSiam (Chen and He, CVPR 2021): a predictor and a stop-gradient, no negatives."""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import BaseMethod
from .losses import simsiam_loss
from .networks import ViewBatchNorm1d
from .spec import CW_RGP_STUDY_DEFAULTS, MethodConfig, MethodSpec

PREDICTOR_HIDDEN = 512


class SimSiam(BaseMethod):
    """As the CW-RGP code: the projector is 3 bias-free Linear layers (--head_size hidden)
    with BatchNorm, the last one without affine parameters (it replaces the usual head and
    ignores --head_layers); the predictor is Linear(emb, 512) -> BN -> ReLU -> Linear(emb)."""

    head_per_view = True

    def __init__(self, cfg: MethodConfig, image_size: int):
        super().__init__(cfg, image_size)
        width = cfg.head_size
        self.head = nn.Sequential(
            nn.Linear(self.out_size, width, bias=False),
            ViewBatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width, bias=False),
            ViewBatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, cfg.emb, bias=False),
            ViewBatchNorm1d(cfg.emb, affine=False),
        )
        self.pred = nn.Sequential(
            nn.Linear(cfg.emb, PREDICTOR_HIDDEN, bias=False),
            ViewBatchNorm1d(PREDICTOR_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(PREDICTOR_HIDDEN, cfg.emb),
        )

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        z = self.project(views)
        return simsiam_loss(self.per_view(self.pred, list(z)).view_as(z), z)


SIMSIAM_SPEC = MethodSpec("simsiam", "SimSiam", SimSiam, views=2, defaults=CW_RGP_STUDY_DEFAULTS)
