//! Whole-server tests: every method and error path, driven in memory with a fake clock.
//!
//! A [`Harness`] plays client, peer and driver: it builds requests with the STUN codec,
//! feeds them to a [`Server`], binds relay sockets instantly (or fails them on demand) and
//! collects outputs as owned values that the assertions compare exactly. Events are kept
//! apart, in the order they came, for the tests that look at them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_stun::{
    Attribute, AttributeType, Class, ErrorCode, Message, MessageBuilder, MessageType, Method,
    TransactionId, long_term_key_md5,
};

use crate::auth::{AuthFailure, rest_password};
use crate::config::{RelayAddress, ServerConfig};
use crate::event::{EndReason, Event, Limit};
use crate::policy::PeerPolicy;
use crate::server::{BindError, Client, Destination, Handled, Output, RelayId, Server, Transport};
use crate::stats::{Direction, DropReason, RequestKind, Traffic};

const REALM: &str = "example.org";
const UNIX_START: u64 = 1_700_000_000;
const SECRET: &[u8] = b"rest-secret";

fn client() -> Client {
    Client {
        transport: Transport::Udp,
        addr: "203.0.113.5:40000".parse().unwrap(),
    }
}

fn other_client() -> Client {
    Client {
        transport: Transport::Udp,
        addr: "203.0.113.6:40001".parse().unwrap(),
    }
}

fn tcp_client() -> Client {
    Client {
        transport: Transport::Tcp,
        addr: "203.0.113.7:40002".parse().unwrap(),
    }
}

fn peer() -> SocketAddr {
    "198.51.100.7:5000".parse().unwrap()
}

fn other_peer() -> SocketAddr {
    "198.51.100.8:6000".parse().unwrap()
}

fn config() -> ServerConfig {
    ServerConfig {
        realm: REALM.into(),
        software: None,
        users: vec![
            ("alice".into(), "wonderland".into()),
            ("bob".into(), "builder".into()),
        ],
        rest_secret: Some(SECRET.to_vec()),
        relay_v4: Some(RelayAddress {
            bind: "10.0.0.1".parse().unwrap(),
            public: "192.0.2.1".parse().unwrap(),
        }),
        min_port: 50_000,
        max_port: 50_099,
        seed: [42; 32],
        ..ServerConfig::default()
    }
}

/// An output copied out of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    ToClient(Client, Vec<u8>),
    ToPeer(RelayId, SocketAddr, Vec<u8>),
    Bind(RelayId, SocketAddr, bool),
    Close(RelayId),
}

/// Credentials a test client signs with.
#[derive(Clone)]
struct Creds {
    username: String,
    password: String,
    realm: String,
    nonce: String,
    sha256: bool,
}

impl Creds {
    fn key(&self) -> [u8; 16] {
        long_term_key_md5(&self.username, &self.realm, &self.password)
    }
}

struct Harness {
    server: Server,
    now: Instant,
    txid: u8,
    /// Fail the next binds with these errors, in order.
    bind_failures: Vec<BindError>,
    events: Vec<Event>,
}

type Fill<'f> = &'f dyn Fn(&mut MessageBuilder<'_>);

fn nothing(_: &mut MessageBuilder<'_>) {}

fn transport_udp(b: &mut MessageBuilder<'_>) {
    b.add_raw(AttributeType::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .unwrap();
}

fn raw<'a>(message: &Message<'a>, kind: AttributeType) -> Option<&'a [u8]> {
    message.attributes().find_map(|a| match a {
        Attribute::Other(raw) if raw.kind == kind => Some(raw.value),
        _ => None,
    })
}

fn xor_address(message: &Message<'_>, kind: AttributeType) -> Option<SocketAddr> {
    let value = raw(message, kind)?;
    crate::attrs::read_xor_address(value, &message.transaction_id()).ok()
}

fn lifetime(message: &Message<'_>) -> Option<u32> {
    raw(message, AttributeType::LIFETIME).map(|v| u32::from_be_bytes(v.try_into().unwrap()))
}

fn code(message: &Message<'_>) -> Option<ErrorCode> {
    message.error_code().map(|(code, _)| code)
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = config();
        configure(&mut config);
        let now = Instant::now();
        let server = Server::new(config, now, Duration::from_secs(UNIX_START)).unwrap();
        Self {
            server,
            now,
            txid: 0,
            bind_failures: Vec::new(),
            events: Vec::new(),
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        if let Some(at) = self.server.poll_timeout() {
            if at <= self.now {
                self.server.handle_timeout(self.now);
            }
        }
    }

    fn next_txid(&mut self) -> TransactionId {
        self.txid = self.txid.wrapping_add(1);
        TransactionId::new([self.txid; 12])
    }

    /// A request of `method` with `fill`'s attributes, signed with `creds`.
    fn build(
        &mut self,
        class: Class,
        method: Method,
        txid: TransactionId,
        creds: Option<&Creds>,
        fill: Fill<'_>,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut builder =
            MessageBuilder::new(&mut buf, MessageType::new(method, class), txid).unwrap();
        fill(&mut builder);
        if let Some(creds) = creds {
            builder.add_username(&creds.username).unwrap();
            builder.add_realm(&creds.realm).unwrap();
            builder.add_nonce(&creds.nonce).unwrap();
            if creds.sha256 {
                builder.add_message_integrity_sha256(&creds.key()).unwrap();
            } else {
                builder.add_message_integrity(&creds.key()).unwrap();
            }
        }
        let len = builder.finish_with_fingerprint().unwrap();
        buf.truncate(len);
        buf
    }

    fn feed(&mut self, client: Client, bytes: &[u8]) -> (Handled, Vec<Out>) {
        let handled = self.server.handle_client(client, bytes, self.now);
        (handled, self.outputs())
    }

    /// Drains outputs, answering binds (successfully unless a failure is queued).
    fn outputs(&mut self) -> Vec<Out> {
        let mut all = Vec::new();
        loop {
            let mut batch = Vec::new();
            while let Some(output) = self.server.poll_output() {
                batch.push(match output {
                    Output::Transmit(t) => match t.destination {
                        Destination::Client(c) => Out::ToClient(c, t.data.to_vec()),
                        Destination::Peer { relay, addr } => {
                            Out::ToPeer(relay, addr, t.data.to_vec())
                        }
                    },
                    Output::BindRelay {
                        relay,
                        addr,
                        dont_fragment,
                    } => Out::Bind(relay, addr, dont_fragment),
                    Output::CloseRelay { relay } => Out::Close(relay),
                    Output::Event(event) => {
                        self.events.push(event);
                        continue;
                    }
                });
            }
            if batch.is_empty() {
                return all;
            }
            for out in &batch {
                if let Out::Bind(relay, _, _) = out {
                    let result = if self.bind_failures.is_empty() {
                        Ok(())
                    } else {
                        Err(self.bind_failures.remove(0))
                    };
                    self.server.relay_bound(*relay, result, self.now);
                }
            }
            all.extend(batch);
        }
    }

    /// Sends a request and returns the single response to `client`, and the other outputs.
    fn request(
        &mut self,
        client: Client,
        method: Method,
        creds: Option<&Creds>,
        fill: Fill<'_>,
    ) -> (Vec<u8>, Vec<Out>) {
        let txid = self.next_txid();
        let bytes = self.build(Class::Request, method, txid, creds, fill);
        let (_, outputs) = self.feed(client, &bytes);
        split_response(client, txid, outputs)
    }

    /// Gets a nonce the way a client does: an unauthenticated request and its 401.
    fn challenge(&mut self, client: Client, username: &str, password: &str) -> Creds {
        let (response, _) = self.request(client, Method::ALLOCATE, None, &transport_udp);
        let message = Message::decode(&response).unwrap();
        assert_eq!(code(&message), Some(ErrorCode::UNAUTHORIZED));
        let Some(Attribute::Realm(realm)) = message.get(AttributeType::REALM) else {
            panic!("no REALM")
        };
        let Some(Attribute::Nonce(nonce)) = message.get(AttributeType::NONCE) else {
            panic!("no NONCE")
        };
        Creds {
            username: username.into(),
            password: password.into(),
            realm: realm.into(),
            nonce: nonce.into(),
            sha256: false,
        }
    }

    /// A complete allocation for `client`: its relay id, relayed address and credentials.
    fn allocate(&mut self, client: Client) -> (RelayId, SocketAddr, Creds) {
        let creds = self.challenge(client, "alice", "wonderland");
        let (response, outputs) =
            self.request(client, Method::ALLOCATE, Some(&creds), &transport_udp);
        let message = Message::decode(&response).unwrap();
        assert_eq!(
            message.message_type(),
            MessageType::new(Method::ALLOCATE, Class::SuccessResponse),
            "{:?}",
            message.error_code()
        );
        let [Out::Bind(relay, _, _)] = outputs[..] else {
            panic!("{outputs:?}")
        };
        let relayed = xor_address(&message, AttributeType::XOR_RELAYED_ADDRESS).unwrap();
        (relay, relayed, creds)
    }

    fn permit(&mut self, client: Client, creds: &Creds, peer: SocketAddr) {
        let (response, _) = self.request(client, Method::CREATE_PERMISSION, Some(creds), &|b| {
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
                .unwrap()
        });
        let message = Message::decode(&response).unwrap();
        assert_eq!(message.message_type().class, Class::SuccessResponse);
    }

    fn bind_channel(
        &mut self,
        client: Client,
        creds: &Creds,
        number: u16,
        peer: SocketAddr,
    ) -> Message<'static> {
        let (response, _) = self.request(client, Method::CHANNEL_BIND, Some(creds), &|b| {
            b.add_raw(
                AttributeType::CHANNEL_NUMBER,
                &[(number >> 8) as u8, number as u8, 0, 0],
            )
            .unwrap();
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
                .unwrap();
        });
        Message::decode(Vec::leak(response)).unwrap()
    }

    fn send_indication(
        &mut self,
        client: Client,
        peer: SocketAddr,
        data: &[u8],
    ) -> (Handled, Vec<Out>) {
        let txid = self.next_txid();
        let bytes = self.build(Class::Indication, Method::SEND, txid, None, &|b| {
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
                .unwrap();
            b.add_raw(AttributeType::DATA, data).unwrap();
        });
        self.feed(client, &bytes)
    }

    fn peer_sends(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]) -> (Handled, Vec<Out>) {
        let handled = self.server.handle_peer(relay, peer, data, self.now);
        (handled, self.outputs())
    }
}

