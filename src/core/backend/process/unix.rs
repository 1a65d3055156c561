//! Unix process trees: the backend leads its own process group, which is the unit of graceful
//! stop (SIGTERM to the group) and forced kill (SIGKILL to the group). A small guardian process
//! kills the registered trees when the warden dies, however it dies; the warden notices a
//! guardian's death at once and starts another. On Linux the warden is also the child
//! subreaper of everything it starts, so a descendant that leaves the group (`setsid`, a
//! double fork) becomes the warden's child instead of init's: stop, kill and "is the tree
//! gone" cover it too, and the guardian is told of it, so it dies with a killed warden even
//! when it cleared its environment. The trees of a warden are recorded in its runtime folder,
//! so the next warden of the same home kills a tree that outlived both the warden and its
//! guardian.

use std::collections::HashSet;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid as NixPid;

use crate::engine::supervisor::{ExitStatus, Pid};

/// The hidden subcommand that runs the guardian.
pub const GUARDIAN_SUBCOMMAND: &str = "__guardian";

/// What to do about a port the system will not let this user bind (EACCES).
pub const FORBIDDEN_PORT_HINT: &str = "ports below 1024 need privileges (or a lower \
    net.ipv4.ip_unprivileged_port_start on Linux): choose a backend.port of 1024 or above";

/// A backend tree: its process group, and (Linux) the descendants that left it.
#[derive(Debug)]
pub struct Tree {
    pgid: Pid,
    /// The value of [`TREE_ENV`] in the tree's processes (none for an adopted tree).
    token: Option<String>,
    /// Set once the tree is being killed: from then on, "is it gone" kills stragglers.
    killed: Arc<AtomicBool>,
}

/// Our own children started through `std` (backend leaders, guardians): their owners wait
/// for them, so the reaper of re-parented orphans must leave their zombies alone.
static SPAWNED: Mutex<Vec<Pid>> = Mutex::new(Vec::new());

fn spawned(pid: Pid, add: bool) {
    let mut list = SPAWNED.lock().unwrap_or_else(PoisonError::into_inner);
    list.retain(|p| *p != pid);
    if add {
        list.push(pid);
    }
}

fn spawned_now() -> Vec<Pid> {
    SPAWNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
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
                let pid = child.id();
                let status = if exited_unreaped(pid) {
                    on_exit();
                    child.wait()
                } else {
                    let status = child.wait();
                    on_exit();
                    status
                };
                spawned(pid, false);
                let status = status?;
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
        killed: Arc::default(),
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
    spawned(pid, true);
    let tree = Tree {
        pgid: pid,
        token: Some(launch.token),
        killed: Arc::default(),
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
    prefix: Option<String>,
    killed: Arc<AtomicBool>,
}

impl TreeKiller {
    /// Kills every process of the tree (SIGKILL to the group and to the descendants that
    /// left it); a tree already gone is fine.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let _ = signal::killpg(nix_pid(self.pgid), Signal::SIGKILL);
        signal_detached(self.pgid, self.prefix.as_deref(), Signal::SIGKILL, true);
    }
}

/// Sends `sig` to the tree's live processes outside its group (Linux: see [`detached`]).
/// With `quick`, only when the warden has children of unknown origin: after a kill of the
/// group, what left it is re-parented to the warden, and "is it gone" finds it there (the
/// crash path must not pay for a look at the whole process table).
fn signal_detached(pgid: Pid, prefix: Option<&str>, sig: Signal, quick: bool) {
    if quick && detached::no_foreign_children() {
        return;
    }
    let scan = detached::scan(pgid, prefix);
    for pid in &scan.outside {
        let _ = signal::kill(nix_pid(*pid), sig);
    }
}

impl Tree {
    /// The group's ID (the leader's PID).
    pub fn id(&self) -> Pid {
        self.pgid
    }

    /// A handle that kills this tree, for the thread that waits for its leader.
    pub fn killer(&self) -> TreeKiller {
        TreeKiller {
            pgid: self.pgid,
            prefix: self.prefix().map(str::to_owned),
            killed: Arc::clone(&self.killed),
        }
    }

    /// What every token of this warden's trees starts with (see [`TreeGuard`]).
    fn prefix(&self) -> Option<&str> {
        self.token
            .as_deref()
            .and_then(|token| token.rsplit_once('-'))
            .map(|(prefix, _)| prefix)
    }

