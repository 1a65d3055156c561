//! The code watch: native file-system notifications (the `notify` crate: inotify, FSEvents,
//! ReadDirectoryChangesW) on the backend's folders, filtered by include/exclude globs and
//! debounced, reported to the engine as one change per burst of saves.
//!
//! Excluded folders are not watched at all where watches are per folder (inotify): a virtualenv
//! of 50,000 files beside the code costs nothing. Elsewhere one recursive watch per root is
//! cheap and events under excluded folders are dropped.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, warn};

use crate::engine::supervisor::STALE_FILES;

/// inotify watches a folder, not a tree: walk the tree ourselves and skip excluded folders.
const PER_FOLDER_WATCHES: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Which files count.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    roots: Vec<PathBuf>,
    include: GlobSet,
    exclude: GlobSet,
    /// Folders never looked into (the warden's own log folder).
    skip: Vec<PathBuf>,
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(Glob::new(pattern)?);
    }
    builder.build()
}

impl WatchFilter {
    /// A filter for `roots` with the config's globs; `skip` lists folders never to watch.
    pub fn new(
        roots: Vec<PathBuf>,
        include: &[String],
        exclude: &[String],
        skip: Vec<PathBuf>,
    ) -> Result<WatchFilter, globset::Error> {
        let canonical = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
        Ok(WatchFilter {
            roots: roots.into_iter().map(canonical).collect(),
            include: glob_set(include)?,
            exclude: glob_set(exclude)?,
            skip: skip.into_iter().map(canonical).collect(),
        })
    }

    /// The path relative to the root it is under, if any.
    fn relative<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        self.roots
            .iter()
            .find_map(|root| path.strip_prefix(root).ok())
    }

    /// Whether a folder (or anything under it) is excluded.
    fn excluded(&self, path: &Path) -> bool {
        if self.skip.iter().any(|s| path.starts_with(s)) {
            return true;
        }
        let Some(rel) = self.relative(path) else {
            return true;
        };
        // A folder is excluded when it or one of its ancestors matches.
        let mut prefix = PathBuf::new();
        rel.components().any(|c| {
            prefix.push(c);
            self.exclude.is_match(&prefix)
        })
    }

    /// Whether a change to `path` is a change to the backend's code.
    pub fn counts(&self, path: &Path) -> bool {
        match self.relative(path) {
            Some(rel) => !self.excluded(path) && self.include.is_match(rel),
            None => false,
        }
    }

    /// `path` for humans: relative to its root.
    fn display(&self, path: &Path) -> String {
        self.relative(path)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/")
    }
}

/// A running watch; dropping it stops the watching.
pub struct CodeWatch {
    _watcher: Arc<Mutex<RecommendedWatcher>>,
    folders: usize,
}

impl CodeWatch {
    /// Starts watching; `on_change(files, count)` is called once per debounced burst.
    pub fn start(
        filter: WatchFilter,
        debounce: Duration,
        on_change: impl Fn(Vec<String>, usize) + Send + 'static,
    ) -> notify::Result<CodeWatch> {
        let (events, inbox) = mpsc::channel::<notify::Result<notify::Event>>();
        let watcher = Arc::new(Mutex::new(notify::recommended_watcher(events)?));
        let mut watched = 0usize;
        for root in &filter.roots {
            watched += add_watches(&watcher, &filter, root);
        }
        debug!(folders = watched, "watching the backend's code");
        let for_thread = Arc::clone(&watcher);
        thread::Builder::new()
            .name("code-watch".into())
            .spawn(move || debounce_loop(inbox, &for_thread, &filter, debounce, on_change))
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(CodeWatch {
            _watcher: watcher,
            folders: watched,
        })
    }

    /// How many watches were set up at start (folders with per-folder watches, else roots).
    pub fn watched_folders(&self) -> usize {
        self.folders
    }
}

