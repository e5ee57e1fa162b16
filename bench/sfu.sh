#!/usr/bin/env bash
# SFU forwarding benchmark: Switchboard against Janus's videoroom plugin, side by side on one
# host. Builds, writes a minimal Janus configuration, runs every scenario with both servers
# alternating (a fresh server process for every run, so that memory figures start from an
# idle server), prints medians, ratios and PASS/FAIL, and stops everything it started (also
# on Ctrl-C or error). Run by hand, not in CI.
#
#   bench/sfu.sh                          # fanout-50 and rooms-4x4, 3 rounds (~6 minutes)
#   RUNS=5 bench/sfu.sh                   # more rounds
#   SCENARIOS=fanout SUBSCRIBERS=400 bench/sfu.sh   # the 400-subscriber target
#   SERVERS=janus bench/sfu.sh            # one server only
#
# Scenarios (SCENARIOS, space-separated, in this order):
#   fanout   one publisher, SUBSCRIBERS (50) subscribers, one room.
#   rooms    ROOMS (4) rooms of ROOM_SIZE (4): everyone publishes and receives the others.
# Every publisher sends synthetic VP8 at VIDEO_KBPS (1500) kbit/s and FPS (30) frames/s and
# Opus-sized audio every 20 ms. Each run sets up, waits until every subscriber receives
# every track (for at most SETUP_TIMEOUT, 120 s), warms up for WARMUP (3) s and measures for
# DURATION (10) s; LOAD_THREADS (2) driver threads run the clients. Switchboard runs with
# --max-sfu-participants raised to fit the room.
#
# Switchboard: one SFU media worker per server CPU (SFU_WORKERS), bandwidth estimation as
# SFU_BWE says (true; false: --sfu-bandwidth-estimation false), `--rate-limit 0`, STUN
# off, `--log warn`. Janus 1.1.2 (Debian's `janus`): HTTP transport and videoroom plugin
# only, ICE-lite like Switchboard, warnings-only logging. Janus runs once per entry of
# JANUS_EVENT_LOOPS (default "default N", N = the server CPUs): `default` is Janus's own
# threading (a thread per handle), labelled `janus`; a number N sets `event_loops = N`
# (N static event loops shared by all handles), labelled `janus-lN`, the natural setting
# for N CPUs. Switchboard is compared with each.
# Janus never gathers loopback candidates, so media runs on MEDIA_IP (default: this host's
# own IPv4 address, which the kernel delivers over the loopback device, like 127.0.0.1) for
# both servers; HTTP and signaling stay on 127.0.0.1.
#
# CPU placement as in bench/turn.sh: with 2 or more CPUs the servers run on SERVER_CPUS
# (default: the last CPU) and sfu-load on LOAD_CPUS (the others), via `taskset`, so that a
# server is never preempted by the load it serves. SERVER_CPUS= LOAD_CPUS= turns it off.
#
# Results: OUT_DIR (target/sfu-bench)/results.txt (raw RESULT lines) and summary.txt; server
# logs next to them. Ports from BASE_PORT (29880): HTTP on BASE_PORT and +1, Switchboard's
# media from +10, Janus's media in +100 to +2099. SWITCHBOARD_BIN=path benchmarks another switchboard binary; NO_BUILD=1
# skips the build. Targets (see `sfu-load summarize --help`): CPU_TARGET (0.5) times Janus's
# CPU per forwarded packet, p99 delay under DELAY_TARGET_MS (1) ms, and one publisher to 400
# subscribers at 1.5 Mbit/s without loss.
# Needs: cargo, taskset (util-linux), ss (iproute2), Debian's janus package
# (scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-fanout rooms}
SERVERS=${SERVERS:-switchboard janus}
SUBSCRIBERS=${SUBSCRIBERS:-50}
ROOMS=${ROOMS:-4}
ROOM_SIZE=${ROOM_SIZE:-4}
VIDEO_KBPS=${VIDEO_KBPS:-1500}
FPS=${FPS:-30}
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
LOAD_THREADS=${LOAD_THREADS:-2}
SETUP_TIMEOUT=${SETUP_TIMEOUT:-120}
CPU_TARGET=${CPU_TARGET:-0.5}
SFU_BWE=${SFU_BWE:-true}
DELAY_TARGET_MS=${DELAY_TARGET_MS:-1}
# Below Linux's ephemeral range (32768-60999), where no client socket takes them.
BASE_PORT=${BASE_PORT:-29880}
OUT_DIR=${OUT_DIR:-target/sfu-bench}

