//! Windows endpoint: a named pipe that rejects remote clients (interprocess sets
//! PIPE_REJECT_REMOTE_CLIENTS) and whose security descriptor admits only its owner.

use std::io;
use std::path::Path;

use interprocess::local_socket::{GenericNamespaced, ListenerOptions, Name, ToNsName};
use interprocess::os::windows::local_socket::ListenerOptionsExt;
use interprocess::os::windows::security_descriptor::SecurityDescriptor;

fn pipe_name(runtime_dir: &Path) -> String {
    format!(
        "backend-warden-{}-{:016x}",
        user_name().to_lowercase(),
        stable_hash(runtime_dir)
    )
}

/// The account this process runs as. Asked of Windows, not read from `%USERNAME%`: a process
/// started with another environment (an installer's custom action, `runas /env`, a script that
/// sets it) must still find the warden of the same account.
fn user_name() -> String {
    use windows_sys::Win32::System::WindowsProgramming::GetUserNameW;
    // UNLEN + 1: the longest user name and its NUL.
    let mut buf = [0u16; 257];
    let mut len = buf.len() as u32;
    // SAFETY: the buffer and its length in u16s are passed together; Windows writes at most
    // `len` units and sets `len` to the count written, NUL included.
    if unsafe { GetUserNameW(buf.as_mut_ptr(), &mut len) } != 0 && len > 0 {
        return String::from_utf16_lossy(&buf[..len as usize - 1]);
    }
    std::env::var("USERNAME").unwrap_or_default()
}

/// The endpoint's name for connecting.
pub fn endpoint(runtime_dir: &Path) -> io::Result<Name<'static>> {
    pipe_name(runtime_dir).to_ns_name::<GenericNamespaced>()
}

/// Before connecting: nothing to check, the pipe's security descriptor admits only its owner.
pub fn check_endpoint(_runtime_dir: &Path) -> Result<(), super::IpcError> {
    Ok(())
}

/// After connecting: the pipe admits only its owner; the server's PID for messages.
pub fn check_peer(
    stream: &interprocess::local_socket::Stream,
) -> Result<Option<u32>, super::IpcError> {
    use interprocess::local_socket::traits::StreamCommon;
    Ok(stream
        .peer_creds()
        .ok()
        .and_then(|creds| creds.pid())
        .and_then(|pid| u32::try_from(pid).ok()))
}

/// A named pipe's blocked read cannot be interrupted from another thread here: when the
/// server is full it answers "busy" instead of dropping the oldest connection.
pub struct Interrupt;

impl Interrupt {
    /// See above.
    pub const SUPPORTED: bool = false;

    /// Always a handle (that can do nothing).
    pub fn of(_conn: &interprocess::local_socket::Stream) -> Option<Interrupt> {
        Some(Interrupt)
    }

    /// Nothing to do.
    pub fn interrupt(self) {}
}

/// Nothing to prepare: pipes live in their own namespace.
pub fn prepare_runtime_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Listener options: full access for the pipe's owner (the current user), nobody else.
pub fn listener_options(runtime_dir: &Path) -> io::Result<ListenerOptions<'static>> {
    // D:P = protected DACL (no inherited entries); OW = owner rights.
    let sddl: Vec<u16> = "D:P(A;;GA;;;OW)".encode_utf16().chain([0]).collect();
    let sddl = widestring::U16CStr::from_slice(&sddl)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let sd = SecurityDescriptor::deserialize(sddl)?;
    Ok(ListenerOptions::new()
        .name(endpoint(runtime_dir)?)
        .security_descriptor(sd))
}

/// A stable 64-bit FNV-1a hash, so every build agrees on the pipe's name.
fn stable_hash(path: &Path) -> u64 {
    path.to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
