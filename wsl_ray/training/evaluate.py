"""The reference's fast evaluation: frozen features, k-NN and a linear probe; and the
label-free metrics of the same features: RankMe, alpha-ReQ and (opt-in) LiDAR.

Everything stays on the evaluation device as whole tensors; no Python runs per sample.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..data import Augment, ImageData, iterate_batches
from ..methods import BaseMethod

LABELLED = ("acc", "acc_5", "acc_knn")  # the metrics that need labels (val_/test_ prefixed)
# alpha-ReQ's fit: ranks 6 to 100 of the spectrum (1-based), the default range of reptrix
# (github.com/arnab39/reptrix, alpha.get_alpha: arange(5, 100), 0-based), the library of
# the paper's authors, which leaves the first eigenvalues out to fit the spectrum's tail.
ALPHA_RANKS = (6, 100)
# eigenvalues at or below this fraction of the largest count as zero: far above what float32
# rounding leaves of a zero eigenvalue (~1e-14), far below a power law's lambda_100 (1e-10
# needs alpha = 5)
ALPHA_FLOOR = 1e-10
# LiDAR (Thilak et al., ICLR 2024): n images (surrogate classes) x q augmented views each,
# the ridge delta of the within-class covariance and the entropy's epsilon. Our choices (the
# paper's text could not be read here to confirm its own): n = 1000, q = 50, the scale of
# its ImageNet evaluation as other implementations document it; delta = 1e-4, epsilon =
# 1e-8, the defaults of stable-pretraining's LiDAR callback.
LIDAR_N, LIDAR_Q = 1000, 50
LIDAR_DELTA, LIDAR_EPS = 1e-4, 1e-8


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


@torch.no_grad()
def alpha_req(features: torch.Tensor, ranks: tuple[int, int] = ALPHA_RANKS) -> float:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022) of an [N, d] feature matrix: the exponent
    alpha of the power law lambda_i ~ c i^(-alpha) of the eigenvalues lambda_1 >= ... >=
    lambda_d of its covariance C = (X - mean)^T (X - mean) / N, fitted by least squares
    of log lambda_i = log c - alpha log i over the ranks i = ranks[0] .. K, K = min(ranks[1],
    d, N - 1) (C has rank N - 1 at most); with fewer than 3 ranks there (d < ranks[0] + 2)
    over i = 1 .. K. Eigenvalues at or below ALPHA_FLOOR lambda_1 are zero but for rounding
    (a collapsed encoder): inside the range they are raised to that floor, so that the drop
    reads as a steep decay (a large alpha), not log 0; zero from the range's first rank on
    (features of rank < ranks[0]), the decay is infinitely steep: alpha = inf. Float64
    whatever the input dtype; NaN for all-zero features. Features rounded to bf16 (CUDA's
    autocast) carry rounding noise far above this floor: there such a collapse reads as a
    flat noise tail instead (alpha near 0, as far from 1 as a white spectrum).

    The better direction: alpha near 1 (the paper's reading). A smaller alpha is a flatter
    spectrum, many directions of similar variance (towards white noise: the features spend
    their capacity on detail a linear readout cannot use robustly); a larger alpha, variance
    in a few directions (towards collapse). Sweeps select on |alpha - 1| (`evaluate`'s
    alpha_req)."""
    x = features.double()
    x = x - x.mean(dim=0)
    eig = torch.linalg.eigvalsh(x.T @ x / len(x)).flip(0)  # descending
    if eig[0] <= 0:
        return math.nan
    last = min(ranks[1], len(eig), len(x) - 1)
    first = ranks[0] if last - ranks[0] >= 2 else 1
    if last - first < 1:
        return math.nan
    floor = eig[0].item() * ALPHA_FLOOR
    if eig[first - 1] <= floor:
        return math.inf
    eig = eig.clamp_min(floor)
    log_i = torch.arange(first, last + 1, dtype=torch.float64, device=eig.device).log()
    log_l = eig[first - 1 : last].log()
    di = log_i - log_i.mean()
    slope = (di * (log_l - log_l.mean())).sum() / (di * di).sum()
    return -slope.item()


