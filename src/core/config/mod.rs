//! Loads the warden's TOML configuration file into the types below, which declare every key,
//! its type and its default once (serde derive with `deny_unknown_fields`); `validate` then
//! checks the bounds and the rules across keys. Every mistake is reported with its file, line,
//! column and dotted key, and says what would be valid: serde's errors are reworded here, placed
//! by the document's spans. Every duration, size, count and string has a bound, so a value that
//! would overflow a clock, exhaust memory or fail at spawn time is rejected here, by `config
//! check` and by a reload, never at run time. It does no I/O except reading that one config
//! file and looking at the folders it names; it imports serde and toml (and `validate` the
//! stray matcher's test for loose rules).

#[cfg(test)]
mod mutations;
mod validate;

pub mod watch;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer as _, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

/// The whole configuration of the warden, with every default filled in.
///
/// `Config::default()` is every default with `backend: None` (the built-in demo backend).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Folders to watch; empty means the backend's cwd.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathBuf>,
    /// Globs (relative to a watched folder) of the files that count.
    pub include: Vec<String>,
    /// Globs of files and folders that never count; a matching folder is not watched at all.
    pub exclude: Vec<String>,
    /// A burst of changes closer together than this is one change.
    #[serde(with = "duration")]
    pub debounce: Duration,
    /// What a change does.
    #[serde(deserialize_with = "choice")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrayAction {
    /// Report it (status, tray alert); kill only on request.
    Notify,
    /// Kill its whole tree as soon as it is found.
    Kill,
}

/// Stray detection (`[strays]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StraysConfig {
    /// Time between two scans of the process table.
    #[serde(with = "duration")]
    pub scan_interval: Duration,
    /// What to do with a stray.
    #[serde(deserialize_with = "choice")]
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
///
/// `command` is required once `[backend]` is present; its default (empty) only stands in while
/// `validate` reports it missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "port")]
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

impl<'de> Deserialize<'de> for EnvFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvFileVisitor;
        impl Visitor<'_> for EnvFileVisitor {
            type Value = EnvFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECT_ENV_FILE)
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<EnvFile, E> {
                Ok(if on { EnvFile::Default } else { EnvFile::Off })
            }
            fn visit_str<E: de::Error>(self, path: &str) -> Result<EnvFile, E> {
                Ok(EnvFile::Path(PathBuf::from(path)))
            }
        }
        deserializer.deserialize_any(EnvFileVisitor)
    }
}

/// Health probing (`[health]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// The `http://` URL to probe; `None` means no HTTP probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Time between two probes.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// A probe that takes longer than this fails.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive failed probes before the backend counts as unhealthy (at least 1).
    #[serde(deserialize_with = "count")]
    pub unhealthy_after: u32,
    /// Restart the backend once it has been unhealthy this long; `None` means never restart
    /// because of health alone.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub restart_after: Option<Duration>,
    /// How long `starting` may last before it counts as unhealthy.
    #[serde(with = "duration")]
    pub start_timeout: Duration,
}

/// When the backend is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    /// When to restart.
    #[serde(deserialize_with = "choice")]
    pub policy: RestartPolicy,
    /// Delay before the first restart (may be zero); doubles with every consecutive crash.
    #[serde(with = "duration")]
    pub backoff_initial: Duration,
    /// Upper bound of the restart delay; at least `backoff_initial`.
    #[serde(with = "duration")]
    pub backoff_max: Duration,
    /// The warden gives up after more than this many crashes within `window` (at least 1).
    #[serde(deserialize_with = "count")]
    pub max_restarts: u32,
    /// The sliding window in which `max_restarts` is counted.
    #[serde(with = "duration")]
    pub window: Duration,
    /// A run that lasts this long counts as stable and resets the backoff.
    #[serde(with = "duration")]
    pub stable_after: Duration,
}

/// Stopping (`[stop]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StopConfig {
    /// Time the backend gets to exit after a polite stop request before it is killed.
    #[serde(with = "duration")]
    pub grace: Duration,
    /// An http URL that asks the backend to shut down (POSTed first); `None`: signals only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Log files (`[logs]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Folder for log files; a relative path is resolved by the caller against the config
    /// file's folder. `None` means the app's default.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    pub dir: Option<PathBuf>,
    /// Size in bytes at which the live log file is rotated (at least 1000).
    #[serde(with = "size")]
    pub max_size: u64,
    /// Number of rotated files kept besides the live one (at least 1).
    #[serde(deserialize_with = "keep")]
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

