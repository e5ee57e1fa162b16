//! The TURN attributes (RFC 8656 §18) that the STUN codec leaves raw: their value layouts.
//!
//! `switchboard-stun` decodes the attributes every STUN usage shares and hands TURN's back
//! as raw values; this module reads those values into types and writes the ones a server
//! sends. A value of the wrong size is an error the server answers with 400.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use switchboard_stun::{ErrorCode, MAGIC_COOKIE, TransactionId};

/// The protocol number of UDP, the only REQUESTED-TRANSPORT this server relays.
pub const PROTOCOL_UDP: u8 = 17;

/// An address family as REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }

    fn wire(self) -> u8 {
        match self {
            Self::V4 => 0x01,
            Self::V6 => 0x02,
        }
    }
}

/// A TURN attribute value that could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// Wrong length or layout: 400.
    Malformed,
    /// A family other than IPv4 or IPv6: 440.
    UnknownFamily,
}

/// A 32-bit value (LIFETIME).
pub(crate) fn read_u32(value: &[u8]) -> Result<u32, ValueError> {
    let bytes: [u8; 4] = value.try_into().map_err(|_| ValueError::Malformed)?;
    Ok(u32::from_be_bytes(bytes))
}

/// CHANNEL-NUMBER: the number, then two reserved bytes.
pub(crate) fn read_channel_number(value: &[u8]) -> Result<u16, ValueError> {
    match value {
        [high, low, _, _] => Ok(u16::from_be_bytes([*high, *low])),
        _ => Err(ValueError::Malformed),
    }
}

/// REQUESTED-TRANSPORT: the protocol number, then three reserved bytes.
pub(crate) fn read_protocol(value: &[u8]) -> Result<u8, ValueError> {
    match value {
        [protocol, _, _, _] => Ok(*protocol),
        _ => Err(ValueError::Malformed),
    }
}

/// REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY: the family, then three
/// reserved bytes.
pub(crate) fn read_family(value: &[u8]) -> Result<Family, ValueError> {
    match value {
        [0x01, _, _, _] => Ok(Family::V4),
        [0x02, _, _, _] => Ok(Family::V6),
        [_, _, _, _] => Err(ValueError::UnknownFamily),
        _ => Err(ValueError::Malformed),
    }
}

/// EVEN-PORT: whether the R bit asks to reserve the next port too.
pub(crate) fn read_even_port(value: &[u8]) -> Result<bool, ValueError> {
    match value {
        [flags] => Ok(flags & 0x80 != 0),
        _ => Err(ValueError::Malformed),
    }
}

/// RESERVATION-TOKEN: eight opaque bytes.
pub(crate) fn read_token(value: &[u8]) -> Result<[u8; 8], ValueError> {
    value.try_into().map_err(|_| ValueError::Malformed)
}

/// An XOR-PEER-ADDRESS value.
pub(crate) fn read_xor_address(
    value: &[u8],
    transaction_id: &TransactionId,
) -> Result<SocketAddr, ValueError> {
    let [_, family, p0, p1, ip @ ..] = value else {
        return Err(ValueError::Malformed);
    };
    let port = u16::from_be_bytes([*p0, *p1]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (*family, ip.len()) {
        (0x01, 4) => {
            let raw = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
            IpAddr::V4(Ipv4Addr::from(raw ^ MAGIC_COOKIE))
        }
        (0x02, 16) => {
            let mut pad = [0u8; 16];
            pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            pad[4..].copy_from_slice(transaction_id.as_bytes());
            let mut octets = [0u8; 16];
            for (i, octet) in octets.iter_mut().enumerate() {
                *octet = ip[i] ^ pad[i];
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        (0x01 | 0x02, _) => return Err(ValueError::Malformed),
        _ => return Err(ValueError::UnknownFamily),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The ADDRESS-ERROR-CODE value for `family`: family, reserved, class, number, reason.
pub(crate) fn address_error_code(family: Family, code: ErrorCode, out: &mut [u8; 64]) -> usize {
    let reason = code.default_reason().as_bytes();
    out[..4].copy_from_slice(&[family.wire(), 0, code.class(), code.number()]);
    out[4..4 + reason.len()].copy_from_slice(reason);
    4 + reason.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_stun::{AttributeType, Message, MessageBuilder, MessageType};

    #[test]
    fn xor_peer_address_round_trips_through_the_codec() {
        let id = TransactionId::new([0x5A; 12]);
        for addr in ["198.51.100.7:4000", "[2001:db8::7]:65535"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut buf = [0u8; 128];
            let mut builder =
                MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, id).unwrap();
            builder
                .add_xor_address(AttributeType::XOR_PEER_ADDRESS, addr)
                .unwrap();
            let len = builder.finish();
            let message = Message::decode(&buf[..len]).unwrap();
            let raw = message.attributes().next().unwrap();
            let switchboard_stun::Attribute::Other(raw) = raw else {
                panic!("{raw:?}");
            };
            assert_eq!(read_xor_address(raw.value, &id), Ok(addr));
        }
        assert_eq!(
            read_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &TransactionId::new([0; 12])),
            Err(ValueError::UnknownFamily)
        );
        assert_eq!(
            read_xor_address(&[0, 1, 0, 0, 1, 2], &TransactionId::new([0; 12])),
            Err(ValueError::Malformed)
        );
    }

    #[test]
    fn fixed_layouts() {
        assert_eq!(read_u32(&[0, 0, 2, 88]), Ok(600));
        assert_eq!(read_u32(&[0, 0, 2]), Err(ValueError::Malformed));
        assert_eq!(read_channel_number(&[0x40, 0x01, 0, 0]), Ok(0x4001));
        assert_eq!(
            read_channel_number(&[0x40, 0x01]),
            Err(ValueError::Malformed)
        );
        assert_eq!(read_protocol(&[17, 0, 0, 0]), Ok(PROTOCOL_UDP));
        assert_eq!(read_protocol(&[17]), Err(ValueError::Malformed));
        assert_eq!(read_family(&[1, 0, 0, 0]), Ok(Family::V4));
        assert_eq!(read_family(&[2, 0, 0, 0]), Ok(Family::V6));
        assert_eq!(read_family(&[3, 0, 0, 0]), Err(ValueError::UnknownFamily));
        assert_eq!(read_family(&[1]), Err(ValueError::Malformed));
        assert_eq!(read_even_port(&[0x80]), Ok(true));
        assert_eq!(read_even_port(&[0x00]), Ok(false));
        assert_eq!(read_even_port(&[0x80, 0]), Err(ValueError::Malformed));
        assert_eq!(read_token(&[1; 8]), Ok([1; 8]));
        assert_eq!(read_token(&[1; 4]), Err(ValueError::Malformed));
        let mut out = [0u8; 64];
        let len = address_error_code(
            Family::V6,
            ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
            &mut out,
        );
        assert_eq!(&out[..4], &[2, 0, 4, 40]);
        assert_eq!(&out[4..len], b"Address Family not Supported");
        assert_eq!(Family::of("::ffff:1.2.3.4".parse().unwrap()), Family::V4);
    }
}