    /// Asks every process of the tree to stop (SIGTERM to the group and to the descendants
    /// that left it); the grace period is the supervisor's to keep.
    pub fn terminate(&self, _grace: std::time::Duration) -> io::Result<super::Asked> {
        let result = self.signal(Signal::SIGTERM);
        signal_detached(self.pgid, self.prefix(), Signal::SIGTERM, false);
        result.map(|()| super::Asked::Sent)
    }

    /// Kills every process of the tree (SIGKILL to the group and to the descendants that
    /// left it).
    pub fn kill(&self) -> io::Result<()> {
        self.killed.store(true, Ordering::SeqCst);
        let result = self.signal(Signal::SIGKILL);
        signal_detached(self.pgid, self.prefix(), Signal::SIGKILL, true);
        result
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

    /// True once no live process is left in the group, nor (Linux) among the descendants
    /// that left it. Zombies count as gone: they run no code; the warden reaps those that
    /// were re-parented to it. Once the tree is being killed, stragglers (a fork that raced
    /// the kill) are killed again here.
    pub fn is_gone(&self) -> bool {
        let group_gone = matches!(signal::killpg(nix_pid(self.pgid), None), Err(Errno::ESRCH));
        // With the group gone, anything left of the tree hangs below the warden.
        if group_gone && detached::no_foreign_children() {
            return true;
        }
        let scan = detached::scan(self.pgid, self.prefix());
        if !scan.outside.is_empty() && self.killed.load(Ordering::SeqCst) {
            for pid in &scan.outside {
                let _ = signal::kill(nix_pid(*pid), Signal::SIGKILL);
            }
        }
        (group_gone || !scan.group_alive) && scan.outside.is_empty()
    }
}

/// The descendants of a tree that left its process group (Linux).
#[cfg(target_os = "linux")]
mod detached {
    use std::collections::{HashMap, HashSet};

    use super::{Pid, TREE_ENV, spawned_now};

    /// What one look at the process table found.
    pub(super) struct Scan {
        /// A live process is in the group.
        pub group_alive: bool,
        /// Live processes of the tree outside the group.
        pub outside: Vec<Pid>,
    }

    struct Entry {
        pid: Pid,
        ppid: Pid,
        pgrp: Pid,
        zombie: bool,
    }

