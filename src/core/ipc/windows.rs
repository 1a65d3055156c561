//! Windows endpoint: a named pipe that rejects remote clients (interprocess sets
//! PIPE_REJECT_REMOTE_CLIENTS) and whose security descriptor names the user's own SID as its
//! owner and as the only one allowed in. Not `OW` (Owner Rights): when a token's default owner
//! is the Administrators group (an elevated warden with UAC off), OW would let every
//! administrator in and keep the same user's non-elevated CLI out.
//!
//! The name is predictable, so a program could create it while no warden runs. The client
//! therefore checks who serves it (`GetNamedPipeServerProcessId`, then that process's token
//! user must be ours) and connects with identification-level impersonation only
//! (`SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION`), so a server can never act as the client.
//! The warden creates the first instance with FILE_FLAG_FIRST_PIPE_INSTANCE (interprocess does),
//! so it cannot join a name someone else holds: [`bind_error`] says so.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::Path;
use std::ptr;
use std::time::{Duration, Instant};

use interprocess::local_socket::{GenericNamespaced, ListenerOptions, Name, Stream, ToNsName};
use interprocess::os::windows::local_socket::ListenerOptionsExt;
use interprocess::os::windows::security_descriptor::SecurityDescriptor;
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_PIPE_BUSY, GENERIC_READ, GENERIC_WRITE, HANDLE, HLOCAL,
    INVALID_HANDLE_VALUE, LocalFree,
};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{
    EqualSid, GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
    SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{GetNamedPipeServerProcessId, WaitNamedPipeW};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// How long a client waits while every instance of the pipe is busy.
const BUSY_WAIT: Duration = Duration::from_secs(2);

fn pipe_name(runtime_dir: &Path) -> String {
    format!(
        "backend-warden-{}-{:016x}",
        user_name().to_lowercase(),
        stable_hash(runtime_dir)
    )
}

/// The pipe's full path, for messages.
pub fn endpoint_display(runtime_dir: &Path) -> String {
    format!(r"\\.\pipe\{}", pipe_name(runtime_dir))
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

/// Listener options: the current user owns the pipe and is the only one allowed in.
pub fn listener_options(runtime_dir: &Path) -> io::Result<ListenerOptions<'static>> {
    let sid = sid_string(&token_user(
        current_process_token()?.as_raw_handle() as HANDLE
    )?)?;
    let sd = SecurityDescriptor::deserialize(&sddl_u16(&owner_only_sddl(&sid))?)?;
    Ok(ListenerOptions::new()
        .name(endpoint(runtime_dir)?)
        .security_descriptor(sd))
}

/// The security descriptor in SDDL: owner `sid`, a protected DACL (no inherited entries) with
/// one entry, generic all for `sid`.
fn owner_only_sddl(sid: &str) -> String {
    format!("O:{sid}D:P(A;;GA;;;{sid})")
}

fn sddl_u16(sddl: &str) -> io::Result<widestring::U16CString> {
    widestring::U16CString::from_str(sddl)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// Why the warden could not create its pipe, in words: access denied on the first instance
/// means another program holds the name.
pub fn bind_error(runtime_dir: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another program has taken the name of the control pipe {} (no Backend Warden \
                 answers on it): end that program, or sign out and back in",
                endpoint_display(runtime_dir)
            ),
        )
    } else {
        e
    }
}

/// Connects to the warden's pipe: identification-level impersonation only, and only to a
/// server running as this user.
pub fn connect(runtime_dir: &Path, wait: Duration) -> io::Result<Stream> {
    let path = sddl_u16(&endpoint_display(runtime_dir))?;
    let deadline = crate::clock::later(Instant::now(), wait.min(BUSY_WAIT));
    let handle = loop {
        // SAFETY: the path is NUL-terminated; the handle is owned by OwnedHandle.
        let raw = unsafe {
            CreateFileW(
                path.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                ptr::null_mut(),
            )
        };
        if raw != INVALID_HANDLE_VALUE {
            // SAFETY: we just opened it.
            break unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) };
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(ERROR_PIPE_BUSY as i32) || Instant::now() >= deadline {
            return Err(e);
        }
        // SAFETY: the path is NUL-terminated.
        unsafe { WaitNamedPipeW(path.as_ptr(), 100) };
    };
    verify_server(&handle, runtime_dir)?;
    let stream = interprocess::os::windows::named_pipe::local_socket::Stream::try_from(handle)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Stream::from(stream))
}

