//! The two bearer tokens of the control plane: the admin token (REST API, CLI) and the filter
//! token (key lookups from Envoy). Each comes from its environment variable or, when that is
//! unset, from a file in the data directory that the first start creates (mode 0600).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::base62;

/// A bearer token. `Debug` never prints it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// `None` for an empty or blank value, so an empty environment variable counts as unset.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into().trim().to_owned();
        (!value.is_empty()).then_some(Self(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison. Both sides are hashed first so that neither the content nor the
    /// length of the real token leaks through timing.
    pub fn matches(&self, candidate: &str) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let got = Sha256::digest(candidate.as_bytes());
        expected.ct_eq(&got).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Admin,
    Filter,
}

impl TokenKind {
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Admin => "admin-token",
            Self::Filter => "filter-token",
        }
    }

    pub fn env_var(self) -> &'static str {
        match self {
            Self::Admin => "TOLLGATE_ADMIN_TOKEN",
            Self::Filter => "TOLLGATE_FILTER_TOKEN",
        }
    }

    /// Printed when a token is generated (`Admin token: ...`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Admin => "Admin token",
            Self::Filter => "Filter token",
        }
    }

    fn generate(self) -> Token {
        let prefix = match self {
            Self::Admin => "tga_",
            Self::Filter => "tgf_",
        };
        Token(format!("{prefix}{}", base62::random(32)))
    }

    pub fn path(self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.file_name())
    }
}

#[derive(Debug)]
pub struct LoadedToken {
    pub token: Token,
    /// True when this call created the file: the caller shows the token once.
    pub generated: bool,
}

/// The configured token if there is one, else the one in `<data_dir>/<kind file>`, else a new
/// random token written to that file with mode 0600.
pub fn load_or_create(
    kind: TokenKind,
    configured: Option<Token>,
    data_dir: &Path,
) -> io::Result<LoadedToken> {
    if let Some(token) = configured {
        return Ok(LoadedToken {
            token,
            generated: false,
        });
    }
    let path = kind.path(data_dir);
    if let Some(token) = read_file(kind, &path)? {
        return Ok(LoadedToken {
            token,
            generated: false,
        });
    }
    let token = kind.generate();
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(format!("{}\n", token.expose()).as_bytes())?;
            file.sync_all()?;
            Ok(LoadedToken {
                token,
                generated: true,
            })
        }
        // Another process created it between our read and our create: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_file(kind, &path)? {
            Some(token) => Ok(LoadedToken {
                token,
                generated: false,
            }),
            None => Err(empty_file(&path)),
        },
        Err(e) => Err(e),
    }
}

/// The token stored in `path`; `None` if the file does not exist, an error if it is empty.
pub fn read_file(kind: TokenKind, path: &Path) -> io::Result<Option<Token>> {
    match fs::read_to_string(path) {
        Ok(text) => match Token::new(text) {
            Some(token) => {
                warn_if_readable_by_others(kind, path);
                Ok(Some(token))
            }
            None => Err(empty_file(path)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

fn empty_file(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is empty; delete it to generate a new token",
            path.display()
        ),
    )
}

fn warn_if_readable_by_others(kind: TokenKind, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} file {} is readable by other users; chmod 600 it",
                    kind.label(),
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (kind, path);
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_same_token() {
        let t = Token::new("tga_abc").unwrap();
        assert!(t.matches("tga_abc"));
        assert!(!t.matches("tga_abd"));
        assert!(!t.matches("tga_ab"));
        assert!(!t.matches(""));
    }

    #[test]
    fn blank_values_are_unset() {
        assert!(Token::new("").is_none());
        assert!(Token::new("  \n").is_none());
        assert_eq!(Token::new(" x \n").unwrap().expose(), "x");
    }

    #[test]
    fn debug_is_redacted() {
        let t = Token::new("tga_supersecret").unwrap();
        assert!(!format!("{t:?}").contains("supersecret"));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn generates_once_then_reuses_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(TokenKind::Admin, None, dir.path()).unwrap();
        assert!(first.generated);
        assert!(first.token.expose().starts_with("tga_"));
        assert_eq!(first.token.expose().len(), 36);
        let second = load_or_create(TokenKind::Admin, None, dir.path()).unwrap();
        assert!(!second.generated);
        assert_eq!(second.token.expose(), first.token.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("admin-token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_token_wins_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load_or_create(TokenKind::Filter, Token::new("from-env"), dir.path()).unwrap();
        assert_eq!(loaded.token.expose(), "from-env");
        assert!(!loaded.generated);
        assert!(!dir.path().join("filter-token").exists());
    }

    #[test]
    fn empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("admin-token"), "\n").unwrap();
        assert!(load_or_create(TokenKind::Admin, None, dir.path()).is_err());
    }
}
