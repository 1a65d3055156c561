//! Local IPC between the running warden and its clients (the CLI, a second launch): typed,
//! versioned JSON messages in length-prefixed frames over a local socket (a Unix domain
//! socket in an owner-only folder; a named pipe for the current user only on Windows).
//!
//! One request per connection. Every connection gets its own thread and one deadline for its
//! whole request frame; when too many connections are still sending, the oldest is dropped
//! rather than the newest refused, and `status` is never refused for lack of room, so idle or
//! slow-drip clients cannot lock the user out. The client bounds its whole exchange with one
//! deadline too, and on Unix trusts an answer only from a socket in a folder of its own user,
//! served by a process of its own user. May import `interprocess`, `serde`, `tracing`, the
//! status types and `crate::clock`; knows nothing of the engine.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{Listener, Stream};
use serde::{Deserialize, Serialize};

use crate::backend::strays::KillReport;
use crate::engine::supervisor::Command;
use crate::status::StatusReport;

pub mod handler;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// Bumped when a message changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame accepted, in bytes.
pub const MAX_FRAME: usize = 64 * 1024;

/// How long a client has to send its whole request frame (a local client sends it at once).
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// How long the server tries to deliver an answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

/// Connections still sending their request at once; a new one beyond this drops the oldest.
const MAX_READING: usize = 64;

/// Requests being answered at once that may take long (start, stop, quit, reload,
/// kill-strays); more get a "busy" answer. `status` and `show` are always answered.
const MAX_CONNECTIONS: usize = 32;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// The current status.
    Status,
    /// A second launch with no arguments: show the status to the user, return it.
    Show,
    /// Start, stop or restart; with `wait`, answer once the engine has settled.
    Control { command: Command, wait: bool },
    /// Stop the warden; with `keep_backend`, leave the backend running, unsupervised.
    Quit { keep_backend: bool },
    /// Kill every stray's tree (with `dry_run`, only say what would be killed).
    KillStrays {
        dry_run: bool,
        /// Debug sessions too (they are left alone otherwise).
        #[serde(default)]
        include_debug: bool,
    },
    /// Read the config again and apply it.
    Reload,
}

/// What the warden answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The status (to `Status` and `Show`).
    Status { status: Box<StatusReport> },
    /// The outcome of a `Control` or `Quit`: `ok` is false if the backend ended up failed,
    /// or did not settle in time.
    Done {
        ok: bool,
        message: String,
        status: Box<StatusReport>,
    },
    /// What `KillStrays` killed and left alone.
    Killed { report: KillReport, dry_run: bool },
    /// The request could not be handled.
    Error { message: String },
}

/// A frame: the protocol version and the message.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    #[serde(flatten)]
    body: T,
}

/// IPC errors, as the client sees them.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// Nobody listens: no warden runs for this home.
    #[error("no Backend Warden is running")]
    NotRunning,
    /// Transport failure. (Not a `source`: the message already says it, once.)
    #[error("talking to the running warden failed: {0}")]
    Io(io::Error),
    /// The warden took the connection but did not answer in time: stopped (SIGSTOP), hung,
    /// or swamped.
    #[error("{}", not_answering(*.pid, *.waited))]
    NotAnswering {
        /// The warden's PID, when the OS says who serves the socket.
        pid: Option<u32>,
        /// How long the client waited.
        waited: Duration,
    },
    /// The endpoint is not one this user can trust (another user's socket or folder, a
    /// symbolic link): no request is sent to it and no answer believed.
    #[error("{0}")]
    Untrusted(String),
    /// A frame that is not a valid message.
    #[error("the running warden sent an invalid answer: {0}")]
    Protocol(String),
    /// The other side speaks another protocol version.
    #[error(
        "the running warden speaks protocol version {theirs}, this program {ours}: restart the warden after an upgrade"
    )]
    Version {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
}

impl From<io::Error> for IpcError {
    fn from(e: io::Error) -> IpcError {
        IpcError::Io(e)
    }
}

fn not_answering(pid: Option<u32>, waited: Duration) -> String {
    let waited = humantime::format_duration(Duration::from_secs(waited.as_secs().max(1)));
    match pid {
        Some(pid) => format!(
            "the warden (PID {pid}) is not answering (waited {waited}); it may be stopped \
             (`kill -CONT {pid}` resumes it) or hung (`kill {pid}` ends it; the backend tree \
             goes with it)"
        ),
        None => format!("the warden is not answering (waited {waited})"),
    }
}

