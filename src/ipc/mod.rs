//! Local IPC between the running warden and its clients (the CLI, a second launch): typed,
//! versioned JSON messages in length-prefixed frames over a local socket (a Unix domain
//! socket in an owner-only folder; a named pipe for the current user only on Windows).
//!
//! One request per connection. Every connection gets its own thread with a read deadline, so
//! a slow, silent or malicious client never blocks another client or the engine. May import
//! `interprocess`, `serde` and the status types; knows nothing of the engine.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{Listener, Stream};
use serde::{Deserialize, Serialize};

use crate::status::StatusReport;
use crate::strays::KillReport;
use crate::supervisor::Command;

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

/// How long a server waits for a client's request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Connections served at once; more get a "busy" answer.
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
    /// Transport failure.
    #[error("talking to the running warden failed: {0}")]
    Io(#[from] io::Error),
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

/// Decodes a frame body (public for the fuzz tests).
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
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
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(runtime_dir.join("warden.lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(InstanceLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Sends one request to the warden of `runtime_dir` and returns its answer. `timeout` bounds
/// the whole exchange, including the warden's wait for the engine.
pub fn request(
    runtime_dir: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, IpcError> {
    let mut stream = match imp::connect(runtime_dir) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(IpcError::NotRunning);
        }
        Err(e) => return Err(IpcError::Io(e)),
    };
    // Timeouts are not supported on Windows named pipes; there the server's own deadlines
    // bound the wait.
    let _ = stream.set_recv_timeout(Some(timeout));
    let _ = stream.set_send_timeout(Some(timeout));
    write_frame(&mut stream, request)?;
    match read_frame::<Response>(&mut stream) {
        Ok(response) => Ok(response),
        Err(FrameError::Io(e)) => Err(IpcError::Io(e)),
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
        let handle = Arc::new(handle);
        let active = Arc::new(AtomicUsize::new(0));
        let server = ServerHandle {
            active: Arc::clone(&active),
        };
        thread::Builder::new()
            .name("ipc-accept".into())
            .spawn(move || {
                for conn in self.listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                        active.fetch_sub(1, Ordering::SeqCst);
                        let _ = write_frame(
                            &mut conn,
                            Response::Error {
                                message: "the warden is busy; try again".into(),
                            },
                        );
                        continue;
                    }
                    let handle = Arc::clone(&handle);
                    let active_in_thread = Arc::clone(&active);
                    let spawned = thread::Builder::new()
                        .name("ipc-conn".into())
                        .spawn(move || {
                            serve_one(conn, &*handle);
                            active_in_thread.fetch_sub(1, Ordering::SeqCst);
                        });
                    if spawned.is_err() {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })?;
        Ok(server)
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
        let deadline = std::time::Instant::now() + limit;
        while self.active.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

fn serve_one(mut conn: Stream, handle: &dyn Fn(Request) -> Response) {
    let _ = conn.set_recv_timeout(Some(REQUEST_DEADLINE));
    let _ = conn.set_send_timeout(Some(REQUEST_DEADLINE));
    let response = match read_frame::<Request>(&mut conn) {
        Ok(request) => handle(request),
        Err(FrameError::Io(_)) => return, // gone, silent or truncated: just close
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
    let _ = write_frame(&mut conn, response);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
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
