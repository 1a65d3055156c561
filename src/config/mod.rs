//! Loads and validates the warden's TOML configuration file, reporting every mistake with its
//! file, line, column and dotted key. Every duration, size, count and string has a bound, so a
//! value that would overflow a clock, exhaust memory or fail at spawn time is rejected here,
//! by `config check` and by a reload, never at run time. It does no I/O except reading that
//! one config file and looking at the folders it names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Serialize, Serializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The whole configuration of the warden, with every default filled in.
///
/// `Config::default()` is every default with `backend: None` (the built-in demo backend).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Config {
    /// The backend to supervise; `None` when the file has no `[backend]` table at all, in which
    /// case the app runs its built-in demo backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendConfig>,
    /// How the backend's health is probed (`[health]`).
    pub health: HealthConfig,
    /// When and how fast the backend is restarted (`[restart]`).
    pub restart: RestartConfig,
    /// How the backend is stopped (`[stop]`).
    pub stop: StopConfig,
    /// Where the backend's output goes and how it is rotated (`[logs]`).
    pub logs: LogsConfig,
    /// How copies of the backend that the warden does not own are found (`[strays]`).
    pub strays: StraysConfig,
    /// Which desktop notifications are shown (`[notify]`).
    pub notify: NotifyConfig,
    /// Watching the backend's code for changes (`[watch]`).
    pub watch: WatchConfig,
}

/// What a change to the backend's code does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// Nothing is watched.
    Off,
    /// The backend is marked stale (status, tray).
    Notify,
    /// The backend is restarted (debounced; a clean stop and start of the whole tree).
    Restart,
}

/// Code watching (`[watch]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchConfig {
    /// Folders to watch; empty means the backend's cwd.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathBuf>,
    /// Globs (relative to a watched folder) of the files that count.
    pub include: Vec<String>,
    /// Globs of files and folders that never count; a matching folder is not watched at all.
    pub exclude: Vec<String>,
    /// A burst of changes closer together than this is one change.
    #[serde(serialize_with = "ser_duration")]
    pub debounce: Duration,
    /// What a change does.
    pub on_change: OnChange,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            include: [
                "**/*.py",
                "**/.env",
                "**/*.env",
                "**/*.toml",
                "**/*.yaml",
                "**/*.yml",
                "**/*.json",
                "**/*.ini",
                "**/*.cfg",
            ]
            .map(String::from)
            .to_vec(),
            exclude: [
                "**/.git",
                "**/__pycache__",
                "**/.venv",
                "**/venv",
                "**/env",
                "**/node_modules",
                "**/.mypy_cache",
                "**/.pytest_cache",
                "**/.ruff_cache",
                "**/.tox",
                "**/*.egg-info",
                "**/*.pyc",
                "**/*.log",
            ]
            .map(String::from)
            .to_vec(),
            debounce: Duration::from_millis(300),
            on_change: OnChange::Notify,
        }
    }
}

/// Desktop notification categories (`[notify]`); each can be muted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifyConfig {
    /// The backend crashed (once per crash loop).
    pub crashed: bool,
    /// The backend is healthy again after a crash or a bad spell.
    pub recovered: bool,
    /// The warden gave up restarting it.
    pub gave_up: bool,
    /// Stray copies of the backend were found.
    pub strays: bool,
    /// Another program holds the backend's port.
    pub port_conflict: bool,
    /// A reloaded config has an error (the old one stays in force).
    pub config_error: bool,
    /// The backend stopped answering its health check (once per bad spell).
    pub unhealthy: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            crashed: true,
            recovered: true,
            gave_up: true,
            strays: true,
            port_conflict: true,
            config_error: true,
            unhealthy: true,
        }
    }
}

/// What to do when a stray copy of the backend is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StrayAction {
    /// Report it (status, tray alert); kill only on request.
    Notify,
    /// Kill its whole tree as soon as it is found.
    Kill,
}

/// Stray detection (`[strays]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StraysConfig {
    /// Time between two scans of the process table.
    #[serde(serialize_with = "ser_duration")]
    pub scan_interval: Duration,
    /// What to do with a stray.
    pub action: StrayAction,
    /// Adopt a single healthy copy found running when the warden starts.
    pub adopt: bool,
    /// Explicit identity: every string must appear in the command line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmdline_contains: Vec<String>,
    /// Explicit identity: the working directory.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    pub cwd: Option<PathBuf>,
    /// Explicit identity: the executable's name (without `.exe` and version suffix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_name: Option<String>,
}

impl StraysConfig {
    /// True when explicit identity rules replace the identity derived from `[backend]`.
    pub fn has_rules(&self) -> bool {
        !self.cmdline_contains.is_empty() || self.cwd.is_some() || self.exe_name.is_some()
    }
}

impl Default for StraysConfig {
    fn default() -> Self {
        Self {
            scan_interval: Duration::from_secs(5),
            action: StrayAction::Notify,
            adopt: false,
            cmdline_contains: Vec::new(),
            cwd: None,
            exe_name: None,
        }
    }
}

/// Program names that say nothing about which app runs: a rule made only of these would match
/// every Python (or Node, ...) on the machine.
pub const GENERIC_PROGRAMS: &[&str] = &[
    "python",
    "python3",
    "py",
    "pythonw",
    "node",
    "uvicorn",
    "gunicorn",
    "hypercorn",
    "flask",
    "fastapi",
    "java",
    "ruby",
    "php",
    "deno",
    "bun",
    "dotnet",
    "cmd",
    "sh",
    "bash",
    "powershell",
    "pwsh",
    "-m",
    "-c",
];

/// The program to supervise (`[backend]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendConfig {
    /// The program to run, without a shell.
    pub command: String,
    /// Arguments passed to `command`.
    pub args: Vec<String>,
    /// Working directory; a relative path is resolved by the caller against the config file's
    /// folder.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables for the backend; they override the `.env` file's, and
    /// `${VAR}` in a value expands from the warden's environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The `.env` file the backend's environment is read from.
    #[serde(skip_serializing_if = "EnvFile::is_default")]
    pub env_file: EnvFile,
    /// The TCP port the backend listens on, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// What the tray's *Open in browser* opens (default: the health URL's origin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_url: Option<String>,
}

/// Which `.env` file the backend's environment comes from (`backend.env_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EnvFile {
    /// `.env` in the backend's cwd, when present (unset in TOML).
    #[default]
    Default,
    /// This file (TOML: a path; relative to the backend's cwd); it must exist.
    Path(PathBuf),
    /// No file (TOML `false`).
    Off,
}

impl EnvFile {
    fn is_default(&self) -> bool {
        *self == EnvFile::Default
    }
}

impl Serialize for EnvFile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            EnvFile::Default => serializer.serialize_bool(true),
            EnvFile::Path(path) => serializer.serialize_str(&path.to_string_lossy()),
            EnvFile::Off => serializer.serialize_bool(false),
        }
    }
}

/// Health probing (`[health]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthConfig {
    /// The `http://` URL to probe; `None` means no HTTP probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Time between two probes.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// A probe that takes longer than this fails.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Consecutive failed probes before the backend counts as unhealthy (at least 1).
    pub unhealthy_after: u32,
    /// Restart the backend once it has been unhealthy this long; `None` means never restart
    /// because of health alone.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub restart_after: Option<Duration>,
    /// How long `starting` may last before it counts as unhealthy.
    #[serde(serialize_with = "ser_duration")]
    pub start_timeout: Duration,
}

/// When the backend is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whenever the backend exits (TOML `"always"`).
    Always,
    /// Restart only when it exits with a failure (TOML `"on-failure"`).
    OnFailure,
    /// Never restart (TOML `"never"`).
    Never,
}

/// Restart behaviour (`[restart]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartConfig {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Delay before the first restart (may be zero); doubles with every consecutive crash.
    #[serde(serialize_with = "ser_duration")]
    pub backoff_initial: Duration,
    /// Upper bound of the restart delay; at least `backoff_initial`.
    #[serde(serialize_with = "ser_duration")]
    pub backoff_max: Duration,
    /// The warden gives up after more than this many crashes within `window` (at least 1).
    pub max_restarts: u32,
    /// The sliding window in which `max_restarts` is counted.
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
    /// A run that lasts this long counts as stable and resets the backoff.
    #[serde(serialize_with = "ser_duration")]
    pub stable_after: Duration,
}

/// Stopping (`[stop]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopConfig {
    /// Time the backend gets to exit after a polite stop request before it is killed.
    #[serde(serialize_with = "ser_duration")]
    pub grace: Duration,
    /// An http URL that asks the backend to shut down (POSTed first); `None`: signals only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Log files (`[logs]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogsConfig {
    /// Folder for log files; a relative path is resolved by the caller against the config
    /// file's folder. `None` means the app's default.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    pub dir: Option<PathBuf>,
    /// Size in bytes at which the live log file is rotated (at least 1000).
    #[serde(serialize_with = "ser_size")]
    pub max_size: u64,
    /// Number of rotated files kept besides the live one (at least 1).
    pub keep: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            url: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            restart_after: None,
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::OnFailure,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
        }
    }
}

