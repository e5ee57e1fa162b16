//! Routing-core tests: a fake clock (`Instant` values built from one base) and no sockets.

use super::*;

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);
const D: ParticipantId = ParticipantId(4);

fn mid(s: &str) -> Mid {
    Mid::from(s)
}

fn rid(s: &str) -> Rid {
    Rid::from(s)
}

fn room(name: &str) -> RoomId {
    RoomId::new(name)
}

fn drain(r: &mut Router) -> Vec<RouterOutput> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

fn keyframe_requests(outputs: &[RouterOutput]) -> Vec<(ParticipantId, Mid, Option<Rid>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RouterOutput::RequestKeyframe {
                publisher,
                mid,
                rid,
            } => Some((*publisher, *mid, *rid)),
            _ => None,
        })
        .collect()
}

fn subscribes(outputs: &[RouterOutput]) -> Vec<(ParticipantId, TrackId)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            RouterOutput::Subscribe { subscriber, track } => Some((*subscriber, *track)),
            _ => None,
        })
        .collect()
}

fn targets(
    r: &mut Router,
    track: TrackId,
    layer: Option<Rid>,
    key: bool,
    now: Instant,
) -> Vec<ParticipantId> {
    r.on_media(track, layer, key, now)
        .iter()
        .map(|f| f.subscriber)
        .collect()
}

/// A and B in room "r", A publishes audio (mid 0) and video (mid 1).
fn two_with_tracks(now: Instant) -> (Router, TrackId, TrackId) {
    let mut r = Router::new(Limits::default());
    r.join(room("r"), A).unwrap();
    r.join(room("r"), B).unwrap();
    let audio = r
        .publish(
            A,
            mid("0"),
            MediaKind::Audio,
            TrackSource::Microphone,
            vec![],
        )
        .unwrap();
    let video = r
        .publish(A, mid("1"), MediaKind::Video, TrackSource::Camera, vec![])
        .unwrap();
    let out = drain(&mut r);
    assert_eq!(subscribes(&out), vec![(B, audio), (B, video)]);
    r.subscription_ready(B, audio, mid("a0"), now).unwrap();
    r.subscription_ready(B, video, mid("a1"), now).unwrap();
    (r, audio, video)
}

#[test]
fn everyone_subscribes_to_everyone_else_in_the_room_only() {
    let mut r = Router::new(Limits::default());
    r.join(room("r"), A).unwrap();
    r.join(room("r"), B).unwrap();
    r.join(room("other"), D).unwrap();
    let t = r
        .publish(A, mid("0"), MediaKind::Video, TrackSource::Camera, vec![])
        .unwrap();
    let out = drain(&mut r);
    assert_eq!(subscribes(&out), vec![(B, t)]);
    assert!(
        matches!(&out[1], RouterOutput::TrackPublished(info) if info.id == t && info.publisher == A)
    );

    // A late joiner subscribes to what is already there.
    r.join(room("r"), C).unwrap();
    assert_eq!(subscribes(&drain(&mut r)), vec![(C, t)]);
    assert_eq!(
        r.subscription_state(C, t),
        Some(SubscriptionState::Negotiating)
    );
    assert_eq!(r.subscription_state(A, t), None, "no self-subscription");
    assert_eq!(
        r.subscription_state(D, t),
        None,
        "no cross-room subscription"
    );
    assert_eq!(r.participants_in(&room("r")), [A, B, C]);
    assert_eq!(r.participants_in(&room("other")), [D]);
    assert!(r.participants_in(&room("none")).is_empty());
    assert_eq!(
        r.stats(),
        RouterStats {
            rooms: 2,
            participants: 4,
            tracks: 1,
            subscriptions: 2
        }
    );
}

#[test]
fn audio_flows_from_the_first_frame_without_keyframe_request() {
    let now = Instant::now();
    let (mut r, audio, _) = two_with_tracks(now);
    let out = drain(&mut r);
    assert_eq!(
        keyframe_requests(&out),
        vec![(A, mid("1"), None)],
        "only video asks"
    );
    assert_eq!(targets(&mut r, audio, None, false, now), vec![B]);
    assert_eq!(
        r.on_media(audio, None, false, now),
        &[Forward {
            subscriber: B,
            out_mid: mid("a0")
        }]
    );
}

#[test]
fn nothing_is_forwarded_before_negotiation_completes() {
    let now = Instant::now();
    let mut r = Router::new(Limits::default());
    r.join(room("r"), A).unwrap();
    r.join(room("r"), B).unwrap();
    let video = r
        .publish(A, mid("1"), MediaKind::Video, TrackSource::Camera, vec![])
        .unwrap();
    assert!(targets(&mut r, video, None, true, now).is_empty());
    assert!(keyframe_requests(&drain(&mut r)).is_empty());
}

