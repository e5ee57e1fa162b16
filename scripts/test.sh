#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs, checks
# formatting and lints, type-checks the SDK, runs unit and integration tests (Rust, and the
# SDK's browser-free parts under Node), then the real-browser end-to-end tests (Chromium and
# Firefox ESR, inside a network namespace) and the NAT lab (browsers behind NAT routers built
# from namespaces, calling through TURN).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== format, lints, SDK types"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
npm run --silent typecheck

echo "== unit and integration tests"
cargo nextest run --workspace --locked --exclude switchboard-e2e
npm run --silent test:sdk

echo "== browser end-to-end tests"
scripts/e2e.sh

echo "== NAT lab: browsers behind NAT routers, calls through STUN and TURN"
scripts/nat-lab.sh
