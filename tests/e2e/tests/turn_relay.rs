//! Calls forced through Switchboard's own TURN relay: both pages are opened with `?relay=1`
//! (the SDK's `iceTransportPolicy: 'relay'`), so the browsers may only use relayed
//! candidates. Chromium with Chromium, and Chromium with Firefox ESR.
//!
//! The STUN/TURN server listens on the machine's non-loopback address (inside
//! `scripts/e2e.sh`'s namespace, 10.213.7.1), where every browser can reach it, and
//! `/api/ice-servers` announces that address. Both relayed addresses are on it too, so each
//! allocation's peer is the server's own, private address, which TURN refuses unless told:
//! the test opens exactly that one address with `turn_allow_peers`.

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use switchboard_e2e::{
    Browser, BrowserKind, SelectedPair, TestServer, assert_full_mesh, assert_peer_stats,
    diagnostics_of, host_ipv4, join_room_with, metric_value, selected_pair,
};

/// "Substantial relayed traffic": more than this many bytes, each way.
const MIN_RELAYED_BYTES: u64 = 100_000;

/// How long relayed bytes may take to add up once video plays (a few seconds normally;
/// generous for a loaded 2-core machine).
const RELAYED_BYTES_WAIT: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn two_chromium_participants_call_through_the_turn_relay() -> Result<()> {
    relayed_call(
        "relay-chromium",
        [
            (BrowserKind::Chromium, "alice"),
            (BrowserKind::Chromium, "bob"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn chromium_and_firefox_call_through_the_turn_relay() -> Result<()> {
    relayed_call(
        "relay-interop",
        [
            (BrowserKind::Chromium, "chrome-user"),
            (BrowserKind::Firefox, "firefox-user"),
        ],
    )
    .await
}

/// A server whose STUN/TURN listens on `ip` (relays too: the relay IP defaults to the STUN
/// IP), announced to browsers as `ip`, relaying to exactly `ip`.
async fn relay_server(ip: Ipv4Addr) -> Result<TestServer> {
    let server = TestServer::start_with(|config| {
        config.stun_addr = Some(SocketAddr::new(ip.into(), 0));
        config.announce_host = ip.to_string();
        config.turn_allow_peers = vec![format!("{ip}/32")];
    })
    .await?;
    let stun = server
        .stun_addr()
        .ok_or_else(|| anyhow!("the server started without STUN/TURN"))?;
    // What the pages will be told: a turn: URL at the address they can reach.
    let ice = server.get_json("/api/ice-servers").await?;
    let expected = format!("turn:{ip}:{}?transport=udp", stun.port());
    let offered = ice["iceServers"].as_array().into_iter().flatten().any(|s| {
        s["urls"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|u| u == &expected[..])
    });
    ensure!(offered, "/api/ice-servers does not offer {expected}: {ice}");
    println!("STUN/TURN on {stun}, relaying to {ip}/32");
    Ok(server)
}

async fn relayed_call(room: &str, specs: [(BrowserKind, &str); 2]) -> Result<()> {
    let ip = host_ipv4()?;
    let server = relay_server(ip).await?;
    let browsers = Browser::launch_all(&specs).await?;
    let people = [(&browsers[0], specs[0].1), (&browsers[1], specs[1].1)];
    join_room_with(&server, room, "relay=1", &people).await?;

    // Media flows both ways (each side decodes > 30 frames of the other)…
    assert_full_mesh(&people).await?;

    // …over a pair whose local candidate is a relay on our TURN server, on both sides.
    let mut pairs = Vec::new();
    for (i, (page, name)) in people.iter().enumerate() {
        let other = people[1 - i].1;
        assert_peer_stats(page, other).await?;
        let pair = selected_pair(page, other).await?;
        println!("{name} → {other}: {pair:?}");
        check_relayed(page, other, &pair, ip).await?;
        pairs.push(pair);
    }

    // …and the media really went through the relay: the server counted it, both ways, on
    // the two allocations the pages selected.
    let relays: Vec<String> = pairs
        .iter()
        .map(|p| {
            p.local
                .socket_addr()
                .context("a relay candidate without address")
        })
        .collect::<Result<_>>()?;
    if let Err(e) = wait_relayed_bytes(&server, &relays).await {
        let pages: Vec<&Browser> = browsers.iter().collect();
        return Err(anyhow!("{e:#}\n{}", diagnostics_of(&pages).await));
    }
    server.shutdown().await;
    Ok(())
}

/// Checks that `page`'s connection to `other` is relay-only and uses a relayed candidate
/// on `ip` (our TURN server), also as the page's own stats summary reports it.
async fn check_relayed(
    page: &Browser,
    other: &str,
    pair: &SelectedPair,
    ip: Ipv4Addr,
) -> Result<()> {
    let who = format!("{} → {other}", page.label());
    ensure!(
        pair.policy.as_deref() == Some("relay"),
        "{who}: the peer connection's iceTransportPolicy is {:?}, not relay: {pair:?}",
        pair.policy
    );
    ensure!(
        pair.local.candidate_type.as_deref() == Some("relay"),
        "{who}: the selected pair's local candidate is not relayed: {pair:?}"
    );
    ensure!(
        pair.local.address.as_deref() == Some(&ip.to_string()[..]),
        "{who}: the relayed address is not on our TURN server ({ip}): {pair:?}"
    );
    ensure!(
        pair.local_candidate_types.iter().all(|t| t == "relay"),
        "{who}: the connection gathered non-relay candidates: {pair:?}"
    );
    let stats = page.stats().await?;
    let summary = stats
        .iter()
        .find(|s| s["name"] == other)
        .ok_or_else(|| anyhow!("{who}: no stats entry: {stats:?}"))?;
    ensure!(
        summary["candidateType"]["local"] == "relay",
        "{who}: window.switchboard.stats() reports a {} local candidate: {summary}",
        summary["candidateType"]["local"]
    );
    Ok(())
}

/// Waits until `/metrics` counts more than [`MIN_RELAYED_BYTES`] relayed each way, and
/// `/api/turn/allocations` shows each allocation of `relays` (the pages' relayed
/// addresses) relaying that much both to its peer and to its client: each page's media
/// left through its own allocation and arrived through the other's.
async fn wait_relayed_bytes(server: &TestServer, relays: &[String]) -> Result<()> {
    let started = Instant::now();
    loop {
        let metrics = server.metrics().await?;
        let to_peer = relayed(&metrics, "to_peer");
        let to_client = relayed(&metrics, "to_client");
        let allocations = server.get_json("/api/turn/allocations").await?;
        let per_relay: Vec<(String, Option<(u64, u64)>)> = relays
            .iter()
            .map(|relay| (relay.clone(), allocation_bytes(&allocations, relay)))
            .collect();
        let enough = |n: u64| n > MIN_RELAYED_BYTES;
        let done = enough(to_peer)
            && enough(to_client)
            && per_relay
                .iter()
                .all(|(_, b)| b.is_some_and(|(p, c)| enough(p) && enough(c)));
        if done {
            println!(
                "relayed {to_peer} B to peers, {to_client} B to clients after {:.1}s; \
                 per allocation (to peer, to client): {per_relay:?}",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > RELAYED_BYTES_WAIT {
            let turn_metrics: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("switchboard_turn_"))
                .collect();
            anyhow::bail!(
                "after {RELAYED_BYTES_WAIT:?} the TURN server relayed {to_peer} B to peers and \
                 {to_client} B to clients (need > {MIN_RELAYED_BYTES} each); per selected \
                 allocation (to peer, to client): {per_relay:?}\nallocations: {allocations}\n\
                 TURN metrics:\n{}",
                turn_metrics.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `switchboard_turn_relayed_bytes_total{direction="…"}`, 0 when absent.
fn relayed(metrics: &str, direction: &str) -> u64 {
    metric_value(
        metrics,
        &format!("switchboard_turn_relayed_bytes_total{{direction=\"{direction}\"}}"),
    )
    .unwrap_or(0.0) as u64
}

/// (bytes to peer, bytes to client) of the allocation whose relayed address is `relay`.
fn allocation_bytes(allocations: &Value, relay: &str) -> Option<(u64, u64)> {
    allocations["allocations"]
        .as_array()?
        .iter()
        .find(|a| a["relay"] == relay)
        .map(|a| {
            (
                a["to_peer"]["bytes"].as_u64().unwrap_or(0),
                a["to_client"]["bytes"].as_u64().unwrap_or(0),
            )
        })
}
