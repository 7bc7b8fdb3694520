"""The CUDA path itself: skipped without a GPU. `benchmarks/gpu_check.sh` runs the tests
marked `graph` first, with -x (each proves that its step was really captured: strict
capture, a graph asserted), then the rest."""

import copy
import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers import Crash, CrashingReporter, tiny_config

from benchmarks import capture_check
from wsl_ray.config import METHODS, Config
from wsl_ray.data import Augment, load_dataset
from wsl_ray.methods import base, get_method
from wsl_ray.training.checkpoint import read_checkpoint
from wsl_ray.training.device import HostScalar, place_data, resolve_device
from wsl_ray.training.evaluate import fit_linear
from wsl_ray.training.graph import WARMUP_STEPS, TrainStep
from wsl_ray.training.loop import WorkerContext, train
from wsl_ray.training.optim import build_optimizer, set_lr

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = dict(
    dataset="shapes",
    arch="resnet18_w16",
    subset=1024,
    bs=128,
    emb=32,
    w_size=64,
    head_size=128,
    epoch=1,
    eval_every=1,
    lr_warmup=False,
)
METHOD_SETTINGS = {"cw_rgp": dict(emb=256, w_size=64, groups=2)}


@pytest.fixture(scope="module")
def data():
    return load_dataset("shapes")


def graph_states(out: Path) -> list[tuple[bool, str | None]]:
    """Per epoch of the run in `out` (its metrics.jsonl): whether its step ran as a CUDA
    graph, and if not, why."""
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [(m["cuda_graph"], m.get("eager_because")) for m in map(json.loads, lines)]


def blocker(method: str) -> str | None:
    """Why `method`'s step cannot be one CUDA graph (None: it must be captured)."""
    cfg = Config(**SMALL | METHOD_SETTINGS.get(method, {}), method=method)
    return get_method(method)(cfg, 32).graph_blocker()


@pytest.mark.graph
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_graph_ready_method_is_captured_and_trains_on_cuda(tmp_path, data, method):
    """--cuda_graph on (a failed capture is an error, not an eager run), and the epoch's
    metrics say the step ran as a graph. CW-RGP's step takes its deferred check."""
    if (why := blocker(method)) is not None:
        pytest.skip(f"not graph-ready: {why}")
    cfg = Config(
        **SMALL | METHOD_SETTINGS.get(method, {}),
        method=method,
        cuda_graph="on",
        device="cuda",
        out=str(tmp_path),
    )
    summary = train(cfg, data=dataclasses.replace(data), progress=False)
    assert math.isfinite(summary["loss"])
    assert all(0 <= summary[k] <= 1 for k in ("acc", "acc_5", "acc_knn"))
    assert graph_states(tmp_path) == [(True, None)] * cfg.epoch


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_and_evaluates_on_cuda(tmp_path, data, method, compile):
    """Every method, eager (--cuda_graph off, or its blocker) and compiled (which is never
    captured): the metrics say why the step ran eagerly."""
    cfg = Config(
        **SMALL | METHOD_SETTINGS.get(method, {}),
        method=method,
        compile=compile,
        cuda_graph="auto" if compile else "off",
        device="cuda",
        out=str(tmp_path),
    )
    summary = train(cfg, data=dataclasses.replace(data), progress=False)
    assert math.isfinite(summary["loss"])
    assert all(0 <= summary[k] <= 1 for k in ("acc", "acc_5", "acc_knn"))
    ((graph, because),) = set(graph_states(tmp_path))
    assert not graph and ("--compile" if compile else "--cuda_graph off") in because


