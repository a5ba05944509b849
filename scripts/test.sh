#!/usr/bin/env bash
# Runs every check CI runs, on a fresh Debian machine: installs what is missing (redis-server),
# then formatting, clippy with warnings as errors, every test of the workspace (unit, actor,
# and end-to-end tests that start their own redis-server and server processes on free ports),
# and the Autobahn|Testsuite conformance run (scripts/autobahn/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (Debian package)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
fi

# A Kafka-protocol broker for the ingest tests (cargo install, several minutes on 2 cores).
./scripts/install-tansu.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> no import cycle between modules"
python3 scripts/module_cycles.py src actors/src

echo "==> cargo test"
cargo test --workspace --locked

echo "==> RFC 6455 conformance: Autobahn|Testsuite fuzzingclient against the debug build"
./scripts/autobahn/run.sh "${CARGO_TARGET_DIR:-target}/debug/websocket-service"

echo "==> deploy/ checks (manifests, compose, env names, Dockerfile lint, server with deploy settings)"
./scripts/check-deploy.sh

echo "==> TypeScript client: build, unit tests, end-to-end test in headless Chromium"
./scripts/test-clients.sh

echo "==> Operator console: end-to-end test in headless Chromium"
./scripts/test-console.sh
