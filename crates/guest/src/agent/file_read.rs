//! `FILE_READ`: `FILE_DATA` chunks under a credit window, the last with `eof`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use hearth_proto::message::error;
use hearth_proto::{pb, Message};

use super::conn::chunk_max;
use super::credit::Credit;
use super::files::io_error;
use super::routes::Routes;
use super::writer::Writer;

/// Default credit of a file read.
pub const DEFAULT_WINDOW: u64 = 1024 * 1024;

fn open(path: &str, offset: u64) -> std::io::Result<File> {
    let mut f = File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    if offset > 0 {
        f.seek(SeekFrom::Start(offset))?;
    }
    Ok(f)
}

pub async fn run(req: pb::FileRead, seq: u32, credit: Arc<Credit>, writer: Writer, routes: Routes) {
    let path = req.path.clone();
    let offset = req.offset;
    let opened = tokio::task::spawn_blocking(move || open(&path, offset)).await;
    let mut file = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return finish(&routes, seq, &writer, io_error("read", &req.path, &e)).await,
        Err(e) => return finish(&routes, seq, &writer, task_failed(e)).await,
    };
    let chunk = chunk_max(writer.max_frame_len()) as u64;
    let mut remaining = if req.length == 0 {
        u64::MAX
    } else {
        req.length
    };
    loop {
        credit.wait().await;
        if credit.is_closed() {
            // Refused by the reader (a bad frame for this seq): that is the
            // answer. Otherwise the connection is gone.
            match credit.take_abort() {
                Some(reason) => return finish(&routes, seq, &writer, reason).await,
                None => return routes.remove(seq),
            }
        }
        let take = credit.available().min(chunk).min(remaining) as usize;
        let r = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; take];
            let r = read_some(&mut file, &mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (file, r)
        })
        .await;
        let data = match r {
            Ok((f, Ok(data))) => {
                file = f;
                data
            }
            Ok((_, Err(e))) => {
                return finish(&routes, seq, &writer, io_error("read", &req.path, &e)).await
            }
            Err(e) => return finish(&routes, seq, &writer, task_failed(e)).await,
        };
        let n = data.len() as u64;
        remaining -= n;
        let eof = n == 0 || remaining == 0;
        let msg = Message::FileData(pb::FileData {
            data: Bytes::from(data),
            eof,
        });
        if eof {
            return finish(&routes, seq, &writer, msg).await;
        }
        credit.take(n);
        if writer.send_data(seq, &msg).await.is_err() {
            routes.remove(seq);
            return;
        }
    }
}

/// Reads until `buf` is full or end of file.
fn read_some(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Sends the terminal frame after forgetting the route.
async fn finish(routes: &Routes, seq: u32, writer: &Writer, msg: Message) {
    routes.remove(seq);
    let _ = writer.send_data(seq, &msg).await;
}

/// The answer when a blocking read task panicked or was cancelled.
fn task_failed(e: tokio::task::JoinError) -> Message {
    error(pb::ErrorCode::Internal, format!("read task failed: {e}"), 0)
}
