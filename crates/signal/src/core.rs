//! [`Signaling`]: every room, participant and lobby entry of one server, and the rules that
//! route messages between them.
//!
//! It owns its state outright (one owner, no locks) and never does I/O: inputs are method
//! calls stamped with `now`, outputs are queued [`Output`]s. It must never block or wait on
//! a client: a slow client is the driver's problem, not the router's.

use crate::limits::{Admission, Limits, Verdict, validate_name, validate_room};
use crate::lobby::Lobby;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;
use switchboard_proto::{
    ClientMessage, ErrorCode, LeaveReason, MessageKind, Mode, PROTOCOL_VERSION, ParseError,
    ParticipantId, ParticipantInfo, Role, SFU_PARTICIPANT, ServerMessage, TrackSources,
};

/// A transport connection, numbered by the driver. Never reused within one run.
pub type ConnId = u64;

/// Who an [`Output`] goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    One(ConnId),
    Many(Vec<ConnId>),
}

/// A message to deliver. The driver serializes it once, whatever the number of recipients.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub to: Recipients,
    pub msg: ServerMessage,
}

/// Work for the media engine of SFU rooms, which the driver carries out
/// ([`Signaling::poll_media`]). Offers and answers addressed to the server
/// ([`SFU_PARTICIPANT`]) end up here rather than in a participant's outbox.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaAction {
    /// A participant entered an SFU room (or its room became one); the engine's messages
    /// for it go to `conn` (`None`: its socket is down until it resumes).
    Join {
        participant: ParticipantId,
        room: String,
        conn: Option<ConnId>,
    },
    /// The participant resumed on another connection; its messages go there now.
    Attach {
        participant: ParticipantId,
        conn: ConnId,
    },
    /// The participant is gone from its room (left, or its grace period ended).
    Leave { participant: ParticipantId },
    /// The participant's offer for its media session.
    Offer {
        participant: ParticipantId,
        sdp: String,
        tracks: TrackSources,
    },
    /// The participant's answer to the engine's offer.
    Answer {
        participant: ParticipantId,
        sdp: String,
    },
    /// How large the participant shows the track it receives on `mid`.
    View {
        participant: ParticipantId,
        mid: String,
        width: u32,
        height: u32,
    },
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreStats {
    pub connections: usize,
    pub rooms: usize,
    pub participants: usize,
    pub lobby_waiting: usize,
    /// Accepted client messages, indexed by [`MessageKind::index`].
    pub messages: [u64; MessageKind::ALL.len()],
    /// Errors sent, indexed by [`ErrorCode::index`].
    pub errors: [u64; ErrorCode::ALL.len()],
}

/// A room as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomView {
    pub name: String,
    pub mode: Mode,
    /// `mesh`, `broadcast` or `pair` (a random match).
    pub topology: &'static str,
    /// Unix milliseconds when the room was created.
    pub since: u64,
    pub participants: Vec<ParticipantView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParticipantView {
    pub id: ParticipantId,
    pub name: String,
    pub role: Role,
    pub since: u64,
    /// `false` while its socket is gone and it may still resume.
    pub connected: bool,
}

struct Conn {
    /// `None` when the driver applies the rate limit itself ([`Signaling::connect_admitted`]).
    admission: Option<Admission>,
    state: ConnState,
}

/// Where one connection's relayed messages (`offer`, `answer`, `candidate`, `ice-restart`) may
/// go, as [`Signaling::relay_route`] reports it for drivers that deliver relays themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRoute<'a> {
    /// The connection's own participant id (the `from` of what it relays).
    pub id: &'a str,
    /// Every other member of its room, in join order, with the connection to deliver to;
    /// `None` while that member's socket is gone (its resume grace): messages to it are
    /// dropped without an error.
    pub peers: Vec<(&'a str, Option<ConnId>)>,
}

enum ConnState {
    Idle,
    Joined(ParticipantId),
    Waiting { name: String },
}

struct Participant {
    id: ParticipantId,
    name: String,
    role: Role,
    since: u64,
    room: String,
    conn: Option<ConnId>,
    resume: String,
    disconnected_at: Option<Instant>,
}

impl Participant {
    fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            since: self.since,
        }
    }
}

struct Room {
    mode: Mode,
    since: u64,
    /// Participant ids in join order.
    members: Vec<ParticipantId>,
    /// A private room made by the random lobby for one pair.
    random: bool,
}

