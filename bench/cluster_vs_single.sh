#!/usr/bin/env bash
# Unicast flat out through one Redis, then through a Redis Cluster (3 primaries, 3 replicas),
# same server build, same load: 10,000 users x 1 socket, 256 B payloads, 20 s, plain
# PUBLISH / SPUBLISH. Reports deliveries/s of each and their ratio. Everything (client, Redis,
# server) shares this machine's cores, so the numbers are CPU-bound: see README "Redis Cluster".
#
#   bench/cluster_vs_single.sh [OUT_DIR]        (default bench/results/cluster)
#   BENCH_REPEAT=3 bench/cluster_vs_single.sh    (alternate the two setups N times)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/cluster}
REPEAT=${BENCH_REPEAT:-1}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
RAW=$OUT/raw
SECRET="bench-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export LOADGEN_SECRET=$SECRET
NICE=()
if [ "$(id -u)" -eq 0 ]; then NICE=(nice -n -10); fi
log() { printf '\n==> %s\n' "$*" >&2; }

for tool in redis-server redis-cli curl ss jq; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "building release binaries"
  cargo build --release --locked -p websocket-service -p loadgen >&2
fi
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
SERVER_BIN=${BENCH_SERVER_BIN:-$TARGET/release/websocket-service}
LOADGEN=$TARGET/release/loadgen

PIDS=()
SERVER_PID=""
cleanup() {
  for pid in $SERVER_PID "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports are handed out upward from a random base in the parent shell (a `$(…)` subshell would
# draw the same $RANDOM again), skipping any port something listens on.
NEXT_PORT=$((20000 + RANDOM % 5000))
PORT=""
next_port() {
  while ss -Htln "sport = :$NEXT_PORT" | grep -q .; do NEXT_PORT=$((NEXT_PORT + 1)); done
  PORT=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
}

# redis_node PORT [cluster args...]: one redis-server, as the main bench runs it.
redis_node() {
  local port=$1
  shift
  "${NICE[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --client-output-buffer-limit "pubsub 0 0 0" --maxclients 1000 --dir "$RAW" \
    --logfile "$RAW/redis-$port.log" "$@" &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  echo "redis-server on $port did not start" >&2
  return 1
}

next_port
SINGLE_PORT=$PORT
log "standalone redis-server on $SINGLE_PORT"
redis_node "$SINGLE_PORT"

CLUSTER_PORTS=()
for _ in 1 2 3 4 5 6; do
  next_port
  port=$PORT
  next_port
  CLUSTER_PORTS+=("$port")
  redis_node "$port" --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
    --cluster-port "$PORT" --cluster-node-timeout 2000
done
log "cluster on ${CLUSTER_PORTS[*]}"
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
  --cluster-replicas 1 --cluster-yes >"$RAW/cluster-create.log"
for _ in $(seq 1 100); do
  redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep -q cluster_state:ok && break
  sleep 0.1
done
CLUSTER_NODES=$(printf 'redis://127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")
CLUSTER_NODES=${CLUSTER_NODES%,}
printf '# bench: every setting comes from WS__ environment variables\n' >"$RAW/server.toml"

# redis_cpu PORT...: CPU seconds (user + sys) the redis-servers on PORT... have used so far.
redis_cpu() {
  local total=0 port
  for port in "$@"; do
    total=$(redis-cli -p "$port" info cpu | tr -d '\r' |
      awk -F: -v t="$total" '/^used_cpu_(user|sys):/ { t += $2 } END { print t }')
  done
  echo "$total"
}

# run NAME REDIS_ENV LOADGEN_REDIS_ARGS...: a fresh server, one loadgen run, the report.
run() {
  local name=$1 redis_env=$2
  shift 2
  local ws_port
  next_port
  ws_port=$PORT
  env "$redis_env" \
    WS__SERVER__BIND=127.0.0.1:$ws_port \
    WS__SERVER__WORKERS=2 \
    WS__AUTH__JWT_SECRET="$SECRET" \
    WS__LIMITS__MAX_CONNECTIONS=50000 \
    WS__LIMITS__MAX_CONNECTIONS_PER_USER=20 \
    WS__LIMITS__SEND_QUEUE_MAX=1024 \
    WS__LIMITS__HEARTBEAT_INTERVAL_S=30 \
    WS__LIMITS__IDLE_TIMEOUT_S=600 \
    WS__TELEMETRY__LOG_FORMAT=json \
    "${NICE[@]}" "$SERVER_BIN" --config "$RAW/server.toml" >"$RAW/server-$name.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$ws_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  log "scenario $name"
  local ports=("$SINGLE_PORT")
  case $name in cluster-*) ports=("${CLUSTER_PORTS[@]}") ;; esac
  local cpu_before
  cpu_before=$(redis_cpu "${ports[@]}")
  timeout --kill-after=10 600 "${NICE[@]}" "$LOADGEN" \
    --url "ws://127.0.0.1:$ws_port/ws" --server-pid "$SERVER_PID" "$@" \
    --users 10000 --connect-concurrency 64 --payload 256 --rate 0 --duration-s 20 \
    --label "unicast flat out ($name): 10,000 users x 1 socket, 256 B, 20 s" \
    --out "$OUT/$name.json" --max-run-s 300 2>"$RAW/loadgen-$name.log"
  local cpu_after
  cpu_after=$(redis_cpu "${ports[@]}")
  echo "$cpu_before $cpu_after" >"$RAW/redis-cpu-$name.txt"
  kill -INT "$SERVER_PID" 2>/dev/null || true
  kill -INT "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  jq -r '"\(.label): \(.delivery.per_s | floor) deliveries/s, lost \(.delivery.loss.lost), duplicates \(.delivery.loss.duplicates)"' "$OUT/$name.json" >&2 || true
}

for i in $(seq 1 "$REPEAT"); do
  run "single-$i" "WS__REDIS__URL=redis://127.0.0.1:$SINGLE_PORT" \
    --redis "redis://127.0.0.1:$SINGLE_PORT" --redis-pid "${PIDS[0]}"
  run "cluster-$i" "WS__REDIS__CLUSTER_NODES=$CLUSTER_NODES" \
    --redis "redis://127.0.0.1:${CLUSTER_PORTS[0]}" --redis-cluster
done

log "summary (per delivery: server and Redis CPU, from the server's threads and INFO cpu)"
for f in "$OUT"/single-*.json "$OUT"/cluster-*.json; do
  name=$(basename "$f" .json)
  read -r before after <"$RAW/redis-cpu-$name.txt"
  jq -r --arg before "$before" --arg after "$after" '
    (.delivery.delivered) as $n
    | "\(.label): \(.delivery.per_s | floor) deliveries/s; server \((.cpu.publish.processes.server * .cpu.publish.seconds / 100 / $n * 1e6 * 10 | floor) / 10) us, redis \((($after | tonumber) - ($before | tonumber)) / $n * 1e6 * 10 | floor / 10) us, loadgen \((.cpu.publish.processes.loadgen * .cpu.publish.seconds / 100 / $n * 1e6 * 10 | floor) / 10) us per delivery"' "$f"
done
