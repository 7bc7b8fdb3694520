"""VICReg (Bardes et al., ICLR 2022): variance, invariance and covariance terms."""

from __future__ import annotations

import torch

from .base import BaseMethod
from .losses import vicreg_loss
from .spec import CW_RGP_STUDY_DEFAULTS, MethodSpec, Option


class VICReg(BaseMethod):
    """The loss on the raw projections, weights --vicreg_sim, --vicreg_var, --vicreg_cov."""

    head_per_view = True

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        return vicreg_loss(self.project(views), c.vicreg_sim, c.vicreg_var, c.vicreg_cov)


VICREG_SPEC = MethodSpec(
    "vicreg",
    "VICReg",
    VICReg,
    views=2,
    defaults=CW_RGP_STUDY_DEFAULTS,
    options={
        "vicreg_sim": Option(25.0, "VICReg: weight of the invariance term"),
        "vicreg_var": Option(25.0, "VICReg: weight of the variance term"),
        "vicreg_cov": Option(1.0, "VICReg: weight of the covariance term"),
    },
)
