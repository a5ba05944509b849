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

# shellcheck source=scripts/lib/browser-test-env.sh
. scripts/lib/browser-test-env.sh

npm_ci console/e2e
cd console/e2e

echo "==> operator console end-to-end test (headless chromium)"
npm run --silent e2e
