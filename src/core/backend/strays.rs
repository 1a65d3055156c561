//! Strays: copies of the backend that the warden does not own (started by hand, left behind by
//! a closed terminal or a dead reloader), and whoever holds the backend's port.
//!
//! [`Identity`] is pure: it says whether a process is a copy of *our* backend, from the
//! executable, the arguments that name the app (`main.py`, `-m uvicorn`, `app:app`) and the
//! working directory; never from "it is a python". [`StrayScanner`] keeps a process table
//! (sysinfo) across scans and reads only what may have changed (the OS module, `linux.rs` or
//! `portable.rs`, says what), finds the port's holders from the socket table (netstat2), and
//! kills precisely: every PID is re-checked (identity and start time) from a fresh read right
//! before it is signalled, so a PID reused by an unrelated process is never touched.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sysinfo::{Pid as SysPid, Process, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

// Which processes a scan reads, and who holds a socket: one file per OS, same signatures.
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(not(target_os = "linux"))]
mod portable;
#[cfg(not(target_os = "linux"))]
use portable as platform;

mod found;
pub use found::{ForeignCopy, Stray, StrayKind, Wrapper};
mod identity;
pub use identity::{Identity, Launch, Match, TooBroad, exe_family, rule_too_loose};

/// One process as the scanner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcView {
    /// PID.
    pub pid: u32,
    /// Parent PID.
    pub parent: Option<u32>,
    /// Executable name.
    pub name: String,
    /// Executable path, if readable.
    pub exe: Option<PathBuf>,
    /// Command line (argv).
    pub cmd: Vec<String>,
    /// Working directory, if readable.
    pub cwd: Option<PathBuf>,
    /// Start time, seconds since the epoch.
    pub start_time: u64,
    /// Resident memory, bytes.
    pub memory: u64,
    /// Owner's user ID, as text.
    pub user: Option<String>,
    /// Exited but not yet reaped: runs no code, holds nothing, cannot be killed.
    pub zombie: bool,
}

impl ProcView {
    /// How this process relates to the backend `identity` describes.
    pub fn judged_by(&self, identity: &Identity) -> Option<Match> {
        identity.judge(
            &self.cmd,
            self.exe.as_deref(),
            &self.name,
            self.cwd.as_deref(),
        )
    }
}

/// A process listening on the backend's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortHolder {
    /// Its PID (possibly of a process that is gone: Windows reports sockets inherited by a
    /// child under the dead parent's PID).
    pub pid: u32,
    /// Its name ("" if gone).
    pub name: String,
    /// Its command line ("" if gone).
    pub cmdline: String,
    /// False when no such process exists any more.
    pub alive: bool,
    /// True when it belongs to the warden's own tree (our backend).
    pub ours: bool,
    /// When it started (seconds since the epoch; 0 if gone).
    pub started_at: u64,
}

impl PortHolder {
    /// "python3 PID 1234 (python main.py), started 10:02".
    pub fn describe(&self) -> String {
        if !self.alive {
            return format!(
                "PID {} (a process that has exited; its socket lives on in a child)",
                self.pid
            );
        }
        let cmd = if self.cmdline.is_empty() {
            String::new()
        } else {
            format!(" ({})", shorten(&self.cmdline, 120))
        };
        format!(
            "{} PID {}{cmd}, started {}",
            self.name,
            self.pid,
            clock_time(self.started_at)
        )
    }
}

/// `text` cut to `max` characters, with "…" when it was longer (command lines in messages).
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars().take(max).collect::<String>() + "…"
    }
}

/// "HH:MM ZONE" (local) of a Unix time, or the date too when it is not today.
fn clock_time(secs: u64) -> String {
    crate::clock::local_time(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The result of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Copies of the backend outside the warden's tree (only the top of each stray tree).
    pub strays: Vec<Stray>,
    /// Everything listening on the backend's port.
    pub port_holders: Vec<PortHolder>,
    /// Copies of the backend that another warden manages: never strays.
    pub others: Vec<ForeignCopy>,
    /// How long the scan took.
    pub took: Duration,
}

/// What `kill-strays` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillReport {
    /// Killed (PID and a description).
    pub killed: Vec<(u32, String)>,
    /// Left alone, with the reason.
    pub left: Vec<(u32, String)>,
}

/// What a scan must read to bring its process table up to date (decided per OS).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// Every process: the first scan, or changes that cannot be told apart.
    Full,
    /// `fresh` PIDs may be new or reused; `gone` ones are no longer listed. Every other PID
    /// in the table is the same process as at the last read.
    #[cfg_attr(
        not(target_os = "linux"),
        expect(dead_code, reason = "only Linux can tell what changed")
    )]
    Changes { fresh: Vec<u32>, gone: Vec<u32> },
}

/// Whether a process is a copy of the backend, as judged when it had this start time (a PID
/// that starts again is judged again).
#[derive(Debug, Clone, Copy)]
struct Verdict {
    start_time: u64,
    verdict: Option<Match>,
}

/// A process first read this young (seconds) and showing its parent's command line may have
/// been caught between fork and exec: its identity is read once more at the next scan.
const YOUNG_SECS: u64 = 2;

/// Which of the PIDs just read to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    /// Those whose start time changed since their verdict (or that have none).
    IfRestarted,
    /// All: new or reused PIDs.
    New,
    /// All, once more: their identity fields were just read again.
    Again,
}

/// Whether `p` shows its parent's command line, as a child does between fork and exec (or a
/// forked worker, for good). Without a parent in the table, it may.
fn looks_unexeced(system: &System, p: &Process) -> bool {
    p.parent()
        .and_then(|parent| system.process(parent))
        .is_none_or(|parent| parent.cmd() == p.cmd())
}

/// Reads the process and socket tables and kills strays. Keeps its process table, and the
/// identity verdicts, across scans: on Linux a scan reads only the processes that may be new,
/// reused or gone, plus the few that match (their memory and state change); elsewhere it
/// reads the whole table each time.
pub struct StrayScanner {
    system: System,
    watch: platform::TableWatch,
    /// By PID, for every process in the table (none while stray detection is off).
    verdicts: HashMap<u32, Verdict>,
    /// First read at the last scan, young and showing their parent's command line: read again.
    young: Vec<u32>,
    /// What held the port at the last scan: the likeliest holders at the next one.
    last_holders: Vec<u32>,
    /// The port's listening sockets and holders as last found.
    listeners: platform::Listeners,
    /// The last update read processes that had not been read before (new or reused PIDs).
    new_processes: bool,
    identity: Result<Identity, TooBroad>,
    port: Option<u16>,
    me: u32,
    my_user: Option<String>,
}

