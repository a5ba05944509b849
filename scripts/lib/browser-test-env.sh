# Sourced by the browser tests (scripts/test-clients.sh, scripts/test-console.sh): installs what a
# fresh Debian machine lacks (Node.js >= 20 and npm, Chromium, redis-server, from Debian's
# packages), builds the server binary unless SERVER_BIN is given, and offers npm_ci DIR.
# Exports CHROMIUM_BIN (default /usr/bin/chromium) and SERVER_BIN.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "==> installing nodejs and npm (Debian packages)"
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "error: Node.js >= 20 is needed (node --test, playwright-core); found $(node --version)" >&2
  exit 1
fi

export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_BIN" ]; then
  echo "==> installing chromium (Debian package)"
  # Without its recommends (printer setup, notification daemon, ...), which headless use does
  # not need; fonts-liberation so that screenshots render text with metric-compatible fonts.
  apt_install chromium fonts-liberation
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (Debian package)"
  apt_install redis-server
fi

if [ -z "${SERVER_BIN:-}" ]; then
  export SERVER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/websocket-service"
  if command -v cargo >/dev/null 2>&1; then
    echo "==> cargo build --bin websocket-service"
    cargo build --quiet --locked --bin websocket-service
  fi
fi

# npm ci in DIR when its node_modules is missing or older than its lockfile.
npm_ci() {
  if [ ! -f "$1/node_modules/.package-lock.json" ] \
    || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    echo "==> npm ci ($1)"
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
