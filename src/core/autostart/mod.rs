//! Start at login: the per-user Run key on Windows (with a quoted path), an XDG autostart
//! `.desktop` file on Linux, a LaunchAgent on macOS. Enabling twice is harmless; disabling
//! removes exactly what enabling wrote. One file per OS with identical signatures.
//!
//! The entry starts `backend-warden` with the arguments that select this warden's files
//! (`--home`, `--config`: [`crate::paths::Paths::launch_args`]), so a warden run with another
//! config or home starts at login as itself; "enabled" means an entry that starts this one.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as imp;
#[cfg(all(unix, not(target_os = "macos")))]
mod xdg;
#[cfg(all(unix, not(target_os = "macos")))]
use xdg as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// The program that starts at login, with no arguments (the tray), also when the other program
/// asks: `backend-warden` (which becomes the tray) on Linux and macOS; on Windows
/// `backend-warden-tray.exe` itself, a GUI-subsystem program, so that no console window flashes
/// up at login.
fn program() -> io::Result<PathBuf> {
    imp::program()
}

/// Makes the warden started with `args` (see the module docs) start at login.
pub fn enable(args: &[OsString]) -> io::Result<()> {
    imp::write(&imp::entry(&program()?, args))
}

/// Stops the warden from starting at login.
pub fn disable() -> io::Result<()> {
    imp::disable()
}

/// Whether the warden started with `args` starts at login: an entry of ours exists and starts
/// exactly that.
pub fn is_enabled(args: &[OsString]) -> bool {
    let Ok(program) = program() else {
        return false;
    };
    imp::read().is_some_and(|entry| entry == imp::entry(&program, args))
}

/// Whether an entry of ours exists at all (it may start a warden with other arguments).
pub fn is_present() -> bool {
    imp::read().is_some()
}

/// Where the entry lives, for messages.
pub fn location() -> String {
    imp::location()
}
