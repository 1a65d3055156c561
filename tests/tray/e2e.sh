#!/usr/bin/env bash
# The tray, end to end, as a user sees it: icon colours on the icon file and on screen, menu
# labels and enabled flags, clicks through D-Bus checked against `status --json` and the
# process table, one notification per episode, Quit leaving nothing behind.
# Runs inside tray-e2e-env.sh (see run-e2e.sh); needs APP, FAKE (the tests' fake backend,
# target/*/examples/fake-backend) and SHOTS.
set -euo pipefail
H=$TRAY_E2E_SCRIPT
APP=${APP:?} FAKE=${FAKE:?} SHOTS=${SHOTS:?}
HOME_DIR=$(mktemp -d); export BACKEND_WARDEN_HOME=$HOME_DIR
# Login entries go here, not into the real ~/.config/autostart.
export XDG_CONFIG_HOME=$HOME_DIR/xdg
TAG=e2e-$$-$RANDOM
GREEN='rgb(46,125,50)' RED='rgb(211,47,47)' GREY='rgb(117,117,117)' ORANGE='rgb(255,109,0)'
T0=$(date +%s%3N)
N=0
ok() { N=$((N + 1)); echo "ok $N - $* [+$(( $(date +%s%3N) - T0 )) ms]"; }
fail() { echo "not ok - $*"; echo "--- warden log"; tail -n 40 "$LOG" || true;
         echo "--- notifications"; $H notifications || true; exit 1; }
LOG=$TRAY_E2E_DIR/logs/app.log

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
status() { "$APP" status --json; }
field() { status | python3 -c "import json,sys; v=json.load(sys.stdin)$1; print('' if v is None else v)"; }
# wait_until SECS DESCRIPTION CMD... : poll CMD until it succeeds
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s%3N) + secs * 1000 ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s%3N) > end )) && fail "timed out (${secs}s) waiting for $what"
    sleep 0.05
  done
}
state_is() { [ "$(field "['state']")" = "$1" ]; }
new_healthy_pid() { state_is healthy && [ "$(field "['pid']")" != "$1" ]; }
status_mentions() { local s; s=$(status); grep -F -- "$1" <<<"$s" >/dev/null; }
icon_has() { $H sni-icon "$SHOTS/icon.png" >/dev/null && $H find-color "$1" "$SHOTS/icon.png" >/dev/null 2>&1; }
# (grep -q would close the pipe early: with pipefail the writer's SIGPIPE fails the check)
menu() { $H sni-menu; }
menu_has() { local m; m=$(menu); grep -E "$1" <<<"$m" >/dev/null; }
item_enabled() { local m; m=$(menu); grep -E "^[0-9]+ +$1 " <<<"$m" | grep -v 'enabled=False' >/dev/null; }
item_disabled() { local m; m=$(menu); grep -E "^[0-9]+ +$1 " <<<"$m" | grep 'enabled=False' >/dev/null; }
autostart_is() { local m; m=$(menu); grep -E "^[0-9]+ +Start at login " <<<"$m" | grep "toggle-state=$1" >/dev/null; }
count_notes() { local n; n=$($H notifications); grep -c "$1" <<<"$n" || true; }
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
tagged() { pgrep -f -- "$TAG" || true; }

PORT=$(free_port)
fake_config() {
  cat <<TOML
[backend]
command = '$FAKE'
args = ['--port', '$PORT', '--tag', '$TAG']
port = $PORT
env = { API_TOKEN = "s3cr3t-token-$TAG" }
[health]
url = "http://127.0.0.1:$PORT/health"
interval = "300ms"
[restart]
backoff_initial = "1500ms"
[strays]
scan_interval = "500ms"
TOML
}

# A first launch with a broken config (a port in quotes): no exit, a tray in its "config
# error" state that says what is wrong where a teammate looks.
fake_config | sed "s/^port = $PORT\$/port = \"$PORT\"/" >"$HOME_DIR/config.toml"
"$APP" >"$LOG" 2>&1 &
WARDEN=$!
trap 'kill $WARDEN 2>/dev/null || true' EXIT
$H wait-sni 15 >/dev/null || fail "no tray item on the bus"
ok "tray item registered"
wait_until 10 "a red icon for the config error" icon_has "$RED"
menu_has "Backend: not started — the config has an error" || fail "status line: $(menu)"
menu_has "config.toml:4:[0-9]+: backend.port" || fail "the error's line in the menu: $(menu)"
item_enabled "Edit config" && item_enabled "Reload config" && item_disabled Start \
  || fail "config items when the config is broken: $(menu)"
