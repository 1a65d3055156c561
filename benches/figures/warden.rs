//! A headless warden for the benchmarks: its stderr goes to /dev/null (a reader of it would be
//! one more thread to wake on every line and would compete for the CPU), and the bench reads
//! its own log, `logs/warden.log`, whose lines carry microsecond timestamps.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support;

/// A warden running in its own temp home (headless unless started with `start_tray_in`).
pub struct Warden {
    child: Child,
    home: tempfile::TempDir,
    /// Lines of warden.log before this one were matched already.
    seen: usize,
}

impl Warden {
    /// Writes `config` to a new home and starts `backend-warden run --headless` there.
    pub fn start(config: &str) -> Warden {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config.toml"), config).unwrap();
        Warden::start_in(home)
    }

    /// Starts a headless warden in `home` (with no config.toml there: the built-in demo
    /// backend).
    pub fn start_in(home: tempfile::TempDir) -> Warden {
        Warden::spawn(home, &["run", "--headless"])
    }

    /// Starts a warden with its tray icon in `home` (needs a desktop session: `DISPLAY` and a
    /// session bus).
    pub fn start_tray_in(home: tempfile::TempDir) -> Warden {
        Warden::spawn(home, &["run"])
    }

    fn spawn(home: tempfile::TempDir, args: &[&str]) -> Warden {
        let child = Command::new(support::exe())
            .args(args)
            .env("BACKEND_WARDEN_HOME", home.path())
            .env_remove("BACKEND_WARDEN_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Warden {
            child,
            home,
            seen: 0,
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.home().join("logs").join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path("warden.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits for the next warden.log line (after the last one matched) that contains every
    /// one of `parts`; returns it. Polls every 10 ms: the figures come from the timestamps.
    pub fn expect(&mut self, parts: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.lines();
            if let Some((i, line)) = lines
                .iter()
                .enumerate()
                .skip(self.seen)
                .find(|(_, l)| parts.iter().all(|p| l.contains(p)))
            {
                self.seen = i + 1;
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for a warden line with {parts:?}; warden.log:\n{}",
                lines.join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lines of warden.log containing all `parts`.
    pub fn count(&self, parts: &[&str]) -> usize {
        self.lines()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Waits for "backend started" and returns its PID.
    pub fn started_pid(&mut self) -> u32 {
        let line = self.expect(&["backend started"], Duration::from_secs(30));
        support::field(&line, "pid").unwrap()
    }

    /// SIGTERM, then waits (at most 20 s) for the warden to exit.
    pub fn terminate(&mut self) {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("the warden did not exit within 20 s of SIGTERM");
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
