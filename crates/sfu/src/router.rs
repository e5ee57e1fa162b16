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
//! Layer choice (see [`Quality`] for the tuning): each layer's bitrate is measured from the
//! incoming frames ([`Router::measure`]); per subscriber, the layers of its video
//! subscriptions are chosen so that their rates, after its audio, fit its bandwidth estimate
//! ([`Router::set_estimate`], from str0m's congestion control): each gets its lowest layer,
//! then they go up one layer at a time in turn (screen shares first) while the total fits. A
//! lower estimate lowers layers at once; a layer goes up only if the lowest estimate of the
//! last [`Quality::layer_up_hold`] affords it, so an estimate hovering around a threshold does
//! not flap. [`Router::select_layer`] and [`Router::set_max_resolution`] cap the choice per
//! subscription. A new target layer still starts only at its keyframe.
//!
//! Audio levels ([`Router::on_audio_level`], RFC 6464) are smoothed per track; every
//! [`Quality::tick`] the loudest speaking participant of each room is checked and becomes the
//! dominant speaker once it has led for [`Quality::dominant_speaker_hold`]
//! ([`RouterOutput::DominantSpeaker`]).
//!
//! [`Router::on_media`] is the per-frame entry point; it returns the subscribers to write the
//! frame to in a buffer the router reuses, so forwarding does not allocate.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid, Rid};

use crate::error::RouteError;
use crate::ids::{ParticipantId, RoomId, TrackId, TrackInfo, TrackSource};
use crate::quality::{
    Demand, EstimateHistory, LAYER_IDLE, LayerMeter, LevelMeter, Quality, Speakers, allocate,
    covering_layer, rank_layers,
};

/// Layers measured per track at most (browsers send up to three).
const MAX_LAYERS: usize = 8;

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
    /// Tell `subscriber`'s congestion control what to aim for (str0m's
    /// `Bwe::set_bitrate`): `desired` is what its best allowed layers need, `minimum` what
    /// the next layer up needs (padding may fill up to it, so the estimate can grow).
    SetBitrate {
        /// Whose session.
        subscriber: ParticipantId,
        /// Bit/s to sustain, with padding if media sends less.
        minimum: u64,
        /// Bit/s to probe for.
        desired: u64,
    },
    /// `participant` became the dominant speaker of `room`.
    DominantSpeaker {
        /// The room.
        room: RoomId,
        /// Who speaks.
        participant: ParticipantId,
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
    /// Paused with `set_receiving(false)`.
    paused: bool,
    /// Hidden by a 0×0 tile size.
    hidden: bool,
    /// The highest layer allowed (`select_layer`).
    max_layer: Option<Rid>,
    /// The tile size the subscriber shows the track at (`set_max_resolution`).
    max_size: Option<(u32, u32)>,
}

impl Subscription {
    fn receiving(&self) -> bool {
        !self.paused && !self.hidden
    }

    fn state(&self) -> SubscriptionState {
        if !self.receiving() {
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
        self.receiving() && self.out_mid.is_some() && self.current != Some(self.target)
    }
}

#[derive(Debug)]
struct Track {
    info: TrackInfo,
    subscriptions: Vec<Subscription>,
    /// Last keyframe request per layer.
    keyframe_requests: Vec<(Option<Rid>, Instant)>,
    /// Measured rate and size per incoming layer (`rid`, or `None` without simulcast).
    meters: Vec<LayerMeter>,
    /// When the first frame arrived.
    first_media: Option<Instant>,
    /// The smoothed audio level (audio tracks whose packets carry it).
    level: Option<LevelMeter>,
}

impl Track {
    fn default_layer(&self) -> Option<Rid> {
        self.info.layers.first().copied()
    }

    fn subscription(&self, subscriber: ParticipantId) -> Option<&Subscription> {
        self.subscriptions
            .iter()
            .find(|s| s.subscriber == subscriber)
    }

    /// Whether every layer the publisher sends has had time to be measured.
    fn settled(&self, now: Instant) -> bool {
        self.first_media
            .is_some_and(|t| now.saturating_duration_since(t) >= LAYER_IDLE)
    }