/// The response to `txid` for `client` among `outputs`, and the rest.
fn split_response(client: Client, txid: TransactionId, outputs: Vec<Out>) -> (Vec<u8>, Vec<Out>) {
    let mut response = None;
    let mut rest = Vec::new();
    for out in outputs {
        match out {
            Out::ToClient(c, bytes)
                if c == client
                    && response.is_none()
                    && Message::decode(&bytes).is_ok_and(|m| m.transaction_id() == txid) =>
            {
                response = Some(bytes)
            }
            other => rest.push(other),
        }
    }
    (response.expect("a response"), rest)
}

fn channel_data(number: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::channel_data::encode(&mut out, number, data, false);
    out
}

fn assert_error(response: &[u8], method: Method, expected: ErrorCode) {
    let message = Message::decode(response).unwrap();
    assert_eq!(
        message.message_type(),
        MessageType::new(method, Class::ErrorResponse)
    );
    assert_eq!(code(&message), Some(expected));
}

// ----- Authentication -----

#[test]
fn unauthenticated_allocate_is_challenged_and_allocates_nothing() {
    let mut h = Harness::new();
    let (response, rest) = h.request(client(), Method::ALLOCATE, None, &transport_udp);
    assert!(rest.is_empty(), "{rest:?}");
    let message = Message::decode(&response).unwrap();
    assert_eq!(code(&message), Some(ErrorCode::UNAUTHORIZED));
    assert_eq!(
        message.get(AttributeType::REALM),
        Some(Attribute::Realm(REALM))
    );
    let Some(Attribute::Nonce(nonce)) = message.get(AttributeType::NONCE) else {
        panic!("no nonce")
    };
    assert_eq!(nonce.len(), 32);
    assert!(nonce.starts_with(&format!("{UNIX_START:016x}")));
    assert!(message.has_fingerprint());
    assert!(message.get(AttributeType::MESSAGE_INTEGRITY).is_none());
    let stats = h.server.stats();
    assert_eq!(stats.allocations, 0);
    assert_eq!(stats.auth_failures(AuthFailure::MissingCredentials), 1);
    assert_eq!(stats.errors(ErrorCode::UNAUTHORIZED), 1);
    assert_eq!(stats.requests(RequestKind::Allocate), 1);
}

#[test]
fn successful_allocation_response() {
    let mut h = Harness::new();
    let creds = h.challenge(client(), "alice", "wonderland");
    let (response, outputs) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    let message = Message::decode(&response).unwrap();
    assert_eq!(
        message.message_type(),
        MessageType::new(Method::ALLOCATE, Class::SuccessResponse)
    );
    let [Out::Bind(relay, bind_addr, false)] = outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(bind_addr.ip().to_string(), "10.0.0.1");
    assert!((50_000..=50_099).contains(&bind_addr.port()));
    let relayed = xor_address(&message, AttributeType::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(
        relayed,
        SocketAddr::new("192.0.2.1".parse().unwrap(), bind_addr.port())
    );
    assert_eq!(message.xor_mapped_address(), Some(client().addr));
    assert_eq!(lifetime(&message), Some(600));
    assert_eq!(message.verify_integrity(&creds.key()), Ok(()));
    assert!(message.has_fingerprint());
    assert_eq!(relay.index(), 0);
    let stats = h.server.stats();
    assert_eq!((stats.allocations, stats.allocations_created), (1, 1));
    let list = h.server.allocations(h.now);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].username, "alice");
    assert_eq!(list[0].client, client());
    assert_eq!(list[0].relay, relayed);
    assert_eq!(list[0].expires_in, Duration::from_secs(600));
}

#[test]
fn wrong_password_unknown_user_and_wrong_realm_get_401() {
    let mut h = Harness::new();
    let mut creds = h.challenge(client(), "alice", "wrong");
    let (response, outputs) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(&response, Method::ALLOCATE, ErrorCode::UNAUTHORIZED);
    assert!(outputs.is_empty());
    let message = Message::decode(&response).unwrap();
    assert!(message.get(AttributeType::NONCE).is_some());
    creds.username = "mallory".into();
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(&response, Method::ALLOCATE, ErrorCode::UNAUTHORIZED);
    creds.username = "alice".into();
    creds.password = "wonderland".into();
    creds.realm = "elsewhere".into();
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(&response, Method::ALLOCATE, ErrorCode::UNAUTHORIZED);
    let stats = h.server.stats();
    assert_eq!(stats.auth_failures(AuthFailure::BadIntegrity), 1);
    assert_eq!(stats.auth_failures(AuthFailure::UnknownUser), 1);
    assert_eq!(stats.auth_failures(AuthFailure::WrongRealm), 1);
    assert_eq!(stats.allocations, 0);
}

#[test]
fn integrity_without_username_is_a_bad_request() {
    let mut h = Harness::new();
    let creds = h.challenge(client(), "alice", "wonderland");
    let key = creds.key();
    let (response, _) = h.request(client(), Method::ALLOCATE, None, &|b| {
        transport_udp(b);
        b.add_realm(REALM).unwrap();
        b.add_nonce(&creds.nonce).unwrap();
        b.add_message_integrity(&key).unwrap();
    });
    assert_error(&response, Method::ALLOCATE, ErrorCode::BAD_REQUEST);
    assert_eq!(
        h.server
            .stats()
            .auth_failures(AuthFailure::MissingAttributes),
        1
    );
    // PASSWORD-ALGORITHM SHA-256 is not offered.
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::PASSWORD_ALGORITHM, &[0, 2, 0, 0])
            .unwrap();
    });
    assert_error(&response, Method::ALLOCATE, ErrorCode::BAD_REQUEST);
}

#[test]
fn stale_forged_and_misdirected_nonces_get_438() {
    let mut h = Harness::new();
    let mut creds = h.challenge(client(), "alice", "wonderland");
    h.advance(600);
    let (response, outputs) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(&response, Method::ALLOCATE, ErrorCode::STALE_NONCE);
    assert!(outputs.is_empty());
    let message = Message::decode(&response).unwrap();
    assert_eq!(
        message.get(AttributeType::REALM),
        Some(Attribute::Realm(REALM))
    );
    let Some(Attribute::Nonce(fresh)) = message.get(AttributeType::NONCE) else {
        panic!("no nonce")
    };
    assert_ne!(fresh, creds.nonce);
    let fresh = fresh.to_owned();

    // A nonce given to another address.
    let theirs = h.challenge(other_client(), "alice", "wonderland");
    creds.nonce = theirs.nonce;
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(&response, Method::ALLOCATE, ErrorCode::STALE_NONCE);
    creds.nonce = "0".repeat(32);
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(&response, Method::ALLOCATE, ErrorCode::STALE_NONCE);

    creds.nonce = fresh;
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    let stats = h.server.stats();
    assert_eq!(stats.auth_failures(AuthFailure::StaleNonce), 1);
    assert_eq!(stats.auth_failures(AuthFailure::InvalidNonce), 2);
    assert_eq!(stats.errors(ErrorCode::STALE_NONCE), 3);
}