/// Largest `logs.keep`: every rotation renames each kept file.
const MAX_LOG_KEEP: i128 = 100;
/// Largest count (`unhealthy_after`, `max_restarts`).
const MAX_COUNT: i128 = 1_000_000;
/// Largest duration of any key: a day. Anything longer is a typo, and a deadline that far is
/// as good as none; far larger values would overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

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
        Config::read(text, path, None)
    }

    /// Parse, derive the types, validate; with `folders`, also check that the folders the
    /// config names which exist are folders, resolved against `folders`.
    fn read(text: &str, path: &Path, folders: Option<&Path>) -> Result<Config, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let invalid = |issue: Issue| {
            let (line, column) = line_col(text, issue.at);
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                key: issue.key,
                message: issue.message,
            }
        };
        let doc =
            DeTable::parse(text).map_err(|err| {
                let at = err.span().map_or(0, |span| span.start);
                invalid(windows_path_hint(text, at).unwrap_or_else(|| {
                    Issue::new(at, "", format!("invalid TOML: {}", err.message()))
                }))
            })?;
        let config = derive(&doc).map_err(invalid)?;
        let issue = validate::check(&config, doc.get_ref())
            .or_else(|| folders.and_then(|base| validate::folders(&config, doc.get_ref(), base)));
        match issue {
            Some(issue) => Err(invalid(issue)),
            None => Ok(config),
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
        Config::read(&text, path, Some(path.parent().unwrap_or(Path::new("."))))
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
    include_str!("template.toml")
}

// ---------------------------------------------------------------------------------------------
// Values: what each kind of key reads, in serde's terms. A visitor says what it expects; a
// value of another kind gets serde's "invalid type" error, which `explain` turns into a message
// that names the kind found and how to write the value instead.

/// Expected by a duration key.
const EXPECT_DURATION: &str = "a duration string with a unit, like \"250ms\", \"2s\" or \"1m\"";
/// Expected by `logs.max_size`.
const EXPECT_SIZE: &str = "a size like \"10MB\" or a number of bytes";
/// Expected by `backend.env`.
const EXPECT_ENV: &str = "a table of strings, like env = { PYTHONUNBUFFERED = \"1\" }";
/// Expected by `backend.env_file`.
const EXPECT_ENV_FILE: &str = "a path string like \".env.local\", or false for no env file";

/// `#[serde(with)]` for a duration: "500ms", "2s", "1m30s" (see [`parse_duration`]).
mod duration {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECT_DURATION)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                parse_duration(text).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// `#[serde(with)]` for an optional duration.
mod opt_duration {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        duration::deserialize(d).map(Some)
    }
}

/// `#[serde(with)]` for a size in bytes: "10MB", "512KiB" or a plain number of bytes.
mod size {
    use super::*;

    pub(super) fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(*bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct Size;
        impl Visitor<'_> for Size {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECT_SIZE)
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<u64, E> {
                Ok(bytes)
            }
            // A negative or larger number goes to serde's "invalid type" (see `mismatch`).
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
                u64::try_from(n).map_err(|_| E::invalid_type(de::Unexpected::Signed(n), &self))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
                parse_size(text).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {text:?}: expected a number with a unit, like \"10MB\" \
                         or \"512KiB\", or a plain number of bytes"
                    ))
                })
            }
        }
        d.deserialize_any(Size)
    }
}

/// An integer from `min` to `max`: the range is part of what the key expects, and a number
/// outside its type's range could not be kept for a later check.
fn integer<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
    d: D,
    min: i128,
    max: i128,
) -> Result<T, D::Error> {
    struct Between(i128, i128);
    impl Visitor<'_> for Between {
        type Value = i128;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an integer from {} to {}", self.0, self.1)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<i128, E> {
            self.visit_i128(n.into())
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<i128, E> {
            self.visit_i128(n.into())
        }
        // Beyond i128, serde's "invalid type" goes to `mismatch`, which words it the same.
        fn visit_i128<E: de::Error>(self, n: i128) -> Result<i128, E> {
            if (self.0..=self.1).contains(&n) {
                return Ok(n);
            }
            let (min, max) = (self.0, self.1);
            Err(E::custom(format!(
                "invalid value {n}: expected an integer from {min} to {max}"
            )))
        }
    }
    let n = d.deserialize_any(Between(min, max))?;
    T::try_from(n).map_err(|_| de::Error::custom(format!("invalid value {n}")))
}

