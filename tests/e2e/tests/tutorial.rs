//! The classic tutorial's Sender and Receiver pages, served from their own origin (like
//! the tutorial's dev server), talking to Switchboard's tutorial-compatible WebSocket on `/`.

use anyhow::Result;
use switchboard_e2e::{Browser, BrowserKind, MIN_FRAMES, StaticServer, TestServer, fixtures_dir};

const SOCKET_OPEN: &str = "return typeof socket !== 'undefined' && socket !== null \
                           && socket.readyState === WebSocket.OPEN;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn tutorial_sender_streams_to_tutorial_receiver() -> Result<()> {
    let server = TestServer::start().await?;
    let site = StaticServer::start(&fixtures_dir().join("tutorial")).await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "tutorial-receiver"),
        (BrowserKind::Chromium, "tutorial-sender"),
    ])
    .await?;
    let (receiver, sender) = (&browsers[0], &browsers[1]);
    let ws = server.ws_url("/");

    receiver
        .goto(&site.url(&format!("/receiver.html?ws={ws}")))
        .await?;
    receiver
        .wait_until("the receiver's socket to open", SOCKET_OPEN, vec![])
        .await?;
    sender
        .goto(&site.url(&format!("/sender.html?ws={ws}")))
        .await?;
    sender
        .wait_until("the sender's socket to open", SOCKET_OPEN, vec![])
        .await?;
    sender.click("#send-video").await?;

    let frames = receiver.wait_frames("video", MIN_FRAMES).await?;
    println!("tutorial receiver decoded {frames} frames");
    let state = sender.js("return pc.connectionState;", vec![]).await?;
    anyhow::ensure!(state == "connected", "sender's connection is {state}");
    server.shutdown().await;
    Ok(())
}
