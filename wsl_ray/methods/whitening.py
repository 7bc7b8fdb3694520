"""The whitening family of the W-MSE and CW-RGP papers, as one batched operator.

`whiten(x, matrix, axis, groups, random_groups, minus, eps, generator, iters)` whitens every
leading slice of x: [..., n, d] (n samples of d features). Its two named settings are W-MSE's
`cholesky_whiten` (Cholesky, batch axis) and CW-RGP's `channel_whiten` (ZCA, channel axis,
random groups); INTL's IterNorm is matrix "iternorm" with `iters` Newton steps. Everything
computes in float32 (float64 input stays float64), also under bf16 autocast, and one call
factorises every slice and group at once.

Nothing here reads a device value on the host, with one exception: on CUDA the ZCA matrix
comes from a Newton-Schulz iteration whose range is checked once per call (`zca_matrix`),
unless the caller defers that check (`ns_check`, as the training loop does).
Factorisation failures are counted on the device and read once per epoch by `stats.take()`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

# Shrinkage values tried, in order, for a slice whose Cholesky factorisation failed.
RETRY_EPS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
MATRICES = ("cholesky", "zca", "pca", "iternorm", "bn", "none")
AXES = ("batch", "channel")
# Exact ZCA and PCA floor the eigenvalues of each matrix at this fraction of the largest.
EIG_FLOOR = 1e-6
# Newton-Schulz ZCA: steps, and the largest entry of |W S W - I| (the whitened covariance's
# distance from I) under which its W is used instead of the exact path.
NS_ITERS = 24
NS_TOL = {torch.float32: 1e-3, torch.float64: 1e-9}
# Device types whose ZCA uses the iteration. Not the CPU: there LAPACK's eigh of CW-RGP's
# 64 x 64 groups costs less than the iteration's 72 products and their backward
# (BENCHMARKS.md, "Whitening losses").
NS_DEVICES = ("cuda",)
# IterNorm's Newton steps when not given: INTL's default (its --iters 4).
ITERNORM_ITERS = 4

Matrix = Literal["cholesky", "zca", "pca", "iternorm", "bn", "none"]
Axis = Literal["batch", "channel"]


class FactorisationStats:
    """Counts failed Cholesky factorisations, so the trainer can report them per epoch.

    `retries` counts, per slice, the shrinkage levels of RETRY_EPS it was refactorised with
    (a slice that succeeds at the second retry level counts 2); `fallbacks` counts slices that
    no shrinkage in RETRY_EPS could factorise (only non-finite or absurdly scaled input), which
    are then standardised per feature instead of whitened (and counted K - 1 retries, K the
    number of levels tried). The counts stay on the device of the data, one tensor per device
    for the whole run, updated in place; `take()` reads and zeroes them.
    """

    def __init__(self) -> None:
        self._counts: dict[torch.device, torch.Tensor] = {}

    def add(self, counts: torch.Tensor) -> None:
        """Adds a [2] int64 tensor (retries, fallbacks) without reading it."""
        if counts.device in self._counts:
            self._counts[counts.device] += counts
        else:
            self._counts[counts.device] = counts.clone()

    def take(self) -> dict[str, int]:
        """Returns the counts since the last call and resets them (one host read per device).

        Warns once if any slice fell back to per-feature standardisation.
        """
        retries = fallbacks = 0
        for counts in self._counts.values():
            r, f = counts.tolist()
            retries, fallbacks = retries + r, fallbacks + f
            counts.zero_()  # in place: a captured CUDA graph keeps adding into this tensor
        if fallbacks:
            warnings.warn(
                f"whitening: {fallbacks} slice(s) could not be factorised even with "
                f"eps={RETRY_EPS[-1]} and were standardised instead. Non-finite embeddings?",
                RuntimeWarning,
                stacklevel=2,
            )
        return {"whiten_retries": retries, "whiten_fallbacks": fallbacks}


stats = FactorisationStats()


class NewtonSchulzCheck:
    """What `zca_matrix` does with its Newton-Schulz check, set for a block by `using(mode)`:

    "host" (the default): reads "every slice converged" on the host once per call and takes
        the exact path for the slices that did not (a `torch.cond` under torch.compile);
    "deferred": never reads it: ORs "some slice did not converge" into `flag(device)` (one
        0-dim bool tensor per device for the whole run, updated in place, so a CUDA graph
        keeps writing into it) and returns the iteration's W as it is; the caller reads the
        flag later and redoes the work on the exact path (`training.deferred`);
    "exact": the exact path for every slice (that redone work).
    """

    def __init__(self) -> None:
        self.mode = "host"
        self._flags: dict[torch.device, torch.Tensor] = {}

    def flag(self, device: torch.device) -> torch.Tensor:
        """The device's failure flag (made False on first use; the caller zeroes it)."""
        if device not in self._flags:
            self._flags[device] = torch.zeros((), dtype=torch.bool, device=device)
        return self._flags[device]

    @contextmanager
    def using(self, mode: Literal["host", "deferred", "exact"]) -> Iterator[None]:
        previous, self.mode = self.mode, mode
        try:
            yield
        finally:
            self.mode = previous


