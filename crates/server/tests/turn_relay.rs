//! TURN on real sockets with our own client: authentication failures, the peer policy,
//! permissions with Send and Data indications, channels with ChannelData over UDP and TCP,
//! relay to relay between two clients of the same server, Refresh, quotas, bad input that
//! must not disturb other allocations, the admin API, metrics and `/api/ice-servers`
//! credentials.

mod turn_support;

use std::time::Duration;

use switchboard_stun::{AttributeType, Class, ErrorCode, Message, MessageType, Method};
use turn_support::{
    Link, PASSWORD, Peer, Relayed, SECRET, SILENCE, TurnClient, USER, allow_loopback, http_get,
    metric, metrics, nothing, turn_server, udp_transport,
};

#[tokio::test]
async fn challenges_wrong_passwords_and_stale_nonces() {
    let server = turn_server(|config| config.turn_nonce_lifetime_secs = 1).await;
    let addr = server.stun_addr().unwrap();
    let mut client = TurnClient::udp(addr).await;

    let challenge = client
        .request(Method::ALLOCATE, false, &udp_transport)
        .await;
    assert_eq!(challenge.error(), Some(ErrorCode::UNAUTHORIZED));
    assert_eq!(
        challenge.text(AttributeType::REALM).as_deref(),
        Some("switchboard")
    );
    assert_eq!(
        challenge.text(AttributeType::NONCE).map(|n| n.len()),
        Some(32)
    );
    assert!(
        challenge
            .message()
            .get(AttributeType::MESSAGE_INTEGRITY)
            .is_none()
    );
    client.learn(&challenge);

    client.password = "not-the-password".into();
    let response = client.request(Method::ALLOCATE, true, &udp_transport).await;
    assert_eq!(response.error(), Some(ErrorCode::UNAUTHORIZED));
    client.password = PASSWORD.into();

    // The nonce lifetime is 1 s here.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = client.request(Method::ALLOCATE, true, &udp_transport).await;
    assert_eq!(stale.error(), Some(ErrorCode::STALE_NONCE));
    let fresh = stale.text(AttributeType::NONCE).unwrap();
    assert_ne!(fresh, client.nonce);
    client.learn(&stale);
    let response = client.request(Method::ALLOCATE, true, &udp_transport).await;
    assert_eq!(
        response.class(),
        Class::SuccessResponse,
        "{:?}",
        response.error()
    );

    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_auth_failures_total{reason=\"missing_credentials\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_auth_failures_total{reason=\"bad_integrity\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_auth_failures_total{reason=\"stale_nonce\"}"
        ),
        1
    );
    assert_eq!(
        metric(&text, "switchboard_turn_errors_total{code=\"401\"}"),
        2
    );
    assert_eq!(
        metric(&text, "switchboard_turn_errors_total{code=\"438\"}"),
        1
    );
    assert_eq!(metric(&text, "switchboard_turn_allocations"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_requests_never_allocate() {
    let server = turn_server(|_| {}).await;
    let addr = server.stun_addr().unwrap();
    let mut client = TurnClient::udp(addr).await;
    for _ in 0..3 {
        let response = client
            .request(Method::ALLOCATE, false, &udp_transport)
            .await;
        assert_eq!(response.error(), Some(ErrorCode::UNAUTHORIZED));
    }
    client.username = "nobody".into();
    let response = client.authed(Method::ALLOCATE, &udp_transport).await;
    assert_eq!(response.error(), Some(ErrorCode::UNAUTHORIZED));
    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, "switchboard_turn_allocations_created_total"),
        0
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_auth_failures_total{reason=\"unknown_user\"}"
        ),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn loopback_peers_are_refused_by_default() {
    let server = turn_server(|_| {}).await;
    let addr = server.stun_addr().unwrap();
    let peer = Peer::new().await;
    let mut client = TurnClient::udp(addr).await;
    client.allocate().await;
    let response = client.create_permission(peer.addr()).await;
    assert_eq!(response.error(), Some(ErrorCode::FORBIDDEN));
    let response = client.channel_bind(0x4000, peer.addr()).await;
    assert_eq!(response.error(), Some(ErrorCode::FORBIDDEN));
    // The server's own HTTP port, and a private and a link-local address, too.
    for target in [
        server.http_addr(),
        "10.0.0.1:80".parse().unwrap(),
        "169.254.169.254:80".parse().unwrap(),
    ] {
        let response = client.create_permission(target).await;
        assert_eq!(response.error(), Some(ErrorCode::FORBIDDEN), "{target}");
    }
    client.send_indication(peer.addr(), b"let me in").await;
    assert_eq!(peer.recv_within(SILENCE).await, None);
    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, "switchboard_turn_errors_total{code=\"403\"}"),
        5
    );
    assert_eq!(metric(&text, "switchboard_turn_permissions"), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn permission_send_and_data_indications() {
    let server = turn_server(allow_loopback).await;
    let addr = server.stun_addr().unwrap();
    let peer = Peer::new().await;
    // Permissions are per IP address, so the stranger needs another loopback address.
    let stranger = Peer::on("127.0.0.2").await;
    let mut client = TurnClient::udp(addr).await;
    let relayed = client.allocate().await;
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");

    // Nothing passes before the permission.
    client.send_indication(peer.addr(), b"too early").await;
    assert_eq!(peer.recv_within(SILENCE).await, None);

    let response = client.create_permission(peer.addr()).await;
    assert_eq!(response.class(), Class::SuccessResponse);
    client.send_indication(peer.addr(), b"hello peer").await;
    assert_eq!(peer.recv().await, (b"hello peer".to_vec(), relayed));

    peer.send(b"hello client", relayed).await;
    assert_eq!(
        client.relayed().await,
        Relayed::Data(peer.addr(), b"hello client".to_vec())
    );

    // A peer without a permission cannot reach the client through the relay.
    stranger.send(b"spam", relayed).await;
    assert_eq!(client.relayed_within(SILENCE).await, None);
    server.shutdown().await;
}

async fn channel_round_trip(mut client: TurnClient) {
    let peer = Peer::new().await;
    let relayed = client.allocate().await;
    let response = client.channel_bind(0x4001, peer.addr()).await;
    assert_eq!(
        response.class(),
        Class::SuccessResponse,
        "{:?}",
        response.error()
    );
    for size in [1, 5, 100, 1200] {
        let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
        client.channel_data(0x4001, &data).await;
        assert_eq!(peer.recv().await, (data.clone(), relayed));
        peer.send(&data, relayed).await;
        assert_eq!(client.relayed().await, Relayed::Channel(0x4001, data));
    }
    // ChannelData on a channel that is not bound goes nowhere.
    client.channel_data(0x4002, b"unbound").await;
    assert_eq!(peer.recv_within(SILENCE).await, None);
}

#[tokio::test]
async fn channel_data_both_ways_over_udp() {
    let server = turn_server(allow_loopback).await;
    let addr = server.stun_addr().unwrap();
    channel_round_trip(TurnClient::udp(addr).await).await;
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_peer\"}"
        ),
        4
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_bytes_total{direction=\"to_client\"}"
        ),
        1306
    );
    assert_eq!(metric(&text, "switchboard_turn_channels"), 1);
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_dropped_total{reason=\"no_channel\"}"
        ),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn channel_data_both_ways_over_tcp() {
    let server = turn_server(allow_loopback).await;
    let addr = server.stun_addr().unwrap();
    channel_round_trip(TurnClient::tcp(addr).await).await;
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_client\"}"
        ),
        4
    );
    server.shutdown().await;
}

