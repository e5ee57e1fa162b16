//! End-to-end quality features on a real worker with str0m clients acting as browsers: what
//! the engine negotiates with a browser's offer (audio levels, congestion control feedback,
//! NACK and RTX), lost packets recovered on both legs, sender reports that keep a publisher's
//! audio and video in sync, tile sizes and bandwidth estimates choosing simulcast layers, and
//! audio levels with the dominant-speaker event.

mod support;

use std::time::{Duration, Instant, UNIX_EPOCH};

use str0m::media::{MediaKind, Mid};
use support::{Harness, LAYER_STRIDE, Loss, Role, test_config, wait_until};
use switchboard_sfu::{ParticipantId, RoomId, SfuEvent, TrackInfo};

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);

const WAIT: Duration = Duration::from_secs(10);

/// A browser's first offer (Chrome's shape): Opus with the audio-level extension, VP8 with RTX
/// and NACK in three simulcast layers, transport-wide congestion control, and data channels.
const BROWSER_OFFER: &str = "v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1 2\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS cam\r
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Xq9Z\r
a=ice-pwd:Sj1lWmQyKx7d0bq3ZcNfa1Ex\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=sendonly\r
a=msid:cam mic0\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:63 red/48000/2\r
a=fmtp:63 111/111\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6\r
a=ssrc:3735928559 msid:cam mic0\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Xq9Z\r
a=ice-pwd:Sj1lWmQyKx7d0bq3ZcNfa1Ex\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:1\r
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:13 urn:3gpp:video-orientation\r
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r
a=sendonly\r
a=msid:cam cam0\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 goog-remb\r
a=rtcp-fb:96 transport-cc\r
a=rtcp-fb:96 ccm fir\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=rtpmap:102 H264/90000\r
a=rtcp-fb:102 goog-remb\r
a=rtcp-fb:102 transport-cc\r
a=rtcp-fb:102 ccm fir\r
a=rtcp-fb:102 nack\r
a=rtcp-fb:102 nack pli\r
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r
a=rtpmap:103 rtx/90000\r
a=fmtp:103 apt=102\r
a=rid:q send\r
a=rid:h send\r
a=rid:f send\r
a=simulcast:send q;h;f\r
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
c=IN IP4 0.0.0.0\r
a=ice-ufrag:Xq9Z\r
a=ice-pwd:Sj1lWmQyKx7d0bq3ZcNfa1Ex\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:2\r
a=sctp-port:5000\r
a=max-message-size:262144\r
";

/// The lines of each media section of `sdp`, by mid.
fn sections(sdp: &str) -> Vec<(String, Vec<&str>)> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            out.push((String::new(), Vec::new()));
        }
        if let Some((mid, lines)) = out.last_mut() {
            if let Some(m) = line.strip_prefix("a=mid:") {
                *mid = m.to_owned();
            }
            lines.push(line);
        }
    }
    out
}

fn section<'a>(sdp: &'a str, mid: &str) -> Vec<&'a str> {
    sections(sdp)
        .into_iter()
        .find(|(m, _)| m == mid)
        .map(|(_, lines)| lines)
        .unwrap_or_else(|| panic!("no m-line {mid} in\n{sdp}"))
}

