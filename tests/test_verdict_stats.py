"""The statistics behind a verdict (issue 36): the paired interval, the power of a
comparison over seeds, the rank correlations of early and final metrics, and the common
random numbers that make a confirmation's arms pair."""

import math
import statistics

import numpy as np
import pytest
import torch

from wsl_ray.sweep.stats import (
    correlation,
    detectable_difference,
    format_agreement,
    kendall_tau_b,
    noncentrality,
    paired_difference,
    paired_interval,
    rank_interval,
    rung_agreements,
    seeds_needed,
    spearman,
    t_quantile,
    t_test_power,
    welch_difference,
    welch_interval,
)
from wsl_ray.sweep.summary import early_ranking

Z975, Z80 = 1.959963984540054, 0.8416212335729143


def test_paired_interval_is_students_t_on_the_per_seed_differences():
    a, b = [0.62, 0.70, 0.55, 0.66], [0.60, 0.65, 0.55, 0.61]
    d = [0.02, 0.05, 0.0, 0.05]
    half = t_quantile(0.975, 3) * statistics.stdev(d) / 2
    mean = statistics.fmean(d)
    assert paired_interval(a, b) == pytest.approx((mean, mean - half, mean + half), rel=1e-9)
    assert paired_difference(a, b).df == 3
    # t_{0.975, 3} = 3.182446 (tables): the interval is not a normal one
    assert t_quantile(0.975, 3) == pytest.approx(3.182446, abs=1e-6)
    with pytest.raises(ValueError, match="pairs"):
        paired_interval([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="--seeds"):
        paired_interval([0.1], [0.2])


def test_correlation_is_pearsons_and_none_without_spread():
    a, b = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0]
    # means 2.5 and 2.75; sum of products 5.5, sums of squares 5 and 8.75
    assert correlation(a, b) == pytest.approx(5.5 / math.sqrt(5 * 8.75))
    assert correlation(a, [2.0] * 4) is None
    assert correlation([1.0], [2.0]) is None


def _shared_noise_arms(rng, reps, n, rho, gain=1.0):
    """reps x n seeds of two arms with unit std whose noise correlates by rho."""
    shared = rng.standard_normal((reps, n))
    own = rng.standard_normal((2, reps, n))
    a = gain + math.sqrt(rho) * shared + math.sqrt(1 - rho) * own[0]
    b = math.sqrt(rho) * shared + math.sqrt(1 - rho) * own[1]
    return a, b


@pytest.mark.parametrize("n", [3, 6])
def test_paired_interval_covers_the_true_difference_95_percent_of_the_time(n):
    """4000 seeded repetitions: the coverage's Monte Carlo std is sqrt(.95 * .05 / 4000) =
    0.0034, so 0.95 +- 0.012 (3.5 std) holds for a right formula and fails for a normal
    quantile in place of t's (coverage 0.81 at n = 3, 0.89 at n = 6) or for n df in place
    of n - 1 (0.91 at n = 3)."""
    rng = np.random.default_rng(36)
    a, b = _shared_noise_arms(rng, 4000, n, rho=0.8)
    covered = 0
    for x, y in zip(a, b, strict=True):
        _, lo, hi = paired_interval(list(x), list(y))
        covered += lo <= 1.0 <= hi
    assert covered / 4000 == pytest.approx(0.95, abs=0.012)


def test_paired_interval_is_narrower_than_welchs_when_the_arms_share_noise():
    """With correlation 0.9 the differences have 0.2 of an arm's variance: over 100
    seeded repetitions of 5 seeds the paired interval is far narrower, nearly always."""
    rng = np.random.default_rng(7)
    a, b = _shared_noise_arms(rng, 100, 5, rho=0.9)
    ratios = []
    for x, y in zip(a, b, strict=True):
        _, plo, phi = paired_interval(list(x), list(y))
        _, wlo, whi = welch_interval(list(x), list(y))
        ratios.append((phi - plo) / (whi - wlo))
    assert statistics.median(ratios) < 0.6
    assert sum(r < 1 for r in ratios) >= 95


