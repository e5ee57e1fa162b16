//! One emulated browser: a str0m `Rtc` (full ICE) on its own UDP socket on this host.
//!
//! A client publishes (sendonly Opus and VP8 with synthetic frames, [`crate::media`]),
//! receives whatever the server offers it, or both. It never blocks: the driver thread that
//! owns it calls [`Client::read`] when its socket is readable and [`Client::tick`] when
//! [`Client::next_wake`] has passed, and every call drains `str0m` until it asks for a
//! timeout. What it sees goes into the thread's [`Tally`] (packets, delays) and into the
//! client's own counters (frames received per publisher), read at the end of the run.
//!
//! Receive times come from the kernel (`SO_TIMESTAMPNS`), not from when the driver got
//! around to the datagram, so the forwarding delay excludes the load tool's own queueing;
//! the time the frame was processed is kept too, as the delay an application would see.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::UdpSocket;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::media::{self, Rates, Stamp};

/// Kernel receive buffer of a client socket, like a browser's, so that a keyframe burst
/// survives a busy driver thread. Drops are counted all the same.
const RECV_BUFFER: usize = 1 << 20;

/// What a client's first offer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferKind {
    /// Sendonly audio and video.
    Publish,
    /// One recvonly audio m-line: enough to open a session with a server that then adds
    /// what there is to receive by renegotiation (Switchboard's receivers do this).
    Receive,
}

/// A window of send times (Unix nanoseconds, half-open) in which the run is measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    pub fn contains(&self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }
}

/// What one driver thread measured, over all its clients.
pub struct Tally {
    pub window: Window,
    /// Media packets forwarded: the RTP packets of every frame sent in the window that a
    /// subscriber received (padding, probes and retransmissions not counted).
    pub media_packets: u64,
    /// Every RTP datagram (and its bytes) that reached a subscriber inside the window,
    /// including what the server adds (padding and probes, retransmissions).
    pub rtp_received: u64,
    pub rtp_bytes_received: u64,
    /// Forwarding delay of frames sent in the window, µs: publisher's write to the kernel's
    /// receive time of the datagram that completed the frame at the subscriber.
    pub delay: Histogram<u64>,
    /// The same up to the moment the subscriber's `str0m` produced the frame.
    pub app_delay: Histogram<u64>,
    /// Datagrams the kernel would not take (send buffer full); `str0m` errors.
    pub send_errors: u64,
    pub rtc_errors: u64,
    /// Keyframe requests (PLI/FIR) publishers got, and keyframes they sent.
    pub keyframe_requests: u64,
    pub keyframes_sent: u64,
    /// Frames received with a stamp that is not ours (should stay 0).
    pub unreadable_frames: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            window: Window::default(),
            media_packets: 0,
            rtp_received: 0,
            rtp_bytes_received: 0,
            delay: new_histogram(),
            app_delay: new_histogram(),
            send_errors: 0,
            rtc_errors: 0,
            keyframe_requests: 0,
            keyframes_sent: 0,
            unreadable_frames: 0,
        }
    }
}

/// Delays in microseconds, 1 µs to 60 s, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// The publishing side of a client.
struct Publisher {
    tag: u32,
    audio: Mid,
    video: Mid,
    next_video: Instant,
    next_audio: Instant,
    video_index: u32,
    audio_index: u32,
    want_keyframe: bool,
}

/// A client's counters, as the run reads them.
#[derive(Debug, Clone, Default)]
pub struct ClientCounts {
    /// The tag on our frames, if we publish.
    pub tag: Option<u32>,
    pub connected: bool,
    pub failed: Option<String>,
    /// Distinct (publisher, kind) tracks from which at least one frame arrived.
    pub tracks_seen: usize,
    /// Frames received whose send time is in the window, by publisher tag.
    pub received: HashMap<u32, u64>,
    /// Frames this client published in the window (0 unless it publishes).
    pub frames_sent: u64,
    /// RTP datagrams this client sent in the window.
    pub rtp_sent: u64,
    /// Offers from the server this client answered.
    pub offers_answered: u32,
}

pub struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    rates: Rates,
    /// Tag stamped on our frames, if we publish.
    tag: u32,
    pending: Option<SdpPendingOffer>,
    publisher: Option<Publisher>,
    next_timeout: Instant,
    counts: ClientCounts,
    seen: Vec<(u32, MediaKind)>,
}

