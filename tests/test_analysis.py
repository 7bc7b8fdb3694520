"""The analysis package on real sweeps' experiment folders: tests/fixtures/sweep_wmse (6 W-MSE
trials on shapes, 3 stopped early by ASHA, from before the validation split: its metrics are
test metrics, read into the test_* columns), plus copies edited to other methods and seeds,
and tests/fixtures/sweep_val (a sweep that selected on validation)."""

import json
import math
import shutil
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.__main__ import main
from analysis.collect import CollectError, collect, load, read_space
from analysis.tables import paper_table, rankme_report, render, seed_table, top_trials
from wsl_ray.sweep.stats import spearman

FIXTURE = Path(__file__).parent / "fixtures" / "sweep_wmse"
# the output of test_tune's sweep (trial folders without checkpoints): validation and test
# metrics, rankme, the stored Optuna study and the sweep's own results.parquet
SWEEP = Path(__file__).parent / "fixtures" / "sweep_val"


def edited_copy(dest: Path, **config_changes) -> Path:
    """The fixture experiment with every trial's config changed (e.g. another method)."""
    shutil.copytree(FIXTURE, dest)
    for params in dest.glob("*/params.json"):
        params.write_text(json.dumps(json.loads(params.read_text()) | config_changes))
    return dest


def test_collect_reads_every_trial_with_config_status_and_history():
    table = collect([str(FIXTURE)])
    assert table.num_rows == 6
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    first = rows["b08f1cd8"]
    assert (first["method"], first["dataset"], first["status"], first["epochs"]) == (
        "w_mse",
        "shapes",
        "TERMINATED",
        4,
    )
    assert first["config/lr"] == 3e-3 and first["config/w_size"] == 64
    assert [h["epoch"] for h in first["history"]] == [1, 2, 3, 4]
    assert first["test_acc_knn"] == first["history"][-1]["test_acc_knn"] is not None
    assert first["val_acc_knn"] is None and first["epoch_budget"] == 4
    assert sorted(r["status"] for r in rows.values()).count("STOPPED") == 3


def test_parquet_round_trips(tmp_path):
    out = tmp_path / "trials.parquet"
    assert main(["collect", str(FIXTURE), "--out", str(out)]) == 0
    again = pq.read_table(out)
    assert again.equals(collect([str(FIXTURE)]))
    assert load(str(out)).to_pylist() == again.to_pylist()


def test_the_paper_table_names_the_best_trial_per_method(tmp_path):
    byol = edited_copy(tmp_path / "byol", method="byol")
    table = collect([str(FIXTURE), str(byol)])
    rows = paper_table(table, "test_acc")  # the legacy sweep has no validation metric
    assert [r["method"] for r in rows] == ["BYOL", "W-MSE 2"]
    best = max(collect([str(FIXTURE)]).to_pylist(), key=lambda r: r["test_acc"] or 0)
    assert rows[1]["shapes"] == f"{100 * best['test_acc']:.2f} / {100 * best['test_acc_knn']:.2f}"


def test_top_trials_are_ranked_by_the_metric():
    rows = top_trials(collect([str(FIXTURE)]), "test_acc_knn", k=3)
    knn = [float(r["test_acc_knn"]) for r in rows]
    assert len(rows) == 3 and knn == sorted(knn, reverse=True)
    assert {"lr", "emb", "w_size"} <= set(rows[0])


def test_mean_and_std_over_seeds(tmp_path):
    seed1 = edited_copy(tmp_path / "s1", seed=1)
    (result,) = seed1.glob("trial_b08f1cd8*/result.json")
    lines = [json.loads(x) for x in result.read_text().splitlines()]
    lines[-1]["acc"] = 0.5  # the repeat of the first config ends at 50% linear test accuracy
    result.write_text("\n".join(json.dumps(x) for x in lines))
    rows = seed_table(collect([str(FIXTURE), str(seed1)]))
    assert len(rows) == 6 and all(r["runs"] == 2 for r in rows)
    trials = {r["trial_id"]: r for r in collect([str(FIXTURE)]).to_pylist()}
    original = trials["b08f1cd8"]["test_acc"]
    first = next(r for r in rows if r["lr"] == pytest.approx(3e-3))
    mean, std = statistics.fmean([original, 0.5]), statistics.stdev([original, 0.5])
    assert first["test_acc"] == f"{100 * mean:.2f} ± {100 * std:.2f}"
    other = next(r for r in rows if r["lr"] != pytest.approx(3e-3) and r["test_acc"] != "-")
    assert other["test_acc"].endswith("± 0.00")  # identical repeats


