//! What a copy of the backend is: the *app* a process runs and the project it belongs to, not
//! its literal command line. Pure apart from reading the file system (to resolve a script or a
//! `module:attr` target to the file it names, following symlinks). Imports nothing of the
//! engine.
//!
//! A process's command line is read the way its interpreter or server reads it: the script is
//! the first non-option argument after the interpreter's own options (`python -c "…" main.py`
//! runs no `main.py`), a server's target is its first positional argument, resolved against
//! `--app-dir` / `--chdir` or the working directory. So `python main.py`, `python -m uvicorn
//! main:app`, `.venv/bin/uvicorn main:app` and `uvicorn.exe main:app` are one app (the file
//! `main.py` in the project), and `node node_modules/.bin/json-server` is the `bin.js` it links
//! to. Multiprocessing children (uvicorn's reload and `--workers` processes) carry no app in
//! their command line; they count as copies when they run in the project folder with the
//! backend's interpreter and are orphaned or hold the backend's port (the scanner knows that).

use std::path::{Component, Path, PathBuf};

use crate::backend::process::LaunchSpec;
use crate::config::StraysConfig;

/// Paths compare case-insensitively where the platform's file systems usually do.
const CASE_INSENSITIVE_PATHS: bool = cfg!(any(windows, target_os = "macos"));

/// Python servers that take a `module:attr` target as their first positional argument.
const PY_SERVERS: &[&str] = &["uvicorn", "gunicorn", "hypercorn", "granian", "daphne"];

/// Programs that are a Python interpreter.
const PYTHONS: &[&str] = &["python", "pythonw", "py"];

/// Programs that are Node.js.
const NODES: &[&str] = &["node", "nodejs"];

/// The lowercase name of an executable without directory, `.exe` and version suffix.
pub fn exe_family(name: &str) -> String {
    let file = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .to_lowercase();
    let stem = file.strip_suffix(".exe").unwrap_or(&file);
    stem.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
        .to_string()
}

/// A path made absolute against `base`, symlinks followed where it exists, lowercased where
/// paths are case-insensitive.
pub fn normalize_path(path: &Path) -> PathBuf {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| lexical(path));
    if CASE_INSENSITIVE_PATHS {
        PathBuf::from(path.to_string_lossy().to_lowercase())
    } else {
        path
    }
}

/// `a/./b/../c` → `a/c`, for a path that does not exist.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    normalize_path(&base.join(path))
}

/// Which interpreter or program family runs a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// CPython (python, python3.12, pythonw, py, a console-script launcher of a Python tool).
    Python,
    /// Node.js.
    Node,
    /// Any other program, by its [`exe_family`].
    Program(String),
}

impl Family {
    fn of(program: &str) -> Family {
        let family = exe_family(program);
        if PYTHONS.contains(&family.as_str()) || PY_SERVERS.contains(&family.as_str()) {
            Family::Python
        } else if NODES.contains(&family.as_str()) {
            Family::Node
        } else {
            Family::Program(family)
        }
    }

    fn name(&self) -> &str {
        match self {
            Family::Python => "python",
            Family::Node => "node",
            Family::Program(name) => name,
        }
    }
}

/// The app a process runs: the file its script or target resolves to, or a module name that
/// is not a file of the project (an installed package).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRef {
    /// A source file (symlinks followed).
    File(PathBuf),
    /// A module found on the interpreter's path, not in the folder it was looked for in.
    Module { base: PathBuf, name: String },
}

/// An app and, for a server target, the attribute (`app` in `main:app`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// What it runs.
    pub at: AppRef,
    /// The attribute of a `module:attr` target.
    pub attr: Option<String>,
    /// How it was named, for messages (`main:app`, `main.py`).
    pub named: String,
    /// The server that runs the target (`uvicorn`), if any.
    pub server: Option<String>,
}

impl App {
    fn same_as(&self, other: &App) -> bool {
        let attr_ok = match (&self.attr, &other.attr) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.at == other.at && attr_ok
    }
}

/// What a process's command line says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It runs an app; `debugger` names the debugger that launched it (`debugpy`), if any.
    App {
        app: App,
        debugger: Option<&'static str>,
    },
    /// A multiprocessing child (spawn or fork-server worker, resource tracker): it runs
    /// whatever its parent handed it.
    Worker,
    /// A program that is no interpreter: the arguments that name what it serves.
    Program { markers: Vec<String> },
    /// Nothing that ties it to an app: `python -c "…"`, a REPL, `node -e`.
    Unknown,
}

/// How one process runs, read from its command line and working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The interpreter or program.
    pub family: Family,
    /// What it runs.
    pub role: Role,
}