    fn table() -> Vec<Entry> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return out;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<Pid>().ok()) else {
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
            let state = fields.next().unwrap_or("?");
            let ppid = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
            let pgrp = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
            out.push(Entry {
                pid,
                ppid,
                pgrp,
                zombie: state == "Z" || state == "X",
            });
        }
        out
    }

    /// Whether an orphan re-parented to the warden belongs to its trees: it carries a token
    /// of this warden, or it cleared its environment (programs the warden starts outside a
    /// tree, such as a file manager opened from the tray, carry the warden's environment).
    fn ours(pid: Pid, prefix: Option<&str>) -> bool {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        if environ.is_empty() {
            return true;
        }
        let Some(prefix) = prefix else {
            return false;
        };
        let marker = format!("{TREE_ENV}={prefix}-");
        environ
            .split(|b| *b == 0)
            .any(|var| var.starts_with(marker.as_bytes()))
    }

    /// Looks at the process table once: the group's members, and every live descendant of
    /// the group or of the warden's orphans from its trees, outside the group. Zombie
    /// orphans of the warden that no owner waits for are reaped on the way.
    pub(super) fn scan(pgid: Pid, prefix: Option<&str>) -> Scan {
        let me = std::process::id();
        let table = table();
        let spawned = spawned_now();
        let mut children: HashMap<Pid, Vec<usize>> = HashMap::new();
        for (index, entry) in table.iter().enumerate() {
            children.entry(entry.ppid).or_default().push(index);
        }
        let mut group_alive = false;
        let mut roots: Vec<usize> = Vec::new();
        for (index, entry) in table.iter().enumerate() {
            if entry.pgrp == pgid || entry.pid == pgid {
                group_alive |= entry.pgrp == pgid && !entry.zombie;
                roots.push(index);
            } else if entry.ppid == me && !spawned.contains(&entry.pid) {
                if entry.zombie {
                    reap(entry.pid);
                } else if ours(entry.pid, prefix) {
                    roots.push(index);
                }
            }
        }
        let mut seen: HashSet<usize> = roots.iter().copied().collect();
        let mut queue = roots;
        let mut outside = Vec::new();
        while let Some(index) = queue.pop() {
            let entry = &table[index];
            if entry.pgrp != pgid && !entry.zombie && entry.pid != me {
                outside.push(entry.pid);
            }
            for &child in children.get(&entry.pid).map_or(&[][..], Vec::as_slice) {
                if seen.insert(child) {
                    queue.push(child);
                }
            }
        }
        Scan {
            group_alive,
            outside,
        }
    }

    /// True when every child of the warden is one it started through `std` (no orphan was
    /// re-parented to it), asked of the kernel's cheap per-thread child lists; false when
    /// the kernel has none (a full scan is then needed).
    pub(super) fn no_foreign_children() -> bool {
        // The main thread's list exists wherever the kernel keeps these lists at all.
        let main = format!("/proc/self/task/{}/children", std::process::id());
        if std::fs::metadata(main).is_err() {
            return false;
        }
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return false;
        };
        let spawned = spawned_now();
        for task in tasks.flatten() {
            let text = match std::fs::read_to_string(task.path().join("children")) {
                Ok(text) => text,
                // A thread that ended since the folder was listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => return false,
            };
            if text
                .split_whitespace()
                .filter_map(|p| p.parse::<Pid>().ok())
                .any(|pid| !spawned.contains(&pid))
            {
                return false;
            }
        }
        true
    }

    /// The live children of the warden's main thread that it did not start through `std`:
    /// orphans re-parented to it (the kernel hands them to the first live thread, the main
    /// one), that belong to its trees. One small read while there are none.
    pub(super) fn adopted_orphans(prefix: &str) -> Vec<Pid> {
        let path = format!("/proc/self/task/{}/children", std::process::id());
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        let spawned = spawned_now();
        let mut found = Vec::new();
        for pid in text
            .split_whitespace()
            .filter_map(|p| p.parse::<Pid>().ok())
        {
            if spawned.contains(&pid) {
                continue;
            }
            // A zombie runs no code; the next look at the tree reaps it (see `scan`). Not
            // here: this also runs in programs whose own children are not in `SPAWNED`.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            if !matches!(state, Some("Z" | "X")) && ours(pid, Some(prefix)) {
                found.push(pid);
            }
        }
        found
    }

    /// Whether `pid`'s environment carries one of `wanted` (`TREE_ENV=token` entries).
    fn carries(pid: Pid, wanted: &[Vec<u8>]) -> bool {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
            env.split(|b| *b == 0)
                .any(|var| wanted.iter().any(|w| w == var))
        })
    }

    /// Kills whole trees: the members of `groups`, the processes `procs` (PID and start time,
    /// so a reused PID is never hit), every process carrying one of `tokens`, and every
    /// descendant of these, wherever it went. All are stopped (SIGSTOP) first, in rounds
    /// until no new one shows, so none can fork away or die and hand its children to init
    /// before the parent links are read; then all are killed. Returns how many.
    pub(super) fn kill_trees(
        groups: &[Pid],
        procs: &[(Pid, u64)],
        tokens: &std::collections::HashSet<String>,
    ) -> usize {
        use nix::sys::signal::{Signal, kill};
        let me = std::process::id();
        let wanted: Vec<Vec<u8>> = tokens
            .iter()
            .map(|t| format!("{TREE_ENV}={t}").into_bytes())
            .collect();
        let mut stopped: HashSet<Pid> = HashSet::new();
        for round in 0..6u64 {
            let table = table();
            let mut children: HashMap<Pid, Vec<usize>> = HashMap::new();
            for (index, entry) in table.iter().enumerate() {
                children.entry(entry.ppid).or_default().push(index);
            }
            let mut queue: Vec<usize> = (0..table.len())
                .filter(|&i| {
                    let e = &table[i];
                    groups.contains(&e.pgrp)
                        || procs.iter().any(|&(pid, start)| {
                            pid == e.pid && super::start_time(pid) == Some(start)
                        })
                        || (!wanted.is_empty() && carries(e.pid, &wanted))
                })
                .collect();
            let mut seen: HashSet<usize> = queue.iter().copied().collect();
            let mut found = 0;
            while let Some(index) = queue.pop() {
                let entry = &table[index];
                if entry.pid != me
                    && !entry.zombie
                    && stopped.insert(entry.pid)
                    && kill(super::nix_pid(entry.pid), Signal::SIGSTOP).is_ok()
                {
                    found += 1;
                }
                for &child in children.get(&entry.pid).map_or(&[][..], Vec::as_slice) {
                    if seen.insert(child) {
                        queue.push(child);
                    }
                }
            }
            // A launch caught between its fork and its exec shows its token only after the
            // exec: look a few times.
            if found == 0 && round >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20 * (round + 1)));
        }
        stopped
            .into_iter()
            .filter(|pid| kill(super::nix_pid(*pid), Signal::SIGKILL).is_ok())
            .count()
    }

    /// Reaps a zombie child of the warden that no `std` handle owns.
    fn reap(pid: Pid) {
        use nix::sys::wait::{WaitPidFlag, waitpid};
        let _ = waitpid(super::nix_pid(pid), Some(WaitPidFlag::WNOHANG));
    }

    /// Makes the warden the child subreaper of its descendants.
    pub(super) fn become_subreaper() {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become the child subreaper: descendants that \
                leave the backend's process group will not be found");
        }
    }
}

