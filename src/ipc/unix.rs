//! Unix endpoint: a socket file in a folder only the user can enter (mode 0700), itself 0600.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use interprocess::local_socket::{
    ConnectOptions, GenericFilePath, ListenerOptions, Name, Stream, ToFsName,
};
use interprocess::os::unix::local_socket::ListenerOptionsExt;

/// The socket file.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("warden.sock")
}

/// The endpoint's name for connecting.
pub fn endpoint(runtime_dir: &Path) -> io::Result<Name<'static>> {
    socket_path(runtime_dir).to_fs_name::<GenericFilePath>()
}

/// Makes sure the runtime folder exists, belongs to us and is closed to others.
pub fn prepare_runtime_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.uid() != nix::unistd::getuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} belongs to another user", dir.display()),
        ));
    }
    if meta.mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
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

/// Connects to the warden's socket (the folder's mode keeps everyone else out).
pub fn connect(runtime_dir: &Path) -> io::Result<Stream> {
    ConnectOptions::new()
        .name(endpoint(runtime_dir)?)
        .connect_sync()
}

/// A bind error as it is: the caller holds the single-instance lock and a stale socket file
/// is replaced, so nobody else can hold the name.
pub fn bind_error(_runtime_dir: &Path, e: io::Error) -> io::Error {
    e
}
