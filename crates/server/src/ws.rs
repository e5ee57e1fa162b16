//! WebSocket transport: turns frames into hub commands and hub output into frames.
//!
//! One task per socket reads and decodes (in parallel with every other socket); a second
//! writes from the connection's bounded outbox and sends keep-alive pings. Neither holds any
//! signaling state: that lives in the hub. A socket that stays silent past the idle timeout
//! (no frame, not even a pong) is considered dead and closed, which starts its resume grace.

use crate::AppState;
use crate::hub::{Command, OUTBOX_CAPACITY};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchboard_proto::tutorial::TutorialMessage;
use switchboard_proto::{ErrorCode, ParseError, parse_client_message};
use switchboard_signal::ConnId;
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
    let (outbox, outbox_rx) = mpsc::channel(OUTBOX_CAPACITY);
    let connect = match protocol {
        Protocol::Switchboard => Command::Connect { conn, outbox },
        Protocol::Tutorial => Command::TutorialConnect { conn, outbox },
    };
    if !state.hub.send(connect).await {
        return;
    }
    state.metrics.connections_opened(protocol);
    let (sink, mut stream) = socket.split();
    let mut shutdown = state.shutdown.clone();
    let (reader_done, reader_done_rx) = oneshot::channel();
    let writer = tokio::spawn(write_loop(sink, outbox_rx, reader_done_rx));
    let max_bytes = state.config.max_message_bytes;

    let mut close = None;
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(IDLE_TIMEOUT, stream.next()) => frame,
            _ = shutdown.changed() => {
                close = Some((CLOSE_GOING_AWAY, "server shutting down"));
                break;
            }
        };
        let frame = match frame {
            Err(_) => {
                tracing::debug!(conn, "idle timeout");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(conn, "websocket error: {e}");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let command = match frame {
            Message::Text(text) if text.len() > max_bytes => reject(
                protocol,
                conn,
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {} bytes exceeds the limit of {max_bytes} bytes",
                    text.len()
                ),
            ),
            Message::Text(text) => decode(protocol, conn, &text),
            Message::Binary(_) => reject(
                protocol,
                conn,
                ErrorCode::BadJson,
                "binary frames are not supported; send JSON text".into(),
            ),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if let Some(command) = command
            && !state.hub.send(command).await
        {
            break;
        }
    }

    // Tell the writer first, so it does not mistake the hub dropping the outbox for a
    // too-slow cut-off.
    let _ = reader_done.send(close);
    let disconnect = match protocol {
        Protocol::Switchboard => Command::Disconnect { conn },
        Protocol::Tutorial => Command::TutorialDisconnect { conn },
    };
    state.hub.send(disconnect).await;
    state.metrics.connections_closed(protocol);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

fn decode(protocol: Protocol, conn: ConnId, text: &str) -> Option<Command> {
    match protocol {
        Protocol::Switchboard => Some(match parse_client_message(text) {
            Ok(msg) => Command::Message { conn, msg },
            Err(error) => Command::Reject { conn, error },
        }),
        Protocol::Tutorial => match TutorialMessage::parse(text) {
            Err(e) => reject(
                protocol,
                conn,
                ErrorCode::BadJson,
                format!("not valid JSON: {e}"),
            ),
            // Like the reference server, messages of other types are ignored.
            Ok(msg) => msg.map(|msg| Command::Tutorial { conn, msg }),
        },
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

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<Utf8Bytes>,
    mut reader_done: oneshot::Receiver<Option<(u16, &'static str)>>,
) {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let close = loop {
        tokio::select! {
            // Checked first: once the reader is done, an empty outbox means a normal close.
            biased;
            close = &mut reader_done => break close.ok().flatten(),
            text = outbox.recv() => match text {
                Some(text) => {
                    // Batch whatever else is queued into one flush (one syscall under load).
                    if sink.feed(Message::Text(text)).await.is_err() {
                        return;
                    }
                    while let Ok(text) = outbox.try_recv() {
                        if sink.feed(Message::Text(text)).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
                // The reader is still running, so the hub cut us off for being too slow.
                None => break Some((CLOSE_TRY_AGAIN_LATER, "too slow to keep up")),
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
