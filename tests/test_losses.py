"""The losses against float64 recomputations of the reference code's and papers' formulas."""

import math
from itertools import combinations

import numpy as np
import pytest
import torch

from wsl_ray.methods.byol import target_tau
from wsl_ray.methods.losses import (
    _mean_over_pairs,
    _mean_pair_distance,
    _pair_loss,
    barlow_twins_loss,
    byol_loss,
    contrastive_loss,
    cwrgp_loss,
    epps_pulley,
    intl_loss,
    intl_trade_off,
    lejepa_loss,
    sample_covariance_penalty,
    sigreg,
    sigreg_directions,
    simsiam_loss,
    trace_loss,
    vicreg_loss,
    whitened_mse_loss,
    wmse_loss,
    zero_icl_loss,
)
from wsl_ray.methods.whitening import whiten


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


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("normalize", [True, False])
def test_the_mean_over_view_pairs_from_sums_equals_the_loop_in_float64(gen, k, normalize):
    z = torch.stack(views(gen, k=k)).double().requires_grad_()
    from_sums = _mean_pair_distance(z, normalize)
    (grad,) = torch.autograd.grad(from_sums, z)
    loop = _mean_over_pairs(z, _pair_loss(normalize))
    (expected,) = torch.autograd.grad(loop, z)
    assert from_sums.item() == pytest.approx(loop.item(), rel=1e-12)
    assert (grad - expected).abs().max() <= 1e-12 * expected.abs().max()
    whitened = [v.double() for v in views(gen, k=k, bs=128, emb=16)]
    got = wmse_loss(whitened, w_size=128, normalize=normalize).item()
    assert got == pytest.approx(reference_wmse(whitened, normalize), rel=1e-10)


AUTOCAST_CASES = {
    "contrastive tau 0.1": lambda v: contrastive_loss(v, tau=0.1),
    "contrastive tau 0.5": lambda v: contrastive_loss(v, tau=0.5),
    "covariance term": sample_covariance_penalty,
    "w_mse": lambda v: wmse_loss(v, w_size=32, generator=torch.Generator().manual_seed(0)),
    "cw_rgp": lambda v: cwrgp_loss(v, 8, 2, generator=torch.Generator().manual_seed(0)),
    "byol": lambda v: byol_loss(v, [x.flip(0) for x in v]),
    "barlow_twins": barlow_twins_loss,
    "vicreg": vicreg_loss,
    "simsiam": lambda v: simsiam_loss(v, [x.flip(0) for x in v]),
    "zero_icl": zero_icl_loss,
    "intl": lambda v: intl_loss(v, 0.02),
    "lejepa": lambda v: lejepa_loss(v, 0.05, sigreg_directions(24, 64, torch.Generator())),
}


@pytest.mark.parametrize("loss", AUTOCAST_CASES.values(), ids=AUTOCAST_CASES)
def test_losses_compute_in_float32_under_bf16_autocast(gen, loss):
    """The trainer's bf16 autocast leaves every loss in float32: the same value and gradients
    within 1e-6 relative (its matrix products in bf16 would be off by 1e-3 or more)."""
    vs = views(gen, bs=64, emb=24)

    def value_and_grads(autocast: bool):
        inputs = [v.clone().requires_grad_() for v in vs]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            value = loss(inputs)
        return value.float(), torch.autograd.grad(value, inputs)

    (value, grads), (expected, expected_grads) = value_and_grads(True), value_and_grads(False)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    for g, e in zip(grads, expected_grads, strict=True):
        assert (g - e).abs().max() <= 1e-6 * e.abs().max()


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
    in_float64 = contrastive_loss([v.double() for v in vs], tau=tau)  # float64 stays float64
    assert in_float64.dtype == torch.float64
    assert in_float64.item() == pytest.approx(expected, rel=1e-12)


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


# --- the whitening family, worker shares, and the methods of the CW-RGP study ---------------


def np_whiten(x, matrix, axis, minus=1):
    """One slice [n, d] whitened by the family's definitions, in float64 numpy."""
    if matrix == "none":
        return x
    if axis == "channel":  # centre each sample over its channels, whiten the n x n covariance
        return np_whiten(x.T - x.mean(1), matrix, "batch", minus).T
    xc = x - x.mean(0)
    cov = xc.T @ xc / (len(x) - minus)
    if matrix == "bn":
        return xc / np.sqrt(np.diag(cov))
    if matrix == "cholesky":
        return (np.linalg.inv(np.linalg.cholesky(cov)) @ xc.T).T
    s, u = np.linalg.eigh(cov)  # zca
    return xc @ (u / np.sqrt(s) @ u.T)