SB_HTTP_PORT=$BASE_PORT
JANUS_HTTP_PORT=$((BASE_PORT + 1))
# Switchboard's media workers bind SB_SFU_PORT, SB_SFU_PORT + 1, ...
SB_SFU_PORT=$((BASE_PORT + 10))
# Janus binds one port per PeerConnection in this range.
JANUS_MIN_PORT=$((BASE_PORT + 100))
JANUS_MAX_PORT=$((BASE_PORT + 2099))

cpus=$(nproc)
if [ "$cpus" -ge 2 ]; then
  SERVER_CPUS=${SERVER_CPUS-$((cpus - 1))}
  LOAD_CPUS=${LOAD_CPUS-0-$((cpus - 2))}
else
  SERVER_CPUS=${SERVER_CPUS-}
  LOAD_CPUS=${LOAD_CPUS-}
fi

BIN=$OUT_DIR/bin
RESULTS=$OUT_DIR/results.txt

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'sfu.sh: %s\n' "$*" >&2; exit 1; }

# Every process this script starts, and its temporary directory, so that the trap can
# clean up whatever happens.
STARTED=()
TMP=
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  [ -z "$TMP" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v ss >/dev/null || die "ss is missing (iproute2)"
case " $SERVERS " in
  *" janus "*) command -v janus >/dev/null || die "janus is missing (scripts/install-deps.sh installs Debian's janus)" ;;
esac
[ -z "$SERVER_CPUS$LOAD_CPUS" ] || command -v taskset >/dev/null || die "taskset is missing (util-linux)"
for server in $SERVERS; do
  case $server in switchboard | janus) ;; *) die "SERVERS: unknown server $server (switchboard, janus)" ;; esac
done
for scenario in $SCENARIOS; do
  case $scenario in fanout | rooms) ;; *) die "SCENARIOS: unknown scenario $scenario (fanout, rooms)" ;; esac
done

if [ -z "${MEDIA_IP:-}" ]; then
  MEDIA_IP=$(ip -4 -o addr show scope global 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
  [ -n "$MEDIA_IP" ] || die "no global IPv4 address for the media (Janus never uses loopback): set MEDIA_IP"
fi
[ "$(ip -4 route get "$MEDIA_IP" 2>/dev/null | awk '{ print $1; exit }')" = local ] ||
  die "MEDIA_IP $MEDIA_IP is not an address of this host"

# Every server CPU gets a Switchboard media worker, as `--sfu-workers 0` would without
# pinning (it counts the CPUs online, not the ones it may use).
count_cpus() { taskset -c "$1" nproc 2>/dev/null || echo 1; }
if [ -n "$SERVER_CPUS" ]; then
  server_cpu_count=$(count_cpus "$SERVER_CPUS")
else
  server_cpu_count=$cpus
fi
SFU_WORKERS=${SFU_WORKERS:-$server_cpu_count}
JANUS_EVENT_LOOPS=${JANUS_EVENT_LOOPS:-default $server_cpu_count}
# Every server by label; Janus labels map to their event loops.
declare -A LOOPS
LABELS=()
for server in $SERVERS; do
  case $server in
    switchboard) LABELS+=(switchboard) ;;
    janus)
      for loops in $JANUS_EVENT_LOOPS; do
        case $loops in
          default) label=janus ;;
          *[!0-9]* | '' | 0) die "JANUS_EVENT_LOOPS: $loops is neither 'default' nor a positive number" ;;
          *) label=janus-l$loops ;;
        esac
        LOOPS[$label]=$loops
        LABELS+=("$label")
      done
      ;;
  esac
done
# The room must hold the publisher and every subscriber.
MAX_SFU_PARTICIPANTS=$((SUBSCRIBERS + 1 > ROOM_SIZE ? SUBSCRIBERS + 1 : ROOM_SIZE))

# One socket per client in sfu-load, one per PeerConnection in Janus.
want_fds=$((4 * (SUBSCRIBERS + ROOMS * ROOM_SIZE) + 1024))
ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SERVER_ON=()
LOAD_ON=()
[ -n "$SERVER_CPUS" ] && SERVER_ON=(taskset -c "$SERVER_CPUS")
[ -n "$LOAD_CPUS" ] && LOAD_ON=(taskset -c "$LOAD_CPUS")

