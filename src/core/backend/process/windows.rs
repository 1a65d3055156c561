//! Windows process trees: the backend starts suspended, is put in a Job Object of its own
//! (kill-on-close: when the warden dies, for any reason, Windows kills the whole job), and only
//! then runs, so not even its first child can escape the job. It gets a hidden console of its
//! own (CREATE_NO_WINDOW) and no window.
//!
//! Not process-wrap's `JobObject`: it drops the creation flags set alongside it
//! (watchexec/process-wrap#16, #19, #36), which would flash a console window at every start.
//!
//! No CREATE_NEW_PROCESS_GROUP: per the `CreateProcess` documentation it makes the new process
//! ignore Ctrl+C (an implicit `SetConsoleCtrlHandler(NULL, TRUE)`, inherited by all its
//! children), and uvicorn's reloader (>= 0.22) restarts its worker on every code change by
//! sending it CTRL_C_EVENT and joining it: in a group of its own that worker would never stop.
//! The warden clears that inheritable attribute in itself before each launch, in case whoever
//! started the warden set it.
//!
//! A graceful stop is the ladder of [`super::ladder`]: Ctrl+C to every process on the backend's
//! console, Ctrl+Break a little later, the Job Object kill when the grace period ends (or at
//! once when nothing can be delivered: the helper says so, and the supervisor orders the kill). A console control event only reaches processes
//! attached to the sender's console, and the backend runs on its own hidden console while the
//! warden has none (the tray) or another one (a terminal). So the warden does not send events
//! itself: a short-lived helper (this program's hidden `__guardian` subcommand, which on Unix
//! is the tree guardian) detaches from any console, attaches to the console of a live process
//! of the job, runs the ladder and reports each step on stdout. Juggling consoles in the
//! warden itself would cut its own output off meanwhile and race with its Ctrl+C handler.
use std::io::{self, BufRead, BufReader, Write};
use std::mem::size_of;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::os::windows::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::ptr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, FILETIME, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
};
use windows_sys::Win32::System::Console::{
    AttachConsole, CTRL_BREAK_EVENT, CTRL_C_EVENT, FreeConsole, GenerateConsoleCtrlEvent,
    GetConsoleProcessList, GetStdHandle, STD_ERROR_HANDLE, STD_OUTPUT_HANDLE,
    SetConsoleCtrlHandler, SetStdHandle,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
    TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_BASIC_PROCESS_ID_LIST,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectBasicAccountingInformation,
    JobObjectBasicProcessIdList, JobObjectExtendedLimitInformation, QueryInformationJobObject,
    SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NO_WINDOW, CREATE_SUSPENDED, GetExitCodeProcess, GetProcessTimes, INFINITE, OpenProcess,
    OpenThread, PROCESS_QUERY_INFORMATION, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SET_QUOTA,
    PROCESS_SYNCHRONIZE, PROCESS_TERMINATE, ResumeThread, THREAD_SUSPEND_RESUME, TerminateProcess,
    WaitForSingleObject,
};

use super::Asked;
use super::family::{self, Entry};
use super::ladder::{Console, Ladder, Outcome, Rung, Seen, Sent};
use crate::engine::supervisor::{ExitStatus, Pid};

/// The hidden subcommand of the helper process. On Windows it runs the stop ladder on a
/// backend's console (see the module comment); the Job Object needs no guardian.
pub const GUARDIAN_SUBCOMMAND: &str = "__guardian";

/// What to do about a port the system will not let anyone bind (WSAEACCES, 10013): Hyper-V,
/// WSL and Docker reserve ranges of ports, which change at every boot.
pub const FORBIDDEN_PORT_HINT: &str = "Windows reserves it (Hyper-V, WSL or Docker exclude \
    ranges of ports, which can change at every boot): see `netsh int ipv4 show \
    excludedportrange protocol=tcp` and choose a backend.port outside those ranges";

/// How long the warden waits for the stop helper's first decision; it normally needs a few
/// milliseconds beyond its own start.
const STOP_HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the helper looks whether anyone but itself is still on the backend's console.
const CONSOLE_POLL: Duration = Duration::from_millis(50);