/// A count (`unhealthy_after`, `max_restarts`): 1 to [`MAX_COUNT`].
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    integer(d, 1, MAX_COUNT)
}

/// `logs.keep`: 1 to [`MAX_LOG_KEEP`].
fn keep<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    integer(d, 1, MAX_LOG_KEEP)
}

/// `backend.port`: a TCP port, 1 to 65535.
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    integer(d, 1, u16::MAX.into()).map(Some)
}

/// One of the names of enum `T` (as serde derive spells them), with a did-you-mean hint.
fn choice<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    T::deserialize(text.as_str().into_deserializer()).map_err(|err: de::value::Error| {
        let message = err.to_string();
        let names = expected_names(&message);
        let quoted: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
        let hint = suggest(&text, &names)
            .map(|best| format!("; did you mean \"{best}\"?"))
            .unwrap_or_default();
        de::Error::custom(format!(
            "invalid value {text:?}: expected one of {}{hint}",
            quoted.join(", ")
        ))
    })
}

/// The names in serde's error about a name it does not know ("unknown field `x`, expected one
/// of `a`, `b`"; the same for a variant): the fields or variants the type declares.
fn expected_names(message: &str) -> Vec<&str> {
    message
        .rsplit_once(", expected ")
        .map_or_else(Vec::new, |(_, names)| {
            names.split('`').skip(1).step_by(2).collect()
        })
}

/// The keys of `section` as the types declare them; of `""`, the sections.
fn keys(section: &str) -> Vec<String> {
    let unknown = match section {
        "" => "'' = 0".to_owned(),
        section => format!("[{section}]\n'' = 0"),
    };
    match toml::from_str::<Config>(&unknown) {
        Err(err) => expected_names(err.message())
            .into_iter()
            .map(String::from)
            .collect(),
        Ok(_) => Vec::new(),
    }
}

/// The section whose key `key` is, if any.
fn section_of(key: &str) -> Option<String> {
    keys("")
        .into_iter()
        .find(|section| keys(section).iter().any(|k| k == key))
}

