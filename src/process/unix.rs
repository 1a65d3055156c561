//! Unix process trees: the backend leads its own process group, which is the unit of graceful
//! stop (SIGTERM to the group) and forced kill (SIGKILL to the group). A small guardian process
//! kills the registered groups when the warden dies, however it dies.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid as NixPid;

use crate::supervisor::{ExitStatus, Pid};

/// The hidden subcommand that runs the guardian.
pub const GUARDIAN_SUBCOMMAND: &str = "__guardian";

/// What to do about a port the system will not let this user bind (EACCES).
pub const FORBIDDEN_PORT_HINT: &str = "ports below 1024 need privileges (or a lower \
    net.ipv4.ip_unprivileged_port_start on Linux): choose a backend.port of 1024 or above";

/// A backend tree: its process group.
#[derive(Debug)]
pub struct Tree {
    pgid: Pid,
    /// The value of [`TREE_ENV`] in the tree's processes (none for an adopted tree).
    token: Option<String>,
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
        self.wait_then(|| {})
    }

    /// Blocks until the main process exits, calls `on_exit`, then reaps it (when it is our
    /// child). Until it is reaped the dead leader keeps its PID and group ID reserved, so
    /// `on_exit` can signal the group without any risk of reaching a reused ID.
    pub fn wait_then(self, on_exit: impl FnOnce()) -> io::Result<ExitStatus> {
        match self {
            ExitWaiter::Child(mut child) => {
                let status = if exited_unreaped(child.id()) {
                    on_exit();
                    child.wait()?
                } else {
                    let status = child.wait()?;
                    on_exit();
                    status
                };
                Ok(ExitStatus {
                    code: status.code(),
                    signal: status.signal(),
                })
            }
            ExitWaiter::Adopted(pid) => {
                while process_alive(pid) {
                    std::thread::sleep(ADOPTED_POLL);
                }
                on_exit();
                Ok(ExitStatus {
                    code: None,
                    signal: None,
                })
            }
        }
    }
}

/// Blocks until our child `pid` has exited, leaving it a zombie (`WNOWAIT`); true if it did.
/// Where the OS has no `waitid` (macOS), returns false at once: the caller must wait (and
/// reap) first.
fn exited_unreaped(pid: Pid) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    loop {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(nix_pid(pid)), flags) {
            Err(Errno::EINTR) => continue,
            result => return result.is_ok(),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let _ = pid;
        false
    }
}

