//! SFU rooms over real WebSockets: the server as participant `sfu`, offers answered by the
//! media engine with an ICE-lite answer that points at its UDP port, bad SDP refused with
//! `invalid_sdp` without disturbing anyone, and the media side visible in the REST API and
//! metrics.

mod support;

use serde_json::{Value, json};
use std::time::Instant;
use support::{Client, expect_error, http_get, server};
use switchboard_sfu::str0m::Rtc;
use switchboard_sfu::str0m::media::{Direction, MediaKind};

fn browser_like_offer() -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

async fn join_sfu(client: &mut Client, room: &str, name: &str) -> Value {
    client
        .send(json!({"type": "join", "room": room, "name": name, "mode": "sfu"}))
        .await;
    let joined = client.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    joined
}

#[tokio::test]
async fn offers_to_the_server_are_answered_by_the_media_engine() {
    let server = server(|_| {}).await;
    let media = server.sfu_addrs().to_vec();
    assert_eq!(media.len(), 1, "one worker in tests");
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;

    let joined = join_sfu(&mut ann, "stage", "Ann").await;
    assert_eq!(joined["mode"], "sfu");
    let ann_id = joined["id"].as_str().unwrap().to_owned();
    // A later joiner gets the room's mode whatever it asks for.
    bob.send(json!({"type": "join", "room": "stage", "name": "Bob", "mode": "p2p"}))
        .await;
    let joined = bob.recv().await;
    assert_eq!(joined["mode"], "sfu");
    ann.recv_type("participant-joined").await;

    let tracks = json!({"0": "microphone", "1": "camera"});
    ann.send(json!({"type": "offer", "to": "sfu", "sdp": browser_like_offer(), "tracks": tracks}))
        .await;
    let answer = ann.recv().await;
    assert_eq!(answer["type"], "answer", "{answer}");
    assert_eq!(answer["from"], "sfu");
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=ice-lite"), "{sdp}");
    let candidate = format!("{} {} typ host", media[0].ip(), media[0].port());
    assert!(sdp.contains(&candidate), "answer names {candidate}: {sdp}");
    // Nothing of this reaches the other participant.
    bob.expect_silence().await;

    // An offer from a new connection (another DTLS certificate) replaces the session
    // instead of waiting for the old one to time out.
    ann.send(json!({"type": "offer", "to": "sfu", "sdp": browser_like_offer()}))
        .await;
    assert_eq!(ann.recv().await["type"], "answer");

    // Candidates for the server are accepted silently (it is ICE-lite).
    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0"});
    ann.send(json!({"type": "candidate", "to": "sfu", "candidate": candidate}))
        .await;
    ann.expect_silence().await;

    // The REST API shows the media side of the room by participant id.
    let (status, body) = http_get(addr, "/api/rooms/stage").await;
    assert_eq!(status, 200, "{body}");
    let room: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(room["mode"], "sfu");
    assert_eq!(room["topology"], "sfu");
    let media_participants = room["media"]["participants"].as_array().unwrap();
    assert_eq!(media_participants.len(), 1, "{room}");
    assert_eq!(media_participants[0]["id"], ann_id.as_str());
    assert_eq!(media_participants[0]["connected"], false);

    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("switchboard_sfu_participants 1"),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_sfu_workers 1"), "{metrics}");

    // Leaving ends the media session.
    ann.send(json!({"type": "leave"})).await;
    ann.recv_type("left").await;
    let mut gone = false;
    for _ in 0..50 {
        let (_, metrics) = http_get(addr, "/metrics").await;
        if metrics.contains("switchboard_sfu_participants 0") {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "the engine forgot Ann");
    server.shutdown().await;
}

#[tokio::test]
async fn unusable_sdp_is_refused_and_nobody_else_notices() {
    let server = server(|_| {}).await;
    let addr = server.http_addr();
    let mut ann = Client::connect(addr, "/ws").await;
    let mut bob = Client::connect(addr, "/ws").await;
    join_sfu(&mut ann, "stage", "Ann").await;
    join_sfu(&mut bob, "stage", "Bob").await;
    ann.recv_type("participant-joined").await;

    ann.send(json!({"type": "offer", "to": "sfu", "sdp": "this is not SDP"}))
        .await;
    expect_error(&mut ann, "invalid_sdp").await;
    // An offer without any m-line has nothing to connect.
    let empty = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    ann.send(json!({"type": "offer", "to": "sfu", "sdp": empty}))
        .await;
    expect_error(&mut ann, "invalid_sdp").await;
    ann.send(json!({"type": "answer", "to": "sfu", "sdp": empty}))
        .await;
    expect_error(&mut ann, "invalid_sdp").await;
    // A source the protocol does not know is a malformed message.
    ann.send(json!({"type": "offer", "to": "sfu", "sdp": empty, "tracks": {"0": "hologram"}}))
        .await;
    expect_error(&mut ann, "invalid_message").await;
    bob.expect_silence().await;

    // Bob's own session is unaffected, and Ann can still start hers.
    bob.send(json!({"type": "offer", "to": "sfu", "sdp": browser_like_offer()}))
        .await;
    assert_eq!(bob.recv().await["type"], "answer");
    ann.send(json!({"type": "offer", "to": "sfu", "sdp": browser_like_offer()}))
        .await;
    assert_eq!(ann.recv().await["type"], "answer");

    // Tile-size hints are taken silently, even for an m-line that carries nothing yet.
    ann.send(json!({"type": "view", "mid": "7", "width": 320, "height": 180}))
        .await;
    ann.expect_silence().await;

    // In a p2p room the server is nobody.
    let mut cy = Client::connect(addr, "/ws").await;
    cy.join("mesh", "Cy").await;
    cy.send(json!({"type": "view", "mid": "1", "width": 320, "height": 180}))
        .await;
    expect_error(&mut cy, "unsupported_mode").await;
    cy.send(json!({"type": "offer", "to": "sfu", "sdp": browser_like_offer()}))
        .await;
    expect_error(&mut cy, "unknown_participant").await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_engine_takes_as_many_as_the_room_sizes_allow() {
    // More than the engine's own default room size (50): the configured sizes decide.
    let server = server(|c| c.max_receivers = 60).await;
    let addr = server.http_addr();
    let mut clients = Vec::new();
    for i in 0..55 {
        let mut client = Client::connect(addr, "/ws").await;
        let role = if i == 0 { "sender" } else { "receiver" };
        client
            .send(json!({"type": "join", "room": "big", "name": format!("P{i}"), "role": role, "mode": "sfu"}))
            .await;
        assert_eq!(client.recv_type("joined").await["mode"], "sfu");
        client
            .send(json!({"type": "offer", "to": "sfu", "sdp": browser_like_offer()}))
            .await;
        clients.push(client);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let answer = client.recv_type("answer").await;
        assert_eq!(answer["from"], "sfu", "participant {i}");
    }
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("switchboard_sfu_participants 55"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn ice_tcp_connections_that_send_no_ice_check_are_closed_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server(|_| {}).await;
    let media = server.sfu_addrs()[0];
    let mut stream = tokio::net::TcpStream::connect(media).await.unwrap();
    // One RFC 4571 frame that is no STUN binding request.
    stream
        .write_all(&[0, 5, b'h', b'e', b'l', b'l', b'o'])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let (_, metrics) = http_get(server.http_addr(), "/metrics").await;
    assert!(
        metrics.contains("switchboard_sfu_tcp_accepted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_sfu_tcp_invalid_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_sfu_tcp_connections 0"),
        "{metrics}"
    );
}
