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

use crate::config::{GENERIC_PROGRAMS, StraysConfig};
use crate::process::LaunchSpec;
use crate::status::Stray;

// Which processes a scan reads, and who holds a socket: one file per OS, same signatures.
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(not(target_os = "linux"))]
mod portable;
#[cfg(not(target_os = "linux"))]
use portable as platform;

/// Paths compare case-insensitively where the platform's file systems usually do.
const CASE_INSENSITIVE_PATHS: bool = cfg!(any(windows, target_os = "macos"));

/// What a copy of our backend looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The executable's family ("python" for python3.11, python.exe, ...), if it must match.
    exe_family: Option<String>,
    /// Arguments that must all appear in the command line, each as a whole argument (or as
    /// the tail of a path argument, for scripts).
    markers: Vec<String>,
    /// Strings that must all appear somewhere in the command line (explicit rules).
    contains: Vec<String>,
    /// The working directory, if it must match.
    cwd: Option<PathBuf>,
}

/// Why no identity could be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stray detection is off: nothing in [backend] identifies the app (`{0}` alone would match \
     every such program); add [strays] cmdline_contains = [\"...\"] naming your app"
)]
pub struct TooBroad(pub String);

/// The lowercase name of an executable without directory, `.exe` and version suffix.
pub fn exe_family(name: &str) -> String {
    let file = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .to_lowercase();
    let stem = file.strip_suffix(".exe").unwrap_or(&file);
    stem.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
        .to_string()
}

/// The arguments that name the app: positional arguments, `-m MODULE`, minus values of
/// options (`--port 54112`). An option's value is recognised when the option has no `=` and
/// the next argument does not start with `-`; flags such as `--reload` are skipped.
fn app_markers(args: &[String]) -> Vec<String> {
    let mut markers = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "-m" || arg == "-c" {
            if let Some(module) = args.get(i + 1) {
                markers.push(format!("{arg} {module}"));
            }
            i += 2;
            continue;
        }
        if arg.starts_with('-') {
            let takes_value = !arg.contains('=')
                && args.get(i + 1).is_some_and(|next| !next.starts_with('-'))
                && !is_known_flag(arg);
            i += if takes_value { 2 } else { 1 };
            continue;
        }
        markers.push(arg.clone());
        i += 1;
    }
    markers
}

/// Options that never take a value, so the argument after them is positional.
fn is_known_flag(arg: &str) -> bool {
    matches!(
        arg,
        "--reload" | "--debug" | "--verbose" | "-v" | "-u" | "-B" | "-O" | "--proxy-headers"
    )
}

fn normalize_path(path: &Path) -> PathBuf {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if CASE_INSENSITIVE_PATHS {
        PathBuf::from(path.to_string_lossy().to_lowercase())
    } else {
        path
    }
}

