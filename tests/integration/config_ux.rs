//! Config that fits a new user (issue 16): Windows paths, `.env` files, project detection,
//! reload on save, and the CLI habits that go with them.

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
