//! SFU rooms (`?mode=sfu`): every page holds one connection, to the server, which forwards
//! everyone's media and data-channel messages. Same room page, same tiles, as peer-to-peer.

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchboard_e2e::{
    Browser, BrowserKind, MIN_FRAMES, TestServer, assert_full_mesh, camera_of, diagnostics_of,
    fetched_fnv1a, fnv1a, frame_samples, host_ipv4, join_room_with, record_status, screen_of,
    start_frame_sampler, video_of, wait_status_sequence,
};

/// Query parameter that asks for an SFU room.
const SFU: &str = "mode=sfu";

/// A server whose SFU listens on the machine's non-loopback address, which every browser in
/// `scripts/e2e.sh`'s namespace reaches with its host candidate.
async fn sfu_server() -> Result<TestServer> {
    let ip = host_ipv4()?;
    TestServer::start_with(|config| config.sfu_addr = Some(SocketAddr::new(ip.into(), 0))).await
}

/// What a page's connection to the server reports.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerConnection {
    /// The room's mode as the page's SDK holds it.
    mode: String,
    /// Peer-to-peer connections the page holds (none in an SFU room).
    peer_links: usize,
    /// `address:port` of the selected pair's remote candidate.
    remote: String,
    /// Its candidate type (the server's one candidate is a host candidate).
    remote_type: Option<String>,
    /// `address:port` of every candidate in the server's SDP.
    server_candidates: Vec<String>,
}

/// Reads the page's connection to the server once it is connected and has a selected pair
/// (no `await`: Firefox runs the script as a plain function).
const SERVER_CONNECTION_JS: &str = r"
const room = window.switchboard && window.switchboard.room;
const server = room && room.server;
if (!server || server.pc.connectionState !== 'connected') return null;
const pc = server.pc;
const sdp = (pc.remoteDescription && pc.remoteDescription.sdp) || '';
const serverCandidates = sdp.split(/\r?\n/)
  .filter((l) => l.startsWith('a=candidate:'))
  .map((l) => { const f = l.split(' '); return f[4] + ':' + f[5]; });
return pc.getStats().then((report) => {
  const all = [];
  report.forEach((s) => all.push(s));
  const byId = new Map(all.map((s) => [s.id, s]));
  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = (transport && byId.get(transport.selectedCandidatePairId))
    || all.find((s) => s.type === 'candidate-pair' && s.selected)
    || all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
  const remote = pair && byId.get(pair.remoteCandidateId);
  if (!remote) return null;
  return {
    mode: room.mode,
    peerLinks: room.links.size,
    remote: (remote.address || remote.ip) + ':' + remote.port,
    remoteType: remote.candidateType || null,
    serverCandidates,
  };
});
";

/// Checks that `page` is in an SFU room with no peer-to-peer connection, and that its one
/// connection's selected candidate pair goes to the server's candidate.
async fn assert_media_goes_to_the_server(page: &Browser) -> Result<()> {
    let value = page
        .wait_until(
            "a selected candidate pair to the server",
            SERVER_CONNECTION_JS,
            vec![],
        )
        .await?;
    let conn: ServerConnection =
        serde_json::from_value(value).context("reading the server connection")?;
    println!("[{}] server connection: {conn:?}", page.label());
    ensure!(
        conn.mode == "sfu",
        "[{}] the room is not in SFU mode: {conn:?}",
        page.label()
    );
    ensure!(
        conn.peer_links == 0,
        "[{}] holds peer-to-peer connections in an SFU room: {conn:?}",
        page.label()
    );
    ensure!(
        conn.server_candidates.contains(&conn.remote)
            && conn.remote_type.as_deref() == Some("host"),
        "[{}] the selected pair does not go to the server's candidate: {conn:?}",
        page.label()
    );
    Ok(())
}

