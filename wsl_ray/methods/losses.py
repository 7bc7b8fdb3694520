"""The self-supervised losses, as plain functions on lists of views.

A view is a `[batch, emb]` tensor; row b of every view comes from the same image. The
whitened MSE, Contrastive and BYOL losses average over all pairs of views, as the reference
code does for k = num_samples; Barlow Twins, VICReg, SimSiam and zero-ICL take exactly 2.

`share=(rank, world)` (whitened MSE, Contrastive) gives one worker's share of a loss over
a global batch gathered from `world` workers in rank order: the same terms, averaged over
the rows of the worker's own samples only; the mean of the shares is the global loss.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from itertools import combinations

import torch
import torch.nn.functional as F

from .whitening import whiten


def _no_autocast(loss: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Runs `loss` with autocast off, so that its matrix products stay in float32."""

    @functools.wraps(loss)
    def wrapped(views: Sequence[torch.Tensor], *args, **kwargs) -> torch.Tensor:
        with torch.autocast(device_type=views[0].device.type, enabled=False):
            return loss(views, *args, **kwargs)

    return wrapped


def norm_mse(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(x0, x1), averaged over rows: the MSE of L2-normalised vectors."""
    return 2 - 2 * F.cosine_similarity(x0, x1, dim=-1).mean()


def _pair_loss(normalize: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return norm_mse if normalize else F.mse_loss


def _mean_pair_distance(z: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Mean over the k(k-1)/2 pairs i < j of the views z: [k, N, emb] and over rows of
    2 - 2 cos(z_i, z_j) (or of ||z_i - z_j||^2 / emb with normalize=False), from sums over
    views instead of a loop over pairs: with u = z / ||z|| per row,
        sum_{i<j} u_i . u_j = (||sum_i u_i||^2 - sum_i ||u_i||^2) / 2,
        sum_{i<j} ||z_i - z_j||^2 = k sum_i ||z_i||^2 - ||sum_i z_i||^2.
    The same value as `_mean_over_pairs` with `_pair_loss(normalize)`, in a fixed number of
    ops whatever k (cosines as F.cosine_similarity's, norms clamped at 1e-8)."""
    k, _, emb = z.shape
    pairs = k * (k - 1) / 2
    if normalize:
        u = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        dots = (u.sum(0).pow(2).sum(-1) - u.pow(2).sum((0, -1))) / 2  # [N]
        return 2 - 2 * dots.mean() / pairs
    squares = k * z.pow(2).sum((0, -1)) - z.sum(0).pow(2).sum(-1)  # [N]
    return squares.mean() / (pairs * emb)


def _mean_over_pairs(z: torch.Tensor, loss_f: Callable) -> torch.Tensor:
    """Mean of loss_f(z[i], z[j]) over the k(k-1)/2 pairs i < j of the leading view dim."""
    pairs = list(combinations(range(z.shape[0]), 2))
    return sum(loss_f(z[i], z[j]) for i, j in pairs) / len(pairs)


def _check_views(views: Sequence[torch.Tensor]) -> torch.Tensor:
    if len(views) < 2:
        raise ValueError(f"a self-supervised loss needs at least 2 views, got {len(views)}")
    return torch.stack(list(views))  # [k, bs, emb]


def whitened_mse_loss(
    views: Sequence[torch.Tensor],
    w_size: int,
    matrix: str = "cholesky",
    axis: str = "batch",
    groups: int = 1,
    random_groups: bool = False,
    minus: int = 1,
    w_iter: int = 1,
    eps: float = 0.0,
    normalize: bool = True,
    generator: torch.Generator | None = None,
    share: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The whitening family's loss (the CW-RGP study): W-MSE's scheme with any whitening.

    For each of w_iter iterations a random permutation splits the batch into bs / w_size
    sub-batches (the same split for every view); each view's sub-batch is whitened by
    `whiten(x, matrix, axis, groups, random_groups, minus, eps, generator)`; the loss is the
    mean over iterations, view pairs (i, j) and samples of 2 - 2 cos(z_i, z_j) (with
    normalize=False the plain MSE ||z_i - z_j||^2 / emb). All iterations, sub-batches and
    views are whitened in one call. With `share`, every sub-batch is still whitened (the
    same random draws as without it) and the mean runs over the worker's own samples.
    W-MSE is matrix="cholesky", axis="batch"; CW-RGP matrix="zca", axis="channel",
    random_groups=True. Returns a scalar.
    """
    h = _check_views(views)
    k, bs, emb = h.shape
    if bs % w_size:
        raise ValueError(f"w_size={w_size} must divide the batch size {bs}")
    device = generator.device if generator is not None else h.device
    perm = torch.rand(w_iter, bs, generator=generator, device=device).argsort(dim=-1)
    perm = perm.to(h.device)
    sub = h[:, perm.view(w_iter, bs // w_size, w_size)]  # [k, it, m, w, emb]
    z = whiten(sub, matrix, axis, groups, random_groups, minus, eps, generator)
    z = z.reshape(k, w_iter, bs, emb)
    if share is not None:
        rank, world = share
        own = torch.arange(rank * bs // world, (rank + 1) * bs // world, device=h.device)
        position = perm.argsort(dim=-1)[:, own]  # [it, bs / world]: where own samples went
        z = z[:, torch.arange(w_iter, device=h.device)[:, None], position]
    return _mean_pair_distance(z.reshape(k, -1, emb), normalize)


def wmse_loss(
    views: Sequence[torch.Tensor],
    w_size: int,
    w_iter: int = 1,
    eps: float = 0.0,
    normalize: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """W-MSE (Ermolov et al., ICML 2021): MSE between Cholesky-whitened views.

    `whitened_mse_loss` with z = cholesky_whiten of each view's sub-batch of `w_size`.
    """
    return whitened_mse_loss(
        views,
        w_size,
        "cholesky",
        "batch",
        w_iter=w_iter,
        eps=eps,
        normalize=normalize,
        generator=generator,
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

    `whitened_mse_loss` with each view's sub-batch whitened by `channel_whiten` (ZCA of the
    w_size x w_size sample covariance within each of `groups` random channel groups).
    """
    return whitened_mse_loss(
        views,
        w_size,
        "zca",
        "channel",
        groups,
        True,
        w_iter=w_iter,
        eps=eps,
        normalize=normalize,
        generator=generator,
    )


def trace_loss(z: torch.Tensor, axis: str = "channel") -> torch.Tensor:
    """INTL's trace loss of whitened views z: [..., N, D] (N samples of D features).

    axis "channel": var_i = unbiased variance of sample i over its D features, summed over
    the N samples; axis "batch": var_j = unbiased variance of feature j over the N samples,
    summed over the D features. TL = sum (var - 1)^2, one value per leading slice: [...].
    For a whitened z the variances are the diagonal of its covariance, so TL pulls that
    covariance's trace (the sum of its eigenvalues) towards full rank.
    """
    var = z.var(dim=-1 if axis == "channel" else -2, correction=1)
    return (var - 1).square().sum(-1)


def intl_trade_off(axis: str, bs: int, emb: int) -> float:
    """INTL's default trace-loss weight: (log2(bs) - 3) / 100 on the channel axis, where the
    N x N covariance grows with the (global) batch size bs, (log2(emb) - 3) / 100 on the batch
    axis, where the D x D one grows with the embedding size."""
    return (math.log2(bs if axis == "channel" else emb) - 3) * 0.01


def intl_loss(
    views: Sequence[torch.Tensor],
    trade_off: float,
    iters: int = 4,
    axis: str = "channel",
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """INTL (Weng et al., ICLR 2024): the MSE of IterNorm-whitened views plus a trace loss.

    Each view h_i: [N, D] is whitened on its own by IterNorm with `iters` = T steps,
    t_i = whiten(h_i, "iternorm", axis, iters=T) (no stop-gradient), and with
    nmse(a, b) = 2 - 2 mean_rows cos(a, b) and TL the `trace_loss`, for k views
        L = sum_{i=1}^{k-1} [nmse(t_i, t_0) + trade_off (TL(t_i) + TL(t_0))] / (k - 1).
    With `target` (INTL-M: the EMA network's projection [N, D] of view 0, no gradient), the
    views are the online network's other k - 1 views and, with t_k the whitened target,
        L = sum_i [nmse(t_i, t_k) + trade_off TL(t_i)] / (k - 1).
    All views are whitened in one batched call. Returns a scalar.
    """
    h = torch.stack(list(views))  # [k, N, D]
    if target is None and len(h) < 2:
        raise ValueError(f"INTL needs at least 2 views, got {len(h)}")
    if target is not None:
        h = torch.cat([h, target.detach()[None]])  # the target last
    t = whiten(h, "iternorm", axis, iters=iters)
    tl = trace_loss(t, axis)
    if target is None:
        anchor, others, anchor_tl = t[0], range(1, len(t)), tl[0]
    else:
        anchor, others, anchor_tl = t[-1], range(len(t) - 1), 0
    terms = [norm_mse(t[i], anchor) + trade_off * (tl[i] + anchor_tl) for i in others]
    return sum(terms) / len(terms)


@_no_autocast
def sample_covariance_penalty(views: Sequence[torch.Tensor]) -> torch.Tensor:
    """CW-RGP's covariance term (its ImageNet code, `--cov_w`), summed over views.

    For each view h [bs, emb] (the whole local batch): centre each sample over its
    channels, x = h - mean_c(h); C = x x^T / (emb - 1) is the bs x bs covariance of the
    samples; the term is sum_{a != b} C_ab^2 / bs. Computed in float32 (or float64).
    """
    h = _at_least_float32(_check_views(views))
    k, bs, emb = h.shape
    x = h - h.mean(dim=-1, keepdim=True)
    cov = x @ x.transpose(-1, -2) / (emb - 1)  # [k, bs, bs]
    off_diagonal = cov.pow(2).sum() - cov.diagonal(dim1=-2, dim2=-1).pow(2).sum()
    return off_diagonal / bs


def _nt_xent(
    x0: torch.Tensor, x1: torch.Tensor, tau: float, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """SimCLR's loss for one pair of views x0, x1: [N, emb] (rows already normalised or not).

    Anchor x0[b] has positive x1[b] and negatives x1[b'] and x0[b'] for b' != b (2N - 2);
    the result is the cross-entropy averaged over anchors of both views: the rows `rows`
    of each view (all N by default).
    """
    n = x0.shape[0]
    target = torch.arange(n, device=x0.device) if rows is None else rows
    self_mask = target[:, None] == torch.arange(n, device=x0.device)  # no host-side check

    def one_side(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        anchors = a[target]
        logits_ab = anchors @ b.T / tau
        logits_aa = (anchors @ a.T / tau).masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), target)

    return (one_side(x0, x1) + one_side(x1, x0)) / 2


@_no_autocast
def contrastive_loss(
    views: Sequence[torch.Tensor],
    tau: float = 0.5,
    normalize: bool = True,
    share: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Contrastive (SimCLR-style NT-Xent) loss, averaged over view pairs.

    For each pair, L = -1/2N sum_anchors log softmax of the positive's similarity among
    the 2N - 1 others, similarity = cos / tau (dot / tau with normalize=False). With `share`
    the anchors are the worker's own rows; the negatives are still every other row.
    """
    h = _at_least_float32(_check_views(views))
    if normalize:
        h = F.normalize(h, dim=-1)
    rows = None
    if share is not None:
        rank, world = share
        n = h.shape[1] // world
        rows = torch.arange(rank * n, (rank + 1) * n, device=h.device)
    return _mean_over_pairs(h, lambda a, b: _nt_xent(a, b, tau, rows))


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


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 if it is float64."""
    return x if x.dtype == torch.float64 else x.float()


def _two_views(views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2 views of a two-view loss, in float32 (float64 stays float64)."""
    if len(views) != 2:
        raise ValueError(f"this loss takes exactly 2 views, got {len(views)}")
    return _at_least_float32(views[0]), _at_least_float32(views[1])


def _off_diagonal(c: torch.Tensor) -> torch.Tensor:
    """The square matrix c with its diagonal set to 0."""
    return c - torch.diag_embed(torch.diagonal(c))


@_no_autocast
def barlow_twins_loss(
    views: Sequence[torch.Tensor], lambd: float = 0.008, scale: str = "emb"
) -> torch.Tensor:
    """Barlow Twins (Zbontar et al., 2021) on batch-normalised views z1, z2: [N, D].

    C = z1^T z2 / D (scale="emb", the CW-RGP code) or / N (scale="batch", the paper);
    L = sum_i (C_ii - 1)^2 + lambd * sum_{i != j} C_ij^2.
    """
    z1, z2 = _two_views(views)
    n, d = z1.shape
    c = z1.T @ z2 / (d if scale == "emb" else n)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    return on_diag + lambd * _off_diagonal(c).pow(2).sum()


@_no_autocast
def vicreg_loss(
    views: Sequence[torch.Tensor], sim: float = 25.0, var: float = 25.0, cov: float = 1.0
) -> torch.Tensor:
    """VICReg (Bardes et al., 2022) on projections z1, z2: [N, D].

    L = sim ||z1 - z2||^2 / (N D)
      + var sum_v mean_j relu(1 - sqrt(Var(z_v[:, j]) + 1e-4))      (unbiased variance)
      + cov sum_v sum_{i != j} Cov(z_v)_ij^2 / D                     (divisor N - 1)
    """
    z1, z2 = _two_views(views)
    n, d = z1.shape
    variance = sum(F.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean() for z in (z1, z2))
    covariance = 0
    for z in (z1, z2):
        zc = z - z.mean(dim=0)
        covariance = covariance + _off_diagonal(zc.T @ zc / (n - 1)).pow(2).sum() / d
    return sim * F.mse_loss(z1, z2) + var * variance + cov * covariance


@_no_autocast
def simsiam_loss(
    predictions: Sequence[torch.Tensor], projections: Sequence[torch.Tensor]
) -> torch.Tensor:
    """SimSiam (Chen and He, 2021): L = (D(p1, z2) + D(p2, z1)) / 2 with D(p, z) = -mean cos(p,
    z) over rows and no gradient into the projections z (stop-gradient)."""
    p1, p2 = _two_views(predictions)
    z1, z2 = (z.detach() for z in _two_views(projections))
    cos = F.cosine_similarity
    return -(cos(p1, z2, dim=-1).mean() + cos(p2, z1, dim=-1).mean()) / 2


def _zero_icl_whitening(z: torch.Tensor) -> torch.Tensor:
    """zero-ICL's detached ZCA matrix of the N x N Gram matrix of z: [N, d] -> [N, N].

    G = z z^T / (d - 1), U diag(s) U^T = 0.9 G + 0.1 I, W = U diag((s + 1e-5)^-1/2) U^T,
    computed in float64 (eigh: the matrix is symmetric positive definite).
    """
    with torch.no_grad():
        x = z.double()
        gram = x @ x.T / (x.shape[1] - 1)
        eye = torch.eye(len(x), dtype=x.dtype, device=x.device)
        s, u = torch.linalg.eigh(0.9 * gram + 0.1 * eye)
        return ((u * (s + 1e-5).rsqrt()) @ u.T).to(z.dtype)


@_no_autocast
def zero_icl_loss(views: Sequence[torch.Tensor]) -> torch.Tensor:
    """zero-ICL, as the CW-RGP code's zero_icl.py, on projections z1, z2: [N, d].

    Each row is standardised over its d features (unbiased std); Z_v = W_v z_v with W_v the
    detached ZCA whitening of the N x N Gram matrix (`_zero_icl_whitening`);
    C = Z1 Z2^T / d (N x N), L = sum_i (C_ii - 1)^2.
    """
    z1, z2 = _two_views(views)
    d = z1.shape[1]
    z1, z2 = ((z - z.mean(dim=1, keepdim=True)) / z.std(dim=1, keepdim=True) for z in (z1, z2))
    w1, w2 = (_zero_icl_whitening(z) @ z for z in (z1, z2))
    return ((w1 * w2).sum(dim=1) / d - 1).pow(2).sum()


# ---- LeJEPA: SIGReg (Balestriero and LeCun, 2025) ----


def sigreg_directions(
    dim: int,
    slices: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """SIGReg's slice directions A: [dim, slices], each column a standard Gaussian draw
    divided by its norm (a uniform direction on the unit sphere of R^dim), as the reference's
    `SlicingUnivariateTest` draws them (sampler "gaussian"). Drawn on the generator's device
    (`device` without one): no host data, so a CUDA graph that registers the generator
    captures the draw and every replay draws new directions."""
    on = generator.device if generator is not None else device
    a = torch.randn(dim, slices, generator=generator, device=on, dtype=dtype)
    return a / a.norm(dim=0)


def epps_pulley(x: torch.Tensor, t_max: float = 3.0, points: int = 17) -> torch.Tensor:
    """The Epps-Pulley statistic of each column of x: [..., N, K] -> [..., K].

    With the empirical characteristic function phi_hat(t) = mean_n exp(i t x_n) and the
    standard normal's phi(t) = exp(-t^2 / 2), weighted by phi itself:
        T = N * integral_{-t_max}^{t_max} |phi_hat(t) - phi(t)|^2 phi(t) dt,
    where |phi_hat - phi|^2 = (mean_n cos(t x_n) - phi(t))^2 + (mean_n sin(t x_n))^2 is even
    in t. As the reference's `EppsPulley` (integration "trapezoid"), the integral is the
    trapezoid rule on `points` equispaced nodes t_j = j dt of [0, t_max], dt = t_max /
    (points - 1), doubled: dt (g_0 + 2 g_1 + ... + 2 g_{P-2} + g_{P-1}) with g = |.|^2 phi,
    which is the trapezoid rule on the 2 points - 1 nodes of [-t_max, t_max]. T is 0 only
    if every phi_hat(t_j) = phi(t_j), and grows like N for a fixed non-Gaussian law.
    """
    n = x.shape[-2]
    t = torch.linspace(0, t_max, points, dtype=x.dtype, device=x.device)
    phi = (-0.5 * t * t).exp()
    xt = x.unsqueeze(-1) * t  # [..., N, K, P]
    err = (xt.cos().mean(-3) - phi).square() + xt.sin().mean(-3).square()  # [..., K, P]
    g = err * phi
    dt = t_max / (points - 1)
    return n * dt * (2 * g.sum(-1) - g[..., 0] - g[..., -1])


def sigreg(
    z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0, points: int = 17
) -> torch.Tensor:
    """SIGReg: the Epps-Pulley statistic of the projections of z: [..., N, D] on the unit
    directions: [D, K], averaged over the K slices and the leading dims (the reference's
    `SlicingUnivariateTest(EppsPulley(t_max, points), K, reduction="mean")`). Scalar."""
    return epps_pulley(z @ directions.to(z.dtype), t_max, points).mean()


@_no_autocast
def lejepa_loss(
    views: Sequence[torch.Tensor],
    lambd: float,
    directions: torch.Tensor,
    t_max: float = 3.0,
    points: int = 17,
) -> torch.Tensor:
    """LeJEPA (Balestriero and LeCun, arXiv 2511.08544) on k views z_v: [N, D] of N images.

    With the views' centre c = mean_v z_v (every view a global view: the same crop size),
        inv = mean_{v, n, d} (c_nd - z_vnd)^2,
        L   = (1 - lambd) inv + lambd mean_v SIGReg(z_v),
    each view's SIGReg taken over its own N rows with the same `directions` [D, K], as the
    reference's MINIMAL.md computes them on its [V, N, D] projections. No stop-gradient:
    the gradient flows through the centre too. In float32 (float64 stays float64).
    """
    z = _check_views(views)
    z = _at_least_float32(z)
    invariance = (z.mean(0) - z).square().mean()
    return (1 - lambd) * invariance + lambd * sigreg(z, directions, t_max, points)