#[test]
fn rest_credentials() {
    let mut h = Harness::new();
    let username = format!("{}:user-1", UNIX_START + 3600);
    let password = rest_password(SECRET, &username);
    let creds = h.challenge(client(), &username, &password);
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    assert_eq!(message.verify_integrity(&creds.key()), Ok(()));

    // Expired, and a password made with another secret.
    let expired = format!("{}:user-1", UNIX_START - 1);
    let creds = h.challenge(other_client(), &expired, &rest_password(SECRET, &expired));
    let (response, _) = h.request(
        other_client(),
        Method::ALLOCATE,
        Some(&creds),
        &transport_udp,
    );
    assert_error(&response, Method::ALLOCATE, ErrorCode::UNAUTHORIZED);
    let forged = format!("{}:user-1", UNIX_START + 3600);
    let creds = h.challenge(other_client(), &forged, &rest_password(b"guess", &forged));
    let (response, _) = h.request(
        other_client(),
        Method::ALLOCATE,
        Some(&creds),
        &transport_udp,
    );
    assert_error(&response, Method::ALLOCATE, ErrorCode::UNAUTHORIZED);
    let stats = h.server.stats();
    assert_eq!(stats.auth_failures(AuthFailure::ExpiredCredential), 1);
    assert_eq!(stats.auth_failures(AuthFailure::BadIntegrity), 1);

    // The allocation outlives its credential: refreshes use the allocation's key.
    for _ in 0..8 {
        h.advance(500);
        let creds = h.challenge(client(), &username, &password);
        let (response, _) = h.request(client(), Method::REFRESH, Some(&creds), &nothing);
        let message = Message::decode(&response).unwrap();
        assert_eq!(message.message_type().class, Class::SuccessResponse);
    }
    assert_eq!(h.server.stats().allocations, 1);
}

#[test]
fn message_integrity_sha256_is_answered_in_kind() {
    let mut h = Harness::new();
    let mut creds = h.challenge(client(), "alice", "wonderland");
    creds.sha256 = true;
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    assert_eq!(message.verify_integrity_sha256(&creds.key()), Ok(()));
    assert!(message.get(AttributeType::MESSAGE_INTEGRITY).is_none());
    let (response, _) = h.request(client(), Method::REFRESH, Some(&creds), &nothing);
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.verify_integrity_sha256(&creds.key()), Ok(()));
}

// ----- Allocate -----

#[test]
fn allocate_attribute_errors() {
    let mut h = Harness::new();
    let creds = h.challenge(client(), "alice", "wonderland");
    let cases: [(Fill<'_>, ErrorCode); 8] = [
        (&nothing, ErrorCode::BAD_REQUEST),
        (
            &|b| {
                b.add_raw(AttributeType::REQUESTED_TRANSPORT, &[6, 0, 0, 0])
                    .unwrap()
            },
            ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
        ),
        (
            &|b| {
                b.add_raw(AttributeType::REQUESTED_TRANSPORT, &[17])
                    .unwrap()
            },
            ErrorCode::BAD_REQUEST,
        ),
        (
            &|b| {
                transport_udp(b);
                b.add_raw(AttributeType::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0])
                    .unwrap();
            },
            ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
        ),
        (
            &|b| {
                transport_udp(b);
                b.add_raw(AttributeType::REQUESTED_ADDRESS_FAMILY, &[7, 0, 0, 0])
                    .unwrap();
            },
            ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
        ),
        (
            &|b| {
                transport_udp(b);
                b.add_raw(AttributeType::EVEN_PORT, &[0]).unwrap();
                b.add_raw(AttributeType::RESERVATION_TOKEN, &[1; 8])
                    .unwrap();
            },
            ErrorCode::BAD_REQUEST,
        ),
        (
            &|b| {
                transport_udp(b);
                b.add_raw(AttributeType::ADDITIONAL_ADDRESS_FAMILY, &[1, 0, 0, 0])
                    .unwrap();
            },
            ErrorCode::BAD_REQUEST,
        ),
        (
            &|b| {
                transport_udp(b);
                b.add_raw(AttributeType::RESERVATION_TOKEN, &[9; 8])
                    .unwrap();
            },
            ErrorCode::INSUFFICIENT_CAPACITY,
        ),
    ];
    for (fill, expected) in cases {
        let (response, outputs) = h.request(client(), Method::ALLOCATE, Some(&creds), fill);
        assert_error(&response, Method::ALLOCATE, expected);
        assert!(outputs.is_empty());
        // Errors after authentication are signed.
        let message = Message::decode(&response).unwrap();
        assert_eq!(message.verify_integrity(&creds.key()), Ok(()), "{expected}");
    }
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::new(0x7F01), b"x").unwrap();
        b.add_raw(AttributeType::new(0x0031), b"y").unwrap();
    });
    assert_error(&response, Method::ALLOCATE, ErrorCode::UNKNOWN_ATTRIBUTE);
    let message = Message::decode(&response).unwrap();
    let listed: Vec<_> = message.unknown_attributes().unwrap().iter().collect();
    assert_eq!(
        listed,
        [AttributeType::new(0x7F01), AttributeType::new(0x0031)]
    );
    assert_eq!(h.server.stats().allocations, 0);
    assert_eq!(h.server.stats().errors(ErrorCode::BAD_REQUEST), 4);
}

#[test]
fn second_allocate_on_the_same_five_tuple() {
    let mut h = Harness::new();
    let creds = h.challenge(client(), "alice", "wonderland");
    let txid = h.next_txid();
    let request = h.build(
        Class::Request,
        Method::ALLOCATE,
        txid,
        Some(&creds),
        &transport_udp,
    );
    let (handled, first) = h.feed(client(), &request);
    assert_eq!(handled, Handled::Pending);
    let (first, _) = split_response(client(), txid, first);
    // A retransmission gets the same answer and no second relay.
    let (handled, again) = h.feed(client(), &request);
    assert_eq!(handled, Handled::Success);
    let (again, rest) = split_response(client(), txid, again);
    assert!(rest.is_empty());
    assert_eq!(first, again);
    // A new transaction is a mismatch.
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(&response, Method::ALLOCATE, ErrorCode::ALLOCATION_MISMATCH);
    assert_eq!(h.server.stats().allocations, 1);
}

#[test]
fn quotas_per_user_and_in_total() {
    let mut h = Harness::with(|c| {
        c.max_allocations_per_user = 2;
        c.max_allocations = 3;
    });
    for n in 0..2 {
        let client = Client {
            transport: Transport::Udp,
            addr: SocketAddr::new("203.0.113.5".parse().unwrap(), 1000 + n),
        };
        h.allocate(client);
    }
    let third = Client {
        transport: Transport::Udp,
        addr: "203.0.113.5:1002".parse().unwrap(),
    };
    let creds = h.challenge(third, "alice", "wonderland");
    let (response, outputs) = h.request(third, Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(
        &response,
        Method::ALLOCATE,
        ErrorCode::ALLOCATION_QUOTA_REACHED,
    );
    assert!(outputs.is_empty());
    // Bob has his own quota, but the server is full after his first.
    let creds = h.challenge(third, "bob", "builder");
    let (response, _) = h.request(third, Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_eq!(
        Message::decode(&response).unwrap().message_type().class,
        Class::SuccessResponse
    );
    let fourth = Client {
        transport: Transport::Udp,
        addr: "203.0.113.5:1003".parse().unwrap(),
    };
    let creds = h.challenge(fourth, "bob", "builder");
    let (response, _) = h.request(fourth, Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(
        &response,
        Method::ALLOCATE,
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    // Freeing one of Alice's makes room for her again.
    let first = Client {
        transport: Transport::Udp,
        addr: "203.0.113.5:1000".parse().unwrap(),
    };
    let creds = h.challenge(first, "alice", "wonderland");
    let (response, outputs) = h.request(first, Method::REFRESH, Some(&creds), &|b| {
        b.add_raw(AttributeType::LIFETIME, &[0, 0, 0, 0]).unwrap()
    });
    assert_eq!(lifetime(&Message::decode(&response).unwrap()), Some(0));
    assert!(matches!(outputs[..], [Out::Close(_)]), "{outputs:?}");
    let creds = h.challenge(fourth, "alice", "wonderland");
    let (response, _) = h.request(fourth, Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_eq!(
        Message::decode(&response).unwrap().message_type().class,
        Class::SuccessResponse
    );
}

#[test]
fn relay_port_exhaustion_and_bind_failures() {
    let mut h = Harness::with(|c| {
        c.min_port = 50_000;
        c.max_port = 50_001;
    });
    // The first port tried is taken by another process: another is tried.
    h.bind_failures = vec![BindError::AddrInUse];
    let creds = h.challenge(client(), "alice", "wonderland");
    let (response, outputs) = h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    let [Out::Bind(_, first, _), Out::Bind(_, second, _)] = outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_ne!(first.port(), second.port());
    // The range is now exhausted for the next client (the failed port is free again, but
    // a hard bind failure ends the attempt with 508 and returns the quota).
    h.bind_failures = vec![BindError::Failed];
    let creds = h.challenge(other_client(), "alice", "wonderland");
    let (response, outputs) = h.request(
        other_client(),
        Method::ALLOCATE,
        Some(&creds),
        &transport_udp,
    );
    assert_error(
        &response,
        Method::ALLOCATE,
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert!(matches!(outputs[..], [Out::Bind(..)]), "{outputs:?}");
    let third = Client {
        transport: Transport::Udp,
        addr: "203.0.113.9:1".parse().unwrap(),
    };
    let creds = h.challenge(third, "alice", "wonderland");
    let (response, _) = h.request(third, Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_eq!(
        Message::decode(&response).unwrap().message_type().class,
        Class::SuccessResponse
    );
    let fourth = Client {
        transport: Transport::Udp,
        addr: "203.0.113.9:2".parse().unwrap(),
    };
    let creds = h.challenge(fourth, "alice", "wonderland");
    let (response, outputs) = h.request(fourth, Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_error(
        &response,
        Method::ALLOCATE,
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert!(outputs.is_empty());
    assert_eq!(h.server.stats().allocations, 2);
}

#[test]
fn even_port_and_reservation_token() {
    let mut h = Harness::new();
    let creds = h.challenge(client(), "alice", "wonderland");
    let (response, outputs) = h.request(client(), Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::EVEN_PORT, &[0x80]).unwrap();
    });
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    let [
        Out::Bind(_, primary, _),
        Out::Bind(reserved_relay, reserved, _),
    ] = outputs[..]
    else {
        panic!("{outputs:?}")
    };
    assert_eq!(primary.port() % 2, 0);
    assert_eq!(reserved.port(), primary.port() + 1);
    let token: [u8; 8] = raw(&message, AttributeType::RESERVATION_TOKEN)
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(h.server.stats().reservations, 1);

    // Another client claims the reserved port with the token: no new socket.
    let creds = h.challenge(other_client(), "bob", "builder");
    let (response, outputs) = h.request(other_client(), Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::RESERVATION_TOKEN, &token).unwrap();
    });
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(
        xor_address(&message, AttributeType::XOR_RELAYED_ADDRESS)
            .unwrap()
            .port(),
        reserved.port()
    );
    assert_eq!(h.server.stats().reservations, 0);
    assert_eq!(h.server.stats().allocations, 2);
    // The token is spent.
    let third = Client {
        transport: Transport::Udp,
        addr: "203.0.113.9:3".parse().unwrap(),
    };
    let creds = h.challenge(third, "bob", "builder");
    let (response, _) = h.request(third, Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::RESERVATION_TOKEN, &token).unwrap();
    });
    assert_error(
        &response,
        Method::ALLOCATE,
        ErrorCode::INSUFFICIENT_CAPACITY,
    );

    // An unclaimed reservation is released after its lifetime.
    let (response, outputs) = h.request(third, Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::EVEN_PORT, &[0x80]).unwrap();
    });
    assert_eq!(
        Message::decode(&response).unwrap().message_type().class,
        Class::SuccessResponse
    );
    let [_, Out::Bind(second_reserved, _, _)] = outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_ne!(second_reserved, reserved_relay);
    h.advance(30);
    assert_eq!(h.outputs(), [Out::Close(second_reserved)]);
    assert_eq!(h.server.stats().reservations, 0);
}

#[test]
fn even_port_without_reservation_and_dont_fragment() {
    let mut h = Harness::new();
    let creds = h.challenge(client(), "alice", "wonderland");
    let (_, outputs) = h.request(client(), Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::EVEN_PORT, &[0]).unwrap();
        b.add_raw(AttributeType::DONT_FRAGMENT, &[]).unwrap();
    });
    let [Out::Bind(_, addr, true)] = outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(addr.port() % 2, 0);
}

