#!/usr/bin/env bash
# Runs the real Windows exe under Wine 8 and checks the Windows code paths
# (../shared/recipes/windows-on-linux.md): the console CLI exe, the GUI tray exe and their
# resources, CLI output and exit codes (also through cmd), the headless warden with the demo backend, single instance + named-pipe IPC,
# Job Object tree kill and kill-on-close, Known Folder paths, the quoted Run value, the tray
# under Xvfb, and the MSI under Wine's msiexec (per-user install, clean uninstall).
#
#   bash tests/windows-wine.sh
#
# Installs wine64 and xvfb if missing, cross-builds the x86_64-pc-windows-gnu exe
# (tests/windows-check.sh --build-gnu) and builds the bcryptprimitives.dll shim Rust's std
# needs under Wine 8. Uses its own Wine prefix in target/windows/wineprefix, recreated each
# run. Prints "ok - ..." / "not ok - ..." lines and "N passed, M failed"; exits 1 on a failure.
#
# Wine is not Windows: this shows that the Windows code compiles, links, starts and that its
# process, IPC, registry and path logic works. Toasts, the real taskbar, an MSI install by
# Windows Installer, per-monitor DPI and Defender need a real Windows machine. Known Wine 8
# gaps, checked as such below: GenerateConsoleCtrlEvent for a process group fails (Ctrl+C to a
# whole console, which the stop ladder uses, works), `tasklist` prints nothing (Wine
# processes are Linux processes whose command line is the Windows one: `ps` counts them), and
# netstat reports no owning PID for sockets.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The binaries of the wine64 package and its libwine dependency, not the /usr/bin launchers
# of the (merely recommended) wine package: `wine` looks for a 32-bit prefix.
WINE=/usr/lib/wine/wine64 WINESERVER=/usr/lib/wine/wineserver
STATE=$ROOT/target/windows/wine
export WINEPREFIX=$ROOT/target/windows/wineprefix WINEDEBUG=-all
# No Mono or Gecko installer dialogs while the prefix is created.
export WINEDLLOVERRIDES="mscoree,mshtml="
EXE=$ROOT/target/windows/x86_64-pc-windows-gnu/debug/backend-warden.exe
# The tests' fake backend (tests/fake_backend), for the backends that misbehave on purpose.
FAKE=$(dirname "$EXE")/examples/fake-backend.exe
say() { printf '[wine %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ "${1:-}" != --checks ]; then
  T0=$(date +%s)
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  need=()
  for p in wine64 xvfb xauth gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  bash tests/windows-check.sh --build-gnu
  # The MSI checks install the package of this very exe (a few seconds).
  bash wix/build-msi.sh "$EXE" >/dev/null
  # The upgrade checks: the same exes packaged as the next patch version, built twice (every
  # build gets a new ProductCode, as a rebuild of one version does).
  V=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
  NEXT_V=$(awk -F. '{ print $1 "." $2 "." $3 + 1 }' <<<"$V")
  for build in first rebuild; do
    MSI_VERSION=$NEXT_V bash wix/build-msi.sh "$EXE" >/dev/null
    mv "target/windows/msi/backend-warden-$NEXT_V-x86_64.msi" "target/windows/msi/upgrade-$NEXT_V-$build.msi"
  done

  # Rust's std (>= 1.78) imports ProcessPrng from bcryptprimitives.dll, which Wine 8 lacks:
  # without this shim every Rust exe fails to start (c0000135).
  mkdir -p "$STATE"
  if [ ! -f "$STATE/bcryptprimitives.dll" ]; then
    cat > "$STATE/bcp.c" <<'C'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buf, ULONG len);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk; len -= chunk;
    }
    return TRUE;
}
C
    x86_64-w64-mingw32-gcc -shared -O2 -o "$STATE/bcryptprimitives.dll" "$STATE/bcp.c" -ladvapi32
  fi
  cp "$STATE/bcryptprimitives.dll" "$(dirname "$EXE")/"
  cp "$STATE/bcryptprimitives.dll" "$(dirname "$FAKE")/"
  # A squatter for the control pipe's name (checks below): creates the pipe first, then takes
  # each connection and hangs up at once.
  if [ ! -f "$STATE/squatter.exe" ] || [ "$0" -nt "$STATE/squatter.exe" ]; then
    cat > "$STATE/squatter.c" <<'C'
#include <windows.h>
#include <stdio.h>
int wmain(int argc, wchar_t **argv) {
    wchar_t path[512];
    if (argc < 2) return 2;
    swprintf(path, 512, L"\\\\.\\pipe\\%ls", argv[1]);
    HANDLE pipe = CreateNamedPipeW(path, PIPE_ACCESS_DUPLEX | FILE_FLAG_FIRST_PIPE_INSTANCE,
        PIPE_TYPE_BYTE | PIPE_WAIT, PIPE_UNLIMITED_INSTANCES, 4096, 4096, 0, NULL);
    if (pipe == INVALID_HANDLE_VALUE) { printf("cannot create the pipe: %lu\n", GetLastError()); return 1; }
    printf("squatting\n"); fflush(stdout);
    for (;;) {
        ConnectNamedPipe(pipe, NULL);
        DisconnectNamedPipe(pipe);
    }
}
C
    x86_64-w64-mingw32-gcc -municode -O2 -o "$STATE/squatter.exe" "$STATE/squatter.c"
  fi

  # Holds a file open the way an editor or a log viewer may on Windows: read and write
  # sharing, no delete sharing, so the file cannot be renamed (rotated) while it is open.
  if [ ! -f "$STATE/holder.exe" ] || [ "$0" -nt "$STATE/holder.exe" ]; then
    cat > "$STATE/holder.c" <<'C'
