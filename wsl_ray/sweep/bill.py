"""A sweep's bill: the resources one trial holds, and what the trials used beside what the
plan said (wsl_ray.sweep.plan).

Kept free of torch and Ray: `analysis` prints the bill from sweep.json or the Parquet metadata.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Resources:
    """One trial's resources and how many trials the cluster fits at once (the confirmation
    runs that many; the sweep --concurrency, if given)."""

    workers: int
    cpus: float  # per worker
    gpus: float  # per worker
    concurrency: int

    @property
    def unit(self) -> str:
        """What the bill counts: GPU-hours when trials hold GPUs, else CPU-hours."""
        return "GPU" if self.gpus else "CPU"

    @property
    def per_trial(self) -> float:
        """The units (GPUs, else CPUs) one trial holds."""
        return self.workers * (self.gpus or self.cpus)


def duration(seconds: float) -> str:
    """45 s, 12.3 min or 3.4 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def duration_range(expected: float, lower: float, upper: float) -> str:
    """'about 7.0 min (between 5.0 min and 9.0 min)' for seconds expected within [lower,
    upper]; 'about 7.0 min' alone when the bounds print alike (an interval of one figure
    says nothing)."""
    about = f"about {duration(expected)}"
    if duration(lower) == duration(upper):
        return about
    return f"{about} (between {duration(lower)} and {duration(upper)})"


def sweep_bill(
    rows: list[dict[str, Any]], resources: Resources, planned: dict[str, float], wall_s: float
) -> dict[str, Any]:
    """What the sweep's trials used: trial-epochs run (each trial's last epoch, summed), hours
    = the trials' time (Tune's time_total_s, start-up included) x the GPUs each held (CPUs
    when none), trial-epochs per such hour, the plan's trial-epochs (lower bound, expected,
    upper bound) beside them, and this driver's wall time."""
    trial_epochs = sum(r["epochs"] or 0 for r in rows)
    seconds = sum(r["time_total_s"] or 0 for r in rows)
    hours = seconds * resources.per_trial / 3600
    return {
        "trial_epochs": trial_epochs,
        "planned_trial_epochs": planned,
        "unit": resources.unit,
        "units_per_trial": resources.per_trial,
        "hours": hours,
        "trial_epochs_per_hour": trial_epochs / hours if hours else None,
        "trial_seconds": seconds,
        "wall_s": wall_s,
    }


def bill_line(bill: dict[str, Any]) -> str:
    """The bill in one line."""
    planned, unit = bill["planned_trial_epochs"], bill["unit"]
    rate = bill["trial_epochs_per_hour"]
    return (
        f"bill: {bill['trial_epochs']} trial-epochs run (planned: {planned['expected']:g} "
        f"expected, {planned['lower bound']:g} to {planned['upper bound']:g}), "
        f"{bill['hours']:.3f} {unit}-hours ({bill['units_per_trial']:g} {unit} per trial), "
        + (f"{rate:.0f} trial-epochs per {unit}-hour, " if rate else "")
        + f"wall time {duration(bill['wall_s'])}"
    )
