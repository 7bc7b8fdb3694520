"""The wheels the GPU machine's sweep travels with (benchmarks/device_wheels.sh): a wheel
stripped of some files is still a valid wheel, and Ray's stripped wheel runs a sweep.

The Ray test downloads this interpreter's Ray wheel (about 80 MB): it is marked `slow` (make
test-slow) and skips, saying why, where PyPI cannot be reached. It installs the stripped copy
with --no-deps into a folder of its own, first on PYTHONPATH, so that every process of the
sweep (driver, raylet, workers, dashboard) runs it; and it makes the modules of the
distributions that device_wheels.sh leaves out unimportable there, so a sweep that needed one
of them fails here, not on the GPU machine."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from helpers import own_ray_cluster, results, sweep

from benchmarks.jpeg_subset import NPZ, subset
from benchmarks.strip_wheel import check_record, record_line, strip_wheel

ROOT = Path(__file__).resolve().parents[1]
RAY_VERSION = metadata.version("ray")
DIST_INFO = "tiny-1.0.dist-info"


def tiny_wheel(folder: Path) -> Path:
    """A valid pure-Python wheel `tiny` with a jar, a source map and an executable in it."""
    files = {
        "tiny/__init__.py": b"VALUE = 7\n",
        "tiny/jars/worker.jar": b"PK not really a jar" * 100,
        "tiny/web/main.js": b"console.log(1)\n",
        "tiny/web/main.js.map": b'{"version": 3}' * 100,
        "tiny/bin/server": b"#!/bin/sh\necho server\n",
        f"{DIST_INFO}/METADATA": b"Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n",
        f"{DIST_INFO}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [record_line(name, data) for name, data in files.items()] + [f"{DIST_INFO}/RECORD,,"]
    files[f"{DIST_INFO}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / "tiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            mode = 0o755 if name.endswith("server") else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, data)
    return wheel


def test_stripped_wheel_is_valid_without_the_dropped_files(tmp_path: Path) -> None:
    wheel = tiny_wheel(tmp_path)
    assert check_record(wheel) == []
    out = strip_wheel(wheel, tmp_path / "out", drop=("tiny/jars/*", "*.js.map"))
    assert out.name == wheel.name and out.stat().st_size < wheel.stat().st_size
    names = zipfile.ZipFile(out).namelist()
    assert "tiny/jars/worker.jar" not in names and "tiny/web/main.js.map" not in names
    assert {"tiny/__init__.py", "tiny/web/main.js", "tiny/bin/server"} <= set(names)
    record = zipfile.ZipFile(out).read(f"{DIST_INFO}/RECORD").decode()
    assert "worker.jar" not in record and "main.js.map" not in record
    assert check_record(out) == []

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        + ["--target", str(site), str(out)],
        check=True,
    )
    assert (site / "tiny/bin/server").stat().st_mode & stat.S_IXUSR  # permissions kept
    assert not (site / "tiny/jars").exists()
    installed = metadata.Distribution.at(site / DIST_INFO)
    listed = {str(f) for f in installed.files}  # pip's RECORD, what importlib.metadata reads
    assert set(names) <= listed and all((site / f).exists() for f in listed)


def test_check_record_finds_a_file_that_does_not_match(tmp_path: Path) -> None:
    wheel = tiny_wheel(tmp_path)
    bad = tmp_path / "bad" / wheel.name
    bad.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            changed = info.filename == "tiny/__init__.py"
            dst.writestr(info, b"VALUE = 8\n" if changed else src.read(info))
    assert check_record(bad) == ["tiny/__init__.py: no RECORD line with its sha256 and size"]
    dropped = strip_wheel(wheel, tmp_path / "out", drop=("tiny/jars/*",))
    with zipfile.ZipFile(dropped, "a") as zf:  # a member the RECORD does not know
        zf.writestr("tiny/extra.py", b"")
    assert check_record(dropped) == ["tiny/extra.py: no RECORD line with its sha256 and size"]


@pytest.mark.parametrize("script", ["device_wheels.sh", "gpu_check.sh"])
def test_scripts_print_their_help_and_refuse_unknown_flags(script: str) -> None:
    path = str(ROOT / "benchmarks" / script)
    shown = subprocess.run([path, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "gpu_wheels" in shown.stdout, shown.stderr
    refused = subprocess.run([path, "--no-such-flag"], capture_output=True, text=True)
    assert refused.returncode == 2 and "usage" in refused.stderr.lower()


def left_out_modules() -> list[str]:
    """The top-level modules of the distributions device_wheels.sh leaves out, as installed
    in this environment (a distribution not installed here is skipped)."""
    text = (ROOT / "benchmarks" / "device_wheels.sh").read_text()
    names = re.search(r'LEAVE_OUT="([^"]*)"', text).group(1).split()
    by_dist: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(re.sub(r"[-_.]+", "-", dist).lower(), set()).add(module)
    return sorted(m for n in names for m in by_dist.get(n, ()) if not m.startswith("_"))


# Imported at start-up by every Python process that has its folder on sys.path: the modules
# named in BLOCKED raise ImportError, as they would on a machine that lacks them.
BLOCKER = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not carried to the GPU machine")

sys.meta_path.insert(0, Block())
"""


