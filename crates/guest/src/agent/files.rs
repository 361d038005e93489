//! `STAT`, `LIST_DIR`, `MKDIR`, `REMOVE`, `RENAME`, and the errno → error-code
//! mapping shared by every file request. Everything here blocks: callers run
//! it on the blocking pool.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use hearth_proto::message::error;
use hearth_proto::{os_error_text, pb, Message};
use prost::Message as _;

/// Wire code for an errno.
pub fn code_for_errno(errno: i32) -> pb::ErrorCode {
    match errno {
        libc::ENOENT => pb::ErrorCode::NotFound,
        libc::EACCES | libc::EPERM | libc::EROFS => pb::ErrorCode::PermissionDenied,
        libc::EEXIST => pb::ErrorCode::AlreadyExists,
        libc::ENOSPC | libc::EDQUOT => pb::ErrorCode::NoSpace,
        _ => pb::ErrorCode::Io,
    }
}

/// `ERROR` for a failed file operation: code and errno from `e`, and a
/// message naming the operation, the path and the OS text (not the number,
/// which is the `errno` field).
pub fn io_error(op: &str, path: &str, e: &io::Error) -> Message {
    let errno = e.raw_os_error().unwrap_or(0);
    let code = if errno == 0 {
        pb::ErrorCode::Io
    } else {
        code_for_errno(errno)
    };
    error(code, format!("{op} {path}: {}", os_error_text(e)), errno)
}

/// Runs one of the simple file requests and returns its answer.
pub fn handle(msg: Message, max_frame_len: u32) -> Message {
    match msg {
        Message::Stat(r) => match file_info(Path::new(&r.path), r.follow_symlinks) {
            Ok(info) => Message::StatResult(pb::StatResult { info: Some(info) }),
            Err(e) => io_error("stat", &r.path, &e),
        },
        Message::ListDir(r) => match list_dir(&r.path, max_frame_len) {
            Ok(res) => Message::ListDirResult(res),
            Err(e) => io_error("list", &r.path, &e),
        },
        Message::Mkdir(r) => {
            let mode = if r.mode == 0 { 0o755 } else { r.mode & 0o7777 };
            match std::fs::DirBuilder::new()
                .recursive(r.parents)
                .mode(mode)
                .create(&r.path)
            {
                Ok(()) => Message::Ok(pb::Ok {}),
                Err(e) => io_error("mkdir", &r.path, &e),
            }
        }
        Message::Remove(r) => remove(&r.path, r.recursive),
        Message::Rename(r) => match std::fs::rename(&r.from, &r.to) {
            Ok(()) => Message::Ok(pb::Ok {}),
            Err(e) => io_error("rename", &format!("{} to {}", r.from, r.to), &e),
        },
        other => error(
            pb::ErrorCode::Internal,
            format!("{} is not a file request", other.message_type().name()),
            0,
        ),
    }
}

fn remove(path: &str, recursive: bool) -> Message {
    // The codec refuses "/" itself; this catches "/.", "//", "/tmp/.." and the like.
    if let Ok(real) = std::fs::canonicalize(path) {
        if real == Path::new("/") {
            return error(
                pb::ErrorCode::InvalidArgument,
                format!("refusing to remove {path} (it is /)"),
                0,
            );
        }
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return io_error("remove", path, &e),
    };
    let r = if meta.is_dir() {
        if recursive {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_dir(path)
        }
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Ok(()) => Message::Ok(pb::Ok {}),
        Err(e) => io_error("remove", path, &e),
    }
}

/// Describes `path` (the final symlink followed only if asked).
pub fn file_info(path: &Path, follow: bool) -> io::Result<pb::FileInfo> {
    let meta = if follow {
        std::fs::metadata(path)?
    } else {
        std::fs::symlink_metadata(path)?
    };
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        pb::FileKind::Symlink
    } else if ft.is_dir() {
        pb::FileKind::Dir
    } else if ft.is_file() {
        pb::FileKind::File
    } else {
        pb::FileKind::Other
    };
    let symlink_target = if ft.is_symlink() {
        std::fs::read_link(path)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_string());
    Ok(pb::FileInfo {
        name,
        kind: kind as i32,
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        uid: meta.uid(),
        gid: meta.gid(),
        symlink_target,
    })
}

