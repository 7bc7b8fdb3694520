"""The GPU path, proven on the CPU: devices with an index, no pinning of device tensors,
equal DDP shards, sync-free steps (a fullgraph compile fails on any host sync or
data-dependent branch) and float32 whitening under bf16 autocast."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wsl_ray.config import METHODS, Config
from wsl_ray.data import Augment, iterate_batches
from wsl_ray.data.loader import to_device
from wsl_ray.methods import get_method, whitening
from wsl_ray.methods.byol import target_tau
from wsl_ray.methods.losses import byol_loss, contrastive_loss
from wsl_ray.methods.networks import Float32Linear, ViewBatchNorm2d, view_statistics
from wsl_ray.methods.whitening import cholesky_whiten
from wsl_ray.training.deferred import DeferredCheck, defers
from wsl_ray.training.device import HostScalar, OpCounter, resolve_device
from wsl_ray.training.evaluate import probe_step
from wsl_ray.training.graph import TrainStep
from wsl_ray.training.optim import build_optimizer, set_lr


def compiled(fn):
    """fn compiled as one graph on the CPU: a host sync or a data-dependent branch raises."""
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def test_cuda_devices_always_carry_an_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device(torch.device("cuda")) == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_loader_pins_only_cpu_tensors_bound_for_a_gpu(monkeypatch):
    pinned = []

    def fake_pin(self):
        pinned.append(self.device.type)
        return self

    moved = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, device, **kw: moved.append(device) or self)
    meta = torch.empty(4, 3, device="meta")
    assert to_device(meta, torch.device("meta")) is meta  # already there: untouched
    to_device(meta, torch.device("cuda:0"))  # not on the CPU: moved, never pinned
    to_device(torch.zeros(4), torch.device("cuda:0"))  # CPU -> GPU: pinned first
    to_device(torch.zeros(4), torch.device("meta"))  # CPU -> not a GPU: plain copy
    assert pinned == ["cpu"]
    assert moved == [torch.device("cuda:0")] * 2 + [torch.device("meta")]


@pytest.mark.parametrize("n", [511, 512, 5119])
def test_every_rank_gets_the_same_number_of_disjoint_batches(n):
    x, y = torch.arange(n)[:, None, None, None], torch.arange(n)
    shards = [
        [
            b
            for _, b in iterate_batches(
                x, y, 32, generator=torch.Generator().manual_seed(0), rank=r, world_size=2
            )
        ]
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == n // 2 // 32
    seen = torch.cat([torch.cat(s) for s in shards])
    assert len(seen.unique()) == len(seen)


def test_host_scalar_reports_the_latest_value_on_cpu():
    value = HostScalar(torch.device("cpu"))
    assert value.latest() is None
    value.push(torch.tensor(2.5))
    value.push(torch.tensor(1.5))
    assert value.latest() == 1.5


SIZES = torch.tensor([[20, 20], [12, 19], [20, 5], [3, 3], [17, 20], [9, 14]])


@pytest.mark.parametrize("sizes", [None, SIZES], ids=["canvas", "per_image"])
def test_augment_apply_is_one_graph(sizes):
    gen = torch.Generator().manual_seed(0)
    aug = Augment(16, (0.5,) * 3, (0.25,) * 3, blur_p=0.5, generator=gen)
    x = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    params = aug.sample(6, 20, 20, sizes)
    assert torch.allclose(compiled(aug.apply)(x, params), aug.apply(x, params), atol=1e-5)


def test_parameters_for_per_image_sizes_are_made_in_one_graph():
    """Per-image areas, tries and central-crop fallbacks, per-view coins and the jitter order,
    from one draw: no sync, no data-dependent shape."""
    aug = Augment(16, (0.5,) * 3, (0.25,) * 3, crop_ratio=(0.5, 0.9), blur_p=(0.5, 1.0))
    u, size = aug.draw(6), SIZES.float()
    eager, graph = aug.params(u, size), compiled(aug.params)(u, size)
    assert all(torch.equal(getattr(graph, f), getattr(eager, f)) for f in vars(eager))


def test_all_views_pass_a_view_batch_norm_as_one_graph(gen):
    layers = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), ViewBatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten()
    )
    views = torch.randn(2, 8, 3, 6, 6, generator=gen)
    with view_statistics(layers, 2):
        together = compiled(layers)(views.flatten(0, 1))
    each = torch.cat([layers(v) for v in views])
    assert torch.allclose(together, each, atol=1e-5)


def test_byol_trains_through_the_compiled_encoder():
    model = get_method("byol")(Config(method="byol", arch="resnet18_w8", emb=8, head_size=16), 16)
    calls = []
    object.__setattr__(model, "encode", lambda x: calls.append(len(x)) or model.model(x))
    model([torch.randn(4, 3, 16, 16)] * 3)
    assert calls == [12]  # the online network's one call on all three views


# The steps that still wait for the GPU, and why: zero-ICL's whitening is an eigh (cuSOLVER
# syncs). Exactly these methods' steps stay eager on CUDA (`graph_blocker`); every other step
# is graph-ready (CW-RGP's ZCA with its Newton-Schulz check deferred, `training.deferred`).
KNOWN_SYNCS = {"zero_icl": {"aten._linalg_eigh"}}


def graph_ready_step(cfg: Config, model, generator: torch.Generator | None = None) -> TrainStep:
    """The training step a CUDA graph captures, run eagerly: a graph-ready fused Adam
    (tensor lr, capturable), the method's schedule and update."""
    optimizer = build_optimizer("adam", model.parameters(), 1e-3, 1e-6, graph_ready=True)
    augment = Augment.from_config(cfg, 16, (0.5,) * 3, (0.25,) * 3, generator=generator)
    return TrainStep(model, model, optimizer, augment)


