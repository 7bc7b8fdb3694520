"""k-NN against brute force, and the linear probe against the reference protocol."""

import numpy as np
import pytest
import torch

import wsl_ray.training.evaluate as evaluate_module
from wsl_ray.config import Config
from wsl_ray.data import load_dataset, stratified_split
from wsl_ray.training.evaluate import fit_linear, knn_accuracy, linear_probe, rankme


def brute_force_knn(train_f, train_y, test_f, test_y, k, metric):
    a, b = train_f.double().numpy(), test_f.double().numpy()
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        dist = -(b @ a.T)
    else:
        dist = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    correct = 0
    for i in range(len(b)):
        nearest = np.argsort(dist[i], kind="stable")[:k]
        labels, counts = np.unique(train_y.numpy()[nearest], return_counts=True)
        correct += labels[counts.argmax()] == test_y[i].item()  # ties: the smallest label
    return correct / len(b)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_equals_brute_force(gen, metric, k):
    centres = torch.randn(4, 8, generator=gen) * 2
    train_y = torch.randint(0, 4, (300,), generator=gen)
    test_y = torch.randint(0, 4, (70,), generator=gen)
    train_f = centres[train_y] + torch.randn(300, 8, generator=gen) * 2
    test_f = centres[test_y] + torch.randn(70, 8, generator=gen) * 2
    got = knn_accuracy(train_f, train_y, test_f, test_y, k, metric, chunk=32)
    assert got == pytest.approx(brute_force_knn(train_f, train_y, test_f, test_y, k, metric))


def test_linear_probe_separates_separable_features(gen):
    centres = 4 * torch.randn(10, 32, generator=gen)  # clusters far apart: separable
    train_y = torch.randint(0, 10, (3000,), generator=gen)
    test_y = torch.randint(0, 10, (1000,), generator=gen)
    train_f = centres[train_y] + torch.randn(3000, 32, generator=gen)
    test_f = centres[test_y] + torch.randn(1000, 32, generator=gen)
    acc = linear_probe(train_f, train_y, test_f, test_y, generator=gen)
    assert acc[1] > 0.95 and acc[5] >= acc[1]


def reference_probe(train_f, train_y, epochs, seed):
    """The reference eval_sgd with torch.optim, for a small problem: its trained layer."""
    torch.manual_seed(seed)
    clf = torch.nn.Linear(train_f.shape[1], int(train_y.max()) + 1)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2, weight_decay=5e-6)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, (1e-6 / 1e-2) ** (1 / epochs))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(train_f), generator=gen).view(-1, 100)
        for idx in perm:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(clf(train_f[idx]), train_y[idx]).backward()
            opt.step()
        sched.step()
    return torch.cat([clf.weight, clf.bias[:, None]], dim=1).detach()


def test_linear_probe_follows_the_reference_protocol(gen):
    train_f = torch.randn(400, 6, generator=gen)
    train_y = (train_f[:, 0] + 0.5 * torch.randn(400, generator=gen) > 0).long()
    expected = reference_probe(train_f, train_y, epochs=20, seed=3)
    torch.manual_seed(3)  # the same initialisation of the linear layer
    got = fit_linear(
        train_f, train_y, epochs=20, batch_size=100, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(got, expected, atol=1e-5)


def test_rankme_is_one_for_rank_one_and_d_for_equal_singular_values(gen):
    u = torch.randn(50, 1, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 8, generator=gen, dtype=torch.float64)
    assert rankme(u @ v) == pytest.approx(1.0, abs=1e-12)
    q, _ = torch.linalg.qr(torch.randn(50, 6, generator=gen, dtype=torch.float64))
    assert rankme(3.0 * q) == pytest.approx(6.0, abs=1e-12)  # orthonormal columns, scaled


def test_rankme_matches_its_formula(gen):
    z = torch.randn(40, 5, generator=gen, dtype=torch.float64) * torch.arange(1, 6)
    s = np.linalg.svd(z.numpy(), compute_uv=False)
    p = s / s.sum()
    assert rankme(z) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-12)


def test_stratified_split_is_fixed_stratified_and_partitions():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    fit, val = stratified_split(labels, 0.1)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(100))
    assert torch.bincount(labels[val]).tolist() == [5, 3, 2]
    again_fit, again_val = stratified_split(labels, 0.1)
    assert torch.equal(val, again_val) and torch.equal(fit, again_fit)
    _, counted = stratified_split(labels, 20)
    assert torch.bincount(labels[counted]).tolist() == [10, 6, 4]
    with pytest.raises(ValueError, match="--val_size"):
        stratified_split(labels, 100)


