//! Switchboard's signaling messages, as they travel over the WebSocket.
//!
//! Two protocols live here:
//!
//! * [`ClientMessage`] / [`ServerMessage`]: Switchboard's own protocol on `/ws`, JSON objects
//!   tagged by `"type"`, versioned by the `v` field of `join` (see `docs/protocol.md`).
//! * [`tutorial`]: the classic one-sender/one-receiver tutorial protocol on `/`, kept
//!   byte-compatible with the Node `ws` server those tutorials ship.
//!
//! This crate holds types and parsing only: no routing decisions and no I/O. The server, the
//! integration tests and the load tools all speak through it, so they cannot drift apart.

pub mod tutorial;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The protocol version this crate speaks. A `join` with another `v` is refused with
/// [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// A participant id as the wire shows it: opaque, unique within one server run.
pub type ParticipantId = String;

/// The participant id of the server itself in SFU rooms: offers and answers for the media
/// session go `to` it and come `from` it. Real ids are longer, so it never names a client.
pub const SFU_PARTICIPANT: &str = "sfu";

/// What a published track carries, declared with an offer to the server in SFU rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaSource {
    Microphone,
    Camera,
    Screen,
    ScreenAudio,
}

/// An offer's `tracks`: the source of each sending m-line, by `mid`.
pub type TrackSources = std::collections::BTreeMap<String, MediaSource>;

/// What a participant does in a room; decides who opens connections to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Sends and receives; connects to every other peer (full mesh).
    #[default]
    Peer,
    /// One-to-many broadcaster: connects to every receiver. At most one per room.
    Sender,
    /// Watches the sender only; receivers never connect to each other.
    Receiver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// How media flows in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Browsers connect directly to each other (full mesh or one-to-many).
    #[default]
    P2p,
    /// Media goes through the server's forwarding unit.
    Sfu,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::P2p => "p2p",
            Mode::Sfu => "sfu",
        }
    }
}

/// Why a participant left, as told to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its connection closed and it did not come back within the resume grace period.
    Disconnected,
    /// The random-match partner pressed Next.
    Next,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    pub role: Role,
    /// Unix time in milliseconds when it joined.
    pub since: u64,
}

/// Messages a client sends on `/ws`. Unknown fields are ignored so newer clients can add
/// optional fields without breaking older servers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// Enter a room (created on first join).
    Join {
        #[serde(default = "default_version")]
        v: u32,
        room: String,
        name: String,
        #[serde(default)]
        role: Role,
        /// Topology wanted if the room is new; ignored (and reported back) otherwise.
        #[serde(default)]
        mode: Option<Mode>,
        /// The `resume` token of an earlier `joined`, to take back the same identity after a
        /// lost connection.
        #[serde(default)]
        resume: Option<String>,
    },
    /// Leave the room or the random lobby; the connection stays open.
    Leave,
    /// An SDP offer for one participant of the same room, or for the server
    /// ([`SFU_PARTICIPANT`]) in an SFU room, which alone reads `tracks`.
    Offer {
        to: ParticipantId,
        sdp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tracks: Option<TrackSources>,
    },
    /// An SDP answer for one participant of the same room.
    Answer { to: ParticipantId, sdp: String },
    /// A trickled ICE candidate (`RTCIceCandidateInit`), or `null` for end of candidates.
    Candidate {
        to: ParticipantId,
        candidate: Option<RawJson>,
    },
    /// Ask a participant to restart ICE towards us (it sends an offer with `iceRestart`).
    IceRestart { to: ParticipantId },
    /// Enter the random 1:1 lobby.
    Random {
        #[serde(default = "default_version")]
        v: u32,
        name: String,
    },
    /// End the current random pair and queue again.
    Next,
    /// SFU rooms: how large the tile of a received track (by its `mid` in our session with
    /// the server) is shown, so the server sends a layer no bigger than needed; 0×0 means
    /// hidden (nothing is sent until it is shown again).
    View {
        mid: String,
        width: u32,
        height: u32,
    },
    /// Keep-alive and latency probe; answered by `pong`.
    Ping {
        #[serde(default)]
        id: Option<u64>,
    },
}

