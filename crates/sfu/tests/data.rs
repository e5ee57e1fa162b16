//! Data channels through the engine: what a participant sends on its channel `L` reaches the
//! others of its room on a channel `<its label>/L` the engine opens, bytes and text/binary
//! flag intact; participants without data channels are skipped; a subscriber that cannot keep
//! up loses messages instead of growing the engine's memory; a leaver's channels close.

mod support;

use std::time::Duration;

use support::{Harness, Role, label, test_config, wait_until};
use switchboard_sfu::{ParticipantId, SfuEvent};

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);
const D: ParticipantId = ParticipantId(4);

const WAIT: Duration = Duration::from_secs(10);
/// The engine's data-channel send buffer per session.
const SEND_BUFFER: usize = 1024 * 1024;

/// A binary message larger than one SCTP chunk, every byte value included.
fn big_binary() -> Vec<u8> {
    (0..40_000u32).map(|i| (i * 31 % 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_messages_reach_the_room_on_channels_named_after_the_sender() {
    let h = Harness::start(test_config()).await;
    // A, B and D negotiate data channels (an application m-line); C only audio and video.
    let a = h.connect("room", A.0, Role::Subscriber).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    let c = h.connect("room", C.0, Role::Publisher).await;
    let d = h.connect("other", D.0, Role::Subscriber).await;
    assert!(
        wait_until(WAIT, || [&a, &b, &c, &d]
            .iter()
            .all(|x| x.state().connected))
        .await
    );

    a.open_channel("chat").await;
    assert!(wait_until(WAIT, || a.state().channels_opened.contains(&"chat".into())).await);
    let text = "hello, room ✓".as_bytes();
    let small = [0u8, 1, 2, 255, 0];
    let big = big_binary();
    assert!(a.send("chat", false, text).await);
    assert!(a.send("chat", true, &small).await);
    assert!(a.send("chat", true, &big).await);

    let from_a = format!("{}/chat", label(A));
    assert!(
        wait_until(WAIT, || b.state().messages_on(&from_a).len() == 3).await,
        "B got {:?}",
        b.state()
            .messages
            .iter()
            .map(|m| (&m.channel, m.binary, m.data.len()))
            .collect::<Vec<_>>()
    );
    let s = b.state();
    let got: Vec<(bool, &[u8])> = s
        .messages_on(&from_a)
        .iter()
        .map(|m| (m.binary, m.data.as_slice()))
        .collect();
    assert_eq!(
        got,
        [(false, text), (true, &small[..]), (true, &big[..])],
        "in order, verbatim, text and binary kept"
    );
    let relays = s.channels_opened.iter().filter(|l| **l == from_a).count();
    assert_eq!(
        relays, 1,
        "one relayed channel, reused: {:?}",
        s.channels_opened
    );
    assert!(
        !a.state().channels_opened.iter().any(|l| l.contains('/')),
        "nothing relayed back to A"
    );

    // B answers on a channel of its own; A gets it on B's relay, B nothing back.
    b.open_channel("chat").await;
    assert!(wait_until(WAIT, || b.state().channels_opened.contains(&"chat".into())).await);
    assert!(b.send("chat", false, b"hi A").await);
    let from_b = format!("{}/chat", label(B));
    assert!(wait_until(WAIT, || a.state().messages_on(&from_b).len() == 1).await);
    assert_eq!(a.state().messages_on(&from_b)[0].data, b"hi A");

    // C (no application m-line) and D (another room) got nothing and were not disturbed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for x in [&c, &d] {
        let s = x.state();
        assert!(s.messages.is_empty(), "{:?}", s.messages);
        assert_eq!(s.offers_answered, 0);
    }
    assert!(
        b.state().messages_on(&from_b).is_empty() && d.state().channels_opened.len() == 1,
        "D only has its own channel: {:?}",
        d.state().channels_opened
    );
    let stats = h.sfu.stats().await.unwrap();
    assert_eq!(stats.data_messages_forwarded, 4, "{stats:?}");
    assert_eq!(stats.data_messages_dropped, 0);
    assert_eq!(stats.data_messages_skipped, 4, "C, once per message");

    // A leaves: its relayed channel closes on B; B's relay to A goes with A's session.
    h.sfu.leave(A).await.unwrap();
    assert!(
        wait_until(WAIT, || b.state().channels_closed.contains(&from_a)).await,
        "B {:?}",
        b.state().channels_closed
    );
    assert!(b.send("chat", false, b"anyone?").await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!h.has_event(|e| matches!(e, SfuEvent::Left { participant, .. } if *participant == B)));
    let stats = h.sfu.stats().await.unwrap();
    assert_eq!(stats.data_messages_forwarded, 4, "nobody left to receive");
    assert_eq!(stats.data_messages_skipped, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_cannot_keep_up_loses_messages_not_memory() {
    // 1.125 MiB: more than the engine buffers per session, little enough for a loaded machine.
    const MESSAGE: usize = 48 * 1024;
    const MESSAGES: usize = 24;
    const SEND_WAIT: Duration = Duration::from_secs(30);
    let h = Harness::start(test_config()).await;
    let a = h.connect("room", A.0, Role::Subscriber).await;
    let b = h.connect("room", B.0, Role::Subscriber).await;
    assert!(wait_until(WAIT, || a.state().connected && b.state().connected).await);
    a.open_channel("file").await;
    assert!(wait_until(WAIT, || a.state().channels_opened.contains(&"file".into())).await);
    assert!(a.send("file", true, b"start").await);
    let from_a = format!("{}/file", label(A));
    assert!(wait_until(WAIT, || b.state().messages_on(&from_a).len() == 1).await);

    // B stops reading (its socket closes): nothing it is sent is acknowledged any more.
    b.stop().await;
    let chunk = vec![0x5au8; MESSAGE];
    let mut sent = 0;
    let deadline = std::time::Instant::now() + SEND_WAIT;
    while sent < MESSAGES && std::time::Instant::now() < deadline {
        if a.send("file", true, &chunk).await {
            sent += 1;
        } else {
            // A's own send buffer is full: wait for the engine's acks.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(sent, MESSAGES, "A could not send");
    // Every message is accounted for: taken into B's session, or dropped.
    let mut stats = h.sfu.stats().await.unwrap();
    let deadline = std::time::Instant::now() + SEND_WAIT;
    while stats.data_messages_forwarded + stats.data_messages_dropped < 1 + MESSAGES as u64
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = h.sfu.stats().await.unwrap();
    }
    assert_eq!(
        stats.data_messages_forwarded + stats.data_messages_dropped,
        1 + MESSAGES as u64,
        "{stats:?}"
    );
    // What B took is bounded by the engine's per-session send buffer (1 MiB), the rest dropped.
    let taken_after_stop = stats.data_messages_forwarded - 1;
    assert!(
        taken_after_stop as usize * MESSAGE <= SEND_BUFFER,
        "{stats:?}"
    );
    assert!(
        taken_after_stop as usize * MESSAGE >= SEND_BUFFER / 2,
        "the buffer was used before dropping: {stats:?}"
    );
    assert!(stats.data_messages_dropped >= 2, "{stats:?}");
}
