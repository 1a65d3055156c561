//! Windows: the per-user Run key, with the program's path quoted. An unquoted path with
//! spaces (under `Program Files`) makes Windows try to run `C:\Program` (the common crate's
//! bug, zzzgydi/auto-launch#32).
//!
//! Task Manager's Startup apps (and Settings > Apps > Startup) turn an entry off without
//! touching the Run value: they write a binary value of the same name under
//! `Explorer\StartupApproved\Run`, whose first byte is odd when the entry is off (02 on,
//! 03 off, followed by the time of the change). Not a documented API, but the state users see:
//! such an entry counts as disabled, and `enable` removes the mark so the entry is on again.

use std::ffi::OsString;
use std::io;
use std::path::Path;

use winreg::RegKey;
use winreg::enums::{HKEY_CURRENT_USER, KEY_READ, KEY_SET_VALUE};

const RUN_KEY: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";
const APPROVED_KEY: &str =
    r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run";
/// The value's name; the MSI's "start at login" feature writes the same one.
pub const VALUE_NAME: &str = "Backend Warden";

/// `"C:\Program Files\Backend Warden\backend-warden-tray.exe"`.
pub fn quoted(program: &Path) -> String {
    format!("\"{}\"", program.display())
}

/// `backend-warden-tray.exe` beside this program.
pub fn program() -> io::Result<std::path::PathBuf> {
    crate::paths::sibling_program(crate::paths::TRAY_PROGRAM)
}

/// The Run value that starts `program` with `args`, each quoted (a folder with spaces stays
/// one argument; a trailing backslash is doubled so it does not escape the closing quote).
pub fn entry(program: &Path, args: &[OsString]) -> String {
    let mut line = quoted(program);
    for arg in args {
        let arg = arg.to_string_lossy();
        let trailing = arg.len() - arg.trim_end_matches('\\').len();
        line.push_str(&format!(" \"{arg}{}\"", "\\".repeat(trailing)));
    }
    line
}

/// Writes the Run value, and turns the entry back on if Task Manager had turned it off.
pub fn write(entry: &str) -> io::Result<()> {
    let (key, _) = RegKey::predef(HKEY_CURRENT_USER).create_subkey(RUN_KEY)?;
    key.set_value(VALUE_NAME, &entry.to_owned())?;
    let unmarked = RegKey::predef(HKEY_CURRENT_USER)
        .open_subkey_with_flags(APPROVED_KEY, KEY_SET_VALUE)
        .and_then(|key| key.delete_value(VALUE_NAME));
    match unmarked {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Our Run value, if there is one and Task Manager has not turned it off (Windows then does
/// not run it at login).
pub fn read() -> Option<String> {
    if turned_off_in_task_manager() {
        return None;
    }
    RegKey::predef(HKEY_CURRENT_USER)
        .open_subkey_with_flags(RUN_KEY, KEY_READ)
        .and_then(|key| key.get_value::<String, _>(VALUE_NAME))
        .ok()
}

pub fn disable() -> io::Result<()> {
    // No Run key at all (a fresh profile) means nothing to remove, like a missing value.
    let removed = RegKey::predef(HKEY_CURRENT_USER)
        .open_subkey_with_flags(RUN_KEY, KEY_SET_VALUE)
        .and_then(|key| key.delete_value(VALUE_NAME));
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether Task Manager's Startup apps marks the entry as off.
fn turned_off_in_task_manager() -> bool {
    RegKey::predef(HKEY_CURRENT_USER)
        .open_subkey_with_flags(APPROVED_KEY, KEY_READ)
        .and_then(|key| key.get_raw_value(VALUE_NAME))
        .is_ok_and(|value| approved_means_off(&value.bytes))
}

/// A `StartupApproved` value: off when its first byte is odd (03, 07), on when even (02, 06).
fn approved_means_off(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b & 1 == 1)
}

pub fn location() -> String {
    format!(r"HKEY_CURRENT_USER\{RUN_KEY}\{VALUE_NAME}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_approved_values() {
        assert!(!approved_means_off(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(approved_means_off(&[
            3, 0, 0, 0, 0x10, 0x2c, 0x8a, 0x1b, 0x4e, 0x35, 0xdb, 1
        ]));
        assert!(approved_means_off(&[7, 0, 0, 0]));
        assert!(!approved_means_off(&[6, 0, 0, 0]));
        assert!(!approved_means_off(&[]));
    }
}