impl Launch {
    /// Reads `cmd` (argv, with argv\[0\]) as run in `cwd`. `exe` and `name` help tell the
    /// interpreter when argv\[0\] was rewritten.
    pub fn read(cmd: &[String], exe: Option<&Path>, name: &str, cwd: &Path) -> Launch {
        let Some(program) = cmd.first() else {
            return Launch {
                family: Family::Program(exe_family(name)),
                role: Role::Unknown,
            };
        };
        // argv[0] first (a console-script launcher is `uvicorn.exe`), then the executable.
        let family = [
            Some(program.as_str()),
            exe.and_then(Path::to_str),
            Some(name),
        ]
        .into_iter()
        .flatten()
        .map(Family::of)
        .find(|f| !matches!(f, Family::Program(_)))
        .unwrap_or_else(|| Family::of(program));
        let args = &cmd[1..];
        let role = match &family {
            Family::Python => {
                let first = exe_family(program);
                if PY_SERVERS.contains(&first.as_str()) {
                    server_role(&first, args, cwd)
                } else {
                    python_role(args, cwd)
                }
            }
            Family::Node => node_role(args, cwd),
            Family::Program(_) => Role::Program {
                markers: program_markers(args),
            },
        };
        Launch { family, role }
    }
}

/// `python [options] (-m MOD | -c CMD | SCRIPT | -) ARGS…`, as CPython reads it.
fn python_role(args: &[String], cwd: &Path) -> Role {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--multiprocessing-fork" {
            return Role::Worker; // a frozen program's spawn child
        }
        if arg == "--check-hash-based-pycs" {
            i += 2;
            continue;
        }
        if arg == "-" || !arg.starts_with('-') {
            break;
        }
        if arg.starts_with("--") {
            i += 1; // --help, --version: no app
            continue;
        }
        // Short options may be combined (`-uB`); -c, -m, -W and -X take the rest or the next.
        let flags = &arg[1..];
        let mut taken = None;
        for (at, c) in flags.char_indices() {
            if matches!(c, 'c' | 'm' | 'W' | 'X') {
                let rest = &flags[at + c.len_utf8()..];
                let value = if rest.is_empty() {
                    i += 1;
                    args.get(i).cloned()
                } else {
                    Some(rest.to_string())
                };
                taken = Some((c, value));
                break;
            }
        }
        i += 1;
        match taken {
            Some(('m', Some(module))) => return module_role(&module, &args[i..], cwd),
            Some(('c', Some(code))) => return code_role(&code, &args[i..]),
            Some(('m' | 'c', None)) => return Role::Unknown,
            _ => {}
        }
    }
    match args.get(i).map(String::as_str) {
        None | Some("-") => Role::Unknown,
        Some(script) => script_role(script, &args[i + 1..], cwd),
    }
}

/// `python -c CODE ARGS`: a multiprocessing child, or nothing we can tie to an app.
fn code_role(code: &str, rest: &[String]) -> Role {
    let multiprocessing = code.contains("from multiprocessing.spawn import spawn_main")
        || code.contains("from multiprocessing.resource_tracker import main")
        || code.contains("from multiprocessing.forkserver import main")
        || rest.iter().any(|a| a == "--multiprocessing-fork");
    if multiprocessing {
        Role::Worker
    } else {
        Role::Unknown
    }
}

/// `python -m MODULE ARGS`.
fn module_role(module: &str, rest: &[String], cwd: &Path) -> Role {
    if PY_SERVERS.contains(&module) {
        return server_role(module, rest, cwd);
    }
    match module {
        "debugpy" => debugged(debugpy_target(rest), "debugpy", cwd),
        "fastapi" => fastapi_role(rest, cwd),
        _ => Role::App {
            app: App {
                at: resolve_module(cwd, module, true),
                attr: None,
                named: format!("-m {module}"),
                server: None,
            },
            debugger: None,
        },
    }
}

/// `python SCRIPT ARGS`: a console-script launcher of a server, a debugger, or the app.
fn script_role(script: &str, rest: &[String], cwd: &Path) -> Role {
    let family = exe_family(script);
    if PY_SERVERS.contains(&family.as_str()) {
        return server_role(&family, rest, cwd);
    }
    if family == "fastapi" {
        return fastapi_role(rest, cwd);
    }
    let lower = script.replace('\\', "/").to_lowercase();
    if lower.ends_with("pydevd.py") {
        // PyCharm: pydevd.py [options] --file SCRIPT ARGS
        let target = rest
            .iter()
            .position(|a| a == "--file")
            .map(|at| rest[at + 1..].to_vec())
            .unwrap_or_default();
        return debugged(Some(target), "pydevd", cwd);
    }
    if lower.contains("/debugpy/") || lower.ends_with("/debugpy") {
        // VS Code: …/debugpy/launcher PORT -- SCRIPT ARGS, or …/debugpy [options] SCRIPT
        let target = match rest.iter().position(|a| a == "--") {
            Some(at) => Some(rest[at + 1..].to_vec()),
            None => debugpy_target(rest),
        };
        return debugged(target, "debugpy", cwd);
    }
    Role::App {
        app: App {
            at: AppRef::File(resolve(cwd, script)),
            attr: None,
            named: script.to_string(),
            server: None,
        },
        debugger: None,
    }
}

