//! The bridge between signaling and the SFU media engine (`switchboard-sfu`).
//!
//! The signaling core queues a [`MediaAction`] for everything SFU rooms need from the engine
//! (a participant entered or left, its offer or answer for the server); the hub adds the
//! participant's outbox and hands it here without waiting ([`BridgeHandle::send`]). This task
//! carries the actions out on the engine's async API one at a time, so one participant's
//! offer and answer keep their order, and writes what the engine says (answers, its own
//! offers, failures) straight into the participant's outbox as messages `from: "sfu"`.
//!
//! A participant's engine session starts with its first offer, not with its join, so a
//! session the engine gave up on (ICE never completed, connection lost) is simply started
//! again by the client's next offer after `media_failed`. Each session gets a fresh engine
//! id, so a late event about an old session is never taken for the new one.
//!
//! An engine offer that could not be delivered (the participant's socket was down, within
//! its resume grace) is kept and sent again when it resumes: the engine waits for an answer
//! before offering again, so a lost one would stall that participant's subscriptions.

use crate::config::Config;
use crate::hub::{Out, Outbox};
use axum::extract::ws::Utf8Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use switchboard_proto::{
    ErrorCode, MediaSource, ParticipantId, SFU_PARTICIPANT, ServerMessage, TrackSources,
};
use switchboard_sfu::{
    LeaveReason, Limits, ParticipantHandle, Quality, RoomId, Sfu, SfuError, SfuEvent, TrackSource,
    WorkerConfig, WorkerStats,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// A [`MediaAction`](switchboard_signal::MediaAction) with the outbox the hub knows.
#[derive(Debug)]
pub enum BridgeCommand {
    Join {
        participant: ParticipantId,
        room: String,
        outbox: Outbox,
    },
    Attach {
        participant: ParticipantId,
        outbox: Outbox,
    },
    Leave {
        participant: ParticipantId,
    },
    Offer {
        participant: ParticipantId,
        sdp: String,
        tracks: TrackSources,
    },
    Answer {
        participant: ParticipantId,
        sdp: String,
    },
    View {
        participant: ParticipantId,
        mid: String,
        width: u32,
        height: u32,
    },
    /// The media side of one room for `/api/rooms/{room}`: `None` if the engine has no
    /// such room.
    Describe {
        room: String,
        reply: oneshot::Sender<Option<Value>>,
    },
}

/// How the hub and the HTTP front reach the bridge and the engine. Cheap to clone.
#[derive(Clone)]
pub struct BridgeHandle {
    commands: mpsc::UnboundedSender<BridgeCommand>,
    sfu: Sfu,
}

impl BridgeHandle {
    /// Queues a command. Never waits: the hub must not. The queue is bounded in practice by
    /// the signaling rate limit of the clients whose actions it carries.
    pub fn send(&self, command: BridgeCommand) {
        if self.commands.send(command).is_err() {
            tracing::warn!("SFU bridge stopped; media action dropped");
        }
    }

    /// The media side of `room` (participants, their tracks, subscriptions and bytes), by
    /// signaling participant id.
    pub async fn describe(&self, room: String) -> Option<Value> {
        let (reply, rx) = oneshot::channel();
        self.send(BridgeCommand::Describe { room, reply });
        rx.await.ok().flatten()
    }

    /// Appends the engine's counters to `/metrics`.
    pub async fn render_metrics(&self, out: &mut String) {
        let Ok(workers) = self.sfu.stats().await else {
            return;
        };
        let sum = |f: fn(&WorkerStats) -> u64| workers.iter().map(f).sum::<u64>();
        let gauges: [(&str, &str, u64); 7] = [
            ("sfu_workers", "SFU media workers.", workers.len() as u64),
            (
                "sfu_rooms",
                "Rooms with media in the SFU.",
                sum(|w| w.router.rooms as u64),
            ),
            (
                "sfu_participants",
                "Participants with an SFU media session.",
                sum(|w| w.router.participants as u64),
            ),
            (
                "sfu_connected",
                "SFU media sessions with ICE and DTLS up.",
                sum(|w| w.connected as u64),
            ),
            (
                "sfu_tracks",
                "Tracks published to the SFU.",
                sum(|w| w.router.tracks as u64),
            ),
            (
                "sfu_subscriptions",
                "SFU subscriptions (track x receiving participant).",
                sum(|w| w.router.subscriptions as u64),
            ),
            (
                "sfu_tcp_connections",
                "ICE-TCP connections open to the SFU.",
                sum(|w| w.tcp_connections as u64),
            ),
        ];
        let counters: [(&str, &str, u64); 14] = [
            (
                "sfu_datagrams_received_total",
                "UDP datagrams and ICE-TCP frames received by the SFU.",
                sum(|w| w.datagrams_in),
            ),
            (
                "sfu_datagrams_dropped_total",
                "SFU datagrams no session accepted.",
                sum(|w| w.datagrams_dropped),
            ),
            (
                "sfu_send_errors_total",
                "SFU datagrams that could not be sent.",
                sum(|w| w.send_errors),
            ),
            (
                "sfu_frames_forwarded_total",
                "Media frames forwarded to subscribers.",
                sum(|w| w.frames_forwarded),
            ),
            (
                "sfu_frames_dropped_total",
                "Media frames a subscriber could not take.",
                sum(|w| w.frames_dropped),
            ),
            (
                "sfu_keyframe_requests_total",
                "Keyframe requests (PLI) sent to publishers.",
                sum(|w| w.keyframe_requests),
            ),
            (
                "sfu_data_messages_forwarded_total",
                "Data channel messages fanned out.",
                sum(|w| w.data_messages_forwarded),
            ),
            (
                "sfu_data_messages_dropped_total",
                "Data channel messages dropped for slow receivers.",
                sum(|w| w.data_messages_dropped),
            ),
            (
                "sfu_events_dropped_total",
                "Engine events dropped (queue full).",
                sum(|w| w.events_dropped),
            ),
            (
                "sfu_tcp_accepted_total",
                "ICE-TCP connections accepted.",
                sum(|w| w.tcp_accepted),
            ),
            (
                "sfu_tcp_refused_total",
                "ICE-TCP connections closed on arrival (too many open or unproven).",
                sum(|w| w.tcp_refused),
            ),
            (
                "sfu_tcp_invalid_total",
                "ICE-TCP connections closed for what they sent (no ICE check first, oversized frame).",
                sum(|w| w.tcp_invalid),
            ),
            (
                "sfu_tcp_timeouts_total",
                "ICE-TCP connections closed for sending no ICE check in time.",
                sum(|w| w.tcp_timeouts),
            ),
            (
                "sfu_tcp_overflows_total",
                "ICE-TCP connections closed for not reading what their session sent.",
                sum(|w| w.tcp_overflows),
            ),
        ];
        use std::fmt::Write;
        for (kind, list) in [("gauge", &gauges[..]), ("counter", &counters[..])] {
            for (name, help, value) in list {
                let _ = writeln!(out, "# HELP switchboard_{name} {help}");
                let _ = writeln!(out, "# TYPE switchboard_{name} {kind}");
                let _ = writeln!(out, "switchboard_{name} {value}");
            }
        }
    }

    /// The UDP addresses of the media workers, as bound.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.sfu.workers().iter().map(|w| w.local_addr()).collect()
    }
}

