//! The STUN header and whole-message decoding (RFC 8489 §5, §6.3).
//!
//! This module owns the 20-byte header (method and class, length, magic cookie, transaction
//! id) and the rules a message must obey as a whole: length matching the payload, attributes
//! laid out in 4-byte steps inside it, FINGERPRINT last and correct, attributes after
//! MESSAGE-INTEGRITY ignored. A [`Message`] only exists once all of that holds, and it
//! borrows the input bytes rather than copying them.
//!
//! Failures come in two kinds because the protocol treats them differently: [`NotStun`]
//! means "not a STUN message" (another protocol sharing the port, noise, a FINGERPRINT
//! mismatch) and is dropped without an answer; [`DecodeError::Malformed`] means a real STUN
//! message with a broken body, which a server answers with 400 when it is a request.

use std::fmt;
use std::net::SocketAddr;

use thiserror::Error;

use crate::attribute::{
    ATTRIBUTE_HEADER_LEN, Attribute, AttributeError, AttributeType, ErrorCode, RawAttribute,
    UnknownAttributes,
};
use crate::fingerprint;

/// The fixed value of bytes 4..8 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the message header.
pub const HEADER_LEN: usize = 20;

/// A 12-bit STUN method.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    pub const BINDING: Self = Self(0x001);
    /// RFC 8656 (TURN).
    pub const ALLOCATE: Self = Self(0x003);
    /// RFC 8656 (TURN).
    pub const REFRESH: Self = Self(0x004);
    /// RFC 8656 (TURN).
    pub const SEND: Self = Self(0x006);
    /// RFC 8656 (TURN).
    pub const DATA: Self = Self(0x007);
    /// RFC 8656 (TURN).
    pub const CREATE_PERMISSION: Self = Self(0x008);
    /// RFC 8656 (TURN).
    pub const CHANNEL_BIND: Self = Self(0x009);

    /// `None` if `code` does not fit in 12 bits.
    pub const fn new(code: u16) -> Option<Self> {
        if code <= 0x0FFF {
            Some(Self(code))
        } else {
            None
        }
    }

    pub const fn code(self) -> u16 {
        self.0
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::BINDING => "Binding",
            Self::ALLOCATE => "Allocate",
            Self::REFRESH => "Refresh",
            Self::SEND => "Send",
            Self::DATA => "Data",
            Self::CREATE_PERMISSION => "CreatePermission",
            Self::CHANNEL_BIND => "ChannelBind",
            _ => return None,
        })
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Method(0x{:03X})", self.0),
        }
    }
}

/// The class of a message: what role it plays in a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Self::Request => 0b00,
            Self::Indication => 0b01,
            Self::SuccessResponse => 0b10,
            Self::ErrorResponse => 0b11,
        }
    }

    const fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Self::Request,
            0b01 => Self::Indication,
            0b10 => Self::SuccessResponse,
            _ => Self::ErrorResponse,
        }
    }
}

/// Method and class together: the first 16 bits of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub method: Method,
    pub class: Class,
}

impl MessageType {
    pub const BINDING_REQUEST: Self = Self::new(Method::BINDING, Class::Request);
    pub const BINDING_INDICATION: Self = Self::new(Method::BINDING, Class::Indication);
    pub const BINDING_SUCCESS: Self = Self::new(Method::BINDING, Class::SuccessResponse);
    pub const BINDING_ERROR: Self = Self::new(Method::BINDING, Class::ErrorResponse);

    pub const fn new(method: Method, class: Class) -> Self {
        Self { method, class }
    }

    /// The wire form: the class bits C1 and C0 sit at bits 8 and 4, splitting the method
    /// into three runs (RFC 8489 §5, figure 3).
    pub const fn to_wire(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7)
    }

    /// `None` if either of the two most significant bits is set.
    pub const fn from_wire(raw: u16) -> Option<Self> {
        if raw & 0xC000 != 0 {
            return None;
        }
        let method = (raw & 0x000F) | ((raw >> 1) & 0x0070) | ((raw >> 2) & 0x0F80);
        let class = ((raw >> 4) & 0b01) | ((raw >> 7) & 0b10);
        Some(Self {
            method: Method(method),
            class: Class::from_bits(class),
        })
    }
}

/// The 96-bit transaction id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId([u8; 12]);

impl TransactionId {
    pub const fn new(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransactionId(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str(")")
    }
}

/// A decoded header. `length` is the payload length after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub message_type: MessageType,
    pub length: u16,
    pub transaction_id: TransactionId,
}

