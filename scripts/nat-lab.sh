#!/usr/bin/env bash
# NAT lab: real headless browsers behind NAT routers built from network namespaces, veth
# pairs and nftables, calling each other through a `switchboard` process on the "public"
# side. Proves that calls connect through STUN hole punching behind port-restricted NATs
# and through our TURN relay behind symmetric NATs (see docs/nat-lab.md).
#
# The tests build their own namespaces (sbpub-, sbnat1-, sbnat2-, sbc1-, sbc2- followed by
# this run's tag and the test process id) and delete them when they end, also on failure;
# this script additionally sweeps every namespace of its run when it exits, in case a test
# process was killed before it could clean up.
#
# Needs root, iproute2, nftables, chromium, chromedriver, firefox-esr, geckodriver and
# cargo-nextest (scripts/install-deps.sh installs them).
#
# Usage: scripts/nat-lab.sh [nextest arguments, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "nat-lab.sh: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root: it creates network namespaces (try: sudo $0)"
for bin in ip nft chromium chromedriver firefox-esr; do
  command -v "$bin" >/dev/null 2>&1 || die "$bin not found: run scripts/install-deps.sh"
done
command -v geckodriver >/dev/null 2>&1 || [ -x "${HOME:-/root}/.cargo/bin/geckodriver" ] ||
  die "geckodriver not found: run scripts/install-deps.sh"
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
cargo nextest --version >/dev/null 2>&1 ||
  die "cargo-nextest not found: cargo install cargo-nextest --locked"

export SB_NATLAB_RUN="r$$"
sweep() {
  local ns pids
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' |
    grep -E "^sb(pub|nat1|nat2|c1|c2)-${SB_NATLAB_RUN}-" || true); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
    fi
    ip netns delete "$ns" 2>/dev/null || true
  done
}
trap sweep EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The server binary the lab runs in its public namespace.
cargo build -p switchboard-server --locked
export SWITCHBOARD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/switchboard"

export RUST_BACKTRACE=0
cargo nextest run --profile e2e -p switchboard-natlab --run-ignored only --locked "$@"
