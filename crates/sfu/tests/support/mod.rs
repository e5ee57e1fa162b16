//! Test support shared by the integration tests: a browser stand-in built on a second str0m
//! `Rtc` (full ICE, its own UDP socket on loopback, or a TCP connection to the engine framed as
//! RFC 4571 says, or both) that publishes synthetic VP8 and Opus at realistic rates and checks
//! what it receives, opens data channels and logs the messages that
//! arrive on them, plus a harness that runs a worker and plays the signaling side (relays the
//! engine's renegotiation offers to the right client).
//!
//! Frames are written with their capture time as wallclock (the schedule, 30 and 50 frames
//! per second from the client's start), so the client's sender reports map RTP time to
//! capture time exactly; video can be written later than captured (an encoder's delay), audio
//! can carry an RFC 6464 level, and RTP packets can be dropped on the way in or out to make
//! the other side ask for them again (NACK).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast,
    SimulcastLayer,
};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::rtcp::SenderInfo;
use str0m::{Candidate, Event, Input, Output, Rtc};
use switchboard_sfu::{
    ParticipantHandle, ParticipantId, RoomId, Sfu, SfuError, SfuEvent, TrackId, TrackSource,
    WorkerConfig, WorkerHandle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

pub const VIDEO_FPS: u64 = 30;
pub const AUDIO_FRAME: Duration = Duration::from_millis(20);
const KEYFRAME_BODY: usize = 3_000;
const DELTA_BODY: usize = 700;
const AUDIO_BODY: usize = 76;
/// VP8 frame tag with P=0 (keyframe), then the keyframe start code and 640x480.
const VP8_KEY_HEADER: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
/// The same for the lower simulcast layers: 320x240.
const VP8_KEY_HEADER_SMALL: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
/// str0m's payload type for VP8 (the first video codec of its default configuration, in the
/// test clients' offers and the engine's alike); its retransmissions go as RTX, 97.
const VP8_PT: u8 = 96;
/// VP8 frame tag with P=1 (interframe).
const VP8_DELTA_HEADER: [u8; 3] = [0x11, 0x02, 0x00];

/// What a test client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Offers sendonly audio and video and sends Opus and VP8 once connected.
    Publisher,
    /// Like `Publisher`, with video in two simulcast layers, `h` (640x480) then `l` (320x240,
    /// frames half the size).
    SimulcastPublisher,
    /// Offers only a data channel (`switchboard`); receives what the engine adds by
    /// renegotiation.
    Subscriber,
}

/// How a test client reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP host candidate only.
    Udp,
    /// An active TCP host candidate only: one TCP connection to the engine's port.
    Tcp,
    /// Both: ICE chooses (it should be UDP).
    Both,
    /// Like `Tcp`, with a receive buffer of a few KiB, so that a client that stops reading
    /// (see [`TestClient::pause_tcp_reads`]) soon stops the engine from writing.
    TcpSmallWindow,
}

/// A data-channel message that arrived at a test client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The label of the channel it came on.
    pub channel: String,
    pub binary: bool,
    pub data: Vec<u8>,
}

/// What one incoming m-line delivered.
#[derive(Debug, Clone)]
pub struct Received {
    pub kind: MediaKind,
    pub frames: u32,
    pub keyframes: u32,
    pub first_was_keyframe: bool,
    /// Frame index (as written by the publisher) of the first and last frame.
    pub first_index: u32,
    pub last_index: u32,
    /// Frames whose payload did not match what the publisher wrote.
    pub corrupt: u32,
    /// Frames whose index went backwards.
    pub out_of_order: u32,
    /// Each change of simulcast layer: (first frame index on the new layer, was keyframe).
    pub layer_switches: Vec<(u32, bool)>,
    /// The RFC 6464 level (dBov) of the last frame that carried one.
    pub audio_level: Option<i8>,
}

/// Frame indexes of simulcast layer `n` start at `n * LAYER_STRIDE`.
pub const LAYER_STRIDE: u32 = 1_000_000;

