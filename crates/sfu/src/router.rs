//! The routing core: rooms, participants, published tracks, subscriptions, simulcast layer
//! choice and keyframe gating — every forwarding decision, as pure logic.
//!
//! [`Router`] never touches a socket, a task, an `Rtc` or the clock: the worker tells it what
//! happened (a participant joined, a track was published, a frame arrived, a subscriber's
//! m-line is negotiated), stamped with the current [`Instant`], and drains what must be done
//! ([`RouterOutput`]: negotiate a subscription, stop one, ask a publisher for a keyframe).
//!
//! Rules it enforces:
//! - Everyone in a room subscribes to every track of everyone else in it, and to nothing
//!   outside it.
//! - A video subscription starts forwarding only at a keyframe of its chosen layer, and a
//!   layer switch happens only at a keyframe of the new layer (until then the old layer keeps
//!   flowing). While a subscription waits, the publisher is asked for a keyframe (PLI) at most
//!   once per [`Limits::keyframe_request_interval`] per layer, and again after that interval
//!   until the keyframe arrives.
//! - Leaving removes every track of the participant, every subscription to them, and every
//!   subscription of the participant; an empty room disappears.
//!
//! [`Router::on_media`] is the per-frame entry point; it returns the subscribers to write the
//! frame to in a buffer the router reuses, so forwarding does not allocate.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid, Rid};

use crate::error::RouteError;
use crate::ids::{ParticipantId, RoomId, TrackId, TrackInfo, TrackSource};

/// Bounds of the routing core. Past a bound the caller gets a [`RouteError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Rooms at once.
    pub max_rooms: usize,
    /// Participants in all rooms at once.
    pub max_participants: usize,
    /// Participants in one room.
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish.
    pub max_tracks_per_participant: usize,
    /// Minimum time between two keyframe requests for the same layer of a track, and the
    /// retry interval while a subscriber still waits for a keyframe.
    pub keyframe_request_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rooms: 1_000,
            max_participants: 2_000,
            max_participants_per_room: 50,
            max_tracks_per_participant: 8,
            keyframe_request_interval: Duration::from_millis(500),
        }
    }
}

/// What the worker must do after the router changed its mind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterOutput {
    /// A participant published a track; tell the signaling side.
    TrackPublished(TrackInfo),
    /// A track is gone (unpublished, or its publisher left).
    TrackUnpublished {
        /// The track.
        track: TrackId,
        /// Who published it.
        publisher: ParticipantId,
    },
    /// `subscriber` must get a send m-line for `track` (renegotiation), then report it with
    /// [`Router::subscription_ready`].
    Subscribe {
        /// Who receives.
        subscriber: ParticipantId,
        /// What it receives.
        track: TrackId,
    },
    /// `subscriber` no longer receives `track`; stop its m-line if one was negotiated.
    Unsubscribe {
        /// Who received.
        subscriber: ParticipantId,
        /// What it received.
        track: TrackId,
        /// The subscriber's m-line for it, if negotiation had completed.
        out_mid: Option<Mid>,
    },
    /// Ask `publisher` for a keyframe (PLI) on its m-line `mid`, layer `rid`.
    RequestKeyframe {
        /// Who sends the track.
        publisher: ParticipantId,
        /// The publisher's m-line.
        mid: Mid,
        /// The simulcast layer, or `None` without simulcast.
        rid: Option<Rid>,
    },
}

/// Where one frame must go: the subscriber and its m-line for the track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Who receives.
    pub subscriber: ParticipantId,
    /// The subscriber's send m-line for the track.
    pub out_mid: Mid,
}

/// Where a subscription stands, as seen from outside (tests, stats, the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    /// The subscriber's m-line is being negotiated.
    Negotiating,
    /// Negotiated; waiting for a keyframe of `target` before forwarding anything.
    WaitingKeyframe {
        /// The layer it will start with.
        target: Option<Rid>,
    },
    /// Frames of `current` are forwarded; when `target` differs, the switch happens at the
    /// next keyframe of `target`.
    Forwarding {
        /// The layer being forwarded.
        current: Option<Rid>,
        /// The layer wanted.
        target: Option<Rid>,
    },
    /// The subscriber asked not to receive this track for now (e.g. its tile is hidden).
    Paused,
}