impl Header {
    /// Decodes the first [`HEADER_LEN`] bytes of `bytes`; anything after them is ignored,
    /// so this also serves stream framing.
    pub fn decode(bytes: &[u8]) -> Result<Self, NotStun> {
        let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(NotStun::TooShort { len: bytes.len() });
        };
        let message_type = MessageType::from_wire(u16::from_be_bytes([header[0], header[1]]))
            .ok_or(NotStun::ReservedBitsSet)?;
        let length = u16::from_be_bytes([header[2], header[3]]);
        let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(NotStun::BadMagicCookie { found: cookie });
        }
        if length % 4 != 0 {
            return Err(NotStun::UnalignedLength { length });
        }
        let mut id = [0u8; 12];
        id.copy_from_slice(&header[8..]);
        Ok(Self {
            message_type,
            length,
            transaction_id: TransactionId(id),
        })
    }

    /// Header plus payload.
    pub fn message_len(&self) -> usize {
        HEADER_LEN + usize::from(self.length)
    }
}

/// Why bytes are not a STUN message at all. These are dropped silently.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum NotStun {
    #[error("{len} bytes is shorter than a STUN header")]
    TooShort { len: usize },
    #[error("the two most significant bits are not zero")]
    ReservedBitsSet,
    #[error("magic cookie is 0x{found:08X}")]
    BadMagicCookie { found: u32 },
    #[error("length {length} is not a multiple of 4")]
    UnalignedLength { length: u16 },
    #[error("header announces {declared} bytes but {actual} were received")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("FINGERPRINT is 0x{found:08X}, expected 0x{expected:08X}")]
    FingerprintMismatch { expected: u32, found: u32 },
}

/// How a STUN message with a valid header has a broken body.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("attribute {attribute} at offset {offset} runs past the end of the message")]
    AttributeOverrun {
        attribute: AttributeType,
        offset: usize,
    },
    #[error("attribute {attribute} follows FINGERPRINT")]
    AttributeAfterFingerprint { attribute: AttributeType },
    #[error("attribute {attribute}: {error}")]
    InvalidAttribute {
        attribute: AttributeType,
        #[source]
        error: AttributeError,
    },
}

/// Why [`Message::decode`] failed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not STUN: {0}")]
    NotStun(#[from] NotStun),
    #[error("malformed STUN {:?} {:?}: {reason}", header.message_type.method, header.message_type.class)]
    Malformed {
        /// The header is sound, so a request can still be answered with an error.
        header: Header,
        #[source]
        reason: Malformed,
    },
}

/// Where attributes stand relative to the integrity attributes. RFC 8489 §14.5, §14.6:
/// after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count, after
/// MESSAGE-INTEGRITY-SHA256 only FINGERPRINT; everything else there is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seal {
    Open,
    AfterIntegrity,
    AfterIntegritySha256,
}

impl Seal {
    /// Whether an attribute of `kind` at this point counts, and the state after it.
    pub(crate) fn admit(self, kind: AttributeType) -> (bool, Seal) {
        match (self, kind) {
            (_, AttributeType::FINGERPRINT) => (true, self),
            (Seal::Open, AttributeType::MESSAGE_INTEGRITY) => (true, Seal::AfterIntegrity),
            (Seal::Open | Seal::AfterIntegrity, AttributeType::MESSAGE_INTEGRITY_SHA256) => {
                (true, Seal::AfterIntegritySha256)
            }
            (Seal::Open, _) => (true, Seal::Open),
            (_, _) => (false, self),
        }
    }
}

/// Reads the attribute at `offset`, returning it and the offset of the next one.
fn read_attribute(bytes: &[u8], offset: usize) -> Result<(RawAttribute<'_>, usize), Malformed> {
    let overrun = |kind| Malformed::AttributeOverrun {
        attribute: kind,
        offset,
    };
    let Some(head) = bytes.get(offset..offset + ATTRIBUTE_HEADER_LEN) else {
        return Err(overrun(AttributeType::new(0)));
    };
    let kind = AttributeType::new(u16::from_be_bytes([head[0], head[1]]));
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let start = offset + ATTRIBUTE_HEADER_LEN;
    let next = start + padded(len);
    if next > bytes.len() {
        return Err(overrun(kind));
    }
    Ok((
        RawAttribute {
            kind,
            value: &bytes[start..start + len],
        },
        next,
    ))
}

/// Attribute values are padded to a multiple of 4 bytes.
pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// A decoded, checked STUN message borrowing its bytes.
///
/// Holding one means: the header is valid, the length matches, every attribute fits, every
/// attribute this crate interprets has a valid value, FINGERPRINT (if present) is last and
/// correct.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    bytes: &'a [u8],
    header: Header,
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    has_fingerprint: bool,
}

