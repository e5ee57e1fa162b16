//! Whole-core tests: sequences of connections and messages with a fake clock, asserting the
//! exact outputs each client would receive.

use crate::{ConnId, Limits, MediaAction, Output, Recipients, Signaling};
use std::time::{Duration, Instant};
use switchboard_proto::{
    ClientMessage, ErrorCode, LeaveReason, MediaSource, MessageKind, Mode, ParseError, Role,
    SFU_PARTICIPANT, ServerMessage, TrackSources,
};

struct Harness {
    core: Signaling,
    now: Instant,
}

impl Harness {
    fn new(limits: Limits) -> Self {
        let now = Instant::now();
        Harness {
            core: Signaling::with_seed(limits, now, 1_700_000_000_000, 7),
            now,
        }
    }

    fn connect(&mut self, conn: ConnId) {
        self.core.connect(conn, self.now);
    }

    fn send(&mut self, conn: ConnId, msg: ClientMessage) -> Vec<Output> {
        self.core.handle(conn, msg, self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.core.poll_output()).collect()
    }

    fn advance(&mut self, by: Duration) -> Vec<Output> {
        self.now += by;
        self.core.handle_timeout(self.now);
        self.drain()
    }

    /// Joins and returns the participant id.
    fn join(&mut self, conn: ConnId, room: &str, name: &str, role: Role) -> String {
        let out = self.send(conn, join(room, name, role));
        let joined = out
            .iter()
            .find(|o| o.to == Recipients::One(conn))
            .expect("a reply to the joiner");
        match &joined.msg {
            ServerMessage::Joined { id, .. } => id.clone(),
            other => panic!("expected joined, got {other:?}"),
        }
    }
}

fn join(room: &str, name: &str, role: Role) -> ClientMessage {
    ClientMessage::Join {
        v: 1,
        room: room.into(),
        name: name.into(),
        role,
        mode: None,
        resume: None,
    }
}

fn error_code(out: &[Output]) -> ErrorCode {
    match out {
        [
            Output {
                msg: ServerMessage::Error { code, .. },
                ..
            },
        ] => *code,
        other => panic!("expected one error, got {other:?}"),
    }
}

