//! `config init --detect DIR`: looks at a project folder (a virtualenv, `main.py` / `app.py` /
//! `manage.py`, `pyproject.toml` scripts, a FastAPI or uvicorn app, `.env`'s `PORT`, a
//! `package.json` start script) and writes the config that runs it, saying what it found and
//! what it guessed. Reads files in that folder only; imports `envfile` (for `.env`), `toml`
//! and `serde_json`.

use std::fmt::Write as _;
use std::path::Path;

use crate::backend::envfile::{self, EnvFileSpec};

/// The interpreter inside a virtualenv, relative to the venv's folder.
const VENV_PYTHON: &str = if cfg!(windows) {
    "Scripts\\python.exe"
} else {
    "bin/python"
};

/// The virtualenv's folder of programs (console scripts live there).
const VENV_BIN: &str = if cfg!(windows) { "Scripts" } else { "bin" };

/// npm is a batch file on Windows, and the backend runs without a shell.
const NPM: &str = if cfg!(windows) { "npm.cmd" } else { "npm" };

/// What `detect` made of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Facts read from the project's files.
    pub found: Vec<String>,
    /// Choices made without evidence: the user should check them.
    pub guessed: Vec<String>,
    /// The config to write; `None` when nothing to run was found.
    pub config: Option<String>,
}

/// How the backend is started.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `python FILE` (a script that serves by itself, e.g. with `uvicorn.run`).
    Script { file: String, web: bool },
    /// `python -m uvicorn MODULE:VAR`.
    Asgi { module: String, var: String },
    /// `python manage.py runserver`.
    Django,
    /// A `pyproject.toml` script: the venv's program of that name, or its entry point.
    ConsoleScript { name: String, entry: String },
    /// `npm run SCRIPT`.
    Npm { script: String },
}

