//! STUN attributes: their type codes, their wire layout and their typed values.
//!
//! This module owns what each attribute value means: address families and the XOR
//! obfuscation of XOR-MAPPED-ADDRESS, the ERROR-CODE layout, the UNKNOWN-ATTRIBUTES list,
//! length limits on text attributes. Values borrow the message bytes; nothing here
//! allocates. Attributes this crate does not interpret (TURN, ICE, RFC 5780 ...) still
//! decode, as [`Attribute::Other`], so that a caller can read them raw.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

use crate::message::{MAGIC_COOKIE, TransactionId};

/// Size of an attribute header: 16-bit type and 16-bit length.
pub const ATTRIBUTE_HEADER_LEN: usize = 4;

/// USERNAME must be shorter than 509 bytes (RFC 8489 §14.3).
const MAX_USERNAME_LEN: usize = 508;
/// REALM, NONCE, SOFTWARE and the ERROR-CODE reason are limited to 127 characters, which
/// RFC 8489 bounds at 763 bytes of UTF-8; counting bytes keeps the check allocation-free.
const MAX_TEXT_LEN: usize = 763;

/// A 16-bit attribute type code.
///
/// Codes below 0x8000 are comprehension-required: a server that does not understand one
/// must reject the request with 420 (Unknown Attribute).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeType(u16);

impl AttributeType {
    pub const MAPPED_ADDRESS: Self = Self(0x0001);
    /// RFC 5780 NAT behaviour discovery.
    pub const CHANGE_REQUEST: Self = Self(0x0003);
    pub const USERNAME: Self = Self(0x0006);
    pub const MESSAGE_INTEGRITY: Self = Self(0x0008);
    pub const ERROR_CODE: Self = Self(0x0009);
    pub const UNKNOWN_ATTRIBUTES: Self = Self(0x000A);
    /// RFC 8656 (TURN).
    pub const CHANNEL_NUMBER: Self = Self(0x000C);
    /// RFC 8656 (TURN).
    pub const LIFETIME: Self = Self(0x000D);
    /// RFC 8656 (TURN).
    pub const XOR_PEER_ADDRESS: Self = Self(0x0012);
    /// RFC 8656 (TURN).
    pub const DATA: Self = Self(0x0013);
    pub const REALM: Self = Self(0x0014);
    pub const NONCE: Self = Self(0x0015);
    /// RFC 8656 (TURN).
    pub const XOR_RELAYED_ADDRESS: Self = Self(0x0016);
    /// RFC 8656 (TURN).
    pub const REQUESTED_ADDRESS_FAMILY: Self = Self(0x0017);
    /// RFC 8656 (TURN).
    pub const EVEN_PORT: Self = Self(0x0018);
    /// RFC 8656 (TURN).
    pub const REQUESTED_TRANSPORT: Self = Self(0x0019);
    /// RFC 8656 (TURN).
    pub const DONT_FRAGMENT: Self = Self(0x001A);
    pub const MESSAGE_INTEGRITY_SHA256: Self = Self(0x001C);
    pub const PASSWORD_ALGORITHM: Self = Self(0x001D);
    pub const USERHASH: Self = Self(0x001E);
    pub const XOR_MAPPED_ADDRESS: Self = Self(0x0020);
    /// RFC 8656 (TURN).
    pub const RESERVATION_TOKEN: Self = Self(0x0022);
    /// RFC 8445 (ICE).
    pub const PRIORITY: Self = Self(0x0024);
    /// RFC 8445 (ICE).
    pub const USE_CANDIDATE: Self = Self(0x0025);
    /// RFC 8656 (TURN).
    pub const ADDITIONAL_ADDRESS_FAMILY: Self = Self(0x8000);
    /// RFC 8656 (TURN).
    pub const ADDRESS_ERROR_CODE: Self = Self(0x8001);
    pub const PASSWORD_ALGORITHMS: Self = Self(0x8002);
    pub const ALTERNATE_DOMAIN: Self = Self(0x8003);
    /// RFC 8656 (TURN).
    pub const ICMP: Self = Self(0x8004);
    pub const SOFTWARE: Self = Self(0x8022);
    pub const ALTERNATE_SERVER: Self = Self(0x8023);
    pub const FINGERPRINT: Self = Self(0x8028);
    /// RFC 8445 (ICE).
    pub const ICE_CONTROLLED: Self = Self(0x8029);
    /// RFC 8445 (ICE).
    pub const ICE_CONTROLLING: Self = Self(0x802A);

