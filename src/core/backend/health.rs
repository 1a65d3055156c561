//! Health probes: one thread performs HTTP GETs against the backend's health URL, and checks
//! whether the backend's port listens yet, so that a slow or hanging endpoint never stalls the
//! engine. When to do either is the supervisor's decision; this module only does it. May
//! import `std`, `ureq` and the supervisor's input types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::engine::supervisor::{Input, Pid, Probe, ProbeFailure};

/// The User-Agent of every probe, so that a backend can leave them out of its access log.
pub const USER_AGENT: &str = concat!(
    "backend-warden/",
    env!("CARGO_PKG_VERSION"),
    " (health check)"
);

/// The longest a port check waits for a connection. On Linux and macOS a port nobody listens
/// on refuses at once; Windows retries a refused loopback connect for about 2 s, so there the
/// check gives up after this instead (a listening port on loopback connects in microseconds).
const PORT_CHECK_TIMEOUT: Duration = Duration::from_millis(10);

/// One job for the probe thread.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// GET the health URL for `pid`.
    Http(Pid),
    /// Whether `port` listens, for `pid`.
    Port(Pid, u16),
}

/// Runs probes on its own thread; results come back through the callback as inputs for the
/// supervisor ([`Input::Probed`], [`Input::PortChecked`]).
#[derive(Debug, Clone)]
pub struct HealthProbe {
    jobs: Sender<Job>,
}

impl HealthProbe {
    /// Starts the probe thread for `url`; each probe gives up after `timeout`.
    pub fn start(
        url: String,
        timeout: Duration,
        on_result: impl Fn(Input) + Send + 'static,
    ) -> std::io::Result<HealthProbe> {
        let (jobs, pending) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("health-probe".into())
            .spawn(move || {
                let hosts = port_check_hosts(&url);
                let mut prober = Prober::new(url, timeout);
                while let Ok(job) = pending.recv() {
                    on_result(match job {
                        Job::Http(pid) => Input::Probed {
                            pid,
                            probe: prober.probe(pid),
                        },
                        Job::Port(pid, port) => Input::PortChecked {
                            pid,
                            listening: listening(&hosts, port),
                        },
                    });
                }
            })?;
        Ok(HealthProbe { jobs })
    }

    /// Asks for one probe of `pid`'s health.
    pub fn request(&self, pid: Pid) {
        let _ = self.jobs.send(Job::Http(pid));
    }

    /// Asks whether `pid`'s `port` listens yet.
    pub fn check_port(&self, pid: Pid, port: u16) {
        let _ = self.jobs.send(Job::Port(pid, port));
    }
}

/// Where a port check looks: the health URL's host when it is an IP address (a backend bound
/// to one address), else both loopback addresses.
fn port_check_hosts(url: &str) -> Vec<IpAddr> {
    let host = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_owned));
    match host
        .as_deref()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
    {
        Some(ip) => vec![ip],
        None => vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
    }
}

/// Whether something accepts connections on `port` at one of `hosts`. A connect that sends
/// nothing and closes at once: while nobody listens the OS refuses it without the backend
/// seeing anything, and once it listens the backend sees one connection closed before a word
/// of HTTP, which servers drop without a log line.
fn listening(hosts: &[IpAddr], port: u16) -> bool {
    hosts.iter().any(|&ip| {
        TcpStream::connect_timeout(&SocketAddr::new(ip, port), PORT_CHECK_TIMEOUT).is_ok()
    })
}

/// The probe's read buffer, and the most of response headers it accepts.
const PROBE_BUFFER: usize = 16 * 1024;

/// A fresh connection at least this often (in probes) while one is kept alive: a backend
/// that stops accepting connections but still serves an open one is noticed within as many
/// probes (30 s at the default 2 s interval).
const PROBES_PER_CONNECTION: u32 = 15;

/// Probes over one kept-alive connection per backend process: a probe every two seconds, all
/// day, then costs a request and its answer, not a TCP handshake and teardown besides. The
/// connection (its agent) belongs to one backend PID and is never used for another, so a probe
/// never talks to a process of an older tree.
struct Prober {
    url: String,
    timeout: Duration,
    current: Option<Connection>,
}

/// The path part of `url`, for "/health answered 503 ...".
fn url_path(url: &str) -> String {
    url.parse::<ureq::http::Uri>()
        .map(|uri| uri.path().to_owned())
        .unwrap_or_else(|_| url.to_owned())
}

struct Connection {
    pid: Pid,
    agent: ureq::Agent,
    /// Probes made through this agent.
    probes: u32,
    /// The last probe succeeded, so the agent keeps an open connection to reuse.
    kept: bool,
}

impl Prober {
    fn new(url: String, timeout: Duration) -> Prober {
        Prober {
            url,
            timeout,
            current: None,
        }
    }