/// Looks at `dir` and works out how to run its backend.
pub fn detect(dir: &Path) -> Detection {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found = Vec::new();
    let mut guessed = Vec::new();

    let venv = [".venv", "venv"]
        .iter()
        .map(|name| dir.join(name))
        .find(|venv| venv.join(VENV_PYTHON).is_file());
    let python = match &venv {
        Some(venv) => {
            let python = venv.join(VENV_PYTHON);
            found.push(format!("virtualenv {}", python.display()));
            python.to_string_lossy().into_owned()
        }
        None => String::new(),
    };

    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let mut target = None;
    let mut code_port = None;
    let mut sources = String::new();
    for file in ["main.py", "app.py"] {
        let Some(text) = read(file) else { continue };
        let module = file.trim_end_matches(".py").to_owned();
        if let Some(call) = text.find("uvicorn.run(") {
            found.push(format!("{file} serves itself (uvicorn.run)"));
            code_port = port_argument(&text[call..]);
            target = Some(Target::Script {
                file: file.into(),
                web: true,
            });
        } else if let Some(var) = fastapi_app(&text) {
            found.push(format!("FastAPI app `{var} = FastAPI()` in {file}"));
            target = Some(Target::Asgi { module, var });
        } else if text.contains("__main__") {
            found.push(format!("{file} runs as a script (__main__)"));
            target = Some(Target::Script {
                file: file.into(),
                web: false,
            });
        } else {
            continue;
        }
        sources = text;
        break;
    }
    if target.is_none() && read("manage.py").is_some() {
        found.push("Django project (manage.py)".into());
        target = Some(Target::Django);
    }
    if target.is_none()
        && let Some((name, entry)) = read("pyproject.toml").and_then(|t| pyproject_script(&t))
    {
        found.push(format!("pyproject.toml script `{name} = \"{entry}\"`"));
        target = Some(Target::ConsoleScript { name, entry });
    }
    if target.is_none()
        && let Some(script) = read("package.json").and_then(|t| npm_script(&t))
    {
        found.push(format!("package.json script `{script}`"));
        target = Some(Target::Npm { script });
    }
    let Some(target) = target else {
        return Detection {
            found,
            guessed,
            config: None,
        };
    };

    // Other Python files in the folder may hold the routes (an app split in modules).
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "py")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                sources.push_str(&text);
            }
        }
    }

    let python_program = |guessed: &mut Vec<String>| {
        if python.is_empty() {
            guessed.push(
                "no virtualenv (.venv or venv): runs `python` from PATH, which must have the \
                 backend's packages"
                    .into(),
            );
            "python".to_owned()
        } else {
            python.clone()
        }
    };

    let env_port = envfile::read(&EnvFileSpec {
        path: envfile::default_path(&dir),
        required: false,
    })
    .ok()
    .and_then(|(vars, _)| vars.get("PORT").and_then(|p| p.trim().parse::<u16>().ok()));
    let is_web = !matches!(
        target,
        Target::Script { web: false, .. } | Target::ConsoleScript { .. }
    );
    let port = match (env_port, code_port) {
        (Some(port), _) => {
            found.push(format!(".env sets PORT={port}"));
            Some(port)
        }
        (None, Some(port)) => {
            found.push(format!("port {port} in the uvicorn.run call"));
            Some(port)
        }
        (None, None) if is_web => {
            let port = if matches!(target, Target::Npm { .. }) {
                3000
            } else {
                8000
            };
            guessed.push(format!("port {port} (the usual default; no PORT in .env)"));
            Some(port)
        }
        (None, None) => None,
    };

    let (command, args) = match &target {
        Target::Script { file, .. } => (python_program(&mut guessed), vec![file.clone()]),
        Target::Asgi { module, var } => {
            let mut args = vec![
                "-m".to_owned(),
                "uvicorn".into(),
                format!("{module}:{var}"),
                "--host".into(),
                "127.0.0.1".into(),
            ];
            if let Some(port) = port {
                args.extend(["--port".to_owned(), port.to_string()]);
            }
            (python_program(&mut guessed), args)
        }
        Target::Django => (
            python_program(&mut guessed),
            vec![
                "manage.py".into(),
                "runserver".into(),
                format!("127.0.0.1:{}", port.unwrap_or(8000)),
            ],
        ),
        Target::ConsoleScript { name, entry } => {
            let program = venv
                .as_ref()
                .map(|venv| venv.join(VENV_BIN).join(name))
                .filter(|p| p.is_file() || p.with_extension("exe").is_file());
            match program {
                Some(program) => {
                    found.push(format!("the script installed at {}", program.display()));
                    (program.to_string_lossy().into_owned(), Vec::new())
                }
                None => {
                    let (module, func) = entry.split_once(':').unwrap_or((entry, "main"));
                    guessed.push(format!(
                        "`{name}` is not installed in a virtualenv: runs {module}.{func}() \
                         through Python"
                    ));
                    let code =
                        format!("import sys; from {module} import {func}; sys.exit({func}())");
                    (python_program(&mut guessed), vec!["-c".into(), code])
                }
            }
        }
        Target::Npm { script } => (NPM.to_owned(), vec!["run".into(), script.clone()]),
    };

    let health = match port {
        Some(port) if is_web => {
            let path = if sources.contains("\"/health\"") || sources.contains("'/health'") {
                found.push("a /health route".into());
                "/health"
            } else if matches!(target, Target::Asgi { .. }) {
                guessed.push("health URL /docs (FastAPI's docs page; no /health route)".into());
                "/docs"
            } else {
                guessed.push("health URL / (no /health route seen)".into());
                "/"
            };
            Some(format!("http://127.0.0.1:{port}{path}"))
        }
        _ => None,
    };

    let mut config = String::new();
    let _ = writeln!(
        config,
        "# backend-warden configuration, written by `backend-warden config init --detect`\n\
         # from {}.",
        dir.display()
    );
    for line in &found {
        let _ = writeln!(config, "# found:   {line}");
    }
    for line in &guessed {
        let _ = writeln!(config, "# guessed: {line} (check this)");
    }
    let _ = writeln!(
        config,
        "# Every other setting has its default; `backend-warden config check` prints them all.\n\
         \n[backend]\ncommand = {}",
        quote(&command)
    );
    if !args.is_empty() {
        let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
        let _ = writeln!(config, "args = [{}]", args.join(", "));
    }
    let _ = writeln!(config, "cwd = {}", quote(&dir.to_string_lossy()));
    if let Some(port) = port {
        let _ = writeln!(config, "port = {port}");
    }
    if let Some(url) = health {
        let _ = writeln!(config, "\n[health]\nurl = {}", quote(&url));
    }
    Detection {
        found,
        guessed,
        config: Some(config),
    }
}