/// The program a debugger runs (python's own arguments: `-m MOD …` or `SCRIPT …`), read as
/// if python ran it, and marked as debugged.
fn debugged(target: Option<Vec<String>>, debugger: &'static str, cwd: &Path) -> Role {
    match target.map(|t| python_role(&t, cwd)) {
        Some(Role::App { app, .. }) => Role::App {
            app,
            debugger: Some(debugger),
        },
        _ => Role::Unknown,
    }
}

/// `debugpy [--listen A] [--connect A] [--wait-for-client] [--configure-X V] [--log-to D]
/// (-m MOD | SCRIPT | --pid N) ARGS`: the part python would run.
fn debugpy_target(args: &[String]) -> Option<Vec<String>> {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "--wait-for-client" | "--log-to-stderr" => i += 1,
            "--pid" | "-c" => return None,
            "-m" => return Some(args[i..].to_vec()),
            _ if arg.starts_with("--") => i += if arg.contains('=') { 1 } else { 2 },
            _ => return Some(args[i..].to_vec()),
        }
    }
    None
}

/// Options of each server that take no value; every other option does (unless `--x=y`).
fn server_flags(server: &str) -> &'static [&'static str] {
    match server {
        "uvicorn" => &[
            "--reload",
            "--factory",
            "--access-log",
            "--no-access-log",
            "--use-colors",
            "--no-use-colors",
            "--proxy-headers",
            "--no-proxy-headers",
            "--server-header",
            "--no-server-header",
            "--date-header",
            "--no-date-header",
            "--version",
            "--help",
        ],
        "gunicorn" => &[
            "--reload",
            "-R",
            "--enable-stdio-inheritance",
            "-D",
            "--daemon",
            "--preload",
            "--check-config",
            "--print-config",
            "--spew",
            "--capture-output",
            "--reuse-port",
            "--no-sendfile",
            "--strip-header-spaces",
            "--suppress-ragged-eofs",
            "--do-handshake-on-connect",
            "-v",
            "--version",
            "-h",
            "--help",
        ],
        "hypercorn" => &["--reload", "--debug", "--verbose", "--help"],
        "granian" => &[
            "--reload",
            "--no-reload",
            "--http1-only",
            "--help",
            "--version",
        ],
        "daphne" => &["-v", "--proxy-headers", "--help"],
        _ => &[],
    }
}

/// `SERVER [options] module:attr [options]`.
fn server_role(server: &str, args: &[String], cwd: &Path) -> Role {
    let flags = server_flags(server);
    let mut base = cwd.to_path_buf();
    let mut target = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg.starts_with('-') && arg.len() > 1 {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (arg, None),
            };
            let value = if inline.is_some() || flags.contains(&name) {
                inline
            } else {
                i += 1;
                args.get(i).cloned()
            };
            if let Some(dir) = value.filter(|_| matches!(name, "--app-dir" | "--chdir")) {
                base = cwd.join(dir);
            }
            i += 1;
            continue;
        }
        if target.is_none() {
            target = Some(arg.to_string());
        }
        i += 1;
    }
    let Some(target) = target else {
        return Role::Unknown;
    };
    let (module, attr) = match target.split_once(':') {
        Some((module, attr)) => (module.to_string(), Some(attr.trim_end_matches("()").into())),
        None => (target.clone(), None),
    };
    Role::App {
        app: App {
            at: resolve_module(&base, &module, false),
            attr,
            named: target,
            server: Some(server.to_string()),
        },
        debugger: None,
    }
}

/// `fastapi run|dev [PATH] [options]`: the app is the file (default `main.py`).
fn fastapi_role(args: &[String], cwd: &Path) -> Role {
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let skip = usize::from(
        positional
            .first()
            .is_some_and(|p| matches!(p.as_str(), "run" | "dev")),
    );
    let path = positional.get(skip).map_or("main.py", |p| p.as_str());
    Role::App {
        app: App {
            at: AppRef::File(resolve(cwd, path)),
            attr: None,
            named: path.to_string(),
            server: Some("fastapi".into()),
        },
        debugger: None,
    }
}

