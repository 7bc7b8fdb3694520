"""Seconds per epoch, images/s and evaluation time of the real training loop, and how many
trial-epochs one GPU gives a sweep.

Each setting runs `wsl_ray.training.loop.train` for 1 + `--epochs` epochs, evaluating after every
one. Epoch 1 is the warm-up (compilation, cuDNN autotuning, the step's capture, the first
evaluation's CUDA graph); the table gives its extra time as "compile s", then the median of
the timed epochs and of the timed evaluations. Epoch times end with a device sync (the
epoch's mean loss is read on the host), so queued GPU work is never left out. s/epoch is for
50,000 images. Each row runs one `--compile` and one `--cuda_graph` mode (several of each:
every pair but compile with a required graph, which never captures) and says how its step
ran: "graph", or "eager: " and why (the last epoch's `cuda_graph` and `eager_because`).

With `--trials-per-gpu K`, K trials of one setting run at once as K processes on the same
GPU (as a sweep packs fractional-GPU trials); each reports its own medians and the table
adds up trial-epochs per GPU-hour with an evaluation every 10 epochs included:
    per trial: 3600 * 10 / (10 * s_per_epoch + s_per_eval)

    python -m benchmarks.bench_train --data_dir data [--subset N] [--arch resnet18]
        [--compile both|on|off] [--cuda_graph auto|on|off ...] [--settings "W-MSE 2" ...]
        [--trials-per-gpu K]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import append_results, step_ran_as
from wsl_ray.config import Config
from wsl_ray.data import load_dataset
from wsl_ray.training.device import resolve_device
from wsl_ray.training.loop import train
from wsl_ray.utils.markdown import markdown_table as table

FULL_EPOCH = 50_000
SETTINGS = {  # the papers' CIFAR-10 settings
    "W-MSE 2": dict(num_samples=2, bs=512, emb=64, w_size=128),
    "W-MSE 4": dict(num_samples=4, bs=256, emb=64, w_size=128),
    "CW-RGP 2": dict(
        method="cw_rgp",
        num_samples=2,
        bs=256,
        emb=512,
        w_size=64,
        groups=4,
        w_iter=4,
        zero_init_residual=True,
    ),
    "BYOL": dict(method="byol", num_samples=2, bs=512, emb=64),
}


def measure(setting: str, compile: bool, cuda_graph: str, args: argparse.Namespace) -> dict:
    """Trains one setting for 1 + args.epochs epochs and returns its timings and how its
    step ran (`step`: "graph", or "eager: " and why)."""
    data = load_dataset(args.dataset, args.data_dir).subset(args.subset)
    with tempfile.TemporaryDirectory() as out:
        cfg = Config(
            dataset=args.dataset,
            arch=args.arch,
            epoch=1 + args.epochs,
            eval_every=1,
            lr=3e-3,
            lr_step="none",
            compile=compile,
            cuda_graph=cuda_graph,
            device=args.device,
            out=out,
            ckpt_every=10**6,
            **SETTINGS[setting],
        )
        train(cfg, data=data, progress=False)
        history = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
    epoch_s = statistics.median(m["epoch_time_s"] for m in history[1:])
    images = len(data.train_x) - len(data.train_x) % cfg.bs
    return {
        "setting": setting,
        "compile": compile,
        "cuda_graph": cuda_graph,
        "step": step_ran_as(history[-1]),
        "bs": cfg.bs,
        "views": cfg.num_samples,
        "images_per_s": images / epoch_s,
        "s_per_epoch": epoch_s * FULL_EPOCH / images,
        "compile_s": max(0.0, history[0]["epoch_time_s"] - epoch_s),  # the warm-up's extra
        "eval_s": statistics.median(m["eval_time_s"] for m in history[1:]),
        "first_eval_s": history[0]["eval_time_s"],
    }


def trial_epochs_per_hour(r: dict) -> float:
    return 3600 * 10 / (10 * r["s_per_epoch"] + r["eval_s"])


def mps_on() -> bool:
    """Whether an MPS control daemon runs on this machine (packed processes then share SMs)."""
    for status in Path("/proc").glob("[0-9]*/comm"):
        try:
            if status.read_text().startswith("nvidia-cuda-mps"):
                return True
        except OSError:
            continue
    return False


def packed(setting: str, compile: bool, cuda_graph: str, k: int, argv: list[str]) -> list[dict]:
    """Runs K measurements of one setting at once, as K processes; returns their results."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"trial{i}.json" for i in range(k)]
        base = [sys.executable, "-m", "benchmarks.bench_train", *argv, "--trials-per-gpu", "1"]
        procs = [
            subprocess.Popen(
                [
                    *base,
                    "--settings",
                    setting,
                    "--compile",
                    "on" if compile else "off",
                    "--cuda_graph",
                    cuda_graph,
                    "--result-json",
                    str(out),
                ]
            )
            for out in outs
        ]
        if any(p.wait() for p in procs):
            raise RuntimeError("a packed trial failed; see its output above")
        return [json.loads(out.read_text()) for out in outs]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--compile", default="both", choices=("both", "on", "off"))
    parser.add_argument(
        "--cuda_graph",
        nargs="+",
        default=["auto"],
        choices=("auto", "on", "off"),
        help="the step as one CUDA graph, each mode a row (on: a failed capture is an error)",
    )
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trials-per-gpu", type=int, default=1, help="K packed trials")
    parser.add_argument("--result-json", default=None, help=argparse.SUPPRESS)  # packed worker
    args = parser.parse_args(argv)
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.compile]
    runs = [(c, g) for c in modes for g in dict.fromkeys(args.cuda_graph) if not (c and g == "on")]
    if not runs:
        parser.error("--compile on --cuda_graph on: a compiled encoder is never captured")
    if args.result_json:
        result = measure(args.settings[0], *runs[0], args)
        Path(args.result_json).write_text(json.dumps(result))
        return
    device = resolve_device(args.device)
    rows, packed_rows = [], []
    for setting in args.settings:
        for compile, cuda_graph in runs:
            r = measure(setting, compile, cuda_graph, args)
            rows.append(
                [
                    setting,
                    r["bs"],
                    "on" if compile else "off",
                    f"{cuda_graph}: {r['step']}",
                    f"{r['images_per_s']:,.0f}",
                    f"{r['images_per_s'] * r['views']:,.0f}",
                    f"{r['s_per_epoch']:.2f}",
                    f"{r['compile_s']:.1f}",
                    f"{r['eval_s']:.2f}",
                    f"{trial_epochs_per_hour(r):,.0f}",
                ]
            )
            print(table(HEADER, rows[-1:]), flush=True)
            if args.trials_per_gpu > 1:
                trials = packed(setting, compile, cuda_graph, args.trials_per_gpu, _without_k(argv))
                total = sum(trial_epochs_per_hour(t) for t in trials)
                packed_rows.append(
                    [
                        setting,
                        "on" if compile else "off",
                        ", ".join(sorted({f"{cuda_graph}: {t['step']}" for t in trials})),
                        args.trials_per_gpu,
                        f"{statistics.median(t['s_per_epoch'] for t in trials):.2f}",
                        f"{statistics.median(t['eval_s'] for t in trials):.2f}",
                        f"{total:,.0f}",
                    ]
                )
    scope = f"first {args.subset} images" if args.subset else "all images"
    body = f"{args.dataset} ({scope}), {args.arch}, {device}\n\n" + table(HEADER, rows)
    if packed_rows:
        body += f"\n\nPacked trials on one GPU (MPS {'on' if mps_on() else 'off'}):\n\n"
        body += table(PACKED_HEADER, packed_rows)
    command = "python -m benchmarks.bench_train " + shlex.join(argv)
    append_results("Training throughput", device, body, command)


def _without_k(argv: list[str]) -> list[str]:
    """argv without a '--trials-per-gpu K' pair (the packed workers get their own)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--trials-per-gpu":
            skip = True
        elif not a.startswith("--trials-per-gpu="):
            out.append(a)
    return out


HEADER = [
    "setting",
    "batch",
    "compile",
    "--cuda_graph: step ran as",
    "images/s",
    "views/s",
    "s per 50k epoch",
    "compile s",
    "eval s",
    "trial-epochs/GPU-h (eval every 10)",
]
PACKED_HEADER = [
    "setting",
    "compile",
    "--cuda_graph: step ran as",
    "trials",
    "s per 50k epoch (median)",
    "eval s (median)",
    "trial-epochs/GPU-h, all trials",
]


if __name__ == "__main__":
    main()