@pytest.mark.parametrize("method", METHODS)
def test_a_training_step_never_waits_for_the_gpu(method, monkeypatch):
    """Three graph-ready training steps as the loop runs them (augmentation, forward,
    backward, capturable fused Adam, the method's update; the lr set in place between them;
    a ZCA method's Newton-Schulz check deferred, the first step's flag read before the
    third) under bf16 autocast dispatch no op that syncs on CUDA, but the known ones of the
    methods that stay eager, and no tensor made from host data (a host-to-device copy,
    which a capture refuses). The ZCA takes its CUDA path (Newton-Schulz) here too."""
    monkeypatch.setattr(whitening, "NS_DEVICES", ("cpu", "cuda"))
    cfg = Config(method=method, arch="resnet18_w8", bs=32, emb=64, w_size=16, head_size=32)
    model = get_method(method)(cfg, 16)
    step = graph_ready_step(cfg, model)
    check = DeferredCheck(step, [], defers(model, torch.device("cpu"), 1))
    x, sizes = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8), torch.full((32, 2), 16)
    with torch.autocast("cpu", dtype=torch.bfloat16), OpCounter() as counter:
        for n in range(3):
            check(x, sizes, 0.5, 1e-3 * (n + 1))
    assert set(counter.syncs) == KNOWN_SYNCS.get(method, set())
    assert check.deferred == model.uses_zca() and check.steps == 3 - 2 * check.deferred
    assert (model.graph_blocker() is None) == (method not in KNOWN_SYNCS)
    assert counter.host_tensors == 0


def old_loop(model, optimizer, augment, batches, lrs, progresses) -> None:
    """The training loop before the graph-ready step, as a reference: a float lr set per
    step, the EMA weight a Python float, W-MSE's covariance switch flipped after a step."""
    for (x, sizes), lr, progress in zip(batches, lrs, progresses, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(augment(x, sizes))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if hasattr(model, "model_t"):
            online = [*model.model.parameters(), *model.head.parameters()]
            target = [*model.model_t.parameters(), *model.head_t.parameters()]
            torch._foreach_lerp_(target, online, 1 - target_tau(progress, model.cfg.byol_tau))
        if (
            getattr(model, "cov_on", False)
            and round(progress * model.cfg.epoch) >= model.cfg.cov_stop
        ):
            model.cov_on = False


@pytest.mark.parametrize(
    "settings",
    [dict(method="w_mse", cov_w=0.5, cov_stop=1), dict(method="byol"), dict(method="contrastive")],
    ids=["w_mse+cov", "byol", "contrastive"],
)
def test_graph_ready_steps_equal_the_old_loop_in_float64(settings):
    """Four float64 steps over two epochs (lr and progress change every step; W-MSE's
    covariance term switches off after epoch 1's first step): the graph-ready step's
    parameters and buffers equal the old loop's bitwise."""
    cfg = Config(arch="resnet18_w8", bs=16, emb=8, w_size=8, head_size=16, epoch=2, **settings)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(get_method(cfg.method)(cfg, 16).double())
    gen = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen),
            torch.full((16, 2), 16),
        )
        for _ in range(4)
    ]
    lrs, progresses = [1e-3, 2e-3, 3e-3, 1e-3], [0.0, 0.0, 0.5, 0.5]
    to64 = lambda augment: lambda x, s: [v.double() for v in augment(x, s)]  # noqa: E731
    augments = [
        Augment.from_config(
            cfg, 16, (0.5,) * 3, (0.25,) * 3, generator=torch.Generator().manual_seed(2)
        )
        for _ in range(2)
    ]
    start = {k: v.clone() for k, v in models[0].state_dict().items()}
    old = build_optimizer("adam", models[0].parameters(), 1.0, 1e-6, fused=True)
    torch.manual_seed(3)  # the whitening's sub-batches
    old_loop(models[0], old, to64(augments[0]), batches, lrs, progresses)
    step = graph_ready_step(cfg, models[1])
    step.augment = to64(augments[1])
    torch.manual_seed(3)
    for (x, sizes), lr, progress in zip(batches, lrs, progresses, strict=True):
        set_lr(step.optimizer, lr)
        step(x, sizes, progress)
    ours, theirs = models[1].state_dict(), models[0].state_dict()
    assert not torch.equal(theirs["head.0.weight"], start["head.0.weight"])  # it trained
    assert [k for k in theirs if not torch.equal(ours[k], theirs[k])] == []


