"""Where tensors live: one resolved device (and the default GPUs per Ray worker), GPU-resident
data, and host reads that never wait.

A CUDA device is always `cuda:N` with its index: `torch.device("cuda") != torch.device("cuda:0")`,
so a bare `cuda` makes a tensor on cuda:0 look foreign and gets it copied (or pinned) again.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` -> cuda:N if a GPU is visible, else cpu; `cuda` -> cuda:<current device>."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def gpus_per_worker(given: float | None = None) -> float:
    """GPUs for each Ray worker or trial: `given` (a --gpus-per-... flag) when set, else 1
    where CUDA is available and 0 elsewhere."""
    if given is not None:
        return given
    return 1 if torch.cuda.is_available() else 0


def setup_device(device: torch.device) -> None:
    """Per-process settings for training on `device`: it becomes the current CUDA device,
    and cuDNN autotunes its convolutions (a run's input shapes never change). TF32 stays
    off: the whitening's covariance products must be true fp32."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True


def place_data(data, device: torch.device, gpu_share: float = 1.0) -> None:
    """Moves the dataset's image and label tensors to the GPU when they fit, in place.

    They fit when they take under a third of this process's share of the GPU: `gpu_share`
    of its total memory (a fractional-GPU trial holds a fraction), and of what is free now.
    Using the share, not only the free memory, keeps trials packed on one GPU from all
    deciding at the same moment that the whole GPU is theirs. Roles that hold the same
    tensor (train and clf images are usually one) are copied once and stay shared.
    """
    if device.type != "cuda":
        return
    tensors = {
        f.name: value
        for f in dataclasses.fields(data)
        if isinstance(value := getattr(data, f.name), torch.Tensor)
    }
    if not isinstance(getattr(data, "train_x", None), torch.Tensor):
        return  # images streamed from files stay where their loader puts them
    unique = {id(t): t for t in tensors.values()}
    need = sum(t.nbytes for t in unique.values())
    total = torch.cuda.get_device_properties(device).total_memory
    budget = min(torch.cuda.mem_get_info(device)[0], total * gpu_share) / 3
    if need >= budget:
        return
    moved = {key: t.to(device) for key, t in unique.items()}
    for name, t in tensors.items():
        setattr(data, name, moved[id(t)])


class HostScalar:
    """The latest value of a device scalar that has reached the host, without waiting.

    `push(t)` starts a non-blocking copy of the 0-dim tensor t into pinned memory (skipped
    while the previous copy is still in flight); `latest()` returns the newest value whose
    copy has finished, or None. On the CPU the copy is immediate. This is how the progress
    bar shows a running loss without draining the GPU's queue every few steps.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.buffer = torch.zeros((), pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.value: float | None = None
        self.pending = False

    def push(self, t: torch.Tensor) -> None:
        if self.cuda and self.pending and not self.event.query():
            return
        self._collect()
        self.buffer.copy_(t.detach(), non_blocking=self.cuda)
        if self.cuda:
            self.event.record()
        self.pending = True
        self._collect()

    def latest(self) -> float | None:
        self._collect()
        return self.value

    def _collect(self) -> None:
        if self.pending and (not self.cuda or self.event.query()):
            self.value, self.pending = self.buffer.item(), False


# aten ops that make the host wait for the GPU on CUDA: a value read on the host, an output
# whose size depends on the data, eigh (cuSOLVER syncs), Cholesky that raises on failure
# (its _ex form reports a flag instead)
SYNCING_OPS = frozenset(
    {
        "aten._local_scalar_dense",
        "aten.nonzero",
        "aten.masked_select",
        "aten.unique",
        "aten._unique2",
        "aten.is_nonzero",
        "aten.equal",
        "aten._linalg_eigh",
        "aten.linalg_cholesky",
        "aten.cholesky",
    }
)


# aten ops that launch no kernel besides the views: allocation and autograd bookkeeping
NO_KERNEL_OPS = frozenset({"aten.detach", "aten.empty", "aten.empty_strided", "aten.lift_fresh"})


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched in its block (`ops`), those of them that compute
    (`kernels`: not a view, an allocation or a detach; a CPU-side measure of what a step
    costs to launch on a GPU), and lists those that sync the host with the GPU on CUDA
    (`syncs`, from SYNCING_OPS), and counts the tensors made from host data (`host_tensors`:
    `torch.tensor(...)`, a host-to-device copy on CUDA, which a graph capture refuses)."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.kernels = 0
        self.syncs: list[str] = []
        self.host_tensors = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket._qualified_op_name.replace("::", ".")
        self.ops += 1
        self.kernels += not (func.is_view or name in NO_KERNEL_OPS)
        if name in SYNCING_OPS:
            self.syncs.append(name)
        self.host_tensors += name == "aten.lift_fresh"
        return func(*args, **(kwargs or {}))
