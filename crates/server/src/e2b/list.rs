//! `GET /sandboxes` and `GET /v2/sandboxes`: the list, its filters and
//! its pagination.
//!
//! - `metadata` comes URL-encoded twice: the SDK quotes each key and value,
//!   joins them as `k=v&...`, and the whole string is encoded again as the
//!   query value. Every pair must match.
//! - `state` is comma-joined (`running,paused`); only running and paused
//!   sandboxes exist for E2B clients (stopped or failed ones are hidden).
//! - `template`, `startedAfter` (RFC 3339), `order` (`asc`, the default, or
//!   `desc` by start time), `limit` (1..=1000, default 100).
//! - The order is stable: start time, then id. `nextToken` is opaque (hex of
//!   a versioned cursor: the last item's start time and id) and validated; the
//!   next page begins after the cursor. `X-Next-Token` is set while more
//!   items remain.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use hearth_runtime::runtime::ListFilter;
use hearth_runtime::{VmRecord, VmStatus};

use super::model::{parse_rfc3339_ms, SandboxDetail};
use super::sandboxes::detail;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The parsed query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    pub metadata: BTreeMap<String, String>,
    /// Empty: every state.
    pub states: Vec<State2>,
    pub template: Option<String>,
    pub started_after_ms: Option<u64>,
    pub descending: bool,
    pub limit: usize,
    pub after: Option<Cursor>,
}

/// E2B's sandbox states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State2 {
    Running,
    Paused,
}

/// Where a page begins: after the item with this start time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_ms: u64,
    pub id: String,
}

const TOKEN_PREFIX: &str = "hearth-list-v1";

impl Cursor {
    pub fn token(&self) -> String {
        hex::encode(format!("{TOKEN_PREFIX}\n{}\n{}", self.created_ms, self.id))
    }

    pub fn parse(token: &str) -> Result<Cursor, ApiError> {
        let bad = || {
            ApiError::bad_request(format!(
                "invalid nextToken {token:?}: not a token this server issued"
            ))
        };
        let raw = hex::decode(token).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let mut parts = text.split('\n');
        let (Some(TOKEN_PREFIX), Some(ms), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let created_ms = ms.parse().map_err(|_| bad())?;
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad());
        }
        Ok(Cursor {
            created_ms,
            id: id.to_string(),
        })
    }
}

/// Parses the twice-encoded metadata filter (`raw` is the query value after
/// the first decoding).
pub fn parse_metadata(raw: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::bad_request(format!("metadata filter {raw:?} is not UTF-8")))
        };
        let key = dec(&k)?;
        if key.is_empty() {
            return Err(ApiError::bad_request(format!(
                "metadata filter {raw:?} has an empty key"
            )));
        }
        out.insert(key, dec(&v)?);
    }
    Ok(out)
}

/// Parses a raw query string.
pub fn parse_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*k {
            "metadata" => q.metadata.extend(parse_metadata(&v)?),
            "state" => {
                for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    q.states.push(match s {
                        "running" => State2::Running,
                        "paused" => State2::Paused,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "unknown state {s:?} (running, paused)"
                            )))
                        }
                    });
                }
            }
            "template" if !v.is_empty() => q.template = Some(v.into_owned()),
            "startedAfter" if !v.is_empty() => {
                q.started_after_ms = Some(parse_rfc3339_ms(&v).ok_or_else(|| {
                    ApiError::bad_request(format!("startedAfter {v:?} is not an RFC 3339 time"))
                })?)
            }
            "order" => {
                q.descending = match &*v {
                    "asc" | "" => false,
                    "desc" => true,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "unknown order {v:?} (asc, desc)"
                        )))
                    }
                }
            }
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit {v:?} is out of range (1..={MAX_LIMIT})"
                        ))
                    })?
            }
            "nextToken" if !v.is_empty() => q.after = Some(Cursor::parse(&v)?),
            _ => {}
        }
    }
    Ok(q)
}

fn created_ms(r: &VmRecord) -> u64 {
    r.created_at.saturating_mul(1000)
}

/// One page of `records` (any order) and the cursor of the next one.
pub fn page<'a>(records: &'a [VmRecord], q: &ListQuery) -> (Vec<&'a VmRecord>, Option<Cursor>) {
    let wants = |s: State2| q.states.is_empty() || q.states.contains(&s);
    let mut v: Vec<&VmRecord> = records
        .iter()
        .filter(|r| match r.status {
            VmStatus::Running => wants(State2::Running),
            VmStatus::Paused => wants(State2::Paused),
            VmStatus::Creating | VmStatus::Stopped | VmStatus::Failed => false,
        })
        .filter(|r| {
            q.metadata
                .iter()
                .all(|(k, val)| r.metadata.get(k) == Some(val))
        })
        .filter(|r| {
            q.template.as_deref().is_none_or(|t| {
                super::templates::resolve(t).is_ok_and(|t| t.language == r.language)
            })
        })
        .filter(|r| q.started_after_ms.is_none_or(|t| created_ms(r) > t))
        .collect();
    let key = |r: &&VmRecord| (created_ms(r), r.id.clone());
    v.sort_by_key(key);
    if q.descending {
        v.reverse();
    }
    if let Some(c) = &q.after {
        let ck = (c.created_ms, c.id.clone());
        v.retain(|r| {
            if q.descending {
                key(r) < ck
            } else {
                key(r) > ck
            }
        });
    }
    let more = v.len() > q.limit;
    v.truncate(q.limit);
    let next = more.then(|| v.last()).flatten().map(|r| Cursor {
        created_ms: created_ms(r),
        id: r.id.clone(),
    });
    (v, next)
}

