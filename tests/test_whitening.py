"""cholesky_whiten, channel_whiten and the family (IterNorm included) against the papers'
maths, in float64."""

import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wsl_ray.methods import whitening
from wsl_ray.methods.losses import cwrgp_loss, intl_loss, wmse_loss
from wsl_ray.methods.whitening import (
    AXES,
    MATRICES,
    NS_TOL,
    channel_whiten,
    cholesky_factor,
    cholesky_whiten,
    iternorm_matrix,
    newton_schulz,
    random_channel_permutations,
    stats,
    whiten,
    zca_exact,
    zca_matrix,
)


def correlated(gen, *shape):
    """Random data with a random feature covariance (well-conditioned)."""
    *lead, n, d = shape
    mix = 0.3 * torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5
    mix += torch.eye(d, dtype=torch.float64)
    x = torch.randn(*lead, n, d, generator=gen, dtype=torch.float64) @ mix
    return x + torch.randn(d, generator=gen, dtype=torch.float64) * 3


def test_cholesky_whiten_gives_zero_mean_identity_covariance(gen):
    x = correlated(gen, 3, 2, 256, 32)
    z = cholesky_whiten(x.float()).double()
    assert z.dtype == torch.float64 and z.shape == x.shape
    n = x.shape[-2]
    cov = z.transpose(-1, -2) @ z / (n - 1)
    assert torch.allclose(z.mean(-2), torch.zeros((), dtype=z.dtype), atol=1e-4)
    assert torch.allclose(cov, torch.eye(32, dtype=torch.float64).expand_as(cov), atol=1e-4)


def test_cholesky_whiten_equals_inverse_cholesky_factor(gen):
    x = correlated(gen, 4, 128, 16)
    eps = 0.1
    z = cholesky_whiten(x.float(), eps=eps).double().numpy()
    for s in range(4):
        xs = x[s].numpy()
        xc = xs - xs.mean(0)
        cov = xc.T @ xc / (len(xs) - 1)
        L = np.linalg.cholesky((1 - eps) * cov + eps * np.eye(16))
        expected = (np.linalg.inv(L) @ xc.T).T
        np.testing.assert_allclose(z[s], expected, atol=1e-4)


def test_cholesky_whiten_keeps_float32_under_autocast(gen):
    x = correlated(gen, 128, 16).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = cholesky_whiten(x.bfloat16())
    assert z.dtype == torch.float32


def test_cholesky_whiten_gradients_are_finite(gen):
    x = correlated(gen, 2, 64, 16).float().requires_grad_()
    z = cholesky_whiten(x)
    (z * torch.randn(z.shape, generator=gen)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("case", ["n_below_d", "duplicated_rows", "constant_feature"])
def test_cholesky_whiten_survives_rank_deficient_input(gen, case):
    x = torch.randn(3, 32, 16, generator=gen)
    if case == "n_below_d":
        x = torch.randn(3, 8, 16, generator=gen)
    elif case == "duplicated_rows":
        x = x[:, :4].repeat(1, 8, 1)
    else:
        x[1, :, 5] = 2.0
    stats.take()
    z = cholesky_whiten(x)
    assert torch.isfinite(z).all()
    counts = stats.take()
    assert counts["whiten_retries"] >= 1
    assert counts["whiten_fallbacks"] == 0


def test_cholesky_whiten_rejects_single_sample():
    with pytest.raises(ValueError, match="at least 2 samples"):
        cholesky_whiten(torch.randn(1, 4))


def group_columns(gen_seed, d, groups, n_slices=1):
    perm = random_channel_permutations(
        (n_slices,), d, torch.device("cpu"), torch.Generator().manual_seed(gen_seed)
    )
    return perm.view(n_slices, groups, d // groups)


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.float64, 1e-8)])
def test_channel_whiten_gives_identity_sample_covariance_per_group(gen, groups, dtype, atol):
    """float32 is the training precision; float64 input shows the maths is exact."""
    n, d = 16, 128
    x = correlated(gen, d, n).T.contiguous()  # correlated samples, not channels
    z = channel_whiten(x.to(dtype), groups, generator=torch.Generator().manual_seed(7)).double()
    c = d // groups
    for cols in group_columns(7, d, groups)[0]:
        zk = z[:, cols]
        cov = zk @ zk.T / (c - 1)
        assert torch.allclose(cov, torch.eye(n, dtype=torch.float64), atol=atol)


