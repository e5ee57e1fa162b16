//! Message integrity (RFC 8489 §9, §14.5, §14.6): keys and HMAC verification.
//!
//! This module owns the cryptography of STUN authentication: deriving long-term keys,
//! computing HMAC-SHA1 and HMAC-SHA256 over a message, and checking the
//! MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256 attributes of a received [`Message`]
//! in constant time. It does not decide who may authenticate (nonces, realms, the
//! TURN REST credential scheme belong to the TURN server), and it does not run SASLprep or
//! OpaqueString: callers pass strings already in their prepared form, which the
//! credentials Switchboard mints (ASCII) always are.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use thiserror::Error;

use crate::attribute::{ATTRIBUTE_HEADER_LEN, AttributeType};
use crate::message::{HEADER_LEN, Message};

/// Why a received message failed integrity verification.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum IntegrityError {
    #[error("the message carries no {0}")]
    Missing(AttributeType),
    #[error("{0} does not match the key")]
    Mismatch(AttributeType),
}

/// The long-term credential key for MESSAGE-INTEGRITY: MD5(username ":" realm ":" password).
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    for part in [username, ":", realm, ":", password] {
        md5.update(part.as_bytes());
    }
    md5.finalize().into()
}

/// The long-term credential key when PASSWORD-ALGORITHM selects SHA-256
/// (RFC 8489 §18.5.1.2): SHA-256(username ":" realm ":" password).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut sha = Sha256::new();
    for part in [username, ":", realm, ":", password] {
        sha.update(part.as_bytes());
    }
    sha.finalize().into()
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> M {
    // HMAC hashes long keys and pads short ones, so every key length is accepted.
    let mut mac =
        <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    parts.iter().for_each(|part| mac.update(part));
    mac
}

pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    keyed::<Hmac<Sha1>>(key, parts)
        .finalize()
        .into_bytes()
        .into()
}

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    keyed::<Hmac<Sha256>>(key, parts)
        .finalize()
        .into_bytes()
        .into()
}

impl Message<'_> {
    /// The bytes an integrity attribute at `offset` covers: the header, with its length
    /// rewritten to end just after that attribute, then every attribute before it.
    fn covered(&self, offset: usize) -> ([u8; HEADER_LEN], &[u8], &[u8]) {
        let bytes = self.as_bytes();
        let value_len = usize::from(u16::from_be_bytes([bytes[offset + 2], bytes[offset + 3]]));
        let value_start = offset + ATTRIBUTE_HEADER_LEN;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&bytes[..HEADER_LEN]);
        let length = (value_start + value_len - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&length.to_be_bytes());
        (
            header,
            &bytes[HEADER_LEN..offset],
            &bytes[value_start..value_start + value_len],
        )
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`: the password for short-term
    /// credentials, [`long_term_key_md5`] for long-term ones.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let kind = AttributeType::MESSAGE_INTEGRITY;
        let offset = self
            .integrity_offset()
            .ok_or(IntegrityError::Missing(kind))?;
        let (header, attributes, tag) = self.covered(offset);
        keyed::<Hmac<Sha1>>(key, &[&header, attributes])
            .verify_slice(tag)
            .map_err(|_| IntegrityError::Mismatch(kind))
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 with `key`, accepting the truncated forms RFC 8489
    /// allows (16 to 32 bytes).
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let kind = AttributeType::MESSAGE_INTEGRITY_SHA256;
        let offset = self
            .integrity_sha256_offset()
            .ok_or(IntegrityError::Missing(kind))?;
        let (header, attributes, tag) = self.covered(offset);
        keyed::<Hmac<Sha256>>(key, &[&header, attributes])
            .verify_truncated_left(tag)
            .map_err(|_| IntegrityError::Mismatch(kind))
    }
}
