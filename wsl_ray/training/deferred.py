"""The ZCA's Newton-Schulz check, read two steps late, so that the step never waits for the GPU.

On CUDA the ZCA whitening (CW-RGP's; `whitening.zca_matrix`) takes its matrix from a
Newton-Schulz iteration and must know whether every group converged (max |W S W - I| <=
NS_TOL). Read at once, that check is a host read inside the step: the host waits for the GPU
every step, and the step cannot be one CUDA graph. `DeferredCheck` launches each step with
the check deferred instead: the step ORs "a group did not converge" into a device flag and
uses the iteration's W regardless; after the step the flag is copied without blocking into
pinned host memory, behind a CUDA event. Step i's flag is read before step i + 2 is
launched: by then step i has ended, or ends while step i + 1 keeps the GPU busy (the host is
at most two steps ahead; the GPU never idles for the read). If step i failed, the run goes
back to the state saved before step i, redoes step i eagerly on the exact path for every
group (float64 eigh, which syncs: only here), redoes step i + 1 as it first ran (deferred,
captured) and goes on. A run's parameters are those of a run that took the exact path at
its failed steps from the start (tests/test_deferred.py: bitwise in float64).

Saved before each step, in one of two sets of buffers (one per step in flight) refilled in
place: the model's parameters and buffers and the optimiser's state (device-to-device
`torch._foreach_copy_`, one call per dtype), the states of the generators the step draws
from, and the method's host switches (`BaseMethod.host_attrs`); the batch, lr and progress
of the steps in flight are kept to redo them. A failure costs the restore, one exact step
and one step redone (BENCHMARKS.md, "The deferred Newton-Schulz check"); the epoch's metrics
count the failed steps (`whiten_ns_failures`). Unlike the per-call check, which took the
exact path only for the groups that failed, a failed step whitens every group exactly; on
CW-RGP's real matrices no group has failed (BENCHMARKS.md, "Newton-Schulz steps to a 1e-3
residual").

Only where needed (`defers`): a ZCA method on a device in NS_DEVICES, with one worker (DDP's
ranks could disagree about a redo, so several workers keep the per-call check and eager
steps). Elsewhere a step is launched and its loss counted at once, as before.
"""

from __future__ import annotations

import operator
from collections import deque
from dataclasses import dataclass

import torch

from ..methods import BaseMethod, whitening
from .graph import TrainStep, default_generator
from .optim import set_lr

# A step's flag is read before launching the step this many later.
LAG = 2


def defers(model: BaseMethod, device: torch.device, workers: int) -> bool:
    """Whether a run's steps take the deferred check (see the module's docstring)."""
    return model.uses_zca() and device.type in whitening.NS_DEVICES and workers == 1


@dataclass
class Inputs:
    """What launches one step again: its batch, lr and progress (epoch / epochs)."""

    x: torch.Tensor
    sizes: torch.Tensor
    progress: float
    lr: float


def by_kind(sources: list[torch.Tensor]) -> list[tuple[list, list]]:
    """`sources` grouped by (dtype, device), each group with fresh copies: (sources, copies)
    pairs that `torch._foreach_copy_` takes in one call each. Over a list that mixes them
    (float32 weights, BatchNorm's int64 `num_batches_tracked`) it would fall back to one
    copy per tensor, about 330 launches a step for ResNet-18 CW-RGP."""
    groups: dict[tuple[torch.dtype, torch.device], tuple[list, list]] = {}
    for t in sources:
        group = groups.setdefault((t.dtype, t.device), ([], []))
        group[0].append(t)
        group[1].append(t.clone())
    return list(groups.values())


