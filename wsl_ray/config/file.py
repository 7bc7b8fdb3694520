"""`--config run.yaml`: a command's flags read from a YAML file, the command line on top.

Keys are the flags' names without the leading dashes (`lr`, `gpus_per_worker` or
`gpus-per-worker`); an on/off flag takes true/false under its own name (`no_norm: true`)
or its field's (`norm: false`). Every value passes through its flag's own type, so
`lr: 1e-3` (a string to YAML 1.1) becomes the float 0.001, and `bs: 1e3` is refused as
argparse would refuse `--bs 1e3`. Booleans are YAML 1.2's, true and false only: on, off,
yes and no stay text, so that a text flag keeps them (`cuda_graph: off`). Flags given on the
command line override the file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml

SKIP = ("help", "config", "print_config")
BOOL = "tag:yaml.org,2002:bool"


class FlagLoader(yaml.SafeLoader):
    """yaml.SafeLoader with YAML 1.2's booleans (true, false): YAML 1.1 also reads on, off,
    yes and no as booleans, which turned `cuda_graph: off` into False."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != BOOL]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


FlagLoader.add_implicit_resolver(
    BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def add_config_file_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="read flags from this YAML file")
    parser.add_argument(
        "--print_config", action="store_true", help="print the resolved flags as YAML and exit"
    )


def _keyed_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Each file key a flag accepts -> its action: the option name and the dest."""
    keyed = {}
    for action in parser._actions:
        if action.dest in SKIP or not action.option_strings:
            continue
        for option in action.option_strings:
            name = option.lstrip("-")
            keyed[name] = keyed[name.replace("-", "_")] = action
        keyed.setdefault(action.dest, action)
    return keyed


def _convert(key: str, value: Any, action: argparse.Action) -> tuple[str, Any]:
    """(dest, value) for `key: value`, through the flag's type; ValueError if it fails."""
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ValueError(f"{key}: {value!r} is not true or false")
        if isinstance(action, argparse._StoreFalseAction) and key == action.dest:
            return action.dest, value  # `norm: false` under the field's own name
        return action.dest, value == action.const
    if value is None:
        return action.dest, None
    convert = action.type or str
    nargs_list = action.nargs in ("*", "+")
    try:
        if nargs_list:
            items = value if isinstance(value, list) else [value]
            out: Any = [convert(str(v)) for v in items]
        elif isinstance(value, (list, dict)):
            raise ValueError
        else:
            out = convert(str(value))
    except (TypeError, ValueError):
        kind = getattr(convert, "__name__", str(convert))
        raise ValueError(f"{key}: {value!r} is not a valid {kind}") from None
    choices = action.choices
    if choices is not None and any(v not in choices for v in (out if nargs_list else [out])):
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    return action.dest, out


def read_config_file(parser: argparse.ArgumentParser, path: str | Path) -> dict[str, Any]:
    """The file's flags as {dest: value}; ValueError naming the key for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        values = yaml.load(path.read_text(), Loader=FlagLoader) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ValueError(
            f"--config {path}: not valid YAML{line}; write `flag: value` lines"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path}: cannot read it ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: write one `flag: value` per line")
    keyed = _keyed_actions(parser)
    unknown = sorted(str(k) for k in values if k not in keyed)
    if unknown:
        raise ValueError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; the keys are the flags "
            "of --help without dashes"
        )
    try:
        return dict(_convert(str(k), v, keyed[k]) for k, v in values.items())
    except ValueError as err:
        raise ValueError(f"--config {path}: {err}") from None


def resolved_yaml(args: argparse.Namespace, cfg: Any = None) -> str:
    """Every flag's resolved value as YAML keyed by dest (a valid --config file itself);
    with `cfg` (a Config), its values win: they include the method's defaults."""
    values = {k: v for k, v in vars(args).items() if k not in SKIP}
    if cfg is not None:
        values |= cfg.to_dict()
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