/// Without a child subreaper a descendant that leaves the group is out of reach; the group
/// is the tree.
#[cfg(not(target_os = "linux"))]
mod detached {
    use super::Pid;

    pub(super) struct Scan {
        pub group_alive: bool,
        pub outside: Vec<Pid>,
    }

    pub(super) fn scan(_pgid: Pid, _prefix: Option<&str>) -> Scan {
        Scan {
            group_alive: true,
            outside: Vec::new(),
        }
    }

    pub(super) fn no_foreign_children() -> bool {
        true
    }

    pub(super) fn adopted_orphans(_prefix: &str) -> Vec<Pid> {
        Vec::new()
    }

    pub(super) fn become_subreaper() {}

    /// Kills the groups, and every process carrying one of `tokens` (found through its
    /// environment). Returns how many processes carried a token.
    pub(super) fn kill_trees(
        groups: &[Pid],
        _procs: &[(Pid, u64)],
        tokens: &std::collections::HashSet<String>,
    ) -> usize {
        use nix::sys::signal::{Signal, killpg};
        for pgid in groups {
            let _ = killpg(super::nix_pid(*pgid), Signal::SIGKILL);
        }
        if tokens.is_empty() {
            0
        } else {
            kill_marked(tokens)
        }
    }

    /// Kills every process whose environment carries one of `tokens`, in rounds until none
    /// is found: a launch caught between its fork and its exec shows the token only after
    /// the exec.
    fn kill_marked(tokens: &std::collections::HashSet<String>) -> usize {
        use nix::sys::signal::{Signal, kill};
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
        let wanted: Vec<std::ffi::OsString> = tokens
            .iter()
            .map(|t| format!("{}={t}", super::TREE_ENV).into())
            .collect();
        let Ok(mut system) = System::new() else {
            return 0;
        };
        let mut killed = 0;
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
                if kill(super::nix_pid(*pid), Signal::SIGKILL).is_ok() {
                    killed += 1;
                }
            }
            if found.is_empty() && round >= 2 {
                return killed;
            }
            std::thread::sleep(std::time::Duration::from_millis(20 * (round + 1)));
        }
        killed
    }
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
/// or let go, `!TOKEN` when the launch failed, and (Linux) `*PID START` / `/PID START` for a
/// process of a tree that left it and was re-parented to the warden, and is gone again. A
/// warden killed between a launch and its `+` line leaves a tree the guardian knows only by
/// its token; it finds those processes by their environment. Before killing, it stops every
/// process of the trees and follows the parent links down from them, so a descendant that
/// left the group is found too, even one that cleared its environment.
#[derive(Debug)]
pub struct TreeGuard {
    /// Shared with the thread that watches the guardian, which replaces a dead one at once.
    state: Arc<Mutex<GuardState>>,
}

