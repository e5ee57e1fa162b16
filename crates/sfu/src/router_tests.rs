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
fn simulcast_starts_on_the_default_layer_and_switches_at_a_keyframe() {
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
    assert_eq!(
        keyframe_requests(&drain(&mut r)),
        vec![(A, mid("1"), Some(rid("h")))]
    );

    // Only the chosen layer, from its keyframe.
    assert!(targets(&mut r, video, Some(rid("l")), true, t0).is_empty());
    assert_eq!(targets(&mut r, video, Some(rid("h")), true, t0), vec![B]);
    assert!(targets(&mut r, video, Some(rid("m")), false, t0).is_empty());

    // Switch to "l": "h" keeps flowing until an "l" keyframe, which is requested.
    r.select_layer(B, video, rid("l"), t0).unwrap();
    assert_eq!(
        keyframe_requests(&drain(&mut r)),
        vec![(A, mid("1"), Some(rid("l")))],
        "per-layer rate limit: l was never asked"
    );
    assert_eq!(targets(&mut r, video, Some(rid("h")), false, t0), vec![B]);
    assert!(targets(&mut r, video, Some(rid("l")), false, t0).is_empty());
    assert_eq!(targets(&mut r, video, Some(rid("l")), true, t0), vec![B]);
    assert!(
        targets(&mut r, video, Some(rid("h")), false, t0).is_empty(),
        "old layer stops"
    );
    assert_eq!(targets(&mut r, video, Some(rid("l")), false, t0), vec![B]);
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