def test_channel_whiten_matrix_is_symmetric_zca(gen):
    n, d = 16, 64
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.linspace(0.5, 2, n)[:, None]
    z = channel_whiten(x.float(), groups=1).double()
    xc = x - x.mean(1, keepdim=True)
    W = z @ torch.linalg.pinv(xc)  # z = W xc, xc of full row rank
    assert torch.allclose(W, W.T, atol=1e-3)
    evals, evecs = torch.linalg.eigh(xc @ xc.T / (d - 1))
    zca = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    assert torch.allclose(W, zca, atol=1e-3)


def test_channel_whiten_draws_one_partition_per_slice(gen):
    x = torch.randn(2, 16, 128, generator=gen, dtype=torch.float64)
    batched = channel_whiten(x, 4, generator=torch.Generator().manual_seed(3))
    perms = group_columns(3, 128, 4, n_slices=2)
    assert not torch.equal(perms[0], perms[1])
    for s in range(2):
        for cols in perms[s]:
            zk = batched[s][:, cols]
            assert torch.allclose(zk @ zk.T / 31, torch.eye(16, dtype=torch.float64), atol=1e-8)


def test_channel_whiten_rejects_bad_groups():
    with pytest.raises(ValueError, match="must divide"):
        channel_whiten(torch.randn(8, 30), groups=4)


# ---- the whitening family: whiten() against the formulas, every combination, float64 ----

FAMILY = [
    (matrix, axis, groups, rg, minus)
    for matrix in ("cholesky", "zca", "pca", "bn")
    for axis in ("batch", "channel")
    for groups in ((1, 4) if matrix != "bn" else (1,))
    for rg in (False, True)
    for minus in (0, 1)
]


def family_input(gen, axis):
    """Leading dims [2, 3]; the whitened side is well-conditioned: n > c or c > n."""
    if axis == "batch":
        return correlated(gen, 2, 3, 48, 16)  # n = 48 samples of d = 16 channels
    return correlated(gen, 2, 3, 64, 8).transpose(-1, -2)  # n = 8 samples of d = 64 channels


def formula(x, matrix, axis, groups, minus, eps, order):
    """Re-derived from the CW-RGP paper and reference semantics, one slice x: [n, d] numpy.

    Returns, per group, (columns, expected block [n, c]). Batch axis: centre each channel
    over the samples, observations = samples. Channel axis: centre each sample over all its
    channels, observations = the group's channels. S = (1 - eps) O^T O / (m - minus) + eps I.
    """
    n, d = x.shape
    xc = x - x.mean(0) if axis == "batch" else x - x.mean(1, keepdims=True)
    c = d // groups
    blocks = []
    for k in range(groups):
        cols = order[k * c : (k + 1) * c]
        obs = xc[:, cols] if axis == "batch" else xc[:, cols].T
        m, p = obs.shape
        S = (1 - eps) * obs.T @ obs / (m - minus) + eps * np.eye(p)
        evals, U = np.linalg.eigh(S)
        if matrix == "cholesky":
            W = np.linalg.inv(np.linalg.cholesky(S))
        elif matrix == "zca":
            W = U @ np.diag(evals**-0.5) @ U.T
        elif matrix == "pca":
            W = np.diag(evals[::-1] ** -0.5) @ U[:, ::-1].T
        else:
            W = np.diag(np.diag(S) ** -0.5)
        Z = obs @ W.T
        blocks.append((cols, Z if axis == "batch" else Z.T))
    return blocks


def pca_sign_fixed(actual, expected, axis):
    """PCA's eigenvector signs are arbitrary: flip each component of `actual` to match."""
    comp = 0 if axis == "batch" else 1  # components are columns (batch) or rows (channel)
    sign = np.sign((actual * expected).sum(axis=comp, keepdims=True))
    return actual * sign


