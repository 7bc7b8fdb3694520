"""`python -m wsl_ray.train --config run.yaml`: file values through the flags' types."""

import pytest
import yaml

from wsl_ray.config import config_from_args
from wsl_ray.train import build_parser, parse_run_args

RUN = """
method: cw_rgp
lr: 1e-3          # YAML 1.1 reads this as the string '1e-3'
bs: 256
emb: 512
w_size: 64
groups: 4
drop: [50, 25]
no_norm: true
eval_init: true
gpus-per-worker: 0.5
workers: 2
"""


def parse(tmp_path, text, *flags):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return parse_run_args(build_parser(), ["--config", str(path), *flags])


def test_file_values_pass_through_the_flag_types(tmp_path):
    assert isinstance(yaml.safe_load("lr: 1e-3")["lr"], str)  # the trap the types avoid
    args = parse(tmp_path, RUN)
    cfg = config_from_args(args)
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)
    assert (cfg.method, cfg.bs, cfg.emb, cfg.w_size, cfg.groups) == ("cw_rgp", 256, 512, 64, 4)
    assert cfg.drop == [50, 25] and cfg.norm is False and cfg.eval_init is True
    assert args.gpus_per_worker == 0.5 and args.workers == 2


def test_command_line_flags_override_the_file(tmp_path):
    args = parse(tmp_path, RUN, "--lr", "3e-3", "--drop", "10", "--workers", "0")
    cfg = config_from_args(args)
    assert cfg.lr == 0.003 and cfg.drop == [10] and args.workers == 0 and cfg.bs == 256


def test_layers_stack_flags_over_file_over_recipe(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epoch: 7\nlr: 5e-3\n")
    argv = ["--recipe", "wmse2_stl10", "--config", str(path), "--lr", "1e-3"]
    cfg = config_from_args(parse_run_args(build_parser(), argv))
    assert (cfg.lr, cfg.epoch, cfg.emb, cfg.dataset) == (1e-3, 7, 128, "stl10")


def test_a_value_the_file_sets_wins_over_the_method_default(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: barlow_twins\nemb: 64\n")
    assert config_from_args(parse_run_args(build_parser(), ["--config", str(path)])).emb == 64
    path.write_text("method: barlow_twins\n")
    assert config_from_args(parse_run_args(build_parser(), ["--config", str(path)])).emb == 512


def test_on_off_yes_no_are_text_for_a_text_flag(tmp_path):
    """YAML 1.1 reads `cuda_graph: off` as False, which no text flag takes: the file's
    booleans are true and false only, and an on/off flag refuses the others by name."""
    assert config_from_args(parse(tmp_path, "cuda_graph: off")).cuda_graph == "off"
    assert config_from_args(parse(tmp_path, "cuda_graph: 'on'\nnorm: False")).norm is False
    with pytest.raises(SystemExit):
        parse(tmp_path, "norm: off")


def test_a_field_name_sets_an_on_off_flag_too(tmp_path):
    assert config_from_args(parse(tmp_path, "norm: false\nadd_bn: true")).norm is False
    assert config_from_args(parse(tmp_path, "no_norm: false")).norm is True


@pytest.mark.parametrize(
    "text, message",
    [
        ("bs: 1e3", "bs: '1e3' is not a valid int"),
        ("lr: fast", "lr: 'fast' is not a valid float"),
        ("method: simclr", "method: 'simclr' is not one of w_mse, cw_rgp"),
        ("learning_rate: 0.1", "unknown key(s) learning_rate"),
        ("no_norm: 1", "no_norm: 1 is not true or false"),
        ("no_norm: yes", "no_norm: 'yes' is not true or false"),
        ("- lr", "write one `flag: value` per line"),
    ],
)
def test_a_bad_file_fails_with_the_key_and_what_is_allowed(tmp_path, capsys, text, message):
    with pytest.raises(SystemExit) as exit_info:
        parse(tmp_path, text)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_print_config_writes_yaml_that_reads_back_the_same(tmp_path, capsys):
    from wsl_ray.train import main

    (tmp_path / "run.yaml").write_text(RUN)
    flags = ["--config", str(tmp_path / "run.yaml"), "--lr", "2e-3", "--out", str(tmp_path)]
    assert main([*flags, "--print_config"]) == 0
    printed = capsys.readouterr().out
    resolved = yaml.safe_load(printed)
    assert resolved["lr"] == 0.002 and resolved["norm"] is False and resolved["bs"] == 256
    assert resolved["method"] == "cw_rgp" and resolved["groups"] == 4
    (tmp_path / "resolved.yaml").write_text(printed)
    assert main(["--config", str(tmp_path / "resolved.yaml"), "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == resolved
