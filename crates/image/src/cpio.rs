//! A minimal cpio "newc" (SVR4, no CRC) writer, plus a reader used by tests and
//! tools to check what was written.
//!
//! The Linux initramfs unpacker (`init/initramfs.c`) accepts exactly this format.
//! Parents must appear before their children; [`CpioWriter`] creates missing
//! parent directories itself. All timestamps are 0 and owners are root, so the
//! same inputs always produce the same bytes.

use std::collections::BTreeSet;
use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFMT: u32 = 0o170_000;

/// Errors from reading or writing a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("writing cpio archive")]
    Io(#[from] io::Error),
    #[error("invalid cpio path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("entry {path:?} is {len} bytes, over the newc limit of 4 GiB")]
    TooLarge { path: String, len: usize },
    #[error("cpio archive truncated at offset {offset}")]
    Truncated { offset: usize },
    #[error("bad cpio magic at offset {offset}")]
    BadMagic { offset: usize },
    #[error("bad hex field {field} at offset {offset}")]
    BadField { field: &'static str, offset: usize },
    #[error("archive has no TRAILER!!! entry")]
    NoTrailer,
}

/// What kind of file an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    /// A file type this reader does not model (block device, fifo, socket).
    Other,
}

/// One archive entry as read back by [`read_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// Permission bits only (the file type is in `kind`).
    pub perm: u32,
    pub kind: EntryKind,
}