/// Checks `page`'s stats: exactly one entry, the server, connected, listing a camera stream
/// of each of `others` with more than [`MIN_FRAMES`] frames decoded; and the stats panel
/// shows it.
async fn assert_server_stats(page: &Browser, others: &[&str]) -> Result<()> {
    let stats = page.stats().await?;
    ensure!(
        stats.len() == 1 && stats[0]["name"] == "Server" && stats[0]["peerId"] == "sfu",
        "[{}] stats should hold the server connection only: {stats:?}",
        page.label()
    );
    let server = &stats[0];
    ensure!(
        server["connectionState"] == "connected",
        "[{}] the server connection is not connected: {server}",
        page.label()
    );
    let streams = server["streams"].as_array().cloned().unwrap_or_default();
    for other in others {
        let frames = streams
            .iter()
            .find(|s| s["name"] == *other && s["kind"] == "camera")
            .and_then(|s| s["framesDecoded"].as_u64());
        ensure!(
            frames.is_some_and(|f| f > MIN_FRAMES),
            "[{}] stats show {frames:?} frames decoded of {other}'s camera: {server}",
            page.label()
        );
    }
    page.wait_until(
        "the stats panel's server block with a line per stream",
        "const block = document.querySelector('#stats .peer-stats[data-peer-id=\"sfu\"]');
         return !!block && block.querySelector('.stats-name').textContent.startsWith('Server')
           && block.querySelectorAll('.stream-stats[data-kind=\"camera\"]').length === arguments[0];",
        vec![json!(others.len())],
    )
    .await?;
    Ok(())
}

/// Waits until every page's connection to the server is connected.
async fn wait_server_connected(pages: &[&Browser]) -> Result<()> {
    for page in pages {
        page.wait_until(
            "the connection to the server",
            "const r = window.switchboard && window.switchboard.room;
             return !!(r && r.server && r.server.connectionState === 'connected');",
            vec![],
        )
        .await?;
    }
    Ok(())
}

/// What the server's `/api/rooms/{room}` says each participant publishes: (participant id,
/// [(source, simulcast layers)]), sorted.
async fn published(
    server: &TestServer,
    room: &str,
) -> Result<Vec<(String, Vec<(String, Vec<String>)>)>> {
    let body = server.get_json(&format!("/api/rooms/{room}")).await?;
    let participants = body["media"]["participants"]
        .as_array()
        .with_context(|| format!("no media participants in /api/rooms/{room}: {body}"))?;
    let mut out = Vec::new();
    for p in participants {
        let mut tracks: Vec<(String, Vec<String>)> = p["published"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|t| {
                let layers = serde_json::from_value(t["layers"].clone()).unwrap_or_default();
                (t["source"].as_str().unwrap_or("?").to_string(), layers)
            })
            .collect();
        tracks.sort();
        out.push((p["id"].as_str().unwrap_or("?").to_string(), tracks));
    }
    out.sort();
    Ok(out)
}

