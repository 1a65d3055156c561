//! The backend's output: reader threads drain its stdout and stderr, and one writer thread
//! appends each line, timestamped and marked `out`/`err`, to `backend.log`, rotated by size.
//!
//! The backend is never slowed down by the warden: readers hand lines over through a queue
//! bounded in bytes, without waiting; when the writer falls behind (a stalled disk), lines are
//! dropped and counted, and the count is written once the writer catches up. Lines a write
//! cannot store (a full disk, a vanished folder) are counted too, with the last error, for
//! `status` ([`LogHealth`]); a rotation that fails leaves the live file growing and is retried. Partial lines and
//! non-UTF-8 bytes are written as they came. May import `std`, `memchr`, `humantime`,
//! `crate::private_fs` (owner-only folders, no symbolic links followed) and `crate::engine::supervisor`
//! types only.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::engine::supervisor::TAIL_LINES;
use crate::private_fs::{self, FolderKind};

/// Longest line kept whole; a longer one is written in pieces of this size, so a backend that
/// prints megabytes without a newline cannot grow the warden's memory.
pub const MAX_LINE: usize = 64 * 1024;

/// The reader's buffer: it starts at `READ_MIN` and grows to `READ_MAX` under a flood.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 64 * 1024;

/// Bytes queued for the writer (a record counts its line and `RECORD_COST`) before readers
/// start dropping: a burst of short lines gets tens of thousands of records of slack, a flood
/// of 64 KiB pieces never holds more than this.
const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// What a queued record costs besides its bytes (the record, its allocation, the queue slot).
const RECORD_COST: usize = 64;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The backend's standard output.
    Out,
    /// The backend's standard error.
    Err,
    /// A note from the warden (backend started, exited, lines dropped).
    Warden,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
            Stream::Warden => "wrd",
        }
    }
}

#[derive(Debug)]
struct Record {
    at: SystemTime,
    stream: Stream,
    bytes: Vec<u8>,
    /// The line goes on in the next record (cut at [`MAX_LINE`]), or the stream ended
    /// without a final newline.
    partial: bool,
}

impl Record {
    /// What the record counts against [`QUEUE_BYTES`].
    fn cost(&self) -> usize {
        self.bytes.len() + RECORD_COST
    }
}

/// How long after a failed rotation the next one is tried (meanwhile the live file grows).
const ROTATE_RETRY: Duration = Duration::from_secs(1);

/// A file that is rotated by size: `NAME`, `NAME.1` (newest) ... `NAME.keep` (oldest).
/// Records are buffered: call [`RotatingFile::flush`] to write them out (a write syscall per
/// line would make the writer the bottleneck of a flood of output).
///
/// It counts the records a failed write lost ([`RotatingFile::take_lost`]); a rotation that
/// fails (a folder where `NAME.2` should be) does not lose the record: it goes to the live
/// file, the error is kept for [`RotatingFile::take_rotation_error`], and rotation is tried
/// again after [`ROTATE_RETRY`].
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    keep: usize,
    file: Option<BufWriter<File>>,
    size: u64,
    /// Records in the buffer, not yet written out.
    buffered: u64,
    /// Records lost to failed writes since the last [`RotatingFile::take_lost`].
    lost: u64,
    rotation_error: Option<io::Error>,
    rotate_again_at: Option<Instant>,
}

impl RotatingFile {
    /// A rotating file at `path`; nothing is opened until the first write. `keep` is the
    /// number of rotated files kept besides the live one.
    pub fn new(path: PathBuf, max_size: u64, keep: usize) -> RotatingFile {
        RotatingFile {
            path,
            max_size: max_size.max(1),
            keep: keep.max(1),
            file: None,
            size: 0,
            buffered: 0,
            lost: 0,
            rotation_error: None,
            rotate_again_at: None,
        }
    }

    /// Writes to `path` from the next record on (the log folder moved): what is buffered goes
    /// to the old file first; rotated files stay where they are.
    pub fn move_to(&mut self, path: PathBuf) -> io::Result<()> {
        let flushed = self.flush();
        self.drop_file();
        self.path = path;
        self.rotation_error = None;
        self.rotate_again_at = None;
        flushed
    }