def test_ddp_wrapping_runs_under_plain_torch_distributed_nccl(tmp_path, data):
    """DDP with world size 1 under --cuda_graph auto: the wrapped step is never captured (only
    a bare model is), and the metrics say so."""
    device = resolve_device("cuda")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    torch.distributed.init_process_group("nccl", rank=0, world_size=1, device_id=device)
    try:
        context = WorkerContext(
            device,
            wrap_model=lambda m: torch.nn.parallel.DistributedDataParallel(
                m, device_ids=[device.index]
            ),
        )
        cfg = Config(**SMALL, out=str(tmp_path))
        summary = train(cfg, context=context, data=dataclasses.replace(data), progress=False)
    finally:
        torch.distributed.destroy_process_group()
    assert math.isfinite(summary["loss"])
    ((graph, because),) = set(graph_states(tmp_path))
    assert not graph and "wrapped" in because


def test_shared_roles_are_copied_to_the_gpu_once(data):
    copy = dataclasses.replace(data)
    place_data(copy, resolve_device("cuda"))
    assert copy.train_x.is_cuda and copy.train_x is copy.clf_x


def test_host_scalar_reaches_the_host_without_waiting():
    value = HostScalar(resolve_device("cuda"))
    value.push(torch.tensor(3.0, device=resolve_device("cuda")))
    torch.cuda.synchronize()
    assert value.latest() == 3.0


def test_augment_on_the_gpu_equals_the_cpu_for_the_same_parameters():
    x = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    cpu = Augment(32, (0.5,) * 3, (0.25,) * 3, blur_p=0.5)
    gpu = Augment(32, (0.5,) * 3, (0.25,) * 3, blur_p=0.5, device=resolve_device("cuda"))
    p = cpu.sample(8, 40, 40)
    p_gpu = type(p)(*(t.to(gpu.device) for t in dataclasses.astuple(p)))
    assert torch.allclose(gpu.apply(x.to(gpu.device), p_gpu).cpu(), cpu.apply(x, p), atol=1e-4)


