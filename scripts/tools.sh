#!/usr/bin/env bash
# Dev tools for lint and tests, installed under target/tools when missing:
#   buf           npm package @bufbuild/buf  -> target/tools/node_modules/.bin/buf
#                 (skipped when `buf` is already on PATH)
#   prism         npm package @stoplight/prism-cli -> target/tools/node_modules/.bin/prism
#                 (the validating mock of Twilio's OpenAPI description in crates/restock-sms/tests)
#   grpcio-tools  Python venv                -> target/tools/venv/bin/python -m grpc_tools.protoc
#
# Callers: PATH="$ROOT/target/tools/node_modules/.bin:$PATH" and use target/tools/venv/bin/python.
# Silent when everything is present; otherwise says what it installs (on stderr).
#
# Environment: BUF_VERSION and PRISM_VERSION (defaults below) pin the releases installed from npm.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TOOLS="$ROOT/target/tools"
BUF_VERSION="${BUF_VERSION:-1.75.0}"
PRISM_VERSION="${PRISM_VERSION:-5.14.2}"

log() { printf 'tools: %s\n' "$*" >&2; }
die() { printf 'tools: error: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=0
apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    die "missing $*; install the Debian/Ubuntu packages: sudo apt-get install -y $*"
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

ensure_buf() {
  if command -v buf >/dev/null || [ -x "$TOOLS/node_modules/.bin/buf" ]; then return 0; fi
  if ! command -v npm >/dev/null; then
    # nodejs builds from NodeSource bundle npm; Debian's split it out.
    if command -v node >/dev/null; then apt_install npm; else apt_install nodejs npm; fi
  fi
  mkdir -p "$TOOLS"
  log "installing buf $BUF_VERSION (npm @bufbuild/buf) into $TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error \
    "@bufbuild/buf@$BUF_VERSION" >&2
  [ -x "$TOOLS/node_modules/.bin/buf" ] || die "npm install of @bufbuild/buf did not produce $TOOLS/node_modules/.bin/buf"
}

ensure_prism() {
  if [ -x "$TOOLS/node_modules/.bin/prism" ]; then return 0; fi
  if ! command -v npm >/dev/null; then
    if command -v node >/dev/null; then apt_install npm; else apt_install nodejs npm; fi
  fi
  mkdir -p "$TOOLS"
  log "installing prism $PRISM_VERSION (npm @stoplight/prism-cli) into $TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error \
    "@stoplight/prism-cli@$PRISM_VERSION" >&2
  [ -x "$TOOLS/node_modules/.bin/prism" ] || die "npm install of @stoplight/prism-cli did not produce $TOOLS/node_modules/.bin/prism"
}

ensure_grpc_tools() {
  local venv="$TOOLS/venv"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import grpc_tools' 2>/dev/null; then
    return 0
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  # (Re)create the venv unless it has a working pip (its python3 may have gone away).
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p "$TOOLS"
    log "creating Python venv $venv"
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      apt_install python3-venv
      python3 -m venv "$venv" >&2 || die "python3 -m venv failed"
    fi
  fi
  log "installing grpcio-tools into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check grpcio-tools >&2
  "$venv/bin/python" -c 'import grpc_tools' || die "grpcio-tools installed but 'import grpc_tools' fails"
}

ensure_buf
ensure_prism
ensure_grpc_tools
