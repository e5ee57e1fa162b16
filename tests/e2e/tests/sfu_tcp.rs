//! SFU rooms over ICE-TCP: the server offers a passive TCP candidate on its media port next to
//! the UDP one. With the UDP candidate turned off (`sfu_udp = false`), browsers can reach the
//! SFU only by TCP, as from a network that blocks UDP (TURN is still offered, but its relayed
//! candidates are UDP and cannot pair with a TCP-only server). With both offered, browsers
//! must keep choosing UDP.

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use std::net::SocketAddr;
use switchboard_e2e::{
    Browser, BrowserKind, TestServer, assert_full_mesh, host_ipv4, join_room_with,
};

/// Query parameter that asks for an SFU room.
const SFU: &str = "mode=sfu";

/// A server whose SFU listens on the machine's non-loopback address (which every browser in
/// `scripts/e2e.sh`'s namespace reaches with its host candidates), offering UDP or not.
async fn sfu_server(udp: bool) -> Result<TestServer> {
    let ip = host_ipv4()?;
    TestServer::start_with(|config| {
        config.sfu_addr = Some(SocketAddr::new(ip.into(), 0));
        config.sfu_udp = udp;
        config.sfu_tcp = true;
    })
    .await
}

/// One side of the selected candidate pair of the page's connection to the server.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Side {
    protocol: Option<String>,
    candidate_type: Option<String>,
    /// `address:port`.
    addr: String,
    /// `active`, `passive` or `so` for TCP candidates, where the browser says.
    tcp_type: Option<String>,
}

/// What a page's connection to the server chose, and what the server offered.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerPair {
    local: Side,
    remote: Side,
    /// `protocol address:port [tcptype]` of every candidate in the server's SDP.
    server_candidates: Vec<String>,
    /// Bytes received over the selected pair.
    bytes_received: u64,
}

/// The selected pair of the page's connection to the server once it is connected (no
/// `await`: Firefox runs the script as a plain function).
const SERVER_PAIR_JS: &str = r"
const room = window.switchboard && window.switchboard.room;
const server = room && room.server;
if (!server || server.pc.connectionState !== 'connected') return null;
const pc = server.pc;
const sdp = (pc.remoteDescription && pc.remoteDescription.sdp) || '';
const serverCandidates = sdp.split(/\r?\n/)
  .filter((l) => l.startsWith('a=candidate:'))
  .map((l) => {
    const f = l.split(' ');
    const t = f.indexOf('tcptype');
    return f[2].toLowerCase() + ' ' + f[4] + ':' + f[5] + (t > 0 ? ' ' + f[t + 1] : '');
  });
return pc.getStats().then((report) => {
  const all = [];
  report.forEach((s) => all.push(s));
  const byId = new Map(all.map((s) => [s.id, s]));
  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = (transport && byId.get(transport.selectedCandidatePairId))
    || all.find((s) => s.type === 'candidate-pair' && s.selected)
    || all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
  const local = pair && byId.get(pair.localCandidateId);
  const remote = pair && byId.get(pair.remoteCandidateId);
  if (!local || !remote) return null;
  const side = (c) => ({
    protocol: c.protocol || null,
    candidateType: c.candidateType || null,
    addr: (c.address || c.ip) + ':' + c.port,
    tcpType: c.tcpType || null,
  });
  return {
    local: side(local),
    remote: side(remote),
    serverCandidates,
    bytesReceived: pair.bytesReceived || 0,
  };
});
";

async fn server_pair(page: &Browser) -> Result<ServerPair> {
    let value = page
        .wait_until(
            "a selected candidate pair to the server",
            SERVER_PAIR_JS,
            vec![],
        )
        .await?;
    let pair: ServerPair = serde_json::from_value(value).context("reading the selected pair")?;
    println!("[{}] server pair: {pair:?}", page.label());
    Ok(pair)
}

/// Checks that `page`'s media goes over TCP to the server's passive candidate, the only one
/// the server offered.
async fn assert_over_tcp(page: &Browser, server: &TestServer) -> Result<()> {
    let pair = server_pair(page).await?;
    let media = server.sfu_addrs()[0];
    let expected = format!("tcp {media} passive");
    ensure!(
        pair.server_candidates == [expected.clone()],
        "[{}] the server should offer only {expected}: {pair:?}",
        page.label()
    );
    ensure!(
        pair.local.protocol.as_deref() == Some("tcp")
            && pair.remote.protocol.as_deref() == Some("tcp"),
        "[{}] the selected pair is not TCP on both sides: {pair:?}",
        page.label()
    );
    ensure!(
        pair.remote.addr == media.to_string(),
        "[{}] the selected pair does not go to the server's candidate {media}: {pair:?}",
        page.label()
    );
    // Where the browser says (Chromium does), its side is the one that connects.
    ensure!(
        pair.local.tcp_type.as_deref().is_none_or(|t| t == "active"),
        "[{}] the browser's TCP candidate is not active: {pair:?}",
        page.label()
    );
    // More than ICE and DTLS alone (a few KB): the decoded video came this way.
    ensure!(
        pair.bytes_received > 10_000,
        "[{}] little media over the selected pair: {pair:?}",
        page.label()
    );
    Ok(())
}

/// Both pages decode each other's camera through the server, over TCP only.
async fn call_over_tcp(room: &str, specs: [(BrowserKind, &str); 2]) -> Result<()> {
    let server = sfu_server(false).await?;
    let browsers = Browser::launch_all(&specs).await?;
    let people = [(&browsers[0], specs[0].1), (&browsers[1], specs[1].1)];
    join_room_with(&server, room, SFU, &people).await?;
    assert_full_mesh(&people).await?;
    for (page, _) in &people {
        assert_over_tcp(page, &server).await?;
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn two_chromium_pages_call_through_the_sfu_over_tcp_only() -> Result<()> {
    call_over_tcp(
        "sfu-tcp-chromium",
        [
            (BrowserKind::Chromium, "alice"),
            (BrowserKind::Chromium, "bob"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn chromium_and_firefox_call_through_the_sfu_over_tcp_only() -> Result<()> {
    call_over_tcp(
        "sfu-tcp-interop",
        [
            (BrowserKind::Chromium, "chrome-user"),
            (BrowserKind::Firefox, "firefox-user"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn with_udp_and_tcp_offered_browsers_choose_udp() -> Result<()> {
    let server = sfu_server(true).await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ann"),
        (BrowserKind::Firefox, "ben"),
    ])
    .await?;
    let people = [(&browsers[0], "ann"), (&browsers[1], "ben")];
    join_room_with(&server, "sfu-tcp-both", SFU, &people).await?;
    assert_full_mesh(&people).await?;
    let media = server.sfu_addrs()[0];
    for (page, _) in &people {
        let pair = server_pair(page).await?;
        let mut offered = pair.server_candidates.clone();
        offered.sort();
        ensure!(
            offered == [format!("tcp {media} passive"), format!("udp {media}")],
            "[{}] the server should offer UDP and passive TCP on {media}: {pair:?}",
            page.label()
        );
        ensure!(
            pair.local.protocol.as_deref() == Some("udp")
                && pair.remote.protocol.as_deref() == Some("udp")
                && pair.remote.addr == media.to_string(),
            "[{}] the selected pair is not UDP to {media}: {pair:?}",
            page.label()
        );
        ensure!(
            pair.remote.candidate_type.as_deref() == Some("host"),
            "[{}] {pair:?}",
            page.label()
        );
    }
    server.shutdown().await;
    Ok(())
}
