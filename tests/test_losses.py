"""The losses against float64 recomputations of the reference code's formulas."""

import math
from itertools import combinations

import numpy as np
import pytest
import torch

from wsl_ray.methods.byol import target_tau
from wsl_ray.methods.losses import byol_loss, contrastive_loss, cwrgp_loss, wmse_loss


def views(gen, k=2, bs=64, emb=8):
    base = torch.randn(bs, emb, generator=gen)
    return [base + 0.5 * torch.randn(bs, emb, generator=gen) for _ in range(k)]


def reference_wmse(vs, normalize=True):
    """The reference W-MSE with w_size = batch, w_iter = 1, in float64 numpy."""

    def whiten(x):
        xc = x - x.mean(0)
        L = np.linalg.cholesky(xc.T @ xc / (len(x) - 1))
        return (np.linalg.inv(L) @ xc.T).T

    z = [whiten(v.double().numpy()) for v in vs]
    losses = []
    for a, b in combinations(z, 2):
        if normalize:
            a = a / np.linalg.norm(a, axis=1, keepdims=True)
            b = b / np.linalg.norm(b, axis=1, keepdims=True)
            losses.append(2 - 2 * (a * b).sum(1).mean())
        else:
            losses.append(((a - b) ** 2).mean())
    return float(np.mean(losses))


@pytest.mark.parametrize("normalize", [True, False])
def test_wmse_with_full_batch_equals_reference_formula(gen, normalize):
    vs = views(gen, bs=128, emb=16)
    got = wmse_loss(vs, w_size=128, normalize=normalize).item()
    assert got == pytest.approx(reference_wmse(vs, normalize), rel=1e-5, abs=1e-6)


def test_wmse_with_four_views_averages_the_six_pairs(gen):
    vs = views(gen, k=4)
    pairs = [wmse_loss([vs[i], vs[j]], w_size=64).item() for i, j in combinations(range(4), 2)]
    assert len(pairs) == 6
    assert wmse_loss(vs, w_size=64).item() == pytest.approx(np.mean(pairs), rel=1e-5)


def test_wmse_of_identical_views_is_zero(gen):
    x = torch.randn(64, 8, generator=gen)
    assert wmse_loss([x, x.clone(), x.clone()], w_size=32, w_iter=3).item() == pytest.approx(
        0, abs=1e-5
    )


def test_wmse_is_invariant_to_one_permutation_of_every_view(gen):
    vs = views(gen, k=3)
    perm = torch.randperm(64, generator=gen)
    assert wmse_loss([v[perm] for v in vs], 64).item() == pytest.approx(
        wmse_loss(vs, 64).item(), rel=1e-5
    )


def test_wmse_sub_batches_use_the_generator_and_each_whitened_separately(gen):
    vs = views(gen, bs=64)
    a = wmse_loss(vs, 32, w_iter=2, generator=torch.Generator().manual_seed(1))
    b = wmse_loss(vs, 32, w_iter=2, generator=torch.Generator().manual_seed(1))
    assert a.item() == b.item()
    # one iteration with a known split equals the mean of the two halves' full-batch losses
    perm = torch.rand(1, 64, generator=torch.Generator().manual_seed(5)).argsort(-1)[0]
    halves = [perm[:32], perm[32:]]
    split = wmse_loss(vs, 32, generator=torch.Generator().manual_seed(5)).item()
    expected = np.mean([reference_wmse([v[idx] for v in vs]) for idx in halves])
    assert split == pytest.approx(expected, rel=1e-5)


def test_wmse_rejects_a_w_size_that_does_not_divide_the_batch(gen):
    with pytest.raises(ValueError, match="w_size=48 must divide"):
        wmse_loss(views(gen), 48)


def test_cwrgp_of_identical_views_is_zero_only_with_the_same_partition(gen):
    x = torch.randn(32, 128, generator=gen)
    same = cwrgp_loss([x, x], w_size=16, groups=1).item()
    assert same == pytest.approx(0, abs=1e-5)  # one group: the permutation does not matter
    assert cwrgp_loss(views(gen, bs=32, emb=128), w_size=16, groups=4).item() > 0.1


def reference_contrastive(x0, x1, tau):
    """NT-Xent by its definition, anchor by anchor, in float64."""
    x0 = torch.nn.functional.normalize(x0.double(), dim=1)
    x1 = torch.nn.functional.normalize(x1.double(), dim=1)
    n = len(x0)

    def side(a, b):
        total = 0.0
        for i in range(n):
            pos = math.exp(float(a[i] @ b[i]) / tau)
            neg = sum(math.exp(float(a[i] @ b[j]) / tau) for j in range(n) if j != i)
            neg += sum(math.exp(float(a[i] @ a[j]) / tau) for j in range(n) if j != i)
            total -= math.log(pos / (pos + neg))
        return total / n

    return (side(x0, x1) + side(x1, x0)) / 2


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_contrastive_equals_float64_recomputation(gen, tau):
    vs = views(gen, k=3, bs=16)
    expected = np.mean([reference_contrastive(a, b, tau) for a, b in combinations(vs, 2)])
    assert contrastive_loss(vs, tau=tau).item() == pytest.approx(expected, rel=1e-5)


def test_byol_loss_is_symmetrised_cosine_and_stops_target_gradients(gen):
    p = [v.requires_grad_() for v in views(gen, k=2)]
    t = [v.requires_grad_() for v in views(gen, k=2)]
    cos = torch.nn.functional.cosine_similarity
    expected = (2 - 2 * cos(p[0], t[1]).mean()) + (2 - 2 * cos(p[1], t[0]).mean())
    loss = byol_loss(p, t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert p[0].grad is not None and t[0].grad is None


def test_byol_target_tau_schedule():
    assert target_tau(0.0, 0.99) == pytest.approx(0.99)
    assert target_tau(0.5, 0.99) == pytest.approx(0.995)
    assert target_tau(1.0, 0.99) == pytest.approx(1.0)
    assert target_tau(0.5, 0.9) == pytest.approx(0.95)
