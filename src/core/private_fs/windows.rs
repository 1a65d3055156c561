//! Windows: the folders live under the user's own profile, whose ACL already shuts others
//! out; symbolic links (and junctions, which are reparse points too) are still refused.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use super::{FolderKind, refused};

pub fn prepare_dir(dir: &Path, _kind: FolderKind) -> io::Result<()> {
    if let Ok(meta) = fs::symlink_metadata(dir)
        && meta.file_type().is_symlink()
    {
        return Err(refused(dir, "is a symbolic link"));
    }
    fs::create_dir_all(dir)
}

pub fn open_append(path: &Path) -> io::Result<File> {
    check_file(path)?;
    OpenOptions::new().create(true).append(true).open(path)
}

pub fn identity(file: &File) -> io::Result<(u64, u64)> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{
        BY_HANDLE_FILE_INFORMATION, GetFileInformationByHandle,
    };
    // SAFETY: a plain C struct of integers and FILETIMEs, for which all zeros is valid.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is open for the life of `file`; `info` is a valid out pointer.
    if unsafe { GetFileInformationByHandle(file.as_raw_handle() as _, &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        u64::from(info.dwVolumeSerialNumber),
        (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
    ))
}

pub fn identity_at(path: &Path) -> io::Result<(u64, u64)> {
    identity(&File::open(path)?)
}

pub fn check_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(refused(path, "is a symbolic link")),
        Ok(meta) if !meta.is_file() => Err(refused(path, "is not a regular file")),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
