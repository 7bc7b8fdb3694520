"""The whitened MSE family of the CW-RGP study (Weng et al., NeurIPS 2022).

One method with every whitening of the family (`wsl_ray.methods.family`): W-MSE (Ermolov et al.,
ICML 2021; `--method w_mse`) is Cholesky whitening on the batch axis, CW-RGP (`--method
cw_rgp`) ZCA whitening on the channel axis with random groups; `--method whitened_mse`
takes the matrix, axis and grouping from its flags (PCA, BN and Plain included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import BaseMethod
from .distributed import gather_batch, rank_and_world, with_global_value
from .family import family_of
from .losses import sample_covariance_penalty, whitened_mse_loss

if TYPE_CHECKING:
    from ..config import Config


class WhitenedMSE(BaseMethod):
    """With --whiten_global under DDP, the loss whitens the global batch (see `forward`).

    --cov_w adds CW-RGP's covariance term (its ImageNet code) over each worker's own batch,
    switched off by `step` once an iteration of epoch --cov_stop has run (the reference
    switches after its optimiser step, so the first iteration of epoch cov_stop still has
    it; a run resumed past cov_stop has it for its first iteration, as the reference's).
    """

    def __init__(self, cfg: Config, image_size: int):
        super().__init__(cfg, image_size)
        self.family = family_of(cfg.to_dict())
        self.generator: torch.Generator | None = None
        self.cov_on = cfg.cov_w != 0

    def generators(self) -> dict[str, torch.Generator]:
        """--whiten_global draws its sub-batches and groups from a generator seeded with
        --seed on every rank, so that all ranks draw the same permutations."""
        if not self.cfg.whiten_global:
            return {}
        if self.generator is None:
            device = next(self.parameters()).device
            self.generator = torch.Generator(device).manual_seed(self.cfg.seed)
        return {"whiten": self.generator}

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """The loss of the k views. With --whiten_global and W > 1 workers, every rank gathers
        all embeddings, whitens all the global batch's sub-batches exactly as one process
        would (the same permutations), and averages the loss over its own samples' rows;
        the returned value is the global loss (see `distributed`)."""
        c, f = self.cfg, self.family
        h = self.project(views)
        cov = c.cov_w * sample_covariance_penalty(h) if self.cov_on else None
        rank, world = rank_and_world() if c.whiten_global else (0, 1)
        if world > 1:
            h = gather_batch(h)
        loss = whitened_mse_loss(
            h,
            c.w_size,
            f.matrix,
            f.axis,
            f.groups,
            f.random_groups,
            f.minus,
            c.w_iter,
            c.w_eps,
            c.norm,
            self.generators().get("whiten"),
            share=(rank, world) if world > 1 else None,
        )
        loss = with_global_value(loss) if world > 1 else loss
        return loss if cov is None else loss + cov

    def step(self, progress: float) -> None:
        if round(progress * self.cfg.epoch) >= self.cfg.cov_stop:
            self.cov_on = False
