"""The training step, and the same step captured once as a CUDA graph and replayed.

A step launches about a thousand kernels (BENCHMARKS.md, "Kernel ops per training step"); a
replayed CUDA graph launches them all in one call. What a graph needs of the step: no host
read of a device value, no allocation that changes between steps, and every value that
changes between steps in a tensor updated in place: the batch (copied into static buffers),
the lr (a tensor in a capturable fused Adam, `optim.set_graph_ready`), BYOL's and INTL's EMA
weight (`BaseMethod.schedule`), the whitening's failure counts (updated in place), and the
random generators (registered with the graph, so every replay draws new numbers and their
states checkpoint as usual). Host-side switches (W-MSE's covariance term) are the method's
`graph_key`: the step is captured again when they change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from ..config import Config
from ..data import Augment
from ..methods import BaseMethod

# Eager steps before the capture, on a side stream: they create the optimiser's state, the
# whitening counters and the EMA weight, and let cuDNN pick its kernels.
WARMUP_STEPS = 3


def step_on_device(
    model: BaseMethod,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    augment: Augment,
    x: torch.Tensor,
    sizes: torch.Tensor,
) -> torch.Tensor:
    """The device work of one optimiser step on uint8 images x [b, C, H, W] (`sizes` [b, 2]:
    each image's own size): its views, the loss under bf16 autocast on CUDA (no weight-cast
    cache, which a graph cannot keep), backward, the optimiser's step and the method's own
    `update` (BYOL's EMA). `net` is `model` as called for the loss (DDP-wrapped on several
    workers). Returns the detached loss, without reading it on the host."""
    cuda = x.device.type == "cuda"
    views = augment(x, sizes)  # crops from each whole image (ImageNet: on a canvas)
    if cuda:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cuda, cache_enabled=False):
        loss = net(views)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.update()
    return loss.detach()


def graph_fallback(
    cfg: Config, model: BaseMethod, device: torch.device, workers: int
) -> str | None:
    """Why a run's step stays eager on `device` (None: it is captured as a CUDA graph)."""
    if device.type != "cuda":
        return "not on CUDA"
    if cfg.cuda_graph == "off":
        return "--cuda_graph off"
    if workers > 1:
        return "several workers (DDP's all-reduce inside a captured step is untested)"
    if cfg.optimizer != "adam":
        return f"--optimizer {cfg.optimizer} (only the fused Adam is capturable here)"
    if cfg.compile:
        return "--compile (the compiled encoder is not captured)"
    return model.graph_blocker()