/// Streams newc entries into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    dirs: BTreeSet<String>,
    offset: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            dirs: BTreeSet::new(),
            offset: 0,
        }
    }

    /// Adds a directory (and any missing parents). Adding one twice is a no-op.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        let path = normalize(path)?;
        self.ensure_parents(&path)?;
        if self.dirs.contains(&path) {
            return Ok(());
        }
        self.entry(&path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])?;
        self.dirs.insert(path);
        Ok(())
    }

    /// Adds a regular file with the given permission bits.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        let path = normalize(path)?;
        self.ensure_parents(&path)?;
        self.entry(&path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link `path -> target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let path = normalize(path)?;
        self.ensure_parents(&path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node, e.g. `dev/console` 5:1.
    pub fn char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let path = normalize(path)?;
        self.ensure_parents(&path)?;
        self.entry(&path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.entry(TRAILER, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn ensure_parents(&mut self, path: &str) -> Result<(), CpioError> {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            let parent = &path[..end + pos];
            if !self.dirs.contains(parent) {
                self.entry(parent, S_IFDIR | 0o755, 2, (0, 0), &[])?;
                self.dirs.insert(parent.to_owned());
            }
            end += pos + 1;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<(), CpioError> {
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            path: name.to_owned(),
            len: data.len(),
        })?;
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let namesize = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        self.write(&header)?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), CpioError> {
        let rem = (self.offset % 4) as usize;
        if rem != 0 {
            self.write(&[0u8; 3][..4 - rem])?;
        }
        Ok(())
    }
}

fn normalize(path: &str) -> Result<String, CpioError> {
    let p = path.trim_start_matches('/').trim_end_matches('/');
    let bad = |reason| CpioError::BadPath {
        path: path.to_owned(),
        reason,
    };
    if p.is_empty() {
        return Err(bad("empty"));
    }
    if p.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad("empty, '.' or '..' component"));
    }
    if p == TRAILER {
        return Err(bad("reserved trailer name"));
    }
    Ok(p.to_owned())
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses a whole uncompressed newc archive (up to its trailer).
pub fn read_entries(bytes: &[u8]) -> Result<Vec<Entry>, CpioError> {
    let mut entries = Vec::new();
    let mut off = 0usize;
    loop {
        let header = bytes
            .get(off..off + HEADER_LEN)
            .ok_or(CpioError::Truncated { offset: off })?;
        if &header[..6] != MAGIC {
            return Err(CpioError::BadMagic { offset: off });
        }
        let field = |idx: usize, name: &'static str| -> Result<u32, CpioError> {
            let raw = &header[6 + idx * 8..6 + idx * 8 + 8];
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or(CpioError::BadField {
                    field: name,
                    offset: off,
                })
        };
        let mode = field(1, "mode")?;
        let size = field(6, "filesize")? as usize;
        let rmaj = field(9, "rdevmajor")?;
        let rmin = field(10, "rdevminor")?;
        let namesize = field(11, "namesize")? as usize;
        if namesize == 0 {
            return Err(CpioError::BadField {
                field: "namesize",
                offset: off,
            });
        }
        let name_start = off + HEADER_LEN;
        let name_bytes = bytes
            .get(name_start..name_start + namesize - 1)
            .ok_or(CpioError::Truncated { offset: name_start })?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let data_start = align4(name_start + namesize);
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or(CpioError::Truncated { offset: data_start })?;
        off = align4(data_start + size);
        if name == TRAILER {
            return Ok(entries);
        }
        let kind = match mode & S_IFMT {
            S_IFDIR => EntryKind::Dir,
            S_IFREG => EntryKind::File(data.to_vec()),
            S_IFLNK => EntryKind::Symlink(String::from_utf8_lossy(data).into_owned()),
            S_IFCHR => EntryKind::CharDevice {
                major: rmaj,
                minor: rmin,
            },
            _ => EntryKind::Other,
        };
        entries.push(Entry {
            path: name,
            perm: mode & 0o7777,
            kind,
        });
        if off >= bytes.len() {
            return Err(CpioError::NoTrailer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.char_device("/dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"#!binary").unwrap();
        w.file("lib/modules/a/b.ko", 0o644, b"abcde").unwrap();
        w.symlink("bin/sh", "/init").unwrap();
        w.dir("tmp", 0o1777).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn written_archive_reads_back_with_parents_first() {
        let entries = read_entries(&sample()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/a",
                "lib/modules/a/b.ko",
                "bin",
                "bin/sh",
                "tmp"
            ]
        );
        let find = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
        assert_eq!(
            find("dev/console").kind,
            EntryKind::CharDevice { major: 5, minor: 1 }
        );
        assert_eq!(find("init").perm, 0o755);
        assert_eq!(find("init").kind, EntryKind::File(b"#!binary".to_vec()));
        assert_eq!(
            find("lib/modules/a/b.ko").kind,
            EntryKind::File(b"abcde".to_vec())
        );
        assert_eq!(find("bin/sh").kind, EntryKind::Symlink("/init".into()));
        assert_eq!(find("tmp").perm, 0o1777);
        assert_eq!(find("tmp").kind, EntryKind::Dir);
    }

    #[test]
    fn every_entry_is_four_byte_aligned() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        let mut off = 0;
        let mut count = 0;
        while let Some(pos) = bytes[off..].windows(6).position(|w| w == MAGIC) {
            assert_eq!((off + pos) % 4, 0, "entry at {} is misaligned", off + pos);
            off += pos + 6;
            count += 1;
        }
        assert_eq!(count, 11, "10 entries plus trailer");
    }

    #[test]
    fn system_cpio_lists_what_we_wrote() {
        use std::process::{Command, Stdio};
        let mut child = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the `cpio` tool is needed for this test (apt-get install cpio)");
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "cpio -t failed: {out:?}");
        let listing = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = listing.lines().collect();
        assert!(names.contains(&"lib/modules/a/b.ko"), "{listing}");
        assert!(names.contains(&"dev/console"), "{listing}");
        assert_eq!(names.len(), 10, "{listing}");
    }

    #[test]
    fn rejects_dot_dot_and_empty_paths() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(matches!(
            w.file("../etc/passwd", 0o644, b""),
            Err(CpioError::BadPath { .. })
        ));
        assert!(matches!(w.dir("/", 0o755), Err(CpioError::BadPath { .. })));
        assert!(matches!(
            w.file("a//b", 0o644, b""),
            Err(CpioError::BadPath { .. })
        ));
    }

    #[test]
    fn reader_rejects_truncated_and_garbage_input() {
        let bytes = sample();
        assert!(read_entries(&bytes[..bytes.len() - 200]).is_err());
        assert!(matches!(
            read_entries(&[b'x'; 200]),
            Err(CpioError::BadMagic { offset: 0 })
        ));
    }
}
