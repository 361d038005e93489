//! Agent tier: the agent's own log over `AGENT_LOG` — the retained tail, and
//! a follower that sees a line logged after it started.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Agent, Raw};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_lines_carry_time_level_and_text_and_tail_cuts() {
    let t0 = now_ms();
    let agent = Agent::start();
    let c = agent.client().await;
    let lines = c.agent_log(0, 0).await.expect("agent log");
    let listening = lines
        .iter()
        .find(|l| l.text.contains("agent listening"))
        .unwrap_or_else(|| panic!("no 'agent listening' line in {lines:?}"));
    assert_eq!(listening.level, "INFO");
    assert!(
        listening.at_ms >= t0 - 1000 && listening.at_ms <= now_ms() + 1000,
        "timestamp {} is not around now {t0}",
        listening.at_ms
    );
    assert!(
        listening.text.contains(agent.sock.to_str().unwrap()),
        "fields kept: {listening:?}"
    );

    let last = c.agent_log(1, 0).await.expect("tail 1");
    assert_eq!(last.len(), 1, "tail 1 gives one line: {last:?}");
    assert_eq!(last[0], *lines.last().unwrap());

    let future = c
        .agent_log(0, now_ms() + 60_000)
        .await
        .expect("since the future");
    assert!(
        future.is_empty(),
        "nothing is logged in the future: {future:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_a_line_logged_after_it_started() {
    let mut agent = Agent::start();
    let c = agent.client().await;
    let since = now_ms();
    let mut follow = c.follow_agent_log(0, since).await.expect("follow");
    // A framing error is logged at WARN by the agent.
    let mut raw = Raw::connect(&agent).await;
    raw.send(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let batch = tokio::time::timeout_at(deadline, follow.next())
            .await
            .expect("no framing-error line within 10 s")
            .expect("follow ended")
            .expect("follow failed");
        assert_eq!(batch.dropped, 0);
        if let Some(l) = batch
            .lines
            .into_iter()
            .find(|l| l.text.contains("framing error"))
        {
            break l;
        }
    };
    assert_eq!(line.level, "WARN");
    assert!(line.at_ms >= since);
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_since_is_refused_and_the_agent_keeps_serving() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    raw.send_msg(
        hearth_proto::Message::AgentLog(hearth_proto::pb::AgentLog {
            tail: 0,
            since_ms: -5,
            follow: false,
        }),
        7,
    )
    .await;
    let f = raw.frame().await.expect("an answer");
    match hearth_proto::Message::from_frame(&f) {
        Ok(hearth_proto::Message::Error(e)) => {
            assert_eq!(f.seq, 7);
            assert!(e.message.contains("since_ms -5"), "{e:?}");
        }
        other => panic!("expected an ERROR, got {other:?}"),
    }
    agent.assert_serves_new_connection().await;
}
