//! A profile: how to reach one cluster — its endpoints, the CA to trust and the file holding
//! the token to present — so that a client on the machine that ran `kith init` needs no
//! flags (`kith kv get x` just works there).
//!
//! Where it lives: `$KITH_PROFILE` if set, else `$XDG_CONFIG_HOME/kith/profile.json`, else
//! `$HOME/.config/kith/profile.json`. The file is JSON:
//! ```json
//! {"endpoints": ["https://10.0.0.1:7001"], "ca": "/abs/ca.crt", "token_file": "/abs/admin.token"}
//! ```
//! It names the token's file rather than holding the token, so the secret stays in one
//! place (mode 0600) and rotating it means rewriting that file only.
//!
//! Owns: reading, writing and locating profiles. Refuses: choosing between a profile and
//! explicit settings (the caller decides; the CLI uses a profile only when given none).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tls::TlsOptions;
use crate::{Client, ClientError};

/// The environment variable naming the profile file.
pub const PROFILE_ENV: &str = "KITH_PROFILE";
/// A profile file is small; anything larger is not one.
const PROFILE_BYTES_MAX: u64 = 64 * 1024;
/// A token file holds one token (`ID.SECRET`) and perhaps a newline.
const TOKEN_FILE_BYTES_MAX: u64 = 4 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The cluster's endpoints (`https://HOST:PORT`); the client fails over between them.
    pub endpoints: Vec<String>,
    /// The cluster CA (PEM) the client trusts.
    pub ca: PathBuf,
    /// The file holding the token to present, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("profile {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("profile {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("profile: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("profile: {0}")]
    Client(#[from] ClientError),
}

/// Where the profile is looked for: `$KITH_PROFILE`, else the user's configuration
/// directory. `None` when neither that variable nor a home directory is known.
pub fn default_path() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = set(PROFILE_ENV) {
        return Some(PathBuf::from(path));
    }
    let config = set("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("kith").join("profile.json"))
}

impl Profile {
    /// Reads the profile at `path`; `Ok(None)` when there is no file there.
    pub fn load(path: &Path) -> Result<Option<Profile>, ProfileError> {
        let text = match read_bounded(path, PROFILE_BYTES_MAX) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ProfileError::Read {
                    path: path.into(),
                    message: e.to_string(),
                })
            }
        };
        let profile: Profile = serde_json::from_str(&text).map_err(|e| ProfileError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        if profile.endpoints.is_empty() {
            return Err(ProfileError::Invalid {
                path: path.into(),
                message: "it names no endpoints".into(),
            });
        }
        Ok(Some(profile))
    }

    /// Writes the profile to `path` (creating its directory), never over an existing file:
    /// `Ok(false)` when one is already there.
    pub fn create(&self, path: &Path) -> Result<bool, ProfileError> {
        let failed = |e: std::io::Error| ProfileError::Write {
            path: path.into(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let mut file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(failed(e)),
        };
        let mut text = serde_json::to_string_pretty(self).expect("a profile serializes");
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        Ok(true)
    }

    /// The token in `token_file`, trimmed; `None` when the profile names no token file.
    pub fn token(&self) -> Result<Option<String>, ProfileError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = read_bounded(path, TOKEN_FILE_BYTES_MAX).map_err(|e| ProfileError::Read {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Some(text.trim().to_owned()))
    }

    /// A client for this profile's cluster.
    pub fn client(&self) -> Result<Client, ProfileError> {
        let tls = TlsOptions::trusting(&self.ca)?;
        let token = self.token()?;
        Ok(Client::with_options(
            &self.endpoints,
            Some(&tls),
            token.as_deref(),
        )?)
    }
}

/// A file's text, refusing one longer than `max` bytes.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kith-profile-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_profile_round_trips_and_is_never_overwritten() {
        let dir = scratch();
        let path = dir.join("kith").join("profile.json");
        assert_eq!(Profile::load(&path).unwrap(), None, "no file: no profile");
        let first = Profile {
            endpoints: vec!["https://127.0.0.1:7001".into()],
            ca: "/x/ca.crt".into(),
            token_file: Some(dir.join("admin.token")),
        };
        assert!(first.create(&path).unwrap());
        let second = Profile {
            endpoints: vec!["https://127.0.0.1:9".into()],
            ..first.clone()
        };
        assert!(
            !second.create(&path).unwrap(),
            "an existing profile is kept"
        );
        assert_eq!(Profile::load(&path).unwrap(), Some(first.clone()));
        std::fs::write(dir.join("admin.token"), "admin.abc\n").unwrap();
        assert_eq!(first.token().unwrap().as_deref(), Some("admin.abc"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_profile_that_is_not_one_is_refused_with_its_path() {
        let dir = scratch();
        std::fs::create_dir_all(&dir).unwrap();
        for bad in [
            "not json",
            r#"{"endpoints": [], "ca": "/x"}"#,
            r#"{"endpoints": ["https://a:1"], "ca": "/x", "extra": 1}"#,
        ] {
            let path = dir.join("profile.json");
            std::fs::write(&path, bad).unwrap();
            let e = Profile::load(&path).unwrap_err().to_string();
            assert!(e.contains("profile.json"), "{bad}: {e}");
        }
        let huge = dir.join("huge.json");
        std::fs::write(&huge, vec![b' '; PROFILE_BYTES_MAX as usize + 1]).unwrap();
        assert!(Profile::load(&huge).is_err(), "a huge file is refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
