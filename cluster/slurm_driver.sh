#!/bin/bash
# The sweep driver of a Slurm job, run on the head node once Ray is up there:
#   slurm_driver.sh ADDRESS NODES STATE_DIR [python -m wsl_ray.tune flags]
# Waits until NODES Ray nodes are alive (WSL_RAY_NODE_WAIT seconds, default 300): `ray
# symmetric-run` exits 0 even when `ray start` failed, so the job checks the cluster itself.
# Then runs the sweep, its PID in STATE_DIR/driver.pid (for the wall-time signal) and its exit
# code in STATE_DIR/driver.rc (no such file: the sweep never ran).
set -u
address=$1 nodes=$2 state=$3
shift 3
export RAY_ADDRESS=$address
python - "$nodes" <<'PY' || exit 3
import os, sys, time

import ray

want, wait = int(sys.argv[1]), float(os.environ.get("WSL_RAY_NODE_WAIT", 300))
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR")
deadline = time.time() + wait
while (alive := sum(node["Alive"] for node in ray.nodes())) < want:
    if time.time() > deadline:
        sys.exit(f"error: {alive} of {want} Ray nodes came up within {wait:.0f} s")
    time.sleep(5)
print(f"Ray cluster ready: {alive} node(s), {ray.cluster_resources()}", flush=True)
PY
python -u -m wsl_ray.tune "$@" &
echo $! > "$state/driver.pid"
wait $!
rc=$?
echo "$rc" > "$state/driver.rc"
exit "$rc"
