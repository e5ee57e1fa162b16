//! The classic tutorial protocol's two global slots, shared by every socket on `/`.
//!
//! The routing rules are [`TutorialRelay`]'s (sans-IO, in `switchboard-signal`). Here each
//! socket's reader applies them itself: a `sender` or `receiver` announcement takes the slot
//! under a lock and publishes a new [`Slots`] snapshot; every relayed message is routed on the
//! reader's cached snapshot and pushed straight into the addressee's outbox. A relay thus
//! crosses one task hop (reader → addressee's writer) and no lock, which is what a latency-
//! bound pair exchanging offers and candidates feels.
//!
//! Order is the reference server's: a reader's own announcement is visible to its next
//! message at once (it bumps the version its cache checks), and messages from one socket
//! reach the addressee in the order they were sent, since one reader delivers them all.

use crate::hub::{Out, Outbox};
use crate::published::{Cached, Published};
use axum::extract::ws::Utf8Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use switchboard_proto::tutorial::TutorialMessage;
use switchboard_signal::{ConnId, TutorialRelay};
use tokio::sync::mpsc::error::TrySendError;

/// Who holds the slots, with their outboxes.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    relay: TutorialRelay,
    sender: Option<Outbox>,
    receiver: Option<Outbox>,
}

/// The slots, as every tutorial reader sees them.
#[derive(Debug, Default)]
pub struct TutorialBoard {
    slots: Mutex<Slots>,
    published: Published<Slots>,
}

/// What [`TutorialBoard::handle`] did with one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// Took a slot.
    Claimed,
    /// In the addressee's outbox.
    Relayed(ConnId),
    /// Not relayed, as the reference server would not: wrong direction, or nobody there.
    Ignored,
    /// The addressee's outbox is full or closed; the message is lost, as it would be on a
    /// dead socket in the reference.
    Dropped(ConnId),
}

/// One tutorial socket's view of the board.
#[derive(Debug, Default)]
pub struct TutorialCache(Cached<Slots>);

impl TutorialBoard {
    /// Handles one message from `conn`, whose own outbox is `outbox`.
    pub fn handle(
        &self,
        cache: &mut TutorialCache,
        conn: ConnId,
        outbox: &Outbox,
        msg: TutorialMessage,
    ) -> Handled {
        if matches!(msg, TutorialMessage::Sender | TutorialMessage::Receiver) {
            self.claim(conn, outbox, &msg);
            return Handled::Claimed;
        }
        let Some(slots) = cache.0.get(&self.published) else {
            return Handled::Ignored;
        };
        let Some(to) = slots.relay.route(conn, &msg) else {
            return Handled::Ignored;
        };
        let target = if slots.relay.holders().0 == Some(to) {
            &slots.sender
        } else {
            &slots.receiver
        };
        let Some(target) = target else {
            return Handled::Ignored;
        };
        let text = match serde_json::to_string(&msg) {
            Ok(text) => Utf8Bytes::from(text),
            Err(e) => {
                tracing::error!("cannot encode tutorial message: {e}");
                return Handled::Ignored;
            }
        };
        match target.try_send(Out::Text(text)) {
            Ok(()) => Handled::Relayed(to),
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => Handled::Dropped(to),
        }
    }

