//! Helpers for recovery tests: what the `#status` banner showed over time, frame counts
//! sampled inside the page (so WebDriver round trips cannot hide a stall), and the state of
//! one peer connection as the page's SDK holds it (`window.switchboard.room.links`).

use crate::Browser;
use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Starts recording every text the `#status` banner shows (a `MutationObserver` in the page;
/// a hidden banner is recorded as an empty string). Read it with [`status_history`].
pub async fn record_status(page: &Browser) -> Result<()> {
    page.js(
        "const box = document.getElementById('status');
         if (!box) return false;
         window.__sbStatusLog = [];
         const note = () => {
           const text = box.hidden ? '' : box.textContent.trim();
           const log = window.__sbStatusLog;
           if (log[log.length - 1] !== text) log.push(text);
         };
         note();
         window.__sbStatusObserver?.disconnect();
         window.__sbStatusObserver = new MutationObserver(note);
         window.__sbStatusObserver.observe(box,
           { childList: true, subtree: true, characterData: true, attributes: true });
         return true;",
        vec![],
    )
    .await?;
    Ok(())
}

/// The banner texts shown since [`record_status`], oldest first (`""` = hidden).
pub async fn status_history(page: &Browser) -> Result<Vec<String>> {
    let value = page
        .js("return window.__sbStatusLog || null;", vec![])
        .await?;
    serde_json::from_value(value).context("reading the status history (call record_status first)")
}

/// Waits until the banner has shown, in this order, texts starting with each of `texts`
/// (other texts may come in between) and returns the whole history.
pub async fn wait_status_sequence(page: &Browser, texts: &[&str]) -> Result<Vec<String>> {
    let value = page
        .wait_until(
            &format!("#status to show {texts:?} in this order"),
            "const log = window.__sbStatusLog || [];
             let next = 0;
             for (const text of log) {
               if (next < arguments[0].length && text.startsWith(arguments[0][next])) next += 1;
             }
             return next === arguments[0].length ? log : null;",
            vec![json!(texts)],
        )
        .await?;
    serde_json::from_value(value).context("reading the status history")
}

/// Starts sampling, every 100 ms inside the page, the highest frame count of the videos
/// matching `css` (decoded frames in Chromium, painted frames in Firefox). Each sampler has
/// a `key`; starting one again with the same key starts over.
pub async fn start_frame_sampler(page: &Browser, key: &str, css: &str) -> Result<()> {
    page.js(
        "const [key, css] = arguments;
         const framesOf = (v) => Math.max(
           typeof v.getVideoPlaybackQuality === 'function'
             ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
           v.mozPaintedFrames || 0, v.webkitDecodedFrameCount || 0);
         window.__sbFrames = window.__sbFrames || {};
         clearInterval(window.__sbFrames[key]?.timer);
         const entry = { samples: [], timer: 0 };
         const sample = () => {
           const counts = Array.from(document.querySelectorAll(css)).map(framesOf);
           entry.samples.push([performance.now(), counts.length ? Math.max(...counts) : -1]);
           if (entry.samples.length > 6000) entry.samples.shift();
         };
         sample();
         entry.timer = setInterval(sample, 100);
         window.__sbFrames[key] = entry;
         return true;",
        vec![json!(key), json!(css)],
    )
    .await?;
    Ok(())
}

/// Frame counts sampled since [`start_frame_sampler`], as (page time in ms, frames).
pub async fn frame_samples(page: &Browser, key: &str) -> Result<FrameSamples> {
    let value = page
        .js(
            "const entry = (window.__sbFrames || {})[arguments[0]];
             return entry ? entry.samples : null;",
            vec![json!(key)],
        )
        .await?;
    let samples: Vec<(f64, i64)> = serde_json::from_value(value)
        .with_context(|| format!("reading frame samples {key:?} (start the sampler first)"))?;
    Ok(FrameSamples { samples })
}

/// Frame counts of one video sampled over time inside the page.
#[derive(Clone, Debug)]
pub struct FrameSamples {
    /// (page time in ms, frame count; -1 while no video matched).
    pub samples: Vec<(f64, i64)>,
}

impl FrameSamples {
    /// The longest time during which the count did not rise, up to the last sample
    /// (a video that stopped for good counts as stalled until the end).
    pub fn longest_stall(&self) -> Duration {
        let Some(&(start, first)) = self.samples.first() else {
            return Duration::ZERO;
        };
        let (mut since, mut count, mut longest) = (start, first, 0.0_f64);
        for &(t, frames) in &self.samples[1..] {
            if frames > count {
                since = t;
                count = frames;
            } else {
                longest = longest.max(t - since);
            }
        }
        Duration::from_secs_f64(longest / 1000.0)
    }

    /// The latest count (-1 if there are no samples or no video matched).
    pub fn last_count(&self) -> i64 {
        self.samples.last().map_or(-1, |s| s.1)
    }

    /// Frames shown between the first and the last sample.
    pub fn gained(&self) -> i64 {
        match (self.samples.first(), self.samples.last()) {
            (Some(first), Some(last)) => last.1 - first.1.max(0),
            _ => 0,
        }
    }

    /// Time covered by the samples.
    pub fn span(&self) -> Duration {
        match (self.samples.first(), self.samples.last()) {
            (Some(first), Some(last)) => Duration::from_secs_f64((last.0 - first.0) / 1000.0),
            _ => Duration::ZERO,
        }
    }

    /// Fails unless the count rose steadily: no pause longer than `max_stall`, and more
    /// than `min_gain` frames in all.
    pub fn ensure_kept_rising(&self, what: &str, max_stall: Duration, min_gain: i64) -> Result<()> {
        let stall = self.longest_stall();
        let gained = self.gained();
        anyhow::ensure!(
            stall <= max_stall && gained > min_gain,
            "{what}: video did not keep playing: {gained} frames in {:.1}s, longest pause {:.1}s \
             (allowed {:.1}s); samples: {}",
            self.span().as_secs_f64(),
            stall.as_secs_f64(),
            max_stall.as_secs_f64(),
            self.summary()
        );
        Ok(())
    }

    /// One sample per second, for failure messages.
    pub fn summary(&self) -> String {
        let mut out = Vec::new();
        let mut next = f64::MIN;
        for &(t, frames) in &self.samples {
            if t >= next {
                out.push(format!("{:.1}s:{frames}", t / 1000.0));
                next = t + 1000.0;
            }
        }
        out.join(" ")
    }
}

/// The connection to one remote participant as the page's SDK holds it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeerConnectionInfo {
    /// The remote participant's id.
    pub peer_id: String,
    /// `RTCPeerConnection.connectionState`.
    pub connection_state: String,
    /// `RTCPeerConnection.signalingState`.
    pub signaling_state: String,
    /// ICE username fragment of the current local description.
    pub local_ufrag: Option<String>,
    /// ICE username fragment of the current remote description.
    pub remote_ufrag: Option<String>,
    /// Session id (`o=` line) of the current local description: a new one means a new
    /// `RTCPeerConnection`.
    pub local_session: Option<String>,
    /// Session id (`o=` line) of the current remote description.
    pub remote_session: Option<String>,
    /// `a=setup` of the current local description (`actpass`, `active`, `passive`).
    pub local_setup: Option<String>,
    /// `a=setup` of the current remote description.
    pub remote_setup: Option<String>,
}

