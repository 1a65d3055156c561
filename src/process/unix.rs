//! Unix process trees: the backend leads its own process group, which is the unit of graceful
//! stop (SIGTERM to the group) and forced kill (SIGKILL to the group). A small guardian process
//! kills the registered groups when the warden dies, however it dies.

use std::io::{self, BufRead, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid as NixPid;

use crate::supervisor::{ExitStatus, Pid};

/// The hidden subcommand that runs the guardian.
pub const GUARDIAN_SUBCOMMAND: &str = "__guardian";

/// A backend tree: its process group.
#[derive(Debug)]
pub struct Tree {
    pgid: Pid,
}

/// Waits for the backend's main process; moved to a thread of its own.
#[derive(Debug)]
pub enum ExitWaiter {
    /// Our child: `wait` reaps it and knows its exit status.
    Child(Child),
    /// An adopted process (not our child): its end can only be observed, not reaped.
    Adopted(Pid),
}

/// How often an adopted process is checked: there is no portable exit event for a process
/// that is not our child.
const ADOPTED_POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl ExitWaiter {
    /// Blocks until the main process exits (and reaps it, when it is our child).
    pub fn wait(self) -> io::Result<ExitStatus> {
        match self {
            ExitWaiter::Child(mut child) => {
                let status = child.wait()?;
                Ok(ExitStatus {
                    code: status.code(),
                    signal: status.signal(),
                })
            }
            ExitWaiter::Adopted(pid) => {
                while process_alive(pid) {
                    std::thread::sleep(ADOPTED_POLL);
                }
                Ok(ExitStatus {
                    code: None,
                    signal: None,
                })
            }
        }
    }
}

/// Whether `pid` runs (a zombie does not).
fn process_alive(pid: Pid) -> bool {
    if signal::kill(nix_pid(pid), None).is_err() {
        return false;
    }
    #[cfg(target_os = "linux")]
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(state) = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
    {
        return state != "Z" && state != "X";
    }
    true
}

/// Takes charge of a running process that leads its own process group (a backend started by
/// hand in a terminal). Its group becomes the tree to stop and kill.
pub fn adopt(pid: Pid) -> io::Result<(Tree, ExitWaiter)> {
    let pgid = nix::unistd::getpgid(Some(nix_pid(pid))).map_err(io::Error::from)?;
    if pgid != nix_pid(pid) {
        return Err(io::Error::other(format!(
            "PID {pid} shares process group {pgid} with other programs; stopping it as a tree \
             could hit them"
        )));
    }
    Ok((Tree { pgid: pid }, ExitWaiter::Adopted(pid)))
}

pub(super) fn prepare(command: &mut Command, guard: &mut TreeGuard) -> io::Result<()> {
    // Its own process group: the group is the tree, and Ctrl+C in the warden's terminal does
    // not reach the backend behind the warden's back.
    command.process_group(0);
    // The child tells the guardian its group itself, between fork and exec (std has done the
    // setpgid by then). Registering after `spawn` returned left a window (the whole exec of
    // the backend, up to milliseconds) in which a SIGKILLed warden left the backend running:
    // the reliability suite's random kills found it. Now, until the child has registered, it
    // holds a copy of the guardian's pipe, so the guardian cannot see the warden's end first.
    let fd = guard.ensure_running()?.as_raw_fd();
    // SAFETY: the closure runs in the forked child of a multi-threaded process, so it only
    // makes async-signal-safe calls (getpid, sigaction, write) and does not allocate.
    unsafe {
        command.pre_exec(move || {
            register_own_group(fd);
            Ok(())
        });
    }
    Ok(())
}

/// Writes `+PID\n` (the child's PID, which is its group's ID) to the guardian's pipe. A gone
/// guardian is not an error here (the runner starts a new one and registers the tree again);
/// SIGPIPE, which std has just reset to its default, is ignored around the write.
fn register_own_group(fd: RawFd) {
    let mut line = [0u8; 16];
    let mut digits = [0u8; 10];
    let mut pid = std::process::id();
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    line[0] = b'+';
    for i in 0..n {
        line[1 + i] = digits[n - 1 - i];
    }
    line[1 + n] = b'\n';
    // SAFETY: SIG_IGN and SIG_DFL install no handler code.
    unsafe {
        let _ = signal::signal(Signal::SIGPIPE, SigHandler::SigIgn);
    }
    // SAFETY: `fd` is the guardian's pipe, open in this forked child until exec; a write of
    // at most 12 bytes to a pipe is atomic.
    let _ = unsafe { libc_write(fd, &line[..2 + n]) };
    unsafe {
        let _ = signal::signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

/// `write(2)` without any allocation or locking.
///
/// # Safety
/// `fd` must be an open descriptor.
unsafe fn libc_write(fd: RawFd, bytes: &[u8]) -> nix::Result<usize> {
    // SAFETY: the caller guarantees `fd` is open; nix's write borrows it for the call only.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::unistd::write(fd, bytes)
}

pub(super) fn launched(child: Child) -> io::Result<(Pid, Tree, ExitWaiter)> {
    let pid = child.id();
    Ok((pid, Tree { pgid: pid }, ExitWaiter::Child(child)))
}

impl Tree {
    /// The group's ID (the leader's PID).
    pub fn id(&self) -> Pid {
        self.pgid
    }

    /// Asks every process of the tree to stop (SIGTERM to the group).
    pub fn terminate(&self) -> io::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Kills every process of the tree (SIGKILL to the group).
    pub fn kill(&self) -> io::Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// Lets the tree outlive the warden (the guardian has been told to forget it).
    pub fn release(self) -> io::Result<()> {
        Ok(())
    }

    fn signal(&self, sig: Signal) -> io::Result<()> {
        match signal::killpg(nix_pid(self.pgid), sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// True once no live process is left in the group. Zombies count as gone: they run no
    /// code, and their reaping is up to their new parent.
    pub fn is_gone(&self) -> bool {
        match signal::killpg(nix_pid(self.pgid), None) {
            Err(Errno::ESRCH) => true,
            _ => !group_has_live_member(self.pgid),
        }
    }
}

#[cfg(target_os = "linux")]
fn group_has_live_member(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid pgrp ...
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
        if pgrp == Some(pgid) && state != Some("Z") && state != Some("X") {
            return true;
        }
    }
    false
}

#[cfg(not(target_os = "linux"))]
fn group_has_live_member(_pgid: Pid) -> bool {
    true
}

fn nix_pid(pid: Pid) -> NixPid {
    NixPid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// Kills the registered trees if the warden dies without stopping them.
///
/// `PR_SET_PDEATHSIG` would only reach the backend's main process (and fires when the
/// spawning *thread* exits); grandchildren such as uvicorn's reload worker would survive.
/// Instead a guardian process, started from this binary, holds the read end of a pipe. The
/// kernel closes the write end when the warden dies for any reason, including SIGKILL; the
/// guardian then kills every group it was told about.
#[derive(Debug)]
pub struct TreeGuard {
    guardian: Option<(Child, ChildStdin)>,
}

impl TreeGuard {
    /// Starts the guardian.
    pub fn start() -> io::Result<TreeGuard> {
        let mut guard = TreeGuard { guardian: None };
        guard.ensure_running()?;
        Ok(guard)
    }

    fn ensure_running(&mut self) -> io::Result<&mut ChildStdin> {
        let alive = match &mut self.guardian {
            Some((child, _)) => child.try_wait()?.is_none(),
            None => false,
        };
        if !alive {
            let exe = std::env::current_exe()?;
            let mut child = Command::new(exe)
                .arg(GUARDIAN_SUBCOMMAND)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()?;
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| io::Error::other("guardian has no stdin"))?;
            self.guardian = Some((child, stdin));
        }
        match &mut self.guardian {
            Some((_, stdin)) => Ok(stdin),
            None => Err(io::Error::other("guardian not running")),
        }
    }

    /// Registers a tree to kill if the warden dies.
    pub fn watch(&mut self, tree: &Tree) -> io::Result<()> {
        self.send(&format!("+{}\n", tree.pgid))
    }

    /// Unregisters a tree that is gone (so a reused PID is never killed).
    pub fn forget(&mut self, tree: &Tree) -> io::Result<()> {
        self.send(&format!("-{}\n", tree.pgid))
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        let stdin = self.ensure_running()?;
        match stdin.write_all(line.as_bytes()) {
            Ok(()) => Ok(()),
            Err(_) => {
                // The guardian died (someone killed it): start a new one and tell it again.
                self.guardian = None;
                self.ensure_running()?.write_all(line.as_bytes())
            }
        }
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.guardian.take() {
            drop(stdin); // EOF: the guardian kills what is still registered, then exits
            let _ = child.wait();
        }
    }
}

/// The guardian's main loop (see [`TreeGuard`]). Returns when the warden is gone.
pub fn guardian_main() -> i32 {
    // Out of the warden's session: a terminal hangup or Ctrl+C must not take the guardian
    // down before it has done its job.
    let _ = nix::unistd::setsid();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal::signal(sig, SigHandler::SigIgn) };
    }
    let mut groups: Vec<Pid> = Vec::new();
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let (op, pgid) = line.split_at(line.len().min(1));
        let Ok(pgid) = pgid.trim().parse::<Pid>() else {
            continue;
        };
        match op {
            "+" if !groups.contains(&pgid) => groups.push(pgid),
            "-" => groups.retain(|g| *g != pgid),
            _ => {}
        }
    }
    for pgid in groups {
        let _ = signal::killpg(nix_pid(pgid), Signal::SIGKILL);
    }
    0
}