    pub const fn new(code: u16) -> Self {
        Self(code)
    }

    pub const fn code(self) -> u16 {
        self.0
    }

    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// The registered name, for logs; `None` for codes this crate has no name for.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::MAPPED_ADDRESS => "MAPPED-ADDRESS",
            Self::CHANGE_REQUEST => "CHANGE-REQUEST",
            Self::USERNAME => "USERNAME",
            Self::MESSAGE_INTEGRITY => "MESSAGE-INTEGRITY",
            Self::ERROR_CODE => "ERROR-CODE",
            Self::UNKNOWN_ATTRIBUTES => "UNKNOWN-ATTRIBUTES",
            Self::CHANNEL_NUMBER => "CHANNEL-NUMBER",
            Self::LIFETIME => "LIFETIME",
            Self::XOR_PEER_ADDRESS => "XOR-PEER-ADDRESS",
            Self::DATA => "DATA",
            Self::REALM => "REALM",
            Self::NONCE => "NONCE",
            Self::XOR_RELAYED_ADDRESS => "XOR-RELAYED-ADDRESS",
            Self::REQUESTED_ADDRESS_FAMILY => "REQUESTED-ADDRESS-FAMILY",
            Self::EVEN_PORT => "EVEN-PORT",
            Self::REQUESTED_TRANSPORT => "REQUESTED-TRANSPORT",
            Self::DONT_FRAGMENT => "DONT-FRAGMENT",
            Self::MESSAGE_INTEGRITY_SHA256 => "MESSAGE-INTEGRITY-SHA256",
            Self::PASSWORD_ALGORITHM => "PASSWORD-ALGORITHM",
            Self::USERHASH => "USERHASH",
            Self::XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS",
            Self::RESERVATION_TOKEN => "RESERVATION-TOKEN",
            Self::PRIORITY => "PRIORITY",
            Self::USE_CANDIDATE => "USE-CANDIDATE",
            Self::ADDITIONAL_ADDRESS_FAMILY => "ADDITIONAL-ADDRESS-FAMILY",
            Self::ADDRESS_ERROR_CODE => "ADDRESS-ERROR-CODE",
            Self::PASSWORD_ALGORITHMS => "PASSWORD-ALGORITHMS",
            Self::ALTERNATE_DOMAIN => "ALTERNATE-DOMAIN",
            Self::ICMP => "ICMP",
            Self::SOFTWARE => "SOFTWARE",
            Self::ALTERNATE_SERVER => "ALTERNATE-SERVER",
            Self::FINGERPRINT => "FINGERPRINT",
            Self::ICE_CONTROLLED => "ICE-CONTROLLED",
            Self::ICE_CONTROLLING => "ICE-CONTROLLING",
            _ => return None,
        })
    }
}

impl fmt::Debug for AttributeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}(0x{:04X})", self.0),
            None => write!(f, "0x{:04X}", self.0),
        }
    }
}

impl fmt::Display for AttributeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A STUN error code (RFC 8489 §14.8): a class from 3 to 6 and a number from 0 to 99.
///
/// The range is checked on construction, so every value can be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(u16);

impl ErrorCode {
    pub const TRY_ALTERNATE: Self = Self(300);
    pub const BAD_REQUEST: Self = Self(400);
    pub const UNAUTHORIZED: Self = Self(401);
    pub const FORBIDDEN: Self = Self(403);
    pub const UNKNOWN_ATTRIBUTE: Self = Self(420);
    pub const ALLOCATION_MISMATCH: Self = Self(437);
    pub const STALE_NONCE: Self = Self(438);
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: Self = Self(440);
    pub const WRONG_CREDENTIALS: Self = Self(441);
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: Self = Self(442);
    pub const PEER_ADDRESS_FAMILY_MISMATCH: Self = Self(443);
    pub const ALLOCATION_QUOTA_REACHED: Self = Self(486);
    pub const ROLE_CONFLICT: Self = Self(487);
    pub const SERVER_ERROR: Self = Self(500);
    pub const INSUFFICIENT_CAPACITY: Self = Self(508);

    /// `None` unless `code` is within 300..=699.
    pub const fn new(code: u16) -> Option<Self> {
        if code >= 300 && code <= 699 {
            Some(Self(code))
        } else {
            None
        }
    }

    pub const fn code(self) -> u16 {
        self.0
    }

    pub const fn class(self) -> u8 {
        (self.0 / 100) as u8
    }

    pub const fn number(self) -> u8 {
        (self.0 % 100) as u8
    }

