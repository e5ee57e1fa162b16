//! A broadcast that outgrows peer-to-peer: the /sender page starts streaming to /receiver
//! pages directly; when the 4th receiver joins (more than the server's default
//! `sfu_broadcast_threshold` of 3), the server tells everyone `mode-changed` and the room
//! moves to the SFU. The pages carry on without user action: the sender publishes once to
//! the server and every receiver gets the stream from there.
//!
//! One sender (Chromium) and ten receivers (seven Chromium, three Firefox), each its own
//! headless browser (the harness holds one page per browser). Receivers 1–3 join first
//! and play over peer-to-peer; receivers 4–10 join afterwards.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard_e2e::{Browser, BrowserKind, MIN_FRAMES, TestServer, host_ipv4};

const ROOM: &str = "big-broadcast";

/// How long the move and the new sessions may take on a loaded 2-core machine with eleven
/// browsers.
const MOVE_WAIT: Duration = Duration::from_secs(90);

/// A server with default limits (so `sfu_broadcast_threshold` is 3) whose SFU listens on
/// the machine's non-loopback address, which every browser in `scripts/e2e.sh`'s namespace
/// reaches with its host candidate.
async fn sfu_server() -> Result<TestServer> {
    let ip = host_ipv4()?;
    TestServer::start_with(|config| config.sfu_addr = Some(SocketAddr::new(ip.into(), 0))).await
}

/// The page's room: mode, peer-to-peer links, whether its connection to the server is up.
const ROOM_STATE_JS: &str = r"
const room = window.switchboard && window.switchboard.room;
if (!room) return null;
return {
  mode: room.mode,
  links: room.links.size,
  server: room.server ? room.server.connectionState : null,
};
";

/// Resolves to the frames decoded of the sender's camera received from the server, once
/// more than `arguments[0]`, else null (no `await`: Firefox runs the script as a plain
/// function).
const SERVER_FRAMES_JS: &str = r"
const room = window.switchboard && window.switchboard.room;
if (!room || room.mode !== 'sfu' || !room.server || room.links.size !== 0) return null;
return window.switchboard.stats().then((all) => {
  if (all.length !== 1 || all[0].peerId !== 'sfu') return null;
  const cam = (all[0].streams || []).find((s) => s.kind === 'camera' && s.peerId === arguments[1]);
  return cam && cam.framesDecoded > arguments[0] ? cam.framesDecoded : null;
});
";

