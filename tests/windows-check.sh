#!/usr/bin/env bash
# Type-checks the Windows build on this Linux machine (the approach of
# ../shared/recipes/windows-on-linux.md). The toolchain here has only the Linux std and no other
# target can be downloaded, so cargo rebuilds std for the Windows target (-Zbuild-std, unlocked by
# RUSTC_BOOTSTRAP=1) from Debian's `rust-src` of exactly the installed rustc's version.
#   tests/windows-check.sh              cargo check --all-targets for x86_64-pc-windows-msvc
#   tests/windows-check.sh --build-gnu  also build the real .exes for x86_64-pc-windows-gnu (mingw),
#                                       and the tests' fake backend (examples/fake-backend.exe)
# Idempotent; downloads live in ${WINDOWS_TOOLCHAIN_DIR:-/opt/windows-toolchain}, the build in
# target/windows (its own dir, so the native build cache is not disturbed).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${WINDOWS_TOOLCHAIN_DIR:-/opt/windows-toolchain}
case $STATE in /*) ;; *) STATE=$PWD/$STATE ;; esac   # absolute: it ends up in a symlink
cd "$ROOT"   # so rustc/cargo below are the toolchain this repo resolves to
BUILD_GNU=0
for a in "$@"; do
  case $a in
    --build-gnu) BUILD_GNU=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: tests/windows-check.sh [--build-gnu]" >&2; exit 2 ;;
  esac
done

now_ms() { date +%s%3N; }
log() { printf '[windows %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
since() { local d=$(( $(now_ms) - $1 )); printf '%d.%ds' $((d / 1000)) $((d % 1000 / 100)); }
T_ALL=$(now_ms)
SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo)   # sudo only when not root
if ! mkdir -p "$STATE" 2>/dev/null || [ ! -w "$STATE" ]; then
  log "ERROR: cannot write $STATE: set WINDOWS_TOOLCHAIN_DIR to a writable dir"; exit 1
fi

# --- 1. rust-src of this rustc, linked into the toolchain's sysroot ----------------------------
t=$(now_ms)
RUSTC_VER=$(rustc --version | awk '{print $2}')
SYSROOT=$(rustc --print sysroot)
SRC_LINK=$SYSROOT/lib/rustlib/src/rust
SRC_DIR=$STATE/rust-src-$RUSTC_VER   # one dir per version: a toolchain update fetches anew
have_src() {
  [ -e "$SRC_LINK/library/std/Cargo.toml" ] || return 1
  # a real dir is rustup's own rust-src component, right by construction; a link must be ours,
  # of this version (a link left by another state dir or an older rustc is replaced)
  [ ! -L "$SRC_LINK" ] || [ "$(readlink "$SRC_LINK")" = "$SRC_DIR/usr/lib/rustlib/src/rust" ]
}
if have_src; then
  log "rust-src $RUSTC_VER: present ($(since "$t"))"
else
  log "rust-src $RUSTC_VER: fetching Debian's package"
  # The mirror this machine already uses, so no host is written anywhere. Recent rust-src
  # versions are in trixie-backports and sid; the package is arch-independent.
  URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$URI" ] || URI=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$URI" ] || { log "ERROR: no Debian mirror found in /etc/apt"; exit 1; }
  APT_DIR=$STATE/apt; mkdir -p "$APT_DIR/lists/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
    "$URI" trixie-backports "$URI" sid >"$APT_DIR/sources.list"
  # a private sources list and lists dir: the machine's own apt configuration is not touched
  O=(-o Dir::Etc::sourcelist="$APT_DIR/sources.list" -o Dir::Etc::sourceparts=-
     -o Dir::State::Lists="$APT_DIR/lists")
  apt-get "${O[@]}" update -qq
  VER=$(apt-cache "${O[@]}" madison rust-src | awk -v v="$RUSTC_VER" '$3 ~ "^"v"\\+" {print $3; exit}')
  [ -n "$VER" ] || { log "ERROR: no Debian rust-src matching rustc $RUSTC_VER"; exit 1; }
  DL=$STATE/download; rm -rf "$DL"; mkdir -p "$DL"
  # as root apt drops to user _apt to download, which cannot write here: no sandbox for this
  NOSANDBOX=(); [ "$(id -u)" -ne 0 ] || NOSANDBOX=(-o APT::Sandbox::User=root)
  (cd "$DL" && apt-get "${O[@]}" "${NOSANDBOX[@]}" download -qq "rust-src=$VER")
  rm -rf "$SRC_DIR.tmp" && dpkg-deb -x "$DL"/rust-src_*.deb "$SRC_DIR.tmp"
  rm -rf "$SRC_DIR" && mv "$SRC_DIR.tmp" "$SRC_DIR"
  rm -rf "$DL" "$STATE"/rust-src_*.deb   # the .deb (45 MB; older layouts kept it in $STATE)
  mkdir -p "$(dirname "$SRC_LINK")"
  if [ -d "$SRC_LINK" ] && [ ! -L "$SRC_LINK" ]; then
    log "ERROR: $SRC_LINK is an incomplete rust-src dir (not ours): remove it"; exit 1
  fi
  ln -sfn "$SRC_DIR/usr/lib/rustlib/src/rust" "$SRC_LINK"
  have_src || { log "ERROR: rust-src $VER unpacked but $SRC_LINK is not usable"; exit 1; }
  log "rust-src $RUSTC_VER: installed Debian's $VER in $(since "$t")"
fi

# --- 2. mingw-w64: the linker of the real .exe (x86_64-pc-windows-gnu) -------------------------
t=$(now_ms)
if [ "$(dpkg-query -W -f='${db:Status-Status}' gcc-mingw-w64-x86-64 2>/dev/null)" = installed ]; then
  log "gcc-mingw-w64-x86-64: present ($(since "$t"))"
else
  log "gcc-mingw-w64-x86-64: installing"
  APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600)
  for try in 1 2 3; do   # retries cover a lock held by a concurrent apt run
    "${APT[@]}" update >&2 && "${APT[@]}" install --no-install-recommends gcc-mingw-w64-x86-64 >&2 && break
    [ "$try" = 3 ] && { log "ERROR: installing gcc-mingw-w64-x86-64 failed"; exit 1; }
    log "apt-get failed (lock held?), retry $try in 10s"; sleep 10
  done
  log "gcc-mingw-w64-x86-64: installed in $(since "$t")"
fi

# --- 3. the type-check ---------------------------------------------------------------------------
export RUSTC_BOOTSTRAP=1                        # -Z flags on the stable compiler
export CARGO_TARGET_DIR=$ROOT/target/windows    # keep the native target/ cache untouched
t=$(now_ms)
log "cargo check --target x86_64-pc-windows-msvc --all-targets"
if ! cargo check -Zbuild-std=std,panic_abort --target x86_64-pc-windows-msvc --all-targets; then
  log "FAILED: Windows type-check (x86_64-pc-windows-msvc) after $(since "$t")"; exit 1
fi
log "cargo check --target x86_64-pc-windows-msvc: OK in $(since "$t")"

if [ "$BUILD_GNU" = 1 ]; then
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
  t=$(now_ms)
  log "cargo build --target x86_64-pc-windows-gnu --bins --example fake-backend"
  if ! cargo build -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu --bins \
      --example fake-backend; then
    log "FAILED: Windows build (x86_64-pc-windows-gnu) after $(since "$t")"; exit 1
  fi
  log "cargo build --target x86_64-pc-windows-gnu: OK in $(since "$t")" \
      "-> $CARGO_TARGET_DIR/x86_64-pc-windows-gnu/debug/"
fi
log "done in $(since "$T_ALL")"
