"""The command-line flags of a Config: one per field, generated from the dataclass so that
the two cannot drift."""

from __future__ import annotations

import argparse
from dataclasses import fields

from .schema import Config


def add_config_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds one flag per Config field. Booleans that default to True get `--no_<name>`. A
    method's own options come in a group of their own, titled by the method."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(Config):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        method = meta.pop("method", None)
        meta.pop("bounds", None)  # validation's range, already at the end of the help
        if method is not None and method not in groups:
            groups[method] = parser.add_argument_group(f"options of --method {method}")
        group = groups.get(method, parser)
        default = f.default_factory()
        if f.type == "bool" and default is None:  # unset: the method decides
            group.add_argument(
                f"--{f.name}",
                dest=f.name,
                action="store_const",
                const=True,
                default=None,
                help=help_text,
            )
            group.add_argument(
                f"--no_{f.name}",
                dest=f.name,
                action="store_const",
                const=False,
                help=f"turn off --{f.name}",
            )
            continue
        if isinstance(default, bool):
            flag = f"--no_{f.name}" if default else f"--{f.name}"
            action = "store_false" if default else "store_true"
            group.add_argument(flag, dest=f.name, action=action, help=help_text)
            continue
        meta.setdefault("type", type(default))
        group.add_argument(f"--{f.name}", default=default, help=help_text, **meta)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config part of parsed arguments (other flags of the command are ignored)."""
    return Config(**{f.name: getattr(args, f.name) for f in fields(Config)})