impl Client {
    /// A client on a fresh socket on `ip` (an address of this host). `cert` is shared by
    /// all clients: generating a key pair per client would only slow the set-up.
    pub fn new(tag: u32, ip: Ipv4Addr, cert: DtlsCert, rates: Rates) -> io::Result<Client> {
        let std_socket = std::net::UdpSocket::bind((ip, 0))?;
        std_socket.set_nonblocking(true)?;
        let sock = socket2::SockRef::from(&std_socket);
        let _ = sock.set_recv_buffer_size(RECV_BUFFER);
        let _ = sock.set_send_buffer_size(RECV_BUFFER);
        enable_timestamps(&std_socket)?;
        let local = std_socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = RtcConfig::new()
            .set_dtls_cert(cert)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        rtc.add_local_candidate(
            Candidate::host(local, "udp").map_err(|e| io::Error::other(e.to_string()))?,
        );
        Ok(Client {
            rtc,
            socket: UdpSocket::from_std(std_socket),
            local,
            rates,
            tag,
            pending: None,
            publisher: None,
            next_timeout: now,
            counts: ClientCounts::default(),
            seen: Vec::new(),
        })
    }

    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    pub fn counts(&self) -> ClientCounts {
        let mut counts = self.counts.clone();
        counts.tag = self.publisher.as_ref().map(|p| p.tag);
        counts.tracks_seen = self.seen.len();
        counts
    }

    /// The client's first offer.
    pub fn offer(&mut self, kind: OfferKind) -> Result<String, String> {
        let mut api = self.rtc.sdp_api();
        match kind {
            OfferKind::Publish => {
                let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
                let now = Instant::now();
                self.publisher = Some(Publisher {
                    tag: self.tag,
                    audio,
                    video,
                    next_video: now,
                    next_audio: now,
                    video_index: 0,
                    audio_index: 0,
                    want_keyframe: true,
                });
            }
            OfferKind::Receive => {
                api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            }
        }
        let (offer, pending) = api.apply().ok_or("nothing to offer")?;
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// The (audio, video) mids of a publishing client.
    pub fn published_mids(&self) -> Option<(String, String)> {
        self.publisher
            .as_ref()
            .map(|p| (p.audio.to_string(), p.video.to_string()))
    }

    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let pending = self.pending.take().ok_or("no offer outstanding")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        self.next_timeout = Instant::now();
        Ok(())
    }

