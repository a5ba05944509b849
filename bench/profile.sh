#!/usr/bin/env bash
# Profiles the server the way bench/FINDINGS.md was made: a release build with line tables (in
# target/profile, so the normal release build is untouched), then
#   1. perf sampling (cpu-clock: this VM has no hardware counters) of the server during 20 s of
#      unicast flat out (10,000 sockets), plus context switches during 10 s at 20,000 msg/s;
#   perf-connect: the same sampling (with call graphs) while 18,000 sockets connect;
#   2. callgrind (instruction counts, user space only) of the server at 1,000 msg/s to 1,000
#      sockets: one dump for the connect phase, one for the publish phase;
#   3. massif (heap) of the server holding 2,000 idle authenticated sockets.
# Outputs go to $BENCH_OUT/raw/profile (not committed); summaries are printed. Bounded: about
# 15 minutes with the build, everything started here is killed on exit.
#
#   bench/profile.sh                 # all three
#   PROFILES="massif" bench/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILES=${PROFILES:-"perf callgrind massif"}
OUT=${BENCH_OUT:-bench/results}/raw/profile
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SECRET="bench-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export LOADGEN_SECRET=$SECRET
NICE=()
if [ "$(id -u)" -eq 0 ]; then NICE=(nice -n -10); fi
log() { printf '\n==> %s\n' "$*" >&2; }

log "building (release + line tables, target/profile) and loadgen"
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --locked \
  --target-dir target/profile -p websocket-service >&2
cargo build --release --locked -p loadgen >&2
SERVER_BIN=$PWD/target/profile/release/websocket-service
LOADGEN=$PWD/target/release/loadgen

REDIS_PID=""
SERVER_PID=""
cleanup() {
  for pid in $SERVER_PID $REDIS_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in $SERVER_PID $REDIS_PID; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 10000))
    if ! ss -Htln "sport = :$port" | grep -q .; then echo "$port"; return; fi
  done
  return 1
}

REDIS_PORT=$(free_port)
"${NICE[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --client-output-buffer-limit "pubsub 0 0 0" --logfile "$OUT/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

printf '# profile: every setting comes from WS__ environment variables\n' >"$OUT/server.toml"

