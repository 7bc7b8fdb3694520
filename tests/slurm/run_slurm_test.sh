#!/bin/bash
# A real one-node Slurm on this machine runs cluster/slurm.sbatch (or slurm-shared.sbatch)
# with a tiny shapes sweep, through a wall-time interruption:
#
#   sudo tests/slurm/run_slurm_test.sh [cluster/slurm.sbatch|cluster/slurm-shared.sbatch]
#
# Needs root and apt (Debian 12: slurm-wlm 22.05 and munge are installed if missing). Outside
# the pytest suite: it takes several minutes. munged, slurmctld and slurmd run with their own
# SLURM_CONF, state folders, socket and ports, inside a PID and network namespace of their own
# (loopback and a veth pair): symmetric-run's final `ray stop` then sees only this test's Ray, and no
# port meets another Ray on the machine. The test:
#   1. submits the job (2 CPUs, 2 trials of 4 epochs) under a timeout around `sbatch --wait`;
#   2. holds the first trial after its epoch 1 (the fault-injection point WSL_RAY_FAULT_HOLD,
#      docs/reliability.md) and, while it is held, checks token authentication when
#      RAY_AUTH_MODE=token (the default here; tests/slurm/check_token.py);
#   3. sends the job's batch shell SIGTERM, as --signal=B:TERM@120 does before the wall time:
#      the job stops the sweep driver and resubmits itself; once the first job has ended, the
#      holds are released;
#   4. waits for the resubmitted job, which must resume the experiment (--resume) and finish;
#   5. asserts that the resubmitted job trained (wrote checkpoints), that results.parquet
#      holds every trial, terminated at the last epoch, and that no job is left.
# The daemons are stopped by their PIDs at the end.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SCRIPT=${1:-cluster/slurm.sbatch}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[[ -x "$PYTHON" ]] || PYTHON=$(command -v python3)
TIMEOUT=${SLURM_TEST_TIMEOUT:-1200}

if [[ -z "${SLURM_TEST_INSIDE:-}" ]]; then
    [[ $(id -u) == 0 ]] || { echo "error: run as root (it starts slurmctld and slurmd)"; exit 2; }
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge
    fi
    exec env SLURM_TEST_INSIDE=1 unshare --pid --net --mount-proc --fork "$0" "$@"
fi

ip link set lo up
# Slurm resolves its listening address with AI_ADDRCONFIG, which wants a non-loopback address
ip link add wslv0 type veth peer name wslv1
ip addr add 10.213.0.1/24 dev wslv0
ip link set wslv0 up && ip link set wslv1 up
WORK=$(mktemp -d /tmp/wsl-slurm-test.XXXXXX)
HOST=$(hostname -s)
mkdir -p "$WORK"/{ctld,d,log,munge,sweeps,cache}
chown munge:munge "$WORK/munge"
chmod 755 "$WORK" "$WORK/munge"
export SLURM_CONF="$WORK/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=wsltest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$WORK/munge/munge.sock
StateSaveLocation=$WORK/ctld
SlurmdSpoolDir=$WORK/d
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
EnforcePartLimits=ALL
MailProg=/bin/true
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

