# Shared by cluster/slurm.sbatch and cluster/slurm-shared.sbatch (sourced, not run).
#
# wsl_setup "$@"       checks the sweep flags, sets HEAD_IP, EXPERIMENT, STATE_DIR and
#                      SWEEP_ARGS (the flags, plus --resume when the experiment exists)
# wsl_run_driver CMD.. runs the step that starts Ray and the sweep in the background, forwards
#                      the wall-time signal (SIGTERM from --signal=B:TERM@120) to the sweep
#                      driver as SIGUSR1 (Tune then saves the experiment state and stops its
#                      trials, which resume from their last checkpoints), resubmits this
#                      script with --dependency=afterany, and returns the driver's exit code.
#                      A job that ends without that signal submits nothing: the chain ends.
# wsl_auth_token       (called by wsl_setup) token authentication, on unless RAY_AUTH_MODE is
#                      "disabled": a new token for this job in STATE_DIR/auth_token (mode 600,
#                      on the shared filesystem), and RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH
#                      exported, which srun passes on to every node's Ray and the sweep driver.

wsl_setup() {
    USER_ARGS=("$@")
    SWEEP_ARGS=("$@")
    local storage="" name="" i
    for ((i = 0; i < $#; i++)); do
        case "${SWEEP_ARGS[i]}" in
            --storage) storage="${SWEEP_ARGS[i + 1]}" ;;
            --storage=*) storage="${SWEEP_ARGS[i]#--storage=}" ;;
            --name) name="${SWEEP_ARGS[i + 1]}" ;;
            --name=*) name="${SWEEP_ARGS[i]#--name=}" ;;
            --resume) echo "error: do not pass --resume: the job adds it when $storage/$name exists" >&2
                      exit 2 ;;
        esac
    done
    if [[ -z "$storage" || -z "$name" || "$storage" == *://* ]]; then
        echo "error: pass --storage DIR on the shared filesystem and --name NAME" >&2
        exit 2
    fi
    EXPERIMENT="$(realpath -m "$storage")/$name"
    SWEEP_ARGS+=(--storage "$(realpath -m "$storage")")
    if [[ -f "$EXPERIMENT/tuner.pkl" ]]; then  # what Tuner.can_restore looks for
        echo "resuming the experiment $EXPERIMENT"
        SWEEP_ARGS+=(--resume)
    fi
    HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    # the batch script runs on the first node: the head
    HEAD_IP=${WSL_RAY_HEAD_IP:-$(hostname --ip-address | awk '{print $1}')}
    # beside the experiment, not in it: a new sweep refuses a --name whose folder is not empty
    STATE_DIR="$(realpath -m "$storage")/.slurm/$name/$SLURM_JOB_ID"
    mkdir -p "$STATE_DIR"
    export RAY_USAGE_STATS_ENABLED=0
    wsl_auth_token
}

wsl_auth_token() {
    if [[ "${RAY_AUTH_MODE:-token}" == disabled ]]; then
        echo "warning: RAY_AUTH_MODE=disabled: anyone who reaches the nodes can run code on Ray" >&2
        return
    fi
    # RAY_AUTH_TOKEN would win over the file: a token from elsewhere is not this job's
    unset RAY_AUTH_TOKEN
    local token="$STATE_DIR/auth_token"
    (umask 077 && python -c 'import secrets; print(secrets.token_hex(32), end="")' > "$token")
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$token"
}

_wsl_on_wall_time() {
    local pid
    pid=$(cat "$STATE_DIR/driver.pid" 2>/dev/null || true)
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        echo "wall time: stopping the sweep driver $pid and resubmitting after job $SLURM_JOB_ID"
        local limit given=()
        limit=$(squeue -h -j "$SLURM_JOB_ID" -o %l)
        # options of this job that the script's #SBATCH lines would otherwise override
        if [[ -n "${SLURM_CPUS_PER_TASK:-}" ]]; then
            given+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
        fi
        if [[ "${SLURM_GPUS_ON_NODE:-0}" != 0 ]]; then
            given+=(--gres=gpu:"$SLURM_GPUS_ON_NODE")
        fi
        # shellcheck disable=SC2086  # WSL_RAY_SBATCH_ARGS holds several options
        sbatch --dependency="afterany:$SLURM_JOB_ID" --nodes="$SLURM_JOB_NUM_NODES" \
            --partition="$SLURM_JOB_PARTITION" --time="$limit" "${given[@]}" \
            ${WSL_RAY_SBATCH_ARGS:-} "$WSL_RAY_DIR/$WSL_RAY_SCRIPT" "${USER_ARGS[@]}"
        kill -USR1 "$pid"
    fi
}

wsl_run_driver() {
    trap _wsl_on_wall_time TERM
    "$@" &
    local step=$! rc
    # `wait` returns early when the trap runs; wait again until the step has ended
    while true; do
        wait "$step" && rc=0 || rc=$?
        kill -0 "$step" 2>/dev/null || break
    done
    trap - TERM
    if [[ ! -f "$STATE_DIR/driver.rc" ]]; then
        echo "error: the sweep never started (Ray did not come up on every node); see above" >&2
        return 1
    fi
    rc=$(cat "$STATE_DIR/driver.rc")
    echo "sweep driver exited with $rc"
    return "$rc"
}
