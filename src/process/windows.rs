//! Windows process trees: the backend starts suspended, is put in a Job Object of its own
//! (kill-on-close: when the warden dies, for any reason, Windows kills the whole job), and only
//! then runs, so not even its first child can escape the job. It gets its own process group
//! (for CTRL_BREAK_EVENT) and no console window.
//!
//! Not process-wrap's `JobObject`: it drops the creation flags set alongside it
//! (watchexec/process-wrap#16, #19, #36), which would flash a console window at every start.
//!
//! A graceful stop is CTRL_BREAK_EVENT to the backend's process group. A console control event
//! only reaches processes attached to the sender's console, and the backend runs on a hidden
//! console of its own (CREATE_NO_WINDOW) while the warden has none (the tray) or another one
//! (a terminal). So the warden does not send it itself: a short-lived helper (this program's
//! hidden `__guardian` subcommand, which on Unix is the tree guardian) detaches from any
//! console, attaches to the backend's, sends the event and exits. Juggling consoles in the
//! warden itself would cut its own output off meanwhile and race with its Ctrl+C handler.
use std::io::{self, BufRead, Read, Write};
use std::mem::size_of;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::os::windows::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Console::{
    AttachConsole, CTRL_BREAK_EVENT, FreeConsole, GenerateConsoleCtrlEvent, GetStdHandle,
    STD_ERROR_HANDLE, SetConsoleCtrlHandler, SetStdHandle,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectBasicAccountingInformation, JobObjectExtendedLimitInformation,
    QueryInformationJobObject, SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, CREATE_SUSPENDED, GetExitCodeProcess, INFINITE,
    OpenProcess, OpenThread, PROCESS_QUERY_INFORMATION, PROCESS_SET_QUOTA, PROCESS_SYNCHRONIZE,
    PROCESS_TERMINATE, ResumeThread, THREAD_SUSPEND_RESUME, WaitForSingleObject,
};

use crate::supervisor::{ExitStatus, Pid};

/// The hidden subcommand of the helper process. On Windows it delivers CTRL_BREAK_EVENT to a
/// backend's console (see the module comment); the Job Object needs no guardian.
pub const GUARDIAN_SUBCOMMAND: &str = "__guardian";

/// How long the warden waits for the CTRL_BREAK helper; it normally needs a few milliseconds
/// beyond its own start.
const BREAK_HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// A backend tree: the Job Object holding it.
#[derive(Debug)]
pub struct Tree {
    job: Arc<OwnedHandle>,
    pid: Pid,
    /// Whether the main process leads a process group of its own, so that CTRL_BREAK_EVENT
    /// can be sent to exactly its tree. True for the backends the warden launches.
    own_group: bool,
}

/// Waits for the backend's main process; moved to a thread of its own.
#[derive(Debug)]
pub enum ExitWaiter {
    /// Our child.
    Child(Child),
    /// An adopted process, by its handle.
    Adopted(OwnedHandle),
}

impl ExitWaiter {
    /// Blocks until the main process exits.
    pub fn wait(self) -> io::Result<ExitStatus> {
        self.wait_then(|| {})
    }

