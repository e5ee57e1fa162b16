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

    /// The name the signaling protocol uses: `microphone`, `camera`, `screen`,
    /// `screen-audio`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Microphone => "microphone",
            TrackSource::Camera => "camera",
            TrackSource::ScreenShare => "screen",
            TrackSource::ScreenShareAudio => "screen-audio",
        }
    }

    /// The source named `s` (one of the names of [`TrackSource::as_str`]), if any.
    pub fn parse(s: &str) -> Option<TrackSource> {
        match s {
            "microphone" => Some(TrackSource::Microphone),
            "camera" => Some(TrackSource::Camera),
            "screen" => Some(TrackSource::ScreenShare),
            "screen-audio" => Some(TrackSource::ScreenShareAudio),
            _ => None,
        }
    }

    /// Whether a track of this source is audio or video.
    pub fn kind(self) -> MediaKind {
        match self {
            TrackSource::Microphone | TrackSource::ScreenShareAudio => MediaKind::Audio,
            TrackSource::Camera | TrackSource::ScreenShare => MediaKind::Video,
        }
    }

    /// The msid stream id of a track of this source published by `label`: the label for
    /// microphone and camera, `<label>-screen` for a screen share and its audio, so a browser
    /// groups each set into one `MediaStream` and can tell whose it is.
    pub(crate) fn stream_id(self, label: &str) -> String {
        match self {
            TrackSource::Microphone | TrackSource::Camera => label.to_owned(),
            TrackSource::ScreenShare | TrackSource::ScreenShareAudio => format!("{label}-screen"),
        }
    }
}

impl fmt::Display for TrackSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest participant label: `<label>-screen` must fit an msid stream id (64 characters).
pub(crate) const MAX_LABEL_LEN: usize = 57;

/// Checks a participant label (the signaling side's participant id): 1 to
/// [`MAX_LABEL_LEN`] ASCII letters, digits, `-`, `_` or `.`, so it is usable verbatim as an
/// msid stream id and in data-channel labels.
pub(crate) fn check_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TrackSource; 4] = [
        TrackSource::Microphone,
        TrackSource::Camera,
        TrackSource::ScreenShare,
        TrackSource::ScreenShareAudio,
    ];

    #[test]
    fn source_names_round_trip() {
        for source in ALL {
            assert_eq!(TrackSource::parse(source.as_str()), Some(source));
            assert_eq!(source.to_string(), source.as_str());
        }
        assert_eq!(TrackSource::parse("screen"), Some(TrackSource::ScreenShare));
        assert_eq!(TrackSource::parse("Camera"), None);
        assert_eq!(TrackSource::parse(""), None);
    }

    #[test]
    fn stream_ids_group_camera_with_mic_and_screen_with_its_audio() {
        assert_eq!(TrackSource::Microphone.stream_id("k3x9"), "k3x9");
        assert_eq!(TrackSource::Camera.stream_id("k3x9"), "k3x9");
        assert_eq!(TrackSource::ScreenShare.stream_id("k3x9"), "k3x9-screen");
        assert_eq!(
            TrackSource::ScreenShareAudio.stream_id("k3x9"),
            "k3x9-screen"
        );
        for source in ALL {
            assert_eq!(
                TrackSource::default_for(source.kind()).kind(),
                source.kind()
            );
        }
    }

    #[test]
    fn labels_are_short_tokens() {
        assert!(check_label("k3x9q2ab01"));
        assert!(check_label("a.b-c_d"));
        assert!(check_label(&"x".repeat(MAX_LABEL_LEN)));
        assert!(!check_label(""));
        assert!(!check_label(&"x".repeat(MAX_LABEL_LEN + 1)));
        assert!(!check_label("a b"));
        assert!(!check_label("a\r\na=x"));
        assert!(
            !check_label("a/b"),
            "the separator of relayed channel labels"
        );
    }
}