impl Default for StopConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(5),
            url: None,
        }
    }
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_size: 10_000_000,
            keep: 5,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file does not exist (the caller falls back to defaults).
    #[error("{}: config file not found", .path.display())]
    NotFound {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// The config file exists but could not be read.
    #[error("{}: cannot read the config file: {source}", .path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{}:{line}:{column}: {}{message}", .path.display(), key_prefix(.key))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column (in characters) of the offending text.
        column: usize,
        /// Dotted key such as `health.interval`; empty when no key applies.
        key: String,
        /// What is wrong and what would be valid.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl Config {
    /// Parse `text` as the contents of the file at `path` (path is only used in messages and to
    /// resolve nothing).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_spanned(text, path).map(|(config, _)| config)
    }

    /// [`Config::parse`], plus where the folder keys are in the text.
    fn parse_spanned(text: &str, path: &Path) -> Result<(Config, FolderSpans), ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let invalid = |at: usize, key: String, message: String| {
            let (line, column) = line_col(text, at);
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message,
            }
        };
        let root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(err) => {
                let at = err.span().map_or(0, |span| span.start);
                if let Some(hint) = windows_path_hint(text, at) {
                    return Err(invalid(hint.at, hint.key, hint.message));
                }
                return Err(invalid(
                    at,
                    String::new(),
                    format!("invalid TOML: {}", err.message()),
                ));
            }
        };
        let mut checker = Checker::default();
        let config = checker.config(root.get_ref());
        // The first direct mistake in file order; consequences of mistakes come last.
        match std::mem::take(&mut checker.issues)
            .into_iter()
            .min_by_key(|issue| (issue.secondary, issue.at))
        {
            Some(issue) => Err(invalid(issue.at, issue.key, issue.message)),
            None => Ok((config, checker.folders)),
        }
    }

    /// Read and parse the file. A missing file is `ConfigError::NotFound` (the caller falls
    /// back to defaults). Also checks that the folders it names which exist are folders
    /// (`backend.cwd`, `logs.dir`), resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read as _;
        let io_error = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => return Err(io_error(source)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                key: String::new(),
                message: format!(
                    "the file is larger than {} KiB; a config is a few dozen lines",
                    MAX_CONFIG_BYTES / 1024
                ),
            });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let (config, spans) = Config::parse_spanned(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let folders = [
            (
                "backend.cwd",
                config.backend.as_ref().and_then(|b| b.cwd.as_ref()),
                spans.cwd,
            ),
            ("logs.dir", config.logs.dir.as_ref(), spans.logs_dir),
        ];
        for (key, folder, at) in folders {
            let Some(folder) = folder else { continue };
            let resolved = base.join(folder);
            // A folder that does not exist yet may appear (a mount, a checkout); the launch
            // reports it then. Something that is not a folder never works.
            if let Ok(meta) = std::fs::metadata(&resolved)
                && !meta.is_dir()
            {
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                let (line, column) = line_col(text, at.unwrap_or(0));
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    column,
                    key: key.to_owned(),
                    message: format!(
                        "{} is not a folder; {key} must name a folder",
                        resolved.display()
                    ),
                });
            }
        }
        Ok(config)
    }

    /// The effective configuration as TOML text (durations as "500ms"/"30s"/"1m" strings,
    /// sizes as "10MB"-style strings, unset optionals omitted), which `Config::parse` reads back
    /// to an equal Config.
    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|err| format!("# could not render the configuration: {err}\n"))
    }
}

/// A commented template for `backend-warden config init`.
pub fn template() -> &'static str {
    TEMPLATE
}

const TEMPLATE: &str = include_str!("template.toml");

// ---------------------------------------------------------------------------------------------
// Schema

const SECTIONS: &[(&str, &[&str])] = &[
    ("backend", BACKEND_KEYS),
    ("health", HEALTH_KEYS),
    ("restart", RESTART_KEYS),
    ("stop", STOP_KEYS),
    ("logs", LOGS_KEYS),
    ("strays", STRAYS_KEYS),
    ("notify", NOTIFY_KEYS),
    ("watch", WATCH_KEYS),
];
const WATCH_KEYS: &[&str] = &["paths", "include", "exclude", "debounce", "on_change"];
const NOTIFY_KEYS: &[&str] = &[
    "unhealthy",
    "crashed",
    "recovered",
    "gave_up",
    "strays",
    "port_conflict",
    "config_error",
];
const STRAYS_KEYS: &[&str] = &[
    "scan_interval",
    "action",
    "adopt",
    "cmdline_contains",
    "cwd",
    "exe_name",
];
const BACKEND_KEYS: &[&str] = &[
    "command", "args", "cwd", "env", "env_file", "port", "open_url",
];
const HEALTH_KEYS: &[&str] = &[
    "url",
    "interval",
    "timeout",
    "unhealthy_after",
    "restart_after",
    "start_timeout",
];
const RESTART_KEYS: &[&str] = &[
    "policy",
    "backoff_initial",
    "backoff_max",
    "max_restarts",
    "window",
    "stable_after",
];
const STOP_KEYS: &[&str] = &["grace", "url"];
const LOGS_KEYS: &[&str] = &["dir", "max_size", "keep"];
const POLICIES: &[(&str, RestartPolicy)] = &[
    ("always", RestartPolicy::Always),
    ("on-failure", RestartPolicy::OnFailure),
    ("never", RestartPolicy::Never),
];
const MIN_LOG_SIZE: u64 = 1000;
/// Largest `logs.max_size`: beyond it a log is not something anyone reads.
const MAX_LOG_SIZE: u64 = 10_000_000_000;
/// Largest `logs.keep`: every rotation renames each kept file.
const MAX_LOG_KEEP: i64 = 100;
/// Largest count (`unhealthy_after`, `max_restarts`).
const MAX_COUNT: i64 = 1_000_000;
/// Largest duration of any key: a day. Anything longer is a typo, and a deadline that far is
/// as good as none; far larger values would overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Most arguments in `backend.args` (and variables in `backend.env`).
const MAX_ARGS: usize = 1024;
/// Most items in any other list (`watch.include`, `strays.cmdline_contains`, ...).
const MAX_LIST: usize = 256;
/// Longest string value, in bytes (Linux refuses a single argument over 128 KiB).
const MAX_STRING: usize = 32 * 1024;
/// Most bytes of `backend.args` and `backend.env` together: the kernel refuses a launch whose
/// arguments and environment exceed its limit (2 MiB or less), with the warden's own
/// environment on top.
const MAX_LAUNCH_BYTES: usize = 512 * 1024;
/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

type Value<'i> = Spanned<DeValue<'i>>;

/// One problem found while walking the document, at a byte offset into the text.
struct Issue {
    at: usize,
    key: String,
    message: String,
    /// A consequence of other mistakes (a missing key, a cross-key rule); shown only when
    /// there is no direct mistake, since a typo like `comand` also makes `command` missing.
    secondary: bool,
}

/// Where the keys that name folders are in the text (checked against the file system by
/// [`Config::load`]).
#[derive(Debug, Default, Clone, Copy)]
struct FolderSpans {
    cwd: Option<usize>,
    logs_dir: Option<usize>,
}

/// Walks the parsed document against the schema, collecting every problem.
#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
    folders: FolderSpans,
}

impl Checker {
    fn report(&mut self, at: usize, key: String, message: String) {
        self.issues.push(Issue {
            at,
            key,
            message,
            secondary: false,
        });
    }

    fn report_secondary(&mut self, at: usize, key: String, message: String) {
        self.issues.push(Issue {
            at,
            key,
            message,
            secondary: true,
        });
    }

