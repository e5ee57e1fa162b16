//! The server side of the Binding method (RFC 8489 §6.3): what a STUN server says back.
//!
//! [`BindingResponder::handle`] takes one datagram or stream frame and the address it came
//! from, and either writes a response into the caller's buffer or says why it stays silent.
//! Every decision of the STUN service lives here; the drivers only move bytes and count
//! [`Outcome`]s. It never allocates per message.

use std::net::SocketAddr;

use crate::attribute::{self, AttributeType, ErrorCode};
use crate::encode::{EncodeError, MessageBuilder};
use crate::message::{Class, DecodeError, Header, Message, MessageType, Method, NotStun};

/// SOFTWARE sent by a default responder.
pub const DEFAULT_SOFTWARE: &str = concat!("Switchboard ", env!("CARGO_PKG_VERSION"));

/// How many unknown attributes a 420 response lists at most. A request naming more is
/// rejected all the same; the bound keeps the list on the stack and the response small.
const MAX_UNKNOWN_LISTED: usize = 16;

/// What was sent back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Success,
    Error(ErrorCode),
}

/// Why nothing was sent back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a STUN message, or its FINGERPRINT did not match.
    NotStun(NotStun),
    /// Indications never get a response; a Binding indication is a keep-alive.
    Indication,
    /// Responses are for clients; a server has no transaction to match them to.
    Response,
    /// RFC 8489 §6.3 discards requests for methods the server does not support.
    UnsupportedMethod(Method),
    /// The response did not fit the output buffer.
    Encode(EncodeError),
}

/// The result of handling one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the first `len` bytes of the output buffer back to the source.
    Reply { len: usize, kind: ReplyKind },
    /// Send nothing.
    Drop(DropReason),
}

/// Answers Binding requests.
#[derive(Clone, Debug)]
pub struct BindingResponder {
    software: Option<String>,
}

impl Default for BindingResponder {
    fn default() -> Self {
        Self {
            software: Some(DEFAULT_SOFTWARE.to_owned()),
        }
    }
}

/// Comprehension-required attributes a Binding server accepts. It has no credentials to
/// check, so USERNAME and the integrity attributes are accepted and not verified, as
/// public STUN servers do; PRIORITY and USE-CANDIDATE appear when an ICE agent sends its
/// connectivity checks to a server address.
fn understood(kind: AttributeType) -> bool {
    matches!(
        kind,
        AttributeType::MAPPED_ADDRESS
            | AttributeType::USERNAME
            | AttributeType::MESSAGE_INTEGRITY
            | AttributeType::ERROR_CODE
            | AttributeType::UNKNOWN_ATTRIBUTES
            | AttributeType::REALM
            | AttributeType::NONCE
            | AttributeType::MESSAGE_INTEGRITY_SHA256
            | AttributeType::PASSWORD_ALGORITHM
            | AttributeType::USERHASH
            | AttributeType::XOR_MAPPED_ADDRESS
            | AttributeType::PRIORITY
            | AttributeType::USE_CANDIDATE
    )
}

impl BindingResponder {
    /// A responder that sends `software` as SOFTWARE, or no SOFTWARE at all.
    pub fn new(software: Option<&str>) -> Result<Self, EncodeError> {
        // Checked once here so that no response can fail on it later.
        if let Some(software) = software {
            let kind = AttributeType::SOFTWARE;
            attribute::check_text(kind, software).map_err(|error| EncodeError::InvalidValue {
                attribute: kind,
                error,
            })?;
        }
        Ok(Self {
            software: software.map(str::to_owned),
        })
    }

