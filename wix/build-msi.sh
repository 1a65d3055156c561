#!/usr/bin/env bash
# Builds the per-user MSI from wix/main.wxs with wixl (Debian's msitools), then checks its
# tables with msiinfo: the Start-menu shortcut and its AppUserModelID, the AppUserModelId key,
# the quoted Run value, per-user scope, the stable UpgradeCode and the uninstall actions.
#
#   bash wix/build-msi.sh [EXE]
#
# EXE defaults to the x86_64-pc-windows-gnu debug build (built first by
# tests/windows-check.sh --build-gnu); its debug information is stripped for the package.
# For a release MSI pass a release exe. Output: target/windows/msi/backend-warden-VERSION-x86_64.msi
#
# wixl has no ShortcutProperty element, so main.wxs leaves the shortcut's AppUserModelID out
# for wixl (var.Wixl) and this script adds the same row to MsiShortcutProperty with msibuild.
# On Windows the WiX 3 toolset builds main.wxs as it is (see the comment at its top).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT_DIR=$ROOT/target/windows/msi
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
say() { printf '[msi %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

need=()
command -v wixl >/dev/null || need+=(wixl)
command -v msiinfo >/dev/null || need+=(msitools)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

EXE=${1:-}
if [ -z "$EXE" ]; then
  bash tests/windows-check.sh --build-gnu
  EXE=$ROOT/target/windows/x86_64-pc-windows-gnu/debug/backend-warden.exe
fi
[ -f "$EXE" ] || { say "no exe at $EXE"; exit 1; }

VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
# The strings the app and the package must agree on, read from the app's source.
AUMID=$(sed -n 's/^pub const APP_USER_MODEL_ID: &str = "\(.*\)";/\1/p' src/notifier.rs)
RUN_NAME=$(sed -n 's/^pub const VALUE_NAME: &str = "\(.*\)";/\1/p' src/autostart/windows.rs)
WXS_AUMID=$(sed -n 's/.*<?define AppUserModelId = "\(.*\)" ?>.*/\1/p' wix/main.wxs)
UPGRADE_CODE=$(sed -n 's/.*<?define UpgradeCode = "\(.*\)" ?>.*/\1/p' wix/main.wxs)
[ -n "$VERSION" ] && [ -n "$AUMID" ] && [ -n "$RUN_NAME" ] && [ -n "$UPGRADE_CODE" ] \
  || { say "cannot read the version, AUMID, Run value name or UpgradeCode"; exit 1; }

STAGE=$OUT_DIR/stage
MSI=$OUT_DIR/backend-warden-$VERSION-x86_64.msi
rm -rf "$STAGE" "$MSI"
mkdir -p "$STAGE"
x86_64-w64-mingw32-strip -o "$STAGE/backend-warden.exe" "$EXE" 2>/dev/null || cp "$EXE" "$STAGE/backend-warden.exe"

say "wixl: $MSI"
# wixl (0.101) finds sources only by paths relative to the current folder.
wixl -a x64 -D Wixl=1 -D "Version=$VERSION" -D "CargoTargetBinDir=${STAGE#"$ROOT"/}" -o "$MSI" wix/main.wxs
printf 'MsiShortcutProperty\tShortcut_\tPropertyKey\tPropVariantValue\ns72\ts72\ts255\ts255\nMsiShortcutProperty\tMsiShortcutProperty\nStartMenuShortcutAumid\tStartMenuShortcut\tSystem.AppUserModel.ID\t%s\n' \
  "$WXS_AUMID" > "$STAGE/MsiShortcutProperty.idt"
msibuild "$MSI" -i "$STAGE/MsiShortcutProperty.idt"

# ---- checks ----
pass=0 fail=0
check() { # name, then a command that must succeed
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok - $name"; pass=$((pass + 1))
  else echo "not ok - $name"; fail=$((fail + 1)); fi
}
T=$(printf '\t')
# A table's rows, without its three header lines and msiinfo's CRLF line ends.
table() { msiinfo export "$MSI" "$1" | tr -d '\r' | tail -n +4; }
has_row() { table "$1" | grep -qxF -- "$2"; }
has_row_like() { table "$1" | grep -qE -- "$2"; }
re() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; } # a string as a literal regex
installs_per_user() {
  ! table Property | grep -q '^ALLUSERS' || return 1
  local source; source=$(msiinfo suminfo "$MSI" | sed -n 's/^Source: \([0-9]*\).*/\1/p')
  (( source & 8 ))
}
keeps_user_data() { ! table Directory | grep -qE "${T}AppDataFolder${T}|${T}LocalAppDataFolder${T}Backend Warden\$"; }