    fn claim(&self, conn: ConnId, outbox: &Outbox, msg: &TutorialMessage) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.relay.claim(conn, msg);
        let slot = match msg {
            TutorialMessage::Sender => &mut slots.sender,
            _ => &mut slots.receiver,
        };
        *slot = Some(outbox.clone());
        self.published.publish(Some(Arc::new(slots.clone())));
    }

    /// Frees whatever slot `conn` held; its socket is gone.
    pub fn release(&self, conn: ConnId) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if !slots.relay.holds(conn) {
            return;
        }
        let (sender, receiver) = slots.relay.holders();
        if sender == Some(conn) {
            slots.sender = None;
        }
        if receiver == Some(conn) {
            slots.receiver = None;
        }
        slots.relay.disconnect(conn);
        self.published.publish(Some(Arc::new(slots.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbox;
    use switchboard_proto::RawJson;

    fn candidate() -> TutorialMessage {
        TutorialMessage::IceCandidate {
            candidate: Some(RawJson::try_from(r#"{"candidate":"c"}"#).unwrap()),
        }
    }

    fn text(out: Out) -> String {
        match out {
            Out::Text(text) => text.to_string(),
            _ => panic!("expected text"),
        }
    }

    #[test]
    fn relays_go_to_the_current_holder_and_stop_at_release() {
        let board = TutorialBoard::default();
        let (sender_box, mut sender_rx) = outbox();
        let (receiver_box, mut receiver_rx) = outbox();
        let (late_box, mut late_rx) = outbox();
        let mut sender = TutorialCache::default();
        let mut receiver = TutorialCache::default();
        let mut late = TutorialCache::default();

        // Nobody holds a slot yet: a candidate goes nowhere.
        let handled = board.handle(&mut sender, 1, &sender_box, candidate());
        assert_eq!(handled, Handled::Ignored);
        let claim = board.handle(&mut sender, 1, &sender_box, TutorialMessage::Sender);
        assert_eq!(claim, Handled::Claimed);
        let handled = board.handle(&mut receiver, 2, &receiver_box, TutorialMessage::Receiver);
        assert_eq!(handled, Handled::Claimed);

        // The sender's cache moves on to the snapshot with the receiver in it.
        let handled = board.handle(&mut sender, 1, &sender_box, candidate());
        assert_eq!(handled, Handled::Relayed(2));
        let relayed = text(receiver_rx.try_recv().unwrap());
        assert_eq!(
            relayed,
            r#"{"type":"iceCandidate","candidate":{"candidate":"c"}}"#
        );
        let handled = board.handle(&mut receiver, 2, &receiver_box, candidate());
        assert_eq!(handled, Handled::Relayed(1));
        assert!(sender_rx.try_recv().is_ok());

        // A newer receiver takes the slot; the old one is a stranger now.
        board.handle(&mut late, 3, &late_box, TutorialMessage::Receiver);
        assert_eq!(
            board.handle(&mut sender, 1, &sender_box, candidate()),
            Handled::Relayed(3)
        );
        assert!(late_rx.try_recv().is_ok());
        assert_eq!(
            board.handle(&mut receiver, 2, &receiver_box, candidate()),
            Handled::Ignored
        );

        // Releasing a socket that holds nothing changes nothing; the holder's release does.
        board.release(2);
        assert_eq!(
            board.handle(&mut sender, 1, &sender_box, candidate()),
            Handled::Relayed(3)
        );
        board.release(3);
        assert_eq!(
            board.handle(&mut sender, 1, &sender_box, candidate()),
            Handled::Ignored
        );
        assert!(receiver_rx.try_recv().is_err());
    }

    #[test]
    fn a_full_outbox_loses_the_message_and_nothing_else() {
        let board = TutorialBoard::default();
        let (sender_box, _sender_rx) = outbox();
        let (receiver_box, mut receiver_rx) = outbox();
        let mut sender = TutorialCache::default();
        let mut receiver = TutorialCache::default();
        board.handle(&mut sender, 1, &sender_box, TutorialMessage::Sender);
        board.handle(&mut receiver, 2, &receiver_box, TutorialMessage::Receiver);
        let mut relayed = 0;
        let dropped = loop {
            match board.handle(&mut sender, 1, &sender_box, candidate()) {
                Handled::Relayed(2) => relayed += 1,
                other => break other,
            }
            assert!(relayed <= crate::hub::OUTBOX_CAPACITY + 1);
        };
        assert_eq!(dropped, Handled::Dropped(2));
        assert_eq!(relayed, crate::hub::OUTBOX_CAPACITY + 1);
        receiver_rx.try_recv().unwrap();
        assert_eq!(
            board.handle(&mut sender, 1, &sender_box, candidate()),
            Handled::Relayed(2)
        );
    }
}
