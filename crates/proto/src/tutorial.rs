//! The classic tutorial protocol: one sender, one receiver, served on the WebSocket at `/`.
//!
//! The reference is the Node `ws` server of the widely copied "WebRTC sender/receiver"
//! tutorial. It keeps one global sender socket and one global receiver socket (the latest to
//! announce itself wins), relays `createOffer` only from the sender to the receiver,
//! `createAnswer` only from the receiver to the sender, and `iceCandidate` from either to the
//! other. Relayed messages are rebuilt with exactly the fields the reference sends, so a
//! tutorial client cannot tell the difference: `sdp` and `candidate` are carried verbatim
//! (key order included), a `null` stays `null`, and a missing field stays missing, as
//! `JSON.stringify` does with `undefined`.

use crate::RawJson;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// A message in the tutorial protocol, both directions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TutorialMessage {
    Sender,
    Receiver,
    CreateOffer {
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp: Option<RawJson>,
    },
    CreateAnswer {
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp: Option<RawJson>,
    },
    IceCandidate {
        #[serde(skip_serializing_if = "Option::is_none")]
        candidate: Option<RawJson>,
    },
}

impl TutorialMessage {
    /// Decodes one frame. `Err` for text that is not a JSON object; `Ok(None)` for objects the
    /// reference server ignores (other or missing types).
    pub fn parse(text: &str) -> Result<Option<TutorialMessage>, serde_json::Error> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            #[serde(rename = "type", default, borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
            #[serde(default, borrow, deserialize_with = "present")]
            sdp: Option<&'a RawValue>,
            #[serde(default, borrow, deserialize_with = "present")]
            candidate: Option<&'a RawValue>,
        }
        let wire: Wire = serde_json::from_str(text)?;
        let raw = |value: Option<&RawValue>| value.map(|v| RawJson(v.to_owned()));
        Ok(match wire.kind.as_deref() {
            Some("sender") => Some(TutorialMessage::Sender),
            Some("receiver") => Some(TutorialMessage::Receiver),
            Some("createOffer") => Some(TutorialMessage::CreateOffer { sdp: raw(wire.sdp) }),
            Some("createAnswer") => Some(TutorialMessage::CreateAnswer { sdp: raw(wire.sdp) }),
            Some("iceCandidate") => Some(TutorialMessage::IceCandidate {
                candidate: raw(wire.candidate),
            }),
            _ => None,
        })
    }
}

/// A field that is present, `null` included (plain `Option` would turn `null` into `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(text: &str) -> String {
        serde_json::to_string(&TutorialMessage::parse(text).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn relayed_messages_have_the_reference_shape() {
        assert_eq!(
            relay(r#"{"type":"createOffer","sdp":{"type":"offer","sdp":"v=0"},"extra":1}"#),
            r#"{"type":"createOffer","sdp":{"type":"offer","sdp":"v=0"}}"#
        );
        assert_eq!(
            relay(r#"{"candidate":{"sdpMid":"0","candidate":"c"},"type":"iceCandidate"}"#),
            r#"{"type":"iceCandidate","candidate":{"sdpMid":"0","candidate":"c"}}"#
        );
        assert_eq!(
            TutorialMessage::parse(r#"{"type":"sender"}"#).unwrap(),
            Some(TutorialMessage::Sender)
        );
    }

    #[test]
    fn null_stays_null_and_missing_stays_missing() {
        assert_eq!(
            relay(r#"{"type":"iceCandidate","candidate":null}"#),
            r#"{"type":"iceCandidate","candidate":null}"#
        );
        assert_eq!(
            relay(r#"{"type":"createAnswer"}"#),
            r#"{"type":"createAnswer"}"#
        );
    }

    #[test]
    fn other_types_are_ignored_and_non_objects_refused() {
        assert_eq!(TutorialMessage::parse(r#"{"type":"hello"}"#).unwrap(), None);
        assert_eq!(TutorialMessage::parse(r#"{"no":"type"}"#).unwrap(), None);
        assert!(TutorialMessage::parse("not json").is_err());
        assert!(TutorialMessage::parse("[1]").is_err());
    }
}
