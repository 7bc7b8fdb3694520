"""zero-ICL, as the CW-RGP study's code implements it (its zero_icl.py): instance
whitening of the N x N Gram matrix, then each sample's two views pushed to correlation 1."""

from __future__ import annotations

import torch

from .base import BaseMethod
from .losses import zero_icl_loss
from .spec import CW_RGP_STUDY_DEFAULTS, MethodSpec


class ZeroICL(BaseMethod):
    head_per_view = True

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        return zero_icl_loss(self.project(views))

    def graph_blocker(self) -> str | None:
        return "its whitening is an eigh (cuSOLVER syncs)"


ZERO_ICL_SPEC = MethodSpec("zero_icl", "zero-ICL", ZeroICL, views=2, defaults=CW_RGP_STUDY_DEFAULTS)