$H wait-notify $'\tConfig error: backend not started\t' 10 >/dev/null || fail "no config error alert"
grep -E "config error.*backend.port" "$HOME_DIR/logs/warden.log" >/dev/null \
  || fail "warden.log lacks the config error: $(tail -5 "$HOME_DIR/logs/warden.log")"
grep -A12 'member=Notify$' "$TRAY_E2E_NOTIFY_LOG" | grep -F 'string "edit-config"' >/dev/null \
  || fail "the config error alert has no Edit config button"
$H wait-notify $'\tBackend Warden is running\t' 10 >/dev/null || fail "no welcome alert on the first launch"
$H screenshot "$SHOTS/screen-config-error.png"
ok "broken config at start: red icon, the error in the menu, an alert with Edit config, warden.log"

# Edit config where no program opens .toml (this desktop has none): an alert naming the file.
$H sni-click 'Edit config' >/dev/null
$H wait-notify "no program is set up to open $HOME_DIR/config.toml" 20 >/dev/null \
  || fail "no alert naming the file nothing could open: $($H notifications)"
ok "Edit config with no program for .toml: an alert names the file"

# Fixed and reloaded: the backend starts.
fake_config >"$HOME_DIR/config.toml"
$H sni-click 'Reload config' >/dev/null
wait_until 20 "healthy" state_is healthy
wait_until 5 "a green icon" icon_has "$GREEN"
ok "healthy: the icon is green"
for _ in $(seq 50); do $H find-color "$GREEN" >/dev/null 2>&1 && break; sleep 0.1; done
$H screenshot "$SHOTS/screen-healthy.png"
$H find-color "$GREEN" "$SHOTS/screen-healthy.png" >/dev/null || fail "green icon not on screen"
ok "green icon drawn in the panel"

# The menu as a user sees it, opened with the mouse.
$H click-tray "$GREEN" 1 >/dev/null || fail "cannot open the menu with a click"
$H screenshot "$SHOTS/screen-menu.png"
xdotool key Escape
ok "menu opened by clicking the icon (screenshot $SHOTS/screen-menu.png)"
menu_has "Backend: healthy · PID" || fail "status line: $(menu)"
item_disabled Start && item_enabled Stop && item_enabled Restart && item_disabled "Kill strays" \
  || fail "enabled flags when healthy: $(menu)"
ok "healthy menu: status line, Start off, Stop/Restart on, Kill strays off"

# A crash: red while backing off, one notification, green again, one recovery notification.
PID=$(field "['pid']")
kill -9 "$PID"
wait_until 5 "backoff" state_is backoff
wait_until 5 "a red icon" icon_has "$RED"
for _ in $(seq 50); do $H find-color "$RED" >/dev/null 2>&1 && break; sleep 0.1; done
$H screenshot "$SHOTS/screen-crashed.png"
$H find-color "$RED" "$SHOTS/screen-crashed.png" >/dev/null || fail "red icon not on screen"
ok "crash: the icon turns red"
wait_until 20 "healthy again" state_is healthy
wait_until 5 "a green icon again" icon_has "$GREEN"
$H wait-notify $'\tBackend recovered\t' 10 >/dev/null || fail "no recovery notification"
[ "$(count_notes $'\tBackend crashed\t')" = 1 ] || fail "crash notifications: $($H notifications)"
ok "exactly one crash notification, then one recovery; icon green again"

# Stop / Start / Restart through the menu, checked against status and the process table.
PID=$(field "['pid']")
$H sni-click Stop >/dev/null
wait_until 10 "stopped" state_is stopped
alive "$PID" && fail "backend $PID still alive after Stop"
wait_until 5 "a grey icon" icon_has "$GREY"
wait_until 5 "Start enabled" item_enabled Start
item_disabled Stop || fail "Stop enabled while stopped: $(menu)"
ok "Stop: backend gone, icon grey, Start enabled"
$H sni-click Start >/dev/null
wait_until 20 "healthy after Start" state_is healthy
NEW=$(field "['pid']"); alive "$NEW" || fail "no backend after Start"
ok "Start: healthy again (PID $NEW)"
$H sni-click Restart >/dev/null
wait_until 20 "a new healthy backend" new_healthy_pid "$NEW"
alive "$NEW" && fail "old backend $NEW survived Restart"
ok "Restart: a new backend, the old one gone"