/// Two clients that can only use the relay reach each other through their relayed
/// addresses, both ways, with Send indications and then with ChannelData.
async fn relay_to_relay_round_trips(mut a: TurnClient, mut b: TurnClient) {
    let a_relay = a.allocate().await;
    let b_relay = b.allocate().await;
    for (client, peer) in [(&mut a, b_relay), (&mut b, a_relay)] {
        let response = client.create_permission(peer).await;
        assert_eq!(
            response.class(),
            Class::SuccessResponse,
            "{:?}",
            response.error()
        );
    }
    a.send_indication(b_relay, b"hello b").await;
    assert_eq!(
        b.relayed().await,
        Relayed::Data(a_relay, b"hello b".to_vec())
    );
    b.send_indication(a_relay, b"hello a").await;
    assert_eq!(
        a.relayed().await,
        Relayed::Data(b_relay, b"hello a".to_vec())
    );

    for (client, channel, peer) in [(&mut a, 0x4001, b_relay), (&mut b, 0x4002, a_relay)] {
        let response = client.channel_bind(channel, peer).await;
        assert_eq!(
            response.class(),
            Class::SuccessResponse,
            "{:?}",
            response.error()
        );
    }
    for size in [1, 5, 100, 1200] {
        let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
        a.channel_data(0x4001, &data).await;
        assert_eq!(b.relayed().await, Relayed::Channel(0x4002, data.clone()));
        b.channel_data(0x4002, &data).await;
        assert_eq!(a.relayed().await, Relayed::Channel(0x4001, data));
    }
}

