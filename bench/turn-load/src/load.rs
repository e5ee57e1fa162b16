//! `run`: one bounded load run against one TURN server.
//!
//! 1. **Setup** (not measured): a UDP peer socket, then N allocations one after the other,
//!    each with a permission and a channel toward the peer (see `client`).
//! 2. **Load** (measured): a sender thread sends ChannelData round-robin over the
//!    allocations at a fixed total rate for a fixed time; a peer thread counts what the
//!    relays deliver and echoes it back to the relay it came from; a receiver thread (a
//!    single-threaded tokio runtime, one task per allocation) counts what comes back and
//!    records round-trip times. After the sending window, a short drain lets the last
//!    packets arrive; anything later counts as lost. With `--busy-poll`, one thread does
//!    all three, polling its sockets without sleeping.
//! 3. **Teardown**: every allocation is deleted (Refresh, lifetime 0).
//!
//! The server's CPU time is read from `/proc/PID/stat` at the start and the end of the
//! load phase, and the kernel's receive-buffer drop counters of the server's and our own
//! UDP sockets are read around it too, so a loss can be told apart from a slow load tool.
//!
//! Each data packet is a ChannelData message whose payload starts with a sequence number
//! and the send time (nanoseconds since the load phase began), padded to `--size` bytes.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;

use crate::client::{Allocation, Credentials};
use crate::report::{self, Report};

/// The first channel number; allocation `i` binds `FIRST_CHANNEL + i`.
const FIRST_CHANNEL: u16 = 0x4000;
/// The highest channel RFC 8656 allows, so at most 4096 allocations.
const LAST_CHANNEL: u16 = 0x4FFF;
/// ChannelData header.
const HEADER: usize = 4;
/// Sequence number and send time at the start of every payload.
const STAMP: usize = 16;
/// Receive buffer asked for on every socket of the tool; the kernel caps it at rmem_max.
const SOCKET_BUFFER: usize = 4 << 20;
/// How often the peer thread checks the clock while no packet arrives.
const PEER_POLL: Duration = Duration::from_millis(20);
/// The sender never sleeps less than this, so that it sends in small bursts rather than
/// burning a core on sub-microsecond sleeps.
const MIN_SLEEP: Duration = Duration::from_micros(200);

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The TURN server's UDP address (loopback only).
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    /// Long-term credential user name.
    #[arg(long, short = 'u')]
    user: String,
    /// Long-term credential password.
    #[arg(long, short = 'w')]
    password: String,
    /// Allocations (each with its own client socket, permission and channel).
    #[arg(long, default_value_t = 50)]
    allocations: u16,
    /// Total ChannelData packets per second sent by all clients together (client → peer;
    /// with the echo the server relays twice as many).
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Application bytes per packet (160 is typical audio, 1200 video).
    #[arg(long, default_value_t = 160)]
    size: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to wait for the last packets after sending stops.
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
    /// The peer counts but does not echo: one direction only.
    #[arg(long)]
    one_way: bool,
    /// Run the whole load (sending, the peer, receiving) in one thread that polls its
    /// sockets without ever sleeping. On loopback, the system call that sends a datagram
    /// also delivers it and wakes the receiver, so a server sending to a sleeping load tool
    /// pays for waking it (a cross-CPU interrupt when they are pinned apart), which a
    /// server sending over a network does not. Busy polling takes that cost off the
    /// server's bill; it burns a whole CPU of the load tool's, so use it only with the tool
    /// pinned away from the server.
    #[arg(long)]
    busy_poll: bool,
    /// IP of the peer socket (loopback; the server must allow it as a peer).
    #[arg(long, default_value = "127.0.0.1")]
    peer_ip: IpAddr,
    /// Label of the server in the results (e.g. `switchboard`, `coturn`).
    #[arg(long, default_value = "server")]
    label: String,
    /// Label of the scenario in the results [default: load-<size>B].
    #[arg(long)]
    scenario: Option<String>,
    /// Label of this run in the results.
    #[arg(long, default_value_t = 1)]
    run: u32,
    /// Process id of the server, for its CPU time.
    #[arg(long)]
    pid: Option<u32>,
}