# Start at login follows the command line.
autostart_is 0 || fail "Start at login checked before any entry: $(menu)"
"$APP" autostart enable >/dev/null
wait_until 10 "Start at login checked" autostart_is 1
grep -F -- "--home" "$XDG_CONFIG_HOME/autostart/backend-warden.desktop" >/dev/null \
  || fail "the login entry does not start this warden: $(cat "$XDG_CONFIG_HOME/autostart/backend-warden.desktop")"
"$APP" autostart disable >/dev/null
wait_until 10 "Start at login unchecked" autostart_is 0
ok "Start at login follows autostart enable / disable from the CLI"

# A stray started by hand: badge, menu line, Kill strays (1), and it dies when clicked.
STRAY_PORT=$(free_port)
(cd "$HOME_DIR" && setsid "$FAKE" --port "$STRAY_PORT" --tag "$TAG-stray" >/dev/null 2>&1 &)
wait_until 10 "the stray listed" status_mentions "$TAG-stray"
STRAY=$(pgrep -f -- "$TAG-stray" | head -1)
wait_until 5 "Kill strays (1)" item_enabled 'Kill strays \(1\)'
menu_has "1 stray: PID $STRAY" || fail "stray line: $(menu)"
wait_until 5 "an orange badge" icon_has "$ORANGE"
$H wait-notify $'\tStray backend copies found\t' 10 >/dev/null || fail "no strays notification"
ok "stray: menu line, Kill strays (1) enabled, orange badge, one notification"
$H sni-click 'Kill strays (1)' >/dev/null
wait_until 10 "the stray to die" bash -c "! kill -0 $STRAY 2>/dev/null || grep -q '^State:.*Z' /proc/$STRAY/status"
state_is healthy || fail "the managed backend suffered"
wait_until 5 "no badge" bash -c "! { $H sni-icon '$SHOTS/icon.png' >/dev/null && $H find-color '$ORANGE' '$SHOTS/icon.png' >/dev/null 2>&1; }"
ok "Kill strays: the stray died, the managed backend is healthy, the badge is gone"

# The team's scenario: an orphaned `uvicorn --reload` worker holds the port of the real
# backend. The start fails naming it, Kill strays is enabled, a click frees the port and the
# start the worker blocked goes ahead.
PY=${BACKEND_WARDEN_TEST_PYTHON:?the venv python with uvicorn (tests/run.sh sets it)}
PROJECT=$(mktemp -d)
cp "$(dirname "$0")/../fixtures/seed_project/main.py" "$PROJECT/"
UPORT=$(free_port)
(cd "$PROJECT" && setsid "$PY" -m uvicorn main:app --host 127.0.0.1 --port "$UPORT" --reload \
   >/dev/null 2>&1 &)
listening() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1"; }
wait_until 30 "uvicorn by hand" listening "$UPORT"
RELOADER=$(pgrep -f -- "uvicorn main:app --host 127.0.0.1 --port $UPORT --reload" | head -1)
worker_of() { pgrep -P "$RELOADER" -f spawn_main; }
wait_until 10 "the reload worker" worker_of
WORKER=$(worker_of | head -1)
kill -9 "$RELOADER"
wait_until 5 "the worker orphaned" bash -c "! grep -q '^PPid:[[:space:]]*$RELOADER\$' /proc/$WORKER/status"
FAKE_CONFIG=$(cat "$HOME_DIR/config.toml")
cat >"$HOME_DIR/config.toml" <<TOML
[backend]
command = '$PY'
args = ['-m', 'uvicorn', 'main:app', '--host', '127.0.0.1', '--port', '$UPORT']
cwd = '$PROJECT'
port = $UPORT
[health]
url = "http://127.0.0.1:$UPORT/health"
interval = "300ms"
[strays]
scan_interval = "500ms"
TOML
$H sni-click 'Reload config' >/dev/null
wait_until 30 "failed: the worker holds the port" state_is failed
status_mentions "an orphaned worker of an earlier copy of this backend holds port $UPORT" \
  || fail "failed reason: $(status)"
