//! The worker: one tokio task that owns one UDP socket (and, with ICE over TCP on, a TCP
//! listener on the same port with its connections; see [`crate::tcp`]), every str0m [`Rtc`] of
//! its rooms and the [`Router`]. It moves packets in and out, drives str0m's timers, and
//! forwards media between sessions as the router decides.
//!
//! Nothing here is shared: the signaling side talks to the worker through the handles in
//! [`crate::api`] (commands over a bounded channel) and hears back through
//! [`SfuEvent`]s. So the media path takes no lock.
//!
//! The loop, in order: wait for a command, a readable socket, a TCP connection to accept or
//! read, or the earliest deadline; feed what arrived (a datagram goes to the session that
//! [`Rtc::accepts`] it, found by its source address, or from a new address by the ICE username
//! fragment in its STUN check; a TCP frame to the session its connection's first ICE check
//! named); fire due timeouts; then drain every session touched ("dirty") until str0m reports
//! its next timeout, sending what it transmits and acting on its events, and write what was
//! queued for TCP connections. Media frames are written to each
//! subscriber's `Rtc` sharing the same `Arc<[u8]>` payload, so forwarding copies no media.
//!
//! Data channels: a message on a channel a participant opened is written, as it came, to
//! every other connected participant of its room whose offer had data channels, on the
//! channel relaying it in that session (`<sender label>/<label>`, opened on the first message;
//! messages wait, bounded, until it is open). The only copy is str0m's own into its send
//! buffer, capped per session, so a receiver that cannot keep up loses messages (counted)
//! rather than growing the worker. See [`crate::channels`].
//!
//! Quality: every session has str0m's bandwidth estimation on; its estimates go to the router,
//! which chooses the simulcast layers each subscriber gets and tells each session's congestion
//! control what to probe for. Frames feed the router's bitrate meters, VP8 keyframe sizes and
//! RFC 6464 audio levels (dominant speaker). They are written with the publisher's capture
//! time and, across layer switches, continuous RTP timestamps ([`crate::sync`]), so the sender
//! reports str0m makes for each subscriber keep audio and video in sync. The audio level,
//! talkspurt marker and video orientation of each frame go along with it. Lost packets are
//! str0m's business: it asks publishers for them (NACK) and answers subscribers' NACKs from
//! its send buffer (RTX where negotiated).
//!
//! It never blocks on a client: a full socket buffer drops the datagram (UDP may), a TCP
//! connection that cannot take what its session sends is closed, a full event queue drops the
//! event and counts it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::{ChannelConfig, ChannelData, ChannelId};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::Codec;
use str0m::ice::StunMessage;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, Mid};
use str0m::net::{DatagramRecv, Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use switchboard_udp::{Incoming, Outgoing};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, warn};

use crate::api::{Command, ParticipantSnapshot, RoomSnapshot, SfuEvent, WorkerConfig, WorkerStats};
use crate::channels::{self, MAX_CHANNEL_LABEL, Route};
use crate::client::Client;
use crate::error::{RouteError, SdpError, SfuError};
use crate::ids::{LeaveReason, ParticipantId, RoomId, TrackSource};
use crate::quality::vp8_keyframe_size;
use crate::router::{Router, RouterOutput};
use crate::sdp;
use crate::tcp::{self, CloseReason, FrameTooLong, Sent, Tcp, TcpLimits};

/// Largest datagram read from the socket; WebRTC stays under ~1200 bytes.
const RECV_BUF: usize = 2048;
/// Datagrams read per wake-up before timers and commands get a turn.
const RECV_BATCH: usize = 64;
/// Due timeouts a session's poll serves in one go; more wait for the next turn, so that a
/// session whose deadlines keep falling due cannot hold the loop.
const MAX_DUE_TIMEOUTS: usize = 8;
/// Wait before offering again when an offer could not be delivered.
const OFFER_RETRY: Duration = Duration::from_millis(250);
/// Longest sleep when no deadline is due.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// How often sender reports go out for audio (video's are str0m's default, 1 s, too).
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Tries at finding a port free for both UDP and TCP when the port is left to the system.
const BIND_ATTEMPTS: usize = 8;

/// Binds the media sockets, builds the worker and starts its task on the current runtime.
/// Returns the bound and the announced address, and the TCP listener's.
pub(crate) async fn start(
    config: WorkerConfig,
    events: mpsc::Sender<SfuEvent>,
    commands: mpsc::Receiver<Command>,
) -> Result<(SocketAddr, SocketAddr, Option<SocketAddr>), SfuError> {
    if !config.udp && !config.tcp {
        return Err(SfuError::Config(
            "neither UDP nor TCP is on: no candidate to announce",
        ));
    }
    let (socket, listener) = bind(&config).await?;
    let sock = socket2::SockRef::from(&socket);
    if let Err(e) = sock
        .set_recv_buffer_size(config.socket_buffer)
        .and_then(|()| sock.set_send_buffer_size(config.socket_buffer))
    {
        warn!("media socket buffer size not set: {e}");
    }
    let bound = socket.local_addr()?;
    let ip = match config.public_ip {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => {
            return Err(SfuError::Config(
                "the media socket binds an unspecified address: set public_ip",
            ));
        }
        None => bound.ip(),
    };
    let announced = SocketAddr::new(ip, bound.port());
    let unusable = |_| SfuError::Config("the announced address is not a usable ICE candidate");
    let mut candidates = Vec::new();
    if config.udp {
        candidates.push(Candidate::host(announced, "udp").map_err(unusable)?);
    }
    if listener.is_some() {
        // Passive: the client connects. str0m gives a TCP host candidate a lower type
        // preference than a UDP one, so ICE picks UDP whenever both work.
        let tcp = Candidate::builder()
            .tcp()
            .host(announced)
            .tcptype(TcpType::Passive)
            .build()
            .map_err(unusable)?;
        candidates.push(tcp);
    }
    let tcp_addr = match &listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let tcp = listener.map(|l| {
        Tcp::new(
            l,
            TcpLimits {
                max_connections: config.tcp_max_connections,
                max_pending: config.tcp_max_pending,
                pending_timeout: config.tcp_pending_timeout,
                send_buffer: config.tcp_send_buffer,
                socket_buffer: config.socket_buffer,
            },
        )
    });
    let crypto = Arc::new(str0m::crypto::from_feature_flags());
    let cert = crypto
        .dtls_provider
        .generate_certificate()
        .ok_or(SfuError::Config("could not generate a DTLS certificate"))?;

    let worker = Worker {
        socket,
        outgoing: Outgoing::default(),
        announced,
        candidates,
        tcp,
        tcp_ready: Vec::new(),
        accept_paused_until: None,
        crypto,
        cert,
        router: Router::with_quality(config.limits.clone(), config.quality.clone()),
        config,
        clients: HashMap::new(),
        by_addr: HashMap::new(),
        by_ufrag: HashMap::new(),
        dirty: Vec::new(),
        expired: Vec::new(),
        next_wake: Instant::now(),
        events,
        commands,
        stats: WorkerStats::default(),
    };
    let span = tracing::info_span!("sfu_worker", addr = %announced);
    tokio::spawn(worker.run().instrument(span));
    info!(%bound, %announced, tcp = tcp_addr.is_some(), "SFU worker started");
    Ok((bound, announced, tcp_addr))
}

