#!/usr/bin/env bash
# Browser end-to-end tests: real headless Chromium and Firefox ESR against Switchboard.
#
# The tests run inside a private network namespace holding only loopback and one more
# interface with a 10.x address: a dummy interface, or where the kernel has no dummy
# driver, a veth pair whose both ends stay in the namespace. Firefox gathers no ICE
# candidates with loopback alone, nor without a default route; the extra interface and a
# default route through it give both browsers a host address, while nothing can leave the
# namespace (the interface leads nowhere). The namespace is deleted on exit, also on failure or interruption.
#
# Needs root (for the namespace), iproute2, chromium, chromedriver, firefox-esr,
# geckodriver and cargo-nextest (scripts/install-deps.sh installs the browsers and drivers).
#
# Usage: scripts/e2e.sh [nextest arguments, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "e2e.sh: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root: it creates a network namespace (try: sudo $0)"
command -v ip >/dev/null 2>&1 || die "'ip' not found: install iproute2 (scripts/install-deps.sh)"
for bin in chromium chromedriver firefox-esr; do
  command -v "$bin" >/dev/null 2>&1 || die "$bin not found: run scripts/install-deps.sh"
done
command -v geckodriver >/dev/null 2>&1 || [ -x "${HOME:-/root}/.cargo/bin/geckodriver" ] ||
  die "geckodriver not found: run scripts/install-deps.sh"
cargo nextest --version >/dev/null 2>&1 ||
  die "cargo-nextest not found: cargo install cargo-nextest --locked"

# Build outside the namespace (it has no route to the package registry).
cargo nextest run --profile e2e -p switchboard-e2e --run-ignored only --no-run

ns="sb-e2e-$$"
cleanup() {
  # Anything still running in the namespace was started by this script.
  local pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  ip netns delete "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$ns"
ip -n "$ns" link set lo up
if ! ip -n "$ns" link add e2e0 type dummy 2>/dev/null; then
  ip -n "$ns" link add e2e0 type veth peer name e2e1
  ip -n "$ns" link set e2e1 up
fi
ip -n "$ns" addr add 10.213.7.1/24 dev e2e0
ip -n "$ns" link set e2e0 up
ip -n "$ns" route add default dev e2e0

# anyhow errors read better without a backtrace each; panics keep theirs.
export RUST_LIB_BACKTRACE="${RUST_LIB_BACKTRACE:-0}"
ip netns exec "$ns" cargo nextest run --offline --profile e2e -p switchboard-e2e --run-ignored only "$@"
