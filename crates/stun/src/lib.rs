//! STUN (RFC 8489) for Switchboard, without I/O.
//!
//! This crate turns bytes into typed STUN messages and typed messages back into bytes, and
//! answers Binding requests. It never opens a socket, reads a clock or spawns a task: the
//! tokio drivers in the server crate move bytes, and everything they decide comes from here.
//! That keeps every protocol decision testable with plain byte arrays, and lets the TURN
//! (RFC 8656) server reuse the same codec.
//!
//! - [`message`]: the 20-byte header, method and class, and [`Message::decode`], which checks
//!   a whole message (framing, attribute layout, FINGERPRINT) and hands back a view that
//!   borrows the input.
//! - [`attribute`]: attribute types and typed attribute values, decoded lazily and without
//!   allocating.
//! - [`encode`]: [`MessageBuilder`], which writes a message into a caller-provided buffer and
//!   can seal it with MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT.
//! - [`integrity`]: credential keys and HMAC verification of received messages.
//! - [`fingerprint`]: the CRC-32 FINGERPRINT value.
//! - [`framing`]: how long the next message is in a TCP byte stream.
//! - [`binding`]: [`BindingResponder`], the server side of the Binding method.
//!
//! ```
//! use switchboard_stun::{BindingResponder, Class, Message, MessageBuilder, MessageType, Method,
//!     Outcome, TransactionId};
//!
//! let mut request = [0u8; 64];
//! let id = TransactionId::new([7; 12]);
//! let len = MessageBuilder::new(&mut request, MessageType::BINDING_REQUEST, id)
//!     .unwrap()
//!     .finish_with_fingerprint()
//!     .unwrap();
//!
//! let client = "192.0.2.1:32853".parse().unwrap();
//! let mut response = [0u8; 256];
//! let Outcome::Reply { len, .. } =
//!     BindingResponder::default().handle(&request[..len], client, &mut response)
//! else {
//!     panic!("a Binding request is answered");
//! };
//! let message = Message::decode(&response[..len]).unwrap();
//! assert_eq!(message.header().message_type.class, Class::SuccessResponse);
//! assert_eq!(message.header().message_type.method, Method::BINDING);
//! assert_eq!(message.xor_mapped_address(), Some(client));
//! ```

pub mod attribute;
pub mod binding;
pub mod encode;
pub mod fingerprint;
pub mod framing;
pub mod integrity;
pub mod message;

pub use attribute::{Attribute, AttributeError, AttributeType, ErrorCode, RawAttribute};
pub use binding::{BindingResponder, DEFAULT_SOFTWARE, DropReason, Outcome, ReplyKind};
pub use encode::{EncodeError, MessageBuilder};
pub use framing::{FramingError, message_len};
pub use integrity::{IntegrityError, long_term_key_md5, long_term_key_sha256};
pub use message::{
    Class, DecodeError, HEADER_LEN, Header, MAGIC_COOKIE, Malformed, Message, MessageType, Method,
    NotStun, TransactionId,
};
