"""One training configuration: its fields (`schema`), its command-line flags (`flags`) and
its validation (`checks`)."""

from .checks import check_data_fit, type_problem, validate_config
from .flags import add_config_flags, config_from_args
from .schema import (
    AUG_PRESETS,
    METHODS,
    OPTIMIZERS,
    SYNC_BN_NEEDS_GPUS,
    TWO_VIEW_METHODS,
    UNSET_AUG_DEFAULTS,
    UNSET_DEFAULTS,
    Config,
    ConfigError,
    defaults_note,
    fill_unset,
)

__all__ = [
    "AUG_PRESETS",
    "METHODS",
    "OPTIMIZERS",
    "SYNC_BN_NEEDS_GPUS",
    "TWO_VIEW_METHODS",
    "UNSET_AUG_DEFAULTS",
    "UNSET_DEFAULTS",
    "Config",
    "ConfigError",
    "add_config_flags",
    "config_from_args",
    "defaults_note",
    "fill_unset",
    "check_data_fit",
    "type_problem",
    "validate_config",
]
