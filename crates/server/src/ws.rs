//! WebSocket transport: turns frames into hub commands and hub output into frames.
//!
//! One task per socket reads and decodes (in parallel with every other socket); a second
//! writes from the connection's bounded outbox and sends keep-alive pings. Neither holds any
//! signaling state: that lives in the hub. On `/ws` the reader also applies the rate limit and
//! delivers `offer`/`answer`/`candidate` straight into the addressee's outbox when the hub's
//! routing snapshot allows it (see the `hub` module docs); everything else goes to the hub.
//! A socket that stays silent past the idle timeout (no frame, not even a pong) is considered
//! dead and closed, which starts its resume grace. On `/` the reader routes tutorial messages
//! itself, on the shared slots of the `tutorial` module.

use crate::AppState;
use crate::hub::{self, Command, Direct, HubHandle, Link, Out, Outbox, RouteCache};
use crate::tutorial::{Handled, TutorialBoard, TutorialCache};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use switchboard_proto::tutorial::TutorialMessage;
use switchboard_proto::{ErrorCode, ParseError, RelayRef, parse_client_message};
use switchboard_signal::{Admission, ConnId, Verdict};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

const PING_INTERVAL: Duration = Duration::from_secs(20);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Close code: the server is going away (shutdown).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the connection could not keep up with its messages.
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// Frames above this are refused by the WebSocket layer itself (close code 1009); between
/// `max_message_bytes` and this, the client gets `message_too_large` and stays connected.
pub fn hard_frame_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.max(1024 * 1024)
}

/// Which protocol a socket speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    Switchboard,
    Tutorial,
}

pub async fn serve_socket(
    socket: WebSocket,
    state: AppState,
    protocol: Protocol,
    _permit: OwnedSemaphorePermit,
) {
    let conn: ConnId = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (outbox, outbox_rx) = hub::outbox();
    let link = Arc::new(Link::default());
    // On `/ws` only the hub holds the outbox, so the writer can tell when the hub is gone; a
    // tutorial reader keeps its own, to hand to the board when it takes a slot.
    let own_outbox = match protocol {
        Protocol::Switchboard => {
            let connect = Command::Connect {
                conn,
                outbox,
                link: link.clone(),
            };
            if !state.hub.send(connect).await {
                return;
            }
            None
        }
        Protocol::Tutorial => Some(outbox),
    };
    state.metrics.connections_opened(protocol);
    let (sink, mut stream) = socket.split();
    let mut shutdown = state.shutdown.clone();
    let (reader_done, reader_done_rx) = oneshot::channel();
    let writer = tokio::spawn(write_loop(sink, outbox_rx, reader_done_rx, protocol));
    let max_bytes = state.config.max_message_bytes;
    let mut reader = Reader {
        protocol,
        conn,
        hub: &state.hub,
        link: &link,
        routes: RouteCache::default(),
        tutorial: &state.tutorial,
        tutorial_cache: TutorialCache::default(),
        own_outbox,
        admission: match protocol {
            Protocol::Switchboard => {
                let limits = state.config.limits();
                (limits.rate_per_sec > 0).then(|| Admission::new(&limits, Instant::now()))
            }
            Protocol::Tutorial => None,
        },
    };

    let mut close = None;
    // One idle timer and one shutdown watch for the socket's whole life rather than one per
    // frame: the timer is only moved on when it fires while frames are still coming.
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let stopping = shutdown.changed();
    tokio::pin!(stopping);
    let mut last_frame = tokio::time::Instant::now();
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = &mut idle => {
                let deadline = last_frame + IDLE_TIMEOUT;
                if deadline <= tokio::time::Instant::now() {
                    tracing::debug!(conn, "idle timeout");
                    break;
                }
                idle.as_mut().reset(deadline);
                continue;
            }
            _ = &mut stopping => {
                close = Some((CLOSE_GOING_AWAY, "server shutting down"));
                break;
            }
        };
        last_frame = tokio::time::Instant::now();
        let frame = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(conn, "websocket error: {e}");
                break;
            }
            Some(Ok(frame)) => frame,
        };
        let open = match frame {
            Message::Text(text) => reader.text(&text, max_bytes).await,
            Message::Binary(_) => {
                reader
                    .reject(
                        ErrorCode::BadJson,
                        "binary frames are not supported; send JSON text".into(),
                    )
                    .await
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if !open {
            break;
        }
    }

    // Tell the writer first, so it does not mistake the hub dropping the outbox for a
    // too-slow cut-off.
    let _ = reader_done.send(close);
    match protocol {
        Protocol::Switchboard => {
            state.hub.send(Command::Disconnect { conn }).await;
        }
        Protocol::Tutorial => state.tutorial.release(conn),
    }
    state.metrics.connections_closed(protocol);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// The reading side of one socket: what it needs to turn a frame into a hub command or a
/// direct relay.
struct Reader<'a> {
    protocol: Protocol,
    conn: ConnId,
    hub: &'a HubHandle,
    link: &'a Link,
    routes: RouteCache,
    tutorial: &'a TutorialBoard,
    tutorial_cache: TutorialCache,
    /// `/` only: this socket's outbox, for the tutorial slot it may take.
    own_outbox: Option<Outbox>,
    /// `/ws` only, and only when rate limiting is on: this connection's budget, which every
    /// text or binary frame counts against, relayed directly or not.
    admission: Option<Admission>,
}

