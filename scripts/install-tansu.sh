#!/usr/bin/env bash
# Installs tansu (a Kafka-protocol broker, used by tests/kafka_ingest.rs) when it is missing.
# A release build from crates.io: about 7 minutes on 2 cores. tansu lands in ~/.cargo/bin.
# Override the version with TANSU_VERSION (the tests are written against 0.6.0).
set -euo pipefail

version="${TANSU_VERSION:-0.6.0}"
bin_dir="${CARGO_HOME:-$HOME/.cargo}/bin"

if command -v tansu >/dev/null 2>&1 || [ -x "$bin_dir/tansu" ]; then
  found="$(command -v tansu || echo "$bin_dir/tansu")"
  echo "==> tansu already installed: $found"
  exit 0
fi

echo "==> installing tansu $version (cargo install, release build: several minutes)"
# Some of its dependencies build C code (aws-lc, zstd): a C compiler and make are needed, cmake
# is not. Debian's build-essential has both.
if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq build-essential >/dev/null
fi
cargo install tansu --version "$version" --locked --features dynostore
echo "==> tansu installed: $bin_dir/tansu"
