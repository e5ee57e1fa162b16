//! ICE over TCP (RFC 6544, RFC 4571 framing): the engine announces a passive TCP candidate
//! next to its UDP one and carries sessions over TCP connections to its port; bad or silent
//! connections are closed without disturbing anyone.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::media::MediaKind;
use support::{
    Browser, Harness, Role, Transport, frame, label, stun_with_username, test_config, wait_until,
};
use switchboard_sfu::{ParticipantId, RoomId, SfuEvent, WorkerConfig, WorkerStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);

const WAIT: Duration = Duration::from_secs(15);

/// The `a=candidate` lines of an SDP as (protocol, priority, address, rest after `typ`).
fn candidates(sdp: &str) -> Vec<(String, u32, SocketAddr, String)> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ip: IpAddr = f[4].parse().unwrap();
            let port: u16 = f[5].parse().unwrap();
            (
                f[2].to_lowercase(),
                f[3].parse().unwrap(),
                SocketAddr::new(ip, port),
                f[7..].join(" "),
            )
        })
        .collect()
}

/// The candidates of the engine's answer to a publisher's first offer.
async fn answer_candidates(config: WorkerConfig) -> Vec<(String, u32, SocketAddr, String)> {
    let h = Harness::start(config).await;
    let p = h
        .pool
        .join(RoomId::new("room"), A, &label(A))
        .await
        .unwrap();
    let mut browser = Browser::new(Role::Publisher).await;
    let answer = p.accept_offer(&browser.offer(), &[]).await.unwrap();
    candidates(&answer)
}

async fn stats(h: &Harness) -> WorkerStats {
    h.sfu.stats().await.unwrap()
}