#[test]
fn video_waits_for_a_keyframe() {
    let now = Instant::now();
    let (mut r, _, video) = two_with_tracks(now);
    drain(&mut r);
    assert_eq!(
        r.subscription_state(B, video),
        Some(SubscriptionState::WaitingKeyframe { target: None })
    );
    assert!(
        targets(&mut r, video, None, false, now).is_empty(),
        "delta dropped"
    );
    assert_eq!(
        targets(&mut r, video, None, true, now),
        vec![B],
        "keyframe starts"
    );
    assert_eq!(
        targets(&mut r, video, None, false, now),
        vec![B],
        "then deltas flow"
    );
    assert_eq!(
        r.subscription_state(B, video),
        Some(SubscriptionState::Forwarding {
            current: None,
            target: None
        })
    );
}

#[test]
fn late_joiner_gates_alone_and_triggers_a_pli() {
    let t0 = Instant::now();
    let (mut r, _, video) = two_with_tracks(t0);
    drain(&mut r);
    assert_eq!(targets(&mut r, video, None, true, t0), vec![B]);

    // C joins 2 s later; its subscription waits while B keeps receiving deltas.
    let t1 = t0 + Duration::from_secs(2);
    r.join(room("r"), C).unwrap();
    drain(&mut r);
    r.subscription_ready(C, video, mid("c1"), t1).unwrap();
    assert_eq!(keyframe_requests(&drain(&mut r)), vec![(A, mid("1"), None)]);
    assert_eq!(targets(&mut r, video, None, false, t1), vec![B]);
    assert_eq!(targets(&mut r, video, None, true, t1), vec![B, C]);
    assert_eq!(targets(&mut r, video, None, false, t1), vec![B, C]);
}

#[test]
fn keyframe_requests_are_rate_limited_and_retried() {
    let t0 = Instant::now();
    let interval = Limits::default().keyframe_request_interval;
    let (mut r, _, video) = two_with_tracks(t0);
    assert_eq!(keyframe_requests(&drain(&mut r)).len(), 1);

    // A second subscriber and a subscriber PLI within the interval: suppressed.
    r.join(room("r"), C).unwrap();
    r.subscription_ready(C, video, mid("c1"), t0 + interval / 4)
        .unwrap();
    r.on_subscriber_keyframe_request(B, mid("a1"), t0 + interval / 2);
    assert!(keyframe_requests(&drain(&mut r)).is_empty());

    // Nothing arrived: retried when the interval is over, once.
    assert_eq!(r.poll_timeout(), Some(t0 + interval));
    r.handle_timeout(t0 + interval / 2);
    assert!(keyframe_requests(&drain(&mut r)).is_empty(), "too early");
    r.handle_timeout(t0 + interval);
    assert_eq!(keyframe_requests(&drain(&mut r)), vec![(A, mid("1"), None)]);

    // The keyframe arrives: no more retries.
    targets(&mut r, video, None, true, t0 + interval);
    r.handle_timeout(t0 + interval * 2);
    assert!(keyframe_requests(&drain(&mut r)).is_empty());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn subscriber_pli_reaches_the_publisher() {
    let t0 = Instant::now();
    let (mut r, _, video) = two_with_tracks(t0);
    drain(&mut r);
    targets(&mut r, video, None, true, t0);
    let later = t0 + Duration::from_secs(5);
    r.on_subscriber_keyframe_request(B, mid("a1"), later);
    assert_eq!(keyframe_requests(&drain(&mut r)), vec![(A, mid("1"), None)]);
    // Unknown m-lines are ignored.
    r.on_subscriber_keyframe_request(B, mid("zz"), later + Duration::from_secs(5));
    assert!(drain(&mut r).is_empty());
}

#[test]
fn simulcast_starts_on_the_first_keyframe_and_switches_at_the_targets() {
    let t0 = Instant::now();
    let mut r = Router::new(Limits::default());
    r.join(room("r"), A).unwrap();
    r.join(room("r"), B).unwrap();
    let layers = vec![rid("h"), rid("m"), rid("l")];
    let video = r
        .publish(
            A,
            mid("1"),
            MediaKind::Video,
            TrackSource::Camera,
            layers.clone(),
        )
        .unwrap();
    assert_eq!(r.track(video).unwrap().layers, layers);
    drain(&mut r);
    r.subscription_ready(B, video, mid("b1"), t0).unwrap();
    // Every layer is asked for a keyframe: whichever comes first starts the stream.
    assert_eq!(
        keyframe_requests(&drain(&mut r)),
        vec![
            (A, mid("1"), Some(rid("h"))),
            (A, mid("1"), Some(rid("m"))),
            (A, mid("1"), Some(rid("l")))
        ]
    );

    // Nothing before a keyframe; the first one (l's here) starts the stream, and the target
    // (h) takes over at its own keyframe.
    assert!(targets(&mut r, video, Some(rid("m")), false, t0).is_empty());
    assert_eq!(targets(&mut r, video, Some(rid("l")), true, t0), vec![B]);
    assert_eq!(targets(&mut r, video, Some(rid("l")), false, t0), vec![B]);
    assert!(targets(&mut r, video, Some(rid("h")), false, t0).is_empty());
    assert_eq!(targets(&mut r, video, Some(rid("h")), true, t0), vec![B]);
    assert!(
        targets(&mut r, video, Some(rid("l")), false, t0).is_empty(),
        "left l"
    );
    assert!(targets(&mut r, video, Some(rid("m")), true, t0).is_empty());

    // Switch to "l": "h" keeps flowing until an "l" keyframe, which is requested.
    let t1 = t0 + Duration::from_secs(1);
    r.select_layer(B, video, rid("l"), t1).unwrap();
    assert_eq!(
        keyframe_requests(&drain(&mut r)),
        vec![(A, mid("1"), Some(rid("l")))],
    );
    assert_eq!(targets(&mut r, video, Some(rid("h")), false, t1), vec![B]);
    assert!(targets(&mut r, video, Some(rid("l")), false, t1).is_empty());
    assert_eq!(targets(&mut r, video, Some(rid("l")), true, t1), vec![B]);
    assert!(
        targets(&mut r, video, Some(rid("h")), false, t1).is_empty(),
        "old layer stops"
    );
    assert_eq!(targets(&mut r, video, Some(rid("l")), false, t1), vec![B]);
    assert_eq!(
        r.subscription_state(B, video),
        Some(SubscriptionState::Forwarding {
            current: Some(rid("l")),
            target: Some(rid("l"))
        })
    );

    assert_eq!(
        r.select_layer(B, video, rid("x"), t0),
        Err(RouteError::UnknownLayer(video, rid("x")))
    );
}

#[test]
fn leave_removes_tracks_and_subscriptions_everywhere() {
    let t0 = Instant::now();
    let (mut r, audio, video) = two_with_tracks(t0);
    r.join(room("r"), C).unwrap();
    let c_track = r
        .publish(
            C,
            mid("0"),
            MediaKind::Audio,
            TrackSource::Microphone,
            vec![],
        )
        .unwrap();
    r.subscription_ready(C, video, mid("c1"), t0).unwrap();
    r.subscription_ready(A, c_track, mid("x"), t0).unwrap();
    drain(&mut r);

    r.leave(A).unwrap();
    assert_eq!(r.participants_in(&room("r")), [B, C]);
    let out = drain(&mut r);
    let unsubscribed: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            RouterOutput::Unsubscribe {
                subscriber,
                track,
                out_mid,
            } => Some((*subscriber, *track, *out_mid)),
            _ => None,
        })
        .collect();
    assert!(unsubscribed.contains(&(B, audio, Some(mid("a0")))));
    assert!(unsubscribed.contains(&(B, video, Some(mid("a1")))));
    assert!(unsubscribed.contains(&(C, audio, None)));
    assert!(unsubscribed.contains(&(C, video, Some(mid("c1")))));
    assert_eq!(unsubscribed.len(), 4);
    assert!(out.contains(&RouterOutput::TrackUnpublished {
        track: video,
        publisher: A
    }));
    assert_eq!(r.track_by_mid(A, mid("1")), None);
    assert_eq!(r.track_by_out_mid(B, mid("a1")), None);
    assert_eq!(r.track_by_out_mid(A, mid("x")), None);
    assert_eq!(
        r.subscription_state(A, c_track),
        None,
        "A's own subscriptions go too"
    );
    assert!(r.on_media(video, None, true, t0).is_empty());
    assert_eq!(
        r.stats(),
        RouterStats {
            rooms: 1,
            participants: 2,
            tracks: 1,
            subscriptions: 1
        }
    );

    r.leave(B).unwrap();
    r.leave(C).unwrap();
    assert_eq!(r.stats(), RouterStats::default(), "empty room removed");
    assert_eq!(r.leave(C), Err(RouteError::UnknownParticipant(C)));
}