class TrainStep:
    """`step(x, sizes, progress)`: one training step (the method's host-side `schedule`, then
    `step_on_device`), eager or, where `eager_because` is None (CUDA only), replayed from a
    CUDA graph.

    With capture, the first WARMUP_STEPS calls run eagerly on a side stream; the next one
    captures the step on static copies of the batch, with `generators` (the CUDA generators
    the step draws from) registered with the graph, and replays it; later calls copy their
    batch into the static buffers and replay, capturing again when `model.graph_key()`
    changes. The returned loss is then the graph's output tensor: read or add it before the
    next call. The optimiser must be graph-ready (`optim.set_graph_ready`).

    A wrapped `net` (DDP) is never captured. A capture that raises is an error with `strict`;
    else the rest of the run steps eagerly (`_give_up_capture`) and `eager_because` says
    why. `eager_because` is None exactly while the step runs as a graph.
    """

    def __init__(
        self,
        model: BaseMethod,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        augment: Augment,
        generators: list[torch.Generator] = (),
        eager_because: str | None = "not asked to capture",
        strict: bool = False,
    ):
        self.model, self.net, self.optimizer, self.augment = model, net, optimizer, augment
        self.generators = [g for g in generators if g.device.type == "cuda"]
        if eager_because is None and net is not model:
            eager_because = (
                "the model is wrapped for its workers (DDP): only a bare model is captured"
            )
        self.eager_because, self.strict = eager_because, strict
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple | None = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.loss: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sizes: torch.Tensor, progress: float) -> torch.Tensor:
        self.model.schedule(progress)
        if self.eager_because is not None:
            return self._eager(x, sizes)
        if self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            return on_side_stream(lambda: self._eager(x, sizes))
        if self.static is None:
            self.static = (x.clone(), sizes.to(x.device).clone())
        self.static[0].copy_(x, non_blocking=True)
        self.static[1].copy_(sizes, non_blocking=True)
        if self.graph is None or self.key != self.model.graph_key():
            self.graph = self.loss = None  # frees the previous graph's memory first
            graph = torch.cuda.CUDAGraph()
            held = held_generators(self.generators, x.device)
            states = [g.get_state() for g in held]  # before the capture touches them
            try:
                self._capture(graph)
            except RuntimeError as err:
                if self.strict:
                    raise
                return self._give_up_capture(err, graph, held, states, x, sizes)
        self.graph.replay()
        return self.loss

    def eager(self, x: torch.Tensor, sizes: torch.Tensor, progress: float) -> torch.Tensor:
        """One step run eagerly whatever `capture`: a step redone by `deferred.DeferredCheck`
        (replays afterwards go on from the state it leaves, all of it updated in place)."""
        self.model.schedule(progress)
        return self._eager(x, sizes)

    def _give_up_capture(
        self,
        err: RuntimeError,
        graph: torch.cuda.CUDAGraph,
        held: list[torch.Generator],
        states: list[torch.Tensor],
        x: torch.Tensor,
        sizes: torch.Tensor,
    ) -> torch.Tensor:
        """After a failed capture (--cuda_graph auto), the rest of the run steps eagerly: a
        capture records kernels without running them, so this step runs again, eager, from
        the generators' states before the capture (`restore_generators`). Prints the error
        that broke the capture (torch raises "operation failed due to a previous error
        during capture" at its end, the real cause as its __context__). Where the graph or
        the generators cannot be put back, stops with that error chained."""
        cause = first_cause(err)
        told = one_line(cause) + (f" (then: {one_line(err)})" if cause is not err else "")
        print(f"note: the step could not be captured as a CUDA graph: {told}")
        try:
            graph.reset()
            restore_generators(held, states)
        except RuntimeError as failed:
            raise RuntimeError(
                f"the CUDA-graph capture of the step failed ({one_line(cause)}), and the "
                f"random generators it held could not be restored for eager steps "
                f"({one_line(failed)}); rerun with --cuda_graph off"
            ) from err
        print("note: generators restored; the run steps eagerly from now (--cuda_graph off)")
        self.eager_because = f"the capture failed: {one_line(cause)}"
        self.graph, self.loss, self.static = None, None, None
        return self._eager(x, sizes)

    def _eager(self, x: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        return step_on_device(self.model, self.net, self.optimizer, self.augment, x, sizes)

    def _capture(self, graph: torch.cuda.CUDAGraph) -> None:
        for generator in self.generators:
            graph.register_generator_state(generator)
        self.optimizer.zero_grad(set_to_none=True)  # gradients come from the graph's pool
        with capturing_into(graph):
            self.loss = self._eager(*self.static)
        self.graph, self.key = graph, self.model.graph_key()


@contextlib.contextmanager
def capturing_into(graph: torch.cuda.CUDAGraph) -> Iterator[None]:
    """`torch.cuda.graph(graph)` in thread-local error mode (a DataLoader's pin-memory thread
    may call CUDA during the capture; the default global mode would fail the capture for
    it), inside a stream context that makes the current stream current again even when the
    capture raises (torch.cuda.graph's exit leaves its capture stream current then)."""
    with (
        torch.cuda.stream(torch.cuda.current_stream()),
        torch.cuda.graph(graph, capture_error_mode="thread_local"),
    ):
        yield


def held_generators(generators: list[torch.Generator], device: torch.device) -> list:
    """The generators a capture on `device` holds: the step's own and the device's default
    one (every graph registers it)."""
    return [*(g for g in generators if g.device == device), default_generator(device)]


def default_generator(device: torch.device) -> torch.Generator:
    """The global generator of `device` (the draws that name no generator; the whitening's
    without --whiten_global)."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index]
    return torch.default_generator


def restore_generators(generators: list[torch.Generator], states: list[torch.Tensor]) -> None:
    """After a failed capture, each generator with a fresh copy of its state object
    (`clone_state`), set to `states` (its `get_state()` before the capture), and shown to
    draw eagerly. torch 2.11 leaves the state object of a generator a capture held marked
    "capturing" when the capture raised (pytorch#171263, fixed after 2.11): its next eager
    draw fails with "Offset increment outside graph capture encountered unexpectedly"; a
    copy starts outside any capture. Raises RuntimeError where a draw still fails."""
    for generator, state in zip(generators, states, strict=True):
        generator.graphsafe_set_state(generator.clone_state())
        generator.set_state(state)
        draw_once(generator)
        generator.set_state(state)  # the draw above never happened, for the step's draws


def draw_once(generator: torch.Generator) -> None:
    """One random number from `generator` on its device (raises where it cannot draw)."""
    torch.empty(1, device=generator.device).uniform_(generator=generator)


def first_cause(err: BaseException) -> BaseException:
    """The first error of `err`'s chain (its __cause__ or __context__, followed back)."""
    while (earlier := err.__cause__ or err.__context__) is not None:
        err = earlier
    return err


def one_line(err: BaseException) -> str:
    """`err`'s type and the first line of its message."""
    message = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def on_side_stream(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """fn() on a fresh CUDA stream that waits for the current one and is waited for by it
    (how warm-up before a capture must run)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = fn()
    torch.cuda.current_stream().wait_stream(stream)
    return out
