//! The hub: the one task that owns the signaling core of `/ws`, and the routing snapshots that
//! let socket readers relay without it. (The tutorial protocol on `/` needs no hub: see the
//! `tutorial` module.)
//!
//! Socket tasks decode frames in parallel and send typed commands here; the hub routes them
//! through [`Signaling`] and pushes encoded replies into each connection's bounded outbox.
//! Each outgoing message is serialized once, whatever the number of recipients. The hub never
//! waits on a client: a connection whose outbox is full is cut off (it is too slow to follow
//! the conversation) instead of stalling everyone else.
//!
//! **Direct relay.** Almost all traffic is `offer`/`answer`/`candidate` addressed to one
//! member of the sender's room. For those, the hub publishes to each joined connection a
//! read-only [`Routes`] snapshot (its own id, and every other member of its room with that
//! member's outbox), and the socket's reader delivers the message itself
//! ([`HubHandle::relay_direct`]): one task hop instead of two, and no single task every
//! message must cross. Everything else (joins, leaves, errors, pings, relays the snapshot
//! cannot place) still goes through the hub and the core. Ordering stays what the hub alone
//! gave, by three rules:
//!
//! 1. *A reader never overtakes itself.* It relays directly only when the hub has finished
//!    every command it sent before ([`Link`]'s pending count is zero), so a `candidate` after
//!    a `join`, `leave` or hub-routed `offer` arrives after their effects.
//! 2. *Snapshots never announce a member early, nor keep one late.* When the core reports
//!    that a connection's routes changed, the hub withdraws its snapshot *before* delivering
//!    that round's messages and publishes the new one *after*: a peer is relayed to only once
//!    its `joined` is in its outbox, and a client that has read `participant-left` relays
//!    through the core again (and gets `unknown_participant`, as before).
//! 3. *A member never hears of a membership it has left.* Each connection's membership has a
//!    number (its epoch); the hub marks the outbox when it changes ([`Out::Epoch`]) and
//!    direct relays carry the number they were addressed to. The writer drops a relay whose
//!    number is not current: one that raced a `leave` is dropped as if it had arrived
//!    just before it.
//!
//! Rate limits apply in the readers ([`Admission`]), to both paths alike; direct relays are
//! counted in [`RelayCounts`] and added to the core's message counts for `/metrics`.

use crate::published::{Cached, Published};
use crate::sfu_bridge::{BridgeCommand, BridgeHandle};
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use switchboard_proto::{
    ClientMessage, MessageKind, ParseError, ParticipantId, RelayRef, json_string,
};
use switchboard_signal::{ConnId, CoreStats, Limits, MediaAction, Recipients, RoomView, Signaling};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

#[cfg(doc)]
use switchboard_signal::Admission;

/// Messages queued for one connection before it counts as too slow.
pub const OUTBOX_CAPACITY: usize = 512;
const INBOX_CAPACITY: usize = 16 * 1024;

/// What a connection's writer receives.
#[derive(Debug)]
pub enum Out {
    /// From the hub: always written.
    Text(Utf8Bytes),
    /// Relayed straight from another socket's reader to this connection's membership
    /// `epoch`: written only while that membership is current.
    Relay { epoch: u32, text: Utf8Bytes },
    /// This connection's membership changed; relays addressed to another epoch are stale.
    Epoch(u32),
    /// Too slow to keep up: close (1013) after what is already queued.
    Cut,
}

pub type Outbox = mpsc::Sender<Out>;

/// A connection's outbox. One slot beyond [`OUTBOX_CAPACITY`] is held back by the hub for
/// [`Out::Cut`], which must get through when the outbox is full.
pub fn outbox() -> (Outbox, mpsc::Receiver<Out>) {
    mpsc::channel(OUTBOX_CAPACITY + 1)
}

