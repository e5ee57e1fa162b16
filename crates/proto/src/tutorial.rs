//! The classic tutorial protocol: one sender, one receiver, served on the WebSocket at `/`.
//!
//! The reference is the Node `ws` server of the widely copied "WebRTC sender/receiver"
//! tutorial. It keeps one global sender socket and one global receiver socket (the latest to
//! announce itself wins), relays `createOffer` only from the sender to the receiver,
//! `createAnswer` only from the receiver to the sender, and `iceCandidate` from either to the
//! other. Relayed messages are rebuilt with exactly the fields the reference sends, so a
//! tutorial client cannot tell the difference.

use serde::{Deserialize, Serialize};

/// A message in the tutorial protocol, both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TutorialMessage {
    Sender,
    Receiver,
    CreateOffer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp: Option<serde_json::Value>,
    },
    CreateAnswer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp: Option<serde_json::Value>,
    },
    IceCandidate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<serde_json::Value>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_messages_have_the_reference_shape() {
        let msg: TutorialMessage = serde_json::from_str(
            r#"{"type":"createOffer","sdp":{"type":"offer","sdp":"v=0"},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"createOffer","sdp":{"type":"offer","sdp":"v=0"}}"#
        );
        let msg: TutorialMessage = serde_json::from_str(r#"{"type":"sender"}"#).unwrap();
        assert_eq!(msg, TutorialMessage::Sender);
        let msg: TutorialMessage =
            serde_json::from_str(r#"{"type":"iceCandidate","candidate":{"candidate":"c"}}"#)
                .unwrap();
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"iceCandidate","candidate":{"candidate":"c"}}"#
        );
    }
}
