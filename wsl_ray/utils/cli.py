"""What the commands share on the command line."""

from __future__ import annotations

import sys
from pathlib import Path


def command_name(module: str) -> str:
    """The command as the user typed it, for usage lines: its console script (`wsl-train`)
    when run through one, else `python -m <module>`."""
    script = Path(sys.argv[0]).name
    return script if script.startswith("wsl-") else f"python -m {module}"