#[tokio::test]
async fn relay_to_relay_with_the_default_peer_policy() {
    // No allow-list: loopback peers, and so the relay ports on 127.0.0.1 as seen through a
    // socket, are refused; the server hands data between its own allocations instead.
    let server = turn_server(|_| {}).await;
    let addr = server.stun_addr().unwrap();
    relay_to_relay_round_trips(TurnClient::udp(addr).await, TurnClient::udp(addr).await).await;

    // The server's other addresses stay closed, relay IP or not.
    let mut a = TurnClient::udp(addr).await;
    let mut b = TurnClient::udp(addr).await;
    let service = Peer::new().await;
    a.allocate().await;
    let b_relay = b.allocate().await;
    let response = a.create_permission(server.http_addr()).await;
    assert_eq!(response.error(), Some(ErrorCode::FORBIDDEN));
    let response = a.channel_bind(0x4003, addr).await;
    assert_eq!(response.error(), Some(ErrorCode::FORBIDDEN));
    // A permission for another relay covers the whole IP, but data goes to live
    // allocations only: not to the STUN port (whose Binding answer would come back as a
    // Data indication), nor to a loopback service.
    let response = a.create_permission(b_relay).await;
    assert_eq!(response.class(), Class::SuccessResponse);
    let txid = a.txid();
    let binding = a.encode(Method::BINDING, Class::Request, txid, false, &nothing);
    a.send_indication(addr, &binding).await;
    a.send_indication(service.addr(), b"let me in").await;
    assert_eq!(service.recv_within(SILENCE).await, None);
    assert_eq!(a.link.recv_within(SILENCE).await, None);

    let text = metrics(&server).await;
    // 2 Send indications and 8 ChannelData messages, each relayed once out of the sender's
    // allocation and once into the receiver's.
    for direction in ["to_peer", "to_client"] {
        assert_eq!(
            metric(
                &text,
                &format!("switchboard_turn_relayed_packets_total{{direction=\"{direction}\"}}")
            ),
            10
        );
    }
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_dropped_total{reason=\"server_address\"}"
        ),
        2
    );
    assert_eq!(
        metric(&text, "switchboard_turn_errors_total{code=\"403\"}"),
        2
    );
    server.shutdown().await;
}

#[tokio::test]
async fn relay_to_relay_between_udp_and_tcp_clients() {
    let server = turn_server(|_| {}).await;
    let addr = server.stun_addr().unwrap();
    relay_to_relay_round_trips(TurnClient::udp(addr).await, TurnClient::tcp(addr).await).await;
    server.shutdown().await;
}

