"""Seconds per step and per CIFAR-10 epoch of the reference code (htdt/self-supervised), timed
in the same session as our benchmarks so that every speed-up is a ratio from one GPU.

The reference is not part of this repository. Fetch it into a git-ignored folder (gpu_ref/):

    # the fetch tool (source github:htdt/self-supervised) gives a bare git dir, e.g.
    # /work/.mirror/htdt+self-supervised/repo; extract a plain work tree from it:
    mkdir -p gpu_ref/self-supervised
    git --git-dir=/work/.mirror/htdt+self-supervised/repo archive HEAD \\
        | tar -x -C gpu_ref/self-supervised
    python -m benchmarks.bench_reference --ref_dir gpu_ref/self-supervised --data_dir data \\
        --device cuda

The reference's own modules run, imported from --ref_dir: its `cfg.get_cfg` with the README's
CIFAR-10 arguments (W-MSE 2: --lr 3e-3 --emb 64 --w_size 128, bs 512; W-MSE 4: the same with
--num_samples 4 --bs 256), its dataset class with its PIL augmentation and DataLoader
(`num_workers` = the CPU count, its default), its `WMSE` method (ResNet-18 in
`nn.DataParallel`, one encoder call per view, Cholesky whitening of each 128-row sub-batch of
each view), `optim.Adam(lr, weight_decay=adam_l2)`, `train.get_scheduler`, cuDNN benchmark mode,
float32 with no autocast (as the reference). The step is train.py's: learning-rate warm-up,
zero_grad, loss, backward, Adam step, `loss.item()`, `model.step`, and at each epoch's end its
scheduler step. Three things are replaced:
- torchvision's CIFAR10 reads the pickles in --data_dir (the JPEG copy, written by
  shared/datasets/cifar10-jpeg/to_batches.py) with its md5 sums set to None, so only the files'
  presence is checked, and never downloads (the reference asks for download=True in ./data);
- `wandb` is a stub module (train.py imports it; only its __main__ block logs);
- the epoch loop: `--warmup` steps untimed (the first loader workers, cuDNN's autotuning), then
  `--steps` timed steps, or fewer when `--max_s` runs out, over as many epochs as they need; the
  clock is read after a device sync. Every epoch restarts the loader's workers, as in the
  reference, and a timed window that spans epoch ends pays for that.
On --device cpu (dry runs only) `Tensor.cuda` returns the tensor itself, since the reference's
forward moves each view with `.cuda()`.

s per 50k epoch = s/step x 50,000 / bs, the convention of bench_train (the reference's epoch,
with drop_last, is 50,000 // bs steps). "loader wait" is the share of the timed wall time spent
waiting for the DataLoader's next batch (starting its workers included); the `loss.item()` of
every step leaves the GPU idle then, so it is time the GPU had no work.

Differences from our step that matter for reading the ratio against bench_train:
- augmentation: the reference's is PIL on the CPU in `num_workers` processes (16 on the lent
  H200 machine); ours runs batched on the GPU. A large loader wait means the reference is
  bound by the host's cores, and its ratio then depends on the machine's CPU count;
- precision: the reference computes in float32 (cuDNN's TF32 convolutions are torch's
  default), ours under bf16 autocast with channels_last;
- the reference calls the encoder once per view and syncs the host every step (`loss.item()`);
  ours concatenates the views in one call (per-view BatchNorm statistics) and reads the loss on
  the host once per epoch;
- the reference times steps, bench_train whole epochs (ours with its evaluation left out);
- both use Adam (lr 3e-3, weight decay 1e-6) with a 500-step linear learning-rate warm-up.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import itertools
import shlex
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10

from benchmarks.common import append_results
from wsl_ray.utils.markdown import markdown_table

FULL_EPOCH = 50_000
SETTINGS = {  # the reference README's CIFAR-10 commands (table 1 of the W-MSE paper)
    "W-MSE 2": ["--lr", "3e-3", "--emb", "64", "--w_size", "128", "--bs", "512"],
    "W-MSE 4": ["--lr", "3e-3", "--emb", "64", "--w_size", "128", "--bs", "256"]
    + ["--num_samples", "4"],
}
W_SIZE = 128  # both settings' whitening sub-batch: a batch must be a multiple of it
REFERENCE_FILES = ("train.py", "cfg.py", "methods/w_mse.py", "datasets/cifar10.py")
REFERENCE_MODULES = ("cfg", "datasets", "methods", "model", "train", "eval")
HOW_TO_GET = (
    "get it with the fetch tool (source github:htdt/self-supervised), which gives a bare git "
    "dir such as /work/.mirror/htdt+self-supervised/repo, then: mkdir -p {d} && git "
    "--git-dir=/work/.mirror/htdt+self-supervised/repo archive HEAD | tar -x -C {d}"
)
HEADER = [
    "setting",
    "batch",
    "views",
    "steps timed",
    "s/step",
    "images/s",
    "views/s",
    "s per 50k epoch",
    "loader wait",
]


class LocalCIFAR10(CIFAR10):
    """torchvision's CIFAR10 on the pickles in `data_dir`: the md5 sums are None, so
    `check_integrity` only checks that each file exists, and the reference's root ("./data")
    and download=True are ignored."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}

    def __init__(self, data_dir: str, root=None, train=True, transform=None, download=False):
        super().__init__(data_dir, train=train, transform=transform)


