//! XDG autostart: `$XDG_CONFIG_HOME/autostart/backend-warden.desktop`.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// Marks the file as ours, so `disable` never removes someone else's entry.
const MARKER: &str = "X-Backend-Warden-Autostart=true";

fn file() -> io::Result<PathBuf> {
    directories::BaseDirs::new()
        .map(|d| {
            d.config_dir()
                .join("autostart")
                .join("backend-warden.desktop")
        })
        .ok_or_else(|| io::Error::other("no home folder"))
}

/// `Exec=` quoting per the Desktop Entry spec: the path in double quotes, with `"`, `` ` ``,
/// `$` and `\` escaped, and `%` doubled.
fn exec_quoted(program: &Path) -> String {
    let mut out = String::from("\"");
    for c in program.to_string_lossy().chars() {
        match c {
            '"' | '`' | '$' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '%' => out.push_str("%%"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `.desktop` file that starts `program` with `args`.
pub fn entry(program: &Path, args: &[OsString]) -> String {
    let mut exec = exec_quoted(program);
    for arg in args {
        exec.push(' ');
        exec.push_str(&exec_quoted(Path::new(arg)));
    }
    format!(
        "[Desktop Entry]\nType=Application\nName=Backend Warden\n\
         Comment=Keeps your local backend alive and honest\nExec={exec}\nTerminal=false\n\
         X-GNOME-Autostart-enabled=true\n{MARKER}\n"
    )
}

pub fn write(entry: &str) -> io::Result<()> {
    let path = file()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, entry)
}

/// Our entry, if there is one.
pub fn read() -> Option<String> {
    file()
        .and_then(std::fs::read_to_string)
        .ok()
        .filter(|text| text.contains(MARKER))
}

pub fn disable() -> io::Result<()> {
    let path = file()?;
    match std::fs::read_to_string(&path) {
        Ok(text) if text.contains(MARKER) => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::other(format!(
            "{} was not written by Backend Warden; leaving it alone",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn location() -> String {
    file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "~/.config/autostart".into())
}

/// `backend-warden`, which becomes the tray.
pub fn program() -> std::io::Result<std::path::PathBuf> {
    crate::paths::main_program()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_paths_are_quoted_and_escaped() {
        assert_eq!(
            exec_quoted(Path::new("/opt/Backend Warden/backend-warden")),
            "\"/opt/Backend Warden/backend-warden\""
        );
        assert_eq!(exec_quoted(Path::new("/a/$b%c")), "\"/a/\\$b%%c\"");
    }
}
