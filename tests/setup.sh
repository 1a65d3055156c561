#!/usr/bin/env bash
# Installs what building and testing Backend Warden needs on Debian 12 / Ubuntu. Idempotent:
# on a prepared machine every step is a check and the whole run takes well under a second.
#   tests/setup.sh          build + test packages and the uvicorn venv (what tests/run.sh needs)
#   tests/setup.sh build    only the packages `cargo build` / `cargo run` need
# Each step prints one line with its duration.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHAT=${1:-all}
VENV=$ROOT/target/test-venv

now_ms() { date +%s%3N; }
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
since() { local d=$(( $(now_ms) - $1 )); printf '%d.%ds' $((d / 1000)) $((d % 1000 / 100)); }
T_ALL=$(now_ms)

# Package lists: to add a dependency, change one array.
# Always needed to build: pkg-config finds the system libraries of the crates below.
BASE_PKGS=(pkg-config)
# GUI build packages: GTK 3 + (Ayatana) AppIndicator for tray-icon/tao/muda, libxdo for muda.
GUI_BUILD_PKGS=(libgtk-3-dev libayatana-appindicator3-dev libxdo-dev)
# Tray test packages: the headless desktop of the tray end-to-end test
# (tests/tray/tray-e2e-env.sh: Xvfb, private D-Bus, xfce4-panel's tray, dunst, Debian's python3-gi;
# xclip reads what Copy details put on the clipboard).
TRAY_TEST_PKGS=(xvfb x11-utils xdotool imagemagick dbus-daemon dbus-bin libglib2.0-bin
                python3 python3-gi gir1.2-glib-2.0 libayatana-appindicator3-1 libxdo3
                xfce4-panel dunst xclip)

SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo)   # sudo only when not root
# Wait up to 10 min for a dpkg lock held by another apt run, then retry a few times besides
# (unattended-upgrades or a concurrent setup can hold the lists lock, which the timeout misses).
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600)
apt_retry() {
  local try
  for try in 1 2 3; do
    "${APT[@]}" "$@" >&2 && return 0
    [ "$try" = 3 ] && break
    log "apt-get $1 failed (lock held?), retry $try in 10s"; sleep 10
  done
  log "ERROR: apt-get $* failed"; exit 1
}

# install_packages NAME PKG...: install the missing ones; `apt-get update` only if some are missing
install_packages() {
  local name=$1; shift
  local t0 missing=() p; t0=$(now_ms)
  if [ $# -eq 0 ]; then log "$name: none listed ($(since "$t0"))"; return 0; fi
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "$name: all $# present ($(since "$t0"))"; return 0; fi
  command -v apt-get >/dev/null || { log "ERROR: no apt-get; install: ${missing[*]}"; exit 1; }
  log "$name: installing ${missing[*]}"
  apt_retry update
  apt_retry install --no-install-recommends "${missing[@]}"
  log "$name: installed ${#missing[@]} in $(since "$t0")"
}

# The Python the integration tests run uvicorn with (BACKEND_WARDEN_TEST_PYTHON in tests/run.sh).
make_venv() {
  local t0 py; t0=$(now_ms)
  if "$VENV/bin/python" -c 'import uvicorn, fastapi' 2>/dev/null; then
    log "venv: uvicorn + fastapi present in target/test-venv ($(since "$t0"))"; return 0
  fi
  py=$(command -v python3) || { log "ERROR: no python3 on PATH"; exit 1; }
  rm -rf "$VENV"; mkdir -p "$(dirname "$VENV")"
  # Debian's own python3 cannot make a venv (no ensurepip) without python3-venv; a pyenv one can.
  if ! "$py" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    install_packages python3-venv python3-venv
    "$py" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check uvicorn fastapi
  "$VENV/bin/python" -c 'import uvicorn, fastapi'
  log "venv: created target/test-venv with uvicorn + fastapi ($("$py" --version)) in $(since "$t0")"
}

case $WHAT in
  build)
    install_packages "build packages" "${BASE_PKGS[@]}" "${GUI_BUILD_PKGS[@]}" ;;
  all)
    install_packages "build packages" "${BASE_PKGS[@]}" "${GUI_BUILD_PKGS[@]}"
    install_packages "tray test packages" "${TRAY_TEST_PKGS[@]}"
    make_venv ;;
  *) echo "usage: tests/setup.sh [all|build]" >&2; exit 2 ;;
esac
log "setup ($WHAT) done in $(since "$T_ALL")"