/// Entries sorted by name, cut (and flagged) to fit one frame.
fn list_dir(path: &str, max_frame_len: u32) -> io::Result<pb::ListDirResult> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        match file_info(&entry.path(), false) {
            Ok(info) => entries.push(info),
            // Removed between readdir and lstat: it is simply not listed.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let budget = (max_frame_len as usize).saturating_sub(64);
    let mut used = 0usize;
    let mut keep = entries.len();
    for (i, e) in entries.iter().enumerate() {
        // Field tag + length prefix + message.
        let len = e.encoded_len();
        used += 1 + prost::length_delimiter_len(len) + len;
        if used > budget {
            keep = i;
            break;
        }
    }
    let truncated = keep < entries.len();
    entries.truncate(keep);
    Ok(pb::ListDirResult { entries, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errnos_to_codes() {
        assert_eq!(code_for_errno(libc::ENOENT), pb::ErrorCode::NotFound);
        assert_eq!(
            code_for_errno(libc::EACCES),
            pb::ErrorCode::PermissionDenied
        );
        assert_eq!(code_for_errno(libc::EPERM), pb::ErrorCode::PermissionDenied);
        assert_eq!(code_for_errno(libc::EROFS), pb::ErrorCode::PermissionDenied);
        assert_eq!(code_for_errno(libc::EEXIST), pb::ErrorCode::AlreadyExists);
        assert_eq!(code_for_errno(libc::ENOSPC), pb::ErrorCode::NoSpace);
        assert_eq!(code_for_errno(libc::EIO), pb::ErrorCode::Io);
    }

    #[test]
    fn errors_name_the_path_and_carry_errno() {
        let Message::Error(e) = handle(
            Message::Stat(pb::Stat {
                path: "/nonexistent/x".into(),
                follow_symlinks: false,
            }),
            1 << 20,
        ) else {
            panic!("stat of a missing path must fail");
        };
        assert_eq!(
            (e.code, e.errno),
            (pb::ErrorCode::NotFound as i32, libc::ENOENT)
        );
        assert_eq!(e.message, "stat /nonexistent/x: No such file or directory");
    }

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hearth-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creating a test dir");
        d
    }

    #[test]
    fn list_dir_is_sorted_and_truncated_to_the_frame() {
        let d = tmpdir("list");
        for n in ["b", "a", "c"] {
            std::fs::write(d.join(n), n).expect("writing a test file");
        }
        let r = list_dir(d.to_str().unwrap(), 1 << 20).unwrap();
        let names: Vec<_> = r.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!((names, r.truncated), (vec!["a", "b", "c"], false));
        let small = list_dir(d.to_str().unwrap(), 64 + 50).unwrap();
        assert!(small.truncated && small.entries.len() < 3, "{small:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn mkdir_remove_rename_round_trip() {
        let d = tmpdir("ops");
        let p = d.join("x/y");
        let ps = p.to_str().unwrap().to_string();
        let ok = |m: Message| assert!(matches!(m, Message::Ok(_)), "{m:?}");
        ok(handle(
            Message::Mkdir(pb::Mkdir {
                path: ps.clone(),
                mode: 0,
                parents: true,
            }),
            1 << 20,
        ));
        let Message::Error(e) = handle(
            Message::Mkdir(pb::Mkdir {
                path: ps.clone(),
                mode: 0,
                parents: false,
            }),
            1 << 20,
        ) else {
            panic!("mkdir of an existing dir must fail");
        };
        assert_eq!(e.code, pb::ErrorCode::AlreadyExists as i32);
        let to = d.join("z").to_str().unwrap().to_string();
        ok(handle(
            Message::Rename(pb::Rename {
                from: ps.clone(),
                to: to.clone(),
            }),
            1 << 20,
        ));
        assert!(Path::new(&to).is_dir());
        let dx = d.join("x").to_str().unwrap().to_string();
        ok(handle(
            Message::Remove(pb::Remove {
                path: dx,
                recursive: false,
            }),
            1 << 20,
        ));
        let ds = d.to_str().unwrap().to_string();
        let Message::Error(_) = handle(
            Message::Remove(pb::Remove {
                path: ds.clone(),
                recursive: false,
            }),
            1 << 20,
        ) else {
            panic!("non-recursive remove of a non-empty dir must fail");
        };
        ok(handle(
            Message::Remove(pb::Remove {
                path: ds,
                recursive: true,
            }),
            1 << 20,
        ));
        assert!(!d.exists());
    }

    #[test]
    fn remove_refuses_root_spelled_differently() {
        let m = remove("/tmp/..", true);
        assert!(
            matches!(&m, Message::Error(e) if e.code == pb::ErrorCode::InvalidArgument as i32),
            "{m:?}"
        );
    }
}
