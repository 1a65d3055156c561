//! Where the warden keeps its files: the config file, the log folder and the runtime folder
//! (IPC endpoint, lock), and where this program's siblings are installed. Knows the platform
//! conventions and `BACKEND_WARDEN_HOME`; does no I/O beyond reading the environment and the
//! running program's path.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// Setting this puts everything under one folder: `DIR/config.toml`, `DIR/logs/`, `DIR/run/`.
/// Two homes are two independent instances.
pub const HOME_ENV: &str = "BACKEND_WARDEN_HOME";

/// The folder name under the platform's config/state folders.
#[cfg(target_os = "linux")]
const APP_DIR: &str = "backend-warden";
#[cfg(not(target_os = "linux"))]
const APP_DIR: &str = "Backend Warden";

/// The files and folders of one warden instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The config file (it may not exist).
    pub config_file: PathBuf,
    /// Where `backend.log` and `warden.log` go unless the config says otherwise.
    pub default_log_dir: PathBuf,
    /// Runtime state: the IPC endpoint and anything that must not outlive a reboot.
    pub runtime_dir: PathBuf,
    /// Set when `BACKEND_WARDEN_HOME` chose the folders.
    pub home: Option<PathBuf>,
}

/// The platform gave no home folder to put things in.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot find the user's home folder to keep the config and logs in; set {HOME_ENV} to a folder"
)]
pub struct NoHomeDir;

impl Paths {
    /// The paths for this user: `BACKEND_WARDEN_HOME` if set, else the platform's conventions;
    /// `config_override` (from `--config`) replaces the config file in either case.
    pub fn resolve(config_override: Option<&Path>) -> Result<Paths, NoHomeDir> {
        Paths::resolve_with(None, config_override)
    }

    /// [`Paths::resolve`], with `home_override` (from `--home`) in place of
    /// `BACKEND_WARDEN_HOME`.
    pub fn resolve_with(
        home_override: Option<&Path>,
        config_override: Option<&Path>,
    ) -> Result<Paths, NoHomeDir> {
        let home = home_override
            .map(|home| home.as_os_str().to_os_string())
            .or_else(|| std::env::var_os(HOME_ENV))
            .filter(|v| !v.is_empty());
        let mut paths = match home {
            Some(home) => Paths::under_home(&absolute(Path::new(&home))),
            None => Paths::platform()?,
        };
        if let Some(config) = config_override {
            paths.config_file = absolute(config);
        }
        Ok(paths)
    }

    /// Everything under one folder (what `BACKEND_WARDEN_HOME` selects).
    pub fn under_home(home: &Path) -> Paths {
        Paths {
            config_file: home.join("config.toml"),
            default_log_dir: home.join("logs"),
            runtime_dir: home.join("run"),
            home: Some(home.to_path_buf()),
        }
    }

    fn platform() -> Result<Paths, NoHomeDir> {
        let base = directories::BaseDirs::new().ok_or(NoHomeDir)?;
        let config_dir = base.config_dir().join(APP_DIR);
        // Logs are state, not data: XDG_STATE_HOME on Linux, LOCALAPPDATA on Windows.
        let state_dir = base
            .state_dir()
            .unwrap_or_else(|| base.data_local_dir())
            .join(APP_DIR);
        let runtime_dir = base
            .runtime_dir()
            .map(|d| d.join(APP_DIR))
            .unwrap_or_else(|| state_dir.join("run"));
        Ok(Paths {
            config_file: config_dir.join("config.toml"),
            default_log_dir: state_dir.join("logs"),
            runtime_dir,
            home: None,
        })
    }

    /// What tells this warden apart from another of the same user: `BACKEND_WARDEN_HOME` when
    /// set, else the config file's folder.
    pub fn warden_home(&self) -> PathBuf {
        self.home
            .clone()
            .unwrap_or_else(|| self.config_dir().to_path_buf())
    }

    /// The arguments that make `backend-warden` use these paths whatever its environment:
    /// `--home DIR` when a home chose them, `--config PATH` when the config file is not the
    /// usual one. What a login entry passes, so that it starts this same warden.
    pub fn launch_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        let usual_config = match &self.home {
            Some(home) => {
                args.extend(["--home".into(), home.as_os_str().to_os_string()]);
                Some(Paths::under_home(home).config_file)
            }
            None => Paths::platform().ok().map(|p| p.config_file),
        };
        if usual_config.as_ref() != Some(&self.config_file) {
            args.extend([
                "--config".into(),
                self.config_file.as_os_str().to_os_string(),
            ]);
        }
        args
    }

    /// The folder relative paths in the config are resolved against.
    pub fn config_dir(&self) -> &Path {
        self.config_file.parent().unwrap_or(Path::new("."))
    }

    /// `path` from the config, made absolute against the config file's folder.
    pub fn resolve_config_relative(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.config_dir().join(path)
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The command-line program: CLI, headless warden and the helpers (guardian, demo backend).
pub const MAIN_PROGRAM: &str = "backend-warden";
/// The program with the tray icon, installed beside [`MAIN_PROGRAM`].
pub const TRAY_PROGRAM: &str = "backend-warden-tray";

/// The executable that answers the hidden helper subcommands (the guardian, `demo-backend`)
/// and that starts at login: this program, or, when this is the tray program, the
/// `backend-warden` beside it, so that helpers never load the tray's GUI libraries.
pub fn main_program() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.file_stem().is_some_and(|stem| stem == TRAY_PROGRAM) {
        sibling_program(MAIN_PROGRAM)
    } else {
        Ok(exe)
    }
}

/// `name` (plus `.exe` on Windows) in the folder this program runs from.
pub fn sibling_program(name: &str) -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("this program's path has no folder"))?;
    Ok(dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_puts_everything_under_one_folder() {
        let p = Paths::under_home(Path::new("/tmp/w"));
        assert_eq!(p.config_file, Path::new("/tmp/w/config.toml"));
        assert_eq!(p.default_log_dir, Path::new("/tmp/w/logs"));
        assert_eq!(p.runtime_dir, Path::new("/tmp/w/run"));
    }

    #[test]
    fn launch_args_name_what_is_not_usual() {
        let mut p = Paths::under_home(Path::new("/tmp/w"));
        assert_eq!(p.launch_args(), ["--home", "/tmp/w"]);
        p.config_file = PathBuf::from("/etc/w.toml");
        assert_eq!(
            p.launch_args(),
            ["--home", "/tmp/w", "--config", "/etc/w.toml"]
        );
        if let Ok(platform) = Paths::platform() {
            assert!(platform.launch_args().is_empty());
        }
    }

    #[test]
    fn config_relative_paths_resolve_against_the_config_folder() {
        let p = Paths::under_home(Path::new("/tmp/w"));
        assert_eq!(
            p.resolve_config_relative(Path::new("api")),
            Path::new("/tmp/w/api")
        );
        assert_eq!(
            p.resolve_config_relative(Path::new("/srv/api")),
            Path::new("/srv/api")
        );
    }
}
