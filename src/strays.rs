//! Strays: copies of the backend that the warden does not own (started by hand, left behind by
//! a closed terminal or a dead reloader), and whoever holds the backend's port.
//!
//! [`Identity`] is pure: it says whether a process is a copy of *our* backend, from the
//! executable, the arguments that name the app (`main.py`, `-m uvicorn`, `app:app`) and the
//! working directory; never from "it is a python". [`StrayScanner`] reads the process table
//! (sysinfo, refreshing only the fields it needs) and the socket table (netstat2), and kills
//! precisely: every PID is re-checked (identity and start time) right before it is signalled,
//! so a PID reused by an unrelated process is never touched.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sysinfo::{Pid as SysPid, Process, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use crate::config::{GENERIC_PROGRAMS, StraysConfig};
use crate::process::LaunchSpec;
use crate::status::Stray;

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

/// "HH:MM" (UTC) of a Unix time, or the date too when it is not today.
fn clock_time(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    let stamp = humantime::format_rfc3339_seconds(t).to_string();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    if stamp.get(..10) == now.get(..10) {
        format!("{} UTC", stamp.get(11..16).unwrap_or(&stamp))
    } else {
        format!(
            "{} {} UTC",
            stamp.get(..10).unwrap_or(&stamp),
            stamp.get(11..16).unwrap_or("")
        )
    }
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

/// Reads the process and socket tables and kills strays. Owns its `System`, so refreshes only
/// update what changed.
pub struct StrayScanner {
    system: System,
    identity: Result<Identity, TooBroad>,
    port: Option<u16>,
    me: u32,
    my_user: Option<String>,
}

fn refresh_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .with_cmd(UpdateKind::OnlyIfNotSet)
        .with_exe(UpdateKind::OnlyIfNotSet)
        .with_cwd(UpdateKind::OnlyIfNotSet)
        .with_user(UpdateKind::OnlyIfNotSet)
        .with_memory()
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
            ProcessRefreshKind::nothing().with_user(UpdateKind::Always),
        );
        let my_user = system
            .process(SysPid::from_u32(me))
            .and_then(|p| p.user_id())
            .map(|u| u.to_string());
        Ok(StrayScanner {
            system,
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

    /// Refreshes and returns the whole process table (only the fields identity needs).
    fn process_table(&mut self) -> HashMap<u32, ProcView> {
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, refresh_kind());
        self.system
            .processes()
            .iter()
            .map(|(pid, p)| (pid.as_u32(), view(*pid, p)))
            .collect()
    }

    /// Scans the process table (and the port). `managed` is the backend the warden supervises
    /// (an adopted one is not the warden's descendant): its tree is never a stray.
    pub fn scan(&mut self, managed: Option<u32>) -> Scan {
        let started = Instant::now();
        let procs = self.process_table();
        let ours = self.own_tree(&procs, managed);
        let holders = self
            .port
            .map(|port| self.holders(port, &procs, &ours))
            .unwrap_or_default();
        let holding: HashSet<u32> = holders.iter().map(|h| h.pid).collect();
        let mut strays = Vec::new();
        if let Ok(identity) = &self.identity {
            let matching: HashSet<u32> = procs
                .values()
                .filter(|p| self.eligible(p, &ours) && identity.matches(p))
                .map(|p| p.pid)
                .collect();
            for pid in &matching {
                let p = &procs[pid];
                // Only the top of each stray tree: its children go with it.
                if p.parent.is_some_and(|parent| matching.contains(&parent)) {
                    continue;
                }
                let tree = descendants(*pid, &procs);
                strays.push(Stray {
                    pid: p.pid,
                    name: p.name.clone(),
                    cmdline: p.cmd.join(" "),
                    cwd: p.cwd.clone(),
                    started_at: p.start_time,
                    memory_bytes: tree
                        .iter()
                        .filter_map(|d| procs.get(d))
                        .map(|d| d.memory)
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

    /// The warden, its ancestors, everything it started and the managed backend's tree: never
    /// strays, never killed.
    fn own_tree(&self, procs: &HashMap<u32, ProcView>, managed: Option<u32>) -> HashSet<u32> {
        let mut ours: HashSet<u32> = descendants(self.me, procs).into_iter().collect();
        if let Some(pid) = managed {
            ours.extend(descendants(pid, procs));
        }
        let mut cursor = procs.get(&self.me).and_then(|p| p.parent);
        while let Some(pid) = cursor {
            if !ours.insert(pid) {
                break;
            }
            cursor = procs.get(&pid).and_then(|p| p.parent);
        }
        ours
    }

    /// Ours to judge: not the warden's tree, same user, not a system process.
    fn eligible(&self, p: &ProcView, ours: &HashSet<u32>) -> bool {
        !ours.contains(&p.pid)
            && !p.zombie
            && p.pid > 4
            && self.my_user.is_some()
            && p.user == self.my_user
    }

    fn holders(
        &self,
        port: u16,
        procs: &HashMap<u32, ProcView>,
        ours: &HashSet<u32>,
    ) -> Vec<PortHolder> {
        listening_pids(port)
            .into_iter()
            .map(|pid| match procs.get(&pid) {
                Some(p) => PortHolder {
                    pid,
                    name: p.name.clone(),
                    cmdline: p.cmd.join(" "),
                    alive: true,
                    ours: ours.contains(&pid),
                    started_at: p.start_time,
                },
                None => PortHolder {
                    pid,
                    name: String::new(),
                    cmdline: String::new(),
                    alive: false,
                    ours: false,
                    started_at: 0,
                },
            })
            .collect()
    }

    /// Kills each stray's whole tree: SIGTERM (where the platform has it), then after `grace`
    /// a kill. Every PID is re-checked first; with `dry_run` nothing is signalled.
    pub fn kill(
        &mut self,
        strays: &[Stray],
        managed: Option<u32>,
        grace: Duration,
        dry_run: bool,
    ) -> KillReport {
        let mut report = KillReport::default();
        let procs = self.process_table();
        let ours = self.own_tree(&procs, managed);
        let mut victims: Vec<(u32, u64)> = Vec::new();
        for stray in strays {
            let why_not = match procs.get(&stray.pid) {
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
            for pid in descendants(stray.pid, &procs) {
                if let Some(p) = procs.get(&pid)
                    && !ours.contains(&pid)
                {
                    victims.push((pid, p.start_time));
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
        report
    }

    /// Signals each (pid, start time) that is still the same process.
    fn signal_all(&mut self, victims: &[(u32, u64)], signal: sysinfo::Signal) {
        let pids: Vec<SysPid> = victims.iter().map(|(p, _)| SysPid::from_u32(*p)).collect();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing(),
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
        let pids: Vec<SysPid> = victims.iter().map(|(p, _)| SysPid::from_u32(*p)).collect();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing(),
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

/// `root` and every process below it.
fn descendants(root: u32, procs: &HashMap<u32, ProcView>) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs.values() {
        if let Some(parent) = p.parent {
            children.entry(parent).or_default().push(p.pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
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

/// PIDs with a listening TCP socket on `port` (IPv4 or IPv6), dead ones included.
pub fn listening_pids(port: u16) -> Vec<u32> {
    use netstat2::{AddressFamilyFlags, ProtocolFlags, ProtocolSocketInfo, TcpState};
    let Ok(sockets) = netstat2::get_sockets_info(
        AddressFamilyFlags::IPV4 | AddressFamilyFlags::IPV6,
        ProtocolFlags::TCP,
    ) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = sockets
        .into_iter()
        .filter(|s| {
            matches!(&s.protocol_socket_info,
                ProtocolSocketInfo::Tcp(t) if t.local_port == port && t.state == TcpState::Listen)
        })
        .flat_map(|s| s.associated_pids)
        // Wine (and some sandboxes) report no owner as PID 0: nobody to name.
        .filter(|pid| *pid != 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Everything listening on `port`, described (for a blocked start).
pub fn port_holders(port: u16) -> Vec<PortHolder> {
    let pids = listening_pids(port);
    let sys_pids: Vec<SysPid> = pids.iter().map(|p| SysPid::from_u32(*p)).collect();
    let Ok(mut system) = System::new() else {
        return Vec::new();
    };
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&sys_pids), true, refresh_kind());
    let procs: HashMap<u32, ProcView> = system
        .processes()
        .iter()
        .map(|(pid, p)| (pid.as_u32(), view(*pid, p)))
        .collect();
    let scanner = StrayScanner {
        system,
        identity: Err(TooBroad(String::new())),
        port: Some(port),
        me: std::process::id(),
        my_user: None,
    };
    scanner.holders(port, &procs, &HashSet::new())
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
        let mut procs = HashMap::new();
        for (pid, parent) in [(10, 1), (11, 10), (12, 11), (13, 1), (14, 10)] {
            let mut p = proc_("x", &["x"], "/");
            p.pid = pid;
            p.parent = Some(parent);
            procs.insert(pid, p);
        }
        let mut d = descendants(10, &procs);
        d.sort_unstable();
        assert_eq!(d, [10, 11, 12, 14]);
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
