"""--warm_start: an earlier experiment's trials in a new study, read from a small experiment
folder written here (as a sweep leaves it) or a stored journal; Optuna only, no Ray."""

import inspect
import json
import random
from pathlib import Path

import optuna
import pytest
from helpers import SPACE
from optuna.trial import TrialState

from wsl_ray.sweep.experiment import ExperimentError, write_record
from wsl_ray.sweep.space import parse_space
from wsl_ray.sweep.study import EpochOptunaSearch
from wsl_ray.sweep.warm_start import TPE_STARTUP, first_points, load_warm_start, seed_study

FIXTURE_JOURNAL = Path(__file__).parent / "fixtures" / "sweep_val" / "optuna.journal"
METRIC = "val_acc_knn"


def tiny_space(text: str = SPACE):
    return parse_space(text, Path("tiny.yaml"), {"epoch": 2, "eval_every": 1})


def earlier_experiment(folder: Path, complete: int, stopped: int) -> list[dict]:
    """An experiment folder of `complete` trials that ran their 2 epochs and `stopped` that
    ASHA ended after epoch 1, at random points of the tiny space; returns their configs
    with the final metric as `value`."""
    space = tiny_space()
    write_record(str(folder), METRIC, "max", space.to_yaml(), {"num_trials": complete + stopped})
    rng = random.Random(3)
    made = []
    for n in range(1, complete + stopped + 1):
        point = {"lr": 10 ** rng.uniform(-4, -2), "emb": rng.choice([8, 16]), "w_ratio": 2}
        config = space.resolve(point) | point
        epochs = 2 if n <= complete else 1
        trial = folder / f"trial_{n:08x}_{n}"
        trial.mkdir(parents=True)
        (trial / "params.json").write_text(json.dumps(config))
        lines = []
        for epoch in range(1, epochs + 1):
            value = round(rng.uniform(0.1, 0.5), 4)
            lines.append({"epoch": epoch, METRIC: value, "rankme": 5.0, "trial_id": f"{n:08x}"})
        (trial / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
        made.append(config | {"value": lines[-1][METRIC], "epochs": epochs})
    return made


def tpe() -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=0, multivariate=True, constant_liar=True)


def suggestions(study: optuna.Study, space, n: int) -> list[dict]:
    points = []
    for _ in range(n):
        trial = study.ask()
        space.suggest(trial)
        points.append(trial.params)
    return points


def test_a_warm_started_study_holds_the_trials_and_tpe_starts_informed(tmp_path, capsys):
    made = earlier_experiment(tmp_path / "old", complete=TPE_STARTUP, stopped=2)
    space = tiny_space()
    warm = load_warm_start(str(tmp_path / "old"), space, METRIC, 0)
    assert "12 trials" in capsys.readouterr().out
    storage = optuna.storages.InMemoryStorage()
    seed_study(storage, "new", "max", warm)
    study = optuna.load_study(study_name="new", storage=storage, sampler=tpe())
    held = study.trials
    assert [t.state for t in held] == [TrialState.COMPLETE] * 10 + [TrialState.PRUNED] * 2
    for t, m in zip(held, made, strict=True):
        assert t.params == {n: m[n] for n in space.params}
        assert t.distributions == space.distributions()
        assert (t.value, max(t.intermediate_values)) == (
            (m["value"] if m["epochs"] == 2 else None),
            m["epochs"],
        )
    cold = optuna.create_study(direction="maximize", sampler=tpe())
    assert suggestions(study, space, 3) != suggestions(cold, space, 3)