    fn probe(&mut self, pid: Pid) -> Probe {
        let reusable = self
            .current
            .as_ref()
            .is_some_and(|c| c.pid == pid && c.probes < PROBES_PER_CONNECTION);
        if !reusable {
            self.current = None;
        }
        let timeout = self.timeout;
        let connection = self
            .current
            .get_or_insert_with(|| Connection::new(pid, timeout));
        let reused = connection.kept;
        let mut result = connection.probe(&self.url, timeout);
        if reused && matches!(result, Err(ProbeError::Connection(..))) {
            // The kept connection was closed by the backend (its keep-alive timeout, or it
            // went away): only a failure on a new connection counts.
            *connection = Connection::new(pid, timeout);
            result = connection.probe(&self.url, timeout);
        }
        result.unwrap_or_else(ProbeError::into_probe)
    }
}

impl Connection {
    fn new(pid: Pid, timeout: Duration) -> Connection {
        Connection {
            pid,
            agent: agent(timeout, true),
            probes: 0,
            kept: false,
        }
    }

    fn probe(&mut self, url: &str, timeout: Duration) -> Result<Probe, ProbeError> {
        self.probes += 1;
        let result = probe_once(&self.agent, url, timeout);
        // A complete answer, 2xx or not, leaves the connection open for the next probe.
        self.kept = matches!(
            result,
            Ok(_) | Err(ProbeError::Answer(_, ProbeFailure::Status { .. }))
        );
        result
    }
}

/// One probe of `url`, now, on the calling thread.
pub fn check_once(url: &str, timeout: Duration) -> Probe {
    probe_once(&agent(timeout, false), url, timeout).unwrap_or_else(ProbeError::into_probe)
}

/// An agent for probes of `timeout`; with `keep_alive`, it keeps its connection open between
/// probes (for a few seconds, less than servers' usual keep-alive timeout: uvicorn's and
/// Node's are 5 s).
fn agent(timeout: Duration, keep_alive: bool) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(USER_AGENT)
        // Probes go to the loopback address; a proxy from the environment must not see them.
        .proxy(None)
        .max_idle_connections(usize::from(keep_alive))
        .max_idle_connections_per_host(usize::from(keep_alive))
        .max_idle_age(Duration::from_secs(4))
        // A health answer is a status line, a few headers and a small body: ureq's 128 KiB
        // buffers each way (zeroed, so all resident, for as long as the connection is kept)
        // would be most of the warden's memory.
        .max_response_header_size(PROBE_BUFFER)
        .input_buffer_size(PROBE_BUFFER)
        .output_buffer_size(PROBE_BUFFER / 4)
        .build();
    ureq::Agent::with_parts(config, DefaultConnector::new(), LiteralFirst::default())
}

/// ureq's resolver, minus a thread per probe: with a timeout set, its default resolver runs
/// every lookup on a new thread (to give up on a slow DNS server), even for `127.0.0.1`, which
/// needs no lookup at all. That thread was most of a probe's cost (a probe every 2 s, all day).
/// IP literals resolve here, on the calling thread; names still go to ureq's resolver.
#[derive(Debug, Default)]
struct LiteralFirst {
    names: DefaultResolver,
}

impl Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // "host:port" with the scheme's default port filled in, as ureq's resolver builds it;
        // an IP literal (IPv6 in brackets) parses as a socket address as it is.
        let host_port = uri
            .scheme()
            .zip(uri.authority())
            .and_then(|(scheme, authority)| DefaultResolver::host_and_port(scheme, authority));
        // `localhost`: 127.0.0.1 first, then ::1. The system's order puts ::1 first, and on
        // Windows a refused loopback connection takes about 2 s (longer than the default probe
        // timeout), while most backends (uvicorn's default) listen on 127.0.0.1 only.
        if let Some((host, port)) = host_port.as_deref().and_then(|hp| hp.rsplit_once(':'))
            && host.eq_ignore_ascii_case("localhost")
            && let Ok(port) = port.parse::<u16>()
        {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
            addrs.push(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)));
            return Ok(addrs);
        }
        let literal = host_port.and_then(|addr| addr.parse::<SocketAddr>().ok());
        match literal {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            None => self.names.resolve(uri, config, timeout),
        }
    }
}

/// Why a probe failed: the message with the URL, and the failure in words.
#[derive(Debug)]
enum ProbeError {
    /// An answer, but not a 2xx one, or no answer in time: the backend's doing.
    Answer(String, ProbeFailure),
    /// The connection failed (refused, reset, closed before the answer, ...).
    Connection(String, ProbeFailure),
}