impl RunArgs {
    fn validate(&self) -> Result<(), String> {
        if !self.server.ip().is_loopback() || !self.peer_ip.is_loopback() {
            return Err("--server and --peer-ip must be loopback addresses".into());
        }
        if self.server.ip().is_ipv4() != self.peer_ip.is_ipv4() {
            return Err("--server and --peer-ip must be of the same family".into());
        }
        let max_allocations = LAST_CHANNEL - FIRST_CHANNEL + 1;
        if !(1..=max_allocations).contains(&self.allocations) {
            return Err(format!(
                "--allocations must be between 1 and {max_allocations}"
            ));
        }
        if !(1..=1_000_000).contains(&self.rate) {
            return Err("--rate must be between 1 and 1000000 packets per second".into());
        }
        if !(STAMP..=8192).contains(&self.size) {
            return Err(format!("--size must be between {STAMP} and 8192 bytes"));
        }
        if !(0.1..=60.0).contains(&self.duration) {
            return Err("--duration must be between 0.1 and 60 seconds".into());
        }
        if !(0.0..=10.0).contains(&self.drain) {
            return Err("--drain must be between 0 and 10 seconds".into());
        }
        Ok(())
    }
}

/// What the sender did.
#[derive(Default)]
struct Sent {
    packets: u64,
    /// Sends the kernel refused (socket buffer full): never left the tool.
    errors: u64,
    /// From the start of the load phase to the last send.
    elapsed: Duration,
}

/// What the peer saw.
#[derive(Default)]
struct PeerCounts {
    received: u64,
    echo_errors: u64,
}

/// What came back to the clients.
struct Received {
    packets: u64,
    /// Datagrams that were not our ChannelData (wrong channel or length, STUN).
    unexpected: u64,
    errors: u64,
    rtt: hdrhistogram::Histogram<u64>,
}

pub fn run(args: RunArgs) -> Result<Report, String> {
    args.validate()?;
    let credentials = Credentials {
        username: args.user.clone(),
        password: args.password.clone(),
    };
    let peer = UdpSocket::bind((args.peer_ip, 0)).map_err(|e| format!("peer socket: {e}"))?;
    enlarge_buffers(&peer);
    let peer_addr = peer.local_addr().map_err(|e| format!("peer socket: {e}"))?;

    let setup_start = Instant::now();
    let mut allocations = Vec::with_capacity(usize::from(args.allocations));
    for i in 0..args.allocations {
        match Allocation::open(
            args.server,
            &credentials,
            peer_addr,
            FIRST_CHANNEL + i,
            u32::from(i),
        ) {
            Ok(allocation) => {
                enlarge_buffers(&allocation.socket);
                allocations.push(allocation);
            }
            Err(e) => {
                release(allocations);
                return Err(format!("allocation {i}: {e}"));
            }
        }
    }
    let setup = setup_start.elapsed();
    eprintln!(
        "turn-load: {} allocations on {} in {:.2} s (first relay {}), peer {peer_addr}",
        allocations.len(),
        args.server,
        setup.as_secs_f64(),
        allocations[0].relay,
    );

    let measured = measure(&args, &allocations, peer);
    let released = release(allocations);
    let (sent, peer_counts, received, readings) = measured?;

    let mut report = Report::default();
    report.text("tool", "turn-load");
    let scenario = args
        .scenario
        .clone()
        .unwrap_or_else(|| format!("load-{}B", args.size));
    report.text("scenario", &scenario);
    report.text("server", &args.label);
    report.int("run", u64::from(args.run));
    report.int("allocations", u64::from(args.allocations));
    report.int("rate", u64::from(args.rate));
    report.int("size", args.size as u64);
    report.text("mode", if args.one_way { "one-way" } else { "echo" });
    report.text("poll", if args.busy_poll { "busy" } else { "sleep" });
    let secs = sent.elapsed.as_secs_f64().max(1e-3);
    report.num("duration_s", secs);
    report.int("sent", sent.packets);
    report.int("peer_received", peer_counts.received);
    report.int("received", received.packets);
    let relayed = peer_counts.received + received.packets;
    report.int("relayed", relayed);
    report.num("relayed_pps", relayed as f64 / secs);
    let lost = |arrived: u64| {
        if sent.packets == 0 {
            0.0
        } else {
            100.0 * sent.packets.saturating_sub(arrived) as f64 / sent.packets as f64
        }
    };
    report.num("to_peer_loss_pct", lost(peer_counts.received));
    report.num(
        "loss_pct",
        lost(if args.one_way {
            peer_counts.received
        } else {
            received.packets
        }),
    );
    report.maybe("cpu_s", readings.server_cpu);
    let per_cpu = readings
        .server_cpu
        .filter(|cpu| *cpu > 0.0)
        .map(|cpu| relayed as f64 / cpu);
    report.maybe("cpu_s_per_mpkt", per_cpu.map(|rate| 1e6 / rate));
    report.maybe("pkts_per_cpu_s", per_cpu);
    report.rtt(&received.rtt);
    report.int("server_drops", readings.server_drops);
    report.int("tool_drops", readings.tool_drops);
    report.int("send_errors", sent.errors + peer_counts.echo_errors);
    report.int("unexpected", received.unexpected + received.errors);
    report.maybe("tool_cpu_s", readings.tool_cpu);
    report.int("released", released as u64);
    Ok(report)
}

