"""Whitening transforms of the W-MSE and CW-RGP papers.

Both functions compute in float32 (float64 input stays float64), also under bf16 autocast,
and take many independent slices at once, so that one call whitens every sub-batch of
every view with a single batched factorisation.
"""

from __future__ import annotations

import warnings

import torch

# Shrinkage values tried, in order, for a slice whose Cholesky factorisation failed.
RETRY_EPS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


class FactorisationStats:
    """Counts failed Cholesky factorisations, so the trainer can report them per epoch.

    `retries` counts slices refactorised with more shrinkage; `fallbacks` counts slices that
    no shrinkage in RETRY_EPS could factorise (only non-finite or absurdly scaled input),
    which are then standardised per feature instead of whitened.
    """

    def __init__(self) -> None:
        self.retries = 0
        self.fallbacks = 0

    def take(self) -> dict[str, int]:
        """Returns the counts since the last call and resets them."""
        counts = {"whiten_retries": self.retries, "whiten_fallbacks": self.fallbacks}
        self.retries = self.fallbacks = 0
        return counts


stats = FactorisationStats()


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _shrink(cov: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """(1 - eps) cov + eps I for `cov` of shape [..., d, d]; eps a float or a [...] tensor."""
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    if isinstance(eps, torch.Tensor):
        eps = eps[..., None, None]
    return (1 - eps) * cov + eps * eye


def _cholesky_with_retries(cov: torch.Tensor, eps: float) -> torch.Tensor:
    """Lower Cholesky factor of the shrunk covariance, retrying failed slices with more eps.

    cov: [B, d, d] (leading dims already flattened). Returns L: [B, d, d], never NaN for
    finite input. Only the failed slices are refactorised.
    """
    L, info = torch.linalg.cholesky_ex(_shrink(cov, eps))
    failed = torch.nonzero(info).flatten()
    if failed.numel() == 0:  # one device sync per call; the common case ends here
        return L
    L = L.clone()
    for retry_eps in RETRY_EPS:
        if retry_eps <= eps:
            continue
        stats.retries += failed.numel()
        L_f, info_f = torch.linalg.cholesky_ex(_shrink(cov[failed], retry_eps))
        ok = info_f == 0
        L[failed[ok]] = L_f[ok]
        failed = failed[~ok]
        if failed.numel() == 0:
            return L
    # Nothing factorised: fall back to the diagonal (per-feature standardisation).
    stats.fallbacks += failed.numel()
    warnings.warn(
        f"cholesky_whiten: {failed.numel()} slice(s) could not be factorised even with "
        f"eps={RETRY_EPS[-1]}; they are standardised instead. Non-finite embeddings?",
        RuntimeWarning,
        stacklevel=3,
    )
    diag = torch.diagonal(cov[failed], dim1=-2, dim2=-1).clamp_min(RETRY_EPS[-1])
    L[failed] = torch.diag_embed(diag.sqrt())
    return L


def cholesky_whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """W-MSE's whitening: `W (x - mean)` for every leading slice of `x`.

    x: [..., n, d], n samples of d features per slice. Per slice:
        xc  = x - mean over the n samples
        cov = xc^T xc / (n - 1)                          [d, d]
        L   = cholesky((1 - eps) cov + eps I),  W = L^-1
        out = xc W^T                                      [n, d]
    so that out^T out / (n - 1) = I. Gradients flow through the factorisation, as in the
    reference code. A slice whose factorisation fails is retried with eps from RETRY_EPS
    and counted in `stats`. Returns float32 (float64 for float64 input).
    """
    n, d = x.shape[-2:]
    if n < 2:
        raise ValueError(f"cholesky_whiten needs at least 2 samples per slice, got n={n}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        xc = x.to(_compute_dtype(x))
        xc = xc - xc.mean(dim=-2, keepdim=True)
        flat = xc.reshape(-1, n, d)
        cov = flat.transpose(-1, -2) @ flat / (n - 1)
        L = _cholesky_with_retries(cov, eps)
        out = torch.linalg.solve_triangular(L, flat.transpose(-1, -2), upper=False)
        return out.transpose(-1, -2).reshape(xc.shape)


def random_channel_permutations(
    shape: tuple[int, ...], d: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """Independent random permutations of range(d), one per leading index: [*shape, d]."""
    draw_on = generator.device if generator is not None else device
    return torch.rand(*shape, d, generator=generator, device=draw_on).argsort(dim=-1).to(device)


def channel_whiten(
    x: torch.Tensor, groups: int, eps: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """CW-RGP's channel whitening with random group partition, for x: [..., n, d].

    Per slice [n, d]:
        xc  = x - mean over the d channels of each sample
        a random permutation splits the d channels into `groups` groups of c = d / groups;
        X_k = xc[:, group k]                               [n, c]
        cov = X_k X_k^T / (c - 1)                          [n, n]
        W   = U diag(lambda^-1/2) U^T, eigh of (1 - eps) cov + eps I   (ZCA, symmetric)
        out[:, group k] = W X_k, then the permutation is undone.
    Every leading slice gets its own permutation, as the reference draws one per view and
    sub-batch. The n x n eigendecompositions run in float64: they are small, and float32
    eigh loses 1e-3 of accuracy on ill-conditioned groups. Eigenvalues are floored at 1e-6
    of the largest, so a rank-deficient group gives large but finite values, not inf.
    """
    *lead, n, d = x.shape
    if d % groups:
        raise ValueError(f"channel_whiten: groups={groups} must divide the {d} channels")
    c = d // groups
    if c < 2:
        raise ValueError(f"channel_whiten: need at least 2 channels per group, got {c}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        xc = x.to(_compute_dtype(x))
        xc = (xc - xc.mean(dim=-1, keepdim=True)).reshape(-1, n, d)
        perm = random_channel_permutations((xc.shape[0],), d, x.device, generator)
        xg = xc.gather(-1, perm[:, None, :].expand_as(xc))
        xg = xg.reshape(-1, n, groups, c).permute(0, 2, 1, 3)  # [B, g, n, c]
        cov = _shrink(xg @ xg.transpose(-1, -2) / (c - 1), eps)  # [B, g, n, n]
        eigvals, eigvecs = torch.linalg.eigh(cov.double())
        floor = eigvals[..., -1:].clamp_min(1e-30) * 1e-6
        scale = eigvals.clamp_min(floor).rsqrt()
        W = ((eigvecs * scale[..., None, :]) @ eigvecs.transpose(-1, -2)).to(xg.dtype)
        out = (W @ xg).permute(0, 2, 1, 3).reshape(-1, n, d)
        out = torch.empty_like(out).scatter_(-1, perm[:, None, :].expand_as(out), out)
        return out.reshape(*lead, n, d)