def norm_mse_np(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 2 - 2 * (a * b).sum(1).mean()


@pytest.mark.parametrize(
    "matrix, axis, minus",
    [
        ("cholesky", "batch", 1),
        ("zca", "batch", 0),
        ("bn", "batch", 1),
        ("none", "batch", 1),
        ("zca", "channel", 1),
        ("cholesky", "channel", 0),
    ],
)
def test_whitened_mse_with_full_batch_equals_the_family_formula(gen, matrix, axis, minus):
    emb = 8 if axis == "batch" else 48
    vs = [v.double() for v in views(gen, k=3, bs=32, emb=emb)]
    got = whitened_mse_loss(vs, 32, matrix, axis, minus=minus, generator=gen_at(2)).item()
    perm = torch.rand(1, 32, generator=gen_at(2)).argsort(-1)[0]  # Cholesky is order-dependent
    z = [np_whiten(v[perm].numpy(), matrix, axis, minus) for v in vs]
    expected = np.mean([norm_mse_np(a, b) for a, b in combinations(z, 2)])
    assert got == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_w_mse_and_cw_rgp_losses_are_settings_of_the_family(gen):
    vs = views(gen, bs=64, emb=32)
    family = whitened_mse_loss(vs, 16, "cholesky", "batch", w_iter=2, generator=gen_at(3))
    assert wmse_loss(vs, 16, w_iter=2, generator=gen_at(3)).item() == family.item()
    family = whitened_mse_loss(vs, 4, "zca", "channel", 2, True, generator=gen_at(4))
    assert cwrgp_loss(vs, 4, 2, generator=gen_at(4)).item() == pytest.approx(family.item())


def gen_at(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("settings", [("cholesky", "batch", 2, False), ("zca", "channel", 2, True)])
def test_worker_shares_of_the_whitened_mse_average_to_the_global_loss(gen, settings):
    """Every share whitens the same sub-batches (same generator seed); the mean over the
    workers' rows is the global loss, and each share's gradient is its rows' part."""
    emb = 8 if settings[1] == "batch" else 32
    h = torch.stack(views(gen, k=3, bs=48, emb=emb)).double().requires_grad_()
    full = whitened_mse_loss(h, 16, *settings, w_iter=2, generator=gen_at(7))
    shares = [
        whitened_mse_loss(h, 16, *settings, w_iter=2, generator=gen_at(7), share=(r, 3))
        for r in range(3)
    ]
    assert torch.stack(shares).mean().item() == pytest.approx(full.item(), rel=1e-12)
    (g_full,) = torch.autograd.grad(full, h)
    (g_shares,) = torch.autograd.grad(sum(shares) / 3, h)
    assert torch.allclose(g_full, g_shares, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(shares[0], shares[1])  # each covers different rows


def test_contrastive_shares_use_all_negatives_and_average_to_the_global_loss(gen):
    vs = views(gen, k=3, bs=12)
    full = contrastive_loss(vs, tau=0.3).item()
    shares = [contrastive_loss(vs, tau=0.3, share=(r, 2)).item() for r in range(2)]
    assert np.mean(shares) == pytest.approx(full, rel=1e-6)
    # rank 1's share by definition: anchors 6..11 of both views, all 2N - 1 candidates
    a, b = (torch.nn.functional.normalize(v.double(), dim=1) for v in vs[:2])

    def logits(x, y, i):  # anchor x[i] against y (positive y[i]) and x without x[i]
        self_masked = (x[i] @ x.T).index_fill(0, torch.tensor(i), -torch.inf)
        return torch.cat([x[i] @ y.T, self_masked]) / 0.3

    terms = [
        -torch.log_softmax(logits(x, y, i), 0)[i] for i in range(6, 12) for x, y in ((a, b), (b, a))
    ]
    pair01 = contrastive_loss(vs[:2], tau=0.3, share=(1, 2)).item()
    assert pair01 == pytest.approx(torch.stack(terms).mean().item(), rel=1e-6)


@pytest.mark.parametrize("scale", ["emb", "batch"])
def test_barlow_twins_equals_its_formula(gen, scale):
    z1, z2 = views(gen, bs=32, emb=8)
    a, b = z1.double().numpy(), z2.double().numpy()
    c = a.T @ b / (8 if scale == "emb" else 32)
    off = c - np.diag(np.diag(c))
    expected = ((np.diag(c) - 1) ** 2).sum() + 0.008 * (off**2).sum()
    got = barlow_twins_loss([z1.double(), z2.double()], 0.008, scale).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_vicreg_equals_its_formula(gen):
    z1, z2 = (v.double() * 0.5 for v in views(gen, bs=32, emb=8))
    a, b = z1.numpy(), z2.numpy()
    inv = ((a - b) ** 2).mean()
    var = sum(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)).mean() for z in (a, b))
    cov = 0.0
    for z in (a, b):
        c = np.cov(z, rowvar=False)
        cov += ((c - np.diag(np.diag(c))) ** 2).sum() / 8
    expected = 25 * inv + 25 * var + 1 * cov
    assert vicreg_loss([z1, z2]).item() == pytest.approx(expected, rel=1e-10)
    assert vicreg_loss([z1, z2], 1.0, 2.0, 3.0).item() == pytest.approx(
        inv + 2 * var + 3 * cov, rel=1e-10
    )


def test_simsiam_is_the_symmetric_negative_cosine_with_stop_gradient(gen):
    p = [v.double().requires_grad_() for v in views(gen)]
    z = [v.double().requires_grad_() for v in views(gen)]
    cos = lambda x, y: (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))  # noqa: E731
    expected = -(cos(p[0], z[1]).mean() + cos(p[1], z[0]).mean()) / 2
    loss = simsiam_loss(p, z)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    loss.backward()
    assert p[0].grad is not None and z[0].grad is None and z[1].grad is None


