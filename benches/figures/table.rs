//! The figures table: measured value, target, verdict and the peers' figures.

use std::time::Duration;

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// Reported only (no target), or skipped.
    Info,
}

/// One line of the table.
pub struct Row {
    pub figure: String,
    pub measured: String,
    pub target: String,
    pub verdict: Verdict,
    /// PM2 7.0 / supervisord 4.3 / circus 0.19, as measured in the issue.
    pub peers: String,
}

impl Row {
    pub fn new(figure: impl Into<String>, measured: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            measured: measured.into(),
            target: "report".into(),
            verdict: Verdict::Info,
            peers: String::new(),
        }
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.verdict = if met { Verdict::Met } else { Verdict::Missed };
        self
    }

    pub fn note(mut self, target: impl Into<String>) -> Row {
        self.target = target.into();
        self
    }

    pub fn peers(mut self, peers: impl Into<String>) -> Row {
        self.peers = peers.into();
        self
    }
}

/// A Markdown table (readable as plain text too).
pub fn render(rows: &[Row]) -> String {
    let header = [
        "figure",
        "Backend Warden",
        "target",
        "",
        "PM2 / supervisord / circus",
    ];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.clone(),
                r.measured.clone(),
                r.target.clone(),
                match r.verdict {
                    Verdict::Met => "met".into(),
                    Verdict::Missed => "MISSED".into(),
                    Verdict::Info => String::new(),
                },
                r.peers.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    let line = |cols: &[String]| format!("| {} |\n", cols.join(" | "));
    out.push_str(&line(&header.map(String::from)));
    out.push_str(&line(&header.map(|_| "---".to_string())));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// "1.23 ms" / "512 ms" / "1.50 s".
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 2000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// The median (of an odd or even count), or None for no samples.
pub fn median(samples: &[Duration]) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    })
}

/// "median 1.23 ms (min 1.01, max 2.50; n=10)".
pub fn summary(samples: &[Duration]) -> String {
    match median(samples) {
        None => "no samples".into(),
        Some(m) => {
            let min = samples.iter().min().copied().unwrap_or_default();
            let max = samples.iter().max().copied().unwrap_or_default();
            format!(
                "{} (min {}, max {}; n={})",
                ms(m),
                ms(min),
                ms(max),
                samples.len()
            )
        }
    }
}
