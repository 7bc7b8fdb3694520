"""LeJEPA (Balestriero and LeCun, arXiv 2511.08544, 2025): views pulled to their centre, plus
SIGReg, which pushes the projections towards an isotropic Gaussian.

The loss is `losses.lejepa_loss`: (1 - lambda) x the views' squared distance to their mean
plus lambda x SIGReg, the Epps-Pulley statistic of the projections on random unit directions,
averaged over the directions and the views. As the reference (`rbalestr-lab/lejepa`, its
`EppsPulley`, `SlicingUnivariateTest` and MINIMAL.md):
- slices: --sigreg_slices directions (256, MINIMAL.md's SIGReg; its README's example takes
  1024), drawn afresh at every step as normalised Gaussian vectors;
- integration: the trapezoid rule on --sigreg_points nodes (17, odd as the reference asserts)
  of [0, --sigreg_t_max] (3), doubled by symmetry, the weight phi(t) = exp(-t^2 / 2);
- views: the projector sees all k views as one batch (its BatchNorm statistics pooled over
  them, as MINIMAL.md's MLP on the flattened views), the encoder each view as its own batch
  (BatchNorm per view, as for every method here: MINIMAL.md's ViT has no BatchNorm); each
  view's SIGReg is taken over its own rows, with the same directions for every view, and
  the invariance pulls every view to the mean of all k (no multi-crop: every view is a
  global view of the same size).
The directions come from a generator of this method's own, seeded with --seed (the same on
every rank, as the reference's seed synchronised across ranks) and drawn on the parameters'
device: a run is reproducible, its state is checkpointed with the run's other generators, and
a CUDA graph that registers it captures the draw (no host read, no tensor from host data).
Under DDP every rank gathers all embeddings and computes the loss of the global batch, as the
reference's all-reduced characteristic function does for SIGReg.
"""

from __future__ import annotations

import torch

from .base import BaseMethod
from .distributed import gather_batch, rank_and_world
from .losses import lejepa_loss, sigreg_directions
from .spec import MethodConfig, MethodSpec, Option


class LeJEPA(BaseMethod):
    """The projector (`get_head`: Linear, BatchNorm, ReLU blocks then a Linear, as MINIMAL.md's
    torchvision MLP) sees the k views together; the loss, in float32, is `lejepa_loss` with
    directions from `generators()["sigreg"]`."""

    def __init__(self, cfg: MethodConfig, image_size: int):
        super().__init__(cfg, image_size)
        self.generator: torch.Generator | None = None

    def generators(self) -> dict[str, torch.Generator]:
        """The slice directions' generator, seeded with --seed on the parameters' device."""
        if self.generator is None:
            device = next(self.parameters()).device
            self.generator = torch.Generator(device).manual_seed(self.cfg.seed)
        return {"sigreg": self.generator}

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        h = self.project(views)
        if rank_and_world()[1] > 1:
            h = gather_batch(h)
        a = sigreg_directions(h.shape[-1], c.sigreg_slices, self.generators()["sigreg"])
        return lejepa_loss(h, c.lejepa_lambda, a, c.sigreg_t_max, c.sigreg_points)


LEJEPA_SPEC = MethodSpec(
    "lejepa",
    "LeJEPA",
    LeJEPA,
    options={
        "lejepa_lambda": Option(
            0.05,
            "LeJEPA: weight of SIGReg; the loss is (1 - lambda) invariance + lambda SIGReg "
            "(0.05: the authors' ablation scripts)",
            valid=lambda v: 0 <= v <= 1,
            rule="must be in [0, 1]",
        ),
        "sigreg_slices": Option(
            256,
            "LeJEPA: number of random directions SIGReg projects on, drawn at every step",
            bounds=(1, 16384),
        ),
        "sigreg_points": Option(
            17,
            "LeJEPA: trapezoid nodes of SIGReg's integral on [0, --sigreg_t_max]",
            valid=lambda v: v % 2 == 1,
            rule="must be odd",
            bounds=(3, 257),
        ),
        "sigreg_t_max": Option(
            3.0,
            "LeJEPA: SIGReg integrates over t in [-t_max, t_max]",
            valid=lambda v: v > 0,
            rule="must be > 0",
        ),
    },
    # the reference builds its backbones with timm.create_model, whose ResNets zero the last
    # BatchNorm of every block (zero_init_last=True)
    defaults={"zero_init_residual": True},
)
