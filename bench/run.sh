#!/usr/bin/env bash
# Load bench of websocket-service: builds the release binaries, starts its own redis-server and a
# fresh server per scenario (on free loopback ports), runs `loadgen` for each scenario, and writes
# bench/results/<scenario>.json + .svg and bench/results/REPORT.md. Everything it starts is killed
# on exit (trap); every step is bounded in time.
#
#   bench/run.sh                      # every scenario (about 20 minutes)
#   BENCH_REPEAT=1 bench/run.sh       # latency scenarios once instead of 3 times
#   SCENARIOS="idle-18k unicast-20k" bench/run.sh
#   SCENARIOS=delivery bench/run.sh   # the delivery scenarios below (about 8 minutes)
#   BENCH_OUT=/tmp/bench bench/run.sh # write somewhere else
#   BENCH_SERVER_ENV="WS__HISTORY__SIZE=0" bench/run.sh # extra server settings for every scenario
#   BENCH_SERVER_BIN=/tmp/old/websocket-service SCENARIOS="unicast-flat unicast-20k" bench/run.sh
#                                     # another build of the server (plain scenarios only for a
#                                     # build from before durable publishing)
#
# Scenarios: idle-18k idle-5k connect-burst unicast-flat unicast-20k fanout drain-10k drain-5k
# stuck, and the delivery ones (README "Delivery guarantees"; Redis is emptied before every
# scenario, so each starts with no history):
#   unicast-durable-flat  10,000 legacy sockets, FCALL ws_publish flat out, 256 B, 20 s: delivered/s
#                         and Redis' cost per publish (INFO cpu / commandstats)
#   unicast-durable-20k   the same at 20,000 msg/s: latency (repeated like unicast-20k)
#   unicast-v2-flat       10,000 protocol v2 sockets (v=2), FCALL flat out: every socket's offsets
#                         checked (no gap, no repeat)
#   unicast-v2-20k        the same at 20,000 msg/s: latency (repeated like unicast-20k)
#   history-300           history.size 300, 1,000 users, FCALL flat out 15 s so every stream is
#                         full, then MEMORY USAGE of 200 users' stream and meta keys
#   resume-10k            10,000 v2 sockets drop their connections, 5 messages per user are
#                         published durably while they are away (2 s), all reconnect with
#                         since=<epoch>:<offset>: server CPU per resume (from /proc/PID/stat) and
#                         the time until every socket has its 5 messages
#   blip-10k              10,000 v2 sockets, FCALL at 20,000 msg/s; at 5 s CLIENT KILL TYPE pubsub
#                         (the server's subscriber link drops), publishing stops 0.2 s later: the
#                         time until every socket has every message, and the server's catch-ups
# Server logs and raw output go to $BENCH_OUT/raw/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

DELIVERY="unicast-durable-flat unicast-durable-20k unicast-v2-flat unicast-v2-20k history-300 resume-10k blip-10k"
ALL="idle-18k idle-5k connect-burst unicast-flat unicast-20k fanout drain-10k drain-5k stuck $DELIVERY"
SCENARIOS=${SCENARIOS:-$ALL}
SCENARIOS=${SCENARIOS//delivery/$DELIVERY}
OUT=${BENCH_OUT:-bench/results}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
RAW=$OUT/raw
SECRET="bench-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export LOADGEN_SECRET=$SECRET
# Client and server share the machine's cores; other work on the machine would skew the numbers,
# so the bench's own processes run at a higher priority when we may (root), and every report
# records how much CPU other processes still took.
NICE=()
if [ "$(id -u)" -eq 0 ]; then NICE=(nice -n -10); fi

log() { printf '\n==> %s\n' "$*" >&2; }

for tool in redis-server redis-cli curl ss jq; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool (Debian: apt-get install redis-server curl iproute2 jq)" >&2; exit 1; }
done

log "building release binaries"
cargo build --release --locked -p websocket-service -p loadgen >&2
# BENCH_SERVER_BIN measures another build of the server (e.g. to compare two versions).
SERVER_BIN=${BENCH_SERVER_BIN:-$PWD/target/release/websocket-service}
LOADGEN=$PWD/target/release/loadgen

REDIS_PID=""
SERVER_PID=""
cleanup() {
  for pid in $SERVER_PID $REDIS_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 0.5
  for pid in $SERVER_PID $REDIS_PID; do
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port nobody listens on, below the ephemeral range (clients need all of that).
free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 10000))
    if ! ss -Htln "sport = :$port" | grep -q .; then
      echo "$port"
      return
    fi
  done
  echo "no free port" >&2
  return 1
}

