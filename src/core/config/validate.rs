//! The rules a parsed config must follow beyond the shapes of its types: bounds on every
//! duration, size, list and string (issue #19), and rules across keys. Each rule looks at the
//! typed [`Config`]; the document it was parsed from says where the key is. Imports the config
//! module and the stray matcher's test for rules that match too much.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::{
    Config, GENERIC_PROGRAMS, Issue, MAX_DURATION, RestartConfig, StraysConfig, WatchConfig,
    format_duration, parse_duration, source_text,
};

/// Smallest `logs.max_size`.
const MIN_LOG_SIZE: u64 = 1000;
/// Largest `logs.max_size`: beyond it a log is not something anyone reads.
const MAX_LOG_SIZE: u64 = 10_000_000_000;
/// Most arguments in `backend.args` (and variables in `backend.env`).
pub(super) const MAX_ARGS: usize = 1024;
/// Most items in any other list (`watch.include`, `strays.cmdline_contains`, ...).
const MAX_LIST: usize = 256;
/// Longest string value, in bytes (Linux refuses a single argument over 128 KiB).
pub(super) const MAX_STRING: usize = 32 * 1024;
/// Most bytes of `backend.args` and `backend.env` together: the kernel refuses a launch whose
/// arguments and environment exceed its limit (2 MiB or less), with the warden's own
/// environment on top.
const MAX_LAUNCH_BYTES: usize = 512 * 1024;

/// The duration keys, and whether zero is allowed (it means "at once" there).
const DURATIONS: &[(&str, bool)] = &[
    ("health.interval", false),
    ("health.timeout", false),
    ("health.restart_after", false),
    ("health.start_timeout", false),
    ("restart.backoff_initial", true),
    ("restart.backoff_max", true),
    ("restart.window", false),
    ("restart.stable_after", true),
    ("stop.grace", false),
    ("strays.scan_interval", false),
    ("watch.debounce", true),
];

/// Keys whose value must not be blank, with an example of what to write.
const NOT_BLANK: &[(&str, &str)] = &[
    ("backend.command", "command = \"python\""),
    ("backend.cwd", "cwd = 'C:\\path\\to\\your\\backend'"),
    ("backend.env_file", "env_file = \".env.local\""),
    (
        "backend.open_url",
        "open_url = \"http://127.0.0.1:54112/docs\"",
    ),
    ("logs.dir", "dir = \"logs\""),
    ("strays.cwd", "cwd = 'C:\\path\\to\\your\\backend'"),
    ("strays.exe_name", "exe_name = \"python\""),
];

/// The first problem of `config`, parsed from `doc`: the first direct mistake in file order,
/// else the first consequence of one.
pub(super) fn check(config: &Config, doc: &DeTable<'_>) -> Option<Issue> {
    let mut rules = Rules {
        doc,
        issues: Vec::new(),
    };
    rules.strings(doc, "");
    rules.not_blank();
    if let Some(backend) = &config.backend {
        rules.backend(backend);
    }
    rules.durations();
    rules.max_size(config.logs.max_size);
    rules.url("health.url", config.health.url.as_deref());
    rules.url("stop.url", config.stop.url.as_deref());
    rules.watch(&config.watch);
    rules.strays(&config.strays);
    rules.backoff(&config.restart);
    rules
        .issues
        .into_iter()
        .min_by_key(|issue| (issue.secondary, issue.at))
}

/// The folders the config names (`backend.cwd`, `logs.dir`), resolved against `base`: one that
/// exists must be a folder.
pub(super) fn folders(config: &Config, doc: &DeTable<'_>, base: &Path) -> Option<Issue> {
    let folders = [
        (
            "backend.cwd",
            config.backend.as_ref().and_then(|b| b.cwd.as_ref()),
        ),
        ("logs.dir", config.logs.dir.as_ref()),
    ];
    folders.into_iter().find_map(|(key, folder)| {
        let resolved = base.join(folder?);
        // A folder that does not exist yet may appear (a mount, a checkout); the launch
        // reports it then. Something that is not a folder never works.
        let meta = std::fs::metadata(&resolved).ok()?;
        (!meta.is_dir()).then(|| {
            Issue::new(
                at(doc, key),
                key,
                format!(
                    "{} is not a folder; {key} must name a folder",
                    resolved.display()
                ),
            )
        })
    })
}

