#!/usr/bin/env bash
# A lent GPU session (15 minutes of device time, start-up and idle seconds included) in two
# calls of the device tool, each command under its 10-minute limit:
#
#   benchmarks/gpu_check.sh OUT_DIR --call 1|2 [--budget SECONDS] [--quick] [--extra "BENCH ARGS"]
#
# Call 1, carry gpu_data/ (cifar10_jpeg.npz and to_batches.py from
# shared/datasets/cifar10-jpeg/: 53.6 MiB, with the checkout's 1.0 MiB 54.6 of the 64 MiB):
# the profile and the speed figures. Stages in order of value, with the estimate the budget
# uses (s):
#   decode CIFAR-10 into data/ 30 | GPU tests, eager 90 | profile of W-MSE 2 and 4 steps 60 |
#   W-MSE 2 compiled epoch 100 | other settings, compiled 200 | GPU tests, compiled 150 |
#   whitening kernels 60 | 4 packed W-MSE 2 trials 180 | every setting, eager 150
# Call 2, carry gpu_wheels/ (benchmarks/device_wheels.sh: 49.4 MiB) and gpu_ref/ (the
# htdt/self-supervised checkout), 50.4 MiB in all with the checkout: the 25-epoch run and
# the sweep through Ray:
#   25-epoch W-MSE 2 run 200 | install gpu_wheels/ 30 | sweep, preset gpu 240 |
#   reference code 150 | SimSiam, 50 epochs 260 (the last two run only if time is left)
# The last H200 (2026-11-29) kept no per-stage times: its one call ran the stages of call 1
# and the 25-epoch run under --budget 540 in 396 s; BENCHMARKS.md ("First GPU run") has the
# parts: 36 s to compile W-MSE 2, 2.9 s a 50k epoch, 2.1 s an evaluation. results.md now
# records each stage's time ("- NAME: ok in N s"): put them here after the next GPU run.
#
# Chaining: the machine stays warm 30 s after a call, and ignored files it holds stay while it
# is warm unless a carry names them, so data/ decoded in call 1 serves call 2. Prepare both
# calls before the first (benchmarks/device_wheels.sh, gpu_data/, gpu_ref/), then issue call 2
# as soon as call 1 returns: carry ["gpu_wheels", "gpu_ref"], command
# `PYTHON=python3 benchmarks/gpu_check.sh $OUT --call 2` (never name data/ in carry: a
# carried path missing here is deleted there). Call 1: carry ["gpu_data"], the same command
# with --call 1. Give the machine back after call 2.
#
# If the machine went cold between the calls, call 2 finds no data/: it decodes gpu_data/ if
# that travels, but gpu_data/ and gpu_wheels/ together (103 MiB) exceed 64 MiB. Then: call 2
# with carry ["gpu_data", "gpu_ref"] (decode, the 25-epoch run, the reference; the sweep is
# skipped for want of Ray), then at once call 2 again with carry ["gpu_wheels"] and
# --skip-25 (data/ is decoded by then: install and the sweep). Without data the stages that
# read CIFAR-10 fail, and results.md says why first.
#
# Each result is appended to OUT_DIR/results.md the moment it is measured, so a timeout still
# returns all before it. --budget stops before a stage whose estimate would not fit in what is
# left (default 560 s: under the 600 s a command may run). --quick runs only call 1's first
# four stages (under 4 minutes). --extra is added to every bench_train and bench_accuracy
# command. PYTHON names the interpreter (default: python). Ray and Optuna come from
# gpu_wheels/, installed with --no-deps into $WSL_RAY_SITE (default /tmp/gpu_site), unless
# PYTHON imports them already. SWEEP_ARGS (default "--preset gpu --data_dir data") and
# REFERENCE_ARGS (default "--ref_dir gpu_ref/self-supervised --data_dir data --device cuda")
# are the sweep's and the reference's flags; a stage whose module is not in the checkout is
# skipped with a line in results.md.
#
# Dry runs on a CPU machine (no GPU: the GPU tests skip, the rest runs on shapes; each call
# stops within its budget, stages that no longer fit say so in results.md):
#   PYTHON=.venv/bin/python PROFILE_ARGS="--device cpu --arch resnet18_w8 --steps 2" \
#     WHITEN_DEVICE=cpu benchmarks/gpu_check.sh /tmp/gc1 --call 1 \
#     --extra "--dataset shapes --subset 512 --arch resnet18_w8 --device cpu"
#   PYTHON=.venv/bin/python SWEEP_ARGS="--preset cpu --plan --data_dir data" REFERENCE_ARGS="\
#     --ref_dir gpu_ref/self-supervised --data_dir data --device cpu --steps 1 --warmup 1 \
#     --bs 128 --num_workers 2 --no-record" benchmarks/gpu_check.sh /tmp/gc2 --call 2 \
#     --skip-25 --extra "--dataset shapes --subset 512 --arch resnet18_w8 --device cpu"
#   (the gpu preset on a CPU machine would wait for GPUs: the dry run plans the cpu preset;
#   run on 2026-12-04 with SWEEP_ARGS unset and the sweep stopped: every other stage ok, 130 s)
set -uo pipefail
usage="usage: benchmarks/gpu_check.sh OUT_DIR --call 1|2 [--budget SECONDS] [--quick] \
[--skip-25] [--extra ARGS]   (--help: what each call carries and runs)"
case ${1:-} in
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "" | -*) echo "$usage" >&2; exit 2 ;;
esac
OUT=$1
shift
CALL="" BUDGET=560 QUICK=0 SKIP25=0 EXTRA=""
while [ $# -gt 0 ]; do
    case $1 in
        --call) CALL=${2:-}; shift 2 || shift ;;
        --budget) BUDGET=${2:-}; shift 2 || shift ;;
        --quick) QUICK=1; shift ;;
        --skip-25) SKIP25=1; shift ;;
        --extra) EXTRA=${2:-}; shift 2 || shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
