//! File watches: [`Watch`], a stream of typed [`WatchEvent`]s for a path in
//! the sandbox (inotify in the guest, see docs/protocol.md "File watch").

use hearth_client::{pb, WatchOptions, WatchStream};

use crate::agent::Agent;
use crate::error::{Error, Result};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEventKind {
    Create,
    /// A file opened for writing was closed (once per write session).
    Write,
    Remove,
    /// `path` → `to`; either may be missing when that end is outside the watch.
    Rename,
    /// Permissions, owner, timestamps or link count.
    Attrib,
    /// Events were lost (`lost` says how many, when known).
    Overflow,
}

impl std::fmt::Display for WatchEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WatchEventKind::Create => "create",
            WatchEventKind::Write => "write",
            WatchEventKind::Remove => "remove",
            WatchEventKind::Rename => "rename",
            WatchEventKind::Attrib => "attrib",
            WatchEventKind::Overflow => "overflow",
        })
    }
}

/// One event of a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WatchEvent {
    pub kind: WatchEventKind,
    /// The path (a rename's source); `None` for an overflow, or a rename
    /// from outside the watch.
    pub path: Option<String>,
    /// A rename's destination, when it is inside the watch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub is_dir: bool,
    /// Overflow: events lost (`None` when the kernel's queue overflowed and
    /// the count is unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
}

impl std::fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |o: &Option<String>| o.clone().unwrap_or_else(|| "(outside)".into());
        match self.kind {
            WatchEventKind::Rename => write!(f, "rename {} -> {}", p(&self.path), p(&self.to)),
            WatchEventKind::Overflow => match self.lost {
                Some(n) => write!(f, "overflow: {n} events lost"),
                None => write!(f, "overflow: events lost (count unknown)"),
            },
            k => {
                let slash = if self.is_dir { "/" } else { "" };
                write!(f, "{k} {}{slash}", p(&self.path))
            }
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl WatchEvent {
    /// `None` for events the caller never sees (STARTED, unknown kinds).
    fn from_wire(e: pb::WatchEvent) -> Option<WatchEvent> {
        use pb::WatchEventKind as K;
        let kind = match K::try_from(e.kind).ok()? {
            K::Create => WatchEventKind::Create,
            K::Write => WatchEventKind::Write,
            K::Remove => WatchEventKind::Remove,
            K::Rename => WatchEventKind::Rename,
            K::Attrib => WatchEventKind::Attrib,
            K::Overflow => WatchEventKind::Overflow,
            K::Started | K::Unspecified => return None,
        };
        let lost = match kind {
            WatchEventKind::Overflow => (e.lost > 0).then_some(e.lost),
            _ => None,
        };
        Some(WatchEvent {
            kind,
            path: non_empty(e.path),
            to: non_empty(e.to),
            is_dir: e.is_dir,
            lost,
        })
    }
}

/// A running watch; dropping it ends the watch in the guest.
#[derive(Debug)]
pub struct Watch {
    stream: WatchStream,
    label: String,
    path: String,
}

impl Watch {
    /// The next event, in order; `None` once the watch ended (the root was
    /// removed, or [`Watch::close`]). See [`Watch::end_reason`].
    pub async fn next(&mut self) -> Result<Option<WatchEvent>> {
        loop {
            match self.stream.next().await {
                Ok(Some(e)) => {
                    if let Some(e) = WatchEvent::from_wire(e) {
                        return Ok(Some(e));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(Error::agent(
                        format!("{}: watch of :{}", self.label, self.path),
                        e,
                    ))
                }
            }
        }
    }

    /// Why the watch ended, once it has (`root removed`, `closed`).
    pub fn end_reason(&self) -> Option<String> {
        use pb::StreamEndReason as R;
        let end = self.stream.end()?;
        Some(match R::try_from(end.reason) {
            Ok(R::RootGone) => format!("{} was removed", self.path),
            Ok(R::Closed) => "closed".to_string(),
            _ if !end.message.is_empty() => end.message.clone(),
            _ => "the connection ended".to_string(),
        })
    }

    /// Ends the watch and waits for the guest to confirm.
    pub async fn close(self) -> Result<()> {
        let (label, path) = (self.label, self.path);
        self.stream
            .close()
            .await
            .map(drop)
            .map_err(|e| Error::agent(format!("{label}: closing the watch of :{path}"), e))
    }
}

impl Agent {
    /// Watches `path` in the guest; returns once the watch is in place.
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<Watch> {
        let opts = WatchOptions {
            recursive,
            ..Default::default()
        };
        let stream = self
            .client()
            .watch(path, &opts)
            .await
            .map_err(|e| Error::agent(format!("{}: cannot watch :{path}", self.label()), e))?;
        Ok(Watch {
            stream,
            label: self.label().to_string(),
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_events_become_typed_ones() {
        let e = WatchEvent::from_wire(pb::WatchEvent {
            kind: pb::WatchEventKind::Rename as i32,
            path: "/a".into(),
            to: String::new(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(e.to_string(), "rename /a -> (outside)");
        let started = pb::WatchEvent {
            kind: pb::WatchEventKind::Started as i32,
            ..Default::default()
        };
        assert_eq!(WatchEvent::from_wire(started), None);
        let o = WatchEvent::from_wire(pb::WatchEvent {
            kind: pb::WatchEventKind::Overflow as i32,
            lost: 7,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(o.to_string(), "overflow: 7 events lost");
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"kind": "overflow", "path": null, "is_dir": false, "lost": 7})
        );
    }
}