def test_render_formats():
    rows = [{"method": "W-MSE 2", "cifar10": "91.5 / 89.1", "lr": 0.0031234}]
    assert render(rows, "markdown").splitlines()[2] == "| W-MSE 2 | 91.5 / 89.1 | 0.00312 |"
    assert render(rows, "csv").splitlines()[1] == "W-MSE 2,91.5 / 89.1,0.00312"
    latex = render(rows, "latex")
    assert (
        latex.startswith(r"\begin{tabular}{lcc}") and r"W-MSE 2 & 91.5 / 89.1 & 0.00312 \\" in latex
    )


def test_importance_and_plots(tmp_path, capsys):
    assert main(["importance", str(FIXTURE), "--metric", "test_acc_knn"]) == 0
    out = capsys.readouterr().out
    assert {"lr", "emb", "w_ratio"} <= {line.split("|")[1].strip() for line in out.splitlines()[3:]}
    assert main(["plots", str(FIXTURE), "--out", str(tmp_path), "--metric", "test_acc_knn"]) == 0
    for name in ("metric_vs_params", "learning_curves", "parallel_coordinates"):
        png = tmp_path / f"{name}.png"
        assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_empty_or_missing_folders_say_so(tmp_path, capsys):
    with pytest.raises(CollectError, match="no trials found"):
        collect([str(tmp_path)])
    assert main(["tables", str(tmp_path / "nope")]) == 2
    assert "no such experiment folder" in capsys.readouterr().err


def test_spearman_with_and_without_ties():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    # ties share their average rank: ranks (1.5, 1.5, 3) against (1, 2, 3)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(1.5 * 2))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1)


def test_a_sweeps_results_parquet_and_collect_share_one_schema():
    own = pq.read_table(SWEEP / "results.parquet")
    collected = collect([str(SWEEP)])
    assert own.column_names == collected.column_names
    assert own.drop(["path"]).to_pylist() == collected.drop(["path"]).to_pylist()
    assert read_space(str(SWEEP / "results.parquet")) == read_space(str(SWEEP))
    assert {"val_acc_knn", "rankme", "test_acc_knn", "history"} <= set(own.column_names)


def test_rankme_report_gives_spearman_and_the_test_gap_of_the_rankme_choice(capsys):
    rows = [
        r for r in collect([str(SWEEP)]).to_pylist() if r["status"] in ("TERMINATED", "STOPPED")
    ]
    report = rankme_report(collect([str(SWEEP)]))
    rho = spearman([r["rankme"] for r in rows], [r["val_acc_knn"] for r in rows])
    assert report[0]["value"] == f"{rho:.3f}" and report[0]["trials"] == len(rows)
    done = [r for r in rows if r["status"] == "TERMINATED"]
    by_rankme = max(done, key=lambda r: r["rankme"])["test_acc_knn"]
    by_val = max(done, key=lambda r: r["val_acc_knn"])["test_acc_knn"]
    assert report[-1]["value"] == f"{100 * (by_rankme - by_val):+.2f}"
    assert main(["rankme", str(SWEEP / "results.parquet")]) == 0
    assert "Spearman" in capsys.readouterr().out


def test_importance_reads_the_stored_study(capsys):
    assert main(["importance", str(SWEEP)]) == 0
    out = capsys.readouterr().out
    assert "the stored Optuna study" in out
    assert {"lr", "emb", "w_ratio"} <= {line.split("|")[1].strip() for line in out.splitlines()[3:]}


def test_analysis_ranks_on_the_metric_the_sweep_recorded(tmp_path, capsys):
    """A sweep on rankme: without --metric, the tables, the plots and the Parquet metadata
    use the metric of its sweep.json, not the default val_acc_knn."""
    from wsl_ray.sweep.experiment import write_record

    sweep = shutil.copytree(SWEEP, tmp_path / "s")
    space = (sweep / "search_space.yaml").read_text()
    write_record(str(sweep), "rankme", "max", space, {})
    table = collect([str(sweep)])
    by_rankme, by_knn = (top_trials(table, m, k=4) for m in ("rankme", "val_acc_knn"))
    assert [r["trial_id"] for r in by_rankme] != [r["trial_id"] for r in by_knn]
    assert main(["tables", str(sweep), "--kind", "top"]) == 0
    shown = [line.split(" | ")[0].strip("| ") for line in capsys.readouterr().out.splitlines()]
    assert shown[2:] == [r["trial_id"] for r in by_rankme], shown
    out = tmp_path / "all.parquet"
    assert main(["collect", str(sweep), "--out", str(out)]) == 0
    metadata = pq.read_schema(out).metadata
    assert json.loads(metadata[b"wsl_ray.metrics"]) == {"s": "rankme"}
    from analysis.collect import sweep_metric

    assert sweep_metric(str(out)) == sweep_metric(str(sweep)) == "rankme"
    assert sweep_metric(str(SWEEP)) == "val_acc_knn"  # its sweep.json of an earlier version