/// Whether `pid` runs (a zombie does not).
/// Waits (at most `limit`) until process `pid` has ended; true if it did.
pub fn wait_gone(pid: Pid, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while process_alive(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

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
    let tree = Tree {
        pgid: pid,
        token: None,
    };
    Ok((tree, ExitWaiter::Adopted(pid)))
}

/// The environment variable that marks every process of a launched tree with the tree's
/// token (see [`TreeGuard`]).
pub const TREE_ENV: &str = "BACKEND_WARDEN_TREE";

pub(super) fn prepare(command: &mut Command, guard: &mut TreeGuard) -> Launch {
    // Its own process group: the group is the tree, and Ctrl+C in the warden's terminal does
    // not reach the backend behind the warden's back. No code runs between fork and exec, so
    // std can use posix_spawn (a vfork: a restart costs a fraction of a fork of the warden).
    command.process_group(0);
    let token = guard.announce();
    command.env(TREE_ENV, &token);
    Launch { token }
}

/// A launch under way: the guardian knows its token before the backend exists.
#[derive(Debug)]
pub(super) struct Launch {
    token: String,
}

pub(super) fn launched(
    child: Child,
    launch: Launch,
    guard: &mut TreeGuard,
) -> io::Result<(Pid, Tree, ExitWaiter)> {
    let pid = child.id();
    let tree = Tree {
        pgid: pid,
        token: Some(launch.token),
    };
    if let Err(e) = guard.watch(&tree) {
        // Supervision goes on; the guardian still finds the tree by its token.
        tracing::error!(pid, error = %e, "could not register the backend tree with the guardian");
    }
    Ok((pid, tree, ExitWaiter::Child(child)))
}

pub(super) fn not_launched(launch: Launch, guard: &mut TreeGuard) {
    guard.cancel(&launch.token);
}

/// Kills a tree from another thread (see [`Tree::killer`]).
#[derive(Debug, Clone)]
pub struct TreeKiller {
    pgid: Pid,
}

impl TreeKiller {
    /// Kills every process of the tree (SIGKILL to the group); a group already gone is fine.
    pub fn kill(&self) {
        let _ = signal::killpg(nix_pid(self.pgid), Signal::SIGKILL);
    }
}

impl Tree {
    /// The group's ID (the leader's PID).
    pub fn id(&self) -> Pid {
        self.pgid
    }

    /// A handle that kills this tree, for the thread that waits for its leader.
    pub fn killer(&self) -> TreeKiller {
        TreeKiller { pgid: self.pgid }
    }

    /// Asks every process of the tree to stop (SIGTERM to the group); the grace period is the
    /// supervisor's to keep.
    pub fn terminate(&self, _grace: std::time::Duration) -> io::Result<super::Asked> {
        self.signal(Signal::SIGTERM).map(|()| super::Asked::Sent)
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
///
/// The pipe carries one line per change: `?TOKEN` before a launch (every process of the
/// launched tree carries `BACKEND_WARDEN_TREE=TOKEN` in its environment), `+PGID TOKEN` once
/// it runs (`-` for an adopted tree, which has no token), `-PGID TOKEN` when the tree is gone
/// or let go, `!TOKEN` when the launch failed. A warden killed between a launch and its `+`
/// line leaves a tree the guardian knows only by its token; it finds those processes by
/// their environment, as it does any process of a live tree that left the group.
#[derive(Debug)]
pub struct TreeGuard {
    guardian: Option<(Child, ChildStdin)>,
    /// Unique to this warden run (PID and start time), so tokens never collide with those of
    /// another warden, or of an earlier one that had the same PID.
    prefix: String,
    launches: u64,
    /// What the guardian must know now: told again to a new guardian if the old one died.
    pending: Vec<String>,
    live: Vec<(Pid, Option<String>)>,
}

impl TreeGuard {
    /// Starts the guardian.
    pub fn start() -> io::Result<TreeGuard> {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut guard = TreeGuard {
            guardian: None,
            prefix: format!("{}-{}", std::process::id(), since_epoch.as_nanos()),
            launches: 0,
            pending: Vec::new(),
            live: Vec::new(),
        };
        guard.ensure_running()?;
        Ok(guard)
    }

    /// Starts a guardian if there is none (or it died), telling it everything registered.
    fn ensure_running(&mut self) -> io::Result<&mut ChildStdin> {
        let alive = match &mut self.guardian {
            Some((child, _)) => child.try_wait()?.is_none(),
            None => false,
        };
        if !alive {
            let mut child = Command::new(super::main_program()?)
                .arg(GUARDIAN_SUBCOMMAND)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()?;
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| io::Error::other("guardian has no stdin"))?;
            let mut state = String::new();
            for token in &self.pending {
                state.push_str(&format!("?{token}\n"));
            }
            for (pgid, token) in &self.live {
                state.push_str(&format!("+{pgid} {}\n", token.as_deref().unwrap_or("-")));
            }
            stdin.write_all(state.as_bytes())?;
            self.guardian = Some((child, stdin));
        }
        match &mut self.guardian {
            Some((_, stdin)) => Ok(stdin),
            None => Err(io::Error::other("guardian not running")),
        }
    }

    /// A new token for a launch about to happen, made known to the guardian first. Without
    /// a guardian the launch still goes ahead: only the safety net is missing (and a guardian
    /// started later learns the token).
    fn announce(&mut self) -> String {
        self.launches += 1;
        let token = format!("{}-{}", self.prefix, self.launches);
        self.pending.push(token.clone());
        if let Err(e) = self.send(&format!("?{token}\n")) {
            tracing::error!(error = %e, "could not tell the guardian about a launch");
        }
        token
    }

    /// Drops the token of a launch that failed.
    fn cancel(&mut self, token: &str) {
        self.pending.retain(|t| t != token);
        let _ = self.send(&format!("!{token}\n"));
    }

    /// Registers a tree to kill if the warden dies.
    pub fn watch(&mut self, tree: &Tree) -> io::Result<()> {
        if let Some(token) = &tree.token {
            self.pending.retain(|t| t != token);
        }
        if !self.live.iter().any(|(pgid, _)| *pgid == tree.pgid) {
            self.live.push((tree.pgid, tree.token.clone()));
        }
        self.send(&format!("+{} {}\n", tree.pgid, tree.token_text()))
    }

    /// Unregisters a tree that is gone (so a reused PID is never killed), or let go.
    pub fn forget(&mut self, tree: &Tree) -> io::Result<()> {
        self.live.retain(|(pgid, _)| *pgid != tree.pgid);
        self.send(&format!("-{} {}\n", tree.pgid, tree.token_text()))
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        let stdin = self.ensure_running()?;
        match stdin.write_all(line.as_bytes()) {
            Ok(()) => Ok(()),
            Err(_) => {
                // The guardian died (someone killed it): a new one learns the whole state,
                // which already includes this line.
                self.guardian = None;
                self.ensure_running().map(|_| ())
            }
        }
    }
}

impl Tree {
    fn token_text(&self) -> &str {
        self.token.as_deref().unwrap_or("-")
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
    let mut tokens: HashSet<String> = HashSet::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (op, rest) = line.split_at(line.len().min(1));
        let mut fields = rest.split_whitespace();
        match op {
            "?" => tokens.extend(fields.next().map(str::to_string)),
            "!" => {
                if let Some(token) = fields.next() {
                    tokens.remove(token);
                }
            }
            "+" | "-" => {
                let Some(Ok(pgid)) = fields.next().map(str::parse::<Pid>) else {
                    continue;
                };
                let token = fields.next().filter(|t| *t != "-");
                if op == "+" {
                    if !groups.contains(&pgid) {
                        groups.push(pgid);
                    }
                    tokens.extend(token.map(str::to_string));
                } else {
                    groups.retain(|g| *g != pgid);
                    if let Some(token) = token {
                        tokens.remove(token);
                    }
                }
            }
            _ => {}
        }
    }
    for pgid in groups {
        let _ = signal::killpg(nix_pid(pgid), Signal::SIGKILL);
    }
    if !tokens.is_empty() {
        kill_marked(&tokens);
    }
    0
}

/// Kills every process whose environment carries one of `tokens`, in rounds until none is
/// found: a launch caught between its fork and its exec shows the token only after the exec.
fn kill_marked(tokens: &HashSet<String>) {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
    let wanted: Vec<std::ffi::OsString> = tokens
        .iter()
        .map(|t| format!("{TREE_ENV}={t}").into())
        .collect();
    let Ok(mut system) = System::new() else {
        return;
    };
    let kind = ProcessRefreshKind::nothing()
        .with_environ(UpdateKind::Always)
        .without_tasks();
    for round in 0..5u64 {
        system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        let found: Vec<Pid> = system
            .processes()
            .iter()
            .filter(|(_, p)| p.environ().iter().any(|e| wanted.contains(e)))
            .map(|(pid, _)| pid.as_u32())
            .collect();
        for pid in &found {
            let _ = signal::kill(nix_pid(*pid), Signal::SIGKILL);
        }
        if found.is_empty() && round >= 2 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20 * (round + 1)));
    }
}