# The worker and uvicorn's resource tracker, both orphaned.
wait_until 10 "Kill strays enabled" item_enabled 'Kill strays \([0-9]+\)'
KILL_ITEM=$(menu | grep -oE 'Kill strays \([0-9]+\)' | head -1)
$H wait-notify "orphaned worker" 10 >/dev/null || fail "no alert naming the orphaned worker"
$H screenshot "$SHOTS/screen-orphaned-worker.png"
ok "orphaned reload worker on the port: start failed naming it, $KILL_ITEM enabled"
$H sni-click "$KILL_ITEM" >/dev/null
wait_until 10 "the worker to die" bash -c "! kill -0 $WORKER 2>/dev/null || grep -q '^State:.*Z' /proc/$WORKER/status"
wait_until 30 "healthy after the kill" state_is healthy
[ "$(field "['pid']")" != "$WORKER" ] || fail "the worker is taken for the backend"
ok "Kill strays: the orphaned worker died, the port is free, the backend is healthy"
printf '%s\n' "$FAKE_CONFIG" >"$HOME_DIR/config.toml"
$H sni-click 'Reload config' >/dev/null
wait_until 30 "the fake backend healthy again" state_is healthy
port_is() { [ "$(field "['port']")" = "$1" ]; }
wait_until 10 "the fake backend on its port" port_is "$PORT"
rm -rf "$PROJECT"

# A crash loop after a config reload from the menu: a SyntaxError. One crash alert, one
# give-up that stays until dismissed, and the reason still in the menu afterwards.
GAVE_UP=$(count_notes $'\tBackend Warden gave up\t')
BROKEN=$(mktemp -d)
printf 'import sys\nprint("starting")\ndef handler(:\n    pass\n' >"$BROKEN/broken.py"
cat >"$HOME_DIR/config.toml" <<TOML
[backend]
command = '$PY'
args = ['broken.py']
cwd = '$BROKEN'
[restart]
backoff_initial = "100ms"
max_restarts = 2
TOML
$H sni-click 'Reload config' >/dev/null
$H wait-notify $'\tConfig reloaded\t' 10 >/dev/null || fail "no reload notification"
wait_until 20 "failed" state_is failed
wait_until 5 "a red ✕ icon" icon_has "$RED"
$H wait-notify $'\tBackend Warden gave up\t' 10 >/dev/null || fail "no give-up notification"
[ "$(count_notes $'\tBackend crashed\t')" = 2 ] || fail "crash alerts for the loop: $($H notifications)"
[ "$(count_notes $'\tBackend Warden gave up\t')" = $((GAVE_UP + 1)) ] || fail "give-up alerts: $($H notifications)"
$H notifications | grep -E $'\tBackend Warden gave up\tSyntaxError: invalid syntax \\(broken.py, line 3\\)' >/dev/null \
  || fail "the give-up alert does not lead with the exception: $($H notifications)"
grep -B2 -A40 'string "Backend Warden gave up"' "$TRAY_E2E_NOTIFY_LOG" | grep -A1 'string "urgency"' | grep -F 'byte 2' >/dev/null \
  || fail "the give-up alert is not critical (it would expire)"
menu_has "SyntaxError: invalid syntax \(broken.py, line 3\)" || fail "the reason is not in the menu: $(menu)"
menu_has "crashed: SyntaxError: invalid syntax" || fail "Recent events lacks the crash: $(menu)"
menu_has "gave up: SyntaxError" || fail "Recent events lacks the give-up: $(menu)"
$H sni-click 'Copy details' >/dev/null
clipboard_has() { xclip -o -selection clipboard 2>/dev/null | grep -F -- "$1" >/dev/null; }
wait_until 5 "the details on the clipboard" clipboard_has "def handler(:"
$H screenshot "$SHOTS/screen-gave-up.png"
ok "SyntaxError crash loop: one crash alert, a critical give-up alert leading with the exception, the reason and Recent events in the menu, Copy details"

