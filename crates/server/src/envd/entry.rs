//! The pure half of the Filesystem service: hearth's `FileInfo` → envd's
//! `EntryInfo` (canonical proto3 JSON), the permissions string, guest user
//! and group names (from the guest's /etc/passwd and /etc/group, cached per
//! sandbox), and path resolution against the user's home.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use hearth_runtime::{pb, Sandbox};
use serde::Serialize;

use super::connect::ConnectError;

/// envd's `FileType` names.
pub const FILE_TYPE_FILE: &str = "FILE_TYPE_FILE";
pub const FILE_TYPE_DIRECTORY: &str = "FILE_TYPE_DIRECTORY";
pub const FILE_TYPE_SYMLINK: &str = "FILE_TYPE_SYMLINK";
pub const FILE_TYPE_UNSPECIFIED: &str = "FILE_TYPE_UNSPECIFIED";

/// `filesystem.EntryInfo` in canonical proto3 JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub file_type: &'static str,
    pub path: String,
    /// int64: a string in proto3 JSON.
    pub size: String,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub is_symlink: bool,
}

/// uid → user name, gid → group name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: HashMap<u32, String>,
    pub groups: HashMap<u32, String>,
}

impl Accounts {
    /// Parses /etc/passwd and /etc/group text (malformed lines are skipped).
    pub fn parse(passwd: &str, group: &str) -> Self {
        let mut a = Accounts::default();
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || line.starts_with('#') {
                continue;
            }
            if let Ok(uid) = f[2].parse::<u32>() {
                a.users.entry(uid).or_insert_with(|| f[0].to_string());
            }
        }
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || line.starts_with('#') {
                continue;
            }
            if let Ok(gid) = f[2].parse::<u32>() {
                a.groups.entry(gid).or_insert_with(|| f[0].to_string());
            }
        }
        a
    }

    /// The user's name, or the number when /etc/passwd has none.
    pub fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    pub fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

/// How long a sandbox's parsed accounts are trusted.
const ACCOUNTS_TTL: Duration = Duration::from_secs(30);
/// The most sandboxes whose accounts are cached.
const ACCOUNTS_MAX: usize = 1024;

/// The most bytes of /etc/passwd or /etc/group read (a guest can write
/// anything there).
const ACCOUNTS_FILE_MAX: u64 = 4 << 20;

/// The text of a small guest file; empty (names fall back to numbers) when
/// it is missing, unreadable or over [`ACCOUNTS_FILE_MAX`].
async fn read_small(sbx: &Sandbox, path: &str) -> String {
    match sbx.stat(path).await {
        Ok(i) if i.size <= ACCOUNTS_FILE_MAX => {}
        Ok(i) => {
            tracing::warn!(
                path,
                size = i.size,
                "guest account file too large; owners shown as numbers"
            );
            return String::new();
        }
        Err(_) => return String::new(),
    }
    sbx.read_file(path)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Per-sandbox [`Accounts`], read from the guest on first use.
#[derive(Default)]
pub struct AccountsCache {
    map: Mutex<HashMap<String, (Instant, Arc<Accounts>)>>,
}

impl AccountsCache {
    pub async fn get(&self, sbx: &Sandbox) -> Arc<Accounts> {
        let id = sbx.id().to_string();
        {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, a)) = map.get(&id) {
                if at.elapsed() < ACCOUNTS_TTL {
                    return Arc::clone(a);
                }
            }
        }
        let passwd = read_small(sbx, "/etc/passwd").await;
        let group = read_small(sbx, "/etc/group").await;
        let a = Arc::new(Accounts::parse(&passwd, &group));
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= ACCOUNTS_MAX {
            map.retain(|_, (at, _)| at.elapsed() < ACCOUNTS_TTL);
            if map.len() >= ACCOUNTS_MAX {
                map.clear();
            }
        }
        map.insert(id, (Instant::now(), Arc::clone(&a)));
        a
    }
}

/// `drwxr-xr-x`-style text of a kind and permission bits (as Go's
/// `FileMode.String()`, which envd reports: `L` for a symlink).
pub fn permissions_string(kind: pb::FileKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        pb::FileKind::Dir => 'd',
        pb::FileKind::Symlink => 'L',
        _ => '-',
    });
    let rwx = [b'r', b'w', b'x'];
    for i in (0..9).rev() {
        let bit = 1 << i;
        s.push(if mode & bit != 0 {
            rwx[(8 - i) % 3] as char
        } else {
            '-'
        });
    }
    s
}

/// envd's `FileType` for a hearth file kind.
pub fn file_type(kind: pb::FileKind) -> &'static str {
    match kind {
        pb::FileKind::File => FILE_TYPE_FILE,
        pb::FileKind::Dir => FILE_TYPE_DIRECTORY,
        pb::FileKind::Symlink => FILE_TYPE_SYMLINK,
        pb::FileKind::Other | pb::FileKind::Unspecified => FILE_TYPE_UNSPECIFIED,
    }
}

/// RFC 3339 UTC text of a time in nanoseconds since the epoch.
pub fn rfc3339(ns: i64) -> String {
    let t = if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    };
    humantime::format_rfc3339_nanos(t.max(UNIX_EPOCH)).to_string()
}