pub enum Command {
    /// A `/ws` socket opened; its reader rate-limits and relays through `link`.
    Connect {
        conn: ConnId,
        outbox: Outbox,
        link: Arc<Link>,
    },
    /// Sent with [`HubHandle::send_ordered`], like `Reject` and `RateLimited`.
    Message {
        conn: ConnId,
        msg: ClientMessage,
    },
    Reject {
        conn: ConnId,
        error: ParseError,
    },
    /// The reader dropped a message over the rate limit and should tell the client.
    RateLimited {
        conn: ConnId,
    },
    /// A reader found this connection's outbox full.
    TooSlow {
        conn: ConnId,
    },
    Disconnect {
        conn: ConnId,
    },
    Stats(oneshot::Sender<HubStats>),
    Rooms(oneshot::Sender<Vec<RoomView>>),
    Room(String, oneshot::Sender<Option<RoomView>>),
}

/// What `/metrics` needs from the hub.
#[derive(Debug, Clone, Default)]
pub struct HubStats {
    pub core: CoreStats,
    pub slow_disconnects: u64,
}

/// Messages the readers relayed directly, by [`MessageKind::index`]; the core counts the rest.
#[derive(Debug, Default)]
pub struct RelayCounts([AtomicU64; MessageKind::ALL.len()]);

/// What one socket's reader shares with the hub.
#[derive(Debug, Default)]
pub struct Link {
    /// Commands the reader sent with [`HubHandle::send_ordered`] that the hub has not
    /// finished (delivered and published the routes after). Direct relay waits for zero.
    pending: AtomicU64,
    /// The hub's latest [`Routes`] for this connection. Readers take a new copy only when
    /// it moved, which is once per membership change: the relay path is one atomic load.
    routes: Published<Routes>,
}

/// A reader's copy of its connection's [`Routes`].
pub type RouteCache = Cached<Routes>;

/// Where a joined connection's relays may go: the core's `RelayRoute` with outboxes.
#[derive(Debug)]
pub struct Routes {
    /// Our participant id as a JSON string, the `from` of every relay.
    from_json: Box<str>,
    peers: Box<[Peer]>,
}

#[derive(Debug)]
struct Peer {
    id: Box<str>,
    /// `None` while the peer's socket is gone (resume grace): relays to it are dropped.
    target: Option<Target>,
}

#[derive(Debug)]
struct Target {
    conn: ConnId,
    outbox: Outbox,
    epoch: u32,
}

/// What [`HubHandle::relay_direct`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Direct {
    /// In the addressee's outbox.
    Sent,
    /// Accepted and dropped, as the core would: the addressee is disconnected.
    Dropped,
    /// Accepted, but the addressee's outbox is full: send [`Command::TooSlow`].
    TooSlow(ConnId),
    /// Not ours to decide: send it to the hub.
    ToHub,
}

/// A cheap, cloneable way to talk to the hub.
#[derive(Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Command>,
    relayed: Arc<RelayCounts>,
}

impl HubHandle {
    /// Sends a command, waiting if the hub is busy (back-pressure onto the sockets). Returns
    /// `false` once the hub has stopped.
    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// Sends a command from the reader of `link` that direct relays must not overtake
    /// ([`Command::Message`], [`Command::Reject`], [`Command::RateLimited`]).
    pub async fn send_ordered(&self, link: &Link, command: Command) -> bool {
        link.pending.fetch_add(1, Ordering::Relaxed);
        self.send(command).await
    }

    pub async fn query<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)).await {
            return None;
        }
        rx.await.ok()
    }

    /// Delivers a relay from the reader of `link` straight into its addressee's outbox, if the
    /// routes the hub published allow it (see the module docs); [`Direct::ToHub`] otherwise.
    pub fn relay_direct(&self, link: &Link, cache: &mut RouteCache, relay: &RelayRef) -> Direct {
        if link.pending.load(Ordering::Acquire) != 0 {
            return Direct::ToHub;
        }
        match cache.get(&link.routes) {
            Some(routes) => routes.relay(relay, &self.relayed),
            None => Direct::ToHub,
        }
    }
}

