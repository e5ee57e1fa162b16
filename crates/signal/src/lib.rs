//! Switchboard's signaling core: rooms, participants, the random-match lobby, message routing
//! and per-connection limits, as pure logic.
//!
//! Nothing here touches a socket, a task or a clock. A driver feeds [`Signaling`] with
//! connection events and decoded messages, each stamped with the current [`Instant`], and
//! drains the resulting [`Output`]s with [`Signaling::poll_output`]; timers are reported by
//! [`Signaling::poll_timeout`] and fired with [`Signaling::handle_timeout`]. That keeps every
//! routing decision testable without sockets or sleeps (see the tests beside each module).
//! In SFU rooms the core also queues [`MediaAction`]s (participants entering and leaving,
//! their offers and answers for the server) for the driver to pass to the media engine.
//!
//! [`TutorialRelay`] is the equally small core of the classic tutorial protocol.
//!
//! [`Instant`]: std::time::Instant

mod core;
mod limits;
mod lobby;
mod tutorial;

pub use crate::core::{
    ConnId, CoreStats, MediaAction, Output, ParticipantView, Recipients, RelayRoute, RoomView,
    Signaling,
};
pub use crate::limits::{Admission, Limits, RateLimiter, Verdict, validate_name, validate_room};
pub use crate::lobby::Lobby;
pub use crate::tutorial::TutorialRelay;

#[cfg(test)]
mod tests;
