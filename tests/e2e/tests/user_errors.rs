//! What a user is told when something stands in the way of a call, and that the rest still
//! works: a blocked camera permission, a machine without camera or microphone, a full room,
//! relayed-only connections asked of a server without TURN.

use anyhow::Result;
use serde_json::json;
use switchboard_e2e::{
    Browser, BrowserKind, LaunchOptions, MediaAccess, TestServer, assert_full_mesh, join_room,
    video_of,
};

/// Waits until the page's status line contains `text`.
async fn wait_for_status(browser: &Browser, text: &str) -> Result<String> {
    let found = browser
        .wait_until(
            &format!("the status line to say {text:?}"),
            "const s = document.querySelector('#status'); \
             return s && !s.hidden && s.textContent.includes(arguments[0]) && s.textContent",
            vec![json!(text)],
        )
        .await?;
    Ok(found.as_str().unwrap_or_default().to_string())
}

/// A Chromium whose camera and microphone are as `media` says.
async fn chromium_with(label: &str, media: MediaAccess) -> Result<Browser> {
    let options = LaunchOptions {
        media,
        ..LaunchOptions::default()
    };
    Browser::launch_with(BrowserKind::Chromium, label, &options).await
}

/// A user without camera or microphone is told why and still joins to watch: the other
/// participant's video plays on their page.
async fn watch_without_media(media: MediaAccess, room: &str, message: &str) -> Result<()> {
    let server = TestServer::start().await?;
    let viewer = chromium_with("dana", media).await?;
    let alice = Browser::launch(BrowserKind::Chromium, "alice").await?;
    join_room(&server, room, &[(&viewer, "dana")]).await?;
    let status = wait_for_status(&viewer, message).await?;
    println!("[dana] status: {status}");
    viewer
        .wait_until(
            "the preview to say there is no camera",
            "return document.querySelector('#preview-note')?.textContent === 'No camera'",
            vec![],
        )
        .await?;
    join_room(&server, room, &[(&alice, "alice")]).await?;
    let frames = viewer.wait_frames(&video_of("alice"), 30).await?;
    println!("[dana] decoded {frames} frames of alice without a camera of her own");
    // In the call, the reason stays in view.
    let status = wait_for_status(&viewer, "watching and listening only").await?;
    anyhow::ensure!(status.contains(message), "the reason is gone: {status:?}");
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_blocked_camera_permission_is_explained_and_the_user_can_still_watch() -> Result<()> {
    watch_without_media(
        MediaAccess::Denied,
        "permission-denied",
        "Camera/microphone permission was denied",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_machine_without_camera_is_explained_and_the_user_can_still_watch() -> Result<()> {
    watch_without_media(
        MediaAccess::NoDevices,
        "no-devices",
        "No camera or microphone found",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_full_room_turns_the_next_person_away_and_the_call_goes_on() -> Result<()> {
    let server = TestServer::start_with(|config| config.max_participants = 2).await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "alice"),
        (BrowserKind::Chromium, "bob"),
        (BrowserKind::Chromium, "carol"),
    ])
    .await?;
    let people = [(&browsers[0], "alice"), (&browsers[1], "bob")];
    join_room(&server, "two-seats", &people).await?;
    assert_full_mesh(&people).await?;

    let carol = &browsers[2];
    join_room(&server, "two-seats", &[(carol, "carol")]).await?;
    let status = wait_for_status(carol, "This room is full").await?;
    println!("[carol] status: {status}");
    // Carol is still on the pre-join screen, free to try again.
    carol
        .wait_until(
            "the Join button to be usable again",
            "const b = document.querySelector('#join'); return b && !b.disabled",
            vec![],
        )
        .await?;

    let room = server.get_json("/api/rooms/two-seats").await?;
    let names: Vec<&str> = room["participants"]
        .as_array()
        .map(|list| list.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        names.len() == 2 && names.contains(&"alice") && names.contains(&"bob"),
        "the room should hold alice and bob only: {room}"
    );
    // The two inside did not notice: their videos keep playing.
    for (viewer, other) in [(&browsers[0], "bob"), (&browsers[1], "alice")] {
        let before = viewer.wait_frames(&video_of(other), 1).await?;
        let after = viewer.wait_frames(&video_of(other), before + 30).await?;
        println!(
            "[{}] {other}'s video went on: {before} → {after} frames",
            viewer.label()
        );
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn relayed_only_calls_without_turn_on_the_server_are_refused_with_a_reason() -> Result<()> {
    let server = TestServer::start_with(|config| config.turn_enabled = false).await?;
    let eve = Browser::launch(BrowserKind::Chromium, "eve").await?;
    eve.goto(&server.url("/r/no-turn?name=eve&autojoin=1&relay=1"))
        .await?;
    let status = wait_for_status(&eve, "offers no TURN relay").await?;
    println!("[eve] status: {status}");
    // Nobody joined: the page did not pretend to start a call that cannot connect.
    let (code, body) = server.get("/api/rooms/no-turn").await?;
    anyhow::ensure!(code == 404, "eve should not be in the room: {code} {body}");
    server.shutdown().await;
    Ok(())
}
