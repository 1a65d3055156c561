//! Reload on save: watches the warden's own config file (the `notify` crate, as the code
//! watch) and reports each debounced save whose contents changed. What a save does is the
//! caller's (app wiring: a reload, as *Reload config*).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, warn};

/// How long the file must stay quiet before a save counts: editors write a file in several
/// steps (truncate, write, rename a temporary over it).
pub const CONFIG_DEBOUNCE: Duration = Duration::from_millis(300);

/// A running watch of the config file; dropping it stops the watching.
pub struct ConfigWatch {
    _watcher: RecommendedWatcher,
}

impl ConfigWatch {
    /// Watches `file` (through its folder, so editors that replace the file by renaming a new
    /// one over it are seen too) and calls `on_save` once per burst of writes that leaves the
    /// file readable and different from what it was.
    pub fn start(
        file: &Path,
        debounce: Duration,
        on_save: impl FnMut() + Send + 'static,
    ) -> notify::Result<ConfigWatch> {
        let folder = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        // The default config folder may not exist before the first `config init`.
        std::fs::create_dir_all(&folder)
            .map_err(|e| notify::Error::io(e).add_path(folder.clone()))?;
        let (events, inbox) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(events)?;
        watcher.watch(&folder, RecursiveMode::NonRecursive)?;
        let file = file.to_path_buf();
        // Read now, not on the thread: a save between this call and the thread's first step
        // must count as a change.
        let last = std::fs::read(&file).ok();
        thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || debounce_loop(&inbox, &file, last, debounce, on_save))
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(ConfigWatch { _watcher: watcher })
    }
}

fn debounce_loop(
    inbox: &mpsc::Receiver<notify::Result<notify::Event>>,
    file: &PathBuf,
    mut last: Option<Vec<u8>>,
    debounce: Duration,
    mut on_save: impl FnMut(),
) {
    let name = file.file_name().map(|n| n.to_os_string());
    let mut quiet_at: Option<Instant> = None;
    loop {
        let next = crate::backend::code_watch::next_event(inbox, quiet_at);
        match next {
            Ok(Ok(event)) => {
                let about_the_file = !matches!(event.kind, EventKind::Access(_))
                    && event
                        .paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                if about_the_file {
                    quiet_at = Some(crate::clock::later(Instant::now(), debounce));
                }
            }
            Ok(Err(e)) => warn!(error = %e, "config file watch error"),
            Err(RecvTimeoutError::Timeout) => {
                quiet_at = None;
                // A file that is gone (deleted, or mid-rename) is not a save: keep the config.
                let Ok(now) = std::fs::read(file) else {
                    continue;
                };
                if last.as_ref() == Some(&now) {
                    continue;
                }
                last = Some(now);
                debug!(file = %file.display(), "config file saved");
                on_save();
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_changed_save_is_reported_once_and_an_unchanged_one_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let (saves, saved) = channel();
        let _watch = ConfigWatch::start(&file, Duration::from_millis(50), move || {
            let _ = saves.send(());
        })
        .unwrap();
        // A burst of writes: one save.
        for n in 0..5 {
            std::fs::write(&file, format!("a = {n}\n")).unwrap();
        }
        saved.recv_timeout(Duration::from_secs(10)).unwrap();
        // Written again with the same bytes, and another file in the folder: nothing.
        std::fs::write(&file, "a = 4\n").unwrap();
        std::fs::write(dir.path().join("other.toml"), "b = 1\n").unwrap();
        // A replace by rename, as editors save: reported.
        let temp = dir.path().join(".config.toml.swp");
        std::fs::write(&temp, "a = 5\n").unwrap();
        std::fs::rename(&temp, &file).unwrap();
        saved.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(saved.recv_timeout(Duration::from_millis(300)).is_err());
    }
}
