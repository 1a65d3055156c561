//! Config that fits a new user (issue 16): Windows paths, `.env` files, project detection,
//! reload on save, and the CLI habits that go with them.

use std::time::Duration;

use crate::support::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A Windows path in double quotes is a TOML escape error; the warden says what to write.
#[test]
fn a_windows_path_in_double_quotes_says_to_use_single_quotes() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        "[backend]\ncommand = \"python\"\ncwd = \"C:\\src\\our-api\"\n",
    )
    .unwrap();
    let out = cli_in(home.path(), &["config", "check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!(
            "backend-warden: config error: {}:3:7: backend.cwd: use single quotes for Windows \
             paths: cwd = 'C:\\src\\our-api'\n",
            config.display()
        )
    );
    // The warden itself refuses to start with the same words.
    let out = cli_in(home.path(), &["run", "--headless"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("use single quotes for Windows paths: cwd = 'C:\\src\\our-api'"),
        "{out:?}"
    );
}

/// A backend that prints the variables the env tests look at, then idles.
const PRINT_ENV: &str = "import os, time\n\
for k in ['FROM_FILE', 'BOTH', 'EXPANDED', 'EXPANDED_IN_FILE', 'CUSTOM']:\n    \
print(k + '=' + os.environ.get(k, '<unset>'), flush=True)\n\
time.sleep(600)\n";

/// Waits until backend.log has `want` (all lines) after its `nth` start note; returns the log.
fn wait_for_env(w: &Warden, nth: usize, want: &[&str]) -> String {
    let log = w.log_path("backend.log");
    wait_until(
        Duration::from_secs(20),
        &format!("{want:?} in {}", log.display()),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            let run = text.split("backend started").nth(nth)?;
            want.iter().all(|line| run.contains(line)).then_some(text)
        },
    )
}

/// `.env` in the backend's cwd is read by default; `backend.env` overrides it; `${VAR}`
/// expands from the warden's environment; `status` names the file; `env_file` picks another.
#[test]
fn env_file_precedence_and_expansion() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("print_env.py"), PRINT_ENV).unwrap();
    std::fs::write(
        project.path().join(".env"),
        "FROM_FILE=file\nBOTH=file\nEXPANDED_IN_FILE=${BW_T16_OUTER}/x\n",
    )
    .unwrap();
    std::fs::write(
        project.path().join("custom.env"),
        "CUSTOM=custom\nBOTH=custom\n",
    )
    .unwrap();
    let config = |extra: &str| {
        format!(
            "[backend]\ncommand = {}\nargs = ['print_env.py']\ncwd = {}\n{extra}\n\
             env = {{ BOTH = 'config', EXPANDED = '${{BW_T16_OUTER}}-y' }}\n",
            toml_str(&python().to_string_lossy()),
            toml_str(&project.path().to_string_lossy()),
        )
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), config("")).unwrap();
    let mut w = Warden::start_with_env(home, &[("BW_T16_OUTER", "outer")]);
    w.healthy();
    wait_for_env(
        &w,
        1,
        &[
            "FROM_FILE=file",
            "BOTH=config",
            "EXPANDED=outer-y",
            "EXPANDED_IN_FILE=outer/x",
            "CUSTOM=<unset>",
        ],
    );
    let dot_env = project.path().join(".env");
    let status = w.status();
    assert_eq!(
        status["env_file"],
        dot_env.to_string_lossy().as_ref(),
        "{status}"
    );
    let human = text(&w.cli(&["status"]).stdout);
    assert!(
        human.contains(&format!("env file   {}", dot_env.display())),
        "{human}"
    );

    // Another file, named in the config: it replaces .env, and backend.env still wins.
    std::fs::write(
        w.home().join("config.toml"),
        config("env_file = 'custom.env'"),
    )
    .unwrap();
    let out = w.cli(&["config", "reload"]);
    assert!(out.status.success(), "{out:?}");
    wait_for_env(
        &w,
        2,
        &["FROM_FILE=<unset>", "BOTH=config", "CUSTOM=custom"],
    );
    let custom = project.path().join("custom.env");
    wait_until(Duration::from_secs(20), "status names custom.env", || {
        (w.status()["env_file"] == custom.to_string_lossy().as_ref()).then_some(())
    });

    // No file at all.
    std::fs::write(w.home().join("config.toml"), config("env_file = false")).unwrap();
    assert!(w.cli(&["config", "reload"]).status.success());
    wait_for_env(
        &w,
        3,
        &["FROM_FILE=<unset>", "CUSTOM=<unset>", "BOTH=config"],
    );
    wait_until(Duration::from_secs(20), "status names no env file", || {
        w.status()["env_file"].is_null().then_some(())
    });
}
