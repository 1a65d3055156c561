//! Environment for the backend from a `.env` file and `${VAR}` references: reads the file
//! (dotenvy's parser: quotes, `export`, comments, multi-line values) and expands references
//! from the warden's environment. Pure but for reading that one file; imports only `std`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which `.env` file the backend's environment comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileSpec {
    /// The file.
    pub path: PathBuf,
    /// Set when the config names the file: then a missing file is an error. The default
    /// (`.env` in the backend's cwd) is read only when present.
    pub required: bool,
}

/// Why the `.env` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// The configured file does not exist.
    #[error("env file {} does not exist; check backend.env_file", .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but could not be read or parsed.
    #[error("env file {}: {detail}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (dotenvy's message: the line and the offending text).
        detail: String,
    },
}

/// Reads `spec`'s file: its variables and the file that was read (`None` when the default file
/// is absent). `${VAR}` and `$VAR` in values expand from the warden's environment, then from
/// the lines above.
pub fn read(
    spec: &EnvFileSpec,
) -> Result<(BTreeMap<String, String>, Option<PathBuf>), EnvFileError> {
    let invalid = |detail: String| EnvFileError::Invalid {
        path: spec.path.clone(),
        detail,
    };
    let iter = match dotenvy::from_path_iter(&spec.path) {
        Ok(iter) => iter,
        Err(e) if e.not_found() && !spec.required => return Ok((BTreeMap::new(), None)),
        Err(e) if e.not_found() => {
            return Err(EnvFileError::Missing {
                path: spec.path.clone(),
            });
        }
        Err(e) => return Err(invalid(e.to_string())),
    };
    let mut vars = BTreeMap::new();
    for item in iter {
        let (name, value) = item.map_err(|e| invalid(e.to_string()))?;
        vars.insert(name, value);
    }
    Ok((vars, Some(spec.path.clone())))
}

/// Replaces every `${NAME}` in `value` with `lookup(NAME)` (empty when unset); `$${` stands
/// for a literal `${`. Anything else, a lone `$` included, is kept as written.
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${")
            && let Some(end) = tail.find('}')
        {
            out.push_str(&lookup(&tail[..end]).unwrap_or_default());
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    out
}

/// [`expand`] from the warden's own environment.
pub fn expand_from_env(value: &str) -> String {
    expand(value, |name| std::env::var(name).ok())
}

/// The default file: `.env` in the backend's working directory.
pub fn default_path(cwd: &Path) -> PathBuf {
    cwd.join(".env")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_table() {
        let lookup = |name: &str| match name {
            "HOME" => Some("/home/me".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        for (value, want) in [
            ("plain", "plain"),
            ("${HOME}/data", "/home/me/data"),
            ("a${HOME}b${HOME}", "a/home/meb/home/me"),
            ("${UNSET}x", "x"),
            ("${EMPTY}", ""),
            ("$HOME", "$HOME"),
            ("cost $5", "cost $5"),
            ("$${HOME}", "${HOME}"),
            ("${unterminated", "${unterminated"),
            ("end$", "end$"),
            ("é${HOME}é", "é/home/meé"),
        ] {
            assert_eq!(expand(value, lookup), want, "{value}");
        }
    }

    #[test]
    fn reads_a_file_and_reports_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        let spec = EnvFileSpec {
            path: path.clone(),
            required: false,
        };
        assert_eq!(read(&spec).unwrap(), (BTreeMap::new(), None));
        let required = EnvFileSpec {
            required: true,
            ..spec.clone()
        };
        assert!(matches!(read(&required), Err(EnvFileError::Missing { .. })));
        std::fs::write(
            &path,
            "# comment\nexport BW_ENVFILE_T=8000\nNAME=\"a b\"\nURL=http://x:${BW_ENVFILE_T}/\n",
        )
        .unwrap();
        let (vars, read_from) = read(&spec).unwrap();
        assert_eq!(read_from, Some(path.clone()));
        assert_eq!(vars["BW_ENVFILE_T"], "8000");
        assert_eq!(vars["NAME"], "a b");
        assert_eq!(vars["URL"], "http://x:8000/");
        std::fs::write(&path, "GOOD=1\nthis is not a line\n").unwrap();
        let err = read(&spec).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("env file {}: ", path.display())),
            "{err}"
        );
    }
}
