#!/usr/bin/env bash
# Two builds of the server on the same bench, alternately, so that both see the same machine:
# each round runs bench/run.sh's SCENARIOS (default: the plain path, "unicast-flat unicast-20k")
# against BASE_BIN (BENCH_SERVER_BIN) and against this tree's build, in turn (base first in odd
# rounds, this build first in even ones, so neither always runs second); then prints
# deliveries/s flat out (with the server's CPU per delivery, which other work on a shared machine
# disturbs less than the rate) and p99 at 20,000 msg/s of every run, with the machine's load
# average when the run started and the CPU other processes took.
#
#   git worktree add /tmp/base d8d42f3 && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target \
#     cargo build --release --locked -p websocket-service)
#   bench/compare.sh /tmp/base-target/release/websocket-service 2
#
# Results go to $BENCH_OUT/{base,this}/<round>/ (default /tmp/bench-compare): the JSON and SVG of
# every scenario, run.log, loadavg. Every run is bounded by bench/run.sh's own limits.
# BENCH_TABLE_ONLY=1 prints the table of the rounds already in $BENCH_OUT without running.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_BIN=${1:?usage: bench/compare.sh BASE_SERVER_BIN [ROUNDS]}
ROUNDS=${2:-2}
OUT=${BENCH_OUT:-/tmp/bench-compare}
export SCENARIOS=${SCENARIOS:-"unicast-flat unicast-20k"}
[ -x "$BASE_BIN" ] || { echo "no executable $BASE_BIN" >&2; exit 1; }

for round in $(seq 1 "$ROUNDS"); do
  [ "${BENCH_TABLE_ONLY:-0}" = 1 ] && break
  builds="base this"
  [ $((round % 2)) -eq 0 ] && builds="this base"
  for build in $builds; do
    dir=$OUT/$build/$round
    mkdir -p "$dir"
    cut -d' ' -f1-3 /proc/loadavg >"$dir/loadavg"
    printf '==> round %s, %s build (load %s)\n' "$round" "$build" "$(cat "$dir/loadavg")" >&2
    if [ "$build" = base ]; then
      BENCH_SERVER_BIN=$BASE_BIN BENCH_OUT=$dir ./bench/run.sh >"$dir/run.log" 2>&1
    else
      env -u BENCH_SERVER_BIN BENCH_OUT="$dir" ./bench/run.sh >"$dir/run.log" 2>&1
    fi
  done
done

printf '\n| build | round | load (1/5/15 min) | flat out deliveries/s | server CPU µs per delivery | other processes during flat out, %% of a core | p99 at 20k msg/s, ms (each run) | other processes during 20k, %% of a core |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for round in $(seq 1 "$ROUNDS"); do
  for build in base this; do
    dir=$OUT/$build/$round
    flat=$(jq -r '.delivery.per_s | floor' "$dir/unicast-flat.json" 2>/dev/null || echo -)
    per=$(jq -r '.cpu.publish.processes.server * 10000 / .delivery.per_s * 100 | round / 100' \
      "$dir/unicast-flat.json" 2>/dev/null || echo -)
    flat_other=$(jq -r '.cpu.publish.other_processes' "$dir/unicast-flat.json" 2>/dev/null || echo -)
    if [ -f "$dir/unicast-20k.runs.json" ]; then
      p99=$(jq -r '[.[].p99_ms | tostring] | join(" / ")' "$dir/unicast-20k.runs.json")
      other=$(jq -r '[.[].other_processes_pct | tostring] | join(" / ")' "$dir/unicast-20k.runs.json")
    else
      p99=$(jq -r '.latency.p99_ms' "$dir/unicast-20k.json" 2>/dev/null || echo -)
      other=$(jq -r '.cpu.publish.other_processes' "$dir/unicast-20k.json" 2>/dev/null || echo -)
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$build" "$round" "$(cat "$dir/loadavg")" \
      "$flat" "$per" "$flat_other" "$p99" "$other"
  done
done
