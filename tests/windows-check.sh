#!/usr/bin/env bash
# Type-checks the Windows build on this Linux machine (approach of
# ../shared/recipes/windows-on-linux.md): the machine's toolchain has only the Linux std, so
# cargo rebuilds std for the Windows target from Debian's `rust-src` of the same version.
#   tests/windows-check.sh              cargo check for x86_64-pc-windows-msvc (what users build)
#   tests/windows-check.sh --build-gnu  also build a real .exe for x86_64-pc-windows-gnu (mingw)
# Idempotent; state lives in ${WINDOWS_TOOLCHAIN_DIR:-/opt/windows-toolchain}.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${WINDOWS_TOOLCHAIN_DIR:-/opt/windows-toolchain}
now_ms() { date +%s%3N; }
step() { printf '[windows %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
T0=$(now_ms)
mkdir -p "$STATE"
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo

RUSTC_VER=$(rustc --version | awk '{print $2}')
SYSROOT=$(rustc --print sysroot)
SRC_LINK="$SYSROOT/lib/rustlib/src/rust"
if [ ! -e "$SRC_LINK/library/std/Cargo.toml" ]; then
  # The mirror this machine already uses: no host is written anywhere.
  URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$URI" ] || URI=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$URI" ] || { step "cannot find the Debian mirror in /etc/apt"; exit 1; }
  APT="$STATE/apt"; mkdir -p "$APT/lists/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
    "$URI" trixie-backports "$URI" sid > "$APT/sources.list"
  O=(-o Dir::Etc::sourcelist="$APT/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$APT/lists")
  step "fetching rust-src $RUSTC_VER"
  apt-get "${O[@]}" update -qq
  VER=$(apt-cache "${O[@]}" madison rust-src | awk -v v="$RUSTC_VER" '$3 ~ "^"v"\\+" {print $3; exit}')
  [ -n "$VER" ] || { step "no Debian rust-src matching rustc $RUSTC_VER"; exit 1; }
  rm -f "$STATE"/rust-src_*.deb
  (cd "$STATE" && apt-get "${O[@]}" download "rust-src=$VER" -qq)
  rm -rf "$STATE/rust-src" && dpkg-deb -x "$STATE"/rust-src_*.deb "$STATE/rust-src"
  mkdir -p "$(dirname "$SRC_LINK")"
  ln -sfn "$STATE/rust-src/usr/lib/rustlib/src/rust" "$SRC_LINK"
fi
step "rust-src ready ($(( ($(now_ms) - T0) / 1000 ))s)"

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=$ROOT/target/windows
cd "$ROOT"
t=$(now_ms)
cargo check -q -Zbuild-std=std,panic_abort --target x86_64-pc-windows-msvc --all-targets
step "cargo check --target x86_64-pc-windows-msvc: OK ($(( ($(now_ms) - t) / 1000 ))s)"

if [ "${1:-}" = --build-gnu ]; then
  dpkg -s gcc-mingw-w64-x86-64 >/dev/null 2>&1 || {
    $SUDO apt-get update -qq; $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null; }
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
  t=$(now_ms)
  cargo build -q -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu
  step "cargo build --target x86_64-pc-windows-gnu: OK ($(( ($(now_ms) - t) / 1000 ))s)"
fi
step "done in $(( ($(now_ms) - T0) / 1000 ))s"