#[test]
fn unpublish_stops_subscriptions() {
    let t0 = Instant::now();
    let (mut r, audio, _) = two_with_tracks(t0);
    drain(&mut r);
    r.unpublish(audio).unwrap();
    let out = drain(&mut r);
    assert_eq!(
        out,
        vec![
            RouterOutput::Unsubscribe {
                subscriber: B,
                track: audio,
                out_mid: Some(mid("a0"))
            },
            RouterOutput::TrackUnpublished {
                track: audio,
                publisher: A
            }
        ]
    );
    assert_eq!(r.published_by(A).len(), 1);
    assert_eq!(r.unpublish(audio), Err(RouteError::UnknownTrack(audio)));
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        max_rooms: 1,
        max_participants_per_room: 2,
        max_tracks_per_participant: 1,
        ..Limits::default()
    };
    let mut r = Router::new(limits);
    r.join(room("r"), A).unwrap();
    assert_eq!(r.join(room("r"), A), Err(RouteError::AlreadyJoined(A)));
    r.join(room("r"), B).unwrap();
    assert_eq!(r.join(room("r"), C), Err(RouteError::RoomFull(room("r"))));
    assert_eq!(r.join(room("s"), C), Err(RouteError::TooManyRooms));
    r.publish(
        A,
        mid("0"),
        MediaKind::Audio,
        TrackSource::Microphone,
        vec![],
    )
    .unwrap();
    assert_eq!(
        r.publish(
            A,
            mid("0"),
            MediaKind::Audio,
            TrackSource::Microphone,
            vec![]
        ),
        Err(RouteError::DuplicateTrack(mid("0")))
    );
    assert_eq!(
        r.publish(A, mid("1"), MediaKind::Video, TrackSource::Camera, vec![]),
        Err(RouteError::TooManyTracks(A))
    );
    assert_eq!(
        r.publish(
            C,
            mid("0"),
            MediaKind::Audio,
            TrackSource::Microphone,
            vec![]
        ),
        Err(RouteError::UnknownParticipant(C))
    );
    // A failed join leaves nothing behind.
    assert_eq!(r.stats().participants, 2);
    assert_eq!(r.stats().rooms, 1);
}

