"""The built wheel holds everything a command needs: every subpackage, the analysis package as
`wsl_ray.analysis` (no generic top-level `analysis`), the named search spaces as package data,
and a console script per command that starts from a folder outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "wsl-train",
    "wsl-test",
    "wsl-tune",
    "wsl-confirm",
    "wsl-lincls",
    "wsl-export",
    "wsl-analysis",
]

# run in the installed copy: each console script's entry point with --help, then a named space
CHECK_INSTALLED = """
import contextlib
import io
import sys
from importlib import metadata
from pathlib import Path

site = Path(sys.argv[1])
dist = metadata.distribution("wsl-ray")
assert Path(dist.locate_file("wsl_ray")).is_relative_to(site), dist.locate_file("wsl_ray")
for entry in sorted(dist.entry_points.select(group="console_scripts"), key=lambda e: e.name):
    main = entry.load()
    assert Path(sys.modules[main.__module__].__file__).is_relative_to(site), main.__module__
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(["--help"])
        except SystemExit as stop:
            code = stop.code
    assert code in (0, None), (entry.name, code)
    assert out.getvalue().startswith("usage:"), (entry.name, out.getvalue())
    print(f"{entry.name} = {entry.value} --help: {out.getvalue().splitlines()[0]}")
from wsl_ray.sweep.space import SPACES_DIR, load_space
assert SPACES_DIR.is_relative_to(site), SPACES_DIR
print(f"SPACES_DIR {SPACES_DIR}")
print(f"load_space('wmse'): {load_space('wmse').name}")
"""


def build_wheel(tmp_path: Path) -> Path:
    """Builds from a copy of the sources, so no build/ folder lands in (or leaks stale files
    from) the checkout."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("wsl_ray", "analysis", "search_spaces"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(out), str(src)],
        check=True,
    )
    (wheel,) = out.glob("wsl_ray-*.whl")
    return wheel


def test_wheel_installs_every_command_and_space(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    subpackages = sorted(p.parent.name for p in (ROOT / "wsl_ray").glob("*/__init__.py"))
    spaces = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    print(f"{wheel.name}: {len(names)} files; subpackages {subpackages + ['analysis']}")
    for package in subpackages + ["analysis"]:
        assert f"wsl_ray/{package}/__init__.py" in names, package
    assert "wsl_ray/analysis/__main__.py" in names
    assert [n for n in names if n.startswith("wsl_ray/search_spaces/")] == [
        f"wsl_ray/search_spaces/{s}" for s in spaces
    ]
    top_level = {n.split("/")[0] for n in names if not n.startswith("wsl_ray-")}
    assert top_level == {"wsl_ray"}, top_level
    print(f"{len(spaces)} spaces under wsl_ray/search_spaces/; top level {sorted(top_level)}")

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        + [str(wheel)],
        check=True,
    )
    elsewhere = tmp_path / "elsewhere"  # no checkout around: only the installed copy resolves
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    # one process calls every entry point (the imports of torch and Ray are paid once)
    checks = subprocess.run(
        [sys.executable, "-c", CHECK_INSTALLED, str(site)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    print(checks.stdout)
    assert checks.returncode == 0, checks.stdout + checks.stderr
    assert checks.stdout.splitlines()[-1] == "load_space('wmse'): wmse"
    assert sorted(p.name for p in (site / "bin").iterdir()) == sorted(SCRIPTS)

    # and one console script runs as the file pip wrote
    run = subprocess.run(
        [str(site / "bin" / "wsl-tune"), "--help"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    print(f"bin/wsl-tune --help: rc {run.returncode}: {run.stdout.splitlines()[:1]}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("usage:"), run.stdout