async fn room_state(page: &Browser) -> Result<Value> {
    page.js(ROOM_STATE_JS, vec![]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn broadcast_moves_to_the_sfu_when_the_fourth_receiver_joins() -> Result<()> {
    let server = sfu_server().await?;
    let receiver_url = server.url(&format!("/receiver?room={ROOM}&autojoin=1"));

    let first = Browser::launch_all(&[
        (BrowserKind::Chromium, "sender"),
        (BrowserKind::Chromium, "receiver-1"),
        (BrowserKind::Firefox, "receiver-2"),
        (BrowserKind::Chromium, "receiver-3"),
    ])
    .await?;
    let (sender, early) = first.split_first().expect("four browsers");
    sender
        .goto(&server.url(&format!("/sender?room={ROOM}&name=Sender&autojoin=1")))
        .await?;
    sender
        .wait_until(
            "the sender to join",
            "return !!(window.switchboard && window.switchboard.room && window.switchboard.room.id);",
            vec![],
        )
        .await?;
    let sender_id = sender
        .js("return window.switchboard.room.id;", vec![])
        .await?
        .as_str()
        .map(str::to_string)
        .context("the sender's participant id")?;

    // Up to the threshold the broadcast stays peer-to-peer.
    for receiver in early {
        receiver.goto(&receiver_url).await?;
    }
    for receiver in early {
        receiver
            .wait_frames("video[data-peer-id]", MIN_FRAMES)
            .await?;
    }
    let state = room_state(sender).await?;
    ensure!(
        state["mode"] == "p2p" && state["links"] == 3 && state["server"].is_null(),
        "with three receivers the sender should hold three peer connections: {state}"
    );

    // The 4th receiver moves the room to the SFU.
    let late = Browser::launch_all(&[
        (BrowserKind::Chromium, "receiver-4"),
        (BrowserKind::Firefox, "receiver-5"),
        (BrowserKind::Chromium, "receiver-6"),
        (BrowserKind::Chromium, "receiver-7"),
        (BrowserKind::Firefox, "receiver-8"),
        (BrowserKind::Chromium, "receiver-9"),
        (BrowserKind::Chromium, "receiver-10"),
    ])
    .await?;
    for receiver in &late {
        receiver.goto(&receiver_url).await?;
    }

    // The sender publishes to the server and holds no peer connection any more.
    sender
        .wait_until_within(
            "the sender to move to the server",
            MOVE_WAIT,
            "const room = window.switchboard && window.switchboard.room;
             return !!room && room.mode === 'sfu' && room.links.size === 0
               && !!room.server && room.server.connectionState === 'connected';",
            vec![],
        )
        .await?;

    // Every receiver decodes the sender's video, received from the server.
    let receivers: Vec<&Browser> = early.iter().chain(late.iter()).collect();
    for receiver in &receivers {
        let frames = receiver
            .wait_until_within(
                "more than MIN_FRAMES frames of the sender's camera from the server",
                MOVE_WAIT,
                SERVER_FRAMES_JS,
                vec![json!(MIN_FRAMES), json!(sender_id)],
            )
            .await?;
        println!("[{}] {frames} frames through the server", receiver.label());
        let videos = receiver.remote_videos().await?;
        ensure!(
            videos.len() == 1 && videos[0].peer_id == sender_id,
            "[{}] should show exactly the sender's video: {videos:?}",
            receiver.label()
        );
        // The page reported the tile's size to the server (`view`).
        let viewed = receiver
            .wait_until(
                "a view hint for the sender's video",
                "const s = window.switchboard.room.server;
                 return !!s && [...s._views.values()].some((v) => v.sent && v.sent.width > 0);",
                vec![],
            )
            .await?;
        ensure!(viewed == json!(true), "[{}] no view hint", receiver.label());
    }

    // The sender's only connection is the one to the server.
    let stats = sender.stats().await?;
    ensure!(
        stats.len() == 1 && stats[0]["peerId"] == "sfu",
        "the sender should hold only the connection to the server: {stats:?}"
    );
    let state = room_state(sender).await?;
    ensure!(
        state["mode"] == "sfu" && state["links"] == 0 && state["server"] == "connected",
        "the sender is not (only) connected to the server: {state}"
    );
    sender
        .wait_until(
            "#viewers to show 10",
            "const v = document.querySelector('#viewers');
             return !!v && v.textContent.trim() === '10';",
            vec![],
        )
        .await?;

    // A hidden video is reported as 0 × 0 (the server then sends nothing for it); shown
    // again, it gets its size back and frames flow again.
    let viewer = receivers[0];
    viewer
        .js(
            "document.querySelector('#remote').style.display = 'none'; return true;",
            vec![],
        )
        .await?;
    viewer
        .wait_until(
            "a 0 × 0 view hint for the hidden video",
            "const s = window.switchboard.room.server;
             return [...s._views.values()].some((v) => v.sent && v.sent.width === 0 && v.sent.height === 0);",
            vec![],
        )
        .await?;
    viewer
        .js(
            "document.querySelector('#remote').style.display = ''; return true;",
            vec![],
        )
        .await?;
    viewer
        .wait_until(
            "a non-zero view hint once the video is shown again",
            "const s = window.switchboard.room.server;
             return [...s._views.values()].some((v) => v.sent && v.sent.width > 0);",
            vec![],
        )
        .await?;
    let now = viewer.wait_frames("video[data-peer-id]", 0).await?;
    viewer.wait_frames("video[data-peer-id]", now + 10).await?;

    server.shutdown().await;
    Ok(())
}

/// The participant whose tile is highlighted as speaking (`.tile.speaking`: our own tile
/// counts as our id), once exactly one is.
const SPEAKING_JS: &str = r"
const tiles = document.querySelectorAll('#grid .tile.speaking');
if (tiles.length !== 1) return null;
const video = tiles[0].querySelector('video');
if (!video) return null;
return video.dataset.peerId || (video.dataset.local === 'camera' ? window.switchboard.room.id : null);
";

/// In an SFU room the server names the dominant speaker (`dominant-speaker`); the room page
/// highlights that participant's tile on every page. Firefox's fake microphone plays a
/// steady tone, so there is always someone speaking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn the_dominant_speaker_is_highlighted_on_every_page() -> Result<()> {
    let server = sfu_server().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ann"),
        (BrowserKind::Firefox, "bea"),
    ])
    .await?;
    for (browser, name) in browsers.iter().zip(["ann", "bea"]) {
        browser
            .goto(&server.url(&format!("/r/speakers?name={name}&mode=sfu&autojoin=1")))
            .await?;
    }
    let mut named = Vec::new();
    for browser in &browsers {
        let id = browser
            .wait_until_within(
                "one tile highlighted as the dominant speaker",
                MOVE_WAIT,
                SPEAKING_JS,
                vec![],
            )
            .await?;
        named.push(id);
    }
    ensure!(
        named.iter().all(|id| id.is_string() && *id == named[0]),
        "the pages highlight different speakers: {named:?}"
    );
    server.shutdown().await;
    Ok(())
}
