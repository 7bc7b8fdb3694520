#!/usr/bin/env bash
# A lent GPU session (15 minutes of device time, start and idle included) in ONE call of the
# device tool, at most 9 minutes, its stages in order of value; an optional second call
# (--sweep) only when at least 5 minutes are left after the first:
#
#   benchmarks/gpu_check.sh OUT_DIR [--budget SECONDS] [--extra "BENCH ARGS"]
#   benchmarks/gpu_check.sh OUT_DIR --sweep [--budget SECONDS]
#
# --budget (default 540): the seconds this call may take: the device's budget_left_s (its
# `status`) minus the start (120 s) and a 60 s margin, at most 540. A stage runs only if its
# estimate fits in what is left; each stage that does not fit, and each stage that needs a
# GPU on a machine without one, is skipped with a line in results.md that names it. Each
# result is appended to OUT_DIR/results.md the moment it is measured ("- N NAME: ok in T s",
# the benchmarks' tables, the capture check's lines), everything printed to OUT_DIR/log.txt,
# so a timeout still returns all before it.
#
# The call: carry ["gpu_data", "gpu_ref"] (gpu_data/: cifar10_jpeg.npz and to_batches.py
# from shared/datasets/cifar10-jpeg/, 53.6 MiB; gpu_ref/self-supervised: the reference code,
# docs/performance.md says how to fetch it), command
#   PYTHON=python3 benchmarks/gpu_check.sh $OUT --budget 540
# Stages, with the estimate (s) the budget uses (G: needs a GPU); not yet timed on a GPU:
# after a run, put results.md's times here.
#    1 environment and capture check                      40
#    2 decode CIFAR-10                                    30
#    3 W-MSE 2, --cuda_graph on                         G 60
#    4 W-MSE 2, --cuda_graph off                        G 60
#    5 reference code (bench_reference)                 G 70
#    6 GPU tests of captured steps                        90
#    7 other GPU tests, not compiled                    G 120
#    8 CW-RGP 2, BYOL, W-MSE 4                          G 120
#    9 4 packed W-MSE 2 trials                          G 150
#   10 25-epoch W-MSE 2 run                             G 150
#   11 profile of W-MSE 2 and 4 steps                   G 60
#   12 GPU tests, compiled                              G 150
# 1: `benchmarks.capture_check`: cholesky_ex + solve_triangular on [48, 64, 64] captured and
# replayed without a sync; a capture broken on purpose, then eager steps (the fallback of
# --cuda_graph auto). 2: gpu_data/ into data/. 3, 4: bench_train, bs 512, 3 epochs (s/epoch:
# the median of epochs 2-3). 5: the reference's step, 20 s timed per setting. 6: pytest -m
# graph -x (strict captures, a graph asserted), 7: the rest of tests/test_gpu.py and
# tests/test_device.py. 8, 9: bench_train, 2 epochs. 10: bench_accuracy (against the
# reference's 25 epochs in BENCHMARKS.md). 11: profile_step. 12: the compiled-encoder tests.
# How to read results.md: stage 1's lines say whether this torch captures the whitening and
# recovers from a failed capture (if not, every later graph stage says "eager: the capture
# failed: ..." and why); each benchmark row has a "--cuda_graph: step ran as" column ("on:
# graph", "off: eager: --cuda_graph off"); stages 3 and 4 give the graph's speed-up; stage
# 5's s per 50k epoch over stage 3's is the ratio to the reference on this one card.
#
# The optional second call (--sweep): carry ["gpu_wheels", "gpu_subset"] (gpu_wheels/ from
# benchmarks/device_wheels.sh, 49.4 MiB; gpu_subset/ from `python -m benchmarks.jpeg_subset
# ../shared/datasets/cifar10-jpeg gpu_subset`: 8,000 training and 2,000 test images, about
# 9 MiB), command `PYTHON=python3 benchmarks/gpu_check.sh $OUT --sweep --budget SECONDS`:
#    1 install gpu_wheels/                                30
#    2 decode the CIFAR-10 subset                         30
#    3 2-trial packed sweep through Ray                 G 180
#
# --extra is added to every bench_train and bench_accuracy command; PYTHON names the
# interpreter (default: python). A dry run on a CPU machine (GPU stages skip, the rest runs):
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh /tmp/gc --budget 540
# tests/test_gpu_check.py runs it: it ends within its budget and names every stage in order.
set -uo pipefail
usage="usage: benchmarks/gpu_check.sh OUT_DIR [--sweep] [--budget SECONDS] [--extra ARGS]   \
(--help: what it carries, runs and skips)"
case ${1:-} in
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "" | -*) echo "$usage" >&2; exit 2 ;;
esac
OUT=$1
shift
BUDGET=540 SWEEP=0 EXTRA=""
while [ $# -gt 0 ]; do
    case $1 in
        --budget) BUDGET=${2:-}; shift 2 || shift ;;
        --sweep) SWEEP=1; shift ;;
        --extra) EXTRA=${2:-}; shift 2 || shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
