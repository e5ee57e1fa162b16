//! The worker's public face: its configuration, the handles the signaling side holds
//! ([`WorkerHandle`], [`ParticipantHandle`]), the [`SfuEvent`]s it hears back, counters and
//! room snapshots. Every call is a command over a bounded channel to the worker task, answered
//! on a oneshot; nothing here touches media.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use str0m::media::{Mid, Rid};
use tokio::sync::{mpsc, oneshot};

use crate::error::SfuError;
use crate::ids::{
    LeaveReason, ParticipantId, RoomId, TrackId, TrackInfo, TrackSource, check_label,
};
use crate::quality::Quality;
use crate::router::{Limits, RouterStats};
use crate::sdp::MAX_MEDIA_SECTIONS;
use crate::worker;

/// How a worker is set up. Defaults in one place: [`WorkerConfig::default`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where the media socket binds (UDP, and TCP on the same port when `tcp` is on). Port 0
    /// picks a free one.
    pub bind: SocketAddr,
    /// The address clients are told to send to (the ICE host candidates). Needed when `bind`
    /// is unspecified (`0.0.0.0`) or behind 1:1 NAT; the port is always the bound one.
    pub public_ip: Option<IpAddr>,
    /// Announce the UDP host candidate. Off, clients can only connect over TCP (the UDP
    /// socket stays bound and read all the same).
    pub udp: bool,
    /// Listen for ICE over TCP (RFC 6544, framed as RFC 4571) on the bound IP and port, and
    /// announce a passive TCP host candidate, for clients whose networks block UDP. ICE
    /// prefers UDP when both work: a TCP host candidate has a lower type preference.
    pub tcp: bool,
    /// TCP connections open at once, pending or not; more are closed as they come.
    pub tcp_max_connections: usize,
    /// TCP connections whose first ICE check has not arrived yet, at once; more are closed as
    /// they come.
    pub tcp_max_pending: usize,
    /// A TCP connection is closed unless an ICE check for one of the worker's sessions arrives
    /// on it this soon after it opened (one carrying anything else closes it at once).
    pub tcp_pending_timeout: Duration,
    /// Bytes waiting to be written to one TCP connection, beyond what the kernel buffers; a
    /// connection that needs more cannot keep up and is closed.
    pub tcp_send_buffer: usize,
    /// A participant whose ICE and DTLS are not up this long after joining is removed.
    pub connect_timeout: Duration,
    /// A connected participant from whom nothing (not even an ICE consent check, which
    /// browsers send every few seconds) arrived this long is removed.
    pub idle_timeout: Duration,
    /// Rooms, participants, tracks, keyframe request rate.
    pub limits: Limits,
    /// Layer choice from bandwidth estimates and tile sizes, and dominant-speaker detection.
    pub quality: Quality,
    /// Commands queued from the signaling side before callers wait.
    pub command_queue: usize,
    /// Events queued towards the signaling side before they are dropped.
    pub event_queue: usize,
    /// Kernel receive and send buffer of the media socket, in bytes (best effort: Linux caps
    /// it at `net.core.rmem_max` / `wmem_max`). Absorbs bursts while the worker is busy;
    /// what overflows is lost media. Also the kernel send buffer of each TCP connection, fixed
    /// rather than left to grow: media that waits longer is too late anyway.
    pub socket_buffer: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7882),
            public_ip: None,
            udp: true,
            tcp: true,
            tcp_max_connections: 2_048,
            tcp_max_pending: 64,
            tcp_pending_timeout: Duration::from_secs(10),
            tcp_send_buffer: 1024 * 1024,
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
            limits: Limits::default(),
            quality: Quality::default(),
            command_queue: 256,
            event_queue: 1024,
            socket_buffer: 4 * 1024 * 1024,
        }
    }
}