@pytest.mark.parametrize("matrix, axis, groups, rg, minus", FAMILY)
def test_whiten_matches_formula_and_whitens_each_group(gen, matrix, axis, groups, rg, minus):
    x = family_input(gen, axis)
    eps = 0.05
    z = whiten(x, matrix, axis, groups, rg, minus, eps, torch.Generator().manual_seed(5))
    assert z.dtype == torch.float64 and z.shape == x.shape
    flat_x, flat_z = x.reshape(-1, *x.shape[-2:]).numpy(), z.reshape(-1, *x.shape[-2:]).numpy()
    d = x.shape[-1]
    if rg and matrix != "bn":
        g5 = torch.Generator().manual_seed(5)
        orders = random_channel_permutations((6,), d, torch.device("cpu"), g5).numpy()
    else:
        orders = np.tile(np.arange(d), (6, 1))
    for s in range(6):
        for cols, expected in formula(flat_x[s], matrix, axis, groups, minus, eps, orders[s]):
            actual = flat_z[s][:, cols]
            if matrix == "pca":
                actual = pca_sign_fixed(actual, expected, axis)
            np.testing.assert_allclose(actual, expected, atol=1e-9, rtol=1e-7)
    # Without shrinkage the whitened covariance (divisor m - minus) is I in each group, and
    # its diagonal is 1 for bn.
    z = whiten(x, matrix, axis, groups, rg, minus, 0.0, torch.Generator().manual_seed(5)).numpy()
    for s, (zs, order) in enumerate(zip(z.reshape(flat_z.shape), orders, strict=True)):
        for k in range(groups):
            zk = zs[:, order[k * (d // groups) : (k + 1) * (d // groups)]]
            obs = zk if axis == "batch" else zk.T
            cov = obs.T @ obs / (obs.shape[0] - minus)
            if matrix == "bn":
                cov = np.diag(np.diag(cov))
            np.testing.assert_allclose(cov, np.eye(len(cov)), atol=1e-9, err_msg=f"slice {s}")


def test_whiten_zca_is_symmetric_and_pca_descending(gen):
    x = family_input(gen, "batch")[0, 0]
    xc = x - x.mean(0)
    for matrix in ("zca", "pca"):
        z = whiten(x, matrix)
        W = (torch.linalg.pinv(xc) @ z).T  # z = xc W^T
        if matrix == "zca":
            assert torch.allclose(W, W.T, atol=1e-9)
        else:
            var = z.var(0)  # unit variance per component, so look at what W undid
            assert torch.allclose(var, torch.ones_like(var), atol=1e-9)
            lam = 1 / (W**2).sum(1)  # rows of W are u_j / sqrt(lambda_j)
            assert torch.all(lam[:-1] >= lam[1:])


def test_whiten_none_is_the_identity_and_bn_refuses_groups(gen):
    x = family_input(gen, "batch").float()
    assert torch.equal(whiten(x, "none", "channel"), x)
    for matrix in ("bn", "none"):
        with pytest.raises(ValueError, match=f"matrix='{matrix}' has no groups"):
            whiten(x, matrix, groups=2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"matrix": "svd"}, "matrix='svd'; allowed: cholesky, zca, pca, iternorm, bn, none"),
        ({"matrix": "iternorm", "iters": 0}, "iters=0 must be an integer >= 1"),
        ({"axis": "rows"}, "axis='rows'; allowed: batch, channel"),
        ({"groups": 3}, "groups=3 must divide the 16 channels"),
        ({"minus": -1}, "minus=-1 must be an integer >= 0"),
        ({"eps": 1.0}, "eps=1.0 must be in"),
        ({"axis": "channel", "groups": 16}, "at least 2 channels per group, got 1"),
    ],
)
def test_whiten_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        whiten(torch.randn(32, 16), **kwargs)


def test_whiten_keeps_float32_under_autocast_for_every_matrix(gen):
    x = family_input(gen, "channel").float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for matrix in MATRICES:
            assert whiten(x.bfloat16(), matrix, "channel").dtype == torch.float32


@pytest.mark.parametrize("eps, retries", [(0.0, 3 + 5), (1e-5, 1 + 3)])
def test_cholesky_factor_retries_each_slice_at_its_first_working_shrinkage(eps, retries):
    """Slice 0 is fine, slice 1 needs shrinkage > 5e-5 (first working level: 1e-4), slice 2 is
    NaN and falls back to the diagonal. Retries count the levels each slice went through; the
    step never warns, `take()` does."""
    delta = 5e-5
    cov = torch.stack([torch.eye(2), torch.diag(torch.tensor([1.0, -delta])), torch.eye(2)])
    cov[2, 1, 0] = float("nan")  # the factorisation reads the lower triangle
    stats.take()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L = cholesky_factor(cov, eps)
    assert torch.allclose(L[0], torch.eye(2))
    expected = torch.linalg.cholesky((1 - 1e-4) * cov[1] + 1e-4 * torch.eye(2))
    assert torch.allclose(L[1], expected)
    assert torch.equal(L[2], torch.eye(2))  # sqrt(max(diag, 1e-2))
    with pytest.warns(RuntimeWarning, match="1 slice"):
        assert stats.take() == {"whiten_retries": retries, "whiten_fallbacks": 1}
    assert stats.take() == {"whiten_retries": 0, "whiten_fallbacks": 0}


