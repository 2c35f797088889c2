#!/usr/bin/env bash
# star-head: runs `star serve` beside a Ray head, in the same container (KubeRay) or VM (ray up).
#
#   star-head [STAR SERVE FLAGS...]   wait for the local Ray head, then run
#                                     `star serve --ray-address ADDR FLAGS...`, restarting it
#                                     whenever it exits with an error
#   star-head --stop                  stop it for good and wait (at most STAR_STOP_TIMEOUT_S,
#                                     default 20) until it has exited: for a preStop hook
#
# The service keeps its state in SQLite and its checkpoints under --data-dir, so a restarted
# `star serve` picks its jobs up; Ray itself never depends on this process.
# Environment: RAY_ADDRESS (KubeRay sets it to the head's GCS; default "auto", the Ray instance
# started on this machine), STAR_RESTART_DELAY_S (default 5), STAR_HEAD_RUN_DIR (pid and stop
# files, default /tmp/star-head). Ray's token authentication needs RAY_AUTH_MODE=token and the
# token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) in this environment, as for
# any Ray process on the node.
set -u

run_dir="${STAR_HEAD_RUN_DIR:-/tmp/star-head}"
pid_file="$run_dir/star-serve.pid"
stop_file="$run_dir/stop"
restart_delay_s="${STAR_RESTART_DELAY_S:-5}"
ray_address="${RAY_ADDRESS:-auto}"

log() { echo "star-head: $*" >&2; }

if [[ "${1:-}" == "--stop" ]]; then
    mkdir -p "$run_dir" && touch "$stop_file"
    [[ -f "$pid_file" ]] || exit 0
    pid="$(cat "$pid_file")"
    kill -TERM "$pid" 2>/dev/null || exit 0
    deadline=$((SECONDS + ${STAR_STOP_TIMEOUT_S:-20}))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    exit 0
fi

mkdir -p "$run_dir"
rm -f "$stop_file"
# A SIGTERM to star-head itself stops the service too.
trap 'touch "$stop_file"; [[ -f "$pid_file" ]] && kill -TERM "$(cat "$pid_file")" 2>/dev/null' TERM INT

until ray health-check --address "$ray_address" >/dev/null 2>&1; do
    [[ -f "$stop_file" ]] && exit 0
    log "waiting for the Ray head at $ray_address"
    sleep "$restart_delay_s"
done

while true; do
    star serve --ray-address "$ray_address" "$@" &
    child=$!
    echo "$child" >"$pid_file"
    # `wait` returns early when a trapped signal arrives; wait again until the child is gone.
    status=0
    wait "$child" || status=$?
    while kill -0 "$child" 2>/dev/null; do
        wait "$child" || status=$?
    done
    rm -f "$pid_file"
    if [[ -f "$stop_file" ]]; then
        log "stopped (star serve exited with status $status)"
        exit 0
    fi
    if [[ "$status" -eq 0 ]]; then
        log "star serve exited normally; not restarting"
        exit 0
    fi
    log "star serve exited with status $status; restarting in ${restart_delay_s} s"
    sleep "$restart_delay_s"
done