fn default_version() -> u32 {
    PROTOCOL_VERSION
}

impl ClientMessage {
    /// The wire name of this message's type, for metrics and errors.
    pub fn kind(&self) -> MessageKind {
        match self {
            ClientMessage::Join { .. } => MessageKind::Join,
            ClientMessage::Leave => MessageKind::Leave,
            ClientMessage::Offer { .. } => MessageKind::Offer,
            ClientMessage::Answer { .. } => MessageKind::Answer,
            ClientMessage::Candidate { .. } => MessageKind::Candidate,
            ClientMessage::IceRestart { .. } => MessageKind::IceRestart,
            ClientMessage::Random { .. } => MessageKind::Random,
            ClientMessage::Next => MessageKind::Next,
            ClientMessage::View { .. } => MessageKind::View,
            ClientMessage::Ping { .. } => MessageKind::Ping,
        }
    }
}

/// Client message kinds, for counting without strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Join,
    Leave,
    Offer,
    Answer,
    Candidate,
    IceRestart,
    Random,
    Next,
    View,
    Ping,
}

impl MessageKind {
    pub const ALL: [MessageKind; 10] = [
        MessageKind::Join,
        MessageKind::Leave,
        MessageKind::Offer,
        MessageKind::Answer,
        MessageKind::Candidate,
        MessageKind::IceRestart,
        MessageKind::Random,
        MessageKind::Next,
        MessageKind::View,
        MessageKind::Ping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Join => "join",
            MessageKind::Leave => "leave",
            MessageKind::Offer => "offer",
            MessageKind::Answer => "answer",
            MessageKind::Candidate => "candidate",
            MessageKind::IceRestart => "ice-restart",
            MessageKind::Random => "random",
            MessageKind::Next => "next",
            MessageKind::View => "view",
            MessageKind::Ping => "ping",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Messages the server sends on `/ws`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// The join succeeded.
    Joined {
        v: u32,
        room: String,
        /// Our own participant id.
        id: ParticipantId,
        /// Secret to send back in `join.resume` after a lost connection.
        resume: String,
        mode: Mode,
        role: Role,
        /// Everyone already in the room, oldest first (we are not in the list).
        participants: Vec<ParticipantInfo>,
        /// Whether we resumed an earlier identity (peers kept their connections to us).
        resumed: bool,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        id: ParticipantId,
        reason: LeaveReason,
    },
    /// Our `leave` took effect.
    Left,
    Offer {
        from: ParticipantId,
        sdp: String,
    },
    Answer {
        from: ParticipantId,
        sdp: String,
    },
    Candidate {
        from: ParticipantId,
        candidate: Option<RawJson>,
    },
    IceRestart {
        from: ParticipantId,
    },
    /// In the random lobby, waiting for a partner.
    Waiting,
    /// Paired with a stranger in a private room. The impolite side (`polite: false`)
    /// makes the first offer.
    Matched {
        room: String,
        id: ParticipantId,
        peer: ParticipantInfo,
        polite: bool,
    },
    /// The pair ended; we are queued again (`waiting` follows).
    Unmatched {
        reason: LeaveReason,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// SFU rooms: the participant who is speaking now (the loudest for a while).
    DominantSpeaker {
        id: ParticipantId,
    },
    /// The room changed topology: a broadcast outgrew peer-to-peer and now goes through the
    /// SFU. Close peer connections and negotiate with [`SFU_PARTICIPANT`].
    ModeChanged {
        mode: Mode,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

/// Every error a client can receive. Codes are stable; messages are for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON, or not a text frame.
    BadJson,
    /// The `type` field was missing or names no message we know.
    UnknownType,
    /// A known message with missing, extra or ill-typed fields.
    InvalidMessage,
    UnsupportedVersion,
    MessageTooLarge,
    RateLimited,
    /// A room message (offer, leave, …) before `join`.
    NotInRoom,
    AlreadyJoined,
    RoomFull,
    InvalidRoom,
    InvalidName,
    /// `to` names nobody in our room.
    UnknownParticipant,
    UnsupportedMode,
    /// The room already has a sender.
    RoleTaken,
    /// `next` outside a random pair or lobby.
    NotMatched,
    /// The server is at its room or connection limit.
    ServerBusy,
    /// `resume` token unknown or expired: join again without it.
    ResumeFailed,
    /// SFU rooms: an offer or answer the server's media engine cannot use.
    InvalidSdp,
    /// SFU rooms: the server dropped the client's media session; a new offer starts another.
    MediaFailed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::UnsupportedVersion,
        ErrorCode::MessageTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyJoined,
        ErrorCode::RoomFull,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidName,
        ErrorCode::UnknownParticipant,
        ErrorCode::UnsupportedMode,
        ErrorCode::RoleTaken,
        ErrorCode::NotMatched,
        ErrorCode::ServerBusy,
        ErrorCode::ResumeFailed,
        ErrorCode::InvalidSdp,
        ErrorCode::MediaFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::UnknownParticipant => "unknown_participant",
            ErrorCode::UnsupportedMode => "unsupported_mode",
            ErrorCode::RoleTaken => "role_taken",
            ErrorCode::NotMatched => "not_matched",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::MediaFailed => "media_failed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON value relayed verbatim: the server never needs to look inside an ICE candidate, so
/// it neither builds a tree for it nor re-encodes it.
///
/// Note: serde cannot buffer a raw value inside an internally tagged enum, so a *client*
/// decoding `ServerMessage::Candidate` with serde should decode into `serde_json::Value`
/// instead; the server only ever serializes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl RawJson {
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl TryFrom<&str> for RawJson {
    type Error = serde_json::Error;

    fn try_from(json: &str) -> Result<Self, Self::Error> {
        serde_json::value::RawValue::from_string(json.to_owned()).map(RawJson)
    }
}

/// Why a text frame could not become a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: ErrorCode,
    pub message: String,
}

/// Decodes one text frame. Classifies failures into the error codes clients see, so a typo in
/// `type` reads differently from a missing field.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    if let Some(relay) = RelayRef::parse(text) {
        return Ok(relay.into_client_message());
    }
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(msg) => Ok(msg),
        Err(err) => Err(classify(text, err)),
    }
}

