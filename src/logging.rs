//! The warden's own log: `tracing` events to `logs/warden.log` (rotated by size) and, in the
//! foreground, to stderr. Configured once at start-up.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::output::RotatingFile;

/// Environment variable with a `tracing` filter, e.g. `debug` or `backend_warden=trace`.
pub const LOG_ENV: &str = "BACKEND_WARDEN_LOG";

const WARDEN_LOG_MAX: u64 = 5 * 1024 * 1024;
const WARDEN_LOG_KEEP: usize = 3;

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

/// Sends the warden's events to `log_dir/warden.log`, and to stderr when `to_stderr`.
pub fn init(log_dir: &Path, to_stderr: bool) {
    let filter = || {
        EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("backend_warden=info"))
    };
    let file = RotatingFile::new(log_dir.join("warden.log"), WARDEN_LOG_MAX, WARDEN_LOG_KEEP);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(WardenLog(Arc::new(Mutex::new(file))))
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
