//! A pool of workers: rooms are pinned to one worker each, media flows in every room, and the
//! pool's views add the workers up.

mod support;

use std::time::Duration;

use support::{Harness, Role, test_config, wait_until};
use switchboard_sfu::{ParticipantId, RoomId};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_workers_and_each_forwards() {
    let h = Harness::start_pool(test_config(), 2).await;
    let workers = h.pool.workers();
    assert_eq!(workers.len(), 2);
    assert_ne!(workers[0].local_addr(), workers[1].local_addr());

    // Two rooms that land on different workers.
    let first = RoomId::new("room-0");
    let other = (1..100)
        .map(|i| RoomId::new(format!("room-{i}")))
        .find(|r| h.pool.worker_for(r).local_addr() != h.pool.worker_for(&first).local_addr())
        .expect("some room hashes to the other worker");
    assert_eq!(
        h.pool.worker_for(&first).local_addr(),
        h.pool.worker_for(&first).local_addr(),
        "pinned"
    );

    let _a = h.connect(first.as_str(), 1, Role::Publisher).await;
    let b = h.connect(first.as_str(), 2, Role::Subscriber).await;
    let _c = h.connect(other.as_str(), 3, Role::Publisher).await;
    let d = h.connect(other.as_str(), 4, Role::Subscriber).await;
    assert!(
        wait_until(WAIT, || b.state().video_frames() >= 10
            && d.state().video_frames() >= 10)
        .await
    );

    let stats = h.pool.stats().await.unwrap();
    assert_eq!(stats.len(), 2);
    assert!(
        stats
            .iter()
            .all(|s| s.router.participants == 2 && s.connected == 2)
    );
    let rooms = h.pool.rooms().await.unwrap();
    assert_eq!(rooms.len(), 2);

    h.pool.leave(ParticipantId(3)).await.unwrap();
    assert!(
        wait_until(WAIT, || d.state().stopped_mids.len() == 2).await,
        "D's m-lines from C stopped"
    );
    let stats = h.pool.stats().await.unwrap();
    assert_eq!(
        stats.iter().map(|s| s.router.participants).sum::<usize>(),
        3
    );
}