impl Routes {
    fn relay(&self, relay: &RelayRef, counts: &RelayCounts) -> Direct {
        let Some(peer) = self.peers.iter().find(|p| *p.id == *relay.to) else {
            // Unknown here: the core answers with the error.
            return Direct::ToHub;
        };
        counts.0[relay.kind.message_kind().index()].fetch_add(1, Ordering::Relaxed);
        let Some(target) = &peer.target else {
            return Direct::Dropped;
        };
        let text = Utf8Bytes::from(relay.encode(&self.from_json));
        match target.outbox.try_send(Out::Relay {
            epoch: target.epoch,
            text,
        }) {
            Ok(()) => Direct::Sent,
            Err(TrySendError::Full(_)) => Direct::TooSlow(target.conn),
            // The socket is already gone; its Disconnect is on the way.
            Err(TrySendError::Closed(_)) => Direct::Dropped,
        }
    }
}

/// The writer's rule for one outbox item, given the membership `epoch` it is at: a frame to
/// write (`Some(Some)`), nothing (`Some(None)`: an epoch mark, or a relay addressed to a
/// membership since left, dropped as if it had arrived just before), or close (`None`).
pub fn sort_out(out: Out, epoch: &mut u32) -> Option<Option<Utf8Bytes>> {
    match out {
        Out::Text(text) => Some(Some(text)),
        Out::Relay { epoch: to, text } => Some((to == *epoch).then_some(text)),
        Out::Epoch(now) => {
            *epoch = now;
            Some(None)
        }
        Out::Cut => None,
    }
}

pub fn spawn(
    limits: Limits,
    media: Option<BridgeHandle>,
    shutdown: watch::Receiver<bool>,
) -> (HubHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut core = Signaling::new(limits, Instant::now(), now_unix_ms);
    core.track_routes();
    let relayed = Arc::new(RelayCounts::default());
    let hub = Hub {
        core,
        conns: HashMap::new(),
        slow_disconnects: 0,
        relayed: relayed.clone(),
        media,
        republish: Vec::new(),
        acks: Vec::new(),
    };
    let task = tokio::spawn(hub.run(rx, shutdown));
    (HubHandle { tx, relayed }, task)
}

/// The hub's side of one `/ws` connection.
struct Entry {
    outbox: Outbox,
    /// The slot held back for [`Out::Cut`].
    cut: Option<mpsc::OwnedPermit<Out>>,
    link: Arc<Link>,
    /// The participant this connection currently is, if any, and that membership's number.
    member: Option<ParticipantId>,
    epoch: u32,
}

struct Hub {
    core: Signaling,
    conns: HashMap<ConnId, Entry>,
    slow_disconnects: u64,
    relayed: Arc<RelayCounts>,
    /// The SFU bridge, when the SFU is on.
    media: Option<BridgeHandle>,
    /// Connections whose routes were withdrawn this round, to publish after delivery.
    republish: Vec<ConnId>,
    /// Connections with ordered commands handled this round, to acknowledge at its end.
    acks: Vec<ConnId>,
}

