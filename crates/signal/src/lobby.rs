//! The random 1:1 lobby: a FIFO queue of strangers waiting for a partner.
//!
//! Fairness: the longest waiter is matched first, with the longest waiter it may be paired
//! with. Nobody is matched with themselves (a connection is queued at most once), and two
//! people who just ended a pair with **Next** are not put straight back together: each
//! remembers its last partner until it is matched with someone else.

use crate::core::ConnId;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
pub struct Lobby {
    queue: VecDeque<ConnId>,
    last_partner: HashMap<ConnId, ConnId>,
}

impl Lobby {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `conn` at the back; a connection already queued keeps its place.
    pub fn enqueue(&mut self, conn: ConnId) {
        if !self.queue.contains(&conn) {
            self.queue.push_back(conn);
        }
    }

    /// Takes `conn` out of the queue; `true` if it was waiting.
    pub fn remove(&mut self, conn: ConnId) -> bool {
        match self.queue.iter().position(|&c| c == conn) {
            Some(index) => {
                self.queue.remove(index);
                true
            }
            None => false,
        }
    }

    /// Forgets everything about a connection that is gone, so a stale entry can never match.
    pub fn forget(&mut self, conn: ConnId) {
        self.remove(conn);
        self.last_partner.remove(&conn);
        self.last_partner.retain(|_, partner| *partner != conn);
    }

    pub fn contains(&self, conn: ConnId) -> bool {
        self.queue.contains(&conn)
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Removes and returns the next pair to match, the longer waiter first; `None` when
    /// nobody can be paired.
    pub fn next_pair(&mut self) -> Option<(ConnId, ConnId)> {
        // Each waiter excludes at most one other, so this finds a pair within a few steps
        // whenever one exists.
        for i in 0..self.queue.len() {
            let first = self.queue[i];
            for j in i + 1..self.queue.len() {
                let second = self.queue[j];
                if self.compatible(first, second) {
                    self.queue.remove(j);
                    self.queue.remove(i);
                    self.last_partner.insert(first, second);
                    self.last_partner.insert(second, first);
                    return Some((first, second));
                }
            }
        }
        None
    }

    fn compatible(&self, a: ConnId, b: ConnId) -> bool {
        a != b && self.last_partner.get(&a) != Some(&b) && self.last_partner.get(&b) != Some(&a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_in_arrival_order() {
        let mut lobby = Lobby::new();
        for conn in [1, 2, 3, 4, 5] {
            lobby.enqueue(conn);
        }
        assert_eq!(lobby.next_pair(), Some((1, 2)));
        assert_eq!(lobby.next_pair(), Some((3, 4)));
        assert_eq!(lobby.next_pair(), None);
        assert_eq!(lobby.waiting(), 1);
    }

    #[test]
    fn never_matches_self_even_if_enqueued_twice() {
        let mut lobby = Lobby::new();
        lobby.enqueue(7);
        lobby.enqueue(7);
        assert_eq!(lobby.waiting(), 1);
        assert_eq!(lobby.next_pair(), None);
    }

    #[test]
    fn next_does_not_rematch_the_same_two() {
        let mut lobby = Lobby::new();
        lobby.enqueue(1);
        lobby.enqueue(2);
        assert_eq!(lobby.next_pair(), Some((1, 2)));
        lobby.enqueue(2);
        lobby.enqueue(1);
        assert_eq!(lobby.next_pair(), None, "ex-partners wait for someone new");
        lobby.enqueue(3);
        assert_eq!(lobby.next_pair(), Some((2, 3)), "longest waiter goes first");
        lobby.enqueue(4);
        assert_eq!(lobby.next_pair(), Some((1, 4)));
    }

    #[test]
    fn four_users_next_gives_new_pairs() {
        let mut lobby = Lobby::new();
        for conn in [1, 2, 3, 4] {
            lobby.enqueue(conn);
        }
        assert_eq!(lobby.next_pair(), Some((1, 2)));
        assert_eq!(lobby.next_pair(), Some((3, 4)));
        // 1 presses Next: its partner 2 is queued first, then 1.
        lobby.enqueue(2);
        lobby.enqueue(1);
        assert_eq!(lobby.next_pair(), None);
        // 3 presses Next too.
        lobby.enqueue(4);
        lobby.enqueue(3);
        assert_eq!(lobby.next_pair(), Some((2, 4)));
        assert_eq!(lobby.next_pair(), Some((1, 3)));
    }

    #[test]
    fn a_disconnected_user_is_never_matched() {
        let mut lobby = Lobby::new();
        lobby.enqueue(1);
        lobby.enqueue(2);
        lobby.forget(1);
        assert_eq!(lobby.next_pair(), None);
        lobby.enqueue(3);
        assert_eq!(lobby.next_pair(), Some((2, 3)));
    }

    #[test]
    fn forgetting_a_user_frees_its_ex_partner() {
        let mut lobby = Lobby::new();
        lobby.enqueue(1);
        lobby.enqueue(2);
        lobby.next_pair();
        lobby.forget(2);
        // A new connection may reuse nothing of 2's memory.
        lobby.enqueue(1);
        lobby.enqueue(5);
        assert_eq!(lobby.next_pair(), Some((1, 5)));
    }
}