/// A stream whose every read and write fits in one deadline: each call gets only the time
/// left, so a peer that sends or takes a byte at a time cannot stretch the exchange.
struct Deadline<'a> {
    stream: &'a Stream,
    until: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        Ok(left)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Not supported on Windows named pipes: there the deadline is checked between reads.
        let _ = self.stream.set_recv_timeout(Some(self.left()?));
        let mut stream = self.stream;
        stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.stream.set_send_timeout(Some(self.left()?));
        let mut stream = self.stream;
        stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        let mut stream = self.stream;
        stream.flush()
    }
}

/// True for the errors a receive or send timeout produces.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes one frame: a 4-byte little-endian length, then the JSON body.
fn write_frame<T: Serialize>(stream: &mut impl Write, body: T) -> io::Result<()> {
    let bytes = serde_json::to_vec(&Envelope {
        version: PROTOCOL_VERSION,
        body,
    })
    .map_err(io::Error::other)?;
    if bytes.len() > MAX_FRAME {
        return Err(io::Error::other("message too large"));
    }
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    frame.extend_from_slice(&bytes);
    stream.write_all(&frame)?;
    stream.flush()
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// Transport error or truncated frame.
    Io(io::Error),
    /// Larger than [`MAX_FRAME`].
    TooLarge(usize),
    /// Not a valid message of this protocol version.
    Invalid(String),
    /// Another protocol version.
    Version(u32),
}

/// Reads one frame and decodes it. Never allocates more than [`MAX_FRAME`] for the body.
pub fn read_frame<T: for<'de> Deserialize<'de>>(stream: &mut impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).map_err(FrameError::Io)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(FrameError::Io)?;
    decode(&body)
}

/// Decodes a frame body.
fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let version = serde_json::from_slice::<VersionOnly>(body)
        .map_err(|e| FrameError::Invalid(e.to_string()))?
        .version;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    serde_json::from_slice::<Envelope<T>>(body)
        .map(|env| env.body)
        .map_err(|e| FrameError::Invalid(e.to_string()))
}

/// The single-instance lock: an OS file lock on `warden.lock` in the runtime folder.
///
/// The OS drops the lock when the process ends, however it ends, so a crash leaves nothing
/// that blocks the next start and a reused PID cannot fool it. The file is opened close-on-exec:
/// the backend never inherits it (the `single-instance` crate's Linux lock socket is inherited
/// by children, so a backend left running would hold the lock, and it leaks a descriptor per
/// failed attempt).
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
}