def test_the_power_figures_match_the_normal_limit_and_published_sample_sizes():
    # a huge df: the t test is the z test, delta = z_.975 + z_.80 standard errors
    assert noncentrality(1e6) == pytest.approx(Z975 + Z80, rel=1e-5)
    # G*Power's sample sizes at alpha .05 two-sided, power .80: one-sample (paired) t test
    # dz = 1 -> 10 and dz = 0.5 -> 34; two-sample d = 1 -> 17 and d = 0.8 -> 26 per group
    assert seeds_needed(1.0, 1.0, paired=True) == 10
    assert seeds_needed(0.5, 1.0, paired=True) == 34
    assert seeds_needed(1.0, 1.0, paired=False) == 17
    assert seeds_needed(0.8, 1.0, paired=False) == 26
    # the smallest detectable difference is a number of standard errors of the design
    assert detectable_difference(2.0, 4, paired=True) == pytest.approx(noncentrality(3) * 1.0)
    assert detectable_difference(2.0, 4, paired=False) == pytest.approx(
        noncentrality(6) * 2.0 * math.sqrt(2 / 4)
    )
    with pytest.raises(ValueError, match="at least 2"):
        detectable_difference(1.0, 1, paired=True)
    with pytest.raises(ValueError, match="> 0"):
        seeds_needed(0.0, 1.0, paired=True)


def test_seeds_needed_is_the_fewest_that_detect_the_gain():
    for gain, spread, paired in [(3.0, 10.0, False), (3.0, 10.0, True), (2.0, 1.0, True)]:
        n = seeds_needed(gain, spread, paired)
        assert detectable_difference(spread, n, paired) <= gain
        assert n == 2 or detectable_difference(spread, n - 1, paired) > gain


@pytest.mark.parametrize("n", [3, 4])
def test_a_difference_of_the_detectable_size_is_found_80_percent_of_the_time(n):
    """Simulated paired t tests at the detectable difference: 40000 seeded repetitions give
    a Monte Carlo std of 0.002, so 0.80 +- 0.008; the shortcut (t_.975 + t_.80) se has a
    power of 0.766 at n = 3 and 0.785 at n = 4, z's quantiles 0.35 and 0.48."""
    delta = detectable_difference(1.0, n, paired=True)
    rng = np.random.default_rng(n)
    d = rng.normal(delta, 1.0, (40000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t) > t_quantile(0.975, n - 1)) == pytest.approx(0.80, abs=0.008)
    assert t_test_power(delta / (1 / math.sqrt(n)), n - 1) == pytest.approx(0.80, abs=1e-6)


def test_welch_difference_of_equal_arms_has_the_designs_df():
    a, b = [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]
    d = welch_difference(a, b)
    assert (d.diff, d.df, d.se) == pytest.approx((1.0, 4.0, math.sqrt(2 / 3)))