#[derive(Debug)]
struct GuardState {
    guardian: Option<(Child, ChildStdin)>,
    /// Unique to this warden run (PID and start time), so tokens never collide with those of
    /// another warden, or of an earlier one that had the same PID.
    prefix: String,
    launches: u64,
    /// What the guardian must know now: told again to a new guardian if the old one died.
    pending: Vec<String>,
    live: Vec<(Pid, Option<String>)>,
    /// Processes of the trees that left them and were re-parented to the warden (PID and
    /// start time): after the warden's death nothing links them to a tree any more.
    detached: Vec<(Pid, u64)>,
    /// `run/trees`: the same, for the next warden of this home (see [`TreeGuard::record_in`]).
    record: Option<PathBuf>,
    /// The warden is letting its guardian go: a guardian that ends now is not replaced.
    closing: bool,
}

/// The file in the runtime folder that lists the trees of the running warden.
const RECORD_FILE: &str = "trees";

impl TreeGuard {
    /// Starts the guardian (and, on Linux, makes the warden the child subreaper of what it
    /// starts).
    pub fn start() -> io::Result<TreeGuard> {
        detached::become_subreaper();
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let state = Arc::new(Mutex::new(GuardState {
            guardian: None,
            prefix: format!("{}-{}", std::process::id(), since_epoch.as_nanos()),
            launches: 0,
            pending: Vec::new(),
            live: Vec::new(),
            detached: Vec::new(),
            record: None,
            closing: false,
        }));
        GuardState::ensure_running(&state, &mut lock(&state))?;
        if cfg!(target_os = "linux") {
            watch_orphans(Arc::downgrade(&state));
        }
        Ok(TreeGuard { state })
    }

