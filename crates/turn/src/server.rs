//! The TURN server state machine.
//!
//! [`Server`] owns every allocation, permission, channel binding, reservation and relay
//! port, and decides everything about them; it never touches a socket or reads a clock.
//! A driver feeds it:
//! - what clients send to the STUN/TURN port: [`Server::handle_client`];
//! - what peers send to a relay socket: [`Server::handle_peer`];
//! - the result of binding a relay socket it asked for: [`Server::relay_bound`];
//! - the end of a TCP or TLS connection: [`Server::client_closed`];
//! - the passing of time: [`Server::handle_timeout`] at [`Server::poll_timeout`];
//!
//! and after each call drains [`Server::poll_output`]: datagrams or frames to send to a
//! client or from a relay socket to a peer, relay sockets to bind or close, and
//! [`Event`]s for the operator's log.
//!
//! Relayed data costs no allocation: lookups are hash-map hits, outputs are written into
//! one buffer that is reused once drained, and relaying makes no event.
//!
//! **Relay to relay.** Data a client sends to the relayed address of another live
//! allocation on this server never leaves through a socket: the core hands it straight to
//! that allocation as if it had arrived on its relay socket from the sender's relayed
//! address (its permissions, channels, counters and bandwidth limits apply). The relay
//! addresses are the server's own, which the peer policy refuses; only a live allocation's
//! exact relayed address is let through that way, so a client can reach another
//! allocation but never a listening port or a relay port without an allocation. Timers are a heap with one entry per
//! allocation, permission, channel and reservation; a refresh only moves the deadline
//! stored in the state, and an entry that fires early is pushed back at the new deadline.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard_stun::{
    Attribute, AttributeType, BindingResponder, Class, DecodeError, EncodeError, ErrorCode,
    Message, MessageBuilder, MessageType, Method, Outcome, ReplyKind, TransactionId,
};

use crate::allocation::{Allocation, AllocationInfo, Channel};
use crate::attrs::{self, Family, PROTOCOL_UDP, ValueError};
use crate::auth::{AuthFailure, Credentials, Found, Key, NonceError, Nonces};
use crate::channel_data::{self, ChannelData, Kind, is_valid_channel};
use crate::config::{ConfigError, RelayAddress, ServerConfig};
use crate::event::{EndReason, Event, Limit};
use crate::policy::{PeerDenial, PeerPolicy};
use crate::ports::PortAllocator;
use crate::rate::TokenBucket;
use crate::stats::{Direction, DropReason, RequestKind, Stats};

/// How a client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// Streams pad ChannelData to 4 bytes.
    fn is_stream(self) -> bool {
        !matches!(self, Self::Udp)
    }
}

/// A client's end of the 5-tuple: the transport and its address. The server's end is the
/// listening socket of that transport, of which there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// A relay socket: an index the driver stores the socket under, and a generation that
/// changes each time the index is reused, so that nothing meant for an old socket reaches
/// a new one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayId {
    index: u32,
    generation: u32,
}

impl RelayId {
    /// Where the driver keeps the socket; below [`Server::relay_capacity`].
    pub fn index(self) -> usize {
        self.index as usize
    }

    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Debug for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayId({}#{})", self.index, self.generation)
    }
}

/// Where a transmit goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To a client, on the transport it used.
    Client(Client),
    /// From a relay socket to a peer.
    Peer { relay: RelayId, addr: SocketAddr },
}

/// Bytes to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub destination: Destination,
    pub data: &'a [u8],
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    Transmit(Transmit<'a>),
    /// Bind a UDP socket on `addr` for `relay` and report with [`Server::relay_bound`].
    /// With `dont_fragment`, datagrams leave it with the DF bit set.
    BindRelay {
        relay: RelayId,
        addr: SocketAddr,
        dont_fragment: bool,
    },
    /// Close the socket of `relay`.
    CloseRelay {
        relay: RelayId,
    },
    /// Nothing to do but tell the operator, if the driver wants to.
    Event(Event),
}

/// Why a relay socket could not be bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// The port is taken by someone else; the server tries another.
    AddrInUse,
    /// Anything else; the allocation fails with 508.
    Failed,
}

/// What became of one input; for counters and tests. Outputs say what to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// A success response was queued.
    Success,
    /// An error response with this code was queued.
    Error(ErrorCode),
    /// Data was queued for a peer or a client.
    Relayed,
    /// An Allocate waits for its relay socket; the response follows [`Server::relay_bound`].
    Pending,
    Dropped(DropReason),
}

/// Where data from a client to a peer address goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Out of the allocation's relay socket.
    Socket,
    /// To this allocation, without a socket: the address is its relayed address.
    Internal(RelayId),
    /// Nowhere: one of the server's own addresses, and no allocation's.
    Refused,
}

/// Ports tried for one allocation before giving up with 508.
const MAX_BIND_ATTEMPTS: u8 = 8;
/// Room reserved in the output buffer for any response.
const MAX_RESPONSE_LEN: usize = 1024;
/// Unknown comprehension-required attributes listed in a 420 at most.
const MAX_UNKNOWN_LISTED: usize = 16;

/// Comprehension-required attributes a TURN server understands in requests.
fn understood(kind: AttributeType) -> bool {
    matches!(
        kind,
        AttributeType::MAPPED_ADDRESS
            | AttributeType::USERNAME
            | AttributeType::MESSAGE_INTEGRITY
            | AttributeType::ERROR_CODE
            | AttributeType::UNKNOWN_ATTRIBUTES
            | AttributeType::CHANNEL_NUMBER
            | AttributeType::LIFETIME
            | AttributeType::XOR_PEER_ADDRESS
            | AttributeType::DATA
            | AttributeType::REALM
            | AttributeType::NONCE
            | AttributeType::REQUESTED_ADDRESS_FAMILY
            | AttributeType::EVEN_PORT
            | AttributeType::REQUESTED_TRANSPORT
            | AttributeType::DONT_FRAGMENT
            | AttributeType::MESSAGE_INTEGRITY_SHA256
            | AttributeType::PASSWORD_ALGORITHM
            | AttributeType::XOR_MAPPED_ADDRESS
            | AttributeType::RESERVATION_TOKEN
    )
}

/// The key a response is signed with, and how.
#[derive(Clone, Copy, Debug)]
enum Sign {
    None,
    Sha1(Key),
    Sha256(Key),
}

/// A request that passed authentication.
struct Auth<'m> {
    username: &'m str,
    found: Found,
    sign: Sign,
}

/// Why a request was not authenticated, and so how it is answered.
enum Reject {
    /// 401 with REALM and NONCE.
    Challenge(AuthFailure),
    /// 438 with REALM and a new NONCE.
    Stale(AuthFailure),
    /// 400.
    BadRequest(AuthFailure),
}

/// An Allocate waiting for its relay socket.
#[derive(Debug)]
struct Pending {
    client: Client,
    transaction: TransactionId,
    username: Box<str>,
    quota_user: Box<str>,
    key: Key,
    sign_sha256: bool,
    lifetime: Duration,
    family: Family,
    dont_fragment: bool,
    even_port: bool,
    reserve_next: bool,
    /// The port after ours, taken with ours for a reservation not yet bound.
    pair_port: Option<u16>,
    /// The slot binding the reserved port.
    reservation: Option<RelayId>,
    attempts: u8,
    address_error: bool,
}

/// A port held for a later Allocate with RESERVATION-TOKEN.
#[derive(Debug)]
struct Reservation {
    token: [u8; 8],
    family: Family,
    expires: Instant,
    /// The Allocate that is binding it; `None` once bound.
    owner: Option<RelayId>,
}

#[derive(Debug)]
enum Slot {
    Free,
    Binding(Box<Pending>),
    Reserved(Reservation),
    Allocated(Box<Allocation>),
}

#[derive(Debug)]
struct SlotEntry {
    generation: u32,
    port: Option<(Family, u16)>,
    socket_open: bool,
    state: Slot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Allocation,
    Permission(IpAddr),
    Channel(u16),
    Reservation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    index: u32,
    generation: u32,
    kind: TimerKind,
}

