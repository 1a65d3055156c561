//! Reads `backend.log` for the `logs` command: the last N lines (reaching into the rotated
//! files when the live one has fewer), everything kept, or the log as it grows. Following
//! goes by file identity, not by name or size: a handle keeps reading the file it opened
//! after a rotation renames it, and the files rotated in between are read in order, so every
//! line is printed exactly once however fast the log rotates (as long as a file is not
//! rotated away, past `logs.keep`, between two looks). May import `std` and
//! `crate::private_fs`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::private_fs::{self, FileId};

/// Lines printed by default.
pub const DEFAULT_LINES: usize = 50;

/// Most rotated files looked for (`logs.keep` is at most 100).
const MAX_ROTATED: usize = 100;

/// How often a followed log is looked at.
const POLL: Duration = Duration::from_millis(100);

/// `backend.log` and its rotated files `backend.log.1` (newest) ... `backend.log.K`.
#[derive(Debug, Clone)]
pub struct LogFiles {
    live: PathBuf,
}

/// A file being read: its handle, identity and how far it has been read.
struct Reading {
    file: File,
    id: FileId,
    pos: u64,
}

impl LogFiles {
    /// The log whose live file is `live`.
    pub fn new(live: &Path) -> LogFiles {
        LogFiles {
            live: live.to_path_buf(),
        }
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.live.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// The live file, then the rotated ones newest first, as far as they go (a gap ends it).
    fn open_all(&self) -> io::Result<Vec<(File, FileId)>> {
        let mut files = Vec::new();
        for n in 0..=MAX_ROTATED {
            let path = if n == 0 {
                self.live.clone()
            } else {
                self.rotated(n)
            };
            match File::open(&path) {
                Ok(file) => {
                    let id = private_fs::identity(&file)?;
                    files.push((file, id));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && n > 0 => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    }

    /// Prints everything kept, oldest first. False when there is no log at all.
    pub fn print_all(&self, out: &mut impl Write) -> io::Result<bool> {
        let files = self.open_all()?;
        for (file, _) in files.iter().rev() {
            let mut file = file;
            io::copy(&mut file, out)?;
        }
        Ok(!files.is_empty())
    }

    /// Prints the last `n` lines (from the rotated files too when the live one has fewer).
    /// False when there is no log at all.
    pub fn print_tail(&self, n: usize, out: &mut impl Write) -> io::Result<bool> {
        Ok(self.tail(n, out)?.is_some())
    }

    /// Prints the last `n` lines; the live file's reader, positioned after them.
    fn tail(&self, n: usize, out: &mut impl Write) -> io::Result<Option<Reading>> {
        let mut files = self.open_all()?;
        if files.is_empty() {
            return Ok(None);
        }
        let live_exists = File::open(&self.live).is_ok();
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let mut wanted = n;
        let mut live_end = 0;
        for (index, (file, _)) in files.iter_mut().enumerate() {
            let len = file.metadata()?.len();
            if index == 0 {
                live_end = len;
            }
            if wanted == 0 {
                break;
            }
            let (bytes, lines) = last_lines(file, len, wanted)?;
            wanted -= lines;
            pieces.push(bytes);
        }
        for piece in pieces.iter().rev() {
            out.write_all(piece)?;
        }
        out.flush()?;
        if !live_exists {
            return Ok(None);
        }
        let (file, id) = files.swap_remove(0);
        Ok(Some(Reading {
            file,
            id,
            pos: live_end,
        }))
    }

    /// Prints the last `n` lines (everything with `all`), then every line written after
    /// them, until `out` fails (the reader went away) or the process is interrupted.
    pub fn follow(&self, n: usize, all: bool, out: &mut impl Write) -> io::Result<()> {
        let mut current = if all {
            // Everything but the live file, then the live file as it grows.
            let files = self.open_all()?;
            for (file, _) in files.iter().skip(1).rev() {
                let mut file = file;
                io::copy(&mut file, out)?;
            }
            match File::open(&self.live) {
                Ok(file) => {
                    let id = private_fs::identity(&file)?;
                    Some(Reading { file, id, pos: 0 })
                }
                Err(_) => None,
            }
        } else {
            self.tail(n, out)?
        };
        loop {
            let Some(reading) = &mut current else {
                // No live file yet (the backend has not run, or a rotation is under way).
                if let Ok(file) = File::open(&self.live) {
                    let id = private_fs::identity(&file)?;
                    current = Some(Reading { file, id, pos: 0 });
                    continue;
                }
                std::thread::sleep(POLL);
                continue;
            };
            copy_new(reading, out)?;
            match private_fs::identity_at(&self.live) {
                Ok(id) if id == reading.id => {
                    std::thread::sleep(POLL);
                    continue;
                }
                // Renamed away and the new one not created yet: look again shortly.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::thread::sleep(POLL);
                    continue;
                }
                _ => {}
            }
            // Rotated. The writer wrote the last of this file before renaming it.
            copy_new(reading, out)?;
            let (newer, live) = self.newer_than(reading.id)?;
            for mut file in newer {
                io::copy(&mut file, out)?;
            }
            current = live.map(|(file, id)| Reading { file, id, pos: 0 });
        }
    }

    /// After the file `id` was rotated: the files rotated since (oldest first) and the live
    /// one. Looks at a consistent moment: if a rotation happens while the files are opened,
    /// it looks again.
    #[allow(clippy::type_complexity)]
    fn newer_than(&self, id: FileId) -> io::Result<(Vec<File>, Option<(File, FileId)>)> {
        loop {
            let mut files = self.open_all()?;
            let steady = match (files.first(), private_fs::identity_at(&self.live)) {
                (Some((_, first)), Ok(now)) => *first == now,
                _ => false,
            };
            let distinct: std::collections::HashSet<FileId> =
                files.iter().map(|(_, id)| *id).collect();
            if !steady || distinct.len() != files.len() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let position = files.iter().position(|(_, file_id)| *file_id == id);
            let live = files.remove(0);
            let newer: Vec<File> = match position {
                // At `.k`: `.k-1` ... `.1` are newer, oldest first.
                Some(k) if k >= 1 => files.drain(..k - 1).rev().map(|(f, _)| f).collect(),
                // It is the live file again (a truncation) or it is gone.
                Some(_) => Vec::new(),
                None => {
                    eprintln!(
                        "backend-warden: the log rotated more than logs.keep times between two \
                         looks; some lines were removed before they could be printed"
                    );
                    Vec::new()
                }
            };
            return Ok((newer, Some(live)));
        }
    }
}

/// Copies what was appended to the file since the last read.
fn copy_new(reading: &mut Reading, out: &mut impl Write) -> io::Result<()> {
    let len = reading.file.metadata()?.len();
    if len < reading.pos {
        // Truncated in place: start over.
        reading.pos = 0;
    }
    reading.file.seek(SeekFrom::Start(reading.pos))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reading.file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        reading.pos += n as u64;
    }
    out.flush()
}

/// The last `n` lines of the first `len` bytes of `file`, and how many lines that is (fewer
/// when the file has fewer). A last line without a newline counts as a line.
fn last_lines(file: &mut File, len: u64, n: usize) -> io::Result<(Vec<u8>, usize)> {
    const CHUNK: u64 = 64 * 1024;
    if n == 0 || len == 0 {
        return Ok((Vec::new(), 0));
    }
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut end = len;
    let mut newlines = 0;
    // The newline that ends the last line does not start a line after it.
    let mut skip_last = true;
    let mut start_at: Option<(usize, usize)> = None; // (chunk index, offset)
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        for i in (0..chunk.len()).rev() {
            if chunk[i] != b'\n' {
                continue;
            }
            if skip_last && start + i as u64 == len - 1 {
                continue;
            }
            newlines += 1;
            if newlines == n {
                start_at = Some((chunks.len(), i + 1));
                break;
            }
        }
        skip_last = false;
        chunks.push(chunk);
        if start_at.is_some() {
            break;
        }
        end = start;
    }
    let lines = if start_at.is_some() { n } else { newlines + 1 };
    let mut bytes = Vec::new();
    for (index, chunk) in chunks.iter().enumerate().rev() {
        match start_at {
            Some((at, offset)) if at == index => bytes.extend_from_slice(&chunk[offset..]),
            _ => bytes.extend_from_slice(chunk),
        }
    }
    Ok((bytes, lines.min(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    fn numbered(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn the_tail_reaches_into_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("backend.log");
        write(&dir.path().join("backend.log.2"), &numbered(0, 10));
        write(&dir.path().join("backend.log.1"), &numbered(10, 20));
        write(&live, &numbered(20, 23));
        let log = LogFiles::new(&live);
        for (n, want) in [
            (0, String::new()),
            (2, numbered(21, 23)),
            (3, numbered(20, 23)),
            (5, numbered(18, 23)),
            (15, numbered(8, 23)),
            (100, numbered(0, 23)),
        ] {
            let mut out = Vec::new();
            assert!(log.print_tail(n, &mut out).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), want, "n = {n}");
        }
        let mut out = Vec::new();
        assert!(log.print_all(&mut out).unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), numbered(0, 23));
    }

    #[test]
    fn a_last_line_without_newline_and_long_files_count_right() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("backend.log");
        // Lines longer than a chunk, and no newline at the end.
        let long = "x".repeat(100_000);
        write(&live, &format!("a\n{long}\nb\n{long}\nlast"));
        let log = LogFiles::new(&live);
        for (n, want) in [
            (1, "last".to_owned()),
            (2, format!("{long}\nlast")),
            (3, format!("b\n{long}\nlast")),
            (4, format!("{long}\nb\n{long}\nlast")),
            (9, format!("a\n{long}\nb\n{long}\nlast")),
        ] {
            let mut out = Vec::new();
            log.print_tail(n, &mut out).unwrap();
            // Compared without printing 100 KB lines on failure.
            assert!(out == want.as_bytes(), "n = {n}: {} bytes", out.len());
        }
    }

    #[test]
    fn no_log_is_said_not_printed() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::new(&dir.path().join("backend.log"));
        assert!(!log.print_tail(5, &mut Vec::new()).unwrap());
        assert!(!log.print_all(&mut Vec::new()).unwrap());
    }
}