/// The fields identity needs (read once per process with `OnlyIfNotSet`, afresh with
/// `Always`) and memory (read each time).
fn read_kind(identity: UpdateKind) -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        // sysinfo would otherwise list every thread as a process of its own.
        .without_tasks()
        .with_cmd(identity)
        .with_exe(identity)
        .with_cwd(identity)
        .with_user(identity)
        .with_memory()
}

fn refresh_kind() -> ProcessRefreshKind {
    read_kind(UpdateKind::OnlyIfNotSet)
}

fn reread_kind() -> ProcessRefreshKind {
    read_kind(UpdateKind::Always)
}

/// Reads `pids` into `system`; a PID that is gone leaves the table.
fn read_processes(system: &mut System, pids: &[u32], kind: ProcessRefreshKind) {
    if pids.is_empty() {
        return;
    }
    let pids: Vec<SysPid> = pids.iter().map(|p| SysPid::from_u32(*p)).collect();
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
}

/// A process, not a thread read in place of a PID that has gone (threads share PIDs' numbers).
fn is_process(p: &Process) -> bool {
    p.thread_kind() != Some(sysinfo::ThreadKind::Userland)
}

fn view(pid: SysPid, p: &Process) -> ProcView {
    ProcView {
        pid: pid.as_u32(),
        parent: p.parent().map(SysPid::as_u32),
        name: p.name().to_string_lossy().into_owned(),
        exe: p.exe().map(Path::to_path_buf),
        cmd: p
            .cmd()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        cwd: p.cwd().map(Path::to_path_buf),
        start_time: p.start_time(),
        memory: p.memory(),
        user: p.user_id().map(|u| u.to_string()),
        zombie: matches!(
            p.status(),
            sysinfo::ProcessStatus::Zombie | sysinfo::ProcessStatus::Dead
        ),
    }
}

/// The warden, its ancestors, everything it started and the managed backend's tree: never
/// strays, never killed. Membership walks the parent links of the table.
struct OwnTree {
    me: u32,
    managed: Option<u32>,
    ancestors: HashSet<u32>,
}

impl OwnTree {
    fn new(system: &System, me: u32, managed: Option<u32>) -> OwnTree {
        let mut ancestors = HashSet::new();
        let mut cursor = parent_of(system, me);
        while let Some(pid) = cursor {
            if !ancestors.insert(pid) {
                break;
            }
            cursor = parent_of(system, pid);
        }
        OwnTree {
            me,
            managed,
            ancestors,
        }
    }

    fn contains(&self, system: &System, pid: u32) -> bool {
        if self.ancestors.contains(&pid) {
            return true;
        }
        let mut cursor = Some(pid);
        // A bound instead of a visited set: parent links do not loop, but a table read over
        // time is not a snapshot.
        for _ in 0..1024 {
            let Some(pid) = cursor else { break };
            if pid == self.me || Some(pid) == self.managed {
                return true;
            }
            cursor = parent_of(system, pid);
        }
        false
    }
}

fn parent_of(system: &System, pid: u32) -> Option<u32> {
    system
        .process(SysPid::from_u32(pid))?
        .parent()
        .map(SysPid::as_u32)
}

/// Who is whose child, for walking trees down.
struct Children(HashMap<u32, Vec<u32>>);

impl Children {
    /// The parent links of the table, except those that cannot be true: a child that started
    /// before its parent has outlived the parent whose PID it names (Windows keeps a dead
    /// parent's PID; PIDs are reused).
    fn of(system: &System) -> Children {
        Children::from_parents(
            system
                .processes()
                .iter()
                .filter(|(_, p)| is_process(p))
                .filter_map(|(pid, p)| {
                    let parent = p.parent()?;
                    let born_after = system
                        .process(parent)
                        .is_none_or(|pp| pp.start_time() <= p.start_time());
                    born_after.then_some((pid.as_u32(), parent.as_u32()))
                }),
        )
    }

    /// The direct children of `pid`.
    fn of_pid(&self, pid: u32) -> &[u32] {
        self.0.get(&pid).map_or(&[], Vec::as_slice)
    }

    fn from_parents(pairs: impl Iterator<Item = (u32, u32)>) -> Children {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, parent) in pairs {
            children.entry(parent).or_default().push(pid);
        }
        Children(children)
    }

    /// `root` and every process below it.
    fn descendants(&self, root: u32) -> Vec<u32> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            if let Some(kids) = self.0.get(&out[i]) {
                for kid in kids {
                    if !out.contains(kid) {
                        out.push(*kid);
                    }
                }
            }
            i += 1;
        }
        out
    }
}

/// A port holder as the table describes it (not alive when it is not in the table).
fn describe_holder(pid: u32, p: Option<&Process>, ours: bool) -> PortHolder {
    match p {
        Some(p) => PortHolder {
            pid,
            name: p.name().to_string_lossy().into_owned(),
            cmdline: p
                .cmd()
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            alive: true,
            ours,
            started_at: p.start_time(),
        },
        None => PortHolder {
            pid,
            name: String::new(),
            cmdline: String::new(),
            alive: false,
            ours: false,
            started_at: 0,
        },
    }
}

