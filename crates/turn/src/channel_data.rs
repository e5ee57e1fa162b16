//! ChannelData messages (RFC 8656 §12.4) and framing of the client-facing stream.
//!
//! A ChannelData message is a 4-byte header (channel number, length) and the application
//! data: the cheap way to relay once a channel is bound. Over UDP the datagram carries one
//! message and may have trailing padding; over TCP and TLS every message is padded to a
//! multiple of 4 so that the next one starts aligned. STUN messages and ChannelData
//! messages share the stream, told apart by their first two bits.
//!
//! This module owns those byte layouts and nothing else: which channel is bound to which
//! peer is the server's business.

use thiserror::Error;

use switchboard_stun::{FramingError, message_len};

/// Size of the ChannelData header.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;
/// The lowest channel number a client may bind.
pub const MIN_CHANNEL: u16 = 0x4000;
/// The highest channel number a client may bind. RFC 8656 narrowed the range to 0x4FFF,
/// but RFC 5766's 0x7FFF is what deployed clients use (libwebrtc in every browser picks
/// channels up to 0x7FFF, and so does coturn's client), and the first two bits still tell
/// ChannelData from STUN, so the wider range is accepted.
pub const MAX_CHANNEL: u16 = 0x7FFF;

/// Whether `number` is a channel number a client may bind.
pub const fn is_valid_channel(number: u16) -> bool {
    number >= MIN_CHANNEL && number <= MAX_CHANNEL
}

/// What the first byte of a client message says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stun,
    ChannelData,
    /// Neither: the first two bits are 0b10 or 0b11 (DTLS, RTP, noise).
    Other,
}

/// Classifies a message by its first byte (RFC 7983 demultiplexing within TURN).
pub fn kind(bytes: &[u8]) -> Kind {
    match bytes.first().map(|b| b >> 6) {
        Some(0) => Kind::Stun,
        Some(1) => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// Why a ChannelData datagram was discarded.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ChannelDataError {
    #[error("{len} bytes is shorter than the ChannelData header")]
    TooShort { len: usize },
    #[error("channel number 0x{0:04X} is outside 0x4000..=0x7FFF")]
    InvalidChannel(u16),
    #[error("header announces {declared} bytes of data but {available} follow")]
    Truncated { declared: usize, available: usize },
}

/// A ChannelData message borrowing its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses one message; bytes after the announced length (padding) are ignored.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ChannelDataError> {
        let Some(header) = bytes.first_chunk::<CHANNEL_DATA_HEADER_LEN>() else {
            return Err(ChannelDataError::TooShort { len: bytes.len() });
        };
        let channel = u16::from_be_bytes([header[0], header[1]]);
        if !is_valid_channel(channel) {
            return Err(ChannelDataError::InvalidChannel(channel));
        }
        let declared = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let available = bytes.len() - CHANNEL_DATA_HEADER_LEN;
        if declared > available {
            return Err(ChannelDataError::Truncated {
                declared,
                available,
            });
        }
        Ok(Self {
            channel,
            data: &bytes[CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + declared],
        })
    }
}

/// Appends a ChannelData message to `out`, padded to 4 bytes when `pad` (streams).
/// `data` must be at most 65535 bytes; the caller checks.
pub fn encode(out: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) {
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        let padding = padding(data.len());
        out.extend_from_slice(&[0u8; 3][..padding]);
    }
}

