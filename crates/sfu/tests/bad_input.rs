//! Bad input gets a typed error or is dropped, and never disturbs other participants:
//! garbage and truncated datagrams, unusable offers and answers, clients that never connect.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::{Browser, Harness, Role, label, stun_with_username, test_config, wait_until};
use switchboard_sfu::{
    LeaveReason, ParticipantId, RoomId, RouteError, SdpError, SfuError, SfuEvent, WorkerConfig,
};
use tokio::net::UdpSocket;

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const X: ParticipantId = ParticipantId(9);

const WAIT: Duration = Duration::from_secs(10);

fn stun_binding_request() -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[7; 12]);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_without_disturbing_sessions() {
    let h = Harness::start(test_config()).await;
    let _a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 10).await);

    let attacker = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let target = h.sfu.local_addr();
    let stun = stun_binding_request();
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 1],
        vec![0x00; 3],
        stun[..10].to_vec(),                  // truncated STUN header
        stun.clone(),                         // STUN without USERNAME
        stun_with_username("nobody:someone"), // a session that does not exist
        vec![0x16, 0xfe, 0xfd],               // truncated DTLS record
        vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff], // DTLS claiming a huge length
        vec![0x80, 0x60, 0x00, 0x01],         // truncated RTP
        [
            vec![0x80, 0x60, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4],
            vec![0xab; 1100],
        ]
        .concat(), // RTP, unknown SSRC
        vec![0x81, 0xc8, 0x00, 0x06],         // truncated RTCP SR
        vec![0x5a; 1500],
    ];
    junk.extend((0..50u8).map(|i| vec![i.wrapping_mul(37); usize::from(i) * 23]));
    for datagram in &junk {
        attacker.send_to(datagram, target).await.unwrap();
    }

    // Media keeps flowing, nobody left, the junk is counted.
    let before = b.state().video_frames();
    assert!(wait_until(WAIT, || b.state().video_frames() >= before + 15).await);
    let s = b.state();
    assert_eq!(s.of_kind(str0m::media::MediaKind::Video)[0].corrupt, 0);
    assert!(!h.has_event(|e| matches!(e, SfuEvent::Left { .. })));
    let stats = h.sfu.stats().await.unwrap();
    assert!(
        stats.datagrams_dropped >= junk.len() as u64 - 1,
        "dropped {} of {}",
        stats.datagrams_dropped,
        junk.len()
    );
    assert_eq!(stats.connected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_offers_and_answers_get_typed_errors() {
    let h = Harness::start(test_config()).await;
    let x = h.sfu.join(RoomId::new("room"), X, "x").await.unwrap();

    let err = x.accept_offer("this is not sdp", &[]).await.unwrap_err();
    assert!(
        matches!(err, SfuError::Sdp(SdpError::Invalid(_) | SdpError::NoMedia)),
        "{err:?}"
    );

    let no_media = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    let err = x.accept_offer(no_media, &[]).await.unwrap_err();
    assert!(matches!(err, SfuError::Sdp(SdpError::NoMedia)), "{err:?}");

    let mut browser = Browser::new(Role::Publisher).await;
    let good = browser.offer();
    let unsupported = good
        .replace("VP8/90000", "FOO/90000")
        .replace("H264/90000", "FOO/90000")
        .replace("VP9/90000", "FOO/90000")
        .replace("AV1/90000", "FOO/90000")
        .replace("H265/90000", "FOO/90000")
        .replace("opus/48000", "BAR/48000");
    let err = x.accept_offer(&unsupported, &[]).await.unwrap_err();
    assert!(
        matches!(err, SfuError::Sdp(SdpError::UnsupportedCodecs { .. })),
        "{err:?}"
    );

    let truncated = &good[..good.len() / 3];
    assert!(x.accept_offer(truncated, &[]).await.is_err());

    // An answer before any session, and one nobody asked for.
    let err = x.accept_answer(&good).await.unwrap_err();
    assert!(
        matches!(
            err,
            SfuError::Sdp(SdpError::NoSession | SdpError::Invalid(_))
        ),
        "{err:?}"
    );

    // None of that broke the participant: a good offer still works.
    let answer = x.accept_offer(&good, &[]).await.unwrap();
    assert!(answer.contains("a=ice-lite"), "the engine is ICE-lite");
    browser.accept_answer(&answer);
    let err = x.accept_answer(&answer).await.unwrap_err();
    assert!(
        matches!(
            err,
            SfuError::Sdp(SdpError::NoPendingOffer | SdpError::Invalid(_))
        ),
        "{err:?}"
    );

    // Unknown participants and duplicate ids.
    let err = h.sfu.join(RoomId::new("room"), X, "x").await.unwrap_err();
    assert!(matches!(err, SfuError::Route(RouteError::AlreadyJoined(X))));

    // A label that could not be an msid stream id is refused before reaching the worker.
    for bad in ["", "a b", "a/b", "x\r\na=msid:evil"] {
        let err = h
            .sfu
            .join(RoomId::new("room"), ParticipantId(77), bad)
            .await
            .unwrap_err();
        assert!(matches!(err, SfuError::InvalidLabel(_)), "{bad:?}: {err:?}");
    }
    assert_eq!(h.sfu.stats().await.unwrap().router.participants, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_connects_times_out_and_is_cleaned_up() {
    let config = WorkerConfig {
        connect_timeout: Duration::from_secs(2),
        ..test_config()
    };
    let h = Harness::start(config).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    assert!(wait_until(WAIT, || a.state().connected).await);

    // X offers but never sends a packet; Y joins and never even offers.
    let x = h.sfu.join(RoomId::new("room"), X, "x").await.unwrap();
    let mut silent = Browser::new(Role::Subscriber).await;
    x.accept_offer(&silent.offer(), &[]).await.unwrap();
    let y = h
        .sfu
        .join(RoomId::new("room"), ParticipantId(10), "y")
        .await
        .unwrap();

    for who in [X, ParticipantId(10)] {
        assert!(
            wait_until(WAIT, || h.has_event(|e| *e
                == SfuEvent::Left {
                    participant: who,
                    reason: LeaveReason::ConnectTimeout
                }))
            .await,
            "{who} not timed out: {:?}",
            h.events()
        );
    }
    let stats = h.sfu.stats().await.unwrap();
    assert_eq!(stats.router.participants, 1, "only A is left");
    assert_eq!(
        stats.router.subscriptions, 0,
        "X's subscriptions went with it"
    );
    assert!(!h.has_event(|e| *e
        == SfuEvent::Left {
            participant: A,
            reason: LeaveReason::ConnectTimeout
        }));
    assert!(a.state().connected);

    // Commands for a removed participant get a clear error.
    let err = x.accept_offer(&silent.offer(), &[]).await.unwrap_err();
    assert!(matches!(
        err,
        SfuError::Route(RouteError::UnknownParticipant(X))
    ));
    drop(y);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_participant_handle_leaves() {
    let h = Harness::start(test_config()).await;
    let x = h.sfu.join(RoomId::new("room"), X, "x").await.unwrap();
    drop(x);
    assert!(
        wait_until(WAIT, || h.has_event(|e| *e
            == SfuEvent::Left {
                participant: X,
                reason: LeaveReason::Left
            }))
        .await
    );
    assert_eq!(h.sfu.stats().await.unwrap().router.participants, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_bind_address_needs_a_public_ip() {
    let config = WorkerConfig {
        bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        ..WorkerConfig::default()
    };
    let err = switchboard_sfu::spawn(config.clone()).await.unwrap_err();
    assert!(matches!(err, SfuError::Config(_)), "{err:?}");

    let config = WorkerConfig {
        public_ip: Some(Ipv4Addr::LOCALHOST.into()),
        ..config
    };
    let (sfu, _events) = switchboard_sfu::spawn(config).await.unwrap();
    assert_eq!(sfu.announced_addr().ip(), Ipv4Addr::LOCALHOST);
    assert_eq!(sfu.announced_addr().port(), sfu.local_addr().port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_silent_is_removed() {
    let config = WorkerConfig {
        idle_timeout: Duration::from_secs(3),
        ..test_config()
    };
    let h = Harness::start(config).await;
    let a = h.connect("room", A.0, Role::Publisher).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || b.state().video_frames() >= 10).await);

    // A's browser vanishes without a word: its tracks go once the idle timeout passes.
    a.stop().await;
    assert!(
        wait_until(WAIT, || h.has_event(|e| *e
            == SfuEvent::Left {
                participant: A,
                reason: LeaveReason::IceDisconnected
            }))
        .await,
        "{:?}",
        h.events()
    );
    assert!(wait_until(WAIT, || b.state().stopped_mids.len() == 2).await);
    let stats = h.sfu.stats().await.unwrap();
    assert_eq!(stats.router.tracks, 0);
    assert_eq!(stats.router.participants, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_offers_never_break_the_worker() {
    let h = Harness::start(test_config()).await;
    let mut browser = Browser::new(Role::Publisher).await;
    let good = browser.offer();
    // Every cut of a valid offer, each on a fresh participant: refused or answered, never a
    // crash, and the worker still serves a whole offer afterwards.
    for (n, cut) in (0..good.len()).step_by(37).enumerate() {
        let p = h
            .sfu
            .join(RoomId::new("fuzz"), ParticipantId(100 + n as u64), "fuzz")
            .await
            .unwrap();
        let _ = p.accept_offer(&good[..cut], &[]).await;
        p.leave().await.unwrap();
    }
    let x = h.sfu.join(RoomId::new("fuzz"), X, "x").await.unwrap();
    assert!(x.accept_offer(&good, &[]).await.is_ok());
    let stats = h.sfu.stats().await.unwrap();
    assert_eq!(stats.router.participants, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_lost_to_a_full_event_queue_is_made_again() {
    let config = WorkerConfig {
        event_queue: 2,
        ..test_config()
    };
    // Nobody reads events at first: the queue fills and B's renegotiation offer is dropped.
    let (sfu, mut events) = switchboard_sfu::spawn(config).await.unwrap();
    let connect = async |id: ParticipantId, role: Role| {
        let handle = sfu.join(RoomId::new("room"), id, &label(id)).await.unwrap();
        let mut browser = Browser::new(role).await;
        let answer = handle.accept_offer(&browser.offer(), &[]).await.unwrap();
        browser.accept_answer(&answer);
        (handle, browser.run(id))
    };
    let (_ha, a) = connect(A, Role::Publisher).await;
    let (hb, b) = connect(B, Role::Subscriber).await;
    assert!(wait_until(WAIT, || a.state().connected && b.state().connected).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sfu.stats().await.unwrap().events_dropped > 0);

    // Reading again: the offer comes back, and media flows once it is answered.
    let offer = loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(SfuEvent::Offer { participant, sdp })) if participant == B => break sdp,
            Ok(Some(_)) => {}
            other => panic!("no offer for B: {other:?}"),
        }
    };
    let answer = b.accept_offer(offer).await.unwrap();
    hb.accept_answer(&answer).await.unwrap();
    assert!(wait_until(WAIT, || b.state().video_frames() >= 10).await);
}