/// Watches `dir` (and, with per-folder watches, every folder below it that is not excluded).
/// Returns how many watches were added.
fn add_watches(watcher: &Mutex<RecommendedWatcher>, filter: &WatchFilter, dir: &Path) -> usize {
    let mut watcher = watcher.lock().unwrap_or_else(PoisonError::into_inner);
    if !PER_FOLDER_WATCHES {
        return match watcher.watch(dir, RecursiveMode::Recursive) {
            Ok(()) => 1,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot watch");
                0
            }
        };
    }
    let mut added = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        if filter.excluded(&folder) && !filter.roots.contains(&folder) {
            continue;
        }
        match watcher.watch(&folder, RecursiveMode::NonRecursive) {
            Ok(()) => added += 1,
            Err(e) => {
                warn!(dir = %folder.display(), error = %e, "cannot watch");
                continue;
            }
        }
        if let Ok(entries) = std::fs::read_dir(&folder) {
            for entry in entries.flatten() {
                // Do not follow links out of the tree (or into loops).
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
    added
}

fn debounce_loop(
    inbox: Receiver<notify::Result<notify::Event>>,
    watcher: &Mutex<RecommendedWatcher>,
    filter: &WatchFilter,
    debounce: Duration,
    on_change: impl Fn(Vec<String>, usize),
) {
    let mut files: Vec<String> = Vec::new();
    let mut count = 0usize;
    let mut quiet_at: Option<Instant> = None;
    loop {
        let next = next_event(&inbox, quiet_at);
        match next {
            Ok(Ok(event)) => {
                let relevant = relevant(&event, watcher, filter);
                for path in relevant {
                    count += 1;
                    let shown = filter.display(&path);
                    if files.len() < STALE_FILES && !files.contains(&shown) {
                        files.push(shown);
                    }
                    quiet_at = Some(crate::clock::later(Instant::now(), debounce));
                }
            }
            Ok(Err(e)) => warn!(error = %e, "file watch error"),
            Err(RecvTimeoutError::Timeout) => {
                if count > 0 {
                    on_change(std::mem::take(&mut files), std::mem::take(&mut count));
                }
                quiet_at = None;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The code files an event is about; new folders get their watches on the way.
fn relevant(
    event: &notify::Event,
    watcher: &Mutex<RecommendedWatcher>,
    filter: &WatchFilter,
) -> Vec<PathBuf> {
    if matches!(event.kind, EventKind::Access(_)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for path in &event.paths {
        if PER_FOLDER_WATCHES
            && matches!(event.kind, EventKind::Create(_))
            && path.is_dir()
            && !filter.excluded(path)
        {
            add_watches(watcher, filter, path);
        }
        if filter.counts(path) {
            out.push(path.clone());
        }
    }
    out
}

/// The next event of a debounced watch: waits until `quiet_at` while a burst is going on
/// (`Timeout` then means the burst is over), for good otherwise.
pub(crate) fn next_event<T>(
    inbox: &std::sync::mpsc::Receiver<T>,
    quiet_at: Option<Instant>,
) -> Result<T, RecvTimeoutError> {
    match quiet_at {
        Some(at) => inbox.recv_timeout(at.saturating_duration_since(Instant::now())),
        None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WatchConfig;

    #[test]
    fn default_globs_count_code_and_skip_caches_venvs_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let d = WatchConfig::default();
        let filter = WatchFilter::new(
            vec![root.clone()],
            &d.include,
            &d.exclude,
            vec![root.join("logs")],
        )
        .unwrap();
        // (path under the root, counts?)
        let table = [
            ("main.py", true),
            ("api/routes.py", true),
            (".env", true),
            ("config/settings.toml", true),
            ("README.md", false),
            ("__pycache__/main.cpython-311.pyc", false),
            ("api/__pycache__/x.py", false),
            (".venv/lib/python3.11/site-packages/x.py", false),
            ("venv/lib/x.py", false),
            ("node_modules/a/b.json", false),
            (".git/HEAD", false),
            ("logs/backend.log", false),
            ("logs/x.py", false),
        ];
        for (rel, want) in table {
            assert_eq!(filter.counts(&root.join(rel)), want, "{rel}");
        }
        assert!(!filter.counts(Path::new("/elsewhere/main.py")));
    }
}