impl StrayScanner {
    /// A scanner for `identity` (an error turns stray detection off, with the reason) and
    /// the backend's `port`.
    pub fn new(
        identity: Result<Identity, TooBroad>,
        port: Option<u16>,
    ) -> Result<StrayScanner, sysinfo::Error> {
        let me = std::process::id();
        let mut system = System::new()?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[SysPid::from_u32(me)]),
            true,
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_user(UpdateKind::Always),
        );
        let my_user = system
            .process(SysPid::from_u32(me))
            .and_then(|p| p.user_id())
            .map(|u| u.to_string());
        Ok(StrayScanner {
            system,
            watch: platform::TableWatch::new(),
            verdicts: HashMap::new(),
            young: Vec::new(),
            last_holders: Vec::new(),
            listeners: platform::Listeners::default(),
            new_processes: true,
            identity,
            port,
            me,
            my_user,
        })
    }

    /// Why stray detection is off, if it is.
    pub fn disabled_reason(&self) -> Option<String> {
        self.identity.as_ref().err().map(ToString::to_string)
    }

    /// Brings the process table and the verdicts up to date: everything with `full` (or where
    /// the platform cannot tell what changed), otherwise only what may have changed. The
    /// `managed` backend is not read again: it is nobody's stray.
    fn update(&mut self, full: bool, managed: Option<u32>) {
        let young = std::mem::take(&mut self.young);
        let plan = self.watch.plan(self.system.processes(), full);
        self.new_processes = match &plan {
            Plan::Full => true,
            Plan::Changes { fresh, .. } => !fresh.is_empty(),
        };
        match plan {
            Plan::Full => {
                self.system.refresh_processes_specifics(
                    ProcessesToUpdate::All,
                    true,
                    refresh_kind(),
                );
                let system = &self.system;
                self.verdicts
                    .retain(|pid, _| system.process(SysPid::from_u32(*pid)).is_some());
                let all: Vec<u32> = system.processes().keys().map(|p| p.as_u32()).collect();
                self.judge(&all, Judge::IfRestarted);
            }
            Plan::Changes { fresh, gone } => {
                let mut others = Vec::new();
                if !gone.is_empty() {
                    // Their children have a new parent since they were read.
                    let gone_set: HashSet<u32> = gone.iter().copied().collect();
                    others.extend(
                        self.system
                            .processes()
                            .iter()
                            .filter(|(_, p)| {
                                p.parent()
                                    .is_some_and(|parent| gone_set.contains(&parent.as_u32()))
                            })
                            .map(|(pid, _)| pid.as_u32()),
                    );
                    others.extend(gone);
                }
                // Memory and state (a zombie is nobody to kill) change; there are few.
                others.extend(
                    self.verdicts
                        .iter()
                        .filter(|(pid, v)| v.verdict.is_some() && Some(**pid) != managed)
                        .map(|(pid, _)| *pid),
                );
                others.sort_unstable();
                others.dedup();
                others.retain(|pid| !fresh.contains(pid));
                let read: Vec<u32> = fresh.iter().chain(&others).copied().collect();
                read_processes(&mut self.system, &read, refresh_kind());
                self.judge(&fresh, Judge::New);
                self.judge(&others, Judge::IfRestarted);
            }
        }
        let young: Vec<u32> = young
            .into_iter()
            .filter(|pid| self.system.process(SysPid::from_u32(*pid)).is_some())
            .collect();
        read_processes(&mut self.system, &young, reread_kind());
        self.judge(&young, Judge::Again);
    }

    /// Judges `pids` against the identity (see [`Judge`]), forgets the gone ones, and notes
    /// the new ones that may have been caught between fork and exec.
    fn judge(&mut self, pids: &[u32], which: Judge) {
        let Ok(identity) = &self.identity else {
            return; // nothing matches; no verdicts to keep
        };
        for &pid in pids {
            let Some(p) = self.system.process(SysPid::from_u32(pid)) else {
                self.verdicts.remove(&pid);
                continue;
            };
            let start_time = p.start_time();
            let known = self
                .verdicts
                .get(&pid)
                .is_some_and(|v| v.start_time == start_time);
            if which == Judge::IfRestarted && known {
                continue;
            }
            let verdict = if is_process(p) {
                view(SysPid::from_u32(pid), p).judged_by(identity)
            } else {
                None
            };
            self.verdicts.insert(
                pid,
                Verdict {
                    start_time,
                    verdict,
                },
            );
            if which != Judge::Again
                && p.run_time() <= YOUNG_SECS
                && looks_unexeced(&self.system, p)
            {
                self.young.push(pid);
            }
        }
    }

    /// PIDs that matched the identity when last read.
    fn matching(&self) -> impl Iterator<Item = u32> + '_ {
        self.verdicts
            .iter()
            .filter(|(_, v)| v.verdict.is_some())
            .map(|(pid, _)| *pid)
    }

    /// Scans the process table (and the port). `managed` is the backend the warden supervises
    /// (an adopted one is not the warden's descendant): its tree is never a stray.
    pub fn scan(&mut self, managed: Option<u32>) -> Scan {
        let started = Instant::now();
        self.update(false, managed);
        let ours = OwnTree::new(&self.system, self.me, managed);
        let holders = self
            .port
            .map(|port| self.holders(port, &ours))
            .unwrap_or_default();
        let holding: HashSet<u32> = holders.iter().map(|h| h.pid).collect();
        let candidates: HashMap<u32, (ProcView, Match)> = self
            .verdicts
            .iter()
            .filter_map(|(pid, v)| Some((*pid, v.verdict?)))
            .filter_map(|(pid, verdict)| {
                let p = view(
                    SysPid::from_u32(pid),
                    self.system.process(SysPid::from_u32(pid))?,
                );
                (self.eligible(&p, &ours)
                    && (verdict != Match::Worker || holding.contains(&pid) || self.orphaned(&p)))
                .then_some((pid, (p, verdict)))
            })
            .collect();
        let mut strays = Vec::new();
        let mut others = Vec::new();
        if !candidates.is_empty() {
            let children = Children::of(&self.system);
            // Only the top of each stray tree: its children go with it.
            let tops: Vec<&(ProcView, Match)> = candidates
                .values()
                .filter(|(p, _)| {
                    !p.parent
                        .is_some_and(|parent| candidates.contains_key(&parent))
                })
                .collect();
            let top_pids: Vec<u32> = tops.iter().map(|(p, _)| p.pid).collect();
            let marks = self.managers(&top_pids);
            // The matching ones were read already; the rest of each tree is read for its memory.
            let trees: Vec<Vec<u32>> = tops
                .iter()
                .map(|(p, _)| children.descendants(p.pid))
                .collect();
            let rest: Vec<u32> = trees
                .iter()
                .flatten()
                .filter(|pid| self.verdicts.get(pid).is_none_or(|v| v.verdict.is_none()))
                .copied()
                .collect();
            read_processes(&mut self.system, &rest, refresh_kind());
            for ((p, verdict), tree) in tops.into_iter().zip(trees) {
                let holds_port = tree.iter().any(|d| holding.contains(d));
                if let Some(manager) = marks.get(&p.pid).and_then(|m| m.as_ref())
                    && manager.0 != self.me
                    && self.is_live_warden(manager.0)
                {
                    others.push(ForeignCopy {
                        pid: p.pid,
                        cmdline: p.cmd.join(" "),
                        warden_pid: Some(manager.0),
                        home: Some(manager.1.clone()),
                        holds_port,
                    });
                    continue;
                }
                if let Some(warden) = self.warden_ancestor(p.pid) {
                    // Its environment was cleared or unreadable, but a warden started it.
                    others.push(ForeignCopy {
                        pid: p.pid,
                        cmdline: p.cmd.join(" "),
                        warden_pid: Some(warden),
                        home: None,
                        holds_port,
                    });
                    continue;
                }
                let kind = match verdict {
                    Match::Copy if self.debugged(p.pid) => StrayKind::DebugSession,
                    Match::Copy => StrayKind::Copy,
                    Match::Debug => StrayKind::DebugSession,
                    Match::Worker => StrayKind::OrphanedWorker,
                };
                strays.push(Stray {
                    pid: p.pid,
                    name: p.name.clone(),
                    cmdline: p.cmd.join(" "),
                    cwd: p.cwd.clone(),
                    started_at: p.start_time,
                    memory_bytes: tree
                        .iter()
                        .filter_map(|d| self.system.process(SysPid::from_u32(*d)))
                        .map(Process::memory)
                        .sum(),
                    holds_port,
                    kind,
                    wrappers: self.wrappers(p, &ours, &children),
                    start_ticks: platform::start_ticks(p.pid),
                });
            }
        }
        strays.sort_by_key(|s| s.pid);
        others.sort_by_key(|o| o.pid);
        Scan {
            strays,
            port_holders: holders,
            others,
            took: started.elapsed(),
        }
    }

    /// Ours to judge: not the warden's tree, same user, not a system process.
    fn eligible(&self, p: &ProcView, ours: &OwnTree) -> bool {
        !ours.contains(&self.system, p.pid)
            && !p.zombie
            && p.pid > 4
            && self.my_user.is_some()
            && p.user == self.my_user
    }

    /// Whether `p`'s parent is gone: re-parented to init or a subreaper that is no copy of the
    /// backend's interpreter, or a parent link that cannot be its parent (it started later:
    /// Windows keeps a dead parent's PID, and PIDs are reused).
    fn orphaned(&self, p: &ProcView) -> bool {
        let Some(parent) = p.parent else {
            return true;
        };
        if parent <= 1 {
            return true;
        }
        let Some(pp) = self.system.process(SysPid::from_u32(parent)) else {
            return true;
        };
        if pp.start_time() > p.start_time {
            return true;
        }
        // A multiprocessing child's parent is the interpreter that spawned it; anything else
        // (systemd --user, a terminal's subreaper) took it in.
        let family =
            |name: &str| Launch::read(&[name.to_string()], None, name, Path::new("/")).family;
        let parent_family = pp
            .cmd()
            .first()
            .map(|a| family(&a.to_string_lossy()))
            .unwrap_or_else(|| family(&pp.name().to_string_lossy()));
        self.identity
            .as_ref()
            .is_ok_and(|id| parent_family != *id.family())
    }

    /// The warden named in each process's environment ([`crate::backend::process::MANAGED_BY_ENV`]).
    fn managers(&mut self, pids: &[u32]) -> HashMap<u32, Option<(u32, PathBuf)>> {
        if pids.is_empty() {
            return HashMap::new();
        }
        read_processes(
            &mut self.system,
            pids,
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_environ(UpdateKind::OnlyIfNotSet),
        );
        let prefix = format!("{}=", crate::backend::process::MANAGED_BY_ENV);
        pids.iter()
            .map(|pid| {
                let mark = self.system.process(SysPid::from_u32(*pid)).and_then(|p| {
                    p.environ().iter().find_map(|e| {
                        let e = e.to_str()?;
                        crate::backend::process::parse_managed_by(e.strip_prefix(&prefix)?)
                    })
                });
                (*pid, mark)
            })
            .collect()
    }

    /// Whether `pid` is a running warden of this user (its program is backend-warden).
    fn is_live_warden(&mut self, pid: u32) -> bool {
        read_processes(&mut self.system, &[pid], refresh_kind());
        self.system.process(SysPid::from_u32(pid)).is_some_and(|p| {
            is_warden_program(p) && p.user_id().map(|u| u.to_string()) == self.my_user
        })
    }

    /// Another warden among `pid`'s ancestors, if any.
    fn warden_ancestor(&self, pid: u32) -> Option<u32> {
        let mut cursor = parent_of(&self.system, pid);
        for _ in 0..64 {
            let pid = cursor?;
            if pid <= 1 {
                return None;
            }
            let p = self.system.process(SysPid::from_u32(pid))?;
            if pid != self.me && is_warden_program(p) {
                return Some(pid);
            }
            cursor = p.parent().map(SysPid::as_u32);
        }
        None
    }

    /// Whether a debugger (debugpy's launcher, pydevd) started `pid`.
    fn debugged(&self, pid: u32) -> bool {
        let Ok(identity) = &self.identity else {
            return false;
        };
        let mut cursor = parent_of(&self.system, pid);
        for _ in 0..8 {
            let Some(parent) = cursor.filter(|p| *p > 1) else {
                return false;
            };
            let Some(p) = self.system.process(SysPid::from_u32(parent)) else {
                return false;
            };
            if view(SysPid::from_u32(parent), p).judged_by(identity) == Some(Match::Debug) {
                return true;
            }
            cursor = p.parent().map(SysPid::as_u32);
        }
        false
    }

    /// The wrappers that started `p` and exist only for it, outermost first: non-interactive
    /// shells and package runners (`npm run`, `npx`, `sh -c`, `sh start_backend.sh`, `cmd /c
    /// start.bat`) of the same user, in the project (their working directory or script), with
    /// no other child. A user's terminal shell is never one.
    fn wrappers(&self, p: &ProcView, ours: &OwnTree, children: &Children) -> Vec<Wrapper> {
        let Ok(identity) = &self.identity else {
            return Vec::new();
        };
        let project = identity.project();
        let mut found = Vec::new();
        let mut child = p.pid;
        let mut cursor = p.parent;
        while let Some(pid) = cursor.filter(|pid| *pid > 1) {
            let Some(w) = self.system.process(SysPid::from_u32(pid)) else {
                break;
            };
            let w = view(SysPid::from_u32(pid), w);
            let only_child = children.of_pid(pid).iter().all(|c| *c == child);
            if !self.eligible(&w, ours)
                || !only_child
                || w.start_time > p.start_time
                || !is_wrapper(&w, project)
            {
                break;
            }
            found.push(Wrapper {
                pid,
                cmdline: w.cmd.join(" "),
                started_at: w.start_time,
                start_ticks: platform::start_ticks(pid),
            });
            child = pid;
            cursor = w.parent;
        }
        found.reverse();
        found
    }

    /// Everything listening on `port`. The owners are looked for first where they usually
    /// are: the managed backend and the last scan's holders, then the managed backend's tree
    /// and the matching processes.
    fn holders(&mut self, port: u16, ours: &OwnTree) -> Vec<PortHolder> {
        let mut listeners = std::mem::take(&mut self.listeners);
        let likeliest: Vec<u32> = ours
            .managed
            .into_iter()
            .chain(self.last_holders.iter().copied())
            .collect();
        let then = std::iter::once_with(|| {
            let mut pids = ours
                .managed
                .map(|managed| Children::of(&self.system).descendants(managed))
                .unwrap_or_default();
            pids.extend(self.matching());
            pids
        });
        let pids = listeners.holders(
            port,
            std::iter::once(likeliest).chain(then),
            !self.new_processes,
        );
        self.listeners = listeners;
        // Holders that started since the table was read.
        let unknown: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|pid| self.system.process(SysPid::from_u32(*pid)).is_none())
            .collect();
        read_processes(&mut self.system, &unknown, refresh_kind());
        self.judge(&unknown, Judge::New);
        self.last_holders.clone_from(&pids);
        pids.into_iter()
            .map(|pid| {
                describe_holder(
                    pid,
                    self.system.process(SysPid::from_u32(pid)),
                    ours.contains(&self.system, pid),
                )
            })
            .collect()
    }

    /// Kills each stray's whole tree: its wrappers are frozen first (a restart loop must not
    /// start a new copy), then SIGTERM (where the platform has it), then after `grace` a kill.
    /// Every PID is re-checked first, from a fresh read (identity, owner, start time at full
    /// resolution, each descendant started after its parent), and signalled only while it is
    /// still that process (a pidfd on Linux). Debug sessions are left alone unless
    /// `include_debug`; with `dry_run` nothing is signalled.
    pub fn kill(
        &mut self,
        strays: &[Stray],
        managed: Option<u32>,
        grace: Duration,
        dry_run: bool,
        include_debug: bool,
    ) -> KillReport {
        let mut report = KillReport::default();
        self.update(true, managed);
        let pids: Vec<u32> = strays
            .iter()
            .flat_map(|s| std::iter::once(s.pid).chain(s.wrappers.iter().map(|w| w.pid)))
            .collect();
        read_processes(&mut self.system, &pids, reread_kind());
        self.judge(&pids, Judge::Again);
        let ours = OwnTree::new(&self.system, self.me, managed);
        let children = Children::of(&self.system);
        let holding: HashSet<u32> = self
            .port
            .map(|port| platform::listening_pids(port, [self.last_holders.clone()]))
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut wrappers: Vec<Victim> = Vec::new();
        let mut victims: Vec<Victim> = Vec::new();
        for stray in strays {
            let pid = SysPid::from_u32(stray.pid);
            let fresh = self
                .system
                .process(pid)
                .filter(|p| is_process(p))
                .map(|p| view(pid, p));
            let ticks = platform::start_ticks(stray.pid);
            let verdict = fresh
                .as_ref()
                .and_then(|p| p.judged_by(self.identity.as_ref().ok()?));
            let why_not = match &fresh {
                None => Some("it has exited".to_string()),
                Some(p)
                    if p.start_time != stray.started_at
                        || (stray.start_ticks.is_some() && ticks != stray.start_ticks) =>
                {
                    Some(format!(
                        "PID {} now belongs to another process (started at a different time)",
                        stray.pid
                    ))
                }
                Some(p) if !self.eligible(p, &ours) => {
                    Some("it belongs to the warden, another user or the system".to_string())
                }
                Some(p)
                    if verdict.is_none()
                        || (verdict == Some(Match::Worker)
                            && !holding.contains(&p.pid)
                            && !self.orphaned(p)) =>
                {
                    Some("it no longer matches the backend's identity".to_string())
                }
                Some(_)
                    if self
                        .managers(&[stray.pid])
                        .remove(&stray.pid)
                        .flatten()
                        .is_some_and(|(w, _)| w != self.me && self.is_live_warden(w)) =>
                {
                    Some("another warden manages it".to_string())
                }
                Some(_) if stray.kind == StrayKind::DebugSession && !include_debug => Some(
                    "it is a debug session: left alone (kill-strays --include-debug, or the \
                     menu's item naming it, stops it too)"
                        .to_string(),
                ),
                Some(_) => None,
            };
            if let Some(why) = why_not {
                report.left.push((stray.pid, why));
                continue;
            }
            // Wrappers: each must still be that process and still the copy's ancestor.
            for wrapper in &stray.wrappers {
                let same = self
                    .system
                    .process(SysPid::from_u32(wrapper.pid))
                    .is_some_and(|p| {
                        p.start_time() == wrapper.started_at
                            && platform::start_ticks(wrapper.pid) == wrapper.start_ticks
                            && !ours.contains(&self.system, wrapper.pid)
                    })
                    && children.descendants(wrapper.pid).contains(&stray.pid);
                if same {
                    wrappers.push(Victim {
                        pid: wrapper.pid,
                        started: wrapper.started_at,
                        ticks: wrapper.start_ticks,
                    });
                }
            }
            for pid in children.descendants(stray.pid) {
                if let Some(p) = self.system.process(SysPid::from_u32(pid))
                    && !ours.contains(&self.system, pid)
                {
                    victims.push(Victim {
                        pid,
                        started: p.start_time(),
                        ticks: platform::start_ticks(pid),
                    });
                }
            }
            let kind = match stray.kind {
                StrayKind::Copy => String::new(),
                kind => format!("{}: ", kind.words()),
            };
            report.killed.push((
                stray.pid,
                format!("{kind}{} ({})", stray.name, shorten(&stray.cmdline, 100)),
            ));
        }
        if dry_run || (victims.is_empty() && wrappers.is_empty()) {
            return report;
        }
        // A parent link read from a table built over time (or, on Windows, a dead parent's PID
        // kept by its children) must not pull in a process that started before its parent.
        victims.retain(|v| {
            self.system
                .process(SysPid::from_u32(v.pid))
                .and_then(|p| p.parent())
                .and_then(|parent| {
                    let parent = parent.as_u32();
                    let pp = self.system.process(SysPid::from_u32(parent))?;
                    Some(match (platform::start_ticks(parent), v.ticks) {
                        (Some(parent_ticks), Some(ticks)) => parent_ticks <= ticks,
                        _ => pp.start_time() <= v.started,
                    })
                })
                .unwrap_or(true)
        });
        platform::freeze(&self.system, &wrappers);
        self.signal_all(&victims, sysinfo::Signal::Term);
        let deadline = Instant::now()
            .checked_add(grace)
            .unwrap_or_else(Instant::now);
        while Instant::now() < deadline && self.any_alive(&victims) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let everyone: Vec<Victim> = wrappers.iter().chain(&victims).copied().collect();
        self.signal_all(&everyone, sysinfo::Signal::Kill);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.any_alive(&everyone) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The victims that are gone left the table: their verdicts go too.
        let system = &self.system;
        self.verdicts
            .retain(|pid, _| system.process(SysPid::from_u32(*pid)).is_some());
        report
    }

    /// Signals each victim that is still the same process.
    fn signal_all(&mut self, victims: &[Victim], signal: sysinfo::Signal) {
        let pids: Vec<u32> = victims.iter().map(|v| v.pid).collect();
        read_processes(
            &mut self.system,
            &pids,
            ProcessRefreshKind::nothing().without_tasks(),
        );
        for victim in victims {
            if let Some(p) = self.system.process(SysPid::from_u32(victim.pid))
                && p.start_time() == victim.started
            {
                platform::signal(p, victim.ticks, signal);
            }
        }
    }

    fn any_alive(&mut self, victims: &[Victim]) -> bool {
        let pids: Vec<u32> = victims.iter().map(|v| v.pid).collect();
        read_processes(
            &mut self.system,
            &pids,
            ProcessRefreshKind::nothing().without_tasks(),
        );
        victims.iter().any(|v| {
            self.system
                .process(SysPid::from_u32(v.pid))
                .is_some_and(|p| {
                    p.start_time() == v.started
                        && p.status() != sysinfo::ProcessStatus::Zombie
                        && (v.ticks.is_none() || platform::start_ticks(v.pid) == v.ticks)
                })
        })
    }

    /// Judges by a new identity and port from now on (a config reload).
    pub fn reconfigure(&mut self, identity: Result<Identity, TooBroad>, port: Option<u16>) {
        self.identity = identity;
        self.port = port;
        self.verdicts.clear();
        self.young.clear();
        self.last_holders.clear();
        self.listeners = platform::Listeners::default();
        let all: Vec<u32> = self.system.processes().keys().map(|p| p.as_u32()).collect();
        read_processes(&mut self.system, &all, refresh_kind());
        self.judge(&all, Judge::New);
    }
}