mkdir -p "$BIN"
if [ "${NO_BUILD:-0}" = 1 ]; then
  [ -x "${SWITCHBOARD_BIN:-target/release/switchboard}" ] && [ -x target/release/sfu-load ] ||
    die "NO_BUILD=1 but the switchboard or sfu-load binary is missing"
else
  say "building (release)"
  cargo build --release --quiet -p switchboard-server -p sfu-load
fi
# Private copies: a rebuild of the shared target directory during the run changes nothing.
cp "${SWITCHBOARD_BIN:-target/release/switchboard}" "$BIN/switchboard"
cp target/release/sfu-load "$BIN/sfu-load"
SWITCHBOARD=$BIN/switchboard
LOAD=$BIN/sfu-load

port_busy() {
  [ -n "$(ss -Hltun "( sport = :$1 )" 2>/dev/null)" ]
}
for port in "$SB_HTTP_PORT" "$JANUS_HTTP_PORT" $(seq "$SB_SFU_PORT" $((SB_SFU_PORT + SFU_WORKERS - 1))); do
  port_busy "$port" && die "port $port is already in use (set BASE_PORT)"
done

# Janus's configuration: only what the benchmark needs, in a directory of our own.
TMP=$(mktemp -d)
janus_lib=$(dirname "$(dpkg -L janus 2>/dev/null | grep -m1 '/janus/plugins/libjanus_videoroom.so$')" 2>/dev/null || true)
janus_lib=${janus_lib%/plugins}
[ -d "${janus_lib:-/nonexistent}/plugins" ] || janus_lib=/usr/lib/$(uname -m)-linux-gnu/janus

# janus_config LABEL: writes the configuration of one Janus variant; prints its directory.
janus_config() {
  local dir=$TMP/$1 loops_line= other_plugins other_transports other_loggers
  [ "${LOOPS[$1]}" = default ] || loops_line="event_loops = ${LOOPS[$1]}"
  other_plugins=$(cd "$janus_lib/plugins" && ls libjanus_*.so | grep -v '^libjanus_videoroom.so$' | paste -sd, -)
  other_transports=$(cd "$janus_lib/transports" && ls libjanus_*.so | grep -v '^libjanus_http.so$' | paste -sd, -)
  other_loggers=$(cd "$janus_lib/loggers" 2>/dev/null && ls libjanus_*.so 2>/dev/null | paste -sd, - || true)
  mkdir -p "$dir"
  cat >"$dir/janus.jcfg" <<EOF
general: {
	configs_folder = "$dir"
	plugins_folder = "$janus_lib/plugins"
	transports_folder = "$janus_lib/transports"
	events_folder = "$janus_lib/events"
	loggers_folder = "$janus_lib/loggers"
	debug_level = 3
	$loops_line
}
media: {
	rtp_port_range = "$JANUS_MIN_PORT-$JANUS_MAX_PORT"
}
nat: {
	ice_lite = true
	ice_enforce_list = "$MEDIA_IP"
	ignore_mdns = true
}
plugins: {
	disable = "$other_plugins"
}
transports: {
	disable = "$other_transports"
}
loggers: {
	disable = "$other_loggers"
}
events: {
	broadcast = false
}
EOF
  cat >"$dir/janus.transport.http.jcfg" <<EOF
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = $JANUS_HTTP_PORT
	ip = "127.0.0.1"
	https = false
}
admin: {
	admin_http = false
	admin_https = false
}
EOF
  printf 'general: {\n}\n' >"$dir/janus.plugin.videoroom.jcfg"
  printf '%s\n' "$dir"
}

mkdir -p "$OUT_DIR"
: >"$RESULTS"
: >"$OUT_DIR/sfu-load.log"
for label in "${LABELS[@]}"; do
  : >"$OUT_DIR/$label.log"
done

# wait_tcp PID PORT: until the HTTP port accepts connections (15 s at most).
wait_tcp() {
  local i
  for i in $(seq 1 150); do
    kill -0 "$1" 2>/dev/null || die "process $1 exited during start-up (see $OUT_DIR/*.log)"
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $2 after 15 s"
}