/// A snapshot of a test client.
#[derive(Debug, Clone, Default)]
pub struct ClientState {
    pub connected: bool,
    pub received: HashMap<Mid, Received>,
    /// Keyframe requests (PLI/FIR) that arrived from the engine.
    pub keyframe_requests: u32,
    pub video_sent: u32,
    pub keyframes_sent: u32,
    pub audio_sent: u32,
    /// Incoming m-lines that the engine stopped.
    pub stopped_mids: Vec<Mid>,
    pub offers_answered: u32,
    /// The SDP of every engine offer the client answered, in order.
    pub offers: Vec<String>,
    /// Labels of data channels as they opened (the client's own and the engine's).
    pub channels_opened: Vec<String>,
    /// Labels of data channels as they closed.
    pub channels_closed: Vec<String>,
    /// Data-channel messages received, in order.
    pub messages: Vec<Message>,
    /// Sender reports for incoming m-lines, in order.
    pub sender_reports: Vec<(Mid, SenderInfo)>,
    /// NACKs sent for each incoming m-line, and received for each outgoing one (from str0m's
    /// statistics).
    pub nacks_sent: HashMap<Mid, u64>,
    pub nacks_received: HashMap<Mid, u64>,
    /// RTP packets dropped on arrival, and before sending (see [`TestClient::lose`]).
    pub dropped_in: u32,
    pub dropped_out: u32,
    /// Bytes that arrived in UDP datagrams and in TCP frames (without their header).
    pub udp_bytes_in: u64,
    pub tcp_bytes_in: u64,
    /// The engine closed the client's TCP connection.
    pub tcp_closed_by_server: bool,
}

impl ClientState {
    /// The messages that arrived on channels labelled `channel`.
    pub fn messages_on(&self, channel: &str) -> Vec<&Message> {
        self.messages
            .iter()
            .filter(|m| m.channel == channel)
            .collect()
    }
}

impl ClientState {
    pub fn of_kind(&self, kind: MediaKind) -> Vec<&Received> {
        self.received.values().filter(|r| r.kind == kind).collect()
    }

    pub fn video_frames(&self) -> u32 {
        self.of_kind(MediaKind::Video)
            .iter()
            .map(|r| r.frames)
            .sum()
    }

    pub fn audio_frames(&self) -> u32 {
        self.of_kind(MediaKind::Audio)
            .iter()
            .map(|r| r.frames)
            .sum()
    }
}

enum ClientCmd {
    AcceptOffer(String, oneshot::Sender<Result<String, String>>),
    /// Adds a sendonly video m-line (a screen share) and returns the new offer and its mid.
    AddVideo(oneshot::Sender<(String, Mid)>),
    AcceptAnswer(String),
    /// Moves to a new socket (a new address, as when a phone leaves Wi-Fi) and restarts ICE:
    /// returns the new offer.
    RestartIce(oneshot::Sender<String>),
    /// Sends a PLI on every received video m-line, as a browser whose decoder lost state.
    RequestKeyframe(oneshot::Sender<usize>),
    /// Opens a data channel (ordered, reliable) with this label.
    OpenChannel(String),
    /// Writes a message on the open channel with this label: whether str0m took it.
    Send {
        channel: String,
        binary: bool,
        data: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    /// The RFC 6464 level (dBov, 0 to -127) the audio frames carry from now on.
    SetAudioLevel(Option<i8>),
    /// Writes video frames this long after their capture time.
    SetVideoDelay(Duration),
    /// Drops every `every`-th video RTP packet, `count` times, arriving or leaving.
    Lose(Loss),
    /// Closes the TCP connection (the UDP socket, if any, stays).
    CloseTcp,
    /// Stops reading the TCP connection (what the engine sends piles up).
    PauseTcpReads,
    Stop,
}

/// RTP packets to drop in one direction: every `every`-th video packet, `count` times.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loss {
    pub incoming: bool,
    pub every: u32,
    pub count: u32,
    seen: u32,
}

impl Loss {
    pub fn new(incoming: bool, every: u32, count: u32) -> Self {
        Loss {
            incoming,
            every,
            count,
            seen: 0,
        }
    }

    /// Whether to drop this datagram: a VP8 RTP packet (RFC 7983: first byte 128-191; the
    /// payload type follows, after the marker bit; SRTP leaves the header readable), the
    /// `every`-th, while drops are left. Retransmissions (RTX) and padding are never dropped.
    fn drop(&mut self, datagram: &[u8]) -> bool {
        let vp8 = matches!(datagram, [128..=191, pt, ..] if pt & 0x7f == VP8_PT);
        if self.count == 0 || !vp8 {
            return false;
        }
        self.seen += 1;
        if !self.seen.is_multiple_of(self.every.max(1)) {
            return false;
        }
        self.count -= 1;
        true
    }
}

/// One video stream the client sends: an m-line, a simulcast layer, its frame indexes.
struct VideoStream {
    mid: Mid,
    rid: Option<Rid>,
    want_keyframe: bool,
    /// Added to the frame number, so the receiver can tell streams apart.
    base: u32,
    /// A lower simulcast layer: 320x240, half-size frames.
    small: bool,
}

/// Frame indexes of a video track added later (a screen share) start here.
pub const ADDED_TRACK_BASE: u32 = 10 * LAYER_STRIDE;

/// A running test client.
pub struct TestClient {
    pub id: ParticipantId,
    state: Arc<Mutex<ClientState>>,
    cmds: mpsc::Sender<ClientCmd>,
}