    /// Handles one message received from `source`, writing any response into `out`.
    /// 1024 bytes of `out` are always enough.
    pub fn handle(&self, request: &[u8], source: SocketAddr, out: &mut [u8]) -> Outcome {
        let (header, message) = match Message::decode(request) {
            Ok(message) => (message.header(), Some(message)),
            Err(DecodeError::NotStun(reason)) => return Outcome::Drop(DropReason::NotStun(reason)),
            Err(DecodeError::Malformed { header, .. }) => (header, None),
        };
        match header.message_type.class {
            Class::Request => {}
            Class::Indication => return Outcome::Drop(DropReason::Indication),
            Class::SuccessResponse | Class::ErrorResponse => {
                return Outcome::Drop(DropReason::Response);
            }
        }
        if header.message_type.method != Method::BINDING {
            return Outcome::Drop(DropReason::UnsupportedMethod(header.message_type.method));
        }
        let Some(message) = message else {
            return self.reply(
                out,
                header,
                ReplyKind::Error(ErrorCode::BAD_REQUEST),
                |_| Ok(()),
            );
        };

        let mut unknown = [AttributeType::new(0); MAX_UNKNOWN_LISTED];
        let mut count = 0;
        for kind in message.unknown_comprehension_required(understood) {
            if count < MAX_UNKNOWN_LISTED && !unknown[..count].contains(&kind) {
                unknown[count] = kind;
                count += 1;
            }
        }
        if count > 0 {
            let unknown = &unknown[..count];
            return self.reply(
                out,
                header,
                ReplyKind::Error(ErrorCode::UNKNOWN_ATTRIBUTE),
                |builder| builder.add_unknown_attributes(unknown),
            );
        }

        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; they are IPv4 clients
        // and must see an IPv4 XOR-MAPPED-ADDRESS.
        let reflexive = SocketAddr::new(source.ip().to_canonical(), source.port());
        self.reply(out, header, ReplyKind::Success, |builder| {
            builder.add_xor_mapped_address(reflexive)
        })
    }

