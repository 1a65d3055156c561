//! What a stray scan finds, as `status --json` and `kill-strays` report it (the field names
//! are an interface): stray copies of the backend, their wrappers, and copies another warden
//! manages.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A process that looks like our backend but is not the one the warden manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stray {
    /// Its PID.
    pub pid: u32,
    /// Its executable name.
    pub name: String,
    /// Its command line.
    pub cmdline: String,
    /// Its working directory, if readable.
    pub cwd: Option<PathBuf>,
    /// When it started (seconds since the Unix epoch).
    pub started_at: u64,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
    /// Whether it listens on the backend's port.
    pub holds_port: bool,
    /// What it is: a copy started by hand, an orphaned worker of one, a debug session.
    #[serde(default)]
    pub kind: StrayKind,
    /// Wrappers that started it and belong to it (`npm run`, `sh -c`, a restart loop in a
    /// script of the project), outermost first: `kill-strays` stops them first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrappers: Vec<Wrapper>,
    /// Its start time at the kernel's full resolution (clock ticks since boot on Linux), so
    /// that a kill never hits a PID reused within the same second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

/// What kind of stray a process is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrayKind {
    /// A copy of the backend started outside the warden.
    #[default]
    Copy,
    /// A worker (multiprocessing child) of an earlier copy whose parent is gone, or that holds
    /// the backend's port: uvicorn's `--reload` worker after its reloader died.
    OrphanedWorker,
    /// A copy run under a debugger (debugpy, pydevd, `node --inspect`): left alone by
    /// `kill-strays` unless asked (`--include-debug`).
    DebugSession,
}

impl StrayKind {
    /// "a copy", "an orphaned worker", "a debug session".
    pub fn words(self) -> &'static str {
        match self {
            StrayKind::Copy => "a copy",
            StrayKind::OrphanedWorker => "an orphaned worker",
            StrayKind::DebugSession => "a debug session",
        }
    }
}

/// A wrapper process of a stray (see [`Stray::wrappers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrapper {
    /// Its PID.
    pub pid: u32,
    /// Its command line.
    pub cmdline: String,
    /// When it started (seconds since the Unix epoch).
    pub started_at: u64,
    /// Its start time at full resolution (see [`Stray::start_ticks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

/// A copy of this backend that another warden manages (two homes pointing at one project):
/// never a stray, never killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignCopy {
    /// Its PID.
    pub pid: u32,
    /// Its command line.
    pub cmdline: String,
    /// The PID of the warden that manages it, if known.
    pub warden_pid: Option<u32>,
    /// That warden's home (`BACKEND_WARDEN_HOME` or its config folder), if known.
    pub home: Option<PathBuf>,
    /// Whether its tree listens on this backend's port.
    pub holds_port: bool,
}

impl ForeignCopy {
    /// "managed by another warden (home /x, PID 12)".
    pub fn describe(&self) -> String {
        let home = self.home.as_ref().map_or_else(
            || "unknown home".to_string(),
            |h| format!("home {}", h.display()),
        );
        match self.warden_pid {
            Some(pid) => format!("managed by another warden ({home}, PID {pid})"),
            None => format!("managed by another warden ({home})"),
        }
    }
}