def test_zero_icl_equals_the_reference_formula_with_a_detached_whitening(gen):
    z1, z2 = (v.double().requires_grad_() for v in views(gen, bs=16, emb=32))

    def whitening(z):  # per-sample standardisation, ZCA of 0.9 G + 0.1 I, G = z z^T / (d - 1)
        z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True)
        s, u = np.linalg.eigh(
            0.9 * z.detach().numpy() @ z.detach().numpy().T / 31 + 0.1 * np.eye(16)
        )
        return z, torch.from_numpy(u @ np.diag(1 / np.sqrt(s + 1e-5)) @ u.T)

    (s1, w1), (s2, w2) = whitening(z1), whitening(z2)
    expected = (((w1 @ s1) * (w2 @ s2)).sum(1) / 32 - 1).pow(2).sum()  # W constant here
    loss = zero_icl_loss([z1, z2])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    grads = torch.autograd.grad(loss, (z1, z2))
    expected_grads = torch.autograd.grad(expected, (z1, z2))
    assert all(torch.allclose(g, e, rtol=1e-8) for g, e in zip(grads, expected_grads, strict=True))


@pytest.mark.parametrize("loss", [barlow_twins_loss, vicreg_loss, zero_icl_loss])
def test_two_view_losses_refuse_other_numbers_of_views(gen, loss):
    with pytest.raises(ValueError, match="exactly 2 views, got 3"):
        loss(views(gen, k=3))


# ---- INTL ----


def reference_intl(vs, trade_off, iters, axis, target=None):
    """INTL's intl.py / intl_m.py and Whitening2dIterNorm in float64 numpy (axis 0 =
    channel: each sample centred over its features, an N x N covariance; 1 = batch)."""

    def iternorm(x):
        xn = x - x.mean(1, keepdims=True) if axis == "channel" else x - x.mean(0)
        sigma = xn @ xn.T / (x.shape[1] - 1) if axis == "channel" else xn.T @ xn / (len(x) - 1)
        tr = np.trace(sigma)
        P = np.eye(len(sigma))
        for _ in range(iters):
            P = 1.5 * P - 0.5 * np.linalg.matrix_power(P, 3) @ (sigma / tr)
        W = P / np.sqrt(tr)
        return W @ xn if axis == "channel" else xn @ W

    def tl(t):
        return ((t.var(1 if axis == "channel" else 0, ddof=1) - 1) ** 2).sum()

    def nmse(a, b):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 2 - 2 * (a * b).sum(1).mean()

    t = [iternorm(v.detach().double().numpy()) for v in vs]
    if target is None:
        terms = [nmse(t[i], t[0]) + trade_off * (tl(t[i]) + tl(t[0])) for i in range(1, len(t))]
    else:
        tk = iternorm(target.detach().double().numpy())
        terms = [nmse(q, tk) + trade_off * tl(q) for q in t]
    return sum(terms) / len(terms)