@pytest.mark.slow
def test_stripped_ray_wheel_runs_a_sweep(tmp_path: Path, monkeypatch) -> None:
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["-d", str(tmp_path / "dl"), f"ray=={RAY_VERSION}"],
        capture_output=True,
        text=True,
    )
    if download.returncode != 0:
        pytest.skip(f"no Ray {RAY_VERSION} wheel for this Python: {download.stderr[-500:]}")
    (wheel,) = (tmp_path / "dl").glob("ray-*.whl")
    stripped = strip_wheel(wheel, tmp_path / "stripped")
    names = zipfile.ZipFile(stripped).namelist()
    assert not [n for n in names if n.startswith("ray/jars/") or n.endswith(".js.map")]
    assert check_record(stripped) == []
    before, after = wheel.stat().st_size / 1e6, stripped.stat().st_size / 1e6
    print(f"{wheel.name}: {before:.1f} -> {after:.1f} MB")

    site, blocker = tmp_path / "site", tmp_path / "blocker"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"]
        + ["--target", str(site), str(stripped)],
        check=True,
    )
    blocked = left_out_modules()
    assert "virtualenv" in blocked and "sqlalchemy" in blocked, blocked
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(blocked)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(map(str, (site, blocker, ROOT))))
    check = "import ray, sqlalchemy"
    refused = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert "sqlalchemy is not carried" in refused.stderr, refused.stderr
    where = subprocess.run(
        [sys.executable, "-c", "import ray; print(ray.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout

    storage = tmp_path / "runs"
    with own_ray_cluster(2) as cluster:
        out = sweep(
            cluster.address,
            "wmse",
            storage,
            *("--dataset", "shapes", "--num_trials", "2", "--epochs", "1", "--eval_every", "1"),
            *("--seed", "0", "--set", "arch=resnet18_w8", "subset=256", "bs=128", "emb=32"),
            *("head_size=64", "lr_warmup=false", "lr_step=none"),
        )
        raylets = [p for p in Path("/proc").glob("[0-9]*/cmdline") if runs_raylet_of(p, site)]
        assert raylets, "no process of the cluster runs the stripped copy's binaries"
    rows = results(storage)
    assert len(rows) == 2, out[-3000:]


def runs_raylet_of(cmdline: Path, site: Path) -> bool:
    """Whether the process of /proc/PID/cmdline runs the raylet of the copy under `site`."""
    try:
        return str(site / "ray/core/src/ray/raylet/raylet") in cmdline.read_text()
    except OSError:
        return False


def test_jpeg_subset_keeps_whole_images_with_their_labels(tmp_path: Path) -> None:
    """The second call's data: each kept image's bytes and label come whole from the source
    (image i of a split holds bytes [i] * (i + 1), label i % 10), and to_batches.py travels."""
    import numpy as np

    src = tmp_path / "src"
    src.mkdir()
    arrays = {}
    for split, n in (("train", 30), ("test", 12)):
        images = [np.full(i + 1, i, dtype=np.uint8) for i in range(n)]
        arrays[f"blob_{split}"] = np.concatenate(images)
        arrays[f"off_{split}"] = np.concatenate([[0], np.cumsum([len(b) for b in images])])
        arrays[f"y_{split}"] = np.arange(n) % 10
    np.savez(src / NPZ, **arrays)
    (src / "to_batches.py").write_text("# the decoder\n")
    written = np.load(subset(src, tmp_path / "out", {"train": 8, "test": 3}))
    assert (tmp_path / "out" / "to_batches.py").read_text() == "# the decoder\n"
    for split, n in (("train", 8), ("test", 3)):
        blob, off, y = (written[f"{k}_{split}"] for k in ("blob", "off", "y"))
        images = [blob[off[i] : off[i + 1]] for i in range(n)]
        assert len(images) == n == len(y) and off[-1] == len(blob)
        kept = [int(image[0]) for image in images]
        assert len(set(kept)) == n
        assert all(
            (image == k).all() and len(image) == k + 1
            for image, k in zip(images, kept, strict=True)
        )
        assert list(y) == [k % 10 for k in kept]