ns_check = NewtonSchulzCheck()


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _eye(p: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(p, dtype=like.dtype, device=like.device)


def _shrink(cov: torch.Tensor, eps: float) -> torch.Tensor:
    """(1 - eps) cov + eps I for `cov` of shape [..., p, p]."""
    return (1 - eps) * cov + eps * _eye(cov.shape[-1], cov)


def cholesky_factor(cov: torch.Tensor, eps: float) -> torch.Tensor:
    """Lower Cholesky factor of (1 - eps) cov + eps I, per slice of cov: [..., p, p].

    Without a data-dependent branch: every shrinkage level (eps, then each RETRY_EPS above
    it) of every slice is factorised in one batched call without gradients; each slice takes
    the first level that succeeds and is factorised once more at that level, with gradients.
    A slice that no level factorises gets the diagonal factor sqrt(max(diag(cov), 1e-2)),
    i.e. it is standardised per feature. Counts go to `stats` on the device.
    """
    levels = [eps] + [e for e in RETRY_EPS if e > eps]
    shrunk = torch.stack([_shrink(cov, e) for e in levels])  # [K, ..., p, p]
    with torch.no_grad():
        ok = torch.linalg.cholesky_ex(shrunk)[1] == 0  # [K, ...]
    any_ok = ok.any(0)
    first = torch.where(any_ok, ok.byte().argmax(0), len(levels) - 1)  # first success
    chosen = shrunk.gather(0, first[None, ..., None, None].expand_as(shrunk[:1]))[0]
    chosen = torch.where(any_ok[..., None, None], chosen, _eye(cov.shape[-1], cov))
    L, info = torch.linalg.cholesky_ex(chosen)
    use_diag = (info != 0) | ~any_ok
    diag = torch.diagonal(cov, dim1=-2, dim2=-1).clamp_min(RETRY_EPS[-1]).sqrt()
    L = torch.where(use_diag[..., None, None], torch.diag_embed(diag), L)
    stats.add(torch.stack([first.sum(), use_diag.sum()]))
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
    and counted in `stats` (see `cholesky_factor`). Returns float32 (float64 for float64
    input). The same as `whiten(x, "cholesky", "batch", eps=eps)`.
    """
    return whiten(x, "cholesky", "batch", eps=eps)


def random_channel_permutations(
    shape: tuple[int, ...], d: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """Independent random permutations of range(d), one per leading index: [*shape, d].

    Drawn on the generator's device (the data's device without one). A generator breaks a
    fullgraph torch.compile (torch 2.14); draw outside the compiled region and pass the result
    to `whiten_grouped`.
    """
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
        W   = ((1 - eps) cov + eps I)^-1/2   (ZCA, symmetric; see `zca_matrix`)
        out[:, group k] = W X_k, then the permutation is undone.
    Every leading slice gets its own permutation, as the reference draws one per view and
    sub-batch. The same as `whiten(x, "zca", "channel", groups, True, 1, eps, generator)`.
    """
    return whiten(x, "zca", "channel", groups, True, 1, eps, generator)


def _check(
    shape: tuple[int, ...],
    matrix: str,
    axis: str,
    groups: int,
    minus: int,
    eps: float,
    iters: int = ITERNORM_ITERS,
) -> None:
    """Raises ValueError naming the bad argument, before any work."""
    if matrix not in MATRICES:
        raise ValueError(f"whiten: matrix={matrix!r}; allowed: {', '.join(MATRICES)}")
    if axis not in AXES:
        raise ValueError(f"whiten: axis={axis!r}; allowed: {', '.join(AXES)}")
    if len(shape) < 2:
        raise ValueError(f"whiten: x must be [..., n, d], got shape {tuple(shape)}")
    n, d = shape[-2:]
    if not isinstance(groups, int) or groups < 1 or d % groups:
        raise ValueError(f"whiten: groups={groups} must divide the {d} channels")
    if matrix in ("bn", "none") and groups > 1:
        raise ValueError(f"whiten: matrix={matrix!r} has no groups; use groups=1")
    if not isinstance(minus, int) or minus < 0:
        raise ValueError(f"whiten: minus={minus} must be an integer >= 0")
    if not 0 <= eps < 1:
        raise ValueError(f"whiten: eps={eps} must be in [0, 1)")
    if matrix == "iternorm" and (not isinstance(iters, int) or iters < 1):
        raise ValueError(f"whiten: iters={iters} must be an integer >= 1 (IterNorm's steps)")
    if matrix == "none":
        return
    if axis == "batch" and n - minus < 1:
        raise ValueError(f"whiten: batch axis needs at least {minus + 1} samples, got n={n}")
    if axis == "channel" and d // groups - minus < 1:
        raise ValueError(
            f"whiten: channel axis needs at least {minus + 1} channels per group, "
            f"got {d // groups} (d={d}, groups={groups})"
        )


