"""The four self-supervised losses, as plain functions on lists of views.

A view is a `[batch, emb]` tensor; row b of every view comes from the same image. Each
loss averages over all pairs of views, as the reference code does for k = num_samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import torch
import torch.nn.functional as F

from .whitening import channel_whiten, cholesky_whiten


def norm_mse(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(x0, x1), averaged over rows: the MSE of L2-normalised vectors."""
    return 2 - 2 * F.cosine_similarity(x0, x1, dim=-1).mean()


def _pair_loss(normalize: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return norm_mse if normalize else F.mse_loss


def _mean_over_pairs(z: torch.Tensor, loss_f: Callable) -> torch.Tensor:
    """Mean of loss_f(z[i], z[j]) over the k(k-1)/2 pairs i < j of the leading view dim."""
    pairs = list(combinations(range(z.shape[0]), 2))
    return sum(loss_f(z[i], z[j]) for i, j in pairs) / len(pairs)


def _check_views(views: Sequence[torch.Tensor]) -> torch.Tensor:
    if len(views) < 2:
        raise ValueError(f"a self-supervised loss needs at least 2 views, got {len(views)}")
    return torch.stack(list(views))  # [k, bs, emb]


def _whitened_mse(
    views: Sequence[torch.Tensor],
    w_size: int,
    w_iter: int,
    whiten: Callable[[torch.Tensor], torch.Tensor],
    normalize: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """W-MSE's scheme, shared with CW-RGP.

    For each of w_iter iterations a random permutation splits the batch into bs / w_size
    sub-batches (the same split for every view); `whiten` is applied to each view's
    sub-batch; the loss is the mean over iterations and view pairs of the (normalised) MSE
    between whitened views. All iterations, sub-batches and views are whitened in one call.
    """
    h = _check_views(views)
    k, bs, emb = h.shape
    if bs % w_size:
        raise ValueError(f"w_size={w_size} must divide the batch size {bs}")
    device = generator.device if generator is not None else h.device
    perm = torch.rand(w_iter, bs, generator=generator, device=device).argsort(dim=-1)
    sub = h[:, perm.to(h.device).view(w_iter, bs // w_size, w_size)]  # [k, it, m, w, emb]
    z = whiten(sub).reshape(k, w_iter * bs, emb)
    return _mean_over_pairs(z, _pair_loss(normalize))


def wmse_loss(
    views: Sequence[torch.Tensor],
    w_size: int,
    w_iter: int = 1,
    eps: float = 0.0,
    normalize: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """W-MSE (Ermolov et al., ICML 2021): MSE between Cholesky-whitened views.

    L = mean over iterations, view pairs (i, j) and samples of 2 - 2 cos(z_i, z_j), where
    z = cholesky_whiten of each view's sub-batch of `w_size`; with normalize=False the
    plain MSE ||z_i - z_j||^2 / emb. Returns a scalar.
    """
    return _whitened_mse(
        views, w_size, w_iter, lambda x: cholesky_whiten(x, eps), normalize, generator
    )


def cwrgp_loss(
    views: Sequence[torch.Tensor],
    w_size: int,
    groups: int,
    w_iter: int = 1,
    eps: float = 0.0,
    normalize: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CW-RGP (Weng et al., NeurIPS 2022): W-MSE's loss with channel whitening.

    As `wmse_loss`, but each view's sub-batch is whitened by `channel_whiten` (ZCA of the
    w_size x w_size sample covariance within each of `groups` random channel groups).
    """
    return _whitened_mse(
        views,
        w_size,
        w_iter,
        lambda x: channel_whiten(x, groups, eps, generator),
        normalize,
        generator,
    )


def sample_covariance_penalty(views: Sequence[torch.Tensor]) -> torch.Tensor:
    """CW-RGP's covariance term (its ImageNet code, `--cov_w`), summed over views.

    For each view h [bs, emb] (the whole local batch): centre each sample over its
    channels, x = h - mean_c(h); C = x x^T / (emb - 1) is the bs x bs covariance of the
    samples; the term is sum_{a != b} C_ab^2 / bs. Computed in float32 (or float64).
    """
    h = _check_views(views)
    h = h.float() if h.dtype in (torch.float16, torch.bfloat16) else h
    k, bs, emb = h.shape
    x = h - h.mean(dim=-1, keepdim=True)
    cov = x @ x.transpose(-1, -2) / (emb - 1)  # [k, bs, bs]
    off_diagonal = cov.pow(2).sum() - cov.diagonal(dim1=-2, dim2=-1).pow(2).sum()
    return off_diagonal / bs


def _nt_xent(x0: torch.Tensor, x1: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's loss for one pair of views x0, x1: [N, emb] (rows already normalised or not).

    Anchor x0[b] has positive x1[b] and negatives x1[b'] and x0[b'] for b' != b (2N - 2);
    the result is the cross-entropy averaged over anchors of both views.
    """
    n = x0.shape[0]
    target = torch.arange(n, device=x0.device)
    self_mask = torch.eye(n, device=x0.device, dtype=torch.bool)

    def one_side(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits_ab = a @ b.T / tau
        logits_aa = (a @ a.T / tau).masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), target)

    return (one_side(x0, x1) + one_side(x1, x0)) / 2


def contrastive_loss(
    views: Sequence[torch.Tensor], tau: float = 0.5, normalize: bool = True
) -> torch.Tensor:
    """Contrastive (SimCLR-style NT-Xent) loss, averaged over view pairs.

    For each pair, L = -1/2N sum_anchors log softmax of the positive's similarity among
    the 2N - 1 others, similarity = cos / tau (dot / tau with normalize=False).
    """
    h = _check_views(views).float()
    if normalize:
        h = F.normalize(h, dim=-1)
    return _mean_over_pairs(h, lambda a, b: _nt_xent(a, b, tau))


def byol_loss(
    predictions: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    normalize: bool = True,
) -> torch.Tensor:
    """BYOL (Grill et al., 2020): L = mean over pairs i < j of l(p_i, t_j) + l(p_j, t_i).

    l is 2 - 2 cos (or the plain MSE with normalize=False); p are the online network's
    predictions, t the target network's projections (no gradient flows into t).
    """
    p, t = _check_views(predictions), _check_views(targets).detach()
    loss_f = _pair_loss(normalize)
    pairs = list(combinations(range(p.shape[0]), 2))
    return sum(loss_f(p[i], t[j]) + loss_f(p[j], t[i]) for i, j in pairs) / len(pairs)