/// Which relayed message a [`RelayRef`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    Offer,
    Answer,
    Candidate,
}

impl RelayKind {
    pub fn message_kind(self) -> MessageKind {
        match self {
            RelayKind::Offer => MessageKind::Offer,
            RelayKind::Answer => MessageKind::Answer,
            RelayKind::Candidate => MessageKind::Candidate,
        }
    }
}

/// An `offer`, `answer` or `candidate` as the client sent it, borrowed from the frame: the
/// messages that make up almost all signaling traffic, decoded in one pass without building a
/// [`ClientMessage`]. It can be relayed as is ([`RelayRef::encode`]) or turned into the
/// owned message ([`RelayRef::into_client_message`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RelayRef<'a> {
    pub kind: RelayKind,
    /// The addressee's participant id.
    pub to: Cow<'a, str>,
    body: RelayBody<'a>,
}

#[derive(Debug, Clone)]
enum RelayBody<'a> {
    Sdp(String),
    /// The candidate verbatim, `None` for `null` or a missing field (end of candidates).
    Candidate(Option<&'a RawValue>),
}

impl PartialEq for RelayBody<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RelayBody::Sdp(a), RelayBody::Sdp(b)) => a == b,
            (RelayBody::Candidate(a), RelayBody::Candidate(b)) => {
                a.map(RawValue::get) == b.map(RawValue::get)
            }
            _ => false,
        }
    }
}