@torch.no_grad()
def lidar(features: torch.Tensor, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> float:
    """LiDAR (Thilak et al., ICLR 2024) of features [n, q, d]: q views e_ij of each of n
    images (image i is class i), in float64:

        mu_i = 1/q sum_j e_ij,   mu = 1/n sum_i mu_i
        Sigma_b = 1/n sum_i (mu_i - mu)(mu_i - mu)^T                        [d, d]
        Sigma_w = 1/(n q) sum_ij (e_ij - mu_i)(e_ij - mu_i)^T + delta I_d    [d, d]
        Sigma_lidar = Sigma_w^(-1/2) Sigma_b Sigma_w^(-1/2)
        LiDAR = exp(-sum_k p_k log p_k),   p_k = lambda_k / sum_j lambda_j + eps

    with lambda the eigenvalues of Sigma_lidar (rounding's negatives set to 0): the smooth
    rank of the LDA matrix of the surrogate task, between 1 and min(d, n - 1) (plus eps's
    share). Higher is better: more directions that tell images apart beyond the spread of
    their own views. 0 where Sigma_b is 0 (every image embeds to one point)."""
    e = features.double()
    n, q, d = e.shape
    means = e.mean(dim=1)  # [n, d]
    between = means - means.mean(dim=0)
    sigma_b = between.T @ between / n
    within = (e - means[:, None]).reshape(n * q, d)
    sigma_w = within.T @ within / (n * q)
    sigma_w += delta * torch.eye(d, dtype=e.dtype, device=e.device)
    lam_w, vec_w = torch.linalg.eigh(sigma_w)
    inv_sqrt = (vec_w * lam_w.rsqrt()) @ vec_w.T
    lam = torch.linalg.eigvalsh(inv_sqrt @ sigma_b @ inv_sqrt).clamp_min(0)
    if lam.sum() == 0:
        return 0.0
    p = lam / lam.sum() + eps
    return math.exp(-(p * p.log()).sum().item())


@torch.no_grad()
def embed_views(
    model: BaseMethod,
    images,
    labels: torch.Tensor,
    index: torch.Tensor,
    augment: Augment,
    q: int,
    device: torch.device,
    batch_size: int = 1000,
) -> torch.Tensor:
    """Frozen features of q augmented views of each image at `index`: float32 [n, q, d].
    The views are `augment`'s (the training pipeline: its num_samples = k views per call,
    called ceil(q / k) times, the first q kept, so view j follows the settings of training
    view j mod k); about batch_size views go through the encoder at once. `labels` only
    travel with the images (nothing reads them)."""
    was_training = model.training
    model.eval()
    k = augment.num_samples
    calls = math.ceil(q / k)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    feats = []
    per_batch = max(1, batch_size // k)
    for x, _ in iterate_batches(
        images, labels, per_batch, shuffle=False, drop_last=False, device=device, index=index
    ):
        views = []
        for _ in range(calls):
            with autocast:
                out = model.embed(torch.cat(augment(x))).float()  # [k b, d], view-major
            views += list(out.view(k, len(x), -1).unbind(0))
        feats.append(torch.stack(views[:q], dim=1))
    model.train(was_training)
    return torch.cat(feats)


def lidar_views(cfg: Any, data: ImageData, device: torch.device) -> Augment:
    """The augmentation LiDAR draws its views with: the run's training pipeline (`cfg`'s
    flags, eager: an evaluation is too rare to pay for a compile), on `device`, from a
    generator seeded with --seed, so that every evaluation sees the same views."""
    cuda = device.type == "cuda"
    return Augment.from_config(
        dataclasses.replace(cfg, compile=False),
        data.crop_size,
        data.mean,
        data.std,
        data.blur,
        torch.Generator(device).manual_seed(cfg.seed),
        out_dtype=torch.bfloat16 if cuda else torch.float32,
        channels_last=cuda,
    )


def label_free(
    model: BaseMethod,
    data: ImageData,
    features: torch.Tensor,
    index: torch.Tensor | None,
    device: torch.device,
    views: Augment | None,
    seed: int,
) -> dict[str, float]:
    """The label-free metrics of the classifier images the probes fit on (`index` into the
    classifier set, None: all of them), whose frozen `features` [N, d] are given: rankme,
    alpha (alpha-ReQ's exponent) and alpha_req = |alpha - 1| (what a sweep minimises); with
    `views`, also lidar, of LIDAR_Q views of LIDAR_N of those images (all where fewer; drawn
    with `seed`), and lidar_time_s, its cost."""
    alpha = alpha_req(features)
    metrics = {"rankme": rankme(features), "alpha": alpha, "alpha_req": abs(alpha - 1)}
    if views is not None:
        start = time.perf_counter()
        pool = torch.arange(len(data.clf_y)) if index is None else index.cpu()
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        chosen = pool[pick[:LIDAR_N].sort().values]
        e = embed_views(model, data.clf_x, data.clf_y, chosen, views, LIDAR_Q, device)
        metrics["lidar"] = lidar(e)
        metrics["lidar_time_s"] = time.perf_counter() - start
    return metrics


def lidar_plan_line(lidar_s: float, eval_s: float, evals: int, trial_s: float) -> str:
    """--plan's sentence on LiDAR's cost: `lidar_s` of one evaluation's `eval_s` seconds
    (evaluate_run's lidar_time_s, measured with the trial's config), `evals` evaluations per
    trial, `trial_s` a whole trial's seconds (LiDAR included)."""
    per_trial = lidar_s * evals
    return (
        f"LiDAR (--label_free lidar: {LIDAR_Q} views of each of {LIDAR_N} images) takes "
        f"{lidar_s:.1f} s of each evaluation's {eval_s:.1f} s: {per_trial:.0f} s per trial, "
        f"{per_trial / trial_s:.0%} of its time."
    )


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
    free: bool = True,
    views: Augment | None = None,
) -> dict[str, float]:
    """acc (linear top-1), acc_5 (linear top-5) and acc_knn of the frozen encoder (acc and
    acc_5 only with `probe`: fitting the linear classifier is the costly part), and, with
    `free`, the label-free metrics of `label_free` (LiDAR too, given `views`).

    on="test": k-NN and probe fit on the whole classifier set and score on the test set;
    on="val": they fit on the classifier set minus validation and score on validation.
    The label-free metrics are of the images the classifiers fit on (no labels used).
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
    metrics = {"acc_knn": knn_accuracy(train_f, train_y, test_f, test_y, knn, knn_metric)}
    if free:
        metrics |= label_free(model, data, train_f, parts[0][2], device, views, seed)
    if probe:
        generator = torch.Generator(device).manual_seed(seed)
        top = linear_probe(train_f, train_y, test_f, test_y, probe_epochs, generator=generator)
        metrics = {"acc": top[1], "acc_5": top[5]} | metrics
    return metrics


def evaluate_run(
    model: BaseMethod, data: ImageData, device: torch.device, cfg: Any, final: bool = False
) -> dict[str, float]:
    """One evaluation of a run of `cfg` (a Config), with its metrics named by mode.

    --eval_on test: acc, acc_5, acc_knn on test (the papers' protocol), and the label-free
    rankme, alpha, alpha_req (with --label_free lidar also lidar, lidar_time_s).
    --eval_on val: val_acc, val_acc_5, val_acc_knn and the label-free ones; at the `final`
    epoch also test_acc, test_acc_5, test_acc_knn, computed this once. Sweeps keep test_*
    from Tune.
    """
    options = cfg.eval_options
    views = lidar_views(cfg, data, device) if cfg.label_free == "lidar" else None
    if cfg.eval_on == "test":
        return evaluate(model, data, device, on="test", views=views, **options)
    data = dataclasses.replace(data, val_size=cfg.val_size)
    val = evaluate(model, data, device, on="val", views=views, **options)
    metrics = {f"val_{k}" if k in LABELLED else k: v for k, v in val.items()}
    if final:
        test = evaluate(model, data, device, on="test", free=False, **options)
        metrics |= {f"test_{k}": v for k, v in test.items() if k in LABELLED}
    return metrics
