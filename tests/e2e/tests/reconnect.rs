//! Recovery from a lost connection: the signaling socket drops and the page resumes its
//! session, and ICE restarts (Chromium with Chromium, and Chromium with Firefox ESR, where
//! the DTLS roles must survive the restart) — with the video playing throughout.

use anyhow::{Result, ensure};
use serde_json::json;
use std::time::Duration;
use switchboard_e2e::{
    Browser, BrowserKind, MIN_FRAMES, PeerConnectionInfo, TestServer, assert_full_mesh, call_link,
    camera_of, expect_peer_connection, frame_samples, join_room, join_room_in_order, record_status,
    start_frame_sampler, status_history, wait_peer_connection, wait_status_sequence,
};

/// A pause in the remote video longer than this counts as "stopped playing".
const MAX_STALL: Duration = Duration::from_secs(2);

/// Starts the frame samplers and the status recorders of a two-party call.
async fn watch(people: &[(&Browser, &str); 2]) -> Result<()> {
    for (i, (page, _)) in people.iter().enumerate() {
        let (_, other) = people[1 - i];
        record_status(page).await?;
        start_frame_sampler(page, "call", &camera_of(other)).await?;
    }
    Ok(())
}

/// Waits until both pages played another [`MIN_FRAMES`] frames of the other's camera, then
/// checks that the video never paused since [`watch`] and that neither banner ever reported
/// a failed connection.
async fn ensure_kept_playing(people: &[(&Browser, &str); 2]) -> Result<()> {
    for (i, (page, name)) in people.iter().enumerate() {
        let (_, other) = people[1 - i];
        let now = frame_samples(page, "call").await?.last_count();
        page.wait_frames(&camera_of(other), now.max(0) as u64 + MIN_FRAMES)
            .await?;
        let samples = frame_samples(page, "call").await?;
        samples.ensure_kept_rising(&format!("{name} watching {other}"), MAX_STALL, 30)?;
        let history = status_history(page).await?;
        ensure!(
            !history.iter().any(|t| t.contains("failed")),
            "{name}'s banner reported a failure: {history:?}"
        );
    }
    Ok(())
}

/// The participant id the page holds (`window.switchboard.room.id`).
async fn own_id(page: &Browser) -> Result<String> {
    let id = page
        .js("return window.switchboard.room.id;", vec![])
        .await?;
    Ok(id.as_str().unwrap_or_default().to_string())
}

/// Restarts ICE from the side of each page in `from` (indexes into `people`) at once, and
/// waits until both pages applied a new ICE negotiation (new local and remote ufrags in
/// their current descriptions), on the same peer connections and with the same DTLS roles
/// as before.
async fn restart_ice(people: &[(&Browser, &str); 2], from: &[usize]) -> Result<()> {
    let mut before = Vec::new();
    for (i, (page, _)) in people.iter().enumerate() {
        before.push(expect_peer_connection(page, people[1 - i].1).await?);
    }
    let who: Vec<&str> = from.iter().map(|&i| people[i].1).collect();
    println!("restarting ICE from {who:?}; before: {before:?}");
    for &i in from {
        call_link(people[i].0, people[1 - i].1, "restartIce").await?;
    }
    for (i, (page, name)) in people.iter().enumerate() {
        let after = renegotiated(page, people[1 - i].1, &before[i]).await?;
        println!("{name} after the restart: {after:?}");
        ensure!(
            after.local_session == before[i].local_session
                && after.remote_session == before[i].remote_session,
            "{name}: the ICE restart replaced the peer connection instead of restarting ICE: \
             {:?} -> {after:?}",
            before[i]
        );
        ensure!(
            after.dtls_role().is_some() && after.dtls_role() == before[i].dtls_role(),
            "{name}: the DTLS role changed across the ICE restart: {:?} -> {after:?}",
            before[i]
        );
    }
    Ok(())
}

