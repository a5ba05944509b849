#!/usr/bin/env bash
# Measures line coverage of src/ and actors/ with cargo-tarpaulin (installed from crates.io when
# missing; its llvm engine needs no extra rustup component) over every test, and prints the
# figure. The server processes that end-to-end tests spawn are instrumented too and count when
# they exit normally (SIGTERM drain); those killed at the end of a test do not, so the figure is
# a lower bound. Kept out of CI: instrumented builds take several minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-tarpaulin >/dev/null 2>&1 || cargo install cargo-tarpaulin --locked
command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }
cargo tarpaulin --packages websocket-service --packages ws-actors --engine llvm --skip-clean --no-fail-fast \
  --exclude-files 'tests/*' --exclude-files 'actors/tests/*' \
  --target-dir target/tarpaulin --out Stdout -- --test-threads=1 2>&1 | tee target/coverage.txt | tail -40
grep -E '^[0-9.]+% coverage' target/coverage.txt