    /// Rotates at `max_size` and keeps `keep` rotated files from the next write on.
    pub fn set_limits(&mut self, max_size: u64, keep: usize) {
        self.max_size = max_size.max(1);
        self.keep = keep;
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes` as one unit (a record is never split across two files) to the buffer;
    /// [`RotatingFile::flush`] writes it out.
    pub fn write_record(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_record_unchecked(bytes)
            .inspect_err(|_| self.lost += 1)
    }

    fn write_record_unchecked(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        let now = Instant::now();
        if self.size > 0
            && self.size + bytes.len() as u64 > self.max_size
            && self.rotate_again_at.is_none_or(|at| now >= at)
        {
            // Out before the renames: what is buffered belongs to the file being rotated.
            self.flush()?;
            match self.rotate() {
                Ok(()) => self.rotate_again_at = None,
                Err(e) => {
                    self.rotation_error = Some(e);
                    self.rotate_again_at = Some(crate::clock::later(now, ROTATE_RETRY));
                }
            }
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.open()?,
        };
        // Flush first rather than let the buffer write itself out in the middle of a record:
        // what `buffered` counts is then exactly what a failure loses.
        if file.buffer().len() + bytes.len() > file.capacity() && !file.buffer().is_empty() {
            self.flush()?;
        }
        let Some(file) = &mut self.file else {
            return Err(io::Error::other("the log file closed"));
        };
        if let Err(e) = file.write_all(bytes) {
            self.drop_file();
            return Err(e);
        }
        self.size += bytes.len() as u64;
        self.buffered += 1;
        Ok(())
    }

    /// Writes the buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => match file.flush() {
                Ok(()) => {
                    self.buffered = 0;
                    Ok(())
                }
                Err(e) => {
                    self.drop_file();
                    Err(e)
                }
            },
            None => Ok(()),
        }
    }

    /// Records lost to failed writes since the last call.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// Why the last rotation failed, once (the live file is still appended to).
    pub fn take_rotation_error(&mut self) -> Option<io::Error> {
        self.rotation_error.take()
    }

    /// Forgets the file after a failed write, so the next write reopens it (the file may have
    /// been removed or the disk remounted). What could not be written is lost, and counted.
    fn drop_file(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = file.into_parts();
        }
        self.lost += std::mem::take(&mut self.buffered);
    }

    fn open(&mut self) -> io::Result<&mut BufWriter<File>> {
        if let Some(dir) = self.path.parent() {
            private_fs::prepare_dir(dir, FolderKind::Logs)?;
        }
        let file = private_fs::open_append(&self.path)?;
        self.size = file.metadata()?.len();
        Ok(self.file.insert(BufWriter::with_capacity(64 * 1024, file)))
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Renames the files one step older. Called with nothing buffered; on failure the caller
    /// reopens the live file (whatever its name now holds) and goes on appending.
    fn rotate(&mut self) -> io::Result<()> {
        self.drop_file();
        remove_if_present(&self.rotated(self.keep))?;
        for n in (1..self.keep).rev() {
            rename_if_present(&self.rotated(n), &self.rotated(n + 1))?;
        }
        rename_if_present(&self.path, &self.rotated(1))?;
        self.open()?;
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The last lines a backend printed, for failure reasons. Kept as bytes (their start: enough
/// for `TAIL_CHARS` characters) and made text only when asked for: a backend that floods its
/// output costs a copy per line here, not a conversion.
#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<Vec<u8>>,
}

/// Characters of a tail line shown; a longer line ends in "…".
const TAIL_CHARS: usize = 300;
/// Bytes of a line kept: a character takes at most 4 bytes (an invalid sequence shows as one
/// character), so a line cut here still shows over `TAIL_CHARS` characters, and ends in "…".
const TAIL_BYTES: usize = 4 * TAIL_CHARS + 1;

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let mut line = if self.lines.len() == TAIL_LINES {
            self.lines.pop_front().unwrap_or_default()
        } else {
            Vec::new()
        };
        line.clear();
        line.extend_from_slice(&bytes[..bytes.len().min(TAIL_BYTES)]);
        self.lines.push_back(line);
    }

    fn text(line: &[u8]) -> String {
        let text = String::from_utf8_lossy(line);
        match text.char_indices().nth(TAIL_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.into_owned(),
        }
    }
}

/// What the log has lost so far, for `status` (`logs: {dropped_lines, last_error}`).
#[derive(Debug, Default)]
pub struct LogHealth {
    dropped_lines: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl LogHealth {
    /// Lines (or pieces of long lines) that never reached the file: dropped because the
    /// writer could not keep up, or lost to a failed write.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::Relaxed)
    }

    /// The last write or rotation error, if there was one.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn add_dropped(&self, lines: u64) {
        if lines > 0 {
            self.dropped_lines.fetch_add(lines, Ordering::Relaxed);
        }
    }

    fn set_error(&self, text: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text);
    }
}

/// The writer of `backend.log`. Cheap to clone; the writer thread ends when the last clone
/// and every capture are gone.
#[derive(Debug, Clone)]
pub struct BackendLog {
    queue: Sender<Record>,
    /// Bytes queued and not yet written (see [`QUEUE_BYTES`]).
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    health: Arc<LogHealth>,
    path: PathBuf,
    /// New rotation limits for the writer to take up (a config reload).
    limits: Arc<Mutex<Option<(u64, usize)>>>,
    /// A new folder for the writer to move to (a config reload).
    moved: Arc<Mutex<Option<PathBuf>>>,
}

impl BackendLog {
    /// Starts the writer thread for `dir/backend.log`. `on_error` is called once per episode
    /// of write failures (the first failure after a success).
    pub fn start(
        dir: &Path,
        max_size: u64,
        keep: usize,
        on_error: impl Fn(&io::Error) + Send + 'static,
    ) -> io::Result<BackendLog> {
        let path = dir.join("backend.log");
        let (queue, records) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let health = Arc::new(LogHealth::default());
        let limits = Arc::new(Mutex::new(None));
        let moved = Arc::new(Mutex::new(None));
        let file = RotatingFile::new(path.clone(), max_size, keep);
        let writer = Queue {
            records,
            queued: Arc::clone(&queued),
            dropped: Arc::clone(&dropped),
            health: Arc::clone(&health),
            limits: Arc::clone(&limits),
            moved: Arc::clone(&moved),
        };
        thread::Builder::new()
            .name("backend-log".into())
            .spawn(move || write_records(file, &writer, on_error))?;
        Ok(BackendLog {
            queue,
            queued,
            dropped,
            health,
            path,
            limits,
            moved,
        })
    }

    /// Writes `dir/backend.log` from now on (a config reload moved `logs.dir`); the new file
    /// starts with a note saying where the log was before.
    pub fn move_to(&self, dir: &Path) {
        *self.moved.lock().unwrap_or_else(PoisonError::into_inner) = Some(dir.join("backend.log"));
        // Also wakes the writer, which moves before it writes this.
        self.note(&format!(
            "log folder moved here (config reload); earlier lines are in {}",
            self.path.display()
        ));
    }

    /// Rotates at `max_size` and keeps `keep` rotated files from now on (a config reload);
    /// the log says so between the backend's lines.
    pub fn set_limits(&self, max_size: u64, keep: usize) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = Some((max_size, keep));
        // The note also wakes the writer, which takes the new limits up before writing it.
        self.note(&format!(
            "log rotation now at {} with {keep} rotated file{} kept",
            bytesize::ByteSize(max_size),
            if keep == 1 { "" } else { "s" }
        ));
    }

    /// The live log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the log has lost so far.
    pub fn health(&self) -> Arc<LogHealth> {
        Arc::clone(&self.health)
    }

    /// Writes a note from the warden into the log (a start, an exit), between backend lines.
    pub fn note(&self, text: &str) {
        self.send(Record {
            at: SystemTime::now(),
            stream: Stream::Warden,
            bytes: text.as_bytes().to_vec(),
            partial: false,
        });
    }

    fn send(&self, record: Record) {
        let cost = record.cost();
        let room = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
                (queued + cost <= QUEUE_BYTES).then_some(queued + cost)
            });
        if room.is_err() {
            let len = record.bytes.len() as u64;
            self.dropped.fetch_add(len.max(1), Ordering::Relaxed);
            self.health.add_dropped(1);
        } else if self.queue.send(record).is_err() {
            // The writer is gone (it only ends when every sender is): nothing to count.
            self.queued.fetch_sub(cost, Ordering::Relaxed);
        }
    }

    /// Starts draining one backend's stdout and stderr into the log.
    pub fn capture(
        &self,
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
    ) -> io::Result<Capture> {
        let tail = Arc::new(Mutex::new(Tail::default()));
        let (eof_tx, eof) = mpsc::channel();
        for (stream, reader) in [
            (Stream::Out, Box::new(stdout) as Box<dyn Read + Send>),
            (Stream::Err, Box::new(stderr)),
        ] {
            let log = self.clone();
            let tail = Arc::clone(&tail);
            let eof_tx = eof_tx.clone();
            thread::Builder::new()
                .name(format!("backend-{}", stream.tag()))
                .spawn(move || {
                    log.drain(stream, reader, &tail);
                    let _ = eof_tx.send(());
                })?;
        }
        Ok(Capture { tail, eof })
    }

    fn drain(&self, stream: Stream, mut reader: Box<dyn Read + Send>, tail: &Mutex<Tail>) {
        // Small while the backend is quiet (it is resident for the backend's life), doubled
        // whenever a read fills it, up to the pipe's own 64 KiB when it floods.
        let mut buf = vec![0u8; READ_MIN];
        let mut line: Vec<u8> = Vec::new();
        let emit = |bytes: &[u8], partial: bool| {
            let mut bytes = bytes;
            if !partial && bytes.last() == Some(&b'\r') {
                bytes = &bytes[..bytes.len() - 1];
            }
            if !partial {
                tail.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(bytes);
            }
            self.send(Record {
                at: SystemTime::now(),
                stream,
                bytes: bytes.to_vec(),
                partial,
            });
        };
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let full = n == buf.len();
            let mut chunk = &buf[..n];
            while let Some(pos) = memchr::memchr(b'\n', chunk) {
                if line.is_empty() {
                    emit(&chunk[..pos], false);
                } else {
                    line.extend_from_slice(&chunk[..pos]);
                    emit(&line, false);
                    line.clear();
                }
                chunk = &chunk[pos + 1..];
            }
            line.extend_from_slice(chunk);
            while line.len() >= MAX_LINE {
                emit(&line[..MAX_LINE], true);
                line.drain(..MAX_LINE);
            }
            if full && buf.len() < READ_MAX {
                buf.resize(buf.len() * 2, 0);
            }
        }
        if !line.is_empty() {
            tail.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(&line);
            emit(&line, true);
        }
    }
}

/// One backend's output being captured.
#[derive(Debug)]
pub struct Capture {
    tail: Arc<Mutex<Tail>>,
    eof: Receiver<()>,
}

impl Capture {
    /// Waits (at most `limit`) until both streams have ended, so the last lines a crashing
    /// backend printed are in the tail. A grandchild holding the pipes open makes this time out.
    pub fn wait_eof(&self, limit: Duration) {
        let deadline = crate::clock::later(Instant::now(), limit);
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.eof.recv_timeout(left) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// The last lines printed, oldest first.
    pub fn tail(&self) -> Vec<String> {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        tail.lines.iter().map(|line| Tail::text(line)).collect()
    }
}

/// The writer's end of the queue.
struct Queue {
    records: Receiver<Record>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    health: Arc<LogHealth>,
    limits: Arc<Mutex<Option<(u64, usize)>>>,
    moved: Arc<Mutex<Option<PathBuf>>>,
}

fn write_records(mut file: RotatingFile, queue: &Queue, on_error: impl Fn(&io::Error)) {
    // An episode of failures starts with the first failed write and ends with a flush that
    // succeeds; `on_error` hears of each episode once.
    let mut failing = false;
    let path = file.path().display().to_string();
    let fail = |e: &io::Error, failing: &mut bool| {
        queue.health.set_error(format!("cannot write {path}: {e}"));
        if !*failing {
            on_error(e);
        }
        *failing = true;
    };
    let rotation_failed = |file: &mut RotatingFile| {
        if let Some(e) = file.take_rotation_error() {
            queue.health.set_error(format!(
                "cannot rotate {path}: {e}; still appending to it, retrying every {}s",
                ROTATE_RETRY.as_secs()
            ));
        }
    };
    let mut line = Vec::with_capacity(256);
    let mut formatter = Formatter::default();
    while let Ok(first) = queue.records.recv() {
        // Write what is queued into the buffer, then flush once the queue is empty: one write
        // per batch instead of one per line, and nothing waits longer than the batch.
        if let Some((max_size, keep)) = queue
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            file.set_limits(max_size, keep);
        }
        let mut next = Some(first);
        let mut batch_failed = false;
        while let Some(record) = next {
            // A move takes effect before the next record.
            if let Some(to) = queue
                .moved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                && let Err(e) = file.move_to(to)
            {
                fail(&e, &mut failing);
            }
            let lost = queue.dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                let note = Record {
                    at: record.at,
                    stream: Stream::Warden,
                    bytes: format!("{lost} bytes of output dropped: the log could not keep up")
                        .into_bytes(),
                    partial: false,
                };
                formatter.format(&note, &mut line);
                let _ = file.write_record(&line);
            }
            formatter.format(&record, &mut line);
            queue.queued.fetch_sub(record.cost(), Ordering::Relaxed);
            if let Err(e) = file.write_record(&line) {
                batch_failed = true;
                fail(&e, &mut failing);
            }
            rotation_failed(&mut file);
            queue.health.add_dropped(file.take_lost());
            next = queue.records.try_recv().ok();
        }
        match file.flush() {
            Ok(()) if !batch_failed => failing = false,
            Ok(()) => {}
            Err(e) => fail(&e, &mut failing),
        }
        queue.health.add_dropped(file.take_lost());
    }
}

/// Formats records, the calendar part of the timestamp once per second: a backend that
/// floods its output has every line stamped, and the date was most of the writer's work.
#[derive(Debug, Default)]
struct Formatter {
    /// Seconds since the epoch of `prefix`.
    second: Option<u64>,
    /// `2026-11-23T21:30:00`.
    prefix: Vec<u8>,
}

impl Formatter {
    /// `2026-11-23T21:30:00.123Z out| text` — `|` after a whole line, `\` after a piece of one.
    fn format(&mut self, record: &Record, out: &mut Vec<u8>) {
        let since_epoch = record
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            self.prefix.clear();
            self.prefix
                .extend_from_slice(text.trim_end_matches('Z').as_bytes());
            self.second = Some(second);
        }
        out.clear();
        out.extend_from_slice(&self.prefix);
        let _ = write!(
            out,
            ".{:03}Z {}{} ",
            since_epoch.subsec_millis(),
            record.stream.tag(),
            if record.partial { '\\' } else { '|' }
        );
        out.extend_from_slice(&record.bytes);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(path: &Path) -> Vec<String> {
        let text = fs::read(path).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .map(|l| l.split_once(' ').map_or("", |x| x.1).to_string())
            .collect()
    }

    #[test]
    fn the_queue_holds_a_bounded_number_of_bytes_and_counts_the_rest() {
        // No writer: the test holds the queue's other end.
        let (queue, records) = mpsc::channel();
        let log = BackendLog {
            queue,
            queued: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            health: Arc::default(),
            path: PathBuf::from("unused"),
            limits: Arc::default(),
            moved: Arc::default(),
        };
        let line = vec![b'x'; 100];
        let fits = QUEUE_BYTES / (line.len() + RECORD_COST);
        for _ in 0..fits + 10 {
            log.note(std::str::from_utf8(&line).unwrap());
        }
        assert_eq!(records.try_iter().count(), fits);
        assert!(log.queued.load(Ordering::Relaxed) <= QUEUE_BYTES);
        assert_eq!(log.dropped.load(Ordering::Relaxed), 10 * 100);
        // Big pieces: far fewer records fit in the same bytes.
        log.queued.store(0, Ordering::Relaxed);
        let piece = vec![b'y'; MAX_LINE];
        for _ in 0..100 {
            log.note(std::str::from_utf8(&piece).unwrap());
        }
        assert_eq!(
            records.try_iter().count(),
            QUEUE_BYTES / (MAX_LINE + RECORD_COST)
        );
    }

    #[test]
    fn records_are_stamped_to_the_millisecond_across_seconds() {
        let mut formatter = Formatter::default();
        let mut out = Vec::new();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for (offset_ms, stream, partial) in [
            (0, Stream::Out, false),
            (5, Stream::Err, true),
            (999, Stream::Warden, false),
            (1_000, Stream::Out, false),
            (86_400_042, Stream::Out, true),
        ] {
            let at = base + Duration::from_millis(offset_ms);
            let record = Record {
                at,
                stream,
                bytes: b"hello".to_vec(),
                partial,
            };
            formatter.format(&record, &mut out);
            let expected = format!(
                "{} {}{} hello\n",
                humantime::format_rfc3339_millis(at),
                stream.tag(),
                if partial { '\\' } else { '|' }
            );
            assert_eq!(String::from_utf8_lossy(&out), expected);
        }
    }

    #[test]
    fn the_tail_keeps_the_last_lines_and_shortens_long_ones() {
        let mut tail = Tail::default();
        for n in 0..TAIL_LINES + 3 {
            tail.push(format!("line {n}").as_bytes());
        }
        let texts: Vec<String> = tail.lines.iter().map(|l| Tail::text(l)).collect();
        assert_eq!(texts.len(), TAIL_LINES);
        assert_eq!(texts[0], "line 3");
        assert_eq!(texts[TAIL_LINES - 1], format!("line {}", TAIL_LINES + 2));
        // Exactly TAIL_CHARS characters stay whole; more end in "…", counted in characters
        // (4-byte ones here), with invalid bytes shown as replacement characters.
        let exact = "é".repeat(TAIL_CHARS);
        tail.push(exact.as_bytes());
        let long = "𝄞".repeat(TAIL_CHARS + 50);
        tail.push(long.as_bytes());
        tail.push(&[b'a', 0xff, b'b']);
        let texts: Vec<String> = tail.lines.iter().map(|l| Tail::text(l)).collect();
        let n = texts.len();
        assert_eq!(texts[n - 3], exact);
        assert_eq!(texts[n - 2], format!("{}…", "𝄞".repeat(TAIL_CHARS)));
        assert_eq!(texts[n - 1], "a\u{fffd}b");
    }

    #[test]
    fn rotation_keeps_exactly_keep_files_and_never_splits_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = RotatingFile::new(dir.path().join("b.log"), 100, 3);
        for i in 0..50 {
            file.write_record(format!("record {i:03} ..........\n").as_bytes())
                .unwrap();
        }
        file.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["b.log", "b.log.1", "b.log.2", "b.log.3"]);
        for name in &names {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() <= 100, "{name} has {} bytes", text.len());
            assert!(
                text.lines()
                    .all(|l| l.len() == "record 000 ..........".len()),
                "{name}: {text:?}"
            );
        }
        // newest last: the live file ends with the last record
        let live = fs::read_to_string(dir.path().join("b.log")).unwrap();
        assert!(live.ends_with("record 049 ..........\n"));
        let oldest = fs::read_to_string(dir.path().join("b.log.3")).unwrap();
        assert!(oldest.starts_with("record 0"));
    }

    #[test]
    fn lines_partial_lines_and_binary_output_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = BackendLog::start(dir.path(), 1 << 20, 2, |_| {}).unwrap();
        let out: &'static [u8] = b"first\nsecond\r\n\xff\xfebinary\nno newline";
        let err: &'static [u8] = b"oops\n";
        let capture = log.capture(out, err).unwrap();
        capture.wait_eof(Duration::from_secs(5));
        let mut tail = capture.tail();
        tail.sort();
        assert_eq!(
            tail,
            [
                "first",
                "no newline",
                "oops",
                "second",
                "\u{fffd}\u{fffd}binary"
            ],
            "stdout and stderr interleave in any order; the tail has them all"
        );
        drop(log);
        let path = dir.path().join("backend.log");
        let deadline = Instant::now() + Duration::from_secs(5);
        while lines_of(&path).len() < 5 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let raw = fs::read(&path).unwrap();
        assert!(
            raw.windows(8).any(|w| w == b"\xff\xfebinary"),
            "binary bytes kept as-is"
        );
        let lines = lines_of(&path);
        assert!(lines.contains(&"out| first".to_string()), "{lines:?}");
        assert!(
            lines.contains(&"out| second".to_string()),
            "CR stripped: {lines:?}"
        );
        assert!(lines.contains(&"out\\ no newline".to_string()), "{lines:?}");
        assert!(lines.contains(&"err| oops".to_string()), "{lines:?}");
    }

    #[test]
    fn a_huge_line_without_newline_is_written_in_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let log = BackendLog::start(dir.path(), 1 << 30, 1, |_| {}).unwrap();
        let big = vec![b'x'; MAX_LINE * 3 + 10];
        let capture = log.capture(io::Cursor::new(big), io::empty()).unwrap();
        capture.wait_eof(Duration::from_secs(5));
        drop(log);
        let path = dir.path().join("backend.log");
        let deadline = Instant::now() + Duration::from_secs(5);
        while lines_of(&path).len() < 4 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.starts_with("out\\ ")));
        let total: usize = lines.iter().map(|l| l.len() - 5).sum();
        assert_eq!(total, MAX_LINE * 3 + 10);
    }
}
