"""The registry of selection metrics: each one's direction, how it prints, and the test
metric reported for a sweep that selects on it.

Plain Python (no Ray, no Optuna), for `analysis` too. A new objective is one entry here plus
the code that computes it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A validation metric a sweep may select on.

    mode: "max" or "min", the better direction; percent: a fraction in [0, 1] shown as a
    percentage (else a plain number, as RankMe); test: the test metric reported for the
    validation-selected trial (never seen by the search); label_free: computed without
    labels (its key carries no val_ prefix)."""

    name: str
    mode: str
    percent: bool
    test: str
    label_free: bool = False


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("val_acc", "max", True, "test_acc"),
        Metric("val_acc_5", "max", True, "test_acc_5"),
        Metric("val_acc_knn", "max", True, "test_acc_knn"),
        # label-free (docs/sweeps.md): a sweep on one still reports the k-NN test accuracy.
        # RankMe: the effective rank of the features, higher is better.
        Metric("rankme", "max", False, "test_acc_knn", label_free=True),
        # alpha-ReQ: |alpha - 1|, the distance of the spectrum's power-law exponent to 1
        # (the paper's best; training.evaluate.alpha_req), lower is better
        Metric("alpha_req", "min", False, "test_acc_knn", label_free=True),
        # LiDAR: the smooth rank of the surrogate task's LDA matrix, higher is better; only
        # computed with --label_free lidar
        Metric("lidar", "max", False, "test_acc_knn", label_free=True),
    )
}
LABEL_FREE = tuple(m.name for m in METRICS.values() if m.label_free)
DEFAULT_METRIC = "val_acc_knn"
METRIC_CHOICES = tuple(dict.fromkeys((DEFAULT_METRIC, *METRICS)))  # the default shown first


def metric_spec(name: str) -> Metric:
    """The registry's entry for `name`; an unregistered name is taken as a maximised
    accuracy whose test twin is named test_<name without val_>."""
    return METRICS.get(name) or Metric(name, "max", True, "test_" + name.removeprefix("val_"))


def metric_problem(name: str, label_free: str) -> str | None:
    """Why trials run with `--label_free label_free` cannot serve `--metric name` (they
    would never report it), or None."""
    if name == "lidar" and label_free != "lidar":
        return (
            "--metric lidar: the trials compute no LiDAR; add --set label_free=lidar (50 "
            "augmented views of 1000 images at each evaluation: --plan shows the cost)"
        )
    return None


def score(name: str, value: float) -> float:
    """`value` oriented so that higher is better (negated for a metric to minimise)."""
    return value if metric_spec(name).mode == "max" else -value