    /// Blocks until the main process exits, then calls `on_exit` (our handle keeps its
    /// process ID from being reused meanwhile).
    pub fn wait_then(self, on_exit: impl FnOnce()) -> io::Result<ExitStatus> {
        match self {
            ExitWaiter::Child(mut child) => {
                let status = child.wait()?;
                on_exit();
                Ok(ExitStatus {
                    code: status.code(),
                    signal: None,
                })
            }
            ExitWaiter::Adopted(process) => {
                let mut code: u32 = 0;
                // SAFETY: the handle is valid and owned; plain Win32 calls.
                unsafe {
                    if WaitForSingleObject(handle(&process), INFINITE) != WAIT_OBJECT_0 {
                        return Err(io::Error::last_os_error());
                    }
                    if GetExitCodeProcess(handle(&process), &mut code) == 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                on_exit();
                Ok(ExitStatus {
                    code: Some(code as i32),
                    signal: None,
                })
            }
        }
    }
}

/// Takes charge of a running process: it goes into a new kill-on-close job (processes it
/// starts from now on follow it there; children it already had do not).
pub fn adopt(pid: Pid) -> io::Result<(Tree, ExitWaiter)> {
    // SAFETY: plain Win32 calls; handles are owned by OwnedHandle.
    unsafe {
        let raw = OpenProcess(
            PROCESS_SET_QUOTA | PROCESS_TERMINATE | PROCESS_QUERY_INFORMATION | PROCESS_SYNCHRONIZE,
            0,
            pid,
        );
        if raw.is_null() {
            return Err(io::Error::last_os_error());
        }
        let process = OwnedHandle::from_raw_handle(raw as RawHandle);
        let job = new_job()?;
        if AssignProcessToJobObject(handle(&job), handle(&process)) == 0 {
            return Err(io::Error::last_os_error());
        }
        let tree = Tree {
            job: Arc::new(job),
            pid,
            own_group: false,
        };
        Ok((tree, ExitWaiter::Adopted(process)))
    }
}

/// The child starts suspended and runs only once it is in the job (see `launched`), so the
/// job covers it from its first instruction; `_guard` has nothing to do.
pub(super) fn prepare(command: &mut Command, _guard: &mut TreeGuard) -> Launch {
    command.creation_flags(CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP | CREATE_SUSPENDED);
    Launch
}

/// A launch under way (nothing to remember on Windows).
#[derive(Debug)]
pub(super) struct Launch;

pub(super) fn not_launched(_launch: Launch, _guard: &mut TreeGuard) {}

pub(super) fn launched(
    mut child: Child,
    _launch: Launch,
    _guard: &mut TreeGuard,
) -> io::Result<(Pid, Tree, ExitWaiter)> {
    let pid = child.id();
    match into_job(&child) {
        Ok(job) => {
            let tree = Tree {
                job: Arc::new(job),
                pid,
                own_group: true,
            };
            Ok((pid, tree, ExitWaiter::Child(child)))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// A new Job Object that kills its processes when its last handle closes.
fn new_job() -> io::Result<OwnedHandle> {
    // SAFETY: plain Win32 calls; the handle is owned by OwnedHandle.
    unsafe {
        let raw = CreateJobObjectW(ptr::null(), ptr::null());
        if raw.is_null() {
            return Err(io::Error::last_os_error());
        }
        let job = OwnedHandle::from_raw_handle(raw as RawHandle);
        let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        if SetInformationJobObject(
            handle(&job),
            JobObjectExtendedLimitInformation,
            (&raw const limits).cast(),
            size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        ) == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(job)
    }
}

fn into_job(child: &Child) -> io::Result<OwnedHandle> {
    // SAFETY: plain Win32 calls on handles we own.
    unsafe {
        let job = new_job()?;
        if AssignProcessToJobObject(handle(&job), child.as_raw_handle() as HANDLE) == 0 {
            return Err(io::Error::last_os_error());
        }
        resume_threads(child.id())?;
        Ok(job)
    }
}

fn handle(h: &OwnedHandle) -> HANDLE {
    h.as_raw_handle() as HANDLE
}

/// Resumes the (only) thread of a process started suspended.
unsafe fn resume_threads(pid: Pid) -> io::Result<()> {
    // SAFETY: the snapshot handle is closed before returning; THREADENTRY32 is plain data.
    unsafe {
        let snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
        if snapshot == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        let mut entry: THREADENTRY32 = std::mem::zeroed();
        entry.dwSize = size_of::<THREADENTRY32>() as u32;
        let mut resumed = 0;
        let mut ok = Thread32First(snapshot, &mut entry);
        while ok != 0 {
            if entry.th32OwnerProcessID == pid {
                let thread = OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID);
                if !thread.is_null() {
                    if ResumeThread(thread) != u32::MAX {
                        resumed += 1;
                    }
                    CloseHandle(thread);
                }
            }
            ok = Thread32Next(snapshot, &mut entry);
        }
        CloseHandle(snapshot);
        if resumed == 0 {
            return Err(io::Error::other(
                "could not resume the backend's main thread",
            ));
        }
        Ok(())
    }
}

/// Kills a tree from another thread (see [`Tree::killer`]).
#[derive(Debug, Clone)]
pub struct TreeKiller {
    job: Arc<OwnedHandle>,
}

impl TreeKiller {
    /// Kills every process in the job.
    pub fn kill(&self) {
        // SAFETY: the job handle stays valid while this Arc holds it.
        let _ = unsafe { TerminateJobObject(handle(&self.job), 1) };
    }
}

impl Tree {
    /// The main process's ID.
    pub fn id(&self) -> Pid {
        self.pid
    }

    /// A handle that kills this tree, for the thread that waits for its leader.
    pub fn killer(&self) -> TreeKiller {
        TreeKiller {
            job: Arc::clone(&self.job),
        }
    }

    /// Asks the tree to stop: CTRL_BREAK_EVENT to the backend's process group, on the
    /// backend's console, through the helper process (uvicorn handles it as a shutdown
    /// request; a program without a handler exits at once). Fails for a backend without a
    /// console (a GUI program), which is then killed when the grace period ends.
    pub fn terminate(&self) -> io::Result<()> {
        if !self.own_group {
            // An adopted process was started by someone else and is no group leader: a
            // CTRL_BREAK_EVENT for its PID would reach every process on its console (the
            // user's terminal, shell included).
            return Err(io::Error::other(
                "an adopted backend has no process group of its own to send Ctrl+Break to; \
                 it is killed when the grace period ends",
            ));
        }
        send_ctrl_break(self.pid)
    }

    /// Kills every process in the job.
    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: the job handle is valid for self's lifetime.
        if unsafe { TerminateJobObject(handle(&self.job), 1) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Lets the tree outlive the warden: the job stops killing its processes on close.
    pub fn release(self) -> io::Result<()> {
        // SAFETY: the job handle is valid; the struct is plain data of the size given.
        unsafe {
            let limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
            if SetInformationJobObject(
                handle(&self.job),
                JobObjectExtendedLimitInformation,
                (&raw const limits).cast(),
                size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            ) == 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// True once the job has no process left.
    pub fn is_gone(&self) -> bool {
        // SAFETY: the job handle is valid; the out struct is plain data of the size given.
        unsafe {
            let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = std::mem::zeroed();
            let ok = QueryInformationJobObject(
                handle(&self.job),
                JobObjectBasicAccountingInformation,
                (&raw mut info).cast(),
                size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                ptr::null_mut(),
            );
            ok != 0 && info.ActiveProcesses == 0
        }
    }
}

/// Kill-on-close Job Objects already kill the trees when the warden dies; nothing to run.
#[derive(Debug)]
pub struct TreeGuard;

impl TreeGuard {
    /// Nothing to start on Windows.
    pub fn start() -> io::Result<TreeGuard> {
        Ok(TreeGuard)
    }

    /// Nothing to record: a kill-on-close job dies with the warden, trees and all.
    pub fn record_in(&mut self, _runtime_dir: &std::path::Path) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// The job does it.
    pub fn watch(&mut self, _tree: &Tree) -> io::Result<()> {
        Ok(())
    }

    /// The job does it.
    pub fn forget(&mut self, _tree: &Tree) -> io::Result<()> {
        Ok(())
    }
}

/// Runs the helper that delivers CTRL_BREAK_EVENT ([`guardian_main`]) for `group` and waits
/// for its answer.
fn send_ctrl_break(group: Pid) -> io::Result<()> {
    let mut helper = Command::new(super::main_program()?)
        .arg(GUARDIAN_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .creation_flags(CREATE_NO_WINDOW)
        .spawn()?;
    let sent = match helper.stdin.take() {
        Some(mut stdin) => writeln!(stdin, "break {group}"),
        None => Err(io::Error::other("the helper has no stdin")),
    };
    // SAFETY: the handle belongs to `helper`, alive until the end of this function.
    let waited = unsafe {
        WaitForSingleObject(
            helper.as_raw_handle() as HANDLE,
            BREAK_HELPER_TIMEOUT.as_millis() as u32,
        )
    };
    if waited == WAIT_TIMEOUT {
        let _ = helper.kill();
        let _ = helper.wait();
        return Err(io::Error::other(
            "the Ctrl+Break helper did not answer in time",
        ));
    }
    sent?;
    let status = helper.wait()?;
    if status.success() {
        return Ok(());
    }
    let mut why = String::new();
    if let Some(mut stderr) = helper.stderr.take() {
        let _ = stderr.read_to_string(&mut why);
    }
    Err(io::Error::other(format!(
        "Ctrl+Break not delivered: {}",
        why.trim().trim_start_matches("backend-warden: ")
    )))
}

/// The helper process: reads `break PID` from stdin and sends CTRL_BREAK_EVENT to process group
/// PID on that process's console. Exit code 0 when sent, 1 when not (why on stderr), 2 on bad
/// input.
pub fn guardian_main() -> i32 {
    let mut line = String::new();
    let _ = io::stdin().lock().read_line(&mut line);
    let Some(group) = line
        .trim()
        .strip_prefix("break ")
        .and_then(|pid| pid.parse::<Pid>().ok())
    else {
        eprintln!("backend-warden: {GUARDIAN_SUBCOMMAND}: expected `break PID` on stdin");
        return 2;
    };
    match ctrl_break_on_console_of(group) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("backend-warden: {e}");
            1
        }
    }
}

/// Ignores every console control event: the helper shares the backend's console while it
/// sends the event and must not be stopped by it.
unsafe extern "system" fn ignore_control_event(_event: u32) -> windows_sys::core::BOOL {
    1
}

fn ctrl_break_on_console_of(group: Pid) -> io::Result<()> {
    // SAFETY: plain Win32 calls on this process's own console state and standard handles.
    unsafe {
        // Attaching may replace the standard handles; stderr (a pipe to the warden) must
        // survive it to carry an error message back.
        let stderr = GetStdHandle(STD_ERROR_HANDLE);
        // The helper may have attached to the warden's console at start (main does that for
        // every command); a process can be attached to one console at a time.
        FreeConsole();
        let result = if AttachConsole(group) == 0 {
            let e = io::Error::last_os_error();
            Err(io::Error::new(
                e.kind(),
                format!("cannot attach to the console of PID {group} (it may have none): {e}"),
            ))
        } else {
            SetConsoleCtrlHandler(Some(ignore_control_event), 1);
            let sent = if GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, group) == 0 {
                let e = io::Error::last_os_error();
                Err(io::Error::new(
                    e.kind(),
                    format!("GenerateConsoleCtrlEvent for process group {group}: {e}"),
                ))
            } else {
                Ok(())
            };
            FreeConsole();
            sent
        };
        SetStdHandle(STD_ERROR_HANDLE, stderr);
        result
    }
}
