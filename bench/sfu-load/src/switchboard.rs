//! Switchboard's side of the set-up: protocol v1 on `/ws`, SFU rooms.
//!
//! Each client has its own WebSocket, as a browser tab would: `join` with `mode: "sfu"`,
//! its first `offer` to the participant `sfu` (with `tracks` when it publishes), the
//! server's `answer`; from then on a task answers every `offer` the server sends (tracks to
//! receive) until the run ends, when it sends `leave` so that the server frees the session
//! at once rather than after the resume grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::OfferKind;
use crate::driver::{ClientRef, Drivers};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one step of the set-up (connect, join, offer/answer) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// How one member's signaling ended.
#[derive(Debug, Default)]
pub struct MemberEnd {
    /// Server offers answered after the first exchange.
    pub offers: u32,
    /// `error` messages from the server, and failures to answer.
    pub errors: Vec<String>,
}

/// Connects one client to `room` and negotiates its first offer; the returned task keeps
/// answering the server until `stop` turns true.
pub async fn join(
    addr: SocketAddr,
    room: String,
    name: String,
    drivers: Arc<Drivers>,
    client: ClientRef,
    kind: OfferKind,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<MemberEnd>, String> {
    let (mut ws, _) = step(
        "connect",
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await?
    .map_err(|e| format!("connect: {e}"))?;
    let join = json!({"type": "join", "v": 1, "room": room, "name": name, "mode": "sfu"});
    send(&mut ws, &join).await?;
    step("join", async {
        loop {
            let msg = next_json(&mut ws).await?;
            match msg["type"].as_str() {
                Some("joined") => return Ok(()),
                Some("error") => return Err(format!("join refused: {msg}")),
                _ => {}
            }
        }
    })
    .await??;

    let (sdp, mids) = drivers.offer(client, kind).await?;
    let mut offer = json!({"type": "offer", "to": "sfu", "sdp": sdp});
    if let Some((audio, video)) = mids {
        offer["tracks"] = json!({ audio: "microphone", video: "camera" });
    }
    send(&mut ws, &offer).await?;
    let answer = step("answer", async {
        loop {
            let msg = next_json(&mut ws).await?;
            match (msg["type"].as_str(), msg["from"].as_str()) {
                (Some("answer"), Some("sfu")) => {
                    return msg["sdp"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| "answer without sdp".to_string());
                }
                (Some("error"), _) => return Err(format!("offer refused: {msg}")),
                // An offer crossing ours: the server drops it and offers again later.
                _ => {}
            }
        }
    })
    .await??;
    drivers.accept_answer(client, answer).await?;
    Ok(tokio::spawn(serve(ws, drivers, client, stop)))
}

/// Answers the server's offers until told to stop, then leaves.
async fn serve(
    mut ws: Ws,
    drivers: Arc<Drivers>,
    client: ClientRef,
    mut stop: watch::Receiver<bool>,
) -> MemberEnd {
    let mut end = MemberEnd::default();
    loop {
        tokio::select! {
            msg = next_json(&mut ws) => {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(e) => {
                        end.errors.push(e);
                        return end;
                    }
                };
                match (msg["type"].as_str(), msg["from"].as_str()) {
                    (Some("offer"), Some("sfu")) => {
                        let sdp = msg["sdp"].as_str().unwrap_or_default().to_owned();
                        match drivers.accept_offer(client, sdp).await {
                            Ok(answer) => {
                                end.offers += 1;
                                let reply = json!({"type": "answer", "to": "sfu", "sdp": answer});
                                if let Err(e) = send(&mut ws, &reply).await {
                                    end.errors.push(e);
                                    return end;
                                }
                            }
                            Err(e) => end.errors.push(format!("answering the server: {e}")),
                        }
                    }
                    (Some("error"), _) => end.errors.push(msg.to_string()),
                    _ => {}
                }
            }
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                let _ = send(&mut ws, &json!({"type": "leave"})).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return end;
            }
        }
    }
}

async fn step<T>(what: &str, f: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what}: no progress in {STEP_TIMEOUT:?}"))
}

async fn send(ws: &mut Ws, msg: &Value) -> Result<(), String> {
    ws.send(Message::text(msg.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// The next JSON message (pings are answered by the library underneath).
async fn next_json(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| format!("bad JSON: {e}"));
            }
            Some(Ok(Message::Close(_))) | None => return Err("socket closed".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("socket: {e}")),
        }
    }
}
