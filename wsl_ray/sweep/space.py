"""Search spaces as data: `search_spaces/NAME.yaml`, checked before Ray starts.

A space file has four sections:

    config:   fixed Config values for every trial        {bs: 512, method: w_mse, ...}
    params:   searched parameters and their distributions
              lr:     {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}
              w_iter: {distribution: int, low: 1, high: 4}
              emb:    {distribution: categorical, choices: [32, 64, 128]}
              also uniform (float) and int with step / log
    derived:  Config values computed from searched ones, as a product of names and numbers
              w_size: emb * w_ratio
    first:    the point evaluated first (the paper's defaults), one value per searched name

Constraints between parameters hold by construction: coupled values are derived from ratios
(w_size = emb * w_ratio), and `check` runs the trainer's own validation on every
combination of the discrete choices, so no sampled trial can be invalid.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..config import Config, ConfigError, type_problem, validate_config
from ..config.file import FlagLoader


def _spaces_dir() -> Path:
    """The named spaces: package data `wsl_ray/search_spaces/` when installed from a wheel; in a
    source checkout (editable install or `python -m` from the repo root) the top-level
    `search_spaces/` folder that the wheel is built from."""
    installed = resources.files("wsl_ray") / "search_spaces"
    if installed.is_dir():
        return Path(str(installed))
    return Path(__file__).resolve().parents[2] / "search_spaces"


SPACES_DIR = _spaces_dir()
DISTRIBUTIONS = {
    "loguniform": ("low", "high"),
    "uniform": ("low", "high"),
    "int": ("low", "high"),
    "categorical": ("choices",),
}
CONFIG_KEYS = {f.name for f in fields(Config)}
TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*|[0-9.]+)\s*$")


class SpaceError(ValueError):
    """An invalid search space file; the message says which entry and what to change."""


@dataclass
class SearchSpace:
    name: str
    config: dict[str, Any]
    params: dict[str, dict[str, Any]]
    derived: dict[str, str]
    first: dict[str, Any]

    def resolve(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Config values of a trial: fixed, then searched (minus helper ratios), then derived."""
        values = {**self.config, **sampled}
        for key, expression in self.derived.items():
            values[key] = _evaluate(expression, values)
        return {k: v for k, v in values.items() if k in CONFIG_KEYS}

    def suggest(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: samples `params` on `trial` and returns the fixed and derived
        values, which Tune adds to the trial's config: a trial's config is then its whole
        training configuration (plus helper ratios)."""
        sampled = {}
        for name, dist in self.distributions().items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                sampled[name] = trial.suggest_categorical(name, list(dist.choices))
            elif isinstance(dist, optuna.distributions.IntDistribution):
                sampled[name] = trial.suggest_int(
                    name, dist.low, dist.high, step=dist.step, log=dist.log
                )
            else:
                sampled[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        values = {**self.config, **sampled}
        return self.config | {key: _evaluate(expr, values) for key, expr in self.derived.items()}

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The Optuna distribution of each searched parameter, under its `params` name: the
        names and ranges the study sees (helper ratios such as w_ratio, not derived keys)."""
        found: dict[str, optuna.distributions.BaseDistribution] = {}
        for name, spec in self.params.items():
            kind = spec["distribution"]
            if kind == "categorical":
                found[name] = optuna.distributions.CategoricalDistribution(spec["choices"])
            elif kind == "int":
                found[name] = optuna.distributions.IntDistribution(
                    spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False)
                )
            else:
                found[name] = optuna.distributions.FloatDistribution(
                    spec["low"], spec["high"], log=kind == "loguniform"
                )
        return found

    def to_yaml(self) -> str:
        """The space as run (command-line overrides included), for the experiment folder."""
        sections = {"config": self.config, "params": self.params, "derived": self.derived}
        return yaml.safe_dump(sections | {"first": self.first}, sort_keys=False)

    def default_point(self) -> dict[str, Any]:
        """The `first` point, or else each parameter's first choice or lower bound."""
        return self.first or {n: _values(s)[0] for n, s in self.params.items()}

    def check(self, workers: int = 1, gpus: float | None = None) -> None:
        """Raises SpaceError unless every value the space can produce gives a valid Config
        for trials of `workers` workers with `gpus` GPUs each (None: not known yet).

        Tries every combination of: each categorical choice, every integer an int range can
        produce (with its step), and both ends of each continuous range. The trainer's
        constraints on a continuous value are intervals (lr > 0, 0 <= p <= 1, ...), so
        they hold over a range when they hold at its ends.
        """
        values = {name: _values(spec) for name, spec in self.params.items()}
        bad: dict[str, list[str]] = {}  # problem -> the points that have it
        total = 0
        for combo in itertools.product(*values.values()):
            total += 1
            sampled = dict(zip(values, combo, strict=True))
            try:
                validate_config(Config(**self.resolve(sampled)), workers, gpus)
            except ConfigError as err:
                for problem in err.problems:
                    bad.setdefault(problem, []).append(_point(sampled))
            except (TypeError, ValueError) as err:
                bad.setdefault(str(err), []).append(_point(sampled))
            if len(bad) > 50:
                break
        lines = [_placed(problem, points, total) for problem, points in bad.items()]
        for name, value in self.first.items():
            spec = self.params[name]
            if not contains(spec, value):
                lines.append(f"first point: {name}={value} is outside its distribution {spec}")
        if self.first:
            try:
                validate_config(Config(**self.resolve(self.first)), workers, gpus)
            except ConfigError as err:
                lines += [
                    f"first point {_point(self.first)}: {p}" for p in err.problems if p not in bad
                ]
        if lines:
            fix = "narrow the choices or change `config` so that every combination is valid"
            if len(lines) == 1:
                raise SpaceError(
                    f"search space {self.name!r} can produce invalid trials: {lines[0]}; {fix}"
                )
            shown = "\n  ".join(lines[:5]) + (
                f"\n  ... and {len(lines) - 5} more" if len(lines) > 5 else ""
            )
            raise SpaceError(
                f"search space {self.name!r} can produce invalid trials; {fix}:\n  {shown}"
            )


