"""What every method shares: the encoder, the projection head, and how views pass them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .networks import get_encoder, get_head, view_statistics, views_in_one_call
from .spec import MethodConfig


class BaseMethod(nn.Module):
    """Encoder E and head g of a self-supervised method; subclasses define the loss.

    forward(views) takes k views (each [bs, 3, H, W]) of the same bs images and returns the
    scalar loss. As in the reference code, the encoder sees each view as its own batch
    (its BatchNorm statistics are per view) and the head sees all views together, or each
    view on its own when `head_per_view` (the CW-RGP code's Barlow Twins, VICReg, SimSiam
    and zero-ICL) and in BYOL, whose head and predictor see each view on its own. "As its
    own batch" is one call on all views with per-view statistics (`per_view`).
    """

    head_per_view = False
    # host-side attributes that `schedule` changes: a redone step puts them back first
    host_attrs: tuple[str, ...] = ()

    def __init__(self, cfg: MethodConfig, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.model, self.out_size = get_encoder(cfg.arch, image_size, cfg.zero_init_residual)
        self.head = get_head(self.out_size, cfg.emb, cfg.head_layers, cfg.head_size, cfg.add_bn)
        # what training steps call (see compile_encoder); an alias, not a second submodule
        object.__setattr__(self, "encode", self.model)

    def compile_encoder(self) -> None:
        """Trains through a torch.compile'd encoder. Evaluation (`embed`) keeps calling the
        eager `self.model`, so its eval mode, no_grad and batch size never recompile (or
        evict) the training graph. The compiled wrapper is kept out of the module tree, so
        the state dict's keys do not change."""
        object.__setattr__(self, "encode", torch.compile(self.model))

    def per_view(
        self, fn: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor]
    ) -> torch.Tensor:
        """fn(x) for each view x as its own batch, view-major: [k * bs, ...]. One call of fn
        on the k views concatenated, each `ViewBatchNorm` in it normalising each view with
        its own statistics (exactly k calls' maths, running statistics included); k calls
        where --sync_bn made them SyncBatchNorm."""
        if not views_in_one_call(self):
            return torch.cat([fn(x) for x in views])
        with view_statistics(self, len(views)):
            return fn(torch.cat(views))

    def project(self, views: list[torch.Tensor]) -> torch.Tensor:
        """g(E(x)) for every view: [k, bs, emb], float32 (the head's last layer runs in
        float32 even under autocast, see `networks.Float32Linear`)."""
        if self.head_per_view:
            z = self.per_view(lambda x: self.head(self.encode(x)), views)
        else:
            z = self.head(self.per_view(self.encode, views))
        return z.view(len(views), views[0].shape[0], -1)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features for evaluation: E(x), or g(E(x)) with --eval_head. [bs, out]."""
        h = self.model(x)
        return self.head(h) if self.cfg.eval_head else h

    @property
    def embed_size(self) -> int:
        return self.cfg.emb if self.cfg.eval_head else self.out_size

    def generators(self) -> dict[str, torch.Generator]:
        """Random generators the method owns, by name, for the trainer to checkpoint."""
        return {}

    def schedule(self, progress: float) -> None:
        """Before each training step, on the host (progress = epoch / total epochs): sets
        what this step's progress decides, in place (BYOL's EMA rate in a device tensor) or
        as a switch that `graph_key` names. Nothing by default."""

    def update(self) -> None:
        """After each optimiser step, device work only (no host value, so a CUDA graph
        captures it): e.g. BYOL's EMA. Nothing by default."""

    def step(self, progress: float) -> None:
        """One step's own update outside the training loop: `schedule` then `update`."""
        self.schedule(progress)
        self.update()

    def graph_key(self) -> tuple:
        """The host-side switches a captured training step depends on: a CUDA graph of the
        step is captured again when they change (W-MSE's covariance term at --cov_stop)."""
        return ()

    def graph_blocker(self) -> str | None:
        """Why this method's training step cannot be one CUDA graph (it reads a device
        value on the host, or calls a solver that syncs), or None."""
        return None

    def uses_zca(self) -> bool:
        """Whether the loss whitens by ZCA (`whitening.zca_matrix`), whose Newton-Schulz
        check the training loop defers (`training.deferred`)."""
        return False

    def device_scalar(self, name: str, value: float) -> torch.Tensor:
        """The method's 0-dim tensor attribute `name`, on its parameters' device and dtype,
        set to `value` in place (made on first use; not in the state dict)."""
        t = self.__dict__.get(name)
        first = next(self.parameters())
        if t is None or t.device != first.device or t.dtype != first.dtype:
            t = torch.zeros((), dtype=first.dtype, device=first.device)
            object.__setattr__(self, name, t)
        return t.fill_(value)
