//! Relays that socket readers deliver themselves, from the hub's routing snapshots, over real
//! WebSockets: they must keep every guarantee of the hub path. Ordering against joins and
//! other hub traffic, the error after a peer left, silence towards a disconnected peer and
//! delivery after it resumes, rate limits, metrics, and cutting off a peer too slow to read.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Client, expect_error, http_get, server};

fn candidate(to: &Value, n: usize) -> Value {
    json!({
        "type": "candidate",
        "to": to,
        "candidate": {
            "candidate": format!("candidate:{n} 1 udp 2122260223 10.0.0.1 {n} typ host"),
            "sdpMid": "0",
            "sdpMLineIndex": 0
        }
    })
}

fn relayed(from: &Value, n: usize) -> Value {
    let mut msg = candidate(from, n);
    msg["from"] = msg["to"].take();
    msg.as_object_mut().unwrap().remove("to");
    msg
}

/// The value of one metric line, e.g. `switchboard_messages_total{type="candidate"}`.
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{body}"))
}

#[tokio::test]
async fn relays_sent_right_after_join_follow_the_announcement_in_order() {
    let server = server(|c| c.rate_limit = 0).await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    let ann_id = ann.join("r", "Ann").await["id"].clone();

    // Bob does not wait for `joined`: join, an offer, then candidates with pings between
    // them, so his messages alternate between the hub and the direct path.
    bob.send(json!({"type": "join", "v": 1, "room": "r", "name": "Bob"}))
        .await;
    bob.send(json!({"type": "offer", "to": ann_id, "sdp": "v=0"}))
        .await;
    for n in 0..300 {
        if n % 7 == 0 {
            bob.send(json!({"type": "ping", "id": n})).await;
        }
        bob.send(candidate(&ann_id, n)).await;
    }

    let joined = bob.recv().await;
    assert_eq!(joined["type"], "joined");
    let bob_id = joined["id"].clone();
    let announced = ann.recv().await;
    assert_eq!(announced["type"], "participant-joined", "{announced}");
    assert_eq!(announced["participant"]["id"], bob_id);
    assert_eq!(
        ann.recv().await,
        json!({"type": "offer", "from": bob_id, "sdp": "v=0"})
    );
    for n in 0..300 {
        assert_eq!(ann.recv().await, relayed(&bob_id, n), "candidate {n}");
    }
    ann.expect_silence().await;
    for n in (0..300).step_by(7) {
        assert_eq!(bob.recv().await, json!({"type": "pong", "id": n}));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn relays_from_both_sides_interleave_with_leave_and_rejoin() {
    let server = server(|c| c.rate_limit = 0).await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    let ann_id = ann.join("r", "Ann").await["id"].clone();
    let bob_id = bob.join("r", "Bob").await["id"].clone();
    ann.recv_type("participant-joined").await;
    for n in 0..50 {
        ann.send(candidate(&bob_id, n)).await;
        bob.send(candidate(&ann_id, n)).await;
    }
    for n in 0..50 {
        assert_eq!(bob.recv().await, relayed(&ann_id, n));
        assert_eq!(ann.recv().await, relayed(&bob_id, n));
    }

    // Bob leaves, then relays again at once: he is in no room any more.
    bob.send(json!({"type": "leave"})).await;
    bob.send(candidate(&ann_id, 50)).await;
    assert_eq!(bob.recv().await, json!({"type": "left"}));
    expect_error(&mut bob, "not_in_room").await;
    assert_eq!(
        ann.recv().await,
        json!({"type": "participant-left", "id": bob_id, "reason": "left"})
    );
    ann.expect_silence().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_relay_to_a_participant_who_left_gets_unknown_participant() {
    let server = server(|c| c.rate_limit = 0).await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    let ann_id = ann.join("r", "Ann").await["id"].clone();
    let bob_id = bob.join("r", "Bob").await["id"].clone();
    ann.recv_type("participant-joined").await;
    ann.send(candidate(&bob_id, 1)).await;
    assert_eq!(bob.recv().await, relayed(&ann_id, 1));

    bob.send(json!({"type": "leave"})).await;
    assert_eq!(bob.recv().await, json!({"type": "left"}));
    assert_eq!(ann.recv().await["type"], "participant-left");
    ann.send(candidate(&bob_id, 2)).await;
    let error = expect_error(&mut ann, "unknown_participant").await;
    assert_eq!(
        error["message"],
        format!("no participant {:?} in this room", bob_id.as_str().unwrap())
    );
    bob.expect_silence().await;

    // Back under a new id: the old one stays unknown, the new one works.
    let new_id = bob.join("r", "Bob").await["id"].clone();
    assert_ne!(new_id, bob_id);
    ann.recv_type("participant-joined").await;
    ann.send(candidate(&bob_id, 3)).await;
    expect_error(&mut ann, "unknown_participant").await;
    ann.send(candidate(&new_id, 4)).await;
    assert_eq!(bob.recv().await, relayed(&ann_id, 4));
    server.shutdown().await;
}

#[tokio::test]
async fn relays_to_a_disconnected_participant_are_dropped_until_it_resumes() {
    let server = server(|c| {
        c.rate_limit = 0;
        c.resume_grace_secs = 30;
    })
    .await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    let ann_id = ann.join("r", "Ann").await["id"].clone();
    let joined = bob.join("r", "Bob").await;
    let (bob_id, token) = (joined["id"].clone(), joined["resume"].clone());
    ann.recv_type("participant-joined").await;
    ann.send(candidate(&bob_id, 1)).await;
    assert_eq!(bob.recv().await, relayed(&ann_id, 1));

    drop(bob);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Nobody to deliver to, and no error either (Bob may come back).
    ann.send(candidate(&bob_id, 2)).await;
    ann.expect_silence().await;

    let mut bob = Client::connect(addr, "/ws").await;
    bob.send(json!({"type": "join", "room": "r", "name": "Bob", "resume": token}))
        .await;
    let resumed = bob.recv().await;
    assert_eq!(resumed["type"], "joined");
    assert_eq!(resumed["id"], bob_id);
    ann.send(candidate(&bob_id, 3)).await;
    assert_eq!(bob.recv().await, relayed(&ann_id, 3));
    bob.send(candidate(&ann_id, 4)).await;
    assert_eq!(ann.recv().await, relayed(&bob_id, 4));
    server.shutdown().await;
}

#[tokio::test]
async fn direct_relays_are_rate_limited_and_counted_in_metrics() {
    let server = server(|c| {
        c.rate_limit = 10;
        c.rate_burst = 20;
    })
    .await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    let ann_id = ann.join("r", "Ann").await["id"].clone();
    let bob_id = bob.join("r", "Bob").await["id"].clone();
    ann.recv_type("participant-joined").await;
    for n in 0..80 {
        ann.send(candidate(&bob_id, n)).await;
    }
    let mut received = 0;
    while let Some(msg) = bob.try_recv(Duration::from_millis(500)).await {
        assert_eq!(msg, relayed(&ann_id, received), "in order, none skipped");
        received += 1;
    }
    assert!(
        (19..=25).contains(&received),
        "about the burst gets through, got {received}"
    );
    expect_error(&mut ann, "rate_limited").await;
    ann.expect_silence().await;

    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let counted = metric(&body, r#"switchboard_messages_total{type="candidate"}"#);
    assert_eq!(
        counted, received as u64,
        "every delivered candidate counted once"
    );
    assert_eq!(
        metric(&body, r#"switchboard_messages_total{type="join"}"#),
        2
    );
    assert_eq!(
        metric(&body, r#"switchboard_errors_total{code="rate_limited"}"#),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_too_slow_for_direct_relays_is_cut_off() {
    let server = server(|c| {
        c.rate_limit = 0;
        c.resume_grace_secs = 0;
    })
    .await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    let ann_id = ann.join("r", "Ann").await["id"].clone();
    let bob_id = bob.join("r", "Bob").await["id"].clone();
    ann.recv_type("participant-joined").await;

    // Bob reads nothing while Ann floods him: once his socket buffers and his outbox are
    // full, he is cut off and Ann is told he left.
    let padding = "x".repeat(60 * 1024);
    let mut msg = candidate(&bob_id, 0);
    msg["candidate"]["padding"] = padding.into();
    let mut left = None;
    for _ in 0..5_000 {
        ann.send(msg.clone()).await;
        if let Some(reply) = ann.try_recv(Duration::ZERO).await {
            left = Some(reply);
            break;
        }
    }
    let left = match left {
        Some(left) => left,
        None => ann.recv().await,
    };
    assert_eq!(
        left,
        json!({"type": "participant-left", "id": bob_id, "reason": "disconnected"})
    );
    let (_, body) = http_get(addr, "/metrics").await;
    assert_eq!(metric(&body, "switchboard_slow_disconnects_total"), 1);
    // Bob gets what was queued for him, then the close.
    assert_eq!(bob.closed().await, Some(1013));
    // Ann is still served; what she sent after Bob was gone is refused as usual.
    ann.send(json!({"type": "ping", "id": 1})).await;
    loop {
        let msg = ann.recv().await;
        if msg["type"] == "pong" {
            break;
        }
        assert_eq!(msg["code"], "unknown_participant", "{msg}");
    }
    let _ = ann_id;
    server.shutdown().await;
}