#[test]
fn additional_ipv6_family_is_refused_per_family() {
    let mut h = Harness::new();
    let creds = h.challenge(client(), "alice", "wonderland");
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0])
            .unwrap();
    });
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    let error = raw(&message, AttributeType::ADDRESS_ERROR_CODE).unwrap();
    assert_eq!(&error[..4], &[2, 0, 4, 40]);
}

#[test]
fn ipv6_relay() {
    let mut h = Harness::with(|c| {
        c.relay_v6 = Some(RelayAddress::same("2001:db8::1".parse().unwrap()));
    });
    let creds = h.challenge(client(), "alice", "wonderland");
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&creds), &|b| {
        transport_udp(b);
        b.add_raw(AttributeType::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0])
            .unwrap();
    });
    let message = Message::decode(&response).unwrap();
    let relayed = xor_address(&message, AttributeType::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relayed.ip().to_string(), "2001:db8::1");
    // IPv4 peers do not fit an IPv6 relay; IPv6 peers do.
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&creds), &|b| {
        b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer())
            .unwrap()
    });
    assert_error(
        &response,
        Method::CREATE_PERMISSION,
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    h.permit(client(), &creds, "[2001:db8:1::7]:9".parse().unwrap());
    // Refreshing as IPv4 is a family mismatch.
    let (response, _) = h.request(client(), Method::REFRESH, Some(&creds), &|b| {
        b.add_raw(AttributeType::REQUESTED_ADDRESS_FAMILY, &[1, 0, 0, 0])
            .unwrap()
    });
    assert_error(
        &response,
        Method::REFRESH,
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
}

// ----- Refresh and lifetimes -----

#[test]
fn refresh_lifetimes_and_errors() {
    let mut h = Harness::new();
    let (relay, _, creds) = h.allocate(client());
    for (requested, granted) in [(1200, 1200), (5000, 3600), (30, 600)] {
        let (response, _) = h.request(client(), Method::REFRESH, Some(&creds), &|b| {
            b.add_raw(AttributeType::LIFETIME, &u32::to_be_bytes(requested))
                .unwrap()
        });
        let message = Message::decode(&response).unwrap();
        assert_eq!(lifetime(&message), Some(granted), "{requested}");
        assert_eq!(message.verify_integrity(&creds.key()), Ok(()));
    }
    // Another user on the same 5-tuple.
    let mut bob = creds.clone();
    bob.username = "bob".into();
    bob.password = "builder".into();
    let (response, _) = h.request(client(), Method::REFRESH, Some(&bob), &nothing);
    assert_error(&response, Method::REFRESH, ErrorCode::WRONG_CREDENTIALS);
    assert_eq!(
        h.server
            .stats()
            .auth_failures(AuthFailure::WrongCredentials),
        1
    );
    // No allocation on that 5-tuple.
    let other = h.challenge(other_client(), "alice", "wonderland");
    let (response, _) = h.request(other_client(), Method::REFRESH, Some(&other), &nothing);
    assert_error(&response, Method::REFRESH, ErrorCode::ALLOCATION_MISMATCH);
    // Lifetime 0 deletes.
    let (response, outputs) = h.request(client(), Method::REFRESH, Some(&creds), &|b| {
        b.add_raw(AttributeType::LIFETIME, &[0, 0, 0, 0]).unwrap()
    });
    assert_eq!(lifetime(&Message::decode(&response).unwrap()), Some(0));
    assert_eq!(outputs, [Out::Close(relay)]);
    assert_eq!(h.server.stats().allocations, 0);
    assert!(h.server.allocations(h.now).is_empty());
    let (response, _) = h.request(client(), Method::REFRESH, Some(&creds), &nothing);
    assert_error(&response, Method::REFRESH, ErrorCode::ALLOCATION_MISMATCH);
}

#[test]
fn allocations_expire_unless_refreshed() {
    let mut h = Harness::new();
    let (relay, _, creds) = h.allocate(client());
    h.advance(500);
    let (response, _) = h.request(client(), Method::REFRESH, Some(&creds), &nothing);
    assert_eq!(lifetime(&Message::decode(&response).unwrap()), Some(600));
    h.advance(100);
    assert!(
        h.outputs().is_empty(),
        "refreshed, so not expired at the old deadline"
    );
    assert_eq!(h.server.stats().allocations, 1);
    h.advance(499);
    assert!(h.outputs().is_empty());
    h.advance(1);
    assert_eq!(h.outputs(), [Out::Close(relay)]);
    let stats = h.server.stats();
    assert_eq!((stats.allocations, stats.allocations_expired), (0, 1));
    // Packets to the old relay are dropped.
    let (handled, outputs) = h.peer_sends(relay, peer(), b"late");
    assert_eq!(handled, Handled::Dropped(DropReason::NoAllocation));
    assert!(outputs.is_empty());
}

#[test]
fn tcp_connection_close_ends_its_allocation() {
    let mut h = Harness::new();
    let (relay, _, _) = h.allocate(tcp_client());
    h.server.client_closed(tcp_client(), h.now);
    assert_eq!(h.outputs(), [Out::Close(relay)]);
    assert_eq!(h.server.stats().allocations, 0);
    h.server.client_closed(tcp_client(), h.now);
    assert!(h.outputs().is_empty());
}

// ----- Permissions, Send and Data -----

#[test]
fn permission_send_and_data_indications() {
    let mut h = Harness::new();
    let (relay, _, creds) = h.allocate(client());
    // Without a permission nothing passes either way.
    let (handled, outputs) = h.send_indication(client(), peer(), b"early");
    assert_eq!(handled, Handled::Dropped(DropReason::NoPermission));
    assert!(outputs.is_empty());
    let (handled, _) = h.peer_sends(relay, peer(), b"early");
    assert_eq!(handled, Handled::Dropped(DropReason::NoPermission));

    h.permit(client(), &creds, peer());
    let (handled, outputs) = h.send_indication(client(), peer(), b"hello peer");
    assert_eq!(handled, Handled::Relayed);
    assert_eq!(
        outputs,
        [Out::ToPeer(relay, peer(), b"hello peer".to_vec())]
    );
    // The permission is per IP: another port of the same peer is fine.
    let same_ip: SocketAddr = "198.51.100.7:5001".parse().unwrap();
    let (handled, _) = h.send_indication(client(), same_ip, b"x");
    assert_eq!(handled, Handled::Relayed);

    let (handled, outputs) = h.peer_sends(relay, peer(), b"hello client");
    assert_eq!(handled, Handled::Relayed);
    let [Out::ToClient(to, bytes)] = &outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(*to, client());
    let message = Message::decode(bytes).unwrap();
    assert_eq!(
        message.message_type(),
        MessageType::new(Method::DATA, Class::Indication)
    );
    assert_eq!(
        xor_address(&message, AttributeType::XOR_PEER_ADDRESS),
        Some(peer())
    );
    assert_eq!(
        raw(&message, AttributeType::DATA),
        Some(&b"hello client"[..])
    );
    // From a peer without a permission: dropped.
    let (handled, _) = h.peer_sends(relay, other_peer(), b"spoof");
    assert_eq!(handled, Handled::Dropped(DropReason::NoPermission));

    let stats = h.server.stats();
    assert_eq!(
        stats.relayed(Direction::ToPeer),
        Traffic {
            bytes: 11,
            packets: 2
        }
    );
    assert_eq!(
        stats.relayed(Direction::ToClient),
        Traffic {
            bytes: 12,
            packets: 1
        }
    );
    assert_eq!(stats.permissions, 1);
    let info = &h.server.allocations(h.now)[0];
    assert_eq!(info.permissions.len(), 1);
    assert_eq!(info.permissions[0].peer, peer().ip());
    assert_eq!(info.permissions[0].expires_in, Duration::from_secs(300));
    assert_eq!(
        info.to_peer,
        Traffic {
            bytes: 11,
            packets: 2
        }
    );

    // Permissions last 300 s unless refreshed.
    h.advance(299);
    h.permit(client(), &creds, peer());
    h.advance(299);
    let (handled, _) = h.send_indication(client(), peer(), b"still");
    assert_eq!(handled, Handled::Relayed);
    h.advance(1);
    let (handled, _) = h.send_indication(client(), peer(), b"gone");
    assert_eq!(handled, Handled::Dropped(DropReason::NoPermission));
    assert_eq!(h.server.stats().permissions, 0);
}

#[test]
fn create_permission_errors_are_all_or_nothing() {
    let mut h = Harness::new();
    let (_, _, creds) = h.allocate(client());
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&creds), &nothing);
    assert_error(&response, Method::CREATE_PERMISSION, ErrorCode::BAD_REQUEST);
    for forbidden in [
        "127.0.0.1:9",
        "10.1.2.3:9",
        "169.254.169.254:80",
        "224.0.0.1:9",
        "0.0.0.0:9",
        "192.0.2.1:9",
        "10.0.0.1:9",
    ] {
        let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&creds), &|b| {
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer())
                .unwrap();
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, forbidden.parse().unwrap())
                .unwrap();
        });
        assert_error(&response, Method::CREATE_PERMISSION, ErrorCode::FORBIDDEN);
    }
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&creds), &|b| {
        b.add_xor_address(
            AttributeType::XOR_PEER_ADDRESS,
            "[2001:db8::1]:9".parse().unwrap(),
        )
        .unwrap()
    });
    assert_error(
        &response,
        Method::CREATE_PERMISSION,
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
    );
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&creds), &|b| {
        b.add_raw(AttributeType::XOR_PEER_ADDRESS, &[0, 1, 0])
            .unwrap()
    });
    assert_error(&response, Method::CREATE_PERMISSION, ErrorCode::BAD_REQUEST);
    assert_eq!(h.server.stats().permissions, 0);
    // Without an allocation.
    let other = h.challenge(other_client(), "alice", "wonderland");
    let (response, _) = h.request(
        other_client(),
        Method::CREATE_PERMISSION,
        Some(&other),
        &|b| {
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer())
                .unwrap()
        },
    );
    assert_error(
        &response,
        Method::CREATE_PERMISSION,
        ErrorCode::ALLOCATION_MISMATCH,
    );
    // Unauthenticated.
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, None, &|b| {
        b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer())
            .unwrap()
    });
    assert_error(
        &response,
        Method::CREATE_PERMISSION,
        ErrorCode::UNAUTHORIZED,
    );
    assert_eq!(h.server.stats().errors(ErrorCode::FORBIDDEN), 7);
}