#[test]
fn worker_wide_participant_limit() {
    let mut r = Router::new(Limits {
        max_participants: 2,
        ..Limits::default()
    });
    r.join(room("r"), A).unwrap();
    r.join(room("s"), B).unwrap();
    assert_eq!(r.join(room("t"), C), Err(RouteError::TooManyParticipants));
    r.leave(A).unwrap();
    r.join(room("t"), C).unwrap();
}

#[test]
fn source_can_be_changed() {
    let now = Instant::now();
    let (mut r, _, video) = two_with_tracks(now);
    r.set_source(video, TrackSource::ScreenShare).unwrap();
    assert_eq!(r.track(video).unwrap().source, TrackSource::ScreenShare);
    assert_eq!(r.room_of(A), Some(&room("r")));
}

#[test]
fn media_gap_asks_for_a_keyframe_once_per_interval() {
    let t0 = Instant::now();
    let (mut r, _, video) = two_with_tracks(t0);
    drain(&mut r);
    let t1 = t0 + Duration::from_secs(3);
    r.on_media_gap(video, None, t1);
    r.on_media_gap(video, None, t1 + Duration::from_millis(10));
    assert_eq!(keyframe_requests(&drain(&mut r)).len(), 1);
}

#[test]
fn paused_subscription_gets_nothing_and_resumes_at_a_keyframe() {
    let t0 = Instant::now();
    let interval = Limits::default().keyframe_request_interval;
    let (mut r, audio, video) = two_with_tracks(t0);
    drain(&mut r);
    assert_eq!(targets(&mut r, video, None, true, t0), vec![B]);

    r.set_receiving(B, video, false, t0).unwrap();
    r.set_receiving(B, audio, false, t0).unwrap();
    assert_eq!(
        r.subscription_state(B, video),
        Some(SubscriptionState::Paused)
    );
    assert!(targets(&mut r, video, None, true, t0).is_empty());
    assert!(targets(&mut r, audio, None, false, t0).is_empty());
    assert!(drain(&mut r).is_empty(), "pausing asks for nothing");
    r.handle_timeout(t0 + interval * 3);
    assert!(
        keyframe_requests(&drain(&mut r)).is_empty(),
        "no retries while paused"
    );

    let t1 = t0 + Duration::from_secs(2);
    r.set_receiving(B, video, true, t1).unwrap();
    r.set_receiving(B, audio, true, t1).unwrap();
    assert_eq!(keyframe_requests(&drain(&mut r)), vec![(A, mid("1"), None)]);
    assert!(
        targets(&mut r, video, None, false, t1).is_empty(),
        "waits for a keyframe"
    );
    assert_eq!(targets(&mut r, video, None, true, t1), vec![B]);
    assert_eq!(targets(&mut r, audio, None, false, t1), vec![B]);
    // Idempotent.
    r.set_receiving(B, video, true, t1).unwrap();
    assert!(drain(&mut r).is_empty());
    assert_eq!(
        r.set_receiving(C, video, true, t1),
        Err(RouteError::NotSubscribed(C, video))
    );
}

// ---- quality: layers from bandwidth and tile size, dominant speaker ---------------------

const FRAME: Duration = Duration::from_micros(33_333);
const MS: Duration = Duration::from_millis(1);

/// Three simulcast layers with realistic rates.
const LADDER: [(&str, u64); 3] = [("q", 150_000), ("h", 500_000), ("f", 1_500_000)];

/// The layer `subscriber` wants of `track` (`None` also while paused).
fn target(r: &Router, subscriber: ParticipantId, track: TrackId) -> Option<Rid> {
    match r.subscription_state(subscriber, track) {
        Some(SubscriptionState::WaitingKeyframe { target })
        | Some(SubscriptionState::Forwarding { target, .. }) => target,
        _ => None,
    }
}

/// The layer `subscriber` is forwarded of `track`, if any.
fn current(r: &Router, subscriber: ParticipantId, track: TrackId) -> Option<Rid> {
    match r.subscription_state(subscriber, track) {
        Some(SubscriptionState::Forwarding { current, .. }) => current,
        _ => None,
    }
}

/// A publisher's stream: a layer of a track and its bit/s.
type Stream = (TrackId, Option<Rid>, u64);

