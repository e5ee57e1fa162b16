//! Who may allocate: long-term credentials, TURN REST API credentials, and nonces.
//!
//! Two kinds of users are accepted, both with the long-term credential mechanism of
//! RFC 8489 §9.2 (key = MD5(username ":" realm ":" password)):
//! - static users from the configuration, whose keys are derived once at start;
//! - TURN REST API users: the username is `expiry:user` (expiry in Unix seconds) and the
//!   password is `base64(HMAC-SHA1(secret, username))`, so the HTTP front can mint
//!   short-lived credentials that this server checks without sharing any state with it.
//!
//! Nonces are stateless: a nonce is the Unix second it was issued and an HMAC over that
//! time and the client's transport address, under a key drawn at start. A nonce is valid
//! only for the address it was given to and only for the nonce lifetime, so a stale or
//! replayed-from-elsewhere nonce is detected with one HMAC and no table.
//!
//! This module never sees a socket or a clock: times are passed in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use switchboard_stun::long_term_key_md5;

/// The long-term credential key of a user.
pub type Key = [u8; 16];

/// Length of a nonce: 16 hex digits of issue time, 16 of HMAC.
pub const NONCE_LEN: usize = 32;

/// Why a request failed authentication; each is a label of the
/// `switchboard_turn_auth_failures_total` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No MESSAGE-INTEGRITY: the first request of every client, answered with a challenge.
    MissingCredentials,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE (400).
    MissingAttributes,
    /// A NONCE this server never issued, or issued to another address (438).
    InvalidNonce,
    /// A NONCE older than the nonce lifetime (438).
    StaleNonce,
    /// A REALM other than the server's (401).
    WrongRealm,
    /// A username that is neither a static user nor a REST username (401).
    UnknownUser,
    /// A REST username whose expiry has passed (401).
    ExpiredCredential,
    /// MESSAGE-INTEGRITY does not match the key (401).
    BadIntegrity,
    /// Another username than the one that created the allocation (441).
    WrongCredentials,
    /// PASSWORD-ALGORITHM other than MD5 (400).
    UnsupportedAlgorithm,
}

impl AuthFailure {
    pub const ALL: [Self; 10] = [
        Self::MissingCredentials,
        Self::MissingAttributes,
        Self::InvalidNonce,
        Self::StaleNonce,
        Self::WrongRealm,
        Self::UnknownUser,
        Self::ExpiredCredential,
        Self::BadIntegrity,
        Self::WrongCredentials,
        Self::UnsupportedAlgorithm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::MissingAttributes => "missing_attributes",
            Self::InvalidNonce => "invalid_nonce",
            Self::StaleNonce => "stale_nonce",
            Self::WrongRealm => "wrong_realm",
            Self::UnknownUser => "unknown_user",
            Self::ExpiredCredential => "expired_credential",
            Self::BadIntegrity => "bad_integrity",
            Self::WrongCredentials => "wrong_credentials",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
        }
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// The password of a TURN REST API username: `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A TURN REST API username valid until `expiry_unix` (Unix seconds) for `user`.
pub fn rest_username(expiry_unix: u64, user: &str) -> String {
    format!("{expiry_unix}:{user}")
}

/// A user that passed the lookup: its key and the name its quota is counted under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub key: Key,
    /// Static users count under their name; REST users under the part after the expiry,
    /// so that fresh credentials for the same user share one quota.
    pub quota_user: Box<str>,
}

/// The users a server accepts.
#[derive(Clone)]
pub(crate) struct Credentials {
    realm: String,
    users: HashMap<String, Key>,
    rest_secret: Option<Vec<u8>>,
}

impl Credentials {
    pub fn new(realm: &str, users: &[(String, String)], rest_secret: Option<&[u8]>) -> Self {
        let users = users
            .iter()
            .map(|(user, password)| (user.clone(), long_term_key_md5(user, realm, password)))
            .collect();
        Self {
            realm: realm.to_owned(),
            users,
            rest_secret: rest_secret.map(<[u8]>::to_vec),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The key for `username` at Unix time `now_unix`.
    pub fn lookup(&self, username: &str, now_unix: u64) -> Result<Found, AuthFailure> {
        if let Some(key) = self.users.get(username) {
            return Ok(Found {
                key: *key,
                quota_user: username.into(),
            });
        }
        let Some(secret) = &self.rest_secret else {
            return Err(AuthFailure::UnknownUser);
        };
        let Some((expiry, user)) = username.split_once(':') else {
            return Err(AuthFailure::UnknownUser);
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return Err(AuthFailure::UnknownUser);
        };
        if expiry < now_unix {
            return Err(AuthFailure::ExpiredCredential);
        }
        let password = rest_password(secret, username);
        Ok(Found {
            key: long_term_key_md5(username, &self.realm, &password),
            quota_user: user.into(),
        })
    }
}

/// Why a nonce was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NonceError {
    Invalid,
    Stale,
}

/// Mints and checks stateless nonces.
#[derive(Clone)]
pub(crate) struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl Nonces {
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        Self { key, lifetime_secs }
    }