if ! [[ $BUDGET =~ ^[0-9]+$ ]] || [ "$BUDGET" -gt 590 ]; then
    echo "error: --budget must be a whole number of seconds up to 590 (a command may run" \
        "600 s), not '$BUDGET'" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.md
export PYTHONPATH=$PWD WSL_RAY_BENCHMARKS_MD=$RESULTS WSL_RAY_CACHE=${WSL_RAY_CACHE:-/tmp/wsl_ray_cache}
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
SITE=${WSL_RAY_SITE:-/tmp/gpu_site}
START=$(date +%s)
GPU=0
"$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2> /dev/null && GPU=1

note() { echo "- $*" >> "$RESULTS"; }

# stage N NAME ESTIMATE_S gpu|any COMMAND...: runs COMMAND if it may run here and ESTIMATE_S
# fits in what is left of the budget; one line in results.md either way.
stage() {
    local n=$1 name=$2 estimate=$3 needs=$4
    shift 4
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$needs" = gpu ] && [ "$GPU" -eq 0 ]; then
        note "$n $name: skipped (needs a GPU)"
        return
    fi
    if [ "$estimate" -gt "$left" ]; then
        note "$n $name: skipped (needs about $estimate s, $left s left)"
        return
    fi
    local t0
    t0=$(date +%s)
    echo "== $n $name (about $estimate s, $left s left)" | tee -a "$OUT/log.txt"
    timeout "$left" "$@" 2>&1 | tee -a "$OUT/log.txt"
    local rc=${PIPESTATUS[0]}
    note "$n $name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in $(($(date +%s) - t0)) s"
}

# decode N NAME FOLDER: stage N decodes FOLDER's JPEG copy into data/ (needs nothing else).
decode() {
    if [ -d data/cifar-10-batches-py ]; then
        note "$1 $2: skipped (data/cifar-10-batches-py is there)"
    elif [ -f "$3/cifar10_jpeg.npz" ]; then
        stage "$1" "$2" 30 any "$PY" "$3/to_batches.py" data
    else
        note "$1 $2: skipped (no $3/cifar10_jpeg.npz: carry $3/; stages that read CIFAR-10 fail)"
    fi
}

{
    echo "# gpu_check $([ "$SWEEP" -eq 1 ] && echo "--sweep ")$(date -u +%FT%TZ), budget ${BUDGET} s${EXTRA:+, extra: $EXTRA}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, 'cuda', torch.version.cuda, '| GPU', torch.cuda.is_available())"
} >> "$RESULTS"

