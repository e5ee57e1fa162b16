//! End-to-end media tests: a real worker on a loopback UDP socket and str0m clients acting as
//! browsers. A publishes synthetic VP8 and Opus at 30 and 50 frames per second; the others
//! receive through the engine.

mod support;

use std::time::Duration;

use str0m::media::MediaKind;
use support::{ADDED_TRACK_BASE, Harness, LAYER_STRIDE, Role, label, test_config, wait_until};
use switchboard_sfu::{LeaveReason, ParticipantId, RouteError, SfuError, SfuEvent, TrackSource};

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_receives_publisher_media_intact() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;

    assert!(
        wait_until(WAIT, || {
            let s = b.state();
            s.video_frames() >= 45 && s.audio_frames() >= 75
        })
        .await,
        "B did not receive enough media: {:?}\nA: {:?}",
        b.state(),
        a.state()
    );

    let s = b.state();
    let video = s.of_kind(MediaKind::Video);
    let audio = s.of_kind(MediaKind::Audio);
    assert_eq!((video.len(), audio.len()), (1, 1), "one track of each kind");
    let (v, au) = (video[0], audio[0]);
    assert!(v.first_was_keyframe, "video starts at a keyframe");
    assert_eq!(v.corrupt + au.corrupt, 0, "payloads intact");
    assert_eq!(v.out_of_order + au.out_of_order, 0);
    // Loopback loses nothing: every frame from the first forwarded one arrives.
    assert_eq!(v.last_index - v.first_index + 1, v.frames);
    assert_eq!(au.last_index - au.first_index + 1, au.frames);

    let sent = a.state();
    assert!(sent.video_sent >= v.frames && sent.audio_sent >= au.frames);
    assert!(h.has_event(|e| *e == SfuEvent::Connected { participant: A }));
    assert!(h.has_event(|e| *e == SfuEvent::Connected { participant: B }));
    let published: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SfuEvent::TrackPublished(t) if t.publisher == A => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(published.len(), 2);
    let video_track = published
        .iter()
        .find(|t| t.kind == MediaKind::Video)
        .unwrap();
    assert_eq!(video_track.source, TrackSource::Camera);
    assert!(video_track.layers.is_empty());

    // B's offer names A's camera and microphone as one stream, A's label.
    let offers = b.state().offers;
    assert_eq!(offers.len(), 1);
    let msids: Vec<&str> = offers[0]
        .lines()
        .filter_map(|l| l.strip_prefix("a=msid:"))
        .collect();
    assert_eq!(msids.len(), 2, "{}", offers[0]);
    for t in &published {
        assert!(
            msids.contains(&format!("{} {}", label(A), t.id).as_str()),
            "{msids:?}"
        );
    }

    // The signaling side may say what a track carries; only its publisher may.
    h.set_source(A, video_track.id, TrackSource::ScreenShare)
        .await
        .unwrap();
    let err = h
        .set_source(B, video_track.id, TrackSource::Camera)
        .await
        .unwrap_err();
    assert!(matches!(err, SfuError::Route(RouteError::UnknownTrack(_))));

    let rooms = h.sfu.rooms().await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room.as_str(), "room");
    let [pa, pb] = &rooms[0].participants[..] else {
        panic!("{rooms:?}")
    };
    assert_eq!((pa.id, pb.id), (A, B));
    assert!(pa.connected && pb.connected);
    assert_eq!(pa.published.len(), 2);
    assert!(pa.subscribed.is_empty());
    assert_eq!(
        pb.subscribed,
        published.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    assert!(pa.bytes_in > 20_000, "A sent media: {pa:?}");
    assert!(pb.bytes_out > 20_000, "B received media: {pb:?}");

    let stats = h.sfu.stats().await.unwrap();
    assert_eq!(stats.connected, 2);
    assert_eq!(stats.router.tracks, 2);
    assert_eq!(stats.router.subscriptions, 2);
    assert!(stats.frames_forwarded >= u64::from(v.frames + au.frames));
    assert_eq!(stats.frames_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_starts_at_a_keyframe_requested_from_the_publisher() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 30).await);

    // By now A's stream is deltas only; C must not get any before a fresh keyframe.
    let before = a.state();
    let c = h.connect("room", C.0, Role::Subscriber).await;
    assert!(
        wait_until(WAIT, || c.state().video_frames() >= 15).await,
        "C got no video: {:?}",
        c.state()
    );

    let after = a.state();
    assert!(
        after.keyframe_requests > before.keyframe_requests,
        "the PLI for C reached A"
    );
    assert!(after.keyframes_sent > before.keyframes_sent);
    let s = c.state();
    let v = s.of_kind(MediaKind::Video)[0];
    assert!(v.first_was_keyframe, "C's first video frame is a keyframe");
    assert!(
        v.first_index >= before.video_sent,
        "C starts at the new keyframe, not at an old frame"
    );
    assert_eq!(v.corrupt, 0);
    assert!(c.state().audio_frames() > 0);

    // B was not disturbed: it keeps receiving in order.
    let b_video = b.state().of_kind(MediaKind::Video)[0].clone();
    assert_eq!(b_video.out_of_order + b_video.corrupt, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_leaving_removes_its_tracks_from_everyone() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    let c = h.connect("room", C.0, Role::Subscriber).await;
    assert!(
        wait_until(WAIT, || b.state().video_frames() >= 10
            && c.state().video_frames() >= 10)
        .await
    );

    h.sfu.leave(A).await.unwrap();
    assert!(
        wait_until(WAIT, || h.has_event(|e| *e
            == SfuEvent::Left {
                participant: A,
                reason: LeaveReason::Left
            }))
        .await
    );
    let unpublished = h
        .events()
        .iter()
        .filter(
            |e| matches!(e, SfuEvent::TrackUnpublished { participant, .. } if *participant == A),
        )
        .count();
    assert_eq!(unpublished, 2);

    // B and C are offered a renegotiation that stops both m-lines.
    assert!(
        wait_until(WAIT, || b.state().stopped_mids.len() == 2
            && c.state().stopped_mids.len() == 2)
        .await,
        "m-lines not stopped: B {:?} C {:?}",
        b.state().stopped_mids,
        c.state().stopped_mids
    );
    let stats = h.sfu.stats().await.unwrap();
    assert_eq!(stats.router.tracks, 0);
    assert_eq!(stats.router.subscriptions, 0);
    assert_eq!(stats.router.participants, 2);

    // Nothing more arrives.
    let frames = b.state().video_frames();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.state().video_frames(), frames);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let h = Harness::start(test_config()).await;
    let _a = h.connect("one", A.0, Role::Publisher).await;
    let b = h.connect("one", B.0, Role::Subscriber).await;
    let c = h.connect("two", C.0, Role::Subscriber).await;
    assert!(
        wait_until(WAIT, || b.state().video_frames() >= 10).await,
        "B {:?}\nA {:?}\nevents {:?}\n{:?}",
        b.state(),
        _a.state(),
        h.events(),
        h.sfu.stats().await
    );
    assert_eq!(c.state().received.len(), 0);
    assert_eq!(c.state().offers_answered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_forwards_one_layer_and_switches_at_a_keyframe() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::SimulcastPublisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(
        wait_until(WAIT, || b.state().video_frames() >= 20).await,
        "B got no video: {:?}\nA: {:?}",
        b.state(),
        a.state()
    );
    let track = h
        .events()
        .iter()
        .find_map(|e| match e {
            SfuEvent::TrackPublished(t) if t.kind == MediaKind::Video => Some(t.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(track.layers, vec!["h".into(), "l".into()]);

    // Only the first layer ("h", indexes below LAYER_STRIDE) reaches B.
    let v = b.state().of_kind(MediaKind::Video)[0].clone();
    assert!(v.first_was_keyframe);
    assert!(v.last_index < LAYER_STRIDE, "{v:?}");
    assert!(v.layer_switches.is_empty());

    h.select_layer(B, track.id, "l").await.unwrap();
    assert!(
        wait_until(WAIT, || {
            let s = b.state();
            s.of_kind(MediaKind::Video)[0].last_index >= LAYER_STRIDE + 10
        })
        .await,
        "no switch to l: {:?}",
        b.state()
    );
    let v = b.state().of_kind(MediaKind::Video)[0].clone();
    assert_eq!(v.layer_switches.len(), 1, "{v:?}");
    assert!(v.layer_switches[0].1, "the switch happened at a keyframe");
    assert_eq!(v.corrupt + v.out_of_order, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_publishing_receives_everyone_else() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Publisher).await;
    let c = h.connect("room", C.0, Role::Publisher).await;
    let clients = [&a, &b, &c];
    assert!(
        wait_until(WAIT, || clients.iter().all(|x| {
            let s = x.state();
            let video = s.of_kind(MediaKind::Video);
            video.len() == 2 && video.iter().all(|r| r.frames >= 10)
        }))
        .await,
        "A {:?}\nB {:?}\nC {:?}",
        a.state(),
        b.state(),
        c.state()
    );
    let stats = h.sfu.stats().await.unwrap();
    for x in clients {
        let s = x.state();
        assert_eq!(
            s.of_kind(MediaKind::Audio).len(),
            2,
            "audio from both others"
        );
        assert!(
            s.received
                .values()
                // Six streams on a busy machine: a packet recovered by NACK may complete its
                // frame late, but nothing arrives damaged.
                .all(|r| r.corrupt == 0 && r.out_of_order <= 2),
            "{:?}\n{stats:?}",
            s.received
        );
        assert!(
            s.of_kind(MediaKind::Video)
                .iter()
                .all(|r| r.first_was_keyframe)
        );
    }
    let stats = h.sfu.stats().await.unwrap();
    assert_eq!(stats.router.tracks, 6);
    assert_eq!(stats.router.subscriptions, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_added_mid_call_reaches_the_others() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 10).await);

    // A starts a screen share: its own offer, answered by the engine, says what the new
    // m-line carries. It also re-labels the microphone as the shared tab's audio, and
    // declares a kind that cannot be (a microphone on the camera's video), which is ignored.
    let (offer, screen_mid) = a.add_video().await;
    let audio_mid = a_mid(&h, MediaKind::Audio);
    let camera_mid = a_mid(&h, MediaKind::Video);
    let sources = [
        (screen_mid.to_string(), TrackSource::ScreenShare),
        (audio_mid.to_string(), TrackSource::ScreenShareAudio),
        (camera_mid.to_string(), TrackSource::Microphone),
    ];
    let answer = h
        .participant(A)
        .accept_offer(&offer, &sources)
        .await
        .unwrap();
    a.accept_answer(answer).await;

    let screen = {
        let mut found = None;
        assert!(
            wait_until(WAIT, || {
                found = h.events().into_iter().find_map(|e| match e {
                    SfuEvent::TrackPublished(t) if t.publisher == A && t.mid == screen_mid => {
                        Some(t)
                    }
                    _ => None,
                });
                found.is_some()
            })
            .await
        );
        found.unwrap()
    };
    assert_eq!(screen.kind, MediaKind::Video);
    assert_eq!(
        screen.source,
        TrackSource::ScreenShare,
        "declared with the offer"
    );
    let rooms = h.sfu.rooms().await.unwrap();
    let mut sources: Vec<_> = rooms[0].participants[0]
        .published
        .iter()
        .map(|t| (t.mid, t.source))
        .collect();
    sources.sort_by_key(|(mid, _)| mid.to_string());
    let mut expected = vec![
        (audio_mid, TrackSource::ScreenShareAudio),
        (camera_mid, TrackSource::Camera),
        (screen_mid, TrackSource::ScreenShare),
    ];
    expected.sort_by_key(|(mid, _)| mid.to_string());
    assert_eq!(sources, expected);

    // B is renegotiated and receives the new track from a keyframe, untouched.
    assert!(
        wait_until(WAIT, || {
            let s = b.state();
            s.of_kind(MediaKind::Video).len() == 2
                && s.received
                    .values()
                    .any(|r| r.first_index >= ADDED_TRACK_BASE && r.frames >= 10)
        })
        .await,
        "B {:?}",
        b.state()
    );
    let s = b.state();
    let shared = s
        .received
        .values()
        .find(|r| r.first_index >= ADDED_TRACK_BASE)
        .unwrap();
    assert!(shared.first_was_keyframe);
    assert_eq!(shared.corrupt, 0);
    assert_eq!(s.offers_answered, 2);
    // The screen share is a stream of its own, still named after A.
    let screen_msid = format!("a=msid:{}-screen {}", label(A), screen.id);
    assert!(
        s.offers[1].lines().any(|l| l == screen_msid),
        "{screen_msid} not in\n{}",
        s.offers[1]
    );
    assert_eq!(h.sfu.stats().await.unwrap().router.tracks, 3);
}

/// The mid of A's first track of `kind`.
fn a_mid(h: &Harness, kind: MediaKind) -> str0m::media::Mid {
    h.events()
        .into_iter()
        .find_map(|e| match e {
            SfuEvent::TrackPublished(t) if t.publisher == A && t.kind == kind => Some(t.mid),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_keyframe_request_reaches_the_publisher() {
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 30).await);

    let (a_before, b_before) = (a.state(), b.state());
    let b_keyframes = b_before.of_kind(MediaKind::Video)[0].keyframes;
    assert_eq!(b.request_keyframe().await, 1);
    assert!(
        wait_until(WAIT, || {
            a.state().keyframe_requests > a_before.keyframe_requests
                && b.state().of_kind(MediaKind::Video)[0].keyframes > b_keyframes
        })
        .await,
        "A {:?}\nB {:?}",
        a.state(),
        b.state()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_track_stops_and_resumes_at_a_keyframe() {
    let h = Harness::start(test_config()).await;
    let _a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 10).await);
    let video = h
        .events()
        .into_iter()
        .find_map(|e| match e {
            SfuEvent::TrackPublished(t) if t.kind == MediaKind::Video => Some(t.id),
            _ => None,
        })
        .unwrap();

    h.participant(B).set_receiving(video, false).await.unwrap();
    // Frames already on the way may still land; then nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused_at = b.state().video_frames();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.state().video_frames(), paused_at, "nothing while paused");
    assert!(b.state().audio_frames() > 0);

    let keyframes = b.state().of_kind(MediaKind::Video)[0].keyframes;
    h.participant(B).set_receiving(video, true).await.unwrap();
    assert!(wait_until(WAIT, || b.state().video_frames() >= paused_at + 10).await);
    let v = b.state().of_kind(MediaKind::Video)[0].clone();
    assert!(v.keyframes > keyframes, "resumed at a fresh keyframe");
    assert_eq!(v.corrupt, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_changes_network_keeps_receiving_after_an_ice_restart() {
    let h = Harness::start(test_config()).await;
    let _a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 10).await);

    // B's old address goes silent; its checks now come from a new one, with new credentials.
    let offer = b.restart_ice().await;
    let answer = h.participant(B).accept_offer(&offer, &[]).await.unwrap();
    b.accept_answer(answer).await;
    let frames = b.state().video_frames();
    assert!(
        wait_until(WAIT, || b.state().video_frames() >= frames + 20).await,
        "B {:?}",
        b.state()
    );
    assert!(!h.has_event(|e| matches!(e, SfuEvent::Left { .. })));
    assert_eq!(b.state().of_kind(MediaKind::Video)[0].corrupt, 0);
}
