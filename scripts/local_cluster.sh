#!/usr/bin/env bash
# Local development cluster: a single-node Ray head and an MLflow tracking server, both bound to
# 127.0.0.1, with pid and log files under <repo>/.cluster/.
#
#   scripts/local_cluster.sh start    # start both, wait until they answer, print the env to export
#   scripts/local_cluster.sh status   # exit 0 when both answer, 3 when neither runs, 1 otherwise
#   scripts/local_cluster.sh stop     # stop both (only the processes this script started)
#
#   eval "$(scripts/local_cluster.sh start)"   # start and export RAY_ADDRESS / MLFLOW_TRACKING_URI
#
# Settings (environment): VENV (default <repo>/.venv; falls back to `ray`/`mlflow` on PATH),
# SSEG_CLUSTER_DIR (default <repo>/.cluster), RAY_PORT (6379), DASHBOARD_PORT (8265),
# DASHBOARD_AGENT_PORT (first free port from 52365), MLFLOW_PORT (5000), NUM_CPUS (nproc),
# START_TIMEOUT_S (120), RAY_AUTH_MODE (default disabled).
#
# Token auth: Ray 2.60 turns token auth on for clusters started by `ray.init()` (and for `ray
# start` whenever a token file exists). Here every port listens on 127.0.0.1 only, so nobody off
# this machine can reach the cluster and a token adds nothing but a step for every client; the
# default is RAY_AUTH_MODE=disabled. Run with RAY_AUTH_MODE=token (after `ray get-auth-token
# --generate`) to rehearse the setup of a real cluster, where token auth must stay on.
#
# `stop` does not call `ray stop`: that kills every Ray process of this user on the machine,
# including clusters that other sessions or test runs started. Ray is started with `--block` in a
# process group of its own, and stopping it means sending SIGTERM to that group; `ray start
# --block` then shuts down the head's daemons and workers.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO_ROOT/.venv}
CLUSTER_DIR=${SSEG_CLUSTER_DIR:-$REPO_ROOT/.cluster}
HOST=127.0.0.1
RAY_PORT=${RAY_PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
AGENT_PORT_FILE=$CLUSTER_DIR/agent.port
MLFLOW_PORT=${MLFLOW_PORT:-5000}
NUM_CPUS=${NUM_CPUS:-$(nproc)}
START_TIMEOUT_S=${START_TIMEOUT_S:-120}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-30}
AUTH_MODE=${RAY_AUTH_MODE:-disabled}