def contains(spec: dict[str, Any], value: Any) -> bool:
    """Whether `value` is a point of the parameter distribution `spec`: one of its choices,
    or a number in [low, high] (for an int range, an integer low + n * step)."""
    if spec["distribution"] == "categorical":
        return value in spec["choices"]
    if not isinstance(value, (int, float)) or not spec["low"] <= value <= spec["high"]:
        return False
    if spec["distribution"] == "int":
        return float(value).is_integer() and (value - spec["low"]) % spec.get("step", 1) == 0
    return True


def _placed(problem: str, points: list[str], total: int) -> str:
    """A problem with where in the `total` combinations it occurs: every one, or an example
    point (`lr=0.0: --lr 0.0: must be ...`) and how many more."""
    if len(points) == total:
        return problem + ("" if total == 1 else f" (all {total} combinations)")
    more = f" (and {len(points) - 1} more)" if len(points) > 1 else ""
    return f"{points[0]}: {problem}{more}"


MAX_INT_VALUES = 10_000  # an int range checked value by value; a wider one is refused


def _values(spec: dict[str, Any]) -> list[Any]:
    """The values to check of one parameter: its choices, every integer of an int range
    (low, low + step, ... <= high, as Optuna samples them), the ends of a float range."""
    kind = spec["distribution"]
    if kind == "categorical":
        return list(spec["choices"])
    if kind == "int":
        return list(range(spec["low"], spec["high"] + 1, spec.get("step", 1)))
    return [spec["low"], spec["high"]]


def _point(sampled: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sampled.items())


def parse_setting(key: str, text: str) -> Any:
    """The value of `--set key=text`: YAML, and where YAML reads another type than the
    training flag `key` declares, the text read by that type: a string flag takes the text
    as it is (`cuda_graph=off` is 'off', not YAML's false), a number flag any number Python
    reads (YAML 1.1 reads '1e-3' as a string). Raises SpaceError for a value of the wrong
    type for its training flag."""
    try:
        value = yaml.load(text, Loader=FlagLoader)
    except yaml.YAMLError:
        value = text  # not YAML: a string, which the type check below judges
    field = {f.name: f for f in fields(Config)}.get(key)
    if field is not None and type_problem(key, value):
        value = _read_as(str(field.type), text, value)
    if problem := type_problem(key, value):
        raise SpaceError(problem)
    return value


_READERS: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float}


def _read_as(annotation: str, text: str, value: Any) -> Any:
    """`text` read by the first scalar type of `annotation` ('int', 'str | None', ...) that
    reads it; else `value` (its YAML reading), for the type check to judge."""
    for name in annotation.split("|"):
        reader = _READERS.get(name.strip())
        try:
            return reader(text) if reader else value
        except ValueError:
            continue
    return value


def _evaluate(expression: str | int | float, values: dict[str, Any]) -> int | float:
    """A product of parameter names and numbers, e.g. 'emb * w_ratio'."""
    if isinstance(expression, (int, float)):
        return expression
    product = 1
    for term in str(expression).split("*"):
        match = TERM.match(term)
        if not match:
            raise SpaceError(
                f"derived expression {expression!r}: use names and numbers joined by *"
            )
        token = match.group(1)
        if token[0].isdigit() or token[0] == ".":
            product *= float(token) if "." in token else int(token)
        elif token in values:
            product *= values[token]
        else:
            raise SpaceError(f"derived expression {expression!r}: unknown name {token!r}")
    return product