def test_graph_replayed_probe_follows_the_reference_protocol():
    """fit_linear on the GPU (epochs after the first replayed from a CUDA graph) against
    torch.optim's Adam on the same device permutations."""
    device = resolve_device("cuda")
    gen = torch.Generator(device).manual_seed(0)
    train_f = torch.randn(400, 6, device=device, generator=gen)
    train_y = (train_f[:, 0] > 0).long()
    torch.manual_seed(3)
    clf = torch.nn.Linear(6, 2).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2, weight_decay=5e-6)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, (1e-6 / 1e-2) ** (1 / 20))
    perms = torch.Generator(device).manual_seed(7)
    for _ in range(20):
        for idx in torch.randperm(400, generator=perms, device=device).view(-1, 100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(clf(train_f[idx]), train_y[idx]).backward()
            opt.step()
        sched.step()
    expected = torch.cat([clf.weight, clf.bias[:, None]], dim=1).detach()
    torch.manual_seed(3)
    got = fit_linear(
        train_f,
        train_y,
        epochs=20,
        batch_size=100,
        generator=torch.Generator(device).manual_seed(7),
    )
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("method", ["w_mse", "byol", "simsiam"])
def test_one_encoder_call_on_all_views_equals_one_call_each_on_cuda(method, monkeypatch):
    """channels-last and bf16 autocast, as in training: the loss within bf16 noise and the
    running statistics within float32 rounding of the per-view calls."""
    device = resolve_device("cuda")
    cfg = Config(method=method, **{**SMALL, **METHOD_SETTINGS.get(method, {})})
    torch.manual_seed(0)
    one = get_method(method)(cfg, 32).to(device, memory_format=torch.channels_last)
    each = copy.deepcopy(one)
    views = [torch.randn(128, 3, 32, 32, device=device) + v for v in range(2)]
    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    losses = []
    for model, together in ((one, True), (each, False)):
        with monkeypatch.context() as patch:
            if not together:
                patch.setattr(base, "views_in_one_call", lambda module: False)
            torch.manual_seed(1)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                losses.append(model(views).item())
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)
    for (name, a), b in zip(one.named_buffers(), each.buffers(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-3), name
        else:
            assert torch.equal(a, b), name


@pytest.mark.graph
@pytest.mark.parametrize("method", ["w_mse", "byol"])
def test_replayed_steps_never_sync_and_follow_the_eager_steps(method):
    """The CUDA-graph step against the same step run eagerly, from the same weights on the
    same batches and augmentation draws (generators seeded alike): losses agree within bf16
    noise at every step, and the replays (after the warm-up and the capture) run under
    set_sync_debug_mode("error"), which raises on any host sync."""
    device = resolve_device("cuda")
    cfg = Config(**SMALL, method=method, device="cuda")
    batches = [
        (
            torch.randint(0, 256, (cfg.bs, 3, 32, 32), dtype=torch.uint8, device=device),
            torch.full((cfg.bs, 2), 32, device=device),
        )
        for _ in range(WARMUP_STEPS + 4)
    ]
    losses = {}
    for capture in (False, True):
        torch.manual_seed(0)
        model = get_method(method)(cfg, 32).to(device, memory_format=torch.channels_last)
        optimizer = build_optimizer("adam", model.parameters(), 1e-3, 1e-6, graph_ready=True)
        gen = torch.Generator(device).manual_seed(1)
        augment = Augment.from_config(cfg, 32, (0.5,) * 3, (0.25,) * 3, generator=gen)
        eager_because = None if capture else "the reference"
        step = TrainStep(model, model, optimizer, augment, [gen], eager_because, strict=capture)
        out = []
        for n, (x, sizes) in enumerate(batches):
            set_lr(optimizer, 1e-3 * (n + 1))
            replay = capture and n > WARMUP_STEPS  # the capture's own step may sync
            torch.cuda.set_sync_debug_mode("error" if replay else 0)
            try:
                out.append(step(x, sizes, n / len(batches)).clone())
            finally:
                torch.cuda.set_sync_debug_mode(0)
        losses[capture] = torch.stack(out).float().cpu()
        assert (step.graph is not None) == capture and step.eager_because == eager_because
    assert torch.allclose(losses[True], losses[False], rtol=2e-2), losses


@pytest.mark.graph
def test_a_graph_run_resumes_exactly_from_its_checkpoint(tmp_path):
    """A CUDA-graph run crashed after epoch 2 and resumed ends where the uninterrupted run
    ends: the same augmentation generator state (replays advance it as eager draws do, and
    it checkpoints), and losses within bf16 noise (GPU kernels are not bitwise
    deterministic)."""
    data = load_dataset("shapes", num_train=256, num_test=64)
    runs = {}
    for name in ("straight", "resumed"):
        cfg = tiny_config(tmp_path / name, device="cuda", cuda_graph="on")
        if name == "resumed":
            with pytest.raises(Crash):
                train(cfg, CrashingReporter(cfg.out, at_epoch=2), data=data, progress=False)
        runs[name] = train(cfg, resume_from=Path(cfg.out), data=data, progress=False)
    assert {s for n in runs for s in graph_states(tmp_path / n)} == {(True, None)}
    rng = {n: read_checkpoint(tmp_path / n)["rng"]["augment"] for n in runs}
    assert torch.equal(rng["straight"], rng["resumed"])
    assert runs["resumed"]["loss"] == pytest.approx(runs["straight"]["loss"], rel=2e-2)


@pytest.mark.graph
def test_cholesky_and_triangular_solve_replay_as_captured():
    """W-MSE's whitening (batched cholesky_ex and solve_triangular) captured, replayed under
    sync-debug "error" and equal to eager: `benchmarks/capture_check.py`."""
    capture_check.check_cholesky_capture(resolve_device("cuda"))


@pytest.mark.graph
def test_a_failed_capture_falls_back_to_eager_steps():
    """A capture broken by a host sync: torch's generators restored, the step redone and the
    next steps run eagerly (`benchmarks/capture_check.py`)."""
    capture_check.check_failed_capture_fallback(resolve_device("cuda"))