# start_server LABEL: a fresh server process; sets SERVER_PID and SERVER_ADDR.
start_server() {
  local conf
  case $1 in
    switchboard)
      "${SERVER_ON[@]}" "$SWITCHBOARD" --http-addr "127.0.0.1:$SB_HTTP_PORT" --stun-addr "" \
        --sfu-addr "$MEDIA_IP:$SB_SFU_PORT" --sfu-workers "$SFU_WORKERS" \
        --max-sfu-participants "$MAX_SFU_PARTICIPANTS" --sfu-bandwidth-estimation "$SFU_BWE" \
        --rate-limit 0 --log warn \
        >>"$OUT_DIR/switchboard.log" 2>&1 &
      SERVER_ADDR=127.0.0.1:$SB_HTTP_PORT
      ;;
    janus*)
      conf=$(janus_config "$1")
      "${SERVER_ON[@]}" janus -F "$conf" -C "$conf/janus.jcfg" -o >>"$OUT_DIR/$1.log" 2>&1 &
      SERVER_ADDR=127.0.0.1:$JANUS_HTTP_PORT
      ;;
  esac
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  wait_tcp "$SERVER_PID" "${SERVER_ADDR##*:}"
  # Let it settle (Janus loads its plugin, Switchboard binds its workers).
  sleep 1
}

stop_server() {
  local pid=$1 i p keep=()
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${STARTED[@]}"; do
    [ "$p" = "$pid" ] || keep+=("$p")
  done
  STARTED=("${keep[@]}")
}

# load LABEL SCENARIO RUN: one bounded sfu-load run against a fresh server. sfu-load runs in
# the background under `timeout` (which puts it in a process group of its own), so that the
# trap can stop it too.
load() {
  local label=$1 scenario=$2 run=$3 pid
  start_server "$label"
  timeout --kill-after=5 $((SETUP_TIMEOUT + WARMUP + DURATION + 60)) \
    "${LOAD_ON[@]}" "$LOAD" run --server "${label%%-*}" --label "$label" --addr "$SERVER_ADDR" \
    --media-ip "$MEDIA_IP" \
    --scenario "$scenario" --subscribers "$SUBSCRIBERS" --rooms "$ROOMS" --room-size "$ROOM_SIZE" \
    --video-kbps "$VIDEO_KBPS" --fps "$FPS" --warmup "$WARMUP" --duration "$DURATION" \
    --threads "$LOAD_THREADS" --setup-timeout "$SETUP_TIMEOUT" --pid "$SERVER_PID" --run "$run" \
    >"$TMP/line" 2>>"$OUT_DIR/sfu-load.log" &
  pid=$!
  STARTED+=("$pid")
  if ! wait "$pid"; then
    tail -n 5 "$OUT_DIR/sfu-load.log" >&2
    die "sfu-load $scenario against $label failed or timed out"
  fi
  stop_server "$pid"
  stop_server "$SERVER_PID"
  tee -a "$RESULTS" <"$TMP/line" >&2
}

{
  echo "machine: $cpus CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "switchboard: $("$SWITCHBOARD" --version 2>/dev/null || echo unknown) (release), $SFU_WORKERS SFU worker(s)"
  if command -v janus >/dev/null; then
    echo "janus: $(janus --help 2>/dev/null | head -n1); runs as: ${LABELS[*]} (janus = a thread per handle, janus-lN = N event loops)"
  fi
  echo "CPUs: servers ${SERVER_CPUS:-unpinned}, sfu-load ${LOAD_CPUS:-unpinned} ($LOAD_THREADS threads); media on $MEDIA_IP; $RUNS alternating rounds"
  echo "load: fanout = 1 publisher x $SUBSCRIBERS subscribers; rooms = $ROOMS rooms x $ROOM_SIZE; video $VIDEO_KBPS kbit/s at $FPS fps + Opus 50 packets/s; ${WARMUP}s warm-up, ${DURATION}s measured"
} | tee "$OUT_DIR/summary.txt" >&2

for run in $(seq 1 "$RUNS"); do
  for scenario in $SCENARIOS; do
    for label in "${LABELS[@]}"; do
      say "$scenario: $label, run $run/$RUNS"
      load "$label" "$scenario" "$run"
    done
  done
done

# One table per baseline (Switchboard alone: its own figures, no ratios).
baselines=()
for label in "${LABELS[@]}"; do
  [ "$label" = switchboard ] || baselines+=("$label")
done
[ "${#baselines[@]}" -gt 0 ] || baselines=(none)
for label in "${baselines[@]}"; do
  echo
  "$LOAD" summarize "$RESULTS" --ours switchboard --baseline "$label" \
    --cpu-target "$CPU_TARGET" --delay-target-ms "$DELAY_TARGET_MS"
done | tee -a "$OUT_DIR/summary.txt"