#[test]
fn allow_list_opens_loopback() {
    let mut h = Harness::with(|c| {
        c.peer_policy = PeerPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..PeerPolicy::default()
        };
    });
    let (relay, _, creds) = h.allocate(client());
    let local: SocketAddr = "127.0.0.1:3480".parse().unwrap();
    h.permit(client(), &creds, local);
    let (handled, outputs) = h.send_indication(client(), local, b"ok");
    assert_eq!(handled, Handled::Relayed);
    assert_eq!(outputs, [Out::ToPeer(relay, local, b"ok".to_vec())]);
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&creds), &|b| {
        b.add_xor_address(
            AttributeType::XOR_PEER_ADDRESS,
            "10.0.0.9:1".parse().unwrap(),
        )
        .unwrap()
    });
    assert_error(&response, Method::CREATE_PERMISSION, ErrorCode::FORBIDDEN);
}

#[test]
fn permission_capacity() {
    let mut h = Harness::with(|c| c.max_permissions_per_allocation = 2);
    let (_, _, creds) = h.allocate(client());
    h.permit(client(), &creds, peer());
    h.permit(client(), &creds, other_peer());
    h.permit(client(), &creds, peer());
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&creds), &|b| {
        b.add_xor_address(
            AttributeType::XOR_PEER_ADDRESS,
            "198.51.100.9:1".parse().unwrap(),
        )
        .unwrap()
    });
    assert_error(
        &response,
        Method::CREATE_PERMISSION,
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
}

// ----- Channels -----

#[test]
fn channel_bind_and_channel_data_both_ways() {
    let mut h = Harness::new();
    let (relay, _, creds) = h.allocate(client());
    let message = h.bind_channel(client(), &creds, 0x4001, peer());
    assert_eq!(
        message.message_type(),
        MessageType::new(Method::CHANNEL_BIND, Class::SuccessResponse)
    );
    assert_eq!(message.verify_integrity(&creds.key()), Ok(()));
    // The binding installed a permission too.
    assert_eq!(h.server.stats().permissions, 1);
    assert_eq!(h.server.stats().channels, 1);

    let (handled, outputs) = h.feed(client(), &channel_data(0x4001, b"via channel"));
    assert_eq!(handled, Handled::Relayed);
    assert_eq!(
        outputs,
        [Out::ToPeer(relay, peer(), b"via channel".to_vec())]
    );
    // UDP padding after the data is accepted.
    let mut padded = channel_data(0x4001, b"pad");
    padded.push(0);
    let (_, outputs) = h.feed(client(), &padded);
    assert_eq!(outputs, [Out::ToPeer(relay, peer(), b"pad".to_vec())]);

    let (handled, outputs) = h.peer_sends(relay, peer(), b"reply");
    assert_eq!(handled, Handled::Relayed);
    assert_eq!(
        outputs,
        [Out::ToClient(client(), channel_data(0x4001, b"reply"))]
    );
    // Another port of the same peer IP has a permission but no channel: Data indication.
    let (_, outputs) = h.peer_sends(relay, "198.51.100.7:5999".parse().unwrap(), b"x");
    let [Out::ToClient(_, bytes)] = &outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(
        Message::decode(bytes).unwrap().message_type().method,
        Method::DATA
    );

    // Unbound channel, truncated ChannelData.
    let (handled, _) = h.feed(client(), &channel_data(0x4002, b"nobody"));
    assert_eq!(handled, Handled::Dropped(DropReason::NoChannel));
    let mut truncated = channel_data(0x4001, b"truncated");
    truncated.truncate(8);
    let (handled, _) = h.feed(client(), &truncated);
    assert_eq!(handled, Handled::Dropped(DropReason::Malformed));
    let (handled, _) = h.feed(other_client(), &channel_data(0x4001, b"not yours"));
    assert_eq!(handled, Handled::Dropped(DropReason::NoAllocation));

    let info = &h.server.allocations(h.now)[0];
    assert_eq!(info.channels.len(), 1);
    assert_eq!(
        (info.channels[0].number, info.channels[0].peer),
        (0x4001, peer())
    );
    assert_eq!(info.channels[0].expires_in, Duration::from_secs(600));
}

#[test]
fn channel_data_over_tcp_is_padded() {
    let mut h = Harness::new();
    let (relay, _, creds) = h.allocate(tcp_client());
    h.bind_channel(tcp_client(), &creds, 0x7FFF, peer());
    let (_, outputs) = h.peer_sends(relay, peer(), b"12345");
    let mut expected = Vec::new();
    crate::channel_data::encode(&mut expected, 0x7FFF, b"12345", true);
    assert_eq!(expected.len(), 12);
    assert_eq!(outputs, [Out::ToClient(tcp_client(), expected)]);
}

