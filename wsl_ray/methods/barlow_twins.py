"""Barlow Twins (Zbontar et al., ICML 2021), as in the CW-RGP study's code."""

from __future__ import annotations

import torch

from .base import BaseMethod
from .losses import barlow_twins_loss
from .networks import ViewBatchNorm1d
from .spec import CW_RGP_STUDY_DEFAULTS, MethodConfig, MethodSpec, Option


class BarlowTwins(BaseMethod):
    """Each view's projection is batch-normalised by one shared BatchNorm, then the
    cross-correlation of the two is pushed to the identity. --barlow_scale emb (default)
    follows the CW-RGP code: an affine BN and C divided by the embedding size; batch follows
    the paper: BN without affine parameters and C divided by the batch size."""

    head_per_view = True

    def __init__(self, cfg: MethodConfig, image_size: int):
        super().__init__(cfg, image_size)
        self.bn = ViewBatchNorm1d(cfg.emb, affine=cfg.barlow_scale == "emb")

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        z = self.project(views)
        z = self.per_view(self.bn, list(z)).view_as(z)
        return barlow_twins_loss(z, self.cfg.barlow_lambda, self.cfg.barlow_scale)


BARLOW_TWINS_SPEC = MethodSpec(
    "barlow_twins",
    "Barlow Twins",
    BarlowTwins,
    views=2,
    defaults=CW_RGP_STUDY_DEFAULTS,
    options={
        "barlow_lambda": Option(0.008, "Barlow Twins: weight of the off-diagonal terms"),
        "barlow_scale": Option(
            "emb",
            "Barlow Twins: divide the cross-correlation by the embedding size (the CW-RGP "
            "code, affine BN) or by the batch size (the paper, BN without affine)",
            choices=("emb", "batch"),
        ),
    },
)