/// The list route (both versions).
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<(HeaderMap, Json<Vec<SandboxDetail>>)> {
    let q = parse_query(raw.as_deref())?;
    let records = state
        .runtime()
        .list(&ListFilter {
            status: vec![VmStatus::Running, VmStatus::Paused],
            name: None,
        })
        .await?;
    let (items, next) = page(&records, &q);
    let mut headers = HeaderMap::new();
    if let Some(c) = next {
        if let Ok(v) = HeaderValue::from_str(&c.token()) {
            headers.insert("x-next-token", v);
        }
    }
    let body = items
        .into_iter()
        .map(|r| detail(&state, r, false))
        .collect();
    Ok((headers, Json(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_decoded_twice() {
        // What the SDK makes of {"user name": "a&b=c/ü", "k": "v"}: each key
        // and value quoted, then joined with urlencode (python's
        // `urlencode({quote(k): quote(v)})`) ...
        let value = "user%2520name=a%2526b%253Dc%2F%25C3%25BC&k=v";
        let m = parse_metadata(value).unwrap();
        assert_eq!(m.get("user name").map(String::as_str), Some("a&b=c/ü"));
        assert_eq!(m.get("k").map(String::as_str), Some("v"));
        assert_eq!(m.len(), 2);
        // ... and the whole value encoded again as a query parameter.
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("metadata", value)
            .append_pair("state", "running,paused")
            .append_pair("limit", "2")
            .finish();
        let q = parse_query(Some(&query)).unwrap();
        assert_eq!(q.metadata, m);
        assert_eq!(q.states, vec![State2::Running, State2::Paused]);
        assert_eq!(q.limit, 2);
    }

    #[test]
    fn bad_values_are_400_naming_them() {
        for (raw, needle) in [
            ("state=sleeping", "\"sleeping\""),
            ("limit=0", "\"0\""),
            ("limit=many", "\"many\""),
            ("limit=1001", "\"1001\""),
            ("order=up", "\"up\""),
            ("nextToken=zz", "\"zz\""),
            ("startedAfter=yesterday", "\"yesterday\""),
            ("metadata=%3Dv", "empty key"),
        ] {
            let e = parse_query(Some(raw)).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{raw}");
            assert!(e.message.contains(needle), "{raw}: {}", e.message);
        }
        let forged = hex::encode("hearth-list-v1\nnot-a-number\nabc");
        assert!(Cursor::parse(&forged).is_err());
        let forged = hex::encode("other\n1\nabc");
        assert!(Cursor::parse(&forged).is_err());
        assert_eq!(parse_query(None).unwrap().limit, DEFAULT_LIMIT);
    }

    fn rec(id: &str, created_at: u64, status: VmStatus, meta: &[(&str, &str)]) -> VmRecord {
        let mut r: VmRecord = serde_json::from_value(serde_json::json!({
            "id": id, "name": null, "created_at": created_at, "status": status.as_str(),
            "cpus": 1, "mem_mib": 512, "language": "base", "initrd": "/i", "kernel": "/k", "dir": "/d",
        }))
        .unwrap();
        r.metadata = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    #[test]
    fn pages_are_stable_and_complete() {
        let recs = vec![
            rec("c", 10, VmStatus::Running, &[("t", "x")]),
            rec("a", 10, VmStatus::Running, &[("t", "x")]),
            rec("b", 5, VmStatus::Running, &[("t", "x")]),
            rec("d", 1, VmStatus::Stopped, &[("t", "x")]),
            rec("e", 2, VmStatus::Running, &[("t", "y")]),
        ];
        let mut q = parse_query(Some("metadata=t%3Dx&limit=2")).unwrap();
        let (p1, next) = page(&recs, &q);
        assert_eq!(
            p1.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let next = next.expect("a second page");
        q.after = Some(Cursor::parse(&next.token()).unwrap());
        let (p2, next) = page(&recs, &q);
        assert_eq!(p2.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["c"]);
        assert!(next.is_none());

        let q = parse_query(Some("order=desc")).unwrap();
        let (all, _) = page(&recs, &q);
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["c", "a", "b", "e"]
        );
        let q = parse_query(Some("state=paused")).unwrap();
        assert!(page(&recs, &q).0.is_empty());
        let q = parse_query(Some("template=python")).unwrap();
        assert!(page(&recs, &q).0.is_empty());
    }
}