/// A string field that borrows from the frame when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> RelayRef<'a> {
    /// The fast path: `Some` only for a well-formed `offer`, `answer` or `candidate`; anything
    /// else (including malformed relays) is left to [`parse_client_message`], which also
    /// produces the errors. Agrees with it wherever it answers.
    pub fn parse(text: &'a str) -> Option<RelayRef<'a>> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(default, borrow)]
            to: Option<Text<'a>>,
            #[serde(default)]
            sdp: Option<String>,
            #[serde(default, borrow)]
            candidate: Option<&'a RawValue>,
        }
        let wire: Wire = serde_json::from_str(text).ok()?;
        let to = wire.to?.0;
        let (kind, body) = match (wire.kind.as_ref(), wire.sdp) {
            ("candidate", _) => (RelayKind::Candidate, RelayBody::Candidate(wire.candidate)),
            // An offer to the server carries more (`tracks`): the full decoder takes it.
            ("offer", Some(_)) if to == SFU_PARTICIPANT => return None,
            ("offer", Some(sdp)) => (RelayKind::Offer, RelayBody::Sdp(sdp)),
            ("answer", Some(sdp)) => (RelayKind::Answer, RelayBody::Sdp(sdp)),
            _ => return None,
        };
        Some(RelayRef { kind, to, body })
    }

    /// The owned message, as the full decoder would have produced it.
    pub fn into_client_message(self) -> ClientMessage {
        let to = self.to.into_owned();
        match (self.kind, self.body) {
            (RelayKind::Candidate, RelayBody::Candidate(raw)) => ClientMessage::Candidate {
                to,
                candidate: raw.map(|raw| RawJson(raw.to_owned())),
            },
            (RelayKind::Offer, RelayBody::Sdp(sdp)) => ClientMessage::Offer {
                to,
                sdp,
                tracks: None,
            },
            (RelayKind::Answer, RelayBody::Sdp(sdp)) => ClientMessage::Answer { to, sdp },
            _ => unreachable!("RelayRef::parse pairs kinds and bodies"),
        }
    }

    /// The relayed message from `from`, byte for byte what serializing the matching
    /// [`ServerMessage`] (`offer`/`answer`/`candidate` with `from`) gives. `from_json` is
    /// `from` already encoded as a JSON string (see [`json_string`]), so a sender's id is
    /// encoded once, not per message.
    pub fn encode(&self, from_json: &str) -> String {
        let head = match self.kind {
            RelayKind::Offer => r#"{"type":"offer","from":"#,
            RelayKind::Answer => r#"{"type":"answer","from":"#,
            RelayKind::Candidate => r#"{"type":"candidate","from":"#,
        };
        match &self.body {
            RelayBody::Candidate(raw) => {
                let raw = raw.map_or("null", |raw| raw.get());
                const KEY: &str = r#","candidate":"#;
                // Exactly sized, so the bytes move into the outgoing frame without a copy.
                let mut out =
                    String::with_capacity(head.len() + from_json.len() + KEY.len() + raw.len() + 1);
                out.push_str(head);
                out.push_str(from_json);
                out.push_str(KEY);
                out.push_str(raw);
                out.push('}');
                out
            }
            RelayBody::Sdp(sdp) => {
                let mut out = String::with_capacity(head.len() + from_json.len() + sdp.len() + 16);
                out.push_str(head);
                out.push_str(from_json);
                out.push_str(r#","sdp":"#);
                out.push_str(&json_string(sdp));
                out.push('}');
                out
            }
        }
    }
}

/// `value` as a JSON string literal, quotes included, escaped exactly as serde_json does.
pub fn json_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string always serializes")
}