/// Bytes of padding after `len` bytes of data on a stream.
pub const fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Why a client stream cannot be framed; the connection is closed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error(transparent)]
    Stun(#[from] FramingError),
    #[error("first byte 0x{0:02X} starts neither STUN nor ChannelData")]
    NotTurn(u8),
    #[error("channel number 0x{0:04X} is outside 0x4000..=0x7FFF")]
    InvalidChannel(u16),
    #[error("ChannelData frame of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// The length of the frame (STUN message, or ChannelData with its padding) at the front of
/// a client stream, or `None` until enough bytes have arrived to tell.
pub fn frame_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, FrameError> {
    match kind(buf) {
        Kind::Stun => Ok(message_len(buf, max_len)?),
        Kind::ChannelData => {
            let Some(header) = buf.first_chunk::<CHANNEL_DATA_HEADER_LEN>() else {
                return Ok(None);
            };
            let channel = u16::from_be_bytes([header[0], header[1]]);
            if !is_valid_channel(channel) {
                return Err(FrameError::InvalidChannel(channel));
            }
            let data = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let len = CHANNEL_DATA_HEADER_LEN + data + padding(data);
            if len > max_len {
                return Err(FrameError::TooLong { len, max: max_len });
            }
            Ok(Some(len))
        }
        Kind::Other if buf.is_empty() => Ok(None),
        Kind::Other => Err(FrameError::NotTurn(buf[0])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_stun::NotStun;

    #[test]
    fn decode_and_encode() {
        let mut out = Vec::new();
        encode(&mut out, 0x4001, b"hello", false);
        assert_eq!(out, [0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(
            ChannelData::decode(&out),
            Ok(ChannelData {
                channel: 0x4001,
                data: b"hello"
            })
        );
        out.clear();
        encode(&mut out, 0x4FFF, b"hello", true);
        assert_eq!(out.len(), 12);
        assert_eq!(&out[9..], &[0, 0, 0]);
        // Padding after the data is ignored.
        assert_eq!(ChannelData::decode(&out).unwrap().data, b"hello");
        out.clear();
        encode(&mut out, 0x4000, b"", true);
        assert_eq!(out, [0x40, 0, 0, 0]);
        assert_eq!(ChannelData::decode(&out).unwrap().data, b"");
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            ChannelData::decode(&[0x40, 0x00, 0x00]),
            Err(ChannelDataError::TooShort { len: 3 })
        );
        assert_eq!(
            ChannelData::decode(&[0x3F, 0xFF, 0x00, 0x00]),
            Err(ChannelDataError::InvalidChannel(0x3FFF))
        );
        assert_eq!(
            ChannelData::decode(&[0x80, 0x00, 0x00, 0x00]),
            Err(ChannelDataError::InvalidChannel(0x8000))
        );
        assert_eq!(
            ChannelData::decode(&[0x7F, 0xFF, 0x00, 0x00]),
            Ok(ChannelData {
                channel: 0x7FFF,
                data: &[]
            })
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0x00, 0x00, 0x05, 1, 2]),
            Err(ChannelDataError::Truncated {
                declared: 5,
                available: 2
            })
        );
    }

    #[test]
    fn stream_framing() {
        assert_eq!(frame_len(&[], 100), Ok(None));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00], 100), Ok(None));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x05], 100), Ok(Some(12)));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x08], 100), Ok(Some(12)));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x00], 100), Ok(Some(4)));
        assert_eq!(
            frame_len(&[0x40, 0x00, 0xFF, 0xFF], 1000),
            Err(FrameError::TooLong {
                len: 4 + 65535 + 1,
                max: 1000
            })
        );
        assert_eq!(frame_len(&[0x7F, 0xFF, 0x00, 0x01], 100), Ok(Some(8)));
        assert_eq!(
            frame_len(&[0x80, 0x60], 100),
            Err(FrameError::NotTurn(0x80))
        );
        // "GE" reads as channel 0x4745 and "T " as a 21540-byte length: refused by size.
        assert_eq!(
            frame_len(b"GET / HTTP/1.1", 2048),
            Err(FrameError::TooLong {
                len: 4 + 0x5420,
                max: 2048
            })
        );
        let binding = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        assert_eq!(frame_len(&binding, 100), Ok(Some(20)));
        assert_eq!(frame_len(&binding[..3], 100), Ok(None));
        assert_eq!(
            frame_len(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x13], 100),
            Err(FrameError::Stun(FramingError::NotStun(
                NotStun::BadMagicCookie { found: 0x2113_A442 }
            )))
        );
        assert_eq!(kind(&[0x80]), Kind::Other);
        assert_eq!(kind(&[0x01]), Kind::Stun);
        assert_eq!(kind(&[0x4F]), Kind::ChannelData);
    }
}