stop_daemons() {
    for pidfile in "$WORK/slurmd.pid" "$WORK/slurmctld.pid" "$WORK/munged.pid"; do
        [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
}
trap stop_daemons EXIT

runuser -u munge -- munged --socket="$WORK/munge/munge.sock" \
    --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" \
    --seed-file="$WORK/munge/seed"
cp "$WORK/munge/munged.pid" "$WORK/munged.pid"
slurmctld
slurmd
for _ in $(seq 30); do
    [[ "$(sinfo -h -o %t 2>/dev/null)" == idle ]] && break
    sleep 1
done
echo "slurm: $(sinfo -h -o '%P %D %c %t')"

cat > "$WORK/tiny.yaml" <<EOF
config: {method: w_mse, dataset: shapes, arch: resnet18_w8, head_size: 64, bs: 128,
         subset: 512, lr_warmup: false, w_eps: 0.01, ckpt_every: 1, emb: 16, w_size: 64}
params:
  lr: {distribution: loguniform, low: 1.0e-3, high: 5.0e-3}
first: {lr: 3.0e-3}
EOF
export PATH="$(dirname "$PYTHON"):$PATH" PYTHONPATH="$REPO" WSL_RAY_CACHE="$WORK/cache"
export WSL_RAY_HEAD_IP=127.0.0.1 WANDB_MODE=offline RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export WSL_RAY_SBATCH_ARGS="--output=$WORK/job-%j.out"  # for the resubmitted job
export WSL_RAY_PORT_BASE=20000 WSL_RAY_FAULT_HOLD="1:$WORK/hold"
mkdir "$WORK/hold"
# the head's dashboard: symmetric-run's default port, or the shared script's base + 7
[[ "$SCRIPT" == *shared* ]] && DASHBOARD=127.0.0.1:20007 || DASHBOARD=127.0.0.1:8265
cd "$REPO"
EXPERIMENT="$WORK/sweeps/slurm"
EPOCHS=4
start=$(date +%s)
timeout "$TIMEOUT" sbatch --wait --nodes=1 --cpus-per-task=2 --output="$WORK/job-%j.out" \
    "$SCRIPT" --space "$WORK/tiny.yaml" --storage "$WORK/sweeps" --name slurm --num_trials 2 \
    --epochs "$EPOCHS" --eval_every 1 --scheduler fifo --max-failures 1 \
    > "$WORK/sbatch.out" &
waiter=$!
until [[ -s "$WORK/sbatch.out" ]]; do
    kill -0 "$waiter" 2>/dev/null || { echo "FAIL: sbatch failed"; exit 1; }
    sleep 1
done
first=$(awk '/Submitted batch job/ {print $4}' "$WORK/sbatch.out")
echo "job $first submitted ($SCRIPT)"
until [[ -e "$WORK/hold/held-1" ]]; do
    (($(date +%s) - start < TIMEOUT)) || { echo "FAIL: no trial reported"; exit 1; }
    # sbatch --wait lives as long as the job (and rides out a slurmctld too busy to answer)
    kill -0 "$waiter" 2>/dev/null ||
        { cat "$WORK"/job-*.out; echo "FAIL: job ended before a trial was held"; exit 1; }
    sleep 2
done
echo "a trial is held after its epoch 1 ($(($(date +%s) - start)) s)"
if [[ "$RAY_AUTH_MODE" == token ]]; then
    "$PYTHON" "$REPO/tests/slurm/check_token.py" "$WORK/sweeps/.slurm/slurm/$first/auth_token" \
        "$WORK/hold/held-1" "$DASHBOARD"
fi
echo "SIGTERM to the batch shell (wall time)"
scancel --batch --signal=TERM "$first"
wait "$waiter" || echo "job $first exited with $?"
touch "$WORK/first.done"
# the held trial ended with the first job; a trial of the resubmitted job may arrive as run 2
touch "$WORK/hold/release-1" "$WORK/hold/release-2"
while [[ -n "$(squeue -h -o %i)" ]]; do
    (($(date +%s) - start < TIMEOUT)) || { echo "FAIL: timed out"; squeue; exit 1; }
    [[ ! -e "$WORK/hold/held-3" ]] ||
        { echo "FAIL: a trial reported its epoch 1 again: it did not resume"; exit 1; }
    sleep 3
done
echo "chain done after $(($(date +%s) - start)) s"
for out in "$WORK"/job-*.out; do
    echo "== $(basename "$out"):"
    grep -E "resuming|wall time|Ray cluster ready|sweep driver exited|Submitted|error" "$out" || true
done
jobs=$(ls "$WORK"/job-*.out | wc -l)
second=$(ls "$WORK"/job-*.out | grep -v "job-$first.out" | head -n 1)
grep -q "wall time: stopping the sweep driver" "$WORK/job-$first.out"
grep -q "resuming the experiment" "$second"
grep -q "sweep driver exited with 0" "$second"
"$PYTHON" - "$EXPERIMENT/results.parquet" "$EPOCHS" <<'EOF'
import sys

import pyarrow.parquet as pq

rows = pq.read_table(sys.argv[1]).to_pylist()
print("results:", [(r["trial_id"], r["status"], r["epochs"]) for r in rows])
assert len(rows) == 2, rows
assert all(r["status"] == "TERMINATED" and r["epochs"] == int(sys.argv[2]) for r in rows), rows
EOF
[[ $jobs == 2 ]] || { echo "FAIL: expected 2 jobs in the chain, got $jobs"; exit 1; }
resumed=$(find "$EXPERIMENT" -mindepth 2 -maxdepth 2 -path "*/train-*/checkpoint_*" \
    -newer "$WORK/first.done" | wc -l)
echo "checkpoints written by the resubmitted job: $resumed"
((resumed > 0)) || { echo "FAIL: the resubmitted job trained nothing"; exit 1; }
echo "PASS: $SCRIPT (RAY_AUTH_MODE=$RAY_AUTH_MODE) ran, was interrupted, resubmitted itself," \
    "resumed and finished every trial"