/// Runs `d` of media at 30 frames/s per stream with the router's timers. A stream's frame is
/// a keyframe when the router asked for one of its layer since the last frame, as a browser
/// would answer a PLI. Returns every output, and each change of `watch`'s layers as (target,
/// current) pairs.
struct Media {
    now: Instant,
    watch: TrackId,
    asked: Vec<(TrackId, Option<Rid>)>,
    outputs: Vec<RouterOutput>,
    changes: Vec<(Option<Rid>, Option<Rid>)>,
}

impl Media {
    fn new(now: Instant, watch: TrackId) -> Self {
        Media {
            now,
            watch,
            asked: Vec::new(),
            outputs: Vec::new(),
            changes: Vec::new(),
        }
    }

    fn collect(&mut self, r: &mut Router) {
        for o in drain(r) {
            if let RouterOutput::RequestKeyframe {
                publisher,
                mid,
                rid,
            } = &o
                && let Some(track) = r.track_by_mid(*publisher, *mid)
            {
                self.asked.push((track, *rid));
            }
            self.outputs.push(o);
        }
    }

    fn record(&mut self, r: &Router) {
        let state = (target(r, B, self.watch), current(r, B, self.watch));
        if self.changes.last() != Some(&state) {
            self.changes.push(state);
        }
    }

    fn run(&mut self, r: &mut Router, streams: &[Stream], d: Duration) {
        let end = self.now + d;
        self.collect(r);
        while self.now < end {
            self.now += FRAME;
            r.handle_timeout(self.now);
            self.collect(r);
            for &(track, layer, bps) in streams {
                let key = self.asked.contains(&(track, layer));
                self.asked.retain(|&a| a != (track, layer));
                r.measure(track, layer, (bps / 8 / 30) as usize, self.now);
                r.on_media(track, layer, key, self.now);
            }
            self.collect(r);
            self.record(r);
        }
    }

    fn estimate(&mut self, r: &mut Router, bps: u64) {
        r.set_estimate(B, bps, self.now);
        self.collect(r);
        self.record(r);
    }

    fn bitrate_hints(&self) -> Vec<(u64, u64)> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                RouterOutput::SetBitrate {
                    subscriber: B,
                    minimum,
                    desired,
                } => Some((*minimum, *desired)),
                _ => None,
            })
            .collect()
    }
}

/// A in room "r" publishes simulcast video with `ladder`; B receives it from `now`.
fn simulcast(ladder: &[(&str, u64)], now: Instant) -> (Router, TrackId, Vec<Stream>) {
    let mut r = Router::new(Limits::default());
    r.join(room("r"), A).unwrap();
    r.join(room("r"), B).unwrap();
    let layers = ladder.iter().map(|(l, _)| rid(l)).collect();
    let video = r
        .publish(A, mid("1"), MediaKind::Video, TrackSource::Camera, layers)
        .unwrap();
    r.subscription_ready(B, video, mid("b1"), now).unwrap();
    let streams = ladder
        .iter()
        .map(|&(l, bps)| (video, Some(rid(l)), bps))
        .collect();
    (r, video, streams)
}

#[test]
fn a_falling_estimate_lowers_the_layer_at_its_next_keyframe() {
    let t0 = Instant::now();
    let (mut r, video, streams) = simulcast(&LADDER, t0);
    let mut m = Media::new(t0, video);
    m.estimate(&mut r, 3_000_000);
    // Before the layers are measured B gets the first listed layer; then the best that fits.
    m.run(&mut r, &streams, Duration::from_millis(500));
    assert_eq!(current(&r, B, video), Some(rid("q")));
    m.run(&mut r, &streams, Duration::from_secs(2));
    assert_eq!(current(&r, B, video), Some(rid("f")));

    m.outputs.clear();
    m.estimate(&mut r, 800_000);
    assert_eq!(target(&r, B, video), Some(rid("h")), "down at once");
    assert_eq!(current(&r, B, video), Some(rid("f")), "until h's keyframe");
    assert_eq!(
        keyframe_requests(&m.outputs),
        vec![(A, mid("1"), Some(rid("h")))]
    );
    m.run(&mut r, &streams, FRAME);
    assert_eq!(current(&r, B, video), Some(rid("h")));
    assert_eq!(
        m.changes[m.changes.len() - 2..],
        [
            (Some(rid("h")), Some(rid("f"))),
            (Some(rid("h")), Some(rid("h")))
        ]
    );

    // Far too little for anything: the lowest layer all the same.
    m.estimate(&mut r, 50_000);
    m.run(&mut r, &streams, MS * 100);
    assert_eq!(current(&r, B, video), Some(rid("q")));
}

