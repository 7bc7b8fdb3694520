"""What a sweep's later trials pay to compile: K trial processes started one after another on
one machine, as a node runs its trials, each training one setting with `--compile` on.

They share one fresh Inductor cache folder (TORCHINDUCTOR_CACHE_DIR; Triton's kernels under
it on CUDA), as trials of one user on one node do by default (Inductor's FX graph and
AOTAutograd caches are on by default). Process 1 starts cold; processes 2..K find its
entries. The same K processes run eager for comparison. Per process the table gives the
wall time from launch to exit (Python, torch and data start-up included), the warm-up
epoch's extra time over a timed epoch ("compile s"), and the timed s/epoch.

    python -m benchmarks.bench_compile_cache [--k 3] [--setting "W-MSE 2"] [--epochs 1]
        [--dataset cifar10 --data_dir data] [--subset N] [--arch resnet18] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_train import SETTINGS
from benchmarks.common import append_results
from wsl_ray.training.device import resolve_device
from wsl_ray.utils.markdown import markdown_table as table

HEADER = ["compile", "process", "wall s", "compile s", "s per 50k epoch"]


def run_trials(compile: bool, args: argparse.Namespace, cache: Path) -> list[dict]:
    """Runs args.k bench_train processes one after another; their results and wall times."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), TRITON_CACHE_DIR=str(cache / "t"))
    flags = ["--dataset", args.dataset, "--data_dir", args.data_dir, "--arch", args.arch]
    flags += ["--epochs", str(args.epochs), "--device", args.device, "--settings", args.setting]
    flags += ["--subset", str(args.subset)] if args.subset else []
    results = []
    for i in range(args.k):
        out = cache.parent / f"{'on' if compile else 'off'}{i}.json"
        mode = "on" if compile else "off"
        cmd = [sys.executable, "-m", "benchmarks.bench_train", *flags, "--compile", mode]
        start = time.perf_counter()
        subprocess.run([*cmd, "--result-json", str(out)], env=env, check=True)
        results.append(json.loads(out.read_text()) | {"wall_s": time.perf_counter() - start})
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=3, help="trial processes, one after another")
    parser.add_argument("--setting", default="W-MSE 2", choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.k < 2:
        parser.error(f"--k {args.k}: give 2 or more processes (the first one starts cold)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for compile in (True, False):
            cache = Path(tmp) / f"cache-{compile}"
            for i, r in enumerate(run_trials(compile, args, cache), start=1):
                state = ("cold cache" if i == 1 else "warm cache") if compile else "eager"
                rows.append(
                    [
                        "on" if compile else "off",
                        f"{i} ({state})",
                        f"{r['wall_s']:.1f}",
                        f"{r['compile_s']:.1f}",
                        f"{r['s_per_epoch']:.2f}",
                    ]
                )
                print(table(HEADER, rows[-1:]), flush=True)
    scope = f"first {args.subset} images" if args.subset else "all images"
    body = f"{args.setting}, {args.dataset} ({scope}), {args.arch}\n\n" + table(HEADER, rows)
    command = "python -m benchmarks.bench_compile_cache " + shlex.join(argv)
    title = "Compile cost of a sweep's later trials"
    append_results(title, resolve_device(args.device), body, command)


if __name__ == "__main__":
    main()