/// `pkg.mod` under `base`: `pkg/mod.py` or the package's `__init__.py` (for `-m`, its
/// `__main__.py`), else the module by name.
fn resolve_module(base: &Path, module: &str, run_as_main: bool) -> AppRef {
    let rel: PathBuf = module.split('.').collect();
    let package_file = if run_as_main {
        "__main__.py"
    } else {
        "__init__.py"
    };
    let candidates = [
        base.join(&rel).with_extension("py"),
        base.join(&rel).join(package_file),
    ];
    match candidates.iter().find(|c| c.is_file()) {
        Some(file) => AppRef::File(normalize_path(file)),
        None => AppRef::Module {
            base: normalize_path(base),
            name: module.to_string(),
        },
    }
}

/// `node [options] SCRIPT ARGS`.
fn node_role(args: &[String], cwd: &Path) -> Role {
    const WITH_VALUE: &[&str] = &[
        "-r",
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
        "-C",
        "--conditions",
        "--title",
        "--inspect-port",
        "--env-file",
    ];
    let mut debugger = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        if matches!(arg, "-e" | "--eval" | "-p" | "--print") {
            return Role::Unknown;
        }
        if arg.starts_with("--inspect") {
            debugger = Some("node --inspect");
        }
        i += if WITH_VALUE.contains(&arg) { 2 } else { 1 };
    }
    match args.get(i).map(String::as_str) {
        None | Some("-") => Role::Unknown,
        Some(script) => Role::App {
            app: App {
                at: AppRef::File(resolve(cwd, script)),
                attr: None,
                named: script.to_string(),
                server: None,
            },
            debugger,
        },
    }
}

/// A program's positional arguments, minus values of options (`--port 54112`).
fn program_markers(args: &[String]) -> Vec<String> {
    let mut markers = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.starts_with('-') {
            let takes_value = !arg.contains('=')
                && args.get(i + 1).is_some_and(|next| !next.starts_with('-'))
                && !matches!(arg.as_str(), "--reload" | "--debug" | "--verbose" | "-v");
            i += if takes_value { 2 } else { 1 };
            continue;
        }
        markers.push(arg.clone());
        i += 1;
    }
    markers
}

/// `uvicorn.run("pkg.mod:app", …)` in a script: the target it serves, so that the server
/// form of the same app is recognised. Only small files are read.
fn served_target(script: &Path) -> Option<String> {
    let meta = std::fs::metadata(script).ok()?;
    if meta.len() > 512 * 1024 {
        return None;
    }
    let text = std::fs::read_to_string(script).ok()?;
    let call = text.find("uvicorn.run(")?;
    let rest = text[call + "uvicorn.run(".len()..].trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let end = rest[1..].find(quote)?;
    let target = &rest[1..1 + end];
    target.contains(':').then(|| target.to_string())
}

/// How a process relates to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Runs the backend's app.
    Copy,
    /// Runs the backend's app under a debugger.
    Debug,
    /// A multiprocessing child in the project with the backend's interpreter: a copy's worker
    /// when it is orphaned or holds the port.
    Worker,
}

/// Why no identity could be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stray detection is off: nothing in [backend] identifies the app (`{0}` alone would match \
     every such program); add [strays] cmdline_contains = [\"...\"] naming your app"
)]
pub struct TooBroad(pub String);

/// What a copy of our backend looks like: the app (one or more names of it), the interpreter
/// family and the project folder, narrowed by explicit `[strays]` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    family: Family,
    /// The backend's working directory: the project.
    project: PathBuf,
    /// The app, under every name it has (script and served target); empty when the rules
    /// alone identify it.
    apps: Vec<App>,
    /// For a program that is no interpreter: its positional arguments.
    markers: Option<Vec<String>>,
    /// Explicit rules: every string must appear in the command line.
    contains: Vec<String>,
    /// Explicit rule: the executable's family.
    exe_name: Option<String>,
    /// Explicit rule: the working directory (instead of the backend's).
    rules_cwd: Option<PathBuf>,
}

