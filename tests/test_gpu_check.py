"""benchmarks/gpu_check.sh, the GPU session's prepared call, run on this CPU machine with a
stand-in interpreter (PYTHON) that finds no GPU and returns at once, logging each command:
every stage of its --help's table appears in results.md once, in that order; a GPU stage
says it needs a GPU, a stage whose estimate exceeds what is left of --budget says so, and the
call ends within its budget. (A dry run with the real interpreter: docs/performance.md.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
STAGE_ROW = re.compile(r"^\s+(\d+) (.+?)\s+(G )?(\d+)$")

# The stand-in: no CUDA, and neither Ray nor Optuna import; any other command is logged.
FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
    *cuda.is_available*) exit 1 ;;
    *"import ray"*) exit 1 ;;
esac
echo "$*" >> "$(dirname "$0")/commands.log"
"""


def stages(sweep: bool) -> list[tuple[str, str, bool, int]]:
    """The --help table of one call: (number, name, needs a GPU, estimate s), in order."""
    shown = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, check=True).stdout
    main, _, second = shown.partition("The optional second call")
    rows = [STAGE_ROW.match(line) for line in (second if sweep else main).splitlines()]
    return [(m[1], m[2], bool(m[3]), int(m[4])) for m in rows if m]


def dry_run(tmp_path: Path, *flags: str) -> tuple[list[str], list[str], int]:
    """results.md's stage lines, the commands run, and the seconds it reported."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = os.environ | {"PYTHON": str(fake), "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    done = subprocess.run([SCRIPT, str(out), *flags], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    text = (out / "results.md").read_text()
    seconds, budget = map(int, re.search(r"done in (\d+) s of (\d+) s", text).groups())
    assert seconds <= budget
    log = fake.parent / "commands.log"
    commands = log.read_text().splitlines() if log.exists() else []
    return [line for line in text.splitlines() if re.match(r"- \d+ ", line)], commands, seconds


@pytest.mark.parametrize("sweep", [False, True], ids=["call", "sweep"])
def test_every_stage_is_named_once_in_order_and_gpu_stages_skip(tmp_path, sweep):
    table = stages(sweep)
    assert [int(n) for n, *_ in table] == list(range(1, len(table) + 1))
    lines, commands, _ = dry_run(tmp_path, *(["--sweep"] if sweep else []), "--budget", "540")
    assert [re.match(r"- (\d+) (.+?): ", line).groups() for line in lines] == [
        (n, name) for n, name, *_ in table
    ]
    for (_, _, gpu, _), line in zip(table, lines, strict=True):
        assert line.endswith("skipped (needs a GPU)") == gpu, line
    if not sweep:  # the CPU stages that have what they need ran: the capture check, the tests
        assert lines[0].startswith("- 1 environment and capture check: ok in")
        assert "-m benchmarks.capture_check" in commands[-2]
        assert "-x" in commands[-1].split() and "-m graph tests/test_gpu.py" in commands[-1]


def test_a_stage_that_does_not_fit_the_budget_is_skipped_and_named(tmp_path):
    """--budget 60: stage 1 (40 s) fits and runs, stage 6 (90 s) does not; every stage is
    still named."""
    table = stages(sweep=False)
    estimates = {name: estimate for _, name, _, estimate in table}
    assert (
        estimates["environment and capture check"] <= 60 < estimates["GPU tests of captured steps"]
    )
    lines, commands, seconds = dry_run(tmp_path, "--budget", "60")
    assert len(lines) == len(table) and seconds <= 60
    assert lines[0].startswith("- 1 environment and capture check: ok")
    skipped = re.fullmatch(
        r"- 6 GPU tests of captured steps: skipped \(needs about 90 s, (\d+) s left\)", lines[5]
    )
    assert skipped and int(skipped[1]) <= 60, lines[5]
    assert not any("pytest" in c for c in commands)


def test_bad_budgets_are_refused(tmp_path):
    for budget in ("nine", "600"):
        done = subprocess.run(
            [SCRIPT, str(tmp_path), "--budget", budget], capture_output=True, text=True
        )
        assert done.returncode == 2 and "--budget" in done.stderr, done.stderr
