//! Authentication.
//!
//! - **API tokens** guard every request to the control routes (hearth's `/v1`
//!   and the E2B control plane): `Authorization: Bearer <token>` or
//!   `X-API-Key: <token>`. The server never holds a token itself, only its
//!   sha256: the token file has one `sha256:<hex>` line per token (comments
//!   with `#`). `hearth serve token create` makes a token, prints it once and
//!   appends its hash.
//! - **Sandbox access tokens** guard sandbox traffic (the envd gateway): the
//!   HMAC-SHA256 of the sandbox id under a per-state-dir secret
//!   (`<state>/server/secret`, 0600). It is handed out when a sandbox is
//!   created or connected to and checked from `X-Access-Token`, so it survives
//!   server restarts without being stored.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Why a token file or the secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {}, line {line}: expected `sha256:<64 hex digits>`, found {found:?}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        found: String,
    },
    #[error("token file {} holds no token", path.display())]
    Empty { path: PathBuf },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is {mode:o}; a token file or secret must not be readable by others (chmod 600)", path.display())]
    Mode { path: PathBuf, mode: u32 },
}

/// The API tokens the server accepts, as sha256 digests.
#[derive(Clone, Default)]
pub struct ApiTokens {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} tokens)", self.hashes.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares without an early exit, so timing does not tell how much matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes from the kernel, as hex.
pub fn random_hex() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))?;
    Ok(hex::encode(b))
}

impl ApiTokens {
    /// Parses a token file's text (`sha256:<hex>` lines, `#` comments).
    pub fn parse(path: &Path, text: &str) -> Result<Self, TokenFileError> {
        let mut hashes = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || TokenFileError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                found: line.chars().take(80).collect(),
            };
            let hex = line.strip_prefix("sha256:").ok_or_else(bad)?;
            let bytes = hex::decode(hex).map_err(|_| bad())?;
            hashes.push(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| bad())?);
        }
        if hashes.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { hashes })
    }

    /// Reads a token file; it must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let read = |source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenFileError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        Self::parse(path, &std::fs::read_to_string(path).map_err(read)?)
    }

    /// One token's line for a token file.
    pub fn line_for(token: &str) -> String {
        format!("sha256:{}", hex::encode(digest(token)))
    }

    /// Makes a new random token, appends its hash to `path` (created 0600)
    /// and returns the token.
    pub fn create(path: &Path) -> Result<String, TokenFileError> {
        let write = |source| TokenFileError::Write {
            path: path.to_path_buf(),
            source,
        };
        let token = format!("hearth_{}", random_hex().map_err(write)?);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(write)?;
        writeln!(f, "{}", Self::line_for(&token)).map_err(write)?;
        f.sync_all().map_err(write)?;
        Ok(token)
    }

    /// A set holding exactly `token` (for tests and generated tokens).
    pub fn single(token: &str) -> Self {
        Self {
            hashes: vec![digest(token)],
        }
    }

    pub fn accepts(&self, token: &str) -> bool {
        let d = digest(token);
        // Check every hash, so the position of a match is not visible either.
        self.hashes.iter().fold(false, |ok, h| same(h, &d) | ok)
    }

    /// The tokens a request carries: `Authorization: Bearer T` and
    /// `X-API-Key: T` (either may be absent). A request is let in when one of
    /// them is valid, so a stray header of one kind does not hide a good token
    /// of the other.
    pub fn from_headers(headers: &HeaderMap) -> Vec<&str> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|auth| auth.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, rest)| rest.trim());
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        bearer.into_iter().chain(key).collect()
    }
}

/// The server secret behind sandbox access tokens.
#[derive(Clone)]
pub struct AccessSecret(Vec<u8>);

impl std::fmt::Debug for AccessSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessSecret(..)")
    }
}

impl AccessSecret {
    pub fn from_bytes(b: impl Into<Vec<u8>>) -> Self {
        Self(b.into())
    }

    /// Reads `<dir>/secret`, making it (0600, in a 0700 dir) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, TokenFileError> {
        let path = dir.join("secret");
        let write = |source| TokenFileError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(write)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(write)?;
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().len() >= 32 => return Ok(Self(s.trim().as_bytes().to_vec())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TokenFileError::Read { path, source }),
        }
        let secret = random_hex().map_err(write)?;
        let tmp = dir.join(".secret.tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write)?;
        f.write_all(secret.as_bytes()).map_err(write)?;
        f.sync_all().map_err(write)?;
        std::fs::rename(&tmp, &path).map_err(write)?;
        Ok(Self(secret.into_bytes()))
    }

    /// The access token of sandbox `id`.
    pub fn token_for(&self, id: &str) -> String {
        // HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(b"hearth-sandbox-access:");
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn check(&self, id: &str, token: &str) -> bool {
        same(self.token_for(id).as_bytes(), token.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let p = Path::new("/t");
        let line = ApiTokens::line_for("s3cret");
        let t = ApiTokens::parse(p, &format!("# tokens\n\n{line}\n")).unwrap();
        assert!(t.accepts("s3cret"));
        assert!(!t.accepts("s3cre"));
        assert!(!t.accepts(""));
        let e = ApiTokens::parse(p, "s3cret\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("sha256:"), "{e}");
        let e = ApiTokens::parse(p, "sha256:abcd\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(matches!(
            ApiTokens::parse(p, "# none\n"),
            Err(TokenFileError::Empty { .. })
        ));
    }

    #[test]
    fn headers_carry_tokens() {
        let mut h = HeaderMap::new();
        assert!(ApiTokens::from_headers(&h).is_empty());
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(ApiTokens::from_headers(&h), ["abc"]);
        h.insert("x-api-key", "k".parse().unwrap());
        assert_eq!(ApiTokens::from_headers(&h), ["abc", "k"]);
        h.insert("authorization", "Basic dXNlcjo=".parse().unwrap());
        assert_eq!(ApiTokens::from_headers(&h), ["k"]);
    }

    #[test]
    fn access_tokens_are_per_sandbox() {
        let s = AccessSecret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec());
        let a = s.token_for("a1");
        assert_eq!(a.len(), 64);
        assert!(s.check("a1", &a));
        assert!(!s.check("a2", &a));
        let other = AccessSecret::from_bytes(b"another secret of enough length!!".to_vec());
        assert!(!other.check("a1", &a));
    }

    #[test]
    fn created_tokens_are_accepted_and_the_file_is_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tokens");
        let t1 = ApiTokens::create(&p).unwrap();
        let t2 = ApiTokens::create(&p).unwrap();
        assert_ne!(t1, t2);
        let set = ApiTokens::load(&p).unwrap();
        assert!(set.accepts(&t1) && set.accepts(&t2));
        assert!(!std::fs::read_to_string(&p).unwrap().contains(&t1));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ApiTokens::load(&p),
            Err(TokenFileError::Mode { .. })
        ));
    }
}
