//! Who a child runs as and what environment it gets.
//!
//! `/etc/passwd` is parsed here: the binary is static glibc, where
//! `getpwnam` would need NSS modules that do not exist in the guest.

use hearth_proto::pb;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PASSWD: &str = "/etc/passwd";
/// The image's default environment (language images set PATH, LANG, LC_ALL, ...).
const ETC_ENVIRONMENT: &str = "/etc/environment";

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Parses `/etc/passwd` text; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// The identity a child gets. `None` ids mean "keep the agent's".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub home: String,
}

/// Why a `User` cannot be resolved (reported as `BAD_USER`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user {0:?} is not in /etc/passwd")]
    UnknownName(String),
    #[error("cannot read /etc/passwd to resolve user {name:?}: {reason}")]
    NoPasswd { name: String, reason: String },
}

/// Resolves a request's user against passwd text (read lazily, only when needed).
pub fn resolve_with(
    user: Option<&pb::User>,
    passwd: impl FnOnce() -> std::io::Result<String>,
) -> Result<Identity, UserError> {
    let agent_home = || std::env::var("HOME").unwrap_or_else(|_| "/root".to_string());
    let Some(u) = user else {
        return Ok(Identity {
            uid: None,
            gid: None,
            home: agent_home(),
        });
    };
    if u.uid.is_none() && u.gid.is_none() && u.name.is_empty() {
        return Ok(Identity {
            uid: None,
            gid: None,
            home: agent_home(),
        });
    }
    let text = passwd();
    match u.uid {
        Some(uid) => {
            let entry = text
                .as_deref()
                .ok()
                .and_then(|t| parse_passwd(t).into_iter().find(|e| e.uid == uid));
            let home = entry.as_ref().map(|e| e.home.clone()).unwrap_or_else(|| {
                if uid == 0 {
                    "/root".into()
                } else {
                    "/".into()
                }
            });
            let gid = u.gid.or(entry.map(|e| e.gid)).unwrap_or(uid);
            Ok(Identity {
                uid: Some(uid),
                gid: Some(gid),
                home,
            })
        }
        None if !u.name.is_empty() => {
            let text = text.map_err(|e| UserError::NoPasswd {
                name: u.name.clone(),
                reason: e.to_string(),
            })?;
            let e = parse_passwd(&text)
                .into_iter()
                .find(|e| e.name == u.name)
                .ok_or_else(|| UserError::UnknownName(u.name.clone()))?;
            Ok(Identity {
                uid: Some(e.uid),
                gid: Some(u.gid.unwrap_or(e.gid)),
                home: e.home,
            })
        }
        None => Ok(Identity {
            uid: None,
            gid: u.gid,
            home: agent_home(),
        }),
    }
}

/// Resolves against the real `/etc/passwd`.
pub fn resolve(user: Option<&pb::User>) -> Result<Identity, UserError> {
    resolve_with(user, || std::fs::read_to_string(PASSWD))
}

/// Why an environment cannot be passed to `execve`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("environment key {0:?} is empty or contains '=' or NUL")]
    BadKey(String),
    #[error("environment value of {0:?} contains NUL")]
    BadValue(String),
}

/// Parses `/etc/environment` (pam_env's simple format): `KEY=VALUE` lines,
/// an optional `export ` prefix, a value optionally in matching single or
/// double quotes; blank lines, `#` comments and malformed lines are skipped.
/// A later line replaces an earlier one with the same key.
pub fn parse_environment(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let valid_key = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key || value.contains('\0') {
            continue;
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .filter(|_| value.len() >= 2)
            })
            .unwrap_or(value);
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => out.push((key.to_owned(), value.to_owned())),
        }
    }
    out
}

/// The child's environment: unless `clear_env`, `/etc/environment` (when it
/// exists) with PATH and LANG defaults filling gaps and HOME set to the
/// identity's home; then the request's variables in order, a later one
/// replacing an earlier one with the same key.
pub fn build_env(
    clear_env: bool,
    extra: &[pb::EnvVar],
    home: &str,
) -> Result<Vec<(String, String)>, EnvError> {
    build_env_with(clear_env, extra, home, etc_environment)
}