def test_trace_loss_by_hand():
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    # per sample over its features: variances 1 and 3
    assert trace_loss(z, "channel").item() == pytest.approx(0 + 4)
    # per feature over the samples: variances 0.5, 2, 0
    assert trace_loss(z, "batch").item() == pytest.approx(0.25 + 1 + 1)
    assert trace_loss(torch.stack([z, 2 * z]), "batch").shape == (2,)


def test_intl_trade_off_follows_the_reference_rule():
    assert intl_trade_off("channel", 256, 2048) == pytest.approx(0.05)  # log2 of the batch
    assert intl_trade_off("batch", 256, 2048) == pytest.approx(0.08)  # log2 of the embedding
    assert intl_trade_off("channel", 128, 8192) == pytest.approx(0.04)  # ImageNet-100


@pytest.mark.parametrize("axis", ["channel", "batch"])
@pytest.mark.parametrize("k, iters", [(2, 4), (4, 4), (3, 1)])
def test_intl_equals_the_reference_formula(gen, axis, k, iters):
    vs = [v.double() for v in views(gen, k=k, bs=48, emb=16)]
    got = intl_loss(vs, 0.03, iters, axis).item()
    assert got == pytest.approx(reference_intl(vs, 0.03, iters, axis), rel=1e-10)


@pytest.mark.parametrize("axis", ["channel", "batch"])
def test_intl_with_a_target_equals_the_reference_momentum_formula(gen, axis):
    target, *online = [v.double().requires_grad_() for v in views(gen, k=3, bs=48, emb=16)]
    got = intl_loss(online, 0.03, 4, axis, target=target)
    assert got.item() == pytest.approx(reference_intl(online, 0.03, 4, axis, target), rel=1e-10)
    got.backward()
    assert target.grad is None and all(v.grad is not None for v in online)  # EMA side: none


def test_intl_of_identical_views_is_the_trace_loss_alone(gen):
    v = views(gen, k=1, bs=32, emb=16)[0].double()
    t = whiten(v, "iternorm", "channel")
    expected = 0.05 * 2 * trace_loss(t, "channel").item()
    assert intl_loss([v, v], 0.05).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert intl_loss([v, v], 0.0).item() == pytest.approx(0.0, abs=1e-12)


def test_intl_gradients_match_finite_differences(gen):
    vs = [v.double().requires_grad_() for v in views(gen, k=2, bs=8, emb=6)]
    for axis in ("channel", "batch"):
        loss = lambda a, b, ax=axis: intl_loss([a, b], 0.02, 4, ax)  # noqa: E731
        assert torch.autograd.gradcheck(loss, vs, fast_mode=True)


# ---- LeJEPA: SIGReg ----


def epps_pulley_closed_form(x: torch.Tensor) -> torch.Tensor:
    """The Epps-Pulley statistic of a sample x: [N] integrated over the whole line, from the
    paper's T = N int |phi_hat(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt expanded by hand: with
    |phi_hat|^2 = mean_{i,j} cos(t (x_i - x_j)), Re phi_hat = mean_i cos(t x_i) and
    int cos(a t) exp(-c t^2) dt = sqrt(pi / c) exp(-a^2 / (4 c)),
        T = N [sqrt(2 pi) mean_{i,j} exp(-(x_i - x_j)^2 / 2)
               - 2 sqrt(pi) mean_i exp(-x_i^2 / 4) + sqrt(2 pi / 3)]."""
    d = x[:, None] - x[None, :]
    return len(x) * (
        math.sqrt(2 * math.pi) * torch.exp(-d.square() / 2).mean()
        - 2 * math.sqrt(math.pi) * torch.exp(-x.square() / 4).mean()
        + math.sqrt(2 * math.pi / 3)
    )