/// The value of dotted `key` in `doc`.
fn find<'d, 'i>(doc: &'d DeTable<'i>, key: &str) -> Option<&'d toml::Spanned<DeValue<'i>>> {
    let (first, rest) = key.split_once('.').unwrap_or((key, ""));
    let value = doc.get(first)?;
    match (rest, value.get_ref()) {
        ("", _) => Some(value),
        (rest, DeValue::Table(table)) => find(table, rest),
        _ => None,
    }
}

/// Where the value of dotted `key` starts in the text.
fn at(doc: &DeTable<'_>, key: &str) -> usize {
    find(doc, key).map_or(0, |value| value.span().start)
}

/// The rules, collecting what they find.
struct Rules<'d, 'i> {
    doc: &'d DeTable<'i>,
    issues: Vec<Issue>,
}

impl Rules<'_, '_> {
    fn report(&mut self, at: usize, key: impl Into<String>, message: String) {
        self.issues.push(Issue::new(at, key, message));
    }

    /// Reports at the value of `key`.
    fn report_at(&mut self, key: &str, message: String) {
        self.report(at(self.doc, key), key, message);
    }

    /// Every string in the document, alone or in an array: no NUL, no more than
    /// [`MAX_STRING`] bytes.
    fn strings(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table.iter() {
            let key = match prefix {
                "" => key.get_ref().to_string(),
                prefix => format!("{prefix}.{}", key.get_ref()),
            };
            match value.get_ref() {
                DeValue::String(text) if let Some(problem) = string_problem(text) => {
                    self.report(value.span().start, key, problem);
                }
                DeValue::Array(items) => {
                    for (index, item) in items.iter().enumerate() {
                        if let DeValue::String(text) = item.get_ref()
                            && let Some(problem) = string_problem(text)
                        {
                            let message = format!("item {} of the array: {problem}", index + 1);
                            self.report(item.span().start, key.clone(), message);
                        }
                    }
                }
                DeValue::Table(inner) => self.strings(inner, &key),
                _ => {}
            }
        }
    }

    fn not_blank(&mut self) {
        for (key, example) in NOT_BLANK {
            if let Some(value) = find(self.doc, key)
                && let DeValue::String(text) = value.get_ref()
                && text.trim().is_empty()
            {
                self.report_at(key, format!("must not be empty; for example {example}"));
            }
        }
    }

