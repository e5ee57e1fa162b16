//! TURN (and STUN) on real sockets: the tokio driver around the sans-IO `switchboard-turn`
//! core.
//!
//! One task owns the core and every UDP socket: the client-facing socket on the STUN port
//! and all relay sockets. It feeds the core what arrives, drains the core's outputs (send
//! to a client, send from a relay socket to a peer, bind or close a relay socket) and
//! sleeps until the core's next deadline. Keeping every socket in one task is what lets
//! the relay path run without locks, channels or per-packet allocation: datagrams are read
//! into reused buffers, the core writes the relayed form into its own reused buffer, and
//! the driver sends without waiting (a full socket buffer drops the datagram, as a router
//! would, instead of stalling every other allocation). The task has a thread and a
//! single-threaded runtime of its own (see [`spawn`]).
//!
//! System calls and wake-ups are most of the cost of relaying, so the driver batches them
//! (`switchboard-udp`, see the `batch` module): up to 32 datagrams per `recvmmsg`, a socket known to be empty
//! without a read that fails, and the datagrams for UDP clients of one turn of the loop in
//! one `sendmmsg`. Sockets are registered for readability only, so the datagrams the task
//! sends do not wake it up again. Each turn reads every socket that is ready, whichever
//! woke the task; and while datagrams come fast, the task does not wake up for each burst:
//! it sleeps until `GATHER` after the start of the turn and then reads everything that
//! arrived meanwhile (at most that much added latency, for one wake-up per interval
//! instead of one per burst, and bigger batches; see `Pace`).
//!
//! Relay sockets are watched without polling each one: every socket has its own waker
//! that sets the socket's bit in a ready bitmap and wakes the task, which then reads only
//! the sockets whose bits are set (the scheme `FuturesUnordered` uses, without a boxed
//! future per readiness event).
//!
//! TCP and TLS clients get one task per connection (bounded by a semaphore) that cuts the
//! byte stream into STUN messages and padded ChannelData frames and hands them to the core
//! task over a bounded channel; frames for the client come back over a bounded outbox. A
//! client that does not read its outbox loses frames rather than slowing anyone down.
//! Frame buffers circulate between connections and the core task instead of being
//! allocated per frame.
//!
//! The core's events (allocations made and ended, authentication failures, limits reached)
//! are written to the log here, at levels and within budgets chosen so that nobody can
//! fill the log by provoking them (see `EventLog`). Relayed data makes no event.
//!
//! This module makes no protocol decision; those are the core's.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use switchboard_turn::channel_data::{self, Kind};
use switchboard_turn::{
    AllocationInfo, AuthFailure, BindError, Client, Destination, Direction, DropReason,
    ERROR_CODES, Event, Handled, Output, RelayId, RequestKind, Server, Stats, Transport, frame_len,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at};
use tracing::{Instrument, debug, error, info, trace, warn};

use crate::metrics::header;
use crate::stun_service::StunMetrics;
use batch::Socket;
use switchboard_udp::BatchSocket;

/// Receive buffer for datagrams: the largest UDP payload, so nothing arrives truncated.
const DATAGRAM_BUFFER_LEN: usize = 65_536;
/// Largest frame on a TCP or TLS connection: a ChannelData message with 65535 bytes of
/// data and its padding. Larger announced lengths close the connection.
const MAX_STREAM_FRAME_LEN: usize = 4 + 65_535 + 1;
/// Initial per-connection read buffer; it grows only for a large frame.
const STREAM_BUFFER_LEN: usize = 4096;
/// Datagrams read from one socket before the loop looks at the others.
const BATCH: usize = 64;
/// While datagrams keep coming, how long the core task lets them gather before it reads
/// them: at most this much added latency per relayed datagram (plus the timer slack, 50 µs
/// on Linux), for far fewer wake-ups (one per interval instead of one per burst) and
/// bigger batches (see [`Driver::run`]).
const GATHER: Duration = Duration::from_micros(500);
/// Datagrams per [`GATHER`] interval, on average, from which gathering is worth it.
const GATHER_MIN: u64 = 4;
/// Over how long the datagram rate is measured for [`GATHER_MIN`].
const PACE_WINDOW: Duration = Duration::from_millis(10);
/// Frames queued for one TCP or TLS client before further ones are dropped.
const OUTBOX_FRAMES: usize = 256;
/// Frames from all connections queued for the core task.
const INBOX_FRAMES: usize = 1024;
/// Spare frame buffers the core task keeps.
const POOL_BUFFERS: usize = 256;
/// Spare frame buffers a connection keeps.
const CONNECTION_STASH: usize = 4;
/// How long a new connection may take to deliver its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an established connection may stay silent: longer than the 5-minute
/// permission refresh that any client with an allocation has to send.
const IDLE_TIMEOUT: Duration = Duration::from_secs(660);
/// How long a write to a client may block its connection task.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket buffer asked for on the client-facing UDP socket; the kernel may grant less.
const UDP_SOCKET_BUFFER: usize = 4 << 20;
/// Pause after a failed `accept` (usually out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The period over which info-level lines of the TURN log are budgeted (see [`LogBudget`]).
const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Allocation lines (created, ended) at info level per [`LOG_WINDOW`]: far more than real
/// calls make, so that only a client creating allocations in a loop goes over.
const ALLOCATION_LINES: u32 = 500;
/// Refusal lines at info level per [`LOG_WINDOW`]: a full server refuses every newcomer,
/// and a few lines say so as well as thousands would.
const REFUSAL_LINES: u32 = 5;

/// Counters of the driver itself, beyond what the core counts.
#[derive(Debug, Default)]
pub struct TurnMetrics {
    /// Datagrams not sent because a socket buffer was full or the send failed.
    pub send_failures: AtomicU64,
    /// Frames dropped because a TCP or TLS client's outbox was full.
    pub outbox_drops: AtomicU64,
    /// TLS connections that failed or did not finish their handshake.
    pub tls_handshake_failures: AtomicU64,
    /// TLS connections open now.
    pub tls_connections: AtomicU64,
}

