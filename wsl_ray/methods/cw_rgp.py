"""CW-RGP: channel whitening with random group partition (Weng et al., NeurIPS 2022)."""

from __future__ import annotations

import torch

from ..config import Config
from .base import BaseMethod
from .losses import cwrgp_loss, sample_covariance_penalty


class CWRGP(BaseMethod):
    """The whitened-MSE loss, plus --cov_w times the covariance term of the ImageNet code.

    As there, the term is switched off by `step` once an iteration of epoch --cov_stop has
    run (the reference switches after its optimiser step, so the first iteration of epoch
    cov_stop still has it). A run resumed past cov_stop has it for its first iteration,
    as the reference's resume does.
    """

    def __init__(self, cfg: Config, image_size: int):
        super().__init__(cfg, image_size)
        self.cov_on = cfg.cov_w != 0

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        z = self.project(views)
        loss = cwrgp_loss(z, c.w_size, c.groups, c.w_iter, c.w_eps, c.norm)
        if self.cov_on:
            loss = loss + c.cov_w * sample_covariance_penalty(z)
        return loss

    def step(self, progress: float) -> None:
        if round(progress * self.cfg.epoch) >= self.cfg.cov_stop:
            self.cov_on = False