#[test]
fn channel_bind_errors() {
    let mut h = Harness::new();
    let (_, _, creds) = h.allocate(client());
    for number in [0x3FFF, 0x8000, 0xFFFF] {
        let message = h.bind_channel(client(), &creds, number, peer());
        assert_eq!(code(&message), Some(ErrorCode::BAD_REQUEST), "{number:#x}");
    }
    let message = h.bind_channel(client(), &creds, 0x4000, "127.0.0.1:1".parse().unwrap());
    assert_eq!(code(&message), Some(ErrorCode::FORBIDDEN));
    let message = h.bind_channel(client(), &creds, 0x4000, "[2001:db8::1]:1".parse().unwrap());
    assert_eq!(
        code(&message),
        Some(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH)
    );
    let (response, _) = h.request(client(), Method::CHANNEL_BIND, Some(&creds), &|b| {
        b.add_raw(AttributeType::CHANNEL_NUMBER, &[0x40, 0, 0, 0])
            .unwrap()
    });
    assert_error(&response, Method::CHANNEL_BIND, ErrorCode::BAD_REQUEST);
    let (response, _) = h.request(client(), Method::CHANNEL_BIND, Some(&creds), &|b| {
        b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer())
            .unwrap()
    });
    assert_error(&response, Method::CHANNEL_BIND, ErrorCode::BAD_REQUEST);

    let message = h.bind_channel(client(), &creds, 0x4000, peer());
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    // Refreshing the same binding is fine; rebinding either side is not.
    let message = h.bind_channel(client(), &creds, 0x4000, peer());
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    let message = h.bind_channel(client(), &creds, 0x4000, other_peer());
    assert_eq!(code(&message), Some(ErrorCode::BAD_REQUEST));
    let message = h.bind_channel(client(), &creds, 0x4001, peer());
    assert_eq!(code(&message), Some(ErrorCode::BAD_REQUEST));
    assert_eq!(h.server.stats().channels, 1);

    let other = h.challenge(other_client(), "alice", "wonderland");
    let message = h.bind_channel(other_client(), &other, 0x4000, peer());
    assert_eq!(code(&message), Some(ErrorCode::ALLOCATION_MISMATCH));
}

#[test]
fn channels_expire_after_ten_minutes() {
    let mut h = Harness::new();
    let (relay, _, creds) = h.allocate(client());
    h.bind_channel(client(), &creds, 0x4001, peer());
    // Keep the allocation and the permission alive, but not the channel.
    for _ in 0..2 {
        h.advance(290);
        h.permit(client(), &creds, peer());
        let (response, _) = h.request(client(), Method::REFRESH, Some(&creds), &nothing);
        assert_eq!(lifetime(&Message::decode(&response).unwrap()), Some(600));
    }
    h.advance(19);
    let (handled, _) = h.feed(client(), &channel_data(0x4001, b"x"));
    assert_eq!(handled, Handled::Relayed);
    h.advance(1);
    let (handled, _) = h.feed(client(), &channel_data(0x4001, b"x"));
    assert_eq!(handled, Handled::Dropped(DropReason::NoChannel));
    assert_eq!(h.server.stats().channels, 0);
    let (_, outputs) = h.peer_sends(relay, peer(), b"x");
    let [Out::ToClient(_, bytes)] = &outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(
        Message::decode(bytes).unwrap().message_type().method,
        Method::DATA
    );
    // The channel number is free again (with a fresh nonce: the first is 600 s old).
    let creds = h.challenge(client(), "alice", "wonderland");
    let message = h.bind_channel(client(), &creds, 0x4001, other_peer());
    assert_eq!(
        message.message_type().class,
        Class::SuccessResponse,
        "{:?}",
        code(&message)
    );
}

// ----- Relay to relay -----

/// The peer address and data of a Data indication.
fn data_indication(bytes: &[u8]) -> (SocketAddr, Vec<u8>) {
    let message = Message::decode(bytes).unwrap();
    assert_eq!(
        message.message_type(),
        MessageType::new(Method::DATA, Class::Indication)
    );
    let peer = xor_address(&message, AttributeType::XOR_PEER_ADDRESS).unwrap();
    (peer, raw(&message, AttributeType::DATA).unwrap().to_vec())
}

#[test]
fn relay_to_relay_is_delivered_inside_the_core() {
    let mut h = Harness::new();
    let (_, a_addr, a_creds) = h.allocate(client());
    let (_, b_addr, b_creds) = h.allocate(other_client());
    assert_eq!(a_addr.ip(), b_addr.ip());
    // Another allocation's relayed address is a legal peer although the IP is the server's.
    h.permit(client(), &a_creds, b_addr);
    // B's permission check applies: without one for A, nothing reaches B, and nothing
    // leaves through a socket either.
    let (handled, outputs) = h.send_indication(client(), b_addr, b"knock");
    assert_eq!(handled, Handled::Dropped(DropReason::NoPermission));
    assert_eq!(outputs, []);

    h.permit(other_client(), &b_creds, a_addr);
    let (handled, outputs) = h.send_indication(client(), b_addr, b"hello b");
    assert_eq!(handled, Handled::Relayed);
    let [Out::ToClient(to, bytes)] = &outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(*to, other_client());
    assert_eq!(data_indication(bytes), (a_addr, b"hello b".to_vec()));
    let (_, outputs) = h.send_indication(other_client(), a_addr, b"hello a");
    let [Out::ToClient(to, bytes)] = &outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(*to, client());
    assert_eq!(data_indication(bytes), (b_addr, b"hello a".to_vec()));

    // Behind a 1:1 NAT the bound IP names the same allocation; B still sees A's announced
    // relayed address.
    let b_bound = SocketAddr::new("10.0.0.1".parse().unwrap(), b_addr.port());
    h.permit(client(), &a_creds, b_bound);
    let (_, outputs) = h.send_indication(client(), b_bound, b"via bind");
    let [Out::ToClient(to, bytes)] = &outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(*to, other_client());
    assert_eq!(data_indication(bytes), (a_addr, b"via bind".to_vec()));

    // Channels both ways: each side's own channel number.
    for (client, creds, number, peer) in [
        (client(), &a_creds, 0x4001, b_addr),
        (other_client(), &b_creds, 0x4002, a_addr),
    ] {
        let message = h.bind_channel(client, creds, number, peer);
        assert_eq!(message.message_type().class, Class::SuccessResponse);
    }
    let (handled, outputs) = h.feed(client(), &channel_data(0x4001, b"a to b"));
    assert_eq!(handled, Handled::Relayed);
    assert_eq!(
        outputs,
        [Out::ToClient(
            other_client(),
            channel_data(0x4002, b"a to b")
        )]
    );
    let (_, outputs) = h.feed(other_client(), &channel_data(0x4002, b"b to a"));
    assert_eq!(
        outputs,
        [Out::ToClient(client(), channel_data(0x4001, b"b to a"))]
    );

    // Both legs are counted, on each allocation and in total ("knock" left A).
    let stats = h.server.stats();
    assert_eq!(
        stats.relayed(Direction::ToPeer),
        Traffic {
            bytes: 5 + 7 + 7 + 8 + 6 + 6,
            packets: 6
        }
    );
    assert_eq!(
        stats.relayed(Direction::ToClient),
        Traffic {
            bytes: 7 + 7 + 8 + 6 + 6,
            packets: 5
        }
    );
    let infos = h.server.allocations(h.now);
    assert_eq!(infos[0].client, client());
    assert_eq!(
        (infos[0].to_peer, infos[0].to_client),
        (
            Traffic {
                bytes: 5 + 7 + 8 + 6,
                packets: 4
            },
            Traffic {
                bytes: 7 + 6,
                packets: 2
            }
        )
    );
    assert_eq!(
        (infos[1].to_peer, infos[1].to_client),
        (
            Traffic {
                bytes: 7 + 6,
                packets: 2
            },
            Traffic {
                bytes: 7 + 8 + 6,
                packets: 3
            }
        )
    );
}