    fn config(&mut self, root: &DeTable<'_>) -> Config {
        let mut sections: BTreeMap<&'static str, (&DeTable<'_>, usize)> = BTreeMap::new();
        for (key, value) in root.iter() {
            let name: &str = key.get_ref();
            match SECTIONS.iter().find(|(section, _)| *section == name) {
                Some((section, _)) => match value.get_ref() {
                    DeValue::Table(table) => {
                        sections.insert(section, (table, value.span().start));
                    }
                    other => self.report(
                        key.span().start,
                        name.to_owned(),
                        format!(
                            "expected a table (a [{name}] section), found {}",
                            describe(other)
                        ),
                    ),
                },
                None => self.unknown_top_level(name, key.span().start, value),
            }
        }
        let empty = DeTable::new();
        let get = |name: &str| sections.get(name).map_or(&empty, |(table, _)| *table);
        let backend = sections
            .get("backend")
            .map(|(table, at)| self.backend(table, *at));
        let health = self.health(get("health"));
        let restart = self.restart(get("restart"));
        let stop = self.stop(get("stop"));
        let logs = self.logs(get("logs"));
        let strays = self.strays(get("strays"), sections.get("strays").map(|(_, at)| *at));
        let notify = self.notify(get("notify"));
        let watch = self.watch(get("watch"));
        Config {
            backend,
            health,
            restart,
            stop,
            logs,
            strays,
            notify,
            watch,
        }
    }

    fn unknown_top_level(&mut self, name: &str, at: usize, value: &Value<'_>) {
        let section_names: Vec<&str> = SECTIONS.iter().map(|(section, _)| *section).collect();
        let valid = format!("valid sections: {}", section_names.join(", "));
        let message = if value.get_ref().is_table() {
            match suggest(name, &section_names) {
                Some(best) => {
                    format!("unknown section [{name}]; did you mean [{best}]? ({valid})")
                }
                None => format!("unknown section [{name}] ({valid})"),
            }
        } else if let Some(section) = section_of(name) {
            format!("unknown top-level key \"{name}\"; it belongs in the [{section}] section")
        } else {
            format!("unknown top-level key \"{name}\"; settings go inside a section ({valid})")
        };
        self.report(at, name.to_owned(), message);
    }

    /// Reports every key of `table` that is not in `valid`.
    fn check_keys(&mut self, section: &str, table: &DeTable<'_>, valid: &[&str]) {
        for (key, _) in table.iter() {
            let name: &str = key.get_ref();
            if valid.contains(&name) {
                continue;
            }
            let hint = match suggest(name, valid) {
                Some(best) => format!("; did you mean \"{best}\"?"),
                None => match section_of(name) {
                    Some(other) => format!("; \"{name}\" belongs in the [{other}] section"),
                    None => String::new(),
                },
            };
            self.report(
                key.span().start,
                format!("{section}.{name}"),
                format!(
                    "unknown key \"{name}\" in [{section}]{hint} (valid keys: {})",
                    valid.join(", ")
                ),
            );
        }
    }

    fn backend(&mut self, table: &DeTable<'_>, at: usize) -> BackendConfig {
        const S: &str = "backend";
        self.check_keys(S, table, BACKEND_KEYS);
        let command = match table.get("command") {
            None => {
                self.report_secondary(
                    at,
                    "backend.command".to_owned(),
                    "missing required key \"command\": [backend] needs the program to run \
                     (without a shell), e.g. command = \"python\" with args = [\"main.py\"]; \
                     remove the [backend] section to run the built-in demo backend"
                        .to_owned(),
                );
                String::new()
            }
            Some(_) => self
                .non_empty_string(S, table, "command", "command = \"python\"")
                .unwrap_or_default(),
        };
        self.folders.cwd = table.get("cwd").map(|v| v.span().start);
        let config = BackendConfig {
            command,
            args: self
                .string_array(S, table, "args", MAX_ARGS)
                .unwrap_or_default(),
            cwd: self
                .non_empty_string(S, table, "cwd", "cwd = 'C:\\path\\to\\your\\backend'")
                .map(PathBuf::from),
            env: self.env(table).unwrap_or_default(),
            env_file: self.env_file(table),
            port: self
                .integer(S, table, "port", 1, u16::MAX.into())
                .and_then(|(n, _)| u16::try_from(n).ok()),
            open_url: self.open_url(table),
        };
        let launch_bytes: usize = config.args.iter().map(|a| a.len() + 1).sum::<usize>()
            + config
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        if launch_bytes > MAX_LAUNCH_BYTES {
            let key = if table.contains_key("args") {
                "args"
            } else {
                "env"
            };
            let at = table.get(key).map_or(at, |v| v.span().start);
            self.report(
                at,
                format!("{S}.{key}"),
                format!(
                    "backend.args and backend.env come to {launch_bytes} bytes, more than the \
                     limit of {} KiB: the system would refuse to start the backend",
                    MAX_LAUNCH_BYTES / 1024
                ),
            );
        }
        config
    }

    fn open_url(&mut self, table: &DeTable<'_>) -> Option<String> {
        let url = self.non_empty_string(
            "backend",
            table,
            "open_url",
            "open_url = \"http://127.0.0.1:54112/docs\"",
        )?;
        if url.starts_with("http://") || url.starts_with("https://") {
            return Some(url);
        }
        let at = table.get("open_url").map_or(0, |v| v.span().start);
        self.report(
            at,
            "backend.open_url".to_owned(),
            format!(
                "{url:?} is not a web address: write it in full, e.g. \
                 open_url = \"http://127.0.0.1:54112/docs\""
            ),
        );
        None
    }

    fn health(&mut self, table: &DeTable<'_>) -> HealthConfig {
        const S: &str = "health";
        self.check_keys(S, table, HEALTH_KEYS);
        let d = HealthConfig::default();
        HealthConfig {
            url: self.url(S, table),
            interval: self.duration_or(S, table, "interval", false, d.interval),
            timeout: self.duration_or(S, table, "timeout", false, d.timeout),
            unhealthy_after: self.count_or(S, table, "unhealthy_after", d.unhealthy_after),
            restart_after: self
                .duration(S, table, "restart_after", false, "30s")
                .map(|(duration, _)| duration),
            start_timeout: self.duration_or(S, table, "start_timeout", false, d.start_timeout),
        }
    }

    fn restart(&mut self, table: &DeTable<'_>) -> RestartConfig {
        const S: &str = "restart";
        self.check_keys(S, table, RESTART_KEYS);
        let d = RestartConfig::default();
        let initial = self.duration(S, table, "backoff_initial", true, "500ms");
        let max = self.duration(S, table, "backoff_max", true, "30s");
        let both_valid = (initial.is_some() || !table.contains_key("backoff_initial"))
            && (max.is_some() || !table.contains_key("backoff_max"));
        let backoff_initial = initial.map_or(d.backoff_initial, |(duration, _)| duration);
        let backoff_max = max.map_or(d.backoff_max, |(duration, _)| duration);
        if both_valid && backoff_max < backoff_initial {
            // Point at whichever of the two the user actually wrote, preferring backoff_max.
            let (at, key, note) = match (max, initial) {
                (Some((_, at)), _) => (at, "backoff_max", ""),
                (None, Some((_, at))) => (at, "backoff_initial", ", the default"),
                (None, None) => (0, "backoff_max", ""),
            };
            self.report_secondary(
                at,
                format!("{S}.{key}"),
                format!(
                    "backoff_max ({}{note}) must be at least backoff_initial ({}); raise \
                     backoff_max or lower backoff_initial",
                    format_duration(backoff_max),
                    format_duration(backoff_initial)
                ),
            );
        }
        RestartConfig {
            policy: self.policy(table).unwrap_or(d.policy),
            backoff_initial,
            backoff_max,
            max_restarts: self.count_or(S, table, "max_restarts", d.max_restarts),
            window: self.duration_or(S, table, "window", false, d.window),
            stable_after: self.duration_or(S, table, "stable_after", true, d.stable_after),
        }
    }

    fn stop(&mut self, table: &DeTable<'_>) -> StopConfig {
        const S: &str = "stop";
        self.check_keys(S, table, STOP_KEYS);
        StopConfig {
            grace: self.duration_or(S, table, "grace", false, StopConfig::default().grace),
            url: self.url(S, table),
        }
    }

    fn logs(&mut self, table: &DeTable<'_>) -> LogsConfig {
        const S: &str = "logs";
        self.check_keys(S, table, LOGS_KEYS);
        let d = LogsConfig::default();
        self.folders.logs_dir = table.get("dir").map(|v| v.span().start);
        LogsConfig {
            dir: self
                .non_empty_string(S, table, "dir", "dir = \"logs\"")
                .map(PathBuf::from),
            max_size: self.size(S, table, "max_size").unwrap_or(d.max_size),
            keep: self
                .integer(S, table, "keep", 1, MAX_LOG_KEEP)
                .and_then(|(n, _)| usize::try_from(n).ok())
                .unwrap_or(d.keep),
        }
    }

    fn strays(&mut self, table: &DeTable<'_>, at: Option<usize>) -> StraysConfig {
        const S: &str = "strays";
        self.check_keys(S, table, STRAYS_KEYS);
        let d = StraysConfig::default();
        let action = self
            .string(S, table, "action")
            .and_then(|(text, at)| match text.as_str() {
                "notify" => Some(StrayAction::Notify),
                "kill" => Some(StrayAction::Kill),
                _ => {
                    self.report(
                        at,
                        "strays.action".to_owned(),
                        format!("invalid value {text:?}: expected one of \"notify\", \"kill\""),
                    );
                    None
                }
            });
        let config = StraysConfig {
            scan_interval: self.duration_or(S, table, "scan_interval", false, d.scan_interval),
            action: action.unwrap_or(d.action),
            adopt: self.boolean(S, table, "adopt").unwrap_or(d.adopt),
            cmdline_contains: self
                .string_array(S, table, "cmdline_contains", MAX_LIST)
                .unwrap_or_default(),
            cwd: self
                .non_empty_string(S, table, "cwd", "cwd = 'C:\\path\\to\\your\\backend'")
                .map(PathBuf::from),
            exe_name: self.non_empty_string(S, table, "exe_name", "exe_name = \"python\""),
        };
        if let Some(DeValue::Array(parts)) = table.get("cmdline_contains").map(|v| v.get_ref()) {
            for part in parts.iter() {
                if let DeValue::String(text) = part.get_ref()
                    && crate::strays::rule_too_loose(text)
                {
                    self.report(
                        part.span().start,
                        "strays.cmdline_contains".to_owned(),
                        format!(
                            "{text:?} would also match programs that only mention that file \
                             (`vim {text}`, `tail -f {text}`, `python -m pylint {text}`); the \
                             identity derived from [backend] already knows the app: leave this \
                             rule out, or name how the app runs, e.g. [\"--port 54112\"]"
                        ),
                    );
                }
            }
        }
        if config.has_rules() && config.cwd.is_none() {
            let specific = config.cmdline_contains.iter().any(|part| {
                let part = part.trim().to_lowercase();
                part.len() >= 3 && !GENERIC_PROGRAMS.contains(&part.as_str())
            });
            if !specific {
                let key = if config.cmdline_contains.is_empty() {
                    "strays.exe_name"
                } else {
                    "strays.cmdline_contains"
                };
                let at = table
                    .get(key.trim_start_matches("strays."))
                    .map(|v| v.span().start)
                    .or(at)
                    .unwrap_or(0);
                self.report(
                    at,
                    key.to_owned(),
                    "this rule is too broad: it would match every such program on the machine, \
                     not just copies of your backend; add what identifies the app, e.g. \
                     cmdline_contains = [\"app:app\"] or [\"manage.py runserver\"], or cwd = the \
                     backend's folder"
                        .to_owned(),
                );
            }
        }
        config
    }

    fn notify(&mut self, table: &DeTable<'_>) -> NotifyConfig {
        const S: &str = "notify";
        self.check_keys(S, table, NOTIFY_KEYS);
        let d = NotifyConfig::default();
        NotifyConfig {
            crashed: self.boolean(S, table, "crashed").unwrap_or(d.crashed),
            recovered: self.boolean(S, table, "recovered").unwrap_or(d.recovered),
            gave_up: self.boolean(S, table, "gave_up").unwrap_or(d.gave_up),
            strays: self.boolean(S, table, "strays").unwrap_or(d.strays),
            port_conflict: self
                .boolean(S, table, "port_conflict")
                .unwrap_or(d.port_conflict),
            unhealthy: self.boolean(S, table, "unhealthy").unwrap_or(d.unhealthy),
            config_error: self
                .boolean(S, table, "config_error")
                .unwrap_or(d.config_error),
        }
    }

    fn watch(&mut self, table: &DeTable<'_>) -> WatchConfig {
        const S: &str = "watch";
        self.check_keys(S, table, WATCH_KEYS);
        let d = WatchConfig::default();
        let on_change = self
            .string(S, table, "on_change")
            .and_then(|(text, at)| match text.as_str() {
                "off" => Some(OnChange::Off),
                "notify" => Some(OnChange::Notify),
                "restart" => Some(OnChange::Restart),
                _ => {
                    self.report(
                        at,
                        "watch.on_change".to_owned(),
                        format!(
                            "invalid value {text:?}: expected one of \"off\", \"notify\", \"restart\""
                        ),
                    );
                    None
                }
            });
        let globs = |this: &mut Checker, key: &str| {
            let list = this.string_array(S, table, key, MAX_LIST)?;
            for pattern in &list {
                if let Err(e) = globset::Glob::new(pattern) {
                    let at = table.get(key).map_or(0, |v| v.span().start);
                    this.report(
                        at,
                        format!("{S}.{key}"),
                        format!("invalid glob {pattern:?}: {e}; for example \"**/*.py\""),
                    );
                    return None;
                }
            }
            Some(list)
        };
        let include = globs(self, "include");
        let exclude = globs(self, "exclude");
        WatchConfig {
            paths: self
                .string_array(S, table, "paths", MAX_LIST)
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            include: include.unwrap_or(d.include),
            exclude: exclude.unwrap_or(d.exclude),
            debounce: self.duration_or(S, table, "debounce", true, d.debounce),
            on_change: on_change.unwrap_or(d.on_change),
        }
    }

    // -- typed readers: each returns `None` when the key is absent or invalid (then reported) --

    fn boolean(&mut self, section: &str, table: &DeTable<'_>, key: &str) -> Option<bool> {
        let value = table.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(section, key, value, "true or false");
                None
            }
        }
    }

    fn wrong_type(&mut self, section: &str, key: &str, value: &Value<'_>, expected: &str) {
        self.report(
            value.span().start,
            format!("{section}.{key}"),
            format!("expected {expected}, found {}", describe(value.get_ref())),
        );
    }

    fn string(&mut self, section: &str, table: &DeTable<'_>, key: &str) -> Option<(String, usize)> {
        let value = table.get(key)?;
        let at = value.span().start;
        match value.get_ref() {
            DeValue::String(text) => match string_problem(text) {
                None => Some((text.to_string(), at)),
                Some(problem) => {
                    self.report(at, format!("{section}.{key}"), problem);
                    None
                }
            },
            _ => {
                self.wrong_type(section, key, value, "a string");
                None
            }
        }
    }

    fn non_empty_string(
        &mut self,
        section: &str,
        table: &DeTable<'_>,
        key: &str,
        example: &str,
    ) -> Option<String> {
        let (text, at) = self.string(section, table, key)?;
        if text.trim().is_empty() {
            self.report(
                at,
                format!("{section}.{key}"),
                format!("must not be empty; for example {example}"),
            );
            return None;
        }
        Some(text)
    }

    fn string_array(
        &mut self,
        section: &str,
        table: &DeTable<'_>,
        key: &str,
        max_items: usize,
    ) -> Option<Vec<String>> {
        let value = table.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            let hint = match value.get_ref() {
                DeValue::String(text) => format!(" (write {key} = [{text:?}])"),
                _ => String::new(),
            };
            self.report(
                value.span().start,
                format!("{section}.{key}"),
                format!(
                    "expected an array of strings, found {}{hint}",
                    describe(value.get_ref())
                ),
            );
            return None;
        };
        if items.len() > max_items {
            self.report(
                value.span().start,
                format!("{section}.{key}"),
                format!("{} items, more than the limit of {max_items}", items.len()),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(text) => match string_problem(text) {
                    None => out.push(text.to_string()),
                    Some(problem) => self.report(
                        item.span().start,
                        format!("{section}.{key}"),
                        format!("item {} of the array: {problem}", index + 1),
                    ),
                },
                other => self.report(
                    item.span().start,
                    format!("{section}.{key}"),
                    format!(
                        "expected a string, found {} (item {} of the array; every argument \
                         must be quoted)",
                        describe(other),
                        index + 1
                    ),
                ),
            }
        }
        Some(out)
    }

    fn env_file(&mut self, table: &DeTable<'_>) -> EnvFile {
        let Some(value) = table.get("env_file") else {
            return EnvFile::Default;
        };
        match value.get_ref() {
            DeValue::Boolean(false) => EnvFile::Off,
            DeValue::Boolean(true) => EnvFile::Default,
            DeValue::String(_) => self
                .non_empty_string("backend", table, "env_file", "env_file = \".env.local\"")
                .map_or(EnvFile::Default, |path| EnvFile::Path(PathBuf::from(path))),
            _ => {
                self.wrong_type(
                    "backend",
                    "env_file",
                    value,
                    "a path string like \".env.local\", or false for no env file",
                );
                EnvFile::Default
            }
        }
    }

    fn env(&mut self, table: &DeTable<'_>) -> Option<BTreeMap<String, String>> {
        let value = table.get("env")?;
        let DeValue::Table(vars) = value.get_ref() else {
            self.report(
                value.span().start,
                "backend.env".to_owned(),
                format!(
                    "expected a table of strings, like env = {{ PYTHONUNBUFFERED = \"1\" }}, \
                     found {}",
                    describe(value.get_ref())
                ),
            );
            return None;
        };
        if vars.len() > MAX_ARGS {
            self.report(
                value.span().start,
                "backend.env".to_owned(),
                format!(
                    "{} variables, more than the limit of {MAX_ARGS}",
                    vars.len()
                ),
            );
            return None;
        }
        let mut out = BTreeMap::new();
        for (name, var) in vars.iter() {
            let name_str: &str = name.get_ref();
            let key = format!("backend.env.{name_str}");
            if name_str.is_empty() || name_str.contains(['=', '\0']) {
                self.report(
                    name.span().start,
                    key,
                    format!(
                        "invalid environment variable name {name_str:?}: it must be non-empty \
                         and contain no '='"
                    ),
                );
                continue;
            }
            match var.get_ref() {
                DeValue::String(text) if let Some(problem) = string_problem(text) => {
                    self.report(var.span().start, key, problem)
                }
                DeValue::String(text) => {
                    out.insert(name_str.to_owned(), text.to_string());
                }
                other => {
                    let hint = match other {
                        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                            format!(" (quote it: {name_str} = \"{}\")", source_text(var))
                        }
                        _ => String::new(),
                    };
                    self.report(
                        var.span().start,
                        key,
                        format!(
                            "expected a string, found {}; environment values must be \
                             strings{hint}",
                            describe(other)
                        ),
                    );
                }
            }
        }
        Some(out)
    }

    fn integer(
        &mut self,
        section: &str,
        table: &DeTable<'_>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<(i64, usize)> {
        let value = table.get(key)?;
        let at = value.span().start;
        let range = if max >= i64::from(u32::MAX) {
            format!("an integer of at least {min}")
        } else {
            format!("an integer from {min} to {max}")
        };
        let number = match value.get_ref() {
            DeValue::Integer(int) => i64::from_str_radix(int.as_str(), int.radix()).ok(),
            DeValue::String(text) => {
                let hint = if text.trim().parse::<i64>().is_ok() {
                    format!(" (write {key} = {} without quotes)", text.trim())
                } else {
                    String::new()
                };
                self.report(
                    at,
                    format!("{section}.{key}"),
                    format!("expected {range}, found a string{hint}"),
                );
                return None;
            }
            other => {
                self.report(
                    at,
                    format!("{section}.{key}"),
                    format!("expected {range}, found {}", describe(other)),
                );
                return None;
            }
        };
        match number {
            Some(n) if (min..=max).contains(&n) => Some((n, at)),
            _ => {
                let shown = number.map_or_else(|| source_text(value), |n| n.to_string());
                self.report(
                    at,
                    format!("{section}.{key}"),
                    format!("invalid value {shown}: expected {range}"),
                );
                None
            }
        }
    }

    /// A count from 1 to [`MAX_COUNT`].
    fn count_or(&mut self, section: &str, table: &DeTable<'_>, key: &str, default: u32) -> u32 {
        self.integer(section, table, key, 1, MAX_COUNT)
            .and_then(|(n, _)| u32::try_from(n).ok())
            .unwrap_or(default)
    }

    fn duration(
        &mut self,
        section: &str,
        table: &DeTable<'_>,
        key: &str,
        allow_zero: bool,
        example: &str,
    ) -> Option<(Duration, usize)> {
        let value = table.get(key)?;
        let at = value.span().start;
        let dotted = format!("{section}.{key}");
        match value.get_ref() {
            DeValue::String(text) => match parse_duration(text) {
                Ok(duration) if duration.is_zero() && !allow_zero => {
                    self.report(
                        at,
                        dotted,
                        format!("{key} must be greater than zero, like \"{example}\""),
                    );
                    None
                }
                Ok(duration) if duration > MAX_DURATION => {
                    self.report(
                        at,
                        dotted,
                        format!(
                            "invalid duration {text:?}: {key} may be at most one day (\"24h\"), \
                             like \"{example}\""
                        ),
                    );
                    None
                }
                Ok(duration) => Some((duration, at)),
                Err(message) => {
                    self.report(at, dotted, message);
                    None
                }
            },
            DeValue::Integer(_) | DeValue::Float(_) => {
                let number = source_text(value);
                self.report(
                    at,
                    dotted,
                    format!(
                        "expected a duration string with a unit, like \"250ms\", \"2s\" or \
                         \"1m\", found the number {number} (write {key} = \"{number}s\" for \
                         seconds)"
                    ),
                );
                None
            }
            other => {
                self.report(
                    at,
                    dotted,
                    format!(
                        "expected a duration string with a unit, like \"250ms\", \"2s\" or \
                         \"1m\", found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    fn duration_or(
        &mut self,
        section: &str,
        table: &DeTable<'_>,
        key: &str,
        allow_zero: bool,
        default: Duration,
    ) -> Duration {
        let example = format_duration(default);
        self.duration(section, table, key, allow_zero, &example)
            .map_or(default, |(duration, _)| duration)
    }

    fn size(&mut self, section: &str, table: &DeTable<'_>, key: &str) -> Option<u64> {
        let value = table.get(key)?;
        let at = value.span().start;
        let dotted = format!("{section}.{key}");
        let bytes = match value.get_ref() {
            DeValue::Integer(int) => match u64::from_str_radix(int.as_str(), int.radix()) {
                Ok(bytes) => bytes,
                Err(_) => {
                    self.report(
                        at,
                        dotted,
                        format!(
                            "invalid size {}: expected a positive number of bytes or a string \
                             like \"10MB\"",
                            source_text(value)
                        ),
                    );
                    return None;
                }
            },
            DeValue::String(text) => match parse_size(text) {
                Some(bytes) => bytes,
                None => {
                    self.report(
                        at,
                        dotted,
                        format!(
                            "invalid size {text:?}: expected a number with a unit, like \
                             \"10MB\" or \"512KiB\", or a plain number of bytes"
                        ),
                    );
                    return None;
                }
            },
            other => {
                self.report(
                    at,
                    dotted,
                    format!(
                        "expected a size like \"10MB\" or a number of bytes, found {}",
                        describe(other)
                    ),
                );
                return None;
            }
        };
        if bytes > MAX_LOG_SIZE {
            self.report(
                at,
                dotted,
                format!(
                    "{key} may be at most 10GB ({MAX_LOG_SIZE} bytes), found {}",
                    source_text(value)
                ),
            );
            return None;
        }
        if bytes < MIN_LOG_SIZE {
            self.report(
                at,
                dotted,
                format!(
                    "{key} must be at least 1KB ({MIN_LOG_SIZE} bytes), found {}",
                    source_text(value)
                ),
            );
            return None;
        }
        Some(bytes)
    }

    fn policy(&mut self, table: &DeTable<'_>) -> Option<RestartPolicy> {
        let (text, at) = self.string("restart", table, "policy")?;
        if let Some((_, policy)) = POLICIES.iter().find(|(name, _)| *name == text) {
            return Some(*policy);
        }
        let names: Vec<&str> = POLICIES.iter().map(|(name, _)| *name).collect();
        let quoted: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
        let hint = suggest(&text, &names)
            .map(|best| format!("; did you mean \"{best}\"?"))
            .unwrap_or_default();
        self.report(
            at,
            "restart.policy".to_owned(),
            format!(
                "invalid value {text:?}: expected one of {}{hint}",
                quoted.join(", ")
            ),
        );
        None
    }

    /// An http URL to a local backend (`health.url`, `stop.url`).
    fn url(&mut self, section: &str, table: &DeTable<'_>) -> Option<String> {
        let (url, at) = self.string(section, table, "url")?;
        let lower = url.to_ascii_lowercase();
        let problem = if let Some(rest) = lower.strip_prefix("https://") {
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
        };
        match problem {
            Some(message) => {
                self.report(at, format!("{section}.url"), message);
                None
            }
            None => Some(url),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

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

/// 1-based line and column (in characters) of byte offset `at` in `text`.
/// A TOML syntax error inside a double-quoted value that looks like a Windows path.
struct WindowsPathHint {
    at: usize,
    key: String,
    message: String,
}

/// `cwd = "C:\src\our-api"`: in a double-quoted TOML string a backslash starts an escape, so
/// the path is a syntax error (`\s`). When the error at byte `at` lies in such a value, the
/// hint says to use single quotes and shows the line rewritten that way.
fn windows_path_hint(text: &str, at: usize) -> Option<WindowsPathHint> {
    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim_end_matches('\r');
    let offset = at.saturating_sub(line_start);
    // The basic string ("...") that holds the error; an unterminated one (`"C:\src\"`, whose
    // last backslash escapes the quote) ends at the last quote of the line.
    let (open, close) = basic_string_around(line, offset)?;
    let value = &line[open + 1..close];
    let windows_like = {
        let bytes = value.as_bytes();
        (bytes.len() >= 3
            && bytes[0].is_ascii_alphabetic()
            && bytes[1] == b':'
            && matches!(bytes[2], b'\\' | b'/'))
            || value.starts_with("\\\\")
            || value.starts_with(".\\")
            || value.starts_with("..\\")
    };
    if !windows_like || !value.contains('\\') || value.contains('\'') {
        return None;
    }
    let suggestion = format!(
        "{}'{value}'{}",
        line[..open].trim_start(),
        line.get(close + 1..).unwrap_or("").trim_end()
    );
    let section = text[..line_start]
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && !l.starts_with("[["))
                .then(|| l.trim_matches(['[', ']']).trim().to_owned())
        })
        .next_back();
    let name = line[..open]
        .split_once('=')
        .map(|(name, _)| name.trim().trim_matches('"').to_owned())
        .filter(|name| !name.is_empty());
    let key = match (section, name) {
        (Some(section), Some(name)) => format!("{section}.{name}"),
        (Some(section), None) => section,
        (None, Some(name)) => name,
        (None, None) => String::new(),
    };
    Some(WindowsPathHint {
        at: line_start + open,
        key,
        message: format!("use single quotes for Windows paths: {suggestion}"),
    })
}

/// The byte offsets of the opening and closing `"` of the basic string in `line` that contains
/// `offset` (the closing one is the line's last quote when the string is unterminated).
fn basic_string_around(line: &str, offset: usize) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => return None,
            b'\'' => {
                // A literal string: no escapes, skip to its end.
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                let open = i;
                i += 1;
                let mut close = None;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            close = Some(i);
                            break;
                        }
                        _ => i += 1,
                    }
                }
                let (close, reach) = match close {
                    Some(close) => (close, close),
                    // The error of an unterminated string is reported at the line's end.
                    None => (line.rfind('"').filter(|&q| q > open)?, line.len()),
                };
                if (open..=reach).contains(&offset) {
                    return Some((open, close));
                }
                i = reach + 1;
            }
            _ => i += 1,
        }
    }
    None
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// "a string", "an integer", ... for messages.
fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The value as it would be written in TOML, for scalar values (used in hints).
fn source_text(value: &Value<'_>) -> String {
    match value.get_ref() {
        DeValue::Integer(int) => match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) => n.to_string(),
            Err(_) => int.as_str().to_owned(),
        },
        DeValue::Float(float) => float.as_str().to_owned(),
        DeValue::Boolean(flag) => flag.to_string(),
        DeValue::String(text) => format!("{text:?}"),
        other => describe(other).to_owned(),
    }
}