    /// Answers a server's offer (new tracks to receive, or a subscription's first offer).
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
        self.counts.offers_answered += 1;
        self.next_timeout = Instant::now();
        Ok(answer.to_sdp_string())
    }

    /// When [`Client::tick`] has something to do.
    pub fn next_wake(&self) -> Instant {
        match &self.publisher {
            Some(p) if self.counts.connected => {
                self.next_timeout.min(p.next_video).min(p.next_audio)
            }
            _ => self.next_timeout,
        }
    }

    /// Reads every datagram waiting on the socket.
    pub fn read(&mut self, buf: &mut [u8], tally: &mut Tally) {
        loop {
            let (len, source, arrival_ns) = match recv_stamped(&self.socket, buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let data = &buf[..len];
            let arrival_ns = arrival_ns.unwrap_or_else(media::now_ns);
            if media::is_rtp(data) && tally.window.contains(arrival_ns) {
                tally.rtp_received += 1;
                tally.rtp_bytes_received += len as u64;
            }
            let Ok(contents) = data.try_into() else {
                continue;
            };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.local,
                    contents,
                },
            );
            if self.rtc.handle_input(input).is_err() {
                tally.rtc_errors += 1;
            }
            self.drain(tally, Some(arrival_ns));
        }
    }

    /// Runs `str0m`'s timers and sends the media that is due.
    pub fn tick(&mut self, now: Instant, tally: &mut Tally) {
        if now >= self.next_timeout {
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                tally.rtc_errors += 1;
            }
            self.drain(tally, None);
        }
        if !self.counts.connected || self.publisher.is_none() {
            return;
        }
        self.send_media(now, tally);
        self.drain(tally, None);
    }

    fn send_media(&mut self, now: Instant, tally: &mut Tally) {
        let Some(p) = self.publisher.as_mut() else {
            return;
        };
        if now >= p.next_video {
            // A late turn sends one frame, not a burst: what a real encoder would do.
            p.next_video = (p.next_video + self.rates.video_interval()).max(now);
            let key = p.want_keyframe;
            let stamp = Stamp {
                publisher: p.tag,
                index: p.video_index,
                sent_ns: media::now_ns(),
            };
            let frame = media::video_frame(stamp, key, &self.rates);
            let time = MediaTime::new(
                u64::from(p.video_index) * 90_000 / u64::from(self.rates.fps.max(1)),
                Frequency::NINETY_KHZ,
            );
            if write(&mut self.rtc, p.video, now, time, frame) {
                p.video_index += 1;
                p.want_keyframe = false;
                tally.keyframes_sent += u64::from(key);
                if tally.window.contains(stamp.sent_ns) {
                    self.counts.frames_sent += 1;
                }
            }
        }
        if now >= p.next_audio {
            p.next_audio = (p.next_audio + media::AUDIO_INTERVAL).max(now);
            let stamp = Stamp {
                publisher: p.tag,
                index: p.audio_index,
                sent_ns: media::now_ns(),
            };
            let time = MediaTime::new(u64::from(p.audio_index) * 960, Frequency::FORTY_EIGHT_KHZ);
            if write(&mut self.rtc, p.audio, now, time, media::audio_frame(stamp)) {
                p.audio_index += 1;
                if tally.window.contains(stamp.sent_ns) {
                    self.counts.frames_sent += 1;
                }
            }
        }
    }

    /// Polls `str0m` until it asks for a timeout: sends what it transmits, handles events.
    /// `arrival_ns` is the kernel's receive time of the datagram just handed in, if any.
    fn drain(&mut self, tally: &mut Tally, arrival_ns: Option<u64>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    if media::is_rtp(&t.contents) && tally.window.contains(media::now_ns()) {
                        self.counts.rtp_sent += 1;
                    }
                    if self.socket.send_to(&t.contents, t.destination).is_err() {
                        tally.send_errors += 1;
                    }
                }
                Ok(Output::Event(event)) => self.handle_event(event, tally, arrival_ns),
                Err(e) => {
                    tally.rtc_errors += 1;
                    self.counts.failed.get_or_insert_with(|| e.to_string());
                    // A broken session asks for nothing more; look again in a while.
                    self.next_timeout = Instant::now() + Duration::from_millis(100);
                    return;
                }
            }
        }
    }

    fn handle_event(&mut self, event: Event, tally: &mut Tally, arrival_ns: Option<u64>) {
        match event {
            Event::Connected => {
                self.counts.connected = true;
                if let Some(p) = self.publisher.as_mut() {
                    let now = Instant::now();
                    p.next_video = now;
                    p.next_audio = now;
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.counts
                    .failed
                    .get_or_insert_with(|| "ICE disconnected".into());
            }
            Event::KeyframeRequest(_) => {
                tally.keyframe_requests += 1;
                if let Some(p) = self.publisher.as_mut() {
                    p.want_keyframe = true;
                }
            }
            Event::MediaData(data) => {
                let kind = self
                    .rtc
                    .media(data.mid)
                    .map_or(MediaKind::Video, |m| m.kind());
                let Some(stamp) = media::read_stamp(kind, &data.data) else {
                    tally.unreadable_frames += 1;
                    return;
                };
                if !self.seen.contains(&(stamp.publisher, kind)) {
                    self.seen.push((stamp.publisher, kind));
                }
                if !tally.window.contains(stamp.sent_ns) {
                    return;
                }
                *self.counts.received.entry(stamp.publisher).or_default() += 1;
                let (first, last) = (**data.seq_range.start(), **data.seq_range.end());
                tally.media_packets += last.saturating_sub(first) + 1;
                let processed_ns = media::now_ns();
                let arrival_ns = arrival_ns.unwrap_or(processed_ns);
                let micros = |at: u64| (at.saturating_sub(stamp.sent_ns) / 1000).max(1);
                tally.delay.saturating_record(micros(arrival_ns));
                tally.app_delay.saturating_record(micros(processed_ns));
            }
            _ => {}
        }
    }
}

/// Writes one frame on a sending m-line with its first payload type; whether str0m took it.
fn write(rtc: &mut Rtc, mid: Mid, now: Instant, time: MediaTime, frame: Vec<u8>) -> bool {
    let Some(writer) = rtc.writer(mid) else {
        return false;
    };
    let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
        return false;
    };
    writer.write(pt, now, time, frame).is_ok()
}

/// Asks the kernel to stamp every received datagram with its arrival time.
fn enable_timestamps(socket: &std::net::UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `recvmsg` on an IPv4 socket: (length, source, kernel receive time in Unix ns).
fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u64>)> {
    // SAFETY: every pointer in `msg` refers to a live local buffer of the length given, and
    // the control messages are read only within `msg_controllen` through the CMSG macros.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut stamp = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let source = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        );
        Ok((n as usize, SocketAddr::V4(source), stamp))
    }
}
