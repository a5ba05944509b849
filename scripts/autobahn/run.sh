#!/usr/bin/env bash
# RFC 6455 conformance: runs Autobahn|Testsuite's fuzzingclient (cases 1.* to 7.* and 9.1.1–2)
# against the server binary and fails on any non-conformant case (scripts/autobahn/check.py).
#
# Usage: scripts/autobahn/run.sh [SERVER_BINARY]   (default: target/debug/websocket-service)
#
# autobahntestsuite runs on Python 2.7 only: it is installed from PyPI into a virtualenv under
# target/autobahn (made with virtualenv<20.22, the last that makes 2.7 environments), using the
# python2.7 that pyenv provides on this project's machines. The server gets its own settings
# (a free loopback port, the in-process broker, frames up to 16 MiB for the 9.1.x cases), and
# the token travels in the URL. Loopback only; every step is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."

server_bin=${1:-target/debug/websocket-service}
work=target/autobahn
mkdir -p "$work"
work=$(cd "$work" && pwd)

find_python2() {
  if command -v pyenv >/dev/null 2>&1; then
    local version
    version=$(pyenv versions --bare 2>/dev/null | grep -E '^2\.7(\.|$)' | tail -1 || true)
    if [ -n "$version" ]; then
      echo "$(pyenv root)/versions/$version/bin/python2.7"
      return
    fi
  fi
  command -v python2.7 || { echo "autobahn: python2.7 not found (pyenv install 2.7.18)" >&2; exit 1; }
}

if [ ! -x "$work/venv/bin/wstest" ]; then
  echo "==> autobahn: installing autobahntestsuite (PyPI) into $work/venv"
  python2=$(find_python2)
  rm -rf "$work/venv" "$work/bootstrap"
  "$python2" -m pip install -q --disable-pip-version-check --no-warn-script-location \
    --target "$work/bootstrap" 'virtualenv<20.22' 2>&1 | grep -v DEPRECATION || true
  PYTHONPATH="$work/bootstrap" "$python2" -m virtualenv -q "$work/venv"
  "$work/venv/bin/pip" install -q --disable-pip-version-check autobahntestsuite 2>&1 \
    | grep -v DEPRECATION || true
  [ -x "$work/venv/bin/wstest" ] || { echo "autobahn: wstest did not install" >&2; exit 1; }
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
secret="autobahn-secret-0123456789"
token=$(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
def b64(raw): return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "autobahn", "exp": int(time.time()) + 3600}).encode())
sig = hmac.new(sys.argv[1].encode(), (head + "." + body).encode(), hashlib.sha256).digest()
print(head + "." + body + "." + b64(sig))
PY
)

cat > "$work/settings.toml" <<TOML
[server]
bind = "127.0.0.1:$port"
max_frame_bytes = 16777216
[auth]
jwt_secret = "$secret"
[limits]
max_connections_per_user = 100000
[shutdown]
drain_timeout_s = 1
[telemetry]
log_format = "json"
TOML

cat > "$work/fuzzingclient.json" <<JSON
{
  "outdir": "$work/reports",
  "servers": [{"agent": "websocket-service", "url": "ws://127.0.0.1:$port/ws?token=$token"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.1.1", "9.1.2"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON

rm -rf "$work/reports"
"$server_bin" --config "$work/settings.toml" >"$work/server.log" 2>&1 &
server_pid=$!
stop_server() { kill -INT "$server_pid" 2>/dev/null || true; sleep 0.2; kill -INT "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
trap stop_server EXIT

for _ in $(seq 1 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "autobahn: server exited" >&2; exit 1; }
  sleep 0.1
done

echo "==> autobahn: fuzzingclient against 127.0.0.1:$port"
(cd "$work" && timeout 900 "$work/venv/bin/wstest" -m fuzzingclient -s "$work/fuzzingclient.json" \
  >"$work/wstest.log" 2>&1) || { tail -20 "$work/wstest.log" >&2; echo "autobahn: wstest failed" >&2; exit 1; }
python3 scripts/autobahn/check.py "$work/reports"