def whiten(
    x: torch.Tensor,
    matrix: Matrix = "cholesky",
    axis: Axis = "batch",
    groups: int = 1,
    random_groups: bool = False,
    minus: int = 1,
    eps: float = 0.0,
    generator: torch.Generator | None = None,
    iters: int = ITERNORM_ITERS,
) -> torch.Tensor:
    """The whitening family of the CW-RGP study, for every leading slice of x: [..., n, d].

    With random_groups, each leading slice draws its own permutation of the d channels (from
    `generator`, or the global RNG) and the output is un-permuted; else groups are the
    contiguous chunks of channels. `iters` is IterNorm's number of steps (matrix "iternorm"
    only). See `whiten_grouped` for the maths.
    """
    _check(x.shape, matrix, axis, groups, minus, eps, iters)
    perm = None
    if random_groups and matrix not in ("bn", "none"):  # both are permutation-equivariant
        lead = x.shape[:-2].numel()
        perm = random_channel_permutations((lead,), x.shape[-1], x.device, generator)
    return whiten_grouped(x, perm, matrix, axis, groups, minus, eps, iters)


def whiten_grouped(
    x: torch.Tensor,
    perm: torch.Tensor | None,
    matrix: Matrix = "cholesky",
    axis: Axis = "batch",
    groups: int = 1,
    minus: int = 1,
    eps: float = 0.0,
    iters: int = ITERNORM_ITERS,
) -> torch.Tensor:
    """`whiten` with the channel permutation given: perm [prod(leading dims), d] or None.

    Per slice [n, d]:
        axis "batch":   xc = x - mean over the n samples (per channel); observations are the
                        n samples, variables the c = d / groups channels of a group, and the
                        covariance divisor is n - minus.
        axis "channel": xc = x - mean over all d channels (per sample, before grouping);
                        observations are the c channels of a group, variables the n samples,
                        and the covariance divisor is c - minus.
    Group k holds the channels perm[k c : (k+1) c] (contiguous chunks without perm). With O_k
    its [observations, variables] matrix, S = (1 - eps) O_k^T O_k / (m - minus) + eps I and
    each observation o becomes W o, where W is
        cholesky: L^-1 with L L^T = S (retries and fallback as in `cholesky_factor`);
        zca:      S^-1/2, symmetric (`zca_matrix`);
        pca:      diag(lambda)^-1/2 U^T with S = U diag(lambda) U^T, lambda descending and the
                  eigenvector signs arbitrary (float64 eigh; eigenvalues floored at
                  EIG_FLOOR x the largest);
        iternorm: IterNorm's P_T / sqrt(tr S) after `iters` = T Newton steps from P_0 = I
                  (`iternorm_matrix`): symmetric, and S^-1/2 only in the limit T -> inf;
        bn:       diag(S)^-1/2, per-variable standardisation (groups = 1 only);
        none:     identity, and no centring: x is returned as it is (groups = 1 only).
    Then the channels are put back in their original order. The whitened covariance
    W S W^T is I within each group (diag(W S W^T) = 1 for bn; for iternorm only
    approximately, its spectrum shrunk towards 1 rather than set to it). Returns float32
    (float64 for float64 input), also under autocast. The reference's BN method is matrix
    "bn", minus=0 (its eps adds to the variance instead of shrinking it; equal at eps = 0).
    """
    _check(x.shape, matrix, axis, groups, minus, eps, iters)
    *lead, n, d = x.shape
    with torch.autocast(device_type=x.device.type, enabled=False):
        xc = x.to(_compute_dtype(x))
        if matrix == "none":
            return xc
        xc = xc - xc.mean(dim=-2 if axis == "batch" else -1, keepdim=True)
        xc = xc.reshape(-1, n, d)
        if perm is not None:
            xc = xc.gather(-1, perm[:, None, :].expand_as(xc))
        c = d // groups
        grouped = xc.reshape(-1, n, groups, c).permute(0, 2, 1, 3)  # [B, g, n, c]
        obs = grouped if axis == "batch" else grouped.transpose(-1, -2)  # [B, g, m, p]
        cov = obs.transpose(-1, -2) @ obs / (obs.shape[-2] - minus)  # [B, g, p, p]
        out = _apply(matrix, cov, eps, obs, iters)
        out = out if axis == "batch" else out.transpose(-1, -2)
        out = out.permute(0, 2, 1, 3).reshape(-1, n, d)
        if perm is not None:
            out = torch.empty_like(out).scatter_(-1, perm[:, None, :].expand_as(out), out)
        return out.reshape(*lead, n, d)


