"""Config validation: every invalid combination fails early and says what to change."""

import argparse
import warnings

import pytest

from wsl_ray.config import (
    Config,
    ConfigError,
    add_config_flags,
    config_from_args,
    defaults_note,
    validate_config,
)
from wsl_ray.config.schema import method_defaults_help, option_fields
from wsl_ray.methods import SPECS, BaseMethod, MethodSpec
from wsl_ray.methods.spec import Option
from wsl_ray.train import main as train_main


def test_defaults_are_valid_for_w_mse():
    validate_config(Config())


@pytest.mark.parametrize(
    "overrides, workers, message",
    [
        (dict(bs=500), 1, "--w_size 128 must divide the per-worker batch 500.*e.g. --w_size 125"),
        (dict(bs=512), 8, "per-worker batch 64 .*--bs 512 / 8 worker"),
        (dict(emb=128), 1, "--w_size 128 must exceed --emb 128.*e.g. --w_size 256"),
        (dict(num_samples=1), 1, r"--num_samples 1: must be in \[2, 32\]"),
        (
            dict(method="cw_rgp", emb=512, w_size=64, groups=3),
            1,
            "--groups 3 must divide --emb 512; e.g. --groups 4",
        ),
        (
            dict(method="cw_rgp", emb=128, w_size=64, groups=4),
            1,
            "more channels per group than --w_size: --emb 128 / --groups 4 = 32 <= "
            "--w_size 64; e.g. --groups 1",
        ),
        (dict(arch="vgg"), 1, "unknown --arch 'vgg'"),
        (
            dict(method="intl", bs=4),
            1,
            r"--bs 4 gives INTL's trace-loss weight \(log2\(bs\) - 3\) x 0.01 = -0.010 < 0",
        ),
        (dict(method="intl", intl_axis="batch", emb=4), 1, "--emb 4 gives INTL's trace-loss"),
        (dict(method="intl", emb=1, intl_tl_w=0.1), 1, "--emb 1: INTL's channel axis needs 2"),
        (dict(solarize_p=[0.0, 0.2], num_samples=4), 1, r"one per view \(--num_samples 4\)"),
        (dict(blur_p=[]), 1, r"--blur_p \[\]: probabilities must be in \[0, 1\]"),
    ],
)
def test_invalid_configs_raise_a_helpful_message(overrides, workers, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(Config(**overrides), workers=workers)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate_config(Config(num_samples=1, w_iter=0, knn=0))
    assert str(err.value).count("\n  - ") == 3


def test_small_w_size_warns_with_the_authors_advice():
    with pytest.warns(UserWarning, match="w_size >= 2 emb"):
        validate_config(Config(emb=100, w_size=128))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_config(Config(emb=64, w_size=128))


def test_cw_rgp_paper_settings_are_valid():
    validate_config(Config(method="cw_rgp", emb=512, w_size=64, groups=4, bs=256))


def test_other_methods_ignore_whitening_constraints():
    validate_config(Config(method="contrastive", emb=256, w_size=7))


def test_flags_match_reference_names_and_defaults():
    parser = add_config_flags(argparse.ArgumentParser())
    cfg = config_from_args(parser.parse_args([]))
    assert cfg == Config()
    assert (cfg.epoch, cfg.lr, cfg.bs, cfg.emb, cfg.w_size, cfg.drop) == (
        200,
        1e-3,
        512,
        64,
        128,
        [50, 25],
    )
    cfg = config_from_args(
        parser.parse_args(["--no_norm", "--no_add_bn", "--drop", "10", "--method", "byol"])
    )
    assert (cfg.norm, cfg.add_bn, cfg.drop, cfg.method) == (False, False, [10], "byol")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config key"):
        Config.from_dict({"w_sise": 64})


def test_each_method_option_is_a_field_with_its_flag_in_the_method_group():
    parser = add_config_flags(argparse.ArgumentParser())
    groups = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
    for spec in SPECS.values():
        for name, option in spec.options.items():
            assert getattr(Config(), name) == option.default
            assert name in groups[f"options of --method {spec.name}"]
    assert "emb" not in set().union(*(g for t, g in groups.items() if "--method" in str(t)))


def test_an_option_named_like_a_field_is_refused():
    clash = MethodSpec("clash", "Clash", BaseMethod, options={"emb": Option(8, "again")})
    with pytest.raises(TypeError, match="option 'emb' is already a field"):
        option_fields([clash])


def test_the_method_dependent_defaults_in_help_come_from_the_specs(monkeypatch):
    parser = add_config_flags(argparse.ArgumentParser())
    helps = {a.dest: a.help for a in parser._actions if a.option_strings[0] == f"--{a.dest}"}
    emb = "(default 64; cw_rgp, barlow_twins, vicreg, simsiam, zero_icl: 512; intl: 2048)"
    assert emb in helps["emb"]
    assert "(default off; cw_rgp, whitened_mse," in helps["zero_init_residual"]
    new = MethodSpec("new", "New", BaseMethod, defaults={"emb": 32, "zero_init_residual": True})
    monkeypatch.setitem(SPECS, "new", new)  # a new method shows without editing the help
    assert method_defaults_help("emb").endswith("; intl: 2048; new: 32")
    assert method_defaults_help("zero_init_residual").endswith(", lejepa, new: on")


def test_the_defaults_note_names_what_the_method_decided(capsys):
    assert defaults_note(Config()) is None
    assert defaults_note(Config(method="cw_rgp", emb=256)) == (
        "note: defaults of --method cw_rgp / --aug wmse applied: groups 1, zero_init_residual True"
    )
    assert train_main(["--method", "cw_rgp", "--print_config"]) == 0
    assert capsys.readouterr().err.count("note: defaults of --method cw_rgp") == 1


def test_set_reads_each_value_by_its_flags_declared_type():
    """`tune --set KEY=VALUE` takes the type of the training flag KEY, for every flag: a
    string flag its text (`cuda_graph=off` is not YAML's false), numbers as Python reads
    them (an int stays one), booleans and lists as YAML, `null` unsets a flag that may be
    unset."""
    from dataclasses import fields

    from wsl_ray.sweep.space import SpaceError, parse_setting

    for f in fields(Config):
        default = f.default_factory()
        if default is None:
            continue
        text = str(default).lower() if isinstance(default, bool) else str(default)
        assert parse_setting(f.name, text) == default, f.name
    assert parse_setting("cuda_graph", "off") == "off"
    assert parse_setting("cuda_graph", "on") == "on"
    assert parse_setting("knn_metric", "yes") == "yes"  # the type check, not YAML, judges
    assert parse_setting("lr", "1e-3") == 0.001
    assert parse_setting("emb", "64") == 64
    assert parse_setting("norm", "false") is False
    assert parse_setting("drop", "[50, 60]") == [50, 60]
    assert parse_setting("data_dir", "null") is None
    assert parse_setting("warmup_epochs", "null") is None
    with pytest.raises(SpaceError, match="--emb 1.5: must be an integer"):
        parse_setting("emb", "1.5")
    with pytest.raises(SpaceError, match="--norm 'maybe': must be true or false"):
        parse_setting("norm", "maybe")
    assert parse_setting("arch", "18") == "18" and parse_setting("val_size", "500") == 500
    with pytest.raises(SpaceError, match="--norm 'off': must be true or false"):
        parse_setting("norm", "off")  # YAML 1.2's booleans, as in --config files and spaces
    from pathlib import Path

    from wsl_ray.sweep.space import parse_space

    space = parse_space("config: {cuda_graph: off, norm: false}\n", Path("s.yaml"))
    assert (space.config["cuda_graph"], space.config["norm"]) == ("off", False)


def test_every_count_of_work_in_a_step_has_a_bound_that_validation_holds_and_help_shows():
    """--intl_iters 100000000 never finished a step: each count of work repeated in every
    step has a range, ends its --help with it, and validation refuses a value past it."""
    from dataclasses import fields, replace

    bounded = {f.name: f for f in fields(Config) if "bounds" in f.metadata}
    counts = {"num_samples", "w_iter", "head_layers", "intl_iters", "sigreg_slices"}
    assert counts | {"sigreg_points"} <= set(bounded)
    for name, f in bounded.items():
        low, high = f.metadata["bounds"]
        assert f.metadata["help"].endswith(f"({low} to {high})"), name
        method = f.metadata.get("method", "w_mse")
        validate_config(replace(Config(method=method), **{name: high}))
        for wrong in (high + 1, low - 1):
            with pytest.raises(ConfigError, match=rf"--{name} {wrong}: must be in \[{low},"):
                validate_config(replace(Config(method=method), **{name: wrong}))