/// Whether a section has a line starting with each of `prefixes`.
fn has_all(section: &[&str], prefixes: &[&str]) -> Result<(), String> {
    for p in prefixes {
        if !section.iter().any(|l| l.starts_with(p)) {
            return Err(format!("no `{p}` in\n{}", section.join("\n")));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_offer_gets_audio_levels_congestion_control_and_retransmission() {
    let h = Harness::start(test_config()).await;
    let p = h
        .pool
        .join(RoomId::new("room"), A, "browser")
        .await
        .unwrap();
    let answer = p.accept_offer(BROWSER_OFFER, &[]).await.unwrap();

    // The browser's extension ids are kept.
    let audio = section(&answer, "0");
    has_all(
        &audio,
        &[
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "a=rtpmap:111 opus/48000/2",
            "a=rtcp-fb:111 transport-cc",
            "a=recvonly",
        ],
    )
    .unwrap();
    let video = section(&answer, "1");
    has_all(
        &video,
        &[
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "a=extmap:13 urn:3gpp:video-orientation",
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 transport-cc",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtpmap:97 rtx/90000",
            "a=fmtp:97 apt=96",
            "a=simulcast:recv q;h;f",
        ],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_media_keeps_levels_feedback_and_retransmission() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    a.set_audio_level(Some(-33)).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(
        wait_until(WAIT, || {
            let s = b.state();
            s.of_kind(MediaKind::Audio)
                .iter()
                .any(|r| r.audio_level == Some(-33))
        })
        .await,
        "the audio level reaches the subscriber: {:?}",
        b.state().received
    );

    // The engine's offer to B carries what B needs to report back and to ask for losses.
    let offer = b.state().offers[0].clone();
    let media = sections(&offer)
        .into_iter()
        .filter(|(_, lines)| !lines[0].starts_with("m=application"));
    for (_, lines) in media {
        has_all(&lines, &["a=extmap:", "a=rtcp-fb:"]).unwrap();
        assert!(
            lines.iter().any(|l| l.contains("transport-wide-cc")),
            "{lines:?}"
        );
        if lines[0].starts_with("m=audio") {
            assert!(lines.iter().any(|l| l.contains("ssrc-audio-level")));
        } else {
            has_all(&lines, &["a=rtcp-fb:96 nack", "a=rtpmap:97 rtx/90000"]).unwrap();
        }
    }

    // Once media flows to B, the engine estimates what it can send to it.
    let deadline = Instant::now() + WAIT;
    loop {
        let rooms = h.sfu.rooms().await.unwrap();
        let estimate = rooms[0]
            .participants
            .iter()
            .find(|p| p.id == B)
            .and_then(|p| p.bandwidth_estimate);
        if estimate.is_some_and(|bps| bps > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no estimate: {rooms:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_sent_again_on_both_legs() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 10).await);

    // Publisher → engine and engine → subscriber each lose three VP8 packets.
    a.lose(Loss::new(false, 10, 3)).await;
    b.lose(Loss::new(true, 10, 3)).await;
    assert!(
        wait_until(WAIT, || a.state().dropped_out == 3
            && b.state().dropped_in == 3)
        .await,
        "A dropped {}, B {}",
        a.state().dropped_out,
        b.state().dropped_in
    );
    let frames = b.state().video_frames();
    assert!(wait_until(WAIT, || b.state().video_frames() >= frames + 30).await);

    let s = b.state();
    let (video_mid, v) = s
        .received
        .iter()
        .find(|(_, r)| r.kind == MediaKind::Video)
        .map(|(m, r)| (*m, r.clone()))
        .unwrap();
    assert_eq!(v.corrupt + v.out_of_order, 0, "{v:?}");
    // A lost single-packet frame would leave a gap in the indexes: none is missing, so every
    // lost packet was sent again.
    assert_eq!(v.last_index - v.first_index + 1, v.frames, "{v:?}");
    // Who asked: B asked the engine, the engine asked A (str0m's statistics, every 500 ms).
    assert!(
        wait_until(WAIT, || {
            let nacked_by_b = b.state().nacks_sent.get(&video_mid).copied().unwrap_or(0);
            let nacked_to_a: u64 = a.state().nacks_received.values().sum();
            nacked_by_b > 0 && nacked_to_a > 0
        })
        .await,
        "B sent {:?}, A received {:?}",
        b.state().nacks_sent,
        a.state().nacks_received
    );
}

/// When each stream of a sender-report log says its RTP time 0 was: NTP minus RTP time.
fn implied_starts(
    reports: &[(Mid, str0m::rtp::rtcp::SenderInfo)],
    mid: Mid,
    rate: f64,
) -> Vec<f64> {
    reports
        .iter()
        .filter(|(m, _)| *m == mid)
        .map(|(_, info)| {
            let ntp = info
                .ntp_time
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            ntp - f64::from(info.rtp_time.numer() as u32) / rate
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_reports_keep_a_publishers_audio_and_video_in_sync() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    // A's encoder takes 80 ms per video frame: video leaves A (and reaches the engine) 80 ms
    // after the audio captured with it. A's own sender reports say when frames were captured.
    a.set_video_delay(Duration::from_millis(80)).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;

    let mids = |kind| {
        let s = b.state();
        s.received
            .iter()
            .find(|(_, r)| r.kind == kind)
            .map(|(m, _)| *m)
    };
    let reports_of = |mid: Option<Mid>| {
        let s = b.state();
        mid.map_or(0, |mid| {
            s.sender_reports.iter().filter(|(m, _)| *m == mid).count()
        })
    };
    assert!(
        wait_until(Duration::from_secs(15), || {
            reports_of(mids(MediaKind::Audio)) >= 4 && reports_of(mids(MediaKind::Video)) >= 4
        })
        .await,
        "B got too few sender reports: {:?}",
        b.state().sender_reports
    );

    // The test client's RTP time 0 is the same capture instant for audio and video, so the
    // last reports of both streams must put it at the same time. The first reports may
    // predate the engine's knowing A's reports (then it uses arrival times), so only the
    // last two count.
    let s = b.state();
    let (audio, video) = (
        mids(MediaKind::Audio).unwrap(),
        mids(MediaKind::Video).unwrap(),
    );
    let audio_starts = implied_starts(&s.sender_reports, audio, 48_000.0);
    let video_starts = implied_starts(&s.sender_reports, video, 90_000.0);
    for (a, v) in audio_starts
        .iter()
        .rev()
        .take(2)
        .zip(video_starts.iter().rev().take(2))
    {
        let skew = (v - a) * 1000.0;
        assert!(
            skew.abs() < 20.0,
            "video is {skew:.1} ms off audio\naudio {audio_starts:?}\nvideo {video_starts:?}"
        );
    }
}

/// The video track A published.
fn video_track(h: &Harness) -> TrackInfo {
    h.events()
        .into_iter()
        .find_map(|e| match e {
            SfuEvent::TrackPublished(t) if t.publisher == A && t.kind == MediaKind::Video => {
                Some(t)
            }
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tile_size_picks_the_simulcast_layer() {
    let h = Harness::start(test_config()).await;
    let _a = h.connect("room", A.0, Role::SimulcastPublisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    let last = || b.state().of_kind(MediaKind::Video)[0].last_index;
    // No tile size: the best layer, h (640x480).
    assert!(wait_until(WAIT, || b.state().video_frames() >= 45).await);
    assert!(last() < LAYER_STRIDE, "{:?}", b.state().received);

    // A 320x240 tile, named as a browser would: by the m-line B receives the video on.
    // l (320x240) covers it.
    let track = video_track(&h).id;
    let p = h.participant(B);
    let video_mid = {
        let state = b.state();
        let (mid, _) = state
            .received
            .iter()
            .find(|(_, r)| r.kind == MediaKind::Video)
            .unwrap();
        mid.to_string()
    };
    let unknown = p.set_view("99", 320, 240).await;
    assert!(unknown.is_err(), "no track on mid 99: {unknown:?}");
    p.set_view(&video_mid, 320, 240).await.unwrap();
    assert!(
        wait_until(WAIT, || last() >= LAYER_STRIDE + 10).await,
        "no switch to l: {:?}",
        b.state().received
    );

    // Hidden: nothing more; shown large: h again, from a keyframe.
    p.set_max_resolution(track, 0, 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hidden_at = b.state().video_frames();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.state().video_frames(), hidden_at, "nothing while hidden");
    p.set_max_resolution(track, 640, 480).await.unwrap();
    assert!(
        wait_until(WAIT, || {
            b.state().video_frames() >= hidden_at + 10 && last() < LAYER_STRIDE
        })
        .await,
        "not back to h: {:?}",
        b.state().received
    );
    let v = b.state().of_kind(MediaKind::Video)[0].clone();
    assert!(v.layer_switches.iter().all(|&(_, key)| key), "{v:?}");
    assert_eq!(v.corrupt, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loudest_participant_is_announced_as_the_dominant_speaker() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Publisher).await;
    a.set_audio_level(Some(-20)).await;
    b.set_audio_level(Some(-90)).await;
    let room = RoomId::new("room");
    let dominant = |p: ParticipantId| {
        let room = room.clone();
        move |e: &SfuEvent| {
            *e == SfuEvent::DominantSpeaker {
                room: room.clone(),
                participant: p,
            }
        }
    };
    assert!(wait_until(WAIT, || h.has_event(dominant(A))).await);

    let rooms = h.sfu.rooms().await.unwrap();
    let level = |p: ParticipantId| {
        rooms[0]
            .participants
            .iter()
            .find(|s| s.id == p)
            .and_then(|s| s.audio_level)
    };
    assert!(
        level(A).is_some_and(|l| (18..=22).contains(&l)),
        "{rooms:?}"
    );
    assert!(level(B).is_some_and(|l| l >= 85), "{rooms:?}");

    // B takes over.
    a.set_audio_level(Some(-127)).await;
    b.set_audio_level(Some(-25)).await;
    assert!(wait_until(WAIT, || h.has_event(dominant(B))).await);
    let changes: Vec<SfuEvent> = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, SfuEvent::DominantSpeaker { .. }))
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bandwidth_estimation_media_flows_and_nothing_is_estimated() {
    let mut config = test_config();
    config.quality.bandwidth_estimation = false;
    let h = Harness::start(config).await;
    let _a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(
        wait_until(WAIT, || {
            let s = b.state();
            s.video_frames() >= 45 && s.audio_frames() >= 75
        })
        .await,
        "B did not receive enough media: {:?}",
        b.state()
    );
    let video = b.state();
    let video = video.of_kind(MediaKind::Video)[0];
    assert_eq!(video.corrupt + video.out_of_order, 0);
    let rooms = h.sfu.rooms().await.unwrap();
    let subscriber = rooms[0].participants.iter().find(|p| p.id == B).unwrap();
    assert_eq!(subscriber.bandwidth_estimate, None, "{rooms:?}");
}
