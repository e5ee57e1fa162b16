//! Video calls in the room page: two and three Chromium participants, and Chromium with
//! Firefox ESR.

use anyhow::Result;
use switchboard_e2e::{
    Browser, BrowserKind, TestServer, assert_full_mesh, assert_peer_stats, join_room,
    screenshots_dir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn two_chromium_participants_see_each_other() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "alice"),
        (BrowserKind::Chromium, "bob"),
    ])
    .await?;
    let people = [(&browsers[0], "alice"), (&browsers[1], "bob")];
    join_room(&server, "two-party", &people).await?;
    assert_full_mesh(&people).await?;

    // The page's own stats agree with what the video elements show.
    assert_peer_stats(&browsers[0], "bob").await?;
    assert_peer_stats(&browsers[1], "alice").await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn three_chromium_participants_form_a_full_mesh() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "alice"),
        (BrowserKind::Chromium, "bob"),
        (BrowserKind::Chromium, "carol"),
    ])
    .await?;
    let people = [
        (&browsers[0], "alice"),
        (&browsers[1], "bob"),
        (&browsers[2], "carol"),
    ];
    join_room(&server, "mesh-of-three", &people).await?;
    assert_full_mesh(&people).await?;

    // What a user sees of a working call, with a chat line and live stats of both peers:
    // the README shows this screenshot.
    let alice = &browsers[0];
    browsers[1]
        .type_into("#chat-input", "Hi both, I can see you!")
        .await?;
    browsers[1].click("#chat-send").await?;
    alice
        .wait_until(
            "bob's chat line and live stats of both peers",
            "return document.querySelector('#chat-log')?.textContent.includes('I can see you') \
             && [...document.querySelectorAll('#stats .peer-stats')] \
                  .filter(e => /frames/.test(e.textContent)).length === 2",
            vec![],
        )
        .await?;
    alice
        .screenshot(&screenshots_dir().join("three-party-call.png"))
        .await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn chromium_and_firefox_see_each_other() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "chrome-user"),
        (BrowserKind::Firefox, "firefox-user"),
    ])
    .await?;
    let people = [
        (&browsers[0], "chrome-user"),
        (&browsers[1], "firefox-user"),
    ];
    join_room(&server, "interop", &people).await?;
    assert_full_mesh(&people).await?;
    server.shutdown().await;
    Ok(())
}