def load_reference(ref_dir: Path, data_dir: Path) -> types.SimpleNamespace:
    """Imports the reference's modules from ref_dir, with wandb stubbed and its CIFAR10 class
    replaced by LocalCIFAR10 on data_dir."""
    clash = [m for m in REFERENCE_MODULES if m in sys.modules]
    if clash:
        raise RuntimeError(f"modules named {clash} are already imported; run in a fresh process")
    sys.modules["wandb"] = types.ModuleType("wandb")  # train.py's logger: a stub
    sys.path.insert(0, str(ref_dir))
    ref = types.SimpleNamespace(
        **{m: importlib.import_module(m) for m in ("cfg", "datasets", "methods", "train")}
    )
    cifar = importlib.import_module("datasets.cifar10")
    for module in (ref.cfg, ref.datasets, ref.methods, ref.train, cifar):
        if not Path(module.__file__).resolve().is_relative_to(ref_dir.resolve()):
            raise RuntimeError(f"{module.__name__} was imported from {module.__file__}")
    cifar.C10 = functools.partial(LocalCIFAR10, str(data_dir))
    return ref


@contextmanager
def cpu_cuda_calls(device: torch.device) -> Iterator[None]:
    """On the CPU, `Tensor.cuda` (the reference's forward moves each view with it) returns the
    tensor; on CUDA nothing changes."""
    if device.type == "cuda":
        yield
        return
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda


def reference_steps(cfg, ds, model, optimizer, scheduler) -> Iterator[float]:
    """train.py's training loop, one yield per optimiser step, epochs without end; each yield
    gives the seconds this step waited for its batch (a new epoch's worker start included)."""
    lr_warmup = 0 if cfg.lr_warmup else 500
    for ep in itertools.count():
        iters = len(ds.train)
        t = time.perf_counter()
        batches = iter(ds.train)
        for n_iter in range(iters):
            samples, _ = next(batches)
            wait = time.perf_counter() - t
            if lr_warmup < 500:
                for pg in optimizer.param_groups:
                    pg["lr"] = cfg.lr * (lr_warmup + 1) / 500
                lr_warmup += 1
            optimizer.zero_grad()
            loss = model(samples)
            loss.backward()
            optimizer.step()
            loss.item()
            model.step(ep / cfg.epoch)
            if cfg.lr_step == "cos" and lr_warmup >= 500:
                scheduler.step(ep + n_iter / iters)
            yield wait
            t = time.perf_counter()
        if cfg.lr_step == "step":
            scheduler.step()


def reference_cfg(ref: types.SimpleNamespace, setting: str, args: argparse.Namespace):
    """The reference's own config for a setting: its get_cfg on the README's arguments."""
    argv = ["--dataset", "cifar10", "--epoch", "1000", *SETTINGS[setting]]
    if args.bs is not None:
        argv += ["--bs", str(args.bs)]
    if args.num_workers is not None:
        argv += ["--num_workers", str(args.num_workers)]
    saved, sys.argv = sys.argv, ["train.py", *argv]
    try:
        return ref.cfg.get_cfg()
    finally:
        sys.argv = saved


