//! The Connect layer of the envd gateway: envelope decoding (independent of
//! chunking, bad input is an error not a panic), the code table, timeouts,
//! keepalives, deadlines, and proto3 JSON of the envd types.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hearth_server::envd::connect::{
    self, CallMeta, Code, ConnectError, EnvelopeDecoder, EnvelopeError, StreamOptions,
};
use hearth_server::envd::pb::{filesystem, process};
use hearth_server::ApiError;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

fn env(flags: u8, s: &str) -> Bytes {
    connect::envelope(flags, s.as_bytes())
}

/// Splits the envelopes back out of a body.
fn split(body: &[u8]) -> Vec<(u8, serde_json::Value)> {
    let mut buf = BytesMut::from(body);
    let d = EnvelopeDecoder::default();
    let mut out = Vec::new();
    while let Some(e) = d.decode(&mut buf).unwrap() {
        out.push((e.flags, serde_json::from_slice(&e.data).unwrap()));
    }
    d.finish(&buf).unwrap();
    out
}

#[test]
fn envelope_round_trip() {
    let b = env(0, r#"{"a":1}"#);
    assert_eq!(&b[..5], &[0, 0, 0, 0, 7]);
    let mut buf = BytesMut::from(&b[..]);
    let e = EnvelopeDecoder::default()
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    assert_eq!((e.flags, &e.data[..]), (0, &br#"{"a":1}"#[..]));
    assert!(buf.is_empty());
}

#[test]
fn oversized_envelope_is_refused_before_buffering() {
    let d = EnvelopeDecoder::new(1024);
    let mut buf = BytesMut::from(&[0u8, 0, 0, 4, 1][..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(EnvelopeError::TooLong {
            len: 1025,
            max: 1024
        })
    );
    let mut huge = BytesMut::from(&[0u8, 0xff, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        EnvelopeDecoder::default().decode(&mut huge),
        Err(EnvelopeError::TooLong { .. })
    ));
    assert!(
        huge.capacity() < 1 << 20,
        "it reserved {} bytes",
        huge.capacity()
    );
    let ce: ConnectError = EnvelopeError::TooLong { len: 9, max: 1 }.into();
    assert_eq!(ce.code, Code::ResourceExhausted);
}

#[test]
fn bad_flags_and_truncation_are_errors() {
    let d = EnvelopeDecoder::default();
    let mut c = BytesMut::from(&env(1, "{}")[..]);
    assert_eq!(
        d.decode(&mut c),
        Err(EnvelopeError::Compressed { flags: 1 })
    );
    let mut u = BytesMut::from(&env(0x80, "{}")[..]);
    assert_eq!(
        d.decode(&mut u),
        Err(EnvelopeError::UnknownFlags { flags: 0x80 })
    );
    let mut t = BytesMut::from(&env(0, "{}")[..6]);
    assert_eq!(d.decode(&mut t), Ok(None));
    assert_eq!(
        d.finish(&t),
        Err(EnvelopeError::Truncated { have: 6, need: 7 })
    );
}

proptest! {
    #[test]
    fn decoding_is_independent_of_chunking(
        msgs in proptest::collection::vec("[a-z0-9 ]{0,40}", 1..8),
        cuts in proptest::collection::vec(1usize..64, 0..20),
    ) {
        let mut whole = Vec::new();
        for m in &msgs {
            whole.extend_from_slice(&env(0, &serde_json::to_string(m).unwrap()));
        }
        let mut chunks = Vec::new();
        let mut rest = &whole[..];
        for c in cuts {
            if rest.is_empty() { break; }
            let n = c.min(rest.len());
            chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(&rest[..n])));
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            chunks.push(Ok(Bytes::copy_from_slice(rest)));
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got: Vec<String> = rt.block_on(async {
            connect::decode_stream::<String, _, _>(futures::stream::iter(chunks), EnvelopeDecoder::default())
                .map(|r| r.unwrap())
                .collect()
                .await
        });
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let d = EnvelopeDecoder::new(128);
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let _ = d.finish(&buf);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let s = connect::decode_stream::<serde_json::Value, _, _>(
                futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data))]),
                EnvelopeDecoder::new(128),
            );
            let _: Vec<_> = s.collect().await;
        });
    }
}

