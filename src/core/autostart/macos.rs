//! macOS: a LaunchAgent in `~/Library/LaunchAgents`.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

const LABEL: &str = "dev.backend-warden";

fn file() -> io::Result<PathBuf> {
    directories::BaseDirs::new()
        .map(|d| {
            d.home_dir()
                .join("Library/LaunchAgents")
                .join(format!("{LABEL}.plist"))
        })
        .ok_or_else(|| io::Error::other("no home folder"))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The LaunchAgent that starts `program` with `args`.
pub fn entry(program: &Path, args: &[OsString]) -> String {
    let mut arguments = format!(
        "<string>{}</string>",
        xml_escape(&program.to_string_lossy())
    );
    for arg in args {
        arguments.push_str(&format!(
            "<string>{}</string>",
            xml_escape(&arg.to_string_lossy())
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\"><dict>\n\
         <key>Label</key><string>{LABEL}</string>\n\
         <key>ProgramArguments</key><array>{arguments}</array>\n\
         <key>RunAtLoad</key><true/>\n\
         </dict></plist>\n"
    )
}

pub fn write(entry: &str) -> io::Result<()> {
    let path = file()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, entry)
}

/// Our LaunchAgent, if there is one.
pub fn read() -> Option<String> {
    file().and_then(std::fs::read_to_string).ok()
}

pub fn disable() -> io::Result<()> {
    match std::fs::remove_file(file()?) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn location() -> String {
    file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "~/Library/LaunchAgents".into())
}

/// `backend-warden`, which becomes the tray.
pub fn program() -> std::io::Result<std::path::PathBuf> {
    crate::paths::main_program()
}
