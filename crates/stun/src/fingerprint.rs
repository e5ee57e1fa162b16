//! The FINGERPRINT value (RFC 8489 §14.7).
//!
//! FINGERPRINT lets STUN share a port with other protocols: a CRC-32 over the message,
//! XORed with a constant so that a CRC-32 embedded by another protocol never matches by
//! accident. This module only computes the value; [`crate::Message::decode`] checks it and
//! [`crate::MessageBuilder::finish_with_fingerprint`] writes it.

/// The constant XORed into the CRC: "STUN" in ASCII.
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Size of the whole FINGERPRINT attribute, header included.
pub const FINGERPRINT_ATTRIBUTE_LEN: usize = 8;

/// The FINGERPRINT value for `covered`: every byte of the message before the FINGERPRINT
/// attribute, with the header length already counting the attribute.
pub fn compute(covered: &[u8]) -> u32 {
    crc32fast::hash(covered) ^ FINGERPRINT_XOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_polynomial() {
        // The standard CRC-32 check value for "123456789".
        assert_eq!(compute(b"123456789") ^ FINGERPRINT_XOR, 0xCBF4_3926);
    }
}