impl InstanceLock {
    /// Takes the lock, or `None` if another process holds it.
    pub fn try_acquire(runtime_dir: &Path) -> io::Result<Option<InstanceLock>> {
        imp::prepare_runtime_dir(runtime_dir)?;
        // Owner-only, never through a symbolic link, close-on-exec.
        let file = crate::private_fs::open_append(&runtime_dir.join("warden.lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(InstanceLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Sends one request to the warden of `runtime_dir` and returns its answer. `timeout` bounds
/// the whole exchange (connecting, sending, the warden's wait for the engine, the answer).
/// On Unix the folder and the socket must be this user's, and so must the process serving it.
pub fn request(
    runtime_dir: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, IpcError> {
    let started = Instant::now();
    let until = crate::clock::later(started, timeout);
    imp::check_endpoint(runtime_dir)?;
    let stream = loop {
        // A warden that does not accept (stopped) fills the socket's backlog; a blocking
        // connect would then wait forever: each try waits at most what is left.
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match imp::connect(runtime_dir, wait) {
            Ok(stream) => break stream,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(IpcError::NotRunning);
            }
            Err(e) if timed_out(&e) && Instant::now() < until => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) if timed_out(&e) => {
                return Err(IpcError::NotAnswering {
                    pid: None,
                    waited: started.elapsed(),
                });
            }
            Err(e) => return Err(IpcError::Io(e)),
        }
    };
    let pid = imp::check_peer(&stream)?;
    let mut io = Deadline {
        stream: &stream,
        until,
    };
    let late = |e: io::Error| {
        if timed_out(&e) {
            IpcError::NotAnswering {
                pid,
                waited: started.elapsed(),
            }
        } else {
            IpcError::Io(e)
        }
    };
    write_frame(&mut io, request).map_err(late)?;
    match read_frame::<Response>(&mut io) {
        Ok(response) => Ok(response),
        Err(FrameError::Io(e)) => Err(late(e)),
        Err(FrameError::TooLarge(n)) => Err(IpcError::Protocol(format!("{n}-byte frame"))),
        Err(FrameError::Invalid(e)) => Err(IpcError::Protocol(e)),
        Err(FrameError::Version(theirs)) => Err(IpcError::Version {
            ours: PROTOCOL_VERSION,
            theirs,
        }),
    }
}

/// A bound endpoint, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
}

impl Server {
    /// Binds the endpoint of `runtime_dir`. The caller must hold the single-instance lock: a
    /// stale endpoint left by a crashed warden is replaced.
    pub fn bind(runtime_dir: &Path) -> io::Result<Server> {
        imp::prepare_runtime_dir(runtime_dir)?;
        let listener = imp::listener_options(runtime_dir)?
            .create_sync()
            .map_err(|e| imp::bind_error(runtime_dir, e))?;
        Ok(Server { listener })
    }

    /// Serves requests on a thread of its own; `handle` runs on a per-connection thread.
    pub fn spawn(
        self,
        handle: impl Fn(Request) -> Response + Send + Sync + 'static,
    ) -> io::Result<ServerHandle> {
        let shared = Arc::new(Shared {
            handle: Box::new(handle),
            active: Arc::new(AtomicUsize::new(0)),
            long: Arc::new(AtomicUsize::new(0)),
            reading: Mutex::new(Reading::default()),
        });
        let server = ServerHandle {
            active: Arc::clone(&shared.active),
        };
        thread::Builder::new()
            .name("ipc-accept".into())
            .spawn(move || {
                for conn in self.listener.incoming() {
                    let conn = match conn {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of descriptors, say: pause instead of spinning on the error.
                            tracing::warn!(error = %e, "cannot accept a control connection");
                            thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    };
                    let Some(id) = shared.start_reading(&conn) else {
                        let _ = write_frame(
                            &mut Deadline {
                                stream: &conn,
                                until: crate::clock::later(
                                    Instant::now(),
                                    Duration::from_millis(100),
                                ),
                            },
                            busy(),
                        );
                        continue;
                    };
                    let shared_in_thread = Arc::clone(&shared);
                    let spawned = thread::Builder::new()
                        .name("ipc-conn".into())
                        .spawn(move || serve_one(conn, id, &shared_in_thread));
                    if spawned.is_err() {
                        shared.done_reading(id);
                    }
                }
            })?;
        Ok(server)
    }
}

fn busy() -> Response {
    Response::Error {
        message: "the warden is busy; try again".into(),
    }
}

/// What the connection threads share.
struct Shared {
    handle: Box<dyn Fn(Request) -> Response + Send + Sync>,
    /// Requests being answered.
    active: Arc<AtomicUsize>,
    /// Requests being answered that may take long (see [`MAX_CONNECTIONS`]).
    long: Arc<AtomicUsize>,
    /// Connections still sending their request, oldest first.
    reading: Mutex<Reading>,
}

#[derive(Default)]
struct Reading {
    next_id: u64,
    open: VecDeque<(u64, imp::Interrupt)>,
}

impl Shared {
    /// Registers a connection that is about to send its request; makes room by dropping the
    /// oldest one still sending when [`MAX_READING`] are. `None` when there is no room and
    /// none can be dropped (a platform where a read cannot be interrupted).
    fn start_reading(&self, conn: &Stream) -> Option<u64> {
        let interrupt = imp::Interrupt::of(conn)?;
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        if reading.open.len() >= MAX_READING {
            if !imp::Interrupt::SUPPORTED {
                return None;
            }
            if let Some((_, oldest)) = reading.open.pop_front() {
                oldest.interrupt();
            }
        }
        reading.next_id += 1;
        let id = reading.next_id;
        reading.open.push_back((id, interrupt));
        Some(id)
    }

    fn done_reading(&self, id: u64) {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        reading.open.retain(|(open, _)| *open != id);
    }
}

/// One taken connection slot, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Watches a running server's connections.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    active: Arc<AtomicUsize>,
}

impl ServerHandle {
    /// Waits (at most `limit`) until no request is being answered, so that an answer such as
    /// "quit: done" reaches its client before the process exits.
    pub fn wait_idle(&self, limit: Duration) {
        let deadline = crate::clock::later(std::time::Instant::now(), limit);
        while self.active.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

/// True for requests that are answered at once from what the warden knows: they never wait
/// for a slot, so the user's `status` gets through however many long requests are running.
fn is_quick(request: &Request) -> bool {
    matches!(request, Request::Status | Request::Show)
}

fn serve_one(conn: Stream, id: u64, shared: &Shared) {
    let mut reader = Deadline {
        stream: &conn,
        until: crate::clock::later(Instant::now(), REQUEST_DEADLINE),
    };
    let read = read_frame::<Request>(&mut reader);
    shared.done_reading(id);
    shared.active.fetch_add(1, Ordering::SeqCst);
    let _active = Slot(Arc::clone(&shared.active));
    let response = match read {
        Ok(request) if is_quick(&request) => answer(&*shared.handle, request),
        Ok(request) => {
            if shared.long.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                shared.long.fetch_sub(1, Ordering::SeqCst);
                busy()
            } else {
                let _long = Slot(Arc::clone(&shared.long));
                answer(&*shared.handle, request)
            }
        }
        Err(FrameError::Io(_)) => return, // gone, silent, too slow or truncated: just close
        Err(FrameError::TooLarge(n)) => Response::Error {
            message: format!("request of {n} bytes is larger than the limit of {MAX_FRAME}"),
        },
        Err(FrameError::Invalid(e)) => Response::Error {
            message: format!("invalid request: {e}"),
        },
        Err(FrameError::Version(v)) => Response::Error {
            message: format!(
                "this warden speaks protocol version {PROTOCOL_VERSION}, the client {v}: restart the warden after an upgrade"
            ),
        },
    };
    let mut writer = Deadline {
        stream: &conn,
        until: crate::clock::later(Instant::now(), ANSWER_DEADLINE),
    };
    let _ = write_frame(&mut writer, response);
}

/// Runs the handler; a panic in it costs this one answer (an error, logged), not the
/// connection slot or the thread that would answer the next `quit`.
fn answer(handle: &(dyn Fn(Request) -> Response + Send + Sync), request: Request) -> Response {
    let asked = format!("{request:?}");
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(request))) {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            tracing::error!(request = %asked, panic = %what, "an IPC request handler panicked");
            Response::Error {
                message: format!(
                    "the warden failed to answer this request (an internal error: {what}); \
                     see warden.log"
                ),
            }
        }
    }
}

