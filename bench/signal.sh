#!/usr/bin/env bash
# Signaling benchmark: Switchboard against the tutorial's Node `ws` server, side by side on
# loopback. Builds, starts the servers, runs bench/signal-load, prints medians, ratios and
# PASS/FAIL, and stops everything it started (also on Ctrl-C or error).
#
#   bench/signal.sh                 # everything, 3 runs per server and scenario
#   RUNS=5 bench/signal.sh          # more runs
#   SCENARIOS="rooms" bench/signal.sh
#
# Scenarios (SCENARIOS, space-separated, in this order):
#   idle      IDLE_CLIENTS (10000) idle clients in rooms of 4; server RSS. A fresh server
#             process per run.
#   tutorial  the tutorial protocol's one global sender/receiver pair: one sender streams
#             iceCandidate messages to one receiver (window TUTORIAL_WINDOW, 256: deep
#             enough that the pair measures how fast a server relays, not how quickly a
#             message crosses both processes; TUTORIAL_WINDOW=64 shows the latter).
#   rooms     CLIENTS (1000) clients in rooms of ROOM_SIZE (4), every client sending
#             candidates to its room (window WINDOW per client). Node side: rooms-server.js.
#   heavy     2 rooms of 8 clients (16 clients, window HEAVY_WINDOW per client).
# Load runs alternate Switchboard / Node, RUNS times, WARMUP + DURATION seconds each.
# Results: target/signal-bench/results.txt (raw RESULT lines) and summary.txt.
# SWITCHBOARD_BIN=path benchmarks another switchboard binary; NO_BUILD=1 skips the build.
# Needs: cargo, node, and `ws` in node_modules (scripts/install-deps.sh runs npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
IDLE_RUNS=${IDLE_RUNS:-$RUNS}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-1000}
ROOM_SIZE=${ROOM_SIZE:-4}
WINDOW=${WINDOW:-8}
TUTORIAL_WINDOW=${TUTORIAL_WINDOW:-256}
HEAVY_WINDOW=${HEAVY_WINDOW:-32}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
LOAD_THREADS=${LOAD_THREADS:-2}
BASE_PORT=${BASE_PORT:-18780}
SCENARIOS=${SCENARIOS:-idle tutorial rooms heavy}
OUT_DIR=${OUT_DIR:-target/signal-bench}

SB_PORT=$BASE_PORT
NODE_TUTORIAL_PORT=$((BASE_PORT + 1))
NODE_ROOMS_PORT=$((BASE_PORT + 2))
SWITCHBOARD=${SWITCHBOARD_BIN:-target/release/switchboard}
LOAD=target/release/signal-load
RESULTS=$OUT_DIR/results.txt

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'signal.sh: %s\n' "$*" >&2; exit 1; }

# Every server this script starts, so the trap can stop them whatever happens.
STARTED=()
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v node >/dev/null || die "node is not installed (scripts/install-deps.sh)"
[ -f node_modules/ws/package.json ] || die "node_modules/ws is missing: run scripts/install-deps.sh (npm ci)"

# Each client is a file descriptor in the load tool and one in the server.
want_fds=$((IDLE_CLIENTS + 1024))
ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_fds" ]; then
  die "open-file limit $(ulimit -n) is below $want_fds; raise it (ulimit -Hn) or lower IDLE_CLIENTS"
fi

if [ "${NO_BUILD:-0}" = 1 ]; then
  [ -x "$SWITCHBOARD" ] && [ -x "$LOAD" ] || die "NO_BUILD=1 but $SWITCHBOARD or $LOAD is missing"
else
  say "building (release)"
  cargo build --release --quiet -p switchboard-server -p signal-load
fi

mkdir -p "$OUT_DIR"
: >"$RESULTS"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready PID PORT: until the port accepts connections (10 s at most).
wait_ready() {
  local i
  for i in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || die "server on port $2 exited during start-up"
    port_busy "$2" && return 0
    sleep 0.1
  done
  die "server on port $2 did not start within 10 s"
}