#[tokio::test]
async fn a_bad_message_in_a_stream_is_invalid_argument() {
    let mut body = env(0, r#""ok""#).to_vec();
    body.extend_from_slice(&env(0, "{not json"));
    let s = connect::decode_stream::<String, _, _>(
        futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]),
        EnvelopeDecoder::default(),
    );
    let got: Vec<_> = s.collect().await;
    assert_eq!(got[0].as_deref(), Ok("ok"));
    assert_eq!(got[1].as_ref().unwrap_err().code, Code::InvalidArgument);
}

#[test]
fn code_table() {
    for c in Code::ALL {
        assert_eq!(Code::parse(c.as_str()), Some(c));
    }
    assert_eq!(Code::NotFound.http_status(), StatusCode::NOT_FOUND);
    assert_eq!(
        Code::Unauthenticated.http_status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        Code::DeadlineExceeded.http_status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(Code::Unavailable.http_status(), StatusCode::BAD_GATEWAY);
    assert_eq!(Code::InvalidArgument.as_str(), "invalid_argument");
}

#[test]
fn runtime_errors_map_once() {
    let gone: ConnectError = hearth_runtime::Error::NotFound("vm-1".into()).into();
    assert_eq!(gone.code, Code::Unavailable);
    assert!(gone.message.contains("was not found"), "{}", gone.message);
    assert!(gone.message.contains("vm-1"), "{}", gone.message);
    let bad: ConnectError = hearth_runtime::Error::InvalidSpec("argv is empty".into()).into();
    assert_eq!(bad.code, Code::InvalidArgument);
    let nf: ConnectError = ApiError::not_found("no process 7").into();
    assert_eq!(
        (nf.code, nf.message.as_str()),
        (Code::NotFound, "no process 7")
    );
}

#[tokio::test]
async fn unary_error_body_is_connect_json() {
    let r = ConnectError::not_found("no process with pid 9").into_response();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "application/json");
    let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"code": "not_found", "message": "no process with pid 9"})
    );
}

#[test]
fn timeout_header() {
    let mut h = HeaderMap::new();
    assert_eq!(connect::parse_timeout(&h).unwrap(), None);
    h.insert("connect-timeout-ms", HeaderValue::from_static("60000"));
    assert_eq!(
        connect::parse_timeout(&h).unwrap(),
        Some(Duration::from_secs(60))
    );
    for bad in ["", "-1", "1.5", "12345678901", "abc"] {
        h.insert("connect-timeout-ms", HeaderValue::from_static(bad));
        let e = connect::parse_timeout(&h).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.message.contains(bad), "{}", e.message);
    }
    h.insert("keepalive-ping-interval", HeaderValue::from_static("50"));
    let m = CallMeta::from_headers(&h);
    assert!(m.is_err(), "the bad timeout still fails the call");
    h.remove("connect-timeout-ms");
    assert_eq!(
        CallMeta::from_headers(&h).unwrap().keepalive,
        Some(Duration::from_secs(50))
    );
}

fn opts<M>(meta: CallMeta, keepalive: Option<M>) -> StreamOptions<M> {
    StreamOptions {
        meta,
        shutdown: CancellationToken::new(),
        keepalive,
    }
}

async fn collect_body(s: impl futures::Stream<Item = Bytes>) -> Vec<(u8, serde_json::Value)> {
    let parts: Vec<Bytes> = s.collect().await;
    split(&parts.concat())
}