/// A backend tree: the Job Object holding it.
#[derive(Debug)]
pub struct Tree {
    job: Arc<OwnedHandle>,
    /// Processes of an adopted tree that could not join the job: killed one by one.
    outside: Arc<Vec<OwnedHandle>>,
    pid: Pid,
    /// Whether the warden started it on a console of its own. An adopted backend may share
    /// the user's terminal, where Ctrl+C would reach the shell and everything else on it.
    own_console: bool,
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
/// starts from now on follow it there), and so do the descendants it already had, found in a
/// process snapshot ([`family::descendants`]: no stale parent links). A descendant that cannot
/// join the job (another job forbids it) is held by handle and killed with the tree.
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
        let mut outside = Vec::new();
        let snapshot = process_snapshot().unwrap_or_default();
        let descendants = family::descendants(pid, &snapshot);
        for entry in snapshot.iter().filter(|e| descendants.contains(&e.pid)) {
            if let Some(child) = open_same_process(entry)
                && AssignProcessToJobObject(handle(&job), handle(&child)) == 0
            {
                outside.push(child);
            }
        }
        let tree = Tree {
            job: Arc::new(job),
            outside: Arc::new(outside),
            pid,
            own_console: false,
        };
        Ok((tree, ExitWaiter::Adopted(process)))
    }
}

/// The child starts suspended and runs only once it is in the job (see `launched`), so the
/// job covers it from its first instruction; `_guard` has nothing to do. It gets a hidden
/// console of its own, in the warden's process group, and handles Ctrl+C (see the module
/// comment).
pub(super) fn prepare(command: &mut Command, _guard: &mut TreeGuard) -> Launch {
    // SAFETY: plain Win32 call. With a NULL handler, FALSE clears this process's inheritable
    // "ignore Ctrl+C" attribute (handlers the warden registered still run).
    unsafe { SetConsoleCtrlHandler(None, 0) };
    command.creation_flags(CREATE_NO_WINDOW | CREATE_SUSPENDED);
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
                outside: Arc::default(),
                pid,
                own_console: true,
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
    outside: Arc<Vec<OwnedHandle>>,
}

impl TreeKiller {
    /// Kills every process in the job, and those held outside it.
    pub fn kill(&self) {
        // SAFETY: the handles stay valid while these Arcs hold them.
        unsafe {
            let _ = TerminateJobObject(handle(&self.job), 1);
            for process in self.outside.iter() {
                TerminateProcess(handle(process), 1);
            }
        }
    }
}

/// The process table: each process, the parent it names, its creation time.
fn process_snapshot() -> io::Result<Vec<Entry>> {
    // SAFETY: the snapshot handle is closed before returning; PROCESSENTRY32W is plain data.
    unsafe {
        let snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
        if snapshot == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        let mut entry: PROCESSENTRY32W = std::mem::zeroed();
        entry.dwSize = size_of::<PROCESSENTRY32W>() as u32;
        let mut out = Vec::new();
        let mut ok = Process32FirstW(snapshot, &mut entry);
        while ok != 0 {
            out.push(Entry {
                pid: entry.th32ProcessID,
                parent: entry.th32ParentProcessID,
                started: creation_time(entry.th32ProcessID),
            });
            ok = Process32NextW(snapshot, &mut entry);
        }
        CloseHandle(snapshot);
        Ok(out)
    }
}

/// A process's creation time (FILETIME ticks), if it can be opened.
fn creation_time(pid: Pid) -> Option<u64> {
    // SAFETY: plain Win32 calls; the handle is owned by OwnedHandle.
    unsafe {
        let raw = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if raw.is_null() {
            return None;
        }
        let process = OwnedHandle::from_raw_handle(raw as RawHandle);
        process_created(&process)
    }
}