impl TurnMetrics {
    /// Appends the core's counters and the driver's in Prometheus text format.
    pub fn render(&self, stats: &Stats, out: &mut String) {
        use std::fmt::Write;
        let gauges = [
            (
                "switchboard_turn_allocations",
                "TURN allocations.",
                stats.allocations,
            ),
            (
                "switchboard_turn_permissions",
                "TURN permissions over all allocations.",
                stats.permissions,
            ),
            (
                "switchboard_turn_channels",
                "TURN channel bindings over all allocations.",
                stats.channels,
            ),
            (
                "switchboard_turn_reservations",
                "Relay ports reserved by EVEN-PORT.",
                stats.reservations,
            ),
            (
                "switchboard_turn_tls_connections",
                "Open TURN-over-TLS connections.",
                self.tls_connections.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        let counters = [
            (
                "switchboard_turn_allocations_created_total",
                "TURN allocations created.",
                stats.allocations_created,
            ),
            (
                "switchboard_turn_allocations_expired_total",
                "TURN allocations ended by their lifetime running out.",
                stats.allocations_expired,
            ),
            (
                "switchboard_turn_send_failures_total",
                "Datagrams the TURN server could not send (socket buffer full or send error).",
                self.send_failures.load(Ordering::Relaxed),
            ),
            (
                "switchboard_turn_outbox_drops_total",
                "Frames dropped for TCP/TLS clients that did not read fast enough.",
                self.outbox_drops.load(Ordering::Relaxed),
            ),
            (
                "switchboard_turn_tls_handshake_failures_total",
                "TURN-over-TLS connections whose handshake failed or timed out.",
                self.tls_handshake_failures.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            out,
            "switchboard_turn_requests_total",
            "counter",
            "TURN requests and Send indications received, by method.",
        );
        for kind in RequestKind::ALL {
            let _ = writeln!(
                out,
                "switchboard_turn_requests_total{{method=\"{}\"}} {}",
                kind.as_str(),
                stats.requests(kind)
            );
        }
        header(
            out,
            "switchboard_turn_relayed_bytes_total",
            "counter",
            "Application bytes relayed, by direction.",
        );
        for direction in Direction::ALL {
            let _ = writeln!(
                out,
                "switchboard_turn_relayed_bytes_total{{direction=\"{}\"}} {}",
                direction.as_str(),
                stats.relayed(direction).bytes
            );
        }
        header(
            out,
            "switchboard_turn_relayed_packets_total",
            "counter",
            "Packets relayed, by direction.",
        );
        for direction in Direction::ALL {
            let _ = writeln!(
                out,
                "switchboard_turn_relayed_packets_total{{direction=\"{}\"}} {}",
                direction.as_str(),
                stats.relayed(direction).packets
            );
        }
        header(
            out,
            "switchboard_turn_auth_failures_total",
            "counter",
            "TURN requests that failed authentication, by reason (missing_credentials is the normal first challenge).",
        );
        for failure in AuthFailure::ALL {
            let _ = writeln!(
                out,
                "switchboard_turn_auth_failures_total{{reason=\"{}\"}} {}",
                failure.as_str(),
                stats.auth_failures(failure)
            );
        }
        header(
            out,
            "switchboard_turn_errors_total",
            "counter",
            "TURN error responses sent, by code.",
        );
        for code in ERROR_CODES {
            let _ = writeln!(
                out,
                "switchboard_turn_errors_total{{code=\"{}\"}} {}",
                code.code(),
                stats.errors(code)
            );
        }
        header(
            out,
            "switchboard_turn_dropped_total",
            "counter",
            "Messages neither answered nor relayed, by reason.",
        );
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "switchboard_turn_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                stats.dropped(reason)
            );
        }
    }
}

/// Questions for the core task from the HTTP front.
enum Query {
    Stats(oneshot::Sender<Stats>),
    Allocations(oneshot::Sender<Vec<AllocationInfo>>),
}

/// The HTTP front's way to ask the TURN task about its state.
#[derive(Clone, Debug)]
pub struct TurnHandle {
    queries: mpsc::Sender<Query>,
}

impl TurnHandle {
    /// The core's counters, or `None` once the service has stopped.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(Query::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Every allocation, or `None` once the service has stopped.
    pub async fn allocations(&self) -> Option<Vec<AllocationInfo>> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(Query::Allocations(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Sockets and limits for [`spawn`].
pub struct TurnSockets {
    /// The client-facing UDP socket (the STUN port).
    pub udp: UdpSocket,
    /// The client-facing TCP listener (the STUN port).
    pub tcp: TcpListener,
    /// The TLS listener and its acceptor, when a certificate is configured.
    pub tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// TCP and TLS connections served at once, each listener counted separately.
    pub max_connections: usize,
}

/// Starts the core task (on its own thread) and the TCP (and TLS) accept loops; returns the
/// query handle and the tasks, which end on shutdown.
pub fn spawn(
    core: Server,
    sockets: TurnSockets,
    stun_metrics: Arc<StunMetrics>,
    metrics: Arc<TurnMetrics>,
    shutdown: watch::Receiver<bool>,
) -> (TurnHandle, Vec<JoinHandle<()>>) {
    let (query_tx, query_rx) = mpsc::channel(16);
    let (event_tx, event_rx) = mpsc::channel(INBOX_FRAMES);
    if let Err(error) = socket2::SockRef::from(&sockets.udp).set_recv_buffer_size(UDP_SOCKET_BUFFER)
    {
        debug!(%error, "cannot enlarge the UDP receive buffer");
    }
    if let Err(error) = socket2::SockRef::from(&sockets.udp).set_send_buffer_size(UDP_SOCKET_BUFFER)
    {
        debug!(%error, "cannot enlarge the UDP send buffer");
    }
    let parts = DriverParts {
        core,
        udp: sockets.udp.into_std(),
        events: event_rx,
        queries: query_rx,
        stun_metrics: stun_metrics.clone(),
        metrics: metrics.clone(),
    };
    let mut tasks = vec![spawn_driver(parts, shutdown.clone())];
    let acceptor = Acceptor {
        events: event_tx,
        stun_metrics,
        metrics,
        max_connections: sockets.max_connections,
    };
    tasks.push(tokio::spawn(acceptor.clone().run(
        sockets.tcp,
        None,
        shutdown.clone(),
    )));
    if let Some((listener, tls)) = sockets.tls {
        tasks.push(tokio::spawn(acceptor.run(listener, Some(tls), shutdown)));
    }
    (TurnHandle { queries: query_tx }, tasks)
}

/// What the core task is made of, handed to its thread.
struct DriverParts {
    core: Server,
    /// Out of the caller's runtime, to be registered with the core task's own.
    udp: io::Result<std::net::UdpSocket>,
    events: mpsc::Receiver<ConnectionEvent>,
    queries: mpsc::Receiver<Query>,
    stun_metrics: Arc<StunMetrics>,
    metrics: Arc<TurnMetrics>,
}

/// Runs the core task on a thread of its own with a single-threaded runtime, and returns a
/// task of the caller's runtime that ends with it.
///
/// The relay path is one task doing short bursts of work per datagram. On the shared
/// multi-threaded runtime a readiness event can wake an idle worker to look for work, and
/// the task moves between threads; on its own thread the task is polled right where
/// `epoll` reported its sockets. The sockets are registered with this runtime's reactor, so
/// their readiness never crosses threads either; only TCP frames and queries do, over
/// their channels.
fn spawn_driver(parts: DriverParts, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let span = tracing::debug_span!("turn");
    let thread = std::thread::Builder::new()
        .name("turn".into())
        .spawn(move || {
            let _done = done_tx;
            let _entered = span.enter();
            if let Err(error) = run_driver(parts, shutdown) {
                error!(%error, "the TURN service stopped");
            }
        });
    if let Err(error) = thread {
        error!(%error, "cannot start the TURN thread");
    }
    // The sender goes with the thread, so this ends when the thread does (or never began).
    tokio::spawn(async move {
        let _ = done_rx.await;
    })
}

fn run_driver(parts: DriverParts, shutdown: watch::Receiver<bool>) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let udp = Socket::from_std(parts.udp?)?;
        let relays = Relays::new(parts.core.relay_capacity());
        let driver = Driver {
            core: parts.core,
            udp,
            relays,
            connections: HashMap::new(),
            pool: Vec::new(),
            events: parts.events,
            queries: parts.queries,
            stun_metrics: parts.stun_metrics,
            metrics: parts.metrics,
            incoming: switchboard_udp::Incoming::new(DATAGRAM_BUFFER_LEN),
            outgoing: switchboard_udp::Outgoing::default(),
            log: EventLog::new(Instant::now()),
        };
        driver.run(shutdown).await;
        Ok(())
    })
}

/// Resolves once the watch value is `true` or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

// ----- Relay sockets and their readiness -----

/// Which relay sockets may have datagrams: one bit per socket index, and one bit per word
/// of those, so that a scan visits only the words with bits set (20,000 relay slots are
/// 313 words but only 5 summary words).
struct ReadySet {
    bits: Box<[AtomicU64]>,
    /// Bit `w % 64` of `words[w / 64]` is set when `bits[w]` may be non-zero.
    words: Box<[AtomicU64]>,
    /// Set with any bit, so an idle check is one load instead of a scan.
    any: AtomicBool,
    task: AtomicWaker,
}

impl ReadySet {
    fn new(capacity: usize) -> Self {
        let words = capacity.div_ceil(64).max(1);
        Self {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            words: (0..words.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            any: AtomicBool::new(false),
            task: AtomicWaker::new(),
        }
    }

    fn mark(&self, index: usize) {
        let word = index / 64;
        // The socket's bit before its word's bit: a scan that finds the word's bit then
        // finds the socket's.
        self.bits[word].fetch_or(1 << (index % 64), Ordering::Release);
        self.words[word / 64].fetch_or(1 << (word % 64), Ordering::Release);
        self.any.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Takes the marks of every socket marked so far and calls `visit` with each index.
    fn drain(&self, mut visit: impl FnMut(usize)) {
        // Cleared before the scan: a mark that comes in during it sets it again.
        self.any.store(false, Ordering::Release);
        for (group, words) in self.words.iter().enumerate() {
            let mut words = words.swap(0, Ordering::AcqRel);
            while words != 0 {
                let word = group * 64 + words.trailing_zeros() as usize;
                words &= words - 1;
                let mut bits = self.bits[word].swap(0, Ordering::AcqRel);
                while bits != 0 {
                    visit(word * 64 + bits.trailing_zeros() as usize);
                    bits &= bits - 1;
                }
            }
        }
    }
}

/// The waker of one relay socket: it marks the socket ready.
struct SocketWaker {
    index: usize,
    ready: Arc<ReadySet>,
}

impl Wake for SocketWaker {
    fn wake(self: Arc<Self>) {
        self.ready.mark(self.index);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.mark(self.index);
    }
}

struct RelaySocket {
    relay: RelayId,
    socket: Socket,
    waker: Waker,
}

/// The relay sockets, indexed like the core's relay ids.
struct Relays {
    sockets: Vec<Option<RelaySocket>>,
    ready: Arc<ReadySet>,
}

impl Relays {
    fn new(capacity: usize) -> Self {
        Self {
            sockets: (0..capacity).map(|_| None).collect(),
            ready: Arc::new(ReadySet::new(capacity)),
        }
    }

    /// Resolves when some relay socket has been woken.
    fn ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            self.ready.task.register(cx.waker());
            if self.ready.any.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn get(&self, relay: RelayId) -> Option<&RelaySocket> {
        self.sockets
            .get(relay.index())?
            .as_ref()
            .filter(|s| s.relay == relay)
    }

    fn bind(
        &mut self,
        relay: RelayId,
        addr: SocketAddr,
        dont_fragment: bool,
    ) -> Result<(), BindError> {
        let index = relay.index();
        if index >= self.sockets.len() {
            return Err(BindError::Failed);
        }
        let failed = |error: io::Error| {
            if error.kind() == io::ErrorKind::AddrInUse {
                BindError::AddrInUse
            } else {
                debug!(%addr, %error, "relay socket bind failed");
                BindError::Failed
            }
        };
        let socket = std::net::UdpSocket::bind(addr).map_err(failed)?;
        socket.set_nonblocking(true).map_err(failed)?;
        if dont_fragment {
            set_dont_fragment(&socket, addr.is_ipv6()).map_err(failed)?;
        }
        let socket = Socket::from_std(socket).map_err(failed)?;
        let waker = Waker::from(Arc::new(SocketWaker {
            index,
            ready: self.ready.clone(),
        }));
        self.sockets[index] = Some(RelaySocket {
            relay,
            socket,
            waker,
        });
        // The first read registers the socket's waker.
        self.ready.mark(index);
        Ok(())
    }

    fn close(&mut self, relay: RelayId) {
        if let Some(slot) = self.sockets.get_mut(relay.index())
            && slot.as_ref().is_some_and(|s| s.relay == relay)
        {
            *slot = None;
        }
    }
}

/// Sets the DF bit on every datagram the socket sends (DONT-FRAGMENT).
#[cfg(target_os = "linux")]
fn set_dont_fragment(socket: &std::net::UdpSocket, ipv6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value) = if ipv6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: the descriptor is open for as long as `socket` is borrowed, and the option
    // value is a c_int whose exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the DF bit cannot be forced, and an allocation asking for it fails.
#[cfg(not(target_os = "linux"))]
fn set_dont_fragment(_: &std::net::UdpSocket, _: bool) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

// ----- The core task -----

/// What connection tasks tell the core task.
enum ConnectionEvent {
    Opened {
        client: Client,
        outbox: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        client: Client,
        frame: Vec<u8>,
    },
    Closed {
        client: Client,
    },
}

/// Whether the datagram rate is high enough for gathering to pay: measured over windows of
/// at least [`PACE_WINDOW`], it must bring [`GATHER_MIN`] datagrams per [`GATHER`] interval
/// or more. Below that, a gathering pause would mostly cost a wake-up of its own, and add
/// latency for nothing.
struct Pace {
    window_start: Instant,
    datagrams: u64,
    gathering: bool,
}

impl Pace {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            datagrams: 0,
            gathering: false,
        }
    }

