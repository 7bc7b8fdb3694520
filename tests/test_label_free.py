"""The label-free metrics against their papers' formulas, on data with a known answer:
alpha-ReQ on features whose covariance is a planted power law, LiDAR on classes whose means
span exactly r directions with isotropic views; each also against a float64 re-derivation
in NumPy by another route (np.polyfit; the generalised eigenproblem Sigma_w^-1 Sigma_b)."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import wsl_ray.training.evaluate as evaluate_module
from wsl_ray.config import Config
from wsl_ray.data import load_dataset
from wsl_ray.training.evaluate import (
    ALPHA_RANKS,
    LIDAR_N,
    LIDAR_Q,
    alpha_req,
    embed_views,
    lidar,
    lidar_plan_line,
    lidar_views,
    rankme,
)


def features_with_covariance(eigenvalues: torch.Tensor, n: int, gen) -> torch.Tensor:
    """[n, d] float64 features whose covariance (1/n, centred) is exactly Q diag(eigenvalues)
    Q^T for a random rotation Q: sqrt(n) U diag(sqrt(eigenvalues)) Q^T, U orthonormal,
    zero-mean columns."""
    d = len(eigenvalues)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    u, _ = torch.linalg.qr(a - a.mean(dim=0))  # columns in the span of centred ones: zero mean
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return math.sqrt(n) * u * eigenvalues.sqrt() @ rotation.T


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_a_planted_power_law(gen, alpha):
    ranks = torch.arange(1, 129, dtype=torch.float64)
    x = features_with_covariance(3.0 * ranks**-alpha, 1000, gen)
    assert alpha_req(x) == pytest.approx(alpha, abs=1e-9)
    assert alpha_req(x.float()) == pytest.approx(alpha, abs=1e-3)  # float32 features


def test_alpha_req_fits_ranks_6_to_100_only(gen):
    """A head above the line (ranks 1-5) and a collapsed tail (ranks 101-128) leave the
    exponent of ranks 6-100 alone; fitted over all ranks it would not be 1."""
    ranks = torch.arange(1, 129, dtype=torch.float64)
    spectrum = ranks**-1.0
    spectrum[:5] *= 50
    spectrum[100:] = 1e-9
    x = features_with_covariance(spectrum, 1000, gen)
    assert ALPHA_RANKS == (6, 100)
    assert alpha_req(x) == pytest.approx(1.0, abs=1e-6)
    assert abs(alpha_req(x, ranks=(1, 128)) - 1.0) > 0.5


def test_alpha_req_is_the_least_squares_slope_numpy_finds(gen):
    x = torch.randn(300, 40, generator=gen, dtype=torch.float64) @ torch.randn(
        40, 40, generator=gen, dtype=torch.float64
    )
    cov = np.cov(x.numpy().T, bias=True)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    ranks = np.arange(6, 41)
    slope, _ = np.polyfit(np.log(ranks), np.log(eig[ranks - 1]), 1)
    assert alpha_req(x) == pytest.approx(-slope, rel=1e-9)


def test_collapse_reads_as_a_steep_decay(gen):
    """Rank 20 of 64 (zero eigenvalues, up to rounding, inside the fitted ranks): a large
    alpha; rank 3 (zero from the first fitted rank on): an infinitely steep one."""

    def of_rank(r: int) -> torch.Tensor:
        a = torch.randn(500, r, generator=gen, dtype=torch.float64)
        return (a @ torch.randn(r, 64, generator=gen, dtype=torch.float64)).float()

    assert 5 < alpha_req(of_rank(20)) < math.inf
    assert alpha_req(of_rank(3)) == math.inf
    assert math.isnan(alpha_req(torch.zeros(10, 4)))


def smooth_rank(eigenvalues: np.ndarray, eps: float) -> float:
    p = eigenvalues / eigenvalues.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("r", [1, 3, 5])
def test_lidar_is_the_rank_of_the_class_structure(gen, r):
    """n = 2r classes with means +-a e_k (k < r) and q = 2d views at +-sigma sqrt(d) e_m
    around each, rotated: Sigma_b = a^2/r P_r and Sigma_w = sigma^2 I exactly, so the LDA
    matrix has r equal eigenvalues and d - r zeros, and LiDAR = r (up to the paper's eps)."""
    d, a, sigma, eps = 8, 3.0, 0.5, 1e-8
    eye = torch.eye(d, dtype=torch.float64)
    means = torch.cat([a * eye[:r], -a * eye[:r]])  # [2r, d]
    noise = torch.cat([eye, -eye]) * sigma * math.sqrt(d)  # [2d, d]: mean 0, covariance sigma^2 I
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    views = (means[:, None] + noise[None]) @ rotation.T  # [n, q, d]
    p = np.array([1 / r] * r + [0.0] * (d - r)) + eps
    exact = float(np.exp(-(p * np.log(p)).sum()))
    assert lidar(views, eps=eps) == pytest.approx(exact, rel=1e-9)
    assert lidar(views) == pytest.approx(r, rel=1e-5)


def test_lidar_matches_the_generalised_eigenproblem_in_numpy(gen):
    """Eigenvalues of Sigma_w^-1/2 Sigma_b Sigma_w^-1/2 are those of Sigma_w^-1 Sigma_b: an
    independent route, with a large delta so that Sigma_w's normalisation shows."""
    n, q, d, delta, eps = 30, 7, 5, 0.3, 1e-8
    scale = torch.tensor([2.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)
    means = torch.randn(n, 1, d, generator=gen, dtype=torch.float64)
    e = means + torch.randn(n, q, d, generator=gen, dtype=torch.float64) * scale
    x = e.numpy()
    mu_i = x.mean(axis=1)
    b = mu_i - mu_i.mean(axis=0)
    sigma_b = b.T @ b / n
    w = (x - mu_i[:, None]).reshape(n * q, d)
    sigma_w = w.T @ w / (n * q) + delta * np.eye(d)
    lam = np.clip(np.linalg.eigvals(np.linalg.solve(sigma_w, sigma_b)).real, 0, None)
    assert lidar(e, delta=delta, eps=eps) == pytest.approx(smooth_rank(lam, eps), rel=1e-9)


def test_lidar_discounts_directions_the_views_vary_in_and_rankme_does_not(gen):
    """The views of 400 images have the same variance in 6 directions, but in 4 of them the
    views of one image vary as much as the images do: LiDAR counts the 2 directions that
    tell images apart, RankMe all 6."""
    n, q = 400, 20
    spread = torch.tensor([1.4, 1.4, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    jitter = torch.tensor([0.01, 0.01, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    means = torch.randn(n, 1, 6, generator=gen, dtype=torch.float64) * spread
    e = means + torch.randn(n, q, 6, generator=gen, dtype=torch.float64) * jitter
    assert lidar(e) == pytest.approx(2.0, abs=0.1)
    assert rankme(e.reshape(n * q, 6)) > 5.8


def test_lidar_of_one_point_is_zero():
    assert lidar(torch.ones(5, 3, 4)) == 0.0


def tiny_model(cfg: Config, crop_size: int):
    from wsl_ray.methods import get_method

    torch.manual_seed(0)
    return get_method(cfg.method)(cfg, crop_size)


def test_views_are_the_training_pipelines_and_repeat_with_the_seed():
    data = load_dataset("shapes").subset(40)
    cfg = Config(arch="resnet18_w8", emb=16, w_size=32, bs=64, head_size=32, label_free="lidar")
    model, cpu = tiny_model(cfg, data.crop_size), torch.device("cpu")
    index = torch.tensor([3, 7, 11, 20])
    first, again = (
        embed_views(model, data.clf_x, data.clf_y, index, lidar_views(cfg, data, cpu), 5, cpu)
        for _ in range(2)
    )
    assert first.shape == (4, 5, model.embed_size) and torch.equal(first, again)
    assert not torch.allclose(first[:, 0], first[:, 1])  # two different views of each image
    assert model.training  # left as it was


def test_lidar_is_opt_in_and_reported_with_its_cost(monkeypatch):
    monkeypatch.setattr(evaluate_module, "LIDAR_N", 6)
    monkeypatch.setattr(evaluate_module, "LIDAR_Q", 3)
    monkeypatch.setattr(evaluate_module, "linear_probe", lambda *a, **k: {1: 0.5, 5: 0.9})
    data = load_dataset("shapes").subset(60)
    cfg = Config(
        arch="resnet18_w8", emb=16, w_size=32, bs=64, head_size=32, eval_on="val", dataset="shapes"
    )
    model, cpu = tiny_model(cfg, data.crop_size), torch.device("cpu")
    plain = evaluate_module.evaluate_run(model, data, cpu, cfg)
    assert set(plain) == {"val_acc", "val_acc_5", "val_acc_knn", "rankme", "alpha", "alpha_req"}
    assert plain["alpha_req"] == pytest.approx(abs(plain["alpha"] - 1))
    cfg = dataclasses.replace(cfg, label_free="lidar")
    final = evaluate_module.evaluate_run(model, data, cpu, cfg, final=True)
    assert set(final) - set(plain) == {
        "lidar",
        "lidar_time_s",
        "test_acc",
        "test_acc_5",
        "test_acc_knn",
    }
    assert 1 <= final["lidar"] <= 6 and final["lidar_time_s"] > 0


def test_the_flags_help_states_the_constants():
    field = {f.name: f for f in dataclasses.fields(Config)}["label_free"]
    assert f"{LIDAR_Q} augmented views of each of {LIDAR_N} " in field.metadata["help"]


def test_the_plans_lidar_line():
    line = lidar_plan_line(lidar_s=30.0, eval_s=40.0, evals=5, trial_s=600.0)
    assert line == (
        f"LiDAR (--label_free lidar: {LIDAR_Q} views of each of {LIDAR_N} images) takes 30.0 s "
        "of each evaluation's 40.0 s: 150 s per trial, 25% of its time."
    )