    /// The measured rate of a track without layers (audio), if it is flowing.
    fn rate(&self, now: Instant) -> u64 {
        self.meters
            .first()
            .filter(|m| m.flowing(now))
            .and_then(|m| m.bps)
            .unwrap_or(0)
    }
}

#[derive(Debug)]
struct Participant {
    room: RoomId,
    published: Vec<TrackId>,
    /// The tracks it receives (or will, once negotiated).
    subscribed: Vec<TrackId>,
    /// Bandwidth estimates of the engine's sending towards it.
    estimate: EstimateHistory,
    /// The last [`RouterOutput::SetBitrate`] for it: (minimum, desired).
    bitrate_hint: Option<(u64, u64)>,
}

impl Participant {
    fn new(room: RoomId, subscribed: Vec<TrackId>) -> Self {
        Participant {
            room,
            published: Vec::new(),
            subscribed,
            estimate: EstimateHistory::default(),
            bitrate_hint: None,
        }
    }
}

#[derive(Debug, Default)]
struct Room {
    participants: Vec<ParticipantId>,
    speakers: Speakers<ParticipantId>,
}

/// One video subscription in a layer allocation: its track and candidate layers, in the
/// order of the [`Demand`] that goes with it.
struct Plan {
    track: TrackId,
    /// Screen shares first, then by track.
    priority: (bool, TrackId),
    layers: Vec<Option<Rid>>,
}

/// The routing core. See the module documentation.
#[derive(Debug)]
pub struct Router {
    limits: Limits,
    quality: Quality,
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
    /// When layer choices and dominant speakers are next re-evaluated; set once media flows.
    quality_tick: Option<Instant>,
}

impl Router {
    /// An empty router with these limits and the default [`Quality`] tuning.
    pub fn new(limits: Limits) -> Self {
        Router::with_quality(limits, Quality::default())
    }