#[test]
fn a_recovered_estimate_raises_the_layer_after_the_hold_time() {
    let t0 = Instant::now();
    let hold = Quality::default().layer_up_hold;
    let (mut r, video, streams) = simulcast(&LADDER, t0);
    let mut m = Media::new(t0, video);
    m.estimate(&mut r, 3_000_000);
    m.run(&mut r, &streams, Duration::from_secs(2));
    m.estimate(&mut r, 800_000);
    m.run(&mut r, &streams, MS * 200);
    assert_eq!(current(&r, B, video), Some(rid("h")));

    // Back up: reported every 250 ms, but h is kept until the low estimate is 3 s old.
    let recovered = m.now;
    while m.now < recovered + hold - MS * 300 {
        m.estimate(&mut r, 3_000_000);
        m.run(&mut r, &streams, MS * 250);
        assert_eq!(
            target(&r, B, video),
            Some(rid("h")),
            "at {:?}",
            m.now - recovered
        );
    }
    m.estimate(&mut r, 3_000_000);
    m.run(&mut r, &streams, MS * 600);
    assert_eq!(target(&r, B, video), Some(rid("f")));
    assert_eq!(
        current(&r, B, video),
        Some(rid("f")),
        "switched at f's keyframe"
    );
}

#[test]
fn an_estimate_hovering_around_a_layer_does_not_flap() {
    let t0 = Instant::now();
    let (mut r, video, streams) = simulcast(&LADDER, t0);
    let mut m = Media::new(t0, video);
    m.estimate(&mut r, 3_000_000);
    m.run(&mut r, &streams, Duration::from_secs(2));
    assert_eq!(current(&r, B, video), Some(rid("f")));

    // f needs about 1.5 Mbit/s; the estimate swings across it every 400 ms for 10 s.
    m.changes.clear();
    m.record(&r);
    for i in 0..25 {
        let bps = if i % 2 == 0 { 1_300_000 } else { 1_700_000 };
        m.estimate(&mut r, bps);
        m.run(&mut r, &streams, MS * 400);
    }
    let targets: Vec<_> = m.changes.iter().map(|&(t, _)| t).collect::<Vec<_>>();
    let mut switches = targets.clone();
    switches.dedup();
    assert_eq!(
        switches,
        vec![Some(rid("f")), Some(rid("h"))],
        "one step down, never back up: {:?}",
        m.changes
    );
}

#[test]
fn the_estimate_is_shared_audio_first_then_spread_screen_share_first() {
    let t0 = Instant::now();
    let mut r = Router::new(Limits::default());
    r.join(room("r"), A).unwrap();
    r.join(room("r"), B).unwrap();
    r.join(room("r"), C).unwrap();
    let layers: Vec<Rid> = LADDER.iter().map(|(l, _)| rid(l)).collect();
    let camera = r
        .publish(
            A,
            mid("1"),
            MediaKind::Video,
            TrackSource::Camera,
            layers.clone(),
        )
        .unwrap();
    let audio = r
        .publish(
            A,
            mid("0"),
            MediaKind::Audio,
            TrackSource::Microphone,
            vec![],
        )
        .unwrap();
    let screen = r
        .publish(
            C,
            mid("2"),
            MediaKind::Video,
            TrackSource::ScreenShare,
            layers,
        )
        .unwrap();
    r.subscription_ready(B, camera, mid("b1"), t0).unwrap();
    r.subscription_ready(B, audio, mid("b0"), t0).unwrap();
    r.subscription_ready(B, screen, mid("b2"), t0).unwrap();
    let mut streams: Vec<Stream> = vec![(audio, None, 64_000)];
    for track in [camera, screen] {
        streams.extend(LADDER.iter().map(|&(l, bps)| (track, Some(rid(l)), bps)));
    }
    let mut m = Media::new(t0, camera);
    m.run(&mut r, &streams, Duration::from_secs(2));

    // 1.7 Mbit/s: both on h (about 1.1 with audio) rather than one on f and one on q.
    m.estimate(&mut r, 1_700_000);
    assert_eq!(target(&r, B, camera), Some(rid("h")));
    assert_eq!(target(&r, B, screen), Some(rid("h")));

    // Enough for one f: the screen share gets it.
    m.estimate(&mut r, 2_400_000);
    m.run(&mut r, &streams, Duration::from_secs(4));
    assert_eq!(target(&r, B, screen), Some(rid("f")));
    assert_eq!(target(&r, B, camera), Some(rid("h")));

    // Audio comes off the top: what f alone needs is not enough once audio is counted.
    let mut r2 = Router::new(Limits::default());
    r2.join(room("r"), A).unwrap();
    r2.join(room("r"), B).unwrap();
    let layers: Vec<Rid> = LADDER.iter().map(|(l, _)| rid(l)).collect();
    let video = r2
        .publish(A, mid("1"), MediaKind::Video, TrackSource::Camera, layers)
        .unwrap();
    let audio = r2
        .publish(
            A,
            mid("0"),
            MediaKind::Audio,
            TrackSource::Microphone,
            vec![],
        )
        .unwrap();
    r2.subscription_ready(B, video, mid("b1"), t0).unwrap();
    r2.subscription_ready(B, audio, mid("b0"), t0).unwrap();
    let mut streams: Vec<Stream> = vec![(audio, None, 200_000)];
    streams.extend(LADDER.iter().map(|&(l, bps)| (video, Some(rid(l)), bps)));
    let mut m = Media::new(t0, video);
    m.run(&mut r2, &streams, Duration::from_secs(2));
    m.estimate(&mut r2, 1_650_000);
    assert_eq!(target(&r2, B, video), Some(rid("h")));
}