fn classify(text: &str, err: serde_json::Error) -> ParseError {
    // Only the failure path pays for this second look.
    #[derive(Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
    }
    let parsed: Result<TypeOnly, _> = serde_json::from_str(text);
    match parsed {
        Err(_) => {
            if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                ParseError {
                    code: ErrorCode::InvalidMessage,
                    message: "expected a JSON object with a \"type\" field".into(),
                }
            } else {
                ParseError {
                    code: ErrorCode::BadJson,
                    message: format!("not valid JSON: {err}"),
                }
            }
        }
        Ok(TypeOnly { kind: None }) => ParseError {
            code: ErrorCode::UnknownType,
            message: "missing \"type\" field".into(),
        },
        Ok(TypeOnly {
            kind: Some(serde_json::Value::String(kind)),
        }) if !KNOWN_TYPES.contains(&kind.as_str()) => ParseError {
            code: ErrorCode::UnknownType,
            message: format!("unknown message type {kind:?}"),
        },
        Ok(TypeOnly {
            kind: Some(serde_json::Value::String(kind)),
        }) => ParseError {
            code: ErrorCode::InvalidMessage,
            message: format!("invalid {kind:?} message: {err}"),
        },
        Ok(TypeOnly { kind: Some(_) }) => ParseError {
            code: ErrorCode::UnknownType,
            message: "\"type\" must be a string".into(),
        },
    }
}

