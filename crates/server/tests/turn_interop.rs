//! TURN against a third-party client: coturn's `turnutils_uclient` allocates on our server
//! over UDP, TCP and TLS, with static long-term credentials and with TURN REST API
//! credentials, and relays to coturn's `turnutils_peer` echo server on loopback (the test
//! opts in to loopback peers with an allow-list). Every run must finish with every message
//! echoed back and zero loss, and the server's counters must agree.
//!
//! The tools come from Debian's `coturn` package, which `scripts/install-deps.sh`
//! installs. coturn's own server is never started.

mod turn_support;

use turn_support::{
    CoturnPeer, PASSWORD, SECRET, USER, allow_loopback, http_get, metric, metrics, run_uclient,
    self_signed_cert, turn_server,
};

/// Messages per client and clients per run: 4 clients × 100 messages of 200 bytes every
/// 10 ms is 400 messages/s each way, a moderate rate a call could use.
const MESSAGES: &str = "100";
const CLIENTS: &str = "4";
const INTERVAL_MS: &str = "10";
const LENGTH: &str = "200";

/// Runs the client with `extra` flags and checks the totals: `expected` messages sent and
/// received, none lost.
async fn relay_run(extra: &[&str], peer: Option<&CoturnPeer>, port: u16, expected: u64) -> String {
    let peer_port = peer.map(|p| p.port.to_string());
    let mut args = vec![
        "-n",
        MESSAGES,
        "-m",
        CLIENTS,
        "-z",
        INTERVAL_MS,
        "-l",
        LENGTH,
    ];
    if let Some(peer_port) = &peer_port {
        args.extend(["-e", "127.0.0.1", "-r", peer_port]);
    }
    args.extend_from_slice(extra);
    let run = run_uclient(&args, port).await;
    let output = run.output;
    assert!(run.success, "{output}");
    let report = run.report.unwrap_or_else(|| panic!("no totals:\n{output}"));
    assert_eq!(report.sent, expected, "{output}");
    assert_eq!(report.received, expected, "{output}");
    assert_eq!(report.lost, 0, "{output}");
    assert_eq!(report.send_dropped, 0, "{output}");
    output
}

