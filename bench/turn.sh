#!/usr/bin/env bash
# TURN relay benchmark: Switchboard against coturn's `turnserver`, side by side on loopback.
# Builds, starts the servers with the same static user and realm, runs the load scenarios
# interleaved (Switchboard, coturn, Switchboard, coturn, ...), reads each server's CPU time
# from /proc/PID/stat around every run, prints medians, ratios and PASS/FAIL, and stops
# everything it started (also on Ctrl-C or error). Run by hand, not in CI.
#
#   bench/turn.sh                        # every scenario, 3 interleaved rounds (~4 minutes)
#   RUNS=5 bench/turn.sh                 # more rounds
#   SCENARIOS="load-160" bench/turn.sh   # one scenario
#   COTURN_THREADS="default" bench/turn.sh   # coturn with its default threading only
#
# Scenarios (SCENARIOS, space-separated, in this order):
#   uclient    coturn's own load client, `turnutils_uclient`: UCLIENT_CLIENTS (20) UDP
#              allocations with channels, each sending UCLIENT_MESSAGES (1000) messages of
#              UCLIENT_LENGTH (160) bytes every UCLIENT_INTERVAL ms (1) to `turnutils_peer`,
#              which echoes them back. Whole run measured (uclient staggers its clients'
#              start over ~6 s and paces itself, so the server is lightly loaded).
#   load-160   bench/turn-load: ALLOCATIONS (50) allocations, RATE (10000) ChannelData
#              packets/s of 160 bytes (audio-sized) for DURATION (5) s, echoed by its own
#              peer: 2 x RATE packets/s relayed.
#   load-1200  the same with 1200-byte packets (video-sized) at VIDEO_RATE (5000).
#
# BUSY_POLL=1 runs turn-load with --busy-poll: one load thread that never sleeps, so that a
# server's sends do not pay for waking the load tool (see `turn-load run --help`); it
# needs the pinning below and burns one CPU for the length of each run.
#
# Relayed packets count both directions (client -> peer and peer -> client). Efficiency is
# relayed packets per second of server CPU (user + system, all threads); the target is
# TARGET (1.5) times coturn's with zero loss in every run.
#
# CPU placement: with 2 or more CPUs, every server runs on SERVER_CPUS (default: the last
# CPU) and the load tools on LOAD_CPUS (the others), through `taskset`, so that a server
# is never preempted by the load tool it is serving and every server gets the same single
# core. SERVER_CPUS= LOAD_CPUS= (empty) turns pinning off.
#
# coturn's threading: Switchboard relays on one thread. coturn runs one process per entry
# of COTURN_THREADS (default "default 1"): `default` is coturn's own default (relay threads
# = CPUs online, whatever the affinity, plus listener and auth threads), labelled
# `coturn`; a number N passes --relay-threads N, labelled `coturn-mN` (1 is the natural
# setting for the one core the servers get). Switchboard is compared with each.
#
# Results: target/turn-bench/results.txt (raw RESULT lines) and summary.txt.
# SWITCHBOARD_BIN=path benchmarks another switchboard binary; NO_BUILD=1 skips the build.
# Needs: cargo, taskset (util-linux), ss (iproute2), and Debian's coturn package
# (turnserver, turnutils_uclient, turnutils_peer; scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-uclient load-160 load-1200}
ALLOCATIONS=${ALLOCATIONS:-50}
RATE=${RATE:-10000}
VIDEO_RATE=${VIDEO_RATE:-5000}
DURATION=${DURATION:-5}
UCLIENT_CLIENTS=${UCLIENT_CLIENTS:-20}
UCLIENT_MESSAGES=${UCLIENT_MESSAGES:-1000}
UCLIENT_LENGTH=${UCLIENT_LENGTH:-160}
UCLIENT_INTERVAL=${UCLIENT_INTERVAL:-1}
TARGET=${TARGET:-1.5}
BUSY_POLL=${BUSY_POLL:-0}
# Below Linux's ephemeral range (32768-60999), where no client socket takes them.
BASE_PORT=${BASE_PORT:-29780}
OUT_DIR=${OUT_DIR:-target/turn-bench}
TURN_USER=bench
TURN_PASSWORD=bench-secret
TURN_REALM=bench.switchboard