#[derive(Debug)]
enum Queued {
    Transmit {
        destination: Destination,
        start: usize,
        end: usize,
    },
    Bind {
        relay: RelayId,
        addr: SocketAddr,
        dont_fragment: bool,
    },
    Close {
        relay: RelayId,
    },
    Event(Event),
}

/// Settings the request handlers read, kept apart from the state they change.
struct Settings {
    /// Shared so that a challenge can write it while the output buffer is borrowed.
    realm: Arc<str>,
    software: Option<String>,
    relay_v4: Option<RelayAddress>,
    relay_v6: Option<RelayAddress>,
    default_lifetime: Duration,
    max_lifetime: Duration,
    permission_lifetime: Duration,
    channel_lifetime: Duration,
    reservation_lifetime: Duration,
    max_allocations: usize,
    max_allocations_per_user: usize,
    max_permissions: usize,
    max_channels: usize,
    allocation_bandwidth: u64,
    policy: PeerPolicy,
}

impl Settings {
    fn relay(&self, family: Family) -> Option<RelayAddress> {
        match family {
            Family::V4 => self.relay_v4,
            Family::V6 => self.relay_v6,
        }
    }

    /// RFC 8656 §7.2: the requested lifetime, at most the maximum, at least the default.
    fn lifetime(&self, requested: Option<u32>) -> Duration {
        match requested {
            Some(secs) => {
                Duration::from_secs(u64::from(secs)).clamp(self.default_lifetime, self.max_lifetime)
            }
            None => self.default_lifetime,
        }
    }
}

/// The TURN server core; see the module documentation.
pub struct Server {
    settings: Settings,
    credentials: Credentials,
    nonces: Nonces,
    binding: BindingResponder,
    rng: StdRng,
    /// Monotonic time and Unix time at creation, to tell Unix time from `now`.
    epoch: (Instant, Duration),
    slots: Vec<SlotEntry>,
    free_slots: Vec<u32>,
    capacity: usize,
    by_client: HashMap<Client, RelayId>,
    /// Live allocations by relay port, for relay-to-relay delivery.
    by_port: HashMap<(Family, u16), RelayId>,
    per_user: HashMap<Box<str>, usize>,
    reservations: HashMap<[u8; 8], RelayId>,
    pending: usize,
    ports_v4: PortAllocator,
    ports_v6: PortAllocator,
    timers: BinaryHeap<Reverse<Timer>>,
    total_limiter: Option<TokenBucket>,
    out: Vec<u8>,
    queue: VecDeque<Queued>,
    txid_prefix: [u8; 4],
    txid_counter: u64,
    stats: Stats,
}

impl Server {
    /// A server created at `now`, when the Unix time is `unix_now`.
    pub fn new(
        config: ServerConfig,
        now: Instant,
        unix_now: Duration,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = StdRng::from_seed(config.seed);
        let nonce_key: [u8; 32] = rng.r#gen();
        let binding = BindingResponder::new(config.software.as_deref())
            .map_err(|_| ConfigError::Software(config.software.clone().unwrap_or_default()))?;
        let credentials =
            Credentials::new(&config.realm, &config.users, config.rest_secret.as_deref());
        let total_limiter =
            (config.total_bandwidth > 0).then(|| TokenBucket::new(config.total_bandwidth, now));
        let txid_prefix = rng.r#gen();
        // The relay addresses are the server's own: sending to them through a socket would
        // let a client reach services on the relay interface. Another allocation's relayed
        // address is reached all the same, inside the core (see the module documentation).
        let mut policy = config.peer_policy;
        for relay in [config.relay_v4, config.relay_v6].into_iter().flatten() {
            policy.server_addresses.extend([relay.bind, relay.public]);
        }
        Ok(Self {
            credentials,
            nonces: Nonces::new(nonce_key, config.nonce_lifetime.as_secs()),
            binding,
            rng,
            epoch: (now, unix_now),
            slots: Vec::new(),
            free_slots: Vec::new(),
            // Every allocation may also hold one reserved port.
            capacity: config.max_allocations.saturating_mul(2),
            by_client: HashMap::new(),
            by_port: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            pending: 0,
            ports_v4: PortAllocator::new(config.min_port, config.max_port),
            ports_v6: PortAllocator::new(config.min_port, config.max_port),
            timers: BinaryHeap::new(),
            total_limiter,
            out: Vec::with_capacity(64 * 1024),
            queue: VecDeque::new(),
            txid_prefix,
            txid_counter: 0,
            stats: Stats::default(),
            settings: Settings {
                realm: config.realm.into(),
                software: config.software,
                relay_v4: config.relay_v4,
                relay_v6: config.relay_v6,
                default_lifetime: config.default_lifetime,
                max_lifetime: config.max_lifetime,
                permission_lifetime: config.permission_lifetime,
                channel_lifetime: config.channel_lifetime,
                reservation_lifetime: config.reservation_lifetime,
                max_allocations: config.max_allocations,
                max_allocations_per_user: config.max_allocations_per_user,
                max_permissions: config.max_permissions_per_allocation,
                max_channels: config.max_channels_per_allocation,
                allocation_bandwidth: config.allocation_bandwidth,
                policy,
            },
        })
    }

    /// Relay indices are below this; the driver can size its tables once.
    pub fn relay_capacity(&self) -> usize {
        self.capacity
    }