/// `/etc/environment`'s text, re-read only when the file changed: one
/// `stat` per exec instead of open, read and close.
fn etc_environment() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    type Key = (u64, u64, u64, i64, i64, i64, i64);
    static CACHE: std::sync::Mutex<Option<(Key, String)>> = std::sync::Mutex::new(None);
    let m = std::fs::metadata(ETC_ENVIRONMENT).ok()?;
    let key: Key = (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    );
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((k, text)) = cache.as_ref() {
        if *k == key {
            return Some(text.clone());
        }
    }
    let text = std::fs::read_to_string(ETC_ENVIRONMENT).ok()?;
    *cache = Some((key, text.clone()));
    Some(text)
}

/// [`build_env`] with the `/etc/environment` text supplied (read lazily, only
/// when defaults are wanted).
pub fn build_env_with(
    clear_env: bool,
    extra: &[pb::EnvVar],
    home: &str,
    etc_environment: impl FnOnce() -> Option<String>,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env: Vec<(String, String)> = Vec::new();
    if !clear_env {
        env = etc_environment()
            .map(|t| parse_environment(&t))
            .unwrap_or_default();
        // PATH and LANG fill gaps; HOME belongs to the user the child runs
        // as, so it replaces the image's.
        for (key, value, replace) in [
            ("PATH", DEFAULT_PATH, false),
            ("HOME", home, true),
            ("LANG", "C.UTF-8", false),
        ] {
            match env.iter_mut().find(|(k, _)| k == key) {
                Some(slot) if replace => slot.1 = value.into(),
                Some(_) => {}
                None => env.push((key.into(), value.into())),
            }
        }
    }
    for v in extra {
        if v.key.is_empty() || v.key.contains('=') || v.key.contains('\0') {
            return Err(EnvError::BadKey(v.key.clone()));
        }
        if v.value.contains('\0') {
            return Err(EnvError::BadValue(v.key.clone()));
        }
        match env.iter_mut().find(|(k, _)| *k == v.key) {
            Some(slot) => slot.1 = v.value.clone(),
            None => env.push((v.key.clone(), v.value.clone())),
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      # comment\n\
                      broken line\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      alice:x:1000:100::/home/alice:/bin/bash\n\
                      bad:x:notanumber:1::/:/bin/sh\n";

    fn user(uid: Option<u32>, gid: Option<u32>, name: &str) -> pb::User {
        pb::User {
            uid,
            gid,
            name: name.into(),
        }
    }

    #[test]
    fn parses_passwd_skipping_malformed_lines() {
        let e = parse_passwd(PW);
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[2],
            PasswdEntry {
                name: "alice".into(),
                uid: 1000,
                gid: 100,
                home: "/home/alice".into()
            }
        );
    }

    #[test]
    fn resolves_name_to_ids_and_home() {
        let id = resolve_with(Some(&user(None, None, "alice")), || Ok(PW.into())).unwrap();
        assert_eq!(
            id,
            Identity {
                uid: Some(1000),
                gid: Some(100),
                home: "/home/alice".into()
            }
        );
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = resolve_with(Some(&user(None, None, "mallory")), || Ok(PW.into())).unwrap_err();
        assert_eq!(err, UserError::UnknownName("mallory".into()));
    }

    #[test]
    fn missing_passwd_with_name_is_an_error() {
        let err = resolve_with(Some(&user(None, None, "alice")), || {
            Err(std::io::Error::from_raw_os_error(libc::ENOENT))
        })
        .unwrap_err();
        assert!(matches!(err, UserError::NoPasswd { .. }), "{err:?}");
    }

    #[test]
    fn uid_without_passwd_entry_uses_uid_as_gid() {
        let id = resolve_with(Some(&user(Some(4242), None, "")), || Ok(PW.into())).unwrap();
        assert_eq!(
            id,
            Identity {
                uid: Some(4242),
                gid: Some(4242),
                home: "/".into()
            }
        );
        let id = resolve_with(
            Some(&user(Some(1000), Some(7), "ignored")),
            || Ok(PW.into()),
        )
        .unwrap();
        assert_eq!(
            id,
            Identity {
                uid: Some(1000),
                gid: Some(7),
                home: "/home/alice".into()
            }
        );
    }

    #[test]
    fn empty_user_keeps_the_agent_identity_without_reading_passwd() {
        let id = resolve_with(Some(&user(None, None, "")), || {
            panic!("passwd must not be read")
        })
        .unwrap();
        assert_eq!((id.uid, id.gid), (None, None));
    }

    #[test]
    fn env_defaults_then_overrides_in_order() {
        let extra = vec![
            pb::EnvVar {
                key: "FOO".into(),
                value: "1".into(),
            },
            pb::EnvVar {
                key: "PATH".into(),
                value: "/x".into(),
            },
            pb::EnvVar {
                key: "FOO".into(),
                value: "2".into(),
            },
        ];
        let env = build_env_with(false, &extra, "/home/a", || None).unwrap();
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/x".into()),
                ("HOME".into(), "/home/a".into()),
                ("LANG".into(), "C.UTF-8".into()),
                ("FOO".into(), "2".into()),
            ]
        );
    }

    const ETC_ENV: &str = "# image defaults\n\
                           PATH=/opt/lang/bin:/usr/bin:/bin\n\
                           HOME=/root\n\
                           \n\
                           LC_ALL=\"C.UTF-8\"\n\
                           export GOPATH='/root/go'\n\
                           EMPTY=\n\
                           SPACED = x\n\
                           1BAD=x\n\
                           no equals sign\n\
                           QUOTE=\"\n\
                           LC_ALL=C.UTF-8\n";

    #[test]
    fn parses_etc_environment_lines() {
        assert_eq!(
            parse_environment(ETC_ENV),
            vec![
                ("PATH".into(), "/opt/lang/bin:/usr/bin:/bin".into()),
                ("HOME".into(), "/root".into()),
                ("LC_ALL".into(), "C.UTF-8".into()),
                ("GOPATH".into(), "/root/go".into()),
                ("EMPTY".into(), "".into()),
                ("QUOTE".into(), "\"".into()),
            ]
        );
        assert!(parse_environment("").is_empty());
    }

    #[test]
    fn etc_environment_is_the_base_then_defaults_fill_gaps_then_request_wins() {
        let extra = [pb::EnvVar {
            key: "GOPATH".into(),
            value: "/work".into(),
        }];
        let env = build_env_with(false, &extra, "/home/alice", || Some(ETC_ENV.into())).unwrap();
        let get = |k: &str| {
            let hits: Vec<&String> = env
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v)
                .collect();
            assert!(
                hits.len() <= 1,
                "{k} appears {} times in {env:?}",
                hits.len()
            );
            hits.first().map(|v| v.as_str())
        };
        assert_eq!(get("PATH"), Some("/opt/lang/bin:/usr/bin:/bin"));
        assert_eq!(
            get("HOME"),
            Some("/home/alice"),
            "HOME follows the identity"
        );
        assert_eq!(get("LANG"), Some("C.UTF-8"), "LANG default fills the gap");
        assert_eq!(get("LC_ALL"), Some("C.UTF-8"));
        assert_eq!(get("GOPATH"), Some("/work"));
        assert_eq!(get("EMPTY"), Some(""));

        let lang_set =
            build_env_with(false, &[], "/root", || Some("LANG=de_DE.UTF-8\n".into())).unwrap();
        assert_eq!(
            lang_set,
            vec![
                ("LANG".into(), "de_DE.UTF-8".into()),
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOME".into(), "/root".into()),
            ]
        );
    }

    #[test]
    fn clear_env_does_not_read_etc_environment() {
        let env = build_env_with(true, &[], "/", || panic!("must not be read")).unwrap();
        assert!(env.is_empty());
    }

    #[test]
    fn clear_env_starts_empty_and_bad_keys_are_refused() {
        assert_eq!(build_env(true, &[], "/").unwrap(), vec![]);
        let bad = [pb::EnvVar {
            key: "A=B".into(),
            value: "".into(),
        }];
        assert_eq!(
            build_env(false, &bad, "/"),
            Err(EnvError::BadKey("A=B".into()))
        );
        let bad = [pb::EnvVar {
            key: "A".into(),
            value: "x\0y".into(),
        }];
        assert_eq!(
            build_env(false, &bad, "/"),
            Err(EnvError::BadValue("A".into()))
        );
    }
}