/// A TOML string: single quotes (no escapes, so Windows paths stay as written) unless the text
/// holds a single quote or a line break.
fn quote(text: &str) -> String {
    if text.contains(['\'', '\n', '\r']) {
        toml::Value::String(text.to_owned()).to_string()
    } else {
        format!("'{text}'")
    }
}

/// The variable in a line like `app = FastAPI(...)`.
fn fastapi_app(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (var, value) = line.split_once('=')?;
        let var = var.trim();
        let is_name = !var.is_empty()
            && !line.starts_with([' ', '\t'])
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        (is_name && value.trim_start().starts_with("FastAPI(")).then(|| var.to_owned())
    })
}

/// `port=8000` in the arguments of the call that `call` starts with.
fn port_argument(call: &str) -> Option<u16> {
    let call = &call[..call.find(')').unwrap_or(call.len())];
    let at = call.find("port")? + "port".len();
    let rest = call[at..].trim_start().strip_prefix('=')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The first `[project.scripts]` (or `[tool.poetry.scripts]`) entry: its name and entry point.
fn pyproject_script(text: &str) -> Option<(String, String)> {
    let doc: toml::Table = text.parse().ok()?;
    let scripts = doc
        .get("project")
        .and_then(|p| p.get("scripts"))
        .or_else(|| {
            doc.get("tool")
                .and_then(|t| t.get("poetry"))
                .and_then(|p| p.get("scripts"))
        })?
        .as_table()?;
    scripts
        .iter()
        .find_map(|(name, entry)| Some((name.clone(), entry.as_str()?.to_owned())))
}

/// `start`, else `dev`, from `package.json`'s scripts.
fn npm_script(text: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let scripts = doc.get("scripts")?.as_object()?;
    ["start", "dev"]
        .into_iter()
        .find(|name| scripts.get(*name).is_some_and(|s| s.is_string()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastapi_variables() {
        for (text, want) in [
            ("app = FastAPI()\n", Some("app")),
            ("api=FastAPI(title='x')\n", Some("api")),
            ("    app = FastAPI()\n", None),
            ("app = Flask(__name__)\n", None),
            ("# app = FastAPI()\n", None),
        ] {
            assert_eq!(fastapi_app(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn ports_in_uvicorn_run() {
        for (call, want) in [
            (
                "uvicorn.run(app, host='127.0.0.1', port=54112)",
                Some(54112),
            ),
            (
                "uvicorn.run('main:app', port = 8001, reload=True)",
                Some(8001),
            ),
            ("uvicorn.run(app)\nport=9", None),
            ("uvicorn.run(app, port=int(os.environ['PORT']))", None),
        ] {
            assert_eq!(port_argument(call), want, "{call}");
        }
    }

    #[test]
    fn quoting_keeps_windows_paths_literal() {
        assert_eq!(quote(r"C:\src\our-api"), r"'C:\src\our-api'");
        assert_eq!(quote("it's"), r#""it's""#);
    }

    #[test]
    fn scripts_from_manifests() {
        assert_eq!(
            pyproject_script("[project.scripts]\nserve = \"api.cli:main\"\n"),
            Some(("serve".into(), "api.cli:main".into()))
        );
        assert_eq!(
            pyproject_script("[tool.poetry.scripts]\nrun = \"app:go\"\n"),
            Some(("run".into(), "app:go".into()))
        );
        assert_eq!(pyproject_script("[project]\nname = \"x\"\n"), None);
        assert_eq!(
            npm_script(r#"{"scripts": {"dev": "vite", "start": "node server.js"}}"#),
            Some("start".into())
        );
        assert_eq!(
            npm_script(r#"{"scripts": {"dev": "node server.js"}}"#),
            Some("dev".into())
        );
        assert_eq!(npm_script(r#"{"scripts": {"test": "jest"}}"#), None);
    }
}