def test_spearman_and_kendall_against_hand_computed_values():
    # no ties: one swapped pair of 4: rho = 1 - 6 * 2 / (4 * 15), tau = (5 - 1) / 6
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # ties in both: ranks (1.5, 1.5, 3, 4) and (1, 2.5, 2.5, 4) -> rho = 3.75 / 4.5; pairs:
    # 4 concordant, 2 tied, n0 = 6, one tied pair per side -> tau-b = 4 / sqrt(5 * 5)
    assert spearman([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(3.75 / 4.5)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_rank_intervals_are_fisher_z_with_fieller_hartley_pearson_variances():
    z = math.atanh(0.5)
    lo, hi = rank_interval(0.5, 20, "kendall")
    assert (lo, hi) == pytest.approx(
        (math.tanh(z - Z975 * math.sqrt(0.437 / 16)), math.tanh(z + Z975 * math.sqrt(0.437 / 16)))
    )
    lo, hi = rank_interval(0.5, 20, "spearman")
    assert hi == pytest.approx(math.tanh(z + Z975 * math.sqrt(1.06 / 17)))
    assert rank_interval(0.5, 4, "kendall") is None  # n - 4 = 0
    assert rank_interval(1.0, 10, "kendall") == (1.0, 1.0)  # the formula's limit
    assert rank_interval(math.nan, 10, "spearman") is None


CRN_SPACE = """
config: {method: w_mse, dataset: shapes, arch: resnet18_w8, bs: 32, epoch: 2, eval_on: val,
         eval_every: 100, subset: 32, head_size: 32, w_eps: 0.01, lr_warmup: false}
params:
  lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}
  emb: {distribution: categorical, choices: [8, 16]}
derived: {w_size: emb * 2}
first: {lr: 3.0e-3, emb: 16}
"""


def test_a_confirmations_arms_see_the_same_data_and_augmentation_for_a_seed(
    tmp_path, monkeypatch, tiny_data, request
):
    """Common random numbers: the default and another configuration (other emb, w_size and
    lr) of one confirmation, trained for two epochs with the seed they share, get the same
    batches in the same order, the same augmentation draws and the same encoder weights at
    the start (the head's shapes differ: its init is not compared). The data order, the
    augmentation and the initialisation each have a generator of their own seeded from the
    seed (training.loop.run_parts, initial_model), so a model of another shape cannot shift
    the data or augmentation streams."""
    from wsl_ray.config import Config
    from wsl_ray.data import Augment
    from wsl_ray.sweep.confirmation import confirm_configs
    from wsl_ray.sweep.space import CONFIG_KEYS, parse_space
    from wsl_ray.training import loop

    space = parse_space(CRN_SPACE, tmp_path / "s.yaml")
    default = space.resolve(space.default_point())
    other = space.resolve({"lr": 1e-3, "emb": 8})
    sweep_rows = [  # the sweep ran the default with seed 1000: neither arm may take it
        {"status": "TERMINATED", "val_acc_knn": v}
        | {f"config/{k}": value for k, value in config.items()}
        | {"config/seed": seed}
        for v, config, seed in ((0.5, default, 1000), (0.7, other, 0))
    ]
    configs = confirm_configs(sweep_rows, space, "val_acc_knn", k=1, seeds=1, seed=0)
    assert [c["confirm_label"] for c in configs] == ["default", "top1"]
    assert configs[0]["seed"] == configs[1]["seed"] == 1001
    assert (configs[0]["emb"], configs[1]["emb"]) == (16, 8)

    seen: list[tuple[str, torch.Tensor]] = []
    batches, draw = loop.iterate_batches, Augment.draw

    def recorded_batches(*args, **kwargs):
        for x, y, sizes in batches(*args, **kwargs):
            seen.append(("batch", torch.cat([y.float(), x.float().flatten(1).sum(1)])))
            yield x, y, sizes

    def recorded_draw(self, n):
        u = draw(self, n)
        seen.append(("draw", u.clone()))
        return u

    monkeypatch.setattr(loop, "iterate_batches", recorded_batches)
    monkeypatch.setattr(Augment, "draw", recorded_draw)
    monkeypatch.setattr(loop, "evaluate_run", lambda *a, **k: {})
    runs, encoders = [], []
    initial = loop.initial_model

    def recorded_init(*args, **kwargs):
        model = initial(*args, **kwargs)
        encoders.append({k: v.clone() for k, v in model.model.state_dict().items()})
        return model

    monkeypatch.setattr(loop, "initial_model", recorded_init)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy machine's cores: several threads wait on each other
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    for i, config in enumerate(configs):
        seen.clear()
        values = {k: v for k, v in config.items() if k in CONFIG_KEYS}
        cfg = Config.from_dict(values | {"out": str(tmp_path / f"run{i}")})
        loop.train(cfg, data=tiny_data, progress=False)
        runs.append(list(seen))
    a, b = runs
    assert [kind for kind, _ in a] == [kind for kind, _ in b]
    assert sum(kind == "batch" for kind, _ in a) == 2  # 2 epochs of 1 batch
    assert sum(kind == "draw" for kind, _ in a) >= 2
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))
    first, second = encoders
    assert all(torch.equal(first[k], second[k]) for k in first)


