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
# (MSI_VERSION=X.Y.Z packages the same exes as version X.Y.Z, for upgrade tests.)
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

# MSI_VERSION builds the package as another version (the upgrade checks of windows-wine.sh).
VERSION=${MSI_VERSION:-$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)}
# The strings the app and the package must agree on, read from the app's source.
AUMID=$(sed -n 's/^pub const APP_USER_MODEL_ID: &str = "\(.*\)";/\1/p' src/tray/notify/notifier.rs)
RUN_NAME=$(sed -n 's/^pub const VALUE_NAME: &str = "\(.*\)";/\1/p' src/core/autostart/windows.rs)
WXS_AUMID=$(sed -n 's/.*<?define AppUserModelId = "\(.*\)" ?>.*/\1/p' wix/main.wxs)
UPGRADE_CODE=$(sed -n 's/.*<?define UpgradeCode = "\(.*\)" ?>.*/\1/p' wix/main.wxs)
[ -n "$VERSION" ] && [ -n "$AUMID" ] && [ -n "$RUN_NAME" ] && [ -n "$UPGRADE_CODE" ] \
  || { say "cannot read the version, AUMID, Run value name or UpgradeCode"; exit 1; }

STAGE=$OUT_DIR/stage
MSI=$OUT_DIR/backend-warden-$VERSION-x86_64.msi
rm -rf "$STAGE" "$MSI"
mkdir -p "$STAGE"
# The tray program is built beside the command-line one.
for name in backend-warden backend-warden-tray; do
  src=$(dirname "$EXE")/$name.exe
  [ -f "$src" ] || { say "no $name.exe beside $EXE"; exit 1; }
  x86_64-w64-mingw32-strip -o "$STAGE/$name.exe" "$src" 2>/dev/null || cp "$src" "$STAGE/$name.exe"
done

say "wixl: $MSI"
# wixl (0.101) finds sources only by paths relative to the current folder.
wixl -a x64 -D Wixl=1 -D "Version=$VERSION" -D "CargoTargetBinDir=${STAGE#"$ROOT"/}" -o "$MSI" wix/main.wxs
printf 'MsiShortcutProperty\tShortcut_\tPropertyKey\tPropVariantValue\ns72\ts72\ts255\ts255\nMsiShortcutProperty\tMsiShortcutProperty\nStartMenuShortcutAumid\tStartMenuShortcut\tSystem.AppUserModel.ID\t%s\n' \
  "$WXS_AUMID" > "$STAGE/MsiShortcutProperty.idt"
msibuild "$MSI" -i "$STAGE/MsiShortcutProperty.idt"
# wixl has no Environment element either: the user's PATH gets the install folder appended
# ("=-": set on install, removed on uninstall; "[~];" keeps what is there), as WiX writes
# <Environment Name="PATH" Value="[INSTALLDIR]" Part="last" Action="set" Permanent="no">,
# with the standard actions that apply it.
printf 'Environment\tName\tValue\tComponent_\ns72\tl255\tL255\ts72\nEnvironment\tEnvironment\nUserPath\t=-PATH\t[~];[INSTALLDIR]\tExecutable\n' \
  > "$STAGE/Environment.idt"
msibuild "$MSI" -i "$STAGE/Environment.idt"
msibuild "$MSI" -q "INSERT INTO \`InstallExecuteSequence\` (\`Action\`, \`Sequence\`) VALUES ('RemoveEnvironmentStrings', 3300)"
msibuild "$MSI" -q "INSERT INTO \`InstallExecuteSequence\` (\`Action\`, \`Sequence\`) VALUES ('WriteEnvironmentStrings', 5200)"
# wixl ignores MajorUpgrade/@AllowSameVersionUpgrades: the upgrade row takes its maximum version
# inclusive (msidbUpgradeAttributesVersionMaxInclusive 0x200, beside MigrateFeatures 1), so a
# rebuild of the same version replaces the installed one instead of installing beside it.
# (Attributes is part of the table's key: the row is replaced, not updated.)
msibuild "$MSI" -q "DELETE FROM \`Upgrade\` WHERE \`ActionProperty\` = 'WIX_UPGRADE_DETECTED'"
msibuild "$MSI" -q "INSERT INTO \`Upgrade\` (\`UpgradeCode\`, \`VersionMax\`, \`Attributes\`, \`ActionProperty\`) VALUES ('{$UPGRADE_CODE}', '$VERSION', 513, 'WIX_UPGRADE_DETECTED')"
# wixl has no Component/Condition: on an upgrade, the Run value only if it was there.
msibuild "$MSI" -q "UPDATE \`Component\` SET \`Condition\` = 'NOT WIX_UPGRADE_DETECTED OR AUTOSTART_WAS_ON' WHERE \`Component\` = 'AutostartRunValue'"

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
check "Shortcut: Start-menu shortcut 'Backend Warden' to the installed tray exe, started in INSTALLDIR" \
  has_row_like Shortcut "^StartMenuShortcut${T}ProgramMenuFolder${T}Backend Warden${T}StartMenuShortcut${T}\[#BackendWardenTrayExe\]${T}.*${T}INSTALLDIR${T}"
check "MsiShortcutProperty: the shortcut carries System.AppUserModel.ID = $AUMID" \
  has_row MsiShortcutProperty "StartMenuShortcutAumid${T}StartMenuShortcut${T}System.AppUserModel.ID${T}$AUMID"
check "Registry: HKCU AppUserModelId\\$AUMID DisplayName (toasts show 'Backend Warden')" \
  has_row Registry "$(table Registry | grep -F "${T}DisplayName${T}" | cut -f1)${T}1${T}Software\\Classes\\AppUserModelId\\$AUMID${T}DisplayName${T}Backend Warden${T}StartMenuShortcut"