#include <windows.h>
#include <stdio.h>
int wmain(int argc, wchar_t **argv) {
    if (argc < 3) return 2;
    HANDLE f = CreateFileW(argv[1], GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                           OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    if (f == INVALID_HANDLE_VALUE) { printf("cannot open: %lu\n", GetLastError()); return 1; }
    printf("holding\n"); fflush(stdout);
    Sleep((DWORD)_wtoi(argv[2]) * 1000);
    CloseHandle(f);
    return 0;
}
C
    x86_64-w64-mingw32-gcc -municode -O2 -o "$STATE/holder.exe" "$STATE/holder.c"
  fi

  # A fresh prefix: no Run value, installed MSI or config left from an earlier run.
  [ -d "$WINEPREFIX" ] && { "$WINESERVER" -k 2>/dev/null || true; rm -rf "$WINEPREFIX"; }
  say "creating the Wine prefix"
  env -u DISPLAY "$WINE" wineboot -i >/dev/null 2>&1
  "$WINESERVER" -w
  # The MSI-installed exe has no shim beside it; the prefix's system folder serves it.
  cp "$STATE/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
  say "setup done in $(( $(date +%s) - T0 ))s; running the checks under Xvfb"
  status=0
  xvfb-run -a -s "-screen 0 1280x800x24 -nolisten tcp" bash "$0" --checks || status=$?
  "$WINESERVER" -k 2>/dev/null || true
  exit "$status"
fi

# ---------------------------------------------------------------------------------------------
# The checks (under xvfb-run, DISPLAY set). A failing command is a failed check, not the end.
set +e
T0=$(date +%s)
TAG=bwwine$$
PASS=0 FAIL=0
WIN_USER=$(whoami)
C=$WINEPREFIX/drive_c
ok() { echo "ok - $1"; PASS=$((PASS + 1)); }
not_ok() {
  echo "not ok - $1"; FAIL=$((FAIL + 1))
  [ -n "${2:-}" ] && printf '%s\n' "$2" | tail -n 15 | sed 's/^/#   /'
  return 0
}
# check NAME COMMAND...: ok if the command succeeds; its output is shown on failure.
check() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then ok "$name"; else not_ok "$name" "$out"; fi
}
now_ms() { date +%s%3N; }
# wait_until MS COMMAND...: polls COMMAND every 100 ms until it succeeds or MS pass.
wait_until() {
  local deadline=$(( $(now_ms) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}
# bw ARGS...: the exe under Wine (60 s limit); BACKEND_WARDEN_HOME as exported.
bw() { timeout 60 "$WINE" "$EXE" "$@"; }
# The value of a top-level field of `status --json` (strings unquoted).
field() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" | head -n1; }
state() { bw status --json 2>/dev/null | field state; }
state_is() { [ "$(state)" = "$1" ]; }
# Linux PIDs of this prefix's Wine processes whose (Windows) command line matches a regex.
# Wine 8's tasklist prints nothing, but every Wine process is a Linux process; the prefix in
# its environment tells ours from any other Wine user's.
our_pids() {
  local pid
  for pid in $(pgrep -f -- "$1"); do
    case $(readlink "/proc/$pid/exe" 2>/dev/null) in */wine*) ;; *) continue ;; esac # not `timeout`
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "WINEPREFIX=$WINEPREFIX" && echo "$pid"
  done
}
count() { our_pids "$1" | wc -l; }
tagged() { count "--tag $TAG"; }
tagged_is() { [ "$(tagged)" = "$1" ]; }
show_tagged() { local p; for p in $(our_pids "--tag $TAG"); do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done; }
run_key() { timeout 30 "$WINE" reg query 'HKCU\Software\Microsoft\Windows\CurrentVersion\Run' /v 'Backend Warden' 2>/dev/null | tr -d '\r' | sed -n 's/^ *Backend Warden *REG_SZ *//p'; }
win_env() { timeout 30 "$WINE" cmd /c echo "%$1%" | tr -d '\r'; }
# A home for one warden: the Windows path in BACKEND_WARDEN_HOME, the Linux path to write to.
home() { mkdir -p "$C/bw-wine/$1"; printf 'C:\\bw-wine\\%s' "$1"; }
home_dir() { printf '%s/bw-wine/%s' "$C" "$1"; }
start_warden() { # LOGFILE ARGS...: a warden in the background, its output to LOGFILE
  local log=$1; shift
  timeout 600 "$WINE" "$EXE" "$@" >"$log" 2>&1 &
}
HEADLESS='backend-warden\.exe run --headless$'
# The tray started by `backend-warden` (no arguments) carries its quoted path as command line.
TRAY='Programs.Backend Warden.backend-warden-tray\.exe"?$'

echo "# Windows exe under $("$WINE" --version), prefix $WINEPREFIX"

# ---- the exe ----------------------------------------------------------------------------------
TRAY_EXE=$(dirname "$EXE")/backend-warden-tray.exe
check "backend-warden.exe is a console program (cmd and PowerShell wait for it, see its exit code)" \
  bash -c "x86_64-w64-mingw32-objdump -p '$EXE' | grep -qE '^Subsystem.*\(Windows CUI\)'"
check "backend-warden-tray.exe is a GUI-subsystem program (no console window at login)" \
  bash -c "x86_64-w64-mingw32-objdump -p '$TRAY_EXE' | grep -qE '^Subsystem.*\(Windows GUI\)'"
check "both exes import only system DLLs (no VCRUNTIME140, UCRT forwarders or MinGW runtime DLLs)" \
  bash tests/windows-imports.sh "$EXE" "$TRAY_EXE"
