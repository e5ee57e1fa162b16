//! The published test vectors: RFC 5769 (§2.1–2.4) and RFC 8489 Appendix B.1 as corrected
//! by erratum 6268. Each is decoded, its integrity and FINGERPRINT checked, and, where the
//! sample pads with zeros as our encoder does, rebuilt byte for byte.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use switchboard_stun::{
    Attribute, AttributeType, Class, IntegrityError, Message, MessageBuilder, MessageType, Method,
    NotStun, TransactionId, long_term_key_md5, long_term_key_sha256,
};

/// Hex with whitespace and `#` comments, laid out like the RFC figures.
fn hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap())
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const RFC5769_ID: TransactionId = TransactionId::new([
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
]);

fn sample_request() -> Vec<u8> {
    hex("
        00 01 00 58   21 12 a4 42   b7 e7 a7 01   bc 34 d6 86   fa 87 df ae
        80 22 00 10   53 54 55 4e   20 74 65 73   74 20 63 6c   69 65 6e 74  # SOFTWARE
        00 24 00 04   6e 00 01 ff                                            # PRIORITY
        80 29 00 08   93 2f f9 b1   51 26 3b 36                              # ICE-CONTROLLED
        00 06 00 09   65 76 74 6a   3a 68 36 76   59 20 20 20                # USERNAME, space padding
        00 08 00 14   9a ea a7 0c   bf d8 cb 56   78 1e f2 b5   b2 d3 f2 49   c1 b5 71 a2
        80 28 00 04   e5 7a 3b cf                                            # FINGERPRINT
    ")
}

fn sample_ipv4_response() -> Vec<u8> {
    hex("
        01 01 00 3c   21 12 a4 42   b7 e7 a7 01   bc 34 d6 86   fa 87 df ae
        80 22 00 0b   74 65 73 74   20 76 65 63   74 6f 72 20                # SOFTWARE, space padding
        00 20 00 08   00 01 a1 47   e1 12 a6 43                              # XOR-MAPPED-ADDRESS
        00 08 00 14   2b 91 f5 99   fd 9e 90 c3   8c 74 89 f9   2a f9 ba 53   f0 6b e7 d7
        80 28 00 04   c0 7d 4c 96
    ")
}

fn sample_ipv6_response() -> Vec<u8> {
    hex("
        01 01 00 48   21 12 a4 42   b7 e7 a7 01   bc 34 d6 86   fa 87 df ae
        80 22 00 0b   74 65 73 74   20 76 65 63   74 6f 72 20
        00 20 00 14   00 02 a1 47   01 13 a9 fa   a5 d3 f1 79   bc 25 f4 b5   be d2 b9 d9
        00 08 00 14   a3 82 95 4e   4b e6 7b f1   17 84 c9 7c   82 92 c2 75   bf e3 ed 41
        80 28 00 04   c8 fb 0b 4c
    ")
}

const LONG_TERM_ID: TransactionId = TransactionId::new([
    0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
]);
/// U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9, unchanged by SASLprep and OpaqueString.
const LONG_TERM_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// "The\u{00AD}M\u{00AA}tr\u{2168}" after SASLprep / OpaqueString.
const LONG_TERM_PASSWORD: &str = "TheMatrIX";
const REALM: &str = "example.org";

fn sample_long_term_request() -> Vec<u8> {
    hex("
        00 01 00 60   21 12 a4 42   78 ad 34 33   c6 ad 72 c0   29 da 41 2e
        00 06 00 12   e3 83 9e e3   83 88 e3 83   aa e3 83 83   e3 82 af e3   82 b9 00 00
        00 15 00 1c   66 2f 2f 34   39 39 6b 39   35 34 64 36   4f 4c 33 34   6f 4c 39 46
                      53 54 76 79   36 34 73 41
        00 14 00 0b   65 78 61 6d   70 6c 65 2e   6f 72 67 00
        00 08 00 14   f6 70 24 65   6d d6 4a 3e   02 b8 e0 71   2e 85 c9 a2   8c a8 96 66
    ")
}

fn sample_sha256_request() -> Vec<u8> {
    hex("
        00 01 00 90   21 12 a4 42   78 ad 34 33   c6 ad 72 c0   29 da 41 2e
        00 1e 00 20   4a 3c f3 8f   ef 69 92 bd   a9 52 c6 78   04 17 da 0f   # USERHASH
                      24 81 94 15   56 9e 60 b2   05 c4 6e 41   40 7f 17 04
        00 15 00 29   6f 62 4d 61   74 4a 6f 73   32 41 41 41   43 66 2f 2f   # NONCE
                      34 39 39 6b   39 35 34 64   36 4f 4c 33   34 6f 4c 39
                      46 53 54 76   79 36 34 73   41 00 00 00
        00 14 00 0b   65 78 61 6d   70 6c 65 2e   6f 72 67 00                # REALM
        00 1d 00 04   00 02 00 00                                            # PASSWORD-ALGORITHM
        00 1c 00 20   b5 c7 bf 00   5b 6c 52 a2   1c 51 c5 e8   92 f8 19 24   # MESSAGE-INTEGRITY-SHA256
                      13 62 96 cb   92 7c 43 14   93 09 27 8c   c6 51 8e 65
    ")
}

#[test]
fn rfc5769_sample_request() {
    let bytes = sample_request();
    let message = Message::decode(&bytes).unwrap();
    assert_eq!(message.message_type(), MessageType::BINDING_REQUEST);
    assert_eq!(message.transaction_id(), RFC5769_ID);
    assert!(message.has_fingerprint());
    assert_eq!(message.software(), Some("STUN test client"));
    assert_eq!(
        message.get(AttributeType::USERNAME),
        Some(Attribute::Username("evtj:h6vY"))
    );
    assert!(matches!(
        message.get(AttributeType::PRIORITY),
        Some(Attribute::Other(raw)) if raw.value == [0x6e, 0x00, 0x01, 0xff]
    ));
    let kinds: Vec<_> = message.attributes().map(|a| a.kind()).collect();
    assert_eq!(
        kinds,
        [
            AttributeType::SOFTWARE,
            AttributeType::PRIORITY,
            AttributeType::ICE_CONTROLLED,
            AttributeType::USERNAME,
            AttributeType::MESSAGE_INTEGRITY,
            AttributeType::FINGERPRINT,
        ]
    );
    assert_eq!(message.verify_integrity(SHORT_TERM_PASSWORD), Ok(()));
    assert_eq!(
        message.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"),
        Err(IntegrityError::Mismatch(AttributeType::MESSAGE_INTEGRITY))
    );
    assert_eq!(
        message.verify_integrity_sha256(SHORT_TERM_PASSWORD),
        Err(IntegrityError::Missing(
            AttributeType::MESSAGE_INTEGRITY_SHA256
        ))
    );
}

#[test]
fn rfc5769_ipv4_response() {
    let bytes = sample_ipv4_response();
    let message = Message::decode(&bytes).unwrap();
    assert_eq!(message.message_type(), MessageType::BINDING_SUCCESS);
    assert_eq!(message.transaction_id(), RFC5769_ID);
    assert_eq!(message.software(), Some("test vector"));
    assert_eq!(
        message.xor_mapped_address(),
        Some("192.0.2.1:32853".parse().unwrap())
    );
    assert_eq!(message.verify_integrity(SHORT_TERM_PASSWORD), Ok(()));
    assert!(message.has_fingerprint());
}

#[test]
fn rfc5769_ipv6_response() {
    let bytes = sample_ipv6_response();
    let message = Message::decode(&bytes).unwrap();
    assert_eq!(message.message_type(), MessageType::BINDING_SUCCESS);
    assert_eq!(
        message.xor_mapped_address(),
        Some(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        )
    );
    assert_eq!(message.verify_integrity(SHORT_TERM_PASSWORD), Ok(()));
    assert!(message.has_fingerprint());
}

/// Rebuilding a response with zero padding instead of the sample's spaces changes only the
/// padding bytes and the two values computed over them.
fn rebuild_response(mapped: SocketAddr) -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let mut builder =
        MessageBuilder::new(&mut buf, MessageType::BINDING_SUCCESS, RFC5769_ID).unwrap();
    builder.add_software("test vector").unwrap();
    builder.add_xor_mapped_address(mapped).unwrap();
    builder.add_message_integrity(SHORT_TERM_PASSWORD).unwrap();
    let len = builder.finish_with_fingerprint().unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn rfc5769_responses_rebuilt() {
    for (sample, mapped) in [
        (sample_ipv4_response(), "192.0.2.1:32853"),
        (
            sample_ipv6_response(),
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let rebuilt = rebuild_response(mapped.parse().unwrap());
        assert_eq!(rebuilt.len(), sample.len());
        let mi = rebuilt.len() - 8 - 24;
        let padding = 20 + 4 + 11;
        for (i, (ours, theirs)) in rebuilt.iter().zip(&sample).enumerate() {
            let computed = i >= mi + 4 && i < mi + 24 || i >= rebuilt.len() - 4;
            if i == padding {
                assert_eq!((*ours, *theirs), (0x00, 0x20));
            } else if !computed {
                assert_eq!(ours, theirs, "byte {i}");
            }
        }
        let message = Message::decode(&rebuilt).unwrap();
        assert_eq!(message.verify_integrity(SHORT_TERM_PASSWORD), Ok(()));
        assert_eq!(message.xor_mapped_address(), Some(mapped.parse().unwrap()));
    }
}

#[test]
fn rfc5769_long_term_request() {
    let bytes = sample_long_term_request();
    let message = Message::decode(&bytes).unwrap();
    assert_eq!(message.message_type(), MessageType::BINDING_REQUEST);
    assert_eq!(message.transaction_id(), LONG_TERM_ID);
    assert!(!message.has_fingerprint());
    assert_eq!(
        message.get(AttributeType::USERNAME),
        Some(Attribute::Username(LONG_TERM_USERNAME))
    );
    assert_eq!(
        message.get(AttributeType::NONCE),
        Some(Attribute::Nonce("f//499k954d6OL34oL9FSTvy64sA"))
    );
    assert_eq!(
        message.get(AttributeType::REALM),
        Some(Attribute::Realm(REALM))
    );
    let key = long_term_key_md5(LONG_TERM_USERNAME, REALM, LONG_TERM_PASSWORD);
    assert_eq!(message.verify_integrity(&key), Ok(()));
    assert!(
        message
            .verify_integrity(LONG_TERM_PASSWORD.as_bytes())
            .is_err()
    );

    let mut buf = [0u8; 256];
    let mut builder =
        MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, LONG_TERM_ID).unwrap();
    builder.add_username(LONG_TERM_USERNAME).unwrap();
    builder.add_nonce("f//499k954d6OL34oL9FSTvy64sA").unwrap();
    builder.add_realm(REALM).unwrap();
    builder.add_message_integrity(&key).unwrap();
    let len = builder.finish();
    assert_eq!(&buf[..len], &bytes[..]);
}

#[test]
fn rfc8489_sha256_request() {
    let bytes = sample_sha256_request();
    let message = Message::decode(&bytes).unwrap();
    assert_eq!(
        message.message_type(),
        MessageType::new(Method::BINDING, Class::Request)
    );
    assert_eq!(message.transaction_id(), LONG_TERM_ID);

    // USERHASH is SHA-256(username ":" realm) (RFC 8489 §14.4).
    let userhash = Sha256::digest(format!("{LONG_TERM_USERNAME}:{REALM}").as_bytes());
    assert!(matches!(
        message.get(AttributeType::USERHASH),
        Some(Attribute::Other(raw)) if raw.value == userhash.as_slice()
    ));

    let key = long_term_key_sha256(LONG_TERM_USERNAME, REALM, LONG_TERM_PASSWORD);
    assert_eq!(message.verify_integrity_sha256(&key), Ok(()));
    let md5_key = long_term_key_md5(LONG_TERM_USERNAME, REALM, LONG_TERM_PASSWORD);
    assert_eq!(
        message.verify_integrity_sha256(&md5_key),
        Err(IntegrityError::Mismatch(
            AttributeType::MESSAGE_INTEGRITY_SHA256
        ))
    );

    let mut buf = [0u8; 256];
    let mut builder =
        MessageBuilder::new(&mut buf, MessageType::BINDING_REQUEST, LONG_TERM_ID).unwrap();
    builder.add_raw(AttributeType::USERHASH, &userhash).unwrap();
    builder
        .add_nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
        .unwrap();
    builder.add_realm(REALM).unwrap();
    builder
        .add_raw(AttributeType::PASSWORD_ALGORITHM, &[0x00, 0x02, 0x00, 0x00])
        .unwrap();
    builder.add_message_integrity_sha256(&key).unwrap();
    let len = builder.finish();
    assert_eq!(&buf[..len], &bytes[..]);
}

#[test]
fn corrupted_vectors_are_rejected() {
    let request = sample_request();

    // A flipped bit in any attribute, or in the FINGERPRINT value, breaks the FINGERPRINT
    // or the layout. (A flip in the FINGERPRINT type turns it into an unknown attribute
    // after MESSAGE-INTEGRITY, which RFC 8489 says to ignore, so those bytes are skipped.)
    let fingerprint = request.len() - 8;
    for byte in (20..fingerprint).chain(fingerprint + 2..request.len()) {
        let mut corrupted = request.clone();
        corrupted[byte] ^= 0x01;
        match Message::decode(&corrupted) {
            Err(switchboard_stun::DecodeError::NotStun(NotStun::FingerprintMismatch {
                ..
            })) => {}
            Err(switchboard_stun::DecodeError::Malformed { .. }) => {}
            other => panic!("byte {byte}: {other:?}"),
        }
    }

    // Without FINGERPRINT, a changed attribute is caught by MESSAGE-INTEGRITY instead.
    let long_term = sample_long_term_request();
    let key = long_term_key_md5(LONG_TERM_USERNAME, REALM, LONG_TERM_PASSWORD);
    let mut corrupted = long_term.clone();
    corrupted[60] ^= 0x01; // inside NONCE
    let message = Message::decode(&corrupted).unwrap();
    assert_eq!(
        message.verify_integrity(&key),
        Err(IntegrityError::Mismatch(AttributeType::MESSAGE_INTEGRITY))
    );
}