    pub fn realm(&self) -> &str {
        self.credentials.realm()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every allocation, ordered by client.
    pub fn allocations(&self, now: Instant) -> Vec<AllocationInfo> {
        let mut list: Vec<_> = self
            .slots
            .iter()
            .filter_map(|entry| match &entry.state {
                Slot::Allocated(allocation) => Some(allocation.info(now)),
                _ => None,
            })
            .collect();
        list.sort_by_key(|info| info.client);
        list
    }

    fn unix_secs(&self, now: Instant) -> u64 {
        (self.epoch.1 + now.saturating_duration_since(self.epoch.0)).as_secs()
    }

    // ----- Outputs and timers -----

    /// The next thing to do, until `None`. Transmit data borrows the server until the next
    /// call.
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        let Some(queued) = self.queue.pop_front() else {
            // Everything queued has been handed out; the buffer is reused from the start.
            self.out.clear();
            return None;
        };
        Some(match queued {
            Queued::Transmit {
                destination,
                start,
                end,
            } => Output::Transmit(Transmit {
                destination,
                data: &self.out[start..end],
            }),
            Queued::Bind {
                relay,
                addr,
                dont_fragment,
            } => Output::BindRelay {
                relay,
                addr,
                dont_fragment,
            },
            Queued::Close { relay } => Output::CloseRelay { relay },
            Queued::Event(event) => Output::Event(event),
        })
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(timer)| timer.at)
    }

    /// Expires allocations, permissions, channels and reservations due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(timer)) = self.timers.peek().copied() {
            if timer.at > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.slots.get_mut(timer.index as usize) else {
                continue;
            };
            if entry.generation != timer.generation {
                continue;
            }
            let relay = RelayId {
                index: timer.index,
                generation: timer.generation,
            };
            let mut again = None;
            let mut free = false;
            let mut expired = false;
            match (&mut entry.state, timer.kind) {
                (Slot::Allocated(allocation), TimerKind::Allocation) => {
                    if allocation.expires <= now {
                        expired = true;
                        self.stats.allocations_expired += 1;
                    } else {
                        again = Some(allocation.expires);
                    }
                }
                (Slot::Allocated(allocation), TimerKind::Permission(ip)) => {
                    if let Some(expires) = allocation.permissions.get(&ip).copied() {
                        if expires <= now {
                            allocation.permissions.remove(&ip);
                            self.stats.permissions -= 1;
                        } else {
                            again = Some(expires);
                        }
                    }
                }
                (Slot::Allocated(allocation), TimerKind::Channel(number)) => {
                    if let Some(channel) = allocation.channels.get(&number).copied() {
                        if channel.expires <= now {
                            allocation.channels.remove(&number);
                            allocation.channel_by_peer.remove(&channel.peer);
                            self.stats.channels -= 1;
                        } else {
                            again = Some(channel.expires);
                        }
                    }
                }
                (Slot::Reserved(reservation), TimerKind::Reservation)
                    if reservation.owner.is_none() && reservation.expires <= now =>
                {
                    free = true;
                }
                _ => {}
            }
            if expired {
                self.end_allocation(relay, EndReason::Expired, now);
            } else if free {
                self.free_slot(relay);
            } else if let Some(at) = again {
                self.push_timer(relay, timer.kind, at);
            }
        }
    }

    fn push_timer(&mut self, relay: RelayId, kind: TimerKind, at: Instant) {
        self.timers.push(Reverse(Timer {
            at,
            index: relay.index,
            generation: relay.generation,
            kind,
        }));
    }

    fn queue_transmit(&mut self, destination: Destination, start: usize) {
        let end = self.out.len();
        self.queue.push_back(Queued::Transmit {
            destination,
            start,
            end,
        });
    }

    fn event(&mut self, event: Event) {
        self.queue.push_back(Queued::Event(event));
    }

    fn drop(&mut self, reason: DropReason) -> Handled {
        self.stats.dropped[reason.index()] += 1;
        Handled::Dropped(reason)
    }

    // ----- Slots -----

    fn slot(&self, relay: RelayId) -> Option<&SlotEntry> {
        self.slots
            .get(relay.index())
            .filter(|entry| entry.generation == relay.generation)
    }

    fn slot_mut(&mut self, relay: RelayId) -> Option<&mut SlotEntry> {
        self.slots
            .get_mut(relay.index())
            .filter(|entry| entry.generation == relay.generation)
    }

    fn allocation_mut(&mut self, relay: RelayId) -> Option<&mut Allocation> {
        match &mut self.slot_mut(relay)?.state {
            Slot::Allocated(allocation) => Some(allocation),
            _ => None,
        }
    }

    fn new_slot(&mut self) -> Option<RelayId> {
        let index = match self.free_slots.pop() {
            Some(index) => index,
            None if self.slots.len() < self.capacity => {
                self.slots.push(SlotEntry {
                    generation: 0,
                    port: None,
                    socket_open: false,
                    state: Slot::Free,
                });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        Some(RelayId {
            index,
            generation: self.slots[index as usize].generation,
        })
    }

    fn ports(&mut self, family: Family) -> &mut PortAllocator {
        match family {
            Family::V4 => &mut self.ports_v4,
            Family::V6 => &mut self.ports_v6,
        }
    }

    fn release_user(&mut self, user: &str) {
        if let Some(count) = self.per_user.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(user);
            }
        }
    }

    /// Ends whatever lives in a slot: its allocation, pending allocation or reservation,
    /// its port and its socket. Returns the allocation, if that is what it was.
    fn free_slot(&mut self, relay: RelayId) -> Option<Box<Allocation>> {
        let entry = self.slot_mut(relay)?;
        let state = std::mem::replace(&mut entry.state, Slot::Free);
        let port = entry.port.take();
        let socket_open = std::mem::replace(&mut entry.socket_open, false);
        entry.generation = entry.generation.wrapping_add(1);
        let mut ended = None;
        match state {
            Slot::Free => {}
            Slot::Binding(pending) => {
                self.by_client.remove(&pending.client);
                self.release_user(&pending.quota_user);
                self.pending -= 1;
                if let Some(pair) = pending.pair_port {
                    self.ports(pending.family).release(pair);
                }
                if let Some(reservation) = pending.reservation {
                    self.free_slot(reservation);
                }
            }
            Slot::Reserved(reservation) => {
                if reservation.owner.is_none() {
                    self.reservations.remove(&reservation.token);
                    self.stats.reservations -= 1;
                }
            }
            Slot::Allocated(allocation) => {
                self.by_client.remove(&allocation.client);
                if let Some(key) = port {
                    self.by_port.remove(&key);
                }
                self.release_user(&allocation.quota_user);
                self.stats.allocations -= 1;
                self.stats.permissions -= allocation.permissions.len() as u64;
                self.stats.channels -= allocation.channels.len() as u64;
                ended = Some(allocation);
            }
        }
        if let Some((family, port)) = port {
            self.ports(family).release(port);
        }
        if socket_open {
            self.queue.push_back(Queued::Close { relay });
        }
        self.free_slots.push(relay.index);
        ended
    }

    /// Ends `relay`'s allocation (if it still has one) and says so.
    fn end_allocation(&mut self, relay: RelayId, reason: EndReason, now: Instant) {
        let Some(allocation) = self.free_slot(relay) else {
            return;
        };
        let Allocation {
            client,
            username,
            relay: relayed,
            created,
            traffic,
            ..
        } = *allocation;
        self.event(Event::AllocationEnded {
            relay,
            client,
            username,
            relayed,
            reason,
            age: now.saturating_duration_since(created),
            to_peer: traffic[Direction::ToPeer.index()],
            to_client: traffic[Direction::ToClient.index()],
        });
    }

    /// A TCP or TLS connection ended at `now`: its allocation goes with it, since the
    /// 5-tuple that names the allocation no longer exists.
    pub fn client_closed(&mut self, client: Client, now: Instant) {
        if let Some(relay) = self.by_client.get(&client).copied() {
            self.end_allocation(relay, EndReason::ConnectionClosed, now);
        }
    }

    // ----- Client input -----

    /// One datagram (UDP) or one frame (TCP, TLS: cut with [`crate::frame_len`]) from
    /// `client`.
    pub fn handle_client(&mut self, client: Client, data: &[u8], now: Instant) -> Handled {
        match channel_data::kind(data) {
            Kind::Stun => self.handle_stun(client, data, now),
            Kind::ChannelData => self.handle_channel_data(client, data, now),
            Kind::Other => self.drop(DropReason::NotTurn),
        }
    }

    fn handle_channel_data(&mut self, client: Client, data: &[u8], now: Instant) -> Handled {
        let Ok(message) = ChannelData::decode(data) else {
            return self.drop(DropReason::Malformed);
        };
        let Some(relay) = self.by_client.get(&client).copied() else {
            return self.drop(DropReason::NoAllocation);
        };
        let Some(allocation) = self.allocation_mut(relay) else {
            return self.drop(DropReason::NoAllocation);
        };
        let Some(peer) = allocation.channel_peer(message.channel, now) else {
            return self.drop(DropReason::NoChannel);
        };
        self.relay_to_peer(relay, peer, message.data, now)
    }

    /// Sends `payload` from `relay` to `peer` if a permission allows it and the limits
    /// have room; to another allocation's relayed address, hands it to that allocation.
    fn relay_to_peer(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> Handled {
        let route = self.route(peer);
        let Some(entry) = self
            .slots
            .get_mut(relay.index())
            .filter(|e| e.generation == relay.generation)
        else {
            return self.drop(DropReason::NoAllocation);
        };
        let Slot::Allocated(allocation) = &mut entry.state else {
            return self.drop(DropReason::NoAllocation);
        };
        if !allocation.permitted(peer.ip().to_canonical(), now) {
            return self.drop(DropReason::NoPermission);
        }
        if route == Route::Refused {
            return self.drop(DropReason::ServerAddress);
        }
        if !take_bandwidth(
            &mut allocation.limiter,
            &mut self.total_limiter,
            payload.len(),
            now,
        ) {
            return self.drop(DropReason::RateLimited);
        }
        allocation.traffic[Direction::ToPeer.index()].add(payload.len());
        self.stats.relayed[Direction::ToPeer.index()].add(payload.len());
        if let Route::Internal(target) = route {
            // As if it had arrived on the target's relay socket from our relayed address.
            let from = allocation.relay;
            return self.relay_to_client(target, from, payload, now);
        }
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        self.queue_transmit(Destination::Peer { relay, addr: peer }, start);
        Handled::Relayed
    }

    fn handle_stun(&mut self, client: Client, data: &[u8], now: Instant) -> Handled {
        let message = match Message::decode(data) {
            Ok(message) => message,
            Err(DecodeError::NotStun(_)) => return self.drop(DropReason::NotTurn),
            Err(DecodeError::Malformed { header, .. }) => {
                if header.message_type.class != Class::Request {
                    return self.drop(DropReason::Malformed);
                }
                if header.message_type.method == Method::BINDING {
                    return self.binding(client, data);
                }
                return self.respond(
                    client,
                    header.message_type.method,
                    header.transaction_id,
                    Some(ErrorCode::BAD_REQUEST),
                    Sign::None,
                    |_| Ok(()),
                );
            }
        };
        let message_type = message.message_type();
        match (message_type.class, message_type.method) {
            (Class::Request, Method::BINDING) => {
                self.stats.requests[RequestKind::Binding.index()] += 1;
                self.binding(client, data)
            }
            (Class::Request, method) => self.turn_request(client, &message, method, now),
            (Class::Indication, Method::SEND) => {
                self.stats.requests[RequestKind::Send.index()] += 1;
                self.send_indication(client, &message, now)
            }
            _ => self.drop(DropReason::NotARequest),
        }
    }

    fn binding(&mut self, client: Client, data: &[u8]) -> Handled {
        let start = self.out.len();
        self.out.resize(start + MAX_RESPONSE_LEN, 0);
        let outcome = self
            .binding
            .handle(data, client.addr, &mut self.out[start..]);
        match outcome {
            Outcome::Reply { len, kind } => {
                self.out.truncate(start + len);
                self.queue_transmit(Destination::Client(client), start);
                match kind {
                    ReplyKind::Success => Handled::Success,
                    ReplyKind::Error(code) => {
                        self.stats.count_error(code);
                        Handled::Error(code)
                    }
                }
            }
            Outcome::Drop(_) => {
                self.out.truncate(start);
                self.drop(DropReason::Malformed)
            }
        }
    }

    fn send_indication(&mut self, client: Client, message: &Message<'_>, now: Instant) -> Handled {
        let Some(relay) = self.by_client.get(&client).copied() else {
            return self.drop(DropReason::NoAllocation);
        };
        let mut peer = None;
        let mut data = None;
        for attribute in message.attributes() {
            let Attribute::Other(raw) = attribute else {
                continue;
            };
            match raw.kind {
                AttributeType::XOR_PEER_ADDRESS if peer.is_none() => {
                    match attrs::read_xor_address(raw.value, &message.transaction_id()) {
                        Ok(addr) => peer = Some(addr),
                        Err(_) => return self.drop(DropReason::Malformed),
                    }
                }
                AttributeType::DATA if data.is_none() => data = Some(raw.value),
                _ => {}
            }
        }
        let (Some(peer), Some(data)) = (peer, data) else {
            return self.drop(DropReason::Malformed);
        };
        self.relay_to_peer(relay, canonical(peer), data, now)
    }

    fn turn_request(
        &mut self,
        client: Client,
        message: &Message<'_>,
        method: Method,
        now: Instant,
    ) -> Handled {
        let kind = match method {
            Method::ALLOCATE => RequestKind::Allocate,
            Method::REFRESH => RequestKind::Refresh,
            Method::CREATE_PERMISSION => RequestKind::CreatePermission,
            Method::CHANNEL_BIND => RequestKind::ChannelBind,
            _ => RequestKind::Other,
        };
        self.stats.requests[kind.index()] += 1;
        let txid = message.transaction_id();
        if kind == RequestKind::Other {
            // RFC 8489 §6.3.1 leaves unknown methods to the usage; a TURN server has no
            // other request, so it says the request is wrong rather than staying silent.
            return self.respond(
                client,
                method,
                txid,
                Some(ErrorCode::BAD_REQUEST),
                Sign::None,
                |_| Ok(()),
            );
        }
        let auth = match self.authenticate(client, message, now) {
            Ok(auth) => auth,
            Err(reject) => {
                let username = message.attributes().find_map(|a| match a {
                    Attribute::Username(name) => Some(name),
                    _ => None,
                });
                return self.reject(client, method, txid, reject, username, now);
            }
        };

        let mut unknown = [AttributeType::new(0); MAX_UNKNOWN_LISTED];
        let mut count = 0;
        for kind in message.unknown_comprehension_required(understood) {
            if count < MAX_UNKNOWN_LISTED && !unknown[..count].contains(&kind) {
                unknown[count] = kind;
                count += 1;
            }
        }
        if count > 0 {
            return self.respond(
                client,
                method,
                txid,
                Some(ErrorCode::UNKNOWN_ATTRIBUTE),
                auth.sign,
                |b| b.add_unknown_attributes(&unknown[..count]),
            );
        }
        match kind {
            RequestKind::Allocate => self.allocate(client, message, auth, now),
            RequestKind::Refresh => self.refresh(client, message, auth, now),
            RequestKind::CreatePermission => self.create_permission(client, message, auth, now),
            _ => self.channel_bind(client, message, auth, now),
        }
    }

    // ----- Authentication -----

    fn authenticate<'m>(
        &self,
        client: Client,
        message: &Message<'m>,
        now: Instant,
    ) -> Result<Auth<'m>, Reject> {
        let sha256 = message
            .get(AttributeType::MESSAGE_INTEGRITY_SHA256)
            .is_some();
        if !sha256 && message.get(AttributeType::MESSAGE_INTEGRITY).is_none() {
            return Err(Reject::Challenge(AuthFailure::MissingCredentials));
        }
        let mut username = None;
        let mut realm = None;
        let mut nonce = None;
        let mut algorithm_ok = true;
        for attribute in message.attributes() {
            match attribute {
                Attribute::Username(value) if username.is_none() => username = Some(value),
                Attribute::Realm(value) if realm.is_none() => realm = Some(value),
                Attribute::Nonce(value) if nonce.is_none() => nonce = Some(value),
                // Only MD5 keys are offered; an explicit MD5 choice is fine.
                Attribute::Other(raw) if raw.kind == AttributeType::PASSWORD_ALGORITHM => {
                    algorithm_ok &= matches!(raw.value, [0x00, 0x01, 0x00, 0x00]);
                }
                _ => {}
            }
        }
        let (Some(username), Some(realm), Some(nonce)) = (username, realm, nonce) else {
            return Err(Reject::BadRequest(AuthFailure::MissingAttributes));
        };
        if !algorithm_ok {
            return Err(Reject::BadRequest(AuthFailure::UnsupportedAlgorithm));
        }
        let now_unix = self.unix_secs(now);
        match self.nonces.check(nonce, client.addr, now_unix) {
            Ok(()) => {}
            Err(NonceError::Stale) => return Err(Reject::Stale(AuthFailure::StaleNonce)),
            Err(NonceError::Invalid) => return Err(Reject::Stale(AuthFailure::InvalidNonce)),
        }
        if realm != &*self.settings.realm {
            return Err(Reject::Challenge(AuthFailure::WrongRealm));
        }
        // An allocation keeps the key it was created with, so a REST credential that
        // expires during a call does not end the call (only new allocations need a valid
        // expiry).
        let existing =
            self.by_client
                .get(&client)
                .and_then(|relay| match &self.slot(*relay)?.state {
                    Slot::Allocated(a) if &*a.username == username => Some(Found {
                        key: a.key,
                        quota_user: a.quota_user.clone(),
                    }),
                    _ => None,
                });
        let found = match existing {
            Some(found) => found,
            None => self
                .credentials
                .lookup(username, now_unix)
                .map_err(Reject::Challenge)?,
        };
        let verified = if sha256 {
            message.verify_integrity_sha256(&found.key)
        } else {
            message.verify_integrity(&found.key)
        };
        if verified.is_err() {
            return Err(Reject::Challenge(AuthFailure::BadIntegrity));
        }
        let sign = if sha256 {
            Sign::Sha256(found.key)
        } else {
            Sign::Sha1(found.key)
        };
        Ok(Auth {
            username,
            found,
            sign,
        })
    }

    /// Answers a request that failed authentication; `username` is the USERNAME it
    /// carried, for the event.
    fn reject(
        &mut self,
        client: Client,
        method: Method,
        txid: TransactionId,
        reject: Reject,
        username: Option<&str>,
        now: Instant,
    ) -> Handled {
        let (failure, code) = match reject {
            Reject::Challenge(failure) => (failure, ErrorCode::UNAUTHORIZED),
            Reject::Stale(failure) => (failure, ErrorCode::STALE_NONCE),
            Reject::BadRequest(failure) => (failure, ErrorCode::BAD_REQUEST),
        };
        self.stats.auth_failures[failure.index()] += 1;
        let handled = if code == ErrorCode::BAD_REQUEST {
            self.respond(client, method, txid, Some(code), Sign::None, |_| Ok(()))
        } else {
            let nonce = self.nonces.mint(client.addr, self.unix_secs(now));
            let realm = self.settings.realm.clone();
            self.respond(client, method, txid, Some(code), Sign::None, |b| {
                b.add_realm(&realm)?;
                // The nonce is ASCII hex by construction.
                b.add_nonce(std::str::from_utf8(&nonce).unwrap_or_default())
            })
        };
        if failure != AuthFailure::MissingCredentials {
            self.event(Event::AuthFailed {
                client,
                failure,
                username: username.map(Into::into),
            });
        }
        handled
    }

    // ----- Responses -----

    /// Queues a response: ERROR-CODE (for errors), `body`, SOFTWARE, the integrity
    /// attribute the request used, FINGERPRINT.
    fn respond(
        &mut self,
        client: Client,
        method: Method,
        txid: TransactionId,
        error: Option<ErrorCode>,
        sign: Sign,
        body: impl FnOnce(&mut MessageBuilder<'_>) -> Result<(), EncodeError>,
    ) -> Handled {
        let start = self.out.len();
        self.out.resize(start + MAX_RESPONSE_LEN, 0);
        let class = match error {
            Some(_) => Class::ErrorResponse,
            None => Class::SuccessResponse,
        };
        let software = self.settings.software.as_deref();
        let written = (|| {
            let mut builder = MessageBuilder::new(
                &mut self.out[start..],
                MessageType::new(method, class),
                txid,
            )?;
            if let Some(code) = error {
                builder.add_error_code(code, code.default_reason())?;
            }
            body(&mut builder)?;
            if let Some(software) = software {
                builder.add_software(software)?;
            }
            match sign {
                Sign::None => {}
                Sign::Sha1(key) => builder.add_message_integrity(&key)?,
                Sign::Sha256(key) => builder.add_message_integrity_sha256(&key)?,
            }
            builder.finish_with_fingerprint()
        })();
        match written {
            Ok(len) => {
                self.out.truncate(start + len);
                self.queue_transmit(Destination::Client(client), start);
                match error {
                    Some(code) => {
                        self.stats.count_error(code);
                        Handled::Error(code)
                    }
                    None => Handled::Success,
                }
            }
            Err(_) => {
                self.out.truncate(start);
                self.drop(DropReason::TooLarge)
            }
        }
    }

    fn error(
        &mut self,
        client: Client,
        message: &Message<'_>,
        code: ErrorCode,
        sign: Sign,
    ) -> Handled {
        let method = message.message_type().method;
        self.respond(
            client,
            method,
            message.transaction_id(),
            Some(code),
            sign,
            |_| Ok(()),
        )
    }

    /// Answers a request refused by `limit`, and says so.
    fn refuse(
        &mut self,
        client: Client,
        message: &Message<'_>,
        username: &str,
        limit: Limit,
        sign: Sign,
    ) -> Handled {
        let handled = self.error(client, message, limit.code(), sign);
        self.event(Event::Refused {
            client,
            username: username.into(),
            limit,
        });
        handled
    }

    /// The allocation of `client`, if it has one and `auth` is its user: otherwise the
    /// error to answer with (437, or 441).
    /// A 441 is an authentication failure too (`wrong_credentials`): another user's
    /// credentials on an allocation's 5-tuple.
    fn own_allocation(&mut self, client: Client, auth: &Auth<'_>) -> Result<RelayId, ErrorCode> {
        let relay = self
            .by_client
            .get(&client)
            .copied()
            .ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        match &self.slot(relay).map(|e| &e.state) {
            Some(Slot::Allocated(allocation)) if &*allocation.username == auth.username => {
                Ok(relay)
            }
            Some(Slot::Allocated(_)) => {
                self.stats.auth_failures[AuthFailure::WrongCredentials.index()] += 1;
                self.event(Event::AuthFailed {
                    client,
                    failure: AuthFailure::WrongCredentials,
                    username: Some(auth.username.into()),
                });
                Err(ErrorCode::WRONG_CREDENTIALS)
            }
            _ => Err(ErrorCode::ALLOCATION_MISMATCH),
        }
    }

    // ----- Allocate -----

    fn allocate(
        &mut self,
        client: Client,
        message: &Message<'_>,
        auth: Auth<'_>,
        now: Instant,
    ) -> Handled {
        let txid = message.transaction_id();
        let sign = auth.sign;
        if let Some(relay) = self.by_client.get(&client).copied() {
            return match self.slot(relay).map(|e| &e.state) {
                Some(Slot::Allocated(a))
                    if a.transaction == txid && &*a.username == auth.username =>
                {
                    self.allocate_success(relay, now)
                }
                Some(Slot::Binding(p)) if p.transaction == txid => {
                    self.drop(DropReason::Retransmission)
                }
                _ => self.error(client, message, ErrorCode::ALLOCATION_MISMATCH, sign),
            };
        }

        let mut transport = None;
        let mut family = None;
        let mut additional = None;
        let mut even_port = None;
        let mut token = None;
        let mut dont_fragment = false;
        let mut lifetime = None;
        let mut bad = None;
        for attribute in message.attributes() {
            let Attribute::Other(raw) = attribute else {
                continue;
            };
            let result = match raw.kind {
                AttributeType::REQUESTED_TRANSPORT if transport.is_none() => {
                    attrs::read_protocol(raw.value).map(|p| transport = Some(p))
                }
                AttributeType::REQUESTED_ADDRESS_FAMILY if family.is_none() => {
                    attrs::read_family(raw.value).map(|f| family = Some(f))
                }
                AttributeType::ADDITIONAL_ADDRESS_FAMILY if additional.is_none() => {
                    attrs::read_family(raw.value).map(|f| additional = Some(f))
                }
                AttributeType::EVEN_PORT if even_port.is_none() => {
                    attrs::read_even_port(raw.value).map(|r| even_port = Some(r))
                }
                AttributeType::RESERVATION_TOKEN if token.is_none() => {
                    attrs::read_token(raw.value).map(|t| token = Some(t))
                }
                AttributeType::LIFETIME if lifetime.is_none() => {
                    attrs::read_u32(raw.value).map(|l| lifetime = Some(l))
                }
                AttributeType::DONT_FRAGMENT => {
                    dont_fragment = true;
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(error) = result {
                bad.get_or_insert(error);
            }
        }
        match bad {
            Some(ValueError::Malformed) => {
                return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
            }
            Some(ValueError::UnknownFamily) => {
                return self.error(
                    client,
                    message,
                    ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                    sign,
                );
            }
            None => {}
        }
        let Some(transport) = transport else {
            return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
        };
        if transport != PROTOCOL_UDP {
            return self.error(
                client,
                message,
                ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
                sign,
            );
        }
        // RFC 8656 §7.2: a token excludes EVEN-PORT and the family attributes, and an
        // additional family must be IPv6 and excludes the requested one.
        let conflicting = (token.is_some()
            && (even_port.is_some() || family.is_some() || additional.is_some()))
            || additional == Some(Family::V4)
            || (additional.is_some() && family.is_some());
        if conflicting {
            return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
        }
        let family = family.unwrap_or(Family::V4);
        if token.is_none() && self.settings.relay(family).is_none() {
            return self.error(
                client,
                message,
                ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                sign,
            );
        }
        if self.stats.allocations as usize + self.pending >= self.settings.max_allocations {
            return self.refuse(client, message, auth.username, Limit::Allocations, sign);
        }
        let user_count = self
            .per_user
            .get(&auth.found.quota_user)
            .copied()
            .unwrap_or(0);
        if user_count >= self.settings.max_allocations_per_user {
            return self.refuse(client, message, auth.username, Limit::UserQuota, sign);
        }
        let lifetime = self.settings.lifetime(lifetime);
        // Dual allocations are not offered: an IPv6 additional family is refused per
        // family (ADDRESS-ERROR-CODE) while the IPv4 allocation goes ahead.
        let address_error = additional == Some(Family::V6);
        let sign_sha256 = matches!(sign, Sign::Sha256(_));

        if let Some(token) = token {
            let Some(reserved) = self.reservations.remove(&token) else {
                return self.error(client, message, ErrorCode::INSUFFICIENT_CAPACITY, sign);
            };
            let Some(entry) = self.slot_mut(reserved) else {
                return self.error(client, message, ErrorCode::INSUFFICIENT_CAPACITY, sign);
            };
            let Slot::Reserved(reservation) = &entry.state else {
                return self.error(client, message, ErrorCode::INSUFFICIENT_CAPACITY, sign);
            };
            let family = reservation.family;
            entry.state = Slot::Binding(Box::new(Pending {
                client,
                transaction: txid,
                username: auth.username.into(),
                quota_user: auth.found.quota_user.clone(),
                key: auth.found.key,
                sign_sha256,
                lifetime,
                family,
                dont_fragment,
                even_port: false,
                reserve_next: false,
                pair_port: None,
                reservation: None,
                attempts: 0,
                address_error: false,
            }));
            self.stats.reservations -= 1;
            self.begin_pending(client, reserved, &auth.found.quota_user);
            return self.finish_allocation(reserved, None, now);
        }

        let Some(relay) = self.new_slot() else {
            return self.refuse(client, message, auth.username, Limit::Allocations, sign);
        };
        let reserve_next = even_port == Some(true);
        let ports = match family {
            Family::V4 => &mut self.ports_v4,
            Family::V6 => &mut self.ports_v6,
        };
        let port = ports.take(&mut self.rng, even_port.is_some(), reserve_next);
        let Some(port) = port else {
            self.free_slots.push(relay.index);
            return self.refuse(client, message, auth.username, Limit::RelayPorts, sign);
        };
        let bind = self.settings.relay(family).map(|r| r.bind);
        let entry = &mut self.slots[relay.index()];
        entry.port = Some((family, port));
        entry.state = Slot::Binding(Box::new(Pending {
            client,
            transaction: txid,
            username: auth.username.into(),
            quota_user: auth.found.quota_user.clone(),
            key: auth.found.key,
            sign_sha256,
            lifetime,
            family,
            dont_fragment,
            even_port: even_port.is_some(),
            reserve_next,
            pair_port: reserve_next.then_some(port + 1),
            reservation: None,
            attempts: 1,
            address_error,
        }));
        self.begin_pending(client, relay, &auth.found.quota_user);
        if let Some(bind) = bind {
            self.queue.push_back(Queued::Bind {
                relay,
                addr: SocketAddr::new(bind, port),
                dont_fragment,
            });
        }
        Handled::Pending
    }

    fn begin_pending(&mut self, client: Client, relay: RelayId, quota_user: &str) {
        self.by_client.insert(client, relay);
        self.pending += 1;
        *self.per_user.entry(quota_user.into()).or_insert(0) += 1;
    }

    /// The driver's answer to [`Output::BindRelay`].
    pub fn relay_bound(&mut self, relay: RelayId, result: Result<(), BindError>, now: Instant) {
        let reservation_lifetime = self.settings.reservation_lifetime;
        let Some(entry) = self.slot_mut(relay) else {
            return;
        };
        match (&mut entry.state, result) {
            (Slot::Binding(_), Ok(())) => {
                entry.socket_open = true;
                self.primary_bound(relay, now);
            }
            (Slot::Binding(_), Err(error)) => self.retry_or_fail(relay, error),
            (Slot::Reserved(reservation), Ok(())) if reservation.owner.is_some() => {
                entry.socket_open = true;
                let owner = reservation.owner.take();
                reservation.expires = now + reservation_lifetime;
                let (token, expires) = (reservation.token, reservation.expires);
                self.reservations.insert(token, relay);
                self.stats.reservations += 1;
                self.push_timer(relay, TimerKind::Reservation, expires);
                if let Some(owner) = owner {
                    self.finish_allocation(owner, Some(token), now);
                }
            }
            (Slot::Reserved(reservation), Err(error)) if reservation.owner.is_some() => {
                let owner = reservation.owner;
                self.free_slot(relay);
                if let Some(owner) = owner {
                    if let Some(Slot::Binding(pending)) = self.slot_mut(owner).map(|e| &mut e.state)
                    {
                        pending.reservation = None;
                    }
                    self.retry_or_fail(owner, error);
                }
            }
            // A socket bound for a slot that has moved on: have it closed.
            (_, Ok(())) => self.queue.push_back(Queued::Close { relay }),
            (_, Err(_)) => {}
        }
    }

    /// The allocation's own port is bound: bind the reserved one, or finish.
    fn primary_bound(&mut self, relay: RelayId, now: Instant) {
        let Some(Slot::Binding(pending)) = self.slot(relay).map(|e| &e.state) else {
            return;
        };
        if !pending.reserve_next {
            self.finish_allocation(relay, None, now);
            return;
        }
        let family = pending.family;
        let (Some(pair), Some(bind)) = (
            pending.pair_port,
            self.settings.relay(family).map(|r| r.bind),
        ) else {
            self.finish_allocation(relay, None, now);
            return;
        };
        let Some(reserved) = self.new_slot() else {
            self.fail_pending(relay, Limit::Allocations);
            return;
        };
        let token: [u8; 8] = self.rng.r#gen();
        let entry = &mut self.slots[reserved.index()];
        entry.port = Some((family, pair));
        entry.state = Slot::Reserved(Reservation {
            token,
            family,
            expires: now,
            owner: Some(relay),
        });
        if let Some(Slot::Binding(pending)) = self.slot_mut(relay).map(|e| &mut e.state) {
            pending.pair_port = None;
            pending.reservation = Some(reserved);
        }
        self.queue.push_back(Queued::Bind {
            relay: reserved,
            addr: SocketAddr::new(bind, pair),
            dont_fragment: false,
        });
    }

    /// A bind failed: try other ports while attempts remain, else 508.
    fn retry_or_fail(&mut self, relay: RelayId, error: BindError) {
        let Some(entry) = self.slot_mut(relay) else {
            return;
        };
        let Slot::Binding(pending) = &mut entry.state else {
            return;
        };
        if error != BindError::AddrInUse {
            self.fail_pending(relay, Limit::RelayBind);
            return;
        }
        if pending.attempts >= MAX_BIND_ATTEMPTS {
            self.fail_pending(relay, Limit::RelayPorts);
            return;
        }
        pending.attempts += 1;
        let (family, even, pair, dont_fragment) = (
            pending.family,
            pending.even_port,
            pending.reserve_next,
            pending.dont_fragment,
        );
        let old_pair = pending.pair_port.take();
        let old_port = entry.port.take();
        // The old socket (bound if the reserved port was the one that failed) goes.
        if std::mem::replace(&mut entry.socket_open, false) {
            self.queue.push_back(Queued::Close { relay });
        }
        // The failed ports stay marked while new ones are picked, so they are not picked
        // again at once; then they are released.
        let ports = match family {
            Family::V4 => &mut self.ports_v4,
            Family::V6 => &mut self.ports_v6,
        };
        let port = ports.take(&mut self.rng, even, pair);
        for old in old_port.map(|(_, p)| p).into_iter().chain(old_pair) {
            ports.release(old);
        }
        let Some(port) = port else {
            self.fail_pending(relay, Limit::RelayPorts);
            return;
        };
        let bind = self.settings.relay(family).map(|r| r.bind);
        let entry = &mut self.slots[relay.index()];
        entry.port = Some((family, port));
        if let Slot::Binding(pending) = &mut entry.state {
            pending.pair_port = pair.then_some(port + 1);
        }
        if let Some(bind) = bind {
            self.queue.push_back(Queued::Bind {
                relay,
                addr: SocketAddr::new(bind, port),
                dont_fragment,
            });
        }
    }

    /// Ends a pending allocation with 508, because of `limit`.
    fn fail_pending(&mut self, relay: RelayId, limit: Limit) {
        let Some(Slot::Binding(pending)) = self.slot(relay).map(|e| &e.state) else {
            return;
        };
        let (client, txid, key, sha256) = (
            pending.client,
            pending.transaction,
            pending.key,
            pending.sign_sha256,
        );
        let username = pending.username.clone();
        self.free_slot(relay);
        let sign = if sha256 {
            Sign::Sha256(key)
        } else {
            Sign::Sha1(key)
        };
        self.respond(
            client,
            Method::ALLOCATE,
            txid,
            Some(limit.code()),
            sign,
            |_| Ok(()),
        );
        self.event(Event::Refused {
            client,
            username,
            limit,
        });
    }

    /// Turns a pending allocation whose sockets are bound into an allocation, and answers.
    fn finish_allocation(
        &mut self,
        relay: RelayId,
        token: Option<[u8; 8]>,
        now: Instant,
    ) -> Handled {
        let Some(entry) = self.slot_mut(relay) else {
            return self.drop(DropReason::NoAllocation);
        };
        let Slot::Binding(pending) = std::mem::replace(&mut entry.state, Slot::Free) else {
            return self.drop(DropReason::NoAllocation);
        };
        let pending = *pending;
        entry.socket_open = true;
        let port = entry.port.map_or(0, |(_, port)| port);
        let public = self
            .settings
            .relay(pending.family)
            .map_or(IpAddr::from([0, 0, 0, 0]), |r| r.public);
        let limiter = (self.settings.allocation_bandwidth > 0)
            .then(|| TokenBucket::new(self.settings.allocation_bandwidth, now));
        let expires = now + pending.lifetime;
        let relayed = SocketAddr::new(public, port);
        let created = Event::AllocationCreated {
            relay,
            client: pending.client,
            username: pending.username.clone(),
            relayed,
            lifetime: pending.lifetime,
        };
        let allocation = Allocation {
            client: pending.client,
            family: pending.family,
            relay: relayed,
            username: pending.username,
            quota_user: pending.quota_user,
            key: pending.key,
            transaction: pending.transaction,
            created: now,
            expires,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_by_peer: HashMap::new(),
            traffic: Default::default(),
            limiter,
            reservation_token: token,
            address_error: pending.address_error,
            sign_sha256: pending.sign_sha256,
        };
        self.slots[relay.index()].state = Slot::Allocated(Box::new(allocation));
        self.by_port.insert((pending.family, port), relay);
        self.pending -= 1;
        self.stats.allocations += 1;
        self.stats.allocations_created += 1;
        self.push_timer(relay, TimerKind::Allocation, expires);
        let handled = self.allocate_success(relay, now);
        self.event(created);
        handled
    }

    /// The success response to the Allocate that created `relay`'s allocation; sent again
    /// for a retransmission of that request.
    fn allocate_success(&mut self, relay: RelayId, now: Instant) -> Handled {
        let Some(Slot::Allocated(allocation)) = self.slot(relay).map(|e| &e.state) else {
            return self.drop(DropReason::NoAllocation);
        };
        let client = allocation.client;
        let txid = allocation.transaction;
        let relayed = allocation.relay;
        let lifetime = allocation.expires.saturating_duration_since(now).as_secs() as u32;
        let token = allocation.reservation_token;
        let address_error = allocation.address_error;
        let sign = if allocation.sign_sha256 {
            Sign::Sha256(allocation.key)
        } else {
            Sign::Sha1(allocation.key)
        };
        let mut error_value = [0u8; 64];
        let error_len = attrs::address_error_code(
            Family::V6,
            ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
            &mut error_value,
        );
        let mapped = SocketAddr::new(client.addr.ip().to_canonical(), client.addr.port());
        self.respond(client, Method::ALLOCATE, txid, None, sign, |b| {
            b.add_xor_address(AttributeType::XOR_RELAYED_ADDRESS, relayed)?;
            if address_error {
                b.add_raw(AttributeType::ADDRESS_ERROR_CODE, &error_value[..error_len])?;
            }
            b.add_raw(AttributeType::LIFETIME, &lifetime.to_be_bytes())?;
            if let Some(token) = token {
                b.add_raw(AttributeType::RESERVATION_TOKEN, &token)?;
            }
            b.add_xor_mapped_address(mapped)
        })
    }

    // ----- Refresh -----

    fn refresh(
        &mut self,
        client: Client,
        message: &Message<'_>,
        auth: Auth<'_>,
        now: Instant,
    ) -> Handled {
        let sign = auth.sign;
        let relay = match self.own_allocation(client, &auth) {
            Ok(relay) => relay,
            Err(code) => return self.error(client, message, code, sign),
        };
        let mut requested = None;
        let mut family = None;
        for attribute in message.attributes() {
            let Attribute::Other(raw) = attribute else {
                continue;
            };
            let result = match raw.kind {
                AttributeType::LIFETIME if requested.is_none() => {
                    attrs::read_u32(raw.value).map(|l| requested = Some(l))
                }
                AttributeType::REQUESTED_ADDRESS_FAMILY if family.is_none() => {
                    attrs::read_family(raw.value).map(|f| family = Some(f))
                }
                _ => Ok(()),
            };
            if result.is_err() {
                return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
            }
        }
        let Some(allocation) = self.allocation_mut(relay) else {
            return self.error(client, message, ErrorCode::ALLOCATION_MISMATCH, sign);
        };
        if family.is_some_and(|f| f != allocation.family) {
            return self.error(
                client,
                message,
                ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                sign,
            );
        }
        let lifetime = if requested == Some(0) {
            Duration::ZERO
        } else {
            self.settings.lifetime(requested)
        };
        if lifetime.is_zero() {
            self.end_allocation(relay, EndReason::Deleted, now);
        } else if let Some(allocation) = self.allocation_mut(relay) {
            allocation.expires = now + lifetime;
        }
        let secs = lifetime.as_secs() as u32;
        self.respond(
            client,
            Method::REFRESH,
            message.transaction_id(),
            None,
            sign,
            |b| b.add_raw(AttributeType::LIFETIME, &secs.to_be_bytes()),
        )
    }

    // ----- Permissions and channels -----

    /// Checks a peer for an allocation of `family`: 443 for the wrong family, 403 if the
    /// policy refuses it, unless it is the relayed address of a live allocation (relay to
    /// relay; the deny-list still wins).
    fn check_peer(&self, family: Family, peer: SocketAddr) -> Result<(), ErrorCode> {
        if Family::of(peer.ip()) != family {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        match self.settings.policy.check(peer.ip()) {
            Ok(()) => Ok(()),
            Err(PeerDenial::DenyList) => Err(ErrorCode::FORBIDDEN),
            Err(_) if self.relayed_allocation(peer).is_some() => Ok(()),
            Err(_) => Err(ErrorCode::FORBIDDEN),
        }
    }

    /// The family of `ip` if it is one of the relay IPs (announced or bound).
    fn relay_family(&self, ip: IpAddr) -> Option<Family> {
        let family = Family::of(ip);
        let relay = self.settings.relay(family)?;
        (ip == relay.public || ip == relay.bind).then_some(family)
    }

    /// The live allocation whose relayed address is `peer`.
    fn relayed_allocation(&self, peer: SocketAddr) -> Option<RelayId> {
        let family = self.relay_family(peer.ip())?;
        self.by_port.get(&(family, peer.port())).copied()
    }

    /// Where data from a client to `peer` goes. Only the relay IPs need a look: a
    /// permission for any other address was granted by the policy.
    fn route(&self, peer: SocketAddr) -> Route {
        if self.relay_family(peer.ip()).is_none() {
            return Route::Socket;
        }
        match self.relayed_allocation(peer) {
            Some(target) => Route::Internal(target),
            // A relay IP the operator allow-listed (tests with peers on loopback).
            None if self.settings.policy.check(peer.ip()).is_ok() => Route::Socket,
            None => Route::Refused,
        }
    }

    fn create_permission(
        &mut self,
        client: Client,
        message: &Message<'_>,
        auth: Auth<'_>,
        now: Instant,
    ) -> Handled {
        let sign = auth.sign;
        let relay = match self.own_allocation(client, &auth) {
            Ok(relay) => relay,
            Err(code) => return self.error(client, message, code, sign),
        };
        let Some(allocation) = self.allocation_mut(relay) else {
            return self.error(client, message, ErrorCode::ALLOCATION_MISMATCH, sign);
        };
        let family = allocation.family;
        let existing = allocation.permissions.len();
        let txid = message.transaction_id();
        let peers = || {
            message.attributes().filter_map(|a| match a {
                Attribute::Other(raw) if raw.kind == AttributeType::XOR_PEER_ADDRESS => {
                    Some(attrs::read_xor_address(raw.value, &txid).map(canonical))
                }
                _ => None,
            })
        };
        // All or nothing: every address is checked before any permission is installed.
        let mut count = 0;
        let mut new = 0;
        for peer in peers() {
            let peer = match peer {
                Ok(peer) => peer,
                Err(_) => return self.error(client, message, ErrorCode::BAD_REQUEST, sign),
            };
            if let Err(code) = self.check_peer(family, peer) {
                return self.error(client, message, code, sign);
            }
            count += 1;
            if let Some(Slot::Allocated(a)) = self.slot(relay).map(|e| &e.state) {
                if !a.permissions.contains_key(&peer.ip()) {
                    new += 1;
                }
            }
        }
        if count == 0 {
            return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
        }
        // Duplicates in one request can overcount `new`; that only errs on the safe side.
        if existing + new > self.settings.max_permissions {
            return self.refuse(client, message, auth.username, Limit::Permissions, sign);
        }
        let expires = now + self.settings.permission_lifetime;
        for peer in peers().flatten() {
            self.install_permission(relay, peer.ip(), expires);
        }
        self.respond(client, Method::CREATE_PERMISSION, txid, None, sign, |_| {
            Ok(())
        })
    }

    fn install_permission(&mut self, relay: RelayId, ip: IpAddr, expires: Instant) {
        let Some(allocation) = self.allocation_mut(relay) else {
            return;
        };
        match allocation.permissions.entry(ip) {
            Entry::Occupied(mut entry) => {
                entry.insert(expires);
            }
            Entry::Vacant(entry) => {
                entry.insert(expires);
                self.stats.permissions += 1;
                self.push_timer(relay, TimerKind::Permission(ip), expires);
            }
        }
    }

    fn channel_bind(
        &mut self,
        client: Client,
        message: &Message<'_>,
        auth: Auth<'_>,
        now: Instant,
    ) -> Handled {
        let sign = auth.sign;
        let relay = match self.own_allocation(client, &auth) {
            Ok(relay) => relay,
            Err(code) => return self.error(client, message, code, sign),
        };
        let txid = message.transaction_id();
        let mut number = None;
        let mut peer = None;
        for attribute in message.attributes() {
            let Attribute::Other(raw) = attribute else {
                continue;
            };
            let result = match raw.kind {
                AttributeType::CHANNEL_NUMBER if number.is_none() => {
                    attrs::read_channel_number(raw.value).map(|n| number = Some(n))
                }
                AttributeType::XOR_PEER_ADDRESS if peer.is_none() => {
                    attrs::read_xor_address(raw.value, &txid).map(|p| peer = Some(canonical(p)))
                }
                _ => Ok(()),
            };
            if result.is_err() {
                return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
            }
        }
        let (Some(number), Some(peer)) = (number, peer) else {
            return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
        };
        if !is_valid_channel(number) {
            return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
        }
        let Some(allocation) = self.allocation_mut(relay) else {
            return self.error(client, message, ErrorCode::ALLOCATION_MISMATCH, sign);
        };
        let family = allocation.family;
        // RFC 8656 §12.2: a channel is bound to one peer and a peer to one channel, for
        // the binding's whole life.
        let bound_peer = allocation.channels.get(&number).map(|c| c.peer);
        let bound_number = allocation.channel_by_peer.get(&peer).copied();
        let is_new = bound_peer.is_none();
        let channels = allocation.channels.len();
        let new_permission = !allocation.permissions.contains_key(&peer.ip());
        let permissions = allocation.permissions.len();
        if bound_peer.is_some_and(|p| p != peer) || bound_number.is_some_and(|n| n != number) {
            return self.error(client, message, ErrorCode::BAD_REQUEST, sign);
        }
        if let Err(code) = self.check_peer(family, peer) {
            return self.error(client, message, code, sign);
        }
        if is_new && channels >= self.settings.max_channels {
            return self.refuse(client, message, auth.username, Limit::Channels, sign);
        }
        if new_permission && permissions >= self.settings.max_permissions {
            return self.refuse(client, message, auth.username, Limit::Permissions, sign);
        }
        let expires = now + self.settings.channel_lifetime;
        let permission_expires = now + self.settings.permission_lifetime;
        if let Some(allocation) = self.allocation_mut(relay) {
            allocation
                .channels
                .insert(number, Channel { peer, expires });
            allocation.channel_by_peer.insert(peer, number);
        }
        if is_new {
            self.stats.channels += 1;
            self.push_timer(relay, TimerKind::Channel(number), expires);
        }
        self.install_permission(relay, peer.ip(), permission_expires);
        self.respond(client, Method::CHANNEL_BIND, txid, None, sign, |_| Ok(()))
    }

    // ----- Peer input -----

    /// A datagram `data` that `peer` sent to the relay socket `relay`.
    pub fn handle_peer(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Handled {
        self.relay_to_client(relay, canonical(peer), data, now)
    }

    /// Passes `data` from `peer` to `relay`'s client if a permission allows it and the
    /// limits have room: in ChannelData if a channel is bound to `peer`, else in a Data
    /// indication.
    fn relay_to_client(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Handled {
        let Some(entry) = self
            .slots
            .get_mut(relay.index())
            .filter(|e| e.generation == relay.generation)
        else {
            return self.drop(DropReason::NoAllocation);
        };
        let Slot::Allocated(allocation) = &mut entry.state else {
            return self.drop(DropReason::NoAllocation);
        };
        if !allocation.permitted(peer.ip(), now) {
            return self.drop(DropReason::NoPermission);
        }
        if data.len() > usize::from(u16::MAX) {
            return self.drop(DropReason::TooLarge);
        }
        if !take_bandwidth(
            &mut allocation.limiter,
            &mut self.total_limiter,
            data.len(),
            now,
        ) {
            return self.drop(DropReason::RateLimited);
        }
        let client = allocation.client;
        let start = self.out.len();
        if let Some(channel) = allocation.peer_channel(peer, now) {
            channel_data::encode(&mut self.out, channel, data, client.transport.is_stream());
        } else {
            let txid = next_txid(&self.txid_prefix, &mut self.txid_counter);
            // Header, XOR-PEER-ADDRESS (at most 24 bytes), DATA header and padded value.
            let needed = 20 + 24 + 4 + data.len() + 3;
            self.out.resize(start + needed, 0);
            let written = (|| {
                let mut builder = MessageBuilder::new(
                    &mut self.out[start..],
                    MessageType::new(Method::DATA, Class::Indication),
                    txid,
                )?;
                builder.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)?;
                builder.add_raw(AttributeType::DATA, data)?;
                Ok::<_, EncodeError>(builder.finish())
            })();
            match written {
                Ok(len) => self.out.truncate(start + len),
                Err(_) => {
                    self.out.truncate(start);
                    if let Some(limiter) = &mut allocation.limiter {
                        limiter.refund(data.len());
                    }
                    return self.drop(DropReason::TooLarge);
                }
            }
        }
        allocation.traffic[Direction::ToClient.index()].add(data.len());
        self.stats.relayed[Direction::ToClient.index()].add(data.len());
        self.queue_transmit(Destination::Client(client), start);
        Handled::Relayed
    }
}

/// Takes `bytes` from the allocation's and the server's buckets, or from neither.
fn take_bandwidth(
    allocation: &mut Option<TokenBucket>,
    total: &mut Option<TokenBucket>,
    bytes: usize,
    now: Instant,
) -> bool {
    if let Some(bucket) = allocation {
        if !bucket.try_take(bytes, now) {
            return false;
        }
    }
    if let Some(bucket) = total {
        if !bucket.try_take(bytes, now) {
            if let Some(bucket) = allocation {
                bucket.refund(bytes);
            }
            return false;
        }
    }
    true
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Transaction ids for Data indications: unique, not secret, so a counter will do.
fn next_txid(prefix: &[u8; 4], counter: &mut u64) -> TransactionId {
    *counter = counter.wrapping_add(1);
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(prefix);
    id[4..].copy_from_slice(&counter.to_be_bytes());
    TransactionId::new(id)
}
