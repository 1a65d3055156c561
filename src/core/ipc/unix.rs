//! Unix endpoint: a socket file in a folder only the user can enter (mode 0700), itself 0600.
//! The client checks both (by `lstat`) and the serving process (`SO_PEERCRED` and its kin)
//! before it believes an answer.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use interprocess::ConnectWaitMode;
use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{
    ConnectOptions, GenericFilePath, ListenerOptions, Name, Stream, ToFsName,
};
use interprocess::os::unix::local_socket::ListenerOptionsExt;

use super::IpcError;

/// The longest socket path the OS takes (`sun_path` less its NUL): 107 bytes on Linux, 103 on
/// the BSDs and macOS.
#[cfg(any(target_os = "linux", target_os = "android"))]
const MAX_SOCKET_PATH: usize = 107;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const MAX_SOCKET_PATH: usize = 103;

/// The socket file.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("warden.sock")
}

/// The endpoint's name for connecting; an error that says so when the path is too long for
/// a socket.
pub fn endpoint(runtime_dir: &Path) -> io::Result<Name<'static>> {
    let path = socket_path(runtime_dir);
    check_length(&path)?;
    path.to_fs_name::<GenericFilePath>()
}

fn check_length(path: &Path) -> io::Result<()> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the control socket's path is too long for a socket ({len} bytes, the system \
                 allows {MAX_SOCKET_PATH}); set BACKEND_WARDEN_HOME to a shorter folder"
            ),
        ));
    }
    Ok(())
}

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Before connecting: the runtime folder must be a real folder of this user and the socket a
/// socket of this user (another user could have made them in a shared or world-writable home).
pub fn check_endpoint(runtime_dir: &Path) -> Result<(), IpcError> {
    let untrusted = |path: &Path, what: String| {
        IpcError::Untrusted(format!(
            "{}: {what}; not talking to it (remove it if it is not yours)",
            path.display()
        ))
    };
    let dir = match fs::symlink_metadata(runtime_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IpcError::NotRunning),
        Err(e) => return Err(IpcError::Io(e)),
    };
    if dir.file_type().is_symlink() {
        return Err(untrusted(runtime_dir, "is a symbolic link".into()));
    }
    if !dir.is_dir() {
        return Err(untrusted(runtime_dir, "is not a folder".into()));
    }
    if dir.uid() != my_uid() {
        return Err(untrusted(
            runtime_dir,
            format!("belongs to another user (uid {})", dir.uid()),
        ));
    }
    let path = socket_path(runtime_dir);
    let socket = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IpcError::NotRunning),
        Err(e) => return Err(IpcError::Io(e)),
    };
    if !socket.file_type().is_socket() {
        return Err(untrusted(&path, "is not a socket".into()));
    }
    if socket.uid() != my_uid() {
        return Err(untrusted(
            &path,
            format!("belongs to another user (uid {})", socket.uid()),
        ));
    }
    Ok(())
}

/// After connecting: the process serving the socket must run as this user. Its PID, when the
/// OS says.
pub fn check_peer(stream: &Stream) -> Result<Option<u32>, IpcError> {
    let creds = stream.peer_creds().map_err(IpcError::Io)?;
    match creds.euid() {
        Some(uid) if uid == my_uid() => {}
        Some(uid) => {
            return Err(IpcError::Untrusted(format!(
                "the control socket is served by a process of another user (uid {uid}); not \
                 believing its answer"
            )));
        }
        None => {
            return Err(IpcError::Untrusted(
                "the system does not say who serves the control socket; not believing its answer"
                    .into(),
            ));
        }
    }
    Ok(creds.pid().and_then(|pid| u32::try_from(pid).ok()))
}

/// Interrupts a connection's blocked read from another thread: a second handle on the same
/// socket, shut down when the server needs the room.
pub struct Interrupt(UnixStream);

impl Interrupt {
    /// Unix sockets can be shut down from any handle.
    pub const SUPPORTED: bool = true;

    /// A handle on `conn`'s socket; `None` if the descriptor cannot be duplicated.
    pub fn of(conn: &Stream) -> Option<Interrupt> {
        #[allow(irrefutable_let_patterns)]
        let Stream::UdSocket(inner) = conn else {
            return None;
        };
        let fd = inner.as_fd().try_clone_to_owned().ok()?;
        Some(Interrupt(UnixStream::from(fd)))
    }

    /// Ends the connection's reading: its pending read returns at once (end of file). The
    /// writing side stays open, so a request read just before still gets its answer.
    pub fn interrupt(self) {
        let _ = self.0.shutdown(std::net::Shutdown::Read);
    }
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
    check_length(&path)?;
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(ListenerOptions::new()
        .name(path.to_fs_name::<GenericFilePath>()?)
        .mode(0o600))
}

/// Connects to the warden's socket (the folder's mode keeps everyone else out).
/// Connects to the endpoint, waiting at most `wait` for the warden to accept.
pub fn connect(runtime_dir: &Path, wait: std::time::Duration) -> io::Result<Stream> {
    ConnectOptions::new()
        .name(endpoint(runtime_dir)?)
        .wait_mode(ConnectWaitMode::Timeout(wait))
        .connect_sync()
}

/// A bind error as it is: the caller holds the single-instance lock and a stale socket file
/// is replaced, so nobody else can hold the name.
pub fn bind_error(_runtime_dir: &Path, e: io::Error) -> io::Error {
    e
}