impl Reader<'_> {
    /// Handles one text frame; `false` once the hub has stopped.
    async fn text(&mut self, text: &str, max_bytes: usize) -> bool {
        if !self.admit().await {
            return true;
        }
        if text.len() > max_bytes {
            let message = format!(
                "message of {} bytes exceeds the limit of {max_bytes} bytes",
                text.len()
            );
            return self
                .send(reject(
                    self.protocol,
                    self.conn,
                    ErrorCode::MessageTooLarge,
                    message,
                ))
                .await;
        }
        if self.protocol == Protocol::Tutorial {
            self.tutorial_message(text);
            return true;
        }
        if let Some(relay) = RelayRef::parse(text) {
            return match self.hub.relay_direct(self.link, &mut self.routes, &relay) {
                Direct::Sent | Direct::Dropped => true,
                Direct::TooSlow(target) => self.hub.send(Command::TooSlow { conn: target }).await,
                Direct::ToHub => {
                    let msg = relay.into_client_message();
                    self.send(Some(Command::Message {
                        conn: self.conn,
                        msg,
                    }))
                    .await
                }
            };
        }
        let command = match parse_client_message(text) {
            Ok(msg) => Command::Message {
                conn: self.conn,
                msg,
            },
            Err(error) => Command::Reject {
                conn: self.conn,
                error,
            },
        };
        self.send(Some(command)).await
    }

    /// Routes one tutorial frame on the board, straight into the addressee's outbox.
    fn tutorial_message(&mut self, text: &str) {
        let conn = self.conn;
        let Some(outbox) = &self.own_outbox else {
            return;
        };
        match TutorialMessage::parse(text) {
            // The tutorial protocol has no error message; the socket only gets a log line.
            Err(e) => tracing::debug!(conn, "tutorial socket: not valid JSON: {e}"),
            // Like the reference server, messages of other types are ignored.
            Ok(None) => {}
            Ok(Some(msg)) => {
                let handled = self
                    .tutorial
                    .handle(&mut self.tutorial_cache, conn, outbox, msg);
                if let Handled::Dropped(to) = handled {
                    tracing::debug!(conn = to, "tutorial outbox full or closed; message dropped");
                }
            }
        }
    }

    async fn reject(&mut self, code: ErrorCode, message: String) -> bool {
        if !self.admit().await {
            return true;
        }
        self.send(reject(self.protocol, self.conn, code, message))
            .await
    }

    /// Applies the rate limit; `false` means the frame is dropped.
    async fn admit(&mut self) -> bool {
        let Some(admission) = &mut self.admission else {
            return true;
        };
        match admission.check(Instant::now()) {
            Verdict::Admit => true,
            Verdict::Drop => false,
            Verdict::DropAndReport => {
                let command = Command::RateLimited { conn: self.conn };
                self.hub.send_ordered(self.link, command).await;
                false
            }
        }
    }

    /// Hands a command to the hub; only `/ws` sockets have any (tutorial sockets route
    /// on the board and only log what they refuse).
    async fn send(&self, command: Option<Command>) -> bool {
        match command {
            Some(command) => self.hub.send_ordered(self.link, command).await,
            None => true,
        }
    }
}

fn reject(protocol: Protocol, conn: ConnId, code: ErrorCode, message: String) -> Option<Command> {
    match protocol {
        Protocol::Switchboard => Some(Command::Reject {
            conn,
            error: ParseError { code, message },
        }),
        // The tutorial protocol has no error message; the socket only gets a log line.
        Protocol::Tutorial => {
            tracing::debug!(conn, %code, "tutorial socket: {message}");
            None
        }
    }
}

/// What the writer does with one outbox item: `Ok(false)` once it is [`Out::Cut`].
async fn write_out(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    out: Out,
    epoch: &mut u32,
) -> Result<bool, axum::Error> {
    match hub::sort_out(out, epoch) {
        Some(Some(text)) => sink.feed(Message::Text(text)).await?,
        Some(None) => {}
        None => return Ok(false),
    }
    Ok(true)
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<Out>,
    mut reader_done: oneshot::Receiver<Option<(u16, &'static str)>>,
    protocol: Protocol,
) {
    const TOO_SLOW: Option<(u16, &str)> = Some((CLOSE_TRY_AGAIN_LATER, "too slow to keep up"));
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    // The membership direct relays must be addressed to (see the hub's module docs).
    let mut epoch = 0;
    let close = loop {
        tokio::select! {
            // Checked first: once the reader is done, an empty outbox means a normal close.
            biased;
            close = &mut reader_done => break close.ok().flatten(),
            out = outbox.recv() => match out {
                Some(out) => {
                    // On `/ws` many readers feed one outbox: let those that are ready run
                    // first, then batch what they queued meanwhile into one flush (under
                    // load, ~30% fewer syscalls). A tutorial socket has one producer, which
                    // has already queued what it read; there the yield only wakes an idle
                    // worker thread to steal the writer (a futex call per flush, 16% of the
                    // pair's throughput).
                    if protocol == Protocol::Switchboard {
                        tokio::task::yield_now().await;
                    }
                    let mut open = match write_out(&mut sink, out, &mut epoch).await {
                        Ok(open) => open,
                        Err(_) => return,
                    };
                    while open && let Ok(out) = outbox.try_recv() {
                        open = match write_out(&mut sink, out, &mut epoch).await {
                            Ok(open) => open,
                            Err(_) => return,
                        };
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                    if !open {
                        // The hub cut us off for being too slow.
                        break TOO_SLOW;
                    }
                }
                // Every sender is gone while the reader still runs: the hub has stopped.
                None => break TOO_SLOW,
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    let _ = sink.close().await;
}