RC=$(x86_64-w64-mingw32-windres -J coff -i "$EXE" -O rc 2>/dev/null || true)
VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
check "resources: icon group, version $VERSION (FileVersion, ProductName), manifest" bash -c '
  grep -q "RT_GROUP_ICON" <<<"$1" && grep -qF "VALUE \"FileVersion\", \"$2\"" <<<"$1" &&
  grep -qF "VALUE \"ProductName\", \"Backend Warden\"" <<<"$1" && grep -q "RT_MANIFEST" <<<"$1"' _ "$RC" "$VERSION"
check "manifest: per-monitor DPI v2, Common Controls v6, asInvoker" bash -c '
  grep -q "PerMonitorV2" <<<"$1" && grep -q "Microsoft.Windows.Common-Controls" <<<"$1" &&
  grep -q "asInvoker" <<<"$1"' _ "$RC"

# ---- CLI output and exit codes of the console exe ---------------------------------------------
export BACKEND_WARDEN_HOME
BACKEND_WARDEN_HOME=$(home main)
MAIN=$(home_dir main)
printf '[stop]\ngrace = "1s"\n' > "$MAIN/config.toml"
out=$(bw --version 2>&1) && [ "$out" = "backend-warden $VERSION" ] \
  && ok "--version prints to the redirected stdout and exits 0" \
  || not_ok "--version prints to the redirected stdout and exits 0" "$out"
code=0; out=$(bw status 2>&1) || code=$?
[ "$code" = 3 ] && grep -q "no Backend Warden is running" <<<"$out" \
  && ok "status with no warden exits 3 and says why on stderr" \
  || not_ok "status with no warden exits 3 and says why on stderr" "exit $code: $out"
# Through cmd, as typed at a prompt: the output comes before the next command, and the exit code
# is there for it (Wine's cmd waits for every program in `cmd /c`; on Windows the console
# subsystem is what makes an interactive prompt wait).
for _ in 1 2 3; do  # (Wine's cmd now and then fails to start a program: tried again)
  out=$(timeout 60 "$WINE" cmd /v:on /c "$("$WINE" winepath -w "$EXE" | tr -d '\r') status & echo exit=!ERRORLEVEL!" 2>&1 | tr -d '\r')
  grep -q "ShellExecuteEx failed" <<<"$out" || break
done
grep -q "no Backend Warden is running" <<<"$(sed -n '/exit=/q;p' <<<"$out")" && grep -qx "exit=3" <<<"$out" \
  && ok "in cmd: status prints before the next command and %ERRORLEVEL% is 3" \
  || not_ok "in cmd: status prints before the next command and %ERRORLEVEL% is 3" "$out"
BAD=$(home bad)
printf '[backend]\ncomand = "python"\n' > "$(home_dir bad)/config.toml"
code=0; out=$(BACKEND_WARDEN_HOME=$BAD bw config check 2>&1) || code=$?
[ "$code" = 2 ] && grep -q 'did you mean "command"' <<<"$out" \
  && ok "config check on a bad config exits 2, naming the key" \
  || not_ok "config check on a bad config exits 2, naming the key" "exit $code: $out"

# ---- the headless warden: demo backend, IPC, single instance, control -------------------------
start_warden "$MAIN/warden.out" run --headless
if wait_until 60000 state_is healthy; then
  ok "run --headless: the demo backend reaches healthy (status --json through the named pipe)"
else
  not_ok "run --headless: the demo backend reaches healthy" "$(cat "$MAIN/warden.out")"
fi
WARDEN_PID=$(bw status --json | field warden_pid)
code=0; out=$(bw run --headless 2>&1) || code=$?
[ "$code" = 0 ] && grep -q "already running (PID $WARDEN_PID)" <<<"$out" \
  && [ "$(count "$HEADLESS")" = 1 ] \
  && ok "a second launch hands over to the running warden (PID $WARDEN_PID) and exits 0" \
  || not_ok "a second launch hands over to the running warden" "exit $code: $out"
# Wine sets USERNAME itself at start; cmd's `set` changes it for its children.
# (Wine's cmd fails now and then to start a program at all, "ShellExecuteEx failed: Internal
# error": that says nothing about the warden, so it is tried again.)
for _ in 1 2 3; do
  code=0; out=$(timeout 60 "$WINE" cmd /c "set USERNAME=somebody-else&& $("$WINE" winepath -w "$EXE" | tr -d '\r') status" 2>&1) || code=$?
  grep -q "ShellExecuteEx failed" <<<"$out" || break
done
[ "$code" = 0 ] && ok "a client with another %USERNAME% still finds the warden (pipe named after the account)" \
  || not_ok "a client with another %USERNAME% still finds the warden" "exit $code: $out"
PID1=$(bw status --json | field pid)
code=0; out=$(bw stop 2>&1) || code=$?
[ "$code" = 0 ] && state_is stopped && [ "$(bw status --json | field pid)" = null ] \
  && ok "stop exits 0; the backend is stopped" || not_ok "stop exits 0; the backend is stopped" "exit $code: $out"
code=0; out=$(bw start 2>&1) || code=$?
PID2=$(bw status --json | field pid)
[ "$code" = 0 ] && state_is healthy && [ "$PID2" != "$PID1" ] \
  && ok "start exits 0; healthy again (PID $PID1 -> $PID2)" || not_ok "start exits 0; healthy again" "exit $code: $out"
code=0; out=$(bw restart --json 2>&1) || code=$?
PID3=$(field pid <<<"$out")
[ "$code" = 0 ] && [ "$(field state <<<"$out")" = healthy ] && [ -n "$PID3" ] && [ "$PID3" != "$PID2" ] \
  && ok "restart --json exits 0 and prints the new healthy status (PID $PID2 -> $PID3)" \
  || not_ok "restart --json exits 0 and prints the new healthy status" "exit $code: $out"
