//! File requests: chunked read and write, stat, list, mkdir, remove, rename.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hearth_proto::{pb, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::conn::{unexpected, Client, Reply, StreamKind, StreamSpec};
use crate::credit::InputCredit;
use crate::error::ClientError;

/// Credit granted to the agent for a file read.
const READ_WINDOW: u32 = 4 * 1024 * 1024;
/// Largest FILE_DATA chunk the client sends to an agent without input credit.
const WRITE_CHUNK: usize = 1024 * 1024;
/// Largest FILE_DATA chunk under input credit: a few per window, so the
/// agent writes one while the next is on its way.
const CREDITED_WRITE_CHUNK: usize = 256 * 1024;

impl Client {
    /// Reads a whole file into memory.
    pub async fn read_file(&self, path: &str) -> Result<Bytes, ClientError> {
        let mut out = Vec::new();
        self.read_file_to(path, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// Streams a file into `w`; returns the number of bytes written.
    pub async fn read_file_to<W: AsyncWrite + Unpin>(
        &self,
        path: &str,
        w: &mut W,
    ) -> Result<u64, ClientError> {
        self.require(pb::Capability::Files, "file transfer")?;
        let credit = self
            .flow_control()
            .then(|| Arc::new(AtomicI64::new(READ_WINDOW as i64)));
        let req = Message::FileRead(pb::FileRead {
            path: path.to_string(),
            offset: 0,
            length: 0,
            window: READ_WINDOW,
        });
        let spec = StreamSpec {
            kind: StreamKind::Read,
            credit: credit.clone(),
            input: None,
        };
        let (seq, mut rx) = self.open_stream(req, spec).await?;
        let mut guard = ReadGuard {
            client: self,
            seq,
            done: false,
        };
        let mut total = 0u64;
        let mut consumed = 0u32;
        loop {
            let msg = next(&mut rx).await?;
            let d = match msg {
                Message::FileData(d) => d,
                m => {
                    guard.done = true;
                    return Err(unexpected("read_file", m));
                }
            };
            if d.eof {
                guard.done = true;
            }
            w.write_all(&d.data)
                .await
                .map_err(|e| ClientError::LocalIo {
                    op: format!("writing the contents of {path}"),
                    source: e,
                })?;
            total += d.data.len() as u64;
            if d.eof {
                w.flush().await.map_err(|e| ClientError::LocalIo {
                    op: format!("writing the contents of {path}"),
                    source: e,
                })?;
                return Ok(total);
            }
            if let Some(c) = &credit {
                consumed += d.data.len() as u32;
                if consumed >= READ_WINDOW / 4 {
                    let bytes = std::mem::take(&mut consumed);
                    c.fetch_add(bytes as i64, Ordering::AcqRel);
                    let m = Message::WindowUpdate(pb::WindowUpdate { bytes });
                    self.send_frame(m.into_frame(seq)).await?;
                }
            }
        }
    }

    /// Writes everything from `r` to `path` on the guest with chunked
    /// FILE_WRITE; the file appears atomically. Returns the bytes written.
    /// Chunks follow the agent's input credit when it grants one.
    pub async fn write_file<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        r: &mut R,
        mode: u32,
        create_parents: bool,
    ) -> Result<u64, ClientError> {
        self.write_file_owned(path, r, mode, create_parents, None)
            .await
    }

    /// [`write_file`](Self::write_file), the file owned by `owner` (needs
    /// CAPABILITY_FILE_OWNER when set).
    pub async fn write_file_owned<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        r: &mut R,
        mode: u32,
        create_parents: bool,
        owner: Option<pb::FileOwner>,
    ) -> Result<u64, ClientError> {
        self.require(pb::Capability::Files, "file transfer")?;
        if owner.is_some() {
            self.require(pb::Capability::FileOwner, "file owners on writes")?;
        }
        let input = self.input_credit();
        let req = Message::FileWrite(pb::FileWrite {
            path: path.to_string(),
            mode,
            create_parents,
            size: 0,
            input_credit: input.is_some(),
            owner,
        });
        let spec = StreamSpec {
            kind: StreamKind::Write,
            credit: None,
            input: input.clone(),
        };
        let (seq, mut rx) = self.open_stream(req, spec).await?;
        let most = if input.is_some() {
            CREDITED_WRITE_CHUNK
        } else {
            WRITE_CHUNK
        };
        let chunk = most.min(self.max_payload().saturating_sub(64)).max(1);
        let mut sent = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(chunk);
            // Fill a whole chunk (or reach EOF) so frames stay large.
            let mut eof = false;
            while buf.len() < chunk {
                let n = r
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| ClientError::LocalIo {
                        op: format!("reading the data for {path}"),
                        source: e,
                    })?;
                if n == 0 {
                    eof = true;
                    break;
                }
            }
            // The agent may refuse early (e.g. permission denied).
            if let Ok(m) = rx.try_recv() {
                return Err(finish_write(m, "write_file"));
            }
            sent += buf.len() as u64;
            if !self
                .send_chunk(seq, buf.freeze(), eof, input.as_deref())
                .await?
            {
                // The write ended on the agent before all data was sent.
                break;
            }
            if eof {
                break;
            }
        }
        match next(&mut rx).await? {
            Message::WriteFileResult(r) => {
                if r.bytes_written != sent {
                    return Err(ClientError::Protocol {
                        reason: format!(
                            "write_file {path}: sent {sent} bytes, the agent wrote {}",
                            r.bytes_written
                        ),
                    });
                }
                Ok(r.bytes_written)
            }
            m => Err(unexpected("write_file", m)),
        }
    }

    /// Sends `data` as FILE_DATA for `seq`, in pieces that fit the input
    /// credit when there is one; the last piece carries `eof`. Returns false
    /// when the stream ended on the agent first (its answer is on the route).
    async fn send_chunk(
        &self,
        seq: u32,
        mut data: Bytes,
        eof: bool,
        input: Option<&InputCredit>,
    ) -> Result<bool, ClientError> {
        loop {
            let n = match input {
                Some(c) if !data.is_empty() => match c.reserve(data.len()).await {
                    Ok(n) => n,
                    Err(crate::credit::Ended::Finished) => return Ok(false),
                    Err(crate::credit::Ended::Closed(reason)) => {
                        return Err(ClientError::ConnectionClosed { reason })
                    }
                },
                _ => data.len(),
            };
            let piece = data.split_to(n);
            let last = data.is_empty();
            let m = Message::FileData(pb::FileData {
                data: piece,
                eof: eof && last,
            });
            self.send_frame(m.into_frame(seq)).await?;
            if last {
                return Ok(true);
            }
        }
    }

    /// Metadata of `path` (symlinks are not followed).
    pub async fn stat(&self, path: &str) -> Result<pb::FileInfo, ClientError> {
        self.require(pb::Capability::Files, "stat")?;
        let m = Message::Stat(pb::Stat {
            path: path.to_string(),
            follow_symlinks: false,
        });
        match self.request(m).await? {
            Message::StatResult(r) => r.info.ok_or_else(|| ClientError::Protocol {
                reason: format!("stat {path}: answer has no info"),
            }),
            m => Err(unexpected("stat", m)),
        }
    }

    /// Entries of a directory, sorted by name. Fails if the agent cut the list.
    pub async fn list_dir(&self, path: &str) -> Result<Vec<pb::FileInfo>, ClientError> {
        self.require(pb::Capability::Files, "list_dir")?;
        let m = Message::ListDir(pb::ListDir {
            path: path.to_string(),
        });
        match self.request(m).await? {
            Message::ListDirResult(r) if r.truncated => Err(ClientError::Protocol {
                reason: format!("list_dir {path}: the listing was truncated to fit a frame"),
            }),
            Message::ListDirResult(r) => Ok(r.entries),
            m => Err(unexpected("list_dir", m)),
        }
    }

    pub async fn mkdir(&self, path: &str, mode: u32, parents: bool) -> Result<(), ClientError> {
        self.require(pb::Capability::Files, "mkdir")?;
        let m = Message::Mkdir(pb::Mkdir {
            path: path.to_string(),
            mode,
            parents,
        });
        expect_ok("mkdir", self.request(m).await?)
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        self.require(pb::Capability::Files, "remove")?;
        let m = Message::Remove(pb::Remove {
            path: path.to_string(),
            recursive,
        });
        expect_ok("remove", self.request(m).await?)
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), ClientError> {
        self.require(pb::Capability::Files, "rename")?;
        let m = Message::Rename(pb::Rename {
            from: from.to_string(),
            to: to.to_string(),
        });
        expect_ok("rename", self.request(m).await?)
    }
}

fn expect_ok(op: &'static str, m: Message) -> Result<(), ClientError> {
    match m {
        Message::Ok(_) => Ok(()),
        m => Err(unexpected(op, m)),
    }
}

/// An early answer to a FILE_WRITE still in progress is always a failure.
fn finish_write(m: Reply, op: &'static str) -> ClientError {
    match m {
        Ok(m) => unexpected(op, m),
        Err(e) => e,
    }
}

async fn next(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Reply>,
) -> Result<Message, ClientError> {
    match rx.recv().await {
        Some(r) => r,
        None => Err(ClientError::ConnectionClosed {
            reason: "the request's route was dropped".into(),
        }),
    }
}

/// Unblocks an abandoned read: the agent gets unlimited credit and finishes.
struct ReadGuard<'a> {
    client: &'a Client,
    seq: u32,
    done: bool,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let m = Message::WindowUpdate(pb::WindowUpdate {
                bytes: u32::MAX / 2,
            });
            self.client.try_send_frame(m.into_frame(self.seq));
        }
    }
}