impl Identity {
    /// The identity of the backend `spec` launches, narrowed by the `[strays]` rules.
    pub fn new(
        spec: &LaunchSpec,
        rules: &StraysConfig,
        config_dir: &Path,
    ) -> Result<Identity, TooBroad> {
        let cwd = normalize_path(&spec.cwd);
        let mut cmd = vec![spec.program.clone()];
        cmd.extend(spec.args.iter().cloned());
        let launch = Launch::read(&cmd, None, &spec.program, &cwd);
        let rules_cwd = rules.cwd.as_ref().map(|dir| {
            normalize_path(&if dir.is_absolute() {
                dir.clone()
            } else {
                config_dir.join(dir)
            })
        });
        let mut identity = Identity {
            family: launch.family.clone(),
            project: cwd,
            apps: Vec::new(),
            markers: None,
            contains: rules.cmdline_contains.clone(),
            exe_name: rules.exe_name.as_deref().map(exe_family),
            rules_cwd,
        };
        match launch.role {
            Role::App { app, .. } => {
                if let AppRef::File(script) = &app.at
                    && app.server.is_none()
                    && let Some(target) = served_target(script)
                    && let Role::App { app: served, .. } = server_role(
                        "uvicorn",
                        &[target],
                        script.parent().unwrap_or(Path::new("/")),
                    )
                {
                    identity.apps.push(app);
                    if !identity.apps.iter().any(|a| a.same_as(&served)) {
                        identity.apps.push(served);
                    }
                } else {
                    identity.apps.push(app);
                }
            }
            Role::Program { markers }
                if !markers.is_empty()
                    || !crate::config::GENERIC_PROGRAMS.contains(&launch.family.name()) =>
            {
                identity.markers = Some(markers);
            }
            _ if rules.has_rules() && !rules.cmdline_contains.is_empty() => {}
            _ => return Err(TooBroad(cmd.join(" "))),
        }
        Ok(identity)
    }

    /// How `p` (argv, executable, name, working directory) relates to the backend, if at all.
    pub fn judge(
        &self,
        cmd: &[String],
        exe: Option<&Path>,
        name: &str,
        cwd: Option<&Path>,
    ) -> Option<Match> {
        if cmd.is_empty() {
            return None; // kernel threads, zombies, processes we may not inspect
        }
        let cwd = normalize_path(cwd?);
        let launch = Launch::read(cmd, exe, name, &cwd);
        if launch.family != self.family {
            return None;
        }
        if let Some(want) = &self.exe_name {
            let names = [
                Some(exe_family(name)),
                exe.map(|e| exe_family(&e.to_string_lossy())),
                Some(exe_family(&cmd[0])),
            ];
            if !names.iter().flatten().any(|n| n == want) {
                return None;
            }
        }
        if !self.contains.is_empty() {
            let joined = cmd.join(" ");
            let found = |part: &String| {
                if CASE_INSENSITIVE_PATHS {
                    joined.to_lowercase().contains(&part.to_lowercase())
                } else {
                    joined.contains(part.as_str())
                }
            };
            if !self.contains.iter().all(found) {
                return None;
            }
        }
        let in_folder = cwd == *self.rules_cwd.as_ref().unwrap_or(&self.project);
        match (&launch.role, &self.markers) {
            (Role::Worker, _) if self.family == Family::Python => {
                in_folder.then_some(Match::Worker)
            }
            (Role::App { app, debugger }, None) => {
                let same = if self.apps.is_empty() {
                    in_folder // the rules alone identify it
                } else {
                    self.apps.iter().any(|a| a.same_as(app))
                        && (self.rules_cwd.is_none() || in_folder)
                };
                same.then_some(if debugger.is_some() {
                    Match::Debug
                } else {
                    Match::Copy
                })
            }
            (Role::Program { markers }, Some(ours)) => {
                let all = ours
                    .iter()
                    .all(|m| markers.iter().any(|t| same_marker(t, m)));
                (all && in_folder).then_some(Match::Copy)
            }
            (Role::Unknown, None) if self.apps.is_empty() => in_folder.then_some(Match::Copy),
            _ => None,
        }
    }

