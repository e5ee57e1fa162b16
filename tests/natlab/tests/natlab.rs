//! Calls between real headless browsers behind NAT routers (network namespaces), through a
//! `switchboard` process on the public side. Run with `scripts/nat-lab.sh` (root).
//!
//! | routers | server | expected |
//! |---|---|---|
//! | port-restricted cone | STUN + TURN | the call connects; direct pairs on the NATs' public addresses (STUN hole punching) succeed, whichever working pair ICE picks |
//! | symmetric | STUN + TURN | direct checks all fail; the call goes through Switchboard's TURN relay |
//! | symmetric | STUN only | the call never connects and the page says so |
//!
//! Each test first proves the NAT type with STUN from the client namespaces.

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use std::time::{Duration, Instant};
use switchboard_e2e::{Browser, BrowserKind, assert_full_mesh, assert_peer_stats, diagnostics_of};
use switchboard_natlab::ice::{IceReport, ice_report};
use switchboard_natlab::lab::{CLIENT_IP, ROUTER_WAN, SERVER_IP};
use switchboard_natlab::probe::{Filtering, Mapping, assert_isolated, nat_behaviour};
use switchboard_natlab::server::{STUN_PORT, http_get};
use switchboard_natlab::{Lab, Nat, Relay, SwitchboardProcess, join, launch_clients};

/// How long a call through two NATs may take to show video: ICE over a relay needs an
/// allocation and more checks than a LAN call, on a loaded 2-core machine.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// Builds the lab, starts the server and proves both routers are the NAT `nat` claims to be.
async fn lab_with_server(nat: Nat, relay: Relay) -> Result<(Lab, SwitchboardProcess)> {
    let lab = Lab::build(nat)?;
    let server = SwitchboardProcess::start(&lab, relay).await?;
    assert_isolated(&lab)?;
    for i in 0..2 {
        let seen = nat_behaviour(&lab, i, STUN_PORT)
            .with_context(|| format!("probing the NAT of client {}", i + 1))?;
        println!(
            "router {}: {} NAT (mapping {:?}, filtering {:?}; public addresses {:?})",
            i + 1,
            seen.name(),
            seen.mapping,
            seen.filtering,
            seen.mapped
        );
        let expected = match nat {
            Nat::PortRestricted => Mapping::EndpointIndependent,
            Nat::Symmetric => Mapping::EndpointDependent,
        };
        ensure!(
            seen.mapping == expected && seen.filtering == Filtering::AddressAndPortDependent,
            "router {} behaves as a {} NAT, the lab asked for {nat:?}: {seen:?}",
            i + 1,
            seen.name()
        );
    }
    Ok((lab, server))
}

