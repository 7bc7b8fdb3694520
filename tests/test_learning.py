"""Self-supervised training learns: short CPU runs on `shapes` beat the encoder they started
from by a clear margin, for W-MSE, the comparison methods of the CW-RGP study and INTL.

Measured on 2 cores (BENCHMARKS.md, "What short CPU runs learn on the embedded shapes data"):
the untrained encoder's 5-NN accuracy is 13-16% over seeds (sd about 1 point). When learning
takes off depends on the method, the seed and the thread count (the float reductions
differ), so each run fixes its seed (and conftest the 2 threads): the test checks that the
loop still learns as it did, far above the baseline's noise.
"""

import pytest

from wsl_ray.config import Config
from wsl_ray.data import load_dataset
from wsl_ray.training.loop import train

MARGIN = 0.07  # k-NN (and linear) accuracy over the untrained encoder's
SHORT = dict(
    dataset="shapes",
    arch="resnet18_w8",
    lr=3e-3,
    head_size=256,
    lr_step="none",
    lr_warmup=False,
    crop_s0=0.5,
    eval_init=True,
)


def short_run(tmp_path, **settings) -> dict:
    cfg = Config(**SHORT | settings, eval_every=settings["epoch"], out=str(tmp_path))
    return train(cfg, data=load_dataset("shapes"), progress=False)


# Moved to `make test-slow` on 2026-12-07: on this machine both fail identically at b064e4a (the
# last landing that passed CI): W-MSE seed 2 ends at 18.45% from 17.8%, zero_icl +5.3. They train
# at a constant lr, where whether a seed takes off hangs on float rounding (issue 36 item 1:
# seeds spread 7-9 points in that regime); with the warm-up + cosine schedule W-MSE reached
# +6.6 and zero_icl +5.3 in 4 epochs, short of the margin. Recalibrate them with the schedule
# before they return to the suite.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_short_wmse_run_on_shapes_beats_the_untrained_encoder(tmp_path):
    # Recalibrated on torch 2.14.1 (2026-12-02), 2 threads, resnet18_w8, 4 epochs: seed 2 reaches
    # 40.0% 5-NN from 17.8% (linear 13.7% -> 43.0%), about 100 s; seed 0 gains 7.6 points and
    # seed 1 does not take off (14.35% -> 14.2%; on 1 thread it reaches 29.5%). With all views
    # in one encoder call (2026-12-03; float order moves): seed 2 17.8% -> 36.1% (linear 38.4%).
    summary = short_run(
        tmp_path, method="w_mse", subset=5000, epoch=4, seed=2, bs=128, emb=32, w_size=64
    )
    assert summary["acc_knn"] > summary["init_acc_knn"] + MARGIN, summary
    assert summary["acc"] > summary["init_acc"] + MARGIN, summary


# Measured gains in 5-NN points on 2 threads (resnet18_w8, lr 3e-3; BENCHMARKS.md). All without
# the zero-initialised residual BNs that the CW-RGP code (and so these methods' default) uses:
# on this 1/8-width encoder they keep Barlow Twins at the untrained level.
COMPARISON = {
    "zero_icl": dict(subset=2000, seed=0, epoch=4, bs=64, emb=64),  # +14.3 (+37.5 after 8)
    # on torch 2.14.1 (2026-12-02): zero_icl +14.2 (seeds 1, 2: +18.8, +17.9); with all views
    # in one encoder call (2026-12-03): +10.3
}
# Beyond the suite's budget: `make test-slow` runs these (about 9 minutes on 2 cores).
# Barlow Twins needs the paper's normalisation here (the CW-RGP code's, divide by emb, needs
# bs = emb): +9.9 after 8 epochs (from 14.35%); it does not learn on 3000 images, nor on 5000
# with bs 64 in 5 epochs. SimSiam starts slowest of all: within a few points of the untrained
# encoder for 8-16 epochs, then +17.2 after 24 and +23.7 after 32 (seed 1; seed 2: +10.2 and
# +12.1), with the CW-RGP code's lr and a 1024-wide projector.
# VICReg, 8 epochs on 2000 images: +12.6 at seed 0 on 2026-12-02; with all views in one
# encoder call +1.6 (seed 0), +7.9 (seed 1), +0.2 (seed 2): too close to the margin for the
# suite, so it runs here until a longer calibration.
SLOW = {
    "vicreg": dict(subset=2000, seed=1, epoch=8, bs=64, emb=64),
    "barlow_twins": dict(subset=5000, seed=1, epoch=8, bs=128, emb=128, barlow_scale="batch"),
    "simsiam": dict(subset=5000, seed=1, epoch=24, bs=128, emb=512, head_size=1024, lr=1e-3),
}


def learning_failures(tmp_path, runs: dict[str, dict]) -> dict[str, str]:
    """Runs each method's short run; returns those that did not beat the untrained encoder."""
    failed = {}
    for method, settings in runs.items():
        summary = short_run(tmp_path / method, method=method, zero_init_residual=False, **settings)
        gain = summary["acc_knn"] - summary["init_acc_knn"]
        if gain <= MARGIN:
            failed[method] = f"5-NN {summary['init_acc_knn']:.3f} -> {summary['acc_knn']:.3f}"
    return failed


@pytest.mark.slow  # see test_a_short_wmse_run_on_shapes_beats_the_untrained_encoder
@pytest.mark.timeout(900)
def test_short_runs_of_the_comparison_methods_beat_the_untrained_encoder(tmp_path):
    assert not (failed := learning_failures(tmp_path, COMPARISON)), failed


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_short_runs_of_vicreg_barlow_twins_and_simsiam_beat_the_untrained_encoder(tmp_path):
    assert not (failed := learning_failures(tmp_path, SLOW)), failed


# INTL (2026-12-03, torch 2.14.1, 2 threads on a shared, loaded machine; BENCHMARKS.md): the
# suite's short-run settings (Adam 3e-3, no schedule) with its default IterNorm T = 4 and
# trace-loss weight (log2(64) - 3) x 0.01 = 0.03. Seed 1: 5-NN 12.5% -> 23.6%, linear
# 13.4% -> 28.1%; seed 0: 5-NN +7.1, linear +17.4. 124 steps took 270-540 s under that load,
# beyond the suite's budget: `make test-slow` runs it.
# LeJEPA (issue 39) runs the same size with its defaults (lambda 0.05, 256 slices, 17 nodes of
# [0, 3]); this check has not yet been seen passing: it awaits a quiet machine to calibrate.
SLOW_RUN = dict(subset=2000, seed=1, epoch=4, bs=64, emb=64)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("method", ["intl", "lejepa"])
def test_a_short_run_on_shapes_beats_the_untrained_encoder(tmp_path, method):
    summary = short_run(tmp_path, method=method, **SLOW_RUN)
    assert summary["acc_knn"] > summary["init_acc_knn"] + MARGIN, summary
    assert summary["acc"] > summary["init_acc"] + MARGIN, summary