#[test]
fn relay_to_relay_opens_no_other_own_address() {
    let mut h = Harness::new();
    let (_, a_addr, a_creds) = h.allocate(client());
    let (b_relay, b_addr, b_creds) = h.allocate(other_client());
    let relay_ip = b_addr.ip();
    let free_port = (50_000..)
        .find(|p| *p != a_addr.port() && *p != b_addr.port())
        .unwrap();
    // The listening port and a relay port without an allocation stay refused.
    let others = [
        SocketAddr::new(relay_ip, 3478),
        SocketAddr::new(relay_ip, free_port),
        SocketAddr::new("10.0.0.1".parse().unwrap(), 3478),
    ];
    for target in others {
        let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&a_creds), &|b| {
            b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, target)
                .unwrap()
        });
        assert_error(&response, Method::CREATE_PERMISSION, ErrorCode::FORBIDDEN);
        let message = h.bind_channel(client(), &a_creds, 0x4000, target);
        assert_eq!(code(&message), Some(ErrorCode::FORBIDDEN), "{target}");
    }
    // A permission is per IP, so the one for B covers every port of the relay IP; data
    // still reaches only live allocations.
    h.permit(client(), &a_creds, b_addr);
    for target in &others[..2] {
        let (handled, outputs) = h.send_indication(client(), *target, b"sneak");
        assert_eq!(handled, Handled::Dropped(DropReason::ServerAddress));
        assert_eq!(outputs, []);
    }
    // Once B is gone its address is only the server's again.
    let (_, outputs) = h.request(other_client(), Method::REFRESH, Some(&b_creds), &|b| {
        b.add_raw(AttributeType::LIFETIME, &[0; 4]).unwrap()
    });
    assert_eq!(outputs, [Out::Close(b_relay)]);
    let (handled, outputs) = h.send_indication(client(), b_addr, b"gone");
    assert_eq!(handled, Handled::Dropped(DropReason::ServerAddress));
    assert_eq!(outputs, []);
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&a_creds), &|b| {
        b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, b_addr)
            .unwrap()
    });
    assert_error(&response, Method::CREATE_PERMISSION, ErrorCode::FORBIDDEN);
    assert_eq!(h.server.stats().dropped(DropReason::ServerAddress), 3);
    assert_eq!(h.server.stats().relayed(Direction::ToPeer).packets, 0);

    // The deny-list wins over relay to relay.
    let mut h = Harness::with(|c| c.peer_policy.deny = vec!["192.0.2.1/32".parse().unwrap()]);
    let (_, _, a_creds) = h.allocate(client());
    let (_, b_addr, _) = h.allocate(other_client());
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&a_creds), &|b| {
        b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, b_addr)
            .unwrap()
    });
    assert_error(&response, Method::CREATE_PERMISSION, ErrorCode::FORBIDDEN);

    // An allow-listed relay IP is an ordinary peer on other ports; a live allocation's
    // address is still served inside.
    let mut h = Harness::with(|c| c.peer_policy.allow = vec!["192.0.2.1/32".parse().unwrap()]);
    let (a_relay, a_addr, a_creds) = h.allocate(client());
    let (_, b_addr, b_creds) = h.allocate(other_client());
    h.permit(client(), &a_creds, b_addr);
    h.permit(other_client(), &b_creds, a_addr);
    let listening = SocketAddr::new(b_addr.ip(), 3478);
    let (_, outputs) = h.send_indication(client(), listening, b"allowed");
    assert_eq!(
        outputs,
        [Out::ToPeer(a_relay, listening, b"allowed".to_vec())]
    );
    let (_, outputs) = h.send_indication(client(), b_addr, b"inside");
    assert!(matches!(&outputs[..], [Out::ToClient(to, _)] if *to == other_client()));
}

#[test]
fn relay_to_relay_limits_and_stream_clients() {
    let mut h = Harness::with(|c| c.allocation_bandwidth = 1000);
    let (_, a_addr, a_creds) = h.allocate(client());
    let (_, b_addr, b_creds) = h.allocate(tcp_client());
    h.permit(client(), &a_creds, b_addr);
    h.bind_channel(tcp_client(), &b_creds, 0x4002, a_addr);
    // A TCP client gets padded ChannelData on its channel for A.
    let (handled, outputs) = h.send_indication(client(), b_addr, &[7; 600]);
    assert_eq!(handled, Handled::Relayed);
    let mut expected = Vec::new();
    crate::channel_data::encode(&mut expected, 0x4002, &[7; 600], true);
    assert_eq!(outputs, [Out::ToClient(tcp_client(), expected)]);
    // Both allocations' buckets paid: A has 400 bytes left, B 400, then B spends 300.
    h.permit(tcp_client(), &b_creds, peer());
    let (handled, _) = h.send_indication(tcp_client(), peer(), &[0; 300]);
    assert_eq!(handled, Handled::Relayed);
    // A can afford 300 more, B cannot take them.
    let (handled, outputs) = h.send_indication(client(), b_addr, &[0; 300]);
    assert_eq!(handled, Handled::Dropped(DropReason::RateLimited));
    assert_eq!(outputs, []);
    let infos = h.server.allocations(h.now);
    let a = infos.iter().find(|i| i.client == client()).unwrap();
    let b = infos.iter().find(|i| i.client == tcp_client()).unwrap();
    assert_eq!(
        a.to_peer,
        Traffic {
            bytes: 900,
            packets: 2
        }
    );
    assert_eq!(
        b.to_client,
        Traffic {
            bytes: 600,
            packets: 1
        }
    );
    // B's permission for A expires like any other.
    h.advance(301);
    h.permit(client(), &a_creds, b_addr);
    let (handled, _) = h.send_indication(client(), b_addr, b"late");
    assert_eq!(handled, Handled::Dropped(DropReason::NoPermission));
}

// ----- Limits and bad input -----

#[test]
fn bandwidth_limits() {
    let mut h = Harness::with(|c| c.allocation_bandwidth = 1000);
    let (relay, _, creds) = h.allocate(client());
    h.bind_channel(client(), &creds, 0x4001, peer());
    let (handled, _) = h.feed(client(), &channel_data(0x4001, &[0; 800]));
    assert_eq!(handled, Handled::Relayed);
    let (handled, outputs) = h.peer_sends(relay, peer(), &[0; 300]);
    assert_eq!(handled, Handled::Dropped(DropReason::RateLimited));
    assert!(outputs.is_empty());
    h.now += Duration::from_millis(100);
    let (handled, _) = h.peer_sends(relay, peer(), &[0; 300]);
    assert_eq!(handled, Handled::Relayed);
    assert_eq!(h.server.stats().dropped(DropReason::RateLimited), 1);

    let mut h = Harness::with(|c| c.total_bandwidth = 500);
    let (relay, _, creds) = h.allocate(client());
    h.bind_channel(client(), &creds, 0x4001, peer());
    let (handled, _) = h.peer_sends(relay, peer(), &[0; 400]);
    assert_eq!(handled, Handled::Relayed);
    let (handled, _) = h.feed(client(), &channel_data(0x4001, &[0; 200]));
    assert_eq!(handled, Handled::Dropped(DropReason::RateLimited));
}

#[test]
fn garbage_never_disturbs_an_allocation() {
    let mut h = Harness::new();
    let (relay, _, creds) = h.allocate(client());
    h.bind_channel(client(), &creds, 0x4001, peer());
    let valid = h.build(
        Class::Request,
        Method::REFRESH,
        TransactionId::new([0xEE; 12]),
        Some(&creds),
        &nothing,
    );
    let mut bad_fingerprint = valid.clone();
    *bad_fingerprint.last_mut().unwrap() ^= 1;
    let mut bad_length = valid.clone();
    bad_length[3] = bad_length[3].wrapping_add(4);
    let response = h.build(
        Class::SuccessResponse,
        Method::ALLOCATE,
        TransactionId::new([3; 12]),
        None,
        &nothing,
    );
    let binding_indication = h.build(
        Class::Indication,
        Method::BINDING,
        TransactionId::new([4; 12]),
        None,
        &nothing,
    );
    let garbage: Vec<(&str, Vec<u8>, Option<Handled>)> = vec![
        ("empty", vec![], Some(Handled::Dropped(DropReason::NotTurn))),
        (
            "rtp",
            vec![0x80, 0x60, 0, 1, 2, 3],
            Some(Handled::Dropped(DropReason::NotTurn)),
        ),
        (
            "tiny",
            vec![0x00],
            Some(Handled::Dropped(DropReason::NotTurn)),
        ),
        (
            "truncated",
            valid[..valid.len() - 7].to_vec(),
            Some(Handled::Dropped(DropReason::NotTurn)),
        ),
        (
            "bad fingerprint",
            bad_fingerprint,
            Some(Handled::Dropped(DropReason::NotTurn)),
        ),
        (
            "bad length",
            bad_length,
            Some(Handled::Dropped(DropReason::NotTurn)),
        ),
        (
            "response",
            response,
            Some(Handled::Dropped(DropReason::NotARequest)),
        ),
        (
            "binding indication",
            binding_indication,
            Some(Handled::Dropped(DropReason::NotARequest)),
        ),
        (
            "oversized channel data",
            {
                let mut v = vec![0x40, 0x01, 0xFF, 0xFF];
                v.extend_from_slice(&[0; 100]);
                v
            },
            Some(Handled::Dropped(DropReason::Malformed)),
        ),
        (
            "unbound channel",
            channel_data(0x7FFF, b"x"),
            Some(Handled::Dropped(DropReason::NoChannel)),
        ),
    ];
    for (name, bytes, expected) in garbage {
        let (handled, outputs) = h.feed(client(), &bytes);
        assert_eq!(Some(handled), expected, "{name}");
        assert!(outputs.is_empty(), "{name}: {outputs:?}");
    }
    // A malformed request (valid header, broken attribute) is answered with 400.
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, None, &|b| {
        b.add_raw(AttributeType::USERNAME, &[0xFF, 0xFE]).unwrap()
    });
    assert_error(&response, Method::CREATE_PERMISSION, ErrorCode::BAD_REQUEST);
    // An unknown method too.
    let (response, _) = h.request(client(), Method::new(0x0FF).unwrap(), None, &nothing);
    assert_error(
        &response,
        Method::new(0x0FF).unwrap(),
        ErrorCode::BAD_REQUEST,
    );
    // Replaying the allocation's Refresh from elsewhere gets a 438, not a refresh.
    let (_, outputs) = h.feed(other_client(), &valid);
    let (response, _) = split_response(other_client(), TransactionId::new([0xEE; 12]), outputs);
    assert_error(&response, Method::REFRESH, ErrorCode::STALE_NONCE);
    // Send indications with broken or missing attributes are dropped.
    let txid = h.next_txid();
    let no_data = h.build(Class::Indication, Method::SEND, txid, None, &|b| {
        b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, peer())
            .unwrap()
    });
    let (handled, _) = h.feed(client(), &no_data);
    assert_eq!(handled, Handled::Dropped(DropReason::Malformed));

    // The allocation relays as before, both ways.
    let (handled, outputs) = h.feed(client(), &channel_data(0x4001, b"still here"));
    assert_eq!(handled, Handled::Relayed);
    assert_eq!(
        outputs,
        [Out::ToPeer(relay, peer(), b"still here".to_vec())]
    );
    let (handled, _) = h.peer_sends(relay, peer(), b"me too");
    assert_eq!(handled, Handled::Relayed);
    assert_eq!(h.server.stats().allocations, 1);
}