/// Polls the worker's counters until `cond` holds or `within` passes; returns whether it held.
async fn wait_stats(h: &Harness, within: Duration, cond: impl Fn(&WorkerStats) -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond(&stats(h).await) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the engine has closed `stream`: a read gives end of stream or a reset.
async fn closed_by_engine(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // Nothing is expected, but a stray byte is no close.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_offers_a_passive_tcp_candidate_below_the_udp_one() {
    let found = answer_candidates(test_config()).await;
    assert_eq!(found.len(), 2, "{found:?}");
    let (udp, tcp) = (&found[0], &found[1]);
    assert_eq!(udp.0, "udp", "{found:?}");
    assert!(udp.3.starts_with("host ufrag"), "{found:?}");
    assert_eq!(tcp.0, "tcp", "{found:?}");
    assert!(tcp.3.starts_with("host tcptype passive"), "{found:?}");
    // One port number for both protocols, and UDP preferred.
    assert_eq!(udp.2, tcp.2);
    assert!(udp.1 > tcp.1, "UDP priority {} <= TCP {}", udp.1, tcp.1);

    // The announced IP goes in both.
    let public: IpAddr = "203.0.113.7".parse().unwrap();
    let found = answer_candidates(WorkerConfig {
        public_ip: Some(public),
        ..test_config()
    })
    .await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|c| c.2.ip() == public), "{found:?}");

    // Either protocol can be left out of the answer.
    let found = answer_candidates(WorkerConfig {
        udp: false,
        ..test_config()
    })
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "tcp");
    let found = answer_candidates(WorkerConfig {
        tcp: false,
        ..test_config()
    })
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "udp");

    // But not both.
    let neither = switchboard_sfu::spawn(WorkerConfig {
        udp: false,
        tcp: false,
        ..test_config()
    })
    .await;
    assert!(neither.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tcp_nothing_listens_on_the_port() {
    let h = Harness::start(WorkerConfig {
        tcp: false,
        ..test_config()
    })
    .await;
    assert_eq!(h.sfu.tcp_addr(), None);
    assert!(TcpStream::connect(h.sfu.local_addr()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_over_tcp_in_both_directions() {
    let h = Harness::start(test_config()).await;
    assert_eq!(h.sfu.tcp_addr(), Some(h.sfu.local_addr()));
    // A publisher on TCP; one subscriber on UDP, one on TCP.
    let a = h
        .connect_with("room", A.0, Role::Publisher, Transport::Tcp)
        .await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    let c = h
        .connect_with("room", C.0, Role::Subscriber, Transport::Tcp)
        .await;
    for (who, client) in [("udp subscriber", &b), ("tcp subscriber", &c)] {
        assert!(
            wait_until(WAIT, || {
                let s = client.state();
                s.video_frames() >= 60 && s.audio_frames() >= 100
            })
            .await,
            "{who}: {:?}",
            client.state()
        );
        let s = client.state();
        for r in s.received.values() {
            assert_eq!(r.corrupt, 0, "{who}: {r:?}");
            assert_eq!(r.out_of_order, 0, "{who}: {r:?}");
        }
        assert!(s.of_kind(MediaKind::Video)[0].first_was_keyframe, "{who}");
    }
    let (sa, sb, sc) = (a.state(), b.state(), c.state());
    assert!(sa.connected && sa.video_sent >= 60);
    assert_eq!(sa.udp_bytes_in, 0, "the TCP publisher got UDP");
    assert!(sa.tcp_bytes_in > 0);
    assert_eq!(sb.tcp_bytes_in, 0);
    assert!(sb.udp_bytes_in > 50_000, "{}", sb.udp_bytes_in);
    assert_eq!(sc.udp_bytes_in, 0, "the TCP subscriber got UDP");
    assert!(sc.tcp_bytes_in > 50_000, "{}", sc.tcp_bytes_in);

    let s = stats(&h).await;
    assert_eq!((s.tcp_connections, s.tcp_accepted), (2, 2), "{s:?}");
    assert_eq!(
        (
            s.tcp_refused,
            s.tcp_invalid,
            s.tcp_timeouts,
            s.tcp_overflows
        ),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.connected, 3);

    // A session that ends takes its connection with it.
    h.pool.leave(C).await.unwrap();
    assert!(wait_until(WAIT, || c.state().tcp_closed_by_server).await);
    assert_eq!(stats(&h).await.tcp_connections, 1);
    let before = b.state().video_frames();
    assert!(wait_until(WAIT, || b.state().video_frames() >= before + 30).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_wins_when_both_work_and_losing_tcp_leaves_the_session_on_udp() {
    let h = Harness::start(test_config()).await;
    let _a = h.connect("room", A.0, Role::Publisher).await;
    // Checks go both ways (the TCP connection is bound to the session), media over UDP.
    let b = h
        .connect_with("room", B.0, Role::Subscriber, Transport::Both)
        .await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 30).await);
    assert!(
        wait_until(WAIT, || b.state().tcp_bytes_in > 0).await,
        "no ICE check answered over TCP"
    );
    let s = b.state();
    assert!(
        s.udp_bytes_in > 20 * s.tcp_bytes_in,
        "media should come over UDP: {} bytes UDP, {} TCP",
        s.udp_bytes_in,
        s.tcp_bytes_in
    );
    assert_eq!(stats(&h).await.tcp_connections, 1);

    b.close_tcp().await;
    assert!(wait_stats(&h, WAIT, |s| s.tcp_connections == 0).await);
    let before = b.state().video_frames();
    assert!(wait_until(WAIT, || b.state().video_frames() >= before + 60).await);
    assert!(!h.has_event(|e| matches!(e, SfuEvent::Left { .. })));
    assert_eq!(stats(&h).await.connected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_silent_tcp_connections_are_closed_and_a_udp_session_is_untouched() {
    let pending_timeout = Duration::from_secs(1);
    let h = Harness::start(WorkerConfig {
        tcp_pending_timeout: pending_timeout,
        tcp_max_pending: 3,
        ..test_config()
    })
    .await;
    let _a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 10).await);
    let target = h.sfu.local_addr();
    let frames_before = b.state().video_frames();

    // Closed at their first frame: not an ICE check, an ICE check for no session, a length
    // over the limit (also what a stray HTTP request's first two bytes read as), and bytes
    // that are no frame at all.
    let first_frames: [(&str, Vec<u8>); 5] = [
        ("garbage", frame(&[0x5a; 300])),
        (
            "RTP",
            frame(&[0x80, 0x60, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6]),
        ),
        (
            "unknown session",
            frame(&stun_with_username("nobody:someone")),
        ),
        ("oversized", [vec![0xff, 0xff], vec![0; 100]].concat()),
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in &first_frames {
        let mut s = TcpStream::connect(target).await.unwrap();
        s.write_all(bytes).await.unwrap();
        assert!(
            closed_by_engine(&mut s, Duration::from_millis(900)).await,
            "{what}: not closed at once"
        );
    }
    let s = stats(&h).await;
    assert_eq!(s.tcp_invalid, 5, "{s:?}");
    assert_eq!(s.tcp_connections, 0, "{s:?}");

    // Silent ones (one sending only an empty frame, which proves nothing) stay until the
    // pending timeout; past the pending limit they are closed as they come.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(target).await.unwrap());
    }
    silent[0].write_all(&frame(&[])).await.unwrap();
    let mut extra = TcpStream::connect(target).await.unwrap();
    assert!(
        closed_by_engine(&mut extra, Duration::from_millis(500)).await,
        "a connection past the pending limit stayed"
    );
    assert_eq!(stats(&h).await.tcp_refused, 1);
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_engine(s, pending_timeout * 5).await,
            "silent connection {i} stayed"
        );
    }
    let elapsed = opened.elapsed();
    assert!(
        elapsed >= pending_timeout - Duration::from_millis(100),
        "closed after {elapsed:?}, before the pending timeout"
    );
    let s = stats(&h).await;
    assert_eq!((s.tcp_timeouts, s.tcp_connections), (3, 0), "{s:?}");

    // Room for new connections again.
    let mut again = TcpStream::connect(target).await.unwrap();
    assert!(!closed_by_engine(&mut again, Duration::from_millis(300)).await);

    // The UDP session never noticed.
    assert!(wait_until(WAIT, || b.state().video_frames() >= frames_before + 60).await);
    assert_eq!(b.state().of_kind(MediaKind::Video)[0].corrupt, 0);
    assert!(!h.has_event(|e| matches!(e, SfuEvent::Left { .. })));
    assert_eq!(stats(&h).await.connected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_that_stops_reading_is_closed_when_its_send_buffer_overflows() {
    // Small buffers all along, so that what the client does not read soon reaches the
    // engine's own buffer.
    let h = Harness::start(WorkerConfig {
        tcp_send_buffer: 16 * 1024,
        socket_buffer: 32 * 1024,
        ..test_config()
    })
    .await;
    let _a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    let c = h
        .connect_with("room", C.0, Role::Subscriber, Transport::TcpSmallWindow)
        .await;
    assert!(wait_until(WAIT, || c.state().video_frames() >= 10).await);
    c.pause_tcp_reads().await;
    assert!(
        wait_stats(&h, Duration::from_secs(60), |s| s.tcp_connections == 0).await,
        "the connection that stopped reading is still open"
    );
    let s = stats(&h).await;
    assert_eq!(s.tcp_overflows, 1, "{s:?}");
    // The others go on.
    let before = b.state().video_frames();
    assert!(wait_until(WAIT, || b.state().video_frames() >= before + 60).await);
    assert_eq!(b.state().of_kind(MediaKind::Video)[0].corrupt, 0);
}