def test_fanova_without_scikit_learn_is_refused_before_any_work(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name)
    )
    assert main(["importance", str(SWEEP), "--evaluator", "fanova"]) == 2
    err = capsys.readouterr().err
    assert "--evaluator fanova needs scikit-learn" in err and "Traceback" not in err


def test_importance_ranks_only_what_varied_and_says_when_trials_are_few():
    import optuna

    from analysis.importance import study_importances

    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "emb": optuna.distributions.CategoricalDistribution([16]),  # pinned by --set
    }
    study = optuna.create_study(direction="maximize")
    for i, lr in enumerate((1e-4, 1e-3, 3e-3, 1e-2)):
        params = {"lr": lr, "emb": 16}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=0.1 * i)
        )
    rows = study_importances(study)
    assert [r["parameter"] for r in rows] == ["lr", "emb", "(only 4 trials)"]
    assert rows[1]["importance"] == "not varied (always 16)"
    assert "rough" in rows[2]["importance"]


def test_one_run_of_a_configuration_shows_no_spread():
    table = collect([str(FIXTURE)])
    one = [r for r in seed_table(table) if r["runs"] == 1]
    assert one and all(r["test_acc"].endswith("(one seed)") for r in one), one


def test_rungs_prints_each_epochs_rank_agreement_with_the_end(capsys):
    """sweep_val: 3 trials ran their 2 epochs; at epoch 1 they tie (13.7% each), so the
    rank correlations are undefined there: '-', never NaN."""
    assert main(["rungs", str(SWEEP)]) == 0
    out = capsys.readouterr().out
    assert "over the 3 trials that ran their whole budget" in out
    assert "| 1 | 3 | - | - |" in out and "nan" not in out.lower()
    assert main(["rungs", str(FIXTURE), "--metric", "rankme"]) == 0
    assert "0 trial(s) ran their whole budget with a rankme" in capsys.readouterr().out


def test_rungs_compares_the_trials_of_one_sweep_only(tmp_path, capsys):
    out = tmp_path / "two.parquet"
    assert main(["collect", str(SWEEP), str(FIXTURE), "--out", str(out)]) == 0
    assert main(["rungs", str(out), "--metric", "val_acc_knn"]) == 2
    assert "this table holds 2 experiments" in capsys.readouterr().err


