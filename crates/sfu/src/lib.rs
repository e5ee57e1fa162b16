//! Switchboard's SFU media engine, built on [`str0m`] (sans-IO WebRTC).
//!
//! Each participant sends its media once to the server, which forwards it to everyone else in
//! the room. The crate has three parts:
//!
//! - [`Router`], the routing core: rooms, participants, published tracks, subscriptions,
//!   simulcast layer choice, keyframe gating and keyframe-request rate limiting. Pure logic
//!   over values and an [`Instant`](std::time::Instant) passed in; tested with a fake clock.
//! - The worker ([`spawn`]): one tokio task owning one UDP socket (ICE-lite, a single port for
//!   every session) and every str0m `Rtc` of its rooms. It demultiplexes datagrams, drives
//!   str0m's timers, and forwards media frames between sessions as the router decides. No
//!   locks: the signaling side talks to it through [`WorkerHandle`] / [`ParticipantHandle`]
//!   commands and hears [`SfuEvent`]s back.
//! - [`Sfu`], a pool of workers for more cores: each room is pinned to one worker.
//!
//! A signaling flow, in short:
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_sfu::SfuError> {
//! use switchboard_sfu::{ParticipantId, RoomId, SfuEvent, WorkerConfig};
//!
//! let (sfu, mut events) = switchboard_sfu::spawn(WorkerConfig::default()).await?;
//! let alice = sfu.join(RoomId::new("standup"), ParticipantId(1)).await?;
//! # let offer_from_browser = String::new();
//! let answer = alice.accept_offer(&offer_from_browser).await?; // relay to the browser
//! while let Some(event) = events.recv().await {
//!     if let SfuEvent::Offer { participant, sdp } = event {
//!         // New tracks to receive: relay `sdp` to `participant`, then pass its answer to
//!         // `accept_answer` on that participant's handle.
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Offers cross sometimes (both sides renegotiate at once). The engine yields: it accepts the
//! browser's offer, forgets its own and offers again afterwards, so a browser may simply
//! ignore an engine offer that arrives while its own is outstanding (in "perfect negotiation"
//! terms the engine is the polite peer).
//!
//! See `docs/architecture.md` ("SFU media engine") for the decisions behind it.

mod api;
mod client;
mod error;
mod ids;
mod pool;
mod router;
mod sdp;
mod worker;

pub use crate::api::{
    ParticipantHandle, ParticipantSnapshot, RoomSnapshot, SfuEvent, WorkerConfig, WorkerHandle,
    WorkerStats, spawn,
};
pub use crate::error::{RouteError, SdpError, SfuError};
pub use crate::ids::{LeaveReason, ParticipantId, RoomId, TrackId, TrackInfo, TrackSource};
pub use crate::pool::Sfu;
pub use crate::router::{Forward, Limits, Router, RouterOutput, RouterStats, SubscriptionState};
pub use str0m;