#[tokio::test]
async fn uclient_udp_static_credentials_channels() {
    let server = turn_server(allow_loopback).await;
    let peer = CoturnPeer::start().await;
    let port = server.stun_addr().unwrap().port();
    relay_run(&["-u", USER, "-w", PASSWORD], Some(&peer), port, 400).await;

    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_peer\"}"
        ),
        400
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_client\"}"
        ),
        400
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_bytes_total{direction=\"to_peer\"}"
        ),
        400 * 200
    );
    assert_eq!(
        metric(&text, "switchboard_turn_errors_total{code=\"400\"}"),
        0
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_auth_failures_total{reason=\"bad_integrity\"}"
        ),
        0
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_dropped_total{reason=\"no_permission\"}"
        ),
        0
    );

    // The client deletes the allocations that carried data (Refresh with lifetime 0) and
    // leaves its spare ones to expire; those are listed, and the list and the gauge agree.
    let (status, body) = http_get(server.http_addr(), "/api/turn/allocations", &[]).await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let allocations = list["allocations"].as_array().unwrap();
    assert_eq!(
        metric(&text, "switchboard_turn_allocations"),
        allocations.len() as u64
    );
    assert!(metric(&text, "switchboard_turn_allocations_created_total") >= 4);
    assert!(
        allocations
            .iter()
            .all(|a| a["username"] == USER && a["transport"] == "udp")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_tcp_static_credentials() {
    let server = turn_server(allow_loopback).await;
    let peer = CoturnPeer::start().await;
    let port = server.stun_addr().unwrap().port();
    relay_run(&["-t", "-u", USER, "-w", PASSWORD], Some(&peer), port, 400).await;
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_client\"}"
        ),
        400
    );
    // TCP allocations end with their connections.
    assert_eq!(metric(&text, "switchboard_turn_allocations"), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_send_indications_udp_and_tcp() {
    let server = turn_server(allow_loopback).await;
    let peer = CoturnPeer::start().await;
    let port = server.stun_addr().unwrap().port();
    relay_run(&["-s", "-u", USER, "-w", PASSWORD], Some(&peer), port, 400).await;
    relay_run(
        &["-s", "-t", "-u", USER, "-w", PASSWORD],
        Some(&peer),
        port,
        400,
    )
    .await;
    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, "switchboard_turn_requests_total{method=\"send\"}"),
        800
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_client\"}"
        ),
        800
    );
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_rest_credentials_udp_and_tcp() {
    let server = turn_server(allow_loopback).await;
    let peer = CoturnPeer::start().await;
    let port = server.stun_addr().unwrap().port();
    // The client computes `expiry:user` and the HMAC itself from the shared secret.
    relay_run(&["-W", SECRET, "-u", "rest-user"], Some(&peer), port, 400).await;
    relay_run(
        &["-t", "-W", SECRET, "-u", "rest-user"],
        Some(&peer),
        port,
        400,
    )
    .await;
    // A wrong secret gets nowhere.
    let run = run_uclient(
        &[
            "-W",
            "not-the-secret",
            "-u",
            "rest-user",
            "-e",
            "127.0.0.1",
            "-r",
            &peer.port.to_string(),
            "-n",
            "5",
        ],
        port,
    )
    .await;
    assert!(!run.success, "{}", run.output);
    assert_eq!(run.report, None, "{}", run.output);
    assert!(
        run.output.contains("Cannot complete Allocation"),
        "{}",
        run.output
    );
    let text = metrics(&server).await;
    // The client retries a few times; every attempt fails on integrity.
    assert!(
        metric(
            &text,
            "switchboard_turn_auth_failures_total{reason=\"bad_integrity\"}"
        ) >= 1
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_peer\"}"
        ),
        800
    );
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_with_credentials_from_ice_servers() {
    let server = turn_server(allow_loopback).await;
    let peer = CoturnPeer::start().await;
    let port = server.stun_addr().unwrap().port();
    let (status, body) = http_get(server.http_addr(), "/api/ice-servers", &[]).await;
    assert_eq!(status, 200);
    let ice: serde_json::Value = serde_json::from_str(&body).unwrap();
    let turn = &ice["iceServers"][1];
    assert_eq!(
        turn["urls"],
        serde_json::json!([
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp")
        ])
    );
    let username = turn["username"].as_str().unwrap();
    let credential = turn["credential"].as_str().unwrap();
    relay_run(&["-u", username, "-w", credential], Some(&peer), port, 400).await;
    relay_run(
        &["-t", "-u", username, "-w", credential],
        Some(&peer),
        port,
        400,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_client_to_client() {
    // `-y`: the clients relay to each other's relayed addresses, which are the server's own
    // loopback relay ports. With the default peer policy (loopback refused), the core
    // delivers between the two allocations itself.
    let server = turn_server(|_| {}).await;
    let port = server.stun_addr().unwrap().port();
    relay_run(&["-y", "-u", USER, "-w", PASSWORD], None, port, 400).await;
    relay_run(&["-y", "-t", "-u", USER, "-w", PASSWORD], None, port, 400).await;
    let text = metrics(&server).await;
    // Each message crosses two allocations: client to relay, relay to the other client.
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_peer\"}"
        ),
        800
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_client\"}"
        ),
        800
    );
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_over_tls() {
    let dir = std::env::temp_dir().join(format!("sb-turn-tls-{}", std::process::id()));
    let (cert, key) = self_signed_cert(&dir);
    let server = turn_server(|config| {
        allow_loopback(config);
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
        config.turn_tls_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let peer = CoturnPeer::start().await;
    let tls_port = server.turn_tls_addr().unwrap().port();
    relay_run(
        &["-t", "-S", "-u", USER, "-w", PASSWORD],
        Some(&peer),
        tls_port,
        400,
    )
    .await;
    let (_, body) = http_get(server.http_addr(), "/api/ice-servers", &[]).await;
    let ice: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ice["iceServers"][1]["urls"][2],
        format!("turns:127.0.0.1:{tls_port}?transport=tcp")
    );
    server.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn loopback_peers_are_refused_without_the_allow_list() {
    let server = turn_server(|_| {}).await;
    let peer = CoturnPeer::start().await;
    let port = server.stun_addr().unwrap().port();
    let run = run_uclient(
        &[
            "-u",
            USER,
            "-w",
            PASSWORD,
            "-e",
            "127.0.0.1",
            "-r",
            &peer.port.to_string(),
            "-n",
            "5",
        ],
        port,
    )
    .await;
    assert!(!run.success, "{}", run.output);
    assert_eq!(run.report, None, "{}", run.output);
    assert!(
        run.output.contains("error 403 (Forbidden)"),
        "{}",
        run.output
    );
    let text = metrics(&server).await;
    assert!(metric(&text, "switchboard_turn_errors_total{code=\"403\"}") >= 1);
    assert_eq!(
        metric(
            &text,
            "switchboard_turn_relayed_packets_total{direction=\"to_peer\"}"
        ),
        0
    );
    server.shutdown().await;
}