    /// Counts the datagrams a turn read; returns whether to gather before the next turn.
    fn gather(&mut self, now: Instant, datagrams: usize) -> bool {
        self.datagrams += datagrams as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= PACE_WINDOW {
            self.gathering = u128::from(self.datagrams) * GATHER.as_nanos()
                >= u128::from(GATHER_MIN) * elapsed.as_nanos();
            self.window_start = now;
            self.datagrams = 0;
        }
        self.gathering && datagrams > 0
    }
}

/// What a turn of the core task read from its UDP sockets.
#[derive(Clone, Copy, Debug, Default)]
struct Reads {
    /// Datagrams read (and failed reads).
    datagrams: usize,
    /// Whether a socket still had datagrams when its batch was done.
    backlog: bool,
}

impl Reads {
    fn add(&mut self, other: Reads) {
        self.datagrams += other.datagrams;
        self.backlog |= other.backlog;
    }
}

struct Driver {
    core: Server,
    udp: Socket,
    relays: Relays,
    /// Outboxes of TCP and TLS clients.
    connections: HashMap<Client, mpsc::Sender<Vec<u8>>>,
    /// Spare frame buffers for outboxes.
    pool: Vec<Vec<u8>>,
    events: mpsc::Receiver<ConnectionEvent>,
    queries: mpsc::Receiver<Query>,
    stun_metrics: Arc<StunMetrics>,
    metrics: Arc<TurnMetrics>,
    /// Where datagrams are read, from the client socket or a relay socket.
    incoming: switchboard_udp::Incoming,
    /// Datagrams for UDP clients, sent together at the end of each turn of the loop.
    outgoing: switchboard_udp::Outgoing,
    log: EventLog,
}

impl Driver {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // Far enough to mean "no deadline", near enough not to overflow.
        let idle = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        let sleep = sleep_until(idle());
        tokio::pin!(sleep);
        let mut armed = None;
        let mut pace = Pace::new(Instant::now());
        loop {
            let deadline = self.core.poll_timeout();
            if deadline != armed {
                sleep
                    .as_mut()
                    .reset(deadline.map_or_else(idle, tokio::time::Instant::from_std));
                armed = deadline;
            }
            // Whichever branch fires, the turn below reads every socket that is ready.
            tokio::select! {
                () = stopped(&mut shutdown) => break,
                readable = self.udp.readable() => if let Err(error) = readable {
                    trace!(%error, "TURN UDP socket failed");
                },
                () = self.relays.ready() => {}
                Some(event) = self.events.recv() => self.connection_event(event),
                Some(query) = self.queries.recv() => self.answer(query),
                () = &mut sleep => {
                    let now = Instant::now();
                    self.core.handle_timeout(now);
                    self.flush(now);
                    armed = None;
                }
            }
            let turn = Instant::now();
            let mut reads = self.read_clients(turn);
            reads.add(self.read_relays(turn));
            self.connection_events();
            self.udp.send(&mut self.outgoing, &self.metrics);
            // Under load, let the next datagrams gather instead of waking up for each
            // burst (see `GATHER`); a backlog is read at once. The sleep blocks this
            // thread, which serves nothing else: datagrams wait in their socket buffers
            // (a few per socket), TCP frames and queries in their channels.
            if pace.gather(turn, reads.datagrams) && !reads.backlog {
                let until = turn + GATHER;
                let now = Instant::now();
                if until > now {
                    std::thread::sleep(until - now);
                }
                // The runtime collects the readiness that came in meanwhile without
                // blocking, and the next turn reads it.
                tokio::task::yield_now().await;
            }
        }
        debug!("TURN loop stopped");
    }