#[cfg(test)]
mod frame_fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    /// A handler that panics answers with an error, is logged, and gives its slot back: more
    /// panics than there are slots leave the server answering.
    #[test]
    fn a_panicking_handler_releases_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let server = Server::bind(&run).unwrap();
        let handle = server
            .spawn(|request| match request {
                Request::Show => panic!("handler bug"),
                _ => Response::Error {
                    message: "answered".into(),
                },
            })
            .unwrap();
        for _ in 0..MAX_CONNECTIONS * 2 {
            match request(&run, &Request::Show, Duration::from_secs(10)) {
                Ok(Response::Error { message }) => {
                    assert!(message.contains("handler bug"), "{message}")
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
        handle.wait_idle(Duration::from_secs(10));
        assert_eq!(handle.active.load(Ordering::SeqCst), 0, "slots leaked");
        match request(&run, &Request::Status, Duration::from_secs(10)) {
            Ok(Response::Error { message }) => assert_eq!(message, "answered"),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Status,
            Request::Show,
            Request::Control {
                command: Command::Restart,
                wait: true,
            },
            Request::Quit { keep_backend: true },
        ] {
            let mut buf = Vec::new();
            write_frame(&mut buf, &request).unwrap();
            let back: Request = read_frame(&mut buf.as_slice()).unwrap();
            assert_eq!(back, request);
        }
    }

    #[test]
    fn the_wire_format_is_readable_json() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            Request::Control {
                command: Command::Stop,
                wait: false,
            },
        )
        .unwrap();
        assert_eq!(
            &buf[4..],
            br#"{"version":1,"type":"control","command":"stop","wait":false}"#
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (vec![1, 0], "truncated length"),
            (frame(b"{\"version\":1"), "truncated json"),
            (frame(b"\xff\xfe\x00"), "not utf-8"),
            (
                frame(b"{\"version\":1,\"type\":\"launch_missiles\"}"),
                "unknown type",
            ),
            (frame(b"{\"type\":\"status\"}"), "no version"),
            (frame(b"[]"), "not an object"),
            ((u32::MAX).to_le_bytes().to_vec(), "huge length"),
            (
                {
                    let mut f = frame(b"{\"version\":1,\"type\":\"status\"}");
                    f.truncate(10);
                    f
                },
                "half a body",
            ),
        ];
        for (bytes, what) in cases {
            assert!(
                read_frame::<Request>(&mut bytes.as_slice()).is_err(),
                "{what}"
            );
        }
        assert!(matches!(
            read_frame::<Request>(&mut frame(b"{\"version\":9,\"type\":\"status\"}").as_slice()),
            Err(FrameError::Version(9))
        ));
    }
}