/// Which section a key name belongs to, if any.
fn section_of(key: &str) -> Option<&'static str> {
    SECTIONS
        .iter()
        .find(|(_, keys)| keys.contains(&key))
        .map(|(section, _)| *section)
}

/// The candidate closest to `given`, when it is close enough to be a plausible typo.
fn suggest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase().replace('-', "_");
    let (best, distance) = candidates
        .iter()
        .map(|candidate| (*candidate, strsim::damerau_levenshtein(&given, candidate)))
        .min_by_key(|(_, distance)| *distance)?;
    if distance <= 2 && distance < given.chars().count().max(2) {
        return Some(best);
    }
    candidates
        .iter()
        .map(|candidate| (*candidate, strsim::jaro_winkler(&given, candidate)))
        .filter(|(_, score)| *score >= 0.9)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(candidate, _)| candidate)
}

/// Parses a duration like "500ms", "2s", "1m30s" or "1m 30s" ("0" is also accepted).
///
/// Stricter than `humantime::parse_duration`: every number must be directly followed by its
/// unit, so "2 seconds" and "2" are rejected.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number with a unit, like \"250ms\", \"2s\" \
             or \"1m\""
        )
    };
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    let mut chars = trimmed.chars().peekable();
    let mut groups = 0;
    while chars.peek().is_some() {
        let mut digits = 0;
        while chars.next_if(|c| c.is_ascii_digit() || *c == '.').is_some() {
            digits += 1;
        }
        let mut letters = 0;
        while chars.next_if(|c| c.is_alphabetic()).is_some() {
            letters += 1;
        }
        if digits == 0 || letters == 0 {
            return Err(bad());
        }
        groups += 1;
        while chars.next_if(|c| *c == ' ').is_some() {}
    }
    if groups == 0 {
        return Err(bad());
    }
    match humantime::parse_duration(trimmed) {
        Ok(duration) => Ok(duration),
        Err(humantime::DurationError::NumberOverflow) => Err(format!(
            "invalid duration {text:?}: the number is too large"
        )),
        Err(_) => Err(bad()),
    }
}