    /// Kills what a previous warden of this runtime folder recorded and left alive (its
    /// trees outlived it and its guardian: `kill -9` of both), then records this warden's
    /// trees there. Returns what was killed, for the log.
    pub fn record_in(&mut self, runtime_dir: &Path) -> io::Result<Vec<String>> {
        let path = runtime_dir.join(RECORD_FILE);
        let killed = match std::fs::read_to_string(&path) {
            Ok(text) => kill_recorded(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut state = lock(&self.state);
        state.record = Some(path);
        state.save_record();
        Ok(killed)
    }

    /// A new token for a launch about to happen, made known to the guardian first. Without
    /// a guardian the launch still goes ahead: only the safety net is missing (and a guardian
    /// started later learns the token).
    fn announce(&mut self) -> String {
        let mut state = lock(&self.state);
        state.launches += 1;
        let token = format!("{}-{}", state.prefix, state.launches);
        state.pending.push(token.clone());
        state.save_record();
        if let Err(e) = GuardState::send(&self.state, &mut state, &format!("?{token}\n")) {
            tracing::error!(error = %e, "could not tell the guardian about a launch");
        }
        token
    }

    /// Drops the token of a launch that failed.
    fn cancel(&mut self, token: &str) {
        let mut state = lock(&self.state);
        state.pending.retain(|t| t != token);
        state.save_record();
        let _ = GuardState::send(&self.state, &mut state, &format!("!{token}\n"));
    }

    /// Registers a tree to kill if the warden dies.
    pub fn watch(&mut self, tree: &Tree) -> io::Result<()> {
        let mut state = lock(&self.state);
        if let Some(token) = &tree.token {
            state.pending.retain(|t| t != token);
        }
        if !state.live.iter().any(|(pgid, _)| *pgid == tree.pgid) {
            state.live.push((tree.pgid, tree.token.clone()));
        }
        state.save_record();
        let line = format!("+{} {}\n", tree.pgid, tree.token_text());
        GuardState::send(&self.state, &mut state, &line)
    }

    /// Unregisters a tree that is gone (so a reused PID is never killed), or let go.
    pub fn forget(&mut self, tree: &Tree) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.live.retain(|(pgid, _)| *pgid != tree.pgid);
        state.save_record();
        let line = format!("-{} {}\n", tree.pgid, tree.token_text());
        GuardState::send(&self.state, &mut state, &line)
    }
}

fn lock(state: &Mutex<GuardState>) -> std::sync::MutexGuard<'_, GuardState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GuardState {
    /// Starts a guardian if there is none (or it died), telling it everything registered,
    /// and a thread that notices at once when it dies.
    fn ensure_running<'a>(
        shared: &Arc<Mutex<GuardState>>,
        state: &'a mut GuardState,
    ) -> io::Result<&'a mut ChildStdin> {
        let alive = match &mut state.guardian {
            Some((child, _)) => child.try_wait()?.is_none(),
            None => false,
        };
        if !alive {
            if let Some((mut old, _)) = state.guardian.take() {
                let _ = old.wait();
                spawned(old.id(), false);
            }
            let mut child = Command::new(crate::paths::main_program()?)
                .arg(GUARDIAN_SUBCOMMAND)
                .stdin(Stdio::piped())
                // Never written: its end is how the watcher learns of the guardian's death.
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()?;
            spawned(child.id(), true);
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| io::Error::other("guardian has no stdin"))?;
            let stdout = child.stdout.take();
            let mut replay = String::new();
            for token in &state.pending {
                replay.push_str(&format!("?{token}\n"));
            }
            for (pgid, token) in &state.live {
                replay.push_str(&format!("+{pgid} {}\n", token.as_deref().unwrap_or("-")));
            }
            for (pid, start) in &state.detached {
                replay.push_str(&format!("*{pid} {start}\n"));
            }
            stdin.write_all(replay.as_bytes())?;
            if let Some(stdout) = stdout {
                watch_guardian(Arc::downgrade(shared), child.id(), stdout);
            }
            state.guardian = Some((child, stdin));
        }
        match &mut state.guardian {
            Some((_, stdin)) => Ok(stdin),
            None => Err(io::Error::other("guardian not running")),
        }
    }

    fn send(shared: &Arc<Mutex<GuardState>>, state: &mut GuardState, line: &str) -> io::Result<()> {
        let stdin = GuardState::ensure_running(shared, state)?;
        match stdin.write_all(line.as_bytes()) {
            Ok(()) => Ok(()),
            Err(_) => {
                // The guardian died (someone killed it): a new one learns the whole state,
                // which already includes this line.
                GuardState::ensure_running(shared, state).map(|_| ())
            }
        }
    }

    /// Writes `run/trees`: every token and group a warden killed with its guardian would
    /// leave behind (groups with their leader's start time, so a reused PID is never hit).
    fn save_record(&self) {
        let Some(path) = &self.record else { return };
        let mut text = String::new();
        for token in &self.pending {
            text.push_str(&format!("token {token}\n"));
        }
        for (pgid, token) in &self.live {
            if let Some(token) = token {
                text.push_str(&format!("token {token}\n"));
            }
            if let Some(start) = start_time(*pgid) {
                text.push_str(&format!("group {pgid} {start}\n"));
            }
        }
        for (pid, start) in &self.detached {
            text.push_str(&format!("process {pid} {start}\n"));
        }
        if let Err(e) = write_private(path, text.as_bytes()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the backend trees");
        }
    }
}

/// Waits on a thread of its own until the guardian `pid` ends (its stdout closes), then
/// starts another, unless the warden is letting it go.
fn watch_guardian(state: std::sync::Weak<Mutex<GuardState>>, pid: Pid, mut stdout: ChildStdout) {
    let spawned_thread = std::thread::Builder::new()
        .name("guardian-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            while matches!(stdout.read(&mut buf), Ok(n) if n > 0) {}
            let Some(shared) = state.upgrade() else {
                return;
            };
            let mut state = lock(&shared);
            let current = state.guardian.as_ref().map(|(child, _)| child.id());
            if state.closing || current != Some(pid) {
                return;
            }
            tracing::warn!(pid, "the tree guardian died; starting another");
            // Its pipe closes while it is still exiting: wait for the end, or the check in
            // `ensure_running` could still find it running.
            if let Some((mut old, _)) = state.guardian.take() {
                let _ = old.wait();
                spawned(old.id(), false);
            }
            if let Err(e) = GuardState::ensure_running(&shared, &mut state) {
                tracing::error!(error = %e, "cannot start a new tree guardian");
            }
        });
    if let Err(e) = spawned_thread {
        tracing::error!(error = %e, "cannot watch the tree guardian");
    }
}