#[test]
fn select_layer_is_a_cap() {
    let t0 = Instant::now();
    let (mut r, video, streams) = simulcast(&LADDER, t0);
    let mut m = Media::new(t0, video);
    m.estimate(&mut r, 10_000_000);
    m.run(&mut r, &streams, Duration::from_secs(2));
    assert_eq!(current(&r, B, video), Some(rid("f")));

    r.select_layer(B, video, rid("h"), m.now).unwrap();
    m.run(&mut r, &streams, MS * 100);
    assert_eq!(current(&r, B, video), Some(rid("h")));
    m.run(&mut r, &streams, Duration::from_secs(4));
    assert_eq!(
        current(&r, B, video),
        Some(rid("h")),
        "plenty of bandwidth, still h"
    );

    // Below the cap when the estimate says so, and back to the cap, not above.
    m.estimate(&mut r, 400_000);
    assert_eq!(target(&r, B, video), Some(rid("q")));
    m.estimate(&mut r, 10_000_000);
    m.run(&mut r, &streams, Duration::from_secs(4));
    assert_eq!(target(&r, B, video), Some(rid("h")));

    // Lifting the cap: selecting the top layer.
    r.select_layer(B, video, rid("f"), m.now).unwrap();
    assert_eq!(target(&r, B, video), Some(rid("f")));
}

#[test]
fn the_tile_size_caps_the_layer_and_zero_hides_the_track() {
    let t0 = Instant::now();
    let (mut r, video, streams) = simulcast(&LADDER, t0);
    let mut m = Media::new(t0, video);
    m.run(&mut r, &streams, MS * 100);
    r.on_video_size(video, Some(rid("q")), 320, 180);
    r.on_video_size(video, Some(rid("h")), 640, 360);
    r.on_video_size(video, Some(rid("f")), 1280, 720);
    m.run(&mut r, &streams, Duration::from_secs(2));
    assert_eq!(
        current(&r, B, video),
        Some(rid("f")),
        "no estimate, no tile: the best"
    );

    for ((w, h), layer) in [
        ((320, 180), "q"),
        ((400, 225), "h"),
        ((640, 360), "h"),
        ((1920, 1080), "f"),
        ((160, 90), "q"),
    ] {
        r.set_max_resolution(B, video, w, h, m.now).unwrap();
        m.run(&mut r, &streams, MS * 100);
        assert_eq!(current(&r, B, video), Some(rid(layer)), "{w}x{h}");
    }

    // 0×0 hides it: nothing forwarded, no keyframe requests; a size brings it back.
    r.set_max_resolution(B, video, 0, 0, m.now).unwrap();
    assert_eq!(
        r.subscription_state(B, video),
        Some(SubscriptionState::Paused)
    );
    m.outputs.clear();
    m.run(&mut r, &streams, Duration::from_secs(1));
    assert!(keyframe_requests(&m.outputs).is_empty());
    assert!(r.on_media(video, Some(rid("q")), true, m.now).is_empty());
    r.set_receiving(B, video, true, m.now).unwrap();
    assert_eq!(
        r.subscription_state(B, video),
        Some(SubscriptionState::Paused),
        "set_receiving does not undo a hidden tile"
    );
    m.outputs.clear();
    r.set_max_resolution(B, video, 640, 360, m.now).unwrap();
    m.collect(&mut r);
    assert_eq!(
        keyframe_requests(&m.outputs),
        vec![(A, mid("1"), Some(rid("h")))]
    );
    m.run(&mut r, &streams, MS * 100);
    assert_eq!(current(&r, B, video), Some(rid("h")));

    assert_eq!(
        r.set_max_resolution(C, video, 1, 1, m.now),
        Err(RouteError::NotSubscribed(C, video))
    );
}

#[test]
fn without_announced_sizes_layers_are_taken_as_quarter_half_and_full_hd() {
    let t0 = Instant::now();
    let (mut r, video, streams) = simulcast(&LADDER, t0);
    let mut m = Media::new(t0, video);
    m.run(&mut r, &streams, Duration::from_secs(2));
    // The top is taken as 1280×720: h is 640×360, q 320×180.
    r.set_max_resolution(B, video, 640, 360, m.now).unwrap();
    assert_eq!(target(&r, B, video), Some(rid("h")));
    r.set_max_resolution(B, video, 641, 360, m.now).unwrap();
    assert_eq!(target(&r, B, video), Some(rid("f")));
    r.set_max_resolution(B, video, 300, 170, m.now).unwrap();
    assert_eq!(target(&r, B, video), Some(rid("q")));
}

