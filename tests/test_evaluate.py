"""k-NN against brute force, and the linear probe against the reference protocol."""

import numpy as np
import pytest
import torch

from wsl_ray.evaluate import fit_linear, knn_accuracy, linear_probe


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
