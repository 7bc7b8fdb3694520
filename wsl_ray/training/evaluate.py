"""The reference's fast evaluation: frozen features, k-NN and a linear probe.

Everything stays on the evaluation device as whole tensors; no Python runs per sample.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from ..data import ImageData, iterate_batches
from ..methods import BaseMethod


@torch.no_grad()
def embed(
    model: BaseMethod,
    images,
    labels: torch.Tensor,
    mean,
    std,
    device: torch.device,
    batch_size: int = 1000,
    index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every image (those at `index` only, without copying the others) with the
    frozen encoder (or head): float32 [N, d], labels [N]."""
    was_training = model.training
    model.eval()
    mean_t = torch.tensor(mean, device=device)[:, None, None]
    scale = 1 / torch.tensor(std, device=device)[:, None, None]
    feats, ys = [], []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for x, y in iterate_batches(
        images, labels, batch_size, shuffle=False, drop_last=False, device=device, index=index
    ):
        x = (x.float().mul_(1 / 255) - mean_t) * scale
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            feats.append(model.embed(x).float())
        ys.append(y)
    model.train(was_training)
    return torch.cat(feats), torch.cat(ys)


@torch.no_grad()
def knn_accuracy(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 5,
    metric: str = "euclidean",
    chunk: int = 1024,
) -> float:
    """k-NN accuracy by majority vote of the k nearest training features.

    Distances are Euclidean (the reference) or cosine; ties in the vote go to the smallest
    label, as the reference's `unique(...).argmax()` does. Test points are processed in
    chunks, so memory is chunk x N_train whatever the set sizes.
    """
    if metric == "cosine":
        train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = torch.zeros((), dtype=torch.long, device=test_f.device)  # read once, at the end
    for start in range(0, len(test_f), chunk):
        q = test_f[start : start + chunk]
        if metric == "cosine":
            nearest = (q @ train_f.T).topk(k, dim=1).indices
        else:
            nearest = torch.cdist(q, train_f).topk(k, dim=1, largest=False).indices
        votes = F.one_hot(train_y[nearest], num_classes).sum(dim=1)
        correct += (votes.argmax(dim=1) == test_y[start : start + chunk]).sum()
    return correct.item() / len(test_f)


ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def probe_step(
    params: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: torch.Tensor,
    lr: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
) -> None:
    """One Adam step of the softmax classifier, in place, as a fixed graph of a few kernels.

    params, m, v: [classes, d + 1] (weights and bias, Adam's moments); x: [b, d + 1] features
    with a column of ones; y: [b]. step (the step count, this one included) and lr are 0-dim
    tensors, so every step is the same graph: it compiles once, captures into a CUDA graph,
    and never waits for the host.
        g     = (softmax(x params^T) - onehot(y))^T x / b + weight_decay params
        m     = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        param = param - lr / (1 - b1^step) m / (sqrt(v / (1 - b2^step)) + eps)
    """
    (beta1, beta2), b = ADAM_BETAS, x.shape[0]
    probs = torch.softmax(x @ params.T, dim=1)
    grad_logits = probs - F.one_hot(y, params.shape[0]).to(probs.dtype)
    grad = grad_logits.T @ x / b + weight_decay * params
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (v / (1 - beta2**step)).sqrt_().add_(ADAM_EPS)
    params.sub_(lr / (1 - beta1**step) * m / denom)


