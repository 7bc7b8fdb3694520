"""Search space files: schema errors, and constraints that hold by construction."""

import optuna
import pytest

from wsl_ray.config import TWO_VIEW_METHODS, Config, validate_config
from wsl_ray.config.recipes import get_recipe
from wsl_ray.sweep.space import SPACES_DIR, SpaceError, load_space, parse_setting

SPACES = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def test_every_shipped_space_is_valid_and_starts_from_the_papers_defaults():
    assert {"wmse", "wmse4", "cw_rgp", "contrastive", "byol", "intl", "lejepa"} <= set(SPACES)
    for name in SPACES:
        space = load_space(name)
        space.check()
        first = Config(**space.resolve(space.first))
        # the ImageNet recipe's SGD; the CW-RGP code's base/cfg.py for its two-view methods;
        # INTL's CIFAR script; LeJEPA's README
        expected = 1e-3 if first.method in TWO_VIEW_METHODS else 3e-3
        expected = 0.05 if first.optimizer == "sgd" else expected
        expected = {"intl": 0.3, "lejepa": 5e-4}.get(first.method, expected)
        assert first.lr == expected, name
        if first.method == "w_mse":
            assert (first.emb, first.w_size) == (64, 128)
        if first.method == "lejepa":  # the recipe, but for its epochs and evaluations
            recipe = get_recipe("lejepa_cifar10").config().to_dict()
            differ = {k for k, v in first.to_dict().items() if recipe[k] != v}
            assert differ == {"epoch", "eval_every"}, differ


@pytest.mark.parametrize("name", SPACES)
def test_every_sampled_config_satisfies_the_constraints(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        trial = study.ask()
        derived = space.suggest(trial)
        cfg = Config(**space.resolve(trial.params | derived))
        validate_config(cfg)  # raises on any violated constraint
        assert cfg.bs % cfg.w_size == 0 or cfg.method not in ("w_mse", "cw_rgp")
        study.tell(trial, 0.0)


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


BASE = """
config: {method: w_mse, bs: 512}
params:
  lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}
  emb: {distribution: categorical, choices: [32, 64]}
  w_ratio: {distribution: categorical, choices: [2, 4]}
derived: {w_size: emb * w_ratio}
first: {lr: 3.0e-3, emb: 64, w_ratio: 2}
"""


def test_a_users_own_space_file_loads(tmp_path):
    space = load_space(write(tmp_path, BASE))
    space.check()
    assert space.resolve({"lr": 1e-3, "emb": 32, "w_ratio": 4})["w_size"] == 128


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "config: {method: w_mse, bs: 512}",
            "config: {method: w_mse, bs: 512, lr_rate: 1}",
            "config key 'lr_rate' is not a training flag",
        ),
        (
            "distribution: loguniform, low: 1.0e-4",
            "distribution: lognormal, low: 1.0e-4",
            "give `distribution:` one of",
        ),
        ("low: 1.0e-4, high: 1.0e-2", "low: 1.0e-2, high: 1.0e-4", "need numbers low < high"),
        (
            "low: 1.0e-4, high: 1.0e-2",
            "low: 0.0, high: 1.0e-2",
            "loguniform distribution needs low > 0",
        ),
        ("choices: [32, 64]}", "choices: []}", "`choices` must be a non-empty list"),
        ("w_size: emb * w_ratio", "w_size: emb * w_raito", "unknown name 'w_raito'"),
        ("w_size: emb * w_ratio", "w_size: emb + w_ratio", "names and numbers joined by"),
        (
            "first: {lr: 3.0e-3, emb: 64, w_ratio: 2}",
            "first: {lr: 3.0e-3, emb: 64}",
            "must give every searched parameter",
        ),
        ("params:", "colours: 3\nparams:", "unknown section"),
    ],
)
def test_schema_errors_name_the_entry(tmp_path, old, new, message):
    with pytest.raises(SpaceError, match=message):
        load_space(write(tmp_path, BASE.replace(old, new)))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("choices: [2, 4]", "choices: [1, 2]", "must exceed --emb"),  # w_size = emb
        ("bs: 512", "bs: 192", "must divide the per-worker batch"),
        ("emb: 64, w_ratio: 2}", "emb: 48, w_ratio: 2}", "first point: emb=48 is outside"),
    ],
)
def test_impossible_constraints_are_caught_before_any_trial(tmp_path, old, new, message):
    space = load_space(write(tmp_path, BASE.replace(old, new)))
    with pytest.raises(SpaceError, match=message):
        space.check()


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(SpaceError, match="known: .*wmse"):
        load_space("wmsee")


def test_command_line_overrides_are_checked_too():
    space = load_space("wmse", {"bs": 96})
    with pytest.raises(SpaceError, match="can produce invalid trials"):
        space.check()


def test_set_pins_a_searched_parameter_to_one_value():
    space = load_space("wmse", {"bs": 128, "emb": 32})  # emb 128 would need bs % 512 == 0
    space.check()
    assert space.params["emb"] == {"distribution": "categorical", "choices": [32]}
    first = Config(**space.resolve(space.first))
    assert (first.emb, first.w_size, first.lr) == (32, 64, 3e-3)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        derived = space.suggest(trial)
        assert Config(**space.resolve(trial.params | derived)).emb == 32
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    "params, message",
    [  # inside a range: neither end breaks a constraint, a value between does
        (
            "bs: {distribution: int, low: 256, high: 512, step: 64}",
            "bs=320: --w_size 128 must divide the per-worker batch 320",
        ),
        (
            "lr: {distribution: uniform, low: -1.0e-4, high: 1.0e-2}",
            "lr=-0.0001: --lr -0.0001: must be a number > 0",
        ),
    ],
)
def test_every_value_a_space_can_produce_is_checked(tmp_path, params, message):
    text = f"""
config: {{method: w_mse, bs: 512, lr: 1.0e-3}}
params:
  emb: {{distribution: categorical, choices: [64]}}
  w_ratio: {{distribution: categorical, choices: [2]}}
  {params}
derived: {{w_size: emb * w_ratio}}
"""
    space = load_space(write(tmp_path, text))
    with pytest.raises(SpaceError, match=message):
        space.check()


def test_a_space_without_first_point_has_a_default_one(tmp_path):
    text = BASE.replace("first:", "# first:")
    space = load_space(write(tmp_path, text))
    point = space.default_point()  # lower bounds and first choices: derived keys resolve
    assert Config(**space.resolve(point)).w_size == point["emb"] * point["w_ratio"]


@pytest.mark.parametrize(
    "key, text, value",
    [
        ("lr", "1e-3", 1e-3),
        ("lr", "3", 3),
        ("emb", "32", 32),
        ("arch", "resnet18_w16", "resnet18_w16"),
        ("w_ratio", "2", 2),
        ("drop", "[]", []),
    ],
)
def test_set_values_take_the_flags_type(key, text, value):
    got = parse_setting(key, text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("key, text", [("emb", "abc"), ("lr", "fast"), ("hf_p", "[1]")])
def test_set_values_of_the_wrong_type_are_refused_at_once(key, text):
    with pytest.raises(SpaceError, match=f"^--{key} .*: must be"):
        parse_setting(key, text)