# start_server NAME PORT: starts one server in the background; sets SERVER_PID.
start_server() {
  local name=$1 port=$2
  port_busy "$port" && die "port $port is already in use (set BASE_PORT)"
  case $name in
    switchboard)
      "$SWITCHBOARD" --http-addr "127.0.0.1:$port" --stun-addr "" --rate-limit 0 \
        --max-connections 20000 --log warn >>"$OUT_DIR/switchboard.log" 2>&1 &
      ;;
    node-tutorial) PORT=$port node bench/node-ws/tutorial-server.js >>"$OUT_DIR/node.log" 2>&1 & ;;
    node-rooms) PORT=$port node bench/node-ws/rooms-server.js >>"$OUT_DIR/node.log" 2>&1 & ;;
    *) die "unknown server $name" ;;
  esac
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  wait_ready "$SERVER_PID" "$port"
}

stop_server() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${STARTED[@]}"; do
    [ "$p" = "$pid" ] || keep+=("$p")
  done
  STARTED=("${keep[@]}")
}

# load SECONDS ARGS...: one bounded signal-load run; its RESULT line goes to the results.
load() {
  local limit=$1
  shift
  local line
  if ! line=$(timeout --kill-after=5 "$limit" "$LOAD" --threads "$LOAD_THREADS" "$@"); then
    die "signal-load $1 failed or timed out (${limit} s)"
  fi
  printf '%s\n' "$line" | tee -a "$RESULTS" >&2
}

run_limit=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { printf "%d", w + d + 90 }')

{
  echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "switchboard: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (release); node $(node --version), ws $(node -p "require('./node_modules/ws/package.json').version")"
  echo "runs: $RUNS x ${DURATION}s (+${WARMUP}s warm-up) per server and scenario; load tool threads: $LOAD_THREADS"
} | tee "$OUT_DIR/summary.txt" >&2

for scenario in $SCENARIOS; do
  case $scenario in
    idle)
      for run in $(seq 1 "$IDLE_RUNS"); do
        for server in switchboard node; do
          say "idle: $IDLE_CLIENTS clients, $server, run $run/$IDLE_RUNS"
          if [ "$server" = switchboard ]; then
            start_server switchboard "$SB_PORT"; url="ws://127.0.0.1:$SB_PORT/ws"
          else
            start_server node-rooms "$NODE_ROOMS_PORT"; url="ws://127.0.0.1:$NODE_ROOMS_PORT/ws"
          fi
          sleep 1
          load 180 idle --url "$url" --server "$server" --pid "$SERVER_PID" --run "$run" \
            --clients "$IDLE_CLIENTS" --room-size 4
          stop_server "$SERVER_PID"
        done
      done
      ;;
    tutorial | rooms | heavy)
      start_server switchboard "$SB_PORT"; sb_pid=$SERVER_PID
      if [ "$scenario" = tutorial ]; then
        start_server node-tutorial "$NODE_TUTORIAL_PORT"; node_pid=$SERVER_PID
        sb_url="ws://127.0.0.1:$SB_PORT/"; node_url="ws://127.0.0.1:$NODE_TUTORIAL_PORT/"
        args=(tutorial --window "$TUTORIAL_WINDOW")
      else
        start_server node-rooms "$NODE_ROOMS_PORT"; node_pid=$SERVER_PID
        sb_url="ws://127.0.0.1:$SB_PORT/ws"; node_url="ws://127.0.0.1:$NODE_ROOMS_PORT/ws"
        if [ "$scenario" = rooms ]; then
          args=(rooms --clients "$CLIENTS" --room-size "$ROOM_SIZE" --window "$WINDOW")
        else
          args=(rooms --clients 16 --room-size 8 --window "$HEAVY_WINDOW")
        fi
      fi
      for run in $(seq 1 "$RUNS"); do
        say "$scenario: switchboard, run $run/$RUNS"
        load "$run_limit" "${args[@]}" --url "$sb_url" --server switchboard --pid "$sb_pid" \
          --run "$run" --warmup "$WARMUP" --duration "$DURATION"
        say "$scenario: node, run $run/$RUNS"
        load "$run_limit" "${args[@]}" --url "$node_url" --server node --pid "$node_pid" \
          --run "$run" --warmup "$WARMUP" --duration "$DURATION"
      done
      stop_server "$sb_pid"
      stop_server "$node_pid"
      ;;
    *) die "unknown scenario $scenario (idle, tutorial, rooms, heavy)" ;;
  esac
done

echo >&2
"$LOAD" summarize "$RESULTS" | tee -a "$OUT_DIR/summary.txt"