/// The participant id `page` joined as.
async fn own_id(page: &Browser) -> Result<String> {
    let id = page
        .js("return window.switchboard.room.id;", vec![])
        .await?;
    id.as_str()
        .map(str::to_string)
        .with_context(|| format!("[{}] no participant id: {id}", page.label()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn four_participants_in_two_browsers_receive_everyone_through_the_server() -> Result<()> {
    let server = sfu_server().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ann"),
        (BrowserKind::Chromium, "ben"),
        (BrowserKind::Firefox, "cleo"),
        (BrowserKind::Firefox, "dan"),
    ])
    .await?;
    let people = [
        (&browsers[0], "ann"),
        (&browsers[1], "ben"),
        (&browsers[2], "cleo"),
        (&browsers[3], "dan"),
    ];
    join_room_with(&server, "sfu-four", SFU, &people).await?;
    // Every page decodes every other page's camera, one tile each.
    assert_full_mesh(&people).await?;
    for (page, name) in &people {
        assert_media_goes_to_the_server(page).await?;
        let others: Vec<&str> = people
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| n != name)
            .collect();
        assert_server_stats(page, &others).await?;
        let mode = page.text("#room-mode").await?;
        ensure!(
            mode.as_deref() == Some("via server"),
            "[{name}] #room-mode shows {mode:?}"
        );
    }
    // Each page published its microphone and its camera, the camera in three simulcast
    // layers (Chromium and Firefox alike), once, to the server.
    let layers = || vec!["q".to_string(), "h".to_string(), "f".to_string()];
    let mut expected = Vec::new();
    for (page, _) in &people {
        let tracks = vec![
            ("camera".to_string(), layers()),
            ("microphone".to_string(), vec![]),
        ];
        expected.push((own_id(page).await?, tracks));
    }
    expected.sort();
    let seen = published(&server, "sfu-four").await?;
    ensure!(
        seen == expected,
        "the server sees these tracks published: {seen:?}, expected {expected:?}"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_publisher_who_stops_sharing_and_leaves_disappears_from_every_page() -> Result<()> {
    let server = sfu_server().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "presenter"),
        (BrowserKind::Chromium, "ben"),
        (BrowserKind::Firefox, "cleo"),
    ])
    .await?;
    let (presenter, ben, cleo) = (&browsers[0], &browsers[1], &browsers[2]);
    let people = [(presenter, "presenter"), (ben, "ben"), (cleo, "cleo")];
    join_room_with(&server, "sfu-leave", SFU, &people).await?;
    assert_full_mesh(&people).await?;

    // A screen share is published and forwarded as a screen tile…
    presenter.click("#share-screen").await?;
    for viewer in [ben, cleo] {
        viewer.wait_frames(&screen_of("presenter"), 0).await?;
    }
    let presenter_id = own_id(presenter).await?;
    let sources: Vec<String> = published(&server, "sfu-leave")
        .await?
        .into_iter()
        .find(|(id, _)| *id == presenter_id)
        .map(|(_, tracks)| tracks.into_iter().map(|(source, _)| source).collect())
        .unwrap_or_default();
    ensure!(
        sources.iter().any(|s| s == "screen"),
        "the server does not see the presenter's screen share as a screen: {sources:?}"
    );
    // …and stopping it removes the tile (the server stops the forwarded track).
    presenter.click("#share-screen").await?;
    for viewer in [ben, cleo] {
        viewer
            .wait_until_within(
                "the presenter's screen tile to go away",
                Duration::from_secs(5),
                "return document.querySelector(arguments[0]) === null;",
                vec![json!(screen_of("presenter"))],
            )
            .await?;
    }

    // Leaving removes every tile of the presenter within a few seconds, everywhere.
    let left = Instant::now();
    presenter.click("#leave").await?;
    for viewer in [ben, cleo] {
        viewer
            .wait_until_within(
                "every tile of the presenter to go away",
                Duration::from_secs(5),
                "return document.querySelector(arguments[0]) === null;",
                vec![json!(video_of("presenter"))],
            )
            .await?;
    }
    println!(
        "the presenter's tiles were gone {:.1}s after leaving",
        left.elapsed().as_secs_f64()
    );
    // The two who stay keep receiving each other.
    let before = ben.wait_frames(&camera_of("cleo"), 0).await?;
    ben.wait_frames(&camera_of("cleo"), before + 10).await?;
    let before = cleo.wait_frames(&camera_of("ben"), 0).await?;
    cleo.wait_frames(&camera_of("ben"), before + 10).await?;
    server.shutdown().await;
    Ok(())
}

/// Records, in the page, when its connection to the server got connected (the SDK's
/// `server.connectedAt`) and when each remote camera tile showed its first frame (polled
/// every 10 ms, and from `requestVideoFrameCallback` where the browser has it). Also keeps a
/// timeline of the connection (state and signaling changes, tracks, the first RTP packet and
/// the first decoded frame of each video m-line) for failure messages.
const FIRST_FRAMES_JS: &str = r"
const framesOf = (v) => Math.max(
  typeof v.getVideoPlaybackQuality === 'function' ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
  v.mozPaintedFrames || 0, v.webkitDecodedFrameCount || 0);