/// A process to signal, as it was when it was chosen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Victim {
    pid: u32,
    started: u64,
    ticks: Option<u64>,
}

/// Whether `p` is one of this program's executables (a warden, its tray, its guardian).
fn is_warden_program(p: &Process) -> bool {
    let names = [
        Some(p.name().to_string_lossy().into_owned()),
        p.exe().map(|e| e.to_string_lossy().into_owned()),
    ];
    names
        .iter()
        .flatten()
        .any(|n| exe_family(n).starts_with("backend-warden"))
}

/// Whether `w` is a wrapper that can only be running for a copy of the backend in `project`:
/// a non-interactive shell or a package runner, in the project or running a script of it.
fn is_wrapper(w: &ProcView, project: &Path) -> bool {
    const SHELLS: &[&str] = &[
        "sh",
        "bash",
        "dash",
        "zsh",
        "ksh",
        "fish",
        "cmd",
        "powershell",
        "pwsh",
    ];
    const RUNNERS: &[&str] = &[
        "npm", "npx", "yarn", "pnpm", "uv", "poetry", "pipenv", "pdm", "hatch",
    ];
    let Some(first) = w.cmd.first() else {
        return false;
    };
    // Node rewrites its title: npm shows as one argument "npm exec json-server db.json".
    let family = exe_family(first.split_whitespace().next().unwrap_or(first));
    let script = w.cmd[1..]
        .iter()
        .find(|a| !a.starts_with('-') && !a.starts_with('/'));
    let runner = RUNNERS.contains(&family.as_str())
        || (matches!(family.as_str(), "python" | "node")
            && script.is_some_and(|s| RUNNERS.contains(&exe_family(s).as_str())));
    let shell = SHELLS.contains(&family.as_str())
        && w.cmd[1..].iter().any(|a| {
            !a.starts_with('-')
                || matches!(
                    a.to_lowercase().as_str(),
                    "-c" | "/c" | "-command" | "-file"
                )
        });
    if !runner && !shell {
        return false;
    }
    let in_project = |path: &Path| identity::normalize_path(path).starts_with(project);
    let cwd_in = w.cwd.as_deref().is_some_and(in_project);
    let script_in = w.cwd.as_deref().is_some_and(|cwd| {
        w.cmd[1..]
            .iter()
            .filter(|a| !a.starts_with('-'))
            .any(|a| cwd.join(a).is_file() && in_project(&cwd.join(a)))
    });
    cwd_in || script_in
}