code=0; out=$(bw start 2>&1) || code=$?
[ "$code" = 0 ] && ok "start while healthy exits 0 (nothing to do)" || not_ok "start while healthy exits 0" "exit $code: $out"
code=0; out=$(bw quit 2>&1) || code=$?
gone() { [ "$(count "$HEADLESS")" = 0 ]; }
[ "$code" = 0 ] && wait_until 10000 gone && { code=0; bw status >/dev/null 2>&1 || code=$?; [ "$code" = 3 ]; } \
  && ok "quit exits 0; the warden is gone and status exits 3" || not_ok "quit exits 0; the warden is gone" "exit $code: $out"

# A backend that fails: `restart` exits 1.
FAILING=$(home failing)
cat > "$(home_dir failing)/config.toml" <<EOF
[backend]
command = '$("$WINE" winepath -w "$FAKE" 2>/dev/null | tr -d '\r')'
args = ["--exit-after", "0", "--exit-code", "3"]
[restart]
policy = "never"
EOF
BACKEND_WARDEN_HOME=$FAILING
start_warden "$(home_dir failing)/warden.out" run --headless
wait_until 60000 state_is failed
code=0; out=$(bw restart 2>&1) || code=$?
last=$(bw status --json | tr -d '\n' | sed -n 's/.*"last_exit": {[^}]*"code": \([0-9-]*\).*/\1/p')
[ "$code" = 1 ] && [ "$last" = 3 ] \
  && ok "a backend that exits 3: restart exits 1 (failed), last_exit.code 3" \
  || not_ok "a backend that exits 3: restart exits 1 (failed), last_exit.code 3" "exit $code, last $last: $out"
bw quit >/dev/null 2>&1

# ---- log rotation while another program holds backend.log open --------------------------------
# Windows cannot rename a file another program holds open without delete sharing: the rotation
# fails, the log keeps appending (nothing lost), status says so, and once the file is free a
# later rotation goes through.
ROT=$(home rotation)
mkdir -p "$(home_dir rotation)/logs"
cat > "$(home_dir rotation)/config.toml" <<EOF
[backend]
command = '$("$WINE" winepath -w "$FAKE" 2>/dev/null | tr -d '\r')'
args = ["--flood", "20000", "--tag", "$TAG-rot"]
[logs]
max_size = "4KB"
keep = 2
EOF
timeout 120 "$WINE" "$STATE/holder.exe" "$ROT\\logs\\backend.log" 25 >"$STATE/holder.out" 2>&1 &
HOLDER=$!
holding() { grep -q holding "$STATE/holder.out"; }
if wait_until 30000 holding; then
  BACKEND_WARDEN_HOME=$ROT
  start_warden "$(home_dir rotation)/warden.out" run --headless
  rotation_failed() { bw status --json 2>/dev/null | grep -q '"last_error": "cannot rotate'; }
  wait_until 60000 rotation_failed
  size=$(stat -c %s "$(home_dir rotation)/logs/backend.log" 2>/dev/null || echo 0)
  dropped=$(bw status --json 2>/dev/null | tr -d '\n ' | sed -n 's/.*"dropped_lines":\([0-9]*\).*/\1/p')
  rotation_failed && [ "$size" -gt 20000 ] && [ "$dropped" = 0 ] \
    && ok "a held backend.log: rotation fails, every line still appended ($size bytes, 0 dropped), status says why" \
    || not_ok "a held backend.log keeps appending and says why" "size $size, dropped [$dropped]: $(bw status --json 2>&1 | grep -A2 '"logs"')"
  kill "$HOLDER" 2>/dev/null; wait "$HOLDER" 2>/dev/null
  bw restart >/dev/null 2>&1   # more output: the next rotation, with the file free
  rotated() { [ -f "$(home_dir rotation)/logs/backend.log.1" ]; }
  wait_until 30000 rotated \
    && ok "once the file is free, the next rotation goes through (backend.log.1)" \
    || not_ok "the rotation resumes once the file is free" "$(ls "$(home_dir rotation)/logs")"
  bw quit >/dev/null 2>&1
else
  not_ok "the holder opened backend.log" "$(cat "$STATE/holder.out")"
  kill "$HOLDER" 2>/dev/null; wait "$HOLDER" 2>/dev/null
fi