impl TestClient {
    pub fn state(&self) -> ClientState {
        self.state.lock().unwrap().clone()
    }

    pub async fn accept_offer(&self, sdp: String) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(ClientCmd::AcceptOffer(sdp, tx))
            .await
            .map_err(|_| "client stopped".to_string())?;
        rx.await.map_err(|_| "client stopped".to_string())?
    }

    /// Adds a screen-share video track: returns the client's new offer and the track's mid.
    /// Its answer goes back through [`TestClient::accept_answer`]; frames then flow with
    /// indexes from [`ADDED_TRACK_BASE`].
    pub async fn add_video(&self) -> (String, Mid) {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(ClientCmd::AddVideo(tx)).await.unwrap();
        rx.await.unwrap()
    }

    /// Changes network (new local address) and restarts ICE: returns the client's offer,
    /// whose answer goes back through [`TestClient::accept_answer`].
    pub async fn restart_ice(&self) -> String {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(ClientCmd::RestartIce(tx)).await.unwrap();
        rx.await.unwrap()
    }

    /// Asks for a keyframe on every received video track; returns on how many.
    pub async fn request_keyframe(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(ClientCmd::RequestKeyframe(tx))
            .await
            .unwrap();
        rx.await.unwrap()
    }

    /// Opens a data channel to the engine; `channels_opened` lists it once it is open.
    pub async fn open_channel(&self, label: &str) {
        self.cmds
            .send(ClientCmd::OpenChannel(label.to_owned()))
            .await
            .unwrap();
    }

    /// Writes a message on the open channel `channel`; `false` if there is no such open
    /// channel or str0m's send buffer is full.
    pub async fn send(&self, channel: &str, binary: bool, data: &[u8]) -> bool {
        let (reply, rx) = oneshot::channel();
        let cmd = ClientCmd::Send {
            channel: channel.to_owned(),
            binary,
            data: data.to_vec(),
            reply,
        };
        if self.cmds.send(cmd).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub async fn accept_answer(&self, sdp: String) {
        self.cmds.send(ClientCmd::AcceptAnswer(sdp)).await.unwrap();
    }

    /// The RFC 6464 level (dBov, 0 to -127) audio frames carry from now on; `None` for none.
    pub async fn set_audio_level(&self, level: Option<i8>) {
        let _ = self.cmds.send(ClientCmd::SetAudioLevel(level)).await;
    }

    /// Writes video frames `delay` after their capture time from now on, like an encoder.
    pub async fn set_video_delay(&self, delay: Duration) {
        let _ = self.cmds.send(ClientCmd::SetVideoDelay(delay)).await;
    }

    /// Drops RTP packets on the way in or out (see [`Loss`]).
    pub async fn lose(&self, loss: Loss) {
        let _ = self.cmds.send(ClientCmd::Lose(loss)).await;
    }

    /// Closes the client's TCP connection to the engine.
    pub async fn close_tcp(&self) {
        let _ = self.cmds.send(ClientCmd::CloseTcp).await;
    }

    /// Stops reading the TCP connection, as a client whose path cannot carry the media.
    pub async fn pause_tcp_reads(&self) {
        let _ = self.cmds.send(ClientCmd::PauseTcpReads).await;
    }

    /// Stops sending and answering (the socket closes).
    pub async fn stop(&self) {
        let _ = self.cmds.send(ClientCmd::Stop).await;
    }
}

/// A TCP connection to the engine: ICE over TCP, RFC 4571 frames.
pub struct TcpLink {
    pub stream: TcpStream,
    /// The connection's local address: the client's (active) TCP candidate.
    pub local: SocketAddr,
    /// The engine's address.
    pub server: SocketAddr,
}

impl TcpLink {
    /// Connects to the engine; with `small_window`, with a receive buffer of a few KiB.
    pub async fn connect(server: SocketAddr, small_window: bool) -> TcpLink {
        let socket = TcpSocket::new_v4().unwrap();
        if small_window {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        let stream = socket.connect(server).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let local = stream.local_addr().unwrap();
        TcpLink {
            stream,
            local,
            server,
        }
    }

    /// The candidate a browser would announce for it.
    pub fn candidate(&self) -> Candidate {
        Candidate::builder()
            .tcp()
            .host(self.local)
            .tcptype(TcpType::Active)
            .build()
            .unwrap()
    }
}

/// A STUN binding request naming `username` (unsigned: no session can accept it), as a
/// stranger's ICE check would.
pub fn stun_with_username(username: &str) -> Vec<u8> {
    let padded = username.len().div_ceil(4) * 4;
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&[0x00, 0x06]);
    m.extend_from_slice(&(username.len() as u16).to_be_bytes());
    m.extend_from_slice(username.as_bytes());
    m.resize(20 + 4 + padded, 0);
    m
}