#[test]
fn binding_requests_are_answered_without_credentials() {
    let mut h = Harness::new();
    let txid = h.next_txid();
    let request = h.build(Class::Request, Method::BINDING, txid, None, &nothing);
    let (handled, outputs) = h.feed(client(), &request);
    assert_eq!(handled, Handled::Success);
    let (response, _) = split_response(client(), txid, outputs);
    let message = Message::decode(&response).unwrap();
    assert_eq!(message.message_type(), MessageType::BINDING_SUCCESS);
    assert_eq!(message.xor_mapped_address(), Some(client().addr));
    assert_eq!(h.server.stats().requests(RequestKind::Binding), 1);
}

#[test]
fn timers_and_outputs_drain() {
    let mut h = Harness::new();
    assert_eq!(h.server.poll_timeout(), None);
    h.allocate(client());
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now + Duration::from_secs(600))
    );
    assert!(h.server.poll_output().is_none());
    assert_eq!(h.server.relay_capacity(), 20_000);
    assert_eq!(h.server.realm(), REALM);
}

// ----- Events -----

fn udp_client(addr: &str) -> Client {
    Client {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
    }
}

#[test]
fn allocations_are_told_when_made_and_ended_with_their_traffic() {
    let mut h = Harness::new();
    let (relay, relayed, creds) = h.allocate(client());
    assert_eq!(
        h.events,
        [Event::AllocationCreated {
            relay,
            client: client(),
            username: "alice".into(),
            relayed,
            lifetime: Duration::from_secs(600),
        }],
        "the first challenge is no event"
    );
    h.events.clear();
    h.permit(client(), &creds, peer());
    h.send_indication(client(), peer(), b"to peer");
    h.peer_sends(relay, peer(), b"to client!");
    h.peer_sends(relay, other_peer(), b"no permission");
    assert!(
        h.events.is_empty(),
        "relaying makes no event: {:?}",
        h.events
    );

    h.advance(10);
    let (response, _) = h.request(client(), Method::REFRESH, Some(&creds), &|b| {
        b.add_raw(AttributeType::LIFETIME, &[0, 0, 0, 0]).unwrap()
    });
    assert_eq!(lifetime(&Message::decode(&response).unwrap()), Some(0));
    assert_eq!(
        h.events,
        [Event::AllocationEnded {
            relay,
            client: client(),
            username: "alice".into(),
            relayed,
            reason: EndReason::Deleted,
            age: Duration::from_secs(10),
            to_peer: Traffic {
                bytes: 7,
                packets: 1
            },
            to_client: Traffic {
                bytes: 10,
                packets: 1
            },
        }]
    );

    h.events.clear();
    let (relay, _, _) = h.allocate(other_client());
    h.advance(600);
    h.outputs();
    let ends: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::AllocationEnded {
                relay, reason, age, ..
            } => Some((*relay, *reason, *age)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends,
        [(relay, EndReason::Expired, Duration::from_secs(600))]
    );

    h.events.clear();
    let (relay, _, _) = h.allocate(tcp_client());
    h.advance(3);
    h.server.client_closed(tcp_client(), h.now);
    h.outputs();
    assert!(
        matches!(
            &h.events[..],
            [Event::AllocationCreated { .. }, Event::AllocationEnded {
                relay: r,
                reason: EndReason::ConnectionClosed,
                age,
                ..
            }] if *r == relay && *age == Duration::from_secs(3)
        ),
        "{:?}",
        h.events
    );
}

#[test]
fn authentication_failures_are_told_with_the_username_sent() {
    let mut h = Harness::new();
    let mut creds = h.challenge(client(), "alice", "wrong");
    assert!(h.events.is_empty());
    h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    creds.username = "mallory".into();
    h.request(client(), Method::ALLOCATE, Some(&creds), &transport_udp);
    assert_eq!(
        h.events,
        [
            Event::AuthFailed {
                client: client(),
                failure: AuthFailure::BadIntegrity,
                username: Some("alice".into()),
            },
            Event::AuthFailed {
                client: client(),
                failure: AuthFailure::UnknownUser,
                username: Some("mallory".into()),
            },
        ]
    );
    // Another user on an allocation's 5-tuple.
    h.allocate(client());
    h.events.clear();
    let bob = h.challenge(client(), "bob", "builder");
    let (response, _) = h.request(client(), Method::REFRESH, Some(&bob), &nothing);
    assert_error(&response, Method::REFRESH, ErrorCode::WRONG_CREDENTIALS);
    assert_eq!(
        h.events,
        [Event::AuthFailed {
            client: client(),
            failure: AuthFailure::WrongCredentials,
            username: Some("bob".into()),
        }]
    );
}

#[test]
fn limits_that_refuse_a_request_are_told() {
    let mut h = Harness::with(|c| {
        c.max_allocations_per_user = 1;
        c.max_allocations = 2;
        c.max_permissions_per_allocation = 1;
        c.max_channels_per_allocation = 1;
    });
    let (_, _, creds) = h.allocate(client());
    let refused = |h: &mut Harness| {
        let events = std::mem::take(&mut h.events);
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Refused {
                    client,
                    username,
                    limit,
                } => Some((client, username.into_string(), limit)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    h.events.clear();
    let second = udp_client("203.0.113.5:1001");
    let alice = h.challenge(second, "alice", "wonderland");
    let (response, _) = h.request(second, Method::ALLOCATE, Some(&alice), &transport_udp);
    assert_error(
        &response,
        Method::ALLOCATE,
        ErrorCode::ALLOCATION_QUOTA_REACHED,
    );
    assert_eq!(
        refused(&mut h),
        [(second, "alice".to_owned(), Limit::UserQuota)]
    );
    assert_eq!(Limit::UserQuota.code(), ErrorCode::ALLOCATION_QUOTA_REACHED);

    let bob = h.challenge(second, "bob", "builder");
    h.request(second, Method::ALLOCATE, Some(&bob), &transport_udp);
    let third = udp_client("203.0.113.5:1002");
    let bob = h.challenge(third, "bob", "builder");
    let (response, _) = h.request(third, Method::ALLOCATE, Some(&bob), &transport_udp);
    assert_error(
        &response,
        Method::ALLOCATE,
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert_eq!(
        refused(&mut h),
        [(third, "bob".to_owned(), Limit::Allocations)]
    );

    h.permit(client(), &creds, peer());
    let (response, _) = h.request(client(), Method::CREATE_PERMISSION, Some(&creds), &|b| {
        b.add_xor_address(AttributeType::XOR_PEER_ADDRESS, other_peer())
            .unwrap()
    });
    assert_error(
        &response,
        Method::CREATE_PERMISSION,
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert_eq!(
        refused(&mut h),
        [(client(), "alice".to_owned(), Limit::Permissions)]
    );
    let message = h.bind_channel(client(), &creds, 0x4000, peer());
    assert_eq!(message.message_type().class, Class::SuccessResponse);
    let other = SocketAddr::new(peer().ip(), 5001);
    let message = h.bind_channel(client(), &creds, 0x4001, other);
    assert_eq!(code(&message), Some(ErrorCode::INSUFFICIENT_CAPACITY));
    assert_eq!(
        refused(&mut h),
        [(client(), "alice".to_owned(), Limit::Channels)]
    );

    // A relay socket that cannot be bound.
    let mut h = Harness::new();
    h.bind_failures = vec![BindError::Failed];
    let alice = h.challenge(client(), "alice", "wonderland");
    let (response, _) = h.request(client(), Method::ALLOCATE, Some(&alice), &transport_udp);
    assert_error(
        &response,
        Method::ALLOCATE,
        ErrorCode::INSUFFICIENT_CAPACITY,
    );
    assert_eq!(
        refused(&mut h),
        [(client(), "alice".to_owned(), Limit::RelayBind)]
    );
}