    fn answer(&mut self, query: Query) {
        match query {
            Query::Stats(reply) => {
                let _ = reply.send(self.core.stats().clone());
            }
            Query::Allocations(reply) => {
                let _ = reply.send(self.core.allocations(Instant::now()));
            }
        }
    }

    /// Reads the client socket if it is ready, a batch of datagrams per system call, until
    /// it is empty or [`BATCH`] datagrams have been read (a backlog, for the next turn).
    fn read_clients(&mut self, now: Instant) -> Reads {
        let mut reads = Reads::default();
        while reads.datagrams < BATCH {
            let (count, more) = match self.udp.recv(&mut self.incoming) {
                Ok(received) => received,
                Err(error) => {
                    trace!(%error, "TURN UDP receive failed");
                    reads.datagrams += 1;
                    continue;
                }
            };
            reads.datagrams += count;
            self.stun_metrics
                .requests_udp
                .fetch_add(count as u64, Ordering::Relaxed);
            for i in 0..count {
                let (data, from) = self.incoming.get(i);
                let client = Client {
                    transport: Transport::Udp,
                    addr: from,
                };
                let handled = self.core.handle_client(client, data, now);
                record(&self.stun_metrics, handled);
            }
            self.flush(now);
            if !more {
                return reads;
            }
        }
        reads.backlog = true;
        reads
    }