/// Binds the UDP socket and, with TCP on, a TCP listener on the same IP and port.
async fn bind(config: &WorkerConfig) -> Result<(UdpSocket, Option<TcpListener>), SfuError> {
    if !config.tcp {
        return Ok((UdpSocket::bind(config.bind).await?, None));
    }
    // A port the system picked for UDP may be taken for TCP: then try another.
    let attempts = if config.bind.port() == 0 {
        BIND_ATTEMPTS
    } else {
        1
    };
    let mut attempt = 1;
    loop {
        let socket = UdpSocket::bind(config.bind).await?;
        match TcpListener::bind(socket.local_addr()?).await {
            Ok(listener) => return Ok((socket, Some(listener))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < attempts => {
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    Readable(io::Result<()>),
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    TcpReady,
    Timer,
}

/// The next connection to the listener, if there is one.
async fn accept(tcp: Option<&Tcp>) -> io::Result<(TcpStream, SocketAddr)> {
    match tcp {
        Some(tcp) => tcp.accept().await,
        None => std::future::pending().await,
    }
}

/// Resolves when a TCP connection may be readable or writable.
async fn tcp_ready(tcp: Option<&Tcp>) {
    match tcp {
        Some(tcp) => tcp.ready().await,
        None => std::future::pending().await,
    }
}

struct Worker {
    socket: UdpSocket,
    /// Datagrams the sessions transmitted, sent in batches (`sendmmsg`): whenever a batch
    /// is full, and at the end of every turn of the loop.
    outgoing: Outgoing,
    /// The candidates' address; also the `destination` of every received packet.
    announced: SocketAddr,
    /// Every session's local candidates: UDP and passive TCP host candidates, as configured.
    candidates: Vec<Candidate>,
    /// The TCP listener and its connections, when ICE over TCP is on.
    tcp: Option<Tcp>,
    /// Scratch list of TCP connection slots marked ready.
    tcp_ready: Vec<usize>,
    /// No `accept` until then, after one failed.
    accept_paused_until: Option<Instant>,
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    config: WorkerConfig,
    router: Router,
    clients: HashMap<ParticipantId, Client>,
    /// Source address → session, learnt from datagrams a session accepted.
    by_addr: HashMap<SocketAddr, ParticipantId>,
    /// Our ICE username fragment → session, for STUN checks from addresses not seen yet.
    by_ufrag: HashMap<String, ParticipantId>,
    /// Sessions to poll before sleeping.
    dirty: Vec<ParticipantId>,
    /// Scratch list of sessions past their connect or idle deadline.
    expired: Vec<ParticipantId>,
    /// The earliest session deadline (str0m timeout, connect or idle deadline). Maybe early
    /// (a deadline moved later), never late: session deadlines are scanned only when it
    /// passes, so a busy worker does not walk every session for every datagram.
    next_wake: Instant,
    events: mpsc::Sender<SfuEvent>,
    commands: mpsc::Receiver<Command>,
    stats: WorkerStats,
}

impl Worker {
    async fn run(mut self) {
        let mut incoming = Incoming::new(RECV_BUF);
        loop {
            let deadline = self.next_deadline();
            let accepting = self.accept_paused_until.is_none();
            let wake = tokio::select! {
                cmd = self.commands.recv() => Wake::Command(cmd),
                ready = self.socket.readable() => Wake::Readable(ready),
                conn = accept(self.tcp.as_ref()), if accepting => Wake::Accepted(conn),
                () = tcp_ready(self.tcp.as_ref()) => Wake::TcpReady,
                () = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            match wake {
                Wake::Command(None) => break,
                Wake::Command(Some(cmd)) => self.handle_command(cmd, Instant::now()),
                Wake::Readable(Ok(())) => self.read_socket(&mut incoming),
                Wake::Readable(Err(e)) => warn!("media socket: {e}"),
                Wake::Accepted(Ok((stream, remote))) => {
                    self.accept_tcp(stream, remote, Instant::now());
                }
                Wake::Accepted(Err(e)) => {
                    warn!("TCP accept: {e}");
                    let until = Instant::now() + ACCEPT_BACKOFF;
                    self.accept_paused_until = Some(until);
                    self.wake_by(until);
                }
                Wake::TcpReady => self.read_tcp_ready(Instant::now()),
                Wake::Timer => {}
            }
            let now = Instant::now();
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
            }
            self.handle_timeouts(now);
            self.drain(now);
            self.send_udp();
            if let Some(tcp) = self.tcp.as_mut() {
                tcp.flush();
            }
        }
        info!("SFU worker stopped");
    }

    /// When the loop must wake next: the earliest session deadline known, or the router's.
    fn next_deadline(&self) -> Instant {
        match self.router.poll_timeout() {
            Some(t) => self.next_wake.min(t),
            None => self.next_wake,
        }
    }

    /// Makes sure the loop wakes by `at`.
    fn wake_by(&mut self, at: Instant) {
        self.next_wake = self.next_wake.min(at);
    }

    // ---- commands -------------------------------------------------------------------------

    fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Join {
                room,
                participant,
                label,
                reply,
            } => {
                let result = self.join(room, participant, label, now);
                let _ = reply.send(result);
            }
            Command::AcceptOffer {
                participant,
                sdp,
                sources,
                reply,
            } => {
                let result = self.accept_offer(participant, &sdp, sources, now);
                if let Err(e) = &result {
                    debug!(%participant, "offer refused: {e}");
                }
                let _ = reply.send(result);
            }
            Command::AcceptAnswer {
                participant,
                sdp,
                reply,
            } => {
                let result = self.accept_answer(participant, &sdp, now);
                if let Err(e) = &result {
                    debug!(%participant, "answer refused: {e}");
                }
                let _ = reply.send(result);
            }
            Command::SelectLayer {
                participant,
                track,
                rid,
                reply,
            } => {
                let result = self.router.select_layer(participant, track, rid, now);
                let _ = reply.send(result.map_err(SfuError::from));
            }
            Command::SetReceiving {
                participant,
                track,
                receive,
                reply,
            } => {
                let result = self.router.set_receiving(participant, track, receive, now);
                let _ = reply.send(result.map_err(SfuError::from));
            }
            Command::SetMaxResolution {
                participant,
                track,
                width,
                height,
                reply,
            } => {
                let result = self
                    .router
                    .set_max_resolution(participant, track, width, height, now);
                let _ = reply.send(result.map_err(SfuError::from));
            }
            Command::SetView {
                participant,
                mid,
                width,
                height,
                reply,
            } => {
                let result = match self.router.track_by_out_mid(participant, mid) {
                    Some(track) => self
                        .router
                        .set_max_resolution(participant, track, width, height, now)
                        .map_err(SfuError::from),
                    None => Err(SfuError::Route(RouteError::UnknownMid(mid))),
                };
                let _ = reply.send(result);
            }
            Command::SetSource {
                participant,
                track,
                source,
                reply,
            } => {
                let result = match self.router.track(track) {
                    Some(info) if info.publisher == participant => {
                        self.router.set_source(track, source)
                    }
                    _ => Err(RouteError::UnknownTrack(track)),
                };
                let _ = reply.send(result.map_err(SfuError::from));
            }
            Command::Leave { participant } => self.remove_client(participant, LeaveReason::Left),
            Command::Stats { reply } => {
                let mut stats = self.stats;
                stats.router = self.router.stats();
                stats.connected = self.clients.values().filter(|c| c.connected).count();
                stats.tcp_connections = self.tcp.as_ref().map_or(0, Tcp::open);
                let _ = reply.send(stats);
            }
            Command::Rooms { reply } => {
                let _ = reply.send(self.rooms(now));
            }
        }
    }

    fn rooms(&self, now: Instant) -> Vec<RoomSnapshot> {
        let mut rooms: BTreeMap<&RoomId, Vec<ParticipantSnapshot>> = BTreeMap::new();
        for c in self.clients.values() {
            let published = self
                .router
                .published_by(c.id)
                .iter()
                .filter_map(|&t| self.router.track(t).cloned())
                .collect();
            rooms.entry(&c.room).or_default().push(ParticipantSnapshot {
                id: c.id,
                connected: c.connected,
                published,
                subscribed: self.router.subscribed_by(c.id),
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                audio_level: self.router.audio_level(c.id, now),
                bandwidth_estimate: self.router.estimate(c.id),
            });
        }
        rooms
            .into_iter()
            .map(|(room, mut participants)| {
                participants.sort_by_key(|p| p.id);
                RoomSnapshot {
                    room: room.clone(),
                    participants,
                }
            })
            .collect()
    }

    fn join(
        &mut self,
        room: RoomId,
        participant: ParticipantId,
        label: Arc<str>,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.router.join(room.clone(), participant)?;
        let client = Client::new(participant, room, label, now, self.config.connect_timeout);
        self.wake_by(client.connect_deadline);
        debug!(%participant, label = %client.label, "joined");
        self.clients.insert(participant, client);
        Ok(())
    }

    /// A session for a participant, with its own ICE credentials.
    fn new_rtc(&self, now: Instant) -> (Rtc, String) {
        let quality = &self.config.quality;
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds)
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .set_sctp_max_buffered_amount(channels::SEND_BUFFER)
            .enable_bwe(
                quality
                    .bandwidth_estimation
                    .then(|| Bitrate::bps(quality.initial_estimate)),
            )
            // Browsers sync audio to video from sender reports; str0m's default for audio
            // (5 s) would leave a new subscriber out of sync for several seconds.
            .set_rtcp_report_interval_audio(SENDER_REPORT_INTERVAL)
            .build(now);
        for candidate in &self.candidates {
            rtc.add_local_candidate(candidate.clone());
        }
        (rtc, ufrag)
    }

    fn accept_offer(
        &mut self,
        participant: ParticipantId,
        sdp: &str,
        sources: Vec<(Mid, TrackSource)>,
        now: Instant,
    ) -> Result<String, SfuError> {
        if !self.clients.contains_key(&participant) {
            return Err(RouteError::UnknownParticipant(participant).into());
        }
        let summary = sdp::check_offer(sdp)?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SdpError::Invalid(e.to_string()))?;
        let fresh = self.clients[&participant]
            .rtc
            .is_none()
            .then(|| self.new_rtc(now));
        let client = self
            .clients
            .get_mut(&participant)
            .ok_or(RouteError::UnknownParticipant(participant))?;
        let is_fresh = fresh.is_some();
        if let Some((rtc, ufrag)) = fresh {
            client.rtc = Some(rtc);
            client.ufrag.clone_from(&ufrag);
            self.by_ufrag.insert(ufrag, participant);
        }
        let rtc = client.rtc.as_mut().ok_or(SdpError::NoSession)?;
        match rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                // An ICE restart from the client (e.g. it changed networks) gives the session
                // new credentials: checks from its new address carry the new fragment.
                let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
                if ufrag != client.ufrag {
                    self.by_ufrag.remove(&client.ufrag);
                    self.by_ufrag.insert(ufrag.clone(), participant);
                    client.ufrag = ufrag;
                }
                client.offer_crossed();
                client.data.negotiated = summary.data_channels;
                // Sources for tracks already published apply now, before any subscriber's
                // offer names their stream; the others when str0m reports the m-line.
                client.declared_sources.clear();
                for (mid, source) in sources {
                    match self.router.track_by_mid(participant, mid) {
                        Some(track) => match self.router.track(track) {
                            Some(info) if info.kind == source.kind() => {
                                let _ = self.router.set_source(track, source);
                            }
                            _ => debug!(%participant, %mid, %source, "source ignored: wrong kind"),
                        },
                        None => client.declared_sources.push((mid, source)),
                    }
                }
                self.mark_dirty(participant);
                Ok(answer.to_sdp_string())
            }
            Err(e) => {
                if is_fresh {
                    client.rtc = None;
                    self.by_ufrag.remove(&client.ufrag);
                } else {
                    self.mark_dirty(participant);
                }
                Err(SdpError::Rejected(e.to_string()).into())
            }
        }
    }

    fn accept_answer(
        &mut self,
        participant: ParticipantId,
        sdp: &str,
        now: Instant,
    ) -> Result<(), SfuError> {
        let client = self
            .clients
            .get_mut(&participant)
            .ok_or(RouteError::UnknownParticipant(participant))?;
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SdpError::Invalid(e.to_string()))?;
        if client.rtc.is_none() {
            return Err(SdpError::NoSession.into());
        }
        let pending = client.take_pending().ok_or(SdpError::NoPendingOffer)?;
        let rtc = client.rtc.as_mut().ok_or(SdpError::NoSession)?;
        match rtc.sdp_api().accept_answer(pending, answer) {
            Ok(()) => {
                for (track, mid) in client.answer_accepted() {
                    if self
                        .router
                        .subscription_ready(participant, track, mid, now)
                        .is_err()
                    {
                        // The track went while its m-line was negotiated.
                        client.stop_later(mid);
                    }
                }
            }
            Err(e) => {
                client.requeue();
                self.mark_dirty(participant);
                return Err(SdpError::Rejected(e.to_string()).into());
            }
        }
        self.mark_dirty(participant);
        Ok(())
    }

    fn remove_client(&mut self, participant: ParticipantId, reason: LeaveReason) {
        let Some(client) = self.clients.remove(&participant) else {
            return;
        };
        for addr in &client.addrs {
            if self.by_addr.get(addr) == Some(&participant) {
                self.by_addr.remove(addr);
            }
        }
        self.by_ufrag.remove(&client.ufrag);
        if let Some(tcp) = self.tcp.as_mut() {
            tcp.close_owned_by(participant);
        }
        // Its channels relayed to the others close with it.
        self.close_relays(participant, &client.room, None);
        let _ = self.router.leave(participant);
        info!(%participant, room = %client.room, ?reason, "left");
        emit(
            &self.events,
            &mut self.stats,
            SfuEvent::Left {
                participant,
                reason,
            },
        );
    }

    // ---- network input --------------------------------------------------------------------

    /// Reads up to [`RECV_BATCH`] datagrams, a batch per system call, and hands each to its
    /// session.
    fn read_socket(&mut self, incoming: &mut Incoming) {
        for _ in 0..RECV_BATCH.div_ceil(switchboard_udp::SLOTS) {
            let mut received = (0, false);
            // tokio forgets the socket's readiness only on `WouldBlock` inside `try_io`: a
            // short batch means the queue ran dry, so say so, and the next wait is for new
            // datagrams instead of a read that would find none.
            let result = self.socket.try_io(Interest::READABLE, || {
                received = incoming.recv(&self.socket)?;
                if received.1 {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            let now = Instant::now();
            for i in 0..received.0 {
                let (data, source) = incoming.get(i);
                self.handle_datagram(data, source, now);
            }
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors (e.g. port unreachable) surface here on some systems; the
                // datagrams behind them are still to be read.
                Err(e) => debug!("media socket receive: {e}"),
            }
        }
    }

    /// Sends the datagrams gathered so far; those the socket cannot take are dropped.
    fn send_udp(&mut self) {
        self.stats.send_errors += self.outgoing.send(&self.socket) as u64;
    }

    fn handle_datagram(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        self.stats.datagrams_in += 1;
        let Ok(contents) = DatagramRecv::try_from(data) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.announced,
                contents,
            },
        );
        let known = self.by_addr.get(&source).copied().filter(|id| {
            self.clients
                .get(id)
                .and_then(|c| c.rtc.as_ref())
                .is_some_and(|rtc| rtc.accepts(&input))
        });
        // A new address must start with an ICE check naming one of our sessions.
        let target = known.or_else(|| {
            let id = *self.by_ufrag.get(stun_local_ufrag(data)?)?;
            let rtc = self.clients.get(&id)?.rtc.as_ref()?;
            rtc.accepts(&input).then_some(id)
        });
        let Some(id) = target else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        if known.is_none()
            && let Some(client) = self.clients.get_mut(&id)
        {
            if let Some(evicted) = client.remember_addr(source) {
                self.by_addr.remove(&evicted);
            }
            self.by_addr.insert(source, id);
        }
        self.deliver(id, input, data.len(), now);
    }

    /// Hands a packet that session `id` accepts to its `Rtc`.
    fn deliver(&mut self, id: ParticipantId, input: Input, len: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.last_input = now;
        client.bytes_in += len as u64;
        if let Some(rtc) = client.rtc.as_mut()
            && let Err(e) = rtc.handle_input(input)
        {
            // A bad packet from the client's address; str0m closes the session if it is
            // fatal, which the next poll notices.
            debug!(participant = %id, "input refused: {e}");
            self.stats.datagrams_dropped += 1;
        }
        self.mark_dirty(id);
    }

    // ---- TCP ------------------------------------------------------------------------------

    fn accept_tcp(&mut self, stream: TcpStream, remote: SocketAddr, now: Instant) {
        let Some(tcp) = self.tcp.as_mut() else {
            return;
        };
        match tcp.add(stream, remote, now) {
            Some(deadline) => {
                self.stats.tcp_accepted += 1;
                self.wake_by(deadline);
                debug!(%remote, "TCP connection accepted");
            }
            None => {
                self.stats.tcp_refused += 1;
                debug!(%remote, "TCP connection refused: too many");
            }
        }
    }

    /// Reads every TCP connection whose waker fired, and writes to those that can take the
    /// output they were waiting with.
    fn read_tcp_ready(&mut self, now: Instant) {
        let mut slots = std::mem::take(&mut self.tcp_ready);
        if let Some(tcp) = self.tcp.as_ref() {
            tcp.take_ready(&mut slots);
        }
        for &slot in &slots {
            self.read_tcp(slot, now);
            let Some(tcp) = self.tcp.as_mut() else {
                break;
            };
            if tcp.has_output(slot) && tcp.write(slot).is_err() {
                self.close_tcp(slot, CloseReason::Gone);
            }
        }
        slots.clear();
        self.tcp_ready = slots;
    }

    /// Reads one connection until it has nothing more (or has had its turn), handing each
    /// frame to its session.
    fn read_tcp(&mut self, slot: usize, now: Instant) {
        let mut reads = 0;
        loop {
            let Some(tcp) = self.tcp.as_mut() else {
                return;
            };
            match tcp.read(slot, &mut reads) {
                Ok(true) => {}
                Ok(false) => return,
                Err(()) => {
                    self.close_tcp(slot, CloseReason::Gone);
                    return;
                }
            }
            if !self.take_tcp_frames(slot, now) {
                return;
            }
        }
    }

    /// Hands every complete frame the connection in `slot` has read to its session; `false`
    /// if the connection was closed meanwhile.
    fn take_tcp_frames(&mut self, slot: usize, now: Instant) -> bool {
        let Some(tcp) = self.tcp.as_mut() else {
            return false;
        };
        let serial = tcp.serial(slot);
        // Taken out (an empty reader allocates nothing) so frames can be borrowed from it
        // while the worker handles them.
        let Some(conn) = tcp.get_mut(slot) else {
            return false;
        };
        let mut reader = std::mem::take(&mut conn.reader);
        let open = loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    if !self.handle_tcp_frame(slot, frame, now) {
                        break false;
                    }
                }
                Ok(None) => break true,
                Err(FrameTooLong(len)) => {
                    debug!(len, "TCP frame too long: connection closed");
                    self.stats.datagrams_dropped += 1;
                    self.close_tcp(slot, CloseReason::Invalid);
                    break false;
                }
            }
        };
        match self.tcp.as_mut() {
            Some(tcp) if open && tcp.serial(slot) == serial => {
                if let Some(conn) = tcp.get_mut(slot) {
                    conn.reader = reader;
                }
                true
            }
            _ => false,
        }
    }

    /// One frame from the connection in `slot`. A pending connection's first frame must be an
    /// ICE check that a session accepts: the connection then belongs to that session (its
    /// later frames go there, checked by [`Rtc::accepts`] as datagrams are); anything else
    /// closes it. Returns whether the connection is still open.
    fn handle_tcp_frame(&mut self, slot: usize, frame: &[u8], now: Instant) -> bool {
        self.stats.datagrams_in += 1;
        let Some(conn) = self.tcp.as_ref().and_then(|tcp| tcp.get(slot)) else {
            return false;
        };
        let (source, owner) = (conn.remote, conn.owner);
        if frame.is_empty() {
            // RFC 4571 gives an empty frame no meaning: skipped, and it proves nothing.
            return true;
        }
        let target = DatagramRecv::try_from(frame).ok().and_then(|contents| {
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Tcp,
                    source,
                    destination: self.announced,
                    contents,
                },
            );
            let id = match owner {
                Some(id) => id,
                None => *self.by_ufrag.get(stun_local_ufrag(frame)?)?,
            };
            let rtc = self.clients.get(&id)?.rtc.as_ref()?;
            rtc.accepts(&input).then_some((id, input))
        });
        let Some((id, input)) = target else {
            self.stats.datagrams_dropped += 1;
            if owner.is_none() {
                debug!(%source, "TCP connection closed: its first frame is no ICE check for a session");
                self.close_tcp(slot, CloseReason::Invalid);
                return false;
            }
            return true;
        };
        let Some(tcp) = self.tcp.as_mut() else {
            return false;
        };
        if owner.is_none() {
            if tcp.held_by(id) >= tcp::MAX_PER_SESSION {
                debug!(%source, participant = %id, "TCP connection closed: the session holds enough");
                self.close_tcp(slot, CloseReason::Invalid);
                return false;
            }
            tcp.bind(slot, id);
            debug!(%source, participant = %id, "TCP connection bound");
        }
        self.deliver(id, input, frame.len(), now);
        true
    }

    fn close_tcp(&mut self, slot: usize, reason: CloseReason) {
        let Some(conn) = self.tcp.as_mut().and_then(|tcp| tcp.close(slot)) else {
            return;
        };
        count_tcp_close(&mut self.stats, reason);
        debug!(remote = %conn.remote, participant = ?conn.owner, ?reason, "TCP connection closed");
    }

    fn handle_timeouts(&mut self, now: Instant) {
        self.router.handle_timeout(now);
        if now < self.next_wake {
            return;
        }
        let mut next_wake = now + IDLE_WAKE;
        self.expired.clear();
        for c in self.clients.values_mut() {
            let deadline = if c.connected {
                c.last_input + self.config.idle_timeout
            } else {
                c.connect_deadline
            };
            if now >= deadline {
                self.expired.push(c.id);
                continue;
            }
            next_wake = next_wake.min(deadline);
            match c.offer_retry_at {
                Some(t) if t <= now && !c.dirty => {
                    c.dirty = true;
                    self.dirty.push(c.id);
                }
                Some(t) => next_wake = next_wake.min(t),
                None => {}
            }
            match c.next_timeout {
                Some(t) if t <= now => {
                    // Polling the session sets its next timeout again.
                    c.next_timeout = None;
                    if let Some(rtc) = c.rtc.as_mut()
                        && let Err(e) = rtc.handle_input(Input::Timeout(now))
                    {
                        debug!(participant = %c.id, "timeout input: {e}");
                    }
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(c.id);
                    }
                }
                Some(t) => next_wake = next_wake.min(t),
                None => {}
            }
        }
        if let Some(tcp) = self.tcp.as_mut() {
            let stats = &mut self.stats;
            let next = tcp.expire(now, |conn| {
                count_tcp_close(stats, CloseReason::Timeout);
                debug!(remote = %conn.remote, participant = ?conn.owner, "TCP connection timed out");
            });
            if let Some(t) = next {
                next_wake = next_wake.min(t);
            }
        }
        self.next_wake = next_wake;
        for i in 0..self.expired.len() {
            let id = self.expired[i];
            let reason = match self.clients.get(&id) {
                Some(c) if c.connected => LeaveReason::IceDisconnected,
                _ => LeaveReason::ConnectTimeout,
            };
            self.remove_client(id, reason);
        }
    }

    // ---- output ---------------------------------------------------------------------------

    fn mark_dirty(&mut self, id: ParticipantId) {
        if let Some(c) = self.clients.get_mut(&id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Applies router decisions and polls dirty sessions until nothing is left to do.
    fn drain(&mut self, now: Instant) {
        loop {
            while let Some(out) = self.router.poll_output() {
                self.apply_router_output(out);
            }
            let Some(id) = self.dirty.pop() else {
                return;
            };
            if let Some(c) = self.clients.get_mut(&id) {
                c.dirty = false;
                self.poll_client(id, now);
            }
        }
    }

    fn apply_router_output(&mut self, out: RouterOutput) {
        match out {
            RouterOutput::TrackPublished(info) => {
                info!(participant = %info.publisher, track = %info.id, kind = ?info.kind, "track published");
                emit(
                    &self.events,
                    &mut self.stats,
                    SfuEvent::TrackPublished(info),
                );
            }
            RouterOutput::TrackUnpublished { track, publisher } => {
                let event = SfuEvent::TrackUnpublished {
                    participant: publisher,
                    track,
                };
                emit(&self.events, &mut self.stats, event);
            }
            RouterOutput::Subscribe { subscriber, track } => {
                if let Some(c) = self.clients.get_mut(&subscriber) {
                    c.queue_subscription(track);
                    self.mark_dirty(subscriber);
                }
            }
            RouterOutput::Unsubscribe {
                subscriber,
                track,
                out_mid,
            } => {
                if let Some(c) = self.clients.get_mut(&subscriber) {
                    c.queue_unsubscription(track, out_mid);
                    self.mark_dirty(subscriber);
                }
            }
            RouterOutput::SetBitrate {
                subscriber,
                minimum,
                desired,
            } => {
                if let Some(rtc) = self
                    .clients
                    .get_mut(&subscriber)
                    .and_then(|c| c.rtc.as_mut())
                {
                    rtc.bwe()
                        .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
                    self.mark_dirty(subscriber);
                }
            }
            RouterOutput::DominantSpeaker { room, participant } => {
                debug!(%room, %participant, "dominant speaker");
                let event = SfuEvent::DominantSpeaker { room, participant };
                emit(&self.events, &mut self.stats, event);
            }
            RouterOutput::RequestKeyframe {
                publisher,
                mid,
                rid,
            } => {
                let writer = self
                    .clients
                    .get_mut(&publisher)
                    .and_then(|c| c.rtc.as_mut())
                    .and_then(|rtc| rtc.writer(mid));
                if let Some(mut writer) = writer {
                    match writer.request_keyframe(rid, KeyframeRequestKind::Pli) {
                        Ok(()) => self.stats.keyframe_requests += 1,
                        Err(e) => debug!(%publisher, "keyframe request: {e}"),
                    }
                    self.mark_dirty(publisher);
                }
            }
        }
    }

    fn poll_client(&mut self, id: ParticipantId, now: Instant) {
        self.maybe_offer(id, now);
        let mut due_timeouts = 0;
        loop {
            let Some(client) = self.clients.get_mut(&id) else {
                return;
            };
            let Some(rtc) = client.rtc.as_mut() else {
                return;
            };
            if !rtc.is_alive() {
                self.remove_client(id, LeaveReason::Failed);
                return;
            }
            match rtc.poll_output() {
                // str0m asks for a timeout at once after media is written, to release it
                // from its queues: served now, the packets leave in this turn; left to the
                // loop, they would wait for the runtime's timer (millisecond ticks).
                Ok(Output::Timeout(t)) if t <= now && due_timeouts < MAX_DUE_TIMEOUTS => {
                    due_timeouts += 1;
                    if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                        debug!(participant = %id, "timeout input: {e}");
                    }
                }
                Ok(Output::Timeout(t)) => {
                    client.next_timeout = Some(t);
                    self.wake_by(t);
                    return;
                }
                Ok(Output::Transmit(t)) if t.proto == Protocol::Udp => {
                    client.bytes_out += t.contents.len() as u64;
                    self.outgoing.push(&t.contents, t.destination);
                    // A full batch goes at once: waiting for the end of the turn would hold
                    // the first subscribers' packets while the last ones are served.
                    if self.outgoing.is_full() {
                        self.send_udp();
                    }
                }
                Ok(Output::Transmit(t)) => {
                    // Queued for the connection, written after the drain: one system call for
                    // everything this turn sends it.
                    let sent = self
                        .tcp
                        .as_mut()
                        .map(|tcp| tcp.send(id, t.destination, &t.contents));
                    match sent {
                        Some(Sent::Queued) => client.bytes_out += t.contents.len() as u64,
                        Some(Sent::Overflow) => {
                            count_tcp_close(&mut self.stats, CloseReason::Overflow);
                            self.stats.send_errors += 1;
                        }
                        Some(Sent::NoConnection) | None => self.stats.send_errors += 1,
                    }
                }
                Ok(Output::Event(event)) => self.handle_event(id, event, now),
                Err(e) => {
                    warn!(participant = %id, "session failed: {e}");
                    self.remove_client(id, LeaveReason::Failed);
                    return;
                }
            }
        }
    }

    /// Sends a renegotiation offer if this session has subscriptions to add or stop.
    fn maybe_offer(&mut self, id: ParticipantId, now: Instant) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        if client.offer_retry_at.is_some_and(|t| now < t) {
            return;
        }
        client.offer_retry_at = None;
        if !client.offer_due() {
            return;
        }
        // The offer names the publishers' labels: take the client out of the map while it
        // reads the others (rare: only when an offer is due).
        let Some(mut client) = self.clients.remove(&id) else {
            return;
        };
        self.offer(&mut client, now);
        self.clients.insert(id, client);
    }

    fn offer(&mut self, client: &mut Client, now: Instant) {
        let id = client.id;
        let (router, clients) = (&self.router, &self.clients);
        let offer = client.make_offer(|t| {
            let info = router.track(t)?;
            let label = clients.get(&info.publisher)?.label.as_ref();
            Some((info, label))
        });
        if let Some(offer) = offer {
            debug!(participant = %id, "renegotiating");
            let event = SfuEvent::Offer {
                participant: id,
                sdp: offer.to_sdp_string(),
            };
            if !emit(&self.events, &mut self.stats, event) {
                // Nobody will answer an offer nobody saw: try again a little later (not on
                // every poll, which comes with every forwarded frame).
                client.requeue();
                let retry = now + OFFER_RETRY;
                client.offer_retry_at = Some(retry);
                self.wake_by(retry);
            }
        }
    }

    fn handle_event(&mut self, id: ParticipantId, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                if let Some(c) = self.clients.get_mut(&id) {
                    c.connected = true;
                    c.last_input = now;
                }
                self.wake_by(now + self.config.idle_timeout);
                info!(participant = %id, "connected");
                emit(
                    &self.events,
                    &mut self.stats,
                    SfuEvent::Connected { participant: id },
                );
                // Subscriptions queued before the session was up can be offered now.
                self.maybe_offer(id, now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.remove_client(id, LeaveReason::IceDisconnected);
            }
            Event::MediaAdded(added) => {
                if matches!(added.direction, Direction::RecvOnly | Direction::SendRecv) {
                    let layers = added
                        .simulcast
                        .map(|s| {
                            let list = if s.recv.is_empty() { s.send } else { s.recv };
                            list.into_iter().map(|l| l.rid).collect()
                        })
                        .unwrap_or_default();
                    let source = match self
                        .clients
                        .get(&id)
                        .and_then(|c| c.declared_source(added.mid))
                    {
                        Some(s) if s.kind() == added.kind => s,
                        Some(s) => {
                            debug!(participant = %id, mid = %added.mid, source = %s, "source ignored: wrong kind");
                            TrackSource::default_for(added.kind)
                        }
                        None => TrackSource::default_for(added.kind),
                    };
                    if let Err(e) = self
                        .router
                        .publish(id, added.mid, added.kind, source, layers)
                    {
                        warn!(participant = %id, "track not published: {e}");
                    }
                }
            }
            Event::MediaChanged(changed) => {
                let receiving =
                    matches!(changed.direction, Direction::RecvOnly | Direction::SendRecv);
                if !receiving && let Some(track) = self.router.track_by_mid(id, changed.mid) {
                    let _ = self.router.unpublish(track);
                }
            }
            Event::MediaData(data) => self.forward(id, data, now),
            Event::KeyframeRequest(req) => {
                self.router.on_subscriber_keyframe_request(id, req.mid, now);
            }
            // What the engine can send to this participant: str0m's own estimate from TWCC
            // feedback, or else the receiver's REMB (a browser sends one or the other).
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                if let Some(c) = self.clients.get_mut(&id) {
                    c.twcc = true;
                }
                self.router.set_estimate(id, estimate.as_u64(), now);
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. })
                if self.clients.get(&id).is_some_and(|c| !c.twcc) =>
            {
                self.router.set_estimate(id, estimate.as_u64(), now);
            }
            Event::ChannelOpen(channel, label) => self.channel_opened(id, channel, &label),
            Event::ChannelData(data) => self.relay(id, &data),
            Event::ChannelClose(channel) => self.channel_closed(id, channel),
            _ => {}
        }
    }

    // ---- data channels --------------------------------------------------------------------

    /// A data channel opened in `id`'s session: one the engine opened to relay someone's
    /// (write what waited for it), or one the participant opened (relay it from now on).
    fn channel_opened(&mut self, id: ParticipantId, channel: ChannelId, label: &str) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let Some(rtc) = client.rtc.as_mut() else {
            return;
        };
        if let Some((held, close_again)) = client.data.opened(channel) {
            if close_again {
                rtc.direct_api().close_data_channel(channel);
            }
            for (binary, payload) in held {
                let written = rtc
                    .channel(channel)
                    .is_some_and(|mut ch| ch.write(binary, &payload).unwrap_or(false));
                if written {
                    self.stats.data_messages_forwarded += 1;
                } else {
                    self.stats.data_messages_dropped += 1;
                }
            }
            self.mark_dirty(id);
            return;
        }
        // In-band (DCEP) channels carry their settings; a pre-negotiated one (`negotiated:
        // true` in the browser) has none to copy and is not relayed.
        let config = rtc.channel(channel).and_then(|ch| ch.config().cloned());
        let relay = config
            .filter(|c| label.len() <= MAX_CHANNEL_LABEL && c.protocol.len() <= MAX_CHANNEL_LABEL);
        let added = relay.is_some_and(|c| {
            client.data.add_inbound(
                channel,
                ChannelConfig {
                    label: format!("{}/{label}", client.label),
                    negotiated: None,
                    ..c
                },
            )
        });
        if added {
            debug!(participant = %id, label, "data channel relayed to the room");
        } else {
            debug!(participant = %id, label, "data channel not relayed: closed");
            rtc.direct_api().close_data_channel(channel);
            self.mark_dirty(id);
        }
    }

    /// A message on `publisher`'s channel: written verbatim to every other connected
    /// participant of its room that negotiated data channels, on the relayed channel for it
    /// (opened on the first message). Shares the payload between subscribers; allocates only to
    /// hold a message for a relayed channel still opening.
    fn relay(&mut self, publisher: ParticipantId, data: &ChannelData) {
        let Worker {
            router,
            clients,
            dirty,
            stats,
            ..
        } = self;
        let Some(from) = clients.get(&publisher) else {
            return;
        };
        let Some(inbound) = from.data.inbound(data.id) else {
            // Written back on a channel the engine relays to it: not for anyone.
            return;
        };
        let relay = inbound.relay.clone();
        let Some(room) = router.room_of(publisher) else {
            return;
        };
        let mut shared: Option<Arc<[u8]>> = None;
        for &to in router.participants_in(room) {
            if to == publisher {
                continue;
            }
            let Some(c) = clients.get_mut(&to) else {
                continue;
            };
            let rtc = match c.rtc.as_mut() {
                Some(rtc) if c.connected && c.data.negotiated => rtc,
                _ => {
                    stats.data_messages_skipped += 1;
                    continue;
                }
            };
            if data.data.is_empty() {
                // str0m 0.25 cannot send an empty message (it queues no SCTP chunk for it).
                stats.data_messages_dropped += 1;
                continue;
            }
            let payload = || Arc::from(data.data.as_slice());
            let delivered = match c.data.route(publisher, data.id) {
                Route::Write(out) => rtc
                    .channel(out)
                    .is_some_and(|mut ch| ch.write(data.binary, &data.data).unwrap_or(false)),
                Route::Hold => {
                    let p = shared.get_or_insert_with(payload);
                    // Counted when written, once the channel is open.
                    if c.data.hold(publisher, data.id, data.binary, p) {
                        continue;
                    }
                    false
                }
                Route::Open => {
                    let out = rtc.direct_api().create_data_channel((*relay).clone());
                    c.data.add_outbound(publisher, data.id, out);
                    let p = shared.get_or_insert_with(payload);
                    if c.data.hold(publisher, data.id, data.binary, p) {
                        if !c.dirty {
                            c.dirty = true;
                            dirty.push(to);
                        }
                        continue;
                    }
                    false
                }
                Route::Drop => false,
            };
            if delivered {
                stats.data_messages_forwarded += 1;
                if !c.dirty {
                    c.dirty = true;
                    dirty.push(to);
                }
            } else {
                stats.data_messages_dropped += 1;
            }
        }
    }

    /// A data channel of `id`'s session closed: a relay (forget it; the next message reopens
    /// one), or one of the participant's own (close its relays on the others).
    fn channel_closed(&mut self, id: ParticipantId, channel: ChannelId) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        if let Some(lost) = client.data.closed(channel) {
            self.stats.data_messages_dropped += lost as u64;
            return;
        }
        if client.data.remove_inbound(channel) {
            let room = client.room.clone();
            self.close_relays(id, &room, Some(channel));
        }
    }

    /// Closes, in every other session of `room`, the relays of `publisher`'s channels (only
    /// `source`'s if given).
    fn close_relays(&mut self, publisher: ParticipantId, room: &RoomId, source: Option<ChannelId>) {
        let Worker {
            router,
            clients,
            dirty,
            stats,
            ..
        } = self;
        let mut to_close = Vec::new();
        for &to in router.participants_in(room) {
            let Some(c) = clients.get_mut(&to) else {
                continue;
            };
            to_close.clear();
            let lost = c.data.close_relays_of(publisher, source, &mut to_close);
            stats.data_messages_dropped += lost as u64;
            let Some(rtc) = c.rtc.as_mut() else {
                continue;
            };
            for &channel in &to_close {
                rtc.direct_api().close_data_channel(channel);
            }
            if !to_close.is_empty() && !c.dirty {
                c.dirty = true;
                dirty.push(to);
            }
        }
    }

    /// Writes one frame to every subscriber the router names, sharing its payload; first
    /// tells the router its size, layer size and audio level.
    fn forward(&mut self, publisher: ParticipantId, data: MediaData, now: Instant) {
        let Some(track) = self.router.track_by_mid(publisher, data.mid) else {
            return;
        };
        if !data.contiguous {
            self.router.on_media_gap(track, data.rid, now);
        }
        let keyframe = data.is_keyframe();
        self.router.measure(track, data.rid, data.data.len(), now);
        let ext = &data.ext_vals;
        if let Some(level) = ext.audio_level {
            self.router
                .on_audio_level(track, level.unsigned_abs().min(127), now);
        }
        if keyframe
            && data.params.spec().codec == Codec::Vp8
            && let Some((width, height)) = vp8_keyframe_size(&data.data)
        {
            self.router.on_video_size(track, data.rid, width, height);
        }
        let wallclock = match self.clients.get_mut(&publisher) {
            Some(c) => {
                c.capture
                    .wallclock(data.network_time, data.time, data.last_sender_info.as_ref())
            }
            None => data.network_time,
        };
        let Worker {
            router,
            clients,
            dirty,
            stats,
            ..
        } = self;
        for f in router.on_media(track, data.rid, keyframe, now) {
            let Some(c) = clients.get_mut(&f.subscriber) else {
                continue;
            };
            let (time, wallclock) = c
                .timelines
                .entry(f.out_mid)
                .or_default()
                .map(data.rid, data.time, wallclock);
            let Some(mut writer) = c.rtc.as_mut().and_then(|rtc| rtc.writer(f.out_mid)) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                // The subscriber did not accept the publisher's codec.
                stats.frames_dropped += 1;
                continue;
            };
            if let Some(level) = ext.audio_level {
                writer = writer.audio_level(level, ext.voice_activity.unwrap_or(false));
            }
            if let Some(orientation) = ext.video_orientation {
                writer = writer.video_orientation(orientation);
            }
            if data.audio_start_of_talk_spurt {
                writer = writer.start_of_talkspurt(true);
            }
            if let Err(e) = writer.write(pt, wallclock, time, data.data.clone()) {
                debug!(subscriber = %f.subscriber, "write: {e}");
                stats.frames_dropped += 1;
                continue;
            }
            stats.frames_forwarded += 1;
            if !c.dirty {
                c.dirty = true;
                dirty.push(f.subscriber);
            }
        }
    }
}

/// Our username fragment from a STUN binding request (`USERNAME` is `ours:theirs`), if
/// `data` is one. RFC 7983: a first byte of 0–3 means STUN.
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    if data.first().is_none_or(|&b| b > 3) {
        return None;
    }
    let username = StunMessage::parse(data).ok()?.username()?;
    username.split(':').next()
}

fn count_tcp_close(stats: &mut WorkerStats, reason: CloseReason) {
    match reason {
        CloseReason::Invalid => stats.tcp_invalid += 1,
        CloseReason::Timeout => stats.tcp_timeouts += 1,
        CloseReason::Overflow => stats.tcp_overflows += 1,
        CloseReason::Gone => {}
    }
}

/// Queues an event for the signaling side; `false` if it had to be dropped.
fn emit(events: &mpsc::Sender<SfuEvent>, stats: &mut WorkerStats, event: SfuEvent) -> bool {
    match events.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            stats.events_dropped += 1;
            warn!("SFU event queue full: event dropped");
            false
        }
        // Nobody listens any more: the worker is shutting down with its handles.
        Err(mpsc::error::TrySendError::Closed(_)) => {
            stats.events_dropped += 1;
            false
        }
    }
}