/// What the worker tells the signaling side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// ICE and DTLS are up; media can flow.
    Connected {
        /// Who.
        participant: ParticipantId,
    },
    /// The participant is gone from the engine, with everything it published and received.
    Left {
        /// Who.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// A participant started sending a track; everyone else in its room will receive it.
    TrackPublished(TrackInfo),
    /// A track stopped (unpublished, or its publisher left).
    TrackUnpublished {
        /// Who published it.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// The engine needs to renegotiate (new tracks to send, old ones to stop): relay this
    /// offer to the participant and return its answer with
    /// [`ParticipantHandle::accept_answer`]. At most one is outstanding per participant.
    Offer {
        /// Who must answer.
        participant: ParticipantId,
        /// The SDP offer.
        sdp: String,
    },
    /// The loudest speaker of `room` changed: `participant`'s microphone has led the room's
    /// audio levels for [`Quality::dominant_speaker_hold`] (1 s). At most one per that period
    /// per room; silence changes nothing (the last speaker stays dominant), and no event comes
    /// when the dominant speaker leaves.
    DominantSpeaker {
        /// The room.
        room: RoomId,
        /// Who speaks.
        participant: ParticipantId,
    },
}

/// Counters of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// What the routing core holds.
    pub router: RouterStats,
    /// Participants whose ICE and DTLS are up.
    pub connected: usize,
    /// Datagrams received, and frames received over TCP.
    pub datagrams_in: u64,
    /// Datagrams and TCP frames dropped: unparseable, or accepted by no session.
    pub datagrams_dropped: u64,
    /// Packets that could not be sent (socket buffer full, unreachable, no TCP connection to
    /// that address).
    pub send_errors: u64,
    /// TCP connections open now.
    pub tcp_connections: usize,
    /// TCP connections accepted.
    pub tcp_accepted: u64,
    /// TCP connections closed as soon as they came: too many open or pending.
    pub tcp_refused: u64,
    /// TCP connections closed for what they sent: a first frame that was no ICE check for a
    /// session, a frame longer than a datagram, one connection too many for a session.
    pub tcp_invalid: u64,
    /// TCP connections closed for silence: no ICE check within `tcp_pending_timeout`. (A
    /// connection that carried one lasts as long as its session.)
    pub tcp_timeouts: u64,
    /// TCP connections closed because they could not take what their session sent
    /// (`tcp_send_buffer` full).
    pub tcp_overflows: u64,
    /// Frames written to subscribers.
    pub frames_forwarded: u64,
    /// Frames a subscriber could not take: its session lacks the publisher's codec, or
    /// str0m refused the write.
    pub frames_dropped: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: u64,
    /// Data-channel messages written to a subscriber's relayed channel (one per message and
    /// receiving participant).
    pub data_messages_forwarded: u64,
    /// Data-channel messages a subscriber did not get: its send buffer was full (it cannot
    /// keep up), its relayed channel could not open or closed, or too many were waiting for it
    /// to open.
    pub data_messages_dropped: u64,
    /// Data-channel messages not relayed to a participant of the room because it is not
    /// connected or its offer had no data channels (one per message and such participant).
    pub data_messages_skipped: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
}

/// One room of a worker, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// The room.
    pub room: RoomId,
    /// Its participants, by id.
    pub participants: Vec<ParticipantSnapshot>,
}

/// One participant of a [`RoomSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantSnapshot {
    /// Who.
    pub id: ParticipantId,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// What it publishes.
    pub published: Vec<TrackInfo>,
    /// The tracks it receives (or will, once negotiated).
    pub subscribed: Vec<TrackId>,
    /// Payload bytes received from it (UDP datagrams, TCP frames without their header).
    pub bytes_in: u64,
    /// Payload bytes sent to it.
    pub bytes_out: u64,
    /// The smoothed level of its microphone in dB below overload (RFC 6464: 0 is the
    /// loudest, 127 silence), when its audio packets carried one in the last second.
    pub audio_level: Option<u8>,
    /// The engine's bandwidth estimate towards it, in bit/s (str0m's congestion control),
    /// once it receives media.
    pub bandwidth_estimate: Option<u64>,
}