#[tokio::test]
async fn refresh_with_lifetime_zero_frees_the_allocation() {
    let server = turn_server(allow_loopback).await;
    let addr = server.stun_addr().unwrap();
    let peer = Peer::new().await;
    let mut client = TurnClient::udp(addr).await;
    let relayed = client.allocate().await;
    client.create_permission(peer.addr()).await;
    let response = client.refresh(1200).await;
    assert_eq!(response.lifetime(), Some(1200));
    let response = client.refresh(0).await;
    assert_eq!(response.class(), Class::SuccessResponse);
    assert_eq!(response.lifetime(), Some(0));

    let (_, body) = http_get(server.http_addr(), "/api/turn/allocations", &[]).await;
    assert_eq!(body, r#"{"allocations":[]}"#);
    // The relay port is closed: nothing comes through it.
    peer.send(b"anyone?", relayed).await;
    assert_eq!(client.relayed_within(SILENCE).await, None);
    let response = client.refresh(600).await;
    assert_eq!(response.error(), Some(ErrorCode::ALLOCATION_MISMATCH));
    // The 5-tuple can allocate again.
    client.allocate().await;
    let text = metrics(&server).await;
    assert_eq!(metric(&text, "switchboard_turn_allocations"), 1);
    assert_eq!(
        metric(&text, "switchboard_turn_allocations_created_total"),
        2
    );
    server.shutdown().await;
}

#[tokio::test]
async fn allocation_quota_per_user() {
    let server = turn_server(|config| config.turn_max_allocations_per_user = 1).await;
    let addr = server.stun_addr().unwrap();
    let mut first = TurnClient::udp(addr).await;
    first.allocate().await;
    let mut second = TurnClient::udp(addr).await;
    let response = second.authed(Method::ALLOCATE, &udp_transport).await;
    assert_eq!(response.error(), Some(ErrorCode::ALLOCATION_QUOTA_REACHED));
    // Over TCP too, and a second allocation on the same 5-tuple is a mismatch.
    let mut third = TurnClient::tcp(addr).await;
    let response = third.authed(Method::ALLOCATE, &udp_transport).await;
    assert_eq!(response.error(), Some(ErrorCode::ALLOCATION_QUOTA_REACHED));
    let response = first.request(Method::ALLOCATE, true, &udp_transport).await;
    assert_eq!(response.error(), Some(ErrorCode::ALLOCATION_MISMATCH));
    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, "switchboard_turn_errors_total{code=\"486\"}"),
        2
    );
    assert_eq!(
        metric(&text, "switchboard_turn_errors_total{code=\"437\"}"),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_never_disturbs_another_allocation() {
    let server = turn_server(allow_loopback).await;
    let addr = server.stun_addr().unwrap();
    let peer = Peer::new().await;
    let mut victim = TurnClient::udp(addr).await;
    let relayed = victim.allocate().await;
    victim.channel_bind(0x4001, peer.addr()).await;

    // A signed request of the victim's, captured for replay.
    let txid = victim.txid();
    let captured = victim.encode(Method::REFRESH, Class::Request, txid, true, &|b| {
        b.add_raw(AttributeType::LIFETIME, &[0, 0, 0, 0]).unwrap()
    });

    let mut attacker = TurnClient::udp(addr).await;
    let mut truncated = captured.clone();
    truncated.truncate(30);
    let mut oversized_channel = vec![0x40, 0x01, 0xFF, 0xFF];
    oversized_channel.extend_from_slice(&[7; 64]);
    let datagrams: Vec<Vec<u8>> = vec![
        b"\x16\x03\x01 not TURN".to_vec(),
        vec![0x80; 60_000],
        truncated,
        oversized_channel,
        vec![0x40, 0x02, 0x00, 0x03, b'b', b'a', b'd'],
        vec![],
    ];
    for datagram in &datagrams {
        attacker.link.send(datagram).await;
        victim.link.send(datagram).await;
    }
    // The replayed Refresh from another address is answered with 438, not obeyed.
    attacker.link.send(&captured).await;
    let response = attacker.response_to(txid).await;
    assert_eq!(response.error(), Some(ErrorCode::STALE_NONCE));
    assert_eq!(attacker.link.recv_within(SILENCE).await, None);

    // TCP streams that cannot be TURN close only their own connection.
    // A connection that announces a 64 KiB message and stops half-way holds only its own
    // buffer.
    let mut stun_then_huge = TurnClient::tcp(addr).await;
    stun_then_huge
        .request(Method::BINDING, false, &nothing)
        .await;
    let mut huge_stun = captured[..20].to_vec();
    huge_stun[2..4].copy_from_slice(&0xFFF0u16.to_be_bytes());
    huge_stun.extend_from_slice(&[0; 1000]);
    stun_then_huge.link.send(&huge_stun).await;
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4][..],
        &[0xC0, 0, 0, 0][..],
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
    ] {
        let mut link = Link::tcp(addr).await;
        link.send(bytes).await;
        assert!(link.closed_by_server().await, "{bytes:?}");
    }

    // The victim's allocation relays both ways as before.
    victim.channel_data(0x4001, b"still working").await;
    assert_eq!(peer.recv().await, (b"still working".to_vec(), relayed));
    peer.send(b"and back", relayed).await;
    assert_eq!(
        victim.relayed().await,
        Relayed::Channel(0x4001, b"and back".to_vec())
    );
    drop(stun_then_huge);
    let text = metrics(&server).await;
    assert_eq!(metric(&text, "switchboard_turn_allocations"), 1);
    // Per sender: TLS-looking bytes, RTP-looking bytes, the truncated request and the empty
    // datagram are not TURN, the truncated ChannelData is malformed; ChannelData on channel
    // 0x4002 has no allocation (attacker) or no channel (victim) behind it.
    assert_eq!(
        metric(&text, "switchboard_turn_dropped_total{reason=\"not_turn\"}"),
        8
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_dropped_total{reason=\"malformed\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_dropped_total{reason=\"no_allocation\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_dropped_total{reason=\"no_channel\"}"
        ),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn admin_api_lists_allocations() {
    let server = turn_server(|config| {
        allow_loopback(config);
        config.admin_key = "let-me-see".into();
    })
    .await;
    let addr = server.stun_addr().unwrap();
    let peer = Peer::new().await;
    let mut client = TurnClient::udp(addr).await;
    let relayed = client.allocate().await;
    client.channel_bind(0x4abc, peer.addr()).await;
    client.channel_data(0x4abc, b"12345").await;
    peer.recv().await;
    peer.send(b"123", relayed).await;
    client.relayed().await;

    let path = "/api/turn/allocations";
    let (status, _) = http_get(server.http_addr(), path, &[]).await;
    assert_eq!(status, 401);
    let (status, _) = http_get(
        server.http_addr(),
        path,
        &[("Authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = http_get(
        server.http_addr(),
        path,
        &[("Authorization", "Bearer let-me-see")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let allocation = &list["allocations"][0];
    assert_eq!(list["allocations"].as_array().unwrap().len(), 1);
    assert_eq!(allocation["username"], USER);
    assert_eq!(allocation["transport"], "udp");
    assert_eq!(allocation["client"], client.link.local_addr().to_string());
    assert_eq!(allocation["relay"], relayed.to_string());
    assert_eq!(allocation["permissions"][0]["peer"], "127.0.0.1");
    assert_eq!(allocation["channels"][0]["number"], 0x4abc);
    assert_eq!(allocation["channels"][0]["peer"], peer.addr().to_string());
    assert_eq!(
        allocation["to_peer"],
        serde_json::json!({"bytes": 5, "packets": 1})
    );
    assert_eq!(
        allocation["to_client"],
        serde_json::json!({"bytes": 3, "packets": 1})
    );
    let expires = allocation["expires_in_secs"].as_u64().unwrap();
    assert!((598..=600).contains(&expires), "{expires}");
    server.shutdown().await;
}

#[tokio::test]
async fn without_admin_key_the_admin_api_answers_only_direct_loopback_requests() {
    let server = turn_server(|_| {}).await;
    let path = "/api/turn/allocations";
    let (status, body) = http_get(server.http_addr(), path, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"allocations":[]}"#);
    // What a reverse proxy on the same machine forwards is somebody else's request.
    for header in ["X-Forwarded-For", "Forwarded", "X-Real-IP"] {
        let (status, body) = http_get(server.http_addr(), path, &[(header, "203.0.113.9")]).await;
        assert_eq!(status, 403, "{header}: {body}");
        assert!(body.contains(r#""code":"forbidden""#), "{body}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn ice_servers_mint_working_rest_credentials() {
    let server = turn_server(|config| config.turn_credential_ttl_secs = 3600).await;
    let addr = server.stun_addr().unwrap();
    let (status, body) = http_get(server.http_addr(), "/api/ice-servers", &[]).await;
    assert_eq!(status, 200);
    let ice: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ice["ttl"], 3600);
    assert_eq!(
        ice["iceServers"][0]["urls"],
        serde_json::json!([format!("stun:127.0.0.1:{}", addr.port())])
    );
    let turn = &ice["iceServers"][1];
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now + 3599..=now + 3601).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert!(user.starts_with("sb") && user.len() == 18, "{user}");
    assert_eq!(
        turn["credential"].as_str().unwrap(),
        switchboard_turn::rest_password(SECRET.as_bytes(), username)
    );

    let mut client = TurnClient::new(
        Link::udp(addr).await,
        username,
        turn["credential"].as_str().unwrap(),
    );
    client.allocate().await;
    // An expired REST credential is refused.
    let old = switchboard_turn::rest_username(now - 1, "late");
    let password = switchboard_turn::rest_password(SECRET.as_bytes(), &old);
    let mut late = TurnClient::new(Link::udp(addr).await, &old, &password);
    let response = late.authed(Method::ALLOCATE, &udp_transport).await;
    assert_eq!(response.error(), Some(ErrorCode::UNAUTHORIZED));
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_auth_failures_total{reason=\"expired_credential\"}"
        ),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn binding_is_answered_in_turn_mode() {
    let server = turn_server(|_| {}).await;
    let addr = server.stun_addr().unwrap();
    for mut client in [TurnClient::udp(addr).await, TurnClient::tcp(addr).await] {
        let response = client.request(Method::BINDING, false, &nothing).await;
        let message = response.message();
        assert_eq!(message.message_type(), MessageType::BINDING_SUCCESS);
        assert_eq!(message.xor_mapped_address(), Some(client.link.local_addr()));
    }
    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, "switchboard_turn_requests_total{method=\"binding\"}"),
        2
    );
    assert_eq!(metric(&text, "switchboard_stun_responses_total"), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn turn_can_be_turned_off() {
    let server = turn_server(|config| config.turn_enabled = false).await;
    let addr = server.stun_addr().unwrap();
    let mut client = TurnClient::udp(addr).await;
    let txid = client.txid();
    let request = client.encode(
        Method::ALLOCATE,
        Class::Request,
        txid,
        false,
        &udp_transport,
    );
    client.link.send(&request).await;
    assert_eq!(client.link.recv_within(SILENCE).await, None);
    let response = client.request(Method::BINDING, false, &nothing).await;
    assert_eq!(
        Message::decode(&response.bytes).unwrap().message_type(),
        MessageType::BINDING_SUCCESS
    );
    let (_, body) = http_get(server.http_addr(), "/api/ice-servers", &[]).await;
    let ice: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ice["iceServers"].as_array().unwrap().len(), 1);
    assert_eq!(ice.get("ttl"), None);
    let (status, _) = http_get(server.http_addr(), "/api/turn/allocations", &[]).await;
    assert_eq!(status, 404);
    assert!(!metrics(&server).await.contains("switchboard_turn_"));
    server.shutdown().await;
}
