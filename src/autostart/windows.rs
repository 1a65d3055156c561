//! Windows: the per-user Run key, with the program's path quoted. An unquoted path with
//! spaces (under `Program Files`) makes Windows try to run `C:\Program` (the common crate's
//! bug, zzzgydi/auto-launch#32).

use std::ffi::OsString;
use std::io;
use std::path::Path;

use winreg::RegKey;
use winreg::enums::{HKEY_CURRENT_USER, KEY_READ, KEY_SET_VALUE};

const RUN_KEY: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";
/// The value's name; the MSI's "start at login" feature writes the same one.
pub const VALUE_NAME: &str = "Backend Warden";

/// `"C:\Program Files\Backend Warden\backend-warden.exe"`.
pub fn quoted(program: &Path) -> String {
    format!("\"{}\"", program.display())
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

pub fn write(entry: &str) -> io::Result<()> {
    let (key, _) = RegKey::predef(HKEY_CURRENT_USER).create_subkey(RUN_KEY)?;
    key.set_value(VALUE_NAME, &entry.to_owned())
}

/// Our Run value, if there is one.
pub fn read() -> Option<String> {
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

pub fn location() -> String {
    format!(r"HKEY_CURRENT_USER\{RUN_KEY}\{VALUE_NAME}")
}
