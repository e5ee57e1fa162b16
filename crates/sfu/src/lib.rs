//! Switchboard's SFU media engine, built on [`str0m`] (sans-IO WebRTC).
//!
//! Each participant sends its media once to the server, which forwards it to everyone else in
//! the room. The crate has three parts:
//!
//! - [`Router`], the routing core: rooms, participants, published tracks, subscriptions,
//!   simulcast layer choice (from each subscriber's bandwidth estimate and tile sizes),
//!   keyframe gating and keyframe-request rate limiting, audio levels and dominant speakers.
//!   Pure logic over values and an [`Instant`](std::time::Instant) passed in; tested with a
//!   fake clock.
//! - The worker ([`spawn`]): one tokio task owning one UDP socket (ICE-lite, a single port for
//!   every session), a TCP listener on the same port for clients whose networks block UDP
//!   (ICE over TCP, RFC 6544, with RFC 4571 framing; browsers prefer UDP when both work) and
//!   every str0m `Rtc` of its rooms. It demultiplexes datagrams and TCP frames, drives
//!   str0m's timers, forwards media frames between sessions as the router decides, and relays
//!   data-channel messages to the sender's room. No
//!   locks: the signaling side talks to it through [`WorkerHandle`] / [`ParticipantHandle`]
//!   commands and hears [`SfuEvent`]s back.
//! - [`Sfu`], a pool of workers for more cores: each room is pinned to one worker.
//!
//! A signaling flow, in short:
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_sfu::SfuError> {
//! use switchboard_sfu::{ParticipantId, RoomId, SfuEvent, TrackSource, WorkerConfig};
//!
//! let (sfu, mut events) = switchboard_sfu::spawn(WorkerConfig::default()).await?;
//! let alice = sfu.join(RoomId::new("standup"), ParticipantId(1), "k3x9q2ab01").await?;
//! # let offer_from_browser = String::new();
//! // What the offer's m-lines carry, by mid; unlisted ones default by kind.
//! let sources = [("1".to_string(), TrackSource::ScreenShare)];
//! let answer = alice.accept_offer(&offer_from_browser, &sources).await?; // to the browser
//! while let Some(event) = events.recv().await {
//!     if let SfuEvent::Offer { participant, sdp } = event {
//!         // New tracks to receive: relay `sdp` to `participant`, then pass its answer to
//!         // `accept_answer` on that participant's handle.
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Each participant joins with a *label*, the signaling side's id for it: the others see it as
//! the msid stream id of its tracks (`<label>` for camera and microphone, `<label>-screen`
//! for a screen share and its audio), so a browser groups them into `MediaStream`s and knows
//! whose they are. What each m-line carries comes with the offer as `(mid, TrackSource)`
//! pairs.
//!
//! Data channels go through the engine too (chat, small files). When a participant's offer
//! has an application m-line and it opens a channel `L` to the engine, every message it sends
//! there is written verbatim (text or binary) to each other connected participant of the room
//! whose own offer had data channels, on a channel the engine opens in that participant's
//! session, labelled `<sender label>/L`, with the same ordering and reliability, on the first
//! message and reused after. A receiver that cannot keep up (1 MiB unacknowledged in its
//! session) loses messages, counted in [`WorkerStats`]; a sender's relayed channels close when
//! it closes its channel or leaves. What a participant writes on a channel the engine opened
//! goes nowhere.
//!
//! Quality, tuned by [`Quality`]: str0m's bandwidth estimation runs for every session, and each
//! subscriber gets, per video track, the best simulcast layer that fits its estimate (audio
//! first, the rest spread over its tracks; down at once, up only after the estimate has held
//! for a few seconds), capped by [`ParticipantHandle::select_layer`] and by the tile size it
//! reports with [`ParticipantHandle::set_max_resolution`]; layer switches wait for a keyframe.
//! Frames are written with their publisher's capture time (from its sender reports) and
//! continuous timestamps across layer switches, so the sender reports subscribers get keep a
//! publisher's audio and video in sync. Lost packets are asked for again (NACK) and resent
//! (RTX) by str0m on both legs. Audio levels (RFC 6464) are smoothed per participant
//! ([`ParticipantSnapshot::audio_level`]) and the loudest speaker of a room, once it has led
//! for a second, is announced with [`SfuEvent::DominantSpeaker`].
//!
//! Offers cross sometimes (both sides renegotiate at once). The engine yields: it accepts the
//! browser's offer, forgets its own and offers again afterwards, so a browser may simply
//! ignore an engine offer that arrives while its own is outstanding (in "perfect negotiation"
//! terms the engine is the polite peer).
//!
//! See `docs/architecture.md` ("SFU media engine") for the decisions behind it.

mod api;
mod channels;
mod client;
mod error;
mod ids;
mod pool;
mod quality;
mod router;
mod sdp;
mod sync;
mod tcp;
mod worker;

pub use crate::api::{
    ParticipantHandle, ParticipantSnapshot, RoomSnapshot, SfuEvent, WorkerConfig, WorkerHandle,
    WorkerStats, spawn,
};
pub use crate::error::{RouteError, SdpError, SfuError};
pub use crate::ids::{LeaveReason, ParticipantId, RoomId, TrackId, TrackInfo, TrackSource};
pub use crate::pool::Sfu;
pub use crate::quality::Quality;
pub use crate::router::{Forward, Limits, Router, RouterOutput, RouterStats, SubscriptionState};
pub use str0m;