#[derive(Debug)]
struct Subscription {
    subscriber: ParticipantId,
    out_mid: Option<Mid>,
    target: Option<Rid>,
    /// `None` while negotiating or waiting; `Some(layer)` while forwarding `layer`.
    current: Option<Option<Rid>>,
    paused: bool,
}

impl Subscription {
    fn state(&self) -> SubscriptionState {
        if self.paused {
            return SubscriptionState::Paused;
        }
        match (self.out_mid, self.current) {
            (None, _) => SubscriptionState::Negotiating,
            (Some(_), None) => SubscriptionState::WaitingKeyframe {
                target: self.target,
            },
            (Some(_), Some(current)) => SubscriptionState::Forwarding {
                current,
                target: self.target,
            },
        }
    }

    /// Whether this subscription waits for a keyframe of its target layer.
    fn wants_keyframe(&self) -> bool {
        !self.paused && self.out_mid.is_some() && self.current != Some(self.target)
    }
}

#[derive(Debug)]
struct Track {
    info: TrackInfo,
    subscriptions: Vec<Subscription>,
    /// Last keyframe request per layer.
    keyframe_requests: Vec<(Option<Rid>, Instant)>,
}

impl Track {
    fn default_layer(&self) -> Option<Rid> {
        self.info.layers.first().copied()
    }
}

#[derive(Debug)]
struct Participant {
    room: RoomId,
    published: Vec<TrackId>,
}

#[derive(Debug, Default)]
struct Room {
    participants: Vec<ParticipantId>,
}

/// The routing core. See the module documentation.
#[derive(Debug)]
pub struct Router {
    limits: Limits,
    rooms: HashMap<RoomId, Room>,
    participants: HashMap<ParticipantId, Participant>,
    tracks: HashMap<TrackId, Track>,
    /// (publisher, publisher's mid) → track, for incoming media.
    by_in_mid: HashMap<(ParticipantId, Mid), TrackId>,
    /// (subscriber, subscriber's mid) → track, for keyframe requests from subscribers.
    by_out_mid: HashMap<(ParticipantId, Mid), TrackId>,
    next_track: u64,
    outputs: VecDeque<RouterOutput>,
    forward_buf: Vec<Forward>,
    /// When waiting subscriptions next need a keyframe request.
    keyframe_timeout: Option<Instant>,
}

impl Router {
    /// An empty router with these limits.
    pub fn new(limits: Limits) -> Self {
        Router {
            limits,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            tracks: HashMap::new(),
            by_in_mid: HashMap::new(),
            by_out_mid: HashMap::new(),
            next_track: 1,
            outputs: VecDeque::new(),
            forward_buf: Vec::new(),
            keyframe_timeout: None,
        }
    }

    /// Adds `participant` to `room` (created on first join) and subscribes it to every track
    /// already published there.
    pub fn join(&mut self, room: RoomId, participant: ParticipantId) -> Result<(), RouteError> {
        if self.participants.contains_key(&participant) {
            return Err(RouteError::AlreadyJoined(participant));
        }
        if self.participants.len() >= self.limits.max_participants {
            return Err(RouteError::TooManyParticipants);
        }
        match self.rooms.get(&room) {
            None if self.rooms.len() >= self.limits.max_rooms => {
                return Err(RouteError::TooManyRooms);
            }
            Some(r) if r.participants.len() >= self.limits.max_participants_per_room => {
                return Err(RouteError::RoomFull(room));
            }
            _ => {}
        }
        let members = self.rooms.entry(room.clone()).or_default();
        for other in &members.participants {
            let Some(p) = self.participants.get(other) else {
                continue;
            };
            for track_id in &p.published {
                if let Some(track) = self.tracks.get_mut(track_id) {
                    subscribe(&mut self.outputs, track, participant);
                }
            }
        }
        members.participants.push(participant);
        self.participants.insert(
            participant,
            Participant {
                room,
                published: Vec::new(),
            },
        );
        Ok(())
    }