    /// An empty router with these limits and quality tuning.
    pub fn with_quality(limits: Limits, quality: Quality) -> Self {
        Router {
            limits,
            quality,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            tracks: HashMap::new(),
            by_in_mid: HashMap::new(),
            by_out_mid: HashMap::new(),
            next_track: 1,
            outputs: VecDeque::new(),
            forward_buf: Vec::new(),
            keyframe_timeout: None,
            quality_tick: None,
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
        let mut subscribed = Vec::new();
        for other in &members.participants {
            let Some(p) = self.participants.get(other) else {
                continue;
            };
            for track_id in &p.published {
                if let Some(track) = self.tracks.get_mut(track_id) {
                    subscribe(&mut self.outputs, track, participant);
                    subscribed.push(*track_id);
                }
            }
        }
        members.participants.push(participant);
        self.participants
            .insert(participant, Participant::new(room, subscribed));
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
            room.speakers.forget(participant);
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
        let room = p.room.clone();
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
            meters: Vec::new(),
            first_media: None,
            level: None,
        };
        if let Some(room) = self.rooms.get(&room) {
            for &other in &room.participants {
                if other == participant {
                    continue;
                }
                subscribe(&mut self.outputs, &mut track, other);
                if let Some(o) = self.participants.get_mut(&other) {
                    o.subscribed.push(id);
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
            if let Some(p) = self.participants.get_mut(&sub.subscriber) {
                p.subscribed.retain(|&t| t != id);
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
        let video = t.info.kind == MediaKind::Video;
        self.by_out_mid.insert((subscriber, out_mid), track);
        if video {
            // Start on the layer that fits now (no hold: nothing to flap from yet).
            self.allocate_for(subscriber, now);
            self.request_keyframe_if_waiting(subscriber, track, now);
            // Whichever layer's keyframe comes first starts the stream (see `on_media`).
            let layers = self.tracks.get(&track).map(|t| t.info.layers.clone());
            for rid in layers.into_iter().flatten() {
                self.request_keyframe_for(track, Some(rid), now);
            }
        }
        Ok(())
    }

    /// Caps the simulcast layer `subscriber` receives of `track` at `rid`: it gets that layer,
    /// or a lower one when its bandwidth estimate or tile size calls for less. Until the
    /// layers are measured (the first second of the track) it simply gets `rid`. A switch
    /// happens at the next keyframe of the new layer, which is requested now.
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
        sub.max_layer = Some(rid);
        let t = &self.tracks[&track];
        let measured = t
            .subscription(subscriber)
            .is_some_and(|s| s.out_mid.is_some() && plan_for(t, s, now).is_some());
        if measured {
            self.allocate_for(subscriber, now);
        } else {
            self.retarget(subscriber, track, Some(rid), now);
        }
        Ok(())
    }

    /// The subscriber shows `track` in a tile of `width`×`height` pixels: its layer is capped
    /// to the smallest one that covers the tile. Layer sizes come from the keyframes when the
    /// codec tells them (VP8); otherwise the top layer is taken as its announced size, or
    /// 1280×720, and each lower one as half the one above. 0×0 hides the track: nothing is
    /// forwarded (as with [`Router::set_receiving`]`(false)`, which does not undo it) until a
    /// non-zero size comes, then from a keyframe. Sizes matter only for simulcast video; 0×0
    /// hides any track.
    pub fn set_max_resolution(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        width: u32,
        height: u32,
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
        if width == 0 || height == 0 {
            if !sub.hidden {
                sub.hidden = true;
                sub.current = None;
            }
            return Ok(());
        }
        sub.max_size = Some((width, height));
        if sub.hidden {
            sub.hidden = false;
            sub.current = None;
        }
        self.allocate_for(subscriber, now);
        self.request_keyframe_if_waiting(subscriber, track, now);
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
        if receive {
            self.allocate_for(subscriber, now);
            self.request_keyframe_if_waiting(subscriber, track, now);
        }
        Ok(())
    }

    /// A frame of `bytes` arrived on layer `rid` of `track`: it counts towards the layer's
    /// measured bitrate, which the layer choice uses.
    pub fn measure(&mut self, track: TrackId, rid: Option<Rid>, bytes: usize, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        t.first_media.get_or_insert(now);
        match t.meters.iter().position(|m| m.rid == rid) {
            Some(i) => t.meters[i].record(bytes, now),
            None if t.meters.len() < MAX_LAYERS => {
                let mut m = LayerMeter::new(rid, now);
                m.record(bytes, now);
                t.meters.push(m);
            }
            None => {}
        }
        self.arm_quality_tick(now);
    }

    /// Media flows: layers and speakers are re-evaluated every tick from now on.
    fn arm_quality_tick(&mut self, now: Instant) {
        if self.quality_tick.is_none() {
            self.quality_tick = Some(now + self.quality.tick);
        }
    }

    /// A keyframe of layer `rid` of `track` announced its size (the worker reads it from VP8
    /// keyframes); tile sizes are compared with it.
    pub fn on_video_size(&mut self, track: TrackId, rid: Option<Rid>, width: u32, height: u32) {
        if let Some(m) = self
            .tracks
            .get_mut(&track)
            .and_then(|t| t.meters.iter_mut().find(|m| m.rid == rid))
        {
            m.size = Some((width, height));
        }
    }

    /// A packet of audio `track` carried `level` (RFC 6464 attenuation, 0 the loudest, 127
    /// silence; str0m reports it as `-level` dBov).
    pub fn on_audio_level(&mut self, track: TrackId, level: u8, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if t.info.kind != MediaKind::Audio {
            return;
        }
        match &mut t.level {
            Some(m) => m.update(level, now),
            None => t.level = Some(LevelMeter::new(level, now)),
        }
        self.arm_quality_tick(now);
    }

    /// The engine's bandwidth estimate towards `subscriber` (bit/s, from str0m's congestion
    /// control) changed: its layers are chosen again now.
    pub fn set_estimate(&mut self, subscriber: ParticipantId, bps: u64, now: Instant) {
        let hold = self.quality.layer_up_hold;
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return;
        };
        p.estimate.push(bps, now, hold);
        self.allocate_for(subscriber, now);
    }

    /// The latest bandwidth estimate towards `participant`, in bit/s.
    pub fn estimate(&self, participant: ParticipantId) -> Option<u64> {
        self.participants.get(&participant)?.estimate.current()
    }

    /// The smoothed audio level of `participant`'s microphone (RFC 6464 attenuation: 0 the
    /// loudest, 127 silence), if one is published and its packets carried a level in the last
    /// second.
    pub fn audio_level(&self, participant: ParticipantId, now: Instant) -> Option<u8> {
        microphone_level(&self.participants, &self.tracks, participant, now)
    }

    /// The dominant speaker of `room`, once there has been one.
    pub fn dominant_speaker(&self, room: &RoomId) -> Option<ParticipantId> {
        self.rooms.get(room)?.speakers.dominant
    }

    /// Chooses the layers of `subscriber`'s video subscriptions for its bandwidth estimate
    /// and caps (see the module documentation), and updates its congestion-control hint.
    fn allocate_for(&mut self, subscriber: ParticipantId, now: Instant) {
        let hold = self.quality.layer_up_hold;
        let Some(p) = self.participants.get(&subscriber) else {
            return;
        };
        let estimate = p.estimate.current();
        let held = p.estimate.held(now, hold);
        let mut audio: u64 = 0;
        let mut plans: Vec<(Plan, Demand)> = Vec::new();
        // Video subscriptions whose layers are not measured yet.
        let mut unmeasured = 0;
        for track in &p.subscribed {
            let Some(t) = self.tracks.get(track) else {
                continue;
            };
            let Some(sub) = t.subscription(subscriber) else {
                continue;
            };
            if !sub.receiving() || sub.out_mid.is_none() {
                continue;
            }
            match t.info.kind {
                MediaKind::Audio => audio = audio.saturating_add(t.rate(now)),
                MediaKind::Video => match plan_for(t, sub, now) {
                    Some(plan) => plans.push(plan),
                    None => unmeasured += 1,
                },
            }
        }
        if plans.is_empty() && p.bitrate_hint.is_none() {
            // Nothing to tell congestion control yet (see below).
            return;
        }
        plans.sort_by_key(|(plan, _)| plan.priority);
        let (plans, mut demands): (Vec<Plan>, Vec<Demand>) = plans.into_iter().unzip();
        let budget = estimate.map_or(u64::MAX, |e| e.saturating_sub(audio));
        let up_budget = held.map_or(u64::MAX, |e| e.saturating_sub(audio));
        let used = allocate(budget, up_budget, &mut demands);

        let desired = demands
            .iter()
            .filter_map(|d| d.rates.last())
            .fold(audio, |sum, &r| sum.saturating_add(r));
        let step = demands
            .iter()
            .filter_map(|d| Some(d.rates.get(d.chosen + 1)?.saturating_sub(d.rates[d.chosen])))
            .min()
            .unwrap_or(0);
        let minimum = audio.saturating_add(used).saturating_add(step).min(desired);
        for (plan, d) in plans.iter().zip(&demands) {
            self.retarget(subscriber, plan.track, plan.layers[d.chosen], now);
        }
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return;
        };
        // str0m caps its probes at twice the desired rate and makes its initial ones only
        // once: telling it before every video layer is measured would cap them far too low.
        let differs = |a: u64, b: u64| a.abs_diff(b).saturating_mul(10) > a.max(b);
        let changed = p
            .bitrate_hint
            .is_none_or(|(m, d)| differs(m, minimum) || differs(d, desired));
        if estimate.is_some() && unmeasured == 0 && changed {
            p.bitrate_hint = Some((minimum, desired));
            self.outputs.push_back(RouterOutput::SetBitrate {
                subscriber,
                minimum,
                desired,
            });
        }
    }

    /// Sets the layer `subscriber` wants of `track`; if it must wait for a keyframe of it, one
    /// is requested.
    fn retarget(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        rid: Option<Rid>,
        now: Instant,
    ) {
        let Some(sub) = self.tracks.get_mut(&track).and_then(|t| {
            t.subscriptions
                .iter_mut()
                .find(|s| s.subscriber == subscriber)
        }) else {
            return;
        };
        if sub.target == rid {
            return;
        }
        sub.target = rid;
        if sub.wants_keyframe() {
            self.request_keyframe_for(track, rid, now);
        }
    }

    /// Requests a keyframe of the target layer if the subscription waits for one.
    fn request_keyframe_if_waiting(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        now: Instant,
    ) {
        let target = self
            .tracks
            .get(&track)
            .and_then(|t| t.subscription(subscriber))
            .filter(|s| s.wants_keyframe())
            .map(|s| s.target);
        if let Some(target) = target {
            self.request_keyframe_for(track, target, now);
        }
    }

    /// Every [`Quality::tick`]: layers for every subscriber (rates moved), and each room's
    /// dominant speaker.
    fn quality_tick(&mut self, now: Instant) {
        let subscribers: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| !p.subscribed.is_empty())
            .map(|(&id, _)| id)
            .collect();
        for subscriber in subscribers {
            self.allocate_for(subscriber, now);
        }
        let (hold, speaking) = (
            self.quality.dominant_speaker_hold,
            self.quality.speaking_level,
        );
        for (id, room) in &mut self.rooms {
            let dominant = room.speakers.dominant;
            // The loudest; on a tie the dominant speaker stays.
            let loudest = room
                .participants
                .iter()
                .filter_map(|&p| {
                    let level = microphone_level(&self.participants, &self.tracks, p, now)?;
                    (level <= speaking).then_some((level, Some(p) != dominant, p))
                })
                .min()
                .map(|(_, _, p)| p);
            if let Some(participant) = room.speakers.update(loudest, now, hold) {
                self.outputs.push_back(RouterOutput::DominantSpeaker {
                    room: id.clone(),
                    participant,
                });
            }
        }
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
            let Some(out_mid) = sub.out_mid.filter(|_| sub.receiving()) else {
                continue;
            };
            let forward = if sub.current == Some(rid) {
                // Already on this layer. A keyframe of it completes nothing else.
                true
            } else if starts && (sub.target == rid || (sub.current.is_none() && is_keyframe)) {
                // A new subscriber starts on the first keyframe of any layer rather than
                // wait for its target's (a late joiner sees video sooner) and moves to the
                // target at that layer's keyframe.
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
        match (self.keyframe_timeout, self.quality_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Re-requests keyframes for subscriptions still waiting for one, and every
    /// [`Quality::tick`] chooses layers and dominant speakers again.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.quality_tick.is_some_and(|t| t <= now) {
            self.quality_tick = (!self.tracks.is_empty()).then(|| now + self.quality.tick);
            self.quality_tick(now);
        }
        self.retry_keyframes(now);
    }

    fn retry_keyframes(&mut self, now: Instant) {
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

    /// The tracks `subscriber` receives (or will, once negotiated), sorted.
    pub fn subscribed_by(&self, subscriber: ParticipantId) -> Vec<TrackId> {
        let mut tracks = self
            .participants
            .get(&subscriber)
            .map_or_else(Vec::new, |p| p.subscribed.clone());
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
        hidden: false,
        max_layer: None,
        max_size: None,
    });
    outputs.push_back(RouterOutput::Subscribe {
        subscriber,
        track: track.info.id,
    });
}

/// The candidate layers of a video subscription in ascending quality, capped by its
/// `select_layer` choice and tile size, with their measured rates; `None` while the track's
/// layers are not measured yet (or the chosen layer is not among the flowing ones), when the
/// subscription keeps the layer it has.
fn plan_for(t: &Track, sub: &Subscription, now: Instant) -> Option<(Plan, Demand)> {
    if !t.settled(now) {
        return None;
    }
    let ranked = rank_layers(&t.meters, now);
    let mut top = ranked.len().checked_sub(1)?;
    if let Some(max) = sub.max_layer {
        top = top.min(ranked.iter().position(|m| m.rid == Some(max))?);
    }
    if let Some((width, height)) = sub.max_size {
        top = top.min(covering_layer(&ranked, width, height));
    }
    // Indexes in the uncapped order: a cap below the current layer is a step down.
    let current = ranked.iter().position(|m| m.rid == sub.target);
    let ranked = &ranked[..=top];
    let plan = Plan {
        track: t.info.id,
        priority: (t.info.source != TrackSource::ScreenShare, t.info.id),
        layers: ranked.iter().map(|m| m.rid).collect(),
    };
    let demand = Demand {
        rates: ranked.iter().map(|m| m.bps.unwrap_or(0)).collect(),
        current,
        chosen: 0,
    };
    Some((plan, demand))
}

/// The smoothed level of `participant`'s loudest microphone track.
fn microphone_level(
    participants: &HashMap<ParticipantId, Participant>,
    tracks: &HashMap<TrackId, Track>,
    participant: ParticipantId,
    now: Instant,
) -> Option<u8> {
    participants
        .get(&participant)?
        .published
        .iter()
        .filter_map(|id| tracks.get(id))
        .filter(|t| t.info.source == TrackSource::Microphone)
        .filter_map(|t| t.level?.level(now))
        .min()
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
