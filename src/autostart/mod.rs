//! Start at login: the per-user Run key on Windows (with a quoted path), an XDG autostart
//! `.desktop` file on Linux, a LaunchAgent on macOS. Enabling twice is harmless; disabling
//! removes exactly what enabling wrote. One file per OS with identical signatures.

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

/// Makes the warden start at login.
pub fn enable() -> io::Result<()> {
    imp::enable(&program()?)
}

/// Stops the warden from starting at login.
pub fn disable() -> io::Result<()> {
    imp::disable()
}

/// Whether the warden starts at login (an entry of ours exists).
pub fn is_enabled() -> bool {
    imp::is_enabled()
}

/// Where the entry lives, for messages.
pub fn location() -> String {
    imp::location()
}