/// `/api/ice-servers` as a browser in client 1's namespace gets it; checks that TURN is
/// offered exactly when the server runs it.
fn assert_ice_servers(lab: &Lab, relay: Relay) -> Result<()> {
    let body = http_get(&lab.clients[0], "/api/ice-servers")?;
    let value: serde_json::Value = serde_json::from_str(&body)?;
    let urls: Vec<&str> = value["iceServers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["urls"].as_array().into_iter().flatten())
        .filter_map(|u| u.as_str())
        .collect();
    println!("/api/ice-servers offers {urls:?}");
    ensure!(
        urls.contains(&format!("stun:{SERVER_IP}:{STUN_PORT}").as_str()),
        "no STUN URL for the server: {body}"
    );
    let turn = urls.iter().any(|u| u.starts_with("turn:"));
    match relay {
        Relay::Turn => ensure!(turn, "TURN runs but /api/ice-servers offers none: {body}"),
        Relay::StunOnly => ensure!(!turn, "TURN is off but offered: {body}"),
    }
    Ok(())
}

/// Polls `browser`'s ICE report on its connection to `other` until `check` accepts it
/// (returns `Ok(true)`), or fails after `timeout` with the last report.
async fn wait_for_ice(
    browser: &Browser,
    other: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&IceReport) -> Result<bool>,
) -> Result<IceReport> {
    let started = Instant::now();
    loop {
        let last = ice_report(browser, other).await;
        if let Ok(report) = &last
            && check(report)?
        {
            println!(
                "[{}] {what}: done after {:.1}s\n  {}",
                browser.label(),
                started.elapsed().as_secs_f64(),
                report.describe()
            );
            return Ok(report.clone());
        }
        if started.elapsed() >= timeout {
            let last = match last {
                Ok(report) => report.describe(),
                Err(e) => format!("{e:#}"),
            };
            bail!(
                "[{}] timed out after {timeout:?} waiting for {what}\nlast ICE state {last}\n{}",
                browser.label(),
                browser.diagnostics().await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Both pages decode more than [`switchboard_e2e::MIN_FRAMES`] frames of each other within
/// [`CONNECT_WAIT`], and their own stats say connected with a codec and a selected pair.
async fn assert_call_plays(people: &[(&Browser, &str); 2]) -> Result<Duration> {
    let started = Instant::now();
    // ICE through NATs (and a relay) takes longer than on a LAN: wait for the connection
    // with a bound of its own, then for the frames with the harness's usual one.
    for ((viewer, _), (_, other)) in [(people[0], people[1]), (people[1], people[0])] {
        viewer
            .wait_until_within(
                &format!("the connection to {other}"),
                CONNECT_WAIT,
                "const other = arguments[0];
                 return window.switchboard.stats().then((all) =>
                   all.some((s) => s.name === other && s.connectionState === 'connected'));",
                vec![json!(other)],
            )
            .await?;
    }
    assert_full_mesh(people).await?;
    let elapsed = started.elapsed();
    assert_peer_stats(people[0].0, people[1].1).await?;
    assert_peer_stats(people[1].0, people[0].1).await?;
    Ok(elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "NAT lab: needs root; run scripts/nat-lab.sh"]
async fn routers_are_the_nat_types_the_lab_claims() -> Result<()> {
    for nat in [Nat::PortRestricted, Nat::Symmetric] {
        let started = Instant::now();
        let (lab, server) = lab_with_server(nat, Relay::StunOnly).await?;
        drop(server);
        drop(lab);
        println!("{nat:?}: proven in {:.1}s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "NAT lab: needs root; run scripts/nat-lab.sh"]
async fn behind_port_restricted_nats_the_call_is_direct_through_stun() -> Result<()> {
    let (lab, server) = lab_with_server(Nat::PortRestricted, Relay::Turn).await?;
    assert_ice_servers(&lab, Relay::Turn)?;
    let browsers = launch_clients(
        &lab,
        [
            (BrowserKind::Chromium, "ann"),
            (BrowserKind::Firefox, "bob"),
        ],
    )
    .await?;
    let people = [(&browsers[0], "ann"), (&browsers[1], "bob")];
    join(&lab, people[0].0, "cone", "ann").await?;
    join(&lab, people[1].0, "cone", "bob").await?;
    let took = assert_call_plays(&people).await?;
    println!("video both ways after {:.1}s", took.as_secs_f64());

    // STUN hole punching works through these NATs: each side has a succeeded pair that
    // sends straight to the other's NAT (the remote candidate is the other router's public
    // address, learned by STUN or from its checks). Which working pair ICE nominates is the
    // controlling browser's choice: Chromium sometimes keeps a relayed pair that succeeded
    // first, which the case allows ("via srflx or relay").
    for (i, (viewer, other)) in [(people[0].0, "bob"), (people[1].0, "ann")]
        .into_iter()
        .enumerate()
    {
        let peer_wan = ROUTER_WAN[1 - i].to_string();
        let report = wait_for_ice(
            viewer,
            other,
            "a succeeded direct pair to the peer's NAT",
            CONNECT_WAIT,
            |r| {
                Ok(r.selected.is_some()
                    && r.succeeded().any(|p| {
                        !p.relayed()
                            && p.remote.address == peer_wan
                            && matches!(p.remote.kind.as_str(), "srflx" | "prflx")
                    }))
            },
        )
        .await?;
        if let Some(selected) = &report.selected {
            println!(
                "[{}] selected {} pair: {selected}",
                viewer.label(),
                if selected.relayed() {
                    "a relayed"
                } else {
                    "the direct"
                }
            );
        }
        ensure!(
            report.has_local("srflx"),
            "[{}] gathered no server-reflexive candidate: {}",
            viewer.label(),
            report.describe()
        );
        ensure!(
            report
                .remote
                .iter()
                .all(|c| c.address != CLIENT_IP[i].to_string()),
            "[{}] lists its own private address as remote",
            viewer.label()
        );
    }
    let relayed = server.metric("switchboard_turn_relayed_bytes_total{direction=\"to_peer\"}")?;
    println!("TURN relayed {relayed} bytes towards peers (the call itself is direct)");
    drop(browsers);
    drop(server);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "NAT lab: needs root; run scripts/nat-lab.sh"]
async fn behind_symmetric_nats_the_call_goes_through_the_turn_relay() -> Result<()> {
    let (lab, server) = lab_with_server(Nat::Symmetric, Relay::Turn).await?;
    assert_ice_servers(&lab, Relay::Turn)?;
    let browsers = launch_clients(
        &lab,
        [
            (BrowserKind::Chromium, "ann"),
            (BrowserKind::Firefox, "bob"),
        ],
    )
    .await?;
    let people = [(&browsers[0], "ann"), (&browsers[1], "bob")];
    join(&lab, people[0].0, "symmetric", "ann").await?;
    join(&lab, people[1].0, "symmetric", "bob").await?;
    let took = assert_call_plays(&people).await?;
    println!("video both ways after {:.1}s", took.as_secs_f64());

    for (viewer, other) in [(people[0].0, "bob"), (people[1].0, "ann")] {
        let report = wait_for_ice(
            viewer,
            other,
            "a selected pair through the relay",
            CONNECT_WAIT,
            |r| Ok(r.selected.as_ref().is_some_and(|p| p.relayed())),
        )
        .await?;
        // Direct paths were tried (both sides knew each other's server-reflexive address)
        // and none of them worked: only pairs with a relay end ever succeeded.
        ensure!(
            report.has_local("srflx") && report.has_local("relay"),
            "[{}] did not gather both srflx and relay candidates: {}",
            viewer.label(),
            report.describe()
        );
        ensure!(
            report.has_remote("srflx") || report.has_remote("prflx"),
            "[{}] never learned a public address of the peer: {}",
            viewer.label(),
            report.describe()
        );
        if let Some(direct) = report.succeeded().find(|p| !p.relayed()) {
            bail!(
                "[{}] a direct pair succeeded through symmetric NATs: {direct}\n{}",
                viewer.label(),
                report.describe()
            );
        }
    }

    // The media really went through Switchboard's relay: more than a few seconds of video
    // in each direction (the counters count application bytes).
    // Video started a moment ago: give the counters time to pass the mark.
    let counting = Instant::now();
    let (to_peer, to_client) = loop {
        let to_peer =
            server.metric("switchboard_turn_relayed_bytes_total{direction=\"to_peer\"}")?;
        let to_client =
            server.metric("switchboard_turn_relayed_bytes_total{direction=\"to_client\"}")?;
        if (to_peer > 100_000 && to_client > 100_000)
            || counting.elapsed() > Duration::from_secs(30)
        {
            break (to_peer, to_client);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "TURN relayed {to_peer} bytes to peers and {to_client} bytes to clients after {:.1}s more",
        counting.elapsed().as_secs_f64()
    );
    ensure!(
        to_peer > 100_000 && to_client > 100_000,
        "too little relayed for a video call: {to_peer} B to peers, {to_client} B to clients\nserver log:\n{}",
        server.log_tail(40)
    );
    drop(browsers);
    drop(server);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "NAT lab: needs root; run scripts/nat-lab.sh"]
async fn behind_symmetric_nats_without_turn_the_call_fails() -> Result<()> {
    let (lab, server) = lab_with_server(Nat::Symmetric, Relay::StunOnly).await?;
    assert_ice_servers(&lab, Relay::StunOnly)?;
    let browsers = launch_clients(
        &lab,
        [
            (BrowserKind::Chromium, "ann"),
            (BrowserKind::Chromium, "bob"),
        ],
    )
    .await?;
    let people = [(&browsers[0], "ann"), (&browsers[1], "bob")];
    join(&lab, people[0].0, "no-relay", "ann").await?;
    join(&lab, people[1].0, "no-relay", "bob").await?;
    let started = Instant::now();

    // Signaling works and each side learns the other's public (server-reflexive) address,
    // so direct checks are attempted ...
    for (viewer, other) in [(people[0].0, "bob"), (people[1].0, "ann")] {
        wait_for_ice(
            viewer,
            other,
            "the peer's srflx candidate",
            CONNECT_WAIT,
            |r| Ok(r.has_local("srflx") && r.has_remote("srflx")),
        )
        .await?;
    }
    // ... and every one of them fails: each page tells its user, and no frame arrives,
    // neither before nor during the page's own retries (ICE restarts, rebuilt connections).
    let mut failed_at: [Option<Duration>; 2] = [None, None];
    let hold = Duration::from_secs(10);
    loop {
        for (i, (viewer, other)) in [(people[0].0, "bob"), (people[1].0, "ann")]
            .into_iter()
            .enumerate()
        {
            let report = ice_report(viewer, other).await.ok();
            let status = viewer.text("#status").await?.unwrap_or_default();
            let frames: u64 = viewer.remote_videos().await?.iter().map(|v| v.frames).sum();
            let connected = report.as_ref().is_some_and(|r| {
                r.connection_state == "connected" || r.succeeded().next().is_some()
            });
            if connected || frames > 0 {
                bail!(
                    "[{}] connected to {other} through symmetric NATs without TURN ({frames} frames)\n{}\n{}",
                    viewer.label(),
                    report.map(|r| r.describe()).unwrap_or_default(),
                    diagnostics_of(&[viewer]).await
                );
            }
            let failed = report
                .as_ref()
                .is_some_and(|r| r.connection_state == "failed")
                || status.contains(&format!("connection to {other} failed"));
            if failed && failed_at[i].is_none() {
                failed_at[i] = Some(started.elapsed());
                println!(
                    "[{}] failure shown after {:.1}s: #status {status:?}",
                    viewer.label(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let elapsed = started.elapsed();
        match failed_at {
            [Some(a), Some(b)] if elapsed >= a.max(b) + hold => break,
            _ if elapsed >= CONNECT_WAIT + hold => bail!(
                "the pages did not both report a failed connection within {CONNECT_WAIT:?} (failed at {failed_at:?})\n{}",
                diagnostics_of(&[people[0].0, people[1].0]).await
            ),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let failed_after = failed_at[0].max(failed_at[1]).unwrap_or_default();
    for (viewer, other) in [(people[0].0, "bob"), (people[1].0, "ann")] {
        let stats = viewer.stats().await?;
        let entry = stats.iter().find(|s| s["name"] == other);
        ensure!(
            entry.is_none_or(|s| s["framesDecoded"].as_u64().unwrap_or(0) == 0
                && s["connectionState"] != "connected"),
            "[{}] stats claim a connection: {entry:?}",
            viewer.label()
        );
    }
    println!(
        "both pages reported the failure {:.1}s after joining and stayed without video for another {}s",
        failed_after.as_secs_f64(),
        hold.as_secs()
    );
    drop(browsers);
    drop(server);
    Ok(())
}