/// How often the warden looks for processes of its trees re-parented to it (Linux).
const ORPHAN_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// Looks, on a thread of its own while trees are registered, for processes of the trees that
/// were re-parented to the warden (a double fork out of the group), and tells the guardian
/// and the record about them; drops those that have ended. A process that cleared its
/// environment can be tied to its tree only while it is the warden's child.
fn watch_orphans(state: std::sync::Weak<Mutex<GuardState>>) {
    let spawned_thread = std::thread::Builder::new()
        .name("orphan-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(ORPHAN_LOOK);
                let Some(shared) = state.upgrade() else {
                    return;
                };
                let mut state = lock(&shared);
                if state.closing {
                    return;
                }
                if state.live.is_empty() && state.pending.is_empty() && state.detached.is_empty() {
                    continue;
                }
                let mut lines = String::new();
                state.detached.retain(|&(pid, start)| {
                    let alive = start_time(pid) == Some(start);
                    if !alive {
                        lines.push_str(&format!("/{pid} {start}\n"));
                    }
                    alive
                });
                for pid in detached::adopted_orphans(&state.prefix) {
                    if state.detached.iter().any(|(p, _)| *p == pid) {
                        continue;
                    }
                    if let Some(start) = start_time(pid) {
                        tracing::info!(pid, "a process of the backend's tree left it; noted");
                        state.detached.push((pid, start));
                        lines.push_str(&format!("*{pid} {start}\n"));
                    }
                }
                if !lines.is_empty() {
                    state.save_record();
                    if let Err(e) = GuardState::send(&shared, &mut state, &lines) {
                        tracing::error!(error = %e, "could not tell the guardian about a process");
                    }
                }
            }
        });
    if let Err(e) = spawned_thread {
        tracing::error!(error = %e, "cannot watch for processes that leave the backend's tree");
    }
}

/// Writes `bytes` to `path`, owner-only, never through a symbolic link.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    file.write_all(bytes)
}

/// A process's start time in clock ticks since boot (Linux), to tell it from a later process
/// with the same PID.
fn start_time(pid: Pid) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        // Field 22 of stat; field 3 (state) is the first after the command name.
        rest.split_whitespace().nth(19)?.parse().ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Kills what a `run/trees` file lists: every process carrying one of its tokens, each group
/// whose leader is still the process recorded, each detached process that is still the one
/// recorded, and everything below them. Says what it killed.
fn kill_recorded(text: &str) -> Vec<String> {
    let mut tokens = HashSet::new();
    let mut groups = Vec::new();
    let mut procs = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some("token"), Some(token), None) => {
                tokens.insert(token.to_owned());
            }
            (Some(kind @ ("group" | "process")), Some(pid), Some(start)) => {
                let (Ok(pid), Ok(start)) = (pid.parse::<Pid>(), start.parse::<u64>()) else {
                    continue;
                };
                if start_time(pid) != Some(start) {
                    continue;
                }
                if kind == "group" {
                    groups.push(pid);
                } else {
                    procs.push((pid, start));
                }
            }
            _ => {}
        }
    }
    if groups.is_empty() && procs.is_empty() && tokens.is_empty() {
        return Vec::new();
    }
    match detached::kill_trees(&groups, &procs, &tokens) {
        0 => Vec::new(),
        n => vec![format!("{n} processes of its trees")],
    }
}

impl Tree {
    fn token_text(&self) -> &str {
        self.token.as_deref().unwrap_or("-")
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.closing = true;
        if let Some((mut child, stdin)) = state.guardian.take() {
            drop(stdin); // EOF: the guardian kills what is still registered, then exits
            let _ = child.wait();
            spawned(child.id(), false);
        }
        // Stopped cleanly: nothing for the next warden to clean up.
        if let Some(path) = state.record.take() {
            let _ = std::fs::remove_file(path);
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
    let mut procs: Vec<(Pid, u64)> = Vec::new();
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
            "*" | "/" => {
                let (Some(Ok(pid)), Some(Ok(start))) = (
                    fields.next().map(str::parse::<Pid>),
                    fields.next().map(str::parse::<u64>),
                ) else {
                    continue;
                };
                procs.retain(|&(p, _)| p != pid);
                if op == "*" {
                    procs.push((pid, start));
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
    detached::kill_trees(&groups, &procs, &tokens);
    0
}
