"""The confirmation stage's statistics and choice of configurations, on plain functions."""

import json
import math
import statistics

import pytest

from wsl_ray.sweep.confirmation import confirm_configs, default_is_best, summarize_confirmation
from wsl_ray.sweep.space import parse_space
from wsl_ray.sweep.stats import detectable_difference, seeds_needed, t_quantile, welch_interval

SPACE = """
config: {method: w_mse, dataset: shapes, bs: 128, epoch: 2, eval_on: val}
params:
  lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}
  emb: {distribution: categorical, choices: [8, 16]}
derived: {w_size: emb * 4}
first: {lr: 3.0e-3, emb: 16}
"""


def test_t_quantiles_match_closed_forms_and_the_normal_limit():
    p = 0.975
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-7)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-7)
    assert t_quantile(p, 1e6) == pytest.approx(1.959964, rel=1e-5)


def test_welch_interval_follows_its_formula():
    a, b = [0.60, 0.64, 0.62], [0.50, 0.58]
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 2
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1)
    half = t_quantile(0.975, df) * math.sqrt(va + vb)
    diff = statistics.fmean(a) - statistics.fmean(b)
    assert welch_interval(a, b) == pytest.approx((diff, diff - half, diff + half), rel=1e-12)
    assert welch_interval([0.5, 0.5], [0.4, 0.4]) == pytest.approx((0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="--seeds"):
        welch_interval([0.5], [0.4, 0.4])


FIXED = {"method": "w_mse", "dataset": "shapes", "bs": 128, "epoch": 2, "eval_on": "val"}


def row(trial, status, val, lr, emb, seed=0, **extra):
    return {
        "trial_id": trial,
        "status": status,
        "val_acc_knn": val,
        "config/lr": lr,
        "config/emb": emb,
        "config/w_size": 4 * emb,
        "config/seed": seed,
        "config/w_ratio": 4,
        **{f"config/{k}": v for k, v in FIXED.items()},
        **extra,
    }


def test_confirm_configs_are_the_default_and_distinct_top_terminated_trials(tmp_path):
    space = parse_space(SPACE, tmp_path / "s.yaml")
    rows = [
        row("a", "TERMINATED", 0.5, 3e-3, 16),  # the default point itself
        row("b", "STOPPED", 0.9, 1e-3, 8),  # stopped early: not confirmed
        row("c", "TERMINATED", 0.7, 2e-3, 8),
        row("d", "TERMINATED", 0.6, 5e-4, 8),
    ]
    configs = confirm_configs(rows, space, "val_acc_knn", k=1, seeds=2, seed=5)
    assert [(c["confirm_label"], c["seed"], c["lr"]) for c in configs] == [
        ("default", 1005, 3e-3),
        ("default", 1006, 3e-3),
        ("top1", 1005, 2e-3),
        ("top1", 1006, 2e-3),
    ]
    assert all(c["eval_on"] == "val" and "w_ratio" not in c for c in configs)
    assert not default_is_best(rows, space, "val_acc_knn")
    # now the default is the best: the next-best one is confirmed against it
    rows[2]["val_acc_knn"], rows[3]["val_acc_knn"] = 0.4, 0.45
    assert {c["lr"] for c in confirm_configs(rows, space, "val_acc_knn", 1, 2, 0)} == {3e-3, 5e-4}
    assert default_is_best(rows, space, "val_acc_knn")


def test_the_summary_says_whether_the_best_beats_the_default():
    def runs(label, tests):
        return [
            {"config/confirm_label": label, "val_acc_knn": 0.5, "test_acc_knn": t} for t in tests
        ]

    table, verdict = summarize_confirmation(
        runs("default", [0.50, 0.52, 0.51]) + runs("top1", [0.70, 0.71, 0.72]), "val_acc_knn"
    )
    assert table[1]["test_acc_knn mean ± std"] == "71.00 ± 1.00"
    assert "beats the default beyond noise" in verdict and "Welch" in verdict
    _, verdict = summarize_confirmation(
        runs("default", [0.50, 0.60]) + runs("top1", [0.52, 0.61]), "val_acc_knn"
    )
    assert "does NOT beat the default beyond noise" in verdict
    assert verdict.startswith("The validation-selected best (top1)")
    _, verdict = summarize_confirmation(  # the sweep's best was the default point itself
        runs("default", [0.50, 0.60]) + runs("top1", [0.52, 0.61]), "val_acc_knn", runner_up=True
    )
    assert verdict.startswith("The sweep's runner-up (top1; its best was the default itself)")


def first_confirmation(tmp_path, default_seed: int, best_seed: int):
    """(space, rows, configs) of a first confirmation (1 top config, 2 seeds, --seed 0) of a
    sweep whose default point ("a", lr 3e-3, emb 16) ran with `default_seed` and whose best
    ("c", lr 2e-3, emb 8) with `best_seed`."""
    space = parse_space(SPACE, tmp_path / "s.yaml")
    rows = [
        row("a", "TERMINATED", 0.5, 3e-3, 16, seed=default_seed),
        row("c", "TERMINATED", 0.7, 2e-3, 8, seed=best_seed),
    ]
    return space, rows, confirm_configs(rows, space, "val_acc_knn", k=1, seeds=2, seed=0)


def test_confirming_twice_takes_new_seeds_and_the_table_counts_them(tmp_path):
    """A second confirmation (the same --seed) never repeats a seed of a configuration: not
    one of the first confirmation's, nor the sweep trial's own (here --seed 1000 puts the
    search's seed 1001 in the way), and the pooled table counts each run once."""
    space, rows, first = first_confirmation(tmp_path, default_seed=1001, best_seed=1001)
    assert [(c["confirm_label"], c["seed"]) for c in first] == [
        ("default", 1000),
        ("default", 1002),  # 1001: the sweep trial of the default point used it
        ("top1", 1000),
        ("top1", 1002),
    ]
    done = [
        row(f"r{i}", "TERMINATED", 0.5, c["lr"], c["emb"], seed=c["seed"])
        | {"config/confirm_label": c["confirm_label"], "test_acc_knn": 0.4 + i / 100}
        for i, c in enumerate(first)
    ]
    second = confirm_configs(rows, space, "val_acc_knn", 1, 2, 0, done)
    assert [(c["confirm_label"], c["seed"]) for c in second] == [
        ("default", 1003),
        ("default", 1004),
        ("top1", 1003),
        ("top1", 1004),
    ]
    pooled = done + [
        row(f"s{i}", "TERMINATED", 0.5, c["lr"], c["emb"], seed=c["seed"])
        | {"config/confirm_label": c["confirm_label"], "test_acc_knn": 0.5 + i / 100}
        for i, c in enumerate(second)
    ]
    table, _ = summarize_confirmation(pooled, "val_acc_knn")
    assert [(t["config"], t["seeds"]) for t in table] == [("default", 4), ("top1", 4)]
    seeds = [(r["config/confirm_label"], r["config/seed"]) for r in pooled]
    assert len(set(seeds)) == len(seeds) == 8


def test_a_new_top_configuration_gets_a_label_of_its_own(tmp_path):
    space = parse_space(SPACE, tmp_path / "s.yaml")
    done = [row("x", "TERMINATED", 0.6, 2e-3, 8, seed=1000) | {"config/confirm_label": "top1"}]
    rows = [row("d", "TERMINATED", 0.9, 5e-4, 8)]  # a better trial since the first confirm
    labels = {
        c["confirm_label"] for c in confirm_configs(rows, space, "val_acc_knn", 1, 2, 0, done)
    }
    assert labels == {"default", "top2"}  # top1 names the configuration confirmed before


def test_one_run_shows_no_spread(tmp_path):
    table, _ = summarize_confirmation(
        [{"config/confirm_label": "default", "val_acc_knn": 0.5, "test_acc_knn": 0.4}],
        "val_acc_knn",
    )
    assert table[0]["test_acc_knn mean ± std"] == "40.00 (one seed)"


def test_nothing_to_confirm_is_refused_before_any_run(tmp_path):
    from wsl_ray.sweep.confirmation import plan_confirmation

    exp = tmp_path / "exp" / "trial_abc_00001"
    exp.mkdir(parents=True)
    (exp / "params.json").write_text('{"epoch": 2, "lr": 0.003, "emb": 16, "w_ratio": 4}')
    (exp / "result.json").write_text('{"epoch": 1, "rankme": 2.0, "val_acc_knn": 0.1}\n')
    space = parse_space(SPACE, tmp_path / "s.yaml")  # the only trial stopped at epoch 1
    with pytest.raises(ValueError, match="no TERMINATED trial with a val_acc_knn besides"):
        plan_confirmation(str(tmp_path / "exp"), space, "val_acc_knn", 1, 2)


def test_every_configuration_of_a_confirmation_runs_the_same_new_seeds(tmp_path):
    """The arms pair: a seed that any chosen configuration used is skipped for all of them
    (here the sweep ran the default with seed 1000 and the best with seed 1001), and a
    second confirmation that brings in a new top configuration gives all three arms the
    same new seeds, none used before by any of them."""
    space, rows, first = first_confirmation(tmp_path, default_seed=1000, best_seed=1001)
    assert [(c["confirm_label"], c["seed"]) for c in first] == [
        ("default", 1002),
        ("default", 1003),
        ("top1", 1002),
        ("top1", 1003),
    ]
    done = [
        row(f"r{i}", "TERMINATED", 0.5, c["lr"], c["emb"], seed=c["seed"])
        | {"config/confirm_label": c["confirm_label"]}
        for i, c in enumerate(first)
    ]
    rows.append(row("d", "TERMINATED", 0.6, 5e-4, 8, seed=1004))
    second = confirm_configs(rows, space, "val_acc_knn", 2, 2, 0, done)
    by_label: dict[str, list[int]] = {}
    for c in second:
        by_label.setdefault(c["confirm_label"], []).append(c["seed"])
    assert by_label == {"default": [1005, 1006], "top1": [1005, 1006], "top2": [1005, 1006]}


def _seeded(label, tests, seeds=(1000, 1001, 1002), val=0.5):
    return [
        {"config/confirm_label": label, "config/seed": s, "val_acc_knn": val, "test_acc_knn": t}
        for s, t in zip(seeds, tests, strict=True)
    ]


def test_a_paired_confirmation_gives_the_paired_interval_and_the_correlation():
    """Per-seed differences 2, 1, 3 points: mean 2, sd 1, t_{.975, 2} = 4.303, so
    [-0.48, +4.48]; Welch's on the same runs (sds 5 and 4.58, about 4 df) is [-8.90,
    +12.90]. The verdict takes the paired interval and, not significant with an upper end
    above the detectable 3.26 points, says it was underpowered."""
    rows = _seeded("default", [0.50, 0.60, 0.55]) + _seeded("top1", [0.52, 0.61, 0.58], val=0.6)
    table, verdict = summarize_confirmation(rows, "val_acc_knn")
    top = table[1]
    assert top["paired (95% CI)"] == "+2.00 [-0.48, +4.48]"
    assert top["vs default (95% CI)"] == "+2.00 [-8.90, +12.90]"
    assert top["pairs"] == 3
    a, b = [0.52, 0.61, 0.58], [0.50, 0.60, 0.55]
    assert top["r"] == f"{statistics.correlation(a, b):+.2f}"
    assert "95% CI [-0.48, +4.48] (paired t over 3 shared seeds" in verdict
    x = detectable_difference(0.01, 3, paired=True)  # sd of the differences: 1 point
    assert f"could not have seen less than {x * 100:.2f} points" in verdict
    assert f"about {seeds_needed(0.02, 0.01, paired=True)} seeds per configuration" in verdict


def test_a_verdict_that_excludes_a_gain_says_which():
    same = [0.50, 0.60, 0.55, 0.45, 0.65]
    near = [0.51, 0.59, 0.55, 0.455, 0.645]  # differences +-1 point around 0
    rows = _seeded("default", same, range(5)) + _seeded("top1", near, range(5), val=0.6)
    _, verdict = summarize_confirmation(rows, "val_acc_knn")
    d = [x - y for x, y in zip(near, same, strict=True)]
    x = detectable_difference(statistics.stdev(d), 5, paired=True)
    assert f"It excludes a gain of {x * 100:.2f} points or more" in verdict


def test_a_seed_that_does_not_pair_leaves_the_verdict_to_welch():
    rows = _seeded("default", [0.50, 0.60, 0.55]) + _seeded(
        "top1", [0.52, 0.61, 0.58], (1000, 1001, 1003), val=0.6
    )
    table, verdict = summarize_confirmation(rows, "val_acc_knn")
    assert "[-8.90, +12.90] (Welch's t over 3 and 3 seeds: not every seed pairs)" in verdict
    assert table[1]["pairs"] == 2  # the paired column covers the two seeds both ran


def _stored_confirmation(storage, name, space_text, tests_by_label):
    """An experiment folder `name` with `space_text` as its search_space.yaml, and its
    `<name>-confirm` with one trial per (label, seed, test value)."""
    (storage / name).mkdir(parents=True)
    (storage / name / "search_space.yaml").write_text(space_text)
    number = 0
    for label, tests in tests_by_label.items():
        for seed, test in enumerate(tests, 1000):
            number += 1
            trial = storage / f"{name}-confirm" / f"trial_t{number}_{number:05d}"
            trial.mkdir(parents=True)
            params = {"epoch": 2, "seed": seed, "confirm_label": label}
            (trial / "params.json").write_text(json.dumps(params))
            (trial / "result.json").write_text(json.dumps({"epoch": 2, "val_acc_knn": 0.5}))
            (trial / "test_metrics.json").write_text(json.dumps({"test_acc_knn": test}))


def test_the_plan_reads_the_seed_spread_of_an_earlier_confirmation_or_the_flag(tmp_path):
    """The earlier confirmation of the same parameters and dataset pairs its seeds: the
    spread is the std of its per-seed differences (1, 2, 3 points: 1 point); one of
    another dataset is not read. The flag's spread is one configuration's std."""
    from wsl_ray.sweep.confirmation import plan_power
    from wsl_ray.sweep.stats import power_text

    space = parse_space(SPACE, tmp_path / "s.yaml")
    storage = tmp_path / "store"
    arms = {"default": [0.50, 0.60, 0.55], "top1": [0.51, 0.62, 0.58]}
    _stored_confirmation(storage, "mine", space.to_yaml(), arms)
    other = space.to_yaml().replace("dataset: shapes", "dataset: cifar10")
    _stored_confirmation(storage, "other", other, {"default": [0.1, 0.9], "top1": [0.9, 0.1]})
    text = plan_power(str(storage), space, "shapes", "val_acc_knn", 3, detect=2.0)
    assert text.startswith(power_text(3, 0.01, True, 2.0))
    assert f"the earlier confirmation {storage}/mine-confirm" in text
    assert "1.00 points, the std of its per-seed differences" in text
    given = plan_power(str(storage), space, "shapes", "val_acc_knn", 5, 8.0)
    assert given.startswith(power_text(5, 0.08, False)) and "given by --seed_spread" in given
    none = plan_power(str(storage), space, "cifar100", "val_acc_knn", 3)
    assert "no seed spread known; give --seed_spread POINTS" in none


def test_power_text_gives_the_detectable_difference_and_the_seeds_needed():
    from wsl_ray.sweep.stats import power_text

    text = power_text(3, 0.08, False, 3.0)
    x = detectable_difference(0.08, 3, paired=False)
    assert f"with --seeds 3 it detects a difference of {100 * x:.2f} points or more" in text
    assert f"needs about {seeds_needed(0.03, 0.08, paired=False)} seeds each" in text
    assert "independent arms" in text and "paired seeds" in power_text(4, 0.01, True)