if [ "$CALL" != 1 ] && [ "$CALL" != 2 ]; then
    echo "error: --call must be 1 or 2, not '$CALL'; $usage" >&2
    exit 2
fi
if ! [[ $BUDGET =~ ^[0-9]+$ ]]; then
    echo "error: --budget must be a whole number of seconds, not '$BUDGET'" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$PWD WSL_RAY_BENCHMARKS_MD=$OUT/results.md WSL_RAY_CACHE=${WSL_RAY_CACHE:-/tmp/wsl_ray_cache}
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
SITE=${WSL_RAY_SITE:-/tmp/gpu_site}
START=$(date +%s)
{
    echo "# gpu_check call $CALL $(date -u +%FT%TZ), budget ${BUDGET} s${EXTRA:+, extra: $EXTRA}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} >> "$OUT/results.md"

note() { echo "- $*" >> "$OUT/results.md"; }

# stage NAME ESTIMATE_S COMMAND...: runs COMMAND if ESTIMATE_S fits in what is left.
stage() {
    local name=$1 estimate=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$estimate" -gt "$left" ]; then
        note "$name: skipped (needs about $estimate s, $left s left)"
        return
    fi
    local t0=$(date +%s)
    echo "== $name (about $estimate s)" | tee -a "$OUT/log.txt"
    timeout "$left" "$@" 2>&1 | tee -a "$OUT/log.txt"
    local rc=${PIPESTATUS[0]}
    note "$name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in $(($(date +%s) - t0)) s"
}

# module_stage NAME ESTIMATE_S MODULE ARGS...: a stage of `python -m MODULE`, skipped with a
# line where the checkout does not hold MODULE yet.
module_stage() {
    local name=$1 estimate=$2 module=$3
    shift 3
    if [ ! -f "${module//.//}.py" ]; then
        note "$name: skipped (${module//.//}.py is not in this checkout)"
        return
    fi
    stage "$name" "$estimate" "$PY" -m "$module" "$@"
}

if [ ! -d data/cifar-10-batches-py ]; then
    if [ -f gpu_data/cifar10_jpeg.npz ]; then
        stage "decode CIFAR-10 (JPEG copy)" 30 "$PY" gpu_data/to_batches.py data
    else
        note "no data/cifar-10-batches-py and no gpu_data/ to decode it from: stages that read" \
            "CIFAR-10 fail (call 1: carry gpu_data/; call 2: the machine went cold after" \
            "call 1, and --help says what to carry)"
    fi
fi

# shellcheck disable=SC2086  # EXTRA, PROFILE_ARGS, SWEEP_ARGS, REFERENCE_ARGS are argument lists
if [ "$CALL" = 1 ]; then
    stage "GPU tests, eager" 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py \
        tests/test_device.py -k "not compiled"
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
    stage "every setting, eager" 150 "$PY" -m benchmarks.bench_train --compile off --epochs 2 \
        $EXTRA
else
    if [ "$SKIP25" -eq 0 ]; then
        stage "25-epoch W-MSE 2 run" 200 "$PY" -m benchmarks.bench_accuracy --epochs 25 \
            --compile $EXTRA
    fi
    has_ray() { "$PY" -c "import ray, optuna" 2> /dev/null; }
    if has_ray; then
        note "Ray and Optuna: already importable by $PY, gpu_wheels/ not installed"
    elif PYTHONPATH=$SITE:$PYTHONPATH has_ray; then
        export PYTHONPATH=$SITE:$PYTHONPATH
        note "Ray and Optuna: installed in $SITE by an earlier call"
    elif compgen -G "gpu_wheels/*.whl" > /dev/null; then
        stage "install gpu_wheels/ into $SITE" 30 "$PY" -m pip install -q --no-index --no-deps \
            --no-compile --no-cache-dir --upgrade --target "$SITE" gpu_wheels/*.whl
        export PYTHONPATH=$SITE:$PYTHONPATH
    fi
    if has_ray; then
        stage "Ray and Optuna import" 15 "$PY" -c "import ray, optuna, ray.tune, ray.train.torch
import ray.dashboard.optional_deps
print('ray', ray.__version__, ray.__file__, '| optuna', optuna.__version__)"
        module_stage "sweep through Ray (bench_sweep)" 240 benchmarks.bench_sweep \
            ${SWEEP_ARGS:---preset gpu --data_dir data}
    else
        note "sweep through Ray: skipped (no Ray and Optuna: carry gpu_wheels/, which" \
            "benchmarks/device_wheels.sh builds)"
    fi
    if [ -d gpu_ref/self-supervised ]; then
        module_stage "reference code (bench_reference)" 150 benchmarks.bench_reference \
            ${REFERENCE_ARGS:---ref_dir gpu_ref/self-supervised --data_dir data --device cuda}
    else
        note "reference code: skipped (no gpu_ref/self-supervised: carry gpu_ref/)"
    fi
    # the issue's last stage, only if time is left: does SimSiam's slow start on shapes hold
    # on CIFAR-10? (the method's own defaults; its metrics.jsonl comes back under OUT/)
    stage "SimSiam, 50 epochs, full width" 260 "$PY" -m wsl_ray.train --method simsiam \
        --dataset cifar10 --data_dir data --epoch 50 --eval_every 10 --out "$OUT/simsiam" $EXTRA
fi
echo "done in $(($(date +%s) - START)) s" >> "$OUT/results.md"