/// Readings taken around the load phase.
struct Readings {
    server_cpu: Option<f64>,
    tool_cpu: Option<f64>,
    server_drops: u64,
    tool_drops: u64,
}

fn measure(
    args: &RunArgs,
    allocations: &[Allocation],
    peer: UdpSocket,
) -> Result<(Sent, PeerCounts, Received, Readings), String> {
    let mut server_ports = report::ports(allocations.iter().map(|a| &a.relay));
    server_ports.insert(args.server.port());
    let mut tool_ports: HashSet<u16> = allocations
        .iter()
        .filter_map(|a| a.socket.local_addr().ok())
        .map(|addr| addr.port())
        .collect();
    tool_ports.insert(peer.local_addr().map_err(|e| e.to_string())?.port());

    // One descriptor per allocation for the sender, one for the receiver task; both share
    // the non-blocking mode.
    let mut send_sockets = Vec::with_capacity(allocations.len());
    let mut recv_sockets = Vec::with_capacity(allocations.len());
    for allocation in allocations {
        allocation
            .socket
            .set_nonblocking(true)
            .map_err(|e| format!("socket mode: {e}"))?;
        let clone = |s: &UdpSocket| s.try_clone().map_err(|e| format!("socket clone: {e}"));
        send_sockets.push((clone(&allocation.socket)?, allocation.channel));
        recv_sockets.push((clone(&allocation.socket)?, allocation.channel));
    }

    let server_drops_before = report::udp_drops(&server_ports);
    let tool_drops_before = report::udp_drops(&tool_ports);
    let server_cpu_before = args.pid.and_then(report::cpu_seconds);
    let tool_cpu_before = report::own_cpu_seconds();

    let start = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let deadline = start + duration + Duration::from_secs_f64(args.drain);
    let (rate, size, echo) = (args.rate, args.size, !args.one_way);

    let (sent, peer_counts, received) = if args.busy_poll {
        drop(send_sockets);
        let pacer = Pacer::new(&recv_sockets, rate, size, start, duration);
        run_busy(pacer, &peer, echo, size, deadline)?
    } else {
        let peer_thread = thread::Builder::new()
            .name("peer".into())
            .spawn(move || run_peer(&peer, echo, deadline, size))
            .map_err(|e| format!("peer thread: {e}"))?;
        let sender = thread::Builder::new()
            .name("sender".into())
            .spawn(move || send(&send_sockets, rate, size, start, duration))
            .map_err(|e| format!("sender thread: {e}"))?;
        let received = receive(recv_sockets, size, start, deadline);
        let sent = sender.join().map_err(|_| "the sender thread panicked")?;
        let peer_counts = peer_thread.join().map_err(|_| "the peer thread panicked")?;
        (sent, peer_counts, received?)
    };

    let readings = Readings {
        server_cpu: report_delta(server_cpu_before, args.pid.and_then(report::cpu_seconds)),
        tool_cpu: report_delta(tool_cpu_before, report::own_cpu_seconds()),
        server_drops: report::udp_drops(&server_ports).saturating_sub(server_drops_before),
        tool_drops: report::udp_drops(&tool_ports).saturating_sub(tool_drops_before),
    };
    Ok((sent, peer_counts, received, readings))
}

fn report_delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