impl Hub {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let deadline = self.core.poll_timeout();
            tokio::select! {
                command = rx.recv() => {
                    let Some(command) = command else { break };
                    self.apply(command);
                    // Drain what is already queued before flushing, so bursts cost one wake-up.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(command) => self.apply(command),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
                _ = shutdown.changed() => break,
            }
            self.flush();
        }
        // Snapshots hold outboxes; let them go with the hub.
        for entry in self.conns.values() {
            entry.link.routes.publish(None);
        }
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Connect { conn, outbox, link } => {
                let cut = outbox.clone().try_reserve_owned().ok();
                self.conns.insert(
                    conn,
                    Entry {
                        outbox,
                        cut,
                        link,
                        member: None,
                        epoch: 0,
                    },
                );
                self.core.connect_admitted(conn, now);
            }
            Command::Message { conn, msg } => {
                self.core.handle(conn, msg, now);
                self.acks.push(conn);
            }
            Command::Reject { conn, error } => {
                self.core.reject(conn, error, now);
                self.acks.push(conn);
            }
            Command::RateLimited { conn } => {
                self.core.rate_limited(conn, now);
                self.acks.push(conn);
            }
            Command::TooSlow { conn } => self.cut(conn, now),
            Command::Disconnect { conn } => {
                if let Some(entry) = self.conns.remove(&conn) {
                    entry.link.routes.publish(None);
                }
                self.core.disconnect(conn, now);
            }
            Command::Stats(reply) => {
                let mut core = self.core.stats();
                for (count, relayed) in core.messages.iter_mut().zip(&self.relayed.0) {
                    *count += relayed.load(Ordering::Relaxed);
                }
                let _ = reply.send(HubStats {
                    core,
                    slow_disconnects: self.slow_disconnects,
                });
            }
            Command::Rooms(reply) => {
                let _ = reply.send(self.core.rooms());
            }
            Command::Room(name, reply) => {
                let _ = reply.send(self.core.room(&name));
            }
        }
    }

    /// Ends the round: withdraws changed routes, delivers everything the core produced,
    /// publishes the new routes, then lets the readers whose commands were handled relay
    /// directly again. Cutting off a slow connection can itself produce messages (others are
    /// told it left), hence the loop.
    fn flush(&mut self) {
        loop {
            let mut too_slow = Vec::new();
            self.withdraw_routes(&mut too_slow);
            while let Some(output) = self.core.poll_output() {
                let text = match serde_json::to_string(&output.msg) {
                    Ok(text) => Utf8Bytes::from(text),
                    Err(e) => {
                        tracing::error!("cannot encode {:?}: {e}", output.msg);
                        continue;
                    }
                };
                match output.to {
                    Recipients::One(conn) => self.deliver(conn, text, &mut too_slow),
                    Recipients::Many(conns) => {
                        for conn in conns {
                            self.deliver(conn, text.clone(), &mut too_slow);
                        }
                    }
                }
            }
            if too_slow.is_empty() {
                break;
            }
            let now = Instant::now();
            for conn in too_slow {
                self.cut(conn, now);
            }
        }
        self.forward_media();
        self.publish_routes();
        for conn in self.acks.drain(..) {
            if let Some(entry) = self.conns.get(&conn) {
                entry.link.pending.fetch_sub(1, Ordering::Release);
            }
        }
    }

    /// Hands the core's work for the media engine to the SFU bridge, with outboxes.
    fn forward_media(&mut self) {
        while let Some(action) = self.core.poll_media() {
            let Some(bridge) = &self.media else {
                continue;
            };
            let outbox = |conn: ConnId| self.conns.get(&conn).map(|e| e.outbox.clone());
            let command = match action {
                MediaAction::Join {
                    participant,
                    room,
                    conn,
                } => BridgeCommand::Join {
                    participant,
                    room,
                    // A member whose socket is down gets a closed outbox until it resumes.
                    outbox: conn.and_then(outbox).unwrap_or_else(|| self::outbox().0),
                },
                MediaAction::Attach { participant, conn } => match outbox(conn) {
                    Some(outbox) => BridgeCommand::Attach {
                        participant,
                        outbox,
                    },
                    None => continue,
                },
                MediaAction::Leave { participant } => BridgeCommand::Leave { participant },
                MediaAction::Offer {
                    participant,
                    sdp,
                    tracks,
                } => BridgeCommand::Offer {
                    participant,
                    sdp,
                    tracks,
                },
                MediaAction::Answer { participant, sdp } => {
                    BridgeCommand::Answer { participant, sdp }
                }
                MediaAction::View {
                    participant,
                    mid,
                    width,
                    height,
                } => BridgeCommand::View {
                    participant,
                    mid,
                    width,
                    height,
                },
            };
            bridge.send(command);
        }
    }

    /// For every connection whose routes the core says may have changed: a new epoch if it
    /// is now another participant (or none), and no direct relay from it until
    /// [`Hub::publish_routes`].
    fn withdraw_routes(&mut self, too_slow: &mut Vec<ConnId>) {
        for conn in self.core.take_route_changes() {
            let Some(entry) = self.conns.get_mut(&conn) else {
                continue;
            };
            let member = self.core.relay_route(conn).map(|route| route.id);
            if entry.member.as_deref() != member {
                entry.member = member.map(str::to_owned);
                entry.epoch = entry.epoch.wrapping_add(1);
                if let Err(TrySendError::Full(_)) = entry.outbox.try_send(Out::Epoch(entry.epoch)) {
                    too_slow.push(conn);
                }
            }
            entry.link.routes.publish(None);
            self.republish.push(conn);
        }
    }

    fn publish_routes(&mut self) {
        let conns = &self.conns;
        for conn in self.republish.drain(..) {
            let Some(entry) = conns.get(&conn) else {
                continue;
            };
            let routes = self.core.relay_route(conn).map(|route| {
                let peers = route
                    .peers
                    .iter()
                    .map(|&(id, peer)| Peer {
                        id: id.into(),
                        target: peer.and_then(|peer| {
                            let entry = conns.get(&peer)?;
                            Some(Target {
                                conn: peer,
                                outbox: entry.outbox.clone(),
                                epoch: entry.epoch,
                            })
                        }),
                    })
                    .collect();
                Arc::new(Routes {
                    from_json: json_string(route.id).into(),
                    peers,
                })
            });
            entry.link.routes.publish(routes);
        }
    }

    fn deliver(&mut self, conn: ConnId, text: Utf8Bytes, too_slow: &mut Vec<ConnId>) {
        if let Some(entry) = self.conns.get(&conn) {
            match entry.outbox.try_send(Out::Text(text)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => too_slow.push(conn),
                // The socket is already gone; its Disconnect is on the way.
                Err(TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Cuts off a connection that cannot keep up: its writer closes the socket after what is
    /// queued, and the core sees it disconnect.
    fn cut(&mut self, conn: ConnId, now: Instant) {
        let Some(mut entry) = self.conns.remove(&conn) else {
            return;
        };
        self.slow_disconnects += 1;
        tracing::warn!(conn, "connection too slow to keep up; closing it");
        entry.link.routes.publish(None);
        if let Some(permit) = entry.cut.take() {
            permit.send(Out::Cut);
        }
        self.core.disconnect(conn, now);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchboard_proto::Role;

    struct Socket {
        conn: ConnId,
        link: Arc<Link>,
        rx: mpsc::Receiver<Out>,
        cache: RouteCache,
    }

    async fn connect(hub: &HubHandle, conn: ConnId) -> Socket {
        let (outbox, rx) = outbox();
        let link = Arc::new(Link::default());
        let command = Command::Connect {
            conn,
            outbox,
            link: link.clone(),
        };
        assert!(hub.send(command).await);
        Socket {
            conn,
            link,
            rx,
            cache: RouteCache::default(),
        }
    }

    async fn send(hub: &HubHandle, socket: &Socket, msg: ClientMessage) {
        let command = Command::Message {
            conn: socket.conn,
            msg,
        };
        assert!(hub.send_ordered(&socket.link, command).await);
    }

    /// Waits until the hub has finished everything `socket` sent.
    async fn settled(socket: &Socket) {
        for _ in 0..500 {
            if socket.link.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the hub did not finish");
    }

    /// Everything queued for `socket` so far, as the writer would see it: `T:` hub text,
    /// `R<epoch>:` relays, `E<epoch>` marks.
    fn drain(socket: &mut Socket) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(out) = socket.rx.try_recv() {
            seen.push(match out {
                Out::Text(text) => format!("T:{}", kind_of(&text)),
                Out::Relay { epoch, text } => format!("R{epoch}:{}", kind_of(&text)),
                Out::Epoch(epoch) => format!("E{epoch}"),
                Out::Cut => "cut".into(),
            });
        }
        seen
    }

    fn kind_of(text: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        value["type"].as_str().unwrap().to_owned()
    }

    fn join(room: &str) -> ClientMessage {
        ClientMessage::Join {
            v: 1,
            room: room.into(),
            name: "N".into(),
            role: Role::Peer,
            mode: None,
            resume: None,
        }
    }

    fn candidate(to: &str) -> String {
        format!(r#"{{"type":"candidate","to":"{to}","candidate":{{"c":1}}}}"#)
    }

    async fn joined_id(hub: &HubHandle, socket: &mut Socket, room: &str) -> String {
        send(hub, socket, join(room)).await;
        settled(socket).await;
        loop {
            match socket.rx.recv().await.unwrap() {
                Out::Text(text) if kind_of(&text) == "joined" => {
                    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                    return value["id"].as_str().unwrap().to_owned();
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn relays_follow_routes_and_stale_ones_are_dropped_by_epoch() {
        let (_stop, shutdown) = watch::channel(false);
        let limits = Limits {
            rate_per_sec: 0,
            resume_grace: Duration::ZERO,
            ..Limits::default()
        };
        let (hub, _task) = spawn(limits, None, shutdown);
        let mut ann = connect(&hub, 1).await;
        let mut bob = connect(&hub, 2).await;
        let ann_id = joined_id(&hub, &mut ann, "r").await;
        let bob_id = joined_id(&hub, &mut bob, "r").await;
        settled(&ann).await;
        assert_eq!(drain(&mut ann), ["T:participant-joined"]);
        assert_eq!(drain(&mut bob), Vec::<String>::new());

        // Bob relays to Ann directly; to an unknown id, through the hub.
        let text = candidate(&ann_id);
        let relay = RelayRef::parse(&text).unwrap();
        assert_eq!(
            hub.relay_direct(&bob.link, &mut bob.cache, &relay),
            Direct::Sent
        );
        let stranger = candidate("nobody");
        let stranger = RelayRef::parse(&stranger).unwrap();
        assert_eq!(
            hub.relay_direct(&bob.link, &mut bob.cache, &stranger),
            Direct::ToHub
        );
        assert_eq!(drain(&mut ann), ["R1:candidate"]);

        // While Bob has a command in the hub, he does not relay directly.
        bob.link.pending.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            hub.relay_direct(&bob.link, &mut bob.cache, &relay),
            Direct::ToHub
        );
        bob.link.pending.fetch_sub(1, Ordering::Relaxed);

        // Bob's reader took its routes just before Ann left, and relays just after.
        let stale = bob.cache.last().unwrap();
        send(&hub, &ann, ClientMessage::Leave).await;
        settled(&ann).await;
        assert_eq!(stale.relay(&relay, &hub.relayed), Direct::Sent);
        let seen = drain(&mut ann);
        assert_eq!(seen, ["E2", "T:left", "R1:candidate"]);
        // Bob's published routes no longer know Ann: the hub answers for her.
        assert_eq!(
            hub.relay_direct(&bob.link, &mut bob.cache, &relay),
            Direct::ToHub
        );
        assert_eq!(drain(&mut bob), ["T:participant-left"]);

        // What Ann's writer makes of her queue.
        let mut epoch = 1;
        let kinds = [
            Out::Epoch(2),
            Out::Text("{}".into()),
            Out::Relay {
                epoch: 1,
                text: "stale".into(),
            },
        ]
        .into_iter()
        .map(|out| sort_out(out, &mut epoch).map(|text| text.map(|t| t.to_string())))
        .collect::<Vec<_>>();
        assert_eq!(kinds, [Some(None), Some(Some("{}".into())), Some(None)]);
        assert_eq!(sort_out(Out::Cut, &mut epoch), None);

        // Counted: two direct relays (the stale one too: the sender was not refused).
        let stats = hub.query(Command::Stats).await.unwrap();
        assert_eq!(stats.core.messages[MessageKind::Candidate.index()], 2);
        let _ = bob_id;
    }
}