impl ProbeError {
    fn into_probe(self) -> Probe {
        match self {
            ProbeError::Answer(error, failure) | ProbeError::Connection(error, failure) => {
                Probe::Failed { error, failure }
            }
        }
    }
}

fn probe_once(agent: &ureq::Agent, url: &str, timeout: Duration) -> Result<Probe, ProbeError> {
    let started = Instant::now();
    match agent.get(url).call() {
        Ok(response) if response.status().is_success() => {
            // Read the body to the end, so that the connection can be used again.
            let _ = response.into_body().read_to_vec();
            Ok(Probe::Ok {
                latency: started.elapsed(),
            })
        }
        Ok(response) => {
            let status = response.status();
            // Read the (small) body through, so that the connection can be used again.
            let _ = response.into_body().read_to_vec();
            Err(ProbeError::Answer(
                format!("{url} answered {status}"),
                ProbeFailure::Status {
                    path: url_path(url),
                    code: status.as_u16(),
                    reason: status.canonical_reason().unwrap_or_default().to_owned(),
                },
            ))
        }
        Err(ureq::Error::Timeout(_)) => Err(ProbeError::Answer(
            format!("{url} did not answer within the timeout"),
            ProbeFailure::TimedOut { after: timeout },
        )),
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(
            ProbeError::Connection(format!("{url}: connection refused"), ProbeFailure::Refused),
        ),
        Err(e) => Err(ProbeError::Connection(
            format!("{url}: {e}"),
            ProbeFailure::Other(e.to_string()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn resolve(url: &str) -> Vec<SocketAddr> {
        let uri: ureq::http::Uri = url.parse().unwrap();
        let config = ureq::Agent::config_builder().build();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(1),
            reason: ureq::Timeout::Resolve,
            ..NextTimeout::default()
        };
        LiteralFirst::default()
            .resolve(&uri, &config, timeout)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn localhost_resolves_to_ipv4_loopback_first() {
        assert_eq!(
            resolve("http://localhost:54112/health"),
            [
                "127.0.0.1:54112".parse::<SocketAddr>().unwrap(),
                "[::1]:54112".parse().unwrap()
            ]
        );
        assert_eq!(resolve("http://LocalHost/").len(), 2);
    }

    #[test]
    fn literals_resolve_to_themselves_with_their_port() {
        assert_eq!(
            resolve("http://127.0.0.1:54112/health"),
            ["127.0.0.1:54112".parse().unwrap()]
        );
        assert_eq!(
            resolve("http://[::1]:8000/"),
            ["[::1]:8000".parse().unwrap()]
        );
        assert_eq!(
            resolve("http://10.1.2.3/x"),
            ["10.1.2.3:80".parse().unwrap()]
        );
    }

    /// A loopback HTTP/1.1 server answering 200; counts the connections it accepted. With
    /// `one_answer_per_connection` it closes a connection when a second request arrives on it,
    /// without answering (as a server whose keep-alive timeout ran out as the probe was sent).
    fn server(one_answer_per_connection: bool) -> (String, Arc<AtomicUsize>) {
        server_with_body(one_answer_per_connection, b"ok".to_vec())
    }

    fn server_with_body(
        one_answer_per_connection: bool,
        body: Vec<u8>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                thread::spawn(move || {
                    let (mut request, mut answered) = (Vec::new(), false);
                    let mut byte = [0u8; 1];
                    while let Ok(1) = stream.read(&mut byte) {
                        request.push(byte[0]);
                        if request.ends_with(b"\r\n\r\n") {
                            request.clear();
                            if answered && one_answer_per_connection {
                                return;
                            }
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            if stream
                                .write_all(head.as_bytes())
                                .and_then(|()| stream.write_all(&body))
                                .is_err()
                            {
                                return;
                            }
                            answered = true;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    fn ok(probe: &Probe) -> bool {
        matches!(probe, Probe::Ok { .. })
    }

    #[test]
    fn probes_of_one_backend_share_a_connection_and_a_new_backend_gets_its_own() {
        let (url, accepted) = server(false);
        let mut prober = Prober::new(url, Duration::from_secs(2));
        for _ in 0..5 {
            assert!(ok(&prober.probe(100)));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Another PID (a restarted backend): never the old connection.
        assert!(ok(&prober.probe(200)));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // A fresh connection every PROBES_PER_CONNECTION probes.
        for _ in 1..PROBES_PER_CONNECTION {
            assert!(ok(&prober.probe(200)));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert!(ok(&prober.probe(200)));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_kept_connection_the_server_closed_is_not_a_failure() {
        let (url, accepted) = server(true);
        let mut prober = Prober::new(url, Duration::from_secs(2));
        for _ in 0..4 {
            let probe = prober.probe(100);
            assert!(ok(&probe), "{probe:?}");
        }
        // Each probe after the first tried the kept connection, then a new one.
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn an_answer_larger_than_the_buffer_is_read_through_on_one_connection() {
        let (url, accepted) = server_with_body(false, vec![b'x'; 8 * PROBE_BUFFER]);
        let mut prober = Prober::new(url, Duration::from_secs(2));
        for _ in 0..3 {
            let probe = prober.probe(100);
            assert!(ok(&probe), "{probe:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_refused_connection_fails_at_once() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut prober = Prober::new(
            format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(2),
        );
        match prober.probe(100) {
            Probe::Failed { error, failure } => {
                assert!(error.contains("refused"), "{error}");
                assert_eq!(failure, ProbeFailure::Refused);
            }
            other => panic!("{other:?}"),
        }
    }

    /// A loopback server that answers every request on one connection with `status`, and
    /// hands each request head it read to the test.
    fn recording_server(status: &'static str) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let (heads, received) = mpsc::channel();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let heads = heads.clone();
                thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut byte = [0u8; 1];
                    while let Ok(1) = stream.read(&mut byte) {
                        request.push(byte[0]);
                        if request.ends_with(b"\r\n\r\n") {
                            let _ = heads.send(String::from_utf8_lossy(&request).into_owned());
                            request.clear();
                            let answer =
                                format!("HTTP/1.1 {status}\r\ncontent-length: 4\r\n\r\nbusy");
                            if stream.write_all(answer.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, received)
    }

    #[test]
    fn a_non_2xx_answer_says_so_in_words_and_keeps_the_connection() {
        let (url, heads) = recording_server("503 Service Unavailable");
        let mut prober = Prober::new(url.clone(), Duration::from_secs(2));
        for _ in 0..3 {
            match prober.probe(100) {
                Probe::Failed { error, failure } => {
                    assert_eq!(error, format!("{url} answered 503 Service Unavailable"));
                    assert_eq!(
                        failure.to_string(),
                        "/health answered 503 Service Unavailable"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let heads: Vec<String> = heads.try_iter().collect();
        assert_eq!(heads.len(), 3);
        for head in heads {
            let head = head.to_ascii_lowercase();
            assert!(
                head.contains(&format!("user-agent: {}", USER_AGENT.to_ascii_lowercase())),
                "{head}"
            );
        }
        let current = prober.current.as_ref().unwrap();
        assert!(current.kept, "the 503 answers were read through");
    }

    #[test]
    fn a_probe_that_gets_no_answer_in_time_says_after_how_long() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        // Accepted (by the backlog) but never answered.
        match check_once(&url, Duration::from_millis(200)) {
            Probe::Failed { failure, .. } => {
                assert_eq!(failure.to_string(), "timed out after 200 ms")
            }
            other => panic!("{other:?}"),
        }
        drop(listener);
    }

    #[test]
    fn a_port_check_sends_nothing_and_tells_listening_from_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hosts = port_check_hosts(&format!("http://127.0.0.1:{port}/health"));
        assert_eq!(hosts, [IpAddr::from(Ipv4Addr::LOCALHOST)]);
        assert!(listening(&hosts, port));
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).unwrap();
        assert!(received.is_empty(), "the check sent {received:?}");
        drop((stream, listener));
        assert!(!listening(&hosts, port), "nobody listens any more");
        assert_eq!(
            port_check_hosts("http://localhost:8000/health"),
            [
                IpAddr::from(Ipv4Addr::LOCALHOST),
                IpAddr::from(Ipv6Addr::LOCALHOST)
            ]
        );
        assert_eq!(
            port_check_hosts("http://[::1]:8000/health"),
            [IpAddr::from(Ipv6Addr::LOCALHOST)]
        );
    }

    #[test]
    fn the_probe_thread_answers_port_checks_and_probes_as_inputs() {
        let (url, _heads) = recording_server("200 OK");
        let port: u16 = url.rsplit(':').next().unwrap()[..]
            .trim_end_matches("/health")
            .parse()
            .unwrap();
        let (inputs, received) = mpsc::channel();
        let probe = HealthProbe::start(url, Duration::from_secs(2), move |input| {
            let _ = inputs.send(input);
        })
        .unwrap();
        probe.check_port(7, port);
        probe.request(7);
        let limit = Duration::from_secs(5);
        assert_eq!(
            received.recv_timeout(limit).unwrap(),
            Input::PortChecked {
                pid: 7,
                listening: true
            }
        );
        assert!(matches!(
            received.recv_timeout(limit).unwrap(),
            Input::Probed {
                pid: 7,
                probe: Probe::Ok { .. }
            }
        ));
    }

    #[test]
    fn names_still_resolve() {
        let addrs = resolve("http://localhost:8000/health");
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 8000 && a.ip().is_loopback())
        );
    }
}
