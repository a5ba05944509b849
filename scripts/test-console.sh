#!/usr/bin/env bash
# End-to-end test of the operator console in headless Chromium (console/e2e/run.mjs): redis-server
# and two server replicas with the console on; sign in, watch a socket connect, look the user up,
# publish a test message, disconnect 4003, see refusals. Refreshes the screenshots of each view in
# docs/console/ (SCREENSHOTS=dir to write them elsewhere).
#
# Installs what is missing on a fresh Debian machine: chromium and redis-server (apt-get), the
# test's one npm dependency (playwright-core, npm ci from the committed package-lock.json), and
# the server binary (cargo build). Environment:
#   SERVER_BIN    server binary (default: target/debug/websocket-service, built here when cargo
#                 is available)
#   CHROMIUM_BIN  browser (default: /usr/bin/chromium)
#   SCREENSHOTS   where the screenshots go (default: docs/console)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "==> installing nodejs and npm (Debian packages)"
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "error: Node.js >= 20 is needed (playwright-core); found $(node --version)" >&2
  exit 1
fi

export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_BIN" ]; then
  echo "==> installing chromium (Debian package)"
  apt_install chromium fonts-liberation
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (Debian package)"
  apt_install redis-server
fi

if [ -z "${SERVER_BIN:-}" ]; then
  export SERVER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/websocket-service"
  if command -v cargo >/dev/null 2>&1; then
    echo "==> cargo build --bin websocket-service"
    cargo build --quiet --locked --bin websocket-service
  fi
fi

cd console/e2e
# npm ci when node_modules is missing or older than the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> npm ci (console/e2e)"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "==> operator console end-to-end test (headless chromium)"
npm run --silent e2e