fn process_created(process: &OwnedHandle) -> Option<u64> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the handle is valid; the out values are plain data.
    let ok = unsafe {
        GetProcessTimes(
            handle(process),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    (ok != 0).then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

/// Opens the process of a snapshot entry to put it in a job or kill it, if its PID still
/// names the same process (same creation time).
fn open_same_process(entry: &Entry) -> Option<OwnedHandle> {
    // SAFETY: plain Win32 calls; the handle is owned by OwnedHandle.
    unsafe {
        let raw = OpenProcess(
            PROCESS_SET_QUOTA
                | PROCESS_TERMINATE
                | PROCESS_QUERY_LIMITED_INFORMATION
                | PROCESS_SYNCHRONIZE,
            0,
            entry.pid,
        );
        if raw.is_null() {
            return None;
        }
        let process = OwnedHandle::from_raw_handle(raw as RawHandle);
        (entry.started.is_some() && process_created(&process) == entry.started).then_some(process)
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
            outside: Arc::clone(&self.outside),
        }
    }

    /// Asks the tree to stop: the stop ladder (Ctrl+C, then Ctrl+Break) on the backend's
    /// console, through the helper process, which goes on by itself after its first answer.
    /// [`Asked::Unreachable`] when nothing can reach the backend (no console: a GUI program;
    /// or no event could be sent): waiting for the grace period would be for nothing.
    pub fn terminate(&self, grace: Duration) -> io::Result<Asked> {
        if !self.own_console {
            return Ok(Asked::Unreachable(
                "an adopted backend may share its console with other programs (a terminal and \
                 its shell), which Ctrl+C would reach too"
                    .into(),
            ));
        }
        let pids = self.pids()?;
        if pids.is_empty() {
            return Ok(Asked::Unreachable(
                "no process of the backend is left".into(),
            ));
        }
        run_stop_helper(self.pid, &pids, Ladder::for_grace(grace))
    }

    /// The IDs of the processes in the job, the main process first when it still runs.
    fn pids(&self) -> io::Result<Vec<Pid>> {
        const MAX: usize = 1024;
        // The struct is two u32 counters and then the IDs: one usize of header, MAX of IDs.
        let mut buffer = vec![0usize; 1 + MAX];
        // SAFETY: the buffer is aligned for the struct and as large as the size given.
        let list = unsafe {
            if QueryInformationJobObject(
                handle(&self.job),
                JobObjectBasicProcessIdList,
                buffer.as_mut_ptr().cast(),
                (buffer.len() * size_of::<usize>()) as u32,
                ptr::null_mut(),
            ) == 0
            {
                return Err(io::Error::last_os_error());
            }
            &*buffer.as_ptr().cast::<JOBOBJECT_BASIC_PROCESS_ID_LIST>()
        };
        let n = (list.NumberOfProcessIdsInList as usize).min(MAX);
        let mut pids: Vec<Pid> = buffer[1..=n].iter().map(|&id| id as Pid).collect();
        pids.sort_by_key(|&id| id != self.pid);
        Ok(pids)
    }

    /// Kills every process in the job, and those held outside it.
    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: the handles are valid for self's lifetime.
        unsafe {
            for process in self.outside.iter() {
                TerminateProcess(handle(process), 1);
            }
            if TerminateJobObject(handle(&self.job), 1) == 0 {
                return Err(io::Error::last_os_error());
            }
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
            ok != 0
                && info.ActiveProcesses == 0
                && self
                    .outside
                    .iter()
                    .all(|p| WaitForSingleObject(handle(p), 0) == WAIT_OBJECT_0)
        }
    }
}