# ---- IterNorm (INTL): the reference's formula, and exact ZCA in the limit, float64 ----


def iternorm_formula(x, axis, groups, order, iters):
    """INTL's Whitening2dIterNorm re-derived for one slice x: [n, d] numpy, per group.

    Channel axis (its axis 0): each sample centred over all d features, Sigma = X X^T / (c - 1)
    over the group's c features ([n, n]), out = W X. Batch axis (axis 1): each feature centred
    over the n samples, Sigma = X^T X / (n - 1) ([c, c]), out = X W. With tr = trace(Sigma),
    Sigma_N = Sigma / tr, P_0 = I, P <- 1.5 P - 0.5 P^3 Sigma_N (iters times), W = P tr^-1/2.
    """
    xc = x - x.mean(0) if axis == "batch" else x - x.mean(1, keepdims=True)
    c = x.shape[1] // groups
    blocks = []
    for k in range(groups):
        cols = order[k * c : (k + 1) * c]
        X = xc[:, cols]
        sigma = X.T @ X / (len(X) - 1) if axis == "batch" else X @ X.T / (c - 1)
        tr = np.trace(sigma)
        P = np.eye(len(sigma))
        for _ in range(iters):
            P = 1.5 * P - 0.5 * np.linalg.matrix_power(P, 3) @ (sigma / tr)
        W = P / np.sqrt(tr)
        blocks.append((cols, X @ W if axis == "batch" else W @ X))
    return blocks


@pytest.mark.parametrize("axis", ["batch", "channel"])
@pytest.mark.parametrize("groups, rg", [(1, False), (4, False), (4, True)])
@pytest.mark.parametrize("iters", [1, 4, 7])
def test_whiten_iternorm_matches_the_reference_formula(gen, axis, groups, rg, iters):
    x = family_input(gen, axis)  # [2, 3, n, d]
    z = whiten(x, "iternorm", axis, groups, rg, 1, 0.0, torch.Generator().manual_seed(5), iters)
    assert z.dtype == torch.float64 and z.shape == x.shape
    d = x.shape[-1]
    if rg:
        g5 = torch.Generator().manual_seed(5)
        orders = random_channel_permutations((6,), d, torch.device("cpu"), g5).numpy()
    else:
        orders = np.tile(np.arange(d), (6, 1))
    flat_x, flat_z = x.reshape(-1, *x.shape[-2:]).numpy(), z.reshape(-1, *x.shape[-2:]).numpy()
    for s in range(6):
        for cols, expected in iternorm_formula(flat_x[s], axis, groups, orders[s], iters):
            np.testing.assert_allclose(flat_z[s][:, cols], expected, atol=1e-10, rtol=1e-9)


def test_iternorm_modulates_each_eigenvalue_by_the_scalar_newton_map(gen):
    """W S W has S's eigenvectors and eigenvalues q_T^2, where q_0 = sqrt(l) for l an
    eigenvalue of S / tr(S) and q <- (3 q - q^3) / 2: the spectrum is pulled towards 1, the
    more so the larger l, and never past it."""
    S = spd_with_condition(gen, 16, 1e3, "log")
    W = iternorm_matrix(S, 4)
    assert torch.allclose(W, W.mT, atol=1e-12)
    lam = torch.linalg.eigvalsh(S)
    q = (lam / lam.sum(-1, keepdim=True)).sqrt()
    for _ in range(4):
        q = (3 * q - q**3) / 2
    whitened = torch.linalg.eigvalsh(W @ S @ W)
    assert torch.allclose(whitened, q.square(), atol=1e-12, rtol=1e-10)
    assert (whitened < 1).all() and (whitened[..., 1:] >= whitened[..., :-1]).all()
    assert whitened[..., -1].min() > 0.9 and whitened[..., 0].max() < 0.01  # not whitened


def test_iternorm_converges_to_exact_zca_with_many_steps_on_a_well_conditioned_matrix(gen):
    """At kappa 2 (p = 32) the steps converge to S^-1/2 and stay there; at T = 4 INTL's
    matrix is still far from it. The whitened output then equals ZCA whitening."""
    S = spd_with_condition(gen, 32, 2.0, "log")
    for T in (20, 60):
        assert relative(iternorm_matrix(S, T), zca_exact(S)) < 1e-13
    assert relative(iternorm_matrix(S, 4), zca_exact(S)) > 0.1
    x = torch.randn(2, 400, 8, generator=gen, dtype=torch.float64)  # sample kappa about 2
    np.testing.assert_allclose(
        whiten(x, "iternorm", "batch", iters=30).numpy(), whiten(x, "zca").numpy(), atol=1e-12
    )


