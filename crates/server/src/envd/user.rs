//! The user a sandbox request runs as.
//!
//! The SDK names it as `Authorization: Basic base64("<user>:")` (no
//! password); without one the request runs as the sandbox's default user
//! (`VmRecord.user`: the `base` template's `user`), else `root`. The user's
//! home is the default working directory and the base of relative paths. A
//! user that is not in the guest's `/etc/passwd` is `unauthenticated`
//! "invalid username". Lookups are cached per sandbox ([`Users`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use hearth_runtime::Sandbox;

use super::connect::ConnectError;
use crate::app::AppState;

/// The cache holds at most this many (sandbox, user) entries; it is emptied
/// when full (entries of removed sandboxes go that way too).
const CACHE_MAX: usize = 4096;
/// `/etc/passwd` larger than this is refused (a guest can write anything).
const PASSWD_MAX: usize = 4 << 20;

/// A guest user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl User {
    /// `path` made absolute: relative paths (and `~`, `~/...`) are under the
    /// user's home.
    pub fn resolve_path(&self, path: &str) -> String {
        let home = self.home.trim_end_matches('/');
        if path.starts_with('/') {
            path.to_string()
        } else if path.is_empty() || path == "~" {
            self.home.clone()
        } else if let Some(rest) = path.strip_prefix("~/") {
            format!("{home}/{rest}")
        } else {
            format!("{home}/{path}")
        }
    }
}

/// The user named by the request's `Authorization: Basic` header, if any.
pub fn requested_user(h: &HeaderMap) -> Result<Option<String>, ConnectError> {
    let Some(v) = h.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad =
        |why: &str| ConnectError::unauthenticated(format!("invalid Authorization header: {why}"));
    let s = v.to_str().map_err(|_| bad("not text"))?;
    let Some(b64) = s
        .strip_prefix("Basic ")
        .or_else(|| s.strip_prefix("basic "))
    else {
        return Err(bad("expected `Basic base64(<user>:)`"));
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad("not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let name = text.split(':').next().unwrap_or("");
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some(name.to_string()))
}

/// Finds `name` in the text of an `/etc/passwd`.
pub fn parse_passwd(text: &str, name: &str) -> Option<User> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(User {
            name: name.to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: if f[5].is_empty() {
                "/".to_string()
            } else {
                f[5].to_string()
            },
        })
    })
}

/// A user name the gateway accepts before it asks the guest.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
}

/// Resolved users per sandbox. Cheap to clone; the envd router holds one.
#[derive(Clone, Default)]
pub struct Users {
    cache: Arc<Mutex<HashMap<(String, String), User>>>,
}

impl Users {
    /// The user of a request to `sandbox` that named `requested` (`None`:
    /// the sandbox's default user).
    pub async fn resolve(
        &self,
        sandbox: &Sandbox,
        requested: Option<&str>,
    ) -> Result<User, ConnectError> {
        let name = requested
            .or(sandbox.record().user.as_deref())
            .unwrap_or("root")
            .to_string();
        if !valid_name(&name) {
            return Err(ConnectError::unauthenticated(format!(
                "invalid username {name:?}"
            )));
        }
        let key = (sandbox.id().to_string(), name.clone());
        if let Some(u) = self.lock().get(&key) {
            return Ok(u.clone());
        }
        let passwd = sandbox.read_file("/etc/passwd").await?;
        if passwd.len() > PASSWD_MAX {
            return Err(ConnectError::internal(format!(
                "the guest's /etc/passwd is {} bytes, over the {PASSWD_MAX}-byte limit",
                passwd.len()
            )));
        }
        let user = parse_passwd(&String::from_utf8_lossy(&passwd), &name).ok_or_else(|| {
            ConnectError::unauthenticated(format!(
                "invalid username {name:?}: no such user in sandbox {}",
                sandbox.id()
            ))
        })?;
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, user.clone());
        Ok(user)
    }

    /// Drops what is cached for `sandbox_id`.
    pub fn forget(&self, sandbox_id: &str) {
        self.lock().retain(|(id, _), _| id != sandbox_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), User>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a gateway handler works on: the request's sandbox and its user.
pub struct Caller {
    pub sandbox: Arc<Sandbox>,
    pub user: User,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ConnectError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sandbox = super::sandbox(state, &parts.headers).await?;
        let users = parts
            .extensions
            .get::<Users>()
            .cloned()
            .ok_or_else(|| ConnectError::internal("the envd router has no user cache"))?;
        let requested = requested_user(&parts.headers)?;
        let user = users.resolve(&sandbox, requested.as_deref()).await;
        match user {
            Ok(user) => Ok(Caller { sandbox, user }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_names_the_user() {
        let mut h = HeaderMap::new();
        assert_eq!(requested_user(&h).unwrap(), None);
        let b = base64::engine::general_purpose::STANDARD.encode("root:");
        h.insert(header::AUTHORIZATION, format!("Basic {b}").parse().unwrap());
        assert_eq!(requested_user(&h).unwrap().as_deref(), Some("root"));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert!(requested_user(&h).is_err());
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        let e = requested_user(&h).unwrap_err();
        assert_eq!(e.code, super::super::connect::Code::Unauthenticated);
    }

    #[test]
    fn passwd_lookup() {
        let text = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/bash\nbad\n";
        let u = parse_passwd(text, "user").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(parse_passwd(text, "root").unwrap().home, "/root");
        assert_eq!(parse_passwd(text, "nobody"), None);
        assert_eq!(parse_passwd(text, "bad"), None);
    }

    #[test]
    fn relative_paths_are_under_home() {
        let u = User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
        };
        assert_eq!(u.resolve_path("a/b"), "/home/user/a/b");
        assert_eq!(u.resolve_path("/etc"), "/etc");
        assert_eq!(u.resolve_path("~/x"), "/home/user/x");
        assert_eq!(u.resolve_path(""), "/home/user");
    }

    #[test]
    fn odd_names_are_refused_before_the_guest_is_asked() {
        assert!(valid_name("user"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(""));
    }
}
