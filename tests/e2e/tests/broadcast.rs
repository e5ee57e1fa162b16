//! One-way broadcast: the /sender page streams to every /receiver page of its room.

use anyhow::{Result, ensure};
use switchboard_e2e::{Browser, BrowserKind, MIN_FRAMES, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn one_sender_reaches_three_receivers() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "sender"),
        (BrowserKind::Chromium, "receiver-1"),
        (BrowserKind::Chromium, "receiver-2"),
        (BrowserKind::Chromium, "receiver-3"),
    ])
    .await?;
    let (sender, receivers) = browsers.split_first().expect("four browsers");
    sender
        .goto(&server.url("/sender?room=broadcast&autojoin=1"))
        .await?;
    for receiver in receivers {
        receiver
            .goto(&server.url("/receiver?room=broadcast&autojoin=1"))
            .await?;
    }

    for receiver in receivers {
        receiver
            .wait_frames("video[data-peer-id]", MIN_FRAMES)
            .await?;
    }
    sender
        .wait_until(
            "#viewers to show 3",
            "const v = document.querySelector('#viewers');
             return !!v && /(^|\\D)3(\\D|$)/.test(v.textContent);",
            vec![],
        )
        .await?;

    // Every receiver plays exactly one stream, all from the same sender; receivers never
    // connect to each other.
    let mut sender_ids = Vec::new();
    for receiver in receivers {
        let videos = receiver.remote_videos().await?;
        ensure!(
            videos.len() == 1,
            "{} shows {} remote videos, expected only the sender's: {videos:?}",
            receiver.label(),
            videos.len()
        );
        sender_ids.push(videos[0].peer_id.clone());
    }
    sender_ids.dedup();
    ensure!(
        sender_ids.len() == 1,
        "receivers play streams of different peers: {sender_ids:?}"
    );

    // A receiver that leaves is no longer counted.
    let (gone, stay) = receivers.split_last().expect("three receivers");
    gone.goto("about:blank").await?;
    sender
        .wait_until(
            "#viewers to show 2 after a receiver left",
            "const v = document.querySelector('#viewers');
             return !!v && /(^|\\D)2(\\D|$)/.test(v.textContent);",
            vec![],
        )
        .await?;
    // The others keep playing.
    for receiver in stay {
        let now = receiver.wait_frames("video[data-peer-id]", 0).await?;
        receiver
            .wait_frames("video[data-peer-id]", now + 10)
            .await?;
    }
    server.shutdown().await;
    Ok(())
}