#[test]
fn congestion_control_is_told_what_the_next_and_the_best_layers_need() {
    let t0 = Instant::now();
    let (mut r, video, streams) = simulcast(&LADDER, t0);
    let mut m = Media::new(t0, video);
    m.run(&mut r, &streams, Duration::from_secs(2));
    assert!(
        m.bitrate_hints().is_empty(),
        "no estimate yet: nothing to tell"
    );
    m.estimate(&mut r, 800_000);
    let &(minimum, desired) = m.bitrate_hints().last().unwrap();
    // On h (~0.5 Mbit/s): the next layer is f, the best is f (~1.5 Mbit/s).
    assert!((1_400_000..=1_800_000).contains(&desired), "{desired}");
    assert_eq!(minimum, desired);
    // Capped at h by the tile: nothing more to probe for.
    r.set_max_resolution(B, video, 640, 360, m.now).unwrap();
    m.collect(&mut r);
    let &(minimum, desired) = m.bitrate_hints().last().unwrap();
    assert!((450_000..=600_000).contains(&desired), "{desired}");
    assert_eq!(minimum, desired);
    // Unchanged rates: no repeated hints.
    let before = m.bitrate_hints().len();
    m.run(&mut r, &streams, Duration::from_secs(1));
    assert_eq!(m.bitrate_hints().len(), before);
    // Every tile hidden: no more padding or probing for video.
    r.set_max_resolution(B, video, 0, 0, m.now).unwrap();
    m.run(&mut r, &streams, MS * 300);
    assert_eq!(m.bitrate_hints().last(), Some(&(0, 0)));
}

#[test]
fn a_layer_that_stops_is_replaced_by_one_that_flows() {
    let t0 = Instant::now();
    let (mut r, video, streams) = simulcast(&LADDER, t0);
    let mut m = Media::new(t0, video);
    m.run(&mut r, &streams, Duration::from_secs(2));
    assert_eq!(current(&r, B, video), Some(rid("f")));
    // The browser stops sending f (its own uplink is short).
    m.run(&mut r, &streams[..2], Duration::from_millis(1500));
    assert_eq!(current(&r, B, video), Some(rid("h")));
}

/// A, B and C in room "r", each publishing a microphone.
fn three_speakers() -> (Router, [TrackId; 3]) {
    let mut r = Router::new(Limits::default());
    let mut mics = Vec::new();
    for p in [A, B, C] {
        r.join(room("r"), p).unwrap();
    }
    for p in [A, B, C] {
        mics.push(
            r.publish(
                p,
                mid("0"),
                MediaKind::Audio,
                TrackSource::Microphone,
                vec![],
            )
            .unwrap(),
        );
    }
    drain(&mut r);
    (r, [mics[0], mics[1], mics[2]])
}

/// Feeds `d` of 20 ms audio packets with these levels (None: no packets) and returns the
/// dominant speaker changes.
fn speak(
    r: &mut Router,
    mics: &[TrackId; 3],
    levels: [Option<u8>; 3],
    now: &mut Instant,
    d: Duration,
) -> Vec<ParticipantId> {
    let end = *now + d;
    let mut changes = Vec::new();
    while *now < end {
        *now += MS * 20;
        for (mic, level) in mics.iter().zip(levels) {
            if let Some(level) = level {
                r.on_audio_level(*mic, level, *now);
            }
        }
        r.handle_timeout(*now);
        for o in drain(r) {
            if let RouterOutput::DominantSpeaker {
                room: rm,
                participant,
            } = o
            {
                assert_eq!(rm, room("r"));
                changes.push(participant);
            }
        }
    }
    changes
}

#[test]
fn the_loudest_speaker_becomes_dominant_after_leading_for_a_second() {
    let mut now = Instant::now();
    let (mut r, mics) = three_speakers();
    let silence = Some(127);

    // A speaks, B murmurs below the speaking level, C sends no levels.
    let changes = speak(
        &mut r,
        &mics,
        [Some(30), Some(70), None],
        &mut now,
        MS * 900,
    );
    assert!(changes.is_empty(), "not yet a second");
    assert!(r.audio_level(A, now).unwrap() <= 35);
    assert_eq!(r.audio_level(C, now), None);
    let changes = speak(
        &mut r,
        &mics,
        [Some(30), Some(70), None],
        &mut now,
        MS * 600,
    );
    assert_eq!(changes, vec![A]);
    assert_eq!(r.dominant_speaker(&room("r")), Some(A));

    // B interjects for half a second at a time: A stays.
    for _ in 0..3 {
        let mut changes = speak(&mut r, &mics, [silence, Some(20), None], &mut now, MS * 500);
        changes.extend(speak(
            &mut r,
            &mics,
            [Some(25), silence, None],
            &mut now,
            MS * 500,
        ));
        assert!(changes.is_empty(), "{changes:?}");
    }
    // Everyone silent: the last speaker stays dominant.
    assert!(
        speak(
            &mut r,
            &mics,
            [silence; 3],
            &mut now,
            Duration::from_secs(2)
        )
        .is_empty()
    );

    // B takes over for good.
    let changes = speak(
        &mut r,
        &mics,
        [silence, Some(20), None],
        &mut now,
        Duration::from_secs(3),
    );
    assert_eq!(changes, vec![B]);

    // The dominant speaker leaving is not an event; the next speaker takes over after a second.
    r.leave(B).unwrap();
    drain(&mut r);
    let mics2 = [mics[0], mics[2], mics[2]];
    let changes = speak(&mut r, &mics2, [Some(40), None, None], &mut now, MS * 2000);
    assert_eq!(changes, vec![A]);
}