/// The signaling state machine. See the crate docs for how a driver uses it.
pub struct Signaling {
    limits: Limits,
    rng: StdRng,
    epoch: Instant,
    epoch_unix_ms: u64,
    /// The latest time passed in; every entry point updates it first.
    now: Instant,
    conns: HashMap<ConnId, Conn>,
    participants: HashMap<ParticipantId, Participant>,
    rooms: HashMap<String, Room>,
    lobby: Lobby,
    /// Participants whose socket closed, in the order their grace periods end.
    expiries: VecDeque<(Instant, ParticipantId)>,
    outputs: VecDeque<Output>,
    media: VecDeque<MediaAction>,
    messages: [u64; MessageKind::ALL.len()],
    errors: [u64; ErrorCode::ALL.len()],
    /// Connections whose [`RelayRoute`] may have changed; `None` until a driver asks for them
    /// with [`Signaling::track_routes`].
    route_changes: Option<HashSet<ConnId>>,
}

const ID_LEN: usize = 10;
const RESUME_TOKEN_LEN: usize = 32;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl Signaling {
    /// `now` and `now_unix_ms` are the same moment on the monotonic and the wall clock; wall
    /// times shown to clients (`since`) are derived from them.
    pub fn new(limits: Limits, now: Instant, now_unix_ms: u64) -> Self {
        Self::with_rng(limits, now, now_unix_ms, StdRng::from_entropy())
    }

    /// Like [`Signaling::new`] with a fixed seed, for reproducible ids in tests.
    pub fn with_seed(limits: Limits, now: Instant, now_unix_ms: u64, seed: u64) -> Self {
        Self::with_rng(limits, now, now_unix_ms, StdRng::seed_from_u64(seed))
    }

    fn with_rng(limits: Limits, now: Instant, now_unix_ms: u64, rng: StdRng) -> Self {
        Signaling {
            limits,
            rng,
            epoch: now,
            epoch_unix_ms: now_unix_ms,
            now,
            conns: HashMap::new(),
            participants: HashMap::new(),
            rooms: HashMap::new(),
            lobby: Lobby::new(),
            expiries: VecDeque::new(),
            outputs: VecDeque::new(),
            media: VecDeque::new(),
            messages: [0; MessageKind::ALL.len()],
            errors: [0; ErrorCode::ALL.len()],
            route_changes: None,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A new transport connection opened. Its messages are rate-limited here.
    pub fn connect(&mut self, conn: ConnId, now: Instant) {
        let admission = Admission::new(&self.limits, now);
        self.open(conn, Some(admission), now);
    }

    /// A new transport connection whose messages the driver rate-limits itself, with an
    /// [`Admission`] built from [`Signaling::limits`]: everything [`Signaling::handle`] and
    /// [`Signaling::reject`] get from it counts as admitted, and the driver reports drops with
    /// [`Signaling::rate_limited`]. For drivers that handle some messages outside the core
    /// (see [`Signaling::relay_route`]), so every message counts against the same budget.
    pub fn connect_admitted(&mut self, conn: ConnId, now: Instant) {
        self.open(conn, None, now);
    }

    fn open(&mut self, conn: ConnId, admission: Option<Admission>, now: Instant) {
        self.now = now;
        self.conns.insert(
            conn,
            Conn {
                admission,
                state: ConnState::Idle,
            },
        );
        self.touch_conn(conn);
    }

    /// The driver dropped a message of `conn` over its rate limit and its [`Admission`] said
    /// to tell the client.
    pub fn rate_limited(&mut self, conn: ConnId, now: Instant) {
        self.now = now;
        if self.conns.contains_key(&conn) {
            self.report_rate_limited(conn);
        }
    }

    /// A transport connection closed, cleanly or not.
    pub fn disconnect(&mut self, conn: ConnId, now: Instant) {
        self.now = now;
        let Some(state) = self.conns.remove(&conn).map(|c| c.state) else {
            return;
        };
        self.touch_conn(conn);
        match state {
            ConnState::Idle | ConnState::Waiting { .. } => {}
            ConnState::Joined(id) => {
                if self.is_random(&id) {
                    self.end_pair(&id, LeaveReason::Disconnected, None);
                } else if self.limits.resume_grace.is_zero() {
                    self.remove_participant(&id, LeaveReason::Disconnected);
                } else if let Some(participant) = self.participants.get_mut(&id) {
                    // Peers keep their browser-to-browser connections meanwhile, so nobody is
                    // told yet: a quick reconnect should go unnoticed.
                    participant.conn = None;
                    participant.disconnected_at = Some(now);
                    let room = participant.room.clone();
                    self.expiries
                        .push_back((now + self.limits.resume_grace, id.clone()));
                    self.touch_room(&room);
                }
            }
        }
        self.lobby.forget(conn);
        self.try_match();
    }

    /// One decoded message from `conn`.
    pub fn handle(&mut self, conn: ConnId, msg: ClientMessage, now: Instant) {
        self.now = now;
        if !self.admit(conn, now) {
            return;
        }
        self.messages[msg.kind().index()] += 1;
        match msg {
            ClientMessage::Join {
                v,
                room,
                name,
                role,
                mode,
                resume,
            } => self.join(conn, v, &room, &name, role, mode, resume.as_deref()),
            ClientMessage::Leave => self.leave(conn),
            ClientMessage::Offer { to, sdp, tracks } => match self.sfu_member(conn, &to) {
                Some(participant) => self.media.push_back(MediaAction::Offer {
                    participant,
                    sdp,
                    tracks: tracks.unwrap_or_default(),
                }),
                None => self.relay(conn, &to, |from| ServerMessage::Offer { from, sdp }),
            },
            ClientMessage::Answer { to, sdp } => match self.sfu_member(conn, &to) {
                Some(participant) => self
                    .media
                    .push_back(MediaAction::Answer { participant, sdp }),
                None => self.relay(conn, &to, |from| ServerMessage::Answer { from, sdp }),
            },
            // The engine is ICE-lite: it learns the client's address from its checks.
            ClientMessage::Candidate { to, .. } | ClientMessage::IceRestart { to }
                if self.sfu_member(conn, &to).is_some() => {}
            ClientMessage::Candidate { to, candidate } => self.relay(conn, &to, |from| {
                ServerMessage::Candidate { from, candidate }
            }),
            ClientMessage::IceRestart { to } => {
                self.relay(conn, &to, |from| ServerMessage::IceRestart { from })
            }
            ClientMessage::Random { v, name } => self.random(conn, v, &name),
            ClientMessage::Next => self.next(conn),
            ClientMessage::View { mid, width, height } => self.view(conn, mid, width, height),
            ClientMessage::Ping { id } => self.send(conn, ServerMessage::Pong { id }),
        }
    }

    /// A frame from `conn` that could not be decoded (or was too large): it costs a message
    /// of the rate budget like any other, and the client is told why.
    pub fn reject(&mut self, conn: ConnId, error: ParseError, now: Instant) {
        self.now = now;
        if self.admit(conn, now) {
            self.error(conn, error.code, error.message);
        }
    }

    /// When [`Signaling::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.front().map(|(at, _)| *at)
    }

    /// Ends the grace period of participants that did not come back.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        while let Some((at, _)) = self.expiries.front() {
            if *at > now {
                break;
            }
            let Some((_, id)) = self.expiries.pop_front() else {
                break;
            };
            // A participant that resumed (and maybe dropped again later) has a different or no
            // disconnect time; its newer entry decides.
            let expired = self.participants.get(&id).is_some_and(|p| {
                p.disconnected_at
                    .is_some_and(|since| since + self.limits.resume_grace <= now)
            });
            if expired {
                self.remove_participant(&id, LeaveReason::Disconnected);
            }
        }
    }

    /// The next message to deliver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next piece of work for the media engine of SFU rooms.
    pub fn poll_media(&mut self) -> Option<MediaAction> {
        self.media.pop_front()
    }

    fn view(&mut self, conn: ConnId, mid: String, width: u32, height: u32) {
        match self.conn_state(conn) {
            Some(ConnState::Joined(_)) => {}
            Some(_) => return self.error(conn, ErrorCode::NotInRoom, "join an SFU room first"),
            None => return,
        }
        match self.sfu_member(conn, SFU_PARTICIPANT) {
            Some(participant) => self.media.push_back(MediaAction::View {
                participant,
                mid,
                width,
                height,
            }),
            None => self.error(
                conn,
                ErrorCode::UnsupportedMode,
                "view applies to SFU rooms only; peers send what they send",
            ),
        }
    }

    /// The participant behind `conn`, if `to` is the server and `conn` is in an SFU room.
    fn sfu_member(&self, conn: ConnId, to: &str) -> Option<ParticipantId> {
        if to != SFU_PARTICIPANT {
            return None;
        }
        let ConnState::Joined(id) = self.conn_state(conn)? else {
            return None;
        };
        let room = self.rooms.get(&self.participants.get(id)?.room)?;
        (room.mode == Mode::Sfu).then(|| id.clone())
    }

    pub fn stats(&self) -> CoreStats {
        CoreStats {
            connections: self.conns.len(),
            rooms: self.rooms.len(),
            participants: self.participants.len(),
            lobby_waiting: self.lobby.waiting(),
            messages: self.messages,
            errors: self.errors,
        }
    }

    /// All rooms, sorted by name.
    pub fn rooms(&self) -> Vec<RoomView> {
        let mut rooms: Vec<RoomView> = self
            .rooms
            .keys()
            .filter_map(|name| self.room(name))
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    pub fn room(&self, name: &str) -> Option<RoomView> {
        let room = self.rooms.get(name)?;
        let participants: Vec<ParticipantView> = room
            .members
            .iter()
            .filter_map(|id| self.participants.get(id))
            .map(|p| ParticipantView {
                id: p.id.clone(),
                name: p.name.clone(),
                role: p.role,
                since: p.since,
                connected: p.conn.is_some(),
            })
            .collect();
        let topology = if room.random {
            "pair"
        } else if room.mode == Mode::Sfu {
            "sfu"
        } else if participants.iter().any(|p| p.role != Role::Peer) {
            "broadcast"
        } else {
            "mesh"
        };
        Some(RoomView {
            name: name.to_owned(),
            mode: room.mode,
            topology,
            since: room.since,
            participants,
        })
    }

    /// Starts reporting which connections' [`RelayRoute`]s change, for
    /// [`Signaling::take_route_changes`].
    pub fn track_routes(&mut self) {
        self.route_changes.get_or_insert_with(HashSet::new);
    }

    /// The connections whose [`RelayRoute`] may have changed since the last call (or since
    /// [`Signaling::track_routes`]), each once, in no particular order. A driver that relays
    /// with copies of the routes refreshes these.
    pub fn take_route_changes(&mut self) -> Vec<ConnId> {
        match &mut self.route_changes {
            Some(changes) => changes.drain().collect(),
            None => Vec::new(),
        }
    }

    /// Where a relayed message from `conn` may go: `None` unless it is in a room. A driver may
    /// deliver `offer`/`answer`/`candidate` itself with this, exactly as
    /// [`Signaling::handle`] would: to the addressed peer's connection, nowhere while that
    /// peer is disconnected, and through `handle` (for its error) when `to` names nobody here.
    pub fn relay_route(&self, conn: ConnId) -> Option<RelayRoute<'_>> {
        let ConnState::Joined(id) = self.conn_state(conn)? else {
            return None;
        };
        let participant = self.participants.get(id)?;
        let room = self.rooms.get(&participant.room)?;
        let peers = room
            .members
            .iter()
            .filter(|member| *member != id)
            .filter_map(|member| self.participants.get(member))
            .map(|peer| (peer.id.as_str(), peer.conn))
            .collect();
        Some(RelayRoute { id, peers })
    }

    /// Applies the rate limit; over it, the message is dropped and the client told (at most
    /// once a second, so the error replies cannot become a flood of their own).
    fn admit(&mut self, conn: ConnId, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let Some(admission) = &mut c.admission else {
            return true;
        };
        match admission.check(now) {
            Verdict::Admit => true,
            Verdict::Drop => false,
            Verdict::DropAndReport => {
                self.report_rate_limited(conn);
                false
            }
        }
    }

    fn report_rate_limited(&mut self, conn: ConnId) {
        self.error(
            conn,
            ErrorCode::RateLimited,
            format!(
                "more than {} messages per second; messages are being dropped",
                self.limits.rate_per_sec
            ),
        );
    }

    /// Marks `conn`'s relay route as possibly changed.
    fn touch_conn(&mut self, conn: ConnId) {
        if let Some(changes) = &mut self.route_changes {
            changes.insert(conn);
        }
    }

    /// Marks the relay routes of every connected member of `room` as possibly changed.
    fn touch_room(&mut self, room: &str) {
        let Some(changes) = &mut self.route_changes else {
            return;
        };
        if let Some(room) = self.rooms.get(room) {
            changes.extend(
                room.members
                    .iter()
                    .filter_map(|id| self.participants.get(id)?.conn),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        conn: ConnId,
        v: u32,
        room_name: &str,
        name: &str,
        role: Role,
        mode: Option<Mode>,
        resume: Option<&str>,
    ) {
        if v != PROTOCOL_VERSION {
            return self.error(
                conn,
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported; this server speaks version {PROTOCOL_VERSION}"),
            );
        }
        if !matches!(self.conn_state(conn), Some(ConnState::Idle)) {
            return self.error(
                conn,
                ErrorCode::AlreadyJoined,
                "already in a room or the random lobby; send leave first",
            );
        }
        if let Err(why) = validate_room(room_name) {
            return self.error(conn, ErrorCode::InvalidRoom, why);
        }
        let name = match validate_name(name) {
            Ok(name) => name.to_owned(),
            Err(why) => return self.error(conn, ErrorCode::InvalidName, why),
        };
        if let Some(token) = resume {
            return self.resume(conn, room_name, token);
        }
        let mode = match self.rooms.get(room_name) {
            Some(room) if room.random => {
                return self.error(
                    conn,
                    ErrorCode::RoomFull,
                    "this room is a private random match",
                );
            }
            Some(room) => {
                let (peers, receivers, has_sender) = self.room_census(room);
                if role == Role::Receiver && receivers >= self.limits.max_receivers {
                    return self.error(
                        conn,
                        ErrorCode::RoomFull,
                        format!("room is full ({} receivers)", self.limits.max_receivers),
                    );
                }
                let max_peers = match room.mode {
                    Mode::P2p => self.limits.max_participants,
                    Mode::Sfu => self.limits.max_sfu_participants,
                };
                if role != Role::Receiver && peers >= max_peers {
                    return self.error(
                        conn,
                        ErrorCode::RoomFull,
                        format!("room is full ({max_peers} participants)"),
                    );
                }
                if role == Role::Sender && has_sender {
                    return self.error(
                        conn,
                        ErrorCode::RoleTaken,
                        "this room already has a sender",
                    );
                }
                room.mode
            }
            None => {
                if self.rooms.len() >= self.limits.max_rooms {
                    return self.error(
                        conn,
                        ErrorCode::ServerBusy,
                        "the server has reached its room limit",
                    );
                }
                let mode = mode.unwrap_or(self.limits.default_mode);
                if mode == Mode::Sfu && !self.limits.sfu_available {
                    return self.error(
                        conn,
                        ErrorCode::UnsupportedMode,
                        "SFU rooms are not available on this server; use mode p2p",
                    );
                }
                let since = self.unix_ms_now();
                self.rooms.insert(
                    room_name.to_owned(),
                    Room {
                        mode,
                        since,
                        members: Vec::new(),
                        random: false,
                    },
                );
                mode
            }
        };
        let id = self.add_participant(conn, room_name, name, role);
        let mode =
            if mode == Mode::P2p && role == Role::Receiver && self.broadcast_outgrown(room_name) {
                self.move_to_sfu(room_name, &id);
                Mode::Sfu
            } else {
                mode
            };
        if mode == Mode::Sfu {
            self.media.push_back(MediaAction::Join {
                participant: id.clone(),
                room: room_name.to_owned(),
                conn: Some(conn),
            });
        }
        let others = self.other_connections(room_name, &id);
        let participant = &self.participants[&id];
        if !others.is_empty() {
            self.outputs.push_back(Output {
                to: Recipients::Many(others),
                msg: ServerMessage::ParticipantJoined {
                    participant: participant.info(),
                },
            });
        }
        let joined = ServerMessage::Joined {
            v: PROTOCOL_VERSION,
            room: room_name.to_owned(),
            id: id.clone(),
            resume: participant.resume.clone(),
            mode,
            role,
            participants: self.member_infos(room_name, &id),
            resumed: false,
        };
        self.send(conn, joined);
    }

    fn resume(&mut self, conn: ConnId, room_name: &str, token: &str) {
        let found = self.rooms.get(room_name).and_then(|room| {
            room.members
                .iter()
                .find(|id| {
                    self.participants
                        .get(*id)
                        .is_some_and(|p| p.resume == token)
                })
                .cloned()
        });
        let Some(id) = found.filter(|id| !self.is_random(id)) else {
            return self.error(
                conn,
                ErrorCode::ResumeFailed,
                "unknown or expired resume token; join again without it",
            );
        };
        let (old_conn, mode, role) = {
            let p = self.participants.get_mut(&id).expect("member exists");
            let old = p.conn.replace(conn);
            p.disconnected_at = None;
            (old, self.rooms[room_name].mode, p.role)
        };
        // The same participant on a new socket before the old one noticed it was dead: the
        // newer socket wins.
        if let Some(old) = old_conn.filter(|&old| old != conn) {
            self.set_state(old, ConnState::Idle);
            self.send(old, ServerMessage::Left);
        }
        self.set_state(conn, ConnState::Joined(id.clone()));
        self.touch_room(room_name);
        if mode == Mode::Sfu {
            self.media.push_back(MediaAction::Attach {
                participant: id.clone(),
                conn,
            });
        }
        let joined = ServerMessage::Joined {
            v: PROTOCOL_VERSION,
            room: room_name.to_owned(),
            id: id.clone(),
            resume: token.to_owned(),
            mode,
            role,
            participants: self.member_infos(room_name, &id),
            resumed: true,
        };
        self.send(conn, joined);
    }

    fn leave(&mut self, conn: ConnId) {
        match self.conn_state(conn) {
            None => {}
            Some(ConnState::Idle) => self.error(
                conn,
                ErrorCode::NotInRoom,
                "not in a room or the random lobby",
            ),
            Some(ConnState::Waiting { .. }) => {
                self.lobby.remove(conn);
                self.set_state(conn, ConnState::Idle);
                self.send(conn, ServerMessage::Left);
            }
            Some(ConnState::Joined(id)) => {
                let id = id.clone();
                if self.is_random(&id) {
                    self.end_pair(&id, LeaveReason::Left, None);
                } else {
                    self.remove_participant(&id, LeaveReason::Left);
                }
                self.set_state(conn, ConnState::Idle);
                self.send(conn, ServerMessage::Left);
            }
        }
    }

    fn relay(
        &mut self,
        conn: ConnId,
        to: &str,
        build: impl FnOnce(ParticipantId) -> ServerMessage,
    ) {
        let from = match self.conn_state(conn) {
            Some(ConnState::Joined(id)) => id,
            Some(_) => {
                return self.error(
                    conn,
                    ErrorCode::NotInRoom,
                    "join a room before sending to participants",
                );
            }
            None => return,
        };
        let target = self.participants.get(to).filter(|target| {
            target.id != *from
                && self
                    .participants
                    .get(from)
                    .is_some_and(|p| p.room == target.room)
        });
        match target {
            Some(target) => {
                // While the target's socket is down (resume grace) there is nobody to deliver
                // to; the browsers recover with an ICE restart after it resumes.
                if let Some(target_conn) = target.conn {
                    let msg = build(from.clone());
                    self.send(target_conn, msg);
                }
            }
            None => {
                let message = format!("no participant {to:?} in this room");
                self.error(conn, ErrorCode::UnknownParticipant, message)
            }
        }
    }

    fn random(&mut self, conn: ConnId, v: u32, name: &str) {
        if v != PROTOCOL_VERSION {
            return self.error(
                conn,
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported; this server speaks version {PROTOCOL_VERSION}"),
            );
        }
        if !matches!(self.conn_state(conn), Some(ConnState::Idle)) {
            return self.error(
                conn,
                ErrorCode::AlreadyJoined,
                "already in a room or the random lobby; send leave first",
            );
        }
        let name = match validate_name(name) {
            Ok(name) => name.to_owned(),
            Err(why) => return self.error(conn, ErrorCode::InvalidName, why),
        };
        self.queue(conn, name);
        self.try_match();
    }

    fn next(&mut self, conn: ConnId) {
        match self.conn_state(conn) {
            None => {}
            Some(ConnState::Waiting { .. }) => self.send(conn, ServerMessage::Waiting),
            Some(ConnState::Joined(id)) if self.is_random(id) => {
                let id = id.clone();
                self.end_pair(&id, LeaveReason::Next, Some(conn));
                self.try_match();
            }
            Some(_) => self.error(
                conn,
                ErrorCode::NotMatched,
                "next only works in the random lobby",
            ),
        }
    }

    /// Ends the random pair `id` belongs to. The partner is told and queued again; `requeue`
    /// names the leaving side's connection when it wants a new partner too (Next). The
    /// partner goes back first: it did not choose to leave.
    fn end_pair(&mut self, id: &str, reason: LeaveReason, requeue: Option<ConnId>) {
        let Some(room_name) = self.participants.get(id).map(|p| p.room.clone()) else {
            return;
        };
        self.touch_room(&room_name);
        let Some(room) = self.rooms.remove(&room_name) else {
            return;
        };
        let mut leaver_name = None;
        let mut partner = None;
        for member in room.members {
            if let Some(p) = self.participants.remove(&member) {
                if p.id == id {
                    leaver_name = Some(p.name);
                } else {
                    partner = Some(p);
                }
            }
        }
        if let Some(p) = partner
            && let Some(c) = p.conn
        {
            self.send(c, ServerMessage::Unmatched { reason });
            self.queue(c, p.name);
        }
        if let (Some(c), Some(name)) = (requeue, leaver_name) {
            self.send(c, ServerMessage::Unmatched { reason });
            self.queue(c, name);
        }
    }

    fn queue(&mut self, conn: ConnId, name: String) {
        self.set_state(conn, ConnState::Waiting { name });
        self.lobby.enqueue(conn);
        self.send(conn, ServerMessage::Waiting);
    }

    fn try_match(&mut self) {
        while let Some((first, second)) = self.lobby.next_pair() {
            let (
                Some(ConnState::Waiting { name: first_name }),
                Some(ConnState::Waiting { name: second_name }),
            ) = (self.conn_state(first), self.conn_state(second))
            else {
                continue;
            };
            let (first_name, second_name) = (first_name.clone(), second_name.clone());
            if self.rooms.len() >= self.limits.max_rooms {
                for conn in [first, second] {
                    self.set_state(conn, ConnState::Idle);
                    self.error(
                        conn,
                        ErrorCode::ServerBusy,
                        "the server has reached its room limit",
                    );
                }
                continue;
            }
            let room_name = loop {
                let candidate = format!("random-{}", self.random_string(ID_LEN));
                if !self.rooms.contains_key(&candidate) {
                    break candidate;
                }
            };
            let since = self.unix_ms_now();
            self.rooms.insert(
                room_name.clone(),
                Room {
                    mode: Mode::P2p,
                    since,
                    members: Vec::new(),
                    random: true,
                },
            );
            let first_id = self.add_participant(first, &room_name, first_name, Role::Peer);
            let second_id = self.add_participant(second, &room_name, second_name, Role::Peer);
            let first_info = self.participants[&first_id].info();
            let second_info = self.participants[&second_id].info();
            // The longer waiter offers first.
            self.send(
                first,
                ServerMessage::Matched {
                    room: room_name.clone(),
                    id: first_id,
                    peer: second_info,
                    polite: false,
                },
            );
            self.send(
                second,
                ServerMessage::Matched {
                    room: room_name,
                    id: second_id,
                    peer: first_info,
                    polite: true,
                },
            );
        }
    }

    fn add_participant(
        &mut self,
        conn: ConnId,
        room_name: &str,
        name: String,
        role: Role,
    ) -> ParticipantId {
        let id = loop {
            let candidate = self.random_string(ID_LEN);
            if !self.participants.contains_key(&candidate) {
                break candidate;
            }
        };
        let resume = self.random_string(RESUME_TOKEN_LEN);
        let since = self.unix_ms_now();
        self.participants.insert(
            id.clone(),
            Participant {
                id: id.clone(),
                name,
                role,
                since,
                room: room_name.to_owned(),
                conn: Some(conn),
                resume,
                disconnected_at: None,
            },
        );
        if let Some(room) = self.rooms.get_mut(room_name) {
            room.members.push(id.clone());
        }
        self.set_state(conn, ConnState::Joined(id.clone()));
        self.touch_room(room_name);
        id
    }

    fn remove_participant(&mut self, id: &str, reason: LeaveReason) {
        if let Some(room) = self.participants.get(id).map(|p| p.room.clone()) {
            self.touch_room(&room);
        }
        let Some(participant) = self.participants.remove(id) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&participant.room) else {
            return;
        };
        if room.mode == Mode::Sfu {
            self.media.push_back(MediaAction::Leave {
                participant: participant.id.clone(),
            });
        }
        room.members.retain(|member| member != id);
        if room.members.is_empty() {
            self.rooms.remove(&participant.room);
            return;
        }
        let others = self.other_connections(&participant.room, id);
        if !others.is_empty() {
            self.outputs.push_back(Output {
                to: Recipients::Many(others),
                msg: ServerMessage::ParticipantLeft {
                    id: participant.id,
                    reason,
                },
            });
        }
    }

    /// Whether a peer-to-peer broadcast room now has more receivers than a sender should
    /// upload to, and the SFU could take it.
    fn broadcast_outgrown(&self, room_name: &str) -> bool {
        let threshold = self.limits.sfu_broadcast_threshold;
        if threshold == 0 || !self.limits.sfu_available {
            return false;
        }
        let Some(room) = self.rooms.get(room_name) else {
            return false;
        };
        let (_, receivers, _) = self.room_census(room);
        !room.random && receivers > threshold
    }

    /// Moves a room to the SFU: every member but `newcomer` (whose `joined` will say so) is
    /// told, and the engine learns of each. Members whose socket is down join the engine
    /// without one; they get `mode-changed`'s effect from the mode in their resumed `joined`.
    fn move_to_sfu(&mut self, room_name: &str, newcomer: &str) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        room.mode = Mode::Sfu;
        let members: Vec<(ParticipantId, Option<ConnId>)> = room
            .members
            .iter()
            .filter(|id| id.as_str() != newcomer)
            .filter_map(|id| self.participants.get(id))
            .map(|p| (p.id.clone(), p.conn))
            .collect();
        let mut told = Vec::new();
        for (participant, conn) in members {
            self.media.push_back(MediaAction::Join {
                participant,
                room: room_name.to_owned(),
                conn,
            });
            told.extend(conn);
        }
        if !told.is_empty() {
            self.outputs.push_back(Output {
                to: Recipients::Many(told),
                msg: ServerMessage::ModeChanged { mode: Mode::Sfu },
            });
        }
    }

    /// (peers and senders, receivers, whether a sender is present)
    fn room_census(&self, room: &Room) -> (usize, usize, bool) {
        let mut census = (0, 0, false);
        for p in room
            .members
            .iter()
            .filter_map(|id| self.participants.get(id))
        {
            match p.role {
                Role::Receiver => census.1 += 1,
                Role::Sender => {
                    census.0 += 1;
                    census.2 = true;
                }
                Role::Peer => census.0 += 1,
            }
        }
        census
    }

    fn member_infos(&self, room_name: &str, except: &str) -> Vec<ParticipantInfo> {
        self.rooms[room_name]
            .members
            .iter()
            .filter(|id| id.as_str() != except)
            .filter_map(|id| self.participants.get(id))
            .map(Participant::info)
            .collect()
    }

    fn other_connections(&self, room_name: &str, except: &str) -> Vec<ConnId> {
        self.rooms[room_name]
            .members
            .iter()
            .filter(|id| id.as_str() != except)
            .filter_map(|id| self.participants.get(id)?.conn)
            .collect()
    }

    fn is_random(&self, id: &str) -> bool {
        self.participants
            .get(id)
            .and_then(|p| self.rooms.get(&p.room))
            .is_some_and(|room| room.random)
    }

    fn conn_state(&self, conn: ConnId) -> Option<&ConnState> {
        self.conns.get(&conn).map(|c| &c.state)
    }

    fn set_state(&mut self, conn: ConnId, state: ConnState) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = state;
            self.touch_conn(conn);
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.outputs.push_back(Output {
            to: Recipients::One(conn),
            msg,
        });
    }

    fn error(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        self.errors[code.index()] += 1;
        self.send(conn, ServerMessage::error(code, message));
    }

    fn random_string(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(ALPHABET[self.rng.gen_range(0..ALPHABET.len())]))
            .collect()
    }

    fn unix_ms_now(&self) -> u64 {
        // Wall time follows the monotonic clock from the epoch, so tests with a fake clock get
        // consistent `since` values.
        self.epoch_unix_ms + self.now.saturating_duration_since(self.epoch).as_millis() as u64
    }
}