/// Deletes every allocation; returns how many the server confirmed.
fn release(allocations: Vec<Allocation>) -> usize {
    let mut confirmed = 0;
    for allocation in allocations {
        match allocation.release() {
            Ok(()) => confirmed += 1,
            Err(e) => eprintln!("turn-load: releasing an allocation: {e}"),
        }
    }
    confirmed
}

fn enlarge_buffers(socket: &UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
}

/// Paces the sending: `rate` packets per second round-robin over the sockets for
/// `duration`, each stamped with its sequence number and send time.
struct Pacer<'a> {
    sockets: &'a [(UdpSocket, u16)],
    rate: f64,
    total: u64,
    next: u64,
    packet: Vec<u8>,
    start: Instant,
    /// A sender that falls behind stops at the end of the window all the same.
    hard_stop: Instant,
    sent: Sent,
}

impl<'a> Pacer<'a> {
    fn new(
        sockets: &'a [(UdpSocket, u16)],
        rate: u32,
        size: usize,
        start: Instant,
        duration: Duration,
    ) -> Self {
        let mut packet = vec![0u8; HEADER + size];
        packet[2..4].copy_from_slice(&(size as u16).to_be_bytes());
        for (i, byte) in packet[HEADER + STAMP..].iter_mut().enumerate() {
            *byte = i as u8;
        }
        Self {
            sockets,
            rate: f64::from(rate),
            total: (f64::from(rate) * duration.as_secs_f64()).round() as u64,
            next: 0,
            packet,
            start,
            hard_stop: start + duration + Duration::from_millis(100),
            sent: Sent::default(),
        }
    }

    fn done(&self, now: Instant) -> bool {
        self.next >= self.total || now >= self.hard_stop
    }

    /// Sends every packet due by `now`.
    fn send_due(&mut self, now: Instant) {
        if self.done(now) {
            return;
        }
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let due = ((elapsed * self.rate) as u64 + 1).min(self.total);
        while self.next < due {
            let (socket, channel) = &self.sockets[(self.next % self.sockets.len() as u64) as usize];
            self.packet[0..2].copy_from_slice(&channel.to_be_bytes());
            self.packet[HEADER..HEADER + 8].copy_from_slice(&self.next.to_be_bytes());
            let stamp = self.start.elapsed().as_nanos() as u64;
            self.packet[HEADER + 8..HEADER + 16].copy_from_slice(&stamp.to_be_bytes());
            match socket.send(&self.packet) {
                Ok(_) => self.sent.packets += 1,
                Err(_) => self.sent.errors += 1,
            }
            self.next += 1;
        }
        self.sent.elapsed = self.start.elapsed();
    }

    /// When the next packet is due.
    fn next_at(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.next as f64 / self.rate)
    }
}

/// The sender thread: every wake-up sends the packets due by then, then it sleeps until the
/// next one is due.
fn send(
    sockets: &[(UdpSocket, u16)],
    rate: u32,
    size: usize,
    start: Instant,
    duration: Duration,
) -> Sent {
    let mut pacer = Pacer::new(sockets, rate, size, start, duration);
    loop {
        let now = Instant::now();
        if pacer.done(now) {
            break;
        }
        pacer.send_due(now);
        let wait = pacer.next_at().saturating_duration_since(Instant::now());
        thread::sleep(wait.max(MIN_SLEEP));
    }
    pacer.sent
}

/// The peer thread: counts what arrives and, with `echo`, sends it back where it came from.
fn run_peer(socket: &UdpSocket, echo: bool, deadline: Instant, size: usize) -> PeerCounts {
    let mut counts = PeerCounts::default();
    let mut buf = vec![0u8; size + 64];
    if socket.set_read_timeout(Some(PEER_POLL)).is_err() {
        return counts;
    }
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => counts.record(socket, &buf[..len], from, echo, size),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {}
        }
    }
    counts
}

impl PeerCounts {
    /// Counts one datagram at the peer and echoes it.
    fn record(
        &mut self,
        socket: &UdpSocket,
        datagram: &[u8],
        from: SocketAddr,
        echo: bool,
        size: usize,
    ) {
        if datagram.len() != size {
            return;
        }
        self.received += 1;
        if echo && socket.send_to(datagram, from).is_err() {
            self.echo_errors += 1;
        }
    }
}