RAY_PID_FILE=$CLUSTER_DIR/ray.pid
MLFLOW_PID_FILE=$CLUSTER_DIR/mlflow.pid
RAY_LOG=$CLUSTER_DIR/ray.log
MLFLOW_LOG=$CLUSTER_DIR/mlflow.log
DASHBOARD_URL=http://$HOST:$DASHBOARD_PORT
MLFLOW_URL=http://$HOST:$MLFLOW_PORT

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Ray keeps Unix sockets under its temp dir and their paths must stay below ~107 bytes; a private
# temp dir also keeps `ray.init()` in other processes from attaching to this cluster through
# /tmp/ray/ray_current_cluster.
ray_temp_dir() {
    if [[ -n "${RAY_TEMP_DIR:-}" ]]; then
        echo "$RAY_TEMP_DIR"
    elif (( ${#CLUSTER_DIR} <= 40 )); then
        echo "$CLUSTER_DIR/ray"
    else
        echo "/tmp/sseg-ray-$(id -u)-$(echo "$CLUSTER_DIR" | cksum | cut -d' ' -f1)"
    fi
}

find_tool() {
    local name=$1
    if [[ -x "$VENV/bin/$name" ]]; then
        echo "$VENV/bin/$name"
    elif command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    else
        die "'$name' not found in $VENV/bin or on PATH (set VENV or activate the project venv)"
    fi
}

RAY_COMMAND_MARK="ray start --head"
MLFLOW_COMMAND_MARK="mlflow server"

# pid_alive <pidfile> <command mark>: the recorded process runs and is still the one we started
# (a stale pid file may name a pid that the system has since given to another program).
pid_alive() {
    [[ -f "$1" ]] || return 1
    local pid args
    pid=$(cat "$1")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    args=$(ps -o args= -p "$pid" 2>/dev/null) || return 1
    [[ "$args" == *"$2"* ]]
}

group_alive() {  # group_alive <pgid>: any process of the group that is not a zombie
    ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found = 1} END {exit !found}'
}

port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

port_free_or_fail() {  # port_free_or_fail <port> <variable that sets it>
    if port_in_use "$1"; then
        log "error: port $1 is in use by another process (set $2)"
        return 1
    fi
}

# Ray's default agent port (52365) is taken by any other Ray instance on this machine (a test's
# ray.init(), say), so unless DASHBOARD_AGENT_PORT is given, take the first free one from there.
choose_agent_port() {
    if [[ -n "${DASHBOARD_AGENT_PORT:-}" ]]; then
        port_free_or_fail "$DASHBOARD_AGENT_PORT" DASHBOARD_AGENT_PORT || return 1
        echo "$DASHBOARD_AGENT_PORT"
        return 0
    fi
    local port
    for port in $(seq 52365 52464); do
        if ! port_in_use "$port"; then echo "$port"; return 0; fi
    done
    log "error: no free port in 52365-52464 for the dashboard agent (set DASHBOARD_AGENT_PORT)"
    return 1
}

agent_port() { cat "$AGENT_PORT_FILE" 2>/dev/null || echo "${DASHBOARD_AGENT_PORT:-52365}"; }

auth_header_args() {
    if [[ "$AUTH_MODE" == token ]]; then
        local token
        token=$("$RAY" get-auth-token 2>/dev/null) \
            || die "RAY_AUTH_MODE=token but no Ray token found: run '$RAY get-auth-token --generate'"
        printf '%s\n' -H "Authorization: Bearer $token"
    fi
}

http_ok() {  # http_ok <url> [curl args...]
    local url=$1; shift
    curl --silent --fail --max-time 3 "$@" "$url" >/dev/null 2>&1
}

# The dashboard answering is not enough: `ray job submit` also needs the head's dashboard agent
# (it runs the job supervisor), which registers a few seconds later.
ray_answers() {
    local args=()
    mapfile -t args < <(auth_header_args)
    http_ok "$DASHBOARD_URL/api/version" "${args[@]}" \
        && http_ok "http://$HOST:$(agent_port)/api/local_raylet_healthz"
}

mlflow_answers() { http_ok "$MLFLOW_URL/health"; }

wait_until() {  # wait_until <description> <pidfile> <command mark> <log> <check command...>
    local what=$1 pid_file=$2 mark=$3 log_file=$4; shift 4
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until "$@"; do
        if ! pid_alive "$pid_file" "$mark"; then
            log "$what exited during start-up; last lines of $log_file:"
            tail -n 30 "$log_file" >&2 || true
            return 1
        fi
        if (( SECONDS >= deadline )); then
            log "$what did not answer within ${START_TIMEOUT_S}s; last lines of $log_file:"
            tail -n 30 "$log_file" >&2 || true
            return 1
        fi
        sleep 1
    done
}

# stop_group <name> <pidfile> <command mark>: SIGTERM the process group, SIGKILL after a grace period
stop_group() {
    local name=$1 pid_file=$2 mark=$3 pid
    [[ -f "$pid_file" ]] || return 0
    pid=$(cat "$pid_file")
    if pid_alive "$pid_file" "$mark"; then
        log "stopping $name (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT_S))
        while group_alive "$pid" && (( SECONDS < deadline )); do
            sleep 0.5
        done
        if group_alive "$pid"; then
            log "$name still running after ${STOP_TIMEOUT_S}s: sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pid_file"
}

start_ray() {
    if pid_alive "$RAY_PID_FILE" "$RAY_COMMAND_MARK"; then
        log "Ray head already running (pid $(cat "$RAY_PID_FILE"))"
        return 0
    fi
    port_free_or_fail "$RAY_PORT" RAY_PORT || return 1
    port_free_or_fail "$DASHBOARD_PORT" DASHBOARD_PORT || return 1
    local agent
    agent=$(choose_agent_port) || return 1
    echo "$agent" >"$AGENT_PORT_FILE"
    auth_header_args >/dev/null  # fails early when token mode has no token
    log "starting Ray head on $HOST:$RAY_PORT (dashboard $DASHBOARD_URL, agent port $agent, $NUM_CPUS CPUs, auth $AUTH_MODE)"
    # Workers and job drivers inherit this environment: `python` in a job's entrypoint is the
    # venv's, and jobs log to the local MLflow server.
    # setsid: a process group of our own, so that `stop` reaches exactly these processes.
    env PATH="$(dirname "$RAY"):$PATH" RAY_AUTH_MODE="$AUTH_MODE" MLFLOW_TRACKING_URI="$MLFLOW_URL" \
        OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" RAY_USAGE_STATS_ENABLED=0 \
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
        setsid "$RAY" start --head --block \
        --node-ip-address "$HOST" --port "$RAY_PORT" \
        --dashboard-host "$HOST" --dashboard-port "$DASHBOARD_PORT" \
        --dashboard-agent-listen-port "$agent" \
        --num-cpus "$NUM_CPUS" --temp-dir "$(ray_temp_dir)" --disable-usage-stats \
        >"$RAY_LOG" 2>&1 </dev/null &
    echo $! >"$RAY_PID_FILE"
    wait_until "Ray head" "$RAY_PID_FILE" "$RAY_COMMAND_MARK" "$RAY_LOG" ray_answers
}

start_mlflow() {
    if pid_alive "$MLFLOW_PID_FILE" "$MLFLOW_COMMAND_MARK"; then
        log "MLflow server already running (pid $(cat "$MLFLOW_PID_FILE"))"
        return 0
    fi
    port_free_or_fail "$MLFLOW_PORT" MLFLOW_PORT || return 1
    log "starting MLflow server on $MLFLOW_URL (store $CLUSTER_DIR/mlflow.db)"
    mkdir -p "$CLUSTER_DIR/mlartifacts"
    env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
        setsid "$MLFLOW" server --host "$HOST" --port "$MLFLOW_PORT" \
        --backend-store-uri "sqlite:///$CLUSTER_DIR/mlflow.db" \
        --artifacts-destination "$CLUSTER_DIR/mlartifacts" --workers 1 \
        >"$MLFLOW_LOG" 2>&1 </dev/null &
    echo $! >"$MLFLOW_PID_FILE"
    wait_until "MLflow server" "$MLFLOW_PID_FILE" "$MLFLOW_COMMAND_MARK" "$MLFLOW_LOG" mlflow_answers
}

print_env() {
    echo "export RAY_ADDRESS=$DASHBOARD_URL"
    echo "export MLFLOW_TRACKING_URI=$MLFLOW_URL"
    echo "export RAY_AUTH_MODE=$AUTH_MODE"
}

cmd_start() {
    mkdir -p "$CLUSTER_DIR"
    if ! start_ray || ! start_mlflow; then
        cmd_stop
        exit 1
    fi
    log "ready; export these (or run: eval \"\$(scripts/local_cluster.sh start)\"):"
    print_env
}

cmd_stop() {
    stop_group "MLflow server" "$MLFLOW_PID_FILE" "$MLFLOW_COMMAND_MARK"
    stop_group "Ray head" "$RAY_PID_FILE" "$RAY_COMMAND_MARK"
    rm -f "$AGENT_PORT_FILE"
}

cmd_status() {
    local up=0 running=0
    if pid_alive "$RAY_PID_FILE" "$RAY_COMMAND_MARK"; then
        running=$((running + 1))
        if ray_answers; then up=$((up + 1)); log "Ray head: up ($DASHBOARD_URL, pid $(cat "$RAY_PID_FILE"))"
        else log "Ray head: running (pid $(cat "$RAY_PID_FILE")) but $DASHBOARD_URL does not answer"; fi
    else
        log "Ray head: stopped"
    fi
    if pid_alive "$MLFLOW_PID_FILE" "$MLFLOW_COMMAND_MARK"; then
        running=$((running + 1))
        if mlflow_answers; then up=$((up + 1)); log "MLflow server: up ($MLFLOW_URL, pid $(cat "$MLFLOW_PID_FILE"))"
        else log "MLflow server: running (pid $(cat "$MLFLOW_PID_FILE")) but $MLFLOW_URL does not answer"; fi
    else
        log "MLflow server: stopped"
    fi
    if (( up == 2 )); then print_env; return 0; fi
    if (( running == 0 )); then return 3; fi
    return 1
}

case "${1:-}" in
    start) RAY=$(find_tool ray); MLFLOW=$(find_tool mlflow); cmd_start ;;
    stop) cmd_stop ;;
    status) RAY=$(find_tool ray); cmd_status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
