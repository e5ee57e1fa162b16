//! One allocation's state: its client, relay address, lifetime, credentials, permissions
//! and channel bindings, and its traffic counters; plus [`AllocationInfo`], the read-only
//! view the admin API lists.
//!
//! Lookups on the relay path are hash-map hits keyed by what a packet carries: a peer IP
//! for permissions, a channel number (client to peer) or a peer address (peer to client)
//! for channels. Expiry is a comparison with the time passed in, so a permission that has
//! just run out is refused even before its timer has removed it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use switchboard_stun::TransactionId;

use crate::attrs::Family;
use crate::auth::Key;
use crate::rate::TokenBucket;
use crate::server::Client;
use crate::stats::Traffic;

/// A channel bound to a peer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// An allocation that has its relay socket.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub client: Client,
    pub family: Family,
    /// The address announced to the client (public relay IP and port).
    pub relay: SocketAddr,
    pub username: Box<str>,
    pub quota_user: Box<str>,
    pub key: Key,
    /// The Allocate transaction, so that its retransmission gets the same success.
    pub transaction: TransactionId,
    pub created: Instant,
    pub expires: Instant,
    pub permissions: HashMap<IpAddr, Instant>,
    pub channels: HashMap<u16, Channel>,
    pub channel_by_peer: HashMap<SocketAddr, u16>,
    /// Indexed by [`crate::Direction`].
    pub traffic: [Traffic; 2],
    pub limiter: Option<TokenBucket>,
    /// The reservation token handed out with this allocation, for the response's
    /// retransmission.
    pub reservation_token: Option<[u8; 8]>,
    pub address_error: bool,
    /// Whether the Allocate used MESSAGE-INTEGRITY-SHA256, so a retransmission is answered
    /// alike.
    pub sign_sha256: bool,
}

impl Allocation {
    pub fn permitted(&self, peer: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&peer)
            .is_some_and(|expires| *expires > now)
    }

    /// The peer bound to `channel`, if the binding is alive.
    pub fn channel_peer(&self, channel: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The live channel bound to `peer`, if any.
    pub fn peer_channel(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let channel = *self.channel_by_peer.get(&peer)?;
        self.channel_peer(channel, now).map(|_| channel)
    }

    pub fn info(&self, now: Instant) -> AllocationInfo {
        let left = |at: Instant| at.saturating_duration_since(now);
        let mut permissions: Vec<_> = self
            .permissions
            .iter()
            .filter(|(_, expires)| **expires > now)
            .map(|(peer, expires)| PermissionInfo {
                peer: *peer,
                expires_in: left(*expires),
            })
            .collect();
        permissions.sort_by_key(|p| p.peer);
        let mut channels: Vec<_> = self
            .channels
            .iter()
            .filter(|(_, c)| c.expires > now)
            .map(|(number, c)| ChannelInfo {
                number: *number,
                peer: c.peer,
                expires_in: left(c.expires),
            })
            .collect();
        channels.sort_by_key(|c| c.number);
        AllocationInfo {
            username: self.username.to_string(),
            client: self.client,
            relay: self.relay,
            permissions,
            channels,
            to_peer: self.traffic[0],
            to_client: self.traffic[1],
            age: now.saturating_duration_since(self.created),
            expires_in: left(self.expires),
        }
    }
}

/// A permission as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionInfo {
    pub peer: IpAddr,
    pub expires_in: Duration,
}

/// A channel binding as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires_in: Duration,
}

/// An allocation as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationInfo {
    pub username: String,
    pub client: Client,
    /// The announced relayed transport address.
    pub relay: SocketAddr,
    pub permissions: Vec<PermissionInfo>,
    pub channels: Vec<ChannelInfo>,
    pub to_peer: Traffic,
    pub to_client: Traffic,
    pub age: Duration,
    pub expires_in: Duration,
}