def measure(ref: types.SimpleNamespace, setting: str, args: argparse.Namespace) -> dict:
    """Builds the reference's model, data and optimiser for a setting and times its steps."""
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    cfg = reference_cfg(ref, setting, args)
    torch.manual_seed(0)
    ds = ref.datasets.get_ds(cfg.dataset)(cfg.bs, cfg, cfg.num_workers)
    model = ref.methods.get_method(cfg.method)(cfg).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.adam_l2)
    scheduler = ref.train.get_scheduler(optimizer, cfg)
    torch.backends.cudnn.benchmark = True
    with cpu_cuda_calls(device):
        steps = reference_steps(cfg, ds, model, optimizer, scheduler)
        for _ in range(args.warmup):
            next(steps)
        sync()
        start, waited, timed = time.perf_counter(), 0.0, 0
        for wait in steps:
            waited, timed = waited + wait, timed + 1
            if timed == args.steps or time.perf_counter() - start > args.max_s:
                break
        sync()
        elapsed = time.perf_counter() - start
        steps.close()  # ends the epoch's loader and its workers
    step_s = elapsed / timed
    return {
        "setting": setting,
        "bs": cfg.bs,
        "views": cfg.num_samples,
        "workers": cfg.num_workers,
        "steps": timed,
        "step_s": step_s,
        "s_per_epoch": step_s * FULL_EPOCH / cfg.bs,
        "wait": waited / elapsed,
    }


def row(r: dict) -> list:
    return [
        r["setting"],
        r["bs"],
        r["views"],
        r["steps"],
        f"{r['step_s']:.4f}",
        f"{r['bs'] / r['step_s']:,.0f}",
        f"{r['bs'] * r['views'] / r['step_s']:,.0f}",
        f"{r['s_per_epoch']:.2f}",
        f"{100 * r['wait']:.0f}%",
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1],
        epilog="Without a checkout at --ref_dir: " + HOW_TO_GET.format(d="REF_DIR"),
    )
    parser.add_argument(
        "--ref_dir", default="gpu_ref/self-supervised", help="a plain checkout of the reference"
    )
    parser.add_argument(
        "--data_dir", default="data", help="the folder holding cifar-10-batches-py/"
    )
    parser.add_argument(
        "--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a dry run only"
    )
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=300, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    parser.add_argument(
        "--max_s", type=float, default=40.0, help="stop a setting's timing after this many s"
    )
    parser.add_argument(
        "--bs", type=int, default=None, help=f"batch for every setting (a multiple of {W_SIZE})"
    )
    parser.add_argument(
        "--num_workers", type=int, default=None, help="loader workers (reference: CPU count)"
    )
    parser.add_argument("--no-record", action="store_true", help="print, do not append")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be at least 1")
    if args.warmup < 0:
        parser.error(f"--warmup {args.warmup}: must be 0 or more")
    if not args.max_s > 0:
        parser.error(f"--max_s {args.max_s}: must be positive")
    if args.bs is not None and (args.bs < W_SIZE or args.bs % W_SIZE):
        parser.error(f"--bs {args.bs}: must be a positive multiple of w_size {W_SIZE}")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num_workers {args.num_workers}: must be 0 or more")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (--device cpu for a dry run)")
    ref_dir = Path(args.ref_dir)
    missing = [f for f in REFERENCE_FILES if not (ref_dir / f).is_file()]
    if missing:
        parser.error(
            f"--ref_dir {ref_dir}: no checkout of htdt/self-supervised (no {missing[0]}); "
            + HOW_TO_GET.format(d=shlex.quote(str(ref_dir)))
        )
    batches = Path(args.data_dir) / "cifar-10-batches-py"
    if not (batches / "data_batch_1").is_file():
        parser.error(
            f"--data_dir {args.data_dir}: no {batches}/data_batch_1; write it with "
            f"python shared/datasets/cifar10-jpeg/to_batches.py {shlex.quote(args.data_dir)}"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    ref = load_reference(Path(args.ref_dir), Path(args.data_dir))
    rows = []
    for setting in args.settings:
        r = measure(ref, setting, args)
        rows.append(row(r))
        print(markdown_table(HEADER, rows[-1:]), flush=True)
    body = (
        f"htdt/self-supervised (its train.py step; float32; PIL augmentation in {r['workers']} "
        f"DataLoader workers), ResNet-18, CIFAR-10 (JPEG copy), {args.device}, "
        f"timed after {args.warmup} untimed steps, for --steps {args.steps} steps or --max_s "
        f"{args.max_s:g} s. The speed-up of ours is this s per 50k epoch over bench_train's from "
        "the same session.\n\n" + markdown_table(HEADER, rows)
    )
    command = "python -m benchmarks.bench_reference " + shlex.join(argv)
    title = "Reference code (htdt/self-supervised) throughput"
    if args.no_record:
        print(body)
    else:
        append_results(title, torch.device(args.device), body, command)


if __name__ == "__main__":
    main()
