//! Writing STUN messages into caller-provided buffers.
//!
//! [`MessageBuilder`] owns the encoding rules: the header length kept in step with every
//! attribute, padding to 4 bytes, and the order of the sealing attributes
//! (MESSAGE-INTEGRITY, then MESSAGE-INTEGRITY-SHA256, then FINGERPRINT), each of which
//! covers everything before it. It never allocates: a server keeps one output buffer and
//! reuses it for every packet.

use std::net::SocketAddr;

use thiserror::Error;

use crate::attribute::{
    self, ATTRIBUTE_HEADER_LEN, AttributeError, AttributeType, ErrorCode, address_len,
    write_address, write_error_code_head, write_xor_address,
};
use crate::fingerprint::{self, FINGERPRINT_ATTRIBUTE_LEN};
use crate::integrity;
use crate::message::{HEADER_LEN, MAGIC_COOKIE, MessageType, Seal, TransactionId, padded};

/// The largest payload the 16-bit length field can describe in 4-byte steps.
const MAX_PAYLOAD_LEN: usize = 0xFFFC;

/// Why a message could not be written.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("the output buffer holds {capacity} bytes, {needed} are needed")]
    BufferTooSmall { needed: usize, capacity: usize },
    #[error("the message would exceed the maximum STUN length")]
    MessageTooLong,
    #[error("{attribute} cannot follow the integrity attributes")]
    AfterIntegrity { attribute: AttributeType },
    #[error("{attribute} is computed by the builder and cannot be added raw")]
    ComputedAttribute { attribute: AttributeType },
    #[error("attribute {attribute}: {error}")]
    InvalidValue {
        attribute: AttributeType,
        #[source]
        error: AttributeError,
    },
}

/// Writes one STUN message into a borrowed buffer.
///
/// ```
/// use switchboard_stun::{Message, MessageBuilder, MessageType, TransactionId};
///
/// let mut buf = [0u8; 128];
/// let id = TransactionId::new([1; 12]);
/// let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_SUCCESS, id)?;
/// builder.add_xor_mapped_address("198.51.100.7:4000".parse().unwrap())?;
/// builder.add_software("example")?;
/// builder.add_message_integrity(b"password")?;
/// let len = builder.finish_with_fingerprint()?;
///
/// let message = Message::decode(&buf[..len]).unwrap();
/// assert!(message.verify_integrity(b"password").is_ok());
/// # Ok::<(), switchboard_stun::EncodeError>(())
/// ```
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    transaction_id: TransactionId,
    seal: Seal,
}