# shellcheck disable=SC2086  # EXTRA is an argument list
if [ "$SWEEP" -eq 0 ]; then
    W2=(-m benchmarks.bench_train --settings "W-MSE 2" --compile off --epochs 2 --device cuda)
    stage 1 "environment and capture check" 40 any "$PY" -m benchmarks.capture_check
    decode 2 "decode CIFAR-10" gpu_data
    stage 3 "W-MSE 2, --cuda_graph on" 60 gpu "$PY" "${W2[@]}" --cuda_graph on $EXTRA
    stage 4 "W-MSE 2, --cuda_graph off" 60 gpu "$PY" "${W2[@]}" --cuda_graph off $EXTRA
    if [ -d gpu_ref/self-supervised ] || [ "$GPU" -eq 0 ]; then  # (no GPU: that reason first)
        stage 5 "reference code (bench_reference)" 70 gpu "$PY" -m benchmarks.bench_reference \
            --ref_dir gpu_ref/self-supervised --data_dir data --device cuda --max_s 20
    else
        note "5 reference code (bench_reference): skipped (no gpu_ref/self-supervised: carry gpu_ref/)"
    fi
    stage 6 "GPU tests of captured steps" 90 any "$PY" -m pytest -q -x -p no:cacheprovider \
        -m graph tests/test_gpu.py
    stage 7 "other GPU tests, not compiled" 120 gpu "$PY" -m pytest -q -p no:cacheprovider \
        -m "not graph" -k "not compiled" tests/test_gpu.py tests/test_device.py
    stage 8 "CW-RGP 2, BYOL, W-MSE 4" 120 gpu "$PY" -m benchmarks.bench_train --settings \
        "CW-RGP 2" BYOL "W-MSE 4" --compile off --epochs 1 --device cuda $EXTRA
    stage 9 "4 packed W-MSE 2 trials" 150 gpu "$PY" -m benchmarks.bench_train --settings \
        "W-MSE 2" --compile off --epochs 1 --device cuda --trials-per-gpu 4 $EXTRA
    stage 10 "25-epoch W-MSE 2 run" 150 gpu "$PY" -m benchmarks.bench_accuracy --epochs 25 \
        --device cuda $EXTRA
    stage 11 "profile of W-MSE 2 and 4 steps" 60 gpu "$PY" -m benchmarks.profile_step \
        --device cuda --cuda_graph auto
    stage 12 "GPU tests, compiled" 150 gpu "$PY" -m pytest -q -p no:cacheprovider \
        -k compiled tests/test_gpu.py
else
    has_ray() { "$PY" -c "import ray, optuna" 2> /dev/null; }
    if has_ray || PYTHONPATH=$SITE:$PYTHONPATH has_ray; then
        note "1 install gpu_wheels/: skipped (Ray and Optuna import already)"
    elif compgen -G "gpu_wheels/*.whl" > /dev/null; then
        stage 1 "install gpu_wheels/" 30 any "$PY" -m pip install -q --no-index --no-deps \
            --no-compile --no-cache-dir --upgrade --target "$SITE" gpu_wheels/*.whl
    else
        note "1 install gpu_wheels/: skipped (no gpu_wheels/: benchmarks/device_wheels.sh builds it)"
    fi
    export PYTHONPATH=$SITE:$PYTHONPATH
    decode 2 "decode the CIFAR-10 subset" gpu_subset
    if has_ray || [ "$GPU" -eq 0 ]; then
        stage 3 "2-trial packed sweep through Ray" 180 gpu "$PY" -m wsl_ray.tune --space wmse \
            --dataset cifar10 --data_dir data --storage "$OUT/sweep" --name gpu-check \
            --num_trials 2 --epochs 2 --eval_every 1 --gpus-per-trial 0.5 --cpus-per-trial 4 \
            --seed 0 --set arch=resnet18 bs=512 lr_warmup=false lr_step=none
    else
        note "3 2-trial packed sweep through Ray: skipped (Ray and Optuna do not import)"
    fi
fi
echo "done in $(($(date +%s) - START)) s of ${BUDGET} s" >> "$RESULTS"