WS_PORT=""
# start_server NAME [WRAPPER...]: the profiling build, optionally under valgrind.
start_server() {
  local name=$1
  shift
  WS_PORT=$(free_port)
  WS__SERVER__BIND=127.0.0.1:$WS_PORT WS__SERVER__WORKERS=2 WS__AUTH__JWT_SECRET=$SECRET \
  WS__REDIS__URL=redis://127.0.0.1:$REDIS_PORT WS__LIMITS__MAX_CONNECTIONS=50000 \
  WS__LIMITS__MAX_CONNECTIONS_PER_USER=20 WS__LIMITS__SEND_QUEUE_MAX=1024 \
  WS__LIMITS__HEARTBEAT_INTERVAL_S=30 WS__SHUTDOWN__DRAIN_TIMEOUT_S=10 \
    "$@" "$SERVER_BIN" --config "$OUT/server.toml" >"$OUT/server-$name.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$WS_PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server did not start" >&2
  return 1
}
stop_server() {
  kill -INT "$SERVER_PID" 2>/dev/null || true
  sleep 0.3
  kill -INT "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
# run_loadgen NAME ARGS...: in the background, stderr to $OUT/NAME.log.
run_loadgen() {
  local name=$1
  shift
  timeout --kill-after=10 600 "${NICE[@]}" "$LOADGEN" --url "ws://127.0.0.1:$WS_PORT/ws" \
    --redis "redis://127.0.0.1:$REDIS_PORT" --server-pid "$SERVER_PID" \
    --out "$OUT/$name.json" --max-run-s 500 "$@" 2>"$OUT/$name.log" &
  LOADGEN_PID=$!
}
# wait_for FILE PATTERN: until PATTERN appears in FILE (at most 5 minutes).
wait_for() {
  for _ in $(seq 1 1500); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "timed out waiting for '$2' in $1" >&2
  return 1
}

for p in $PROFILES; do
  case $p in
    perf)
      log "perf: cpu-clock samples of the server during unicast flat out"
      start_server perf "${NICE[@]}"
      run_loadgen perf-flat --users 10000 --connect-concurrency 64 --rate 0 --duration-s 20
      wait_for "$OUT/perf-flat.log" "phase: publish"
      sleep 3
      perf record -F 250 -p "$SERVER_PID" -o "$OUT/perf-flat.data" -- sleep 10 >&2
      wait "$LOADGEN_PID" || true
      perf report -i "$OUT/perf-flat.data" --no-children --sort dso --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -5
      perf report -i "$OUT/perf-flat.data" --no-children --sort sym --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -40 | tee "$OUT/perf-flat-top.txt"
      log "perf: context switches of the server during 10 s at 20,000 msg/s"
      run_loadgen perf-20k --users 10000 --connect-concurrency 64 --rate 20000 --duration-s 15 \
        --user-prefix lgp
      wait_for "$OUT/perf-20k.log" "phase: publish"
      sleep 2
      perf stat -e context-switches,cpu-migrations,cpu-clock -p "$SERVER_PID" -- sleep 10 2>&1 \
        | grep -E 'context|migr|cpu-clock|elapsed' | tee "$OUT/perf-20k-stat.txt"
      wait "$LOADGEN_PID" || true
      stop_server ;;
    perf-connect)
      log "perf: cpu-clock samples of the server while 18,000 sockets connect (512 in flight)"
      start_server perf-connect "${NICE[@]}"
      perf record -e cpu-clock -F 1000 -g -p "$SERVER_PID" -o "$OUT/perf-connect.data" \
        -- sleep 6 >&2 &
      PERF_PID=$!
      sleep 1 # perf attaches to every thread first
      run_loadgen perf-connect --users 18000 --connect-concurrency 512 --no-verify --hold-s 1
      wait "$LOADGEN_PID" || true
      wait "$PERF_PID" || true
      stop_server
      perf report -i "$OUT/perf-connect.data" --no-children --sort dso --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -8
      perf report -i "$OUT/perf-connect.data" --children --sort sym --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -60 | tee "$OUT/perf-connect-top.txt"
      ;;
    callgrind)
      log "callgrind: server instructions per connect and per message (1,000 sockets, 1,000 msg/s)"
      start_server callgrind valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$OUT/callgrind.out"
      callgrind_control -i on "$SERVER_PID" >/dev/null
      run_loadgen callgrind --users 1000 --connect-concurrency 16 --connect-timeout-s 60 \
        --rate 1000 --duration-s 15 --settle-s 20
      wait_for "$OUT/callgrind.log" "connected 1000 of"
      callgrind_control -d connect "$SERVER_PID" >/dev/null
      callgrind_control -i off "$SERVER_PID" >/dev/null
      wait_for "$OUT/callgrind.log" "phase: publish"
      callgrind_control -z "$SERVER_PID" >/dev/null
      callgrind_control -i on "$SERVER_PID" >/dev/null
      wait_for "$OUT/callgrind.log" "phase: report"
      callgrind_control -d publish "$SERVER_PID" >/dev/null
      callgrind_control -i off "$SERVER_PID" >/dev/null
      wait "$LOADGEN_PID" || true
      stop_server
      for part in 1 2; do
        callgrind_annotate --inclusive=yes --threshold=100 "$OUT/callgrind.out.$part" 2>/dev/null \
          | sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/library/##' \
          | grep -E '^\s*[0-9,]+ \(|PROGRAM TOTALS' | head -80 | cut -c1-200 \
          | tee "$OUT/callgrind-$part-inclusive.txt" | head -40
      done ;;
    massif)
      log "massif: server heap holding 2,000 idle authenticated sockets"
      start_server massif valgrind --tool=massif --massif-out-file="$OUT/massif.out" \
        --threshold=0.5 --detailed-freq=1 --max-snapshots=100
      run_loadgen massif --users 2000 --connect-concurrency 16 --connect-timeout-s 60 --hold-s 3
      wait "$LOADGEN_PID" || true
      stop_server
      python3 bench/massif_top.py "$OUT/massif.out" 2 | tee "$OUT/massif-top.txt" ;;
    *)
      echo "unknown profile $p (perf perf-connect callgrind massif)" >&2
      exit 1 ;;
  esac
done
