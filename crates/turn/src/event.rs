//! What the server decided that an operator may want to read in a log: allocations made
//! and ended, authentication failures, requests refused by a limit.
//!
//! The core never logs (it does no I/O); it queues an [`Event`] among its outputs and the
//! driver writes it where it likes, at the level it likes. Events come from requests,
//! timers and closed connections only, never from relayed data, so the relay path stays
//! free of them. The first challenge every client gets (`missing_credentials`) is normal
//! and makes no event; the counters still count it.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_stun::ErrorCode;

use crate::auth::AuthFailure;
use crate::server::{Client, RelayId};
use crate::stats::Traffic;

/// Something that happened, for the log; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An allocation exists: its relay socket is bound and the success response is queued.
    AllocationCreated {
        relay: RelayId,
        client: Client,
        username: Box<str>,
        /// The relayed address announced to the client.
        relayed: SocketAddr,
        lifetime: Duration,
    },
    /// An allocation is gone, and what it relayed in its life.
    AllocationEnded {
        relay: RelayId,
        client: Client,
        username: Box<str>,
        relayed: SocketAddr,
        reason: EndReason,
        /// How long it lived.
        age: Duration,
        to_peer: Traffic,
        to_client: Traffic,
    },
    /// A request failed authentication (other than the normal first challenge).
    AuthFailed {
        client: Client,
        failure: AuthFailure,
        /// The USERNAME the request carried, if any: what the client sent, not a user the
        /// server knows.
        username: Option<Box<str>>,
    },
    /// An authenticated request was refused by a quota or a capacity limit.
    Refused {
        client: Client,
        username: Box<str>,
        limit: Limit,
    },
}

/// Why an allocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Its lifetime ran out without a Refresh.
    Expired,
    /// The client deleted it (Refresh with LIFETIME 0).
    Deleted,
    /// Its TCP or TLS connection closed.
    ConnectionClosed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Deleted => "deleted",
            Self::ConnectionClosed => "connection_closed",
        }
    }
}

/// The limit that refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The user holds `max_allocations_per_user` allocations (486).
    UserQuota,
    /// The server holds `max_allocations` allocations (508).
    Allocations,
    /// No relay port is free in the range (508).
    RelayPorts,
    /// The relay socket could not be bound, for another reason than a port in use (508).
    RelayBind,
    /// The allocation holds `max_permissions_per_allocation` permissions (508).
    Permissions,
    /// The allocation holds `max_channels_per_allocation` channels (508).
    Channels,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserQuota => "user_quota",
            Self::Allocations => "allocations",
            Self::RelayPorts => "relay_ports",
            Self::RelayBind => "relay_bind",
            Self::Permissions => "permissions",
            Self::Channels => "channels",
        }
    }

    /// The error the request was answered with.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::UserQuota => ErrorCode::ALLOCATION_QUOTA_REACHED,
            _ => ErrorCode::INSUFFICIENT_CAPACITY,
        }
    }
}
