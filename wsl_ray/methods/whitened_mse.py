"""The whitened MSE family of the CW-RGP study (Weng et al., NeurIPS 2022).

One method with every whitening of the family (`wsl_ray.methods.family`): W-MSE (Ermolov et al.,
ICML 2021; `--method w_mse`) is Cholesky whitening on the batch axis, CW-RGP (`--method
cw_rgp`) ZCA whitening on the channel axis with random groups; `--method whitened_mse`
takes the matrix, axis and grouping from its flags (PCA, BN and Plain included).
"""

from __future__ import annotations

import warnings

import torch

from .base import BaseMethod
from .distributed import gather_batch, rank_and_world, with_global_value
from .family import AXES, MATRICES, family_of, family_problems
from .losses import sample_covariance_penalty, whitened_mse_loss
from .spec import CW_RGP_STUDY_DEFAULTS, MethodConfig, MethodSpec, Option


class WhitenedMSE(BaseMethod):
    """With --whiten_global under DDP, the loss whitens the global batch (see `forward`).

    --cov_w adds CW-RGP's covariance term (its ImageNet code) over each worker's own batch,
    switched off by `schedule` once an iteration of epoch --cov_stop has run (the reference
    switches after its optimiser step, so the first iteration of epoch cov_stop still has
    it; a run resumed past cov_stop has it for its first iteration, as the reference's).
    The switch is host state (`graph_key`): a captured step is captured again when it flips.
    """

    host_attrs = ("cov_on", "cov_stop_reached")

    def __init__(self, cfg: MethodConfig, image_size: int):
        super().__init__(cfg, image_size)
        self.family = family_of(cfg.to_dict())
        self.generator: torch.Generator | None = None
        self.cov_on = cfg.cov_w != 0
        self.cov_stop_reached = False  # by an earlier step of this process

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

    def schedule(self, progress: float) -> None:
        if self.cov_stop_reached:
            self.cov_on = False
        self.cov_stop_reached = round(progress * self.cfg.epoch) >= self.cfg.cov_stop

    def graph_key(self) -> tuple:
        return (self.cov_on,)

    def graph_blocker(self) -> str | None:
        if self.family.matrix == "pca":
            return "its PCA is an eigh (cuSOLVER syncs)"
        return None  # ZCA's Newton-Schulz check is deferred (`training.deferred`)

    def uses_zca(self) -> bool:
        return self.family.matrix == "zca"


def _sub_batch_problems(cfg: MethodConfig, workers: int, above: int) -> list[str]:
    """The batch whitened together (per worker, or all of it with --whiten_global) must
    split into sub-batches of --w_size; the hint is a divisor of it above `above`."""
    local_bs = cfg.bs // max(workers, 1)
    w_batch = cfg.bs if cfg.whiten_global else local_bs
    where = "the batch" if cfg.whiten_global else "the per-worker batch"
    if cfg.bs % workers == 0 and w_batch % cfg.w_size == 0:
        return []
    return [
        f"--w_size {cfg.w_size} must divide {where} {w_batch} (--bs {cfg.bs} / {workers} "
        f"worker(s)); e.g. --w_size {_nearest_divisor(w_batch, cfg.w_size, above)}"
    ]


def _nearest_divisor(n: int, target: int, above: int = 0) -> int:
    """The divisor of n nearest to target among those > above (n itself if none)."""
    candidates = [d for d in range(above + 1, n + 1) if n % d == 0] or [n]
    return min(candidates, key=lambda d: (abs(d - target), d))


def _w_mse_problems(cfg: MethodConfig, workers: int) -> list[str]:
    """The W-MSE rank condition w_size > emb; warns below 2 emb, where the W-MSE authors
    saw unstable training."""
    problems = _sub_batch_problems(cfg, workers, above=cfg.emb)
    if cfg.w_size <= cfg.emb:
        problems.append(
            f"--w_size {cfg.w_size} must exceed --emb {cfg.emb}, or the sub-batch covariance "
            f"is singular; e.g. --w_size {2 * cfg.emb} or --emb {max(cfg.w_size // 2, 1)}"
        )
    elif cfg.w_size < 2 * cfg.emb:
        warnings.warn(
            f"--w_size {cfg.w_size} < 2 x --emb {cfg.emb}: the W-MSE authors advise "
            f"w_size >= 2 emb for stable whitening (e.g. --w_size {2 * cfg.emb})",
            UserWarning,
            stacklevel=3,
        )
    return problems + family_problems(cfg.to_dict())


def _cw_rgp_problems(cfg: MethodConfig, workers: int) -> list[str]:
    """CW-RGP's groups divide --emb into groups of more than --w_size channels."""
    problems = _sub_batch_problems(cfg, workers, above=1)
    fitting = [g for g in range(1, cfg.emb + 1) if cfg.emb % g == 0 and cfg.emb // g > cfg.w_size]
    hint = f"--groups {max(fitting)}" if fitting else f"--emb {2 * cfg.w_size * cfg.groups}"
    if not (cfg.groups >= 1 and cfg.emb % cfg.groups == 0):
        problems.append(f"--groups {cfg.groups} must divide --emb {cfg.emb}; e.g. {hint}")
    per_group = cfg.emb // max(cfg.groups, 1)
    if per_group <= cfg.w_size:
        problems.append(
            f"CW-RGP needs more channels per group than --w_size: --emb {cfg.emb} / --groups "
            f"{cfg.groups} = {per_group} <= --w_size {cfg.w_size}; e.g. {hint}"
        )
    return problems + family_problems(cfg.to_dict())


def _whitened_mse_problems(cfg: MethodConfig, workers: int) -> list[str]:
    return _sub_batch_problems(cfg, workers, above=1) + family_problems(cfg.to_dict())


W_MSE_SPEC = MethodSpec(
    "w_mse",
    "W-MSE",
    WhitenedMSE,
    check=_w_mse_problems,
    flags=("whiten_global",),
    label_views=True,
)
CW_RGP_SPEC = MethodSpec(
    "cw_rgp",
    "CW-RGP",
    WhitenedMSE,
    defaults=CW_RGP_STUDY_DEFAULTS | {"groups": 1},
    check=_cw_rgp_problems,
    flags=("whiten_global",),
    label_views=True,
)
WHITENED_MSE_SPEC = MethodSpec(
    "whitened_mse",
    "Whitened MSE",
    WhitenedMSE,
    defaults={"zero_init_residual": True},
    check=_whitened_mse_problems,
    # the presets w_mse and cw_rgp fix these (`family.PRESETS`)
    options={
        "w_matrix": Option(
            None, "whitening matrix (whitened_mse; default cholesky)", choices=MATRICES, type=str
        ),
        "w_axis": Option(
            None,
            "whiten over the batch (W-MSE) or the channels (CW-RGP) (whitened_mse; default batch)",
            choices=AXES,
            type=str,
        ),
        "w_random_groups": Option(False, "redraw the channel groups at every call (whitened_mse)"),
        "minus": Option(1, "the covariance divisor is count - minus (whitened_mse)"),
    },
    flags=("whiten_global",),
    label_views=True,
    describe=lambda config: family_of(config).label,
)
