"""What the commands share on the command line: their name in messages, their parser."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn


def command_name(module: str) -> str:
    """The command as the user typed it, for usage lines: its console script (`wsl-train`)
    when run through one, else `python -m <module>`."""
    script = Path(sys.argv[0]).name
    return script if script.startswith("wsl-") else f"python -m {module}"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, plus a hint line: not the whole
    usage block (45 lines for train), which buried the message. Exit code 2, as argparse."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")