/// The EntryInfo of `info`, found at `path` (absolute).
pub fn entry_info(info: &pb::FileInfo, path: &str, accounts: &Accounts) -> EntryInfo {
    let kind = pb::FileKind::try_from(info.kind).unwrap_or(pb::FileKind::Unspecified);
    let is_symlink = kind == pb::FileKind::Symlink;
    let name = if info.name.is_empty() {
        path.rsplit('/').next().unwrap_or("").to_string()
    } else {
        info.name.clone()
    };
    EntryInfo {
        name,
        file_type: file_type(kind),
        path: path.to_string(),
        size: info.size.to_string(),
        mode: info.mode & 0o7777,
        permissions: permissions_string(kind, info.mode),
        owner: accounts.user(info.uid),
        group: accounts.group(info.gid),
        modified_time: Some(rfc3339(info.mtime_ns)),
        symlink_target: is_symlink.then(|| info.symlink_target.clone()),
        metadata: BTreeMap::new(),
        is_symlink,
    }
}

/// `path` made absolute against `home` and normalised (`.`, `..`, `//`,
/// `~`); an empty path is the home itself. A path with a NUL is refused.
pub fn resolve(path: &str, home: &str) -> Result<String, ConnectError> {
    if path.contains('\0') {
        return Err(ConnectError::invalid_argument(format!(
            "invalid path {path:?}: it contains a NUL byte"
        )));
    }
    let joined = if path.starts_with('/') {
        path.to_string()
    } else if path == "~" {
        home.to_string()
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else {
        format!("{home}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The last component of an absolute path (`/` for the root).
pub fn base_name(path: &str) -> String {
    match path.rsplit('/').next() {
        Some("") | None => "/".into(),
        Some(n) => n.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_like_go() {
        assert_eq!(permissions_string(pb::FileKind::File, 0o644), "-rw-r--r--");
        assert_eq!(permissions_string(pb::FileKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(
            permissions_string(pb::FileKind::Symlink, 0o777),
            "Lrwxrwxrwx"
        );
        assert_eq!(permissions_string(pb::FileKind::File, 0o4700), "-rwx------");
        assert_eq!(permissions_string(pb::FileKind::File, 0), "----------");
    }

    #[test]
    fn resolves_against_home() {
        let h = "/home/user";
        assert_eq!(resolve("a.txt", h).unwrap(), "/home/user/a.txt");
        assert_eq!(resolve("./d/../b", h).unwrap(), "/home/user/b");
        assert_eq!(resolve("/tmp//x/", h).unwrap(), "/tmp/x");
        assert_eq!(resolve("", h).unwrap(), "/home/user");
        assert_eq!(resolve("~", h).unwrap(), "/home/user");
        assert_eq!(resolve("~/q", h).unwrap(), "/home/user/q");
        assert_eq!(resolve("/../..", h).unwrap(), "/");
        let e = resolve("a\0b", h).unwrap_err();
        assert!(e.message.contains("NUL"), "{e}");
    }

    #[test]
    fn accounts_from_etc_files() {
        let a = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\nbad line\n",
            "root:x:0:\nuser:x:1000:\nstaff:x:50:user\n",
        );
        assert_eq!(a.user(0), "root");
        assert_eq!(a.user(1000), "user");
        assert_eq!(a.user(4242), "4242");
        assert_eq!(a.group(50), "staff");
        assert_eq!(a.group(7), "7");
    }

    #[test]
    fn file_info_to_entry_info() {
        let a = Accounts::parse("user:x:1000:1000::/home/user:/bin/sh\n", "user:x:1000:\n");
        let info = pb::FileInfo {
            name: "f.txt".into(),
            kind: pb::FileKind::File as i32,
            size: 5 * 1024 * 1024,
            mode: 0o644,
            mtime_ns: 1_700_000_000_123_000_000,
            uid: 1000,
            gid: 1000,
            symlink_target: String::new(),
        };
        let e = entry_info(&info, "/home/user/f.txt", &a);
        assert_eq!(e.name, "f.txt");
        assert_eq!(e.file_type, FILE_TYPE_FILE);
        assert_eq!(e.size, "5242880");
        assert_eq!(e.mode, 0o644);
        assert_eq!(e.permissions, "-rw-r--r--");
        assert_eq!((e.owner.as_str(), e.group.as_str()), ("user", "user"));
        assert_eq!(
            e.modified_time.as_deref(),
            Some("2023-11-14T22:13:20.123000000Z")
        );
        assert!(!e.is_symlink && e.symlink_target.is_none());
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["type"], "FILE_TYPE_FILE");
        assert_eq!(j["modifiedTime"], "2023-11-14T22:13:20.123000000Z");
        assert_eq!(j["isSymlink"], false);
        assert!(j.get("metadata").is_none());

        let link = pb::FileInfo {
            name: "l".into(),
            kind: pb::FileKind::Symlink as i32,
            mode: 0o777,
            symlink_target: "/etc".into(),
            ..Default::default()
        };
        let e = entry_info(&link, "/l", &a);
        assert_eq!(e.file_type, FILE_TYPE_SYMLINK);
        assert!(e.is_symlink);
        assert_eq!(e.symlink_target.as_deref(), Some("/etc"));
        assert_eq!(e.owner, "0", "uid 0 is not in this passwd");
        let d = pb::FileInfo {
            kind: pb::FileKind::Dir as i32,
            mode: 0o755,
            ..Default::default()
        };
        let e = entry_info(&d, "/home/user/dir", &a);
        assert_eq!((e.name.as_str(), e.file_type), ("dir", FILE_TYPE_DIRECTORY));
        assert_eq!(e.permissions, "drwxr-xr-x");
    }
}