def test_warm_start_top_k_is_what_the_searcher_runs_first(tmp_path):
    made = earlier_experiment(tmp_path / "old", complete=6, stopped=3)
    space = tiny_space()
    warm = load_warm_start(str(tmp_path / "old"), space, METRIC, 3)
    best = sorted((m for m in made if m["epochs"] == 2), key=lambda m: -m["value"])[:3]
    assert warm.top == [{n: m[n] for n in space.params} for m in best]
    assert first_points(warm, space.first) == [*warm.top, space.first]
    assert first_points(warm, warm.top[1]) == warm.top  # the first point once
    assert first_points(None, space.first) == [space.first]
    storage = optuna.storages.InMemoryStorage()
    seed_study(storage, "new", "max", warm)
    searcher = EpochOptunaSearch(
        space.suggest,
        metric=METRIC,
        mode="max",
        sampler=tpe(),
        points_to_evaluate=first_points(warm, space.first),
        study_name="new",
        storage=storage,
        epochs=2,
    )
    ran = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [{n: r[n] for n in space.params} for r in ran] == [*warm.top, space.first]


def test_a_narrower_range_leaves_the_trials_outside_it_out(tmp_path, capsys):
    made = earlier_experiment(tmp_path / "old", complete=8, stopped=0)
    narrow = tiny_space(SPACE.replace("low: 1.0e-4", "low: 1.0e-3"))
    warm = load_warm_start(str(tmp_path / "old"), narrow, METRIC, 0)
    inside = [m for m in made if m["lr"] >= 1e-3]
    assert 0 < len(warm.trials) == len(inside) < len(made)
    assert (
        f"{len(made) - len(inside)} of its 8 finished trials lie outside" in capsys.readouterr().out
    )
    nowhere = tiny_space(SPACE.replace("choices: [8, 16]", "choices: [32]"))
    with pytest.raises(ExperimentError, match="none of its 8 finished trials lies in the space"):
        load_warm_start(str(tmp_path / "old"), nowhere, METRIC, 0)
    fewer = tiny_space(
        SPACE.replace("  emb: {distribution: categorical, choices: [8, 16]}\n", "")
        .replace("ckpt_every: 1\n", "ckpt_every: 1\n  emb: 16\n")
        .replace("emb: 16, w_ratio", "w_ratio")
    )
    with pytest.raises(ExperimentError, match="it searched emb, which the space 'tiny' does not"):
        load_warm_start(str(tmp_path / "old"), fewer, METRIC, 0)


def test_a_journal_warm_starts_and_its_metric_must_be_the_sweeps():
    warm = load_warm_start(str(FIXTURE_JOURNAL), tiny_space(), METRIC, 1)
    states = [t.state for t in warm.trials]
    assert len(states) == 4 and states.count(TrialState.PRUNED) == 1
    assert warm.top == [warm.trials[2].params]  # the best complete trial of the fixture
    with pytest.raises(ExperimentError, match="selected on val_acc_knn .max., this sweep on"):
        load_warm_start(str(FIXTURE_JOURNAL), tiny_space(), "rankme", 1)


def test_the_startup_count_is_tpes_default():
    default = inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"]
    assert TPE_STARTUP == default.default


def test_a_new_sweeps_tuner_starts_its_study_with_the_warm_trials(tmp_path):
    """The wiring in wsl_ray.sweep.tuner, without Ray: the Tuner of a warm-started sweep
    leaves the study holding the earlier trials, then its top K and first point enqueued."""
    from wsl_ray.sweep.experiment import Experiment
    from wsl_ray.sweep.study import study_storage
    from wsl_ray.sweep.tuner import _new_tuner
    from wsl_ray.tune import build_parser, settings_of

    earlier_experiment(tmp_path / "old", complete=4, stopped=1)
    argv = ["--storage", str(tmp_path), "--name", "new", "--concurrency", "1"]
    args = build_parser().parse_args([*argv, "--warm_start", str(tmp_path / "old")])
    space = tiny_space()
    warm = load_warm_start(args.warm_start, space, METRIC, 2)
    storage, _ = study_storage(None, str(tmp_path / "new"), "new")
    settings = settings_of(args, Experiment(str(tmp_path), "new"))
    _new_tuner(settings, space, (2, 1), lambda config: None, storage, 0.0, warm)
    study = optuna.load_study(study_name="new", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4 + [TrialState.PRUNED] + [
        TrialState.WAITING
    ] * 3