    /// The reason phrase RFC 8489 and RFC 8656 suggest; a generic one for other codes.
    pub fn default_reason(self) -> &'static str {
        match self {
            Self::TRY_ALTERNATE => "Try Alternate",
            Self::BAD_REQUEST => "Bad Request",
            Self::UNAUTHORIZED => "Unauthorized",
            Self::FORBIDDEN => "Forbidden",
            Self::UNKNOWN_ATTRIBUTE => "Unknown Attribute",
            Self::ALLOCATION_MISMATCH => "Allocation Mismatch",
            Self::STALE_NONCE => "Stale Nonce",
            Self::ADDRESS_FAMILY_NOT_SUPPORTED => "Address Family not Supported",
            Self::WRONG_CREDENTIALS => "Wrong Credentials",
            Self::UNSUPPORTED_TRANSPORT_PROTOCOL => "Unsupported Transport Protocol",
            Self::PEER_ADDRESS_FAMILY_MISMATCH => "Peer Address Family Mismatch",
            Self::ALLOCATION_QUOTA_REACHED => "Allocation Quota Reached",
            Self::ROLE_CONFLICT => "Role Conflict",
            Self::SERVER_ERROR => "Server Error",
            Self::INSUFFICIENT_CAPACITY => "Insufficient Capacity",
            _ => match self.class() {
                3 => "Redirect",
                4 => "Client Error",
                5 => "Server Error",
                _ => "Global Failure",
            },
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.default_reason())
    }
}

/// Why an attribute value could not be decoded.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum AttributeError {
    #[error("value length {length} is invalid for this attribute")]
    InvalidLength { length: usize },
    #[error("unknown address family 0x{0:02X}")]
    UnknownAddressFamily(u8),
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    #[error("text of {length} bytes exceeds the limit of {max}")]
    TextTooLong { length: usize, max: usize },
    #[error("error class {class} / number {number} is outside 3..=6 / 0..=99")]
    InvalidErrorCode { class: u8, number: u8 },
}

/// An attribute as it sits on the wire: its type and its value without padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub kind: AttributeType,
    pub value: &'a [u8],
}

/// The UNKNOWN-ATTRIBUTES list of an error response, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownAttributes<'a>(&'a [u8]);

impl<'a> UnknownAttributes<'a> {
    pub fn iter(&self) -> impl Iterator<Item = AttributeType> + 'a {
        self.0
            .chunks_exact(2)
            .map(|pair| AttributeType(u16::from_be_bytes([pair[0], pair[1]])))
    }

    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A decoded attribute value.
