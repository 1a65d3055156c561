//! The process layer: launch the backend as the root of a tree the warden can signal and kill
//! as a whole, and tell when that tree is gone. One file per OS with identical signatures
//! (`unix.rs`, `windows.rs`); nothing above this module knows which one is in use.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

use crate::engine::supervisor::Pid;

#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod family;
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod ladder;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// The environment variable that names, in every process of a backend tree, the warden that
/// manages it: `"<warden PID> <home>"`. Another warden reads it to leave that tree alone.
pub const MANAGED_BY_ENV: &str = "BACKEND_WARDEN_MANAGED_BY";

/// The value of [`MANAGED_BY_ENV`] for this warden.
pub fn managed_by_value(home: &Path) -> String {
    format!("{} {}", std::process::id(), home.display())
}

/// Reads a [`MANAGED_BY_ENV`] value: the warden's PID and its home.
pub fn parse_managed_by(value: &str) -> Option<(u32, PathBuf)> {
    let (pid, home) = value.split_once(' ')?;
    Some((pid.parse().ok()?, PathBuf::from(home)))
}

pub use imp::{
    ExitWaiter, FORBIDDEN_PORT_HINT, GUARDIAN_SUBCOMMAND, Tree, TreeGuard, TreeKiller, adopt,
    guardian_main, wait_gone,
};

/// What a graceful stop request ([`Tree::terminate`]) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// The request went out; the tree has until the end of the grace period.
    Sent,
    /// Nothing can reach the tree (why): the grace period would be waited out for nothing.
    Unreachable(String),
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The program, as configured: a name looked up on `PATH`, or a path (relative to `cwd`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// Variables added to (or replacing those of) the warden's environment.
    pub env: BTreeMap<String, String>,
}

/// Why the backend could not be launched. These do not get better by retrying.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program is not on `PATH` / not at the given path.
    #[error(
        "command \"{program}\" not found ({detail}); check backend.command or give its full path"
    )]
    NotFound {
        /// As configured.
        program: String,
        /// Where it was looked for.
        detail: String,
    },
    /// The working directory does not exist.
    #[error("working directory {} does not exist; check backend.cwd", cwd.display())]
    CwdMissing {
        /// As resolved.
        cwd: PathBuf,
    },
    /// The OS refused to start it.
    #[error("could not start {}: {source}", program.display())]
    Spawn {
        /// The resolved program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A launched backend.
#[derive(Debug)]
pub struct Launched {
    /// The main process.
    pub pid: Pid,
    /// The whole tree, for stop and kill.
    pub tree: Tree,
    /// Waits for the main process to exit.
    pub waiter: ExitWaiter,
    /// Its standard output.
    pub stdout: ChildStdout,
    /// Its standard error.
    pub stderr: ChildStderr,
}

/// Variables every backend gets unless the user set them (in `backend.env` or the warden's own
/// environment). Its output goes to pipes, which changes how Python writes it:
/// - `PYTHONUNBUFFERED`: Python buffers stdout when it is a pipe; without this a crash loses
///   its last lines and the log trails the backend by kilobytes.
/// - `PYTHONUTF8`, `PYTHONIOENCODING`: on Windows a pipe gets the ANSI code page (cp1252...),
///   so a backend that prints `é` or an emoji dies of `UnicodeEncodeError` only under the
///   warden. UTF-8 everywhere; the log keeps the bytes as they came (a line that is not UTF-8
///   is shown with replacement characters, never dropped).
pub const PYTHON_DEFAULTS: &[(&str, &str)] = &[
    ("PYTHONUNBUFFERED", "1"),
    ("PYTHONUTF8", "1"),
    ("PYTHONIOENCODING", "utf-8"),
];

/// Launches the backend as the root of its own tree, with stdout and stderr piped. The tree is
/// in `guard`'s care from before the backend runs any code of its own: a warden killed in the
/// middle of a launch leaves nothing behind.
pub fn launch(spec: &LaunchSpec, guard: &mut TreeGuard) -> Result<Launched, LaunchError> {
    if !spec.cwd.is_dir() {
        return Err(LaunchError::CwdMissing {
            cwd: spec.cwd.clone(),
        });
    }
    let program = resolve_program(spec)?;
    let mut command = Command::new(&program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in PYTHON_DEFAULTS {
        if !spec.env.contains_key(*name) && std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    }
    let launch = imp::prepare(&mut command, guard);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(source) => {
            imp::not_launched(launch, guard);
            return Err(LaunchError::Spawn { program, source });
        }
    };
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => (out, err),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            imp::not_launched(launch, guard);
            return Err(LaunchError::Spawn {
                program,
                source: std::io::Error::other("no stdout/stderr pipe"),
            });
        }
    };
    let (pid, tree, waiter) =
        imp::launched(child, launch, guard).map_err(|source| LaunchError::Spawn {
            program: program.clone(),
            source,
        })?;
    Ok(Launched {
        pid,
        tree,
        waiter,
        stdout,
        stderr,
    })
}

/// Finds the program the way a shell would, without running one: on the `PATH` the backend
/// will get, or relative to its working directory when the name contains a separator.
pub fn resolve_program(spec: &LaunchSpec) -> Result<PathBuf, LaunchError> {
    let path: Option<OsString> = spec
        .env
        .get("PATH")
        .map(OsString::from)
        .or_else(|| std::env::var_os("PATH"));
    which::which_in(&spec.program, path, &spec.cwd).map_err(|_| {
        let has_separator = spec.program.contains('/') || spec.program.contains('\\');
        LaunchError::NotFound {
            program: spec.program.clone(),
            detail: if has_separator {
                format!(
                    "no executable file there, relative to {}",
                    spec.cwd.display()
                )
            } else {
                "not on PATH".to_string()
            },
        }
    })
}
