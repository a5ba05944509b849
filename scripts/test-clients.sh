#!/usr/bin/env bash
# Tests the browser client in clients/ts: builds it with tsc, runs its unit tests (node --test,
# fake WebSocket and clock), then the end-to-end test in headless Chromium against the real
# server and a real redis-server (clients/ts/e2e/run.mjs).
#
# Installs what is missing on a fresh Debian machine: chromium and redis-server (apt-get), the
# npm dev dependencies (npm ci, from the committed package-lock.json), and the server binary
# (cargo build). Environment:
#   SERVER_BIN      server binary for the browser test (default: target/debug/websocket-service,
#                   built here when cargo is available)
#   CHROMIUM_BIN    browser (default: /usr/bin/chromium)
#   E2E_SCREENSHOT  where the browser test saves its screenshot
#                   (default: /tmp/websocket-service-e2e/browser.png)
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
  echo "error: Node.js >= 20 is needed (node --test, playwright-core); found $(node --version)" >&2
  exit 1
fi

export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_BIN" ]; then
  echo "==> installing chromium (Debian package)"
  # Without its recommends (printer setup, notification daemon, ...), which headless use does
  # not need; fonts-liberation so that the screenshot renders text with metric-compatible fonts.
  apt_install chromium fonts-liberation
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (Debian package)"
  apt_install redis-server
fi

if [ -z "${SERVER_BIN:-}" ]; then
  export SERVER_BIN="$PWD/target/debug/websocket-service"
  if command -v cargo >/dev/null 2>&1; then
    echo "==> cargo build --bin websocket-service"
    cargo build --quiet --locked --bin websocket-service
  fi
fi

cd clients/ts
# npm ci when node_modules is missing or older than the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> npm ci (clients/ts)"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "==> tsc (clients/ts)"
rm -rf dist
npm run --silent build

echo "==> unit tests (clients/ts, node --test)"
npm test --silent

echo "==> browser end-to-end test (headless chromium)"
npm run --silent e2e
