//! Cutting STUN messages out of a byte stream (RFC 8489 §6.2.2).
//!
//! Over TCP and TLS, STUN messages follow each other with no framing of their own: the
//! header's length field is the framing. [`message_len`] reads it from the front of a
//! buffer, rejecting a stream that cannot be STUN as early as possible (an HTTP request
//! fails on its first byte) and refusing lengths above the caller's bound, so that a peer
//! cannot make a server buffer 64 KiB per connection. The caller owns the buffer and the
//! reading; this module only looks.

use thiserror::Error;

use crate::message::{HEADER_LEN, Header, MAGIC_COOKIE, NotStun};

/// Why a stream cannot carry STUN; the connection should be closed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("not STUN: {0}")]
    NotStun(#[from] NotStun),
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// The total length (header included) of the message at the front of `buf`, or `None` if
/// fewer than [`HEADER_LEN`] bytes are there yet. The message itself may not be complete:
/// compare the result with `buf.len()`.
pub fn message_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, FramingError> {
    if buf.len() < HEADER_LEN {
        check_partial_header(buf)?;
        return Ok(None);
    }
    let header = Header::decode(buf)?;
    let len = header.message_len();
    if len > max_len {
        return Err(FramingError::TooLong { len, max: max_len });
    }
    Ok(Some(len))
}

/// Applies the header checks that the bytes received so far allow.
fn check_partial_header(buf: &[u8]) -> Result<(), NotStun> {
    if buf.first().is_some_and(|b| b & 0xC0 != 0) {
        return Err(NotStun::ReservedBitsSet);
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let received = buf.get(4..buf.len().clamp(4, 8)).unwrap_or_default();
    if received != &cookie[..received.len()] {
        // Bytes not received yet are shown as expected, so the value names the mismatch.
        let mut found = cookie;
        found[..received.len()].copy_from_slice(received);
        return Err(NotStun::BadMagicCookie {
            found: u32::from_be_bytes(found),
        });
    }
    if buf.len() >= 4 && buf[3] % 4 != 0 {
        return Err(NotStun::UnalignedLength {
            length: u16::from_be_bytes([buf[2], buf[3]]),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINDING_HEADER: [u8; 20] = [
        0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];

    #[test]
    fn needs_a_whole_header() {
        for cut in 0..HEADER_LEN {
            assert_eq!(
                message_len(&BINDING_HEADER[..cut], 1024),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(message_len(&BINDING_HEADER, 1024), Ok(Some(28)));
    }

    #[test]
    fn reports_length_before_the_body_arrives() {
        let mut stream = BINDING_HEADER.to_vec();
        stream.extend_from_slice(&[0; 4]);
        assert_eq!(message_len(&stream, 1024), Ok(Some(28)));
    }

    #[test]
    fn rejects_non_stun_early() {
        assert_eq!(
            message_len(b"G", 1024),
            Err(FramingError::NotStun(NotStun::ReservedBitsSet))
        );
        assert_eq!(
            message_len(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x13], 1024),
            Err(FramingError::NotStun(NotStun::BadMagicCookie {
                found: 0x2113_A442
            }))
        );
        assert_eq!(
            message_len(&[0x00, 0x01, 0x00, 0x02], 1024),
            Err(FramingError::NotStun(NotStun::UnalignedLength {
                length: 2
            }))
        );
        let mut bad_cookie = BINDING_HEADER;
        bad_cookie[7] = 0;
        assert_eq!(
            message_len(&bad_cookie, 1024),
            Err(FramingError::NotStun(NotStun::BadMagicCookie {
                found: 0x2112_A400
            }))
        );
    }

    #[test]
    fn rejects_lengths_over_the_bound() {
        let mut huge = BINDING_HEADER;
        huge[2..4].copy_from_slice(&0xFFFCu16.to_be_bytes());
        assert_eq!(
            message_len(&huge, 2048),
            Err(FramingError::TooLong {
                len: 0xFFFC + 20,
                max: 2048
            })
        );
        assert_eq!(message_len(&huge, 0x1_0000 + 20), Ok(Some(0xFFFC + 20)));
    }
}