/// `--busy-poll`: sending (through the pacer's client sockets), the peer and receiving in
/// this thread, polling non-blocking sockets in turn without ever sleeping, until the
/// deadline.
fn run_busy(
    mut pacer: Pacer<'_>,
    peer: &UdpSocket,
    echo: bool,
    size: usize,
    deadline: Instant,
) -> Result<(Sent, PeerCounts, Received), String> {
    peer.set_nonblocking(true)
        .map_err(|e| format!("peer socket mode: {e}"))?;
    let (clients, start) = (pacer.sockets, pacer.start);
    let mut peer_counts = PeerCounts::default();
    let mut received = Received {
        packets: 0,
        unexpected: 0,
        errors: 0,
        rtt: report::new_histogram(),
    };
    let mut buf = vec![0u8; HEADER + size + 64];
    let headers: Vec<[u8; HEADER]> = clients
        .iter()
        .map(|(_, channel)| expected_header(*channel, size))
        .collect();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        pacer.send_due(now);
        loop {
            match peer.recv_from(&mut buf) {
                Ok((len, from)) => peer_counts.record(peer, &buf[..len], from, echo, size),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {}
            }
        }
        for ((socket, _), header) in clients.iter().zip(&headers) {
            loop {
                match socket.recv(&mut buf) {
                    Ok(len) => received.record(&buf[..len], header, start),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => received.errors += 1,
                }
            }
        }
    }
    Ok((pacer.sent, peer_counts, received))
}

/// The ChannelData header every packet coming back on `channel` must carry.
fn expected_header(channel: u16, size: usize) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[..2].copy_from_slice(&channel.to_be_bytes());
    header[2..].copy_from_slice(&(size as u16).to_be_bytes());
    header
}

impl Received {
    /// Counts one datagram that came back, with its round-trip time.
    fn record(&mut self, datagram: &[u8], header: &[u8; HEADER], start: Instant) {
        if datagram.len() < HEADER + STAMP || datagram[..HEADER] != header[..] {
            self.unexpected += 1;
            return;
        }
        self.packets += 1;
        let stamp = &datagram[HEADER + 8..HEADER + 16];
        let sent_ns = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
        let now_ns = start.elapsed().as_nanos() as u64;
        let rtt_us = now_ns.saturating_sub(sent_ns) / 1000;
        let _ = self.rtt.record(rtt_us.max(1));
    }
}

/// Receives on every client socket until the deadline, on a single-threaded runtime.
fn receive(
    sockets: Vec<(UdpSocket, u16)>,
    size: usize,
    start: Instant,
    deadline: Instant,
) -> Result<Received, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let totals = Rc::new(RefCell::new(Received {
        packets: 0,
        unexpected: 0,
        errors: 0,
        rtt: report::new_histogram(),
    }));
    let local = tokio::task::LocalSet::new();
    let deadline = tokio::time::Instant::from_std(deadline);
    local.block_on(&runtime, async {
        let mut tasks = Vec::with_capacity(sockets.len());
        for (socket, channel) in sockets {
            let socket = tokio::net::UdpSocket::from_std(socket)
                .map_err(|e| format!("receive socket: {e}"))?;
            tasks.push(tokio::task::spawn_local(receive_on(
                socket,
                channel,
                size,
                start,
                deadline,
                totals.clone(),
            )));
        }
        for task in tasks {
            let _ = task.await;
        }
        Ok::<_, String>(())
    })?;
    drop(local);
    Rc::try_unwrap(totals)
        .map(RefCell::into_inner)
        .map_err(|_| "receive tasks outlived the runtime".into())
}

async fn receive_on(
    socket: tokio::net::UdpSocket,
    channel: u16,
    size: usize,
    start: Instant,
    deadline: tokio::time::Instant,
    totals: Rc<RefCell<Received>>,
) {
    let mut buf = vec![0u8; HEADER + size + 64];
    let header = expected_header(channel, size);
    loop {
        match tokio::time::timeout_at(deadline, socket.readable()).await {
            Err(_) => return,
            Ok(Err(_)) => return,
            Ok(Ok(())) => {}
        }
        // Take everything queued before waiting again.
        let mut totals = totals.borrow_mut();
        loop {
            match socket.try_recv(&mut buf) {
                Ok(len) => totals.record(&buf[..len], &header, start),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors from an earlier send; the next read goes on.
                Err(_) => totals.errors += 1,
            }
        }
    }
}