/// Checks that the process serving the pipe runs as this user.
fn verify_server(pipe: &OwnedHandle, runtime_dir: &Path) -> io::Result<()> {
    let mut pid = 0u32;
    // SAFETY: plain Win32 calls on handles we own.
    unsafe {
        if GetNamedPipeServerProcessId(pipe.as_raw_handle() as HANDLE, &mut pid) == 0 {
            return Err(io::Error::last_os_error());
        }
        let refuse = |why: String| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to talk to the control pipe {}: {why}; another program may have \
                     taken its name",
                    endpoint_display(runtime_dir)
                ),
            )
        };
        let raw = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if raw.is_null() {
            let e = io::Error::last_os_error();
            return Err(refuse(format!(
                "its server (PID {pid}) cannot be inspected: {e}"
            )));
        }
        let process = OwnedHandle::from_raw_handle(raw as RawHandle);
        let mut token = ptr::null_mut();
        if OpenProcessToken(process.as_raw_handle() as HANDLE, TOKEN_QUERY, &mut token) == 0 {
            let e = io::Error::last_os_error();
            return Err(refuse(format!(
                "the account of its server (PID {pid}) cannot be read: {e}"
            )));
        }
        let token = OwnedHandle::from_raw_handle(token as RawHandle);
        let theirs = token_user(token.as_raw_handle() as HANDLE)?;
        let ours = token_user(current_process_token()?.as_raw_handle() as HANDLE)?;
        if EqualSid(sid_of(&ours), sid_of(&theirs)) == 0 {
            let who = sid_string(&theirs).unwrap_or_else(|_| "another account".into());
            return Err(refuse(format!(
                "its server (PID {pid}) runs as {who}, not as you"
            )));
        }
    }
    Ok(())
}

fn current_process_token() -> io::Result<OwnedHandle> {
    let mut token = ptr::null_mut();
    // SAFETY: the pseudo handle needs no closing; the token handle is owned by OwnedHandle.
    unsafe {
        if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedHandle::from_raw_handle(token as RawHandle))
    }
}

/// A token's TOKEN_USER, in a buffer of its own (the SID it points to lives in it).
fn token_user(token: HANDLE) -> io::Result<Vec<usize>> {
    let mut len = 0u32;
    // SAFETY: the first call asks for the size; the second writes at most `len` bytes into a
    // buffer aligned for TOKEN_USER.
    unsafe {
        GetTokenInformation(token, TokenUser, ptr::null_mut(), 0, &mut len);
        if len == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buffer = vec![0usize; (len as usize).div_ceil(size_of::<usize>())];
        if GetTokenInformation(token, TokenUser, buffer.as_mut_ptr().cast(), len, &mut len) == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(buffer)
    }
}

fn sid_of(token_user: &[usize]) -> windows_sys::Win32::Security::PSID {
    // SAFETY: the buffer holds a TOKEN_USER written by GetTokenInformation.
    unsafe { (*token_user.as_ptr().cast::<TOKEN_USER>()).User.Sid }
}

/// A SID in its string form (S-1-5-21-...).
fn sid_string(token_user: &[usize]) -> io::Result<String> {
    let mut text = ptr::null_mut();
    // SAFETY: the SID is valid while the buffer lives; the string is freed with LocalFree.
    unsafe {
        if ConvertSidToStringSidW(sid_of(token_user), &mut text) == 0 {
            return Err(io::Error::last_os_error());
        }
        let out = widestring::U16CStr::from_ptr_str(text).to_string_lossy();
        LocalFree(text as HLOCAL);
        Ok(out)
    }
}

/// A stable 64-bit FNV-1a hash, so every build agrees on the pipe's name.
fn stable_hash(path: &Path) -> u64 {
    path.to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_names_the_user_as_owner_and_only_entry() {
        assert_eq!(
            owner_only_sddl("S-1-5-21-1-2-3-1001"),
            "O:S-1-5-21-1-2-3-1001D:P(A;;GA;;;S-1-5-21-1-2-3-1001)"
        );
    }
}
