//! Routing for the classic tutorial protocol: one global sender, one global receiver.
//!
//! Mirrors the reference Node server: the latest socket to say `sender` (or `receiver`) takes
//! the slot; `createOffer` flows only sender → receiver, `createAnswer` only receiver →
//! sender, `iceCandidate` from either to the other; anything else is ignored. Where the
//! reference keeps writing to a closed socket (which silently drops), we clear the slot on
//! disconnect, which a client cannot tell apart.

use crate::core::ConnId;
use switchboard_proto::tutorial::TutorialMessage;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TutorialRelay {
    sender: Option<ConnId>,
    receiver: Option<ConnId>,
}

impl TutorialRelay {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes one message; returns where to send what, if anywhere.
    pub fn handle(
        &mut self,
        from: ConnId,
        msg: TutorialMessage,
    ) -> Option<(ConnId, TutorialMessage)> {
        if self.claim(from, &msg) {
            return None;
        }
        self.route(from, &msg).map(|to| (to, msg))
    }

    /// Takes the slot `msg` announces (`sender` or `receiver`); `false` for any other message.
    pub fn claim(&mut self, from: ConnId, msg: &TutorialMessage) -> bool {
        match msg {
            TutorialMessage::Sender => self.sender = Some(from),
            TutorialMessage::Receiver => self.receiver = Some(from),
            _ => return false,
        }
        true
    }

    /// Where a relayed message from `from` goes, if anywhere; announcements go nowhere.
    pub fn route(&self, from: ConnId, msg: &TutorialMessage) -> Option<ConnId> {
        match msg {
            TutorialMessage::Sender | TutorialMessage::Receiver => None,
            TutorialMessage::CreateOffer { .. } => {
                if self.sender != Some(from) {
                    return None;
                }
                self.receiver
            }
            TutorialMessage::CreateAnswer { .. } => {
                if self.receiver != Some(from) {
                    return None;
                }
                self.sender
            }
            TutorialMessage::IceCandidate { .. } => {
                if self.sender == Some(from) {
                    self.receiver
                } else if self.receiver == Some(from) {
                    self.sender
                } else {
                    None
                }
            }
        }
    }

    /// Whether `conn` holds the sender or the receiver slot.
    pub fn holds(&self, conn: ConnId) -> bool {
        self.sender == Some(conn) || self.receiver == Some(conn)
    }

    /// Who holds the slots: `(sender, receiver)`.
    pub fn holders(&self) -> (Option<ConnId>, Option<ConnId>) {
        (self.sender, self.receiver)
    }

    pub fn disconnect(&mut self, conn: ConnId) {
        if self.sender == Some(conn) {
            self.sender = None;
        }
        if self.receiver == Some(conn) {
            self.receiver = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::RawJson;

    fn raw(json: &str) -> Option<RawJson> {
        Some(RawJson::try_from(json).unwrap())
    }

    fn offer() -> TutorialMessage {
        TutorialMessage::CreateOffer {
            sdp: raw(r#"{"type":"offer","sdp":"v=0"}"#),
        }
    }
    fn answer() -> TutorialMessage {
        TutorialMessage::CreateAnswer {
            sdp: raw(r#"{"type":"answer","sdp":"v=0"}"#),
        }
    }
    fn candidate() -> TutorialMessage {
        TutorialMessage::IceCandidate {
            candidate: raw(r#"{"candidate":"c"}"#),
        }
    }

    #[test]
    fn offers_flow_sender_to_receiver_and_answers_back() {
        let mut relay = TutorialRelay::new();
        assert_eq!(relay.handle(1, TutorialMessage::Sender), None);
        assert_eq!(relay.handle(2, TutorialMessage::Receiver), None);
        assert_eq!(relay.handle(1, offer()), Some((2, offer())));
        assert_eq!(relay.handle(2, answer()), Some((1, answer())));
        assert_eq!(relay.handle(1, candidate()), Some((2, candidate())));
        assert_eq!(relay.handle(2, candidate()), Some((1, candidate())));
    }

    #[test]
    fn wrong_direction_and_strangers_are_ignored() {
        let mut relay = TutorialRelay::new();
        relay.handle(1, TutorialMessage::Sender);
        relay.handle(2, TutorialMessage::Receiver);
        assert_eq!(relay.handle(2, offer()), None);
        assert_eq!(relay.handle(1, answer()), None);
        assert_eq!(relay.handle(3, candidate()), None);
        assert_eq!(relay.handle(3, offer()), None);
    }

    #[test]
    fn latest_sender_wins_and_disconnect_clears_slot() {
        let mut relay = TutorialRelay::new();
        relay.handle(1, TutorialMessage::Sender);
        relay.handle(2, TutorialMessage::Receiver);
        relay.handle(3, TutorialMessage::Sender);
        assert_eq!(relay.handle(1, offer()), None);
        assert_eq!(relay.handle(3, offer()), Some((2, offer())));
        relay.disconnect(2);
        assert_eq!(relay.handle(3, offer()), None);
        assert_eq!(relay.holders(), (Some(3), None));
        assert!(relay.holds(3) && !relay.holds(2));
    }

    #[test]
    fn offer_before_receiver_goes_nowhere() {
        let mut relay = TutorialRelay::new();
        relay.handle(1, TutorialMessage::Sender);
        assert_eq!(relay.handle(1, offer()), None);
    }
}
