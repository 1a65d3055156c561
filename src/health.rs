//! Health probes: one thread performs HTTP GETs against the backend's health URL so that a
//! slow or hanging endpoint never stalls the engine. May import `std`, `ureq` and the
//! supervisor's input types.

use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::supervisor::{Pid, Probe};

/// Runs probes on its own thread; results come back through the callback.
#[derive(Debug, Clone)]
pub struct HealthProbe {
    requests: Sender<Pid>,
}

impl HealthProbe {
    /// Starts the probe thread for `url`; each probe gives up after `timeout`.
    pub fn start(
        url: String,
        timeout: Duration,
        on_result: impl Fn(Pid, Probe) + Send + 'static,
    ) -> std::io::Result<HealthProbe> {
        let (requests, pending) = mpsc::channel::<Pid>();
        let agent = agent(timeout);
        thread::Builder::new()
            .name("health-probe".into())
            .spawn(move || {
                while let Ok(pid) = pending.recv() {
                    on_result(pid, probe_once(&agent, &url));
                }
            })?;
        Ok(HealthProbe { requests })
    }

    /// Asks for one probe of `pid`'s health.
    pub fn request(&self, pid: Pid) {
        let _ = self.requests.send(pid);
    }
}

/// One probe of `url`, now, on the calling thread.
pub fn check_once(url: &str, timeout: Duration) -> Probe {
    probe_once(&agent(timeout), url)
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // Probes go to the loopback address; a proxy from the environment must not see them.
        .proxy(None)
        // A fresh connection each time: after a restart a pooled one would be stale.
        .max_idle_connections(0)
        .build()
        .into()
}

fn probe_once(agent: &ureq::Agent, url: &str) -> Probe {
    let started = Instant::now();
    match agent.get(url).call() {
        Ok(response) if response.status().is_success() => Probe::Ok {
            latency: started.elapsed(),
        },
        Ok(response) => Probe::Failed {
            error: format!("{url} answered {}", response.status()),
        },
        Err(ureq::Error::Timeout(_)) => Probe::Failed {
            error: format!("{url} did not answer within the timeout"),
        },
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Probe::Failed {
                error: format!("{url}: connection refused"),
            }
        }
        Err(e) => Probe::Failed {
            error: format!("{url}: {e}"),
        },
    }
}
