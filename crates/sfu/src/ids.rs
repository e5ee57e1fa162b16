//! Identifiers and small value types shared by the routing core, the worker and the events:
//! who is in which room, which track is which, where a track comes from.
//!
//! They are plain values (copyable where possible) so the forwarding path can pass them around
//! without allocating.

use std::fmt;
use std::sync::Arc;

use str0m::media::{MediaKind, Mid, Rid};

/// A participant, identified by the signaling side. Must be unique within one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A room name as the signaling side knows it. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

impl RoomId {
    /// Wraps a room name.
    pub fn new(name: impl AsRef<str>) -> Self {
        RoomId(Arc::from(name.as_ref()))
    }

    /// The room name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A published track, allocated by the routing core; unique for the life of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub(crate) u64);

impl TrackId {
    /// The numeric value, e.g. for a track id in SDP or a protocol message.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// What a track carries, as a user would name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    /// A microphone (audio).
    Microphone,
    /// A camera (video).
    Camera,
    /// A shared screen or window (video).
    ScreenShare,
    /// The audio of a shared screen or tab.
    ScreenShareAudio,
}

impl TrackSource {
    /// The usual source for a track of `kind` when nothing more is known.
    pub fn default_for(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => TrackSource::Microphone,
            MediaKind::Video => TrackSource::Camera,
        }
    }
}

/// Everything known about a published track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// The track.
    pub id: TrackId,
    /// Who publishes it.
    pub publisher: ParticipantId,
    /// Its m-line in the publisher's session.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, screen share, …
    pub source: TrackSource,
    /// Simulcast layers by `rid`, in the publisher's order; empty without simulcast.
    pub layers: Vec<Rid>,
}

/// Why a participant left the media engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The signaling side asked (`leave`, or the participant handle was dropped).
    Left,
    /// ICE and DTLS did not complete within the connect timeout.
    ConnectTimeout,
    /// The ICE connection was lost (no more consent checks from the client).
    IceDisconnected,
    /// The WebRTC session failed (DTLS error, closed by the peer, …).
    Failed,
}