    /// Reads every relay socket marked ready.
    fn read_relays(&mut self, now: Instant) -> Reads {
        let ready = self.relays.ready.clone();
        let mut reads = Reads::default();
        ready.drain(|index| reads.add(self.read_relay(index, now)));
        reads
    }

    /// Reads one relay socket until it is empty (or a batch is done, in which case it is
    /// marked ready again so that the other sockets get their turn first).
    fn read_relay(&mut self, index: usize, now: Instant) -> Reads {
        let mut reads = Reads::default();
        loop {
            let Some(Some(socket)) = self.relays.sockets.get(index) else {
                return reads;
            };
            let relay = socket.relay;
            let mut cx = Context::from_waker(&socket.waker);
            match socket.socket.poll_read_ready(&mut cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    trace!(%error, "relay socket failed");
                    return reads;
                }
                // The socket's waker is registered again; its bit comes back with data.
                Poll::Pending => return reads,
            }
            if reads.datagrams >= BATCH {
                self.relays.ready.mark(index);
                reads.backlog = true;
                return reads;
            }
            let (count, _) = match socket.socket.recv(&mut self.incoming) {
                Ok(received) => received,
                Err(error) => {
                    trace!(%error, "relay receive failed");
                    reads.datagrams += 1;
                    continue;
                }
            };
            reads.datagrams += count;
            for i in 0..count {
                let (data, peer) = self.incoming.get(i);
                let handled = self.core.handle_peer(relay, peer, data, now);
                trace!(?relay, %peer, ?handled, "from peer");
            }
            self.flush(now);
        }
    }

    /// Takes the frames TCP and TLS connections have queued, up to a channel's worth.
    fn connection_events(&mut self) {
        for _ in 0..INBOX_FRAMES {
            match self.events.try_recv() {
                Ok(event) => self.connection_event(event),
                Err(_) => return,
            }
        }
    }

    fn connection_event(&mut self, event: ConnectionEvent) {
        let now = Instant::now();
        match event {
            ConnectionEvent::Opened { client, outbox } => {
                self.connections.insert(client, outbox);
            }
            ConnectionEvent::Frame { client, frame } => {
                self.stun_metrics
                    .requests_tcp
                    .fetch_add(1, Ordering::Relaxed);
                let handled = self.core.handle_client(client, &frame, now);
                record(&self.stun_metrics, handled);
                if self.pool.len() < POOL_BUFFERS {
                    self.pool.push(frame);
                }
                self.flush(now);
            }
            ConnectionEvent::Closed { client } => {
                self.connections.remove(&client);
                self.core.client_closed(client, now);
                self.flush(now);
            }
        }
    }

    /// Carries out everything the core has queued.
    fn flush(&mut self, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Transmit(transmit) => match transmit.destination {
                    Destination::Client(client) if client.transport == Transport::Udp => {
                        if self.outgoing.is_full() {
                            self.udp.send(&mut self.outgoing, &self.metrics);
                        }
                        self.outgoing.push(transmit.data, client.addr);
                    }
                    Destination::Client(client) => {
                        let Some(outbox) = self.connections.get(&client) else {
                            continue;
                        };
                        let mut frame = self.pool.pop().unwrap_or_default();
                        frame.clear();
                        frame.extend_from_slice(transmit.data);
                        match outbox.try_send(frame) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(frame)) => {
                                self.metrics.outbox_drops.fetch_add(1, Ordering::Relaxed);
                                self.pool.push(frame);
                            }
                            Err(mpsc::error::TrySendError::Closed(frame)) => self.pool.push(frame),
                        }
                    }
                    Destination::Peer { relay, addr } => match self.relays.get(relay) {
                        Some(socket) => {
                            send_datagram(&socket.socket, transmit.data, addr, &self.metrics)
                        }
                        None => trace!(?relay, "no socket for relay"),
                    },
                },
                Output::BindRelay {
                    relay,
                    addr,
                    dont_fragment,
                } => {
                    let result = self.relays.bind(relay, addr, dont_fragment);
                    self.core.relay_bound(relay, result, now);
                }
                Output::CloseRelay { relay } => self.relays.close(relay),
                Output::Event(event) => self.log.write(event, now),
            }
        }
    }
}

// ----- The TURN log -----

/// Writes `$($field)*` at info level when `$info`, else at debug level.
macro_rules! info_or_debug {
    ($info:expr, $($field:tt)*) => {
        if $info {
            info!($($field)*)
        } else {
            debug!($($field)*)
        }
    };
}

