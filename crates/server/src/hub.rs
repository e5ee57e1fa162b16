//! The hub: the one task that owns the signaling core and the tutorial relay.
//!
//! Socket tasks decode frames in parallel and send typed commands here; the hub routes them
//! through [`Signaling`] and pushes encoded replies into each connection's bounded outbox.
//! Each outgoing message is serialized once, whatever the number of recipients. The hub never
//! waits on a client: a connection whose outbox is full is cut off (it is too slow to follow
//! the conversation) instead of stalling everyone else.

use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use switchboard_proto::tutorial::TutorialMessage;
use switchboard_proto::{ClientMessage, ParseError};
use switchboard_signal::{
    ConnId, CoreStats, Limits, Recipients, RoomView, Signaling, TutorialRelay,
};
use tokio::sync::{mpsc, oneshot, watch};

/// Messages queued for one connection before it counts as too slow.
pub const OUTBOX_CAPACITY: usize = 512;
const INBOX_CAPACITY: usize = 16 * 1024;

pub type Outbox = mpsc::Sender<Utf8Bytes>;

pub enum Command {
    Connect { conn: ConnId, outbox: Outbox },
    Message { conn: ConnId, msg: ClientMessage },
    Reject { conn: ConnId, error: ParseError },
    Disconnect { conn: ConnId },
    TutorialConnect { conn: ConnId, outbox: Outbox },
    Tutorial { conn: ConnId, msg: TutorialMessage },
    TutorialDisconnect { conn: ConnId },
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

/// A cheap, cloneable way to talk to the hub.
#[derive(Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Command>,
}

impl HubHandle {
    /// Sends a command, waiting if the hub is busy (back-pressure onto the sockets). Returns
    /// `false` once the hub has stopped.
    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }

    pub async fn query<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)).await {
            return None;
        }
        rx.await.ok()
    }
}

pub fn spawn(
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> (HubHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let hub = Hub {
        core: Signaling::new(limits, Instant::now(), now_unix_ms),
        tutorial: TutorialRelay::new(),
        outboxes: HashMap::new(),
        tutorial_outboxes: HashMap::new(),
        slow_disconnects: 0,
    };
    let task = tokio::spawn(hub.run(rx, shutdown));
    (HubHandle { tx }, task)
}

struct Hub {
    core: Signaling,
    tutorial: TutorialRelay,
    outboxes: HashMap<ConnId, Outbox>,
    tutorial_outboxes: HashMap<ConnId, Outbox>,
    slow_disconnects: u64,
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
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Connect { conn, outbox } => {
                self.outboxes.insert(conn, outbox);
                self.core.connect(conn, now);
            }
            Command::Message { conn, msg } => self.core.handle(conn, msg, now),
            Command::Reject { conn, error } => self.core.reject(conn, error, now),
            Command::Disconnect { conn } => {
                self.outboxes.remove(&conn);
                self.core.disconnect(conn, now);
            }
            Command::TutorialConnect { conn, outbox } => {
                self.tutorial_outboxes.insert(conn, outbox);
            }
            Command::Tutorial { conn, msg } => {
                if let Some((to, msg)) = self.tutorial.handle(conn, msg)
                    && let Some(outbox) = self.tutorial_outboxes.get(&to)
                {
                    match serde_json::to_string(&msg) {
                        Ok(text) => {
                            if outbox.try_send(Utf8Bytes::from(text)).is_err() {
                                tracing::debug!(
                                    conn = to,
                                    "tutorial outbox full or closed; message dropped"
                                );
                            }
                        }
                        Err(e) => tracing::error!("cannot encode tutorial message: {e}"),
                    }
                }
            }
            Command::TutorialDisconnect { conn } => {
                self.tutorial_outboxes.remove(&conn);
                self.tutorial.disconnect(conn);
            }
            Command::Stats(reply) => {
                let _ = reply.send(HubStats {
                    core: self.core.stats(),
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

    /// Delivers everything the core produced. Cutting off a slow connection can itself
    /// produce messages (others are told it left), hence the loop.
    fn flush(&mut self) {
        loop {
            let mut too_slow = Vec::new();
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
                return;
            }
            let now = Instant::now();
            for conn in too_slow {
                // Dropping the outbox ends the socket's writer, which closes the socket.
                if self.outboxes.remove(&conn).is_some() {
                    self.slow_disconnects += 1;
                    tracing::warn!(conn, "connection too slow to keep up; closing it");
                    self.core.disconnect(conn, now);
                }
            }
        }
    }

    fn deliver(&mut self, conn: ConnId, text: Utf8Bytes, too_slow: &mut Vec<ConnId>) {
        if let Some(outbox) = self.outboxes.get(&conn) {
            match outbox.try_send(text) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => too_slow.push(conn),
                // The socket is already gone; its Disconnect is on the way.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