/// Waits until `page`'s connection to `other` is connected again with ICE credentials on
/// both ends different from `before`.
async fn renegotiated(
    page: &Browser,
    other: &str,
    before: &PeerConnectionInfo,
) -> Result<PeerConnectionInfo> {
    wait_peer_connection(
        page,
        other,
        "connected with new ICE credentials on both ends",
        "info.localUfrag && info.remoteUfrag \
         && info.localUfrag !== args.local && info.remoteUfrag !== args.remote",
        json!({ "local": before.local_ufrag, "remote": before.remote_ufrag }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_dropped_signaling_socket_resumes_the_same_participant_while_video_plays() -> Result<()> {
    // A short grace period, so the test can wait past it: a resumed participant must not be
    // announced as gone when it runs out.
    const GRACE: Duration = Duration::from_secs(4);
    let server = TestServer::start_with(|c| c.resume_grace_secs = GRACE.as_secs()).await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ada"),
        (BrowserKind::Chromium, "linus"),
    ])
    .await?;
    let people = [(&browsers[0], "ada"), (&browsers[1], "linus")];
    join_room(&server, "resume", &people).await?;
    assert_full_mesh(&people).await?;
    let ids = [own_id(&browsers[0]).await?, own_id(&browsers[1]).await?];
    watch(&people).await?;

    // Both signaling sockets go down at once, as when the server restarts its front or a
    // proxy drops idle connections.
    for (page, _) in &people {
        page.js(
            "window.switchboard.room.signaling.ws.close(); return true;",
            vec![],
        )
        .await?;
    }
    for (page, name) in &people {
        let history =
            wait_status_sequence(page, &["Connection lost — reconnecting…", "Reconnected"]).await?;
        println!("{name}'s banner: {history:?}");
    }
    for (i, (page, name)) in people.iter().enumerate() {
        let id = own_id(page).await?;
        ensure!(id == ids[i], "{name} came back as {id}, not as {}", ids[i]);
        let open = page
            .js("return window.switchboard.room.signaling.isOpen;", vec![])
            .await?;
        ensure!(open == json!(true), "{name}'s signaling socket is not open");
    }

    // Past the grace period: nobody was announced as gone, each page still shows one camera
    // tile of the other under the same participant id, and the video never stopped.
    tokio::time::sleep(GRACE + Duration::from_secs(2)).await;
    for (i, (page, name)) in people.iter().enumerate() {
        let (_, other) = people[1 - i];
        let cameras: Vec<_> = page
            .remote_videos()
            .await?
            .into_iter()
            .filter(|v| v.kind.as_deref() == Some("camera"))
            .collect();
        ensure!(
            cameras.len() == 1 && cameras[0].peer_id == ids[1 - i],
            "{name} should show exactly one camera tile of {other} ({}): {cameras:?}",
            ids[1 - i]
        );
    }
    ensure_kept_playing(&people).await?;

    // The resumed identity signals as before: an ICE restart goes through the server.
    restart_ice(&people, &[0]).await?;
    ensure_kept_playing(&people).await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn ice_restarts_between_two_chromium_pages_keep_the_video_playing() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ada"),
        (BrowserKind::Chromium, "linus"),
    ])
    .await?;
    let people = [(&browsers[0], "ada"), (&browsers[1], "linus")];
    join_room_in_order(&server, "restart", &people).await?;
    assert_full_mesh(&people).await?;
    watch(&people).await?;

    // From each side in turn, then from both at once.
    restart_ice(&people, &[0]).await?;
    restart_ice(&people, &[1]).await?;
    restart_ice(&people, &[0, 1]).await?;
    ensure_kept_playing(&people).await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn ice_restarts_between_chromium_and_firefox_keep_the_dtls_roles() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ada"),
        (BrowserKind::Firefox, "linus"),
    ])
    .await?;
    let people = [(&browsers[0], "ada"), (&browsers[1], "linus")];
    // Firefox arrives second and offers first, so Chromium answers `setup:active` and is the
    // DTLS client; Firefox, the DTLS server, answers an ICE restart offer with a fresh role
    // unless the restart offer comes from the DTLS server itself.
    join_room_in_order(&server, "interop-restart", &people).await?;
    assert_full_mesh(&people).await?;
    let chromium = expect_peer_connection(&browsers[0], "linus").await?;
    ensure!(
        chromium.dtls_role() == Some("client"),
        "expected Chromium to be the DTLS client after answering Firefox's offer: {chromium:?}"
    );
    watch(&people).await?;

    // From the DTLS client (the case that broke), from the server, then from both at once.
    restart_ice(&people, &[0]).await?;
    restart_ice(&people, &[1]).await?;
    restart_ice(&people, &[0, 1]).await?;
    ensure_kept_playing(&people).await?;
    server.shutdown().await;
    Ok(())
}