/// Formats a duration compactly ("500ms", "30s", "1m30s") in a form `parse_duration` accepts.
fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0ms".to_owned();
    }
    humantime::format_duration(duration)
        .to_string()
        .replace(' ', "")
}

/// Parses a size like "10MB", "512KiB" or "1048576".
fn parse_size(text: &str) -> Option<u64> {
    let trimmed = text.trim();
    if !trimmed.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    trimmed
        .parse::<bytesize::ByteSize>()
        .ok()
        .map(|size| size.0)
}

/// Formats a byte count compactly ("10MB", "512KiB", "1234B") in a form `parse_size` reads
/// back exactly.
fn format_size(bytes: u64) -> String {
    const UNITS: &[(&str, u64)] = &[
        ("EB", 1_000_000_000_000_000_000),
        ("EiB", 1 << 60),
        ("PB", 1_000_000_000_000_000),
        ("PiB", 1 << 50),
        ("TB", 1_000_000_000_000),
        ("TiB", 1 << 40),
        ("GB", 1_000_000_000),
        ("GiB", 1 << 30),
        ("MB", 1_000_000),
        ("MiB", 1 << 20),
        ("KB", 1_000),
        ("KiB", 1 << 10),
    ];
    if bytes == 0 {
        return "0B".to_owned();
    }
    let mut out = String::new();
    match UNITS
        .iter()
        .find(|(_, factor)| bytes.is_multiple_of(*factor))
    {
        Some((unit, factor)) => {
            let _ = write!(out, "{}{unit}", bytes / factor);
        }
        None => {
            let _ = write!(out, "{bytes}B");
        }
    }
    out
}

fn ser_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*duration))
}

fn ser_opt_duration<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => ser_duration(duration, serializer),
        None => serializer.serialize_none(),
    }
}

fn ser_size<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_size(*bytes))
}

fn ser_opt_path<S: Serializer>(path: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_str(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("warden.toml"))
    }

    /// Parses `text`, expecting an `Invalid` error; returns (line, column, key, message).
    fn invalid(text: &str) -> (usize, usize, String, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line,
                column,
                key,
                message,
                ..
            }) => (line, column, key, message),
            other => panic!("expected an Invalid error for {text:?}, got {other:?}"),
        }
    }

    const FULL: &str = r#"
[backend]
command = "python"
args = ["main.py", "--port", "54112"]
cwd = 'C:\path\to\your\backend'
port = 54112
open_url = "http://127.0.0.1:54112/docs"

[backend.env]
PYTHONUNBUFFERED = "1"
MODE = "dev"

[health]
url = "http://127.0.0.1:54112/health"
interval = "1m30s"
timeout = "250ms"
unhealthy_after = 4
restart_after = "45s"
start_timeout = "2m"

[restart]
policy = "always"
backoff_initial = "0ms"
backoff_max = "1m"
max_restarts = 10
window = "5m"
stable_after = "0"

[stop]
grace = "1500ms"

[logs]
dir = "logs"
max_size = "512KiB"
keep = 2

[strays]
scan_interval = "2s"
action = "kill"
adopt = true
cmdline_contains = ["manage.py runserver"]

[notify]
strays = false