impl<'a> Message<'a> {
    /// Checks `bytes` as one complete STUN message (one datagram, or one frame cut from a
    /// stream with [`crate::message_len`]).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let header = Header::decode(bytes)?;
        if header.message_len() != bytes.len() {
            return Err(NotStun::LengthMismatch {
                declared: header.message_len(),
                actual: bytes.len(),
            }
            .into());
        }
        let malformed = |reason| DecodeError::Malformed { header, reason };

        let mut message = Self {
            bytes,
            header,
            integrity: None,
            integrity_sha256: None,
            has_fingerprint: false,
        };
        let mut seal = Seal::Open;
        let mut offset = HEADER_LEN;
        while offset < bytes.len() {
            let (raw, next) = read_attribute(bytes, offset).map_err(malformed)?;
            if message.has_fingerprint {
                return Err(malformed(Malformed::AttributeAfterFingerprint {
                    attribute: raw.kind,
                }));
            }
            let (counts, after) = seal.admit(raw.kind);
            seal = after;
            if counts {
                let attribute =
                    Attribute::decode(raw, &header.transaction_id).map_err(|error| {
                        malformed(Malformed::InvalidAttribute {
                            attribute: raw.kind,
                            error,
                        })
                    })?;
                match attribute {
                    Attribute::MessageIntegrity(_) => message.integrity = Some(offset),
                    Attribute::MessageIntegritySha256(_) => message.integrity_sha256 = Some(offset),
                    Attribute::Fingerprint(found) => {
                        // Covered bytes end where FINGERPRINT starts; the header length
                        // already includes it because it is the last attribute.
                        let expected = fingerprint::compute(&bytes[..offset]);
                        if next == bytes.len() && found != expected {
                            return Err(NotStun::FingerprintMismatch { expected, found }.into());
                        }
                        message.has_fingerprint = true;
                    }
                    _ => {}
                }
            }
            offset = next;
        }
        Ok(message)
    }

    pub fn header(&self) -> Header {
        self.header
    }

    pub fn message_type(&self) -> MessageType {
        self.header.message_type
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.header.transaction_id
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the message carries a (verified) FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.has_fingerprint
    }

    /// Offset of the MESSAGE-INTEGRITY attribute header, for verification.
    pub(crate) fn integrity_offset(&self) -> Option<usize> {
        self.integrity
    }

    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header, for verification.
    pub(crate) fn integrity_sha256_offset(&self) -> Option<usize> {
        self.integrity_sha256
    }

    /// The attributes that count, in order: those after the integrity attributes that
    /// RFC 8489 says to ignore are skipped.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            bytes: self.bytes,
            offset: HEADER_LEN,
            seal: Seal::Open,
            transaction_id: self.header.transaction_id,
        }
    }

    /// The first attribute of `kind`; later duplicates are ignored as RFC 8489 §14 allows.
    pub fn get(&self, kind: AttributeType) -> Option<Attribute<'a>> {
        self.attributes().find(|a| a.kind() == kind)
    }

    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        match self.get(AttributeType::XOR_MAPPED_ADDRESS)? {
            Attribute::XorMappedAddress(addr) => Some(addr),
            _ => None,
        }
    }

    pub fn mapped_address(&self) -> Option<SocketAddr> {
        match self.get(AttributeType::MAPPED_ADDRESS)? {
            Attribute::MappedAddress(addr) => Some(addr),
            _ => None,
        }
    }

    pub fn software(&self) -> Option<&'a str> {
        match self.get(AttributeType::SOFTWARE)? {
            Attribute::Software(software) => Some(software),
            _ => None,
        }
    }

    pub fn error_code(&self) -> Option<(ErrorCode, &'a str)> {
        match self.get(AttributeType::ERROR_CODE)? {
            Attribute::ErrorCode { code, reason } => Some((code, reason)),
            _ => None,
        }
    }

    pub fn unknown_attributes(&self) -> Option<UnknownAttributes<'a>> {
        match self.get(AttributeType::UNKNOWN_ATTRIBUTES)? {
            Attribute::UnknownAttributes(list) => Some(list),
            _ => None,
        }
    }

    /// The comprehension-required attributes for which `understood` says no: what a
    /// server lists in a 420 response. Which attributes are understood depends on the
    /// usage (a Binding server and a TURN server differ), hence the predicate.
    pub fn unknown_comprehension_required<F>(
        &self,
        understood: F,
    ) -> impl Iterator<Item = AttributeType> + 'a
    where
        F: Fn(AttributeType) -> bool + 'a,
    {
        self.attributes()
            .map(|a| a.kind())
            .filter(move |kind| kind.is_comprehension_required() && !understood(*kind))
    }
}