fn same_text(a: &str, b: &str) -> bool {
    if CASE_INSENSITIVE_PATHS {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

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

impl Identity {
    /// The identity of the backend `spec` launches, or the explicit `[strays]` rules.
    pub fn new(
        spec: &LaunchSpec,
        rules: &StraysConfig,
        config_dir: &Path,
    ) -> Result<Identity, TooBroad> {
        if rules.has_rules() {
            return Ok(Identity {
                exe_family: rules.exe_name.as_deref().map(exe_family),
                markers: Vec::new(),
                contains: rules.cmdline_contains.clone(),
                cwd: rules.cwd.as_ref().map(|cwd| {
                    normalize_path(&if cwd.is_absolute() {
                        cwd.clone()
                    } else {
                        config_dir.join(cwd)
                    })
                }),
            });
        }
        let family = exe_family(&spec.program);
        let markers = app_markers(&spec.args);
        let specific = markers.iter().any(|m| {
            let m = m.trim_start_matches("-m ").to_lowercase();
            !GENERIC_PROGRAMS.contains(&m.as_str())
        }) || !GENERIC_PROGRAMS.contains(&family.as_str());
        if !specific {
            return Err(TooBroad(
                std::iter::once(spec.program.clone())
                    .chain(spec.args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
        }
        Ok(Identity {
            exe_family: Some(family),
            markers,
            contains: Vec::new(),
            cwd: Some(normalize_path(&spec.cwd)),
        })
    }

    /// Whether `p` is a copy of the backend.
    pub fn matches(&self, p: &ProcView) -> bool {
        if p.cmd.is_empty() {
            return false; // kernel threads, zombies, processes we may not inspect
        }
        if let Some(family) = &self.exe_family {
            let names = [
                Some(exe_family(&p.name)),
                p.exe.as_deref().map(|e| exe_family(&e.to_string_lossy())),
                p.cmd.first().map(|a| exe_family(a)),
            ];
            if !names.iter().flatten().any(|n| n == family) {
                return false;
            }
        }
        if let Some(cwd) = &self.cwd {
            match &p.cwd {
                Some(theirs) if normalize_path(theirs) == *cwd => {}
                _ => return false,
            }
        }
        let args = &p.cmd[1..];
        let has_marker = |marker: &str| {
            if let Some(module) = marker.strip_prefix("-m ").or(marker.strip_prefix("-c ")) {
                let flag = &marker[..2];
                return args
                    .windows(2)
                    .any(|w| w[0] == flag && same_text(&w[1], module));
            }
            args.iter().any(|arg| {
                same_text(arg, marker)
                    || (looks_like_path(marker)
                        && arg.len() > marker.len()
                        && same_text(&arg[arg.len() - marker.len()..], marker)
                        && arg[..arg.len() - marker.len()].ends_with(['/', '\\']))
            })
        };
        if !self.markers.iter().all(|m| has_marker(m)) {
            return false;
        }
        let joined = p.cmd.join(" ");
        self.contains.iter().all(|part| {
            if CASE_INSENSITIVE_PATHS {
                joined.to_lowercase().contains(&part.to_lowercase())
            } else {
                joined.contains(part.as_str())
            }
        })
    }
}

fn looks_like_path(marker: &str) -> bool {
    marker.contains(['/', '\\']) || marker.contains('.')
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

fn shorten(text: &str, max: usize) -> String {
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
    matches: bool,
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
    fn of(system: &System) -> Children {
        Children::from_parents(
            system
                .processes()
                .iter()
                .filter(|(_, p)| is_process(p))
                .filter_map(|(pid, p)| Some((pid.as_u32(), p.parent()?.as_u32()))),
        )
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
                        .filter(|(pid, v)| v.matches && Some(**pid) != managed)
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
            let matches = is_process(p) && identity.matches(&view(SysPid::from_u32(pid), p));
            self.verdicts.insert(
                pid,
                Verdict {
                    start_time,
                    matches,
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
            .filter(|(_, v)| v.matches)
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
        let candidates: HashMap<u32, ProcView> = self
            .matching()
            .filter_map(|pid| {
                let p = view(
                    SysPid::from_u32(pid),
                    self.system.process(SysPid::from_u32(pid))?,
                );
                self.eligible(&p, &ours).then_some((pid, p))
            })
            .collect();
        let mut strays = Vec::new();
        if !candidates.is_empty() {
            let children = Children::of(&self.system);
            // Only the top of each stray tree: its children go with it.
            let trees: Vec<(&ProcView, Vec<u32>)> = candidates
                .values()
                .filter(|p| {
                    !p.parent
                        .is_some_and(|parent| candidates.contains_key(&parent))
                })
                .map(|p| (p, children.descendants(p.pid)))
                .collect();
            // The matching ones were read already; the rest of each tree is read for its memory.
            let rest: Vec<u32> = trees
                .iter()
                .flat_map(|(_, tree)| tree)
                .filter(|pid| !self.verdicts.get(pid).is_some_and(|v| v.matches))
                .copied()
                .collect();
            read_processes(&mut self.system, &rest, refresh_kind());
            for (p, tree) in trees {
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
                    holds_port: tree.iter().any(|d| holding.contains(d)),
                });
            }
        }
        strays.sort_by_key(|s| s.pid);
        Scan {
            strays,
            port_holders: holders,
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

    /// Kills each stray's whole tree: SIGTERM (where the platform has it), then after `grace`
    /// a kill. Every PID is re-checked first, from a fresh read of the whole table (the
    /// strays' identity fields too); with `dry_run` nothing is signalled.
    pub fn kill(
        &mut self,
        strays: &[Stray],
        managed: Option<u32>,
        grace: Duration,
        dry_run: bool,
    ) -> KillReport {
        let mut report = KillReport::default();
        self.update(true, managed);
        let pids: Vec<u32> = strays.iter().map(|s| s.pid).collect();
        read_processes(&mut self.system, &pids, reread_kind());
        self.judge(&pids, Judge::Again);
        let ours = OwnTree::new(&self.system, self.me, managed);
        let children = Children::of(&self.system);
        let mut victims: Vec<(u32, u64)> = Vec::new();
        for stray in strays {
            let pid = SysPid::from_u32(stray.pid);
            let fresh = self
                .system
                .process(pid)
                .filter(|p| is_process(p))
                .map(|p| view(pid, p));
            let why_not = match &fresh {
                None => Some("it has exited".to_string()),
                Some(p) if p.start_time != stray.started_at => Some(format!(
                    "PID {} now belongs to another process (started at a different time)",
                    stray.pid
                )),
                Some(p) if !self.eligible(p, &ours) => {
                    Some("it belongs to the warden, another user or the system".to_string())
                }
                Some(p) if !self.identity.as_ref().is_ok_and(|id| id.matches(p)) => {
                    Some("it no longer matches the backend's identity".to_string())
                }
                Some(_) => None,
            };
            if let Some(why) = why_not {
                report.left.push((stray.pid, why));
                continue;
            }
            for pid in children.descendants(stray.pid) {
                if let Some(p) = self.system.process(SysPid::from_u32(pid))
                    && !ours.contains(&self.system, pid)
                {
                    victims.push((pid, p.start_time()));
                }
            }
            report.killed.push((
                stray.pid,
                format!("{} ({})", stray.name, shorten(&stray.cmdline, 100)),
            ));
        }
        if dry_run || victims.is_empty() {
            return report;
        }
        self.signal_all(&victims, sysinfo::Signal::Term);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.any_alive(&victims) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_all(&victims, sysinfo::Signal::Kill);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.any_alive(&victims) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The victims that are gone left the table: their verdicts go too.
        let system = &self.system;
        self.verdicts
            .retain(|pid, _| system.process(SysPid::from_u32(*pid)).is_some());
        report
    }

    /// Signals each (pid, start time) that is still the same process.
    fn signal_all(&mut self, victims: &[(u32, u64)], signal: sysinfo::Signal) {
        let pids: Vec<u32> = victims.iter().map(|(p, _)| *p).collect();
        read_processes(
            &mut self.system,
            &pids,
            ProcessRefreshKind::nothing().without_tasks(),
        );
        for (pid, started) in victims {
            if let Some(p) = self.system.process(SysPid::from_u32(*pid))
                && p.start_time() == *started
                && p.kill_with(signal).is_none()
            {
                // The platform has no such signal (Windows and SIGTERM): go straight to kill.
                p.kill();
            }
        }
    }

    fn any_alive(&mut self, victims: &[(u32, u64)]) -> bool {
        let pids: Vec<u32> = victims.iter().map(|(p, _)| *p).collect();
        read_processes(
            &mut self.system,
            &pids,
            ProcessRefreshKind::nothing().without_tasks(),
        );
        victims.iter().any(|(pid, started)| {
            self.system
                .process(SysPid::from_u32(*pid))
                .is_some_and(|p| {
                    p.start_time() == *started && p.status() != sysinfo::ProcessStatus::Zombie
                })
        })
    }
}

/// PIDs with a listening TCP socket on `port` (IPv4 or IPv6), dead ones included.
pub fn listening_pids(port: u16) -> Vec<u32> {
    platform::listening_pids(port, std::iter::empty())
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
    use std::collections::BTreeMap;

    fn spec(program: &str, args: &[&str], cwd: &str) -> LaunchSpec {
        LaunchSpec {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: cwd.into(),
            env: BTreeMap::new(),
        }
    }

    fn proc_(name: &str, cmd: &[&str], cwd: &str) -> ProcView {
        ProcView {
            pid: 100,
            parent: Some(1),
            name: name.into(),
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
    fn exe_families() {
        for (name, family) in [
            ("python3.11", "python"),
            ("/usr/bin/python3", "python"),
            (r"C:\Python312\python.exe", "python"),
            ("PYTHON.EXE", "python"),
            ("uvicorn", "uvicorn"),
            ("node20", "node"),
        ] {
            assert_eq!(exe_family(name), family, "{name}");
        }
    }

    #[test]
    fn markers_name_the_app_not_the_options() {
        let m =
            |args: &[&str]| app_markers(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(m(&["main.py"]), ["main.py"]);
        assert_eq!(
            m(&["-m", "uvicorn", "app:app", "--reload", "--port", "54112"]),
            ["-m uvicorn", "app:app"]
        );
        assert_eq!(m(&["-u", "main.py", "--port=8000"]), ["main.py"]);
        assert_eq!(m(&["--host", "127.0.0.1", "serve.py"]), ["serve.py"]);
    }

    #[test]
    fn identity_is_precise() {
        let id = Identity::new(
            &spec("python", &["main.py"], "/srv/api"),
            &StraysConfig::default(),
            Path::new("/"),
        )
        .unwrap();
        // (process, is it a copy of our backend?)
        let table = [
            (proc_("python3", &["python3", "main.py"], "/srv/api"), true),
            (
                proc_(
                    "python3.11",
                    &["/usr/bin/python3.11", "-u", "main.py"],
                    "/srv/api",
                ),
                true,
            ),
            (
                proc_("python3", &["python3", "/srv/api/main.py"], "/srv/api"),
                true,
            ),
            // same script, other folder: another project's main.py
            (
                proc_("python3", &["python3", "main.py"], "/srv/other"),
                false,
            ),
            // a different script in the same folder
            (
                proc_("python3", &["python3", "worker.py"], "/srv/api"),
                false,
            ),
            // an unrelated python
            (
                proc_("python3", &["python3", "-m", "http.server"], "/srv/api"),
                false,
            ),
            // not python
            (proc_("node", &["node", "main.py"], "/srv/api"), false),
            // main.py as a substring of another argument is not main.py
            (
                proc_("python3", &["python3", "not_main.py"], "/srv/api"),
                false,
            ),
            // a process whose command line we cannot read
            (proc_("python3", &[], "/srv/api"), false),
        ];
        for (p, want) in table {
            assert_eq!(id.matches(&p), want, "{:?}", p.cmd);
        }
    }

    #[test]
    fn uvicorn_identity() {
        let id = Identity::new(
            &spec(
                "/venv/bin/python",
                &["-m", "uvicorn", "app:app", "--reload", "--port", "54112"],
                "/srv/api",
            ),
            &StraysConfig::default(),
            Path::new("/"),
        )
        .unwrap();
        let by_hand = proc_(
            "python",
            &["python", "-m", "uvicorn", "app:app", "--port", "9000"],
            "/srv/api",
        );
        assert!(id.matches(&by_hand), "other port, same app: a copy");
        let other_app = proc_(
            "python",
            &["python", "-m", "uvicorn", "other:app"],
            "/srv/api",
        );
        assert!(!id.matches(&other_app));
    }

    #[test]
    fn generic_commands_without_an_app_are_too_broad() {
        let err = Identity::new(
            &spec("python", &["-m", "uvicorn"], "/srv/api"),
            &StraysConfig::default(),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cmdline_contains"), "{err}");
        // a program of its own is specific enough (with its cwd)
        assert!(
            Identity::new(
                &spec("./api-server", &[], "/srv/api"),
                &StraysConfig::default(),
                Path::new("/")
            )
            .is_ok()
        );
    }

    #[test]
    fn explicit_rules_replace_the_derived_identity() {
        let rules = StraysConfig {
            cmdline_contains: vec!["manage.py runserver".into()],
            ..StraysConfig::default()
        };
        let id = Identity::new(&spec("python", &["x.py"], "/a"), &rules, Path::new("/")).unwrap();
        assert!(id.matches(&proc_(
            "python",
            &["python", "manage.py", "runserver"],
            "/anywhere"
        )));
        assert!(!id.matches(&proc_("python", &["python", "x.py"], "/a")));
    }

    #[test]
    fn descendants_walk_the_tree() {
        let children =
            Children::from_parents([(10, 1), (11, 10), (12, 11), (13, 1), (14, 10)].into_iter());
        let mut d = children.descendants(10);
        d.sort_unstable();
        assert_eq!(d, [10, 11, 12, 14]);
        assert_eq!(children.descendants(99), [99]);
    }
}

/// Requests to the stray watch thread.
enum WatchRequest {
    ScanNow,
    Scan(std::sync::mpsc::Sender<Scan>),
    Kill {
        dry_run: bool,
        reply: std::sync::mpsc::Sender<KillReport>,
    },
}

/// The stray watch: a thread that scans every `scan_interval` and on demand, publishes the
/// result, raises one alert per new set of strays, and kills on request (or at once, with
/// `action = "kill"`).
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
    /// A new, non-empty set of strays was found.
    pub alert: Box<dyn Fn(&Scan) + Send>,
    /// Strays were killed automatically (`action = "kill"`).
    pub killed: Box<dyn Fn(&KillReport) + Send>,
}

impl StrayWatch {
    /// Starts the watch thread. The first scan happens at once.
    pub fn start(
        mut scanner: StrayScanner,
        interval: Duration,
        auto_kill: bool,
        grace: Duration,
        hooks: WatchHooks,
    ) -> std::io::Result<StrayWatch> {
        let (requests, inbox) = std::sync::mpsc::channel::<WatchRequest>();
        std::thread::Builder::new()
            .name("stray-watch".into())
            .spawn(move || {
                let mut known: Vec<u32> = Vec::new();
                let mut request = Some(WatchRequest::ScanNow);
                loop {
                    let mut reply_scan = None;
                    match request.take() {
                        Some(WatchRequest::Kill { dry_run, reply }) => {
                            let managed = (hooks.managed)();
                            let fresh = scanner.scan(managed);
                            let report = scanner.kill(&fresh.strays, managed, grace, dry_run);
                            let _ = reply.send(report);
                        }
                        Some(WatchRequest::Scan(reply)) => reply_scan = Some(reply),
                        Some(WatchRequest::ScanNow) | None => {}
                    }
                    let mut last = scanner.scan((hooks.managed)());
                    let pids: Vec<u32> = last.strays.iter().map(|s| s.pid).collect();
                    if !pids.is_empty() && pids != known {
                        (hooks.alert)(&last);
                        if auto_kill {
                            let managed = (hooks.managed)();
                            let report = scanner.kill(&last.strays, managed, grace, false);
                            (hooks.killed)(&report);
                            last = scanner.scan(managed);
                        }
                    }
                    known = last.strays.iter().map(|s| s.pid).collect();
                    (hooks.publish)(&last);
                    if let Some(reply) = reply_scan {
                        let _ = reply.send(last);
                    }
                    match inbox.recv_timeout(interval) {
                        Ok(next) => request = Some(next),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(StrayWatch { requests })
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

    /// Kills the strays of a fresh scan (nothing with `dry_run`) and reports what happened.
    pub fn kill(&self, dry_run: bool) -> Option<KillReport> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.requests
            .send(WatchRequest::Kill { dry_run, reply })
            .ok()?;
        answer.recv().ok()
    }
}