def fit_linear(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    epochs: int = 500,
    batch_size: int = 1000,
    lr: tuple[float, float] = (1e-2, 1e-6),
    weight_decay: float = 5e-6,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The reference's linear classifier: Adam with coupled L2, lr decaying exponentially
    from lr[0] to lr[1] over `epochs`, shuffled mini-batches (the last partial one dropped).

    Each epoch is `probe_step` over a permutation drawn on the features' device (with
    `generator`, which must live there too). On a GPU the first epoch runs eagerly and the
    others replay it as one captured CUDA graph: one launch per epoch instead of ~20 per
    step, which is what makes 500 epochs take a fraction of a second. Returns [W | b]:
    [classes, d + 1].
    """
    n, d = train_f.shape
    device = train_f.device
    layer = torch.nn.Linear(d, int(train_y.max()) + 1).to(device)  # PyTorch's default init
    params = torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], dim=1)
    x = torch.cat([train_f, torch.ones(n, 1, device=device)], dim=1)
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    step, lr_now = torch.zeros((), device=device), torch.zeros((), device=device)
    bs = min(batch_size, n)
    order = torch.empty(n - n % bs, dtype=torch.long, device=device)
    gamma = (lr[1] / lr[0]) ** (1 / epochs)

    def run_epoch() -> None:
        for idx in order.view(-1, bs):
            step.add_(1)
            probe_step(params, m, v, step, lr_now, x[idx], train_y[idx], weight_decay)

    graph = None
    for epoch in range(epochs):
        lr_now.fill_(lr[0] * gamma**epoch)
        order.copy_(torch.randperm(n, generator=generator, device=device)[: len(order)])
        if graph is not None:
            graph.replay()
        elif device.type == "cuda":
            graph = _run_then_capture(run_epoch, device)
        else:
            run_epoch()
    return params


def _run_then_capture(fn, device: torch.device) -> torch.cuda.CUDAGraph:
    """Runs fn once on a side stream (the warm-up CUDA graphs need), then captures it."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    epochs: int = 500,
    topk: tuple[int, ...] = (1, 5),
    generator: torch.Generator | None = None,
    **fit_options,
) -> dict[int, float]:
    """Top-k test accuracies of `fit_linear`'s classifier: {k: accuracy}."""
    params = fit_linear(train_f, train_y, epochs, generator=generator, **fit_options)
    logits = torch.cat([test_f, torch.ones(len(test_f), 1, device=test_f.device)], 1) @ params.T
    top = logits.topk(min(max(topk), params.shape[0]), dim=1).indices
    hits = top == test_y[:, None]
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in topk}


@torch.no_grad()
def rankme(features: torch.Tensor) -> float:
    """RankMe (Garrido et al., ICML 2023) of an [N, d] embedding matrix: exp of the entropy
    of its normalised singular values, exp(-sum_k p_k log p_k) with p_k = s_k / sum_j s_j
    (0 log 0 = 0). 1 for a rank-one matrix, d for d equal singular values. Computed in
    float64 whatever the input dtype."""
    s = torch.linalg.svdvals(features.double())
    p = s / s.sum()
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def evaluate(
    model: BaseMethod,
    data: ImageData,
    device: torch.device,
    *,
    on: str = "test",
    knn: int = 5,
    knn_metric: str = "euclidean",
    probe_epochs: int = 500,
    seed: int = 0,
    probe: bool = True,
) -> dict[str, float]:
    """acc (linear top-1), acc_5 (linear top-5), acc_knn and rankme of the frozen encoder
    (acc and acc_5 only with `probe`: fitting the linear classifier is the costly part).

    on="test": k-NN and probe fit on the whole classifier set and score on the test set;
    on="val": they fit on the classifier set minus validation and score on validation.
    rankme is of the features the classifiers fit on (no labels used).
    """
    if on == "val":  # index views of the classifier set: no copy of its images
        fit, val = data.val_indices()
        parts = [(data.clf_x, data.clf_y, fit), (data.clf_x, data.clf_y, val)]
    elif on == "test":
        parts = [(data.clf_x, data.clf_y, None), (data.test_x, data.test_y, None)]
    else:
        raise ValueError(f"--eval_on {on!r}: choose val or test")
    (train_f, train_y), (test_f, test_y) = (
        embed(model, x, y, data.mean, data.std, device, index=index) for x, y, index in parts
    )
    acc_knn = knn_accuracy(train_f, train_y, test_f, test_y, knn, knn_metric)
    metrics = {"acc_knn": acc_knn, "rankme": rankme(train_f)}
    if probe:
        generator = torch.Generator(device).manual_seed(seed)
        top = linear_probe(train_f, train_y, test_f, test_y, probe_epochs, generator=generator)
        metrics = {"acc": top[1], "acc_5": top[5]} | metrics
    return metrics


def evaluate_run(
    model: BaseMethod, data: ImageData, device: torch.device, cfg: Any, final: bool = False
) -> dict[str, float]:
    """One evaluation of a run of `cfg` (a Config), with its metrics named by mode.

    --eval_on test: acc, acc_5, acc_knn on test (the papers' protocol), and rankme.
    --eval_on val: val_acc, val_acc_5, val_acc_knn and rankme; at the `final` epoch also
    test_acc, test_acc_5, test_acc_knn, computed this once. Sweeps keep test_* from Tune.
    """
    options = cfg.eval_options
    if cfg.eval_on == "test":
        return evaluate(model, data, device, on="test", **options)
    data = dataclasses.replace(data, val_size=cfg.val_size)
    val = evaluate(model, data, device, on="val", **options)
    metrics = {f"val_{k}" if k != "rankme" else k: v for k, v in val.items()}
    if final:
        test = evaluate(model, data, device, on="test", **options)
        metrics |= {f"test_{k}": v for k, v in test.items() if k != "rankme"}
    return metrics