def space_path(space: str) -> Path:
    """`wmse` -> search_spaces/wmse.yaml; a path to a .yaml file is taken as it is."""
    path = Path(space)
    if path.suffix in (".yaml", ".yml"):
        return path
    return SPACES_DIR / f"{space}.yaml"


def load_space(space: str, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Reads and checks a space; `overrides` fix config values (e.g. dataset) or pin searched
    parameters to one value."""
    path = space_path(space)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
        raise SpaceError(f"no search space {space!r} (looked for {path}); known: {known}")
    return parse_space(path.read_text(), path, overrides)


def parse_space(text: str, path: Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """A space from YAML text, whose booleans are true and false only (`cuda_graph: off`
    is text, as in a --config file); `path` names it in messages (its stem is the space's
    name)."""
    try:
        raw = yaml.load(text, Loader=FlagLoader) or {}
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    sections = ("config", "params", "derived", "first")
    if not isinstance(raw, dict) or any(not isinstance(raw.get(k) or {}, dict) for k in sections):
        raise SpaceError(
            f"{path}: a search space is a YAML mapping with the sections config, params, "
            "derived and first, each itself a mapping (see search_spaces/wmse.yaml)"
        )
    unknown_sections = set(raw) - {"config", "params", "derived", "first", "description"}
    if unknown_sections:
        raise SpaceError(f"{path}: unknown section(s) {sorted(unknown_sections)}")
    overrides = overrides or {}
    params = raw.get("params") or {}
    pinned = {k: v for k, v in overrides.items() if k in params}
    config = (raw.get("config") or {}) | {k: v for k, v in overrides.items() if k not in pinned}
    params |= {k: {"distribution": "categorical", "choices": [v]} for k, v in pinned.items()}
    derived = raw.get("derived") or {}
    first = (raw.get("first") or {}) | (pinned if raw.get("first") else {})
    for expression in derived.values():  # unknown names fail now, not in a trial
        _evaluate(expression, {**config, **{n: 1 for n in params}})
    _check_names(path, config, params, derived, first)
    for name, spec in params.items():
        _check_distribution(path, name, spec)
    return SearchSpace(path.stem, config, params, derived, first)


def _check_names(path, config, params, derived, first) -> None:
    for key in config:
        if key not in CONFIG_KEYS:
            raise SpaceError(f"{path}: config key {key!r} is not a training flag")
    helpers = {name for name in params if name not in CONFIG_KEYS}
    used = " ".join(str(e) for e in derived.values())
    for name in helpers:
        if not re.search(rf"\b{name}\b", used):
            raise SpaceError(
                f"{path}: parameter {name!r} is neither a training flag nor used in `derived`"
            )
    for key in derived:
        if key not in CONFIG_KEYS:
            raise SpaceError(f"{path}: derived key {key!r} is not a training flag")
    if first and set(first) != set(params):
        raise SpaceError(
            f"{path}: `first` must give every searched parameter: missing "
            f"{sorted(set(params) - set(first))}, unknown {sorted(set(first) - set(params))}"
        )


def _check_distribution(path, name: str, spec: Any) -> None:
    where = f"{path}: parameter {name!r}"
    if not isinstance(spec, dict) or spec.get("distribution") not in DISTRIBUTIONS:
        raise SpaceError(f"{where}: give `distribution:` one of {', '.join(DISTRIBUTIONS)}")
    kind = spec["distribution"]
    missing = [k for k in DISTRIBUTIONS[kind] if k not in spec]
    if missing:
        raise SpaceError(f"{where}: a {kind} distribution needs {missing}")
    if kind == "categorical":
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise SpaceError(f"{where}: `choices` must be a non-empty list")
        return
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) for v in (low, high)) or not low < high:
        raise SpaceError(f"{where}: need numbers low < high, got low={low}, high={high}")
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise SpaceError(f"{where}: an int distribution needs integer bounds")
    step = spec.get("step", 1)
    if kind == "int" and (not isinstance(step, int) or step < 1 or spec.get("log") and step != 1):
        raise SpaceError(f"{where}: step must be an integer >= 1 (and 1 with log: true)")
    if kind == "int" and (high - low) // step >= MAX_INT_VALUES:
        raise SpaceError(f"{where}: over {MAX_INT_VALUES} integers; narrow it or use a larger step")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: a loguniform distribution needs low > 0, got {low}")
    if math.isnan(low) or math.isnan(high):
        raise SpaceError(f"{where}: bounds must be numbers")