REDIS_PORT=$(free_port)
log "redis-server on 127.0.0.1:$REDIS_PORT (client-output-buffer-limit pubsub 0 0 0: unlimited, so the bench measures the server, not Redis cutting it off)"
"${NICE[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --client-output-buffer-limit "pubsub 0 0 0" --maxclients 1000 \
  --logfile "$RAW/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping | grep -q PONG

# Every setting comes from the environment below; the repository's settings.toml is not read
# (it may name keys a binary built earlier does not know yet).
printf '# bench: every setting comes from WS__ environment variables\n' >"$RAW/server.toml"

WS_PORT=""
# start_server NAME [VAR=VALUE...]: a fresh server (so that RSS starts from its baseline) with the
# bench settings and the given extra ones, on an emptied Redis (no history left by an earlier
# scenario; FLUSHALL keeps the Redis Function, which the server loads again anyway).
start_server() {
  local name=$1
  shift
  redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
  WS_PORT=$(free_port)
  env "$@" \
  WS__SERVER__BIND=127.0.0.1:$WS_PORT \
  WS__SERVER__WORKERS=2 \
  WS__AUTH__JWT_SECRET=$SECRET \
  WS__REDIS__URL=redis://127.0.0.1:$REDIS_PORT \
  WS__LIMITS__MAX_CONNECTIONS=50000 \
  WS__LIMITS__MAX_CONNECTIONS_PER_USER=20 \
  WS__LIMITS__SEND_QUEUE_MAX=1024 \
  WS__LIMITS__HEARTBEAT_INTERVAL_S=30 \
  WS__LIMITS__IDLE_TIMEOUT_S=600 \
  WS__SHUTDOWN__DRAIN_TIMEOUT_S=10 \
  WS__TELEMETRY__LOG_FORMAT=json \
    "${NICE[@]}" "$SERVER_BIN" --config "$RAW/server.toml" >"$RAW/server-$name.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$WS_PORT/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server did not become ready; log:" >&2
  tail -20 "$RAW/server-$name.log" >&2
  return 1
}

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -INT "$SERVER_PID" 2>/dev/null || true
    kill -INT "$SERVER_PID" 2>/dev/null || true # a second signal exits at once
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# loadgen NAME ARGS...: one bounded run against the current server, report in $OUT/NAME.json.
loadgen() {
  local name=$1
  shift
  log "scenario $name"
  timeout --kill-after=10 600 "${NICE[@]}" "$LOADGEN" \
    --url "ws://127.0.0.1:$WS_PORT/ws" --redis "redis://127.0.0.1:$REDIS_PORT" \
    --server-pid "$SERVER_PID" --redis-pid "$REDIS_PID" \
    --out "$DEST/$name.json" --svg "$DEST/$name.svg" --max-run-s 300 "$@" \
    2> >(tee "$DEST_LOG/$name.log" >&2)
}

# Busy share of the whole machine over one second, in percent (from /proc/stat).
machine_busy() {
  local a b
  read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ < /proc/stat
  sleep 1
  read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ < /proc/stat
  a=$((a1 + a2 + a3 + a5 + a6 + a7 + a8)); b=$((b1 + b2 + b3 + b5 + b6 + b7 + b8))
  local total=$(( (b + b4) - (a + a4) ))
  echo $(( total > 0 ? 100 * (b - a) / total : 0 ))
}

