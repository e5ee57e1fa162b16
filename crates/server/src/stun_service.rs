//! STUN over UDP and TCP: thin tokio drivers around the sans-IO Binding responder.
//!
//! Every protocol decision is made by [`switchboard_stun::BindingResponder`]; this module
//! only moves bytes, bounds what a peer can make the server hold (one buffer pair per
//! socket or connection, a connection limit, an idle timeout, a maximum message size) and
//! counts outcomes for `/metrics`. It never looks inside a STUN message itself.
//!
//! The UDP loop reuses one receive and one send buffer for every datagram, so answering a
//! packet allocates nothing. TCP gets one task per connection, bounded by a semaphore; a
//! connection whose bytes cannot be STUN is closed without affecting any other.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchboard_stun::{BindingResponder, FramingError, Outcome, ReplyKind, message_len};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug, trace, warn};

use crate::metrics::header;

/// Receive buffer for datagrams. A larger datagram arrives truncated, no longer matches its
/// own length field, and is dropped as not STUN.
const UDP_BUFFER_LEN: usize = 2048;
/// Largest message accepted on a TCP connection; a longer one closes the connection. It is
/// also the per-connection read buffer, so it bounds memory per connection.
const MAX_TCP_MESSAGE_LEN: usize = 2048;
/// Room for any response the responder writes.
const RESPONSE_BUFFER_LEN: usize = 1024;
/// How long a TCP connection may go without delivering a complete message.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept`, which usually means the process is out of file
/// descriptors: retrying at once would spin while nothing can improve.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Counters of the STUN service, shared by its loops and rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct StunMetrics {
    /// Datagrams received over UDP, answered or not.
    pub requests_udp: AtomicU64,
    /// Messages framed on TCP connections, answered or not.
    pub requests_tcp: AtomicU64,
    /// Success responses sent.
    pub responses: AtomicU64,
    /// Error responses (400, 420) sent.
    pub errors: AtomicU64,
    /// Messages given no answer: not STUN, bad FINGERPRINT, indications, responses,
    /// unsupported methods.
    pub dropped: AtomicU64,
    /// TCP connections open now.
    pub tcp_connections: AtomicU64,
    /// TCP connections closed on arrival because the connection limit was reached.
    pub tcp_rejected: AtomicU64,
}

impl StunMetrics {
    fn record(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Reply {
                kind: ReplyKind::Success,
                ..
            } => &self.responses,
            Outcome::Reply {
                kind: ReplyKind::Error(_),
                ..
            } => &self.errors,
            Outcome::Drop(_) => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);

        header(
            out,
            "switchboard_stun_requests_total",
            "counter",
            "STUN messages received (UDP datagrams, TCP frames), answered or not.",
        );
        let _ = writeln!(
            out,
            "switchboard_stun_requests_total{{transport=\"udp\"}} {}",
            get(&self.requests_udp)
        );
        let _ = writeln!(
            out,
            "switchboard_stun_requests_total{{transport=\"tcp\"}} {}",
            get(&self.requests_tcp)
        );
        header(
            out,
            "switchboard_stun_responses_total",
            "counter",
            "STUN success responses sent.",
        );
        let _ = writeln!(
            out,
            "switchboard_stun_responses_total {}",
            get(&self.responses)
        );
        header(
            out,
            "switchboard_stun_errors_total",
            "counter",
            "STUN error responses (4xx) sent.",
        );
        let _ = writeln!(out, "switchboard_stun_errors_total {}", get(&self.errors));
        header(
            out,
            "switchboard_stun_dropped_total",
            "counter",
            "Messages the STUN server did not answer (not STUN, bad FINGERPRINT, indications, responses).",
        );
        let _ = writeln!(out, "switchboard_stun_dropped_total {}", get(&self.dropped));
        header(
            out,
            "switchboard_stun_tcp_connections",
            "gauge",
            "Open STUN TCP connections.",
        );
        let _ = writeln!(
            out,
            "switchboard_stun_tcp_connections {}",
            get(&self.tcp_connections)
        );
        header(
            out,
            "switchboard_stun_tcp_rejected_total",
            "counter",
            "STUN TCP connections closed on arrival at the connection limit.",
        );
        let _ = writeln!(
            out,
            "switchboard_stun_tcp_rejected_total {}",
            get(&self.tcp_rejected)
        );
    }
}