# Fixed: the backend runs again, and says so. Then a backend that turns unhealthy: one alert
# naming the health check's answer, then one when it recovers.
RECOVERED=$(count_notes $'\tBackend recovered\t')
cat >"$HOME_DIR/config.toml" <<TOML
[backend]
command = '$FAKE'
args = ['--port', '$PORT', '--tag', '$TAG', '--unhealthy-after', '1500']
port = $PORT
[health]
url = "http://127.0.0.1:$PORT/health"
interval = "300ms"
unhealthy_after = 1
restart_after = "1s"
TOML
$H sni-click 'Reload config' >/dev/null
$H wait-notify $'\tBackend running again\t' 20 >/dev/null || fail "no alert that the fixed backend runs"
$H wait-notify $'\tBackend unhealthy\tIts health check fails: /health answered 503' 20 >/dev/null \
  || fail "no unhealthy alert naming the answer: $($H notifications)"
wait_until 20 "a recovery alert" bash -c "[ \"\$($H notifications | grep -c $'\tBackend recovered\t')\" -gt $RECOVERED ]"
ok "fixed: 'running again'; unhealthy: one alert naming the 503, then a recovery alert"

# Save diagnostics: one file a teammate can send, secrets redacted.
fake_config >"$HOME_DIR/config.toml"
$H sni-click 'Reload config' >/dev/null
wait_until 20 "the fake backend healthy again" state_is healthy
$H sni-click 'Save diagnostics…' >/dev/null
$H wait-notify $'\tDiagnostics saved\t' 10 >/dev/null || fail "no diagnostics alert"
DIAG=$($H notifications | grep $'\tDiagnostics saved\t' | tail -1 | cut -f3 | sed 's/\\n.*//; s/Send this.*//')
DIAG=$(ls -t "$(dirname "$DIAG")"/backend-warden-diagnostics-*.txt | head -1)
[ -s "$DIAG" ] || fail "no diagnostics file at $DIAG"
grep -F "s3cr3t-token" "$DIAG" >/dev/null && fail "the diagnostics file leaks a secret"
grep -F "<redacted>" "$DIAG" >/dev/null && grep -F "== backend.log" "$DIAG" >/dev/null \
  && grep -F '"state": "healthy"' "$DIAG" >/dev/null || fail "diagnostics content: $(head -40 "$DIAG")"
rm -f "$DIAG"
ok "Save diagnostics: status, logs and the config with the token redacted, in one file"

# A broken config on reload keeps the old one and says why.
echo 'comand = "x"' >>"$HOME_DIR/config.toml"
$H sni-click 'Reload config' >/dev/null
$H wait-notify $'\tConfig not reloaded\t' 10 >/dev/null || fail "no config error notification"
ok "a broken config is refused with a notification"

# Quit: the warden exits and no backend process is left.
$H sni-click 'Quit (stops the backend)' >/dev/null || true
for _ in $(seq 100); do kill -0 $WARDEN 2>/dev/null || break; sleep 0.1; done
kill -0 $WARDEN 2>/dev/null && fail "the warden did not exit on Quit"
[ -z "$(tagged)" ] || fail "processes left after Quit: $(tagged)"
ok "Quit: warden gone, no backend left"
# A second launch, from a project's folder and without a config: no second welcome, and Edit
# config writes a config for that project (what `config init --detect` finds).
rm -f "$HOME_DIR/config.toml"
PROJECT=$(mktemp -d)
cp "$(dirname "$0")/../fixtures/seed_project/main.py" "$PROJECT/"
(cd "$PROJECT" && exec "$APP" >>"$LOG" 2>&1) &
WARDEN=$!
$H wait-sni 15 >/dev/null || fail "no tray item on the second launch"
wait_until 20 "the demo healthy" state_is healthy
$H sni-click 'Edit config' >/dev/null
$H wait-notify $'\tConfig created\t.*now runs the project in' 10 >/dev/null \
  || fail "Edit config did not detect the project: $($H notifications)"
grep -F "main.py" "$HOME_DIR/config.toml" >/dev/null || fail "config: $(cat "$HOME_DIR/config.toml")"
"$APP" quit >/dev/null
for _ in $(seq 100); do kill -0 $WARDEN 2>/dev/null || break; sleep 0.1; done
[ "$(count_notes $'\tBackend Warden is running\t')" = 1 ] || fail "welcome alerts: $($H notifications)"
rm -rf "$PROJECT"
ok "second launch: no second welcome; Edit config writes a config for the project it was started in"
echo "$N passed, 0 failed"
