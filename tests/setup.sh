#!/usr/bin/env bash
# Installs what building and testing Backend Warden needs on Debian/Ubuntu; idempotent, and a
# quick no-op on a prepared machine.
#   tests/setup.sh          build packages + test packages + the uvicorn venv (for tests/run.sh)
#   tests/setup.sh build    only what `cargo build` / `cargo run` need (GTK, appindicator)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHAT=${1:-all}
now_ms() { date +%s%3N; }
step() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# GTK 3 and (Ayatana) AppIndicator for tray-icon/tao/muda; libxdo for muda.
BUILD_PKGS=(pkg-config libgtk-3-dev libayatana-appindicator3-dev libxdo-dev)
# The headless desktop of the tray end-to-end test (see tests/tray/tray-e2e-env.sh).
TRAY_TEST_PKGS=(xvfb x11-utils xdotool imagemagick dbus-daemon dbus-bin libglib2.0-bin
                python3 python3-gi gir1.2-glib-2.0 libayatana-appindicator3-1 libxdo3
                xfce4-panel dunst)

install_packages() {
  command -v apt-get >/dev/null || { step "no apt-get: install the equivalents of: $*"; return 0; }
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then step "packages: all ${#@} present"; return 0; fi
  local sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  local apt=($sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600)
  local t0; t0=$(now_ms)
  step "apt-get update"; "${apt[@]}" update >&2
  step "installing: ${missing[*]}"
  local try
  for try in 1 2 3; do
    "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2 && break
    [ $try = 3 ] && { step "apt-get install failed"; exit 1; }
    step "apt-get install failed, retry $try"; sleep 10
  done
  step "packages installed in $(( ($(now_ms) - t0) / 1000 ))s"
}

make_venv() {
  local venv=$ROOT/target/test-venv
  if "$venv/bin/python" -c 'import uvicorn, fastapi' 2>/dev/null; then
    step "venv: uvicorn and fastapi present ($venv)"; return 0
  fi
  local t0; t0=$(now_ms)
  local py; py=$(command -v python3)
  if ! "$py" -m venv --help >/dev/null 2>&1; then install_packages python3-venv; fi
  rm -rf "$venv"
  "$py" -m venv "$venv" || { install_packages python3-venv; "$py" -m venv "$venv"; }
  "$venv/bin/python" -m pip install -q --disable-pip-version-check uvicorn fastapi
  step "venv with uvicorn + fastapi in $(( ($(now_ms) - t0) / 1000 ))s"
}

case $WHAT in
  build) install_packages "${BUILD_PKGS[@]}" ;;
  all) install_packages "${BUILD_PKGS[@]}" "${TRAY_TEST_PKGS[@]}"; make_venv ;;
  *) echo "usage: tests/setup.sh [build|all]" >&2; exit 2 ;;
esac
