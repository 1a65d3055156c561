//! The warden's own log: `tracing` events to `logs/warden.log` (rotated by size) and, in the
//! foreground, to stderr. Configured once at start-up.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::backend::backend_log::RotatingFile;

/// Environment variable with a `tracing` filter, e.g. `debug` or `backend_warden=trace` (a
/// target names every crate it is a prefix of: the core, the tray and the programs).
pub const LOG_ENV: &str = "BACKEND_WARDEN_LOG";

const WARDEN_LOG_MAX: u64 = 5 * 1024 * 1024;
const WARDEN_LOG_KEEP: usize = 3;

/// The file of [`init`]'s subscriber, for [`move_to`].
static WARDEN_LOG: std::sync::OnceLock<Arc<Mutex<RotatingFile>>> = std::sync::OnceLock::new();

/// Writes `warden.log` in `dir` from the next event on (a config reload moved `logs.dir`).
pub fn move_to(dir: &Path) -> io::Result<()> {
    match WARDEN_LOG.get() {
        Some(file) => file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .move_to(dir.join("warden.log")),
        None => Ok(()),
    }
}

/// Writes each event to `warden.log` as one record, so rotation never splits a line.
#[derive(Clone)]
struct WardenLog(Arc<Mutex<RotatingFile>>);

struct EventBuffer {
    file: Arc<Mutex<RotatingFile>>,
    bytes: Vec<u8>,
}

impl Write for EventBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            // A log that cannot be written must not take the warden down.
            let _ = file.write_record(&self.bytes).and_then(|()| file.flush());
        }
    }
}

impl<'a> MakeWriter<'a> for WardenLog {
    type Writer = EventBuffer;
    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer {
            file: Arc::clone(&self.0),
            bytes: Vec::with_capacity(256),
        }
    }
}

/// The filter `BACKEND_WARDEN_LOG` asks for (`debug`, `backend_warden=trace,info`: a level for
/// everything, or per target), or the default when it is unset or not a filter.
fn filter(directives: Option<&str>) -> Targets {
    directives
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| Targets::new().with_target("backend_warden", tracing::Level::INFO))
}

/// Sends the warden's events to `log_dir/warden.log`, and to stderr when `to_stderr`.
pub fn init(log_dir: &Path, to_stderr: bool) {
    let filter = || filter(std::env::var(LOG_ENV).ok().as_deref());
    let file = Arc::new(Mutex::new(RotatingFile::new(
        log_dir.join("warden.log"),
        WARDEN_LOG_MAX,
        WARDEN_LOG_KEEP,
    )));
    // The subscriber is the process's (tracing allows one): so is the file it writes.
    let _ = WARDEN_LOG.set(Arc::clone(&file));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(WardenLog(file))
        .with_filter(filter());
    let stderr_layer = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(io::stderr().is_terminal())
            .with_writer(io::stderr)
            .with_filter(filter())
    });
    let _ = tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::filter;

    #[test]
    fn the_environment_sets_the_level_for_everything_or_per_target() {
        let default = filter(None);
        assert!(default.would_enable("backend_warden_core::engine::runner", &Level::INFO));
        assert!(!default.would_enable("backend_warden_core::engine::runner", &Level::DEBUG));
        assert!(!default.would_enable("ureq", &Level::ERROR));
        // Every crate of the workspace, and the programs: `backend_warden` is a prefix of all.
        assert!(default.would_enable("backend_warden_tray::notify", &Level::INFO));
        assert!(default.would_enable("backend_warden", &Level::INFO));
        let debug = filter(Some("debug"));
        assert!(debug.would_enable("backend_warden_core::engine::runner", &Level::DEBUG));
        assert!(debug.would_enable("ureq", &Level::DEBUG));
        let per_target = filter(Some("backend_warden=trace,warn"));
        assert!(per_target.would_enable("backend_warden_core::backend::strays", &Level::TRACE));
        assert!(per_target.would_enable("ureq", &Level::WARN));
        assert!(!per_target.would_enable("ureq", &Level::INFO));
        // Not a filter: the default.
        let garbage = filter(Some("backend_warden=loud"));
        assert!(garbage.would_enable("backend_warden_core::engine::runner", &Level::INFO));
        assert!(!garbage.would_enable("backend_warden_core::engine::runner", &Level::DEBUG));
    }
}
