//! Unix endpoint: a socket file in a folder only the user can enter (mode 0700), itself 0600.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::{GenericFilePath, ListenerOptions, Name, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;

/// The socket file.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("warden.sock")
}

/// The endpoint's name for connecting.
pub fn endpoint(runtime_dir: &Path) -> io::Result<Name<'static>> {
    socket_path(runtime_dir).to_fs_name::<GenericFilePath>()
}

/// Makes sure the runtime folder exists, is a real folder of ours (not a symbolic link) and
/// is closed to others.
pub fn prepare_runtime_dir(dir: &Path) -> io::Result<()> {
    crate::private_fs::prepare_dir(dir, crate::private_fs::FolderKind::Runtime)
}

/// Listener options: owner-only socket file; a stale file from a crashed warden is replaced
/// (the caller holds the single-instance lock, so nobody else is listening there).
pub fn listener_options(runtime_dir: &Path) -> io::Result<ListenerOptions<'static>> {
    let path = socket_path(runtime_dir);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(ListenerOptions::new()
        .name(path.to_fs_name::<GenericFilePath>()?)
        .mode(0o600))
}