    fn mac(&self, issued: u64, client: SocketAddr) -> Hmac<Sha1> {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(&issued.to_be_bytes());
        match client.ip().to_canonical() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        mac
    }

    /// A nonce for `client`, issued at `now_unix`, as ASCII hex.
    pub fn mint(&self, client: SocketAddr, now_unix: u64) -> [u8; NONCE_LEN] {
        let tag = self.mac(now_unix, client).finalize().into_bytes();
        let mut out = [0u8; NONCE_LEN];
        write_hex(&mut out[..16], &now_unix.to_be_bytes());
        write_hex(&mut out[16..], &tag[..8]);
        out
    }

    pub fn check(&self, nonce: &str, client: SocketAddr, now_unix: u64) -> Result<(), NonceError> {
        let bytes = nonce.as_bytes();
        if bytes.len() != NONCE_LEN {
            return Err(NonceError::Invalid);
        }
        let mut issued = [0u8; 8];
        let mut tag = [0u8; 8];
        if !read_hex(&bytes[..16], &mut issued) || !read_hex(&bytes[16..], &mut tag) {
            return Err(NonceError::Invalid);
        }
        let issued = u64::from_be_bytes(issued);
        self.mac(issued, client)
            .verify_truncated_left(&tag)
            .map_err(|_| NonceError::Invalid)?;
        // A nonce from the future was not minted by this clock; treat it as forged.
        if issued > now_unix {
            return Err(NonceError::Invalid);
        }
        if now_unix - issued >= self.lifetime_secs {
            return Err(NonceError::Stale);
        }
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xF)];
    }
}

fn read_hex(text: &[u8], out: &mut [u8]) -> bool {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        let (Some(high), Some(low)) = (digit(pair[0]), digit(pair[1])) else {
            return false;
        };
        *byte = (high << 4) | low;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_the_reference_scheme() {
        // `echo -n "1700000000:alice" | openssl dgst -sha1 -hmac secret -binary | base64`
        assert_eq!(
            rest_password(b"secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
        assert_eq!(rest_username(1_700_000_000, "alice"), "1700000000:alice");
    }

    #[test]
    fn static_and_rest_lookups() {
        let users = [("alice".to_owned(), "wonderland".to_owned())];
        let credentials = Credentials::new("example.org", &users, Some(b"secret"));
        assert_eq!(
            credentials.lookup("alice", 0),
            Ok(Found {
                key: long_term_key_md5("alice", "example.org", "wonderland"),
                quota_user: "alice".into(),
            })
        );
        let username = "1700000000:bob";
        let found = credentials.lookup(username, 1_700_000_000).unwrap();
        assert_eq!(found.quota_user.as_ref(), "bob");
        assert_eq!(
            found.key,
            long_term_key_md5(username, "example.org", &rest_password(b"secret", username))
        );
        assert_eq!(
            credentials.lookup(username, 1_700_000_001),
            Err(AuthFailure::ExpiredCredential)
        );
        assert_eq!(
            credentials.lookup("mallory", 0),
            Err(AuthFailure::UnknownUser)
        );
        assert_eq!(
            credentials.lookup("soon:bob", 0),
            Err(AuthFailure::UnknownUser)
        );
        let no_rest = Credentials::new("example.org", &users, None);
        assert_eq!(no_rest.lookup(username, 0), Err(AuthFailure::UnknownUser));
    }

    #[test]
    fn nonces_are_bound_to_time_and_address() {
        let nonces = Nonces::new([7; 32], 600);
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let nonce = nonces.mint(client, 1_000);
        let text = std::str::from_utf8(&nonce).unwrap();
        assert!(text.starts_with("00000000000003e8"), "{text}");
        assert_eq!(nonces.check(text, client, 1_000), Ok(()));
        assert_eq!(nonces.check(text, client, 1_599), Ok(()));
        assert_eq!(nonces.check(text, client, 1_600), Err(NonceError::Stale));
        assert_eq!(nonces.check(text, client, 999), Err(NonceError::Invalid));
        let elsewhere: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        assert_eq!(
            nonces.check(text, elsewhere, 1_000),
            Err(NonceError::Invalid)
        );
        // The same client seen through a dual-stack socket.
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5000".parse().unwrap();
        assert_eq!(nonces.check(text, mapped, 1_000), Ok(()));
        let mut forged = nonce;
        forged[31] = if forged[31] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            nonces.check(std::str::from_utf8(&forged).unwrap(), client, 1_000),
            Err(NonceError::Invalid)
        );
        assert_eq!(
            nonces.check("short", client, 1_000),
            Err(NonceError::Invalid)
        );
        assert_eq!(
            nonces.check(&"g".repeat(NONCE_LEN), client, 1_000),
            Err(NonceError::Invalid)
        );
        let other_key = Nonces::new([8; 32], 600);
        assert_eq!(
            other_key.check(text, client, 1_000),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn failure_labels_are_distinct() {
        let mut labels: Vec<_> = AuthFailure::ALL.iter().map(|f| f.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), AuthFailure::ALL.len());
        assert_eq!(AuthFailure::StaleNonce.index(), 3);
    }
}