const state = { connectedAt: null, first: {}, watched: new Set(), log: [], seen: new Set() };
window.__sbFirstFrames = state;
const now = () => Math.round(performance.now());
const log = (what) => state.log.push(now() + ' ' + what);
const once = (key, what) => { if (!state.seen.has(key)) { state.seen.add(key); log(what); } };
const note = (name, t) => {
  if (state.first[name] === undefined || t < state.first[name]) state.first[name] = t;
};
let hooked = null;
setInterval(() => {
  const room = window.switchboard && window.switchboard.room;
  const server = room && room.server;
  if (server && server.pc !== hooked) {
    const pc = server.pc;
    hooked = pc;
    log('pc ' + pc.connectionState + ' ' + pc.signalingState);
    pc.addEventListener('connectionstatechange', () => log('connection ' + pc.connectionState));
    pc.addEventListener('signalingstatechange', () => log('signaling ' + pc.signalingState));
    pc.addEventListener('track', (e) => log('track ' + e.track.kind + ' of ' + (e.streams[0] ? e.streams[0].id : '?')));
    const poll = setInterval(() => {
      if (pc.connectionState === 'closed' || state.seen.size >= 4) { clearInterval(poll); return; }
      pc.getStats().then((report) => report.forEach((r) => {
        if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
        if (r.packetsReceived > 0) once('p' + r.mid, 'first packets on mid ' + r.mid + ' (' + r.packetsReceived + ')');
        if (r.keyFramesDecoded > 0 || r.framesDecoded > 0) {
          once('d' + r.mid, 'first frame decoded on mid ' + r.mid + ' (PLIs sent ' + r.pliCount
            + ', NACKs ' + r.nackCount + ', packets ' + r.packetsReceived + ', lost ' + r.packetsLost + ')');
        }
      }));
    }, 50);
  }
  if (state.connectedAt === null && server && server.connectedAt) state.connectedAt = server.connectedAt;
  for (const v of document.querySelectorAll('video[data-peer-id][data-kind=camera]')) {
    const name = v.dataset.name;
    if (state.first[name] === undefined && framesOf(v) > 0) note(name, performance.now());
    if (!state.watched.has(v) && typeof v.requestVideoFrameCallback === 'function') {
      state.watched.add(v);
      v.requestVideoFrameCallback((t) => note(name, t));
    }
  }
}, 10);
return true;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_late_joiner_decodes_everyone_within_a_second_of_connecting() -> Result<()> {
    let server = sfu_server().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ann"),
        (BrowserKind::Firefox, "ben"),
        (BrowserKind::Chromium, "latecomer"),
    ])
    .await?;
    let (ann, ben, late) = (&browsers[0], &browsers[1], &browsers[2]);
    join_room_with(&server, "sfu-late", SFU, &[(ann, "ann"), (ben, "ben")]).await?;
    assert_full_mesh(&[(ann, "ann"), (ben, "ben")]).await?;

    // The latecomer opens the room without joining, starts recording, then clicks Join.
    late.goto(&server.url("/r/sfu-late?name=latecomer")).await?;
    late.wait_until(
        "the camera preview",
        "const v = document.querySelector('#preview'); return !!v && v.readyState >= 2;",
        vec![],
    )
    .await?;
    late.js(FIRST_FRAMES_JS, vec![]).await?;
    late.click("#join").await?;
    let value = late
        .wait_until(
            "first frames of ann and ben",
            "const s = window.__sbFirstFrames;
             return s.connectedAt !== null && s.first.ann !== undefined && s.first.ben !== undefined
               ? { connectedAt: s.connectedAt, ann: s.first.ann, ben: s.first.ben, log: s.log } : null;",
            vec![],
        )
        .await?;
    let at = |key: &str| value[key].as_f64().unwrap_or(f64::NAN);
    let after = |name: &str| at(name) - at("connectedAt");
    let (ann_ms, ben_ms) = (after("ann"), after("ben"));
    println!(
        "latecomer: first frame of ann {ann_ms:.0} ms, of ben {ben_ms:.0} ms after its server connection was up"
    );
    println!("latecomer's timeline (ms): {}", value["log"]);
    let slowest = ann_ms.max(ben_ms);
    if slowest.is_nan() || slowest >= 1000.0 {
        return Err(anyhow::anyhow!(
            "the latecomer decoded everyone {slowest:.0} ms after connecting to the server \
             (ann {ann_ms:.0} ms, ben {ben_ms:.0} ms); required < 1000 ms: {value}\n{}",
            diagnostics_of(&[late]).await
        ));
    }
    // And it keeps playing, like everyone else's.
    assert_full_mesh(&[(ann, "ann"), (ben, "ben"), (late, "latecomer")]).await?;
    server.shutdown().await;
    Ok(())
}