///
/// New variants (TURN's attributes first) are added as the server learns to use them, so
/// matches need a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    AlternateServer(SocketAddr),
    Username(&'a str),
    Realm(&'a str),
    Nonce(&'a str),
    Software(&'a str),
    ErrorCode {
        code: ErrorCode,
        reason: &'a str,
    },
    UnknownAttributes(UnknownAttributes<'a>),
    MessageIntegrity(&'a [u8; 20]),
    MessageIntegritySha256(&'a [u8]),
    Fingerprint(u32),
    /// Any attribute this crate does not interpret, known or not.
    Other(RawAttribute<'a>),
}

impl<'a> Attribute<'a> {
    /// Interprets a raw attribute. The transaction id is needed to undo the XOR of
    /// XOR-MAPPED-ADDRESS for IPv6.
    pub fn decode(
        raw: RawAttribute<'a>,
        transaction_id: &TransactionId,
    ) -> Result<Self, AttributeError> {
        let value = raw.value;
        Ok(match raw.kind {
            AttributeType::MAPPED_ADDRESS => Self::MappedAddress(decode_address(value)?),
            AttributeType::XOR_MAPPED_ADDRESS => {
                Self::XorMappedAddress(decode_xor_address(value, transaction_id)?)
            }
            AttributeType::ALTERNATE_SERVER => Self::AlternateServer(decode_address(value)?),
            AttributeType::USERNAME => Self::Username(decode_text(value, MAX_USERNAME_LEN)?),
            AttributeType::REALM => Self::Realm(decode_text(value, MAX_TEXT_LEN)?),
            AttributeType::NONCE => Self::Nonce(decode_text(value, MAX_TEXT_LEN)?),
            AttributeType::SOFTWARE => Self::Software(decode_text(value, MAX_TEXT_LEN)?),
            AttributeType::ERROR_CODE => {
                let (code, reason) = decode_error_code(value)?;
                Self::ErrorCode { code, reason }
            }
            AttributeType::UNKNOWN_ATTRIBUTES => {
                if value.len() % 2 != 0 {
                    return Err(AttributeError::InvalidLength {
                        length: value.len(),
                    });
                }
                Self::UnknownAttributes(UnknownAttributes(value))
            }
            AttributeType::MESSAGE_INTEGRITY => {
                Self::MessageIntegrity(value.try_into().map_err(|_| {
                    AttributeError::InvalidLength {
                        length: value.len(),
                    }
                })?)
            }
            AttributeType::MESSAGE_INTEGRITY_SHA256 => {
                // RFC 8489 §14.6: truncation is allowed down to 16 bytes, in steps of 4.
                if !(16..=32).contains(&value.len()) || value.len() % 4 != 0 {
                    return Err(AttributeError::InvalidLength {
                        length: value.len(),
                    });
                }
                Self::MessageIntegritySha256(value)
            }
            AttributeType::FINGERPRINT => {
                Self::Fingerprint(u32::from_be_bytes(value.try_into().map_err(|_| {
                    AttributeError::InvalidLength {
                        length: value.len(),
                    }
                })?))
            }
            _ => Self::Other(raw),
        })
    }

    pub fn kind(&self) -> AttributeType {
        match self {
            Self::MappedAddress(_) => AttributeType::MAPPED_ADDRESS,
            Self::XorMappedAddress(_) => AttributeType::XOR_MAPPED_ADDRESS,
            Self::AlternateServer(_) => AttributeType::ALTERNATE_SERVER,
            Self::Username(_) => AttributeType::USERNAME,
            Self::Realm(_) => AttributeType::REALM,
            Self::Nonce(_) => AttributeType::NONCE,
            Self::Software(_) => AttributeType::SOFTWARE,
            Self::ErrorCode { .. } => AttributeType::ERROR_CODE,
            Self::UnknownAttributes(_) => AttributeType::UNKNOWN_ATTRIBUTES,
            Self::MessageIntegrity(_) => AttributeType::MESSAGE_INTEGRITY,
            Self::MessageIntegritySha256(_) => AttributeType::MESSAGE_INTEGRITY_SHA256,
            Self::Fingerprint(_) => AttributeType::FINGERPRINT,
            Self::Other(raw) => raw.kind,
        }
    }
}

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// Wire length of a (XOR-)MAPPED-ADDRESS value for this address.
pub(crate) fn address_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn decode_address(value: &[u8]) -> Result<SocketAddr, AttributeError> {
    // The first byte is reserved; RFC 8489 tells receivers to ignore it.
    let (family, port, ip) = match value {
        [_, family, p0, p1, ip @ ..] => (*family, u16::from_be_bytes([*p0, *p1]), ip),
        _ => {
            return Err(AttributeError::InvalidLength {
                length: value.len(),
            });
        }
    };
    let ip = match (family, ip.len()) {
        (FAMILY_IPV4, 4) => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        (FAMILY_IPV6, 16) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(ip);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        (FAMILY_IPV4 | FAMILY_IPV6, _) => {
            return Err(AttributeError::InvalidLength {
                length: value.len(),
            });
        }
        (other, _) => return Err(AttributeError::UnknownAddressFamily(other)),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The 16 bytes an IPv6 address is XORed with: the magic cookie then the transaction id.
fn xor_pad(transaction_id: &TransactionId) -> [u8; 16] {
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(transaction_id.as_bytes());
    pad
}

/// XOR is its own inverse, so the same transform encodes and decodes.
fn xor_address(addr: SocketAddr, transaction_id: &TransactionId) -> SocketAddr {
    let pad = xor_pad(transaction_id);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match addr.ip() {
        IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) ^ MAGIC_COOKIE)),
        IpAddr::V6(ip) => {
            let mut octets = ip.octets();
            octets.iter_mut().zip(pad).for_each(|(o, p)| *o ^= p);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    };
    SocketAddr::new(ip, port)
}

fn decode_xor_address(
    value: &[u8],
    transaction_id: &TransactionId,
) -> Result<SocketAddr, AttributeError> {
    decode_address(value).map(|addr| xor_address(addr, transaction_id))
}

/// Writes a MAPPED-ADDRESS value; `out` is exactly [`address_len`] bytes.
pub(crate) fn write_address(out: &mut [u8], addr: SocketAddr) {
    out[0] = 0;
    out[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            out[4..8].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            out[4..20].copy_from_slice(&ip.octets());
        }
    }
}

/// Writes an XOR-MAPPED-ADDRESS value; `out` is exactly [`address_len`] bytes.
pub(crate) fn write_xor_address(out: &mut [u8], addr: SocketAddr, transaction_id: &TransactionId) {
    write_address(out, xor_address(addr, transaction_id));
}

fn decode_text(value: &[u8], max: usize) -> Result<&str, AttributeError> {
    if value.len() > max {
        return Err(AttributeError::TextTooLong {
            length: value.len(),
            max,
        });
    }
    std::str::from_utf8(value).map_err(|_| AttributeError::InvalidUtf8)
}

/// Checks a text value before it is written, with the same limits as decoding.
pub(crate) fn check_text(kind: AttributeType, text: &str) -> Result<(), AttributeError> {
    let max = if kind == AttributeType::USERNAME {
        MAX_USERNAME_LEN
    } else {
        MAX_TEXT_LEN
    };
    if text.len() > max {
        return Err(AttributeError::TextTooLong {
            length: text.len(),
            max,
        });
    }
    Ok(())
}

fn decode_error_code(value: &[u8]) -> Result<(ErrorCode, &str), AttributeError> {
    let [_, _, class, number, reason @ ..] = value else {
        return Err(AttributeError::InvalidLength {
            length: value.len(),
        });
    };
    // Only the low three bits of the third byte carry the class; the rest is reserved.
    let class = class & 0x07;
    let number = *number;
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttributeError::InvalidErrorCode { class, number });
    }
    let code = ErrorCode(u16::from(class) * 100 + u16::from(number));
    Ok((code, decode_text(reason, MAX_TEXT_LEN)?))
}

/// Writes the fixed part of an ERROR-CODE value; the reason follows it.
pub(crate) fn write_error_code_head(out: &mut [u8], code: ErrorCode) {
    out[..4].copy_from_slice(&[0, 0, code.class(), code.number()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: TransactionId = TransactionId::new([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);

    fn raw(kind: AttributeType, value: &[u8]) -> RawAttribute<'_> {
        RawAttribute { kind, value }
    }

    #[test]
    fn address_round_trip_both_families() {
        for addr in [
            "192.0.2.1:32853",
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            "0.0.0.0:0",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut plain = [0u8; 20];
            let mut xored = [0u8; 20];
            let len = address_len(&addr);
            write_address(&mut plain[..len], addr);
            write_xor_address(&mut xored[..len], addr, &ID);
            assert_eq!(decode_address(&plain[..len]), Ok(addr));
            assert_eq!(decode_xor_address(&xored[..len], &ID), Ok(addr));
            if addr.port() != 0 {
                assert_ne!(plain[..len], xored[..len]);
            }
        }
    }

    #[test]
    fn address_errors() {
        assert_eq!(
            decode_address(&[0, 1, 0]),
            Err(AttributeError::InvalidLength { length: 3 })
        );
        assert_eq!(
            decode_address(&[0, 1, 0, 1, 1, 2, 3]),
            Err(AttributeError::InvalidLength { length: 7 })
        );
        assert_eq!(
            decode_address(&[0, 2, 0, 1, 1, 2, 3, 4]),
            Err(AttributeError::InvalidLength { length: 8 })
        );
        assert_eq!(
            decode_address(&[0, 3, 0, 1, 1, 2, 3, 4]),
            Err(AttributeError::UnknownAddressFamily(3))
        );
        // The reserved first byte is ignored.
        assert_eq!(
            decode_address(&[0xff, 1, 0, 80, 10, 0, 0, 1]),
            Ok("10.0.0.1:80".parse().unwrap())
        );
    }

    #[test]
    fn error_code_layout() {
        let value = [0, 0, 4, 20, b'U', b'n', b'k'];
        assert_eq!(
            Attribute::decode(raw(AttributeType::ERROR_CODE, &value), &ID),
            Ok(Attribute::ErrorCode {
                code: ErrorCode::UNKNOWN_ATTRIBUTE,
                reason: "Unk"
            })
        );
        // Reserved bits above the class are ignored.
        assert_eq!(
            decode_error_code(&[0xff, 0xff, 0xfd, 0]),
            Ok((ErrorCode::SERVER_ERROR, ""))
        );
        assert_eq!(
            decode_error_code(&[0, 0, 2, 0]),
            Err(AttributeError::InvalidErrorCode {
                class: 2,
                number: 0
            })
        );
        assert_eq!(
            decode_error_code(&[0, 0, 7, 0]),
            Err(AttributeError::InvalidErrorCode {
                class: 7,
                number: 0
            })
        );
        assert_eq!(
            decode_error_code(&[0, 0, 4, 100]),
            Err(AttributeError::InvalidErrorCode {
                class: 4,
                number: 100
            })
        );
        assert_eq!(
            decode_error_code(&[0, 0, 4]),
            Err(AttributeError::InvalidLength { length: 3 })
        );
        assert_eq!(
            decode_error_code(&[0, 0, 4, 0, 0xff]),
            Err(AttributeError::InvalidUtf8)
        );
    }

    #[test]
    fn error_code_range() {
        assert_eq!(ErrorCode::new(299), None);
        assert_eq!(ErrorCode::new(700), None);
        let code = ErrorCode::new(699).unwrap();
        assert_eq!((code.class(), code.number()), (6, 99));
        assert_eq!(ErrorCode::new(420), Some(ErrorCode::UNKNOWN_ATTRIBUTE));
        assert_eq!(ErrorCode::BAD_REQUEST.to_string(), "400 Bad Request");
        assert_eq!(
            ErrorCode::new(499).unwrap().default_reason(),
            "Client Error"
        );
    }

    #[test]
    fn text_limits() {
        let long = [b'a'; MAX_TEXT_LEN + 1];
        assert_eq!(
            Attribute::decode(raw(AttributeType::SOFTWARE, &long), &ID),
            Err(AttributeError::TextTooLong {
                length: MAX_TEXT_LEN + 1,
                max: MAX_TEXT_LEN
            })
        );
        assert_eq!(
            Attribute::decode(raw(AttributeType::USERNAME, &long[..509]), &ID),
            Err(AttributeError::TextTooLong {
                length: 509,
                max: MAX_USERNAME_LEN
            })
        );
        assert_eq!(
            Attribute::decode(raw(AttributeType::REALM, &[0xc3, 0x28]), &ID),
            Err(AttributeError::InvalidUtf8)
        );
        assert_eq!(
            Attribute::decode(raw(AttributeType::NONCE, b"n"), &ID),
            Ok(Attribute::Nonce("n"))
        );
    }

    #[test]
    fn fixed_length_attributes() {
        for kind in [AttributeType::MESSAGE_INTEGRITY, AttributeType::FINGERPRINT] {
            assert_eq!(
                Attribute::decode(raw(kind, &[0; 5]), &ID),
                Err(AttributeError::InvalidLength { length: 5 })
            );
        }
        for length in [12, 18, 36] {
            assert_eq!(
                Attribute::decode(
                    raw(AttributeType::MESSAGE_INTEGRITY_SHA256, &[0; 36][..length]),
                    &ID
                ),
                Err(AttributeError::InvalidLength { length })
            );
        }
        assert!(matches!(
            Attribute::decode(raw(AttributeType::MESSAGE_INTEGRITY_SHA256, &[0; 16]), &ID),
            Ok(Attribute::MessageIntegritySha256(v)) if v.len() == 16
        ));
    }

    #[test]
    fn unknown_attributes_list() {
        assert_eq!(
            Attribute::decode(raw(AttributeType::UNKNOWN_ATTRIBUTES, &[0, 1, 0]), &ID),
            Err(AttributeError::InvalidLength { length: 3 })
        );
        let Ok(Attribute::UnknownAttributes(list)) = Attribute::decode(
            raw(AttributeType::UNKNOWN_ATTRIBUTES, &[0x00, 0x77, 0x7f, 0xff]),
            &ID,
        ) else {
            panic!("decodes");
        };
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            [AttributeType::new(0x77), AttributeType::new(0x7fff)]
        );
    }

    #[test]
    fn uninterpreted_attributes_are_kept_raw() {
        let value = [0, 0, 0, 17];
        let attribute =
            Attribute::decode(raw(AttributeType::REQUESTED_TRANSPORT, &value), &ID).unwrap();
        assert_eq!(
            attribute,
            Attribute::Other(raw(AttributeType::REQUESTED_TRANSPORT, &value))
        );
        assert_eq!(attribute.kind(), AttributeType::REQUESTED_TRANSPORT);
    }

    #[test]
    fn type_names_and_comprehension() {
        assert!(AttributeType::XOR_MAPPED_ADDRESS.is_comprehension_required());
        assert!(!AttributeType::SOFTWARE.is_comprehension_required());
        assert_eq!(
            format!("{:?}", AttributeType::FINGERPRINT),
            "FINGERPRINT(0x8028)"
        );
        assert_eq!(format!("{}", AttributeType::new(0x7777)), "0x7777");
    }
}
