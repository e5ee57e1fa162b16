//! Hostile input: random bytes, random bodies behind valid headers, and mutations of
//! valid messages. Nothing may panic, and whenever the responder answers, the answer must
//! be a valid STUN response to the same transaction.

use std::net::SocketAddr;

use switchboard_stun::{
    BindingResponder, Class, DecodeError, ErrorCode, HEADER_LEN, MAGIC_COOKIE, Message,
    MessageBuilder, MessageType, Outcome, ReplyKind, TransactionId, message_len,
};

/// xorshift64*: deterministic, so a failure reproduces, and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        buf.iter_mut().for_each(|b| *b = self.next() as u8);
    }
}

fn source() -> SocketAddr {
    "198.51.100.20:40000".parse().unwrap()
}

/// Runs every entry point on `input` and checks what the responder says about it.
fn exercise(responder: &BindingResponder, input: &[u8]) {
    let _ = message_len(input, 4096);
    let decoded = Message::decode(input);
    if let Ok(message) = &decoded {
        message.attributes().for_each(drop);
        let _ = message.verify_integrity(b"key");
        let _ = message.verify_integrity_sha256(b"key");
    }
    let mut out = [0u8; 1024];
    match responder.handle(input, source(), &mut out) {
        Outcome::Reply { len, kind } => {
            let response = Message::decode(&out[..len]).expect("responses decode");
            let request_header = match &decoded {
                Ok(message) => message.header(),
                Err(DecodeError::Malformed { header, .. }) => *header,
                Err(DecodeError::NotStun(reason)) => panic!("answered non-STUN input ({reason})"),
            };
            assert_eq!(request_header.message_type, MessageType::BINDING_REQUEST);
            assert_eq!(response.transaction_id(), request_header.transaction_id);
            assert!(response.has_fingerprint());
            match kind {
                ReplyKind::Success => {
                    assert_eq!(response.message_type().class, Class::SuccessResponse);
                    assert_eq!(response.xor_mapped_address(), Some(source()));
                }
                ReplyKind::Error(code) => {
                    assert_eq!(response.message_type().class, Class::ErrorResponse);
                    assert_eq!(response.error_code().map(|(c, _)| c), Some(code));
                }
            }
        }
        Outcome::Drop(_) => {}
    }
}

#[test]
fn random_bytes() {
    let responder = BindingResponder::default();
    let mut rng = Rng(0x5EED_0001);
    let mut buf = [0u8; 256];
    for _ in 0..50_000 {
        let len = rng.below(buf.len() + 1);
        rng.fill(&mut buf[..len]);
        exercise(&responder, &buf[..len]);
    }
}

#[test]
fn random_bodies_behind_valid_headers() {
    let responder = BindingResponder::default();
    let mut rng = Rng(0x5EED_0002);
    let mut buf = [0u8; 256];
    let (mut success, mut bad_request, mut unknown) = (0, 0, 0);
    for _ in 0..50_000 {
        rng.fill(&mut buf);
        // A Binding request most of the time, any type otherwise.
        let message_type = if rng.below(4) == 0 {
            rng.next() as u16 & 0x3FFF
        } else {
            0x0001
        };
        buf[0..2].copy_from_slice(&message_type.to_be_bytes());
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        // A chain of plausible attribute headers (small lengths, types the codec knows or
        // an unknown comprehension-required one) with random values; the message ends
        // where the chain ends, or at a random aligned point when `cut` says so.
        let mut offset = HEADER_LEN;
        while offset + 28 <= buf.len() && rng.below(4) != 0 {
            let kind = [
                0x0001u16, 0x0006, 0x0008, 0x0009, 0x000A, 0x0020, 0x8022, 0x8028, 0x7777, 0xC0DE,
            ][rng.below(10)];
            let value_len = rng.below(24) as u16;
            buf[offset..offset + 2].copy_from_slice(&kind.to_be_bytes());
            buf[offset + 2..offset + 4].copy_from_slice(&value_len.to_be_bytes());
            offset += 4 + ((usize::from(value_len) + 3) & !3);
        }
        let cut = rng.below(8) == 0;
        let len = if cut {
            HEADER_LEN + 4 * rng.below(40)
        } else {
            offset
        };
        buf[2..4].copy_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
        let mut out = [0u8; 1024];
        match responder.handle(&buf[..len], source(), &mut out) {
            Outcome::Reply {
                kind: ReplyKind::Success,
                ..
            } => success += 1,
            Outcome::Reply {
                kind: ReplyKind::Error(ErrorCode::BAD_REQUEST),
                ..
            } => bad_request += 1,
            Outcome::Reply {
                kind: ReplyKind::Error(ErrorCode::UNKNOWN_ATTRIBUTE),
                ..
            } => unknown += 1,
            _ => {}
        }
        exercise(&responder, &buf[..len]);
    }
    // The generator must reach every answering path, or this test checks little.
    assert!(
        success > 100 && bad_request > 100 && unknown > 100,
        "{success} / {bad_request} / {unknown}"
    );
}

#[test]
fn mutated_valid_messages() {
    let responder = BindingResponder::default();
    let mut rng = Rng(0x5EED_0003);
    let mut seed = [0u8; 256];
    let mut builder = MessageBuilder::new(
        &mut seed,
        MessageType::BINDING_REQUEST,
        TransactionId::new([5; 12]),
    )
    .unwrap();
    builder.add_software("mutation seed").unwrap();
    builder
        .add_xor_mapped_address("[2001:db8::5]:5".parse().unwrap())
        .unwrap();
    builder
        .add_raw(switchboard_stun::AttributeType::PRIORITY, &[1, 2, 3, 4])
        .unwrap();
    builder.add_message_integrity(b"key").unwrap();
    let seed_len = builder.finish_with_fingerprint().unwrap();
    let seed = &seed[..seed_len];

    let mut work = Vec::with_capacity(512);
    for _ in 0..50_000 {
        work.clear();
        work.extend_from_slice(seed);
        for _ in 0..1 + rng.below(3) {
            match rng.below(4) {
                0 => {
                    let i = rng.below(work.len());
                    work[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(work.len());
                    work[i] = rng.next() as u8;
                }
                2 => work.truncate(rng.below(work.len() + 1)),
                _ => work.extend_from_slice(&rng.next().to_be_bytes()[..rng.below(9)]),
            }
            if work.is_empty() {
                break;
            }
        }
        exercise(&responder, &work);
    }
}