# Other work on a shared machine skews every number: wait (bounded) until the machine is
# nearly idle before a scenario. Each report still records the CPU other processes took.
wait_quiet() {
  local busy
  for _ in $(seq 1 "${BENCH_QUIET_WAIT:-60}"); do
    busy=$(machine_busy)
    [ "$busy" -le "${BENCH_QUIET_BUSY:-20}" ] && return 0
  done
  echo "note: machine still ${busy}% busy with other work; running anyway" >&2
}

scenario() {
  local name=$1
  wait_quiet
  case $name in
    # shellcheck disable=SC2086 # BENCH_SERVER_ENV is a list of KEY=VALUE words
    history-300) start_server "$name" WS__HISTORY__SIZE=300 ${BENCH_SERVER_ENV:-} ;;
    # shellcheck disable=SC2086
    *) start_server "$name" ${BENCH_SERVER_ENV:-} ;;
  esac
  case $name in
    idle-18k)
      loadgen "$name" --label "idle: 18,000 authenticated sockets" \
        --users 18000 --connect-concurrency 64 --hold-s 5 ;;
    idle-5k)
      loadgen "$name" --label "idle: 5,000 authenticated sockets" \
        --users 5000 --connect-concurrency 64 --hold-s 5 ;;
    connect-burst)
      loadgen "$name" --label "connect burst: 18,000 sockets, 512 connects in flight" \
        --users 18000 --connect-concurrency 512 --no-verify ;;
    unicast-flat)
      loadgen "$name" --label "unicast flat out: 10,000 users x 1 socket, 256 B, 20 s" \
        --users 10000 --connect-concurrency 64 --payload 256 --rate 0 --duration-s 20 ;;
    unicast-20k)
      loadgen "$name" --label "unicast 20,000 msg/s: 10,000 users x 1 socket, 256 B, 20 s" \
        --users 10000 --connect-concurrency 64 --payload 256 --rate 20000 --duration-s 20 ;;
    fanout)
      loadgen "$name" --label "fan-out: 1,000 users x 10 sockets, 2,000 msg/s (20,000 deliveries/s), 256 B, 20 s" \
        --users 1000 --sockets-per-user 10 --connect-concurrency 64 --payload 256 --rate 2000 --duration-s 20 ;;
    drain-10k)
      loadgen "$name" --label "drain: SIGTERM with 10,000 sockets open (drain_timeout_s 10)" \
        --users 10000 --connect-concurrency 64 --hold-s 2 --drain --drain-wait-s 40 --bin-ms 250 ;;
    drain-5k)
      loadgen "$name" --label "drain: SIGTERM with 5,000 sockets open (drain_timeout_s 10)" \
        --users 5000 --connect-concurrency 64 --hold-s 2 --drain --drain-wait-s 40 --bin-ms 250 ;;
    unicast-durable-flat)
      loadgen "$name" --label "unicast durable flat out: 10,000 users x 1 socket, FCALL ws_publish, 256 B, 20 s" \
        --users 10000 --connect-concurrency 64 --payload 256 --durable --rate 0 --duration-s 20 ;;
    unicast-durable-20k)
      loadgen "$name" --label "unicast durable 20,000 msg/s: 10,000 users x 1 socket, FCALL ws_publish, 256 B, 20 s" \
        --users 10000 --connect-concurrency 64 --payload 256 --durable --rate 20000 --duration-s 20 ;;
    unicast-v2-flat)
      loadgen "$name" --label "unicast v2 flat out: 10,000 users x 1 v2 socket, FCALL ws_publish, 256 B, 20 s" \
        --users 10000 --connect-concurrency 64 --payload 256 --v2 --durable --rate 0 --duration-s 20 ;;
    unicast-v2-20k)
      loadgen "$name" --label "unicast v2 20,000 msg/s: 10,000 users x 1 v2 socket, FCALL ws_publish, 256 B, 20 s" \
        --users 10000 --connect-concurrency 64 --payload 256 --v2 --durable --rate 20000 --duration-s 20 ;;
    history-300)
      loadgen "$name" --label "history memory: history.size 300, 1,000 users, FCALL ws_publish flat out, 256 B, 15 s" \
        --users 1000 --connect-concurrency 64 --payload 256 --durable --rate 0 --duration-s 15 \
        --history-sample 200 ;;
    resume-10k)
      loadgen "$name" --label "resume: 10,000 v2 sockets drop, 5 messages each published durably, all reconnect with since" \
        --users 10000 --connect-concurrency 64 --payload 256 --v2 --durable --hold-s 2 \
        --resume --resume-backlog 5 --resume-away-s 2 ;;
    blip-10k)
      loadgen "$name" --label "Redis blip: 10,000 v2 sockets, FCALL 20,000 msg/s, CLIENT KILL TYPE pubsub at 5 s, publishing stops 0.2 s later" \
        --users 10000 --connect-concurrency 64 --payload 256 --v2 --durable --rate 20000 \
        --duration-s 5.2 --blip-at-s 5 --bin-ms 250 ;;
    stuck)
      log "scenario stuck"
      timeout --kill-after=10 300 "${NICE[@]}" "$LOADGEN" stuck-reader \
        --url "ws://127.0.0.1:$WS_PORT/ws" --redis "redis://127.0.0.1:$REDIS_PORT" \
        --server-pid "$SERVER_PID" --redis-pid "$REDIS_PID" --flood 200000 --payload 1024 --settle-s 10 \
        --label "stuck reader: 200,000 x 1 KiB to a socket that never reads (send_queue_max 1024)" \
        --out "$DEST/$name.json" --svg "$DEST/$name.svg" --max-run-s 240 \
        2> >(tee "$DEST_LOG/$name.log" >&2) ;;
    *)
      echo "unknown scenario $name (known: $ALL)" >&2
      return 1 ;;
  esac
  stop_server
}