def test_iternorm_gets_close_to_zca_then_diverges_at_kappa_10(gen):
    """The uncoupled Newton iteration amplifies rounding once converged unless S is very well
    conditioned: at kappa 10 it reaches 1e-9 of S^-1/2 after 15 steps, then drifts away.
    (A property of the reference's IterNorm too; INTL's T = 4 stays before it.)"""
    S = spd_with_condition(gen, 32, 10.0, "log")
    assert relative(iternorm_matrix(S, 15), zca_exact(S)) < 1e-9
    assert relative(iternorm_matrix(S, 25), zca_exact(S)) > 1e-6


def test_iternorm_gradients_match_finite_differences(gen):
    x = correlated(gen, 12, 6).requires_grad_()
    G = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    for axis in AXES:
        assert torch.autograd.gradcheck(
            lambda v, a=axis: (whiten(v, "iternorm", a) * G).sum(), (x,), atol=1e-7
        )


# ---- Newton-Schulz ZCA against the exact float64 eigh path ----


def spd_with_condition(gen, p, kappa, spectrum, batch=2):
    """Random rotations of a spectrum with condition number kappa (largest eigenvalue 1)."""
    q = torch.linalg.qr(torch.randn(batch, p, p, generator=gen, dtype=torch.float64))[0]
    if spectrum == "one_small":  # the slowest case for trace normalisation
        lam = torch.linspace(0.5, 1, p, dtype=torch.float64)
        lam[0] = 1 / kappa
    else:
        lam = torch.logspace(0, -np.log10(kappa), p, dtype=torch.float64)
    return (q * lam) @ q.mT


def value_and_gradient(f, S, G):
    S = S.detach().requires_grad_()
    W = f(S)
    (W * G.to(W.dtype)).sum().backward()
    grad = S.grad.double()
    return W.detach().double(), (grad + grad.mT) / 2


def relative(a, b):
    return (torch.linalg.matrix_norm(a - b, ord=2) / torch.linalg.matrix_norm(b, ord=2)).max()


