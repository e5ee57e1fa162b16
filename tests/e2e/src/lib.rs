//! Shared support for browser end-to-end tests: real headless Chromium and Firefox ESR,
//! each driven over WebDriver by its own chromedriver or geckodriver, against a Switchboard
//! server started inside the test.
//!
//! Run them with `scripts/e2e.sh`, which puts the browsers in a private network namespace
//! with a non-loopback interface and a default route (Firefox gathers no ICE candidates on
//! loopback alone).

mod browser;
mod ice;
mod process;
mod server;
mod static_site;

pub use browser::{Browser, BrowserKind, DEFAULT_WAIT, RemoteVideo};
pub use ice::{PairCandidate, SelectedPair, host_ipv4, selected_pair};
pub use process::free_port;
pub use server::{TestServer, metric_value};
pub use static_site::StaticServer;

use std::path::PathBuf;

/// "Decodes video" means strictly more than this many frames (about a second at 30 fps).
pub const MIN_FRAMES: u64 = 30;

/// CSS for the remote video of participant `name` (any kind).
pub fn video_of(name: &str) -> String {
    format!(r#"video[data-peer-id][data-name="{name}"]"#)
}

/// CSS for the remote camera tile of participant `name`.
pub fn camera_of(name: &str) -> String {
    format!(r#"video[data-peer-id][data-name="{name}"][data-kind="camera"]"#)
}

/// CSS for the remote screen-share tile of participant `name`.
pub fn screen_of(name: &str) -> String {
    format!(r#"video[data-peer-id][data-name="{name}"][data-kind="screen"]"#)
}

/// Files shipped with the tests (`tests/e2e/fixtures`).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Where tests leave screenshots: `target/e2e-screenshots/` of the workspace.
pub fn screenshots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/e2e-screenshots")
}

/// Sends server logs to the test's captured output (shown when a test fails).
/// `RUST_LOG` picks the level; warnings by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Opens `/r/{room}?name=…&autojoin=1` in each browser, under the name paired with it.
pub async fn join_room(
    server: &TestServer,
    room: &str,
    people: &[(&Browser, &str)],
) -> anyhow::Result<()> {
    join_room_with(server, room, "", people).await
}

/// [`join_room`] with more query parameters (`extra_query`, e.g. `relay=1`; empty for none).
pub async fn join_room_with(
    server: &TestServer,
    room: &str,
    extra_query: &str,
    people: &[(&Browser, &str)],
) -> anyhow::Result<()> {
    let extra = if extra_query.is_empty() {
        String::new()
    } else {
        format!("&{extra_query}")
    };
    for (browser, name) in people {
        browser
            .goto(&server.url(&format!("/r/{room}?name={name}&autojoin=1{extra}")))
            .await?;
    }
    Ok(())
}

/// Waits until every browser decodes more than [`MIN_FRAMES`] frames of every other
/// browser's camera, then checks that each page shows exactly one camera tile per other
/// participant, each labelled with a distinct peer id.
pub async fn assert_full_mesh(people: &[(&Browser, &str)]) -> anyhow::Result<()> {
    for (viewer, viewer_name) in people {
        for (_, other) in people.iter().filter(|(_, n)| n != viewer_name) {
            if let Err(e) = viewer.wait_frames(&camera_of(other), MIN_FRAMES).await {
                let browsers: Vec<&Browser> = people
                    .iter()
                    .map(|(b, _)| *b)
                    .filter(|b| !std::ptr::eq(*b, *viewer))
                    .collect();
                return Err(anyhow::anyhow!(
                    "{e:#}\n{}",
                    diagnostics_of(&browsers).await
                ));
            }
        }
    }
    for (viewer, viewer_name) in people {
        let cameras: Vec<RemoteVideo> = viewer
            .remote_videos()
            .await?
            .into_iter()
            .filter(|v| v.kind.as_deref() == Some("camera"))
            .collect();
        let mut seen: Vec<&str> = cameras.iter().filter_map(|v| v.name.as_deref()).collect();
        seen.sort_unstable();
        let mut expected: Vec<&str> = people
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| n != viewer_name)
            .collect();
        expected.sort_unstable();
        anyhow::ensure!(
            seen == expected,
            "{viewer_name} shows camera tiles of {seen:?}, expected exactly {expected:?}: {cameras:?}"
        );
        let mut ids: Vec<&str> = cameras.iter().map(|v| v.peer_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        anyhow::ensure!(
            ids.len() == cameras.len(),
            "{viewer_name} shows two tiles with one peer id: {cameras:?}"
        );
    }
    Ok(())
}

/// 32-bit FNV-1a of `bytes`, computed the same way in the page by [`fetched_fnv1a`].
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Fetches `url` in `page` (e.g. the `blob:` link of a received file) and returns its
/// length and its [`fnv1a`] hash.
pub async fn fetched_fnv1a(page: &Browser, url: &str) -> anyhow::Result<(u64, u32)> {
    let value = page
        .js(
            "return fetch(arguments[0]).then((r) => r.arrayBuffer()).then((ab) => {
                 const buf = new Uint8Array(ab);
                 let h = 0x811c9dc5;
                 for (const b of buf) { h = Math.imul(h ^ b, 0x01000193) >>> 0; }
                 return { len: buf.length, hash: h };
             });",
            vec![serde_json::json!(url)],
        )
        .await?;
    match (value["len"].as_u64(), value["hash"].as_u64()) {
        (Some(len), Some(hash)) => Ok((len, u32::try_from(hash)?)),
        _ => anyhow::bail!("[{}] fetching {url} gave {value}", page.label()),
    }
}

/// The diagnostics of several pages, for a failure that involves all of them.
pub async fn diagnostics_of(browsers: &[&Browser]) -> String {
    let mut out = String::new();
    for browser in browsers {
        out.push_str(&browser.diagnostics().await);
        out.push('\n');
    }
    out
}

/// Checks `viewer`'s `window.switchboard.stats()` entry for participant `other`: connected,
/// more than [`MIN_FRAMES`] frames decoded, a codec, and a selected candidate pair.
pub async fn assert_peer_stats(viewer: &Browser, other: &str) -> anyhow::Result<()> {
    let stats = viewer.stats().await?;
    let entry = stats
        .iter()
        .find(|s| s["name"] == other)
        .ok_or_else(|| anyhow::anyhow!("{}: no stats for {other}: {stats:?}", viewer.label()))?;
    let problem = if entry["connectionState"] != "connected" {
        Some("the connection is not connected")
    } else if entry["framesDecoded"].as_u64().unwrap_or(0) <= MIN_FRAMES {
        Some("too few frames decoded")
    } else if entry["codec"].as_str().is_none_or(str::is_empty) {
        Some("no codec")
    } else if !(entry["candidateType"]["local"].is_string()
        && entry["candidateType"]["remote"].is_string())
    {
        Some("no selected candidate pair")
    } else if entry["peerId"].as_str().is_none_or(str::is_empty) {
        Some("no peer id")
    } else {
        None
    };
    match problem {
        Some(problem) => anyhow::bail!("{}: stats for {other}: {problem}: {entry}", viewer.label()),
        None => Ok(()),
    }
}

mod recovery;
pub use recovery::{
    FrameSamples, PeerConnectionInfo, call_link, expect_peer_connection, frame_samples,
    join_room_in_order, peer_connection, record_status, start_frame_sampler, status_history,
    wait_peer_connection, wait_status_sequence,
};

pub use browser::{LaunchOptions, MediaAccess};
pub use process::{enter_netns, in_netns};
