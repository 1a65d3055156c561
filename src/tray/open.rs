//! Opening files, folders and web addresses for the tray, with fallbacks that work where no
//! program is associated: `.toml` has no default app on a stock Windows, and a Linux desktop
//! may have no handler for it either. Windows: Notepad for text files, Explorer for folders.
//! Linux: the desktop's handler (xdg-open, whose exit status is checked), then the text editor
//! the MIME database names for text/plain, then well-known editors and file managers. When all
//! fail, the caller gets an error that names the path, for an alert.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What is being opened: decides the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A text file (config, log): an editor will do.
    Text,
    /// A folder: a file manager.
    Folder,
}

/// Opens `path` with the desktop's program for it, else a fallback for its `kind`. The error
/// says what was tried, and names the path.
pub fn open(path: &Path, kind: Kind) -> Result<(), String> {
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    if platform::open_default(path) {
        return Ok(());
    }
    if platform::open_fallback(path, kind) {
        return Ok(());
    }
    Err(format!(
        "no program is set up to open {}; open it yourself from {}",
        path.display(),
        path.parent().unwrap_or(path).display()
    ))
}

/// Starts `program` with `args`, detached from our output. It counts as a success when it is
/// still running after `patience` (it is showing the file) or exited with status 0 by then.
fn run_checked(program: &str, args: &[&std::ffi::OsStr], patience: Duration) -> bool {
    let Ok(mut child) = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + patience;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() >= deadline => {
                // Still running: it opened the file. Reap it later, off this thread.
                std::thread::spawn(move || child.wait());
                return true;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return false,
        }
    }
}

#[cfg(all(unix, not(target_os = "macos")))]
mod platform {
    use super::{Kind, run_checked};
    use std::path::Path;
    use std::time::Duration;

    /// GUI text editors, most common first (no terminal editors: there is no terminal).
    const EDITORS: &[&str] = &[
        "gnome-text-editor",
        "gedit",
        "kate",
        "kwrite",
        "mousepad",
        "xed",
        "pluma",
        "featherpad",
        "code",
    ];
    /// File managers.
    const FILE_MANAGERS: &[&str] = &["nautilus", "dolphin", "thunar", "nemo", "caja", "pcmanfm"];

    /// xdg-open, judged by its exit status (it fails with 3 or 4 when nothing handles the type;
    /// while the program it started runs, it may not exit at all).
    pub fn open_default(path: &Path) -> bool {
        run_checked("xdg-open", &[path.as_os_str()], Duration::from_secs(3))
    }

    pub fn open_fallback(path: &Path, kind: Kind) -> bool {
        match kind {
            Kind::Text => {
                // The editor the desktop's MIME database names for plain text.
                if let Some(app) = default_app("text/plain")
                    && run_checked(
                        "gtk-launch",
                        &[app.as_ref(), path.as_os_str()],
                        Duration::from_secs(2),
                    )
                {
                    return true;
                }
                first_on_path(EDITORS).is_some_and(|editor| {
                    run_checked(&editor, &[path.as_os_str()], Duration::from_secs(2))
                })
            }
            Kind::Folder => first_on_path(FILE_MANAGERS).is_some_and(|manager| {
                run_checked(&manager, &[path.as_os_str()], Duration::from_secs(2))
            }),
        }
    }

    /// `xdg-mime query default MIME`: a desktop file's id (without `.desktop`, as gtk-launch
    /// takes it).
    fn default_app(mime: &str) -> Option<String> {
        let out = std::process::Command::new("xdg-mime")
            .args(["query", "default", mime])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !id.is_empty())
            .then(|| id.trim_end_matches(".desktop").to_string())
    }

    fn first_on_path(programs: &[&str]) -> Option<String> {
        programs
            .iter()
            .find(|p| which::which(p).is_ok())
            .map(|p| p.to_string())
    }
}

#[cfg(windows)]
mod platform {
    use super::{Kind, run_checked};
    use std::path::Path;
    use std::time::Duration;

    /// ShellExecute's "open": fails (SE_ERR_NOASSOC) when no program is associated.
    pub fn open_default(path: &Path) -> bool {
        opener::open(path).is_ok()
    }

    /// Notepad and Explorer ship with every Windows.
    pub fn open_fallback(path: &Path, kind: Kind) -> bool {
        match kind {
            Kind::Text => run_checked(
                "notepad.exe",
                &[path.as_os_str()],
                Duration::from_millis(500),
            ),
            // Explorer exits with 1 even when it opened the folder: a started one is enough.
            Kind::Folder => std::process::Command::new("explorer.exe")
                .arg(path)
                .spawn()
                .is_ok(),
        }
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::{Kind, run_checked};
    use std::path::Path;
    use std::time::Duration;

    pub fn open_default(path: &Path) -> bool {
        run_checked("open", &[path.as_os_str()], Duration::from_secs(3))
    }

    /// `open -t`: the default text editor; Finder for folders.
    pub fn open_fallback(path: &Path, kind: Kind) -> bool {
        match kind {
            Kind::Text => run_checked(
                "open",
                &["-t".as_ref(), path.as_os_str()],
                Duration::from_secs(3),
            ),
            Kind::Folder => run_checked(
                "open",
                &["-R".as_ref(), path.as_os_str()],
                Duration::from_secs(3),
            ),
        }
    }
}