@pytest.mark.parametrize("spectrum", ["one_small", "log"])
@pytest.mark.parametrize("kappa", [1e1, 1e2, 1e3, 1e4, 1e5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_newton_schulz_passes_its_check_and_equals_exact_zca_to_kappa_1e5(
    gen, dtype, kappa, spectrum
):
    """For p = 64 and condition numbers up to 1e5, the iteration passes its own check
    (max |W S W - I| <= NS_TOL) and its values and gradients match the exact float64 path
    (relative, spectral norm) within 1e-9 / 1e-7 in float64, and within max(1e-5, 2e-7 kappa)
    / max(1e-5, 6e-7 kappa) in float32 (the float32 error is rounding, proportional to kappa;
    the iteration itself has converged)."""
    S = spd_with_condition(gen, 64, kappa, spectrum).to(dtype)
    G = torch.randn(S.shape, generator=gen, dtype=torch.float64)
    W_ns, g_ns = value_and_gradient(lambda s: newton_schulz(s)[0], S, G)
    W_ex, g_ex = value_and_gradient(lambda s: zca_exact(s.double()), S, G)
    if dtype == torch.float64:
        tol_val, tol_grad = 1e-9, 1e-7
    else:
        tol_val, tol_grad = max(1e-5, 2e-7 * kappa), max(1e-5, 6e-7 * kappa)
    assert relative(W_ns, W_ex) <= tol_val
    assert relative(g_ns, g_ex) <= tol_grad
    assert (newton_schulz(S)[1] <= NS_TOL[dtype]).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_newton_schulz_fails_its_check_where_it_has_not_converged(gen, dtype):
    """kappa 1e8 needs more than NS_ITERS steps; in float32, kappa 1e7 is also past what the
    iteration resolves (its W is then off by more than 100%)."""
    for kappa in (1e7, 1e8) if dtype == torch.float32 else (1e8,):
        S = spd_with_condition(gen, 64, kappa, "log").to(dtype)
        assert (newton_schulz(S)[1] > NS_TOL[dtype]).all()


@pytest.fixture
def ns_on_cpu(monkeypatch):
    """The iteration runs on CUDA only by default; these tests run it on the CPU."""
    monkeypatch.setattr(whitening, "NS_DEVICES", ("cuda", "cpu"))


def test_zca_matrix_uses_newton_schulz_inside_the_range_and_eigh_outside(gen, ns_on_cpu):
    S = torch.cat(
        [spd_with_condition(gen, 32, 10.0, "log"), spd_with_condition(gen, 32, 1e8, "log")]
    ).float()
    W = zca_matrix(S)
    assert torch.equal(W[:2], newton_schulz(S[:2])[0])  # in range: the iteration itself
    assert torch.equal(W[2:], zca_exact(S[2:]))  # kappa 1e8: the exact path
    singular = torch.zeros(2, 8, 8)
    singular[:, 0, 0] = 1.0
    assert torch.isfinite(zca_matrix(singular)).all()
    assert torch.equal(zca_matrix(singular), zca_exact(singular))
    nan = torch.full((1, 8, 8), float("nan"))
    assert torch.isnan(zca_matrix(nan)).all()  # NaN out, never an eigh error


def test_zca_matrix_is_exact_on_the_cpu_by_default(gen):
    S = spd_with_condition(gen, 16, 10.0, "log").float()
    assert whitening.NS_DEVICES == ("cuda",)
    assert torch.equal(zca_matrix(S), zca_exact(S))


# ---- no host sync: the whitening path compiles as one graph (a graph break raises) ----


def compiled(f):
    torch._dynamo.reset()
    return torch.compile(f, fullgraph=True, backend="aot_eager")


def test_wmse_loss_and_cholesky_whitening_compile_without_graph_breaks(gen):
    """W-MSE's loss (sub-batches drawn with the global RNG), cholesky_whiten and the batch-axis
    family setting with random groups, forward and backward, in one graph."""
    views = [correlated(gen, 64, 8).float().requires_grad_() for _ in range(2)]

    def f(v0, v1):
        x = torch.stack([v0, v1]).view(2, 2, 32, 8)
        grouped = whiten(x, "cholesky", "batch", 2, True, 0, 1e-3)
        return wmse_loss([v0, v1], 32, w_iter=2), cholesky_whiten(x), grouped

    stats.take()
    loss, z, zg = compiled(f)(*views)
    (loss + z.sum() + zg.square().sum()).backward()
    x = torch.stack(views).view(2, 2, 32, 8)
    assert torch.allclose(z, cholesky_whiten(x), atol=1e-5)
    assert all(torch.isfinite(v.grad).all() for v in views) and torch.isfinite(loss)
    assert stats.take()["whiten_retries"] == 0


class NoHostReads(TorchDispatchMode):
    """Fails on the ops that copy a device value to the host (`.item()`, `bool(t)`,
    `nonzero`, data-dependent shapes): on a GPU each one stalls the CPU until it drains."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            raise AssertionError(f"host read: {func}")
        return func(*args, **(kwargs or {}))


def test_intl_loss_forward_and_backward_read_nothing_on_the_host(gen):
    """INTL's loss on both axes (and its EMA form), forward and backward, with IterNorm."""
    views = [correlated(gen, 32, 16).float().requires_grad_() for _ in range(3)]
    with NoHostReads():
        losses = [intl_loss(views, 0.02, 4, axis) for axis in AXES]
        losses.append(intl_loss(views[1:], 0.02, 4, "channel", target=views[0]))
        sum(losses).backward()
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in views)
    with pytest.raises(AssertionError, match="host read"), NoHostReads():
        bool(views[0].sum() > 0)  # the mode does catch a read


def test_cwrgp_loss_with_newton_schulz_zca_compiles_without_graph_breaks(gen, ns_on_cpu):
    """CW-RGP's loss, whose ZCA takes the iteration in range and the exact path outside it:
    both branches are in the graph (torch.cond), and both run here."""
    base = correlated(gen, 64, 8).T.contiguous().float()  # 8 samples of 64 correlated channels
    good = [base + 0.1 * torch.randn(base.shape, generator=gen) for _ in range(2)]
    bad = [v.clone() for v in good]
    bad[0][1] = bad[0][0]  # two equal samples: every group of that view is singular
    f = compiled(lambda v0, v1: cwrgp_loss([v0, v1], 8, groups=2))
    for views in (good, bad):  # same shapes: no recompile
        views = [v.requires_grad_() for v in views]
        torch.manual_seed(0)
        loss = f(*views)
        loss.backward()
        torch.manual_seed(0)
        assert torch.allclose(loss, cwrgp_loss(views, 8, groups=2), atol=1e-5)
        assert all(torch.isfinite(v.grad).all() for v in views)