cpus=$(nproc)
if [ "$cpus" -ge 2 ]; then
  SERVER_CPUS=${SERVER_CPUS-$((cpus - 1))}
  LOAD_CPUS=${LOAD_CPUS-0-$((cpus - 2))}
else
  SERVER_CPUS=${SERVER_CPUS-}
  LOAD_CPUS=${LOAD_CPUS-}
fi

COTURN_THREADS=${COTURN_THREADS:-default 1}
SB_PORT=$BASE_PORT
SB_HTTP_PORT=$((BASE_PORT + 1))
# turnutils_peer listens on PEER_PORT and PEER_PORT + 1 (uclient's RTCP flows go there).
PEER_PORT=$((BASE_PORT + 2))
# coturn i listens on BASE_PORT + 4 + i. Relay port ranges are disjoint: Switchboard's,
# then 2000 ports for each coturn.
SB_MIN_PORT=50000 SB_MAX_PORT=53999

BIN=$OUT_DIR/bin
RESULTS=$OUT_DIR/results.txt

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'turn.sh: %s\n' "$*" >&2; exit 1; }

# Every process this script starts, so the trap can stop them whatever happens.
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

for tool in turnserver turnutils_uclient turnutils_peer ss; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs coturn; ss is in iproute2)"
done
[ -z "$SERVER_CPUS$LOAD_CPUS" ] || command -v taskset >/dev/null || die "taskset is missing (util-linux)"
LOAD_FLAGS=()
if [ "$BUSY_POLL" = 1 ]; then
  [ -n "$LOAD_CPUS" ] && [ -n "$SERVER_CPUS" ] || die "BUSY_POLL=1 needs SERVER_CPUS and LOAD_CPUS (pinning)"
  LOAD_FLAGS=(--busy-poll)
fi

# Command prefixes that pin to the CPU sets (taskset execs the command, so $! and the
# process id stay the server's own).
SERVER_ON=()
LOAD_ON=()
[ -n "$SERVER_CPUS" ] && SERVER_ON=(taskset -c "$SERVER_CPUS")
[ -n "$LOAD_CPUS" ] && LOAD_ON=(taskset -c "$LOAD_CPUS")

mkdir -p "$BIN"
if [ "${NO_BUILD:-0}" = 1 ]; then
  [ -x "${SWITCHBOARD_BIN:-target/release/switchboard}" ] && [ -x target/release/turn-load ] ||
    die "NO_BUILD=1 but the switchboard or turn-load binary is missing"
else
  say "building (release)"
  cargo build --release --quiet -p switchboard-server -p turn-load
fi
# Private copies: a rebuild of the shared target directory during the run changes nothing.
cp "${SWITCHBOARD_BIN:-target/release/switchboard}" "$BIN/switchboard"
cp target/release/turn-load "$BIN/turn-load"
SWITCHBOARD=$BIN/switchboard
LOAD=$BIN/turn-load

port_busy() {
  [ -n "$(ss -Hatun "( sport = :$1 )" 2>/dev/null)" ]
}
COTURNS=()
for threads in $COTURN_THREADS; do
  case $threads in
    default) COTURNS+=(coturn) ;;
    *[!0-9]* | '') die "COTURN_THREADS: $threads is neither 'default' nor a number" ;;
    *) COTURNS+=("coturn-m$threads") ;;
  esac