def test_probe_step_is_one_graph(gen):
    x = torch.cat([torch.randn(32, 6, generator=gen), torch.ones(32, 1)], 1)
    y = torch.randint(0, 3, (32,), generator=gen)
    params = torch.randn(3, 7, generator=gen)
    eager, graph = (
        [
            params.clone(),
            torch.zeros(3, 7),
            torch.zeros(3, 7),
            torch.tensor(0.0),
            torch.tensor(1e-2),
        ]
        for _ in range(2)
    )
    step = compiled(probe_step)
    for _ in range(3):
        eager[3].add_(1), graph[3].add_(1)
        probe_step(*eager, x, y, 5e-6)
        step(*graph, x, y, 5e-6)
    assert not torch.allclose(eager[0], params)
    assert torch.allclose(eager[0], graph[0], atol=1e-6)


@pytest.mark.parametrize(
    "loss",
    [lambda v: contrastive_loss(list(v), tau=0.5), lambda v: byol_loss(v, v.flip(0))],
    ids=["contrastive", "byol"],
)
def test_method_losses_are_one_graph(gen, loss):
    views = torch.randn(2, 32, 8, generator=gen)
    assert torch.allclose(compiled(loss)(views), loss(views), atol=1e-5)


@pytest.mark.parametrize("condition", [1e1, 1e2, 1e3])
def test_head_output_and_whitening_stay_float32_under_bf16_autocast(gen, condition):
    """The same head input through the last Linear and the whitening, with and without bf16
    autocast, agrees to 1e-4; a plain (bf16) Linear is off by far more."""
    n, h, d = 256, 64, 16
    q1, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    q2, _ = torch.linalg.qr(torch.randn(h, h, generator=gen))
    scales = torch.logspace(0, 0.5 * torch.log10(torch.tensor(condition)).item(), d)
    weight = q1 @ torch.diag(scales) @ q2[:d]  # embeddings' covariance has this condition
    x = torch.randn(n, h, generator=gen)
    layers = {}
    for cls in (Float32Linear, torch.nn.Linear):
        layers[cls] = cls(h, d)
        layers[cls].weight.data.copy_(weight)
    exact = cholesky_whiten(layers[Float32Linear](x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = cholesky_whiten(layers[Float32Linear](x))
        plain = cholesky_whiten(layers[torch.nn.Linear](x))
    error = lambda w: ((w - exact).norm() / exact.norm()).item()  # noqa: E731
    assert ours.dtype == torch.float32 and error(ours) < 1e-4
    assert error(plain) > 1e-3  # the test can tell a bf16 head apart


def test_direct_run_and_benchmarks_import_without_ray_optuna_or_wandb():
    """The GPU machine has torch but no Ray, Optuna or wandb: these must still import."""
    code = (
        "import sys\n"
        "for name in ('ray', 'optuna', 'wandb'): sys.modules[name] = None\n"
        "import wsl_ray.train, wsl_ray.test, wsl_ray.training.loop, benchmarks.bench_train\n"
        "wsl_ray.train.build_parser().parse_args([])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_gpu_tests_collect_without_ray_optuna_or_wandb(tmp_path):
    """`pytest --collect-only` of the GPU machine's test files, in a Python that cannot import
    Ray, Optuna or wandb (a sitecustomize first on PYTHONPATH blocks them, as on the GPU
    image): conftest, helpers and both files collect; a module-level import of any of the
    three fails here with "ImportError while loading conftest"."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('ray', 'optuna', 'wandb'):\n    sys.modules[name] = None\n"
    )
    root = Path(__file__).resolve().parents[1]
    files = ["tests/test_gpu.py", "tests/test_device.py"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        capture_output=True,
        text=True,
        cwd=root,
        env=os.environ | {"PYTHONPATH": os.pathsep.join((str(blocker), str(root)))},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected = result.stdout.splitlines()
    assert all(any(line.startswith(f) for line in collected) for f in files), result.stdout