/// Starts the engine's workers and the bridge task; `None` when the SFU is off.
pub async fn start(
    config: &Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Option<(BridgeHandle, JoinHandle<()>)>, SfuError> {
    let Some(bind) = config.sfu_addr else {
        return Ok(None);
    };
    let workers = match config.sfu_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let defaults = WorkerConfig::default();
    let worker_config = WorkerConfig {
        bind,
        public_ip: config.sfu_public_ip,
        udp: config.sfu_udp,
        tcp: config.sfu_tcp,
        // The signaling core enforces the room sizes; the engine must not refuse earlier.
        limits: Limits {
            max_participants_per_room: config.max_sfu_participants + config.max_receivers,
            max_participants: defaults
                .limits
                .max_participants
                .max(config.max_sfu_participants + config.max_receivers),
            ..defaults.limits.clone()
        },
        quality: Quality {
            bandwidth_estimation: config.sfu_bandwidth_estimation,
            ..defaults.quality.clone()
        },
        ..defaults
    };
    let (sfu, events) = Sfu::spawn(worker_config, workers).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let bridge = Bridge {
        sfu: sfu.clone(),
        members: HashMap::new(),
        by_engine: HashMap::new(),
        next_engine_id: 1,
    };
    let task = tokio::spawn(async move {
        tokio::select! {
            () = bridge.run(rx, events) => {}
            _ = shutdown.changed() => {}
        }
    });
    Ok(Some((BridgeHandle { commands: tx, sfu }, task)))
}

struct Member {
    room: RoomId,
    outbox: Outbox,
    session: Option<Session>,
    /// The engine's latest offer while unanswered, to send again after a resume.
    unanswered: Option<Utf8Bytes>,
}

struct Session {
    engine_id: u64,
    handle: ParticipantHandle,
    /// An offer of the client's was accepted: the session has a WebRTC connection.
    negotiated: bool,
    /// The DTLS fingerprint of the client's accepted offers: another one means a new
    /// `RTCPeerConnection`, which needs a new session.
    fingerprint: Option<String>,
}

struct Bridge {
    sfu: Sfu,
    members: HashMap<ParticipantId, Member>,
    /// Engine id of each live session → its participant.
    by_engine: HashMap<u64, ParticipantId>,
    next_engine_id: u64,
}

impl Bridge {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<BridgeCommand>,
        mut events: mpsc::Receiver<SfuEvent>,
    ) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                Some(event) = events.recv() => self.event(event),
            }
        }
    }

    async fn command(&mut self, command: BridgeCommand) {
        match command {
            BridgeCommand::Join {
                participant,
                room,
                outbox,
            } => {
                self.members.insert(
                    participant,
                    Member {
                        room: RoomId::new(room),
                        outbox,
                        session: None,
                        unanswered: None,
                    },
                );
            }
            BridgeCommand::Attach {
                participant,
                outbox,
            } => {
                if let Some(member) = self.members.get_mut(&participant) {
                    member.outbox = outbox;
                    if let Some(offer) = member.unanswered.clone() {
                        deliver(&member.outbox, offer);
                    }
                }
            }
            BridgeCommand::Leave { participant } => {
                if let Some(member) = self.members.remove(&participant)
                    && let Some(session) = member.session
                {
                    self.by_engine.remove(&session.engine_id);
                    if let Err(e) = session.handle.leave().await {
                        tracing::debug!(%participant, "SFU leave: {e}");
                    }
                }
            }
            BridgeCommand::Offer {
                participant,
                sdp,
                tracks,
            } => self.offer(participant, &sdp, &tracks).await,
            BridgeCommand::Answer { participant, sdp } => self.answer(participant, &sdp).await,
            BridgeCommand::View {
                participant,
                mid,
                width,
                height,
            } => {
                let session = self
                    .members
                    .get(&participant)
                    .and_then(|m| m.session.as_ref());
                if let Some(session) = session
                    && let Err(e) = session.handle.set_view(&mid, width, height).await
                {
                    // A hint racing a renegotiation names a mid not (or no longer) in use.
                    tracing::debug!(%participant, "view hint ignored: {e}");
                }
            }
            BridgeCommand::Describe { room, reply } => {
                let _ = reply.send(self.describe(&room).await);
            }
        }
    }

    async fn describe(&self, room: &str) -> Option<Value> {
        let room = RoomId::new(room);
        let rooms = self.sfu.worker_for(&room).rooms().await.ok()?;
        let snapshot = rooms.into_iter().find(|r| r.room == room)?;
        let label = |engine: switchboard_sfu::ParticipantId| {
            self.by_engine
                .get(&engine.0)
                .cloned()
                .unwrap_or_else(|| engine.to_string())
        };
        let participants: Vec<Value> = snapshot
            .participants
            .iter()
            .map(|p| {
                let published: Vec<Value> = p
                    .published
                    .iter()
                    .map(|t| {
                        json!({
                            "track": t.id.to_string(),
                            "kind": if t.kind.is_audio() { "audio" } else { "video" },
                            "source": t.source.as_str(),
                            "layers": t.layers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({
                    "id": label(p.id),
                    "connected": p.connected,
                    "published": published,
                    "subscribed": p.subscribed.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                    "bytesIn": p.bytes_in,
                    "bytesOut": p.bytes_out,
                    "audioLevel": p.audio_level,
                    "bandwidthEstimate": p.bandwidth_estimate,
                })
            })
            .collect();
        Some(json!({ "participants": participants }))
    }

    async fn offer(&mut self, participant: ParticipantId, sdp: &str, tracks: &TrackSources) {
        let Some(member) = self.members.get_mut(&participant) else {
            return;
        };
        let fingerprint = dtls_fingerprint(sdp);
        // A client that rebuilt its connection offers from a new one: replace the session
        // now rather than let the old one time out.
        let replaced = member.session.as_ref().is_some_and(|s| {
            s.negotiated && fingerprint.is_some() && s.fingerprint.as_deref() != fingerprint
        });
        if replaced && let Some(old) = member.session.take() {
            tracing::debug!(%participant, "new connection: replacing the SFU session");
            self.by_engine.remove(&old.engine_id);
            let _ = old.handle.leave().await;
        }
        if member.session.is_none() {
            let engine_id = self.next_engine_id;
            self.next_engine_id += 1;
            let id = switchboard_sfu::ParticipantId(engine_id);
            match self.sfu.join(member.room.clone(), id, &participant).await {
                Ok(handle) => {
                    member.session = Some(Session {
                        engine_id,
                        handle,
                        negotiated: false,
                        fingerprint: None,
                    });
                    self.by_engine.insert(engine_id, participant.clone());
                }
                Err(e) => {
                    tracing::warn!(%participant, "cannot start an SFU session: {e}");
                    let message = format!("the server cannot start a media session: {e}");
                    send_error(&member.outbox, ErrorCode::MediaFailed, message);
                    return;
                }
            }
        }
        let Some(session) = &mut member.session else {
            return;
        };
        let sources: Vec<(String, TrackSource)> = tracks
            .iter()
            .map(|(mid, source)| (mid.clone(), engine_source(*source)))
            .collect();
        match session.handle.accept_offer(sdp, &sources).await {
            Ok(answer) => {
                session.negotiated = true;
                session.fingerprint = fingerprint.map(str::to_owned);
                // The engine drops its own offer when the client's crosses it.
                member.unanswered = None;
                send(
                    &member.outbox,
                    &ServerMessage::Answer {
                        from: SFU_PARTICIPANT.into(),
                        sdp: answer,
                    },
                );
            }
            Err(e) => {
                let code = refusal_code(&e);
                tracing::debug!(%participant, "SFU offer refused: {e}");
                send_error(&member.outbox, code, format!("offer refused: {e}"));
                // A session that never got a connection is not worth keeping; one that has
                // media keeps it (only the new description was refused).
                if (code == ErrorCode::MediaFailed || !session.negotiated)
                    && let Some(session) = member.session.take()
                {
                    self.by_engine.remove(&session.engine_id);
                    let _ = session.handle.leave().await;
                }
            }
        }
    }

    async fn answer(&mut self, participant: ParticipantId, sdp: &str) {
        let Some(member) = self.members.get_mut(&participant) else {
            return;
        };
        let Some(session) = &member.session else {
            let message = "no media session: send an offer first".to_owned();
            send_error(&member.outbox, ErrorCode::InvalidSdp, message);
            return;
        };
        match session.handle.accept_answer(sdp).await {
            Ok(()) => member.unanswered = None,
            Err(e) => {
                let code = refusal_code(&e);
                send_error(&member.outbox, code, format!("answer refused: {e}"));
            }
        }
    }

    fn event(&mut self, event: SfuEvent) {
        match event {
            SfuEvent::Offer { participant, sdp } => {
                let Some(member) = self.member_of(participant) else {
                    return;
                };
                let text = encode(&ServerMessage::Offer {
                    from: SFU_PARTICIPANT.into(),
                    sdp,
                });
                if let Some(text) = text {
                    member.unanswered = Some(text.clone());
                    deliver(&member.outbox, text);
                }
            }
            SfuEvent::Left {
                participant,
                reason,
            } => {
                let Some(id) = self.by_engine.remove(&participant.0) else {
                    return;
                };
                let Some(member) = self.members.get_mut(&id) else {
                    return;
                };
                // Dropping the handle would ask the engine to remove what it already has.
                if let Some(session) = member.session.take() {
                    std::mem::forget(session.handle);
                }
                member.unanswered = None;
                if reason != LeaveReason::Left {
                    tracing::info!(participant = %id, ?reason, "SFU session ended");
                    let message = format!(
                        "the server ended the media session ({}); send a new offer",
                        describe(reason)
                    );
                    send_error(&member.outbox, ErrorCode::MediaFailed, message);
                }
            }
            SfuEvent::Connected { participant } => {
                if let Some(id) = self.by_engine.get(&participant.0) {
                    tracing::debug!(participant = %id, "SFU session connected");
                }
            }
            SfuEvent::TrackPublished(_) | SfuEvent::TrackUnpublished { .. } => {}
            SfuEvent::DominantSpeaker { room, participant } => {
                let Some(id) = self.by_engine.get(&participant.0) else {
                    return;
                };
                let Some(text) = encode(&ServerMessage::DominantSpeaker { id: id.clone() }) else {
                    return;
                };
                for member in self.members.values().filter(|m| m.room == room) {
                    deliver(&member.outbox, text.clone());
                }
            }
        }
    }

    fn member_of(&mut self, engine: switchboard_sfu::ParticipantId) -> Option<&mut Member> {
        let id = self.by_engine.get(&engine.0)?;
        self.members.get_mut(id)
    }
}

/// What a client is told when the engine refuses its offer or answer: the description
/// itself (`invalid_sdp`), or the session (`media_failed`).
fn refusal_code(e: &SfuError) -> ErrorCode {
    match e {
        SfuError::Sdp(_) => ErrorCode::InvalidSdp,
        _ => ErrorCode::MediaFailed,
    }
}

/// The value of the first `a=fingerprint:` line (session or media level).
fn dtls_fingerprint(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=fingerprint:"))
}

fn engine_source(source: MediaSource) -> TrackSource {
    match source {
        MediaSource::Microphone => TrackSource::Microphone,
        MediaSource::Camera => TrackSource::Camera,
        MediaSource::Screen => TrackSource::ScreenShare,
        MediaSource::ScreenAudio => TrackSource::ScreenShareAudio,
    }
}

fn describe(reason: LeaveReason) -> &'static str {
    match reason {
        LeaveReason::Left => "left",
        LeaveReason::ConnectTimeout => "ICE and DTLS did not complete in time",
        LeaveReason::IceDisconnected => "the connection was lost",
        LeaveReason::Failed => "the WebRTC session failed",
    }
}

fn encode(msg: &ServerMessage) -> Option<Utf8Bytes> {
    match serde_json::to_string(msg) {
        Ok(text) => Some(Utf8Bytes::from(text)),
        Err(e) => {
            tracing::error!("cannot encode SFU message: {e}");
            None
        }
    }
}

fn send(outbox: &Outbox, msg: &ServerMessage) {
    if let Some(text) = encode(msg) {
        deliver(outbox, text);
    }
}

fn send_error(outbox: &Outbox, code: ErrorCode, message: String) {
    send(outbox, &ServerMessage::Error { code, message });
}

/// Into the outbox, or nowhere: a full outbox belongs to a client the hub is about to cut
/// off for being too slow, a closed one to a socket that is gone (a resume sends the
/// unanswered offer again).
fn deliver(outbox: &Outbox, text: Utf8Bytes) {
    if outbox.try_send(Out::Text(text)).is_err() {
        tracing::debug!("SFU message for a full or closed outbox dropped");
    }
}