pub(crate) enum Command {
    Join {
        room: RoomId,
        participant: ParticipantId,
        label: Arc<str>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    AcceptOffer {
        participant: ParticipantId,
        sdp: String,
        sources: Vec<(Mid, TrackSource)>,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    AcceptAnswer {
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    SelectLayer {
        participant: ParticipantId,
        track: TrackId,
        rid: Rid,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    SetReceiving {
        participant: ParticipantId,
        track: TrackId,
        receive: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    SetMaxResolution {
        participant: ParticipantId,
        track: TrackId,
        width: u32,
        height: u32,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    SetView {
        participant: ParticipantId,
        mid: Mid,
        width: u32,
        height: u32,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    SetSource {
        participant: ParticipantId,
        track: TrackId,
        source: TrackSource,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave {
        participant: ParticipantId,
    },
    Stats {
        reply: oneshot::Sender<WorkerStats>,
    },
    Rooms {
        reply: oneshot::Sender<Vec<RoomSnapshot>>,
    },
}

/// Binds the media sockets and starts a worker task on the current tokio runtime. Returns the
/// handle for commands and the receiver of its events. The worker stops when every handle
/// (including [`ParticipantHandle`]s) is dropped.
pub async fn spawn(
    config: WorkerConfig,
) -> Result<(WorkerHandle, mpsc::Receiver<SfuEvent>), SfuError> {
    let (event_tx, event_rx) = mpsc::channel(config.event_queue.max(1));
    let handle = spawn_with_events(config, event_tx).await?;
    Ok((handle, event_rx))
}

/// [`spawn`] with events going to `events` (shared by the workers of a pool).
pub(crate) async fn spawn_with_events(
    config: WorkerConfig,
    events: mpsc::Sender<SfuEvent>,
) -> Result<WorkerHandle, SfuError> {
    let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue.max(1));
    let (local_addr, announced, tcp_addr) = worker::start(config, events, cmd_rx).await?;
    Ok(WorkerHandle {
        commands: cmd_tx,
        local_addr,
        announced,
        tcp_addr,
    })
}

/// Commands to a worker from the signaling side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    announced: SocketAddr,
    tcp_addr: Option<SocketAddr>,
}

impl WorkerHandle {
    /// Adds `participant` to `room`. It receives everyone else's tracks once it has sent an
    /// offer ([`ParticipantHandle::accept_offer`]) and connected.
    ///
    /// `label` is the signaling side's id of the participant (e.g. `k3x9q2ab01`): the others
    /// see it as the msid stream id of its tracks (`<label>` for camera and microphone,
    /// `<label>-screen` for a screen share) and in the labels of the data channels relayed
    /// from it (`<label>/<channel>`). 1 to 57 ASCII letters, digits, `-`, `_` or `.`;
    /// anything else is refused with [`SfuError::InvalidLabel`].
    pub async fn join(
        &self,
        room: RoomId,
        participant: ParticipantId,
        label: &str,
    ) -> Result<ParticipantHandle, SfuError> {
        if !check_label(label) {
            return Err(SfuError::InvalidLabel(label.to_owned()));
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Join {
            room,
            participant,
            label: Arc::from(label),
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::WorkerGone)??;
        Ok(ParticipantHandle {
            id: participant,
            commands: self.commands.clone(),
            left: false,
        })
    }

    /// Removes a participant (same as [`ParticipantHandle::leave`]). A [`SfuEvent::Left`]
    /// confirms it.
    pub async fn leave(&self, participant: ParticipantId) -> Result<(), SfuError> {
        self.send(Command::Leave { participant }).await
    }

    /// The worker's counters.
    pub async fn stats(&self) -> Result<WorkerStats, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stats { reply }).await?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// Every room of the worker with its participants, tracks and byte counters, sorted by
    /// room and participant.
    pub async fn rooms(&self) -> Result<Vec<RoomSnapshot>, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Rooms { reply }).await?;
        rx.await.map_err(|_| SfuError::WorkerGone)
    }

    /// The address the media socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address announced to clients in the ICE candidates (UDP, and TCP on the same
    /// port).
    pub fn announced_addr(&self) -> SocketAddr {
        self.announced
    }

    /// The address the TCP listener is bound to (the UDP socket's), when `tcp` is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    async fn send(&self, cmd: Command) -> Result<(), SfuError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| SfuError::WorkerGone)
    }
}

/// One participant's line to its worker. Dropping it without [`ParticipantHandle::leave`]
/// removes the participant all the same (best effort: if the command queue is full, the
/// participant is removed by the connect timeout or ICE disconnect instead).
#[derive(Debug)]
pub struct ParticipantHandle {
    id: ParticipantId,
    commands: mpsc::Sender<Command>,
    left: bool,
}

impl ParticipantHandle {
    /// Who this is.
    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// Accepts the participant's SDP offer (the first one creates its session) and returns
    /// the answer. Refused with [`SdpError`](crate::SdpError) for unparseable SDP, an offer
    /// without any m-line, or audio/video without a supported codec.
    ///
    /// `sources` says what the offer's m-lines carry, as `(mid, source)` pairs: a track
    /// published from a listed m-line gets that source, one not listed the default for its
    /// kind ([`TrackSource::default_for`]). A pair for an m-line already published changes its
    /// source (as [`ParticipantHandle::set_source`]). A source whose kind does not match the
    /// m-line's (`Camera` on audio) is ignored for that m-line, as are pairs past the 32nd.
    pub async fn accept_offer(
        &self,
        sdp: &str,
        sources: &[(String, TrackSource)],
    ) -> Result<String, SfuError> {
        let sources = sources
            .iter()
            .take(MAX_MEDIA_SECTIONS)
            .map(|(mid, source)| (Mid::from(mid.as_str()), *source))
            .collect();
        let (reply, rx) = oneshot::channel();
        self.send(Command::AcceptOffer {
            participant: self.id,
            sdp: sdp.to_owned(),
            sources,
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// The participant's answer to an [`SfuEvent::Offer`].
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::AcceptAnswer {
            participant: self.id,
            sdp: sdp.to_owned(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Caps the simulcast layer of `track` this participant receives at `rid`: it gets that
    /// layer, or a lower one when its bandwidth estimate or tile size
    /// ([`ParticipantHandle::set_max_resolution`]) calls for less. Without a cap it gets the
    /// best layer that fits. Layer changes take effect at the new layer's next keyframe.
    pub async fn select_layer(&self, track: TrackId, rid: &str) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SelectLayer {
            participant: self.id,
            track,
            rid: Rid::from(rid),
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Stops (`false`) or resumes (`true`) receiving `track`, e.g. while its tile is hidden.
    /// The m-line stays; a resumed video track starts again at a keyframe.
    pub async fn set_receiving(&self, track: TrackId, receive: bool) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetReceiving {
            participant: self.id,
            track,
            receive,
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Tells the size, in pixels, of the tile this participant shows `track` in: it gets the
    /// smallest simulcast layer that covers it (or a lower one if its bandwidth calls for
    /// less). Layer sizes come from the video's keyframes where the codec says them (VP8);
    /// otherwise the top layer is taken as 1280×720 and each lower layer as half the size of
    /// the one above (the usual full, ½, ¼ ladder), layers being ordered by their measured
    /// bitrate. 0×0 hides the track: nothing is forwarded, as with `set_receiving(false)`,
    /// until a non-zero size arrives (then from a keyframe); `set_receiving(true)` does not
    /// undo it.
    pub async fn set_max_resolution(
        &self,
        track: TrackId,
        width: u32,
        height: u32,
    ) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetMaxResolution {
            participant: self.id,
            track,
            width,
            height,
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// [`set_max_resolution`](Self::set_max_resolution) for the track this participant
    /// receives on m-line `mid` of its session, which is what a browser knows
    /// (`RTCRtpTransceiver.mid`). An m-line that carries no subscription is
    /// [`RouteError::UnknownMid`](crate::RouteError::UnknownMid).
    pub async fn set_view(&self, mid: &str, width: u32, height: u32) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetView {
            participant: self.id,
            mid: Mid::from(mid),
            width,
            height,
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Says what one of this participant's own tracks carries (camera, screen share, …).
    pub async fn set_source(&self, track: TrackId, source: TrackSource) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetSource {
            participant: self.id,
            track,
            source,
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// Leaves: every track and subscription of this participant goes.
    pub async fn leave(mut self) -> Result<(), SfuError> {
        self.left = true;
        self.send(Command::Leave {
            participant: self.id,
        })
        .await
    }

    async fn send(&self, cmd: Command) -> Result<(), SfuError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| SfuError::WorkerGone)
    }
}

impl Drop for ParticipantHandle {
    fn drop(&mut self) {
        if !self.left {
            let _ = self.commands.try_send(Command::Leave {
                participant: self.id,
            });
        }
    }
}