def test_agreement_on_the_sweep_fixture(capsys):
    """rankme against val_acc_knn over the fixture's 3 TERMINATED trials (final epoch) and
    the 4 that reached epoch 1: tau-b counted by hand, no interval below 5 trials."""
    assert main(["agreement", str(SWEEP)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    rows = collect([str(SWEEP)]).to_pylist()
    done = [r for r in rows if r["status"] == "TERMINATED"]
    pairs = [(r["rankme"], r["val_acc_knn"]) for r in done]
    assert len({p[0] for p in pairs}) == len({p[1] for p in pairs}) == 3  # no ties
    signs = [
        math.copysign(1, (a[0] - b[0]) * (a[1] - b[1]))
        for i, a in enumerate(pairs)
        for b in pairs[i + 1 :]
    ]
    final = sum(signs) / 3
    # epoch 1: three trials tie at val_acc_knn 7/51, the fourth (2/51) has a rankme above
    # one of theirs and below two: C = 2, D = 1, 3 pairs tied in y of 6, none in x
    first = sorted(next(h for h in r["history"] if h["epoch"] == 1)["val_acc_knn"] for r in rows)
    assert first == [pytest.approx(3 / 51), *[pytest.approx(7 / 51)] * 3]
    rung = (2 - 1) / math.sqrt((6 - 0) * (6 - 3))
    line = next(x for x in out.splitlines() if x.startswith("| rankme (max)"))
    assert f"| {final:+.2f} (no interval: needs 5+ trials), n=3 |" in line
    assert f"| {rung:+.2f} (no interval: needs 5+ trials), n=4 |" in line
    pick = max(done, key=lambda r: r["rankme"])
    val_regret = pick["val_acc_knn"] - max(r["val_acc_knn"] for r in done)
    test_regret = pick["test_acc_knn"] - max(r["test_acc_knn"] for r in done)
    assert f"| {100 * val_regret:+.2f} | {100 * test_regret:+.2f} |" in line
    by_val = max(done, key=lambda r: r["val_acc_knn"])
    assert (pick is by_val) == ("| yes (" in line)


def test_agreement_with_two_finished_trials_says_tau_needs_more(tmp_path, capsys):
    sweep = shutil.copytree(SWEEP, tmp_path / "s")
    shutil.rmtree(next(sweep.glob("trial_0bcc3351*")))
    assert main(["agreement", str(sweep), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "needs 3 or more trials (has 2)" in out and "nan" not in out.lower()


def test_kendall_tau_b_and_its_interval_by_hand():
    from wsl_ray.sweep.stats import kendall_tau_b, rank_interval

    # C = 6, D = 4 of 10 pairs
    assert kendall_tau_b([1, 2, 3, 4, 5], [3, 4, 1, 2, 5]) == pytest.approx(0.2)
    # one pair tied in x, one in y, 4 concordant: 4 / sqrt((6 - 1)(6 - 1))
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    # tanh(atanh(0.2) -+ 1.959964 sqrt(0.437 / 1))
    low, high = rank_interval(0.2, 5, "kendall")
    assert (low, high) == (pytest.approx(-0.797942, abs=1e-6), pytest.approx(0.904856, abs=1e-6))
    assert rank_interval(0.2, 4, "kendall") is None
    assert rank_interval(1.0, 9, "kendall") == (1.0, 1.0)  # the limit: no width at |tau| = 1


def test_agreement_of_every_label_free_metric_with_regret_and_choice():
    """Six finished trials: rankme agrees with val_acc_knn exactly, alpha_req (lower is
    better) picks the trial with the second-best accuracies, lidar was not computed."""
    from wsl_ray.sweep.agreement import agreement_line, agreement_rows

    val = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60]
    test = [0.12, 0.18, 0.33, 0.41, 0.47, 0.58]
    gap = [0.9, 0.8, 0.7, 0.6, 0.1, 0.3]  # the fifth trial is nearest alpha = 1
    rows = [
        {
            "trial_id": f"t{i}",
            "status": "TERMINATED",
            "epochs": 4,
            "val_acc_knn": v,
            "test_acc_knn": t,
            "rankme": 10 + i,
            "alpha_req": g,
            "history": [{"epoch": 4, "val_acc_knn": v, "rankme": 10 + i, "alpha_req": g}],
        }
        for i, (v, t, g) in enumerate(zip(val, test, gap, strict=True))
    ]
    rankme, alpha = agreement_rows(rows)
    assert rankme["metric"] == "rankme (max)" and alpha["metric"] == "alpha_req (min)"
    assert rankme["tau_b final (epoch 4)"] == "+1.00 (no interval: at |tau| = 1), n=6"
    assert rankme["same trial"] == "yes (t5)" and rankme["test regret"] == "+0.00"
    # -gap against val: 14 concordant, 1 discordant pair (trials 5 and 6): tau 13/15
    low, high = (
        math.tanh(math.atanh(13 / 15) + s * 1.959964 * math.sqrt(0.437 / 2)) for s in (-1, 1)
    )
    assert alpha["tau_b final (epoch 4)"] == f"+0.87 [{low:+.2f}, {high:+.2f}], n=6"
    assert (alpha["val regret"], alpha["test regret"]) == ("-10.00", "-11.00")
    assert alpha["same trial"] == "no (t4, not t5)"
    line = agreement_line(rows, "EXP")
    assert "rankme tau_b +1.00, test regret +0.00 points" in line
    assert "alpha_req tau_b +0.87, test regret -11.00 points" in line and "lidar" not in line


def test_the_sweep_summary_prints_the_agreement_line(tmp_path, capsys):
    from types import SimpleNamespace

    from wsl_ray.sweep.summary import summarize_sweep

    sweep = shutil.copytree(SWEEP, tmp_path / "s")
    space = SimpleNamespace(derived={}, params={"lr": {}}, first=None, to_yaml=lambda: "")
    summarize_sweep(str(sweep), "val_acc_knn", space)
    out = capsys.readouterr().out
    assert "label-free selection against val_acc_knn over the finished trials: rankme" in out
    assert f"(python -m analysis agreement {sweep})" in out