    fn backend(&mut self, backend: &super::BackendConfig) {
        if find(self.doc, "backend.command").is_none() {
            self.issues.push(Issue {
                secondary: true,
                ..Issue::new(
                    at(self.doc, "backend"),
                    "backend.command",
                    "missing required key \"command\": [backend] needs the program to run \
                     (without a shell), e.g. command = \"python\" with args = [\"main.py\"]; \
                     remove the [backend] section to run the built-in demo backend"
                        .to_owned(),
                )
            });
        }
        self.list("backend.args", backend.args.len(), MAX_ARGS, "items");
        self.list("backend.env", backend.env.len(), MAX_ARGS, "variables");
        if let Some(DeValue::Table(vars)) = find(self.doc, "backend.env").map(|v| v.get_ref()) {
            for (key, _) in vars.iter() {
                let name: &str = key.get_ref();
                if name.is_empty() || name.contains(['=', '\0']) {
                    self.report(
                        key.span().start,
                        format!("backend.env.{name}"),
                        format!(
                            "invalid environment variable name {name:?}: it must be non-empty \
                             and contain no '='"
                        ),
                    );
                }
            }
        }
        let launch_bytes: usize = backend.args.iter().map(|a| a.len() + 1).sum::<usize>()
            + (backend.env.iter())
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        if launch_bytes > MAX_LAUNCH_BYTES {
            let key = if find(self.doc, "backend.args").is_some() {
                "backend.args"
            } else {
                "backend.env"
            };
            self.report_at(
                key,
                format!(
                    "backend.args and backend.env come to {launch_bytes} bytes, more than the \
                     limit of {} KiB: the system would refuse to start the backend",
                    MAX_LAUNCH_BYTES / 1024
                ),
            );
        }
        if let Some(url) = &backend.open_url
            && !url.trim().is_empty()
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            self.report_at(
                "backend.open_url",
                format!(
                    "{url:?} is not a web address: write it in full, e.g. \
                     open_url = \"http://127.0.0.1:54112/docs\""
                ),
            );
        }
    }

    /// A list of `len` items (`what`) at `key` holds at most `max`.
    fn list(&mut self, key: &str, len: usize, max: usize, what: &str) {
        if len > max {
            self.report_at(key, format!("{len} {what}, more than the limit of {max}"));
        }
    }

    /// No duration over [`MAX_DURATION`], and none zero unless zero is allowed. A message
    /// shows the key's default as an example.
    fn durations(&mut self) {
        let defaults = toml::Value::try_from(Config::default()).ok();
        for &(key, zero_ok) in DURATIONS {
            let Some(value) = find(self.doc, key) else {
                continue;
            };
            let Some(Ok(duration)) = value.get_ref().as_str().map(parse_duration) else {
                continue;
            };
            let name = key.rsplit('.').next().unwrap_or(key);
            let example = (defaults.as_ref())
                .and_then(|d| key.split('.').try_fold(d, |value, key| value.get(key)))
                .and_then(|default| default.as_str())
                .unwrap_or("30s");
            if duration.is_zero() && !zero_ok {
                self.report_at(
                    key,
                    format!("{name} must be greater than zero, like \"{example}\""),
                );
            } else if duration > MAX_DURATION {
                let message = format!(
                    "invalid duration {}: {name} may be at most one day (\"24h\"), like \
                     \"{example}\"",
                    source_text(value)
                );
                self.report_at(key, message);
            }
        }
    }

    fn max_size(&mut self, bytes: u64) {
        let key = "logs.max_size";
        let written = || find(self.doc, key).map_or_else(String::new, source_text);
        if bytes > MAX_LOG_SIZE {
            let message = format!(
                "max_size may be at most 10GB ({MAX_LOG_SIZE} bytes), found {}",
                written()
            );
            self.report_at(key, message);
        } else if bytes < MIN_LOG_SIZE {
            let message = format!(
                "max_size must be at least 1KB ({MIN_LOG_SIZE} bytes), found {}",
                written()
            );
            self.report_at(key, message);
        }
    }

    /// An http URL to a local backend (`health.url`, `stop.url`).
    fn url(&mut self, key: &str, url: Option<&str>) {
        if let Some(problem) = url.and_then(url_problem) {
            self.report_at(key, problem);
        }
    }

    fn watch(&mut self, watch: &WatchConfig) {
        self.list("watch.paths", watch.paths.len(), MAX_LIST, "items");
        for (key, globs) in [
            ("watch.include", &watch.include),
            ("watch.exclude", &watch.exclude),
        ] {
            self.list(key, globs.len(), MAX_LIST, "items");
            let bad = globs
                .iter()
                .find_map(|glob| globset::Glob::new(glob).err().map(|e| (glob, e)));
            if let Some((glob, e)) = bad {
                self.report_at(
                    key,
                    format!("invalid glob {glob:?}: {e}; for example \"**/*.py\""),
                );
            }
        }
    }

    /// Explicit stray rules must not match more than copies of the backend.
    fn strays(&mut self, strays: &StraysConfig) {
        let key = "strays.cmdline_contains";
        self.list(key, strays.cmdline_contains.len(), MAX_LIST, "items");
        let items = match find(self.doc, key).map(|v| v.get_ref()) {
            Some(DeValue::Array(items)) => items.iter().map(|item| item.span().start).collect(),
            _ => Vec::new(),
        };
        for (text, at) in strays.cmdline_contains.iter().zip(items) {
            if crate::backend::strays::rule_too_loose(text) {
                self.report(
                    at,
                    key,
                    format!(
                        "{text:?} would also match programs that only mention that file \
                         (`vim {text}`, `tail -f {text}`, `python -m pylint {text}`); the \
                         identity derived from [backend] already knows the app: leave this \
                         rule out, or name how the app runs, e.g. [\"--port 54112\"]"
                    ),
                );
            }
        }
        let specific = strays.cmdline_contains.iter().any(|part| {
            let part = part.trim().to_lowercase();
            part.len() >= 3 && !GENERIC_PROGRAMS.contains(&part.as_str())
        });
        // A part no program can receive is reported as such, not judged as a rule.
        let broken = (strays.cmdline_contains.iter()).any(|part| string_problem(part).is_some());
        if strays.has_rules() && strays.cwd.is_none() && !specific && !broken {
            let key = if strays.cmdline_contains.is_empty() {
                "strays.exe_name"
            } else {
                key
            };
            let at = find(self.doc, key)
                .or_else(|| find(self.doc, "strays"))
                .map_or(0, |v| v.span().start);
            self.report(
                at,
                key,
                "this rule is too broad: it would match every such program on the machine, \
                 not just copies of your backend; add what identifies the app, e.g. \
                 cmdline_contains = [\"app:app\"] or [\"manage.py runserver\"], or cwd = the \
                 backend's folder"
                    .to_owned(),
            );
        }
    }

    /// `backoff_max` is at least `backoff_initial`; the message points at whichever of the two
    /// the file sets, preferring `backoff_max`.
    fn backoff(&mut self, restart: &RestartConfig) {
        if restart.backoff_max >= restart.backoff_initial {
            return;
        }
        let (key, note) = if find(self.doc, "restart.backoff_max").is_some() {
            ("restart.backoff_max", "")
        } else {
            ("restart.backoff_initial", ", the default")
        };
        self.issues.push(Issue {
            secondary: true,
            ..Issue::new(
                at(self.doc, key),
                key,
                format!(
                    "backoff_max ({}{note}) must be at least backoff_initial ({}); raise \
                     backoff_max or lower backoff_initial",
                    format_duration(restart.backoff_max),
                    format_duration(restart.backoff_initial)
                ),
            )
        });
    }
}

