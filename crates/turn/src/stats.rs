//! Counters a TURN server keeps for `/metrics`: gauges of what exists, counters of what
//! happened. Plain integers owned by the [`Server`](crate::Server); the driver copies a
//! snapshot out when asked, so counting costs no atomic operation on the relay path.

use switchboard_stun::ErrorCode;

use crate::auth::AuthFailure;

/// Which way relayed data went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client, out of a relay socket to a peer.
    ToPeer,
    /// From a peer, into a relay socket and on to the client.
    ToClient,
}

impl Direction {
    pub const ALL: [Self; 2] = [Self::ToPeer, Self::ToClient];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToPeer => "to_peer",
            Self::ToClient => "to_client",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Bytes and packets relayed one way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Application bytes (the DATA or ChannelData payload, not the TURN framing).
    pub bytes: u64,
    pub packets: u64,
}

impl Traffic {
    pub(crate) fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
        self.packets += 1;
    }
}

/// Why a message got no answer and was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Neither STUN nor ChannelData, or a STUN message with a bad FINGERPRINT.
    NotTurn,
    /// A broken indication or ChannelData message (truncated, bad attribute, bad channel).
    Malformed,
    /// A response, or an indication other than Send (Binding keep-alives).
    NotARequest,
    /// A retransmitted Allocate whose relay socket is still being bound.
    Retransmission,
    /// Data from a client without an allocation, or to a relay with none.
    NoAllocation,
    /// Data to or from a peer without a permission.
    NoPermission,
    /// ChannelData on a channel that is not bound.
    NoChannel,
    /// Over the allocation's or the server's bandwidth limit.
    RateLimited,
    /// Data too large to frame for the client.
    TooLarge,
    /// Data to one of the server's own addresses that is not the relayed address of a live
    /// allocation (a listening port, a relay port without an allocation).
    ServerAddress,
}

impl DropReason {
    pub const ALL: [Self; 10] = [
        Self::NotTurn,
        Self::Malformed,
        Self::NotARequest,
        Self::Retransmission,
        Self::NoAllocation,
        Self::NoPermission,
        Self::NoChannel,
        Self::RateLimited,
        Self::TooLarge,
        Self::ServerAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotTurn => "not_turn",
            Self::Malformed => "malformed",
            Self::NotARequest => "not_a_request",
            Self::Retransmission => "retransmission",
            Self::NoAllocation => "no_allocation",
            Self::NoPermission => "no_permission",
            Self::NoChannel => "no_channel",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::ServerAddress => "server_address",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The request methods a TURN server counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Binding,
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    /// Send indications (counted here although they are not requests).
    Send,
    Other,
}

impl RequestKind {
    pub const ALL: [Self; 7] = [
        Self::Binding,
        Self::Allocate,
        Self::Refresh,
        Self::CreatePermission,
        Self::ChannelBind,
        Self::Send,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binding => "binding",
            Self::Allocate => "allocate",
            Self::Refresh => "refresh",
            Self::CreatePermission => "create_permission",
            Self::ChannelBind => "channel_bind",
            Self::Send => "send",
            Self::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The error codes a TURN server sends, in the order [`Stats::errors`] counts them.
pub const ERROR_CODES: [ErrorCode; 13] = [
    ErrorCode::BAD_REQUEST,
    ErrorCode::UNAUTHORIZED,
    ErrorCode::FORBIDDEN,
    ErrorCode::UNKNOWN_ATTRIBUTE,
    ErrorCode::ALLOCATION_MISMATCH,
    ErrorCode::STALE_NONCE,
    ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
    ErrorCode::WRONG_CREDENTIALS,
    ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
    ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    ErrorCode::ALLOCATION_QUOTA_REACHED,
    ErrorCode::SERVER_ERROR,
    ErrorCode::INSUFFICIENT_CAPACITY,
];

/// A snapshot of the server's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations that exist now (relay socket bound).
    pub allocations: u64,
    /// Permissions installed now, over all allocations.
    pub permissions: u64,
    /// Channels bound now, over all allocations.
    pub channels: u64,
    /// Ports held by EVEN-PORT reservations now.
    pub reservations: u64,
    /// Allocations created since start.
    pub allocations_created: u64,
    /// Allocations that ended because their lifetime ran out.
    pub allocations_expired: u64,
    /// Requests (and Send indications) received, by method.
    pub requests: [u64; RequestKind::ALL.len()],
    /// Relayed traffic, by [`Direction`].
    pub relayed: [Traffic; 2],
    /// Failed authentications, by [`AuthFailure`].
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    /// Error responses sent, by [`ERROR_CODES`].
    pub errors: [u64; ERROR_CODES.len()],
    /// Messages dropped, by [`DropReason`].
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Stats {
    pub fn relayed(&self, direction: Direction) -> Traffic {
        self.relayed[direction.index()]
    }

    pub fn auth_failures(&self, failure: AuthFailure) -> u64 {
        self.auth_failures[failure.index()]
    }

    /// Error responses sent with `code`; 0 for codes this server never sends.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        ERROR_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i])
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    pub fn requests(&self, kind: RequestKind) -> u64 {
        self.requests[kind.index()]
    }

    pub(crate) fn count_error(&mut self, code: ErrorCode) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i] += 1;
        }
    }
}
