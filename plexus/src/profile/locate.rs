//! Where profiles are, and reading one from disk.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Profile, ProfileError, MAX_PROFILE_LEN};

/// Where `--profile NAME|PATH` points.
pub fn locate(name_or_path: &str) -> Result<PathBuf, ProfileError> {
    if name_or_path.contains('/')
        || name_or_path.ends_with(".yaml")
        || name_or_path.ends_with(".yml")
    {
        return Ok(expand_home(Path::new(name_or_path)));
    }
    let valid = !name_or_path.is_empty()
        && !name_or_path.starts_with('.')
        && name_or_path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        return Err(ProfileError::BadName(name_or_path.to_string()));
    }
    let base = config_dir().unwrap_or_else(|| PathBuf::from(".config/plexus"));
    Ok(base.join("profiles").join(format!("{name_or_path}.yaml")))
}

/// plexus's configuration directory: `$XDG_CONFIG_HOME/plexus`, else
/// `~/.config/plexus`; `None` when neither variable is set.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .map(|base| base.join("plexus"))
}

/// Where `plexus cert new` is told to put keys in the README, and so where the flat
/// command line looks for certificates it was not given: `<config dir>/keys`.
pub fn default_keys_dir() -> Option<PathBuf> {
    config_dir().map(|d| d.join("keys"))
}

fn expand_home(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(rest);
        }
    }
    p.to_path_buf()
}

pub(super) fn resolve_path(dir: &Path, p: PathBuf) -> PathBuf {
    let p = expand_home(&p);
    let p = p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p);
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

impl Profile {
    /// Load `--profile NAME|PATH`.
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        let path = locate(name_or_path)?;
        Self::load_path(&path)
    }

    /// Load the profile file at `path`.
    pub fn load_path(path: &Path) -> Result<Profile, ProfileError> {
        let file = fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProfileError::NotFound(path.to_owned()),
            _ => ProfileError::Io(path.to_owned(), e.to_string()),
        })?;
        let mode = file
            .metadata()
            .map_err(|e| ProfileError::Io(path.to_owned(), e.to_string()))?
            .permissions()
            .mode();
        let mut text = String::new();
        file.take(MAX_PROFILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| ProfileError::Io(path.to_owned(), e.to_string()))?;
        if text.len() as u64 > MAX_PROFILE_LEN {
            return Err(ProfileError::Io(
                path.to_owned(),
                format!("larger than {MAX_PROFILE_LEN} bytes; is this really a profile?"),
            ));
        }
        let open_to_others = mode & 0o077 != 0;
        Self::from_yaml(&text, path, open_to_others)
    }
}
