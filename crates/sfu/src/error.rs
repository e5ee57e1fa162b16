//! Typed errors of the media engine: routing decisions ([`RouteError`]), offers and answers
//! ([`SdpError`]) and the worker API ([`SfuError`]). A failed call affects only its caller.

use str0m::media::{Mid, Rid};

use crate::ids::{ParticipantId, RoomId, TrackId};

/// A routing-core request that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The participant id is already in use in this worker.
    #[error("participant {0} already joined")]
    AlreadyJoined(ParticipantId),
    /// No such participant.
    #[error("unknown participant {0}")]
    UnknownParticipant(ParticipantId),
    /// No such track.
    #[error("unknown track {0}")]
    UnknownTrack(TrackId),
    /// No subscription on that m-line of the participant's session.
    #[error("no received track on mid {0}")]
    UnknownMid(Mid),
    /// The subscriber does not receive that track.
    #[error("participant {0} is not subscribed to track {1}")]
    NotSubscribed(ParticipantId, TrackId),
    /// The track has no such simulcast layer.
    #[error("track {0} has no layer {1}")]
    UnknownLayer(TrackId, Rid),
    /// The publisher already has a track on that m-line.
    #[error("a track is already published on mid {0}")]
    DuplicateTrack(Mid),
    /// The room has reached its participant limit.
    #[error("room {0} is full")]
    RoomFull(RoomId),
    /// The worker has reached its room limit.
    #[error("too many rooms")]
    TooManyRooms,
    /// The worker has reached its participant limit.
    #[error("too many participants")]
    TooManyParticipants,
    /// The participant has reached its track limit.
    #[error("participant {0} publishes too many tracks")]
    TooManyTracks(ParticipantId),
}

/// An offer or answer that the engine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not parseable as SDP.
    #[error("invalid SDP: {0}")]
    Invalid(String),
    /// The offer has no m-line at all, so there is nothing to connect.
    #[error("the offer has no media section")]
    NoMedia,
    /// An audio or video m-line offers no codec the engine forwards.
    #[error("m-line {index} ({kind}) offers no supported codec")]
    UnsupportedCodecs {
        /// Position of the m-line in the offer, from 0.
        index: usize,
        /// `audio` or `video`.
        kind: String,
    },
    /// str0m rejected the description.
    #[error("rejected by the WebRTC stack: {0}")]
    Rejected(String),
    /// An answer arrived while no offer from the engine was pending.
    #[error("no offer is pending")]
    NoPendingOffer,
    /// An answer before the participant's first offer was accepted.
    #[error("no session yet: accept an offer first")]
    NoSession,
}

/// What a call on the worker API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    /// A routing limit or an unknown id.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A bad offer or answer.
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// A participant label that is not 1–57 ASCII letters, digits, `-`, `_` or `.`.
    #[error("invalid participant label {0:?}")]
    InvalidLabel(String),
    /// The worker has stopped (or its command queue is gone).
    #[error("the media worker is not running")]
    WorkerGone,
    /// Binding or configuring the media sockets (UDP, TCP) failed.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration cannot work (e.g. nothing to announce to clients).
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}