    /// Removes `participant`: its tracks (each subscriber gets an
    /// [`RouterOutput::Unsubscribe`]), its subscriptions, and its room if it was the last one.
    pub fn leave(&mut self, participant: ParticipantId) -> Result<(), RouteError> {
        let p = self
            .participants
            .remove(&participant)
            .ok_or(RouteError::UnknownParticipant(participant))?;
        for track in p.published {
            self.remove_track(track);
        }
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.participants.retain(|&other| other != participant);
            for other in &room.participants {
                let Some(o) = self.participants.get(other) else {
                    continue;
                };
                for track_id in &o.published {
                    if let Some(track) = self.tracks.get_mut(track_id) {
                        track.subscriptions.retain(|s| s.subscriber != participant);
                    }
                }
            }
            if room.participants.is_empty() {
                self.rooms.remove(&p.room);
            }
        }
        self.by_out_mid.retain(|(sub, _), _| *sub != participant);
        Ok(())
    }

    /// Registers a track `participant` sends on its m-line `mid`; everyone else in the room
    /// subscribes to it.
    pub fn publish(
        &mut self,
        participant: ParticipantId,
        mid: Mid,
        kind: MediaKind,
        source: TrackSource,
        layers: Vec<Rid>,
    ) -> Result<TrackId, RouteError> {
        let p = self
            .participants
            .get_mut(&participant)
            .ok_or(RouteError::UnknownParticipant(participant))?;
        if self.by_in_mid.contains_key(&(participant, mid)) {
            return Err(RouteError::DuplicateTrack(mid));
        }
        if p.published.len() >= self.limits.max_tracks_per_participant {
            return Err(RouteError::TooManyTracks(participant));
        }
        let id = TrackId(self.next_track);
        self.next_track += 1;
        p.published.push(id);
        let info = TrackInfo {
            id,
            publisher: participant,
            mid,
            kind,
            source,
            layers,
        };
        let mut track = Track {
            info: info.clone(),
            subscriptions: Vec::new(),
            keyframe_requests: Vec::new(),
        };
        if let Some(room) = self.rooms.get(&p.room) {
            for &other in &room.participants {
                if other != participant {
                    subscribe(&mut self.outputs, &mut track, other);
                }
            }
        }
        self.by_in_mid.insert((participant, mid), id);
        self.tracks.insert(id, track);
        self.outputs.push_back(RouterOutput::TrackPublished(info));
        Ok(id)
    }

    /// Removes a track; every subscriber gets an [`RouterOutput::Unsubscribe`].
    pub fn unpublish(&mut self, track: TrackId) -> Result<(), RouteError> {
        let publisher = self
            .tracks
            .get(&track)
            .ok_or(RouteError::UnknownTrack(track))?
            .info
            .publisher;
        if let Some(p) = self.participants.get_mut(&publisher) {
            p.published.retain(|&t| t != track);
        }
        self.remove_track(track);
        Ok(())
    }

    fn remove_track(&mut self, id: TrackId) {
        let Some(track) = self.tracks.remove(&id) else {
            return;
        };
        self.by_in_mid
            .remove(&(track.info.publisher, track.info.mid));
        for sub in track.subscriptions {
            if let Some(mid) = sub.out_mid {
                self.by_out_mid.remove(&(sub.subscriber, mid));
            }
            self.outputs.push_back(RouterOutput::Unsubscribe {
                subscriber: sub.subscriber,
                track: id,
                out_mid: sub.out_mid,
            });
        }
        self.outputs.push_back(RouterOutput::TrackUnpublished {
            track: id,
            publisher: track.info.publisher,
        });
    }

    /// Changes what a track is said to carry (camera, screen share, …).
    pub fn set_source(&mut self, track: TrackId, source: TrackSource) -> Result<(), RouteError> {
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or(RouteError::UnknownTrack(track))?;
        t.info.source = source;
        Ok(())
    }

    /// The subscriber's send m-line `out_mid` for `track` is negotiated: start waiting for a
    /// keyframe (video) and ask the publisher for one.
    pub fn subscription_ready(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        out_mid: Mid,
        now: Instant,
    ) -> Result<(), RouteError> {
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or(RouteError::UnknownTrack(track))?;
        let sub = t
            .subscriptions
            .iter_mut()
            .find(|s| s.subscriber == subscriber)
            .ok_or(RouteError::NotSubscribed(subscriber, track))?;
        sub.out_mid = Some(out_mid);
        sub.current = None;
        let target = sub.target;
        self.by_out_mid.insert((subscriber, out_mid), track);
        if t.info.kind == MediaKind::Video {
            self.request_keyframe_for(track, target, now);
        }
        Ok(())
    }

    /// Chooses the simulcast layer `subscriber` receives of `track`. The switch happens at the
    /// next keyframe of that layer, which is requested now.
    pub fn select_layer(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        rid: Rid,
        now: Instant,
    ) -> Result<(), RouteError> {
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or(RouteError::UnknownTrack(track))?;
        if !t.info.layers.contains(&rid) {
            return Err(RouteError::UnknownLayer(track, rid));
        }
        let sub = t
            .subscriptions
            .iter_mut()
            .find(|s| s.subscriber == subscriber)
            .ok_or(RouteError::NotSubscribed(subscriber, track))?;
        sub.target = Some(rid);
        if sub.wants_keyframe() {
            self.request_keyframe_for(track, Some(rid), now);
        }
        Ok(())
    }

    /// Stops (`receive == false`) or resumes forwarding `track` to `subscriber`, keeping the
    /// subscription and its m-line. A resumed video subscription starts again at a keyframe,
    /// which is requested now.
    pub fn set_receiving(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        receive: bool,
        now: Instant,
    ) -> Result<(), RouteError> {
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or(RouteError::UnknownTrack(track))?;
        let sub = t
            .subscriptions
            .iter_mut()
            .find(|s| s.subscriber == subscriber)
            .ok_or(RouteError::NotSubscribed(subscriber, track))?;
        if sub.paused != receive {
            return Ok(());
        }
        sub.paused = !receive;
        sub.current = None;
        let target = sub.target;
        if sub.wants_keyframe() {
            self.request_keyframe_for(track, target, now);
        }
        Ok(())
    }

    /// The track `publisher` sends on its m-line `mid`, if one is published.
    pub fn track_by_mid(&self, publisher: ParticipantId, mid: Mid) -> Option<TrackId> {
        self.by_in_mid.get(&(publisher, mid)).copied()
    }

    /// The track `subscriber` receives on its m-line `out_mid`, if any.
    pub fn track_by_out_mid(&self, subscriber: ParticipantId, out_mid: Mid) -> Option<TrackId> {
        self.by_out_mid.get(&(subscriber, out_mid)).copied()
    }

    /// Everything known about a track.
    pub fn track(&self, track: TrackId) -> Option<&TrackInfo> {
        self.tracks.get(&track).map(|t| &t.info)
    }

    /// A frame of `track`, layer `rid`, arrived. Returns where to write it; subscriptions that
    /// waited for a keyframe of this layer start (or switch) here.
    pub fn on_media(
        &mut self,
        track: TrackId,
        rid: Option<Rid>,
        is_keyframe: bool,
        _now: Instant,
    ) -> &[Forward] {
        self.forward_buf.clear();
        let Some(t) = self.tracks.get_mut(&track) else {
            return &self.forward_buf;
        };
        // Every audio frame can start a stream.
        let starts = is_keyframe || t.info.kind == MediaKind::Audio;
        for sub in &mut t.subscriptions {
            let Some(out_mid) = sub.out_mid.filter(|_| !sub.paused) else {
                continue;
            };
            let forward = if sub.current == Some(rid) {
                // Already on this layer. A keyframe of it completes nothing else.
                true
            } else if sub.target == rid && starts {
                sub.current = Some(rid);
                true
            } else {
                false
            };
            if forward {
                self.forward_buf.push(Forward {
                    subscriber: sub.subscriber,
                    out_mid,
                });
            }
        }
        &self.forward_buf
    }

    /// A subscriber asked for a keyframe on its m-line `out_mid` (its decoder lost state).
    /// Forwarded to the publisher, rate-limited.
    pub fn on_subscriber_keyframe_request(
        &mut self,
        subscriber: ParticipantId,
        out_mid: Mid,
        now: Instant,
    ) {
        let Some(track) = self.track_by_out_mid(subscriber, out_mid) else {
            return;
        };
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        let layer = t
            .subscriptions
            .iter()
            .find(|s| s.subscriber == subscriber)
            .map(|s| s.current.unwrap_or(s.target));
        if let Some(layer) = layer {
            self.request_keyframe_for(track, layer, now);
        }
    }

    /// The publisher's stream had a gap: ask it for a keyframe, rate-limited.
    pub fn on_media_gap(&mut self, track: TrackId, rid: Option<Rid>, now: Instant) {
        self.request_keyframe_for(track, rid, now);
    }

    /// Queues a keyframe request for one layer unless one was sent less than
    /// [`Limits::keyframe_request_interval`] ago; either way arms the retry timer.
    fn request_keyframe_for(&mut self, track: TrackId, rid: Option<Rid>, now: Instant) {
        let interval = self.limits.keyframe_request_interval;
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if t.info.kind != MediaKind::Video {
            return;
        }
        let last = t.keyframe_requests.iter_mut().find(|(r, _)| *r == rid);
        let next_allowed = match last {
            Some((_, at)) if now < *at + interval => *at + interval,
            Some((_, at)) => {
                *at = now;
                push_keyframe_request(&mut self.outputs, &t.info, rid);
                now + interval
            }
            None => {
                t.keyframe_requests.push((rid, now));
                push_keyframe_request(&mut self.outputs, &t.info, rid);
                now + interval
            }
        };
        self.keyframe_timeout = Some(
            self.keyframe_timeout
                .map_or(next_allowed, |t| t.min(next_allowed)),
        );
    }

    /// When [`Router::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.keyframe_timeout
    }

    /// Re-requests keyframes for subscriptions still waiting for one.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.keyframe_timeout {
            Some(t) if t <= now => {}
            _ => return,
        }
        self.keyframe_timeout = None;
        // Only when the timer fires: a scan of the tracks, not per packet.
        let mut wanted: Vec<(TrackId, Option<Rid>)> = Vec::new();
        for (id, t) in &self.tracks {
            if t.info.kind != MediaKind::Video {
                continue;
            }
            for sub in &t.subscriptions {
                if sub.wants_keyframe() && !wanted.contains(&(*id, sub.target)) {
                    wanted.push((*id, sub.target));
                }
            }
        }
        for (track, rid) in wanted {
            self.request_keyframe_for(track, rid, now);
        }
    }

    /// The next thing the worker must do, if any.
    pub fn poll_output(&mut self) -> Option<RouterOutput> {
        self.outputs.pop_front()
    }

    /// Where `subscriber`'s subscription to `track` stands.
    pub fn subscription_state(
        &self,
        subscriber: ParticipantId,
        track: TrackId,
    ) -> Option<SubscriptionState> {
        self.tracks
            .get(&track)?
            .subscriptions
            .iter()
            .find(|s| s.subscriber == subscriber)
            .map(Subscription::state)
    }

    /// The room `participant` is in.
    pub fn room_of(&self, participant: ParticipantId) -> Option<&RoomId> {
        self.participants.get(&participant).map(|p| &p.room)
    }

    /// Who is in `room`, in joining order (empty for a room that does not exist). The worker
    /// fans data-channel messages out over it.
    pub fn participants_in(&self, room: &RoomId) -> &[ParticipantId] {
        self.rooms
            .get(room)
            .map_or(&[], |r| r.participants.as_slice())
    }

    /// The tracks `participant` publishes.
    pub fn published_by(&self, participant: ParticipantId) -> &[TrackId] {
        self.participants
            .get(&participant)
            .map_or(&[], |p| p.published.as_slice())
    }

    /// The tracks `subscriber` receives (or will, once negotiated). Walks every track: for
    /// admin views, not the media path.
    pub fn subscribed_by(&self, subscriber: ParticipantId) -> Vec<TrackId> {
        let mut tracks: Vec<TrackId> = self
            .tracks
            .values()
            .filter(|t| t.subscriptions.iter().any(|s| s.subscriber == subscriber))
            .map(|t| t.info.id)
            .collect();
        tracks.sort();
        tracks
    }

    /// Counts of everything the router holds.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            rooms: self.rooms.len(),
            participants: self.participants.len(),
            tracks: self.tracks.len(),
            subscriptions: self.tracks.values().map(|t| t.subscriptions.len()).sum(),
        }
    }
}

/// Counts of what a [`Router`] holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Rooms with at least one participant.
    pub rooms: usize,
    /// Participants in all rooms.
    pub participants: usize,
    /// Published tracks.
    pub tracks: usize,
    /// Subscriptions (one per track and receiving participant).
    pub subscriptions: usize,
}

fn subscribe(outputs: &mut VecDeque<RouterOutput>, track: &mut Track, subscriber: ParticipantId) {
    let target = track.default_layer();
    track.subscriptions.push(Subscription {
        subscriber,
        out_mid: None,
        target,
        current: None,
        paused: false,
    });
    outputs.push_back(RouterOutput::Subscribe {
        subscriber,
        track: track.info.id,
    });
}

fn push_keyframe_request(outputs: &mut VecDeque<RouterOutput>, info: &TrackInfo, rid: Option<Rid>) {
    outputs.push_back(RouterOutput::RequestKeyframe {
        publisher: info.publisher,
        mid: info.mid,
        rid,
    });
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