/// Waits until `reader`'s chat log shows `text` from `from`.
async fn wait_for_chat(reader: &Browser, from: &str, text: &str) -> Result<Value> {
    let shown = reader
        .wait_until(
            &format!("chat message {text:?} from {from}"),
            "return Array.from(document.querySelectorAll('#chat-log li'))
                 .some((li) => li.dataset.from === arguments[0] && li.textContent.includes(arguments[1]));",
            vec![json!(from), json!(text)],
        )
        .await;
    match shown {
        Ok(value) => Ok(value),
        Err(e) => Err(e.context(format!(
            "the page's data channels: {}",
            reader.js(CHANNELS_JS, vec![]).await.unwrap_or_default()
        ))),
    }
}

/// The page's data channels to and from the server, for failure messages.
const CHANNELS_JS: &str = r"
const server = window.switchboard && window.switchboard.room && window.switchboard.room.server;
if (!server) return null;
const state = (e) => (e.dc ? e.dc.label + ' ' + e.dc.readyState : 'none');
const inboxes = {};
for (const [id, e] of server.inboxes) inboxes[id] = state(e);
return {
  connection: server.connectionState,
  sctp: server.pc.sctp ? server.pc.sctp.state : null,
  outbox: state(server.outbox),
  inboxes,
};
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn chat_reaches_every_other_page_through_the_server() -> Result<()> {
    let server = sfu_server().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ann"),
        (BrowserKind::Chromium, "ben"),
        (BrowserKind::Firefox, "cleo"),
    ])
    .await?;
    let (ann, ben, cleo) = (&browsers[0], &browsers[1], &browsers[2]);
    let people = [(ann, "ann"), (ben, "ben"), (cleo, "cleo")];
    join_room_with(&server, "sfu-chat", SFU, &people).await?;
    wait_server_connected(&[ann, ben, cleo]).await?;
    // Like a person, talk once the others are on screen.
    for (viewer, name) in &people {
        for (_, other) in people.iter().filter(|(_, n)| n != name) {
            viewer.wait_frames(&camera_of(other), 0).await?;
        }
    }

    ann.type_into("#chat-input", "Hello both, through the server")
        .await?;
    ann.click("#chat-send").await?;
    wait_for_chat(ben, "ann", "Hello both, through the server").await?;
    wait_for_chat(cleo, "ann", "Hello both, through the server").await?;

    cleo.type_into("#chat-input", "Firefox here — ünïcödé ✓")
        .await?;
    cleo.click("#chat-send").await?;
    wait_for_chat(ann, "cleo", "Firefox here — ünïcödé ✓").await?;
    wait_for_chat(ben, "cleo", "Firefox here — ünïcödé ✓").await?;

    // Nobody sees their own message twice, or as someone else's.
    for (page, name) in &people {
        let lines = page
            .js(
                "return Array.from(document.querySelectorAll('#chat-log li'))
                     .map((li) => li.dataset.from + ': ' + li.querySelector('.chat-text').textContent);",
                vec![],
            )
            .await?;
        let lines: Vec<String> = serde_json::from_value(lines)?;
        ensure!(
            lines.len() == 2,
            "[{name}] chat log should hold the two messages once each: {lines:?}"
        );
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_file_reaches_every_other_page_through_the_server() -> Result<()> {
    let server = sfu_server().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ann"),
        (BrowserKind::Chromium, "ben"),
        (BrowserKind::Firefox, "cleo"),
    ])
    .await?;
    let (ann, ben, cleo) = (&browsers[0], &browsers[1], &browsers[2]);
    let people = [(ann, "ann"), (ben, "ben"), (cleo, "cleo")];
    join_room_with(&server, "sfu-files", SFU, &people).await?;
    wait_server_connected(&[ann, ben, cleo]).await?;
    for (viewer, name) in &people {
        for (_, other) in people.iter().filter(|(_, n)| n != name) {
            viewer.wait_frames(&camera_of(other), 0).await?;
        }
    }

    // Sent once, to the server, which passes it to both others.
    let content: Vec<u8> = (0..300_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = ann.scratch_dir().join("minutes.bin");
    std::fs::write(&path, &content)?;
    ann.type_into("#file-input", &path.to_string_lossy())
        .await?;
    for reader in [ben, cleo] {
        let entry = reader
            .wait_until(
                "minutes.bin from ann in #files",
                "const a = document.querySelector('#files a[download=\"minutes.bin\"]');
                 return a ? { from: a.dataset.from, size: a.dataset.size, href: a.href } : null;",
                vec![],
            )
            .await?;
        ensure!(
            entry["from"] == "ann"
                && entry["size"].as_str() == Some(content.len().to_string().as_str()),
            "[{}] lists {entry}, expected {} bytes from ann",
            reader.label(),
            content.len()
        );
        let href = entry["href"].as_str().unwrap_or_default();
        let (len, hash) = fetched_fnv1a(reader, href).await?;
        ensure!(
            len == content.len() as u64 && hash == fnv1a(&content),
            "[{}] received different bytes: len {len} hash {hash}",
            reader.label()
        );
    }
    server.shutdown().await;
    Ok(())
}