/// The page's connection to the participant named `name` (from
/// `window.switchboard.room.links`), or `None` if there is none.
pub async fn peer_connection(page: &Browser, name: &str) -> Result<Option<PeerConnectionInfo>> {
    let value = page
        .js(
            &format!("{PEER_INFO_JS}\nreturn peerInfo(arguments[0]);"),
            vec![json!(name)],
        )
        .await?;
    if value.is_null() {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .context("reading the peer connection")
}

/// Like [`peer_connection`], failing when the page has no connection to `name`.
pub async fn expect_peer_connection(page: &Browser, name: &str) -> Result<PeerConnectionInfo> {
    peer_connection(page, name)
        .await?
        .ok_or_else(|| anyhow!("[{}] has no connection to {name}", page.label()))
}

/// Waits until the page's connection to `name` is `connected` and `stable` and `ready` holds:
/// a JavaScript expression over `info` (the object [`peer_connection`] reads, camelCase) and
/// `args`. Returns the connection.
pub async fn wait_peer_connection(
    page: &Browser,
    name: &str,
    what: &str,
    ready: &str,
    args: Value,
) -> Result<PeerConnectionInfo> {
    let value = page
        .wait_until(
            &format!("the connection to {name}: {what}"),
            &format!(
                "{PEER_INFO_JS}
                 const info = peerInfo(arguments[0]);
                 const args = arguments[1];
                 if (!info) return null;
                 const ok = info.connectionState === 'connected' && info.signalingState === 'stable'
                   && ({ready});
                 return ok ? info : null;"
            ),
            vec![json!(name), args],
        )
        .await?;
    serde_json::from_value(value).context("reading the peer connection")
}

/// Calls a method of the page's `PeerLink` to participant `name`, e.g. `restartIce`.
pub async fn call_link(page: &Browser, name: &str, method: &str) -> Result<Value> {
    page.js(
        &format!(
            "{PEER_INFO_JS}
             const link = findLink(arguments[0]);
             if (!link) throw new Error('no connection to ' + arguments[0]);
             const result = link[arguments[1]]();
             return result === undefined ? null : result;"
        ),
        vec![json!(name), json!(method)],
    )
    .await
}

/// Defines `findLink(name)` (the room's `PeerLink` to a participant, by display name) and
/// `peerInfo(name)` (a [`PeerConnectionInfo`] of its connection, or null).
const PEER_INFO_JS: &str = r"
const findLink = (name) => {
  const room = window.switchboard && window.switchboard.room;
  if (!room) return null;
  const links = room.links ? Array.from(room.links.values()) : room.link ? [room.link] : [];
  return links.find((l) => l.name === name) || null;
};
const peerInfo = (name) => {
  const link = findLink(name);
  if (!link) return null;
  const pc = link.pc;
  const pick = (d, re) => (d && (re.exec(d.sdp) || [])[1]) || null;
  const local = pc.currentLocalDescription, remote = pc.currentRemoteDescription;
  return {
    peerId: link.peerId,
    connectionState: pc.connectionState || pc.iceConnectionState,
    signalingState: pc.signalingState,
    localUfrag: pick(local, /^a=ice-ufrag:(\S+)/m),
    remoteUfrag: pick(remote, /^a=ice-ufrag:(\S+)/m),
    localSession: pick(local, /^o=\S+ (\d+)/m),
    remoteSession: pick(remote, /^o=\S+ (\d+)/m),
    localSetup: pick(local, /^a=setup:(\w+)/m),
    remoteSetup: pick(remote, /^a=setup:(\w+)/m),
  };
};
";

impl PeerConnectionInfo {
    /// This side's DTLS role (`client` or `server`) as the current descriptions settle it:
    /// the answer's `a=setup` is `active` for the client and `passive` for the server.
    pub fn dtls_role(&self) -> Option<&'static str> {
        match (self.local_setup.as_deref(), self.remote_setup.as_deref()) {
            (Some("active"), _) | (_, Some("passive")) => Some("client"),
            (Some("passive"), _) | (_, Some("active")) => Some("server"),
            _ => None,
        }
    }
}

/// Opens the room page in each browser in turn and waits until each has joined before the
/// next one comes, so the join order (and with it who offers first) is fixed.
pub async fn join_room_in_order(
    server: &crate::TestServer,
    room: &str,
    people: &[(&Browser, &str)],
) -> Result<()> {
    for (browser, name) in people {
        browser
            .goto(&server.url(&format!("/r/{room}?name={name}&autojoin=1")))
            .await?;
        browser
            .wait_until(
                &format!("{name} to join {room}"),
                "const s = window.switchboard; return !!(s && s.room && s.room.id);",
                vec![],
            )
            .await?;
    }
    Ok(())
}
