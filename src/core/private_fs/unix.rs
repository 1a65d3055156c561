//! Unix: `lstat` before trusting a path, `O_NOFOLLOW` opens, `fchmod` on the opened handle.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

use super::{FolderKind, refused};

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// What is wrong with an existing entry, judged by `lstat`, if anything.
fn problem(path: &Path, meta: &fs::Metadata, want_dir: bool) -> Option<io::Error> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path)
            .map(|t| format!(" (to {})", t.display()))
            .unwrap_or_default();
        return Some(refused(path, &format!("is a symbolic link{target}")));
    }
    if want_dir && !kind.is_dir() {
        return Some(refused(path, "is not a folder"));
    }
    if !want_dir && !kind.is_file() {
        return Some(refused(path, "is not a regular file"));
    }
    if meta.uid() != my_uid() {
        return Some(refused(
            path,
            &format!(
                "belongs to another user (uid {}, you are {})",
                meta.uid(),
                my_uid()
            ),
        ));
    }
    None
}

pub fn prepare_dir(dir: &Path, kind: FolderKind) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Every folder created on the way is owner-only.
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    if let Some(e) = problem(dir, &meta, true) {
        return Err(e);
    }
    if kind == FolderKind::Runtime && meta.mode() & 0o777 != 0o700 {
        // The handle is the folder `lstat` judged: a symbolic link planted meanwhile makes the
        // open fail instead of redirecting the chmod.
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(dir)?;
        let meta = handle.metadata()?;
        if meta.uid() != my_uid() {
            return Err(refused(dir, "belongs to another user"));
        }
        handle.set_permissions(fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

pub fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            use nix::errno::Errno;
            match e.raw_os_error().map(Errno::from_raw) {
                Some(Errno::ELOOP) => refused(path, "is a symbolic link"),
                // A FIFO without a reader (O_NONBLOCK), a device, a folder.
                Some(Errno::ENXIO | Errno::EISDIR) => refused(path, "is not a regular file"),
                _ => e,
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        // O_NONBLOCK above: a planted FIFO does not hang the open; it is refused here.
        return Err(refused(path, "is not a regular file"));
    }
    if meta.uid() != my_uid() {
        return Err(refused(path, "belongs to another user"));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

pub fn identity(file: &File) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

pub fn identity_at(path: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

pub fn check_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) => problem(path, &meta, false).map_or(Ok(()), Err),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::symlink;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn new_folders_are_owner_only_and_files_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("a/b/logs");
        prepare_dir(&logs, FolderKind::Logs).unwrap();
        assert_eq!(mode(&logs), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        let mut file = open_append(&logs.join("backend.log")).unwrap();
        file.write_all(b"x\n").unwrap();
        assert_eq!(mode(&logs.join("backend.log")), 0o600);
        // A looser existing file is tightened through its handle.
        fs::set_permissions(logs.join("backend.log"), fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_append(&logs.join("backend.log")).unwrap());
        assert_eq!(mode(&logs.join("backend.log")), 0o600);
    }

    #[test]
    fn symbolic_links_are_refused_and_their_targets_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let target_dir = tmp.path().join("elsewhere");
        fs::create_dir(&target_dir).unwrap();
        fs::set_permissions(&target_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let run = tmp.path().join("run");
        symlink(&target_dir, &run).unwrap();
        let e = prepare_dir(&run, FolderKind::Runtime).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(mode(&target_dir), 0o755, "the link's target was chmod'ed");

        let bashrc = tmp.path().join("bashrc");
        fs::write(&bashrc, "precious\n").unwrap();
        let log = tmp.path().join("backend.log");
        symlink(&bashrc, &log).unwrap();
        let e = open_append(&log).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(check_file(&log).is_err());
        assert_eq!(fs::read_to_string(&bashrc).unwrap(), "precious\n");
    }

    #[test]
    fn a_fifo_or_folder_in_place_of_a_log_is_refused_without_hanging() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("backend.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = open_append(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tmp.path().join("warden.log");
        fs::create_dir(&dir).unwrap();
        assert!(open_append(&dir).is_err());
        assert!(check_file(&dir).is_err());
    }
}