/// Writes the core's events. Allocations made and ended and requests refused by a limit
/// go to info level, within budgets that keep a client looping on them from filling the
/// log; authentication failures go to debug level only, since anyone can cause them.
struct EventLog {
    allocations: LogBudget,
    refusals: LogBudget,
}

impl EventLog {
    fn new(now: Instant) -> Self {
        Self {
            allocations: LogBudget::new("allocation", ALLOCATION_LINES, now),
            refusals: LogBudget::new("refusal", REFUSAL_LINES, now),
        }
    }

    fn write(&mut self, event: Event, now: Instant) {
        match event {
            Event::AllocationCreated {
                client,
                username,
                relayed,
                lifetime,
                ..
            } => info_or_debug!(
                self.allocations.take(now),
                user = %username,
                client = %client.addr,
                transport = %client.transport.as_str(),
                relayed = %relayed,
                lifetime_secs = lifetime.as_secs(),
                "TURN allocation created"
            ),
            Event::AllocationEnded {
                client,
                username,
                relayed,
                reason,
                age,
                to_peer,
                to_client,
                ..
            } => info_or_debug!(
                self.allocations.take(now),
                user = %username,
                client = %client.addr,
                transport = %client.transport.as_str(),
                relayed = %relayed,
                reason = %reason.as_str(),
                duration_secs = age.as_secs(),
                to_peer_bytes = to_peer.bytes,
                to_client_bytes = to_client.bytes,
                "TURN allocation ended"
            ),
            // The username is whatever the client sent: Debug quotes and escapes it.
            Event::AuthFailed {
                client,
                failure,
                username,
            } => debug!(
                client = %client.addr,
                transport = %client.transport.as_str(),
                reason = %failure.as_str(),
                user = ?username.as_deref().unwrap_or_default(),
                "TURN authentication failed"
            ),
            Event::Refused {
                client,
                username,
                limit,
            } => info_or_debug!(
                self.refusals.take(now),
                user = %username,
                client = %client.addr,
                transport = %client.transport.as_str(),
                limit = %limit.as_str(),
                code = limit.code().code(),
                "TURN request refused at a limit"
            ),
        }
    }
}

/// So many info-level lines of one kind per [`LOG_WINDOW`]; past that, lines go to debug
/// level, and the first line of a later window is preceded by how many did.
struct LogBudget {
    kind: &'static str,
    limit: u32,
    window_start: Instant,
    used: u32,
    demoted: u64,
}

impl LogBudget {
    fn new(kind: &'static str, limit: u32, now: Instant) -> Self {
        Self {
            kind,
            limit,
            window_start: now,
            used: 0,
            demoted: 0,
        }
    }

    /// Whether the next line may go to info level.
    fn take(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) >= LOG_WINDOW {
            if self.demoted > 0 {
                info!(
                    "{} TURN {} lines went to debug level: more than {} in {} s",
                    self.demoted,
                    self.kind,
                    self.limit,
                    LOG_WINDOW.as_secs()
                );
            }
            self.window_start = now;
            self.used = 0;
            self.demoted = 0;
        }
        if self.used < self.limit {
            self.used += 1;
            true
        } else {
            self.demoted += 1;
            false
        }
    }
}

