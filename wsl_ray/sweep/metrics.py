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
    validation-selected trial (never seen by the search)."""

    name: str
    mode: str
    percent: bool
    test: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("val_acc", "max", True, "test_acc"),
        Metric("val_acc_5", "max", True, "test_acc_5"),
        Metric("val_acc_knn", "max", True, "test_acc_knn"),
        # RankMe needs no labels; a sweep on it still reports the k-NN test accuracy
        Metric("rankme", "max", False, "test_acc_knn"),
    )
}
DEFAULT_METRIC = "val_acc_knn"
METRIC_CHOICES = tuple(dict.fromkeys((DEFAULT_METRIC, *METRICS)))  # the default shown first


def metric_spec(name: str) -> Metric:
    """The registry's entry for `name`; an unregistered name is taken as a maximised
    accuracy whose test twin is named test_<name without val_>."""
    return METRICS.get(name) or Metric(name, "max", True, "test_" + name.removeprefix("val_"))


def score(name: str, value: float) -> float:
    """`value` oriented so that higher is better (negated for a metric to minimise)."""
    return value if metric_spec(name).mode == "max" else -value