#[test]
fn join_announces_to_others_once_and_lists_existing_members() {
    let mut h = Harness::new(Limits::default());
    for conn in 1..=3 {
        h.connect(conn);
    }
    let a = h.join(1, "room", "Ann", Role::Peer);
    let b = h.join(2, "room", "Bob", Role::Peer);
    let out = h.send(3, join("room", "Cy", Role::Peer));
    assert_eq!(out.len(), 2);
    // One serialized message fans out to both earlier members.
    assert_eq!(out[0].to, Recipients::Many(vec![1, 2]));
    assert!(
        matches!(&out[0].msg, ServerMessage::ParticipantJoined { participant } if participant.name == "Cy")
    );
    match &out[1].msg {
        ServerMessage::Joined {
            participants,
            mode,
            resumed,
            ..
        } => {
            let ids: Vec<_> = participants.iter().map(|p| p.id.clone()).collect();
            assert_eq!(ids, [a, b]);
            assert_eq!(*mode, Mode::P2p);
            assert!(!resumed);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn relay_goes_only_to_the_addressed_member_of_the_same_room() {
    let mut h = Harness::new(Limits::default());
    for conn in 1..=3 {
        h.connect(conn);
    }
    let a = h.join(1, "r1", "Ann", Role::Peer);
    let b = h.join(2, "r1", "Bob", Role::Peer);
    let c = h.join(3, "r2", "Cy", Role::Peer);
    h.drain();
    let out = h.send(
        1,
        ClientMessage::Offer {
            to: b.clone(),
            sdp: "v=0".into(),
            tracks: None,
        },
    );
    assert_eq!(
        out,
        [Output {
            to: Recipients::One(2),
            msg: ServerMessage::Offer {
                from: a.clone(),
                sdp: "v=0".into()
            }
        }]
    );
    let out = h.send(
        1,
        ClientMessage::Offer {
            to: c,
            sdp: "v=0".into(),
            tracks: None,
        },
    );
    assert_eq!(error_code(&out), ErrorCode::UnknownParticipant);
    let out = h.send(1, ClientMessage::IceRestart { to: a });
    assert_eq!(
        error_code(&out),
        ErrorCode::UnknownParticipant,
        "not to ourselves"
    );
}

#[test]
fn room_limits_and_roles() {
    let limits = Limits {
        max_participants: 2,
        max_receivers: 1,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    for conn in 1..=6 {
        h.connect(conn);
    }
    h.join(1, "show", "Host", Role::Sender);
    h.join(2, "show", "Peer", Role::Peer);
    assert_eq!(
        error_code(&h.send(3, join("show", "P2", Role::Peer))),
        ErrorCode::RoomFull
    );
    h.join(4, "show", "Viewer", Role::Receiver);
    assert_eq!(
        error_code(&h.send(5, join("show", "V2", Role::Receiver))),
        ErrorCode::RoomFull
    );
    let view = h.core.room("show").unwrap();
    assert_eq!(view.topology, "broadcast");
    assert_eq!(view.participants.len(), 3);

    h.join(6, "solo", "S", Role::Sender);
    h.connect(7);
    assert_eq!(
        error_code(&h.send(7, join("solo", "S2", Role::Sender))),
        ErrorCode::RoleTaken
    );
}

#[test]
fn room_count_limit_and_sfu_mode() {
    let limits = Limits {
        max_rooms: 1,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    for conn in 1..=3 {
        h.connect(conn);
    }
    h.join(1, "one", "A", Role::Peer);
    assert_eq!(
        error_code(&h.send(2, join("two", "B", Role::Peer))),
        ErrorCode::ServerBusy
    );
    let sfu = ClientMessage::Join {
        v: 1,
        room: "one".into(),
        name: "C".into(),
        role: Role::Peer,
        mode: Some(Mode::Sfu),
        resume: None,
    };
    // An existing room keeps its mode; the request is not an error.
    let out = h.send(3, sfu);
    assert!(matches!(
        &out.last().unwrap().msg,
        ServerMessage::Joined {
            mode: Mode::P2p,
            ..
        }
    ));
}

#[test]
fn disconnect_waits_for_the_grace_period_then_announces() {
    let limits = Limits {
        resume_grace: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.connect(1);
    h.connect(2);
    h.join(1, "r", "Ann", Role::Peer);
    let b = h.join(2, "r", "Bob", Role::Peer);
    h.drain();
    h.core.disconnect(2, h.now);
    assert!(h.drain().is_empty());
    assert_eq!(h.core.poll_timeout(), Some(h.now + Duration::from_secs(10)));
    assert!(h.advance(Duration::from_secs(9)).is_empty());
    let out = h.advance(Duration::from_secs(1));
    assert_eq!(
        out,
        [Output {
            to: Recipients::Many(vec![1]),
            msg: ServerMessage::ParticipantLeft {
                id: b,
                reason: LeaveReason::Disconnected
            }
        }]
    );
    assert_eq!(h.core.poll_timeout(), None);
    assert!(
        !h.core
            .room("r")
            .unwrap()
            .participants
            .iter()
            .any(|p| !p.connected)
    );
}

#[test]
fn resume_within_grace_cancels_the_departure() {
    let limits = Limits {
        resume_grace: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.connect(1);
    h.connect(2);
    h.join(1, "r", "Ann", Role::Peer);
    let out = h.send(2, join("r", "Bob", Role::Peer));
    let (b, token) = match &out.last().unwrap().msg {
        ServerMessage::Joined { id, resume, .. } => (id.clone(), resume.clone()),
        other => panic!("{other:?}"),
    };
    h.core.disconnect(2, h.now);
    h.advance(Duration::from_secs(5));
    h.connect(3);
    let out = h.send(
        3,
        ClientMessage::Join {
            v: 1,
            room: "r".into(),
            name: "Bob".into(),
            role: Role::Peer,
            mode: None,
            resume: Some(token),
        },
    );
    assert!(
        matches!(&out[..], [Output { msg: ServerMessage::Joined { id, resumed: true, .. }, .. }] if *id == b)
    );
    // The old deadline passes without anyone being told anything.
    assert!(h.advance(Duration::from_secs(20)).is_empty());
    // Messages to Bob now reach the new connection.
    let out = h.send(
        1,
        ClientMessage::Offer {
            to: b,
            sdp: "v=0".into(),
            tracks: None,
        },
    );
    assert_eq!(out[0].to, Recipients::One(3));
}

#[test]
fn a_second_socket_resuming_takes_over_from_the_first() {
    let mut h = Harness::new(Limits::default());
    h.connect(1);
    let out = h.send(1, join("r", "Ann", Role::Peer));
    let token = match &out[0].msg {
        ServerMessage::Joined { resume, .. } => resume.clone(),
        other => panic!("{other:?}"),
    };
    h.connect(2);
    let out = h.send(
        2,
        ClientMessage::Join {
            v: 1,
            room: "r".into(),
            name: "Ann".into(),
            role: Role::Peer,
            mode: None,
            resume: Some(token),
        },
    );
    assert_eq!(
        out[0],
        Output {
            to: Recipients::One(1),
            msg: ServerMessage::Left
        }
    );
    assert!(matches!(
        out[1].msg,
        ServerMessage::Joined { resumed: true, .. }
    ));
    // The old socket is out of the room now.
    let out = h.send(1, ClientMessage::Leave);
    assert_eq!(error_code(&out), ErrorCode::NotInRoom);
}

#[test]
fn empty_rooms_disappear() {
    let limits = Limits {
        resume_grace: Duration::ZERO,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.connect(1);
    h.connect(2);
    h.join(1, "r", "Ann", Role::Peer);
    h.join(2, "r", "Bob", Role::Peer);
    h.send(1, ClientMessage::Leave);
    h.core.disconnect(2, h.now);
    assert!(h.core.room("r").is_none());
    assert_eq!(h.core.stats().rooms, 0);
    assert_eq!(h.core.stats().participants, 0);
}

#[test]
fn random_pairs_are_polite_on_one_side_only_and_next_requeues_both() {
    let mut h = Harness::new(Limits::default());
    for conn in 1..=3 {
        h.connect(conn);
    }
    let out = h.send(
        1,
        ClientMessage::Random {
            v: 1,
            name: "A".into(),
        },
    );
    assert_eq!(
        out,
        [Output {
            to: Recipients::One(1),
            msg: ServerMessage::Waiting
        }]
    );
    let out = h.send(
        2,
        ClientMessage::Random {
            v: 1,
            name: "B".into(),
        },
    );
    let matched: Vec<_> = out
        .iter()
        .filter_map(|o| match &o.msg {
            ServerMessage::Matched { polite, peer, .. } => {
                Some((o.to.clone(), *polite, peer.name.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        matched,
        [
            (Recipients::One(1), false, "B".to_owned()),
            (Recipients::One(2), true, "A".to_owned())
        ]
    );
    assert_eq!(h.core.rooms()[0].topology, "pair");

    h.send(
        3,
        ClientMessage::Random {
            v: 1,
            name: "C".into(),
        },
    );
    let out = h.send(1, ClientMessage::Next);
    // B (the partner) is requeued first and so matched with C, who was waiting.
    let matched_to: Vec<_> = out
        .iter()
        .filter(|o| matches!(o.msg, ServerMessage::Matched { .. }))
        .map(|o| o.to.clone())
        .collect();
    assert_eq!(matched_to, [Recipients::One(3), Recipients::One(2)]);
    assert_eq!(h.core.stats().lobby_waiting, 1, "A waits for someone new");
}

#[test]
fn random_partner_disconnect_requeues_without_stale_match() {
    let mut h = Harness::new(Limits::default());
    for conn in 1..=3 {
        h.connect(conn);
    }
    h.send(
        1,
        ClientMessage::Random {
            v: 1,
            name: "A".into(),
        },
    );
    h.send(
        2,
        ClientMessage::Random {
            v: 1,
            name: "B".into(),
        },
    );
    h.core.disconnect(2, h.now);
    let out = h.drain();
    assert_eq!(
        out,
        [
            Output {
                to: Recipients::One(1),
                msg: ServerMessage::Unmatched {
                    reason: LeaveReason::Disconnected
                }
            },
            Output {
                to: Recipients::One(1),
                msg: ServerMessage::Waiting
            },
        ]
    );
    // Random rooms have no grace period: the pair is gone at once.
    assert_eq!(h.core.stats().rooms, 0);
    let out = h.send(
        3,
        ClientMessage::Random {
            v: 1,
            name: "C".into(),
        },
    );
    assert!(
        out.iter()
            .any(|o| o.to == Recipients::One(1) && matches!(o.msg, ServerMessage::Matched { .. }))
    );
}

#[test]
fn random_rooms_cannot_be_joined_by_name() {
    let mut h = Harness::new(Limits::default());
    for conn in 1..=3 {
        h.connect(conn);
    }
    h.send(
        1,
        ClientMessage::Random {
            v: 1,
            name: "A".into(),
        },
    );
    h.send(
        2,
        ClientMessage::Random {
            v: 1,
            name: "B".into(),
        },
    );
    let room = h.core.rooms()[0].name.clone();
    assert_eq!(
        error_code(&h.send(3, join(&room, "Intruder", Role::Peer))),
        ErrorCode::RoomFull
    );
}

#[test]
fn rejected_frames_count_against_the_rate_and_are_reported() {
    let limits = Limits {
        rate_per_sec: 1,
        rate_burst: 2,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.connect(1);
    let bad = || ParseError {
        code: ErrorCode::BadJson,
        message: "nope".into(),
    };
    h.core.reject(1, bad(), h.now);
    h.core.reject(1, bad(), h.now);
    h.core.reject(1, bad(), h.now);
    h.core.reject(1, bad(), h.now);
    let codes: Vec<_> = h
        .drain()
        .into_iter()
        .map(|o| match o.msg {
            ServerMessage::Error { code, .. } => code,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            ErrorCode::BadJson,
            ErrorCode::BadJson,
            ErrorCode::RateLimited
        ]
    );
    let stats = h.core.stats();
    assert_eq!(stats.errors[ErrorCode::BadJson.index()], 2);
    assert_eq!(stats.errors[ErrorCode::RateLimited.index()], 1);
}

#[test]
fn messages_from_unknown_connections_are_ignored() {
    let mut h = Harness::new(Limits::default());
    assert!(h.send(99, ClientMessage::Ping { id: None }).is_empty());
    h.core.disconnect(99, h.now);
    assert!(h.drain().is_empty());
}

#[test]
fn admitted_connections_are_limited_by_the_driver() {
    let limits = Limits {
        rate_per_sec: 1,
        rate_burst: 1,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.core.connect_admitted(1, h.now);
    // Far over the core's own limit: the driver decided these were admitted.
    for id in 0..5 {
        let out = h.send(1, ClientMessage::Ping { id: Some(id) });
        assert_eq!(
            out,
            [Output {
                to: Recipients::One(1),
                msg: ServerMessage::Pong { id: Some(id) }
            }]
        );
    }
    h.core.rate_limited(1, h.now);
    let out = h.drain();
    assert_eq!(error_code(&out), ErrorCode::RateLimited);
    match &out[0].msg {
        ServerMessage::Error { message, .. } => assert_eq!(
            message,
            "more than 1 messages per second; messages are being dropped"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.core.stats().errors[ErrorCode::RateLimited.index()], 1);
    assert_eq!(h.core.stats().messages[MessageKind::Ping.index()], 5);
    // Unknown connections are ignored, as everywhere.
    h.core.rate_limited(99, h.now);
    assert!(h.drain().is_empty());
}

/// An owned copy of a relay route, to compare across steps.
type RouteCopy = Option<(String, Vec<(String, Option<ConnId>)>)>;

fn route_copy(core: &Signaling, conn: ConnId) -> RouteCopy {
    core.relay_route(conn).map(|route| {
        (
            route.id.to_owned(),
            route
                .peers
                .iter()
                .map(|(id, conn)| ((*id).to_owned(), *conn))
                .collect(),
        )
    })
}

/// A driver that delivers relays from copies of [`Signaling::relay_route`] must route exactly
/// as the core would, and must hear of every change: checked over a long random walk of
/// joins, leaves, disconnects, resumes, random pairs and expiring grace periods.
#[test]
fn relay_routes_predict_the_core_and_every_change_is_reported() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::{HashMap, HashSet};

    let limits = Limits {
        rate_per_sec: 0,
        max_participants: 3,
        resume_grace: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.core.track_routes();
    let mut rng = StdRng::seed_from_u64(42);
    let mut next_conn: ConnId = 1;
    let mut open: Vec<ConnId> = Vec::new();
    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut ids: Vec<String> = vec!["nobody".into()];
    let mut seen: HashMap<ConnId, RouteCopy> = HashMap::new();
    let mut delivered = 0;
    for step in 0..4000 {
        let pick = |rng: &mut StdRng, open: &[ConnId]| open[rng.gen_range(0..open.len())];
        let out = match rng.gen_range(0..12) {
            0..=2 if open.len() < 10 || open.is_empty() => {
                h.connect(next_conn);
                open.push(next_conn);
                next_conn += 1;
                Vec::new()
            }
            _ if open.is_empty() => Vec::new(),
            0..=3 => {
                let conn = pick(&mut rng, &open);
                let room = format!("r{}", rng.gen_range(0..3));
                h.send(conn, join(&room, "N", Role::Peer))
            }
            4 => h.send(pick(&mut rng, &open), ClientMessage::Leave),
            5 | 6 => {
                let conn = pick(&mut rng, &open);
                open.retain(|&c| c != conn);
                h.core.disconnect(conn, h.now);
                h.drain()
            }
            7 if !tokens.is_empty() => {
                let (room, token) = tokens[rng.gen_range(0..tokens.len())].clone();
                let msg = ClientMessage::Join {
                    v: 1,
                    room,
                    name: "N".into(),
                    role: Role::Peer,
                    mode: None,
                    resume: Some(token),
                };
                h.send(pick(&mut rng, &open), msg)
            }
            8 => h.send(
                pick(&mut rng, &open),
                ClientMessage::Random {
                    v: 1,
                    name: "R".into(),
                },
            ),
            9 => h.send(pick(&mut rng, &open), ClientMessage::Next),
            _ => h.advance(Duration::from_secs(2)),
        };
        for o in &out {
            match &o.msg {
                ServerMessage::Joined {
                    id, resume, room, ..
                } => {
                    ids.push(id.clone());
                    tokens.push((room.clone(), resume.clone()));
                }
                ServerMessage::Matched { id, .. } => ids.push(id.clone()),
                _ => {}
            }
        }

        let changed: HashSet<ConnId> = h.core.take_route_changes().into_iter().collect();
        for conn in 1..next_conn {
            let now = route_copy(&h.core, conn);
            let before = seen.insert(conn, now.clone()).flatten();
            assert!(
                before == now || changed.contains(&conn),
                "step {step}: the route of {conn} changed unreported: {before:?} -> {now:?}"
            );
        }

        for &conn in &open {
            let route = route_copy(&h.core, conn);
            for to in ids.iter().rev().take(12) {
                let out = h.send(
                    conn,
                    ClientMessage::Candidate {
                        to: to.clone(),
                        candidate: None,
                    },
                );
                let Some((from, peers)) = &route else {
                    assert!(
                        out.iter()
                            .all(|o| matches!(o.msg, ServerMessage::Error { .. })),
                        "step {step}: {conn} has no route but relayed: {out:?}"
                    );
                    continue;
                };
                match peers.iter().find(|(id, _)| id == to) {
                    Some((_, Some(target))) => {
                        delivered += 1;
                        assert_eq!(
                            out,
                            [Output {
                                to: Recipients::One(*target),
                                msg: ServerMessage::Candidate {
                                    from: from.clone(),
                                    candidate: None
                                }
                            }],
                            "step {step}"
                        );
                    }
                    Some((_, None)) => assert!(out.is_empty(), "step {step}: {out:?}"),
                    None => assert_eq!(
                        error_code(&out),
                        ErrorCode::UnknownParticipant,
                        "step {step}"
                    ),
                }
            }
        }
        assert!(
            h.core.take_route_changes().is_empty(),
            "relaying changes no route"
        );
    }
    assert!(delivered > 1000, "the walk exercised relays ({delivered})");
}

fn join_sfu(room: &str, name: &str) -> ClientMessage {
    ClientMessage::Join {
        v: 1,
        room: room.into(),
        name: name.into(),
        role: Role::Peer,
        mode: Some(Mode::Sfu),
        resume: None,
    }
}

fn sfu_limits() -> Limits {
    Limits {
        sfu_available: true,
        ..Limits::default()
    }
}

impl Harness {
    fn media(&mut self) -> Vec<MediaAction> {
        std::iter::from_fn(|| self.core.poll_media()).collect()
    }
}

#[test]
fn sfu_rooms_need_the_engine_and_report_their_mode() {
    let mut h = Harness::new(Limits::default());
    h.connect(1);
    let out = h.send(1, join_sfu("r", "Ann"));
    assert_eq!(error_code(&out), ErrorCode::UnsupportedMode);
    assert!(h.media().is_empty());

    let mut h = Harness::new(sfu_limits());
    h.connect(1);
    h.connect(2);
    h.join(1, "r", "Ann", Role::Peer);
    // The room is p2p: a later mode request changes nothing, and nothing goes to the engine.
    let out = h.send(2, join_sfu("r", "Bob"));
    assert!(matches!(
        &out[1].msg,
        ServerMessage::Joined {
            mode: Mode::P2p,
            ..
        }
    ));
    assert!(h.media().is_empty());
}

#[test]
fn sfu_members_talk_to_the_engine_and_peer_relays_still_work() {
    let mut h = Harness::new(sfu_limits());
    for conn in 1..=3 {
        h.connect(conn);
    }
    let out = h.send(1, join_sfu("r", "Ann"));
    let a = match &out[0].msg {
        ServerMessage::Joined { id, mode, .. } => {
            assert_eq!(*mode, Mode::Sfu);
            id.clone()
        }
        other => panic!("{other:?}"),
    };
    let b = h.join(2, "r", "Bob", Role::Peer);
    h.drain();
    assert_eq!(
        h.media(),
        [
            MediaAction::Join {
                participant: a.clone(),
                room: "r".into(),
                conn: Some(1)
            },
            MediaAction::Join {
                participant: b.clone(),
                room: "r".into(),
                conn: Some(2)
            },
        ]
    );

    let tracks = TrackSources::from([
        ("0".to_owned(), MediaSource::Microphone),
        ("2".to_owned(), MediaSource::Screen),
    ]);
    let out = h.send(
        1,
        ClientMessage::Offer {
            to: SFU_PARTICIPANT.into(),
            sdp: "v=0".into(),
            tracks: Some(tracks.clone()),
        },
    );
    assert!(out.is_empty(), "nothing for the clients: {out:?}");
    let answer = ClientMessage::Answer {
        to: SFU_PARTICIPANT.into(),
        sdp: "v=1".into(),
    };
    assert!(h.send(2, answer).is_empty());
    // Candidates for the server are accepted and dropped: it is ICE-lite.
    let candidate = ClientMessage::Candidate {
        to: SFU_PARTICIPANT.into(),
        candidate: None,
    };
    assert!(h.send(2, candidate).is_empty());
    assert_eq!(
        h.media(),
        [
            MediaAction::Offer {
                participant: a.clone(),
                sdp: "v=0".into(),
                tracks
            },
            MediaAction::Answer {
                participant: b.clone(),
                sdp: "v=1".into()
            },
        ]
    );
    // Participants may still message each other (e.g. a data-only client).
    let out = h.send(
        2,
        ClientMessage::Offer {
            to: a.clone(),
            sdp: "x".into(),
            tracks: None,
        },
    );
    assert_eq!(out[0].to, Recipients::One(1));

    // Not in an SFU room, the server is nobody.
    h.join(3, "p2p-room", "Cy", Role::Peer);
    let offer = ClientMessage::Offer {
        to: SFU_PARTICIPANT.into(),
        sdp: "v=0".into(),
        tracks: None,
    };
    assert_eq!(error_code(&h.send(3, offer)), ErrorCode::UnknownParticipant);
    assert!(h.media().is_empty());
}

#[test]
fn sfu_members_resume_on_new_connections_and_leave_for_good() {
    let mut h = Harness::new(sfu_limits());
    for conn in 1..=3 {
        h.connect(conn);
    }
    let out = h.send(1, join_sfu("r", "Ann"));
    let (a, token) = match &out[0].msg {
        ServerMessage::Joined { id, resume, .. } => (id.clone(), resume.clone()),
        other => panic!("{other:?}"),
    };
    let b = h.join(2, "r", "Bob", Role::Peer);
    h.media();

    // A lost socket alone tells the engine nothing; the resumed one takes over.
    h.core.disconnect(1, h.now);
    assert!(h.media().is_empty());
    let resume = ClientMessage::Join {
        v: 1,
        room: "r".into(),
        name: "Ann".into(),
        role: Role::Peer,
        mode: None,
        resume: Some(token),
    };
    h.send(3, resume);
    assert_eq!(
        h.media(),
        [MediaAction::Attach {
            participant: a.clone(),
            conn: 3
        }]
    );

    h.send(2, ClientMessage::Leave);
    assert_eq!(h.media(), [MediaAction::Leave { participant: b }]);
    h.core.disconnect(3, h.now);
    h.advance(Duration::from_secs(60));
    assert_eq!(h.media(), [MediaAction::Leave { participant: a }]);
}

#[test]
fn sfu_rooms_have_their_own_size_limit() {
    let limits = Limits {
        max_participants: 2,
        max_sfu_participants: 3,
        ..sfu_limits()
    };
    let mut h = Harness::new(limits);
    for conn in 1..=4 {
        h.connect(conn);
    }
    h.send(1, join_sfu("r", "P1"));
    h.join(2, "r", "P2", Role::Peer);
    h.join(3, "r", "P3", Role::Peer);
    let out = h.send(4, join_sfu("r", "P4"));
    assert_eq!(error_code(&out), ErrorCode::RoomFull);
}

#[test]
fn a_broadcast_with_more_receivers_than_the_threshold_moves_to_the_sfu() {
    let limits = Limits {
        sfu_broadcast_threshold: 2,
        ..sfu_limits()
    };
    let mut h = Harness::new(limits);
    for conn in 1..=5 {
        h.connect(conn);
    }
    let sender = h.join(1, "show", "Host", Role::Sender);
    let r1 = h.join(2, "show", "R1", Role::Receiver);
    // R2's socket drops before the move; it stays a member through its grace period.
    let r2 = h.join(3, "show", "R2", Role::Receiver);
    h.core.disconnect(3, h.now);
    h.drain();
    assert!(h.media().is_empty(), "two receivers: still peer-to-peer");

    let out = h.send(4, join("show", "R3", Role::Receiver));
    let r3 = match &out.last().unwrap().msg {
        ServerMessage::Joined { mode, id, .. } => {
            assert_eq!(*mode, Mode::Sfu, "the newcomer joins the SFU room");
            id.clone()
        }
        other => panic!("{other:?}"),
    };
    assert!(out.contains(&Output {
        to: Recipients::Many(vec![1, 2]),
        msg: ServerMessage::ModeChanged { mode: Mode::Sfu },
    }));
    let joins: Vec<_> = h
        .media()
        .into_iter()
        .map(|action| match action {
            MediaAction::Join {
                participant, conn, ..
            } => (participant, conn),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        joins,
        [(sender, Some(1)), (r1, Some(2)), (r2, None), (r3, Some(4))]
    );
    // The room stays with the SFU; a mesh of peers never moves.
    let out = h.send(5, join("show", "R4", Role::Receiver));
    assert!(matches!(
        &out.last().unwrap().msg,
        ServerMessage::Joined {
            mode: Mode::Sfu,
            ..
        }
    ));
    let room = h.core.room("show").unwrap();
    assert_eq!(room.mode, Mode::Sfu);
}

#[test]
fn peer_rooms_and_disabled_thresholds_stay_peer_to_peer() {
    let limits = Limits {
        sfu_broadcast_threshold: 0,
        ..sfu_limits()
    };
    let mut h = Harness::new(limits);
    for conn in 1..=6 {
        h.connect(conn);
    }
    h.join(1, "show", "Host", Role::Sender);
    for conn in 2..=6 {
        h.join(conn, "show", "R", Role::Receiver);
    }
    assert_eq!(h.core.room("show").unwrap().mode, Mode::P2p);
    assert!(h.media().is_empty());
}

#[test]
fn view_hints_go_to_the_engine_in_sfu_rooms_only() {
    let mut h = Harness::new(sfu_limits());
    for conn in 1..=3 {
        h.connect(conn);
    }
    let view = || ClientMessage::View {
        mid: "3".into(),
        width: 320,
        height: 180,
    };
    assert_eq!(error_code(&h.send(1, view())), ErrorCode::NotInRoom);
    let out = h.send(1, join_sfu("r", "Ann"));
    let ann = match &out[0].msg {
        ServerMessage::Joined { id, .. } => id.clone(),
        other => panic!("{other:?}"),
    };
    h.media();
    assert!(h.send(1, view()).is_empty());
    assert_eq!(
        h.media(),
        [MediaAction::View {
            participant: ann,
            mid: "3".into(),
            width: 320,
            height: 180
        }]
    );
    h.join(2, "mesh", "Bob", Role::Peer);
    assert_eq!(error_code(&h.send(2, view())), ErrorCode::UnsupportedMode);
}