# ---- the control pipe: a squatter on its name ------------------------------------------------
# Another program creates the warden's pipe name before any warden runs (the name is
# predictable). Wine runs everything as one user and does not enforce security descriptors,
# so what shows here is the warden's side: it cannot take the name, says so and exits non-zero;
# a CLI command fails (non-zero, not "no warden running") instead of trusting the squatter. The
# client's server check (GetNamedPipeServerProcessId, the server's token user) and its
# identification-only connection run in every CLI call above.
SQUAT=$(home squat)
SQUAT_RUN='C:\bw-wine\squat\run'
PIPE=$(python3 -c 'import sys
h = 0xcbf29ce484222325
for b in sys.argv[2].encode(): h = ((h ^ b) * 0x100000001b3) % 2**64
print(f"backend-warden-{sys.argv[1].lower()}-{h:016x}")' "$WIN_USER" "$SQUAT_RUN")
timeout 120 "$WINE" "$STATE/squatter.exe" "$PIPE" >"$STATE/squatter.out" 2>&1 &
SQUATTER=$!
squatting() { grep -q squatting "$STATE/squatter.out"; }
if wait_until 30000 squatting; then
  code=0; out=$(BACKEND_WARDEN_HOME=$SQUAT bw run --headless 2>&1) || code=$?
  [ "$code" = 1 ] && grep -q "does not answer as a Backend Warden" <<<"$out" \
    && ok "a squatted pipe name: the warden says so and exits 1 (not a hang, not a crash loop)" \
    || not_ok "a squatted pipe name: the warden says so and exits 1" "exit $code: $out"
  code=0; out=$(BACKEND_WARDEN_HOME=$SQUAT bw status 2>&1) || code=$?
  [ "$code" = 1 ] && ok "a squatted pipe name: status fails (exit 1) rather than trusting it" \
    || not_ok "a squatted pipe name: status fails (exit 1)" "exit $code: $out"
else
  not_ok "the squatter created the pipe $PIPE" "$(cat "$STATE/squatter.out")"
fi
kill "$SQUATTER" 2>/dev/null; wait "$SQUATTER" 2>/dev/null

# ---- Job Object: the whole tree, kill-on-close; the stop ladder -------------------------------
# A console program (cmd) as the backend, like python.exe: it gets a hidden console of its
# own, which the stop helper attaches to. Under it the fake backend with 2 children, each with
# 1 grandchild: 6 processes carrying the tag. A long grace period: a stop that cannot reach
# the backend must not wait it out.
TREE=$(home tree)
PORT=$(( 47000 + $$ % 1000 ))
cat > "$(home_dir tree)/config.toml" <<EOF
[backend]
command = "cmd"
args = ["/c", '$("$WINE" winepath -w "$FAKE" 2>/dev/null | tr -d '\r')', "--port", "$PORT", "--children", "2", "--grandchildren", "1", "--tag", "$TAG"]
[health]
url = "http://127.0.0.1:$PORT/health"
[stop]
grace = "30s"
[restart]
policy = "never"
EOF
export BACKEND_WARDEN_HOME=$TREE
start_warden "$(home_dir tree)/warden.out" run --headless
wait_until 60000 state_is healthy && wait_until 30000 tagged_is 6 \
  && ok "tree: cmd, the fake backend, 2 children and 2 grandchildren run in the job (6 processes)" \
  || not_ok "tree: 6 processes in the job" "$(tagged) tagged; state $(state); $(show_tagged)"
t=$(now_ms); code=0; out=$(bw stop 2>&1) || code=$?
took=$(( $(now_ms) - t ))
[ "$code" = 0 ] && tagged_is 0 && [ "$took" -lt 15000 ] \
  && ok "stop kills the whole tree: no tagged process left, in $took ms (grace 30 s)" \
  || not_ok "stop kills the whole tree, well within the grace period" "exit $code after $took ms: $out; left: $(show_tagged)"
# The stop ladder's first rung: the helper attached to the backend's console, sent Ctrl+C to
# everyone on it (Wine 8 delivers that one), and cmd, the fake backend and its children all
# left by themselves: no Ctrl+Break, no kill.
LOG=$(home_dir tree)/logs/warden.log
grep -q "stop: attached to the console of PID" "$LOG" 2>/dev/null \
  && grep -q "stop: Ctrl+C sent to the backend's console" "$LOG" \
  && grep -q "stop: nobody is left on the backend's console" "$LOG" \
  && grep -q "backend stopped.*forced=false" "$LOG" && ! grep -q "Ctrl+Break" "$LOG" \
  && ok "stop ladder: Ctrl+C to the backend's console; the whole tree stopped by itself (no Ctrl+Break, no kill)" \
  || not_ok "stop ladder: Ctrl+C to the backend's console stops the tree by itself" "$(grep -i "stop" "$LOG")"
code=0; bw start >/dev/null 2>&1 || code=$?
wait_until 30000 tagged_is 6 || true
WARDEN_PID=$(bw status --json | field warden_pid)
out=$(timeout 30 "$WINE" taskkill /F /PID "$WARDEN_PID" 2>&1 | tr -d '\r') || true
t=$(now_ms)
if [ "$code" = 0 ] && wait_until 10000 tagged_is 0; then
  ok "warden killed (taskkill /F /PID $WARDEN_PID): the kill-on-close job ends all 6 ($(( $(now_ms) - t )) ms)"
else
  not_ok "warden killed: the kill-on-close job ends the tree" "start exit $code; taskkill: $out; left: $(show_tagged)"
fi
code=0; bw status >/dev/null 2>&1 || code=$?
[ "$code" = 3 ] && ok "after the kill, status exits 3 (the pipe went with the warden)" || not_ok "after the kill, status exits 3" "exit $code"

# A GUI-subsystem backend (Wine's notepad) has no console: no event can reach it, so the stop
# kills it at once instead of waiting the 30 s grace period for nothing.
GUI=$(home gui)
cat > "$(home_dir gui)/config.toml" <<EOF
[backend]
command = "notepad"
[stop]
grace = "30s"
[restart]
policy = "never"
EOF
export BACKEND_WARDEN_HOME=$GUI
start_warden "$(home_dir gui)/warden.out" run --headless
has_pid() { local p; p=$(bw status --json 2>/dev/null | field pid); [ -n "$p" ] && [ "$p" != null ]; }
wait_until 60000 has_pid || true
t=$(now_ms); code=0; out=$(bw stop 2>&1) || code=$?
took=$(( $(now_ms) - t ))
[ "$code" = 0 ] && state_is stopped && [ "$took" -lt 10000 ] \
  && grep -q "the backend has no console to send Ctrl+C to" "$(home_dir gui)/logs/warden.log" \
  && ok "a console-less (GUI) backend: stop kills it at once ($took ms, grace 30 s)" \
  || not_ok "a console-less (GUI) backend: stop kills it at once" "exit $code after $took ms: $out; $(grep -i stop "$(home_dir gui)/logs/warden.log")"
bw quit >/dev/null 2>&1

# ---- Known Folders (no BACKEND_WARDEN_HOME) ---------------------------------------------------
unset BACKEND_WARDEN_HOME
APPDATA=$(win_env APPDATA); LOCALAPPDATA=$(win_env LOCALAPPDATA)
out=$(bw config path 2>&1 | tr -d '\r') || true
[ "$out" = "$APPDATA\\Backend Warden\\config.toml" ] && [ "$APPDATA" = "C:\\users\\$WIN_USER\\AppData\\Roaming" ] \
  && ok "config path = %APPDATA%\\Backend Warden\\config.toml ($out)" \
  || not_ok "config path = %APPDATA%\\Backend Warden\\config.toml" "got '$out', APPDATA '$APPDATA'"
out=$(bw logs --path 2>&1 | tr -d '\r') || true
[ "$out" = "$LOCALAPPDATA\\Backend Warden\\logs\\backend.log" ] \
  && ok "logs --path = %LOCALAPPDATA%\\Backend Warden\\logs\\backend.log" \
  || not_ok "logs --path = %LOCALAPPDATA%\\Backend Warden\\logs\\backend.log" "got '$out', LOCALAPPDATA '$LOCALAPPDATA'"
out=$(bw config init 2>&1) && [ -f "$C/users/$WIN_USER/AppData/Roaming/Backend Warden/config.toml" ] \
  && ok "config init writes the file there (seen from Linux in the prefix)" \
  || not_ok "config init writes the file there" "$out"

# ---- autostart: the quoted Run value, from a path with spaces ---------------------------------
PF="$C/Program Files/Backend Warden Test"
mkdir -p "$PF"
ln -f "$EXE" "$PF/backend-warden.exe" 2>/dev/null || cp "$EXE" "$PF/backend-warden.exe"
ln -f "$TRAY_EXE" "$PF/backend-warden-tray.exe" 2>/dev/null || cp "$TRAY_EXE" "$PF/backend-warden-tray.exe"
cp "$STATE/bcryptprimitives.dll" "$PF/"
PF_EXE='C:\Program Files\Backend Warden Test\backend-warden.exe'
PF_TRAY='C:\Program Files\Backend Warden Test\backend-warden-tray.exe'
bwpf() { timeout 60 "$WINE" "$PF_EXE" "$@"; }
out=$(bwpf autostart status 2>&1) && [ "$out" = disabled ] \
  && ok "autostart status: disabled in a fresh profile" || not_ok "autostart status: disabled in a fresh profile" "$out"
code=0; out=$(bwpf autostart disable 2>&1) || code=$?
[ "$code" = 0 ] && ok "autostart disable with nothing to remove exits 0" || not_ok "autostart disable with nothing to remove exits 0" "exit $code: $out"
code=0; out=$(bwpf autostart enable 2>&1) || code=$?
val=$(run_key)
[ "$code" = 0 ] && [ "$val" = "\"$PF_TRAY\"" ] \
  && ok "autostart enable writes HKCU\\...\\Run 'Backend Warden' = $val (quoted)" \
  || not_ok "autostart enable writes the quoted Run value" "exit $code: $out; value: [$val]"
code=0; bwpf autostart enable >/dev/null 2>&1 || code=$?
n=$(timeout 30 "$WINE" reg query 'HKCU\Software\Microsoft\Windows\CurrentVersion\Run' 2>/dev/null | grep -c "Backend Warden" || true)
out=$(bwpf autostart status 2>&1) || true
[ "$code" = 0 ] && [ "$n" = 1 ] && [ "$(run_key)" = "\"$PF_TRAY\"" ] && grep -q "^enabled" <<<"$out" \
  && ok "enable twice: still one, same value; status says enabled" || not_ok "enable twice is harmless" "exit $code, $n values, status: $out"
# Turned off in Task Manager's Startup apps: a StartupApproved\Run value whose first byte is 03.
APPROVED='HKCU\Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run'
approved() { timeout 30 "$WINE" reg query "$APPROVED" /v 'Backend Warden' 2>/dev/null | tr -d '\r' | grep ' REG_BINARY'; }
timeout 30 "$WINE" reg add "$APPROVED" /v 'Backend Warden' /t REG_BINARY /d 030000000000000000000000 /f >/dev/null 2>&1
out=$(bwpf autostart status 2>&1)
[ "$out" = disabled ] && [ -n "$(approved)" ] && [ -n "$(run_key)" ] \
  && ok "an entry turned off in Task Manager (StartupApproved\\Run, 03...) shows as disabled" \
  || not_ok "an entry turned off in Task Manager shows as disabled" "status: $out; approved: [$(approved)]; Run: [$(run_key)]"
code=0; bwpf autostart enable >/dev/null 2>&1 || code=$?
[ "$code" = 0 ] && grep -q "^enabled" <<<"$(bwpf autostart status 2>&1)" && [ -z "$(approved)" ] \
  && ok "autostart enable turns it back on (the StartupApproved mark is removed)" \
  || not_ok "autostart enable turns a Task Manager-disabled entry back on" "exit $code; approved: [$(approved)]"
code=0; out=$(bwpf autostart disable 2>&1) || code=$?
[ "$code" = 0 ] && [ -z "$(run_key)" ] && [ "$(bwpf autostart status 2>&1)" = disabled ] \
  && ok "autostart disable removes the value (reg query finds none); status says disabled" \
  || not_ok "autostart disable removes the value" "exit $code: $out; value: [$(run_key)]"
rm -rf "$PF"

# ---- the MSI under Wine's msiexec, and the tray ----------------------------------------------
# Wine's msiexec is not Windows Installer; this checks what the package asks for, end to end.
MSI=target/windows/msi/backend-warden-$VERSION-x86_64.msi
[ -f "$MSI" ] || MSI=
NEXT=$(awk -F. '{ print $1 "." $2 "." $3 + 1 }' <<<"$VERSION")
MSI_NEXT=target/windows/msi/upgrade-$NEXT-first.msi MSI_REBUILD=target/windows/msi/upgrade-$NEXT-rebuild.msi
INSTALL_DIR="$C/users/$WIN_USER/AppData/Local/Programs/Backend Warden"
LNK="$C/users/$WIN_USER/AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Backend Warden.lnk"
INSTALLED_EXE="C:\\users\\$WIN_USER\\AppData\\Local\\Programs\\Backend Warden\\backend-warden.exe"
INSTALLED_TRAY="C:\\users\\$WIN_USER\\AppData\\Local\\Programs\\Backend Warden\\backend-warden-tray.exe"
user_path() { timeout 30 "$WINE" reg query 'HKCU\Environment' /v PATH 2>/dev/null | tr -d '\r' | sed -n 's/^ *PATH *REG_[A-Z_]* *//p'; }
# Its values (Wine's reg prints "Unable to find" on stdout, hence only the REG_ lines).
aumid_key() { timeout 30 "$WINE" reg query 'HKCU\Software\Classes\AppUserModelId\dev.backend-warden.BackendWarden' 2>/dev/null | tr -d '\r' | grep ' REG_'; }
if [ -z "$MSI" ]; then
  not_ok "MSI: none built (bash wix/build-msi.sh)"
else
  # Output to a file, not a pipe: the tray the installer starts inherits msiexec's standard
  # handles under Wine, and a command substitution would wait for it to exit.
  code=0; timeout 120 "$WINE" msiexec /i "$("$WINE" winepath -w "$MSI" | tr -d '\r')" /qn >"$STATE/msiexec.out" 2>&1 || code=$?
  out=$(cat "$STATE/msiexec.out")
  [ "$code" = 0 ] && [ -f "$INSTALL_DIR/backend-warden.exe" ] && [ -f "$INSTALL_DIR/backend-warden-tray.exe" ] && [ -f "$LNK" ] \
    && [ "$(run_key)" = "\"$INSTALLED_TRAY\"" ] && grep -q "DisplayName *REG_SZ *Backend Warden" <<<"$(aumid_key)" \
    && ok "msiexec /i /qn (per-user): both exes in %LOCALAPPDATA%\\Programs\\Backend Warden, Start-menu shortcut, quoted Run value (the tray exe), AppUserModelId key" \
    || not_ok "msiexec /i installs per-user" "exit $code: $out; Run: [$(run_key)]; $(ls "$INSTALL_DIR" 2>&1)"
  INSTALL_DIR_WIN="C:\\users\\$WIN_USER\\AppData\\Local\\Programs\\Backend Warden\\"
  case ";$(user_path);" in
    *";$INSTALL_DIR_WIN;"*|*";${INSTALL_DIR_WIN%\\};"*) ok "the install folder is on the user's PATH (HKCU\\Environment): $(user_path)" ;;
    *) not_ok "the install folder is on the user's PATH (HKCU\\Environment)" "PATH: [$(user_path)]" ;;
  esac
  bwi() { timeout 60 "$WINE" "$INSTALLED_EXE" "$@"; }
  tray_state_is() { [ "$(bwi status --json 2>/dev/null | field state)" = "$1" ]; }
  if wait_until 60000 tray_state_is healthy && wait_until 10000 eval '[ "$(count "$TRAY")" = 1 ]'; then
    ok "the installer started the tray (as the user, not waiting for it); its demo backend reaches healthy"
  else
    not_ok "the installer started the tray" "trays: $(count "$TRAY"); $(tail -n 5 "$C/users/$WIN_USER/AppData/Local/Backend Warden/logs/warden.log" 2>&1)"
  fi
  code=0; bwi autostart enable >/dev/null 2>&1 || code=$?
  [ "$code" = 0 ] && [ "$(run_key)" = "\"$INSTALLED_TRAY\"" ] \
    && ok "the installed app's autostart enable writes exactly the MSI's Run value" \
    || not_ok "the installed app's autostart enable writes exactly the MSI's Run value" "[$(run_key)]"
  # The tray (no arguments), with the default (Known Folder) paths and a short grace.
  printf '[stop]\ngrace = "1s"\n' > "$C/users/$WIN_USER/AppData/Roaming/Backend Warden/config.toml"
  # With the tray running, `backend-warden` (no arguments) starts backend-warden-tray.exe, which
  # hands over to it. (That it starts the tray when none runs: the upgrade checks below.)
  code=0; timeout 60 "$WINE" "$INSTALLED_EXE" >"$STATE/tray.out" 2>&1 || code=$?
  one_tray() { [ "$(count "$TRAY")" = 1 ]; }
  if [ "$code" = 0 ] && wait_until 20000 one_tray && tray_state_is healthy; then
    ok "backend-warden (no arguments) starts backend-warden-tray.exe, which hands over to the running tray; exits 0"
  else
    not_ok "tray mode starts under Xvfb" "$(cat "$STATE/tray.out"; tail -n 5 "$C/users/$WIN_USER/AppData/Local/Backend Warden/logs/warden.log" 2>&1)"
  fi
  code=0; timeout 60 "$WINE" "$INSTALLED_TRAY" >/dev/null 2>&1 || code=$?
  [ "$code" = 0 ] && [ "$(count "$TRAY")" = 1 ] \
    && ok "a second tray launch hands over (asks the running one to show itself) and exits 0" \
    || not_ok "a second tray launch hands over and exits 0" "exit $code"
  code=0; out=$(timeout 120 "$WINE" msiexec /x "$("$WINE" winepath -w "$MSI" | tr -d '\r')" /qn 2>&1) || code=$?
  tray_gone() { [ "$(count "$TRAY")" = 0 ]; }
  [ "$code" = 0 ] && wait_until 10000 tray_gone && [ ! -e "$INSTALL_DIR" ] && [ ! -e "$LNK" ] \
    && [ -z "$(run_key)" ] && [ -z "$(aumid_key)" ] && ! grep -qF "Programs\\Backend Warden" <<<"$(user_path)" \
    && [ -f "$C/users/$WIN_USER/AppData/Roaming/Backend Warden/config.toml" ] \
    && [ -f "$C/users/$WIN_USER/AppData/Local/Backend Warden/logs/backend.log" ] \
    && ok "msiexec /x quits the running tray, removes exe, folder, shortcut, Run value and AppUserModelId key; config and logs stay" \
    || not_ok "msiexec /x: clean uninstall" "exit $code: $out; tray processes: $(count "$TRAY"); dir: $(ls "$INSTALL_DIR" 2>&1); lnk: $(ls "$LNK" 2>&1); Run: [$(run_key)]"

  # ---- the MSI: upgrade to the next version, and a rebuild of one version ---------------------
  # Wine's msiexec runs the package's tables (FindRelatedProducts, the Upgrade rows,
  # RemoveExistingProducts, AppSearch, component conditions) like Windows Installer does.
  products() { # the DisplayVersion of each registered Backend Warden product, one per line
    for root in HKCU HKLM; do
      timeout 30 "$WINE" reg query "$root\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall" /s 2>/dev/null
    done | tr -d '\r' | awk '/^HKEY/ { if (bw) print ver; bw = 0; ver = "" }
      /DisplayName +REG_SZ +Backend Warden$/ { bw = 1 } /DisplayVersion +REG_SZ/ { ver = $NF }
      END { if (bw) print ver }'
  }
  msi_install() { timeout 120 "$WINE" msiexec /i "$("$WINE" winepath -w "$1" | tr -d '\r')" /qn >/dev/null 2>&1; }
  tray_up() { [ "$(count "$TRAY")" = 1 ] && tray_state_is healthy; }
  code=0; msi_install "$MSI" || code=$?
  wait_until 60000 tray_up; code2=0; bwi autostart disable >/dev/null 2>&1 || code2=$?
  PID_BEFORE=$(bwi status --json 2>/dev/null | field warden_pid)
  code3=0; msi_install "$MSI_NEXT" || code3=$?
  # Polled: once, right after the upgrade, the freshly installed exe gave no answer under Wine.
  autostart_off() { [ "$(bwi autostart status 2>/dev/null)" = disabled ]; }
  wait_until 20000 autostart_off; st=$(bwi autostart status 2>/dev/null)
  [ "$code$code2$code3" = 000 ] && [ "$(products)" = "$NEXT" ] && [ -z "$(run_key)" ] \
    && [ -f "$INSTALL_DIR/backend-warden-tray.exe" ] && [ "$st" = disabled ] \
    && ok "upgrade $VERSION -> $NEXT with start at login turned off: one product ($NEXT), Run value still absent" \
    || not_ok "upgrade $VERSION -> $NEXT keeps start at login off" "exits $code/$code2/$code3; products: [$(products)]; Run: [$(run_key)]; autostart status: [$st]; $(ls "$INSTALL_DIR" 2>&1)"
  wait_until 60000 tray_up && [ "$(bwi status --json 2>/dev/null | field warden_pid)" != "$PID_BEFORE" ] \
    && ok "the upgrade quit the old tray and started the new one (PID $PID_BEFORE -> $(bwi status --json 2>/dev/null | field warden_pid))" \
    || not_ok "the upgrade quit the old tray and started the new one" "trays: $(count "$TRAY"); state: $(bwi status --json 2>&1 | field state)"
  code=0; bwi autostart enable >/dev/null 2>&1 || code=$?
  code2=0; msi_install "$MSI_REBUILD" || code2=$?
  [ "$code$code2" = 00 ] && [ "$(products)" = "$NEXT" ] && [ "$(run_key)" = "\"$INSTALLED_TRAY\"" ] \
    && ok "a rebuild of $NEXT (another ProductCode) replaces it, not beside it: one product; start at login, on, stays on" \
    || not_ok "a rebuild of the same version replaces the installed one" "exits $code/$code2; products: [$(products)]; Run: [$(run_key)]"
  wait_until 60000 tray_up
  code=0; timeout 120 "$WINE" msiexec /x "$("$WINE" winepath -w "$MSI_REBUILD" | tr -d '\r')" /qn >/dev/null 2>&1 || code=$?
  [ "$code" = 0 ] && wait_until 10000 tray_gone && [ -z "$(products)" ] && [ ! -e "$INSTALL_DIR" ] && [ -z "$(run_key)" ] \
    && ok "msiexec /x of the rebuild: nothing registered or installed is left" \
    || not_ok "msiexec /x of the rebuild leaves nothing" "exit $code; products: [$(products)]; $(ls "$INSTALL_DIR" 2>&1); Run: [$(run_key)]"
fi
# Whatever is left of this run ends with the prefix's wineserver (wineserver -k, outside).

echo "# checks took $(( $(date +%s) - T0 ))s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