# The latency scenarios are noisy on a shared VM (CPU steal by the host comes and goes): each
# runs BENCH_REPEAT times on a fresh server; the run with the median p99 becomes NAME.json/.svg
# and every run's key numbers go to NAME.runs.json.
REPEAT=${BENCH_REPEAT:-3}
pick_median() {
  local name=$1 files=() r
  for r in $(seq 1 "$REPEAT"); do files+=("$RAW/runs/$r/$name.json"); done
  jq -s '[.[] | {p50_ms: .latency.p50_ms, p99_ms: .latency.p99_ms, p999_ms: .latency.p999_ms,
          max_ms: .latency.max_ms, delivered_per_s: .delivery.per_s, lost: .delivery.loss.lost,
          steal_pct: .cpu.publish.machine.steal, other_processes_pct: .cpu.publish.other_processes,
          server_cpu_pct: .cpu.publish.processes.server}]' "${files[@]}" >"$OUT/$name.runs.json"
  r=$(jq -s 'to_entries | sort_by(.value.latency.p99_ms) | .[length / 2 | floor].key + 1' "${files[@]}")
  cp "$RAW/runs/$r/$name.json" "$OUT/$name.json"
  cp "$RAW/runs/$r/$name.svg" "$OUT/$name.svg"
}

for s in $SCENARIOS; do
  if [ "$REPEAT" -gt 1 ] && [[ " unicast-20k fanout unicast-durable-20k unicast-v2-20k " == *" $s "* ]]; then
    for r in $(seq 1 "$REPEAT"); do
      DEST=$RAW/runs/$r
      DEST_LOG=$DEST
      mkdir -p "$DEST"
      scenario "$s"
    done
    pick_median "$s"
  else
    DEST=$OUT
    DEST_LOG=$RAW
    rm -f "$OUT/$s.runs.json"
    scenario "$s"
  fi
done

log "writing $OUT/REPORT.md"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- src actors Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT + uncommitted changes"
"$LOADGEN" report --dir "$OUT" --notes bench/FINDINGS.md --commit "$COMMIT" >"$OUT/REPORT.md"
cat "$OUT/REPORT.md"