def _apply(
    matrix: str, cov: torch.Tensor, eps: float, obs: torch.Tensor, iters: int
) -> torch.Tensor:
    """W o for every observation row o of obs: [..., m, p], W from S = shrunk cov: [..., p, p]."""
    if matrix == "cholesky":
        L = cholesky_factor(cov, eps)
        return torch.linalg.solve_triangular(L, obs.transpose(-1, -2), upper=False).mT
    S = _shrink(cov, eps)
    if matrix == "bn":
        var = torch.diagonal(S, dim1=-2, dim2=-1)
        return obs * var.clamp_min(torch.finfo(var.dtype).tiny).rsqrt()[..., None, :]
    if matrix == "zca":
        return obs @ zca_matrix(S)  # W symmetric: o W^T = o W
    if matrix == "iternorm":
        return obs @ iternorm_matrix(S, iters)  # symmetric too
    return obs @ pca_matrix(S).transpose(-1, -2)


def _eigh_floored(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 eigh of S with eigenvalues floored at EIG_FLOOR x the largest (ascending)."""
    eigvals, eigvecs = torch.linalg.eigh(S.double())
    floor = eigvals[..., -1:].clamp_min(1e-30) * EIG_FLOOR
    return eigvals.clamp_min(floor), eigvecs


def pca_matrix(S: torch.Tensor) -> torch.Tensor:
    """diag(lambda)^-1/2 U^T for S = U diag(lambda) U^T, lambda descending: [..., p, p].

    PCA needs the eigenvectors themselves, so it keeps the exact float64 eigh (no iteration
    gives them); signs are those eigh returns.
    """
    eigvals, eigvecs = _eigh_floored(S)
    W = eigvecs.flip(-1).transpose(-1, -2) * eigvals.flip(-1).rsqrt()[..., :, None]
    return W.to(S.dtype)


def zca_exact(S: torch.Tensor) -> torch.Tensor:
    """S^-1/2 by float64 eigh, eigenvalues floored at EIG_FLOOR x the largest: [..., p, p].

    A slice with a non-finite entry gives NaN (eigh is not called on it: it would raise).
    """
    finite = torch.isfinite(S).all(dim=-1).all(dim=-1)[..., None, None]
    eigvals, eigvecs = _eigh_floored(torch.where(finite, S, _eye(S.shape[-1], S)))
    W = (eigvecs * eigvals.rsqrt()[..., None, :]) @ eigvecs.transpose(-1, -2)
    return torch.where(finite, W.to(S.dtype), torch.nan)


def newton_schulz(S: torch.Tensor, iters: int = NS_ITERS) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled Newton-Schulz iteration for S^-1/2, batched over S: [..., p, p].

    With t = tr(S), Y_0 = S / t (eigenvalues in (0, 1]), Z_0 = I and, `iters` times,
        T = (3 I - Z Y) / 2,   Y <- Y T,   Z <- T Z,
    Z converges to (S / t)^-1/2 and W = Z / sqrt(t). A small eigenvalue converges after about
    log(t / lambda) / log(2.25) + 5 steps (24 steps: condition numbers to about 1e5 at p = 64).
    Also returns, per slice, the residual max |W S W - I| (without gradients). Every iterate
    is a polynomial in S, so W commutes with S and each eigen-component of W has relative
    error |sqrt(1 + e) - 1| <= |e| / 2 for e the residual's eigenvalue there. Only matrix
    products: one batched kernel per product on any device, and differentiable.
    """
    eye = _eye(S.shape[-1], S)
    trace = torch.diagonal(S, dim1=-2, dim2=-1).sum(-1).clamp_min(torch.finfo(S.dtype).tiny)
    Y, Z = S / trace[..., None, None], eye.expand_as(S)
    for _ in range(iters):
        T = 1.5 * eye - 0.5 * (Z @ Y)
        Y, Z = Y @ T, T @ Z
    W = Z * trace.rsqrt()[..., None, None]
    with torch.no_grad():
        residual = (W @ S @ W - eye).abs().amax(dim=(-2, -1))
    return W, residual


def iternorm_matrix(S: torch.Tensor, iters: int = ITERNORM_ITERS) -> torch.Tensor:
    """IterNorm's whitening matrix (Huang et al., CVPR 2019), as INTL uses it: [..., p, p].

    With t = tr(S) and S_N = S / t (eigenvalues in [0, 1]), P_0 = I and, `iters` = T times,
        P <- 1.5 P - 0.5 P^3 S_N,
    W = P_T / sqrt(t). Each step is Newton's method for S_N^-1/2, acting on every eigenvalue
    l of S_N on its own: p <- (3 p - p^3 l) / 2 from p = 1 rises monotonically towards
    l^-1/2, by a factor of about 1.5 per step while far below it. So a few steps whiten the
    large directions and only partly the small ones: INTL's "spectral modulation" (its
    T = 4). In exact arithmetic W tends to the ZCA matrix S^-1/2 as T grows (the quadratic
    phase starts after about log(t / lambda_min) / (2 log 1.5) steps). In floating point
    this uncoupled form of Newton's iteration is unstable beyond that point unless S is very
    well conditioned (the known instability of the simplified Newton iteration): float64,
    p = 32, it reaches 1e-11 of S^-1/2 at kappa 10 after ~15 steps and then diverges
    (tests/test_whitening.py). INTL's few steps never get there; `zca_matrix` is the
    converged whitening. Every P is a polynomial
    in S_N, so W is symmetric and commutes with S. No shrinkage, floor or check of its own
    (the reference has none): only t is kept above the dtype's tiny, so an all-zero slice
    gives 0, not NaN. Matrix products only: batched, differentiable, no host reads.
    """
    trace = torch.diagonal(S, dim1=-2, dim2=-1).sum(-1).clamp_min(torch.finfo(S.dtype).tiny)
    S_N = S / trace[..., None, None]
    P = _eye(S.shape[-1], S).expand_as(S)
    for _ in range(iters):
        P = 1.5 * P - 0.5 * (P @ P @ P @ S_N)
    return P * trace.rsqrt()[..., None, None]


def zca_matrix(S: torch.Tensor) -> torch.Tensor:
    """S^-1/2 for every slice of S: [..., p, p] (symmetric positive semi-definite).

    On the device types in NS_DEVICES (CUDA, where batched eigh loops per matrix above
    p = 32): Newton-Schulz (`newton_schulz`, NS_ITERS steps, in S's dtype: float32 in training)
    for the slices whose whitened covariance W S W is I within NS_TOL[dtype] (largest entry),
    the exact float64 eigh path (`zca_exact`, eigenvalues floored at EIG_FLOOR x the largest)
    for the others: singular, non-finite and unconverged slices, and in float32 those with
    condition numbers above about 1e5, where the iteration's W loses accuracy faster than
    rounding of S alone explains (tests/test_whitening.py: p = 64, values and gradients
    against the exact path up to kappa = 1e5). Elsewhere the exact path. CW-RGP's real
    matrices (CIFAR-10, emb 512, w_size 64, groups 4: kappa 2e3-2e4) pass with residuals under
    1e-4 (BENCHMARKS.md, "First GPU run").

    By default the choice costs one host read per call in eager mode (`bool` of a device
    flag): computing eigh unconditionally for a `where` would cost what the iteration saves,
    and no criterion known without the data can tell whether a group's spectrum is in range.
    Under torch.compile the choice is a `torch.cond`, so the step compiles as one graph; its
    predicate is still read on the host when the compiled step runs. Under
    `ns_check.using("deferred")` nothing is read: the flag goes to `ns_check.flag` and the
    caller redoes a failed step under `ns_check.using("exact")` (`training.deferred`).
    """
    if S.device.type not in NS_DEVICES or ns_check.mode == "exact":
        return zca_exact(S)
    W, residual = newton_schulz(S)
    converged = residual <= NS_TOL[S.dtype]
    if ns_check.mode == "deferred":
        ns_check.flag(S.device).logical_or_(~converged.all())
        return W

    def fallback(W: torch.Tensor, S: torch.Tensor, converged: torch.Tensor) -> torch.Tensor:
        return torch.where(converged[..., None, None], W, zca_exact(S))

    if torch.compiler.is_compiling():
        return torch.cond(converged.all(), lambda W, S, c: W.clone(), fallback, (W, S, converged))
    return W if bool(converged.all()) else fallback(W, S, converged)