/// Waits (at most `limit`) until process `pid` has ended; true if it did (or cannot be
/// opened: it is gone already). Once it is, its program file is no longer in use.
pub fn wait_gone(pid: Pid, limit: Duration) -> bool {
    // SAFETY: plain Win32 calls; the handle is owned by OwnedHandle.
    unsafe {
        let raw = OpenProcess(PROCESS_SYNCHRONIZE, 0, pid);
        if raw.is_null() {
            return true;
        }
        let process = OwnedHandle::from_raw_handle(raw as RawHandle);
        let ms = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX - 1);
        WaitForSingleObject(handle(&process), ms) == WAIT_OBJECT_0
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

/// Starts the stop helper ([`guardian_main`]) for the job's processes `pids` and waits for its
/// first decision: it has sent Ctrl+C and now waits (the rest of the ladder runs on its own, a
/// thread here logs it and reaps the helper), or the backend has stopped already, or nothing
/// can reach it.
fn run_stop_helper(main: Pid, pids: &[Pid], ladder: Ladder) -> io::Result<Asked> {
    let mut helper = Command::new(crate::paths::main_program()?)
        .arg(GUARDIAN_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .creation_flags(CREATE_NO_WINDOW)
        .spawn()?;
    let request = format!(
        "stop {} {}",
        ladder.break_after.as_millis(),
        pids.iter()
            .map(Pid::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let sent = match helper.stdin.take() {
        Some(mut stdin) => writeln!(stdin, "{request}"),
        None => Err(io::Error::other("the stop helper has no stdin")),
    };
    let Some(stdout) = helper.stdout.take() else {
        let _ = helper.kill();
        let _ = helper.wait();
        return Err(io::Error::other("the stop helper has no stdout"));
    };
    if let Err(e) = sent {
        let _ = helper.kill();
        let _ = helper.wait();
        return Err(e);
    }
    let (lines, answers) = mpsc::channel();
    thread::Builder::new()
        .name(format!("stop-{main}"))
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match HelperLine::parse(&line) {
                    HelperLine::Note(note) => tracing::info!(pid = main, "stop: {note}"),
                    decision => {
                        // The warden may have stopped listening (timeout): then only logged.
                        let _ = lines.send(decision);
                    }
                }
            }
            let _ = helper.wait();
        })?;
    let deadline = Instant::now() + STOP_HELPER_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match answers.recv_timeout(left) {
            Ok(HelperLine::Waiting) | Ok(HelperLine::Done) => return Ok(Asked::Sent),
            Ok(HelperLine::Unreachable(why)) => return Ok(Asked::Unreachable(why)),
            Ok(HelperLine::Note(_)) => {}
            Ok(HelperLine::Other(line)) => {
                return Err(io::Error::other(format!("the stop helper said: {line}")));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(io::Error::other("the stop helper did not answer in time"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other("the stop helper ended without an answer"));
            }
        }
    }
}

/// One line of the stop helper's report.
#[derive(Debug, PartialEq, Eq)]
enum HelperLine {
    /// `note TEXT`: a step, for the log.
    Note(String),
    /// `wait`: the first event went out, the helper watches the console.
    Waiting,
    /// `done ...`: nobody is left on the console, or the events went out.
    Done,
    /// `unreachable WHY`: nothing can reach the backend.
    Unreachable(String),
    /// Anything else.
    Other(String),
}

impl HelperLine {
    fn parse(line: &str) -> HelperLine {
        let line = line.trim_end();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "note" => HelperLine::Note(rest.to_string()),
            "wait" => HelperLine::Waiting,
            "done" => HelperLine::Done,
            "unreachable" => HelperLine::Unreachable(rest.to_string()),
            _ => HelperLine::Other(line.to_string()),
        }
    }
}

/// The stop helper: reads `stop BREAK_AFTER_MS PID...` from stdin and runs the stop ladder on
/// the console of the first of those processes it can attach to, reporting on stdout (see
/// [`HelperLine`]). Exit code 0 after a report, 2 on bad input.
pub fn guardian_main() -> i32 {
    let mut line = String::new();
    let _ = io::stdin().lock().read_line(&mut line);
    let mut words = line.split_whitespace();
    let request = match (words.next(), words.next().map(str::parse::<u64>)) {
        (Some("stop"), Some(Ok(ms))) => words
            .map(str::parse::<Pid>)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .map(|pids| (Duration::from_millis(ms), pids)),
        _ => None,
    };
    let Some((break_after, pids)) = request else {
        eprintln!("backend-warden: {GUARDIAN_SUBCOMMAND}: expected `stop MS PID...` on stdin");
        return 2;
    };
    run_ladder(Ladder { break_after }, &pids);
    0
}