/// What is wrong with a string value, if anything: a NUL byte (no program can receive one) or
/// a length beyond [`MAX_STRING`].
fn string_problem(text: &str) -> Option<String> {
    if text.contains('\0') {
        Some("must not contain a NUL character (\\u0000): no program can receive one".to_owned())
    } else if text.len() > MAX_STRING {
        Some(format!(
            "a string of {} bytes, longer than the limit of {} KiB",
            text.len(),
            MAX_STRING / 1024
        ))
    } else {
        None
    }
}

/// What is wrong with `url` as the http URL of a local backend, if anything.
fn url_problem(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("https://") {
        Some(format!(
            "https URLs are not supported: the warden talks plain http to a local \
             backend; use \"http://{}\"",
            &url[url.len() - rest.len()..]
        ))
    } else if let Some(rest) = lower.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() {
            Some(format!(
                "invalid url {url:?}: the host is missing, expected something like \
                 \"http://127.0.0.1:8000/health\""
            ))
        } else if url.chars().any(char::is_whitespace) {
            Some(format!("invalid url {url:?}: a URL may not contain spaces"))
        } else {
            url_port_problem(host).map(|problem| format!("invalid url {url:?}: {problem}"))
        }
    } else {
        Some(format!(
            "invalid url {url:?}: expected an http:// URL, like \
             \"http://127.0.0.1:8000/health\""
        ))
    }
}

/// What is wrong with the port of a URL's `host[:port]` part, if anything.
fn url_port_problem(host: &str) -> Option<String> {
    // `[::1]:8000`: the port follows the bracket; `127.0.0.1:8000`: the last colon.
    let after_host = match host.rfind(']') {
        Some(end) => &host[end + 1..],
        None => host.rfind(':').map_or("", |colon| &host[colon..]),
    };
    let port = match after_host.strip_prefix(':') {
        Some(port) => port,
        None if after_host.is_empty() => return None,
        None => return Some("expected a port after the host, like \"[::1]:8000\"".to_owned()),
    };
    match port.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) && port.bytes().all(|b| b.is_ascii_digit()) => None,
        _ => Some(format!(
            "the port {port:?} is not a port number from 1 to 65535"
        )),
    }
}