/// PIDs with a listening TCP socket on `port` (IPv4 or IPv6), dead ones included.
pub fn listening_pids(port: u16) -> Vec<u32> {
    platform::listening_pids(port, std::iter::empty())
}

/// Whether anything listens on `port`, even where its owner cannot be seen.
pub fn port_listened(port: u16) -> bool {
    platform::port_listened(port)
}

/// Whether a listener on `port` that this user cannot attribute belongs to another user. True
/// on Linux (the socket table lists every socket; only another user's processes hide their
/// files); elsewhere an unknown owner says nothing (Wine reports PID 0 for every socket).
pub const UNSEEN_OWNER_IS_ANOTHER_USER: bool = cfg!(target_os = "linux");

/// Why the listener on `port` is not the backend tree led by `root`, if it is not: a health
/// probe that an older or foreign server answers must not pass for ours. `None` when one of
/// the listeners belongs to the tree, or when nothing can be told.
pub fn foreign_listener(port: u16, root: u32) -> Option<String> {
    if !port_listened(port) {
        return None; // the probe reached something else than `port`: nothing to judge
    }
    let pids = listening_pids(port);
    if pids.is_empty() {
        return UNSEEN_OWNER_IS_ANOTHER_USER.then(|| {
            format!(
                "port {port} answers, but its listener belongs to another user or a process this \
                 user cannot see, not to this backend"
            )
        });
    }
    let Ok(mut system) = System::new() else {
        return None;
    };
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing().without_tasks(),
    );
    let descends = |pid: u32| {
        let mut cursor = Some(pid);
        for _ in 0..256 {
            let Some(at) = cursor else { return false };
            if at == root {
                return true;
            }
            let Some(p) = system.process(SysPid::from_u32(at)) else {
                return false;
            };
            // A parent link to a process younger than the child is stale (a reused PID).
            cursor = p
                .parent()
                .filter(|parent| {
                    system
                        .process(*parent)
                        .is_none_or(|pp| pp.start_time() <= p.start_time())
                })
                .map(SysPid::as_u32);
        }
        false
    };
    if pids.iter().any(|pid| descends(*pid)) {
        return None;
    }
    let named: Vec<String> = pids
        .iter()
        .map(|pid| describe_holder(*pid, system.process(SysPid::from_u32(*pid)), false).describe())
        .collect();
    Some(format!(
        "port {port} answers, but its listener is not this backend: {}",
        named.join(", ")
    ))
}

