"""cholesky_whiten and channel_whiten against the papers' maths, in float64."""

import numpy as np
import pytest
import torch

from wsl_ray.methods.whitening import (
    channel_whiten,
    cholesky_whiten,
    random_channel_permutations,
    stats,
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