def _trial(status, history, budget=4, metric="val_acc_knn"):
    """A results row whose `history` holds `metric` at epochs 1, 2, ..."""
    epochs = [{"epoch": e, metric: v} for e, v in enumerate(history, 1)]
    return {"status": status, "epochs": len(history), "epoch_budget": budget} | {
        metric: history[-1],
        "history": epochs,
    }


def test_rung_agreements_rank_each_epoch_against_the_end_over_the_finished_trials():
    rows = [
        _trial("TERMINATED", [0.1, 0.2, 0.3, 0.40]),
        _trial("TERMINATED", [0.2, 0.1, 0.3, 0.50]),
        _trial("TERMINATED", [0.3, 0.3, 0.1, 0.60]),
        _trial("TERMINATED", [0.4, 0.4, 0.2, 0.70]),
        _trial("STOPPED", [0.9, 0.9]),  # stopped early: it has no final value
        _trial("TERMINATED", [0.5, math.nan, 0.4, math.nan]),  # no final metric
    ]
    ended, agreements = rung_agreements(rows, "val_acc_knn")
    assert ended == 4
    assert [a.epoch for a in agreements] == [1, 2, 3]  # the last epoch is the end itself
    assert all(a.trials == 4 for a in agreements)
    # epoch 1 ranks as the end: 1; epoch 2 swaps the first two: rho 0.8, tau 4/6;
    # epoch 3 (0.3, 0.3, 0.1, 0.2): ranks (3.5, 3.5, 1, 2) against (1, 2, 3, 4)
    assert (agreements[0].spearman, agreements[0].kendall) == (1.0, 1.0)
    assert agreements[1].spearman == pytest.approx(0.8)
    assert agreements[1].kendall == pytest.approx(4 / 6)
    assert agreements[2].kendall == pytest.approx(-3 / math.sqrt(5 * 6))
    assert agreements[1].kendall_interval is None  # n - 4 = 0: no interval
    assert agreements[1].spearman_interval == rank_interval(0.8, 4, "spearman")


def test_rung_agreements_need_three_finished_trials():
    rows = [_trial("TERMINATED", [0.1, 0.4]), _trial("TERMINATED", [0.2, 0.5])]
    assert rung_agreements(rows, "val_acc_knn") == (2, [])
    line = early_ranking(rows, "val_acc_knn", "exp")
    assert "2 trial(s) ran their whole budget" in line and "needs 3 or more" in line
    assert "nan" not in line.lower()


def test_the_summary_line_says_from_which_epoch_the_ranking_predicts():
    """Twelve trials: epoch 1 orders them at random (tau's interval spans 0), epoch 2 as
    the end but for one swapped pair (tau = 1 - 2/66, its interval above 0), epoch 3
    exactly as the end (tau = 1: the interval collapses onto 1)."""
    final = [i / 12 for i in range(12)]
    shuffled = [5, 2, 9, 0, 11, 7, 3, 8, 1, 10, 6, 4]
    near = final[:3] + [final[4], final[3]] + final[5:]
    rows = [
        _trial("TERMINATED", [shuffled[i] / 12, near[i], final[i], final[i]]) for i in range(12)
    ]
    ended, agreements = rung_agreements(rows, "val_acc_knn")
    assert ended == 12
    assert agreements[0].kendall_interval[0] < 0 < agreements[0].kendall_interval[1]
    assert agreements[1].kendall == pytest.approx(1 - 2 / 66)
    assert agreements[1].kendall_interval[0] > 0
    line = early_ranking(rows, "val_acc_knn", "exp")
    assert "from epoch 2 on" in line and "python -m analysis rungs exp" in line
    assert format_agreement(agreements[0].kendall, agreements[0].kendall_interval) in line
