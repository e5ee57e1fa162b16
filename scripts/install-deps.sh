#!/usr/bin/env bash
# Installs everything the test suite and benchmarks need on a fresh Debian machine:
# browsers and their WebDriver servers, coturn's client tools, Janus (the SFU benchmark's
# baseline), network tools for the namespace tests, and the npm packages (TypeScript for
# the SDK type check, ws for the signaling baseline). Idempotent: skips what is already
# there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in chromium:chromium chromedriver:chromium-driver firefox-esr:firefox-esr \
            turnutils_stunclient:coturn janus:janus ip:iproute2 nft:nftables; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# coturn's package starts a turnserver on 3478 by default; our tests own that port.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now coturn >/dev/null 2>&1 || true; fi
pkill -x turnserver >/dev/null 2>&1 || true
# Janus's package enables a service too; bench/sfu.sh starts its own on loopback.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now janus >/dev/null 2>&1 || true; fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-nextest"
  cargo install cargo-nextest --locked --quiet
fi

if ! command -v geckodriver >/dev/null 2>&1; then
  echo "install-deps: cargo install geckodriver"
  cargo install geckodriver --locked --quiet
fi

if [ ! -d node_modules ] || [ package.json -nt node_modules ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules
fi