def test_val_mode_scores_validation_and_the_final_epoch_adds_test(monkeypatch):
    data = load_dataset("shapes").subset(300)
    seen = []

    def fake_evaluate(model, d, device, on, **options):
        fit_x, fit_y, score_x, score_y = (
            d.val_split() if on == "val" else (d.clf_x, d.clf_y, d.test_x, d.test_y)
        )
        seen.append((on, len(fit_x), len(score_x)))
        return {"acc": 0.5, "acc_5": 0.9, "acc_knn": 0.4, "rankme": 3.0}

    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)
    cfg = Config(eval_on="val", val_size=0.2, dataset="shapes")
    metrics = evaluate_module.evaluate_run(None, data, torch.device("cpu"), cfg)
    assert set(metrics) == {"val_acc", "val_acc_5", "val_acc_knn", "rankme"}
    assert seen == [("val", 240, 60)]
    final = evaluate_module.evaluate_run(None, data, torch.device("cpu"), cfg, final=True)
    assert {"test_acc", "test_acc_knn"} <= set(final) and seen[-1] == ("test", 300, 300)
    assert set(evaluate_module.evaluate_run(None, data, "cpu", Config())) == {
        "acc",
        "acc_5",
        "acc_knn",
        "rankme",
    }


def test_evaluate_on_val_uses_disjoint_validation_images():
    from wsl_ray.methods import get_method

    data = load_dataset("shapes").subset(200)
    cfg = Config(arch="resnet18_w8", emb=16, w_size=32, bs=64, head_size=32)
    torch.manual_seed(0)
    model = get_method(cfg.method)(cfg, data.crop_size)
    out = evaluate_module.evaluate(model, data, torch.device("cpu"), on="val", probe_epochs=5)
    assert set(out) == {"acc", "acc_5", "acc_knn", "rankme", "alpha", "alpha_req"}
    assert 1 <= out["rankme"] <= 512
    fit_x, _, val_x, _ = data.val_split()
    assert len(fit_x) + len(val_x) == 200 and len(val_x) == 20


def test_validation_is_embedded_through_indices_without_copying_the_images(monkeypatch):
    """evaluate(on="val") iterates the classifier set at `val_indices` (never `val_split`'s
    copies), and the features equal those of the copies; the index also shards and shuffles."""
    from wsl_ray.data import ImageData, iterate_batches
    from wsl_ray.methods import get_method

    data = load_dataset("shapes").subset(200)
    cfg = Config(arch="resnet18_w8", emb=16, w_size=32, bs=64, head_size=32)
    torch.manual_seed(0)
    model = get_method(cfg.method)(cfg, data.crop_size)
    cpu = torch.device("cpu")
    fit, val = data.val_indices()
    fit_x, fit_y, val_x, val_y = data.val_split()
    for index, x, y in ((fit, fit_x, fit_y), (val, val_x, val_y)):
        copied = evaluate_module.embed(model, x, y, data.mean, data.std, cpu, batch_size=64)
        viewed = evaluate_module.embed(
            model, data.clf_x, data.clf_y, data.mean, data.std, cpu, batch_size=64, index=index
        )
        assert torch.equal(copied[0], viewed[0]) and torch.equal(copied[1], viewed[1])

    def no_copies(self):
        raise AssertionError("evaluation copied the classifier set")

    monkeypatch.setattr(ImageData, "val_split", no_copies)
    assert set(evaluate_module.evaluate(model, data, cpu, on="val", probe_epochs=2)) == {
        "acc",
        "acc_5",
        "acc_knn",
        "rankme",
        "alpha",
        "alpha_req",
    }
    images, labels = torch.arange(200)[:, None, None, None], torch.arange(200)
    ranks = []
    for rank in (0, 1):
        batches = iterate_batches(
            images,
            labels,
            4,
            drop_last=False,
            generator=torch.Generator().manual_seed(1),
            index=val,
            rank=rank,
            world_size=2,
        )
        ranks.append(torch.cat([y for _, y in batches]))
    assert sorted(torch.cat(ranks).tolist()) == sorted(val.tolist())  # 20 images: 2 x 10


def test_streamed_images_split_by_file_list(tmp_path):
    from wsl_ray.data import ImageFiles, take

    labels = [0] * 10 + [1] * 10
    files = ImageFiles([tmp_path / f"{i}.jpg" for i in range(20)], labels, resize=8, crop=8)
    fit, val = stratified_split(torch.tensor(labels), 0.2)
    held_out = take(files, val)  # nothing is decoded: the files need not exist
    assert isinstance(held_out, ImageFiles) and len(held_out) == 4
    assert held_out.paths == [tmp_path / f"{i}.jpg" for i in val.tolist()]
    assert held_out.labels.tolist() == [0, 0, 1, 1] and len(take(files, fit)) == 16