fn ser_opt_path<S: Serializer>(path: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_str(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

/// One mistake: where it is (a byte offset into the text), its dotted key, what is wrong.
struct Issue {
    at: usize,
    key: String,
    message: String,
    /// A consequence of other mistakes (a missing key, a cross-key rule); shown only when
    /// there is no direct mistake, since a typo like `comand` also makes `command` missing.
    secondary: bool,
}

impl Issue {
    fn new(at: usize, key: impl Into<String>, message: String) -> Issue {
        Issue {
            at,
            key: key.into(),
            message,
            secondary: false,
        }
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

/// The entry of the document that a span is on: the key, or the value, or an item of it.
struct Place<'d, 'i> {
    /// The keys from the top of the document down to this entry.
    path: Vec<&'d str>,
    key: &'d Spanned<DeString<'i>>,
    value: &'d Value<'i>,
    /// The span is on the key, not the value.
    on_key: bool,
    /// The span is on this item of the value (an array), counted from 0.
    item: Option<usize>,
}

impl<'d, 'i> Place<'d, 'i> {
    /// The entry whose key, value or item has exactly `span`.
    fn find(table: &'d DeTable<'i>, span: &Range<usize>, path: &mut Vec<&'d str>) -> Option<Self> {
        for (key, value) in table.iter() {
            path.push(key.get_ref().as_ref());
            let item = match value.get_ref() {
                DeValue::Array(items) => items.iter().position(|item| item.span() == *span),
                _ => None,
            };
            if key.span() == *span || value.span() == *span || item.is_some() {
                return Some(Place {
                    path: path.clone(),
                    key,
                    value,
                    on_key: key.span() == *span,
                    item,
                });
            }
            if let DeValue::Table(inner) = value.get_ref()
                && let Some(place) = Place::find(inner, span, path)
            {
                return Some(place);
            }
            path.pop();
        }
        None
    }

    /// The dotted key (an item's is its array's).
    fn key(&self) -> String {
        self.path.join(".")
    }

    /// The value or item the span is on.
    fn value(&self) -> &'d Value<'i> {
        match (self.value.get_ref(), self.item) {
            (DeValue::Array(items), Some(index)) => &items[index],
            _ => self.value,
        }
    }

    fn at(&self) -> usize {
        if self.on_key {
            self.key.span().start
        } else {
            self.value().span().start
        }
    }
}

/// Serde reads a struct from an array too (a tuple of its fields) and a map from a date-time
/// (which toml hands over as a table of one key), so the keys that hold tables, the sections
/// and `backend.env`, are checked to hold tables apart from serde. Returns where the entry
/// starts (`[[backend]]`: before its key) and the mistake.
fn tables_that_are_not(doc: &DeTable<'_>) -> Option<(usize, Issue)> {
    let start =
        |key: &Spanned<DeString<'_>>, value: &Value<'_>| key.span().start.min(value.span().start);
    let sections = keys("");
    for (key, value) in doc.iter() {
        let name: &str = key.get_ref();
        let table = match value.get_ref() {
            DeValue::Table(table) => table,
            other if sections.iter().any(|section| section == name) => {
                let message = format!(
                    "expected a table (a [{name}] section), found {}",
                    describe(other)
                );
                let issue = Issue::new(key.span().start, name, message);
                return Some((start(key, value), issue));
            }
            _ => continue,
        };
        if name == "backend"
            && let Some((key, env)) = table.get_key_value("env")
            && !env.get_ref().is_table()
        {
            let message = format!("expected {EXPECT_ENV}, found {}", describe(env.get_ref()));
            let issue = Issue::new(env.span().start, "backend.env", message);
            return Some((start(key, env), issue));
        }
    }
    None
}

/// The config `doc` describes, or the first mistake in its shape: a key no type has, a value
/// of the wrong kind or form.
fn derive(doc: &Spanned<DeTable<'_>>) -> Result<Config, Issue> {
    // No key takes a float or an integer beyond 128 bits, but toml refuses one it cannot
    // represent (1e400, 2^128) before serde has said what the key expects: serde is handed
    // 0.0 instead, and the message reads the value from the document.
    let mut readable = doc.clone();
    zero_floats_and_huge_integers(readable.get_mut());
    let parsed = Config::deserialize(toml::de::Deserializer::from(readable));
    // Serde stops at its first mistake; one before a table that is not is reported first, and
    // one in that entry is a consequence of it.
    match (parsed, tables_that_are_not(doc.get_ref())) {
        (Ok(config), None) => Ok(config),
        (Ok(_), Some((_, not_table))) => Err(not_table),
        (Err(err), not_table) => {
            let issue = explain(&err, doc.get_ref());
            Err(match not_table {
                Some((start, not_table)) if start <= issue.at => not_table,
                _ => issue,
            })
        }
    }
}

/// Replaces every float and every integer too long for 128 bits in `table` with 0.0 (see
/// [`derive`]).
fn zero_floats_and_huge_integers(table: &mut DeTable<'_>) {
    fn zero(value: &mut DeValue<'_>) {
        match value {
            DeValue::Integer(int)
                if i128::from_str_radix(int.as_str(), int.radix()).is_err()
                    && u128::from_str_radix(int.as_str(), int.radix()).is_err() =>
            {
                *value = DeValue::Float(Default::default());
            }
            DeValue::Float(float) => *float = Default::default(),
            DeValue::Array(items) => items.iter_mut().for_each(|item| zero(item.get_mut())),
            DeValue::Table(table) => zero_floats_and_huge_integers(table),
            _ => {}
        }
    }
    for (_, value) in table.iter_mut() {
        zero(value.get_mut());
    }
}

/// A serde error, in the words of the config: what the key is, where, and what to write.
fn explain(err: &toml::de::Error, doc: &DeTable<'_>) -> Issue {
    let span = err.span().unwrap_or_default();
    let message = err.message();
    let Some(place) = Place::find(doc, &span, &mut Vec::new()) else {
        return Issue::new(span.start, "", message.to_owned());
    };
    let message = if message.starts_with("unknown field `") {
        unknown_key(&place, &expected_names(message))
    } else if let Some((_, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.rsplit_once(", expected "))
    {
        mismatch(expected, &place)
    } else {
        message.to_owned()
    };
    Issue::new(place.at(), place.key(), message)
}

/// A key that is not in its section (or a top-level key that is not a section); `valid` are
/// the keys that are.
fn unknown_key(place: &Place<'_, '_>, valid: &[&str]) -> String {
    let (name, section) = match place.path.split_last() {
        Some((name, section)) => (*name, section.join(".")),
        None => ("", String::new()),
    };
    if section.is_empty() {
        let sections = format!("valid sections: {}", valid.join(", "));
        return match (place.value.get_ref().is_table(), suggest(name, valid)) {
            (true, Some(best)) => {
                format!("unknown section [{name}]; did you mean [{best}]? ({sections})")
            }
            (true, None) => format!("unknown section [{name}] ({sections})"),
            (false, _) => match section_of(name) {
                Some(section) => format!(
                    "unknown top-level key \"{name}\"; it belongs in the [{section}] section"
                ),
                None => format!(
                    "unknown top-level key \"{name}\"; settings go inside a section ({sections})"
                ),
            },
        };
    }
    let hint = match (suggest(name, valid), section_of(name)) {
        (Some(best), _) => format!("; did you mean \"{best}\"?"),
        (None, Some(other)) => format!("; \"{name}\" belongs in the [{other}] section"),
        (None, None) => String::new(),
    };
    format!(
        "unknown key \"{name}\" in [{section}]{hint} (valid keys: {})",
        valid.join(", ")
    )
}

/// A value of the wrong kind: `expected` is what the key's type expects, in serde's words or
/// one of the `EXPECT_*` texts; the message names the kind found and how to write the value.
fn mismatch(expected: &str, place: &Place<'_, '_>) -> String {
    let value = place.value();
    let found = describe(value.get_ref());
    let name = place.path.last().copied().unwrap_or_default();
    let integer = expected.starts_with("an integer");
    let expected = match expected {
        // Serde's own words for the types of the other keys.
        "a boolean" => "true or false",
        "path string" => "a string",
        "a sequence" => "an array of strings",
        expected => expected,
    };
    match value.get_ref() {
        _ if let Some(index) = place.item => format!(
            "expected a string, found {found} (item {} of the array; every argument must be \
             quoted)",
            index + 1
        ),
        other if place.path.len() == 3 && place.path[..2] == ["backend", "env"] => {
            let hint = match other {
                DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                    format!(" (quote it: {name} = \"{}\")", source_text(value))
                }
                _ => String::new(),
            };
            format!("expected a string, found {found}; environment values must be strings{hint}")
        }
        DeValue::Integer(_) | DeValue::Float(_) if expected == EXPECT_DURATION => {
            let number = source_text(value);
            format!(
                "expected {expected}, found the number {number} (write {name} = \"{number}s\" \
                 for seconds)"
            )
        }
        // An integer that fits no type the key is read into.
        DeValue::Integer(_) if integer => {
            format!("invalid value {}: expected {expected}", source_text(value))
        }
        DeValue::Integer(_) if expected == EXPECT_SIZE => format!(
            "invalid size {}: expected a positive number of bytes or a string like \"10MB\"",
            source_text(value)
        ),
        DeValue::String(text) if integer && text.trim().parse::<i64>().is_ok() => format!(
            "expected {expected}, found a string (write {name} = {} without quotes)",
            text.trim()
        ),
        DeValue::String(text) if expected == "an array of strings" => {
            format!("expected {expected}, found a string (write {name} = [{text:?}])")
        }
        _ => format!("expected {expected}, found {found}"),
    }
}

/// `cwd = "C:\src\our-api"`: in a double-quoted TOML string a backslash starts an escape, so
/// the path is a syntax error (`\s`). When the error at byte `at` lies in such a value, the
/// hint says to use single quotes and shows the line rewritten that way.
fn windows_path_hint(text: &str, at: usize) -> Option<Issue> {
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
    Some(Issue::new(
        line_start + open,
        key,
        format!("use single quotes for Windows paths: {suggestion}"),
    ))
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

/// 1-based line and column (in characters) of byte offset `at` in `text`.
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

#[cfg(test)]
mod tests {
    use super::validate::{MAX_ARGS, MAX_STRING};
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

    /// The template and the types cannot drift: every key the template shows is a key of its
    /// section, and every key is in the template, but for a few the README's table explains.
    #[test]
    fn the_template_shows_every_key_and_no_other() {
        const LEFT_TO_THE_README: &[&str] = &[
            "strays.exe_name",
            "watch.paths",
            "watch.include",
            "watch.exclude",
        ];
        let mut section = "";
        let mut shown = std::collections::BTreeSet::new();
        for line in template()
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
        {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            } else if let Some((key, _)) = line.split_once(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                shown.insert(format!("{section}.{key}"));
            }
        }
        let known: std::collections::BTreeSet<String> = keys("")
            .iter()
            .flat_map(|section| {
                keys(section)
                    .into_iter()
                    .map(move |key| format!("{section}.{key}"))
            })
            .collect();
        assert!(known.contains("backend.command") && known.contains("watch.on_change"));
        let unknown: Vec<_> = shown.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "the template shows unknown keys: {unknown:?}"
        );
        let missing: Vec<_> = (known.difference(&shown))
            .filter(|key| !LEFT_TO_THE_README.contains(&key.as_str()))
            .collect();
        assert!(missing.is_empty(), "the template lacks {missing:?}");
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

    /// Property tests: whatever the text, the parser answers, and an error names the file.
    mod properties {
        use std::path::Path;

        use proptest::prelude::*;

        use crate::config::mutations::{TOKENS, apply, edit, fuzz_config};
        use crate::config::{Config, template};

        /// A valid config using every section.
        const FULL_CONFIG: &str = r#"[backend]
command = "python"
args = ["-m", "uvicorn", "app:app", "--reload", "--port", "54112"]
cwd = 'C:\src\our-api'
env = { PYTHONUNBUFFERED = "1", APP_ENV = "dev" }
port = 54112

[health]
url = "http://127.0.0.1:54112/health"
interval = "2s"
timeout = "1s"
unhealthy_after = 3
restart_after = "1m30s"
start_timeout = "60s"

[restart]
policy = "on-failure"
backoff_initial = "500ms"
backoff_max = "30s"
max_restarts = 5
window = "60s"
stable_after = "10s"

[stop]
grace = "5s"

[logs]
dir = "logs"
max_size = "10MB"
keep = 5

[strays]
scan_interval = "5s"
action = "notify"
adopt = false
cmdline_contains = ["app:app"]
exe_name = "python"

[notify]
crashed = true
recovered = false
"#;

        fn token_text() -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(TOKENS), 0..80)
                .prop_map(|t| t.concat())
        }

        /// The parser either accepts the text or says why, naming the file: it never panics.
        fn parse_checked(text: &str) {
            let path = Path::new("/fuzz/config.toml");
            if let Err(e) = Config::parse(text, path) {
                let message = e.to_string();
                assert!(
                    message.starts_with("/fuzz/config.toml"),
                    "error without the file name: {message}"
                );
            }
        }

        #[test]
        fn the_full_config_of_the_property_tests_is_valid() {
            Config::parse(FULL_CONFIG, Path::new("config.toml")).unwrap();
        }

        proptest! {
            #![proptest_config(fuzz_config())]

            #[test]
            fn config_parser_never_panics_on_arbitrary_text(text in any::<String>()) {
                parse_checked(&text);
            }

            #[test]
            fn config_parser_never_panics_on_toml_like_text(text in token_text()) {
                parse_checked(&text);
            }

            #[test]
            fn config_parser_never_panics_on_mutated_valid_configs(
                full in any::<bool>(),
                edits in proptest::collection::vec(edit(), 1..6),
            ) {
                let base = if full { FULL_CONFIG } else { template() };
                parse_checked(&apply(base, &edits));
            }
        }
    }
}