/// Everything listening on `port`, described (for a blocked start).
pub fn port_holders(port: u16) -> Vec<PortHolder> {
    let pids = listening_pids(port);
    let Ok(mut system) = System::new() else {
        return Vec::new();
    };
    read_processes(&mut system, &pids, refresh_kind());
    pids.into_iter()
        .map(|pid| describe_holder(pid, system.process(SysPid::from_u32(pid)), false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_walk_the_tree() {
        let children =
            Children::from_parents([(10, 1), (11, 10), (12, 11), (13, 1), (14, 10)].into_iter());
        let mut d = children.descendants(10);
        d.sort_unstable();
        assert_eq!(d, [10, 11, 12, 14]);
        assert_eq!(children.descendants(99), [99]);
        assert_eq!(children.of_pid(10), [11, 14]);
        assert!(children.of_pid(12).is_empty());
    }

    fn wrapper(cmd: &[&str], cwd: &Path) -> ProcView {
        ProcView {
            pid: 50,
            parent: Some(1),
            name: cmd[0].rsplit('/').next().unwrap().into(),
            exe: None,
            cmd: cmd.iter().map(|a| a.to_string()).collect(),
            cwd: Some(cwd.into()),
            start_time: 1,
            memory: 0,
            user: Some("1000".into()),
            zombie: false,
        }
    }

    #[test]
    fn wrappers_are_non_interactive_shells_and_runners_of_the_project() {
        let project = tempfile::tempdir().unwrap();
        let p = identity::normalize_path(project.path());
        std::fs::write(
            p.join("start_backend.sh"),
            "while true; do python main.py; done",
        )
        .unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let e = identity::normalize_path(elsewhere.path());
        // (command line, working directory, a wrapper of a copy in `project`?)
        let table: [(&[&str], &Path, bool); 10] = [
            (&["sh", "start_backend.sh"], &p, true),
            (&["/bin/bash", "start_backend.sh"], &e, false), // no such script there
            (&["sh", "-c", "json-server db.json"], &p, true),
            (&["npm run start"], &p, true), // node's rewritten title
            (&["npm", "exec", "json-server"], &p, true),
            (&["cmd.exe", "/c", "start.bat"], &p, true),
            (&["bash"], &p, false),                       // a terminal's shell
            (&["-bash"], &p, false),                      // a login shell
            (&["bash", "-l"], &p, false),                 // interactive, with a flag
            (&["sh", "-c", "python main.py"], &e, false), // not in the project
        ];
        for (cmd, cwd, want) in table {
            assert_eq!(
                is_wrapper(&wrapper(cmd, cwd), &p),
                want,
                "{cmd:?} in {cwd:?}"
            );
        }
        // A script of the project run from elsewhere, by its path.
        let script = p.join("start_backend.sh");
        assert!(is_wrapper(
            &wrapper(&["bash", script.to_str().unwrap()], &e),
            &p
        ));
    }
}

/// Requests to the stray watch thread.
enum WatchRequest {
    ScanNow,
    Scan(std::sync::mpsc::Sender<Scan>),
    Kill {
        dry_run: bool,
        include_debug: bool,
        reply: std::sync::mpsc::Sender<KillReport>,
    },
    Reconfigure(Box<WatchSettings>),
    ReportTo(StrayReport),
    KillFound(Vec<u32>),
    Alert(Vec<u32>),
    ScanForStart(std::sync::mpsc::Sender<Scan>),
    KillForStart {
        pids: Vec<u32>,
        reply: std::sync::mpsc::Sender<KillReport>,
    },
}

/// Where the watch reports strays it found (the engine, which decides what happens to them):
/// the PIDs of every stray of a scan that has new ones.
pub type StrayReport = Box<dyn Fn(Vec<u32>) + Send>;

/// How the watch scans (`[strays]`, `stop.grace`). What happens to the strays it finds is the
/// engine's to decide (see [`StrayWatch::report_to`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchPolicy {
    /// Time between two scans.
    pub interval: Duration,
    /// How long a stray gets between SIGTERM and the kill.
    pub grace: Duration,
}

/// What a config reload hands the watch: what to look for, and how.
pub struct WatchSettings {
    /// What a copy of the backend is (an error turns detection off, with the reason).
    pub identity: Result<Identity, TooBroad>,
    /// The backend's port, if known.
    pub port: Option<u16>,
    /// How to scan and act.
    pub policy: WatchPolicy,
}

/// The stray watch: a thread that scans every `scan_interval` and on demand, publishes the
/// result, reports each new set of strays to the engine, and alerts or kills as the engine
/// decides (or as the user asks).
#[derive(Clone)]
pub struct StrayWatch {
    requests: std::sync::mpsc::Sender<WatchRequest>,
}

/// What the watch does with its findings.
pub struct WatchHooks {
    /// The PID of the backend the warden supervises right now, if any.
    pub managed: Box<dyn Fn() -> Option<u32> + Send>,
    /// Every scan's result.
    pub publish: Box<dyn Fn(&Scan) + Send>,
    /// Tells the user about strays (the engine decided to leave them running).
    pub alert: Box<dyn Fn(&Scan) + Send>,
    /// Strays were killed without asking (`action = "kill"`).
    pub killed: Box<dyn Fn(&KillReport) + Send>,
}

/// The strays of `scan` among `pids`.
fn chosen(scan: &Scan, pids: &[u32]) -> Vec<Stray> {
    scan.strays
        .iter()
        .filter(|s| pids.contains(&s.pid))
        .cloned()
        .collect()
}

impl StrayWatch {
    /// Starts the watch thread with `scanner` (which knows what to look for) and `policy`.
    /// The first scan happens at once.
    pub fn start(
        mut scanner: StrayScanner,
        policy: WatchPolicy,
        hooks: WatchHooks,
    ) -> std::io::Result<StrayWatch> {
        let (requests, inbox) = std::sync::mpsc::channel::<WatchRequest>();
        let WatchPolicy {
            mut interval,
            mut grace,
        } = policy;
        std::thread::Builder::new()
            .name("stray-watch".into())
            .spawn(move || {
                let mut known: Vec<u32> = Vec::new();
                // The latest scan: the strays a kill or an alert the engine asks for are in it.
                let mut last = Scan::default();
                let mut report: Option<StrayReport> = None;
                // News found before anyone listened for it.
                let mut unreported: Option<Vec<u32>> = None;
                let mut request = Some(WatchRequest::ScanNow);
                // Requests that do not scan (an alert, where to report) leave this as it is.
                let mut next_scan = Instant::now();
                loop {
                    let mut reply_scan = None;
                    let mut rescan = true;
                    match request.take() {
                        Some(WatchRequest::Kill {
                            dry_run,
                            include_debug,
                            reply,
                        }) => {
                            let managed = (hooks.managed)();
                            let fresh = scanner.scan(managed);
                            let report =
                                scanner.kill(&fresh.strays, managed, grace, dry_run, include_debug);
                            let _ = reply.send(report);
                        }
                        Some(WatchRequest::Scan(reply)) => reply_scan = Some(reply),
                        Some(WatchRequest::ScanForStart(reply)) => {
                            // The start names (and may have killed) the strays that hold the
                            // port: they are no news to report.
                            last = scanner.scan((hooks.managed)());
                            known = last.strays.iter().map(|s| s.pid).collect();
                            let _ = reply.send(last.clone());
                        }
                        Some(WatchRequest::KillForStart { pids, reply }) => {
                            let managed = (hooks.managed)();
                            let report =
                                scanner.kill(&chosen(&last, &pids), managed, grace, false, false);
                            (hooks.killed)(&report);
                            last = scanner.scan(managed);
                            known = last.strays.iter().map(|s| s.pid).collect();
                            let _ = reply.send(report);
                        }
                        Some(WatchRequest::KillFound(pids)) => {
                            let managed = (hooks.managed)();
                            let report =
                                scanner.kill(&chosen(&last, &pids), managed, grace, false, false);
                            (hooks.killed)(&report);
                        }
                        Some(WatchRequest::Alert(pids)) => {
                            if last.strays.iter().any(|s| pids.contains(&s.pid)) {
                                (hooks.alert)(&last);
                            }
                            rescan = false;
                        }
                        Some(WatchRequest::ReportTo(to)) => {
                            if let Some(pids) = unreported.take() {
                                to(pids);
                            }
                            report = Some(to);
                            rescan = false;
                        }
                        Some(WatchRequest::Reconfigure(settings)) => {
                            scanner.reconfigure(settings.identity, settings.port);
                            WatchPolicy { interval, grace } = settings.policy;
                            known.clear();
                        }
                        Some(WatchRequest::ScanNow) | None => {}
                    }
                    if rescan {
                        last = scanner.scan((hooks.managed)());
                        if last.strays.iter().any(|s| !known.contains(&s.pid)) {
                            let pids: Vec<u32> = last.strays.iter().map(|s| s.pid).collect();
                            match &report {
                                Some(to) => to(pids),
                                None => unreported = Some(pids),
                            }
                        }
                        known = last.strays.iter().map(|s| s.pid).collect();
                        (hooks.publish)(&last);
                        if let Some(reply) = reply_scan {
                            let _ = reply.send(last.clone());
                        }
                        next_scan = crate::clock::later(Instant::now(), interval);
                    }
                    match inbox.recv_timeout(next_scan.saturating_duration_since(Instant::now())) {
                        Ok(next) => request = Some(next),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(StrayWatch { requests })
    }

    /// Reports every scan with new strays to `to` from now on (the engine): the PIDs of all
    /// the strays of that scan. A report found before this is handed over at once.
    pub fn report_to(&self, to: StrayReport) {
        let _ = self.requests.send(WatchRequest::ReportTo(to));
    }

    /// Asks for a scan now (before a backend start, say).
    pub fn scan_now(&self) {
        let _ = self.requests.send(WatchRequest::ScanNow);
    }

    /// Scans now and returns the result.
    pub fn scan(&self) -> Option<Scan> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.requests.send(WatchRequest::Scan(reply)).ok()?;
        answer.recv().ok()
    }

    /// Kills the strays of a fresh scan (nothing with `dry_run`; debug sessions only with
    /// `include_debug`) and reports what happened.
    pub fn kill(&self, dry_run: bool, include_debug: bool) -> Option<KillReport> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.requests
            .send(WatchRequest::Kill {
                dry_run,
                include_debug,
                reply,
            })
            .ok()?;
        answer.recv().ok()
    }

    /// Kills the strays `pids` of the latest scan (never a debug session), on the watch's
    /// thread: the engine decided so (`action = "kill"`). Returns at once.
    pub fn kill_found(&self, pids: Vec<u32>) {
        let _ = self.requests.send(WatchRequest::KillFound(pids));
    }

    /// Tells the user about the latest scan's strays, if `pids` are still among them: the
    /// engine decided to leave them running. Returns at once.
    pub fn alert(&self, pids: Vec<u32>) {
        let _ = self.requests.send(WatchRequest::Alert(pids));
    }

    /// Before a start on a port that is taken: a fresh scan.
    pub fn scan_for_start(&self) -> Option<Scan> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.requests.send(WatchRequest::ScanForStart(reply)).ok()?;
        answer.recv().ok()
    }

    /// Kills the strays `pids` that hold the port a start needs (never a debug session), and
    /// returns what happened once it is done.
    pub fn kill_for_start(&self, pids: Vec<u32>) -> Option<KillReport> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.requests
            .send(WatchRequest::KillForStart { pids, reply })
            .ok()?;
        answer.recv().ok()
    }

    /// Looks for the copies of a reloaded config's backend from now on, and scans at once.
    pub fn reconfigure(&self, settings: WatchSettings) {
        let _ = self
            .requests
            .send(WatchRequest::Reconfigure(Box::new(settings)));
    }
}
