#!/usr/bin/env bash
# One command for a lent GPU session (about 15 minutes in all, start-up included):
#
#   benchmarks/gpu_check.sh OUT_DIR [--budget SECONDS] [--quick] [--extra "BENCH ARGS"]
#
# Stages run in priority order: the eager GPU tests; a profile of 20 W-MSE 2 and W-MSE 4
# steps (wall and host ms, kernels per step, the GPU's busy fraction); one compiled W-MSE 2
# epoch; the other settings compiled; the compiled GPU tests; the whitening kernels (CW-RGP's batched ZCA);
# 4 packed trials; every setting eager; a 25-epoch W-MSE 2 run. Each result is
# appended to OUT_DIR/results.md the moment it is measured, so a timeout still returns all
# before it. --budget stops before a stage whose estimate would not fit (default 780 s);
# --quick runs only the first three stages (under 4 minutes). --extra is added to every
# benchmark command (e.g. "--dataset shapes --subset 512 --arch resnet18_w8 --device cpu"
# for a dry run of the script without a GPU; with PROFILE_ARGS="--device cpu --arch
# resnet18_w8 --steps 2" WHITEN_DEVICE=cpu for the profile and whitening stages).
#
# Needs only torch, torchvision, numpy and pytest (no Ray, Optuna or wandb): it runs from
# the checkout with PYTHONPATH=. The CIFAR-10 JPEG copy travels in the git-ignored folder
# gpu_data/ (cifar10_jpeg.npz and to_batches.py from shared/datasets/cifar10-jpeg/) and is
# decoded into data/ first. PYTHON names the interpreter (default: python).
set -uo pipefail
usage="usage: benchmarks/gpu_check.sh OUT_DIR [--budget SECONDS] [--quick] [--extra ARGS]"
OUT=${1:?$usage}
shift
BUDGET=780 QUICK=0 EXTRA=""
while [ $# -gt 0 ]; do
    case $1 in
        --budget) BUDGET=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --extra) EXTRA=$2; shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$PWD WSL_RAY_BENCHMARKS_MD=$OUT/results.md WSL_RAY_CACHE=${WSL_RAY_CACHE:-/tmp/wsl_ray_cache}
PY=${PYTHON:-python}
START=$(date +%s)
{
    echo "# gpu_check $(date -u +%FT%TZ), budget ${BUDGET} s${EXTRA:+, extra: $EXTRA}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} >> "$OUT/results.md"

# stage NAME ESTIMATE_S COMMAND...: runs COMMAND if ESTIMATE_S fits in what is left.
stage() {
    local name=$1 estimate=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$estimate" -gt "$left" ]; then
        echo "- $name: skipped (needs about $estimate s, $left s left)" >> "$OUT/results.md"
        return
    fi
    local t0=$(date +%s)
    echo "== $name" | tee -a "$OUT/log.txt"
    timeout "$left" "$@" 2>&1 | tee -a "$OUT/log.txt"
    local rc=${PIPESTATUS[0]}
    echo "- $name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in $(($(date +%s) - t0)) s" >> "$OUT/results.md"
}

if [ ! -d data/cifar-10-batches-py ] && [ -f gpu_data/cifar10_jpeg.npz ]; then
    stage "decode CIFAR-10 (JPEG copy)" 60 "$PY" gpu_data/to_batches.py data
fi
# shellcheck disable=SC2086  # EXTRA is a list of arguments
stage "GPU tests, eager" 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    tests/test_device.py -k "not compiled"
# shellcheck disable=SC2086  # PROFILE_ARGS is a list of arguments
stage "profile of W-MSE 2 and 4 steps" 60 "$PY" -m benchmarks.profile_step \
    ${PROFILE_ARGS:---device cuda}
stage "W-MSE 2 compiled epoch" 100 "$PY" -m benchmarks.bench_train --settings "W-MSE 2" \
    --compile on --epochs 1 $EXTRA
[ "$QUICK" -eq 1 ] && exit 0
stage "other settings, compiled" 200 "$PY" -m benchmarks.bench_train \
    --settings "W-MSE 4" "CW-RGP 2" BYOL --compile on --epochs 2 $EXTRA
stage "GPU tests, compiled" 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    -k compiled
stage "whitening: Newton-Schulz ZCA vs eigh" 60 "$PY" -m benchmarks.bench_whiten \
    --device "${WHITEN_DEVICE:-cuda}" --label gpu
stage "4 packed W-MSE 2 trials" 180 "$PY" -m benchmarks.bench_train --settings "W-MSE 2" \
    --compile on --epochs 2 --trials-per-gpu 4 $EXTRA
stage "every setting, eager" 150 "$PY" -m benchmarks.bench_train --compile off --epochs 2 $EXTRA
stage "25-epoch W-MSE 2 run" 200 "$PY" -m benchmarks.bench_accuracy --epochs 25 --compile $EXTRA
echo "done in $(($(date +%s) - START)) s" >> "$OUT/results.md"
