//! The console of a GUI-subsystem program. On Windows the exe is built for the GUI subsystem, so
//! no console window flashes up when it starts from the Start menu or at login; a CLI command
//! run from cmd or PowerShell then has no console of its own and must attach to the one it was
//! started from to print anything. Elsewhere there is nothing to do. This is the only
//! platform-specific code `main.rs` calls; may import `windows-sys` and nothing of the crate.
//!
//! What attaching cannot change: cmd and PowerShell do not wait for a GUI-subsystem program
//! typed at their prompt. The output appears (after the next prompt) and the program's exit
//! code is set, but the shell does not wait for it, so `%ERRORLEVEL%` / `$LASTEXITCODE` do not
//! see it. Batch files, `start /wait` and programs that run the exe and wait for it (scripts,
//! CI, tests) get the exit code. Only a console-subsystem exe makes an interactive prompt wait
//! (a second, console twin of this exe; or, from Windows 11 24H2, a console exe whose manifest
//! sets `consoleAllocationPolicy` to `detached`).

/// Connects standard output and error to the console of the process that started this one, if
/// it has one. Streams the parent redirected (to a file or a pipe) are kept as they are. Call it
/// first thing in `main`, and only for CLI commands: a tray started from a terminal would
/// otherwise die with that terminal.
pub fn attach_parent_console() {
    imp::attach_parent_console();
}

#[cfg(windows)]
mod imp {
    use std::ptr;

    use windows_sys::Win32::Foundation::{
        GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::Storage::FileSystem::{
        CreateFileW, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_TYPE_UNKNOWN, GetFileType,
        OPEN_EXISTING,
    };
    use windows_sys::Win32::System::Console::{
        ATTACH_PARENT_PROCESS, AttachConsole, GetStdHandle, STD_ERROR_HANDLE, STD_OUTPUT_HANDLE,
        SetStdHandle,
    };

    pub fn attach_parent_console() {
        let streams = [STD_OUTPUT_HANDLE, STD_ERROR_HANDLE];
        // SAFETY: plain Win32 calls on this process's own standard handles; a handle opened
        // here is handed to SetStdHandle and lives as long as the process.
        unsafe {
            let before = streams.map(|stream| GetStdHandle(stream));
            // Attached even when both streams are redirected, so that Ctrl+C in the terminal
            // reaches `run --headless` and `logs --follow`. Fails without a parent console
            // (Explorer, the Run key, a service): then there is nothing to print to anyway.
            if AttachConsole(ATTACH_PARENT_PROCESS) == 0 {
                return;
            }
            let mut console: HANDLE = ptr::null_mut();
            for (stream, old) in streams.into_iter().zip(before) {
                if usable(old) {
                    // Redirected by the parent (`> out.txt`, `| findstr`, a capturing script):
                    // keep it, whatever AttachConsole did to the standard handles.
                    SetStdHandle(stream, old);
                } else if !usable(GetStdHandle(stream)) {
                    if console.is_null() {
                        console = open_console_output();
                    }
                    if usable(console) {
                        SetStdHandle(stream, console);
                    }
                }
            }
        }
    }

    /// Whether a standard handle leads somewhere: a GUI-subsystem process may hold a null or
    /// stale value.
    fn usable(handle: HANDLE) -> bool {
        // SAFETY: GetFileType only inspects the handle; an invalid one yields FILE_TYPE_UNKNOWN.
        !handle.is_null()
            && handle != INVALID_HANDLE_VALUE
            && unsafe { GetFileType(handle) } != FILE_TYPE_UNKNOWN
    }

    fn open_console_output() -> HANDLE {
        let name: Vec<u16> = "CONOUT$\0".encode_utf16().collect();
        // SAFETY: a NUL-terminated name; the handle is owned by the standard streams afterwards.
        unsafe {
            CreateFileW(
                name.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                ptr::null(),
                OPEN_EXISTING,
                0,
                ptr::null_mut(),
            )
        }
    }
}

#[cfg(not(windows))]
mod imp {
    /// Unix programs inherit their terminal; macOS apps too.
    pub fn attach_parent_console() {}
}