/// Prints one report line and flushes it (the warden reads them as they come).
fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run_ladder(ladder: Ladder, pids: &[Pid]) {
    let start = Instant::now();
    let mut seen = Seen::default();
    let mut said_wait = false;
    loop {
        match ladder.next(&seen, start.elapsed()) {
            Rung::Attach => {
                seen.console = match attach_to_any(pids) {
                    Some(pid) => {
                        report(&format!("note attached to the console of PID {pid}"));
                        Console::Attached
                    }
                    None => Console::None,
                };
                seen.others_attached = others_on_console();
            }
            Rung::CtrlC => {
                seen.ctrl_c = send_event(CTRL_C_EVENT, "Ctrl+C");
                seen.others_attached = others_on_console();
            }
            Rung::CtrlBreak => {
                seen.ctrl_break = send_event(CTRL_BREAK_EVENT, "Ctrl+Break");
                seen.others_attached = others_on_console();
            }
            Rung::WaitUntil(until) => {
                if !said_wait {
                    report("wait");
                    said_wait = true;
                }
                while seen.others_attached && start.elapsed() < until {
                    thread::sleep(CONSOLE_POLL.min(until.saturating_sub(start.elapsed())));
                    seen.others_attached = others_on_console();
                }
            }
            Rung::Done(Outcome::Stopped) => {
                report("note nobody is left on the backend's console");
                report("done stopped");
                return;
            }
            Rung::Done(Outcome::HandedOver) => {
                report("done the rest is the grace period's");
                return;
            }
            Rung::Done(Outcome::Unreachable(why)) => {
                report(&format!("unreachable {why}"));
                return;
            }
        }
    }
}

/// Ignores every console control event: the helper shares the backend's console while it
/// sends the events and must not be stopped by them.
unsafe extern "system" fn ignore_control_event(_event: u32) -> windows_sys::core::BOOL {
    1
}

/// Attaches this process to the console of the first of `pids` that has one; its PID.
fn attach_to_any(pids: &[Pid]) -> Option<Pid> {
    // SAFETY: plain Win32 calls on this process's own console state and standard handles.
    unsafe {
        // Attaching may replace the standard handles; stdout (a pipe to the warden) must
        // survive it to carry the report.
        let stdout = GetStdHandle(STD_OUTPUT_HANDLE);
        let stderr = GetStdHandle(STD_ERROR_HANDLE);
        // A process can be attached to one console at a time: leave the hidden one this
        // helper may have got at start.
        FreeConsole();
        let mut attached = None;
        for &pid in pids {
            if AttachConsole(pid) != 0 {
                attached = Some(pid);
                break;
            }
            let e = io::Error::last_os_error();
            report(&format!(
                "note cannot attach to the console of PID {pid}: {e}"
            ));
        }
        SetStdHandle(STD_OUTPUT_HANDLE, stdout);
        SetStdHandle(STD_ERROR_HANDLE, stderr);
        if attached.is_some() {
            SetConsoleCtrlHandler(Some(ignore_control_event), 1);
        }
        attached
    }
}

/// Sends a console control event to every process on the console this helper is attached to.
fn send_event(event: u32, name: &str) -> Sent {
    // SAFETY: plain Win32 call. Process group 0: every process on the console (Ctrl+C cannot
    // be limited to a group anyway).
    if unsafe { GenerateConsoleCtrlEvent(event, 0) } != 0 {
        report(&format!("note {name} sent to the backend's console"));
        Sent::Delivered
    } else {
        let e = io::Error::last_os_error();
        report(&format!(
            "note {name} not delivered: GenerateConsoleCtrlEvent: {e}"
        ));
        Sent::Failed
    }
}

/// Whether any process other than this helper is attached to its console.
fn others_on_console() -> bool {
    let mut ids = [0u32; 64];
    // SAFETY: the buffer holds as many IDs as the count given.
    let n = unsafe { GetConsoleProcessList(ids.as_mut_ptr(), ids.len() as u32) } as usize;
    if n == 0 {
        // Failed: unknown, so assume someone is (a wait is bounded, a wrong "stopped" is not).
        return true;
    }
    if n > ids.len() {
        // More than fit: certainly someone else.
        return true;
    }
    let me = std::process::id();
    ids[..n].iter().any(|&id| id != me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_lines() {
        assert_eq!(
            HelperLine::parse("note Ctrl+C sent\r\n"),
            HelperLine::Note("Ctrl+C sent".into())
        );
        assert_eq!(HelperLine::parse("wait"), HelperLine::Waiting);
        assert_eq!(HelperLine::parse("done stopped"), HelperLine::Done);
        assert_eq!(
            HelperLine::parse("unreachable no console"),
            HelperLine::Unreachable("no console".into())
        );
        assert_eq!(HelperLine::parse("what"), HelperLine::Other("what".into()));
    }
}