check "Registry: HKCU Run '$RUN_NAME' = \"[INSTALLDIR]backend-warden-tray.exe\" (quoted), component AutostartRunValue" \
  has_row_like Registry "^reg[0-9A-F]+${T}1${T}$(re 'Software\Microsoft\Windows\CurrentVersion\Run')${T}$(re "$RUN_NAME")${T}$(re '"[INSTALLDIR]backend-warden-tray.exe"')${T}AutostartRunValue$"
check "FeatureComponents: the Run value belongs to the optional feature Autostart" \
  has_row FeatureComponents "Autostart${T}AutostartRunValue"
check "Directory: INSTALLDIR = LocalAppData\\Programs\\Backend Warden" \
  bash -c "$(declare -f table has_row); MSI='$MSI'; T='$T'
    has_row Directory 'INSTALLDIR${T}UserProgramsFolder${T}Backend Warden' &&
    has_row Directory 'UserProgramsFolder${T}LocalAppDataFolder${T}Programs'"
check "File: backend-warden.exe (console) and backend-warden-tray.exe (GUI)" \
  bash -c "$(declare -f table has_row_like); MSI='$MSI'; T='$T'
    has_row_like File '^BackendWardenExe${T}Executable${T}backend-warden\.exe${T}' &&
    has_row_like File '^BackendWardenTrayExe${T}Executable${T}backend-warden-tray\.exe${T}'"
check "Environment: the install folder is appended to the user's PATH (removed on uninstall)" \
  bash -c "$(declare -f table has_row); MSI='$MSI'; T='$T'
    has_row Environment 'UserPath${T}=-PATH${T}[~];[INSTALLDIR]${T}Executable' &&
    has_row InstallExecuteSequence 'WriteEnvironmentStrings${T}${T}5200' &&
    has_row InstallExecuteSequence 'RemoveEnvironmentStrings${T}${T}3300'"
check "per-user: no ALLUSERS property, no elevation (summary Source has 'no privileges')" installs_per_user
check "Property: UpgradeCode {$UPGRADE_CODE} (major upgrade in place)" \
  has_row Property "UpgradeCode${T}{$UPGRADE_CODE}"
check "Upgrade: earlier versions and a rebuild of this one (max inclusive) are found and removed" \
  has_row Upgrade "{$UPGRADE_CODE}${T}${T}$VERSION${T}${T}513${T}${T}WIX_UPGRADE_DETECTED"
check "Upgrade: only a newer version counts as a downgrade (min exclusive)" \
  has_row Upgrade "{$UPGRADE_CODE}${T}$VERSION${T}${T}${T}2${T}${T}WIX_DOWNGRADE_DETECTED"
check "upgrade keeps 'start at login' off: the Run value's component needs it on before (AppSearch)" \
  bash -c "$(declare -f table has_row has_row_like); MSI='$MSI'; T='$T'
    has_row AppSearch 'AUTOSTART_WAS_ON${T}AutostartRunValueSearch' &&
    has_row RegLocator 'AutostartRunValueSearch${T}1${T}Software\Microsoft\Windows\CurrentVersion\Run${T}$RUN_NAME${T}2' &&
    has_row_like Component '^AutostartRunValue${T}.*${T}NOT WIX_UPGRADE_DETECTED OR AUTOSTART_WAS_ON${T}reg[0-9A-F]+$'"
check "uninstall and upgrade: the running warden is asked to quit before InstallValidate" \
  has_row_like InstallExecuteSequence "^QuitWarden${T}REMOVE~=\"ALL\" OR WIX_UPGRADE_DETECTED${T}10[0-9][0-9]$"
check "uninstall: a Run value the app wrote is removed too (not on upgrade)" \
  has_row_like InstallExecuteSequence "^DisableAutostart${T}REMOVE~=\"ALL\" AND NOT UPGRADINGPRODUCTCODE${T}10[0-9][0-9]$"
# Types: 50 (exe named by a property) + 0x40 (ignore its exit code) = 114, and no 0x800
# (msidbCustomActionTypeNoImpersonate, which wixl adds unless Impersonate="yes"): they run as
# the installing user, whose warden and Run value they touch.
check "CustomAction: quit and autostart disable run the installed exe as the user (type 114, no 0x800), failures ignored" \
  bash -c "$(declare -f table has_row); MSI='$MSI'; T='$T'
    has_row CustomAction 'QuitWarden${T}114${T}WARDEN_EXE${T}quit${T}' &&
    has_row CustomAction 'DisableAutostart${T}114${T}WARDEN_EXE${T}autostart disable${T}'"
# 18 (exe installed as a File) + 0xC0 (async, no wait) = 210, no 0x800.
check "after install and upgrade the tray starts as the user, without waiting (StartTray, type 210, after InstallFinalize)" \
  bash -c "$(declare -f table has_row); MSI='$MSI'; T='$T'
    has_row CustomAction 'StartTray${T}210${T}BackendWardenTrayExe${T}${T}' &&
    has_row InstallExecuteSequence 'StartTray${T}NOT REMOVE~=\"ALL\"${T}6700'"
check "RemoveFile: the install folder is removed on uninstall" \
  has_row RemoveFile "RemoveInstallDir${T}Executable${T}${T}INSTALLDIR${T}2"
check "nothing installed in %APPDATA%\\Backend Warden or %LOCALAPPDATA%\\Backend Warden (config, logs kept)" \
  keeps_user_data

echo "$pass passed, $fail failed: $MSI ($(du -h "$MSI" | cut -f1))"
[ "$fail" -eq 0 ]