const KNOWN_TYPES: [&str; 10] = [
    "join",
    "leave",
    "offer",
    "answer",
    "candidate",
    "ice-restart",
    "random",
    "next",
    "view",
    "ping",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_defaults_role_version_and_mode() {
        let msg = parse_client_message(r#"{"type":"join","room":"abc","name":"Ann"}"#).unwrap();
        assert_eq!(
            msg,
            ClientMessage::Join {
                v: 1,
                room: "abc".into(),
                name: "Ann".into(),
                role: Role::Peer,
                mode: None,
                resume: None,
            }
        );
    }

    #[test]
    fn candidate_may_be_null_for_end_of_candidates() {
        let msg = parse_client_message(r#"{"type":"candidate","to":"p1","candidate":null}"#);
        assert_eq!(
            msg.unwrap(),
            ClientMessage::Candidate {
                to: "p1".into(),
                candidate: None
            }
        );
    }

    #[test]
    fn candidates_are_kept_verbatim() {
        let text = r#"{"type":"candidate","to":"p1","candidate":{"candidate":"candidate:1 1 udp 5 10.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}"#;
        let ClientMessage::Candidate { to, candidate } = parse_client_message(text).unwrap() else {
            panic!("a candidate");
        };
        assert_eq!(to, "p1");
        assert_eq!(
            candidate.unwrap().get(),
            r#"{"candidate":"candidate:1 1 udp 5 10.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}"#
        );
        let relayed = ServerMessage::Candidate {
            from: "p2".into(),
            candidate: Some(RawJson::try_from(r#"{"a":1}"#).unwrap()),
        };
        assert_eq!(
            serde_json::to_string(&relayed).unwrap(),
            r#"{"type":"candidate","from":"p2","candidate":{"a":1}}"#
        );
    }

    #[test]
    fn the_fast_path_and_the_full_decoder_agree() {
        for text in [
            r#"{"type":"offer","to":"p1","sdp":"v=0\r\n"}"#,
            r#"{"type":"answer","sdp":"v=0","to":"p1","extra":[1,2]}"#,
            r#"{"type":"candidate","to":"p1","candidate":null}"#,
            r#"{"type":"candidate","to":"p1"}"#,
            r#"{"type":"candidate","to":"p\u0031","candidate":null}"#,
        ] {
            let fast = RelayRef::parse(text).expect("fast path takes it");
            let full: ClientMessage = serde_json::from_str(text).unwrap();
            assert_eq!(fast.into_client_message(), full, "{text}");
        }
        // (The full decoder cannot hold a raw candidate object; only the fast path takes those.)
        let text = r#"{"type":"candidate","to":"p\u0031","candidate":{"a":[1,"\u00e9"]}}"#;
        assert_eq!(
            RelayRef::parse(text).unwrap().into_client_message(),
            ClientMessage::Candidate {
                to: "p1".into(),
                candidate: Some(RawJson::try_from(r#"{"a":[1,"\u00e9"]}"#).unwrap()),
            }
        );
        // Malformed relays fall through to the full decoder and its errors.
        for text in [
            r#"{"type":"offer","to":"p1"}"#,
            r#"{"type":"offer","to":5,"sdp":"x"}"#,
            r#"{"type":"candidate","to":null,"candidate":null}"#,
            r#"{"type":"candidate","candidate":null}"#,
            r#"{"type":"ice-restart","to":"p1"}"#,
            r#"{"type":"candidate","to":"p1","candidate":{"#,
        ] {
            assert_eq!(RelayRef::parse(text), None, "{text}");
        }
    }

    #[test]
    fn the_fast_path_borrows_ids_from_the_frame() {
        let relay = RelayRef::parse(r#"{"type":"candidate","to":"p1","candidate":null}"#).unwrap();
        assert!(matches!(relay.to, Cow::Borrowed("p1")));
        assert_eq!(relay.kind, RelayKind::Candidate);
    }

    #[test]
    fn relays_encode_exactly_like_server_messages() {
        let from = "ab\"c\u{e9}\n";
        for text in [
            r#"{"type":"offer","to":"p1","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n\u00e9\/"}"#,
            r#"{"type":"answer","to":"p1","sdp":""}"#,
            r#"{"type":"candidate","to":"p1","candidate":null}"#,
            r#"{"type":"candidate","to":"p1"}"#,
            r#"{"type":"candidate","to":"p1","candidate":{ "candidate" : "c:1 \u00e9" , "sdpMid":"0","sdpMLineIndex":0}}"#,
        ] {
            let relay = RelayRef::parse(text).unwrap();
            let encoded = relay.encode(&json_string(from));
            let expected = match relay.into_client_message() {
                ClientMessage::Offer { sdp, .. } => ServerMessage::Offer {
                    from: from.into(),
                    sdp,
                },
                ClientMessage::Answer { sdp, .. } => ServerMessage::Answer {
                    from: from.into(),
                    sdp,
                },
                ClientMessage::Candidate { candidate, .. } => ServerMessage::Candidate {
                    from: from.into(),
                    candidate,
                },
                other => panic!("{other:?}"),
            };
            assert_eq!(encoded, serde_json::to_string(&expected).unwrap(), "{text}");
        }
    }

    #[test]
    fn candidates_are_encoded_without_spare_capacity() {
        let relay =
            RelayRef::parse(r#"{"type":"candidate","to":"p1","candidate":{"a":1}}"#).unwrap();
        let encoded = relay.encode(&json_string("me"));
        assert_eq!(encoded.len(), encoded.capacity());
    }

    #[test]
    fn errors_are_classified() {
        let code = |t: &str| parse_client_message(t).unwrap_err().code;
        assert_eq!(code("{not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"room":"x"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"offer","to":"p1"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"join","room":5,"name":"a"}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn known_types_match_the_enum() {
        for kind in MessageKind::ALL {
            assert!(KNOWN_TYPES.contains(&kind.as_str()), "{kind:?}");
        }
        assert_eq!(KNOWN_TYPES.len(), MessageKind::ALL.len());
    }

    #[test]
    fn server_messages_use_kebab_case_types_and_snake_case_codes() {
        let text =
            serde_json::to_string(&ServerMessage::error(ErrorCode::RoomFull, "full")).unwrap();
        assert_eq!(
            text,
            r#"{"type":"error","code":"room_full","message":"full"}"#
        );
        let text = serde_json::to_string(&ServerMessage::ParticipantLeft {
            id: "p1".into(),
            reason: LeaveReason::Disconnected,
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"type":"participant-left","id":"p1","reason":"disconnected"}"#
        );
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