done
[ "${#COTURNS[@]}" -ge 1 ] && [ "${#COTURNS[@]}" -le 4 ] || die "COTURN_THREADS: 1 to 4 entries"
for port in $(seq "$BASE_PORT" $((BASE_PORT + 3 + ${#COTURNS[@]}))); do
  port_busy "$port" && die "port $port is already in use (set BASE_PORT)"
done

# wait_listening PID PORT: until the TCP side of the TURN port listens (10 s at most).
wait_listening() {
  local i
  for i in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || die "process $1 exited during start-up (see $OUT_DIR/*.log)"
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $2 after 10 s"
}

# wait_udp PID PORT: until a UDP socket is bound on the port (10 s at most).
wait_udp() {
  local i
  for i in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || die "process $1 exited during start-up (see $OUT_DIR/*.log)"
    [ -n "$(ss -Hlun "( sport = :$2 )" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  die "nothing bound UDP port $2 after 10 s"
}

# User + system CPU of a process in clock ticks (USER_HZ, 100 per second).
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat") || die "process $1 is gone"
  # Fields after the command name: state is field 3, utime 14, stime 15.
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}

mkdir -p "$OUT_DIR"
: >"$RESULTS"
: >"$OUT_DIR/switchboard.log"

say "starting switchboard on 127.0.0.1:$SB_PORT and ${COTURNS[*]} (CPUs: servers ${SERVER_CPUS:-any}, load ${LOAD_CPUS:-any})"
# SWITCHBOARD_SFU_ADDR= (empty) keeps the SFU's media workers out of the measured process
# (builds without an SFU ignore it).
SWITCHBOARD_SFU_ADDR= "${SERVER_ON[@]}" "$SWITCHBOARD" --http-addr "127.0.0.1:$SB_HTTP_PORT" --stun-addr "127.0.0.1:$SB_PORT" \
  --turn-users "$TURN_USER:$TURN_PASSWORD" --turn-realm "$TURN_REALM" \
  --turn-allow-peers 127.0.0.0/8 --turn-min-port "$SB_MIN_PORT" --turn-max-port "$SB_MAX_PORT" \
  --turn-max-allocations-per-user 10000 --log warn >>"$OUT_DIR/switchboard.log" 2>&1 &
SB_PID=$!
STARTED+=("$SB_PID")

# Every server by label: its process id and TURN port.
declare -A PID PORT
PID[switchboard]=$SB_PID
PORT[switchboard]=$SB_PORT
i=0
for threads in $COTURN_THREADS; do
  label=${COTURNS[$i]}
  port=$((BASE_PORT + 4 + i))
  min_port=$((54000 + 2000 * i))
  extra=()
  [ "$threads" = default ] || extra=(--relay-threads "$threads")
  : >"$OUT_DIR/$label.log"
  "${SERVER_ON[@]}" turnserver -n --no-tls --no-dtls --no-cli \
    --listening-ip 127.0.0.1 --listening-port "$port" --relay-ip 127.0.0.1 \
    --min-port "$min_port" --max-port $((min_port + 1999)) \
    --lt-cred-mech --user "$TURN_USER:$TURN_PASSWORD" --realm "$TURN_REALM" --allow-loopback-peers \
    --log-file "$OUT_DIR/$label.log" --simple-log --no-stdout-log \
    --pidfile "$OUT_DIR/$label.pid" --db "$OUT_DIR/$label.db" "${extra[@]}" \
    >>"$OUT_DIR/$label.log" 2>&1 &
  PID[$label]=$!
  PORT[$label]=$port
  STARTED+=("$!")
  i=$((i + 1))
done

"${LOAD_ON[@]}" turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >>"$OUT_DIR/peer.log" 2>&1 &
PEER_PID=$!
STARTED+=("$PEER_PID")

for label in switchboard "${COTURNS[@]}"; do
  wait_listening "${PID[$label]}" "${PORT[$label]}"
done
wait_udp "$PEER_PID" "$PEER_PORT"
sleep 1

{
  echo "machine: $cpus CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "switchboard: $("$SWITCHBOARD" --version 2>/dev/null || echo unknown) (release, relays on one thread, $(ls "/proc/$SB_PID/task" | wc -l) threads in all)"
  for label in "${COTURNS[@]}"; do
    echo "$label: coturn $(turnserver --version 2>/dev/null | head -n1), $(ls "/proc/${PID[$label]}/task" | wc -l) threads"
  done
  echo "CPUs: servers ${SERVER_CPUS:-unpinned}, load tools ${LOAD_CPUS:-unpinned}; turn-load polling: $([ "$BUSY_POLL" = 1 ] && echo busy || echo sleeping); $RUNS interleaved rounds"
  echo "scenarios: uclient = turnutils_uclient -m $UCLIENT_CLIENTS -n $UCLIENT_MESSAGES -l $UCLIENT_LENGTH -z $UCLIENT_INTERVAL via turnutils_peer;" \
    "load-160 = turn-load $ALLOCATIONS allocations x $RATE pkt/s x 160 B x ${DURATION}s; load-1200 = $VIDEO_RATE pkt/s x 1200 B"
} | tee "$OUT_DIR/summary.txt" >&2

# uclient SERVER PID PORT RUN: one turnutils_uclient run; appends a RESULT line.
uclient() {
  local server=$1 pid=$2 port=$3 run=$4 before after start end output
  before=$(cpu_ticks "$pid")
  start=$(date +%s%N)
  if ! output=$(timeout --kill-after=5 90 "${LOAD_ON[@]}" turnutils_uclient \
    -m "$UCLIENT_CLIENTS" -n "$UCLIENT_MESSAGES" -l "$UCLIENT_LENGTH" -z "$UCLIENT_INTERVAL" \
    -u "$TURN_USER" -w "$TURN_PASSWORD" -e 127.0.0.1 -r "$PEER_PORT" -p "$port" 127.0.0.1 2>&1); then
    printf '%s\n' "$output" | tail -n 20 >&2
    die "turnutils_uclient against $server failed or timed out"
  fi
  end=$(date +%s%N)
  after=$(cpu_ticks "$pid")
  printf '%s\n' "$output" >"$OUT_DIR/uclient-$server-$run.log"
  # The last totals: "tot_send_msgs=N, tot_recv_msgs=M" and "Total lost packets L (...)".
  awk -v server="$server" -v run="$run" -v cpu="$((after - before))" -v ns="$((end - start))" \
    -v scenario="uclient-${UCLIENT_LENGTH}B" '
    match($0, /tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+$/) {
      split(substr($0, RSTART, RLENGTH), parts, /[=,]/); sent = parts[2]; received = parts[4]
    }
    /Total lost packets/ { for (i = 1; i <= NF; i++) if ($i == "packets") lost = $(i + 1) }
    END {
      if (sent == "") { print "no totals in the uclient output" > "/dev/stderr"; exit 1 }
      secs = ns / 1e9; cpu_s = cpu / 100; relayed = 2 * received
      printf "RESULT tool=uclient scenario=%s server=%s run=%d sent=%d received=%d relayed=%d", scenario, server, run, sent, received, relayed
      printf " duration_s=%.3f relayed_pps=%.3f loss_pct=%.3f lost=%d cpu_s=%.3f", secs, relayed / secs, (sent > 0 ? 100 * (sent - received) / sent : 0), lost, cpu_s
      if (cpu_s > 0) printf " cpu_s_per_mpkt=%.3f pkts_per_cpu_s=%.3f", 1e6 * cpu_s / relayed, relayed / cpu_s
      else printf " cpu_s_per_mpkt=- pkts_per_cpu_s=-"
      printf "\n"
    }' <<<"$output" | tee -a "$RESULTS" >&2
}

# load SCENARIO SERVER PID PORT RUN RATE SIZE: one turn-load run; appends its RESULT line.
load() {
  local scenario=$1 server=$2 pid=$3 port=$4 run=$5 rate=$6 size=$7 line
  if ! line=$(timeout --kill-after=5 $((DURATION + 60)) "${LOAD_ON[@]}" "$LOAD" run \
    --server "127.0.0.1:$port" -u "$TURN_USER" -w "$TURN_PASSWORD" \
    --allocations "$ALLOCATIONS" --rate "$rate" --size "$size" --duration "$DURATION" \
    --scenario "$scenario" --label "$server" --run "$run" --pid "$pid" "${LOAD_FLAGS[@]}" \
    2>>"$OUT_DIR/turn-load.log"); then
    tail -n 5 "$OUT_DIR/turn-load.log" >&2
    die "turn-load $scenario against $server failed or timed out"
  fi
  printf '%s\n' "$line" | tee -a "$RESULTS" >&2
}

for run in $(seq 1 "$RUNS"); do
  for scenario in $SCENARIOS; do
    for server in switchboard "${COTURNS[@]}"; do
      pid=${PID[$server]} port=${PORT[$server]}
      say "$scenario: $server, run $run/$RUNS"
      case $scenario in
        uclient) uclient "$server" "$pid" "$port" "$run" ;;
        load-160) load "$scenario" "$server" "$pid" "$port" "$run" "$RATE" 160 ;;
        load-1200) load "$scenario" "$server" "$pid" "$port" "$run" "$VIDEO_RATE" 1200 ;;
        *) die "unknown scenario $scenario (uclient, load-160, load-1200)" ;;
      esac
      sleep 1
    done
  done
done

for label in "${COTURNS[@]}"; do
  echo
  "$LOAD" summarize "$RESULTS" --ours switchboard --baseline "$label" --target "$TARGET"
done | tee -a "$OUT_DIR/summary.txt"