/// When `page`'s current server session got connected, and how many sessions it replaced.
async fn server_session(page: &Browser) -> Result<Value> {
    page.js(
        "const s = window.switchboard.room.server;
         return { connectedAt: s.connectedAt, rebuilds: s.rebuilds };",
        vec![],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn a_dropped_signaling_socket_keeps_the_server_connection() -> Result<()> {
    let server = sfu_server().await?;
    let browsers = Browser::launch_all(&[
        (BrowserKind::Chromium, "ada"),
        (BrowserKind::Firefox, "linus"),
    ])
    .await?;
    let (ada, linus) = (&browsers[0], &browsers[1]);
    let people = [(ada, "ada"), (linus, "linus")];
    join_room_with(&server, "sfu-resume", SFU, &people).await?;
    assert_full_mesh(&people).await?;
    let id = own_id(ada).await?;
    let before = server_session(ada).await?;
    start_frame_sampler(ada, "linus", &camera_of("linus")).await?;
    start_frame_sampler(linus, "ada", &camera_of("ada")).await?;

    record_status(ada).await?;
    ada.js(
        "window.switchboard.room.signaling.ws.close(); return true;",
        vec![],
    )
    .await?;
    wait_status_sequence(ada, &["Connection lost — reconnecting…", "Reconnected"]).await?;
    let back = own_id(ada).await?;
    ensure!(back == id, "ada came back as {back}, not as {id}");
    // Same session on the server: no new peer connection, video never stopped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = server_session(ada).await?;
    ensure!(
        after == before,
        "ada's server connection changed across the signaling outage: {before} -> {after}"
    );
    frame_samples(ada, "linus").await?.ensure_kept_rising(
        "ada watching linus",
        Duration::from_secs(2),
        30,
    )?;
    frame_samples(linus, "ada").await?.ensure_kept_rising(
        "linus watching ada",
        Duration::from_secs(2),
        30,
    )?;

    // Signaling to the server still works: a screen share is published and forwarded.
    ada.click("#share-screen").await?;
    linus.wait_frames(&screen_of("ada"), 0).await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "browser test: run scripts/e2e.sh"]
async fn the_landing_page_creates_an_sfu_room_when_asked() -> Result<()> {
    let server = sfu_server().await?;
    let page = Browser::launch(BrowserKind::Chromium, "host").await?;
    page.goto(&server.url("/")).await?;
    page.click("#sfu-mode").await?;
    page.click("#create-room").await?;
    let room = page
        .wait_until(
            "the new room's page, asking for SFU mode",
            "const m = location.pathname.match(/^\\/r\\/([^/]+)$/);
             return m && location.search === '?mode=sfu' ? decodeURIComponent(m[1]) : null;",
            vec![],
        )
        .await?;
    let room = room.as_str().unwrap_or_default().to_string();
    page.type_into("#name", "host").await?;
    page.click("#join").await?;
    page.wait_until(
        "#room-mode to say the room goes through the server",
        "const m = document.querySelector('#room-mode');
         return !!m && !m.hidden && m.dataset.mode === 'sfu';",
        vec![],
    )
    .await?;
    let body = server.get_json(&format!("/api/rooms/{room}")).await?;
    ensure!(
        body["mode"] == "sfu",
        "/api/rooms/{room} says {body}, expected mode sfu"
    );
    server.shutdown().await;
    Ok(())
}
