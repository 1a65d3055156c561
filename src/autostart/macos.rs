//! macOS: a LaunchAgent in `~/Library/LaunchAgents`.

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

pub fn enable(program: &Path) -> io::Result<()> {
    let path = file()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let plist = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\"><dict>\n\
         <key>Label</key><string>{LABEL}</string>\n\
         <key>ProgramArguments</key><array><string>{}</string></array>\n\
         <key>RunAtLoad</key><true/>\n\
         </dict></plist>\n",
        xml_escape(&program.to_string_lossy())
    );
    std::fs::write(path, plist)
}

pub fn disable() -> io::Result<()> {
    match std::fs::remove_file(file()?) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn is_enabled() -> bool {
    file().is_ok_and(|p| p.exists())
}

pub fn location() -> String {
    file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "~/Library/LaunchAgents".into())
}

/// `backend-warden`, which becomes the tray.
pub fn program() -> std::io::Result<std::path::PathBuf> {
    crate::process::main_program()
}
