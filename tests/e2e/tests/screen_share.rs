//! Screen sharing in the room page (Chromium's fake screen source).

use anyhow::Result;
use serde_json::json;
use switchboard_e2e::{
    Browser, BrowserKind, MIN_FRAMES, TestServer, assert_full_mesh, camera_of, join_room, screen_of,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn shared_screen_appears_as_a_screen_tile_and_plays() -> Result<()> {
    let server = TestServer::start().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "presenter"),
        (BrowserKind::Chromium, "viewer"),
    ])
    .await?;
    let (presenter, viewer) = (&browsers[0], &browsers[1]);
    let people = [(presenter, "presenter"), (viewer, "viewer")];
    join_room(&server, "screens", &people).await?;
    assert_full_mesh(&people).await?;

    presenter.click("#share-screen").await?;
    let screen_frames = viewer
        .wait_frames(&screen_of("presenter"), MIN_FRAMES)
        .await?;

    // The camera keeps playing next to the screen, and only one screen tile exists.
    let camera_before = viewer.wait_frames(&camera_of("presenter"), 0).await?;
    viewer
        .wait_frames(&camera_of("presenter"), camera_before + 10)
        .await?;
    let screens = viewer
        .remote_videos()
        .await?
        .into_iter()
        .filter(|v| v.kind.as_deref() == Some("screen"))
        .count();
    anyhow::ensure!(
        screens == 1,
        "viewer shows {screens} screen tiles, expected 1"
    );
    // The presenter does not see its own screen as a remote tile.
    anyhow::ensure!(
        presenter
            .remote_videos()
            .await?
            .iter()
            .all(|v| v.kind.as_deref() != Some("screen")),
        "presenter shows a remote screen tile: {:?}",
        presenter.remote_videos().await?
    );
    println!("viewer decoded {screen_frames} screen frames");

    // Clicking again stops sharing: the tile goes away on the other page.
    presenter.click("#share-screen").await?;
    viewer
        .wait_until(
            "the presenter's screen tile to go away",
            "return document.querySelector(arguments[0]) === null;",
            vec![json!(screen_of("presenter"))],
        )
        .await?;
    server.shutdown().await;
    Ok(())
}
