"""CW-RGP: channel whitening with random group partition (Weng et al., NeurIPS 2022)."""

from __future__ import annotations

import torch

from .base import BaseMethod
from .losses import cwrgp_loss


class CWRGP(BaseMethod):
    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        return cwrgp_loss(self.project(views), c.w_size, c.groups, c.w_iter, c.w_eps, c.norm)
