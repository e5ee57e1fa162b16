//! Client connections and the load loop every sending scenario shares.
//!
//! Each client connection runs one task ([`drive`]) that reads everything the server sends
//! and, while its flow-control window allows, writes candidates to its targets. The window is
//! a semaphore per sender: writing takes a permit, and whichever client receives the message
//! gives the permit back to the sender named inside the candidate.

use crate::LoadParams;
use crate::report::{self, new_histogram};
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_proto::ServerMessage;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// How long one connection (TCP, upgrade and, where used, join) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long after the window closes clients wait for messages still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client may take to leave and close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most messages written per flush.
const MAX_BATCH: usize = 32;

/// Which protocol the clients speak, which decides the shape of a candidate message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    /// `{"type":"iceCandidate","candidate":…}` on the tutorial endpoint.
    Tutorial,
    /// `{"type":"candidate","to":…,"candidate":…}` on `/ws`.
    Rooms,
}

/// A realistic server-reflexive candidate as a browser trickles it (`RTCIceCandidateInit`),
/// up to the `usernameFragment` value, which carries `<sender>-<send time µs>` after the
/// real ufrag.
const CANDIDATE_HEAD: &str = concat!(
    r#""candidate":{"candidate":"candidate:3756474536 1 udp 1686052607 203.0.113.45 61420 "#,
    r#"typ srflx raddr 192.168.1.23 rport 61420 generation 0 ufrag Hx3f network-id 1 "#,
    r#"network-cost 10","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Hx3f-"#
);

/// The `usernameFragment` of set-up probes, which are not counted.
pub const PROBE: &str = "probe";

/// Builds one candidate message from client `me` to `to` (a participant id; unused by the
/// tutorial protocol, which has a single peer).
pub fn encode_candidate(proto: Proto, to: &str, me: usize, sent_us: u64) -> String {
    let mut text = String::with_capacity(360);
    match proto {
        Proto::Tutorial => text.push_str(r#"{"type":"iceCandidate","#),
        Proto::Rooms => {
            text.push_str(r#"{"type":"candidate","to":""#);
            text.push_str(to);
            text.push_str(r#"","#);
        }
    }
    text.push_str(CANDIDATE_HEAD);
    let _ = write!(text, "{me}-{sent_us}\"}}}}");
    text
}

/// A probe candidate, used to find out when a relay path is ready.
pub fn encode_probe(proto: Proto, to: &str) -> String {
    let text = encode_candidate(proto, to, 0, 0);
    text.replace("Hx3f-0-0", PROBE)
}

/// What a client decodes from every message it receives. Borrowed, so a candidate costs one
/// pass over the text and no allocation.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    candidate: Option<CandidateIn<'a>>,
}

#[derive(Deserialize)]
struct CandidateIn<'a> {
    #[serde(rename = "usernameFragment", default, borrow)]
    ufrag: Option<Cow<'a, str>>,
}

/// A received candidate: who sent it and when, or a probe.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Candidate {
        sender: usize,
        sent_us: u64,
    },
    Probe,
    /// A message that is not a candidate (joined, participant-joined, …).
    Other,
    /// The server reported an error, or sent something undecodable.
    Problem(String),
}