#[tokio::test]
async fn server_stream_ends_with_end_of_stream() {
    let msgs = futures::stream::iter([Ok(1u32), Ok(2)]);
    let got = collect_body(connect::stream_body(
        opts(CallMeta::default(), None::<u32>),
        msgs,
    ))
    .await;
    assert_eq!(
        got,
        vec![
            (0, serde_json::json!(1)),
            (0, serde_json::json!(2)),
            (2, serde_json::json!({}))
        ]
    );
    let msgs = futures::stream::iter([Ok(1u32), Err(ConnectError::not_found("gone")), Ok(3)]);
    let got = collect_body(connect::stream_body(
        opts(CallMeta::default(), None::<u32>),
        msgs,
    ))
    .await;
    assert_eq!(
        got,
        vec![
            (0, serde_json::json!(1)),
            (
                2,
                serde_json::json!({"error": {"code": "not_found", "message": "gone"}})
            )
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn server_stream_deadline_and_keepalives() {
    let meta = CallMeta {
        timeout: Some(Duration::from_secs(10)),
        keepalive: Some(Duration::from_secs(3)),
    };
    let never = futures::stream::pending::<Result<&'static str, ConnectError>>();
    let got = collect_body(connect::stream_body(opts(meta, Some("ka")), never)).await;
    let (last, keepalives) = got.split_last().unwrap();
    assert_eq!(keepalives.len(), 3, "{got:?}");
    assert!(keepalives
        .iter()
        .all(|k| *k == (0, serde_json::json!("ka"))));
    assert_eq!(last.0, 2);
    assert_eq!(last.1["error"]["code"], "deadline_exceeded");
}

#[tokio::test]
async fn server_stream_ends_on_shutdown() {
    let shutdown = CancellationToken::new();
    let o = StreamOptions {
        meta: CallMeta::default(),
        shutdown: shutdown.clone(),
        keepalive: None::<u32>,
    };
    shutdown.cancel();
    let got = collect_body(connect::stream_body(o, futures::stream::pending())).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["error"]["code"], "unavailable");
}

#[tokio::test]
async fn stream_error_is_http_200() {
    let r = connect::stream_error(ConnectError::deadline_exceeded("late"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/connect+json");
    let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    assert_eq!(split(&b)[0].1["error"]["code"], "deadline_exceeded");
}

#[test]
fn proto3_json_of_envd_types() {
    // What `commands.run("echo hi")` sends, plus a field the schema lacks.
    let req: process::StartRequest = serde_json::from_str(
        r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"1"},"cwd":"/tmp"},"stdin":false,"future":1}"#,
    )
    .unwrap();
    let p = req.process.unwrap();
    assert_eq!(
        (p.cmd.as_str(), p.args.len(), p.cwd.as_deref()),
        ("/bin/bash", 3, Some("/tmp"))
    );
    assert_eq!(req.stdin, Some(false));
    let ev = process::StartResponse {
        event: Some(process::ProcessEvent {
            event: Some(process::process_event::Event::Data(
                process::process_event::DataEvent {
                    output: Some(process::process_event::data_event::Output::Stdout(
                        b"hi\n".to_vec(),
                    )),
                },
            )),
        }),
    };
    assert_eq!(
        serde_json::to_value(&ev).unwrap(),
        serde_json::json!({"event": {"data": {"stdout": "aGkK"}}})
    );
    let end = process::process_event::EndEvent {
        exit_code: 2,
        exited: true,
        status: "exit status 2".into(),
        error: None,
    };
    assert_eq!(
        serde_json::to_value(&end).unwrap(),
        serde_json::json!({"exitCode": 2, "exited": true, "status": "exit status 2"})
    );
    let sig: process::SendSignalRequest =
        serde_json::from_str(r#"{"process":{"pid":7},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
    assert_eq!(sig.signal(), process::Signal::Sigkill);
    let entry = filesystem::EntryInfo {
        size: 5,
        r#type: filesystem::FileType::File as i32,
        ..Default::default()
    };
    let v = serde_json::to_value(&entry).unwrap();
    assert_eq!(v["size"], "5", "int64 is a string: {v}");
    assert_eq!(v["type"], "FILE_TYPE_FILE");
}
