//! The signaling protocol over real WebSocket connections to a running server: relay, errors,
//! limits, disconnects, resume, random matching. Every failure case also checks that the other
//! clients keep being served.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{Client, expect_error, server};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn two_peers_exchange_offer_answer_and_candidates() {
    let server = server(|_| {}).await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;

    let ann_joined = ann.join("standup", "Ann").await;
    assert_eq!(ann_joined["participants"], json!([]));
    assert_eq!(ann_joined["mode"], "p2p");
    let ann_id = ann_joined["id"].as_str().unwrap().to_owned();

    let bob_joined = bob.join("standup", "Bob").await;
    let bob_id = bob_joined["id"].as_str().unwrap().to_owned();
    assert_eq!(bob_joined["participants"][0]["id"], ann_id.as_str());
    assert_eq!(bob_joined["participants"][0]["name"], "Ann");

    let announced = ann.recv().await;
    assert_eq!(announced["type"], "participant-joined");
    assert_eq!(announced["participant"]["id"], bob_id.as_str());
    assert_eq!(announced["participant"]["name"], "Bob");

    bob.send(json!({"type": "offer", "to": ann_id, "sdp": "v=0\r\no=bob"}))
        .await;
    assert_eq!(
        ann.recv().await,
        json!({"type": "offer", "from": bob_id, "sdp": "v=0\r\no=bob"})
    );
    ann.send(json!({"type": "answer", "to": bob_id, "sdp": "v=0\r\no=ann"}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "answer", "from": ann_id, "sdp": "v=0\r\no=ann"})
    );

    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    ann.send(json!({"type": "candidate", "to": bob_id, "candidate": candidate}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "candidate", "from": ann_id, "candidate": candidate})
    );
    ann.send(json!({"type": "candidate", "to": bob_id, "candidate": null}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "candidate", "from": ann_id, "candidate": null})
    );

    bob.send(json!({"type": "ice-restart", "to": ann_id})).await;
    assert_eq!(
        ann.recv().await,
        json!({"type": "ice-restart", "from": bob_id})
    );

    bob.send(json!({"type": "leave"})).await;
    assert_eq!(bob.recv().await, json!({"type": "left"}));
    assert_eq!(
        ann.recv().await,
        json!({"type": "participant-left", "id": bob_id, "reason": "left"})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_errors_and_others_are_unaffected() {
    let server = server(|c| {
        c.max_message_bytes = 4096;
        c.resume_grace_secs = 0;
    })
    .await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    let ann_id = ann.join("r1", "Ann").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_id = bob.join("r1", "Bob").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ann.recv_type("participant-joined").await;

    let mut troll = Client::connect(addr, "/ws").await;
    troll.join("r1", "Troll").await;
    ann.recv_type("participant-joined").await;
    bob.recv_type("participant-joined").await;

    troll.send_text("{not json").await;
    expect_error(&mut troll, "bad_json").await;
    troll.send_text(r#"{"type":"dance"}"#).await;
    expect_error(&mut troll, "unknown_type").await;
    troll.send_text(r#"{"no":"type"}"#).await;
    expect_error(&mut troll, "unknown_type").await;
    troll.send_text(r#"{"type":"offer","to":5}"#).await;
    expect_error(&mut troll, "invalid_message").await;
    troll.send_text("[]").await;
    expect_error(&mut troll, "invalid_message").await;
    troll
        .send_raw(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    expect_error(&mut troll, "bad_json").await;
    troll
        .send(json!({"type": "offer", "to": "nobody", "sdp": "x"}))
        .await;
    expect_error(&mut troll, "unknown_participant").await;
    troll
        .send(json!({"type": "join", "room": "r2", "name": "Again"}))
        .await;
    expect_error(&mut troll, "already_joined").await;
    troll.send(json!({"type": "next"})).await;
    expect_error(&mut troll, "not_matched").await;
    let big = "x".repeat(5000);
    troll
        .send(json!({"type": "offer", "to": ann_id, "sdp": big}))
        .await;
    expect_error(&mut troll, "message_too_large").await;
    // Still connected and served after all that.
    troll.send(json!({"type": "ping", "id": 7})).await;
    assert_eq!(troll.recv().await, json!({"type": "pong", "id": 7}));

    // The others saw none of it and still talk.
    ann.expect_silence().await;
    ann.send(json!({"type": "offer", "to": bob_id, "sdp": "v=0"}))
        .await;
    assert_eq!(bob.recv().await["from"], ann_id.as_str());

    // A frame past the hard limit closes only the sender's socket.
    troll.send_text("y".repeat(2 * 1024 * 1024)).await;
    troll.closed().await;
    let left = ann.recv_type("participant-left").await;
    assert_eq!(left["reason"], "disconnected");
    bob.send(json!({"type": "answer", "to": ann_id, "sdp": "v=0"}))
        .await;
    assert_eq!(ann.recv().await["type"], "answer");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_before_joining_and_invalid_names() {
    // With the SFU off, SFU rooms are refused.
    let server = server(|c| c.sfu_addr = None).await;
    let mut client = Client::connect(server.http_addr(), "/ws").await;
    client
        .send(json!({"type": "offer", "to": "x", "sdp": "v=0"}))
        .await;
    expect_error(&mut client, "not_in_room").await;
    client.send(json!({"type": "leave"})).await;
    expect_error(&mut client, "not_in_room").await;
    client
        .send(json!({"type": "join", "room": "bad room!", "name": "A"}))
        .await;
    expect_error(&mut client, "invalid_room").await;
    client
        .send(json!({"type": "join", "room": "ok", "name": "   "}))
        .await;
    expect_error(&mut client, "invalid_name").await;
    client
        .send(json!({"type": "join", "v": 2, "room": "ok", "name": "A"}))
        .await;
    expect_error(&mut client, "unsupported_version").await;
    client
        .send(json!({"type": "join", "room": "ok", "name": "A", "mode": "sfu"}))
        .await;
    expect_error(&mut client, "unsupported_mode").await;
    client
        .send(json!({"type": "join", "room": "ok", "name": "A", "resume": "bogus"}))
        .await;
    expect_error(&mut client, "resume_failed").await;
    client.join("ok", "A").await;
    server.shutdown().await;
}

#[tokio::test]
async fn full_room_refuses_the_next_peer_only() {
    let server = server(|c| c.max_participants = 2).await;
    let addr = server.http_addr();
    let mut a = Client::connect(addr, "/ws").await;
    let mut b = Client::connect(addr, "/ws").await;
    let mut c = Client::connect(addr, "/ws").await;
    a.join("small", "A").await;
    b.join("small", "B").await;
    a.recv_type("participant-joined").await;
    c.send(json!({"type": "join", "room": "small", "name": "C"}))
        .await;
    expect_error(&mut c, "room_full").await;
    a.expect_silence().await;
    // C may go elsewhere.
    c.join("other", "C").await;
    server.shutdown().await;
}

#[tokio::test]
async fn broadcast_room_allows_one_sender_and_many_receivers() {
    let server = server(|c| c.max_participants = 2).await;
    let addr = server.http_addr();
    let mut sender = Client::connect(addr, "/ws").await;
    sender
        .send(json!({"type": "join", "room": "show", "name": "Host", "role": "sender"}))
        .await;
    assert_eq!(sender.recv().await["role"], "sender");
    let mut receivers = Vec::new();
    for i in 0..3 {
        let mut r = Client::connect(addr, "/ws").await;
        r.send(
            json!({"type": "join", "room": "show", "name": format!("R{i}"), "role": "receiver"}),
        )
        .await;
        let joined = r.recv().await;
        assert_eq!(joined["type"], "joined");
        assert_eq!(joined["participants"][0]["role"], "sender");
        receivers.push(r);
        let seen = sender.recv_type("participant-joined").await;
        assert_eq!(seen["participant"]["role"], "receiver");
    }
    let mut second = Client::connect(addr, "/ws").await;
    second
        .send(json!({"type": "join", "room": "show", "name": "Other", "role": "sender"}))
        .await;
    expect_error(&mut second, "role_taken").await;
    let (status, body) = support::http_get(addr, "/api/rooms/show").await;
    assert_eq!(status, 200);
    let room: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(room["topology"], "broadcast");
    assert_eq!(room["participants"].as_array().unwrap().len(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn abrupt_disconnect_is_announced_after_the_grace_period() {
    let server = server(|c| c.resume_grace_secs = 1).await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    ann.join("r", "Ann").await;
    let bob_id = bob.join("r", "Bob").await["id"].clone();
    ann.recv_type("participant-joined").await;
    drop(bob); // no close frame: the TCP connection just goes away
    // Not announced at once (Bob might come back)...
    assert!(ann.try_recv(Duration::from_millis(500)).await.is_none());
    // ...but after the grace period.
    let left = ann.recv().await;
    assert_eq!(
        left,
        json!({"type": "participant-left", "id": bob_id, "reason": "disconnected"})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn resume_keeps_the_same_identity_unnoticed_by_others() {
    let server = server(|c| c.resume_grace_secs = 30).await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    let ann_id = ann.join("r", "Ann").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let joined = bob.join("r", "Bob").await;
    ann.recv_type("participant-joined").await;
    let (bob_id, token) = (joined["id"].clone(), joined["resume"].clone());
    drop(bob);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut bob = Client::connect(addr, "/ws").await;
    bob.send(json!({"type": "join", "room": "r", "name": "Bob", "resume": token}))
        .await;
    let resumed = bob.recv().await;
    assert_eq!(resumed["type"], "joined");
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["id"], bob_id);
    assert_eq!(resumed["participants"][0]["id"], ann_id.as_str());
    ann.expect_silence().await;
    ann.send(json!({"type": "offer", "to": bob_id, "sdp": "v=0"}))
        .await;
    assert_eq!(bob.recv().await["from"], ann_id.as_str());

    // A token is only good for its own room.
    let mut other = Client::connect(addr, "/ws").await;
    other
        .send(json!({"type": "join", "room": "elsewhere", "name": "X", "resume": token}))
        .await;
    expect_error(&mut other, "resume_failed").await;
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limit_drops_excess_and_tells_once() {
    let server = server(|c| {
        c.rate_limit = 10;
        c.rate_burst = 20;
    })
    .await;
    let mut client = Client::connect(server.http_addr(), "/ws").await;
    for i in 0..100 {
        client.send(json!({"type": "ping", "id": i})).await;
    }
    let mut pongs = 0;
    let mut rate_errors = 0;
    while let Some(msg) = client.try_recv(Duration::from_millis(500)).await {
        match msg["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(msg["code"], "rate_limited");
                rate_errors += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        (20..=25).contains(&pongs),
        "about the burst gets through, got {pongs}"
    );
    assert_eq!(rate_errors, 1, "one error, not one per dropped message");
    server.shutdown().await;
}

#[tokio::test]
async fn random_matching_pairs_fifo_and_next_repairs() {
    let server = server(|_| {}).await;
    let addr = server.http_addr();
    let mut users = Vec::new();
    for name in ["U0", "U1", "U2", "U3"] {
        let mut c = Client::connect(addr, "/ws").await;
        c.send(json!({"type": "random", "name": name})).await;
        assert_eq!(c.recv().await["type"], "waiting");
        users.push(c);
    }
    let mut partner = Vec::new();
    let mut ids = Vec::new();
    for u in users.iter_mut() {
        let m = u.recv_type("matched").await;
        partner.push(m["peer"]["name"].as_str().unwrap().to_owned());
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(partner, ["U1", "U0", "U3", "U2"], "FIFO pairs");

    // Signaling flows inside a pair.
    let to = ids[1].clone();
    users[0]
        .send(json!({"type": "offer", "to": to, "sdp": "v=0"}))
        .await;
    assert_eq!(users[1].recv().await["from"], ids[0].as_str());
    // ...but not across pairs.
    let to = ids[2].clone();
    users[0]
        .send(json!({"type": "offer", "to": to, "sdp": "v=0"}))
        .await;
    expect_error(&mut users[0], "unknown_participant").await;

    // U0 presses Next: U0 and U1 are unmatched and wait (they will not be put back together).
    users[0].send(json!({"type": "next"})).await;
    for i in [0, 1] {
        assert_eq!(
            users[i].recv().await,
            json!({"type": "unmatched", "reason": "next"})
        );
        assert_eq!(users[i].recv().await["type"], "waiting");
    }
    // U2 presses Next too: now everyone gets a new partner.
    users[2].send(json!({"type": "next"})).await;
    for i in [2, 3] {
        assert_eq!(users[i].recv().await["type"], "unmatched");
        assert_eq!(users[i].recv().await["type"], "waiting");
    }
    let mut new_partner = Vec::new();
    for u in users.iter_mut() {
        new_partner.push(
            u.recv_type("matched").await["peer"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(new_partner, ["U2", "U3", "U0", "U1"]);

    // A partner vanishing re-queues the other, and the vanished one is never matched again.
    let mut u3 = users.pop().unwrap();
    let u1 = users.remove(1);
    drop(u1);
    assert_eq!(
        u3.recv().await,
        json!({"type": "unmatched", "reason": "disconnected"})
    );
    assert_eq!(u3.recv().await["type"], "waiting");
    u3.expect_silence().await;
    server.shutdown().await;
}

#[tokio::test]
async fn tutorial_protocol_relays_like_the_reference_server() {
    let server = server(|_| {}).await;
    let addr = server.http_addr();
    let mut sender = Client::connect(addr, "/").await;
    let mut receiver = Client::connect(addr, "/").await;
    sender.send(json!({"type": "sender"})).await;
    receiver.send(json!({"type": "receiver"})).await;
    // Let the hub register both roles before relaying.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let offer = json!({"type": "offer", "sdp": "v=0\r\n"});
    sender
        .send(json!({"type": "createOffer", "sdp": offer, "extra": true}))
        .await;
    assert_eq!(
        receiver.recv().await,
        json!({"type": "createOffer", "sdp": offer})
    );
    let answer = json!({"type": "answer", "sdp": "v=0\r\n"});
    receiver
        .send(json!({"type": "createAnswer", "sdp": answer}))
        .await;
    assert_eq!(
        sender.recv().await,
        json!({"type": "createAnswer", "sdp": answer})
    );
    let candidate =
        json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"});
    sender
        .send(json!({"type": "iceCandidate", "candidate": candidate}))
        .await;
    assert_eq!(
        receiver.recv().await,
        json!({"type": "iceCandidate", "candidate": candidate})
    );
    receiver
        .send(json!({"type": "iceCandidate", "candidate": candidate}))
        .await;
    assert_eq!(
        sender.recv().await,
        json!({"type": "iceCandidate", "candidate": candidate})
    );

    // Wrong direction and unknown types are ignored, as in the reference; garbage does not
    // bring anything down.
    receiver
        .send(json!({"type": "createOffer", "sdp": offer}))
        .await;
    receiver.send(json!({"type": "whatever"})).await;
    receiver.send_text("not json").await;
    sender.expect_silence().await;
    sender
        .send(json!({"type": "createOffer", "sdp": offer}))
        .await;
    assert_eq!(receiver.recv().await["type"], "createOffer");

    // The landing page is still served on / for plain GETs.
    let (status, body) = support::http_get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"),
        "{body}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rest_endpoints_describe_the_server() {
    let server = server(|_| {}).await;
    let addr = server.http_addr();
    let (status, body) = support::http_get(addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let mut ann = Client::connect(addr, "/ws").await;
    ann.join("daily", "Ann").await;
    ann.send_text("garbage").await;
    expect_error(&mut ann, "bad_json").await;

    let (status, body) = support::http_get(addr, "/api/rooms").await;
    assert_eq!(status, 200);
    let rooms: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rooms["rooms"][0]["name"], "daily");
    assert_eq!(rooms["rooms"][0]["topology"], "mesh");
    assert_eq!(rooms["rooms"][0]["participants"][0]["name"], "Ann");
    assert!(rooms["rooms"][0]["since"].as_u64().unwrap() > 1_600_000_000_000);

    let (status, _) = support::http_get(addr, "/api/rooms/nothing-here").await;
    assert_eq!(status, 404);
    let (status, body) = support::http_get(addr, "/api/rooms/bad%20name").await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = support::http_get(addr, "/api/ice-servers").await;
    assert_eq!(status, 200);
    let ice: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stun_port = server.stun_addr().unwrap().port();
    // Browsers reject `?transport=` on stun: URLs, so there is exactly the one plain URL.
    assert_eq!(
        ice["iceServers"][0]["urls"],
        json!([format!("stun:127.0.0.1:{stun_port}")])
    );

    let (status, metrics) = support::http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("switchboard_connections{protocol=\"switchboard\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_rooms 1"), "{metrics}");
    assert!(metrics.contains("switchboard_participants 1"), "{metrics}");
    assert!(
        metrics.contains("switchboard_messages_total{type=\"join\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_errors_total{code=\"bad_json\"} 1"),
        "{metrics}"
    );

    let (status, _) = support::http_get(addr, "/no/such/file.js").await;
    assert_eq!(status, 404);
    let (status, _) = support::http_get(addr, "/../Cargo.toml").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn connection_limit_refuses_extra_sockets() {
    let server = server(|c| c.max_connections = 2).await;
    let addr = server.http_addr();
    let mut a = Client::connect(addr, "/ws").await;
    let _b = Client::connect(addr, "/").await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {other:?}"),
    }
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.recv().await, json!({"type": "pong"}));
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_clients_the_server_is_going_away() {
    let server = server(|_| {}).await;
    let mut client = Client::connect(server.http_addr(), "/ws").await;
    client.join("r", "A").await;
    server.shutdown().await;
    assert_eq!(client.closed().await, Some(1001));
}