[watch]
paths = ["src"]
include = ["**/*.py"]
exclude = ["**/migrations"]
debounce = "500ms"
on_change = "restart"
"#;

    fn full_config() -> Config {
        Config {
            backend: Some(BackendConfig {
                command: "python".into(),
                args: vec!["main.py".into(), "--port".into(), "54112".into()],
                cwd: Some(PathBuf::from(r"C:\path\to\your\backend")),
                env: BTreeMap::from([
                    ("MODE".to_owned(), "dev".to_owned()),
                    ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
                ]),
                env_file: EnvFile::Default,
                port: Some(54112),
                open_url: Some("http://127.0.0.1:54112/docs".into()),
            }),
            health: HealthConfig {
                url: Some("http://127.0.0.1:54112/health".into()),
                interval: Duration::from_secs(90),
                timeout: Duration::from_millis(250),
                unhealthy_after: 4,
                restart_after: Some(Duration::from_secs(45)),
                start_timeout: Duration::from_secs(120),
            },
            restart: RestartConfig {
                policy: RestartPolicy::Always,
                backoff_initial: Duration::ZERO,
                backoff_max: Duration::from_secs(60),
                max_restarts: 10,
                window: Duration::from_secs(300),
                stable_after: Duration::ZERO,
            },
            stop: StopConfig {
                grace: Duration::from_millis(1500),
                url: None,
            },
            logs: LogsConfig {
                dir: Some(PathBuf::from("logs")),
                max_size: 512 * 1024,
                keep: 2,
            },
            strays: StraysConfig {
                scan_interval: Duration::from_secs(2),
                action: StrayAction::Kill,
                adopt: true,
                cmdline_contains: vec!["manage.py runserver".into()],
                cwd: None,
                exe_name: None,
            },
            notify: NotifyConfig {
                strays: false,
                ..NotifyConfig::default()
            },
            watch: WatchConfig {
                paths: vec![PathBuf::from("src")],
                include: vec!["**/*.py".into()],
                exclude: vec!["**/migrations".into()],
                debounce: Duration::from_millis(500),
                on_change: OnChange::Restart,
            },
        }
    }

    #[test]
    fn stray_rules_that_match_too_broadly_are_rejected() {
        for (text, key) in [
            ("[strays]\nexe_name = \"python\"\n", "strays.exe_name"),
            (
                "[strays]\ncmdline_contains = [\"python\", \"-m\"]\n",
                "strays.cmdline_contains",
            ),
        ] {
            let (line, _, got_key, message) = invalid(text);
            assert_eq!(line, 2, "{text}");
            assert_eq!(got_key, key, "{text}");
            assert!(message.contains("too broad"), "{message}");
        }
        for ok in [
            "[strays]\nexe_name = \"python\"\ncmdline_contains = [\"manage.py runserver\"]\n",
            "[strays]\nexe_name = \"python\"\ncwd = \"/srv/api\"\n",
            "[strays]\naction = \"kill\"\n",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for loose in ["main.py", "src/main.py"] {
            let text = format!("[strays]\ncwd = \"/srv/api\"\ncmdline_contains = [{loose:?}]\n");
            let (line, _, key, message) = invalid(&text);
            assert_eq!(
                (line, key.as_str()),
                (3, "strays.cmdline_contains"),
                "{text}"
            );
            assert!(message.contains("vim"), "{message}");
        }
        let (_, _, key, message) = invalid("[strays]\naction = \"nuke\"\n");
        assert_eq!(key, "strays.action");
        assert!(message.contains("\"notify\", \"kill\""), "{message}");
    }

    #[test]
    fn defaults() {
        let config = Config::default();
        assert_eq!(config.backend, None);
        assert_eq!(config.health.url, None);
        assert_eq!(config.health.interval, Duration::from_secs(2));
        assert_eq!(config.health.timeout, Duration::from_secs(1));
        assert_eq!(config.health.unhealthy_after, 3);
        assert_eq!(config.health.restart_after, None);
        assert_eq!(config.health.start_timeout, Duration::from_secs(60));
        assert_eq!(config.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(config.restart.backoff_initial, Duration::from_millis(500));
        assert_eq!(config.restart.backoff_max, Duration::from_secs(30));
        assert_eq!(config.restart.max_restarts, 5);
        assert_eq!(config.restart.window, Duration::from_secs(60));
        assert_eq!(config.restart.stable_after, Duration::from_secs(10));
        assert_eq!(config.stop.grace, Duration::from_secs(5));
        assert_eq!(config.logs.dir, None);
        assert_eq!(config.logs.max_size, 10_000_000);
        assert_eq!(config.logs.keep, 5);
    }

    #[test]
    fn empty_and_partial_files_use_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# nothing\n\n").unwrap(), Config::default());
        assert_eq!(parse("\u{feff}[health]\n").unwrap(), Config::default());
        let config = parse("[stop]\ngrace = \"10s\"\n").unwrap();
        assert_eq!(config.stop.grace, Duration::from_secs(10));
        assert_eq!(config.health, HealthConfig::default());
    }

    #[test]
    fn full_valid_file() {
        assert_eq!(parse(FULL).unwrap(), full_config());
    }

    #[test]
    fn minimal_backend_and_alternative_spellings() {
        let config = parse("[backend]\ncommand = \"node\"\n").unwrap();
        let backend = config.backend.unwrap();
        assert_eq!(backend.command, "node");
        assert!(backend.args.is_empty() && backend.env.is_empty());
        assert_eq!((backend.cwd, backend.port), (None, None));

        // Dotted keys, inline tables, plain byte counts and hex integers are all fine.
        let config = parse(
            "backend = { command = \"x\", env = { A = \"b\" } }\nhealth.interval = \"1m 30s\"\n\
             logs.max_size = 2048\nlogs.keep = 0x3\n",
        )
        .unwrap();
        assert_eq!(config.backend.unwrap().env["A"], "b");
        assert_eq!(config.health.interval, Duration::from_secs(90));
        assert_eq!(config.logs.max_size, 2048);
        assert_eq!(config.logs.keep, 3);
    }

    #[test]
    fn template_parses_to_default() {
        assert_eq!(parse(template()).unwrap(), Config::default());
        assert!(template().lines().count() < 110);
        assert!(
            template()
                .lines()
                .all(|line| line.is_empty() || line.starts_with('#'))
        );
    }

    #[test]
    fn template_examples_are_valid_when_uncommented() {
        // Uncomment every line that looks like a setting or a section header.
        let uncommented: String = template()
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| {
                line.starts_with('[')
                    || line.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config = parse(&uncommented).unwrap();
        let backend = config.backend.clone().unwrap();
        assert_eq!(backend.command, "python");
        assert_eq!(backend.args, ["main.py"]);
        assert_eq!(backend.cwd, Some(PathBuf::from(r"C:\path\to\your\backend")));
        assert_eq!(backend.port, Some(54112));
        assert_eq!(
            config.health.url.as_deref(),
            Some("http://127.0.0.1:54112/health")
        );
        assert_eq!(config.health.restart_after, Some(Duration::from_secs(30)));
        // Apart from the examples, the uncommented values are the defaults.
        let expected = Config {
            backend: Some(backend),
            health: HealthConfig {
                url: config.health.url.clone(),
                restart_after: config.health.restart_after,
                ..HealthConfig::default()
            },
            logs: LogsConfig {
                dir: Some(PathBuf::from("logs")),
                ..LogsConfig::default()
            },
            strays: StraysConfig {
                cmdline_contains: vec!["--port 54112".into()],
                cwd: Some(PathBuf::from(r"C:\path\to\your\backend")),
                ..StraysConfig::default()
            },
            stop: StopConfig {
                url: Some("http://127.0.0.1:54112/shutdown".into()),
                ..StopConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn to_toml_round_trips() {
        for config in [Config::default(), full_config()] {
            let text = config.to_toml();
            assert_eq!(parse(&text).unwrap(), config, "{text}");
        }
        let text = full_config().to_toml();
        for expected in [
            "interval = \"1m30s\"",
            "timeout = \"250ms\"",
            "backoff_initial = \"0ms\"",
            "window = \"5m\"",
            "max_size = \"512KiB\"",
            "policy = \"always\"",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        let text = Config::default().to_toml();
        assert!(text.contains("max_size = \"10MB\""), "{text}");
        assert!(
            !text.contains("[backend]") && !text.contains("url"),
            "{text}"
        );
    }

    #[test]
    fn duration_and_size_formats_round_trip() {
        for duration in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(7),
            Duration::from_millis(500),
            Duration::from_millis(1500),
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(3601),
            Duration::from_secs(86_400 * 40 + 7),
            Duration::from_secs(31_557_600),
        ] {
            let text = format_duration(duration);
            assert!(!text.contains(' '), "{text}");
            assert_eq!(parse_duration(&text), Ok(duration), "{text}");
        }
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        for bytes in [
            0,
            1,
            999,
            1000,
            1024,
            10_000_000,
            10 << 20,
            1_024_000,
            u64::MAX,
        ] {
            let text = format_size(bytes);
            assert_eq!(parse_size(&text), Some(bytes), "{text}");
        }
        assert_eq!(format_size(10_000_000), "10MB");
        assert_eq!(format_size(10 << 20), "10MiB");
        assert_eq!(parse_size("1.5MB"), Some(1_500_000));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("-5"), None);
    }

    #[test]
    fn duration_syntax() {
        for (text, expected) in [
            ("250ms", Some(Duration::from_millis(250))),
            ("2s", Some(Duration::from_secs(2))),
            ("1m 30s", Some(Duration::from_secs(90))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("0", Some(Duration::ZERO)),
            ("2 seconds", None),
            ("2", None),
            ("", None),
            ("s", None),
            ("2 s", None),
            ("2parsecs", None),
            ("-2s", None),
        ] {
            assert_eq!(parse_duration(text).ok(), expected, "{text:?}");
        }
    }

    #[test]
    fn unknown_key_with_suggestion() {
        let text = "# my config\n[backend]\ncomand = \"python\"\n";
        let (line, column, key, message) = invalid(text);
        assert_eq!((line, column), (3, 1));
        assert_eq!(key, "backend.comand");
        assert_eq!(
            message,
            "unknown key \"comand\" in [backend]; did you mean \"command\"? \
             (valid keys: command, args, cwd, env, env_file, port, open_url)"
        );
    }

    #[test]
    fn unknown_keys_table() {
        // (text, line, key, message substring)
        let cases = [
            (
                "[health]\ninterval = \"2s\"\nunhealty_after = 3\n",
                3,
                "health.unhealty_after",
                "did you mean \"unhealthy_after\"?",
            ),
            (
                "[restart]\nmax-restarts = 3\n",
                2,
                "restart.max-restarts",
                "did you mean \"max_restarts\"?",
            ),
            (
                "[health]\npolicy = \"never\"\n",
                2,
                "health.policy",
                "\"policy\" belongs in the [restart] section",
            ),
            (
                "[stop]\nxyzzy = 1\n",
                2,
                "stop.xyzzy",
                "unknown key \"xyzzy\" in [stop] (valid keys: grace, url)",
            ),
            (
                "\ncommand = \"python\"\n",
                2,
                "command",
                "unknown top-level key \"command\"; it belongs in the [backend] section",
            ),
            (
                "[logs]\nkeep = 2\n[logs.extra]\nx = 1\n",
                3,
                "logs.extra",
                "unknown key \"extra\" in [logs]",
            ),
        ];
        for (text, want_line, want_key, want_message) in cases {
            let (line, _, key, message) = invalid(text);
            assert_eq!((line, key.as_str()), (want_line, want_key), "{text:?}");
            assert!(message.contains(want_message), "{text:?}: {message}");
        }
    }

    #[test]
    fn unknown_section() {
        let (line, column, key, message) = invalid("[health]\n\n[helth]\nurl = \"http://x\"\n");
        assert_eq!((line, column), (3, 2));
        assert_eq!(key, "helth");
        assert_eq!(
            message,
            "unknown section [helth]; did you mean [health]? \
             (valid sections: backend, health, restart, stop, logs, strays, notify, watch)"
        );
        let (_, _, _, message) = invalid("[plugins]\n");
        assert_eq!(
            message,
            "unknown section [plugins] (valid sections: backend, health, restart, stop, logs, strays, notify, watch)"
        );
    }

    #[test]
    fn bad_duration_position() {
        let text = "[health]\ntimeout = \"1s\"\ninterval = \"2 seconds\"\n";
        let (line, column, key, message) = invalid(text);
        assert_eq!((line, column), (3, 12));
        assert_eq!(key, "health.interval");
        assert_eq!(
            message,
            "invalid duration \"2 seconds\": expected a number with a unit, \
             like \"250ms\", \"2s\" or \"1m\""
        );
    }

    #[test]
    fn value_errors_table() {
        // (text, line, column, key, message substring)
        let cases = [
            (
                "[backend]\ncommand = 42\n",
                2,
                11,
                "backend.command",
                "expected a string, found an integer",
            ),
            (
                "[backend]\ncommand = \"x\"\nargs = \"main.py\"\n",
                3,
                8,
                "backend.args",
                "expected an array of strings, found a string (write args = [\"main.py\"])",
            ),
            (
                "[backend]\ncommand = \"x\"\nargs = [\"a\", 2]\n",
                3,
                14,
                "backend.args",
                "expected a string, found an integer (item 2",
            ),
            (
                "[backend]\ncommand = \"  \"\n",
                2,
                11,
                "backend.command",
                "must not be empty",
            ),
            (
                "[health]\ninterval = 2\n",
                2,
                12,
                "health.interval",
                "expected a duration string with a unit, like \"250ms\", \"2s\" or \"1m\", \
                 found the number 2",
            ),
            (
                "[health]\ninterval = \"0s\"\n",
                2,
                12,
                "health.interval",
                "interval must be greater than zero, like \"2s\"",
            ),
            (
                "[health]\ntimeout = true\n",
                2,
                11,
                "health.timeout",
                "found a boolean",
            ),
            (
                "[stop]\ngrace = \"0ms\"\n",
                2,
                9,
                "stop.grace",
                "must be greater than zero",
            ),
            (
                "[restart]\nwindow = \"0\"\n",
                2,
                10,
                "restart.window",
                "must be greater than zero",
            ),
            (
                "[health]\nunhealthy_after = 0\n",
                2,
                19,
                "health.unhealthy_after",
                "invalid value 0: expected an integer from 1 to 1000000",
            ),
            (
                "[health]\nunhealthy_after = \"3\"\n",
                2,
                19,
                "health.unhealthy_after",
                "found a string (write unhealthy_after = 3 without quotes)",
            ),
            (
                "[restart]\nmax_restarts = 0\n",
                2,
                16,
                "restart.max_restarts",
                "expected an integer from 1 to 1000000",
            ),
            (
                "[logs]\nkeep = 0\n",
                2,
                8,
                "logs.keep",
                "expected an integer from 1 to 100",
            ),
            (
                "[logs]\nmax_size = \"500B\"\n",
                2,
                12,
                "logs.max_size",
                "max_size must be at least 1KB",
            ),
            (
                "[logs]\nmax_size = \"ten megs\"\n",
                2,
                12,
                "logs.max_size",
                "invalid size \"ten megs\": expected a number with a unit, like \"10MB\"",
            ),
            (
                "[logs]\ndir = 3\n",
                2,
                7,
                "logs.dir",
                "expected a string, found an integer",
            ),
            (
                "health = \"x\"\n",
                1,
                1,
                "health",
                "expected a table (a [health] section), found a string",
            ),
        ];
        for (text, want_line, want_column, want_key, want_message) in cases {
            let (line, column, key, message) = invalid(text);
            assert_eq!(
                (line, column, key.as_str()),
                (want_line, want_column, want_key),
                "{text:?}: {message}"
            );
            assert!(message.contains(want_message), "{text:?}: {message}");
        }
    }

    /// Values that would overflow a clock, exhaust memory or fail at spawn time are rejected,
    /// naming the key.
    #[test]
    fn hostile_values_are_rejected_with_their_key() {
        let many_args = format!(
            "[backend]\ncommand = \"python\"\nargs = [{}]\n",
            vec!["\"a\""; MAX_ARGS + 1].join(",")
        );
        let huge_args = format!(
            "[backend]\ncommand = \"python\"\nargs = [{}]\n",
            vec![format!("\"{}\"", "x".repeat(30_000)); 20].join(",")
        );
        let long_arg = format!(
            "[backend]\ncommand = \"python\"\nargs = [\"{}\"]\n",
            "x".repeat(MAX_STRING + 1)
        );
        let many_env = format!(
            "[backend]\ncommand = \"python\"\n[backend.env]\n{}",
            (0..=MAX_ARGS)
                .map(|i| format!("V{i} = \"1\"\n"))
                .collect::<String>()
        );
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "[stop]\ngrace = \"500000000000y\"\n".into(),
                "stop.grace",
                "at most one day",
            ),
            (
                "[stop]\ngrace = \"25h\"\n".into(),
                "stop.grace",
                "at most one day",
            ),
            (
                "[health]\ninterval = \"99999999999999d\"\n".into(),
                "health.interval",
                "",
            ),
            (
                "[health]\nrestart_after = \"2d\"\n".into(),
                "health.restart_after",
                "one day",
            ),
            (
                "[health]\nstart_timeout = \"1000y\"\n".into(),
                "health.start_timeout",
                "one day",
            ),
            (
                "[restart]\nbackoff_max = \"1y\"\n".into(),
                "restart.backoff_max",
                "one day",
            ),
            (
                "[restart]\nbackoff_initial = \"30d\"\n".into(),
                "restart.backoff_initial",
                "one day",
            ),
            (
                "[restart]\nwindow = \"3d\"\n".into(),
                "restart.window",
                "one day",
            ),
            (
                "[restart]\nstable_after = \"3d\"\n".into(),
                "restart.stable_after",
                "one day",
            ),
            (
                "[strays]\nscan_interval = \"3d\"\n".into(),
                "strays.scan_interval",
                "one day",
            ),
            (
                "[watch]\ndebounce = \"3d\"\n".into(),
                "watch.debounce",
                "one day",
            ),
            (
                "[logs]\nkeep = 4294967295\n".into(),
                "logs.keep",
                "from 1 to 100",
            ),
            (
                "[logs]\nmax_size = \"1PB\"\n".into(),
                "logs.max_size",
                "at most 10GB",
            ),
            (
                "[restart]\nmax_restarts = 4294967295\n".into(),
                "restart.max_restarts",
                "1000000",
            ),
            (
                "[health]\nunhealthy_after = 1000001\n".into(),
                "health.unhealthy_after",
                "1000000",
            ),
            (
                "[backend]\ncommand = \"py\\u0000thon\"\n".into(),
                "backend.command",
                "NUL",
            ),
            (
                "[backend]\ncommand = \"python\"\nargs = [\"a\\u0000b\"]\n".into(),
                "backend.args",
                "NUL",
            ),
            (
                "[backend]\ncommand = \"python\"\ncwd = \"a\\u0000b\"\n".into(),
                "backend.cwd",
                "NUL",
            ),
            (
                "[backend]\ncommand = \"python\"\nenv = { A = \"\\u0000\" }\n".into(),
                "backend.env.A",
                "NUL",
            ),
            ("[logs]\ndir = \"l\\u0000gs\"\n".into(), "logs.dir", "NUL"),
            (
                "[health]\nurl = \"http://127.0.0.1:99999/health\"\n".into(),
                "health.url",
                "65535",
            ),
            (
                "[health]\nurl = \"http://127.0.0.1:0/health\"\n".into(),
                "health.url",
                "65535",
            ),
            (
                "[health]\nurl = \"http://127.0.0.1:/health\"\n".into(),
                "health.url",
                "port",
            ),
            (
                "[health]\nurl = \"http://127.0.0.1:8o/health\"\n".into(),
                "health.url",
                "port",
            ),
            (
                "[health]\nurl = \"http://[::1]x/health\"\n".into(),
                "health.url",
                "port",
            ),
            (many_args, "backend.args", "more than the limit of 1024"),
            (huge_args, "backend.args", "the system would refuse"),
            (long_arg, "backend.args", "longer than the limit"),
            (many_env, "backend.env", "more than the limit of 1024"),
        ];
        for (text, want_key, want_message) in cases {
            let (_, _, key, message) = invalid(&text);
            assert_eq!(key, want_key, "{}: {message}", &text[..text.len().min(80)]);
            assert!(message.contains(want_message), "{want_key}: {message}");
        }
        // The bounds themselves are accepted.
        for ok in [
            "[stop]\ngrace = \"24h\"\n",
            "[logs]\nkeep = 100\nmax_size = \"10GB\"\n",
            "[health]\nurl = \"http://[::1]:65535/health\"\n",
            "[health]\nurl = \"http://127.0.0.1/health\"\n",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn bad_policy() {
        let (line, column, key, message) = invalid("[restart]\npolicy = \"sometimes\"\n");
        assert_eq!((line, column, key.as_str()), (2, 10, "restart.policy"));
        assert_eq!(
            message,
            "invalid value \"sometimes\": expected one of \"always\", \"on-failure\", \"never\""
        );
        let (_, _, _, message) = invalid("[restart]\npolicy = \"on_failure\"\n");
        assert!(
            message.ends_with("did you mean \"on-failure\"?"),
            "{message}"
        );
        for (name, policy) in [
            ("always", RestartPolicy::Always),
            ("on-failure", RestartPolicy::OnFailure),
            ("never", RestartPolicy::Never),
        ] {
            let config = parse(&format!("[restart]\npolicy = \"{name}\"\n")).unwrap();
            assert_eq!(config.restart.policy, policy);
        }
    }

    #[test]
    fn missing_command() {
        let text = "[health]\ninterval = \"2s\"\n\n[backend]\nargs = [\"main.py\"]\n";
        let (line, column, key, message) = invalid(text);
        assert_eq!((line, column), (4, 1));
        assert_eq!(key, "backend.command");
        assert!(
            message.contains("missing required key \"command\""),
            "{message}"
        );
        assert!(
            message.contains("command = \"python\" with args = [\"main.py\"]"),
            "{message}"
        );
    }

    #[test]
    fn typo_is_reported_before_the_missing_key_it_causes() {
        let (line, _, key, _) = invalid("[backend]\nport = 70000\n");
        assert_eq!((line, key.as_str()), (2, "backend.port"));
        let (line, _, key, _) = invalid("[backend]\ncomand = \"x\"\n");
        assert_eq!((line, key.as_str()), (2, "backend.comand"));
    }

    #[test]
    fn port_range() {
        for (port, ok) in [
            ("0", false),
            ("1", true),
            ("65535", true),
            ("65536", false),
            ("70000", false),
            ("-1", false),
        ] {
            let text = format!("[backend]\ncommand = \"x\"\nport = {port}\n");
            match parse(&text) {
                Ok(config) => {
                    assert!(ok, "{port} accepted");
                    assert_eq!(
                        config.backend.unwrap().port.map(|p| p.to_string()),
                        Some(port.into())
                    );
                }
                Err(ConfigError::Invalid {
                    line,
                    column,
                    key,
                    message,
                    ..
                }) => {
                    assert!(!ok, "{port} rejected: {message}");
                    assert_eq!((line, column, key.as_str()), (3, 8, "backend.port"));
                    assert_eq!(
                        message,
                        format!("invalid value {port}: expected an integer from 1 to 65535")
                    );
                }
                Err(other) => panic!("{other}"),
            }
        }
    }

    #[test]
    fn backoff_max_below_initial() {
        let text = "[restart]\nbackoff_initial = \"10s\"\nbackoff_max = \"5s\"\n";
        let (line, column, key, message) = invalid(text);
        assert_eq!((line, column, key.as_str()), (3, 15, "restart.backoff_max"));
        assert!(
            message.contains("backoff_max (5s) must be at least backoff_initial (10s)"),
            "{message}"
        );
        // Only backoff_initial written: it is compared with the default backoff_max.
        let (line, _, key, message) = invalid("[restart]\nbackoff_initial = \"1m\"\n");
        assert_eq!((line, key.as_str()), (2, "restart.backoff_initial"));
        assert!(message.contains("30s, the default"), "{message}");
        // Equal is fine, and a broken backoff_initial is reported as itself.
        assert!(parse("[restart]\nbackoff_initial = \"5s\"\nbackoff_max = \"5s\"\n").is_ok());
        let (_, _, key, _) =
            invalid("[restart]\nbackoff_initial = \"1 min\"\nbackoff_max = \"1ms\"\n");
        assert_eq!(key, "restart.backoff_initial");
    }

    #[test]
    fn stop_url() {
        let config = parse("[stop]\nurl = \"http://127.0.0.1:54112/shutdown\"\n").unwrap();
        assert_eq!(
            config.stop.url.as_deref(),
            Some("http://127.0.0.1:54112/shutdown")
        );
        assert_eq!(parse("[stop]\ngrace = \"2s\"\n").unwrap().stop.url, None);
        let (line, column, key, message) = invalid("[stop]\nurl = \"127.0.0.1/shutdown\"\n");
        assert_eq!((line, column, key.as_str()), (2, 7, "stop.url"));
        assert!(message.contains("expected an http:// URL"), "{message}");
    }

    #[test]
    fn health_urls() {
        let ok = [
            "http://127.0.0.1:54112/health",
            "http://localhost:8000/",
            "HTTP://host",
        ];
        for url in ok {
            let config = parse(&format!("[health]\nurl = \"{url}\"\n")).unwrap();
            assert_eq!(config.health.url.as_deref(), Some(url));
        }
        let bad = [
            (
                "https://127.0.0.1:8000/health",
                "https URLs are not supported",
            ),
            (
                "https://127.0.0.1:8000/health",
                "use \"http://127.0.0.1:8000/health\"",
            ),
            ("ftp://host/x", "expected an http:// URL"),
            ("127.0.0.1:8000/health", "expected an http:// URL"),
            ("http:///health", "the host is missing"),
            ("http://host/a b", "may not contain spaces"),
        ];
        for (url, want) in bad {
            let (line, column, key, message) =
                invalid(&format!("[health]\ninterval = \"2s\"\nurl = \"{url}\"\n"));
            assert_eq!((line, column, key.as_str()), (3, 7, "health.url"), "{url}");
            assert!(message.contains(want), "{url}: {message}");
        }
    }

    #[test]
    fn env_values_must_be_strings() {
        let text = "[backend]\ncommand = \"x\"\n\n[backend.env]\nMODE = \"dev\"\nPORT = 8000\n";
        let (line, column, key, message) = invalid(text);
        assert_eq!((line, column, key.as_str()), (6, 8, "backend.env.PORT"));
        assert!(
            message.contains("expected a string, found an integer"),
            "{message}"
        );
        assert!(message.contains("PORT = \"8000\""), "{message}");

        let (line, _, key, message) = invalid("[backend]\ncommand = \"x\"\nenv = [\"A=1\"]\n");
        assert_eq!((line, key.as_str()), (3, "backend.env"));
        assert!(message.contains("expected a table of strings"), "{message}");

        let (_, _, key, _) = invalid("[backend]\ncommand = \"x\"\nenv = { \"A=B\" = \"1\" }\n");
        assert_eq!(key, "backend.env.A=B");
    }

    #[test]
    fn windows_paths_in_double_quotes_get_the_single_quote_hint() {
        // (text, line, column, key, message)
        let cases = [
            (
                "[backend]\ncommand = \"python\"\ncwd = \"C:\\src\\our-api\"\n",
                3,
                7,
                "backend.cwd",
                "use single quotes for Windows paths: cwd = 'C:\\src\\our-api'",
            ),
            (
                "[backend]\ncommand = 'C:\\venv\\Scripts\\python.exe'\n\n[logs]\ndir = \"D:\\logs\\\"\n",
                5,
                7,
                "logs.dir",
                "use single quotes for Windows paths: dir = 'D:\\logs\\'",
            ),
            (
                "[watch]\npaths = [\"api\", \"C:\\src\\lib\"]\n",
                2,
                17,
                "watch.paths",
                "use single quotes for Windows paths: paths = [\"api\", 'C:\\src\\lib']",
            ),
            (
                "[backend]\ncommand = \"\\\\server\\share\\python.exe\"\n",
                2,
                11,
                "backend.command",
                "use single quotes for Windows paths: command = '\\\\server\\share\\python.exe'",
            ),
        ];
        for (text, want_line, want_column, want_key, want_message) in cases {
            let (line, column, key, message) = invalid(text);
            assert_eq!(
                (line, column, key.as_str(), message.as_str()),
                (want_line, want_column, want_key, want_message),
                "{text}"
            );
        }
        // Not a Windows path: the plain TOML error stays.
        let (_, _, key, message) = invalid("[backend]\ncommand = \"a\\qb\"\n");
        assert_eq!(key, "");
        assert!(message.starts_with("invalid TOML: "), "{message}");
    }

    #[test]
    fn env_file_values() {
        for (value, want) in [
            ("'.env.local'", EnvFile::Path(PathBuf::from(".env.local"))),
            ("false", EnvFile::Off),
            ("true", EnvFile::Default),
        ] {
            let config =
                parse(&format!("[backend]\ncommand = \"x\"\nenv_file = {value}\n")).unwrap();
            assert_eq!(config.backend.as_ref().unwrap().env_file, want, "{value}");
            assert_eq!(
                parse(&config.to_toml()).unwrap(),
                config,
                "{value} round trip"
            );
        }
        let (line, column, key, message) = invalid("[backend]\ncommand = \"x\"\nenv_file = 3\n");
        assert_eq!((line, column, key.as_str()), (3, 12, "backend.env_file"));
        assert!(message.contains("or false for no env file"), "{message}");
    }

    #[test]
    fn toml_syntax_errors() {
        for (text, want_line) in [
            ("[health]\ninterval = \"2s\"\ntimeout = \n", 3),
            ("[health\n", 1),
            ("[stop]\ngrace = \"5s\"\ngrace = \"6s\"\n", 3),
            ("\n\n\nx = [1,", 4),
        ] {
            let (line, _, key, message) = invalid(text);
            assert_eq!(line, want_line, "{text:?}: {message}");
            assert_eq!(key, "");
            assert!(message.starts_with("invalid TOML: "), "{message}");
        }
    }

    #[test]
    fn display_format() {
        let err = Config::parse(
            "[restart]\npolicy = \"sometimes\"\n",
            Path::new("conf/warden.toml"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "conf/warden.toml:2:10: restart.policy: invalid value \"sometimes\": expected one \
             of \"always\", \"on-failure\", \"never\""
        );
        let err = Config::parse("[stop\n", Path::new("w.toml")).unwrap_err();
        assert!(
            err.to_string().starts_with("w.toml:1:6: invalid TOML: "),
            "{err}"
        );
        let err = ConfigError::NotFound {
            path: PathBuf::from("w.toml"),
        };
        assert_eq!(err.to_string(), "w.toml: config file not found");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 3), (2, 1));
        assert_eq!(line_col("ab\ncd", 99), (2, 3));
        assert_eq!(line_col("é = 1", 3), (1, 3));
        // "é" is two bytes but one column.
        let (line, column, _, _) = invalid("[backend]\ncommand = \"x\"\nargs = [\"é\", 1]\n");
        assert_eq!((line, column), (3, 14));
    }

    #[test]
    fn load_reads_files() {
        let dir = std::env::temp_dir().join(format!("cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.toml");
        assert!(matches!(
            Config::load(&missing),
            Err(ConfigError::NotFound { path }) if path == missing
        ));
        let file = dir.join("warden.toml");
        std::fs::write(&file, FULL).unwrap();
        assert_eq!(Config::load(&file).unwrap(), full_config());
        std::fs::write(&file, "[stop]\ngrace = 5\n").unwrap();
        let err = Config::load(&file).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2:9: stop.grace: ", file.display()))
        );
        let err = Config::load(&dir).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