check "the app and main.wxs use the same AppUserModelID ($AUMID)" test "$AUMID" = "$WXS_AUMID"
check "Shortcut: Start-menu shortcut 'Backend Warden' to the installed exe, started in INSTALLDIR" \
  has_row_like Shortcut "^StartMenuShortcut${T}ProgramMenuFolder${T}Backend Warden${T}StartMenuShortcut${T}\[#BackendWardenExe\]${T}.*${T}INSTALLDIR${T}"
check "MsiShortcutProperty: the shortcut carries System.AppUserModel.ID = $AUMID" \
  has_row MsiShortcutProperty "StartMenuShortcutAumid${T}StartMenuShortcut${T}System.AppUserModel.ID${T}$AUMID"
check "Registry: HKCU AppUserModelId\\$AUMID DisplayName (toasts show 'Backend Warden')" \
  has_row Registry "$(table Registry | grep -F "${T}DisplayName${T}" | cut -f1)${T}1${T}Software\\Classes\\AppUserModelId\\$AUMID${T}DisplayName${T}Backend Warden${T}StartMenuShortcut"
check "Registry: HKCU Run '$RUN_NAME' = \"[INSTALLDIR]backend-warden.exe\" (quoted), component AutostartRunValue" \
  has_row_like Registry "^reg[0-9A-F]+${T}1${T}$(re 'Software\Microsoft\Windows\CurrentVersion\Run')${T}$(re "$RUN_NAME")${T}$(re '"[INSTALLDIR]backend-warden.exe"')${T}AutostartRunValue$"
check "FeatureComponents: the Run value belongs to the optional feature Autostart" \
  has_row FeatureComponents "Autostart${T}AutostartRunValue"
check "Directory: INSTALLDIR = LocalAppData\\Programs\\Backend Warden" \
  bash -c "$(declare -f table has_row); MSI='$MSI'; T='$T'
    has_row Directory 'INSTALLDIR${T}UserProgramsFolder${T}Backend Warden' &&
    has_row Directory 'UserProgramsFolder${T}LocalAppDataFolder${T}Programs'"
check "File: backend-warden.exe" has_row_like File "^BackendWardenExe${T}Executable${T}backend-warden\.exe${T}"
check "per-user: no ALLUSERS property, no elevation (summary Source has 'no privileges')" installs_per_user
check "Property: UpgradeCode {$UPGRADE_CODE} (major upgrade in place)" \
  has_row Property "UpgradeCode${T}{$UPGRADE_CODE}"
check "Upgrade: earlier versions are found and removed" \
  has_row Upgrade "{$UPGRADE_CODE}${T}${T}$VERSION${T}${T}1${T}${T}WIX_UPGRADE_DETECTED"
check "uninstall and upgrade: the running warden is asked to quit before InstallValidate" \
  has_row_like InstallExecuteSequence "^QuitWarden${T}REMOVE~=\"ALL\" OR WIX_UPGRADE_DETECTED${T}10[0-9][0-9]$"
check "uninstall: a Run value the app wrote is removed too (not on upgrade)" \
  has_row_like InstallExecuteSequence "^DisableAutostart${T}REMOVE~=\"ALL\" AND NOT UPGRADINGPRODUCTCODE${T}10[0-9][0-9]$"
check "CustomAction: both run the installed exe, failures ignored" \
  bash -c "$(declare -f table has_row); MSI='$MSI'; T='$T'
    has_row CustomAction 'QuitWarden${T}2162${T}WARDEN_EXE${T}quit${T}' &&
    has_row CustomAction 'DisableAutostart${T}2162${T}WARDEN_EXE${T}autostart disable${T}'"
check "RemoveFile: the install folder is removed on uninstall" \
  has_row RemoveFile "RemoveInstallDir${T}Executable${T}${T}INSTALLDIR${T}2"
check "nothing installed in %APPDATA%\\Backend Warden or %LOCALAPPDATA%\\Backend Warden (config, logs kept)" \
  keeps_user_data

echo "$pass passed, $fail failed: $MSI ($(du -h "$MSI" | cut -f1))"
[ "$fail" -eq 0 ]
