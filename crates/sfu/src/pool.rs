//! A pool of workers for more than one core: each room is pinned to one worker (by a hash of
//! its name), so a room's media never crosses threads and the workers share nothing but the
//! event channel towards the signaling side.
//!
//! Each worker has its own port (UDP, and TCP on the same number): with a fixed `bind` port,
//! worker `i` binds `port + i`; with port 0, each picks a free one. Participant ids must be unique across the pool.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use tokio::sync::mpsc;

use crate::api::{
    ParticipantHandle, RoomSnapshot, SfuEvent, WorkerConfig, WorkerHandle, WorkerStats,
    spawn_with_events,
};
use crate::error::SfuError;
use crate::ids::{ParticipantId, RoomId};

/// Handles to every worker of a pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sfu {
    workers: Vec<WorkerHandle>,
}

impl Sfu {
    /// Starts `workers` workers (at least one) configured by `config`, and returns the pool
    /// with the receiver of all their events.
    pub async fn spawn(
        config: WorkerConfig,
        workers: usize,
    ) -> Result<(Sfu, mpsc::Receiver<SfuEvent>), SfuError> {
        let (tx, rx) = mpsc::channel(config.event_queue.max(1));
        let mut handles = Vec::with_capacity(workers.max(1));
        for i in 0..workers.max(1) {
            let mut c = config.clone();
            if c.bind.port() != 0 {
                let port = u16::try_from(i)
                    .ok()
                    .and_then(|i| c.bind.port().checked_add(i))
                    .ok_or(SfuError::Config("worker ports run past 65535"))?;
                c.bind.set_port(port);
            }
            handles.push(spawn_with_events(c, tx.clone()).await?);
        }
        Ok((Sfu { workers: handles }, rx))
    }

    /// The worker that hosts `room`.
    pub fn worker_for(&self, room: &RoomId) -> &WorkerHandle {
        let mut h = DefaultHasher::new();
        room.as_str().hash(&mut h);
        let i = (h.finish() % self.workers.len() as u64) as usize;
        &self.workers[i]
    }

    /// Joins `participant`, known to the signaling side as `label`, to `room` on the room's
    /// worker (see [`WorkerHandle::join`]).
    pub async fn join(
        &self,
        room: RoomId,
        participant: ParticipantId,
        label: &str,
    ) -> Result<ParticipantHandle, SfuError> {
        self.worker_for(&room).join(room, participant, label).await
    }

    /// Removes a participant, wherever it is.
    pub async fn leave(&self, participant: ParticipantId) -> Result<(), SfuError> {
        for w in &self.workers {
            w.leave(participant).await?;
        }
        Ok(())
    }

    /// Counters of each worker, in pool order.
    pub async fn stats(&self) -> Result<Vec<WorkerStats>, SfuError> {
        let mut all = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            all.push(w.stats().await?);
        }
        Ok(all)
    }

    /// Every room of every worker, sorted by room.
    pub async fn rooms(&self) -> Result<Vec<RoomSnapshot>, SfuError> {
        let mut all = Vec::new();
        for w in &self.workers {
            all.extend(w.rooms().await?);
        }
        all.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(all)
    }

    /// The workers, e.g. for their addresses.
    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }
}
