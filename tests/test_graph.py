"""The CUDA-graph step's fallback after a failed capture, proven on the CPU with a fake capture
that fails as torch 2.11's does: the body's error, then "operation failed due to a previous
error during capture" from the capture's end, and every generator the capture held left
"capturing" (pytorch#171263) until its state object is replaced. What the fakes cannot show
(that clone_state + graphsafe_set_state clears the real flag on torch 2.11) is the first
stage of benchmarks/gpu_check.sh (benchmarks/capture_check.py)."""

import contextlib

import pytest
import torch

from wsl_ray.config import Config
from wsl_ray.data import Augment
from wsl_ray.methods import get_method
from wsl_ray.training import graph
from wsl_ray.training.graph import WARMUP_STEPS, TrainStep, first_cause
from wsl_ray.training.optim import build_optimizer

CFG = Config(arch="resnet18_w8", bs=16, emb=8, w_size=8, head_size=16)
BODY_ERROR = "CUDA error: operation not permitted when stream is capturing"
END_ERROR = "CUDA error: operation failed due to a previous error during capture"


class StuckGenerator(torch.Generator):
    """A CPU generator with torch 2.11's CUDA capture flag: a capture sets `capturing`, a
    failed one leaves it set, and only a fresh state object (`clone_state`, then
    `graphsafe_set_state`) clears it; with `clone_keeps` the copy keeps it (a torch on which
    the restore cannot work)."""

    capturing = False
    clone_keeps = False

    def clone_state(self) -> "StuckGenerator":
        copy = StuckGenerator()
        copy.set_state(self.get_state())
        copy.capturing = self.capturing and self.clone_keeps
        return copy

    def graphsafe_set_state(self, other: "StuckGenerator") -> None:
        self.set_state(other.get_state())
        self.capturing = other.capturing


class FakeGraph:
    def __init__(self):
        self.was_reset = False

    def register_generator_state(self, generator: torch.Generator) -> None:
        pass

    def reset(self) -> None:
        self.was_reset = True

    def replay(self) -> None:
        raise AssertionError("a failed capture left a graph to replay")


def draw_once(generator: StuckGenerator) -> None:
    """As a CUDA draw on torch 2.11: refused while the generator's state is capturing."""
    if generator.capturing:
        raise RuntimeError("Offset increment outside graph capture encountered unexpectedly.")


def steps(monkeypatch, fail: bool, clone_keeps: bool = False, strict: bool = False):
    """WARMUP_STEPS + 2 steps of a tiny W-MSE from the same start: eager throughout (not
    `fail`), or asked to capture with a capture that fails (the augmentation draws, then
    raises while its generator is capturing). Returns the losses, the step, the held
    generators (the augmentation's and a stand-in for the device's default one), their
    states before the capture and the graphs made."""
    aug_gen, default_gen = StuckGenerator(), StuckGenerator()
    aug_gen.manual_seed(1)
    default_gen.manual_seed(2)
    for g in (aug_gen, default_gen):
        g.clone_keeps = clone_keeps
    held, before, graphs = [aug_gen, default_gen], [], []

    @contextlib.contextmanager
    def failing_capture(_graph):
        before.extend(g.get_state() for g in held)
        for g in held:  # the capture marks them, and moves their states (the test must see
            g.capturing = True  # the restore put back the states from before it)
            torch.rand(1, generator=g)
        try:
            yield
        except RuntimeError:  # as torch.cuda.graph's exit: the body's error is the context
            raise RuntimeError(END_ERROR)  # noqa: B904 (torch chains it implicitly too)

    monkeypatch.setattr(graph, "capturing_into", failing_capture)
    monkeypatch.setattr(graph, "held_generators", lambda generators, device: held)
    monkeypatch.setattr(graph, "draw_once", draw_once)
    monkeypatch.setattr(graph, "on_side_stream", lambda fn: fn())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: graphs.append(FakeGraph()) or graphs[-1])

    torch.manual_seed(0)
    model = get_method("w_mse")(CFG, 16)
    optimizer = build_optimizer("adam", model.parameters(), 1e-3, 1e-6, graph_ready=True)
    augment = Augment.from_config(CFG, 16, (0.5,) * 3, (0.25,) * 3, generator=aug_gen)

    def augment_or_fail(x, sizes):
        views = augment(x, sizes)
        if aug_gen.capturing:
            raise RuntimeError(BODY_ERROR)
        return views

    eager_because = None if fail else "--cuda_graph off"
    step = TrainStep(model, model, optimizer, augment_or_fail, [], eager_because, strict)
    data = torch.Generator().manual_seed(3)
    losses = []
    torch.manual_seed(4)  # the whitening's sub-batches
    for n in range(WARMUP_STEPS + 2):
        x = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=data)
        losses.append(step(x, torch.full((16, 2), 16), n / 10).item())
    return losses, step, held, before, graphs


def test_a_failed_capture_restores_the_generators_and_steps_on_eagerly(monkeypatch, capsys):
    """The capture fails at step WARMUP_STEPS + 1: the graph is reset, both held generators
    are back at their states from before the capture and no longer capturing, the step is
    redone eagerly and the run goes on eagerly, bitwise as a run that never tried; the note
    names the body's error, not only the capture's end."""
    eager_losses = steps(monkeypatch, fail=False)[0]
    losses, step, held, before, graphs = steps(monkeypatch, fail=True)
    assert losses == eager_losses
    assert len(graphs) == 1 and graphs[0].was_reset
    assert not any(g.capturing for g in held)
    assert step.eager_because == f"the capture failed: RuntimeError: {BODY_ERROR}"
    out = capsys.readouterr().out
    assert BODY_ERROR in out and END_ERROR in out, out
    # the redo and the last step drew from the restored states: the augmentation's moved on,
    # the default one (nothing draws from it here) is where it was before the capture
    assert torch.equal(held[1].get_state(), before[1])
    assert not torch.equal(held[0].get_state(), before[0])


def test_auto_stops_with_the_cause_where_the_generators_stay_capturing(monkeypatch):
    """Where a fresh state object keeps the capture flag (no restore possible), `auto` stops:
    the error says --cuda_graph off and chains the capture's error, itself caused by the
    body's."""
    with pytest.raises(RuntimeError, match="rerun with --cuda_graph off") as stop:
        steps(monkeypatch, fail=True, clone_keeps=True)
    assert "Offset increment outside graph capture" in str(stop.value)
    assert str(stop.value.__cause__) == END_ERROR
    assert str(first_cause(stop.value)) == BODY_ERROR


def test_strict_raises_the_capture_error(monkeypatch):
    with pytest.raises(RuntimeError, match=END_ERROR) as failed:
        steps(monkeypatch, fail=True, strict=True)
    assert str(failed.value.__context__) == BODY_ERROR
