"""W-MSE: the MSE between whitened views (Ermolov et al., ICML 2021)."""

from __future__ import annotations

import torch

from .base import BaseMethod
from .losses import wmse_loss


class WMSE(BaseMethod):
    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        return wmse_loss(self.project(views), c.w_size, c.w_iter, c.w_eps, c.norm)