/// One RFC 4571 frame: 2-byte big-endian length, then `packet`.
pub fn frame(packet: &[u8]) -> Vec<u8> {
    let mut f = (packet.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(packet);
    f
}

/// A str0m session acting as a browser, before it runs.
pub struct Browser {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    /// The TCP connection to the engine, for [`Transport::Tcp`] and [`Transport::Both`].
    pub tcp: Option<TcpLink>,
    role: Role,
    pending: Option<SdpPendingOffer>,
    /// The publisher's (audio, video) m-lines.
    media_mids: Option<(Mid, Mid)>,
    /// The video layers sent: `[None]` without simulcast.
    layers: Vec<Option<Rid>>,
}

impl Browser {
    /// A client on UDP.
    pub async fn new(role: Role) -> Browser {
        let unused = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        Browser::with_transport(role, Transport::Udp, unused).await
    }

    /// A client that reaches the engine at `server` by `transport` (over TCP it connects
    /// first, as a browser does for an active candidate once it has the answer).
    pub async fn with_transport(role: Role, transport: Transport, server: SocketAddr) -> Browser {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        // Like a browser's, large enough to ride out a busy test machine.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 20);
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .set_rtcp_report_interval_audio(Duration::from_secs(1))
            .set_stats_interval(Some(Duration::from_millis(500)))
            .build(Instant::now());
        if matches!(transport, Transport::Udp | Transport::Both) {
            rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        }
        let tcp = match transport {
            Transport::Udp => None,
            Transport::Tcp | Transport::Both | Transport::TcpSmallWindow => {
                let link = TcpLink::connect(server, transport == Transport::TcpSmallWindow).await;
                rtc.add_local_candidate(link.candidate());
                Some(link)
            }
        };
        Browser {
            rtc,
            socket,
            local,
            tcp,
            role,
            pending: None,
            media_mids: None,
            layers: vec![None],
        }
    }

    /// The first offer, as a browser would make it for this role.
    pub fn offer(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        match self.role {
            Role::Publisher | Role::SimulcastPublisher => {
                let simulcast = (self.role == Role::SimulcastPublisher).then(|| {
                    self.layers = vec![Some(Rid::from("h")), Some(Rid::from("l"))];
                    let mut s = Simulcast::new();
                    s.add_send_layer(SimulcastLayer::new("h"));
                    s.add_send_layer(SimulcastLayer::new("l"));
                    s
                });
                let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                let video =
                    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
                self.media_mids = Some((audio, video));
            }
            Role::Subscriber => {
                api.add_channel("switchboard".into());
            }
        }
        let (offer, pending) = api.apply().unwrap();
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    pub fn accept_answer(&mut self, sdp: &str) {
        let answer = SdpAnswer::from_sdp_string(sdp).unwrap();
        let pending = self.pending.take().unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    }

    pub fn run(self, id: ParticipantId) -> TestClient {
        let (cmds, rx) = mpsc::channel(8);
        self.run_with(id, cmds, rx)
    }

    fn run_with(
        self,
        id: ParticipantId,
        cmds: mpsc::Sender<ClientCmd>,
        rx: mpsc::Receiver<ClientCmd>,
    ) -> TestClient {
        let state = Arc::new(Mutex::new(ClientState::default()));
        tokio::spawn(drive(self, state.clone(), rx));
        TestClient { id, state, cmds }
    }
}

/// Frame `index` of the synthetic VP8 stream (of a lower simulcast layer if `small`).
pub fn video_frame(index: u32, keyframe: bool, small: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(KEYFRAME_BODY + 16);
    match (keyframe, small) {
        (true, false) => v.extend_from_slice(&VP8_KEY_HEADER),
        (true, true) => v.extend_from_slice(&VP8_KEY_HEADER_SMALL),
        (false, _) => v.extend_from_slice(&VP8_DELTA_HEADER),
    }
    let len = if keyframe { KEYFRAME_BODY } else { DELTA_BODY };
    append_body(&mut v, index, if small { len / 2 } else { len });
    v
}

/// Frame `index` of the synthetic Opus stream.
pub fn audio_frame(index: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(AUDIO_BODY + 8);
    append_body(&mut v, index, AUDIO_BODY);
    v
}

fn append_body(v: &mut Vec<u8>, index: u32, len: usize) {
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.extend((0..len).map(|j| (index as usize * 7 + j) as u8));
}

/// Checks a body written by `append_body`; returns its index.
fn check_body(body: &[u8]) -> Option<u32> {
    let index = u32::from_be_bytes(body.get(0..4)?.try_into().ok()?);
    let len = u32::from_be_bytes(body.get(4..8)?.try_into().ok()?) as usize;
    let rest = body.get(8..)?;
    let ok = rest.len() == len
        && rest
            .iter()
            .enumerate()
            .all(|(j, &b)| b == (index as usize * 7 + j) as u8);
    ok.then_some(index)
}

/// Parses a received frame: (index, payload intact).
fn parse_frame(kind: MediaKind, data: &[u8]) -> (u32, bool) {
    let body = match kind {
        MediaKind::Audio => Some(data),
        MediaKind::Video => match data.first() {
            Some(b) if b & 1 == 0 => data.get(VP8_KEY_HEADER.len()..),
            Some(_) => data.get(VP8_DELTA_HEADER.len()..),
            None => None,
        },
    };
    match body.and_then(check_body) {
        Some(i) => (i, true),
        None => (0, false),
    }
}

async fn drive(
    mut b: Browser,
    state: Arc<Mutex<ClientState>>,
    mut cmds: mpsc::Receiver<ClientCmd>,
) {
    let mut buf = vec![0u8; 2048];
    let (tcp_local, tcp_server) = match &b.tcp {
        Some(link) => (link.local, link.server),
        None => (b.local, b.local),
    };
    let (mut tcp_rd, mut tcp_wr) = match b.tcp.take() {
        Some(link) => {
            let (rd, wr) = link.stream.into_split();
            (Some(rd), Some(wr))
        }
        None => (None, None),
    };
    // Any frame fits, whatever the engine sends.
    let mut tcp_buf = vec![0u8; 70_000];
    let mut tcp_filled = 0usize;
    // A read half no longer read, kept so that the connection stays open.
    let mut unread: Vec<OwnedReadHalf> = Vec::new();
    let mut channels: HashMap<ChannelId, String> = HashMap::new();
    let start = Instant::now();
    let video_interval = Duration::from_micros(1_000_000 / VIDEO_FPS);
    let mut next_video = start;
    let mut next_audio = start;
    let mut video_index = 0u32;
    let mut audio_index = 0u32;
    let mut audio_level: Option<i8> = None;
    let mut video_delay = Duration::ZERO;
    let mut loss_in = Loss::default();
    let mut loss_out = Loss::default();
    let media_mids = b.media_mids;
    let mut streams: Vec<VideoStream> = match media_mids {
        Some((_, video)) => b
            .layers
            .iter()
            .enumerate()
            .map(|(n, rid)| VideoStream {
                mid: video,
                rid: *rid,
                want_keyframe: true,
                base: n as u32 * LAYER_STRIDE,
                small: n > 0,
            })
            .collect(),
        None => Vec::new(),
    };
    loop {
        // Drain str0m.
        let timeout = loop {
            match b.rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) if t.proto == Protocol::Tcp => {
                    if let Some(wr) = tcp_wr.as_mut()
                        && wr.write_all(&frame(&t.contents)).await.is_err()
                    {
                        tcp_wr = None;
                    }
                }
                Ok(Output::Transmit(t)) => {
                    if loss_out.drop(&t.contents) {
                        state.lock().unwrap().dropped_out += 1;
                        continue;
                    }
                    let _ = b.socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(e)) => {
                    handle_channel_event(&mut channels, &e, &state);
                    handle_event(&b.rtc, e, &state, &mut streams);
                }
                Err(e) => panic!("test client failed: {e}"),
            }
        };
        let connected = state.lock().unwrap().connected;
        let mut deadline = timeout.min(Instant::now() + Duration::from_millis(50));
        if connected && !streams.is_empty() {
            deadline = deadline.min(next_video + video_delay).min(next_audio);
        }
        tokio::select! {
            r = b.socket.recv_from(&mut buf) => {
                if let Ok((n, _)) = r
                    && loss_in.drop(&buf[..n])
                {
                    state.lock().unwrap().dropped_in += 1;
                } else if let Ok((n, source)) = r
                    && let Ok(contents) = buf[..n].try_into()
                {
                    state.lock().unwrap().udp_bytes_in += n as u64;
                    let input = Input::Receive(
                        Instant::now(),
                        Receive { proto: Protocol::Udp, source, destination: b.local, contents },
                    );
                    let _ = b.rtc.handle_input(input);
                }
            }
            r = read_some(&mut tcp_rd, &mut tcp_buf[tcp_filled..]) => match r {
                Ok(n) if n > 0 => {
                    tcp_filled += n;
                    let mut at = 0;
                    while let Some(len) = tcp_buf[at..tcp_filled]
                        .first_chunk::<2>()
                        .map(|l| usize::from(u16::from_be_bytes(*l)))
                        .filter(|len| at + 2 + len <= tcp_filled)
                    {
                        let packet = &tcp_buf[at + 2..at + 2 + len];
                        at += 2 + len;
                        state.lock().unwrap().tcp_bytes_in += len as u64;
                        if let Ok(contents) = packet.try_into() {
                            let input = Input::Receive(
                                Instant::now(),
                                Receive {
                                    proto: Protocol::Tcp,
                                    source: tcp_server,
                                    destination: tcp_local,
                                    contents,
                                },
                            );
                            let _ = b.rtc.handle_input(input);
                        }
                    }
                    tcp_buf.copy_within(at..tcp_filled, 0);
                    tcp_filled -= at;
                }
                _ => {
                    tcp_rd = None;
                    tcp_wr = None;
                    state.lock().unwrap().tcp_closed_by_server = true;
                }
            },
            cmd = cmds.recv() => match cmd {
                Some(ClientCmd::AcceptOffer(sdp, reply)) => {
                    let result = SdpOffer::from_sdp_string(&sdp)
                        .map_err(|e| e.to_string())
                        .and_then(|o| b.rtc.sdp_api().accept_offer(o).map_err(|e| e.to_string()))
                        .map(|a| a.to_sdp_string());
                    if result.is_ok() {
                        let mut s = state.lock().unwrap();
                        s.offers_answered += 1;
                        s.offers.push(sdp);
                    }
                    let _ = reply.send(result);
                }
                Some(ClientCmd::AddVideo(reply)) => {
                    let mut api = b.rtc.sdp_api();
                    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
                    let (offer, pending) = api.apply().unwrap();
                    b.pending = Some(pending);
                    streams.push(VideoStream {
                        mid,
                        rid: None,
                        want_keyframe: true,
                        base: ADDED_TRACK_BASE,
                        small: false,
                    });
                    let _ = reply.send((offer.to_sdp_string(), mid));
                }
                Some(ClientCmd::AcceptAnswer(sdp)) => b.accept_answer(&sdp),
                Some(ClientCmd::RestartIce(reply)) => {
                    b.socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
                    b.local = b.socket.local_addr().unwrap();
                    b.rtc.add_local_candidate(Candidate::host(b.local, "udp").unwrap());
                    let mut api = b.rtc.sdp_api();
                    api.ice_restart(true);
                    let (offer, pending) = api.apply().unwrap();
                    b.pending = Some(pending);
                    let _ = reply.send(offer.to_sdp_string());
                }
                Some(ClientCmd::RequestKeyframe(reply)) => {
                    let mids: Vec<Mid> = state
                        .lock()
                        .unwrap()
                        .received
                        .iter()
                        .filter(|(_, r)| r.kind == MediaKind::Video)
                        .map(|(mid, _)| *mid)
                        .collect();
                    let sent = mids
                        .into_iter()
                        .filter(|&mid| {
                            b.rtc.writer(mid).is_some_and(|mut w| {
                                w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
                            })
                        })
                        .count();
                    let _ = reply.send(sent);
                }
                Some(ClientCmd::OpenChannel(label)) => {
                    let config = ChannelConfig { label, ..ChannelConfig::default() };
                    b.rtc.direct_api().create_data_channel(config);
                }
                Some(ClientCmd::Send { channel, binary, data, reply }) => {
                    let id = channels.iter().find(|(_, l)| **l == channel).map(|(id, _)| *id);
                    let sent = id
                        .and_then(|id| b.rtc.channel(id))
                        .is_some_and(|mut ch| ch.write(binary, &data).unwrap_or(false));
                    let _ = reply.send(sent);
                }
                Some(ClientCmd::SetAudioLevel(level)) => audio_level = level,
                Some(ClientCmd::SetVideoDelay(delay)) => video_delay = delay,
                Some(ClientCmd::Lose(loss)) if loss.incoming => loss_in = loss,
                Some(ClientCmd::Lose(loss)) => loss_out = loss,
                Some(ClientCmd::CloseTcp) => {
                    tcp_rd = None;
                    tcp_wr = None;
                    unread.clear();
                }
                Some(ClientCmd::PauseTcpReads) => unread.extend(tcp_rd.take()),
                Some(ClientCmd::Stop) | None => return,
            },
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        let _ = b.rtc.handle_input(Input::Timeout(now));

        if !connected {
            continue;
        }
        if now >= next_video + video_delay {
            // Captured at `captured`, written now.
            let captured = next_video;
            next_video += video_interval;
            let rtp_time = MediaTime::new(
                u64::from(video_index) * 90_000 / VIDEO_FPS,
                Frequency::NINETY_KHZ,
            );
            for stream in &mut streams {
                let key = std::mem::take(&mut stream.want_keyframe);
                let frame = video_frame(stream.base + video_index, key, stream.small);
                let written = write(
                    &mut b.rtc,
                    stream.mid,
                    stream.rid,
                    (captured, rtp_time),
                    None,
                    frame,
                );
                if written {
                    let mut s = state.lock().unwrap();
                    s.video_sent += 1;
                    s.keyframes_sent += u32::from(key);
                } else {
                    stream.want_keyframe |= key;
                }
            }
            video_index += 1;
        }
        if let Some((audio_mid, _)) = media_mids
            && now >= next_audio
        {
            let captured = next_audio;
            next_audio += AUDIO_FRAME;
            let rtp_time = MediaTime::new(u64::from(audio_index) * 960, Frequency::FORTY_EIGHT_KHZ);
            if write(
                &mut b.rtc,
                audio_mid,
                None,
                (captured, rtp_time),
                audio_level,
                audio_frame(audio_index),
            ) {
                state.lock().unwrap().audio_sent += 1;
                audio_index += 1;
            }
        }
    }
}

/// Reads from the TCP connection if there is one; never resolves otherwise.
async fn read_some(rd: &mut Option<OwnedReadHalf>, buf: &mut [u8]) -> io::Result<usize> {
    match rd {
        Some(rd) => rd.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Keeps the open channels by id and logs channel events to the state.
fn handle_channel_event(
    channels: &mut HashMap<ChannelId, String>,
    event: &Event,
    state: &Mutex<ClientState>,
) {
    let mut s = state.lock().unwrap();
    match event {
        Event::ChannelOpen(id, label) => {
            channels.insert(*id, label.clone());
            s.channels_opened.push(label.clone());
        }
        Event::ChannelData(d) => {
            let channel = channels.get(&d.id).cloned().unwrap_or_default();
            s.messages.push(Message {
                channel,
                binary: d.binary,
                data: d.data.clone(),
            });
        }
        Event::ChannelClose(id) => {
            if let Some(label) = channels.remove(id) {
                s.channels_closed.push(label);
            }
        }
        _ => {}
    }
}

/// Writes a frame captured at `captured.0` with RTP time `captured.1`.
fn write(
    rtc: &mut Rtc,
    mid: Mid,
    rid: Option<Rid>,
    captured: (Instant, MediaTime),
    audio_level: Option<i8>,
    data: Vec<u8>,
) -> bool {
    let Some(mut writer) = rtc.writer(mid) else {
        return false;
    };
    if let Some(rid) = rid {
        writer = writer.rid(rid);
    }
    if let Some(level) = audio_level {
        writer = writer.audio_level(level, level > -127);
    }
    let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
        return false;
    };
    writer.write(pt, captured.0, captured.1, data).is_ok()
}

fn handle_event(rtc: &Rtc, event: Event, state: &Mutex<ClientState>, streams: &mut [VideoStream]) {
    let mut s = state.lock().unwrap();
    match event {
        Event::Connected => s.connected = true,
        Event::KeyframeRequest(req) => {
            assert!(matches!(
                req.kind,
                KeyframeRequestKind::Pli | KeyframeRequestKind::Fir
            ));
            s.keyframe_requests += 1;
            for stream in streams.iter_mut() {
                if stream.mid == req.mid && (req.rid.is_none() || req.rid == stream.rid) {
                    stream.want_keyframe = true;
                }
            }
        }
        Event::MediaData(data) => {
            let kind = rtc
                .media(data.mid)
                .map(|m| m.kind())
                .unwrap_or(MediaKind::Video);
            let is_key = data.is_keyframe();
            let (index, intact) = parse_frame(kind, &data.data);
            let r = s.received.entry(data.mid).or_insert(Received {
                kind,
                frames: 0,
                keyframes: 0,
                first_was_keyframe: is_key,
                first_index: index,
                last_index: index,
                corrupt: 0,
                out_of_order: 0,
                layer_switches: Vec::new(),
                audio_level: None,
            });
            r.frames += 1;
            if data.ext_vals.audio_level.is_some() {
                r.audio_level = data.ext_vals.audio_level;
            }
            r.keyframes += u32::from(is_key);
            if !intact {
                r.corrupt += 1;
            } else {
                let same_layer = index / LAYER_STRIDE == r.last_index / LAYER_STRIDE;
                if r.frames > 1 && !same_layer {
                    r.layer_switches.push((index, is_key));
                } else if r.frames > 1 && index <= r.last_index {
                    r.out_of_order += 1;
                }
                r.last_index = index;
            }
        }
        Event::MediaChanged(c) if c.direction == Direction::Inactive => s.stopped_mids.push(c.mid),
        Event::SenderFeedback(f) => s.sender_reports.push((f.mid, f.sender_info)),
        Event::MediaIngressStats(stats) => {
            s.nacks_sent.insert(stats.mid, stats.nacks);
        }
        Event::MediaEgressStats(stats) => {
            s.nacks_received.insert(stats.mid, stats.nacks);
        }
        _ => {}
    }
}

/// A worker plus the signaling side's part: clients by participant, an event log, and a
/// task relaying the engine's renegotiation offers.
pub struct Harness {
    /// The first (or only) worker.
    pub sfu: WorkerHandle,
    /// All workers; rooms are joined through it.
    pub pool: Sfu,
    pub events: Arc<Mutex<Vec<SfuEvent>>>,
    peers: Arc<Mutex<HashMap<ParticipantId, Peer>>>,
}

#[derive(Clone)]
struct Peer {
    handle: Arc<ParticipantHandle>,
    cmds: mpsc::Sender<ClientCmd>,
}

/// The label a test participant joins with: `user<id>`.
pub fn label(id: ParticipantId) -> String {
    format!("user{}", id.0)
}

pub fn test_config() -> WorkerConfig {
    WorkerConfig {
        bind: (Ipv4Addr::LOCALHOST, 0).into(),
        ..WorkerConfig::default()
    }
}

impl Harness {
    pub async fn start(config: WorkerConfig) -> Harness {
        Harness::start_pool(config, 1).await
    }

    pub async fn start_pool(config: WorkerConfig, workers: usize) -> Harness {
        init_log();
        let (pool, mut rx) = Sfu::spawn(config, workers).await.unwrap();
        let sfu = pool.workers()[0].clone();
        let events = Arc::new(Mutex::new(Vec::new()));
        let peers: Arc<Mutex<HashMap<ParticipantId, Peer>>> = Arc::default();
        let (log, relay_peers) = (events.clone(), peers.clone());
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                log.lock().unwrap().push(event.clone());
                if let SfuEvent::Offer { participant, sdp } = event {
                    let peer = relay_peers.lock().unwrap().get(&participant).cloned();
                    let Some(peer) = peer else { continue };
                    let (tx, reply) = oneshot::channel();
                    if peer
                        .cmds
                        .send(ClientCmd::AcceptOffer(sdp, tx))
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    if let Ok(Ok(answer)) = reply.await {
                        // Refused only if the participant left meanwhile.
                        let _ = peer.handle.accept_answer(&answer).await;
                    }
                }
            }
        });
        Harness {
            sfu,
            pool,
            events,
            peers,
        }
    }

    /// Joins `id` (labelled [`label`]) to `room`, negotiates, and starts the client.
    pub async fn connect(&self, room: &str, id: u64, role: Role) -> TestClient {
        self.connect_with(room, id, role, Transport::Udp).await
    }

    /// [`Harness::connect`] over `transport`.
    pub async fn connect_with(
        &self,
        room: &str,
        id: u64,
        role: Role,
        transport: Transport,
    ) -> TestClient {
        let id = ParticipantId(id);
        let room = RoomId::new(room);
        let server = self.pool.worker_for(&room).local_addr();
        let handle = self.pool.join(room, id, &label(id)).await.unwrap();
        let mut browser = Browser::with_transport(role, transport, server).await;
        let offer = browser.offer();
        let answer = handle.accept_offer(&offer, &[]).await.unwrap();
        browser.accept_answer(&answer);
        // Registered before the client runs: the engine's first renegotiation offer can
        // only come once it has connected.
        let (cmds, rx) = mpsc::channel(8);
        self.peers.lock().unwrap().insert(
            id,
            Peer {
                handle: Arc::new(handle),
                cmds: cmds.clone(),
            },
        );
        browser.run_with(id, cmds, rx)
    }

    /// Forgets the participant's handle (the test then removes it explicitly or lets it time
    /// out).
    pub fn forget(&self, id: ParticipantId) {
        self.peers.lock().unwrap().remove(&id);
    }

    /// The participant's handle.
    pub fn participant(&self, id: ParticipantId) -> Arc<ParticipantHandle> {
        self.peers.lock().unwrap().get(&id).unwrap().handle.clone()
    }

    /// `select_layer` on the participant's handle.
    pub async fn select_layer(
        &self,
        id: ParticipantId,
        track: TrackId,
        rid: &str,
    ) -> Result<(), SfuError> {
        let peer = self.peers.lock().unwrap().get(&id).cloned().unwrap();
        peer.handle.select_layer(track, rid).await
    }

    /// `set_source` on the participant's handle.
    pub async fn set_source(
        &self,
        id: ParticipantId,
        track: TrackId,
        source: TrackSource,
    ) -> Result<(), SfuError> {
        let peer = self.peers.lock().unwrap().get(&id).cloned().unwrap();
        peer.handle.set_source(track, source).await
    }

    pub fn events(&self) -> Vec<SfuEvent> {
        self.events.lock().unwrap().clone()
    }

    pub fn has_event(&self, f: impl Fn(&SfuEvent) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(f)
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `switchboard_sfu=debug,str0m=info`).
pub fn init_log() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
