//! The warden's own folders and files (logs, runtime folder, lock), opened so that nobody else
//! can steer them: a folder that is a symbolic link or belongs to another user is refused with
//! a clear error, new folders are created owner-only (0700) and files 0600 (logs may carry
//! secrets), a log file is never opened through a symbolic link, and permissions are only ever
//! changed on what was opened, never on a path looked up again. One file per OS; imports only
//! `std` and the OS crates.

use std::fs::File;
use std::io;
use std::path::Path;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// What a folder is for, for messages and for how strict to be with an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderKind {
    /// The runtime folder (socket, lock): always made owner-only, even if it existed.
    Runtime,
    /// A log folder: created owner-only; an existing one keeps the mode its owner gave it.
    Logs,
}

/// Creates `dir` (and missing parents) owner-only, or checks an existing one: it must be a
/// real folder (not a symbolic link) that belongs to this user. The runtime folder is then
/// made 0700 through a handle on the folder itself.
pub fn prepare_dir(dir: &Path, kind: FolderKind) -> io::Result<()> {
    imp::prepare_dir(dir, kind)
}

/// Opens `path` for appending, creating it 0600. Refuses a symbolic link (`O_NOFOLLOW`),
/// anything that is not a regular file, and a file of another user; tightens a looser mode.
pub fn open_append(path: &Path) -> io::Result<File> {
    imp::open_append(path)
}

/// Checks, without opening it, that `path` is absent or a regular file of this user (not a
/// symbolic link): what start-up says about a planted log file before anything is written.
pub fn check_file(path: &Path) -> io::Result<()> {
    imp::check_file(path)
}

/// Which file a handle or path is, whatever its name now: device and file number (inode on
/// Unix, volume serial and file index on Windows). A rotated log keeps its identity under its
/// new name; the new live file has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(u64, u64);

/// The identity of an open file.
pub fn identity(file: &File) -> io::Result<FileId> {
    imp::identity(file).map(|(a, b)| FileId(a, b))
}

/// The identity of the file `path` names now.
pub fn identity_at(path: &Path) -> io::Result<FileId> {
    imp::identity_at(path).map(|(a, b)| FileId(a, b))
}

/// An error that names `path` and says what is wrong and what to do.
fn refused(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: {what}; refusing to use it", path.display()),
    )
}