    /// "python running main:app (uvicorn) in /srv/api": what `config check` prints.
    pub fn describe(&self) -> String {
        let folder = self.rules_cwd.as_ref().unwrap_or(&self.project);
        let what = if let Some(markers) = &self.markers {
            if markers.is_empty() {
                format!("{} ", self.family.name())
            } else {
                format!("{} {} ", self.family.name(), markers.join(" "))
            }
        } else if self.apps.is_empty() {
            format!("{} ", self.family.name())
        } else {
            let names: Vec<String> = self
                .apps
                .iter()
                .map(|a| match &a.server {
                    Some(server) => format!("{} ({server})", a.named),
                    None => a.named.clone(),
                })
                .collect();
            format!("{} running {} ", self.family.name(), names.join(" or "))
        };
        let mut text = format!("a copy is: {what}in {}", folder.display());
        if !self.contains.is_empty() {
            text.push_str(&format!(
                ", with {} in its command line",
                self.contains
                    .iter()
                    .map(|c| format!("{c:?}"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        if let Some(exe) = &self.exe_name {
            text.push_str(&format!(", run by {exe}"));
        }
        if self.family == Family::Python {
            text.push_str("; orphaned workers (multiprocessing children) in that folder too");
        }
        text
    }

    /// The interpreter or program family of the backend.
    pub fn family(&self) -> &Family {
        &self.family
    }

    /// The project folder copies run in (the rules' `cwd`, else the backend's).
    pub fn project(&self) -> &Path {
        self.rules_cwd.as_ref().unwrap_or(&self.project)
    }
}

fn same_marker(arg: &str, marker: &str) -> bool {
    let eq = |a: &str, b: &str| {
        if CASE_INSENSITIVE_PATHS {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    eq(arg, marker)
        || (marker.contains(['/', '\\', '.'])
            && arg.len() > marker.len()
            && eq(&arg[arg.len() - marker.len()..], marker)
            && arg[..arg.len() - marker.len()].ends_with(['/', '\\']))
}

/// Whether a `[strays] cmdline_contains` entry could match programs that only *mention* the
/// app (an editor, a pager, a linter, `tail -f`): a bare file name or path.
pub fn rule_too_loose(part: &str) -> bool {
    let part = part.trim();
    !part.contains(char::is_whitespace)
        && (part.contains(['/', '\\']) || Path::new(part).extension().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A project as users have it: main.py (calling uvicorn.run), other.py, a venv's uvicorn
    /// console script, and a Node app whose `.bin/json-server` links to its `bin.js`.
    struct Project {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Project {
        fn new() -> Project {
            let dir = tempfile::tempdir().unwrap();
            let root = normalize_path(dir.path());
            std::fs::write(
                root.join("main.py"),
                "import uvicorn\napp = object()\nif __name__ == '__main__':\n    \
                 uvicorn.run(\"main:app\", port=54112, reload=True)\n",
            )
            .unwrap();
            std::fs::write(root.join("other.py"), "print('other')\n").unwrap();
            std::fs::write(root.join("lint.py"), "").unwrap();
            std::fs::create_dir_all(root.join(".venv/bin")).unwrap();
            std::fs::write(root.join(".venv/bin/uvicorn"), "#!python\n").unwrap();
            std::fs::create_dir_all(root.join("sub")).unwrap();
            let bin = root.join("node_modules/json-server/lib/cli");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("bin.js"), "").unwrap();
            std::fs::create_dir_all(root.join("node_modules/.bin")).unwrap();
            #[cfg(unix)]
            std::os::unix::fs::symlink(
                "../json-server/lib/cli/bin.js",
                root.join("node_modules/.bin/json-server"),
            )
            .unwrap();
            Project { _dir: dir, root }
        }

        fn path(&self, rel: &str) -> String {
            self.root.join(rel).to_string_lossy().into_owned()
        }
    }

    fn spec(program: &str, args: &[&str], cwd: &Path) -> LaunchSpec {
        LaunchSpec {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: cwd.into(),
            env: BTreeMap::new(),
        }
    }

    fn judge(id: &Identity, cmd: &[&str], cwd: &Path) -> Option<Match> {
        let cmd: Vec<String> = cmd.iter().map(|a| a.to_string()).collect();
        let name = exe_family(&cmd[0]);
        id.judge(&cmd, None, &name, Some(cwd))
    }

    #[test]
    fn exe_families() {
        for (name, family) in [
            ("python3.11", "python"),
            ("/usr/bin/python3", "python"),
            (r"C:\Python312\python.exe", "python"),
            ("PYTHON.EXE", "python"),
            ("uvicorn", "uvicorn"),
            ("node20", "node"),
        ] {
            assert_eq!(exe_family(name), family, "{name}");
        }
    }

    #[test]
    fn every_start_form_is_one_app_under_every_config_form() {
        let p = Project::new();
        let other = Project::new(); // another project with the same files
        let root = p.root.as_path();
        let py = "/usr/bin/python3";
        let venv_py = p.path(".venv/bin/python");
        let uvicorn = p.path(".venv/bin/uvicorn");
        let abs_main = p.path("main.py");
        let configs = [
            spec(&venv_py, &["main.py"], root),
            spec(
                &venv_py,
                &["-m", "uvicorn", "main:app", "--port", "54112"],
                root,
            ),
            spec(&uvicorn, &["main:app", "--reload", "--port", "54112"], root),
        ];
        let sub = p.root.join("sub");
        let spawn =
            "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)";
        // (command line, working directory, verdict)
        let table: Vec<(Vec<&str>, &Path, Option<Match>)> = vec![
            (vec![py, "main.py"], root, Some(Match::Copy)),
            (
                vec![py, "-u", "-X", "dev", "main.py", "--port", "1"],
                root,
                Some(Match::Copy),
            ),
            (vec![py, &abs_main], Path::new("/"), Some(Match::Copy)),
            (
                vec![py, "-m", "uvicorn", "main:app", "--reload"],
                root,
                Some(Match::Copy),
            ),
            (
                vec![py, "-m", "uvicorn", "--port", "9000", "main:app"],
                root,
                Some(Match::Copy),
            ),
            (
                vec![
                    py,
                    "-m",
                    "uvicorn",
                    "main:app",
                    "--workers",
                    "4",
                    "--host",
                    "0.0.0.0",
                ],
                root,
                Some(Match::Copy),
            ),
            (
                vec![py, &uvicorn, "main:app", "--reload"],
                root,
                Some(Match::Copy),
            ),
            (vec![&uvicorn, "main:app"], root, Some(Match::Copy)),
            (
                vec![
                    py,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    root.to_str().unwrap(),
                    "main:app",
                ],
                &sub,
                Some(Match::Copy),
            ),
            (
                vec![py, "-m", "uvicorn", "main:app", "--app-dir=.."],
                &sub,
                Some(Match::Copy),
            ),
            (vec![py, "-m", "main"], root, Some(Match::Copy)),
            (
                vec![py, "-c", spawn, "--multiprocessing-fork"],
                root,
                Some(Match::Worker),
            ),
            (
                vec![
                    py,
                    "-B",
                    "-c",
                    "from multiprocessing.resource_tracker import main;main(5)",
                ],
                root,
                Some(Match::Worker),
            ),
            (
                vec![
                    py,
                    "--multiprocessing-fork",
                    "parent_pid=12",
                    "pipe_handle=40",
                ],
                root,
                Some(Match::Worker),
            ),
            (
                vec![py, "/x/debugpy/launcher", "5678", "--", &abs_main],
                root,
                Some(Match::Debug),
            ),
            (
                vec![
                    py,
                    "-m",
                    "debugpy",
                    "--listen",
                    "5678",
                    "--wait-for-client",
                    "main.py",
                ],
                root,
                Some(Match::Debug),
            ),
            (
                vec![
                    py,
                    "/opt/pycharm/helpers/pydev/pydevd.py",
                    "--multiprocess",
                    "--client",
                    "127.0.0.1",
                    "--port",
                    "1",
                    "--file",
                    &abs_main,
                ],
                root,
                Some(Match::Debug),
            ),
            // Decoys: never a copy.
            (vec![py, "main.py"], &other.root, None),
            (vec![py, "-m", "uvicorn", "main:app"], &other.root, None),
            (
                vec![py, "-c", spawn, "--multiprocessing-fork"],
                &other.root,
                None,
            ),
            (vec![py, "-m", "http.server", "8000"], root, None),
            (vec![py, "other.py"], root, None),
            (
                vec![py, "-c", "import sys; print(sys.argv)", "main.py"],
                root,
                None,
            ),
            (vec![py, "lint.py", "main.py"], root, None),
            (vec![py, "-m", "pylint", "main.py"], root, None),
            (vec!["vim", "main.py"], root, None),
            (vec!["less", "main.py"], root, None),
            (vec!["tail", "-f", "main.py"], root, None),
            (vec!["node", "main.py"], root, None),
            (vec![py, "-m", "uvicorn", "other:app"], root, None),
            (vec![py], root, None),
            (vec![py, "-m", "uvicorn", "main:other_app"], root, None),
        ];
        for config in &configs {
            let id = Identity::new(config, &StraysConfig::default(), Path::new("/")).unwrap();
            for (cmd, cwd, want) in &table {
                let got = judge(&id, cmd, cwd);
                // `main:other_app` is another app only where the config names an attribute.
                let want = if cmd.last() == Some(&"main:other_app") && config.args[0] == "main.py" {
                    Some(Match::Copy)
                } else {
                    *want
                };
                assert_eq!(got, want, "{cmd:?} in {cwd:?} under {:?}", config.args);
            }
        }
    }

    #[test]
    fn node_scripts_resolve_through_symlinks() {
        let p = Project::new();
        let root = p.root.as_path();
        let bin = p.path("node_modules/.bin/json-server");
        for config in [
            spec(
                "node",
                &["node_modules/json-server/lib/cli/bin.js", "db.json"],
                root,
            ),
            spec(
                "/usr/bin/node",
                &["node_modules/.bin/json-server", "db.json"],
                root,
            ),
        ] {
            let id = Identity::new(&config, &StraysConfig::default(), Path::new("/")).unwrap();
            for (cmd, want) in [
                (
                    vec!["node", bin.as_str(), "db.json", "--port", "3000"],
                    Some(Match::Copy),
                ),
                (
                    vec!["node", "node_modules/.bin/json-server"],
                    Some(Match::Copy),
                ),
                (
                    vec!["node", "--inspect", "node_modules/.bin/json-server"],
                    Some(Match::Debug),
                ),
                (vec!["node", "other.js"], None),
                (
                    vec!["node", "-e", "1", "node_modules/.bin/json-server"],
                    None,
                ),
            ] {
                assert_eq!(judge(&id, &cmd, root), want, "{cmd:?}");
            }
        }
    }

    #[test]
    fn explicit_rules_narrow_and_never_drop_family_or_folder() {
        let p = Project::new();
        let other = Project::new();
        let rules = StraysConfig {
            cmdline_contains: vec!["--port 54112".into()],
            ..StraysConfig::default()
        };
        let id = Identity::new(
            &spec("python", &["main.py", "--port", "54112"], &p.root),
            &rules,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            judge(&id, &["python", "main.py", "--port", "54112"], &p.root),
            Some(Match::Copy)
        );
        assert_eq!(
            judge(&id, &["python", "main.py", "--port", "9"], &p.root),
            None,
            "narrowed"
        );
        assert_eq!(
            judge(&id, &["python", "main.py", "--port", "54112"], &other.root),
            None
        );
        assert_eq!(
            judge(&id, &["vim", "main.py", "--port", "54112"], &p.root),
            None
        );
        // A backend that alone is too broad is identified by the rules within its folder.
        let rules = StraysConfig {
            cmdline_contains: vec!["myapp:api".into()],
            ..StraysConfig::default()
        };
        let id = Identity::new(
            &spec("python", &["-m", "uvicorn"], &p.root),
            &rules,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            judge(&id, &["python", "-m", "uvicorn", "myapp:api"], &p.root),
            Some(Match::Copy)
        );
        assert_eq!(
            judge(&id, &["python", "-m", "uvicorn", "myapp:api"], &other.root),
            None
        );
        assert_eq!(judge(&id, &["less", "myapp:api"], &p.root), None);
    }

    #[test]
    fn generic_commands_without_an_app_are_too_broad() {
        let p = Project::new();
        for args in [&["-m", "uvicorn"][..], &[], &["-c", "import x"]] {
            let err = Identity::new(
                &spec("python", args, &p.root),
                &StraysConfig::default(),
                Path::new("/"),
            )
            .unwrap_err();
            assert!(err.to_string().contains("cmdline_contains"), "{err}");
        }
        // A program of its own is specific enough (with its folder).
        let id = Identity::new(
            &spec("./api-server", &["serve"], &p.root),
            &StraysConfig::default(),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            judge(&id, &["/srv/api-server", "serve", "--port", "1"], &p.root),
            Some(Match::Copy)
        );
        assert_eq!(
            judge(&id, &["/srv/api-server", "serve"], Path::new("/")),
            None
        );
    }

    #[test]
    fn the_identity_is_described_in_words() {
        let p = Project::new();
        let id = Identity::new(
            &spec(
                "python",
                &["-m", "uvicorn", "main:app", "--port", "54112"],
                &p.root,
            ),
            &StraysConfig::default(),
            Path::new("/"),
        )
        .unwrap();
        let text = id.describe();
        assert!(
            text.starts_with(&format!(
                "a copy is: python running main:app (uvicorn) in {}",
                p.root.display()
            )),
            "{text}"
        );
        let id = Identity::new(
            &spec("python", &["main.py"], &p.root),
            &StraysConfig::default(),
            Path::new("/"),
        )
        .unwrap();
        assert!(
            id.describe().contains("python running main.py in"),
            "{}",
            id.describe()
        );
    }

    #[test]
    fn a_script_that_serves_another_module_is_that_module_too() {
        let p = Project::new();
        std::fs::create_dir_all(p.root.join("api")).unwrap();
        std::fs::write(p.root.join("api/server.py"), "app = object()\n").unwrap();
        std::fs::write(p.root.join("api/__init__.py"), "").unwrap();
        std::fs::write(
            p.root.join("run.py"),
            "import uvicorn\nuvicorn.run('api.server:app', port=1)\n",
        )
        .unwrap();
        let id = Identity::new(
            &spec("python", &["run.py"], &p.root),
            &StraysConfig::default(),
            Path::new("/"),
        )
        .unwrap();
        assert!(
            id.describe().contains("run.py or api.server:app (uvicorn)"),
            "{}",
            id.describe()
        );
        assert_eq!(
            judge(&id, &["python", "-m", "uvicorn", "api.server:app"], &p.root),
            Some(Match::Copy)
        );
        assert_eq!(
            judge(&id, &["python", "run.py"], &p.root),
            Some(Match::Copy)
        );
        assert_eq!(
            judge(&id, &["python", "-m", "uvicorn", "main:app"], &p.root),
            None
        );
    }

    #[test]
    fn loose_rules_are_those_a_file_argument_matches() {
        for (rule, loose) in [
            ("main.py", true),
            ("src/main.py", true),
            (r"C:\src\api\main.py", true),
            ("manage.py runserver", false),
            ("main:app", false),
            ("our-api", false),
        ] {
            assert_eq!(rule_too_loose(rule), loose, "{rule}");
        }
    }
}