/// Keeps the STUN service's counters meaningful while TURN answers the port.
fn record(stun_metrics: &StunMetrics, handled: Handled) {
    let counter = match handled {
        Handled::Success => &stun_metrics.responses,
        Handled::Error(_) => &stun_metrics.errors,
        Handled::Dropped(_) => &stun_metrics.dropped,
        Handled::Relayed | Handled::Pending => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn send_datagram(socket: &Socket, data: &[u8], to: SocketAddr, metrics: &TurnMetrics) {
    if let Err(error) = socket.send_one(data, to) {
        metrics.send_failures.fetch_add(1, Ordering::Relaxed);
        trace!(%to, %error, "datagram not sent");
    }
}

// ----- Datagrams in batches -----

/// The driver's UDP sockets, read and written several datagrams per system call
/// (`switchboard-udp`). Datagrams for UDP clients all leave from the one client socket and
/// are sent together; datagrams to peers leave from a socket per allocation and are sent one
/// by one.
///
/// [`Socket`] is how the core task holds a UDP socket: registered with the reactor for
/// readability only. The core task never waits to write (a datagram that does not fit is
/// dropped), and a socket registered for writability too would report every datagram
/// the kernel frees after a send as a readiness event and wake the task for nothing.
mod batch {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll};

    use switchboard_udp::{BatchSocket, Incoming, Outgoing};
    use tokio::io::Interest;

    use super::TurnMetrics;

    /// A non-blocking UDP socket watched for readability only.
    pub struct Socket {
        #[cfg(unix)]
        io: tokio::io::unix::AsyncFd<std::net::UdpSocket>,
        #[cfg(not(unix))]
        io: tokio::net::UdpSocket,
    }

    impl Socket {
        /// Registers `socket` with the current runtime; it must be non-blocking.
        pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Self> {
            #[cfg(unix)]
            // SAFETY: the AsyncFd owns the socket, so the descriptor stays open for as long
            // as it is registered.
            let io = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(socket, Interest::READABLE)
            }?;
            #[cfg(not(unix))]
            let io = tokio::net::UdpSocket::from_std(socket)?;
            Ok(Self { io })
        }

        /// Ready when the socket may have datagrams; registers the context's waker when not.
        pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            #[cfg(unix)]
            return self.io.poll_read_ready(cx).map_ok(drop);
            #[cfg(not(unix))]
            return self.io.poll_recv_ready(cx);
        }

        /// Resolves when the socket may have datagrams.
        pub async fn readable(&self) -> io::Result<()> {
            std::future::poll_fn(|cx| self.poll_read_ready(cx)).await
        }

        /// Reads what is queued, up to a batch, without waiting. Returns how many arrived
        /// and whether the socket may hold more; when it cannot, its readiness is cleared,
        /// so the next poll registers the waker.
        pub fn recv(&self, incoming: &mut Incoming) -> io::Result<(usize, bool)> {
            let mut received = (0, false);
            let result = self.try_read(|socket| {
                received = incoming.recv(socket)?;
                if received.1 {
                    // The queue ran dry. Saying so clears the readiness; tokio clears it only
                    // if no new readiness event has arrived since, so nothing is missed.
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(()) => Ok((received.0, true)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok((received.0, false)),
                Err(error) => Err(error),
            }
        }

        /// Sends everything gathered in `outgoing`; what the socket cannot take is dropped
        /// and counted.
        pub fn send(&self, outgoing: &mut Outgoing, metrics: &TurnMetrics) {
            let failed = outgoing.send(self);
            if failed > 0 {
                metrics
                    .send_failures
                    .fetch_add(failed as u64, Ordering::Relaxed);
            }
        }

        /// Runs `read` if the socket may be readable; `WouldBlock` from `read` (or from the
        /// socket not being ready) clears the readiness until the next event.
        fn try_read<R>(&self, read: impl FnOnce(&Self) -> io::Result<R>) -> io::Result<R> {
            #[cfg(unix)]
            return self.io.try_io(Interest::READABLE, |_| read(self));
            #[cfg(not(unix))]
            return self.io.try_io(Interest::READABLE, || read(self));
        }
    }

    impl BatchSocket for Socket {
        fn recv_one(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            #[cfg(unix)]
            return self.io.get_ref().recv_from(buf);
            #[cfg(not(unix))]
            return self.io.try_recv_from(buf);
        }

        fn send_one(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
            #[cfg(unix)]
            return self.io.get_ref().send_to(data, to);
            #[cfg(not(unix))]
            return self.io.try_send_to(data, to);
        }

        #[cfg(target_os = "linux")]
        fn raw_fd(&self) -> std::os::fd::RawFd {
            use std::os::fd::AsRawFd;
            self.io.as_raw_fd()
        }
    }
}

// ----- TCP and TLS connections -----

#[derive(Clone)]
struct Acceptor {
    events: mpsc::Sender<ConnectionEvent>,
    stun_metrics: Arc<StunMetrics>,
    metrics: Arc<TurnMetrics>,
    max_connections: usize,
}

impl Acceptor {
    async fn run(
        self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let capacity = self
            .max_connections
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize);
        let slots = Arc::new(Semaphore::new(capacity));
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "TURN accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = stopped(&mut shutdown) => break,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                self.stun_metrics
                    .tcp_rejected
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "TURN connection refused at the connection limit");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let shutdown = shutdown.clone();
            match tls.clone() {
                None => {
                    let span = tracing::debug_span!("turn_tcp", %peer);
                    let client = Client {
                        transport: Transport::Tcp,
                        addr: peer,
                    };
                    tokio::spawn(
                        this.serve(stream, client, shutdown, permit)
                            .instrument(span),
                    );
                }
                Some(tls) => {
                    let span = tracing::debug_span!("turn_tls", %peer);
                    tokio::spawn(
                        this.serve_tls(stream, tls, peer, shutdown, permit)
                            .instrument(span),
                    );
                }
            }
        }
        // Connection tasks hold permits and watch the same shutdown signal: getting every
        // permit back means they have all ended.
        let _ = slots.acquire_many(capacity as u32).await;
        debug!("TURN accept loop stopped");
    }

    async fn serve_tls(
        self,
        stream: TcpStream,
        tls: tokio_rustls::TlsAcceptor,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
        permit: OwnedSemaphorePermit,
    ) {
        let handshake = tokio::select! {
            handshake = timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)) => handshake,
            () = stopped(&mut shutdown) => return,
        };
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                self.metrics
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                debug!("TLS handshake timed out");
                return;
            }
        };
        let client = Client {
            transport: Transport::Tls,
            addr: peer,
        };
        self.metrics.tls_connections.fetch_add(1, Ordering::Relaxed);
        let metrics = self.metrics.clone();
        self.serve(stream, client, shutdown, permit).await;
        metrics.tls_connections.fetch_sub(1, Ordering::Relaxed);
    }

    async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
        self,
        stream: S,
        client: Client,
        mut shutdown: watch::Receiver<bool>,
        _permit: OwnedSemaphorePermit,
    ) {
        self.stun_metrics
            .tcp_connections
            .fetch_add(1, Ordering::Relaxed);
        debug!("TURN connection opened");
        let (outbox, frames) = mpsc::channel(OUTBOX_FRAMES);
        let closed = if self
            .events
            .send(ConnectionEvent::Opened { client, outbox })
            .await
            .is_ok()
        {
            let closed = Connection::new(client, self.events.clone(), frames)
                .run(stream, &mut shutdown)
                .await;
            let _ = self.events.send(ConnectionEvent::Closed { client }).await;
            closed
        } else {
            Closed::Shutdown
        };
        self.stun_metrics
            .tcp_connections
            .fetch_sub(1, Ordering::Relaxed);
        debug!(%closed, "TURN connection closed");
    }
}

/// Why a connection ended.
enum Closed {
    Eof,
    Truncated,
    Idle,
    Shutdown,
    Framing(switchboard_turn::FrameError),
    /// ChannelData before any STUN message, which no client sends (a channel needs an
    /// allocation first): most likely another protocol, such as HTTP, on the wrong port.
    ChannelDataFirst,
    Io(io::ErrorKind),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Eof => f.write_str("peer closed"),
            Self::Truncated => f.write_str("peer closed in the middle of a frame"),
            Self::Idle => f.write_str("idle timeout"),
            Self::Shutdown => f.write_str("server shutting down"),
            Self::Framing(error) => write!(f, "framing: {error}"),
            Self::ChannelDataFirst => f.write_str("ChannelData before any STUN message"),
            Self::Io(kind) => write!(f, "I/O: {kind}"),
        }
    }
}

/// One TCP or TLS client: frames its bytes for the core task, writes the core's frames.
struct Connection {
    client: Client,
    events: mpsc::Sender<ConnectionEvent>,
    frames: mpsc::Receiver<Vec<u8>>,
    stash: Vec<Vec<u8>>,
}

