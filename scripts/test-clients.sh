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

# shellcheck source=scripts/lib/browser-test-env.sh
. scripts/lib/browser-test-env.sh

npm_ci clients/ts
cd clients/ts

echo "==> tsc (clients/ts)"
rm -rf dist
npm run --silent build

echo "==> unit tests (clients/ts, node --test)"
npm test --silent

echo "==> browser end-to-end test (headless chromium)"
npm run --silent e2e
