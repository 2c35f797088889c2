#!/usr/bin/env bash
# star-head: runs `star serve` beside a Ray head, in the same container (KubeRay) or VM (ray up).
#
#   star-head [STAR SERVE FLAGS...]   wait for the local Ray head, then run
#                                     `star serve --ray-address ADDR FLAGS...`, restarting it
#                                     whenever it exits with an error
#   star-head --stop                  stop it (the loop and the service) for good and wait
#                                     until both have exited (at most STAR_STOP_TIMEOUT_S,
#                                     default 20): for a preStop hook, or before starting anew
# One loop at a time: a second star-head refuses to start while the first one runs.
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
loop_pid_file="$run_dir/star-head.pid"
stop_file="$run_dir/stop"
restart_delay_s="${STAR_RESTART_DELAY_S:-5}"
ray_address="${RAY_ADDRESS:-auto}"

log() { echo "star-head: $*" >&2; }

if [[ "${1:-}" == "--stop" ]]; then
    mkdir -p "$run_dir" && touch "$stop_file"
    [[ -f "$loop_pid_file" ]] || exit 0
    pid="$(cat "$loop_pid_file")"
    kill -TERM "$pid" 2>/dev/null || exit 0
    deadline=$((SECONDS + ${STAR_STOP_TIMEOUT_S:-20}))
    # The loop removes its pid file as it exits (checked first: an exited loop whose parent has
    # not reaped it yet still answers kill -0).
    while [[ -f "$loop_pid_file" ]] && kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    exit 0
fi

mkdir -p "$run_dir"
if [[ -f "$loop_pid_file" ]] && kill -0 "$(cat "$loop_pid_file")" 2>/dev/null; then
    log "already running (pid $(cat "$loop_pid_file")); stop it first with: star-head --stop"
    exit 1
fi
echo "$$" >"$loop_pid_file"
trap 'rm -f "$loop_pid_file" "$pid_file"' EXIT
rm -f "$stop_file"
# A SIGTERM to star-head itself stops the service too.
trap 'touch "$stop_file"; [[ -f "$pid_file" ]] && kill -TERM "$(cat "$pid_file")" 2>/dev/null' TERM INT

until ray health-check --address "$ray_address" >/dev/null 2>&1; do
    [[ -f "$stop_file" ]] && exit 0
    log "waiting for the Ray head at $ray_address"
    sleep "$restart_delay_s"
done

while [[ ! -f "$stop_file" ]]; do
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
    elif [[ "$status" -eq 0 ]]; then
        log "star serve exited normally; not restarting"
        exit 0
    else
        log "star serve exited with status $status; restarting in ${restart_delay_s} s"
        sleep "$restart_delay_s"
    fi
done