def sigreg_by_quadrature(z: torch.Tensor, a: torch.Tensor, t_max: float, points: int):
    """SIGReg written from the paper's formula another way: the complex empirical
    characteristic function of each slice, |phi_hat - phi|^2 phi on the whole symmetric grid
    of 2 points - 1 nodes of [-t_max, t_max], torch.trapezoid, times N, then the mean over
    slices and leading dims."""
    t = torch.linspace(-t_max, t_max, 2 * points - 1, dtype=torch.float64)
    x = (z @ a).unsqueeze(-1)  # [..., N, K, 1]
    ecf = torch.exp(1j * t * x.to(torch.complex128)).mean(-3)  # [..., K, T]
    phi = torch.exp(-t.square() / 2)
    integrand = (ecf - phi).abs().square() * phi
    return (z.shape[-2] * torch.trapezoid(integrand, t, dim=-1)).mean()


def far_from_gaussian(gen, *shape):
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return 1.3 * x + 0.4 * x.square() - 0.2


def test_epps_pulley_converges_to_its_closed_form_in_value_and_gradient(gen):
    """Over a wide range with many nodes the trapezoid rule of the reference's form (half
    the line, doubled) is the integral over the whole line: value and gradient."""
    x = far_from_gaussian(gen, 40, 3).requires_grad_()
    got = epps_pulley(x, t_max=12.0, points=601)
    expected = torch.stack([epps_pulley_closed_form(x[:, k]) for k in range(3)])
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)
    (grad,) = torch.autograd.grad(got.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    assert (grad - expected_grad).abs().max() <= 1e-10 * expected_grad.abs().max()


def test_epps_pulley_is_small_for_gaussian_samples_and_large_otherwise(gen):
    gauss = torch.randn(4000, 4, generator=gen, dtype=torch.float64)
    assert epps_pulley(gauss).max() < 10  # O(1) at any N for the right law (here 0.2 to 4.5)
    assert epps_pulley(far_from_gaussian(gen, 4000, 4)).min() > 50  # grows like N
    assert epps_pulley(2 * gauss).min() > 50  # the wrong scale too


@pytest.mark.parametrize("t_max, points", [(3.0, 17), (5.0, 41), (1.0, 5)])
def test_sigreg_equals_the_papers_formula_on_the_symmetric_grid(gen, t_max, points):
    """The default (17 nodes of [0, 3]) and the ablation scripts' other ranges and counts,
    on [V, N, D] projections and the same directions: value and gradient."""
    z = far_from_gaussian(gen, 3, 50, 12).requires_grad_()
    a = sigreg_directions(12, 32, torch.Generator().manual_seed(1), dtype=torch.float64)
    got = sigreg(z, a, t_max, points)
    expected = sigreg_by_quadrature(z, a, t_max, points)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    (grad,) = torch.autograd.grad(got, z)
    (expected_grad,) = torch.autograd.grad(expected, z)
    assert (grad - expected_grad).abs().max() <= 1e-12 * expected_grad.abs().max()


def test_lejepa_loss_is_the_weighted_invariance_and_sigreg_of_each_view(gen):
    vs = [v.double() for v in views(gen, k=3, bs=40, emb=10)]
    a = sigreg_directions(10, 16, torch.Generator().manual_seed(2), dtype=torch.float64)
    z = np.stack([v.numpy() for v in vs])
    centre = z.mean(0)
    invariance = np.mean([((v - centre) ** 2).mean() for v in z])
    per_view = [sigreg_by_quadrature(v, a, 3.0, 17).item() for v in vs]
    expected = 0.9 * invariance + 0.1 * np.mean(per_view)
    assert lejepa_loss(vs, 0.1, a).item() == pytest.approx(expected, rel=1e-12)
    assert lejepa_loss([vs[0]] * 3, 0.0, a).item() == 0.0  # identical views, no SIGReg
    with pytest.raises(ValueError, match="at least 2 views"):
        lejepa_loss(vs[:1], 0.1, a)


def test_lejepa_gradients_match_finite_differences(gen):
    vs = [v.double().requires_grad_() for v in views(gen, k=2, bs=8, emb=5)]
    a = sigreg_directions(5, 6, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, y: lejepa_loss([x, y], 0.3, a), vs)


def test_sigreg_directions_are_unit_vectors_drawn_from_the_generator():
    a = sigreg_directions(7, 300, torch.Generator().manual_seed(4))
    assert a.shape == (7, 300) and torch.allclose(a.norm(dim=0), torch.ones(300))
    assert a.mean(1).abs().max() < 0.15  # no preferred direction
    gen = torch.Generator().manual_seed(4)
    first, second = sigreg_directions(7, 300, gen), sigreg_directions(7, 300, gen)
    assert torch.equal(first, a) and not torch.allclose(second, a)  # afresh at each draw