impl Connection {
    fn new(
        client: Client,
        events: mpsc::Sender<ConnectionEvent>,
        frames: mpsc::Receiver<Vec<u8>>,
    ) -> Self {
        Self {
            client,
            events,
            frames,
            stash: Vec::new(),
        }
    }

    async fn run<S: AsyncRead + AsyncWrite>(
        mut self,
        stream: S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Closed {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = vec![0u8; STREAM_BUFFER_LEN];
        let mut filled = 0;
        let mut deadline = tokio::time::Instant::now() + FIRST_FRAME_TIMEOUT;
        let mut first = true;
        loop {
            // Hand every complete frame to the core task.
            loop {
                if first && filled > 0 && channel_data::kind(&buf[..filled]) == Kind::ChannelData {
                    return Closed::ChannelDataFirst;
                }
                match frame_len(&buf[..filled], MAX_STREAM_FRAME_LEN) {
                    Ok(Some(len)) if len <= filled => {
                        let mut frame = self.stash.pop().unwrap_or_default();
                        frame.clear();
                        frame.extend_from_slice(&buf[..len]);
                        let event = ConnectionEvent::Frame {
                            client: self.client,
                            frame,
                        };
                        if self.events.send(event).await.is_err() {
                            return Closed::Shutdown;
                        }
                        buf.copy_within(len..filled, 0);
                        filled -= len;
                        first = false;
                        deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                    }
                    Ok(Some(len)) => {
                        if len > buf.len() {
                            buf.resize(len, 0);
                        }
                        break;
                    }
                    Ok(None) => break,
                    Err(error) => return Closed::Framing(error),
                }
            }
            tokio::select! {
                read = timeout_at(deadline, reader.read(&mut buf[filled..])) => match read {
                    Err(_) => return Closed::Idle,
                    Ok(Ok(0)) if filled == 0 => return Closed::Eof,
                    Ok(Ok(0)) => return Closed::Truncated,
                    Ok(Ok(n)) => filled += n,
                    Ok(Err(error)) => return Closed::Io(error.kind()),
                },
                Some(frame) = self.frames.recv() => {
                    // Flushing matters for TLS, which buffers records; for TCP it is free.
                    let write = async {
                        writer.write_all(&frame).await?;
                        writer.flush().await
                    };
                    match timeout(WRITE_TIMEOUT, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => return Closed::Io(error.kind()),
                        Err(_) => return Closed::Idle,
                    }
                    if self.stash.len() < CONNECTION_STASH {
                        self.stash.push(frame);
                    }
                }
                () = stopped(shutdown) => return Closed::Shutdown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_gathers_only_while_datagrams_come_fast() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        let mut now = start;
        // 2,000 datagrams per second: one every 500 µs, fewer than GATHER_MIN per GATHER.
        for _ in 0..40 {
            now += Duration::from_micros(500);
            assert!(!pace.gather(now, 1));
        }
        // 20,000 per second (10 per GATHER): from the next window on, it gathers.
        for _ in 0..20 {
            now += Duration::from_micros(500);
            pace.gather(now, 10);
        }
        now += Duration::from_micros(500);
        assert!(pace.gather(now, 10));
        // A turn that read nothing (a timer, a TCP frame) does not wait.
        assert!(!pace.gather(now, 0));
        // After a silence the first burst is read at once.
        now += Duration::from_secs(2);
        assert!(!pace.gather(now, 10));
    }

    #[test]
    fn log_budget_demotes_lines_past_its_limit_until_the_next_window() {
        let start = Instant::now();
        let mut budget = LogBudget::new("test", 2, start);
        assert!(budget.take(start));
        assert!(budget.take(start + Duration::from_secs(1)));
        assert!(!budget.take(start + Duration::from_secs(2)));
        assert!(!budget.take(start + Duration::from_secs(9)));
        assert_eq!(budget.demoted, 2);
        assert!(budget.take(start + LOG_WINDOW));
        assert_eq!(budget.demoted, 0);
    }

    #[test]
    fn ready_set_visits_each_marked_socket_once() {
        let ready = ReadySet::new(20_000);
        for index in [0, 63, 64, 4095, 4096, 19_999, 64] {
            ready.mark(index);
        }
        let mut seen = Vec::new();
        ready.drain(|index| seen.push(index));
        assert_eq!(seen, [0, 63, 64, 4095, 4096, 19_999]);
        ready.drain(|index| panic!("{index} visited twice"));
    }

    #[tokio::test]
    async fn batches_in_and_out() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let socket = Socket::from_std(socket).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        let total = switchboard_udp::SLOTS + 5;
        for i in 0..total {
            sender.send_to(&[i as u8; 3], addr).unwrap();
        }
        let mut incoming = switchboard_udp::Incoming::new(DATAGRAM_BUFFER_LEN);
        let mut got = Vec::new();
        for _ in 0..4 {
            timeout(Duration::from_secs(5), socket.readable())
                .await
                .unwrap()
                .unwrap();
            let (count, more) = socket.recv(&mut incoming).unwrap();
            for i in 0..count {
                let (data, sender) = incoming.get(i);
                assert_eq!(sender, from);
                got.push(data.to_vec());
            }
            if !more && got.len() == total {
                break;
            }
        }
        let expected: Vec<Vec<u8>> = (0..total).map(|i| vec![i as u8; 3]).collect();
        assert_eq!(got, expected);

        // Drained: the readiness is cleared, and comes back with the next datagram.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(socket.poll_read_ready(&mut cx).is_pending());

        let metrics = TurnMetrics::default();
        let mut outgoing = switchboard_udp::Outgoing::default();
        for i in 0..3u8 {
            outgoing.push(&[i; 5], from);
        }
        socket.send(&mut outgoing, &metrics);
        sender
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        for i in 0..3u8 {
            let (len, source) = sender.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..len], source), (&[i; 5][..], addr));
        }
        assert_eq!(metrics.send_failures.load(Ordering::Relaxed), 0);
    }
}