/// Iterator over the attributes of a [`Message`]; see [`Message::attributes`].
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    bytes: &'a [u8],
    offset: usize,
    seal: Seal,
    transaction_id: TransactionId,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        while self.offset < self.bytes.len() {
            let (raw, next) = read_attribute(self.bytes, self.offset).ok()?;
            self.offset = next;
            let (counts, after) = self.seal.admit(raw.kind);
            self.seal = after;
            if counts {
                // Message::decode already decoded every attribute that counts, so this
                // cannot fail; falling back to the raw form keeps the iterator total.
                return Some(
                    Attribute::decode(raw, &self.transaction_id).unwrap_or(Attribute::Other(raw)),
                );
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_bit_layout() {
        // RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111, indication 0x0011.
        assert_eq!(MessageType::BINDING_REQUEST.to_wire(), 0x0001);
        assert_eq!(MessageType::BINDING_SUCCESS.to_wire(), 0x0101);
        assert_eq!(MessageType::BINDING_ERROR.to_wire(), 0x0111);
        assert_eq!(MessageType::BINDING_INDICATION.to_wire(), 0x0011);
        // TURN Allocate request and ChannelBind error (RFC 8656).
        assert_eq!(
            MessageType::new(Method::ALLOCATE, Class::Request).to_wire(),
            0x0003
        );
        assert_eq!(
            MessageType::new(Method::CHANNEL_BIND, Class::ErrorResponse).to_wire(),
            0x0119
        );
        assert_eq!(MessageType::from_wire(0x4001), None);
        assert_eq!(MessageType::from_wire(0x8001), None);
    }

    #[test]
    fn message_type_round_trips_every_method_and_class() {
        for code in 0..=0x0FFF {
            for class in [
                Class::Request,
                Class::Indication,
                Class::SuccessResponse,
                Class::ErrorResponse,
            ] {
                let message_type = MessageType::new(Method::new(code).unwrap(), class);
                assert_eq!(
                    MessageType::from_wire(message_type.to_wire()),
                    Some(message_type)
                );
            }
        }
        assert_eq!(Method::new(0x1000), None);
    }

    #[test]
    fn header_checks() {
        let mut header = [0u8; 20];
        header[..8].copy_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        assert!(Header::decode(&header).is_ok());
        assert_eq!(
            Header::decode(&header[..19]),
            Err(NotStun::TooShort { len: 19 })
        );

        let mut bad = header;
        bad[0] = 0x40;
        assert_eq!(Header::decode(&bad), Err(NotStun::ReservedBitsSet));
        let mut bad = header;
        bad[7] = 0x43;
        assert_eq!(
            Header::decode(&bad),
            Err(NotStun::BadMagicCookie { found: 0x2112_A443 })
        );
        let mut bad = header;
        bad[3] = 6;
        assert_eq!(
            Header::decode(&bad),
            Err(NotStun::UnalignedLength { length: 6 })
        );
    }

    use crate::encode::MessageBuilder;

    const ID: TransactionId = TransactionId::new([9; 12]);

    fn build(message_type: MessageType, fill: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let mut builder = MessageBuilder::new(&mut buf, message_type, ID).unwrap();
        fill(&mut builder);
        let len = builder.finish();
        buf.truncate(len);
        buf
    }

    fn malformed(bytes: &[u8]) -> Malformed {
        match Message::decode(bytes) {
            Err(DecodeError::Malformed { header, reason }) => {
                assert_eq!(header.transaction_id, ID);
                reason
            }
            other => panic!("expected a malformed message, got {other:?}"),
        }
    }

    #[test]
    fn length_must_match_the_datagram() {
        let mut bytes = build(MessageType::BINDING_REQUEST, |b| {
            b.add_software("x").unwrap()
        });
        bytes.push(0);
        assert_eq!(
            Message::decode(&bytes).unwrap_err(),
            DecodeError::NotStun(NotStun::LengthMismatch {
                declared: 28,
                actual: 29
            })
        );
        assert_eq!(
            Message::decode(&bytes[..24]).unwrap_err(),
            DecodeError::NotStun(NotStun::LengthMismatch {
                declared: 28,
                actual: 24
            })
        );
    }

    #[test]
    fn attribute_overrunning_the_message() {
        let mut bytes = build(MessageType::BINDING_REQUEST, |b| {
            b.add_software("abcd").unwrap()
        });
        // Value length 5 pads to 8, past the 8-byte payload.
        bytes[23] = 5;
        assert_eq!(
            malformed(&bytes),
            Malformed::AttributeOverrun {
                attribute: AttributeType::SOFTWARE,
                offset: 20
            }
        );
    }

    #[test]
    fn attribute_after_fingerprint() {
        let mut buf = [0u8; 64];
        let builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        let len = builder.finish_with_fingerprint().unwrap();
        let mut bytes = buf[..len].to_vec();
        bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
        bytes[3] += 4;
        assert_eq!(
            malformed(&bytes),
            Malformed::AttributeAfterFingerprint {
                attribute: AttributeType::SOFTWARE
            }
        );
    }

    #[test]
    fn invalid_attribute_value() {
        let bytes = build(MessageType::BINDING_SUCCESS, |b| {
            b.add_raw(AttributeType::SOFTWARE, &[0xff]).unwrap()
        });
        assert_eq!(
            malformed(&bytes),
            Malformed::InvalidAttribute {
                attribute: AttributeType::SOFTWARE,
                error: AttributeError::InvalidUtf8
            }
        );
        let bytes = build(MessageType::BINDING_ERROR, |b| {
            b.add_raw(AttributeType::ERROR_CODE, &[0, 0, 9, 0]).unwrap()
        });
        assert!(matches!(
            malformed(&bytes),
            Malformed::InvalidAttribute {
                attribute: AttributeType::ERROR_CODE,
                ..
            }
        ));
    }

    #[test]
    fn fingerprint_mismatch_is_not_stun() {
        let mut buf = [0u8; 64];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        builder.add_software("client").unwrap();
        let len = builder.finish_with_fingerprint().unwrap();
        assert!(Message::decode(&buf[..len]).unwrap().has_fingerprint());
        buf[24] ^= 0x20;
        assert!(matches!(
            Message::decode(&buf[..len]),
            Err(DecodeError::NotStun(NotStun::FingerprintMismatch { .. }))
        ));
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut buf = [0u8; 128];
        let mut builder = MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, ID).unwrap();
        builder.add_software("before").unwrap();
        builder.add_message_integrity(b"key").unwrap();
        let len = builder.finish();
        // Append, after MESSAGE-INTEGRITY, an unknown comprehension-required attribute and
        // a SOFTWARE whose value is not UTF-8: both must be ignored, not rejected.
        let mut bytes = buf[..len].to_vec();
        bytes.extend_from_slice(&[0x7f, 0x00, 0x00, 0x01, 0xaa, 0, 0, 0]);
        bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x01, 0xff, 0, 0, 0]);
        let payload = (bytes.len() - HEADER_LEN) as u16;
        bytes[2..4].copy_from_slice(&payload.to_be_bytes());

        let message = Message::decode(&bytes).unwrap();
        let kinds: Vec<_> = message.attributes().map(|a| a.kind()).collect();
        assert_eq!(
            kinds,
            [AttributeType::SOFTWARE, AttributeType::MESSAGE_INTEGRITY]
        );
        assert_eq!(
            message
                .unknown_comprehension_required(|_| false)
                .collect::<Vec<_>>(),
            [AttributeType::MESSAGE_INTEGRITY]
        );
        assert_eq!(message.software(), Some("before"));
        // The integrity covers only what precedes it.
        assert_eq!(message.verify_integrity(b"key"), Ok(()));
    }

    #[test]
    fn first_duplicate_wins() {
        let bytes = build(MessageType::BINDING_SUCCESS, |b| {
            b.add_xor_mapped_address("10.0.0.1:1".parse().unwrap())
                .unwrap();
            b.add_xor_mapped_address("10.0.0.2:2".parse().unwrap())
                .unwrap();
        });
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(
            message.xor_mapped_address(),
            Some("10.0.0.1:1".parse().unwrap())
        );
        assert_eq!(message.attributes().count(), 2);
    }

    #[test]
    fn empty_attribute_values_and_header_only() {
        let bytes = build(MessageType::BINDING_INDICATION, |b| {
            b.add_raw(AttributeType::new(0x8055), &[]).unwrap()
        });
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(message.attributes().count(), 1);
        let bytes = build(MessageType::BINDING_REQUEST, |_| {});
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(message.attributes().count(), 0);
        assert_eq!(message.as_bytes(), &bytes[..]);
        assert!(!message.has_fingerprint());
    }

    #[test]
    fn debug_forms_are_readable() {
        assert_eq!(format!("{:?}", Method::BINDING), "Binding");
        assert_eq!(
            format!("{:?}", Method::new(0x0ABC).unwrap()),
            "Method(0xABC)"
        );
        assert_eq!(
            format!("{:?}", TransactionId::new([0xab; 12])),
            "TransactionId(abababababababababababab)"
        );
    }
}