impl<'b> MessageBuilder<'b> {
    /// Writes the header; attributes follow with the `add_*` methods.
    pub fn new(
        buf: &'b mut [u8],
        message_type: MessageType,
        transaction_id: TransactionId,
    ) -> Result<Self, EncodeError> {
        let Some(header) = buf.get_mut(..HEADER_LEN) else {
            return Err(EncodeError::BufferTooSmall {
                needed: HEADER_LEN,
                capacity: buf.len(),
            });
        };
        header[0..2].copy_from_slice(&message_type.to_wire().to_be_bytes());
        header[2..4].copy_from_slice(&[0, 0]);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(transaction_id.as_bytes());
        Ok(Self {
            buf,
            len: HEADER_LEN,
            transaction_id,
            seal: Seal::Open,
        })
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    /// Bytes written so far.
    pub fn encoded_len(&self) -> usize {
        self.len
    }

    /// Reserves room for an attribute with a `value_len`-byte value, writes its header and
    /// zero padding, updates the message length, and returns the value area.
    fn reserve(&mut self, kind: AttributeType, value_len: usize) -> Result<&mut [u8], EncodeError> {
        let (counts, seal) = self.seal.admit(kind);
        if !counts {
            return Err(EncodeError::AfterIntegrity { attribute: kind });
        }
        let value_len_field = u16::try_from(value_len).map_err(|_| EncodeError::MessageTooLong)?;
        let start = self.len;
        let end = start + ATTRIBUTE_HEADER_LEN + padded(value_len);
        if end - HEADER_LEN > MAX_PAYLOAD_LEN {
            return Err(EncodeError::MessageTooLong);
        }
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall {
                needed: end,
                capacity: self.buf.len(),
            });
        }
        self.seal = seal;
        self.len = end;
        self.set_length(end);
        let attribute = &mut self.buf[start..end];
        attribute[0..2].copy_from_slice(&kind.code().to_be_bytes());
        attribute[2..4].copy_from_slice(&value_len_field.to_be_bytes());
        // Padding is zeroed so that a reused buffer never leaks bytes of an older message.
        attribute[ATTRIBUTE_HEADER_LEN + value_len..].fill(0);
        Ok(&mut attribute[ATTRIBUTE_HEADER_LEN..ATTRIBUTE_HEADER_LEN + value_len])
    }

    /// Makes the header length describe a message ending at `end`.
    fn set_length(&mut self, end: usize) {
        let payload = (end - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&payload.to_be_bytes());
    }

    /// Adds any attribute from its raw value: the way to write attributes this crate has
    /// no typed method for. The integrity attributes and FINGERPRINT are refused because
    /// their values are computed over the message.
    pub fn add_raw(&mut self, kind: AttributeType, value: &[u8]) -> Result<(), EncodeError> {
        if matches!(
            kind,
            AttributeType::MESSAGE_INTEGRITY
                | AttributeType::MESSAGE_INTEGRITY_SHA256
                | AttributeType::FINGERPRINT
        ) {
            return Err(EncodeError::ComputedAttribute { attribute: kind });
        }
        self.reserve(kind, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Adds an address attribute in the plain MAPPED-ADDRESS layout (also used by
    /// ALTERNATE-SERVER).
    pub fn add_address(
        &mut self,
        kind: AttributeType,
        addr: SocketAddr,
    ) -> Result<(), EncodeError> {
        write_address(self.reserve(kind, address_len(&addr))?, addr);
        Ok(())
    }

    /// Adds an address attribute in the XOR-MAPPED-ADDRESS layout (also used by TURN's
    /// XOR-PEER-ADDRESS and XOR-RELAYED-ADDRESS).
    pub fn add_xor_address(
        &mut self,
        kind: AttributeType,
        addr: SocketAddr,
    ) -> Result<(), EncodeError> {
        let transaction_id = self.transaction_id;
        write_xor_address(
            self.reserve(kind, address_len(&addr))?,
            addr,
            &transaction_id,
        );
        Ok(())
    }

    pub fn add_mapped_address(&mut self, addr: SocketAddr) -> Result<(), EncodeError> {
        self.add_address(AttributeType::MAPPED_ADDRESS, addr)
    }

    pub fn add_xor_mapped_address(&mut self, addr: SocketAddr) -> Result<(), EncodeError> {
        self.add_xor_address(AttributeType::XOR_MAPPED_ADDRESS, addr)
    }

    fn add_text(&mut self, kind: AttributeType, text: &str) -> Result<(), EncodeError> {
        attribute::check_text(kind, text).map_err(|error| EncodeError::InvalidValue {
            attribute: kind,
            error,
        })?;
        self.add_raw(kind, text.as_bytes())
    }

    pub fn add_software(&mut self, software: &str) -> Result<(), EncodeError> {
        self.add_text(AttributeType::SOFTWARE, software)
    }

    pub fn add_username(&mut self, username: &str) -> Result<(), EncodeError> {
        self.add_text(AttributeType::USERNAME, username)
    }

    pub fn add_realm(&mut self, realm: &str) -> Result<(), EncodeError> {
        self.add_text(AttributeType::REALM, realm)
    }

    pub fn add_nonce(&mut self, nonce: &str) -> Result<(), EncodeError> {
        self.add_text(AttributeType::NONCE, nonce)
    }

    pub fn add_error_code(&mut self, code: ErrorCode, reason: &str) -> Result<(), EncodeError> {
        let kind = AttributeType::ERROR_CODE;
        attribute::check_text(kind, reason).map_err(|error| EncodeError::InvalidValue {
            attribute: kind,
            error,
        })?;
        let value = self.reserve(kind, 4 + reason.len())?;
        write_error_code_head(value, code);
        value[4..].copy_from_slice(reason.as_bytes());
        Ok(())
    }

    pub fn add_unknown_attributes(&mut self, kinds: &[AttributeType]) -> Result<(), EncodeError> {
        let value = self.reserve(AttributeType::UNKNOWN_ATTRIBUTES, 2 * kinds.len())?;
        for (slot, kind) in value.chunks_exact_mut(2).zip(kinds) {
            slot.copy_from_slice(&kind.code().to_be_bytes());
        }
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1) over everything written so far. `key` is the
    /// password for short-term credentials, or [`crate::long_term_key_md5`] for long-term
    /// ones. After it only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may be added.
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.add_mac(AttributeType::MESSAGE_INTEGRITY, 20, |covered, out| {
            out.copy_from_slice(&integrity::hmac_sha1(key, &[covered]));
        })
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, untruncated) over everything written
    /// so far. After it only FINGERPRINT may be added.
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.add_mac(
            AttributeType::MESSAGE_INTEGRITY_SHA256,
            32,
            |covered, out| {
                out.copy_from_slice(&integrity::hmac_sha256(key, &[covered]));
            },
        )
    }

    /// The covered bytes end before the attribute, but the header length must already count
    /// it (RFC 8489 §14.5), which `reserve` has done by the time `sign` runs.
    fn add_mac(
        &mut self,
        kind: AttributeType,
        mac_len: usize,
        sign: impl FnOnce(&[u8], &mut [u8]),
    ) -> Result<(), EncodeError> {
        let start = self.len;
        self.reserve(kind, mac_len)?;
        let (covered, attribute) = self.buf.split_at_mut(start);
        sign(
            covered,
            &mut attribute[ATTRIBUTE_HEADER_LEN..ATTRIBUTE_HEADER_LEN + mac_len],
        );
        Ok(())
    }

    /// Ends the message; returns its length.
    pub fn finish(self) -> usize {
        self.len
    }

    /// Appends FINGERPRINT and ends the message; returns its length.
    pub fn finish_with_fingerprint(mut self) -> Result<usize, EncodeError> {
        let start = self.len;
        let end = start + FINGERPRINT_ATTRIBUTE_LEN;
        if end - HEADER_LEN > MAX_PAYLOAD_LEN {
            return Err(EncodeError::MessageTooLong);
        }
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall {
                needed: end,
                capacity: self.buf.len(),
            });
        }
        self.set_length(end);
        let value = fingerprint::compute(&self.buf[..start]);
        let attribute = &mut self.buf[start..end];
        attribute[0..2].copy_from_slice(&AttributeType::FINGERPRINT.code().to_be_bytes());
        attribute[2..4].copy_from_slice(&4u16.to_be_bytes());
        attribute[4..8].copy_from_slice(&value.to_be_bytes());
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Attribute;
    use crate::message::{Class, Message, Method};

    const ID: TransactionId = TransactionId::new([3; 12]);

    #[test]
    fn typed_attributes_round_trip() {
        let mut buf = [0u8; 512];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_ERROR, ID).unwrap();
        builder
            .add_error_code(ErrorCode::TRY_ALTERNATE, "elsewhere")
            .unwrap();
        builder
            .add_address(
                AttributeType::ALTERNATE_SERVER,
                "[2001:db8::1]:3478".parse().unwrap(),
            )
            .unwrap();
        builder
            .add_mapped_address("192.0.2.5:7".parse().unwrap())
            .unwrap();
        builder
            .add_xor_mapped_address("[2001:db8::9]:65535".parse().unwrap())
            .unwrap();
        builder
            .add_xor_address(
                AttributeType::XOR_PEER_ADDRESS,
                "192.0.2.6:8".parse().unwrap(),
            )
            .unwrap();
        builder.add_username("user").unwrap();
        builder.add_realm("realm").unwrap();
        builder.add_nonce("nonce").unwrap();
        builder
            .add_unknown_attributes(&[
                AttributeType::new(0x7000),
                AttributeType::new(0x7001),
                AttributeType::new(0x7002),
            ])
            .unwrap();
        builder.add_software("sw").unwrap();
        builder.add_message_integrity(b"k1").unwrap();
        builder.add_message_integrity_sha256(b"k2").unwrap();
        let len = builder.finish_with_fingerprint().unwrap();

        let message = Message::decode(&buf[..len]).unwrap();
        assert_eq!(message.transaction_id(), ID);
        assert_eq!(
            message.message_type(),
            MessageType::new(Method::BINDING, Class::ErrorResponse)
        );
        let attributes: Vec<_> = message.attributes().collect();
        assert_eq!(
            attributes[0],
            Attribute::ErrorCode {
                code: ErrorCode::TRY_ALTERNATE,
                reason: "elsewhere"
            }
        );
        assert_eq!(
            attributes[1],
            Attribute::AlternateServer("[2001:db8::1]:3478".parse().unwrap())
        );
        assert_eq!(
            attributes[2],
            Attribute::MappedAddress("192.0.2.5:7".parse().unwrap())
        );
        assert_eq!(
            attributes[3],
            Attribute::XorMappedAddress("[2001:db8::9]:65535".parse().unwrap())
        );
        assert_eq!(attributes[4].kind(), AttributeType::XOR_PEER_ADDRESS);
        assert_eq!(attributes[5], Attribute::Username("user"));
        assert_eq!(attributes[6], Attribute::Realm("realm"));
        assert_eq!(attributes[7], Attribute::Nonce("nonce"));
        let Attribute::UnknownAttributes(list) = attributes[8] else {
            panic!("{:?}", attributes[8])
        };
        assert_eq!(
            list.iter().map(AttributeType::code).collect::<Vec<_>>(),
            [0x7000, 0x7001, 0x7002]
        );
        assert_eq!(attributes[9], Attribute::Software("sw"));
        assert_eq!(attributes[10].kind(), AttributeType::MESSAGE_INTEGRITY);
        assert_eq!(
            attributes[11].kind(),
            AttributeType::MESSAGE_INTEGRITY_SHA256
        );
        assert_eq!(attributes[12].kind(), AttributeType::FINGERPRINT);
        assert_eq!(attributes.len(), 13);
        assert_eq!(message.verify_integrity(b"k1"), Ok(()));
        assert_eq!(message.verify_integrity_sha256(b"k2"), Ok(()));
        assert!(message.verify_integrity_sha256(b"k1").is_err());
        // Three unknown attributes take 6 bytes and 2 of padding: every offset stays aligned.
        assert_eq!(len % 4, 0);
    }

    #[test]
    fn buffer_too_small_everywhere() {
        let mut tiny = [0u8; 19];
        assert_eq!(
            MessageBuilder::new(&mut tiny, MessageType::BINDING_REQUEST, ID).unwrap_err(),
            EncodeError::BufferTooSmall {
                needed: 20,
                capacity: 19
            }
        );
        let mut buf = [0u8; 27];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        assert_eq!(
            builder.add_software("abcd"),
            Err(EncodeError::BufferTooSmall {
                needed: 28,
                capacity: 27
            })
        );
        // A failed add leaves the message as it was.
        assert_eq!(builder.encoded_len(), 20);
        assert_eq!(
            builder.finish_with_fingerprint(),
            Err(EncodeError::BufferTooSmall {
                needed: 28,
                capacity: 27
            })
        );
        let mut buf = [0u8; 40];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        assert!(matches!(
            builder.add_message_integrity(b"k"),
            Err(EncodeError::BufferTooSmall { .. })
        ));
        assert!(matches!(
            builder.add_message_integrity_sha256(b"k"),
            Err(EncodeError::BufferTooSmall { .. })
        ));
        assert_eq!(builder.finish(), 20);
        assert_eq!(&buf[2..4], &[0, 0]);
    }

    #[test]
    fn sealing_order_is_enforced() {
        let mut buf = [0u8; 256];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        builder.add_message_integrity(b"k").unwrap();
        assert_eq!(
            builder.add_software("late"),
            Err(EncodeError::AfterIntegrity {
                attribute: AttributeType::SOFTWARE
            })
        );
        assert_eq!(
            builder.add_message_integrity(b"k"),
            Err(EncodeError::AfterIntegrity {
                attribute: AttributeType::MESSAGE_INTEGRITY
            })
        );
        builder.add_message_integrity_sha256(b"k").unwrap();
        assert_eq!(
            builder.add_message_integrity_sha256(b"k"),
            Err(EncodeError::AfterIntegrity {
                attribute: AttributeType::MESSAGE_INTEGRITY_SHA256
            })
        );
        let len = builder.finish_with_fingerprint().unwrap();
        assert!(Message::decode(&buf[..len]).unwrap().has_fingerprint());

        let mut buf = [0u8; 256];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        builder.add_message_integrity_sha256(b"k").unwrap();
        assert_eq!(
            builder.add_message_integrity(b"k"),
            Err(EncodeError::AfterIntegrity {
                attribute: AttributeType::MESSAGE_INTEGRITY
            })
        );
    }

    #[test]
    fn computed_attributes_cannot_be_added_raw() {
        let mut buf = [0u8; 256];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        for kind in [
            AttributeType::MESSAGE_INTEGRITY,
            AttributeType::MESSAGE_INTEGRITY_SHA256,
            AttributeType::FINGERPRINT,
        ] {
            assert_eq!(
                builder.add_raw(kind, &[0; 20]),
                Err(EncodeError::ComputedAttribute { attribute: kind })
            );
        }
    }

    #[test]
    fn length_limits() {
        let mut buf = vec![0u8; 70_000];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        assert_eq!(
            builder.add_raw(AttributeType::DATA, &[0; 65_536]),
            Err(EncodeError::MessageTooLong)
        );
        builder.add_raw(AttributeType::DATA, &[0; 65_000]).unwrap();
        assert_eq!(
            builder.add_raw(AttributeType::DATA, &[0; 600]),
            Err(EncodeError::MessageTooLong)
        );
        builder.add_raw(AttributeType::DATA, &[0; 520]).unwrap();
        assert_eq!(builder.encoded_len(), 20 + 65_004 + 524);
        assert_eq!(
            builder.finish_with_fingerprint(),
            Err(EncodeError::MessageTooLong)
        );

        let mut buf = [0u8; 2048];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        let long = "r".repeat(800);
        assert!(matches!(
            builder.add_realm(&long),
            Err(EncodeError::InvalidValue {
                attribute: AttributeType::REALM,
                ..
            })
        ));
        assert!(matches!(
            builder.add_error_code(ErrorCode::BAD_REQUEST, &long),
            Err(EncodeError::InvalidValue {
                attribute: AttributeType::ERROR_CODE,
                ..
            })
        ));
        assert!(builder.add_username(&long[..509]).is_err());
        builder.add_username(&long[..508]).unwrap();
    }

    #[test]
    fn reused_buffer_leaves_no_stale_bytes() {
        let mut buf = [0xAAu8; 64];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        builder.add_software("a").unwrap();
        let len = builder.finish();
        assert_eq!(&buf[20..len], &[0x80, 0x22, 0x00, 0x01, b'a', 0, 0, 0]);
        assert!(Message::decode(&buf[..len]).is_ok());
    }
}