    /// Writes a response: ERROR-CODE first for errors, then `body`, SOFTWARE, FINGERPRINT.
    fn reply(
        &self,
        out: &mut [u8],
        request: Header,
        kind: ReplyKind,
        body: impl FnOnce(&mut MessageBuilder<'_>) -> Result<(), EncodeError>,
    ) -> Outcome {
        let class = match kind {
            ReplyKind::Success => Class::SuccessResponse,
            ReplyKind::Error(_) => Class::ErrorResponse,
        };
        let written = (|| {
            let message_type = MessageType::new(request.message_type.method, class);
            let mut builder = MessageBuilder::new(out, message_type, request.transaction_id)?;
            if let ReplyKind::Error(code) = kind {
                builder.add_error_code(code, code.default_reason())?;
            }
            body(&mut builder)?;
            if let Some(software) = &self.software {
                builder.add_software(software)?;
            }
            builder.finish_with_fingerprint()
        })();
        match written {
            Ok(len) => Outcome::Reply { len, kind },
            Err(error) => Outcome::Drop(DropReason::Encode(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Attribute;
    use crate::message::TransactionId;

    const ID: TransactionId = TransactionId::new(*b"0123456789ab");

    fn client() -> SocketAddr {
        "203.0.113.9:51234".parse().unwrap()
    }

    fn request(build: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
        request_of(MessageType::BINDING_REQUEST, build)
    }

    fn request_of(
        message_type: MessageType,
        build: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut builder = MessageBuilder::new(&mut buf, message_type, ID).unwrap();
        build(&mut builder);
        let len = builder.finish_with_fingerprint().unwrap();
        buf.truncate(len);
        buf
    }

    fn answer(
        responder: &BindingResponder,
        request: &[u8],
        source: SocketAddr,
    ) -> (Outcome, Vec<u8>) {
        let mut out = [0u8; 1024];
        let outcome = responder.handle(request, source, &mut out);
        let len = match outcome {
            Outcome::Reply { len, .. } => len,
            Outcome::Drop(_) => 0,
        };
        (outcome, out[..len].to_vec())
    }

    #[test]
    fn binding_request_gets_its_reflexive_address() {
        let (outcome, bytes) = answer(&BindingResponder::default(), &request(|_| {}), client());
        assert_eq!(
            outcome,
            Outcome::Reply {
                len: bytes.len(),
                kind: ReplyKind::Success
            }
        );
        let response = Message::decode(&bytes).unwrap();
        assert_eq!(response.message_type(), MessageType::BINDING_SUCCESS);
        assert_eq!(response.transaction_id(), ID);
        assert_eq!(response.xor_mapped_address(), Some(client()));
        assert_eq!(response.software(), Some(DEFAULT_SOFTWARE));
        assert!(response.has_fingerprint());
        let kinds: Vec<_> = response.attributes().map(|a| a.kind()).collect();
        assert_eq!(
            kinds,
            [
                AttributeType::XOR_MAPPED_ADDRESS,
                AttributeType::SOFTWARE,
                AttributeType::FINGERPRINT
            ]
        );
    }

    #[test]
    fn request_without_fingerprint_is_answered() {
        let mut buf = [0u8; 20];
        let len = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID)
            .unwrap()
            .finish();
        let (outcome, _) = answer(&BindingResponder::default(), &buf[..len], client());
        assert!(matches!(
            outcome,
            Outcome::Reply {
                kind: ReplyKind::Success,
                ..
            }
        ));
    }

    #[test]
    fn ipv6_and_mapped_ipv4_sources() {
        let v6: SocketAddr = "[2001:db8::7]:3478".parse().unwrap();
        let (_, bytes) = answer(&BindingResponder::default(), &request(|_| {}), v6);
        assert_eq!(
            Message::decode(&bytes).unwrap().xor_mapped_address(),
            Some(v6)
        );

        let mapped: SocketAddr = "[::ffff:198.51.100.4]:9000".parse().unwrap();
        let (_, bytes) = answer(&BindingResponder::default(), &request(|_| {}), mapped);
        assert_eq!(
            Message::decode(&bytes).unwrap().xor_mapped_address(),
            Some("198.51.100.4:9000".parse().unwrap())
        );
    }

    #[test]
    fn unknown_comprehension_required_attributes_get_420() {
        let bytes = request(|b| {
            b.add_raw(AttributeType::new(0x7777), b"x").unwrap();
            b.add_raw(AttributeType::new(0xC001), b"optional").unwrap();
            b.add_raw(AttributeType::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .unwrap();
            b.add_raw(AttributeType::new(0x7777), b"again").unwrap();
            b.add_raw(AttributeType::PRIORITY, &[0, 0, 0, 1]).unwrap();
        });
        let (outcome, bytes) = answer(&BindingResponder::default(), &bytes, client());
        assert_eq!(
            outcome,
            Outcome::Reply {
                len: bytes.len(),
                kind: ReplyKind::Error(ErrorCode::UNKNOWN_ATTRIBUTE)
            }
        );
        let response = Message::decode(&bytes).unwrap();
        assert_eq!(response.message_type(), MessageType::BINDING_ERROR);
        assert_eq!(response.transaction_id(), ID);
        assert_eq!(
            response.error_code(),
            Some((ErrorCode::UNKNOWN_ATTRIBUTE, "Unknown Attribute"))
        );
        let listed: Vec<_> = response.unknown_attributes().unwrap().iter().collect();
        assert_eq!(
            listed,
            [
                AttributeType::new(0x7777),
                AttributeType::REQUESTED_TRANSPORT
            ]
        );
        assert_eq!(response.xor_mapped_address(), None);
        assert!(response.has_fingerprint());
    }

    #[test]
    fn unknown_list_is_bounded() {
        let bytes = request(|b| {
            for code in 0x4000..0x4040 {
                b.add_raw(AttributeType::new(code), &[]).unwrap();
            }
        });
        let (_, bytes) = answer(&BindingResponder::default(), &bytes, client());
        let response = Message::decode(&bytes).unwrap();
        assert_eq!(
            response.unknown_attributes().unwrap().len(),
            MAX_UNKNOWN_LISTED
        );
    }

    #[test]
    fn malformed_request_gets_400() {
        // XOR-MAPPED-ADDRESS with address family 3.
        let bytes = request(|b| {
            b.add_raw(AttributeType::XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4])
                .unwrap()
        });
        let (outcome, response) = answer(&BindingResponder::default(), &bytes, client());
        assert_eq!(
            outcome,
            Outcome::Reply {
                len: response.len(),
                kind: ReplyKind::Error(ErrorCode::BAD_REQUEST)
            }
        );
        let response = Message::decode(&response).unwrap();
        assert_eq!(response.message_type(), MessageType::BINDING_ERROR);
        assert_eq!(response.transaction_id(), ID);
        assert_eq!(
            response.error_code(),
            Some((ErrorCode::BAD_REQUEST, "Bad Request"))
        );

        // An attribute whose length runs past the message.
        let mut overrun = request(|b| b.add_software("abcd").unwrap());
        overrun[22..24].copy_from_slice(&200u16.to_be_bytes());
        let (outcome, _) = answer(&BindingResponder::default(), &overrun, client());
        assert!(matches!(
            outcome,
            Outcome::Reply {
                kind: ReplyKind::Error(ErrorCode::BAD_REQUEST),
                ..
            }
        ));
    }

    #[test]
    fn bad_fingerprint_is_dropped() {
        let mut bytes = request(|b| b.add_software("client").unwrap());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let (outcome, _) = answer(&BindingResponder::default(), &bytes, client());
        assert!(matches!(
            outcome,
            Outcome::Drop(DropReason::NotStun(NotStun::FingerprintMismatch { .. }))
        ));
    }

    #[test]
    fn silent_cases() {
        let responder = BindingResponder::default();
        let cases = [
            (
                request_of(MessageType::BINDING_INDICATION, |_| {}),
                DropReason::Indication,
            ),
            (
                request_of(MessageType::BINDING_SUCCESS, |_| {}),
                DropReason::Response,
            ),
            (
                request_of(MessageType::BINDING_ERROR, |_| {}),
                DropReason::Response,
            ),
            (
                request_of(MessageType::new(Method::ALLOCATE, Class::Request), |_| {}),
                DropReason::UnsupportedMethod(Method::ALLOCATE),
            ),
            (
                b"GET / HTTP/1.1\r\n\r\n\0\0".to_vec(),
                DropReason::NotStun(NotStun::ReservedBitsSet),
            ),
            (
                vec![0; 4],
                DropReason::NotStun(NotStun::TooShort { len: 4 }),
            ),
        ];
        for (bytes, reason) in cases {
            let (outcome, _) = answer(&responder, &bytes, client());
            assert_eq!(outcome, Outcome::Drop(reason));
        }
    }

    #[test]
    fn malformed_non_requests_stay_silent() {
        let mut indication = request_of(MessageType::BINDING_INDICATION, |b| {
            b.add_raw(AttributeType::new(0x7777), &[1]).unwrap()
        });
        indication[22..24].copy_from_slice(&100u16.to_be_bytes());
        let (outcome, _) = answer(&BindingResponder::default(), &indication, client());
        assert_eq!(outcome, Outcome::Drop(DropReason::Indication));
    }

    #[test]
    fn small_output_buffer_drops() {
        let mut out = [0u8; 40];
        let outcome = BindingResponder::default().handle(&request(|_| {}), client(), &mut out);
        assert!(matches!(
            outcome,
            Outcome::Drop(DropReason::Encode(EncodeError::BufferTooSmall { .. }))
        ));
    }

    #[test]
    fn software_is_configurable() {
        let quiet = BindingResponder::new(None).unwrap();
        let (_, bytes) = answer(&quiet, &request(|_| {}), client());
        let response = Message::decode(&bytes).unwrap();
        assert_eq!(response.software(), None);
        assert!(
            response
                .attributes()
                .all(|a| !matches!(a, Attribute::Software(_)))
        );

        let named = BindingResponder::new(Some("edge-7")).unwrap();
        let (_, bytes) = answer(&named, &request(|_| {}), client());
        assert_eq!(Message::decode(&bytes).unwrap().software(), Some("edge-7"));

        assert!(BindingResponder::new(Some(&"x".repeat(800))).is_err());
    }
}