/// Resolves once the watch value is `true` or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Answers STUN over one UDP socket until shutdown.
pub async fn run_udp(
    socket: UdpSocket,
    metrics: Arc<StunMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let responder = BindingResponder::default();
    let mut request = vec![0u8; UDP_BUFFER_LEN];
    let mut response = vec![0u8; RESPONSE_BUFFER_LEN];
    loop {
        let (len, source) = tokio::select! {
            received = socket.recv_from(&mut request) => match received {
                Ok(received) => received,
                // Per-datagram failures (an ICMP error reported on some platforms, a
                // datagram too large for the buffer on Windows) say nothing about the next.
                Err(error) => {
                    trace!(%error, "STUN UDP receive failed");
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        metrics.requests_udp.fetch_add(1, Ordering::Relaxed);
        let outcome = responder.handle(&request[..len], source, &mut response);
        metrics.record(&outcome);
        trace!(%source, ?outcome, "STUN UDP");
        let Outcome::Reply { len, .. } = outcome else {
            continue;
        };
        if let Err(error) = socket.send_to(&response[..len], source).await {
            trace!(%source, %error, "STUN UDP send failed");
        }
    }
    debug!("STUN UDP loop stopped");
}

/// Limits of the TCP service; [`run_tcp`] uses the defaults.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Connections served at once; more are closed on arrival.
    pub max_connections: usize,
    /// How long a connection may go without delivering a complete message.
    pub idle_timeout: Duration,
}

/// Answers STUN over TCP until shutdown, with at most `max_connections` connections.
pub async fn run_tcp(
    listener: TcpListener,
    metrics: Arc<StunMetrics>,
    shutdown: watch::Receiver<bool>,
    max_connections: usize,
) {
    let limits = TcpLimits {
        max_connections,
        idle_timeout: TCP_IDLE_TIMEOUT,
    };
    run_tcp_with(listener, metrics, shutdown, limits).await;
}

/// [`run_tcp`] with every limit explicit.
pub async fn run_tcp_with(
    listener: TcpListener,
    metrics: Arc<StunMetrics>,
    mut shutdown: watch::Receiver<bool>,
    limits: TcpLimits,
) {
    let responder = Arc::new(BindingResponder::default());
    // acquire_many takes a u32, and the drain below needs every permit at once.
    let capacity = limits
        .max_connections
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(capacity));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "STUN TCP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.tcp_rejected.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "STUN TCP connection refused at the connection limit");
            continue;
        };
        let connection = Connection {
            stream,
            peer,
            responder: responder.clone(),
            metrics: metrics.clone(),
            idle_timeout: limits.idle_timeout,
            _permit: permit,
        };
        let span = tracing::debug_span!("stun_tcp", %peer);
        tokio::spawn(connection.serve(shutdown.clone()).instrument(span));
    }
    // Every connection task holds a permit and watches the same shutdown signal; getting
    // all permits back means they have all closed, so awaiting this loop awaits them too.
    let _ = slots.acquire_many(capacity as u32).await;
    debug!("STUN TCP loop stopped");
}

/// Why a TCP connection ended.
enum Closed {
    /// The peer closed between messages.
    Eof,
    /// The peer closed in the middle of a message.
    Truncated {
        buffered: usize,
    },
    Idle,
    Shutdown,
    Framing(FramingError),
    Io(io::Error),
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eof => f.write_str("peer closed"),
            Self::Truncated { buffered } => write!(
                f,
                "peer closed with {buffered} bytes of an unfinished message"
            ),
            Self::Idle => f.write_str("idle timeout"),
            Self::Shutdown => f.write_str("server shutting down"),
            Self::Framing(error) => write!(f, "framing: {error}"),
            Self::Io(error) => write!(f, "I/O: {error}"),
        }
    }
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    responder: Arc<BindingResponder>,
    metrics: Arc<StunMetrics>,
    idle_timeout: Duration,
    /// Returned to the connection limit when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(mut self, mut shutdown: watch::Receiver<bool>) {
        self.metrics.tcp_connections.fetch_add(1, Ordering::Relaxed);
        debug!("STUN TCP connection opened");
        let closed = self.answer_messages(&mut shutdown).await;
        self.metrics.tcp_connections.fetch_sub(1, Ordering::Relaxed);
        debug!(%closed, "STUN TCP connection closed");
    }

    /// Frames, answers and reads until the connection has to close. Several messages may
    /// arrive in one read, and one message may take several reads.
    async fn answer_messages(&mut self, shutdown: &mut watch::Receiver<bool>) -> Closed {
        let mut buf = vec![0u8; MAX_TCP_MESSAGE_LEN];
        let mut out = vec![0u8; RESPONSE_BUFFER_LEN];
        let mut filled = 0;
        let mut deadline = Instant::now() + self.idle_timeout;
        loop {
            let complete = match message_len(&buf[..filled], MAX_TCP_MESSAGE_LEN) {
                Ok(Some(len)) if len <= filled => Some(len),
                Ok(_) => None,
                Err(error) => return Closed::Framing(error),
            };
            if let Some(len) = complete {
                self.metrics.requests_tcp.fetch_add(1, Ordering::Relaxed);
                let outcome = self.responder.handle(&buf[..len], self.peer, &mut out);
                self.metrics.record(&outcome);
                trace!(?outcome, "STUN TCP");
                if let Outcome::Reply { len, .. } = outcome {
                    // A peer that stops reading must hold neither the task nor shutdown.
                    let written = tokio::select! {
                        written = timeout(self.idle_timeout, self.stream.write_all(&out[..len])) => written,
                        () = stopped(shutdown) => return Closed::Shutdown,
                    };
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => return Closed::Io(error),
                        Err(_) => return Closed::Idle,
                    }
                }
                buf.copy_within(len..filled, 0);
                filled -= len;
                deadline = Instant::now() + self.idle_timeout;
                continue;
            }
            // An incomplete message is shorter than MAX_TCP_MESSAGE_LEN, so the buffer has
            // room and a zero-byte read can only mean end of stream.
            let read = tokio::select! {
                read = timeout_at(deadline, self.stream.read(&mut buf[filled..])) => read,
                () = stopped(shutdown) => return Closed::Shutdown,
            };
            match read {
                Err(_) => return Closed::Idle,
                Ok(Ok(0)) if filled == 0 => return Closed::Eof,
                Ok(Ok(0)) => return Closed::Truncated { buffered: filled },
                Ok(Ok(n)) => filled += n,
                Ok(Err(error)) => return Closed::Io(error),
            }
        }
    }
}
