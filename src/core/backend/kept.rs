//! The backend left running by `quit --keep-backend`: recorded under the runtime folder so
//! that the next warden of the same config adopts it, after checking that the PID is still
//! that process (same start time, same command line) and that it runs what the config says.
//! Reads the process table through sysinfo; imports the process layer's `LaunchSpec`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sysinfo::{Pid as SysPid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use crate::backend::process::LaunchSpec;

/// The record's file name in the runtime folder.
pub const KEPT_FILE: &str = "kept-backend.json";

/// A backend tree let go by a warden that quit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBackend {
    /// Its main process.
    pub pid: u32,
    /// When that process started (seconds since the Unix epoch, as the OS reports it).
    pub started_at: u64,
    /// Its command line as the OS reported it when it was let go.
    pub cmdline: Vec<String>,
    /// What the warden launched: program, arguments, folder, extra environment.
    pub program: String,
    /// See `program`.
    pub args: Vec<String>,
    /// See `program`.
    pub cwd: PathBuf,
    /// See `program`.
    pub env: BTreeMap<String, String>,
    /// The port it serves, if known.
    pub port: Option<u16>,
}

/// What the OS says about a PID now: its start time and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveProcess {
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    /// The command line.
    pub cmdline: Vec<String>,
}

/// Reads `pid` from the process table; `None` when it is gone (or a zombie).
pub fn live_process(pid: u32) -> Option<LiveProcess> {
    let mut system = System::new().ok()?;
    let pid = SysPid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing()
            .without_tasks()
            .with_cmd(UpdateKind::Always),
    );
    let process = system.process(pid)?;
    if matches!(
        process.status(),
        sysinfo::ProcessStatus::Zombie | sysinfo::ProcessStatus::Dead
    ) {
        return None;
    }
    Some(LiveProcess {
        started_at: process.start_time(),
        cmdline: process
            .cmd()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    })
}

impl KeptBackend {
    /// The record for `pid`, launched from `spec`, as the OS sees it now.
    pub fn of(pid: u32, spec: &LaunchSpec, port: Option<u16>) -> Option<KeptBackend> {
        let live = live_process(pid)?;
        Some(KeptBackend {
            pid,
            started_at: live.started_at,
            cmdline: live.cmdline,
            program: spec.program.clone(),
            args: spec.args.clone(),
            cwd: spec.cwd.clone(),
            env: spec.env.clone(),
            port,
        })
    }

    /// Whether this record may be adopted by a warden that would launch `spec` on `port`,
    /// given what the OS says about the PID now (`live`). `Err` says why not.
    pub fn check(
        &self,
        live: Option<&LiveProcess>,
        spec: &LaunchSpec,
        port: Option<u16>,
    ) -> Result<(), String> {
        let Some(live) = live else {
            return Err(format!("PID {} has exited", self.pid));
        };
        if live.started_at != self.started_at || live.cmdline != self.cmdline {
            return Err(format!(
                "PID {} is now another process (its start time or command line changed)",
                self.pid
            ));
        }
        let same_launch = self.program == spec.program
            && self.args == spec.args
            && self.cwd == spec.cwd
            && without_mark(&self.env) == without_mark(&spec.env)
            && self.port == port;
        if !same_launch {
            return Err(format!(
                "PID {} was started from another config than the one in force now",
                self.pid
            ));
        }
        Ok(())
    }

    /// Writes the record into `runtime_dir`.
    pub fn save(&self, runtime_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(runtime_dir.join(KEPT_FILE), text)
    }

    /// Takes the record out of `runtime_dir` (it is used once, whatever comes of it).
    pub fn take(runtime_dir: &Path) -> Option<KeptBackend> {
        let path = runtime_dir.join(KEPT_FILE);
        let text = std::fs::read_to_string(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        serde_json::from_str(&text).ok()
    }
}

/// The environment without the warden's mark ([`crate::backend::process::MANAGED_BY_ENV`]), which
/// names the warden that launched it: another run of the same warden differs there.
fn without_mark(env: &BTreeMap<String, String>) -> BTreeMap<&String, &String> {
    env.iter()
        .filter(|(k, _)| *k != crate::backend::process::MANAGED_BY_ENV)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            program: "python".into(),
            args: vec!["main.py".into()],
            cwd: PathBuf::from("/srv/api"),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn adoption_checks_pid_start_time_command_line_and_config() {
        let kept = KeptBackend {
            pid: 4242,
            started_at: 1_800_000_000,
            cmdline: vec!["python".into(), "main.py".into()],
            program: "python".into(),
            args: vec!["main.py".into()],
            cwd: PathBuf::from("/srv/api"),
            env: BTreeMap::new(),
            port: Some(54112),
        };
        let same = LiveProcess {
            started_at: 1_800_000_000,
            cmdline: kept.cmdline.clone(),
        };
        let other_args = LaunchSpec {
            args: vec!["other.py".into()],
            ..spec()
        };
        // (live process, spec, port, adopted?)
        let table = [
            (Some(same.clone()), spec(), Some(54112), Ok(())),
            (None, spec(), Some(54112), Err("has exited")),
            (
                Some(LiveProcess {
                    started_at: 1_800_000_999,
                    ..same.clone()
                }),
                spec(),
                Some(54112),
                Err("now another process"),
            ),
            (
                Some(LiveProcess {
                    cmdline: vec!["vim".into()],
                    ..same.clone()
                }),
                spec(),
                Some(54112),
                Err("now another process"),
            ),
            (
                Some(same.clone()),
                other_args,
                Some(54112),
                Err("another config"),
            ),
            (
                Some(same.clone()),
                spec(),
                Some(8000),
                Err("another config"),
            ),
        ];
        for (live, spec, port, want) in table {
            let got = kept.check(live.as_ref(), &spec, port);
            match (want, got) {
                (Ok(()), Ok(())) => {}
                (Err(part), Err(why)) => assert!(why.contains(part), "{why}"),
                (want, got) => panic!("{live:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn records_round_trip_once() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let kept = KeptBackend::of(me, &spec(), None).unwrap();
        let live = live_process(me);
        assert!(kept.check(live.as_ref(), &spec(), None).is_ok());
        kept.save(dir.path()).unwrap();
        assert_eq!(KeptBackend::take(dir.path()), Some(kept));
        assert_eq!(KeptBackend::take(dir.path()), None, "used once");
    }
}