class Saved:
    """The run's state before one step, in buffers reused from step to step, and the
    step's failure flag in host memory (pinned on CUDA, with the event of its copy)."""

    def __init__(self, cuda: bool):
        self.sources: list[torch.Tensor] = []
        self.groups: list[tuple[list, list]] = []  # `by_kind(sources)`
        self.stateless: list[torch.Tensor] = []  # parameters the optimiser has no state for
        self.rng: list[torch.Tensor] = []
        self.host: dict[str, object] = {}
        self.flag = torch.zeros((), dtype=torch.bool, pin_memory=cuda)
        self.event = torch.cuda.Event() if cuda else None

    @torch.no_grad()
    def save(self, model: BaseMethod, opt: torch.optim.Optimizer, gens: list[torch.Generator]):
        params = [p for group in opt.param_groups for p in group["params"]]
        sources = [*model.parameters(), *model.buffers()]
        sources += [v for p in params for v in opt.state.get(p, {}).values() if torch.is_tensor(v)]
        if len(sources) == len(self.sources) and all(map(operator.is_, sources, self.sources)):
            for group_sources, copies in self.groups:
                torch._foreach_copy_(copies, group_sources)
        else:  # the first save, or the optimiser made its state since the last one
            self.sources, self.groups = sources, by_kind(sources)
        self.stateless = [p for p in params if p not in opt.state]
        self.rng = [g.get_state() for g in gens]
        self.host = {name: getattr(model, name) for name in model.host_attrs}

    @torch.no_grad()
    def restore(self, model: BaseMethod, opt: torch.optim.Optimizer, gens: list[torch.Generator]):
        for group_sources, copies in self.groups:
            torch._foreach_copy_(group_sources, copies)
        for p in self.stateless:
            opt.state.pop(p, None)  # its first step makes the state again
        for generator, state in zip(gens, self.rng, strict=True):
            generator.set_state(state)
        for name, value in self.host.items():
            setattr(model, name, value)

    def failed(self) -> bool:
        """The step's flag, once its copy has arrived (read through numpy: host memory)."""
        if self.event is not None:
            self.event.synchronize()
        return bool(self.flag.numpy())


class DeferredCheck:
    """`check(x, sizes, progress, lr)` sets the lr and launches one step of `step`, with the
    Newton-Schulz check deferred when `deferred` (else the step counts at once);
    `finish()` confirms every step launched and returns the confirmed steps' summed loss
    (a device tensor) and failed steps since the last `finish`. `loss_sum` and `steps`:
    the confirmed steps' loss sum so far and their count. `generators`: those the step
    draws from; the device's global generator is added."""

    def __init__(self, step: TrainStep, generators: list[torch.Generator], deferred: bool):
        self.step, self.deferred = step, deferred
        device = next(step.model.parameters()).device
        self.generators = [*generators, default_generator(device)]
        self.free = [Saved(device.type == "cuda") for _ in range(LAG)] if deferred else []
        self.flag = whitening.ns_check.flag(device) if deferred else None  # made before any capture
        self.in_flight: deque[tuple[Inputs, Saved, torch.Tensor]] = deque()
        self.loss_sum, self.steps, self.failures = torch.zeros((), device=device), 0, 0

    def __call__(self, x: torch.Tensor, sizes: torch.Tensor, progress: float, lr: float) -> None:
        while len(self.in_flight) >= LAG:
            self._confirm(*self.in_flight.popleft())
        self._launch(Inputs(x, sizes, progress, lr))

    def finish(self) -> tuple[torch.Tensor, int]:
        while self.in_flight:
            self._confirm(*self.in_flight.popleft())
        done = self.loss_sum, self.failures
        self.loss_sum, self.steps, self.failures = torch.zeros_like(self.loss_sum), 0, 0
        return done

    def _count(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.steps += 1

    def _launch(self, inputs: Inputs) -> None:
        set_lr(self.step.optimizer, inputs.lr)
        if not self.deferred:
            return self._count(self.step(inputs.x, inputs.sizes, inputs.progress))
        saved = self.free.pop()
        saved.save(self.step.model, self.step.optimizer, self.generators)
        self.flag.zero_()
        with whitening.ns_check.using("deferred"):
            loss = self.step(inputs.x, inputs.sizes, inputs.progress).clone()  # a graph's
        saved.flag.copy_(self.flag, non_blocking=True)  # output is overwritten next replay
        if saved.event is not None:
            saved.event.record()
        self.in_flight.append((inputs, saved, loss))

    def _confirm(self, inputs: Inputs, saved: Saved, loss: torch.Tensor) -> None:
        if not saved.failed():
            self.free.append(saved)
            return self._count(loss)
        self.failures += 1
        saved.restore(self.step.model, self.step.optimizer, self.generators)
        later = list(self.in_flight)  # launched from the failed step's state: redone too
        self.in_flight.clear()
        self.free += [saved, *(s for _, s, _ in later)]
        set_lr(self.step.optimizer, inputs.lr)
        with whitening.ns_check.using("exact"):
            self._count(self.step.eager(inputs.x, inputs.sizes, inputs.progress))
        for again, _, _ in later:
            self._launch(again)