pub fn decode(text: &str) -> Received {
    let msg: Incoming = match serde_json::from_str(text) {
        Ok(msg) => msg,
        Err(e) => return Received::Problem(format!("undecodable message ({e}): {}", clip(text))),
    };
    match msg.kind.as_ref() {
        "candidate" | "iceCandidate" => {
            let Some(ufrag) = msg.candidate.and_then(|c| c.ufrag) else {
                return Received::Problem(format!(
                    "candidate without our usernameFragment: {}",
                    clip(text)
                ));
            };
            if ufrag == PROBE {
                return Received::Probe;
            }
            let mut parts = ufrag.split('-').skip(1);
            match (
                parts.next().and_then(|s| s.parse().ok()),
                parts.next().and_then(|s| s.parse().ok()),
            ) {
                (Some(sender), Some(sent_us)) => Received::Candidate { sender, sent_us },
                _ => Received::Problem(format!("unexpected usernameFragment {ufrag:?}")),
            }
        }
        "error" => Received::Problem(format!("server error: {}", clip(text))),
        _ => Received::Other,
    }
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Opens one WebSocket to a loopback `url`, optionally from a given local address.
pub async fn connect(url: &str, bind: Option<IpAddr>, read_buffer: usize) -> Result<Ws, String> {
    let request = url
        .into_client_request()
        .map_err(|e| format!("invalid url {url:?}: {e}"))?;
    let host = request
        .uri()
        .host()
        .ok_or_else(|| format!("url {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = request.uri().port_u16().unwrap_or(80);
    let ip: IpAddr = if host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse()
            .map_err(|_| format!("url host {host:?} must be an IP address"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "refusing to load {ip}: only loopback addresses may be targets"
        ));
    }
    let addr = SocketAddr::new(ip, port);
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(local) = bind {
        socket
            .bind(SocketAddr::new(local, 0))
            .map_err(|e| format!("cannot bind to {local}: {e}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    // Browsers and both servers disable Nagle; so do we.
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
    Ok(ws)
}

/// Runs `setup(i)` for `i` in `0..n`, at most `concurrency` at a time, each within
/// [`SETUP_TIMEOUT`]. Results come back in index order.
pub async fn setup_all<T, F, Fut>(n: usize, concurrency: usize, setup: F) -> Vec<Result<T, String>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut results: Vec<(usize, Result<T, String>)> = stream::iter(0..n)
        .map(|i| {
            let fut = setup(i);
            async move {
                let result = match tokio::time::timeout(SETUP_TIMEOUT, fut).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("client {i}: set-up took over {SETUP_TIMEOUT:?}")),
                };
                (i, result)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Sends `join` (protocol v1) and waits for `joined`; returns our participant id.
pub async fn join(ws: &mut Ws, room: &str, name: &str) -> Result<String, String> {
    let join = serde_json::json!({"type": "join", "v": 1, "room": room, "name": name});
    ws.send(Message::text(join.to_string()))
        .await
        .map_err(|e| format!("send join: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Joined { id, .. }) => return Ok(id),
                Ok(ServerMessage::Error { code, message }) => {
                    return Err(format!("join {room}: {code}: {message}"));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "join {room}: undecodable reply ({e}): {}",
                        clip(&text)
                    ));
                }
            },
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("join {room}: closed by server: {frame:?}"));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("join {room}: {e}")),
            None => return Err(format!("join {room}: connection closed")),
        }
    }
}

/// A connected client and whom it sends to (participant ids; empty: it only receives).
pub struct Prepared {
    pub ws: Ws,
    pub targets: Vec<String>,
}

/// Everything the client tasks share during a load run.
struct Shared {
    proto: Proto,
    /// One flow-control window per client.
    windows: Vec<Semaphore>,
    /// Send timestamps are microseconds since this instant.
    epoch: Instant,
    /// The measurement window.
    start: Instant,
    end: Instant,
    sent: AtomicU64,
    received: AtomicU64,
}

/// What one client saw.
struct ConnStats {
    received_in_window: u64,
    latency_us: Histogram<u64>,
    problems: u64,
    first_problem: Option<String>,
}

impl ConnStats {
    fn problem(&mut self, what: String) {
        self.problems += 1;
        self.first_problem.get_or_insert(what);
    }
}

/// The figures of one load run, all clients together.
pub struct LoadOutcome {
    pub received_in_window: u64,
    pub window_secs: f64,
    pub latency_us: Histogram<u64>,
    pub server_cpu_s: Option<f64>,
    pub own_cpu_s: Option<f64>,
    pub sent: u64,
    pub received: u64,
    pub problems: u64,
    pub first_problem: Option<String>,
}

impl LoadOutcome {
    pub fn messages_per_sec(&self) -> f64 {
        self.received_in_window as f64 / self.window_secs
    }

    /// Adds this outcome's figures to a result line.
    pub fn fill(&self, report: &mut report::Report) {
        report.int("msgs", self.received_in_window);
        report.num("window_s", self.window_secs);
        report.num("msgs_per_s", self.messages_per_sec());
        report.latency(&self.latency_us);
        report.maybe("server_cpu_s", self.server_cpu_s);
        report.maybe(
            "msgs_per_cpu_s",
            self.server_cpu_s
                .filter(|&cpu| cpu > 0.0)
                .map(|cpu| self.received_in_window as f64 / cpu),
        );
        report.maybe("load_cpu_s", self.own_cpu_s);
        report.int("sent", self.sent);
        report.int("received", self.received);
        report.int("lost", self.sent.saturating_sub(self.received));
        report.int("problems", self.problems);
    }
}

/// Runs the load on prepared clients: warm-up, measurement window, drain, then every client
/// leaves (protocol v1) and closes.
pub async fn run_load(
    clients: Vec<Prepared>,
    proto: Proto,
    params: &LoadParams,
    pid: Option<u32>,
) -> LoadOutcome {
    let now = Instant::now();
    let start = now + Duration::from_secs_f64(params.warmup);
    let end = start + Duration::from_secs_f64(params.duration);
    let shared = Arc::new(Shared {
        proto,
        windows: clients
            .iter()
            .map(|_| Semaphore::new(params.window))
            .collect(),
        epoch: now,
        start,
        end,
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(me, client)| tokio::spawn(drive(client, me, shared.clone(), stop_rx.clone())))
        .collect();

    tokio::time::sleep_until(start.into()).await;
    let server_before = pid.and_then(report::cpu_seconds);
    let own_before = report::own_cpu_seconds();
    tokio::time::sleep_until(end.into()).await;
    let server_after = pid.and_then(report::cpu_seconds);
    let own_after = report::own_cpu_seconds();
    let window_secs = Instant::now().duration_since(start).as_secs_f64();

    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while shared.received.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);

    let mut outcome = LoadOutcome {
        received_in_window: 0,
        window_secs,
        latency_us: new_histogram(),
        server_cpu_s: report::delta(server_before, server_after),
        own_cpu_s: report::delta(own_before, own_after),
        sent: shared.sent.load(Ordering::Relaxed),
        received: shared.received.load(Ordering::Relaxed),
        problems: 0,
        first_problem: None,
    };
    for task in tasks {
        match tokio::time::timeout(CLOSE_TIMEOUT * 2, task).await {
            Ok(Ok(stats)) => {
                outcome.received_in_window += stats.received_in_window;
                let _ = outcome.latency_us.add(&stats.latency_us);
                outcome.problems += stats.problems;
                if outcome.first_problem.is_none() {
                    outcome.first_problem = stats.first_problem;
                }
            }
            Ok(Err(e)) => {
                outcome.problems += 1;
                outcome
                    .first_problem
                    .get_or_insert(format!("client task failed: {e}"));
            }
            Err(_) => {
                outcome.problems += 1;
                outcome
                    .first_problem
                    .get_or_insert("client did not finish closing".into());
            }
        }
    }
    outcome
}

/// One client: reads and accounts everything it receives; writes candidates while its
/// window allows and the measurement window is open; leaves and closes when told to stop.
async fn drive(
    client: Prepared,
    me: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ConnStats {
    let Prepared { mut ws, targets } = client;
    let mut stats = ConnStats {
        received_in_window: 0,
        latency_us: new_histogram(),
        problems: 0,
        first_problem: None,
    };
    let window = &shared.windows[me];
    let mut sending = !targets.is_empty();
    let mut next_target = 0usize;
    let mut open = true;
    while open {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => on_text(&text, &shared, &mut stats),
                Some(Ok(Message::Close(frame))) => {
                    stats.problem(format!("client {me}: server closed the connection: {frame:?}"));
                    open = false;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    stats.problem(format!("client {me}: {e}"));
                    open = false;
                }
                None => {
                    stats.problem(format!("client {me}: connection closed"));
                    open = false;
                }
            },
            permit = window.acquire(), if sending => {
                let Ok(permit) = permit else { break };
                if Instant::now() >= shared.end {
                    sending = false;
                    continue;
                }
                permit.forget();
                let mut batch = 1;
                while batch < MAX_BATCH {
                    match window.try_acquire() {
                        Ok(permit) => {
                            permit.forget();
                            batch += 1;
                        }
                        Err(_) => break,
                    }
                }
                let mut failed = None;
                for _ in 0..batch {
                    let to = &targets[next_target];
                    next_target = (next_target + 1) % targets.len();
                    let sent_us = shared.epoch.elapsed().as_micros() as u64;
                    let text = encode_candidate(shared.proto, to, me, sent_us);
                    if let Err(e) = ws.feed(Message::text(text)).await {
                        failed = Some(e);
                        break;
                    }
                }
                let flushed = match failed {
                    Some(e) => Err(e),
                    None => ws.flush().await,
                };
                if let Err(e) = flushed {
                    stats.problem(format!("client {me}: send: {e}"));
                    open = false;
                }
                shared.sent.fetch_add(batch as u64, Ordering::Relaxed);
            }
            _ = tokio::time::sleep_until(shared.end.into()), if sending => sending = false,
        }
    }
    if open {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if shared.proto == Proto::Rooms {
                let _ = ws.send(Message::text(r#"{"type":"leave"}"#)).await;
            }
            let _ = ws.close(None).await;
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    stats
}

fn on_text(text: &str, shared: &Shared, stats: &mut ConnStats) {
    match decode(text) {
        Received::Candidate { sender, sent_us } => {
            let Some(window) = shared.windows.get(sender) else {
                return stats.problem(format!("candidate from unknown client {sender}"));
            };
            window.add_permits(1);
            shared.received.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            if now >= shared.start && now < shared.end {
                stats.received_in_window += 1;
                let now_us = now.duration_since(shared.epoch).as_micros() as u64;
                let _ = stats
                    .latency_us
                    .record(now_us.saturating_sub(sent_us).max(1));
            }
        }
        Received::Probe | Received::Other => {}
        Received::Problem(what) => stats.problem(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_round_trip() {
        for proto in [Proto::Tutorial, Proto::Rooms] {
            let text = encode_candidate(proto, "abc", 17, 123_456);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["candidate"]["sdpMid"], "0");
            assert_eq!(
                decode(&text),
                Received::Candidate {
                    sender: 17,
                    sent_us: 123_456
                }
            );
        }
        let text = encode_candidate(Proto::Rooms, "abc", 1, 2);
        assert!(
            text.starts_with(r#"{"type":"candidate","to":"abc","candidate":{"#),
            "{text}"
        );
    }

    #[test]
    fn relayed_forms_decode() {
        let relayed = r#"{"type":"candidate","from":"x","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Hx3f-3-99"}}"#;
        assert_eq!(
            decode(relayed),
            Received::Candidate {
                sender: 3,
                sent_us: 99
            }
        );
        assert_eq!(decode(&encode_probe(Proto::Tutorial, "")), Received::Probe);
        assert_eq!(
            decode(r#"{"type":"participant-joined","participant":{}}"#),
            Received::Other
        );
        assert!(matches!(
            decode(r#"{"type":"error","code":"x"}"#),
            Received::Problem(_)
        ));
        assert!(matches!(decode("nope"), Received::Problem(_)));
    }

    #[tokio::test]
    async fn only_loopback_targets() {
        let err = connect("ws://192.0.2.1:80/ws", None, 4096)
            .await
            .err()
            .unwrap();
        assert!(err.contains("only loopback"), "{err}");
    }
}
