//! The status board: what the engine publishes for whoever shows it (IPC clients, the tray,
//! the headless log). Two kinds of publication, each with one owner:
//!
//! - the latest state, read at any time: the supervisor's snapshot (written by the runner),
//!   the latest stray scan (the stray watch), the `.env` file read (the runner), and the
//!   setup the report states (port, demo, log path, ...: written at start and by a reload);
//! - [`Notice`]s, sent once and in order on one channel that the user interface reads: engine
//!   events, strays found or killed, a second launch, a config saved, output being lost, and
//!   "the state changed, read it again".

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::backend::strays::{KillReport, Scan};
use crate::config::Config;
use crate::engine::supervisor::{Event, Snapshot};
use crate::status::{Fixed, StatusReport};

/// What the warden tells its user interface, in the order it happened.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Something on the board changed (snapshot, scan, setup): read it again.
    Changed,
    /// A state transition worth telling the user about (crash, recovery, give-up, ...).
    Event(Event),
    /// A new set of strays was found and left running (one notice per set).
    Strays(Scan),
    /// Strays were killed without asking (`[strays] action = "kill"`).
    StraysKilled(KillReport),
    /// A second launch asked the warden to show itself.
    Show(Box<StatusReport>),
    /// The config file was saved and reloaded (the reload's message and the new config), or
    /// it was saved broken and the old config stays (why; once per distinct error).
    ConfigSaved(Result<(String, Box<Config>), String>),
    /// Writing `backend.log` started failing (once per episode); the message to show.
    LogError(String),
}

/// The sending end of the notice channel; cloned by every producer. Sending never blocks
/// and never fails: without a reader the notice is dropped.
#[derive(Debug, Clone, Default)]
pub struct Notices(Option<Sender<Notice>>);

impl Notices {
    /// A channel: the notices, and the receiving end for the user interface.
    pub fn channel() -> (Notices, Receiver<Notice>) {
        let (tx, rx) = mpsc::channel();
        (Notices(Some(tx)), rx)
    }

    /// Sends `notice` to the reader, if there is one.
    pub fn send(&self, notice: Notice) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(notice);
        }
    }
}

/// The latest state, shared with status readers (IPC, tray). IPC requests that wait (`start
/// --wait`) wait on it for a snapshot; the user interface is told of every change by a
/// [`Notice::Changed`].
#[derive(Debug, Default)]
pub struct StatusBoard {
    inner: Mutex<Option<(Snapshot, Instant)>>,
    changed: Condvar,
    scan: Mutex<Scan>,
    /// The `.env` file the current (or last) backend's environment was read from.
    env_file: Mutex<Option<PathBuf>>,
    /// The setup the report states.
    fixed: RwLock<Fixed>,
    notices: Notices,
}

impl StatusBoard {
    /// A board stating `fixed`, telling `notices` of every change.
    pub fn new(fixed: Fixed, notices: Notices) -> StatusBoard {
        StatusBoard {
            fixed: RwLock::new(fixed),
            notices,
            ..StatusBoard::default()
        }
    }

    /// The notice channel this board tells of its changes.
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    fn bump(&self) {
        self.notices.send(Notice::Changed);
    }

    /// The setup the report states.
    pub fn fixed(&self) -> Fixed {
        self.fixed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the setup the report states (a reload).
    pub fn update_fixed<T>(&self, change: impl FnOnce(&mut Fixed) -> T) -> T {
        let out = change(&mut self.fixed.write().unwrap_or_else(PoisonError::into_inner));
        self.bump();
        out
    }

    /// The `.env` file the current (or last) backend's environment was read from.
    pub fn env_file(&self) -> Option<PathBuf> {
        self.env_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_env_file(&self, path: Option<PathBuf>) {
        *self.env_file.lock().unwrap_or_else(PoisonError::into_inner) = path;
        self.bump();
    }

    /// The latest stray scan.
    pub fn scan(&self) -> Scan {
        self.scan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes a stray scan.
    pub fn set_scan(&self, scan: &Scan) {
        *self.scan.lock().unwrap_or_else(PoisonError::into_inner) = scan.clone();
        self.bump();
    }

    /// The latest snapshot, with its uptime brought up to now.
    pub fn current(&self) -> Option<Snapshot> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map(|(snap, at)| fresh(snap, *at))
    }

    /// Waits until `done` holds for the latest snapshot, or `limit` passes. Returns the last
    /// snapshot seen.
    pub fn wait_for(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Snapshot) -> bool,
    ) -> Option<Snapshot> {
        let deadline = crate::clock::later(Instant::now(), limit);
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some((snap, _)) = guard.as_ref()
                && done(snap)
            {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            guard = self
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        guard.as_ref().map(|(snap, at)| fresh(snap, *at))
    }

    /// Publishes the supervisor's snapshot taken at `at`; tells the user interface when it
    /// differs in more than the clock-driven fields.
    pub(crate) fn publish(&self, snapshot: Snapshot, at: Instant) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = guard
            .as_ref()
            .is_none_or(|(old, _)| !same_but_uptime(old, &snapshot));
        *guard = Some((snapshot, at));
        self.changed.notify_all();
        drop(guard);
        if changed {
            self.bump();
        }
    }
}

/// Equal but for the clock-driven fields (a probe result that changes nothing visible: the
/// tray shows whether probes pass, why they fail and whether the port listens yet).
fn same_but_uptime(a: &Snapshot, b: &Snapshot) -> bool {
    Snapshot {
        uptime: None,
        backoff_remaining: None,
        health: Default::default(),
        ..a.clone()
    } == Snapshot {
        uptime: None,
        backoff_remaining: None,
        health: Default::default(),
        ..b.clone()
    } && a.health.ok == b.health.ok
        && a.health.failure == b.health.failure
        && a.health.listening == b.health.listening
}

fn fresh(snap: &Snapshot, at: Instant) -> Snapshot {
    let mut snap = snap.clone();
    let elapsed = at.elapsed();
    snap.uptime = snap.uptime.map(|u| u + elapsed);
    snap.backoff_remaining = snap.backoff_remaining.map(|r| r.saturating_sub(elapsed));
    snap
}
